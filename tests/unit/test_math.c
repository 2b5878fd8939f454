/* test_math.c - rejection/math (the math answer verifier).
 *
 * 1. The public bench: every case of bench/math_verify_public.jsonl (from
 *    HF Math-Verify's own tests) with the settings of its note; prints the
 *    agreement, each disagreement, and checks/s on one thread (a figure,
 *    not asserted). Agreement must stay >= 97%.
 * 2. One focused test per part of the spec: exact big numbers, boxes,
 *    think blocks, sets/tuples/intervals, matrices, percent and units,
 *    separators, unicode, multiple choice, symbolic (non-)equivalence.
 * 3. Hostile inputs: deep nesting, towers of powers, huge factorials, 10 MB,
 *    invalid UTF-8, lone backslashes. Each must return a verdict, quickly.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rejection/math.h"
#include "test.h"

static double now_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Verify with cfg c (NULL: defaults); returns the verdict's reason in buf. */
static int verify_(const kd_math_cfg *c, const char *gold, const char *pred, char *reason, size_t rn)
{
    kd_math_cfg d;
    if (!c) {
        kd_math_cfg_init(&d);
        c = &d;
    }
    kd_verdict v;
    kd_verdict_init(&v);
    int st = kd_math_verify(c, gold, strlen(gold), pred, strlen(pred), &v);
    if (st != KD_OK)
        FAIL_("kd_math_verify: %s", kd_strerror(st));
    if (reason)
        snprintf(reason, rn, "%s", v.reason);
    int acc = v.accepted;
    kd_verdict_release(&v);
    return acc;
}

#define SAME(g, p)                                                                        \
    do {                                                                                  \
        char r_[64];                                                                      \
        test_checks_++;                                                                   \
        if (!verify_(NULL, (g), (p), r_, sizeof r_))                                      \
            FAIL_("expected equal: gold '%s' pred '%s' (%s)", (g), (p), r_);              \
    } while (0)
#define DIFF(g, p)                                                                        \
    do {                                                                                  \
        char r_[64];                                                                      \
        test_checks_++;                                                                   \
        if (verify_(NULL, (g), (p), r_, sizeof r_))                                       \
            FAIL_("expected different: gold '%s' pred '%s'", (g), (p));                   \
    } while (0)
#define REASON(g, p, want)                                                                \
    do {                                                                                  \
        char r_[64];                                                                      \
        test_checks_++;                                                                   \
        verify_(NULL, (g), (p), r_, sizeof r_);                                           \
        if (strcmp(r_, (want)))                                                           \
            FAIL_("gold '%s' pred '%.60s': reason %s, expected %s", (g), (p), r_, (want)); \
    } while (0)

/* ---- 1. the public bench ---------------------------------------------------------- */

typedef struct bcase {
    char *gold, *pred, *note;
    int expected;
    kd_math_cfg cfg;
} bcase;

TEST(public_bench)
{
    const char *path = KD_TEST_SRC "/bench/math_verify_public.jsonl";
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f)
        return;
    bcase *cs = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) > 0) {
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)got, 0, &je);
        if (!j) {
            FAIL_("bad JSON line %zu: %s", n + 1, je.text);
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 512;
            cs = realloc(cs, cap * sizeof *cs);
        }
        bcase *c = &cs[n++];
        c->gold = strdup(json_string_value(json_object_get(j, "gold")));
        c->pred = strdup(json_string_value(json_object_get(j, "pred")));
        const char *note = json_string_value(json_object_get(j, "note"));
        c->note = strdup(note ? note : "");
        c->expected = json_is_true(json_object_get(j, "expected"));
        kd_math_cfg_init(&c->cfg);
        CHECK_OK(kd_math_cfg_from_note(c->note, &c->cfg));
        json_decref(j);
    }
    free(line);
    fclose(f);
    CHECK_EQ_INT(n, 337);
    size_t agree = 0;
    for (size_t i = 0; i < n; i++) {
        kd_verdict v;
        kd_verdict_init(&v);
        CHECK_OK(kd_math_verify(&cs[i].cfg, cs[i].gold, strlen(cs[i].gold), cs[i].pred, strlen(cs[i].pred), &v));
        if ((v.accepted != 0) == cs[i].expected) {
            agree++;
        } else {
            const char *g = cs[i].gold, *p = cs[i].pred;
            size_t gl = strlen(g), pl = strlen(p);
            printf("  disagree #%zu: gold '%.80s%s' pred '%s%.100s' expected %d got %d (%s%s%s) extracted '%.60s'\n", i,
                   gl > 80 ? g + gl - 80 : g, "", pl > 100 ? "..." : "", pl > 100 ? p + pl - 100 : p, cs[i].expected,
                   v.accepted, v.reason, v.detail[0] ? ": " : "", v.detail, v.extracted ? v.extracted : "");
        }
        kd_verdict_release(&v);
    }
    double agreement = (double)agree / (double)(n ? n : 1);
    printf("  math_verify_public: agreement %zu/%zu = %.2f%%\n", agree, n, 100.0 * agreement);
    CHECK(agreement >= 0.97);

    /* speed: best of a few passes, one thread */
    double best = 1e300;
    for (int r = 0; r < 5; r++) {
        double t0 = now_();
        for (size_t i = 0; i < n; i++) {
            kd_verdict v;
            kd_verdict_init(&v);
            kd_math_verify(&cs[i].cfg, cs[i].gold, strlen(cs[i].gold), cs[i].pred, strlen(cs[i].pred), &v);
            kd_verdict_release(&v);
        }
        double t = now_() - t0;
        best = t < best ? t : best;
    }
    printf("  math_verify_public: %.0f checks/s on one thread (%.1f us/check)\n", (double)n / best, 1e6 * best / (double)n);
    for (size_t i = 0; i < n; i++) {
        free(cs[i].gold);
        free(cs[i].pred);
        free(cs[i].note);
    }
    free(cs);
}

