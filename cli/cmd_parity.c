/* cmd_parity.c - `distill parity DIR [--device cpu|cuda]`: check the student
 * against a HF reference fixture directory (FIXTURES.md). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/device.h"
#include "core/hfconfig.h"
#include "student/parity.h"
#include "teacher/parity.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill parity DIR [--device cpu|cuda]\n\n"
               "Checks the student against a HuggingFace reference fixture folder (see\n"
               "FIXTURES.md): logits, greedy generation and the KV cache from\n"
               "ref_infer.safetensors; loss, every gradient and one AdamW step from\n"
               "ref_train.safetensors. Prints one line per check with the measured error.\n"
               "Supported: qwen2 and llama (the student: inference and training references),\n"
               "deepseek_v3 and deepseek_v2 (the teacher: inference, plus absorbed vs\n"
               "decompressed MLA decode).\n\n"
               "options:\n"
               "      --device DEV  cpu (default), or cuda: the CUDA student or teacher against\n"
               "                    the bf16 tolerances of FIXTURES.md (needs a CUDA build and\n"
               "                    a GPU; the teacher's mla and training checks stay on the cpu)\n"
               "  -h, --help        this help\n\n"
               "exit codes: 0 every check passed, 1 a check failed or the folder cannot be\n"
               "checked, 2 usage error\n");
}

int cmd_parity(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"device", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kd_parity_device dev = KD_PARITY_CPU;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            usage_(stdout);
            return 0;
        case 'd':
            if (!strcmp(optarg, "cpu"))
                dev = KD_PARITY_CPU;
            else if (!strcmp(optarg, "cuda"))
                dev = KD_PARITY_CUDA;
            else
                return kd_cli_usage_error("parity", "unknown device '%s' (cpu or cuda)", optarg);
            break;
        default:
            return kd_cli_usage_error("parity", "unknown option");
        }
    }
    if (optind >= argc)
        return kd_cli_usage_error("parity", "missing the fixture folder");
    if (optind + 1 < argc)
        return kd_cli_usage_error("parity", "unexpected argument '%s'", argv[optind + 1]);
    const char *dir = argv[optind];
    int failed = 0, st;
    kd_model_config cfg;
    int deepseek = kd_model_config_load(dir, &cfg) == KD_OK &&
                   (cfg.arch == KD_ARCH_DEEPSEEK_V3 || cfg.arch == KD_ARCH_DEEPSEEK_V2);
    kd_err_clear(); /* kd_parity_run reports a bad folder itself */
    if (deepseek && dev == KD_PARITY_CUDA && kd_cuda_device_count() == 0)
        st = kd_err(KD_E_CUDA, "device cuda: %s", kd_cuda_built() ? "no CUDA device is visible"
                                                                   : "this build has no CUDA backend");
    else if (deepseek)
        st = kd_teacher_parity_run(dir, dev == KD_PARITY_CUDA, stdout, &failed);
    else
        st = kd_parity_run(dir, dev, stdout, &failed);
    fflush(stdout);
    if (st != KD_OK)
        return kd_cli_fail(st);
    if (failed) {
        kd_error("parity '%s': %d check%s failed", dir, failed, failed == 1 ? "" : "s");
        return 1;
    }
    printf("parity '%s': every check passed\n", dir);
    return 0;
}
