/* math_parse.c - the math verifier's arena, expression trees and parser.
 *
 * km_parse reads one normalised answer (km_norm_latex's output, or a plain
 * expression from the expression extractor) by recursive descent:
 *
 *     list   := item ((',' | ';') item)*          a top-level list is a set;
 *                                                 ';' groups "p=5,q=2;p=7,q=2"
 *     item   := union (relop union)*              chains become KN_AND; "x \in S" is S
 *     union  := expr (\cup expr)*
 *     expr   := [+|-|\pm] term ((+|-|\pm) term)*
 *     term   := unary ((* | / | : | implicit) unary)*
 *     unary  := (-|+|\pm) unary | power
 *     power  := postfix (^ exponent)?             -x^2 is -(x^2)
 *     postfix:= primary (! | % | ^\circ)*
 *
 * Brackets decide the kind: (a) groups, (a,b) is a KN_PAIR (open interval or
 * pair), [a,b], (a,b], [a,b) are intervals, three or more items a tuple,
 * \{...\} and {a,b} a set. Every recursion passes through enter_(), which
 * enforces max_depth; every node through km_node_new, which enforces
 * max_nodes and counts steps. An unknown command is a parse error: the
 * caller may then retry with the last "=" part, as Math-Verify does.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rejection/math_int.h"

/* ---- arena ------------------------------------------------------------------------ */

struct km_chunk {
    km_chunk *next;
    size_t cap;
    char data[];
};

void km_ctx_init(km_ctx *x, const kd_math_cfg *c)
{
    memset(x, 0, sizeof *x);
    x->cfg = c;
}

void km_ctx_release(km_ctx *x)
{
    km_chunk *c = x->chunks;
    while (c) {
        km_chunk *n = c->next;
        free(c);
        c = n;
    }
    x->chunks = NULL;
    x->cur = NULL;
    x->left = 0;
}

void *km_alloc(km_ctx *x, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if (n == 0)
        n = 8;
    if (n > x->left) {
        size_t cap = n > 48 * 1024 ? n : 48 * 1024;
        km_chunk *c = malloc(sizeof *c + cap);
        if (!c) {
            x->fail |= KM_F_NOMEM;
            return NULL;
        }
        c->cap = cap;
        c->next = x->chunks;
        x->chunks = c;
        x->cur = c->data;
        x->left = cap;
    }
    void *p = x->cur;
    x->cur += n;
    x->left -= n;
    memset(p, 0, n);
    return p;
}

