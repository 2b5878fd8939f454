/* test_problems.c - data/problems: the generated arithmetic problems and
 * their R1-format solutions.
 *
 * Every solution is re-checked the slow, obvious way: each "a op b = c."
 * line is parsed back and recomputed, the lines are counted against the
 * steps, the last result is the answer, and kd_math_verify accepts the
 * solution against its own answer and rejects it against a wrong one. A
 * planted fault (a wrong product) must fail the line check. The splits are
 * checked disjoint by comparing every text with every other (sorted), and
 * stable when another split's count changes.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"
#include "core/util.h"
#include "data/problems.h"
#include "data/store.h"
#include "rejection/math.h"
#include "test.h"

/* ---- collecting a split ------------------------------------------------------------- */

typedef struct {
    kd_problem *p;
    size_t n, cap;
} plist;

static int collect(const kd_problem *p, void *ctx)
{
    plist *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->p = realloc(l->p, l->cap * sizeof *l->p);
        if (!l->p)
            return kd_err(KD_E_NOMEM, "test list");
    }
    l->p[l->n++] = *p;
    return KD_OK;
}

static plist split_of(const kd_problems_cfg *c, int split)
{
    plist l = {0};
    CHECK_OK(kd_problems_each(c, split, collect, &l));
    return l;
}

static kd_problems_cfg small_cfg(uint64_t seed)
{
    kd_problems_cfg c;
    kd_problems_cfg_init(&c);
    c.seed = seed;
    c.steps_min = 2;
    c.steps_max = 6;
    c.n_train = 300;
    c.n_gen = 200;
    c.n_heldout = 100;
    return c;
}

/* ---- the slow check of a solution ------------------------------------------------------ */

/* Parse "a op b = c." at the end of a line and recompute it. Returns 1 when
 * the line is such an equation and holds, 0 when it is no equation, -1 when
 * it is one and does not hold (or a division is not exact). */
static int check_line(const char *line, size_t len, long long *a, long long *b, long long *c)
{
    char buf[256];
    if (len >= sizeof buf || !memchr(line, '=', len))
        return 0;
    memcpy(buf, line, len);
    buf[len] = 0;
    /* the equation starts at the last number before the operator before '=' */
    char *q = strrchr(buf, '=') - 1;
    while (q > buf && q[-1] == ' ')
        q--;
    while (q > buf && q[-1] >= '0' && q[-1] <= '9') /* b */
        q--;
    q -= 3;                                          /* " op " */
    if (q <= buf)
        return -1;
    while (q > buf && q[-1] >= '0' && q[-1] <= '9') /* a */
        q--;
    char op, end;
    if (sscanf(q, "%lld %c %lld = %lld%c", a, &op, b, c, &end) != 5 || end != '.')
        return -1;
    long long want = op == '+'   ? *a + *b
                     : op == '-' ? *a - *b
                     : op == '*' ? *a * *b
                     : op == '/' && *b && *a % *b == 0 ? *a / *b
                                                        : -1;
    return want == *c && want >= 0 ? 1 : -1;
}

/* What is wrong with p's solution, or NULL: the frame, every equation, the
 * chain (each equation starts from the previous amount; a group line "g X of
 * s is g * s = p" feeds the next line's second operand), the number of
 * equations and the last result. */
