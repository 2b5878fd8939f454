/* train.h - the teacher (DeepSeek-V3/V2: MLA, routed + shared experts) for
 * training on the CPU reference ops: forward, the HF causal-LM loss,
 * backward, AdamW, fp32 throughout. The API mirrors the dense student's
 * (student/model.h), so one trainer can drive either (R1's cold-start SFT of
 * the base MoE).
 *
 * Legend: B batch, T tokens, N = B*T, V vocab, C hidden, L layers, H heads,
 * Q q_lora_rank (0: a plain q_proj), R kv_lora_rank, Dn qk_nope_head_dim,
 * Dr qk_rope_head_dim, Dv v_head_dim, E routed experts, k experts per token,
 * Fm moe_intermediate_size, Fs = Fm * n_shared_experts, F dense mlp width.
 *
 * What it computes is transformers' eager DeepseekV3/V2ForCausalLM in train
 * mode: no expert capacity (every token reaches its top-k experts), the
 * router's selection as the inference model makes it (teacher/model.h), and
 * gradients that reach the router through the gate weights only (sigmoid or
 * softmax scores, the top-k normalisation, routed_scaling_factor); the
 * selection itself, and e_score_correction_bias (a buffer in transformers,
 * not a parameter), get none. The multi-token-prediction layer is not loaded.
 *
 * Parameter names: the HF names of the checkpoint, with the routed experts
 * of each MoE layer also addressable as transformers 5 fuses them (and names
 * them in named_parameters(), so in ref_train fixtures):
 *   model.layers.L.mlp.experts.gate_up_proj  (E, 2 Fm, C): per expert, the
 *       gate_proj rows then the up_proj rows;
 *   model.layers.L.mlp.experts.down_proj     (E, C, Fm).
 * The per-expert names (model.layers.L.mlp.experts.E.gate_proj.weight...)
 * point into the same storage. The parameter list (kd_teacher_train_param_*)
 * uses the fused names, so every parameter element is listed exactly once.
 *
 * Lifetimes (llm.c style): one allocation each for the parameters, the
 * gradients, the AdamW moments (on the first step), the activations (on the
 * first forward; laid out again when B or T change; with a second one for
 * the routing's integer indices), plus one for the non-trainable buffers
 * (the correction biases).
 *
 * Packed rows (as the student, student/model.h): pos (B, T), or NULL for one
 * document per row at positions 0..T-1, holds each token's position within
 * its document; a document starts where pos is 0 (pos[t] is 0 or pos[t-1] +
 * 1). The rope part of the queries and the decoupled rope key rotate at pos,
 * attention is causal within each document only, and the last token of each
 * document predicts nothing; so a packed row computes exactly what its
 * documents would as rows of their own.
 *
 * Not covered: expert capacity / token dropping, auxiliary balance losses
 * (DeepSeek-V3 has none; V2's seq_aux is not computed), the MTP layer, the
 * CUDA backend.
 */
#ifndef KD_TEACHER_TRAIN_H
#define KD_TEACHER_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/hfconfig.h"
#include "core/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_teacher_train kd_teacher_train; /* opaque */

/* Load DIR (config.json + weights) as fp32 master weights: F32, BF16, F16
 * and block-scaled FP8 become fp32. The folder is inspected first
 * (kd_inspect_model), so a missing tensor or a wrong shape is named before
 * anything is allocated. Errors: those of kd_inspect_model,
 * KD_E_UNSUPPORTED (not deepseek_v3 / deepseek_v2), KD_E_NOMEM. On error
 * *out is NULL. Free with kd_teacher_train_free. */
int kd_teacher_train_new(const char *dir, kd_teacher_train **out);
void kd_teacher_train_free(kd_teacher_train *m);

/* The config the model was built from; valid until kd_teacher_train_free. */
const kd_model_config *kd_teacher_train_config(const kd_teacher_train *m);

/* Forward B rows of T tokens (ids (B, T), each in [0, V)), keeping the
 * activations for a following backward. pos (B, T) or NULL: packed rows
 * (above); NULL is one document per row at positions 0..T-1. logits
 * (B, T, V) receives the logits when not NULL. Errors: KD_E_RANGE (B or T
 * <= 0, T beyond max_position_embeddings, an id out of range, positions that
 * do not count up by one from 0), KD_E_NOMEM. */
int kd_teacher_train_forward(kd_teacher_train *m, const int64_t *ids, const int64_t *pos, int64_t B, int64_t T,
                             float *logits);

/* HF's model(ids, labels=labels).loss, without a backward: labels (B, T)
 * are NOT shifted (position t is scored against labels[b, t+1]; -100 is
 * ignored, and so is the last position of each row and, with pos, every
 * position whose next token starts a new document, pos[b, t+1] == 0), *loss
 * is the mean over the counted targets, 0 when none counts. *count (may be
 * NULL) receives the count. Errors as kd_teacher_train_forward, and
 * KD_E_RANGE for a label outside [0, V) other than -100. */
int kd_teacher_train_loss(kd_teacher_train *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                          int64_t B, int64_t T, float *loss, int64_t *count);

/* The same, as kd_student_loss: *loss_sum (may be NULL) receives the sum of
 * the counted token losses (double), *count the count. */
