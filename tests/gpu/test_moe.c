/* test_moe.c (gpu) - the teacher's MoE routing and permutation on the GPU
 * (core/cuda/moe.cu) against the CPU router (route_ in teacher/model.c,
 * through kd_teacher_route_) and moe_'s grouping: DeepSeek-V3 (sigmoid,
 * noaux_tc, 8 groups), Moonlight (no groups), V2-Lite (softmax, greedy), V2
 * (softmax, group-limited greedy) and a small case whose logits take three
 * values, so most choices are ties. The experts must be the same; weights
 * within 1e-6. Then the grouped GEMM against per-expert products, and a
 * timing line at a Moonlight layer's decode shape. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
#include "core/cuda/cuops.h"
#include "core/hfconfig.h"
#include "core/log.h"
#include "core/rng.h"
#include "teacher/internal.h"

typedef struct rcase_ {
    const char *name;
    int E, k, G, tg, sigmoid, method, v3, norm, bias, ties;
    float scaling;
} rcase_;

static void route_case_(const rcase_ *rc_, int64_t N)
{
    kd_model_config c;
    memset(&c, 0, sizeof c);
    c.arch = rc_->v3 ? KD_ARCH_DEEPSEEK_V3 : KD_ARCH_DEEPSEEK_V2;
    c.n_routed_experts = rc_->E;
    c.num_experts_per_tok = rc_->k;
    c.n_group = rc_->G;
    c.topk_group = rc_->tg;
    c.scoring_func = rc_->sigmoid ? KD_SCORE_SIGMOID : KD_SCORE_SOFTMAX;
    c.topk_method = (kd_topk_method)rc_->method;
    c.norm_topk_prob = rc_->norm;
    c.routed_scaling_factor = rc_->scaling;
    const int E = rc_->E, k = rc_->k;
    float *lg = malloc((size_t)(N * E) * sizeof *lg), *bias = NULL;
    for (int64_t i = 0; i < N * E; i++)
        lg[i] = rc_->ties ? (float)((int)(kd_rng_uniform(&rng) * 3) - 1) : (float)(8 * kd_rng_uniform(&rng) - 4);
    if (rc_->bias) {
        bias = malloc((size_t)E * sizeof *bias);
        for (int e = 0; e < E; e++)
            bias[e] = rc_->ties ? 0.0f : (float)(0.2 * kd_rng_uniform(&rng) - 0.1);
    }
    int64_t *ri = malloc((size_t)(N * k) * sizeof *ri);
    float *rw = malloc((size_t)(N * k) * sizeof *rw), *scr = malloc((size_t)(2 * E) * sizeof *scr);
    for (int64_t t = 0; t < N; t++)
        kd_teacher_route_(&c, lg + t * E, bias, ri + t * k, rw + t * k, scr);

    kd_cu_route rc = {.E = E, .k = k, .G = rc_->G, .topk_group = rc_->tg, .method = rc_->method,
                      .sigmoid = rc_->sigmoid, .v3 = rc_->v3, .norm_topk_prob = rc_->norm, .scaling = rc_->scaling};
    float *dl = up32(lg, N * E), *db = bias ? up32(bias, E) : NULL, *dw = dev((size_t)(N * k) * 4);
    int32_t *di = dev((size_t)(N * k) * 4);
    CHECK_OK(kd_cu_moe_route(di, dw, dl, db, N, &rc, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    int32_t *gi = malloc((size_t)(N * k) * sizeof *gi);
    float *gw = malloc((size_t)(N * k) * sizeof *gw);
    CHECK_OK(kd_cu_download(gi, di, (size_t)(N * k) * 4, &cu));
    CHECK_OK(kd_cu_download(gw, dw, (size_t)(N * k) * 4, &cu));
    int64_t diff = 0;
    double ew = 0;
    for (int64_t i = 0; i < N * k; i++) {
        diff += gi[i] != ri[i];
        double e = fabs((double)gw[i] - rw[i]) / (fabs(rw[i]) + 1e-30);
        ew = e > ew ? e : ew;
    }
    printf("  route %-22s N %lld E %3d k %d G %d: %lld of %lld experts differ, weights worst rel %.1e\n", rc_->name,
           (long long)N, E, k, rc_->G, (long long)diff, (long long)(N * k), ew);
    CHECK_EQ_INT(diff, 0);
    CHECK(ew <= 1e-6);

    /* the permutation, against moe_'s grouping of the same assignments */
    int32_t *dsrc = dev((size_t)(N * k) * 4), *ddst = dev((size_t)(N * k) * 4), *doff = dev((size_t)(E + 1) * 4);
    int32_t *dcnt = dev((size_t)E * 4);
    CHECK_OK(kd_cu_moe_permute(dsrc, ddst, doff, dcnt, di, N, k, E, &cu));
    int32_t *src = malloc((size_t)(N * k) * 4), *dst = malloc((size_t)(N * k) * 4), *off = malloc((size_t)(E + 1) * 4);
    int32_t *cnt = malloc((size_t)E * 4);
    CHECK_OK(kd_cu_download(src, dsrc, (size_t)(N * k) * 4, &cu));
    CHECK_OK(kd_cu_download(dst, ddst, (size_t)(N * k) * 4, &cu));
    CHECK_OK(kd_cu_download(off, doff, (size_t)(E + 1) * 4, &cu));
    CHECK_OK(kd_cu_download(cnt, dcnt, (size_t)E * 4, &cu));
    int64_t bad = 0, j = 0;
    for (int e = 0; e < E; e++) {
        bad += off[e] != j;
        int64_t c0 = j;
        for (int64_t a = 0; a < N * k; a++)
            if (ri[a] == e) {
                bad += j >= N * k || src[j] != a || dst[a] != j;
                j++;
            }
        bad += cnt[e] != j - c0;
    }
    bad += off[E] != N * k;
    printf("  permute %-20s %lld slots: %lld mismatches\n", rc_->name, (long long)(N * k), (long long)bad);
    CHECK_EQ_INT(bad, 0);

    /* gather and combine, 16-byte and scalar rows */
    static const int64_t widths[] = {72, 37};
    for (int wi = 0; wi < 2; wi++) {
        const int64_t C = widths[wi];
        float *x = rnd(N * C, 1), *y = rnd(N * k * C, 1);
        kd_bf16 *dx = up16(x, N * C), *dy = up16(y, N * k * C), *dxin = dev((size_t)(N * k * C) * 2);
        kd_bf16 *dout = dev((size_t)(N * C) * 2), *dadd = wi ? up16(x, N * C) : NULL; /* shared experts' rows */
        CHECK_OK(kd_cu_moe_gather(dxin, dx, dsrc, N, k, C, &cu));
        CHECK_OK(kd_cu_moe_combine(dout, dy, ddst, di, dw, dadd, N, k, C, &cu));
        float *xin = down16(dxin, N * k * C), *out = down16(dout, N * C);
        int64_t gbad = 0;
        for (int64_t s = 0; s < N * k; s++)
            gbad += memcmp(xin + s * C, x + (src[s] / k) * C, (size_t)C * 4) != 0;
        double eo = 0;
        for (int64_t t = 0; t < N; t++)
            for (int64_t i = 0; i < C; i++) {
                double want = 0, mag = 0; /* moe_'s order: experts ascending */
                for (int e = 0; e < E; e++)
                    for (int r = 0; r < k; r++)
                        if (ri[t * k + r] == e) {
                            const double v = (double)rw[t * k + r] * y[(int64_t)dst[t * k + r] * C + i];
                            want += v;
                            mag += fabs(v);
                        }
                if (dadd) /* x holds bf16 values already */
                    want += x[t * C + i], mag += fabs(x[t * C + i]);
                /* an fp32 sum of k (+1) terms rounded once to bf16 */
                double d = fabs(out[t * C + i] - want) / (mag + 1e-30);
                eo = d > eo ? d : eo;
            }
        printf("  gather/combine %-13s C %3lld: %lld rows gathered wrong, combine worst rel %.1e\n", rc_->name,
               (long long)C, (long long)gbad, eo);
        CHECK_EQ_INT(gbad, 0);
        CHECK(eo <= 1.0 / 256 + 1e-5); /* bf16 keeps 8 bits: rounding within 2^-8 of the value */
        free(x), free(y), free(xin), free(out);
        kd_cu_free_ptr(dx), kd_cu_free_ptr(dy), kd_cu_free_ptr(dxin), kd_cu_free_ptr(dout), kd_cu_free_ptr(dadd);
    }
    free(lg), free(bias), free(ri), free(rw), free(scr), free(gi), free(gw), free(src), free(dst), free(off), free(cnt);
    kd_cu_free_ptr(dl), kd_cu_free_ptr(db), kd_cu_free_ptr(dw), kd_cu_free_ptr(di), kd_cu_free_ptr(dsrc);
    kd_cu_free_ptr(ddst), kd_cu_free_ptr(doff), kd_cu_free_ptr(dcnt);
}

