/* cmd_bench.c - `distill bench <what>`: benchmark programs that print figures.
 * Timings are never assertions; record what they print in bench/RESULTS.md with
 * the date, the machine, the command and the peer's figure from the same run. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "core/tokenizer.h"
#include "core/util.h"

static void usage_tokenize(FILE *f)
{
    fprintf(f, "usage: distill bench tokenize --tokenizer PATH --corpus FILE.jsonl [--threads N] [--repeat R] [--json]\n\n"
               "Encode throughput: every {\"text\": ...} of FILE, R times (default 3; the best pass\n"
               "counts), on one thread and then on N threads (default: all online CPUs),\n"
               "add_special_tokens off. Prints MB/s of UTF-8 input and tokens/s.\n\n"
               "options:\n"
               "      --tokenizer PATH  a folder with tokenizer.json, or the file\n"
               "      --corpus FILE     JSONL, one {\"text\": ...} per line\n"
               "      --threads N       threads for the parallel pass (default: online CPUs)\n"
               "      --repeat R        passes per setting; the fastest is reported (default 3)\n"
               "      --json            one JSON object instead of text\n"
               "  -h, --help            this help\n");
}

typedef struct {
    char **texts;
    size_t *lens;
    size_t n, cap, bytes;
} corpus;

static void corpus_release(corpus *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->texts[i]);
    free(c->texts);
    free(c->lens);
}

static int corpus_load(const char *path, corpus *c)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kd_err(KD_E_NOTFOUND, "cannot open corpus '%s'", path);
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    int st = KD_OK;
    while (st == KD_OK && (got = getline(&line, &cap, f)) > 0) {
        lineno++;
        json_error_t e;
        json_t *j = json_loadb(line, (size_t)got, 0, &e);
        json_t *t = j ? json_object_get(j, "text") : NULL;
        if (!json_is_string(t)) {
            st = kd_err(KD_E_FORMAT, "'%s' line %zu: expected {\"text\": ...}%s%s", path, lineno,
                        j ? "" : ": ", j ? "" : e.text);
        } else {
            if (c->n == c->cap) {
                c->cap = c->cap ? 2 * c->cap : 1024;
                char **nt = realloc(c->texts, c->cap * sizeof *nt);
                size_t *nl = nt ? realloc(c->lens, c->cap * sizeof *nl) : NULL;
                if (nt)
                    c->texts = nt;
                if (nl)
                    c->lens = nl;
                if (!nt || !nl)
                    st = kd_err(KD_E_NOMEM, "corpus");
            }
            if (st == KD_OK) {
                size_t len = json_string_length(t);
                c->texts[c->n] = malloc(len + 1);
                if (!c->texts[c->n])
                    st = kd_err(KD_E_NOMEM, "corpus");
                else {
                    memcpy(c->texts[c->n], json_string_value(t), len + 1);
                    c->lens[c->n++] = len;
                    c->bytes += len;
                }
            }
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return st;
}

/* Best of `repeat` passes: seconds and tokens of one pass. */
static int time_passes(const kd_tokenizer *tok, const corpus *c, int threads, int repeat, double *best,
                       uint64_t *tokens)
{
    kd_ids *outs = calloc(c->n, sizeof *outs);
    if (!outs)
        return kd_err(KD_E_NOMEM, "ids");
    *best = 1e30;
    int st = KD_OK;
    for (int r = 0; r < repeat && st == KD_OK; r++) {
        for (size_t i = 0; i < c->n; i++)
            outs[i].n = 0;
        double t0 = kd_now();
        if (threads == 1) {
            for (size_t i = 0; i < c->n && st == KD_OK; i++)
                st = kd_tok_encode(tok, c->texts[i], c->lens[i], 0, &outs[i]);
        } else {
            st = kd_tok_encode_batch(tok, (const char *const *)c->texts, c->lens, c->n, 0, threads, outs);
        }
        double dt = kd_now() - t0;
        if (dt < *best)
            *best = dt;
    }
    *tokens = 0;
    for (size_t i = 0; i < c->n; i++) {
        *tokens += outs[i].n;
        kd_ids_release(&outs[i]);
    }
    free(outs);
    return st;
}

