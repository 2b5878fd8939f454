/* cuops.h - the CUDA backend's ops: the set of core/ops.h, on device memory.
 *
 * Every function here is the GPU twin of a CPU op in core/ops.h (same math,
 * same dimension letters: B batch, T tokens per row, N = B*T, C hidden,
 * H query heads, K kv heads, D head dim, F mlp width, V vocab). What differs:
 *   - activations and weights are bf16 (kd_bf16, the raw 16 bits), master
 *     weights, gradients of weights, optimizer moments and every reduction
 *     are fp32;
 *   - pointers are device pointers; sizes are int64_t, row counts fit int32;
 *   - work is queued on the stream of the context (kd_cu) and nothing waits
 *     for the GPU unless the function says so (no host syncs in a step);
 *   - an op WRITES its activation gradient outputs (dx, dq, ...) unless its
 *     comment says it accumulates; weight gradients (fp32) ACCUMULATE, so
 *     that gradient accumulation over micro-batches needs no extra pass.
 * Positions of packed rows are int32 (B, T) as in kd_attention_forward: a 0
 * starts the next document, NULL is one document per row.
 *
 * Only compiled with KD_HAVE_CUDA; the launchers return KD_E_CUDA with the
 * failing call's message, and kernels are checked with cudaGetLastError.
 */
#ifndef KD_CUOPS_H
#define KD_CUOPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t kd_bf16; /* a bfloat16's bits (the top half of an fp32) */

/* The backend context: stream, cuBLASLt handle and workspace, the cache of
 * GEMM plans, and a scratch buffer for the ops' deterministic two-pass
 * reductions (ops on one stream run in order, so they share it). */
typedef struct kd_cu {
    void *stream;     /* cudaStream_t */
    void *lt;         /* cublasLtHandle_t */
    void *ws;         /* cuBLASLt workspace (device) */
    size_t ws_size;
    void *plans;      /* GEMM plans by shape (ops.cu) */
    float *scratch;   /* device, KD_CU_SCRATCH floats */
    void *ring;       /* pinned staging buffers of kd_cu_upload_async */
    void *prof;       /* kd_cu_prof_* timing, when on */
    int device, sms;
    int attn_two_pass; /* the attention backward: 0 one pass, dQ by atomics; 1 two, bit-reproducible */
} kd_cu;
#define KD_CU_SCRATCH (8u << 20)
int kd_cu_init(kd_cu *cu, int device);
void kd_cu_free(kd_cu *cu);
/* Wait for the stream; KD_E_CUDA with the first asynchronous error, if any. */
int kd_cu_sync(kd_cu *cu);

/* GPU time by kind of op, for profiles (DISTILL_PROFILE=1 in `bench sft`):
 * kd_cu_prof_mark records an event on the stream that ends the span of the
 * previous mark's kind and starts one of `kind` (a string that outlives the
 * report); kd_cu_prof_report waits, prints the totals by kind, largest first,
 * and starts over. Off (marks cost nothing) until kd_cu_prof_on. The span from
 * kd_cu_prof_on to the report is also the profiler range (cudaProfilerStart/Stop):
 * `ncu --profile-from-start off` times each kernel of it. */
int kd_cu_prof_on(kd_cu *cu);
void kd_cu_prof_mark(kd_cu *cu, const char *kind);
int kd_cu_prof_report(kd_cu *cu, void *file);

/* ---- memory ------------------------------------------------------------------ */
int kd_cu_malloc(void **p, size_t bytes);
void kd_cu_free_ptr(void *p);
int kd_cu_upload(void *dst, const void *src, size_t bytes, kd_cu *cu);   /* synchronous */
int kd_cu_download(void *dst, const void *src, size_t bytes, kd_cu *cu); /* synchronous */
int kd_cu_memset0(void *p, size_t bytes, kd_cu *cu);
/* Device memory in use (by every process, the CUDA context included) and the
 * device's total, from cudaMemGetInfo. */
int kd_cu_mem_info(size_t *used, size_t *total);
/* Queue a copy of src (host, any memory) to dst without waiting for the GPU:
 * src is first copied into one of a ring of pinned buffers, so the caller may
 * reuse it at once. */
