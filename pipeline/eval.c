/* eval.c - R1's evaluation protocol over the generate and reject stages
 * (see eval.h). */
#include "pipeline/eval.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"
#include "data/store.h"

static const kd_cfg_field eval_fields_[] = {
    KD_CFG_STRING(kd_eval_config, name, NULL, "a label for reports (teacher, student...); ~ = the model folder's name"),
    KD_CFG_STRING(kd_eval_config, model, NULL, "the model to sample; ~ = score the generations already in input"),
    KD_CFG_STRING(kd_eval_config, tokenizer, NULL, "folder with tokenizer.json; ~ = the model folder"),
    KD_CFG_STRING(kd_eval_config, input, NULL, "dataset with the held-out prompts"),
    KD_CFG_STRING(kd_eval_config, output, NULL, "dataset for the samples and verdicts; ~ = input"),
    KD_CFG_STRING(kd_eval_config, report, NULL, "where eval.json goes; ~ = OUTPUT/eval.json"),
    KD_CFG_INT(kd_eval_config, k, "4", 1, 4096, "samples per prompt"),
    KD_CFG_INT(kd_eval_config, limit, "0", 0, 1e12, "prompts to use, in id order; 0 = all"),
    {"template", KD_CFG_T_STRING, offsetof(kd_eval_config, template_name), "deepseek_r1", 0, 0, NULL, NULL,
     "chat template (chatml, qwen3, llama3, llama3_1, deepseek_v3, deepseek_r1)", NULL},
    KD_CFG_STRING(kd_eval_config, system, NULL, "system prompt; ~ = none"),
    KD_CFG_STRING(kd_eval_config, instruction, NULL, "appended to a plain prompt's text; ~ = none"),
    KD_CFG_BOOL(kd_eval_config, force_think, "true", "start the assistant turn with <think>\\n"),
    KD_CFG_INT(kd_eval_config, batch, "16", 1, 4096, "samples decoded together"),
    KD_CFG_BOOL(kd_eval_config, progress, "true", "draw progress bars"),
    KD_CFG_SECTION(kd_eval_config, sampling, kd_gen_sampling_fields, "sampling (R1: temperature 0.6, top-p 0.95)"),
    KD_CFG_SECTION(kd_eval_config, math, kd_reject_math_fields, "the math answer check"),
    KD_CFG_SECTION(kd_eval_config, code, kd_reject_code_fields, "the code check (sandboxed)"),
    KD_CFG_SECTION(kd_eval_config, text, kd_reject_text_fields, "format, language, readability, degeneration"),
    KD_CFG_SECTION(kd_eval_config, runtime, kd_runtime_fields, "seed, device, threads, logging"),
    KD_CFG_END};

const kd_cfg_schema kd_eval_schema = {"eval", eval_fields_, sizeof(kd_eval_config)};

