/* math_extract.c - finding the answer in a response, the way Math-Verify's
 * parse() finds it, with hand-written scanners instead of regexes.
 *
 * Matches come in priority groups (lower first):
 *
 *     0    "final answer is <m>. I hope"           (LaTeX <m>: environments;
 *     0/50 \boxed{}: an environment holding one,    expression <m>: numbers
 *          or the span from the first \boxed{ to    and arithmetic)
 *          the last '}' (the last box is taken)
 *     50   "final answer ... is <m>"
 *     100  "answer: ... <m>"
 *     200  "answer ... <m>"
 *     300  any environment ($..$, $$..$$, \(..\), \[..\], " [..] ",
 *          \frac{1}{2} when not inside braces or an exponent), any number,
 *          any arithmetic expression
 *
 * Environments chain: "$1$, $2$ and $3$" is one match of three groups (a
 * set). Within a group the rightmost match (greatest end, then leftmost
 * start) is tried first; the first one that parses is the answer, and the
 * text of the very first one tried is the fallback string. A LaTeX match that
 * fails to parse, and an invalid mixed number ("4 4/0"), hide the numbers
 * inside them from later expression matches.
 *
 * Every scanner is linear or bounded per position (the lazy ".{0,50}" of an
 * anchor, the backtracking of an expression run capped at 256 bytes), and
 * the environment closers are found through next-occurrence tables, so a
 * hostile text costs O(n) per priority.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rejection/math_int.h"

/* ---- text preparation ------------------------------------------------------------- */

/* Unicode that changes meaning in math, folded to ASCII/LaTeX. */
static const struct {
    const char *u, *a;
} fold_[] = {
    {"\xe2\x88\x92", "-"},        /* minus sign */
    {"\xe2\x80\x93", "-"},        /* en dash */
    {"\xc3\x97", "*"},            /* multiplication sign */
    {"\xc3\xb7", "/"},            /* division sign */
    {"\xe2\x8b\x85", "*"},        /* dot operator */
    {"\xcf\x80", "\\pi "},        /* pi */
    {"\xe2\x88\x9a", "\\sqrt"},   /* square root */
    {"\xe2\x88\x9e", "\\infty "}, /* infinity */
    {"\xe2\x89\xa4", "\\le "},    /* <= */
    {"\xe2\x89\xa5", "\\ge "},    /* >= */
    {"\xe2\x89\xa0", "\\ne "},    /* != */
    {"\xc2\xb0", "^\\circ "},     /* degree */
    {"\xc2\xa0", " "},            /* no-break space */
    {"\xe2\x80\x89", " "},        /* thin space */
    {"\xe2\x80\xaf", " "},        /* narrow no-break space */
    {"\xe2\x80\x8b", ""},         /* zero-width space */
    {"\xef\xbc\x8c", ","},        /* fullwidth comma */
};

static const char *prep_(km_ctx *x, const char *s, size_t n, size_t *outn)
{
    km_buf b;
    km_buf_init(&b, x);
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            int hit = 0;
            for (size_t k = 0; k < sizeof fold_ / sizeof fold_[0]; k++) {
                size_t l = strlen(fold_[k].u);
                if (i + l <= n && !memcmp(s + i, fold_[k].u, l)) {
                    if (i > run)
                        km_buf_put(&b, s + run, i - run);
                    km_buf_puts(&b, fold_[k].a);
                    i += l;
                    run = i;
                    hit = 1;
                    break;
                }
            }
            if (hit)
                continue;
        } else if (c == 0) {
            if (i > run)
                km_buf_put(&b, s + run, i - run);
            km_buf_putc(&b, ' ');
            run = ++i;
            continue;
        }
        i++;
    }
    if (n > run)
        km_buf_put(&b, s + run, n - run);
    *outn = b.n;
    return km_buf_str(&b);
}

/* ---- small scanners --------------------------------------------------------------- */

typedef struct T {
    const char *s;
    size_t n;
    /* next-occurrence tables (index n = none); texts are under 4 GiB */
    uint32_t *dd; /* "$$" */
    uint32_t *rb; /* "\]" */
    uint32_t *rp; /* "\)" */
    uint32_t *nl; /* '\n' */
    uint32_t *bx; /* "\boxed" or "\fbox" */
    uint32_t *cb; /* '}' */
} T;

