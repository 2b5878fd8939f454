/* cmd_tokenize.c - `distill tokenize`: encode text to token ids, or decode ids
 * to text, with a HuggingFace tokenizer.json (core/tokenizer.h); or render
 * conversations with a chat template (core/chat.h) to text or to ids and the
 * assistant loss mask. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/chat.h"
#include "core/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: distill tokenize --tokenizer PATH [--jsonl FILE] [--decode] [--add-special]\n"
               "                        [--threads N]\n"
               "       distill tokenize --template NAME --messages FILE [--text | --tokenizer PATH]\n"
               "                        [--add-generation-prompt | --no-generation-prompt]\n\n"
               "Encode text to token ids (or decode ids to text) exactly as HuggingFace\n"
               "`tokenizers` does with the same tokenizer.json.\n\n"
               "Without --jsonl, all of stdin is one text and the ids are printed as one JSON\n"
               "array; with --decode, stdin is one JSON array of ids and the text is printed.\n"
               "With --jsonl, every input line {\"text\": \"...\"} prints one line {\"ids\": [...]},\n"
               "in input order; with --decode, lines {\"ids\": [...]} print {\"text\": \"...\"}.\n\n"
               "With --template, every line {\"messages\": [{\"role\": ..., \"content\": ...}, ...]}\n"
               "of FILE is rendered as transformers' apply_chat_template does with that model's\n"
               "template (no tools; see docs/chat_templates.md) and prints one line: with --text\n"
               "{\"text\": \"...\", \"spans\": [[start, end], ...]}, the spans being the UTF-8 byte\n"
               "ranges of the assistant turns (content and closing end-of-turn token); else\n"
               "{\"ids\": [...], \"mask\": [0, 1, ...]}, mask 1 marking the tokens of assistant\n"
               "turns, their end-of-turn/EOS token included.\n\n"
               "options:\n"
               "  -t, --tokenizer PATH  folder holding tokenizer.json (and tokenizer_config.json),\n"
               "                        or the tokenizer.json file itself (required, except with\n"
               "                        --template --text, which does not read it)\n"
               "  -j, --jsonl FILE      read JSON lines from FILE ('-' for stdin)\n"
               "  -d, --decode          decode ids to text instead of encoding\n"
               "  -s, --add-special     add the special tokens the tokenizer puts around a text\n"
               "                        (e.g. Llama 3's <|begin_of_text|>); with --decode, keep\n"
               "                        special tokens in the text (default: skip them)\n"
               "  -n, --threads N       encoding threads for --jsonl (default: all CPUs)\n"
               "  -T, --template NAME   chat template: %s\n"
               "  -m, --messages FILE   JSON lines of conversations ('-' for stdin)\n"
               "      --text            print the rendered text instead of ids\n"
               "      --add-generation-prompt  end with the assistant header (for generation)\n"
               "      --no-generation-prompt   do not (the default, as in transformers)\n"
               "  -h, --help            this help\n\n"
               "exit codes: 0 success, 1 bad input (the message names the line) or a tokenizer\n"
               "that cannot be loaded, 2 usage error\n",
            kd_chat_template_names());
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

/* One conversation line: its messages, pointing into the JSON object o. */
static int parse_chat_line(const char *src, size_t lineno, const char *line, size_t len, json_t **obj,
                           kd_chat_msg **msgs, size_t *n)
{
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    *obj = NULL;
    if (!o)
        return kd_err(KD_E_FORMAT, "%s:%zu: not valid JSON: %s", src, lineno, je.text);
    json_t *arr = json_object_get(o, "messages");
    if (!json_is_object(o) || !json_is_array(arr)) {
        json_decref(o);
        return kd_err(KD_E_FORMAT, "%s:%zu: expected an object with a \"messages\" array", src, lineno);
    }
    size_t k = json_array_size(arr);
    kd_chat_msg *m = realloc(*msgs, (k ? k : 1) * sizeof *m);
    if (!m) {
        json_decref(o);
        return kd_err(KD_E_NOMEM, "cannot allocate %zu messages", k);
    }
    *msgs = m;
    for (size_t i = 0; i < k; i++) {
        json_t *e = json_array_get(arr, i), *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
        if (!json_is_object(e) || !json_is_string(role)) {
            json_decref(o);
            return kd_err(KD_E_FORMAT, "%s:%zu: messages[%zu] needs a string \"role\"", src, lineno, i);
        }
        if (content && !json_is_string(content) && !json_is_null(content)) {
            json_decref(o);
            return kd_err(KD_E_UNSUPPORTED, "%s:%zu: messages[%zu].content is not a string (only text content is "
                          "supported)", src, lineno, i);
        }
        m[i] = (kd_chat_msg){json_string_value(role), json_string_value(content)};
    }
    *obj = o;
    *n = k;
    return KD_OK;
}

static int print_chat_text(const char *text, const kd_span *sp, size_t nsp)
{
    json_t *spans = json_array(), *o = json_pack("{s:s,s:o}", "text", text, "spans", spans);
    int st = o ? KD_OK : kd_err(KD_E_NOMEM, "cannot build a JSON line");
    for (size_t i = 0; st == KD_OK && i < nsp; i++)
        if (json_array_append_new(spans, json_pack("[I,I]", (json_int_t)sp[i].start, (json_int_t)sp[i].end)))
            st = kd_err(KD_E_NOMEM, "cannot build a JSON line");
    char *s = st == KD_OK ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (st == KD_OK && !s)
        st = kd_err(KD_E_NOMEM, "cannot format a JSON line");
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
    }
    free(s);
    json_decref(o);
    return st;
}

