/* curate.c - the curation machinery (unit iterator, output job, reports),
 * the filter language, and the ops filter, split, sample and select; the op
 * table and the script runner. dedupe.c holds dedupe and decontaminate,
 * tokenize_ds.c holds tokenize, mix.c holds mix. */
#include "curate_impl.h"

#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"

/* ---- reports ------------------------------------------------------------- */

static char *fmt_thousands_(char *buf, size_t cap, uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v), o = 0;
    for (int i = 0; i < n && (size_t)o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

char *kd_curate_report_line(const kd_curate_report *r, char *buf, size_t cap)
{
    char a[32], b[32], c[32];
    int mix = !strcmp(r->op, "mix"); /* its "reasons" are the units drawn per source: no dropped count */
    size_t o = (size_t)snprintf(buf, cap, "%s: %skept %s", r->op, r->already_done ? "already done: " : "",
                                fmt_thousands_(a, sizeof a, r->kept));
    if (!mix && o < cap)
        o += (size_t)snprintf(buf + o, cap - o, ", dropped %s", fmt_thousands_(b, sizeof b, r->dropped));
    int first = 1;
    for (int i = 0; i < r->nreasons && o < cap; i++) {
        if (!r->reasons[i].n && !mix)
            continue;
        o += (size_t)snprintf(buf + o, cap - o, "%s%s %s", first ? " (" : ", ", r->reasons[i].name,
                              fmt_thousands_(c, sizeof c, r->reasons[i].n));
        first = 0;
    }
    if (!first && o < cap)
        o += (size_t)snprintf(buf + o, cap - o, ")");
    if (r->examples && o < cap)
        snprintf(buf + o, cap - o, "; %s examples", fmt_thousands_(c, sizeof c, r->examples));
    return buf;
}

int cur_reason_(kd_curate_report *rep, const char *name)
{
    for (int i = 0; i < rep->nreasons; i++)
        if (!strcmp(rep->reasons[i].name, name))
            return i;
    assert(rep->nreasons < KD_CURATE_MAX_REASONS);
    snprintf(rep->reasons[rep->nreasons].name, sizeof rep->reasons[0].name, "%s", name);
    rep->reasons[rep->nreasons].n = 0;
    return rep->nreasons++;
}

/* ---- the unit iterator --------------------------------------------------- */

static int iter_read_(kd_store_cursor *c, kd_record *rec, const void **raw, size_t *rawlen, int *ok)
{
    int st = kd_store_cursor_next(c, rec);
    if (st < 0)
        return st;
    *ok = st;
    if (st) {
        const void *k;
        size_t kl;
        kd_store_cursor_raw(c, &k, &kl, raw, rawlen);
    }
    return KD_OK;
}

int cur_iter_open_(kd_store *in, cur_iter_ *it)
{
    memset(it, 0, sizeof *it);
    KD_TRY(kd_store_read_begin(in, &it->r));
    uint64_t ng = 0, np = 0;
    int st = kd_store_count(it->r, KD_DB_GENERATIONS, &ng);
    if (st == KD_OK)
        st = kd_store_count(it->r, KD_DB_PROMPTS, &np);
    it->gen_mode = ng > 0;
    it->total = it->gen_mode ? ng : np;
    if (st == KD_OK)
        st = kd_store_cursor_open(it->r, KD_DB_PROMPTS, &it->pc);
    if (st == KD_OK && it->gen_mode)
        st = kd_store_cursor_open(it->r, KD_DB_GENERATIONS, &it->gc);
    if (st == KD_OK && it->gen_mode)
        st = kd_store_cursor_open(it->r, KD_DB_VERDICTS, &it->vc);
    if (st == KD_OK)
        st = cur_iter_seek_(it, 0, 0, 0);
    if (st != KD_OK)
        cur_iter_close_(it);
    return st;
}

int cur_iter_seek_(cur_iter_ *it, uint64_t pid, uint32_t sample, uint64_t ordinal)
{
    it->ordinal = ordinal;
    KD_TRY(kd_store_cursor_seek(it->pc, pid, 0));
    KD_TRY(iter_read_(it->pc, &it->p, &it->praw, &it->prawlen, &it->p_ok));
    if (it->gen_mode) {
        KD_TRY(kd_store_cursor_seek(it->gc, pid, sample));
        KD_TRY(kd_store_cursor_seek(it->vc, pid, sample));
        KD_TRY(iter_read_(it->vc, &it->v, &it->vraw, &it->vrawlen, &it->v_ok));
    }
    return KD_OK;
}

static int key_lt_(uint64_t a, uint32_t as, uint64_t b, uint32_t bs) { return a < b || (a == b && as < bs); }

int cur_iter_next_(cur_iter_ *it, cur_unit_ *u)
{
    memset(u, 0, sizeof *u);
    u->ordinal = it->ordinal;
    if (!it->gen_mode) {
        if (!it->p_ok)
            return 0;
        u->has_prompt = 1;
        u->p = it->p;
        u->praw = it->praw;
        u->prawlen = it->prawlen;
        /* the next read overwrites the cursor's buffers: copy the record out first */
        it->p_ok = 0;
        it->ordinal++;
        return 1;
    }
    int ok;
    KD_TRY(iter_read_(it->gc, &u->g, &u->graw, &u->grawlen, &ok));
    if (!ok)
        return 0;
    u->has_gen = 1;
    while (it->p_ok && it->p.id < u->g.id)
        KD_TRY(iter_read_(it->pc, &it->p, &it->praw, &it->prawlen, &it->p_ok));
    if (it->p_ok && it->p.id == u->g.id) {
        u->has_prompt = 1;
        u->p = it->p;
        u->praw = it->praw;
        u->prawlen = it->prawlen;
    }
    while (it->v_ok && key_lt_(it->v.id, it->v.sample, u->g.id, u->g.sample))
        KD_TRY(iter_read_(it->vc, &it->v, &it->vraw, &it->vrawlen, &it->v_ok));
    if (it->v_ok && it->v.id == u->g.id && it->v.sample == u->g.sample) {
        u->has_verdict = 1;
        u->v = it->v;
        u->vraw = it->vraw;
        u->vrawlen = it->vrawlen;
    }
    it->ordinal++;
    return 1;
}

/* In prompt mode the prompt cursor is read one ahead lazily: advance it now. */
static int iter_advance_prompt_(cur_iter_ *it)
{
    if (!it->gen_mode && !it->p_ok)
        return iter_read_(it->pc, &it->p, &it->praw, &it->prawlen, &it->p_ok);
    return KD_OK;
}

void cur_iter_close_(cur_iter_ *it)
{
    kd_store_cursor_close(it->pc);
    kd_store_cursor_close(it->gc);
    kd_store_cursor_close(it->vc);
    kd_store_read_end(it->r);
    memset(it, 0, sizeof *it);
}

/* Every consumer calls next through this, so that prompt mode reads ahead. */
static int iter_next_(cur_iter_ *it, cur_unit_ *u)
{
    KD_TRY(iter_advance_prompt_(it));
    return cur_iter_next_(it, u);
}

/* ---- the output job ------------------------------------------------------ */

/* The options as printed YAML minus the lines of keys that may change
 * between runs (threads). */
static int options_text_(const kd_cfg_schema *schema, const void *opts, char **out)
{
    char *text = NULL;
    KD_TRY(kd_cfg_text(schema, opts, 0, &text, NULL));
    char *w = text;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line + 1) : strlen(line);
        if (strncmp(line, "threads:", 8) != 0) {
            memmove(w, line, n);
            w += n;
        }
        line += n;
    }
    *w = 0;
    *out = text;
    return KD_OK;
}

