/* jsonl.c - JSONL import and export. See jsonl.h for the shapes and the rules.
 *
 * Import is a loop over batches of about batch_bytes of input:
 *   1. the line reader hands out the complete lines in its buffer;
 *   2. parser threads turn each line into encoded record values (or a "bad
 *      line" message), each thread a contiguous slice, nothing shared;
 *   3. the main thread, in input order, assigns keys, checks conflicts
 *      against the dataset, and puts the records;
 *   4. the batch commits together with the import's progress in meta.
 * Step 3 puts nothing for a line before all of its checks pass, so a bad line
 * leaves no partial records behind.
 */
#include "jsonl.h"
#include "core/json.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"

static const char *const kind_names[] = {"prompts", "chats", "generations"};

const char *kd_jsonl_kind_name(int k) { return k >= 0 && k < 3 ? kind_names[k] : "?"; }

int kd_jsonl_kind_parse(const char *name)
{
    for (int i = 0; name && i < 3; i++)
        if (!strcmp(name, kind_names[i]))
            return i;
    return -1;
}

void kd_import_opts_init(kd_import_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = -1;
}

/* ------------------------------------------------------------------------ */
/* Field mapping: the names given, or resolved from the input.
 *
 * The prompt (and generation) name is decided by the first line that has a
 * candidate; the lines before it lack the field, so they are bad lines
 * anyway. The answer name is optional, so it stays pending until the first
 * line that has an answer candidate key at all: the lines before it had none
 * to map, and the lineage entry is updated in the transaction that resolves
 * it. Either way each record's fields are exported under the names it was
 * read from. */

#define FIELD_MAX 128
typedef struct fieldmap {
    char prompt[FIELD_MAX], answer[FIELD_MAX], id[FIELD_MAX], messages[FIELD_MAX];
    char generation[FIELD_MAX], sample[FIELD_MAX], verdict[FIELD_MAX];
    int form;           /* generations: 0 not yet known, 1 scalar, 2 array */
    int resolved;       /* prompt (and generation) names are decided */
    int answer_pending; /* no line has had an answer candidate yet: answer is "" for now */
} fieldmap;

static const char *const prompt_candidates[] = {"problem", "question", "prompt", NULL};
static const char *const answer_candidates[] = {"answer", "solution", NULL};
static const char *const generation_candidates[] = {"generation", "generations", "response", "output", "completion",
                                                    NULL};

static int set_name(char *dst, const char *src, const char *what)
{
    if (strlen(src) >= FIELD_MAX)
        return kd_err(KD_E_USAGE, "the %s field name is longer than %d bytes", what, FIELD_MAX - 1);
    snprintf(dst, FIELD_MAX, "%s", src);
    return KD_OK;
}

/* The names fixed by the options. Unresolved: prompt/answer (prompts,
 * generations) and generation/form (generations) when not given. */
static int fieldmap_from_opts(fieldmap *fm, const kd_import_opts *o)
{
    memset(fm, 0, sizeof *fm);
    if (o->prompt_field)
        KD_TRY(set_name(fm->prompt, o->prompt_field, "prompt"));
    if (o->answer_field)
        KD_TRY(set_name(fm->answer, o->answer_field, "answer"));
    if (o->id_field)
        KD_TRY(set_name(fm->id, o->id_field, "id"));
    KD_TRY(set_name(fm->messages, o->messages_field ? o->messages_field : "messages", "messages"));
    if (o->generation_field)
        KD_TRY(set_name(fm->generation, o->generation_field, "generation"));
    if (o->sample_field)
        KD_TRY(set_name(fm->sample, o->sample_field, "sample"));
    if (o->verdict_field)
        KD_TRY(set_name(fm->verdict, o->verdict_field, "verdict"));
    if (o->kind != KD_KIND_CHATS)
        fm->messages[0] = 0;
    if (o->kind != KD_KIND_GENERATIONS)
        fm->generation[0] = fm->sample[0] = fm->verdict[0] = 0;
    fm->resolved = o->kind == KD_KIND_CHATS ? 1 : 0;
    fm->answer_pending = o->kind != KD_KIND_CHATS && !o->answer_field;
    return KD_OK;
}

/* Resolve a pending answer name from one line. Returns 1 when it resolved. */
static int answer_resolve(fieldmap *fm, const json_t *obj)
{
    if (!fm->answer_pending || !json_is_object(obj))
        return 0;
    for (int i = 0; answer_candidates[i]; i++)
        if (json_object_get(obj, answer_candidates[i]) && strcmp(answer_candidates[i], fm->prompt) != 0) {
            snprintf(fm->answer, FIELD_MAX, "%s", answer_candidates[i]);
            fm->answer_pending = 0;
            return 1;
        }
    return 0;
}

/* Try to resolve the unresolved names from one parsed line. Returns 1 when
 * everything is resolved. */
static int fieldmap_resolve(fieldmap *fm, const kd_import_opts *o, const json_t *obj)
{
    if (fm->resolved)
        return 1;
    if (!json_is_object(obj))
        return 0;
    const char *prompt = fm->prompt[0] ? fm->prompt : NULL;
    for (int i = 0; !prompt && prompt_candidates[i]; i++)
        if (json_is_string(json_object_get(obj, prompt_candidates[i])))
            prompt = prompt_candidates[i];
    if (!prompt || !json_is_string(json_object_get(obj, prompt)))
        return 0;
    const char *gen = NULL;
    int form = 0;
    if (o->kind == KD_KIND_GENERATIONS) {
        for (int i = 0; !gen && (fm->generation[0] ? i == 0 : generation_candidates[i] != NULL); i++) {
            const char *name = fm->generation[0] ? fm->generation : generation_candidates[i];
            const json_t *v = json_object_get(obj, name);
            if (json_is_string(v) || json_is_array(v)) {
                gen = name;
                form = json_is_string(v) ? 1 : 2;
            }
        }
        if (!gen)
            return 0;
    }
    if (prompt != fm->prompt)
        snprintf(fm->prompt, FIELD_MAX, "%s", prompt);
    if (gen) {
        if (gen != fm->generation)
            snprintf(fm->generation, FIELD_MAX, "%s", gen);
        fm->form = form;
        if (form == 2)
            fm->sample[0] = 0; /* array positions are the sample indices */
    }
    fm->resolved = 1;
    return 1;
}

static json_t *name_or_null(const char *s) { return s[0] ? json_string(s) : json_null(); }

static json_t *fieldmap_json(const fieldmap *fm, int kind)
{
    json_t *f = json_object();
    json_object_set_new(f, "id", name_or_null(fm->id));
    if (kind == KD_KIND_CHATS) {
        json_object_set_new(f, "messages", name_or_null(fm->messages));
    } else {
        json_object_set_new(f, "prompt", name_or_null(fm->prompt));
    }
    json_object_set_new(f, "answer", name_or_null(fm->answer));
    if (kind == KD_KIND_GENERATIONS) {
        json_object_set_new(f, "generation", name_or_null(fm->generation));
        json_object_set_new(f, "sample", name_or_null(fm->sample));
        json_object_set_new(f, "verdict", name_or_null(fm->verdict));
    }
    return f;
}

static void copy_name(char *dst, const json_t *fields, const char *key)
{
    const json_t *v = json_object_get(fields, key);
    snprintf(dst, FIELD_MAX, "%s", json_is_string(v) ? json_string_value(v) : "");
}

static void fieldmap_from_json(fieldmap *fm, const json_t *fields, const char *form, int answer_pending)
{
    fm->answer_pending = answer_pending;
    copy_name(fm->id, fields, "id");
    copy_name(fm->messages, fields, "messages");
    copy_name(fm->prompt, fields, "prompt");
    copy_name(fm->answer, fields, "answer");
    copy_name(fm->generation, fields, "generation");
    copy_name(fm->sample, fields, "sample");
    copy_name(fm->verdict, fields, "verdict");
    fm->form = form && !strcmp(form, "array") ? 2 : form && !strcmp(form, "scalar") ? 1 : 0;
    fm->resolved = 1;
}

/* ------------------------------------------------------------------------ */
/* The line reader: complete lines out of a buffer refilled with read(2) */

