/* model.h - the dense student: a Qwen2 / Llama decoder on the CPU reference
 * ops (core/ops.h), forward, backward and AdamW, fp32 throughout.
 *
 * Legend: B batch, T tokens, N = B*T, V vocab, C hidden, L layers, H query
 * heads, K kv heads, D head dim, F mlp width.
 *
 * Lifetimes (llm.c style): one allocation each for the parameters, the
 * gradients, the AdamW moments (on the first step) and the activations (on
 * the first forward, grown when B*T grows). Parameter and gradient tensors
 * are addressed by their HF names through kd_student_tensor.
 *
 * Supported: model_type qwen2 and llama, tied or untied embeddings, q/k/v
 * (and Llama o) biases, Llama mlp_bias, rope default / linear / llama3 / yarn.
 */
#ifndef KD_STUDENT_MODEL_H
#define KD_STUDENT_MODEL_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "core/hfconfig.h"
#include "core/kvpool.h"
#include "core/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_student kd_student; /* opaque */

/* Load a dense model from a HF folder (config.json + model.safetensors or a
 * sharded index). F32, BF16, F16 and block-scaled FP8 weights become fp32. Errors:
 * KD_E_NOTFOUND (folder, file or a tensor of the manifest missing),
 * KD_E_UNSUPPORTED (not qwen2/llama, an unsupported rope), KD_E_SHAPE (a
 * tensor's shape differs from the config), KD_E_DTYPE, KD_E_FORMAT, KD_E_IO,
 * KD_E_NOMEM. On error *out is NULL. Free with kd_student_free. */
int kd_student_load(const char *dir, kd_student **out);
void kd_student_free(kd_student *m);

/* A model of DIR/config.json with random weights (for tests and benchmarks
 * in real shapes): every matrix and bias normal(0, std) from `seed`, norm
 * weights 1. Errors as kd_student_load, without the weight file ones. */
int kd_student_init(const char *dir, uint64_t seed, double std, kd_student **out);

/* The config the model was built from; valid until kd_student_free. */
const kd_model_config *kd_student_config(const kd_student *m);

/* Forward B rows of T tokens (ids (B, T), each in [0, V)). pos (B, T) or
 * NULL: packed rows, several documents per row, each with positions 0, 1, 2,
 * ... (a 0 starts the next one); every document attends only to itself and
 * takes rope angles from its own positions, exactly as if it ran alone. NULL
 * is one document per row at positions 0..T-1. If logits is not NULL it
 * receives the logits (B, T, V). The activations are kept for a following
 * backward. Errors: KD_E_RANGE (an id out of range, T beyond max_position,
 * positions that do not count up by one from 0), KD_E_NOMEM. */
int kd_student_forward(kd_student *m, const int64_t *ids, const int64_t *pos, int64_t B, int64_t T,
                       float *logits);

/* The training step's building block: forward, the HF causal-LM loss and
 * the backward, ACCUMULATING into the gradients (call kd_student_zero_grad
 * at the start of an optimizer step). labels (B, T) are NOT shifted:
 * position t is scored against labels[b, t+1]; -100 is ignored, and so is
 * every position whose next token starts a new document of a packed row
 * (pos[b, t+1] == 0), and the last of each row. The gradient added is that
 * of scale * (sum of the counted token losses): scale = 1 / (the counted
 * targets of the whole optimizer step) makes gradient accumulation over
 * micro-batches equal one big batch. *loss_sum (may be NULL) receives the sum
 * of the token losses, *count (may be NULL) the counted targets. With tied
 * embeddings the one gradient of model.embed_tokens.weight includes the
 * lm_head contribution. Errors as kd_student_forward, and KD_E_RANGE for a
 * label outside [0, V). */
int kd_student_backward(kd_student *m, const int64_t *ids, const int64_t *labels,
                        const int64_t *pos, int64_t B, int64_t T, double scale, double *loss_sum,
                        int64_t *count);

/* The same loss without the backward (evaluation): *loss_sum the sum of the
 * counted token losses, *count (may be NULL) how many. Errors as
 * kd_student_backward. */
int kd_student_loss(kd_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                    int64_t B, int64_t T, double *loss_sum, int64_t *count);

/* The targets kd_student_backward would count for these labels and pos. */
int64_t kd_student_count_targets(const int64_t *labels, const int64_t *pos, int64_t B, int64_t T);

/* Zero every gradient. */
void kd_student_zero_grad(kd_student *m);

/* HF's model(ids, labels=labels).loss and its backward, alone: zero the
 * gradients, then kd_student_backward with scale 1/count; *loss is the mean
 * (0 when nothing counts). Errors as kd_student_backward. */
int kd_student_loss_backward(kd_student *m, const int64_t *ids, const int64_t *labels, int64_t B,
                             int64_t T, float *loss);

/* One torch.optim.AdamW step with the current gradients. Decoupled weight
 * decay on every parameter, or, with no_decay_norm_bias, on all but the norm
 * weights and the biases (the usual second param group). The step count is
 * kept in the model and starts at 1. Errors: KD_E_NOMEM (the moments). */
int kd_student_adamw_step(kd_student *m, const kd_adamw *hp, int no_decay_norm_bias);

