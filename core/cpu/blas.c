/* blas.c - which kernels OpenBLAS runs on this CPU.
 *
 * OpenBLAS (built with DYNAMIC_ARCH, as Debian's is) picks its kernels when
 * it loads, from the CPU's family and model. A model newer than the OpenBLAS
 * build knows falls back to its oldest x86-64 kernels (Prescott, SSE3), even
 * on a CPU with AVX-512: measured on the H100 host (family 6 model 207), GEMM
 * ran 3 to 4 times slower than with the SkylakeX kernels (bench/RESULTS.md).
 * The choice can only be made before OpenBLAS loads, through the environment
 * variable OPENBLAS_CORETYPE, so the CLI re-executes itself once with it set
 * (cli/main.c). */
#include "core/runtime.h"

#include <cblas.h>
#include <strings.h>

const char *kd_blas_core(void) { return openblas_get_corename(); }

const char *kd_blas_better_core(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* OpenBLAS core names whose kernels use AVX2 and FMA or better */
    static const char *const wide[] = {"haswell", "skylakex", "cooperlake", "sapphirerapids", "zen", NULL};
    const char *have = openblas_get_corename();
    if (!have)
        return NULL;
    for (int i = 0; wide[i]; i++)
        if (!strcasecmp(have, wide[i]))
            return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return NULL;
}