typedef struct line {
    const char *p;
    size_t n;
    uint64_t no;      /* 1-based line number */
    uint64_t end;     /* file offset just past the line (and its newline) */
    size_t too_long;  /* > 0: the line was this many bytes, over max_line; p is NULL */
} line;

typedef struct reader {
    int fd;
    char *buf;
    size_t cap, start, end;
    int eof;
    uint64_t off;     /* file offset of buf[start] */
    uint64_t line_no; /* lines handed out so far (absolute) */
    size_t max_line;
    const char *file;
} reader;

static int reader_fill(reader *rd)
{
    if (rd->start > 0) {
        memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
        rd->end -= rd->start;
        rd->start = 0;
    }
    while (!rd->eof && rd->end < rd->cap) {
        ssize_t r = read(rd->fd, rd->buf + rd->end, rd->cap - rd->end);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return kd_err(KD_E_IO, "cannot read '%s': %s", rd->file, strerror(errno));
        if (r == 0)
            rd->eof = 1;
        rd->end += (size_t)r;
    }
    return KD_OK;
}

/* Skip the rest of an over-long line (up to and past its newline); *n gets
 * its whole length. */
static int reader_skip_line(reader *rd, size_t *n)
{
    *n = 0;
    for (;;) {
        char *nl = memchr(rd->buf + rd->start, '\n', rd->end - rd->start);
        if (nl) {
            size_t k = (size_t)(nl - (rd->buf + rd->start));
            *n += k;
            rd->off += k + 1;
            rd->start += k + 1;
            return KD_OK;
        }
        *n += rd->end - rd->start;
        rd->off += rd->end - rd->start;
        rd->start = rd->end;
        if (rd->eof)
            return KD_OK;
        KD_TRY(reader_fill(rd));
    }
}

/* Hand out the complete lines now in the buffer, up to about `want` bytes,
 * into *lines (grown as needed). The lines point into the buffer: valid until
 * the next call. *nlines 0 means the end of the file. */
static int reader_next(reader *rd, size_t want, line **lines, size_t *nlines, size_t *cap)
{
    *nlines = 0;
    KD_TRY(reader_fill(rd));
    size_t taken = 0;
    for (;;) {
        while (rd->start < rd->end && taken < want) {
            char *p = rd->buf + rd->start;
            char *nl = memchr(p, '\n', rd->end - rd->start);
            size_t n;
            if (nl)
                n = (size_t)(nl - p);
            else if (rd->eof)
                n = rd->end - rd->start;
            else
                break; /* a partial line: needs more data */
            size_t adv = n + (nl ? 1 : 0);
            if (*nlines == *cap) {
                size_t nc = *cap ? *cap * 2 : 4096;
                line *l = realloc(*lines, nc * sizeof *l);
                if (!l)
                    return kd_err(KD_E_NOMEM, "line table");
                *lines = l;
                *cap = nc;
            }
            line *l = &(*lines)[(*nlines)++];
            rd->line_no++;
            l->no = rd->line_no;
            l->too_long = 0;
            if (n > rd->max_line) {
                l->p = NULL;
                l->n = 0;
                l->too_long = n;
            } else {
                if (n && p[n - 1] == '\r')
                    n--;
                l->p = p;
                l->n = n;
            }
            rd->start += adv;
            rd->off += adv;
            l->end = rd->off;
            taken += adv;
        }
        if (*nlines > 0 || (rd->eof && rd->start == rd->end))
            return KD_OK;
        /* no complete line in the buffer: the current line is longer than it */
        size_t have = rd->end - rd->start;
        if (have > rd->max_line) {
            size_t n;
            uint64_t no = ++rd->line_no;
            KD_TRY(reader_skip_line(rd, &n));
            if (*nlines == *cap) {
                line *l = realloc(*lines, 4096 * sizeof *l);
                if (!l)
                    return kd_err(KD_E_NOMEM, "line table");
                *lines = l;
                *cap = 4096;
            }
            (*lines)[0] = (line){NULL, 0, no, rd->off, n};
            *nlines = 1;
            return KD_OK;
        }
        size_t nc = rd->cap * 2 > rd->max_line + 1 ? rd->max_line + 1 : rd->cap * 2;
        if (nc <= rd->cap)
            nc = rd->cap + 1;
        char *b = realloc(rd->buf, nc);
        if (!b)
            return kd_err(KD_E_NOMEM, "cannot grow the line buffer to %zu bytes", nc);
        rd->buf = b;
        rd->cap = nc;
        KD_TRY(reader_fill(rd));
    }
}

/* ------------------------------------------------------------------------ */
/* Parsing lines into encoded records (on worker threads) */

typedef struct import_ctx {
    const kd_import_opts *o;
    fieldmap fm;
    uint32_t lineage;
    uint64_t created_ms;
} import_ctx;

typedef struct gen_ent {
    size_t gval, glen;
    int has_verdict;
    size_t vval, vlen;
} gen_ent;

typedef struct parsed {
    int bad;
    size_t msg;               /* arena offset of a NUL-terminated message */
    int has_id;
    uint64_t id;
    int has_sample;
    uint32_t sample;
    size_t pval, plen;        /* the encoded prompt record */
    size_t ptext, ptext_len;  /* the prompt text (generations: compared with a stored prompt) */
    size_t gen0, ngen;        /* generations: entries in the worker's gens */
} parsed;

typedef struct worker {
    const import_ctx *c;
    kd_record_encoder *enc;
    unsigned char *arena;
    size_t alen, acap;
    gen_ent *gens;
    size_t ngens, gcap;
    const line *lines;
    parsed *out;
    size_t i0, i1;
    int st;        /* an error that is not the line's fault (out of memory) */
    char err[256];
} worker;

static int arena_put(worker *w, const void *p, size_t n, size_t *off)
{
    if (w->alen + n + 1 > w->acap) {
        size_t nc = w->acap ? w->acap : 1 << 20;
        while (nc < w->alen + n + 1)
            nc *= 2;
        unsigned char *a = realloc(w->arena, nc);
        if (!a)
            return KD_E_NOMEM;
        w->arena = a;
        w->acap = nc;
    }
    *off = w->alen;
    if (n)
        memcpy(w->arena + w->alen, p, n);
    w->alen += n;
    w->arena[w->alen++] = 0; /* NUL after each piece: messages and texts read as C strings */
    return KD_OK;
}

