/* ops.c - the CPU reference backend of core/ops.h: fp32, OpenBLAS for the
 * matmuls, OpenMP over rows where it pays. Each forward is followed by its
 * backward. Legend as in ops.h: N rows, I/O linear in/out, C channels, V vocab,
 * B batch, T tokens, H query heads, K kv heads, D head dim.
 */
#include "core/ops.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

#ifdef _OPENMP
#include <omp.h>
static inline int kd_omp_in_parallel_(void) { return omp_in_parallel(); }
#else
static inline int kd_omp_in_parallel_(void) { return 0; }
#endif

/* Elementwise loops of fewer elements run on one thread. A parallel region
 * costs a few microseconds; 16K elements take ~10 us, and the small models
 * (the demo's: rows of 96-128 channels) mostly run loops of this size, which
 * left the other threads waiting. Every split is by rows or channels, so the
 * results do not depend on it. */
#define KD_PAR_MIN 16384

/* ---- linear ---------------------------------------------------------------- */

/* The plain loop, in blocks of 4 rows x 2 outputs held in 8-float vectors
 * (GCC vector extensions: AVX2 where the CPU has it, SSE otherwise, chosen
 * at load time). Every element is summed the same way whatever the block,
 * the batch or the instruction set: lane k of its accumulator takes inputs
 * k, k + 8, ... (one multiply and one add each, never fused), the tail
 * past the last multiple of 8 goes to lane 0 in order, and the lanes are
 * added pairwise: ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). The
 * file is built with -ffp-contract=off (CMakeLists.txt). */
typedef float kd_v8 __attribute__((vector_size(32)));

/* 8 floats from p, unaligned (a macro: a function returning a vector would
 * cross the SSE/AVX clones' ABI boundary) */
#define ld8_(p)                                                                                                       \
    __extension__({                                                                                                    \
        kd_v8 v8_;                                                                                                     \
        memcpy(&v8_, (p), sizeof v8_);                                                                                 \
        v8_;                                                                                                           \
    })

/* y[r][o] for the rows r < nr (<= 4) of x and the outputs o < no (<= 2) of w;
 * the accumulators are named so that they stay in registers */
__attribute__((target_clones("avx2", "default"))) static void
matmul_block_(float *y, const float *x, const float *w, const float *b, int64_t nI, int64_t ldy, int nr, int no)
{
    const float *x0 = x, *x1 = x + (nr > 1) * nI, *x2 = x + (nr > 2) * 2 * nI, *x3 = x + (nr > 3) * 3 * nI;
    const float *w0 = w, *w1 = w + (no > 1) * nI; /* rows past nr, no repeat row 0 and are not stored */
    kd_v8 a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
    int64_t i = 0;
    for (; i + 8 <= nI; i += 8) {
        kd_v8 u = ld8_(w0 + i), v = ld8_(w1 + i), t;
        t = ld8_(x0 + i), a00 += t * u, a01 += t * v;
        t = ld8_(x1 + i), a10 += t * u, a11 += t * v;
        t = ld8_(x2 + i), a20 += t * u, a21 += t * v;
        t = ld8_(x3 + i), a30 += t * u, a31 += t * v;
    }
    for (; i < nI; i++) {
        a00[0] += x0[i] * w0[i], a01[0] += x0[i] * w1[i];
        a10[0] += x1[i] * w0[i], a11[0] += x1[i] * w1[i];
        a20[0] += x2[i] * w0[i], a21[0] += x2[i] * w1[i];
        a30[0] += x3[i] * w0[i], a31[0] += x3[i] * w1[i];
    }
    /* the 8 folds at once, each as above: pairs of lanes, then pairs of
     * those, then the two halves; sums[r*2 + o] */
#define EV_ 0, 2, 4, 6, 8, 10, 12, 14
#define OD_ 1, 3, 5, 7, 9, 11, 13, 15
    kd_v8 p0 = __builtin_shufflevector(a00, a01, EV_) + __builtin_shufflevector(a00, a01, OD_);
    kd_v8 p1 = __builtin_shufflevector(a10, a11, EV_) + __builtin_shufflevector(a10, a11, OD_);
    kd_v8 p2 = __builtin_shufflevector(a20, a21, EV_) + __builtin_shufflevector(a20, a21, OD_);
    kd_v8 p3 = __builtin_shufflevector(a30, a31, EV_) + __builtin_shufflevector(a30, a31, OD_);
    kd_v8 q0 = __builtin_shufflevector(p0, p1, EV_) + __builtin_shufflevector(p0, p1, OD_);
    kd_v8 q1 = __builtin_shufflevector(p2, p3, EV_) + __builtin_shufflevector(p2, p3, OD_);
    kd_v8 sums = __builtin_shufflevector(q0, q1, EV_) + __builtin_shufflevector(q0, q1, OD_);
#undef EV_
#undef OD_
    for (int r = 0; r < nr; r++)
        for (int o = 0; o < no; o++)
            y[r * ldy + o] = b ? b[o] + sums[r * 2 + o] : sums[r * 2 + o];
}

