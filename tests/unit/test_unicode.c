/* test_unicode.c - the Unicode 16.0 tables and kd_regex_unicode_rewrite.
 *
 * The behaviour checks compile each rewritten pattern with the linked PCRE2
 * and compare what it matches with the tables (the slow obvious answer), so
 * they hold for any PCRE2. The checks on the rewritten text assume a PCRE2
 * older than Unicode 16 (Debian's 10.42 has 14.0) and are skipped otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#define PCRE2_CODE_UNIT_WIDTH 8
#include "test.h"

#include <pcre2.h>
#include <stdint.h>
#include <time.h>

#include "core/unicode.h"

/* --- helpers ------------------------------------------------------------- */

static int cat_index(const char *name)
{
    for (int c = 0; c < kd_uni_ncats; c++)
        if (!strcmp(kd_uni_cats[c].name, name))
            return c;
    return -1;
}

/* Unicode 16: is cp in category `name`? (binary search) */
static int in_cat(const char *name, uint32_t cp)
{
    const kd_uni_cat *c = &kd_uni_cats[cat_index(name)];
    int lo = 0, hi = c->nranges - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < c->ranges[mid].lo)
            hi = mid - 1;
        else if (cp > c->ranges[mid].hi)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static size_t utf8(uint32_t c, char *p)
{
    if (c < 0x80)
        return p[0] = (char)c, 1;
    if (c < 0x800)
        return p[0] = (char)(0xC0 | c >> 6), p[1] = (char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000)
        return p[0] = (char)(0xE0 | c >> 12), p[1] = (char)(0x80 | (c >> 6 & 0x3F)),
               p[2] = (char)(0x80 | (c & 0x3F)), 3;
    return p[0] = (char)(0xF0 | c >> 18), p[1] = (char)(0x80 | (c >> 12 & 0x3F)),
           p[2] = (char)(0x80 | (c >> 6 & 0x3F)), p[3] = (char)(0x80 | (c & 0x3F)), 4;
}

/* Rewrite `pat` and compile it as tokenizer.c does (UTF | UCP, JIT). */
static pcre2_code *compile_rewritten(const char *pat)
{
    char *rw = NULL;
    size_t n = 0;
    int st = kd_regex_unicode_rewrite(pat, strlen(pat), &rw, &n);
    if (st != KD_OK) {
        FAIL_("rewrite '%s': %s", pat, kd_strerror(st));
        return NULL;
    }
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)rw, n, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(err, msg, sizeof msg);
        FAIL_("'%s' rewritten to '%.300s' does not compile: %s at %zu", pat, rw, (const char *)msg, (size_t)off);
    } else {
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    }
    free(rw);
    return re;
}

/* Does `re` match all of `s` (anchored at both ends)? */
static int whole_match(const pcre2_code *re, const char *s, size_t n)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, NULL);
    pcre2_match_data_free(md);
    return rc > 0;
}

static int matches_cp(const char *pat, uint32_t cp)
{
    pcre2_code *re = compile_rewritten(pat);
    if (!re)
        return -1;
    char s[4];
    int r = whole_match(re, s, utf8(cp, s));
    pcre2_code_free(re);
    return r;
}

static int rewrite_eq(const char *pat, const char *want)
{
    char *rw = NULL;
    size_t n = 0;
    int st = kd_regex_unicode_rewrite(pat, strlen(pat), &rw, &n);
    int ok = st == KD_OK && n == strlen(want) && !memcmp(rw, want, n) && rw[n] == 0;
    if (!ok)
        FAIL_("rewrite '%s': got '%s' (%s), want '%s'", pat, rw ? rw : "(null)", kd_strerror(st), want);
    free(rw);
    return ok;
}

static int rewrite_has(const char *pat, const char *needle)
{
    char *rw = NULL;
    size_t n = 0;
    int st = kd_regex_unicode_rewrite(pat, strlen(pat), &rw, &n);
    int ok = st == KD_OK && strstr(rw, needle);
    if (!ok)
        FAIL_("rewrite '%s': got '%.400s' (%s), lacks '%s'", pat, rw ? rw : "(null)", kd_strerror(st), needle);
    free(rw);
    return ok;
}

