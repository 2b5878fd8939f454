/* reject.c - rejection sampling over a dataset (see reject.h).
 *
 * Prompt by prompt: read the prompt and its generations in one read
 * transaction, verify every generation (code tasks in parallel sandboxes),
 * decide correctness, pass rate and the policy, then write the prompt's
 * verdicts in one batch. A prompt is the unit of work and of commit. */
#include "rejection/reject.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"
#include "data/store.h"
#include "rejection/code.h"
#include "rejection/math.h"
#include "rejection/text.h"
#include "rejection/verdict.h"

/* ---- configuration ------------------------------------------------------------------ */

const kd_cfg_field kd_reject_math_fields[] = {
    KD_CFG_BOOL(kd_reject_math, enabled, "true", "check math answers against the prompt's answer"),
    KD_CFG_ENUM(kd_reject_math, extract, "latex+expr", "latex+expr|latex|expr",
                "answer extraction: LaTeX (boxed, $...$) and plain expressions, or one of them"),
    KD_CFG_BOOL(kd_reject_math, after_think, "true", "extract only from the text after </think>"),
    KD_CFG_INT(kd_reject_math, float_rounding, "6", 0, 30, "digits compared when the gold is a decimal"),
    KD_CFG_FLOAT(kd_reject_math, rel_tol, "1e-6", 0, 1, "relative tolerance for approximate numbers"),
    KD_CFG_BOOL(kd_reject_math, strict, "true", "Math-Verify's strict: variables and relations must match"),
    KD_CFG_END};

const kd_cfg_field kd_reject_code_fields[] = {
    KD_CFG_BOOL(kd_reject_code, enabled, "true", "run code answers against the prompt's tests"),
    KD_CFG_STRING(kd_reject_code, tests_field, "tests", "the prompt field (extra) holding the tests JSON"),
    KD_CFG_INT(kd_reject_code, workers, "4", 1, 1024, "sandboxes at once"),
    KD_CFG_FLOAT(kd_reject_code, cpu_seconds, "5", 0.1, 3600, "CPU time per test run"),
    KD_CFG_FLOAT(kd_reject_code, wall_seconds, "10", 0.1, 3600, "wall-clock time per test run"),
    KD_CFG_INT(kd_reject_code, memory_mb, "1024", 16, 1 << 20, "address space per test run"),
    KD_CFG_END};

const kd_cfg_field kd_reject_text_fields[] = {
    KD_CFG_BOOL(kd_reject_text, format, "true", "exactly one non-empty <think>...</think>, then an answer"),
    KD_CFG_BOOL(kd_reject_text, think_in_prompt, "true", "the template put <think>\\n in the prompt (R1)"),
    KD_CFG_STRING(kd_reject_text, language, "en", "target language of the reasoning; ~ = no check"),
    KD_CFG_FLOAT(kd_reject_text, language_min, "0.95", 0, 1, "least fraction of target-language words"),
    KD_CFG_FLOAT(kd_reject_text, mixed_max, "0.05", 0, 1, "most fraction of other-script words"),
    KD_CFG_INT(kd_reject_text, max_paragraph, "3000", 0, 1e9, "longest paragraph, characters; 0 = any"),
    KD_CFG_BOOL(kd_reject_text, code_in_think, "true", "reject code blocks inside a math reasoning"),
    KD_CFG_BOOL(kd_reject_text, degeneration, "true", "reject repetition loops"),
    KD_CFG_BOOL(kd_reject_text, truncated, "true", "reject completions cut by the length limit"),
    KD_CFG_END};

