/* cmd_sft.c - `distill sft CONFIG.yaml`: fine-tune a student or a DeepSeek teacher, and
 * `distill init CONFIG_DIR OUT_DIR`: a model with random weights. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/runtime.h"
#include "pipeline/setup.h"
#include "sft/sft.h"
#include "student/export.h"
#include "student/model.h"
#include "teacher/model.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill sft [CONFIG.yaml] [-c CONFIG.yaml] [--set KEY=VALUE]... [--resume]\n"
               "                  [--max-steps N] [--print-config]\n\n"
               "Fine-tunes a Qwen2/Qwen2.5 or Llama 3.x student, or a DeepSeek-V3/V2 model\n"
               "(the teacher's cold start), on packed examples: a dataset of tokenized\n"
               "examples (read in place) or a .jsonl of chats. Writes\n"
               "OUT/metrics.jsonl, OUT/checkpoints/step-N/ (model, optimizer, trainer state)\n"
               "and the HF export OUT/final/. runtime.device picks the backend: cpu (fp32, the\n"
               "reference), cuda (a dense student on one GPU in bf16, fp32 master weights;\n"
               "the planned peak memory is logged first; train.recompute for long rows), or\n"
               "auto (cuda when this build and machine have a GPU). Every key is documented\n"
               "in configs/sft/.\n\n"
               "options:\n" KD_CLI_CONFIG_HELP
               "      --resume         continue from the newest checkpoint (output.resume=true)\n"
               "      --max-steps N    stop after N optimizer steps (train.max_steps=N)\n"
               "  -h, --help           this help\n\n"
               "exit codes: 0 done, 1 failed (bad data, non-finite loss, I/O...), 2 usage error\n");
}

int cmd_sft(int argc, char **argv)
{
    enum { O_RESUME = 0x2000, O_MAX_STEPS };
    static const struct option longopts[] = {
        KD_CLI_CONFIG_LONGOPTS,
        {"resume", no_argument, NULL, O_RESUME},
        {"max-steps", required_argument, NULL, O_MAX_STEPS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kd_cli_config cc = {0};
    int opt, rc = 0;
    char buf[64];
    while ((opt = getopt_long(argc, argv, "hc:", longopts, NULL)) != -1) {
        if (kd_cli_config_opt(&cc, opt, optarg))
            continue;
        if (opt == 'h') {
            usage_(stdout);
            kd_cli_config_release(&cc);
            return 0;
        } else if (opt == O_RESUME) {
            kd_cli_config_opt(&cc, KD_OPT_SET, "output.resume=true");
        } else if (opt == O_MAX_STEPS) {
            snprintf(buf, sizeof buf, "train.max_steps=%s", optarg);
            kd_cli_config_opt(&cc, KD_OPT_SET, buf);
        } else {
            kd_cli_config_release(&cc);
            return kd_cli_usage_error("sft", "bad option");
        }
    }
    if (optind < argc && !cc.path)
        cc.path = argv[optind++];
    if (optind < argc) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("sft", "unexpected argument '%s'", argv[optind]);
    }
    if (!cc.path && !cc.print) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("sft", "a configuration file is required");
    }
    kd_sft_config cfg = {0};
    int printed = 0;
    int st = kd_cli_config_build(&cc, &kd_sft_schema, &cfg, &printed);
    if (st == KD_OK && !printed) /* auto: CUDA when this build and machine have it */
        st = kd_runtime_apply(&cfg.runtime);
    if (st == KD_OK && !printed) {
        kd_sft_result res;
        st = kd_sft_run(&cfg, &res);
        if (st == KD_OK)
            printf("sft: %lld steps (%lld skipped), %lld examples in %lld rows, %lld tokens in "
                   "%.1f s; last loss %.4f, eval loss %.4f\n",
                   (long long)res.steps, (long long)res.steps_skipped, (long long)res.examples,
                   (long long)res.rows, (long long)res.tokens, res.seconds, res.last_loss,
                   res.last_eval_loss);
    }
    if (st != KD_OK)
        rc = kd_cli_fail(st);
    kd_cfg_release(&kd_sft_schema, &cfg);
    kd_cli_config_release(&cc);
    return rc;
}

static void init_usage_(FILE *f)
{
    fprintf(f, "usage: distill init CONFIG_DIR OUT_DIR [--tokenizer DIR] [--seed N] [--std X]\n"
               "                   [--dtype f32|bf16]\n\n"
               "Writes a model of CONFIG_DIR/config.json (qwen2, llama, deepseek_v3 or\n"
               "deepseek_v2) with random weights,\n"
               "normal(0, std) and norms 1, as an HF folder: for tests, demos and benchmarks\n"
               "in real shapes when no checkpoint can be downloaded.\n\n"
               "options:\n"
               "      --tokenizer DIR  copy the tokenizer files from DIR (default CONFIG_DIR)\n"
               "      --seed N         random seed (default 0)\n"
               "      --std X          standard deviation (default 0.02, HF's initializer_range)\n"
               "      --dtype D        f32 (default) or bf16\n"
               "  -h, --help           this help\n");
}

int cmd_init(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tokenizer", required_argument, NULL, 't'}, {"seed", required_argument, NULL, 's'},
        {"std", required_argument, NULL, 'd'},       {"dtype", required_argument, NULL, 'y'},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0},
    };
    const char *tokdir = NULL;
    unsigned long long seed = 0;
    double std = 0.02;
    kd_dtype dt = KD_F32;
    int opt;
    char *end;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            init_usage_(stdout);
            return 0;
        case 't':
            tokdir = optarg;
            break;
        case 's':
            seed = strtoull(optarg, &end, 10);
            if (*end || !*optarg)
                return kd_cli_usage_error("init", "--seed takes a non-negative integer");
            break;
        case 'd':
            std = strtod(optarg, &end);
            if (*end || !(std >= 0 && std < 10))
                return kd_cli_usage_error("init", "--std takes a number in [0, 10)");
            break;
        case 'y':
            if (!strcmp(optarg, "f32"))
                dt = KD_F32;
            else if (!strcmp(optarg, "bf16"))
                dt = KD_BF16;
            else
                return kd_cli_usage_error("init", "--dtype is f32 or bf16");
            break;
        default:
            return kd_cli_usage_error("init", "bad option");
        }
    }
    if (argc - optind != 2)
        return kd_cli_usage_error("init", "CONFIG_DIR and OUT_DIR are required");
    int st = kd_init_model(argv[optind], argv[optind + 1], tokdir, (uint64_t)seed, std, dt);
    if (st != KD_OK)
        return kd_cli_fail(st);
    printf("init: wrote %s\n", argv[optind + 1]);
    return 0;
}
