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
#include "core/status.h"

int cmd_inspect(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_version(int argc, char **argv);

/* Print "error: <kd_strerror(st)>" and return the exit code for st. */
int kd_cli_fail(int st);

/* Print "error: <msg>", then "see 'distill <cmd> --help'", and return 2. */
int kd_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