static int sp_(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int dg_(char c) { return c >= '0' && c <= '9'; }

static int at_(const T *t, size_t i, const char *w)
{
    size_t l = strlen(w);
    return i + l <= t->n && !memcmp(t->s + i, w, l);
}

static int at_ci_(const T *t, size_t i, const char *w)
{
    size_t l = strlen(w);
    if (i + l > t->n)
        return 0;
    for (size_t k = 0; k < l; k++)
        if (tolower((unsigned char)t->s[i + k]) != w[k])
            return 0;
    return 1;
}

static int build_tables_(km_ctx *x, T *t)
{
    size_t n = t->n;
    uint32_t **tabs[] = {&t->dd, &t->rb, &t->rp, &t->nl, &t->bx, &t->cb};
    for (size_t k = 0; k < 6; k++) {
        *tabs[k] = km_alloc(x, (n + 2) * sizeof(uint32_t));
        if (!*tabs[k])
            return 0;
        (*tabs[k])[n] = (*tabs[k])[n + 1] = (uint32_t)n;
    }
    const char *s = t->s;
    for (size_t i = n; i-- > 0;) {
        uint32_t u = (uint32_t)i;
        t->dd[i] = (s[i] == '$' && i + 1 < n && s[i + 1] == '$') ? u : t->dd[i + 1];
        t->rb[i] = (s[i] == '\\' && i + 1 < n && s[i + 1] == ']') ? u : t->rb[i + 1];
        t->rp[i] = (s[i] == '\\' && i + 1 < n && s[i + 1] == ')') ? u : t->rp[i + 1];
        t->nl[i] = s[i] == '\n' ? u : t->nl[i + 1];
        t->bx[i] = (at_(t, i, "\\boxed") || at_(t, i, "\\fbox")) ? u : t->bx[i + 1];
        t->cb[i] = s[i] == '}' ? u : t->cb[i + 1];
    }
    return 1;
}

static size_t nx_(const uint32_t *tab, const T *t, size_t i) { return i >= t->n ? t->n : tab[i]; }

/* Does [a, b) hold "\boxed{" + at least one char + '}'? (the boxed
 * environment's content rule) */
static int holds_box_(const T *t, size_t a, size_t b)
{
    size_t k = nx_(t->bx, t, a);
    while (k < b) {
        size_t j = k + (t->s[k + 1] == 'b' ? 6 : 5);
        if (j < b && t->s[j] == '{') {
            size_t c = nx_(t->cb, t, j + 2);
            if (c < b)
                return 1;
        }
        k = nx_(t->bx, t, k + 1);
    }
    return 0;
}

/* percent after an environment or a number: \s*(\%|%|percent|percentage|pct) */
static size_t percent_(const T *t, size_t i, int allow_backslash)
{
    size_t j = i;
    while (j < t->n && sp_(t->s[j]))
        j++;
    if (allow_backslash && at_(t, j, "\\%"))
        return j + 2;
    if (at_(t, j, "%"))
        return j + 1;
    if (at_(t, j, "percent") || at_(t, j, "Percent"))
        return j + 7;
    if (at_(t, j, "pct") || at_(t, j, "Pct"))
        return j + 3;
    return 0;
}

/* ---- LaTeX environments ----------------------------------------------------------- */

typedef struct grp {
    size_t s, e; /* content */
    int pct;
    int last; /* the plain \boxed{...} span: take the last box */
} grp;

/* One environment at exactly p; boxed: it must hold a \boxed{}. */
static int env_at_(const T *t, size_t p, int boxed, grp *g, size_t *end)
{
    const char *s = t->s;
    size_t n = t->n;
    if (p >= n)
        return 0;
    size_t cs = 0, ce = 0, e = 0;
    int ok = 0;
    char pc = p ? s[p - 1] : 0;
    /* $$...$$ */
    if (!ok && s[p] == '$' && p + 1 < n && s[p + 1] == '$' && pc != '\\') {
        size_t j = nx_(t->dd, t, p + 2);
        if (j < n && j >= p + 3 && s[j - 1] != '\\') {
            cs = p + 2, ce = j, e = j + 2, ok = 1;
        }
    }
    /* \[...\] */
    if (!ok && s[p] == '\\' && p + 1 < n && s[p + 1] == '[' && pc != '\\') {
        size_t j = nx_(t->rb, t, p + 2);
        if (j < n && j >= p + 3 && s[j - 1] != '\\') {
            cs = p + 2, ce = j, e = j + 2, ok = 1;
        }
    }
    /* $...$ on one line */
    if (!ok && s[p] == '$' && pc != '\\' && !dg_(pc)) {
        size_t lim = nx_(t->nl, t, p + 1);
        for (size_t i = p + 1; i < lim; i++) {
            if (s[i] == '$') {
                if (i == p + 1)
                    break;
                if (s[i - 1] == '\\')
                    continue;
                cs = p + 1, ce = i, e = i + 1, ok = 1;
                break;
            }
        }
    }
    /* \(...\) on one line */
    if (!ok && s[p] == '\\' && p + 1 < n && s[p + 1] == '(' && pc != '\\') {
        size_t j = nx_(t->rp, t, p + 2);
        if (j < n && j >= p + 3 && j < nx_(t->nl, t, p + 2) && s[j - 1] != '\\') {
            cs = p + 2, ce = j, e = j + 2, ok = 1;
        }
    }
    /* " [...] " */
    if (!ok && sp_(s[p]) && p + 1 < n && s[p + 1] == '[') {
        size_t i = p + 2;
        while (i < n && s[i] != '\n' && s[i] != '[' && s[i] != ']')
            i++;
        if (i < n && s[i] == ']' && i > p + 2 && i + 1 < n && sp_(s[i + 1])) {
            cs = p + 2, ce = i, e = i + 2, ok = 1;
        }
    }
    if (ok && boxed && !holds_box_(t, cs, ce))
        ok = 0;
    /* -\frac{1}{2} with plain numbers (outside boxes only), not as the
     * argument or exponent of something larger ("\sqrt{\frac{1}{2}}") */
    if (!ok && !boxed && pc != '{' && pc != '^' && pc != '_') {
        size_t i = p;
        if (i < n && s[i] == '-')
            i++;
        if (at_(t, i, "\\frac{")) {
            size_t j = i + 6;
            int okf = 1;
            for (int k = 0; k < 2 && okf; k++) {
                if (j < n && s[j] == '-')
                    j++;
                size_t d = j;
                while (j < n && dg_(s[j]))
                    j++;
                if (j == d) {
                    okf = 0;
                    break;
                }
                if (j + 1 < n && (s[j] == '.' || s[j] == ',') && dg_(s[j + 1])) {
                    j++;
                    while (j < n && dg_(s[j]))
                        j++;
                }
                if (j >= n || s[j] != '}') {
                    okf = 0;
                    break;
                }
                j++;
                if (k == 0) {
                    if (j >= n || s[j] != '{')
                        okf = 0;
                    j++;
                }
            }
            if (okf && !(j < n && (s[j] == '}' || s[j] == '^'))) {
                cs = p, ce = j, e = j, ok = 1;
            }
        }
    }
    if (!ok)
        return 0;
    g->s = cs;
    g->e = ce;
    g->last = 0;
    g->pct = 0;
    size_t pe = percent_(t, e, 1);
    if (pe) {
        g->pct = 1;
        e = pe;
    }
    *end = e;
    return 1;
}

/* An environment and up to five more joined by ",", "and", "or". */
static int chain_at_(const T *t, size_t p, int boxed, grp *gs, int *ng, size_t *end)
{
    size_t e;
    if (!env_at_(t, p, boxed, &gs[0], &e))
        return 0;
    *ng = 1;
    for (int k = 1; k < 6; k++) {
        size_t q = e;
        while (q < t->n && sp_(t->s[q]))
            q++;
        if (boxed)
            e = q; /* the boxed pattern's \s* sits outside its optional group */
        size_t r = q;
        if (at_(t, r, ",and"))
            r += 4;
        else if (at_(t, r, "and"))
            r += 3;
        else if (at_(t, r, ",or"))
            r += 3;
        else if (at_(t, r, "or"))
            r += 2;
        else if (at_(t, r, ","))
            r += 1;
        else
            break;
        size_t w = r;
        while (w < t->n && sp_(t->s[w]))
            w++;
        size_t e2;
        if (env_at_(t, w, boxed, &gs[k], &e2) || (w > r && env_at_(t, w - 1, boxed, &gs[k], &e2))) {
            e = e2;
            *ng = k + 1;
        } else {
            break;
        }
    }
    if (boxed) {
        while (e < t->n && sp_(t->s[e]))
            e++;
    }
    *end = e;
    return 1;
}

/* ---- plain numbers and expressions ------------------------------------------------ */

static const char *const currency_[] = {"$", "\xe2\x82\xac", "\xc2\xa3", "\xc2\xa5", "\xe2\x82\xb9", "\xe2\x82\xbd",
                                        "\xe2\x82\xaa", "\xe2\x82\xa9", "\xe2\x82\xab", "\xe0\xb8\xbf", "\xe2\x82\xba",
                                        "\xe2\x82\xbf", "\xe2\x82\xb1", "\xe2\x82\xb4", "\xe2\x82\xb8", "\xe2\x82\xa6"};

typedef struct num_ {
    size_t vs, ve; /* the value's text */
    size_t end;    /* end of the whole match */
    int expr;      /* an arithmetic expression (else a number) */
    int pct;
    int bare;      /* a number glued to a LaTeX term: vs..ve is the term, read as LaTeX */
    /* number parts */
    size_t is, ie, ds, de; /* integer part, decimal part (with its separator) */
} num_;

static int ex_char_(char c)
{
    return dg_(c) || c == '.' || sp_(c) || c == '+' || c == '-' || c == '*' || c == '/' || c == '^' || c == '(' ||
           c == ')';
}
static int op_char_(char c)
{
    return c == '+' || c == '-' || c == '*' || c == '/' || c == '^' || c == '(' || c == ')';
}

/* The expression suffix at e: (**)?(.|,|:|\s|\)|$|end); *out = its end. */
static int ex_suffix_ok_(const T *t, size_t e, size_t *out)
{
    size_t n = t->n;
    size_t f = e;
    if (at_(t, f, "**"))
        f += 2;
    if (f >= n || (f + 1 == n && t->s[f] == '\n')) {
        *out = f;
        return 1;
    }
    char c = t->s[f];
    if (c == '.' || c == ',' || c == ':' || sp_(c) || c == ')' || c == '$') {
        *out = f + 1;
        return 1;
    }
    return 0;
}

/* The expression body at b: -?\(?-?\d[A]*[op][A]+\)? then a suffix (or a
 * percent sign). */
static int ex_body_(const T *t, size_t b, num_ *m)
{
    const char *s = t->s;
    size_t n = t->n, i = b;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '(')
        i++;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || !dg_(s[i]))
        return 0;
    i++;
    size_t r = i, cap = i + 256;
    while (r < n && r < cap && ex_char_(s[r]))
        r++;
    /* The regex tries the operator as far right as possible, then the end as
     * far right as possible: that is the largest end e that closes the body
     * and the last operator at or before e - 2. */
    for (size_t e = r; e >= i + 1; e--) {
        size_t f, pe;
        int close = 0, pct = 0, shut = 0;
        if (e < n && s[e] == ')' && ex_suffix_ok_(t, e + 1, &f))
            close = 1;
        else if ((pe = percent_(t, e, 0)))
            pct = 1, f = pe;
        else if (ex_suffix_ok_(t, e, &f))
            shut = 1;
        if (!close && !pct && !shut)
            continue;
        if (e < i + 1)
            break;
        for (size_t o = e - 1; o-- > i;) {
            if (!op_char_(s[o]))
                continue;
            m->vs = b, m->ve = close ? e + 1 : e, m->end = f, m->expr = 1, m->pct = pct;
            return 1;
        }
        return 0;
    }
    return 0;
}

static int alpha_(char c);

/* Is the number that ends at e only the first factor of a larger term? That
 * is, glued to a LaTeX command ("2\\sqrt{3}", "12\\pi", "2\\cdot 3"), a
 * brace, a subscript or a power other than degrees ("2^{10}", but not
 * "30^\\circ"), or to one variable letter ("4i", "2x"; not units and
 * ordinals of two letters or more, "3cm", "5th"). Taking the number alone
 * would read "The answer is 2\\sqrt{3}" as 2: a false accept against gold 2.
 * Math-Verify's number pattern takes it; we leave such a term unread. */
