/* gpu_test.h - what the gpu tests share: a CUDA context, an rng, random
 * bf16-exact inputs, uploads and downloads, and the error measure. Each test
 * is its own program, so these are static; each sets up cu (kd_cu_init) and
 * seeds rng itself. */
#ifndef KD_TESTS_GPU_TEST_H
#define KD_TESTS_GPU_TEST_H

#include <math.h>
#include <stdlib.h>

#include "../unit/test.h"
#include "core/cuda/cuops.h"
#include "core/dtype.h"
#include "core/rng.h"

static kd_cu cu;
static kd_rng rng;

/* n floats uniform in [-a, a), rounded to bf16 (so the CPU sees what the GPU sees) */
static inline float *rnd(int64_t n, float a)
{
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = kd_bf16_to_f32(kd_f32_to_bf16((float)((2 * kd_rng_uniform(&rng) - 1) * a)));
    return x;
}

static inline void *dev(size_t bytes)
{
    void *p = NULL;
    CHECK_OK(kd_cu_malloc(&p, bytes));
    CHECK_OK(kd_cu_memset0(p, bytes, &cu));
    return p;
}

static inline kd_bf16 *up16(const float *x, int64_t n)
{
    kd_bf16 *h = malloc((size_t)n * sizeof *h), *d = dev((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        h[i] = kd_f32_to_bf16(x[i]);
    CHECK_OK(kd_cu_upload(d, h, (size_t)n * sizeof *h, &cu));
    free(h);
    return d;
}

static inline float *up32(const float *x, int64_t n)
{
    float *d = dev((size_t)n * sizeof *d);
    CHECK_OK(kd_cu_upload(d, x, (size_t)n * sizeof *x, &cu));
    return d;
}

static inline float *down16(const kd_bf16 *d, int64_t n)
{
    kd_bf16 *h = malloc((size_t)n * sizeof *h);
    float *x = malloc((size_t)n * sizeof *x);
    CHECK_OK(kd_cu_download(h, d, (size_t)n * sizeof *h, &cu));
    for (int64_t i = 0; i < n; i++)
        x[i] = kd_bf16_to_f32(h[i]);
    free(h);
    return x;
}

static inline float *down32(const float *d, int64_t n)
{
    float *x = malloc((size_t)n * sizeof *x);
    CHECK_OK(kd_cu_download(x, d, (size_t)n * sizeof *x, &cu));
    return x;
}

static inline int32_t *up_i32(const int64_t *x, int64_t n)
{
    int32_t *h = malloc((size_t)n * sizeof *h), *d = dev((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        h[i] = (int32_t)x[i];
    CHECK_OK(kd_cu_upload(d, h, (size_t)n * sizeof *h, &cu));
    free(h);
    return d;
}

/* max |got - want| / max |want|: the error relative to the tensor's scale */
static inline double rel_err(const float *got, const float *want, int64_t n)
{
    double e = 0, s = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= e)) /* NaN counts */
            e = d;
        if (fabs(want[i]) > s)
            s = fabs(want[i]);
    }
    return e / s;
}

#endif