int kd_cu_upload_async(void *dst, const void *src, size_t bytes, kd_cu *cu);
/* Conversions, elementwise over n: fp32 <-> bf16 (round to nearest even). */
int kd_cu_f32_to_bf16(kd_bf16 *y, const float *x, int64_t n, kd_cu *cu);
int kd_cu_bf16_to_f32(float *y, const kd_bf16 *x, int64_t n, kd_cu *cu);
/* (Host-side conversions: kd_f32_to_bf16 and kd_bf16_to_f32 in core/dtype.h.) */

/* ---- GEMM (cuBLASLt), row-major as torch.nn.Linear ----------------------------
 * Forward:  y (N, O) = x (N, I) W^T + b;  W (O, I) and x, y bf16; b bf16 or NULL.
 * Backward: dx (N, I) = dy W (written, bf16; dx may be NULL), or += when
 *           accumulate_dx (fp32 accumulation in the GEMM, then rounded);
 *           dW (O, I) += dy^T x in fp32; db (O) += column sums of dy (fp32).
 * fp32 accumulation throughout (CUBLAS_COMPUTE_32F). */
int kd_cu_linear_forward(kd_bf16 *y, const kd_bf16 *x, const kd_bf16 *w, const kd_bf16 *b, int64_t N,
                         int64_t nI, int64_t nO, kd_cu *cu);
int kd_cu_linear_backward(kd_bf16 *dx, float *dw, float *db, const kd_bf16 *dy, const kd_bf16 *x,
                          const kd_bf16 *w, int64_t N, int64_t nI, int64_t nO, int accumulate_dx, kd_cu *cu);
/* db (O) += column sums of dy (N, O) given in fp32 (a bias gradient from an
 * fp32 copy of dy). */
int kd_cu_colsum_f32(float *db, const float *dy, int64_t N, int64_t nO, kd_cu *cu);
/* The general form under both: D (m, n) = alpha * op(A) op(B) + beta * C, all
 * row-major, A (m, k) or (k, m) when ta, B (k, n) or (n, k) when tb. A, B are
 * bf16; C and D share a type: bf16 (d_f32 = 0) or fp32 (d_f32 = 1); C == D
 * or C NULL (beta ignored). bias (n, bf16) is added by the epilogue, or NULL. */
int kd_cu_gemm(void *d, int d_f32, const kd_bf16 *a, int ta, const kd_bf16 *b, int tb, const kd_bf16 *bias,
               int64_t m, int64_t n, int64_t k, float alpha, float beta, kd_cu *cu);

/* The same with explicit leading dimensions (elements between rows of A, B
 * and D as stored) and, for batch > 1, a strided batch: matrix i of A, B, D
 * starts sa, sb, sd elements after matrix i - 1 (MLA's per-head products
 * over slices of wider rows). Offsets and leading dimensions must keep 16-byte
 * alignment (multiples of 8 elements). */
typedef struct kd_cu_gemm_shape {
    int64_t lda, ldb, ldd, batch, sa, sb, sd;
} kd_cu_gemm_shape;
int kd_cu_gemm_ex(void *d, int d_f32, const kd_bf16 *a, int ta, const kd_bf16 *b, int tb, const kd_bf16 *bias,
                  int64_t m, int64_t n, int64_t k, const kd_cu_gemm_shape *sh, float alpha, float beta, kd_cu *cu);

/* ---- embedding -------------------------------------------------------------------
 * out (N, C) = wte[ids[n]] (bf16); dwte (V, C) fp32 += scatter of dout. */
int kd_cu_embedding_forward(kd_bf16 *out, const int32_t *ids, const kd_bf16 *wte, int64_t N, int64_t C,
                            kd_cu *cu);
int kd_cu_embedding_backward(float *dwte, const kd_bf16 *dout, const int32_t *ids, int64_t N, int64_t C,
                             kd_cu *cu);

/* ---- RMSNorm, fused with the residual add ------------------------------------------
 * res (N, C) = a + b when b is not NULL (res may alias a), else res = a (no
 * copy when res == a); out = res * rstd * w with rstd (N) fp32 =
 * 1/sqrt(mean(res^2) + eps) (fp32 sums). w bf16. */