static const char *cot_error(const kd_problem *p)
{
    static char why[512];
    const char *cot = p->cot;
    if (strncmp(cot, "<think>\nStart with ", 19) != 0)
        return "no \"<think>\\nStart with \"";
    char tail[64];
    snprintf(tail, sizeof tail, "</think>\n\nThe answer is \\boxed{%" PRId64 "}.", p->answer);
    const char *close = strstr(cot, "</think>");
    if (!close || strcmp(close, tail) != 0)
        return "the tail is not </think> and the boxed answer";
    long long run = -1, prod = -1;
    if (sscanf(cot + 19, "%lld", &run) != 1 || run < 2)
        return "no start amount";
    int eqs = 0;
    for (const char *line = strchr(cot + 19, '\n') + 1; line < close;) {
        const char *nl = memchr(line, '\n', (size_t)(close - line));
        if (!nl)
            return "a line without its newline";
        int n = (int)(nl - line);
        long long a, b, c;
        int ok = check_line(line, (size_t)n, &a, &b, &c);
        if (ok <= 0) {
            snprintf(why, sizeof why, "%s: \"%.*s\"", ok < 0 ? "wrong arithmetic" : "not an equation", n, line);
            return why;
        }
        eqs++;
        if (memmem(line, (size_t)n, " is ", 4)) { /* a group: its product feeds the next line */
            if (prod >= 0)
                return "two group lines in a row";
            prod = c;
        } else {
            if (a != run || (prod >= 0 && b != prod)) {
                snprintf(why, sizeof why, "\"%.*s\" does not follow from %lld (group %lld)", n, line, run, prod);
                return why;
            }
            run = c;
            prod = -1;
        }
        line = nl + 1;
    }
    if (eqs != p->steps) {
        snprintf(why, sizeof why, "%d equations for %d steps", eqs, p->steps);
        return why;
    }
    if (prod >= 0 || run != p->answer)
        return "the last amount is not the answer";
    return NULL;
}

/* All of the structure problems.h promises, checked for one problem. */
static void check_problem(const kd_problem *p, const kd_math_cfg *mc_in)
{
    kd_math_cfg qc = *mc_in, *mc = &qc; /* as the pipeline verifies: knowing the question */
    qc.question = p->text;
    qc.question_len = strlen(p->text);
    char src[16];
    snprintf(src, sizeof src, "arith-%dstep", p->steps);
    CHECK_STR(p->source, src);
    CHECK(p->answer >= 1);
    CHECK(p->steps >= 2 && p->steps <= 6);
    const char *t = p->text;
    CHECK(strlen(t) > 20 && t[strlen(t) - 1] == '?');
    for (const char *s = t; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e || *s == '%') {
            FAIL_("a stray byte 0x%02x in \"%s\"", (unsigned char)*s, t);
            break;
        }
    const char *why = cot_error(p);
    if (why)
        FAIL_("%s in:\n%s\n%s", why, t, p->cot);
    long long start = -1;
    char needle[32];
    CHECK(sscanf(p->cot + 19, "%lld", &start) == 1);
    snprintf(needle, sizeof needle, " %lld ", start);
    CHECK_HAS(t, needle);

    char gold[32];
    snprintf(gold, sizeof gold, "%" PRId64, p->answer);
    kd_verdict v;
    kd_verdict_init(&v);
    CHECK_OK(kd_math_verify(mc, gold, strlen(gold), p->cot, strlen(p->cot), &v));
    if (!v.accepted)
        FAIL_("kd_math_verify rejects its own solution (%s) for gold %s:\n%s", v.reason, gold, p->cot);
    snprintf(gold, sizeof gold, "%" PRId64, p->answer + 1);
    CHECK_OK(kd_math_verify(mc, gold, strlen(gold), p->cot, strlen(p->cot), &v));
    CHECK(!v.accepted);
    CHECK_STR(v.reason, "wrong_answer");
    kd_verdict_release(&v);
}

/* ---- tests ------------------------------------------------------------------------ */

TEST(config)
{
    kd_problems_cfg c;
    kd_problems_cfg_init(&c);
    CHECK_OK(kd_problems_cfg_check(&c));
    kd_problems_cfg b = c;
    b.steps_min = 1;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "steps_min 1");
    b = c;
    b.steps_max = 7;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "steps_max 7");
    b = c;
    b.steps_min = 5;
    b.steps_max = 3;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "steps_max 3");
    b = c;
    b.n_train = 0;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "n_train 0");
    b = c;
    b.n_gen = 0;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "n_gen 0");
    b = c;
    b.n_heldout = 0;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "n_heldout 0");
    b = c;
    b.max_operand = 4;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "max_operand 4");
    b = c;
    b.max_factor = 13;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "max_factor 13");
    b = c;
    b.seed = UINT64_MAX;
    CHECK_ERR(kd_problems_cfg_check(&b), KD_E_CONFIG, "seed");

    /* the entry points refuse it too, before touching anything */
    b = c;
    b.n_heldout = 0;
    plist l = {0};
    CHECK_ERR(kd_problems_each(&b, KD_SPLIT_GEN, collect, &l), KD_E_CONFIG, "n_heldout");
    CHECK_EQ_INT(l.n, 0);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/problems_badcfg", KD_TEST_TMP);
    kd_rmtree(dir);
    CHECK_ERR(kd_problems_write(&b, dir), KD_E_CONFIG, "n_heldout");
    CHECK(!kd_is_dir(dir));
    CHECK_STR(kd_split_name(KD_SPLIT_HELDOUT), "heldout");
}

