/* kvpool.h - the paged KV cache, for every model that generates.
 *
 * A pool of fixed-size blocks, each holding `block` positions of every layer:
 * (L, block, row) floats, where a position's row is whatever the model caches
 * (a dense model: its rotated keys and its values; DeepSeek's MLA: the
 * normalised latent and the rotated rope key). A sequence owns a block table
 * (kd_kvseq). Blocks are reference-counted: the samples of one prompt share
 * its blocks (kd_kvseq_fork), and a sequence about to write into a shared,
 * partly filled block copies it first (copy-on-write).
 *
 * The pool also holds the rope table (cos, sin) of every position it can
 * hold, so that a batched step rotates each new token at its own position.
 *
 * Not thread-safe: one engine owns a pool. */
#ifndef KD_CORE_KVPOOL_H
#define KD_CORE_KVPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "core/hfconfig.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_kvpool kd_kvpool;
typedef struct kd_kvseq {
    int64_t len;     /* positions filled */
    int32_t *blocks; /* the block table */
    int64_t nblocks, cap;
} kd_kvseq; /* zero-initialise; empty it with kd_kvseq_release */

/* A pool of nblocks blocks of `block` positions for L layers of `row` floats
 * each, and the rope table for positions 0 .. max_pos-1 (rope_dim the
 * rotated width; max_pos <= 0: as many positions as the pool holds).
 * Errors: KD_E_RANGE (a size <= 0), KD_E_NOMEM, and kd_rope_table's. */
int kd_kvpool_new(int64_t L, int64_t row, int64_t nblocks, int64_t block, const kd_rope *rope,
                  int64_t rope_dim, int64_t max_pos, kd_kvpool **out);
/* A pool of block ids only (no rows, no rope table): the rows live elsewhere
 * (the GPU's cache, teacher/cuda.h) and only the tables, reference counts and
 * copy-on-write decisions are kept here; kd_kvpool_at, kd_kvpool_gather and
 * the rope rows must not be used on it. */
int kd_kvpool_new_index(int64_t nblocks, int64_t block, int64_t max_pos, kd_kvpool **out);
/* Call fn(ctx, from, to) whenever a shared block is copied to a fresh one
 * (copy-on-write in kd_kvpool_reserve), after the host rows (if any) are. */
void kd_kvpool_on_copy(kd_kvpool *p, void (*fn)(void *ctx, int32_t from, int32_t to), void *ctx);
void kd_kvpool_free(kd_kvpool *p);
int64_t kd_kvpool_free_blocks(const kd_kvpool *p);
int64_t kd_kvpool_block(const kd_kvpool *p);
int64_t kd_kvpool_max_pos(const kd_kvpool *p);
/* The rope table rows of position t: cos and sin (rope_dim / 2) each. */
const float *kd_kvpool_cos(const kd_kvpool *p, int64_t t);
const float *kd_kvpool_sin(const kd_kvpool *p, int64_t t);

/* Give back a sequence's blocks (shared ones when their last user goes) and
 * empty it. */
void kd_kvseq_release(kd_kvpool *p, kd_kvseq *s);
/* dst shares src's blocks and length (a sample forked from its prompt).
 * Errors: KD_E_NOMEM. */
int kd_kvseq_fork(kd_kvpool *p, const kd_kvseq *src, kd_kvseq *dst);
/* The free blocks appending n positions to s takes (a copy-on-write included). */
int64_t kd_kvseq_need(const kd_kvpool *p, const kd_kvseq *s, int64_t n);

/* Make room for nn[i] more positions in each of nseq sequences: check that
 * they fit the context and the free blocks, then copy shared last blocks and
 * add blocks. The lengths do not change: the caller writes the rows
 * (kd_kvpool_at) and then adds nn[i] to each len. Errors: KD_E_RANGE (past
 * max_pos, or "kv pool full": nothing has changed), KD_E_NOMEM. */
int kd_kvpool_reserve(kd_kvpool *p, kd_kvseq *const *seqs, int nseq, const int64_t *nn);

/* The row of position t (reserved) of sequence s in layer l. */
float *kd_kvpool_at(const kd_kvpool *p, const kd_kvseq *s, int64_t l, int64_t t);
/* Copy positions 0 .. T-1 of layer l of s into dst (T, row), contiguous. */
void kd_kvpool_gather(const kd_kvpool *p, const kd_kvseq *s, int64_t l, int64_t T, float *dst);

#ifdef __cplusplus
}
#endif
#endif
