/* bench_sft.c - `distill bench sft`: training-step throughput of the student,
 * random weights in a real shape, on the CPU reference backend (fp32; peer
 * tools/bench_sft_cpu.py) or on one GPU (bf16; peer tools/bench_sft_peer.py,
 * PyTorch + transformers on the same shapes). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/device.h"
#include "core/hfconfig.h"
#include "core/log.h"
#include "core/rng.h"
#include "student/cuda.h"
#include "student/model.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill bench sft --model-config DIR [--device cpu|cuda] [--seq T] [--batch B]\n"
               "                         [--docs K] [--steps N] [--recompute] [--attn-two-pass]\n"
               "                         [--json]\n\n"
               "Times full training steps (forward, loss, backward, AdamW) of a student with\n"
               "random weights of DIR/config.json (qwen2 or llama) on random tokens: B rows of\n"
               "T tokens per step, every token a target. On the CPU: fp32, one untimed warm-up\n"
               "step, then N timed ones; prints tokens/s and ms/step (median and best);\n"
               "threads: OMP_NUM_THREADS; with DISTILL_PROFILE=1, the time per kind of op.\n"
               "On CUDA: bf16 with fp32 master weights, the memory plan printed first, two\n"
               "warm-up steps, then N steps timed together (no host sync between them);\n"
               "prints tokens/s, MFU and the peak device memory. MFU counts 6 x params +\n"
               "6 x layers x hidden x (the tokens each token attends to, causal) FLOPs per\n"
               "token, against 989 TFLOP/s (H100 SXM dense bf16), as tools/bench_sft_peer.py.\n"
               "With DISTILL_PROFILE=1, one more step timed op by op (to stderr).\n\n"
               "options:\n"
               "      --model-config DIR  folder with config.json (e.g. configs/models/qwen2.5-1.5b)\n"
               "      --device D          cpu (default) or cuda\n"
               "      --seq T             tokens per row (default 512)\n"
               "      --batch B           rows per step (default 1)\n"
               "      --docs K            packed: each row holds K documents of T/K tokens that\n"
               "                          do not attend to each other (default 1)\n"
               "      --steps N           timed steps (default 3)\n"
               "      --recompute         CUDA: activation checkpointing per layer\n"
               "      --attn-two-pass     CUDA: the attention backward's dQ from a second kernel\n"
               "                          (the same bits every run, two more matmuls) instead of\n"
               "                          atomics in the dK/dV kernel (the default)\n"
               "      --json              one JSON object instead of text\n"
               "  -h, --help              this help\n");
}

static int cmp_d_(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- the CUDA path ---------------------------------------------------------------- */

/* Random weights for the getter: N(0, 0.02)-ish uniform, norms 1; one buffer. */
typedef struct rand_w_ {
    float *buf;
    size_t cap;
    uint64_t s;
} rand_w_;

static int rand_get_(void *ctx, const char *name, float **data, size_t *numel)
{
    rand_w_ *r = ctx;
    size_t n = *numel; /* the caller passes the manifest's size in numel */
    if (n > r->cap) {
        float *b = realloc(r->buf, n * sizeof *b);
        if (!b)
            return kd_err(KD_E_NOMEM, "random weights");
        r->buf = b;
        r->cap = n;
    }
    int norm = strstr(name, "norm") != NULL;
    for (size_t i = 0; i < n; i++) {
        r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
        r->buf[i] = norm ? 1.0f : ((float)(r->s >> 40) / (float)(1u << 24) - 0.5f) * 0.0693f; /* std 0.02 */
    }
    *data = r->buf;
    return KD_OK;
}

