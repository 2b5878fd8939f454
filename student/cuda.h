/* cuda.h - the dense student (Qwen2 / Llama) trained on one GPU.
 *
 * The same model as student/model.h, layer for layer, on the CUDA ops of
 * core/cuda/cuops.h: bf16 weights and activations, fp32 master weights,
 * gradients and AdamW moments, fp32 accumulation everywhere. Where the GPU
 * wants it, projections are fused: q/k/v into one GEMM and gate/up into
 * another (their HF tensors are stored next to each other, so the fused
 * weight is a view and checkpoints keep HF names), and the lm head with the
 * loss (no (tokens x vocab) logits).
 *
 * A step is kd_cu_student_zero_grad, then kd_cu_student_backward per
 * micro-batch, then kd_cu_student_adamw; none of them waits for the GPU.
 * kd_cu_student_read reads the step's loss sum and gradient norm back (the
 * one host sync, whenever the caller wants the figures).
 *
 * In a build without CUDA every function returns KD_E_CUDA.
 */
#ifndef KD_STUDENT_CUDA_H
#define KD_STUDENT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "core/hfconfig.h"
#include "core/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_cu_student kd_cu_student; /* opaque */

typedef struct kd_cu_student_opts {
    int device;          /* CUDA device index */
    int64_t max_tokens;  /* most tokens (B*T) of one micro-batch */
    int64_t max_T;       /* longest row, for the rope table */
    int recompute;       /* activation checkpointing: keep each layer's input only, redo
                            the layer's forward in the backward */
    int64_t xent_chunk;  /* rows per chunk of the fused lm head + loss; 0 = auto */
    int attn_two_pass;   /* the attention backward in two passes, dQ bit-reproducible
                            (kd_cu.attn_two_pass; slower) */
} kd_cu_student_opts;

/* Device memory by kind, in bytes, as kd_cu_student_new will allocate it. */
typedef struct kd_cu_mem {
    size_t weights;     /* fp32 master + bf16 copy */
    size_t grads;       /* fp32 */
    size_t moments;     /* fp32 m and v */
    size_t acts;        /* saved activations */
    size_t work;        /* backward buffers, loss chunk, attention, library workspace */
    size_t total;
} kd_cu_mem;
void kd_cu_student_plan(const kd_model_config *c, const kd_cu_student_opts *o, kd_cu_mem *out);

/* The weights come from get(ctx, HF name, &data, &numel) as host fp32:
 * numel holds the manifest's element count on the way in and data's on the
 * way out (kd_student_tensor of a loaded CPU model, or random weights). */
typedef int (*kd_cu_getter)(void *ctx, const char *name, float **data, size_t *numel);
int kd_cu_student_new(const kd_model_config *c, kd_cu_getter get, void *ctx, const kd_cu_student_opts *o,
                      kd_cu_student **out);
void kd_cu_student_free(kd_cu_student *m);

/* Zero the gradients and the step's loss sum. */
int kd_cu_student_zero_grad(kd_cu_student *m);
/* Forward and backward of one micro-batch (B, T) with labels and pos as
 * kd_student_backward (host arrays; pos NULL = one document per row):
 * gradients += scale * d(loss sum), and the loss sum adds to the step's. */
int kd_cu_student_backward(kd_cu_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                           int64_t B, int64_t T, double scale);
/* The forward and loss only (evaluation): the loss sum adds to the step's. */
int kd_cu_student_loss(kd_cu_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                       int64_t B, int64_t T);
/* The logits (B*T, V) of a batch into host memory out (fp32 from the bf16
 * lm head GEMM with fp32 accumulation): for parity checks and evaluation. */
int kd_cu_student_logits(kd_cu_student *m, const int64_t *ids, const int64_t *pos, int64_t B, int64_t T,
                         float *out);
/* Global grad-norm clip (max_norm 0 = off) and AdamW with the step counter
 * advanced; norms and biases without decay when no_decay_norm_bias. */
int kd_cu_student_adamw(kd_cu_student *m, const kd_adamw *hp, int no_decay_norm_bias, double max_norm);
/* Wait for the GPU; the loss sum since the last zero_grad and the gradient
 * norm (before clipping) of the last adamw. Either may be NULL. */
int kd_cu_student_read(kd_cu_student *m, double *loss_sum, double *grad_norm);
/* Copy a tensor's fp32 master weights (which 0), gradient (1) or moments
 * (2, 3) to host memory out (numel floats). */
int kd_cu_student_get(kd_cu_student *m, const char *name, int which, float *out, size_t numel);
/* The reverse: host data (numel floats) into a tensor's master weights (its
 * bf16 copy too) or moments. For restoring a checkpoint. */
int kd_cu_student_set(kd_cu_student *m, const char *name, int which, const float *in, size_t numel);
int64_t kd_cu_student_step(const kd_cu_student *m);
void kd_cu_student_set_step(kd_cu_student *m, int64_t step);
/* Parameters (tied weights once), and the device memory in use now (every
 * process and the CUDA context included: the peak, since nothing is
 * allocated after kd_cu_student_new but the library's own workspaces). */
int64_t kd_cu_student_numel(const kd_cu_student *m);
int kd_cu_student_mem_used(const kd_cu_student *m, size_t *used);
/* GPU time by kind of op (core/cuda/cuops.h's kd_cu_prof_*): on, then a
 * report of what ran since, to out (a FILE *). */
int kd_cu_student_prof_on(kd_cu_student *m);
int kd_cu_student_prof_report(kd_cu_student *m, void *out);
/* Print the peak memory the plan expects, by kind, as one info line. */
void kd_cu_mem_log(const kd_cu_mem *mem, const char *what);

#ifdef __cplusplus
}
#endif
#endif
