/* cmd_tokenize.c - `distill tokenize`: encode text to token ids, or decode ids
 * to text, with a HuggingFace tokenizer.json (core/tokenizer.h). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: distill tokenize --tokenizer PATH [--jsonl FILE] [--decode] [--add-special]\n"
               "                        [--threads N]\n\n"
               "Encode text to token ids (or decode ids to text) exactly as HuggingFace\n"
               "`tokenizers` does with the same tokenizer.json.\n\n"
               "Without --jsonl, all of stdin is one text and the ids are printed as one JSON\n"
               "array; with --decode, stdin is one JSON array of ids and the text is printed.\n"
               "With --jsonl, every input line {\"text\": \"...\"} prints one line {\"ids\": [...]},\n"
               "in input order; with --decode, lines {\"ids\": [...]} print {\"text\": \"...\"}.\n\n"
               "options:\n"
               "  -t, --tokenizer PATH  folder holding tokenizer.json (and tokenizer_config.json),\n"
               "                        or the tokenizer.json file itself (required)\n"
               "  -j, --jsonl FILE      read JSON lines from FILE ('-' for stdin)\n"
               "  -d, --decode          decode ids to text instead of encoding\n"
               "  -s, --add-special     add the special tokens the tokenizer puts around a text\n"
               "                        (e.g. Llama 3's <|begin_of_text|>); with --decode, keep\n"
               "                        special tokens in the text (default: skip them)\n"
               "  -n, --threads N       encoding threads for --jsonl (default: all CPUs)\n"
               "  -h, --help            this help\n\n"
               "exit codes: 0 success, 1 bad input (the message names the line) or a tokenizer\n"
               "that cannot be loaded, 2 usage error\n");
}

/* The JSON line `line` of `lineno`, parsed and checked to be an object with
 * the array or string field `key`. */
static int parse_line(const char *src, size_t lineno, const char *line, size_t len, const char *key, json_t **out)
{
    json_error_t je;
    json_t *o = json_loadb(line, len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &je);
    *out = NULL;
    if (!o)
        return kd_err(KD_E_FORMAT, "%s:%zu: not valid JSON: %s", src, lineno, je.text);
    json_t *v = json_object_get(o, key);
    if (!json_is_object(o) || !v || (strcmp(key, "ids") ? !json_is_string(v) : !json_is_array(v))) {
        json_decref(o);
        return kd_err(KD_E_FORMAT, "%s:%zu: expected an object with a%s \"%s\" field", src, lineno,
                      strcmp(key, "ids") ? " string" : "n array", key);
    }
    *out = o;
    return KD_OK;
}

/* A JSON array of token ids into a kd_ids. */
static int ids_of(const char *src, size_t lineno, json_t *arr, kd_ids *ids)
{
    ids->n = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        double d = json_number_value(v);
        if (!json_is_number(v) || d != (double)(int32_t)d)
            return kd_err(KD_E_FORMAT, "%s:%zu: ids[%zu] is not an integer token id", src, lineno, i);
        KD_TRY(kd_ids_push(ids, (int32_t)d));
    }
    return KD_OK;
}

static void print_ids(FILE *f, const kd_ids *v)
{
    fputc('[', f);
    for (size_t i = 0; i < v->n; i++)
        fprintf(f, i ? ", %d" : "%d", (int)v->ids[i]);
    fputc(']', f);
}

static int print_text_line(const char *text, size_t len)
{
    json_t *o = json_pack("{s:s%}", "text", text, len);
    if (!o)
        return kd_err(KD_E_NOMEM, "cannot build a JSON line");
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!s)
        return kd_err(KD_E_NOMEM, "cannot format a JSON line");
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    return KD_OK;
}

/* Encode one batch of JSONL lines (texts[0..n) from lines first..) and print them. */
static int flush_batch(const kd_tokenizer *tok, const char *src, json_t **objs, size_t first_line, size_t n,
                       int add_special, int threads)
{
    const char **texts = calloc(n ? n : 1, sizeof *texts);
    size_t *lens = calloc(n ? n : 1, sizeof *lens);
    kd_ids *outs = calloc(n ? n : 1, sizeof *outs);
    int st = KD_OK;
    if (!texts || !lens || !outs)
        st = kd_err(KD_E_NOMEM, "cannot allocate a batch of %zu lines", n);
    for (size_t i = 0; st == KD_OK && i < n; i++) {
        json_t *v = json_object_get(objs[i], "text");
        texts[i] = json_string_value(v);
        lens[i] = json_string_length(v);
    }
    if (st == KD_OK) {
        st = kd_tok_encode_batch(tok, texts, lens, n, add_special, threads, outs);
        if (st != KD_OK) {
            /* name the input line: the batch says "text i: ..." */
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                kd_ids probe = {0};
                if (kd_tok_encode(tok, texts[i], lens[i], add_special, &probe) != KD_OK) {
                    bad = i;
                    kd_ids_release(&probe);
                    break;
                }
                kd_ids_release(&probe);
            }
            st = kd_err_wrap(st, "%s:%zu", src, first_line + bad);
        }
    }
    for (size_t i = 0; st == KD_OK && i < n; i++) {
        fputs("{\"ids\": ", stdout);
        print_ids(stdout, &outs[i]);
        fputs("}\n", stdout);
    }
    for (size_t i = 0; outs && i < n; i++)
        kd_ids_release(&outs[i]);
    free(texts);
    free(lens);
    free(outs);
    return st;
}

#define BATCH_LINES 4096

