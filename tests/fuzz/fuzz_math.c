/* fuzz_math.c - libFuzzer harness for the math answer verifier
 * (kd_math_verify in rejection/math.h).
 *
 * The input is split at its first NUL or newline: the part before is the
 * gold answer, the rest the response (no separator: both are the whole
 * input). Each pair is verified under four settings (the defaults,
 * expression-only, LaTeX-only with strict=0 and set/relation comparison,
 * and a tight budget). Every call must return KD_OK (KD_E_NOMEM aside), a
 * known reason, accepted exactly when the reason is "correct", a score that
 * matches, an extracted string no longer than the cap, and the same verdict
 * when asked twice: the verifier keeps no state between calls.
 *
 *     fuzz_math -max_total_time=60 -timeout=5 /tmp/corpus   (seeds: tests/fuzz/corpus/math/)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "rejection/math.h"

/* assert() is compiled out in RelWithDebInfo (NDEBUG); the harness's checks must not be */
#define MUST(cond)        \
    do {                  \
        if (!(cond))      \
            abort();      \
    } while (0)

static const char *const reasons_[] = {"correct", "wrong_answer", "no_answer", "bad_gold", "parse_error",
                                       "too_large", "budget", NULL};

static void one_(const kd_math_cfg *c, const char *g, size_t gl, const char *p, size_t pl)
{
    kd_verdict a, b;
    kd_verdict_init(&a);
    kd_verdict_init(&b);
    int sa = kd_math_verify(c, g, gl, p, pl, &a);
    int sb = kd_math_verify(c, g, gl, p, pl, &b);
    if (sa == KD_E_NOMEM || sb == KD_E_NOMEM)
        goto out;
    MUST(sa == KD_OK && sb == KD_OK);
    int known = 0;
    for (const char *const *r = reasons_; *r; r++)
        if (!strcmp(a.reason, *r))
            known = 1;
    MUST(known);
    MUST(a.accepted == !strcmp(a.reason, "correct"));
    MUST(a.score == (a.accepted ? 1.0 : 0.0));
    MUST(!a.extracted || strlen(a.extracted) <= 1024);
    MUST(a.accepted == b.accepted && !strcmp(a.reason, b.reason));
    MUST(!a.extracted == !b.extracted && (!a.extracted || !strcmp(a.extracted, b.extracted)));
out:
    kd_verdict_release(&a);
    kd_verdict_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    const char *s = (const char *)data;
    size_t cut = size;
    for (size_t i = 0; i < size; i++)
        if (s[i] == 0 || s[i] == '\n') {
            cut = i;
            break;
        }
    const char *g = s, *p = s;
    size_t gl = size, pl = size;
    if (cut < size) {
        gl = cut;
        p = s + cut + 1;
        pl = size - cut - 1;
    }
    kd_math_cfg c;
    kd_math_cfg_init(&c);
    one_(&c, g, gl, p, pl);
    c.extract = KD_MATH_EXTRACT_EXPR;
    one_(&c, g, gl, p, pl);
    c.extract = KD_MATH_EXTRACT_LATEX;
    c.strict = 0;
    c.allow_set_relation = 1;
    c.boxed_first = 0;
    one_(&c, g, gl, p, pl);
    kd_math_cfg_init(&c);
    c.max_steps = 500;
    c.max_nodes = 50;
    c.max_depth = 20;
    c.max_bits = 64;
    one_(&c, g, gl, p, pl);
    return 0;
}