static int bench_tokenize(int argc, char **argv)
{
    static const struct option longopts[] = {{"tokenizer", required_argument, NULL, 't'},
                                              {"corpus", required_argument, NULL, 'c'},
                                              {"threads", required_argument, NULL, 'j'},
                                              {"repeat", required_argument, NULL, 'r'},
                                              {"json", no_argument, NULL, 'J'},
                                              {"help", no_argument, NULL, 'h'},
                                              {NULL, 0, NULL, 0}};
    const char *tpath = NULL, *cpath = NULL;
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), repeat = 3, as_json = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 't': tpath = optarg; break;
        case 'c': cpath = optarg; break;
        case 'j': threads = atoi(optarg); break;
        case 'r': repeat = atoi(optarg); break;
        case 'J': as_json = 1; break;
        case 'h': usage_tokenize(stdout); return 0;
        default: return kd_cli_usage_error("bench tokenize", "bad option");
        }
    }
    if (!tpath || !cpath)
        return kd_cli_usage_error("bench tokenize", "--tokenizer and --corpus are required");
    if (threads < 1 || repeat < 1)
        return kd_cli_usage_error("bench tokenize", "--threads and --repeat must be at least 1");
    if (optind < argc)
        return kd_cli_usage_error("bench tokenize", "unexpected argument '%s'", argv[optind]);

    kd_tokenizer *tok = NULL;
    corpus c = {0};
    double t0 = kd_now();
    int st = kd_tok_load(tpath, &tok);
    double load_s = kd_now() - t0;
    if (st == KD_OK)
        st = corpus_load(cpath, &c);
    double s1 = 0, sn = 0;
    uint64_t tok1 = 0, tokn = 0;
    if (st == KD_OK)
        st = time_passes(tok, &c, 1, repeat, &s1, &tok1);
    if (st == KD_OK)
        st = time_passes(tok, &c, threads, repeat, &sn, &tokn);
    if (st == KD_OK && tok1 != tokn)
        st = kd_err(KD_E_INTERNAL, "threaded encoding gave %llu tokens, single-threaded %llu",
                    (unsigned long long)tokn, (unsigned long long)tok1);
    if (st == KD_OK) {
        double mb = (double)c.bytes / 1e6;
        if (as_json)
            printf("{\"bench\": \"tokenize\", \"tokenizer\": \"%s\", \"texts\": %zu, \"bytes\": %zu, "
                   "\"tokens\": %llu, \"load_s\": %.3f, \"threads\": %d, \"mb_s_1\": %.2f, \"mb_s_n\": %.2f, "
                   "\"tok_s_1\": %.0f, \"tok_s_n\": %.0f}\n",
                   tpath, c.n, c.bytes, (unsigned long long)tok1, load_s, threads, mb / s1, mb / sn,
                   (double)tok1 / s1, (double)tok1 / sn);
        else
            printf("tokenize  %s: %zu texts, %.2f MB, %llu tokens, load %.2f s\n"
                   "  1 thread    %8.2f MB/s  %12.0f tokens/s\n"
                   "  %-3d threads %8.2f MB/s  %12.0f tokens/s\n",
                   tpath, c.n, mb, (unsigned long long)tok1, load_s, mb / s1, (double)tok1 / s1, threads,
                   mb / sn, (double)tok1 / sn);
    }
    corpus_release(&c);
    kd_tok_free(tok);
    return st == KD_OK ? 0 : kd_cli_fail(st);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: distill bench <what> [<args>]\n\n"
               "Benchmark programs. They print figures and assert nothing.\n\n"
               "benchmarks:\n"
               "  tokenize   encode throughput of a tokenizer, 1 thread and N threads\n"
               "  sft        training-step throughput of the student (CPU reference backend)\n"
               "  teacher    prefill and decode throughput of a teacher, by batch size\n"
               "  generate   bulk generation on the GPU (CUDA teacher engine), tokens/s and roofline\n"
               "  verify     math verifier checks/s on one core, and agreement with expected labels\n\n"
               "'distill bench <what> --help' for each one's options.\n");
}

int cmd_bench(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "tokenize"))
        return bench_tokenize(argc - 1, argv + 1);
    if (!strcmp(argv[1], "sft"))
        return bench_sft(argc - 1, argv + 1);
    if (!strcmp(argv[1], "teacher"))
        return bench_teacher(argc - 1, argv + 1);
    if (!strcmp(argv[1], "generate"))
        return bench_generate(argc - 1, argv + 1);
    if (!strcmp(argv[1], "verify"))
        return bench_verify(argc - 1, argv + 1);
    return kd_cli_usage_error("bench", "unknown benchmark '%s'", argv[1]);
}
