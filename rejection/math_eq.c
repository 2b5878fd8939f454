/* math_eq.c - is the response's answer the gold answer? and the public
 * entry points of the math verifier (math.h).
 *
 * km_equal follows Math-Verify's verify() in what it decides, not in how:
 *
 *   - assignments: "x = 3" (the left side made of names only) is 3 when the
 *     other side is not an equation; a chain "x = 5+5 = 10" keeps its first
 *     left side and last right side; an equation facing a plain value gives
 *     up its right side only when the gold is not an equation itself;
 *   - a relation facing a set (interval, union, finite set) is compared by
 *     membership at the set's endpoints and around them (the gold's relation
 *     always; the response's only with allow_set_relation);
 *   - equations and inequalities are the same when their sides' differences
 *     are proportional (a positive factor for inequalities, negative when
 *     the direction flips);
 *   - sets are unordered (duplicates collapse), tuples ordered; a gold tuple
 *     against a response set keeps the response's written order; (a, b)
 *     is an open interval against an interval and a pair otherwise;
 *   - names and \text{} words compare as words (case-blind past one letter;
 *     "odd" written as o*d*d is the word "odd");
 *   - numbers and expressions: exactly, or by rounding when one side is a
 *     decimal written alone, at pseudo-random points for variables;
 *   - a gold percentage matches its value or its number (28% vs 0.28 or 28),
 *     a response percentage only its value.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mpfr.h>

#include "core/status.h"
#include "rejection/math_int.h"


/* ---- tree helpers ----------------------------------------------------------------- */

static int is_rel_(const km_node *t)
{
    if (!t)
        return 0;
    if (t->kind == KN_REL)
        return 1;
    if (t->kind == KN_AND && t->n > 0) {
        for (int i = 0; i < t->n; i++)
            if (t->kids[i]->kind != KN_REL)
                return 0;
        return 1;
    }
    return 0;
}

static int is_eqn_(const km_node *t)
{
    if (!t)
        return 0;
    if (t->kind == KN_REL)
        return t->op == KR_EQ;
    if (t->kind == KN_AND && t->n > 0) {
        for (int i = 0; i < t->n; i++)
            if (t->kids[i]->kind != KN_REL || t->kids[i]->op != KR_EQ)
                return 0;
        return 1;
    }
    return 0;
}

/* Made of names only: x, f(x), x_1, |AB|, A:B, (p, q). */
static int only_symbols_(const km_node *t, int depth)
{
    if (!t || depth > 50)
        return 0;
    switch (t->kind) {
    case KN_SYM:
    case KN_UF:
        return 1;
    case KN_MUL:
    case KN_DIV:
    case KN_ADD:
    case KN_TUPLE:
    case KN_PAIR:
        for (int i = 0; i < t->n; i++)
            if (!only_symbols_(t->kids[i], depth + 1))
                return 0;
        return 1;
    case KN_FUNC:
        return t->op == KF_ABS && only_symbols_(t->kids[0], depth + 1);
    default:
        return 0;
    }
}

static int is_assign_(const km_node *t)
{
    if (!is_eqn_(t))
        return 0;
    const km_node *first = t->kind == KN_AND ? t->kids[0] : t;
    return only_symbols_(first->kids[0], 0);
}

static km_node *first_rel_(km_node *t) { return t->kind == KN_AND ? t->kids[0] : t; }
static km_node *last_rel_(km_node *t) { return t->kind == KN_AND ? t->kids[t->n - 1] : t; }

static int is_set_(const km_node *t)
{
    return t && (t->kind == KN_SET || t->kind == KN_INTERVAL || t->kind == KN_UNION || t->kind == KN_PAIR);
}

static int setlike_(const km_node *t)
{
    return t && (t->kind == KN_SET || t->kind == KN_TUPLE || t->kind == KN_PAIR || t->kind == KN_INTERVAL ||
                 t->kind == KN_UNION);
}

static int has_kind_(const km_node *t, int kind, int depth)
{
    if (!t || depth > 600)
        return 0;
    if (t->kind == kind)
        return 1;
    for (int i = 0; i < t->n; i++)
        if (has_kind_(t->kids[i], kind, depth + 1))
            return 1;
    return 0;
}

static int has_float_(const km_node *t, int depth)
{
    if (!t || depth > 600)
        return 0;
    if (t->kind == KN_NUM)
        return t->flt;
    for (int i = 0; i < t->n; i++)
        if (has_float_(t->kids[i], depth + 1))
            return 1;
    return 0;
}

/* A decimal written alone: 0.33, -0.33, 33.3% */
static int atomic_float_(const km_node *t)
{
    if (t->kind == KN_NEG || t->kind == KN_PCT)
        t = t->kids[0];
    return t->kind == KN_NUM && t->flt;
}

static km_node *rel_(km_ctx *x, int op, km_node *a, km_node *b)
{
    km_node *r = km_node2(x, KN_REL, a, b);
    if (r)
        r->op = (uint8_t)op;
    return r;
}

static km_node *sub_(km_ctx *x, km_node *a, km_node *b)
{
    km_node *nb = km_node_new(x, KN_NEG, 1);
    if (!nb)
        return NULL;
    nb->kids[0] = b;
    return km_node2(x, KN_ADD, a, nb);
}

