/* store.c - the LMDB dataset store. See store.h for the layout and the rules.
 *
 * Reading order: small helpers (bytes, keys, names), record encoding and
 * decoding, the environment (open, schema, close, manifest), the transaction
 * gate that makes map resizing safe, reading (get, count, cursors, meta,
 * lineage), writing (batches with a replay log).
 */
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the record layout is little-endian: add byte swaps before building for a big-endian host");

/* ------------------------------------------------------------------------ */
/* Bytes, keys, names */

static inline void put_u16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t get_u16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t get_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}
static inline void put_be32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}
static inline uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
static inline uint32_t get_be32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | p[i];
    return v;
}

static const char *const db_names[KD_DB_COUNT] = {"prompts", "generations", "verdicts", "examples"};
static const char *const db_singular[KD_DB_COUNT] = {"prompt", "generation", "verdict", "example"};

const char *kd_db_name(kd_db db) { return (unsigned)db < KD_DB_COUNT ? db_names[db] : "?"; }

int kd_db_parse(const char *name)
{
    for (int i = 0; name && i < KD_DB_COUNT; i++)
        if (!strcmp(name, db_names[i]) || !strcmp(name, db_singular[i]))
            return i;
    return -1;
}

const char *kd_finish_name(unsigned f)
{
    static const char *const n[KD_FINISH_COUNT] = {"unknown", "stop", "length", "abort", "budget", "skipped"};
    return f < KD_FINISH_COUNT ? n[f] : "?";
}

static int keyed_by_unit(kd_db db) { return db == KD_DB_GENERATIONS || db == KD_DB_VERDICTS; }
static size_t key_len(kd_db db) { return keyed_by_unit(db) ? 12 : 8; }

static size_t make_key(kd_db db, uint64_t id, uint32_t sample, unsigned char *k)
{
    put_be64(k, id);
    if (keyed_by_unit(db))
        put_be32(k + 8, sample);
    return key_len(db);
}

/* "prompt 17", "generation (17, 3)" */
static void rec_name(char *buf, size_t cap, kd_db db, uint64_t id, uint32_t sample)
{
    if (keyed_by_unit(db))
        snprintf(buf, cap, "%s (%llu, %u)", db_singular[db], (unsigned long long)id, sample);
    else
        snprintf(buf, cap, "%s %llu", db_singular[db], (unsigned long long)id);
}

uint64_t kd_time_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

char *kd_fmt_time_ms(char *buf, size_t cap, uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, cap, "?");
    return buf;
}

uint64_t kd_fnv1a64(const void *data, size_t len, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull; /* the 64-bit FNV prime */
    }
    return h;
}

/* ------------------------------------------------------------------------ */
/* Records: encoding */

/* Bytes of each kind's fixed part in this layout version, and how many
 * variable fields it has. */
static const uint32_t fixed_len_of[KD_DB_COUNT] = {8, 16, 16, 24};
static const uint32_t nfields_of[KD_DB_COUNT] = {4, 2, 3, 0};

struct kd_record_encoder {
    ZSTD_CCtx *cctx;
    size_t min;
    int level;
    unsigned char *buf;
    size_t cap;
};

int kd_record_encoder_new(size_t compress_min, int level, kd_record_encoder **out)
{
    kd_record_encoder *e = calloc(1, sizeof *e);
    *out = NULL;
    if (!e)
        return kd_err(KD_E_NOMEM, "record encoder");
    e->min = compress_min ? compress_min : KD_STORE_COMPRESS_MIN;
    e->level = level ? level : 1;
    *out = e;
    return KD_OK;
}

void kd_record_encoder_free(kd_record_encoder *e)
{
    if (!e)
        return;
    ZSTD_freeCCtx(e->cctx);
    free(e->buf);
    free(e);
}

static int reserve(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return KD_OK;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    unsigned char *p = realloc(*buf, n);
    if (!p)
        return kd_err(KD_E_NOMEM, "cannot allocate %zu bytes", n);
    *buf = p;
    *cap = n;
    return KD_OK;
}

int kd_record_encode(kd_record_encoder *e, const kd_record *rec, const void **val, size_t *vlen)
{
    kd_db db = rec->db;
    assert((unsigned)db < KD_DB_COUNT);
    unsigned char fixed[24] = {0};
    kd_text f[4] = {{0}};
    uint32_t nf = nfields_of[db], flen = fixed_len_of[db];
    switch (db) {
    case KD_DB_PROMPTS:
        put_u32(fixed, (rec->has_answer ? 1u : 0u) | (rec->chat ? 2u : 0u));
        f[0] = rec->text, f[1] = rec->answer, f[2] = rec->messages, f[3] = rec->extra;
        break;
    case KD_DB_GENERATIONS:
        put_u32(fixed, rec->finish);
        put_u32(fixed + 4, rec->prompt_tokens);
        put_u32(fixed + 8, rec->completion_tokens);
        f[0] = rec->text, f[1] = rec->extra;
        break;
    case KD_DB_VERDICTS: {
        float score = rec->has_score ? rec->score : 0.0f;
        put_u32(fixed, (rec->accepted ? 1u : 0u) | (rec->has_score ? 2u : 0u));
        memcpy(fixed + 4, &score, 4);
        f[0] = rec->reason, f[1] = rec->answer, f[2] = rec->extra;
        break;
    }
    case KD_DB_EXAMPLES:
        put_u64(fixed, rec->origin_id);
        put_u32(fixed + 8, rec->origin_sample);
        put_u32(fixed + 12, rec->n_tokens);
        break;
    default:
        break;
    }
    /* worst case size: every field stored raw or as a zstd frame, whichever bound is larger */
    uint64_t need = KD_REC_HEADER + flen;
    for (uint32_t i = 0; i < nf; i++) {
        if (f[i].len > UINT32_MAX - 64)
            return kd_err(KD_E_RANGE, "%s field %u is %zu bytes, over the 4 GiB limit", db_singular[db], i,
                          f[i].len);
        size_t b = f[i].len >= e->min ? ZSTD_compressBound(f[i].len) : f[i].len;
        need += 4 + (b > f[i].len ? b : f[i].len);
    }
    size_t mask_bytes = ((size_t)rec->n_tokens + 7) / 8;
    if (db == KD_DB_EXAMPLES) {
        if (rec->n_tokens > (UINT32_MAX - 64) / 5)
            return kd_err(KD_E_RANGE, "example of %u tokens is too large", rec->n_tokens);
        if (rec->n_tokens && !rec->ids)
            return kd_err(KD_E_RANGE, "example of %u tokens without ids", rec->n_tokens);
        need += 4 * (uint64_t)rec->n_tokens + mask_bytes;
    }
    KD_TRY(reserve(&e->buf, &e->cap, (size_t)need));
    unsigned char *p = e->buf;
    p[0] = KD_REC_VERSION;
    p[1] = (unsigned char)(db + 1);
    put_u32(p + 4, rec->lineage);
    put_u64(p + 8, rec->created_ms ? rec->created_ms : kd_time_ms());
    put_u32(p + 16, flen);
    put_u32(p + 20, nf);
    memcpy(p + KD_REC_HEADER, fixed, flen);
    size_t off = KD_REC_HEADER + flen;
    uint16_t zmask = 0;
    for (uint32_t i = 0; i < nf; i++) {
        size_t len = f[i].len, stored = len;
        unsigned char *dst = p + off + 4;
        if (len >= e->min && e->min != SIZE_MAX) {
            if (!e->cctx && !(e->cctx = ZSTD_createCCtx()))
                return kd_err(KD_E_NOMEM, "zstd context");
            size_t cs = ZSTD_compressCCtx(e->cctx, dst, ZSTD_compressBound(len), f[i].ptr, len, e->level);
            if (!ZSTD_isError(cs) && cs < len) {
                stored = cs;
                zmask |= (uint16_t)(1u << i);
            } else {
                memcpy(dst, f[i].ptr, len);
            }
        } else if (len) {
            memcpy(dst, f[i].ptr, len);
        }
        put_u32(p + off, (uint32_t)stored);
        off += 4 + stored;
    }
    put_u16(p + 2, zmask);
    if (db == KD_DB_EXAMPLES) {
        size_t n = rec->n_tokens;
        assert(off == KD_EXAMPLE_IDS_OFFSET);
        if (n)
            memcpy(p + off, rec->ids, 4 * n);
        off += 4 * n;
        if (rec->mask)
            memcpy(p + off, rec->mask, mask_bytes);
        else
            memset(p + off, 0xff, mask_bytes);
        if (n & 7) /* bits past the last token are zero: one canonical encoding */
            p[off + mask_bytes - 1] &= (unsigned char)((1u << (n & 7)) - 1);
        off += mask_bytes;
    }
    *val = p;
    *vlen = off;
    return KD_OK;
}

