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
 * (and Llama o) biases, Llama mlp_bias, rope default / linear / llama3.
 */
#ifndef KD_STUDENT_MODEL_H
#define KD_STUDENT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/hfconfig.h"
#include "core/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_student kd_student; /* opaque */

/* Load a dense model from a HF folder (config.json + model.safetensors or a
 * sharded index). F32, BF16 and F16 weights are converted to fp32. Errors:
 * KD_E_NOTFOUND (folder, file or a tensor of the manifest missing),
 * KD_E_UNSUPPORTED (not qwen2/llama, an unsupported rope), KD_E_SHAPE (a
 * tensor's shape differs from the config), KD_E_DTYPE, KD_E_FORMAT, KD_E_IO,
 * KD_E_NOMEM. On error *out is NULL. Free with kd_student_free. */
int kd_student_load(const char *dir, kd_student **out);
void kd_student_free(kd_student *m);

/* The config the model was built from; valid until kd_student_free. */
const kd_model_config *kd_student_config(const kd_student *m);

/* Forward B sequences of T tokens (ids (B, T), each in [0, V)). If logits
 * is not NULL it receives the logits (B, T, V). The activations are kept for
 * a following backward. Errors: KD_E_RANGE (an id out of range, T beyond
 * max_position), KD_E_NOMEM. */
int kd_student_forward(kd_student *m, const int64_t *ids, int64_t B, int64_t T, float *logits);

/* Forward, the HF causal-LM loss and the backward. labels (B, T) are NOT
 * shifted: position t is scored against labels[b, t+1]; -100 is ignored.
 * *loss receives the mean over counted positions. The gradients are
 * overwritten (zeroed first), not accumulated across calls. With tied
 * embeddings the one gradient of model.embed_tokens.weight includes the
 * lm_head contribution. Errors as kd_student_forward. */
int kd_student_loss_backward(kd_student *m, const int64_t *ids, const int64_t *labels, int64_t B,
                             int64_t T, float *loss);

/* One torch.optim.AdamW step on every parameter with the current gradients
 * (decoupled weight decay on all of them). The step count is kept in the
 * model and starts at 1. Errors: KD_E_NOMEM (allocating the moments). */
int kd_student_adamw_step(kd_student *m, const kd_adamw *hp);

/* A parameter (which = 0) or its gradient (which = 1) by HF name, e.g.
 * "model.layers.0.self_attn.q_proj.weight". *data points into the model and
 * stays valid until kd_student_free; *numel receives its element count.
 * Errors: KD_E_NOTFOUND. */
int kd_student_tensor(kd_student *m, const char *name, int which, float **data, size_t *numel);

/* The parameters in manifest order: the count, and the i-th HF name. */
size_t kd_student_param_count(const kd_student *m);
const char *kd_student_param_name(const kd_student *m, size_t i);

/* ---- greedy generation with a KV cache ------------------------------------
 * A cache holds the keys (after rope) and values of every layer for up to
 * max_T positions: (L, max_T, K, D) each, plus the rope table for them. */
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