const char *kd_eval_label(const kd_eval_config *c, char *buf, size_t cap)
{
    if (c->name) {
        snprintf(buf, cap, "%s", c->name);
        return buf;
    }
    const char *m = c->model ? c->model : c->input ? c->input : "";
    size_t n = strlen(m);
    while (n > 1 && m[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && m[b - 1] != '/')
        b--;
    if (n - b == 5 && !strncmp(m + b, "final", 5) && b > 1) { /* runs/student/final: "student" */
        size_t e = b - 1;
        while (e > 1 && m[e - 1] == '/')
            e--;
        size_t s = e;
        while (s > 0 && m[s - 1] != '/')
            s--;
        b = s;
        n = e;
    }
    snprintf(buf, cap, "%.*s", (int)(n - b), m + b);
    return buf;
}

/* ---- the figures ------------------------------------------------------------------ */

typedef struct vote_ {
    char *answer;
    int count, correct;
} vote_;

static kd_eval_row *row_(kd_eval_result *res, const char *name)
{
    for (int i = 0; i < res->nsource; i++)
        if (!strcmp(res->by_source[i].name, name))
            return &res->by_source[i];
    if (res->nsource == KD_EVAL_MAX_SOURCES) {
        kd_eval_row *r = &res->by_source[KD_EVAL_MAX_SOURCES - 1];
        snprintf(r->name, sizeof r->name, "(other)");
        return r;
    }
    kd_eval_row *r = &res->by_source[res->nsource++];
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

static void add_prompt_(kd_eval_row *r, int64_t n, int64_t correct, int cons)
{
    r->prompts++;
    r->samples += n;
    r->correct += correct;
    r->pass1_sum += n ? (double)correct / (double)n : 0.0;
    r->cons += cons;
    r->passk += correct > 0;
}

/* The source of prompt `id`: its "source" field (prompt extra, else its
 * first generation's). Returns a malloc'd string. */
static char *source_of_(kd_store_read *r, uint64_t id)
{
    kd_record rec;
    const char *src = NULL;
    json_t *e = NULL;
    if (kd_store_get(r, KD_DB_PROMPTS, id, 0, &rec) == KD_OK && rec.extra.len)
        e = json_loadb(rec.extra.ptr, rec.extra.len, 0, NULL);
    src = json_string_value(json_object_get(e, "source"));
    if (!src) {
        json_decref(e);
        e = NULL;
        if (kd_store_get(r, KD_DB_GENERATIONS, id, 0, &rec) == KD_OK && rec.extra.len)
            e = json_loadb(rec.extra.ptr, rec.extra.len, 0, NULL);
        src = json_string_value(json_object_get(e, "source"));
    }
    kd_err_clear();
    char *out = strdup(src ? src : "(none)");
    json_decref(e);
    return out;
}

/* Score one prompt's samples: votes[0..nv) and the correct count. */
static void flush_prompt_(kd_store_read *r, kd_eval_result *res, uint64_t id, vote_ *votes, int nv, int64_t n,
                          int64_t correct)
{
    int best = -1;
    for (int i = 0; i < nv; i++)
        if (best < 0 || votes[i].count > votes[best].count)
            best = i;
    const int cons = best >= 0 && votes[best].correct;
    add_prompt_(&res->all, n, correct, cons);
    char *src = source_of_(r, id);
    add_prompt_(row_(res, src ? src : "(none)"), n, correct, cons);
    free(src);
}

static int score_(kd_store *s, kd_eval_result *res)
{
    kd_store_read *r = NULL;
    kd_store_cursor *cur = NULL;
    KD_TRY(kd_store_read_begin(s, &r));
    int rc = kd_store_cursor_open(r, KD_DB_VERDICTS, &cur);
    vote_ *votes = NULL;
    int nv = 0, cap = 0, got = 0;
    int64_t n = 0, correct = 0;
    uint64_t id = UINT64_MAX;
    kd_record v;
    while (rc == KD_OK && (got = kd_store_cursor_next(cur, &v)) == 1) {
        if (v.id != id) {
            if (id != UINT64_MAX)
                flush_prompt_(r, res, id, votes, nv, n, correct);
            for (int i = 0; i < nv; i++)
                free(votes[i].answer);
            nv = 0;
            n = correct = 0;
            id = v.id;
        }
        json_t *e = v.extra.len ? json_loadb(v.extra.ptr, v.extra.len, 0, NULL) : NULL;
        const int ok = json_is_true(json_object_get(e, "correct"));
        json_decref(e);
        n++;
        correct += ok;
        if (!v.answer.len)
            continue; /* no answer: no vote */
        int i = 0;
        for (; i < nv; i++)
            if (strlen(votes[i].answer) == v.answer.len && !memcmp(votes[i].answer, v.answer.ptr, v.answer.len))
                break;
        if (i == nv) {
            if (nv == cap) {
                cap = cap ? 2 * cap : 8;
                vote_ *nw = realloc(votes, (size_t)cap * sizeof *nw);
                if (!nw) {
                    rc = kd_err(KD_E_NOMEM, "votes");
                    break;
                }
                votes = nw;
            }
            votes[nv].answer = malloc(v.answer.len + 1);
            if (!votes[nv].answer) {
                rc = kd_err(KD_E_NOMEM, "votes");
                break;
            }
            memcpy(votes[nv].answer, v.answer.ptr, v.answer.len);
            votes[nv].answer[v.answer.len] = 0;
            votes[nv].count = 0;
            votes[nv].correct = ok;
            nv++;
        }
        votes[i].count++;
    }
    if (rc == KD_OK && got < 0)
        rc = got;
    if (rc == KD_OK && id != UINT64_MAX)
        flush_prompt_(r, res, id, votes, nv, n, correct);
    for (int i = 0; i < nv; i++)
        free(votes[i].answer);
    free(votes);
    kd_store_cursor_close(cur);
    kd_store_read_end(r);
    return rc;
}

static json_t *row_json_(const kd_eval_row *r)
{
    const double p = r->prompts ? (double)r->prompts : 1.0;
    return json_pack("{s:I, s:I, s:I, s:f, s:f, s:f}", "prompts", (json_int_t)r->prompts, "samples",
                     (json_int_t)r->samples, "correct", (json_int_t)r->correct, "pass1", r->pass1_sum / p,
                     "cons_k", (double)r->cons / p, "pass_k", (double)r->passk / p);
}

/* ---- the run ------------------------------------------------------------------------ */

int kd_eval_run(const kd_eval_config *c, kd_eval_result *res)
{
    memset(res, 0, sizeof *res);
    snprintf(res->all.name, sizeof res->all.name, "all");
    if (!c->input)
        return kd_err(KD_E_CONFIG, "eval: 'input' is required");
    const double t0 = kd_now();
    const char *out = c->output && c->model ? c->output : c->input;
    int rc = KD_OK;
    /* 1. samples: the generate stage, from its defaults plus ours */
    if (c->model) {
        kd_gen_config g = {0}, defaults;
        KD_TRY(kd_cfg_build(&kd_gen_schema, &g, NULL, NULL, 0));
        defaults = g; /* what the build allocated; restored before release */
        g.model = c->model;
        g.tokenizer = c->tokenizer;
        g.input = c->input;
        g.output = (char *)out;
        g.samples = c->k;
        g.limit = c->limit;
        g.template_name = c->template_name;
        g.system = c->system;
        g.instruction = c->instruction;
        g.force_think = c->force_think;
        g.batch = c->batch;
        g.progress = c->progress;
        g.sampling = c->sampling;
        g.runtime = c->runtime;
        kd_gen_result gr;
        rc = kd_generate_run(&g, &gr);
        g = defaults;
        kd_cfg_release(&kd_gen_schema, &g);
        if (rc)
            return rc;
        kd_info("eval: %lld samples generated (%lld already there) in %.1f s", (long long)gr.generated,
                (long long)gr.existing, gr.seconds);
    }
    res->generate_seconds = kd_now() - t0;
    /* 2. verdicts: the reject stage, every correct sample kept */
    {
        kd_reject_config r = {0}, defaults;
        KD_TRY(kd_cfg_build(&kd_reject_schema, &r, NULL, NULL, 0));
        defaults = r;
        r.input = (char *)out;
        r.output = NULL;
        r.policy = KD_REJECT_POLICY_ALL;
        r.pass_rate_min = 0;
        r.pass_rate_max = 1;
        r.limit = c->model ? 0 : c->limit; /* the output holds only the generated prompts */
        r.progress = c->progress;
        r.math = c->math;
        r.code = c->code;
        r.text = c->text;
        r.runtime = c->runtime;
        kd_reject_result rr;
        const double t1 = kd_now();
        rc = kd_reject_run(&r, &rr);
        res->verify_seconds = kd_now() - t1;
        r = defaults;
        kd_cfg_release(&kd_reject_schema, &r);
        if (rc)
            return rc;
    }
    /* 3. the figures */
    kd_store *s = NULL;
    KD_TRY(kd_store_open(out, KD_STORE_RDONLY, &s));
    rc = score_(s, res);
    kd_store_close(s);
    if (rc)
        return rc;
    const double p = res->all.prompts ? (double)res->all.prompts : 1.0;
    res->pass1 = res->all.pass1_sum / p;
    res->cons_k = (double)res->all.cons / p;
    res->pass_k = (double)res->all.passk / p;
    res->seconds = kd_now() - t0;
    if (c->report)
        snprintf(res->report, sizeof res->report, "%s", c->report);
    else
        snprintf(res->report, sizeof res->report, "%s/eval.json", out);
    char label[256];
    json_t *doc = json_pack("{s:s?, s:s, s:I, s:f, s:f, s:f, s:o, s:{}, s:f, s:f, s:f}", "model", c->model,
                            "dataset", out, "k", (json_int_t)c->k, "pass1", res->pass1, "cons_k", res->cons_k,
                            "pass_k", res->pass_k, "all", row_json_(&res->all), "by_source", "generate_seconds",
                            res->generate_seconds, "verify_seconds", res->verify_seconds, "seconds", res->seconds);
    if (doc)
        json_object_set_new(doc, "name", json_string(kd_eval_label(c, label, sizeof label)));
    if (!doc)
        return kd_err(KD_E_NOMEM, "eval.json");
    json_t *bs = json_object_get(doc, "by_source");
    for (int i = 0; i < res->nsource; i++)
        json_object_set_new(bs, res->by_source[i].name, row_json_(&res->by_source[i]));
    json_object_set_new(doc, "sampling", json_pack("{s:f, s:f, s:I, s:I}", "temperature", c->sampling.temperature,
                                                   "top_p", c->sampling.top_p, "top_k", (json_int_t)c->sampling.top_k,
                                                   "max_new_tokens", (json_int_t)c->sampling.max_new_tokens));
    rc = kd_write_json_atomic(res->report, doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    return rc;
}

static void print_row_(FILE *out, const kd_eval_row *r)
{
    const double p = r->prompts ? (double)r->prompts : 1.0;
    fprintf(out, "  %-24s %8lld %8lld %8.3f %8.3f %8.3f\n", r->name, (long long)r->prompts, (long long)r->samples,
            r->pass1_sum / p, (double)r->cons / p, (double)r->passk / p);
}

void kd_eval_print(const kd_eval_result *res, FILE *out)
{
    fprintf(out, "eval: pass@1 %.3f, cons@k %.3f, pass@k %.3f over %lld prompts (%lld samples); generate %.1f s, "
                 "verify %.1f s; %s\n",
            res->pass1, res->cons_k, res->pass_k, (long long)res->all.prompts, (long long)res->all.samples,
            res->generate_seconds, res->verify_seconds, res->report);
    fprintf(out, "  %-24s %8s %8s %8s %8s %8s\n", "source", "prompts", "samples", "pass@1", "cons@k", "pass@k");
    for (int i = 0; i < res->nsource; i++)
        print_row_(out, &res->by_source[i]);
    print_row_(out, &res->all);
}