static int glued_(const T *t, size_t e)
{
    const char *s = t->s;
    size_t n = t->n;
    if (e >= n)
        return 0;
    char c = s[e];
    if (c == '\\') {
        if (e + 1 >= n || !((s[e + 1] >= 'a' && s[e + 1] <= 'z') || (s[e + 1] >= 'A' && s[e + 1] <= 'Z')))
            return 0; /* \% \, \; \! \$ and the like */
        static const char *const harmless[] = {"\\text", "\\mbox", "\\mathrm", "\\quad", "\\qquad", "\\hbox",
                                               "\\rm", "\\mathbf", "\\textbf", "\\ldots", "\\dots", "\\cdots",
                                               "\\hspace", "\\space", "\\displaystyle", "\\end", "\\right",
                                               "\\rangle", "\\rbrace"};
        size_t w = e + 1;
        while (w < n && ((s[w] >= 'a' && s[w] <= 'z') || (s[w] >= 'A' && s[w] <= 'Z')))
            w++;
        for (size_t k = 0; k < sizeof harmless / sizeof harmless[0]; k++)
            if (strlen(harmless[k]) == w - e && !memcmp(s + e, harmless[k], w - e))
                return 0;
        return 1;
    }
    if (c == '{' || c == '_')
        return 1;
    if (c == '^')
        return !(at_(t, e + 1, "\\circ") || at_(t, e + 1, "{\\circ}"));
    if (c == 'i' || c == 'x' || c == 'y' || c == 'z' || c == 'n') {
        char d = e + 1 < n ? s[e + 1] : ' ';
        return !((d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z') || dg_(d));
    }
    return 0;
}

/* A number at b (after the prefix and an optional currency sign). */
static int num_body_(const T *t, size_t b, num_ *m)
{
    const char *s = t->s;
    size_t n = t->n;
    if (b > 0 && dg_(s[b - 1]))
        return 0;
    size_t i = b;
    /* 1: 1,234,567.89 / 1 234 */
    {
        size_t j = i;
        if (j < n && s[j] == '-')
            j++;
        if (j < n && s[j] >= '1' && s[j] <= '9') {
            size_t d0 = j;
            for (size_t L = 3; L >= 1; L--) {
                int okl = 1;
                for (size_t k = 0; k < L; k++)
                    if (d0 + k >= n || !dg_(s[d0 + k]))
                        okl = 0;
                if (!okl)
                    continue;
                size_t g = d0 + L;
                int groups = 0;
                while (g + 3 < n + 0 && (s[g] == ' ' || s[g] == ',') && dg_(s[g + 1]) && dg_(s[g + 2]) && dg_(s[g + 3])) {
                    g += 4;
                    groups++;
                }
                if (!groups)
                    continue;
                m->is = i, m->ie = g;
                m->ds = m->de = g;
                if (g + 1 < n && s[g] == '.' && dg_(s[g + 1])) {
                    size_t h = g + 1;
                    while (h < n && dg_(s[h]))
                        h++;
                    m->ds = g, m->de = h;
                    g = h;
                }
                m->vs = i, m->ve = g;
                goto found;
            }
        }
    }
    /* 2: 123.45 / 123,45 */
    {
        size_t j = i;
        if (j < n && s[j] == '-')
            j++;
        size_t d0 = j;
        while (j < n && dg_(s[j]))
            j++;
        if (j > d0 && j + 1 < n && (s[j] == '.' || s[j] == ',') && dg_(s[j + 1])) {
            size_t h = j + 1;
            while (h < n && dg_(s[h]))
                h++;
            m->is = i, m->ie = j, m->ds = j, m->de = h;
            m->vs = i, m->ve = h;
            goto found;
        }
        /* 4: 123 (3 is .123, tried before it in the regex but disjoint) */
        if (j > d0) {
            m->is = i, m->ie = j, m->ds = m->de = j;
            m->vs = i, m->ve = j;
            goto found;
        }
    }
    /* 3: .123 */
    if (i + 1 < n && s[i] == '.' && dg_(s[i + 1])) {
        size_t h = i + 1;
        while (h < n && dg_(s[h]))
            h++;
        m->is = m->ie = i, m->ds = i, m->de = h;
        m->vs = i, m->ve = h;
        goto found;
    }
    return 0;
found:
    if (glued_(t, m->ve)) {
        /* the whole term, read as bare LaTeX: up to the end of the line or
         * sentence, a '$', ", ", ";" or a word, outside braces, at most 200 bytes */
        size_t e = m->ve, cap = b + 200 < n ? b + 200 : n;
        int depth = 0;
        while (e < cap) {
            const char c = s[e];
            if (c == '{')
                depth++;
            else if (c == '}' && --depth < 0)
                break;
            if (depth == 0) {
                if (c == '\n' || c == '$' || c == ';' || (c == ',' && e + 1 < n && sp_(s[e + 1])) ||
                    (c == '.' && (e + 1 >= n || sp_(s[e + 1]))))
                    break;
                if (sp_(c)) {
                    size_t w = e;
                    while (w < n && sp_(s[w]))
                        w++;
                    if (w + 1 < n && alpha_(s[w]) && alpha_(s[w + 1]))
                        break;
                }
            }
            e++;
        }
        if (depth != 0)
            return 0;
        while (e > m->ve && sp_(s[e - 1]))
            e--;
        m->vs = b, m->ve = e, m->end = e;
        m->expr = 0, m->pct = 0, m->bare = 1;
        return 1;
    }
    m->expr = 0;
    m->bare = 0;
    m->pct = 0;
    m->end = m->ve;
    {
        size_t pe = percent_(t, m->ve, 0);
        if (pe) {
            m->pct = 1;
            m->end = pe;
        }
    }
    return 1;
}

/* The prefix (^|\s|=)(\*\*)? at q; calls body at each possible start.
 * which: 1 expression, 2 number, 3 expression else number. */
static int anchored_at_(const T *t, size_t q, int which, num_ *m)
{
    size_t starts[2];
    int ns = 0;
    if (q == 0)
        starts[ns++] = 0;
    if (q < t->n && (sp_(t->s[q]) || t->s[q] == '='))
        starts[ns++] = q + 1;
    for (int k = 0; k < ns; k++) {
        for (int stars = 1; stars >= 0; stars--) {
            size_t b = starts[k];
            if (stars) {
                if (!at_(t, b, "**"))
                    continue;
                b += 2;
            }
            if ((which & 1) && ex_body_(t, b, m))
                return 1;
            if (which & 2) {
                if (num_body_(t, b, m))
                    return 1;
                for (size_t c = 0; c < sizeof currency_ / sizeof currency_[0]; c++)
                    if (at_(t, b, currency_[c]) && num_body_(t, b + strlen(currency_[c]), m))
                        return 1;
            }
        }
    }
    return 0;
}

/* ---- candidates ------------------------------------------------------------------- */

enum { C_LATEX, C_EXPR };

typedef struct cand {
    size_t start, end;
    int type;
    int seq;
    int ng;
    grp g[6];
    num_ m;
} cand;

typedef struct cands {
    cand *v;
    int n, cap;
} cands;

static int push_cand_(km_ctx *x, cands *c, const cand *k)
{
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 32;
        if (cap > 100000)
            return 0;
        cand *v = km_alloc(x, (size_t)cap * sizeof *v);
        if (!v)
            return 0;
        if (c->n)
            memcpy(v, c->v, (size_t)c->n * sizeof *v);
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n] = *k;
    c->v[c->n].seq = c->n;
    c->n++;
    return 1;
}

static int cand_cmp_(const void *a, const void *b)
{
    const cand *p = a, *q = b;
    if (p->end != q->end)
        return p->end > q->end ? -1 : 1;
    if (p->start != q->start)
        return p->start < q->start ? -1 : 1;
    return p->seq - q->seq;
}

/* Next case-insensitive occurrence of w at or after i. */
static size_t find_ci_(const T *t, size_t i, const char *w)
{
    size_t l = strlen(w);
    for (; i + l <= t->n; i++) {
        if (tolower((unsigned char)t->s[i]) == w[0] && at_ci_(t, i, w))
            return i;
    }
    return t->n;
}

static int no_nl_(const T *t, size_t a, size_t b) { return nx_(t->nl, t, a) >= b; }

/* EXPR_OR_NUM at q with the (?!\s*=) lookahead. */
static int expr_or_num_la_(const T *t, size_t q, num_ *m)
{
    if (!anchored_at_(t, q, 3, m))
        return 0;
    size_t e = m->end;
    while (e < t->n && sp_(t->s[e]))
        e++;
    return !(e < t->n && t->s[e] == '=');
}

/* Latex: collect the matches of one priority. */
static void latex_prio_(km_ctx *x, const T *t, int prio, int boxed_prio, cands *out)
{
    const char *s = t->s;
    size_t n = t->n;
    cand c;
    if (prio == boxed_prio) {
        for (size_t p = 0; p < n;) {
            memset(&c, 0, sizeof c);
            size_t e;
            size_t b = nx_(t->bx, t, p);
            /* an environment holding a box starts at or before its box; scan
             * only where one could begin */
            if (b >= n)
                break;
            int hit = 0;
            for (size_t q = p; q <= b && q < n; q++) {
                char ch = s[q];
                if (ch != '$' && ch != '\\' && !sp_(ch))
                    continue;
                if (chain_at_(t, q, 1, c.g, &c.ng, &e)) {
                    c.type = C_LATEX;
                    c.start = q;
                    c.end = e;
                    push_cand_(x, out, &c);
                    p = e > q ? e : q + 1;
                    hit = 1;
                    break;
                }
                if (!km_step(x, 0))
                    return;
            }
            if (!hit)
                p = b + 1;
        }
        /* \boxed{ ... last '}' */
        size_t b = n;
        for (size_t i = nx_(t->bx, t, 0); i < n; i = nx_(t->bx, t, i + 1))
            if (at_(t, i, "\\boxed{") || at_(t, i, "\\fbox{")) {
                b = i;
                break;
            }
        if (b < n) {
            size_t last = n;
            for (size_t i = n; i-- > b + 7;)
                if (s[i] == '}') {
                    last = i;
                    break;
                }
            if (last < n && last >= b + (s[b + 1] == 'b' ? 8 : 7)) {
                memset(&c, 0, sizeof c);
                c.type = C_LATEX;
                c.start = b;
                c.end = last + 1;
                c.ng = 1;
                c.g[0].s = b;
                c.g[0].e = last + 1;
                c.g[0].last = 1;
                push_cand_(x, out, &c);
            }
        }
    }
    if (prio == 300) {
        for (size_t p = 0; p < n;) {
            char ch = s[p];
            size_t e;
            memset(&c, 0, sizeof c);
            if ((ch == '$' || ch == '\\' || sp_(ch) || ch == '-') && chain_at_(t, p, 0, c.g, &c.ng, &e)) {
                c.type = C_LATEX;
                c.start = p;
                c.end = e;
                push_cand_(x, out, &c);
                p = e > p ? e : p + 1;
            } else {
                p++;
            }
        }
    }
    if (prio == 100 || prio == 200) {
        for (size_t p = 0; p < n;) {
            size_t a = find_ci_(t, p, "answer");
            if (a >= n)
                break;
            size_t base = a + 6;
            int found = 0;
            if (prio == 100 && !(base < n && s[base] == ':')) {
                p = a + 1;
                continue;
            }
            if (prio == 100)
                base++;
            for (size_t k = 0; k <= 50 && base + k <= n; k++) {
                size_t e;
                memset(&c, 0, sizeof c);
                if (chain_at_(t, base + k, 0, c.g, &c.ng, &e)) {
                    c.type = C_LATEX;
                    c.start = a;
                    c.end = e;
                    push_cand_(x, out, &c);
                    p = e;
                    found = 1;
                    break;
                }
            }
            if (!found)
                p = a + 1;
        }
    }
    if (prio == 0 || prio == 50) {
        for (size_t p = 0; p < n;) {
            size_t a = find_ci_(t, p, "final answer");
            if (a >= n)
                break;
            int found = 0;
            size_t e;
            if (prio == 0) {
                size_t q = a + 12;
                if (at_ci_(t, q, " is")) {
                    q += 3;
                    if (q < n && s[q] == ':')
                        q++;
                    while (q < n && sp_(s[q]))
                        q++;
                    memset(&c, 0, sizeof c);
                    if (chain_at_(t, q, 0, c.g, &c.ng, &e)) {
                        size_t r = e;
                        if (r < n && s[r] == '.')
                            r++;
                        if (r < n && sp_(s[r]) && at_(t, r + 1, "I hope"))
                            r++;
                        if (at_(t, r, "I hope")) {
                            c.type = C_LATEX;
                            c.start = a;
                            c.end = r + 6;
                            push_cand_(x, out, &c);
                            p = r + 6;
                            found = 1;
                        }
                    }
                }
            } else {
                for (size_t k = 0; k <= 100 && !found; k++) {
                    size_t q = a + 12 + k;
                    if (q >= n || !sp_(s[q]))
                        continue;
                    size_t w = q;
                    while (w < n && sp_(s[w]))
                        w++;
                    if (!at_(t, w, "is"))
                        continue;
                    w += 2;
                    if (w < n && s[w] == ':')
                        w++;
                    while (w < n && sp_(s[w]))
                        w++;
                    memset(&c, 0, sizeof c);
                    if (chain_at_(t, w, 0, c.g, &c.ng, &e) ||
                        (w > 0 && sp_(s[w - 1]) && chain_at_(t, w - 1, 0, c.g, &c.ng, &e))) {
                        c.type = C_LATEX;
                        c.start = a;
                        c.end = e;
                        push_cand_(x, out, &c);
                        p = e;
                        found = 1;
                    }
                }
            }
            if (!found)
                p = a + 1;
        }
    }
}

/* Expressions: collect the matches of one priority. */
static void expr_prio_(km_ctx *x, const T *t, int prio, cands *out)
{
    const char *s = t->s;
    size_t n = t->n;
    cand c;
    if (prio == 300) {
        for (int which = 1; which <= 2; which++) {
            for (size_t p = 0; p < n;) {
                memset(&c, 0, sizeof c);
                if ((p == 0 || sp_(s[p]) || s[p] == '=') && anchored_at_(t, p, which, &c.m)) {
                    c.type = C_EXPR;
                    c.start = p;
                    c.end = c.m.end;
                    push_cand_(x, out, &c);
                    p = c.end > p ? c.end : p + 1;
                } else {
                    p++;
                }
            }
        }
    }
    if (prio == 100 || prio == 200) {
        for (size_t p = 0; p < n;) {
            size_t a = find_ci_(t, p, "answer");
            if (a >= n)
                break;
            size_t base = a + 6;
            int found = 0;
            if (prio == 100) {
                if (!(base < n && s[base] == ':')) {
                    p = a + 1;
                    continue;
                }
                base++;
            }
            memset(&c, 0, sizeof c);
            /* .{0,100}=\s* : the last '=' first */
            size_t lim = base + 100 < n ? base + 100 : n;
            size_t nl = nx_(t->nl, t, base);
            if (nl < lim)
                lim = nl;
            for (size_t q = lim + 1; q-- > base && !found;) {
                if (q >= n || s[q] != '=')
                    continue;
                size_t w = q + 1;
                while (w < n && sp_(s[w]))
                    w++;
                if ((w < n && s[w] == '=' && expr_or_num_la_(t, w, &c.m)) ||
                    (w > q + 1 && expr_or_num_la_(t, w - 1, &c.m)))
                    found = 1;
            }
            /* .{0,50}? */
            for (size_t k = 0; k <= 50 && !found && base + k <= n; k++) {
                if (k > 0 && s[base + k - 1] == '\n')
                    break;
                if (expr_or_num_la_(t, base + k, &c.m))
                    found = 1;
            }
            if (found) {
                c.type = C_EXPR;
                c.start = a;
                c.end = c.m.end;
                push_cand_(x, out, &c);
                p = c.end > a ? c.end : a + 1;
            } else {
                p = a + 1;
            }
        }
    }
    if (prio == 0 || prio == 50) {
        for (size_t p = 0; p < n;) {
            size_t a = find_ci_(t, p, "final answer");
            if (a >= n)
                break;
            int found = 0;
            memset(&c, 0, sizeof c);
            if (prio == 0) {
                size_t q = a + 12;
                if (at_ci_(t, q, " is")) {
                    q += 3;
                    if (q < n && s[q] == ':')
                        q++;
                    size_t w = q;
                    while (w < n && sp_(s[w]))
                        w++;
                    for (size_t st = w + 1; st-- > q && !found;) {
                        if (!anchored_at_(t, st, 3, &c.m))
                            continue;
                        size_t r = c.m.end;
                        if (r < n && s[r] == '.')
                            r++;
                        if (r < n && sp_(s[r]) && at_(t, r + 1, "I hope"))
                            r++;
                        if (at_(t, r, "I hope")) {
                            c.type = C_EXPR;
                            c.start = a;
                            c.end = r + 6;
                            push_cand_(x, out, &c);
                            p = r + 6;
                            found = 1;
                        }
                    }
                }
            } else {
                for (size_t k = 0; k <= 100 && !found; k++) {
                    size_t q = a + 12 + k;
                    if (q >= n || !sp_(s[q]) || !no_nl_(t, a, q))
                        continue;
                    size_t w = q;
                    while (w < n && sp_(s[w]))
                        w++;
                    if (!at_(t, w, "is"))
                        continue;
                    w += 2;
                    if (w < n && s[w] == ':')
                        w++;
                    if (anchored_at_(t, w, 3, &c.m)) {
                        c.type = C_EXPR;
                        c.start = a;
                        c.end = c.m.end;
                        push_cand_(x, out, &c);
                        p = c.end;
                        found = 1;
                    }
                }
            }
            if (!found)
                p = a + 1;
        }
    }
}

/* ---- LaTeX normalisation ---------------------------------------------------------- */

static int alpha_(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* "\text{" / "\mbox{" / "\textbf{" ... at i: returns the index after '{' */
static size_t text_cmd_(const char *s, size_t n, size_t i)
{
    static const char *const cmds[] = {"\\text{", "\\mbox{", "\\textbf{", "\\textit{", "\\textrm{", "\\textnormal{",
                                       "\\mathrm{", "\\textsf{", "\\texttt{"};
    for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++) {
        size_t l = strlen(cmds[k]);
        if (i + l <= n && !memcmp(s + i, cmds[k], l))
            return i + l;
    }
    return 0;
}

/* Is s[a, b), the text between two boxes, only what separates the items of
 * one list? That is whitespace, ",;.", the words "and"/"or", math
 * delimiters ($ \( \) \[ \]), spacing (\quad, \qquad, \, \; ~ \\ &), a
 * \text{} holding only these, and "name =" labels of at most three letters
 * or one command, with a subscript ("x_1 = \boxed{1}, x_2 = \boxed{2}"),
 * after up to two unit words that follow the box ("\boxed{1} papers and
 * \boxed{2} bins"). Anything else, a word like "Wait", means the later box
 * corrects the earlier one. */
static int list_gap_(const char *s, size_t a, size_t b, int in_text)
{
    size_t i = a;
    if (!in_text) {
        /* up to two unit words right after the box, then a separator */
        size_t j = i;
        int words = 0;
        for (;;) {
            while (j < b && sp_(s[j]))
                j++;
            size_t w = j;
            while (j < b && alpha_(s[j]))
                j++;
            int sep = (j - w == 3 && !memcmp(s + w, "and", 3)) || (j - w == 2 && !memcmp(s + w, "or", 2));
            if (j == w || sep || j - w > 12 || words == 2 || (j < b && !sp_(s[j]) && s[j] != ',' && s[j] != ';')) {
                j = w;
                break;
            }
            words++;
        }
        if (words) {
            int sep = j < b && (s[j] == ',' || s[j] == ';');
            if (!sep && j + 3 <= b && !memcmp(s + j, "and", 3) && (j + 3 == b || !alpha_(s[j + 3])))
                sep = 1;
            if (!sep && j + 2 <= b && !memcmp(s + j, "or", 2) && (j + 2 == b || !alpha_(s[j + 2])))
                sep = 1;
            if (!sep)
                return 0;
            i = j;
        }
    }
    while (i < b) {
        char c = s[i];
        if (sp_(c) || c == ',' || c == ';' || c == '.' || c == '$' || c == '~' || c == '&') {
            i++;
            continue;
        }
        size_t j = i; /* a label's name is [i, j) */
        if (c == '\\' && i + 1 < b) {
            char d = s[i + 1];
            if (d && strchr("()[]\\,;:! ", d)) {
                i += 2;
                continue;
            }
            size_t tc = text_cmd_(s, b, i);
            if (tc && !in_text) {
                size_t k = tc;
                while (k < b && s[k] != '}' && s[k] != '{')
                    k++;
                if (k >= b || s[k] != '}' || !list_gap_(s, tc, k, 1))
                    return 0;
                i = k + 1;
                continue;
            }
            j = i + 1;
            while (j < b && alpha_(s[j]))
                j++;
            if ((j - i == 5 && !memcmp(s + i, "\\quad", 5)) || (j - i == 6 && !memcmp(s + i, "\\qquad", 6))) {
                i = j;
                continue;
            }
            if (j == i + 1)
                return 0;
        } else if (alpha_(c)) {
            while (j < b && alpha_(s[j]))
                j++;
            if ((j - i == 3 && !memcmp(s + i, "and", 3)) || (j - i == 2 && !memcmp(s + i, "or", 2))) {
                i = j;
                continue;
            }
            if (j - i > 3 || in_text)
                return 0;
        } else {
            return 0;
        }
        /* a label: name, an optional subscript, '=' */
        if (in_text)
            return 0;
        if (j < b && s[j] == '_') {
            j++;
            if (j < b && s[j] == '{') {
                size_t k = j + 1;
                while (k < b && k < j + 16 && s[k] != '}' && s[k] != '{')
                    k++;
                if (k >= b || s[k] != '}')
                    return 0;
                j = k + 1;
            } else if (j < b && (alpha_(s[j]) || dg_(s[j]))) {
                j++;
            } else {
                return 0;
            }
        }
        while (j < b && (sp_(s[j]) || s[j] == '&'))
            j++;
        if (j >= b || s[j] != '=')
            return 0;
        i = j + 1;
    }
    return 1;
}

/* The contents of \boxed{}s in s, right to left. mode 1: all, joined by
 * ','; mode 2: the last, with the boxes before it that form one list with it
 * (list_gap_: "\boxed{1}, \boxed{2} and \boxed{3}"), not those a correction
 * follows ("\boxed{3}. Wait, ... \boxed{5}" is 5). Writes the result into b
 * and returns 1, or 0 when s holds no box. */
static int boxed_(const char *s, size_t n, int mode, km_buf *b)
{
    struct {
        size_t s, e;
    } found[64];
    int nf = 0;
    size_t cur = n, maxp = n;
    size_t last_start = (size_t)-1;
    int unclosed = 0;
    size_t unclosed_from = 0;
    while (nf < 64) {
        /* rightmost \boxed or \fbox before cur */
        size_t k = (size_t)-1;
        for (size_t i = cur; i-- > 0;) {
            if (s[i] == '\\' && ((i + 6 <= n && !memcmp(s + i, "\\boxed", 6)) || (i + 5 <= n && !memcmp(s + i, "\\fbox", 5)))) {
                k = i;
                break;
            }
        }
        if (k == (size_t)-1)
            break;
        size_t j = k + (s[k + 1] == 'b' ? 6 : 5);
        while (j < maxp && sp_(s[j]))
            j++;
        if (j >= maxp)
            break;
        if (s[j] != '{') {
            if (nf == 0) {
                unclosed = 1;
                unclosed_from = j;
            }
            break;
        }
        int depth = 1;
        size_t i = j;
        while (i + 1 < maxp && depth) {
            i++;
            if (s[i] == '{')
                depth++;
            else if (s[i] == '}')
                depth--;
        }
        if (depth) {
            if (nf == 0) {
                unclosed = 1;
                unclosed_from = j;
            }
            break;
        }
        size_t cs = j + 1, ce = i;
        while (cs < ce && sp_(s[cs]))
            cs++;
        while (ce > cs && sp_(s[ce - 1]))
            ce--;
        if (mode == 2 && last_start != (size_t)-1 && nf && !list_gap_(s, i + 1, last_start, 0))
            break;
        if (!nf || (found[nf - 1].e - found[nf - 1].s) != ce - cs || memcmp(s + found[nf - 1].s, s + cs, ce - cs)) {
            found[nf].s = cs;
            found[nf].e = ce;
            nf++;
        }
        last_start = k;
        maxp = k;
        cur = k;
    }
    if (!nf) {
        if (unclosed) {
            km_buf_put(b, s + unclosed_from, n - unclosed_from);
            return 1;
        }
        return 0;
    }
    for (int k = nf - 1; k >= 0; k--) {
        km_buf_put(b, s + found[k].s, found[k].e - found[k].s);
        if (k)
            km_buf_putc(b, ',');
    }
    return 1;
}

/* Trailing unit words stripped from an answer ("5 cm", "3 dollars"). */
static const char *const units_[] = {
    "cm", "mm", "km", "kg", "mg", "lb", "lbs", "oz", "ft", "feet", "foot", "inch", "inches", "yard", "yards",
    "mile", "miles", "meter", "meters", "metre", "metres", "mph", "kmh", "kph", "sec", "second", "seconds",
    "minute", "minutes", "min", "mins", "hour", "hours", "hr", "hrs", "day", "days", "week", "weeks", "month",
    "months", "year", "years", "yr", "yrs", "dollar", "dollars", "cent", "cents", "degree", "degrees", "deg",
    "unit", "units", "sq", "square", "cubic", "liter", "liters", "litre", "litres", "ml", "gallon", "gallons",
    "point", "points", "people", "students", "student", "apples", "ways", "yuan", "euros", "euro", "rupees",
    "rs", "grams", "gram", "kilograms", "pounds", "pound", "ounces", "acres", "acre", "hectares", "times",
    "m", "g", "s", "cm^2", "m^2", "cm^3", "m^3", "km^2",
};

static size_t strip_units_(const char *s, size_t n)
{
    for (int round = 0; round < 2; round++) {
        size_t e = n;
        while (e && sp_(s[e - 1]))
            e--;
        int done = 0;
        for (size_t k = 0; k < sizeof units_ / sizeof units_[0] && !done; k++) {
            size_t l = strlen(units_[k]);
            if (e < l + 1 || memcmp(s + e - l, units_[k], l))
                continue;
            size_t b = e - l;
            if (alpha_(s[b - 1]) || s[b - 1] == '\\')
                continue;
            size_t c = b;
            while (c && sp_(s[c - 1]))
                c--;
            if (!c)
                continue;
            char pc = s[c - 1];
            int single = l == 1;
            if (single && c == b)
                continue; /* "2m" may be a product; "2 m" is a unit */
            if (dg_(pc) || pc == '}' || c < b) {
                n = c;
                done = 1;
            }
        }
        if (!done)
            break;
    }
    return n;
}

const char *km_norm_latex(km_ctx *x, const char *s0, size_t n0, int boxed_mode)
{
    km_buf bx;
    km_buf_init(&bx, x);
    const char *s = s0;
    size_t n = n0;
    if (boxed_mode && boxed_(s0, n0, boxed_mode, &bx)) {
        s = km_buf_str(&bx);
        n = bx.n;
    }
    int matrix = 0;
    for (size_t i = 0; i + 6 <= n && !matrix; i++)
        if (!memcmp(s + i, "matrix", 6) || !memcmp(s + i, "array", 5))
            matrix = 1;
    km_buf b;
    km_buf_init(&b, x);
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '\\' && i + 1 < n) {
            char d = s[i + 1];
            if (d == '\\' && !matrix && i + 2 < n && alpha_(s[i + 2])) {
                i++; /* "\\frac" written with a doubled backslash */
                continue;
            }
            if (d == '$') {
                i += 2;
                continue;
            }
            if (d == '!') {
                i += 2;
                while (i < n && sp_(s[i]))
                    i++;
                continue;
            }
            if (d == ' ' || d == ',' || d == ';' || d == ':') {
                /* spacing; "1\,000" is a thousands separator */
                if (d != ':' && b.n && dg_(b.p[b.n - 1]) && i + 5 <= n && dg_(s[i + 2]) && dg_(s[i + 3]) &&
                    dg_(s[i + 4]) && (i + 5 == n || !dg_(s[i + 5]))) {
                    i += 2;
                    continue;
                }
                km_buf_putc(&b, ' ');
                i += 2;
                continue;
            }
            if (i + 12 <= n && !memcmp(s + i, "\\mathrm{th}", 11)) {
                i += 11;
                continue;
            }
            if (i + 6 <= n && !memcmp(s + i, "\\ldots", 6)) {
                /* ",\ldots" -> " " */
                while (b.n && sp_(b.p[b.n - 1]))
                    b.n--;
                if (b.n && b.p[b.n - 1] == ',')
                    b.n--;
                km_buf_putc(&b, ' ');
                i += 6;
                continue;
            }
            size_t tc = text_cmd_(s, n, i);
            if (tc) {
                /* \text{ and } / \text{or} -> ","; \text{percent} -> \%; \text{} -> nothing */
                size_t j = tc, k = tc;
                while (k < n && s[k] != '}' && s[k] != '{')
                    k++;
                if (k < n && s[k] == '}') {
                    size_t a = j, z = k;
                    while (a < z && sp_(s[a]))
                        a++;
                    while (z > a && sp_(s[z - 1]))
                        z--;
                    if ((z - a == 3 && !memcmp(s + a, "and", 3)) || (z - a == 2 && !memcmp(s + a, "or", 2))) {
                        while (b.n && sp_(b.p[b.n - 1]))
                            b.n--;
                        if (!(b.n && b.p[b.n - 1] == ','))
                            km_buf_putc(&b, ',');
                        i = k + 1;
                        continue;
                    }
                    if ((z - a == 7 && !memcmp(s + a, "percent", 7)) || (z - a == 10 && !memcmp(s + a, "percentage", 10)) ||
                        (z - a == 3 && !memcmp(s + a, "pct", 3))) {
                        km_buf_puts(&b, "\\%");
                        i = k + 1;
                        continue;
                    }
                    if (z == a) {
                        i = k + 1;
                        continue;
                    }
                }
            }
            /* copy a command whole, so that words inside it are not rewritten */
            if (alpha_(d)) {
                size_t j = i + 1;
                while (j < n && alpha_(s[j]))
                    j++;
                km_buf_put(&b, s + i, j - i);
                i = j;
                continue;
            }
            km_buf_put(&b, s + i, 2);
            i += 2;
            continue;
        }
        if (c == '$' || c == '"') {
            i++;
            continue;
        }
        if (c == '\n' || c == '\t' || c == '\r') {
            km_buf_putc(&b, ' ');
            i++;
            continue;
        }
        if (c == '{' && i + 1 < n) {
            /* {,} -> , ; {.5 -> {0.5 */
            size_t j = i + 1;
            while (j < n && sp_(s[j]))
                j++;
            if (j < n && s[j] == ',') {
                size_t k = j + 1;
                while (k < n && sp_(s[k]))
                    k++;
                if (k < n && s[k] == '}') {
                    while (b.n && sp_(b.p[b.n - 1]))
                        b.n--;
                    km_buf_putc(&b, ',');
                    i = k + 1;
                    continue;
                }
            }
            if (s[i + 1] == '.' && i + 2 < n && dg_(s[i + 2])) {
                km_buf_puts(&b, "{0");
                i++;
                continue;
            }
        }
        if (sp_(c) && i + 2 < n && s[i + 1] == '.' && dg_(s[i + 2])) {
            km_buf_puts(&b, " 0");
            i++;
            continue;
        }
        if (alpha_(c) && (i == 0 || !alpha_(s[i - 1]))) {
            /* words: and/or -> ",", percent words -> \%, inf(inity) -> \infty */
            size_t j = i;
            while (j < n && alpha_(s[j]))
                j++;
            size_t l = j - i;
            int prev_bs = i > 0 && s[i - 1] == '\\';
            if (!prev_bs && ((l == 3 && !memcmp(s + i, "and", 3)) || (l == 2 && !memcmp(s + i, "or", 2)))) {
                while (b.n && sp_(b.p[b.n - 1]))
                    b.n--;
                if (!(b.n && b.p[b.n - 1] == ','))
                    km_buf_putc(&b, ',');
                i = j;
                continue;
            }
            if (!prev_bs && ((l == 7 && !memcmp(s + i, "percent", 7)) || (l == 10 && !memcmp(s + i, "percentage", 10)) ||
                             (l == 3 && !memcmp(s + i, "pct", 3)))) {
                while (b.n && sp_(b.p[b.n - 1]))
                    b.n--;
                km_buf_puts(&b, "\\%");
                i = j;
                continue;
            }
            if (!prev_bs && ((l == 8 && !memcmp(s + i, "infinity", 8)) || (l == 3 && !memcmp(s + i, "inf", 3)))) {
                km_buf_puts(&b, "\\infty ");
                i = j;
                continue;
            }
            if (!prev_bs && l == 4 && !memcmp(s + i, "sqrt", 4)) {
                km_buf_puts(&b, "\\sqrt");
                i = j;
                continue;
            }
            km_buf_put(&b, s + i, l);
            i = j;
            continue;
        }
        if (c == '~' && i + 1 < n && s[i + 1] == '=') {
            km_buf_puts(&b, "\\approx ");
            i += 2;
            continue;
        }
        km_buf_putc(&b, c);
        i++;
    }
    const char *r = km_buf_str(&b);
    size_t m = b.n;
    /* trailing punctuation, units, degrees */
    for (int round = 0; round < 3; round++) {
        size_t m0 = m;
        while (m && sp_(r[m - 1]))
            m--;
        if (m && (r[m - 1] == '.' || r[m - 1] == ',' || r[m - 1] == ';') && !(m >= 2 && r[m - 2] == '.'))
            m--;
        while (m && sp_(r[m - 1]))
            m--;
        /* a final \text{...} (a unit), with an optional ^2 */
        size_t e = m;
        if (e >= 2 && r[e - 2] == '^' && dg_(r[e - 1]))
            e -= 2;
        else if (e >= 4 && !memcmp(r + e - 4, "{^", 2) && dg_(r[e - 2]) && r[e - 1] == '}')
            e -= 4;
        if (e && r[e - 1] == '}') {
            /* find the start of the group that closes here */
            int depth = 0;
            size_t k = e;
            while (k-- > 0) {
                if (r[k] == '}')
                    depth++;
                else if (r[k] == '{' && --depth == 0)
                    break;
            }
            if (depth == 0 && k < e) {
                size_t c0 = k;
                while (c0 && alpha_(r[c0 - 1]))
                    c0--;
                if (c0 && r[c0 - 1] == '\\' && text_cmd_(r, m, c0 - 1) == k + 1) {
                    size_t keep = c0 - 1;
                    size_t z = keep;
                    while (z && sp_(r[z - 1]))
                        z--;
                    if (z > 0)
                        m = keep;
                }
            }
        }
        m = strip_units_(r, m);
        if (m >= 5 && !memcmp(r + m - 5, "\\circ", 5)) {
            size_t z = m - 5;
            if (z && r[z - 1] == '^')
                m = z - 1;
            else if (z >= 2 && r[z - 1] == '{' && r[z - 2] == '^')
                m = z - 2;
        } else if (m >= 6 && !memcmp(r + m - 6, "\\circ}", 6) && m >= 8 && !memcmp(r + m - 8, "^{", 2)) {
            m -= 8;
        }
        if (m == m0)
            break;
    }
    size_t a = 0;
    while (a < m && sp_(r[a]))
        a++;
    while (m > a && sp_(r[m - 1]))
        m--;
    return km_strndup(x, r + a, m - a);
}

