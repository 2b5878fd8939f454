/* verdict.c - the common verdict (see verdict.h). */
#include "rejection/verdict.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kd_verdict_init(kd_verdict *v) { memset(v, 0, sizeof *v); }

void kd_verdict_release(kd_verdict *v)
{
    free(v->extracted);
    memset(v, 0, sizeof *v);
}

void kd_verdict_set(kd_verdict *v, int accepted, double score, const char *reason, const char *fmt, ...)
{
    v->accepted = accepted;
    v->score = score;
    snprintf(v->reason, sizeof v->reason, "%s", reason ? reason : "");
    v->detail[0] = 0;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->detail, sizeof v->detail, fmt, ap);
        va_end(ap);
    }
}
