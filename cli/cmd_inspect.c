/* cmd_inspect.c - `distill inspect [--json] DIR`: check a HuggingFace model
 * folder against its architecture and print what it holds (core/inspect.h). */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "core/inspect.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: distill inspect [--json] DIR\n\n"
               "Check the HuggingFace model folder DIR (config.json and model.safetensors, or\n"
               "the shards of model.safetensors.index.json): every tensor its architecture\n"
               "needs must be present with the right shape. Then print the architecture, the\n"
               "main dimensions, rope, parameter counts (total and, for MoE, active per token),\n"
               "the tensors by dtype, and the memory the weights and the KV cache need.\n\n"
               "options:\n"
               "      --json     print the result as one JSON object on stdout instead of text\n"
               "  -h, --help     this help\n\n"
               "exit codes: 0 the folder is complete, 1 it is not or cannot be read, 2 usage error\n");
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int json = 0, c;
    opterr = 0; /* our own messages */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return kd_cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return kd_cli_usage_error("inspect", "missing the model folder DIR");
    if (optind + 1 < argc)
        return kd_cli_usage_error("inspect", "unexpected argument '%s'", argv[optind + 1]);

    kd_inspect_result res;
    int st = kd_inspect_model(argv[optind], json ? NULL : stdout, &res);
    if (st == KD_OK && json)
        st = kd_inspect_write_json(&res, stdout);
    return st == KD_OK ? 0 : kd_cli_fail(st);
}
