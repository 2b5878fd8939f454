/* demo.h - `distill demo` (and `make demo`): configs/demo.yaml through the
 * pipeline runner, then the demo's summary.
 *
 * The config is an ordinary pipeline (pipeline/run.h) whose eval stages are
 * named teacher, student, baseline (the untrained student) and unfiltered
 * (the student trained on every trace), with one reject stage. After the
 * run, OUTPUT/report.json gains the demo's figures and OUTPUT/report.md a
 * section about them:
 *
 *   teacher_pass1, student_pass1, baseline_pass1, unfiltered_pass1
 *   generated, accepted, acceptance    the reject stage's samples and kept
 *   wall_seconds                       the union of the stages' start-to-end spans
 *   stage_seconds                      [{stage, kind, seconds}] in order
 *   bars                               [{bar, pass, detail}]: teacher pass@1 >=
 *                                      0.6; student >= 0.8 x teacher (and
 *                                      above 0); the baseline far below both
 *                                      (under half of the lower); filtered student above
 *                                      unfiltered; acceptance in [0.3, 0.9];
 *                                      wall time <= 600 s; each failed bar's
 *                                      detail says by how much and why
 *   quick                              true for a --quick run (bars not expected
 *                                      to pass)
 *
 * quick: the same stages with far fewer problems, steps and samples (for CI):
 * every problems count capped (train 200, gen 12, heldout 8), every sft and
 * cold start at most 4 optimizer steps (an sft stage with no accepted sample
 * exports its model unchanged: data.allow_empty), generate and eval at most 40 new
 * tokens, eval k at most 2. */
#ifndef KD_PIPELINE_DEMO_H
#define KD_PIPELINE_DEMO_H

#include <stdio.h>

#include "pipeline/run.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KD_DEMO_BARS 6

typedef struct kd_demo_bar {
    const char *bar;  /* "teacher_pass1 >= 0.6", ... (static) */
    int pass;
    char detail[320]; /* the figures, and why when it fails */
} kd_demo_bar;

typedef struct kd_demo_result {
    double teacher_pass1, student_pass1, baseline_pass1, unfiltered_pass1;
    long long generated, accepted;
    double acceptance, wall_seconds;
    int quick, passed;
    int stages, ran, skipped; /* the runner's counts for this run */
    kd_demo_bar bars[KD_DEMO_BARS];
    char report[1024]; /* report.json's path */
} kd_demo_result;

/* Shrink c in place for a quick run (above). */
void kd_demo_quick(kd_pipeline_config *c);

/* Run the pipeline c, then add the demo's figures to its report. Errors:
 * those of kd_pipeline_run; KD_E_CONFIG (no eval stage named teacher,
 * student, baseline or unfiltered, or no reject stage: checked before
 * anything runs); KD_E_IO. A failed bar is not an error: it is in the
 * report. */
int kd_demo_run(kd_pipeline_config *c, int quick, kd_demo_result *res);

/* The summary lines: the figures, each bar, the report's path. */
void kd_demo_print(const kd_demo_result *r, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