/* ---- parsing a candidate ---------------------------------------------------------- */

/* The last "=" part of an equation chain, when there are two or more "=". */
static km_node *parse_latex_(km_ctx *x, const char *s)
{
    size_t n = strlen(s);
    km_node *t = km_parse(x, s, n, 0);
    if (t || x->fail || x->deep)
        return t;
    if (memchr(s, ',', n) || memchr(s, ';', n))
        return NULL;
    size_t last = n;
    int parts = 1;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '=' && (i == 0 || (s[i - 1] != '\\' && s[i - 1] != '<' && s[i - 1] != '!' && s[i - 1] != '>'))) {
            parts++;
            last = i;
        }
    if (parts > 2)
        return km_parse(x, s + last + 1, n - last - 1, 0);
    return NULL;
}

static km_node *flatten_set_(km_ctx *x, km_node **v, int n)
{
    int total = 0;
    for (int i = 0; i < n; i++)
        total += v[i]->kind == KN_SET ? v[i]->n : 1;
    km_node *s = km_node_new(x, KN_SET, total);
    if (!s)
        return NULL;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (v[i]->kind == KN_SET)
            for (int j = 0; j < v[i]->n; j++)
                s->kids[k++] = v[i]->kids[j];
        else
            s->kids[k++] = v[i];
    }
    return s;
}