static void report_from_json_(kd_curate_report *rep, const json_t *m)
{
    rep->kept = (uint64_t)json_integer_value(json_object_get(m, "kept"));
    rep->dropped = (uint64_t)json_integer_value(json_object_get(m, "dropped"));
    rep->examples = (uint64_t)json_integer_value(json_object_get(m, "examples"));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(m, "reasons"), k, v)
    {
        int i = cur_reason_(rep, k);
        rep->reasons[i].n = (uint64_t)json_integer_value(v);
    }
    const char *unit = json_string_value(json_object_get(m, "unit"));
    snprintf(rep->unit, sizeof rep->unit, "%s", unit ? unit : "");
}

static json_t *report_to_json_(const kd_curate_report *rep)
{
    json_t *reasons = json_object();
    for (int i = 0; i < rep->nreasons; i++)
        json_object_set_new(reasons, rep->reasons[i].name, json_integer((json_int_t)rep->reasons[i].n));
    return json_pack("{s:I, s:I, s:I, s:o, s:s}", "kept", (json_int_t)rep->kept, "dropped",
                     (json_int_t)rep->dropped, "examples", (json_int_t)rep->examples, "reasons", reasons, "unit",
                     rep->unit);
}

/* Is OUT finished by the same job? 1 yes (rep filled), 0 no output, < 0 error. */
static int check_done_(cur_job_ *j)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/data.mdb", j->out_dir);
    if (access(p, F_OK) != 0)
        return kd_is_dir(j->out_dir) && rmdir(j->out_dir) != 0 && errno != ENOENT
                   ? kd_err(KD_E_CONFIG, "output '%s' exists and is not a dataset; remove it or choose another",
                            j->out_dir)
                   : 0;
    kd_store *s;
    KD_TRY(kd_store_open(j->out_dir, KD_STORE_RDONLY, &s));
    kd_store_read *r;
    int st = kd_store_read_begin(s, &r);
    json_t *m = NULL;
    if (st == KD_OK) {
        st = kd_store_meta_get(r, "curate", &m);
        kd_store_read_end(r);
    }
    kd_store_close(s);
    if (st == KD_E_NOTFOUND)
        return kd_err(KD_E_CONFIG, "output '%s' exists and was not written by a curation op; remove it or choose another",
                      j->out_dir);
    if (st != KD_OK)
        return st;
    const char *h = json_string_value(json_object_get(m, "options_hash"));
    const char *op = json_string_value(json_object_get(m, "op"));
    if (!h || strcmp(h, j->hash) != 0 || !op || strcmp(op, j->opname) != 0) {
        st = kd_err(KD_E_CONFIG,
                    "output '%s' exists, made by '%s' with other input or options (hash %s, now %s); remove it or "
                    "choose another",
                    j->out_dir, op ? op : "?", h ? h : "?", j->hash);
        json_decref(m);
        return st;
    }
    report_from_json_(j->rep, m);
    j->rep->already_done = 1;
    json_decref(m);
    return 1;
}

/* Copy the input's lineage table into the output; fill lmap and lsrc. */
static int copy_lineage_(cur_job_ *j)
{
    kd_store_read *r;
    KD_TRY(kd_store_read_begin(j->in, &r));
    json_t *all = NULL;
    int st = kd_store_meta_list(r, "lineage/", &all);
    kd_store_read_end(r);
    if (st != KD_OK)
        return st;
    uint32_t maxid = 0;
    const char *k;
    json_t *v;
    json_object_foreach(all, k, v)
    {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id > 0 && id < (json_int_t)UINT32_MAX && (uint32_t)id > maxid)
            maxid = (uint32_t)id;
    }
    j->nl = maxid + 1;
    j->lmap = calloc(j->nl, sizeof *j->lmap);
    j->lsrc = calloc(j->nl, sizeof *j->lsrc);
    if (!j->lmap || !j->lsrc) {
        json_decref(all);
        return kd_err(KD_E_NOMEM, "out of memory");
    }
    st = cur_batch_(j);
    json_object_foreach(all, k, v)
    {
        if (st != KD_OK)
            break;
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id <= 0 || (uint32_t)id >= j->nl)
            continue;
        const char *src = json_string_value(json_object_get(v, "source"));
        j->lsrc[id] = src ? strdup(src) : NULL;
        st = kd_store_lineage_add_json(j->b, v, 1, &j->lmap[id]);
    }
    json_decref(all);
    return st;
}

const char *cur_source_(const cur_job_ *j, uint32_t lineage)
{
    return lineage < j->nl && j->lsrc[lineage] ? j->lsrc[lineage] : "";
}

int cur_batch_(cur_job_ *j)
{
    return j->b ? KD_OK : kd_store_batch_begin(j->out, &j->b);
}

int cur_commit_(cur_job_ *j, size_t bytes)
{
    if (!j->b || (bytes && kd_store_batch_bytes(j->b) < bytes))
        return KD_OK;
    kd_store_batch *b = j->b;
    j->b = NULL;
    return kd_store_batch_commit(b);
}

int cur_begin_(cur_job_ *j, const char *opname, const kd_cfg_schema *schema, const void *opts,
               const kd_curate_run *run, const char *in_dir, const char *out_dir, int resume,
               kd_curate_report *rep)
{
    memset(j, 0, sizeof *j);
    memset(rep, 0, sizeof *rep);
    snprintf(rep->op, sizeof rep->op, "%s", opname);
    j->opname = opname;
    j->in_dir = in_dir;
    j->out_dir = out_dir;
    j->run = run;
    j->rep = rep;
    if (!in_dir || !out_dir || !*in_dir || !*out_dir)
        return kd_err(KD_E_USAGE, "%s: wants an input and an output dataset", opname);
    if (!strcmp(in_dir, out_dir))
        return kd_err(KD_E_USAGE, "%s: the output '%s' is the input; write another dataset", opname, out_dir);
    KD_TRY(options_text_(schema, opts, &j->options));
    uint64_t h = kd_fnv1a64(opname, strlen(opname), KD_FNV1A64_INIT);
    h = kd_fnv1a64("\n", 1, h);
    h = kd_fnv1a64(in_dir, strlen(in_dir), h);
    h = kd_fnv1a64("\n", 1, h);
    h = kd_fnv1a64(j->options, strlen(j->options), h);
    snprintf(j->hash, sizeof j->hash, "fnv1a64:%016" PRIx64, h);
    int st = check_done_(j);
    if (st != 0) {
        free(j->options);
        j->options = NULL;
        return st;
    }
    if ((size_t)snprintf(j->partial, sizeof j->partial, "%s.partial", out_dir) >= sizeof j->partial)
        st = kd_err(KD_E_RANGE, "output path too long");
    if (st == KD_OK)
        st = kd_store_open(in_dir, KD_STORE_RDONLY, &j->in);
    char p[4200];
    snprintf(p, sizeof p, "%s/data.mdb", j->partial);
    if (st == KD_OK && access(p, F_OK) == 0 && resume) {
        /* keep it when it was started by the same job */
        kd_store *s;
        st = kd_store_open(j->partial, KD_STORE_RDONLY, &s);
        json_t *m = NULL;
        if (st == KD_OK) {
            kd_store_read *r;
            st = kd_store_read_begin(s, &r);
            if (st == KD_OK) {
                if (kd_store_meta_get(r, "curate/partial", &m) != KD_OK)
                    m = NULL;
                kd_store_read_end(r);
            }
            kd_store_close(s);
        }
        const char *ph = json_string_value(json_object_get(m, "options_hash"));
        j->resumed = ph && !strcmp(ph, j->hash);
        json_decref(m);
    }
    if (st == KD_OK && !j->resumed)
        st = kd_rmtree(j->partial);
    kd_err_clear();
    if (st == KD_OK) {
        const char *base = strrchr(out_dir, '/');
        kd_store_opts so = {.flags = KD_STORE_CREATE | (run ? run->store_flags : 0),
                            .name = base && base[1] ? base + 1 : out_dir};
        st = kd_store_open_opts(j->partial, &so, &j->out);
    }
    if (st == KD_OK)
        st = copy_lineage_(j);
    if (st == KD_OK) {
        json_t *extra = json_pack("{s:s, s:s}", "op", opname, "options", j->options);
        kd_lineage l = {.kind = "curate", .source = in_dir, .config_hash = j->hash, .seed = -1};
        st = kd_store_lineage_add(j->b, &l, extra, &j->lineage);
        json_decref(extra);
    }
    if (st == KD_OK && !j->resumed) {
        json_t *m = json_pack("{s:s, s:s}", "op", opname, "options_hash", j->hash);
        st = kd_store_meta_put(j->b, "curate/partial", m);
        json_decref(m);
    }
    if (st == KD_OK)
        st = cur_commit_(j, 0);
    if (st != KD_OK) {
        cur_abort_(j);
        return st;
    }
    return 0;
}

