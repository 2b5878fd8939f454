/* data.c - the trainer's examples: read in place from a dataset, or
 * tokenized from a .jsonl of chats; checked, truncated, split, packed.
 * See sft_impl.h.
 */
#include "sft/sft_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/chat.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/util.h"

static int push_doc_(sft_docs *d, const void *ids, const uint8_t *mask, uint32_t n)
{
    if (d->n == d->cap) {
        int64_t cap = d->cap ? 2 * d->cap : 1024;
        sft_doc *nd = realloc(d->d, (size_t)cap * sizeof *nd);
        if (!nd)
            return kd_err(KD_E_NOMEM, "example list");
        d->d = nd;
        d->cap = cap;
    }
    d->d[d->n++] = (sft_doc){.ids = ids, .mask = mask, .n = n, .full = n};
    return KD_OK;
}

static int own_(sft_source *s, void *p)
{
    if (s->nowned == s->capowned) {
        size_t cap = s->capowned ? 2 * s->capowned : 256;
        void **n = realloc(s->owned, cap * sizeof *n);
        if (!n) {
            free(p);
            return kd_err(KD_E_NOMEM, "example storage");
        }
        s->owned = n;
        s->capowned = cap;
    }
    s->owned[s->nowned++] = p;
    return KD_OK;
}

/* ---- a dataset folder: zero-copy ---------------------------------------------------- */

static int open_store_(sft_source *s, const char *path, sft_docs *out)
{
    KD_TRY(kd_store_open(path, KD_STORE_RDONLY, &s->store));
    KD_TRY(kd_store_read_begin(s->store, &s->rd));
    json_t *tm = NULL;
    if (kd_store_meta_get(s->rd, "tokenizer", &tm) == KD_OK && tm) {
        const char *fp = json_string_value(json_object_get(tm, "fingerprint"));
        if (fp)
            s->fingerprint = strtoull(fp, NULL, 16), s->has_fingerprint = 1;
        json_decref(tm);
    }
    kd_err_clear();
    kd_store_cursor *c = NULL;
    KD_TRY(kd_store_cursor_open(s->rd, KD_DB_EXAMPLES, &c));
    kd_record r;
    int st;
    while ((st = kd_store_cursor_next(c, &r)) == 1) {
        /* the pointers stay valid while the read transaction lives (the run) */
        if ((st = push_doc_(out, r.ids, r.mask, r.n_tokens)))
            break;
    }
    kd_store_cursor_close(c);
    if (st < 0)
        return st;
    if (!out->n)
        return kd_err(KD_E_NOTFOUND, "'%s' holds no tokenized examples (run `distill data curate` "
                      "with a tokenize step first)", path);
    return KD_OK;
}

/* ---- a .jsonl of chats: tokenized here ----------------------------------------------- */

