/* test_ops.c - finite-difference gradient checks of every backward in
 * core/ops.h, plus a few known values.
 *
 * Method: for a forward f and a fixed random r, the scalar
 * S(x) = sum(f(x) * r) is computed with the fp32 forward, summed in double.
 * The analytic gradient (backward with dout = r) is compared with central
 * differences (S(x+h) - S(x-h)) / 2h, h = 1e-2, for every input element.
 * Tolerance: norm-wise relative error <= 1e-2 (fp32 forward, O(h^2)
 * truncation); in practice the errors are ~1e-4..1e-3. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "test.h"

#define FD_H 1e-2f
#define FD_TOL 1e-2

static unsigned long long rng_ = 12345;
static float frand_(void)
{
    rng_ = rng_ * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_ >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}
static float *rnd_(size_t n)
{
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = frand_();
    return p;
}
static float *zeros_(size_t n) { return calloc(n, sizeof(float)); }

/* the forward under test writes out (nout) from the current inputs */
typedef void (*fwd_fn)(void *ctx, float *out);

static double score_(fwd_fn f, void *ctx, float *out, const float *r, size_t nout)
{
    f(ctx, out);
    double s = 0.0;
    for (size_t i = 0; i < nout; i++)
        s += (double)out[i] * r[i];
    return s;
}

/* compare analytic grad g (n) of input x with central differences */
static void fd_check_(const char *what, fwd_fn f, void *ctx, float *x, const float *g, size_t n,
                      const float *r, size_t nout)
{
    float *out = malloc(nout * sizeof(float));
    double d2 = 0.0, r2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i];
        x[i] = x0 + FD_H;
        double sp = score_(f, ctx, out, r, nout);
        x[i] = x0 - FD_H;
        double sm = score_(f, ctx, out, r, nout);
        x[i] = x0;
        double num = (sp - sm) / (2.0 * FD_H);
        d2 += (num - g[i]) * (num - g[i]);
        r2 += num * num;
    }
    double e = sqrt(d2 / (r2 > 0 ? r2 : 1.0));
    printf("  %-22s fd rel err %.3g\n", what, e);
    if (!(e <= FD_TOL))
        FAIL_("%s: finite-difference rel error %.3g > %g", what, e, FD_TOL);
    free(out);
}

/* ---- matmul ---- */
typedef struct { float *x, *w, *b; int64_t N, I, O; } mm_ctx;
static void mm_f_(void *c_, float *out)
{
    mm_ctx *c = c_;
    kd_matmul_forward(out, c->x, c->w, c->b, c->N, c->I, c->O);
}
TEST(matmul)
{
    mm_ctx c = {rnd_(5 * 7), rnd_(3 * 7), rnd_(3), 5, 7, 3};
    float *r = rnd_(15), *dx = zeros_(35), *dw = zeros_(21), *db = zeros_(3);
    kd_matmul_backward(dx, dw, db, r, c.x, c.w, c.N, c.I, c.O);
    fd_check_("matmul dx", mm_f_, &c, c.x, dx, 35, r, 15);
    fd_check_("matmul dw", mm_f_, &c, c.w, dw, 21, r, 15);
    fd_check_("matmul db", mm_f_, &c, c.b, db, 3, r, 15);
    /* known value: [1 2] [[1 0] [0 1] [1 1]]^T + [0 0 1] = [1 2 4] */
    float x[2] = {1, 2}, w[6] = {1, 0, 0, 1, 1, 1}, b[3] = {0, 0, 1}, y[3];
    kd_matmul_forward(y, x, w, b, 1, 2, 3);
    CHECK_NEAR(y[0], 1, 0);
    CHECK_NEAR(y[1], 2, 0);
    CHECK_NEAR(y[2], 4, 0);
    free(c.x); free(c.w); free(c.b); free(r); free(dx); free(dw); free(db);
}

/* Row invariance of kd_matmul_rowwise: each row of a 64-row product,
 * computed again inside batches of every size from 1 (and at every offset),
 * is bitwise the same; inputs that are not a multiple of 8 and odd output
 * counts take the tails. (kd_matmul_forward, through OpenBLAS, fails this on
 * AMD Zen.) */
