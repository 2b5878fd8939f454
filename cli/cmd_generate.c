/* cmd_generate.c - `distill generate CONFIG.yaml`: sample traces from a
 * teacher for the prompts of a dataset (teacher/generate.h). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "data/store.h"
#include "teacher/generate.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill generate [CONFIG.yaml] [-c CONFIG.yaml] [--set KEY=VALUE]...\n"
               "                       [--print-config]\n\n"
               "Samples `samples` completions per prompt of the input dataset with the model and\n"
               "writes one generations record per (prompt, sample) into the output dataset as\n"
               "each finishes. Rerun after a crash or kill: finished units are skipped, missing\n"
               "ones are generated, with the same text (randomness is keyed by seed, prompt,\n"
               "sample and position). Every key is documented in configs/generate/r1.yaml.\n\n"
               "options:\n" KD_CLI_CONFIG_HELP
               "  -h, --help           this help\n\n"
               "exit codes: 0 done, 1 failed, 2 usage error\n");
}

static int run_(void *cfg)
{
    kd_gen_result r;
    KD_TRY(kd_generate_run(cfg, &r));
    printf("generate: %lld units: %lld already there, %lld generated, %lld skipped; %lld tokens in "
           "%.1f s (%.1f tokens/s)\n",
           (long long)r.units, (long long)r.existing, (long long)r.generated, (long long)r.skipped,
           (long long)r.tokens, r.seconds, r.tokens_per_second);
    printf("generate: finish");
    for (unsigned f = 0; f < KD_FINISH_COUNT; f++)
        if (r.by_finish[f])
            printf(" %s %lld", kd_finish_name(f), (long long)r.by_finish[f]);
    printf("; completion tokens mean %.1f, p50 %.0f, p90 %.0f, p99 %.0f\n", r.mean_len, r.p50_len, r.p90_len,
           r.p99_len);
    return KD_OK;
}

int cmd_generate(int argc, char **argv)
{
    return kd_cli_config_main(argc, argv, "generate", &kd_gen_schema, usage_, run_, 1);
}