static void job_free_(cur_job_ *j)
{
    kd_store_batch_abort(j->b);
    j->b = NULL;
    kd_store_close(j->in);
    kd_store_close(j->out);
    j->in = j->out = NULL;
    for (uint32_t i = 0; i < j->nl && j->lsrc; i++)
        free(j->lsrc[i]);
    free(j->lsrc);
    free(j->lmap);
    free(j->buf);
    free(j->options);
    j->lsrc = NULL;
    j->lmap = NULL;
    j->buf = NULL;
    j->options = NULL;
}

void cur_abort_(cur_job_ *j) { job_free_(j); }

/* Put an input record's raw value with its lineage remapped. */
static int put_copy_(cur_job_ *j, kd_db db, uint64_t id, uint32_t sample, const void *raw, size_t len,
                     uint32_t lineage)
{
    if (len > j->bufcap) {
        void *nb = realloc(j->buf, len);
        if (!nb)
            return kd_err(KD_E_NOMEM, "out of memory");
        j->buf = nb;
        j->bufcap = len;
    }
    memcpy(j->buf, raw, len);
    kd_record_set_lineage(j->buf, len, lineage < j->nl ? j->lmap[lineage] : 0);
    return kd_store_put_raw(j->b, db, id, sample, j->buf, len, KD_PUT_KEEP, NULL);
}

int cur_copy_unit_(cur_job_ *j, const cur_unit_ *u)
{
    KD_TRY(cur_batch_(j));
    if (u->has_prompt && (!j->prompt_copied || j->last_prompt != u->p.id)) {
        KD_TRY(put_copy_(j, KD_DB_PROMPTS, u->p.id, 0, u->praw, u->prawlen, u->p.lineage));
        j->prompt_copied = 1;
        j->last_prompt = u->p.id;
    }
    if (u->has_gen)
        KD_TRY(put_copy_(j, KD_DB_GENERATIONS, u->g.id, u->g.sample, u->graw, u->grawlen, u->g.lineage));
    if (u->has_verdict)
        KD_TRY(put_copy_(j, KD_DB_VERDICTS, u->v.id, u->v.sample, u->vraw, u->vrawlen, u->v.lineage));
    return KD_OK;
}

int cur_finish_(cur_job_ *j)
{
    int st = cur_batch_(j);
    json_t *hist = NULL;
    if (st == KD_OK) {
        kd_store_read *r;
        st = kd_store_read_begin(j->in, &r);
        if (st == KD_OK) {
            json_t *prev = NULL;
            if (kd_store_meta_get(r, "curate", &prev) == KD_OK)
                hist = json_deep_copy(json_object_get(prev, "history"));
            json_decref(prev);
            kd_store_read_end(r);
        }
        kd_err_clear();
        if (!json_is_array(hist)) {
            json_decref(hist);
            hist = json_array();
        }
        json_array_append_new(hist, json_pack("{s:s, s:s, s:s}", "op", j->opname, "input", j->in_dir,
                                              "options_hash", j->hash));
    }
    if (st == KD_OK) {
        json_t *m = report_to_json_(j->rep);
        json_object_set_new(m, "op", json_string(j->opname));
        json_object_set_new(m, "input", json_string(j->in_dir));
        json_object_set_new(m, "options", json_string(j->options));
        json_object_set_new(m, "options_hash", json_string(j->hash));
        json_object_set_new(m, "history", hist);
        hist = NULL;
        st = kd_store_meta_put(j->b, "curate", m);
        json_decref(m);
    }
    json_decref(hist);
    if (st == KD_OK)
        st = cur_commit_(j, 0);
    if (st == KD_OK) {
        st = kd_store_close(j->out);
        j->out = NULL;
    }
    if (st == KD_OK && rename(j->partial, j->out_dir) != 0)
        st = kd_err(KD_E_IO, "cannot rename '%s' to '%s': %s", j->partial, j->out_dir, strerror(errno));
    job_free_(j);
    return st;
}

/* The generic op: iterate the units; decide(ctx, u) returns -1 to keep, a
 * reason index to drop, or a status (< -1 ... as KD_E_* are far below). */
typedef int (*decide_fn_)(void *ctx, cur_job_ *j, const cur_unit_ *u, int *reason);

static int copy_pass_(cur_job_ *j, decide_fn_ decide, void *ctx)
{
    cur_iter_ it;
    KD_TRY(cur_iter_open_(j->in, &it));
    snprintf(j->rep->unit, sizeof j->rep->unit, "%s", it.gen_mode ? "generations" : "prompts");
    kd_progress pb;
    if (j->run && j->run->progress)
        kd_progress_init(&pb, j->opname, it.total);
    cur_unit_ u;
    int st, got;
    while ((got = st = iter_next_(&it, &u)) > 0) {
        int reason = -1;
        st = decide(ctx, j, &u, &reason);
        if (st != KD_OK)
            break;
        if (reason < 0) {
            j->rep->kept++;
            st = cur_copy_unit_(j, &u);
        } else {
            j->rep->dropped++;
            j->rep->reasons[reason].n++;
        }
        /* commit outside the read transaction's way: the input is another store */
        if (st == KD_OK)
            st = cur_commit_(j, 16u << 20);
        if (st != KD_OK)
            break;
        if (j->run && j->run->progress)
            kd_progress_add(&pb, 1);
    }
    (void)got;
    if (j->run && j->run->progress)
        kd_progress_finish(&pb);
    cur_iter_close_(&it);
    return st < 0 ? st : KD_OK;
}

/* Decide by a precomputed array indexed by ordinal: 0 keep, r+1 reason r. */
static int decide_by_array_(void *ctx, cur_job_ *j, const cur_unit_ *u, int *reason)
{
    (void)j;
    const uint8_t *d = ctx;
    *reason = d[u->ordinal] ? d[u->ordinal] - 1 : -1;
    return KD_OK;
}

