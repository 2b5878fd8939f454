/* cuda.h - the teacher (DeepSeek-V3/V2) forward on one GPU, for generation.
 *
 * The model of teacher/model.h, layer for layer, on the CUDA ops of
 * core/cuda/cuops.h: bf16 weights, activations and latent cache, fp32
 * accumulation, the router's logits in fp32 (as transformers computes them).
 * Where the GPU wants it, projections are fused: q_a with kv_a (both read the
 * normed input) and each expert's gate with its up (one grouped GEMM).
 *
 *   prefill (decompressed): the new tokens' latents go into the cache, then
 *     each sequence's whole latent history is gathered, expanded by kv_b and
 *     attended by the fused causal attention over the packed sequences (a
 *     sequence with cached positions gets zero queries there, dropped after);
 *   decode (absorbed, one new token per sequence): W_UK folded into the
 *     query by a per-head batched GEMM, kd_cu_mla_decode over the paged
 *     latents through the block tables, W_UV likewise;
 *   MoE: the router on the GPU, a stable permutation by expert, one grouped
 *     GEMM for every expert's gate/up and one for down, the weighted combine
 *     and the shared experts: no host loop over experts, no host sync.
 *
 * The cache lives on the GPU: (L, nblocks + 1, block, R + Dr) bf16 (the last
 * block of each layer is where the padding rows of a graph's bucket write). Its blocks
 * are handed out by a kd_kvpool of block ids only (kd_kvpool_new_index), so
 * the scheduler's tables, forks and copy-on-write (copied on the GPU) are the
 * CPU engine's. Memory plan at creation: weights, then the work buffers of a
 * step of max_tokens new tokens, then the cache takes the rest (less a
 * reserve), and its capacity in tokens is logged.
 *
 * In a build without CUDA every function returns KD_E_CUDA.
 */
#ifndef KD_TEACHER_CUDA_H
#define KD_TEACHER_CUDA_H

#include <stdint.h>

#include "core/hfconfig.h"
#include "core/kvpool.h"
#include "teacher/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_cu_teacher kd_cu_teacher;

typedef struct kd_cu_teacher_opts {
    int device;
    int64_t max_tokens;  /* most new tokens of one step, and most positions a prefill step packs */
    int64_t max_seqs;    /* most sequences of one step (rows of the logits buffer) */
    int64_t block;       /* positions per cache block; 0 = 16 */
    int64_t kv_blocks;   /* cache blocks; 0 = what the device memory holds after the rest */
    double reserve_gib;  /* left free on the device when kv_blocks is 0; 0 = 2 GiB */
    int graphs;          /* decode steps replayed from CUDA graphs, one per bucket of rows (powers of
                            two up to max_seqs; padding rows write a trash block), recorded on first use */
    int record_routes;   /* keep each step's routing for kd_cu_teacher_routes (tests) */
    int mla_splits;      /* decode attention: split each sequence's keys into up to this many runs
                            (kd_cu_mla_decode_split) while a step's rows leave the GPU's SMs idle;
                            0 = up to 8 (the default), 1 = whole */
    int fp8_experts;     /* routed experts in e4m3 with 128 x 128 block scales, quantised at load
                            (kd_cu_fp8_quantize); their input rows quantised per token per 128
                            channels (kd_cu_fp8_quantize_rows), e4m3 MMAs (kd_cu_moe_gemm_fp8) */
} kd_cu_teacher_opts;

/* From a loaded CPU teacher (its fp32 weights, rounded to bf16). */
int kd_cu_teacher_new(const kd_teacher *cpu, const kd_cu_teacher_opts *o, kd_cu_teacher **out);
/* Random weights of config c made on the GPU (normal(0, std), norms 1,
 * correction biases 0): benchmarks in real shapes without a checkpoint. */
int kd_cu_teacher_new_random(const kd_model_config *c, const kd_cu_teacher_opts *o, uint64_t seed, double std,
                             kd_cu_teacher **out);
void kd_cu_teacher_free(kd_cu_teacher *m);
const kd_model_config *kd_cu_teacher_config(const kd_cu_teacher *m);

/* The pool whose block ids index the GPU cache; sequences of steps belong to it. */
kd_kvpool *kd_cu_teacher_pool(kd_cu_teacher *m);
/* Cache capacity in positions (blocks x block), and device bytes by kind. */
int64_t kd_cu_teacher_cache_tokens(const kd_cu_teacher *m);
typedef struct kd_cu_teacher_mem {
    size_t weights, work, cache;
} kd_cu_teacher_mem;
void kd_cu_teacher_mem_get(const kd_cu_teacher *m, kd_cu_teacher_mem *out);

/* One batched step, as kd_teacher_step: sequence i takes nn[i] new tokens at
 * positions len .. len + nn[i] - 1. Absorbed mode with one new token per
 * sequence is a decode step; anything else is a decompressed prefill. The
 * logits of each sequence's last new token (or of every new token with
 * all_logits) are made on the device (kd_cu_teacher_logits_dev) and, when
 * logits is not NULL, copied to it (fp32, (rows, V)). Errors as
 * kd_teacher_step, KD_E_RANGE when a step exceeds max_tokens / max_seqs (or
 * all_logits without a host buffer), KD_E_CUDA. */
int kd_cu_teacher_step(kd_cu_teacher *m, kd_kvseq *const *seqs, int nseq, const int64_t *ids, const int64_t *nn,
                       kd_mla_mode mode, int all_logits, float *logits);
/* The last step's logits on the device: (rows, V) fp32, rows = its sequences. */
const float *kd_cu_teacher_logits_dev(const kd_cu_teacher *m);
/* The experts the last step's router chose (opts.record_routes), in
 * kd_teacher_force_routes' layout: routes[(l * n + t) * k + r] for the step's
 * n new tokens (the dense layers' slices are left as they are). KD_E_RANGE
 * when not recording or n is not the last step's token count. */
int kd_cu_teacher_routes(kd_cu_teacher *m, int32_t *routes, int64_t n);
/* The CUDA context (stream) the teacher runs on, for ops queued after a step. */
struct kd_cu *kd_cu_teacher_cu(kd_cu_teacher *m);

/* The logits (T, V) of one sequence from position 0, and greedy decoding as
 * kd_teacher_generate_greedy (prefill decompressed, decode absorbed): for
 * parity. */
int kd_cu_teacher_logits(kd_cu_teacher *m, const int64_t *ids, int64_t T, float *logits);
int kd_cu_teacher_generate_greedy(kd_cu_teacher *m, const int64_t *prompt, int64_t P, int64_t N,
                                  const int64_t *suppress, int nsuppress, int64_t *out, float *step_logits);

/* GPU time by kind of op (DISTILL_PROFILE in `bench generate`). */
int kd_cu_teacher_prof_on(kd_cu_teacher *m);
int kd_cu_teacher_prof_report(kd_cu_teacher *m, void *file);

#ifdef __cplusplus
}
#endif
#endif
