/* test_text.c - the text verifiers (rejection/text.h): format, language,
 * readability, degeneration, each on real-looking R1 completions that must
 * pass and on the failures they must name; the two loop detectors against
 * slow, obvious references on random texts; and hostile inputs (bytes that
 * are not UTF-8, NUL bytes, 10 MB of one character, tag soup) that must come
 * back with a verdict in bounded time. */
#include "test.h"

#include <stdint.h>
#include <time.h>

#include "core/config.h"
#include "rejection/text.h"

/* ---- fixtures: what R1 writes --------------------------------------------- */

/* An English R1 completion, stored with the forced "<think>\n". */
static const char EN_R1[] =
    "<think>\n"
    "Okay, so I need to find the sum of all positive divisors of 36. Let me think about how to approach this.\n\n"
    "First, I remember that the sum of divisors function is multiplicative. So if I can factor 36 into primes, "
    "I can use the formula. Let's factor it: $36 = 2^2 \\cdot 3^2$.\n\n"
    "The formula for the sum of divisors of $p^a$ is $\\frac{p^{a+1}-1}{p-1}$. So for $2^2$ that gives "
    "$1 + 2 + 4 = 7$, and for $3^2$ it gives $1 + 3 + 9 = 13$.\n\n"
    "Multiplying them: $7 \\times 13 = 91$.\n\n"
    "Wait, let me double-check by listing the divisors: 1, 2, 3, 4, 6, 9, 12, 18, 36. Adding them up: "
    "1 + 2 = 3, 3 + 3 = 6, 6 + 4 = 10, 10 + 6 = 16, 16 + 9 = 25, 25 + 12 = 37, 37 + 18 = 55, 55 + 36 = 91. "
    "Yes, that matches, so the answer should be 91.\n"
    "</think>\n\n"
    "The sum of the positive divisors of 36 is $\\boxed{91}$.";

/* The same in Chinese. */
static const char ZH_R1[] =
    "<think>\n"
    "嗯，我需要求36的所有正约数之和。让我想想该怎么做。\n\n"
    "首先，约数和函数是积性函数。把36分解质因数：$36 = 2^2 \\times 3^2$。\n\n"
    "对于 $2^2$，约数和是 $1 + 2 + 4 = 7$；对于 $3^2$，约数和是 $1 + 3 + 9 = 13$。\n\n"
    "所以总和是 $7 \\times 13 = 91$。\n\n"
    "等等，我再验证一下，列出所有约数：1、2、3、4、6、9、12、18、36，加起来正好是91。没错。\n"
    "</think>\n\n"
    "36的所有正约数之和是 $\\boxed{91}$。";

/* English with a Chinese sentence in the middle of the CoT: R1-Zero's mixing. */
static const char EN_MIXED[] =
    "<think>\n"
    "Okay, so I need to find the sum of all positive divisors of 36. Let me think about how to approach this.\n\n"
    "First, I remember that the sum of divisors function is multiplicative. So if I can factor 36 into primes, "
    "I can use the formula. Let's factor it: $36 = 2^2 \\cdot 3^2$.\n\n"
    "嗯，这里我需要再仔细检查一下计算过程是否正确。\n\n"
    "The formula for the sum of divisors of $p^a$ is $\\frac{p^{a+1}-1}{p-1}$. So for $2^2$ that gives "
    "$1 + 2 + 4 = 7$, and for $3^2$ it gives $1 + 3 + 9 = 13$. Multiplying them gives 91.\n"
    "</think>\n\n"
    "The answer is $\\boxed{91}$.";

static kd_text_cfg cfg(void)
{
    kd_text_cfg c;
    kd_text_cfg_init(&c);
    return c;
}

/* Run a check on a C string; the verdict's reason (static buffer per call site
 * is not needed: the verdict is kept in *v). */
#define S(str) (str), strlen(str)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- configuration ---------------------------------------------------------- */

TEST(config)
{
    kd_text_cfg c = cfg();
    CHECK_EQ_INT(c.think_in_prompt, 1);
    CHECK(c.lang == NULL);
    CHECK_NEAR(c.lang_min_fraction, 0.5, 0);
    CHECK_NEAR(c.mixed_max_fraction, 0.02, 0);
    CHECK_EQ_INT(c.mixed_min_run, 2);
    CHECK_EQ_INT(c.max_paragraph_chars, 3000);
    CHECK_EQ_INT(c.forbid_code_in_think, 1);
    CHECK_EQ_INT(c.ngram_n, 8);
    CHECK_EQ_INT(c.ngram_max_repeats, 10);
    CHECK_EQ_INT(c.period_max, 500);
    CHECK_EQ_INT(c.period_min_span, 2000);

    /* YAML, through the schema */
    static const char yaml[] = "lang: zh\nmax_paragraph_chars: 100\nforbid_code_in_think: false\n";
    CHECK_OK(kd_cfg_load_string(&kd_text_schema, &c, yaml, strlen(yaml), "text.yaml"));
    CHECK_STR(c.lang, "zh");
    CHECK_EQ_INT(c.max_paragraph_chars, 100);
    CHECK_EQ_INT(c.forbid_code_in_think, 0);
    kd_verdict v;
    kd_verdict_init(&v);
    CHECK_OK(kd_check_language(&c, S(ZH_R1), &v));
    CHECK_STR(v.reason, "ok");
    kd_cfg_release(&kd_text_schema, &c);
    CHECK_ERR(kd_cfg_load_string(&kd_text_schema, &c, "ngram_n: 65\n", 12, "t.yaml"), KD_E_CONFIG, "ngram_n");

    /* a struct filled by hand is checked by every call */
    c = cfg();
    c.lang = "klingon";
    CHECK_ERR(kd_check_language(&c, S(EN_R1), &v), KD_E_CONFIG, "lang 'klingon'");
    CHECK_STR(v.reason, "config");
    CHECK_EQ_INT(v.accepted, 0);
    c = cfg();
    c.period_min_span = 1499;
    CHECK_ERR(kd_check_degeneration(&c, S(EN_R1), 0, &v), KD_E_CONFIG, "period_min_span");
    c = cfg();
    c.lang_min_fraction = NAN;
    CHECK_ERR(kd_check_format(&c, S(EN_R1), &v), KD_E_CONFIG, "lang_min_fraction");
    c = cfg();
    c.ngram_n = 100;
    CHECK_ERR(kd_check_text(&c, S(EN_R1), 0, &v), KD_E_CONFIG, "ngram_n");

    /* language codes and script names */
    static const struct {
        const char *lang, *text;
        const char *reason;
    } langs[] = {
        {"en", EN_R1, "ok"},          {"EN-us", EN_R1, "ok"},        {"latin", EN_R1, "ok"},
        {"fr", EN_R1, "ok"},          {"zh", ZH_R1, "ok"},           {"zh-CN", ZH_R1, "ok"},
        {"zh_Hans", ZH_R1, "ok"},     {"cjk", ZH_R1, "ok"},          {"ja", ZH_R1, "ok"},
        {"auto", ZH_R1, "ok"},        {"", EN_R1, "ok"},             {"zh", EN_R1, "wrong_language"},
        {"en", ZH_R1, "wrong_language"}, {"ru", EN_R1, "wrong_language"}, {"cyrillic", ZH_R1, "wrong_language"},
    };
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++) {
        c = cfg();
        c.lang = (char *)langs[i].lang;
        CHECK_OK(kd_check_language(&c, S(langs[i].text), &v));
        if (strcmp(v.reason, langs[i].reason))
            FAIL_("lang %s: %s (%s), expected %s", langs[i].lang, v.reason, v.detail, langs[i].reason);
        test_checks_++;
    }
    kd_verdict_release(&v);
}

