/* curate_impl.h - what the curation files (curate.c, dedupe.c, tokenize_ds.c)
 * share: the unit iterator and the output job. Private to data/. */
#ifndef KD_DATA_CURATE_IMPL_H
#define KD_DATA_CURATE_IMPL_H

#include "curate.h"

/* One unit: a generation with its prompt and verdict, or (prompt mode) a
 * prompt alone. Pointers are valid until the iterator's next call. */
typedef struct cur_unit_ {
    uint64_t ordinal; /* 0, 1, ... in key order */
    int has_prompt, has_gen, has_verdict;
    kd_record p, g, v;
    const void *praw, *graw, *vraw;
    size_t prawlen, grawlen, vrawlen;
} cur_unit_;

typedef struct cur_iter_ {
    kd_store_read *r;
    kd_store_cursor *pc, *gc, *vc;
    int gen_mode;
    int p_ok, v_ok; /* pc / vc hold a record read ahead */
    kd_record p, v;
    const void *praw, *vraw;
    size_t prawlen, vrawlen;
    uint64_t ordinal, total;
} cur_iter_;

int cur_iter_open_(kd_store *in, cur_iter_ *it);
/* Continue from the first unit with key >= (pid, sample); `ordinal` is its ordinal. */
int cur_iter_seek_(cur_iter_ *it, uint64_t pid, uint32_t sample, uint64_t ordinal);
int cur_iter_next_(cur_iter_ *it, cur_unit_ *u); /* 1, 0 at the end, or < 0 */
void cur_iter_close_(cur_iter_ *it);

typedef struct cur_job_ {
    const char *opname, *in_dir, *out_dir;
    const kd_curate_run *run;
    char partial[4096];
    char hash[40];
    char *options; /* the printed options (hashed) */
    kd_store *in, *out;
    uint32_t *lmap; /* input lineage id -> output id */
    char **lsrc;    /* input lineage id -> source (or NULL) */
    uint32_t nl;
    uint32_t lineage; /* this op's lineage entry in the output */
    kd_store_batch *b;
    uint64_t last_prompt;
    int prompt_copied;
    void *buf;
    size_t bufcap;
    kd_curate_report *rep;
    int resumed; /* tokenize: the partial output was kept */
} cur_job_;

/* Set up `j`. Returns 1 when OUT is already finished with the same options
 * (rep filled from it, nothing else to do), 0 when the job is ready to write
 * (j->out open on OUT.partial), or < 0. With `resume`, an OUT.partial with
 * the same options hash is kept (j->resumed = 1), else it is removed. */
int cur_begin_(cur_job_ *j, const char *opname, const kd_cfg_schema *schema, const void *opts,
               const kd_curate_run *run, const char *in_dir, const char *out_dir, int resume,
               kd_curate_report *rep);
/* Register a reason name; its index. */
int cur_reason_(kd_curate_report *rep, const char *name);
/* Copy the unit's records to the output (prompt once). Begins a batch if none. */
int cur_copy_unit_(cur_job_ *j, const cur_unit_ *u);
/* Begin a batch if none is open. */
int cur_batch_(cur_job_ *j);
/* Commit the open batch when it holds more than `bytes` (0: always). */
int cur_commit_(cur_job_ *j, size_t bytes);
/* Write meta "curate", close, rename OUT.partial to OUT. Frees the job. */
int cur_finish_(cur_job_ *j);
/* Drop everything (after an error); OUT.partial stays. Frees the job. */
void cur_abort_(cur_job_ *j);
/* The lineage source of a record of the input. */
const char *cur_source_(const cur_job_ *j, uint32_t lineage);

/* A 64-bit mix (the splitmix64 finalizer). */
static inline uint64_t cur_mix64_(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

#endif