static int rewrite_fails(const char *pat)
{
    char *rw = (char *)1;
    size_t n = 0;
    int st = kd_regex_unicode_rewrite(pat, strlen(pat), &rw, &n);
    CHECK(rw == NULL);
    return st;
}

/* Does the linked PCRE2 lack some of Unicode 16's letters? */
static int pcre2_is_older(void)
{
    const kd_uni_range *m, *e;
    int nm = 0, ne = 0;
    return kd_regex_unicode_delta("L", &m, &nm, &e, &ne) == KD_OK && nm > 0;
}

/* --- the tables ---------------------------------------------------------- */

TEST(tables_sorted_and_partitioned)
{
    CHECK_STR(kd_uni_version, "16.0.0");
    CHECK_EQ_INT(kd_uni_ncats, 38);
    for (int c = 0; c < kd_uni_ncats; c++) {
        const kd_uni_cat *k = &kd_uni_cats[c];
        CHECK(k->nranges > 0);
        for (int i = 0; i < k->nranges; i++) {
            if (k->ranges[i].lo > k->ranges[i].hi || k->ranges[i].hi > 0x10FFFF)
                FAIL_("%s: bad range %X-%X", k->name, k->ranges[i].lo, k->ranges[i].hi);
            if (i && k->ranges[i].lo <= k->ranges[i - 1].hi + 1)
                FAIL_("%s: ranges %d and %d overlap or touch", k->name, i - 1, i);
        }
    }
    /* the two-letter values partition the code space; majors and LC are unions */
    unsigned char *of = calloc(0x110000, 1); /* 1 + index of the value holding cp */
    CHECK(of != NULL);
    if (!of)
        return;
    int bad = 0;
    for (int c = 0; c < kd_uni_ncats; c++) {
        const kd_uni_cat *k = &kd_uni_cats[c];
        if (!k->name[1] || !strcmp(k->name, "LC"))
            continue;
        for (int i = 0; i < k->nranges; i++)
            for (uint32_t cp = k->ranges[i].lo; cp <= k->ranges[i].hi; cp++)
                bad += of[cp] != 0, of[cp] = (unsigned char)(c + 1);
    }
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++)
        bad += of[cp] == 0;
    CHECK_EQ_INT(bad, 0);
    for (int c = 0; c < kd_uni_ncats; c++) {
        const kd_uni_cat *k = &kd_uni_cats[c];
        if (k->name[1] && strcmp(k->name, "LC"))
            continue;
        long want = 0, have = 0;
        for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
            const char *v = kd_uni_cats[of[cp] - 1].name;
            int holds = !strcmp(k->name, "LC") ? (!strcmp(v, "Lu") || !strcmp(v, "Ll") || !strcmp(v, "Lt"))
                                               : v[0] == k->name[0];
            want += holds;
        }
        for (int i = 0; i < k->nranges; i++)
            for (uint32_t cp = k->ranges[i].lo; cp <= k->ranges[i].hi; cp++) {
                const char *v = kd_uni_cats[of[cp] - 1].name;
                have++;
                if (strcmp(k->name, "LC") ? v[0] != k->name[0] : !(v[0] == 'L' && strchr("ult", v[1])))
                    FAIL_("%s holds U+%04X, which is %s", k->name, cp, v);
            }
        if (want != have)
            FAIL_("%s: %ld code points, its values hold %ld", k->name, have, want);
    }
    free(of);
    /* spot checks against UnicodeData.txt 16.0 */
    CHECK(in_cat("So", 0x1FAE8)); /* SHAKING FACE, Unicode 15.0 */
    CHECK(in_cat("Lo", 0x11F04)); /* KAWI LETTER A, 15.0 */
    CHECK(in_cat("Nd", 0x11F50)); /* KAWI DIGIT ZERO, 15.0 */
    CHECK(in_cat("Lo", 0x2EBF0)); /* CJK Extension I, 15.1 */
    CHECK(in_cat("Mc", 0x1171E)); /* AHOM CONSONANT SIGN MEDIAL RA: Mn until 15.1, Mc in 16.0 */
    CHECK(in_cat("Lu", 0x41) && in_cat("L", 0x41) && in_cat("LC", 0x41));
    CHECK(in_cat("Cn", 0x378) && in_cat("C", 0x378));
}

