/* store.h - the LMDB dataset store: every stage reads and writes datasets through it.
 *
 * A dataset is a directory:
 *
 *     mydata/
 *       data.mdb        the LMDB environment (the source of truth)
 *       lock.mdb        LMDB's reader table and writer lock
 *       manifest.json   a human-readable mirror of `meta` and the record counts,
 *                       rewritten atomically by the writer (at close, and at most
 *                       every KD_STORE_MANIFEST_SECONDS during a long job)
 *
 * The environment holds five named sub-databases:
 *
 *     sub-db        key (fixed width, big-endian: byte order = numeric order)   value
 *     meta          UTF-8 string, e.g. "schema_version", "lineage/00000003"     JSON text
 *     prompts       u64 prompt id                                   (8 bytes)   prompt record
 *     generations   u64 prompt id, u32 sample index                (12 bytes)   generation record
 *     verdicts      u64 prompt id, u32 sample index                (12 bytes)   verdict record
 *     examples      u64 example id                                  (8 bytes)   example record
 *
 * Iteration follows key order, so it is stable: prompts by id; generations and
 * verdicts by prompt id, then sample index (all samples of a prompt are
 * adjacent); examples by id. "(prompt id, sample index)" is a *unit of work*.
 *
 * meta keys (values are compact JSON):
 *     schema_version     1 (KD_STORE_SCHEMA). A dataset with a larger or
 *                        non-numeric version is refused with KD_E_FORMAT.
 *     dataset            {"name", "created", "created_ms"}
 *     lineage/NNNNNNNN   one lineage entry, id in 8 decimal digits (below)
 *     import/HHHH...     the resume state of one JSONL import (see jsonl.h)
 * Later stages may add keys of their own under a "<stage>/" prefix.
 *
 * Lineage. Every record carries a u32 lineage id and its own creation time.
 * The lineage entry says where the record came from:
 *     {"id": 3, "kind": "import", "source": "data/math.jsonl",
 *      "teacher": "deepseek-r1" | null, "config_hash": "fnv1a64:..." | null,
 *      "seed": 42 | null, "created": "2025-01-02T03:04:05Z", "created_ms": ...,
 *      ... producer-specific keys (an import keeps its field names here) }
 * Lineage id 0 means "unknown" and has no entry.
 *
 * RECORD LAYOUT (every value except meta's). Little-endian, packed:
 *
 *     off  size  field
 *       0     1  version      record layout version, KD_REC_VERSION (1)
 *       1     1  kind         1 prompt, 2 generation, 3 verdict, 4 example
 *       2     2  zmask        bit i set: variable field i is one zstd frame
 *       4     4  lineage      lineage id
 *       8     8  created_ms   creation time, milliseconds since the Unix epoch (UTC)
 *      16     4  fixed_len    bytes of the kind's fixed part that follows (F)
 *      20     4  nfields      number of variable fields after the fixed part
 *      24     F  fixed part, per kind (below)
 *    24+F        nfields x { u32 len; u8 bytes[len] }   (text is UTF-8, not NUL-terminated)
 *
 * A reader accepts a larger fixed_len and more fields than it knows (later
 * versions append; they never move a field), and refuses a larger version.
 * Lengths are checked against the value size before anything is read, so a
 * damaged record is KD_E_FORMAT naming its key, never a crash.
 *
 *     kind 1, prompt       fixed (8):  u32 pflags (bit 0: has an answer, bit 1: chat), u32 0
 *                          fields:     0 text (the problem; for a chat, the last user turn)
 *                                      1 answer (reference answer or solution)
 *                                      2 messages (chat: the messages array as compact JSON)
 *                                      3 extra (JSON object of input fields not mapped above)
 *     kind 2, generation   fixed (16): u32 finish (kd_finish), u32 prompt_tokens,
 *                                      u32 completion_tokens, u32 0
 *                          fields:     0 text (the whole completion, <think> included)
 *                                      1 extra (JSON object)
 *     kind 3, verdict      fixed (16): u32 vflags (bit 0: accepted, bit 1: has score),
 *                                      f32 score, u32 0, u32 0
 *                          fields:     0 reason, 1 answer (the extracted answer), 2 extra
 *     kind 4, example      fixed (24): u64 origin prompt id (KD_NONE64 if none),
 *                                      u32 origin sample (KD_NONE32 if none),
 *                                      u32 n_tokens, u64 0
 *                          nfields 0; then at offset 24+F = 48:
 *                                      n_tokens x i32 token ids, little-endian
 *                                      ceil(n_tokens/8) bytes of loss mask: bit i of
 *                                      the mask, LSB first (byte i/8, bit i%8), is 1
 *                                      when token i counts in the loss
 *
 * An empty field (len 0) means absent. Text fields of at least compress_min
 * bytes (default KD_STORE_COMPRESS_MIN) are stored as a zstd frame when that
 * is smaller; the frame records its content size. Examples are never
 * compressed: the trainer reads them in place.
 *
 * ALIGNMENT. LMDB hands out values inside its memory map. A value that fits in
 * a page (under about 2 KB with 4 KiB pages) is only 2-byte aligned; a larger
 * value lives on its own overflow pages and starts 16 bytes into a page, so it
 * is 8-byte aligned. The token ids start 48 bytes into the value, so they are
 * 4-byte aligned exactly when the value is. kd_example_ids_aligned() says
 * which; kd_example_token() reads any token safely either way (one memcpy,
 * which compilers turn into a plain load).
 *
 * CONCURRENCY (LMDB's rules, which this module follows and callers must too):
 *   - One writer, many readers, across threads and processes. A second writer
 *     (in any process) blocks in kd_store_batch_begin until the first commits.
 *   - A batch (the write transaction) belongs to the thread that began it.
 *   - Read transactions may be used from any thread, one thread at a time
 *     (the environment is opened with MDB_NOTLS). Each holds a reader slot
 *     (KD_STORE_MAX_READERS per environment) until it ends; end them promptly:
 *     a long read transaction keeps old pages alive and the file grows.
 *   - Never use a kd_store across fork(). A child process opens the dataset
 *     itself; it must not use, or close, a handle it inherited (exec or _exit).
 *   - Datasets live on a local file system, never NFS (LMDB's locks need it).
 *
 * MAP GROWTH. The memory map starts at opts.map_size (default 1 GiB; at least
 * the file's size). When a batch hits MDB_MAP_FULL, the batch is aborted, the
 * map is doubled and the batch is replayed from its in-memory log, so a long
 * job never fails for lack of map. The grow waits until this process has no
 * other read transaction open (a read-write lock around every transaction),
 * so a thread must not hold a read transaction while committing a batch.
 * Readers in other processes adopt the larger map on their next transaction.
 *
 * DURABILITY. By default every committed batch is on disk when commit returns
 * (LMDB fsyncs data and meta pages). KD_STORE_FAST opens with MDB_NOSYNC |
 * MDB_NOMETASYNC and syncs once at close: a killed *process* loses nothing
 * that was committed (the OS still has the pages), but an OS crash or power
 * loss can lose the last batches or corrupt the file. Use it for scratch data
 * you can rebuild.
 */