TEST(deterministic)
{
    kd_problems_cfg c = small_cfg(7);
    for (int s = 0; s < KD_SPLIT_COUNT; s++) {
        plist a = split_of(&c, s), b = split_of(&c, s);
        CHECK_EQ_INT(a.n, b.n);
        int same = a.n == b.n;
        for (size_t i = 0; same && i < a.n; i++)
            same = memcmp(&a.p[i], &b.p[i], sizeof a.p[i]) == 0;
        CHECK(same);
        free(a.p);
        free(b.p);
    }
    /* another seed, other problems */
    kd_problems_cfg d = small_cfg(8);
    plist a = split_of(&c, KD_SPLIT_GEN), b = split_of(&d, KD_SPLIT_GEN);
    size_t differ = 0;
    for (size_t i = 0; i < a.n && i < b.n; i++)
        differ += strcmp(a.p[i].text, b.p[i].text) != 0;
    CHECK(differ > a.n * 9 / 10);
    free(a.p);
    free(b.p);

    /* one problem from a seeded stream */
    kd_rng r1, r2;
    kd_rng_seed(&r1, 123);
    kd_rng_seed(&r2, 123);
    kd_problem p1, p2;
    kd_problem_make(&c, 4, &r1, &p1);
    kd_problem_make(&c, 4, &r2, &p2);
    CHECK_STR(p1.text, p2.text);
    CHECK_STR(p1.cot, p2.cot);
    CHECK(p1.signature == p2.signature);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

TEST(disjoint)
{
    kd_problems_cfg c = small_cfg(3);
    plist l[KD_SPLIT_COUNT];
    size_t total = 0;
    for (int s = 0; s < KD_SPLIT_COUNT; s++) {
        l[s] = split_of(&c, s);
        total += l[s].n;
        for (size_t i = 0; i < l[s].n; i++)
            if (kd_problem_split(&l[s].p[i]) != s) {
                FAIL_("a %s problem hashes to %s", kd_split_name(s), kd_split_name(kd_problem_split(&l[s].p[i])));
                break;
            }
    }
    CHECK_EQ_INT(l[KD_SPLIT_TRAIN].n, 300);
    CHECK_EQ_INT(l[KD_SPLIT_GEN].n, 200);
    CHECK_EQ_INT(l[KD_SPLIT_HELDOUT].n, 100);

    /* no text twice, within or across splits; no signature twice either */
    const char **texts = malloc(total * sizeof *texts);
    uint64_t *sigs = malloc(total * sizeof *sigs);
    size_t k = 0;
    for (int s = 0; s < KD_SPLIT_COUNT; s++)
        for (size_t i = 0; i < l[s].n; i++, k++) {
            texts[k] = l[s].p[i].text;
            sigs[k] = l[s].p[i].signature;
        }
    qsort(texts, total, sizeof *texts, cmp_str);
    size_t dups = 0;
    for (size_t i = 1; i < total; i++)
        dups += strcmp(texts[i - 1], texts[i]) == 0;
    CHECK_EQ_INT(dups, 0);
    for (size_t i = 0; i < total; i++)
        for (size_t j = i + 1; j < total; j++)
            dups += sigs[i] == sigs[j];
    CHECK_EQ_INT(dups, 0);
    free(texts);
    free(sigs);

    /* steps in turn: each of 2..6 equally often */
    int per[7] = {0};
    for (size_t i = 0; i < l[KD_SPLIT_TRAIN].n; i++)
        per[l[KD_SPLIT_TRAIN].p[i].steps]++;
    for (int s = 2; s <= 6; s++)
        CHECK_EQ_INT(per[s], 60);

    /* a split does not depend on the others' counts */
    kd_problems_cfg d = c;
    d.n_train = 50;
    d.n_gen = 999;
    plist h = split_of(&d, KD_SPLIT_HELDOUT);
    CHECK_EQ_INT(h.n, l[KD_SPLIT_HELDOUT].n);
    int same = h.n == l[KD_SPLIT_HELDOUT].n;
    for (size_t i = 0; same && i < h.n; i++)
        same = strcmp(h.p[i].text, l[KD_SPLIT_HELDOUT].p[i].text) == 0;
    CHECK(same);
    free(h.p);
    for (int s = 0; s < KD_SPLIT_COUNT; s++)
        free(l[s].p);
}

TEST(solutions)
{
    kd_math_cfg mc;
    kd_math_cfg_init(&mc);
    /* default ranges, tight ranges (many multiplies and divides hit the cap)
     * and wide ones */
    const int ranges[][2] = {{50, 9}, {5, 2}, {12, 3}, {1000, 12}, {100000, 12}};
    size_t checked = 0;
    for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++) {
        kd_problems_cfg c = small_cfg(100 + k);
        c.max_operand = ranges[k][0];
        c.max_factor = ranges[k][1];
        c.n_train = c.n_gen = c.n_heldout = ranges[k][0] == 5 ? 20 : 150;
        for (int s = 0; s < KD_SPLIT_COUNT; s++) {
            plist l = split_of(&c, s);
            int before = test_failures_;
            for (size_t i = 0; i < l.n && test_failures_ - before < 5; i++, checked++)
                check_problem(&l.p[i], &mc);
            free(l.p);
        }
    }
    CHECK(checked >= 1800);
    kd_math_thread_release();
}