/* --- the rewrite's text --------------------------------------------------- */

TEST(unchanged_without_properties)
{
    rewrite_eq("", "");
    rewrite_eq("abc", "abc");
    rewrite_eq("(?i:'s|'t)|[^\\r\\n]+|\\s+(?!\\S)|[A-Za-z]{1,3}", "(?i:'s|'t)|[^\\r\\n]+|\\s+(?!\\S)|[A-Za-z]{1,3}");
    rewrite_eq("\\\\p{L}", "\\\\p{L}");          /* a backslash, then the letters p{L} */
    rewrite_eq("[\\\\p{L}]", "[\\\\p{L}]");      /* the same inside a class */
    rewrite_eq("\\Q\\p{L}\\E", "\\Q\\p{L}\\E");  /* quoted */
    rewrite_eq("(?#\\p{L})a", "(?#\\p{L})a");    /* a comment */
    rewrite_eq("[[:alpha:]\\]]+", "[[:alpha:]\\]]+");
}

TEST(rewritten_text)
{
    if (!pcre2_is_older()) {
        printf("  (skipped: the linked PCRE2 already has Unicode 16's letters)\n");
        return;
    }
    /* a property PCRE2 agrees on keeps its text, under its short name */
    rewrite_eq("\\p{Zs}", "\\p{Zs}");
    rewrite_eq("\\p{Space_Separator}+", "\\p{Zs}+");
    /* once: one class for what PCRE2 knows, a lookbehind for what it calls unassigned */
    rewrite_has("\\p{L&}", "[\\p{L&}\\p{Cn}](?(?<=\\p{Cn})(?<=[\\p{L&}\\x{1C89}-\\x{1C8A}");
    rewrite_has("\\p{Cased_Letter}", "[\\p{L&}\\p{Cn}](?(?<=\\p{Cn})(?<=[\\p{L&}\\x{1C89}");
    rewrite_has("[]a\\p{L}]", "[]a\\p{L}\\p{Cn}](?(?<=\\p{Cn})(?<=[]a\\p{L}\\x{1C89}");
    rewrite_has("\\pN", "[\\p{N}\\p{Cn}](?(?<=\\p{Cn})(?<=[\\p{N}\\x{10D40}-\\x{10D49}");
    rewrite_has("\\p{Number}", "[\\p{N}\\p{Cn}](?(?<=\\p{Cn})(?<=[\\p{N}\\x{10D40}");
    rewrite_has("\\p{ number }", "[\\p{N}\\p{Cn}](?(?<=\\p{Cn})(?<=[\\p{N}\\x{10D40}");
    /* a few times: X(?:X){n-1,m-1} */
    rewrite_has("\\p{N}{1,3}", "\\x{11F50}-\\x{11F59}"); /* Kawi digits */
    rewrite_has("\\p{N}{1,3}", "\\x{1E5FA}]))(?:[\\p{N}\\p{Cn}](?(?<=\\p{Cn})(?<=[\\p{N}\\x{10D40}");
    rewrite_has("\\p{N}{1,3}", "]))){0,2}");
    rewrite_has("\\p{N}?", "(?:[\\p{N}\\p{Cn}](?(?<=\\p{Cn})");
    /* a negated class once or optional: (?:C(?<![A])) */
    rewrite_has("[^\\r\\n\\p{L}\\p{P}\\p{S}]?x", "(?:[^\\r\\n\\p{L}\\p{P}\\p{S}](?<![\\x{1B4E}-\\x{1B4F}");
    /* + at the end of an alternative: possessive runs */
    rewrite_has("[\\p{L}\\p{M}]+|x", "(?:(?>[\\p{L}\\p{M}]|[\\x{897}");
    rewrite_has("[\\p{L}\\p{M}]+|x", "]++[\\p{L}\\p{M}]*+)*+)|x");
    rewrite_has(" ?[\\p{P}\\p{S}]+[\\r\\n]*|x", "[\\p{P}\\p{S}]*+)*+)[\\r\\n]*|x");
    rewrite_has("\\p{L}*", "(?:\\p{L}*+(?:[");
    /* + that something after it may backtrack into: the ranges go inside the class */
    rewrite_has("\\p{L}+(?=a)", "[\\p{L}\\x{1C89}-\\x{1C8A}");
    rewrite_has("(\\p{L}+)", "([\\p{L}\\x{1C89}");
    rewrite_has("[a\\p{L}-]+b", "[a\\p{L}\\x{1C89}-\\x{1C8A}");
    rewrite_has("[a\\p{L}-]+b", "}-]+b");
    /* in a (?i) scope the added code points are matched case-sensitively */
    rewrite_has("(?i:\\p{Lu})", "(?i:(?:\\p{Lu}|(?-i:[");
    rewrite_has("(?i)x(?-i)\\p{Lu}", "(?-i)[\\p{Lu}\\p{Cn}](?(?<=\\p{Cn})");
    /* \P{X} with code points PCRE2 misses: a group of its own */
    rewrite_has("\\P{L}", "(?:(?:[^\\p{L}\\x{1C89}");
    rewrite_has("\\p{^L}", "(?:(?:[^\\p{L}\\x{1C89}");
}

