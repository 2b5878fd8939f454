/* demo.c - the demo's quick mode and summary (see demo.h). */
#include "pipeline/demo.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"
#include "pipeline/eval.h"
#include "pipeline/setup.h"
#include "rejection/reject.h"
#include "sft/sft.h"
#include "teacher/generate.h"

static const char *const names_[4] = {"teacher", "student", "baseline", "unfiltered"};

static int64_t min64_(int64_t a, int64_t b) { return a < b ? a : b; }

static int cpus_(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void kd_demo_quick(kd_pipeline_config *c)
{
    for (size_t i = 0; i < c->stages.n; i++) {
        const char *kind = kd_pipeline_kind_name(c->stages.items[i].kind);
        void *cfg = c->stages.items[i].cfg;
        if (!strcmp(kind, "problems")) {
            kd_problems_stage *p = cfg;
            p->train = min64_(p->train, 200);
            p->gen = min64_(p->gen, 12);
            p->heldout = min64_(p->heldout, 8);
        } else if (!strcmp(kind, "cold_start") || !strcmp(kind, "sft")) {
            kd_sft_config *s = cfg;
            s->train.max_steps = s->train.max_steps > 0 ? min64_(s->train.max_steps, 4) : 4;
            s->output.save_every = 2;
            if (!strcmp(kind, "sft")) /* a teacher of 6 steps may have no sample accepted */
                s->data.allow_empty = 1;
        } else if (!strcmp(kind, "generate")) {
            kd_gen_config *g = cfg;
            g->sampling.max_new_tokens = min64_(g->sampling.max_new_tokens, 40);
        } else if (!strcmp(kind, "eval")) {
            kd_eval_config *e = cfg;
            e->k = min64_(e->k, 2);
            e->sampling.max_new_tokens = min64_(e->sampling.max_new_tokens, 40);
        }
    }
}

/* The index of the eval stage labelled `name`, or -1. */
static long eval_stage_(const kd_pipeline_config *c, const char *name)
{
    for (size_t i = 0; i < c->stages.n; i++) {
        if (strcmp(kd_pipeline_kind_name(c->stages.items[i].kind), "eval"))
            continue;
        char label[256];
        if (!strcmp(kd_eval_label(c->stages.items[i].cfg, label, sizeof label), name))
            return (long)i;
    }
    return -1;
}

static long reject_stage_(const kd_pipeline_config *c)
{
    for (size_t i = 0; i < c->stages.n; i++)
        if (!strcmp(kd_pipeline_kind_name(c->stages.items[i].kind), "reject"))
            return (long)i;
    return -1;
}

static void bar_(kd_demo_result *r, int i, const char *bar, int pass, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void bar_(kd_demo_result *r, int i, const char *bar, int pass, const char *fmt, ...)
{
    r->bars[i].bar = bar;
    r->bars[i].pass = pass;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->bars[i].detail, sizeof r->bars[i].detail, fmt, ap);
    va_end(ap);
    r->passed += pass;
}

static void bars_(kd_demo_result *r)
{
    const double t = r->teacher_pass1, s = r->student_pass1, b = r->baseline_pass1, u = r->unfiltered_pass1;
    const double lo = t < s ? t : s;
    bar_(r, 0, "teacher_pass1 >= 0.6", t >= 0.6, t >= 0.6 ? "%.3f" : "%.3f: the cold start did not teach the "
         "teacher the task well enough (more cold_start steps or an easier problems config)", t);
    const int caught = t > 0 && s >= 0.8 * t;
    bar_(r, 1, "student_pass1 >= 0.8 x teacher_pass1 > 0", caught,
         caught ? "%.3f vs %.3f (ratio %.2f)" : "%.3f vs %.3f (ratio %.2f): the student has not caught up (more "
         "sft steps, or more accepted traces), or there is nothing to catch up with", s, t, t > 0 ? s / t : NAN);
    const int floor = b < 0.5 * lo;
    bar_(r, 2, "baseline_pass1 < 0.5 x min(teacher, student)", floor, "%.3f vs %.3f%s", b, lo,
         floor ? "" : ": the untrained floor is not far below (the trained models are weak, or the held-out "
         "answers are guessable)");
    char why[200] = "";
    if (s <= u) {
        if (r->accepted == 0)
            snprintf(why, sizeof why, ": nothing was accepted, so the filtered student saw no example");
        else if (r->acceptance >= 0.8)
            snprintf(why, sizeof why, ": with acceptance %.2f the unfiltered set is mostly the same traces, "
                     "and more of them for the same budget", r->acceptance);
        else
            snprintf(why, sizeof why, ": the wrong traces did not hurt this student more than the %.1fx larger "
                     "set helped it (or the gap is within the noise of the held-out set)",
                     (double)r->generated / (double)r->accepted);
    }
    bar_(r, 3, "student_pass1 > unfiltered_pass1", s > u, "%.3f vs %.3f%s", s, u, why);
    const int acc = r->acceptance >= 0.3 && r->acceptance <= 0.9;
    bar_(r, 4, "0.3 <= acceptance <= 0.9", acc, "%.3f (%lld of %lld samples)%s", r->acceptance, r->accepted,
         r->generated, acc ? "" : r->acceptance > 0.9 ? ": the task is too easy for rejection to matter"
                                                        : ": the teacher is too weak for the task");
    bar_(r, 5, "wall_seconds <= 600", r->wall_seconds <= 600, "%.1f s on %d CPUs%s", r->wall_seconds, cpus_(),
         r->wall_seconds <= 600 ? "" : ": slower than the budget of a 2-core machine");
}

static double num_(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static int by_start_(const void *a, const void *b)
{
    const double x = ((const double *)a)[0], y = ((const double *)b)[0];
    return (x > y) - (x < y);
}

/* The pipeline's time: the length of the union of the stages' [start, end]
 * (stages that ran at once count once; the gaps between two invocations of a
 * resumed run do not count), plus the seconds of stages recorded without
 * their times. */
static double busy_seconds_(json_t *stages)
{
    const size_t n = json_array_size(stages);
    double *iv = calloc(n ? 2 * n : 1, sizeof *iv), total = 0;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(stages, i);
        const double s = num_(e, "seconds"), t0 = num_(e, "start"), t1 = num_(e, "end");
        if (iv && isfinite(t0) && isfinite(t1) && t1 >= t0)
            iv[2 * m] = t0, iv[2 * m + 1] = t1, m++;
        else if (isfinite(s))
            total += s;
    }
    if (m)
        qsort(iv, m, 2 * sizeof *iv, by_start_);
    for (size_t i = 0; i < m;) {
        double lo = iv[2 * i], hi = iv[2 * i + 1];
        for (i++; i < m && iv[2 * i] <= hi; i++)
            hi = iv[2 * i + 1] > hi ? iv[2 * i + 1] : hi;
        total += hi - lo;
    }
    free(iv);
    return total;
}

int kd_demo_run(kd_pipeline_config *c, int quick, kd_demo_result *res)
{
    memset(res, 0, sizeof *res);
    res->quick = quick;
    long ev[4];
    for (int i = 0; i < 4; i++)
        if ((ev[i] = eval_stage_(c, names_[i])) < 0)
            return kd_err(KD_E_CONFIG, "demo: no eval stage named '%s' (the demo needs teacher, student, "
                          "baseline and unfiltered)", names_[i]);
    const long rj = reject_stage_(c);
    if (rj < 0)
        return kd_err(KD_E_CONFIG, "demo: no reject stage");
    if (quick)
        kd_demo_quick(c);
    kd_pipeline_result pr;
    KD_TRY(kd_pipeline_run(c, &pr));
    snprintf(res->report, sizeof res->report, "%s", pr.report);
    res->stages = pr.stages;
    res->ran = pr.ran;
    res->skipped = pr.skipped;
    json_error_t je;
    json_t *rep = json_load_file(pr.report, 0, &je);
    if (!rep)
        return kd_err(KD_E_FORMAT, "'%s': %s", pr.report, je.text);
    json_t *stages = json_object_get(rep, "stages"), *secs = json_array();
    double *p1[4] = {&res->teacher_pass1, &res->student_pass1, &res->baseline_pass1, &res->unfiltered_pass1};
    for (int i = 0; i < 4; i++)
        *p1[i] = num_(json_object_get(json_array_get(stages, (size_t)ev[i]), "summary"), "pass1");
    json_t *rs = json_object_get(json_array_get(stages, (size_t)rj), "summary");
    res->generated = (long long)num_(rs, "samples");
    res->accepted = (long long)num_(rs, "kept");
    res->acceptance = res->generated ? (double)res->accepted / (double)res->generated : 0;
    res->wall_seconds = busy_seconds_(stages);
    for (size_t i = 0; i < json_array_size(stages); i++) {
        json_t *e = json_array_get(stages, i);
        const double s = num_(e, "seconds");
        json_array_append_new(secs, json_pack("{s:I, s:O, s:f}", "stage", (json_int_t)i + 1, "kind",
                                              json_object_get(e, "kind"), "seconds", isfinite(s) ? s : 0.0));
    }
    bars_(res);
    json_t *bars = json_array();
    for (int i = 0; i < KD_DEMO_BARS; i++)
        json_array_append_new(bars, json_pack("{s:s, s:b, s:s}", "bar", res->bars[i].bar, "pass", res->bars[i].pass,
                                              "detail", res->bars[i].detail));
    json_object_set_new(rep, "teacher_pass1", json_real(res->teacher_pass1));
    json_object_set_new(rep, "student_pass1", json_real(res->student_pass1));
    json_object_set_new(rep, "baseline_pass1", json_real(res->baseline_pass1));
    json_object_set_new(rep, "unfiltered_pass1", json_real(res->unfiltered_pass1));
    json_object_set_new(rep, "generated", json_integer(res->generated));
    json_object_set_new(rep, "accepted", json_integer(res->accepted));
    json_object_set_new(rep, "acceptance", json_real(res->acceptance));
    json_object_set_new(rep, "wall_seconds", json_real(res->wall_seconds));
    json_object_set_new(rep, "run_seconds", json_real(pr.seconds));
    json_object_set_new(rep, "cpus", json_integer(cpus_()));
    json_object_set_new(rep, "stage_seconds", secs);
    json_object_set_new(rep, "bars", bars);
    json_object_set_new(rep, "quick", json_boolean(quick));
    int rc = kd_write_json_atomic(pr.report, rep, JSON_INDENT(2));
    json_decref(rep);
    if (rc)
        return rc;
    /* report.md: the demo's section after the runner's */
    char md[1100], *text = NULL;
    size_t len = 0;
    snprintf(md, sizeof md, "%s/report.md", c->output);
    char *old = NULL;
    size_t olen = 0;
    KD_TRY(kd_read_file(md, 1u << 26, &old, &olen));
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        free(old);
        return kd_err(KD_E_NOMEM, "report.md");
    }
    fwrite(old, 1, olen, f);
    free(old);
    fprintf(f, "\n## The demo%s\n\n| model | pass@1 |\n|---|---|\n| teacher (DeepSeek-V3 MoE, cold-started) | %.3f |\n"
               "| student (Qwen2, accepted traces) | %.3f |\n| baseline (untrained student) | %.3f |\n"
               "| unfiltered (Qwen2, every trace) | %.3f |\n\n%lld of %lld samples accepted (%.1f%%); %.1f s of "
               "stages on %d CPUs.\n\n| bar | | detail |\n|---|---|---|\n",
            quick ? " (quick: far fewer steps; the bars are not expected to pass)" : "", res->teacher_pass1,
            res->student_pass1, res->baseline_pass1, res->unfiltered_pass1, res->accepted, res->generated,
            100 * res->acceptance, res->wall_seconds, cpus_());
    for (int i = 0; i < KD_DEMO_BARS; i++)
        fprintf(f, "| %s | %s | %s |\n", res->bars[i].bar, res->bars[i].pass ? "pass" : "FAIL", res->bars[i].detail);
    fclose(f);
    rc = kd_write_file_atomic(md, text, len);
    free(text);
    return rc;
}

void kd_demo_print(const kd_demo_result *r, FILE *out)
{
    fprintf(out, "\ndemo%s: pass@1 on held-out problems: teacher %.3f, student %.3f, untrained baseline %.3f, "
                 "unfiltered student %.3f\n      %lld of %lld teacher samples accepted (%.1f%%); %.1f s of stages\n",
            r->quick ? " (quick)" : "", r->teacher_pass1, r->student_pass1, r->baseline_pass1, r->unfiltered_pass1,
            r->accepted, r->generated, 100 * r->acceptance, r->wall_seconds);
    for (int i = 0; i < KD_DEMO_BARS; i++)
        fprintf(out, "  %s  %-46s %s\n", r->bars[i].pass ? "pass" : "FAIL", r->bars[i].bar, r->bars[i].detail);
    fprintf(out, "run: %d stages, %d ran, %d skipped\nreport: %s\n", r->stages, r->ran, r->skipped, r->report);
}