char *km_strndup(km_ctx *x, const char *s, size_t n)
{
    char *p = km_alloc(x, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

int km_step(km_ctx *x, long n)
{
    x->steps += n;
    if (x->steps > x->cfg->max_steps) {
        x->fail |= KM_F_BUDGET;
        return 0;
    }
    return !x->fail;
}

void km_buf_init(km_buf *b, km_ctx *x)
{
    memset(b, 0, sizeof *b);
    b->x = x;
}

void km_buf_put(km_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = km_alloc(b->x, cap);
        if (!p)
            return;
        if (b->n)
            memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void km_buf_putc(km_buf *b, char c) { km_buf_put(b, &c, 1); }
void km_buf_puts(km_buf *b, const char *s) { km_buf_put(b, s, strlen(s)); }

const char *km_buf_str(km_buf *b)
{
    if (!b->p)
        km_buf_put(b, "", 0);
    return b->p ? b->p : "";
}

/* ---- nodes ------------------------------------------------------------------------ */

km_node *km_node_new(km_ctx *x, int kind, int n)
{
    if (x->fail)
        return NULL;
    if (++x->nodes > x->cfg->max_nodes) {
        x->fail |= KM_F_BUDGET;
        return NULL;
    }
    if (!km_step(x, 1))
        return NULL;
    km_node *t = km_alloc(x, sizeof *t);
    if (!t)
        return NULL;
    t->kind = (uint8_t)kind;
    t->n = n;
    if (n > 0) {
        t->kids = km_alloc(x, (size_t)n * sizeof *t->kids);
        if (!t->kids)
            return NULL;
    }
    return t;
}

km_node *km_node2(km_ctx *x, int kind, km_node *a, km_node *b)
{
    if (!a || (!b && kind != KN_PM))
        return NULL;
    km_node *t = km_node_new(x, kind, 2);
    if (!t)
        return NULL;
    t->kids[0] = a;
    t->kids[1] = b;
    return t;
}

static km_node *node1_(km_ctx *x, int kind, km_node *a)
{
    if (!a)
        return NULL;
    km_node *t = km_node_new(x, kind, 1);
    if (t)
        t->kids[0] = a;
    return t;
}

km_node *km_num(km_ctx *x, const char *digits, int flt)
{
    km_node *t = km_node_new(x, KN_NUM, 0);
    if (t) {
        t->s = digits;
        t->flt = (uint8_t)flt;
    }
    return t;
}

km_node *km_sym(km_ctx *x, const char *name)
{
    km_node *t = km_node_new(x, KN_SYM, 0);
    if (t)
        t->s = name;
    return t;
}

km_node *km_const(km_ctx *x, int which)
{
    km_node *t = km_node_new(x, KN_CONST, 0);
    if (t)
        t->op = (uint8_t)which;
    return t;
}

/* ---- canonical keys --------------------------------------------------------------- */

static int keycmp_(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *const func_names_[] = {
    "", "sin", "cos", "tan", "sec", "csc", "cot", "asin", "acos", "atan", "sinh", "cosh",
    "tanh", "ln", "log", "exp", "abs", "floor", "ceil", "binom", "gcd", "lcm", "min", "max", "mod",
};

const char *km_key(km_ctx *x, km_node *t)
{
    if (!t)
        return "";
    if (t->key)
        return t->key;
    if (x->fail)
        return "";
    km_buf b;
    km_buf_init(&b, x);
    const char **ks = NULL;
    if (t->n > 0) {
        ks = km_alloc(x, (size_t)t->n * sizeof *ks);
        if (!ks)
            return "";
        for (int i = 0; i < t->n; i++)
            ks[i] = km_key(x, t->kids[i]);
    }
    static const char *const rel[] = {"", "=", "!=", "<", "<=", ">", ">="};
    switch (t->kind) {
    case KN_NUM: {
        const char *s = t->s;
        while (s[0] == '0' && s[1] && s[1] != '.')
            s++;
        km_buf_puts(&b, t->flt ? "#" : "");
        km_buf_puts(&b, s);
        break;
    }
    case KN_SYM:
        km_buf_puts(&b, t->s);
        break;
    case KN_CONST:
        km_buf_puts(&b, t->op == KC_PI ? "\\pi" : t->op == KC_E ? "\\e" : t->op == KC_I ? "\\i" : "\\oo");
        break;
    case KN_TEXT:
        km_buf_puts(&b, "\\text{");
        km_buf_puts(&b, t->s);
        km_buf_puts(&b, "}");
        break;
    default: {
        int sorted = t->kind == KN_ADD || t->kind == KN_MUL || t->kind == KN_SET || t->kind == KN_UNION;
        if (sorted && t->n > 1)
            qsort(ks, (size_t)t->n, sizeof *ks, keycmp_);
        const char *head = "?";
        char tmp[48];
        switch (t->kind) {
        case KN_ADD: head = "+"; break;
        case KN_MUL: head = "*"; break;
        case KN_DIV: head = "/"; break;
        case KN_POW: head = "^"; break;
        case KN_NEG: head = "neg"; break;
        case KN_FACT: head = "!"; break;
        case KN_FUNC: head = func_names_[t->op]; break;
        case KN_UF: snprintf(tmp, sizeof tmp, "@%.40s", t->s); head = tmp; break;
        case KN_SUM: snprintf(tmp, sizeof tmp, "%s:%.40s", t->op ? "prod" : "sum", t->s); head = tmp; break;
        case KN_REL: head = rel[t->op]; break;
        case KN_AND: head = "and"; break;
        case KN_SET: head = "set"; break;
        case KN_TUPLE: head = "tuple"; break;
        case KN_PAIR: head = "pair"; break;
        case KN_INTERVAL: snprintf(tmp, sizeof tmp, "iv%c%c", t->lopen ? '(' : '[', t->ropen ? ')' : ']'); head = tmp; break;
        case KN_UNION: head = "cup"; break;
        case KN_MATRIX: snprintf(tmp, sizeof tmp, "mat%dx%d", t->rows, t->cols); head = tmp; break;
        case KN_PCT: head = "%"; break;
        case KN_PM: head = "pm"; break;
        }
        km_buf_putc(&b, '(');
        km_buf_puts(&b, head);
        for (int i = 0; i < t->n; i++) {
            km_buf_putc(&b, ' ');
            km_buf_puts(&b, ks[i]);
        }
        km_buf_putc(&b, ')');
    }
    }
    t->key = km_buf_str(&b);
    return t->key;
}

/* ---- lexer ------------------------------------------------------------------------ */

enum { T_END, T_NUM, T_LETTER, T_CMD, T_CH };

typedef struct tok {
    int type;
    const char *p; /* T_NUM: digits; T_CMD: name (after the backslash) */
    int len;
    char ch;       /* T_CH, T_LETTER */
    int sp;        /* whitespace came before it */
    size_t at;     /* offset of the token */
} tok;

typedef struct P {
    km_ctx *x;
    const char *s;
    size_t n, i;
    int plain;
    int depth;
    int abs_depth;
    int nest; /* inside (), [] or \{\}: a comma separates items, not thousands */
    int err;
    const char *bound[8]; /* sum indices in scope */
    int nbound;
    tok t;
} P;

static int is_cmd_(const tok *t, const char *name)
{
    return t->type == T_CMD && (size_t)t->len == strlen(name) && !memcmp(t->p, name, (size_t)t->len);
}

static int is_ch_(const tok *t, char c) { return t->type == T_CH && t->ch == c; }

/* Commands that only space or size things: skipped by the lexer. */
static int skip_cmd_(const char *p, int len)
{
    static const char *const names[] = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl",
                                        "Bigr", "biggl", "biggr", "Biggl", "Biggr", "displaystyle", "textstyle",
                                        "scriptstyle", "limits", "nolimits", "quad", "qquad", "middle", "mathstrut",
                                        "strut", "hfill", "notag", "nonumber", "enspace", "thinspace", "medspace",
                                        "thickspace", "negthinspace", "cr", "hline", "dfrac_", "ensuremath", "$"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if ((size_t)len == strlen(names[k]) && !memcmp(p, names[k], (size_t)len))
            return 1;
    return 0;
}

static void lex_(P *p)
{
    const char *s = p->s;
    size_t n = p->n;
    int sp = 0;
    for (;;) {
        while (p->i < n && (isspace((unsigned char)s[p->i]) || s[p->i] == '~')) {
            p->i++;
            sp = 1;
        }
        if (p->i + 1 < n && s[p->i] == '\\') {
            char c = s[p->i + 1];
            if (c == ',' || c == ';' || c == ':' || c == '!' || c == ' ' || c == '>' || c == '\n' || c == '\t') {
                p->i += 2;
                sp = 1;
                continue;
            }
            if (isalpha((unsigned char)c)) {
                size_t j = p->i + 1;
                while (j < n && isalpha((unsigned char)s[j]))
                    j++;
                const char *nm = s + p->i + 1;
                int len = (int)(j - p->i - 1);
                if (skip_cmd_(nm, len)) {
                    p->i = j;
                    sp = 1;
                    /* \left. and \right. are invisible delimiters */
                    if ((len == 4 && !memcmp(nm, "left", 4)) || (len == 5 && !memcmp(nm, "right", 5)))
                        if (p->i < n && s[p->i] == '.')
                            p->i++;
                    continue;
                }
                /* "\quadx": a spacing command run into the next word */
                if (len > 5 && !memcmp(nm, "qquad", 5)) {
                    p->i += 6;
                    sp = 1;
                    continue;
                }
                if (len > 4 && !memcmp(nm, "quad", 4)) {
                    p->i += 5;
                    sp = 1;
                    continue;
                }
            }
        }
        break;
    }
    tok *t = &p->t;
    memset(t, 0, sizeof *t);
    t->sp = sp;
    t->at = p->i;
    if (p->i >= n) {
        t->type = T_END;
        return;
    }
    unsigned char c = (unsigned char)s[p->i];
    if (isdigit(c) || (c == '.' && p->i + 1 < n && isdigit((unsigned char)s[p->i + 1]))) {
        size_t j = p->i;
        while (j < n && isdigit((unsigned char)s[j]))
            j++;
        /* thousands separators: ",ddd" not followed by a digit (LaTeX only) */
        if (!p->plain && !p->nest && j > p->i && j - p->i <= 3) {
            while (j + 3 < n && s[j] == ',' && isdigit((unsigned char)s[j + 1]) && isdigit((unsigned char)s[j + 2]) &&
                   isdigit((unsigned char)s[j + 3]) && (j + 4 >= n || !isdigit((unsigned char)s[j + 4])))
                j += 4;
        }
        if (j + 1 < n && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
            j++;
            while (j < n && isdigit((unsigned char)s[j]))
                j++;
        } else if (p->plain && j < n && s[j] == '.' && j > p->i) {
            j++; /* "3." as Python reads it */
        }
        t->type = T_NUM;
        t->p = s + p->i;
        t->len = (int)(j - p->i);
        p->i = j;
        return;
    }
    if (isalpha(c)) {
        t->type = T_LETTER;
        t->ch = (char)c;
        p->i++;
        return;
    }
    if (c == '\\' && p->i + 1 < n) {
        size_t j = p->i + 1;
        if (isalpha((unsigned char)s[j])) {
            while (j < n && isalpha((unsigned char)s[j]))
                j++;
        } else {
            j++;
        }
        t->type = T_CMD;
        t->p = s + p->i + 1;
        t->len = (int)(j - p->i - 1);
        p->i = j;
        return;
    }
    t->type = T_CH;
    t->ch = (char)c;
    p->i++;
}

/* ---- parser ----------------------------------------------------------------------- */

static km_node *p_list_top_(P *p);
static km_node *p_rel_(P *p);
static km_node *p_expr_(P *p);
static km_node *p_unary_(P *p);
static km_node *p_power_(P *p);
static km_node *p_primary_(P *p);

static int enter_(P *p)
{
    if (++p->depth > p->x->cfg->max_depth) {
        p->err = 1;
        p->x->deep = 1;
        return 0;
    }
    return 1;
}
#define LEAVE(p) ((p)->depth--)

static km_node *fail_(P *p)
{
    p->err = 1;
    return NULL;
}

static int at_close_(P *p)
{
    const tok *t = &p->t;
    if (t->type == T_END)
        return 1;
    if (t->type == T_CH && (t->ch == ')' || t->ch == ']' || t->ch == '}' || t->ch == '&'))
        return 1;
    if (t->type == T_CH && t->ch == '|' && p->abs_depth > 0)
        return 1;
    if (t->type == T_CMD && (is_cmd_(t, "}") || is_cmd_(t, "\\") || is_cmd_(t, "end") || is_cmd_(t, "rfloor") ||
                             is_cmd_(t, "rceil") || is_cmd_(t, "rangle") || is_cmd_(t, "|") || is_cmd_(t, "rvert") ||
                             is_cmd_(t, "rbrace")))
        return 1;
    return 0;
}

/* Items of a bracketed or top-level list. ';' separates groups when
 * groups != NULL, else it is a plain separator. */
typedef struct items_ {
    km_node **v;
    int n, cap;
} items_;

static int push_(P *p, items_ *it, km_node *t)
{
    if (it->n == it->cap) {
        int cap = it->cap ? 2 * it->cap : 8;
        km_node **v = km_alloc(p->x, (size_t)cap * sizeof *v);
        if (!v)
            return 0;
        if (it->n)
            memcpy(v, it->v, (size_t)it->n * sizeof *v);
        it->v = v;
        it->cap = cap;
    }
    it->v[it->n++] = t;
    return 1;
}

static km_node *from_items_(P *p, int kind, items_ *it)
{
    km_node *t = km_node_new(p->x, kind, it->n);
    if (!t)
        return NULL;
    for (int i = 0; i < it->n; i++)
        t->kids[i] = it->v[i];
    return t;
}

/* Parse items separated by ',' (and ';' when semis is NULL: a plain
 * separator); with semis set, ';' closes a group. */
static int p_items_(P *p, items_ *out, items_ *groups)
{
    for (;;) {
        if (p->err || p->x->fail)
            return 0;
        if (at_close_(p))
            break;
        if (is_ch_(&p->t, ',')) {
            lex_(p);
            continue;
        }
        if (is_ch_(&p->t, ';')) {
            if (groups && out->n) {
                km_node *g = out->n == 1 ? out->v[0] : from_items_(p, KN_TUPLE, out);
                if (!g || !push_(p, groups, g))
                    return 0;
                memset(out, 0, sizeof *out);
            }
            lex_(p);
            continue;
        }
        km_node *e = p_rel_(p);
        if (!e)
            return 0;
        if (!push_(p, out, e))
            return 0;
        if (is_ch_(&p->t, ',') || is_ch_(&p->t, ';'))
            continue;
        break;
    }
    if (groups && groups->n && out->n) {
        km_node *g = out->n == 1 ? out->v[0] : from_items_(p, KN_TUPLE, out);
        if (!g || !push_(p, groups, g))
            return 0;
        memset(out, 0, sizeof *out);
    }
    return !p->err;
}

static km_node *p_list_top_(P *p)
{
    if (!enter_(p))
        return NULL;
    items_ it = {0}, gr = {0};
    km_node *r = NULL;
    if (p_items_(p, &it, &gr)) {
        items_ *use = gr.n ? &gr : &it;
        if (use->n == 1)
            r = use->v[0];
        else if (use->n > 1)
            r = from_items_(p, KN_SET, use);
        else
            r = fail_(p);
    }
    LEAVE(p);
    return r;
}

static int relop_(P *p, int *op, int *approx, int *in)
{
    tok *t = &p->t;
    *approx = *in = 0;
    if (t->type == T_CH) {
        char c = t->ch;
        if (c == '=') {
            lex_(p);
            if (is_ch_(&p->t, '=')) /* "==" */
                lex_(p);
            *op = KR_EQ;
            return 1;
        }
        if (c == '<' || c == '>') {
            lex_(p);
            if (is_ch_(&p->t, '=') && !p->t.sp) {
                lex_(p);
                *op = c == '<' ? KR_LE : KR_GE;
            } else {
                *op = c == '<' ? KR_LT : KR_GT;
            }
            return 1;
        }
        if (c == '!' && p->i < p->n && p->s[p->i] == '=') {
            lex_(p);
            lex_(p);
            *op = KR_NE;
            return 1;
        }
        return 0;
    }
    if (t->type != T_CMD)
        return 0;
    static const struct {
        const char *name;
        int op;
    } ops[] = {{"le", KR_LE},     {"leq", KR_LE},        {"leqslant", KR_LE}, {"ge", KR_GE},  {"geq", KR_GE},
               {"geqslant", KR_GE}, {"lt", KR_LT},       {"gt", KR_GT},       {"ne", KR_NE},  {"neq", KR_NE},
               {"approx", -1},    {"simeq", -1},         {"thickapprox", -1}, {"in", -2},     {"equiv", KR_EQ}};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        if (is_cmd_(t, ops[k].name)) {
            lex_(p);
            if (ops[k].op == -1) {
                *op = KR_EQ;
                *approx = 1;
            } else if (ops[k].op == -2) {
                *op = KR_EQ;
                *in = 1;
            } else {
                *op = ops[k].op;
            }
            return 1;
        }
    return 0;
}

/* expr (\cup expr)* */
static km_node *p_union_(P *p)
{
    km_node *e = p_expr_(p);
    if (!e || !(is_cmd_(&p->t, "cup") || is_cmd_(&p->t, "union")))
        return e;
    items_ it = {0};
    if (!push_(p, &it, e))
        return NULL;
    while (is_cmd_(&p->t, "cup") || is_cmd_(&p->t, "union")) {
        lex_(p);
        km_node *u = p_expr_(p);
        if (!u || !push_(p, &it, u))
            return NULL;
    }
    return from_items_(p, KN_UNION, &it);
}

static km_node *p_rel_(P *p)
{
    if (!enter_(p))
        return NULL;
    km_node *xs[34];
    int ops[34], apx[34], n = 0, in_at = -1;
    km_node *r = NULL;
    xs[0] = p_union_(p);
    if (!xs[0])
        goto out;
    for (;;) {
        int op, approx, in;
        if (n >= 32 || !relop_(p, &op, &approx, &in))
            break;
        if (in && in_at < 0)
            in_at = n;
        ops[n] = op;
        apx[n] = approx;
        km_node *e = p_union_(p);
        if (!e) {
            /* "x = " with nothing after: not an answer */
            goto out;
        }
        xs[++n] = e;
    }
    if (in_at >= 0) { /* "x \in S" is S */
        r = xs[in_at + 1];
        goto out;
    }
    if (n == 0) {
        r = xs[0];
        goto out;
    }
    /* "x = 1/3 \approx 0.33" keeps the exact part; a lone \approx is "=" */
    int first_apx = -1, eq_before = 0;
    for (int k = 0; k < n; k++) {
        if (apx[k]) {
            first_apx = k;
            break;
        }
        if (ops[k] == KR_EQ)
            eq_before = 1;
    }
    if (first_apx >= 0 && eq_before)
        n = first_apx;
    if (n == 1) {
        r = km_node2(p->x, KN_REL, xs[0], xs[1]);
        if (r)
            r->op = (uint8_t)ops[0];
        goto out;
    }
    r = km_node_new(p->x, KN_AND, n);
    if (!r)
        goto out;
    for (int k = 0; k < n; k++) {
        km_node *e = km_node2(p->x, KN_REL, xs[k], xs[k + 1]);
        if (!e) {
            r = NULL;
            goto out;
        }
        e->op = (uint8_t)ops[k];
        r->kids[k] = e;
    }
out:
    LEAVE(p);
    return r;
}

static km_node *p_term_(P *p);

/* +-t: kids[0] NULL, kids[1] t */
static km_node *pm1_(km_ctx *x, km_node *t)
{
    if (!t)
        return NULL;
    km_node *r = km_node_new(x, KN_PM, 2);
    if (r)
        r->kids[1] = t;
    return r;
}

static km_node *p_expr_(P *p)
{
    if (!enter_(p))
        return NULL;
    items_ terms = {0};
    km_node *r = NULL, *acc = NULL;
    int sign = 0, pm = 0;
    if (is_ch_(&p->t, '+')) {
        lex_(p);
    } else if (is_ch_(&p->t, '-')) {
        sign = 1;
        lex_(p);
    } else if (is_cmd_(&p->t, "pm") || is_cmd_(&p->t, "mp")) {
        pm = 1;
        lex_(p);
    }
    km_node *t = p_term_(p);
    if (!t)
        goto out;
    if (sign)
        t = node1_(p->x, KN_NEG, t);
    if (pm)
        t = pm1_(p->x, t);
    if (!t || !push_(p, &terms, t))
        goto out;
    for (;;) {
        int neg = 0, ispm = 0;
        if (is_ch_(&p->t, '+'))
            ;
        else if (is_ch_(&p->t, '-'))
            neg = 1;
        else if (is_cmd_(&p->t, "pm") || is_cmd_(&p->t, "mp"))
            ispm = 1;
        else
            break;
        lex_(p);
        km_node *u = p_term_(p);
        if (!u)
            goto out;
        if (ispm) {
            acc = terms.n == 1 ? terms.v[0] : from_items_(p, KN_ADD, &terms);
            acc = km_node2(p->x, KN_PM, acc, u);
            if (!acc)
                goto out;
            terms.n = 0;
            if (!push_(p, &terms, acc))
                goto out;
            continue;
        }
        if (neg)
            u = node1_(p->x, KN_NEG, u);
        if (!u || !push_(p, &terms, u))
            goto out;
    }
    r = terms.n == 1 ? terms.v[0] : from_items_(p, KN_ADD, &terms);
out:
    LEAVE(p);
    return r;
}

/* Can the current token begin a factor of an implicit product? */
static int starts_factor_(P *p)
{
    const tok *t = &p->t;
    if (t->type == T_NUM || t->type == T_LETTER)
        return 1;
    if (t->type == T_CH)
        return t->ch == '(' || (t->ch == '|' && p->abs_depth == 0) || t->ch == '{';
    if (t->type == T_CMD) {
        static const char *const no[] = {"cdot", "times", "div", "pm", "mp", "le", "leq", "ge", "geq", "lt", "gt",
                                         "ne", "neq", "approx", "in", "cup", "cap", "to", "rightarrow", "Rightarrow",
                                         "implies", "iff", "%", "circ", "equiv", "setminus", "}", "\\", "end",
                                         "rfloor", "rceil", "rangle", "|", "leqslant", "geqslant", "simeq", "ast",
                                         "mid", "rvert", "rbrace", "colon", "cap", "wedge", "vee", "land", "lor"};
        for (size_t k = 0; k < sizeof no / sizeof no[0]; k++)
            if (is_cmd_(t, no[k]))
                return 0;
        return 1;
    }
    return 0;
}

static int is_int_num_(const km_node *t) { return t && t->kind == KN_NUM && !t->flt; }

/* acc times u, implicitly ("2x", "\\cos 2x"): an implicit product (op 2) grows by one factor */
static km_node *implicit_mul_(P *p, km_node *acc, km_node *u)
{
    if (acc->kind == KN_MUL && acc->op == 2) {
        km_node *m = km_node_new(p->x, KN_MUL, acc->n + 1);
        if (!m)
            return NULL;
        memcpy(m->kids, acc->kids, (size_t)acc->n * sizeof *m->kids);
        m->kids[acc->n] = u;
        m->op = 2;
        return m;
    }
    km_node *m = km_node2(p->x, KN_MUL, acc, u);
    if (m)
        m->op = 2;
    return m;
}

static km_node *p_term_(P *p)
{
    if (!enter_(p))
        return NULL;
    km_node *r = NULL;
    km_node *acc = p_unary_(p);
    int nf = 1;
    if (!acc)
        goto out;
    for (;;) {
        if (p->err || p->x->fail)
            goto out;
        tok *t = &p->t;
        int kind = 0;
        if (is_ch_(t, '*') && !(p->i < p->n && p->s[p->i] == '*')) {
            kind = KN_MUL;
        } else if (is_cmd_(t, "cdot") || is_cmd_(t, "times") || is_cmd_(t, "ast")) {
            kind = KN_MUL;
        } else if (is_ch_(t, '/') || is_cmd_(t, "div")) {
            kind = KN_DIV;
        } else if (is_ch_(t, ':') || is_cmd_(t, "colon")) {
            kind = KN_DIV;
        }
        if (kind) {
            lex_(p);
            km_node *u = p_unary_(p);
            if (!u)
                goto out;
            acc = km_node2(p->x, kind, acc, u);
            if (!acc)
                goto out;
            nf++;
            continue;
        }
        if (p->plain || !starts_factor_(p))
            break;
        /* mixed numbers: 3\frac{1}{2}, "3 1/2" */
        if (nf == 1 && is_int_num_(acc) && is_cmd_(t, "frac")) {
            km_node *u = p_power_(p);
            if (!u)
                goto out;
            if (u->kind == KN_DIV && u->op == 1 && is_int_num_(u->kids[0]) && is_int_num_(u->kids[1]))
                acc = km_node2(p->x, KN_ADD, acc, u);
            else
                acc = km_node2(p->x, KN_MUL, acc, u);
            if (!acc)
                goto out;
            nf++;
            continue;
        }
        if (nf == 1 && is_int_num_(acc) && t->type == T_NUM && t->sp) {
            P save = *p;
            km_node *a = p_primary_(p);
            if (a && is_int_num_(a) && is_ch_(&p->t, '/')) {
                lex_(p);
                if (p->t.type == T_NUM) {
                    km_node *b = p_primary_(p);
                    if (b && is_int_num_(b) && !starts_factor_(p) && !is_ch_(&p->t, '^')) {
                        km_node *d = km_node2(p->x, KN_DIV, a, b);
                        if (d)
                            d->op = 1;
                        acc = km_node2(p->x, KN_ADD, acc, d);
                        if (!acc)
                            goto out;
                        nf++;
                        continue;
                    }
                }
            }
            *p = save; /* not a mixed number: read it again as a product */
        }
        km_node *u = p_unary_(p);
        if (!u || !(acc = implicit_mul_(p, acc, u)))
            goto out;
        nf++;
    }
    r = acc;
out:
    LEAVE(p);
    return r;
}

static km_node *p_unary_(P *p)
{
    if (!enter_(p))
        return NULL;
    km_node *r = NULL;
    if (is_ch_(&p->t, '-')) {
        lex_(p);
        r = node1_(p->x, KN_NEG, p_unary_(p));
    } else if (is_ch_(&p->t, '+')) {
        lex_(p);
        r = p_unary_(p);
    } else if (is_cmd_(&p->t, "pm") || is_cmd_(&p->t, "mp")) {
        lex_(p);
        r = pm1_(p->x, p_unary_(p));
    } else {
        r = p_power_(p);
    }
    LEAVE(p);
    return r;
}

/* A braced group's content, or one token: \frac12, \sqrt3, x^2, 10^{-3}. */
static km_node *p_arg_(P *p)
{
    if (!enter_(p))
        return NULL;
    km_node *r = NULL;
    tok *t = &p->t;
    if (is_ch_(t, '{')) {
        lex_(p);
        r = p_list_top_(p);
        if (r && !is_ch_(&p->t, '}'))
            r = fail_(p);
        else if (r)
            lex_(p);
    } else if (t->type == T_NUM) {
        /* one digit only */
        int len = (t->p[0] == '.') ? 0 : 1;
        if (len == 0 || t->len == 1) {
            r = km_num(p->x, km_strndup(p->x, t->p, (size_t)t->len), memchr(t->p, '.', (size_t)t->len) != NULL);
            lex_(p);
        } else {
            r = km_num(p->x, km_strndup(p->x, t->p, 1), 0);
            t->p++;
            t->len--;
            t->sp = 0;
            if (t->p[0] == ',' || t->p[0] == '.') { /* split a thousands/decimal tail: re-lex */
                p->i = (size_t)(t->p - p->s);
                lex_(p);
            }
        }
    } else if (t->type == T_LETTER || t->type == T_CMD) {
        r = p_primary_(p);
    } else if (is_ch_(t, '-')) {
        lex_(p);
        r = node1_(p->x, KN_NEG, p_arg_(p));
    } else if (is_ch_(t, '(')) {
        r = p_primary_(p);
    } else {
        r = fail_(p);
    }
    LEAVE(p);
    return r;
}

static km_node *p_postfix_(P *p, km_node *b)
{
    for (;;) {
        if (!b)
            return NULL;
        tok *t = &p->t;
        if (is_ch_(t, '!') && !(p->i < p->n && p->s[p->i] == '=')) {
            lex_(p);
            b = node1_(p->x, KN_FACT, b);
        } else if (is_ch_(t, '%') || is_cmd_(t, "%")) {
            lex_(p);
            b = node1_(p->x, KN_PCT, b);
        } else if (is_cmd_(t, "circ") || is_cmd_(t, "degree")) {
            lex_(p);
        } else if (is_ch_(t, '\'') || is_cmd_(t, "prime")) {
            lex_(p);
            km_node *u = km_node_new(p->x, KN_UF, 1);
            if (!u)
                return NULL;
            u->s = "prime";
            u->kids[0] = b;
            b = u;
        } else {
            return b;
        }
    }
}

static km_node *p_power_(P *p)
{
    if (!enter_(p))
        return NULL;
    km_node *r = NULL;
    km_node *b = p_postfix_(p, p_primary_(p));
    while (b) {
        int pw = 0;
        if (is_ch_(&p->t, '^'))
            pw = 1;
        else if (p->plain && is_ch_(&p->t, '*') && p->i < p->n && p->s[p->i] == '*')
            pw = 2;
        if (!pw)
            break;
        lex_(p);
        if (pw == 2)
            lex_(p);
        /* degrees: 90^\circ, 90^{\circ} */
        if (is_cmd_(&p->t, "circ") || is_cmd_(&p->t, "degree")) {
            lex_(p);
            continue;
        }
        if (is_ch_(&p->t, '{') && p->i < p->n) {
            size_t j = p->i;
            while (j < p->n && p->s[j] == ' ')
                j++;
            if (j + 5 <= p->n && !memcmp(p->s + j, "\\circ", 5)) {
                lex_(p);
                lex_(p);
                if (is_ch_(&p->t, '}'))
                    lex_(p);
                continue;
            }
        }
        km_node *e = p->plain ? p_unary_(p) : p_arg_(p);
        if (!e) {
            b = NULL;
            break;
        }
        b = p_postfix_(p, km_node2(p->x, KN_POW, b, e));
    }
    r = b;
    LEAVE(p);
    return r;
}

/* Read a raw braced group {...} (balanced) at the current token; returns the
 * inside and re-lexes after it. */
static const char *raw_group_(P *p, size_t *len)
{
    if (!is_ch_(&p->t, '{'))
        return NULL;
    size_t j = p->t.at + 1, depth = 1;
    while (j < p->n && depth) {
        if (p->s[j] == '\\' && j + 1 < p->n) {
            j += 2;
            continue;
        }
        if (p->s[j] == '{')
            depth++;
        else if (p->s[j] == '}')
            depth--;
        j++;
    }
    if (depth)
        return NULL;
    const char *in = p->s + p->t.at + 1;
    *len = j - 1 - (p->t.at + 1);
    p->i = j;
    lex_(p);
    return in;
}

/* A number written inside \text{}: "13", "1.5", " 42 ". */
static int text_number_(const char *s, size_t n, const char **d, size_t *dn)
{
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    size_t dots = 0;
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.')
            dots++;
        else if (!isdigit((unsigned char)s[i]))
            return 0;
    }
    if (dots > 1 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    *d = s;
    *dn = n;
    return 1;
}

/* Normalise a \text{} phrase: trim, collapse spaces, drop one pair of
 * wrapping parentheses ("(C)" -> "C"). */
static const char *text_norm_(km_ctx *x, const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (n >= 3 && s[0] == '(' && s[n - 1] == ')' && !memchr(s + 1, '(', n - 2)) {
        s++;
        n -= 2;
        while (n && isspace((unsigned char)*s))
            s++, n--;
        while (n && isspace((unsigned char)s[n - 1]))
            n--;
    }
    km_buf b;
    km_buf_init(&b, x);
    int sp = 0;
    for (size_t i = 0; i < n; i++) {
        if (isspace((unsigned char)s[i]) || s[i] == '~') {
            sp = 1;
            continue;
        }
        if (sp && b.n)
            km_buf_putc(&b, ' ');
        sp = 0;
        km_buf_putc(&b, s[i]);
    }
    return km_buf_str(&b);
}

static int func_id_(const char *nm, int len, int *inv)
{
    static const struct {
        const char *n;
        int id;
    } fs[] = {{"sin", KF_SIN},     {"cos", KF_COS},     {"tan", KF_TAN},       {"sec", KF_SEC},       {"csc", KF_CSC},
              {"cot", KF_COT},     {"arcsin", KF_ASIN}, {"arccos", KF_ACOS},   {"arctan", KF_ATAN},   {"sinh", KF_SINH},
              {"cosh", KF_COSH},   {"tanh", KF_TANH},   {"ln", KF_LN},         {"log", KF_LOG},       {"lg", KF_LOG},
              {"exp", KF_EXP},     {"gcd", KF_GCD},     {"lcm", KF_LCM},       {"min", KF_MIN},       {"max", KF_MAX},
              {"asin", KF_ASIN},   {"acos", KF_ACOS},   {"atan", KF_ATAN},     {"cosec", KF_CSC},     {"ctg", KF_COT},
              {"tg", KF_TAN},      {"abs", KF_ABS},     {"floor", KF_FLOOR},   {"ceil", KF_CEIL},     {"operatorname", 0}};
    *inv = 0;
    for (size_t k = 0; k < sizeof fs / sizeof fs[0]; k++)
        if ((size_t)len == strlen(fs[k].n) && !memcmp(nm, fs[k].n, (size_t)len))
            return fs[k].id;
    return -1;
}

static km_node *p_func_(P *p, int id)
{
    km_node *expo = NULL, *base = NULL;
    /* \sin^2 x, \sin^{-1} x, \log_2 8 */
    for (int k = 0; k < 2; k++) {
        if (is_ch_(&p->t, '^')) {
            lex_(p);
            expo = p_arg_(p);
            if (!expo)
                return NULL;
        } else if (is_ch_(&p->t, '_')) {
            lex_(p);
            base = p_arg_(p);
            if (!base)
                return NULL;
        }
    }
    if (expo && expo->kind == KN_NEG && expo->kids[0]->kind == KN_NUM && !strcmp(expo->kids[0]->s, "1") &&
        id >= KF_SIN && id <= KF_TAN) {
        id = id == KF_SIN ? KF_ASIN : id == KF_COS ? KF_ACOS : KF_ATAN;
        expo = NULL;
    }
    km_node *arg;
    int multi = id == KF_GCD || id == KF_LCM || id == KF_MIN || id == KF_MAX;
    items_ args = {0};
    if (is_ch_(&p->t, '(') || is_ch_(&p->t, '{')) {
        char close = is_ch_(&p->t, '(') ? ')' : '}';
        lex_(p);
        if (!p_items_(p, &args, NULL))
            return NULL;
        if (!is_ch_(&p->t, close) || args.n == 0)
            return fail_(p);
        lex_(p);
        arg = args.v[0];
    } else {
        arg = p_power_(p);
        if (!arg)
            return NULL;
        /* Without parentheses the argument runs over an implicit product of
         * factors that are not functions, as latex2sympy reads it: \cos 2x is
         * cos(2x), \sin 2\theta sin(2 theta), \sin x \cos x still sin(x) cos(x). */
        while (!multi && !p->plain && starts_factor_(p)) {
            int inv2;
            if (p->t.type == T_CMD && (func_id_(p->t.p, p->t.len, &inv2) >= 0 || is_cmd_(&p->t, "mathop")))
                break;
            km_node *u = p_power_(p);
            if (!u || !(arg = implicit_mul_(p, arg, u)))
                return NULL;
        }
        push_(p, &args, arg);
    }
    km_node *f;
    if (multi) {
        f = from_items_(p, KN_FUNC, &args);
    } else {
        if (args.n != 1)
            return fail_(p);
        f = km_node_new(p->x, KN_FUNC, base && id == KF_LOG ? 2 : 1);
        if (f) {
            f->kids[0] = arg;
            if (base && id == KF_LOG)
                f->kids[1] = base;
        }
    }
    if (f)
        f->op = (uint8_t)id;
    if (expo)
        f = km_node2(p->x, KN_POW, f, expo);
    return f;
}

static int greek_(const char *nm, int len)
{
    static const char *const g[] = {
        "alpha", "beta",  "gamma",   "delta", "epsilon", "varepsilon", "zeta",  "eta",   "theta", "vartheta",
        "iota",  "kappa", "lambda",  "mu",    "nu",      "xi",         "omicron", "rho",   "sigma", "tau",
        "upsilon", "phi", "varphi",  "chi",   "psi",     "omega",      "Gamma", "Delta", "Theta", "Lambda",
        "Xi",    "Pi",    "Sigma",   "Upsilon", "Phi",   "Psi",        "Omega", "ell",   "varrho", "varsigma"};
    for (size_t k = 0; k < sizeof g / sizeof g[0]; k++)
        if ((size_t)len == strlen(g[k]) && !memcmp(nm, g[k], (size_t)len))
            return 1;
    return 0;
}

static km_node *p_matrix_(P *p, const char *env, size_t envlen)
{
    /* array's column spec */
    if (is_ch_(&p->t, '{') && envlen == 5 && !memcmp(env, "array", 5)) {
        size_t len;
        if (!raw_group_(p, &len))
            return fail_(p);
    }
    items_ cells = {0};
    int rows = 0, cols = -1, in_row = 0;
    for (;;) {
        if (p->err || p->x->fail)
            return NULL;
        km_node *c = NULL;
        if (!is_ch_(&p->t, '&') && !is_cmd_(&p->t, "\\") && !is_cmd_(&p->t, "end")) {
            c = p_rel_(p);
            if (!c)
                return NULL;
            while (is_cmd_(&p->t, "hline"))
                lex_(p);
        }
        if (c) {
            if (!push_(p, &cells, c))
                return NULL;
            in_row++;
        } else if (is_ch_(&p->t, '&')) {
            return fail_(p); /* empty cell */
        }
        if (is_ch_(&p->t, '&')) {
            lex_(p);
            continue;
        }
        if (is_cmd_(&p->t, "\\") || is_cmd_(&p->t, "end")) {
            int end = is_cmd_(&p->t, "end");
            if (in_row) {
                if (cols < 0)
                    cols = in_row;
                else if (cols != in_row)
                    return fail_(p);
                rows++;
            }
            in_row = 0;
            lex_(p);
            if (end) {
                size_t len;
                if (!raw_group_(p, &len))
                    return fail_(p);
                break;
            }
            continue;
        }
        return fail_(p);
    }
    if (rows == 0 || cols <= 0)
        return fail_(p);
    km_node *m = from_items_(p, KN_MATRIX, &cells);
    if (m) {
        m->rows = rows;
        m->cols = cols;
    }
    return m;
}

/* (..), [..]: a group, a pair, an interval or a tuple by what closes it. */
static km_node *p_bracket_(P *p, char open)
{
    p->nest++;
    lex_(p);
    items_ it = {0};
    int ok = p_items_(p, &it, NULL);
    p->nest--;
    if (!ok)
        return NULL;
    char close = 0;
    if (is_ch_(&p->t, ')') || is_ch_(&p->t, ']'))
        close = p->t.ch;
    else if (is_cmd_(&p->t, "rangle"))
        close = ')';
    else
        return fail_(p);
    lex_(p);
    if (it.n == 0)
        return fail_(p);
    if (it.n == 1) {
        if (open == '[' && close == ']')
            return it.v[0];
        if (open == '(' && close == ')')
            return it.v[0];
        return fail_(p);
    }
    if (it.n == 2) {
        if (open == '(' && close == ')')
            return from_items_(p, KN_PAIR, &it);
        km_node *t = from_items_(p, KN_INTERVAL, &it);
        if (t) {
            t->lopen = open == '(';
            t->ropen = close == ')';
        }
        return t;
    }
    return from_items_(p, KN_TUPLE, &it);
}

static int function_letter_(char c) { return strchr("fghFGHPQWpq", c) != NULL; }

static km_node *p_primary_(P *p)
{
    if (!enter_(p))
        return NULL;
    km_node *r = NULL;
    tok t = p->t;
    km_ctx *x = p->x;
    if (t.type == T_NUM) {
        lex_(p);
        /* strip thousands commas */
        km_buf b;
        km_buf_init(&b, x);
        int dot = 0;
        for (int k = 0; k < t.len; k++) {
            if (t.p[k] == ',')
                continue;
            if (t.p[k] == '.')
                dot = 1;
            km_buf_putc(&b, t.p[k]);
        }
        const char *d = km_buf_str(&b);
        if (d[0] == '.') {
            km_buf b2;
            km_buf_init(&b2, x);
            km_buf_putc(&b2, '0');
            km_buf_puts(&b2, d);
            d = km_buf_str(&b2);
        }
        r = km_num(x, d, dot);
        if (r && is_ch_(&p->t, '_') && !p->t.sp) { /* 204_5: a number in base 5 */
            lex_(p);
            size_t len = 0;
            const char *g = NULL;
            char one[2] = {0, 0};
            if (is_ch_(&p->t, '{')) {
                g = raw_group_(p, &len);
            } else if (p->t.type == T_NUM || p->t.type == T_LETTER) {
                one[0] = p->t.type == T_NUM ? p->t.p[0] : p->t.ch;
                g = one;
                len = 1;
                if (p->t.type == T_NUM && p->t.len > 1) {
                    p->i = p->t.at + 1;
                }
                lex_(p);
            }
            if (!g) {
                r = fail_(p);
            } else {
                km_buf b3;
                km_buf_init(&b3, x);
                km_buf_puts(&b3, d);
                km_buf_putc(&b3, '_');
                km_buf_put(&b3, g, len);
                km_node *u = km_node_new(x, KN_TEXT, 0);
                if (u)
                    u->s = km_buf_str(&b3);
                r = u;
            }
        }
        goto out;
    }
    if (t.type == T_LETTER) {
        lex_(p);
        char name[2] = {t.ch, 0};
        if (is_ch_(&p->t, '_') && !p->t.sp) {
            lex_(p);
            size_t len = 0;
            const char *g = NULL;
            char one[2] = {0, 0};
            if (is_ch_(&p->t, '{')) {
                g = raw_group_(p, &len);
            } else if (p->t.type == T_NUM) {
                one[0] = p->t.p[0];
                g = one;
                len = 1;
                if (p->t.len > 1)
                    p->i = p->t.at + 1;
                lex_(p);
            } else if (p->t.type == T_LETTER) {
                one[0] = p->t.ch;
                g = one;
                len = 1;
                lex_(p);
            } else if (p->t.type == T_CMD) {
                g = p->t.p - 1;
                len = (size_t)p->t.len + 1;
                lex_(p);
            }
            if (!g) {
                r = fail_(p);
                goto out;
            }
            while (len && isspace((unsigned char)*g))
                g++, len--;
            while (len && isspace((unsigned char)g[len - 1]))
                len--;
            int has_letter = 0;
            for (size_t k = 0; k < len; k++)
                if (isalpha((unsigned char)g[k]) || g[k] == '\\')
                    has_letter = 1;
            if (!has_letter) {
                km_buf b;
                km_buf_init(&b, x);
                km_buf_putc(&b, t.ch);
                km_buf_putc(&b, '_');
                for (size_t k = 0; k < len; k++)
                    if (!isspace((unsigned char)g[k]))
                        km_buf_putc(&b, g[k]);
                r = km_sym(x, km_buf_str(&b));
            } else {
                /* x_n, F_{n-k-1}: an indexed family, evaluated as a function */
                P sub = *p;
                sub.s = g;
                sub.n = len;
                sub.i = 0;
                sub.err = 0;
                lex_(&sub);
                km_node *e = p_list_top_(&sub);
                if (!e || sub.t.type != T_END) {
                    p->err = 1;
                    goto out;
                }
                p->depth = sub.depth;
                km_node *u = km_node_new(x, KN_UF, 1);
                if (!u)
                    goto out;
                u->s = km_strndup(x, name, 1);
                u->kids[0] = e;
                r = u;
            }
            goto out;
        }
        int bound = 0;
        for (int k = 0; k < p->nbound; k++)
            if (!strcmp(p->bound[k], name))
                bound = 1;
        if (!bound && t.ch == 'e') {
            r = km_const(x, KC_E);
            goto out;
        }
        if (!bound && t.ch == 'i') {
            r = km_const(x, KC_I);
            goto out;
        }
        if (function_letter_(t.ch) && is_ch_(&p->t, '(') && !p->t.sp && !p->plain) {
            lex_(p);
            items_ args = {0};
            if (!p_items_(p, &args, NULL))
                goto out;
            if (!is_ch_(&p->t, ')') || args.n == 0) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            km_node *u = from_items_(p, KN_UF, &args);
            if (u)
                u->s = km_strndup(x, name, 1);
            r = u;
            goto out;
        }
        r = km_sym(x, km_strndup(x, name, 1));
        goto out;
    }
    if (t.type == T_CH) {
        if (t.ch == '(' || t.ch == '[') {
            int save_abs = p->abs_depth;
            p->abs_depth = 0;
            r = p_bracket_(p, t.ch);
            p->abs_depth = save_abs;
            goto out;
        }
        if (t.ch == '{') {
            lex_(p);
            int save_abs = p->abs_depth;
            p->abs_depth = 0;
            items_ it = {0};
            if (p_items_(p, &it, NULL)) {
                if (!is_ch_(&p->t, '}')) {
                    r = fail_(p);
                } else {
                    lex_(p);
                    if (it.n == 1)
                        r = it.v[0];
                    else
                        r = from_items_(p, KN_SET, &it); /* {} and {a,b} */
                }
            }
            p->abs_depth = save_abs;
            goto out;
        }
        if (t.ch == '|') {
            lex_(p);
            p->abs_depth++;
            km_node *e = p_expr_(p);
            p->abs_depth--;
            if (!e)
                goto out;
            if (!is_ch_(&p->t, '|')) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            r = node1_(x, KN_FUNC, e);
            if (r)
                r->op = KF_ABS;
            goto out;
        }
        r = fail_(p);
        goto out;
    }
    if (t.type == T_CMD) {
        const char *nm = t.p;
        int len = t.len;
        int inv;
        lex_(p);
        if (is_cmd_(&t, "frac") || is_cmd_(&t, "dfrac") || is_cmd_(&t, "tfrac") || is_cmd_(&t, "cfrac")) {
            km_node *a = p_arg_(p);
            km_node *b = a ? p_arg_(p) : NULL;
            r = km_node2(x, KN_DIV, a, b);
            if (r)
                r->op = 1;
            goto out;
        }
        if (is_cmd_(&t, "binom") || is_cmd_(&t, "dbinom") || is_cmd_(&t, "tbinom")) {
            km_node *a = p_arg_(p);
            km_node *b = a ? p_arg_(p) : NULL;
            r = km_node2(x, KN_FUNC, a, b);
            if (r)
                r->op = KF_BINOM;
            goto out;
        }
        if (is_cmd_(&t, "sqrt")) {
            km_node *idx = NULL;
            if (is_ch_(&p->t, '[')) {
                lex_(p);
                idx = p_expr_(p);
                if (!idx || !is_ch_(&p->t, ']')) {
                    r = fail_(p);
                    goto out;
                }
                lex_(p);
            }
            km_node *a = p_arg_(p);
            if (!a)
                goto out;
            km_node *e = idx ? km_node2(x, KN_DIV, km_num(x, "1", 0), idx) : km_node2(x, KN_DIV, km_num(x, "1", 0), km_num(x, "2", 0));
            r = km_node2(x, KN_POW, a, e);
            goto out;
        }
        if (is_cmd_(&t, "pi")) {
            r = km_const(x, KC_PI);
            goto out;
        }
        if (is_cmd_(&t, "infty") || is_cmd_(&t, "infin")) {
            r = km_const(x, KC_INF);
            goto out;
        }
        if (is_cmd_(&t, "imath") || is_cmd_(&t, "i")) {
            r = km_const(x, KC_I);
            goto out;
        }
        if (is_cmd_(&t, "emptyset") || is_cmd_(&t, "varnothing")) {
            r = km_node_new(x, KN_SET, 0);
            goto out;
        }
        if (is_cmd_(&t, "{") || is_cmd_(&t, "lbrace")) {
            items_ it = {0};
            int save_abs = p->abs_depth;
            p->abs_depth = 0;
            p->nest++;
            p->i = p->t.at; /* re-read the first item under the list rule */
            lex_(p);
            int ok = p_items_(p, &it, NULL);
            p->nest--;
            if (ok) {
                if (!is_cmd_(&p->t, "}") && !is_cmd_(&p->t, "rbrace")) {
                    r = fail_(p);
                } else {
                    lex_(p);
                    r = from_items_(p, KN_SET, &it);
                }
            }
            p->abs_depth = save_abs;
            goto out;
        }
        if (is_cmd_(&t, "langle")) {
            r = p_bracket_(p, '(');
            if (r && r->kind == KN_PAIR)
                r->kind = KN_TUPLE;
            goto out;
        }
        if (is_cmd_(&t, "lfloor") || is_cmd_(&t, "lceil")) {
            km_node *e = p_expr_(p);
            if (!e)
                goto out;
            if (!is_cmd_(&p->t, "rfloor") && !is_cmd_(&p->t, "rceil")) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            r = node1_(x, KN_FUNC, e);
            if (r)
                r->op = is_cmd_(&t, "lfloor") ? KF_FLOOR : KF_CEIL;
            goto out;
        }
        if (is_cmd_(&t, "|") || is_cmd_(&t, "lvert") || is_cmd_(&t, "vert") || is_cmd_(&t, "lVert") ||
            is_cmd_(&t, "Vert")) {
            p->abs_depth++;
            km_node *e = p_expr_(p);
            p->abs_depth--;
            if (!e)
                goto out;
            if (!is_cmd_(&p->t, "|") && !is_cmd_(&p->t, "rvert") && !is_cmd_(&p->t, "vert") && !is_ch_(&p->t, '|') &&
                !is_cmd_(&p->t, "rVert") && !is_cmd_(&p->t, "Vert")) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            r = node1_(x, KN_FUNC, e);
            if (r)
                r->op = KF_ABS;
            goto out;
        }
        if (is_cmd_(&t, "text") || is_cmd_(&t, "textbf") || is_cmd_(&t, "textit") || is_cmd_(&t, "textrm") ||
            is_cmd_(&t, "textnormal") || is_cmd_(&t, "mbox") || is_cmd_(&t, "mathrm") || is_cmd_(&t, "mathit") ||
            is_cmd_(&t, "mathsf") || is_cmd_(&t, "texttt") || is_cmd_(&t, "textsf") || is_cmd_(&t, "mathbf") ||
            is_cmd_(&t, "boldsymbol") || is_cmd_(&t, "bm") || is_cmd_(&t, "mathbb") || is_cmd_(&t, "mathcal") ||
            is_cmd_(&t, "vec") || is_cmd_(&t, "overline") || is_cmd_(&t, "hat") || is_cmd_(&t, "bar") ||
            is_cmd_(&t, "tilde") || is_cmd_(&t, "overrightarrow") || is_cmd_(&t, "widehat") || is_cmd_(&t, "underline") ||
            is_cmd_(&t, "operatorname") || is_cmd_(&t, "mathop")) {
            size_t glen = 0;
            const char *g = NULL;
            char one[2] = {0, 0};
            if (is_ch_(&p->t, '{')) {
                g = raw_group_(p, &glen);
            } else if (p->t.type == T_LETTER) {
                one[0] = p->t.ch;
                g = one;
                glen = 1;
                lex_(p);
            }
            if (!g) {
                r = fail_(p);
                goto out;
            }
            const char *d;
            size_t dn;
            if (text_number_(g, glen, &d, &dn)) {
                r = km_num(x, km_strndup(x, d, dn), memchr(d, '.', dn) != NULL);
                goto out;
            }
            const char *w = text_norm_(x, g, glen);
            if (is_cmd_(&t, "operatorname") || is_cmd_(&t, "mathop")) {
                int id = func_id_(w, (int)strlen(w), &inv);
                if (id > 0) {
                    r = p_func_(p, id);
                    goto out;
                }
                if (is_ch_(&p->t, '(')) {
                    lex_(p);
                    items_ args = {0};
                    if (!p_items_(p, &args, NULL))
                        goto out;
                    if (!is_ch_(&p->t, ')') || args.n == 0) {
                        r = fail_(p);
                        goto out;
                    }
                    lex_(p);
                    r = from_items_(p, KN_UF, &args);
                    if (r)
                        r->s = w;
                    goto out;
                }
            }
            if (!w[0]) {
                /* an empty \text{}: nothing, unless nothing else follows */
                if (at_close_(p) || !starts_factor_(p)) {
                    r = fail_(p);
                    goto out;
                }
                LEAVE(p);
                return p_primary_(p);
            }
            int word = 1;
            for (const char *c = w; *c; c++)
                if (!isalpha((unsigned char)*c))
                    word = 0;
            int textual = is_cmd_(&t, "text") || is_cmd_(&t, "textbf") || is_cmd_(&t, "textit") ||
                          is_cmd_(&t, "textrm") || is_cmd_(&t, "textnormal") || is_cmd_(&t, "mbox") ||
                          is_cmd_(&t, "texttt") || is_cmd_(&t, "textsf");
            if (!textual && word && strlen(w) == 1 && w[0] == 'e') {
                r = km_const(x, KC_E);
                goto out;
            }
            if (!textual && word) {
                r = km_sym(x, w);
                goto out;
            }
            km_node *u = km_node_new(x, KN_TEXT, 0);
            if (u)
                u->s = w;
            r = u;
            goto out;
        }
        if (is_cmd_(&t, "begin")) {
            size_t elen = 0;
            const char *env = raw_group_(p, &elen);
            if (!env) {
                r = fail_(p);
                goto out;
            }
            static const char *const envs[] = {"pmatrix", "bmatrix", "Bmatrix", "vmatrix", "Vmatrix", "matrix",
                                               "smallmatrix", "array"};
            int ok = 0;
            for (size_t k = 0; k < sizeof envs / sizeof envs[0]; k++)
                if (elen == strlen(envs[k]) && !memcmp(env, envs[k], elen))
                    ok = 1;
            if (!ok) {
                r = fail_(p);
                goto out;
            }
            int save_abs = p->abs_depth;
            p->abs_depth = 0;
            r = p_matrix_(p, env, elen);
            p->abs_depth = save_abs;
            goto out;
        }
        if (is_cmd_(&t, "sum") || is_cmd_(&t, "prod")) {
            /* \sum_{k=0}^{n} body */
            if (!is_ch_(&p->t, '_')) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            if (!is_ch_(&p->t, '{')) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            if (p->t.type != T_LETTER) {
                r = fail_(p);
                goto out;
            }
            char iv[2] = {p->t.ch, 0};
            lex_(p);
            if (!is_ch_(&p->t, '=')) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            km_node *lo = p_expr_(p);
            if (!lo || !is_ch_(&p->t, '}')) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            if (!is_ch_(&p->t, '^')) {
                r = fail_(p);
                goto out;
            }
            lex_(p);
            km_node *hi = p_arg_(p);
            if (!hi || p->nbound >= 8) {
                r = fail_(p);
                goto out;
            }
            p->bound[p->nbound++] = km_strndup(x, iv, 1);
            km_node *body = p_term_(p);
            p->nbound--;
            if (!body)
                goto out;
            r = km_node_new(x, KN_SUM, 3);
            if (r) {
                r->s = km_strndup(x, iv, 1);
                r->op = is_cmd_(&t, "prod");
                r->kids[0] = lo;
                r->kids[1] = hi;
                r->kids[2] = body;
            }
            goto out;
        }
        int id = func_id_(nm, len, &inv);
        if (id > 0) {
            r = p_func_(p, id);
            goto out;
        }
        if (greek_(nm, len)) {
            r = km_sym(x, km_strndup(x, nm, (size_t)len));
            goto out;
        }
        if (is_cmd_(&t, "angle") || is_cmd_(&t, "triangle") || is_cmd_(&t, "$")) {
            LEAVE(p);
            return p_primary_(p);
        }
        r = fail_(p); /* unknown command, \dots... */
        goto out;
    }
    r = fail_(p);
out:
    LEAVE(p);
    return r;
}

km_node *km_parse(km_ctx *x, const char *s, size_t n, int plain)
{
    if (x->fail)
        return NULL;
    P p;
    memset(&p, 0, sizeof p);
    p.x = x;
    p.s = s;
    p.n = n;
    p.plain = plain;
    x->nodes = 0;
    lex_(&p);
    if (p.t.type == T_END)
        return NULL;
    km_node *t = p_list_top_(&p);
    if (!t || p.err || x->fail || p.t.type != T_END)
        return NULL;
    return t;
}
