/* verdict.h - what every verifier answers: accepted or not, why, and what it
 * extracted. The reason is a short stable token ("correct", "wrong_answer",
 * "no_answer", "timeout", ...) that `distill reject` counts and `distill
 * verify` prints; detail is free text for humans. */
#ifndef KD_REJECTION_VERDICT_H
#define KD_REJECTION_VERDICT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KD_REASON_MAX 48
#define KD_DETAIL_MAX 256

typedef struct kd_verdict {
    int accepted;                  /* 1 accepted, 0 rejected */
    double score;                  /* in [0, 1]: 1/0 for pass/fail checks, a fraction for graded ones */
    char reason[KD_REASON_MAX];    /* a stable token, e.g. "correct", "wrong_answer" */
    char detail[KD_DETAIL_MAX];    /* human-readable, may be empty */
    char *extracted;               /* malloc'd: the extracted answer (or code), or NULL */
} kd_verdict;

/* Zero v (nothing to free). */
void kd_verdict_init(kd_verdict *v);
/* Free v->extracted and zero v. */
void kd_verdict_release(kd_verdict *v);
/* Set accepted, score, reason and (printf-style, may be NULL) detail. */
void kd_verdict_set(kd_verdict *v, int accepted, double score, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#ifdef __cplusplus
}
#endif
#endif