/* restate: the same problems, and the same solution once the quoted event
 * lines are taken out; each quoted line is a sentence of the problem (its
 * connector dropped, the first letter capitalised), in the problem's order,
 * one per event and just before the event's arithmetic. */
TEST(restate)
{
    kd_problems_cfg c = small_cfg(77), r = c;
    r.restate = 1;
    for (int s = 0; s < KD_SPLIT_COUNT; s++) {
        plist a = split_of(&c, s), b = split_of(&r, s);
        CHECK(a.n == b.n);
        for (size_t i = 0; i < a.n && i < b.n; i++) {
            const kd_problem *x = &a.p[i], *y = &b.p[i];
            CHECK(!strcmp(x->text, y->text) && x->answer == y->answer && x->signature == y->signature);
            char plain[KD_PROBLEM_COT_MAX] = "";
            size_t at = 0;
            int quoted = 0;
            const char *from = y->text; /* quotes appear in the text's order */
            for (const char *line = y->cot; *line;) {
                const char *nl = strchr(line, '\n');
                size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
                int is_quote = !memchr(line, '=', n) && strncmp(line, "<think>", 7) && strncmp(line, "Start with", 10) &&
                               strncmp(line, "</think>", 8) && n > 1 && strncmp(line, "The answer", 10);
                if (is_quote) {
                    char q[256];
                    snprintf(q, sizeof q, "%.*s", (int)n - 1, line);
                    /* found in the text, after the previous quote, maybe lower-cased after a connector */
                    const char *hit = strstr(from, q);
                    if (!hit) {
                        q[0] = (char)(q[0] - 'A' + 'a');
                        hit = strstr(from, q);
                    }
                    CHECK(hit != NULL);
                    if (!hit)
                        break;
                    from = hit + strlen(q);
                    quoted++;
                    /* the next line is arithmetic */
                    CHECK(nl && memchr(nl + 1, '=', strcspn(nl + 1, "\n")));
                } else {
                    memcpy(plain + at, line, n);
                    at += n;
                    plain[at] = 0;
                }
                line += n;
            }
            CHECK(quoted >= 1 && quoted <= y->steps);
            CHECK(!strcmp(plain, x->cot));
        }
        free(a.p);
        free(b.p);
    }
}

