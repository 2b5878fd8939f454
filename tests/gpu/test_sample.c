/* test_sample.c (gpu) - token sampling on the GPU (core/cuda/sample.cu)
 * against kd_sample (core/sampler.c), each row's uniform from kd_gen_rng as
 * generate.c draws it. Rows like an LM's (a normal spread with a few peaks),
 * flat rows, rows of few distinct values (ties at the k-th logit, tie runs
 * at the top-p cut), rows with -inf entries, rows with fewer finite logits
 * than k; greedy, temperature, top-k, top-p, min-p and their combinations,
 * vocabularies that are no multiple of any block size, and a mixed batch of
 * per-row knobs with errors (NaN, +inf, all -inf, invalid knobs: id -1). The
 * ids must be the CPU's exactly; the log-probabilities within 1e-5 of
 * row[id] - kd_logsumexp(row). Then: the same row gives the same id and
 * log-probability wherever it sits in batches of other sizes; the device exp
 * against the host's (glibc) on 2^24 arguments, bit for bit; timing lines
 * for S = 1, 64, 256 at V = 163840. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
#include "core/cuda/cusample.h"
#include "core/ops.h"
#include "core/sampler.h"
#include "teacher/generate.h"

enum { K_LM, K_FLAT, K_TIES, K_MASKED, K_FEW, K_DUPMAX, K_EQUAL, NKIND };
static const char *kind_name_[NKIND] = {"lm", "flat", "ties", "masked", "few finite", "tied max", "all equal"};

static double gauss_(void)
{
    double u1 = kd_rng_uniform(&rng), u2 = kd_rng_uniform(&rng);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

/* one row of logits of the given kind */
static void fill_row_(float *x, int64_t V, int kind)
{
    for (int64_t i = 0; i < V; i++) {
        const double g = 2.0 * gauss_();
        switch (kind) {
        case K_FLAT: x[i] = (float)(2 * kd_rng_uniform(&rng) - 1); break;
        case K_TIES: x[i] = (float)(round(g) * 0.5); break; /* a few dozen values */
        case K_MASKED: x[i] = kd_rng_uniform(&rng) < 0.4 ? -INFINITY : (float)g; break;
        case K_FEW: x[i] = -INFINITY; break;
        case K_EQUAL: x[i] = 1.5f; break;
        default: x[i] = (float)g; break;
        }
    }
    if (kind == K_LM || kind == K_MASKED || kind == K_DUPMAX) /* a few peaks, as an LM's next token */
        for (int p = 0, np = 1 + (int)(kd_rng_uniform(&rng) * 8); p < np; p++)
            x[(int64_t)(kd_rng_uniform(&rng) * V)] = (float)(6 + 10 * kd_rng_uniform(&rng));
    if (kind == K_FEW)
        for (int p = 0; p < 12 && p < V; p++)
            x[(int64_t)(kd_rng_uniform(&rng) * V)] = (float)gauss_();
    if (kind == K_DUPMAX) {
        float mx = -INFINITY;
        for (int64_t i = 0; i < V; i++)
            mx = x[i] > mx ? x[i] : mx;
        for (int p = 0; p < 5; p++)
            x[(int64_t)(kd_rng_uniform(&rng) * V)] = mx;
    }
}

/* knobs: the named ones, a fresh key for the draw */
static kd_cu_sample_row knobs_(double T, int64_t k, double p, double mp)
{
    kd_cu_sample_row r = {.temperature = T, .top_p = p, .min_p = mp, .top_k = k};
    r.seed = kd_rng_next(&rng), r.prompt = kd_rng_next(&rng) % 100000;
    r.sample = kd_rng_next(&rng) % 16, r.t = kd_rng_next(&rng) % 4096;
    return r;
}