TEST(matmul_row_invariant)
{
    const int64_t shapes[][2] = {{64, 128},  {128, 64},   {64, 16},   {256, 300},   {896, 896},  {896, 128}, {1536, 256},
                                 {512, 512}, {768, 384},  {1000, 1100}, {896, 1536}, {64, 20000},
                                 {13, 7},    {100, 33}};
    const int64_t Ms[] = {1, 2, 3, 5, 8, 15, 16, 17, 31, 32};
    const int64_t B = 64;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t I = shapes[s][0], O = shapes[s][1];
        float *x = rnd_(B * I), *w = rnd_(O * I), *b = rnd_(O);
        float *ref = malloc((size_t)(B * O) * sizeof(float)), *y = malloc((size_t)(B * O) * sizeof(float));
        kd_matmul_rowwise(ref, x, w, b, B, I, O);
        kd_matmul_forward(y, x, w, b, B, I, O); /* the same product through OpenBLAS */
        double err = 0;
        for (int64_t e = 0; e < B * O; e++)
            err = fmax(err, fabs((double)y[e] - ref[e]) / (1.0 + fabs((double)ref[e])));
        if (err > 1e-4) /* fp32 sums of up to 1536 terms in two orders */
            FAIL_("matmul %lld -> %lld: rowwise and OpenBLAS differ by %.3g", (long long)I, (long long)O, err);
        int64_t bad = 0;
        for (size_t m = 0; m < sizeof Ms / sizeof Ms[0]; m++)
            for (int64_t r0 = 0; r0 + Ms[m] <= B; r0 += Ms[m]) {
                kd_matmul_rowwise(y, x + r0 * I, w, b, Ms[m], I, O);
                bad += memcmp(y, ref + r0 * O, (size_t)(Ms[m] * O) * sizeof(float)) != 0;
            }
        if (bad)
            FAIL_("matmul %lld -> %lld: %lld batches differ from the 64-row product", (long long)I,
                  (long long)O, (long long)bad);
        free(x); free(w); free(b); free(ref); free(y);
    }
}

/* ---- embedding ---- */
typedef struct { const int64_t *ids; float *wte; } emb_ctx;
static void emb_f_(void *c_, float *out)
{
    emb_ctx *c = c_;
    kd_embedding_forward(out, c->ids, c->wte, 4, 3);
}
TEST(embedding)
{
    int64_t ids[4] = {2, 0, 2, 4}; /* a repeated id exercises the scatter-add */
    emb_ctx c = {ids, rnd_(5 * 3)};
    float *r = rnd_(12), *dw = zeros_(15);
    kd_embedding_backward(dw, r, ids, 4, 3);
    fd_check_("embedding dwte", emb_f_, &c, c.wte, dw, 15, r, 12);
    CHECK_NEAR(dw[2 * 3], r[0] + r[2 * 3], 1e-6);
    free(c.wte); free(r); free(dw);
}

/* ---- rmsnorm ---- */
typedef struct { float *x, *w, *rstd; } rms_ctx;
static void rms_f_(void *c_, float *out)
{
    rms_ctx *c = c_;
    kd_rmsnorm_forward(out, c->rstd, c->x, c->w, 3, 8, 1e-6);
}
TEST(rmsnorm)
{
    rms_ctx c = {rnd_(24), rnd_(8), zeros_(3)};
    float *r = rnd_(24), *dx = zeros_(24), *dw = zeros_(8), out[24];
    rms_f_(&c, out);
    kd_rmsnorm_backward(dx, dw, r, c.x, c.w, c.rstd, 3, 8);
    fd_check_("rmsnorm dx", rms_f_, &c, c.x, dx, 24, r, 24);
    fd_check_("rmsnorm dw", rms_f_, &c, c.w, dw, 8, r, 24);
    /* known value: x = [3 4] (mean square 12.5), w = 1 */
    float x[2] = {3, 4}, w[2] = {1, 1}, y[2], rs;
    kd_rmsnorm_forward(y, &rs, x, w, 1, 2, 0.0);
    CHECK_NEAR(y[0], 3 / sqrt(12.5), 1e-6);
    CHECK_NEAR(y[1], 4 / sqrt(12.5), 1e-6);
    free(c.x); free(c.w); free(c.rstd); free(r); free(dx); free(dw);
}