TEST(route_permute_combine)
{
    static const rcase_ cases[] = {
        {"deepseek-v3", 256, 8, 8, 4, 1, KD_CU_TOPK_NOAUX_TC, 1, 1, 1, 0, 2.5f},
        {"moonlight", 64, 6, 1, 1, 1, KD_CU_TOPK_NOAUX_TC, 1, 1, 1, 0, 2.446f},
        {"v2-lite (softmax)", 64, 6, 1, 1, 0, KD_CU_TOPK_GREEDY, 0, 0, 0, 0, 1.0f},
        {"v2 (group-limited)", 160, 6, 8, 3, 0, KD_CU_TOPK_GROUP_LIMITED, 0, 0, 0, 0, 16.0f},
        {"v2 normalised", 64, 6, 1, 1, 0, KD_CU_TOPK_GREEDY, 0, 1, 0, 0, 1.0f},
        {"ties (3 logit values)", 16, 4, 4, 2, 1, KD_CU_TOPK_NOAUX_TC, 1, 1, 1, 1, 1.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        route_case_(&cases[i], i == 0 ? 1031 : 517);
}

/* the grouped GEMM against a per-expert product on the CPU (double, of the
 * same bf16 inputs): experts with no rows, one row, more than a tile; N and K
 * not multiples of the tiles */
static void gemm_case_(const int32_t *counts, int E, int64_t N, int64_t K)
{
    int32_t *off = malloc((size_t)(E + 1) * sizeof *off);
    off[0] = 0;
    for (int e = 0; e < E; e++)
        off[e + 1] = off[e] + counts[e];
    const int64_t NK = off[E];
    float *x = rnd(NK * K, 1), *w = rnd((int64_t)E * N * K, 0.1f), *want = malloc((size_t)(NK * N) * sizeof *want);
    for (int e = 0; e < E; e++)
        for (int64_t r = off[e]; r < off[e + 1]; r++)
            for (int64_t n = 0; n < N; n++) {
                double a = 0;
                for (int64_t k = 0; k < K; k++)
                    a += (double)x[r * K + k] * w[((int64_t)e * N + n) * K + k];
                want[r * N + n] = (float)a;
            }
    kd_bf16 *dx = up16(x, NK * K), *dw = up16(w, (int64_t)E * N * K), *dy = dev((size_t)(NK * N) * 2);
    int32_t *doff = dev((size_t)(E + 1) * 4);
    CHECK_OK(kd_cu_upload(doff, off, (size_t)(E + 1) * 4, &cu));
    for (int path = 1; path <= 3; path++) { /* tiles of 64 rows; per expert, 32 rows a pass; the same in registers */
        if (path == 3 && (K % 128 || N % 16)) {
            CHECK_ERR(kd_cu_moe_gemm_path(dy, dx, dw, doff, E, NK, N, K, path, &cu), KD_E_CUDA, "not a multiple of 128");
            continue;
        }
        CHECK_OK(kd_cu_memset0(dy, (size_t)(NK * N) * 2, &cu));
        CHECK_OK(kd_cu_moe_gemm_path(dy, dx, dw, doff, E, NK, N, K, path, &cu));
        CHECK_OK(kd_cu_sync(&cu));
        float *got = down16(dy, NK * N);
        double err = rel_err(got, want, NK * N);
        printf("  grouped gemm path %d E %d rows %lld N %lld K %lld: rel err %.1e\n", path, E, (long long)NK,
               (long long)N, (long long)K, err);
        CHECK(err <= 1e-2);
        free(got);
    }
    free(off), free(x), free(w), free(want);
    kd_cu_free_ptr(dx), kd_cu_free_ptr(dw), kd_cu_free_ptr(dy), kd_cu_free_ptr(doff);
}

TEST(grouped_gemm)
{
    static const int32_t c1[] = {0, 1, 70, 5, 128, 0, 33, 200};
    gemm_case_(c1, 8, 100, 136);
    static const int32_t c2[] = {64, 64, 0};
    gemm_case_(c2, 3, 64, 32);
    /* decode-like: few rows, N % 128 != 0 */
    static const int32_t c3[] = {3, 0, 9, 1, 0, 17, 6, 4, 0, 2, 8, 5, 1, 0, 33, 7};
    gemm_case_(c3, 16, 200, 328);
    /* the register paths' shapes (K % 128, N % 16): one stage, odd and even stage counts, 200 rows (7 passes) */
    gemm_case_(c3, 16, 144, 128);
    gemm_case_(c3, 16, 208, 384);
    gemm_case_(c1, 8, 48, 512);
    /* timing (not an assertion): a Moonlight-16B-A3B layer's routed gate/up at 256 tokens of
     * decode, top-6 of 64 experts, 1408 x 2 features of 2048 */
    const int E = 64;
    const int64_t N = 2 * 1408, K = 2048;
    kd_bf16 *dx = dev((size_t)(2048 * 6 * K) * 2), *dw = dev((size_t)E * N * K * 2);
    kd_bf16 *dy = dev((size_t)(2048 * 6 * N) * 2);
    int32_t *doff = dev((E + 1) * 4);
    uint8_t *d8 = dev((size_t)E * N * K), *dx8 = dev((size_t)(2048 * 6 * K));
    float *dsc = dev((size_t)E * ((N + 127) / 128) * ((K + 127) / 128) * 4), *dxs = dev((size_t)(2048 * 6 * K / 128) * 4);
    CHECK_OK(kd_cu_fp8_quantize(d8, dsc, dw, E, N, K, &cu));
    CHECK_OK(kd_cu_fp8_quantize_rows(dx8, dxs, dx, 2048 * 6, K, &cu));
    static const int64_t toks[] = {1, 64, 256, 2048};
    for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++) {
        const int64_t NK = toks[ti] * 6;
        int32_t off[65];
        for (int e = 0; e <= E; e++) /* spread evenly, the first NK experts when fewer */
            off[e] = (int32_t)(NK >= E ? NK * e / E : (e < NK ? e : NK));
        CHECK_OK(kd_cu_upload(doff, off, sizeof off, &cu));
        const double touched = NK >= E ? E : (double)NK;
        for (int path = 1; path <= 5; path++) /* 4, 5: fp8 weights and rows (1 byte each), paths 2 and 3 */
            for (int pass = 0; pass < 2; pass++) {
                CHECK_OK(kd_cu_sync(&cu));
                double t0 = kd_now();
                for (int r = 0; r < 10; r++)
                    CHECK_OK(path >= 4 ? kd_cu_moe_gemm_fp8_path(dy, dx8, dxs, d8, dsc, doff, E, NK, N, K, path - 2, &cu)
                                       : kd_cu_moe_gemm_path(dy, dx, dw, doff, E, NK, N, K, path, &cu));
                CHECK_OK(kd_cu_sync(&cu));
                double dt = (kd_now() - t0) / 10;
                if (pass)
                    printf("  grouped gemm timing, %s: %d experts (%.0f with rows), %lld rows, N %lld, K %lld: "
                           "%.3f ms, weights %.0f GB/s, %.1f TFLOP/s\n",
                           path == 1 ? "tiles" : path == 2 ? "rows" : path == 3 ? "registers" : path == 4 ? "rows fp8" : "registers fp8",
                           E, touched, (long long)NK, (long long)N, (long long)K, dt * 1e3,
                           touched * N * K * (path >= 4 ? 1 : 2) / dt / 1e9, 2.0 * NK * N * K / dt / 1e12);
            }
    }
    kd_cu_free_ptr(dx), kd_cu_free_ptr(dw), kd_cu_free_ptr(dy), kd_cu_free_ptr(doff);
    kd_cu_free_ptr(d8), kd_cu_free_ptr(dsc), kd_cu_free_ptr(dx8), kd_cu_free_ptr(dxs);
}

/* The CPU's arithmetic of a 128-group quantiser: scale = amax / 448 (1 when all
 * zero), bytes e4m3(v / scale); counts the scales and bytes that differ from
 * the GPU's and fills q with the dequantised values */
static void quant_check_(const float *v, int64_t n_rows, int64_t n_cols, int64_t bh, const float *got_s,
                         int64_t s_ld, const uint8_t *got8, float *q, int64_t *bad_scale, int64_t *bad_byte)
{
    for (int64_t rb = 0; rb < (n_rows + bh - 1) / bh; rb++)
        for (int64_t kb = 0; kb < (n_cols + 127) / 128; kb++) {
            float mx = 0;
            for (int64_t r = rb * bh; r < n_rows && r < rb * bh + bh; r++)
                for (int64_t c = kb * 128; c < n_cols && c < kb * 128 + 128; c++)
                    mx = fmaxf(mx, fabsf(v[r * n_cols + c]));
            const float sc = mx > 0 ? mx / 448.0f : 1.0f, got = got_s[rb * s_ld + kb], inv = 1.0f / sc;
            *bad_scale += got != sc;
            for (int64_t r = rb * bh; r < n_rows && r < rb * bh + bh; r++)
                for (int64_t c = kb * 128; c < n_cols && c < kb * 128 + 128; c++) {
                    const int64_t i = r * n_cols + c;
                    *bad_byte += got8[i] != kd_f32_to_fp8e4m3(v[i] * inv);
                    q[i] = kd_fp8e4m3_to_f32(got8[i]) * got;
                }
        }
}

/* FP8 experts: both quantisers against the same arithmetic on the CPU (bytes
 * and scales exact: weights per 128 x 128 block, rows per 128 channels), then
 * the W8A8 grouped GEMM against the fp64 products of the dequantised rows and
 * weights (bf16 output tolerance), and how far those are from the
 * unquantised products (printed: e4m3's rounding, twice) */
static void fp8_case_(const int32_t *counts, int E, int64_t N, int64_t K)
{
    int32_t *off = malloc((size_t)(E + 1) * sizeof *off);
    off[0] = 0;
    for (int e = 0; e < E; e++)
        off[e + 1] = off[e] + counts[e];
    const int64_t NK = off[E], nfb = (N + 127) / 128, nkb = (K + 127) / 128, nw = (int64_t)E * N * K;
    float *x = rnd(NK * K, 1), *w = rnd(nw, 0.1f);
    for (int64_t i = 0; i < nw; i += 977) /* a few large weights, so blocks have different scales */
        w[i] *= 8;
    for (int64_t i = 0; i < NK * K; i += 301) /* and large activations: rows' groups differ */
        x[i] *= 16;
    for (int64_t i = 0; i < NK * K; i++) /* the GPU quantises bf16 rows: compare on those values */
        x[i] = kd_bf16_to_f32(kd_f32_to_bf16(x[i]));
    if (NK > 0)
        for (int64_t c = 0; c < K && c < 128; c++) /* an all-zero group: scale 1 */
            x[c] = 0;
    kd_bf16 *dx = up16(x, NK * K), *dw = up16(w, nw), *dy = dev((size_t)(NK * N) * 2);
    uint8_t *d8 = dev((size_t)nw), *dx8 = dev((size_t)(NK * K) + 16);
    float *dsc = dev((size_t)(E * nfb * nkb) * 4), *dxs = dev((size_t)(NK * nkb) * 4 + 16);
    int32_t *doff = dev((size_t)(E + 1) * 4);
    CHECK_OK(kd_cu_upload(doff, off, (size_t)(E + 1) * 4, &cu));
    CHECK_OK(kd_cu_fp8_quantize(d8, dsc, dw, E, N, K, &cu));
    CHECK_OK(kd_cu_fp8_quantize_rows(dx8, dxs, dx, NK, K, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    uint8_t *h8 = malloc((size_t)nw), *hx8 = malloc((size_t)(NK * K) + 1);
    float *hs = malloc((size_t)(E * nfb * nkb) * 4), *wq = malloc((size_t)nw * 4);
    float *hxs = malloc((size_t)(NK * nkb) * 4 + 4), *xq = malloc((size_t)(NK * K) * 4 + 4);
    CHECK_OK(kd_cu_download(h8, d8, (size_t)nw, &cu));
    CHECK_OK(kd_cu_download(hs, dsc, (size_t)(E * nfb * nkb) * 4, &cu));
    CHECK_OK(kd_cu_download(hx8, dx8, (size_t)(NK * K), &cu));
    CHECK_OK(kd_cu_download(hxs, dxs, (size_t)(NK * nkb) * 4, &cu));
    int64_t bad_scale = 0, bad_byte = 0, bad_xscale = 0, bad_xbyte = 0;
    for (int64_t e = 0; e < E; e++)
        quant_check_(w + e * N * K, N, K, 128, hs + e * nfb * nkb, nkb, h8 + e * N * K, wq + e * N * K, &bad_scale,
                     &bad_byte);
    quant_check_(x, NK, K, 1, hxs, nkb, hx8, xq, &bad_xscale, &bad_xbyte);
    CHECK(bad_scale == 0 && bad_byte == 0);
    CHECK(bad_xscale == 0 && bad_xbyte == 0);
    float *want = malloc((size_t)(NK * N) * 4 + 4), *orig = malloc((size_t)(NK * N) * 4 + 4);
    for (int e = 0; e < E; e++)
        for (int64_t r = off[e]; r < off[e + 1]; r++)
            for (int64_t n = 0; n < N; n++) {
                double a = 0, b = 0;
                for (int64_t k = 0; k < K; k++) {
                    const int64_t wi = ((int64_t)e * N + n) * K + k;
                    a += (double)xq[r * K + k] * (double)wq[wi];
                    b += (double)x[r * K + k] * w[wi];
                }
                want[r * N + n] = (float)a;
                orig[r * N + n] = (float)b;
            }
    for (int path = 2; path <= 3; path++) { /* shared memory; registers (decode shapes) */
        if (path == 3 && (K % 128 || N % 16)) {
            CHECK_ERR(kd_cu_moe_gemm_fp8_path(dy, dx8, dxs, d8, dsc, doff, E, NK, N, K, path, &cu), KD_E_CUDA,
                      "not a multiple of 128");
            continue;
        }
        CHECK_OK(kd_cu_memset0(dy, (size_t)(NK * N) * 2, &cu));
        CHECK_OK(kd_cu_moe_gemm_fp8_path(dy, dx8, dxs, d8, dsc, doff, E, NK, N, K, path, &cu));
        float *got = down16(dy, NK * N);
        const double err = rel_err(got, want, NK * N), qerr = rel_err(got, orig, NK * N);
        printf("  fp8 grouped gemm path %d E %d rows %lld N %lld K %lld: rel err %.1e against the dequantised rows "
               "and weights, %.1e against the bf16 ones; quantisers: %lld + %lld scales, %lld + %lld bytes differ\n",
               path, E, (long long)NK, (long long)N, (long long)K, err, qerr, (long long)bad_scale,
               (long long)bad_xscale, (long long)bad_byte, (long long)bad_xbyte);
        CHECK(err <= 1e-2);
        CHECK(qerr <= 8e-2);
        free(got);
    }
    free(off), free(x), free(w), free(h8), free(hs), free(wq), free(want), free(orig);
    free(hx8), free(hxs), free(xq);
    kd_cu_free_ptr(dx), kd_cu_free_ptr(dw), kd_cu_free_ptr(dy), kd_cu_free_ptr(d8), kd_cu_free_ptr(dsc);
    kd_cu_free_ptr(doff), kd_cu_free_ptr(dx8), kd_cu_free_ptr(dxs);
}

TEST(fp8_experts)
{
    static const int32_t c1[] = {3, 0, 40, 1, 0, 17, 6, 70};
    fp8_case_(c1, 8, 200, 336); /* N, K not multiples of 128: partial scale blocks */
    static const int32_t c2[] = {5, 9};
    fp8_case_(c2, 2, 256, 256);
    /* prefill-like: experts with many passes of 32 rows (grid.z splits them) */
    static const int32_t c3[] = {300, 0, 129, 40};
    fp8_case_(c3, 4, 136, 512);
    /* the register kernel's shapes: 1, 3 (a partial ring) and 6 groups; 70 rows in 3 passes */
    static const int32_t c4[] = {5, 0, 33, 7, 70, 1};
    fp8_case_(c4, 6, 144, 128);
    fp8_case_(c4, 6, 48, 384);
    fp8_case_(c4, 6, 160, 768);
}

/* the router's fp32 logits against double dot products of the same bf16 rows
 * and fp32 weights, at Moonlight's C and an odd one */
TEST(router_logits)
{
    static const int64_t Cs[] = {2048, 37};
    for (int ci = 0; ci < 2; ci++) {
        const int64_t N = 19, E = 64, C = Cs[ci];
        float *x = rnd(N * C, 1), *w = rnd(E * C, 0.05f), *got = malloc((size_t)(N * E) * 4);
        kd_bf16 *dx = up16(x, N * C);
        float *dw = up32(w, E * C), *dout = dev((size_t)(N * E) * 4);
        CHECK_OK(kd_cu_router_logits(dout, dx, dw, N, E, C, &cu));
        CHECK_OK(kd_cu_download(got, dout, (size_t)(N * E) * 4, &cu));
        double worst = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t e = 0; e < E; e++) {
                double a = 0, mag = 0;
                for (int64_t i = 0; i < C; i++)
                    a += (double)x[n * C + i] * w[e * C + i], mag += fabs((double)x[n * C + i] * w[e * C + i]);
                const double d = fabs(got[n * E + e] - a) / (mag + 1e-30);
                worst = d > worst ? d : worst;
            }
        printf("  router logits N %lld E %lld C %lld: worst error %.1e of the terms' magnitude\n", (long long)N,
               (long long)E, (long long)C, worst);
        CHECK(worst <= 8e-6); /* fp32 sums at most 69 deep (64 columns a lane, 5 shuffles): 69 * 2^-24 */
        free(x), free(w), free(got);
        kd_cu_free_ptr(dx), kd_cu_free_ptr(dw), kd_cu_free_ptr(dout);
    }
}

TEST(errors)
{
    kd_cu_route rc = {.E = 600, .k = 8, .G = 8, .topk_group = 4, .method = KD_CU_TOPK_NOAUX_TC, .sigmoid = 1};
    CHECK_ERR(kd_cu_moe_route(NULL, NULL, NULL, NULL, 4, &rc, &cu), KD_E_CUDA, "600 experts");
    rc.E = 256, rc.k = 17;
    CHECK_ERR(kd_cu_moe_route(NULL, NULL, NULL, NULL, 4, &rc, &cu), KD_E_CUDA, "top-17");
    rc.k = 8, rc.G = 7;
    CHECK_ERR(kd_cu_moe_route(NULL, NULL, NULL, NULL, 4, &rc, &cu), KD_E_CUDA, "7 groups");
    rc.G = 8, rc.topk_group = 9;
    CHECK_ERR(kd_cu_moe_route(NULL, NULL, NULL, NULL, 4, &rc, &cu), KD_E_CUDA, "top-9 groups");
    CHECK_ERR(kd_cu_moe_permute(NULL, NULL, NULL, NULL, NULL, 4, 8, 0, &cu), KD_E_CUDA, "0 experts");
    CHECK_ERR(kd_cu_moe_combine(NULL, NULL, NULL, NULL, NULL, NULL, 4, 0, 8, &cu), KD_E_CUDA, "top-0");
    CHECK_ERR(kd_cu_moe_gemm(NULL, NULL, NULL, NULL, 8, 16, 64, 12, &cu), KD_E_CUDA, "K 12");
    CHECK_ERR(kd_cu_moe_gemm_fp8(NULL, NULL, NULL, NULL, NULL, NULL, 8, 16, 64, 24, &cu), KD_E_CUDA, "K 24");
    CHECK_ERR(kd_cu_fp8_quantize_rows(NULL, NULL, NULL, 4, 0, &cu), KD_E_CUDA, "4 x 0");
}

int main(void)
{
    kd_rng_seed(&rng, 7);
    if (kd_cu_init(&cu, 0) != KD_OK) {
        fprintf(stderr, "no CUDA device: %s\n", kd_strerror(KD_E_CUDA));
        return 1;
    }
    RUN(route_permute_combine);
    RUN(router_logits);
    RUN(grouped_gemm);
    RUN(fp8_experts);
    RUN(errors);
    kd_cu_free(&cu);
    return test_summary();
}