static int run_jsonl(const kd_tokenizer *tok, const char *path, int decode, int add_special, int threads)
{
    kd_progress prog; /* total unknown: a line count and a rate on stderr for long runs */
    kd_progress_init(&prog, decode ? "decode" : "tokenize", 0);
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    const char *src = strcmp(path, "-") ? path : "<stdin>";
    if (!f)
        return kd_err(KD_E_IO, "cannot open '%s'", path);
    char *line = NULL;
    size_t cap = 0, lineno = 0, nb = 0, first = 1;
    ssize_t got;
    json_t *objs[BATCH_LINES];
    int st = KD_OK;
    kd_ids ids = {0};
    while (st == KD_OK && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue; /* blank lines carry nothing */
        json_t *o;
        if ((st = parse_line(src, lineno, line, len, decode ? "ids" : "text", &o)) != KD_OK)
            break;
        if (decode) {
            char *text = NULL;
            size_t tl;
            st = ids_of(src, lineno, json_object_get(o, "ids"), &ids);
            if (st == KD_OK && (st = kd_tok_decode(tok, ids.ids, ids.n, !add_special, &text, &tl)) != KD_OK)
                st = kd_err_wrap(st, "%s:%zu", src, lineno);
            if (st == KD_OK)
                st = print_text_line(text, tl);
            free(text);
            json_decref(o);
            kd_progress_add(&prog, 1);
            continue;
        }
        if (nb == 0)
            first = lineno;
        objs[nb++] = o;
        if (nb == BATCH_LINES) {
            st = flush_batch(tok, src, objs, first, nb, add_special, threads);
            kd_progress_add(&prog, nb);
            while (nb)
                json_decref(objs[--nb]);
        }
    }
    if (st == KD_OK && nb) {
        st = flush_batch(tok, src, objs, first, nb, add_special, threads);
        kd_progress_add(&prog, nb);
    }
    while (nb)
        json_decref(objs[--nb]);
    if (st == KD_OK && ferror(f))
        st = kd_err(KD_E_IO, "cannot read '%s'", src);
    if (lineno >= BATCH_LINES) /* short runs stay quiet */
        kd_progress_finish(&prog);
    kd_ids_release(&ids);
    free(line);
    if (f != stdin)
        fclose(f);
    return st;
}

/* All of stdin as one text (or, with decode, one JSON array of ids). */
static int run_stdin(const kd_tokenizer *tok, int decode, int add_special)
{
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int st = KD_OK;
    for (;;) {
        if (n + 65536 > cap) {
            char *p = realloc(buf, cap = (cap ? 2 * cap : 65536) + 65536);
            if (!p) {
                free(buf);
                return kd_err(KD_E_NOMEM, "cannot read stdin");
            }
            buf = p;
        }
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(stdin))
        st = kd_err(KD_E_IO, "cannot read stdin");
    kd_ids ids = {0};
    if (st == KD_OK && decode) {
        json_error_t je;
        json_t *arr = json_loadb(buf, n, JSON_DECODE_INT_AS_REAL, &je);
        char *text = NULL;
        size_t tl;
        if (!json_is_array(arr))
            st = kd_err(KD_E_FORMAT, "<stdin>: expected a JSON array of token ids%s%s", arr ? "" : ": ",
                        arr ? "" : je.text);
        if (st == KD_OK)
            st = ids_of("<stdin>", 1, arr, &ids);
        if (st == KD_OK)
            st = kd_tok_decode(tok, ids.ids, ids.n, !add_special, &text, &tl);
        if (st == KD_OK)
            fwrite(text, 1, tl, stdout);
        free(text);
        json_decref(arr);
    } else if (st == KD_OK) {
        st = kd_tok_encode(tok, buf, n, add_special, &ids);
        if (st == KD_OK) {
            print_ids(stdout, &ids);
            fputc('\n', stdout);
        }
    }
    kd_ids_release(&ids);
    free(buf);
    return st;
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tokenizer", required_argument, NULL, 't'},
        {"jsonl", required_argument, NULL, 'j'},
        {"decode", no_argument, NULL, 'd'},
        {"add-special", no_argument, NULL, 's'},
        {"threads", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *tokpath = NULL, *jsonl = NULL;
    int decode = 0, add_special = 0, threads = 0, c;
    opterr = 0; /* our own messages */
    while ((c = getopt_long(argc, argv, ":t:j:dsn:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            tokpath = optarg;
            break;
        case 'j':
            jsonl = optarg;
            break;
        case 'd':
            decode = 1;
            break;
        case 's':
            add_special = 1;
            break;
        case 'n': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 1024)
                return kd_cli_usage_error("tokenize", "--threads wants a number from 1 to 1024, not '%s'", optarg);
            threads = (int)v;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            return kd_cli_usage_error("tokenize", "option '%s' needs a value", argv[optind - 1]);
        default:
            return kd_cli_usage_error("tokenize", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return kd_cli_usage_error("tokenize", "unexpected argument '%s'", argv[optind]);
    if (!tokpath)
        return kd_cli_usage_error("tokenize", "missing --tokenizer PATH");

    kd_tokenizer *tok;
    int st = kd_tok_load(tokpath, &tok);
    if (st != KD_OK)
        return kd_cli_fail(st);
    st = jsonl ? run_jsonl(tok, jsonl, decode, add_special, threads) : run_stdin(tok, decode, add_special);
    if (fflush(stdout) != 0 && st == KD_OK)
        st = kd_err(KD_E_IO, "cannot write to stdout");
    kd_tok_free(tok);
    return st == KD_OK ? 0 : kd_cli_fail(st);
}
