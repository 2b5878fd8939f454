/* show.c - `distill data show|head|stats`: records pretty-printed with their
 * lineage, counts, and length histograms. See tools.h. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/util.h"
#include "tools.h"

/* ------------------------------------------------------------------------ */
/* Printing records */

/* Characters (code points) of UTF-8 text: bytes that do not continue one. */
static uint64_t utf8_chars(kd_text t)
{
    uint64_t n = 0;
    for (size_t i = 0; i < t.len; i++)
        n += ((unsigned char)t.ptr[i] & 0xC0) != 0x80;
    return n;
}

/* Print `t` under `label`, each line prefixed with "| ", cut after max chars. */
static void print_text(FILE *out, const char *label, kd_text t, uint64_t max)
{
    if (!t.len) {
        fprintf(out, "  %-10s (empty)\n", label);
        return;
    }
    uint64_t chars = 0;
    size_t i = 0, line_start = 0;
    int first = 1;
    for (; i <= t.len; i++) {
        int at_end = i == t.len, cut = !at_end && max && chars >= max && ((unsigned char)t.ptr[i] & 0xC0) != 0x80;
        if (at_end || cut || t.ptr[i] == '\n') {
            fprintf(out, "  %-10s | %.*s\n", first ? label : "", (int)(i - line_start), t.ptr + line_start);
            first = 0;
            line_start = i + 1;
            if (cut) {
                fprintf(out, "  %-10s ... %" PRIu64 " more characters (--max-chars 0 shows all)\n", "",
                        utf8_chars((kd_text){t.ptr + i, t.len - i}));
                return;
            }
        }
        if (!at_end && ((unsigned char)t.ptr[i] & 0xC0) != 0x80)
            chars++;
    }
}

static void print_lineage(FILE *out, kd_store_read *r, uint32_t id, uint64_t created_ms)
{
    char tb[32];
    json_t *e = NULL;
    fprintf(out, "  %-10s %s\n", "created", kd_fmt_time_ms(tb, sizeof tb, created_ms));
    if (id == 0 || kd_store_lineage_get(r, id, &e) != KD_OK) {
        kd_err_clear();
        fprintf(out, "  %-10s %u (unknown)\n", "lineage", id);
        return;
    }
#define S(k) (json_is_string(json_object_get(e, k)) ? json_string_value(json_object_get(e, k)) : "-")
    fprintf(out, "  %-10s %u: %s of '%s', teacher %s, config %s, seed ", "lineage", id, S("kind"), S("source"),
            S("teacher"), S("config_hash"));
    const json_t *seed = json_object_get(e, "seed");
    if (json_is_integer(seed))
        fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(seed));
    else
        fprintf(out, "-");
    fprintf(out, ", created %s\n", S("created"));
#undef S
    json_decref(e);
}

