/* ops.h - the reference ops layer: plain functions on fp32 arrays.
 *
 * This is the CPU backend (core/cpu/ops.c). Every op is a forward and the
 * matching backward; the student model is written in terms of these and
 * nothing else, so a second backend only has to provide the same set.
 *
 * Legend of dimension letters:
 *   B batch, T tokens per sequence, N = B*T rows, C channels (hidden),
 *   I input features and O output features of a linear layer (nI, nO as
 *   parameters; a bare I collides with complex.h via cblas.h), V vocab,
 *   H query heads, K key/value heads (H % K == 0), D head dim, F mlp width.
 *
 * Layout: row-major. A linear weight is (O, I) as in torch.nn.Linear.
 * Attention tensors are (B, T, H, D), i.e. the rows of a q_proj output.
 *
 * Conventions:
 *   - Every backward ACCUMULATES (+=) into its gradient outputs, as llm.c
 *     does; zero them before the first contribution. A NULL gradient output
 *     is skipped.
 *   - Sizes are `int64_t`; all inputs must be valid for the given shapes and
 *     must not alias outputs unless stated. Programmer errors (negative sizes,
 *     NULL where required) are asserted, not returned.
 *   - Reductions that decide accuracy (norms, softmax sums, the loss) are
 *     accumulated in double or fp32 as noted; softmax is always fp32 or wider.
 */
#ifndef KD_OPS_H
#define KD_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "hfconfig.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear: y = x W^T + b ------------------------------------------------
 * y (N, O) is overwritten; x (N, I); w (O, I); b (O) or NULL. Through
 * OpenBLAS: fast, but a row's bits may depend on the rows around it (its
 * kernels for AVX2 CPUs sum the rows at some tile positions in another
 * order). Training uses it. */
void kd_matmul_forward(float *y, const float *x, const float *w, const float *b,
                       int64_t N, int64_t nI, int64_t nO);
/* The same product, row-invariant: a row's result is bitwise the same
 * whatever N is and wherever the row sits (a fixed-order vector loop, the
 * same on every x86-64 CPU), so a sequence's logits do not depend on what
 * else is in the batch. Generation uses it. */
void kd_matmul_rowwise(float *y, const float *x, const float *w, const float *b,
                       int64_t N, int64_t nI, int64_t nO);
/* dx (N, I) += dy W; dw (O, I) += dy^T x; db (O) += sum_n dy. */
void kd_matmul_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int64_t N, int64_t nI, int64_t nO);

/* ---- embedding lookup -----------------------------------------------------
 * out (N, C) = wte[ids[n]]; wte (V, C). ids must lie in [0, V). */
void kd_embedding_forward(float *out, const int64_t *ids, const float *wte, int64_t N, int64_t C);
/* dwte[ids[n]] += dout[n] (a scatter-add; repeated ids add up). */
void kd_embedding_backward(float *dwte, const float *dout, const int64_t *ids, int64_t N, int64_t C);

/* ---- RMSNorm: out = x / sqrt(mean(x^2) + eps) * w ---------------------------
 * out (N, C) overwritten; rstd (N) receives 1/sqrt(mean(x^2)+eps) for the
 * backward (may be NULL at inference). Sum of squares in double. */
void kd_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w,
                        int64_t N, int64_t C, double eps);
/* dx (N, C) += ...; dw (C) += sum_n dout * x * rstd. rstd from the forward. */
void kd_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int64_t N, int64_t C);

/* ---- RoPE (non-interleaved halves, as HF Llama / Qwen2) ---------------------
 * For i < D/2 with c = cos[t, i], s = sin[t, i]:
 *   out[i]       = x[i] c - x[i + D/2] s
 *   out[i + D/2] = x[i + D/2] c + x[i] s
 * kd_rope_table fills cos, sin (T, D/2) for positions 0..T-1 from the rope
 * config: types default, linear, llama3 and yarn, computed as transformers
 * does (inverse frequencies in fp32). yarn's attention factor (explicit, or
 * from mscale / mscale_all_dim) multiplies the table as HF multiplies cos and
 * sin; *attn_scale (may be NULL) receives it (1 for the other types).
 * Returns KD_OK, KD_E_UNSUPPORTED for dynamic, KD_E_CONFIG for yarn without
 * original_max_position_embeddings, KD_E_RANGE if D is odd. */
int kd_rope_table(float *cos_, float *sin_, const kd_rope *rope, int64_t T, int64_t D,
                  float *attn_scale);
/* Rotate x (B, T, NH, D) in place, NH heads per row. Row (b, t) takes the
 * angle of position pos[b*T + t] (pos (B, T), each in [0, T)), or of t when
 * pos is NULL. */
void kd_rope_forward(float *x, const float *cos_, const float *sin_, const int64_t *pos, int64_t B,
                     int64_t T, int64_t NH, int64_t D);