/* ---- 2. the spec, bullet by bullet ------------------------------------------------ */

TEST(cfg_from_note)
{
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    CHECK_EQ_INT(c.extract, KD_MATH_EXTRACT_LATEX_EXPR);
    CHECK_EQ_INT(c.float_rounding, 6);
    CHECK_EQ_INT(c.strict, 1);
    CHECK_OK(kd_math_cfg_from_note("tests/x.py::t@abc; cfg=expr-only,prec=4,strict=False; remark", &c));
    CHECK_EQ_INT(c.extract, KD_MATH_EXTRACT_EXPR);
    CHECK_EQ_INT(c.float_rounding, 4);
    CHECK_EQ_INT(c.strict, 0);
    CHECK_OK(kd_math_cfg_from_note("cfg=latex-only,allow_set_relation_comp=True", &c));
    CHECK_EQ_INT(c.extract, KD_MATH_EXTRACT_LATEX);
    CHECK_EQ_INT(c.allow_set_relation, 1);
    CHECK_ERR(kd_math_cfg_from_note("cfg=sideways", &c), KD_E_CONFIG, "cfg=sideways");
    CHECK_ERR(kd_math_cfg_from_note("prec=x", &c), KD_E_CONFIG, "prec");
}

TEST(exact_big_numbers)
{
    DIFF("$\\frac{1}{2004!}$", "$\\frac{1}{2006!}$");
    SAME("$\\frac{1}{2004!}$", "$\\frac{2005 \\cdot 2006}{2006!}$");
    DIFF("$2^{64}$", "$2^{64}-1$");
    SAME("$2^{64}$", "18446744073709551616");
    SAME("$18446744073709551615$", "$2^{64}-1$");
    DIFF("$10^{30}$", "$10^{30}+1$");
    SAME("$\\binom{10}{3}$", "$120$");
    /* past the exact range: never equal on an approximation */
    REASON("$2^{200000}$", "$2^{200000}+1$", "too_large");
}

TEST(boxes)
{
    SAME("$5$", "so the answer is \\boxed{5}.");
    /* the last box; an earlier one far away is a discarded attempt... */
    SAME("$\\frac{1}{2}$", "first \\boxed{3}, but that was wrong, so let me recompute it carefully from the top, step by step, to be sure: \\boxed{\\frac{1}{2}}");
    /* ...while boxes joined by "and" / "," are one list */
    DIFF("$\\frac{1}{2}$", "\\boxed{3}, \\boxed{\\frac{1}{2}}");
    SAME("$\\{1, 2\\}$", "\\boxed{\\{1, 2\\}}");
    SAME("$3$", "\\boxed{\\frac{\\sqrt{9}}{1}}");
    SAME("$7$", "\\fbox{7}");
    /* nested braces inside the box */
    SAME("$\\frac{1}{3}$", "$\\boxed{\\frac{{1}}{{3}}}$");
    REASON("$5$", "The answer is \\boxed{5", "no_answer");
    REASON("$5$", "The answer is \\boxed{}", "no_answer");
    REASON("$5$", "I have no idea.", "no_answer");
    SAME("$1,2$", "\\boxed{1} and \\boxed{2}");
    /* a self-correction: the last box is the answer, however close */
    const char *fix = "I first got \\boxed{3}. Wait, that is wrong: \\boxed{5}";
    SAME("$5$", fix);
    DIFF("$3$", fix);
    DIFF("$3,5$", fix);
    SAME("$5$", "\\boxed{3}, no, \\boxed{5}");
    SAME("$2$", "\\boxed{1}\\text{ wait }\\boxed{2}");
    /* lists: separators, spacing, \text{and}, labels, a unit word */
    SAME("$1,2$", "x_1 = \\boxed{1}, x_2 = \\boxed{2}");
    SAME("$1,2$", "x = \\boxed{1} \\quad\\text{or}\\quad x = \\boxed{2}");
    SAME("$1,2$", "\\boxed{1}; \\boxed{2}.");
    SAME("$1,2$", "\\boxed{1}\\text{ and }\\boxed{2}");
    SAME("$1,2$", "\\boxed{1} paper and \\boxed{2} bins");
    DIFF("$2$", "\\boxed{1}, \\boxed{2}");
}

/* Golds as datasets write them (MATH, NuminaMath): bare LaTeX, no $...$.
 * Read whole, never a number out of them ("2" of "2\sqrt{3}"). */
