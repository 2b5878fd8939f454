/* mix.c - the curation op `mix`: a weighted draw of units from several
 * datasets, with or without replacement (contract in curate.h, kd_curate_mix).
 * It uses curate.c's output job for the protocol (OUT.partial, options hash,
 * "already done") but reads and renumbers the sources itself. */
#include "curate_impl.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/status.h"

/* Exposed by curate.c: iterate with read-ahead. */
int cur_next_(cur_iter_ *it, cur_unit_ *u);

/* One source of the mix. */
typedef struct mix_src_ {
    char *dir;      /* as given */
    char *real;     /* realpath (NULL when it does not resolve) */
    double weight;
    char name[24];  /* the folder's last component, for the report */
    kd_store *st;   /* open; not owned when `borrowed` (the job's input) */
    int borrowed;
    int gen_mode;
    uint64_t n;     /* units */
    uint64_t quota; /* units to draw */
    uint32_t *mult; /* (n) times each unit is drawn */
    uint32_t *lmap; /* source lineage id -> output id */
    uint32_t nl;
} mix_src_;

/* Uniform in [0, 1) from a seed and two keys. */
static double mix_rand_(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t h = cur_mix64_(cur_mix64_(seed ^ 0x6a09e667f3bcc909ull) ^ a);
    h = cur_mix64_(h ^ (b * 0xff51afd7ed558ccdull));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* Share `total` among the sources by weight, none above its cap[i] (water
 * filling: a source whose share reaches its cap is filled and the rest shared
 * again), rounding by largest remainder (ties: the earlier source). */
static void apportion_(uint64_t total, const double *w, const uint64_t *cap, int n, uint64_t *q)
{
    int active[KD_CURATE_MAX_REASONS];
    double frac[KD_CURATE_MAX_REASONS];
    uint64_t rem = total;
    for (int i = 0; i < n; i++) {
        q[i] = 0;
        active[i] = w[i] > 0 && cap[i] > 0;
    }
    for (;;) {
        double W = 0;
        for (int i = 0; i < n; i++)
            if (active[i])
                W += w[i];
        if (W <= 0 || rem == 0)
            return;
        int filled = 0;
        uint64_t used = 0;
        for (int i = 0; i < n; i++)
            if (active[i] && (double)rem * (w[i] / W) >= (double)cap[i]) {
                q[i] = cap[i];
                used += cap[i];
                active[i] = 0;
                filled = 1;
            }
        if (filled) {
            rem = used >= rem ? 0 : rem - used;
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (!active[i])
                continue;
            double share = (double)rem * (w[i] / W), f = floor(share);
            q[i] = (uint64_t)f;
            frac[i] = share - f;
            used += q[i];
        }
        /* floating point can put the floors one off either way: settle exactly */
        while (used > rem) {
            int lo = -1;
            for (int i = 0; i < n; i++)
                if (active[i] && q[i] && (lo < 0 || frac[i] < frac[lo]))
                    lo = i;
            q[lo]--;
            frac[lo] = 2; /* not again */
            used--;
        }
        while (used < rem) {
            int hi = -1;
            for (int i = 0; i < n; i++)
                if (active[i] && q[i] < cap[i] && frac[i] >= 0 && (hi < 0 || frac[i] > frac[hi]))
                    hi = i;
            if (hi < 0)
                break;
            q[hi]++;
            frac[hi] = -1; /* one extra unit each */
            used++;
        }
        return;
    }
}

static void src_release_(mix_src_ *s)
{
    if (!s->borrowed)
        kd_store_close(s->st);
    free(s->dir);
    free(s->real);
    free(s->mult);
    free(s->lmap);
    memset(s, 0, sizeof *s);
}

static int src_add_(mix_src_ *v, int *n, const char *dir, size_t dlen, double w)
{
    if (*n >= KD_CURATE_MAX_REASONS)
        return kd_err(KD_E_CONFIG, "mix: more than %d sources", KD_CURATE_MAX_REASONS);
    mix_src_ *s = &v[(*n)++];
    memset(s, 0, sizeof *s);
    s->dir = strndup(dir, dlen);
    if (!s->dir)
        return kd_err(KD_E_NOMEM, "out of memory");
    s->weight = w;
    size_t e = strlen(s->dir);
    while (e > 1 && s->dir[e - 1] == '/')
        e--;
    size_t b = e;
    while (b > 0 && s->dir[b - 1] != '/')
        b--;
    snprintf(s->name, sizeof s->name, "%.*s", (int)(e - b), s->dir + b);
    s->real = realpath(s->dir, NULL);
    return KD_OK;
}

/* Parse the sources: the input (when given with a weight) then "DIR:WEIGHT"s. */
static int parse_sources_(const char *in_dir, const char *out_dir, const kd_mix_opts *o, mix_src_ *v, int *n)
{
    *n = 0;
    if (!(o->input_weight >= 0) || !isfinite(o->input_weight))
        return kd_err(KD_E_CONFIG, "mix: input_weight %g is not a weight >= 0", o->input_weight);
    if (in_dir && *in_dir && o->input_weight > 0)
        KD_TRY(src_add_(v, n, in_dir, strlen(in_dir), o->input_weight));
    for (size_t i = 0; i < o->sources.n; i++) {
        const char *item = o->sources.items[i], *colon = strrchr(item, ':');
        if (!colon || colon == item || !colon[1])
            return kd_err(KD_E_CONFIG, "mix: source '%s' wants DIR:WEIGHT", item);
        char *end;
        errno = 0;
        double w = strtod(colon + 1, &end);
        if (*end || errno || !isfinite(w))
            return kd_err(KD_E_CONFIG, "mix: source '%s': weight '%s' is not a number", item, colon + 1);
        if (w < 0)
            return kd_err(KD_E_CONFIG, "mix: source '%s': weight %g is negative", item, w);
        KD_TRY(src_add_(v, n, item, (size_t)(colon - item), w));
    }
    if (*n == 0)
        return kd_err(KD_E_CONFIG, "mix: no sources (give sources: DIR:WEIGHT, or an input with input_weight > 0)");
    double sum = 0;
    for (int i = 0; i < *n; i++)
        sum += v[i].weight;
    if (!(sum > 0))
        return kd_err(KD_E_CONFIG, "mix: the weights sum to 0; give at least one source a weight > 0");
    if (o->total < 1)
        return kd_err(KD_E_CONFIG, "mix: total is %lld; set the number of units to draw (>= 1)",
                      (long long)o->total);
    char *oreal = realpath(out_dir, NULL);
    int st = KD_OK;
    for (int i = 0; i < *n && st == KD_OK; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/data.mdb", v[i].dir);
        if (!v[i].real || access(p, F_OK) != 0)
            st = kd_err(KD_E_NOTFOUND, "mix: source '%s' is not a dataset (no %s)", v[i].dir, p);
        else if (!strcmp(v[i].dir, out_dir) || (oreal && !strcmp(oreal, v[i].real)))
            st = kd_err(KD_E_CONFIG, "mix: source '%s' is the output; write another dataset", v[i].dir);
        for (int k = 0; k < i && st == KD_OK; k++)
            if (!strcmp(v[k].real, v[i].real))
                st = kd_err(KD_E_CONFIG, "mix: source '%s' is listed twice (also as '%s')", v[i].dir, v[k].dir);
    }
    free(oreal);
    return st;
}

/* Copy a source's lineage table into the output (equal entries shared). */
static int src_lineage_(cur_job_ *j, kd_store_read *r, mix_src_ *s)
{
    json_t *all = NULL;
    KD_TRY(kd_store_meta_list(r, "lineage/", &all));
    uint32_t maxid = 0;
    const char *k;
    json_t *v;
    json_object_foreach(all, k, v)
    {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id > 0 && id < (json_int_t)UINT32_MAX && (uint32_t)id > maxid)
            maxid = (uint32_t)id;
    }
    s->nl = maxid + 1;
    s->lmap = calloc(s->nl, sizeof *s->lmap);
    int st = s->lmap ? cur_batch_(j) : kd_err(KD_E_NOMEM, "out of memory");
    json_object_foreach(all, k, v)
    {
        if (st != KD_OK)
            break;
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id > 0 && (uint32_t)id < s->nl)
            st = kd_store_lineage_add_json(j->b, v, 1, &s->lmap[id]);
    }
    json_decref(all);
    return st;
}

