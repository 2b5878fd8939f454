/* dedupe.c - text normalisation, exact and MinHash near-duplicate detection
 * (kd_curate_dedupe, kd_minhash_dedupe, kd_dedupe_bench) and word n-gram
 * decontamination (kd_curate_decontaminate).
 *
 * MinHash: the normalised text (kd_text_normalize) is split into words at
 * spaces; each run of `ngram` consecutive words is a shingle (a text with
 * fewer words is one shingle), hashed to 64 bits. Permutation p maps a
 * shingle hash h to the high 32 bits of a_p*h + b_p (mod 2^64, a_p odd), and
 * the signature holds each permutation's minimum. LSH: the signature is cut
 * into `bands` bands of `rows` values; two texts sharing a band's hash are
 * candidates, joined in a union-find whose root is the lowest index, so each
 * cluster keeps its first text. With the defaults (5-grams, 16 x 8) a pair
 * of Jaccard similarity s becomes a candidate with probability
 * 1 - (1 - s^8)^16: 0.9 -> 0.9999, 0.8 -> 0.93, 0.7 -> 0.62, 0.5 -> 0.06.
 * Exact duplicates compare a 128-bit hash (two seeded 64-bit hashes) of the
 * normalised text. */
#include "curate_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "core/log.h"
#include "core/status.h"

int cur_run_with_array_(cur_job_ *j, uint8_t *d);
int cur_next_(cur_iter_ *it, cur_unit_ *u);
int cur_copy_pass_(cur_job_ *j, int (*decide)(void *, cur_job_ *, const cur_unit_ *, int *), void *ctx);

/* ---- text ---------------------------------------------------------------- */

int kd_text_normalize(const char *text, size_t len, char **out, size_t *outlen)
{
    utf8proc_uint8_t *m = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &m,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD);
    if (n < 0) { /* invalid UTF-8: keep the bytes */
        m = malloc(len + 1);
        if (!m)
            return kd_err(KD_E_NOMEM, "out of memory");
        memcpy(m, text, len);
        m[len] = 0;
        n = (utf8proc_ssize_t)len;
    }
    size_t w = 0;
    int space = 1;
    for (utf8proc_ssize_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(m + i, n - i, &c);
        if (k <= 0) {
            k = 1;
            c = 0xFFFD;
        }
        int ws = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
                 (c > 127 && utf8proc_category(c) == UTF8PROC_CATEGORY_ZS);
        if (ws) {
            if (!space)
                m[w++] = ' ';
            space = 1;
        } else {
            memmove(m + w, m + i, (size_t)k);
            w += (size_t)k;
            space = 0;
        }
        i += k;
    }
    if (w && m[w - 1] == ' ')
        w--;
    m[w] = 0;
    *out = (char *)m;
    *outlen = w;
    return KD_OK;
}

/* A seeded 64-bit hash of bytes (8 at a time, splitmix-finalized). */
static uint64_t hash64_(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = cur_mix64_(seed + len * 0x9e3779b97f4a7c15ull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = cur_mix64_(h ^ w) * 0x9e3779b97f4a7c15ull;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, len);
    return cur_mix64_(h ^ w ^ ((uint64_t)len << 56));
}

/* ---- MinHash ------------------------------------------------------------- */

typedef struct mh_ {
    int ngram, perms, bands, rows;
    uint64_t *a, *b; /* (perms) */
} mh_;

static int mh_init_(mh_ *m, const kd_dedupe_opts *o)
{
    if (o->bands * o->rows != o->perms)
        return kd_err(KD_E_CONFIG, "dedupe: perms (%" PRId64 ") must equal bands * rows (%" PRId64 " * %" PRId64 ")",
                      o->perms, o->bands, o->rows);
    m->ngram = (int)o->ngram;
    m->perms = (int)o->perms;
    m->bands = (int)o->bands;
    m->rows = (int)o->rows;
    m->a = malloc((size_t)m->perms * sizeof *m->a);
    m->b = malloc((size_t)m->perms * sizeof *m->b);
    if (!m->a || !m->b) {
        free(m->a);
        free(m->b);
        return kd_err(KD_E_NOMEM, "out of memory");
    }
    uint64_t s = (uint64_t)o->seed * 0x2545f4914f6cdd1dull + 1;
    for (int p = 0; p < m->perms; p++) {
        m->a[p] = cur_mix64_(s += 0x9e3779b97f4a7c15ull) | 1;
        m->b[p] = cur_mix64_(s += 0x9e3779b97f4a7c15ull);
    }
    return KD_OK;
}

