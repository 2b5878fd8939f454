/* kvpool.c - the paged KV cache (see kvpool.h). */
#include "core/kvpool.h"

#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/status.h"

struct kd_kvpool {
    int64_t bs, nblocks, row, L, max_pos, half;
    float *mem;         /* (nblocks, L, bs, row) */
    int32_t *ref;       /* (nblocks) */
    int32_t *freel;     /* (nblocks) a stack of free block ids */
    int64_t nfree;
    float *cos_, *sin_; /* (max_pos, half) */
    void (*on_copy)(void *ctx, int32_t from, int32_t to);
    void *copy_ctx;
};

int kd_kvpool_new_index(int64_t nblocks, int64_t block, int64_t max_pos, kd_kvpool **out)
{
    *out = NULL;
    if (nblocks <= 0 || block <= 0 || max_pos <= 0 || nblocks > INT32_MAX)
        return kd_err(KD_E_RANGE, "kv pool index of %lld blocks of %lld positions, context %lld",
                      (long long)nblocks, (long long)block, (long long)max_pos);
    kd_kvpool *p = calloc(1, sizeof *p);
    if (p) {
        p->ref = calloc((size_t)nblocks, sizeof *p->ref);
        p->freel = malloc((size_t)nblocks * sizeof *p->freel);
    }
    if (!p || !p->ref || !p->freel) {
        kd_kvpool_free(p);
        return kd_err(KD_E_NOMEM, "kv pool index of %lld blocks", (long long)nblocks);
    }
    p->bs = block;
    p->nblocks = nblocks;
    p->max_pos = max_pos;
    for (int64_t i = 0; i < nblocks; i++)
        p->freel[i] = (int32_t)(nblocks - 1 - i);
    p->nfree = nblocks;
    *out = p;
    return KD_OK;
}

void kd_kvpool_on_copy(kd_kvpool *p, void (*fn)(void *ctx, int32_t from, int32_t to), void *ctx)
{
    p->on_copy = fn;
    p->copy_ctx = ctx;
}

int kd_kvpool_new(int64_t L, int64_t row, int64_t nblocks, int64_t block, const kd_rope *rope,
                  int64_t rope_dim, int64_t max_pos, kd_kvpool **out)
{
    *out = NULL;
    if (L <= 0 || row <= 0 || nblocks <= 0 || block <= 0 || rope_dim <= 0 || nblocks > INT32_MAX)
        return kd_err(KD_E_RANGE, "kv pool of %lld blocks of %lld positions, %lld layers of %lld floats",
                      (long long)nblocks, (long long)block, (long long)L, (long long)row);
    const int64_t half = rope_dim / 2, maxp = max_pos > 0 ? max_pos : nblocks * block;
    kd_kvpool *p = calloc(1, sizeof *p);
    if (p) {
        p->mem = malloc((size_t)nblocks * (size_t)L * (size_t)block * (size_t)row * sizeof(float));
        p->ref = calloc((size_t)nblocks, sizeof *p->ref);
        p->freel = malloc((size_t)nblocks * sizeof *p->freel);
        p->cos_ = malloc((size_t)(2 * maxp * half) * sizeof(float));
    }
    if (!p || !p->mem || !p->ref || !p->freel || !p->cos_) {
        kd_kvpool_free(p);
        return kd_err(KD_E_NOMEM, "kv pool of %lld blocks of %lld positions", (long long)nblocks,
                      (long long)block);
    }
    p->bs = block;
    p->nblocks = nblocks;
    p->row = row;
    p->L = L;
    p->max_pos = maxp;
    p->half = half;
    p->sin_ = p->cos_ + maxp * half;
    for (int64_t i = 0; i < nblocks; i++)
        p->freel[i] = (int32_t)(nblocks - 1 - i);
    p->nfree = nblocks;
    int rc = kd_rope_table(p->cos_, p->sin_, rope, maxp, rope_dim, NULL);
    if (rc) {
        kd_kvpool_free(p);
        return rc;
    }
    *out = p;
    return KD_OK;
}

void kd_kvpool_free(kd_kvpool *p)
{
    if (!p)
        return;
    free(p->mem);
    free(p->ref);
    free(p->freel);
    free(p->cos_);
    free(p);
}

int64_t kd_kvpool_free_blocks(const kd_kvpool *p) { return p->nfree; }
int64_t kd_kvpool_block(const kd_kvpool *p) { return p->bs; }
int64_t kd_kvpool_max_pos(const kd_kvpool *p) { return p->max_pos; }
const float *kd_kvpool_cos(const kd_kvpool *p, int64_t t) { return p->cos_ + t * p->half; }
const float *kd_kvpool_sin(const kd_kvpool *p, int64_t t) { return p->sin_ + t * p->half; }

