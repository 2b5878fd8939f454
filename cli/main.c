/* main.c - the distill command table, git-style: `distill [global options] <command> [args]`. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "core/runtime.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

/* Commands that exist. Later stages add theirs here (see docs/cli.md). */
static const command commands[] = {
    {"inspect", cmd_inspect, "check a HuggingFace model folder and print its architecture and size"},
    {"config", cmd_config, "validate a YAML config and print the effective configuration"},
    {"tokenize", cmd_tokenize, "encode text to token ids or decode ids, as HF tokenizers does"},
    {"data", cmd_data, "import, export, inspect and merge LMDB datasets"},
    {"bench", cmd_bench, "benchmark programs that print figures (tokenize, ...)"},
    {"parity", cmd_parity, "check the student against a HF reference fixture folder"},
    {"generate", cmd_generate, "sample traces from a teacher for the prompts of a dataset"},
    {"verify", cmd_verify, "verify answers line by line (JSONL in, a verdict per line out)"},
    {"reject", cmd_reject, "rejection sampling: verify a dataset's generations, write verdicts"},
    {"run", cmd_run, "run a pipeline of stages from YAML (generate, reject, curate, sft, eval), resumable"},
    {"demo", cmd_demo, "distillation end to end on the CPU in minutes (configs/demo.yaml)"},
    {"eval", cmd_eval, "pass@1, cons@k and pass@k of a model on held-out prompts"},
    {"sft", cmd_sft, "fine-tune a student (or cold-start a DeepSeek teacher) on packed examples (CPU or one GPU)"},
    {"init", cmd_init, "write a model with random weights from a config.json"},
    {"logits", cmd_logits, "write the logits of a token sequence for any supported model"},
    {"version", cmd_version, "print the version and build options"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: distill [-q | -v | --log-level LEVEL] <command> [<args>]\n\n"
               "R1-style knowledge distillation: teacher generation, rejection sampling,\n"
               "LMDB datasets and SFT, in one binary.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nglobal options:\n"
               "  -q, --quiet            only errors (same as --log-level error)\n"
               "  -v, --verbose          debug messages (same as --log-level debug)\n"
               "      --log-level LEVEL  error, warning, info (default) or debug;\n"
               "                         the environment variable DISTILL_LOG sets the default\n"
               "  -h, --help             this help; 'distill <command> --help' for a command's\n"
               "      --version          same as 'distill version'\n\n"
               "exit codes: 0 success, 1 runtime failure, 2 usage error\n");
}

int kd_cli_fail(int st)
{
    kd_error("%s", kd_strerror(st));
    return kd_exit_code(st);
}

int kd_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kd_error("%s", msg);
    fprintf(stderr, "see 'distill %s --help'\n", cmd);
    return 2;
}

int main(int argc, char **argv)
{
    /* Keep freed memory for reuse: the ops allocate and free per call buffers of
     * a few hundred KB to a few MB (attention's transposes, per-thread scores), and
     * glibc's defaults return them to the kernel at once, so every step paid for
     * fresh zeroed pages (about 20 MB of page faults per step of the demo's
     * teacher). Allocations of 64 MB and more (weights, activations) still map
     * and unmap on their own. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    /* OpenBLAS on a CPU model it does not know: start again with the kernels
     * the CPU supports (once: the variable is then set) */
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : kd_blas_better_core();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) {
        execv("/proc/self/exe", argv);
        unsetenv("OPENBLAS_CORETYPE"); /* no /proc: go on with OpenBLAS's choice */
    }
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            return cmd_version(1, (char *[]){"version", NULL});
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            kd_log_set_level(KD_LOG_ERROR);
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            kd_log_set_level(KD_LOG_DEBUG);
        } else if (!strcmp(a, "--log-level") || !strncmp(a, "--log-level=", 12)) {
            const char *v = a[11] == '=' ? a + 12 : (i + 1 < argc ? argv[++i] : NULL);
            kd_log_level l;
            if (kd_log_parse_level(v, &l) != KD_OK) {
                kd_error("%s", kd_strerror(KD_E_USAGE));
                return 2;
            }
            kd_log_set_level(l);
        } else {
            kd_error("unknown option '%s'", a);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++)
        if (!strcmp(argv[i], commands[c].name)) {
            optind = 1; /* each command runs its own getopt_long from argv[0] = its name */
            return commands[c].fn(argc - i, argv + i);
        }
    kd_error("'%s' is not a distill command; see 'distill --help'", argv[i]);
    return 2;
}