#ifndef KD_STORE_H
#define KD_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KD_STORE_SCHEMA 1             /* meta "schema_version" this build writes and reads */
#define KD_REC_VERSION 1              /* record layout version (byte 0 of every value) */
#define KD_REC_HEADER 24              /* bytes of the common record header */
#define KD_EXAMPLE_IDS_OFFSET 48      /* where an example's token ids start in its value */
#define KD_STORE_COMPRESS_MIN 4096    /* default: compress text fields of this many bytes or more */
#define KD_STORE_MAP_SIZE (1ull << 30) /* default initial map size */
#define KD_STORE_MAX_READERS 510      /* reader slots per environment */
#define KD_STORE_MANIFEST_SECONDS 10  /* least time between manifest rewrites during a job */
#define KD_NONE64 UINT64_MAX
#define KD_NONE32 UINT32_MAX

/* The record sub-databases. */
typedef enum kd_db {
    KD_DB_PROMPTS = 0,
    KD_DB_GENERATIONS,
    KD_DB_VERDICTS,
    KD_DB_EXAMPLES,
    KD_DB_COUNT
} kd_db;

/* "prompts", "generations", "verdicts", "examples". Static storage. */
const char *kd_db_name(kd_db db);
/* The kd_db named `name` (also accepts the singular), or -1. */
int kd_db_parse(const char *name);