int kd_cu_rmsnorm_forward(kd_bf16 *out, float *rstd, kd_bf16 *res, const kd_bf16 *a, const kd_bf16 *b,
                          const kd_bf16 *w, int64_t N, int64_t C, float eps, kd_cu *cu);
/* dx (N, C) = dres_in (may be NULL: 0) + d(norm)/dx of dout; dx may alias
 * dres_in. dw (C) fp32 += sum_n dout * x * rstd (x is the forward's res). */
int kd_cu_rmsnorm_backward(kd_bf16 *dx, float *dw, const kd_bf16 *dres_in, const kd_bf16 *dout, const kd_bf16 *x,
                           const kd_bf16 *w, const float *rstd, int64_t N, int64_t C, kd_cu *cu);

/* ---- fused q/k/v split + RoPE (halves, as HF Llama / Qwen2) ------------------------
 * qkv (N, (H + 2K) D) is the fused projection's output; q (N, H D), k, v
 * (N, K D) receive the split, q and k rotated by the angle of pos[n] (or t
 * when pos is NULL): cos, sin (P, D/2) fp32 tables (kd_rope_table), P > any
 * position. The backward is the transpose: dqkv (bf16, for the GEMMs) from
 * the attention's fp32 dq, dk (rotated back) and dv, and the same in fp32 in
 * dqkv32 when not NULL (for the bias gradients, which sum many rows whose
 * terms cancel: bf16 rounding there costs percents). */
int kd_cu_qkv_rope_forward(kd_bf16 *q, kd_bf16 *k, kd_bf16 *v, const kd_bf16 *qkv, const float *cos_,
                           const float *sin_, const int32_t *pos, int64_t B, int64_t T, int64_t H, int64_t K,
                           int64_t D, kd_cu *cu);
int kd_cu_qkv_rope_backward(kd_bf16 *dqkv, float *dqkv32, const float *dq, const float *dk, const float *dv,
                            const float *cos_, const float *sin_, const int32_t *pos, int64_t B, int64_t T,
                            int64_t H, int64_t K, int64_t D, kd_cu *cu);

/* ---- SwiGLU on the fused gate/up projection -------------------------------------------
 * gu (N, 2F): gate in columns [0, F), up in [F, 2F). out (N, F) = silu(gate) up.
 * dgu (N, 2F) from dout (N, F). */
int kd_cu_swiglu_forward(kd_bf16 *out, const kd_bf16 *gu, int64_t N, int64_t F, kd_cu *cu);
int kd_cu_swiglu_backward(kd_bf16 *dgu, const kd_bf16 *dout, const kd_bf16 *gu, int64_t N, int64_t F, kd_cu *cu);

/* ---- causal GQA attention over packed rows (core/cuda/attention.cu) ------------------
 * q (B, T, H, D), k, v (B, T, K, D), out (B, T, H, D) bf16; lse (B, H, T) fp32
 * (natural log of the softmax denominators of the scaled scores). The query
 * at t sees keys t - pos[t] .. t (its own document). D <= 128, D % 8 == 0,
 * T <= 65535 x 64, scale > 0 (else KD_E_CUDA).
 * The backward writes dq, dk, dv in fp32 (their consumers sum over rows, see
 * kd_cu_qkv_rope_backward); ws is a device workspace of at least
 * kd_cu_attention_ws_bytes(B, T, H, K, D) bytes. dk and dv are the same bits
 * on every run; dq is too with cu->attn_two_pass (a second kernel recomputes
 * the scores per query tile), else it is summed by fp32 atomics in the dK/dV
 * kernel, in an order that varies (the default: two fewer matmuls). */
int kd_cu_attention_forward(kd_bf16 *out, float *lse, const kd_bf16 *q, const kd_bf16 *k, const kd_bf16 *v,
                            const int32_t *pos, int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                            float scale, kd_cu *cu);
/* The forward with value heads narrower than the q/k heads: MLA's decompressed
 * form (prefill), q/k (B, T, H or K, Dk) with Dk <= 192, v (B, T, K, Dv) and
 * out (B, T, H, Dv) with Dv <= 128; Dk == Dv is kd_cu_attention_forward. */
