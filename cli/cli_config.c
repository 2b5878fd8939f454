/* cli_config.c - the --config / --set / --print-config options. See cli.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/runtime.h"

int kd_cli_config_opt(kd_cli_config *c, int opt, const char *arg)
{
    switch (opt) {
    case 'c':
        c->path = arg;
        return 1;
    case KD_OPT_SET: {
        char **n = realloc(c->sets, (size_t)(c->nsets + 1) * sizeof *n);
        if (!n) {
            kd_error("out of memory");
            exit(1);
        }
        c->sets = n;
        c->sets[c->nsets++] = (char *)arg;
        return 1;
    }
    case KD_OPT_PRINT_CONFIG:
        c->print = 1;
        return 1;
    }
    return 0;
}

int kd_cli_config_build(kd_cli_config *c, const kd_cfg_schema *schema, void *cfg, int *printed)
{
    *printed = 0;
    KD_TRY(kd_cfg_build(schema, cfg, c->path, c->sets, c->nsets));
    if (c->print) {
        KD_TRY(kd_cfg_print(schema, cfg, stdout, 1));
        *printed = 1;
    }
    return KD_OK;
}

void kd_cli_config_release(kd_cli_config *c)
{
    free(c->sets);
    c->sets = NULL;
    c->nsets = 0;
}

int kd_cli_config_main(int argc, char **argv, const char *cmd, const kd_cfg_schema *schema,
                       void (*usage)(FILE *), int (*run)(void *cfg), int cuda)
{
    static const struct option longopts[] = {
        KD_CLI_CONFIG_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kd_cli_config cc = {0};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hc:", longopts, NULL)) != -1) {
        if (kd_cli_config_opt(&cc, opt, optarg))
            continue;
        kd_cli_config_release(&cc);
        if (opt == 'h') {
            usage(stdout);
            return 0;
        }
        return kd_cli_usage_error(cmd, "bad option");
    }
    if (optind < argc && !cc.path)
        cc.path = argv[optind++];
    if (optind < argc || (!cc.path && !cc.print)) {
        kd_cli_config_release(&cc);
        return optind < argc ? kd_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind])
                             : kd_cli_usage_error(cmd, "a configuration file is required");
    }
    void *cfg = calloc(1, schema->size);
    if (!cfg) {
        kd_cli_config_release(&cc);
        return kd_cli_fail(kd_err(KD_E_NOMEM, "configuration"));
    }
    kd_runtime_config *rt = kd_cfg_section(schema, cfg, "runtime");
    int printed = 0;
    int st = kd_cli_config_build(&cc, schema, cfg, &printed);
    if (st == KD_OK && !printed && rt && !cuda && rt->device == KD_DEVICE_CUDA)
        st = kd_err(KD_E_UNSUPPORTED, "%s runs on the CPU reference backend for now (runtime.device: cpu or auto)",
                    cmd);
    if (st == KD_OK && !printed && rt) {
        if (!cuda)
            rt->device = KD_DEVICE_CPU;
        st = kd_runtime_apply(rt);
    }
    if (st == KD_OK && !printed)
        st = run(cfg);
    int rc = st ? kd_cli_fail(st) : 0;
    kd_cfg_release(schema, cfg);
    free(cfg);
    kd_cli_config_release(&cc);
    return rc;
}