/* Why a generation stopped. */
typedef enum kd_finish {
    KD_FINISH_UNKNOWN = 0, /* imported without the information */
    KD_FINISH_STOP,        /* an end-of-sequence or stop token */
    KD_FINISH_LENGTH,      /* hit max tokens */
    KD_FINISH_ABORT,       /* cancelled */
    KD_FINISH_BUDGET,      /* the thinking budget closed the reasoning (then stop or length) */
    KD_FINISH_SKIPPED,     /* not generated: the prompt does not fit (the reason in extra) */
    KD_FINISH_COUNT
} kd_finish;
const char *kd_finish_name(unsigned finish); /* "unknown", "stop", "length", "abort", "budget", "skipped" */

/* A text slice: UTF-8, `len` bytes, NOT NUL-terminated. len 0 = absent. */
typedef struct kd_text {
    const char *ptr;
    size_t len;
} kd_text;

static inline kd_text kd_text_of(const char *s) { return (kd_text){s, s ? strlen(s) : 0}; }

/* One record of any sub-database, decoded. The same struct is filled by the
 * readers and passed to the writers; each db uses the fields named for it.
 * On read, text and array pointers point into the memory map or into the
 * reading handle's scratch buffer (compressed fields): see each reader for
 * how long they stay valid. Copy what you keep. */
typedef struct kd_record {
    kd_db db;
    uint64_t id;            /* prompt id (prompts, generations, verdicts) or example id */
    uint32_t sample;        /* generations, verdicts: sample index */
    uint32_t lineage;       /* lineage id; 0 = unknown */
    uint64_t created_ms;    /* on write, 0 = now */

    /* prompts */
    int chat;               /* 1: a chat; `messages` holds it and `text` is its last user turn */
    int has_answer;         /* `answer` was given (it may be the empty string) */
    kd_text messages;       /* chat messages as a JSON array */

    /* prompts: the problem; generations: the completion; verdicts: unused */
    kd_text text;
    /* prompts: reference answer; verdicts: the answer the verifier extracted */
    kd_text answer;

    /* generations */
    unsigned finish;        /* kd_finish */
    uint32_t prompt_tokens, completion_tokens;

    /* verdicts */
    int accepted;           /* 1 accepted, 0 rejected */
    int has_score;
    float score;            /* a reward, when has_score */
    kd_text reason;         /* why: "correct", "wrong answer", "no boxed answer", ... */

    /* examples */
    uint64_t origin_id;     /* prompt id it came from, or KD_NONE64 */
    uint32_t origin_sample; /* sample index it came from, or KD_NONE32 */
    uint32_t n_tokens;
    const void *ids;        /* n_tokens int32 LE; on read see kd_example_token() */
    const uint8_t *mask;    /* ceil(n_tokens/8) bytes, bit i (LSB first) = token i in the loss */

    /* every db: a JSON object (text) of fields the producer had and nothing
     * above holds, kept so import -> export loses nothing. len 0 = none. */
    kd_text extra;
} kd_record;

/* Token i of an example read from the store (any alignment). */
static inline int32_t kd_example_token(const kd_record *r, uint32_t i)
{
    int32_t v;
    memcpy(&v, (const char *)r->ids + 4 * (size_t)i, 4); /* the store is little-endian; so are our hosts */
    return v;
}
/* 1 if token i counts in the loss. */
static inline int kd_example_mask(const kd_record *r, uint32_t i) { return (r->mask[i >> 3] >> (i & 7)) & 1; }
/* The token ids as an aligned int32 array, or NULL when the value is not
 * 4-byte aligned in the map (small examples: then use kd_example_token). */
static inline const int32_t *kd_example_ids_aligned(const kd_record *r)
{
    return ((uintptr_t)r->ids & 3) ? NULL : (const int32_t *)r->ids;
}

/* ------------------------------------------------------------------------ */
/* Environment */

typedef struct kd_store kd_store;               /* an open dataset */
typedef struct kd_store_read kd_store_read;     /* a read transaction (or a batch's view) */
typedef struct kd_store_batch kd_store_batch;   /* a write transaction with a replay log */
typedef struct kd_store_cursor kd_store_cursor; /* iteration over one sub-db */

