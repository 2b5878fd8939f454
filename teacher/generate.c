/* generate.c - the generation job. See generate.h. */
#include "teacher/generate.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/chat.h"
#include "core/log.h"
#include "core/sampler.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "core/util.h"
#include "data/store.h"
#include "student/model.h"
#include "teacher/model.h"

/* ---- configuration ---------------------------------------------------------------- */

static const kd_cfg_field sampling_fields_[] = {
    KD_CFG_FLOAT(kd_gen_sampling, temperature, "0.6", 0, 100, "0 = greedy"),
    KD_CFG_FLOAT(kd_gen_sampling, top_p, "0.95", 1e-9, 1, "nucleus sampling; 1 = off"),
    KD_CFG_INT(kd_gen_sampling, top_k, "0", 0, 1e9, "0 = off"),
    KD_CFG_FLOAT(kd_gen_sampling, min_p, "0", 0, 1, "0 = off"),
    KD_CFG_FLOAT(kd_gen_sampling, repetition_penalty, "1", 1e-6, 100, "HF's; 1 = off"),
    KD_CFG_FLOAT(kd_gen_sampling, frequency_penalty, "0", -2, 2, "OpenAI's; 0 = off"),
    KD_CFG_INT(kd_gen_sampling, max_new_tokens, "32768", 1, 1e9, "completion tokens at most"),
    KD_CFG_INT(kd_gen_sampling, thinking_budget, "0", 0, 1e9,
               "after this many tokens inside <think>, force </think>; 0 = off"),
    KD_CFG_STRLIST(kd_gen_sampling, stop, "stop strings (cut from the text)"),
    KD_CFG_STRLIST(kd_gen_sampling, stop_ids, "extra stop token ids"),
    KD_CFG_END};

static const kd_cfg_field gen_fields_[] = {
    KD_CFG_STRING(kd_gen_config, model, NULL, "HF folder: deepseek_v3/v2, or qwen2/llama"),
    KD_CFG_STRING(kd_gen_config, tokenizer, NULL, "folder with tokenizer.json; ~ = the model folder"),
    KD_CFG_STRING(kd_gen_config, input, NULL, "dataset with prompts"),
    KD_CFG_STRING(kd_gen_config, output, NULL, "dataset for the generations; ~ = input"),
    KD_CFG_INT(kd_gen_config, samples, "1", 1, 4096, "samples per prompt"),
    KD_CFG_INT(kd_gen_config, limit, "0", 0, 1e12, "prompts to use, in id order; 0 = all"),
    {"template", KD_CFG_T_STRING, offsetof(kd_gen_config, template_name), "deepseek_r1", 0, 0, NULL, NULL,
     "chat template (chatml, qwen3, llama3, llama3_1, deepseek_v3, deepseek_r1)", NULL},
    KD_CFG_STRING(kd_gen_config, system, NULL, "system prompt; ~ = none (DeepSeek-R1's advice)"),
    KD_CFG_STRING(kd_gen_config, instruction, NULL, "appended to a plain prompt's text; ~ = none"),
    KD_CFG_BOOL(kd_gen_config, force_think, "true", "start the assistant turn with <think>\\n"),
    KD_CFG_ENUM(kd_gen_config, mla, "absorbed", "absorbed|decompressed", "DeepSeek decode attention form"),
    KD_CFG_INT(kd_gen_config, commit_every, "8", 1, 1e6, "finished units per committed batch"),
    KD_CFG_BOOL(kd_gen_config, progress, "true", "draw a progress bar"),
    KD_CFG_SECTION(kd_gen_config, sampling, sampling_fields_, "sampling"),
    KD_CFG_SECTION(kd_gen_config, runtime, kd_runtime_fields, "seed, device, threads, logging"),
    KD_CFG_END};

const kd_cfg_schema kd_gen_schema = {"generate", gen_fields_, sizeof(kd_gen_config)};

void kd_gen_rng(uint64_t seed, uint64_t prompt, uint64_t sample, uint64_t t, kd_rng *r)
{
    /* each key through splitmix64 (kd_rng_seed), chained */
    kd_rng_seed(r, seed ^ 0x67656e6572617465ull);
    kd_rng_seed(r, r->s[0] ^ (prompt * 0x9e3779b97f4a7c15ull));
    kd_rng_seed(r, r->s[1] ^ (sample * 0xbf58476d1ce4e5b9ull));
    kd_rng_seed(r, r->s[2] ^ (t * 0x94d049bb133111ebull));
}