static int run_chat(const kd_tokenizer *tok, kd_chat_template tpl, const char *path, int text_only, int gen)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    const char *src = strcmp(path, "-") ? path : "<stdin>";
    if (!f)
        return kd_err(KD_E_IO, "cannot open '%s': %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0, n = 0;
    ssize_t got;
    int st = KD_OK;
    kd_chat_msg *msgs = NULL;
    kd_ids ids = {0};
    while (st == KD_OK && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        json_t *o;
        if ((st = parse_chat_line(src, lineno, line, len, &o, &msgs, &n)) != KD_OK)
            break;
        if (text_only) {
            char *text = NULL;
            kd_span *sp = NULL;
            size_t nsp = 0;
            st = kd_chat_render_text(tpl, msgs, n, gen, &text, &sp, &nsp);
            if (st == KD_OK)
                st = print_chat_text(text, sp, nsp);
            free(text);
            free(sp);
        } else {
            uint8_t *mask = NULL;
            st = kd_chat_render_ids(tpl, tok, msgs, n, gen, &ids, &mask);
            if (st == KD_OK) {
                fputs("{\"ids\": ", stdout);
                print_ids(stdout, &ids);
                fputs(", \"mask\": [", stdout);
                for (size_t i = 0; i < ids.n; i++)
                    fputs(i ? (mask[i] ? ", 1" : ", 0") : (mask[i] ? "1" : "0"), stdout);
                fputs("]}\n", stdout);
            }
            free(mask);
        }
        if (st != KD_OK)
            st = kd_err_wrap(st, "%s:%zu", src, lineno);
        json_decref(o);
    }
    if (st == KD_OK && ferror(f))
        st = kd_err(KD_E_IO, "cannot read '%s'", src);
    kd_ids_release(&ids);
    free(msgs);
    free(line);
    if (f != stdin)
        fclose(f);
    return st;
}

enum { OPT_TEXT = 0x100, OPT_GEN, OPT_NO_GEN };

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tokenizer", required_argument, NULL, 't'},
        {"jsonl", required_argument, NULL, 'j'},
        {"decode", no_argument, NULL, 'd'},
        {"add-special", no_argument, NULL, 's'},
        {"threads", required_argument, NULL, 'n'},
        {"template", required_argument, NULL, 'T'},
        {"messages", required_argument, NULL, 'm'},
        {"text", no_argument, NULL, OPT_TEXT},
        {"add-generation-prompt", no_argument, NULL, OPT_GEN},
        {"no-generation-prompt", no_argument, NULL, OPT_NO_GEN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *tokpath = NULL, *jsonl = NULL, *tplname = NULL, *messages = NULL;
    int decode = 0, add_special = 0, threads = 0, text_only = 0, gen = -1, c;
    opterr = 0; /* our own messages */
    while ((c = getopt_long(argc, argv, ":t:j:dsn:T:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'T':
            tplname = optarg;
            break;
        case 'm':
            messages = optarg;
            break;
        case OPT_TEXT:
            text_only = 1;
            break;
        case OPT_GEN:
        case OPT_NO_GEN:
            if (gen >= 0 && gen != (c == OPT_GEN))
                return kd_cli_usage_error("tokenize", "--add-generation-prompt and --no-generation-prompt "
                                          "contradict each other");
            gen = c == OPT_GEN;
            break;
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
    kd_chat_template tpl = KD_CHAT_CHATML;
    if (tplname || messages || text_only || gen >= 0) {
        if (!tplname || !messages)
            return kd_cli_usage_error("tokenize", "--template NAME and --messages FILE go together (and "
                                      "--text and the generation-prompt options need them)");
        if (jsonl || decode || add_special)
            return kd_cli_usage_error("tokenize", "--template does not go with --jsonl, --decode or --add-special");
        if (kd_chat_template_find(tplname, &tpl) != KD_OK)
            return kd_cli_usage_error("tokenize", "unknown --template '%s' (known: %s)", tplname,
                                      kd_chat_template_names());
    }
    if (!tokpath && !text_only)
        return kd_cli_usage_error("tokenize", "missing --tokenizer PATH");

    kd_tokenizer *tok = NULL;
    int st = tokpath && !(tplname && text_only) ? kd_tok_load(tokpath, &tok) : KD_OK; /* --text needs none */
    if (st != KD_OK)
        return kd_cli_fail(st);
    if (tplname)
        st = run_chat(tok, tpl, messages, text_only, gen > 0);
    else
        st = jsonl ? run_jsonl(tok, jsonl, decode, add_special, threads) : run_stdin(tok, decode, add_special);
    if (fflush(stdout) != 0 && st == KD_OK)
        st = kd_err(KD_E_IO, "cannot write to stdout");
    kd_tok_free(tok);
    return st == KD_OK ? 0 : kd_cli_fail(st);
}