TEST(refusals)
{
    CHECK_ERR(rewrite_fails("a\\p{Han}"), KD_E_UNSUPPORTED, "'\\p{Han}' at offset 1");
    CHECK_ERR(rewrite_fails("\\p{Foo}"), KD_E_UNSUPPORTED, "General_Category");
    CHECK_ERR(rewrite_fails("[\\P{Any}]"), KD_E_UNSUPPORTED, "Any");
    CHECK_ERR(rewrite_fails("\\p{L"), KD_E_FORMAT, "no closing '}'");
    CHECK_ERR(rewrite_fails("\\p"), KD_E_FORMAT, "end of the pattern");
    CHECK_ERR(rewrite_fails("(unclosed["), KD_E_FORMAT, "no closing ']'");
    CHECK_ERR(rewrite_fails("[a[b]]"), KD_E_UNSUPPORTED, "nested");
    CHECK_ERR(rewrite_fails("(?x)\\p{L} # c"), KD_E_UNSUPPORTED, "extended mode");
    CHECK_ERR(rewrite_fails("[a-\\p{L}]"), KD_E_FORMAT, "end point of a range");
    CHECK_ERR(rewrite_fails("[\\p{L}-z]"), KD_E_FORMAT, "end point of a range");
    const kd_uni_range *m, *e;
    int nm, ne;
    CHECK_ERR(kd_regex_unicode_delta("Han", &m, &nm, &e, &ne), KD_E_NOTFOUND, "'Han'");
}

/* --- what rewritten patterns match ----------------------------------------- */