/* a random combination of knobs (greedy sometimes), or, with bad, sometimes invalid ones */
static kd_cu_sample_row random_knobs_(int64_t V, int bad)
{
    static const double Ts[] = {0.0, 0.3, 0.6, 1.0, 1.0, 1.3};
    static const int64_t ks[] = {0, 0, 1, 2, 20, 50, 1000};
    static const double ps[] = {1.0, 1.0, 0.5, 0.9, 0.95, 0.99};
    static const double mps[] = {0.0, 0.0, 0.0, 0.02, 0.1};
    kd_cu_sample_row r = knobs_(Ts[kd_rng_below(&rng, 6)], ks[kd_rng_below(&rng, 7)], ps[kd_rng_below(&rng, 6)],
                                mps[kd_rng_below(&rng, 5)]);
    if (kd_rng_uniform(&rng) < 0.2)
        r.top_p = 0.05 + 0.949 * kd_rng_uniform(&rng);
    if (kd_rng_uniform(&rng) < 0.1)
        r.top_k = (int64_t)kd_rng_below(&rng, (uint64_t)V + 4);
    if (bad && kd_rng_uniform(&rng) < 0.1) {
        switch (kd_rng_below(&rng, 4)) {
        case 0: r.temperature = -1; break;
        case 1: r.top_p = 0; break;
        case 2: r.min_p = 1.5; break;
        default: r.top_k = -3; break;
        }
    }
    return r;
}

/* the CPU's token for a row: kd_sample with generate.c's generator; -1 on an error */
static int64_t cpu_pick_(const kd_cu_sample_row *r, const float *row, int64_t V, float *scratch)
{
    kd_sampler_cfg c = {.temperature = r->temperature, .top_k = r->top_k, .top_p = r->top_p, .min_p = r->min_p};
    kd_rng g;
    kd_gen_rng(r->seed, r->prompt, r->sample, r->t, &g);
    int64_t id;
    return kd_sample(&c, &g, row, V, &id, scratch) == KD_OK ? id : -1;
}

/* the GPU's ids and log-probabilities for a batch */
static void gpu_run_(int32_t *ids, float *lp, const float *lg, const kd_cu_sample_row *rows, int64_t S, int64_t V)
{
    float *dl = up32(lg, S * V), *dp = dev((size_t)S * sizeof *dp);
    kd_cu_sample_row *dr = dev((size_t)S * sizeof *dr);
    int32_t *di = dev((size_t)S * sizeof *di);
    CHECK_OK(kd_cu_upload(dr, rows, (size_t)S * sizeof *rows, &cu));
    CHECK_OK(kd_cu_sample(di, dp, dl, dr, S, V, &cu));
    CHECK_OK(kd_cu_download(ids, di, (size_t)S * sizeof *ids, &cu));
    CHECK_OK(kd_cu_download(lp, dp, (size_t)S * sizeof *lp, &cu));
    kd_cu_free_ptr(dl), kd_cu_free_ptr(dp), kd_cu_free_ptr(dr), kd_cu_free_ptr(di);
}

static int64_t total_rows_, total_diff_;

/* Run a batch on both and compare: ids exactly, log-probabilities to 1e-5. */
static void compare_(const char *name, const float *lg, const kd_cu_sample_row *rows, int64_t S, int64_t V)
{
    int32_t *ids = malloc((size_t)S * sizeof *ids);
    float *lp = malloc((size_t)S * sizeof *lp), *scratch = malloc((size_t)V * sizeof *scratch);
    gpu_run_(ids, lp, lg, rows, S, V);
    int64_t diff = 0, errs = 0;
    double lperr = 0;
    for (int64_t s = 0; s < S; s++) {
        const float *row = lg + s * V;
        const int64_t want = cpu_pick_(&rows[s], row, V, scratch);
        errs += want < 0;
        if (ids[s] != want) {
            if (diff++ < 5)
                fprintf(stderr, "    %s row %lld: gpu %d cpu %lld (T %g k %lld p %.17g min_p %g)\n", name,
                        (long long)s, ids[s], (long long)want, rows[s].temperature, (long long)rows[s].top_k,
                        rows[s].top_p, rows[s].min_p);
            continue;
        }
        double e = 0;
        if (want >= 0) {
            const double lse = kd_logsumexp(row, V), ref = (double)row[want] - lse;
            e = isfinite(ref) ? fabs((double)lp[s] - ref) : (isnan(ref) == isnan(lp[s]) ? 0 : INFINITY);
        } else {
            e = isnan(lp[s]) ? 0 : INFINITY;
        }
        lperr = e > lperr || e != e ? e : lperr;
    }
    printf("  %-34s S %4lld V %7lld: %lld of %lld ids differ (%lld errors), logprob worst %.1e\n", name,
           (long long)S, (long long)V, (long long)diff, (long long)S, (long long)errs, lperr);
    CHECK_EQ_INT(diff, 0);
    CHECK(lperr <= 1e-5);
    total_rows_ += S, total_diff_ += diff;
    free(ids), free(lp), free(scratch);
}

