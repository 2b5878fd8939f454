/* math.h - the math answer verifier: does a model response state the same
 * answer as a reference?
 *
 * kd_math_verify() runs three stages, all in this module:
 *
 *   1. Extraction (math_extract.c). The answer is looked for the way
 *      HF Math-Verify's parse() looks for it: by priority, the last \boxed{}
 *      or \fbox{} (nested braces; several boxes joined by nothing but list
 *      separators such as "," / "and" / "\quad" / "x_2 =" count as one list,
 *      while after other words, "\boxed{3}. Wait, ... \boxed{5}", the last
 *      box alone is the answer), "final answer is $...$. I hope",
 *      "answer: ...", then any LaTeX environment ($...$, $$...$$, \(...\),
 *      \[...\]) and, with the expression extractor, any plain number or
 *      arithmetic expression. A gold with no delimiter or box, as datasets
 *      write it ("2\sqrt{3}", "(2,3)"), is read whole as LaTeX unless the
 *      extractors read it whole already ("3", "1/2"); math_int.h has the rule.
 *      Within one priority the rightmost match wins; a match that does not
 *      parse passes the turn to the next one. With after_think set, only the
 *      text after the last "</think>" is read when there is one, and a
 *      "<think>" that never closes means the response was cut off: no
 *      answer. An empty box is no answer; a response whose last \boxed{
 *      never closes is truncated and has no answer. When the gold is a
 *      choice letter (A-E) and nothing else is found, a letter named in
 *      plain words after "answer" ("the answer is (B)") is the answer.
 *
 *      A response that only restates the question is no answer either
 *      (reason "no_answer", detail "the response restates the question").
 *      This needs the question, so it applies only when cfg.question is set.
 *      Both texts are compared normalised: $, \( \), \[ \] dropped, and
 *      whitespace (and \, \; \: \!) collapsed, kept as one space only
 *      between two letters or digits, so "$1/2 + 1/4$" reads as "1/2+1/4".
 *      The response (the part read, after </think>) restates the question
 *      when
 *        a. it is, as a whole, a piece of the question ("What is 1/2 + 1/4?"
 *           for the question "What is 1/2 + 1/4?"), or
 *        b. its answer match, with any marker, lies inside a copy of the
 *           question within it (the question repeated, then nothing more
 *           that extraction prefers), or
 *        c. its answer was not taken from an explicit marker (a \boxed{},
 *           \fbox{}, "final answer is", "answer:" or "answer ... " phrase)
 *           and the answer's text occurs in the question as a whole token
 *           run ("2" is not in "12", "x^2" or "0.25").
 *      A marker inside the copied question is the question's, so a. and b.
 *      hold whatever the markers. A single token (a number, a word or a
 *      letter: "4", "-2.5", "(B)", "\text{B}") never counts as a
 *      restatement in a. or c.: "4" for "Is it 4 or 5?" is an answer. So
 *      "The sum is 3/4." and "\boxed{4}" (for "Is the answer 4 or 5?")
 *      stay answers; "The sum is 1/2 + 1/4." (for "What is 1/2 + 1/4?")
 *      does not. Known limit: only the preferred match is looked at, so
 *      "3/4. What is 1/2 + 1/4?" is a restatement. With no question the
 *      rule costs nothing.
 *
 *   2. Parsing (math_parse.c). LaTeX or plain text becomes a small
 *      expression tree: exact integers and rationals (any size, GMP),
 *      decimals (kept exact, remembered as approximations), \frac and its
 *      malformed forms (\frac12), mixed numbers (3\frac{1}{2}, "3 1/2"),
 *      radicals, powers, factorials, pi, e, i, trig and log, sums and
 *      products, percentages, degrees, units and currency (stripped),
 *      thousands separators, unicode minus, finite sets, tuples, intervals
 *      and their unions, matrices, relations and chains of them, +-,
 *      multiple-choice letters and \text{} words.
 *
 *   3. Comparison (math_eq.c, math_eval.c). Numbers compare exactly (GMP
 *      mpq); an approximate side (a decimal) compares after rounding both to
 *      float_rounding decimals, or within rel_tol. Expressions with variables
 *      compare by evaluating both at 12 pseudo-random points, negative,
 *      fractional and near-zero ones among them, skipping points where a
 *      side is undefined and needing 3 defined ones (math_eval.c), exactly
 *      when the tree is rational and with MPFR (mpfr_bits) otherwise. Sets
 *      compare unordered, tuples ordered, intervals by endpoints and
 *      openness, equations and inequalities up to a constant factor,
 *      assignments ("x = 3") by their value, a relation against a set by
 *      membership. The policy follows Math-Verify's verify(), including its
 *      asymmetries (the gold decides whether "x = 3" and "3" are the same).
 *
 * Every check is bounded: inputs are cut to max_input bytes (the tail is
 * kept: that is where answers are), trees to max_nodes and max_depth, exact
 * integers to max_bits (a larger power or factorial is "too_large": it may
 * prove two answers different, never equal), and all work to max_steps.
 * Malformed input of any kind is a verdict, never an error or a crash.
 *
 *     kd_math_cfg c;
 *     kd_math_cfg_init(&c);
 *     kd_verdict v;
 *     kd_verdict_init(&v);
 *     if (kd_math_verify(&c, "\\frac{1}{2}", 11, response, len, &v) == KD_OK)
 *         printf("%s %s\n", v.reason, v.extracted ? v.extracted : "");
 *     kd_verdict_release(&v);
 */