int kd_teacher_train_loss_sum(kd_teacher_train *m, const int64_t *ids, const int64_t *labels,
                              const int64_t *pos, int64_t B, int64_t T, double *loss_sum, int64_t *count);

/* The training step's building block, as kd_student_backward: forward, the
 * loss and the backward, ACCUMULATING the gradient of scale * (sum of the
 * counted token losses) into the gradients (zero them at the start of an
 * optimizer step). scale = 1 / (counted targets of the whole optimizer
 * step) makes micro-batches add up to one big batch. *loss_sum and *count
 * (each may be NULL) receive the sum of the token losses and the count.
 * Errors as kd_teacher_train_loss. */
int kd_teacher_train_backward(kd_teacher_train *m, const int64_t *ids, const int64_t *labels,
                              const int64_t *pos, int64_t B, int64_t T, double scale, double *loss_sum,
                              int64_t *count);

/* HF's loss and its backward alone: zero the gradients, then the backward
 * with scale 1 / count; *loss the mean (0, with zero gradients, when
 * nothing counts). Errors as kd_teacher_train_backward. */
int kd_teacher_train_loss_backward(kd_teacher_train *m, const int64_t *ids, const int64_t *labels,
                                   const int64_t *pos, int64_t B, int64_t T, float *loss);

/* The targets the loss counts for these labels (B, T) and pos (or NULL). */
int64_t kd_teacher_train_count_targets(const int64_t *labels, const int64_t *pos, int64_t B, int64_t T);

void kd_teacher_train_zero_grad(kd_teacher_train *m);

/* One torch.optim.AdamW step with the current gradients: decoupled weight
 * decay on every parameter, or, with no_decay_norm_bias, on all but the norm
 * weights and the biases. The buffers are not touched. The step count is
 * kept in the model and starts at 1. Errors: KD_E_NOMEM (the moments). */
int kd_teacher_train_adamw_step(kd_teacher_train *m, const kd_adamw *hp, int no_decay_norm_bias);

/* The global L2 norm of the gradients (double, the same bits for any thread
 * count), and scaling them in place (clipping). */
double kd_teacher_train_grad_norm(const kd_teacher_train *m);
void kd_teacher_train_scale_grads(kd_teacher_train *m, float s);

/* Optimizer step count (0 before the first step), and elements in all
 * trainable parameters. */
int64_t kd_teacher_train_step(const kd_teacher_train *m);
/* Set the step count when a checkpoint is restored (allocates the moments
 * if step > 0). Errors: KD_E_RANGE (negative), KD_E_NOMEM. */
int kd_teacher_train_set_step(kd_teacher_train *m, int64_t step);
/* 1 when NAME is a non-trainable buffer (a correction bias), else 0. */
int kd_teacher_train_is_buffer(const kd_teacher_train *m, const char *name);
size_t kd_teacher_train_numel(const kd_teacher_train *m);

/* A tensor by HF name (fused or per-expert, see above): the parameter
 * (which = 0), its gradient (1), or its AdamW first (2) or second (3)
 * moment. "...mlp.gate.e_score_correction_bias" is a buffer: which = 0
 * only. *data points into the model and stays valid until
 * kd_teacher_train_free (writing through it changes the model); *numel
 * receives the element count. Asking for a moment allocates the moments
 * (zero) if no step has run. Errors: KD_E_NOTFOUND (no such tensor, or a
 * gradient or moment of a buffer), KD_E_NOMEM. */
int kd_teacher_train_tensor(kd_teacher_train *m, const char *name, int which, float **data, size_t *numel);

/* The trainable parameters, in manifest order with the routed experts of
 * each MoE layer as the two fused tensors: the count, and the i-th name
 * (NULL past the end; valid until kd_teacher_train_free). */
size_t kd_teacher_train_param_count(const kd_teacher_train *m);
const char *kd_teacher_train_param_name(const kd_teacher_train *m, size_t i);

/* The training checks of `distill parity DIR` for a DeepSeek folder, on
 * DIR/ref_train.safetensors (FIXTURES.md): "loss", one "grad" line per
 * parameter (fused routed experts, or per expert when the fixture names
 * them so), one "adamw" line per parameter (the step applied to the
 * reference gradients, hyperparameters from the metadata adamw.* or
 * FIXTURES.md's defaults), and an "info adamw-e2e" line; the format of the
 * student's lines ("ok   grad     rel 3.1e-07 (tol 1e-04) NAME"). A
 * reference gradient this model has no parameter for, and a parameter the
 * reference has no gradient or updated value for, are failed checks (a
 * correction bias's gradient must be zero). *failed receives the number of
 * failed checks. Errors: KD_E_NOTFOUND (no ref_train.safetensors),
 * KD_E_FORMAT (no input_ids / labels I64 [B, T] or loss F32 [1], a
 * non-numeric adamw.* value), KD_E_SHAPE / KD_E_DTYPE (a reference tensor of
 * the wrong size or dtype), and those of kd_teacher_train_new and of the
 * training calls. */
int kd_teacher_parity_train(const char *dir, FILE *out, int *failed);

#ifdef __cplusplus
}
#endif
#endif
