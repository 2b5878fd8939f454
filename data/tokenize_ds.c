/* tokenize_ds.c - kd_curate_tokenize: each unit rendered with a chat template
 * into an `examples` record with its assistant-only loss mask.
 *
 * Messages: a chat prompt's messages, else [system (option), user: prompt
 * text]; then the generation as the assistant turn. In prompt mode (no
 * generations) a chat is rendered as it is, and a plain prompt with an
 * answer gets the answer as the assistant turn.
 *
 * Work goes in batches of `batch` units: the main thread reads the units and
 * builds their messages, `threads` threads render and encode them, and the
 * main thread writes, in unit order, the kept units' records, their examples
 * (ids 0, 1, ... in unit order) and the progress (meta "curate/progress":
 * the next unit's key and ordinal, the next example id, the counts) in one
 * transaction. A killed run leaves OUT.partial with whole batches only; the
 * rerun continues after the last committed unit. */
#include "curate_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/chat.h"
#include "core/log.h"
#include "core/status.h"
#include "core/tokenizer.h"
#include "core/util.h"

int cur_next_(cur_iter_ *it, cur_unit_ *u);

typedef struct titem_ {
    cur_unit_ u;         /* ids, lineages; raw values point at the copies below */
    void *raw[3];        /* copies of the prompt, generation, verdict values */
    kd_chat_msg *msgs;
    char **owned;        /* strings the messages point at */
    size_t nmsgs, nowned;
    kd_ids ids;
    uint8_t *mask;       /* a byte per token */
    int st;
} titem_;

static void titem_release_(titem_ *t)
{
    for (int k = 0; k < 3; k++)
        free(t->raw[k]);
    for (size_t i = 0; i < t->nowned; i++)
        free(t->owned[i]);
    free(t->owned);
    free(t->msgs);
    kd_ids_release(&t->ids);
    free(t->mask);
    memset(t, 0, sizeof *t);
}

static int own_(titem_ *t, const char *s, size_t len, const char **out)
{
    char *c = strndup(s, len);
    char **no = realloc(t->owned, (t->nowned + 1) * sizeof *no);
    if (!c || !no) {
        free(c);
        if (no)
            t->owned = no;
        return kd_err(KD_E_NOMEM, "out of memory");
    }
    t->owned = no;
    t->owned[t->nowned++] = c;
    *out = c;
    return KD_OK;
}

static int push_msg_(titem_ *t, const char *role, const char *content, size_t len)
{
    kd_chat_msg *nm = realloc(t->msgs, (t->nmsgs + 1) * sizeof *nm);
    if (!nm)
        return kd_err(KD_E_NOMEM, "out of memory");
    t->msgs = nm;
    const char *r = NULL, *c = NULL;
    KD_TRY(own_(t, role, strlen(role), &r));
    KD_TRY(own_(t, content, len, &c));
    t->msgs[t->nmsgs++] = (kd_chat_msg){r, c};
    return KD_OK;
}

static void *memdup_(const void *p, size_t n)
{
    void *c = malloc(n ? n : 1);
    if (c)
        memcpy(c, p, n);
    return c;
}

/* Copy the unit and build its messages. A prompt whose messages do not parse
 * gets st = KD_E_FORMAT (dropped as unrenderable). */
