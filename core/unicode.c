/* unicode.c - widen PCRE2's \p{..} to Unicode 16.0 (the contract is in unicode.h).
 *
 * Two parts:
 *   1. measuring the linked PCRE2, once per process: a regex of 29
 *      alternatives (\p{Lu}+)|(\p{Ll}+)|... is run, anchored, over the UTF-8
 *      text of every code point in order; each match is a run of code points
 *      that PCRE2 gives the same two-letter category. Each category's PCRE2
 *      set is the union of its values' runs, and the delta against
 *      kd_uni_cats (core/unicode_tables.c) is two range-list differences:
 *      missing = Unicode 16 minus PCRE2, extra = PCRE2 minus Unicode 16;
 *   2. the rewrite: one pass over the pattern that copies it, tracking (?i)
 *      scopes and group depth, and writes each [..] class or lone \p{X} that
 *      holds a property again, in the fastest shape that is exact there.
 *
 * Why measure instead of asking pcre2_config(PCRE2_CONFIG_UNICODE_VERSION)
 * and shipping tables of every version's differences: measuring is exact for
 * any PCRE2, including one built with a Unicode newer than 16 (then `extra`
 * is what it must exclude), and needs only the one Unicode 16 table.
 *
 * A small growable buffer (obuf) is kept here rather than shared with
 * tokenizer.c's sbuf, which is private to that file.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "unicode.h"

#include <assert.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

/* ======================================================================== */
/* Buffers and range lists                                                  */
/* ======================================================================== */

typedef struct {
    char *p;
    size_t n, cap;
} obuf;

/* Append s[0..n), keeping the buffer NUL-terminated. */
static int put_(obuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q)
            return kd_err(KD_E_NOMEM, "cannot allocate %zu bytes for a rewritten regex", nc);
        b->p = q, b->cap = nc;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return KD_OK;
}

static int puts_(obuf *b, const char *s) { return put_(b, s, strlen(s)); }

/* Append ranges as class items: \x{A} or \x{A}-\x{B}. */
static int put_ranges_(obuf *b, const kd_uni_range *r, int n)
{
    for (int i = 0; i < n; i++) {
        char tmp[40];
        int k = r[i].hi > r[i].lo ? snprintf(tmp, sizeof tmp, "\\x{%X}-\\x{%X}", (unsigned)r[i].lo, (unsigned)r[i].hi)
                                  : snprintf(tmp, sizeof tmp, "\\x{%X}", (unsigned)r[i].lo);
        KD_TRY(put_(b, tmp, (size_t)k));
    }
    return KD_OK;
}

typedef struct {
    kd_uni_range *r;
    int n, cap;
} rlist;

/* Append [lo, hi], which must lie above every range already there; a range
 * that touches the last one is merged into it. */
static int rl_push_(rlist *l, uint32_t lo, uint32_t hi)
{
    assert(lo <= hi && (!l->n || l->r[l->n - 1].hi < lo));
    if (l->n && l->r[l->n - 1].hi + 1 == lo) {
        l->r[l->n - 1].hi = hi;
        return KD_OK;
    }
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 64;
        kd_uni_range *q = realloc(l->r, (size_t)nc * sizeof *q);
        if (!q)
            return kd_err(KD_E_NOMEM, "cannot allocate %d code point ranges", nc);
        l->r = q, l->cap = nc;
    }
    l->r[l->n++] = (kd_uni_range){lo, hi};
    return KD_OK;
}

/* Append a - b to out. a and b are sorted and disjoint. */
static int rl_diff_(const kd_uni_range *a, int na, const kd_uni_range *b, int nb, rlist *out)
{
    int j = 0;
    for (int i = 0; i < na; i++) {
        uint32_t lo = a[i].lo, hi = a[i].hi;
        while (j < nb && b[j].hi < lo)
            j++;
        for (int k = j;; k++) { /* b[k].hi >= lo here */
            if (k >= nb || b[k].lo > hi) {
                KD_TRY(rl_push_(out, lo, hi));
                break;
            }
            if (b[k].lo > lo)
                KD_TRY(rl_push_(out, lo, b[k].lo - 1));
            if (b[k].hi >= hi)
                break;
            lo = b[k].hi + 1;
        }
    }
    return KD_OK;
}

static int range_cmp_(const void *x, const void *y)
{
    const kd_uni_range *a = x, *b = y;
    return a->lo < b->lo ? -1 : a->lo > b->lo;
}

/* ======================================================================== */
/* 1. Measuring the linked PCRE2                                            */
/* ======================================================================== */

/* A two-letter value: not a major, not LC. */
static int is_value_(const kd_uni_cat *c) { return c->name[1] && c->name[1] != 'C'; }

/* Whether category `cat` holds the two-letter value `val` (both kd_uni_cats indexes). */
static int holds_(int cat, int val)
{
    const char *c = kd_uni_cats[cat].name, *v = kd_uni_cats[val].name;
    if (!strcmp(c, "LC"))
        return !strcmp(v, "Lu") || !strcmp(v, "Ll") || !strcmp(v, "Lt");
    return c[1] ? !strcmp(c, v) : c[0] == v[0];
}

/* The name PCRE2 is given: the short alias, except LC, which PCRE2 before
 * 10.40 knows only as L& (its names were case-sensitive then). */
