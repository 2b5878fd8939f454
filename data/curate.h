/* curate.h - dataset curation: each op reads one dataset and writes another.
 *
 *     filter          keep the units a predicate holds for (see kd_filter_parse)
 *     dedupe          drop exact (normalised-text hash) and near (MinHash + LSH) duplicates
 *     decontaminate   drop units sharing a word n-gram with benchmark items
 *     split           keep one part of a deterministic hash split
 *     sample          keep a deterministic random sample of n units
 *     select          keep the best k units of each prompt (shortest correct, ...)
 *     tokenize        render each unit with a chat template into `examples`
 *     mix             draw a weighted mixture of several datasets (see kd_curate_mix)
 *     curate          run a list of these from YAML (kd_curate_script)
 *
 * THE UNIT. When the input has generations, an op works on generations, each
 * with its prompt and its verdict (if any): a kept unit copies the three
 * records; a prompt is copied once, with its first kept unit. When the input
 * has no generations, the units are the prompts. Examples of the input are
 * not carried over (tokenize writes new ones). Records keep their lineage
 * (the input's lineage table is copied and the ids remapped), and a lineage
 * entry {"kind": "curate", "op", "source": input, "config_hash"} is added;
 * tokenize's examples carry it.
 *
 * OUTPUT PROTOCOL. An op writes OUT.partial and renames it to OUT when done,
 * with meta "curate" = {"op", "input", "options", "options_hash", "kept",
 * "dropped", "reasons", "unit", "history"}. Rerun with OUT finished:
 *   - same op, input and options (the hash of the printed options): a no-op,
 *     the report is the stored one with already_done set;
 *   - anything else: KD_E_CONFIG (remove OUT or choose another).
 * A killed op leaves OUT.partial. tokenize resumes it: it commits its
 * progress with every batch of examples, so a rerun finishes exactly (no
 * unit lost or written twice). The other ops restart (they delete the
 * partial output and recompute; they are fast and deterministic).
 *
 * Every op returns a kd_status; KD_E_NOTFOUND (no input), KD_E_CONFIG (bad
 * options: the message names the option), the store's errors.
 */
#ifndef KD_DATA_CURATE_H
#define KD_DATA_CURATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KD_CURATE_MAX_REASONS 16 /* also the most sources of a mix */

/* What an op did. `reasons` counts the dropped units per reason (mix: the
 * units drawn from each source, named by the folder's last component). */
typedef struct kd_curate_report {
    char op[24];
    char unit[16]; /* "generations" or "prompts" */
    uint64_t kept, dropped;
    int nreasons;
    struct {
        char name[24];
        uint64_t n;
    } reasons[KD_CURATE_MAX_REASONS];
    int already_done; /* the output was finished with the same options: nothing done */
    uint64_t examples; /* tokenize: examples written (kept units) */
} kd_curate_report;

/* "dedupe: kept 9,512, dropped 488 (exact 301, near 187)" into buf; returns buf.
 * mix has no dropped count: "mix: kept 10,000 (a 7,000, b 3,000)". */
char *kd_curate_report_line(const kd_curate_report *r, char *buf, size_t cap);

/* Fields every op's options end with; not part of the YAML schema nor of the
 * options hash. Zero is the default. */
typedef struct kd_curate_run {
    int progress;         /* draw progress bars */
    unsigned store_flags; /* KD_STORE_FAST for the output */
} kd_curate_run;

/* ---- the ops' options: each struct is the config struct of its schema ---- */

typedef struct kd_filter_opts {
    char *where; /* the predicate (grammar below); NULL or "" keeps everything */
    kd_curate_run run;
} kd_filter_opts;

typedef struct kd_dedupe_opts {
    int on;             /* 0 prompt: dedupe prompts (all samples of a dropped prompt go);
                           1 generation: dedupe generation texts; 2 both: prompt + "\n" + generation */
    int exact;          /* drop exact duplicates of the normalised text */
    int near;           /* drop near duplicates (MinHash + LSH) */
    int64_t ngram;      /* words per shingle (5) */
    int64_t perms;      /* MinHash permutations (128) = bands * rows */
    int64_t bands;      /* LSH bands (16) */
    int64_t rows;       /* rows per band (8) */
    double threshold;   /* > 0: a candidate pair must have estimated Jaccard >= threshold */
    int64_t seed;       /* seeds the permutations */
    int64_t threads;    /* signature threads (0 = online CPUs); not hashed */
    kd_curate_run run;
} kd_dedupe_opts;

typedef struct kd_decontam_opts {
    kd_cfg_strlist benchmarks; /* JSONL files */
    kd_cfg_strlist fields;     /* fields of a benchmark line to index (default: problem) */
    int64_t ngram;             /* words per n-gram (8) */
    int response;              /* also check the generation text */
    kd_curate_run run;
} kd_decontam_opts;

