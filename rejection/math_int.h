/* math_int.h - what the math verifier's files share (not a public header).
 *
 * One check owns one km_ctx: an arena for every node and string it makes, a
 * step counter against the budget, and sticky failure flags. Trees, strings
 * and scanner tables all live in the arena, so releasing the context frees
 * everything at once. GMP/MPFR values live on the C stack of the function
 * that uses them and are cleared before it returns.
 */
#ifndef KD_REJECTION_MATH_INT_H
#define KD_REJECTION_MATH_INT_H

#include <stddef.h>
#include <stdint.h>

#include "rejection/math.h"

/* ---- context --------------------------------------------------------------------- */

enum {
    KM_F_NOMEM = 1,     /* an allocation failed */
    KM_F_BUDGET = 2,    /* max_steps or max_nodes ran out */
};

typedef struct km_chunk km_chunk;

typedef struct km_ctx {
    const kd_math_cfg *cfg;
    km_chunk *chunks; /* arena: newest first */
    char *cur;        /* free space in the newest chunk */
    size_t left;
    long steps;     /* work done so far */
    int fail;       /* KM_F_* bits, sticky */
    int nodes;      /* nodes made by the current parse */
    int approx_big; /* a too-large value was approximated (math_eval.c, per comparison) */
    int deep;       /* a parse went past max_depth (cleared by km_extract) */
    int real_only;  /* evaluating at sample points without i: an even root of a negative is undefined */
} km_ctx;

void km_ctx_init(km_ctx *x, const kd_math_cfg *c);
void km_ctx_release(km_ctx *x);
/* Arena memory (zeroed, 8-byte aligned); NULL and KM_F_NOMEM on failure. */
void *km_alloc(km_ctx *x, size_t n);
/* A NUL-terminated copy of s[0..n) in the arena. */
char *km_strndup(km_ctx *x, const char *s, size_t n);
/* Count n units of work; 0 once the budget is spent (KM_F_BUDGET set). */
int km_step(km_ctx *x, long n);
/* Nonzero once any failure flag is set: callers unwind. */
static inline int km_failed(const km_ctx *x) { return x->fail != 0; }

/* A growable byte buffer in the arena. */
typedef struct km_buf {
    km_ctx *x;
    char *p;
    size_t n, cap;
} km_buf;
void km_buf_init(km_buf *b, km_ctx *x);
void km_buf_put(km_buf *b, const char *s, size_t n);
void km_buf_putc(km_buf *b, char c);
void km_buf_puts(km_buf *b, const char *s);
/* The contents as a NUL-terminated string (valid while the arena lives). */
const char *km_buf_str(km_buf *b);

/* ---- expression trees ------------------------------------------------------------ */

typedef enum {
    KN_NUM,      /* s: digits, optionally with one '.'; flt=1 when written as a decimal */
    KN_SYM,      /* s: name ("x", "x_1", "alpha", "AB" is a product of A and B) */
    KN_CONST,    /* op: KC_PI, KC_E, KC_I, KC_INF */
    KN_ADD,      /* kids: terms */
    KN_MUL,      /* kids: factors */
    KN_DIV,      /* kids[0] / kids[1] */
    KN_POW,      /* kids[0] ^ kids[1] */
    KN_NEG,      /* -kids[0] */
    KN_FACT,     /* kids[0]! */
    KN_FUNC,     /* op: KF_*; kids: arguments */
    KN_UF,       /* an undefined function applied, s(kids...); also x_{n} with a letter in n */
    KN_SUM,      /* s: index; kids: lo, hi, body; op: 0 sum, 1 product */
    KN_REL,      /* op: KR_*; kids[0] op kids[1] */
    KN_AND,      /* a chain of relations, written order */
    KN_SET,      /* a finite set, written order (duplicates allowed until compared) */
    KN_TUPLE,    /* an ordered tuple (n != 2, or written with brackets) */
    KN_PAIR,     /* (a, b): an open interval or a 2-tuple, decided by what it meets */
    KN_INTERVAL, /* kids: lo, hi; lopen, ropen */
    KN_UNION,    /* kids: sets */
    KN_MATRIX,   /* rows x cols kids, row-major */
    KN_TEXT,     /* s: a \text{} word or phrase, normalised */
    KN_PCT,      /* kids[0] percent */
    KN_PM,       /* kids[0] +- kids[1] (kids[0] may be NULL): expanded before comparing */
} km_kind;

enum { KC_PI = 1, KC_E, KC_I, KC_INF };
enum { KR_EQ = 1, KR_NE, KR_LT, KR_LE, KR_GT, KR_GE };
enum {
    KF_SIN = 1, KF_COS, KF_TAN, KF_SEC, KF_CSC, KF_COT, KF_ASIN, KF_ACOS, KF_ATAN, KF_SINH, KF_COSH,
    KF_TANH, KF_LN, KF_LOG, /* kids: arg [, base] */ KF_EXP, KF_ABS, KF_FLOOR, KF_CEIL, KF_BINOM, KF_GCD,
    KF_LCM, KF_MIN, KF_MAX, KF_MOD,
};

typedef struct km_node km_node;
struct km_node {
    uint8_t kind;
    uint8_t op;
    uint8_t flt;   /* KN_NUM: written as a decimal */
    uint8_t lopen; /* KN_INTERVAL */
    uint8_t ropen;
    int n; /* children */
    int rows, cols;
    const char *s;
    km_node **kids;
    const char *key; /* cached canonical print (km_key) */
};