enum {
    KD_STORE_RDONLY = 1 << 0, /* open for reading only; the dataset must exist */
    KD_STORE_CREATE = 1 << 1, /* create the dataset when absent (or half-created by a killed run) */
    KD_STORE_FAST = 1 << 2,   /* MDB_NOSYNC|MDB_NOMETASYNC, one sync at close; see DURABILITY */
};

typedef struct kd_store_opts {
    unsigned flags;        /* KD_STORE_* */
    uint64_t map_size;     /* initial map size in bytes; 0 = KD_STORE_MAP_SIZE. Grows on demand. */
    const char *name;      /* dataset name on creation; NULL = the directory's base name */
    size_t compress_min;   /* 0 = KD_STORE_COMPRESS_MIN; SIZE_MAX = never compress */
    int compress_level;    /* zstd level; 0 = 1 (fast: imports must run at disk speed) */
} kd_store_opts;

/* Open (or with KD_STORE_CREATE, create) the dataset at directory `path`.
 * Checks, before LMDB sees the file, that data.mdb starts with LMDB's magic
 * and, after, that the file holds every page the meta page claims, so a
 * foreign, truncated or empty file is KD_E_FORMAT naming it, not a crash.
 * Errors:
 *   KD_E_NOTFOUND  no dataset there (without KD_STORE_CREATE)
 *   KD_E_FORMAT    not an LMDB file; an LMDB environment that is not a
 *                  dataset; truncated; schema version newer than
 *                  KD_STORE_SCHEMA or not a number; a damaged sub-db
 *   KD_E_IO        cannot create the directory, open or lock the files
 * On error *out is NULL. The handle belongs to the caller: kd_store_close. */
int kd_store_open_opts(const char *path, const kd_store_opts *opts, kd_store **out);
/* Same, with default options and `flags`. */
int kd_store_open(const char *path, unsigned flags, kd_store **out);

/* Write the manifest (when opened for writing), sync (KD_STORE_FAST), and
 * close. Every transaction, batch and cursor of the handle must have ended.
 * Returns the first error of the manifest write or the sync (the data
 * already committed is safe either way). NULL is a no-op. */
int kd_store_close(kd_store *s);

/* The directory the store was opened from. Valid until kd_store_close. */
const char *kd_store_path(const kd_store *s);
/* The current map size in bytes (grows on MDB_MAP_FULL). */
uint64_t kd_store_map_size(kd_store *s);

/* Rewrite manifest.json from meta and the counts now (atomic rename).
 * Needs a writable store. Errors: KD_E_IO. */
int kd_store_write_manifest(kd_store *s);

/* ------------------------------------------------------------------------ */
/* Reading */

/* Begin a read transaction: a consistent snapshot as of now. Use it from one
 * thread at a time; end it with kd_store_read_end. Errors: KD_E_IO (no free
 * reader slot: too many open transactions). */
int kd_store_read_begin(kd_store *s, kd_store_read **out);
/* End it. Every pointer read through it (and its cursors) becomes invalid;
 * close its cursors first. NULL is a no-op. Not for a batch's view. */
void kd_store_read_end(kd_store_read *r);

/* Read the record at (db, id, sample) into *out; `sample` is ignored for
 * prompts and examples. Pointers in *out stay valid until the next get on
 * `r` or the end of the transaction, whichever is first (a batch view: until
 * the next put or commit as well).
 * Errors: KD_E_NOTFOUND (no such record; the message names it),
 * KD_E_FORMAT (a damaged record, naming its key). */
int kd_store_get(kd_store_read *r, kd_db db, uint64_t id, uint32_t sample, kd_record *out);

/* The encoded value at (db, id, sample), undecoded, pointing into the map:
 * valid as kd_store_get's pointers are. Errors: KD_E_NOTFOUND. */
int kd_store_get_raw(kd_store_read *r, kd_db db, uint64_t id, uint32_t sample, const void **val, size_t *vlen);

/* 1 when two encoded values hold the same record apart from the lineage id
 * (merge recognizes its own copies with it). */
int kd_record_same_but_lineage(const void *a, size_t alen, const void *b, size_t blen);

