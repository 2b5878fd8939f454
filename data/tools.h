/* tools.h - whole-dataset commands: show, head, stats, merge, and the store benchmark.
 *
 * These back `distill data show|head|stats|merge|bench`; each takes a
 * dataset path, does its work, and prints to the stream it is given, so the
 * CLI stays thin and tests can capture the output.
 */
#ifndef KD_DATA_TOOLS_H
#define KD_DATA_TOOLS_H

#include <stdint.h>
#include <stdio.h>

#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_show_opts {
    uint64_t max_chars; /* characters of each text field printed; 0 = all */
} kd_show_opts;

/* Pretty-print one record with its lineage. For prompts, also every
 * generation and verdict of the prompt; with has_sample, the unit
 * (id, sample) only: its prompt, generation and verdict. For examples, the
 * example `id` (tokens and loss mask). Errors: KD_E_NOTFOUND naming the
 * record, the store's errors. */
int kd_data_show(const char *dataset, FILE *out, kd_db db, uint64_t id, int has_sample, uint32_t sample,
                 const kd_show_opts *o);

/* Pretty-print the first `n` records of `db` in key order. */
int kd_data_head(const char *dataset, FILE *out, kd_db db, uint64_t n, const kd_show_opts *o);

/* Counts per sub-db, per source (lineage) and per verdict, and length
 * histograms (characters of prompts and generations, tokens of examples).
 * With `json`, one JSON object instead of the table:
 *   {"dataset", "name", "counts": {db: n}, "chats": n,
 *    "sources": [{"lineage", "source", "kind", "teacher", counts per db}],
 *    "verdicts": {"accepted", "rejected", "reasons": {reason: n}},
 *    "lengths": {"prompt_chars" | "answer_chars" | "generation_chars" |
 *                "example_tokens": {"n", "min", "max", "mean", "p50", "p90", "p99",
 *                                   "histogram": [[lo, hi, count], ...]}}} */
int kd_data_stats(const char *dataset, FILE *out, int json);

typedef struct kd_merge_opts {
    unsigned store_flags; /* KD_STORE_FAST */
    size_t batch_bytes;   /* bytes per committed batch; 0 = 16 MiB */
    int progress;
} kd_merge_opts;

typedef struct kd_merge_stats {
    uint64_t added[KD_DB_COUNT];      /* records copied, per sub-db */
    uint64_t duplicates[KD_DB_COUNT]; /* records skipped: the key was already there */
    uint64_t lineages;                /* lineage entries added (equal ones are shared) */
} kd_merge_stats;

/* Merge the shards into the dataset `out` (created if needed). Records are
 * copied verbatim, their lineage ids remapped to `out`'s table. Units
 * already present (same prompt id and sample index, or same example id) are
 * kept as they are and counted as duplicates: the first shard wins. A prompt
 * id present in two shards must have the same text (and chat messages),
 * else KD_E_FORMAT naming the prompt id and the shard. A verdict travels
 * with its generation: it is copied only when the generation kept in `out`
 * for its unit is that shard's (or neither has one), so a merged unit never
 * pairs one node's generation with another's verdict. Merging is
 * idempotent: a rerun after a kill completes it (the records a killed run
 * committed then count as duplicates). */
int kd_data_merge(const char *out, const char *const *shards, int nshards, const kd_merge_opts *o,
                  kd_merge_stats *stats);

typedef struct kd_bench_opts {
    uint64_t records;  /* JSONL lines and tokenized examples; 0 = 200000 */
    uint32_t tokens;   /* tokens per example; 0 = 256 */
    const char *dir;   /* scratch folder; NULL = a new one under $TMPDIR (or /tmp) */
    int keep;          /* keep the scratch folder */
    int threads;       /* import parser threads; 0 = online CPUs */
} kd_bench_opts;

/* The store benchmark: generate a MATH-like JSONL, import it (durable, then
 * --fast), write `records` synthetic tokenized examples, and iterate them
 * zero-copy reading every token and mask bit. Prints the figures to out. */
int kd_data_bench(const kd_bench_opts *o, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
