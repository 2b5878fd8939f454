/* cmd_version.c - `distill version`: version and build options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/device.h"
#include "core/runtime.h"
#include "rejection/sandbox.h"

int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: distill version\n\nPrints the version, whether the CUDA backend is built in,\n"
               "the CUDA devices this process can see, the CPU kernels OpenBLAS runs, and what\n"
               "isolation the code sandbox gets on this machine.\n");
        return 0;
    }
    if (argc > 1)
        return kd_cli_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("distill %s\n", KD_VERSION);
    char info[512];
    kd_device_describe(info, sizeof info);
    printf("%s\n", info);
    const char *env = getenv("OPENBLAS_CORETYPE");
    printf("cpu: OpenBLAS kernels %s%s%s\n", kd_blas_core(), env ? ", OPENBLAS_CORETYPE=" : "", env ? env : "");
    printf("code sandbox: %s\n", kd_sandbox_isolation());
    return 0;
}
