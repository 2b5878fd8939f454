/* cmd_demo.c - `distill demo`: configs/demo.yaml through the pipeline runner,
 * with the demo's summary (pipeline/demo.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/runtime.h"
#include "pipeline/demo.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill demo [-c CONFIG] [--quick] [--set KEY=VALUE]... [--print-config]\n\n"
               "R1-style distillation end to end on the CPU, in minutes: built-in arithmetic\n"
               "problems; a tiny DeepSeek-V3 MoE teacher cold-started on solver-written traces;\n"
               "its samples verified and filtered; a smaller Qwen2 student trained on the\n"
               "accepted ones; pass@1 on held-out problems for the teacher, the student, the\n"
               "untrained student and a student trained on every sample. Run it from the\n"
               "source folder (the config's paths are relative). A rerun skips the finished\n"
               "stages. Writes OUTPUT/report.json (teacher_pass1, student_pass1,\n"
               "baseline_pass1, unfiltered_pass1, accepted, generated, wall_seconds, bars)\n"
               "and OUTPUT/report.md with plots.\n\n"
               "options:\n"
               "  -c, --config FILE    the pipeline (default configs/demo.yaml)\n"
               "      --quick          the same stages with far fewer problems, steps and\n"
               "                       samples (what CI runs; the bars are not expected to pass)\n"
               "      --set KEY=VALUE  override a key of the pipeline (output, from, runtime.*)\n"
               "      --print-config   print the effective config and exit\n"
               "  -h, --help           this help\n\n"
               "exit codes: 0 done (failed bars are reported, not an error), 1 failed, 2 usage error\n");
}

int cmd_demo(int argc, char **argv)
{
    static const struct option longopts[] = {
        KD_CLI_CONFIG_LONGOPTS,
        {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kd_cli_config cc = {0};
    int opt, quick = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hc:", longopts, NULL)) != -1) {
        if (kd_cli_config_opt(&cc, opt, optarg))
            continue;
        if (opt == 'q') {
            quick = 1;
            continue;
        }
        kd_cli_config_release(&cc);
        if (opt == 'h') {
            usage_(stdout);
            return 0;
        }
        return kd_cli_usage_error("demo", "bad option");
    }
    if (optind < argc) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("demo", "unexpected argument '%s'", argv[optind]);
    }
    if (!cc.path)
        cc.path = "configs/demo.yaml";
    kd_pipeline_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        kd_cli_config_release(&cc);
        return kd_cli_fail(kd_err(KD_E_NOMEM, "config"));
    }
    int printed = 0, st = kd_cli_config_build(&cc, &kd_pipeline_schema, cfg, &printed);
    if (st == KD_E_NOTFOUND && !strcmp(cc.path, "configs/demo.yaml"))
        kd_error("demo: run it from the distill source folder (configs/demo.yaml), or pass -c CONFIG");
    kd_demo_result r;
    if (st == KD_OK && !printed && cfg->runtime.device == KD_DEVICE_CUDA)
        st = kd_err(KD_E_UNSUPPORTED, "demo runs on the CPU reference backend (runtime.device: cpu or auto)");
    cfg->runtime.device = KD_DEVICE_CPU;
    if (st == KD_OK && !printed && (st = kd_runtime_apply(&cfg->runtime)) == KD_OK &&
        (st = kd_demo_run(cfg, quick, &r)) == KD_OK)
        kd_demo_print(&r, stdout);
    kd_cfg_release(&kd_pipeline_schema, cfg);
    free(cfg);
    kd_cli_config_release(&cc);
    return st ? kd_cli_fail(st) : 0;
}