/* ---- the model: the teacher or a dense one ------------------------------------------ */

typedef struct gmodel_ {
    kd_teacher *t;
    kd_student *s;
    int64_t V, max_pos;
    kd_mla_mode mode;
} gmodel_;

typedef struct gcache_ {
    kd_mla_cache *mla;
    kd_kvcache *kv;
} gcache_;

static int gm_cache_(gmodel_ *g, int64_t T, gcache_ *c)
{
    memset(c, 0, sizeof *c);
    return g->t ? kd_mla_cache_new(g->t, T, &c->mla) : kd_kvcache_new(g->s, T, &c->kv);
}

static void gm_cache_free_(gcache_ *c)
{
    kd_mla_cache_free(c->mla);
    kd_kvcache_free(c->kv);
}

static int gm_extend_(gmodel_ *g, gcache_ *c, const int64_t *ids, int64_t n, int prefill, float *row)
{
    if (g->t)
        return kd_teacher_extend(g->t, c->mla, ids, n, prefill ? KD_MLA_DECOMPRESSED : g->mode, 0, row);
    return kd_student_extend(g->s, c->kv, ids, n, row);
}

/* ---- one unit ------------------------------------------------------------------------ */

typedef struct unit_out_ {
    char *text;
    size_t len, cap;
    int64_t tokens;
    unsigned finish;
    double logprob, seconds;
    int budget_hit;
} unit_out_;

static int out_append_(unit_out_ *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *t = realloc(o->text, cap);
        if (!t)
            return kd_err(KD_E_NOMEM, "completion text");
        o->text = t;
        o->cap = cap;
    }
    memcpy(o->text + o->len, s, n);
    o->len += n;
    o->text[o->len] = 0;
    return KD_OK;
}

typedef struct gjob_ {
    const kd_gen_config *cfg;
    gmodel_ g;
    kd_tokenizer *tok;
    kd_chat_template tpl;
    int64_t *stop_ids;
    int nstop;
    int64_t *close_think; /* the tokens of "\n</think>\n\n" */
    size_t nclose;
    kd_sampler_cfg sc;
    float *row, *work, *scratch;
    int64_t *counts;      /* V: how often each token was generated in this unit */
    uint8_t *seen;        /* V: in the prompt or the completion (repetition penalty) */
} gjob_;