void kd_record_set_lineage(void *val, size_t vlen, uint32_t lineage)
{
    if (vlen >= KD_REC_HEADER)
        put_u32((unsigned char *)val + 4, lineage);
}

/* ------------------------------------------------------------------------ */
/* Records: decoding */

void kd_record_scratch_release(kd_record_scratch *s)
{
    if (!s)
        return;
    free(s->buf);
    ZSTD_freeDCtx(s->zstd);
    memset(s, 0, sizeof *s);
}

#define BAD(...) kd_err(KD_E_FORMAT, __VA_ARGS__)

int kd_record_decode(kd_db db, const void *val, size_t vlen, kd_record_scratch *sc, const char *what,
                     kd_record *out)
{
    const unsigned char *p = val;
    assert((unsigned)db < KD_DB_COUNT);
    memset(out, 0, sizeof *out);
    out->db = db;
    if (vlen < KD_REC_HEADER)
        return BAD("%s: damaged record: %zu bytes, shorter than the %d-byte header", what, vlen, KD_REC_HEADER);
    if (p[0] == 0 || p[0] > KD_REC_VERSION)
        return BAD("%s: record layout version %u; this distill reads up to %d (a newer distill wrote it?)", what,
                   p[0], KD_REC_VERSION);
    if (p[1] != db + 1)
        return BAD("%s: damaged record: kind %u in the %s sub-database", what, p[1], db_names[db]);
    uint16_t zmask = get_u16(p + 2);
    out->lineage = get_u32(p + 4);
    out->created_ms = get_u64(p + 8);
    uint32_t flen = get_u32(p + 16), nf = get_u32(p + 20);
    if (flen < fixed_len_of[db] || flen > vlen - KD_REC_HEADER)
        return BAD("%s: damaged record: fixed part of %u bytes in a %zu-byte value", what, flen, vlen);
    const unsigned char *fx = p + KD_REC_HEADER;
    size_t off = KD_REC_HEADER + (size_t)flen;
    switch (db) {
    case KD_DB_PROMPTS: {
        uint32_t fl = get_u32(fx);
        out->has_answer = fl & 1;
        out->chat = (fl >> 1) & 1;
        break;
    }
    case KD_DB_GENERATIONS:
        out->finish = get_u32(fx);
        out->prompt_tokens = get_u32(fx + 4);
        out->completion_tokens = get_u32(fx + 8);
        break;
    case KD_DB_VERDICTS: {
        uint32_t fl = get_u32(fx);
        out->accepted = fl & 1;
        out->has_score = (fl >> 1) & 1;
        memcpy(&out->score, fx + 4, 4);
        break;
    }
    case KD_DB_EXAMPLES: {
        out->origin_id = get_u64(fx);
        out->origin_sample = get_u32(fx + 8);
        out->n_tokens = get_u32(fx + 12);
        uint64_t n = out->n_tokens, need = off + 4 * n + (n + 7) / 8;
        if (need > vlen)
            return BAD("%s: damaged record: %llu tokens need %llu bytes, the value has %zu", what,
                       (unsigned long long)n, (unsigned long long)need, vlen);
        out->ids = p + off;
        out->mask = p + off + 4 * n;
        return KD_OK; /* fields a later version may add would follow the mask */
    }
    default:
        break;
    }
    /* variable fields: walk them all (bounds first), then decompress */
    kd_text f[4] = {{0}};
    size_t ztotal = 0;
    if (zmask >> (nf < 16 ? nf : 16))
        return BAD("%s: damaged record: compression flags 0x%x for %u fields", what, zmask, nf);
    for (uint32_t i = 0; i < nf; i++) {
        if (vlen - off < 4)
            return BAD("%s: damaged record: field %u runs past the value", what, i);
        uint32_t len = get_u32(p + off);
        off += 4;
        if (len > vlen - off)
            return BAD("%s: damaged record: field %u of %u bytes runs past the value", what, i, len);
        if (i < 4) {
            f[i].ptr = (const char *)p + off;
            f[i].len = len;
        }
        if (i < 16 && (zmask >> i & 1)) {
            unsigned long long cs = ZSTD_getFrameContentSize(p + off, len);
            if (cs == ZSTD_CONTENTSIZE_ERROR || cs == ZSTD_CONTENTSIZE_UNKNOWN || cs > UINT32_MAX)
                return BAD("%s: damaged record: field %u is not a zstd frame of known size", what, i);
            if (i < 4)
                ztotal += (size_t)cs;
        }
        off += len;
    }
    if (ztotal) {
        KD_TRY(reserve((unsigned char **)&sc->buf, &sc->cap, ztotal));
        if (!sc->zstd && !(sc->zstd = ZSTD_createDCtx()))
            return kd_err(KD_E_NOMEM, "zstd context");
        char *dst = sc->buf;
        for (uint32_t i = 0; i < nf && i < 4; i++) {
            if (!(zmask >> i & 1))
                continue;
            size_t cs = (size_t)ZSTD_getFrameContentSize(f[i].ptr, f[i].len);
            size_t got = ZSTD_decompressDCtx(sc->zstd, dst, cs, f[i].ptr, f[i].len);
            if (ZSTD_isError(got) || got != cs)
                return BAD("%s: damaged record: field %u does not decompress: %s", what, i,
                           ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short frame");
            f[i].ptr = dst;
            f[i].len = cs;
            dst += cs;
        }
    }
    switch (db) {
    case KD_DB_PROMPTS:
        out->text = f[0], out->answer = f[1], out->messages = f[2], out->extra = f[3];
        break;
    case KD_DB_GENERATIONS:
        out->text = f[0], out->extra = f[1];
        break;
    case KD_DB_VERDICTS:
        out->reason = f[0], out->answer = f[1], out->extra = f[2];
        break;
    default:
        break;
    }
    return KD_OK;
}

/* ------------------------------------------------------------------------ */
/* The environment */

struct kd_store {
    MDB_env *env;
    MDB_dbi dbi[KD_DB_COUNT];
    MDB_dbi meta;
    char *path;
    unsigned flags;
    size_t compress_min;
    int compress_level;
    /* The transaction gate: mdb_env_set_mapsize needs every transaction of this
     * process ended. `active` counts transactions in flight; a resize sets
     * `resizing`, which holds back new ones, and waits for active == 0. */
    pthread_mutex_t lk;
    pthread_cond_t cv;
    int active;
    int resizing;
    double manifest_at; /* kd_now() of the last manifest write */
    int dirty;          /* a batch committed since the last manifest write */
};

struct kd_store_read {
    kd_store *s;
    MDB_txn *txn;
    kd_record_scratch scratch;
    int view; /* 1: a batch's view; the batch owns txn */
};

static int mdb_fail(const kd_store *s, int rc, const char *what)
{
    int code = KD_E_IO;
    if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID || rc == MDB_INCOMPATIBLE ||
        rc == MDB_VERSION_MISMATCH || rc == MDB_BAD_VALSIZE)
        code = KD_E_FORMAT;
    else if (rc == ENOMEM)
        code = KD_E_NOMEM;
    else if (rc == MDB_TXN_FULL)
        code = KD_E_RANGE;
    const char *hint = rc == MDB_READERS_FULL ? " (too many open read transactions)"
                       : rc == MDB_TXN_FULL   ? " (too much in one batch: commit more often)"
                       : rc == ENOSPC         ? " (disk full)"
                                              : "";
    return kd_err(code, "dataset '%s': %s: %s%s", s->path, what, mdb_strerror(rc), hint);
}