/* S rows of one kind, all with proto's knobs (each its own key for the draw) */
static void case_(const char *name, int kind, int64_t S, int64_t V, kd_cu_sample_row proto)
{
    float *lg = malloc((size_t)(S * V) * sizeof *lg);
    kd_cu_sample_row *rows = malloc((size_t)S * sizeof *rows);
    for (int64_t s = 0; s < S; s++) {
        fill_row_(lg + s * V, V, kind);
        rows[s] = knobs_(proto.temperature, proto.top_k, proto.top_p, proto.min_p);
    }
    char full[96];
    snprintf(full, sizeof full, "%s, %s", name, kind_name_[kind]);
    compare_(full, lg, rows, S, V);
    free(lg), free(rows);
}

TEST(greedy)
{
    for (int kind = 0; kind < NKIND; kind++)
        case_("greedy", kind, 16, 4097, knobs_(0, 0, 1, 0));
    case_("greedy", K_LM, 8, 1, knobs_(0, 0, 1, 0));
    case_("greedy", K_TIES, 8, 7, knobs_(0, 0, 1, 0));
    case_("greedy", K_LM, 4, 151936, knobs_(0, 0, 1, 0));
    case_("greedy (knobs ignored)", K_DUPMAX, 8, 1000, knobs_(0, 5, 0.5, 0.2));
}

TEST(temperature)
{
    static const double Ts[] = {0.25, 0.7, 1.0, 1.6};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "temperature %g", Ts[i]);
        case_(name, K_LM, 24, 32003, knobs_(Ts[i], 0, 1, 0));
        case_(name, K_FLAT, 8, 5000, knobs_(Ts[i], 0, 1, 0));
    }
    case_("temperature 1", K_MASKED, 16, 10007, knobs_(1, 0, 1, 0));
    case_("temperature 1", K_FEW, 16, 10007, knobs_(1, 0, 1, 0));
    case_("temperature 1", K_LM, 4, 163840, knobs_(1, 0, 1, 0));
    case_("temperature 0.8", K_LM, 2, 200003, knobs_(0.8, 0, 1, 0));
}

TEST(top_k)
{
    static const int64_t ks[] = {1, 2, 5, 50, 1000, 4095, 4096, 4097, 5000};
    for (int i = 0; i < 9; i++) {
        char name[64];
        snprintf(name, sizeof name, "top-k %lld", (long long)ks[i]);
        case_(name, K_TIES, 16, 5000, knobs_(1, ks[i], 1, 0)); /* k-th tied */
        case_(name, K_LM, 8, 5000, knobs_(0.7, ks[i], 1, 0));
    }
    case_("top-k 4999 (V - 1)", K_TIES, 8, 5000, knobs_(1, 4999, 1, 0));
    case_("top-k 5003 (> V: off)", K_LM, 8, 5000, knobs_(1, 5003, 1, 0));
    case_("top-k 50", K_MASKED, 16, 33333, knobs_(1, 50, 1, 0));
    case_("top-k 50 (fewer finite)", K_FEW, 16, 33333, knobs_(1, 50, 1, 0));
    case_("top-k 50", K_EQUAL, 4, 3000, knobs_(1, 50, 1, 0));
    case_("top-k 50", K_FLAT, 8, 163840, knobs_(1, 50, 1, 0));
    case_("top-k 20000 (no list)", K_FLAT, 4, 163840, knobs_(1, 20000, 1, 0));
    case_("top-k 40", K_LM, 8, 163840, knobs_(0.6, 40, 1, 0));
}