static void unref_(kd_kvpool *p, int32_t b)
{
    if (--p->ref[b] == 0)
        p->freel[p->nfree++] = b;
}

void kd_kvseq_release(kd_kvpool *p, kd_kvseq *s)
{
    for (int64_t i = 0; i < s->nblocks; i++)
        unref_(p, s->blocks[i]);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}

int kd_kvseq_fork(kd_kvpool *p, const kd_kvseq *src, kd_kvseq *dst)
{
    memset(dst, 0, sizeof *dst);
    if (src->nblocks) {
        dst->blocks = malloc((size_t)src->nblocks * sizeof *dst->blocks);
        if (!dst->blocks)
            return kd_err(KD_E_NOMEM, "block table");
        memcpy(dst->blocks, src->blocks, (size_t)src->nblocks * sizeof *dst->blocks);
        for (int64_t i = 0; i < src->nblocks; i++)
            p->ref[src->blocks[i]]++;
    }
    dst->nblocks = dst->cap = src->nblocks;
    dst->len = src->len;
    return KD_OK;
}

int64_t kd_kvseq_need(const kd_kvpool *p, const kd_kvseq *s, int64_t n)
{
    int64_t need = (s->len + n + p->bs - 1) / p->bs - s->nblocks;
    /* a shared, partly filled last block is copied before it is written */
    if (s->len % p->bs && s->nblocks && p->ref[s->blocks[s->nblocks - 1]] > 1)
        need++;
    return need > 0 ? need : 0;
}

/* Make room for n more positions: copy a shared last block, add blocks. The
 * caller has checked kd_kvseq_need against the free blocks. */
static int grow_(kd_kvpool *p, kd_kvseq *s, int64_t n)
{
    const int64_t want = (s->len + n + p->bs - 1) / p->bs;
    if (want > s->cap) {
        int32_t *nb = realloc(s->blocks, (size_t)want * sizeof *nb);
        if (!nb)
            return kd_err(KD_E_NOMEM, "block table");
        s->blocks = nb;
        s->cap = want;
    }
    if (s->len % p->bs && s->nblocks && p->ref[s->blocks[s->nblocks - 1]] > 1) {
        int32_t old = s->blocks[s->nblocks - 1], nw = p->freel[--p->nfree];
        const size_t bsz = (size_t)(p->L * p->bs * p->row);
        if (p->mem)
            memcpy(p->mem + (size_t)nw * bsz, p->mem + (size_t)old * bsz, bsz * sizeof(float));
        if (p->on_copy)
            p->on_copy(p->copy_ctx, old, nw);
        p->ref[nw] = 1;
        unref_(p, old);
        s->blocks[s->nblocks - 1] = nw;
    }
    while (s->nblocks < want) {
        int32_t b = p->freel[--p->nfree];
        p->ref[b] = 1;
        s->blocks[s->nblocks++] = b;
    }
    return KD_OK;
}

int kd_kvpool_reserve(kd_kvpool *p, kd_kvseq *const *seqs, int nseq, const int64_t *nn)
{
    int64_t need = 0;
    for (int i = 0; i < nseq; i++) {
        if (nn[i] < 0 || seqs[i]->len + nn[i] > p->max_pos)
            return kd_err(KD_E_RANGE, "%lld new tokens at position %lld of sequence %d: past the context of %lld",
                          (long long)nn[i], (long long)seqs[i]->len, i, (long long)p->max_pos);
        need += kd_kvseq_need(p, seqs[i], nn[i]);
    }
    if (need > p->nfree)
        return kd_err(KD_E_RANGE, "kv pool full: %lld blocks needed, %lld free", (long long)need,
                      (long long)p->nfree);
    for (int i = 0; i < nseq; i++)
        KD_TRY(grow_(p, seqs[i], nn[i]));
    return KD_OK;
}

float *kd_kvpool_at(const kd_kvpool *p, const kd_kvseq *s, int64_t l, int64_t t)
{
    return p->mem + (((size_t)s->blocks[t / p->bs] * (size_t)p->L + (size_t)l) * (size_t)p->bs +
                     (size_t)(t % p->bs)) * (size_t)p->row;
}

void kd_kvpool_gather(const kd_kvpool *p, const kd_kvseq *s, int64_t l, int64_t T, float *dst)
{
    /* a block's positions of one layer are contiguous: copy them in runs */
    for (int64_t t = 0; t < T; t += p->bs) {
        const int64_t n = T - t < p->bs ? T - t : p->bs;
        memcpy(dst + t * p->row, kd_kvpool_at(p, s, l, t), (size_t)(n * p->row) * sizeof(float));
    }
}