/* A copy of t with each node for which f returns a replacement replaced. */
typedef km_node *(*map_fn)(km_ctx *x, km_node *t, void *u);

static km_node *map_(km_ctx *x, km_node *t, map_fn f, void *u, int depth)
{
    if (!t || depth > 600)
        return t;
    km_node *r = f(x, t, u);
    if (r)
        return r;
    if (t->n == 0)
        return t;
    km_node *c = km_node_new(x, t->kind, t->n);
    if (!c)
        return t;
    km_node **kids = c->kids;
    *c = *t;
    c->kids = kids;
    c->key = NULL;
    for (int i = 0; i < t->n; i++)
        c->kids[i] = map_(x, t->kids[i], f, u, depth + 1);
    return c;
}

/* ---- +- expansion ----------------------------------------------------------------- */

typedef struct pm_sel {
    unsigned mask;
    int next;
} pm_sel;

static km_node *pm_pick_(km_ctx *x, km_node *t, void *u)
{
    if (t->kind != KN_PM)
        return NULL;
    pm_sel *s = u;
    int bit = (int)((s->mask >> s->next++) & 1);
    km_node *b = t->kids[1];
    if (bit) {
        km_node *nb = km_node_new(x, KN_NEG, 1);
        if (!nb)
            return NULL;
        nb->kids[0] = b;
        b = nb;
    }
    if (!t->kids[0])
        return b;
    return km_node2(x, KN_ADD, t->kids[0], b);
}

static int count_pm_(const km_node *t, int depth)
{
    if (!t || depth > 600)
        return 0;
    int c = t->kind == KN_PM;
    for (int i = 0; i < t->n; i++)
        c += count_pm_(t->kids[i], depth + 1);
    return c;
}

/* Variants of one element with every +- chosen both ways (up to 16). */
static int pm_variants_(km_ctx *x, km_node *t, km_node **out, int max)
{
    int k = count_pm_(t, 0);
    if (k == 0 || k > 4) {
        out[0] = t;
        return 1;
    }
    int n = 0;
    for (unsigned m = 0; m < (1u << k) && n < max; m++) {
        pm_sel s = {m, 0};
        out[n++] = map_(x, t, pm_pick_, &s, 0);
    }
    return n;
}

static km_node *expand_pm_(km_ctx *x, km_node *t)
{
    if (!t || !count_pm_(t, 0))
        return t;
    km_node *vs[16];
    if (t->kind == KN_SET) {
        int total = 0;
        km_node **all = km_alloc(x, (size_t)t->n * 16 * sizeof *all);
        if (!all)
            return t;
        for (int i = 0; i < t->n; i++) {
            int m = pm_variants_(x, t->kids[i], vs, 16);
            for (int j = 0; j < m; j++)
                all[total++] = vs[j];
        }
        km_node *s = km_node_new(x, KN_SET, total);
        if (!s)
            return t;
        if (total)
            memcpy(s->kids, all, (size_t)total * sizeof *all);
        return s;
    }
    int m = pm_variants_(x, t, vs, 16);
    if (m == 1)
        return vs[0];
    km_node *s = km_node_new(x, KN_SET, m);
    if (!s)
        return t;
    memcpy(s->kids, vs, (size_t)m * sizeof *vs);
    return s;
}

/* ---- renaming (strict = 0) -------------------------------------------------------- */

typedef struct ren_ {
    const char **from, **to;
    int n;
} ren_;

static km_node *ren_pick_(km_ctx *x, km_node *t, void *u)
{
    ren_ *r = u;
    if (t->kind != KN_SYM)
        return NULL;
    for (int i = 0; i < r->n; i++)
        if (!strcmp(t->s, r->from[i]))
            return km_sym(x, r->to[i]);
    return NULL;
}

/* ---- comparison ------------------------------------------------------------------- */

typedef struct eqc {
    km_ctx *x;
    int big; /* some comparison rested on a too-large approximation */
} eqc;

static int eq_(eqc *e, km_node *g, km_node *p, int depth);

static int scalar_(eqc *e, km_node *g, km_node *p)
{
    km_ctx *x = e->x;
    if (g->kind == KN_PCT && p->kind == KN_PCT)
        return scalar_(e, g->kids[0], p->kids[0]);
    if (g->kind == KN_PCT) {
        /* a gold percentage: its value, or its bare number */
        int mode = atomic_float_(g) || atomic_float_(p) ? KM_ROUND : has_float_(g, 0) || has_float_(p, 0) ? KM_LOOSE : KM_EXACT;
        int r = km_value_eq(x, g, p, mode);
        if (r == KM_SAME)
            return r;
        if (r == KM_BIG)
            e->big = 1;
        return scalar_(e, g->kids[0], p);
    }
    int mode = atomic_float_(g) || atomic_float_(p) ? KM_ROUND : has_float_(g, 0) || has_float_(p, 0) ? KM_LOOSE : KM_EXACT;
    int r = km_value_eq(x, g, p, mode);
    if (r == KM_BIG) {
        e->big = 1;
        return KM_DIFF;
    }
    return r == KM_SAME ? KM_SAME : KM_DIFF;
}

/* Matrices: evaluate sums and products of matrices into one matrix of
 * element trees. NULL when t is not a matrix expression. */