static void txn_enter(kd_store *s)
{
    pthread_mutex_lock(&s->lk);
    while (s->resizing)
        pthread_cond_wait(&s->cv, &s->lk);
    s->active++;
    pthread_mutex_unlock(&s->lk);
}

static void txn_leave(kd_store *s)
{
    pthread_mutex_lock(&s->lk);
    if (--s->active == 0)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lk);
}

/* Set the map to at least `min_size` bytes (0: adopt the size another process
 * set) once no transaction of this process is in flight. The caller must not
 * be counted in `active`. Returns an LMDB code. */
static int map_resize(kd_store *s, size_t min_size)
{
    int rc = 0;
    pthread_mutex_lock(&s->lk);
    while (s->resizing)
        pthread_cond_wait(&s->cv, &s->lk);
    s->resizing = 1;
    while (s->active > 0)
        pthread_cond_wait(&s->cv, &s->lk);
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    if (min_size == 0 || info.me_mapsize < min_size)
        rc = mdb_env_set_mapsize(s->env, min_size);
    s->resizing = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lk);
    return rc;
}

/* Begin a transaction through the gate; on MDB_MAP_RESIZED (another process
 * grew the map) adopt the new size and retry. Returns an LMDB code; on
 * success the transaction is counted in `active`. */
static int begin_txn(kd_store *s, unsigned flags, MDB_txn **txn)
{
    for (;;) {
        txn_enter(s);
        int rc = mdb_txn_begin(s->env, NULL, flags, txn);
        if (rc == 0)
            return 0;
        txn_leave(s);
        if (rc != MDB_MAP_RESIZED)
            return rc;
        kd_debug("dataset '%s': another process grew the map; adopting its size", s->path);
        if ((rc = map_resize(s, 0)) != 0)
            return rc;
    }
}

/* data.mdb must be absent (create), empty (create: a killed create), or start
 * with LMDB's meta page: magic 0xBEEFC0DE at byte 16 (after the 16-byte page
 * header), data format version 1 at byte 20. */
static int check_data_file(const char *path, const char *file, int create, int *fresh)
{
    struct stat st;
    *fresh = 0;
    if (stat(file, &st) != 0) {
        if (errno != ENOENT)
            return kd_err(KD_E_IO, "dataset '%s': cannot stat '%s': %s", path, file, strerror(errno));
        if (!create)
            return kd_err(KD_E_NOTFOUND, "no dataset at '%s' (it has no data.mdb)", path);
        *fresh = 1;
        return KD_OK;
    }
    if (!S_ISREG(st.st_mode))
        return kd_err(KD_E_FORMAT, "dataset '%s': '%s' is not a regular file", path, file);
    if (st.st_size == 0) {
        if (!create)
            return kd_err(KD_E_FORMAT, "dataset '%s': data.mdb is empty, not a dataset (was its creation killed?)",
                          path);
        *fresh = 1;
        return KD_OK;
    }
    unsigned char hdr[24];
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kd_err(KD_E_IO, "dataset '%s': cannot open '%s': %s", path, file, strerror(errno));
    ssize_t n = pread(fd, hdr, sizeof hdr, 0);
    close(fd);
    if (n != (ssize_t)sizeof hdr || get_u32(hdr + 16) != 0xBEEFC0DEu)
        return kd_err(KD_E_FORMAT, "dataset '%s': '%s' is not an LMDB file (no LMDB magic number)", path, file);
    if (get_u32(hdr + 20) != 1)
        return kd_err(KD_E_FORMAT, "dataset '%s': '%s' has LMDB data version %u; this build reads version 1",
                      path, file, get_u32(hdr + 20));
    return KD_OK;
}

static const char *base_name(const char *path, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = 0;
    const char *b = strrchr(buf, '/');
    return b ? b + 1 : buf;
}

static int put_json(MDB_txn *txn, MDB_dbi dbi, const char *key, const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return ENOMEM;
    MDB_val k = {strlen(key), (void *)key}, d = {strlen(text), text};
    int rc = mdb_put(txn, dbi, &k, &d, 0);
    free(text);
    return rc;
}

/* A new dataset: the sub-databases, the schema version and the dataset entry,
 * in the transaction `txn` (committed by the caller). */
static int init_schema(kd_store *s, MDB_txn *txn, const char *name)
{
    int rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta);
    for (int i = 0; i < KD_DB_COUNT && !rc; i++)
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]);
    if (rc)
        return mdb_fail(s, rc, "cannot create the sub-databases");
    char nb[256], tb[32];
    uint64_t now = kd_time_ms();
    json_t *ver = json_integer(KD_STORE_SCHEMA);
    json_t *ds = json_pack("{s:s, s:s, s:I}", "name", name ? name : base_name(s->path, nb, sizeof nb), "created",
                           kd_fmt_time_ms(tb, sizeof tb, now), "created_ms", (json_int_t)now);
    rc = ver && ds ? put_json(txn, s->meta, "schema_version", ver) : ENOMEM;
    if (!rc)
        rc = put_json(txn, s->meta, "dataset", ds);
    json_decref(ver);
    json_decref(ds);
    return rc ? mdb_fail(s, rc, "cannot write the schema") : KD_OK;
}

/* Open the sub-databases of an existing dataset, checking the schema version;
 * or, for a fresh (or killed-at-creation) environment with KD_STORE_CREATE,
 * create them. */
