/* verify.h - `distill verify --jsonl FILE`: one verdict per line, in order.
 *
 * Input, one JSON object per line:
 *     {"gold": "...", "pred": "...", "kind": "math"}          kind defaults to math
 *     {"pred": "...", "tests": {...} or "...", "kind": "code", "lang": "python"}
 *     optional "question": the problem (a response that only restates it is
 *     no answer); optional "note": Math-Verify per-case settings as in
 *     bench/math_verify_public.jsonl ("cfg=expr-only; prec=4; strict=False")
 * Output, one JSON object per input line, in the same order:
 *     {"verdict": true|false, "reason": "correct", "extracted": "..."|null}
 * plus "detail" when the verifier gave one, and "expected" echoed back when
 * the input line had it. A line that is not such an object gives
 * {"verdict": false, "reason": "bad_input", "detail": "..."}: the stream
 * never stops at a bad line. This output is a stable interface: other checks
 * parse it. */
#ifndef KD_REJECTION_VERIFY_H
#define KD_REJECTION_VERIFY_H

#include <stdint.h>
#include <stdio.h>

#include "rejection/code.h"
#include "rejection/math.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_verify_opts {
    kd_math_cfg math;  /* defaults for lines without a note */
    kd_code_cfg code;
    int threads;       /* math lines verified in parallel; 0 = all cores */
} kd_verify_opts;

void kd_verify_opts_init(kd_verify_opts *o);

typedef struct kd_verify_stats {
    int64_t lines, accepted, bad_lines;
    int64_t with_expected, agree; /* lines that carried "expected", and how many agree */
} kd_verify_stats;

/* Verify every line of `in`, writing one line per input line to `out`.
 * Errors: KD_E_IO (reading or writing the streams), KD_E_NOMEM. */
int kd_verify_jsonl(const kd_verify_opts *o, FILE *in, FILE *out, kd_verify_stats *st);

#ifdef __cplusplus
}
#endif
#endif