static int open_jsonl_(sft_source *s, const char *path, const sft_tok *tk, const char *field,
                       sft_docs *out)
{
    if (!tk->tok)
        return kd_err(KD_E_CONFIG, "'%s': a .jsonl of chats needs a tokenizer (data.tokenizer, or "
                      "tokenizer.json in the model folder)", path);
    FILE *f = fopen(path, "rb");
    if (!f)
        return kd_err(errno == ENOENT ? KD_E_NOTFOUND : KD_E_IO, "'%s': %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int64_t lineno = 0;
    int st = KD_OK;
    kd_ids ids;
    kd_ids_init(&ids);
    kd_chat_msg *msgs = NULL;
    size_t mcap = 0;
    while (st == KD_OK && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!len)
            continue; /* blank lines between records are harmless */
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &je);
        json_t *a = o ? json_object_get(o, field) : NULL;
        if (!o || !json_is_object(o)) {
            st = kd_err(KD_E_FORMAT, "%s:%lld: %s", path, (long long)lineno,
                        o ? "not a JSON object" : je.text);
        } else if (!json_is_array(a) || !json_array_size(a)) {
            st = kd_err(KD_E_FORMAT, "%s:%lld: \"%s\" must be a non-empty array of messages", path,
                        (long long)lineno, field);
        } else {
            size_t n = json_array_size(a);
            if (n > mcap) {
                kd_chat_msg *nm = realloc(msgs, n * sizeof *nm);
                if (!nm)
                    st = kd_err(KD_E_NOMEM, "messages");
                else
                    msgs = nm, mcap = n;
            }
            for (size_t i = 0; st == KD_OK && i < n; i++) {
                json_t *m = json_array_get(a, i);
                msgs[i].role = json_string_value(json_object_get(m, "role"));
                msgs[i].content = json_string_value(json_object_get(m, "content"));
                if (!msgs[i].role || !msgs[i].content)
                    st = kd_err(KD_E_FORMAT, "%s:%lld: message %zu needs string \"role\" and "
                                "\"content\"", path, (long long)lineno, i);
            }
            uint8_t *mask = NULL;
            if (st == KD_OK) {
                st = kd_chat_render_ids(tk->tpl, tk->tok, msgs, n, 0, &ids, &mask);
                if (st)
                    st = kd_err_wrap(st, "%s:%lld", path, (long long)lineno);
            }
            if (st == KD_OK) {
                /* the store's layout: int32 ids, then the mask as bits */
                size_t nb = (ids.n + 7) / 8;
                char *mem = malloc(ids.n * 4 + nb + 1);
                if (!mem) {
                    st = kd_err(KD_E_NOMEM, "example");
                } else {
                    memcpy(mem, ids.ids, ids.n * 4);
                    uint8_t *bits = (uint8_t *)mem + ids.n * 4;
                    memset(bits, 0, nb);
                    for (size_t k = 0; k < ids.n; k++)
                        if (mask[k])
                            bits[k >> 3] |= (uint8_t)(1u << (k & 7));
                    st = own_(s, mem);
                    if (st == KD_OK)
                        st = push_doc_(out, mem, bits, (uint32_t)ids.n);
                }
            }
            free(mask);
        }
        json_decref(o);
    }
    free(line);
    free(msgs);
    kd_ids_release(&ids);
    if (st == KD_OK && ferror(f))
        st = kd_err(KD_E_IO, "'%s': read error", path);
    fclose(f);
    if (st == KD_OK && !out->n)
        st = kd_err(KD_E_NOTFOUND, "'%s' holds no chats", path);
    s->has_fingerprint = 1; /* tokenized here, with the run's tokenizer */
    s->fingerprint = tk->fingerprint;
    return st;
}

int sft_source_open(sft_source *s, const char *path, const sft_tok *tk, const char *field,
                    sft_docs *out)
{
    memset(s, 0, sizeof *s);
    size_t n = strlen(path);
    if (kd_is_dir(path))
        return open_store_(s, path, out);
    if (n >= 6 && !strcmp(path + n - 6, ".jsonl"))
        return open_jsonl_(s, path, tk, field, out);
    return kd_err(KD_E_NOTFOUND, "'%s' is neither a dataset folder nor a .jsonl file", path);
}

void sft_source_close(sft_source *s)
{
    if (s->rd)
        kd_store_read_end(s->rd);
    if (s->store)
        kd_store_close(s->store);
    for (size_t i = 0; i < s->nowned; i++)
        free(s->owned[i]);
    free(s->owned);
    memset(s, 0, sizeof *s);
}

/* ---- checks, truncation, targets ------------------------------------------------------ */

static inline int32_t tok_(const sft_doc *d, uint32_t i)
{
    int32_t v;
    memcpy(&v, (const char *)d->ids + 4 * (size_t)i, 4);
    return v;
}

static inline int mask_(const sft_doc *d, uint32_t i) { return (d->mask[i >> 3] >> (i & 7)) & 1; }