static int run_with_array_(cur_job_ *j, uint8_t *d)
{
    int st = copy_pass_(j, decide_by_array_, d);
    if (st != KD_OK) {
        cur_abort_(j);
        return st;
    }
    return cur_finish_(j);
}

/* ---- the filter language ------------------------------------------------- */

enum { FN_AND, FN_OR, FN_NOT, FN_CMP };
enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };
enum { F_CHARS, F_PROMPT_CHARS, F_TOKENS, F_PASS_RATE, F_SAMPLE, F_SCORE, F_NUMERIC_END = F_SCORE,
       F_SOURCE, F_VERDICT, F_FINISH, F_LANG, F_COUNT };
static const char *const field_names_[F_COUNT] = {"chars",  "prompt_chars", "tokens",  "pass_rate",     "sample",
                                                  "score",  "source",       "verdict", "finish_reason", "lang"};
#define FIELD_LIST "chars, prompt_chars, tokens, pass_rate, sample, score, source, verdict, finish_reason, lang"

typedef struct fnode_ {
    int kind, field, op;
    double num;
    char *str;
    struct fnode_ *a, *b;
} fnode_;

struct kd_filter {
    fnode_ *root;
    unsigned uses; /* bit per field */
};

typedef struct fparse_ {
    const char *s;
    size_t pos;
    int depth;
    unsigned uses;
} fparse_;

static void fnode_free_(fnode_ *n)
{
    if (!n)
        return;
    fnode_free_(n->a);
    fnode_free_(n->b);
    free(n->str);
    free(n);
}

static void skip_ws_(fparse_ *p)
{
    while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r')
        p->pos++;
}

static int is_word_(int c) { return isalnum(c) || c == '_' || c == '.' || c == '-' || c == '+'; }

/* The bare word at the cursor (does not move). */
static size_t word_len_(const fparse_ *p)
{
    size_t n = 0;
    while (p->s[p->pos + n] && is_word_((unsigned char)p->s[p->pos + n]))
        n++;
    return n;
}

static int perr_(const fparse_ *p, const char *fmt, const char *a)
{
    return kd_err(KD_E_CONFIG, "filter: column %zu: %s%s%s", p->pos + 1, fmt, a ? a : "", "");
}

static int keyword_(fparse_ *p, const char *kw)
{
    skip_ws_(p);
    size_t n = word_len_(p), kl = strlen(kw);
    if (n == kl && !strncmp(p->s + p->pos, kw, kl)) {
        p->pos += n;
        return 1;
    }
    return 0;
}

static int parse_or_(fparse_ *p, fnode_ **out);

static int newnode_(int kind, fnode_ *a, fnode_ *b, fnode_ **out)
{
    fnode_ *n = calloc(1, sizeof *n);
    if (!n) {
        fnode_free_(a);
        fnode_free_(b);
        return kd_err(KD_E_NOMEM, "out of memory");
    }
    n->kind = kind;
    n->a = a;
    n->b = b;
    *out = n;
    return KD_OK;
}

static int parse_cmp_(fparse_ *p, fnode_ **out)
{
    char tok[48];
    skip_ws_(p);
    size_t n = word_len_(p);
    if (!n) {
        if (!p->s[p->pos])
            return perr_(p, "expected a field, got the end of the expression", NULL);
        snprintf(tok, sizeof tok, "'%c'", p->s[p->pos]);
        return perr_(p, "expected a field or '(' or 'not', got ", tok);
    }
    int field = -1;
    for (int i = 0; i < F_COUNT; i++)
        if (strlen(field_names_[i]) == n && !strncmp(p->s + p->pos, field_names_[i], n))
            field = i;
    if (field < 0) {
        snprintf(tok, sizeof tok, "%.*s", (int)(n > 32 ? 32 : n), p->s + p->pos);
        return kd_err(KD_E_CONFIG, "filter: column %zu: unknown field '%s' (fields: " FIELD_LIST ")", p->pos + 1,
                      tok);
    }
    p->pos += n;
    skip_ws_(p);
    const char *o = p->s + p->pos;
    int op;
    if (!strncmp(o, "==", 2))
        op = OP_EQ, p->pos += 2;
    else if (!strncmp(o, "!=", 2))
        op = OP_NE, p->pos += 2;
    else if (!strncmp(o, "<=", 2))
        op = OP_LE, p->pos += 2;
    else if (!strncmp(o, ">=", 2))
        op = OP_GE, p->pos += 2;
    else if (*o == '<')
        op = OP_LT, p->pos += 1;
    else if (*o == '>')
        op = OP_GT, p->pos += 1;
    else if (*o == '=')
        op = OP_EQ, p->pos += 1;
    else
        return perr_(p, "expected an operator (== != < <= > >=) after ", field_names_[field]);
    skip_ws_(p);
    fnode_ *nd = NULL;
    KD_TRY(newnode_(FN_CMP, NULL, NULL, &nd));
    nd->field = field;
    nd->op = op;
    size_t vstart = p->pos;
    if (p->s[p->pos] == '"') {
        size_t cap = strlen(p->s + p->pos) + 1, w = 0;
        nd->str = malloc(cap);
        if (!nd->str) {
            fnode_free_(nd);
            return kd_err(KD_E_NOMEM, "out of memory");
        }
        p->pos++;
        for (;;) {
            char c = p->s[p->pos];
            if (!c) {
                fnode_free_(nd);
                p->pos = vstart;
                return perr_(p, "unterminated string", NULL);
            }
            p->pos++;
            if (c == '"')
                break;
            if (c == '\\') {
                c = p->s[p->pos];
                if (c != '"' && c != '\\') {
                    fnode_free_(nd);
                    return perr_(p, "unknown escape in a string (only \\\" and \\\\)", NULL);
                }
                p->pos++;
            }
            nd->str[w++] = c;
        }
        nd->str[w] = 0;
    } else {
        size_t vn = word_len_(p);
        if (!vn) {
            fnode_free_(nd);
            return perr_(p, "expected a value after the operator for ", field_names_[field]);
        }
        nd->str = strndup(p->s + p->pos, vn);
        if (!nd->str) {
            fnode_free_(nd);
            return kd_err(KD_E_NOMEM, "out of memory");
        }
        p->pos += vn;
    }
    if (field <= F_NUMERIC_END) {
        char *end;
        errno = 0;
        nd->num = strtod(nd->str, &end);
        if (*end || end == nd->str || errno || nd->num != nd->num) {
            size_t at = vstart;
            fnode_free_(nd);
            fparse_ q = *p;
            q.pos = at;
            return kd_err(KD_E_CONFIG, "filter: column %zu: field '%s' is a number; '%.32s' is not", q.pos + 1,
                          field_names_[field], p->s + at);
        }
    } else if (op != OP_EQ && op != OP_NE) {
        fnode_free_(nd);
        return kd_err(KD_E_CONFIG, "filter: column %zu: field '%s' is a string: only == and != apply", vstart + 1,
                      field_names_[field]);
    } else if (field == F_VERDICT && strcmp(nd->str, "accepted") && strcmp(nd->str, "rejected") &&
               strcmp(nd->str, "none")) {
        fnode_free_(nd);
        return kd_err(KD_E_CONFIG, "filter: column %zu: verdict is accepted, rejected or none", vstart + 1);
    } else if (field == F_FINISH && strcmp(nd->str, "unknown") && strcmp(nd->str, "stop") &&
               strcmp(nd->str, "length") && strcmp(nd->str, "abort")) {
        fnode_free_(nd);
        return kd_err(KD_E_CONFIG, "filter: column %zu: finish_reason is unknown, stop, length or abort",
                      vstart + 1);
    }
    p->uses |= 1u << field;
    *out = nd;
    return KD_OK;
}