TEST(planted_fault)
{
    long long a, b, r;
    CHECK_EQ_INT(check_line("4 bags of 7 is 4 * 7 = 28.", 26, &a, &b, &r), 1);
    CHECK(a == 4 && b == 7 && r == 28);
    CHECK_EQ_INT(check_line("4 bags of 7 is 4 * 7 = 29.", 26, &a, &b, &r), -1);
    CHECK_EQ_INT(check_line("51 - 15 = 36.", 13, &a, &b, &r), 1);
    CHECK_EQ_INT(check_line("51 - 15 = 37.", 13, &a, &b, &r), -1);
    CHECK_EQ_INT(check_line("50 / 4 = 12.", 12, &a, &b, &r), -1); /* not exact */
    CHECK_EQ_INT(check_line("Start with 23 apples.", 21, &a, &b, &r), 0);

    /* each kind of damage to a real solution is caught */
    kd_problems_cfg c = small_cfg(5);
    c.steps_min = c.steps_max = 4;
    plist l = split_of(&c, KD_SPLIT_TRAIN);
    const kd_problem *good = &l.p[0];
    CHECK(cot_error(good) == NULL);
    kd_problem p = *good; /* a wrong result */
    char *eq = strstr(p.cot, " = ");
    eq[3] = eq[3] == '9' ? '1' : (char)(eq[3] + 1);
    CHECK(cot_error(&p) != NULL);
    p = *good; /* a broken chain: each line right, but not from the amount before */
    p.steps = 2;
    p.answer = 10;
    snprintf(p.cot, sizeof p.cot, "<think>\nStart with 10 apples.\n11 + 2 = 13.\n13 - 3 = 10.\n</think>\n\n"
                                  "The answer is \\boxed{10}.");
    CHECK_HAS(cot_error(&p), "does not follow from 10");
    snprintf(p.cot, sizeof p.cot, "<think>\nStart with 10 apples.\n2 bags of 3 is 2 * 3 = 6.\n10 + 5 = 15.\n"
                                  "</think>\n\nThe answer is \\boxed{15}.");
    p.answer = 15;
    CHECK_HAS(cot_error(&p), "(group 6)");
    snprintf(p.cot, sizeof p.cot, "<think>\nStart with 10 apples.\n2 bags of 3 is 2 * 3 = 6.\n10 + 6 = 16.\n"
                                  "</think>\n\nThe answer is \\boxed{16}.");
    p.answer = 16;
    CHECK(cot_error(&p) == NULL); /* and the repaired one passes */
    p = *good; /* a step missing */
    p.steps = 5;
    CHECK(cot_error(&p) != NULL);
    p = *good; /* another answer */
    p.answer++;
    CHECK(cot_error(&p) != NULL);
    free(l.p);
}

TEST(too_few)
{
    kd_problems_cfg c;
    kd_problems_cfg_init(&c);
    c.steps_min = c.steps_max = 2;
    c.max_operand = 5;
    c.max_factor = 2;
    c.n_heldout = 100000;
    plist l = {0};
    CHECK_ERR(kd_problems_each(&c, KD_SPLIT_HELDOUT, collect, &l), KD_E_RANGE, "distinct heldout problems");
    CHECK(l.n > 0 && l.n < 100000);
    free(l.p);
}

static size_t count_lines(const char *path, json_t **first)
{
    char *buf;
    size_t len, n = 0;
    if (kd_read_file(path, 1 << 26, &buf, &len) != KD_OK)
        return 0;
    for (size_t i = 0; i < len; i++)
        n += buf[i] == '\n';
    if (first)
        *first = json_loadb(buf, (size_t)(strchr(buf, '\n') - buf), 0, NULL);
    free(buf);
    return n;
}

static long long mtime_ns(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec : -1;
}

