/* reject.h - rejection sampling: `distill reject CONFIG.yaml`.
 *
 * Reads a dataset's prompts and their generations, runs the configured
 * verifiers on every generation, and writes one `verdicts` record per
 * (prompt, sample). A policy then decides which correct samples are kept,
 * and a pass-rate window can drop whole prompts:
 *
 *   correct    every enabled verifier accepts the sample (the task's answer
 *              check, math or code, and the text checks: format, language,
 *              readability, degeneration)
 *   pass rate  correct samples / samples of the prompt (its difficulty)
 *   kept       correct, inside the pass-rate window, and chosen by the policy:
 *              all (every correct sample), k (the first k correct by sample
 *              index), shortest (the shortest correct one, by characters)
 *
 * A verdict's `accepted` is `kept` (what the SFT examples are built from);
 * its reason is the first failing check's ("wrong_answer", "truncated",
 * "no_think", ...), or "pass_rate" / "policy" for a correct sample not kept,
 * or "correct"; its answer is what the task verifier extracted; its extra
 * holds {"correct", "pass_rate", "task", "checks": {name: {"ok", "reason",
 * "score", "detail"}}}. Its score is the task verifier's score.
 *
 * The task of a prompt: `task` (math | code), or auto: code when the
 * prompt's extra holds the tests field (`code.tests_field`), math when the
 * prompt has an answer, else only the text checks run.
 *
 * Rerun: every prompt with generations is verified again and its verdicts
 * are replaced (verifying is deterministic), unless skip_existing is set,
 * when prompts whose every generation has a verdict are skipped. */
#ifndef KD_REJECTION_REJECT_H
#define KD_REJECTION_REJECT_H

#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { KD_REJECT_TASK_AUTO = 0, KD_REJECT_TASK_MATH, KD_REJECT_TASK_CODE };
enum { KD_REJECT_POLICY_ALL = 0, KD_REJECT_POLICY_K, KD_REJECT_POLICY_SHORTEST };

typedef struct kd_reject_math {
    int enabled;
    int extract;           /* kd_math_extract: 0 latex+expr, 1 latex, 2 expr */
    int after_think;       /* only the text after </think> */
    int64_t float_rounding;
    double rel_tol;
    int strict;
} kd_reject_math;

typedef struct kd_reject_code {
    int enabled;
    char *tests_field;     /* the prompt extra key holding the tests JSON */
    int64_t workers;       /* sandboxes at once */
    double cpu_seconds, wall_seconds;
    int64_t memory_mb;
} kd_reject_code;

typedef struct kd_reject_text {
    int format;            /* one <think>...</think>, non-empty, then an answer */
    int think_in_prompt;   /* the template opened <think> in the prompt (R1) */
    char *language;        /* target language (en, zh, ...); ~ = no language check */
    double language_min;   /* least fraction of target-language words */
    double mixed_max;      /* most fraction of other-script words in the reasoning */
    int64_t max_paragraph; /* characters; 0 = no limit */
    int code_in_think;     /* reject code blocks inside the reasoning */
    int degeneration;      /* reject n-gram loops */
    int truncated;         /* reject finish "length" */
} kd_reject_text;

typedef struct kd_reject_config {
    char *input;           /* dataset with prompts and generations */
    char *output;          /* dataset for the verdicts; ~ = input */
    int task;              /* KD_REJECT_TASK_* */
    int policy;            /* KD_REJECT_POLICY_* */
    int64_t k;
    double pass_rate_min, pass_rate_max;
    int skip_existing;
    int64_t limit;         /* prompts, in id order; 0 = all */
    int progress;
    kd_reject_math math;
    kd_reject_code code;
    kd_reject_text text;
    kd_runtime_config runtime;
} kd_reject_config;

extern const kd_cfg_schema kd_reject_schema;
/* The fields of the math, code and text sections, for configs that embed them (eval). */
extern const kd_cfg_field kd_reject_math_fields[], kd_reject_code_fields[], kd_reject_text_fields[];

#define KD_REJECT_MAX_ROWS 64 /* sources and reasons listed in the summary */

typedef struct kd_reject_row {
    char name[64];
    int64_t samples, correct, kept;
} kd_reject_row;

typedef struct kd_reject_result {
    int64_t prompts, samples, correct, kept, skipped_prompts, dropped_prompts;
    double seconds;
    kd_reject_row by_reason[KD_REJECT_MAX_ROWS]; /* samples per verdict reason */
    int nreason;
    kd_reject_row by_source[KD_REJECT_MAX_ROWS]; /* per prompt source; "(other)" past the limit */
    int nsource;
} kd_reject_result;

/* Run the job. Errors: KD_E_CONFIG (bad settings, checked before anything
 * is written), the store's errors, KD_E_NOMEM. */
int kd_reject_run(const kd_reject_config *c, kd_reject_result *res);

/* The summary table (by reason, then by source) as text. */
void kd_reject_print(const kd_reject_result *res, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