static void mark_bad(worker *w, parsed *p, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void mark_bad(worker *w, parsed *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->bad = 1;
    if (arena_put(w, msg, strlen(msg), &p->msg) != KD_OK)
        w->st = KD_E_NOMEM;
}

static int encode_to_arena(worker *w, const kd_record *r, size_t *off, size_t *len)
{
    const void *v;
    size_t n;
    int st = kd_record_encode(w->enc, r, &v, &n);
    if (st)
        return st;
    *len = n;
    return arena_put(w, v, n, off);
}

/* A mapped string field: 1 and its text, or 0 with the line marked bad. */
static int want_string(worker *w, parsed *p, const json_t *o, const char *name, kd_text *out)
{
    const json_t *v = json_object_get(o, name);
    if (!v) {
        mark_bad(w, p, "no '%s' field", name);
        return 0;
    }
    if (!json_is_string(v)) {
        mark_bad(w, p, "field '%s' is %s, expected a string", name, kd_json_type_name(v));
        return 0;
    }
    out->ptr = json_string_value(v);
    out->len = json_string_length(v);
    return 1;
}

static int want_index(worker *w, parsed *p, const json_t *o, const char *name, uint64_t max, uint64_t *out)
{
    const json_t *v = json_object_get(o, name);
    if (!v) {
        mark_bad(w, p, "no '%s' field", name);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
        mark_bad(w, p, "field '%s' is %s, expected an integer from 0 to %llu", name, kd_json_type_name(v),
                 (unsigned long long)max);
        return 0;
    }
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

static void parse_line(worker *w, const line *ln, parsed *p)
{
    const import_ctx *c = w->c;
    const fieldmap *fm = &c->fm;
    int kind = c->o->kind;
    json_t *o = NULL, *extra = NULL;
    char *msgs_text = NULL, *extra_text = NULL;
    memset(p, 0, sizeof *p);
    if (ln->too_long) {
        mark_bad(w, p, "%zu bytes, longer than the %zu allowed (--max-line-bytes)", ln->too_long, c->o->max_line);
        return;
    }
    if (is_blank(ln->p, ln->n)) {
        mark_bad(w, p, "empty line");
        return;
    }
    json_error_t e;
    o = json_loadb(ln->p, ln->n, JSON_REJECT_DUPLICATES, &e);
    if (!o) {
        if (json_error_code(&e) == json_error_invalid_utf8)
            mark_bad(w, p, "invalid UTF-8 (%s)", e.text);
        else if (json_error_code(&e) == json_error_duplicate_key)
            mark_bad(w, p, "%s", e.text);
        else
            mark_bad(w, p, "not JSON: %s at column %d", e.text, e.column);
        return;
    }
    if (!json_is_object(o)) {
        mark_bad(w, p, "not a JSON object but %s", kd_json_type_name(o));
        goto done;
    }
    if (!fm->resolved) {
        mark_bad(w, p, "no prompt or generation field found (looked for %s; name it with --%s-field)",
                 kind == KD_KIND_GENERATIONS ? "problem/question/prompt and generation/generations/response/output/"
                                               "completion"
                                             : "problem, question, prompt",
                 kind == KD_KIND_GENERATIONS ? "prompt or --generation" : "prompt");
        goto done;
    }
    const char *mapped[8];
    int nmapped = 0;
    kd_record rec = {.db = KD_DB_PROMPTS, .lineage = c->lineage, .created_ms = c->created_ms};
    if (fm->id[0]) {
        if (!want_index(w, p, o, fm->id, INT64_MAX, &p->id))
            goto done;
        p->has_id = 1;
        mapped[nmapped++] = fm->id;
    }
    if (kind == KD_KIND_CHATS) {
        const json_t *m = json_object_get(o, fm->messages);
        if (!m) {
            mark_bad(w, p, "no '%s' field", fm->messages);
            goto done;
        }
        if (!json_is_array(m) || json_array_size(m) == 0) {
            mark_bad(w, p, "field '%s' is %s, expected a non-empty array of messages", fm->messages,
                     json_is_array(m) ? "an empty array" : kd_json_type_name(m));
            goto done;
        }
        const json_t *user = NULL;
        size_t i;
        json_t *msg;
        json_array_foreach(m, i, msg)
        {
            const json_t *role = json_object_get(msg, "role");
            if (!json_is_object(msg) || !json_is_string(role)) {
                mark_bad(w, p, "message %zu of '%s' has no string \"role\"", i, fm->messages);
                goto done;
            }
            const json_t *content = json_object_get(msg, "content");
            if (!strcmp(json_string_value(role), "user") && json_is_string(content))
                user = content;
        }
        if (!user) {
            mark_bad(w, p, "no user message with string content in '%s'", fm->messages);
            goto done;
        }
        if (!(msgs_text = json_dumps(m, JSON_COMPACT))) {
            w->st = KD_E_NOMEM;
            goto done;
        }
        rec.chat = 1;
        rec.messages = kd_text_of(msgs_text);
        rec.text = (kd_text){json_string_value(user), json_string_length(user)};
        mapped[nmapped++] = fm->messages;
    } else {
        if (!want_string(w, p, o, fm->prompt, &rec.text))
            goto done;
        mapped[nmapped++] = fm->prompt;
    }
    if (fm->answer[0]) {
        const json_t *a = json_object_get(o, fm->answer);
        if (json_is_string(a)) { /* anything else stays among the extra fields */
            rec.answer = (kd_text){json_string_value(a), json_string_length(a)};
            rec.has_answer = 1;
            mapped[nmapped++] = fm->answer;
        }
    }
    /* generations: the completions, sample index and verdicts */
    const json_t *gv = NULL, *vv = NULL;
    if (kind == KD_KIND_GENERATIONS) {
        gv = json_object_get(o, fm->generation);
        if (!gv) {
            mark_bad(w, p, "no '%s' field", fm->generation);
            goto done;
        }
        if (fm->form == 1 && !json_is_string(gv)) {
            mark_bad(w, p, "field '%s' is %s; this file's first line had a string there", fm->generation,
                     kd_json_type_name(gv));
            goto done;
        }
        if (fm->form == 2) {
            if (!json_is_array(gv)) {
                mark_bad(w, p, "field '%s' is %s; this file's first line had an array of strings there",
                         fm->generation, kd_json_type_name(gv));
                goto done;
            }
            size_t i;
            json_t *g;
            json_array_foreach(gv, i, g) if (!json_is_string(g))
            {
                mark_bad(w, p, "element %zu of '%s' is %s, expected a string", i, fm->generation, kd_json_type_name(g));
                goto done;
            }
        }
        mapped[nmapped++] = fm->generation;
        if (fm->sample[0]) {
            uint64_t s;
            if (!want_index(w, p, o, fm->sample, UINT32_MAX - 1, &s))
                goto done;
            p->has_sample = 1;
            p->sample = (uint32_t)s;
            mapped[nmapped++] = fm->sample;
        }
        if (fm->verdict[0] && (vv = json_object_get(o, fm->verdict)) != NULL && !json_is_null(vv)) {
            if (fm->form == 1 && !json_is_boolean(vv)) {
                mark_bad(w, p, "field '%s' is %s, expected a boolean verdict", fm->verdict, kd_json_type_name(vv));
                goto done;
            }
            if (fm->form == 2) {
                if (!json_is_array(vv) || json_array_size(vv) != json_array_size(gv)) {
                    mark_bad(w, p, "field '%s' is %s, expected an array of %zu booleans (one per generation)",
                             fm->verdict, kd_json_type_name(vv), json_array_size(gv));
                    goto done;
                }
                size_t i;
                json_t *x;
                json_array_foreach(vv, i, x) if (!json_is_boolean(x) && !json_is_null(x))
                {
                    mark_bad(w, p, "element %zu of '%s' is %s, expected a boolean or null", i, fm->verdict,
                             kd_json_type_name(x));
                    goto done;
                }
            }
            mapped[nmapped++] = fm->verdict;
        } else {
            vv = NULL; /* absent or null: no verdict (a null stays among the extra fields) */
        }
    }
    /* the extra fields: everything not mapped, in input order */
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        int m = 0;
        for (int i = 0; i < nmapped && !m; i++)
            m = !strcmp(key, mapped[i]);
        if (m)
            continue;
        if (!extra)
            extra = json_object();
        json_object_set(extra, key, val);
    }
    if (extra && !(extra_text = json_dumps(extra, JSON_COMPACT))) {
        w->st = KD_E_NOMEM;
        goto done;
    }
    kd_text xt = kd_text_of(extra_text);
    int st = KD_OK;
    if (kind != KD_KIND_GENERATIONS || fm->form == 2)
        rec.extra = xt;
    st = encode_to_arena(w, &rec, &p->pval, &p->plen);
    if (st == KD_OK && kind == KD_KIND_GENERATIONS)
        st = arena_put(w, rec.text.ptr, rec.text.len, &p->ptext);
    p->ptext_len = rec.text.len;
    if (st == KD_OK && kind == KD_KIND_GENERATIONS) {
        size_t n = json_is_string(gv) ? 1 : json_array_size(gv);
        if (w->ngens + n > w->gcap) {
            size_t nc = w->gcap ? w->gcap : 1024;
            while (nc < w->ngens + n)
                nc *= 2;
            gen_ent *g = realloc(w->gens, nc * sizeof *g);
            if (!g) {
                w->st = KD_E_NOMEM;
                goto done;
            }
            w->gens = g;
            w->gcap = nc;
        }
        p->gen0 = w->ngens;
        p->ngen = n;
        for (size_t i = 0; i < n && st == KD_OK; i++) {
            const json_t *g = json_is_string(gv) ? gv : json_array_get(gv, i);
            gen_ent *ge = &w->gens[w->ngens++];
            memset(ge, 0, sizeof *ge);
            kd_record gr = {.db = KD_DB_GENERATIONS, .lineage = c->lineage, .created_ms = c->created_ms};
            gr.text = (kd_text){json_string_value(g), json_string_length(g)};
            if (fm->form == 1)
                gr.extra = xt;
            st = encode_to_arena(w, &gr, &ge->gval, &ge->glen);
            const json_t *v = !vv ? NULL : json_is_boolean(vv) ? vv : json_array_get(vv, i);
            if (st == KD_OK && json_is_boolean(v)) {
                kd_record vr = {.db = KD_DB_VERDICTS, .lineage = c->lineage, .created_ms = c->created_ms};
                vr.accepted = json_is_true(v);
                ge->has_verdict = 1;
                st = encode_to_arena(w, &vr, &ge->vval, &ge->vlen);
            }
        }
    }
    if (st) {
        w->st = st;
        snprintf(w->err, sizeof w->err, "%s", kd_strerror(st));
    }
done:
    json_decref(extra);
    json_decref(o);
    free(msgs_text);
    free(extra_text);
}

static void *worker_run(void *arg)
{
    worker *w = arg;
    for (size_t i = w->i0; i < w->i1 && w->st == KD_OK; i++)
        parse_line(w, &w->lines[i], &w->out[i]);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The import */

typedef struct import_run {
    const kd_import_opts *o;
    const char *file;
    kd_import_stats *st;
    json_t *state; /* the import's meta entry, updated per batch */
    char key[64];
    uint64_t run_bad;
} import_run;

static uint64_t jint(const json_t *o, const char *k) { return (uint64_t)json_integer_value(json_object_get(o, k)); }

static void state_set(json_t *s, const char *k, uint64_t v) { json_object_set_new(s, k, json_integer((json_int_t)v)); }

static void stats_from_state(kd_import_stats *st, const json_t *s)
{
    st->lines = jint(s, "line");
    st->bytes = jint(s, "offset");
    st->prompts = jint(s, "prompts");
    st->generations = jint(s, "generations");
    st->verdicts = jint(s, "verdicts");
    st->bad = jint(s, "bad");
    st->done = json_is_true(json_object_get(s, "done"));
}

/* Count a bad line of this run and print the first few. */
static void report_bad(import_run *ir, uint64_t no, const char *msg)
{
    int max = ir->o->max_reported > 0 ? ir->o->max_reported : KD_IMPORT_MAX_REPORT;
    kd_import_stats *st = ir->st;
    if (st->n_reported < KD_IMPORT_MAX_REPORT) {
        st->bad_line[st->n_reported] = no;
        snprintf(st->bad_msg[st->n_reported], sizeof st->bad_msg[0], "%s", msg);
        st->n_reported++;
    }
    ir->run_bad++;
    if (ir->run_bad <= (uint64_t)max)
        kd_warn("%s:%llu: %s (skipped)", ir->file, (unsigned long long)no, msg);
    else if (ir->run_bad == (uint64_t)max + 1)
        kd_warn("%s: more bad lines; only the first %d are shown", ir->file, max);
}

static char *options_fingerprint(const kd_import_opts *o, char *buf, size_t cap)
{
    char s[2048];
#define F(x) ((x) ? (x) : "*")
    snprintf(s, sizeof s, "kind=%s;prompt=%s;answer=%s;id=%s;messages=%s;generation=%s;sample=%s;verdict=%s;"
                          "source=%s;teacher=%s;seed=%lld",
             kd_jsonl_kind_name(o->kind), F(o->prompt_field), F(o->answer_field), F(o->id_field), F(o->messages_field),
             F(o->generation_field), F(o->sample_field), F(o->verdict_field), F(o->source), F(o->teacher),
             (long long)o->seed);
#undef F
    snprintf(buf, cap, "%016llx", (unsigned long long)kd_fnv1a64(s, strlen(s), KD_FNV1A64_INIT));
    return buf;
}

/* Apply one parsed line in the batch. Returns KD_OK, or 1 with *why set when
 * the line is bad (nothing was put), or an error. */
static int apply_line(kd_store_batch *b, const import_ctx *c, const worker *w, const parsed *p, uint64_t *next_id,
                      kd_import_stats *st, char *why, size_t whycap)
{
    kd_store_read *view = kd_store_batch_view(b);
    int kind = c->o->kind, added;
    uint64_t id = p->has_id ? p->id : *next_id;
    if (kind != KD_KIND_GENERATIONS) {
        KD_TRY(kd_store_put_raw(b, KD_DB_PROMPTS, id, 0, w->arena + p->pval, p->plen, KD_PUT_KEEP, &added));
        if (!added) {
            snprintf(why, whycap, "prompt id %llu is already in the dataset", (unsigned long long)id);
            return 1;
        }
        st->prompts++;
    } else {
        kd_record old;
        int have = 0;
        if (p->has_id) {
            int r = kd_store_get(view, KD_DB_PROMPTS, id, 0, &old);
            if (r != KD_OK && r != KD_E_NOTFOUND)
                return r;
            have = r == KD_OK;
            if (have && (old.text.len != p->ptext_len || memcmp(old.text.ptr, w->arena + p->ptext, p->ptext_len))) {
                snprintf(why, whycap, "prompt id %llu is already in the dataset with a different text",
                         (unsigned long long)id);
                return 1;
            }
        }
        uint32_t base = 0;
        if (p->has_sample) {
            int exists;
            KD_TRY(kd_store_unit_exists(view, id, p->sample, &exists));
            if (exists) {
                snprintf(why, whycap, "unit (prompt %llu, sample %u) is already in the dataset",
                         (unsigned long long)id, p->sample);
                return 1;
            }
            base = p->sample;
        } else if (have) {
            KD_TRY(kd_store_next_sample(view, id, &base));
        }
        if ((uint64_t)base + p->ngen > UINT32_MAX) {
            snprintf(why, whycap, "prompt %llu has no free sample indices left", (unsigned long long)id);
            return 1;
        }
        if (!have) {
            KD_TRY(kd_store_put_raw(b, KD_DB_PROMPTS, id, 0, w->arena + p->pval, p->plen, KD_PUT_KEEP, &added));
            st->prompts += (uint64_t)added;
        }
        for (size_t i = 0; i < p->ngen; i++) {
            const gen_ent *g = &w->gens[p->gen0 + i];
            uint32_t sample = base + (uint32_t)i;
            KD_TRY(kd_store_put_raw(b, KD_DB_GENERATIONS, id, sample, w->arena + g->gval, g->glen, KD_PUT_KEEP,
                                    &added));
            st->generations += (uint64_t)added;
            if (g->has_verdict) {
                KD_TRY(kd_store_put_raw(b, KD_DB_VERDICTS, id, sample, w->arena + g->vval, g->vlen, KD_PUT_KEEP,
                                        &added));
                st->verdicts += (uint64_t)added;
            }
        }
    }
    if (!p->has_id)
        (*next_id)++;
    else if (id >= *next_id)
        *next_id = id + 1;
    return KD_OK;
}

#define KD_IMPORT_MAX_THREADS 64

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

/* Check a previous run of this import against this one and resume its state,
 * or start a new state. */
static int load_state(kd_store *s, import_run *ir, const char *abs, const struct stat *fst, const char *fp,
                      fieldmap *fm, uint32_t *lineage)
{
    kd_store_read *r;
    json_t *state = NULL;
    KD_TRY(kd_store_read_begin(s, &r));
    int st = kd_store_meta_get(r, ir->key, &state);
    kd_store_read_end(r);
    if (st == KD_E_NOTFOUND) {
        kd_err_clear();
        char tb[32];
        ir->state = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:n}", "file",
                              abs, "kind", kd_jsonl_kind_name(ir->o->kind), "size", (json_int_t)fst->st_size,
                              "mtime_ns",
                              (json_int_t)fst->st_mtim.tv_sec * 1000000000 + (json_int_t)fst->st_mtim.tv_nsec,
                              "options", fp, "on_error", ir->o->on_error == KD_ON_ERROR_SKIP ? "skip" : "stop", "done",
                              0, "offset", (json_int_t)0, "line", (json_int_t)0, "prompts", (json_int_t)0,
                              "generations", (json_int_t)0, "verdicts", (json_int_t)0, "bad", (json_int_t)0, "started",
                              kd_fmt_time_ms(tb, sizeof tb, kd_time_ms()), "finished");
        return ir->state ? KD_OK : kd_err(KD_E_NOMEM, "import state");
    }
    if (st)
        return st;
    ir->state = state;
    uint64_t mt = (uint64_t)fst->st_mtim.tv_sec * 1000000000u + (uint64_t)fst->st_mtim.tv_nsec;
    if (jint(state, "size") != (uint64_t)fst->st_size || jint(state, "mtime_ns") != mt)
        return kd_err(KD_E_CONFIG,
                      "'%s' changed since it was imported into '%s' (size or mtime differ): import it into a new "
                      "dataset",
                      ir->file, kd_store_path(s));
    const char *old = json_string_value(json_object_get(state, "options"));
    if (!old || strcmp(old, fp) != 0)
        return kd_err(KD_E_CONFIG,
                      "'%s' was imported into '%s' with other options (kind or field mapping, source, teacher, "
                      "seed): rerun with the same options, or import into a new dataset",
                      ir->file, kd_store_path(s));
    json_object_set_new(state, "on_error", json_string(ir->o->on_error == KD_ON_ERROR_SKIP ? "skip" : "stop"));
    *lineage = (uint32_t)jint(state, "lineage");
    const json_t *fields = json_object_get(state, "fields");
    if (json_is_true(json_object_get(state, "fields_resolved")) && json_is_object(fields))
        fieldmap_from_json(fm, fields, json_string_value(json_object_get(state, "form")),
                           json_is_true(json_object_get(state, "answer_pending")));
    return KD_OK;
}

