/* text.c - the text verifiers (see text.h): format, language, readability,
 * degeneration.
 *
 * Layout: helpers (byte search, white space, scripts), configuration, the
 * parts (think/answer), then one section per check, then kd_check_text.
 *
 * Every scan is a single left-to-right pass, or a pass plus searches whose
 * start only moves forward (finder_), so each byte is looked at a bounded
 * number of times whatever the input: no nested search can go quadratic on
 * ten megabytes of '$' or '<think>'.
 */
#include "rejection/text.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/status.h"
#include "data/curate.h"

#define OPEN_ "<think>"
#define CLOSE_ "</think>"
#define OPEN_LEN 7
#define CLOSE_LEN 8
#define NGRAM_MAX 64 /* the longest n-gram of the loop check (ngram_n) */

/* ---- helpers -------------------------------------------------------------- */

/* The next occurrence of a fixed pattern at or after `pos`, for a caller
 * whose query positions never decrease: the last answer is remembered, so the
 * bytes between two searches are scanned once in total (amortised O(n) for
 * any number of queries). Returns n when there is none. */
typedef struct finder_ {
    const char *pat;
    size_t plen;
    size_t from; /* the position of the last search */
    size_t at;   /* its answer: the first occurrence >= from, or n */
    int valid;
} finder_;

/* The first occurrence of pat (plen >= 1) in s[pos, n), or n. Not memmem:
 * the sanitizers' memmem interceptor checks the whole haystack on every call,
 * which makes many short searches quadratic under ASan; memchr's checks only
 * up to what it found. O(found - pos) times plen at worst. */
static size_t search_(const char *s, size_t n, size_t pos, const char *pat, size_t plen)
{
    while (pos < n && plen <= n - pos) {
        const char *p = memchr(s + pos, pat[0], n - pos - plen + 1);
        if (!p)
            return n;
        if (!memcmp(p + 1, pat + 1, plen - 1))
            return (size_t)(p - s);
        pos = (size_t)(p - s) + 1;
    }
    return n;
}

static size_t find_(finder_ *f, const char *s, size_t n, size_t pos)
{
    if (f->valid && pos >= f->from && f->at >= pos)
        return f->at;
    f->valid = 1;
    f->from = pos;
    f->at = search_(s, n, pos, f->pat, f->plen);
    return f->at;
}

/* First occurrence of pat in s[0, n), or n. */
static size_t first_(const char *s, size_t n, const char *pat, size_t plen) { return search_(s, n, 0, pat, plen); }

/* Occurrences of pat in s[0, n) (they cannot overlap for our tags), the first
 * and the last (n when none). */
static size_t count_(const char *s, size_t n, const char *pat, size_t plen, size_t *first, size_t *last)
{
    size_t k = 0, i = 0;
    *first = *last = n;
    for (size_t at; (at = search_(s, n, i, pat, plen)) < n; k++) {
        if (!k)
            *first = at;
        *last = at;
        i = at + plen;
    }
    return k;
}

static int ascii_space_(unsigned char b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f'; }
static int ascii_alpha_(unsigned char b) { return (b | 0x20) >= 'a' && (b | 0x20) <= 'z'; }

/* Decode one code point at s[i, n); its length, or 0 for a byte that does not
 * start valid UTF-8 (the caller steps over that one byte). */
static size_t decode_(const char *s, size_t n, size_t i, utf8proc_int32_t *c)
{
    size_t left = n - i;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, left > 4 ? 4 : (utf8proc_ssize_t)left, c);
    return k > 0 ? (size_t)k : 0;
}

static int cat_letter_(int cat) { return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO; }
static int cat_mark_(int cat) { return cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME; }
static int cat_number_(int cat) { return cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO; }
static int cat_space_(int cat) { return cat >= UTF8PROC_CATEGORY_ZS && cat <= UTF8PROC_CATEGORY_ZP; }

/* The white space at s[i]: its length in bytes, or 0 when s[i] is not white
 * space (ASCII white space, or a Unicode space separator such as U+3000). */
static size_t space_at_(const char *s, size_t n, size_t i)
{
    unsigned char b = (unsigned char)s[i];
    if (b < 0x80)
        return ascii_space_(b);
    utf8proc_int32_t c;
    size_t k = decode_(s, n, i, &c);
    return k && cat_space_(utf8proc_get_property(c)->category) ? k : 0;
}

/* s[a, b) without white space at either end. */
static void trim_(const char *s, size_t *a, size_t *b)
{
    size_t i = *a, end = *a;
    int any = 0;
    while (i < *b) {
        size_t k = space_at_(s, *b, i);
        if (k) {
            i += k;
            continue;
        }
        utf8proc_int32_t c;
        size_t len = decode_(s, *b, i, &c);
        if (!any)
            *a = i;
        any = 1;
        i += len ? len : 1;
        end = i;
    }
    if (!any)
        *a = end = *b;
    *b = end;
}

/* A short, printable, valid-UTF-8 excerpt of s[0, len) for a detail line:
 * at most `max` bytes, newlines as \n, other controls and stray bytes as '?'. */