typedef struct ukey_ {
    double key;
    uint64_t ordinal;
} ukey_;

static int ukey_cmp_(const void *a, const void *b)
{
    const ukey_ *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->ordinal < y->ordinal ? -1 : x->ordinal > y->ordinal;
}

/* Fill s->mult: which units are drawn, how often. `idx` seeds per source. */
static int src_draw_(mix_src_ *s, int idx, const kd_mix_opts *o)
{
    s->mult = calloc(s->n ? s->n : 1, sizeof *s->mult);
    if (!s->mult)
        return kd_err(KD_E_NOMEM, "out of memory");
    uint64_t seed = cur_mix64_((uint64_t)o->seed) ^ cur_mix64_((uint64_t)idx + 1);
    if (o->replacement) {
        for (uint64_t k = 0; k < s->quota; k++) {
            uint64_t i = (uint64_t)(mix_rand_(seed, k, 0) * (double)s->n);
            s->mult[i < s->n ? i : s->n - 1]++;
        }
        return KD_OK;
    }
    if (s->quota >= s->n) {
        for (uint64_t i = 0; i < s->n; i++)
            s->mult[i] = 1;
        return KD_OK;
    }
    ukey_ *a = malloc((s->n ? s->n : 1) * sizeof *a);
    if (!a)
        return kd_err(KD_E_NOMEM, "out of memory");
    cur_iter_ it;
    int st = cur_iter_open_(s->st, &it), got = 0;
    cur_unit_ u;
    uint64_t m = 0;
    while (st == KD_OK && (got = cur_next_(&it, &u)) > 0 && m < s->n) {
        a[m].key = mix_rand_(seed, u.has_gen ? u.g.id : u.p.id, u.has_gen ? u.g.sample + 1ull : 0);
        a[m].ordinal = u.ordinal;
        m++;
    }
    if (st == KD_OK)
        cur_iter_close_(&it);
    if (st == KD_OK && got < 0)
        st = got;
    if (st == KD_OK) {
        qsort(a, m, sizeof *a, ukey_cmp_);
        for (uint64_t i = 0; i < s->quota && i < m; i++)
            s->mult[a[i].ordinal] = 1;
    }
    free(a);
    return st;
}