TEST(bare_gold)
{
    /* the false positives of issue 7 */
    DIFF("2\\sqrt{3}", "\\boxed{2}");
    DIFF("12\\pi", "\\boxed{12}");
    DIFF("4i", "\\boxed{4}");
    SAME("2\\sqrt{3}", "\\boxed{2\\sqrt{3}}");
    SAME("2\\sqrt{3}", "\\boxed{\\sqrt{12}}");
    SAME("12\\pi", "\\boxed{12\\pi}");
    SAME("4i", "\\boxed{4i}");
    /* golds that had no answer at all (bad_gold) */
    SAME("\\sqrt{2}", "\\boxed{\\sqrt{2}}");
    SAME("(2,3)", "\\boxed{(2,3)}");
    DIFF("(2,3)", "\\boxed{(3,2)}");
    SAME("C", "\\boxed{C}");
    DIFF("C", "\\boxed{B}");
    SAME("\\pi", "\\boxed{\\pi}");
    SAME("x^2+1", "\\boxed{x^2+1}");
    SAME("x^2+1", "\\boxed{1+x^2}");
    DIFF("x^2+1", "\\boxed{x^2}");
    /* fractions, radicals and powers with a number inside */
    DIFF("\\frac{\\sqrt{3}}{2}", "\\boxed{2}");
    SAME("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}");
    DIFF("3\\frac{1}{2}", "\\boxed{3}");
    SAME("3\\frac{1}{2}", "\\boxed{3.5}");
    DIFF("2^{10}", "\\boxed{2}");
    SAME("2^{10}", "\\boxed{1024}");
    SAME("10^{-3}", "\\boxed{0.001}");
    DIFF("\\pi/2", "\\boxed{2}");
    SAME("\\pi/2", "\\boxed{\\frac{\\pi}{2}}");
    DIFF("4 + 2i", "\\boxed{4}");
    DIFF("(1, -2)", "\\boxed{-2}");
    DIFF("2 \\times 10^3", "\\boxed{2}");
    SAME("2 \\times 10^3", "\\boxed{2000}");
    DIFF("\\frac{1}{2}, \\frac{3}{4}", "\\boxed{\\frac34}");
    SAME("\\frac{1}{2}, \\frac{3}{4}", "\\boxed{\\frac12, \\frac34}");
    SAME("(-\\infty, 2)", "\\boxed{(-\\infty,2)}");
    SAME("\\text{Monday}", "\\boxed{\\text{Monday}}");
    DIFF("\\text{Monday}", "\\boxed{\\text{Tuesday}}");
    SAME("5\\%", "\\boxed{5\\%}");
    SAME("5 \\text{ cm}", "\\boxed{5}");
    SAME("\\$18.90", "\\boxed{18.90}");
    SAME("y = 2x + 3", "\\boxed{y=2x+3}");
    DIFF("y = 2x + 3", "\\boxed{3}");
    /* plain golds keep working */
    SAME("3", "\\boxed{3}");
    SAME("-5", "\\boxed{-5}");
    SAME("0.5", "\\boxed{\\frac{1}{2}}");
    SAME("1/2", "\\boxed{0.5}");
    SAME("x=3", "\\boxed{3}");
    SAME("7,425,000", "\\boxed{7425000}");
    SAME("3 1/2", "\\boxed{3\\frac12}");
    SAME("5.", "\\boxed{5}");
    SAME("The answer is 5", "\\boxed{5}");
    /* LaTeX-only extraction reads a bare gold too; expression-only does not */
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    c.extract = KD_MATH_EXTRACT_LATEX;
    CHECK(verify_(&c, "40/9", "$\\frac{40}{9}$", NULL, 0));
    CHECK(!verify_(&c, "2\\sqrt{3}", "$2$", NULL, 0));
    c.extract = KD_MATH_EXTRACT_EXPR;
    CHECK(verify_(&c, "40/9", "40/9", NULL, 0));
}

TEST(answer_phrases)
{
    SAME("$34$", "Final Answer: The largest $n$ is 34.");
    SAME("$12$", "The final answer is $12$. I hope it is correct.");
    SAME("$7$", "so 3 + 4 gives the answer: 7");
    SAME("$4$", "Answer: 4");
    /* a number glued to a LaTeX term or a variable is not the answer alone: the term is read
     * whole as LaTeX (these were false accepts against the number) */
    DIFF("2", "The answer is 2\\sqrt{3}");
    SAME("2\\sqrt{3}", "The answer is 2\\sqrt{3}");
    DIFF("12", "The answer is 12\\pi.");
    SAME("12\\pi", "The answer is 12\\pi.");
    DIFF("4", "Final Answer: 4i");
    SAME("4i", "Final Answer: 4i");
    DIFF("2", "The answer is 2x.");
    DIFF("2", "The answer is 2^{10}.");
    SAME("1024", "The answer is 2^{10}.");
    SAME("6", "The answer is 2\\cdot 3");
    DIFF("2", "The answer is 2\\cdot 3");
    /* but degrees, percent, units and ordinals after a number still leave the number */
    SAME("30", "The answer is 30^\\circ.");
    SAME("5", "The answer is 5\\%.");
    SAME("3", "The answer is 3cm.");
    SAME("5", "Final Answer: 5th");
    SAME("10", "The answer is 10\\text{ cm}.");
}

