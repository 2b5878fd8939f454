/* generate.c - the generation job. See generate.h. */
#include "teacher/generate.h"
#include "teacher/cuda.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/chat.h"
#include "core/log.h"
#include "core/ops.h"
#include "core/sampler.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "core/util.h"
#include "data/store.h"
#include "student/model.h"
#include "teacher/model.h"
#ifdef KD_HAVE_CUDA
#include "core/cuda/cusample.h"
#endif

/* ---- configuration ---------------------------------------------------------------- */

const kd_cfg_field kd_gen_sampling_fields[] = {
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
    KD_CFG_INT(kd_gen_config, batch, "16", 1, 4096, "samples decoded together"),
    KD_CFG_INT(kd_gen_config, kv_block, "16", 1, 4096, "positions per kv cache block"),
    KD_CFG_INT(kd_gen_config, kv_blocks, "0", 0, 1e9,
               "blocks in the kv pool; 0 = batch x (max_new_tokens + 2048) positions, and the longest prompt's "
               "sequence"),
    KD_CFG_BOOL(kd_gen_config, progress, "true", "draw a progress bar"),
    KD_CFG_SECTION(kd_gen_config, sampling, kd_gen_sampling_fields, "sampling"),
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
    int cuda;            /* the teacher on the GPU (runtime.device cuda) */
    int64_t batch;       /* most sequences of a step */
    kd_cu_teacher *cu;   /* made with the pool, as its blocks are the GPU cache's */
} gmodel_;

static int gm_pool_(gmodel_ *g, int64_t nblocks, int64_t bs, kd_kvpool **pool)
{
    if (g->t && g->cuda) {
        /* the pool is the CUDA teacher's (its block ids index the GPU cache); a
         * prefill step packs one prompt, so a step's positions stay within the context */
        const int64_t ctx = g->max_pos < 16384 ? g->max_pos : 16384;
        kd_cu_teacher_opts o = {.device = 0, .max_tokens = ctx > g->batch ? ctx : g->batch, .max_seqs = g->batch,
                                .block = bs, .kv_blocks = nblocks, .graphs = 1};
        KD_TRY(kd_cu_teacher_new(g->t, &o, &g->cu));
        *pool = kd_cu_teacher_pool(g->cu);
        return KD_OK;
    }
    return g->t ? kd_teacher_kvpool_new(g->t, nblocks, bs, pool) : kd_student_kvpool_new(g->s, nblocks, bs, pool);
}

static void gm_pool_free_(gmodel_ *g, kd_kvpool *pool)
{
    if (g->cu) {
        kd_cu_teacher_free(g->cu); /* its pool with it */
        g->cu = NULL;
        return;
    }
    kd_kvpool_free(pool);
}

/* One batched step (kd_teacher_step, kd_student_step_paged): a prompt's
 * prefill (decompressed MLA) or decode (the configured MLA form). */
static int gm_step_(gmodel_ *g, kd_kvpool *pool, kd_kvseq *const *seqs, int nseq, const int64_t *ids,
                    const int64_t *nn, int prefill, float *logits)
{
    if (g->cu) /* decode absorbed: the decompressed form re-expands every cached latent */
        return kd_cu_teacher_step(g->cu, seqs, nseq, ids, nn, prefill ? KD_MLA_DECOMPRESSED : KD_MLA_ABSORBED, 0,
                                  logits);
    if (g->t)
        return kd_teacher_step(g->t, pool, seqs, nseq, ids, nn, prefill ? KD_MLA_DECOMPRESSED : g->mode, 0,
                               logits);
    return kd_student_step_paged(g->s, pool, seqs, nseq, ids, nn, 0, logits);
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
    float *work, *scratch;
} gjob_;

/* One sample in flight: its cache, its sampling state, its output. */
typedef struct samp_ {
    uint64_t pid;
    uint32_t sample;
    const int64_t *prompt; /* the unit's prompt (owned by the caller) */
    int64_t P, max_new;
    kd_kvseq seq;          /* teacher engine: its blocks */
    int64_t t;             /* tokens generated */
    int64_t *gen;          /* (max_new) the generated ids, for a replay after preemption */
    int64_t *counts;       /* V: generated counts (frequency penalty) */
    uint8_t *seen;         /* V: prompt or completion (repetition penalty) */
    float *row;            /* V: the logits for the next token */
    kd_tok_stream ts;
    unit_out_ o;
    int in_think;
    int64_t think_tokens, forced;
    int64_t next;          /* the token to feed */
    int pre;               /* the GPU sampled the next token already: pre_id, with log-probability pre_lp */
    int64_t pre_id;
    double pre_lp;
    int done;
    double t0;
} samp_;