static void excerpt_(char *dst, size_t cap, const char *s, size_t len, size_t max)
{
    size_t o = 0, i = 0;
    while (i < len && i < max && o + 6 < cap) {
        unsigned char b = (unsigned char)s[i];
        if (b == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
            i++;
        } else if (b < 0x20 || b == 0x7f || b == '"' || b == '\\') {
            dst[o++] = b == '"' || b == '\\' ? (char)b : '?';
            i++;
        } else if (b < 0x80) {
            dst[o++] = (char)b;
            i++;
        } else {
            utf8proc_int32_t c;
            size_t k = decode_(s, len, i, &c);
            if (!k) {
                dst[o++] = '?';
                i++;
            } else {
                if (i + k > max)
                    break;
                memcpy(dst + o, s + i, k);
                o += k;
                i += k;
            }
        }
    }
    if (i < len && o + 3 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = 0;
}

/* ---- scripts -------------------------------------------------------------- */

/* Scripts as data/curate.h's kd_detect_script names them (the project's one
 * script classifier; a word's script is decided by it, letter by letter). */
enum { S_LATIN, S_CJK, S_CYR, S_ARABIC, S_OTHER, S_N, S_NONE = -1, S_AUTO = -2 };
static const char *const script_names_[S_N] = {"latin", "cjk", "cyrillic", "arabic", "other"};

static int script_index_(const char *name)
{
    for (int i = 0; i < S_N; i++)
        if (!strcmp(name, script_names_[i]))
            return i;
    return S_NONE; /* "none", "mixed" */
}

/* The script of one letter at s[i, i+k). ASCII letters are latin (so does
 * kd_detect_script count them); the others ask kd_detect_script. */
static int letter_script_(const char *s, size_t i, size_t k)
{
    if ((unsigned char)s[i] < 0x80)
        return S_LATIN;
    return script_index_(kd_detect_script(s + i, k));
}

/* Language codes (ISO 639-1, a few 639-3) to the script they are written in. */
static const struct {
    int script;
    const char *codes; /* space-separated, each followed by a space */
} lang_codes_[] = {
    {S_LATIN, "en fr de es it pt nl sv da no nb nn fi pl cs sk sl hr bs tr vi id ms ro hu et lv lt ca eu gl ga "
              "cy is sq af sw tl fil la eo az uz mt lb "},
    {S_CJK, "zh ja ko cmn yue "},
    {S_CYR, "ru uk be bg sr mk kk ky mn tg "},
    {S_ARABIC, "ar fa ur ps ug "},
    {S_OTHER, "el he hi bn ta te th ka hy am mr gu kn ml pa si my km lo ne yi "},
};

/* cfg.lang to a script index, or S_AUTO. KD_E_CONFIG when unknown. */
static int lang_script_(const char *lang, int *out)
{
    *out = S_AUTO;
    if (!lang || !*lang || !strcmp(lang, "auto") || !strcmp(lang, "mixed") || !strcmp(lang, "none"))
        return KD_OK;
    int s = script_index_(lang);
    if (s != S_NONE) {
        *out = s;
        return KD_OK;
    }
    char code[8];
    size_t k = 0;
    while (lang[k] && lang[k] != '-' && lang[k] != '_' && k < 4) {
        code[k] = (char)(lang[k] | 0x20);
        k++;
    }
    if (k >= 2 && k <= 3 && (!lang[k] || lang[k] == '-' || lang[k] == '_')) {
        code[k] = ' ';
        code[k + 1] = 0;
        for (size_t i = 0; i < sizeof lang_codes_ / sizeof lang_codes_[0]; i++) {
            const char *p = strstr(lang_codes_[i].codes, code);
            if (p && (p == lang_codes_[i].codes || p[-1] == ' ')) {
                *out = lang_codes_[i].script;
                return KD_OK;
            }
        }
    }
    return kd_err(KD_E_CONFIG, "text: lang '%s' is not a known language code or script "
                               "(latin, cjk, cyrillic, arabic, other, auto)", lang);
}

/* ---- configuration -------------------------------------------------------- */

static const kd_cfg_field text_fields_[] = {
    KD_CFG_BOOL(kd_text_cfg, think_in_prompt, "true",
                "the prompt ends with <think> (R1's template): the completion may start without it"),
    KD_CFG_STRING(kd_text_cfg, lang, NULL,
                  "target language (en, zh, ...) or script (latin, cjk, ...) of the CoT; empty: its main script"),
    KD_CFG_FLOAT(kd_text_cfg, lang_min_fraction, "0.5", 0, 1,
                 "wrong_language below this share of target-script words in the CoT"),
    KD_CFG_FLOAT(kd_text_cfg, mixed_max_fraction, "0.02", 0, 1,
                 "mixed_language above this share of words in foreign runs; 1 disables"),
    KD_CFG_INT(kd_text_cfg, mixed_min_run, "2", 1, 1e9, "consecutive foreign words that make a foreign run"),
    KD_CFG_INT(kd_text_cfg, max_paragraph_chars, "3000", 0, 1e15,
               "long_paragraph above this many characters between blank lines; 0 disables"),
    KD_CFG_BOOL(kd_text_cfg, forbid_code_in_think, "true", "code_in_think for a ``` fence in the CoT (math prompts)"),
    KD_CFG_INT(kd_text_cfg, ngram_n, "8", 0, 64, "loops of n-grams of 1..ngram_n words are checked; 0 disables"),
    KD_CFG_INT(kd_text_cfg, ngram_max_repeats, "10", 1, 1e9, "repetition above this many consecutive copies of an n-gram"),
    KD_CFG_INT(kd_text_cfg, period_max, "500", 0, 1048576,
               "repetition for a substring with a period of at most this many bytes; 0 disables"),
    KD_CFG_INT(kd_text_cfg, period_min_span, "2000", 1, 1e15,
               "... that spans at least this many bytes (at least 3 * period_max)"),
    KD_CFG_END};

const kd_cfg_schema kd_text_schema = {"text", text_fields_, sizeof(kd_text_cfg)};

void kd_text_cfg_init(kd_text_cfg *c)
{
    memset(c, 0, sizeof *c);
    int st = kd_cfg_defaults(&kd_text_schema, c); /* no string default: nothing allocated */
    assert(st == KD_OK);
    (void)st;
}

/* Check what the schema checks on load, for a struct filled by hand, plus the
 * one rule between fields; resolve lang. */
static int cfg_check_(const kd_text_cfg *c, int *script)
{
    assert(c);
    if (!(c->lang_min_fraction >= 0 && c->lang_min_fraction <= 1))
        return kd_err(KD_E_CONFIG, "text: lang_min_fraction is %g, must be in [0, 1]", c->lang_min_fraction);
    if (!(c->mixed_max_fraction >= 0 && c->mixed_max_fraction <= 1))
        return kd_err(KD_E_CONFIG, "text: mixed_max_fraction is %g, must be in [0, 1]", c->mixed_max_fraction);
    if (c->mixed_min_run < 1)
        return kd_err(KD_E_CONFIG, "text: mixed_min_run is %lld, must be at least 1", (long long)c->mixed_min_run);
    if (c->max_paragraph_chars < 0)
        return kd_err(KD_E_CONFIG, "text: max_paragraph_chars is %lld, must be >= 0", (long long)c->max_paragraph_chars);
    if (c->ngram_n < 0 || c->ngram_n > NGRAM_MAX)
        return kd_err(KD_E_CONFIG, "text: ngram_n is %lld, must be in [0, %d]", (long long)c->ngram_n, NGRAM_MAX);
    if (c->ngram_n && c->ngram_max_repeats < 1)
        return kd_err(KD_E_CONFIG, "text: ngram_max_repeats is %lld, must be at least 1",
                      (long long)c->ngram_max_repeats);
    if (c->period_max < 0 || c->period_max > 1048576)
        return kd_err(KD_E_CONFIG, "text: period_max is %lld, must be in [0, 1048576]", (long long)c->period_max);
    if (c->period_max && c->period_min_span / 3 < c->period_max)
        return kd_err(KD_E_CONFIG, "text: period_min_span is %lld, must be at least 3 * period_max (%lld)",
                      (long long)c->period_min_span, 3 * (long long)c->period_max);
    int s;
    KD_TRY(lang_script_(c->lang, &s));
    if (script)
        *script = s;
    return KD_OK;
}

/* Start a check: validate, and clear *v. */
static int begin_(const kd_text_cfg *c, kd_verdict *v, int *script)
{
    assert(v);
    kd_verdict_release(v);
    int st = cfg_check_(c, script);
    if (st != KD_OK)
        kd_verdict_set(v, 0, 0, "config", "%s", kd_strerror(st));
    return st;
}

/* ---- the parts ------------------------------------------------------------ */

void kd_text_think(const char *text, size_t n, int think_in_prompt, const char **cot, size_t *clen)
{
    if (!text)
        text = "", n = 0;
    size_t first, last, open = first_(text, n, OPEN_, OPEN_LEN);
    int closes = count_(text, n, CLOSE_, CLOSE_LEN, &first, &last) > 0;
    size_t a = 0, b = 0;
    if (closes) {
        a = open < last ? open + OPEN_LEN : 0;
        b = last;
    } else if (open < n) {
        a = open + OPEN_LEN;
        b = n;
    } else if (think_in_prompt) {
        b = n;
    }
    *cot = text + a;
    *clen = b - a;
}

void kd_text_answer(const char *text, size_t n, int think_in_prompt, const char **ans, size_t *alen)
{
    if (!text)
        text = "", n = 0;
    size_t first, last;
    if (count_(text, n, CLOSE_, CLOSE_LEN, &first, &last)) {
        *ans = text + last + CLOSE_LEN;
        *alen = n - last - CLOSE_LEN;
    } else if (think_in_prompt || first_(text, n, OPEN_, OPEN_LEN) < n) {
        *ans = text + n;
        *alen = 0;
    } else {
        *ans = text;
        *alen = n;
    }
}

/* ---- format --------------------------------------------------------------- */

int kd_check_format(const kd_text_cfg *c, const char *text, size_t n, kd_verdict *v)
{
    KD_TRY(begin_(c, v, NULL));
    if (!text)
        text = "", n = 0;
    size_t o1, o_last, c1, c_last;
    size_t opens = count_(text, n, OPEN_, OPEN_LEN, &o1, &o_last);
    size_t closes = count_(text, n, CLOSE_, CLOSE_LEN, &c1, &c_last);
    size_t lead = 0, b = n;
    trim_(text, &lead, &b);
    int lead_open = opens && o1 == lead;

    if (!c->think_in_prompt) {
        if (!opens && !closes) {
            kd_verdict_set(v, 0, 0, "no_think", "no <think> or </think> in %zu bytes", n);
            return KD_OK;
        }
        if (opens > 1 || closes > 1) {
            kd_verdict_set(v, 0, 0, "many_think", "%zu <think> and %zu </think>, expected one each", opens, closes);
            return KD_OK;
        }
        if (!opens) {
            kd_verdict_set(v, 0, 0, "no_think", "</think> at byte %zu without <think>", c1);
            return KD_OK;
        }
        if (!closes) {
            kd_verdict_set(v, 0, 0, "unclosed_think", "<think> at byte %zu is never closed", o1);
            return KD_OK;
        }
        if (c1 < o1) {
            kd_verdict_set(v, 0, 0, "misordered_think", "</think> at byte %zu before <think> at byte %zu", c1, o1);
            return KD_OK;
        }
        if (!lead_open) {
            kd_verdict_set(v, 0, 0, "text_before_think", "%zu bytes of text before <think> at byte %zu", o1 - lead, o1);
            return KD_OK;
        }
    } else {
        size_t extra = opens - (size_t)lead_open;
        if (closes > 1 || extra) {
            kd_verdict_set(v, 0, 0, "many_think", "%zu </think> and %zu <think> besides the prompt's, expected one and none",
                           closes, extra);
            return KD_OK;
        }
        if (!closes) {
            kd_verdict_set(v, 0, 0, "unclosed_think", "no </think>: the chain of thought never ends");
            return KD_OK;
        }
    }

    size_t ca = lead_open ? o1 + OPEN_LEN : 0, cb = c_last;
    trim_(text, &ca, &cb);
    if (ca == cb) {
        kd_verdict_set(v, 0, 0, "empty_think", "nothing but white space before </think> at byte %zu", c_last);
        return KD_OK;
    }
    size_t aa = c_last + CLOSE_LEN, ab = n;
    trim_(text, &aa, &ab);
    if (aa == ab) {
        kd_verdict_set(v, 0, 0, "empty_answer", "nothing but white space after </think> at byte %zu", c_last);
        return KD_OK;
    }
    char *ans = malloc(ab - aa + 1);
    if (!ans) {
        kd_verdict_set(v, 0, 0, "error", "out of memory");
        return kd_err(KD_E_NOMEM, "text: format: copying a %zu-byte answer", ab - aa);
    }
    memcpy(ans, text + aa, ab - aa);
    ans[ab - aa] = 0;
    kd_verdict_set(v, 1, 1, "ok", "chain of thought of %zu bytes, answer of %zu bytes", cb - ca, ab - aa);
    v->extracted = ans;
    return KD_OK;
}

/* ---- language ------------------------------------------------------------- */

/* Word counts by script, and the foreign runs for each possible target (so
 * one pass serves "auto", whose target is only known at the end). */
typedef struct lang_stats_ {
    uint64_t words[S_N];   /* counted words per script */
    uint64_t counted;      /* their sum */
    uint64_t run[S_N];     /* the current run of words not in script t */
    size_t run_at[S_N];    /* where it started (byte offset) */
    uint64_t in_runs[S_N]; /* words in closed runs of >= min_run words */
    size_t first_run[S_N]; /* the first such run (byte offset), or SIZE_MAX */
    uint64_t min_run;
} lang_stats_;

/* The word being read: letters per script, and whether it is neutral. */
typedef struct word_ {
    size_t start;
    uint64_t letters, per[S_N];
    int open;    /* a word has started (a letter, mark or digit) */
    int neutral; /* it holds a digit or '_' */
} word_;

static void close_run_(lang_stats_ *st, int t)
{
    if (st->run[t] >= st->min_run) {
        st->in_runs[t] += st->run[t];
        if (st->first_run[t] == SIZE_MAX)
            st->first_run[t] = st->run_at[t];
    }
    st->run[t] = 0;
}

static void add_word_(lang_stats_ *st, int s, size_t at)
{
    st->words[s]++;
    st->counted++;
    for (int t = 0; t < S_N; t++) {
        if (t == s) {
            close_run_(st, t);
        } else {
            if (!st->run[t])
                st->run_at[t] = at;
            st->run[t]++;
        }
    }
}

static void end_word_(lang_stats_ *st, word_ *w)
{
    if (w->open && !w->neutral && w->letters > 1) {
        for (int s = 0; s < S_N; s++)
            if (w->per[s] * 2 > w->letters) {
                add_word_(st, s, w->start);
                break;
            }
    }
    memset(w, 0, sizeof *w);
}

/* Where a fenced code block opened at `pos` (just after its ```) ends: after
 * the line of the next line-start ``` fence, or n when it is never closed. */
static size_t fence_end_(const char *s, size_t n, size_t pos)
{
    const char *nl = memchr(s + pos, '\n', n - pos);
    size_t i = nl ? (size_t)(nl - s) + 1 : n;
    while (i < n) {
        size_t j = i;
        while (j < n && (s[j] == ' ' || s[j] == '\t'))
            j++;
        nl = memchr(s + j, '\n', n - j);
        size_t eol = nl ? (size_t)(nl - s) + 1 : n;
        if (n - j >= 3 && !memcmp(s + j, "```", 3))
            return eol;
        i = eol;
    }
    return n;
}

/* Count the words of s[0, n) (byte offsets reported from `base`). Neutral
 * stretches (code, LaTeX, tags) end the current word and are stepped over. */
static void scan_lang_(const char *s, size_t n, size_t base, lang_stats_ *st)
{
    finder_ f_dd = {"$$", 2}, f_d = {"$", 1}, f_nl = {"\n", 1}, f_br = {"\\]", 2}, f_pr = {"\\)", 2},
            f_bt = {"`", 1};
    word_ w = {0};
    int line_start = 1;
    size_t i = 0;
    while (i < n) {
        unsigned char b = (unsigned char)s[i];
        if (b == '\n' || b == ' ' || b == '\t' || b == '\r') {
            end_word_(st, &w);
            if (b == '\n')
                line_start = 1;
            i++;
            continue;
        }
        int at_line_start = line_start;
        line_start = 0;
        if (b == '`') { /* code: a fence at a line start, else inline to the next ` on the line */
            end_word_(st, &w);
            size_t k = 0;
            while (i + k < n && s[i + k] == '`')
                k++;
            if (at_line_start && k >= 3) {
                i = fence_end_(s, n, i + k);
                line_start = 1;
                continue;
            }
            size_t close = find_(&f_bt, s, n, i + k), nl = find_(&f_nl, s, n, i + k);
            i = close < nl ? close + 1 : i + k;
            continue;
        }
        if (b == '$') { /* math: $$..$$ anywhere, $..$ within a line */
            end_word_(st, &w);
            if (i + 1 < n && s[i + 1] == '$') {
                size_t e = find_(&f_dd, s, n, i + 2);
                i = e < n ? e + 2 : i + 2;
            } else {
                size_t e = find_(&f_d, s, n, i + 1), nl = find_(&f_nl, s, n, i + 1);
                i = e < nl ? e + 1 : i + 1;
            }
            continue;
        }
        if (b == '\\') { /* \[..\], \(..\), \command, \<char> */
            end_word_(st, &w);
            if (i + 1 >= n) {
                i++;
            } else if (s[i + 1] == '[' || s[i + 1] == '(') {
                size_t e = find_(s[i + 1] == '[' ? &f_br : &f_pr, s, n, i + 2);
                i = e < n ? e + 2 : i + 2;
            } else if (ascii_alpha_((unsigned char)s[i + 1])) {
                i++;
                while (i < n && ascii_alpha_((unsigned char)s[i]))
                    i++;
            } else {
                i += 2;
            }
            continue;
        }
        if (b == '<' && ((n - i >= OPEN_LEN && !memcmp(s + i, OPEN_, OPEN_LEN)) ||
                         (n - i >= CLOSE_LEN && !memcmp(s + i, CLOSE_, CLOSE_LEN)))) {
            end_word_(st, &w);
            i += s[i + 1] == '/' ? CLOSE_LEN : OPEN_LEN;
            continue;
        }
        if (b < 0x80) { /* ASCII: the common case, without a table lookup */
            if (ascii_alpha_(b)) {
                if (!w.open)
                    w.start = base + i, w.open = 1;
                w.letters++;
                w.per[S_LATIN]++;
            } else if ((b >= '0' && b <= '9') || b == '_') {
                w.open = w.neutral = 1;
            } else {
                end_word_(st, &w);
            }
            i++;
            continue;
        }
        utf8proc_int32_t c;
        size_t k = decode_(s, n, i, &c);
        if (!k) { /* not UTF-8: neutral */
            end_word_(st, &w);
            i++;
            continue;
        }
        int cat = utf8proc_get_property(c)->category;
        if (cat_letter_(cat)) {
            int sc = letter_script_(s, i, k);
            if (sc == S_CJK) { /* a word by itself */
                end_word_(st, &w);
                add_word_(st, S_CJK, base + i);
            } else {
                if (!w.open)
                    w.start = base + i, w.open = 1;
                w.letters++;
                if (sc >= 0)
                    w.per[sc]++;
            }
        } else if (cat_mark_(cat)) {
            /* continues a word; alone it is nothing */
        } else if (cat_number_(cat)) {
            w.open = w.neutral = 1;
        } else {
            end_word_(st, &w);
        }
        i += k;
    }
    end_word_(st, &w);
    for (int t = 0; t < S_N; t++)
        close_run_(st, t);
}

int kd_check_language(const kd_text_cfg *c, const char *text, size_t n, kd_verdict *v)
{
    int target;
    KD_TRY(begin_(c, v, &target));
    if (!text)
        text = "", n = 0;
    const char *cot = text;
    size_t clen = n;
    if (c->think_in_prompt || first_(text, n, OPEN_, OPEN_LEN) < n || first_(text, n, CLOSE_, CLOSE_LEN) < n)
        kd_text_think(text, n, c->think_in_prompt, &cot, &clen);

    lang_stats_ st = {.min_run = (uint64_t)c->mixed_min_run};
    for (int t = 0; t < S_N; t++)
        st.first_run[t] = SIZE_MAX;
    scan_lang_(cot, clen, (size_t)(cot - text), &st);

    if (!st.counted) {
        kd_verdict_set(v, 1, 1, "ok", "no counted words in %zu bytes of chain of thought", clen);
        return KD_OK;
    }
    int t = target;
    if (t == S_AUTO) {
        t = 0;
        for (int s = 1; s < S_N; s++)
            if (st.words[s] > st.words[t])
                t = s;
    }
    int other = t == 0 ? 1 : 0; /* the largest other script, for the detail */
    for (int s = 0; s < S_N; s++)
        if (s != t && st.words[s] > st.words[other])
            other = s;
    double frac = (double)st.words[t] / (double)st.counted;
    double mixed = (double)st.in_runs[t] / (double)st.counted;
    if (frac < c->lang_min_fraction) {
        kd_verdict_set(v, 0, frac, "wrong_language", "%s words are %.1f%% of %llu counted words (need %.1f%%); %s %.1f%%",
                       script_names_[t], 100 * frac, (unsigned long long)st.counted, 100 * c->lang_min_fraction,
                       script_names_[other], 100.0 * (double)st.words[other] / (double)st.counted);
    } else if (mixed > c->mixed_max_fraction) {
        kd_verdict_set(v, 0, frac, "mixed_language",
                       "runs of non-%s words (mostly %s) hold %.1f%% of %llu counted words (limit %.1f%%); "
                       "the first at byte %zu",
                       script_names_[t], script_names_[other], 100 * mixed, (unsigned long long)st.counted,
                       100 * c->mixed_max_fraction, st.first_run[t]);
    } else {
        kd_verdict_set(v, 1, frac, "ok", "%s words are %.1f%% of %llu counted words", script_names_[t], 100 * frac,
                       (unsigned long long)st.counted);
    }
    return KD_OK;
}

/* ---- readability ---------------------------------------------------------- */

/* The first line of s[0, n) that starts with ``` after spaces and tabs: its
 * offset, or n. */
static size_t first_fence_(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && (s[j] == ' ' || s[j] == '\t'))
            j++;
        if (n - j >= 3 && !memcmp(s + j, "```", 3))
            return j;
        const char *nl = memchr(s + j, '\n', n - j);
        i = nl ? (size_t)(nl - s) + 1 : n;
    }
    return n;
}