static km_node *mat_(km_ctx *x, km_node *t, int depth)
{
    if (!t || depth > 50)
        return NULL;
    if (t->kind == KN_MATRIX)
        return t;
    if (t->kind == KN_ADD || t->kind == KN_MUL) {
        km_node *acc = NULL;
        km_node *scal = NULL;
        for (int i = 0; i < t->n; i++) {
            km_node *m = mat_(x, t->kids[i], depth + 1);
            if (!m) {
                if (t->kind == KN_ADD)
                    return NULL;
                scal = scal ? km_node2(x, KN_MUL, scal, t->kids[i]) : t->kids[i];
                continue;
            }
            if (!acc) {
                acc = m;
                continue;
            }
            if (t->kind == KN_ADD) {
                if (acc->rows != m->rows || acc->cols != m->cols)
                    return NULL;
                km_node *r = km_node_new(x, KN_MATRIX, acc->n);
                if (!r)
                    return NULL;
                r->rows = acc->rows;
                r->cols = acc->cols;
                for (int k = 0; k < acc->n; k++)
                    r->kids[k] = km_node2(x, KN_ADD, acc->kids[k], m->kids[k]);
                acc = r;
            } else {
                if (acc->cols != m->rows || acc->rows * m->cols > 400)
                    return NULL;
                km_node *r = km_node_new(x, KN_MATRIX, acc->rows * m->cols);
                if (!r)
                    return NULL;
                r->rows = acc->rows;
                r->cols = m->cols;
                for (int a = 0; a < acc->rows; a++)
                    for (int b = 0; b < m->cols; b++) {
                        km_node *s = km_node_new(x, KN_ADD, acc->cols);
                        if (!s)
                            return NULL;
                        for (int k = 0; k < acc->cols; k++)
                            s->kids[k] = km_node2(x, KN_MUL, acc->kids[a * acc->cols + k], m->kids[k * m->cols + b]);
                        r->kids[a * r->cols + b] = s;
                    }
                acc = r;
            }
        }
        if (acc && scal) {
            km_node *r = km_node_new(x, KN_MATRIX, acc->n);
            if (!r)
                return NULL;
            r->rows = acc->rows;
            r->cols = acc->cols;
            for (int k = 0; k < acc->n; k++)
                r->kids[k] = km_node2(x, KN_MUL, scal, acc->kids[k]);
            acc = r;
        }
        return acc;
    }
    if (t->kind == KN_NEG) {
        km_node *m = mat_(x, t->kids[0], depth + 1);
        if (!m)
            return NULL;
        km_node *r = km_node_new(x, KN_MATRIX, m->n);
        if (!r)
            return NULL;
        r->rows = m->rows;
        r->cols = m->cols;
        for (int k = 0; k < m->n; k++) {
            km_node *ng = km_node_new(x, KN_NEG, 1);
            if (!ng)
                return NULL;
            ng->kids[0] = m->kids[k];
            r->kids[k] = ng;
        }
        return r;
    }
    return NULL;
}

/* The word a name, \text{} phrase or product of letters spells; NULL if none. */
static const char *word_(km_ctx *x, const km_node *t)
{
    if (t->kind == KN_SYM)
        return t->s;
    if (t->kind == KN_TEXT)
        return t->s;
    if (t->kind == KN_CONST && t->op == KC_E)
        return "e";
    if (t->kind == KN_CONST && t->op == KC_I)
        return "i";
    if (t->kind == KN_MUL) {
        km_buf b;
        km_buf_init(&b, x);
        for (int i = 0; i < t->n; i++) {
            const km_node *k = t->kids[i];
            if (k->kind == KN_SYM)
                km_buf_puts(&b, k->s);
            else if (k->kind == KN_CONST && (k->op == KC_E || k->op == KC_I))
                km_buf_puts(&b, k->op == KC_E ? "e" : "i");
            else
                return NULL;
        }
        return km_buf_str(&b);
    }
    return NULL;
}

static int words_(eqc *e, km_node *g, km_node *p)
{
    const char *a = word_(e->x, g), *b = word_(e->x, p);
    if (!a || !b)
        return KM_UNKNOWN;
    size_t la = strlen(a), lb = strlen(b);
    if (la > 1 || lb > 1) {
        if (la != lb)
            return KM_DIFF;
        for (size_t i = 0; i < la; i++)
            if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
                return KM_DIFF;
        return KM_SAME;
    }
    return !strcmp(a, b) ? KM_SAME : KM_DIFF;
}

static int rel_cmp_(eqc *e, km_node *g, km_node *p, int depth)
{
    km_ctx *x = e->x;
    if (g->kind == KN_AND || p->kind == KN_AND) {
        if (g->kind != KN_AND || p->kind != KN_AND || g->n != p->n)
            return KM_DIFF;
        for (int i = 0; i < g->n; i++)
            if (rel_cmp_(e, g->kids[i], p->kids[i], depth + 1) != KM_SAME)
                return KM_DIFF;
        return KM_SAME;
    }
    int go = g->op, po = p->op;
    static const int flip[] = {0, KR_EQ, KR_NE, KR_GT, KR_GE, KR_LT, KR_LE};
    km_node *dg = sub_(x, g->kids[0], g->kids[1]), *dp = sub_(x, p->kids[0], p->kids[1]);
    if (!dg || !dp)
        return KM_DIFF;
    if (go == po) {
        int mode = has_float_(dg, 0) || has_float_(dp, 0) ? KM_LOOSE : KM_EXACT;
        int r = km_value_eq(x, dg, dp, mode);
        if (r == KM_SAME)
            return KM_SAME;
        if (r == KM_BIG)
            e->big = 1;
        int sign = (go == KR_EQ || go == KR_NE) ? 0 : 1;
        if (km_ratio_eq(x, dg, dp, sign) == KM_SAME)
            return KM_SAME;
        return KM_DIFF;
    }
    if (flip[go] == po && km_ratio_eq(x, dg, dp, -1) == KM_SAME)
        return KM_SAME;
    return KM_DIFF;
}