/* ---- rope ---- */
typedef struct { float *x, *cs, *sn; } rope_ctx;
static void rope_f_(void *c_, float *out)
{
    rope_ctx *c = c_;
    memcpy(out, c->x, 2 * 5 * 3 * 8 * sizeof(float));
    kd_rope_forward(out, c->cs, c->sn, NULL, 2, 5, 3, 8);
}
TEST(rope)
{
    const size_t n = 2 * 5 * 3 * 8;
    kd_rope ropes[2] = {{.type = KD_ROPE_DEFAULT, .theta = 10000.0, .factor = 1},
                        {.type = KD_ROPE_LLAMA3, .theta = 500000.0, .factor = 8,
                         .original_max_position = 4, .low_freq_factor = 1, .high_freq_factor = 4}};
    for (int k = 0; k < 2; k++) {
        rope_ctx c = {rnd_(n), zeros_(5 * 4), zeros_(5 * 4)};
        float sc = 0;
        CHECK_OK(kd_rope_table(c.cs, c.sn, &ropes[k], 5, 8, &sc));
        CHECK_NEAR(sc, 1, 0);
        CHECK_NEAR(c.cs[0], 1, 0); /* position 0: identity */
        CHECK_NEAR(c.sn[0], 0, 0);
        if (k == 0) /* default, t = 1, i = 0: inv_freq 1 (llama3 scales it by 1/8) */
            CHECK_NEAR(c.cs[4 + 0], cos(1.0), 1e-6);
        float *r = rnd_(n), *dx = malloc(n * sizeof(float));
        memcpy(dx, r, n * sizeof(float));
        kd_rope_backward(dx, c.cs, c.sn, NULL, 2, 5, 3, 8);
        fd_check_(k ? "rope llama3 dx" : "rope default dx", rope_f_, &c, c.x, dx, n, r, n);
        free(c.x); free(c.cs); free(c.sn); free(r); free(dx);
    }
    kd_rope dyn = {.type = KD_ROPE_DYNAMIC, .theta = 1e4, .factor = 4};
    float cs[4], sn[4], sc;
    CHECK_ERR(kd_rope_table(cs, sn, &dyn, 1, 8, NULL), KD_E_UNSUPPORTED, "dynamic");
    /* yarn: the attention factor as transformers derives it (values checked
     * end to end against the DeepSeek-V3 fixture, which uses yarn) */
    kd_rope yarn = {.type = KD_ROPE_YARN, .theta = 1e4, .factor = 4, .beta_fast = 32, .beta_slow = 1};
    CHECK_ERR(kd_rope_table(cs, sn, &yarn, 1, 8, NULL), KD_E_CONFIG, "original_max_position");
    yarn.original_max_position = 128;
    CHECK_OK(kd_rope_table(cs, sn, &yarn, 1, 8, &sc));
    CHECK_NEAR(sc, 0.1 * log(4.0) + 1.0, 1e-6); /* no mscale: get_mscale(factor) */
    CHECK_NEAR(cs[0], sc, 1e-6);                 /* position 0: cos 1, times the factor */
    yarn.mscale = yarn.mscale_all_dim = 1;
    CHECK_OK(kd_rope_table(cs, sn, &yarn, 1, 8, &sc));
    CHECK_NEAR(sc, 1.0, 1e-7); /* DeepSeek-V3's mscale == mscale_all_dim: ratio 1 */
    yarn.attention_factor = 0.5;
    CHECK_OK(kd_rope_table(cs, sn, &yarn, 1, 8, &sc));
    CHECK_NEAR(sc, 0.5, 0);
}

/* ---- swiglu ---- */
typedef struct { float *g, *u; } sw_ctx;
static void sw_f_(void *c_, float *out)
{
    sw_ctx *c = c_;
    kd_swiglu_forward(out, c->g, c->u, 10);
}
TEST(swiglu)
{
    sw_ctx c = {rnd_(10), rnd_(10)};
    float *r = rnd_(10), *dg = zeros_(10), *du = zeros_(10);
    kd_swiglu_backward(dg, du, r, c.g, c.u, 10);
    fd_check_("swiglu dgate", sw_f_, &c, c.g, dg, 10, r, 10);
    fd_check_("swiglu dup", sw_f_, &c, c.u, du, 10, r, 10);
    float g = 1, u = 2, y;
    kd_swiglu_forward(&y, &g, &u, 1);
    CHECK_NEAR(y, 2.0 / (1.0 + exp(-1.0)), 1e-6);
    free(c.g); free(c.u); free(r); free(dg); free(du);
}