static const kd_cfg_field reject_fields_[] = {
    KD_CFG_STRING(kd_reject_config, input, NULL, "dataset with prompts and generations"),
    KD_CFG_STRING(kd_reject_config, output, NULL, "dataset for the verdicts; ~ = input"),
    KD_CFG_ENUM(kd_reject_config, task, "auto", "auto|math|code", "the answer check; auto from the prompt"),
    KD_CFG_ENUM(kd_reject_config, policy, "all", "all|k|shortest", "which correct samples are kept"),
    KD_CFG_INT(kd_reject_config, k, "1", 1, 1e6, "policy k: correct samples kept per prompt"),
    KD_CFG_FLOAT(kd_reject_config, pass_rate_min, "0", 0, 1, "drop prompts whose pass rate is below"),
    KD_CFG_FLOAT(kd_reject_config, pass_rate_max, "1", 0, 1, "drop prompts whose pass rate is above"),
    KD_CFG_BOOL(kd_reject_config, skip_existing, "false", "skip prompts whose samples all have verdicts"),
    KD_CFG_INT(kd_reject_config, limit, "0", 0, 1e12, "prompts to use, in id order; 0 = all"),
    KD_CFG_BOOL(kd_reject_config, progress, "true", "draw a progress bar"),
    KD_CFG_SECTION(kd_reject_config, math, kd_reject_math_fields, "the math answer check"),
    KD_CFG_SECTION(kd_reject_config, code, kd_reject_code_fields, "the code check (sandboxed)"),
    KD_CFG_SECTION(kd_reject_config, text, kd_reject_text_fields, "format, language, readability, degeneration"),
    KD_CFG_SECTION(kd_reject_config, runtime, kd_runtime_fields, "seed, device, threads, logging"),
    KD_CFG_END};

const kd_cfg_schema kd_reject_schema = {"reject", reject_fields_, sizeof(kd_reject_config)};

/* ---- the verifiers, set up once ------------------------------------------------------ */

typedef struct rj_ {
    const kd_reject_config *c;
    kd_math_cfg math;
    kd_code_cfg code;
    kd_text_cfg text;
    kd_reject_result *res;
    int told; /* the sandbox's isolation was logged */
} rj_;

enum { T_NONE, T_MATH, T_CODE };
static const char *const task_names_[] = {"none", "math", "code"};

/* One generation under judgement. */
typedef struct samp_ {
    uint32_t sample;
    char *text;
    size_t len;
    unsigned finish;
    kd_verdict task;     /* the answer check (math or code) */
    kd_verdict checks[4]; /* format, language, readability, degeneration */
    int ran[4];
    int correct, kept;
    const char *reason;
} samp_;

static const char *const check_names_[4] = {"format", "language", "readability", "degeneration"};

static void samp_release_(samp_ *s)
{
    free(s->text);
    kd_verdict_release(&s->task);
    for (int i = 0; i < 4; i++)
        kd_verdict_release(&s->checks[i]);
}

/* The text checks of one sample, in order; the first failure names the reason. */
static int text_checks_(rj_ *j, samp_ *s)
{
    const kd_reject_text *t = &j->c->text;
    if (t->format) {
        KD_TRY(kd_check_format(&j->text, s->text, s->len, &s->checks[0]));
        s->ran[0] = 1;
    }
    if (t->language) {
        KD_TRY(kd_check_language(&j->text, s->text, s->len, &s->checks[1]));
        s->ran[1] = 1;
    }
    if (t->max_paragraph > 0 || t->code_in_think) {
        KD_TRY(kd_check_readability(&j->text, s->text, s->len, &s->checks[2]));
        s->ran[2] = 1;
    }
    if (t->degeneration || t->truncated) {
        KD_TRY(kd_check_degeneration(&j->text, s->text, s->len, t->truncated && s->finish == KD_FINISH_LENGTH,
                                     &s->checks[3]));
        s->ran[3] = 1;
    }
    return KD_OK;
}

/* ---- one prompt ---------------------------------------------------------------------- */

typedef struct prompt_ {
    uint64_t id;
    int task;
    char *gold;        /* math: the answer; code: the tests JSON */
    char *question;    /* the prompt's text (a response restating it is no answer) */
    char *source;
    samp_ *s;
    size_t n, cap;
} prompt_;