/* The global L2 norm of the gradients (summed in double), and scaling them
 * in place (for clipping: torch's clip_grad_norm_ multiplies by
 * max_norm / (norm + 1e-6) when that is below 1). */
double kd_student_grad_norm(const kd_student *m);
void kd_student_scale_grads(kd_student *m, float s);

/* The optimizer step count (0 before the first step), and setting it when a
 * checkpoint is restored (allocates the moments if step > 0). */
int64_t kd_student_step(const kd_student *m);
int kd_student_set_step(kd_student *m, int64_t step);

/* With DISTILL_PROFILE=1 in the environment, the forward, backward and
 * AdamW time each kind of op; this prints the totals (ms and share) to out,
 * and resets them when asked. Without it, one line saying how to enable it. */
void kd_student_profile(FILE *out, int reset);

/* Elements in all parameters (tied embeddings counted once). */
size_t kd_student_numel(const kd_student *m);

/* A parameter (which = 0), its gradient (1), or its AdamW first (2) or
 * second (3) moment, by HF name, e.g. "model.layers.0.self_attn.q_proj.weight".
 * *data points into the model and stays valid until kd_student_free; *numel
 * receives its element count. Asking for a moment allocates the moments
 * (zero) if no step has run. Errors: KD_E_NOTFOUND, KD_E_NOMEM. */
int kd_student_tensor(kd_student *m, const char *name, int which, float **data, size_t *numel);

/* The parameters in manifest order: the count, and the i-th HF name. */
size_t kd_student_param_count(const kd_student *m);
const char *kd_student_param_name(const kd_student *m, size_t i);

/* ---- inference over the paged KV cache (core/kvpool.h) --------------------------
 * Each position's row is its keys (after rope) and its values, every layer:
 * [k (K * D) | v (K * D)]. The pool's rope table covers
 * max_position_embeddings. */
int kd_student_kvpool_new(const kd_student *m, int64_t nblocks, int64_t block, kd_kvpool **out);

/* One batched step, as kd_teacher_step: sequence i takes nn[i] new tokens
 * (ids holds them all, sequence after sequence) at positions len ..
 * len+nn[i]-1, attending over its own cache; every matmul runs over all new
 * tokens at once. logits receives the last new position's logits per
 * sequence (nseq, V), or every new position's (sum nn, V) with all_logits;
 * NULL for none. Does not touch the training activations. Errors: KD_E_RANGE
 * (an id outside [0, V), a sequence past the context, "kv pool full": then
 * nothing has changed), KD_E_NOMEM. */
int kd_student_step_paged(kd_student *m, kd_kvpool *pool, kd_kvseq *const *seqs, int nseq, const int64_t *ids,
                          const int64_t *nn, int all_logits, float *logits);

/* One sequence's cache of up to max_T positions (a pool of its own). */
typedef struct kd_kvcache kd_kvcache; /* opaque */

/* A cache for model m of max_T positions, empty. Errors: KD_E_RANGE (max_T
 * <= 0 or beyond max_position_embeddings), KD_E_NOMEM. Free with
 * kd_kvcache_free; use it only with the model it was made for. */
int kd_kvcache_new(const kd_student *m, int64_t max_T, kd_kvcache **out);
void kd_kvcache_free(kd_kvcache *kv);
/* Positions filled so far. */
int64_t kd_kvcache_len(const kd_kvcache *kv);

/* Run n new tokens (each in [0, V)) at positions len..len+n-1 of the cache,
 * attending over everything cached before them and each other (causal), and
 * append their keys and values. With n = the prompt length this is the
 * prefill; with n = 1 a decode step. If logits is not NULL it receives the
 * logits (V) of the LAST new position. Does not touch the training
 * activations. Errors: KD_E_RANGE (ids out of range, the cache would
 * overflow; the cache is unchanged), KD_E_NOMEM. */
int kd_student_extend(kd_student *m, kd_kvcache *kv, const int64_t *ids, int64_t n, float *logits);

/* Greedy decoding as HF generate(do_sample=False, min_new_tokens=N,
 * max_new_tokens=N): prefill the P prompt tokens, then N times set the logits
 * of the nsuppress ids in `suppress` (the EOS ids; out-of-range ids are
 * ignored) to -inf, take the first argmax, and feed it back. out (P + N)
 * receives the prompt followed by the N tokens. If step_logits is not NULL it
 * receives (N, V): row i is the logits that chose token P + i, before
 * suppression. Errors as kd_kvcache_new and kd_student_extend. */
int kd_student_generate_greedy(kd_student *m, const int64_t *prompt, int64_t P, int64_t N,
                               const int64_t *suppress, int nsuppress, int64_t *out,
                               float *step_logits);

/* The eos_token_id of DIR/generation_config.json (an integer, a list, null
 * or absent) into ids (at most max); *n receives the count, 0 when the file
 * or the key is absent or null. Errors: KD_E_FORMAT (not JSON), KD_E_CONFIG
 * (eos_token_id of another type, or more than max ids). */
int kd_generation_eos(const char *dir, int64_t *ids, int max, int *n);

#ifdef __cplusplus
}
#endif
#endif
