/* cmd_run.c - `distill run PIPELINE.yaml`: the stages of a distillation in
 * order, resumable (pipeline/run.h). */
#include <stdio.h>

#include "cli.h"
#include "pipeline/run.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill run [PIPELINE.yaml] [-c PIPELINE.yaml] [--set KEY=VALUE]... [--print-config]\n\n"
               "Runs the stages listed under `stages` in order: cold_start, generate, reject,\n"
               "curate, sft, eval, each with the config its own command takes. A rerun skips\n"
               "the stages that finished with the same config; a killed stage resumes through\n"
               "its own resume. --set from=N (or a stage kind) reruns that stage and the ones\n"
               "after it. Each stage runs in its own process on its runtime.threads (0: all\n"
               "of the runner's runtime.threads); a stage starts beside the running ones when\n"
               "its threads fit and neither writes a path the other's config names. A\n"
               "generate, sft or cold_start stage may take runtime.device: cuda (one such\n"
               "stage on the GPU at a time); the other stages run on the CPU. Writes\n"
               "OUTPUT/pipeline.json, OUTPUT/stages/NN-kind.yaml and OUTPUT/report.{json,md}.\n"
               "See configs/pipeline/example.yaml.\n\n"
               "options:\n" KD_CLI_CONFIG_HELP
               "  -h, --help           this help\n\n"
               "exit codes: 0 done, 1 failed, 2 usage error\n");
}

static int run_(void *cfg)
{
    kd_pipeline_result r;
    KD_TRY(kd_pipeline_run(cfg, &r));
    printf("run: %d stages, %d ran, %d skipped, %.1f s; report %s\n", r.stages, r.ran, r.skipped, r.seconds,
           r.report);
    return KD_OK;
}

int cmd_run(int argc, char **argv)
{
    return kd_cli_config_main(argc, argv, "run", &kd_pipeline_schema, usage_, run_, 0);
}