/* ---- the parts ---------------------------------------------------------------- */

TEST(parts)
{
    static const struct {
        const char *text;
        int tip;
        const char *cot, *ans;
    } cases[] = {
        {"<think>\nA</think>\n\nB", 1, "\nA", "\n\nB"},
        {"A</think>B", 1, "A", "B"},
        {"A</think>B", 0, "A", "B"},
        {"no tags at all", 0, "", "no tags at all"},
        {"no tags at all", 1, "no tags at all", ""}, /* the prompt opened a CoT that never closed */
        {"<think>unfinished", 0, "unfinished", ""},
        {"<think>a</think>b</think>c", 0, "a</think>b", "c"}, /* the last </think> */
        {"", 1, "", ""},
        {"</think>", 1, "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = cases[i].text, *p;
        size_t n = strlen(t), len;
        kd_text_think(t, n, cases[i].tip, &p, &len);
        test_checks_++;
        if (len != strlen(cases[i].cot) || memcmp(p, cases[i].cot, len) || p < t || p + len > t + n)
            FAIL_("think of case %zu: \"%.*s\", expected \"%s\"", i, (int)len, p, cases[i].cot);
        kd_text_answer(t, n, cases[i].tip, &p, &len);
        test_checks_++;
        if (len != strlen(cases[i].ans) || memcmp(p, cases[i].ans, len) || p < t || p + len > t + n)
            FAIL_("answer of case %zu: \"%.*s\", expected \"%s\"", i, (int)len, p, cases[i].ans);
    }
    const char *p;
    size_t len = 7;
    kd_text_answer(NULL, 0, 0, &p, &len);
    CHECK(p != NULL && len == 0);
    kd_text_think(NULL, 0, 1, &p, &len);
    CHECK(p != NULL && len == 0);
}

/* ---- format --------------------------------------------------------------- */

TEST(format)
{
    kd_text_cfg c = cfg();
    kd_verdict v;
    kd_verdict_init(&v);

    /* R1 as stored (with the forced <think>) and as generated (without) */
    CHECK_OK(kd_check_format(&c, S(EN_R1), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_EQ_INT(v.accepted, 1);
    CHECK_NEAR(v.score, 1, 0);
    CHECK_STR(v.extracted, "The sum of the positive divisors of 36 is $\\boxed{91}$.");
    CHECK_OK(kd_check_format(&c, S(EN_R1 + 8), &v)); /* past "<think>\n" */
    CHECK_STR(v.reason, "ok");
    CHECK_OK(kd_check_format(&c, S(ZH_R1), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_STR(v.extracted, "36的所有正约数之和是 $\\boxed{91}$。");

    static const struct {
        int tip;
        const char *text, *reason;
    } cases[] = {
        /* think_in_prompt (R1's template) */
        {1, "reasoning</think>answer", "ok"},
        {1, "  \n<think>reasoning</think>answer", "ok"},
        {1, "just an answer, never thought", "unclosed_think"},
        {1, "<think>reasoning, cut off", "unclosed_think"},
        {1, "a</think>b</think>c", "many_think"},
        {1, "a</think>b<think>c</think>d", "many_think"},
        {1, "<think>a<think>b</think>c", "many_think"}, /* nested */
        {1, "</think>answer", "empty_think"},
        {1, " \n\t\u3000</think>answer", "empty_think"}, /* an ideographic space is white space */
        {1, "reasoning</think>\n\n  ", "empty_answer"},
        {1, "reasoning</think>", "empty_answer"},
        /* the completion opens its own CoT */
        {0, "<think>reasoning</think>answer", "ok"},
        {0, "\n<think>\nreasoning\n</think>\n\nanswer", "ok"},
        {0, "an answer without thinking", "no_think"},
        {0, "", "no_think"},
        {0, "reasoning</think>answer", "no_think"},
        {0, "<think>a</think><think>b</think>c", "many_think"},
        {0, "<think><think>a</think></think>b", "many_think"},
        {0, "<think>never closed", "unclosed_think"},
        {0, "</think>a<think>b", "misordered_think"},
        {0, "Sure! <think>a</think>b", "text_before_think"},
        {0, "<think> </think>answer", "empty_think"},
        {0, "<think>a</think>", "empty_answer"},
        {0, "<think >a</think >b", "no_think"}, /* not our tags */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c.think_in_prompt = cases[i].tip;
        CHECK_OK(kd_check_format(&c, S(cases[i].text), &v));
        test_checks_++;
        if (strcmp(v.reason, cases[i].reason) || v.accepted != !strcmp(cases[i].reason, "ok") ||
            (v.accepted ? v.score != 1 : v.score != 0) || (v.extracted != NULL) != v.accepted)
            FAIL_("case %zu \"%s\" (think_in_prompt %d): %s (%s), expected %s", i, cases[i].text, cases[i].tip,
                  v.reason, v.detail, cases[i].reason);
    }
    c.think_in_prompt = 0;
    CHECK_OK(kd_check_format(&c, S("<think>a</think>  b c \n"), &v));
    CHECK_STR(v.extracted, "b c");
    CHECK_OK(kd_check_format(&c, NULL, 0, &v));
    CHECK_STR(v.reason, "no_think");
    CHECK(v.extracted == NULL); /* the old one was freed (ASan would tell) */
    kd_verdict_release(&v);
}

/* ---- language ------------------------------------------------------------- */

TEST(language)
{
    kd_text_cfg c = cfg();
    kd_verdict v;
    kd_verdict_init(&v);

    /* clean English and Chinese CoTs: math and numbers are neutral */
    c.lang = "en";
    CHECK_OK(kd_check_language(&c, S(EN_R1), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_NEAR(v.score, 1, 0);
    c.lang = "zh";
    CHECK_OK(kd_check_language(&c, S(ZH_R1), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_NEAR(v.score, 1, 0);

    /* an English CoT with a Chinese sentence: mixed (auto and en), not wrong */
    c.lang = NULL;
    CHECK_OK(kd_check_language(&c, S(EN_MIXED), &v));
    CHECK_STR(v.reason, "mixed_language");
    CHECK_NEAR(v.score, 63.0 / 84.0, 1e-12); /* 63 latin words, 21 Han characters */
    CHECK_HAS(v.detail, "mostly cjk");
    const char *zh_at = strstr(EN_MIXED, "嗯");
    char at[32];
    snprintf(at, sizeof at, "byte %zu", (size_t)(zh_at - EN_MIXED));
    CHECK_HAS(v.detail, at);
    c.lang = "en";
    CHECK_OK(kd_check_language(&c, S(EN_MIXED), &v));
    CHECK_STR(v.reason, "mixed_language");
    c.mixed_max_fraction = 1; /* disabled: a translation task */
    CHECK_OK(kd_check_language(&c, S(EN_MIXED), &v));
    CHECK_STR(v.reason, "ok");
    c = cfg();

    /* the same sentence in the answer only: the CoT is what counts */
    static const char ans_zh[] = "<think>\nLet me compute the sum of the divisors of six: one, two, three and six "
                                 "make twelve.\n</think>\n\n答案是 12，也就是六的所有约数之和。";
    CHECK_OK(kd_check_language(&c, S(ans_zh), &v));
    CHECK_STR(v.reason, "ok");

    /* a stray two-character term is a run of 2 words: 2.1% of EN_R1's 93
     * counted words and 1.1% of twice as many */
    char buf[4096];
    int cot = (int)(strstr(EN_R1, "</think>") - EN_R1);
    snprintf(buf, sizeof buf, "%.*s The Chinese name of the theorem is 孙子 and it is old. %s", cot, EN_R1,
             EN_R1 + cot);
    CHECK_OK(kd_check_language(&c, S(buf), &v));
    CHECK_STR(v.reason, "mixed_language");
    CHECK_HAS(v.detail, "2.1% of 95 counted words");
    snprintf(buf, sizeof buf, "%.*s The Chinese name of the theorem is 孙子 and it is old. %.*s%s", cot, EN_R1, cot - 8,
             EN_R1 + 8, EN_R1 + cot);
    CHECK_OK(kd_check_language(&c, S(buf), &v));
    CHECK_STR(v.reason, "ok");
    CHECK(v.score > 0.98 && v.score < 1);

    /* the score is R1's fraction, counted by hand: latin "alpha beta gamma
     * delta" (4), cjk 中文 (2); neutral: x, n_1, 3rd, $..$, `code`, \alpha */
    static const char count[] = "alpha beta x gamma n_1 3rd delta $\\mathrm{foo bar}$ `some code here` \\alpha 中文";
    c.lang = "en";
    c.mixed_max_fraction = 1;
    CHECK_OK(kd_check_language(&c, S(count), &v));
    CHECK_NEAR(v.score, 4.0 / 6.0, 1e-12);
    c.lang = "zh";
    c.lang_min_fraction = 0.3;
    CHECK_OK(kd_check_language(&c, S(count), &v));
    CHECK_NEAR(v.score, 2.0 / 6.0, 1e-12);
    CHECK_STR(v.reason, "ok");
    c.lang_min_fraction = 0.34;
    CHECK_OK(kd_check_language(&c, S(count), &v));
    CHECK_STR(v.reason, "wrong_language");
    c = cfg();

    /* runs: single foreign words never count, runs of >= mixed_min_run do */
    static const char single[] = "one 中 two 文 three 字 four five six seven eight nine ten eleven twelve";
    c.lang = "en";
    c.mixed_max_fraction = 0;
    CHECK_OK(kd_check_language(&c, S(single), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_NEAR(v.score, 12.0 / 15.0, 1e-12);
    static const char pair[] = "one two three four five 中文 six";
    CHECK_OK(kd_check_language(&c, S(pair), &v));
    CHECK_STR(v.reason, "mixed_language");
    c.mixed_min_run = 3;
    CHECK_OK(kd_check_language(&c, S(pair), &v));
    CHECK_STR(v.reason, "ok");
    c = cfg();

    /* a Chinese CoT writing its formulas in LaTeX stays Chinese; code is neutral */
    static const char zh_code[] = "<think>\n我们用 Python 来验证：\n```python\nprint(sum(d for d in range(1, 37) "
                                  "if 36 % d == 0))\n```\n输出是 91，与 $\\sigma(36)$ 一致，其中 \\(\\sigma\\) 是约数和函数。"
                                  "\n</think>\n\n答案是 91。";
    c.lang = "zh";
    CHECK_OK(kd_check_language(&c, S(zh_code), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_NEAR(v.score, 1, 0.05); /* "Python" is the one latin word */

    /* nothing to count: accepted with score 1 */
    CHECK_OK(kd_check_language(&c, S("<think>$1+1=2$, 2 = 2.</think>2"), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_NEAR(v.score, 1, 0);

    /* other scripts */
    c.lang = "ru";
    CHECK_OK(kd_check_language(&c, S("Давайте посчитаем сумму делителей числа тридцать шесть.</think>91"), &v));
    CHECK_STR(v.reason, "ok");
    c.lang = "el";
    CHECK_OK(kd_check_language(&c, S("Ας υπολογίσουμε το άθροισμα.</think>91"), &v));
    CHECK_STR(v.reason, "ok");
    kd_verdict_release(&v);
}

/* ---- readability ---------------------------------------------------------- */

TEST(readability)
{
    kd_text_cfg c = cfg();
    kd_verdict v;
    kd_verdict_init(&v);

    CHECK_OK(kd_check_readability(&c, S(EN_R1), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_OK(kd_check_readability(&c, S(ZH_R1), &v));
    CHECK_STR(v.reason, "ok");

    /* a 5000-character paragraph, and the same text cut into ten paragraphs */
    static const char sent[] = "We keep adding the next term to the running sum and check it. "; /* 63 chars */
    size_t ns = strlen(sent);
    char *para = malloc(20000);
    size_t k = 0;
    k += (size_t)sprintf(para + k, "<think>\n");
    size_t at = k;
    for (int i = 0; i < 80; i++)
        k += (size_t)sprintf(para + k, "%s", sent); /* 5040 chars, one paragraph */
    k += (size_t)sprintf(para + k, "\n</think>\n\nThe answer is 5.");
    CHECK_OK(kd_check_readability(&c, para, k, &v));
    CHECK_STR(v.reason, "long_paragraph");
    char want[64];
    snprintf(want, sizeof want, "%zu characters at byte %zu", 80 * ns, at);
    CHECK_HAS(v.detail, want);
    k = 0;
    k += (size_t)sprintf(para + k, "<think>\n");
    for (int i = 0; i < 80; i++)
        k += (size_t)sprintf(para + k, "%s%s", sent, i % 8 == 7 ? "\n\n" : "\n"); /* single newlines join */
    k += (size_t)sprintf(para + k, "</think>\n\nThe answer is 5.");
    CHECK_OK(kd_check_readability(&c, para, k, &v));
    CHECK_STR(v.reason, "ok");
    /* Chinese counts characters, not bytes: 1000 CJK characters = 3000 bytes */
    k = 0;
    for (int i = 0; i < 100; i++)
        k += (size_t)sprintf(para + k, "我们再把下一项加上。");
    CHECK_OK(kd_check_readability(&c, para, k, &v));
    CHECK_STR(v.reason, "ok");
    c.max_paragraph_chars = 999;
    CHECK_OK(kd_check_readability(&c, para, k, &v));
    CHECK_STR(v.reason, "long_paragraph");
    CHECK_HAS(v.detail, "1000 characters");
    c.max_paragraph_chars = 0; /* disabled */
    CHECK_OK(kd_check_readability(&c, para, k, &v));
    CHECK_STR(v.reason, "ok");
    c = cfg();

    /* a long fenced code block is not a paragraph */
    k = 0;
    k += (size_t)sprintf(para + k, "<think>\nI will write the code.\n</think>\n\n```python\n");
    for (int i = 0; i < 200; i++)
        k += (size_t)sprintf(para + k, "total = total + values[%d] * weights[%d]\n", i, i);
    k += (size_t)sprintf(para + k, "```\n\nThis sums the weighted values.");
    CHECK(k > 6000);
    CHECK_OK(kd_check_readability(&c, para, k, &v));
    CHECK_STR(v.reason, "ok");
    free(para);

    /* ```python inside the CoT, against the same block in the answer */
    static const char code_think[] = "<think>\nLet me check with a quick script.\n\n```python\nprint(sum(d for d in "
                                     "range(1, 37) if 36 % d == 0))\n```\n\nIt prints 91.\n</think>\n\nThe answer is 91.";
    static const char code_answer[] = "<think>\nThe sum of divisors of 36 is 91.\n</think>\n\nYou can check it:\n\n"
                                      "```python\nprint(sum(d for d in range(1, 37) if 36 % d == 0))\n```\n";
    CHECK_OK(kd_check_readability(&c, S(code_think), &v));
    CHECK_STR(v.reason, "code_in_think");
    CHECK_HAS(v.detail, "```python");
    snprintf(want, sizeof want, "byte %zu", (size_t)(strstr(code_think, "```") - code_think));
    CHECK_HAS(v.detail, want);
    CHECK_OK(kd_check_readability(&c, S(code_think + 8), &v)); /* without the forced <think> */
    CHECK_STR(v.reason, "code_in_think");
    CHECK_OK(kd_check_readability(&c, S(code_answer), &v));
    CHECK_STR(v.reason, "ok");
    CHECK_OK(kd_check_readability(&c, S("<think>inline `x = 1` is not a block</think>ok"), &v));
    CHECK_STR(v.reason, "ok");
    c.forbid_code_in_think = 0; /* a code prompt */
    CHECK_OK(kd_check_readability(&c, S(code_think), &v));
    CHECK_STR(v.reason, "ok");
    kd_verdict_release(&v);
}

/* ---- degeneration --------------------------------------------------------- */

/* A long, natural CoT: words and phrases come back ("Let me", "Wait,",
 * "very very", "that that"), sentences recur apart, a 20x20 zero matrix
 * repeats exactly, numbers run on. None of it is a loop. */
static char *natural_text(size_t *len)
{
    static const char *const paras[] = {
        "Okay, let me see. We need the number of lattice paths from (0,0) to (5,5) that never go above the "
        "diagonal. That is the Catalan number, but let me verify it carefully, step by step.",
        "Let me check the small cases first. For n = 1 there is 1 path. For n = 2 there are 2 paths. For n = 3 "
        "there are 5 paths. For n = 4 there are 14 paths. Wait, let me check n = 4 again, very very carefully.",
        "Wait, that that is right: 14. The recurrence is C(n+1) = sum of C(i) C(n-i). Let me check: "
        "C(4) = C(0)C(3) + C(1)C(2) + C(2)C(1) + C(3)C(0) = 5 + 2 + 2 + 5 = 14. Yes.",
        "Let me check the formula too. C(n) = binom(2n, n) / (n + 1). For n = 5: binom(10, 5) = 252, and "
        "252 / 6 = 42. Let me check it again: 252 / 6 = 42. Yes, 42.",
        "Hmm, but wait. Let me make sure the problem does not allow touching the diagonal only. It says never go "
        "above, so touching is allowed. So the answer is the Catalan number C(5) = 42.",
    };
    size_t cap = 64 * 1024, k = 0;
    char *t = malloc(cap);
    k += (size_t)snprintf(t + k, cap - k, "<think>\n");
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < sizeof paras / sizeof paras[0]; i++)
            k += (size_t)snprintf(t + k, cap - k, "%s%s\n\n", round ? "Again: " : "", paras[(i + round) % 5]);
    k += (size_t)snprintf(t + k, cap - k, "The zero matrix:\n$$\\begin{pmatrix}\n");
    for (int r = 0; r < 20; r++) {
        for (int col = 0; col < 20; col++)
            k += (size_t)snprintf(t + k, cap - k, "0%s", col < 19 ? " & " : " \\\\\n");
    }
    k += (size_t)snprintf(t + k, cap - k, "\\end{pmatrix}$$\n\nCounting: ");
    for (int i = 1; i <= 300; i++)
        k += (size_t)snprintf(t + k, cap - k, "%d, ", i);
    k += (size_t)snprintf(t + k, cap - k, "done. And 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 = 13.\n"
                                          "</think>\n\nThe answer is $\\boxed{42}$.");
    *len = k;
    return t;
}

TEST(degeneration)
{
    kd_text_cfg c = cfg();
    kd_verdict v;
    kd_verdict_init(&v);

    CHECK_OK(kd_check_degeneration(&c, S(EN_R1), 0, &v));
    CHECK_STR(v.reason, "ok");
    CHECK_OK(kd_check_degeneration(&c, S(ZH_R1), 0, &v));
    CHECK_STR(v.reason, "ok");
    size_t nl;
    char *nat = natural_text(&nl);
    CHECK(nl > 5000);
    CHECK_OK(kd_check_degeneration(&c, nat, nl, 0, &v));
    CHECK_STR(v.reason, "ok");
    if (strcmp(v.reason, "ok"))
        fprintf(stderr, "  natural text: %s\n", v.detail);
    free(nat);

    /* truncated wins over everything */
    CHECK_OK(kd_check_degeneration(&c, S(EN_R1), 1, &v));
    CHECK_STR(v.reason, "truncated");
    CHECK_EQ_INT(v.accepted, 0);

    /* "the the the ...": 10 copies pass, 11 are a loop */
    char buf[8192];
    size_t k = (size_t)sprintf(buf, "<think>\nSo we get ");
    for (int i = 0; i < 10; i++)
        k += (size_t)sprintf(buf + k, "the ");
    k += (size_t)sprintf(buf + k, "answer.</think>42");
    CHECK_OK(kd_check_degeneration(&c, buf, k, 0, &v));
    CHECK_STR(v.reason, "ok");
    k = (size_t)sprintf(buf, "<think>\nSo we get ");
    for (int i = 0; i < 200; i++)
        k += (size_t)sprintf(buf + k, "the ");
    CHECK_OK(kd_check_degeneration(&c, buf, k, 0, &v));
    CHECK_STR(v.reason, "repetition");
    CHECK_HAS(v.detail, "1-word n-gram \"the\" repeated 11 times in a row from byte 18");

    /* a sentence loop, as R1 falls into: 5 words, 12 copies */
    k = (size_t)sprintf(buf, "<think>\nThe sum is 91. ");
    for (int i = 0; i < 12; i++)
        k += (size_t)sprintf(buf + k, "Wait, let me check again. ");
    CHECK_OK(kd_check_degeneration(&c, buf, k, 0, &v));
    CHECK_STR(v.reason, "repetition");
    CHECK_HAS(v.detail, "5-word n-gram \"Wait, let me check again.\" repeated 11 times");
    /* and in Chinese, where a character is a word: 8 words a copy */
    k = 0;
    for (int i = 0; i < 12; i++)
        k += (size_t)sprintf(buf + k, "我们再检查一下。");
    CHECK_OK(kd_check_degeneration(&c, buf, k, 0, &v));
    CHECK_STR(v.reason, "repetition");
    CHECK_HAS(v.detail, "8-word n-gram");

    /* a period-7 loop over 2100 bytes (no spaces: one "word", the period check finds it) */
    k = (size_t)sprintf(buf, "<think>\nLet me recompute. ");
    size_t loop_at = k;
    for (int i = 0; i < 300; i++)
        k += (size_t)sprintf(buf + k, "Wait...");
    CHECK_OK(kd_check_degeneration(&c, buf, k, 0, &v));
    CHECK_STR(v.reason, "repetition");
    char want[96];
    snprintf(want, sizeof want, "7-byte period \"Wait...\" repeated over 2100 bytes from byte %zu", loop_at);
    CHECK_HAS(v.detail, want);
    /* the boundary: span 2000 bytes exactly is a loop, 1999 is not */
    c.ngram_n = 0;
    memset(buf, 0, sizeof buf);
    for (int i = 0; i < 2000; i++)
        buf[i] = "abcdefg"[i % 7];
    CHECK_OK(kd_check_degeneration(&c, buf, 2000, 0, &v));
    CHECK_STR(v.reason, "repetition");
    CHECK_OK(kd_check_degeneration(&c, buf, 1999, 0, &v));
    CHECK_STR(v.reason, "ok");
    /* period 500 is the longest found, 501 is not */
    for (int i = 0; i < 4000; i++) /* a 500-byte unit that is not itself periodic */
        buf[i] = (char)(33 + ((unsigned)(i % 500) * 2654435761u >> 7) % 90);
    CHECK_OK(kd_check_degeneration(&c, buf, 4000, 0, &v));
    CHECK_STR(v.reason, "repetition");
    CHECK_HAS(v.detail, "500-byte period");
    for (int i = 0; i < 4000; i++)
        buf[i] = (char)(33 + ((unsigned)(i % 501) * 2654435761u >> 7) % 90);
    CHECK_OK(kd_check_degeneration(&c, buf, 4000, 0, &v));
    CHECK_STR(v.reason, "ok");
    c.period_max = 0; /* disabled */
    CHECK_OK(kd_check_degeneration(&c, S("Wait...Wait...Wait...Wait...Wait...Wait..."), 0, &v));
    CHECK_STR(v.reason, "ok");
    kd_verdict_release(&v);
}

/* The period check against the obvious O(n * P) scan, on random texts over
 * two letters (where periodic stretches are common) with loops planted. */
TEST(period_reference)
{
    kd_text_cfg c = cfg();
    c.ngram_n = 0;
    kd_verdict v;
    kd_verdict_init(&v);
    uint64_t x = 88172645463325252ull;
    int hits = 0, misses = 0;
    char s[400];
    for (int trial = 0; trial < 4000; trial++) {
        c.period_max = 1 + trial % 6;
        c.period_min_span = 3 * c.period_max + trial % 7;
        size_t n = 20 + (size_t)(trial % 380);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            s[i] = "ab"[x & 1];
        }
        if (trial % 3 == 0) { /* plant a loop of a random period somewhere */
            size_t p = 1 + (x >> 8) % 8, len = (size_t)c.period_min_span + (x >> 16) % 5;
            size_t at = len < n ? (x >> 24) % (n - len) : 0;
            for (size_t i = at + p; i < at + len && i < n; i++)
                s[i] = s[i - p];
        }
        int want = 0;
        for (size_t p = 1; p <= (size_t)c.period_max; p++) {
            size_t run = 0;
            for (size_t i = p; i < n; i++) {
                run = s[i] == s[i - p] ? run + 1 : 0;
                if (run + p >= (size_t)c.period_min_span)
                    want = 1;
            }
        }
        CHECK_OK(kd_check_degeneration(&c, s, n, 0, &v));
        int got = !strcmp(v.reason, "repetition");
        if (got != want) {
            FAIL_("trial %d: n %zu, P %lld, span %lld: got %s (%s), reference %d", trial, n, (long long)c.period_max,
                  (long long)c.period_min_span, v.reason, v.detail, want);
            break;
        }
        hits += want;
        misses += !want;
    }
    test_checks_++;
    CHECK(hits > 500 && misses > 500); /* both outcomes were exercised */

    /* the boundary, exhaustively: a loop of exactly span (or span - 1) bytes
     * at every offset, on a background of 26 letters that rarely extends it */
    for (int P = 1; P <= 6; P++)
        for (int extra = 0; extra <= 6; extra++)
            for (int p = 1; p <= P; p++)
                for (int len_less = 0; len_less <= 1; len_less++)
                    for (size_t at = 0; at < 40; at++) {
                        c.period_max = P;
                        c.period_min_span = 3 * P + extra;
                        size_t len = (size_t)c.period_min_span - (size_t)len_less, n = at + len + 20;
                        for (size_t i = 0; i < n; i++) {
                            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                            s[i] = (char)('a' + x % 26);
                        }
                        for (size_t i = at + (size_t)p; i < at + len; i++)
                            s[i] = s[i - (size_t)p];
                        int want = 0;
                        for (size_t q = 1; q <= (size_t)P; q++) {
                            size_t run = 0;
                            for (size_t i = q; i < n; i++) {
                                run = s[i] == s[i - q] ? run + 1 : 0;
                                want |= run + q >= (size_t)c.period_min_span;
                            }
                        }
                        CHECK_OK(kd_check_degeneration(&c, s, n, 0, &v));
                        if ((strcmp(v.reason, "repetition") == 0) != want) {
                            FAIL_("P %d, span %lld, period %d, loop of %zu bytes at %zu: got %s, reference %d", P,
                                  (long long)c.period_min_span, p, len, at, v.reason, want);
                            P = 7, extra = 7, p = 7, len_less = 2; /* report once */
                            break;
                        }
                    }
    kd_verdict_release(&v);
}

/* The n-gram check against the obvious scan: for every start and length,
 * count the copies that follow. Words "a", "b" and "0" (no letter). */
TEST(ngram_reference)
{
    kd_text_cfg c = cfg();
    c.period_max = 0;
    kd_verdict v;
    kd_verdict_init(&v);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int hits = 0, misses = 0;
    for (int trial = 0; trial < 3000; trial++) {
        c.ngram_n = 1 + trial % 4;
        c.ngram_max_repeats = 2 + trial % 3;
        int m = 5 + trial % 60;
        char w[80];
        for (int i = 0; i < m; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            w[i] = "ab0"[x % 3];
        }
        if (trial % 2 == 0) { /* plant copies */
            int p = 1 + (int)((x >> 8) % 5), len = p * (int)(c.ngram_max_repeats + (x >> 16) % 2);
            int at = len < m ? (int)((x >> 24) % (uint64_t)(m - len)) : 0;
            for (int i = at + p; i < at + len && i < m; i++)
                w[i] = w[i - p];
        }
        int want = 0;
        for (int p = 1; p <= c.ngram_n && !want; p++)
            for (int i = 0; i + p <= m && !want; i++) {
                int letter = 0;
                for (int q = 0; q < p; q++)
                    letter |= w[i + q] != '0';
                int copies = 1;
                while (i + (copies + 1) * p <= m && !memcmp(w + i, w + i + copies * p, (size_t)p))
                    copies++;
                want = letter && copies > c.ngram_max_repeats;
            }
        char s[200];
        size_t n = 0;
        for (int i = 0; i < m; i++) {
            s[n++] = w[i];
            s[n++] = i % 7 == 3 ? '\n' : ' ';
        }
        CHECK_OK(kd_check_degeneration(&c, s, n, 0, &v));
        int got = !strcmp(v.reason, "repetition");
        if (got != want) {
            FAIL_("trial %d: \"%.*s\" N %lld max %lld: got %s (%s), reference %d", trial, (int)n, s,
                  (long long)c.ngram_n, (long long)c.ngram_max_repeats, v.reason, v.detail, want);
            break;
        }
        hits += want;
        misses += !want;
    }
    test_checks_++;
    CHECK(hits > 300 && misses > 300);
    kd_verdict_release(&v);
}

/* ---- everything at once ---------------------------------------------------------- */

TEST(check_text)
{
    kd_text_cfg c = cfg();
    kd_verdict v;
    kd_verdict_init(&v);
    CHECK_OK(kd_check_text(&c, S(EN_R1), 0, &v));
    CHECK_STR(v.reason, "ok");
    CHECK_NEAR(v.score, 1, 0);
    CHECK_STR(v.extracted, "The sum of the positive divisors of 36 is $\\boxed{91}$.");
    CHECK_OK(kd_check_text(&c, S(ZH_R1), 0, &v));
    CHECK_STR(v.reason, "ok");
    CHECK_OK(kd_check_text(&c, S(EN_R1), 1, &v));
    CHECK_STR(v.reason, "truncated");
    CHECK(v.extracted == NULL);
    CHECK_OK(kd_check_text(&c, S(EN_MIXED), 0, &v));
    CHECK_STR(v.reason, "mixed_language");
    CHECK(v.extracted == NULL);
    CHECK_OK(kd_check_text(&c, S("<think>Let me check with code.\n```python\nprint(91)\n```\n</think>91"), 0, &v));
    CHECK_STR(v.reason, "code_in_think");
    CHECK_OK(kd_check_text(&c, S("no think at all"), 0, &v));
    CHECK_STR(v.reason, "unclosed_think");
    kd_verdict_release(&v);
}

/* ---- hostile inputs ------------------------------------------------------- */

/* Every check on t[0, n): a verdict with a known reason, sane fields. */
static void all_checks(const kd_text_cfg *c, const char *t, size_t n, const char *what)
{
    static const char *const reasons[] = {"ok", "no_think", "many_think", "empty_think", "empty_answer",
                                          "unclosed_think", "misordered_think", "text_before_think",
                                          "wrong_language", "mixed_language", "long_paragraph", "code_in_think",
                                          "repetition", "truncated"};
    kd_verdict v;
    kd_verdict_init(&v);
    for (int which = 0; which < 5; which++) {
        int st = which == 0   ? kd_check_format(c, t, n, &v)
                 : which == 1 ? kd_check_language(c, t, n, &v)
                 : which == 2 ? kd_check_readability(c, t, n, &v)
                 : which == 3 ? kd_check_degeneration(c, t, n, 0, &v)
                              : kd_check_text(c, t, n, 0, &v);
        test_checks_++;
        int known = 0;
        for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
            known |= !strcmp(v.reason, reasons[i]);
        if (st != KD_OK || !known || (v.accepted != 0 && v.accepted != 1) || !(v.score >= 0 && v.score <= 1) ||
            memchr(v.detail, 0, sizeof v.detail) == NULL)
            FAIL_("%s, check %d: status %d, reason \"%s\", accepted %d, score %g", what, which, st, v.reason,
                  v.accepted, v.score);
    }
    const char *p;
    size_t len;
    kd_text_think(t, n, c->think_in_prompt, &p, &len);
    CHECK(p >= t && p + len <= t + n);
    kd_text_answer(t, n, c->think_in_prompt, &p, &len);
    CHECK(p >= t && p + len <= t + n);
    kd_verdict_release(&v);
}

TEST(hostile)
{
    kd_text_cfg c = cfg();
    kd_verdict v;
    kd_verdict_init(&v);

    /* bytes that are not UTF-8: truncated sequences, overlongs, surrogates, stray continuations */
    static const char bad[] = "<think>\xe4\xb8 caf\xc3 \xc0\xaf \xed\xa0\x80 \x80\x80 \xff\xfe word\xf0\x9f\x98 "
                              "\xe4\xb8\xad\xe6\x96</think>\xf4\x90\x80\x80 answer \xe4";
    for (int tip = 0; tip < 2; tip++) {
        c.think_in_prompt = tip;
        all_checks(&c, bad, sizeof bad - 1, "invalid UTF-8");
        for (size_t cut = 0; cut < sizeof bad - 1; cut++)
            all_checks(&c, bad, cut, "invalid UTF-8, cut");
    }
    c.think_in_prompt = 0;
    CHECK_OK(kd_check_format(&c, bad, sizeof bad - 1, &v));
    CHECK_STR(v.reason, "ok"); /* stray bytes are content, not white space */
    c = cfg();

    /* NUL bytes are text like any other */
    static const char nul[] = "<think>\0reason\0ing\0</think>\0\0answer\0";
    all_checks(&c, nul, sizeof nul - 1, "NUL bytes");
    CHECK_OK(kd_check_format(&c, nul, sizeof nul - 1, &v));
    CHECK_STR(v.reason, "ok");
    CHECK_OK(kd_check_format(&c, S("<think>\0</think>"), &v)); /* strlen stops at the NUL */
    CHECK_STR(v.reason, "unclosed_think");

    /* tag soup */
    static const char *const soup[] = {"<think><think><think>", "</think></think>", "<think></think><think></think>",
                                       "</think><think>", "<think", "</think", "<<think>>", "<think></think>",
                                       "<</think>think>x"};
    for (size_t i = 0; i < sizeof soup / sizeof soup[0]; i++)
        for (int tip = 0; tip < 2; tip++) {
            c.think_in_prompt = tip;
            all_checks(&c, soup[i], strlen(soup[i]), soup[i]);
        }
    c = cfg();

    /* random bytes, biased to the characters the scanners care about */
    uint64_t x = 7;
    static const char alphabet[] = "<>/thinkTHINK$\\[]()`\n \t\x80\xe4\xb8\xad\xc3\xa9" "ab0_&";
    char r[300];
    for (int trial = 0; trial < 3000; trial++) {
        size_t n = (size_t)(trial % 300);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            r[i] = (x >> 32) % 4 ? alphabet[(x >> 8) % (sizeof alphabet - 1)] : (char)(x >> 16);
        }
        c.think_in_prompt = trial & 1;
        c.period_max = trial % 3;
        c.period_min_span = 3 * c.period_max + trial % 5 + 1;
        c.ngram_n = trial % 5;
        c.ngram_max_repeats = 1 + trial % 3;
        c.max_paragraph_chars = trial % 50;
        all_checks(&c, r, n, "random bytes");
    }
    kd_verdict_release(&v);
}

/* 10 MB inputs: one character, one CJK character, and the characters that
 * open searches (unclosed $, \[, `, <think>), each checked in bounded time. */
TEST(ten_megabytes)
{
    kd_text_cfg c = cfg();
    kd_verdict v;
    kd_verdict_init(&v);
    const size_t n = 10u << 20;
    char *t = malloc(n);
    static const struct {
        const char *unit;
        const char *format, *language, *readability, *degeneration;
    } cases[] = {
        {"a", "unclosed_think", "ok", "long_paragraph", "repetition"},
        {"中", "unclosed_think", "ok", "long_paragraph", "repetition"},
        {"$", "unclosed_think", "ok", "long_paragraph", "repetition"},
        {"\\[", "unclosed_think", "ok", "long_paragraph", "repetition"},
        {"`", "unclosed_think", "ok", "code_in_think", "repetition"},
        {"<think>", "many_think", "ok", "long_paragraph", "repetition"},
        {"</think>", "many_think", "ok", "long_paragraph", "repetition"},
        {"\xff", "unclosed_think", "ok", "long_paragraph", "repetition"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t ul = strlen(cases[i].unit), len = n / ul * ul;
        for (size_t k = 0; k < len; k += ul)
            memcpy(t + k, cases[i].unit, ul);
        double t0 = now_s();
        CHECK_OK(kd_check_format(&c, t, len, &v));
        CHECK_STR(v.reason, cases[i].format);
        double t1 = now_s();
        CHECK_OK(kd_check_language(&c, t, len, &v));
        CHECK_STR(v.reason, cases[i].language);
        double t2 = now_s();
        CHECK_OK(kd_check_readability(&c, t, len, &v));
        CHECK_STR(v.reason, cases[i].readability);
        double t3 = now_s();
        CHECK_OK(kd_check_degeneration(&c, t, len, 0, &v));
        CHECK_STR(v.reason, cases[i].degeneration);
        double t4 = now_s();
        printf("     10 MB of \"%s\": format %.3f s, language %.3f s, readability %.3f s, degeneration %.3f s\n",
               cases[i].unit[0] == '\xff' ? "\\xff" : cases[i].unit, t1 - t0, t2 - t1, t3 - t2, t4 - t3);
        CHECK(t4 - t0 < 10); /* about 0.5 s in Debug with ASan + UBSan */
    }

    /* 10 MB of a natural, non-looping text: the worst case for the loop scans
     * (nothing stops them early). Words from a counter, so nothing repeats. */
    size_t k = (size_t)sprintf(t, "<think>\n");
    for (uint64_t w = 1; k + 64 < n; w++) {
        uint64_t y = w * 0x9E3779B97F4A7C15ull;
        k += (size_t)sprintf(t + k, "%c%c%c%c%s", 'a' + (int)(y >> 60), 'a' + (int)(y >> 56 & 15),
                             'a' + (int)(y >> 52 & 15), 'a' + (int)(y >> 48 & 15), w % 13 ? " " : ".\n\n");
    }
    k += (size_t)sprintf(t + k, "\n</think>\n\nabcd");
    double t0 = now_s();
    CHECK_OK(kd_check_text(&c, t, k, 0, &v));
    double t1 = now_s();
    printf("     10 MB of words, every check: %.3f s (%s: %s)\n", t1 - t0, v.reason, v.detail);
    CHECK_STR(v.reason, "ok");
    CHECK(t1 - t0 < 10);
    free(t);
    kd_verdict_release(&v);
}

int main(void)
{
    RUN(config);
    RUN(parts);
    RUN(format);
    RUN(language);
    RUN(readability);
    RUN(degeneration);
    RUN(period_reference);
    RUN(ngram_reference);
    RUN(check_text);
    RUN(hostile);
    RUN(ten_megabytes);
    return test_summary();
}