static km_node *pct_(km_ctx *x, km_node *t)
{
    km_node *p = km_node_new(x, KN_PCT, 1);
    if (p)
        p->kids[0] = t;
    return p;
}

/* A plain-text mixed number "W N/D" (W may have space-separated
 * thousands): 1 valid (value in *out), -1 shaped like one but invalid
 * (N >= D or D = 0), 0 not one. */
static int mixed_(km_ctx *x, const char *s, size_t n, km_node **out)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    size_t w0 = i;
    while (i < n && dg_(s[i]))
        i++;
    if (i == w0)
        return 0;
    /* " ddd" groups belong to W when another " N/D" follows them ("1 000 4/9") */
    while (i + 4 < n && s[i] == ' ' && dg_(s[i + 1]) && dg_(s[i + 2]) && dg_(s[i + 3]) && s[i + 4] == ' ')
        i += 4;
    size_t we = i;
    if (i >= n || s[i] != ' ')
        return 0;
    i++;
    size_t n0 = i;
    while (i < n && dg_(s[i]))
        i++;
    if (i == n0 || i >= n || s[i] != '/')
        return 0;
    size_t ne = i++;
    size_t d0 = i;
    while (i < n && dg_(s[i]))
        i++;
    if (i == d0 || i != n)
        return 0;
    /* numbers */
    km_buf w;
    km_buf_init(&w, x);
    for (size_t k = w0; k < we; k++)
        if (s[k] != ' ')
            km_buf_putc(&w, s[k]);
    const char *ws = km_buf_str(&w);
    const char *ns = km_strndup(x, s + n0, ne - n0), *ds = km_strndup(x, s + d0, n - d0);
    if (!ws || !ns || !ds)
        return 0;
    /* validity: 0 <= N < D */
    const char *a = ns, *b = ds;
    while (*a == '0' && a[1])
        a++;
    while (*b == '0' && b[1])
        b++;
    size_t la = strlen(a), lb = strlen(b);
    int d_zero = !strcmp(b, "0");
    int lt = la < lb || (la == lb && strcmp(a, b) < 0);
    if (d_zero || !lt)
        return -1;
    km_node *f = km_node2(x, KN_DIV, km_num(x, ns, 0), km_num(x, ds, 0));
    km_node *v = km_node2(x, KN_ADD, km_num(x, ws, 0), f);
    if (v && neg) {
        km_node *g = km_node_new(x, KN_NEG, 1);
        if (g)
            g->kids[0] = v;
        v = g;
    }
    *out = v;
    return v ? 1 : 0;
}

