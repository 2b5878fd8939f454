/* cli.h - the command table and what every command shares.
 *
 * A command is `int cmd_<name>(int argc, char **argv)`: argv[0] is the command
 * name, options follow (getopt_long). It parses its options, calls one library
 * function, and returns an exit code: 0 ok, 1 runtime failure, 2 usage error.
 * Every command answers -h/--help with its usage on stdout and exit code 0.
 */
#ifndef KD_CLI_H
#define KD_CLI_H

#include "core/log.h"
#include "core/config.h"
#include "core/status.h"

#include <getopt.h>

int cmd_inspect(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_parity(int argc, char **argv);
int cmd_sft(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_reject(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_data_problems(int argc, char **argv); /* `distill data problems` */
int bench_sft(int argc, char **argv);     /* `distill bench sft` */
int bench_teacher(int argc, char **argv); /* `distill bench teacher` */
int bench_generate(int argc, char **argv); /* `distill bench generate` */
int bench_verify(int argc, char **argv);  /* `distill bench verify` */

/* Print "error: <kd_strerror(st)>" and return the exit code for st. */
int kd_cli_fail(int st);

/* Print "error: <msg>", then "see 'distill <cmd> --help'", and return 2. */
int kd_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

/* Options every config-driven command shares:
 *   -c, --config FILE    YAML file
 *   --set KEY=VALUE      override one key (repeatable; applied in order)
 *   --print-config       print the effective configuration and exit 0
 * A command puts KD_CLI_CONFIG_LONGOPTS in its getopt_long table, passes every
 * option to kd_cli_config_opt first, and calls kd_cli_config_build once the
 * options are parsed. */
typedef struct kd_cli_config {
    const char *path;
    char **sets;
    int nsets;
    int print;
} kd_cli_config;

enum { KD_OPT_SET = 0x1000, KD_OPT_PRINT_CONFIG };
#define KD_CLI_CONFIG_LONGOPTS                                   \
    {"config", required_argument, NULL, 'c'},                    \
    {"set", required_argument, NULL, KD_OPT_SET},                \
    {"print-config", no_argument, NULL, KD_OPT_PRINT_CONFIG}
#define KD_CLI_CONFIG_HELP                                                               \
    "  -c, --config FILE    YAML configuration (see configs/ for documented examples)\n" \
    "      --set KEY=VALUE  override one key, e.g. --set runtime.seed=7 (repeatable)\n"  \
    "      --print-config   print the effective configuration as YAML and exit\n"

/* 1 if `opt` was one of the config options (consumed), 0 otherwise. */
int kd_cli_config_opt(kd_cli_config *c, int opt, const char *arg);

/* Defaults, file, overrides; with --print-config, print and set *printed = 1.
 * Returns a kd_status; the caller releases `cfg` with kd_cfg_release. */
int kd_cli_config_build(kd_cli_config *c, const kd_cfg_schema *schema, void *cfg, int *printed);

void kd_cli_config_release(kd_cli_config *c);

/* The whole of a config-driven command that has no options of its own:
 * parse [CONFIG.yaml] -c --set --print-config -h, build the configuration of
 * `schema`, apply its runtime section, call run(cfg) and turn the status into
 * an exit code. Without `cuda` the command runs on the CPU: runtime.device
 * cuda is refused and auto means cpu; with it (generate: the DeepSeek teacher
 * on the GPU) auto means cuda when a device is visible. */
int kd_cli_config_main(int argc, char **argv, const char *cmd, const kd_cfg_schema *schema,
                       void (*usage)(FILE *), int (*run)(void *cfg), int cuda);