void kd_matmul_rowwise(float *y, const float *x, const float *w, const float *b, int64_t N, int64_t nI, int64_t nO)
{
    assert(y && x && w && N >= 0 && nI > 0 && nO > 0);
    const int64_t nb = (N + 3) / 4, ob = (nO + 1) / 2;
    if (N * nO * nI <= 262144 || kd_omp_in_parallel_()) { /* no region: see rope_apply_ */
        for (int64_t n = 0; n < nb; n++)
            for (int64_t o = 0; o < ob; o++) {
                const int nr = (int)(N - 4 * n < 4 ? N - 4 * n : 4), no = (int)(nO - 2 * o < 2 ? nO - 2 * o : 2);
                matmul_block_(y + 4 * n * nO + 2 * o, x + 4 * n * nI, w + 2 * o * nI, b ? b + 2 * o : NULL, nI,
                              nO, nr, no);
            }
        return;
    }
#pragma omp parallel for collapse(2)
    for (int64_t n = 0; n < nb; n++)
        for (int64_t o = 0; o < ob; o++) {
            const int nr = (int)(N - 4 * n < 4 ? N - 4 * n : 4), no = (int)(nO - 2 * o < 2 ? nO - 2 * o : 2);
            matmul_block_(y + 4 * n * nO + 2 * o, x + 4 * n * nI, w + 2 * o * nI, b ? b + 2 * o : NULL, nI, nO,
                          nr, no);
        }
}

void kd_matmul_forward(float *y, const float *x, const float *w, const float *b,
                       int64_t N, int64_t nI, int64_t nO)
{
    assert(y && x && w && N >= 0 && nI > 0 && nO > 0);
    if (N == 0)
        return;
    float beta = 0.0f;
    if (b) {
#pragma omp parallel for if (N * nO > 65536)
        for (int64_t n = 0; n < N; n++)
            memcpy(y + n * nO, b, (size_t)nO * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)nO, (int)nI, 1.0f, x, (int)nI, w, (int)nI,
                beta, y, (int)nO);
}

void kd_matmul_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int64_t N, int64_t nI, int64_t nO)
{
    assert(dy && N >= 0 && nI > 0 && nO > 0);
    if (N == 0)
        return;
    if (dx) /* dx (N, nI) += dy (N, nO) W (nO, nI) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)nI, (int)nO, 1.0f, dy,
                    (int)nO, w, (int)nI, 1.0f, dx, (int)nI);
    if (dw) /* dw (nO, nI) += dy^T (nO, N) x (N, nI) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nO, (int)nI, (int)N, 1.0f, dy,
                    (int)nO, x, (int)nI, 1.0f, dw, (int)nI);
    if (db) {
#pragma omp parallel for if (N * nO > 65536)
        for (int64_t o = 0; o < nO; o++) {
            double s = 0.0;
            for (int64_t n = 0; n < N; n++)
                s += dy[n * nO + o];
            db[o] += (float)s;
        }
    }
}

/* ---- embedding --------------------------------------------------------------- */

void kd_embedding_forward(float *out, const int64_t *ids, const float *wte, int64_t N, int64_t C)
{
    for (int64_t n = 0; n < N; n++) {
        assert(ids[n] >= 0);
        memcpy(out + n * C, wte + ids[n] * C, (size_t)C * sizeof(float));
    }
}

void kd_embedding_backward(float *dwte, const float *dout, const int64_t *ids, int64_t N, int64_t C)
{
    /* rows may repeat, so parallelise over channels, not rows */
#pragma omp parallel for if (N * C > KD_PAR_MIN)
    for (int64_t c = 0; c < C; c++)
        for (int64_t n = 0; n < N; n++)
            dwte[ids[n] * C + c] += dout[n * C + c];
}

/* ---- RMSNorm ----------------------------------------------------------------- */

void kd_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w,
                        int64_t N, int64_t C, double eps)
{
#pragma omp parallel for if (N * C > KD_PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * C;
        double ss = 0.0;
        for (int64_t c = 0; c < C; c++)
            ss += (double)xr[c] * xr[c];
        /* HF: x * torch.rsqrt(variance + eps), then weight * x, all fp32 */
        float r = (float)(1.0 / sqrt(ss / (double)C + eps));
        if (rstd)
            rstd[n] = r;
        for (int64_t c = 0; c < C; c++)
            out[n * C + c] = w[c] * (xr[c] * r);
    }
}