typedef struct span_ {
    size_t s, e;
} span_;

/* Parse one candidate: *tree (or NULL) and its fallback text. Returns -1 for
 * an invalid mixed number. */
static int parse_cand_(km_ctx *x, const T *t, cand *c, km_node **tree, const char **fb)
{
    *tree = NULL;
    *fb = NULL;
    if (c->type == C_EXPR) {
        num_ *m = &c->m;
        if (m->bare) {
            const char *norm = km_norm_latex(x, t->s + m->vs, m->ve - m->vs, 1);
            *fb = norm;
            *tree = norm && norm[0] ? parse_latex_(x, norm) : NULL;
            return 0;
        }
        if (!m->expr) {
            km_buf b;
            km_buf_init(&b, x);
            size_t z = m->is;
            if (z < m->ie && t->s[z] == '-') {
                km_buf_putc(&b, '-');
                z++;
            }
            size_t mark = b.n;
            for (size_t k = z; k < m->ie; k++) {
                char ch = t->s[k];
                if (ch == ',' || ch == ' ')
                    continue;
                if (ch == '0' && b.n == mark)
                    continue;
                km_buf_putc(&b, ch);
            }
            if (b.n == mark)
                km_buf_putc(&b, '0');
            if (m->de > m->ds) {
                km_buf_putc(&b, '.');
                km_buf_put(&b, t->s + m->ds + 1, m->de - m->ds - 1);
            }
            const char *str = km_buf_str(&b);
            *fb = str;
            const char *digits = str[0] == '-' ? str + 1 : str;
            km_node *v = km_num(x, digits, m->de > m->ds);
            if (v && str[0] == '-') {
                km_node *g = km_node_new(x, KN_NEG, 1);
                if (g)
                    g->kids[0] = v;
                v = g;
            }
            if (v && m->pct)
                v = pct_(x, v);
            *tree = v;
            return 0;
        }
        const char *es = km_strndup(x, t->s + m->vs, m->ve - m->vs);
        if (!es)
            return 0;
        size_t en = m->ve - m->vs;
        while (en && (sp_(es[en - 1]) || (es[en - 1] == '.' && en >= 2 && dg_(es[en - 2]))))
            en--;
        *fb = km_strndup(x, es, en);
        km_node *v = NULL;
        int mx = mixed_(x, es, en, &v);
        if (mx < 0)
            return -1;
        if (mx == 0)
            v = km_parse(x, es, en, 1);
        if (v && m->pct)
            v = pct_(x, v);
        *tree = v;
        return 0;
    }
    /* LaTeX groups */
    km_node *vs[6];
    const char *strs[6];
    int ok = 1;
    for (int k = 0; k < c->ng; k++) {
        grp *g = &c->g[k];
        const char *norm = km_norm_latex(x, t->s + g->s, g->e - g->s, g->last ? 2 : 1);
        strs[k] = norm;
        vs[k] = norm && norm[0] ? parse_latex_(x, norm) : NULL;
        if (vs[k] && g->pct)
            vs[k] = pct_(x, vs[k]);
        if (!vs[k])
            ok = 0;
    }
    if (c->ng > 1 && ok) {
        km_buf b;
        km_buf_init(&b, x);
        for (int k = 0; k < c->ng; k++) {
            if (k)
                km_buf_puts(&b, " and ");
            km_buf_puts(&b, strs[k]);
        }
        *fb = km_buf_str(&b);
        *tree = flatten_set_(x, vs, c->ng);
        return 0;
    }
    *fb = strs[0];
    *tree = vs[0];
    return 0;
}