TEST(top_p)
{
    static const double ps[] = {0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999};
    for (int i = 0; i < 7; i++) {
        char name[64];
        snprintf(name, sizeof name, "top-p %g", ps[i]);
        case_(name, K_LM, 16, 32003, knobs_(1, 0, ps[i], 0));
        case_(name, K_TIES, 16, 3001, knobs_(0.8, 0, ps[i], 0)); /* cut in a tie run */
        case_(name, K_FLAT, 4, 20000, knobs_(1, 0, ps[i], 0));
    }
    /* random p, the cut anywhere */
    for (int kind = 0; kind < NKIND; kind++) {
        const int64_t S = 24, V = 7001;
        float *lg = malloc((size_t)(S * V) * sizeof *lg);
        kd_cu_sample_row *rows = malloc((size_t)S * sizeof *rows);
        for (int64_t s = 0; s < S; s++) {
            fill_row_(lg + s * V, V, kind);
            rows[s] = knobs_(0.5 + kd_rng_uniform(&rng), 0, 0.01 + 0.98 * kd_rng_uniform(&rng), 0);
        }
        char name[64];
        snprintf(name, sizeof name, "top-p random, %s", kind_name_[kind]);
        compare_(name, lg, rows, S, V);
        free(lg), free(rows);
    }
    /* equal logits, p = j / V: the cut on a whole number of tokens, exactly */
    {
        const int64_t S = 12, V = 1000;
        float *lg = malloc((size_t)(S * V) * sizeof *lg);
        kd_cu_sample_row *rows = malloc((size_t)S * sizeof *rows);
        for (int64_t s = 0; s < S; s++) {
            fill_row_(lg + s * V, V, K_EQUAL);
            rows[s] = knobs_(1, 0, (double)(1 + 83 * s) / V, 0);
        }
        compare_("top-p j/V, all equal", lg, rows, S, V);
        free(lg), free(rows);
    }
    case_("top-p 0.95", K_LM, 4, 163840, knobs_(0.6, 0, 0.95, 0));
    case_("top-p 0.95 (no list)", K_FLAT, 2, 163840, knobs_(1, 0, 0.95, 0));
}

TEST(min_p_and_combinations)
{
    static const double mps[] = {0.01, 0.05, 0.3, 1.0};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "min-p %g", mps[i]);
        case_(name, K_LM, 16, 12345, knobs_(1, 0, 1, mps[i]));
        case_(name, K_TIES, 8, 12345, knobs_(0.7, 0, 1, mps[i]));
    }
    case_("top-k 50 + top-p 0.9", K_LM, 16, 32003, knobs_(1, 50, 0.9, 0));
    case_("top-k 50 + top-p 0.9", K_TIES, 16, 32003, knobs_(1, 50, 0.9, 0));
    case_("top-k 20 + min-p 0.05", K_LM, 16, 32003, knobs_(0.7, 20, 1, 0.05));
    case_("top-p 0.95 + min-p 0.05", K_LM, 16, 32003, knobs_(1, 0, 0.95, 0.05));
    case_("top-k 40 + top-p 0.8 + min-p 0.1", K_TIES, 16, 32003, knobs_(1.2, 40, 0.8, 0.1));
    case_("top-k 3000 + top-p 0.7", K_FLAT, 8, 32003, knobs_(1, 3000, 0.7, 0));
    case_("top-k 50 + top-p 0.9", K_MASKED, 8, 163840, knobs_(0.6, 50, 0.9, 0));
}

/* every row its own knobs and kind, errors mixed in: NaN, +inf, all -inf, bad knobs */
TEST(mixed_batch)
{
    static const int64_t Vs[] = {1, 2, 255, 256, 257, 4097, 30001};
    for (int iv = 0; iv < 7; iv++) {
        const int64_t S = 64, V = Vs[iv];
        float *lg = malloc((size_t)(S * V) * sizeof *lg);
        kd_cu_sample_row *rows = malloc((size_t)S * sizeof *rows);
        for (int64_t s = 0; s < S; s++) {
            float *row = lg + s * V;
            fill_row_(row, V, (int)kd_rng_below(&rng, NKIND));
            rows[s] = random_knobs_(V, 1);
            const double e = kd_rng_uniform(&rng);
            if (e < 0.04)
                row[kd_rng_below(&rng, (uint64_t)V)] = NAN;
            else if (e < 0.08)
                row[kd_rng_below(&rng, (uint64_t)V)] = INFINITY;
            else if (e < 0.1)
                for (int64_t i = 0; i < V; i++)
                    row[i] = -INFINITY;
        }
        char name[64];
        snprintf(name, sizeof name, "mixed knobs and rows, V %lld", (long long)V);
        compare_(name, lg, rows, S, V);
        free(lg), free(rows);
    }
}