int kd_cu_attention_forward_dv(kd_bf16 *out, float *lse, const kd_bf16 *q, const kd_bf16 *k, const kd_bf16 *v,
                               const int32_t *pos, int64_t B, int64_t T, int64_t H, int64_t K, int64_t Dk,
                               int64_t Dv, float scale, kd_cu *cu);
size_t kd_cu_attention_ws_bytes(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D);
int kd_cu_attention_backward(float *dq, float *dk, float *dv, const kd_bf16 *dout, const kd_bf16 *q,
                             const kd_bf16 *k, const kd_bf16 *v, const kd_bf16 *out, const float *lse,
                             const int32_t *pos, int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
                             float scale, void *ws, kd_cu *cu);

/* ---- fused, chunked linear + cross-entropy -------------------------------------------
 * The loss of logits = x (N, C) W^T (W (V, C), the lm head) against targets
 * (N, int32, -100 = not counted), without the full (N, V) logits: rows go
 * through in chunks of `chunk` rows, each chunk's logits (fp32, in ws) are
 * made, turned into dlogits = scale (softmax - onehot) in place, and used
 * for dx (N, C) (written, bf16; NULL skips) and dW (V, C) fp32 +=. The SUM
 * of the counted rows' losses is added to *loss_sum (fp32 device scalar,
 * accumulated in fp64 per chunk). ws holds
 * kd_cu_xent_ws_bytes(chunk, V) bytes. With dx and dw NULL it is the
 * forward only (evaluation). */
size_t kd_cu_xent_ws_bytes(int64_t chunk, int64_t V);
int kd_cu_linear_xent(float *loss_sum, kd_bf16 *dx, float *dw, const kd_bf16 *x, const kd_bf16 *w,
                      const int32_t *targets, int64_t N, int64_t C, int64_t V, float scale, int64_t chunk,
                      void *ws, kd_cu *cu);

/* ---- the optimizer -----------------------------------------------------------------------
 * All parameters live in one flat fp32 master buffer, with their gradients,
 * moments and bf16 copy in parallel flat buffers; a segment is one tensor
 * [off, off + n) with its weight decay. kd_cu_grad_norm2 writes the squared
 * L2 norm of g (n) to *out (device fp32; a deterministic two-level sum). The
 * update clips by max_norm (0 = off) using that device value, so no host
 * sync is needed, then runs AdamW as kd_adamw_update and writes the bf16
 * copy in the same pass; a non-finite norm skips the update (the host sees
 * the norm when it next reads it). lr and step come from the host. */
typedef struct kd_cu_seg {
    int64_t off, n;
    float weight_decay;
} kd_cu_seg;
size_t kd_cu_norm_ws_bytes(int64_t n);
int kd_cu_grad_norm2(float *out, const float *g, int64_t n, void *ws, kd_cu *cu);
int kd_cu_adamw(float *p, kd_bf16 *p16, const float *g, float *m, float *v, const kd_cu_seg *segs_dev,
                int nseg, int64_t n, float lr, float beta1, float beta2, float eps, int64_t step,
                const float *norm2_dev, float max_norm, kd_cu *cu);

/* ---- MoE routing and permutation (core/cuda/moe.cu) -------------------------------------
 * The teacher's router (route_ in teacher/model.c) on the GPU, and the
 * grouping of token rows by expert, with no host sync.
 * kd_cu_moe_route: logits (N, E) fp32, bias (E) or NULL -> idx (N, k) int32,
 * wt (N, k) fp32: the experts of each token, best first, and their weights,
 * as route_ computes them (scores by sigmoid, or softmax in double; the group
 * limit for group-limited greedy (V2: a group's best) and noaux_tc (V3: the
 * sum of its top two biased scores); ties to the lower id; then V3's
 * normalisation and scaling, or V2's). E <= KD_CU_MOE_MAXE, k <= KD_CU_MOE_MAXK.
 * kd_cu_moe_permute: a stable counting sort of the N*k assignments by expert:
 * counts (E), off (E + 1) with expert e's slots at off[e] .. off[e + 1],
 * src (N*k): slot -> assignment t*k + r (tokens ascending within an expert),
 * dst (N*k): its inverse.
 * kd_cu_moe_gather: xin (N*k, C) bf16, slot j = row src[j] / k of x (N, C).
 * kd_cu_moe_combine: out (N, C) bf16 = the fp32 sum over token t's
 * assignments, in ascending expert order, of wt * y[dst] (y (N*k, C) bf16: the
 * experts' outputs by slot), plus add (N, C) bf16 (the shared experts) if not
 * NULL, rounded once. Then kd_cu_moe_gemm below runs the experts. */
