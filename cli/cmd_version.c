/* cmd_version.c - `distill version`: version and build options. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/device.h"

int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: distill version\n\nPrints the version, whether the CUDA backend is built in,\n"
               "and the CUDA devices this process can see.\n");
        return 0;
    }
    if (argc > 1)
        return kd_cli_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("distill %s\n", KD_VERSION);
    char info[512];
    kd_device_describe(info, sizeof info);
    printf("%s\n", info);
    return 0;
}