static void mh_release_(mh_ *m)
{
    free(m->a);
    free(m->b);
}

/* Per-document results of signing. */
typedef struct sigs_ {
    uint64_t *exact; /* (n, 2) */
    uint64_t *bands; /* (n, bands) */
    uint32_t *sig;   /* (n, perms) or NULL (threshold 0) */
    uint8_t *empty;  /* (n) no words */
} sigs_;

/* Sign one text into slot i. `scratch` holds shingle hashes (grown). */
static int sign_one_(const mh_ *m, const char *text, size_t len, sigs_ *s, size_t i, uint64_t **scratch,
                     size_t *cap, uint32_t *sigbuf)
{
    char *norm;
    size_t nl;
    KD_TRY(kd_text_normalize(text, len, &norm, &nl));
    s->exact[2 * i] = hash64_(norm, nl, 0x51ed270b27e1e3a5ull);
    s->exact[2 * i + 1] = hash64_(norm, nl, 0x1b873593cc9e2d51ull);
    /* word hashes */
    size_t nw = 0;
    for (size_t p = 0; p < nl;) {
        size_t q = p;
        while (q < nl && norm[q] != ' ')
            q++;
        if (nw == *cap) {
            size_t nc = *cap ? 2 * *cap : 256;
            uint64_t *ns = realloc(*scratch, nc * sizeof *ns);
            if (!ns) {
                free(norm);
                return kd_err(KD_E_NOMEM, "out of memory");
            }
            *scratch = ns;
            *cap = nc;
        }
        (*scratch)[nw++] = hash64_(norm + p, q - p, 7);
        p = q + 1;
    }
    free(norm);
    s->empty[i] = nw == 0;
    uint32_t *sig = s->sig ? s->sig + i * (size_t)m->perms : sigbuf;
    for (int p = 0; p < m->perms; p++)
        sig[p] = UINT32_MAX;
    size_t nsh = nw >= (size_t)m->ngram ? nw - (size_t)m->ngram + 1 : (nw ? 1 : 0);
    size_t g = nw >= (size_t)m->ngram ? (size_t)m->ngram : nw;
    for (size_t k = 0; k < nsh; k++) {
        uint64_t h = 0x243f6a8885a308d3ull;
        for (size_t t = 0; t < g; t++)
            h = cur_mix64_(h ^ (*scratch)[k + t]) + t;
        for (int p = 0; p < m->perms; p++) {
            uint32_t v = (uint32_t)((m->a[p] * h + m->b[p]) >> 32);
            if (v < sig[p])
                sig[p] = v;
        }
    }
    for (int b = 0; b < m->bands; b++)
        s->bands[i * (size_t)m->bands + b] = hash64_(sig + (size_t)b * m->rows, (size_t)m->rows * 4, (uint64_t)b);
    return KD_OK;
}

typedef struct sign_task_ {
    const mh_ *m;
    const char *const *texts;
    const size_t *lens;
    size_t lo, hi, base;
    sigs_ *s;
    int st;
} sign_task_;

static void *sign_thread_(void *arg)
{
    sign_task_ *t = arg;
    uint64_t *scratch = NULL;
    size_t cap = 0;
    uint32_t *sigbuf = malloc((size_t)t->m->perms * 4);
    t->st = sigbuf ? KD_OK : KD_E_NOMEM;
    for (size_t i = t->lo; i < t->hi && t->st == KD_OK; i++)
        t->st = sign_one_(t->m, t->texts[i], t->lens[i], t->s, t->base + i, &scratch, &cap, sigbuf);
    free(scratch);
    free(sigbuf);
    return NULL;
}