#define KD_CU_MOE_MAXE 512
#define KD_CU_MOE_MAXK 16
enum { KD_CU_TOPK_GREEDY = 0, KD_CU_TOPK_GROUP_LIMITED, KD_CU_TOPK_NOAUX_TC }; /* as kd_topk_method */
typedef struct kd_cu_route {
    int E, k;            /* routed experts, experts per token */
    int G, topk_group;   /* groups (0 or 1: none), groups kept */
    int method;          /* KD_CU_TOPK_* */
    int sigmoid;         /* scores by sigmoid (V3), else softmax (V2) */
    int v3;              /* V3's weight rule: normalise (norm_topk_prob), then scale */
    int norm_topk_prob;
    float scaling;       /* routed_scaling_factor */
} kd_cu_route;
int kd_cu_moe_route(int32_t *idx, float *wt, const float *logits, const float *bias, int64_t N,
                    const kd_cu_route *rc, kd_cu *cu);
int kd_cu_moe_permute(int32_t *src, int32_t *dst, int32_t *off, int32_t *counts, const int32_t *idx, int64_t N,
                      int k, int E, kd_cu *cu);
int kd_cu_moe_gather(kd_bf16 *xin, const kd_bf16 *x, const int32_t *src, int64_t N, int k, int64_t C, kd_cu *cu);
int kd_cu_moe_combine(kd_bf16 *out, const kd_bf16 *y, const int32_t *dst, const int32_t *idx, const float *wt,
                      const kd_bf16 *add, int64_t N, int k, int64_t C, kd_cu *cu);
/* Grouped GEMM over the permuted rows: y (NK, N) bf16 = x (NK, K) W_e^T for
 * the rows off[e] .. off[e + 1] of each expert e, W (E, N, K) bf16 (each
 * expert's weight as HF stores it, out x in), fp32 accumulation. off on the
 * device (kd_cu_moe_permute's), so one launch whatever the routing. K % 8 == 0. */
int kd_cu_moe_gemm(kd_bf16 *y, const kd_bf16 *x, const kd_bf16 *w, const int32_t *off, int E, int64_t NK, int64_t N,
                   int64_t K, kd_cu *cu);
/* The same with the kernel chosen: path 1 tiles of 64 rows x 64 features
 * (prefill), path 2 one block per expert and 128 features streaming the
 * weight once per 32 rows through a 4-stage shared-memory pipeline, experts
 * without rows skipped, path 3 path 2's blocks with each warp's weight rows
 * streamed into registers (K % 128 == 0, N % 16 == 0; else path 2 when not
 * asked for by name); 0 = path 3 when NK <= 32 E (decode), else 1 (what
 * kd_cu_moe_gemm does). */
int kd_cu_moe_gemm_path(kd_bf16 *y, const kd_bf16 *x, const kd_bf16 *w, const int32_t *off, int E, int64_t NK,
                        int64_t N, int64_t K, int path, kd_cu *cu);
/* FP8 experts, W8A8 as DeepSeek-V3 does it:
 * kd_cu_fp8_quantize: w (E, N, K) bf16 -> w8 e4m3 bytes and ws (E, ceil(N/128),
 * ceil(K/128)) fp32 with w ~ w8 * ws per 128 x 128 block (DeepSeek's
 * weight_scale_inv layout; scale = the block's amax / 448).
 * kd_cu_fp8_quantize_rows: x (rows, K) bf16 -> x8 e4m3 and xs (rows,
 * ceil(K/128)) fp32, one scale per row per 128 channels (amax / 448).
 * kd_cu_moe_gemm_fp8: path 2 of kd_cu_moe_gemm on such rows and weights: e4m3
 * MMAs (m16n8k32) per 128 k, each group's sums added to the fp32 total times
 * the weight block's scale and the row's; any row count (grid.z splits the
 * passes of 32 rows when experts have more). K a multiple of 16. */
