/* cli_config.c - the --config / --set / --print-config options. See cli.h. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

int kd_cli_config_opt(kd_cli_config *c, int opt, const char *arg)
{
    switch (opt) {
    case 'c':
        c->path = arg;
        return 1;
    case KD_OPT_SET: {
        char **n = realloc(c->sets, (size_t)(c->nsets + 1) * sizeof *n);
        if (!n) {
            kd_error("out of memory");
            exit(1);
        }
        c->sets = n;
        c->sets[c->nsets++] = (char *)arg;
        return 1;
    }
    case KD_OPT_PRINT_CONFIG:
        c->print = 1;
        return 1;
    }
    return 0;
}

int kd_cli_config_build(kd_cli_config *c, const kd_cfg_schema *schema, void *cfg, int *printed)
{
    *printed = 0;
    KD_TRY(kd_cfg_build(schema, cfg, c->path, c->sets, c->nsets));
    if (c->print) {
        KD_TRY(kd_cfg_print(schema, cfg, stdout, 1));
        *printed = 1;
    }
    return KD_OK;
}

void kd_cli_config_release(kd_cli_config *c)
{
    free(c->sets);
    c->sets = NULL;
    c->nsets = 0;
}