TEST(write_and_import)
{
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/problems_out", KD_TEST_TMP);
    kd_rmtree(dir);
    kd_problems_cfg c = small_cfg(11);
    c.n_train = 40;
    c.n_gen = 30;
    c.n_heldout = 20;
    CHECK_OK(kd_problems_write(&c, dir));

    json_t *first = NULL;
    snprintf(path, sizeof path, "%s/train_chats.jsonl", dir);
    CHECK_EQ_INT(count_lines(path, &first), 40);
    long long t0 = mtime_ns(path);
    plist tr = split_of(&c, KD_SPLIT_TRAIN);
    json_t *msgs = json_object_get(first, "messages");
    CHECK(json_array_size(msgs) == 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "user");
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), tr.p[0].text);
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 1), "role")), "assistant");
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 1), "content")), tr.p[0].cot);
    char ans[32];
    snprintf(ans, sizeof ans, "%" PRId64, tr.p[0].answer);
    CHECK_STR(json_string_value(json_object_get(first, "answer")), ans);
    CHECK_STR(json_string_value(json_object_get(first, "source")), "arith-2step");
    json_decref(first);

    snprintf(path, sizeof path, "%s/gen_prompts.jsonl", dir);
    CHECK_EQ_INT(count_lines(path, &first), 30);
    CHECK(json_is_string(json_object_get(first, "problem")) && json_is_string(json_object_get(first, "answer")));
    CHECK_STR(json_string_value(json_object_get(first, "source")), "arith-2step");
    json_decref(first);
    snprintf(path, sizeof path, "%s/heldout_prompts.jsonl", dir);
    CHECK_EQ_INT(count_lines(path, NULL), 20);

    /* unchanged content: the file is left alone */
    snprintf(path, sizeof path, "%s/train_chats.jsonl", dir);
    CHECK_OK(kd_problems_write(&c, dir));
    CHECK_EQ_INT(mtime_ns(path), t0);

    /* import, twice: the second does nothing */
    CHECK_OK(kd_problems_import(&c, dir, 0));
    CHECK_OK(kd_problems_import(&c, dir, 0));
    const char *names[] = {"train", "gen", "heldout"};
    const uint64_t want[] = {40, 30, 20};
    for (int s = 0; s < 3; s++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[s]);
        kd_store *st = NULL;
        CHECK_OK(kd_store_open(path, 0, &st));
        if (!st)
            continue;
        kd_store_read *r;
        CHECK_OK(kd_store_read_begin(st, &r));
        uint64_t n = 0;
        CHECK_OK(kd_store_count(r, KD_DB_PROMPTS, &n));
        CHECK_EQ_INT(n, want[s]);
        kd_store_cursor *cur;
        CHECK_OK(kd_store_cursor_open(r, KD_DB_PROMPTS, &cur));
        kd_record rec;
        CHECK_EQ_INT(kd_store_cursor_next(cur, &rec), 1);
        CHECK_EQ_INT(rec.chat, s == 0);
        CHECK(rec.has_answer);
        if (s == 0) {
            CHECK(rec.text.len == strlen(tr.p[0].text) && memcmp(rec.text.ptr, tr.p[0].text, rec.text.len) == 0);
            CHECK(rec.answer.len == strlen(ans) && memcmp(rec.answer.ptr, ans, rec.answer.len) == 0);
        }
        kd_store_cursor_close(cur);
        kd_store_read_end(r);
        kd_store_close(st);
    }
    free(tr.p);

    /* another configuration into the same DIR is refused by the import */
    c.n_train = 41;
    CHECK_ERR(kd_problems_import(&c, dir, 0), KD_E_CONFIG, "changed");
}

/* Print one problem of each difficulty (for the eye; run the test binary). */
TEST(examples)
{
    kd_problems_cfg c;
    kd_problems_cfg_init(&c);
    for (int steps = 2; steps <= 6; steps++) {
        kd_rng r;
        kd_rng_seed(&r, (uint64_t)steps);
        kd_problem p;
        kd_problem_make(&c, steps, &r, &p);
        if (getenv("KD_PROBLEMS_SHOW"))
            printf("--- %s (answer %" PRId64 ")\n%s\n%s\n", p.source, p.answer, p.text, p.cot);
        CHECK_EQ_INT(p.steps, steps);
    }
}

int main(void)
{
    RUN(config);
    RUN(deterministic);
    RUN(disjoint);
    RUN(solutions);
    RUN(restate);
    RUN(planted_fault);
    RUN(too_few);
    RUN(write_and_import);
    RUN(examples);
    return test_summary();
}