TEST(new_code_points)
{
    CHECK_EQ_INT(matches_cp("\\p{S}", 0x1FAE8), 1);            /* 🫨 */
    CHECK_EQ_INT(matches_cp("\\p{So}", 0x1FAE8), 1);
    CHECK_EQ_INT(matches_cp(" ?[\\p{P}\\p{S}]+[\\r\\n]*", 0x1FAE8), 1);
    CHECK_EQ_INT(matches_cp("[^\\p{S}]", 0x1FAE8), 0);
    CHECK_EQ_INT(matches_cp("\\p{L}", 0x1FAE8), 0);
    CHECK_EQ_INT(matches_cp("\\p{L}", 0x11F04), 1);            /* Kawi letter */
    CHECK_EQ_INT(matches_cp("\\p{Letter}", 0x11F04), 1);
    CHECK_EQ_INT(matches_cp("[\\p{L}\\p{M}]+", 0x11F04), 1);
    CHECK_EQ_INT(matches_cp("[^\\r\\n\\p{L}\\p{P}\\p{S}]", 0x11F04), 0);
    CHECK_EQ_INT(matches_cp("[\\P{L}]", 0x11F04), 0);
    CHECK_EQ_INT(matches_cp("[^\\P{L}]", 0x11F04), 1);
    CHECK_EQ_INT(matches_cp("\\p{N}{1,3}", 0x11F50), 1);       /* Kawi digit */
    CHECK_EQ_INT(matches_cp("\\p{L}+", 0x2EBF0), 1);           /* CJK Extension I */
    CHECK_EQ_INT(matches_cp("\\p{L}", 0x41), 1);
    CHECK_EQ_INT(matches_cp("\\p{Lu}", 0x41), 1);
    CHECK_EQ_INT(matches_cp("\\P{L}", 0x41), 0);
    CHECK_EQ_INT(matches_cp("(?i)\\p{Lu}", 0x61), 0);          /* PCRE2 ignores (?i) for properties */
    /* U+0378 is unassigned */
    const char *none[] = {"\\p{L}", "\\p{M}", "\\p{N}", "\\p{P}", "\\p{S}", "\\p{Z}", "[\\p{L}\\p{N}]+"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        CHECK_EQ_INT(matches_cp(none[i], 0x378), 0);
    CHECK_EQ_INT(matches_cp("\\p{Cn}", 0x378), 1);
    CHECK_EQ_INT(matches_cp("[^\\p{L}\\p{N}]", 0x378), 1);
    /* a category change: U+1171E is Mn in Unicode 14, Mc in 16 */
    CHECK_EQ_INT(matches_cp("\\p{Mn}", 0x1171E), 0);
    CHECK_EQ_INT(matches_cp("\\P{Mn}", 0x1171E), 1);
    CHECK_EQ_INT(matches_cp("[^a\\p{Mn}]", 0x1171E), 1);
    CHECK_EQ_INT(matches_cp("[a\\p{Mn}]+", 0x1171E), 0);
    CHECK_EQ_INT(matches_cp("[a\\p{Mn}]+", 0x61), 1);
    CHECK_EQ_INT(matches_cp("\\p{Mc}", 0x1171E), 1);
    CHECK_EQ_INT(matches_cp("\\p{M}", 0x1171E), 1);
    /* a newly assigned character is no longer Cn */
    CHECK_EQ_INT(matches_cp("\\p{Cn}", 0x1FAE8), 0);
    CHECK_EQ_INT(matches_cp("\\p{C}", 0x1FAE8), 0);
}

/* Runs that mix characters PCRE2 knows with new ones, in each shape. */
TEST(runs_mix_old_and_new)
{
    /* "a", U+11F04, "b", U+11F04 U+11F05, "c": all letters */
    const char *w = "a\xF0\x91\xBC\x84" "b\xF0\x91\xBC\x84\xF0\x91\xBC\x85" "c";
    const char *mixed = "a\xF0\x91\xBC\x84 b"; /* a space inside */
    static const char *const letters[] = {"\\p{L}+", "\\p{L}*", "[\\p{L}\\p{M}]+", "\\p{L}+(?:)", "[\\p{L}]*(?:)",
                                          "\\p{L}++", "\\p{L}{1,16}", "(?i)\\p{L}+(?:)"};
    for (size_t i = 0; i < sizeof letters / sizeof letters[0]; i++) {
        pcre2_code *re = compile_rewritten(letters[i]);
        if (!re)
            continue;
        if (!whole_match(re, w, strlen(w)))
            FAIL_("'%s' does not match a run of old and new letters", letters[i]);
        if (whole_match(re, mixed, strlen(mixed)))
            FAIL_("'%s' matches across a space", letters[i]);
        if (whole_match(re, "", 0) != (strchr(letters[i], '*') != NULL))
            FAIL_("'%s' on the empty string", letters[i]);
        pcre2_code_free(re);
    }
    /* the negated run: no letter, old or new */
    pcre2_code *re = compile_rewritten("[^\\p{L}]+");
    if (re) {
        CHECK(whole_match(re, " !?", 3));
        CHECK(!whole_match(re, " \xF0\x91\xBC\x84!", 6));
        CHECK(!whole_match(re, "", 0));
        pcre2_code_free(re);
    }
}

/* Every shape the rewrite writes, on every code point where the linked PCRE2
 * and Unicode 16 disagree on any category, plus each table range's ends and a
 * stride through the rest: the rewritten pattern must match one character
 * exactly when the tables say so. */
TEST(every_shape_agrees_with_the_tables)
{
    static const char *const cats[] = {"L", "M", "N", "P", "S", "Z", "C", "LC", "Lu", "Ll", "Lo", "Mn", "Mc",
                                       "Nd", "No", "Po", "So", "Cf", "Cn"};
    /* code points to try */
    size_t cap = 1 << 18, ncp = 0; /* about 50K are used */
    uint32_t *cps = malloc(cap * sizeof *cps);
    CHECK(cps != NULL);
    if (!cps)
        return;
#define ADD_CP(x)                                                                    \
    do {                                                                             \
        uint32_t x_ = (x);                                                           \
        if (x_ <= 0x10FFFF && !(x_ >= 0xD800 && x_ <= 0xDFFF) && ncp < cap)          \
            cps[ncp++] = x_;                                                         \
    } while (0)
    for (int c = 0; c < kd_uni_ncats; c++) {
        const kd_uni_range *m, *e;
        int nm, ne;
        CHECK_OK(kd_regex_unicode_delta(kd_uni_cats[c].name, &m, &nm, &e, &ne));
        for (int i = 0; i < nm; i++)
            for (uint32_t cp = m[i].lo; cp <= m[i].hi && cp - m[i].lo < 64; cp++)
                ADD_CP(cp);
        for (int i = 0; i < nm; i++) {
            ADD_CP(m[i].hi);
            ADD_CP(m[i].hi + 1);
            ADD_CP(m[i].lo - 1);
        }
        for (int i = 0; i < ne; i++)
            for (uint32_t cp = e[i].lo; cp <= e[i].hi && cp - e[i].lo < 64; cp++)
                ADD_CP(cp);
        for (int i = 0; i < kd_uni_cats[c].nranges; i++) {
            ADD_CP(kd_uni_cats[c].ranges[i].lo);
            ADD_CP(kd_uni_cats[c].ranges[i].hi);
            ADD_CP(kd_uni_cats[c].ranges[i].hi + 1);
        }
    }
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp += 97)
        ADD_CP(cp);
    CHECK(ncp < cap);

    long checked = 0;
    for (size_t k = 0; k < sizeof cats / sizeof cats[0]; k++) {
        const char *x = cats[k];
        enum { NP = 13 };
        char pats[NP][64];
        int want_neg[NP];
        /* every shape of the rewrite: \p{X} alone, in a class, a few times,
         * optional, as a run, as a run the tail may backtrack into (the
         * ranges inside the class); negated classes once and as runs; \P{X};
         * in a (?i) scope */
        static const char *const fmt[NP] = {"\\p{%s}",       "[\\p{%s}]",         "\\p{%s}{1,3}",
                                            "\\p{%s}?",      "\\p{%s}+",          "\\p{%s}*",
                                            "[\\p{%s}]+(?:)", "[^\\p{%s}]",        "[^\\p{%s}]+",
                                            "[^\\p{%s}]+(?:)", "\\P{%s}*",         "(?i)[\\p{%s}]",
                                            "(?i)\\p{%s}+(?:)"};
        for (int p = 0; p < NP; p++) {
            snprintf(pats[p], 64, fmt[p], x);
            want_neg[p] = pats[p][1] == '^' || pats[p][1] == 'P';
        }
        for (int p = 0; p < NP; p++) {
            pcre2_code *re = compile_rewritten(pats[p]);
            if (!re)
                continue;
            pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
            int wrong = 0;
            for (size_t i = 0; i < ncp; i++) {
                char s[4];
                size_t n = utf8(cps[i], s);
                int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, NULL);
                int want = in_cat(x, cps[i]) ^ want_neg[p];
                checked++;
                if ((rc > 0) != want && wrong++ < 3)
                    FAIL_("'%s' %s U+%04X, Unicode 16 says %s", pats[p], rc > 0 ? "matches" : "misses", cps[i],
                          want ? "it should match" : "it should not");
            }
            pcre2_match_data_free(md);
            pcre2_code_free(re);
        }
    }
    printf("  %ld (pattern, code point) pairs checked over %zu code points\n", checked, ncp);
    free(cps);
}