int sft_docs_prepare(sft_docs *d, const kd_sft_data *o, int64_t vocab, const char *what,
                     kd_sft_result *res)
{
    int64_t w = 0, warned = 0;
    for (int64_t i = 0; i < d->n; i++) {
        sft_doc x = d->d[i];
        for (uint32_t k = 0; k < x.n; k++) {
            int32_t t = tok_(&x, k);
            if (t < 0 || t >= vocab)
                return kd_err(KD_E_RANGE, "%s example %lld, token %u: id %d is outside the model's "
                              "vocabulary [0, %lld): the examples were tokenized for another model",
                              what, (long long)i, k, t, (long long)vocab);
        }
        if (x.n == 0) {
            res->skipped_empty++;
            if (warned++ < 3)
                kd_warn("sft: %s example %lld is empty; skipped", what, (long long)i);
            continue;
        }
        if (x.n > (uint32_t)o->max_len) {
            if (o->overlong == KD_SFT_DROP) {
                res->dropped_long++;
                continue;
            }
            res->truncated++;
            x.n = (uint32_t)o->max_len;
        }
        int64_t tg = 0;
        for (uint32_t k = 1; k < x.n; k++)
            tg += o->loss_on == KD_SFT_LOSS_ALL || mask_(&x, k);
        if (!tg) {
            res->skipped_no_target++;
            if (warned++ < 3)
                kd_warn("sft: %s example %lld has no token to learn (all masked%s); skipped", what,
                        (long long)i, x.n < x.full ? " after truncation" : "");
            continue;
        }
        x.targets = tg;
        d->d[w++] = x;
    }
    d->n = w;
    if (!w)
        return kd_err(KD_E_NOTFOUND, "no usable %s example (empty %lld, no target %lld, too long %lld)",
                      what, (long long)res->skipped_empty, (long long)res->skipped_no_target,
                      (long long)res->dropped_long);
    return KD_OK;
}

int sft_docs_split(sft_docs *train, sft_docs *eval, double fraction, uint64_t seed)
{
    int64_t k = (int64_t)floor(fraction * (double)train->n + 0.5);
    if (k <= 0)
        return KD_OK;
    if (k >= train->n)
        return kd_err(KD_E_CONFIG, "data.eval_fraction %g leaves no training example of %lld",
                      fraction, (long long)train->n);
    uint64_t *perm = malloc((size_t)train->n * sizeof *perm);
    uint8_t *is_eval = calloc((size_t)train->n, 1);
    if (!perm || !is_eval) {
        free(perm);
        free(is_eval);
        return kd_err(KD_E_NOMEM, "eval split");
    }
    for (int64_t i = 0; i < train->n; i++)
        perm[i] = (uint64_t)i;
    kd_rng r;
    kd_rng_seed(&r, seed ^ 0x6576616c73706c74ull); /* "evalsplt": its own stream */
    kd_rng_shuffle_u64(&r, perm, (size_t)train->n);
    for (int64_t i = 0; i < k; i++)
        is_eval[perm[i]] = 1;
    int64_t w = 0;
    int st = KD_OK;
    for (int64_t i = 0; i < train->n && st == KD_OK; i++) {
        if (is_eval[i]) {
            st = push_doc_(eval, NULL, NULL, 0);
            if (st == KD_OK)
                eval->d[eval->n - 1] = train->d[i];
        } else
            train->d[w++] = train->d[i];
    }
    train->n = w;
    free(perm);
    free(is_eval);
    return st;
}

/* ---- the plan of an epoch: rows of documents ------------------------------------------ */

void sft_plan_free(sft_plan *p)
{
    free(p->row_start);
    free(p->doc);
    memset(p, 0, sizeof *p);
}

