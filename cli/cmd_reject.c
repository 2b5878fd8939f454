/* cmd_reject.c - `distill reject CONFIG.yaml`: verify a dataset's
 * generations and write verdicts (rejection/reject.h). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rejection/reject.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill reject [CONFIG.yaml] [-c CONFIG.yaml] [--set KEY=VALUE]...\n"
               "                     [--print-config]\n\n"
               "Runs the configured verifiers on every generation of the input dataset (math\n"
               "answers, code in a sandbox, format, language, readability, degeneration) and\n"
               "writes one verdicts record per (prompt, sample): accepted when correct, inside\n"
               "the pass-rate window and chosen by the policy (all, k per prompt, shortest).\n"
               "Prints acceptance by reason and by source. Every key is documented in\n"
               "configs/reject/r1_math.yaml.\n\n"
               "options:\n" KD_CLI_CONFIG_HELP
               "  -h, --help           this help\n\n"
               "exit codes: 0 done, 1 failed, 2 usage error\n");
}

int cmd_reject(int argc, char **argv)
{
    static const struct option longopts[] = {
        KD_CLI_CONFIG_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kd_cli_config cc = {0};
    int opt, rc = 0;
    while ((opt = getopt_long(argc, argv, "hc:", longopts, NULL)) != -1) {
        if (kd_cli_config_opt(&cc, opt, optarg))
            continue;
        kd_cli_config_release(&cc);
        if (opt == 'h') {
            usage_(stdout);
            return 0;
        }
        return kd_cli_usage_error("reject", "bad option");
    }
    if (optind < argc && !cc.path)
        cc.path = argv[optind++];
    if (optind < argc) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("reject", "unexpected argument '%s'", argv[optind]);
    }
    if (!cc.path && !cc.print) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("reject", "a configuration file is required");
    }
    kd_reject_config cfg = {0};
    int printed = 0;
    int st = kd_cli_config_build(&cc, &kd_reject_schema, &cfg, &printed);
    if (st == KD_OK && !printed) {
        cfg.runtime.device = KD_DEVICE_CPU;
        st = kd_runtime_apply(&cfg.runtime);
    }
    if (st == KD_OK && !printed) {
        kd_reject_result r;
        st = kd_reject_run(&cfg, &r);
        if (st == KD_OK)
            kd_reject_print(&r, stdout);
    }
    if (st != KD_OK)
        rc = kd_cli_fail(st);
    kd_cfg_release(&kd_reject_schema, &cfg);
    kd_cli_config_release(&cc);
    return rc;
}