static int open_schema(kd_store *s, int create, const char *name, int *created)
{
    int rdonly = (s->flags & KD_STORE_RDONLY) != 0, st = KD_OK;
    MDB_txn *txn;
    *created = 0;
    int rc = begin_txn(s, rdonly ? MDB_RDONLY : 0, &txn);
    if (rc)
        return mdb_fail(s, rc, "cannot begin a transaction");
    MDB_dbi main_dbi;
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (!rc)
        rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
    if (rc == MDB_NOTFOUND) {
        MDB_stat ms;
        mdb_stat(txn, main_dbi, &ms);
        if (ms.ms_entries == 0 && create) {
            st = init_schema(s, txn, name);
            *created = st == KD_OK;
        } else if (ms.ms_entries == 0) {
            st = kd_err(KD_E_FORMAT, "dataset '%s' is empty: its creation did not finish (import again to create it)",
                        s->path);
        } else {
            st = kd_err(KD_E_FORMAT, "'%s' is an LMDB environment but not a distill dataset (no 'meta' sub-database)",
                        s->path);
        }
    } else if (rc == MDB_INCOMPATIBLE) {
        st = kd_err(KD_E_FORMAT, "'%s' is an LMDB environment but not a distill dataset ('meta' is not a sub-database)",
                    s->path);
    } else if (rc) {
        st = mdb_fail(s, rc, "cannot open the meta sub-database");
    } else {
        MDB_val k = {strlen("schema_version"), "schema_version"}, v;
        rc = mdb_get(txn, s->meta, &k, &v);
        char buf[32];
        if (rc == MDB_NOTFOUND) {
            st = kd_err(KD_E_FORMAT, "dataset '%s' has no schema version in meta: not a distill dataset", s->path);
        } else if (rc) {
            st = mdb_fail(s, rc, "cannot read the schema version");
        } else {
            size_t n = v.mv_size < sizeof buf - 1 ? v.mv_size : sizeof buf - 1;
            memcpy(buf, v.mv_data, n);
            buf[n] = 0;
            char *end;
            unsigned long long ver = strtoull(buf, &end, 10);
            if (n == 0 || v.mv_size >= sizeof buf || *end || buf[0] < '0' || buf[0] > '9' || ver == 0)
                st = kd_err(KD_E_FORMAT, "dataset '%s': schema version '%s' is not a positive number", s->path, buf);
            else if (ver > KD_STORE_SCHEMA)
                st = kd_err(KD_E_FORMAT,
                            "dataset '%s' has schema version %llu; this distill reads version %d (upgrade distill)",
                            s->path, ver, KD_STORE_SCHEMA);
        }
        for (int i = 0; i < KD_DB_COUNT && st == KD_OK; i++) {
            rc = mdb_dbi_open(txn, db_names[i], 0, &s->dbi[i]);
            if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
                st = kd_err(KD_E_FORMAT, "dataset '%s': the '%s' sub-database is missing", s->path, db_names[i]);
            else if (rc)
                st = mdb_fail(s, rc, db_names[i]);
        }
    }
    if (st == KD_OK) {
        /* commit even a read-only transaction: that keeps the dbi handles */
        rc = mdb_txn_commit(txn);
        if (rc)
            st = mdb_fail(s, rc, "cannot commit the schema");
    } else {
        mdb_txn_abort(txn);
    }
    txn_leave(s);
    return st;
}

/* Whether manifest.json is missing or not newer than data.mdb: a writer killed between its last
 * commit and its close leaves the mirror behind the data, and a later writer that has nothing to
 * commit (a finished import rerun) would otherwise never refresh it. Equal times count as stale:
 * file times tick at the kernel's clock granularity, and a needless rewrite costs little. */
static int manifest_stale(const char *dir, const char *data_file)
{
    char mpath[4096];
    struct stat ms, ds;
    if (kd_path_join(mpath, sizeof mpath, dir, "manifest.json") != KD_OK || stat(data_file, &ds) != 0)
        return 0;
    if (stat(mpath, &ms) != 0)
        return 1;
    if (ms.st_mtim.tv_sec != ds.st_mtim.tv_sec)
        return ms.st_mtim.tv_sec < ds.st_mtim.tv_sec;
    return ms.st_mtim.tv_nsec <= ds.st_mtim.tv_nsec;
}

int kd_store_open_opts(const char *path, const kd_store_opts *o, kd_store **out)
{
    static const kd_store_opts defaults = {0};
    if (!o)
        o = &defaults;
    *out = NULL;
    unsigned flags = o->flags;
    int rdonly = (flags & KD_STORE_RDONLY) != 0, create = (flags & KD_STORE_CREATE) && !rdonly;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT)
            return kd_err(KD_E_IO, "cannot open dataset '%s': %s", path, strerror(errno));
        if (!create)
            return kd_err(KD_E_NOTFOUND, "no dataset at '%s'", path);
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return kd_err(KD_E_IO, "cannot create dataset directory '%s': %s", path, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        return kd_err(KD_E_FORMAT, "'%s' is a file, not a dataset directory", path);
    }
    char file[4096];
    KD_TRY(kd_path_join(file, sizeof file, path, "data.mdb"));
    int fresh;
    KD_TRY(check_data_file(path, file, create, &fresh));

    kd_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return kd_err(KD_E_NOMEM, "dataset '%s'", path);
    }
    pthread_mutex_init(&s->lk, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->flags = flags;
    s->compress_min = o->compress_min ? o->compress_min : KD_STORE_COMPRESS_MIN;
    s->compress_level = o->compress_level ? o->compress_level : 1;
    s->manifest_at = kd_now();
    int rc = mdb_env_create(&s->env), status = KD_OK;
    if (rc) {
        status = mdb_fail(s, rc, "cannot create the LMDB environment");
        s->env = NULL;
        goto fail;
    }
    mdb_env_set_maxdbs(s->env, 8);
    mdb_env_set_maxreaders(s->env, KD_STORE_MAX_READERS);
    mdb_env_set_mapsize(s->env, o->map_size ? (size_t)o->map_size : (size_t)KD_STORE_MAP_SIZE);
    unsigned ef = MDB_NOTLS;
    if (rdonly)
        ef |= MDB_RDONLY;
    else if (flags & KD_STORE_FAST)
        ef |= MDB_NOSYNC | MDB_NOMETASYNC;
    rc = mdb_env_open(s->env, path, ef, 0644);
    if (rc) {
        status = kd_err(rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ? KD_E_FORMAT : KD_E_IO,
                        "cannot open dataset '%s': %s", path, mdb_strerror(rc));
        goto fail;
    }
    /* A file shorter than its meta page claims would SIGBUS on first touch. */
    MDB_envinfo info;
    MDB_stat est;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &est);
    if (stat(file, &st) == 0 && !fresh) {
        unsigned long long need = ((unsigned long long)info.me_last_pgno + 1) * est.ms_psize;
        if ((unsigned long long)st.st_size < need) {
            status = kd_err(KD_E_FORMAT, "dataset '%s': data.mdb is truncated: %lld bytes, its meta page needs %llu",
                            path, (long long)st.st_size, need);
            goto fail;
        }
    }
    int dead = 0;
    mdb_reader_check(s->env, &dead); /* free the reader slots of killed processes */
    if (dead)
        kd_debug("dataset '%s': cleared %d stale reader slot(s)", path, dead);
    int created;
    if ((status = open_schema(s, create, o->name, &created)) != KD_OK)
        goto fail;
    if (created) {
        s->dirty = 1;
        kd_store_write_manifest(s); /* a mirror: a failure here is not fatal, close retries */
    } else if (!rdonly && manifest_stale(path, file)) {
        s->dirty = 1; /* a writer was killed after its last commit: this writer's close mirrors it */
    }
    *out = s;
    return KD_OK;