TEST(think_blocks)
{
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    const char *p = "<think>maybe \\boxed{3}</think> The answer is \\boxed{4}.";
    CHECK(verify_(&c, "$4$", p, NULL, 0));
    CHECK(!verify_(&c, "$3$", p, NULL, 0));
    c.after_think = 0;
    /* reading everything, the last box still wins */
    CHECK(verify_(&c, "$4$", p, NULL, 0));
    c.after_think = 1;
    /* thinking cut off before it closes: truncated */
    char r0[64];
    verify_(&c, "$3$", "<think>so far it looks like \\boxed{3} but", r0, sizeof r0);
    CHECK_STR(r0, "no_answer");
    /* a closing tag alone (the template put <think> in the prompt) */
    CHECK(verify_(&c, "$3$", "hmm, 2?</think> It is \\boxed{3}.", NULL, 0));
    /* only thinking, nothing after it */
    char r[64];
    verify_(&c, "$3$", "<think>it is \\boxed{3}</think>", r, sizeof r);
    CHECK_STR(r, "no_answer");
}

TEST(numbers_and_forms)
{
    SAME("$\\frac{1}{2}$", "$0.5$");
    SAME("$\\frac{3}{2}$", "$1\\frac{1}{2}$");
    SAME("$\\frac{7}{2}$", "$3\\frac12$");
    SAME("$\\frac{7}{2}$", "3 1/2");
    SAME("$\\frac{1}{2}$", "$\\frac12$");
    SAME("$\\frac{1}{2}$", "$\\dfrac{1}{2}$");
    SAME("$2\\sqrt{2}$", "$\\sqrt{8}$");
    SAME("$2$", "$\\sqrt[3]{8}$");
    SAME("$\\pi$", "$\\frac{2\\pi}{2}$");
    SAME("$\\frac{1}{2}$", "$\\sin\\frac{\\pi}{6}$");
    SAME("$3$", "$\\log_2 8$");
    SAME("$e^2$", "$\\exp(2)$");
    DIFF("$\\frac{1}{3}$", "$0.33$");
    SAME("$1-\\frac{1}{e}$", "$\\frac{e-1}{e}$");
}

TEST(percent_units_currency)
{
    SAME("$28\\%$", "28 percent");
    SAME("$28\\%$", "$28$");
    SAME("$0.28$", "$28\\%$");
    DIFF("$0.28$", "28");
    SAME("$15$", "$15\\text{ cm}^2$");
    SAME("$125$", "The distance is $\\boxed{125\\textnormal{ miles}}.$");
    SAME("$5$", "$\\$5$");
    SAME("$30$", "\\boxed{30 \\text{ dollars}}");
    SAME("$90$", "$90^\\circ$");
    SAME("$90$", "90\xc2\xb0");
}

TEST(separators_and_unicode)
{
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    c.extract = KD_MATH_EXTRACT_EXPR;
    CHECK(verify_(&c, "7425000", "7,425,000", NULL, 0));
    CHECK(verify_(&c, "1000", "1 000", NULL, 0));
    CHECK(verify_(&c, "-5", "\xe2\x88\x92" "5", NULL, 0)); /* U+2212 minus */
    SAME("$1000$", "$1{,}000$");
    SAME("$14916$", "$\\boxed{14{,}916}$");
    SAME("$-3$", "$\xe2\x88\x92" "3$");
    SAME("$\\pi$", "$\xcf\x80$");
}

TEST(sets_tuples_intervals)
{
    SAME("$\\{1,2,3\\}$", "$\\{3,2,1\\}$");
    SAME("$\\{1,2\\}$", "$\\{2,1,2\\}$");
    DIFF("$(1,2)$", "$(2,1)$");
    SAME("$(1,\\frac{9}{2})$", "$(1,4.5)$");
    SAME("$[0,1)$", "$[0,1)$");
    DIFF("$[0,1)$", "$(0,1)$");
    DIFF("$[0,1)$", "$[0,1]$");
    SAME("$[2,\\infty)$", "$[2, \\infty)$");
    SAME("$(-\\infty, 3) \\cup (3, \\infty)$", "$(3,\\infty)\\cup(-\\infty,3)$");
    SAME("$x > 2$", "$(2, \\infty)$");
    SAME("$x \\ge 5$", "$5 \\le x$");
    DIFF("$x > 5$", "$x < 5$");
    SAME("$-2 \\le x \\le 7$", "$x \\in [-2,7]$");
    SAME("$x=3$", "$3$");
    SAME("$3$", "$x = 3$");
    SAME("$\\frac{1}{3}$", "$x = \\frac{1}{3} \\approx 0.33$");
    SAME("$1 \\pm \\sqrt{2}$", "$\\{1+\\sqrt{2}, 1-\\sqrt{2}\\}$");
    DIFF("$\\pm 2$", "$2$");
}

TEST(matrices)
{
    SAME("$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}$", "$\\begin{bmatrix}1 & 2 \\\\ 3 & 4\\end{bmatrix}$");
    DIFF("$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}$", "$\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}$");
    SAME("$\\begin{pmatrix}2 \\\\ 4\\end{pmatrix}$", "$2\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}$");
    DIFF("$\\begin{pmatrix}1 & 2\\end{pmatrix}$", "$\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}$");
}

TEST(complex_numbers)
{
    SAME("$1+2i$", "$2i+1$");
    SAME("$-1$", "$i^2$");
    SAME("$2i$", "$\\sqrt{-4}$");
    DIFF("$1+i$", "$1-i$");
}