/* Number of records in `db` (exact, O(1)). */
int kd_store_count(kd_store_read *r, kd_db db, uint64_t *out);
/* The ids of the dataset's prompts in id order, at most `limit` (0 = all),
 * in a malloc'd array (*ids; free it) of *n. Errors: KD_E_NOTFOUND (no
 * prompts; the message names the dataset), the store's, KD_E_NOMEM. */
int kd_store_prompt_ids(kd_store *s, int64_t limit, uint64_t **ids, size_t *n);

/* The largest key in `db`: *found = 0 when empty. */
int kd_store_last(kd_store_read *r, kd_db db, uint64_t *id, uint32_t *sample, int *found);

/* Units of work. *exists = 1 when generation (prompt_id, sample) is stored.
 * A generation is one record written by one put in one transaction, so a unit
 * is either absent or complete: a rerun of a killed job skips the units that
 * exist and redoes the rest, with nothing lost and nothing duplicated. */
int kd_store_unit_exists(kd_store_read *r, uint64_t prompt_id, uint32_t sample, int *exists);
/* The first unused sample index of `prompt_id` (1 + the largest stored, or 0). */
int kd_store_next_sample(kd_store_read *r, uint64_t prompt_id, uint32_t *out);

/* Iterate over `db` in key order. The cursor belongs to `r` and must be
 * closed before `r` ends (on a batch view: before the next put or commit). */
int kd_store_cursor_open(kd_store_read *r, kd_db db, kd_store_cursor **out);
/* Position so that the next kd_store_cursor_next returns the first record
 * with key >= (id, sample). */
int kd_store_cursor_seek(kd_store_cursor *c, uint64_t id, uint32_t sample);
/* The next record. Returns 1 with *out filled, 0 at the end, or a negative
 * kd_status (KD_E_FORMAT for a damaged record). Pointers in *out stay valid
 * until the next call on this cursor, its close, or the end of the
 * transaction. Examples are zero-copy: ids and mask point into the map. */
int kd_store_cursor_next(kd_store_cursor *c, kd_record *out);
/* The raw key and value of the record last returned (for copying records
 * without decoding them, as merge does). Valid as the decoded pointers are. */
void kd_store_cursor_raw(kd_store_cursor *c, const void **key, size_t *klen, const void **val, size_t *vlen);
void kd_store_cursor_close(kd_store_cursor *c);

/* Meta: the value of `key` as a new JSON reference (json_decref it).
 * Errors: KD_E_NOTFOUND, KD_E_FORMAT (not JSON). */
int kd_store_meta_get(kd_store_read *r, const char *key, json_t **out);
/* Every meta entry whose key starts with `prefix`, as a JSON object
 * {key: value} in key order (new reference). */
int kd_store_meta_list(kd_store_read *r, const char *prefix, json_t **out);

/* The lineage entry `id` (new reference). KD_E_NOTFOUND for 0 or unknown. */
int kd_store_lineage_get(kd_store_read *r, uint32_t id, json_t **out);

/* ------------------------------------------------------------------------ */
/* Writing: batches */

/* Begin a batch: one write transaction. Blocks while another writer (thread
 * or process) holds one. Errors: KD_E_USAGE (store opened read-only), KD_E_IO. */
int kd_store_batch_begin(kd_store *s, kd_store_batch **out);

enum {
    KD_PUT_KEEP = 0,         /* the key exists: keep the stored record, *added = 0 */
    KD_PUT_REPLACE = 1 << 0, /* the key exists: overwrite it */
};

/* Encode `rec` (rec->db says where) and put it. *added (may be NULL) is 1 when
 * stored, 0 when KD_PUT_KEEP found the key taken. The record's data is copied.
 * On MDB_MAP_FULL the map grows and the batch replays: invisible to the caller.
 * Errors: KD_E_RANGE (a field over 4 GiB; a batch too large for one
 * transaction), KD_E_IO (disk full or an LMDB error), KD_E_NOMEM. After an
 * error the batch can only be aborted. */
int kd_store_put(kd_store_batch *b, const kd_record *rec, unsigned flags, int *added);

/* Put an already-encoded value (from kd_record_encode, or copied from another
 * dataset) under the key of (db, id, sample). Same semantics as kd_store_put. */
int kd_store_put_raw(kd_store_batch *b, kd_db db, uint64_t id, uint32_t sample, const void *val,
                     size_t vlen, unsigned flags, int *added);