fail:
    if (s->env)
        mdb_env_close(s->env);
    pthread_mutex_destroy(&s->lk);
    pthread_cond_destroy(&s->cv);
    free(s->path);
    free(s);
    return status;
}

int kd_store_open(const char *path, unsigned flags, kd_store **out)
{
    kd_store_opts o = {.flags = flags};
    return kd_store_open_opts(path, &o, out);
}

int kd_store_close(kd_store *s)
{
    if (!s)
        return KD_OK;
    int st = KD_OK;
    assert(s->active == 0 && "close every transaction, batch and cursor before kd_store_close");
    if (!(s->flags & KD_STORE_RDONLY)) {
        if (s->flags & KD_STORE_FAST) {
            int rc = mdb_env_sync(s->env, 1);
            if (rc)
                st = mdb_fail(s, rc, "cannot sync");
        }
        if (s->dirty) {
            int m = kd_store_write_manifest(s);
            if (st == KD_OK)
                st = m;
        }
    }
    mdb_env_close(s->env);
    pthread_mutex_destroy(&s->lk);
    pthread_cond_destroy(&s->cv);
    free(s->path);
    free(s);
    return st;
}

const char *kd_store_path(const kd_store *s) { return s->path; }

uint64_t kd_store_map_size(kd_store *s)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    return info.me_mapsize;
}

/* ------------------------------------------------------------------------ */
/* Reading */

int kd_store_read_begin(kd_store *s, kd_store_read **out)
{
    *out = NULL;
    kd_store_read *r = calloc(1, sizeof *r);
    if (!r)
        return kd_err(KD_E_NOMEM, "read transaction");
    int rc = begin_txn(s, MDB_RDONLY, &r->txn);
    if (rc) {
        free(r);
        return mdb_fail(s, rc, "cannot begin a read transaction");
    }
    r->s = s;
    *out = r;
    return KD_OK;
}

void kd_store_read_end(kd_store_read *r)
{
    if (!r)
        return;
    assert(!r->view && "a batch's view ends with the batch");
    mdb_txn_abort(r->txn);
    txn_leave(r->s);
    kd_record_scratch_release(&r->scratch);
    free(r);
}

int kd_store_get(kd_store_read *r, kd_db db, uint64_t id, uint32_t sample, kd_record *out)
{
    assert((unsigned)db < KD_DB_COUNT);
    unsigned char kb[12];
    MDB_val k = {make_key(db, id, sample, kb), kb}, v;
    char name[64];
    rec_name(name, sizeof name, db, id, sample);
    int rc = mdb_get(r->txn, r->s->dbi[db], &k, &v);
    if (rc == MDB_NOTFOUND)
        return kd_err(KD_E_NOTFOUND, "dataset '%s': no %s", r->s->path, name);
    if (rc)
        return mdb_fail(r->s, rc, name);
    int st = kd_record_decode(db, v.mv_data, v.mv_size, &r->scratch, name, out);
    if (st)
        return kd_err_wrap(st, "dataset '%s'", r->s->path);
    out->id = id;
    out->sample = keyed_by_unit(db) ? sample : 0;
    return KD_OK;
}

int kd_store_get_raw(kd_store_read *r, kd_db db, uint64_t id, uint32_t sample, const void **val, size_t *vlen)
{
    assert((unsigned)db < KD_DB_COUNT);
    unsigned char kb[12];
    MDB_val k = {make_key(db, id, sample, kb), kb}, v;
    int rc = mdb_get(r->txn, r->s->dbi[db], &k, &v);
    char name[64];
    if (rc) {
        rec_name(name, sizeof name, db, id, sample);
        return rc == MDB_NOTFOUND ? kd_err(KD_E_NOTFOUND, "dataset '%s': no %s", r->s->path, name)
                                  : mdb_fail(r->s, rc, name);
    }
    *val = v.mv_data;
    *vlen = v.mv_size;
    return KD_OK;
}

int kd_record_same_but_lineage(const void *a, size_t alen, const void *b, size_t blen)
{
    const unsigned char *x = a, *y = b;
    return alen == blen && alen >= KD_REC_HEADER && !memcmp(x, y, 4) && !memcmp(x + 8, y + 8, alen - 8);
}

int kd_store_count(kd_store_read *r, kd_db db, uint64_t *out)
{
    MDB_stat ms;
    int rc = mdb_stat(r->txn, r->s->dbi[db], &ms);
    if (rc)
        return mdb_fail(r->s, rc, db_names[db]);
    *out = ms.ms_entries;
    return KD_OK;
}

static int key_parse(const kd_store *s, kd_db db, const MDB_val *k, uint64_t *id, uint32_t *sample)
{
    if (k->mv_size != key_len(db))
        return kd_err(KD_E_FORMAT, "dataset '%s': a %zu-byte key in '%s' (expected %zu)", s->path, k->mv_size,
                      db_names[db], key_len(db));
    *id = get_be64(k->mv_data);
    *sample = keyed_by_unit(db) ? get_be32((const unsigned char *)k->mv_data + 8) : 0;
    return KD_OK;
}

int kd_store_last(kd_store_read *r, kd_db db, uint64_t *id, uint32_t *sample, int *found)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint32_t smp = 0;
    *found = 0;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[db], &c);
    if (rc)
        return mdb_fail(r->s, rc, db_names[db]);
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    int st = KD_OK;
    if (rc == 0) {
        st = key_parse(r->s, db, &k, id, &smp);
        *found = st == KD_OK;
    } else if (rc != MDB_NOTFOUND) {
        st = mdb_fail(r->s, rc, db_names[db]);
    }
    mdb_cursor_close(c);
    if (sample)
        *sample = smp;
    return st;
}

int kd_store_unit_exists(kd_store_read *r, uint64_t prompt_id, uint32_t sample, int *exists)
{
    unsigned char kb[12];
    MDB_val k = {make_key(KD_DB_GENERATIONS, prompt_id, sample, kb), kb}, v;
    int rc = mdb_get(r->txn, r->s->dbi[KD_DB_GENERATIONS], &k, &v);
    *exists = rc == 0;
    if (rc && rc != MDB_NOTFOUND)
        return mdb_fail(r->s, rc, "generations");
    return KD_OK;
}

int kd_store_next_sample(kd_store_read *r, uint64_t prompt_id, uint32_t *out)
{
    MDB_cursor *c;
    MDB_val k, v;
    unsigned char kb[12];
    *out = 0;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[KD_DB_GENERATIONS], &c);
    if (rc)
        return mdb_fail(r->s, rc, "generations");
    /* the last key before (prompt_id + 1, 0) */
    if (prompt_id == UINT64_MAX) {
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    } else {
        make_key(KD_DB_GENERATIONS, prompt_id + 1, 0, kb);
        k.mv_size = 12;
        k.mv_data = kb;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        rc = rc == 0 ? mdb_cursor_get(c, &k, &v, MDB_PREV)
             : rc == MDB_NOTFOUND ? mdb_cursor_get(c, &k, &v, MDB_LAST)
                                  : rc;
    }
    int st = KD_OK;
    if (rc == 0) {
        uint64_t id = 0;
        uint32_t smp = 0;
        st = key_parse(r->s, KD_DB_GENERATIONS, &k, &id, &smp);
        if (st == KD_OK && id == prompt_id) {
            if (smp == UINT32_MAX)
                st = kd_err(KD_E_RANGE, "dataset '%s': prompt %llu has no free sample index", r->s->path,
                            (unsigned long long)prompt_id);
            *out = smp + 1;
        }
    } else if (rc != MDB_NOTFOUND) {
        st = mdb_fail(r->s, rc, "generations");
    }
    mdb_cursor_close(c);
    return st;
}