TEST(multiple_choice_and_text)
{
    SAME("$\\text{(C)}$", "\\boxed{C}");
    SAME("$(B)$", "\\boxed{\\text{B}}");
    DIFF("$(B)$", "\\boxed{\\text{C}}");
    SAME("$\\text{odd}$", "$odd$");
    SAME("$\\text{Evelyn}$", "so $\\boxed{\\text{Evelyn}}$");
    DIFF("$\\text{Evelyn}$", "so $\\boxed{\\text{Carla}}$");
}

TEST(symbolic)
{
    SAME("$(x+1)^2$", "$x^2+2x+1$");
    DIFF("$x^2$", "$x^3$");
    SAME("$\\frac{x+2}{7}$", "$\\frac{x}{7}+\\frac{2}{7}$");
    SAME("$\\tan^2(y)+1$", "$\\sec^2(y)$");
    DIFF("$x+2n+1$", "$x+1$");
    SAME("$2x+4y-3=0$", "$y=-\\frac{1}{2}x+\\frac{3}{4}$");
    SAME("$\\sqrt{2}+\\sqrt{5}$", "$\\sqrt 5+\\sqrt 2$");
    /* a function's argument without parentheses runs over an implicit product, as latex2sympy
     * reads it (\\cos 2x was cos(2) x) */
    SAME("$\\cos(2x)$", "$\\cos 2x$");
    DIFF("$\\cos(2)x$", "$\\cos 2x$");
    SAME("$\\frac{1}{2}\\sin 2x$", "$\\sin x \\cos x$");
    SAME("$\\sin(2\\theta)$", "$\\sin 2\\theta$");
    SAME("$2\\ln 2$", "$\\ln 4$");
    DIFF("$f(x)$", "$f(y)$");
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    c.strict = 0;
    CHECK(verify_(&c, "$f(x)$", "$f(y)$", NULL, 0));
    SAME("$\\sum_{k=1}^{n} k$", "$\\frac{n(n+1)}{2}$");
    SAME("$\\binom{n}{2}$", "$\\frac{n(n-1)}{2}$");
    /* equal for positive x only: negative, fractional and near-zero points */
    DIFF("$x$", "\\boxed{|x|}");
    DIFF("$|x|$", "\\boxed{x}");
    DIFF("$x-3$", "\\boxed{|x-3|}");
    DIFF("$x$", "\\boxed{\\sqrt{x^2}}");
    DIFF("$x$", "\\boxed{\\max(x,3)}");
    DIFF("$x$", "\\boxed{\\min(x,3)}");
    DIFF("$x|x|$", "\\boxed{x^2}");
    DIFF("$\\frac{|x|}{x}$", "\\boxed{1}");
    DIFF("$\\sqrt{x^2+2x+1}$", "\\boxed{x+1}");
    DIFF("$\\lfloor x \\rfloor$", "\\boxed{x}");
    DIFF("$\\frac{\\sin x}{x}$", "\\boxed{1}");
    DIFF("$x^3$", "\\boxed{|x|^3}");
    /* equal wherever both sides are defined */
    SAME("$|x|$", "\\boxed{\\sqrt{x^2}}");
    SAME("$|x|$", "\\boxed{\\max(x,-x)}");
    SAME("$\\max(x, 0)$", "\\boxed{\\frac{x+|x|}{2}}");
    SAME("$\\sqrt{x^2+2x+1}$", "\\boxed{|x+1|}");
    SAME("$x^2$", "\\boxed{|x|^2}");
    SAME("$x$", "\\boxed{(\\sqrt{x})^2}");            /* x >= 0 */
    SAME("$\\sqrt{xy}$", "\\boxed{\\sqrt{x}\\sqrt{y}}");  /* x, y >= 0 */
    SAME("$\\ln(x^2)$", "\\boxed{2\\ln|x|}");
    SAME("$\\frac{x^2-1}{x-1}$", "\\boxed{x+1}");
    SAME("$x^{2/3}$", "\\boxed{\\sqrt[3]{x^2}}");
    SAME("$e^{\\ln x}$", "\\boxed{x}");                 /* x > 0 */
    SAME("$\\log_2 x$", "\\boxed{\\frac{\\ln x}{\\ln 2}}");
    SAME("$\\sqrt{x-30}$", "\\boxed{(x-30)^{1/2}}");    /* x >= 30: the larger points */
    SAME("$x > 2$", "\\boxed{-x < -2}");
    SAME("$y = 2x+3$", "\\boxed{2x - y + 3 = 0}");
    /* never defined together: nothing proves them equal */
    DIFF("$\\sqrt{x}$", "\\boxed{\\sqrt{-x}}");
    DIFF("$\\ln x$", "\\boxed{\\ln(-x)}");
}

TEST(approximate_gold)
{
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    c.float_rounding = 4;
    CHECK(verify_(&c, "$\\frac{1}{3}$", "0.3333", NULL, 0));
    c.float_rounding = 5;
    CHECK(verify_(&c, "4.123105625617661", "$\\sqrt{17}$", NULL, 0));
    CHECK(!verify_(&c, "$4$", "$4\\sqrt{2}$", NULL, 0));
    c.float_rounding = 6;
    CHECK(verify_(&c, "$16386.20$", "$\\boxed{\\$16,\\!386.20}$", NULL, 0));
    CHECK(!verify_(&c, "$16386.20$", "$\\boxed{16386.17}$", NULL, 0));
}

/* ---- 3. hostile inputs ------------------------------------------------------------ */