/* Put `rec` (read from source s) as (id, sample) with its lineage remapped
 * and extra "mix_origin" added. */
static int put_mixed_(cur_job_ *j, const mix_src_ *s, const kd_record *rec, uint64_t id, uint32_t sample,
                      uint32_t copy)
{
    json_t *extra = rec->extra.len ? json_loadb(rec->extra.ptr, rec->extra.len, 0, NULL) : NULL;
    if (!json_is_object(extra)) {
        json_decref(extra);
        extra = json_object();
    }
    json_t *origin = json_pack("{s:s, s:I}", "source", s->dir, "prompt_id", (json_int_t)rec->id);
    if (rec->db != KD_DB_PROMPTS)
        json_object_set_new(origin, "sample", json_integer(rec->sample));
    json_object_set_new(origin, "copy", json_integer(copy));
    json_object_set_new(extra, "mix_origin", origin);
    char *text = json_dumps(extra, JSON_COMPACT);
    json_decref(extra);
    if (!text)
        return kd_err(KD_E_NOMEM, "out of memory");
    kd_record r = *rec;
    r.id = id;
    r.sample = sample;
    r.lineage = rec->lineage < s->nl ? s->lmap[rec->lineage] : 0;
    r.extra = kd_text_of(text);
    int st = kd_store_put(j->b, &r, KD_PUT_KEEP, NULL);
    free(text);
    return st;
}

/* Write the drawn units of s, renumbered from *next_pid. */
static int src_write_(cur_job_ *j, const mix_src_ *s, uint64_t *next_pid, kd_progress *pb)
{
    cur_iter_ it;
    KD_TRY(cur_iter_open_(s->st, &it));
    cur_unit_ u;
    int got, st = KD_OK, have_pid = 0;
    uint64_t src_pid = 0, out_pid = 0;
    uint32_t out_sample = 0;
    while (st == KD_OK && (got = cur_next_(&it, &u)) > 0) {
        uint32_t m = u.ordinal < s->n ? s->mult[u.ordinal] : 0;
        if (!m)
            continue;
        st = cur_batch_(j);
        for (uint32_t c = 0; c < m && st == KD_OK; c++) {
            if (!u.has_gen) { /* prompt units: every copy is a prompt of its own */
                st = put_mixed_(j, s, &u.p, (*next_pid)++, 0, c);
                continue;
            }
            if (!have_pid || u.g.id != src_pid) {
                have_pid = 1;
                src_pid = u.g.id;
                out_pid = (*next_pid)++;
                out_sample = 0;
                if (u.has_prompt)
                    st = put_mixed_(j, s, &u.p, out_pid, 0, 0);
            }
            if (st == KD_OK)
                st = put_mixed_(j, s, &u.g, out_pid, out_sample, c);
            if (st == KD_OK && u.has_verdict)
                st = put_mixed_(j, s, &u.v, out_pid, out_sample, c);
            out_sample++;
        }
        if (st == KD_OK)
            st = cur_commit_(j, 16u << 20);
        if (pb)
            kd_progress_add(pb, m);
    }
    if (st == KD_OK && got < 0)
        st = got;
    cur_iter_close_(&it);
    return st;
}