struct kd_store_cursor {
    kd_store_read *r;
    MDB_cursor *cur;
    kd_db db;
    MDB_cursor_op op; /* the next positioning: MDB_FIRST, MDB_NEXT, or MDB_SET_RANGE after a seek */
    unsigned char seek[12];
    MDB_val k, v;
    kd_record_scratch scratch;
};

int kd_store_cursor_open(kd_store_read *r, kd_db db, kd_store_cursor **out)
{
    assert((unsigned)db < KD_DB_COUNT);
    kd_store_cursor *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c)
        return kd_err(KD_E_NOMEM, "cursor");
    int rc = mdb_cursor_open(r->txn, r->s->dbi[db], &c->cur);
    if (rc) {
        free(c);
        return mdb_fail(r->s, rc, db_names[db]);
    }
    c->r = r;
    c->db = db;
    c->op = MDB_FIRST;
    *out = c;
    return KD_OK;
}

int kd_store_cursor_seek(kd_store_cursor *c, uint64_t id, uint32_t sample)
{
    make_key(c->db, id, sample, c->seek);
    c->op = MDB_SET_RANGE;
    return KD_OK;
}

int kd_store_cursor_next(kd_store_cursor *c, kd_record *out)
{
    MDB_val k = {0, NULL}, v;
    if (c->op == MDB_SET_RANGE) {
        k.mv_size = key_len(c->db);
        k.mv_data = c->seek;
    }
    int rc = mdb_cursor_get(c->cur, &k, &v, c->op);
    c->op = MDB_NEXT;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return mdb_fail(c->r->s, rc, db_names[c->db]);
    uint64_t id = 0;
    uint32_t sample = 0;
    KD_TRY(key_parse(c->r->s, c->db, &k, &id, &sample));
    c->k = k;
    c->v = v;
    int st = kd_record_decode(c->db, v.mv_data, v.mv_size, &c->scratch, "", out);
    if (st) { /* decode again to name the record: the error path only, the loop stays lean */
        char name[64];
        rec_name(name, sizeof name, c->db, id, sample);
        st = kd_record_decode(c->db, v.mv_data, v.mv_size, &c->scratch, name, out);
        return kd_err_wrap(st, "dataset '%s'", c->r->s->path);
    }
    out->id = id;
    out->sample = sample;
    return 1;
}

void kd_store_cursor_raw(kd_store_cursor *c, const void **key, size_t *klen, const void **val, size_t *vlen)
{
    *key = c->k.mv_data;
    *klen = c->k.mv_size;
    *val = c->v.mv_data;
    *vlen = c->v.mv_size;
}

void kd_store_cursor_close(kd_store_cursor *c)
{
    if (!c)
        return;
    mdb_cursor_close(c->cur);
    kd_record_scratch_release(&c->scratch);
    free(c);
}

int kd_store_meta_get(kd_store_read *r, const char *key, json_t **out)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    *out = NULL;
    int rc = mdb_get(r->txn, r->s->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return kd_err(KD_E_NOTFOUND, "dataset '%s': no meta '%s'", r->s->path, key);
    if (rc)
        return mdb_fail(r->s, rc, "meta");
    json_error_t e;
    *out = json_loadb(v.mv_data, v.mv_size, JSON_DECODE_ANY, &e);
    if (!*out)
        return kd_err(KD_E_FORMAT, "dataset '%s': meta '%s' is not JSON: %s", r->s->path, key, e.text);
    return KD_OK;
}

int kd_store_meta_list(kd_store_read *r, const char *prefix, json_t **out)
{
    MDB_cursor *c;
    size_t pl = strlen(prefix);
    MDB_val k = {pl, (void *)prefix}, v;
    json_t *obj = json_object();
    *out = NULL;
    if (!obj)
        return kd_err(KD_E_NOMEM, "meta list");
    int rc = mdb_cursor_open(r->txn, r->s->meta, &c), st = KD_OK;
    if (rc) {
        json_decref(obj);
        return mdb_fail(r->s, rc, "meta");
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < pl || memcmp(k.mv_data, prefix, pl) != 0)
            break;
        char key[512];
        if (k.mv_size >= sizeof key)
            continue;
        memcpy(key, k.mv_data, k.mv_size);
        key[k.mv_size] = 0;
        json_error_t e;
        json_t *val = json_loadb(v.mv_data, v.mv_size, JSON_DECODE_ANY, &e);
        if (!val) {
            st = kd_err(KD_E_FORMAT, "dataset '%s': meta '%s' is not JSON: %s", r->s->path, key, e.text);
            break;
        }
        json_object_set_new(obj, key, val);
    }
    if (st == KD_OK && rc && rc != MDB_NOTFOUND)
        st = mdb_fail(r->s, rc, "meta");
    mdb_cursor_close(c);
    if (st) {
        json_decref(obj);
        return st;
    }
    *out = obj;
    return KD_OK;
}

int kd_store_lineage_get(kd_store_read *r, uint32_t id, json_t **out)
{
    char key[32];
    *out = NULL;
    if (id == 0)
        return kd_err(KD_E_NOTFOUND, "dataset '%s': lineage 0 is 'unknown'", r->s->path);
    snprintf(key, sizeof key, "lineage/%08u", id);
    return kd_store_meta_get(r, key, out);
}

/* ------------------------------------------------------------------------ */
/* The manifest */