/* Sign texts[0..n) into slots base.. with `threads` threads. */
static int sign_batch_(const mh_ *m, const char *const *texts, const size_t *lens, size_t n, size_t base, sigs_ *s,
                       int threads)
{
    if (threads < 1)
        threads = 1;
    if ((size_t)threads > n)
        threads = n ? (int)n : 1;
    sign_task_ t[64];
    pthread_t th[64];
    if (threads > 64)
        threads = 64;
    for (int k = 0; k < threads; k++) {
        t[k] = (sign_task_){m, texts, lens, n * (size_t)k / threads, n * (size_t)(k + 1) / threads, base, s, 0};
        if (k && pthread_create(&th[k], NULL, sign_thread_, &t[k]) != 0)
            t[k].st = kd_err(KD_E_INTERNAL, "cannot start a thread");
    }
    sign_thread_(&t[0]);
    int st = t[0].st;
    for (int k = 1; k < threads; k++) {
        if (t[k].st == KD_OK || t[k].st == KD_E_NOMEM)
            pthread_join(th[k], NULL);
        if (st == KD_OK && t[k].st != KD_OK)
            st = t[k].st == KD_E_NOMEM ? kd_err(KD_E_NOMEM, "out of memory") : t[k].st;
    }
    return st;
}

static int sigs_alloc_(sigs_ *s, size_t n, const mh_ *m, int keep_sig)
{
    memset(s, 0, sizeof *s);
    size_t c = n ? n : 1;
    s->exact = malloc(c * 2 * sizeof *s->exact);
    s->bands = malloc(c * (size_t)m->bands * sizeof *s->bands);
    s->empty = malloc(c);
    if (keep_sig)
        s->sig = malloc(c * (size_t)m->perms * sizeof *s->sig);
    if (!s->exact || !s->bands || !s->empty || (keep_sig && !s->sig))
        return kd_err(KD_E_NOMEM, "dedupe: out of memory for %zu signatures", n);
    return KD_OK;
}

static void sigs_release_(sigs_ *s)
{
    free(s->exact);
    free(s->bands);
    free(s->sig);
    free(s->empty);
}

typedef struct hk_ {
    uint64_t h1, h2;
    uint32_t idx;
} hk_;

