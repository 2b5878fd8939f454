/* sft_impl.h - the trainer's parts shared between the files of sft/ (not installed). */
#ifndef KD_SFT_IMPL_H
#define KD_SFT_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "core/chat.h"
#include "core/tokenizer.h"
#include "data/store.h"
#include "sft/sft.h"
#include "student/cuda.h"
#include "student/export.h"
#include "student/model.h"
#include "teacher/train.h"

/* One example: ids (int32 LE, any alignment: in the store's map or owned) and
 * its loss mask as bits; n the tokens used (after truncation), full the
 * stored length, targets the tokens it is trained on. */
typedef struct sft_doc {
    const void *ids;
    const uint8_t *mask;
    uint32_t n, full;
    int64_t targets;
} sft_doc;

typedef struct sft_docs {
    sft_doc *d;
    int64_t n, cap;
} sft_docs;

/* The tokenizer of a run (for .jsonl chats and the vocabulary check). */
typedef struct sft_tok {
    kd_tokenizer *tok;     /* NULL when the model folder has none and none is named */
    kd_chat_template tpl;
    uint64_t fingerprint;
} sft_tok;

/* Where examples come from: an open dataset (its read transaction keeps the
 * examples' memory valid until close) or memory owned here. */
typedef struct sft_source {
    kd_store *store;
    kd_store_read *rd;
    void **owned;
    size_t nowned, capowned;
    int has_fingerprint;
    uint64_t fingerprint;  /* of the tokenizer that made the examples */
} sft_source;

/* Open `path` (a dataset folder, or a .jsonl of chats whose array of messages
 * is `field`) and append its examples to out. */
int sft_source_open(sft_source *s, const char *path, const sft_tok *tk, const char *field,
                    sft_docs *out);
void sft_source_close(sft_source *s);

/* Check every id against vocab (KD_E_RANGE), truncate or drop examples over
 * max_len, skip empty ones and ones without a target; counts go to res. */
int sft_docs_prepare(sft_docs *d, const kd_sft_data *o, int64_t vocab, const char *what,
                     kd_sft_result *res);

/* Move round(fraction * n) examples, drawn from seed, from train to eval. */
int sft_docs_split(sft_docs *train, sft_docs *eval, double fraction, uint64_t seed);

/* An epoch's rows: row r holds documents doc[row_start[r] .. row_start[r+1]). */
typedef struct sft_plan {
    int64_t nrows;
    int64_t *row_start; /* nrows + 1 */
    int64_t *doc;       /* indices into the docs */
} sft_plan;

/* Pack the documents into rows of at most cap tokens (best-fit decreasing).
 * With shuffle, a permutation drawn from (seed, epoch) orders the documents
 * before packing and a second one orders the rows. */
int sft_plan_make(sft_plan *p, const sft_docs *d, int64_t cap, uint64_t seed, int64_t epoch,
                  int shuffle);
void sft_plan_free(sft_plan *p);

/* A micro-batch: rows row0 .. row0+nrows-1 of a plan as (B, T) ids, labels
 * and positions, T the longest row (padding is its own document and never a
 * target); with b->flat, (1, total tokens) without padding. */
typedef struct sft_batch {
    int64_t *ids, *labels, *pos;
    size_t cap;
    int64_t B, T, targets, tokens;
    int flat; /* set by the caller: the rows' documents one after another in one
                 row of their total length, no padding (the CPU models: a
                 document attends only to itself, so only the padding's work
                 goes; the GPU plans its memory per row of max_len) */
} sft_batch;

int sft_batch_fill(sft_batch *b, const sft_docs *d, const sft_plan *p, int64_t row0, int64_t nrows,
                   int loss_on);
void sft_batch_free(sft_batch *b);

/* The model a run trains (model.c): a dense student, or a DeepSeek-V3/V2
 * teacher for the cold start, by config.json's model_type. Exactly one of s
 * and t is set. Each call is the student's (student/model.h) or the
 * teacher's (teacher/train.h) of the same name; sft_model_loss returns the
 * loss sum and count. Tensors are named as kd_model_tensors lists them; a
 * buffer (sft_model_is_buffer: the teacher's correction biases) has a value
 * but no gradient or moments.
 *
 * On CUDA (a dense student only), g trains on the GPU and s is its host
 * copy: sft_model_tensor downloads into s and returns s's memory, and
 * sft_model_push uploads what a checkpoint restore wrote there. A step is
 * zero_grad, backward per micro-batch (the loss sum stays on the GPU:
 * *sum is 0), then sft_model_gpu_step, which clips, updates (or skips a
 * non-finite step) and reads the step's loss sum and gradient norm back. */
typedef struct sft_model {
    kd_student *s;
    kd_teacher_train *t;
    kd_cu_student *g;
} sft_model;

typedef struct sft_model_opts {
    int cuda;            /* train a dense student on the GPU */
    int64_t max_tokens;  /* micro_batch * max_len */
    int64_t max_T;       /* max_len */
    int recompute;       /* activation checkpointing (CUDA) */
} sft_model_opts;

int sft_model_load(const char *dir, const sft_model_opts *o, sft_model *m);
int sft_model_push(sft_model *m);
int sft_model_gpu_step(sft_model *m, const kd_adamw *hp, int no_decay_norm_bias, double clip, double *loss_sum,
                       double *grad_norm);
void sft_model_free(sft_model *m);
const kd_model_config *sft_model_config(const sft_model *m);
int sft_model_loss(sft_model *m, const int64_t *ids, const int64_t *labels, const int64_t *pos, int64_t B,
                   int64_t T, double *sum, int64_t *count);
int sft_model_backward(sft_model *m, const int64_t *ids, const int64_t *labels, const int64_t *pos, int64_t B,
                       int64_t T, double scale, double *sum, int64_t *count);
int sft_model_zero_grad(sft_model *m);
double sft_model_grad_norm(const sft_model *m);
void sft_model_scale_grads(sft_model *m, float s);
int sft_model_adamw(sft_model *m, const kd_adamw *hp, int no_decay_norm_bias);
int64_t sft_model_step(const sft_model *m);
int sft_model_set_step(sft_model *m, int64_t step);
int sft_model_tensor(sft_model *m, const char *name, int which, float **data, size_t *numel);
int sft_model_is_buffer(const sft_model *m, const char *name);
int sft_model_export(sft_model *m, const char *out_dir, const kd_export_opts *o);

#endif