int kd_curate_mix(const char *in_dir, const char *out_dir, const kd_mix_opts *o, kd_curate_report *rep)
{
    mix_src_ src[KD_CURATE_MAX_REASONS];
    int ns = 0;
    memset(rep, 0, sizeof *rep);
    snprintf(rep->op, sizeof rep->op, "mix");
    if (!out_dir || !*out_dir)
        return kd_err(KD_E_USAGE, "mix: wants an output dataset");
    int st = parse_sources_(in_dir, out_dir, o, src, &ns);
    const char *primary = in_dir && *in_dir ? in_dir : ns ? src[0].dir : NULL;
    cur_job_ j;
    if (st == KD_OK) {
        st = cur_begin_(&j, "mix", &kd_mix_schema, o, &o->run, primary, out_dir, 0, rep);
        if (st != 0) {
            for (int i = 0; i < ns; i++)
                src_release_(&src[i]);
            return st < 0 ? st : KD_OK;
        }
    }
    if (st != KD_OK) {
        for (int i = 0; i < ns; i++)
            src_release_(&src[i]);
        return st;
    }
    /* open the sources (the job's input is open already: LMDB wants one handle per process) */
    char *preal = realpath(primary, NULL);
    for (int i = 0; i < ns && st == KD_OK; i++) {
        if (preal && !strcmp(preal, src[i].real)) {
            src[i].st = j.in;
            src[i].borrowed = 1;
        } else {
            st = kd_err_wrap(kd_store_open(src[i].dir, KD_STORE_RDONLY, &src[i].st), "mix: source '%s'",
                             src[i].dir);
        }
        kd_store_read *r = NULL;
        if (st == KD_OK)
            st = kd_store_read_begin(src[i].st, &r);
        uint64_t ng = 0, np = 0;
        if (st == KD_OK)
            st = kd_store_count(r, KD_DB_GENERATIONS, &ng);
        if (st == KD_OK)
            st = kd_store_count(r, KD_DB_PROMPTS, &np);
        if (st == KD_OK)
            st = src_lineage_(&j, r, &src[i]);
        if (r)
            kd_store_read_end(r);
        src[i].gen_mode = ng > 0;
        src[i].n = ng ? ng : np;
        if (st == KD_OK && i && src[i].n && src[0].n && src[i].gen_mode != src[0].gen_mode)
            st = kd_err(KD_E_CONFIG, "mix: source '%s' has %s units but '%s' has %s; mix like with like",
                        src[i].dir, src[i].gen_mode ? "generation" : "prompt", src[0].dir,
                        src[0].gen_mode ? "generation" : "prompt");
    }
    free(preal);
    int gen_mode = 0;
    for (int i = 0; i < ns; i++)
        gen_mode |= src[i].n && src[i].gen_mode;
    snprintf(rep->unit, sizeof rep->unit, "%s", gen_mode ? "generations" : "prompts");
    if (st == KD_OK) {
        double w[KD_CURATE_MAX_REASONS];
        uint64_t cap[KD_CURATE_MAX_REASONS], q[KD_CURATE_MAX_REASONS], have = 0;
        for (int i = 0; i < ns; i++) {
            w[i] = src[i].weight;
            cap[i] = !src[i].n ? 0 : o->replacement ? UINT64_MAX : src[i].n;
            have += w[i] > 0 ? src[i].n : 0;
        }
        apportion_((uint64_t)o->total, w, cap, ns, q);
        if (!o->replacement && have < (uint64_t)o->total)
            kd_warn("mix: total %lld but the weighted sources hold %llu units: keeping all of them",
                    (long long)o->total, (unsigned long long)have);
        for (int i = 0; i < ns && st == KD_OK; i++) {
            src[i].quota = q[i];
            int r = cur_reason_(rep, src[i].name);
            rep->reasons[r].n += q[i];
            rep->kept += q[i];
            st = src_draw_(&src[i], i, o);
            uint32_t lid;
            json_t *extra = json_pack("{s:s, s:f, s:I}", "op", "mix", "weight", src[i].weight, "drawn",
                                      (json_int_t)q[i]);
            kd_lineage l = {.kind = "curate", .source = src[i].dir, .config_hash = j.hash, .seed = o->seed};
            if (st == KD_OK)
                st = cur_batch_(&j);
            if (st == KD_OK)
                st = kd_store_lineage_add(j.b, &l, extra, &lid);
            json_decref(extra);
        }
    }
    kd_progress pb;
    if (st == KD_OK && o->run.progress)
        kd_progress_init(&pb, "mix", rep->kept);
    uint64_t next_pid = 0;
    for (int i = 0; i < ns && st == KD_OK; i++)
        st = src_write_(&j, &src[i], &next_pid, o->run.progress ? &pb : NULL);
    if (st == KD_OK && o->run.progress)
        kd_progress_finish(&pb);
    /* the job may point into the sources (its input name): release them last */
    if (st != KD_OK)
        cur_abort_(&j);
    else
        st = cur_finish_(&j);
    for (int i = 0; i < ns; i++)
        src_release_(&src[i]);
    return st;
}