static int titem_fill_(titem_ *t, const cur_unit_ *u, const kd_tokenize_opts *o)
{
    t->u = *u;
    if (u->has_prompt && !(t->raw[0] = memdup_(u->praw, u->prawlen)))
        return kd_err(KD_E_NOMEM, "out of memory");
    if (u->has_gen && !(t->raw[1] = memdup_(u->graw, u->grawlen)))
        return kd_err(KD_E_NOMEM, "out of memory");
    if (u->has_verdict && !(t->raw[2] = memdup_(u->vraw, u->vrawlen)))
        return kd_err(KD_E_NOMEM, "out of memory");
    t->u.praw = t->raw[0];
    t->u.graw = t->raw[1];
    t->u.vraw = t->raw[2];
    memset(&t->u.p.text, 0, sizeof t->u.p.text); /* decoded pointers die with the cursor */
    if (u->has_prompt && u->p.chat && u->p.messages.len) {
        json_t *a = json_loadb(u->p.messages.ptr, u->p.messages.len, 0, NULL);
        size_t i;
        json_t *m;
        if (!json_is_array(a))
            t->st = KD_E_FORMAT;
        json_array_foreach(a, i, m)
        {
            const char *role = json_string_value(json_object_get(m, "role"));
            json_t *c = json_object_get(m, "content");
            if (!role || !json_is_string(c)) {
                t->st = KD_E_UNSUPPORTED;
                break;
            }
            int st = push_msg_(t, role, json_string_value(c), json_string_length(c));
            if (st != KD_OK) {
                json_decref(a);
                return st;
            }
        }
        json_decref(a);
    } else if (u->has_prompt) {
        if (o->system && *o->system)
            KD_TRY(push_msg_(t, "system", o->system, strlen(o->system)));
        KD_TRY(push_msg_(t, "user", u->p.text.ptr ? u->p.text.ptr : "", u->p.text.len));
        if (!u->has_gen && u->p.has_answer)
            KD_TRY(push_msg_(t, "assistant", u->p.answer.ptr ? u->p.answer.ptr : "", u->p.answer.len));
    }
    if (u->has_gen)
        KD_TRY(push_msg_(t, "assistant", u->g.text.ptr ? u->g.text.ptr : "", u->g.text.len));
    if (!t->nmsgs)
        t->st = KD_E_FORMAT;
    return KD_OK;
}

typedef struct tpool_ {
    titem_ *items;
    size_t n;
    int threads, k;
    kd_chat_template tpl;
    const kd_tokenizer *tok;
} tpool_;

typedef struct tworker_ {
    tpool_ *p;
    int k;
} tworker_;

static void *encode_thread_(void *arg)
{
    tworker_ *w = arg;
    for (size_t i = (size_t)w->k; i < w->p->n; i += (size_t)w->p->threads) {
        titem_ *t = &w->p->items[i];
        if (t->st == KD_OK)
            t->st = kd_chat_render_ids(w->p->tpl, w->p->tok, t->msgs, t->nmsgs, 0, &t->ids, &t->mask);
    }
    return NULL;
}

static void encode_all_(tpool_ *p)
{
    pthread_t th[64];
    tworker_ w[64];
    int started[64] = {0};
    for (int k = 0; k < p->threads; k++) {
        w[k] = (tworker_){p, k};
        if (k)
            started[k] = pthread_create(&th[k], NULL, encode_thread_, &w[k]) == 0;
    }
    encode_thread_(&w[0]);
    for (int k = 1; k < p->threads; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else
            encode_thread_(&w[k]); /* could not start a thread: do its share here */
    }
}

static int load_tokenizer_(const char *spec, kd_tokenizer **out)
{
    char dir[4096];
    struct stat sb;
    if (!spec || !*spec)
        return kd_err(KD_E_CONFIG, "tokenize: 'tokenizer' is not set");
    if (strchr(spec, '/') || stat(spec, &sb) == 0)
        return kd_tok_load(spec, out);
    KD_TRY(kd_tokenizer_dir(spec, dir, sizeof dir));
    return kd_tok_load(dir, out);
}

/* Write progress + counts into the open batch. */
static int put_progress_(cur_job_ *j, uint64_t pid, uint32_t sample, uint64_t ordinal, uint64_t next_ex, int done)
{
    json_t *reasons = json_object();
    for (int i = 0; i < j->rep->nreasons; i++)
        json_object_set_new(reasons, j->rep->reasons[i].name, json_integer((json_int_t)j->rep->reasons[i].n));
    json_t *m = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:b}", "next_prompt", (json_int_t)pid, "next_sample",
                          (json_int_t)sample, "ordinal", (json_int_t)ordinal, "next_example", (json_int_t)next_ex,
                          "kept", (json_int_t)j->rep->kept, "dropped", (json_int_t)j->rep->dropped, "reasons",
                          reasons, "done", done);
    if (!m)
        return kd_err(KD_E_NOMEM, "out of memory");
    int st = kd_store_meta_put(j->b, "curate/progress", m);
    json_decref(m);
    return st;
}