void kd_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int64_t N, int64_t C)
{
    if (dx) {
#pragma omp parallel for if (N * C > KD_PAR_MIN)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *g = dout + n * C;
            double r = rstd[n], dot = 0.0;
            for (int64_t c = 0; c < C; c++)
                dot += (double)g[c] * w[c] * xr[c];
            double k = dot * r * r * r / (double)C;
            for (int64_t c = 0; c < C; c++)
                dx[n * C + c] += (float)(r * g[c] * w[c] - k * xr[c]);
        }
    }
    if (dw) {
#pragma omp parallel for if (N * C > KD_PAR_MIN)
        for (int64_t c = 0; c < C; c++) {
            double s = 0.0;
            for (int64_t n = 0; n < N; n++)
                s += (double)dout[n * C + c] * x[n * C + c] * rstd[n];
            dw[c] += (float)s;
        }
    }
}

/* ---- RoPE -------------------------------------------------------------------- */

/* yarn's get_mscale: 0.1 m ln(s) + 1 above scale 1 */
static double yarn_mscale_(double s, double m) { return s <= 1 ? 1.0 : 0.1 * m * log(s) + 1.0; }

int kd_rope_table(float *cos_, float *sin_, const kd_rope *rope, int64_t T, int64_t D,
                  float *attn_scale)
{
    if (D % 2)
        return kd_err(KD_E_RANGE, "rope: head dim %lld is odd", (long long)D);
    if (rope->type == KD_ROPE_DYNAMIC)
        return kd_err(KD_E_UNSUPPORTED, "rope type dynamic is not implemented (default, linear, "
                      "llama3 and yarn are)");
    const int64_t half = D / 2;
    float scale = 1.0f; /* what HF multiplies cos and sin by (yarn's attention factor) */
    float *inv = malloc((size_t)half * sizeof(float));
    if (!inv)
        return kd_err(KD_E_NOMEM, "rope table");
    for (int64_t i = 0; i < half; i++) {
        /* HF: 1 / base ** (arange(0, D, 2).float() / D), in fp32 */
        float e = (float)(2 * i) / (float)D;
        inv[i] = (float)(1.0 / pow(rope->theta, (double)e));
    }
    if (rope->type == KD_ROPE_LINEAR) {
        for (int64_t i = 0; i < half; i++)
            inv[i] = inv[i] / (float)rope->factor;
    } else if (rope->type == KD_ROPE_LLAMA3) {
        /* transformers _compute_llama3_parameters */
        double factor = rope->factor, lo = rope->low_freq_factor, hi = rope->high_freq_factor;
        double old = (double)rope->original_max_position;
        double lo_wl = old / lo, hi_wl = old / hi;
        for (int64_t i = 0; i < half; i++) {
            double f = inv[i], wl = 2.0 * M_PI / f;
            double g = wl > lo_wl ? f / factor : f;
            if (!(wl < hi_wl) && !(wl > lo_wl)) {
                double s = (old / wl - lo) / (hi - lo);
                g = (1.0 - s) * g / factor + s * g;
            }
            inv[i] = (float)g;
        }
    } else if (rope->type == KD_ROPE_YARN) {
        /* transformers _compute_yarn_parameters: blend interpolated and
         * extrapolated frequencies over a ramp of dimensions */
        double factor = rope->factor, base = rope->theta;
        if (rope->original_max_position <= 0) {
            free(inv);
            return kd_err(KD_E_CONFIG, "rope: yarn needs original_max_position_embeddings");
        }
        double orig = (double)rope->original_max_position;
        double lo = floor((double)D * log(orig / (rope->beta_fast * 2 * M_PI)) / (2 * log(base)));
        double hi = ceil((double)D * log(orig / (rope->beta_slow * 2 * M_PI)) / (2 * log(base)));
        if (lo < 0)
            lo = 0;
        if (hi > (double)(D - 1))
            hi = (double)(D - 1);
        float flo = (float)lo, fhi = (float)(lo == hi ? hi + 0.001 : hi);
        for (int64_t i = 0; i < half; i++) {
            float pos_freq = (float)pow(base, (double)((float)(2 * i) / (float)D));
            float extra = 1.0f / pos_freq, inter = 1.0f / ((float)factor * pos_freq);
            float ramp = ((float)i - flo) / (fhi - flo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float ef = 1.0f - ramp; /* the extrapolation factor */
            inv[i] = inter * (1.0f - ef) + extra * ef;
        }
        if (rope->attention_factor > 0)
            scale = (float)rope->attention_factor;
        else if (rope->mscale > 0 && rope->mscale_all_dim > 0)
            scale = (float)(yarn_mscale_(factor, rope->mscale) / yarn_mscale_(factor, rope->mscale_all_dim));
        else
            scale = (float)yarn_mscale_(factor, 1.0);
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            float a = (float)t * inv[i]; /* fp32 product, as HF's matmul of positions */
            cos_[t * half + i] = (float)cos((double)a) * scale;
            sin_[t * half + i] = (float)sin((double)a) * scale;
        }
    free(inv);
    if (attn_scale)
        *attn_scale = scale;
    return KD_OK;
}

/* rotate the NH heads of one position by +angle (dir 1) or -angle (dir -1, the transpose) */
static void rope_pos_(float *x, const float *c, const float *s, int64_t NH, int64_t D, float dir)
{
    const int64_t half = D / 2;
    for (int64_t h = 0; h < NH; h++) {
        float *r = x + h * D;
        for (int64_t i = 0; i < half; i++) {
            float x1 = r[i], x2 = r[i + half], si = dir * s[i];
            r[i] = x1 * c[i] - x2 * si;
            r[i + half] = x2 * c[i] + x1 * si;
        }
    }
}

static void rope_apply_(float *x, const float *cos_, const float *sin_, const int64_t *pos,
                        int64_t B, int64_t T, int64_t NH, int64_t D, float dir)
{
    const int64_t half = D / 2;
    /* models call this per row inside their own parallel loops: a parallel
     * region, even a one-thread one ("if" false), costs a futex wake each */
    if (B * T * NH * D <= KD_PAR_MIN || kd_omp_in_parallel_()) {
        for (int64_t r = 0; r < B * T; r++) {
            const int64_t p = pos ? pos[r] : r % T;
            rope_pos_(x + r * NH * D, cos_ + p * half, sin_ + p * half, NH, D, dir);
        }
        return;
    }
#pragma omp parallel for
    for (int64_t r = 0; r < B * T; r++) {
        const int64_t p = pos ? pos[r] : r % T;
        rope_pos_(x + r * NH * D, cos_ + p * half, sin_ + p * half, NH, D, dir);
    }
}

void kd_rope_forward(float *x, const float *cos_, const float *sin_, const int64_t *pos, int64_t B,
                     int64_t T, int64_t NH, int64_t D)
{
    rope_apply_(x, cos_, sin_, pos, B, T, NH, D, 1.0f);
}

void kd_rope_backward(float *dx, const float *cos_, const float *sin_, const int64_t *pos,
                      int64_t B, int64_t T, int64_t NH, int64_t D)
{
    rope_apply_(dx, cos_, sin_, pos, B, T, NH, D, -1.0f);
}

/* ---- SwiGLU ------------------------------------------------------------------ */

void kd_swiglu_forward(float *out, const float *gate, const float *up, int64_t n)
{
#pragma omp parallel for if (n > KD_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kd_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, int64_t n)
{
#pragma omp parallel for if (n > KD_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
        if (dgate)
            dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
        if (dup)
            dup[i] += dout[i] * g * sg;
    }
}

/* ---- causal GQA attention ------------------------------------------------------ */

/* One softmax row: query qr attends to keys/values first..last, whose rows
 * are `stride` floats apart in k and v. Writes o (D) and returns the row's
 * log-sum-exp. s is scratch for last+1 scores. */
/* ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), as matmul_block_ folds */
#define fold8_(a) ((((a)[0] + (a)[1]) + ((a)[2] + (a)[3])) + (((a)[4] + (a)[5]) + ((a)[6] + (a)[7])))

/* s[r] = scale (q . k_r) for the nk <= 4 key rows k, ldk apart, D long: each
 * summed in 8 lanes as matmul_block_ sums (a sequential sum of 128 products
 * waited on its adds: a third of the demo's generation time) */
__attribute__((target_clones("avx2", "default"))) static void
dots_(float *s, const float *q, const float *k, int64_t ldk, int64_t D, int nk, float scale)
{
    const float *k0 = k, *k1 = k + (nk > 1) * ldk, *k2 = k + (nk > 2) * 2 * ldk, *k3 = k + (nk > 3) * 3 * ldk;
    kd_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t i = 0;
    for (; i + 8 <= D; i += 8) {
        kd_v8 u = ld8_(q + i);
        a0 += u * ld8_(k0 + i), a1 += u * ld8_(k1 + i), a2 += u * ld8_(k2 + i), a3 += u * ld8_(k3 + i);
    }
    for (; i < D; i++)
        a0[0] += q[i] * k0[i], a1[0] += q[i] * k1[i], a2[0] += q[i] * k2[i], a3[0] += q[i] * k3[i];
    const float r[4] = {fold8_(a0), fold8_(a1), fold8_(a2), fold8_(a3)};
    for (int j = 0; j < nk; j++)
        s[j] = r[j] * scale;
}

/* o (Dv) += p v (Dv): elementwise, the same bits at any vector width */
__attribute__((target_clones("avx2", "default"))) static void
axpy_(float *o, float p, const float *v, int64_t Dv)
{
    int64_t i = 0;
    kd_v8 pv = {p, p, p, p, p, p, p, p};
    for (; i + 8 <= Dv; i += 8) {
        kd_v8 x = ld8_(o + i) + pv * ld8_(v + i);
        memcpy(o + i, &x, sizeof x);
    }
    for (; i < Dv; i++)
        o[i] += p * v[i];
}

static float attend_row_(float *o, const float *qr, const float *k, const float *v, int64_t ldk,
                        int64_t ldv, int64_t first, int64_t last, int64_t Dk, int64_t Dv, float scale,
                        float *s)
{
    float mx = -INFINITY;
    for (int64_t j = first; j <= last; j += 4) {
        const int nk = last - j + 1 < 4 ? (int)(last - j + 1) : 4;
        dots_(s + j, qr, k + j * ldk, ldk, Dk, nk, scale);
        for (int r = 0; r < nk; r++)
            if (s[j + r] > mx)
                mx = s[j + r];
    }
    float sum = 0.0f;
    for (int64_t j = first; j <= last; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < Dv; i++)
        o[i] = 0.0f;
    for (int64_t j = first; j <= last; j++)
        axpy_(o, s[j] * inv, v + j * ldv, Dv);
    return mx + logf(sum);
}

/* ---- the training attention, in blocks ----
 * Each document of a row is attended to on its own, in tasks of up to AQ_
 * queries (the forward, and the backward's dq) or AQ_ keys (the backward's dk,
 * dv), each task a few small matrix products (OpenBLAS, single threaded; the
 * tasks run in parallel). Keys, values, queries and output
 * gradients are first transposed per head to (D, T) where a product needs
 * them along the tokens. Every element is summed in a fixed order that does
 * not depend on the thread count or on where the document sits in its row
 * (a packed row gives the bits of its documents run alone), and no two tasks
 * write the same element: deterministic. kd_attention_cached, for
 * generation, sums row by row in another order (within fp32 rounding). */
enum { AQ_ = 64 };

/* xt ((B, K, D, T)) = x ((B, T, K, D)) */
static float *heads_t_(const float *x, int64_t B, int64_t T, int64_t K, int64_t D)
{
    float *xt = malloc((size_t)(B * K * D * T) * sizeof(float));
    assert(xt);
#pragma omp parallel for collapse(2) if (B * T * K * D > KD_PAR_MIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < K; h++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t i = 0; i < D; i++)
                    xt[((b * K + h) * D + i) * T + t] = x[((b * T + t) * K + h) * D + i];
    return xt;
}

/* y (M, N), row stride ldy, = x (M, nI) w (N, nI)^T, rows ldx and ldw apart;
 * called inside the parallel regions, where OpenBLAS's OpenMP build runs on the
 * calling thread alone */
static void gemm_nt_(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t M,
                     int64_t N, int64_t nI)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)nI, 1.0f, x, (int)ldx, w, (int)ldw, 0.0f,
                y, (int)ldy);
}