/* The last \boxed{ in text: 1 closed with content, 0 none, -1 unclosed,
 * -2 empty. */
static int last_box_state_(const char *s, size_t n)
{
    size_t k = (size_t)-1;
    for (size_t i = n; i-- > 0;)
        if (s[i] == '\\' && ((i + 6 <= n && !memcmp(s + i, "\\boxed", 6)) || (i + 5 <= n && !memcmp(s + i, "\\fbox", 5)))) {
            k = i;
            break;
        }
    if (k == (size_t)-1)
        return 0;
    size_t j = k + (s[k + 1] == 'b' ? 6 : 5);
    while (j < n && sp_(s[j]))
        j++;
    if (j >= n || s[j] != '{')
        return j >= n ? -1 : 0;
    int depth = 0, content = 0;
    for (size_t i = j; i < n; i++) {
        if (s[i] == '{')
            depth++;
        else if (s[i] == '}') {
            if (--depth == 0)
                return content ? 1 : -2;
        } else if (!sp_(s[i])) {
            content = 1;
        }
    }
    return -1;
}

/* Remember where the answer of candidate c (of priority prio) lies. */
static void span_of_(const T *t, const cand *c, int prio, km_answer *out)
{
    out->text = t->s;
    out->text_n = t->n;
    out->ms = c->start;
    out->me = c->end;
    if (c->type == C_EXPR) {
        out->vs = c->m.vs;
        out->ve = c->m.ve;
    } else {
        out->vs = c->g[0].s;
        out->ve = c->g[c->ng > 0 ? c->ng - 1 : 0].e;
    }
    if (out->ve < out->vs || out->ve > t->n)
        out->ve = out->vs;
    out->have_span = 1;
    out->marked = prio < 300;
}

void km_extract(km_ctx *x, const char *text, size_t len, km_answer *out)
{
    memset(out, 0, sizeof *out);
    const kd_math_cfg *cfg = x->cfg;
    size_t n;
    const char *s = prep_(x, text, len, &n);
    if (x->fail)
        return;
    T t = {s, n, 0, 0, 0, 0, 0, 0};
    if (!build_tables_(x, &t))
        return;
    x->deep = 0;
    int latex = cfg->extract != KD_MATH_EXTRACT_EXPR, expr = cfg->extract != KD_MATH_EXTRACT_LATEX;
    int boxed_prio = cfg->boxed_first ? 0 : 50;
    static const int prios[] = {0, 50, 100, 200, 300};
    span_ failed[64];
    int nfailed = 0;
    for (size_t pi = 0; pi < sizeof prios / sizeof prios[0]; pi++) {
        int prio = prios[pi];
        cands cs = {0};
        if (latex)
            latex_prio_(x, &t, prio, boxed_prio, &cs);
        if (expr)
            expr_prio_(x, &t, prio, &cs);
        if (x->fail)
            return;
        if (!cs.n)
            continue;
        qsort(cs.v, (size_t)cs.n, sizeof *cs.v, cand_cmp_);
        for (int k = 0; k < cs.n; k++) {
            cand *c = &cs.v[k];
            if (c->type == C_EXPR && nfailed) {
                int hit = 0;
                for (int f = 0; f < nfailed && !hit; f++)
                    if (c->m.vs < failed[f].e && c->m.ve > failed[f].s)
                        hit = 1;
                if (hit)
                    continue;
            }
            km_node *tree;
            const char *fb;
            int st = parse_cand_(x, &t, c, &tree, &fb);
            if (x->fail)
                return;
            if ((fb && fb[0] && !out->fallback) || tree)
                span_of_(&t, c, prio, out);
            if (fb && fb[0] && !out->fallback)
                out->fallback = fb;
            if (tree) {
                out->tree = tree;
                out->shown = fb;
                x->deep = 0;
                return;
            }
            if (x->deep) {
                /* too deep to read: a fragment inside it is not the answer */
                out->deep = 1;
                x->deep = 0;
                return;
            }
            if (nfailed < 64) {
                if (st < 0) {
                    failed[nfailed].s = c->m.vs;
                    failed[nfailed].e = c->m.ve;
                    nfailed++;
                } else if (c->type == C_LATEX) {
                    failed[nfailed].s = c->g[0].s;
                    failed[nfailed].e = c->g[0].e;
                    nfailed++;
                }
            }
        }
    }
}

/* Does s[0, n) hold a LaTeX delimiter or a box: an unescaped '$', "\(",
 * "\[", "\boxed", "\fbox"? */
static int has_delims_(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '$' && (i == 0 || s[i - 1] != '\\'))
            return 1;
        if (s[i] == '\\' && i + 1 < n &&
            (s[i + 1] == '(' || s[i + 1] == '[' || (i + 6 <= n && !memcmp(s + i, "\\boxed", 6)) ||
             (i + 5 <= n && !memcmp(s + i, "\\fbox", 5))))
            return 1;
    }
    return 0;
}

/* Does the answer a span its whole text, but for whitespace around it and
 * a final '.'? */
static int spans_all_(const km_answer *a)
{
    if (!a->have_span)
        return 0;
    size_t s = a->ms < a->vs ? a->ms : a->vs, e = a->me > a->ve ? a->me : a->ve;
    for (size_t i = 0; i < s; i++)
        if (!sp_(a->text[i]))
            return 0;
    for (size_t i = e; i < a->text_n; i++)
        if (!sp_(a->text[i]) && a->text[i] != '.')
            return 0;
    return 1;
}