static void hostile_(const char *what, const char *gold, const char *pred, size_t pred_len, const char *const *ok)
{
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    kd_verdict v;
    kd_verdict_init(&v);
    double t0 = now_();
    int st = kd_math_verify(&c, gold, strlen(gold), pred, pred_len, &v);
    double dt = now_() - t0;
    test_checks_++;
    if (st != KD_OK)
        FAIL_("%s: %s", what, kd_strerror(st));
    test_checks_++;
    if (dt > 2.0)
        FAIL_("%s: took %.2f s", what, dt);
    int good = 0;
    for (const char *const *r = ok; *r; r++)
        if (!strcmp(v.reason, *r))
            good = 1;
    test_checks_++;
    if (!good)
        FAIL_("%s: reason '%s'", what, v.reason);
    test_checks_++;
    if (v.accepted)
        FAIL_("%s: accepted", what);
    printf("  %-24s %-13s %.1f ms\n", what, v.reason, 1e3 * dt);
    kd_verdict_release(&v);
}

TEST(hostile)
{
    static const char *const any_reject[] = {"no_answer", "parse_error", "too_large", "budget", "wrong_answer",
                                             "bad_gold", NULL};
    size_t n = 100000;
    char *s = malloc(2 * n + 64);
    /* 100k nested braces, closed and unclosed */
    strcpy(s, "\\boxed{");
    size_t k = strlen(s);
    for (size_t i = 0; i < n; i++)
        s[k++] = '{';
    s[k++] = '1';
    for (size_t i = 0; i < n; i++)
        s[k++] = '}';
    s[k++] = '}';
    s[k] = 0;
    hostile_("nested braces", "$1$", s, k, any_reject);
    hostile_("unclosed braces", "$1$", s, n / 2, any_reject);
    /* 100k nested parentheses */
    k = 0;
    s[k++] = '$';
    for (size_t i = 0; i < n; i++)
        s[k++] = '(';
    s[k++] = '2';
    for (size_t i = 0; i < n; i++)
        s[k++] = ')';
    s[k++] = '$';
    s[k] = 0;
    hostile_("nested parens", "$1$", s, k, any_reject);
    /* numbers glued to LaTeX terms, 20k times over, the last one unclosed: each bare term is
     * scanned at most 200 bytes */
    k = 0;
    for (size_t i = 0; k + 16 < 2 * n; i++) {
        memcpy(s + k, " 2\\sqrt{3}", 10);
        k += 10;
    }
    memcpy(s + k, " 2\\sqrt{", 8);
    k += 8;
    s[k] = 0;
    hostile_("glued terms", "$2$", s, k, any_reject);
    free(s);
    static const char *const big[] = {"too_large", "wrong_answer", "parse_error", NULL};
    const char *tower = "$\\boxed{2^{2^{2^{100}}}}$";
    /* the same tower written the same way is the same expression (by structure) */
    CHECK(verify_(NULL, "$2^{2^{2^{100}}}$", tower, NULL, 0));
    hostile_("power tower vs tower+1", "$2^{2^{2^{100}}}+1$", tower, strlen(tower), big);
    hostile_("power tower vs 0", "$0$", tower, strlen(tower), big);
    const char *fact = "\\boxed{1000000!}";
    CHECK(verify_(NULL, "$1000000!$", fact, NULL, 0));
    hostile_("1000000! vs 999999!", "$999999!$", fact, strlen(fact), big);
    hostile_("1000000! vs 1000000!+1", "$1000000!+1$", fact, strlen(fact), big);
    hostile_("1000000! vs 1", "$1$", fact, strlen(fact), big);
    const char *pw = "\\boxed{10^{10^{10}} - 10^{10^{10}} + 1}";
    hostile_("huge cancel", "$2$", pw, strlen(pw), big);
    /* 10 MB of text */
    size_t mb = 10u << 20;
    char *m = malloc(mb + 32);
    for (size_t i = 0; i < mb; i++)
        m[i] = "1 $x^2 + \\frac{3}{4}$ (a, b] \\boxed{7} answer: = "[i % 48];
    m[mb] = 0;
    hostile_("10 MB", "$8$", m, mb, any_reject);
    for (size_t i = 0; i < mb; i++)
        m[i] = "\\boxed{"[i % 7];
    hostile_("10 MB of \\boxed{", "$8$", m, mb, any_reject);
    for (size_t i = 0; i < mb; i++)
        m[i] = "1 1/1 "[i % 6];
    hostile_("10 MB of 1 1/1", "$8$", m, mb, any_reject);
    for (size_t i = 0; i < mb; i++)
        m[i] = "answer $"[i % 8];
    hostile_("10 MB of answer $", "$8$", m, mb, any_reject);
    free(m);
    /* invalid UTF-8, NULs, lone backslashes */
    const char bad[] = "\xff\xfe\xc3\x28 \\boxed{\xe2\x82} \x80\x80 $\\\\$ \\";
    hostile_("invalid utf-8", "$1$", bad, sizeof bad - 1, any_reject);
    const char nul[] = "\\boxed{1\0 2}\0";
    hostile_("embedded NUL", "$3$", nul, sizeof nul - 1, any_reject);
    const char *bs = "\\ \\\\ \\\\\\ \\boxed{\\} \\";
    hostile_("lone backslashes", "$1$", bs, strlen(bs), any_reject);
    const char *empty = "";
    hostile_("empty", "$1$", empty, 0, any_reject);
    hostile_("empty gold", "", "\\boxed{1}", 9, any_reject);
}