int sft_plan_make(sft_plan *p, const sft_docs *d, int64_t cap, uint64_t seed, int64_t epoch,
                  int shuffle)
{
    sft_plan_free(p);
    const int64_t n = d->n;
    uint64_t *order = malloc((size_t)n * sizeof *order);
    int64_t *len = malloc((size_t)n * sizeof *len), *bin = malloc((size_t)n * sizeof *bin);
    int st = KD_OK;
    if (!order || !len || !bin) {
        st = kd_err(KD_E_NOMEM, "epoch plan");
        goto done;
    }
    for (int64_t i = 0; i < n; i++)
        order[i] = (uint64_t)i;
    kd_rng r;
    kd_rng_seed(&r, seed + 0x9e3779b97f4a7c15ull * (uint64_t)(epoch + 1));
    if (shuffle)
        kd_rng_shuffle_u64(&r, order, (size_t)n);
    for (int64_t i = 0; i < n; i++)
        len[i] = d->d[order[i]].n;
    int64_t nb = kd_sft_pack(len, n, cap, bin);
    if (nb < 0) {
        st = KD_E_NOMEM;
        goto done;
    }
    /* rows in a shuffled order; inside a row, documents in placement order */
    uint64_t *rows = malloc((size_t)nb * sizeof *rows);
    int64_t *rank = malloc((size_t)nb * sizeof *rank);
    p->row_start = calloc((size_t)nb + 1, sizeof *p->row_start);
    p->doc = malloc((size_t)n * sizeof *p->doc);
    if (!rows || !rank || !p->row_start || !p->doc) {
        free(rows);
        free(rank);
        st = kd_err(KD_E_NOMEM, "epoch plan");
        goto done;
    }
    for (int64_t b = 0; b < nb; b++)
        rows[b] = (uint64_t)b;
    if (shuffle)
        kd_rng_shuffle_u64(&r, rows, (size_t)nb);
    for (int64_t b = 0; b < nb; b++)
        rank[rows[b]] = b;
    for (int64_t i = 0; i < n; i++)
        p->row_start[rank[bin[i]] + 1]++;
    for (int64_t b = 0; b < nb; b++)
        p->row_start[b + 1] += p->row_start[b];
    int64_t *fill = calloc((size_t)nb, sizeof *fill);
    if (!fill) {
        free(rows);
        free(rank);
        st = kd_err(KD_E_NOMEM, "epoch plan");
        goto done;
    }
    /* items in the order they were packed (longest first) keep the packer's placement order */
    for (int64_t i = 0; i < n; i++) {
        int64_t row = rank[bin[i]];
        p->doc[p->row_start[row] + fill[row]++] = (int64_t)order[i];
    }
    free(fill);
    free(rows);
    free(rank);
    p->nrows = nb;
done:
    free(order);
    free(len);
    free(bin);
    if (st)
        sft_plan_free(p);
    return st;
}

/* ---- a micro-batch's tensors ------------------------------------------------------------ */

int sft_batch_fill(sft_batch *b, const sft_docs *d, const sft_plan *p, int64_t row0, int64_t nrows,
                   int loss_on)
{
    int64_t T = 1, sum = 0;
    for (int64_t r = row0; r < row0 + nrows; r++) {
        int64_t fill = 0;
        for (int64_t k = p->row_start[r]; k < p->row_start[r + 1]; k++)
            fill += d->d[p->doc[k]].n;
        if (fill > T)
            T = fill;
        sum += fill;
    }
    const int64_t rows = b->flat ? 1 : nrows; /* flat: every document in one row */
    if (b->flat)
        T = sum > 0 ? sum : 1;
    size_t need = (size_t)(rows * T);
    if (need > b->cap) {
        int64_t *ids = realloc(b->ids, need * sizeof *ids);
        if (ids)
            b->ids = ids;
        int64_t *lab = ids ? realloc(b->labels, need * sizeof *lab) : NULL;
        if (lab)
            b->labels = lab;
        int64_t *pos = lab ? realloc(b->pos, need * sizeof *pos) : NULL;
        if (!pos)
            return kd_err(KD_E_NOMEM, "batch of %zu tokens", need);
        b->pos = pos;
        b->cap = need;
    }
    b->B = rows;
    b->T = T;
    b->targets = 0;
    b->tokens = 0;
    int64_t t = 0;
    for (int64_t r = 0; r < nrows; r++) {
        int64_t *ids = b->ids + (b->flat ? 0 : r * T), *lab = b->labels + (b->flat ? 0 : r * T);
        int64_t *pos = b->pos + (b->flat ? 0 : r * T);
        if (!b->flat)
            t = 0;
        for (int64_t k = p->row_start[row0 + r]; k < p->row_start[row0 + r + 1]; k++) {
            const sft_doc *x = &d->d[p->doc[k]];
            for (uint32_t i = 0; i < x->n; i++, t++) {
                ids[t] = tok_(x, i);
                lab[t] = i && (loss_on == KD_SFT_LOSS_ALL || mask_(x, i)) ? ids[t] : -100;
                pos[t] = i;
            }
            b->targets += x->targets;
            b->tokens += x->n;
        }
        for (int64_t i = 0; !b->flat && t < T; t++, i++) { /* padding: its own document, never a target */
            ids[t] = 0;
            lab[t] = -100;
            pos[t] = i;
        }
    }
    for (; b->flat && t < T; t++) /* rows without tokens: one padding token */
        b->ids[t] = 0, b->labels[t] = -100, b->pos[t] = 0;
    return KD_OK;
}

void sft_batch_free(sft_batch *b)
{
    free(b->ids);
    free(b->labels);
    free(b->pos);
    memset(b, 0, sizeof *b);
}