static void samp_free_(samp_ *sp)
{
    free(sp->gen);
    free(sp->counts);
    free(sp->seen);
    free(sp->row);
    kd_tok_stream_release(&sp->ts);
    free(sp->o.text);
    memset(sp, 0, sizeof *sp);
}

static int samp_init_(gjob_ *j, samp_ *sp, uint64_t pid, uint32_t sample, const int64_t *p, int64_t P,
                      int64_t max_new)
{
    const int64_t V = j->g.V;
    memset(sp, 0, sizeof *sp);
    sp->pid = pid;
    sp->sample = sample;
    sp->prompt = p;
    sp->P = P;
    sp->max_new = max_new;
    sp->gen = malloc((size_t)max_new * sizeof *sp->gen);
    sp->counts = calloc((size_t)V, sizeof *sp->counts);
    sp->seen = calloc((size_t)V, 1);
    sp->row = malloc((size_t)V * sizeof *sp->row);
    if (!sp->gen || !sp->counts || !sp->seen || !sp->row) {
        samp_free_(sp);
        return kd_err(KD_E_NOMEM, "sample state");
    }
    for (int64_t i = 0; i < P; i++)
        sp->seen[p[i]] = 1;
    kd_tok_stream_init(&sp->ts, j->tok, 1);
    sp->in_think = j->cfg->force_think;
    sp->forced = -1;
    sp->o.finish = KD_FINISH_LENGTH;
    sp->t0 = kd_now();
    return j->cfg->force_think ? out_append_(&sp->o, "<think>\n", 8) : KD_OK;
}

/* Choose the next token from sp->row. Sets sp->done (stop, or the last
 * allowed token) or sp->next (the token to feed). */
static int samp_advance_(gjob_ *j, samp_ *sp)
{
    const kd_gen_config *c = j->cfg;
    const int64_t V = j->g.V;
    const float *row = sp->row;
    int64_t id;
    double lp = 0; /* the token's log-probability under the model, for the record */
    if (sp->forced >= 0) {
        id = j->close_think[sp->forced++];
        if ((size_t)sp->forced == j->nclose)
            sp->forced = -1;
        lp = (double)row[id] - kd_logsumexp(row, V);
    } else if (sp->pre) { /* sampled on the GPU (the same rules and draw as kd_sample) */
        id = sp->pre_id;
        lp = sp->pre_lp;
    } else {
        memcpy(j->work, row, (size_t)V * sizeof(float));
        kd_sample_penalize(j->work, V, sp->seen, sp->counts, c->sampling.repetition_penalty,
                           c->sampling.frequency_penalty);
        kd_rng r;
        kd_gen_rng((uint64_t)c->runtime.seed, sp->pid, sp->sample, (uint64_t)sp->t, &r);
        KD_TRY(kd_sample(&j->sc, &r, j->work, V, &id, j->scratch));
        lp = (double)row[id] - kd_logsumexp(row, V);
    }
    sp->pre = 0;
    unit_out_ *o = &sp->o;
    o->logprob += lp;
    o->tokens++;
    sp->gen[sp->t++] = id;
    sp->counts[id]++;
    sp->seen[id] = 1;
    for (int k = 0; k < j->nstop; k++)
        if (id == j->stop_ids[k]) {
            o->finish = KD_FINISH_STOP;
            sp->done = 1;
            return KD_OK;
        }
    const char *piece = "";
    size_t plen = 0;
    /* an id of the model's padded vocabulary that names no token decodes to
     * nothing, as in HF tokenizers */
    if (kd_tok_id_to_token(j->tok, (int32_t)id)) {
        KD_TRY(kd_tok_stream_push(&sp->ts, (int32_t)id, &piece, &plen));
        KD_TRY(out_append_(o, piece, plen));
    }
    /* stop strings: cut the text where the first one starts */
    for (size_t k = 0; k < c->sampling.stop.n; k++) {
        const char *st = c->sampling.stop.items[k];
        size_t sl = strlen(st);
        size_t from = o->len > plen + sl ? o->len - plen - sl : 0;
        char *hit = sl ? strstr(o->text + from, st) : NULL;
        if (hit) {
            o->len = (size_t)(hit - o->text);
            o->text[o->len] = 0;
            o->finish = KD_FINISH_STOP;
            sp->done = 1;
            return KD_OK;
        }
    }
    if (sp->in_think) {
        if (o->len >= 8 && strstr(o->text + (o->len > plen + 8 ? o->len - plen - 8 : 0), "</think>"))
            sp->in_think = 0;
        else if (c->sampling.thinking_budget > 0 && ++sp->think_tokens >= c->sampling.thinking_budget &&
                 sp->forced < 0) {
            sp->forced = 0; /* close the reasoning now */
            sp->in_think = 0;
            o->budget_hit = 1;
        }
    }
    if (sp->t >= sp->max_new) {
        sp->done = 1; /* length */
        return KD_OK;
    }
    sp->next = id;
    return KD_OK;
}