/* the same row and key give the same id and logprob at any place in any batch */
TEST(batch_invariance)
{
    const int64_t V = 20011, R = 8;
    float *base = malloc((size_t)(R * V) * sizeof *base);
    kd_cu_sample_row brows[8];
    for (int64_t r = 0; r < R; r++) {
        fill_row_(base + r * V, V, r % 2 ? K_TIES : K_LM);
        brows[r] = random_knobs_(V, 0);
        brows[r].temperature = 0.5 + r * 0.1; /* sampling, every kind of knob */
    }
    int32_t want[8];
    float wlp[8];
    gpu_run_(want, wlp, base, brows, R, V);
    int64_t bad = 0;
    static const int64_t Ss[] = {1, 37, 130};
    for (int is = 0; is < 3; is++) {
        const int64_t S = Ss[is];
        for (int64_t r = 0; r < R; r++) {
            float *lg = malloc((size_t)(S * V) * sizeof *lg);
            kd_cu_sample_row *rows = malloc((size_t)S * sizeof *rows);
            const int64_t at = (int64_t)kd_rng_below(&rng, (uint64_t)S);
            for (int64_t s = 0; s < S; s++) {
                if (s == at) {
                    memcpy(lg + s * V, base + r * V, (size_t)V * sizeof *lg);
                    rows[s] = brows[r];
                } else {
                    fill_row_(lg + s * V, V, (int)kd_rng_below(&rng, NKIND));
                    rows[s] = random_knobs_(V, 1);
                }
            }
            int32_t *ids = malloc((size_t)S * sizeof *ids);
            float *lp = malloc((size_t)S * sizeof *lp);
            gpu_run_(ids, lp, lg, rows, S, V);
            bad += ids[at] != want[r] || memcmp(&lp[at], &wlp[r], sizeof(float)) != 0;
            free(lg), free(rows), free(ids), free(lp);
        }
    }
    printf("  batch invariance: %lld of %lld placements differ\n", (long long)bad, (long long)(3 * R));
    CHECK_EQ_INT(bad, 0);
    free(base);
}

/* the device exp against the host's, bit for bit */
TEST(exp_bits)
{
    const int64_t n = 1 << 24;
    double *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++) {
        const double u = kd_rng_uniform(&rng);
        switch (i % 4) {
        case 0: x[i] = -50 * u; break;       /* the weights that matter */
        case 1: x[i] = -760 * u; break;      /* through underflow */
        case 2: x[i] = -u * 1e-3; break;
        default: x[i] = ((double)(float)(40 * u - 20) - 20.0) / (0.05 + 2 * kd_rng_uniform(&rng)); break;
        }
    }
    static const double special[] = {0.0, -0.0, -0x1p-60, -0x1p-54, -0x1p-1074, -511.9, -512.0, -708.4, -708.39,
                                     -745.1, -745.2, -1023.9, -1024.0, -1e300, -INFINITY};
    for (int i = 0; i < 15; i++)
        x[i] = special[i];
    double *dx = dev((size_t)n * sizeof *dx), *dy = dev((size_t)n * sizeof *dy);
    CHECK_OK(kd_cu_upload(dx, x, (size_t)n * sizeof *x, &cu));
    CHECK_OK(kd_cu_sample_exp(dy, dx, n, &cu));
    CHECK_OK(kd_cu_download(y, dy, (size_t)n * sizeof *y, &cu));
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = exp(x[i]);
        if (memcmp(&e, &y[i], sizeof e) != 0 && bad++ < 5)
            fprintf(stderr, "    exp(%a): host %a device %a\n", x[i], e, y[i]);
    }
    printf("  device exp vs the host's: %lld of %lld differ in any bit\n", (long long)bad, (long long)n);
    CHECK_EQ_INT(bad, 0);
    free(x), free(y);
    kd_cu_free_ptr(dx), kd_cu_free_ptr(dy);
}

