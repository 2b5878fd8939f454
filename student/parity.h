/* parity.h - check the student against a HF reference fixture directory
 * (the format of FIXTURES.md): logits and greedy generation from
 * ref_infer.safetensors; loss, every gradient and one AdamW step from
 * ref_train.safetensors, each against FIXTURES.md's CPU fp32 tolerances;
 * with the CUDA device, the CUDA student (student/cuda.h) against its bf16
 * tolerances (2e-2 for logits, the loss and gradients).
 */
#ifndef KD_STUDENT_PARITY_H
#define KD_STUDENT_PARITY_H

#include <stdint.h>
#include <stdio.h>

#include "core/ops.h"
#include "core/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KD_PARITY_CPU = 0, KD_PARITY_CUDA } kd_parity_device;

/* Run every check the fixture in `dir` holds files for and print one line
 * per check to `out` ("ok   logits   rel 6.9e-07 (tol 1e-04)", or "FAIL ..."
 * with the measured error; "info ..." and "skip ..." lines do not count).
 * *failed receives the number of failed checks. Returns KD_OK when the checks
 * ran (look at *failed), or: KD_E_UNSUPPORTED (a model_type other than
 * qwen2/llama, e.g. DeepSeek; KD_E_CUDA for the CUDA device in a build or
 * on a machine without one), KD_E_NOTFOUND (dir, config.json, the weights, or neither
 * reference file), KD_E_FORMAT / KD_E_SHAPE / KD_E_DTYPE (a malformed or
 * mismatched reference tensor), KD_E_NOMEM, and what kd_student_load returns.
 * The caller reports the status with kd_strerror. */
int kd_parity_run(const char *dir, kd_parity_device device, FILE *out, int *failed);

/* A model under the inference checks: its logits over a sequence from
 * position 0 (T, V), and greedy generation as kd_student_generate_greedy. */
typedef struct kd_parity_model {
    void *m;
    int64_t vocab;
    int (*logits)(void *m, const int64_t *ids, int64_t T, float *out);
    int (*generate)(void *m, const int64_t *prompt, int64_t P, int64_t N, const int64_t *suppress,
                    int nsuppress, int64_t *out, float *step_logits);
    /* bf16 backends (all zero for the CPU): the logits tolerance; no_kvcache
     * when generate recomputes the full forward (the kvcache check does not
     * apply); and a CPU reference model, whose top-2 logits at a greedy
     * mismatch say whether it is within bf16 rounding (margin <= tol_margin
     * times the larger logit's magnitude, at least 1). */
    double tol_logits, tol_margin;
    int no_kvcache;
    void *ref;
    int (*ref_logits)(void *ref, const int64_t *ids, int64_t T, float *out);
    /* optional: the backend's own "logits" check of `ours` (its logits of
     * ids), in place of the comparison with the reference's `hf` (the CUDA
     * teacher: against the CPU teacher on the GPU's routes, teacher/parity.c);
     * and why the kvcache check is skipped, when no_kvcache */
    int (*logits_check)(const struct kd_parity_model *pm, const int64_t *ids, int64_t T, const float *ours,
                        const float *hf, FILE *out, int *failed);
    const char *no_kvcache_why;
} kd_parity_model;

/* The checks of ref_infer.safetensors `file` in fixture `dir` for any model:
 * "logits" (overall and worst row), "generate" (greedy tokens, EOS of
 * generation_config.json suppressed; the first mismatch with both logits),
 * "kvcache" (each generation step's logits against the full forward). One
 * line each to out; *failed is incremented per failure. Errors as
 * kd_parity_run. */
int kd_parity_check_infer(const kd_parity_model *pm, const char *dir, const char *file, FILE *out,
                          int *failed);

/* The pieces every parity check shares (the teacher's training check too). */
/* Norm-wise relative error ||out - ref|| / ||ref|| (absolute when ref = 0). */
double kd_parity_rel_err(const float *out, const float *ref, size_t n);
/* Print one check line ("ok   NAME  detail" or "FAIL NAME  detail"), count a
 * failure; returns ok. */
int kd_parity_check(FILE *out, int *failed, int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* FIXTURES.md's AdamW settings, overridden by the fixture's metadata
 * (adamw.lr, ... or the bare keys); returns how many the metadata gave, or
 * KD_E_FORMAT for a value that is not a number. */
int kd_parity_adamw_hp(const kd_st *st, kd_adamw *hp);

#ifdef __cplusplus
}
#endif
#endif