static void prompt_release_(prompt_ *p)
{
    for (size_t i = 0; i < p->n; i++)
        samp_release_(&p->s[i]);
    free(p->s);
    free(p->gold);
    free(p->question);
    free(p->source);
    memset(p, 0, sizeof *p);
}

static char *dupn_(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s ? s : "", n);
        d[n] = 0;
    }
    return d;
}

/* The prompt's task, gold and source from its record; the tests field and
 * the source are looked up in the prompt's extra, then in its first
 * generation's (`gextra`: an import in scalar form keeps a line's other
 * fields with the generation). */
static int prompt_setup_(rj_ *j, const kd_record *r, const kd_text *gextra, prompt_ *p)
{
    const kd_reject_config *c = j->c;
    json_t *extra = r->extra.len ? json_loadb(r->extra.ptr, r->extra.len, 0, NULL) : NULL;
    json_t *gex = gextra && gextra->len ? json_loadb(gextra->ptr, gextra->len, 0, NULL) : NULL;
    json_t *tests = NULL;
    const char *src = NULL;
    if (c->code.tests_field)
        tests = json_object_get(extra, c->code.tests_field) ? json_object_get(extra, c->code.tests_field)
                                                             : json_object_get(gex, c->code.tests_field);
    src = json_string_value(json_object_get(extra, "source"));
    if (!src)
        src = json_string_value(json_object_get(gex, "source"));
    int rc = KD_OK;
    p->id = r->id;
    p->source = strdup(src ? src : "(none)");
    p->question = dupn_(r->text.ptr, r->text.len);
    if (c->task == KD_REJECT_TASK_CODE || (c->task == KD_REJECT_TASK_AUTO && tests)) {
        p->task = c->code.enabled ? T_CODE : T_NONE;
        if (tests)
            p->gold = json_is_string(tests) ? strdup(json_string_value(tests)) : json_dumps(tests, JSON_COMPACT);
    } else if (c->task == KD_REJECT_TASK_MATH || (c->task == KD_REJECT_TASK_AUTO && r->has_answer)) {
        p->task = c->math.enabled ? T_MATH : T_NONE;
        if (r->has_answer)
            p->gold = dupn_(r->answer.ptr, r->answer.len);
    } else {
        p->task = T_NONE;
    }
    if (!p->source || !p->question || (p->task != T_NONE && (r->has_answer || tests) && !p->gold))
        rc = kd_err(KD_E_NOMEM, "prompt %" PRIu64, r->id);
    json_decref(extra);
    json_decref(gex);
    return rc;
}