/* Generate one sample for prompt tokens p (P of them). */
static int run_unit_(gjob_ *j, uint64_t pid, uint64_t sample, const int64_t *p, int64_t P,
                     int64_t max_new, unit_out_ *o)
{
    const kd_gen_config *c = j->cfg;
    const int64_t V = j->g.V;
    const double t0 = kd_now();
    gcache_ cache;
    KD_TRY(gm_cache_(&j->g, P + max_new, &cache));
    int rc = gm_extend_(&j->g, &cache, p, P, 1, j->row);
    kd_tok_stream ts;
    kd_tok_stream_init(&ts, j->tok, 1);
    memset(j->counts, 0, (size_t)V * sizeof *j->counts);
    memset(j->seen, 0, (size_t)V);
    for (int64_t i = 0; i < P; i++)
        j->seen[p[i]] = 1;
    if (c->force_think)
        rc = rc ? rc : out_append_(o, "<think>\n", 8);
    int in_think = c->force_think;
    int64_t think_tokens = 0, forced = -1; /* index into close_think while forcing */
    o->finish = KD_FINISH_LENGTH;
    for (int64_t t = 0; rc == KD_OK && t < max_new; t++) {
        int64_t id;
        /* the model's log-probabilities, for the record */
        float mx = -INFINITY;
        for (int64_t v = 0; v < V; v++)
            mx = j->row[v] > mx ? j->row[v] : mx;
        double z = 0;
        for (int64_t v = 0; v < V; v++)
            z += exp((double)j->row[v] - mx);
        if (forced >= 0) {
            id = j->close_think[forced++];
            if ((size_t)forced == j->nclose)
                forced = -1;
        } else {
            memcpy(j->work, j->row, (size_t)V * sizeof(float));
            for (int64_t v = 0; v < V; v++) {
                if (c->sampling.repetition_penalty != 1.0 && j->seen[v])
                    j->work[v] = j->work[v] > 0 ? j->work[v] / (float)c->sampling.repetition_penalty
                                                : j->work[v] * (float)c->sampling.repetition_penalty;
                if (c->sampling.frequency_penalty != 0.0 && j->counts[v])
                    j->work[v] -= (float)(c->sampling.frequency_penalty * (double)j->counts[v]);
            }
            kd_rng r;
            kd_gen_rng((uint64_t)c->runtime.seed, pid, sample, (uint64_t)t, &r);
            rc = kd_sample(&j->sc, &r, j->work, V, &id, j->scratch);
            if (rc)
                break;
        }
        o->logprob += (double)j->row[id] - mx - log(z);
        o->tokens++;
        j->counts[id]++;
        j->seen[id] = 1;
        int stop = 0;
        for (int k = 0; k < j->nstop && !stop; k++)
            stop = id == j->stop_ids[k];
        if (stop) {
            o->finish = KD_FINISH_STOP;
            break;
        }
        const char *piece = "";
        size_t plen = 0;
        /* an id of the model's padded vocabulary that names no token decodes to
         * nothing, as in HF tokenizers */
        if (kd_tok_id_to_token(j->tok, (int32_t)id) &&
            ((rc = kd_tok_stream_push(&ts, (int32_t)id, &piece, &plen)) || (rc = out_append_(o, piece, plen))))
            break;
        /* stop strings: cut the text where the first one starts */
        int cut = 0;
        for (size_t k = 0; k < c->sampling.stop.n && !cut; k++) {
            const char *s = c->sampling.stop.items[k];
            size_t sl = strlen(s);
            size_t from = o->len > plen + sl ? o->len - plen - sl : 0;
            char *hit = sl ? strstr(o->text + from, s) : NULL;
            if (hit) {
                o->len = (size_t)(hit - o->text);
                o->text[o->len] = 0;
                cut = 1;
            }
        }
        if (cut) {
            o->finish = KD_FINISH_STOP;
            break;
        }
        if (in_think) {
            if (o->len >= 8 && strstr(o->text + (o->len > plen + 8 ? o->len - plen - 8 : 0), "</think>"))
                in_think = 0;
            else if (c->sampling.thinking_budget > 0 && ++think_tokens >= c->sampling.thinking_budget &&
                     forced < 0) {
                forced = 0; /* close the reasoning now */
                in_think = 0;
                o->budget_hit = 1;
            }
        }
        if (t + 1 < max_new)
            rc = gm_extend_(&j->g, &cache, &id, 1, 0, j->row);
    }
    if (rc == KD_OK) {
        const char *piece;
        size_t plen;
        if (kd_tok_stream_finish(&ts, &piece, &plen) == KD_OK && o->finish != KD_FINISH_STOP)
            rc = out_append_(o, piece, plen);
    }
    kd_tok_stream_release(&ts);
    gm_cache_free_(&cache);
    o->seconds = kd_now() - t0;
    return rc;
}

/* ---- the prompt of a unit ------------------------------------------------------------ */

/* The prompt's token ids: the chat (or the text + instruction as the user
 * turn), the generation prompt, and "<think>\n" when forced. */
