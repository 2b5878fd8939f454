/* verify.c - verdicts for a JSONL stream (see verify.h). Lines are read in
 * chunks; the math lines of a chunk are verified in parallel (OpenMP), the
 * code lines through the sandbox pool, then the chunk is written in order. */
#include "rejection/verify.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <omp.h>

#include "core/log.h"
#include "core/status.h"

#define CHUNK 512

void kd_verify_opts_init(kd_verify_opts *o)
{
    memset(o, 0, sizeof *o);
    kd_math_cfg_init(&o->math);
    kd_code_cfg_init(&o->code);
}

typedef struct line_ {
    json_t *j;          /* the parsed line, or NULL */
    char bad[160];      /* why it is not a valid line */
    int kind;           /* 0 math, 1 code */
    kd_math_cfg cfg;
    kd_verdict v;
} line_;

static const char *str_(json_t *o, const char *k, size_t *n)
{
    json_t *v = json_object_get(o, k);
    *n = json_is_string(v) ? json_string_length(v) : 0;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Parse one input line into l (never fails: a bad line is marked). */
static void parse_line_(const kd_verify_opts *o, const char *buf, size_t n, line_ *l)
{
    memset(l, 0, sizeof *l);
    l->cfg = o->math;
    json_error_t e;
    l->j = json_loadb(buf, n, 0, &e);
    if (!json_is_object(l->j)) {
        snprintf(l->bad, sizeof l->bad, "not a JSON object%s%s", l->j ? "" : ": ", l->j ? "" : e.text);
        return;
    }
    size_t kl;
    const char *kind = str_(l->j, "kind", &kl);
    if (!kind || !strcmp(kind, "math"))
        l->kind = 0;
    else if (!strcmp(kind, "code"))
        l->kind = 1;
    else {
        snprintf(l->bad, sizeof l->bad, "unknown kind '%.40s' (math or code)", kind);
        return;
    }
    size_t pl, gl;
    if (!str_(l->j, "pred", &pl)) {
        snprintf(l->bad, sizeof l->bad, "\"pred\" must be a string");
        return;
    }
    if (l->kind == 0 && !str_(l->j, "gold", &gl)) {
        snprintf(l->bad, sizeof l->bad, "\"gold\" must be a string");
        return;
    }
    if (l->kind == 1 && !json_object_get(l->j, "tests")) {
        snprintf(l->bad, sizeof l->bad, "a code line needs \"tests\"");
        return;
    }
    size_t nl;
    const char *note = str_(l->j, "note", &nl);
    if (note && kd_math_cfg_from_note(note, &l->cfg) != KD_OK)
        snprintf(l->bad, sizeof l->bad, "\"note\": settings not understood");
}

static int write_line_(FILE *out, const line_ *l)
{
    json_t *r;
    if (l->bad[0]) {
        r = json_pack("{s:b, s:s, s:n, s:s}", "verdict", 0, "reason", "bad_input", "extracted", "detail", l->bad);
    } else {
        r = json_pack("{s:b, s:s, s:s?}", "verdict", l->v.accepted, "reason", l->v.reason, "extracted",
                      l->v.extracted);
        if (r && l->v.detail[0])
            json_object_set_new(r, "detail", json_string(l->v.detail));
        json_t *ex = json_is_object(l->j) ? json_object_get(l->j, "expected") : NULL;
        if (r && ex)
            json_object_set(r, "expected", ex);
    }
    if (!r)
        return kd_err(KD_E_NOMEM, "verdict line");
    char *s = json_dumps(r, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(r);
    if (!s)
        return kd_err(KD_E_NOMEM, "verdict line");
    int ok = fputs(s, out) >= 0 && fputc('\n', out) != EOF;
    free(s);
    return ok ? KD_OK : kd_err(KD_E_IO, "writing verdicts");
}

/* Verify a chunk: math lines in parallel, then the code lines as one pool. */
static int verify_chunk_(const kd_verify_opts *o, line_ *ls, size_t n, int *told)
{
    int rc = KD_OK;
#pragma omp parallel for schedule(dynamic, 4) num_threads(o->threads > 0 ? o->threads : omp_get_max_threads())
    for (size_t i = 0; i < n; i++) {
        line_ *l = &ls[i];
        if (l->bad[0] || l->kind != 0)
            continue;
        size_t gl, pl, ql;
        const char *g = str_(l->j, "gold", &gl), *p = str_(l->j, "pred", &pl), *q = str_(l->j, "question", &ql);
        l->cfg.question = q;
        l->cfg.question_len = ql;
        int e = kd_math_verify(&l->cfg, g, gl, p, pl, &l->v);
        if (e) {
#pragma omp critical
            rc = e;
        }
    }
    size_t nc = 0;
    for (size_t i = 0; i < n; i++)
        nc += !ls[i].bad[0] && ls[i].kind == 1;
    if (rc || !nc)
        return rc;
    if (!(*told)++)
        kd_info("verify: code runs in the sandbox with: %s", kd_sandbox_isolation());
    const char **resp = malloc(nc * sizeof *resp), **tests = malloc(nc * sizeof *tests);
    size_t *lens = malloc(nc * sizeof *lens), *idx = malloc(nc * sizeof *idx);
    char **owned = calloc(nc, sizeof *owned);
    kd_verdict *vs = calloc(nc, sizeof *vs);
    rc = resp && tests && lens && idx && owned && vs ? KD_OK : kd_err(KD_E_NOMEM, "code lines");
    for (size_t i = 0, k = 0; rc == KD_OK && i < n; i++) {
        if (ls[i].bad[0] || ls[i].kind != 1)
            continue;
        json_t *t = json_object_get(ls[i].j, "tests");
        resp[k] = str_(ls[i].j, "pred", &lens[k]);
        tests[k] = json_is_string(t) ? json_string_value(t) : (owned[k] = json_dumps(t, JSON_COMPACT));
        if (!tests[k])
            tests[k] = "";
        idx[k++] = i;
    }
    if (rc == KD_OK)
        rc = kd_code_verify_many(&o->code, nc, resp, lens, tests, vs);
    for (size_t k = 0; rc == KD_OK && k < nc; k++) {
        ls[idx[k]].v = vs[k];
        memset(&vs[k], 0, sizeof vs[k]);
    }
    for (size_t k = 0; vs && k < nc; k++) {
        kd_verdict_release(&vs[k]);
        if (owned)
            free(owned[k]);
    }
    free(resp);
    free(tests);
    free(lens);
    free(idx);
    free(owned);
    free(vs);
    return rc;
}

int kd_verify_jsonl(const kd_verify_opts *o, FILE *in, FILE *out, kd_verify_stats *st)
{
    memset(st, 0, sizeof *st);
    line_ *ls = calloc(CHUNK, sizeof *ls);
    if (!ls)
        return kd_err(KD_E_NOMEM, "verify lines");
    char *buf = NULL;
    size_t cap = 0;
    int rc = KD_OK, eof = 0, told = 0;
    while (rc == KD_OK && !eof) {
        size_t n = 0;
        ssize_t got;
        while (n < CHUNK && (got = getline(&buf, &cap, in)) >= 0) {
            size_t len = (size_t)got;
            while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
                len--;
            if (!len)
                continue; /* blank lines are not cases */
            parse_line_(o, buf, len, &ls[n++]);
        }
        if (n < CHUNK) {
            eof = 1;
            if (ferror(in))
                rc = kd_err(KD_E_IO, "reading the input lines");
        }
        if (rc == KD_OK)
            rc = verify_chunk_(o, ls, n, &told);
        for (size_t i = 0; i < n; i++) {
            line_ *l = &ls[i];
            if (rc == KD_OK)
                rc = write_line_(out, l);
            st->lines++;
            st->bad_lines += l->bad[0] != 0;
            st->accepted += !l->bad[0] && l->v.accepted;
            json_t *ex = json_is_object(l->j) ? json_object_get(l->j, "expected") : NULL;
            if (json_is_boolean(ex)) {
                st->with_expected++;
                st->agree += !l->bad[0] && json_is_true(ex) == (l->v.accepted != 0);
            }
            kd_verdict_release(&l->v);
            json_decref(l->j);
        }
    }
    free(buf);
    free(ls);
    if (rc == KD_OK && fflush(out) != 0)
        rc = kd_err(KD_E_IO, "writing verdicts");
    return rc;
}
