/* test_ops.c (gpu) - each CUDA op of core/cuda/cuops.h against its CPU
 * reference in core/ops.h, on fresh random inputs. The inputs are rounded to
 * bf16 once and the CPU runs in fp32 on exactly those values, so what is
 * measured is the CUDA op's own error: bf16 outputs and fp32 accumulation.
 * One line per op with the measured error; runs on the GPU machine only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
#include "core/cuda/cuops.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "core/rng.h"

#define EXPECT(name, got, want, n, tol)                                           \
    do {                                                                          \
        double e_ = rel_err(got, want, n);                                        \
        printf("  %-28s rel err %.2e (tol %.0e)\n", name, e_, (double)(tol));     \
        CHECK(e_ <= (tol));                                                       \
    } while (0)

/* bf16 outputs: a few ulps of 2^-8 relative to the tensor's scale */
#define TOL16 1.5e-2

TEST(linear)
{
    const int64_t N = 300, nI = 192, nO = 136;
    float *x = rnd(N * nI, 1), *w = rnd(nO * nI, 0.1f), *b = rnd(nO, 0.5f), *dy = rnd(N * nO, 1);
    float *y = calloc(N * nO, 4), *dx = calloc(N * nI, 4), *dw = calloc(nO * nI, 4), *db = calloc(nO, 4);
    kd_matmul_forward(y, x, w, b, N, nI, nO);
    kd_matmul_backward(dx, dw, db, dy, x, w, N, nI, nO);
    kd_bf16 *dx_ = up16(x, N * nI), *dw_ = up16(w, nO * nI), *db_ = up16(b, nO), *ddy = up16(dy, N * nO);
    kd_bf16 *dy_out = dev(N * nO * 2), *ddx = dev(N * nI * 2);
    float *gw = dev(nO * nI * 4), *gb = dev(nO * 4);
    CHECK_OK(kd_cu_linear_forward(dy_out, dx_, dw_, db_, N, nI, nO, &cu));
    CHECK_OK(kd_cu_linear_backward(ddx, gw, gb, ddy, dx_, dw_, N, nI, nO, 0, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *gy = down16(dy_out, N * nO), *gdx = down16(ddx, N * nI), *gdw = down32(gw, nO * nI), *gdb = down32(gb, nO);
    EXPECT("linear forward y", gy, y, N * nO, TOL16);
    EXPECT("linear backward dx", gdx, dx, N * nI, TOL16);
    EXPECT("linear backward dw (fp32)", gdw, dw, nO * nI, 1e-4);
    EXPECT("linear backward db (fp32)", gdb, db, nO, 1e-4);
    /* accumulation: a second backward doubles dw and db, and accumulate_dx adds */
    CHECK_OK(kd_cu_linear_backward(ddx, gw, gb, ddy, dx_, dw_, N, nI, nO, 1, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *gdx2 = down16(ddx, N * nI), *gdw2 = down32(gw, nO * nI);
    for (int64_t i = 0; i < N * nI; i++)
        dx[i] *= 2;
    for (int64_t i = 0; i < nO * nI; i++)
        dw[i] *= 2;
    EXPECT("linear dx accumulated", gdx2, dx, N * nI, TOL16);
    EXPECT("linear dw accumulated", gdw2, dw, nO * nI, 1e-4);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
    free(gy), free(gdx), free(gdw), free(gdb), free(gdx2), free(gdw2);
    kd_cu_free_ptr(dx_), kd_cu_free_ptr(dw_), kd_cu_free_ptr(db_), kd_cu_free_ptr(ddy), kd_cu_free_ptr(dy_out);
    kd_cu_free_ptr(ddx), kd_cu_free_ptr(gw), kd_cu_free_ptr(gb);
}

TEST(embedding)
{
    const int64_t V = 97, C = 64, N = 333;
    int64_t ids[333];
    for (int64_t i = 0; i < N; i++)
        ids[i] = (int64_t)kd_rng_below(&rng, 10) * 9 % V; /* repeated ids: the scatter adds up */
    float *wte = rnd(V * C, 1), *dout = rnd(N * C, 1), *out = calloc(N * C, 4), *dwte = calloc(V * C, 4);
    kd_embedding_forward(out, ids, wte, N, C);
    kd_embedding_backward(dwte, dout, ids, N, C);
    int32_t *did = up_i32(ids, N);
    kd_bf16 *dw = up16(wte, V * C), *dd = up16(dout, N * C), *dout_ = dev(N * C * 2);
    float *g = dev(V * C * 4);
    CHECK_OK(kd_cu_embedding_forward(dout_, did, dw, N, C, &cu));
    CHECK_OK(kd_cu_embedding_backward(g, dd, did, N, C, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *go = down16(dout_, N * C), *gg = down32(g, V * C);
    EXPECT("embedding forward (exact)", go, out, N * C, 0);
    EXPECT("embedding backward (fp32)", gg, dwte, V * C, 1e-6);
    free(wte), free(dout), free(out), free(dwte), free(go), free(gg);
    kd_cu_free_ptr(did), kd_cu_free_ptr(dw), kd_cu_free_ptr(dd), kd_cu_free_ptr(dout_), kd_cu_free_ptr(g);
}

TEST(rmsnorm)
{
    const int64_t N = 257, C = 1536;
    float *a = rnd(N * C, 1), *b = rnd(N * C, 1), *w = rnd(C, 1), *dout = rnd(N * C, 1), *dres = rnd(N * C, 1);
    float *res = malloc(N * C * 4), *out = malloc(N * C * 4), *rstd = malloc(N * 4);
    float *dx = calloc(N * C, 4), *dw = calloc(C, 4);
    kd_residual_forward(res, a, b, N * C);
    for (int64_t i = 0; i < N * C; i++) /* the GPU keeps the residual in bf16 */
        res[i] = kd_bf16_to_f32(kd_f32_to_bf16(res[i]));
    kd_rmsnorm_forward(out, rstd, res, w, N, C, 1e-6);
    memcpy(dx, dres, N * C * 4);
    kd_rmsnorm_backward(dx, dw, dout, res, w, rstd, N, C);
    kd_bf16 *da = up16(a, N * C), *db = up16(b, N * C), *dwt = up16(w, C), *dd = up16(dout, N * C);
    kd_bf16 *ddres = up16(dres, N * C), *dres_ = dev(N * C * 2), *dout_ = dev(N * C * 2), *ddx = dev(N * C * 2);
    float *drstd = dev(N * 4), *gw = dev(C * 4);
    CHECK_OK(kd_cu_rmsnorm_forward(dout_, drstd, dres_, da, db, dwt, N, C, 1e-6f, &cu));
    CHECK_OK(kd_cu_rmsnorm_backward(ddx, gw, ddres, dd, dres_, dwt, drstd, N, C, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *gres = down16(dres_, N * C), *gout = down16(dout_, N * C), *grstd = down32(drstd, N);
    float *gdx = down16(ddx, N * C), *gdw = down32(gw, C);
    EXPECT("residual add", gres, res, N * C, TOL16);
    EXPECT("rmsnorm forward", gout, out, N * C, TOL16);
    EXPECT("rmsnorm rstd (fp32)", grstd, rstd, N, 1e-5);
    EXPECT("rmsnorm backward dx (+dres)", gdx, dx, N * C, TOL16);
    EXPECT("rmsnorm backward dw (fp32)", gdw, dw, C, 1e-4);
    /* in place: res aliases a, and no b (res = a) */
    CHECK_OK(kd_cu_rmsnorm_forward(dout_, NULL, da, da, NULL, dwt, N, C, 1e-6f, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *gout2 = down16(dout_, N * C);
    kd_rmsnorm_forward(out, NULL, a, w, N, C, 1e-6);
    EXPECT("rmsnorm forward, no residual", gout2, out, N * C, TOL16);
    free(a), free(b), free(w), free(dout), free(dres), free(res), free(out), free(rstd), free(dx), free(dw);
    free(gres), free(gout), free(grstd), free(gdx), free(gdw), free(gout2);
    kd_cu_free_ptr(da), kd_cu_free_ptr(db), kd_cu_free_ptr(dwt), kd_cu_free_ptr(dd), kd_cu_free_ptr(ddres);
    kd_cu_free_ptr(dres_), kd_cu_free_ptr(dout_), kd_cu_free_ptr(ddx), kd_cu_free_ptr(drstd), kd_cu_free_ptr(gw);
}

TEST(qkv_rope)
{
    const int64_t B = 2, T = 70, H = 6, K = 2, D = 24, N = B * T, W = (H + 2 * K) * D;
    kd_rope rope = {.type = KD_ROPE_LLAMA3, .theta = 500000, .factor = 8, .original_max_position = 32,
                    .low_freq_factor = 1, .high_freq_factor = 4};
    float *cs = malloc(T * D / 2 * 4), *sn = malloc(T * D / 2 * 4);
    CHECK_OK(kd_rope_table(cs, sn, &rope, T, D, NULL));
    int64_t pos[2 * 70];
    for (int64_t b = 0, p = 0; b < B; b++) /* packed: documents of 1, 13, 30 and the rest */
        for (int64_t t = 0; t < T; t++, p++)
            pos[b * T + t] = (t == 0 || t == 1 || t == 14 || t == 44) ? 0 : pos[b * T + t - 1] + 1;
    float *qkv = rnd(N * W, 1), *g = rnd(N * W, 1);
    float *q = malloc(N * H * D * 4), *k = malloc(N * K * D * 4), *v = malloc(N * K * D * 4);
    for (int64_t n = 0; n < N; n++) {
        memcpy(q + n * H * D, qkv + n * W, H * D * 4);
        memcpy(k + n * K * D, qkv + n * W + H * D, K * D * 4);
        memcpy(v + n * K * D, qkv + n * W + (H + K) * D, K * D * 4);
    }
    kd_rope_forward(q, cs, sn, pos, B, T, H, D);
    kd_rope_forward(k, cs, sn, pos, B, T, K, D);
    /* backward reference: the transpose rotation of the q and k parts of g */
    float *gq = malloc(N * H * D * 4), *gk = malloc(N * K * D * 4), *gv = malloc(N * K * D * 4), *dqkv = malloc(N * W * 4);
    for (int64_t n = 0; n < N; n++) {
        memcpy(gq + n * H * D, g + n * W, H * D * 4);
        memcpy(gk + n * K * D, g + n * W + H * D, K * D * 4);
        memcpy(gv + n * K * D, g + n * W + (H + K) * D, K * D * 4);
    }
    float *dgq = up32(gq, N * H * D), *dgk = up32(gk, N * K * D), *dgv = up32(gv, N * K * D);
    kd_rope_backward(gq, cs, sn, pos, B, T, H, D);
    kd_rope_backward(gk, cs, sn, pos, B, T, K, D);
    for (int64_t n = 0; n < N; n++) {
        memcpy(dqkv + n * W, gq + n * H * D, H * D * 4);
        memcpy(dqkv + n * W + H * D, gk + n * K * D, K * D * 4);
        memcpy(dqkv + n * W + (H + K) * D, gv + n * K * D, K * D * 4);
    }
    kd_bf16 *dq_ = dev(N * H * D * 2), *dk_ = dev(N * K * D * 2), *dv_ = dev(N * K * D * 2), *dx = up16(qkv, N * W);
    kd_bf16 *dg = dev(N * W * 2);
    float *dcs = up32(cs, T * D / 2), *dsn = up32(sn, T * D / 2);
    int32_t *dpos = up_i32(pos, N);
    CHECK_OK(kd_cu_qkv_rope_forward(dq_, dk_, dv_, dx, dcs, dsn, dpos, B, T, H, K, D, &cu));
    float *dg32 = dev(N * W * 4);
    CHECK_OK(kd_cu_qkv_rope_backward(dg, dg32, dgq, dgk, dgv, dcs, dsn, dpos, B, T, H, K, D, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *oq = down16(dq_, N * H * D), *ok = down16(dk_, N * K * D), *ov = down16(dv_, N * K * D);
    float *og = down16(dg, N * W), *og32 = down32(dg32, N * W);
    /* the bias gradient from the fp32 copy */
    float *bsum = calloc(W, 4), *gb = dev(W * 4);
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < W; j++)
            bsum[j] += dqkv[n * W + j];
    CHECK_OK(kd_cu_colsum_f32(gb, dg32, N, W, &cu));
    float *gbs = down32(gb, W);
    EXPECT("rope backward dqkv (fp32 copy)", og32, dqkv, N * W, 1e-5);
    EXPECT("column sums of the fp32 copy", gbs, bsum, W, 1e-5);
    free(og32), free(bsum), free(gbs);
    kd_cu_free_ptr(dg32), kd_cu_free_ptr(gb);
    EXPECT("rope forward q (llama3, packed)", oq, q, N * H * D, TOL16);
    EXPECT("rope forward k", ok, k, N * K * D, TOL16);
    EXPECT("qkv split v (exact)", ov, v, N * K * D, 0);
    EXPECT("rope backward dqkv", og, dqkv, N * W, TOL16);
    free(cs), free(sn), free(qkv), free(g), free(q), free(k), free(v), free(gq), free(gk), free(gv), free(dqkv);
    free(oq), free(ok), free(ov), free(og);
    kd_cu_free_ptr(dgq), kd_cu_free_ptr(dgk), kd_cu_free_ptr(dgv), kd_cu_free_ptr(dq_), kd_cu_free_ptr(dk_);
    kd_cu_free_ptr(dv_), kd_cu_free_ptr(dx), kd_cu_free_ptr(dg), kd_cu_free_ptr(dcs), kd_cu_free_ptr(dsn);
    kd_cu_free_ptr(dpos);
}

/* F % 8 == 0 takes the 8-wide kernels, else the scalar ones */
static void swiglu_case_(int64_t N, int64_t F)
{
    float *gu = rnd(N * 2 * F, 4), *dout = rnd(N * F, 1);
    float *out = malloc(N * F * 4), *dgu = calloc(N * 2 * F, 4), *gate = malloc(N * F * 4), *upv = malloc(N * F * 4);
    float *dg = calloc(N * F, 4), *du = calloc(N * F, 4);
    for (int64_t n = 0; n < N; n++) {
        memcpy(gate + n * F, gu + n * 2 * F, F * 4);
        memcpy(upv + n * F, gu + n * 2 * F + F, F * 4);
    }
    kd_swiglu_forward(out, gate, upv, N * F);
    kd_swiglu_backward(dg, du, dout, gate, upv, N * F);
    for (int64_t n = 0; n < N; n++) {
        memcpy(dgu + n * 2 * F, dg + n * F, F * 4);
        memcpy(dgu + n * 2 * F + F, du + n * F, F * 4);
    }
    kd_bf16 *dgu_in = up16(gu, N * 2 * F), *ddo = up16(dout, N * F), *dout_ = dev(N * F * 2), *ddgu = dev(N * 2 * F * 2);
    CHECK_OK(kd_cu_swiglu_forward(dout_, dgu_in, N, F, &cu));
    CHECK_OK(kd_cu_swiglu_backward(ddgu, ddo, dgu_in, N, F, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float *go = down16(dout_, N * F), *gg = down16(ddgu, N * 2 * F);
    EXPECT("swiglu forward", go, out, N * F, TOL16);
    EXPECT("swiglu backward", gg, dgu, N * 2 * F, TOL16);
    free(gu), free(dout), free(out), free(dgu), free(gate), free(upv), free(dg), free(du), free(go), free(gg);
    kd_cu_free_ptr(dgu_in), kd_cu_free_ptr(ddo), kd_cu_free_ptr(dout_), kd_cu_free_ptr(ddgu);
}

TEST(swiglu)
{
    swiglu_case_(129, 344);
    swiglu_case_(33, 37);
}

TEST(linear_xent)
{
    const int64_t N = 203, C = 128, V = 5000, chunk = 64;
    float *x = rnd(N * C, 1), *w = rnd(V * C, 0.2f), *logits = malloc(N * V * 4), *dlog = malloc(N * V * 4);
    float *dx = calloc(N * C, 4), *dw = calloc(V * C, 4);
    int64_t tg[203], count = 0;
    for (int64_t i = 0; i < N; i++)
        tg[i] = i % 7 == 3 ? KD_IGNORE_INDEX : (int64_t)kd_rng_below(&rng, V);
    kd_matmul_forward(logits, x, w, NULL, N, C, V);
    double sum = kd_crossentropy_forward(logits, tg, N, V, &count);
    kd_crossentropy_backward(dlog, logits, tg, N, V, 1.0 / (double)count);
    kd_matmul_backward(dx, dw, NULL, dlog, x, w, N, C, V);
    kd_bf16 *dx_in = up16(x, N * C), *dw_in = up16(w, V * C), *ddx = dev(N * C * 2);
    float *gw = dev(V * C * 4), *loss = dev(4);
    int32_t *dt = up_i32(tg, N);
    void *ws = dev(kd_cu_xent_ws_bytes(chunk, V));
    CHECK_OK(kd_cu_linear_xent(loss, ddx, gw, dx_in, dw_in, dt, N, C, V, (float)(1.0 / (double)count), chunk, ws, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float gl, *gdx = down16(ddx, N * C), *gdw = down32(gw, V * C);
    CHECK_OK(kd_cu_download(&gl, loss, 4, &cu));
    printf("  %-28s %.6f vs CPU %.6f\n", "linear+xent loss sum", gl, sum);
    CHECK_NEAR(gl, sum, 1e-3 * fabs(sum));
    EXPECT("linear+xent dx", gdx, dx, N * C, TOL16);
    EXPECT("linear+xent dw (fp32)", gdw, dw, V * C, 1e-2); /* from bf16 dlogits */
    /* forward only, the loss adds to what is there */
    CHECK_OK(kd_cu_linear_xent(loss, NULL, NULL, dx_in, dw_in, dt, N, C, V, 1.0f, chunk, ws, &cu));
    CHECK_OK(kd_cu_download(&gl, loss, 4, &cu));
    CHECK_NEAR(gl, 2 * sum, 2e-3 * fabs(sum));
    free(x), free(w), free(logits), free(dlog), free(dx), free(dw), free(gdx), free(gdw);
    kd_cu_free_ptr(dx_in), kd_cu_free_ptr(dw_in), kd_cu_free_ptr(ddx), kd_cu_free_ptr(gw), kd_cu_free_ptr(loss);
    kd_cu_free_ptr(dt), kd_cu_free_ptr(ws);
}

TEST(adamw_clip)
{
    const int64_t n = 100003, cut = 60000;
    float *p = rnd(n, 1), *g = rnd(n, 3), *m = rnd(n, 0.1f), *v = rnd(n, 0.1f);
    for (int64_t i = 0; i < n; i++)
        v[i] = fabsf(v[i]);
    kd_bf16 *p16 = dev(n * 2);
    float *dp = up32(p, n), *dg = up32(g, n), *dm = up32(m, n), *dv = up32(v, n), *norm = dev(4);
    void *ws = dev(kd_cu_norm_ws_bytes(n));
    kd_cu_seg segs[2] = {{0, cut, 0.1f}, {cut, n - cut, 0.0f}};
    kd_cu_seg *dsegs = dev(sizeof segs);
    CHECK_OK(kd_cu_upload(dsegs, segs, sizeof segs, &cu));
    CHECK_OK(kd_cu_grad_norm2(norm, dg, n, ws, &cu));
    CHECK_OK(kd_cu_adamw(dp, p16, dg, dm, dv, dsegs, 2, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 7, norm, 1.0f, &cu));
    CHECK_OK(kd_cu_sync(&cu));
    float gn2;
    CHECK_OK(kd_cu_download(&gn2, norm, 4, &cu));
    double want = kd_norm2_det(g, n);
    printf("  %-28s %.6f vs CPU %.6f\n", "grad norm", sqrt(gn2), want);
    CHECK_NEAR(sqrt(gn2), want, 1e-5 * want);
    float scale = (float)(1.0 / (want + 1e-6));
    for (int64_t i = 0; i < n; i++)
        g[i] *= scale;
    kd_adamw h1 = {1e-3, 0.9, 0.95, 1e-8, 0.1}, h2 = {1e-3, 0.9, 0.95, 1e-8, 0.0};
    kd_adamw_update(p, g, m, v, cut, &h1, 7);
    kd_adamw_update(p + cut, g + cut, m + cut, v + cut, n - cut, &h2, 7);
    float *gp = down32(dp, n), *gm = down32(dm, n), *gv = down32(dv, n), *gp16 = down16(p16, n);
    EXPECT("adamw p (clipped, 2 segments)", gp, p, n, 1e-5);
    EXPECT("adamw m", gm, m, n, 1e-5);
    EXPECT("adamw v", gv, v, n, 1e-5);
    EXPECT("adamw bf16 copy", gp16, p, n, 8e-3);
    free(p), free(g), free(m), free(v), free(gp), free(gm), free(gv), free(gp16);
    kd_cu_free_ptr(p16), kd_cu_free_ptr(dp), kd_cu_free_ptr(dg), kd_cu_free_ptr(dm), kd_cu_free_ptr(dv);
    kd_cu_free_ptr(norm), kd_cu_free_ptr(ws), kd_cu_free_ptr(dsegs);
}

int main(void)
{
    kd_rng_seed(&rng, 20261123);
    if (kd_cu_init(&cu, 0) != KD_OK) {
        fprintf(stderr, "no CUDA device: %s\n", kd_strerror(KD_E_CUDA));
        return 1;
    }
    RUN(linear);
    RUN(embedding);
    RUN(rmsnorm);
    RUN(qkv_rope);
    RUN(swiglu);
    RUN(linear_xent);
    RUN(adamw_clip);
    kd_cu_free(&cu);
    return test_summary();
}