km_node *km_node_new(km_ctx *x, int kind, int n);
km_node *km_node2(km_ctx *x, int kind, km_node *a, km_node *b);
km_node *km_num(km_ctx *x, const char *digits, int flt);
km_node *km_sym(km_ctx *x, const char *name);
km_node *km_const(km_ctx *x, int which);
/* Canonical text of a tree (ADD and MUL operands sorted), cached in the node;
 * two trees with the same key are the same expression. */
const char *km_key(km_ctx *x, km_node *t);

/* Parse a normalised LaTeX string (plain=0) or a plain arithmetic expression
 * (plain=1: no implicit products, "**" is a power). NULL when it does not
 * parse or a limit was hit (see x->fail; x->deep is set when the nesting
 * went past max_depth). */
km_node *km_parse(km_ctx *x, const char *s, size_t n, int plain);

/* ---- extraction ------------------------------------------------------------------- */

/* The answer found in one text: tree (NULL when nothing parsed) and the
 * fallback string of the first match tried (NULL when nothing matched).
 * Math-Verify compares the trees, and else the two fallback strings. */
typedef struct km_answer {
    km_node *tree;
    const char *fallback;
    const char *shown; /* what to report as extracted: the parsed match's text */
    /* where that answer came from (the parsed match, else the fallback's),
     * for the restatement check: the prepared text the spans index, the
     * whole match (marker included) and the answer's own text; marked when
     * it came from a box or an answer phrase (priority < 300) */
    const char *text;
    size_t text_n;
    size_t ms, me, vs, ve;
    int have_span, marked;
    /* the preferred match nests deeper than max_depth: no answer is taken
     * from the text (not a fragment of that match either) */
    int deep;
} km_answer;

void km_extract(km_ctx *x, const char *text, size_t n, km_answer *out);
/* The answer of a reference (gold) text: km_extract's, except that a gold
 * with no LaTeX delimiter or box ("2\sqrt{3}", "(2,3)", "x^2+1", as datasets
 * write them) is read whole as LaTeX, as if written "$...$", unless the
 * extracted answer already spans all of it ("3", "0.5", "1/2", "7,425,000")
 * or came from an answer phrase, or only plain expressions are extracted.
 * A fragment ("2" of "2\sqrt{3}") is never the gold: when the whole does
 * not parse, out has no tree and the whole text as its fallback. */
void km_extract_gold(km_ctx *x, const char *text, size_t n, km_answer *out);
/* The last \boxed{ / \fbox{ of s: 1 closed with content, 0 none, -1 never
 * closed (a truncated response), -2 empty. */
int km_last_box_state(const char *s, size_t n);
/* A choice letter A-E named in plain words after the last "answer" (or the
 * whole of s when it is just a letter); 0 when none. */
int km_choice_letter(const char *s, size_t n);
/* Does the response (pred, the part km_extract read) only restate the
 * question q (see math.h)? a is its extracted answer; use_span 0 when the
 * answer did not come from a's spans (a choice letter). 1 yes, 0 no (also
 * on failure: see x->fail). */
int km_restates(km_ctx *x, const char *q, size_t qn, const char *pred, size_t pred_n, const km_answer *a,
                int use_span);

/* Normalise one extracted LaTeX string (boxed_mode: 0 none, 1 all, 2 last)
 * into the form km_parse reads. */
const char *km_norm_latex(km_ctx *x, const char *s, size_t n, int boxed_mode);

/* ---- evaluation (math_eval.c) ---------------------------------------------------- */

/* A variable bound for evaluation: a rational p/q, or a double. */
typedef struct km_bind {
    const char *name;
    long p, q; /* when isd == 0 */
    double d;  /* when isd == 1 */
    int isd;
} km_bind;

typedef struct km_env {
    km_bind *b;
    int n;
} km_env;

/* Results of the comparisons below. */
enum { KM_UNKNOWN = -1, KM_DIFF = 0, KM_SAME = 1, KM_BIG = 2 /* same, but only approximately: too large */ };

/* Modes for km_value_eq. */
enum {
    KM_EXACT = 0, /* exact, or within 2^-(mpfr_bits-28) relative when irrational */
    KM_ROUND,     /* the decimal-approximation rule: equal after rounding to float_rounding digits, or within rel_tol */
    KM_LOOSE,     /* within 1e-12 relative: trees that hold decimals inside */
};

/* Are a and b the same value? Evaluated at a few pseudo-random points for
 * their free variables (the same name gets the same value on both sides).
 * KM_UNKNOWN when no point evaluates on both sides. */
int km_value_eq(km_ctx *x, km_node *a, km_node *b, int mode);
/* Is a = k*b for one constant k (sign: 0 any k != 0, +1 k > 0, -1 k < 0) at
 * every sample point? Used for equations and inequalities written apart. */
int km_ratio_eq(km_ctx *x, km_node *a, km_node *b, int sign);
/* t as a double under env (no free variables left); 1 on success. */
int km_to_double(km_ctx *x, km_node *t, km_env *env, double *out);
/* Truth of a relation (KN_REL or KN_AND) under env: 1, 0, or KM_UNKNOWN.
 * Equality holds within 1e-9 relative (env values are doubles). */
int km_rel_truth(km_ctx *x, km_node *rel, km_env *env);
/* Free variable names of t (sorted, unique) into names[max]; returns the count
 * (at most max; -1 when there are more). */
int km_free_vars(km_ctx *x, km_node *t, const char **names, int max);

/* ---- comparison ------------------------------------------------------------------- */

/* 1 when gold and pred are the same answer, 0 when not. */
int km_equal(km_ctx *x, km_node *gold, km_node *pred);

#endif
