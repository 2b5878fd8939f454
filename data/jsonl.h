/* jsonl.h - JSONL import into a dataset and export from it, in the shapes HF datasets use.
 *
 * KINDS (one JSON object per line):
 *
 *   prompts      {"problem": "...", "answer": "...", ...}
 *                The prompt text comes from --prompt-field, else the first of
 *                "problem", "question", "prompt" present on the first line that
 *                has one; that choice is then fixed for the whole file (a line
 *                without it is a bad line). The answer from --answer-field, else
 *                the first of "answer", "solution" on the first line that has
 *                either key (until then no answer is mapped; the lineage entry is
 *                updated in the batch that decides it). An answer is optional: a
 *                line without it, or with a non-string value, keeps the value
 *                among its extra fields. One prompts record per line.
 *   chats        {"messages": [{"role": "user", "content": "..."}, ...], ...}
 *                --messages-field (default "messages"): a non-empty array of
 *                objects with a string "role". Stored in prompts as a chat: the
 *                messages as compact JSON, and as its text the last user turn
 *                with string content (required).
 *   generations  {"problem": "...", "answer": "...", "generation": "...", ...}
 *                A prompt plus its completion(s). --generation-field, else the
 *                first of "generation", "generations", "response", "output",
 *                "completion". A string is one sample ("scalar" form: the line's
 *                extra fields go with the generation); an array of strings is
 *                samples 0..k-1 ("array" form, as in OpenR1-Math: the extra
 *                fields go with the prompt). The form of the first line is fixed
 *                for the file. --verdict-field names a bool (scalar) or an array
 *                of bools/nulls (array form) that becomes verdicts.
 *
 * IDS. Without --id-field, prompt ids are assigned densely in input order,
 * starting after the largest id already in the dataset; each line is a new
 * prompt. With --id-field, the field (a non-negative integer) is the prompt
 * id: for prompts and chats a repeated id is a bad line; for generations,
 * lines with the same id are samples of one prompt, and their prompt text
 * must agree. Sample indices come from --sample-field (scalar form), else the
 * next free index of that prompt.
 *
 * Every field not mapped above is kept, as a JSON object, in the record's
 * extra field, so export writes back what import read. The field names used
 * (after resolving the defaults) are stored in the import's lineage entry,
 * and export writes each record back under them.
 *
 * BAD LINES. Not JSON, not an object, invalid UTF-8, a duplicate key, a
 * missing or mistyped mapped field, an empty line, a line longer than
 * max_line, a repeated prompt id or unit: each is reported as
 * "FILE:LINE: what". on_error STOP (the default) commits every line before
 * the bad one and fails with KD_E_FORMAT naming the line; SKIP counts it,
 * prints the first max_reported, and goes on.
 *
 * RESUME. An import commits in batches of about batch_bytes of input; each
 * batch's records and the import's progress (file, size, mtime, options,
 * byte offset and line of the last committed line, counters) go in one
 * transaction, under meta "import/<hash of the absolute path>". A rerun of the
 * same import (same file, size, mtime and options) continues from that offset:
 * a killed import loses nothing and duplicates nothing, and rerunning a
 * finished import does nothing. A different file content or other options for
 * the same path are refused (KD_E_CONFIG) rather than guessed at.
 */
#ifndef KD_JSONL_H
#define KD_JSONL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KD_KIND_PROMPTS = 0, KD_KIND_CHATS, KD_KIND_GENERATIONS } kd_jsonl_kind;
/* "prompts", "chats", "generations" */
const char *kd_jsonl_kind_name(int kind);
/* The kind named `name`, or -1. */
int kd_jsonl_kind_parse(const char *name);

typedef enum { KD_ON_ERROR_STOP = 0, KD_ON_ERROR_SKIP } kd_on_error;

#define KD_IMPORT_MAX_REPORT 20 /* bad lines remembered (and printed) per run */