/* Record the field names in the state and (when it exists) the lineage entry,
 * in the batch: export reads them from the lineage. */
static int record_fields(kd_store_batch *b, import_run *ir, const fieldmap *fm, uint32_t lineage)
{
    json_t *fields = fieldmap_json(fm, ir->o->kind);
    json_object_set(ir->state, "fields", fields);
    json_object_set_new(ir->state, "fields_resolved", json_boolean(fm->resolved));
    json_object_set_new(ir->state, "answer_pending", json_boolean(fm->answer_pending));
    if (ir->o->kind == KD_KIND_GENERATIONS)
        json_object_set_new(ir->state, "form", fm->form == 2 ? json_string("array")
                                               : fm->form == 1 ? json_string("scalar")
                                                               : json_null());
    int st = KD_OK;
    if (lineage) {
        json_t *e = NULL;
        char key[32];
        snprintf(key, sizeof key, "lineage/%08u", lineage);
        st = kd_store_lineage_get(kd_store_batch_view(b), lineage, &e);
        if (st == KD_OK) {
            json_object_set(e, "fields", fields);
            if (ir->o->kind == KD_KIND_GENERATIONS)
                json_object_set(e, "form", json_object_get(ir->state, "form"));
            st = kd_store_meta_put(b, key, e);
        }
        json_decref(e);
    }
    json_decref(fields);
    return st;
}