/* Verify every sample of p; set correct. */
static int verify_prompt_(rj_ *j, prompt_ *p)
{
    int rc = KD_OK;
    for (size_t i = 0; i < p->n && rc == KD_OK; i++)
        rc = text_checks_(j, &p->s[i]);
    if (rc == KD_OK && p->task == T_MATH) {
        kd_math_cfg mc = j->math;
        mc.question = p->question;
        mc.question_len = strlen(p->question);
        for (size_t i = 0; i < p->n && rc == KD_OK; i++) {
            samp_ *s = &p->s[i];
            if (!p->gold)
                kd_verdict_set(&s->task, 0, 0, "no_gold", "the prompt has no reference answer");
            else
                rc = kd_math_verify(&mc, p->gold, strlen(p->gold), s->text, s->len, &s->task);
        }
    } else if (rc == KD_OK && p->task == T_CODE) {
        if (!j->told++)
            kd_info("reject: code runs in the sandbox with: %s", kd_sandbox_isolation());
        const char **resp = malloc(p->n * sizeof *resp), **tests = malloc(p->n * sizeof *tests);
        size_t *lens = malloc(p->n * sizeof *lens);
        kd_verdict *out = calloc(p->n, sizeof *out);
        rc = resp && tests && lens && out ? KD_OK : kd_err(KD_E_NOMEM, "code batch");
        for (size_t i = 0; rc == KD_OK && i < p->n; i++) {
            resp[i] = p->s[i].text;
            lens[i] = p->s[i].len;
            tests[i] = p->gold ? p->gold : "";
        }
        if (rc == KD_OK)
            rc = kd_code_verify_many(&j->code, p->n, resp, lens, tests, out);
        for (size_t i = 0; rc == KD_OK && i < p->n; i++) {
            p->s[i].task = out[i];
            memset(&out[i], 0, sizeof out[i]);
        }
        for (size_t i = 0; out && i < p->n; i++)
            kd_verdict_release(&out[i]);
        free(out);
        free(resp);
        free(tests);
        free(lens);
    }
    /* correct: every check that ran accepts; the reason: the first that does not */
    for (size_t i = 0; rc == KD_OK && i < p->n; i++) {
        samp_ *s = &p->s[i];
        s->correct = 1;
        s->reason = "correct";
        if (s->ran[3] && !s->checks[3].accepted) { /* truncation and loops first: nothing else means much */
            s->correct = 0;
            s->reason = s->checks[3].reason;
        } else if (s->ran[0] && !s->checks[0].accepted) {
            s->correct = 0;
            s->reason = s->checks[0].reason;
        } else if (p->task != T_NONE && !s->task.accepted) {
            s->correct = 0;
            s->reason = s->task.reason;
        } else {
            for (int k = 1; k < 3; k++)
                if (s->ran[k] && !s->checks[k].accepted) {
                    s->correct = 0;
                    s->reason = s->checks[k].reason;
                    break;
                }
        }
    }
    return rc;
}

/* The policy and the pass-rate window: set kept and the final reasons. */
static double apply_policy_(rj_ *j, prompt_ *p)
{
    const kd_reject_config *c = j->c;
    size_t ncorrect = 0;
    for (size_t i = 0; i < p->n; i++)
        ncorrect += (size_t)p->s[i].correct;
    const double rate = p->n ? (double)ncorrect / (double)p->n : 0.0;
    const int in_window = rate >= c->pass_rate_min - 1e-12 && rate <= c->pass_rate_max + 1e-12;
    size_t best = (size_t)-1;
    if (c->policy == KD_REJECT_POLICY_SHORTEST)
        for (size_t i = 0; i < p->n; i++)
            if (p->s[i].correct && (best == (size_t)-1 || p->s[i].len < p->s[best].len))
                best = i;
    int64_t taken = 0;
    for (size_t i = 0; i < p->n; i++) { /* samples are in index order */
        samp_ *s = &p->s[i];
        if (!s->correct)
            continue;
        if (!in_window) {
            s->reason = "pass_rate";
            continue;
        }
        int keep = c->policy == KD_REJECT_POLICY_ALL || (c->policy == KD_REJECT_POLICY_K && taken < c->k) ||
                   (c->policy == KD_REJECT_POLICY_SHORTEST && i == best);
        if (keep) {
            s->kept = 1;
            taken++;
        } else {
            s->reason = "policy";
        }
    }
    if (!in_window && p->n)
        j->res->dropped_prompts++;
    return rate;
}

static json_t *verdict_json_(const kd_verdict *v)
{
    json_t *o = json_pack("{s:b, s:s, s:f}", "ok", v->accepted, "reason", v->reason, "score", v->score);
    if (o && v->detail[0])
        json_object_set_new(o, "detail", json_string(v->detail));
    return o;
}