static void print_record(FILE *out, kd_store_read *r, const kd_record *rec, const kd_show_opts *o)
{
    uint64_t max = o ? o->max_chars : 0;
    switch (rec->db) {
    case KD_DB_PROMPTS:
        fprintf(out, "prompt %" PRIu64 "%s\n", rec->id, rec->chat ? " (chat)" : "");
        print_lineage(out, r, rec->lineage, rec->created_ms);
        if (rec->chat) {
            json_t *m = json_loadb(rec->messages.ptr ? rec->messages.ptr : "", rec->messages.len, 0, NULL);
            size_t i;
            json_t *msg;
            json_array_foreach(m, i, msg)
            {
                const json_t *c = json_object_get(msg, "content");
                char *dumped = json_is_string(c) ? NULL : json_dumps(c, JSON_COMPACT | JSON_ENCODE_ANY);
                kd_text t = json_is_string(c) ? (kd_text){json_string_value(c), json_string_length(c)}
                                              : kd_text_of(dumped);
                print_text(out, json_string_value(json_object_get(msg, "role")), t, max);
                free(dumped);
            }
            json_decref(m);
        } else {
            print_text(out, "problem", rec->text, max);
        }
        if (rec->has_answer)
            print_text(out, "answer", rec->answer, max);
        break;
    case KD_DB_GENERATIONS:
        fprintf(out, "generation (%" PRIu64 ", %u)  finish %s, %u prompt + %u completion tokens\n", rec->id,
                rec->sample, kd_finish_name(rec->finish), rec->prompt_tokens, rec->completion_tokens);
        print_lineage(out, r, rec->lineage, rec->created_ms);
        print_text(out, "text", rec->text, max);
        break;
    case KD_DB_VERDICTS:
        fprintf(out, "verdict (%" PRIu64 ", %u)  %s", rec->id, rec->sample, rec->accepted ? "accepted" : "rejected");
        if (rec->has_score)
            fprintf(out, ", score %g", rec->score);
        fprintf(out, "\n");
        print_lineage(out, r, rec->lineage, rec->created_ms);
        if (rec->reason.len)
            print_text(out, "reason", rec->reason, max);
        if (rec->answer.len)
            print_text(out, "answer", rec->answer, max);
        break;
    case KD_DB_EXAMPLES: {
        uint64_t in_loss = 0;
        for (uint32_t i = 0; i < rec->n_tokens; i++)
            in_loss += (uint64_t)kd_example_mask(rec, i);
        fprintf(out, "example %" PRIu64 "  %u tokens, %" PRIu64 " in the loss", rec->id, rec->n_tokens, in_loss);
        if (rec->origin_id != KD_NONE64)
            fprintf(out, ", from prompt %" PRIu64, rec->origin_id);
        if (rec->origin_sample != KD_NONE32)
            fprintf(out, " sample %u", rec->origin_sample);
        fprintf(out, "\n");
        print_lineage(out, r, rec->lineage, rec->created_ms);
        /* tokens, with the ones outside the loss in brackets */
        uint32_t shown = rec->n_tokens;
        if (max && shown > max)
            shown = (uint32_t)max;
        fprintf(out, "  %-10s", "tokens");
        for (uint32_t i = 0; i < shown; i++)
            fprintf(out, kd_example_mask(rec, i) ? " %d" : " [%d]", kd_example_token(rec, i));
        if (shown < rec->n_tokens)
            fprintf(out, " ... %u more", rec->n_tokens - shown);
        fprintf(out, "\n  %-10s [id] = not in the loss\n", "");
        break;
    }
    default:
        break;
    }
    if (rec->extra.len)
        fprintf(out, "  %-10s %.*s\n", "extra", (int)rec->extra.len, rec->extra.ptr);
}

int kd_data_show(const char *dataset, FILE *out, kd_db db, uint64_t id, int has_sample, uint32_t sample,
                 const kd_show_opts *o)
{
    kd_store *s;
    kd_store_read *r = NULL;
    kd_store_cursor *c = NULL;
    kd_record rec;
    int st;
    KD_TRY(kd_store_open(dataset, KD_STORE_RDONLY, &s));
    if ((st = kd_store_read_begin(s, &r)) != KD_OK)
        goto done;
    if (db == KD_DB_EXAMPLES) {
        if ((st = kd_store_get(r, KD_DB_EXAMPLES, id, 0, &rec)) == KD_OK)
            print_record(out, r, &rec, o);
        goto done;
    }
    if (db == KD_DB_GENERATIONS || db == KD_DB_VERDICTS)
        has_sample = 1;
    /* the prompt (a generation without one still shows) */
    st = kd_store_get(r, KD_DB_PROMPTS, id, 0, &rec);
    if (st == KD_OK)
        print_record(out, r, &rec, o);
    else if (st != KD_E_NOTFOUND || !has_sample)
        goto done;
    if ((st = kd_store_cursor_open(r, KD_DB_GENERATIONS, &c)) != KD_OK)
        goto done;
    kd_store_cursor_seek(c, id, has_sample ? sample : 0);
    int rc, shown = 0;
    while ((rc = kd_store_cursor_next(c, &rec)) == 1 && rec.id == id && (!has_sample || rec.sample == sample)) {
        fprintf(out, "\n");
        print_record(out, r, &rec, o);
        kd_record v;
        int vs = kd_store_get(r, KD_DB_VERDICTS, rec.id, rec.sample, &v);
        if (vs == KD_OK) {
            fprintf(out, "\n");
            print_record(out, r, &v, o);
        } else if (vs != KD_E_NOTFOUND) {
            st = vs;
            goto done;
        }
        shown++;
    }
    st = rc < 0 ? rc : KD_OK;
    if (st == KD_OK && has_sample && !shown)
        st = kd_err(KD_E_NOTFOUND, "dataset '%s': no generation (%" PRIu64 ", %u)", dataset, id, sample);
    if (st == KD_OK && !has_sample && !shown)
        fprintf(out, "  (no generations)\n");
done:
    kd_store_cursor_close(c);
    if (r)
        kd_store_read_end(r);
    kd_store_close(s);
    return st;
}

