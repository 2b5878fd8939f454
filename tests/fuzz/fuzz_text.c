/* fuzz_text.c - libFuzzer harness for the text verifiers (rejection/text.h).
 * The first byte picks the configuration (think_in_prompt, small loop limits
 * so that the loop scans do work on short inputs, a target language); the
 * rest is the completion, NUL bytes and invalid UTF-8 included. Every check
 * must return KD_OK with a sane verdict (accepted 0 or 1, score in [0, 1], a
 * known reason, extracted only on an accepted format), give the same verdict
 * twice, and the parts must point inside the text.
 *
 *     build-text-fuzz/tests/fuzz_text /tmp/corpus_text -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "rejection/text.h"

static const char *const reasons_[] = {"ok", "no_think", "many_think", "empty_think", "empty_answer",
                                       "unclosed_think", "misordered_think", "text_before_think",
                                       "wrong_language", "mixed_language", "long_paragraph", "code_in_think",
                                       "repetition", "truncated"};

static void check_(int which, const kd_text_cfg *c, const char *t, size_t n, kd_verdict *v)
{
    int st = which == 0   ? kd_check_format(c, t, n, v)
             : which == 1 ? kd_check_language(c, t, n, v)
             : which == 2 ? kd_check_readability(c, t, n, v)
             : which == 3 ? kd_check_degeneration(c, t, n, 0, v)
                          : kd_check_text(c, t, n, 0, v);
    if (st != KD_OK)
        abort();
    int known = 0;
    for (size_t i = 0; i < sizeof reasons_ / sizeof reasons_[0]; i++)
        known |= !strcmp(v->reason, reasons_[i]);
    if (!known || (v->accepted != 0 && v->accepted != 1) || !(v->score >= 0 && v->score <= 1) ||
        !memchr(v->detail, 0, sizeof v->detail))
        abort();
    if ((which == 0 || which == 4) && (v->extracted != NULL) != v->accepted)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    static const char *const langs[] = {NULL, "en", "zh", "ru"};
    kd_text_cfg c;
    kd_text_cfg_init(&c);
    uint8_t k = data[0];
    c.think_in_prompt = k & 1;
    c.lang = (char *)langs[(k >> 1) & 3];
    c.forbid_code_in_think = (k >> 3) & 1;
    if (k & 0x10) { /* small limits: the loop scans and paragraphs trigger on short inputs */
        c.ngram_n = 1 + (k >> 5);
        c.ngram_max_repeats = 1 + (k >> 6);
        c.period_max = 1 + (k >> 5);
        c.period_min_span = 3 * c.period_max + (k >> 6);
        c.max_paragraph_chars = k >> 2;
    }
    /* a copy of exactly the bytes, so ASan sees any read past the end */
    size_t n = size - 1;
    char *t = malloc(n ? n : 1);
    if (!t)
        return 0;
    memcpy(t, data + 1, n);

    kd_verdict a, b;
    kd_verdict_init(&a);
    kd_verdict_init(&b);
    for (int which = 0; which < 5; which++) {
        check_(which, &c, t, n, &a);
        check_(which, &c, t, n, &b);
        if (a.accepted != b.accepted || a.score != b.score || strcmp(a.reason, b.reason) ||
            strcmp(a.detail, b.detail) || (a.extracted && strcmp(a.extracted, b.extracted)))
            abort();
    }
    const char *p;
    size_t len;
    kd_text_think(t, n, c.think_in_prompt, &p, &len);
    if (p < t || p + len > t + n)
        abort();
    kd_text_answer(t, n, c.think_in_prompt, &p, &len);
    if (p < t || p + len > t + n)
        abort();
    kd_verdict_release(&a);
    kd_verdict_release(&b);
    free(t);
    return 0;
}