static int hk_cmp_(const void *a, const void *b)
{
    const hk_ *x = a, *y = b;
    if (x->h1 != y->h1)
        return x->h1 < y->h1 ? -1 : 1;
    if (x->h2 != y->h2)
        return x->h2 < y->h2 ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static uint32_t uf_find_(uint32_t *par, uint32_t i)
{
    while (par[i] != i) {
        par[i] = par[par[i]];
        i = par[i];
    }
    return i;
}

/* dup[i]: 0 keep, 1 exact, 2 near. */
static int cluster_(const mh_ *m, const sigs_ *s, size_t n, const kd_dedupe_opts *o, uint8_t *dup)
{
    memset(dup, 0, n);
    if (n > UINT32_MAX)
        return kd_err(KD_E_RANGE, "dedupe: more than 2^32 texts");
    hk_ *a = malloc((n ? n : 1) * sizeof *a);
    uint32_t *par = malloc((n ? n : 1) * sizeof *par);
    if (!a || !par) {
        free(a);
        free(par);
        return kd_err(KD_E_NOMEM, "out of memory");
    }
    if (o->exact) {
        for (size_t i = 0; i < n; i++)
            a[i] = (hk_){s->exact[2 * i], s->exact[2 * i + 1], (uint32_t)i};
        qsort(a, n, sizeof *a, hk_cmp_);
        for (size_t i = 1; i < n; i++)
            if (a[i].h1 == a[i - 1].h1 && a[i].h2 == a[i - 1].h2)
                dup[a[i].idx] = 1;
    }
    if (o->near) {
        for (size_t i = 0; i < n; i++)
            par[i] = (uint32_t)i;
        for (int b = 0; b < m->bands; b++) {
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (!dup[i] && !s->empty[i])
                    a[k++] = (hk_){s->bands[i * (size_t)m->bands + b], 0, (uint32_t)i};
            qsort(a, k, sizeof *a, hk_cmp_);
            for (size_t i = 1, first = 0; i < k; i++) {
                if (a[i].h1 != a[first].h1) {
                    first = i;
                    continue;
                }
                if (o->threshold > 0) {
                    const uint32_t *x = s->sig + (size_t)a[first].idx * m->perms,
                                   *y = s->sig + (size_t)a[i].idx * m->perms;
                    int same = 0;
                    for (int p = 0; p < m->perms; p++)
                        same += x[p] == y[p];
                    if ((double)same / m->perms < o->threshold)
                        continue;
                }
                uint32_t r1 = uf_find_(par, a[first].idx), r2 = uf_find_(par, a[i].idx);
                if (r1 != r2) {
                    if (r1 < r2)
                        par[r2] = r1;
                    else
                        par[r1] = r2;
                }
            }
        }
        for (size_t i = 0; i < n; i++)
            if (!dup[i] && uf_find_(par, (uint32_t)i) != i)
                dup[i] = 2;
    }
    free(a);
    free(par);
    return KD_OK;
}

static int online_cpus_(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

int kd_minhash_dedupe(const char *const *texts, const size_t *lens, size_t n, const kd_dedupe_opts *o, uint8_t *dup)
{
    mh_ m;
    KD_TRY(mh_init_(&m, o));
    sigs_ s;
    int st = sigs_alloc_(&s, n, &m, o->threshold > 0);
    if (st == KD_OK)
        st = sign_batch_(&m, texts, lens, n, 0, &s, o->threads ? (int)o->threads : online_cpus_());
    if (st == KD_OK)
        st = cluster_(&m, &s, n, o, dup);
    sigs_release_(&s);
    mh_release_(&m);
    return st;
}

/* ---- dedupe over a dataset ----------------------------------------------- */

#define SIGN_BATCH 8192

int kd_curate_dedupe(const char *in_dir, const char *out_dir, const kd_dedupe_opts *o, kd_curate_report *rep)
{
    mh_ m;
    KD_TRY(mh_init_(&m, o));
    cur_job_ j;
    int st = cur_begin_(&j, "dedupe", &kd_dedupe_schema, o, &o->run, in_dir, out_dir, 0, rep);
    if (st != 0) {
        mh_release_(&m);
        return st < 0 ? st : KD_OK;
    }
    int r_exact = cur_reason_(rep, "exact"), r_near = cur_reason_(rep, "near");
    (void)r_exact;
    (void)r_near;
    cur_iter_ it;
    st = cur_iter_open_(j.in, &it);
    if (st != KD_OK) {
        mh_release_(&m);
        cur_abort_(&j);
        return st;
    }
    uint64_t total = it.total;
    uint32_t *doc = malloc((total ? total : 1) * sizeof *doc); /* unit ordinal -> text index */
    uint8_t *d = malloc(total ? total : 1);
    char **texts = calloc(SIGN_BATCH, sizeof *texts);
    size_t *lens = calloc(SIGN_BATCH, sizeof *lens);
    sigs_ s;
    memset(&s, 0, sizeof s);
    if (!doc || !d || !texts || !lens)
        st = kd_err(KD_E_NOMEM, "out of memory");
    if (st == KD_OK)
        st = sigs_alloc_(&s, total, &m, o->threshold > 0);
    int threads = o->threads ? (int)o->threads : online_cpus_();
    size_t ndocs = 0, nb = 0;
    uint64_t last_pid = 0;
    int have_pid = 0;
    kd_progress pb;
    if (o->run.progress)
        kd_progress_init(&pb, "dedupe: sign", total);
    cur_unit_ u;
    int got = 0;
    while (st == KD_OK && (got = cur_next_(&it, &u)) > 0) {
        uint64_t pid = u.has_gen ? u.g.id : u.p.id;
        if (o->on == 0 && have_pid && pid == last_pid) {
            doc[u.ordinal] = (uint32_t)(ndocs - 1); /* same prompt, same text */
        } else {
            kd_text pt = u.has_prompt ? u.p.text : (kd_text){"", 0}, gt = u.has_gen ? u.g.text : pt;
            size_t len = o->on == 0 ? pt.len : o->on == 1 ? gt.len : pt.len + 1 + gt.len;
            char *t = malloc(len + 1);
            if (!t) {
                st = kd_err(KD_E_NOMEM, "out of memory");
                break;
            }
            if (o->on == 0)
                memcpy(t, pt.ptr, pt.len);
            else if (o->on == 1)
                memcpy(t, gt.ptr, gt.len);
            else {
                memcpy(t, pt.ptr, pt.len);
                t[pt.len] = '\n';
                memcpy(t + pt.len + 1, gt.ptr, gt.len);
            }
            texts[nb] = t;
            lens[nb++] = len;
            doc[u.ordinal] = (uint32_t)ndocs++;
            if (nb == SIGN_BATCH) {
                st = sign_batch_(&m, (const char *const *)texts, lens, nb, ndocs - nb, &s, threads);
                for (size_t i = 0; i < nb; i++)
                    free(texts[i]);
                nb = 0;
            }
        }
        last_pid = pid;
        have_pid = 1;
        if (o->run.progress)
            kd_progress_add(&pb, 1);
    }
    if (got < 0 && st == KD_OK)
        st = got;
    if (st == KD_OK && nb)
        st = sign_batch_(&m, (const char *const *)texts, lens, nb, ndocs - nb, &s, threads);
    for (size_t i = 0; i < nb; i++)
        free(texts[i]);
    if (o->run.progress)
        kd_progress_finish(&pb);
    cur_iter_close_(&it);
    uint8_t *dup = NULL;
    if (st == KD_OK && !(dup = malloc(ndocs ? ndocs : 1)))
        st = kd_err(KD_E_NOMEM, "out of memory");
    if (st == KD_OK)
        st = cluster_(&m, &s, ndocs, o, dup);
    if (st == KD_OK)
        for (uint64_t i = 0; i < total; i++)
            d[i] = dup[doc[i]]; /* 0 keep, 1 exact (reason 0 + 1), 2 near (reason 1 + 1) */
    free(dup);
    free(texts);
    free(lens);
    free(doc);
    sigs_release_(&s);
    mh_release_(&m);
    if (st != KD_OK) {
        free(d);
        cur_abort_(&j);
        return st;
    }
    st = cur_run_with_array_(&j, d);
    free(d);
    return st;
}

/* ---- the benchmark ------------------------------------------------------- */

int kd_dedupe_bench(uint64_t docs, int threads, FILE *out)
{
    if (!docs)
        docs = 1000000;
    const int nvocab = 20000, words = 60;
    char (*vocab)[12] = malloc((size_t)nvocab * sizeof *vocab);
    char **texts = malloc(docs * sizeof *texts);
    size_t *lens = malloc(docs * sizeof *lens);
    uint64_t *planted = malloc(docs * sizeof *planted); /* source index + 1, or 0 */
    uint8_t *dup = malloc(docs);
    int st = KD_OK;
    if (!vocab || !texts || !lens || !planted || !dup)
        st = kd_err(KD_E_NOMEM, "out of memory");
    uint64_t rng = 12345;
#define RNG_() (rng = cur_mix64_(rng + 0x9e3779b97f4a7c15ull))
    for (int v = 0; st == KD_OK && v < nvocab; v++) {
        int l = 3 + (int)(RNG_() % 8);
        for (int c = 0; c < l; c++)
            vocab[v][c] = (char)('a' + RNG_() % 26);
        vocab[v][l] = 0;
    }
    double t0 = kd_now();
    uint64_t nplanted = 0;
    for (uint64_t i = 0; st == KD_OK && i < docs; i++) {
        char *t = malloc((size_t)words * 12 + 1);
        if (!t) {
            texts[i] = NULL;
            st = kd_err(KD_E_NOMEM, "out of memory");
            break;
        }
        size_t o = 0;
        planted[i] = 0;
        if (i > 0 && RNG_() % 10 == 0) {
            /* a near duplicate of an earlier (original) text: one word changed */
            uint64_t src = RNG_() % i;
            while (planted[src])
                src = planted[src] - 1;
            planted[i] = src + 1;
            nplanted++;
            memcpy(t, texts[src], lens[src] + 1);
            o = lens[src];
            size_t at = RNG_() % o, b = at;
            while (b > 0 && t[b - 1] != ' ')
                b--;
            size_t e = at;
            while (e < o && t[e] != ' ')
                e++;
            const char *w = vocab[RNG_() % nvocab];
            size_t wl = strlen(w);
            memmove(t + b + wl, t + e, o - e + 1);
            memcpy(t + b, w, wl);
            o = o - (e - b) + wl;
        } else {
            for (int k = 0; k < words; k++) {
                const char *w = vocab[RNG_() % nvocab];
                size_t wl = strlen(w);
                if (k)
                    t[o++] = ' ';
                memcpy(t + o, w, wl);
                o += wl;
            }
            t[o] = 0;
        }
        texts[i] = t;
        lens[i] = o;
    }
#undef RNG_
    double t1 = kd_now();
    if (st == KD_OK) {
        kd_dedupe_opts o = {.exact = 1, .near = 1, .ngram = 5, .perms = 128, .bands = 16, .rows = 8, .seed = 1,
                            .threads = threads};
        st = kd_minhash_dedupe((const char *const *)texts, lens, (size_t)docs, &o, dup);
    }
    double t2 = kd_now();
    if (st == KD_OK) {
        uint64_t found = 0, false_pos = 0;
        for (uint64_t i = 0; i < docs; i++) {
            if (planted[i] && dup[i])
                found++;
            if (!planted[i] && dup[i])
                false_pos++;
        }
        fprintf(out,
                "dedupe bench: %" PRIu64 " docs of %d words (%" PRIu64 " planted near duplicates, one word changed),"
                " 5-grams, 128 perms, 16 bands x 8 rows, %d threads\n"
                "  generate %.2f s; minhash + lsh %.2f s = %.0f docs/s\n"
                "  recall %.4f (%" PRIu64 "/%" PRIu64 "), false positives %" PRIu64 "\n",
                docs, words, nplanted, threads ? threads : online_cpus_(), t1 - t0, t2 - t1,
                (double)docs / (t2 - t1), nplanted ? (double)found / nplanted : 1.0, found, nplanted, false_pos);
    }
    for (uint64_t i = 0; texts && i < docs && texts[i]; i++)
        free(texts[i]);
    free(vocab);
    free(texts);
    free(lens);
    free(planted);
    free(dup);
    return st;
}

/* ---- decontaminate ------------------------------------------------------- */

/* Words: maximal runs of letters and digits of the casefolded text; anything
 * else separates (so punctuation is stripped). Calls fn with each word. */
typedef struct words_ {
    uint64_t *h;
    size_t n, cap;
    size_t *start, *end; /* byte offsets in the casefolded text */
    char *text;
} words_;

static int words_of_(const char *s, size_t len, words_ *w)
{
    w->n = 0;
    free(w->text);
    w->text = NULL;
    utf8proc_uint8_t *m = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &m,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD);
    if (n < 0)
        return KD_OK; /* not UTF-8: no words */
    w->text = (char *)m;
    for (utf8proc_ssize_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(m + i, n - i, &c);
        if (k <= 0)
            break;
        utf8proc_category_t cat = utf8proc_category(c);
        int word = (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
                   (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) || cat == UTF8PROC_CATEGORY_MN ||
                   cat == UTF8PROC_CATEGORY_MC;
        if (!word) {
            i += k;
            continue;
        }
        utf8proc_ssize_t b = i;
        while (i < n) {
            k = utf8proc_iterate(m + i, n - i, &c);
            if (k <= 0)
                break;
            cat = utf8proc_category(c);
            if (!((cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
                  (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) || cat == UTF8PROC_CATEGORY_MN ||
                  cat == UTF8PROC_CATEGORY_MC))
                break;
            i += k;
        }
        if (w->n == w->cap) {
            size_t nc = w->cap ? 2 * w->cap : 256;
            uint64_t *nh = realloc(w->h, nc * sizeof *nh);
            size_t *ns = nh ? realloc(w->start, nc * sizeof *ns) : NULL;
            size_t *ne = ns ? realloc(w->end, nc * sizeof *ne) : NULL;
            if (nh)
                w->h = nh;
            if (ns)
                w->start = ns;
            if (ne)
                w->end = ne;
            if (!ne)
                return kd_err(KD_E_NOMEM, "out of memory");
            w->cap = nc;
        }
        w->h[w->n] = hash64_(m + b, (size_t)(i - b), 3);
        w->start[w->n] = (size_t)b;
        w->end[w->n] = (size_t)i;
        w->n++;
    }
    return KD_OK;
}

static void words_release_(words_ *w)
{
    free(w->h);
    free(w->start);
    free(w->end);
    free(w->text);
}

static uint64_t gram_hash_(const uint64_t *h, int n)
{
    uint64_t g = 0x13198a2e03707344ull;
    for (int t = 0; t < n; t++)
        g = cur_mix64_(g ^ h[t]) + (uint64_t)t;
    return g | 1; /* 0 marks an empty slot */
}

/* An open-addressing set of n-gram hashes -> (file, line). */
typedef struct gset_ {
    uint64_t *key;
    uint32_t *file, *line;
    size_t cap, n;
} gset_;

static int gset_put_(gset_ *s, uint64_t k, uint32_t file, uint32_t line)
{
    if ((s->n + 1) * 2 > s->cap) {
        gset_ ns = {0};
        ns.cap = s->cap ? 2 * s->cap : 1 << 16;
        ns.key = calloc(ns.cap, sizeof *ns.key);
        ns.file = malloc(ns.cap * sizeof *ns.file);
        ns.line = malloc(ns.cap * sizeof *ns.line);
        if (!ns.key || !ns.file || !ns.line) {
            free(ns.key);
            free(ns.file);
            free(ns.line);
            return kd_err(KD_E_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < s->cap; i++)
            if (s->key[i])
                gset_put_(&ns, s->key[i], s->file[i], s->line[i]);
        free(s->key);
        free(s->file);
        free(s->line);
        *s = ns;
    }
    size_t i = (size_t)cur_mix64_(k) & (s->cap - 1);
    while (s->key[i] && s->key[i] != k)
        i = (i + 1) & (s->cap - 1);
    if (!s->key[i]) {
        s->key[i] = k;
        s->file[i] = file;
        s->line[i] = line;
        s->n++;
    }
    return KD_OK;
}

static long gset_get_(const gset_ *s, uint64_t k)
{
    if (!s->cap)
        return -1;
    size_t i = (size_t)cur_mix64_(k) & (s->cap - 1);
    while (s->key[i]) {
        if (s->key[i] == k)
            return (long)i;
        i = (i + 1) & (s->cap - 1);
    }
    return -1;
}

typedef struct decon_ctx_ {
    const kd_decontam_opts *o;
    gset_ set;
    words_ w;
    FILE *report;
    int reason;
    uint64_t last_pid;
    int have_pid;
    long prompt_hit; /* slot of the prompt's match, or -1 */
    size_t prompt_at;
    char *prompt_gram;
} decon_ctx_;

/* The first n-gram of `text` in the set: its slot (and the words' text), or -1. */
static int match_(decon_ctx_ *c, kd_text text, long *slot, char **gram)
{
    *slot = -1;
    KD_TRY(words_of_(text.ptr, text.len, &c->w));
    int n = (int)c->o->ngram;
    for (size_t i = 0; c->w.n >= (size_t)n && i + (size_t)n <= c->w.n; i++) {
        long s = gset_get_(&c->set, gram_hash_(c->w.h + i, n));
        if (s >= 0) {
            *slot = s;
            size_t b = c->w.start[i], e = c->w.end[i + (size_t)n - 1];
            *gram = strndup(c->w.text + b, e - b);
            return KD_OK;
        }
    }
    return KD_OK;
}

static int decon_decide_(void *vctx, cur_job_ *j, const cur_unit_ *u, int *reason)
{
    (void)j;
    decon_ctx_ *c = vctx;
    uint64_t pid = u->has_gen ? u->g.id : u->p.id;
    if (!c->have_pid || pid != c->last_pid) {
        free(c->prompt_gram);
        c->prompt_gram = NULL;
        KD_TRY(match_(c, u->has_prompt ? u->p.text : (kd_text){"", 0}, &c->prompt_hit, &c->prompt_gram));
        c->last_pid = pid;
        c->have_pid = 1;
    }
    long slot = c->prompt_hit;
    char *gram = c->prompt_gram, *own = NULL;
    const char *where = "prompt";
    if (slot < 0 && c->o->response && u->has_gen) {
        KD_TRY(match_(c, u->g.text, &slot, &own));
        gram = own;
        where = "response";
    }
    *reason = -1;
    if (slot >= 0) {
        *reason = c->reason;
        json_t *line = json_pack("{s:I, s:I, s:s, s:s, s:I, s:s}", "prompt_id", (json_int_t)pid, "sample",
                                 (json_int_t)(u->has_gen ? (json_int_t)u->g.sample : -1), "where", where, "benchmark",
                                 c->o->benchmarks.items[c->set.file[slot]], "line", (json_int_t)c->set.line[slot],
                                 "ngram", gram ? gram : "");
        char *s = line ? json_dumps(line, JSON_COMPACT) : NULL;
        if (s)
            fprintf(c->report, "%s\n", s);
        free(s);
        json_decref(line);
    }
    free(own);
    return KD_OK;
}

/* Index every benchmark file's fields. */
static int load_benchmarks_(decon_ctx_ *c)
{
    const kd_decontam_opts *o = c->o;
    static const char *const def_fields[] = {"problem"};
    const char *const *fields = o->fields.n ? (const char *const *)o->fields.items : def_fields;
    size_t nfields = o->fields.n ? o->fields.n : 1;
    if (!o->benchmarks.n)
        return kd_err(KD_E_CONFIG, "decontaminate: no benchmarks given (benchmarks: [a.jsonl, ...])");
    for (size_t f = 0; f < o->benchmarks.n; f++) {
        const char *path = o->benchmarks.items[f];
        FILE *in = fopen(path, "r");
        if (!in)
            return kd_err(errno == ENOENT ? KD_E_NOTFOUND : KD_E_IO, "decontaminate: cannot open benchmark '%s': %s",
                          path, strerror(errno));
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        uint32_t lineno = 0, items = 0;
        int st = KD_OK;
        while (st == KD_OK && (n = getline(&line, &cap, in)) > 0) {
            lineno++;
            json_error_t err;
            json_t *obj = json_loadb(line, (size_t)n, 0, &err);
            if (!obj) {
                int blank = 1;
                for (ssize_t i = 0; i < n; i++)
                    blank &= line[i] == ' ' || line[i] == '\n' || line[i] == '\r' || line[i] == '\t';
                if (!blank)
                    st = kd_err(KD_E_FORMAT, "decontaminate: %s:%u: not JSON: %s", path, lineno, err.text);
                continue;
            }
            for (size_t k = 0; k < nfields && st == KD_OK; k++) {
                json_t *v = json_object_get(obj, fields[k]);
                if (!json_is_string(v))
                    continue;
                items++;
                st = words_of_(json_string_value(v), json_string_length(v), &c->w);
                for (size_t i = 0; st == KD_OK && c->w.n >= (size_t)o->ngram && i + (size_t)o->ngram <= c->w.n; i++)
                    st = gset_put_(&c->set, gram_hash_(c->w.h + i, (int)o->ngram), (uint32_t)f, lineno);
            }
            json_decref(obj);
        }
        free(line);
        fclose(in);
        if (st != KD_OK)
            return st;
        if (!items)
            return kd_err(KD_E_FORMAT, "decontaminate: benchmark '%s' has no line with a string field '%s'%s", path,
                          fields[0], nfields > 1 ? " (or the other fields given)" : "");
    }
    return KD_OK;
}

int kd_curate_decontaminate(const char *in_dir, const char *out_dir, const kd_decontam_opts *o,
                            kd_curate_report *rep)
{
    decon_ctx_ c = {.o = o};
    int st = load_benchmarks_(&c);
    cur_job_ j;
    if (st == KD_OK) {
        st = cur_begin_(&j, "decontaminate", &kd_decontam_schema, o, &o->run, in_dir, out_dir, 0, rep);
        if (st == 1)
            st = 2; /* already done */
    }
    if (st == KD_OK) {
        c.reason = cur_reason_(rep, "contaminated");
        char p[4200];
        snprintf(p, sizeof p, "%s/decontam_report.jsonl", j.partial);
        c.report = fopen(p, "w");
        if (!c.report)
            st = kd_err(KD_E_IO, "cannot create '%s': %s", p, strerror(errno));
        if (st == KD_OK)
            st = cur_copy_pass_(&j, decon_decide_, &c);
        if (c.report && (fflush(c.report) != 0 || fsync(fileno(c.report)) != 0) && st == KD_OK)
            st = kd_err(KD_E_IO, "cannot write '%s': %s", p, strerror(errno));
        if (c.report)
            fclose(c.report);
        st = st == KD_OK ? cur_finish_(&j) : (cur_abort_(&j), st);
    }
    free(c.set.key);
    free(c.set.file);
    free(c.set.line);
    free(c.prompt_gram);
    words_release_(&c.w);
    return st == 2 ? KD_OK : st;
}