static int parse_unary_(fparse_ *p, fnode_ **out)
{
    if (++p->depth > 100)
        return perr_(p, "expression nested too deeply (100 levels)", NULL);
    int st;
    skip_ws_(p);
    if (keyword_(p, "not")) {
        fnode_ *a;
        st = parse_unary_(p, &a);
        if (st == KD_OK)
            st = newnode_(FN_NOT, a, NULL, out);
    } else if (p->s[p->pos] == '(') {
        p->pos++;
        st = parse_or_(p, out);
        if (st == KD_OK) {
            skip_ws_(p);
            if (p->s[p->pos] != ')') {
                fnode_free_(*out);
                st = perr_(p, "expected ')'", NULL);
            } else {
                p->pos++;
            }
        }
    } else {
        st = parse_cmp_(p, out);
    }
    p->depth--;
    return st;
}

/* level 0: or := and ("or" and)*; level 1: and := unary ("and" unary)*. */
static int parse_binary_(fparse_ *p, int level, fnode_ **out)
{
    fnode_ *a, *b;
    KD_TRY(level ? parse_unary_(p, &a) : parse_binary_(p, 1, &a));
    while (keyword_(p, level ? "and" : "or")) {
        int st = level ? parse_unary_(p, &b) : parse_binary_(p, 1, &b);
        if (st == KD_OK)
            st = newnode_(level ? FN_AND : FN_OR, a, b, &a); /* frees a and b when it fails */
        else
            fnode_free_(a);
        if (st != KD_OK)
            return st;
    }
    *out = a;
    return KD_OK;
}

static int parse_or_(fparse_ *p, fnode_ **out) { return parse_binary_(p, 0, out); }

int kd_filter_parse(const char *expr, kd_filter **out)
{
    *out = NULL;
    kd_filter *f = calloc(1, sizeof *f);
    if (!f)
        return kd_err(KD_E_NOMEM, "out of memory");
    fparse_ p = {.s = expr ? expr : ""};
    skip_ws_(&p);
    if (!p.s[p.pos]) {
        *out = f; /* empty: keep everything */
        return KD_OK;
    }
    int st = parse_or_(&p, &f->root);
    if (st == KD_OK) {
        skip_ws_(&p);
        if (p.s[p.pos]) {
            char tok[40];
            snprintf(tok, sizeof tok, "'%.24s'", p.s + p.pos);
            st = perr_(&p, "unexpected text after the expression (expected 'and', 'or' or the end): ", tok);
        }
    }
    if (st != KD_OK) {
        kd_filter_free(f);
        return st;
    }
    f->uses = p.uses;
    *out = f;
    return KD_OK;
}

void kd_filter_free(kd_filter *f)
{
    if (!f)
        return;
    fnode_free_(f->root);
    free(f);
}

int kd_filter_uses(const kd_filter *f, const char *field)
{
    for (int i = 0; i < F_COUNT; i++)
        if (!strcmp(field_names_[i], field))
            return (f->uses >> i) & 1;
    return 0;
}

static int eval_(const fnode_ *n, const kd_filter_row *r)
{
    switch (n->kind) {
    case FN_AND: return eval_(n->a, r) && eval_(n->b, r);
    case FN_OR: return eval_(n->a, r) || eval_(n->b, r);
    case FN_NOT: return !eval_(n->a, r);
    default: break;
    }
    if (n->field <= F_NUMERIC_END) {
        const double v[] = {r->chars, r->prompt_chars, r->tokens, r->pass_rate, r->sample, r->score};
        double x = v[n->field];
        switch (n->op) {
        case OP_EQ: return x == n->num;
        case OP_NE: return x != n->num;
        case OP_LT: return x < n->num;
        case OP_LE: return x <= n->num;
        case OP_GT: return x > n->num;
        default: return x >= n->num;
        }
    }
    const char *s = n->field == F_SOURCE ? r->source
                    : n->field == F_VERDICT ? r->verdict
                    : n->field == F_FINISH ? r->finish_reason
                                           : r->lang;
    int eq = !strcmp(s ? s : "", n->str);
    return n->op == OP_EQ ? eq : !eq;
}

int kd_filter_eval(const kd_filter *f, const kd_filter_row *row) { return f->root ? eval_(f->root, row) : 1; }

/* ---- script detection ---------------------------------------------------- */

const char *kd_detect_script(const char *text, size_t len)
{
    /* counts of letters per script, by code point block */
    uint64_t latin = 0, cjk = 0, cyr = 0, arabic = 0, other = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) { /* not UTF-8: skip the byte */
            i++;
            continue;
        }
        i += (size_t)k;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7))
            latin++;
        else if ((c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x3040 && c <= 0x30FF) ||
                 (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0x20000 && c <= 0x2FA1F))
            cjk++;
        else if (c >= 0x400 && c <= 0x4FF)
            cyr++;
        else if (c >= 0x600 && c <= 0x6FF)
            arabic++;
        else if (c >= 0x370 && c < 0x2000 && !(c >= 0x2B0 && c <= 0x36F))
            other++; /* Greek, Hebrew, Indic, ... (letters of other alphabets, roughly) */
    }
    uint64_t total = latin + cjk + cyr + arabic + other;
    if (!total)
        return "none";
    if (latin * 2 > total)
        return "latin";
    if (cjk * 2 > total)
        return "cjk";
    if (cyr * 2 > total)
        return "cyrillic";
    if (arabic * 2 > total)
        return "arabic";
    if (other * 2 > total)
        return "other";
    return "mixed";
}

/* ---- filter -------------------------------------------------------------- */

typedef struct pass_ {
    uint64_t pid;
    uint32_t accepted, samples;
} pass_;

typedef struct filter_ctx_ {
    kd_filter *f;
    pass_ *pr;
    size_t npr;
    int reason;
    char lang[32];
} filter_ctx_;

static double utf8_chars_(kd_text t)
{
    size_t n = 0;
    for (size_t i = 0; i < t.len; i++)
        n += ((unsigned char)t.ptr[i] & 0xC0) != 0x80;
    return (double)n;
}

/* extra "lang" or "language" of a record, into buf; 0 when absent. */
static int extra_lang_(kd_text extra, char *buf, size_t cap)
{
    if (!extra.len || !memmem(extra.ptr, extra.len, "lang", 4))
        return 0;
    json_t *o = json_loadb(extra.ptr, extra.len, 0, NULL);
    const char *v = json_string_value(json_object_get(o, "lang"));
    if (!v)
        v = json_string_value(json_object_get(o, "language"));
    if (v)
        snprintf(buf, cap, "%s", v);
    json_decref(o);
    return v != NULL;
}

/* Per-prompt accepted/sample counts (only when the filter reads pass_rate). */
static int pass_rates_(kd_store *in, pass_ **out, size_t *n)
{
    cur_iter_ it;
    KD_TRY(cur_iter_open_(in, &it));
    size_t cap = 0, m = 0;
    pass_ *a = NULL;
    cur_unit_ u;
    int st;
    while ((st = iter_next_(&it, &u)) > 0) {
        if (!u.has_gen)
            continue;
        if (!m || a[m - 1].pid != u.g.id) {
            if (m == cap) {
                cap = cap ? 2 * cap : 1024;
                pass_ *na = realloc(a, cap * sizeof *a);
                if (!na) {
                    st = kd_err(KD_E_NOMEM, "out of memory");
                    break;
                }
                a = na;
            }
            a[m++] = (pass_){u.g.id, 0, 0};
        }
        a[m - 1].samples++;
        a[m - 1].accepted += u.has_verdict && u.v.accepted;
    }
    cur_iter_close_(&it);
    if (st < 0) {
        free(a);
        return st;
    }
    *out = a;
    *n = m;
    return KD_OK;
}