/* "\frac{1}{" k times around 2, and the closing braces, wrapped in pre/post. */
static char *nested_frac_(int k, const char *pre, const char *post)
{
    size_t n = strlen(pre) + strlen(post) + 10 * (size_t)k + 2;
    char *s = malloc(n);
    size_t o = 0;
    o += (size_t)sprintf(s + o, "%s", pre);
    for (int i = 0; i < k; i++)
        o += (size_t)sprintf(s + o, "\\frac{1}{");
    s[o++] = '2';
    for (int i = 0; i < k; i++)
        s[o++] = '}';
    sprintf(s + o, "%s", post);
    return s;
}

/* An answer nested past max_depth is too large to read; the fraction at its
 * core is not the answer. */
TEST(deep_nesting)
{
    /* 1/(1/(...1/2)): an even number of fractions is 2, an odd one 1/2 */
    const char *wraps[][2] = {{"\\boxed{", "}"}, {"$", "$"}, {"the answer is $", "$."}};
    for (size_t w = 0; w < 3; w++) {
        char *s = nested_frac_(2, wraps[w][0], wraps[w][1]);
        DIFF("$\\frac{1}{2}$", s);
        SAME("$2$", s);
        free(s);
        s = nested_frac_(400, wraps[w][0], wraps[w][1]);
        DIFF("$\\frac{1}{2}$", s);
        if (w == 0)
            REASON("$\\frac{1}{2}$", s, "too_large");
        free(s);
        s = nested_frac_(401, wraps[w][0], wraps[w][1]);
        DIFF("$\\frac{1}{2}$", s); /* right, but past max_depth: not read */
        free(s);
    }
    /* without delimiters, a fraction inside another is not the answer */
    char *s = nested_frac_(2, "so it is ", "");
    DIFF("$\\frac{1}{2}$", s);
    free(s);
    DIFF("$\\frac{1}{2}$", "so it is \\sqrt{\\frac{1}{2}}");
    SAME("$\\frac{1}{2}$", "so it is \\frac{1}{2}");
    /* a deep gold is no gold */
    s = nested_frac_(400, "$", "$");
    REASON(s, "\\boxed{2}", "bad_gold");
    free(s);
}

/* A response that only restates the question (cfg.question known). */
static void restate_(const char *q, const char *gold, const char *pred, int acc, const char *why)
{
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    c.question = q;
    c.question_len = q ? strlen(q) : 0;
    kd_verdict v;
    kd_verdict_init(&v);
    test_checks_++;
    if (kd_math_verify(&c, gold, strlen(gold), pred, strlen(pred), &v) != KD_OK)
        FAIL_("kd_math_verify failed");
    else if (v.accepted != acc || strcmp(v.reason, why))
        FAIL_("question '%.40s' gold '%s' pred '%.60s': %d %s (%s), expected %d %s", q ? q : "(none)", gold, pred,
              v.accepted, v.reason, v.detail, acc, why);
    else if (!strcmp(why, "no_answer") && strcmp(v.detail, "the response restates the question"))
        FAIL_("pred '%.60s': detail '%s'", pred, v.detail);
    kd_verdict_release(&v);
}