void km_extract_gold(km_ctx *x, const char *text, size_t len, km_answer *out)
{
    km_extract(x, text, len, out);
    if (x->fail || out->deep || x->cfg->extract == KD_MATH_EXTRACT_EXPR || has_delims_(text, len))
        return;
    if (out->tree && (out->marked || spans_all_(out)))
        return;
    size_t n;
    const char *s = prep_(x, text, len, &n);
    const char *norm = s ? km_norm_latex(x, s, n, 0) : NULL;
    if (x->fail || !norm)
        return;
    km_node *t = norm[0] ? parse_latex_(x, norm) : NULL;
    if (x->fail)
        return;
    memset(out, 0, sizeof *out);
    out->tree = t;
    out->fallback = norm[0] ? norm : NULL;
    out->shown = t ? norm : NULL;
    out->deep = !t && x->deep;
    x->deep = 0;
}

/* A multiple-choice letter A-E named in plain text: the first standalone
 * letter (bare, "(B)" or "**B**") within 60 bytes after the last "answer",
 * or the whole response when that is only a letter. 0 when none. */
int km_choice_letter(const char *s, size_t n)
{
    size_t a = n;
    for (size_t i = n; i-- > 0;)
        if (i + 6 <= n && tolower((unsigned char)s[i]) == 'a' && !strncasecmp(s + i, "answer", 6)) {
            a = i + 6;
            break;
        }
    size_t from = a, to = a + 60 < n ? a + 60 : n;
    if (a == n) {
        /* the whole response */
        from = 0;
        while (from < n && (sp_(s[from]) || s[from] == '*' || s[from] == '('))
            from++;
        size_t e = n;
        while (e > from && (sp_(s[e - 1]) || s[e - 1] == '*' || s[e - 1] == ')' || s[e - 1] == '.'))
            e--;
        return e == from + 1 && s[from] >= 'A' && s[from] <= 'E' ? s[from] : 0;
    }
    for (size_t i = from; i < to; i++) {
        char c = s[i];
        if (c < 'A' || c > 'E')
            continue;
        char pc = i ? s[i - 1] : ' ';
        char nc = i + 1 < n ? s[i + 1] : ' ';
        if ((sp_(pc) || pc == '(' || pc == '*' || pc == ':') &&
            (sp_(nc) || nc == ')' || nc == '*' || nc == '.' || nc == ',' || nc == ':' || i + 1 == n))
            return c;
    }
    return 0;
}

int km_last_box_state(const char *s, size_t n) { return last_box_state_(s, n); }

/* ---- restating the question -------------------------------------------------------- */

static int al_(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* A text normalised for comparison with the question, and for each of its
 * bytes the index of the source byte it came from. */
typedef struct nrm_ {
    const char *s;
    size_t n;
    size_t *at;
} nrm_;

/* Drop $, \( \) \[ \], turn whitespace and \, \; \: \! "\ " into separators,
 * and keep a separator (one space) only between two letters or digits:
 * "What is  $1/2 + 1/4$?" -> "What is 1/2+1/4?". 0 on failure. */
static int norm_q_(km_ctx *x, const char *s, size_t n, nrm_ *o)
{
    char *d = km_alloc(x, n + 1);
    size_t *at = km_alloc(x, (n + 1) * sizeof *at);
    if (!d || !at)
        return 0;
    size_t k = 0;
    int gap = 0;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '$') {
            gap = 1;
            i++;
            continue;
        }
        if (c == '\\' && i + 1 < n && strchr("()[],;:! \t\n\r", s[i + 1]) && s[i + 1]) {
            gap = 1;
            i += 2;
            continue;
        }
        if (sp_(c)) {
            gap = 1;
            i++;
            continue;
        }
        if (gap && k && al_(d[k - 1]) && al_(c)) {
            d[k] = ' ';
            at[k++] = i;
        }
        gap = 0;
        d[k] = c;
        at[k++] = i;
        i++;
    }
    d[k] = 0;
    o->s = d;
    o->n = k;
    o->at = at;
    return km_step(x, (long)(n / 16 + 1));
}

/* A single token: a number or a word, perhaps signed, in parentheses,
 * \text{}, bold or with a trailing '.' or '%' ("4", "-2.5", "(B)", "x").
 * Its occurrence in the question says nothing. */
static int trivial_(const char *s, size_t n)
{
    static const char *const wrap[] = {"\\textbf{", "\\mathbf{", "\\mathrm{", "\\text{", "\\%"};
    int runs = 0, in = 0;
    for (size_t i = 0; i < n;) {
        size_t skip = 0;
        for (size_t w = 0; w < sizeof wrap / sizeof wrap[0] && !skip; w++) {
            size_t l = strlen(wrap[w]);
            if (i + l <= n && !memcmp(s + i, wrap[w], l))
                skip = l;
        }
        if (!skip && (s[i] == '.' || s[i] == ',') && !(in && i + 1 < n && al_(s[i + 1])))
            skip = 1; /* a trailing '.', not "2.5" or "1,000" */
        if (!skip && strchr("(){}*% ", s[i]) && s[i])
            skip = 1;
        if (!skip && !runs && !in && (s[i] == '-' || s[i] == '+'))
            skip = 1;
        if (skip) {
            in = 0;
            i += skip;
            continue;
        }
        if (!al_(s[i]) && s[i] != ',' && s[i] != '.')
            return 0;
        if (!in && ++runs > 1)
            return 0;
        in = 1;
        i++;
    }
    return 1;
}

/* Is needle at hay[pos] a whole occurrence: not part of a longer word or
 * number ("2" is not in "12", "x^2" or "0.25")? */
static int whole_at_(const char *h, size_t hn, const char *nd, size_t m, size_t pos)
{
    if (pos > 0) {
        char p = h[pos - 1], f = nd[0];
        if (al_(p) && al_(f))
            return 0;
        if (p == '.' && dg_(f))
            return 0;
    }
    if (pos + m < hn) {
        char q = h[pos + m], l = nd[m - 1];
        if (al_(q) && al_(l))
            return 0;
        if (q == '.' && dg_(l) && pos + m + 1 < hn && dg_(h[pos + m + 1]))
            return 0;
    }
    return 1;
}

enum { OCC_WHOLE, OCC_COVER };

/* Knuth-Morris-Pratt: is there an occurrence of nd (m >= 1) in h that is
 * whole (OCC_WHOLE), or that covers the normalised positions [cs, ce]
 * (OCC_COVER)? Linear in hn + m. */
static int occurs_(km_ctx *x, const char *h, size_t hn, const char *nd, size_t m, int how, size_t cs, size_t ce)
{
    if (!m || m > hn)
        return 0;
    size_t *f = km_alloc(x, m * sizeof *f);
    if (!f || !km_step(x, (long)((hn + m) / 16 + 1)))
        return 0;
    f[0] = 0;
    for (size_t i = 1, k = 0; i < m; i++) {
        while (k && nd[i] != nd[k])
            k = f[k - 1];
        if (nd[i] == nd[k])
            k++;
        f[i] = k;
    }
    for (size_t i = 0, k = 0; i < hn; i++) {
        while (k && h[i] != nd[k])
            k = f[k - 1];
        if (h[i] == nd[k])
            k++;
        if (k == m) {
            size_t pos = i + 1 - m;
            if (how == OCC_WHOLE ? whole_at_(h, hn, nd, m, pos) : (pos <= cs && i >= ce))
                return 1;
            if (how == OCC_COVER && pos > cs)
                return 0;
            k = f[k - 1];
        }
    }
    return 0;
}

int km_restates(km_ctx *x, const char *q, size_t qn, const char *pred, size_t pred_n, const km_answer *a,
                int use_span)
{
    size_t pn;
    const char *ps = prep_(x, q, qn, &pn);
    nrm_ nq, nr;
    if (x->fail || !norm_q_(x, ps, pn, &nq) || !nq.n)
        return 0;
    use_span = use_span && a->have_span && a->text;
    const char *rs = a->text;
    size_t rn = a->text_n;
    if (!use_span) {
        rs = prep_(x, pred, pred_n, &rn);
        if (x->fail)
            return 0;
    }
    if (!norm_q_(x, rs, rn, &nr) || !nr.n)
        return 0;
    /* the whole response is a piece of the question (a marker in it is the
     * question's, not the response's) */
    if (!trivial_(nr.s, nr.n) && occurs_(x, nq.s, nq.n, nr.s, nr.n, OCC_WHOLE, 0, 0))
        return 1;
    if (!use_span || x->fail)
        return 0;
    /* the answer (marker included) lies inside a copy of the question */
    size_t cs = 0, ce = 0;
    int any = 0;
    for (size_t k = 0; k < nr.n; k++) {
        if (nr.at[k] < a->ms || nr.at[k] >= a->me)
            continue;
        if (!any)
            cs = k;
        ce = k;
        any = 1;
    }
    if (any && nq.n <= nr.n && occurs_(x, nr.s, nr.n, nq.s, nq.n, OCC_COVER, cs, ce))
        return 1;
    /* an answer taken from no marker, whose text is in the question */
    if (a->marked || x->fail)
        return 0;
    size_t ve = a->ve; /* without the sentence's trailing '.' */
    while (ve > a->vs && (sp_(rs[ve - 1]) || rs[ve - 1] == '.'))
        ve--;
    nrm_ nv;
    if (!norm_q_(x, rs + a->vs, ve - a->vs, &nv) || !nv.n || trivial_(nv.s, nv.n))
        return 0;
    return occurs_(x, nq.s, nq.n, nv.s, nv.n, OCC_WHOLE, 0, 0);
}
