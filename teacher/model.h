/* model.h - the teacher: DeepSeek-V3/R1 and DeepSeek-V2 (MLA attention,
 * routed + shared experts) on the CPU reference ops, for inference.
 *
 * Legend: C hidden, L layers, H heads, Q q_lora_rank (0 = a plain q_proj),
 * R kv_lora_rank, Dn qk_nope_head_dim, Dr qk_rope_head_dim, Dv v_head_dim,
 * E routed experts, k experts per token, V vocab.
 *
 * The KV cache is MLA's: per layer and position one row [c | kr] of R + Dr
 * floats, the normalised kv latent and the rotated decoupled rope key. Two
 * ways to attend over it, tested against each other:
 *   - decompressed: kv_b_proj expands every cached latent into per-head
 *     keys (Dn) and values (Dv); used for prefill;
 *   - absorbed: W_UK (kv_b_proj's key rows) is folded into the query, so the
 *     query attends the latents directly (one shared "kv head" of R + Dr),
 *     and W_UV (its value rows) is applied to the attended latent; used for
 *     decode, where it reads R + Dr floats per cached token instead of
 *     H (Dn + Dr + Dv).
 *
 * Weights: F32, BF16, F16, and FP8 checkpoints (F8_E4M3 with block scales
 * "<name>_scale_inv", per quantization_config) dequantised to fp32 at load.
 * The multi-token-prediction layer (num_nextn_predict_layers) is skipped with
 * a log line. Routing follows transformers: V3 sigmoid scores, the
 * e_score_correction_bias only to choose, group-limited top-k (each group
 * scored by the sum of its top-2 biased scores, the other groups masked to
 * -inf), weights from the unbiased scores, normalised when norm_topk_prob,
 * times routed_scaling_factor; V2 softmax scores, greedy or group-limited
 * greedy (groups scored by their best expert), normalised when top-k > 1 and
 * norm_topk_prob, else times routed_scaling_factor.
 */
#ifndef KD_TEACHER_MODEL_H
#define KD_TEACHER_MODEL_H

#include <stdint.h>

#include "core/hfconfig.h"
#include "core/kvpool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_teacher kd_teacher;

/* Load DIR (config.json + weights). The folder is checked first as `distill
 * inspect` checks it, so a missing tensor, a wrong shape or an unsupported
 * dtype names the tensor before anything is allocated. Errors: those of
 * kd_inspect_model, KD_E_UNSUPPORTED (a model_type other than deepseek_v3 /
 * deepseek_v2, or a dense model: use the student), KD_E_NOMEM. */
int kd_teacher_load(const char *dir, kd_teacher **out);
void kd_teacher_free(kd_teacher *m);
const kd_model_config *kd_teacher_config(const kd_teacher *m);
/* The fp32 data of a manifest tensor by its HF name (FP8 dequantised), and
 * its element count; NULL (and 0) when the model has no such tensor. */
const float *kd_teacher_weight(const kd_teacher *m, const char *name, size_t *numel);

/* Write out_dir/config.json (cfg_dir's) and out_dir/model.safetensors with
 * random F32 weights of that config: normal(0, std) per fixed chunk of its
 * own stream (so the thread count does not matter), norms 1, correction
 * biases 0. For tests and benchmarks in real shapes. Errors:
 * KD_E_UNSUPPORTED (not deepseek), KD_E_IO, KD_E_NOMEM. */
int kd_teacher_write_random(const char *cfg_dir, const char *out_dir, uint64_t seed, double std);

/* The softmax scale of attention: qk_head_dim^-1/2, times yarn's
 * mscale(factor, mscale_all_dim)^2 when the rope is yarn with mscale_all_dim. */
float kd_teacher_softmax_scale(const kd_teacher *m);

/* One sequence's latent cache for up to max_T positions. Errors: KD_E_RANGE
 * (max_T <= 0 or past max_position_embeddings), KD_E_NOMEM. */