/* The record's last touches: the decoder's tail, the finish, the time. */
static int samp_finish_(samp_ *sp)
{
    const char *piece;
    size_t plen;
    int rc = KD_OK;
    if (sp->o.finish != KD_FINISH_STOP && kd_tok_stream_finish(&sp->ts, &piece, &plen) == KD_OK)
        rc = out_append_(&sp->o, piece, plen);
    if (sp->o.budget_hit)
        sp->o.finish = KD_FINISH_BUDGET;
    sp->o.seconds = kd_now() - sp->t0;
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

/* When the generations go to another dataset than the prompts: put each
 * pending unit's prompt there too (kept if already there), its lineage entry
 * copied and its id remapped, so that the output holds its units whole
 * (reject and eval read prompt and generations from one dataset). */
static int copy_prompts_(kd_store *in, kd_store_batch *b, const pending_ *pend, size_t np)
{
    kd_store_read *r = NULL;
    KD_TRY(kd_store_read_begin(in, &r));
    int rc = KD_OK;
    uint64_t last = UINT64_MAX;
    for (size_t i = 0; i < np && rc == KD_OK; i++) {
        if (pend[i].pid == last)
            continue;
        last = pend[i].pid;
        kd_record rec;
        const void *val;
        size_t vlen;
        json_t *e = NULL;
        uint32_t lin = 0;
        rc = kd_store_get(r, KD_DB_PROMPTS, last, 0, &rec);
        if (rc == KD_OK && rec.lineage && (rc = kd_store_lineage_get(r, rec.lineage, &e)) == KD_OK)
            rc = kd_store_lineage_add_json(b, e, 1, &lin);
        json_decref(e);
        if (rc == KD_OK)
            rc = kd_store_get_raw(r, KD_DB_PROMPTS, last, 0, &val, &vlen);
        void *copy = rc == KD_OK ? malloc(vlen) : NULL;
        if (rc == KD_OK && !copy)
            rc = kd_err(KD_E_NOMEM, "prompt %" PRIu64, last);
        if (rc == KD_OK) {
            memcpy(copy, val, vlen);
            kd_record_set_lineage(copy, vlen, lin);
            rc = kd_store_put_raw(b, KD_DB_PROMPTS, last, 0, copy, vlen, KD_PUT_KEEP, NULL);
        }
        free(copy);
    }
    kd_store_read_end(r);
    return rc;
}

static int flush_(kd_store *in, kd_store *out, pending_ *pend, size_t *np, uint32_t lineage)
{
    if (!*np)
        return KD_OK;
    kd_store_batch *b = NULL;
    KD_TRY(kd_store_batch_begin(out, &b));
    int rc = in != out ? copy_prompts_(in, b, pend, *np) : KD_OK;
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

/* ---- the job's loop ------------------------------------------------------------------ */

/* A prompt with samples to generate. */
typedef struct unit_ {
    uint64_t pid;
    int64_t *prompt, P, max_new;
    int missing[4096], nmiss, live; /* live: samples not yet recorded */
} unit_;

typedef struct gctx_ {
    gjob_ *j;
    const kd_gen_config *c;
    kd_store *in, *out;
    const uint64_t *pids;
    size_t npids, next;
    pending_ *pend;
    size_t *np;
    uint32_t lineage;
    kd_gen_result *res;
    int64_t *lens;
    kd_progress *pb;
    kd_ids *ids;
    int64_t nblocks; /* the kv pool's (pool_blocks_) */
    double tok_run, t_run;
} gctx_;

/* Record a finished sample (it is freed). */
static int record_(gctx_ *x, samp_ *sp)
{
    kd_gen_result *res = x->res;
    res->by_finish[sp->o.finish]++;
    x->lens[res->generated++] = sp->o.tokens;
    res->tokens += sp->o.tokens;
    x->tok_run += (double)sp->o.tokens;
    x->pend[(*x->np)++] = (pending_){.pid = sp->pid, .sample = sp->sample, .o = sp->o, .ptoks = (uint32_t)sp->P};
    sp->o = (unit_out_){0}; /* the text now belongs to the pending record */
    samp_free_(sp);
    int rc = KD_OK;
    if (*x->np == (size_t)x->c->commit_every)
        rc = flush_(x->in, x->out, x->pend, x->np, x->lineage);
    if (x->pb) {
        kd_progress_note(x->pb, "%.1f tok/s out", x->tok_run / (kd_now() - x->t_run));
        kd_progress_add(x->pb, 1);
    }
    return rc;
}

/* Which samples of prompt pid are missing from the output (n->missing,
 * n->nmiss) and, when some are, the prompt's token count n->P (its ids in
 * ids). The one place a unit is measured: the pool check and the job's loop
 * both read it. */
static int unit_measure_(gjob_ *j, kd_store *in, kd_store *out, uint64_t pid, unit_ *n, kd_ids *ids)
{
    const kd_gen_config *c = j->cfg;
    n->pid = pid;
    n->nmiss = 0;
    n->P = 0;
    kd_store_read *r = NULL;
    int rc = kd_store_read_begin(out, &r);
    for (int64_t s = 0; s < c->samples && rc == KD_OK; s++) {
        int ex = 0;
        rc = kd_store_unit_exists(r, pid, (uint32_t)s, &ex);
        if (!ex)
            n->missing[n->nmiss++] = (int)s;
    }
    if (r)
        kd_store_read_end(r);
    if (rc || !n->nmiss)
        return rc;
    kd_record rec;
    if ((rc = kd_store_read_begin(in, &r)) == KD_OK) {
        rc = kd_store_get(r, KD_DB_PROMPTS, pid, 0, &rec);
        if (rc == KD_OK)
            rc = prompt_ids_(j, &rec, ids);
        kd_store_read_end(r);
    }
    n->P = (int64_t)ids->n;
    return rc;
}

/* The completion tokens a prompt of P tokens gets: max_new_tokens, or what
 * is left of the context (the finish then says length). */
static int64_t unit_max_new_(const gjob_ *j, int64_t P)
{
    const int64_t max_new = j->cfg->sampling.max_new_tokens;
    return P + max_new > j->g.max_pos ? j->g.max_pos - P : max_new;
}

/* The next prompt with missing samples (*u NULL at the end). Prompts whose
 * samples all exist are counted; prompts that do not fit the context are
 * recorded as skipped. */
static int next_unit_(gctx_ *x, unit_ **u)
{
    const kd_gen_config *c = x->c;
    gjob_ *j = x->j;
    *u = NULL;
    while (x->next < x->npids) {
        const uint64_t pid = x->pids[x->next++];
        unit_ *n = calloc(1, sizeof *n);
        if (!n)
            return kd_err(KD_E_NOMEM, "unit");
        int rc = unit_measure_(j, x->in, x->out, pid, n, x->ids);
        x->res->existing += c->samples - n->nmiss;
        if (x->pb)
            kd_progress_add(x->pb, (uint64_t)(c->samples - n->nmiss));
        if (rc || !n->nmiss) {
            free(n);
            if (rc)
                return rc;
            continue;
        }
        if (n->P + 1 > j->g.max_pos) {
            char msg[160];
            snprintf(msg, sizeof msg, "prompt of %lld tokens does not fit the context of %lld",
                     (long long)n->P, (long long)j->g.max_pos);
            for (int k = 0; k < n->nmiss && rc == KD_OK; k++) {
                x->pend[(*x->np)++] = (pending_){.pid = pid, .sample = (uint32_t)n->missing[k],
                                                 .ptoks = (uint32_t)n->P, .reason = strdup(msg)};
                x->res->skipped++;
                x->res->by_finish[KD_FINISH_SKIPPED]++;
                if (*x->np == (size_t)c->commit_every)
                    rc = flush_(x->in, x->out, x->pend, x->np, x->lineage);
            }
            if (x->pb)
                kd_progress_add(x->pb, (uint64_t)n->nmiss);
            free(n);
            if (rc)
                return rc;
            continue;
        }
        n->max_new = unit_max_new_(j, n->P);
        n->prompt = malloc((size_t)n->P * sizeof *n->prompt);
        if (!n->prompt) {
            free(n);
            return kd_err(KD_E_NOMEM, "prompt");
        }
        for (int64_t k = 0; k < n->P; k++)
            n->prompt[k] = x->ids->ids[k];
        n->live = n->nmiss;
        *u = n;
        return KD_OK;
    }
    return KD_OK;
}

/* Blocks of bs positions that n positions take. */
static int64_t blocks_(int64_t n, int64_t bs) { return n / bs + (n % bs != 0); }

/* The blocks of the kv pool (*nblocks), chosen and checked before anything
 * is generated, so that one sample alone always fits: every sample's whole
 * sequence (its prompt and its max_new tokens, within the context) takes at
 * most nblocks - 1 blocks. Then a sample alone in the pool can always grow
 * (the others are preempted), and a prompt that fits the context is never
 * dropped; a prompt longer than the context is recorded as skipped
 * (next_unit_). kv_blocks 0: batch samples of max_new_tokens + 2048
 * positions, more if the longest prompt's sequence needs it. Only when the
 * pool cannot hold a full-context sequence are the prompts measured (those
 * with samples missing). Errors: KD_E_CONFIG (kv_blocks set and a prompt's
 * sequence does not fit: the message names the prompt and the keys), the
 * store's and the tokenizer's. */
static int pool_blocks_(gjob_ *j, kd_store *in, kd_store *out, const uint64_t *pids, size_t npids,
                        kd_ids *ids, int64_t *nblocks)
{
    const kd_gen_config *c = j->cfg;
    const int64_t bs = c->kv_block, ctx = j->g.max_pos, max_new = c->sampling.max_new_tokens;
    int64_t nb = c->kv_blocks;
    if (!nb) {
        const int64_t span = max_new + 2048 < ctx ? max_new + 2048 : ctx;
        nb = c->batch * blocks_(span, bs) + 1;
    }
    *nblocks = nb;
    if (ctx < INT64_MAX && nb >= blocks_(ctx, bs) + 1)
        return KD_OK; /* a full-context sequence fits */
    kd_debug("generate: the kv pool (%lld blocks of %lld) holds less than the context: measuring %zu prompts",
             (long long)nb, (long long)bs, npids);
    unit_ *n = calloc(1, sizeof *n);
    if (!n)
        return kd_err(KD_E_NOMEM, "unit");
    int rc = KD_OK;
    int64_t need_max = 0;
    for (size_t i = 0; i < npids && rc == KD_OK; i++) {
        rc = unit_measure_(j, in, out, pids[i], n, ids);
        if (rc || !n->nmiss || n->P + 1 > ctx)
            continue; /* nothing to generate, or skipped */
        const int64_t need = blocks_(n->P + unit_max_new_(j, n->P), bs) + 1;
        if (need > need_max)
            need_max = need;
        if (c->kv_blocks && need > nb)
            rc = kd_err(KD_E_CONFIG, "the kv pool (kv_blocks %lld of kv_block %lld positions) cannot hold prompt "
                        "%" PRIu64 " alone: its %lld tokens and sampling.max_new_tokens %lld need %lld blocks: "
                        "raise kv_blocks (or kv_block), or lower sampling.max_new_tokens",
                        (long long)nb, (long long)bs, n->pid, (long long)n->P, (long long)max_new,
                        (long long)need);
    }
    free(n);
    if (rc == KD_OK && need_max > nb) {
        kd_debug("generate: kv pool of %lld blocks (the longest prompt's sequence), not %lld", (long long)need_max,
                 (long long)nb);
        *nblocks = need_max;
    }
    return rc;
}

static void unit_done_(unit_ *u)
{
    if (--u->live == 0) {
        free(u->prompt);
        free(u);
    }
}

/* Sampling on the GPU (core/cuda/cusample.h) for the CUDA teacher's decode
 * steps, when no penalty is on (they need the host's counts): only the ids and
 * their log-probabilities come back, not (samples x vocab) logits. A sample
 * whose next token is forced (the thinking budget's close) gets its logits
 * row instead, for the record's log-probability. DISTILL_HOST_SAMPLING=1 keeps
 * sampling on the host (the reference: the same tokens, kd_sample). */
typedef struct gsamp_ {
    int on;
    void *rows, *ids, *lp;  /* device: (B) kd_cu_sample_row, int32, float */
    void *h_rows;           /* host staging */
    int32_t *h_ids;
    float *h_lp;
} gsamp_;

#ifdef KD_HAVE_CUDA
static int gsamp_init_(gsamp_ *g, const gjob_ *j, int64_t B)
{
    const kd_gen_config *c = j->cfg;
    const char *env = getenv("DISTILL_HOST_SAMPLING");
    memset(g, 0, sizeof *g);
    if (!j->g.cu || (env && *env && *env != '0') || c->sampling.repetition_penalty != 1.0 ||
        c->sampling.frequency_penalty != 0.0)
        return KD_OK;
    g->h_rows = calloc((size_t)B, sizeof(kd_cu_sample_row));
    g->h_ids = malloc((size_t)B * sizeof *g->h_ids);
    g->h_lp = malloc((size_t)B * sizeof *g->h_lp);
    if (!g->h_rows || !g->h_ids || !g->h_lp)
        return kd_err(KD_E_NOMEM, "sampling buffers");
    KD_TRY(kd_cu_malloc(&g->rows, (size_t)B * sizeof(kd_cu_sample_row)));
    KD_TRY(kd_cu_malloc(&g->ids, (size_t)B * 4));
    KD_TRY(kd_cu_malloc(&g->lp, (size_t)B * 4));
    g->on = 1;
    kd_info("generate: sampling on the GPU");
    return KD_OK;
}

static void gsamp_free_(gsamp_ *g)
{
    kd_cu_free_ptr(g->rows);
    kd_cu_free_ptr(g->ids);
    kd_cu_free_ptr(g->lp);
    free(g->h_rows);
    free(g->h_ids);
    free(g->h_lp);
    memset(g, 0, sizeof *g);
}

#else
static int gsamp_init_(gsamp_ *g, const gjob_ *j, int64_t B)
{
    (void)j, (void)B;
    memset(g, 0, sizeof *g);
    return KD_OK;
}
static void gsamp_free_(gsamp_ *g) { (void)g; }
typedef struct live_ live_;
static int gpu_sample_(gsamp_ *g, gjob_ *j, live_ *run, int64_t nrun)
{
    (void)g, (void)j, (void)run, (void)nrun;
    return kd_err(KD_E_CUDA, "no CUDA backend");
}
#endif

/* The engine: continuous batching over a paged cache, for every model. Up to `batch`
 * samples run together; a new prompt is prefilled once and its samples fork
 * its blocks; each step advances every running sample by one token. When the
 * pool runs out, the newest sample is preempted (its blocks freed) and later
 * recomputed: its prompt prefilled, its tokens replayed, so its text is the
 * same as if it had never been preempted. */
struct live_ {
    samp_ sp;
    unit_ *u;
    int replay; /* waiting: the cache must be (re)built before it runs */
    int fed;    /* sp.row holds fresh logits (else sp.next waits to be fed) */
};
typedef struct live_ live_;

#ifdef KD_HAVE_CUDA
static int gpu_sample_(gsamp_ *g, gjob_ *j, live_ *run, int64_t nrun)
{
    const kd_gen_config *c = j->cfg;
    const int64_t V = j->g.V;
    kd_cu *cu = kd_cu_teacher_cu(j->g.cu);
    kd_cu_sample_row *r = g->h_rows;
    for (int64_t i = 0; i < nrun; i++)
        r[i] = (kd_cu_sample_row){c->sampling.temperature, c->sampling.top_p, c->sampling.min_p,
                                  c->sampling.top_k, (uint64_t)c->runtime.seed, run[i].sp.pid, run[i].sp.sample,
                                  (uint64_t)run[i].sp.t};
    KD_TRY(kd_cu_upload_async(g->rows, r, (size_t)nrun * sizeof *r, cu));
    const float *lg = kd_cu_teacher_logits_dev(j->g.cu);
    KD_TRY(kd_cu_sample(g->ids, g->lp, lg, g->rows, nrun, V, cu));
    KD_TRY(kd_cu_download(g->h_ids, g->ids, (size_t)nrun * 4, cu));
    KD_TRY(kd_cu_download(g->h_lp, g->lp, (size_t)nrun * 4, cu));
    for (int64_t i = 0; i < nrun; i++) {
        samp_ *sp = &run[i].sp;
        if (sp->forced >= 0) { /* a forced token: its logits row, for the log-probability */
            KD_TRY(kd_cu_download(sp->row, lg + i * V, (size_t)V * sizeof(float), cu));
            continue;
        }
        if (g->h_ids[i] < 0)
            return kd_err(KD_E_RANGE, "sampling prompt %" PRIu64 " sample %u: the logits hold a NaN or +inf, "
                          "or are all -inf", sp->pid, sp->sample);
        sp->pre = 1;
        sp->pre_id = g->h_ids[i];
        sp->pre_lp = g->h_lp[i];
    }
    return KD_OK;
}
#endif

static int run_engine_(gctx_ *x)
{
    gjob_ *j = x->j;
    const kd_gen_config *c = x->c;
    gmodel_ *m = &j->g;
    const int64_t V = j->g.V, B = c->batch, bs = c->kv_block, nblocks = x->nblocks;
    kd_kvpool *pool = NULL;
    KD_TRY(gm_pool_(m, nblocks, bs, &pool));
    live_ *run = calloc((size_t)B, sizeof *run), *wait = NULL;
    kd_kvseq **seqs = calloc((size_t)B, sizeof *seqs);
    int64_t *next = calloc((size_t)B, sizeof *next), *nn = calloc((size_t)B, sizeof *nn);
    float *logits = malloc((size_t)(B * V) * sizeof *logits);
    size_t nwait = 0, capwait = 0;
    int64_t nrun = 0;
    unit_ *pending_unit = NULL;
    int more = 1, rc = (run && seqs && next && nn && logits) ? KD_OK : kd_err(KD_E_NOMEM, "engine");
    gsamp_ gsamp;
    if (rc == KD_OK)
        rc = gsamp_init_(&gsamp, j, B);
    else
        memset(&gsamp, 0, sizeof gsamp);
    for (int64_t i = 0; rc == KD_OK && i < B; i++)
        nn[i] = 1;
    while (rc == KD_OK) {
        /* admit: preempted samples first, then new prompts */
        while (rc == KD_OK && nrun < B && nwait) {
            live_ *w = &wait[nwait - 1];
            const int64_t need = (w->sp.P + w->sp.t + bs - 1) / bs + 1;
            if (need > kd_kvpool_free_blocks(pool))
                break;
            live_ *l = &run[nrun];
            *l = *w;
            nwait--;
            kd_kvseq *sq = &l->sp.seq;
            int64_t P = l->sp.P;
            rc = gm_step_(m, pool, &sq, 1, l->sp.prompt, &P, 1, l->sp.row);
            /* replay the tokens it had fed, one at a time as before; the token it
             * had chosen last (sp.next) is fed by the next step */
            for (int64_t t = 0; rc == KD_OK && t + 1 < l->sp.t; t++)
                rc = gm_step_(m, pool, &sq, 1, &l->sp.gen[t], &nn[0], 0, l->sp.row);
            l->replay = 0;
            l->fed = l->sp.t == 0;
            nrun++;
        }
        while (rc == KD_OK && more && !nwait) {
            if (!pending_unit && (rc = next_unit_(x, &pending_unit)) == KD_OK && !pending_unit)
                more = 0;
            if (rc || !pending_unit)
                break;
            unit_ *u = pending_unit;
            /* the samples whose first token fits beside the prompt's blocks. Beside
             * running samples: all of them and a block to spare, or the prompt waits
             * for room; in an empty pool at least one (pool_blocks_), the rest are
             * queued */
            const int64_t fit = kd_kvpool_free_blocks(pool) - blocks_(u->P, bs);
            if (nrun > 0 && (nrun + u->nmiss > B || fit <= u->nmiss))
                break;
            if (fit < 1) {
                rc = kd_err(KD_E_INTERNAL, "engine: an empty kv pool of %lld blocks cannot start prompt %" PRIu64
                            " of %lld tokens", (long long)nblocks, u->pid, (long long)u->P);
                break;
            }
            kd_kvseq root = {0}, *rp = &root;
            int64_t P = u->P;
            float *row0 = malloc((size_t)V * sizeof *row0);
            rc = row0 ? gm_step_(m, pool, &rp, 1, u->prompt, &P, 1, row0)
                      : kd_err(KD_E_NOMEM, "row");
            for (int k = 0, n = u->nmiss; rc == KD_OK && k < n; k++) {
                if (nrun == B || k >= fit) { /* more samples than the batch or the pool: queue the rest */
                    if (nwait == capwait) {
                        capwait = capwait ? 2 * capwait : 16;
                        live_ *nw = realloc(wait, capwait * sizeof *nw);
                        if (!nw) {
                            rc = kd_err(KD_E_NOMEM, "queue");
                            break;
                        }
                        wait = nw;
                    }
                    live_ *w = &wait[nwait++];
                    memset(w, 0, sizeof *w);
                    w->u = u;
                    rc = samp_init_(j, &w->sp, u->pid, (uint32_t)u->missing[k], u->prompt, u->P, u->max_new);
                    w->replay = 1;
                    continue;
                }
                live_ *l = &run[nrun];
                memset(l, 0, sizeof *l);
                l->u = u;
                rc = samp_init_(j, &l->sp, u->pid, (uint32_t)u->missing[k], u->prompt, u->P, u->max_new);
                if (rc == KD_OK)
                    rc = kd_kvseq_fork(pool, &root, &l->sp.seq);
                if (rc == KD_OK) {
                    memcpy(l->sp.row, row0, (size_t)V * sizeof(float));
                    l->fed = 1;
                    nrun++;
                }
            }
            kd_kvseq_release(pool, &root);
            free(row0);
            pending_unit = NULL;
        }
        if (rc || (!nrun && !nwait && !more))
            break;
        if (!nrun) {
            rc = kd_err(KD_E_INTERNAL, "engine: nothing runs and %zu samples wait", nwait);
            break;
        }
        /* choose every running sample's next token; record the finished ones */
        for (int64_t i = 0; rc == KD_OK && i < nrun;) {
            live_ *l = &run[i];
            if (!l->fed) { /* re-admitted: its chosen token is still to be fed */
                i++;
                continue;
            }
            rc = samp_advance_(j, &l->sp);
            if (rc == KD_OK && l->sp.done) {
                kd_kvseq_release(pool, &l->sp.seq);
                unit_ *u = l->u;
                rc = samp_finish_(&l->sp);
                if (rc == KD_OK)
                    rc = record_(x, &l->sp);
                unit_done_(u);
                run[i] = run[--nrun];
                continue;
            }
            i++;
        }
        if (rc || !nrun)
            continue;
        /* blocks for one more token each; preempt the newest until they fit */
        for (;;) {
            int64_t need = 0;
            for (int64_t i = 0; i < nrun; i++)
                need += kd_kvseq_need(pool, &run[i].sp.seq, 1);
            if (need <= kd_kvpool_free_blocks(pool))
                break;
            if (nrun == 1) { /* cannot be: its whole sequence fits the pool (pool_blocks_) */
                rc = kd_err(KD_E_INTERNAL, "engine: prompt %" PRIu64 " sample %u alone outgrew the kv pool of %lld "
                            "blocks at %lld tokens", run[0].sp.pid, run[0].sp.sample, (long long)nblocks,
                            (long long)run[0].sp.t);
                break;
            }
            live_ *l = &run[--nrun];
            kd_kvseq_release(pool, &l->sp.seq);
            if (nwait == capwait) {
                capwait = capwait ? 2 * capwait : 16;
                live_ *nw = realloc(wait, capwait * sizeof *nw);
                if (!nw) {
                    rc = kd_err(KD_E_NOMEM, "queue");
                    break;
                }
                wait = nw;
            }
            wait[nwait] = *l;
            wait[nwait].replay = 1;
            nwait++;
            kd_debug("engine: preempted prompt %" PRIu64 " sample %u at %lld tokens", l->sp.pid, l->sp.sample,
                     (long long)l->sp.t);
        }
        if (rc)
            break;
        for (int64_t i = 0; i < nrun; i++) {
            seqs[i] = &run[i].sp.seq;
            next[i] = run[i].sp.next;
        }
        const int gpu_sample = gsamp.on;
        rc = gm_step_(m, pool, seqs, (int)nrun, next, nn, 0, gpu_sample ? NULL : logits);
        if (rc == KD_OK && gpu_sample)
            rc = gpu_sample_(&gsamp, j, run, nrun);
        for (int64_t i = 0; rc == KD_OK && i < nrun; i++) {
            if (!gpu_sample)
                memcpy(run[i].sp.row, logits + i * V, (size_t)V * sizeof(float));
            run[i].fed = 1;
        }
    }
    for (int64_t i = 0; i < nrun; i++) {
        kd_kvseq_release(pool, &run[i].sp.seq);
        samp_free_(&run[i].sp);
        unit_done_(run[i].u);
    }
    for (size_t i = 0; i < nwait; i++) {
        samp_free_(&wait[i].sp);
        unit_done_(wait[i].u);
    }
    if (pending_unit) {
        free(pending_unit->prompt);
        free(pending_unit);
    }
    free(run);
    free(wait);
    free(seqs);
    free(next);
    free(nn);
    free(logits);
    gsamp_free_(&gsamp);
    gm_pool_free_(m, pool);
    return rc;
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
    size_t npids = 0, np = 0;
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
    j.g.batch = c->batch;
    j.g.cuda = c->runtime.device == KD_DEVICE_CUDA && j.g.t;
    if (rc == KD_OK && c->runtime.device == KD_DEVICE_CUDA && !j.g.t)
        kd_info("generate: runtime.device cuda: dense models generate on the CPU (the CUDA engine runs "
                "the DeepSeek teacher)");
    if (rc == KD_OK && j.g.cuda && c->mla)
        kd_info("generate: on CUDA the decode is absorbed whatever `mla` says");
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
        j.work = malloc((size_t)j.g.V * sizeof(float));
        j.scratch = malloc((size_t)j.g.V * 2 * sizeof(float));
        pend = calloc((size_t)c->commit_every, sizeof *pend);
        if (!j.work || !j.scratch || !pend)
            rc = kd_err(KD_E_NOMEM, "generation buffers");
    }
    /* the datasets; the prompt ids, in order */
    if (rc == KD_OK)
        rc = kd_store_open(c->input, c->output && strcmp(c->output, c->input) ? KD_STORE_RDONLY : 0, &in);
    if (rc == KD_OK && c->output && strcmp(c->output, c->input))
        rc = kd_store_open(c->output, KD_STORE_CREATE, &out);
    if (rc == KD_OK && !out)
        out = in;
    if (rc == KD_OK)
        rc = kd_store_prompt_ids(in, c->limit, &pids, &npids);
    /* the kv pool holds every sample alone, or the job stops here */
    int64_t nblocks = 0;
    if (rc == KD_OK)
        rc = pool_blocks_(&j, in, out, pids, npids, &ids, &nblocks);
    uint32_t lineage = 0;
    if (rc == KD_OK) {
        char hash[20];
        snprintf(hash, sizeof hash, "%016" PRIx64, kd_cfg_hash(&kd_gen_schema, c));
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
    gctx_ gx = {.j = &j, .c = c, .in = in, .out = out, .pids = pids, .npids = npids, .pend = pend,
                .np = &np, .lineage = lineage, .res = res, .lens = lens, .pb = pb_on ? &pb : NULL,
                .ids = &ids, .nblocks = nblocks, .t_run = kd_now()};
    if (rc == KD_OK)
        rc = run_engine_(&gx);
    double tok_run = gx.tok_run, t_run = gx.t_run;
    if (rc == KD_OK)
        rc = flush_(in, out, pend, &np, lineage);
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
    free(j.work);
    free(j.scratch);
    kd_tok_free(j.tok);
    kd_teacher_free(j.g.t);
    kd_student_free(j.g.s);
    return rc;
}