static int filter_decide_(void *vctx, cur_job_ *j, const cur_unit_ *u, int *reason)
{
    filter_ctx_ *c = vctx;
    kd_filter_row row = {0};
    row.prompt_chars = u->has_prompt ? utf8_chars_(u->p.text) : 0;
    row.chars = u->has_gen ? utf8_chars_(u->g.text) : row.prompt_chars;
    row.tokens = u->has_gen ? u->g.completion_tokens : 0;
    row.sample = u->has_gen ? u->g.sample : 0;
    row.score = u->has_verdict && u->v.has_score ? u->v.score : 0;
    row.verdict = u->has_verdict ? (u->v.accepted ? "accepted" : "rejected") : "none";
    row.finish_reason = u->has_gen ? kd_finish_name(u->g.finish) : "unknown";
    row.source = cur_source_(j, u->has_gen ? u->g.lineage : u->p.lineage);
    if (kd_filter_uses(c->f, "pass_rate") && u->has_gen) {
        size_t lo = 0, hi = c->npr;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (c->pr[mid].pid < u->g.id)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < c->npr && c->pr[lo].pid == u->g.id)
            row.pass_rate = (double)c->pr[lo].accepted / c->pr[lo].samples;
    }
    if (kd_filter_uses(c->f, "lang")) {
        if (!(u->has_gen && extra_lang_(u->g.extra, c->lang, sizeof c->lang)) &&
            !(u->has_prompt && extra_lang_(u->p.extra, c->lang, sizeof c->lang))) {
            kd_text t = u->has_gen ? u->g.text : u->p.text;
            snprintf(c->lang, sizeof c->lang, "%s", kd_detect_script(t.ptr, t.len));
        }
        row.lang = c->lang;
    }
    *reason = kd_filter_eval(c->f, &row) ? -1 : c->reason;
    return KD_OK;
}

int kd_curate_filter(const char *in_dir, const char *out_dir, const kd_filter_opts *o, kd_curate_report *rep)
{
    filter_ctx_ c = {0};
    KD_TRY(kd_filter_parse(o->where, &c.f));
    cur_job_ j;
    int st = cur_begin_(&j, "filter", &kd_filter_schema, o, &o->run, in_dir, out_dir, 0, rep);
    if (st != 0) {
        kd_filter_free(c.f);
        return st < 0 ? st : KD_OK;
    }
    c.reason = cur_reason_(rep, "where");
    if (kd_filter_uses(c.f, "pass_rate"))
        st = pass_rates_(j.in, &c.pr, &c.npr);
    if (st == KD_OK)
        st = copy_pass_(&j, filter_decide_, &c);
    kd_filter_free(c.f);
    free(c.pr);
    if (st != KD_OK) {
        cur_abort_(&j);
        return st;
    }
    return cur_finish_(&j);
}

/* ---- split, sample, select ----------------------------------------------- */