/* The three tokenizers' patterns (tokenizer.c translates \s before the
 * rewrite; PCRE2's \s is the same set on these inputs) on text with new
 * characters: the pieces are the ones Oniguruma with Unicode 16 gives. */
TEST(tokenizer_patterns)
{
    const char *ds = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
                     "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
    pcre2_code *re = compile_rewritten(ds);
    if (!re)
        return;
    /* "a 🫨🩷 b" : the emoji are symbols, one piece with the space before them */
    const char *text = "a \xF0\x9F\xAB\xA8\xF0\x9F\xA9\xB7 b";
    const char *want[] = {"a", " \xF0\x9F\xAB\xA8\xF0\x9F\xA9\xB7", " b"};
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    size_t off = 0, n = strlen(text);
    for (int i = 0; i < 3; i++) {
        int rc = pcre2_match(re, (PCRE2_SPTR)text, n, off, 0, md, NULL);
        CHECK(rc > 0);
        if (rc <= 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] - ov[0] != strlen(want[i]) || memcmp(text + ov[0], want[i], ov[1] - ov[0]))
            FAIL_("piece %d: got '%.*s', want '%s'", i, (int)(ov[1] - ov[0]), text + ov[0], want[i]);
        off = ov[1];
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    /* GPT-2's ByteLevel regex: a Kawi word is one letter piece */
    re = compile_rewritten("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
    if (re) {
        const char *kawi = " \xF0\x91\xBC\x84\xF0\x91\xBC\x85"; /* " U+11F04 U+11F05" */
        CHECK(whole_match(re, kawi, strlen(kawi)));
        pcre2_code_free(re);
    }
}

TEST(measuring_cost_and_deltas)
{
    /* the first call measured PCRE2 already (an earlier test); time a fresh
     * look-up and report the deltas of the categories the tokenizers use */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const kd_uni_range *m, *e;
    int nm, ne;
    CHECK_OK(kd_regex_unicode_delta("L", &m, &nm, &e, &ne));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = (double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3;
    CHECK(us < 1000);
    char ver[64] = "?";
    pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, ver);
    printf("  PCRE2 Unicode %s vs %s; later look-ups %.1f us\n", ver, kd_uni_version, us);
    const char *show[] = {"L", "M", "N", "P", "S", "Z", "Mn", "Mc", "C", "Cn"};
    for (size_t i = 0; i < sizeof show / sizeof show[0]; i++) {
        CHECK_OK(kd_regex_unicode_delta(show[i], &m, &nm, &e, &ne));
        long cm = 0, ce = 0;
        for (int k = 0; k < nm; k++)
            cm += m[k].hi - m[k].lo + 1;
        for (int k = 0; k < ne; k++)
            ce += e[k].hi - e[k].lo + 1;
        printf("  %-2s PCRE2 misses %5ld code points (%2d ranges), has %5ld extra (%2d ranges)\n", show[i], cm, nm,
               ce, ne);
    }
}

int main(void)
{
    /* time the first call, which measures the linked PCRE2 */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const kd_uni_range *m, *e;
    int nm, ne;
    int st = kd_regex_unicode_delta("L", &m, &nm, &e, &ne);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("measuring PCRE2: %s in %.2f ms\n", kd_status_name(st),
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    RUN(tables_sorted_and_partitioned);
    RUN(unchanged_without_properties);
    RUN(rewritten_text);
    RUN(refusals);
    RUN(new_code_points);
    RUN(runs_mix_old_and_new);
    RUN(every_shape_agrees_with_the_tables);
    RUN(tokenizer_patterns);
    RUN(measuring_cost_and_deltas);
    return test_summary();
}