static const char *pcre_name_(int cat) { return strcmp(kd_uni_cats[cat].name, "LC") ? kd_uni_cats[cat].name : "L&"; }

#define MAX_CATS 40

typedef struct {
    const kd_uni_range *miss, *extra;
    int nmiss, nextra;
} delta;

static struct {
    pthread_once_t once;
    int status;    /* KD_OK once measured, else the failure's code ... */
    char msg[512]; /* ... and its message */
    delta d[MAX_CATS];
    rlist pcn; /* what PCRE2 calls unassigned: \p{Cn} */
} g_ = {.once = PTHREAD_ONCE_INIT};

/* Decode one code point of valid UTF-8. */
static uint32_t utf8_decode_(const unsigned char *p)
{
    if (p[0] < 0x80)
        return p[0];
    if (p[0] < 0xE0)
        return ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    if (p[0] < 0xF0)
        return ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    return ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
}

static size_t utf8_encode_(uint32_t c, unsigned char *p)
{
    if (c < 0x80)
        return p[0] = (unsigned char)c, 1;
    if (c < 0x800)
        return p[0] = (unsigned char)(0xC0 | c >> 6), p[1] = (unsigned char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        p[0] = (unsigned char)(0xE0 | c >> 12), p[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
        p[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    p[0] = (unsigned char)(0xF0 | c >> 18), p[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
    p[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F)), p[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* Scan code points lo..hi (no surrogates) with `re`, whose group g matches
 * runs of the value vals[g - 1]; append each run to runs[that value]. */
static int scan_(const pcre2_code *re, pcre2_match_data *md, const int *vals, uint32_t lo, uint32_t hi,
                 unsigned char *text, rlist *runs)
{
    size_t len = 0;
    for (uint32_t c = lo; c <= hi; c++)
        len += utf8_encode_(c, text + len);
    PCRE2_SIZE off = 0;
    while (off < len) {
        int rc = pcre2_match(re, text, len, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc <= 1) {
            char why[160] = "it matches no two-letter General_Category";
            if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
                pcre2_get_error_message(rc, (PCRE2_UCHAR *)why, sizeof why);
            return kd_err(KD_E_INTERNAL, "measuring PCRE2's Unicode tables at U+%04X: %s",
                          (unsigned)utf8_decode_(text + off), why);
        }
        /* the alternatives are disjoint: the one group that matched is the
         * highest set, and pcre2_match returns 1 + that */
        PCRE2_SIZE end = pcre2_get_ovector_pointer(md)[1], last = end - 1;
        while ((text[last] & 0xC0) == 0x80)
            last--;
        KD_TRY(rl_push_(&runs[vals[rc - 2]], utf8_decode_(text + off), utf8_decode_(text + last)));
        off = end;
    }
    return KD_OK;
}

/* PCRE2's two-letter category of every code point, as runs per value
 * (runs[i] for kd_uni_cats[i]; empty for majors and LC). Surrogates cannot
 * occur in UTF-8, so they are given Cs by fiat, as Unicode 16 does. */
static int measure_(rlist *runs)
{
    int vals[MAX_CATS], nv = 0, cs = -1;
    obuf pat = {0};
    int st = KD_OK;
    for (int i = 0; i < kd_uni_ncats && st == KD_OK; i++) {
        if (!is_value_(&kd_uni_cats[i]))
            continue;
        if (!strcmp(kd_uni_cats[i].name, "Cs")) {
            cs = i;
            continue;
        }
        vals[nv++] = i;
        st = puts_(&pat, nv > 1 ? "|(\\p{" : "(\\p{");
        if (st == KD_OK)
            st = puts_(&pat, kd_uni_cats[i].name);
        if (st == KD_OK)
            st = puts_(&pat, "}+)");
    }
    if (st != KD_OK) {
        free(pat.p);
        return st;
    }
    assert(cs >= 0 && nv == 29);

    int err;
    PCRE2_SIZE erroff;
    /* anchored at compile time: the JIT refuses PCRE2_ANCHORED at match time */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat.p, pat.n, PCRE2_UTF | PCRE2_ANCHORED, &err, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        st = kd_err(KD_E_INTERNAL, "measuring PCRE2's Unicode tables: cannot compile '%s': %s", pat.p,
                    (const char *)msg);
        free(pat.p);
        return st;
    }
    free(pat.p);
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without the JIT the interpreter runs: slower, same runs */
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    unsigned char *text = malloc((size_t)4 * 0x110000); /* at most 4 bytes a code point */
    if (!md || !text)
        st = kd_err(KD_E_NOMEM, "cannot allocate the text of every code point");
    if (st == KD_OK)
        st = scan_(re, md, vals, 0, 0xD7FF, text, runs);
    if (st == KD_OK)
        st = rl_push_(&runs[cs], 0xD800, 0xDFFF);
    if (st == KD_OK)
        st = scan_(re, md, vals, 0xE000, 0x10FFFF, text, runs);
    free(text);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return st;
}

/* PCRE2's set for category `cat`: the union of its values' runs. */
static int pcre_set_(int cat, const rlist *runs, rlist *out)
{
    size_t n = 0;
    for (int v = 0; v < kd_uni_ncats; v++)
        if (is_value_(&kd_uni_cats[v]) && holds_(cat, v))
            n += (size_t)runs[v].n;
    kd_uni_range *all = malloc((n ? n : 1) * sizeof *all);
    if (!all)
        return kd_err(KD_E_NOMEM, "cannot allocate %zu code point ranges", n);
    n = 0;
    for (int v = 0; v < kd_uni_ncats; v++)
        if (is_value_(&kd_uni_cats[v]) && holds_(cat, v))
            for (int k = 0; k < runs[v].n; k++)
                all[n++] = runs[v].r[k];
    qsort(all, n, sizeof *all, range_cmp_);
    int st = KD_OK;
    for (size_t k = 0; k < n && st == KD_OK; k++)
        st = rl_push_(out, all[k].lo, all[k].hi);
    free(all);
    return st;
}

/* Measure PCRE2 and fill g_.d. Runs once (pthread_once); the deltas live
 * until the process ends. */
static void init_(void)
{
    assert(kd_uni_ncats <= MAX_CATS);
    rlist runs[MAX_CATS] = {{0}};
    int st = measure_(runs);
    for (int c = 0; c < kd_uni_ncats && st == KD_OK; c++) {
        const kd_uni_cat *u = &kd_uni_cats[c];
        rlist p = {0}, miss = {0}, extra = {0};
        st = pcre_set_(c, runs, &p);
        if (st == KD_OK)
            st = rl_diff_(u->ranges, u->nranges, p.r, p.n, &miss);
        if (st == KD_OK)
            st = rl_diff_(p.r, p.n, u->ranges, u->nranges, &extra);
        if (!strcmp(u->name, "Cn"))
            g_.pcn = p;
        else
            free(p.r);
        g_.d[c] = (delta){miss.r, extra.r, miss.n, extra.n};
    }
    for (int v = 0; v < MAX_CATS; v++)
        free(runs[v].r);
    g_.status = st;
    if (st != KD_OK) /* the message without its "KD_E_...: " prefix, which kd_err adds back */
        snprintf(g_.msg, sizeof g_.msg, "%s", kd_strerror(st) + strlen(kd_status_name(st)) + 2);
}

static int ensure_init_(void)
{
    pthread_once(&g_.once, init_);
    if (g_.status != KD_OK)
        return kd_err(g_.status, "%s", g_.msg);
    return KD_OK;
}

/* ======================================================================== */
/* 2. The rewrite                                                           */
/* ======================================================================== */

/* Why the output has several shapes. PCRE2's JIT tests the items of a class
 * one after another, so a character in none of them (a space, for
 * [\p{L}\p{M}]) walks every added range: appending ~50 ranges inside the
 * class made the DeepSeek-V3 pre-tokenizer regex 2.5x slower. So each
 * \p{..}, or class holding one (a "unit"), is written in the cheapest shape
 * that is exact where it stands. With C the unit as PCRE2 reads it, A the
 * added code points (for [^..]: those taken out), `new` those of A that PCRE2
 * calls unassigned (all of A, unless a category changed), `other` the rest:
 *   X = [C\p{Cn}other](?(?<=\p{Cn})(?<=[C new]))
 *     one class test for any character PCRE2 knows; a lookbehind only for
 *     one it calls unassigned. [Cother] when `new` is empty.
 *   once:                    X
 *   {n,m}, n >= 1, m <= 16:  X(?:X){n-1,m-1}     ?, {0,m}: (?:X)? (?:X){0,m}
 *   + or * never backtracked into (possessive runs, no JIT stack per char):
 *                            +: (?:(?>C|[A])C*+(?:[A]++C*+)*+)
 *                            *: (?:C*+(?:[A]++C*+)*+)
 *   negated [^..]:           (?:C(?<![A])), then the quantifier (possessive
 *                            for a run never backtracked into)
 *   anything else:           [..A], the ranges inside the class: exact
 *                            everywhere, slower for characters outside it.
 * [A] alone starts with a min/max test, cheap for common characters.
 * "Never backtracked into" is tail_always_matches_: a repeated group such
 * as (?:C|[A])+ would keep JIT stack for each character and overflow on a
 * run of a few million. In a (?i) scope the ranges go inside (?-i:..), and
 * a unit that needs code points taken out (put_group_) is an alternation. */

/* The kd_uni_cats index of a property name, matched loosely (ASCII case,
 * ' ', '_' and '-' ignored), or -1. */
static int find_cat_(const char *s, size_t n)
{
    char key[48];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == ' ' || ch == '_' || ch == '-')
            continue;
        if (k + 1 >= sizeof key)
            return -1;
        key[k++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    key[k] = 0;
    static const char *const aliases[][2] = {{"l&", "LC"}, {"combiningmark", "M"}};
    for (size_t a = 0; a < sizeof aliases / sizeof aliases[0]; a++)
        if (!strcmp(key, aliases[a][0]))
            return find_cat_(aliases[a][1], strlen(aliases[a][1]));
    for (int c = 0; c < kd_uni_ncats; c++) {
        const char *names[2] = {kd_uni_cats[c].name, kd_uni_cats[c].long_name};
        for (int w = 0; w < 2; w++) {
            const char *p = names[w];
            size_t j = 0;
            for (; *p; p++) {
                if (*p == '_')
                    continue;
                char ch = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
                if (j >= k || key[j] != ch)
                    break;
                j++;
            }
            if (!*p && j == k)
                return c;
        }
    }
    return -1;
}

typedef struct {
    int cat;
    int neg; /* \P{X} or \p{^X} */
} prop;

/* Parse the property escape at s[*i] ('\\', then 'p' or 'P'); move *i past it. */
static int parse_prop_(const char *s, size_t n, size_t *i, prop *out)
{
    size_t at = *i, j = at + 2;
    char e = s[at + 1];
    int neg = e == 'P';
    const char *name = s + j;
    size_t nl = 1;
    if (j >= n)
        return kd_err(KD_E_FORMAT, "'\\%c' at the end of the pattern", e);
    if (s[j] == '{') {
        const char *end = memchr(s + j, '}', n - j);
        if (!end)
            return kd_err(KD_E_FORMAT, "'\\%c{' at offset %zu has no closing '}'", e, at);
        name = s + j + 1;
        nl = (size_t)(end - name);
        j = (size_t)(end - s) + 1;
        if (nl && name[0] == '^')
            neg ^= 1, name++, nl--;
    } else {
        j++;
    }
    int c = find_cat_(name, nl);
    if (c < 0)
        return kd_err(KD_E_UNSUPPORTED, "'\\%c{%.*s}' at offset %zu: only General_Category properties (L, Lu, "
                      "Letter, ...) are supported, because only they have Unicode %s tables here",
                      e, (int)(nl > 64 ? 64 : nl), name, at, kd_uni_version);
    *out = (prop){c, neg};
    *i = j;
    return KD_OK;
}

/* An "additive" property only lacks code points: \p{X} where PCRE2 has
 * nothing extra in X, \P{X} where PCRE2 misses nothing of X. It stays as it
 * is and its delta joins the unit's added code points. Any other property
 * (rare: a category change, or a PCRE2 newer than Unicode 16) is matched by
 * put_group_. */
static int additive_(prop p) { return p.neg ? !g_.d[p.cat].nmiss : !g_.d[p.cat].nextra; }

static int put_prop_(obuf *b, prop p)
{
    KD_TRY(puts_(b, p.neg ? "\\P{" : "\\p{"));
    KD_TRY(puts_(b, pcre_name_(p.cat)));
    return puts_(b, "}");
}

/* A non-additive p as one group that matches exactly its Unicode 16 code points:
 *   \p{X}: (?:(?![extra])[\p{X}missing])
 *   \P{X}: (?:[^\p{X}missing]|[extra])
 * (?-i: for (?: in a (?i) scope, and empty parts left out. */
static int put_group_(obuf *b, prop p, int ci)
{
    const delta *d = &g_.d[p.cat];
    KD_TRY(puts_(b, ci ? "(?-i:" : "(?:"));
    if (!p.neg && d->nextra) {
        KD_TRY(puts_(b, "(?!["));
        KD_TRY(put_ranges_(b, d->extra, d->nextra));
        KD_TRY(puts_(b, "])"));
    }
    if (d->nmiss) {
        KD_TRY(puts_(b, p.neg ? "[^" : "["));
        KD_TRY(put_prop_(b, (prop){p.cat, 0}));
        KD_TRY(put_ranges_(b, d->miss, d->nmiss));
        KD_TRY(puts_(b, "]"));
    } else {
        KD_TRY(put_prop_(b, p));
    }
    if (p.neg && d->nextra) {
        KD_TRY(puts_(b, "|["));
        KD_TRY(put_ranges_(b, d->extra, d->nextra));
        KD_TRY(puts_(b, "]"));
    }
    return puts_(b, ")");
}

/* One code point matcher of the pattern: a [..] class or a lone \p{..}. */
typedef struct {
    int cls;      /* a class, else a lone property */
    int neg;      /* [^..] */
    obuf body;    /* a class's items, additive properties as \p{X}; or the lone \p{X} */
    size_t ins;   /* where in body the added ranges may go: after a property */
    rlist add;    /* code points the unit must match too; for [^..], must not */
    rlist add_cn; /* those of them PCRE2 calls unassigned (\p{Cn}): all, unless a category changed */
    rlist add_other; /* the rest */
    prop hard[32]; /* non-additive properties, matched as groups */
    int nhard;
} unit;

static void unit_release_(unit *u)
{
    free(u->body.p);
    free(u->add.r);
    free(u->add_cn.r);
    free(u->add_other.r);
}

/* Put property p into u. */
static int unit_prop_(unit *u, prop p)
{
    if (!additive_(p)) {
        if (u->nhard == (int)(sizeof u->hard / sizeof u->hard[0]))
            return kd_err(KD_E_UNSUPPORTED, "more than %d properties in one class",
                          (int)(sizeof u->hard / sizeof u->hard[0]));
        u->hard[u->nhard++] = p;
        return KD_OK;
    }
    KD_TRY(put_prop_(&u->body, p));
    const delta *d = &g_.d[p.cat];
    const kd_uni_range *r = p.neg ? d->extra : d->miss;
    int nr = p.neg ? d->nextra : d->nmiss;
    if (!nr)
        return KD_OK;
    if (!u->add.n)
        u->ins = u->body.n;
    if (u->add.n + nr > u->add.cap) {
        kd_uni_range *q = realloc(u->add.r, (size_t)(u->add.n + nr) * sizeof *q);
        if (!q)
            return kd_err(KD_E_NOMEM, "cannot allocate %d code point ranges", u->add.n + nr);
        u->add.r = q, u->add.cap = u->add.n + nr;
    }
    memcpy(u->add.r + u->add.n, r, (size_t)nr * sizeof *r);
    u->add.n += nr;
    return KD_OK;
}

/* Sort u->add, merge ranges that overlap or touch, and split it into
 * add_cn and add_other. */
static int unit_merge_(unit *u)
{
    rlist *l = &u->add;
    if (!l->n)
        return KD_OK;
    qsort(l->r, (size_t)l->n, sizeof *l->r, range_cmp_);
    int k = 0;
    for (int i = 0; i < l->n; i++) {
        if (k && l->r[i].lo <= l->r[k - 1].hi + 1) {
            if (l->r[i].hi > l->r[k - 1].hi)
                l->r[k - 1].hi = l->r[i].hi;
        } else {
            l->r[k++] = l->r[i];
        }
    }
    l->n = k;
    KD_TRY(rl_diff_(l->r, l->n, g_.pcn.r, g_.pcn.n, &u->add_other));
    return rl_diff_(l->r, l->n, u->add_other.r, u->add_other.n, &u->add_cn);
}

/* Copy a \Q..\E quote starting at s[*i] (the backslash) through its \E, or
 * to the end; move *i past it. */
static int copy_quote_(obuf *b, const char *s, size_t n, size_t *i)
{
    size_t j = *i + 2;
    while (j < n && !(s[j] == '\\' && j + 1 < n && s[j + 1] == 'E'))
        j++;
    j = j < n ? j + 2 : n;
    KD_TRY(put_(b, s + *i, j - *i));
    *i = j;
    return KD_OK;
}

/* How many bytes an escape other than \p, \P, \Q at s[i] takes: 2, or 3 for
 * \cX (X may be '[' or ']'). Braced arguments (\x{..}) need no care: they
 * hold no bracket, backslash or parenthesis. */
static size_t escape_len_(const char *s, size_t n, size_t i)
{
    if (i + 1 >= n)
        return 1; /* a lone trailing backslash: PCRE2 reports it */
    size_t k = s[i + 1] == 'c' ? 3 : 2;
    return i + k <= n ? k : n - i;
}

/* The length of a POSIX item [:name:] or [:^name:] at s[j], or 0. */
static size_t posix_len_(const char *s, size_t n, size_t j)
{
    size_t k = j + 1;
    if (k >= n || s[k] != ':')
        return 0;
    k++;
    while (k < n && (s[k] == '^' || (s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z')))
        k++;
    return k + 1 < n && k > j + 2 && s[k] == ':' && s[k + 1] == ']' ? k + 2 - j : 0;
}

/* Parse the class at s[*i] ('[') into u; move *i past its ']'. */
static int parse_class_(const char *s, size_t n, size_t *i, unit *u)
{
    size_t at = *i, j = at + 1;
    u->cls = 1;
    u->neg = j < n && s[j] == '^';
    j += (size_t)u->neg;
    size_t start = j; /* a '-' here is literal, not a range */
    int dash = 0;
    if (j < n && s[j] == ']') /* a leading ] is literal */
        KD_TRY(put_(&u->body, s + j++, 1));
    while (j < n && s[j] != ']') {
        char ch = s[j];
        int was_dash = dash;
        dash = 0;
        if (ch == '\\' && j + 1 < n && (s[j + 1] == 'p' || s[j + 1] == 'P')) {
            prop p;
            size_t from = j;
            KD_TRY(parse_prop_(s, n, &j, &p));
            if (was_dash || (j + 1 < n && s[j] == '-' && s[j + 1] != ']'))
                return kd_err(KD_E_FORMAT, "'%.*s' at offset %zu is an end point of a range", (int)(j - from),
                              s + from, from);
            KD_TRY(unit_prop_(u, p));
        } else if (ch == '\\' && j + 1 < n && s[j + 1] == 'Q') {
            KD_TRY(copy_quote_(&u->body, s, n, &j));
        } else if (ch == '\\') {
            size_t k = escape_len_(s, n, j);
            KD_TRY(put_(&u->body, s + j, k));
            j += k;
        } else if (ch == '[') {
            size_t k = posix_len_(s, n, j);
            if (!k)
                return kd_err(KD_E_UNSUPPORTED, "a class nested in a class at offset %zu (Oniguruma nests "
                              "classes, PCRE2 does not)", j);
            KD_TRY(put_(&u->body, s + j, k));
            j += k;
        } else {
            dash = ch == '-' && j > start;
            KD_TRY(put_(&u->body, s + j++, 1));
        }
    }
    if (j >= n)
        return kd_err(KD_E_FORMAT, "the class at offset %zu has no closing ']'", at);
    *i = j + 1;
    return KD_OK;
}

/* A quantifier: what follows a unit. */
typedef enum {
    Q_NONE,  /* none */
    Q_SMALL, /* ?, {n}, {n,m} with m <= 16: a repeated group stays small */
    Q_STAR,  /* * */
    Q_PLUS,  /* + */
    Q_OTHER  /* {n,}, {n,m} with m > 16 */
} qkind;

typedef struct {
    qkind kind;
    char mode;  /* 0 greedy, '+' possessive, '?' lazy */
    size_t len; /* bytes of pattern it takes */
    unsigned lo, hi; /* for braces: {lo,hi}; lo is 0 otherwise */
} quant;

/* The quantifier at s[j]. "{,m}" and other braces PCRE2 10.42 reads as
 * literal text are Q_NONE. */
static quant parse_quant_(const char *s, size_t n, size_t j)
{
    quant q = {Q_NONE, 0, 0, 0, 0};
    size_t k = j;
    if (k >= n)
        return q;
    if (s[k] == '?' || s[k] == '*' || s[k] == '+') {
        q.kind = s[k] == '?' ? Q_SMALL : s[k] == '*' ? Q_STAR : Q_PLUS;
        k++;
    } else if (s[k] == '{') {
        unsigned long lo = 0, hi = 0;
        int nlo = 0, nhi = 0, comma = 0;
        for (k++; k < n && s[k] >= '0' && s[k] <= '9'; k++, nlo++)
            lo = lo < 100000 ? lo * 10 + (unsigned long)(s[k] - '0') : lo;
        if (k < n && s[k] == ',')
            for (comma = 1, k++; k < n && s[k] >= '0' && s[k] <= '9'; k++, nhi++)
                hi = hi < 100000 ? hi * 10 + (unsigned long)(s[k] - '0') : hi;
        if (!nlo || k >= n || s[k] != '}')
            return q;
        k++;
        if (!comma)
            hi = lo, nhi = 1;
        q.kind = nhi && hi <= 16 ? Q_SMALL : Q_OTHER;
        q.lo = (unsigned)lo, q.hi = (unsigned)hi;
    } else {
        return q;
    }
    if (k < n && (s[k] == '+' || s[k] == '?'))
        q.mode = s[k++];
    q.len = k - j;
    return q;
}

/* The index after the class at s[j] ('['), or 0 if it is not a plain class. */
static size_t class_end_(const char *s, size_t n, size_t j)
{
    size_t k = j + 1;
    if (k < n && s[k] == '^')
        k++;
    if (k < n && s[k] == ']')
        k++;
    while (k < n && s[k] != ']') {
        size_t p = s[k] == '[' ? posix_len_(s, n, k) : 0;
        if (s[k] == '[' && !p)
            return 0;
        k += p ? p : s[k] == '\\' ? 2 : 1;
    }
    return k < n ? k + 1 : 0;
}

/* Whether the rest of the top-level alternative from s[j] always matches:
 * only single-character items quantified by * or ?, up to a '|' or the end
 * of the pattern. A greedy X+ or X* just before such a tail is never
 * backtracked into (the first try succeeds), so it may be matched
 * possessively. Conservative: anything else answers 0. */
static int tail_always_matches_(const char *s, size_t n, size_t j)
{
    while (j < n && s[j] != '|') {
        size_t k;
        char ch = s[j];
        if (ch == '[') {
            if (!(k = class_end_(s, n, j)))
                return 0;
        } else if (ch == '\\') {
            if (j + 1 >= n)
                return 0;
            char e = s[j + 1];
            k = j + 2;
            if (e == 'p' || e == 'P' || e == 'x') {
                if (k < n && s[k] == '{') {
                    const char *c = memchr(s + k, '}', n - k);
                    if (!c)
                        return 0;
                    k = (size_t)(c - s) + 1;
                } else if (e == 'x') {
                    return 0;
                } else {
                    k++;
                }
            } else if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9')) {
                if (!strchr("rntfaesSdDwWhHvVRN", e)) /* no assertions, backreferences, \c, \o */
                    return 0;
            }
        } else if (strchr("()*+?{}^$", ch)) {
            return 0;
        } else {
            for (k = j + 1; k < n && (s[k] & 0xC0) == 0x80; k++) /* one UTF-8 character */
                ;
        }
        if (k >= n || (s[k] != '*' && s[k] != '?'))
            return 0;
        k++;
        if (k < n && (s[k] == '+' || s[k] == '?'))
            k++;
        j = k;
    }
    return 1;
}

/* The added ranges as a class: [..], or (?-i:[..]) in a (?i) scope, with
 * `tail` ("++") inside the (?-i:..). */
static int put_add_(obuf *b, const unit *u, int ci, const char *tail)
{
    KD_TRY(puts_(b, ci ? "(?-i:[" : "["));
    KD_TRY(put_ranges_(b, u->add.r, u->add.n));
    KD_TRY(puts_(b, "]"));
    KD_TRY(puts_(b, tail));
    return ci ? puts_(b, ")") : KD_OK;
}

/* The unit as PCRE2 reads it, C in the comment at the top of this part. */
static int put_c_(obuf *b, const unit *u)
{
    if (!u->cls)
        return put_(b, u->body.p, u->body.n);
    KD_TRY(puts_(b, u->neg ? "[^" : "["));
    KD_TRY(put_(b, u->body.p, u->body.n));
    return puts_(b, "]");
}

/* The class [body] with `mid` and the ranges r[0..n) put in at u->ins. */
static int put_class_with_(obuf *b, const unit *u, const char *mid, const kd_uni_range *r, int n)
{
    KD_TRY(puts_(b, u->cls && u->neg ? "[^" : "["));
    KD_TRY(put_(b, u->body.p, u->ins));
    KD_TRY(puts_(b, mid));
    KD_TRY(put_ranges_(b, r, n));
    KD_TRY(put_(b, u->body.p + u->ins, u->body.n - u->ins));
    return puts_(b, "]");
}

/* A positive unit as one class that reads the character once, X in the
 * comment at the top of this part:
 *   [C\p{Cn}other](?(?<=\p{Cn})(?<=[C new]))
 * where `new` are the added code points that PCRE2 calls unassigned and
 * `other` the rest (none unless a category changed): a character PCRE2
 * knows costs one class test, and only an unassigned one a lookbehind. */
static int put_x_(obuf *b, const unit *u, int wrap)
{
    if (!u->add_cn.n)
        return put_class_with_(b, u, "", u->add_other.r, u->add_other.n);
    KD_TRY(puts_(b, wrap ? "(?:" : ""));
    KD_TRY(put_class_with_(b, u, "\\p{Cn}", u->add_other.r, u->add_other.n));
    KD_TRY(puts_(b, "(?(?<=\\p{Cn})(?<="));
    KD_TRY(put_class_with_(b, u, "", u->add_cn.r, u->add_cn.n));
    return puts_(b, wrap ? ")))" : "))");
}

/* Write unit u followed by quantifier q (whose text is qt). ci: in a (?i)
 * scope. run_ok: a greedy + or * here may be matched possessively. */
static int put_unit_(obuf *b, const unit *u, quant q, const char *qt, int ci, int run_ok)
{
    int run = (q.kind == Q_STAR || q.kind == Q_PLUS) && (q.mode == '+' || (q.mode == 0 && run_ok));
    if (!u->add.n && !u->nhard) {
        KD_TRY(put_c_(b, u));
        return put_(b, qt, q.len);
    }
    if (u->nhard) { /* (?:C|[A]|G1|G2..) or (?:(?!C'|[A]|G1..)(?s:.)) with C' = C not negated */
        int first = 1;
        KD_TRY(puts_(b, u->neg ? "(?:(?!" : "(?:"));
        if (u->body.n) {
            KD_TRY(puts_(b, u->body.p[0] == '^' ? "[\\" : "[")); /* a ^ that was literal after [^ */
            KD_TRY(put_(b, u->body.p, u->body.n));
            KD_TRY(puts_(b, "]"));
            first = 0;
        }
        if (u->add.n) {
            KD_TRY(puts_(b, first ? "" : "|"));
            KD_TRY(put_add_(b, u, ci, ""));
            first = 0;
        }
        for (int h = 0; h < u->nhard; h++) {
            KD_TRY(puts_(b, first ? "" : "|"));
            KD_TRY(put_group_(b, u->hard[h], ci));
            first = 0;
        }
        KD_TRY(puts_(b, u->neg ? ")(?s:.))" : ")"));
        return run ? puts_(b, q.kind == Q_STAR ? "*+" : "++") : put_(b, qt, q.len);
    }
    if (q.kind == Q_NONE || q.kind == Q_SMALL || run || ci) {
        if (u->neg) { /* (?:C(?<![A])) */
            KD_TRY(puts_(b, "(?:"));
            KD_TRY(put_c_(b, u));
            KD_TRY(puts_(b, "(?<!"));
            KD_TRY(put_add_(b, u, ci, ""));
            KD_TRY(puts_(b, "))"));
            return run ? puts_(b, q.kind == Q_STAR ? "*+" : "++") : put_(b, qt, q.len);
        }
        if (!run && !ci) {
            /* X, or for {n,m} with n >= 1: X(?:X){n-1,m-1}, so that a
             * character that fails costs one class test and no group */
            if (q.kind == Q_NONE || (q.lo >= 1 && q.hi == 1))
                return put_x_(b, u, 0);
            if (q.lo >= 1) {
                char rest[48];
                KD_TRY(put_x_(b, u, 0));
                KD_TRY(put_x_(b, u, 1));
                snprintf(rest, sizeof rest, "{%u,%u}%s", q.lo - 1, q.hi - 1, q.mode == '+' ? "+" : q.mode == '?' ? "?" : "");
                return puts_(b, rest);
            }
            KD_TRY(put_x_(b, u, 1));
            return put_(b, qt, q.len);
        }
        if (!run) { /* (?:C|(?-i:[A])) */
            KD_TRY(puts_(b, "(?:"));
            KD_TRY(put_c_(b, u));
            KD_TRY(puts_(b, "|"));
            KD_TRY(put_add_(b, u, ci, ""));
            KD_TRY(puts_(b, ")"));
            return put_(b, qt, q.len);
        }
        /* +: (?:XC*+(?:[A]++C*+)*+)   *: (?:C*+(?:[A]++C*+)*+) */
        KD_TRY(puts_(b, "(?:"));
        if (q.kind == Q_PLUS) {
            KD_TRY(puts_(b, "(?>"));
            KD_TRY(put_c_(b, u));
            KD_TRY(puts_(b, "|"));
            KD_TRY(put_add_(b, u, ci, ""));
            KD_TRY(puts_(b, ")"));
        }
        KD_TRY(put_c_(b, u));
        KD_TRY(puts_(b, "*+(?:"));
        KD_TRY(put_add_(b, u, ci, "++"));
        KD_TRY(put_c_(b, u));
        return puts_(b, "*+)*+)");
    }
    /* the ranges inside the class: [..\p{X}ranges..] */
    KD_TRY(put_class_with_(b, u, "", u->add.r, u->add.n));
    return put_(b, qt, q.len);
}

/* Option letters that matter here: i (caseless) and U (ungreedy). */
enum { OPT_I = 1, OPT_U = 2 };

/* Parse an option setting at s[i] == '(' followed by '?': (?i) (?-i) (?^)
 * (?i:...) and the like. Returns 1 with *flags the options after it and
 * *end the index of its ')' or ':'; 0 when s[i] starts something else
 * (then *st may hold KD_E_UNSUPPORTED for extended mode (?x)). */
static int parse_options_(const char *s, size_t n, size_t i, int *flags, size_t *end, int *st)
{
    size_t k = i + 2;
    int on = 1, x = 0, f = *flags;
    for (; k < n; k++) {
        char ch = s[k];
        int bit = ch == 'i' ? OPT_I : ch == 'U' ? OPT_U : 0;
        if (ch == '-')
            on = 0;
        else if (ch == '^')
            f = 0, on = 1;
        else if (bit)
            f = on ? f | bit : f & ~bit;
        else if (ch == 'x')
            x |= on;
        else if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
            break;
    }
    if (k >= n || k == i + 2 || (s[k] != ')' && s[k] != ':'))
        return 0;
    if (x) {
        *st = kd_err(KD_E_UNSUPPORTED, "extended mode '%.*s' at offset %zu", (int)(k + 1 - i), s + i, i);
        return 0;
    }
    *flags = f;
    *end = k;
    return 1;
}

int kd_regex_unicode_rewrite(const char *pattern, size_t len, char **out, size_t *out_len)
{
    assert((pattern || !len) && out && out_len);
    *out = NULL, *out_len = 0;
    const char *s = pattern;
    size_t n = len;
    int need = 0; /* measure PCRE2 only for patterns with a property */
    for (size_t i = 0; i + 1 < n && !need; i++)
        need = s[i] == '\\' && (s[i + 1] == 'p' || s[i + 1] == 'P');
    if (need)
        KD_TRY(ensure_init_());

    enum { MAX_DEPTH = 250 }; /* PCRE2's default parenthesis nesting limit */
    unsigned char stack[MAX_DEPTH];
    int depth = 0, flags = 0, st;
    obuf b = {0};
    st = put_(&b, "", 0); /* an empty pattern still gets a buffer */
    for (size_t i = 0; i < n && st == KD_OK;) {
        char ch = s[i];
        if ((ch == '\\' && i + 1 < n && (s[i + 1] == 'p' || s[i + 1] == 'P')) || ch == '[') {
            unit u = {0};
            if (ch == '[') {
                st = parse_class_(s, n, &i, &u);
            } else {
                prop p;
                st = parse_prop_(s, n, &i, &p);
                if (st == KD_OK)
                    st = unit_prop_(&u, p);
                u.ins = u.body.n;
            }
            if (st == KD_OK)
                st = unit_merge_(&u);
            if (st == KD_OK) {
                quant q = parse_quant_(s, n, i);
                int run_ok = !depth && !(flags & OPT_U) && tail_always_matches_(s, n, i + q.len);
                st = put_unit_(&b, &u, q, s + i, flags & OPT_I, run_ok);
                i += q.len;
            }
            unit_release_(&u);
        } else if (ch == '\\' && i + 1 < n && s[i + 1] == 'Q') {
            st = copy_quote_(&b, s, n, &i);
        } else if (ch == '\\') {
            size_t k = escape_len_(s, n, i);
            st = put_(&b, s + i, k);
            i += k;
        } else if (ch == '(' && i + 2 < n && s[i + 1] == '?' && s[i + 2] == '#') {
            const char *end = memchr(s + i, ')', n - i); /* a comment: no nesting, no escapes */
            size_t k = end ? (size_t)(end - s) + 1 : n;
            st = put_(&b, s + i, k - i);
            i = k;
        } else if (ch == '(') {
            int nf = flags;
            size_t end;
            if (depth >= MAX_DEPTH) {
                st = kd_err(KD_E_FORMAT, "parentheses nested deeper than %d at offset %zu", MAX_DEPTH, i);
                break;
            }
            if (i + 1 < n && s[i + 1] == '?' && parse_options_(s, n, i, &nf, &end, &st)) {
                if (s[end] == ':') /* (?i:...) */
                    stack[depth++] = (unsigned char)flags;
                flags = nf; /* (?i) lasts to the end of the enclosing group */
                st = put_(&b, s + i, end + 1 - i);
                i = end + 1;
            } else if (st == KD_OK) {
                stack[depth++] = (unsigned char)flags;
                st = put_(&b, s + i++, 1);
            }
        } else {
            if (ch == ')' && depth)
                flags = stack[--depth];
            st = put_(&b, s + i++, 1);
        }
    }
    if (st != KD_OK) {
        free(b.p);
        return st;
    }
    *out = b.p, *out_len = b.n;
    return KD_OK;
}

int kd_regex_unicode_delta(const char *name, const kd_uni_range **missing, int *nmissing,
                           const kd_uni_range **extra, int *nextra)
{
    assert(name && missing && nmissing && extra && nextra);
    int c = find_cat_(name, strlen(name));
    if (c < 0)
        return kd_err(KD_E_NOTFOUND, "'%s' is not a General_Category value", name);
    KD_TRY(ensure_init_());
    *missing = g_.d[c].miss, *nmissing = g_.d[c].nmiss;
    *extra = g_.d[c].extra, *nextra = g_.d[c].nextra;
    return KD_OK;
}