int kd_check_readability(const kd_text_cfg *c, const char *text, size_t n, kd_verdict *v)
{
    KD_TRY(begin_(c, v, NULL));
    if (!text)
        text = "", n = 0;
    if (c->forbid_code_in_think) {
        const char *cot;
        size_t clen;
        kd_text_think(text, n, c->think_in_prompt, &cot, &clen);
        size_t at = first_fence_(cot, clen);
        if (at < clen) {
            char ex[48];
            const char *nl = memchr(cot + at, '\n', clen - at);
            excerpt_(ex, sizeof ex, cot + at, nl ? (size_t)(nl - cot) - at : clen - at, 24);
            kd_verdict_set(v, 0, 0, "code_in_think", "code block \"%s\" at byte %zu of the chain of thought", ex,
                           (size_t)(cot - text) + at);
            return KD_OK;
        }
    }
    if (c->max_paragraph_chars > 0) {
        uint64_t max = (uint64_t)c->max_paragraph_chars, chars = 0, longest = 0;
        size_t start = 0, longest_at = 0, i = 0;
        int in_fence = 0;
        while (i <= n) {
            /* one line [i, eol); the paragraph ends at a blank line, a fence or the end */
            const char *nl = i < n ? memchr(text + i, '\n', n - i) : NULL;
            size_t eol = nl ? (size_t)(nl - text) : n;
            size_t j = i;
            while (j < eol && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r'))
                j++;
            int fence = eol - j >= 3 && !memcmp(text + j, "```", 3);
            size_t e = eol;
            while (e > j && (text[e - 1] == ' ' || text[e - 1] == '\t' || text[e - 1] == '\r'))
                e--;
            int tag = (e - j == OPEN_LEN && !memcmp(text + j, OPEN_, OPEN_LEN)) ||
                      (e - j == CLOSE_LEN && !memcmp(text + j, CLOSE_, CLOSE_LEN));
            int breaks = fence || tag || j == eol || in_fence;
            if (breaks || i >= n) {
                if (chars > longest)
                    longest = chars, longest_at = start;
                chars = 0;
                if (fence)
                    in_fence = !in_fence;
            } else {
                if (chars)
                    chars++; /* the newline joining the lines */
                else
                    start = i;
                for (size_t k = i; k < eol; k++)
                    chars += ((unsigned char)text[k] & 0xC0) != 0x80;
            }
            if (i >= n)
                break;
            i = eol + 1;
            if (i > n)
                break;
        }
        if (chars > longest)
            longest = chars, longest_at = start;
        if (longest > max) {
            kd_verdict_set(v, 0, 0, "long_paragraph", "a paragraph of %llu characters at byte %zu (limit %llu)",
                           (unsigned long long)longest, longest_at, (unsigned long long)max);
            return KD_OK;
        }
    }
    kd_verdict_set(v, 1, 1, "ok", NULL);
    return KD_OK;
}

/* ---- degeneration --------------------------------------------------------- */

/* One word of the n-gram scan. */
typedef struct tok_ {
    size_t off, len;
    uint64_t hash; /* FNV-1a of the bytes */
} tok_;

static int tok_eq_(const char *s, const tok_ *a, const tok_ *b)
{
    return a->hash == b->hash && a->len == b->len && !memcmp(s + a->off, s + b->off, a->len);
}

/* Loops of n-grams of 1..N words. For each period p, run[p] counts the
 * consecutive words equal to the word p before; a run of r such words is
 * (r + p) / p copies of one p-gram. Words live in a ring of the last N + 1.
 * O(n * N) time, O(N) memory (N <= 64). */
typedef struct ngram_ {
    const char *s;
    int N;
    uint64_t max_copies;
    tok_ ring[NGRAM_MAX + 1];
    uint64_t run[NGRAM_MAX + 1];
    size_t run_at[NGRAM_MAX + 1]; /* where run p's first copy starts */
    uint64_t m;                   /* words seen */
    uint64_t last_letter;         /* 1 + index of the last word holding a letter (0: none) */
} ngram_;

/* Add word t; 1 (and v filled) when it completes a loop. */
static int ngram_push_(ngram_ *g, tok_ t, int letter, kd_verdict *v)
{
    const uint64_t R = (uint64_t)g->N + 1;
    g->ring[g->m % R] = t;
    if (letter)
        g->last_letter = g->m + 1;
    for (int p = 1; p <= g->N && (uint64_t)p <= g->m; p++) {
        const tok_ *back = &g->ring[(g->m - (uint64_t)p) % R];
        if (!tok_eq_(g->s, &t, back)) {
            g->run[p] = 0;
            continue;
        }
        if (!g->run[p]++)
            g->run_at[p] = back->off;
        uint64_t copies = (g->run[p] + (uint64_t)p) / (uint64_t)p;
        /* the p-gram ending here must hold a letter: "0 & 0 & ..." is a matrix, not a loop */
        if (copies > g->max_copies && g->last_letter && g->m + 1 - g->last_letter < (uint64_t)p) {
            const tok_ *first = &g->ring[(g->m + 1 - (uint64_t)p) % R];
            char ex[96];
            excerpt_(ex, sizeof ex, g->s + first->off, t.off + t.len - first->off, 60);
            kd_verdict_set(v, 0, 0, "repetition",
                           "the %d-word n-gram \"%s\" repeated %llu times in a row from byte %zu (limit %llu)", p, ex,
                           (unsigned long long)copies, g->run_at[p], (unsigned long long)g->max_copies);
            return 1;
        }
    }
    g->m++;
    return 0;
}

/* Split s into words (white space separates them; a CJK character is a word
 * by itself) and feed them to ngram_push_. 1 on a loop, else 0. */
static int ngram_scan_(const kd_text_cfg *c, const char *s, size_t n, kd_verdict *v)
{
    ngram_ g = {.s = s, .N = (int)c->ngram_n, .max_copies = (uint64_t)c->ngram_max_repeats};
    tok_ t = {0};
    int in = 0, letter = 0, found = 0;
    size_t i = 0;
#define FNV_(h, byte) (((h) ^ (unsigned char)(byte)) * 0x100000001b3ull)
#define END_()                                             \
    do {                                                   \
        if (in && (found = ngram_push_(&g, t, letter, v))) \
            goto done;                                     \
        in = letter = 0;                                   \
    } while (0)
    while (i < n) {
        unsigned char b = (unsigned char)s[i];
        size_t k = 1;
        int is_letter = 0, alone = 0;
        if (b < 0x80) {
            if (ascii_space_(b)) {
                END_();
                i++;
                continue;
            }
            is_letter = ascii_alpha_(b);
        } else {
            utf8proc_int32_t cp;
            size_t kk = decode_(s, n, i, &cp);
            if (kk) {
                k = kk;
                int cat = utf8proc_get_property(cp)->category;
                if (cat_space_(cat)) {
                    END_();
                    i += k;
                    continue;
                }
                is_letter = cat_letter_(cat);
                alone = is_letter && letter_script_(s, i, k) == S_CJK;
            }
        }
        if (alone) /* a CJK character is a word */
            END_();
        if (!in) {
            t.off = i;
            t.len = 0;
            t.hash = 0xcbf29ce484222325ull;
            in = 1;
        }
        for (size_t q = 0; q < k; q++)
            t.hash = FNV_(t.hash, s[i + q]);
        t.len += k;
        letter |= is_letter;
        i += k;
        if (alone)
            END_();
    }
    END_();
done:
#undef END_
#undef FNV_
    return found;
}

/* Periods of at most P bytes over spans of at least `span` bytes. Every such
 * substring [a, a + L), L >= span, contains a whole window of m = 2P bytes
 * ending at a checkpoint c = m + k*S: c may be any of the span - m + 1
 * positions a + m .. a + span, so S = span - m + 1 (> P) misses none. A
 * window lying in a substring of
 * period p <= P has its own smallest period q (from the KMP failure function)
 * dividing p (Fine and Wilf: p + q <= m), and the substring has period q too,
 * so extending the window both ways with period q finds it whole. Extensions
 * only confirm real periodicity: no false positives. Each checkpoint costs
 * O(m + span), so the scan is O(n * (m + span) / S) <= O(6n) for
 * span >= 3P; memory O(P). Returns 1 (and fills v) on a loop, <0 on error. */
static int period_scan_(const kd_text_cfg *c, const char *s, size_t n, kd_verdict *v)
{
    size_t P = (size_t)c->period_max, span = (size_t)c->period_min_span, m = 2 * P, S = span - m + 1;
    if (n < span)
        return 0;
    uint32_t *pi = malloc(m * sizeof *pi);
    if (!pi)
        return kd_err(KD_E_NOMEM, "text: period scan of %zu bytes", m);
    int found = 0;
    for (size_t cp = m; cp <= n; cp += S) {
        const unsigned char *x = (const unsigned char *)s + cp - m;
        pi[0] = 0;
        for (size_t q = 1; q < m; q++) {
            uint32_t k = pi[q - 1];
            while (k && x[q] != x[k])
                k = pi[k - 1];
            pi[q] = k + (x[q] == x[k]);
        }
        size_t q = m - pi[m - 1];
        if (q > P)
            continue;
        size_t hi = cp, lo = cp - m;
        while (hi < n && s[hi] == s[hi - q])
            hi++;
        while (lo > 0 && s[lo - 1] == s[lo - 1 + q])
            lo--;
        if (hi - lo >= span) {
            char ex[96];
            excerpt_(ex, sizeof ex, s + lo, q, 60);
            kd_verdict_set(v, 0, 0, "repetition", "a %zu-byte period \"%s\" repeated over %zu bytes from byte %zu "
                           "(limit: period %zu over %zu)", q, ex, hi - lo, lo, P, span);
            found = 1;
            break;
        }
    }
    free(pi);
    return found;
}

int kd_check_degeneration(const kd_text_cfg *c, const char *text, size_t n, int finish_length, kd_verdict *v)
{
    KD_TRY(begin_(c, v, NULL));
    if (!text)
        text = "", n = 0;
    if (finish_length) {
        kd_verdict_set(v, 0, 0, "truncated", "finish reason 'length': the generation hit its token limit");
        return KD_OK;
    }
    int r = 0;
    if (c->ngram_n > 0) {
        r = ngram_scan_(c, text, n, v);
        if (r)
            return r < 0 ? r : KD_OK;
    }
    if (c->period_max > 0) {
        r = period_scan_(c, text, n, v);
        if (r < 0)
            kd_verdict_set(v, 0, 0, "error", "out of memory");
        if (r)
            return r < 0 ? r : KD_OK;
    }
    kd_verdict_set(v, 1, 1, "ok", NULL);
    return KD_OK;
}

/* ---- all of them ---------------------------------------------------------- */

int kd_check_text(const kd_text_cfg *c, const char *text, size_t n, int finish_length, kd_verdict *v)
{
    KD_TRY(kd_check_degeneration(c, text, n, finish_length, v));
    if (!v->accepted)
        return KD_OK;
    KD_TRY(kd_check_format(c, text, n, v));
    if (!v->accepted)
        return KD_OK;
    char *ans = v->extracted;
    v->extracted = NULL;
    int st = kd_check_language(c, text, n, v);
    if (st != KD_OK || !v->accepted) {
        free(ans);
        return st;
    }
    double score = v->score;
    char lang[KD_DETAIL_MAX];
    snprintf(lang, sizeof lang, "%s", v->detail);
    st = kd_check_readability(c, text, n, v);
    if (st != KD_OK || !v->accepted) {
        free(ans);
        return st;
    }
    kd_verdict_set(v, 1, score, "ok", "%s", lang);
    v->extracted = ans;
    return KD_OK;
}