int kd_cu_fp8_quantize(uint8_t *w8, float *ws, const kd_bf16 *w, int64_t E, int64_t N, int64_t K, kd_cu *cu);
int kd_cu_fp8_quantize_rows(uint8_t *x8, float *xs, const kd_bf16 *x, int64_t rows, int64_t K, kd_cu *cu);
int kd_cu_moe_gemm_fp8(kd_bf16 *y, const uint8_t *x8, const float *xs, const uint8_t *w, const float *ws,
                       const int32_t *off, int E, int64_t NK, int64_t N, int64_t K, kd_cu *cu);
/* The same with the kernel chosen: 2 the shared-memory pipeline above (any
 * rows), 3 each warp's weight rows streamed into registers, four 128-k groups
 * in flight (few rows per expert; K % 128 == 0, N % 16 == 0; not yet run on a
 * GPU), 0 = 2 (what kd_cu_moe_gemm_fp8 does). */
int kd_cu_moe_gemm_fp8_path(kd_bf16 *y, const uint8_t *x8, const float *xs, const uint8_t *w, const float *ws,
                            const int32_t *off, int E, int64_t NK, int64_t N, int64_t K, int path, kd_cu *cu);

/* ---- MLA decode attention over a paged latent cache (core/cuda/mla.cu) --------------------
 * One new query per sequence, absorbed form: q (S, H, R + Dr) bf16 holds each
 * head's [W_UK^T q_nope | q_rope]; cache (nblocks, block, R + Dr) bf16 is one
 * layer's pool of [normalised latent | rotated rope key] rows; table
 * (S, max_blocks) int32 maps sequence s's position t to row
 * table[s][t / block] * block + t % block; lens (S) int32 >= 1: the query sees
 * positions 0 .. lens[s] - 1 (itself included). out (S, H, R) fp32: softmax(
 * scale q k^T) over those rows times their latent prefix (W_UV comes after).
 * R a multiple of 32 up to 512, R + Dr a multiple of 16. kd_attention_cached
 * on the gathered rows is the reference. */
int kd_cu_mla_decode(float *out, const kd_bf16 *q, const kd_bf16 *cache, const int32_t *table, const int32_t *lens,
                     int64_t S, int64_t H, int64_t R, int64_t Dr, int64_t block, int64_t max_blocks, float scale,
                     kd_cu *cu);
/* The same with each sequence's keys split into `splits` runs (1 .. 64) over
 * more CTAs, then combined (few sequences, long contexts): work holds
 * splits * S * H * (R + 2) floats. splits 1 is kd_cu_mla_decode (work unused). */
int kd_cu_mla_decode_split(float *out, const kd_bf16 *q, const kd_bf16 *cache, const int32_t *table,
                           const int32_t *lens, int64_t S, int64_t H, int64_t R, int64_t Dr, int64_t block,
                           int64_t max_blocks, float scale, int splits, float *work, kd_cu *cu);