TEST(restated_question)
{
    const char *q = "What is 1/2 + 1/4?";
    /* the question itself, or its expression, is no answer */
    restate_(q, "3/4", "What is 1/2 + 1/4?", 0, "no_answer");
    restate_(q, "3/4", "  What is   1/2+1/4  ", 0, "no_answer");
    restate_(q, "3/4", "The sum is 1/2 + 1/4.", 0, "no_answer");
    restate_(q, "3/4", "What is 1/2 + 1/4? Let me think about it.", 0, "no_answer");
    restate_(q, "3/4", "<think>hmm</think>What is 1/2 + 1/4?", 0, "no_answer");
    /* without the question: the old behaviour */
    restate_(NULL, "3/4", "The sum is 1/2 + 1/4.", 1, "correct");
    restate_(NULL, "3/4", "1/2 + 1/4", 1, "correct");
    restate_(q, "3/4", "1/2 + 1/4", 0, "no_answer");
    /* real answers stay answers */
    restate_(q, "3/4", "The sum is 3/4.", 1, "correct");
    restate_(q, "3/4", "What is 1/2 + 1/4? It is 3/4.", 1, "correct");
    restate_(q, "3/4", "1/2 + 1/4 = \\boxed{3/4}", 1, "correct");
    restate_(q, "1/2", "1/2 + 1/4 = 3/4", 0, "wrong_answer");
    /* a boxed answer that happens to be in the question */
    restate_("Is the answer 4 or 5?", "4", "\\boxed{4}", 1, "correct");
    restate_("Is the answer 4 or 5?", "4", "It is 4.", 1, "correct");  /* one token */
    restate_("Is the answer 4 or 5?", "4", "4", 1, "correct");
    /* a marker inside the copied question is the question's */
    restate_("Is the answer 4 or 5?", "4", "Is the answer 4 or 5? Hmm.", 0, "no_answer");
    restate_("Is the answer 4 or 5?", "4", "Is the answer 4 or 5? The final answer is $4$. I hope it is correct.", 1,
             "correct");
    /* LaTeX questions: delimiters and spacing do not matter */
    const char *lq = "Compute $\\frac{1}{2} + \\frac{1}{4}$.";
    restate_(lq, "$\\frac{3}{4}$", "Compute \\(\\frac{1}{2}+\\frac{1}{4}\\).", 0, "no_answer");
    restate_(lq, "$\\frac{3}{4}$", "We need $\\frac{1}{2} + \\frac{1}{4}$", 0, "no_answer");
    restate_(lq, "$\\frac{3}{4}$", "We need $\\frac{1}{2} + \\frac{1}{4} = \\frac{3}{4}$", 1, "correct");
    restate_(lq, "$\\frac{3}{4}$", "So the result is $\\frac{3}{4}$.", 1, "correct");
    restate_(lq, "$\\frac{3}{4}$", "$\\boxed{\\frac{1}{2} + \\frac{1}{4}}$", 1, "correct");
    /* a number of the question's inside a longer one is not its text */
    restate_("Find $x$ if $x^2 = 16$ and $x > 0$.", "4", "x = 4", 1, "correct");
    restate_("What is 12 + 0.25?", "12.25", "12.25", 1, "correct");
    /* a choice letter named in the question */
    restate_("Which is prime? (A) 4 (B) 7", "$(B)$", "B", 1, "correct");
    restate_("Which is prime? (A) 4 (B) 7", "$(B)$", "The answer is (B)", 1, "correct");
    /* empty or odd questions change nothing */
    restate_("", "3/4", "The sum is 3/4.", 1, "correct");
    restate_("$$ \\( \\)", "3/4", "The sum is 3/4.", 1, "correct");
    /* a question with NULs and a huge one are read safely (tail kept) */
    const char nq[] = "What\0is 1/2 + 1/4?";
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    c.question = nq;
    c.question_len = sizeof nq - 1;
    char r[64];
    CHECK(!verify_(&c, "3/4", "What is 1/2 + 1/4?", r, sizeof r));
    CHECK_STR(r, "no_answer");
    size_t big = 1u << 20;
    char *h = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        h[i] = "1/2+1/4 aa "[i % 11];
    h[big] = 0;
    c.question = h;
    c.question_len = big;
    CHECK(verify_(&c, "3/4", "The sum is 3/4.", r, sizeof r));
    CHECK(!verify_(&c, "3/4", "1/2+1/4", r, sizeof r));
    CHECK_STR(r, "no_answer");
    free(h);
}

/* The verifier keeps no state: many threads verifying at once agree with
 * one thread doing it alone. */
typedef struct tjob {
    const char *const *pairs;
    int n;
    int *out;
} tjob;

static void *tworker_(void *arg)
{
    tjob *j = arg;
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    for (int r = 0; r < 200; r++)
        for (int i = 0; i < j->n; i++) {
            kd_verdict v;
            kd_verdict_init(&v);
            kd_math_verify(&c, j->pairs[2 * i], strlen(j->pairs[2 * i]), j->pairs[2 * i + 1],
                           strlen(j->pairs[2 * i + 1]), &v);
            if (r == 0)
                j->out[i] = v.accepted;
            else if (j->out[i] != v.accepted)
                j->out[i] = -1;
            kd_verdict_release(&v);
        }
    kd_math_thread_release();
    return NULL;
}

TEST(threads)
{
    static const char *const pairs[] = {
        "$\\frac{\\pi}{4}$", "\\boxed{\\arctan 1}", "$\\sqrt{2}$", "\\boxed{1.41421356}",
        "$(x+1)^2$", "\\boxed{x^2+2x+1}", "$2^{64}$", "\\boxed{2^{64}-1}",
        "$[0,1)$", "\\boxed{[0,1]}", "$e^2$", "\\boxed{\\exp(2)}",
        "$1000000!$", "\\boxed{999999!}", "$\\text{C}$", "the answer is (C)",
    };
    enum { NP = 8, NT = 4 };
    int want[NP], got[NT][NP];
    tjob one = {pairs, NP, want};
    tworker_(&one);
    pthread_t th[NT];
    tjob jobs[NT];
    for (int t = 0; t < NT; t++) {
        jobs[t] = (tjob){pairs, NP, got[t]};
        CHECK(pthread_create(&th[t], NULL, tworker_, &jobs[t]) == 0);
    }
    for (int t = 0; t < NT; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < NP; i++)
            CHECK_EQ_INT(got[t][i], want[i]);
    static const int expect[NP] = {1, 1, 1, 0, 0, 1, 0, 1};
    for (int i = 0; i < NP; i++)
        CHECK_EQ_INT(want[i], expect[i]);
}

int main(void)
{
    RUN(cfg_from_note);
    RUN(exact_big_numbers);
    RUN(boxes);
    RUN(bare_gold);
    RUN(answer_phrases);
    RUN(think_blocks);
    RUN(numbers_and_forms);
    RUN(percent_units_currency);
    RUN(separators_and_unicode);
    RUN(sets_tuples_intervals);
    RUN(matrices);
    RUN(complex_numbers);
    RUN(multiple_choice_and_text);
    RUN(restated_question);
    RUN(symbolic);
    RUN(approximate_gold);
    RUN(hostile);
    RUN(deep_nesting);
    RUN(threads);
    RUN(public_bench);
    return test_summary();
}