/* The tasks: (b, document start s, length n, block start r) for every block
 * of AQ_ tokens of every document; *count of them, malloc'ed. */
typedef struct {
    int64_t b, s, n, r;
} att_task_;

static att_task_ *att_tasks_(const int64_t *pos, int64_t B, int64_t T, int64_t *count)
{
    int64_t cnt = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0, e; s < T; s = e) {
            for (e = s + 1; e < T && (!pos || pos[b * T + e] != 0); e++)
                ;
            cnt += (e - s + AQ_ - 1) / AQ_;
        }
    att_task_ *tk = malloc((size_t)(cnt ? cnt : 1) * sizeof *tk);
    assert(tk);
    int64_t i = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0, e; s < T; s = e) {
            for (e = s + 1; e < T && (!pos || pos[b * T + e] != 0); e++)
                ;
            for (int64_t r = 0; r < e - s; r += AQ_)
                tk[i++] = (att_task_){b, s, e - s, r};
        }
    *count = cnt;
    return tk;
}

void kd_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          const int64_t *pos, int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                          float scale)
{
    assert(H % K == 0);
    const int64_t G = H / K;
    int64_t nt;
    att_task_ *tk = att_tasks_(pos, B, T, &nt);
    float *vt = heads_t_(v, B, T, K, D);
#pragma omp parallel
    {
        float *sc = malloc((size_t)(AQ_ * T) * sizeof(float)); /* scores, then probabilities (nr, kn) */
        assert(sc);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t i = 0; i < nt; i++)
            for (int64_t h = 0; h < H; h++) {
                const att_task_ t = tk[i];
                const int64_t nr = t.n - t.r < AQ_ ? t.n - t.r : AQ_, kn = t.r + nr, kh = h / G;
                const int64_t row0 = (t.b * T + t.s + t.r) * H + h; /* the block's first query row */
                gemm_nt_(sc, kn, q + row0 * D, H * D, k + ((t.b * T + t.s) * K + kh) * D, K * D, nr, kn, D);
                for (int64_t r = 0; r < nr; r++) {
                    float *p = sc + r * kn, mx = -INFINITY, sum = 0.0f;
                    const int64_t last = t.r + r; /* causal: keys 0..last of the document */
                    for (int64_t j = 0; j <= last; j++) {
                        p[j] *= scale;
                        mx = p[j] > mx ? p[j] : mx;
                    }
                    for (int64_t j = 0; j <= last; j++) {
                        p[j] = expf(p[j] - mx);
                        sum += p[j];
                    }
                    const float inv = 1.0f / sum;
                    for (int64_t j = 0; j <= last; j++)
                        p[j] *= inv;
                    for (int64_t j = last + 1; j < kn; j++)
                        p[j] = 0.0f;
                    lse[(t.b * H + h) * T + t.s + t.r + r] = mx + logf(sum);
                }
                gemm_nt_(out + row0 * D, H * D, sc, kn, vt + (t.b * K + kh) * D * T + t.s, T, nr, D, kn);
            }
        free(sc);
    }
    free(vt);
    free(tk);
}