static int prompt_ids_(gjob_ *j, const kd_record *r, kd_ids *ids)
{
    const kd_gen_config *c = j->cfg;
    kd_chat_msg msgs[64];
    size_t n = 0;
    json_t *arr = NULL;
    char *user = NULL;
    int rc = KD_OK;
    if (c->system)
        msgs[n++] = (kd_chat_msg){"system", c->system};
    if (r->chat && r->messages.len) {
        arr = json_loadb(r->messages.ptr, r->messages.len, 0, NULL);
        size_t i;
        json_t *m;
        json_array_foreach(arr, i, m)
        {
            if (n == 64) {
                rc = kd_err(KD_E_UNSUPPORTED, "prompt %" PRIu64 ": more than 64 messages", r->id);
                break;
            }
            msgs[n++] = (kd_chat_msg){json_string_value(json_object_get(m, "role")),
                                      json_string_value(json_object_get(m, "content"))};
        }
    } else {
        size_t il = c->instruction ? strlen(c->instruction) : 0;
        user = malloc(r->text.len + il + 2);
        if (!user)
            return kd_err(KD_E_NOMEM, "prompt");
        memcpy(user, r->text.ptr ? r->text.ptr : "", r->text.len);
        size_t k = r->text.len;
        if (il) {
            user[k++] = '\n';
            memcpy(user + k, c->instruction, il);
            k += il;
        }
        user[k] = 0;
        msgs[n++] = (kd_chat_msg){"user", user};
    }
    char *text = NULL;
    kd_span *spans = NULL;
    size_t nsp = 0;
    if (rc == KD_OK)
        rc = kd_chat_render_text(j->tpl, msgs, n, 1, &text, &spans, &nsp);
    if (rc == KD_OK) {
        size_t tl = strlen(text);
        int has = tl >= 8 && !strcmp(text + tl - 8, "<think>\n");
        if (c->force_think && !has) {
            char *t2 = realloc(text, tl + 9);
            if (!t2)
                rc = kd_err(KD_E_NOMEM, "prompt");
            else
                text = t2, memcpy(text + tl, "<think>\n", 9);
        }
        ids->n = 0;
        if (rc == KD_OK)
            rc = kd_tok_encode(j->tok, text, strlen(text), 0, ids);
    }
    free(text);
    free(spans);
    free(user);
    json_decref(arr);
    return rc;
}

/* ---- the job ------------------------------------------------------------------------- */