/* One batch of lines in flight: its lines, the parser threads working on
 * them, and their results. Two of these alternate, so that the threads parse
 * batch k+1 while the main thread puts and commits batch k. */
typedef struct job {
    line *lines;
    size_t nlines, lcap;
    parsed *results;
    size_t rcap;
    import_ctx ctx;       /* a snapshot: the main thread may resolve names for the next batch */
    worker *ws;
    pthread_t *tids;
    unsigned char *running;
    int use;              /* workers used */
    int fields_changed;   /* record the field names in this batch's transaction */
    int last;             /* no lines after this batch */
} job;

static void job_wait(job *j)
{
    for (int i = 0; i < j->use; i++) {
        if (j->running[i])
            pthread_join(j->tids[i], NULL);
        j->running[i] = 0;
    }
}

static void job_release(job *j, int nw)
{
    job_wait(j);
    for (int i = 0; j->ws && i < nw; i++) {
        kd_record_encoder_free(j->ws[i].enc);
        free(j->ws[i].arena);
        free(j->ws[i].gens);
    }
    free(j->ws);
    free(j->tids);
    free(j->running);
    free(j->lines);
    free(j->results);
}

static int job_init(job *j, int nw)
{
    memset(j, 0, sizeof *j);
    j->ws = calloc((size_t)nw, sizeof *j->ws);
    j->tids = calloc((size_t)nw, sizeof *j->tids);
    j->running = calloc((size_t)nw, 1);
    if (!j->ws || !j->tids || !j->running)
        return kd_err(KD_E_NOMEM, "import workers");
    for (int i = 0; i < nw; i++)
        KD_TRY(kd_record_encoder_new(0, 0, &j->ws[i].enc));
    return KD_OK;
}

/* Take the next batch of lines, resolve field names, and start the parser
 * threads on it (a thread that cannot start has its slice parsed here). */
static int job_start(job *j, reader *rd, const kd_import_opts *o, fieldmap *fm, uint32_t lineage, int nw)
{
    int at_bom = rd->off == 0;
    KD_TRY(reader_next(rd, o->batch_bytes, &j->lines, &j->nlines, &j->lcap));
    line *lines = j->lines;
    size_t n = j->nlines;
    if (at_bom && n && lines[0].p && lines[0].n >= 3 && !memcmp(lines[0].p, "\xEF\xBB\xBF", 3)) {
        lines[0].p += 3; /* a UTF-8 byte order mark */
        lines[0].n -= 3;
    }
    j->last = n == 0 || (rd->eof && rd->start == rd->end);
    if (n > j->rcap) {
        parsed *r = realloc(j->results, n * sizeof *r);
        if (!r)
            return kd_err(KD_E_NOMEM, "parse results");
        j->results = r;
        j->rcap = n;
    }
    /* resolve default field names (see fieldmap) */
    int was_resolved = fm->resolved, was_pending = fm->answer_pending;
    for (size_t i = 0; i < n && (!fm->resolved || fm->answer_pending); i++) {
        if (!lines[i].p)
            continue;
        /* a cheap look first: only lines that mention a candidate are parsed */
        if (fm->resolved && !memmem(lines[i].p, lines[i].n, "\"answer\"", 8) &&
            !memmem(lines[i].p, lines[i].n, "\"solution\"", 10))
            continue;
        json_t *obj = json_loadb(lines[i].p, lines[i].n, JSON_REJECT_DUPLICATES, NULL);
        fieldmap_resolve(fm, o, obj);
        if (fm->resolved)
            answer_resolve(fm, obj);
        json_decref(obj);
    }
    j->fields_changed = fm->resolved != was_resolved || fm->answer_pending != was_pending;
    j->ctx = (import_ctx){.o = o, .fm = *fm, .lineage = lineage, .created_ms = kd_time_ms()};
    int use = (int)((n + 255) / 256);
    j->use = use > nw ? nw : use < 1 ? 1 : use;
    for (int i = 0; i < j->use; i++) {
        worker *w = &j->ws[i];
        w->c = &j->ctx;
        w->alen = w->ngens = 0;
        w->st = KD_OK;
        w->err[0] = 0;
        w->lines = lines;
        w->out = j->results;
        w->i0 = n * (size_t)i / (size_t)j->use;
        w->i1 = n * (size_t)(i + 1) / (size_t)j->use;
    }
    for (int i = 0; i < j->use; i++) {
        j->running[i] = pthread_create(&j->tids[i], NULL, worker_run, &j->ws[i]) == 0;
        if (!j->running[i])
            worker_run(&j->ws[i]);
    }
    return KD_OK;
}

/* Put a parsed batch and commit it with the import's progress. *stopped is
 * set (and stop_msg filled) when a bad line stopped the import. */