/* meta "tokenizer": what made the examples, so training can check its vocabulary */
static int put_tokmeta_(cur_job_ *j, const kd_tokenizer *tok, kd_chat_template tpl)
{
    char fp[20];
    snprintf(fp, sizeof fp, "%016" PRIx64, kd_tok_fingerprint(tok));
    json_t *m = json_pack("{s:s, s:I, s:s, s:s}", "fingerprint", fp, "vocab_size",
                          (json_int_t)kd_tok_vocab_size(tok), "template", kd_chat_template_name(tpl),
                          "eot", kd_chat_template_eot(tpl));
    if (!m)
        return kd_err(KD_E_NOMEM, "out of memory");
    int st = kd_store_meta_put(j->b, "tokenizer", m);
    json_decref(m);
    return st;
}

int kd_curate_tokenize(const char *in_dir, const char *out_dir, const kd_tokenize_opts *o, kd_curate_report *rep)
{
    kd_chat_template tpl;
    KD_TRY(kd_chat_template_find(o->template_name ? o->template_name : "", &tpl));
    kd_tokenizer *tok = NULL;
    cur_job_ j;
    int st = cur_begin_(&j, "tokenize", &kd_tokenize_schema, o, &o->run, in_dir, out_dir, 1, rep);
    if (st != 0)
        return st < 0 ? st : KD_OK;
    int r_long = cur_reason_(rep, "too_long"), r_bad = cur_reason_(rep, "unrenderable");
    uint64_t pid = 0, next_ex = 0, ordinal = 0;
    uint32_t sample = 0;
    if (j.resumed) {
        kd_store_read *r;
        json_t *m = NULL;
        st = kd_store_read_begin(j.out, &r);
        if (st == KD_OK) {
            if (kd_store_meta_get(r, "curate/progress", &m) != KD_OK)
                m = NULL;
            kd_store_read_end(r);
        }
        kd_err_clear();
        if (m) {
            pid = (uint64_t)json_integer_value(json_object_get(m, "next_prompt"));
            sample = (uint32_t)json_integer_value(json_object_get(m, "next_sample"));
            ordinal = (uint64_t)json_integer_value(json_object_get(m, "ordinal"));
            next_ex = (uint64_t)json_integer_value(json_object_get(m, "next_example"));
            rep->kept = (uint64_t)json_integer_value(json_object_get(m, "kept"));
            rep->dropped = (uint64_t)json_integer_value(json_object_get(m, "dropped"));
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(m, "reasons"), k, v)
            rep->reasons[cur_reason_(rep, k)].n = (uint64_t)json_integer_value(v);
            json_decref(m);
            kd_info("tokenize: resuming '%s' at unit %" PRIu64 " (%" PRIu64 " examples written)", j.partial, ordinal,
                    next_ex);
        }
    }
    if (st == KD_OK)
        st = load_tokenizer_(o->tokenizer, &tok);
    cur_iter_ it;
    if (st == KD_OK)
        st = cur_iter_open_(j.in, &it);
    if (st != KD_OK) {
        kd_tok_free(tok);
        cur_abort_(&j);
        return st;
    }
    snprintf(rep->unit, sizeof rep->unit, "%s", it.gen_mode ? "generations" : "prompts");
    if (ordinal)
        st = cur_iter_seek_(&it, pid, sample, ordinal);
    size_t bsz = (size_t)(o->batch > 0 ? o->batch : 256);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    tpool_ pool = {.threads = (int)(o->threads > 0 ? o->threads : (ncpu > 0 ? ncpu : 1)), .tpl = tpl, .tok = tok};
    if (pool.threads > 64)
        pool.threads = 64;
    pool.items = calloc(bsz, sizeof *pool.items);
    if (!pool.items)
        st = kd_err(KD_E_NOMEM, "out of memory");
    kd_progress pb;
    if (o->run.progress) {
        kd_progress_init(&pb, "tokenize", it.total);
        kd_progress_add(&pb, ordinal);
    }
    int bad_logged = 0, more = 1;
    uint32_t *bits = NULL;
    while (st == KD_OK && more) {
        /* read a batch */
        pool.n = 0;
        cur_unit_ u;
        while (pool.n < bsz) {
            int got = cur_next_(&it, &u);
            if (got < 0) {
                st = got;
                break;
            }
            if (!got) {
                more = 0;
                break;
            }
            st = titem_fill_(&pool.items[pool.n++], &u, o);
            if (st != KD_OK)
                break;
        }
        if (st != KD_OK || !pool.n)
            break;
        encode_all_(&pool);
        /* write it, in order, with the progress, in one transaction */
        st = cur_batch_(&j);
        for (size_t i = 0; i < pool.n && st == KD_OK; i++) {
            titem_ *t = &pool.items[i];
            if (t->st == KD_E_NOMEM) {
                st = kd_err(KD_E_NOMEM, "out of memory");
                break;
            }
            if (t->st != KD_OK) {
                if (bad_logged++ < 5)
                    kd_warn("tokenize: unit (%" PRIu64 ", %u) cannot be rendered: %s", t->u.has_gen ? t->u.g.id : t->u.p.id,
                            t->u.has_gen ? t->u.g.sample : 0, kd_strerror(t->st));
                rep->dropped++;
                rep->reasons[r_bad].n++;
                continue;
            }
            size_t n = t->ids.n;
            if (o->max_tokens > 0 && n > (size_t)o->max_tokens) {
                if (!o->truncate) {
                    rep->dropped++;
                    rep->reasons[r_long].n++;
                    continue;
                }
                n = (size_t)o->max_tokens;
            }
            uint32_t *nb = realloc(bits, (n + 31) / 32 * 4 + 4);
            if (!nb) {
                st = kd_err(KD_E_NOMEM, "out of memory");
                break;
            }
            bits = nb;
            uint8_t *mb = (uint8_t *)bits;
            memset(mb, 0, (n + 7) / 8);
            for (size_t k = 0; k < n; k++)
                if (t->mask[k])
                    mb[k >> 3] |= (uint8_t)(1u << (k & 7));
            st = cur_copy_unit_(&j, &t->u);
            if (st != KD_OK)
                break;
            kd_record ex = {.db = KD_DB_EXAMPLES,
                            .id = next_ex,
                            .lineage = j.lineage,
                            .origin_id = t->u.has_gen ? t->u.g.id : t->u.p.id,
                            .origin_sample = t->u.has_gen ? t->u.g.sample : KD_NONE32,
                            .n_tokens = (uint32_t)n,
                            .ids = t->ids.ids,
                            .mask = mb};
            st = kd_store_put(j.b, &ex, KD_PUT_REPLACE, NULL);
            next_ex++;
            rep->kept++;
        }
        if (st == KD_OK) {
            const titem_ *last = &pool.items[pool.n - 1];
            uint64_t npid = last->u.has_gen ? last->u.g.id : last->u.p.id + 1;
            uint32_t nsample = last->u.has_gen ? last->u.g.sample + 1 : 0;
            /* the next unit's key: the one after the last (sample + 1 seeks to the next key) */
            st = put_progress_(&j, npid, nsample, last->u.ordinal + 1, next_ex, 0);
            if (st == KD_OK)
                st = put_tokmeta_(&j, tok, tpl);
        }
        if (st == KD_OK)
            st = cur_commit_(&j, 0);
        if (o->run.progress)
            kd_progress_add(&pb, pool.n);
        for (size_t i = 0; i < pool.n; i++)
            titem_release_(&pool.items[i]);
    }
    for (size_t i = 0; i < pool.n && pool.items; i++)
        titem_release_(&pool.items[i]);
    if (o->run.progress)
        kd_progress_finish(&pb);
    free(bits);
    free(pool.items);
    cur_iter_close_(&it);
    kd_tok_free(tok);
    if (st != KD_OK) {
        cur_abort_(&j);
        return st;
    }
    rep->examples = rep->kept;
    return cur_finish_(&j);
}
