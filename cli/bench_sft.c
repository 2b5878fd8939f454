/* bench_sft.c - `distill bench sft`: training-step throughput of the student
 * on the CPU reference backend, random weights in a real shape. The peer is
 * tools/bench_sft_cpu.py (PyTorch, the same shape, steps and threads). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/log.h"
#include "core/rng.h"
#include "student/model.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill bench sft --model-config DIR [--seq T] [--batch B] [--steps N] [--json]\n\n"
               "Times full training steps (forward, loss, backward, AdamW) of a student with\n"
               "random weights of DIR/config.json (qwen2 or llama), fp32 on the CPU, on random\n"
               "tokens: B rows of T tokens per step. One untimed warm-up step, then N timed\n"
               "ones; prints tokens/s and ms/step (median and best). Threads: OMP_NUM_THREADS.\n"
               "With DISTILL_PROFILE=1, also the time per kind of op (all steps).\n\n"
               "options:\n"
               "      --model-config DIR  folder with config.json (e.g. configs/models/qwen2.5-0.5b)\n"
               "      --seq T             tokens per row (default 512)\n"
               "      --batch B           rows per step (default 1)\n"
               "      --steps N           timed steps (default 3)\n"
               "      --json              one JSON object instead of text\n"
               "  -h, --help              this help\n");
}

static int cmp_d_(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_sft(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model-config", required_argument, NULL, 'm'}, {"seq", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},        {"steps", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},               {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    long T = 512, B = 1, N = 3;
    int json = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end = NULL;
        switch (opt) {
        case 'h':
            usage_(stdout);
            return 0;
        case 'm':
            dir = optarg;
            break;
        case 't':
        case 'b':
        case 'n': {
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0 || v > 1 << 20)
                return kd_cli_usage_error("bench sft", "--%s takes a positive integer",
                                          opt == 't' ? "seq" : opt == 'b' ? "batch" : "steps");
            *(opt == 't' ? &T : opt == 'b' ? &B : &N) = v;
            break;
        }
        case 'j':
            json = 1;
            break;
        default:
            return kd_cli_usage_error("bench sft", "bad option");
        }
    }
    if (!dir)
        return kd_cli_usage_error("bench sft", "--model-config is required");
    kd_student *m = NULL;
    int st = kd_student_init(dir, 1, 0.02, &m);
    if (st)
        return kd_cli_fail(st);
    const kd_model_config *c = kd_student_config(m);
    int64_t *ids = malloc((size_t)(B * T) * sizeof *ids);
    double *ms = calloc((size_t)N, sizeof *ms);
    if (!ids || !ms) {
        free(ids);
        free(ms);
        kd_student_free(m);
        return kd_cli_fail(kd_err(KD_E_NOMEM, "bench buffers"));
    }
    kd_rng r;
    kd_rng_seed(&r, 7);
    for (long i = 0; i < B * T; i++)
        ids[i] = (int64_t)kd_rng_below(&r, (uint64_t)c->vocab_size);
    kd_adamw hp = {1e-5, 0.9, 0.95, 1e-8, 0.0};
    double loss = 0;
    for (long s = 0; s <= N && st == KD_OK; s++) {
        double t0 = kd_now(), sum = 0;
        kd_student_zero_grad(m);
        st = kd_student_backward(m, ids, ids, NULL, B, T, 1.0 / (double)(B * (T - 1)), &sum, NULL);
        if (st == KD_OK)
            st = kd_student_adamw_step(m, &hp, 1);
        loss = sum / (double)(B * (T - 1));
        if (s)
            ms[s - 1] = (kd_now() - t0) * 1e3;
    }
    if (st) {
        free(ids);
        free(ms);
        kd_student_free(m);
        return kd_cli_fail(st);
    }
    qsort(ms, (size_t)N, sizeof *ms, cmp_d_);
    double med = ms[N / 2], best = ms[0], tps = (double)(B * T) / (med / 1e3);
    const char *thr = getenv("OMP_NUM_THREADS");
    double params = (double)kd_student_numel(m);
    if (json)
        printf("{\"bench\": \"sft\", \"backend\": \"cpu-fp32\", \"model_config\": \"%s\", \"params\": %.0f, "
               "\"batch\": %ld, \"seq\": %ld, \"steps\": %ld, \"threads\": \"%s\", \"ms_per_step_median\": %.1f, "
               "\"ms_per_step_best\": %.1f, \"tokens_per_second\": %.1f, \"loss\": %.6f}\n",
               dir, params, B, T, N, thr ? thr : "all", med, best, tps, loss);
    else
        printf("bench sft: %s (%.0fM params), %ld x %ld tokens, %ld steps, threads %s: median %.1f ms/step "
               "(best %.1f), %.1f tokens/s, loss %.4f\n",
               dir, params / 1e6, B, T, N, thr ? thr : "all", med, best, tps, loss);
    if (getenv("DISTILL_PROFILE"))
        kd_student_profile(stdout, 0); /* warm-up step included */
    free(ids);
    free(ms);
    kd_student_free(m);
    return 0;
}