int kd_data_head(const char *dataset, FILE *out, kd_db db, uint64_t n, const kd_show_opts *o)
{
    kd_store *s;
    kd_store_read *r = NULL;
    kd_store_cursor *c = NULL;
    kd_record rec;
    int st, rc = 0;
    uint64_t i = 0;
    KD_TRY(kd_store_open(dataset, KD_STORE_RDONLY, &s));
    if ((st = kd_store_read_begin(s, &r)) == KD_OK && (st = kd_store_cursor_open(r, db, &c)) == KD_OK) {
        for (; i < n && (rc = kd_store_cursor_next(c, &rec)) == 1; i++) {
            if (i)
                fprintf(out, "\n");
            print_record(out, r, &rec, o);
        }
        if (rc < 0)
            st = rc;
        if (st == KD_OK && i == 0)
            fprintf(out, "(no %s)\n", kd_db_name(db));
    }
    kd_store_cursor_close(c);
    if (r)
        kd_store_read_end(r);
    kd_store_close(s);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Stats */

typedef struct lengths {
    uint32_t *v;
    size_t n, cap;
} lengths;

static int lengths_add(lengths *l, uint64_t x)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4096;
        uint32_t *v = realloc(l->v, nc * sizeof *v);
        if (!v)
            return kd_err(KD_E_NOMEM, "length table");
        l->v = v;
        l->cap = nc;
    }
    l->v[l->n++] = x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
    return KD_OK;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Histogram buckets: 0, 1, 2-3, 4-7, ... (powers of two). */
#define NBUCKETS 34
static int bucket_of(uint32_t x)
{
    int b = 0;
    while (x) {
        b++;
        x >>= 1;
    }
    return b;
}
static uint64_t bucket_lo(int b) { return b == 0 ? 0 : 1ull << (b - 1); }
static uint64_t bucket_hi(int b) { return b == 0 ? 0 : (1ull << b) - 1; }

static json_t *lengths_json(lengths *l)
{
    json_t *j = json_object();
    json_object_set_new(j, "n", json_integer((json_int_t)l->n));
    if (!l->n)
        return j;
    qsort(l->v, l->n, sizeof *l->v, cmp_u32);
    double sum = 0;
    uint64_t hist[NBUCKETS] = {0};
    for (size_t i = 0; i < l->n; i++) {
        sum += l->v[i];
        hist[bucket_of(l->v[i])]++;
    }
    json_object_set_new(j, "min", json_integer(l->v[0]));
    json_object_set_new(j, "max", json_integer(l->v[l->n - 1]));
    json_object_set_new(j, "mean", json_real(sum / (double)l->n));
    json_object_set_new(j, "p50", json_integer(l->v[(l->n - 1) * 50 / 100]));
    json_object_set_new(j, "p90", json_integer(l->v[(l->n - 1) * 90 / 100]));
    json_object_set_new(j, "p99", json_integer(l->v[(l->n - 1) * 99 / 100]));
    json_t *h = json_array();
    for (int b = 0; b < NBUCKETS; b++)
        if (hist[b])
            json_array_append_new(h, json_pack("[I, I, I]", (json_int_t)bucket_lo(b), (json_int_t)bucket_hi(b),
                                               (json_int_t)hist[b]));
    json_object_set_new(j, "histogram", h);
    return j;
}

