/* cmd_problems.c - `distill data problems DIR`: the built-in verifiable
 * problems (data/problems.h) as JSONL files and datasets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data/problems.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill data problems DIR [--seed N] [--steps-min N] [--steps-max N]\n"
               "                          [--max-operand N] [--max-factor N] [--train N] [--gen N]\n"
               "                          [--heldout N] [--restate] [--files-only]\n\n"
               "Generates multi-step arithmetic word problems with integer answers, in three\n"
               "disjoint splits (by the problems' math, not their wording), with cold-start\n"
               "chain-of-thought written by a solver in R1's format (<think> steps </think>, then\n"
               "\\boxed{answer}). Writes DIR/train_chats.jsonl, DIR/gen_prompts.jsonl and\n"
               "DIR/heldout_prompts.jsonl, and imports them as the datasets DIR/train (chats),\n"
               "DIR/gen and DIR/heldout (prompts). A rerun with the same settings does nothing.\n\n"
               "options (defaults in brackets):\n"
               "      --seed N         [1]\n"
               "      --steps-min N    fewest steps per problem, 2..6 [2]\n"
               "      --steps-max N    most steps per problem, 2..6 [4]\n"
               "      --max-operand N  largest start amount and amount gained or lost [50]\n"
               "      --max-factor N   largest group count, size and divisor, 2..12 [9]\n"
               "      --train N        cold-start chats [2000]\n"
               "      --gen N          prompts for the teacher to answer [2000]\n"
               "      --heldout N      held-out prompts for evaluation [500]\n"
               "      --restate        the solutions quote each event before working it out\n"
               "      --files-only     write the JSONL files, import nothing\n"
               "  -h, --help           this help\n");
}

int cmd_data_problems(int argc, char **argv)
{
    enum { O_SEED = 0x3000, O_SMIN, O_SMAX, O_OPER, O_FACT, O_TRAIN, O_GEN, O_HELD, O_FILES, O_RESTATE };
    static const struct option longopts[] = {
        {"seed", required_argument, NULL, O_SEED},        {"steps-min", required_argument, NULL, O_SMIN},
        {"steps-max", required_argument, NULL, O_SMAX},   {"max-operand", required_argument, NULL, O_OPER},
        {"max-factor", required_argument, NULL, O_FACT},  {"train", required_argument, NULL, O_TRAIN},
        {"gen", required_argument, NULL, O_GEN},          {"heldout", required_argument, NULL, O_HELD},
        {"files-only", no_argument, NULL, O_FILES},       {"help", no_argument, NULL, 'h'},
        {"restate", no_argument, NULL, O_RESTATE},
        {NULL, 0, NULL, 0},
    };
    kd_problems_cfg c;
    kd_problems_cfg_init(&c);
    int files_only = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            usage_(stdout);
            return 0;
        }
        if (opt == O_RESTATE) {
            c.restate = 1;
            continue;
        }
        if (opt == O_FILES) {
            files_only = 1;
            continue;
        }
        if (opt < O_SEED || opt > O_HELD)
            return kd_cli_usage_error("data problems", "bad option");
        char *end;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (*end || optarg[0] == '-' || !optarg[0])
            return kd_cli_usage_error("data problems", "'%s' is not a non-negative integer", optarg);
        switch (opt) {
        case O_SEED: c.seed = v; break;
        case O_SMIN: c.steps_min = (int)(v > 1000 ? 1000 : v); break;
        case O_SMAX: c.steps_max = (int)(v > 1000 ? 1000 : v); break;
        case O_OPER: c.max_operand = (int)(v > 10000000 ? 10000000 : v); break;
        case O_FACT: c.max_factor = (int)(v > 1000 ? 1000 : v); break;
        case O_TRAIN: c.n_train = v; break;
        case O_GEN: c.n_gen = v; break;
        case O_HELD: c.n_heldout = v; break;
        }
    }
    if (optind + 1 != argc)
        return kd_cli_usage_error("data problems", "expected one DIR");
    int st = kd_problems_cfg_check(&c);
    if (st == KD_OK)
        st = files_only ? kd_problems_write(&c, argv[optind]) : kd_problems_import(&c, argv[optind], 1);
    if (st)
        return kd_cli_fail(st);
    printf("problems: %llu train chats, %llu generation prompts, %llu held-out prompts in %s\n",
           (unsigned long long)c.n_train, (unsigned long long)c.n_gen, (unsigned long long)c.n_heldout,
           argv[optind]);
    return 0;
}
