/* run.c - the pipeline runner (see run.h). */
#include "pipeline/run.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"
#include "data/curate.h"
#include "pipeline/eval.h"
#include "pipeline/plots.h"
#include "pipeline/setup.h"
#include "rejection/reject.h"
#include "sft/sft.h"
#include "teacher/generate.h"

enum { S_COLD, S_GENERATE, S_REJECT, S_CURATE, S_SFT, S_EVAL, S_PROBLEMS, S_INIT };

static const kd_cfg_step_kind stage_kinds_[] = {
    {"cold_start", &kd_sft_schema}, {"generate", &kd_gen_schema}, {"reject", &kd_reject_schema},
    {"curate", &kd_curate_script_schema}, {"sft", &kd_sft_schema}, {"eval", &kd_eval_schema},
    {"problems", &kd_problems_schema}, {"init", &kd_init_schema}, {NULL, NULL},
};

static const kd_cfg_field pipeline_fields_[] = {
    KD_CFG_STRING(kd_pipeline_config, output, NULL, "the runner's folder: state, stage configs, report"),
    KD_CFG_STRING(kd_pipeline_config, from, NULL, "rerun from this stage (1-based N or a kind) and after; ~ = resume"),
    KD_CFG_STEPS(kd_pipeline_config, stages, stage_kinds_,
                 "the stages in order: problems, init, cold_start, generate, reject, curate, sft, eval"),
    KD_CFG_SECTION(kd_pipeline_config, runtime, kd_runtime_fields, "seed, device, threads, logging"),
    KD_CFG_END};

const kd_cfg_schema kd_pipeline_schema = {"run", pipeline_fields_, sizeof(kd_pipeline_config)};

const char *kd_pipeline_kind_name(int kind) { return stage_kinds_[kind].name; }

/* A JSON number, or null for NaN and infinities (JSON has none). */
static json_t *num_(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* ---- one stage ----------------------------------------------------------------------- */

/* Run stage `kind` with its config; its summary figures go into *sum. */
static int run_stage_(int kind, void *cfg, json_t **sum)
{
    int rc;
    *sum = NULL;
    switch (kind) {
    case S_COLD:
    case S_SFT: {
        kd_sft_result r;
        if ((rc = kd_sft_run(cfg, &r)) == KD_OK)
            *sum = json_pack("{s:I, s:I, s:I, s:o, s:o}", "steps", (json_int_t)r.steps, "examples",
                             (json_int_t)r.examples, "tokens", (json_int_t)r.tokens, "last_loss", num_(r.last_loss),
                             "last_eval_loss", num_(r.last_eval_loss));
        return rc;
    }
    case S_GENERATE: {
        kd_gen_result r;
        if ((rc = kd_generate_run(cfg, &r)) == KD_OK)
            *sum = json_pack("{s:I, s:I, s:I, s:I, s:f, s:f}", "units", (json_int_t)r.units, "generated",
                             (json_int_t)r.generated, "existing", (json_int_t)r.existing, "tokens",
                             (json_int_t)r.tokens, "tokens_per_second", r.tokens_per_second, "mean_len",
                             r.mean_len);
        return rc;
    }
    case S_REJECT: {
        kd_reject_result r;
        if ((rc = kd_reject_run(cfg, &r)) != KD_OK)
            return rc;
        kd_reject_print(&r, stdout);
        json_t *by = json_object();
        for (int i = 0; i < r.nreason; i++)
            json_object_set_new(by, r.by_reason[i].name, json_integer(r.by_reason[i].samples));
        *sum = json_pack("{s:I, s:I, s:I, s:I, s:o}", "prompts", (json_int_t)r.prompts, "samples",
                         (json_int_t)r.samples, "correct", (json_int_t)r.correct, "kept", (json_int_t)r.kept,
                         "by_reason", by);
        return KD_OK;
    }
    case S_CURATE: {
        const kd_curate_script *s = cfg;
        kd_curate_report *reps = calloc(s->steps.n ? s->steps.n : 1, sizeof *reps);
        kd_curate_run run = {.progress = 1};
        rc = reps ? kd_curate_script_run(s, &run, reps) : kd_err(KD_E_NOMEM, "curate reports");
        if (rc == KD_OK) {
            json_t *steps = json_array();
            for (size_t i = 0; i < s->steps.n; i++)
                json_array_append_new(steps, json_pack("{s:s, s:I, s:I}", "op", reps[i].op, "kept",
                                                       (json_int_t)reps[i].kept, "dropped",
                                                       (json_int_t)reps[i].dropped));
            *sum = json_pack("{s:o}", "steps", steps);
        }
        free(reps);
        return rc;
    }
    case S_EVAL: {
        kd_eval_result r;
        if ((rc = kd_eval_run(cfg, &r)) != KD_OK)
            return rc;
        kd_eval_print(&r, stdout);
        char label[256];
        *sum = json_pack("{s:s, s:f, s:f, s:f, s:I, s:s}", "name", kd_eval_label(cfg, label, sizeof label), "pass1",
                         r.pass1, "cons_k", r.cons_k, "pass_k", r.pass_k, "prompts", (json_int_t)r.all.prompts,
                         "report", r.report);
        return KD_OK;
    }
    case S_PROBLEMS: {
        const kd_problems_stage *c = cfg;
        if ((rc = kd_problems_stage_run(c)) == KD_OK)
            *sum = json_pack("{s:I, s:I, s:I}", "train", (json_int_t)c->train, "gen", (json_int_t)c->gen,
                             "heldout", (json_int_t)c->heldout);
        return rc;
    }
    case S_INIT: {
        const kd_init_config *c = cfg;
        if (!c->config || !c->output)
            return kd_err(KD_E_CONFIG, "init: 'config' and 'output' are required");
        if ((rc = kd_init_model(c->config, c->output, c->tokenizer, (uint64_t)c->seed, c->std, KD_F32)) == KD_OK)
            *sum = json_pack("{s:s}", "model", c->output);
        return rc;
    }
    }
    return kd_err(KD_E_INTERNAL, "stage kind %d", kind);
}

/* Before stage `kind` runs. A redo (it ran before, or an earlier stage ran
 * again, or `from` asks) clears the outputs the stage owns, so that it starts
 * over from its new inputs: the sft output folder, a generate or eval output
 * dataset that is not its input, the curate output folder. A resume (the
 * same stage was killed before it finished) keeps them, and sft resumes from
 * its newest checkpoint. Reject needs neither: it recomputes its verdicts. */
static int prepare_(int kind, void *cfg, int redo)
{
    const char *rm = NULL;
    switch (kind) {
    case S_COLD:
    case S_SFT: {
        kd_sft_config *c = cfg;
        if (redo)
            rm = c->output.dir;
        else
            c->output.resume = 1;
        break;
    }
    case S_GENERATE: {
        const kd_gen_config *c = cfg;
        if (redo && c->output && c->input && strcmp(c->output, c->input))
            rm = c->output;
        break;
    }
    case S_EVAL: {
        const kd_eval_config *c = cfg;
        if (redo && c->model && c->output && c->input && strcmp(c->output, c->input))
            rm = c->output;
        break;
    }
    case S_CURATE: {
        const kd_curate_script *c = cfg;
        if (redo)
            rm = c->output;
        break;
    }
    case S_PROBLEMS: /* the import refuses other problems in the same folder */
        if (redo)
            rm = ((const kd_problems_stage *)cfg)->output;
        break;
    case S_INIT: /* always written anew: the export wants an empty folder */
        rm = ((const kd_init_config *)cfg)->output;
        break;
    }
    if (!rm)
        return KD_OK;
    kd_info("run: redoing the stage: removing its output '%s'", rm);
    return kd_rmtree(rm);
}

/* ---- the state and the report --------------------------------------------------------- */

static json_t *load_state_(const char *path)
{
    json_t *st = json_load_file(path, 0, NULL);
    if (!json_is_object(st) || !json_is_array(json_object_get(st, "stages"))) {
        json_decref(st);
        st = json_pack("{s:[]}", "stages");
    }
    return st;
}

/* The entry of stage i in the state, or NULL. */
static json_t *state_entry_(json_t *st, size_t i)
{
    json_t *a = json_object_get(st, "stages");
    return i < json_array_size(a) ? json_array_get(a, i) : NULL;
}

static int write_report_(const kd_pipeline_config *c, json_t *st, double seconds, kd_pipeline_result *res)
{
    char path[1024];
    json_object_set_new(st, "wall_seconds", json_real(seconds));
    json_t *plots = NULL;
    KD_TRY(kd_pipeline_plots(c, st, &plots));
    json_object_set_new(st, "plots", plots);
    snprintf(path, sizeof path, "%s/report.json", c->output);
    KD_TRY(kd_write_json_atomic(path, st, JSON_INDENT(2)));
    snprintf(res->report, sizeof res->report, "%s", path);
    char *md = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&md, &len);
    if (!f)
        return kd_err(KD_E_NOMEM, "report.md");
    fprintf(f, "# Pipeline report\n\n%zu stages, %.1f s in this run.\n\n| # | stage | status | seconds | summary |\n"
               "|---|---|---|---|---|\n",
            c->stages.n, seconds);
    json_t *a = json_object_get(st, "stages");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        char *sum = json_dumps(json_object_get(e, "summary"), JSON_COMPACT);
        fprintf(f, "| %zu | %s | %s | %.1f | `%s` |\n", i + 1, json_string_value(json_object_get(e, "kind")),
                json_is_true(json_object_get(e, "done")) ? "done" : "not done",
                json_real_value(json_object_get(e, "seconds")), sum ? sum : "");
        free(sum);
    }
    for (size_t i = 0; i < json_array_size(plots); i++)
        fprintf(f, "%s![%s](%s)\n", i ? "" : "\n", json_string_value(json_array_get(plots, i)),
                json_string_value(json_array_get(plots, i)));
    fclose(f);
    snprintf(path, sizeof path, "%s/report.md", c->output);
    int rc = kd_write_file_atomic(path, md, len);
    free(md);
    return rc;
}

/* ---- the run -------------------------------------------------------------------------- */

int kd_pipeline_run(const kd_pipeline_config *c, kd_pipeline_result *res)
{
    memset(res, 0, sizeof *res);
    if (!c->output)
        return kd_err(KD_E_CONFIG, "run: 'output' is required");
    if (!c->stages.n)
        return kd_err(KD_E_CONFIG, "run: no stages");
    size_t from = c->stages.n; /* the first stage forced to run */
    if (c->from) {
        char *end;
        long n = strtol(c->from, &end, 10);
        if (!*end && n >= 1 && (size_t)n <= c->stages.n) {
            from = (size_t)n - 1;
        } else {
            for (size_t i = 0; i < c->stages.n && from == c->stages.n; i++)
                if (!strcmp(stage_kinds_[c->stages.items[i].kind].name, c->from))
                    from = i;
            if (from == c->stages.n)
                return kd_err(KD_E_CONFIG, "run: from '%s' is neither a stage number (1..%zu) nor a stage of the "
                              "pipeline", c->from, c->stages.n);
        }
    }
    char path[1024], state_path[1024];
    snprintf(path, sizeof path, "%s/stages", c->output);
    KD_TRY(kd_mkdirs(path));
    snprintf(state_path, sizeof state_path, "%s/pipeline.json", c->output);
    json_t *st = load_state_(state_path);
    json_t *prev = st ? json_deep_copy(st) : NULL;
    /* a folder with history: a stage the state no longer lists (an interrupted run dropped it)
     * may still have outputs from before, stale once an earlier stage ran again */
    const int had_state = json_array_size(json_object_get(st, "stages")) > 0;
    if (st && !prev) {
        json_decref(st);
        st = NULL;
    }
    if (!st)
        return kd_err(KD_E_NOMEM, "pipeline state");
    const double t0 = kd_now();
    int rc = KD_OK, running = 0;
    char failed_msg[1200] = "";
    res->stages = (int)c->stages.n;
    for (size_t i = 0; i < c->stages.n && rc == KD_OK; i++) {
        const kd_cfg_step *s = &c->stages.items[i];
        const kd_cfg_step_kind *k = &stage_kinds_[s->kind];
        char hash[20];
        snprintf(hash, sizeof hash, "%016" PRIx64, kd_cfg_hash(k->schema, s->cfg));
        json_t *e = state_entry_(prev, i); /* as the previous run left it: the state drops later entries as
                                             stages rerun, but a later stage that ran before must be redone */
        const int done = e && json_is_true(json_object_get(e, "done")) &&
                         !strcmp(k->name, json_string_value(json_object_get(e, "kind")) ?: "") &&
                         !strcmp(hash, json_string_value(json_object_get(e, "hash")) ?: "");
        const int earlier_ran = running; /* a stage before this one ran in this invocation */
        if (i >= from)
            running = 1;
        if (done && !running) {
            kd_info("run: stage %zu (%s) finished before with the same config: skipped", i + 1, k->name);
            res->skipped++;
            continue;
        }
        /* a resume: this stage was started with this config and killed, and
         * nothing before it ran again; anything else that reruns it is a redo */
        const int resume = e && !done && !running && !strcmp(hash, json_string_value(json_object_get(e, "hash")) ?: "");
        running = 1;
        /* the stage's effective config, recorded before it runs */
        snprintf(path, sizeof path, "%s/stages/%02zu-%s.yaml", c->output, i + 1, k->name);
        FILE *f = fopen(path, "w");
        if (f) {
            kd_cfg_print(k->schema, s->cfg, f, 0);
            fclose(f);
        }
        kd_info("run: stage %zu of %zu: %s (config %s)", i + 1, c->stages.n, k->name, path);
        /* the state forgets this stage and the later ones until they finish again */
        json_t *a = json_object_get(st, "stages");
        while (json_array_size(a) > i)
            json_array_remove(a, json_array_size(a) - 1);
        json_array_append_new(a, json_pack("{s:s, s:s, s:b}", "kind", k->name, "hash", hash, "done", 0));
        (void)kd_write_json_atomic(state_path, st, JSON_INDENT(2)); /* best effort; the final write reports */
        json_array_remove(a, i);
        json_t *sum = NULL;
        const double ts = kd_now();
        kd_runtime_config *rt = kd_cfg_section(k->schema, s->cfg, "runtime");
        if (rt && rt->device == KD_DEVICE_CUDA)
            rc = kd_err(KD_E_UNSUPPORTED, "run: stage %zu (%s): the CPU reference backend only for now", i + 1,
                        k->name);
        if (rc == KD_OK && rt) {
            rt->device = KD_DEVICE_CPU;
            rc = kd_runtime_apply(rt);
        }
        if (rc == KD_OK)
            rc = prepare_(s->kind, s->cfg, !resume && (e != NULL || (had_state && earlier_ran)));
        if (rc == KD_OK)
            rc = run_stage_(s->kind, s->cfg, &sum);
        const double secs = kd_now() - ts;
        if (rc != KD_OK) { /* keep the stage's message: the state and report writes below may record others */
            const char *m = kd_strerror(rc), *colon = strstr(m, ": ");
            snprintf(failed_msg, sizeof failed_msg, "run: stage %zu (%s): %s", i + 1, k->name, colon ? colon + 2 : m);
        }
        json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:f, s:o?}", "kind", k->name, "hash", hash, "done",
                                           rc == KD_OK, "seconds", secs, "summary", sum));
        int w = kd_write_json_atomic(state_path, st, JSON_INDENT(2));
        if (rc == KD_OK)
            rc = w;
        if (rc == KD_OK) {
            res->ran++;
            kd_info("run: stage %zu (%s) done in %.1f s", i + 1, k->name, secs);
        }
    }
    res->seconds = kd_now() - t0;
    int w = write_report_(c, st, res->seconds, res);
    json_decref(st);
    json_decref(prev);
    if (rc && failed_msg[0])
        return kd_err(rc, "%s", failed_msg);
    return rc ? rc : w;
}
