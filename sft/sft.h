/* sft.h - supervised fine-tuning of a dense student, or of a DeepSeek-V3/V2
 * teacher (R1's cold start), on packed examples.
 *
 * `distill sft CONFIG.yaml` runs kd_sft_run: load the model (student/
 * model.h, or teacher/train.h when config.json's model_type is deepseek_v3
 * or deepseek_v2; the same loop, checkpoints and export drive both), read the examples (a dataset folder of tokenized examples, read
 * in place from LMDB, or a .jsonl of chats tokenized on the fly), hold out an
 * eval split, pack them into rows of max_len, and train with AdamW. Every
 * key is documented in configs/sft/tiny_cpu.yaml.
 *
 * Data path. Each example is ids + a loss mask (the store's format: bit i
 * set when token i is a target). Examples longer than max_len are truncated
 * or dropped (counted); empty ones and ones with no target are skipped
 * (counted, warned). Each epoch, a permutation drawn from (seed, epoch)
 * orders the examples, best-fit-decreasing packs them into rows of at most
 * max_len tokens, and a second permutation orders the rows. A row holds
 * several documents; each restarts its positions at 0 and attends only to
 * itself (kd_student_backward with pos).
 *
 * Optimizer step. grad_accum micro-batches of micro_batch rows; the loss is
 * the sum of the token losses over the whole step divided by the step's
 * targets, so accumulation equals one big batch. Then global-norm clipping,
 * the schedule's lr, and AdamW (no decay on norms and biases unless asked).
 * A non-finite loss or gradient norm stops the run, or skips the step with a
 * warning (nonfinite: skip), never passes silently.
 *
 * Output folder:
 *   metrics.jsonl            one line per optimizer step (and per eval)
 *   checkpoints/step-NNNNNNNN/{model,optimizer}.safetensors, trainer_state.json
 *                            written into a .tmp folder and renamed; the last
 *                            keep_last are kept
 *   final/                   the HF export (config.json, model safetensors,
 *                            tokenizer files, generation_config.json)
 * Resume (output.resume or --resume) continues from the newest checkpoint;
 * the losses after it equal the uninterrupted run's bit for bit.
 */
#ifndef KD_SFT_H
#define KD_SFT_H

#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { KD_SFT_TRUNCATE = 0, KD_SFT_DROP };
enum { KD_SFT_LOSS_ASSISTANT = 0, KD_SFT_LOSS_ALL };
enum { KD_SFT_COSINE = 0, KD_SFT_LINEAR, KD_SFT_CONSTANT };
enum { KD_SFT_NONFINITE_STOP = 0, KD_SFT_NONFINITE_SKIP };
enum { KD_SFT_EXPORT_BF16 = 0, KD_SFT_EXPORT_F32 };

typedef struct kd_sft_data {
    char *train;          /* dataset folder, or a .jsonl of chats */
    char *eval;           /* the same kinds; NULL: eval_fraction of train */
    double eval_fraction; /* held out of train when eval is NULL */
    char *template_name;  /* YAML "template": chat template for .jsonl */
    char *tokenizer;      /* folder with tokenizer.json; NULL: the model folder */
    char *messages_field; /* .jsonl: the key of the messages array */
    int64_t max_len;
    int overlong;         /* KD_SFT_TRUNCATE | KD_SFT_DROP */
    int loss_on;          /* KD_SFT_LOSS_ASSISTANT | KD_SFT_LOSS_ALL */
    int allow_empty;      /* no usable training example: export the model unchanged
                             (warned) instead of failing */
} kd_sft_data;

typedef struct kd_sft_optim {
    double lr, min_lr_ratio, warmup_ratio;
    int64_t warmup_steps; /* > 0 overrides warmup_ratio */
    int schedule;         /* KD_SFT_COSINE | LINEAR | CONSTANT */
    double weight_decay;
    int decay_norm_bias;  /* 0: norms and biases get no weight decay */
    double beta1, beta2, eps;
    double grad_clip;     /* 0 = off */
} kd_sft_optim;

typedef struct kd_sft_train {
    int64_t epochs;
    int64_t max_steps;    /* > 0: stop after this many optimizer steps */
    int64_t micro_batch;  /* packed rows per forward/backward */
    int64_t grad_accum;   /* micro-batches per optimizer step */
    int nonfinite;        /* KD_SFT_NONFINITE_STOP | SKIP */
    int64_t stop_after;   /* > 0: this process stops after this many steps (the schedule
                             still spans every step); resume continues */
    int recompute;        /* CUDA: activation checkpointing per layer */
} kd_sft_train;

typedef struct kd_sft_output {
    char *dir;
    int64_t log_every, eval_every, save_every, keep_last;
    int resume;
    int do_export;        /* YAML "export" */
    int export_dtype;     /* KD_SFT_EXPORT_BF16 | F32 */
    int64_t shard_mb;     /* export shards above this size */
    int progress;
} kd_sft_output;

typedef struct kd_sft_config {
    char *model;          /* HF folder of the student to start from */
    kd_sft_data data;
    kd_sft_optim optim;
    kd_sft_train train;
    kd_sft_output output;
    kd_runtime_config runtime;
} kd_sft_config;

extern const kd_cfg_schema kd_sft_schema;

/* What a run did, for the caller and the tests. */
typedef struct kd_sft_result {
    int64_t steps;           /* optimizer steps done in total (resumed ones included) */
    int64_t steps_skipped;   /* non-finite steps skipped */
    int64_t examples, truncated, dropped_long, skipped_empty, skipped_no_target;
    int64_t rows;            /* packed rows per epoch */
    double last_loss, last_eval_loss; /* nan when none */
    int64_t tokens;          /* tokens trained on in this process */
    double seconds;
} kd_sft_result;

/* Run the whole fine-tuning. Errors: KD_E_CONFIG (bad or inconsistent
 * settings, a checkpoint that does not match them), KD_E_NOTFOUND (model,
 * data), KD_E_RANGE (a token id outside the model's vocabulary, a
 * non-finite loss with nonfinite: stop), KD_E_FORMAT, KD_E_IO, KD_E_NOMEM. */
int kd_sft_run(const kd_sft_config *cfg, kd_sft_result *res);

/* The learning rate at optimizer step `step` (0-based) of `total`. */
double kd_sft_lr(const kd_sft_optim *o, int64_t step, int64_t total);

/* ---- packing (exposed for tests) ---------------------------------------------
 * Best-fit decreasing: items of len[i] (each in [1, cap]) taken longest
 * first (ties in index order) go into the open bin with the least room that
 * fits them, else a new bin. bin[i] receives item i's bin; returns the number
 * of bins, or -1 (KD_E_NOMEM). O(n log n + n log cap). */
int64_t kd_sft_pack(const int64_t *len, int64_t n, int64_t cap, int64_t *bin);

#ifdef __cplusplus
}
#endif
#endif
