/* eval.h - `distill eval CONFIG.yaml`: R1's evaluation protocol.
 *
 * Sample a model k times per held-out prompt (R1: temperature 0.6, top-p
 * 0.95), verify every sample with the rejection verifiers, and report:
 *
 *   pass@1   the mean over prompts of (correct samples / k)
 *   cons@k   the fraction of prompts whose majority answer is correct: the
 *            answer extracted most often among the k samples (ties: the one
 *            seen first); samples with no answer do not vote
 *   pass@k   the fraction of prompts with at least one correct sample
 *
 * overall and per source (the prompt's "source" field). The samples and
 * their verdicts are kept in the output dataset for inspection; the figures
 * go to `report` (eval.json) and to stdout.
 *
 * The run is made of the existing stages: kd_generate_run (input prompts ->
 * output dataset, resumable: a rerun generates only missing samples) and
 * kd_reject_run (policy all, no pass-rate window: a verdict's extra says
 * whether the sample is correct), then the figures are computed from the
 * output dataset. With `model: ~`, nothing is generated: the generations
 * already in `input` are verified and scored (output = input). */
#ifndef KD_PIPELINE_EVAL_H
#define KD_PIPELINE_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/runtime.h"
#include "rejection/reject.h"
#include "teacher/generate.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_eval_config {
    char *name;           /* a label for reports; ~ = the model folder's last component */
    char *model;          /* the model to sample; ~ = score the generations already in input */
    char *tokenizer;      /* ~ = the model folder */
    char *input;          /* dataset with the held-out prompts */
    char *output;         /* dataset for the samples and verdicts; ~ = input */
    char *report;         /* eval.json path; ~ = OUTPUT/eval.json */
    int64_t k;            /* samples per prompt */
    int64_t limit;        /* prompts, in id order; 0 = all */
    char *template_name;  /* chat template */
    char *system, *instruction;
    int force_think;
    int64_t batch;
    int progress;
    kd_gen_sampling sampling;
    kd_reject_math math;
    kd_reject_code code;
    kd_reject_text text;
    kd_runtime_config runtime;
} kd_eval_config;

extern const kd_cfg_schema kd_eval_schema;

#define KD_EVAL_MAX_SOURCES 64

typedef struct kd_eval_row {
    char name[64];
    int64_t prompts, samples, correct;
    double pass1_sum; /* sum over prompts of correct/k */
    int64_t cons, passk;
} kd_eval_row;

typedef struct kd_eval_result {
    kd_eval_row all;
    kd_eval_row by_source[KD_EVAL_MAX_SOURCES]; /* "(other)" past the limit */
    int nsource;
    double pass1, cons_k, pass_k;
    double generate_seconds, verify_seconds, seconds;
    char report[1024];    /* the eval.json written */
} kd_eval_result;

/* Run the evaluation. Errors: KD_E_CONFIG (bad settings), the stages'
 * errors, KD_E_IO (the report), KD_E_NOMEM. */
int kd_eval_run(const kd_eval_config *c, kd_eval_result *res);

/* The eval's label for reports: `name`, else the model folder's last
 * component (its parent's when that is "final", an sft export), else the
 * input's; into buf (truncated to cap). Returns buf. */
const char *kd_eval_label(const kd_eval_config *c, char *buf, size_t cap);

/* The figures as a table. */
void kd_eval_print(const kd_eval_result *res, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