typedef struct kd_mla_cache kd_mla_cache;
int kd_mla_cache_new(const kd_teacher *m, int64_t max_T, kd_mla_cache **out);
void kd_mla_cache_free(kd_mla_cache *c);
int64_t kd_mla_cache_len(const kd_mla_cache *c);

typedef enum { KD_MLA_DECOMPRESSED = 0, KD_MLA_ABSORBED } kd_mla_mode;

/* Run n new tokens at positions len .. len+n-1 of the cache (causal over
 * everything cached and each other) and append their latents. logits (n, V)
 * receives every new position's logits when all_logits is set, else (V) the
 * last one's; NULL for none. Errors: KD_E_RANGE (an id outside [0, V), the
 * cache would overflow; then the cache is unchanged), KD_E_NOMEM. */
int kd_teacher_extend(kd_teacher *m, kd_mla_cache *c, const int64_t *ids, int64_t n,
                      kd_mla_mode mode, int all_logits, float *logits);

/* ---- the paged latent cache (core/kvpool.h) ----------------------------------------
 * Each position's row is the normalised latent and the rotated rope key
 * (kv_lora_rank + qk_rope_head_dim floats, every layer); the pool's rope
 * table covers max_position_embeddings. */
int kd_teacher_kvpool_new(const kd_teacher *m, int64_t nblocks, int64_t block, kd_kvpool **out);

/* One batched step: sequence i takes nn[i] new tokens (ids holds them all,
 * sequence after sequence), at positions len .. len+nn[i]-1, attending over
 * its own cache; every matmul and the experts run over all new tokens at
 * once. logits receives, per sequence, the last new position's logits
 * (nseq, V), or every new position's (sum nn, V) with all_logits; NULL for
 * none. Errors: KD_E_RANGE (an id outside [0, V), a sequence past the
 * context, "kv pool full" when the blocks needed exceed the free ones: then
 * nothing has changed), KD_E_NOMEM. */
int kd_teacher_step(kd_teacher *m, kd_kvpool *pool, kd_kvseq *const *seqs, int nseq, const int64_t *ids,
                    const int64_t *nn, kd_mla_mode mode, int all_logits, float *logits);

/* Routes given from outside, for comparing with an engine that computes in
 * lower precision (tests: a near-tie between experts' scores may go either
 * way in bf16, and one expert changed moves a row's logits far more than
 * rounding does). While set, the MoE layers of the next kd_teacher_step calls
 * send token n (of the step's new tokens) in layer l to experts
 * routes[(l * n_tokens + n) * k + r], r < k (dense layers' slices are
 * skipped), the weights still from this model's scores (an expert id outside
 * [0, E): KD_E_RANGE from the step); NULL routes choose again. kd_teacher_route_stats: how many given routes differed from this
 * model's own choice since the last call, and the largest gap among those
 * (in choice-score units: how much better this model's choice scored; for an
 * expert in a group this model left out, the gap between the groups' scores);
 * both reset. */
void kd_teacher_force_routes(kd_teacher *m, const int32_t *routes);
void kd_teacher_route_stats(kd_teacher *m, int64_t *differ, double *worst_gap);

/* The logits (T, V) of one sequence from position 0 (a fresh cache,
 * decompressed prefill). */
int kd_teacher_logits(kd_teacher *m, const int64_t *ids, int64_t T, float *logits);

/* Greedy decoding as kd_student_generate_greedy (HF generate with
 * min_new_tokens = max_new_tokens = N; the suppressed ids' logits are -inf):
 * prefill decompressed, then decode in `mode`. out (P + N); step_logits
 * (N, V) or NULL. */
int kd_teacher_generate_greedy(kd_teacher *m, const int64_t *prompt, int64_t P, int64_t N,
                               const int64_t *suppress, int nsuppress, kd_mla_mode mode,
                               int64_t *out, float *step_logits);

#ifdef __cplusplus
}
#endif
#endif