/* ---- attention: B 2, T 5, H 4, K 2, D 4 ---- */
enum { AB = 2, AT = 5, AH = 4, AK = 2, AD = 4 };
typedef struct { float *q, *k, *v, *lse; const int64_t *pos; } att_ctx;
static void att_f_(void *c_, float *out)
{
    att_ctx *c = c_;
    kd_attention_forward(out, c->lse, c->q, c->k, c->v, c->pos, AB, AT, AH, AK, AD, 0.5f);
}
TEST(attention)
{
    const size_t nq = AB * AT * AH * AD, nk = AB * AT * AK * AD;
    att_ctx c = {rnd_(nq), rnd_(nk), rnd_(nk), zeros_(AB * AH * AT), NULL};
    float *out = zeros_(nq), *r = rnd_(nq), *dq = zeros_(nq), *dk = zeros_(nk), *dv = zeros_(nk);
    att_f_(&c, out);
    kd_attention_backward(dq, dk, dv, r, c.q, c.k, c.v, out, c.lse, NULL, AB, AT, AH, AK, AD, 0.5f);
    fd_check_("attention dq", att_f_, &c, c.q, dq, nq, r, nq);
    fd_check_("attention dk", att_f_, &c, c.k, dk, nk, r, nq);
    fd_check_("attention dv", att_f_, &c, c.v, dv, nk, r, nq);
    /* known value: position 0 attends only to itself, so out = v[0] of its kv head */
    att_f_(&c, out);
    for (int h = 0; h < AH; h++)
        for (int i = 0; i < AD; i++)
            CHECK_NEAR(out[h * AD + i], c.v[(h / 2) * AD + i], 1e-6);
    free(c.q); free(c.k); free(c.v); free(c.lse); free(out); free(r); free(dq); free(dk); free(dv);
}

/* Packed rows: row 0 holds documents of 2 and 3 tokens, row 1 one of 5. The
 * result must equal attention over each document alone (a plain causal
 * attention on its own tokens, positions 0..), and the gradients must pass
 * the finite-difference check. */
TEST(attention_packed)
{
    const size_t nq = AB * AT * AH * AD, nk = AB * AT * AK * AD;
    static const int64_t pos[AB * AT] = {0, 1, 0, 1, 2, 0, 1, 2, 3, 4};
    att_ctx c = {rnd_(nq), rnd_(nk), rnd_(nk), zeros_(AB * AH * AT), pos};
    float *out = zeros_(nq), *r = rnd_(nq), *dq = zeros_(nq), *dk = zeros_(nk), *dv = zeros_(nk);
    att_f_(&c, out);
    /* document [start, start+len) of row b, run alone as a batch of one */
    static const int64_t docs[3][3] = {{0, 0, 2}, {0, 2, 3}, {1, 0, 5}};
    for (int d = 0; d < 3; d++) {
        int64_t b = docs[d][0], s0 = docs[d][1], len = docs[d][2];
        float *o1 = zeros_(len * AH * AD), *l1 = zeros_(AH * len);
        const float *q1 = c.q + (b * AT + s0) * AH * AD, *k1 = c.k + (b * AT + s0) * AK * AD;
        const float *v1 = c.v + (b * AT + s0) * AK * AD;
        kd_attention_forward(o1, l1, q1, k1, v1, NULL, 1, len, AH, AK, AD, 0.5f);
        for (int64_t i = 0; i < len * AH * AD; i++)
            CHECK_NEAR(out[(b * AT + s0) * AH * AD + i], o1[i], 0);
        free(o1); free(l1);
    }
    kd_attention_backward(dq, dk, dv, r, c.q, c.k, c.v, out, c.lse, pos, AB, AT, AH, AK, AD, 0.5f);
    fd_check_("packed attention dq", att_f_, &c, c.q, dq, nq, r, nq);
    fd_check_("packed attention dk", att_f_, &c, c.k, dk, nk, r, nq);
    fd_check_("packed attention dv", att_f_, &c, c.v, dv, nk, r, nq);
    free(c.q); free(c.k); free(c.v); free(c.lse); free(out); free(r); free(dq); free(dk); free(dv);
}