static int job_apply(job *j, kd_store *s, import_run *ir, int *stopped, char *stop_msg, size_t cap)
{
    const kd_import_opts *o = ir->o;
    kd_import_stats *st = ir->st;
    kd_store_batch *b;
    int status;
    for (int i = 0; i < j->use; i++)
        if (j->ws[i].st != KD_OK)
            return kd_err(j->ws[i].st, "import of '%s': %s", ir->file, j->ws[i].err[0] ? j->ws[i].err : "out of memory");
    KD_TRY(kd_store_batch_begin(s, &b));
    if (j->fields_changed && (status = record_fields(b, ir, &j->ctx.fm, j->ctx.lineage)) != KD_OK)
        goto fail;
    uint64_t next_id, last, lineno = 0, consumed_to = (uint64_t)-1;
    int found;
    if ((status = kd_store_last(kd_store_batch_view(b), KD_DB_PROMPTS, &last, NULL, &found)) != KD_OK)
        goto fail;
    next_id = found ? last + 1 : 0;
    *stopped = 0;
    for (int wi = 0; wi < j->use && !*stopped; wi++) {
        worker *w = &j->ws[wi];
        for (size_t i = w->i0; i < w->i1; i++) {
            const parsed *p = &j->results[i];
            char why[512];
            const char *msg = NULL;
            if (p->bad) {
                msg = (const char *)w->arena + p->msg;
            } else {
                int r = apply_line(b, &j->ctx, w, p, &next_id, st, why, sizeof why);
                if (r < 0) {
                    status = r;
                    goto fail;
                }
                if (r == 1)
                    msg = why;
            }
            if (msg) {
                if (o->on_error == KD_ON_ERROR_STOP) {
                    snprintf(stop_msg, cap, "%s:%llu: %s", ir->file, (unsigned long long)j->lines[i].no, msg);
                    *stopped = 1;
                    break;
                }
                st->bad++;
                report_bad(ir, j->lines[i].no, msg);
            }
            consumed_to = j->lines[i].end;
            lineno = j->lines[i].no;
        }
    }
    if (consumed_to != (uint64_t)-1) {
        state_set(ir->state, "offset", consumed_to);
        state_set(ir->state, "line", lineno);
    }
    state_set(ir->state, "prompts", st->prompts);
    state_set(ir->state, "generations", st->generations);
    state_set(ir->state, "verdicts", st->verdicts);
    state_set(ir->state, "bad", st->bad);
    if (j->last && !*stopped) {
        char tb[32];
        json_object_set_new(ir->state, "done", json_true());
        json_object_set_new(ir->state, "finished", json_string(kd_fmt_time_ms(tb, sizeof tb, kd_time_ms())));
    }
    if ((status = kd_store_meta_put(b, ir->key, ir->state)) != KD_OK)
        goto fail;
    return kd_store_batch_commit(b);
fail:
    kd_store_batch_abort(b);
    return status;
}

/* A new import: its lineage entry and its state, before any record. */
static int import_begin(kd_store *s, import_run *ir, const fieldmap *fm, const char *abs, const char *fp,
                        uint32_t *lineage)
{
    kd_store_batch *b;
    KD_TRY(kd_store_batch_begin(s, &b));
    const kd_import_opts *o = ir->o;
    json_t *fields = fieldmap_json(fm, o->kind);
    json_t *extra = json_pack("{s:s, s:s, s:s, s:O}", "format", "jsonl", "file", abs, "import_kind",
                              kd_jsonl_kind_name(o->kind), "fields", fields);
    char hash[48];
    snprintf(hash, sizeof hash, "fnv1a64:%s", fp);
    kd_lineage lin = {.kind = "import", .source = o->source ? o->source : ir->file, .teacher = o->teacher,
                      .config_hash = hash, .seed = o->seed};
    int st = kd_store_lineage_add(b, &lin, extra, lineage);
    json_decref(fields);
    json_decref(extra);
    if (st == KD_OK) {
        state_set(ir->state, "lineage", *lineage);
        st = record_fields(b, ir, fm, 0);
    }
    if (st == KD_OK)
        st = kd_store_meta_put(b, ir->key, ir->state);
    if (st) {
        kd_store_batch_abort(b);
        return st;
    }
    return kd_store_batch_commit(b);
}

int kd_jsonl_import(const char *dataset, const char *file, const kd_import_opts *opts, kd_import_stats *stats)
{
    kd_import_stats local;
    kd_import_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    kd_import_opts o = *opts;
    if (o.kind < 0 || o.kind > KD_KIND_GENERATIONS)
        return kd_err(KD_E_USAGE, "unknown import kind %d", o.kind);
    if (!o.max_line)
        o.max_line = 64u << 20;
    if (!o.batch_bytes)
        o.batch_bytes = 8u << 20;
    if (o.threads <= 0)
        o.threads = online_cpus();
    if (o.threads > KD_IMPORT_MAX_THREADS)
        o.threads = KD_IMPORT_MAX_THREADS;
    double t0 = kd_now();

    import_run ir = {.o = &o, .file = file, .st = st};
    fieldmap fm;
    uint32_t lineage = 0;
    KD_TRY(fieldmap_from_opts(&fm, &o));
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kd_err(errno == ENOENT ? KD_E_NOTFOUND : KD_E_IO, "cannot open '%s': %s", file, strerror(errno));
    struct stat fst;
    char *abs = realpath(file, NULL);
    if (fstat(fd, &fst) != 0 || !S_ISREG(fst.st_mode) || !abs) {
        int e = errno;
        close(fd);
        free(abs);
        return kd_err(KD_E_IO, "cannot import '%s': %s", file, S_ISREG(fst.st_mode) ? strerror(e) : "not a regular file");
    }
    snprintf(ir.key, sizeof ir.key, "import/%016llx",
             (unsigned long long)kd_fnv1a64(abs, strlen(abs), KD_FNV1A64_INIT));
    char fp[32];
    options_fingerprint(&o, fp, sizeof fp);

    kd_store_opts so = {.flags = KD_STORE_CREATE | o.store_flags, .name = o.name, .map_size = o.map_size};
    kd_store *s = NULL;
    reader rd = {.fd = fd, .file = file, .max_line = o.max_line};
    int nw = o.threads, status = KD_OK, prog_on = 0, stopped = 0;
    job jobs[2];
    memset(jobs, 0, sizeof jobs);
    kd_progress prog;
    char stop_msg[1024] = "";
    uint64_t run_start = 0, prog_mb = 0;
    if ((status = job_init(&jobs[0], nw)) != KD_OK || (status = job_init(&jobs[1], nw)) != KD_OK)
        goto out;
    if ((status = kd_store_open_opts(dataset, &so, &s)) != KD_OK)
        goto out;
    if ((status = load_state(s, &ir, abs, &fst, fp, &fm, &lineage)) != KD_OK)
        goto out;
    stats_from_state(st, ir.state);
    if (st->done) {
        st->already_done = 1;
        kd_info("'%s' is already imported into '%s' (%llu lines); nothing to do", file, dataset,
                (unsigned long long)st->lines);
        goto out;
    }
    if (lineage == 0 && (status = import_begin(s, &ir, &fm, abs, fp, &lineage)) != KD_OK)
        goto out;
    st->resumed_line = st->lines;
    run_start = st->bytes;
    if (st->lines > 0)
        kd_info("resuming the import of '%s' after line %llu (byte %llu)", file, (unsigned long long)st->lines,
                (unsigned long long)st->bytes);
    if (lseek(fd, (off_t)st->bytes, SEEK_SET) < 0) {
        status = kd_err(KD_E_IO, "cannot seek '%s': %s", file, strerror(errno));
        goto out;
    }
    rd.off = st->bytes;
    rd.line_no = st->lines;
    rd.cap = o.batch_bytes * 2 < o.max_line + 1 ? o.batch_bytes * 2 : o.max_line + 1;
    if (rd.cap < 65536)
        rd.cap = 65536;
    if (!(rd.buf = malloc(rd.cap))) {
        status = kd_err(KD_E_NOMEM, "line buffer");
        goto out;
    }
    if (o.progress) {
        kd_progress_init(&prog, "import MB", (uint64_t)((fst.st_size + 999999) / 1000000));
        prog_on = 1;
        prog_mb = st->bytes / 1000000;
        kd_progress_add(&prog, prog_mb);
    }
    /* the pipeline: parse batch k+1 on the threads while this thread puts and
     * commits batch k */
    job *cur = &jobs[0], *next = &jobs[1];
    if ((status = job_start(cur, &rd, &o, &fm, lineage, nw)) != KD_OK)
        goto out;
    for (;;) {
        job_wait(cur);
        if (!cur->last && (status = job_start(next, &rd, &o, &fm, lineage, nw)) != KD_OK)
            goto out;
        if ((status = job_apply(cur, s, &ir, &stopped, stop_msg, sizeof stop_msg)) != KD_OK)
            goto out;
        stats_from_state(st, ir.state);
        if (prog_on) {
            uint64_t mb = cur->last && !stopped ? prog.total : st->bytes / 1000000;
            if (mb > prog_mb)
                kd_progress_add(&prog, mb - prog_mb);
            prog_mb = mb > prog_mb ? mb : prog_mb;
        }
        if (stopped) {
            status = kd_err(KD_E_FORMAT, "%s", stop_msg);
            goto out;
        }
        if (cur->last)
            break;
        job *t = cur;
        cur = next;
        next = t;
    }
out:
    job_release(&jobs[0], nw); /* joins threads still parsing after an error */
    job_release(&jobs[1], nw);
    if (prog_on)
        kd_progress_finish(&prog);
    st->seconds = kd_now() - t0;
    st->run_bytes = st->already_done ? 0 : st->bytes - run_start;
    if (s) {
        int c = kd_store_close(s);
        if (status == KD_OK && c != KD_OK)
            status = c;
    }
    free(rd.buf);
    json_decref(ir.state);
    free(abs);
    close(fd);
    return status;
}