/* Set meta `key` (at most 400 bytes) to compact JSON of `value` (borrowed). */
int kd_store_meta_put(kd_store_batch *b, const char *key, const json_t *value);

/* Lineage fields a producer fills in; NULL/negative = unknown. */
typedef struct kd_lineage {
    const char *kind;        /* what made the records: "import", "generate", "merge", ... */
    const char *source;      /* the input file, dataset or run (required) */
    const char *teacher;     /* the teacher model */
    const char *config_hash; /* hash of the producing configuration */
    int64_t seed;            /* -1 = none */
} kd_lineage;

/* Add a lineage entry and return its id (1, 2, ...) in *id. `extra` (may be
 * NULL; borrowed) is an object whose keys are added to the entry. */
int kd_store_lineage_add(kd_store_batch *b, const kd_lineage *l, const json_t *extra, uint32_t *id);
/* Add a whole entry (an object with at least "source"; its "id" is ignored).
 * With `dedupe`, an existing entry equal to it apart from "id" is reused. */
int kd_store_lineage_add_json(kd_store_batch *b, const json_t *entry, int dedupe, uint32_t *id);

/* A read view of the batch: sees the batch's own puts. Valid until the batch
 * ends; pointers read through it are valid until the next put or commit. */
kd_store_read *kd_store_batch_view(kd_store_batch *b);

/* Bytes of encoded records put so far (to size batches). */
size_t kd_store_batch_bytes(const kd_store_batch *b);

/* Commit and free the batch. On MDB_MAP_FULL during commit the map grows and
 * the batch replays. Errors: KD_E_IO (disk full, fsync failed): nothing of
 * the batch is stored. The batch is freed either way. */
int kd_store_batch_commit(kd_store_batch *b);
/* Drop every put of the batch and free it. NULL is a no-op. */
void kd_store_batch_abort(kd_store_batch *b);

/* ------------------------------------------------------------------------ */
/* Record encoding, for producers that encode on many threads (import) and
 * for tests. The encoder compresses large text fields with zstd. */

typedef struct kd_record_encoder kd_record_encoder;

/* level 0 = 1; compress_min 0 = KD_STORE_COMPRESS_MIN, SIZE_MAX = never. */
int kd_record_encoder_new(size_t compress_min, int level, kd_record_encoder **out);
void kd_record_encoder_free(kd_record_encoder *e);
/* Encode rec into a buffer owned by `e`, valid until the next encode on `e`.
 * created_ms 0 becomes now. Errors: KD_E_RANGE (a field over 4 GiB), KD_E_NOMEM. */
int kd_record_encode(kd_record_encoder *e, const kd_record *rec, const void **val, size_t *vlen);

/* Scratch space for decoding compressed fields: a buffer and a zstd context.
 * Zero-initialize it; release it with kd_record_scratch_release. */
typedef struct kd_record_scratch {
    void *buf;
    size_t cap;
    void *zstd; /* ZSTD_DCtx */
} kd_record_scratch;
void kd_record_scratch_release(kd_record_scratch *s);

/* Decode a value of `db` in place: pointers into `val`, except compressed
 * fields, which are decompressed into `scratch` (reused: the pointers of the
 * previous decode with the same scratch become invalid). id and sample are
 * not in the value (they are the key): the caller sets them. `what` names the
 * record in error messages. Errors: KD_E_FORMAT, KD_E_NOMEM. */
int kd_record_decode(kd_db db, const void *val, size_t vlen, kd_record_scratch *scratch, const char *what,
                     kd_record *out);

/* Rewrite the lineage id in an encoded value (merge remaps lineages). */
void kd_record_set_lineage(void *val, size_t vlen, uint32_t lineage);

/* Milliseconds since the Unix epoch. */
uint64_t kd_time_ms(void);
/* "2025-01-02T03:04:05Z" for ms since the epoch, into buf; returns buf. */
char *kd_fmt_time_ms(char *buf, size_t cap, uint64_t ms);
/* 64-bit FNV-1a of bytes: names meta keys and fingerprints configurations
 * (not a content hash for deduplication). */
uint64_t kd_fnv1a64(const void *data, size_t len, uint64_t seed);
#define KD_FNV1A64_INIT 0xcbf29ce484222325ull

#ifdef __cplusplus
}
#endif
#endif
