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

static int run_(void *cfg)
{
    kd_reject_result r;
    KD_TRY(kd_reject_run(cfg, &r));
    kd_reject_print(&r, stdout);
    return KD_OK;
}

int cmd_reject(int argc, char **argv)
{
    return kd_cli_config_main(argc, argv, "reject", &kd_reject_schema, usage_, run_, 0);
}