static void print_lengths(FILE *out, const char *what, const json_t *j)
{
    json_int_t n = json_integer_value(json_object_get(j, "n"));
    if (!n)
        return;
    fprintf(out, "\n%s: n %" JSON_INTEGER_FORMAT ", min %" JSON_INTEGER_FORMAT ", mean %.1f, p50 %" JSON_INTEGER_FORMAT
                 ", p90 %" JSON_INTEGER_FORMAT ", p99 %" JSON_INTEGER_FORMAT ", max %" JSON_INTEGER_FORMAT "\n",
            what, n, json_integer_value(json_object_get(j, "min")), json_real_value(json_object_get(j, "mean")),
            json_integer_value(json_object_get(j, "p50")), json_integer_value(json_object_get(j, "p90")),
            json_integer_value(json_object_get(j, "p99")), json_integer_value(json_object_get(j, "max")));
    const json_t *h = json_object_get(j, "histogram");
    json_int_t most = 0;
    size_t i;
    json_t *row;
    json_array_foreach(h, i, row) if (json_integer_value(json_array_get(row, 2)) > most) most =
        json_integer_value(json_array_get(row, 2));
    json_array_foreach(h, i, row)
    {
        json_int_t lo = json_integer_value(json_array_get(row, 0)), hi = json_integer_value(json_array_get(row, 1));
        json_int_t c = json_integer_value(json_array_get(row, 2));
        int bar = most ? (int)((c * 40 + most - 1) / most) : 0; /* 40 cells: fits 80 columns with the labels */
        char range[48];
        snprintf(range, sizeof range, "%" JSON_INTEGER_FORMAT "-%" JSON_INTEGER_FORMAT, lo, hi);
        fprintf(out, "  %15s %-40.*s %" JSON_INTEGER_FORMAT "\n", range, bar,
                "########################################", c);
    }
}

typedef struct per_lineage {
    uint64_t (*n)[KD_DB_COUNT];
    size_t cap;
} per_lineage;

static int per_lineage_add(per_lineage *p, uint32_t id, kd_db db)
{
    if (id >= p->cap) {
        size_t nc = (size_t)id + 16;
        uint64_t(*n)[KD_DB_COUNT] = realloc(p->n, nc * sizeof *n);
        if (!n)
            return kd_err(KD_E_NOMEM, "lineage counts");
        memset(n + p->cap, 0, (nc - p->cap) * sizeof *n);
        p->n = n;
        p->cap = nc;
    }
    p->n[id][db]++;
    return KD_OK;
}