/* The transpose rotation, in place on dx (B, T, NH, D): turns the gradient
 * of the rotated tensor into the gradient of its input. (In place, so it
 * overwrites rather than accumulates.) pos as in the forward. */
void kd_rope_backward(float *dx, const float *cos_, const float *sin_, const int64_t *pos,
                      int64_t B, int64_t T, int64_t NH, int64_t D);

/* ---- SwiGLU: out = silu(gate) * up, elementwise over n -------------------- */
void kd_swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
/* dgate += dout * up * silu'(gate); dup += dout * silu(gate). */
void kd_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, int64_t n);

/* ---- causal grouped-query attention ---------------------------------------
 * q (B, T, H, D); k, v (B, T, K, D); query head h reads kv head h / (H/K).
 * out (B, T, H, D) = softmax(scale * q k^T, causal) v, overwritten.
 * lse (B, H, T) receives the log-sum-exp of each softmax row (scaled scores),
 * which is all the backward needs to rebuild the probabilities; memory is
 * O(B T H D), not O(T^2). Scores and softmax in fp32.
 *
 * Packed rows: with pos (B, T) not NULL, a row holds several documents, each
 * with positions 0, 1, 2, ... (a 0 starts the next document), and the query
 * at t attends only to keys t - pos[b*T + t] .. t: its own document. pos must
 * satisfy pos[t] == 0 or pos[t] == pos[t-1] + 1 (the caller checks). NULL is
 * one document per row. */
void kd_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          const int64_t *pos, int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                          float scale);
/* Attention of n new queries against a KV cache, for generation: q (n, H, Dk)
 * are the queries at positions p0 .. p0+n-1; key row j of kv head g starts at
 * kc + j*ldk + g*Dk and value row j at vc + j*ldv + g*Dv, for j up to the
 * last of them (so a cache of rows (K, D) has ldk = ldv = K*D; MLA's latent
 * cache reads the value as a prefix of the key row). out (n, H, Dv),
 * overwritten. Causal: the query at p0+t sees keys 0 .. p0+t. Row by row, in
 * a fixed order that depends on nothing else in the batch (kd_attention_forward
 * sums in blocks: the two agree to fp32 rounding, not to the bit). scratch
 * holds p0+n floats. */
void kd_attention_cached(float *out, const float *q, const float *kc, const float *vc, int64_t ldk,
                         int64_t ldv, int64_t p0, int64_t n, int64_t H, int64_t K, int64_t Dk,
                         int64_t Dv, float scale, float *scratch);
/* dq (B, T, H, D) +=, dk, dv (B, T, K, D) +=, from dout and the forward's
 * q, k, v, out, lse, pos. */
void kd_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out, const float *lse,
                           const int64_t *pos, int64_t B, int64_t T, int64_t H, int64_t K,
                           int64_t D, float scale);

/* ---- residual add: out = a + b over n (out may alias a or b) --------------- */
void kd_residual_forward(float *out, const float *a, const float *b, int64_t n);
/* da += dout; db += dout. */
void kd_residual_backward(float *da, float *db, const float *dout, int64_t n);

/* ---- softmax cross-entropy with ignore index -------------------------------
 * logits (N, V); targets (N), where KD_IGNORE_INDEX (-100) marks a row that
 * does not count. Returns the SUM over counted rows of -log softmax(logits)
 * [target] (0 if no row counts), and the count in *count (may be NULL); the
 * mean is sum / count. Sums in double. The backward writes (not accumulates)
 * dlogits (N, V) = scale * (softmax - onehot) for counted rows and 0 for the
 * others: scale = 1 / count gives the gradient of the mean, 1 / (targets of
 * the whole optimizer step) that of a step's share. Targets outside [0, V)
 * other than -100 are a programmer error (asserted). */
#define KD_IGNORE_INDEX (-100)
/* log(sum exp(x)) of one row: the max subtracted, fp32 exponentials summed
 * in double. The cross-entropy uses it, and so does every log-probability. */
double kd_logsumexp(const float *x, int64_t V);
double kd_crossentropy_forward(const float *logits, const int64_t *targets, int64_t N, int64_t V,
                               int64_t *count);
void kd_crossentropy_backward(float *dlogits, const float *logits, const int64_t *targets,
                              int64_t N, int64_t V, double scale);

/* ---- AdamW, as torch.optim.AdamW (decoupled weight decay) ------------------
 * One step over n parameters p with gradient g and moments m, v (zero before
 * the first step). `step` is the 1-based step number, for bias correction:
 *   p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps). */
typedef struct kd_adamw {
    double lr, beta1, beta2, eps, weight_decay;
} kd_adamw;
void kd_adamw_update(float *p, const float *g, float *m, float *v, int64_t n,
                     const kd_adamw *hp, int64_t step);
/* The L2 norm of x (n), summed in double over fixed chunks in a fixed
 * order: the same bits for any thread count (global grad-norm clipping). */
double kd_norm2_det(const float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif
