/* run.c - the pipeline runner (see run.h). */
#include "pipeline/run.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <yaml.h>

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

/* ---- which stages may run at once --------------------------------------------------------
 * Two stages conflict when a path one of them writes is, or holds, or lies in
 * a path the other names anywhere in its config (every string of the config
 * counts as a path it may read: a curate step's tokenizer, a mix's other
 * dataset). A stage starts once every earlier stage it conflicts with has
 * finished and its threads fit beside the running ones. */

typedef struct {
    char **v;
    size_t n, cap;
} strs_;

static void strs_free_(strs_ *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* p made absolute (from the working folder) and lexically normal: no ".",
 * "..", repeated or trailing "/" */
static int norm_path_(const char *p, strs_ *into)
{
    char cwd[PATH_MAX], buf[2 * PATH_MAX + 2];
    if (p[0] != '/' && !getcwd(cwd, sizeof cwd))
        return kd_err(KD_E_IO, "getcwd: %s", strerror(errno));
    snprintf(buf, sizeof buf, "%s/%s", p[0] == '/' ? "" : cwd, p);
    char *out = malloc(strlen(buf) + 2), *o = out;
    if (!out)
        return kd_err(KD_E_NOMEM, "path");
    for (const char *c = buf; *c;) {
        while (*c == '/')
            c++;
        const char *e = c;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - c);
        if (len == 0 || (len == 1 && c[0] == '.')) {
        } else if (len == 2 && c[0] == '.' && c[1] == '.') {
            while (o > out && *--o != '/')
                ;
        } else {
            *o++ = '/';
            memcpy(o, c, len);
            o += len;
        }
        c = e;
    }
    if (o == out)
        *o++ = '/';
    *o = 0;
    if (into->n == into->cap) {
        size_t cap = into->cap ? 2 * into->cap : 16;
        char **v = realloc(into->v, cap * sizeof *v);
        if (!v) {
            free(out);
            return kd_err(KD_E_NOMEM, "paths");
        }
        into->v = v, into->cap = cap;
    }
    into->v[into->n++] = out;
    return KD_OK;
}

/* one is the other, or a folder above it */
static int overlap_(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), l = la < lb ? la : lb;
    if (strncmp(a, b, l))
        return 0;
    if (la == lb)
        return 1;
    const char *longer = la > lb ? a : b;
    return longer[l] == '/' || l == 1; /* "/" holds everything */
}

/* what stage `kind` writes */
static int stage_writes_(int kind, void *cfg, strs_ *w)
{
    const char *o[2] = {NULL, NULL};
    switch (kind) {
    case S_COLD:
    case S_SFT:
        o[0] = ((kd_sft_config *)cfg)->output.dir;
        break;
    case S_GENERATE: {
        const kd_gen_config *c = cfg;
        o[0] = c->output ? c->output : c->input;
        break;
    }
    case S_REJECT: {
        const kd_reject_config *c = cfg;
        o[0] = c->output ? c->output : c->input;
        break;
    }
    case S_CURATE:
        o[0] = ((kd_curate_script *)cfg)->output;
        break;
    case S_EVAL: {
        const kd_eval_config *c = cfg;
        o[0] = c->output ? c->output : c->input, o[1] = c->report;
        break;
    }
    case S_PROBLEMS:
        o[0] = ((kd_problems_stage *)cfg)->output;
        break;
    case S_INIT:
        o[0] = ((kd_init_config *)cfg)->output;
        break;
    }
    for (int i = 0; i < 2; i++)
        if (o[i] && o[i][0])
            KD_TRY(norm_path_(o[i], w));
    return KD_OK;
}

/* every string the stage's config holds, as a path */
static int stage_names_(const kd_cfg_schema *schema, const void *cfg, strs_ *r)
{
    char *text = NULL;
    size_t len = 0;
    int rc = kd_cfg_text(schema, cfg, 0, &text, &len);
    yaml_parser_t p;
    if (rc == KD_OK && !yaml_parser_initialize(&p))
        rc = kd_err(KD_E_NOMEM, "yaml parser");
    if (rc != KD_OK) {
        free(text);
        return rc;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (int end = 0; !end && rc == KD_OK;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = kd_err(KD_E_INTERNAL, "stage config: %s", p.problem ? p.problem : "unreadable");
            break;
        }
        if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.length && strcmp((char *)ev.data.scalar.value, "~"))
            rc = norm_path_((const char *)ev.data.scalar.value, r);
        end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    free(text);
    return rc;
}

static int conflict_(const strs_ *wa, const strs_ *na, const strs_ *wb, const strs_ *nb)
{
    for (size_t i = 0; i < wa->n; i++)
        for (size_t j = 0; j < nb->n; j++)
            if (overlap_(wa->v[i], nb->v[j]))
                return 1;
    for (size_t i = 0; i < wb->n; i++)
        for (size_t j = 0; j < na->n; j++)
            if (overlap_(wb->v[i], na->v[j]))
                return 1;
    return 0;
}

/* ---- a stage in its own process ------------------------------------------------------------ */

typedef struct {
    pid_t pid;    /* 0: not started, -1: finished or skipped */
    int threads;  /* what it takes of the runner's */
    int cuda;     /* runtime.device cuda: the GPU, one such stage at a time */
    double t0, start; /* kd_now(), and the wall clock (the report's "start") */
    char hash[20]; /* its config's, as it started (prepare_ may set keys after) */
} job_;

/* The child: run the stage on `threads` threads, write {rc, message, summary}
 * to `result`, exit. It dies with the runner (a killed runner leaves no stage
 * running behind it, as when the stages ran in the runner's process). */
static void child_(int kind, void *cfg, kd_runtime_config *rt, int threads, int tag, size_t i, pid_t parent,
                   const char *result)
{
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    char t[64];
    if (tag) { /* other stages may print beside this one */
        snprintf(t, sizeof t, "%zu %s", i + 1, kd_pipeline_kind_name(kind));
        kd_log_set_tag(t);
    }
    int rc = KD_OK;
    if (rt) {
        if (rt->device != KD_DEVICE_CUDA)
            rt->device = KD_DEVICE_CPU;
        rt->threads = threads;
        unsetenv("OMP_NUM_THREADS"); /* the runner's; this stage's count is set anew */
        rc = kd_runtime_apply(rt);
    }
    json_t *sum = NULL;
    if (rc == KD_OK)
        rc = run_stage_(kind, cfg, &sum);
    json_t *r = json_pack("{s:i, s:s, s:o?}", "rc", rc, "message", rc ? kd_strerror(rc) : "", "summary", sum);
    int w = r ? kd_write_json_atomic(result, r, JSON_COMPACT) : KD_E_NOMEM;
    json_decref(r);
    fflush(NULL);
    _exit(rc == KD_OK && w == KD_OK ? 0 : 1);
}

