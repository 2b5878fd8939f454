/* cmd_config.c - `distill config`: validate a YAML config against a schema and
 * print the effective configuration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/runtime.h"

static void usage(FILE *f)
{
    const char *names;
    kd_schema_find(NULL, &names);
    fprintf(f,
            "usage: distill config [--schema NAME] [-c FILE] [--set KEY=VALUE]... [--print-config]\n\n"
            "Checks a YAML configuration against a schema: unknown keys, wrong types and\n"
            "out-of-range values are errors naming file:line:col and the key path.\n"
            "Prints 'ok' when valid, or the effective configuration with --print-config.\n\n"
            "options:\n"
            "      --schema NAME    which configuration to check (default: runtime; known: %s)\n" KD_CLI_CONFIG_HELP
            "  -h, --help           this help\n",
            names);
}

int cmd_config(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"schema", required_argument, NULL, 's'}, {"help", no_argument, NULL, 'h'}, KD_CLI_CONFIG_LONGOPTS,
        {NULL, 0, NULL, 0}};
    kd_cli_config cc = {0};
    const char *schema_name = "runtime", *names;
    int opt, rc;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (kd_cli_config_opt(&cc, opt, optarg))
            continue;
        if (opt == 's')
            schema_name = optarg;
        else if (opt == 'h') {
            usage(stdout);
            kd_cli_config_release(&cc);
            return 0;
        } else {
            kd_cli_config_release(&cc);
            return kd_cli_usage_error("config", "bad option");
        }
    }
    if (optind < argc) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("config", "unexpected argument '%s' (the file goes after -c)", argv[optind]);
    }
    const kd_cfg_schema *schema = kd_schema_find(schema_name, &names);
    if (!schema) {
        kd_cli_config_release(&cc);
        return kd_cli_usage_error("config", "unknown schema '%s' (known: %s)", schema_name, names);
    }
    void *cfg = calloc(1, schema->size);
    if (!cfg) {
        kd_cli_config_release(&cc);
        return kd_cli_fail(kd_err(KD_E_NOMEM, "config struct"));
    }
    int printed = 0;
    int st = kd_cli_config_build(&cc, schema, cfg, &printed);
    if (st != KD_OK)
        rc = kd_cli_fail(st);
    else {
        if (!printed)
            printf("ok: %s is a valid '%s' configuration\n", cc.path ? cc.path : "(defaults)", schema->name);
        rc = 0;
    }
    kd_cfg_release(schema, cfg);
    free(cfg);
    kd_cli_config_release(&cc);
    return rc;
}