/* Uniform in [0, 1) from a key and a seed. */
static double unit_rand_(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t h = cur_mix64_(cur_mix64_(seed ^ 0x9e3779b97f4a7c15ull) ^ a);
    h = cur_mix64_(h ^ (b * 0xff51afd7ed558ccdull));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

typedef struct split_ctx_ {
    const kd_split_opts *o;
    int reason;
} split_ctx_;

static int split_decide_(void *vctx, cur_job_ *j, const cur_unit_ *u, int *reason)
{
    (void)j;
    split_ctx_ *c = vctx;
    uint64_t pid = u->has_gen ? u->g.id : u->p.id; /* by prompt: all samples of a prompt go together */
    int test = unit_rand_((uint64_t)c->o->seed, pid, 0) < c->o->fraction;
    *reason = test == (c->o->part == 1) ? -1 : c->reason;
    return KD_OK;
}

int kd_curate_split(const char *in_dir, const char *out_dir, const kd_split_opts *o, kd_curate_report *rep)
{
    cur_job_ j;
    int st = cur_begin_(&j, "split", &kd_split_schema, o, &o->run, in_dir, out_dir, 0, rep);
    if (st != 0)
        return st < 0 ? st : KD_OK;
    split_ctx_ c = {o, cur_reason_(rep, "other_part")};
    st = copy_pass_(&j, split_decide_, &c);
    if (st != KD_OK) {
        cur_abort_(&j);
        return st;
    }
    return cur_finish_(&j);
}

/* One unit's sort key for sample and select. */
typedef struct ukey_ {
    uint64_t pid;
    double key;
    uint64_t ordinal;
    int eligible;
} ukey_;

static int ukey_by_key_(const void *a, const void *b)
{
    const ukey_ *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->ordinal < y->ordinal ? -1 : x->ordinal > y->ordinal;
}

static int ukey_by_pid_key_(const void *a, const void *b)
{
    const ukey_ *x = a, *y = b;
    if (x->pid != y->pid)
        return x->pid < y->pid ? -1 : 1;
    if (x->eligible != y->eligible)
        return y->eligible - x->eligible;
    return ukey_by_key_(a, b);
}

/* Collect one ukey_ per unit; key computed by `fn`. */
static int collect_keys_(kd_store *in, void (*fn)(const cur_unit_ *, const void *, ukey_ *), const void *arg,
                         ukey_ **out, size_t *n)
{
    cur_iter_ it;
    KD_TRY(cur_iter_open_(in, &it));
    ukey_ *a = malloc((it.total ? it.total : 1) * sizeof *a);
    if (!a) {
        cur_iter_close_(&it);
        return kd_err(KD_E_NOMEM, "out of memory");
    }
    size_t m = 0;
    cur_unit_ u;
    int st;
    while ((st = iter_next_(&it, &u)) > 0 && m < it.total) {
        a[m].pid = u.has_gen ? u.g.id : u.p.id;
        a[m].ordinal = u.ordinal;
        a[m].eligible = 1;
        fn(&u, arg, &a[m]);
        m++;
    }
    cur_iter_close_(&it);
    if (st < 0) {
        free(a);
        return st;
    }
    *out = a;
    *n = m;
    return KD_OK;
}

static void sample_key_(const cur_unit_ *u, const void *arg, ukey_ *k)
{
    const kd_sample_opts *o = arg;
    k->key = unit_rand_((uint64_t)o->seed, u->has_gen ? u->g.id : u->p.id, u->has_gen ? u->g.sample + 1ull : 0);
}

int kd_curate_sample(const char *in_dir, const char *out_dir, const kd_sample_opts *o, kd_curate_report *rep)
{
    cur_job_ j;
    int st = cur_begin_(&j, "sample", &kd_sample_schema, o, &o->run, in_dir, out_dir, 0, rep);
    if (st != 0)
        return st < 0 ? st : KD_OK;
    int reason = cur_reason_(rep, "not_sampled");
    ukey_ *k = NULL;
    size_t n = 0;
    uint8_t *d = NULL;
    st = collect_keys_(j.in, sample_key_, o, &k, &n);
    if (st == KD_OK && !(d = malloc(n ? n : 1)))
        st = kd_err(KD_E_NOMEM, "out of memory");
    if (st == KD_OK) {
        /* the units with the n smallest hashes: exact, deterministic, and a
         * sample of n is a subset of a sample of n+1 with the same seed */
        uint64_t want = o->n > 0 ? (uint64_t)o->n : (uint64_t)(o->fraction * (double)n + 0.5);
        qsort(k, n, sizeof *k, ukey_by_key_);
        for (size_t i = 0; i < n; i++)
            d[k[i].ordinal] = i < want ? 0 : (uint8_t)(reason + 1);
    }
    free(k);
    if (st != KD_OK) {
        free(d);
        cur_abort_(&j);
        return st;
    }
    st = run_with_array_(&j, d);
    free(d);
    return st;
}

static void select_key_(const cur_unit_ *u, const void *arg, ukey_ *k)
{
    const kd_select_opts *o = arg;
    double len = u->has_gen ? (double)u->g.text.len : (double)u->p.text.len;
    if (u->has_gen && u->g.completion_tokens)
        len = u->g.completion_tokens; /* tokens when recorded, else bytes */
    switch (o->by) {
    case 0:
        k->key = len;
        k->eligible = u->has_verdict && u->v.accepted;
        break;
    case 1: k->key = len; break;
    case 2: k->key = -len; break;
    case 3: k->key = unit_rand_((uint64_t)o->seed, k->pid, u->has_gen ? u->g.sample + 1ull : 0); break;
    default: k->key = u->has_verdict && u->v.has_score ? -(double)u->v.score : 1e300; break;
    }
}

int kd_curate_select(const char *in_dir, const char *out_dir, const kd_select_opts *o, kd_curate_report *rep)
{
    cur_job_ j;
    int st = cur_begin_(&j, "select", &kd_select_schema, o, &o->run, in_dir, out_dir, 0, rep);
    if (st != 0)
        return st < 0 ? st : KD_OK;
    int r_not = cur_reason_(rep, "not_best"), r_inel = cur_reason_(rep, "not_correct");
    ukey_ *k = NULL;
    size_t n = 0;
    uint8_t *d = NULL;
    st = collect_keys_(j.in, select_key_, o, &k, &n);
    if (st == KD_OK && !(d = malloc(n ? n : 1)))
        st = kd_err(KD_E_NOMEM, "out of memory");
    if (st == KD_OK) {
        qsort(k, n, sizeof *k, ukey_by_pid_key_);
        for (size_t i = 0, rank = 0; i < n; i++) {
            rank = (i && k[i].pid == k[i - 1].pid) ? rank + 1 : 0;
            if (!k[i].eligible)
                d[k[i].ordinal] = (uint8_t)(r_inel + 1);
            else
                d[k[i].ordinal] = rank < (size_t)o->k ? 0 : (uint8_t)(r_not + 1);
        }
    }
    free(k);
    if (st != KD_OK) {
        free(d);
        cur_abort_(&j);
        return st;
    }
    st = run_with_array_(&j, d);
    free(d);
    return st;
}

/* Exposed to dedupe.c: run a job whose decisions are in d (by ordinal). */
int cur_run_with_array_(cur_job_ *j, uint8_t *d);
int cur_run_with_array_(cur_job_ *j, uint8_t *d) { return run_with_array_(j, d); }
/* Exposed to dedupe.c and tokenize_ds.c: iterate with read-ahead. */
int cur_next_(cur_iter_ *it, cur_unit_ *u);
int cur_next_(cur_iter_ *it, cur_unit_ *u) { return iter_next_(it, u); }
int cur_copy_pass_(cur_job_ *j, int (*decide)(void *, cur_job_ *, const cur_unit_ *, int *), void *ctx);
int cur_copy_pass_(cur_job_ *j, int (*decide)(void *, cur_job_ *, const cur_unit_ *, int *), void *ctx)
{
    return copy_pass_(j, decide, ctx);
}

/* ---- schemas and the op table -------------------------------------------- */

static const kd_cfg_field filter_fields_[] = {
    KD_CFG_STRING(kd_filter_opts, where, "",
                  "predicate, e.g. 'tokens < 16384 and verdict == accepted' (fields: " FIELD_LIST ")"),
    KD_CFG_END};
const kd_cfg_schema kd_filter_schema = {"filter", filter_fields_, sizeof(kd_filter_opts)};

static const kd_cfg_field dedupe_fields_[] = {
    KD_CFG_ENUM(kd_dedupe_opts, on, "prompt", "prompt|generation|both",
                "text compared: prompt (drops every sample of a duplicate prompt), generation, or both"),
    KD_CFG_BOOL(kd_dedupe_opts, exact, "true", "drop exact duplicates of the normalised text (NFC, casefold, spaces)"),
    KD_CFG_BOOL(kd_dedupe_opts, near, "true", "drop near duplicates found by MinHash + LSH"),
    KD_CFG_INT(kd_dedupe_opts, ngram, "5", 1, 64, "words per shingle"),
    KD_CFG_INT(kd_dedupe_opts, perms, "128", 1, 1024, "MinHash permutations; must equal bands * rows"),
    KD_CFG_INT(kd_dedupe_opts, bands, "16", 1, 1024, "LSH bands"),
    KD_CFG_INT(kd_dedupe_opts, rows, "8", 1, 1024, "rows (hashes) per band"),
    KD_CFG_FLOAT(kd_dedupe_opts, threshold, "0", 0, 1,
                 "0: every LSH candidate is a duplicate; else its estimated Jaccard must reach this"),
    KD_CFG_INT(kd_dedupe_opts, seed, "1", 0, 9.2e18, "seeds the MinHash permutations"),
    KD_CFG_INT(kd_dedupe_opts, threads, "0", 0, 256, "signature threads (0: online CPUs)"),
    KD_CFG_END};
const kd_cfg_schema kd_dedupe_schema = {"dedupe", dedupe_fields_, sizeof(kd_dedupe_opts)};

static const kd_cfg_field decontam_fields_[] = {
    KD_CFG_STRLIST(kd_decontam_opts, benchmarks, "benchmark JSONL files"),
    KD_CFG_STRLIST(kd_decontam_opts, fields, "fields of a benchmark line to index (empty: problem)"),
    KD_CFG_INT(kd_decontam_opts, ngram, "8", 1, 64, "words per n-gram (lowercased, punctuation stripped)"),
    KD_CFG_BOOL(kd_decontam_opts, response, "false", "also check the generation text, not only the prompt"),
    KD_CFG_END};
const kd_cfg_schema kd_decontam_schema = {"decontaminate", decontam_fields_, sizeof(kd_decontam_opts)};

static const kd_cfg_field split_fields_[] = {
    KD_CFG_FLOAT(kd_split_opts, fraction, "0.05", 0, 1, "share of prompts in the test part"),
    KD_CFG_ENUM(kd_split_opts, part, "train", "train|test", "which part to write"),
    KD_CFG_INT(kd_split_opts, seed, "0", 0, 9.2e18, "seeds the prompt-id hash"),
    KD_CFG_END};
const kd_cfg_schema kd_split_schema = {"split", split_fields_, sizeof(kd_split_opts)};

static const kd_cfg_field sample_fields_[] = {
    KD_CFG_INT(kd_sample_opts, n, "0", 0, 9.2e18, "units to keep (0: use fraction)"),
    KD_CFG_FLOAT(kd_sample_opts, fraction, "1", 0, 1, "share of units to keep when n is 0"),
    KD_CFG_INT(kd_sample_opts, seed, "0", 0, 9.2e18, "seeds the unit hash"),
    KD_CFG_END};
const kd_cfg_schema kd_sample_schema = {"sample", sample_fields_, sizeof(kd_sample_opts)};

static const kd_cfg_field select_fields_[] = {
    KD_CFG_INT(kd_select_opts, k, "1", 1, 1e9, "units kept per prompt"),
    KD_CFG_ENUM(kd_select_opts, by, "shortest_correct", "shortest_correct|shortest|longest|random|score",
                "ranking: shortest accepted (tokens, else bytes), shortest, longest, random, highest score"),
    KD_CFG_INT(kd_select_opts, seed, "0", 0, 9.2e18, "seeds 'random'"),
    KD_CFG_END};
const kd_cfg_schema kd_select_schema = {"select", select_fields_, sizeof(kd_select_opts)};

static const kd_cfg_field tokenize_fields_[] = {
    {"template", KD_CFG_T_STRING, offsetof(kd_tokenize_opts, template_name), "deepseek_r1", 0, 0, NULL, NULL,
     "chat template: chatml, qwen3, llama3, llama3_1, deepseek_v3, deepseek_r1", NULL},
    KD_CFG_STRING(kd_tokenize_opts, tokenizer, "deepseek_v3",
                  "tokenizer folder or tokenizer.json, or a name in the cache (qwen3, llama3_1, deepseek_v3)"),
    KD_CFG_STRING(kd_tokenize_opts, system, NULL, "system prompt for prompts that are not chats (~: none)"),
    KD_CFG_INT(kd_tokenize_opts, max_tokens, "0", 0, 1e9, "longest example in tokens (0: no limit)"),
    KD_CFG_BOOL(kd_tokenize_opts, truncate, "false", "truncate longer examples instead of dropping them (too_long)"),
    KD_CFG_INT(kd_tokenize_opts, batch, "256", 1, 1e6, "units per committed batch"),
    KD_CFG_INT(kd_tokenize_opts, threads, "0", 0, 256, "encoding threads (0: online CPUs)"),
    KD_CFG_END};
const kd_cfg_schema kd_tokenize_schema = {"tokenize", tokenize_fields_, sizeof(kd_tokenize_opts)};

static const kd_cfg_field mix_fields_[] = {
    KD_CFG_STRLIST(kd_mix_opts, sources, "a source dataset and its weight, DIR:WEIGHT"),
    KD_CFG_FLOAT(kd_mix_opts, input_weight, "1", 0, 1e300,
                 "weight of the input (IN, or a script step's input); 0 leaves it out"),
    KD_CFG_INT(kd_mix_opts, total, "0", 0, 9.2e18, "units to draw (required)"),
    KD_CFG_BOOL(kd_mix_opts, replacement, "false", "draw with replacement: units may repeat"),
    KD_CFG_INT(kd_mix_opts, seed, "0", 0, 9.2e18, "seeds the draws"),
    KD_CFG_END};
const kd_cfg_schema kd_mix_schema = {"mix", mix_fields_, sizeof(kd_mix_opts)};

#define OP_(name, T, fn, summary)                                                                          \
    {name, &kd_##T##_schema, offsetof(kd_##T##_opts, run),                                                 \
     (int (*)(const char *, const char *, const void *, kd_curate_report *))fn, summary}
const kd_curate_op kd_curate_ops[] = {
    OP_("filter", filter, kd_curate_filter, "keep the units a predicate holds for"),
    OP_("dedupe", dedupe, kd_curate_dedupe, "drop exact and near (MinHash) duplicates"),
    OP_("decontaminate", decontam, kd_curate_decontaminate, "drop units sharing word n-grams with benchmarks"),
    OP_("split", split, kd_curate_split, "keep one part of a deterministic split by prompt"),
    OP_("sample", sample, kd_curate_sample, "keep a deterministic random sample"),
    OP_("select", select, kd_curate_select, "keep the best k units per prompt"),
    OP_("tokenize", tokenize, kd_curate_tokenize, "render a chat template into examples with loss masks"),
    OP_("mix", mix, kd_curate_mix, "draw a weighted mixture of datasets, with or without replacement"),
    {NULL, NULL, 0, NULL, NULL}};

const kd_cfg_step_kind kd_curate_step_kinds[] = {
    {"filter", &kd_filter_schema},     {"dedupe", &kd_dedupe_schema}, {"decontaminate", &kd_decontam_schema},
    {"split", &kd_split_schema},       {"sample", &kd_sample_schema}, {"select", &kd_select_schema},
    {"tokenize", &kd_tokenize_schema}, {"mix", &kd_mix_schema},    {NULL, NULL}};

const kd_curate_op *kd_curate_op_find(const char *name)
{
    for (const kd_curate_op *op = kd_curate_ops; op->name; op++)
        if (!strcmp(op->name, name))
            return op;
    return NULL;
}

/* ---- the script ---------------------------------------------------------- */

static const kd_cfg_field script_fields_[] = {
    KD_CFG_STRING(kd_curate_script, input, NULL, "the dataset the first step reads"),
    KD_CFG_STRING(kd_curate_script, output, NULL,
                  "folder: steps/NN-op/ holds each step's output, final/ the last step's"),
    KD_CFG_STEPS(kd_curate_script, steps, kd_curate_step_kinds,
                 "the steps, in order: filter, dedupe, decontaminate, split, sample, select, tokenize, mix"),
    KD_CFG_END};
const kd_cfg_schema kd_curate_script_schema = {"curate", script_fields_, sizeof(kd_curate_script)};

int kd_curate_script_run(const kd_curate_script *s, const kd_curate_run *run, kd_curate_report *reports)
{
    if (!s->input || !*s->input)
        return kd_err(KD_E_CONFIG, "curate: 'input' is not set");
    if (!s->output || !*s->output)
        return kd_err(KD_E_CONFIG, "curate: 'output' is not set");
    if (!s->steps.n)
        return kd_err(KD_E_CONFIG, "curate: 'steps' is empty");
    char stepsdir[4200], prev[4200], cur[4200], line[512];
    snprintf(stepsdir, sizeof stepsdir, "%s/steps", s->output);
    if ((mkdir(s->output, 0777) != 0 && errno != EEXIST) || (mkdir(stepsdir, 0777) != 0 && errno != EEXIST))
        return kd_err(KD_E_IO, "curate: cannot create '%s': %s", stepsdir, strerror(errno));
    snprintf(prev, sizeof prev, "%s", s->input);
    for (size_t i = 0; i < s->steps.n; i++) {
        const kd_cfg_step *st = &s->steps.items[i];
        const kd_cfg_step_kind *kind = &kd_curate_step_kinds[st->kind];
        const kd_curate_op *op = kd_curate_op_find(kind->name);
        assert(op);
        if (i + 1 == s->steps.n)
            snprintf(cur, sizeof cur, "%s/final", s->output);
        else
            snprintf(cur, sizeof cur, "%s/%02zu-%s", stepsdir, i + 1, op->name);
        if (run)
            memcpy((char *)st->cfg + op->run_offset, run, sizeof *run);
        kd_curate_report rep;
        int rc = op->fn(prev, cur, st->cfg, &rep);
        if (rc != KD_OK)
            return kd_err_wrap(rc, "curate: step %zu (%s)", i + 1, op->name);
        kd_info("step %zu/%zu %s", i + 1, s->steps.n, kd_curate_report_line(&rep, line, sizeof line));
        if (reports)
            reports[i] = rep;
        snprintf(prev, sizeof prev, "%s", cur);
    }
    return KD_OK;
}