static int write_verdicts_(rj_ *j, kd_store *out, uint32_t lineage, prompt_ *p, double rate)
{
    kd_store_batch *b = NULL;
    KD_TRY(kd_store_batch_begin(out, &b));
    int rc = KD_OK;
    for (size_t i = 0; i < p->n && rc == KD_OK; i++) {
        samp_ *s = &p->s[i];
        json_t *checks = json_object();
        if (p->task != T_NONE)
            json_object_set_new(checks, task_names_[p->task], verdict_json_(&s->task));
        for (int k = 0; k < 4; k++)
            if (s->ran[k])
                json_object_set_new(checks, check_names_[k], verdict_json_(&s->checks[k]));
        json_t *extra = json_pack("{s:b, s:f, s:s, s:o}", "correct", s->correct, "pass_rate", rate, "task",
                                  task_names_[p->task], "checks", checks);
        char *ex = extra ? json_dumps(extra, JSON_COMPACT) : NULL;
        json_decref(extra);
        if (!ex) {
            rc = kd_err(KD_E_NOMEM, "verdict");
            break;
        }
        const char *ans = s->task.extracted;
        kd_record r = {.db = KD_DB_VERDICTS, .id = p->id, .sample = s->sample, .lineage = lineage,
                       .accepted = s->kept, .has_score = p->task != T_NONE, .score = (float)s->task.score};
        r.reason = (kd_text){s->reason, strlen(s->reason)};
        r.answer = (kd_text){ans, ans ? strlen(ans) : 0};
        r.extra = (kd_text){ex, strlen(ex)};
        rc = kd_store_put(b, &r, 0, NULL);
        free(ex);
    }
    if (rc == KD_OK)
        return kd_store_batch_commit(b);
    kd_store_batch_abort(b);
    return rc;
}

/* ---- the summary ---------------------------------------------------------------------- */

static void count_(kd_reject_row *rows, int *n, const char *name, int correct, int kept)
{
    int i = 0;
    for (; i < *n; i++)
        if (!strcmp(rows[i].name, name))
            break;
    if (i == *n) {
        if (*n == KD_REJECT_MAX_ROWS) {
            i = KD_REJECT_MAX_ROWS - 1;
            snprintf(rows[i].name, sizeof rows[i].name, "(other)");
        } else {
            snprintf(rows[i].name, sizeof rows[i].name, "%s", name);
            (*n)++;
        }
    }
    rows[i].samples++;
    rows[i].correct += correct;
    rows[i].kept += kept;
}

static int cmp_rows_(const void *a, const void *b)
{
    const kd_reject_row *x = a, *y = b;
    return x->samples < y->samples ? 1 : x->samples > y->samples ? -1 : strcmp(x->name, y->name);
}

void kd_reject_print(const kd_reject_result *res, FILE *out)
{
    fprintf(out, "reject: %lld prompts, %lld samples: %lld correct (%.1f%%), %lld kept; %lld prompts outside "
                 "the pass-rate window; %lld skipped (had verdicts); %.1f s\n",
            (long long)res->prompts, (long long)res->samples, (long long)res->correct,
            res->samples ? 100.0 * (double)res->correct / (double)res->samples : 0.0, (long long)res->kept,
            (long long)res->dropped_prompts, (long long)res->skipped_prompts, res->seconds);
    kd_reject_row rows[KD_REJECT_MAX_ROWS];
    const kd_reject_row *tabs[2] = {res->by_reason, res->by_source};
    const int ns[2] = {res->nreason, res->nsource};
    const char *heads[2] = {"reason", "source"};
    for (int t = 0; t < 2; t++) {
        memcpy(rows, tabs[t], (size_t)ns[t] * sizeof *rows);
        qsort(rows, (size_t)ns[t], sizeof *rows, cmp_rows_);
        fprintf(out, "  %-28s %10s %10s %10s %8s\n", heads[t], "samples", "correct", "kept", "kept %");
        for (int i = 0; i < ns[t]; i++)
            fprintf(out, "  %-28s %10lld %10lld %10lld %7.1f%%\n", rows[i].name, (long long)rows[i].samples,
                    (long long)rows[i].correct, (long long)rows[i].kept,
                    rows[i].samples ? 100.0 * (double)rows[i].kept / (double)rows[i].samples : 0.0);
    }
}