/* A finished child's outcome: its status, its message into msg, its summary. */
static int reap_(pid_t pid, int status, const char *result, char *msg, size_t cap, json_t **sum)
{
    *sum = NULL;
    json_t *r = json_load_file(result, 0, NULL);
    unlink(result);
    if (r && json_is_integer(json_object_get(r, "rc"))) {
        int rc = (int)json_integer_value(json_object_get(r, "rc"));
        snprintf(msg, cap, "%s", json_string_value(json_object_get(r, "message")) ?: "");
        json_t *s = json_object_get(r, "summary");
        if (s && !json_is_null(s))
            *sum = json_incref(s);
        json_decref(r);
        return rc;
    }
    json_decref(r);
    if (WIFSIGNALED(status))
        snprintf(msg, cap, "process %d died of signal %d (%s)", (int)pid, WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(msg, cap, "process %d exited with %d without a result", (int)pid,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return KD_E_INTERNAL;
}

/* seconds since the epoch */
static double epoch_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cores_(const kd_pipeline_config *c)
{
    if (c->runtime.threads > 0)
        return (int)c->runtime.threads;
    const char *e = getenv("OMP_NUM_THREADS");
    long n = e ? strtol(e, NULL, 10) : 0;
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
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
    const size_t n = c->stages.n;
    const int cores = cores_(c);
    char path[1024], state_path[1024];
    snprintf(path, sizeof path, "%s/stages", c->output);
    KD_TRY(kd_mkdirs(path));
    snprintf(state_path, sizeof state_path, "%s/pipeline.json", c->output);
    /* what each stage writes and names, and how many threads it takes */
    strs_ *wr = calloc(n, sizeof *wr), *nm = calloc(n, sizeof *nm);
    job_ *jobs = calloc(n, sizeof *jobs);
    int rc = wr && nm && jobs ? KD_OK : kd_err(KD_E_NOMEM, "pipeline stages");
    for (size_t i = 0; i < n && rc == KD_OK; i++) {
        const kd_cfg_step *s = &c->stages.items[i];
        const kd_cfg_schema *sch = stage_kinds_[s->kind].schema;
        rc = stage_writes_(s->kind, s->cfg, &wr[i]);
        if (rc == KD_OK)
            rc = stage_names_(sch, s->cfg, &nm[i]);
        const kd_runtime_config *rt = kd_cfg_section(sch, s->cfg, "runtime");
        jobs[i].threads = rt && rt->threads > 0 && rt->threads < cores ? (int)rt->threads : cores;
        jobs[i].cuda = rt && rt->device == KD_DEVICE_CUDA;
        if (rc == KD_OK && jobs[i].cuda && s->kind != S_GENERATE && s->kind != S_SFT && s->kind != S_COLD)
            rc = kd_err(KD_E_UNSUPPORTED, "run: stage %zu (%s): runtime.device cuda is for generate, sft and "
                        "cold_start stages; this one runs on the CPU (cpu or auto)", i + 1,
                        stage_kinds_[s->kind].name);
    }
    json_t *st = rc == KD_OK ? load_state_(state_path) : NULL;
    json_t *prev = st ? json_deep_copy(st) : NULL;
    /* a folder with history: a stage the state no longer lists (an interrupted run dropped it)
     * may still have outputs from before, stale once an earlier stage ran again */
    const int had_state = json_array_size(json_object_get(st, "stages")) > 0;
    if (rc == KD_OK && (!st || !prev))
        rc = kd_err(KD_E_NOMEM, "pipeline state");
    const double t0 = kd_now();
    int running = 0, busy = 0, live = 0;
    size_t next = 0;
    char failed_msg[1200] = "";
    const pid_t self = getpid();
    res->stages = (int)n;
    json_t *a = json_object_get(st, "stages");
    for (;;) {
        /* start every stage that can start, in order */
        while (rc == KD_OK && next < n) {
            const size_t i = next;
            const kd_cfg_step *s = &c->stages.items[i];
            const kd_cfg_step_kind *k = &stage_kinds_[s->kind];
            char hash[20];
            snprintf(hash, sizeof hash, "%016" PRIx64, kd_cfg_hash(k->schema, s->cfg));
            json_t *e = state_entry_(prev, i); /* as the previous run left it: the state drops later entries
                                                 as stages rerun, but a later stage that ran before must be redone */
            const int done = e && json_is_true(json_object_get(e, "done")) &&
                             !strcmp(k->name, json_string_value(json_object_get(e, "kind")) ?: "") &&
                             !strcmp(hash, json_string_value(json_object_get(e, "hash")) ?: "");
            const int earlier_ran = running; /* a stage before this one ran in this invocation */
            const int forced = i >= from;
            if (done && !running && !forced) {
                kd_info("run: stage %zu (%s) finished before with the same config: skipped", i + 1, k->name);
                res->skipped++;
                jobs[i].pid = -1;
                next++;
                continue;
            }
            /* wait for the earlier stages it depends on, and for threads */
            int wait = live && busy + jobs[i].threads > cores;
            for (size_t j = 0; j < i && !wait; j++) /* a path in common, or both on the GPU */
                wait = jobs[j].pid > 0 &&
                       (conflict_(&wr[j], &nm[j], &wr[i], &nm[i]) || (jobs[i].cuda && jobs[j].cuda));
            if (wait)
                break;
            /* a resume: this stage was started with this config and killed, and
             * nothing before it ran again; anything else that reruns it is a redo */
            const int resume = e && !done && !running && !forced && !strcmp(hash, json_string_value(json_object_get(e, "hash")) ?: "");
            running = 1;
            /* the stage's effective config, recorded before it runs */
            snprintf(path, sizeof path, "%s/stages/%02zu-%s.yaml", c->output, i + 1, k->name);
            FILE *f = fopen(path, "w");
            if (f) {
                kd_cfg_print(k->schema, s->cfg, f, 0);
                fclose(f);
            }
            kd_info("run: stage %zu of %zu: %s (config %s%s)", i + 1, n, k->name, path,
                    jobs[i].threads < cores ? ", beside the others" : "");
            /* the state forgets this stage and the later ones until they finish again */
            while (json_array_size(a) > i)
                json_array_remove(a, json_array_size(a) - 1);
            json_array_append_new(a, json_pack("{s:s, s:s, s:b}", "kind", k->name, "hash", hash, "done", 0));
            (void)kd_write_json_atomic(state_path, st, JSON_INDENT(2)); /* best effort; the final write reports */
            kd_runtime_config *rt = kd_cfg_section(k->schema, s->cfg, "runtime");
            if (rc == KD_OK)
                rc = prepare_(s->kind, s->cfg, !resume && (e != NULL || (had_state && earlier_ran)));
            if (rc != KD_OK) {
                const char *m = kd_strerror(rc), *colon = strstr(m, ": ");
                snprintf(failed_msg, sizeof failed_msg, "run: stage %zu (%s): %s", i + 1, k->name,
                         colon ? colon + 2 : m);
                jobs[i].pid = -1;
                break;
            }
            snprintf(path, sizeof path, "%s/stages/.%02zu-%s.result.json", c->output, i + 1, k->name);
            fflush(NULL);
            pid_t pid = fork();
            if (pid == 0)
                child_(s->kind, s->cfg, rt, jobs[i].threads, jobs[i].threads < cores, i, self, path);
            if (pid < 0) {
                rc = kd_err(KD_E_IO, "run: stage %zu (%s): fork: %s", i + 1, k->name, strerror(errno));
                snprintf(failed_msg, sizeof failed_msg, "%s", kd_strerror(rc));
                jobs[i].pid = -1;
                break;
            }
            jobs[i].pid = pid, jobs[i].t0 = kd_now(), jobs[i].start = epoch_();
            memcpy(jobs[i].hash, hash, sizeof hash);
            busy += jobs[i].threads, live++;
            next++;
        }
        if (!live)
            break;
        /* one stage ends */
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            rc = rc ? rc : kd_err(KD_E_INTERNAL, "run: waitpid: %s", strerror(errno));
            break;
        }
        size_t i = 0;
        while (i < n && jobs[i].pid != pid)
            i++;
        if (i == n)
            continue; /* not a stage (none of ours should exist) */
        const kd_cfg_step_kind *k = &stage_kinds_[c->stages.items[i].kind];
        const double secs = kd_now() - jobs[i].t0;
        jobs[i].pid = -1, busy -= jobs[i].threads, live--;
        char msg[1024];
        json_t *sum = NULL;
        snprintf(path, sizeof path, "%s/stages/.%02zu-%s.result.json", c->output, i + 1, k->name);
        int src = reap_(pid, status, path, msg, sizeof msg, &sum);
        json_array_set_new(a, i, json_pack("{s:s, s:s, s:b, s:f, s:f, s:f, s:o?}", "kind", k->name, "hash",
                                           jobs[i].hash, "done", src == KD_OK, "seconds", secs, "start",
                                           jobs[i].start, "end", jobs[i].start + secs, "summary", sum));
        int w = kd_write_json_atomic(state_path, st, JSON_INDENT(2));
        if (src != KD_OK) {
            const char *colon = strstr(msg, ": ");
            kd_error("run: stage %zu (%s) failed: %s", i + 1, k->name, msg);
            if (!failed_msg[0])
                snprintf(failed_msg, sizeof failed_msg, "run: stage %zu (%s): %s", i + 1, k->name,
                         colon ? colon + 2 : msg);
            rc = rc ? rc : src;
        } else if (w != KD_OK) {
            rc = rc ? rc : w;
        } else {
            res->ran++;
            kd_info("run: stage %zu (%s) done in %.1f s", i + 1, k->name, secs);
        }
        if (rc != KD_OK && live)
            kd_info("run: waiting for the %d stage%s still running", live, live > 1 ? "s" : "");
    }
    res->seconds = kd_now() - t0;
    int w = st ? write_report_(c, st, res->seconds, res) : KD_OK;
    json_decref(st);
    json_decref(prev);
    for (size_t i = 0; wr && nm && i < n; i++)
        strs_free_(&wr[i]), strs_free_(&nm[i]);
    free(wr);
    free(nm);
    free(jobs);
    if (rc && failed_msg[0])
        return kd_err(rc, "%s", failed_msg);
    return rc ? rc : w;
}