/* Replace applied functions and indexed names by plain names, so that a
 * relation in f(x) has one variable "f(x)". */
static km_node *uf_pick_(km_ctx *x, km_node *t, void *u)
{
    (void)u;
    if (t->kind != KN_UF)
        return NULL;
    return km_sym(x, km_key(x, t));
}

static int set_point_(km_ctx *x, km_node *t, double *v)
{
    if (t->kind == KN_CONST && t->op == KC_INF) {
        *v = INFINITY;
        return 1;
    }
    if (t->kind == KN_NEG && t->kids[0]->kind == KN_CONST && t->kids[0]->op == KC_INF) {
        *v = -INFINITY;
        return 1;
    }
    return km_to_double(x, t, NULL, v);
}

/* Critical points of a set: endpoints and elements. 0 when one does not evaluate. */
static int crit_(km_ctx *x, km_node *s, double *pts, int *n, int max, int depth)
{
    if (depth > 20)
        return 0;
    if (s->kind == KN_UNION) {
        for (int i = 0; i < s->n; i++)
            if (!crit_(x, s->kids[i], pts, n, max, depth + 1))
                return 0;
        return 1;
    }
    if (s->kind == KN_SET || s->kind == KN_INTERVAL || s->kind == KN_PAIR) {
        for (int i = 0; i < s->n; i++) {
            double v;
            if (!set_point_(x, s->kids[i], &v))
                return 0;
            if (isfinite(v) && *n < max)
                pts[(*n)++] = v;
        }
        return 1;
    }
    return 0;
}

static int near_(double a, double b) { return fabs(a - b) <= 1e-9 * fmax(1.0, fmax(fabs(a), fabs(b))); }

static int member_(km_ctx *x, km_node *s, double t, int depth)
{
    if (depth > 20)
        return -1;
    if (s->kind == KN_UNION) {
        for (int i = 0; i < s->n; i++) {
            int r = member_(x, s->kids[i], t, depth + 1);
            if (r != 0)
                return r;
        }
        return 0;
    }
    if (s->kind == KN_SET) {
        for (int i = 0; i < s->n; i++) {
            double v;
            if (!set_point_(x, s->kids[i], &v))
                return -1;
            if (near_(v, t))
                return 1;
        }
        return 0;
    }
    if (s->kind == KN_INTERVAL || s->kind == KN_PAIR) {
        double lo, hi;
        if (!set_point_(x, s->kids[0], &lo) || !set_point_(x, s->kids[1], &hi))
            return -1;
        int lopen = s->kind == KN_PAIR ? 1 : s->lopen, ropen = s->kind == KN_PAIR ? 1 : s->ropen;
        if (isfinite(lo) && near_(lo, t))
            return !lopen;
        if (isfinite(hi) && near_(hi, t))
            return !ropen;
        return t > lo && t < hi;
    }
    return -1;
}