/* ------------------------------------------------------------------------ */
/* Export */

/* Lineage entries by id, looked up once. */
typedef struct lineage_cache {
    json_t **v;
    size_t n;
} lineage_cache;

static const json_t *lineage_of(kd_store_read *r, lineage_cache *lc, uint32_t id)
{
    if (id == 0)
        return NULL;
    if (id >= lc->n) {
        size_t nn = id + 16;
        json_t **v = realloc(lc->v, nn * sizeof *v);
        if (!v)
            return NULL;
        memset(v + lc->n, 0, (nn - lc->n) * sizeof *v);
        lc->v = v;
        lc->n = nn;
    }
    if (!lc->v[id]) {
        json_t *e = NULL;
        if (kd_store_lineage_get(r, id, &e) != KD_OK) {
            kd_err_clear();
            e = json_object(); /* unknown: defaults */
        }
        lc->v[id] = e;
    }
    return lc->v[id];
}

static void lineage_cache_release(lineage_cache *lc)
{
    for (size_t i = 0; i < lc->n; i++)
        json_decref(lc->v[i]);
    free(lc->v);
}

/* The output name of `key`: the lineage's import field name (NULL when the
 * import had none), or `def` for records that did not come from an import. */
static const char *out_name(const json_t *lin, const char *key, const char *def)
{
    const json_t *fields = json_object_get(lin, "fields");
    if (!json_is_object(fields))
        return def;
    const json_t *v = json_object_get(fields, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A JSON string of t. Text that is not valid UTF-8 (only a damaged or
 * foreign record can hold it) becomes "" and sets *bad. */
static json_t *jstr(kd_text t, int *bad)
{
    json_t *v = json_stringn(t.ptr ? t.ptr : "", t.len);
    if (!v) {
        *bad = 1;
        v = json_string("");
    }
    return v;
}

static const char *or_(const char *a, const char *b) { return a ? a : b; }

/* Add the extra fields (a JSON object text) to o, after the mapped ones. */
static int add_extra(json_t *o, kd_text extra, const char *what)
{
    if (!extra.len)
        return KD_OK;
    json_error_t e;
    json_t *x = json_loadb(extra.ptr, extra.len, 0, &e);
    if (!json_is_object(x)) {
        json_decref(x);
        return kd_err(KD_E_FORMAT, "%s: damaged extra fields: %s", what, e.text);
    }
    json_object_update_missing(o, x);
    json_decref(x);
    return KD_OK;
}

static int emit(FILE *out, json_t *o, kd_export_stats *es, const char *path)
{
    char *text = json_dumps(o, JSON_COMPACT);
    if (!text)
        return kd_err(KD_E_NOMEM, "export line");
    size_t n = strlen(text);
    text[n] = '\n';
    int ok = fwrite(text, 1, n + 1, out) == n + 1;
    free(text);
    if (!ok)
        return kd_err(KD_E_IO, "cannot write '%s': %s", path, strerror(errno));
    es->lines++;
    es->bytes += n + 1;
    return KD_OK;
}

static int export_prompts(kd_store_read *r, FILE *out, const kd_export_opts *o, kd_export_stats *es,
                          lineage_cache *lc, kd_progress *prog)
{
    kd_store_cursor *c;
    kd_record rec;
    int rc, st = KD_OK;
    KD_TRY(kd_store_cursor_open(r, KD_DB_PROMPTS, &c));
    while ((rc = kd_store_cursor_next(c, &rec)) == 1) {
        es->records++;
        if (prog)
            kd_progress_add(prog, 1);
        if (o->kind == KD_KIND_CHATS && !rec.chat)
            continue;
        const json_t *lin = lineage_of(r, lc, rec.lineage);
        json_t *obj = json_object();
        const char *idn = out_name(lin, "id", NULL), *an = out_name(lin, "answer", "answer");
        int bad = 0;
        char what[64];
        snprintf(what, sizeof what, "prompt %llu", (unsigned long long)rec.id);
        if (idn)
            json_object_set_new(obj, idn, json_integer((json_int_t)rec.id));
        if (rec.chat) {
            json_t *m = json_loadb(rec.messages.ptr ? rec.messages.ptr : "", rec.messages.len, 0, NULL);
            if (!m) {
                json_decref(obj);
                st = kd_err(KD_E_FORMAT, "%s: damaged messages", what);
                break;
            }
            json_object_set_new(obj, or_(out_name(lin, "messages", "messages"), "messages"), m);
        } else {
            json_object_set_new(obj, or_(out_name(lin, "prompt", "problem"), "problem"), jstr(rec.text, &bad));
        }
        if (rec.has_answer && an)
            json_object_set_new(obj, an, jstr(rec.answer, &bad));
        st = bad ? kd_err(KD_E_UTF8, "%s: text is not valid UTF-8", what) : add_extra(obj, rec.extra, what);
        if (st == KD_OK)
            st = emit(out, obj, es, "output");
        json_decref(obj);
        if (st)
            break;
    }
    if (rc < 0 && st == KD_OK)
        st = rc;
    kd_store_cursor_close(c);
    return st;
}

/* The prompt of the generations being exported, kept as JSON values. */
typedef struct prompt_cache {
    uint64_t id;
    int valid, found;
    json_t *text, *answer, *extra; /* answer NULL: none */
    uint32_t lineage;
} prompt_cache;

static void prompt_cache_clear(prompt_cache *pc)
{
    json_decref(pc->text);
    json_decref(pc->answer);
    json_decref(pc->extra);
    memset(pc, 0, sizeof *pc);
}

static int prompt_load(kd_store_read *r, prompt_cache *pc, uint64_t id)
{
    if (pc->valid && pc->id == id)
        return KD_OK;
    prompt_cache_clear(pc);
    kd_record p;
    int st = kd_store_get(r, KD_DB_PROMPTS, id, 0, &p);
    pc->valid = 1;
    pc->id = id;
    if (st == KD_E_NOTFOUND) {
        kd_err_clear();
        return KD_OK;
    }
    if (st)
        return st;
    pc->found = 1;
    pc->lineage = p.lineage;
    int bad = 0;
    pc->text = jstr(p.text, &bad);
    pc->answer = p.has_answer ? jstr(p.answer, &bad) : NULL;
    if (bad)
        return kd_err(KD_E_UTF8, "prompt %llu: text is not valid UTF-8", (unsigned long long)id);
    if (p.extra.len) {
        pc->extra = json_loadb(p.extra.ptr, p.extra.len, 0, NULL);
        if (!json_is_object(pc->extra))
            return kd_err(KD_E_FORMAT, "prompt %llu: damaged extra fields", (unsigned long long)id);
    }
    return KD_OK;
}

/* An array-form line being assembled: one prompt, its samples in order. */
typedef struct group {
    int open;
    uint64_t id;
    uint32_t lineage;
    json_t *gens, *verdicts;
} group;

static int group_flush(kd_store_read *r, group *g, prompt_cache *pc, lineage_cache *lc, FILE *out,
                       kd_export_stats *es)
{
    if (!g->open)
        return KD_OK;
    const json_t *lin = lineage_of(r, lc, g->lineage);
    int st = prompt_load(r, pc, g->id);
    json_t *obj = json_object();
    const char *idn = out_name(lin, "id", NULL), *an = out_name(lin, "answer", "answer");
    const char *vn = out_name(lin, "verdict", NULL);
    if (idn)
        json_object_set_new(obj, idn, json_integer((json_int_t)g->id));
    if (pc->found) {
        json_object_set(obj, or_(out_name(lin, "prompt", "problem"), "problem"), pc->text);
        if (pc->answer && an)
            json_object_set(obj, an, pc->answer);
    }
    json_object_set(obj, or_(out_name(lin, "generation", "generations"), "generations"), g->gens);
    int any = 0; /* verdicts a later stage (reject) wrote, when the import mapped none */
    for (size_t i = 0; !vn && g->verdicts && i < json_array_size(g->verdicts); i++)
        any |= !json_is_null(json_array_get(g->verdicts, i));
    if (g->verdicts && (vn || any))
        json_object_set(obj, vn ? vn : "verdicts", g->verdicts);
    if (pc->extra)
        json_object_update_missing(obj, pc->extra);
    if (st == KD_OK)
        st = emit(out, obj, es, "output");
    json_decref(obj);
    json_decref(g->gens);
    json_decref(g->verdicts);
    memset(g, 0, sizeof *g);
    return st;
}

static int export_generations(kd_store_read *r, FILE *out, kd_export_stats *es, lineage_cache *lc,
                              kd_progress *prog)
{
    kd_store_cursor *c;
    kd_record g;
    prompt_cache pc = {0};
    group grp = {0};
    int rc, st = KD_OK;
    KD_TRY(kd_store_cursor_open(r, KD_DB_GENERATIONS, &c));
    while (st == KD_OK && (rc = kd_store_cursor_next(c, &g)) == 1) {
        es->records++;
        if (prog)
            kd_progress_add(prog, 1);
        const json_t *lin = lineage_of(r, lc, g.lineage);
        const char *form = json_string_value(json_object_get(lin, "form"));
        int array = form && !strcmp(form, "array");
        if (grp.open && !(array && grp.id == g.id && grp.lineage == g.lineage))
            if ((st = group_flush(r, &grp, &pc, lc, out, es)) != KD_OK)
                break;
        /* the verdict, as JSON: a bool under the import's field for a verdict that
         * import read, an object under "verdict" for one a later stage (reject)
         * wrote; imported generations without a verdict field get the latter */
        const char *vn = out_name(lin, "verdict", "verdict");
        int imported = json_is_object(json_object_get(lin, "fields"));
        json_t *verdict = NULL;
        kd_record v;
        int bad = 0;
        int vs = kd_store_get(r, KD_DB_VERDICTS, g.id, g.sample, &v);
        const int as_bool = vs == KD_OK && imported && vn && v.lineage == g.lineage;
        if (vs == KD_OK && !as_bool && (!vn || (imported && v.lineage != g.lineage)))
            vn = "verdict";
        if (vs == KD_OK) {
            if (as_bool) {
                verdict = json_boolean(v.accepted);
            } else {
                verdict = json_object();
                json_object_set_new(verdict, "accepted", json_boolean(v.accepted));
                if (v.reason.len)
                    json_object_set_new(verdict, "reason", jstr(v.reason, &bad));
                if (v.answer.len)
                    json_object_set_new(verdict, "answer", jstr(v.answer, &bad));
                if (v.has_score)
                    json_object_set_new(verdict, "score", json_real(v.score));
            }
        } else if (vs == KD_E_NOTFOUND) {
            kd_err_clear();
        } else {
            st = vs;
            break;
        }
        if (array) {
            if (!grp.open) {
                grp.open = 1;
                grp.id = g.id;
                grp.lineage = g.lineage;
                grp.gens = json_array();
                grp.verdicts = json_array();
            }
            json_array_append_new(grp.gens, jstr(g.text, &bad));
            json_array_append_new(grp.verdicts, verdict ? verdict : json_null());
            if (bad)
                st = kd_err(KD_E_UTF8, "generation (%llu, %u): text is not valid UTF-8", (unsigned long long)g.id,
                            g.sample);
            continue;
        }
        /* scalar: one line per generation */
        if ((st = prompt_load(r, &pc, g.id)) != KD_OK) {
            json_decref(verdict);
            break;
        }
        json_t *obj = json_object();
        const char *idn = out_name(lin, "id", "prompt_id"), *sn = out_name(lin, "sample", "sample");
        const char *an = out_name(lin, "answer", "answer");
        if (idn)
            json_object_set_new(obj, idn, json_integer((json_int_t)g.id));
        if (sn)
            json_object_set_new(obj, sn, json_integer(g.sample));
        if (pc.found) {
            json_object_set(obj, or_(out_name(lin, "prompt", "problem"), "problem"), pc.text);
            if (pc.answer && an)
                json_object_set(obj, an, pc.answer);
        }
        json_object_set_new(obj, or_(out_name(lin, "generation", "generation"), "generation"), jstr(g.text, &bad));
        if (!imported) {
            json_object_set_new(obj, "finish_reason", json_string(kd_finish_name(g.finish)));
            json_object_set_new(obj, "prompt_tokens", json_integer(g.prompt_tokens));
            json_object_set_new(obj, "completion_tokens", json_integer(g.completion_tokens));
        }
        if (verdict && vn)
            json_object_set_new(obj, vn, verdict);
        else
            json_decref(verdict);
        char what[64];
        snprintf(what, sizeof what, "generation (%llu, %u)", (unsigned long long)g.id, g.sample);
        st = bad ? kd_err(KD_E_UTF8, "%s: text is not valid UTF-8", what) : add_extra(obj, g.extra, what);
        if (st == KD_OK)
            st = emit(out, obj, es, "output");
        json_decref(obj);
    }
    if (st == KD_OK && rc < 0)
        st = rc;
    if (st == KD_OK)
        st = group_flush(r, &grp, &pc, lc, out, es);
    json_decref(grp.gens);
    json_decref(grp.verdicts);
    prompt_cache_clear(&pc);
    kd_store_cursor_close(c);
    return st;
}

int kd_jsonl_export_to(kd_store *s, FILE *out, const kd_export_opts *o, kd_export_stats *stats)
{
    kd_export_stats local;
    kd_export_stats *es = stats ? stats : &local;
    memset(es, 0, sizeof *es);
    kd_store_read *r;
    KD_TRY(kd_store_read_begin(s, &r));
    lineage_cache lc = {0};
    kd_progress prog;
    kd_db db = o->kind == KD_KIND_GENERATIONS ? KD_DB_GENERATIONS : KD_DB_PROMPTS;
    uint64_t total = 0;
    kd_store_count(r, db, &total);
    if (o->progress)
        kd_progress_init(&prog, "export", total);
    int st = o->kind == KD_KIND_GENERATIONS ? export_generations(r, out, es, &lc, o->progress ? &prog : NULL)
                                            : export_prompts(r, out, o, es, &lc, o->progress ? &prog : NULL);
    if (o->progress)
        kd_progress_finish(&prog);
    lineage_cache_release(&lc);
    kd_store_read_end(r);
    if (st)
        return kd_err_wrap(st, "export of '%s'", kd_store_path(s));
    return KD_OK;
}

int kd_jsonl_export(const char *dataset, const char *out_path, const kd_export_opts *o, kd_export_stats *stats)
{
    kd_store *s;
    KD_TRY(kd_store_open(dataset, KD_STORE_RDONLY, &s));
    int to_stdout = !out_path || !strcmp(out_path, "-");
    char tmp[4200];
    FILE *out = stdout;
    if (!to_stdout) {
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out_path, (long)getpid());
        if (!(out = fopen(tmp, "w"))) {
            int e = errno;
            kd_store_close(s);
            return kd_err(KD_E_IO, "cannot create '%s': %s", tmp, strerror(e));
        }
    }
    int st = kd_jsonl_export_to(s, out, o, stats);
    kd_store_close(s);
    if (to_stdout) {
        if (fflush(stdout) != 0 && st == KD_OK)
            st = kd_err(KD_E_IO, "cannot write to stdout: %s", strerror(errno));
        return st;
    }
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
        if (st == KD_OK)
            st = kd_err(KD_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
    }
    fclose(out);
    if (st == KD_OK && rename(tmp, out_path) != 0)
        st = kd_err(KD_E_IO, "cannot rename '%s' to '%s': %s", tmp, out_path, strerror(errno));
    if (st != KD_OK)
        unlink(tmp);
    return st;
}