static int collect_stats(kd_store *s, json_t *j)
{
    kd_store_read *r;
    KD_TRY(kd_store_read_begin(s, &r));
    lengths prompt_l = {0}, answer_l = {0}, gen_l = {0}, tok_l = {0};
    per_lineage pl = {0};
    uint64_t chats = 0, accepted = 0, rejected = 0, loss_tokens = 0, finish[KD_FINISH_COUNT + 1] = {0};
    json_t *reasons = json_object(), *counts = json_object();
    int st = KD_OK;
    for (int db = 0; db < KD_DB_COUNT && st == KD_OK; db++) {
        kd_store_cursor *c;
        kd_record rec;
        int rc = 0;
        uint64_t n = 0;
        if ((st = kd_store_count(r, (kd_db)db, &n)) != KD_OK || (st = kd_store_cursor_open(r, (kd_db)db, &c)))
            break;
        json_object_set_new(counts, kd_db_name((kd_db)db), json_integer((json_int_t)n));
        while (st == KD_OK && (rc = kd_store_cursor_next(c, &rec)) == 1) {
            st = per_lineage_add(&pl, rec.lineage, (kd_db)db);
            switch (db) {
            case KD_DB_PROMPTS:
                chats += (uint64_t)rec.chat;
                if (st == KD_OK)
                    st = lengths_add(&prompt_l, utf8_chars(rec.text));
                if (st == KD_OK && rec.has_answer)
                    st = lengths_add(&answer_l, utf8_chars(rec.answer));
                break;
            case KD_DB_GENERATIONS:
                finish[rec.finish < KD_FINISH_COUNT ? rec.finish : KD_FINISH_COUNT]++;
                if (st == KD_OK)
                    st = lengths_add(&gen_l, utf8_chars(rec.text));
                break;
            case KD_DB_VERDICTS: {
                accepted += (uint64_t)rec.accepted;
                rejected += (uint64_t)!rec.accepted;
                char reason[128];
                snprintf(reason, sizeof reason, "%s%.*s", rec.accepted ? "accepted: " : "rejected: ",
                         rec.reason.len ? (int)(rec.reason.len < 100 ? rec.reason.len : 100) : 11,
                         rec.reason.len ? rec.reason.ptr : "(no reason)");
                json_t *v = json_object_get(reasons, reason);
                json_object_set_new(reasons, reason, json_integer(v ? json_integer_value(v) + 1 : 1));
                break;
            }
            case KD_DB_EXAMPLES:
                if (st == KD_OK)
                    st = lengths_add(&tok_l, rec.n_tokens);
                for (uint32_t i = 0; i < (rec.n_tokens + 7) / 8; i++)
                    loss_tokens += (uint64_t)__builtin_popcount(rec.mask[i]);
                break;
            default:
                break;
            }
        }
        if (st == KD_OK && rc < 0)
            st = rc;
        kd_store_cursor_close(c);
    }
    json_t *ds = NULL;
    if (kd_store_meta_get(r, "dataset", &ds) == KD_OK)
        json_object_set_new(j, "name", json_incref(json_object_get(ds, "name")));
    else
        kd_err_clear();
    json_decref(ds);
    json_object_set_new(j, "counts", counts);
    json_object_set_new(j, "chats", json_integer((json_int_t)chats));
    json_t *sources = json_array();
    for (size_t id = 0; id < pl.cap; id++) {
        uint64_t any = 0;
        for (int db = 0; db < KD_DB_COUNT; db++)
            any += pl.n[id][db];
        if (!any)
            continue;
        json_t *e = NULL, *row = json_object();
        json_object_set_new(row, "lineage", json_integer((json_int_t)id));
        if (id && kd_store_lineage_get(r, (uint32_t)id, &e) == KD_OK) {
            json_object_set(row, "source", json_object_get(e, "source"));
            json_object_set(row, "kind", json_object_get(e, "kind"));
            json_object_set(row, "teacher", json_object_get(e, "teacher"));
        } else {
            kd_err_clear();
            json_object_set_new(row, "source", json_string("(unknown)"));
        }
        json_decref(e);
        for (int db = 0; db < KD_DB_COUNT; db++)
            json_object_set_new(row, kd_db_name((kd_db)db), json_integer((json_int_t)pl.n[id][db]));
        json_array_append_new(sources, row);
    }
    json_object_set_new(j, "sources", sources);
    json_object_set_new(j, "verdicts",
                        json_pack("{s:I, s:I, s:O}", "accepted", (json_int_t)accepted, "rejected", (json_int_t)rejected,
                                  "reasons", reasons));
    json_t *fin = json_object();
    for (unsigned f = 0; f < KD_FINISH_COUNT; f++)
        if (finish[f])
            json_object_set_new(fin, kd_finish_name(f), json_integer((json_int_t)finish[f]));
    json_object_set_new(j, "finish", fin);
    json_object_set_new(j, "loss_tokens", json_integer((json_int_t)loss_tokens));
    json_t *len = json_object();
    json_object_set_new(len, "prompt_chars", lengths_json(&prompt_l));
    json_object_set_new(len, "answer_chars", lengths_json(&answer_l));
    json_object_set_new(len, "generation_chars", lengths_json(&gen_l));
    json_object_set_new(len, "example_tokens", lengths_json(&tok_l));
    json_object_set_new(j, "lengths", len);
    json_decref(reasons);
    free(prompt_l.v);
    free(answer_l.v);
    free(gen_l.v);
    free(tok_l.v);
    free(pl.n);
    kd_store_read_end(r);
    return st;
}