void kd_attention_cached(float *out, const float *q, const float *kc, const float *vc, int64_t ldk,
                         int64_t ldv, int64_t p0, int64_t n, int64_t H, int64_t K, int64_t Dk,
                         int64_t Dv, float scale, float *scratch)
{
    assert(H % K == 0);
    const int64_t G = H / K;
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < H; h++)
            attend_row_(out + (t * H + h) * Dv, q + (t * H + h) * Dk, kc + (h / G) * Dk, vc + (h / G) * Dv,
                        ldk, ldv, 0, p0 + t, Dk, Dv, scale, scratch);
}

void kd_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out, const float *lse,
                           const int64_t *pos, int64_t B, int64_t T, int64_t H, int64_t K,
                           int64_t D, float scale)
{
    assert(H % K == 0);
    const int64_t G = H / K;
    /* Two passes over the blocks of every document, the probabilities rebuilt
     * from lse in each:
     *   1. query blocks (per query head): delta = dout . out, dp = dout v^T,
     *      ds = p (dp - delta) scale, dq += ds k;
     *   2. key blocks (per kv head, its query heads in order): the same ds and
     *      p transposed (keys by queries, for the queries at or after the
     *      block's first key), dk += ds^T q, dv += p^T dout. */
    int64_t nt;
    att_task_ *tk = att_tasks_(pos, B, T, &nt);
    float *delta = malloc((size_t)(B * H * T) * sizeof(float));
    float *kt = heads_t_(k, B, T, K, D), *qt = heads_t_(q, B, T, H, D), *gt = heads_t_(dout, B, T, H, D);
    assert(delta);
#pragma omp parallel
    {
        /* (AQ_, T) each: scores/probabilities, dp/ds; then a (AQ_, D) product */
        float *sc = malloc((size_t)(2 * AQ_ * T + AQ_ * D) * sizeof(float)), *dp = sc + AQ_ * T, *acc = dp + AQ_ * T;
        assert(sc);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t i = 0; i < nt; i++)
            for (int64_t h = 0; h < H; h++) {
                const att_task_ t = tk[i];
                const int64_t nr = t.n - t.r < AQ_ ? t.n - t.r : AQ_, kn = t.r + nr, kh = h / G;
                const int64_t row0 = (t.b * T + t.s + t.r) * H + h, kv0 = (t.b * T + t.s) * K + kh;
                const float *L = lse + (t.b * H + h) * T + t.s + t.r;
                float *dl = delta + (t.b * H + h) * T + t.s + t.r;
                gemm_nt_(sc, kn, q + row0 * D, H * D, k + kv0 * D, K * D, nr, kn, D);
                gemm_nt_(dp, kn, dout + row0 * D, H * D, v + kv0 * D, K * D, nr, kn, D);
                for (int64_t r = 0; r < nr; r++) {
                    const float *go = dout + (row0 + r * H) * D, *orow = out + (row0 + r * H) * D;
                    float d = 0.0f;
                    for (int64_t e = 0; e < D; e++)
                        d += go[e] * orow[e];
                    dl[r] = d;
                    float *p = sc + r * kn, *g = dp + r * kn;
                    const int64_t last = t.r + r;
                    for (int64_t j = 0; j <= last; j++)
                        g[j] = expf(p[j] * scale - L[r]) * (g[j] - d) * scale;
                    for (int64_t j = last + 1; j < kn; j++)
                        g[j] = 0.0f;
                }
                gemm_nt_(acc, D, dp, kn, kt + (t.b * K + kh) * D * T + t.s, T, nr, D, kn);
                for (int64_t r = 0; r < nr; r++)
                    for (int64_t e = 0; e < D; e++)
                        dq[(row0 + r * H) * D + e] += acc[r * D + e];
            }
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t i = 0; i < nt; i++)
            for (int64_t kh = 0; kh < K; kh++) {
                const att_task_ t = tk[i];
                const int64_t nc = t.n - t.r < AQ_ ? t.n - t.r : AQ_, nq = t.n - t.r; /* keys, queries t.r.. */
                const int64_t kv0 = (t.b * T + t.s + t.r) * K + kh; /* the block's first key row */
                for (int64_t g = 0; g < G; g++) {
                    const int64_t h = kh * G + g, q0 = (t.b * T + t.s + t.r) * H + h; /* query row t.r */
                    const float *L = lse + (t.b * H + h) * T + t.s + t.r, *dl = delta + (t.b * H + h) * T + t.s + t.r;
                    gemm_nt_(sc, nq, k + kv0 * D, K * D, q + q0 * D, H * D, nc, nq, D);
                    gemm_nt_(dp, nq, v + kv0 * D, K * D, dout + q0 * D, H * D, nc, nq, D);
                    for (int64_t c = 0; c < nc; c++) {
                        float *p = sc + c * nq, *s2 = dp + c * nq; /* key t.r + c, queries t.r + j */
                        for (int64_t j = 0; j < c; j++)
                            p[j] = s2[j] = 0.0f;
                        for (int64_t j = c; j < nq; j++) {
                            p[j] = expf(p[j] * scale - L[j]);
                            s2[j] = p[j] * (s2[j] - dl[j]) * scale;
                        }
                    }
                    /* dk += ds^T q, dv += p^T dout (queries t.r.. of head h, transposed) */
                    const int64_t qo = (t.b * H + h) * D * T + t.s + t.r;
                    gemm_nt_(acc, D, dp, nq, qt + qo, T, nc, D, nq);
                    for (int64_t c = 0; c < nc; c++)
                        for (int64_t e = 0; e < D; e++)
                            dk[(kv0 + c * K) * D + e] += acc[c * D + e];
                    gemm_nt_(acc, D, sc, nq, gt + qo, T, nc, D, nq);
                    for (int64_t c = 0; c < nc; c++)
                        for (int64_t e = 0; e < D; e++)
                            dv[(kv0 + c * K) * D + e] += acc[c * D + e];
                }
            }
        free(sc);
    }
    free(qt);
    free(gt);
    free(kt);
    free(delta);
    free(tk);
}