/* timing (not an assertion): LM-like rows at V = 163840 */
TEST(timing)
{
    const int64_t V = 163840, Smax = 256;
    float *lg = malloc((size_t)(Smax * V) * sizeof *lg);
    for (int64_t s = 0; s < Smax; s++)
        fill_row_(lg + s * V, V, K_LM);
    float *dl = up32(lg, Smax * V), *dp = dev((size_t)Smax * sizeof *dp);
    int32_t *di = dev((size_t)Smax * sizeof *di);
    kd_cu_sample_row *rows = malloc((size_t)Smax * sizeof *rows), *dr = dev((size_t)Smax * sizeof *dr);
    static const struct { const char *name; double T; int64_t k; double p, mp; } ks[] = {
        {"greedy", 0, 0, 1, 0},          {"temperature 1", 1, 0, 1, 0},  {"top-k 50", 1, 50, 1, 0},
        {"top-p 0.95 T 0.6", 0.6, 0, 0.95, 0}, {"top-p 0.95 T 1", 1, 0, 0.95, 0}, {"top-k 50 top-p 0.9", 1, 50, 0.9, 0},
        {"min-p 0.05", 1, 0, 1, 0.05},
    };
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
        for (int64_t s = 0; s < Smax; s++)
            rows[s] = knobs_(ks[c].T, ks[c].k, ks[c].p, ks[c].mp);
        CHECK_OK(kd_cu_upload(dr, rows, (size_t)Smax * sizeof *rows, &cu));
        static const int64_t Ss[] = {1, 64, 256};
        double ms[3];
        for (int is = 0; is < 3; is++) {
            CHECK_OK(kd_cu_sample(di, dp, dl, dr, Ss[is], V, &cu)); /* warm-up */
            cudaEventRecord(e0, (cudaStream_t)cu.stream);
            for (int r = 0; r < 10; r++)
                CHECK_OK(kd_cu_sample(di, dp, dl, dr, Ss[is], V, &cu));
            cudaEventRecord(e1, (cudaStream_t)cu.stream);
            cudaEventSynchronize(e1);
            float t = 0;
            cudaEventElapsedTime(&t, e0, e1);
            ms[is] = t / 10;
        }
        printf("  timing V %lld, %-20s S=1 %.3f ms, S=64 %.3f ms, S=256 %.3f ms\n", (long long)V, ks[c].name, ms[0],
               ms[1], ms[2]);
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    free(lg), free(rows);
    kd_cu_free_ptr(dl), kd_cu_free_ptr(dp), kd_cu_free_ptr(di), kd_cu_free_ptr(dr);
}

TEST(errors)
{
    CHECK_ERR(kd_cu_sample(NULL, NULL, NULL, NULL, 4, 0, &cu), KD_E_CUDA, "need 1 <= V");
    CHECK_ERR(kd_cu_sample(NULL, NULL, NULL, NULL, 4, KD_CU_SAMPLE_MAXV + 1, &cu), KD_E_CUDA, "logits");
    CHECK_OK(kd_cu_sample(NULL, NULL, NULL, NULL, 0, 100, &cu));
}

int main(void)
{
    kd_rng_seed(&rng, 11);
    if (kd_cu_init(&cu, 0) != KD_OK) {
        fprintf(stderr, "no CUDA device: %s\n", kd_strerror(KD_E_CUDA));
        return 1;
    }
    RUN(exp_bits);
    RUN(greedy);
    RUN(temperature);
    RUN(top_k);
    RUN(top_p);
    RUN(min_p_and_combinations);
    RUN(mixed_batch);
    RUN(batch_invariance);
    RUN(errors);
    RUN(timing);
    printf("  in all: %lld of %lld rows differ from the CPU\n", (long long)total_diff_, (long long)total_rows_);
    kd_cu_free(&cu);
    return test_summary();
}