int kd_data_stats(const char *dataset, FILE *out, int as_json)
{
    kd_store *s;
    KD_TRY(kd_store_open(dataset, KD_STORE_RDONLY, &s));
    json_t *j = json_object();
    json_object_set_new(j, "dataset", json_string(dataset));
    int st = collect_stats(s, j);
    kd_store_close(s);
    if (st) {
        json_decref(j);
        return st;
    }
    if (as_json) {
        json_dumpf(j, out, JSON_INDENT(2));
        fputc('\n', out);
        json_decref(j);
        return KD_OK;
    }
    const json_t *counts = json_object_get(j, "counts");
    const char *name = json_string_value(json_object_get(j, "name"));
    fprintf(out, "dataset '%s'%s%s%s\n\nrecords:\n", dataset, name ? " (name '" : "", name ? name : "",
            name ? "')" : "");
    for (int db = 0; db < KD_DB_COUNT; db++) {
        fprintf(out, "  %-12s %12" JSON_INTEGER_FORMAT, kd_db_name((kd_db)db),
                json_integer_value(json_object_get(counts, kd_db_name((kd_db)db))));
        if (db == KD_DB_PROMPTS && json_integer_value(json_object_get(j, "chats")))
            fprintf(out, "  (%" JSON_INTEGER_FORMAT " chats)", json_integer_value(json_object_get(j, "chats")));
        if (db == KD_DB_EXAMPLES && json_integer_value(json_object_get(j, "loss_tokens")))
            fprintf(out, "  (%" JSON_INTEGER_FORMAT " tokens in the loss)",
                    json_integer_value(json_object_get(j, "loss_tokens")));
        fprintf(out, "\n");
    }
    /* the source goes last: paths are long and would push the counts out of line */
    fprintf(out, "\nby source:\n  %-7s %10s %11s %9s %9s  %s\n", "lineage", "prompts", "generations", "verdicts",
            "examples", "source (kind, teacher)");
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(j, "sources"), i, row)
    {
        const char *so = json_string_value(json_object_get(row, "source"));
        const char *k = json_string_value(json_object_get(row, "kind"));
        const char *t = json_string_value(json_object_get(row, "teacher"));
        fprintf(out, "  %-7" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(row, "lineage")));
        for (int db = 0; db < KD_DB_COUNT; db++)
            fprintf(out, " %*" JSON_INTEGER_FORMAT, db == 0 ? 10 : db == 1 ? 11 : 9,
                    json_integer_value(json_object_get(row, kd_db_name((kd_db)db))));
        fprintf(out, "  %s (%s%s%s)\n", so ? so : "?", k ? k : "?", t ? ", " : "", t ? t : "");
    }
    const json_t *v = json_object_get(j, "verdicts");
    json_int_t acc = json_integer_value(json_object_get(v, "accepted")),
               rej = json_integer_value(json_object_get(v, "rejected"));
    if (acc + rej) {
        fprintf(out, "\nverdicts: %" JSON_INTEGER_FORMAT " accepted (%.1f%%), %" JSON_INTEGER_FORMAT " rejected\n", acc,
                100.0 * (double)acc / (double)(acc + rej), rej);
        const char *reason;
        json_t *n;
        json_object_foreach(json_object_get(v, "reasons"), reason, n)
            fprintf(out, "  %-50s %10" JSON_INTEGER_FORMAT "\n", reason, json_integer_value(n));
    }
    const json_t *fin = json_object_get(j, "finish");
    if (json_object_size(fin)) {
        const char *f;
        json_t *n;
        fprintf(out, "\ngenerations by finish reason:");
        json_object_foreach((json_t *)fin, f, n) fprintf(out, " %s %" JSON_INTEGER_FORMAT, f, json_integer_value(n));
        fprintf(out, "\n");
    }
    const json_t *len = json_object_get(j, "lengths");
    print_lengths(out, "prompt length (characters)", json_object_get(len, "prompt_chars"));
    print_lengths(out, "answer length (characters)", json_object_get(len, "answer_chars"));
    print_lengths(out, "generation length (characters)", json_object_get(len, "generation_chars"));
    print_lengths(out, "example length (tokens)", json_object_get(len, "example_tokens"));
    json_decref(j);
    return KD_OK;
}