/* ---- residual ------------------------------------------------------------------ */

void kd_residual_forward(float *out, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for if (n > KD_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void kd_residual_backward(float *da, float *db, const float *dout, int64_t n)
{
#pragma omp parallel for if (n > KD_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        if (da)
            da[i] += dout[i];
        if (db)
            db[i] += dout[i];
    }
}

/* ---- cross-entropy ----------------------------------------------------------------- */

/* log-sum-exp of one row: fp32 exponentials (each within 1 ulp) summed in
 * double; about twice as fast as double exp over a 150K vocabulary */
double kd_logsumexp(const float *x, int64_t V)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (x[i] > mx)
            mx = x[i];
    double s = 0.0;
    for (int64_t i = 0; i < V; i++)
        s += (double)expf(x[i] - mx);
    return (double)mx + log(s);
}

double kd_crossentropy_forward(const float *logits, const int64_t *targets, int64_t N, int64_t V,
                               int64_t *count)
{
    /* each row's loss in parallel, then summed in row order: the result does
     * not depend on the thread count or schedule (training resumes bit for bit) */
    double *row = malloc((size_t)(N > 0 ? N : 1) * sizeof(double));
    assert(row);
#pragma omp parallel for if (N * V > KD_PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        row[n] = 0.0;
        if (targets[n] == KD_IGNORE_INDEX)
            continue;
        assert(targets[n] >= 0 && targets[n] < V);
        row[n] = kd_logsumexp(logits + n * V, V) - (double)logits[n * V + targets[n]];
    }
    double sum = 0.0;
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++)
        if (targets[n] != KD_IGNORE_INDEX) {
            sum += row[n];
            cnt++;
        }
    free(row);
    if (count)
        *count = cnt;
    return sum;
}