int kd_store_write_manifest(kd_store *s)
{
    if (s->flags & KD_STORE_RDONLY)
        return kd_err(KD_E_USAGE, "dataset '%s' is open read-only: cannot write its manifest", s->path);
    kd_store_read *r;
    KD_TRY(kd_store_read_begin(s, &r));
    json_t *m = json_object(), *counts = json_object(), *lin = json_array(), *imp = json_array();
    json_t *ds = NULL, *all = NULL;
    int st = KD_OK;
    char tb[32];
    json_object_set_new(m, "format", json_string("distill-dataset"));
    json_object_set_new(m, "note", json_string("a mirror of the LMDB 'meta' sub-database for humans; data.mdb is "
                                               "the source of truth (see docs/datasets.md)"));
    json_object_set_new(m, "schema_version", json_integer(KD_STORE_SCHEMA));
    if (kd_store_meta_get(r, "dataset", &ds) == KD_OK) {
        json_object_update(m, ds);
        json_decref(ds);
    }
    json_object_set_new(m, "updated", json_string(kd_fmt_time_ms(tb, sizeof tb, kd_time_ms())));
    for (int i = 0; i < KD_DB_COUNT && st == KD_OK; i++) {
        uint64_t n = 0;
        st = kd_store_count(r, (kd_db)i, &n);
        json_object_set_new(counts, db_names[i], json_integer((json_int_t)n));
    }
    json_object_set_new(m, "counts", counts);
    const char *key;
    json_t *val;
    if (st == KD_OK && (st = kd_store_meta_list(r, "lineage/", &all)) == KD_OK) {
        json_object_foreach(all, key, val) json_array_append(lin, val);
        json_decref(all);
    }
    if (st == KD_OK && (st = kd_store_meta_list(r, "import/", &all)) == KD_OK) {
        json_object_foreach(all, key, val) json_array_append(imp, val);
        json_decref(all);
    }
    json_object_set_new(m, "lineage", lin);
    json_object_set_new(m, "imports", imp);
    kd_store_read_end(r);
    if (st == KD_OK) {
        char *text = json_dumps(m, JSON_INDENT(2));
        char path[4096];
        if (!text)
            st = kd_err(KD_E_NOMEM, "manifest");
        else if ((st = kd_path_join(path, sizeof path - 1, s->path, "manifest.json")) == KD_OK) {
            size_t n = strlen(text);
            text[n] = '\n'; /* json_dumps leaves room: replace the NUL, write n + 1 bytes */
            st = kd_write_file_atomic(path, text, n + 1);
        }
        free(text);
    }
    json_decref(m);
    if (st == KD_OK) {
        s->dirty = 0;
        s->manifest_at = kd_now();
    } else {
        kd_warn("dataset '%s': cannot write manifest.json: %s", s->path, kd_strerror(st));
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Writing */

#define META_SEL 255 /* the log's db byte for meta puts */

struct kd_store_batch {
    kd_store *s;
    MDB_txn *txn;
    kd_store_read view;
    kd_record_encoder *enc;
    /* The replay log: every put of the batch, so the batch can be replayed in
     * a fresh transaction after the map grows. Entries are
     * {u8 db, u8 flags, u16 klen, u32 0, u64 vlen, key, value, pad to 8}. */
    unsigned char *log;
    size_t log_len, log_cap;
    size_t bytes;
    int failed;
    int entered; /* the transaction is counted in s->active */
    /* The largest key of each sub-db in this transaction, for MDB_APPEND:
     * state 0 unknown, 1 the sub-db is empty, 2 `last` holds it. */
    unsigned char last[KD_DB_COUNT][12];
    int last_state[KD_DB_COUNT];
};

int kd_store_batch_begin(kd_store *s, kd_store_batch **out)
{
    *out = NULL;
    if (s->flags & KD_STORE_RDONLY)
        return kd_err(KD_E_USAGE, "dataset '%s' is open read-only", s->path);
    kd_store_batch *b = calloc(1, sizeof *b);
    if (!b)
        return kd_err(KD_E_NOMEM, "batch");
    int st = kd_record_encoder_new(s->compress_min, s->compress_level, &b->enc);
    if (st) {
        free(b);
        return st;
    }
    int rc = begin_txn(s, 0, &b->txn);
    if (rc) {
        kd_record_encoder_free(b->enc);
        free(b);
        return mdb_fail(s, rc, "cannot begin a write transaction");
    }
    b->s = s;
    b->entered = 1;
    b->view.s = s;
    b->view.txn = b->txn;
    b->view.view = 1;
    *out = b;
    return KD_OK;
}

kd_store_read *kd_store_batch_view(kd_store_batch *b) { return &b->view; }

size_t kd_store_batch_bytes(const kd_store_batch *b) { return b->bytes; }

static int learn_last(kd_store_batch *b, int db)
{
    MDB_cursor *c;
    MDB_val k, v;
    int rc = mdb_cursor_open(b->txn, b->s->dbi[db], &c);
    if (rc)
        return rc;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == MDB_NOTFOUND) {
        b->last_state[db] = 1;
        rc = 0;
    } else if (rc == 0) {
        size_t n = k.mv_size < 12 ? k.mv_size : 12;
        memset(b->last[db], 0, 12);
        memcpy(b->last[db], k.mv_data, n);
        b->last_state[db] = 2;
    }
    mdb_cursor_close(c);
    return rc;
}

/* One put in the current transaction. Returns an LMDB code. */
static int apply(kd_store_batch *b, int db, unsigned flags, const void *key, size_t klen, const void *val,
                 size_t vlen, int *added)
{
    MDB_dbi dbi = db == META_SEL ? b->s->meta : b->s->dbi[db];
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    unsigned mf = (flags & KD_PUT_REPLACE) ? 0 : MDB_NOOVERWRITE;
    int rc, append = 0;
    if (db != META_SEL) {
        if (b->last_state[db] == 0 && (rc = learn_last(b, db)) != 0)
            return rc;
        append = b->last_state[db] == 1 || memcmp(key, b->last[db], klen) > 0;
        if (append)
            mf |= MDB_APPEND; /* keys arrive in order on imports: skip the tree search */
    }
    rc = mdb_put(b->txn, dbi, &k, &v, mf);
    if (rc == MDB_KEYEXIST) {
        *added = 0;
        return 0;
    }
    if (rc == 0) {
        *added = 1;
        if (append) {
            memcpy(b->last[db], key, klen);
            b->last_state[db] = 2;
        }
    }
    return rc;
}

/* Abort the transaction, grow the map to twice its size, begin again and
 * replay the log. *last_added gets the result of the log's last entry. */
static int grow_and_replay(kd_store_batch *b, int *last_added)
{
    kd_store *s = b->s;
    for (;;) {
        uint64_t old = kd_store_map_size(s);
        if (b->txn)
            mdb_txn_abort(b->txn);
        b->txn = b->view.txn = NULL;
        if (b->entered) {
            txn_leave(s);
            b->entered = 0;
        }
        int rc = map_resize(s, (size_t)(old * 2));
        char nb[32];
        if (rc)
            return mdb_fail(s, rc, "cannot grow the map");
        kd_debug("dataset '%s': map grown to %s", s->path, kd_fmt_bytes(nb, sizeof nb, (double)old * 2));
        if ((rc = begin_txn(s, 0, &b->txn)) != 0)
            return mdb_fail(s, rc, "cannot begin a write transaction");
        b->entered = 1;
        b->view.txn = b->txn;
        memset(b->last_state, 0, sizeof b->last_state);
        size_t off = 0;
        while (rc == 0 && off < b->log_len) {
            const unsigned char *e = b->log + off;
            uint16_t klen = get_u16(e + 2);
            uint64_t vlen = get_u64(e + 8);
            rc = apply(b, e[0], e[1], e + 16, klen, e + 16 + klen, (size_t)vlen, last_added);
            off += (16 + klen + (size_t)vlen + 7) & ~(size_t)7;
        }
        if (rc == MDB_MAP_FULL)
            continue;
        return rc ? mdb_fail(s, rc, "cannot replay the batch") : KD_OK;
    }
}

static int log_put(kd_store_batch *b, int db, unsigned flags, const void *key, size_t klen, const void *val,
                   size_t vlen, int *added)
{
    int a = 0;
    if (b->failed)
        return kd_err(KD_E_USAGE, "dataset '%s': this batch failed earlier; abort it", b->s->path);
    size_t n = (16 + klen + vlen + 7) & ~(size_t)7;
    int st = reserve(&b->log, &b->log_cap, b->log_len + n);
    if (st) {
        b->failed = 1;
        return st;
    }
    unsigned char *e = b->log + b->log_len;
    memset(e, 0, n);
    e[0] = (unsigned char)db;
    e[1] = (unsigned char)flags;
    put_u16(e + 2, (uint16_t)klen);
    put_u64(e + 8, vlen);
    memcpy(e + 16, key, klen);
    if (vlen)
        memcpy(e + 16 + klen, val, vlen);
    b->log_len += n;
    b->bytes += klen + vlen;
    int rc = apply(b, db, flags, key, klen, val, vlen, &a);
    if (rc == MDB_MAP_FULL)
        st = grow_and_replay(b, &a);
    else if (rc)
        st = mdb_fail(b->s, rc, "cannot write");
    if (st) {
        b->failed = 1;
        return st;
    }
    if (added)
        *added = a;
    return KD_OK;
}

int kd_store_put_raw(kd_store_batch *b, kd_db db, uint64_t id, uint32_t sample, const void *val, size_t vlen,
                     unsigned flags, int *added)
{
    assert((unsigned)db < KD_DB_COUNT);
    unsigned char kb[12];
    size_t kl = make_key(db, id, sample, kb);
    return log_put(b, db, flags, kb, kl, val, vlen, added);
}

int kd_store_put(kd_store_batch *b, const kd_record *rec, unsigned flags, int *added)
{
    const void *val;
    size_t vlen;
    int st = kd_record_encode(b->enc, rec, &val, &vlen);
    if (st) {
        char name[64];
        rec_name(name, sizeof name, rec->db, rec->id, rec->sample);
        return kd_err_wrap(st, "dataset '%s': %s", b->s->path, name);
    }
    return kd_store_put_raw(b, rec->db, rec->id, rec->sample, val, vlen, flags, added);
}

int kd_store_meta_put(kd_store_batch *b, const char *key, const json_t *value)
{
    size_t kl = strlen(key);
    if (kl == 0 || kl > 400)
        return kd_err(KD_E_RANGE, "dataset '%s': meta key of %zu bytes (1 to 400 allowed)", b->s->path, kl);
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return kd_err(KD_E_NOMEM, "meta '%s'", key);
    int st = log_put(b, META_SEL, KD_PUT_REPLACE, key, kl, text, strlen(text), NULL);
    free(text);
    return st;
}

/* entry without its "id": a new reference */
static json_t *without_id(const json_t *e)
{
    json_t *c = json_copy((json_t *)e);
    if (c)
        json_object_del(c, "id");
    return c;
}

int kd_store_lineage_add_json(kd_store_batch *b, const json_t *entry, int dedupe, uint32_t *id)
{
    json_t *all;
    if (!json_is_object(entry) || !json_is_string(json_object_get(entry, "source")))
        return kd_err(KD_E_USAGE, "dataset '%s': a lineage entry needs a \"source\" string", b->s->path);
    KD_TRY(kd_store_meta_list(&b->view, "lineage/", &all));
    uint32_t max = 0, found = 0;
    json_t *mine = without_id(entry), *v;
    const char *key;
    json_object_foreach(all, key, v)
    {
        unsigned long n = strtoul(key + strlen("lineage/"), NULL, 10);
        if (n > max && n < UINT32_MAX)
            max = (uint32_t)n;
        if (dedupe && !found) {
            json_t *theirs = without_id(v);
            if (json_equal(mine, theirs))
                found = (uint32_t)n;
            json_decref(theirs);
        }
    }
    json_decref(all);
    if (found) {
        json_decref(mine);
        *id = found;
        return KD_OK;
    }
    /* "id" first, then the entry's keys in order */
    json_t *e = json_object();
    json_object_set_new(e, "id", json_integer(max + 1));
    json_object_update(e, mine);
    json_decref(mine);
    char k[32];
    snprintf(k, sizeof k, "lineage/%08u", max + 1);
    int st = kd_store_meta_put(b, k, e);
    json_decref(e);
    if (st == KD_OK)
        *id = max + 1;
    return st;
}

int kd_store_lineage_add(kd_store_batch *b, const kd_lineage *l, const json_t *extra, uint32_t *id)
{
    char tb[32];
    uint64_t now = kd_time_ms();
    json_t *e = json_object();
    json_object_set_new(e, "kind", l->kind ? json_string(l->kind) : json_null());
    json_object_set_new(e, "source", json_string(l->source ? l->source : ""));
    json_object_set_new(e, "teacher", l->teacher ? json_string(l->teacher) : json_null());
    json_object_set_new(e, "config_hash", l->config_hash ? json_string(l->config_hash) : json_null());
    json_object_set_new(e, "seed", l->seed >= 0 ? json_integer(l->seed) : json_null());
    json_object_set_new(e, "created", json_string(kd_fmt_time_ms(tb, sizeof tb, now)));
    json_object_set_new(e, "created_ms", json_integer((json_int_t)now));
    if (extra)
        json_object_update(e, (json_t *)extra);
    int st = kd_store_lineage_add_json(b, e, 0, id);
    json_decref(e);
    return st;
}

static void batch_free(kd_store_batch *b)
{
    kd_record_encoder_free(b->enc);
    kd_record_scratch_release(&b->view.scratch);
    free(b->log);
    free(b);
}

int kd_store_batch_commit(kd_store_batch *b)
{
    kd_store *s = b->s;
    int st = KD_OK, rc;
    if (b->failed) {
        kd_store_batch_abort(b);
        return kd_err(KD_E_USAGE, "dataset '%s': cannot commit a batch that failed", s->path);
    }
    for (;;) {
        rc = mdb_txn_commit(b->txn); /* frees the transaction, committed or not */
        b->txn = b->view.txn = NULL;
        if (rc != MDB_MAP_FULL)
            break;
        int dummy;
        if ((st = grow_and_replay(b, &dummy)) != KD_OK)
            break;
    }
    if (b->txn)
        mdb_txn_abort(b->txn);
    if (b->entered)
        txn_leave(s);
    if (st == KD_OK && rc)
        st = mdb_fail(s, rc, "cannot commit; nothing of this batch was stored");
    batch_free(b);
    if (st == KD_OK) {
        s->dirty = 1;
        if (kd_now() - s->manifest_at >= KD_STORE_MANIFEST_SECONDS)
            kd_store_write_manifest(s); /* a mirror: failures are warned about, not fatal */
    }
    return st;
}

void kd_store_batch_abort(kd_store_batch *b)
{
    if (!b)
        return;
    if (b->txn)
        mdb_txn_abort(b->txn);
    if (b->entered)
        txn_leave(b->s);
    batch_free(b);
}

int kd_store_prompt_ids(kd_store *s, int64_t limit, uint64_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    kd_store_read *r = NULL;
    kd_store_cursor *cur = NULL;
    KD_TRY(kd_store_read_begin(s, &r));
    int rc = kd_store_cursor_open(r, KD_DB_PROMPTS, &cur);
    size_t cap = 0;
    int got = 0;
    kd_record rec;
    while (rc == KD_OK && (!limit || (int64_t)*n < limit) && (got = kd_store_cursor_next(cur, &rec)) == 1) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 1024;
            uint64_t *nw = realloc(*ids, cap * sizeof *nw);
            if (!nw) {
                rc = kd_err(KD_E_NOMEM, "prompt ids");
                break;
            }
            *ids = nw;
        }
        (*ids)[(*n)++] = rec.id;
    }
    if (rc == KD_OK && got < 0)
        rc = got;
    kd_store_cursor_close(cur);
    kd_store_read_end(r);
    if (rc == KD_OK && !*n)
        rc = kd_err(KD_E_NOTFOUND, "'%s' holds no prompts", s->path);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}