/* ---- the job ---------------------------------------------------------------------------- */

static int setup_(rj_ *j)
{
    const kd_reject_config *c = j->c;
    if (!c->input)
        return kd_err(KD_E_CONFIG, "reject: 'input' is required");
    if (c->pass_rate_min > c->pass_rate_max)
        return kd_err(KD_E_CONFIG, "reject: pass_rate_min %g is above pass_rate_max %g", c->pass_rate_min,
                      c->pass_rate_max);
    kd_math_cfg_init(&j->math);
    j->math.extract = c->math.extract == 1   ? KD_MATH_EXTRACT_LATEX
                      : c->math.extract == 2 ? KD_MATH_EXTRACT_EXPR
                                             : KD_MATH_EXTRACT_LATEX_EXPR;
    j->math.after_think = c->math.after_think;
    j->math.float_rounding = (int)c->math.float_rounding;
    j->math.rel_tol = c->math.rel_tol;
    j->math.strict = c->math.strict;
    kd_code_cfg_init(&j->code);
    j->code.workers = (int)c->code.workers;
    j->code.sb.cpu_seconds = c->code.cpu_seconds;
    j->code.sb.wall_seconds = c->code.wall_seconds;
    j->code.sb.mem_bytes = (uint64_t)c->code.memory_mb << 20;
    kd_text_cfg_init(&j->text);
    j->text.think_in_prompt = c->text.think_in_prompt;
    j->text.lang = c->text.language;
    j->text.lang_min_fraction = c->text.language_min;
    j->text.mixed_max_fraction = c->text.mixed_max;
    j->text.max_paragraph_chars = c->text.max_paragraph;
    j->text.forbid_code_in_think = c->text.code_in_think;
    if (!c->text.degeneration) { /* loops off; truncation alone */
        j->text.ngram_n = 0;
        j->text.period_max = 0;
    }
    return KD_OK;
}

/* Read prompt `pid` and its generations into p (n = 0 when it has none, or
 * when skip_existing and every sample has a verdict). */
static int read_prompt_(rj_ *j, kd_store *in, kd_store *out, uint64_t pid, prompt_ *p)
{
    kd_store_read *r = NULL;
    kd_store_cursor *cur = NULL;
    KD_TRY(kd_store_read_begin(in, &r));
    kd_record rec;
    char *gextra = NULL; /* the first generation's extra */
    size_t gelen = 0;
    int rc = kd_store_cursor_open(r, KD_DB_GENERATIONS, &cur);
    if (rc == KD_OK)
        rc = kd_store_cursor_seek(cur, pid, 0);
    int got = 0;
    while (rc == KD_OK && (got = kd_store_cursor_next(cur, &rec)) == 1 && rec.id == pid) {
        if (rec.finish == KD_FINISH_SKIPPED)
            continue; /* never generated: nothing to judge */
        if (p->n == p->cap) {
            size_t cap = p->cap ? 2 * p->cap : 8;
            samp_ *ns = realloc(p->s, cap * sizeof *ns);
            if (!ns) {
                rc = kd_err(KD_E_NOMEM, "samples");
                break;
            }
            p->s = ns;
            p->cap = cap;
        }
        if (!p->n && rec.extra.len && !(gextra = dupn_(rec.extra.ptr, gelen = rec.extra.len))) {
            rc = kd_err(KD_E_NOMEM, "generation");
            break;
        }
        samp_ *s = &p->s[p->n];
        memset(s, 0, sizeof *s);
        s->sample = rec.sample;
        s->finish = rec.finish;
        s->len = rec.text.len;
        s->text = dupn_(rec.text.ptr, rec.text.len);
        if (!s->text) {
            rc = kd_err(KD_E_NOMEM, "generation");
            break;
        }
        p->n++;
    }
    if (rc == KD_OK && got < 0)
        rc = got;
    kd_store_cursor_close(cur);
    if (rc == KD_OK && p->n) {
        kd_text ge = {gextra, gelen};
        rc = kd_store_get(r, KD_DB_PROMPTS, pid, 0, &rec);
        if (rc == KD_OK)
            rc = prompt_setup_(j, &rec, &ge, p);
    }
    free(gextra);
    kd_store_read_end(r);
    if (rc == KD_OK && j->c->skip_existing && p->n) {
        kd_store_read *ro = NULL;
        rc = kd_store_read_begin(out, &ro);
        size_t have = 0;
        for (size_t i = 0; rc == KD_OK && i < p->n; i++) {
            const void *v;
            size_t vl;
            int e = kd_store_get_raw(ro, KD_DB_VERDICTS, pid, p->s[i].sample, &v, &vl);
            if (e == KD_OK)
                have++;
            else if (e == KD_E_NOTFOUND)
                kd_err_clear();
            else
                rc = e;
        }
        if (ro)
            kd_store_read_end(ro);
        if (rc == KD_OK && have == p->n) {
            j->res->skipped_prompts++;
            for (size_t i = 0; i < p->n; i++)
                samp_release_(&p->s[i]);
            p->n = 0;
        }
    }
    return rc;
}