#ifndef KD_REJECTION_MATH_H
#define KD_REJECTION_MATH_H

#include <stddef.h>

#include "rejection/verdict.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which extractors read the text (for both gold and response), as
 * Math-Verify's LatexExtractionConfig / ExprExtractionConfig. */
typedef enum {
    KD_MATH_EXTRACT_LATEX_EXPR = 0, /* LaTeX environments and boxes, then plain expressions */
    KD_MATH_EXTRACT_LATEX,          /* LaTeX only */
    KD_MATH_EXTRACT_EXPR            /* plain numbers and expressions only */
} kd_math_extract;

typedef struct kd_math_cfg {
    kd_math_extract extract; /* default KD_MATH_EXTRACT_LATEX_EXPR */
    int after_think;         /* 1 (default): read only the text after the last </think> when one exists */
    int boxed_first;         /* 1 (default): \boxed{} outranks "final answer" phrases (Math-Verify's
                                boxed_match_priority=0); 0: after them (priority 50, parse()'s default) */
    int float_rounding;      /* decimal digits kept when one side is a decimal approximation (default 6) */
    double rel_tol;          /* also accept |a-b| <= rel_tol*max(|a|,|b|) when one side is a decimal
                                approximation (default 0: rounding only, as Math-Verify) */
    int strict;              /* 1 (default): variables matter (f(x) != f(y)); 0: matched by position */
    int allow_set_relation;  /* 0 (default): a relation in the response never equals a set in the
                                gold ("x<2" vs "(-oo,2)"); 1: compared by membership both ways */
    long max_steps;          /* work budget per check (default 2,000,000); over it: reason "budget" */
    size_t max_input;        /* bytes of each text read, from its end (default 65536, at most 16 MiB) */
    int max_nodes;           /* expression-tree nodes per parse (default 20000) */
    int max_depth;           /* nesting depth (default 500); an answer nested deeper is "too_large"
                                (a gold: "bad_gold"), never read as a fragment of itself */
    long max_bits;           /* largest exact integer, in bits (default 100000) */
    int mpfr_bits;           /* precision of approximate evaluation (default 128) */
    const char *question;    /* the prompt's question, or NULL (default): unknown. Set per prompt by
                                the caller; not owned, need not be NUL-terminated; read up to
                                max_input bytes from its end. Known, it enables the restatement
                                rule below */
    size_t question_len;     /* its length in bytes (default 0) */
} kd_math_cfg;

/* Fill c with the defaults above. */
void kd_math_cfg_init(kd_math_cfg *c);

/* Apply the settings named in a bench note to c (which the caller has
 * initialised): items separated by ';' or ',', each "key=value"; unknown
 * items (test names, remarks) are skipped. Keys:
 *     cfg=latex+expr | latex-only | expr-only | defaults
 *     prec=N                           float_rounding (0..30)
 *     strict=True|False
 *     allow_set_relation_comp=True|False
 * "defaults" is Math-Verify's parse() default: both extractors, boxes after
 * "final answer" phrases. Returns KD_OK, or KD_E_CONFIG naming the item when
 * a known key has a bad value (c is then partly updated). */
int kd_math_cfg_from_note(const char *note, kd_math_cfg *c);

/* Verify pred (a model response, pred_len bytes, need not be NUL-terminated
 * or valid UTF-8) against gold (a reference answer, read with the same
 * extractors). Fills v (which the caller has kd_verdict_init'ed; anything it
 * held is released first):
 *     accepted  1 when the answers agree, else 0; score 1.0 or 0.0
 *     reason    "correct", "wrong_answer", "no_answer" (nothing extracted
 *               from pred), "bad_gold" (nothing parsed from gold),
 *               "parse_error" (pred's answer did not parse), "too_large"
 *               (equality would rest on a number past max_bits, or the
 *               answer nests deeper than max_depth), "budget"
 *               (max_steps ran out)
 *     detail    a short human-readable note (may be empty)
 *     extracted the extracted pred answer, malloc'd, or NULL; freed by
 *               kd_verdict_release
 * Returns KD_OK, or KD_E_NOMEM (v is then rejected with reason "nomem").
 * Thread-safe: no global mutable state; call it from any number of threads
 * (see kd_math_thread_release for a thread that exits). */
int kd_math_verify(const kd_math_cfg *c, const char *gold, size_t gold_len, const char *pred, size_t pred_len,
                   kd_verdict *v);

/* Free this thread's MPFR caches (pi, log 2, ...), which kd_math_verify
 * fills on first use and keeps for the thread's lifetime. Call it before a
 * thread that verified answers exits, or they leak (a few KiB per thread);
 * the next kd_math_verify on the thread simply fills them again. */
void kd_math_thread_release(void);

#ifdef __cplusplus
}
#endif
#endif
