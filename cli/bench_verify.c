/* bench_verify.c - `distill bench verify`: the math verifier's throughput on
 * one core over a labelled JSONL file (bench/math_verify_public.jsonl: cases
 * from Math-Verify's own tests), and its agreement with the labels. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/log.h"
#include "rejection/math.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill bench verify [--jsonl FILE] [--repeat R] [--json]\n\n"
               "Runs the math verifier on every {\"gold\", \"pred\", \"expected\", \"note\"} line of\n"
               "FILE (default bench/math_verify_public.jsonl), each with its note's settings, on\n"
               "one thread, R passes (default 20; the fastest counts). Prints checks/s and the\n"
               "agreement with \"expected\". Peer: Math-Verify's verify() (not run here).\n\n"
               "options:\n"
               "      --jsonl FILE   the cases\n"
               "      --repeat R     passes (default 20)\n"
               "      --json         one JSON object\n"
               "  -h, --help         this help\n");
}

typedef struct case_ {
    char *gold, *pred;
    size_t gl, pl;
    int expected;
    kd_math_cfg cfg;
} case_;

int bench_verify(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"jsonl", required_argument, NULL, 'f'}, {"repeat", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = "bench/math_verify_public.jsonl";
    long repeat = 20;
    int json = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'h':
            usage_(stdout);
            return 0;
        case 'f':
            path = optarg;
            break;
        case 'r':
            repeat = strtol(optarg, &end, 10);
            if (*end || repeat <= 0 || repeat > 100000)
                return kd_cli_usage_error("bench verify", "--repeat takes a positive integer");
            break;
        case 'j':
            json = 1;
            break;
        default:
            return kd_cli_usage_error("bench verify", "bad option");
        }
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return kd_cli_fail(kd_err(KD_E_NOTFOUND, "cannot open '%s'", path));
    case_ *cs = NULL;
    size_t n = 0, cap = 0, lineno = 0, lcap = 0;
    char *line = NULL;
    ssize_t got;
    int st = KD_OK;
    while (st == KD_OK && (got = getline(&line, &lcap, f)) > 0) {
        lineno++;
        json_t *j = json_loadb(line, (size_t)got, 0, NULL);
        json_t *g = json_object_get(j, "gold"), *p = json_object_get(j, "pred"), *e = json_object_get(j, "expected");
        json_t *note = json_object_get(j, "note");
        if (!json_is_string(g) || !json_is_string(p) || !json_is_boolean(e)) {
            st = kd_err(KD_E_FORMAT, "'%s' line %zu: expected {\"gold\", \"pred\", \"expected\"}", path, lineno);
        } else {
            if (n == cap) {
                cap = cap ? 2 * cap : 512;
                case_ *nc = realloc(cs, cap * sizeof *nc);
                if (!nc) {
                    st = kd_err(KD_E_NOMEM, "cases");
                    json_decref(j);
                    break;
                }
                cs = nc;
            }
            case_ *c = &cs[n++];
            c->gl = json_string_length(g);
            c->pl = json_string_length(p);
            c->gold = malloc(c->gl + 1);
            c->pred = malloc(c->pl + 1);
            if (c->gold)
                memcpy(c->gold, json_string_value(g), c->gl + 1);
            if (c->pred)
                memcpy(c->pred, json_string_value(p), c->pl + 1);
            c->expected = json_is_true(e);
            kd_math_cfg_init(&c->cfg);
            if (json_is_string(note))
                st = kd_math_cfg_from_note(json_string_value(note), &c->cfg);
            if (!c->gold || !c->pred)
                st = kd_err(KD_E_NOMEM, "cases");
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    size_t agree = 0;
    double best = 1e300;
    for (long r = 0; st == KD_OK && r < repeat; r++) {
        size_t a = 0;
        double t0 = kd_now();
        for (size_t i = 0; st == KD_OK && i < n; i++) {
            kd_verdict v;
            kd_verdict_init(&v);
            st = kd_math_verify(&cs[i].cfg, cs[i].gold, cs[i].gl, cs[i].pred, cs[i].pl, &v);
            a += (v.accepted != 0) == cs[i].expected;
            kd_verdict_release(&v);
        }
        double t = kd_now() - t0;
        best = t < best ? t : best;
        agree = a;
    }
    if (st == KD_OK && n) {
        double rate = (double)n / best;
        if (json)
            printf("{\"bench\": \"verify\", \"file\": \"%s\", \"cases\": %zu, \"agree\": %zu, \"agreement\": %.4f, "
                   "\"threads\": 1, \"checks_per_second\": %.0f, \"us_per_check\": %.2f}\n",
                   path, n, agree, (double)agree / (double)n, rate, 1e6 / rate);
        else
            printf("bench verify: %zu cases, agreement %zu/%zu (%.1f%%), %.0f checks/s on one thread (%.2f us/check), "
                   "best of %ld passes\n",
                   n, agree, n, 100.0 * (double)agree / (double)n, rate, 1e6 / rate, repeat);
    }
    for (size_t i = 0; i < n; i++) {
        free(cs[i].gold);
        free(cs[i].pred);
    }
    free(cs);
    return st ? kd_cli_fail(st) : 0;
}