void kd_crossentropy_backward(float *dlogits, const float *logits, const int64_t *targets,
                              int64_t N, int64_t V, double scale)
{
    const double w = scale;
#pragma omp parallel for if (N * V > KD_PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        float *d = dlogits + n * V;
        if (targets[n] == KD_IGNORE_INDEX) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        const float *x = logits + n * V;
        const double l = kd_logsumexp(x, V);
        const float lf = (float)l, wf = (float)w; /* softmax = exp(x - lse), in fp32 */
        for (int64_t i = 0; i < V; i++)
            d[i] = expf(x[i] - lf) * wf;
        d[targets[n]] -= (float)w;
    }
}

/* ---- AdamW ------------------------------------------------------------------------- */

/* n elements of AdamW, vectorised (each element's arithmetic is the same
 * whatever the vector width: IEEE operations, none fused) */
__attribute__((target_clones("avx2", "default"))) static void
adamw_span_(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int64_t n, float decay,
            float b1, float b2, float eps, float step_size, float bc2_sqrt)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float pi = p[i] * decay;
        float mi = m[i] + (gi - m[i]) * (1.0f - b1);
        float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = pi - step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

void kd_adamw_update(float *p, const float *g, float *m, float *v, int64_t n,
                     const kd_adamw *hp, int64_t step)
{
    assert(step >= 1);
    /* the scalar algebra of torch's _single_tensor_adamw: python doubles */
    const double bc1 = 1.0 - pow((double)hp->beta1, (double)step);
    const double bc2 = 1.0 - pow((double)hp->beta2, (double)step);
    const float step_size = (float)((double)hp->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay = (float)(1.0 - (double)hp->lr * (double)hp->weight_decay);
    const float b1 = (float)hp->beta1, b2 = (float)hp->beta2, eps = (float)hp->eps;
    enum { SPAN = 16384 };
    if (n <= 4 * SPAN || kd_omp_in_parallel_()) {
        adamw_span_(p, g, m, v, n, decay, b1, b2, eps, step_size, bc2_sqrt);
        return;
    }
#pragma omp parallel for
    for (int64_t s = 0; s < (n + SPAN - 1) / SPAN; s++) {
        const int64_t o = s * SPAN, len = n - o < SPAN ? n - o : SPAN;
        adamw_span_(p + o, g + o, m + o, v + o, len, decay, b1, b2, eps, step_size, bc2_sqrt);
    }
}

double kd_norm2_det(const float *x, size_t n)
{
    enum { NCHUNK = 256 };
    double part[NCHUNK];
    const size_t per = (n + NCHUNK - 1) / NCHUNK;
#pragma omp parallel for if (n > KD_PAR_MIN)
    for (int c = 0; c < NCHUNK; c++) {
        double s = 0.0;
        size_t lo = (size_t)c * per, hi = lo + per < n ? lo + per : n;
        for (size_t i = lo; i < hi; i++)
            s += (double)x[i] * (double)x[i];
        part[c] = s;
    }
    double s = 0.0;
    for (int c = 0; c < NCHUNK; c++)
        s += part[c];
    return sqrt(s);
}
