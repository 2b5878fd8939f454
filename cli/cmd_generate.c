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

int cmd_generate(int argc, char **argv)
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
        return kd_cli_usage_error("generate", "bad option");
    }
    if (optind < argc && !cc.path)
        cc.path = argv[optind++];
    if (optind < argc) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    }
    if (!cc.path && !cc.print) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("generate", "a configuration file is required");
    }
    kd_gen_config cfg = {0};
    int printed = 0;
    int st = kd_cli_config_build(&cc, &kd_gen_schema, &cfg, &printed);
    if (st == KD_OK && !printed && cfg.runtime.device == KD_DEVICE_CUDA)
        st = kd_err(KD_E_UNSUPPORTED, "generate runs on the CPU reference backend for now "
                    "(runtime.device: cpu or auto)");
    if (st == KD_OK && !printed) {
        cfg.runtime.device = KD_DEVICE_CPU;
        st = kd_runtime_apply(&cfg.runtime);
    }
    if (st == KD_OK && !printed) {
        kd_gen_result r;
        st = kd_generate_run(&cfg, &r);
        if (st == KD_OK) {
            printf("generate: %lld units: %lld already there, %lld generated, %lld skipped; %lld tokens in "
                   "%.1f s (%.1f tokens/s)\n",
                   (long long)r.units, (long long)r.existing, (long long)r.generated, (long long)r.skipped,
                   (long long)r.tokens, r.seconds, r.tokens_per_second);
            printf("generate: finish");
            for (unsigned f = 0; f < KD_FINISH_COUNT; f++)
                if (r.by_finish[f])
                    printf(" %s %lld", kd_finish_name(f), (long long)r.by_finish[f]);
            printf("; completion tokens mean %.1f, p50 %.0f, p90 %.0f, p99 %.0f\n", r.mean_len, r.p50_len,
                   r.p90_len, r.p99_len);
        }
    }
    if (st != KD_OK)
        rc = kd_cli_fail(st);
    kd_cfg_release(&kd_gen_schema, &cfg);
    kd_cli_config_release(&cc);
    return rc;
}