int kd_reject_run(const kd_reject_config *c, kd_reject_result *res)
{
    memset(res, 0, sizeof *res);
    const double t0 = kd_now();
    rj_ j = {.c = c, .res = res};
    KD_TRY(setup_(&j));
    kd_store *in = NULL, *out = NULL;
    uint64_t *pids = NULL;
    size_t npids = 0;
    const int same = !c->output || !strcmp(c->output, c->input);
    int rc = kd_store_open(c->input, same ? 0 : KD_STORE_RDONLY, &in);
    if (rc == KD_OK && !same)
        rc = kd_store_open(c->output, KD_STORE_CREATE, &out);
    if (rc == KD_OK && same)
        out = in;
    if (rc == KD_OK)
        rc = kd_store_prompt_ids(in, c->limit, &pids, &npids);
    uint32_t lineage = 0;
    if (rc == KD_OK) {
        kd_store_batch *b = NULL;
        kd_lineage l = {.kind = "reject", .source = c->input, .seed = -1};
        rc = kd_store_batch_begin(out, &b);
        if (rc == KD_OK)
            rc = kd_store_lineage_add(b, &l, NULL, &lineage);
        if (rc == KD_OK)
            rc = kd_store_batch_commit(b);
        else if (b)
            kd_store_batch_abort(b);
    }
    kd_progress pb;
    const int pb_on = rc == KD_OK && c->progress;
    if (pb_on)
        kd_progress_init(&pb, "reject", (uint64_t)npids);
    for (size_t i = 0; rc == KD_OK && i < npids; i++) {
        prompt_ p = {0};
        rc = read_prompt_(&j, in, out, pids[i], &p);
        if (rc == KD_OK && p.n) {
            res->prompts++;
            rc = verify_prompt_(&j, &p);
            double rate = rc == KD_OK ? apply_policy_(&j, &p) : 0.0;
            if (rc == KD_OK)
                rc = write_verdicts_(&j, out, lineage, &p, rate);
            for (size_t k = 0; rc == KD_OK && k < p.n; k++) {
                const samp_ *s = &p.s[k];
                res->samples++;
                res->correct += s->correct;
                res->kept += s->kept;
                count_(res->by_reason, &res->nreason, s->reason, s->correct, s->kept);
                count_(res->by_source, &res->nsource, p.source, s->correct, s->kept);
            }
        }
        prompt_release_(&p);
        if (pb_on)
            kd_progress_add(&pb, 1);
    }
    if (pb_on)
        kd_progress_finish(&pb);
    res->seconds = kd_now() - t0;
    free(pids);
    if (out && out != in)
        kd_store_close(out);
    if (in)
        kd_store_close(in);
    return rc;
}