/* ---- the teacher's other pieces (core/cuda/mla_ops.cu) --------------------------------------
 * kd_cu_rmsnorm_rows: out (N, C, row stride ldo) = rmsnorm(x (row stride ldx)) * w.
 * kd_cu_mla_rope: rotate the Dr values of each (token n, head h) of src at
 *   src + n sn + h sh into dst (dn, dh likewise; dst may be src) at the angle
 *   of pos[n] (cos, sin (P, Dr/2) fp32); interleave: the values come as pairs
 *   (2i, 2i+1) and leave as halves (i, i + Dr/2), as DeepSeek-V3's rope.
 * kd_cu_mla_kv_write: token n's ckv row (R + Dr, stride ld) -> cache row
 *   slot[n] (R + Dr wide): [rmsnorm(c) * w | rope(kr) at pos[n]].
 * kd_cu_rows_gather: dst row m (W elements, stride ldd) = src row idx[m]
 *   (stride lds), zeros where idx[m] < 0.
 * kd_cu_mla_prefill_qkv: the decompressed attention's inputs for M packed
 *   positions: Q (M, H, Dkp) from the new tokens' q (N, H, Dn + Dr) (row
 *   qrow[m], zeros when < 0), K (M, H, Dkp) = [kv nope | lat's rope key],
 *   V (M, H, Dvp), from kv (M, H, Dn + Dv) = kv_b(latent) and lat (M, R + Dr);
 *   zero-padded to Dkp >= Dn + Dr, Dvp >= Dv.
 * kd_cu_router_logits: out (N, E) fp32 = x (N, C) bf16 times w (E, C) fp32.
 * kd_cu_fill_normal: xb (bf16) or xf (fp32, when xb is NULL) ~ normal(0, std)
 *   from a hash of (seed, index); kd_cu_fill_bf16: a constant.
 * kd_cu_copy: device to device, on the stream. */
int kd_cu_rmsnorm_rows(kd_bf16 *out, int64_t ldo, const kd_bf16 *x, int64_t ldx, const kd_bf16 *w, int64_t N,
                       int64_t C, float eps, kd_cu *cu);
int kd_cu_mla_rope(kd_bf16 *dst, int64_t dn, int64_t dh, const kd_bf16 *src, int64_t sn, int64_t sh, int64_t N,
                   int64_t H, int64_t Dr, const int32_t *pos, const float *cos_, const float *sin_, int interleave,
                   kd_cu *cu);
int kd_cu_mla_kv_write(kd_bf16 *cache, const int32_t *slot, const kd_bf16 *ckv, int64_t ld, const kd_bf16 *w,
                       int64_t N, int64_t R, int64_t Dr, float eps, const int32_t *pos, const float *cos_,
                       const float *sin_, int interleave, kd_cu *cu);
int kd_cu_rows_gather(kd_bf16 *dst, int64_t ldd, const kd_bf16 *src, int64_t lds, const int32_t *idx, int64_t M,
                      int64_t W, kd_cu *cu);
int kd_cu_mla_prefill_qkv(kd_bf16 *Q, kd_bf16 *K, kd_bf16 *V, int64_t Dkp, int64_t Dvp, const kd_bf16 *q,
                          const int32_t *qrow, const kd_bf16 *kv, const kd_bf16 *lat, int64_t M, int64_t H,
                          int64_t Dn, int64_t Dr, int64_t Dv, int64_t R, kd_cu *cu);
int kd_cu_router_logits(float *out, const kd_bf16 *x, const float *w, int64_t N, int64_t E, int64_t C, kd_cu *cu);
int kd_cu_fill_normal(kd_bf16 *xb, float *xf, int64_t n, float std, uint64_t seed, kd_cu *cu);
int kd_cu_fill_bf16(kd_bf16 *x, int64_t n, float v, kd_cu *cu);
int kd_cu_copy(void *dst, const void *src, size_t bytes, kd_cu *cu);

/* ---- graphs and pinned memory (core/cuda/graph.cu) -------------------------------------------
 * kd_cu_host_alloc / kd_cu_host_free: pinned host memory. kd_cu_h2d_async:
 * a copy queued on the stream that reads src when it runs (src pinned, and
 * unchanged until then; inside a capture the graph reads it at each replay).
 * kd_cu_capture_begin / _end: record what is queued on cu's stream in between
 * (nothing runs) into an executable graph; kd_cu_graph_launch replays it. */
int kd_cu_host_alloc(void **p, size_t bytes);
void kd_cu_host_free(void *p);
int kd_cu_h2d_async(void *dst, const void *src, size_t bytes, kd_cu *cu);
int kd_cu_capture_begin(kd_cu *cu);
int kd_cu_capture_end(kd_cu *cu, void **exec);
int kd_cu_graph_launch(void *exec, kd_cu *cu);
void kd_cu_graph_free(void *exec);

#ifdef __cplusplus
}
#endif
#endif
