/* test_student_cuda.c (gpu) - the CUDA student against the CPU student (itself
 * checked against HF transformers by `distill parity`) on the HF fixtures:
 * the loss and every gradient of a packed micro-batch, with and without
 * activation recompute; the weights after AdamW; and a training curve of 40
 * steps that must track the CPU's within bf16 noise. Fixtures come from
 * $KD_FIXTURES (the unpacked tests/fixtures/hf archives) or the build tree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/test.h"
#include "core/rng.h"
#include "student/cuda.h"
#include "student/model.h"

#ifndef KD_TEST_FIXTURES
#define KD_TEST_FIXTURES "fixtures"
#endif

static const char *fixtures_(void)
{
    const char *e = getenv("KD_FIXTURES");
    return e && *e ? e : KD_TEST_FIXTURES;
}

static int get_(void *ctx, const char *name, float **data, size_t *numel)
{
    return kd_student_tensor(ctx, name, 0, data, numel);
}

/* The CPU student of fixture fx and its CUDA copy planned for o; 0 (with
 * both freed) when either cannot be made, the failure already counted. */
static int open_(const char *fx, const kd_cu_student_opts *o, kd_student **cpu, kd_cu_student **gm)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", fixtures_(), fx);
    *cpu = NULL;
    *gm = NULL;
    CHECK_OK(kd_student_load(dir, cpu));
    if (!*cpu)
        return 0;
    CHECK_OK(kd_cu_student_new(kd_student_config(*cpu), get_, *cpu, o, gm));
    if (!*gm) {
        kd_student_free(*cpu);
        return 0;
    }
    return 1;
}

/* ||a - b|| / ||b|| */
static double rel_(const float *a, const float *b, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* B rows of T: ids random, two documents per row (lengths 13 and T-13), a
 * few labels ignored. */
static void batch_(kd_rng *r, int64_t V, int64_t B, int64_t T, int64_t *ids, int64_t *labels, int64_t *pos)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t;
            ids[i] = (int64_t)kd_rng_below(r, (uint64_t)V);
            labels[i] = t % 9 == 4 ? -100 : ids[i];
            pos[i] = t < 13 ? t : t - 13;
        }
}

static void grads_case_(const char *fx, int recompute)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", fixtures_(), fx);
    kd_student *cpu = NULL;
    CHECK_OK(kd_student_load(dir, &cpu));
    if (!cpu)
        return;
    const kd_model_config *c = kd_student_config(cpu);
    const int64_t B = 2, T = 48;
    int64_t ids[96], labels[96], pos[96];
    kd_rng r;
    kd_rng_seed(&r, 11);
    batch_(&r, c->vocab_size, B, T, ids, labels, pos);
    int64_t cnt = kd_student_count_targets(labels, pos, B, T);
    double sum = 0, gsum = 0;
    kd_student_zero_grad(cpu);
    CHECK_OK(kd_student_backward(cpu, ids, labels, pos, B, T, 1.0 / (double)cnt, &sum, NULL));

    kd_cu_student_opts o = {.device = 0, .max_tokens = B * T, .max_T = T, .recompute = recompute, .xent_chunk = 40};
    kd_cu_student *gm = NULL;
    CHECK_OK(kd_cu_student_new(c, get_, cpu, &o, &gm));
    if (!gm) {
        kd_student_free(cpu);
        return;
    }
    CHECK_OK(kd_cu_student_zero_grad(gm));
    CHECK_OK(kd_cu_student_backward(gm, ids, labels, pos, B, T, 1.0 / (double)cnt));
    CHECK_OK(kd_cu_student_read(gm, &gsum, NULL));
    double lerr = fabs(gsum - sum) / fabs(sum);
    printf("  %-18s%s loss %.6f vs CPU %.6f (rel %.1e)\n", fx, recompute ? " recompute" : "", gsum / cnt, sum / cnt,
           lerr);
    CHECK(lerr <= 1e-2);
    /* relative 2e-2, except for a gradient that cancels to under 1% of the global
     * norm (the k_proj bias), held to the error 2e-2 allows at 1% (as `distill parity`) */
    double worst = 0, global = kd_student_grad_norm(cpu);
    const char *wname = "";
    for (size_t i = 0; i < kd_student_param_count(cpu); i++) {
        const char *name = kd_student_param_name(cpu, i);
        float *g = NULL;
        size_t n = 0;
        CHECK_OK(kd_student_tensor(cpu, name, 1, &g, &n));
        float *h = malloc(n * sizeof *h);
        CHECK_OK(kd_cu_student_get(gm, name, 1, h, n));
        double e = rel_(h, g, n), norm = 0;
        for (size_t j = 0; j < n; j++)
            norm += (double)g[j] * g[j];
        norm = sqrt(norm);
        int cancels = norm < 1e-2 * global;
        if (!cancels && !(e <= worst)) {
            worst = e;
            wname = name;
        }
        if (cancels ? !(e * norm <= 2e-2 * 1e-2 * global) : !(e <= 2e-2))
            FAIL_("%s: gradient of %s: rel err %.3e (norm %.3g of %.3g)", fx, name, e, norm, global);
        free(h);
    }
    printf("  %-18s%s every gradient: worst rel err %.2e (%s; cancelling ones absolute)\n", fx,
           recompute ? " recompute" : "", worst, wname);
    /* one AdamW step (FIXTURES.md's settings), clipping on, from the same
     * gradients (the CPU's, uploaded): the optimizer alone. (From each one's own
     * gradients, step 1's update lr * g / |g| flips with the sign of tiny
     * elements, which says nothing about either.) */
    kd_adamw hp = {1e-3, 0.9, 0.95, 1e-8, 0.1};
    for (size_t i = 0; i < kd_student_param_count(cpu); i++) {
        const char *name = kd_student_param_name(cpu, i);
        float *g = NULL;
        size_t n = 0;
        CHECK_OK(kd_student_tensor(cpu, name, 1, &g, &n));
        CHECK_OK(kd_cu_student_set(gm, name, 1, g, n));
    }
    double gn = kd_student_grad_norm(cpu);
    if (gn > 1.0)
        kd_student_scale_grads(cpu, (float)(1.0 / (gn + 1e-6)));
    CHECK_OK(kd_student_adamw_step(cpu, &hp, 0));
    CHECK_OK(kd_cu_student_adamw(gm, &hp, 0, 1.0));
    double ggn = 0;
    CHECK_OK(kd_cu_student_read(gm, NULL, &ggn));
    CHECK(fabs(ggn - gn) <= 1e-5 * gn);
    worst = 0;
    for (size_t i = 0; i < kd_student_param_count(cpu); i++) {
        const char *name = kd_student_param_name(cpu, i);
        float *p = NULL;
        size_t n = 0;
        CHECK_OK(kd_student_tensor(cpu, name, 0, &p, &n));
        float *h = malloc(n * sizeof *h);
        CHECK_OK(kd_cu_student_get(gm, name, 0, h, n));
        double e = rel_(h, p, n);
        worst = e > worst ? e : worst;
        free(h);
    }
    printf("  %-18s%s weights after AdamW: worst rel err %.2e (grad norm %.4f vs %.4f)\n", fx,
           recompute ? " recompute" : "", worst, ggn, gn);
    CHECK(worst <= 1e-5);
    kd_cu_student_free(gm);
    kd_student_free(cpu);
}

TEST(gradients)
{
    static const char *fx[] = {"tiny-qwen2", "tiny-qwen2-untied", "tiny-qwen2-mha", "tiny-qwen2-bf16",
                                "tiny-llama3", "tiny-llama32-tied", "tiny-llama-norope"};
    for (size_t i = 0; i < sizeof fx / sizeof *fx; i++)
        grads_case_(fx[i], 0);
    grads_case_("tiny-qwen2", 1);
    grads_case_("tiny-llama3", 1);
}

/* 40 steps of AdamW on 8 fixed micro-batches, 2 per step (gradient
 * accumulation): the CUDA loss curve tracks the CPU's within bf16 noise,
 * |difference| <= 3e-2 x max(loss, 1) at every step. */
