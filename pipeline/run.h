/* run.h - `distill run PIPELINE.yaml`: the stages of a distillation, in order.
 *
 *     output: runs/pipe              # the runner's folder: state, stage configs, report
 *     stages:
 *       - problems: {...}            # kd_problems_schema (pipeline/setup.h; optional)
 *       - init: {...}                # kd_init_schema (pipeline/setup.h; optional)
 *       - cold_start: {...}          # an sft config (the teacher's cold start; optional)
 *       - generate: {...}            # kd_gen_schema
 *       - reject: {...}              # kd_reject_schema
 *       - curate: {...}              # kd_curate_script_schema
 *       - sft: {...}                 # kd_sft_schema
 *       - eval: {...}                # kd_eval_schema
 *
 * Each stage names its own inputs and outputs (datasets, models) in its own
 * config, exactly as its command takes it; the runner adds nothing to them.
 *
 * State (OUTPUT/pipeline.json): each finished stage with its config hash. A
 * rerun skips a stage that finished with the same config, as long as every
 * stage before it was skipped too; from the first stage that runs, every
 * later stage runs. A stage killed midway resumes through its own resume
 * (generate keeps finished samples, sft its checkpoints, curate its finished
 * steps). Any other rerun of a stage is a redo: its own outputs are cleared
 * first, also for a stage the state no longer lists (an interrupted run
 * dropped it) once an earlier stage ran again in a folder with history. `from` (--from NAME|N) reruns stage N (1-based) or the first stage
 * of that kind, and everything after it.
 *
 * Each stage runs in a forked process on its runtime.threads (0: all of the
 * runner's). Stages start in order; one starts beside those running when its
 * threads fit and it conflicts with none of them (one writes a path the other
 * names in its config). A failed stage stops new starts; the running ones
 * finish and are recorded.
 *
 * Every stage's effective config is written to OUTPUT/stages/NN-kind.yaml
 * before it runs. At the end, OUTPUT/report.json and OUTPUT/report.md give
 * each stage's time and summary figures, with plots drawn by gnuplot
 * (OUTPUT/plots/NAME.svg: training loss, acceptance by reason, lengths of
 * accepted vs rejected samples, pass@1 per eval stage). */
#ifndef KD_PIPELINE_RUN_H
#define KD_PIPELINE_RUN_H

#include <stdint.h>

#include "core/config.h"
#include "core/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_pipeline_config {
    char *output;         /* the runner's folder */
    char *from;           /* rerun from this stage (N or a kind); ~ = resume */
    kd_cfg_steps stages;
    kd_runtime_config runtime;
} kd_pipeline_config;

extern const kd_cfg_schema kd_pipeline_schema;

/* The name of stage kind `kind` (the kd_cfg_step's kind): "generate", ... */
const char *kd_pipeline_kind_name(int kind);

typedef struct kd_pipeline_result {
    int stages, ran, skipped;
    double seconds;
    char report[1024]; /* report.json's path */
} kd_pipeline_result;

/* Run the pipeline. Errors: KD_E_CONFIG (no stages, an unknown `from`),
 * the stages' own errors (the state keeps what finished), KD_E_IO. */
int kd_pipeline_run(const kd_pipeline_config *c, kd_pipeline_result *res);

#ifdef __cplusplus
}
#endif
#endif