typedef struct kd_split_opts {
    double fraction; /* share of prompts in part "test" */
    int part;        /* 0 train (the rest), 1 test */
    int64_t seed;
    kd_curate_run run;
} kd_split_opts;

typedef struct kd_sample_opts {
    int64_t n;       /* units to keep (0: use fraction) */
    double fraction; /* share of units to keep when n is 0 */
    int64_t seed;
    kd_curate_run run;
} kd_sample_opts;

typedef struct kd_select_opts {
    int64_t k; /* units kept per prompt */
    int by;    /* 0 shortest_correct, 1 shortest, 2 longest, 3 random, 4 score */
    int64_t seed;
    kd_curate_run run;
} kd_select_opts;

typedef struct kd_tokenize_opts {
    char *template_name; /* YAML key "template": a kd_chat_template name */
    char *tokenizer;     /* a folder or tokenizer.json, or a name for kd_tokenizer_dir (deepseek_v3) */
    char *system;        /* system prompt for non-chat prompts; NULL = none */
    int64_t max_tokens;  /* 0 = no limit */
    int truncate;        /* over max_tokens: truncate instead of dropping (too_long) */
    int64_t batch;       /* units per committed batch (256) */
    int64_t threads;     /* encoding threads (0 = online CPUs); not hashed */
    kd_curate_run run;
} kd_tokenize_opts;

typedef struct kd_mix_opts {
    kd_cfg_strlist sources; /* "DIR:WEIGHT" each (split at the last ':'); DIR a dataset */
    double input_weight;    /* the weight of the op's input (IN, a script step's input); 0: leave it out */
    int64_t total;          /* units to draw (>= 1) */
    int replacement;        /* draw with replacement: a unit may be drawn more than once */
    int64_t seed;
    kd_curate_run run;
} kd_mix_opts;

/* The schemas (YAML keys mirror the CLI flags). */
extern const kd_cfg_schema kd_filter_schema, kd_dedupe_schema, kd_decontam_schema, kd_split_schema,
    kd_sample_schema, kd_select_schema, kd_tokenize_schema, kd_mix_schema;

/* Each op: read `in_dir`, write `out_dir` (see OUTPUT PROTOCOL), fill *rep. */
int kd_curate_filter(const char *in_dir, const char *out_dir, const kd_filter_opts *o, kd_curate_report *rep);
int kd_curate_dedupe(const char *in_dir, const char *out_dir, const kd_dedupe_opts *o, kd_curate_report *rep);
int kd_curate_decontaminate(const char *in_dir, const char *out_dir, const kd_decontam_opts *o,
                            kd_curate_report *rep);
int kd_curate_split(const char *in_dir, const char *out_dir, const kd_split_opts *o, kd_curate_report *rep);
int kd_curate_sample(const char *in_dir, const char *out_dir, const kd_sample_opts *o, kd_curate_report *rep);
int kd_curate_select(const char *in_dir, const char *out_dir, const kd_select_opts *o, kd_curate_report *rep);
int kd_curate_tokenize(const char *in_dir, const char *out_dir, const kd_tokenize_opts *o, kd_curate_report *rep);

/* mix: draw o->total units from the sources: `in_dir` with o->input_weight
 * (when in_dir is neither NULL nor "" and the weight is > 0), then each of
 * o->sources in order. All sources must have the same unit (generations or
 * prompts); a source with no units draws nothing.
 *
 * COUNTS. Source i gets total * w_i / sum(w), rounded by largest remainder
 * (ties to the earlier source), so the counts are exact and sum to total.
 * Without replacement a source gives at most its size: a source whose share
 * reaches its size gives all its units and the rest is shared again among
 * the others by weight, until no share exceeds its source; when the sources
 * hold fewer than total units, all are kept (a warning says so). With
 * replacement every source with units gets its full share.
 *
 * DRAWS (deterministic given seed and the source list). Without replacement:
 * a source's units with the smallest seeded hashes of (source index, key).
 * With replacement: draw k picks the unit floor(u_k * size) for a seeded
 * uniform u_k, so a unit may come out several times.
 *
 * OUTPUT. Prompt ids are renumbered 0, 1, ... in the order source, then key
 * (so ids of different sources never collide); in generation mode each output
 * prompt's samples are renumbered 0, 1, ... (a repeat is one more sample of
 * the same prompt); in prompt mode each copy of a prompt is a new prompt.
 * Every record keeps its lineage (the sources' lineage tables are merged) and
 * gets extra "mix_origin": {"source": DIR, "prompt_id", "sample" (not for
 * prompts), "copy": 0, 1, ... (the repeat)}. Each source also gets a lineage
 * entry {"kind": "curate", "op": "mix", "source": DIR, "weight", "drawn"}.
 * The output's "input" (for the options hash and history) is in_dir, else
 * the first source.
 *
 * Errors: KD_E_CONFIG (a source not DIR:WEIGHT, a negative or non-numeric
 * weight, weights summing to 0, total < 1, a source listed twice or equal to
 * the output, sources of different units, more than KD_CURATE_MAX_REASONS
 * sources), KD_E_NOTFOUND (a source that is not a dataset), the store's. */