static int bench_cuda_(const char *dir, long B, long T, long docs, long N, int recompute, int two_pass, int json)
{
    kd_model_config c;
    int st = kd_model_config_load(dir, &c);
    if (st == KD_OK && kd_cuda_device_count() == 0)
        st = kd_err(KD_E_CUDA, "--device cuda: %s", kd_cuda_built() ? "no CUDA device is visible"
                                                                     : "this build has no CUDA backend");
    if (st)
        return kd_cli_fail(st);
    kd_cu_student_opts o = {
        .device = 0, .max_tokens = B * T, .max_T = T, .recompute = recompute, .attn_two_pass = two_pass};
    kd_cu_mem plan;
    kd_cu_student_plan(&c, &o, &plan);
    kd_cu_mem_log(&plan, "bench sft");
    rand_w_ rw = {NULL, 0, 7};
    kd_cu_student *m = NULL;
    if ((st = kd_cu_student_new(&c, rand_get_, &rw, &o, &m))) {
        free(rw.buf);
        return kd_cli_fail(st);
    }
    free(rw.buf);
    int64_t *ids = malloc((size_t)(B * T) * sizeof *ids), *pos = malloc((size_t)(B * T) * sizeof *pos);
    if (!ids || !pos) {
        free(ids), free(pos), kd_cu_student_free(m);
        return kd_cli_fail(kd_err(KD_E_NOMEM, "bench buffers"));
    }
    kd_rng r;
    kd_rng_seed(&r, 7);
    /* K documents per row of T/K tokens (the last takes the remainder); the
     * attention work: sum over documents of len^2 / 2 query-key pairs */
    double pairs = 0;
    for (long b = 0; b < B; b++)
        for (long t = 0, d = 0, start = 0; t < T; t++) {
            long len = d < docs - 1 ? T / docs : T - (docs - 1) * (T / docs);
            if (t - start == len)
                start = t, d++;
            ids[b * T + t] = (int64_t)kd_rng_below(&r, (uint64_t)c.vocab_size);
            pos[b * T + t] = t - start;
        }
    for (long d = 0; d < docs; d++) {
        double len = d < docs - 1 ? (double)(T / docs) : (double)(T - (docs - 1) * (T / docs));
        pairs += (double)B * len * (len + 1) / 2;
    }
    int64_t targets = 0;
    for (long i = 0; i < B * T; i++)
        targets += (i % T) + 1 < T && pos[i + 1] != 0;
    kd_adamw hp = {1e-5, 0.9, 0.95, 1e-8, 0.0};
    double t0 = 0, loss = 0, gnorm = 0;
    for (long s = 0; s < N + 2 && st == KD_OK; s++) {
        if (s == 2) { /* two warm-up steps: the GEMM plans and the first-touch costs */
            st = kd_cu_student_read(m, NULL, NULL);
            t0 = kd_now();
        }
        if (st == KD_OK)
            st = kd_cu_student_zero_grad(m);
        if (st == KD_OK)
            st = kd_cu_student_backward(m, ids, ids, docs > 1 ? pos : NULL, B, T, 1.0 / (double)targets);
        if (st == KD_OK)
            st = kd_cu_student_adamw(m, &hp, 1, 1.0);
    }
    double sum = 0;
    if (st == KD_OK)
        st = kd_cu_student_read(m, &sum, &gnorm);
    double dt = (kd_now() - t0) / (double)N;
    if (st == KD_OK && getenv("DISTILL_PROFILE")) { /* one more step, timed op by op (not in the figures) */
        st = kd_cu_student_prof_on(m);
        if (st == KD_OK)
            st = kd_cu_student_zero_grad(m);
        if (st == KD_OK)
            st = kd_cu_student_backward(m, ids, ids, docs > 1 ? pos : NULL, B, T, 1.0 / (double)targets);
        if (st == KD_OK)
            st = kd_cu_student_adamw(m, &hp, 1, 1.0);
        if (st == KD_OK)
            st = kd_cu_student_prof_report(m, stderr);
    }
    size_t used = 0;
    if (st == KD_OK)
        st = kd_cu_student_mem_used(m, &used);
    loss = sum / (double)targets;
    const double params = (double)kd_cu_student_numel(m), tok = (double)(B * T);
    const double flops = 6 * params * tok + 6 * (double)c.num_layers * (double)c.hidden_size * 2 * pairs;
    const double tps = tok / dt, mfu = flops / dt / 989e12, G = 1024.0 * 1024 * 1024;
    if (st == KD_OK && json)
        printf("{\"bench\": \"sft\", \"backend\": \"cuda-bf16\", \"model_config\": \"%s\", \"params\": %.0f, "
               "\"batch\": %ld, \"seq\": %ld, \"docs\": %ld, \"recompute\": %s, \"attn_two_pass\": %s, \"steps\": %ld, "
               "\"ms_per_step\": %.1f, \"tokens_per_second\": %.1f, \"mfu\": %.4f, \"peak_mem_gib\": %.2f, "
               "\"planned_gib\": %.2f, \"loss\": %.6f, \"grad_norm\": %.6f}\n",
               dir, params, B, T, docs, recompute ? "true" : "false", two_pass ? "true" : "false", N, dt * 1e3, tps, mfu, used / G,
               plan.total / G, loss, gnorm);
    else if (st == KD_OK)
        printf("bench sft: %s (%.0fM params) on CUDA, %ld x %ld tokens (%ld docs/row)%s%s, %ld steps: %.1f ms/step, "
               "%.0f tokens/s, MFU %.1f%%, peak %.2f GiB (planned %.2f), loss %.4f\n",
               dir, params / 1e6, B, T, docs, recompute ? ", recompute" : "", two_pass ? ", two-pass attention" : "", N, dt * 1e3, tps, 100 * mfu,
               used / G, plan.total / G, loss);
    free(ids);
    free(pos);
    kd_cu_student_free(m);
    return st == KD_OK ? 0 : kd_cli_fail(st);
}

int bench_sft(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model-config", required_argument, NULL, 'm'}, {"seq", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},        {"steps", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},               {"help", no_argument, NULL, 'h'},
        {"device", required_argument, NULL, 'd'},       {"docs", required_argument, NULL, 'k'},
        {"recompute", no_argument, NULL, 'r'},          {"attn-two-pass", no_argument, NULL, 'a'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *device = "cpu";
    long T = 512, B = 1, N = 3, docs = 1;
    int json = 0, recompute = 0, two_pass = 0, opt;
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
        case 'k':
        case 'n': {
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0 || v > 1 << 20)
                return kd_cli_usage_error("bench sft", "--%s takes a positive integer",
                                          opt == 't' ? "seq" : opt == 'b' ? "batch" : opt == 'k' ? "docs" : "steps");
            *(opt == 't' ? &T : opt == 'b' ? &B : opt == 'k' ? &docs : &N) = v;
            break;
        }
        case 'd':
            device = optarg;
            break;
        case 'r':
            recompute = 1;
            break;
        case 'a':
            two_pass = 1;
            break;
        case 'j':
            json = 1;
            break;
        default:
            return kd_cli_usage_error("bench sft", "bad option");
        }
    }
    if (!dir)
        return kd_cli_usage_error("bench sft", "--model-config is required");
    if (strcmp(device, "cpu") && strcmp(device, "cuda"))
        return kd_cli_usage_error("bench sft", "--device is cpu or cuda, not '%s'", device);
    if (docs > T)
        return kd_cli_usage_error("bench sft", "--docs %ld is more than --seq %ld", docs, T);
    if (!strcmp(device, "cuda"))
        return bench_cuda_(dir, B, T, docs, N, recompute, two_pass, json);
    if (docs != 1 || recompute || two_pass)
        return kd_cli_usage_error("bench sft", "--docs, --recompute and --attn-two-pass are for --device cuda");
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
