/* test_attention.c (gpu) - the CUDA attention (core/cuda/attention.cu)
 * against kd_attention_forward/backward on the same bf16-rounded inputs:
 * head dims 16, 24, 64 and 128, GQA ratios 1, 2 and 6, lengths that are not
 * multiples of the tile, packed rows with documents of uneven lengths (one of
 * a single token) and plain causal rows, each with the backward's dQ both ways
 * (atomics, and two passes); run twice, the backward must give the same dK and
 * dV bits, and with two passes the same dQ bits; the forward with value heads
 * narrower than q/k (MLA's decompressed prefill, 192 / 128) against
 * kd_attention_cached per document. Then timing lines (not assertions) at
 * Qwen2.5-1.5B's shape, both ways. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
#include "core/cuda/cuops.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/log.h"

static double abs_(const float *a, const float *b, int64_t n)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e))
            e = d;
    }
    return e;
}

static void case_(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D, int packed)
{
    const int64_t N = B * T, nq = N * H * D, nk = N * K * D;
    const float scale = 1.0f / sqrtf((float)D);
    float *q = rnd(nq, 1.5f), *k = rnd(nk, 1.5f), *v = rnd(nk, 1), *dout = rnd(nq, 1);
    int64_t *pos = malloc((size_t)N * sizeof *pos);
    int32_t *pos32 = malloc((size_t)N * sizeof *pos32);
    for (int64_t b = 0; b < B; b++) /* documents of 1, then 37, then 5, then the rest, each row shifted */
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t, u = t + b * 11;
            int start = u % 97 == 0 || u % 97 == 1 || u % 97 == 38 || u % 97 == 43;
            pos[i] = !packed ? t : (t == 0 || start) ? 0 : pos[i - 1] + 1;
            pos32[i] = (int32_t)pos[i];
        }
    /* the CPU reference on the same (rounded) values */
    float *out = malloc((size_t)nq * 4), *lse = malloc((size_t)(B * H * T) * 4);
    float *dq = calloc((size_t)nq, 4), *dk = calloc((size_t)nk, 4), *dv = calloc((size_t)nk, 4);
    kd_attention_forward(out, lse, q, k, v, packed ? pos : NULL, B, T, H, K, D, scale);
    float *out16 = malloc((size_t)nq * 4); /* the backward takes the forward's output as the GPU stores it */
    for (int64_t i = 0; i < nq; i++)
        out16[i] = kd_bf16_to_f32(kd_f32_to_bf16(out[i]));
    kd_attention_backward(dq, dk, dv, dout, q, k, v, out16, lse, packed ? pos : NULL, B, T, H, K, D, scale);

    for (int tp = 0; tp < 2; tp++) {
    cu.attn_two_pass = tp;
    kd_bf16 *gq = up16(q, nq), *gk = up16(k, nk), *gv = up16(v, nk), *gdo = up16(dout, nq);
    kd_bf16 *go = dev((size_t)nq * 2);
    float *gdq = dev((size_t)nq * 4), *gdk = dev((size_t)nk * 4), *gdv = dev((size_t)nk * 4);
    float *glse = dev((size_t)(B * H * T) * 4);
    int32_t *gpos = dev((size_t)N * 4);
    void *ws = dev(kd_cu_attention_ws_bytes(B, T, H, K, D));
    CHECK_OK(kd_cu_upload(gpos, pos32, (size_t)N * 4, &cu));
    CHECK_OK(kd_cu_attention_forward(go, glse, gq, gk, gv, packed ? gpos : NULL, B, T, H, K, D, scale, &cu));
    CHECK_OK(kd_cu_attention_backward(gdq, gdk, gdv, gdo, gq, gk, gv, go, glse, packed ? gpos : NULL, B, T, H, K, D,
                                      scale, ws, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *ro = down16(go, nq), *rdq = malloc((size_t)nq * 4), *rdk = malloc((size_t)nk * 4), *rdv = malloc((size_t)nk * 4);
    CHECK_OK(kd_cu_download(rdq, gdq, (size_t)nq * 4, &cu));
    CHECK_OK(kd_cu_download(rdk, gdk, (size_t)nk * 4, &cu));
    CHECK_OK(kd_cu_download(rdv, gdv, (size_t)nk * 4, &cu));
    float *rl = malloc((size_t)(B * H * T) * 4);
    CHECK_OK(kd_cu_download(rl, glse, (size_t)(B * H * T) * 4, &cu));
    double eo = rel_err(ro, out, nq), el = abs_(rl, lse, B * H * T), eq = rel_err(rdq, dq, nq), ek = rel_err(rdk, dk, nk),
           ev = rel_err(rdv, dv, nk);
    /* determinism: the backward again, the same dk and dv bits (and dq's with two passes) */
    float *h1 = malloc((size_t)nq * 4), *h2 = malloc((size_t)nq * 4);
    CHECK_OK(kd_cu_attention_backward(gdq, gdk, gdv, gdo, gq, gk, gv, go, glse, packed ? gpos : NULL, B, T, H, K, D,
                                      scale, ws, &cu));
    CHECK_OK(kd_cu_download(h1, gdk, (size_t)nk * 4, &cu));
    CHECK_OK(kd_cu_download(h2, gdv, (size_t)nk * 4, &cu));
    int same = memcmp(h1, rdk, (size_t)nk * 4) == 0 && memcmp(h2, rdv, (size_t)nk * 4) == 0;
    CHECK_OK(kd_cu_download(h1, gdq, (size_t)nq * 4, &cu));
    double eq2 = rel_err(h1, dq, nq); /* the rerun's dq against the reference too */
    if (tp)
        same = same && memcmp(h1, rdq, (size_t)nq * 4) == 0;
    printf("  B%lld T%-4lld H%-2lld K%lld D%-3lld %s %s: out %.1e lse %.1e dq %.1e (rerun %.1e) dk %.1e dv %.1e%s\n",
           (long long)B, (long long)T, (long long)H, (long long)K, (long long)D, packed ? "packed" : "causal",
           tp ? "2-pass" : "atomic", eo, el, eq, eq2, ek, ev, same ? "" : " NONDETERMINISTIC");
    CHECK(eq2 <= 2e-2);
    CHECK(eo <= 2e-2 && eq <= 2e-2 && ek <= 2e-2 && ev <= 2e-2);
    CHECK(el <= 2e-3);
    CHECK(same);
    free(ro), free(rdq), free(rdk), free(rdv), free(rl), free(h1), free(h2);
    kd_cu_free_ptr(gq), kd_cu_free_ptr(gk), kd_cu_free_ptr(gv), kd_cu_free_ptr(gdo), kd_cu_free_ptr(go);
    kd_cu_free_ptr(gdq), kd_cu_free_ptr(gdk), kd_cu_free_ptr(gdv), kd_cu_free_ptr(glse), kd_cu_free_ptr(gpos);
    kd_cu_free_ptr(ws);
    }
    cu.attn_two_pass = 0;
    free(q), free(k), free(v), free(dout), free(pos), free(pos32), free(out), free(lse), free(dq), free(dk), free(dv);
    free(out16);
}

/* MLA's decompressed prefill: q/k heads of 192 (or fewer), values of 128 (or fewer),
 * against kd_attention_cached run document by document from position 0 */
static void case_dv_(int64_t T, int64_t H, int64_t K, int64_t Dk, int64_t Dv, int packed)
{
    const int64_t nq = T * H * Dk, nk = T * K * Dk, nv = T * K * Dv, no = T * H * Dv;
    const float scale = 1.0f / sqrtf((float)Dk);
    float *q = rnd(nq, 1.5f), *k = rnd(nk, 1.5f), *v = rnd(nv, 1);
    int32_t *pos = malloc((size_t)T * sizeof *pos);
    for (int64_t t = 0; t < T; t++)
        pos[t] = !packed ? (int32_t)t : (t == 0 || t % 97 == 0 || t % 97 == 38) ? 0 : pos[t - 1] + 1;
    float *want = malloc((size_t)no * 4), *scr = malloc((size_t)T * 4);
    for (int64_t t0 = 0; t0 < T;) { /* one document: t0 .. t1 - 1 */
        int64_t t1 = t0 + 1;
        while (t1 < T && pos[t1] != 0)
            t1++;
        kd_attention_cached(want + t0 * H * Dv, q + t0 * H * Dk, k + t0 * K * Dk, v + t0 * K * Dv, K * Dk, K * Dv, 0,
                            t1 - t0, H, K, Dk, Dv, scale, scr);
        t0 = t1;
    }
    kd_bf16 *gq = up16(q, nq), *gk = up16(k, nk), *gv = up16(v, nv), *go = dev((size_t)no * 2);
    float *glse = dev((size_t)(H * T) * 4);
    int32_t *gpos = dev((size_t)T * 4);
    CHECK_OK(kd_cu_upload(gpos, pos, (size_t)T * 4, &cu));
    CHECK_OK(kd_cu_attention_forward_dv(go, glse, gq, gk, gv, packed ? gpos : NULL, 1, T, H, K, Dk, Dv, scale, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *got = down16(go, no);
    double e = rel_err(got, want, no);
    printf("  T%-4lld H%-2lld K%-2lld Dk %3lld Dv %3lld %s (MLA prefill): out %.1e\n", (long long)T, (long long)H,
           (long long)K, (long long)Dk, (long long)Dv, packed ? "packed" : "causal", e);
    CHECK(e <= 2e-2);
    free(q), free(k), free(v), free(pos), free(want), free(scr), free(got);
    kd_cu_free_ptr(gq), kd_cu_free_ptr(gk), kd_cu_free_ptr(gv), kd_cu_free_ptr(go), kd_cu_free_ptr(glse);
    kd_cu_free_ptr(gpos);
}

TEST(against_cpu)
{
    static const int64_t dims[] = {16, 24, 64, 128};
    for (int i = 0; i < 4; i++) {
        case_(2, 77, 4, 4, dims[i], 0);
        case_(2, 300, 6, 3, dims[i], 1);
        case_(1, 200, 12, 2, dims[i], 1);
    }
    case_(2, 300, 12, 2, 128, 0);
    /* long enough for many key tiles per query block and query steps per key block */
    case_(1, 1000, 4, 2, 128, 0);
    case_(1, 1000, 4, 2, 128, 1);
    /* MLA: DeepSeek's 192 / 128, the tiny fixtures' 48 / 32 */
    case_dv_(300, 4, 4, 192, 128, 0);
    case_dv_(1000, 4, 4, 192, 128, 1);
    case_dv_(200, 4, 4, 48, 32, 1);
}

TEST(errors)
{
    CHECK_ERR(kd_cu_attention_forward(NULL, NULL, NULL, NULL, NULL, NULL, 1, 8, 4, 3, 64, 1.0f, &cu), KD_E_CUDA,
              "multiple of K");
    CHECK_ERR(kd_cu_attention_forward(NULL, NULL, NULL, NULL, NULL, NULL, 1, 8, 4, 4, 12, 1.0f, &cu), KD_E_CUDA,
              "multiple of 8");
    CHECK_ERR(kd_cu_attention_forward(NULL, NULL, NULL, NULL, NULL, NULL, 1, 8, 4, 4, 64, -1.0f, &cu), KD_E_CUDA,
              "need > 0");
    CHECK_ERR(kd_cu_attention_forward_dv(NULL, NULL, NULL, NULL, NULL, NULL, 1, 8, 4, 4, 256, 128, 1.0f, &cu),
              KD_E_CUDA, "at most 192");
    CHECK_ERR(kd_cu_attention_forward_dv(NULL, NULL, NULL, NULL, NULL, NULL, 1, 8, 4, 4, 192, 136, 1.0f, &cu),
              KD_E_CUDA, "v head dim 136");
}

/* FLOPs of causal attention: 2 matmuls of T^2/2 x D per head forward, 5 in the backward */
TEST(timing)
{
    const int64_t B = 1, T = 8192, H = 12, K = 2, D = 128, N = B * T;
    kd_bf16 *q = dev((size_t)N * H * D * 2), *k = dev((size_t)N * K * D * 2), *v = dev((size_t)N * K * D * 2);
    kd_bf16 *o = dev((size_t)N * H * D * 2);
    float *dq = dev((size_t)N * H * D * 4), *dk = dev((size_t)N * K * D * 4), *dv = dev((size_t)N * K * D * 4);
    float *lse = dev((size_t)N * H * 4);
    void *ws = dev(kd_cu_attention_ws_bytes(B, T, H, K, D));
    float *x = rnd(N * H * D, 1);
    kd_bf16 *src = up16(x, N * H * D);
    free(x);
    const float scale = 1.0f / sqrtf((float)D);
    const double flops = 2.0 * 2.0 * (double)B * H * D * (double)T * T / 2.0;
    for (int pass = 0; pass < 4; pass++) { /* a warm-up of each way, then each timed */
        cu.attn_two_pass = pass & 1;
        double t0 = kd_now();
        for (int r = 0; r < 5; r++)
            CHECK_OK(kd_cu_attention_forward(o, lse, src, src, src, NULL, B, T, H, K, D, scale, &cu));
        CHECK_OK(kd_cu_sync(&cu));
        double tf = (kd_now() - t0) / 5;
        t0 = kd_now();
        for (int r = 0; r < 5; r++)
            CHECK_OK(kd_cu_attention_backward(dq, dk, dv, src, src, src, src, o, lse, NULL, B, T, H, K, D, scale, ws, &cu));
        CHECK_OK(kd_cu_sync(&cu));
        double tb = (kd_now() - t0) / 5;
        if (pass >= 2)
            printf("  T=%lld H=%lld K=%lld D=%lld causal: forward %.2f ms (%.0f TFLOP/s), backward (%s) %.2f ms "
                   "(%.0f TFLOP/s at 2.5x the forward's FLOPs)\n",
                   (long long)T, (long long)H, (long long)K, (long long)D, tf * 1e3, flops / tf / 1e12,
                   (pass & 1) ? "two passes" : "dQ by atomics", tb * 1e3, 2.5 * flops / tb / 1e12);
    }
    cu.attn_two_pass = 0;
    kd_cu_free_ptr(q), kd_cu_free_ptr(k), kd_cu_free_ptr(v), kd_cu_free_ptr(o), kd_cu_free_ptr(dq);
    kd_cu_free_ptr(dk), kd_cu_free_ptr(dv), kd_cu_free_ptr(lse), kd_cu_free_ptr(ws), kd_cu_free_ptr(src);
}

int main(void)
{
    kd_rng_seed(&rng, 42);
    if (kd_cu_init(&cu, 0) != KD_OK) {
        fprintf(stderr, "no CUDA device: %s\n", kd_strerror(KD_E_CUDA));
        return 1;
    }
    RUN(against_cpu);
    RUN(errors);
    RUN(timing);
    kd_cu_free(&cu);
    return test_summary();
}
