/* cmd_eval.c - `distill eval CONFIG.yaml`: pass@1, cons@k and pass@k of a
 * model on held-out prompts (pipeline/eval.h). */
#include <stdio.h>

#include "cli.h"
#include "pipeline/eval.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill eval [CONFIG.yaml] [-c CONFIG.yaml] [--set KEY=VALUE]... [--print-config]\n\n"
               "Samples the model k times per held-out prompt (R1's protocol: temperature 0.6,\n"
               "top-p 0.95), verifies every sample with the rejection verifiers, and reports\n"
               "pass@1 (mean over the k samples), cons@k (majority vote) and pass@k, overall\n"
               "and per source. The samples and verdicts stay in the output dataset; the\n"
               "figures go to eval.json. With model: ~ the generations already in the input\n"
               "are scored. Every key is documented in configs/eval/r1.yaml.\n\n"
               "options:\n" KD_CLI_CONFIG_HELP
               "  -h, --help           this help\n\n"
               "exit codes: 0 done, 1 failed, 2 usage error\n");
}

static int run_(void *cfg)
{
    kd_eval_result r;
    KD_TRY(kd_eval_run(cfg, &r));
    kd_eval_print(&r, stdout);
    return KD_OK;
}

int cmd_eval(int argc, char **argv)
{
    return kd_cli_config_main(argc, argv, "eval", &kd_eval_schema, usage_, run_, 0);
}