TEST(training_curve)
{
    enum { B = 2, T = 64, MB = 8, STEPS = 40 };
    kd_cu_student_opts o = {.device = 0, .max_tokens = B * T, .max_T = T};
    kd_student *cpu;
    kd_cu_student *gm;
    if (!open_("tiny-qwen2", &o, &cpu, &gm))
        return;
    static int64_t ids[MB][B * T], labels[MB][B * T], pos[MB][B * T];
    kd_rng r;
    kd_rng_seed(&r, 5);
    for (int i = 0; i < MB; i++) /* a small vocabulary slice, so there is something to learn */
        batch_(&r, 40, B, T, ids[i], labels[i], pos[i]);
    kd_adamw hp = {1e-3, 0.9, 0.95, 1e-8, 0.01};
    double worst = 0;
    printf("  step   CPU loss   CUDA loss\n");
    for (int s = 0; s < STEPS; s++) {
        int a = (2 * s) % MB, b = (2 * s + 1) % MB;
        int64_t cnt = kd_student_count_targets(labels[a], pos[a], B, T) + kd_student_count_targets(labels[b], pos[b], B, T);
        double s1 = 0, s2 = 0, gs = 0;
        kd_student_zero_grad(cpu);
        CHECK_OK(kd_student_backward(cpu, ids[a], labels[a], pos[a], B, T, 1.0 / cnt, &s1, NULL));
        CHECK_OK(kd_student_backward(cpu, ids[b], labels[b], pos[b], B, T, 1.0 / cnt, &s2, NULL));
        double gn = kd_student_grad_norm(cpu);
        if (gn > 1.0)
            kd_student_scale_grads(cpu, (float)(1.0 / (gn + 1e-6)));
        CHECK_OK(kd_student_adamw_step(cpu, &hp, 1));
        CHECK_OK(kd_cu_student_zero_grad(gm));
        CHECK_OK(kd_cu_student_backward(gm, ids[a], labels[a], pos[a], B, T, 1.0 / cnt));
        CHECK_OK(kd_cu_student_backward(gm, ids[b], labels[b], pos[b], B, T, 1.0 / cnt));
        CHECK_OK(kd_cu_student_adamw(gm, &hp, 1, 1.0));
        CHECK_OK(kd_cu_student_read(gm, &gs, NULL));
        double lc = (s1 + s2) / cnt, lg = gs / cnt, e = fabs(lg - lc) / fmax(lc, 1.0);
        worst = e > worst ? e : worst;
        if (s % 5 == 0 || s == STEPS - 1)
            printf("  %4d %10.5f %10.5f\n", s + 1, lc, lg);
    }
    printf("  training curve: worst rel difference %.2e over %d steps\n", worst, STEPS);
    CHECK(worst <= 3e-2);
    kd_cu_student_free(gm);
    kd_student_free(cpu);
}

/* Bad input to a step is refused before anything reaches the GPU, and the
 * model still trains afterwards: an id or a label outside the vocabulary,
 * positions that neither restart at 0 nor count up, a batch over the plan. */
TEST(bad_input)
{
    enum { B = 2, T = 16 };
    kd_cu_student_opts o = {.device = 0, .max_tokens = B * T, .max_T = T};
    kd_student *cpu;
    kd_cu_student *gm;
    if (!open_("tiny-qwen2", &o, &cpu, &gm))
        return;
    const kd_model_config *c = kd_student_config(cpu);
    int64_t ids[B * T], labels[B * T], pos[B * T];
    kd_rng r;
    kd_rng_seed(&r, 3);
    batch_(&r, c->vocab_size, B, T, ids, labels, pos);
    CHECK_OK(kd_cu_student_zero_grad(gm));
    int64_t keep = ids[5];
    ids[5] = c->vocab_size;
    CHECK_ERR(kd_cu_student_backward(gm, ids, labels, NULL, B, T, 1.0), KD_E_RANGE, "token id");
    ids[5] = -1;
    CHECK_ERR(kd_cu_student_backward(gm, ids, labels, NULL, B, T, 1.0), KD_E_RANGE, "token id");
    ids[5] = keep;
    keep = labels[7];
    labels[7] = c->vocab_size + 3;
    CHECK_ERR(kd_cu_student_backward(gm, ids, labels, NULL, B, T, 1.0), KD_E_RANGE, "label");
    labels[7] = keep;
    int64_t bad[B * T];
    for (int i = 0; i < B * T; i++)
        bad[i] = i % T;
    bad[9] = 4; /* 8 then 4: neither a restart nor the next position */
    CHECK_ERR(kd_cu_student_backward(gm, ids, labels, bad, B, T, 1.0), KD_E_RANGE, "pos[");
    CHECK_ERR(kd_cu_student_backward(gm, ids, labels, NULL, B, 2 * T, 1.0), KD_E_RANGE, "over the CUDA student's plan");
    CHECK_ERR(kd_cu_student_backward(gm, ids, labels, NULL, 0, T, 1.0), KD_E_RANGE, "over the CUDA student's plan");
    /* after the refusals, a good step runs and gives a finite loss */
    double sum = 0;
    int64_t cnt = kd_student_count_targets(labels, pos, B, T);
    CHECK_OK(kd_cu_student_backward(gm, ids, labels, pos, B, T, 1.0 / (double)cnt));
    CHECK_OK(kd_cu_student_read(gm, &sum, NULL));
    CHECK(isfinite(sum) && sum > 0);
    kd_cu_student_free(gm);
    kd_student_free(cpu);
}

int main(void)
{
    RUN(gradients);
    RUN(training_curve);
    RUN(bad_input);
    return test_summary();
}