typedef struct kd_import_opts {
    int kind;                     /* kd_jsonl_kind */
    const char *prompt_field;     /* NULL = first of problem, question, prompt */
    const char *answer_field;     /* NULL = first of answer, solution; "" = none */
    const char *id_field;         /* NULL = dense ids in input order */
    const char *messages_field;   /* chats; NULL = "messages" */
    const char *generation_field; /* generations; NULL = first of generation, generations, response, output, completion */
    const char *sample_field;     /* generations, scalar form; NULL = next free index */
    const char *verdict_field;    /* generations; NULL = no verdicts */
    const char *source;           /* lineage source; NULL = the file path as given */
    const char *teacher;          /* lineage teacher model; NULL = unknown */
    int64_t seed;                 /* lineage seed; -1 = none */
    int on_error;                 /* kd_on_error */
    int max_reported;             /* bad lines printed per run; 0 = KD_IMPORT_MAX_REPORT */
    size_t max_line;              /* longest line accepted; 0 = 64 MiB */
    size_t batch_bytes;           /* input bytes per committed batch; 0 = 8 MiB */
    int threads;                  /* parser threads; 0 = online CPUs (at most 8) */
    unsigned store_flags;         /* extra kd_store flags: KD_STORE_FAST */
    const char *name;             /* dataset name when the import creates it */
    uint64_t map_size;            /* initial map size; 0 = default */
    int progress;                 /* draw the progress bar on stderr */
} kd_import_opts;

/* Defaults: kind prompts, stop on errors, seed -1. */
void kd_import_opts_init(kd_import_opts *o);

typedef struct kd_import_stats {
    /* totals over every run of this import (they survive a kill and resume) */
    uint64_t lines;          /* lines consumed */
    uint64_t bytes;          /* input bytes consumed */
    uint64_t prompts, generations, verdicts; /* records added */
    uint64_t bad;            /* bad lines skipped */
    int done;                /* the whole file is imported */
    /* this run */
    int already_done;        /* the import had finished before: nothing was read */
    uint64_t resumed_line;   /* the line this run started after (0: from the start) */
    uint64_t run_bytes;      /* input bytes read in this run */
    double seconds;          /* wall time of this run */
    int n_reported;          /* bad lines of this run remembered below */
    uint64_t bad_line[KD_IMPORT_MAX_REPORT];
    char bad_msg[KD_IMPORT_MAX_REPORT][160];
} kd_import_stats;

/* Import JSONL `file` into the dataset at `dataset`, creating it if needed.
 * `stats` (may be NULL) is filled as far as the import got, also on error.
 * Errors: KD_E_FORMAT (a bad line under STOP: "FILE:LINE: ..."; the lines
 * before it are committed, and a rerun resumes at it), KD_E_CONFIG (the file
 * changed since an unfinished import of it, or the options differ),
 * KD_E_NOTFOUND / KD_E_IO (the file), and the store's errors. */
int kd_jsonl_import(const char *dataset, const char *file, const kd_import_opts *opts, kd_import_stats *stats);

typedef struct kd_export_opts {
    int kind;     /* prompts: every prompts record, each in its own shape (chats as chats);
                     chats: only chats; generations: generation lines */
    int progress; /* draw the progress bar on stderr */
} kd_export_opts;

typedef struct kd_export_stats {
    uint64_t lines;
    uint64_t records; /* records read (array-form lines hold several generations) */
    uint64_t bytes;
} kd_export_stats;

/* Export the dataset at `dataset` as JSONL to `out_path` (written to a
 * temporary file and renamed at the end), or to stdout when out_path is NULL
 * or "-". Each record is written under the field names its lineage recorded
 * at import; records without them (made by other stages) use: prompts
 * {"problem", "answer"}, chats {"messages"}, generations {"prompt_id",
 * "sample", "problem", "answer", "generation", "finish_reason",
 * "prompt_tokens", "completion_tokens", "verdict": {"accepted", "reason",
 * "answer", "score"}}. Extra fields follow. Errors: the store's, KD_E_IO. */
int kd_jsonl_export(const char *dataset, const char *out_path, const kd_export_opts *opts, kd_export_stats *stats);
/* The same from an open store into an open stream. */
int kd_jsonl_export_to(kd_store *s, FILE *out, const kd_export_opts *opts, kd_export_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