int kd_curate_mix(const char *in_dir, const char *out_dir, const kd_mix_opts *o, kd_curate_report *rep);

/* ---- the op table (the CLI and the script runner use it) ----------------- */

typedef struct kd_curate_op {
    const char *name;
    const kd_cfg_schema *schema;
    size_t run_offset; /* offsetof(opts, run) */
    int (*fn)(const char *in_dir, const char *out_dir, const void *opts, kd_curate_report *rep);
    const char *summary; /* one line for help */
} kd_curate_op;

/* The ops, terminated by {NULL}. Static storage. */
extern const kd_curate_op kd_curate_ops[];
/* The same table as STEPS kinds for the script schema. */
extern const kd_cfg_step_kind kd_curate_step_kinds[];
/* The op called `name`, or NULL. */
const kd_curate_op *kd_curate_op_find(const char *name);

/* ---- the script: {input, output, steps: [{op: {...}}, ...]} -------------- */

typedef struct kd_curate_script {
    char *input;
    char *output;
    kd_cfg_steps steps;
} kd_curate_script;
extern const kd_cfg_schema kd_curate_script_schema;

/* Run the steps in order: step i (from 1) reads the previous step's output
 * (the first: `input`) and writes OUTPUT/steps/NN-op; the last writes
 * OUTPUT/final. Each step's report is logged as one line (kd_info) and, when
 * `reports` is not NULL, stored in reports[i] (an array of steps.n). A rerun
 * of a finished script does nothing ("already done" for every step). */
int kd_curate_script_run(const kd_curate_script *s, const kd_curate_run *run, kd_curate_report *reports);

/* ---- the filter language ------------------------------------------------- */

/* expr   := or
 * or     := and ("or" and)*
 * and    := unary ("and" unary)*
 * unary  := "not" unary | "(" expr ")" | FIELD OP VALUE
 * OP     := == != < <= > >=   (strings: == and != only)
 * VALUE  := a number, a bare word [A-Za-z0-9_.-]+, or "a string" (\" and \\ escapes)
 * FIELD (numbers): chars (code points of the generation, or of the prompt
 *   for prompt units), prompt_chars, tokens (the generation's completion
 *   tokens as recorded), pass_rate (accepted / samples of the same prompt;
 *   0 when it has no generations), sample, score (verdict score; 0 if none)
 * FIELD (strings): source (the lineage source of the generation, else of
 *   the prompt), verdict (accepted|rejected|none), finish_reason
 *   (unknown|stop|length|abort), lang (extra "lang"/"language" of the
 *   generation or prompt; else the script detector kd_detect_script)
 * Errors: KD_E_CONFIG "filter: column N: ..." naming the column and the
 * token at fault. */
typedef struct kd_filter kd_filter;
int kd_filter_parse(const char *expr, kd_filter **out);
void kd_filter_free(kd_filter *f);
/* 1 when the expression reads `field` (to skip work the filter never needs). */
int kd_filter_uses(const kd_filter *f, const char *field);

/* The values a filter sees for one unit. */
typedef struct kd_filter_row {
    double chars, prompt_chars, tokens, pass_rate, sample, score;
    const char *source, *verdict, *finish_reason, *lang;
} kd_filter_row;
/* 1 if the row passes, 0 if not. */
int kd_filter_eval(const kd_filter *f, const kd_filter_row *row);

/* The letter script of `text`: "latin", "cjk", "cyrillic", "arabic",
 * "other" (the script holding most letters, when it holds more than half
 * of them), "mixed" (none does) or "none" (no letters). Static storage. */
const char *kd_detect_script(const char *text, size_t len);

/* ---- text helpers (shared by dedupe and decontaminate; exposed for tests) */

/* NFC + casefold + every run of white space to one ' ', trimmed. *out is
 * malloc'd (free it). Invalid UTF-8 is kept byte for byte. */
int kd_text_normalize(const char *text, size_t len, char **out, size_t *outlen);

/* MinHash near-duplicate detection over an in-memory corpus, the engine of
 * dedupe (and of the benchmark). dup[i] is set to 0 (keep), 1 (exact
 * duplicate of an earlier text) or 2 (near duplicate of an earlier one). */
int kd_minhash_dedupe(const char *const *texts, const size_t *lens, size_t n, const kd_dedupe_opts *o,
                      uint8_t *dup);

/* The dedupe benchmark: `docs` short documents (about 40 words each) of which
 * ~10% are planted near duplicates (one word changed) of an earlier one;
 * prints documents/s and the recall of the planted pairs. */
int kd_dedupe_bench(uint64_t docs, int threads, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