static int cmp_i64_(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct pending_ {
    uint64_t pid;
    uint32_t sample;
    unit_out_ o;
    uint32_t ptoks;
    char *reason;
} pending_;

static int flush_(kd_store *out, pending_ *pend, size_t *np, uint32_t lineage)
{
    if (!*np)
        return KD_OK;
    kd_store_batch *b = NULL;
    KD_TRY(kd_store_batch_begin(out, &b));
    int rc = KD_OK;
    for (size_t i = 0; i < *np && rc == KD_OK; i++) {
        pending_ *p = &pend[i];
        json_t *ex = p->reason ? json_pack("{s:s}", "skipped", p->reason)
                               : json_pack("{s:f, s:f, s:f, s:b}", "logprob_sum", p->o.logprob, "seconds",
                                           p->o.seconds, "tokens_per_second",
                                           p->o.seconds > 0 ? (double)p->o.tokens / p->o.seconds : 0.0,
                                           "thinking_budget_hit", p->o.budget_hit);
        char *ext = ex ? json_dumps(ex, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(ex);
        kd_record r = {.db = KD_DB_GENERATIONS, .id = p->pid, .sample = p->sample, .lineage = lineage,
                       .finish = p->reason ? KD_FINISH_SKIPPED : p->o.finish, .prompt_tokens = p->ptoks,
                       .completion_tokens = (uint32_t)p->o.tokens,
                       .text = {p->o.text ? p->o.text : "", p->o.len}, .extra = kd_text_of(ext)};
        rc = ext ? kd_store_put(b, &r, KD_PUT_KEEP, NULL) : kd_err(KD_E_NOMEM, "extra");
        free(ext);
    }
    if (rc == KD_OK)
        rc = kd_store_batch_commit(b);
    else
        kd_store_batch_abort(b);
    for (size_t i = 0; i < *np; i++) {
        free(pend[i].o.text);
        free(pend[i].reason);
    }
    *np = 0;
    return rc;
}

static uint64_t hash_config_(const kd_gen_config *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    uint64_t h = 1469598103934665603ull;
    if (f) {
        kd_cfg_print(&kd_gen_schema, c, f, 0);
        fclose(f);
        for (size_t i = 0; i < len; i++)
            h = (h ^ (unsigned char)buf[i]) * 1099511628211ull;
    }
    free(buf);
    return h;
}

int kd_generate_run(const kd_gen_config *c, kd_gen_result *res)
{
    memset(res, 0, sizeof *res);
    if (!c->model || !c->input)
        return kd_err(KD_E_CONFIG, "generate: 'model' and 'input' are required");
    const double t0 = kd_now();
    gjob_ j = {.cfg = c};
    kd_store *in = NULL, *out = NULL;
    uint64_t *pids = NULL;
    size_t npids = 0, cap = 0, np = 0;
    pending_ *pend = NULL;
    int64_t *lens = NULL;
    kd_ids ids;
    kd_ids_init(&ids);
    kd_progress pb;
    int pb_on = 0;
    kd_model_config mc;
    int rc = kd_model_config_load(c->model, &mc);
    if (rc == KD_OK && c->sampling.max_new_tokens >= mc.max_position && mc.max_position > 0)
        rc = kd_err(KD_E_CONFIG, "sampling.max_new_tokens %lld does not leave room for a prompt in the "
                    "context of %lld (max_position_embeddings)", (long long)c->sampling.max_new_tokens,
                    (long long)mc.max_position);
    /* the model: checked (tensors, shapes, dtypes) before anything is generated */
    if (rc == KD_OK) {
        if (mc.arch == KD_ARCH_DEEPSEEK_V3 || mc.arch == KD_ARCH_DEEPSEEK_V2)
            rc = kd_teacher_load(c->model, &j.g.t);
        else
            rc = kd_student_load(c->model, &j.g.s);
    }
    j.g.V = mc.vocab_size;
    j.g.max_pos = mc.max_position > 0 ? mc.max_position : INT64_MAX;
    j.g.mode = c->mla ? KD_MLA_DECOMPRESSED : KD_MLA_ABSORBED;
    if (rc == KD_OK)
        rc = kd_chat_template_find(c->template_name ? c->template_name : "deepseek_r1", &j.tpl);
    if (rc == KD_OK)
        rc = kd_tok_load(c->tokenizer ? c->tokenizer : c->model, &j.tok);
    if (rc == KD_OK && kd_tok_vocab_size(j.tok) > j.g.V)
        rc = kd_err(KD_E_CONFIG, "the tokenizer has %d tokens, the model's vocabulary %lld",
                    kd_tok_vocab_size(j.tok), (long long)j.g.V);
    /* stop ids: the template's end of turn, the tokenizer's eos, the config's */
    if (rc == KD_OK) {
        j.stop_ids = malloc((c->sampling.stop_ids.n + 2) * sizeof *j.stop_ids);
        if (!j.stop_ids)
            rc = kd_err(KD_E_NOMEM, "stop ids");
    }
    if (rc == KD_OK) {
        int32_t e = kd_tok_token_to_id(j.tok, kd_chat_template_eot(j.tpl));
        if (e >= 0)
            j.stop_ids[j.nstop++] = e;
        e = kd_tok_eos_id(j.tok);
        if (e >= 0)
            j.stop_ids[j.nstop++] = e;
        for (size_t i = 0; i < c->sampling.stop_ids.n && rc == KD_OK; i++) {
            char *end;
            long long v = strtoll(c->sampling.stop_ids.items[i], &end, 10);
            if (*end || v < 0 || v >= j.g.V)
                rc = kd_err(KD_E_CONFIG, "sampling.stop_ids: '%s' is not a token id of the model",
                            c->sampling.stop_ids.items[i]);
            else
                j.stop_ids[j.nstop++] = v;
        }
    }
    if (rc == KD_OK) {
        kd_ids ct;
        kd_ids_init(&ct);
        rc = kd_tok_encode(j.tok, "\n</think>\n\n", 11, 0, &ct);
        j.close_think = rc ? NULL : malloc(ct.n * sizeof *j.close_think);
        if (!rc && !j.close_think)
            rc = kd_err(KD_E_NOMEM, "think");
        for (size_t i = 0; !rc && i < ct.n; i++)
            j.close_think[i] = ct.ids[i];
        j.nclose = ct.n;
        kd_ids_release(&ct);
    }
    kd_sampler_cfg_init(&j.sc);
    j.sc.temperature = c->sampling.temperature;
    j.sc.top_k = c->sampling.top_k;
    j.sc.top_p = c->sampling.top_p;
    j.sc.min_p = c->sampling.min_p;
    if (rc == KD_OK)
        rc = kd_sampler_check(&j.sc);
    if (rc == KD_OK) {
        j.row = malloc((size_t)j.g.V * sizeof(float));
        j.work = malloc((size_t)j.g.V * sizeof(float));
        j.scratch = malloc((size_t)j.g.V * 2 * sizeof(float));
        j.counts = malloc((size_t)j.g.V * sizeof *j.counts);
        j.seen = malloc((size_t)j.g.V);
        pend = calloc((size_t)c->commit_every, sizeof *pend);
        if (!j.row || !j.work || !j.scratch || !j.counts || !j.seen || !pend)
            rc = kd_err(KD_E_NOMEM, "generation buffers");
    }
    /* the datasets; the prompt ids, in order */
    if (rc == KD_OK)
        rc = kd_store_open(c->input, c->output && strcmp(c->output, c->input) ? KD_STORE_RDONLY : 0, &in);
    if (rc == KD_OK && c->output && strcmp(c->output, c->input))
        rc = kd_store_open(c->output, KD_STORE_CREATE, &out);
    if (rc == KD_OK && !out)
        out = in;
    if (rc == KD_OK) {
        kd_store_read *r = NULL;
        kd_store_cursor *cur = NULL;
        rc = kd_store_read_begin(in, &r);
        if (rc == KD_OK)
            rc = kd_store_cursor_open(r, KD_DB_PROMPTS, &cur);
        kd_record rec;
        int got;
        while (rc == KD_OK && (got = kd_store_cursor_next(cur, &rec)) == 1 &&
               (!c->limit || (int64_t)npids < c->limit)) {
            if (npids == cap) {
                cap = cap ? 2 * cap : 1024;
                uint64_t *n2 = realloc(pids, cap * sizeof *pids);
                if (!n2) {
                    rc = kd_err(KD_E_NOMEM, "prompt ids");
                    break;
                }
                pids = n2;
            }
            pids[npids++] = rec.id;
        }
        if (rc == KD_OK && got < 0)
            rc = got;
        kd_store_cursor_close(cur);
        if (r)
            kd_store_read_end(r);
        if (rc == KD_OK && !npids)
            rc = kd_err(KD_E_NOTFOUND, "'%s' holds no prompts", c->input);
    }
    uint32_t lineage = 0;
    if (rc == KD_OK) {
        char hash[20];
        snprintf(hash, sizeof hash, "%016" PRIx64, hash_config_(c));
        kd_store_batch *b = NULL;
        json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:I}", "kind", "generate", "source", c->input, "teacher",
                              c->model, "config_hash", hash, "seed", (json_int_t)c->runtime.seed);
        rc = e ? kd_store_batch_begin(out, &b) : kd_err(KD_E_NOMEM, "lineage");
        if (rc == KD_OK)
            rc = kd_store_lineage_add_json(b, e, 1, &lineage);
        if (rc == KD_OK)
            rc = kd_store_batch_commit(b);
        else if (b)
            kd_store_batch_abort(b);
        json_decref(e);
    }
    const int64_t total = (int64_t)npids * c->samples;
    res->units = total;
    if (rc == KD_OK) {
        lens = malloc((size_t)(total ? total : 1) * sizeof *lens);
        if (!lens)
            rc = kd_err(KD_E_NOMEM, "lengths");
    }
    if (rc == KD_OK && c->progress) {
        kd_progress_init(&pb, "generate", (uint64_t)total);
        pb_on = 1;
    }
    double tok_run = 0, t_run = kd_now();
    for (size_t i = 0; rc == KD_OK && i < npids; i++) {
        /* which samples of this prompt are missing, and the prompt itself */
        kd_store_read *r = NULL;
        kd_record rec;
        int missing[4096], nmiss = 0;
        if ((rc = kd_store_read_begin(out, &r)))
            break;
        for (int64_t s = 0; s < c->samples && s < 4096 && rc == KD_OK; s++) {
            int ex = 0;
            rc = kd_store_unit_exists(r, pids[i], (uint32_t)s, &ex);
            if (!ex)
                missing[nmiss++] = (int)s;
        }
        kd_store_read_end(r);
        res->existing += c->samples - nmiss;
        if (pb_on)
            kd_progress_add(&pb, (uint64_t)(c->samples - nmiss));
        if (rc || !nmiss)
            continue;
        if ((rc = kd_store_read_begin(in, &r)))
            break;
        rc = kd_store_get(r, KD_DB_PROMPTS, pids[i], 0, &rec);
        if (rc == KD_OK)
            rc = prompt_ids_(&j, &rec, &ids);
        kd_store_read_end(r);
        if (rc)
            break;
        const int64_t P = (int64_t)ids.n;
        int64_t max_new = c->sampling.max_new_tokens;
        char *reason = NULL;
        if (P + 1 > j.g.max_pos) {
            char msg[160];
            snprintf(msg, sizeof msg, "prompt of %lld tokens does not fit the context of %lld", (long long)P,
                     (long long)j.g.max_pos);
            reason = msg;
            for (int k = 0; k < nmiss && rc == KD_OK; k++) {
                pend[np] = (pending_){.pid = pids[i], .sample = (uint32_t)missing[k], .ptoks = (uint32_t)P,
                                      .reason = strdup(reason)};
                res->skipped++;
                res->by_finish[KD_FINISH_SKIPPED]++;
                if (++np == (size_t)c->commit_every)
                    rc = flush_(out, pend, &np, lineage);
            }
            if (pb_on)
                kd_progress_add(&pb, (uint64_t)nmiss);
            continue;
        }
        if (P + max_new > j.g.max_pos)
            max_new = j.g.max_pos - P; /* what fits; the record's finish says length if it ran out */
        int64_t *p = malloc((size_t)P * sizeof *p);
        if (!p) {
            rc = kd_err(KD_E_NOMEM, "prompt");
            break;
        }
        for (int64_t k = 0; k < P; k++)
            p[k] = ids.ids[k];
        for (int k = 0; k < nmiss && rc == KD_OK; k++) {
            unit_out_ o = {0};
            rc = run_unit_(&j, pids[i], (uint64_t)missing[k], p, P, max_new, &o);
            if (rc) {
                free(o.text);
                break;
            }
            if (o.budget_hit)
                o.finish = KD_FINISH_BUDGET;
            res->by_finish[o.finish]++;
            lens[res->generated++] = o.tokens;
            res->tokens += o.tokens;
            tok_run += (double)o.tokens;
            pend[np++] = (pending_){.pid = pids[i], .sample = (uint32_t)missing[k], .o = o,
                                    .ptoks = (uint32_t)P};
            if (np == (size_t)c->commit_every)
                rc = flush_(out, pend, &np, lineage);
            if (pb_on) {
                kd_progress_note(&pb, "%.1f tok/s out", tok_run / (kd_now() - t_run));
                kd_progress_add(&pb, 1);
            }
        }
        free(p);
    }
    if (rc == KD_OK)
        rc = flush_(out, pend, &np, lineage);
    if (pb_on)
        kd_progress_finish(&pb);
    res->seconds = kd_now() - t0;
    res->tokens_per_second = tok_run / (kd_now() - t_run);
    if (res->generated) {
        double sum = 0;
        for (int64_t i = 0; i < res->generated; i++)
            sum += (double)lens[i];
        res->mean_len = sum / (double)res->generated;
        qsort(lens, (size_t)res->generated, sizeof *lens, cmp_i64_);
        res->p50_len = (double)lens[(res->generated - 1) * 50 / 100];
        res->p90_len = (double)lens[(res->generated - 1) * 90 / 100];
        res->p99_len = (double)lens[(res->generated - 1) * 99 / 100];
    }
    for (size_t i = 0; i < np; i++) { /* units not committed after an error */
        free(pend[i].o.text);
        free(pend[i].reason);
    }
    free(pend);
    free(lens);
    free(pids);
    kd_ids_release(&ids);
    if (out && out != in)
        kd_store_close(out);
    if (in)
        kd_store_close(in);
    free(j.stop_ids);
    free(j.close_think);
    free(j.row);
    free(j.work);
    free(j.scratch);
    free(j.counts);
    free(j.seen);
    kd_tok_free(j.tok);
    kd_teacher_free(j.g.t);
    kd_student_free(j.g.s);
    return rc;
}