/* rope with positions: row t of a packed row takes its document's position */
TEST(rope_positions)
{
    kd_rope rp = {.type = KD_ROPE_DEFAULT, .theta = 10000.0, .factor = 1};
    float *cs = zeros_(5 * 4), *sn = zeros_(5 * 4);
    CHECK_OK(kd_rope_table(cs, sn, &rp, 5, 8, NULL));
    static const int64_t pos[5] = {0, 1, 0, 1, 2};
    float *x = rnd_(5 * 2 * 8), *y = malloc(5 * 2 * 8 * sizeof(float)), *z = malloc(3 * 2 * 8 * sizeof(float));
    memcpy(y, x, 5 * 2 * 8 * sizeof(float));
    memcpy(z, x + 2 * 2 * 8, 3 * 2 * 8 * sizeof(float));
    kd_rope_forward(y, cs, sn, pos, 1, 5, 2, 8);
    kd_rope_forward(z, cs, sn, NULL, 1, 3, 2, 8); /* the second document alone */
    for (int i = 0; i < 3 * 2 * 8; i++)
        CHECK_NEAR(y[2 * 2 * 8 + i], z[i], 0);
    for (int i = 0; i < 2 * 8; i++) /* position 0 is the identity */
        CHECK_NEAR(y[2 * 2 * 8 + i], x[2 * 2 * 8 + i], 0);
    free(cs); free(sn); free(x); free(y); free(z);
}

/* ---- residual ---- */
TEST(residual)
{
    float a[3] = {1, 2, 3}, b[3] = {4, 5, 6}, o[3], da[3] = {0}, db[3] = {1, 1, 1}, g[3] = {1, 2, 3};
    kd_residual_forward(o, a, b, 3);
    CHECK_NEAR(o[2], 9, 0);
    kd_residual_backward(da, db, g, 3);
    CHECK_NEAR(da[1], 2, 0);
    CHECK_NEAR(db[1], 3, 0); /* accumulates */
}

/* ---- cross-entropy: loss as a function of logits; dloss = 1 ---- */
typedef struct { float *x; const int64_t *t; } ce_ctx;
static void ce_f_(void *c_, float *out)
{
    ce_ctx *c = c_;
    out[0] = (float)(kd_crossentropy_forward(c->x, c->t, 4, 6, NULL) / 3.0); /* the mean */
}
TEST(crossentropy)
{
    int64_t t[4] = {1, KD_IGNORE_INDEX, 5, 0};
    ce_ctx c = {rnd_(24), t};
    float r = 1.0f, *d = zeros_(24);
    int64_t cnt = 0;
    kd_crossentropy_forward(c.x, t, 4, 6, &cnt);
    CHECK_EQ_INT(cnt, 3);
    kd_crossentropy_backward(d, c.x, t, 4, 6, 1.0 / 3.0);
    fd_check_("crossentropy dlogits", ce_f_, &c, c.x, d, 24, &r, 1);
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(d[6 + i], 0, 0); /* the ignored row */
    float u[6] = {0};
    int64_t t1 = 3;
    CHECK_NEAR(kd_crossentropy_forward(u, &t1, 1, 6, NULL), log(6.0), 1e-12);
    free(c.x); free(d);
}

/* ---- AdamW: one step by hand ---- */
TEST(adamw)
{
    float p = 1.0f, g = 0.5f, m = 0, v = 0;
    kd_adamw hp = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    kd_adamw_update(&p, &g, &m, &v, 1, &hp, 1);
    /* step 1: m_hat = g, v_hat = g^2, so p = 1*(1 - 1e-4) - 1e-3 * 0.5 / (0.5 + 1e-8) */
    CHECK_NEAR(p, (1.0 - 1e-4) - 1e-3 * 0.5 / (0.5 + 1e-8), 1e-7);
    CHECK_NEAR(m, 0.05, 1e-7); /* fp32 arithmetic */
    CHECK_NEAR(v, 0.0125, 1e-8);
}

int main(void)
{
    RUN(matmul);
    RUN(matmul_row_invariant);
    RUN(embedding);
    RUN(rmsnorm);
    RUN(rope);
    RUN(swiglu);
    RUN(attention);
    RUN(attention_packed);
    RUN(rope_positions);
    RUN(residual);
    RUN(crossentropy);
    RUN(adamw);
    return test_summary();
}