static int dblcmp_(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Does the relation hold exactly on the set? Tested at the set's critical
 * points, beside them, between them and far out. */
static int rel_vs_set_(eqc *e, km_node *rel, km_node *set)
{
    km_ctx *x = e->x;
    km_node *r = map_(x, rel, uf_pick_, NULL, 0);
    const char *names[4];
    if (km_free_vars(x, r, names, 4) != 1)
        return KM_UNKNOWN;
    double pts[64];
    int n = 0;
    if (!crit_(x, set, pts, &n, 40, 0))
        return KM_UNKNOWN;
    qsort(pts, (size_t)n, sizeof *pts, dblcmp_);
    double test[200];
    int nt = 0;
    for (int i = 0; i < n; i++) {
        double d = 1e-4 * fmax(1.0, fabs(pts[i]));
        test[nt++] = pts[i];
        test[nt++] = pts[i] - d;
        test[nt++] = pts[i] + d;
        if (i + 1 < n)
            test[nt++] = (pts[i] + pts[i + 1]) / 2;
    }
    double lo = n ? pts[0] : 0, hi = n ? pts[n - 1] : 0;
    test[nt++] = lo - 1 - fabs(lo);
    test[nt++] = hi + 1 + fabs(hi);
    test[nt++] = -1e6;
    test[nt++] = 1e6;
    test[nt++] = 0.5;
    test[nt++] = -0.5;
    int seen = 0;
    for (int i = 0; i < nt; i++) {
        int m = member_(x, set, test[i], 0);
        if (m < 0)
            return KM_UNKNOWN;
        km_bind b = {names[0], 0, 1, test[i], 1};
        km_env env = {&b, 1};
        int tr = km_rel_truth(x, r, &env);
        if (tr == KM_UNKNOWN)
            continue;
        seen++;
        if (tr != m)
            return KM_DIFF;
    }
    return seen ? KM_SAME : KM_UNKNOWN;
}

/* Unique elements of a finite set (by canonical key). */
static int uniq_(km_ctx *x, km_node *s, km_node **out, int max)
{
    int n = 0;
    for (int i = 0; i < s->n; i++) {
        const char *k = km_key(x, s->kids[i]);
        int dup = 0;
        for (int j = 0; j < n && !dup; j++)
            if (!strcmp(km_key(x, out[j]), k))
                dup = 1;
        if (!dup) {
            if (n >= max)
                return -1;
            out[n++] = s->kids[i];
        }
    }
    return n;
}

/* Kuhn's matching over an n x n equality relation computed lazily. */
typedef struct match_ {
    eqc *e;
    km_node **a, **b;
    int n;
    signed char *rel; /* -1 unknown, 0, 1 */
    int *to;          /* b index -> a index */
    char *seen;
    int depth;
} match_;

static int rel_at_(match_ *m, int i, int j)
{
    signed char *r = &m->rel[i * m->n + j];
    if (*r < 0)
        *r = eq_(m->e, m->a[i], m->b[j], m->depth) == KM_SAME;
    return *r;
}

static int augment_(match_ *m, int i)
{
    for (int j = 0; j < m->n; j++) {
        if (m->seen[j] || !rel_at_(m, i, j))
            continue;
        m->seen[j] = 1;
        if (m->to[j] < 0 || augment_(m, m->to[j])) {
            m->to[j] = i;
            return 1;
        }
    }
    return 0;
}

static int unordered_(eqc *e, km_node **a, km_node **b, int n, int depth)
{
    km_ctx *x = e->x;
    match_ m = {e, a, b, n, NULL, NULL, NULL, depth};
    m.rel = km_alloc(x, (size_t)n * (size_t)n);
    m.to = km_alloc(x, (size_t)n * sizeof *m.to);
    m.seen = km_alloc(x, (size_t)n);
    if (!m.rel || !m.to || !m.seen)
        return KM_DIFF;
    memset(m.rel, -1, (size_t)n * (size_t)n);
    for (int j = 0; j < n; j++)
        m.to[j] = -1;
    for (int i = 0; i < n; i++) {
        memset(m.seen, 0, (size_t)n);
        if (!augment_(&m, i))
            return KM_DIFF;
        if (x->fail)
            return KM_DIFF;
    }
    return KM_SAME;
}

static int ordered_(eqc *e, km_node **a, km_node **b, int n, int depth)
{
    for (int i = 0; i < n; i++)
        if (eq_(e, a[i], b[i], depth + 1) != KM_SAME)
            return KM_DIFF;
    return KM_SAME;
}

static int endpoint_(eqc *e, km_node *a, km_node *b)
{
    km_ctx *x = e->x;
    if (!strcmp(km_key(x, a), km_key(x, b)))
        return KM_SAME;
    if (has_kind_(a, KN_CONST, 0) && (has_kind_(a, KN_CONST, 0) || has_kind_(b, KN_CONST, 0))) {
        /* infinities only match themselves */
        const char *ka = km_key(x, a), *kb = km_key(x, b);
        if (strstr(ka, "\\oo") || strstr(kb, "\\oo"))
            return KM_DIFF;
    }
    return scalar_(e, a, b);
}

static int sets_(eqc *e, km_node *g, km_node *p, int depth)
{
    km_ctx *x = e->x;
    km_node one_g, one_p;
    km_node *kg[1], *kp[1];
    /* a lone value is a one-element set */
    if (!setlike_(g)) {
        memset(&one_g, 0, sizeof one_g);
        one_g.kind = KN_SET;
        one_g.n = 1;
        kg[0] = g;
        one_g.kids = kg;
        g = &one_g;
    }
    if (!setlike_(p)) {
        memset(&one_p, 0, sizeof one_p);
        one_p.kind = KN_SET;
        one_p.n = 1;
        kp[0] = p;
        one_p.kids = kp;
        p = &one_p;
    }
    int gi = g->kind == KN_INTERVAL, pi = p->kind == KN_INTERVAL;
    if ((gi && (pi || p->kind == KN_PAIR)) || (pi && g->kind == KN_PAIR)) {
        int glo = gi ? g->lopen : 1, gro = gi ? g->ropen : 1, plo = pi ? p->lopen : 1, pro = pi ? p->ropen : 1;
        if (glo != plo || gro != pro)
            return KM_DIFF;
        if (endpoint_(e, g->kids[0], p->kids[0]) != KM_SAME)
            return KM_DIFF;
        return endpoint_(e, g->kids[1], p->kids[1]);
    }
    if (g->kind != KN_UNION && p->kind != KN_UNION && !strcmp(km_key(x, g), km_key(x, p)))
        return KM_SAME;
    if (g->kind == KN_UNION || p->kind == KN_UNION) {
        if (g->kind != KN_UNION || p->kind != KN_UNION || g->n != p->n || g->n > 32)
            return KM_DIFF;
        return unordered_(e, g->kids, p->kids, g->n, depth + 1);
    }
    int gf = g->kind == KN_SET || g->kind == KN_TUPLE || g->kind == KN_PAIR;
    int pf = p->kind == KN_SET || p->kind == KN_TUPLE || p->kind == KN_PAIR;
    if (gf && pf) {
        km_node *ga[64], *pa[64];
        int ng, np;
        if (g->kind == KN_SET) {
            ng = uniq_(x, g, ga, 64);
        } else {
            ng = g->n <= 64 ? g->n : -1;
            if (ng > 0)
                memcpy(ga, g->kids, (size_t)ng * sizeof *ga);
        }
        if (p->kind == KN_SET) {
            np = uniq_(x, p, pa, 64);
        } else {
            np = p->n <= 64 ? p->n : -1;
            if (np > 0)
                memcpy(pa, p->kids, (size_t)np * sizeof *pa);
        }
        if (ng < 0 || np < 0 || ng != np)
            return KM_DIFF;
        if (g->kind == KN_SET && p->kind == KN_SET)
            return unordered_(e, ga, pa, ng, depth + 1);
        if (g->kind == KN_SET)
            return unordered_(e, ga, pa, ng, depth + 1);
        return ordered_(e, ga, pa, ng, depth + 1);
    }
    /* an open interval against two values: the pair */
    if (gi && pf && g->lopen && g->ropen && p->n == 2)
        return ordered_(e, g->kids, p->kids, 2, depth + 1);
    if (pi && gf && p->lopen && p->ropen && g->n == 2)
        return ordered_(e, g->kids, p->kids, 2, depth + 1);
    return KM_DIFF;
}

static int eq_(eqc *e, km_node *g, km_node *p, int depth)
{
    km_ctx *x = e->x;
    if (!g || !p || depth > 40 || x->fail)
        return KM_DIFF;
    if (!km_step(x, 1))
        return KM_DIFF;
    int ga = is_assign_(g), pa = is_assign_(p), ge = is_eqn_(g), pe = is_eqn_(p);
    if (ga && g->kind == KN_AND)
        g = rel_(x, KR_EQ, first_rel_(g)->kids[0], last_rel_(g)->kids[1]);
    if (pa && p->kind == KN_AND)
        p = rel_(x, KR_EQ, first_rel_(p)->kids[0], last_rel_(p)->kids[1]);
    if (!g || !p)
        return KM_DIFF;
    if (pe && !ge)
        p = last_rel_(p)->kids[1];
    else if (ga && !pe)
        g = last_rel_(g)->kids[1];
    if (is_rel_(g) && is_set_(p)) {
        int r = rel_vs_set_(e, g, p);
        if (r != KM_UNKNOWN)
            return r;
    }
    if (x->cfg->allow_set_relation && is_rel_(p) && is_set_(g)) {
        int r = rel_vs_set_(e, p, g);
        if (r != KM_UNKNOWN)
            return r;
    }
    if (!strcmp(km_key(x, g), km_key(x, p)))
        return KM_SAME;
    if (is_rel_(g) || is_rel_(p)) {
        if (is_rel_(g) && is_rel_(p))
            return rel_cmp_(e, g, p, depth);
        return KM_DIFF;
    }
    if (setlike_(g) || setlike_(p))
        return sets_(e, g, p, depth);
    int w = words_(e, g, p);
    if (w == KM_SAME)
        return KM_SAME;
    km_node *mg = mat_(x, g, 0), *mp = mat_(x, p, 0);
    if (mg || mp) {
        if (!mg || !mp || mg->rows != mp->rows || mg->cols != mp->cols)
            return KM_DIFF;
        for (int i = 0; i < mg->n; i++)
            if (eq_(e, mg->kids[i], mp->kids[i], depth + 1) != KM_SAME)
                return KM_DIFF;
        return KM_SAME;
    }
    if (g->kind == KN_TEXT || p->kind == KN_TEXT)
        return KM_DIFF;
    return scalar_(e, g, p);
}

int km_equal(km_ctx *x, km_node *gold, km_node *pred)
{
    eqc e = {x, 0};
    gold = expand_pm_(x, gold);
    pred = expand_pm_(x, pred);
    if (!x->cfg->strict) {
        const char *gv[16], *pv[16];
        int ng = km_free_vars(x, gold, gv, 16), np = km_free_vars(x, pred, pv, 16);
        if (ng > 0 && ng == np) {
            ren_ r = {pv, gv, np};
            pred = map_(x, pred, ren_pick_, &r, 0);
        }
    }
    int r = eq_(&e, gold, pred, 0);
    if (r != KM_SAME && e.big)
        return KM_BIG;
    return r;
}

/* ---- public API ------------------------------------------------------------------- */

void kd_math_cfg_init(kd_math_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->extract = KD_MATH_EXTRACT_LATEX_EXPR;
    c->after_think = 1;
    c->boxed_first = 1;
    c->float_rounding = 6;
    c->rel_tol = 0;
    c->strict = 1;
    c->allow_set_relation = 0;
    c->max_steps = 2000000;
    c->max_input = 65536;
    c->max_nodes = 20000;
    c->max_depth = 500;
    c->max_bits = 100000;
    c->mpfr_bits = 128;
}

static int parse_bool_(const char *v, size_t n, int *out)
{
    if ((n == 4 && !strncasecmp(v, "true", 4)) || (n == 1 && v[0] == '1')) {
        *out = 1;
        return 1;
    }
    if ((n == 5 && !strncasecmp(v, "false", 5)) || (n == 1 && v[0] == '0')) {
        *out = 0;
        return 1;
    }
    return 0;
}

int kd_math_cfg_from_note(const char *note, kd_math_cfg *c)
{
    const char *s = note ? note : "";
    while (*s) {
        size_t n = strcspn(s, ";,");
        const char *a = s, *z = s + n;
        while (a < z && isspace((unsigned char)*a))
            a++;
        while (z > a && isspace((unsigned char)z[-1]))
            z--;
        const char *eq = memchr(a, '=', (size_t)(z - a));
        if (eq) {
            size_t kl = (size_t)(eq - a), vl = (size_t)(z - eq - 1);
            const char *v = eq + 1;
            int b;
            if (kl == 3 && !memcmp(a, "cfg", 3)) {
                if (vl == 10 && !memcmp(v, "latex+expr", 10)) {
                    c->extract = KD_MATH_EXTRACT_LATEX_EXPR;
                    c->boxed_first = 1;
                } else if (vl == 10 && !memcmp(v, "latex-only", 10)) {
                    c->extract = KD_MATH_EXTRACT_LATEX;
                    c->boxed_first = 1;
                } else if (vl == 9 && !memcmp(v, "expr-only", 9)) {
                    c->extract = KD_MATH_EXTRACT_EXPR;
                } else if (vl == 8 && !memcmp(v, "defaults", 8)) {
                    c->extract = KD_MATH_EXTRACT_LATEX_EXPR;
                    c->boxed_first = 0;
                } else {
                    return kd_err(KD_E_CONFIG, "note item 'cfg=%.*s': expected latex+expr, latex-only, expr-only or defaults",
                                  (int)vl, v);
                }
            } else if (kl == 4 && !memcmp(a, "prec", 4)) {
                char buf[16];
                if (vl == 0 || vl >= sizeof buf)
                    return kd_err(KD_E_CONFIG, "note item 'prec=%.*s': expected an integer 0..30", (int)vl, v);
                memcpy(buf, v, vl);
                buf[vl] = 0;
                char *end;
                long p = strtol(buf, &end, 10);
                if (*end || p < 0 || p > 30)
                    return kd_err(KD_E_CONFIG, "note item 'prec=%s': expected an integer 0..30", buf);
                c->float_rounding = (int)p;
            } else if (kl == 6 && !memcmp(a, "strict", 6)) {
                if (!parse_bool_(v, vl, &b))
                    return kd_err(KD_E_CONFIG, "note item 'strict=%.*s': expected True or False", (int)vl, v);
                c->strict = b;
            } else if (kl == 23 && !memcmp(a, "allow_set_relation_comp", 23)) {
                if (!parse_bool_(v, vl, &b))
                    return kd_err(KD_E_CONFIG, "note item 'allow_set_relation_comp=%.*s': expected True or False",
                                  (int)vl, v);
                c->allow_set_relation = b;
            }
        }
        s += n;
        if (*s)
            s++;
    }
    return KD_OK;
}

static const char *find_last_(const char *s, size_t n, const char *w)
{
    size_t l = strlen(w);
    if (n < l)
        return NULL;
    for (size_t i = n - l + 1; i-- > 0;)
        if (s[i] == w[0] && !memcmp(s + i, w, l))
            return s + i;
    return NULL;
}

static int trim_eq_(const char *a, const char *b)
{
    while (*a && isspace((unsigned char)*a))
        a++;
    while (*b && isspace((unsigned char)*b))
        b++;
    size_t la = strlen(a), lb = strlen(b);
    while (la && isspace((unsigned char)a[la - 1]))
        la--;
    while (lb && isspace((unsigned char)b[lb - 1]))
        lb--;
    return la && la == lb && !memcmp(a, b, la);
}

static char *dup_shown_(const char *s)
{
    size_t n = strlen(s);
    if (n > 1024)
        n = 1024;
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

int kd_math_verify(const kd_math_cfg *c, const char *gold, size_t gold_len, const char *pred, size_t pred_len,
                   kd_verdict *v)
{
    kd_verdict_release(v);
    kd_math_cfg dflt;
    if (!c) {
        kd_math_cfg_init(&dflt);
        c = &dflt;
    }
    if (!gold)
        gold_len = 0, gold = "";
    if (!pred)
        pred_len = 0, pred = "";
    /* the response: after the last </think>, then its tail */
    if (c->after_think) {
        const char *t = find_last_(pred, pred_len, "</think>");
        const char *o = find_last_(pred, pred_len, "<think>");
        if (o && (!t || t < o)) {
            /* thinking that never ends: a truncated response */
            kd_verdict_set(v, 0, 0.0, "no_answer", "<think> never closes (truncated response)");
            return KD_OK;
        }
        if (t) {
            size_t off = (size_t)(t - pred) + 8;
            pred += off;
            pred_len -= off;
        }
    }
    size_t cap = c->max_input ? c->max_input : 65536;
    if (cap > (16u << 20))
        cap = 16u << 20;
    if (pred_len > cap) {
        pred += pred_len - cap;
        pred_len = cap;
    }
    if (gold_len > cap) {
        gold += gold_len - cap;
        gold_len = cap;
    }
    int box = km_last_box_state(pred, pred_len);
    if (box == -1) {
        kd_verdict_set(v, 0, 0.0, "no_answer", "the last \\boxed{ never closes (truncated response)");
        return KD_OK;
    }
    if (box == -2) {
        kd_verdict_set(v, 0, 0.0, "no_answer", "the last \\boxed{} is empty");
        return KD_OK;
    }
    km_ctx x;
    km_ctx_init(&x, c);
    km_answer ga, pa;
    km_extract_gold(&x, gold, gold_len, &ga);
    if (!x.fail)
        km_extract(&x, pred, pred_len, &pa);
    else
        memset(&pa, 0, sizeof pa);
    int st = KD_OK;
    if (x.fail & KM_F_NOMEM) {
        kd_verdict_set(v, 0, 0.0, "nomem", NULL);
        st = kd_err(KD_E_NOMEM, "math verifier: out of memory");
        goto out;
    }
    if (x.fail & KM_F_BUDGET) {
        kd_verdict_set(v, 0, 0.0, "budget", "the work budget (%ld steps) ran out while extracting", c->max_steps);
        goto out;
    }
    /* an answer nested past max_depth is unreadable, not a fragment of it */
    if (pa.deep || ga.deep) {
        const char *f = pa.deep ? pa.fallback : NULL;
        if (f && !(v->extracted = dup_shown_(f))) {
            kd_verdict_set(v, 0, 0.0, "nomem", NULL);
            st = kd_err(KD_E_NOMEM, "math verifier: out of memory");
            goto out;
        }
        kd_verdict_set(v, 0, 0.0, pa.deep ? "too_large" : "bad_gold", "the %s nests deeper than max_depth (%d)",
                       pa.deep ? "answer" : "gold", c->max_depth);
        goto out;
    }
    /* a choice letter named in plain words ("the answer is (B)"), when the
     * gold is one and nothing else was found in the response */
    char letter[2] = {0, 0};
    if (!pa.tree && ga.tree) {
        const char *w = word_(&x, ga.tree);
        if (w && w[0] >= 'A' && w[0] <= 'E' && !w[1]) {
            int ch = km_choice_letter(pred, pred_len);
            if (ch) {
                letter[0] = (char)ch;
                pa.shown = letter;
                if (ch == w[0])
                    pa.tree = ga.tree;
            }
        }
    }
    const char *shown = pa.shown ? pa.shown : pa.fallback;
    if (shown && !(v->extracted = dup_shown_(shown))) {
        kd_verdict_set(v, 0, 0.0, "nomem", NULL);
        st = kd_err(KD_E_NOMEM, "math verifier: out of memory");
        goto out;
    }
    /* a response that only restates the question (known to the caller) */
    if (c->question && (pa.tree || pa.fallback || letter[0])) {
        const char *q = c->question;
        size_t qn = c->question_len;
        if (qn > cap) {
            q += qn - cap;
            qn = cap;
        }
        int re = km_restates(&x, q, qn, pred, pred_len, &pa, !letter[0]);
        if (x.fail & KM_F_NOMEM) {
            kd_verdict_set(v, 0, 0.0, "nomem", NULL);
            st = kd_err(KD_E_NOMEM, "math verifier: out of memory");
            goto out;
        }
        if (x.fail & KM_F_BUDGET) {
            kd_verdict_set(v, 0, 0.0, "budget", "the work budget (%ld steps) ran out while reading the question",
                           c->max_steps);
            goto out;
        }
        if (re) {
            kd_verdict_set(v, 0, 0.0, "no_answer", "the response restates the question");
            goto out;
        }
    }
    if (letter[0] && !pa.tree) {
        kd_verdict_set(v, 0, 0.0, "wrong_answer", "chose %s", letter);
        goto out;
    }
    if (!pa.tree && !pa.fallback) {
        kd_verdict_set(v, 0, 0.0, "no_answer", "no answer found in the response");
        goto out;
    }
    if (!ga.tree && !ga.fallback) {
        kd_verdict_set(v, 0, 0.0, "bad_gold", "no answer found in the gold");
        goto out;
    }
    int r = KM_DIFF;
    if (ga.tree && pa.tree)
        r = km_equal(&x, ga.tree, pa.tree);
    if (x.fail & KM_F_NOMEM) {
        kd_verdict_set(v, 0, 0.0, "nomem", NULL);
        st = kd_err(KD_E_NOMEM, "math verifier: out of memory");
        goto out;
    }
    if (r != KM_SAME && ga.fallback && pa.fallback && trim_eq_(ga.fallback, pa.fallback))
        r = KM_SAME;
    if (r == KM_SAME)
        kd_verdict_set(v, 1, 1.0, "correct", NULL);
    else if (x.fail & KM_F_BUDGET)
        kd_verdict_set(v, 0, 0.0, "budget", "the work budget (%ld steps) ran out while comparing", c->max_steps);
    else if (r == KM_BIG)
        kd_verdict_set(v, 0, 0.0, "too_large", "equality would rest on a number past %ld bits", c->max_bits);
    else if (!ga.tree)
        kd_verdict_set(v, 0, 0.0, "bad_gold", "the gold answer '%.60s' does not parse", ga.fallback);
    else if (!pa.tree)
        kd_verdict_set(v, 0, 0.0, "parse_error", "the answer '%.60s' does not parse", pa.fallback);
    else
        kd_verdict_set(v, 0, 0.0, "wrong_answer", NULL);
out:
    km_ctx_release(&x);
    return st;
}

void kd_math_thread_release(void) { mpfr_free_cache(); }
