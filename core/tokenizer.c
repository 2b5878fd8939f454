/* tokenizer.c - byte-level BPE, exactly as HuggingFace `tokenizers` runs it.
 *
 * The file reads top to bottom in the order of the pipeline:
 *   1. small tools: growable arrays, hashing, UTF-8, the byte-level alphabet,
 *      two open-addressing tables (string -> id, 64-bit key -> two ints);
 *   2. the tokenizer struct and its scratch contexts;
 *   3. loading tokenizer.json and tokenizer_config.json;
 *   4. encoding: added tokens -> normalizer -> pre-tokenizer -> BPE model,
 *      with the pre-token cache;
 *   5. batch encoding on threads;
 *   6. decoding, whole and streaming;
 *   7. accessors.
 * Each step names the Rust source of `tokenizers` (0.23) it mirrors, so the two
 * can be read side by side: tokenizer/added_vocabulary.rs, tokenizer/normalizer.rs
 * (split behaviors), pre_tokenizers/{split,byte_level}.rs, models/bpe/{model,word}.rs,
 * tokenizer/mod.rs (decode).
 *
 * Letters used in comments: V the vocabulary size (max id + 1), n bytes of text.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <jansson.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "log.h"
#include "status.h"
#include "unicode.h"
#include "util.h"

/* ======================================================================== */
/* 1. Small tools                                                           */
/* ======================================================================== */

/* Grow the array *pp (elements of `el` bytes, capacity *cap) to hold `need`.
 * The pointer is passed as void * and copied with memcpy to stay clear of
 * strict-aliasing trouble. */
static int grow_(void *pp, size_t *cap, size_t need, size_t el)
{
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 4 / el)
            return kd_err(KD_E_NOMEM, "an array of %zu elements is too large", need);
        nc *= 2;
    }
    void *p;
    memcpy(&p, pp, sizeof p);
    void *q = realloc(p, nc * el);
    if (!q)
        return kd_err(KD_E_NOMEM, "cannot allocate %zu bytes", nc * el);
    memcpy(pp, &q, sizeof q);
    *cap = nc;
    return KD_OK;
}
#define GROW(ptr, cap, need) ((need) <= (cap) ? KD_OK : grow_((void *)&(ptr), &(cap), (need), sizeof *(ptr)))

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static int sbuf_put(sbuf *b, const void *data, size_t n)
{
    KD_TRY(GROW(b->p, b->cap, b->n + n + 1));
    if (n)
        memcpy(b->p + b->n, data, n);
    b->n += n;
    return KD_OK;
}

void kd_ids_init(kd_ids *v) { v->ids = NULL, v->n = v->cap = 0; }

void kd_ids_release(kd_ids *v)
{
    if (!v)
        return;
    free(v->ids);
    kd_ids_init(v);
}

int kd_ids_push(kd_ids *v, int32_t id)
{
    if (v->n == v->cap)
        KD_TRY(GROW(v->ids, v->cap, v->n + 1));
    v->ids[v->n++] = id;
    return KD_OK;
}

static int ids_append(kd_ids *v, const int32_t *ids, size_t n)
{
    if (n == 0)
        return KD_OK;
    KD_TRY(GROW(v->ids, v->cap, v->n + n));
    memcpy(v->ids + v->n, ids, n * sizeof *ids);
    v->n += n;
    return KD_OK;
}

/* A 64-bit hash of a byte string: word-at-a-time multiply/xorshift mixing
 * (the constants are splitmix64's). Good enough for open addressing, and fast
 * on the short strings that tokens are. */
static inline uint64_t hash_bytes(const void *data, size_t n)
{
    const unsigned char *s = data;
    uint64_t h = 0x243F6A8885A308D3ull ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        memcpy(&v, s, n);
        h = (h ^ v) * 0x94D049BB133111EBull;
        h ^= h >> 32;
    }
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
}

static inline uint64_t hash_u64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    k *= 0xC4CEB9FE1A85EC53ull;
    return k ^ (k >> 33);
}

/* --- UTF-8 ---------------------------------------------------------------- */

/* Classify the bytes at p[0..n), n >= 1. Returns the length (1..4) of the
 * valid UTF-8 sequence there, or 0 when there is none; then *bad is the length
 * of the maximal invalid subpart (Unicode's "maximal subpart" rule, which
 * Rust's from_utf8_lossy follows: one U+FFFD per subpart), and *incomplete is
 * 1 when p[0..n) is a valid but unfinished prefix of a sequence. Overlong
 * forms, surrogates and values above U+10FFFF are invalid. */
static int utf8_seq(const unsigned char *p, size_t n, size_t *bad, int *incomplete)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED)
        need = 2, hi = 0x9F;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else {
        *bad = 1, *incomplete = 0;
        return 0;
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) {
            *bad = (size_t)i, *incomplete = 1;
            return 0;
        }
        unsigned b = p[i];
        if (b < lo || b > hi) {
            *bad = (size_t)i, *incomplete = 0;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

/* The offset of the first byte of s[0..n) that does not start a valid UTF-8
 * sequence, or n when all is valid; *trunc is set when that sequence is cut
 * short by the end of the text. */
static size_t utf8_check(const char *s, size_t n, int *trunc)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    *trunc = 0;
    while (i < n) {
        if (i + 8 <= n) { /* skip ASCII a word at a time */
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad;
        int k = utf8_seq(p + i, n - i, &bad, trunc);
        if (k == 0)
            return i;
        i += (size_t)k;
    }
    return n;
}

/* KD_OK if s[0..n) is valid UTF-8, else KD_E_UTF8 naming the first bad offset. */
static int utf8_validate(const char *s, size_t n)
{
    int trunc;
    size_t i = utf8_check(s, n, &trunc);
    if (i == n)
        return KD_OK;
    if (trunc)
        return kd_err(KD_E_UTF8, "truncated UTF-8 sequence at byte offset %zu (the text ends inside it)", i);
    return kd_err(KD_E_UTF8, "invalid UTF-8 at byte offset %zu (byte 0x%02x)", i, (unsigned char)s[i]);
}

/* Length of the UTF-8 sequence starting with lead byte c (valid text only). */
static inline size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Decode one code point from valid UTF-8. */
static inline int32_t utf8_cp(const unsigned char *p, size_t *len)
{
    unsigned c = p[0];
    if (c < 0x80)
        return *len = 1, (int32_t)c;
    if (c < 0xE0)
        return *len = 2, (int32_t)(((c & 0x1F) << 6) | (p[1] & 0x3F));
    if (c < 0xF0)
        return *len = 3, (int32_t)(((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F));
    return *len = 4, (int32_t)(((c & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F));
}

/* Append p[0..n) to out with each maximal invalid subpart replaced by U+FFFD,
 * as String::from_utf8_lossy does. When !final, an unfinished sequence at the
 * very end is left unconsumed (it may be completed by later bytes).
 * *used gets the number of bytes consumed. */
static int utf8_lossy(sbuf *out, const unsigned char *p, size_t n, int final, size_t *used)
{
    size_t i = 0, run = 0; /* run: start of pending valid bytes */
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad;
        int inc;
        int k = utf8_seq(p + i, n - i, &bad, &inc);
        if (k) {
            i += (size_t)k;
            continue;
        }
        KD_TRY(sbuf_put(out, p + run, i - run));
        if (inc && !final) {
            *used = i;
            return KD_OK;
        }
        KD_TRY(sbuf_put(out, "\xEF\xBF\xBD", 3));
        i += bad;
        run = i;
    }
    KD_TRY(sbuf_put(out, p + run, n - run));
    *used = n;
    return KD_OK;
}

/* White_Space (PropList.txt): what Oniguruma's \s and Rust regex's \s match. */
static int is_white_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Rust regex's Unicode \w: Alphabetic, marks, decimal digits, connector
 * punctuation, join controls. Approximated with general categories (letters
 * and letter numbers stand for Alphabetic). Used only for single_word. */
static int is_word_char(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return c == 0x200C || c == 0x200D;
    }
}

/* --- the byte-level alphabet (pre_tokenizers/byte_level.rs: bytes_char) --- */
/* GPT-2 maps every byte to a printable character: '!'..'~', U+00A1..U+00AC
 * and U+00AE..U+00FF map to themselves, the other 68 bytes to U+0100.. in
 * order. All of them are below U+0200 and encode as 1 or 2 UTF-8 bytes. */
static unsigned char bl_len[256];
static char bl_utf8[256][2];
static int16_t bl_byte[512]; /* code point -> byte, -1 if not in the alphabet */
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void)
{
    int n = 0;
    for (int c = 0; c < 512; c++)
        bl_byte[c] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = keep ? b : 256 + n++;
        bl_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            bl_len[b] = 1;
            bl_utf8[b][0] = (char)cp;
        } else {
            bl_len[b] = 2;
            bl_utf8[b][0] = (char)(0xC0 | (cp >> 6));
            bl_utf8[b][1] = (char)(0x80 | (cp & 0x3F));
        }
    }
}

/* --- string -> id table ---------------------------------------------------- */
/* Open addressing, linear probing. A slot holds the key's hash and the value;
 * the key bytes live elsewhere and are found through key[val] / klen[val], so
 * the table itself is 8 bytes a slot. Values are >= 0; -1 marks an empty slot. */
typedef struct {
    uint32_t hash;
    int32_t val;
} sslot;

typedef struct {
    sslot *s;
    size_t mask;
    const char *const *key; /* key[val], klen[val]: the key of value val */
    const uint32_t *klen;
} strmap;

static int strmap_init(strmap *m, size_t n, const char *const *key, const uint32_t *klen)
{
    size_t cap = 16;
    while (cap < n + n / 2 + 1)
        cap <<= 1;
    m->s = malloc(cap * sizeof *m->s);
    if (!m->s)
        return kd_err(KD_E_NOMEM, "cannot allocate a table of %zu slots", cap);
    for (size_t i = 0; i < cap; i++)
        m->s[i].val = -1;
    m->mask = cap - 1;
    m->key = key;
    m->klen = klen;
    return KD_OK;
}

static inline int32_t strmap_get_h(const strmap *m, const char *k, size_t n, uint64_t h)
{
    if (!m->s)
        return -1;
    uint32_t h32 = (uint32_t)(h >> 32);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const sslot *s = &m->s[i];
        if (s->val < 0)
            return -1;
        if (s->hash == h32 && m->klen[s->val] == n && memcmp(m->key[s->val], k, n) == 0)
            return s->val;
    }
}

static inline int32_t strmap_get(const strmap *m, const char *k, size_t n)
{
    return strmap_get_h(m, k, n, hash_bytes(k, n));
}

/* Insert value val (its key is key[val]) unless the key is present; returns
 * the value now stored for the key. The table must have a free slot. */
static int32_t strmap_put(strmap *m, int32_t val)
{
    const char *k = m->key[val];
    size_t n = m->klen[val];
    uint64_t h = hash_bytes(k, n);
    uint32_t h32 = (uint32_t)(h >> 32);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        sslot *s = &m->s[i];
        if (s->val < 0) {
            s->hash = h32, s->val = val;
            return val;
        }
        if (s->hash == h32 && m->klen[s->val] == n && memcmp(m->key[s->val], k, n) == 0)
            return s->val;
    }
}

/* --- 64-bit key -> (a, b) table ------------------------------------------ */
/* Merges: key (left id << 32 | right id) -> (rank, merged id).
 * Trie edges: key (node << 8 | byte) -> (child, unused). Fixed capacity. */
#define PAIR_EMPTY UINT64_MAX

typedef struct {
    uint64_t key;
    int32_t a, b;
} pslot;

typedef struct {
    pslot *s;
    size_t mask;
} pairmap;

static int pairmap_init(pairmap *m, size_t n)
{
    size_t cap = 16;
    while (cap < n + n / 2 + 1)
        cap <<= 1;
    m->s = malloc(cap * sizeof *m->s);
    if (!m->s)
        return kd_err(KD_E_NOMEM, "cannot allocate a table of %zu slots", cap);
    for (size_t i = 0; i < cap; i++)
        m->s[i].key = PAIR_EMPTY;
    m->mask = cap - 1;
    return KD_OK;
}

static inline const pslot *pairmap_get(const pairmap *m, uint64_t key)
{
    if (!m->s)
        return NULL;
    for (size_t i = hash_u64(key) & m->mask;; i = (i + 1) & m->mask) {
        const pslot *s = &m->s[i];
        if (s->key == key)
            return s;
        if (s->key == PAIR_EMPTY)
            return NULL;
    }
}

/* Insert or overwrite (a later merge of the same pair wins, as when HF
 * collects the merges into its HashMap). */
static void pairmap_put(pairmap *m, uint64_t key, int32_t a, int32_t b)
{
    for (size_t i = hash_u64(key) & m->mask;; i = (i + 1) & m->mask) {
        pslot *s = &m->s[i];
        if (s->key == key || s->key == PAIR_EMPTY) {
            s->key = key, s->a = a, s->b = b;
            return;
        }
    }
}

/* ======================================================================== */
/* 2. The tokenizer                                                         */
/* ======================================================================== */

enum { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD };
enum { PT_SPLIT, PT_BYTELEVEL };
enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };

typedef struct {
    int kind;                 /* PT_SPLIT or PT_BYTELEVEL */
    pcre2_code *re;           /* Split: its pattern; ByteLevel: the GPT-2 regex if use_regex, else NULL */
    int behavior, invert;     /* Split */
    int add_prefix_space;     /* ByteLevel */
} pt_step;

typedef struct {
    char *content;            /* as in tokenizer.json */
    char *norm;               /* content after the normalizer (== content when unchanged or not normalized) */
    uint32_t len, norm_len;
    int32_t id;               /* as HF assigns it */
    unsigned char special, lstrip, rstrip, single_word, normalized;
} added_tok;

/* A byte trie of added-token patterns, for leftmost-longest matching. */
typedef struct {
    pairmap edges;            /* (node << 8 | byte) -> child */
    int32_t *term;            /* (nodes) id of the token ending here, or -1 */
    size_t nodes;
    uint8_t first[32];        /* bitset of the bytes a pattern can start with */
} trie;

/* The pre-token cache: pre-token bytes (after the byte-level mapping) -> ids.
 * Direct-mapped and bounded: a new entry replaces whatever its slot held.
 * Slots are guarded by striped mutexes, so threads share it. Only pre-tokens
 * of at most CACHE_KEY bytes giving at most CACHE_IDS ids are kept; longer
 * ones are rare and cheap to recompute relative to their length. */
#define CACHE_SLOTS 32768 /* x 96 bytes = 3 MiB a tokenizer */
#define CACHE_LOCKS 256
#define CACHE_KEY 46
#define CACHE_IDS 11

typedef struct {
    uint32_t hash; /* 0: empty */
    uint8_t klen, nids;
    char key[CACHE_KEY];
    int32_t ids[CACHE_IDS];
} cslot;

typedef struct {
    pthread_mutex_t mu[CACHE_LOCKS];
    cslot slot[CACHE_SLOTS];
} bpe_cache;

/* Per-call scratch: regex match data, buffers, BPE symbols. Kept in a pool on
 * the tokenizer so that steady-state encoding allocates nothing. */
typedef struct {
    size_t off, len;
} span;

typedef struct {
    size_t off, len;
    int32_t id; /* an added token's id, or -1 for text */
} seg;

typedef struct {
    size_t off, len;
    int is_match;
} mspan;

typedef struct {
    int32_t c, prev, next;
    uint32_t len; /* 0 once merged into its left neighbour */
} sym;

typedef struct {
    uint32_t rank, pos;
    int32_t id;
} hent;

/* A stretch of normalized text and where it came from (norm_align): bytes
 * [norm, next group's norm) of the normalized text are the normalization of
 * bytes [orig, next group's orig) of the original; `same` when those bytes are
 * unchanged, so that offsets inside map one to one. */
typedef struct {
    size_t norm, orig;
    int same;
} nalign;

/* Token offsets relative to some base while a text is encoded. */
typedef struct {
    size_t *p;
    size_t n, cap;
} offv;

typedef struct enc_ctx {
    struct enc_ctx *next;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    sbuf norm[2], buf[2], key;
    span *sp[2];
    size_t sp_cap[2];
    mspan *mt;
    size_t mt_cap;
    seg *sraw, *snorm;
    size_t sraw_cap, snorm_cap;
    sym *sy;
    size_t sy_cap;
    hent *hp;
    size_t hp_cap;
    int32_t *wid;
    size_t wid_cap;
    /* token offsets (kd_tok_encode_offsets only) */
    size_t *bmap[2];     /* per byte of buf[i]: its offset in the text given to pretokenize */
    size_t bmap_cap[2];
    sbuf anorm[2], agrp, achunk; /* normalizer scratch for norm_align */
    nalign *al;          /* the groups norm_align found */
    size_t al_cap;
} enc_ctx;

/* What changes while a tokenizer is used (its cache and scratch pool),
 * apart from the read-only tables, so that the API can take const pointers. */
typedef struct {
    pthread_mutex_t pool_mu;
    enc_ctx *pool;
    bpe_cache cache;
} tok_rt;

struct kd_tokenizer {
    char *file; /* tokenizer.json, for messages */

    int *norm; /* normalizer steps, flattened */
    int nnorm;
    pt_step *pt; /* pre-tokenizer steps, flattened */
    int npt;

    /* the BPE model */
    int32_t vm;              /* 1 + largest model id */
    size_t nvocab;           /* entries in model.vocab */
    char *mblob;             /* all model token strings, NUL-terminated */
    const char **mstr;       /* (vm) token string of id, NULL if none */
    uint32_t *mlen;          /* (vm) */
    strmap vocab;            /* string -> model id */
    pairmap merges;          /* (left, right) -> (rank, merged id) */
    int ignore_merges, byte_fallback, fuse_unk;
    int has_unk;             /* unk_token set */
    int32_t unk_id;          /* its id, -1 if it is not in the vocabulary */
    char *unk_token;
    char *cont_prefix, *eow_suffix; /* NULL when unset */
    size_t cont_len, eow_len;
    int32_t char_id[512];    /* id of the one-character token U+0000..U+01FF, -1 if none */
    int32_t fallback_id[256];/* id of "<0xHH>", -1 if none */

    /* added tokens (tokenizer/added_vocabulary.rs) */
    added_tok *added;
    size_t nadded;
    const char **acontent;   /* (nadded) added[i].content, keys of amap */
    uint32_t *alen;
    strmap amap;             /* content -> index into added */
    int32_t *added_of;       /* (V) index into added of the token with this id, -1 */
    trie raw_trie, norm_trie;/* non-normalized / normalized patterns */

    int32_t V;               /* 1 + largest id of any token */

    /* decoding: the bytes the decoder gives each id */
    int dec_bytelevel;       /* ByteLevel decoder; else tokens joined with spaces */
    char *dblob;
    size_t *doff;            /* (V) */
    uint32_t *dlen;          /* (V) */
    uint8_t *dflag;          /* (V) DF_* */

    /* special tokens around a text (add_special) */
    int32_t *pre_ids, *post_ids;
    size_t npre, npost;
    char *bos, *eos, *pad, *chat_template;
    int32_t bos_id, eos_id, pad_id;

    tok_rt *rt;
};

enum { DF_EXISTS = 1, DF_SPECIAL = 2 };

static void ctx_free(enc_ctx *c)
{
    if (!c)
        return;
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mc);
    pcre2_jit_stack_free(c->js);
    for (int i = 0; i < 2; i++) {
        free(c->norm[i].p);
        free(c->buf[i].p);
        free(c->sp[i]);
    }
    free(c->key.p);
    free(c->mt);
    free(c->sraw);
    free(c->snorm);
    free(c->sy);
    free(c->hp);
    free(c->wid);
    for (int i = 0; i < 2; i++) {
        free(c->bmap[i]);
        free(c->anorm[i].p);
    }
    free(c->agrp.p);
    free(c->achunk.p);
    free(c->al);
    free(c);
}

/* A scratch context from the pool, or a new one. Give it back with ctx_put. */
static int ctx_get(const kd_tokenizer *t, enc_ctx **out)
{
    pthread_mutex_lock(&t->rt->pool_mu);
    enc_ctx *c = t->rt->pool;
    if (c)
        t->rt->pool = c->next;
    pthread_mutex_unlock(&t->rt->pool_mu);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return kd_err(KD_E_NOMEM, "cannot allocate a tokenizer context");
        c->md = pcre2_match_data_create(16, NULL);
        c->mc = pcre2_match_context_create(NULL);
        /* 32 KiB .. 8 MiB: the JIT's default 32 KiB machine stack is too small
         * for lookahead over long whitespace runs. */
        c->js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
        if (!c->md || !c->mc || !c->js) {
            ctx_free(c);
            return kd_err(KD_E_NOMEM, "cannot allocate regex match data");
        }
        pcre2_jit_stack_assign(c->mc, NULL, c->js);
    }
    *out = c;
    return KD_OK;
}

static void ctx_put(const kd_tokenizer *t, enc_ctx *c)
{
    pthread_mutex_lock(&t->rt->pool_mu);
    c->next = t->rt->pool;
    t->rt->pool = c;
    pthread_mutex_unlock(&t->rt->pool_mu);
}

static void trie_free(trie *tr)
{
    free(tr->edges.s);
    free(tr->term);
}

void kd_tok_free(kd_tokenizer *t)
{
    if (!t)
        return;
    free(t->file);
    free(t->norm);
    for (int i = 0; i < t->npt; i++)
        pcre2_code_free(t->pt[i].re);
    free(t->pt);
    free(t->mblob);
    free(t->mstr);
    free(t->mlen);
    free(t->vocab.s);
    free(t->merges.s);
    free(t->unk_token);
    free(t->cont_prefix);
    free(t->eow_suffix);
    for (size_t i = 0; i < t->nadded; i++) {
        if (t->added[i].norm != t->added[i].content)
            free(t->added[i].norm);
        free(t->added[i].content);
    }
    free(t->added);
    free(t->acontent);
    free(t->alen);
    free(t->amap.s);
    free(t->added_of);
    trie_free(&t->raw_trie);
    trie_free(&t->norm_trie);
    free(t->dblob);
    free(t->doff);
    free(t->dlen);
    free(t->dflag);
    free(t->pre_ids);
    free(t->post_ids);
    free(t->bos);
    free(t->eos);
    free(t->pad);
    free(t->chat_template);
    if (t->rt) {
        while (t->rt->pool) {
            enc_ctx *c = t->rt->pool;
            t->rt->pool = c->next;
            ctx_free(c);
        }
        pthread_mutex_destroy(&t->rt->pool_mu);
        for (int i = 0; i < CACHE_LOCKS; i++)
            pthread_mutex_destroy(&t->rt->cache.mu[i]);
        free(t->rt);
    }
    free(t);
}

/* ======================================================================== */
/* 3. Loading                                                               */
/* ======================================================================== */

#define MAX_TOKEN_ID (1 << 24)

static char *xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* The string field `key` of object o: NULL when absent or null; a type error otherwise. */
static int get_str(const char *file, const char *where, json_t *o, const char *key, const char **out, size_t *len)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (len)
        *len = 0;
    if (!v || json_is_null(v))
        return KD_OK;
    if (!json_is_string(v))
        return kd_err(KD_E_FORMAT, "'%s': %s.%s: expected a string", file, where, key);
    *out = json_string_value(v);
    if (len)
        *len = json_string_length(v);
    return KD_OK;
}

/* The boolean field `key`: `def` when absent or null. */
static int get_bool(const char *file, const char *where, json_t *o, const char *key, int def, int *out)
{
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v))
        return KD_OK;
    if (!json_is_boolean(v))
        return kd_err(KD_E_FORMAT, "'%s': %s.%s: expected true or false", file, where, key);
    *out = json_is_true(v);
    return KD_OK;
}

/* The "type" of a component object, or NULL. */
static const char *type_of(json_t *o)
{
    json_t *v = json_object_get(o, "type");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* --- normalizer ----------------------------------------------------------- */

static int load_normalizer(kd_tokenizer *t, json_t *n, const char *where)
{
    if (!n || json_is_null(n))
        return KD_OK;
    if (!json_is_object(n))
        return kd_err(KD_E_FORMAT, "'%s': %s: expected an object or null", t->file, where);
    const char *type = type_of(n);
    if (!type)
        return kd_err(KD_E_FORMAT, "'%s': %s: no \"type\"", t->file, where);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(n, "normalizers");
        if (!json_is_array(arr))
            return kd_err(KD_E_FORMAT, "'%s': %s.normalizers: expected an array", t->file, where);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
            KD_TRY(load_normalizer(t, json_array_get(arr, i), sub));
        }
        return KD_OK;
    }
    int kind;
    if (!strcmp(type, "NFC"))
        kind = NORM_NFC;
    else if (!strcmp(type, "NFD"))
        kind = NORM_NFD;
    else if (!strcmp(type, "NFKC"))
        kind = NORM_NFKC;
    else if (!strcmp(type, "NFKD"))
        kind = NORM_NFKD;
    else
        return kd_err(KD_E_UNSUPPORTED, "'%s': %s: normalizer type '%s' is not supported (NFC, NFD, NFKC, NFKD and "
                      "Sequence are)", t->file, where, type);
    int *p = realloc(t->norm, (size_t)(t->nnorm + 1) * sizeof *p);
    if (!p)
        return kd_err(KD_E_NOMEM, "cannot allocate normalizer steps");
    t->norm = p;
    t->norm[t->nnorm++] = kind;
    return KD_OK;
}

/* Apply the normalizer to s[0..n). *out points either at s (unchanged) or
 * into one of the two scratch buffers; valid until their next use. */
static int normalize(const kd_tokenizer *t, sbuf nb[2], const char *s, size_t n, const char **out, size_t *outn)
{
    *out = s, *outn = n;
    int which = 0;
    for (int i = 0; i < t->nnorm; i++) {
        int kind = t->norm[i];
        /* Quick checks. Text below U+0300 (no byte >= 0xCC) has no combining
         * marks and nothing that decomposes canonically: NFC and NFD leave it
         * alone. ASCII is unchanged by all four forms. */
        size_t j = 0;
        unsigned char lim = (kind == NORM_NFC) ? 0xCC : 0x80;
        const unsigned char *p = (const unsigned char *)*out;
        while (j < *outn && p[j] < lim)
            j++;
        if (j == *outn)
            continue;
        utf8proc_option_t opt = UTF8PROC_STABLE;
        opt |= (kind == NORM_NFC || kind == NORM_NFKC) ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
        if (kind == NORM_NFKC || kind == NORM_NFKD)
            opt |= UTF8PROC_COMPAT;
        utf8proc_uint8_t *r = NULL;
        utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)*out, (utf8proc_ssize_t)*outn, &r, opt);
        if (rl < 0)
            return kd_err(rl == UTF8PROC_ERROR_NOMEM ? KD_E_NOMEM : KD_E_INTERNAL, "normalizer: %s",
                          utf8proc_errmsg(rl));
        sbuf *b = &nb[which];
        which ^= 1;
        b->n = 0;
        int st = sbuf_put(b, r, (size_t)rl);
        free(r);
        KD_TRY(st);
        *out = b->p, *outn = b->n;
    }
    return KD_OK;
}

/* --- regexes --------------------------------------------------------------- */

/* HF compiles Split patterns with Oniguruma (the `onig` crate, Ruby syntax).
 * PCRE2 reads the same syntax except for a few escapes, which we rewrite:
 *   \s  Oniguruma: Unicode White_Space. PCRE2 with UCP also matches U+180E.
 *   \S  its complement (outside a class; inside one PCRE2's \S is kept).
 *   \h  Oniguruma: a hex digit. PCRE2: horizontal space. (\H likewise.)
 * Everything else (\p{..}, (?i:..), lookahead, {m,n}) is copied verbatim; then
 * kd_regex_unicode_rewrite (unicode.h) widens each \p{..} from PCRE2's Unicode
 * tables to Oniguruma's (Unicode 16.0). */
#define WS_BODY "\\t-\\r\\x20\\x85\\xA0\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define HEX_BODY "0-9a-fA-F"

static int translate_regex(const char *src, size_t n, sbuf *out)
{
    int depth = 0; /* character class nesting */
    for (size_t i = 0; i < n; i++) {
        char ch = src[i];
        if (ch == '\\' && i + 1 < n) {
            char e = src[++i];
            const char *rep = NULL;
            if (e == 's')
                rep = depth ? WS_BODY : "[" WS_BODY "]";
            else if (e == 'S' && !depth)
                rep = "[^" WS_BODY "]";
            else if (e == 'h')
                rep = depth ? HEX_BODY : "[" HEX_BODY "]";
            else if (e == 'H' && !depth)
                rep = "[^" HEX_BODY "]";
            if (rep)
                KD_TRY(sbuf_put(out, rep, strlen(rep)));
            else
                KD_TRY(sbuf_put(out, src + i - 1, 2));
            continue;
        }
        if (ch == '[') {
            if (depth && i + 1 < n && src[i + 1] == ':') { /* [:alpha:] inside a class */
                const char *end = strstr(src + i, ":]");
                size_t m = end ? (size_t)(end - (src + i)) + 2 : n - i;
                KD_TRY(sbuf_put(out, src + i, m));
                i += m - 1;
                continue;
            }
            depth++;
            KD_TRY(sbuf_put(out, "[", 1));
            if (i + 1 < n && src[i + 1] == '^')
                KD_TRY(sbuf_put(out, src + ++i, 1));
            if (i + 1 < n && src[i + 1] == ']') /* a leading ] is literal */
                KD_TRY(sbuf_put(out, src + ++i, 1));
            continue;
        }
        if (ch == ']' && depth)
            depth--;
        KD_TRY(sbuf_put(out, &ch, 1));
    }
    return KD_OK;
}

/* Compile a pattern (literal when `literal`), JIT it when the JIT is there. */
static int compile_regex(const char *file, const char *where, const char *pat, size_t n, int literal,
                         pcre2_code **out)
{
    char *rw = NULL; /* the pattern translated, then rewritten for Unicode 16 */
    size_t rwn = 0;
    if (!literal) {
        sbuf tr = {0};
        int st = translate_regex(pat, n, &tr);
        if (st == KD_OK)
            st = kd_regex_unicode_rewrite(tr.p ? tr.p : "", tr.n, &rw, &rwn);
        free(tr.p);
        if (st != KD_OK)
            return kd_err_wrap(st, "'%s': %s: %s regex '%.*s' (offsets are in the translated pattern)", file, where,
                               st == KD_E_FORMAT ? "invalid" : "cannot use", (int)(n > 200 ? 200 : n), pat);
    }
    int errcode;
    PCRE2_SIZE erroff;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(literal ? pat : rw), literal ? n : rwn, opts, &errcode,
                                   &erroff, NULL);
    free(rw);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        return kd_err(KD_E_FORMAT, "'%s': %s: invalid regex '%.*s': %s (at offset %zu of the rewritten pattern)",
                      file, where, (int)(n > 200 ? 200 : n), pat, (const char *)msg, (size_t)erroff);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without the JIT the interpreter runs: same results */
    *out = re;
    return KD_OK;
}

/* --- pre-tokenizer --------------------------------------------------------- */

static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int add_step(kd_tokenizer *t, pt_step s)
{
    pt_step *p = realloc(t->pt, (size_t)(t->npt + 1) * sizeof *p);
    if (!p) {
        pcre2_code_free(s.re);
        return kd_err(KD_E_NOMEM, "cannot allocate pre-tokenizer steps");
    }
    t->pt = p;
    t->pt[t->npt++] = s;
    return KD_OK;
}

static int load_pretok(kd_tokenizer *t, json_t *o, const char *where)
{
    if (!o || json_is_null(o))
        return KD_OK;
    if (!json_is_object(o))
        return kd_err(KD_E_FORMAT, "'%s': %s: expected an object or null", t->file, where);
    const char *type = type_of(o);
    if (!type)
        return kd_err(KD_E_FORMAT, "'%s': %s: no \"type\"", t->file, where);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(o, "pretokenizers");
        if (!json_is_array(arr))
            return kd_err(KD_E_FORMAT, "'%s': %s.pretokenizers: expected an array", t->file, where);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
            KD_TRY(load_pretok(t, json_array_get(arr, i), sub));
        }
        return KD_OK;
    }
    pt_step s = {0};
    if (!strcmp(type, "ByteLevel")) {
        int use_regex;
        s.kind = PT_BYTELEVEL;
        KD_TRY(get_bool(t->file, where, o, "add_prefix_space", 1, &s.add_prefix_space));
        KD_TRY(get_bool(t->file, where, o, "use_regex", 1, &use_regex));
        if (use_regex)
            KD_TRY(compile_regex(t->file, where, GPT2_PATTERN, strlen(GPT2_PATTERN), 0, &s.re));
        return add_step(t, s);
    }
    if (!strcmp(type, "Split")) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s.pattern", where);
        json_t *pat = json_object_get(o, "pattern");
        json_t *rx = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        json_t *p = rx ? rx : lit;
        if (!json_is_object(pat) || !json_is_string(p))
            return kd_err(KD_E_FORMAT, "'%s': %s: expected {\"Regex\": \"...\"} or {\"String\": \"...\"}", t->file,
                          sub);
        const char *beh = NULL;
        KD_TRY(get_str(t->file, where, o, "behavior", &beh, NULL));
        static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext",
                                            "Contiguous"};
        s.behavior = -1;
        for (int i = 0; beh && i < 5; i++)
            if (!strcmp(beh, names[i]))
                s.behavior = i;
        if (s.behavior < 0)
            return kd_err(KD_E_FORMAT, "'%s': %s.behavior: expected Isolated, Removed, MergedWithPrevious, "
                          "MergedWithNext or Contiguous, not '%s'", t->file, where, beh ? beh : "(missing)");
        KD_TRY(get_bool(t->file, where, o, "invert", 0, &s.invert));
        s.kind = PT_SPLIT;
        KD_TRY(compile_regex(t->file, sub, json_string_value(p), json_string_length(p), p == lit, &s.re));
        return add_step(t, s);
    }
    return kd_err(KD_E_UNSUPPORTED, "'%s': %s: pre-tokenizer type '%s' is not supported (Split, ByteLevel and "
                  "Sequence are)", t->file, where, type);
}

/* --- the BPE model (models/bpe/serialization.rs, model.rs: BpeBuilder::build) */

static int load_model(kd_tokenizer *t, json_t *m)
{
    const char *f = t->file;
    if (!m || json_is_null(m))
        return kd_err(KD_E_FORMAT, "'%s': no \"model\"", f);
    if (!json_is_object(m))
        return kd_err(KD_E_FORMAT, "'%s': model: expected an object", f);
    const char *type = type_of(m);
    if (type && strcmp(type, "BPE"))
        return kd_err(KD_E_UNSUPPORTED, "'%s': model.type: '%s' is not supported (only BPE)", f, type);
    json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return kd_err(KD_E_UNSUPPORTED, "'%s': model.dropout: BPE dropout is not supported", f);

    json_t *vocab = json_object_get(m, "vocab");
    json_t *merges = json_object_get(m, "merges");
    if (!json_is_object(vocab))
        return kd_err(KD_E_FORMAT, "'%s': model.vocab: expected an object of token -> id", f);
    if (!json_is_array(merges))
        return kd_err(KD_E_FORMAT, "'%s': model.merges: expected an array", f);

    /* vocab: copy every string into one blob, index it by id */
    size_t bytes = 0;
    int64_t maxid = -1;
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        json_t *v = json_object_iter_value(it);
        const char *k = json_object_iter_key(it);
        if (!json_is_integer(v))
            return kd_err(KD_E_FORMAT, "'%s': model.vocab['%s']: the id is not an integer", f, k);
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= MAX_TOKEN_ID)
            return kd_err(KD_E_RANGE, "'%s': model.vocab['%s']: id %lld is out of range [0, %d)", f, k,
                          (long long)id, MAX_TOKEN_ID);
        if (id > maxid)
            maxid = id;
        bytes += json_object_iter_key_len(it) + 1;
    }
    t->nvocab = json_object_size(vocab);
    t->vm = (int32_t)(maxid + 1);
    t->mblob = malloc(bytes ? bytes : 1);
    t->mstr = calloc((size_t)t->vm + 1, sizeof *t->mstr);
    t->mlen = calloc((size_t)t->vm + 1, sizeof *t->mlen);
    if (!t->mblob || !t->mstr || !t->mlen)
        return kd_err(KD_E_NOMEM, "cannot allocate the vocabulary of '%s'", f);
    KD_TRY(strmap_init(&t->vocab, t->nvocab, t->mstr, t->mlen));
    size_t at = 0;
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        const char *k = json_object_iter_key(it);
        size_t kl = json_object_iter_key_len(it);
        int32_t id = (int32_t)json_integer_value(json_object_iter_value(it));
        if (t->mstr[id])
            return kd_err(KD_E_FORMAT, "'%s': model.vocab: tokens '%s' and '%s' both have id %d", f, t->mstr[id], k,
                          id);
        memcpy(t->mblob + at, k, kl + 1);
        t->mstr[id] = t->mblob + at;
        t->mlen[id] = (uint32_t)kl;
        at += kl + 1;
        strmap_put(&t->vocab, id);
    }

    /* options */
    const char *s;
    size_t sl;
    KD_TRY(get_str(f, "model", m, "unk_token", &s, &sl));
    if (s) {
        t->has_unk = 1;
        t->unk_id = strmap_get(&t->vocab, s, sl);
        if (!(t->unk_token = xstrndup(s, sl)))
            return kd_err(KD_E_NOMEM, "cannot allocate model options");
    }
    KD_TRY(get_str(f, "model", m, "continuing_subword_prefix", &s, &sl));
    if (s) {
        t->cont_len = sl;
        if (!(t->cont_prefix = xstrndup(s, sl)))
            return kd_err(KD_E_NOMEM, "cannot allocate model options");
    }
    KD_TRY(get_str(f, "model", m, "end_of_word_suffix", &s, &sl));
    if (s) {
        t->eow_len = sl;
        if (!(t->eow_suffix = xstrndup(s, sl)))
            return kd_err(KD_E_NOMEM, "cannot allocate model options");
    }
    KD_TRY(get_bool(f, "model", m, "fuse_unk", 0, &t->fuse_unk));
    KD_TRY(get_bool(f, "model", m, "byte_fallback", 0, &t->byte_fallback));
    KD_TRY(get_bool(f, "model", m, "ignore_merges", 0, &t->ignore_merges));

    /* merges: rank = position among the entries that are not "#version" lines */
    size_t nm = json_array_size(merges);
    KD_TRY(pairmap_init(&t->merges, nm));
    sbuf cat = {0};
    int st = KD_OK;
    uint32_t rank = 0;
    for (size_t i = 0; i < nm && st == KD_OK; i++) {
        json_t *e = json_array_get(merges, i);
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(e)) {
            a = json_string_value(e);
            size_t n = json_string_length(e);
            if (n >= 8 && !memcmp(a, "#version", 8))
                continue;
            const char *sp = memchr(a, ' ', n);
            if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - a))) {
                st = kd_err(KD_E_FORMAT, "'%s': model.merges[%zu]: '%s' is not two tokens separated by one space",
                            f, i, a);
                break;
            }
            al = (size_t)(sp - a), b = sp + 1, bl = n - al - 1;
        } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                   json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0)), al = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1)), bl = json_string_length(json_array_get(e, 1));
        } else {
            st = kd_err(KD_E_FORMAT, "'%s': model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", f, i);
            break;
        }
        int32_t ia = strmap_get(&t->vocab, a, al), ib = strmap_get(&t->vocab, b, bl);
        if (ia < 0 || ib < 0) {
            const char *bad = ia < 0 ? a : b;
            int badn = (int)(ia < 0 ? al : bl);
            st = kd_err(KD_E_FORMAT, "'%s': model.merges[%zu]: token '%.*s' is not in the vocabulary", f, i, badn,
                        bad);
            break;
        }
        if (bl < t->cont_len) {
            st = kd_err(KD_E_FORMAT, "'%s': model.merges[%zu]: '%.*s' is shorter than the continuing_subword_prefix",
                        f, i, (int)bl, b);
            break;
        }
        cat.n = 0;
        if ((st = sbuf_put(&cat, a, al)) || (st = sbuf_put(&cat, b + t->cont_len, bl - t->cont_len)))
            break;
        int32_t inew = strmap_get(&t->vocab, cat.p, cat.n);
        if (inew < 0) {
            st = kd_err(KD_E_FORMAT, "'%s': model.merges[%zu]: the merged token '%.*s' is not in the vocabulary", f,
                        i, (int)cat.n, cat.p);
            break;
        }
        pairmap_put(&t->merges, ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib, (int32_t)rank, inew);
        rank++;
    }
    free(cat.p);
    KD_TRY(st);

    /* fast paths of merge_word: single characters, byte fallback */
    for (int c = 0; c < 512; c++) {
        char u[2];
        size_t n = c < 0x80 ? 1 : 2;
        if (n == 1)
            u[0] = (char)c;
        else
            u[0] = (char)(0xC0 | (c >> 6)), u[1] = (char)(0x80 | (c & 0x3F));
        t->char_id[c] = strmap_get(&t->vocab, u, n);
    }
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        t->fallback_id[b] = strmap_get(&t->vocab, code, strlen(code));
    }
    return KD_OK;
}

/* --- added tokens (added_vocabulary.rs: add_tokens, refresh_added_tokens) -- */

static int trie_build(trie *tr, const kd_tokenizer *t, int normalized)
{
    size_t bytes = 0;
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].normalized == normalized && t->added_of[t->added[i].id] == (int32_t)i)
            bytes += normalized ? t->added[i].norm_len : t->added[i].len;
    tr->term = malloc((bytes + 1) * sizeof *tr->term);
    if (!tr->term)
        return kd_err(KD_E_NOMEM, "cannot allocate the added-token trie");
    KD_TRY(pairmap_init(&tr->edges, bytes));
    tr->nodes = 1;
    tr->term[0] = -1;
    for (size_t i = 0; i < t->nadded; i++) {
        const added_tok *a = &t->added[i];
        /* one pattern per id: the token that HF keeps for it (added_tokens_map_r) */
        if (a->normalized != normalized || t->added_of[a->id] != (int32_t)i)
            continue;
        const unsigned char *p = (const unsigned char *)(normalized ? a->norm : a->content);
        size_t n = normalized ? a->norm_len : a->len;
        if (n == 0)
            continue;
        tr->first[p[0] >> 3] |= (uint8_t)(1u << (p[0] & 7));
        int32_t node = 0;
        for (size_t j = 0; j < n; j++) {
            uint64_t key = ((uint64_t)(uint32_t)node << 8) | p[j];
            const pslot *e = pairmap_get(&tr->edges, key);
            if (e) {
                node = e->a;
            } else {
                int32_t child = (int32_t)tr->nodes++;
                tr->term[child] = -1;
                pairmap_put(&tr->edges, key, child, 0);
                node = child;
            }
        }
        tr->term[node] = a->id;
    }
    return KD_OK;
}

static int load_added(kd_tokenizer *t, json_t *arr)
{
    const char *f = t->file;
    if (!arr || json_is_null(arr))
        arr = NULL;
    else if (!json_is_array(arr))
        return kd_err(KD_E_FORMAT, "'%s': added_tokens: expected an array", f);
    size_t n = arr ? json_array_size(arr) : 0;
    t->added = calloc(n + 1, sizeof *t->added);
    t->acontent = calloc(n + 1, sizeof *t->acontent);
    t->alen = calloc(n + 1, sizeof *t->alen);
    if (!t->added || !t->acontent || !t->alen)
        return kd_err(KD_E_NOMEM, "cannot allocate the added tokens");
    KD_TRY(strmap_init(&t->amap, n, t->acontent, t->alen));

    /* HF ignores the ids written in the file: a token gets the id its content
     * already has (in the added vocabulary, else in the model), else the next
     * free one after the model's vocabulary. It warns when that differs. */
    int64_t next_id = (int64_t)t->nvocab;
    for (size_t i = 0; i < n; i++) {
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        json_t *o = json_array_get(arr, i);
        if (!json_is_object(o))
            return kd_err(KD_E_FORMAT, "'%s': %s: expected an object", f, where);
        const char *content;
        size_t clen;
        KD_TRY(get_str(f, where, o, "content", &content, &clen));
        json_t *jid = json_object_get(o, "id");
        if (!content || !json_is_integer(jid))
            return kd_err(KD_E_FORMAT, "'%s': %s: needs a string \"content\" and an integer \"id\"", f, where);
        if (json_integer_value(jid) < 0 || json_integer_value(jid) >= MAX_TOKEN_ID)
            return kd_err(KD_E_RANGE, "'%s': %s: id %lld is out of range [0, %d)", f, where,
                          (long long)json_integer_value(jid), MAX_TOKEN_ID);
        added_tok a = {0};
        int v[5];
        KD_TRY(get_bool(f, where, o, "special", 0, &v[0]));
        KD_TRY(get_bool(f, where, o, "lstrip", 0, &v[1]));
        KD_TRY(get_bool(f, where, o, "rstrip", 0, &v[2]));
        KD_TRY(get_bool(f, where, o, "single_word", 0, &v[3]));
        KD_TRY(get_bool(f, where, o, "normalized", !v[0], &v[4]));
        a.special = (unsigned char)v[0], a.lstrip = (unsigned char)v[1], a.rstrip = (unsigned char)v[2];
        a.single_word = (unsigned char)v[3], a.normalized = (unsigned char)v[4];
        if (clen == 0)
            continue; /* HF ignores empty tokens */

        int32_t prev = strmap_get(&t->amap, content, clen);
        if (prev >= 0) {
            const added_tok *p = &t->added[prev];
            if (p->special == a.special && p->lstrip == a.lstrip && p->rstrip == a.rstrip &&
                p->single_word == a.single_word && p->normalized == a.normalized)
                continue; /* the same token twice */
            a.id = p->id;
            /* HF's special set only grows: amap still finds the first entry */
            t->added[prev].special |= a.special;
        } else {
            int32_t mid = strmap_get(&t->vocab, content, clen);
            if (mid >= 0) {
                a.id = mid;
            } else {
                if (next_id >= MAX_TOKEN_ID)
                    return kd_err(KD_E_RANGE, "'%s': %s: too many added tokens", f, where);
                a.id = (int32_t)next_id++;
            }
        }
        if (a.id != json_integer_value(jid))
            kd_warn("'%s': %s: token '%s' has id %lld in the file; HF assigns it id %d, which is used", f, where,
                    content, (long long)json_integer_value(jid), a.id);
        a.content = xstrndup(content, clen);
        a.len = (uint32_t)clen;
        if (!a.content)
            return kd_err(KD_E_NOMEM, "cannot allocate an added token");
        a.norm = a.content, a.norm_len = a.len;
        size_t idx = t->nadded++;
        t->added[idx] = a;
        if (a.normalized && t->nnorm) {
            sbuf nb[2] = {{0}, {0}};
            const char *o2;
            size_t n2;
            int st = normalize(t, nb, content, clen, &o2, &n2);
            if (st == KD_OK && (n2 != clen || memcmp(o2, content, clen))) {
                t->added[idx].norm = xstrndup(o2, n2);
                t->added[idx].norm_len = (uint32_t)n2;
                if (!t->added[idx].norm) {
                    t->added[idx].norm = t->added[idx].content;
                    st = kd_err(KD_E_NOMEM, "cannot allocate an added token");
                }
            }
            free(nb[0].p);
            free(nb[1].p);
            KD_TRY(st);
        }
        t->acontent[idx] = t->added[idx].content;
        t->alen[idx] = t->added[idx].len;
        if (prev < 0)
            strmap_put(&t->amap, (int32_t)idx);
    }
    return KD_OK;
}

/* --- decoder and post-processor ------------------------------------------ */

static int load_decoder(kd_tokenizer *t, json_t *d)
{
    if (!d || json_is_null(d))
        return KD_OK; /* tokens joined by spaces */
    const char *type = json_is_object(d) ? type_of(d) : NULL;
    if (type && !strcmp(type, "ByteLevel")) {
        t->dec_bytelevel = 1;
        return KD_OK;
    }
    return kd_err(KD_E_UNSUPPORTED, "'%s': decoder: type '%s' is not supported (ByteLevel and null are)", t->file,
                  type ? type : "(none)");
}

static int push_ids(int32_t **v, size_t *n, const int32_t *ids, size_t k)
{
    int32_t *p = realloc(*v, (*n + k + 1) * sizeof *p);
    if (!p)
        return kd_err(KD_E_NOMEM, "cannot allocate special ids");
    memcpy(p + *n, ids, k * sizeof *ids);
    *v = p;
    *n += k;
    return KD_OK;
}

/* The special tokens the post-processor puts around a single sequence. */
static int load_post(kd_tokenizer *t, json_t *p, const char *where)
{
    const char *f = t->file;
    if (!p || json_is_null(p))
        return KD_OK;
    const char *type = json_is_object(p) ? type_of(p) : NULL;
    if (!type)
        return kd_err(KD_E_FORMAT, "'%s': %s: expected an object with a \"type\"", f, where);
    if (!strcmp(type, "ByteLevel"))
        return KD_OK;
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(p, "processors");
        if (!json_is_array(arr))
            return kd_err(KD_E_FORMAT, "'%s': %s.processors: expected an array", f, where);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.processors[%zu]", where, i);
            KD_TRY(load_post(t, json_array_get(arr, i), sub));
        }
        return KD_OK;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        json_t *cls = json_object_get(p, "cls"), *sep = json_object_get(p, "sep");
        json_t *ci = json_array_get(cls, 1), *si = json_array_get(sep, 1);
        if (!json_is_integer(ci) || !json_is_integer(si))
            return kd_err(KD_E_FORMAT, "'%s': %s: cls and sep must be [token, id]", f, where);
        int32_t c = (int32_t)json_integer_value(ci), s = (int32_t)json_integer_value(si);
        KD_TRY(push_ids(&t->pre_ids, &t->npre, &c, 1));
        return push_ids(&t->post_ids, &t->npost, &s, 1);
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
        if (!json_is_array(single))
            return kd_err(KD_E_FORMAT, "'%s': %s.single: expected an array", f, where);
        int after = 0;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *item = json_array_get(single, i);
            json_t *sp = json_object_get(item, "SpecialToken");
            if (json_object_get(item, "Sequence")) {
                after = 1;
                continue;
            }
            const char *name = json_string_value(json_object_get(sp, "id"));
            json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
            if (!name || !json_is_array(ids))
                return kd_err(KD_E_FORMAT, "'%s': %s.single[%zu]: a special token without ids in special_tokens",
                              f, where, i);
            for (size_t k = 0; k < json_array_size(ids); k++) {
                json_t *v = json_array_get(ids, k);
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_TOKEN_ID)
                    return kd_err(KD_E_FORMAT, "'%s': %s.special_tokens['%s'].ids: expected token ids", f, where,
                                  name);
                int32_t id = (int32_t)json_integer_value(v);
                KD_TRY(after ? push_ids(&t->post_ids, &t->npost, &id, 1) : push_ids(&t->pre_ids, &t->npre, &id, 1));
            }
        }
        return KD_OK;
    }
    return kd_err(KD_E_UNSUPPORTED, "'%s': %s: post-processor type '%s' is not supported", f, where, type);
}

/* --- per-id tables ----------------------------------------------------------- */

/* The string HF's decode starts from for `id` (added_vocabulary.rs:
 * simple_id_to_token, else the model's), or NULL. */
static const char *decode_string(const kd_tokenizer *t, int32_t id, size_t *len)
{
    int32_t ai = t->added_of[id];
    if (ai >= 0) {
        *len = t->added[ai].norm_len;
        return t->added[ai].norm;
    }
    if (id < t->vm && t->mstr[id]) {
        *len = t->mlen[id];
        return t->mstr[id];
    }
    return NULL;
}

static int build_tables(kd_tokenizer *t)
{
    int32_t V = t->vm;
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].id + 1 > V)
            V = t->added[i].id + 1;
    t->V = V;
    t->added_of = malloc(((size_t)V + 1) * sizeof *t->added_of);
    t->doff = malloc(((size_t)V + 1) * sizeof *t->doff);
    t->dlen = calloc((size_t)V + 1, sizeof *t->dlen);
    t->dflag = calloc((size_t)V + 1, sizeof *t->dflag);
    if (!t->added_of || !t->doff || !t->dlen || !t->dflag)
        return kd_err(KD_E_NOMEM, "cannot allocate the id tables");
    for (int32_t i = 0; i < V; i++)
        t->added_of[i] = -1;
    for (size_t i = 0; i < t->nadded; i++) /* a later token with the same id replaces an earlier one */
        t->added_of[t->added[i].id] = (int32_t)i;
    KD_TRY(trie_build(&t->raw_trie, t, 0));
    KD_TRY(trie_build(&t->norm_trie, t, 1));

    /* decoded bytes of every id (decoders/byte_level.rs: decode_chain): a token
     * whose characters are all in the byte-level alphabet becomes those bytes,
     * any other token (an added token like <｜User｜>) its own UTF-8 */
    sbuf blob = {0};
    int st = KD_OK;
    for (int32_t id = 0; id < V && st == KD_OK; id++) {
        size_t n;
        const char *s = decode_string(t, id, &n);
        t->doff[id] = blob.n;
        if (!s)
            continue;
        t->dflag[id] = DF_EXISTS;
        int32_t si = strmap_get(&t->amap, s, n);
        if (si >= 0 && t->added[si].special) /* is_special_token(token string) */
            t->dflag[id] |= DF_SPECIAL;
        int mapped = t->dec_bytelevel;
        for (size_t i = 0; mapped && i < n;) {
            size_t l;
            int32_t cp = utf8_cp((const unsigned char *)s + i, &l);
            if (cp >= 512 || bl_byte[cp] < 0)
                mapped = 0;
            i += l;
        }
        if (mapped) {
            for (size_t i = 0; i < n && st == KD_OK;) {
                size_t l;
                char b = (char)bl_byte[utf8_cp((const unsigned char *)s + i, &l)];
                st = sbuf_put(&blob, &b, 1);
                i += l;
            }
        } else {
            st = sbuf_put(&blob, s, n);
        }
        t->dlen[id] = (uint32_t)(blob.n - t->doff[id]);
    }
    t->dblob = blob.p;
    return st;
}

/* --- tokenizer_config.json ------------------------------------------------- */

/* A special token in tokenizer_config.json: "text", {"content": "text"} or null. */
static int cfg_token(const char *file, json_t *cfg, const char *key, char **out)
{
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!v || json_is_null(v))
        return KD_OK;
    if (!json_is_string(v))
        return kd_err(KD_E_FORMAT, "'%s': %s: expected a string or {\"content\": \"...\"}", file, key);
    *out = xstrndup(json_string_value(v), json_string_length(v));
    return *out ? KD_OK : kd_err(KD_E_NOMEM, "cannot allocate %s", key);
}

static int cfg_token_id(const kd_tokenizer *t, const char *file, const char *key, const char *tok, int32_t *id)
{
    *id = -1;
    if (!tok)
        return KD_OK;
    *id = kd_tok_token_to_id(t, tok);
    if (*id < 0)
        return kd_err(KD_E_FORMAT, "'%s': %s '%s' is not a token of '%s'", file, key, tok, t->file);
    return KD_OK;
}

static int load_config(kd_tokenizer *t, const char *file)
{
    if (access(file, F_OK) != 0)
        return KD_OK; /* optional */
    char *text;
    size_t n;
    KD_TRY(kd_read_file(file, 64u << 20, &text, &n));
    json_error_t je;
    /* Llama 3.1's model_max_length is 1e30 written as an integer */
    json_t *cfg = json_loadb(text, n, JSON_DECODE_INT_AS_REAL, &je);
    free(text);
    if (!cfg)
        return kd_err(KD_E_FORMAT, "'%s': not valid JSON: line %d column %d: %s", file, je.line, je.column, je.text);
    int st = KD_OK;
    if (!json_is_object(cfg))
        st = kd_err(KD_E_FORMAT, "'%s': expected a JSON object", file);
    if (st == KD_OK)
        st = cfg_token(file, cfg, "bos_token", &t->bos);
    if (st == KD_OK)
        st = cfg_token(file, cfg, "eos_token", &t->eos);
    if (st == KD_OK)
        st = cfg_token(file, cfg, "pad_token", &t->pad);
    if (st == KD_OK)
        st = cfg_token_id(t, file, "bos_token", t->bos, &t->bos_id);
    if (st == KD_OK)
        st = cfg_token_id(t, file, "eos_token", t->eos, &t->eos_id);
    if (st == KD_OK)
        st = cfg_token_id(t, file, "pad_token", t->pad, &t->pad_id);
    /* add_bos_token / add_eos_token replace what the post-processor adds on
     * that side, as transformers' LlamaTokenizerFast.update_post_processor does */
    static const char *const keys[2] = {"add_bos_token", "add_eos_token"};
    for (int side = 0; side < 2 && st == KD_OK; side++) {
        json_t *v = json_object_get(cfg, keys[side]);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_boolean(v)) {
            st = kd_err(KD_E_FORMAT, "'%s': %s: expected true or false", file, keys[side]);
            break;
        }
        int32_t id = side == 0 ? t->bos_id : t->eos_id;
        if (json_is_true(v) && id < 0) {
            st = kd_err(KD_E_FORMAT, "'%s': %s is true but there is no %s", file, keys[side],
                        side == 0 ? "bos_token" : "eos_token");
            break;
        }
        int32_t **ids = side == 0 ? &t->pre_ids : &t->post_ids;
        size_t *nids = side == 0 ? &t->npre : &t->npost;
        *nids = 0;
        if (json_is_true(v))
            st = push_ids(ids, nids, &id, 1);
    }
    json_t *ct = json_object_get(cfg, "chat_template");
    if (st == KD_OK && json_is_array(ct)) { /* [{"name": ..., "template": ...}] */
        json_t *pick = NULL;
        for (size_t i = 0; i < json_array_size(ct); i++) {
            json_t *e = json_array_get(ct, i);
            const char *name = json_string_value(json_object_get(e, "name"));
            if (name && !strcmp(name, "default")) {
                pick = e;
                break;
            }
            if (!pick)
                pick = e;
        }
        ct = json_object_get(pick, "template");
    }
    if (st == KD_OK && json_is_string(ct)) {
        t->chat_template = xstrndup(json_string_value(ct), json_string_length(ct));
        if (!t->chat_template)
            st = kd_err(KD_E_NOMEM, "cannot allocate the chat template");
    }
    json_decref(cfg);
    return st;
}

/* --- kd_tok_load ------------------------------------------------------------ */

static int load_json(kd_tokenizer *t, json_t *root)
{
    const char *f = t->file;
    if (!json_is_object(root))
        return kd_err(KD_E_FORMAT, "'%s': expected a JSON object", f);
    json_t *ver = json_object_get(root, "version");
    if (ver && (!json_is_string(ver) || strcmp(json_string_value(ver), "1.0")))
        return kd_err(KD_E_UNSUPPORTED, "'%s': version: only \"1.0\" is known", f);
    json_t *trunc = json_object_get(root, "truncation"), *pad = json_object_get(root, "padding");
    if ((trunc && !json_is_null(trunc)) || (pad && !json_is_null(pad)))
        kd_warn("'%s': truncation and padding are ignored; texts are encoded whole", f);
    KD_TRY(load_normalizer(t, json_object_get(root, "normalizer"), "normalizer"));
    KD_TRY(load_model(t, json_object_get(root, "model")));
    KD_TRY(load_added(t, json_object_get(root, "added_tokens")));
    KD_TRY(load_pretok(t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer"));
    KD_TRY(load_decoder(t, json_object_get(root, "decoder")));
    KD_TRY(load_post(t, json_object_get(root, "post_processor"), "post_processor"));
    return build_tables(t);
}

int kd_tok_load(const char *path, kd_tokenizer **out)
{
    *out = NULL;
    pthread_once(&bl_once, bl_init);
    char file[4096], cfg[4096];
    if (kd_is_dir(path)) {
        KD_TRY(kd_path_join(file, sizeof file, path, "tokenizer.json"));
        KD_TRY(kd_path_join(cfg, sizeof cfg, path, "tokenizer_config.json"));
    } else {
        if (snprintf(file, sizeof file, "%s", path) >= (int)sizeof file)
            return kd_err(KD_E_RANGE, "path too long: '%s'", path);
        const char *slash = strrchr(path, '/');
        if (slash)
            snprintf(cfg, sizeof cfg, "%.*s/tokenizer_config.json", (int)(slash - path), path);
        else
            snprintf(cfg, sizeof cfg, "tokenizer_config.json");
    }
    char *text;
    size_t n;
    int st = kd_read_file(file, 1u << 30, &text, &n);
    if (st != KD_OK)
        return kd_err_wrap(st, "cannot load tokenizer");
    json_error_t je;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root)
        return kd_err(KD_E_FORMAT, "'%s': not valid JSON: line %d column %d: %s", file, je.line, je.column, je.text);

    kd_tokenizer *t = calloc(1, sizeof *t);
    tok_rt *rt = calloc(1, sizeof *rt);
    char *fcopy = strdup(file);
    if (!t || !rt || !fcopy) {
        free(t), free(rt), free(fcopy);
        json_decref(root);
        return kd_err(KD_E_NOMEM, "cannot allocate a tokenizer");
    }
    pthread_mutex_init(&rt->pool_mu, NULL);
    for (int i = 0; i < CACHE_LOCKS; i++)
        pthread_mutex_init(&rt->cache.mu[i], NULL);
    t->rt = rt;
    t->file = fcopy;
    t->unk_id = -1;
    t->bos_id = t->eos_id = t->pad_id = -1;
    st = load_json(t, root);
    json_decref(root);
    if (st == KD_OK)
        st = load_config(t, cfg);
    if (st != KD_OK) {
        kd_tok_free(t);
        return st;
    }
    *out = t;
    return KD_OK;
}

/* ======================================================================== */
/* 4. Encoding                                                              */
/* ======================================================================== */

/* --- added tokens (added_vocabulary.rs: find_matches) ----------------------- */

/* Split s[0..n) into text and added-token segments: leftmost-longest matches
 * of the trie's patterns, scanning on after each match's end (what daachorse's
 * leftmost_find_iter yields), then single_word/lstrip/rstrip as HF applies
 * them. Empty text segments are not emitted. */
static int split_added(const kd_tokenizer *t, const trie *tr, const char *s, size_t n, seg **segs, size_t *cap,
                       size_t *nseg)
{
    const unsigned char *p = (const unsigned char *)s;
    *nseg = 0;
    size_t start_offset = 0, i = 0;
    if (tr->nodes > 1) {
        while (i < n) {
            if (!(tr->first[p[i] >> 3] & (1u << (p[i] & 7)))) {
                i++;
                continue;
            }
            int32_t node = 0, best = -1;
            size_t best_end = 0;
            for (size_t j = i; j < n; j++) {
                const pslot *e = pairmap_get(&tr->edges, ((uint64_t)(uint32_t)node << 8) | p[j]);
                if (!e)
                    break;
                node = e->a;
                if (tr->term[node] >= 0)
                    best = tr->term[node], best_end = j + 1;
            }
            if (best < 0) {
                i++;
                continue;
            }
            size_t start = i, stop = best_end;
            i = best_end;
            const added_tok *a = &t->added[t->added_of[best]];
            if (a->single_word) {
                int start_space = 1, stop_space = 1;
                if (start > 0) { /* !ends_with_word(s[..start]) */
                    size_t b = start - 1, l;
                    while (b > 0 && (p[b] & 0xC0) == 0x80)
                        b--;
                    start_space = !is_word_char(utf8_cp(p + b, &l));
                }
                if (stop < n) { /* !starts_with_word(s[stop..]) */
                    size_t l;
                    stop_space = !is_word_char(utf8_cp(p + stop, &l));
                }
                if (!start_space || !stop_space)
                    continue;
            }
            if (a->lstrip) { /* take the whitespace before it, back to the previous split */
                size_t b = start;
                while (b > 0) {
                    size_t c = b - 1, l;
                    while (c > 0 && (p[c] & 0xC0) == 0x80)
                        c--;
                    if (!is_white_space(utf8_cp(p + c, &l)))
                        break;
                    b = c;
                }
                start = b > start_offset ? b : start_offset;
            }
            if (a->rstrip) {
                while (stop < n) {
                    size_t l;
                    if (!is_white_space(utf8_cp(p + stop, &l)))
                        break;
                    stop += l;
                }
            }
            KD_TRY(GROW(*segs, *cap, *nseg + 2));
            if (start_offset < start)
                (*segs)[(*nseg)++] = (seg){start_offset, start - start_offset, -1};
            (*segs)[(*nseg)++] = (seg){start, stop - start, best};
            start_offset = stop;
        }
    }
    if (start_offset < n) {
        KD_TRY(GROW(*segs, *cap, *nseg + 1));
        (*segs)[(*nseg)++] = (seg){start_offset, n - start_offset, -1};
    }
    return KD_OK;
}

/* --- pre-tokenization (normalizer.rs: split; pre_tokenizers/) --------------- */

static int regex_error(int rc)
{
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return kd_err(KD_E_INTERNAL, "pre-tokenizer regex failed: %s", (const char *)msg);
}

/* Split the spans `in` of buf by `re` with HF's split behavior, appending the
 * non-empty pieces to *out. Matches are found as onig's find_iter does: each
 * search starts where the last match ended, and an empty match right at the
 * end of the previous match is skipped by one character. */
static int regex_split(enc_ctx *c, const pcre2_code *re, const char *buf, const span *in, size_t nin, int behavior,
                       int invert, span **out, size_t *ocap, size_t *nout)
{
    for (size_t k = 0; k < nin; k++) {
        const char *s = buf + in[k].off;
        size_t n = in[k].len, base = in[k].off;
        /* matches and the text between them, in order */
        size_t nm = 0, prev = 0, last_end = 0;
        int64_t last_match = -1;
        while (last_end <= n) {
            int rc = pcre2_match(re, (PCRE2_SPTR)s, n, last_end, PCRE2_NO_UTF_CHECK, c->md, c->mc);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0)
                return regex_error(rc);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
            size_t ms = ov[0], me = ov[1];
            if (me < ms || me > n) /* \K tricks; never in tokenizer files */
                return kd_err(KD_E_INTERNAL, "pre-tokenizer regex gave a match that ends before it starts");
            if (ms == me && last_match == (int64_t)me) {
                last_end += last_end < n ? utf8_len((unsigned char)s[last_end]) : 1;
                continue;
            }
            last_end = me;
            last_match = (int64_t)me;
            KD_TRY(GROW(c->mt, c->mt_cap, nm + 2));
            if (prev != ms)
                c->mt[nm++] = (mspan){prev, ms - prev, invert};
            c->mt[nm++] = (mspan){ms, me - ms, !invert};
            prev = me;
        }
        if (prev != n) {
            KD_TRY(GROW(c->mt, c->mt_cap, nm + 1));
            c->mt[nm++] = (mspan){prev, n - prev, invert};
        }
        /* the behaviors, as HF's folds over (offsets, is_match), done in place
         * in c->mt: afterwards is_match means "remove" */
        size_t lo = 0, hi = nm;
        int previous_match = 0;
        if (behavior == SPLIT_ISOLATED || behavior == SPLIT_REMOVED) {
            for (size_t j = 0; j < nm; j++)
                c->mt[j].is_match = behavior == SPLIT_REMOVED && c->mt[j].is_match;
        } else if (behavior == SPLIT_MERGED_NEXT) { /* from the right: a match joins the piece after it */
            lo = nm;
            for (size_t j = nm; j-- > 0;) {
                mspan m = c->mt[j];
                if (m.is_match && !previous_match && lo < nm) {
                    c->mt[lo].len += c->mt[lo].off - m.off;
                    c->mt[lo].off = m.off;
                } else {
                    c->mt[--lo] = (mspan){m.off, m.len, 0};
                }
                previous_match = m.is_match;
            }
        } else { /* Contiguous, MergedWithPrevious: a piece joins the one before it */
            hi = 0;
            for (size_t j = 0; j < nm; j++) {
                mspan m = c->mt[j];
                int join = behavior == SPLIT_CONTIGUOUS ? m.is_match == previous_match
                                                        : (m.is_match && !previous_match);
                if (join && hi > 0)
                    c->mt[hi - 1].len = m.off + m.len - c->mt[hi - 1].off;
                else
                    c->mt[hi++] = (mspan){m.off, m.len, 0};
                previous_match = m.is_match;
            }
        }
        KD_TRY(GROW(*out, *ocap, *nout + (hi - lo)));
        for (size_t j = lo; j < hi; j++)
            if (!c->mt[j].is_match && c->mt[j].len)
                (*out)[(*nout)++] = (span){base + c->mt[j].off, c->mt[j].len};
    }
    return KD_OK;
}

/* Run the pre-tokenizer over s[0..n). On return *buf and c->sp[*which][0..*np)
 * are the pieces the model tokenizes. With `map` (offsets wanted), *map gets
 * for each byte of *buf the offset in s of the byte it came from, or NULL when
 * *buf is s itself; an inserted prefix space gets the offset of its piece. */
static int pretokenize(const kd_tokenizer *t, enc_ctx *c, const char *s, size_t n, const char **buf, int *which,
                       size_t *np, const size_t **map)
{
    int w = 0, bw = 0;
    const size_t *m = NULL; /* the map of cur; NULL: cur is s */
    KD_TRY(GROW(c->sp[0], c->sp_cap[0], 1));
    c->sp[0][0] = (span){0, n};
    size_t ns = 1;
    const char *cur = s;
    for (int k = 0; k < t->npt; k++) {
        const pt_step *st = &t->pt[k];
        if (st->kind == PT_SPLIT) {
            size_t no = 0;
            KD_TRY(regex_split(c, st->re, cur, c->sp[w], ns, st->behavior, st->invert, &c->sp[w ^ 1],
                               &c->sp_cap[w ^ 1], &no));
            w ^= 1, ns = no;
            continue;
        }
        /* ByteLevel: prefix space, GPT-2 split, then map bytes to characters */
        if (st->add_prefix_space) {
            int mi = bw; /* b's map is bmap[mi]; m, when set, is bmap[mi ^ 1] */
            sbuf *b = &c->buf[bw];
            bw ^= 1;
            b->n = 0;
            for (size_t i = 0; i < ns; i++) {
                span p = c->sp[w][i];
                size_t off = b->n;
                int ins = cur[p.off] != ' ';
                if (ins)
                    KD_TRY(sbuf_put(b, " ", 1));
                KD_TRY(sbuf_put(b, cur + p.off, p.len));
                c->sp[w][i] = (span){off, b->n - off};
                if (map) {
                    KD_TRY(GROW(c->bmap[mi], c->bmap_cap[mi], b->n));
                    size_t q = off;
                    if (ins)
                        c->bmap[mi][q++] = m ? m[p.off] : p.off;
                    for (size_t j = 0; j < p.len; j++)
                        c->bmap[mi][q++] = m ? m[p.off + j] : p.off + j;
                }
            }
            cur = b->p;
            if (map)
                m = c->bmap[mi];
        }
        if (st->re) {
            size_t no = 0;
            KD_TRY(regex_split(c, st->re, cur, c->sp[w], ns, SPLIT_ISOLATED, 0, &c->sp[w ^ 1], &c->sp_cap[w ^ 1],
                               &no));
            w ^= 1, ns = no;
        }
        int mi = bw;
        sbuf *b = &c->buf[bw];
        bw ^= 1;
        b->n = 0;
        size_t total = 0;
        for (size_t i = 0; i < ns; i++)
            total += c->sp[w][i].len;
        KD_TRY(GROW(b->p, b->cap, 2 * total + 1));
        if (map)
            KD_TRY(GROW(c->bmap[mi], c->bmap_cap[mi], 2 * total + 1));
        for (size_t i = 0; i < ns; i++) {
            span p = c->sp[w][i];
            size_t off = b->n;
            for (size_t j = 0; j < p.len; j++) {
                unsigned char by = (unsigned char)cur[p.off + j];
                b->p[b->n] = bl_utf8[by][0];
                b->p[b->n + 1] = bl_utf8[by][1];
                if (map) {
                    size_t src = m ? m[p.off + j] : p.off + j;
                    c->bmap[mi][b->n] = c->bmap[mi][b->n + 1] = src;
                }
                b->n += bl_len[by];
            }
            c->sp[w][i] = (span){off, b->n - off};
        }
        cur = b->p;
        if (map)
            m = c->bmap[mi];
    }
    *buf = cur;
    *which = w;
    *np = ns;
    if (map)
        *map = m;
    return KD_OK;
}

/* --- the BPE model (models/bpe/model.rs: merge_word, word.rs: merge_all) ---- */

#define CACHE_MISS 1

/* Append the cached ids of w and return KD_OK, or return CACHE_MISS. */
static int cache_get(const kd_tokenizer *t, const char *w, size_t n, uint64_t h, kd_ids *out)
{
    bpe_cache *cc = &t->rt->cache;
    size_t i = (size_t)(h & (CACHE_SLOTS - 1));
    uint32_t h32 = (uint32_t)(h >> 32) | 1;
    int32_t ids[CACHE_IDS];
    int nids = -1;
    pthread_mutex_lock(&cc->mu[i & (CACHE_LOCKS - 1)]);
    const cslot *s = &cc->slot[i];
    if (s->hash == h32 && s->klen == n && !memcmp(s->key, w, n)) {
        nids = s->nids;
        memcpy(ids, s->ids, (size_t)nids * sizeof *ids);
    }
    pthread_mutex_unlock(&cc->mu[i & (CACHE_LOCKS - 1)]);
    if (nids < 0)
        return CACHE_MISS;
    return ids_append(out, ids, (size_t)nids);
}

static void cache_put(const kd_tokenizer *t, const char *w, size_t n, uint64_t h, const int32_t *ids, size_t nids)
{
    if (n > CACHE_KEY || nids > CACHE_IDS || nids == 0)
        return;
    bpe_cache *cc = &t->rt->cache;
    size_t i = (size_t)(h & (CACHE_SLOTS - 1));
    pthread_mutex_lock(&cc->mu[i & (CACHE_LOCKS - 1)]);
    cslot *s = &cc->slot[i];
    s->hash = (uint32_t)(h >> 32) | 1;
    s->klen = (uint8_t)n;
    s->nids = (uint8_t)nids;
    memcpy(s->key, w, n);
    memcpy(s->ids, ids, nids * sizeof *ids);
    pthread_mutex_unlock(&cc->mu[i & (CACHE_LOCKS - 1)]);
}

/* The vocabulary id of character w[0..cl) at its place in the word (with the
 * continuing-subword prefix / end-of-word suffix where they apply), or -1. */
static int char_token(const kd_tokenizer *t, enc_ctx *c, const char *w, size_t cl, int first, int last,
                      int32_t *id, const char **full, size_t *fulln)
{
    int pre = !first && t->cont_prefix && t->cont_len, suf = last && t->eow_suffix && t->eow_len;
    *full = w, *fulln = cl;
    if (!pre && !suf) {
        if (cl <= 2) {
            size_t l;
            int32_t cp = utf8_cp((const unsigned char *)w, &l);
            if (cp < 512) {
                *id = t->char_id[cp];
                return KD_OK;
            }
        }
        *id = strmap_get(&t->vocab, w, cl);
        return KD_OK;
    }
    c->key.n = 0;
    if (pre)
        KD_TRY(sbuf_put(&c->key, t->cont_prefix, t->cont_len));
    KD_TRY(sbuf_put(&c->key, w, cl));
    if (suf)
        KD_TRY(sbuf_put(&c->key, t->eow_suffix, t->eow_len));
    *full = c->key.p, *fulln = c->key.n;
    *id = strmap_get(&t->vocab, c->key.p, c->key.n);
    return KD_OK;
}

static inline int hent_less(hent a, hent b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static void heap_push(hent *h, size_t *n, hent e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hent_less(e, h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static hent heap_pop(hent *h, size_t *n)
{
    hent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n)
            break;
        if (l + 1 < *n && hent_less(h[l + 1], h[l]))
            l++;
        if (!hent_less(h[l], last))
            break;
        h[i] = h[l];
        i = l;
    }
    if (*n)
        h[i] = last;
    return top;
}

static inline const pslot *merge_of(const kd_tokenizer *t, int32_t a, int32_t b)
{
    return pairmap_get(&t->merges, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
}

static int sym_add(enc_ctx *c, size_t *ns, int32_t id)
{
    KD_TRY(GROW(c->sy, c->sy_cap, *ns + 1));
    c->sy[*ns] = (sym){id, (int32_t)*ns - 1, -1, 1};
    if (*ns)
        c->sy[*ns - 1].next = (int32_t)*ns;
    (*ns)++;
    return KD_OK;
}

/* Tokenize one pre-token w[0..n) and append its ids. */
static int bpe_word(const kd_tokenizer *t, enc_ctx *c, const char *w, size_t n, kd_ids *out)
{
    if (n == 0)
        return KD_OK;
    uint64_t h = hash_bytes(w, n);
    if (t->ignore_merges) { /* the whole pre-token is a token: take it */
        int32_t id = strmap_get_h(&t->vocab, w, n, h);
        if (id >= 0)
            return kd_ids_push(out, id);
    }
    int st = cache_get(t, w, n, h, out);
    if (st != CACHE_MISS)
        return st;

    /* symbols: one per character, as merge_word builds them */
    size_t ns = 0;
    int32_t unk = -1; /* a pending unknown run: its id (fuse_unk joins runs) */
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len((unsigned char)w[i]);
        int32_t id;
        const char *full;
        size_t fulln;
        KD_TRY(char_token(t, c, w + i, cl, i == 0, i + cl == n, &id, &full, &fulln));
        i += cl;
        if (id >= 0) {
            if (unk >= 0) {
                KD_TRY(sym_add(c, &ns, unk));
                unk = -1;
            }
            KD_TRY(sym_add(c, &ns, id));
            continue;
        }
        if (t->byte_fallback) {
            int ok = 1;
            for (size_t j = 0; j < fulln; j++)
                ok &= t->fallback_id[(unsigned char)full[j]] >= 0;
            if (ok) {
                for (size_t j = 0; j < fulln; j++)
                    KD_TRY(sym_add(c, &ns, t->fallback_id[(unsigned char)full[j]]));
                continue;
            }
        }
        if (t->has_unk) {
            if (t->unk_id < 0)
                return kd_err(KD_E_FORMAT, "'%s': model.unk_token '%s' is not in the vocabulary", t->file,
                              t->unk_token);
            if (unk >= 0 && !t->fuse_unk)
                KD_TRY(sym_add(c, &ns, unk));
            unk = t->unk_id;
        }
        /* no unk_token: HF drops the character */
    }
    if (unk >= 0)
        KD_TRY(sym_add(c, &ns, unk));

    /* merge_all: a min-heap of (rank, position) over the linked symbols;
     * entries whose pair has changed since they were pushed are skipped */
    if (ns > 1) {
        KD_TRY(GROW(c->hp, c->hp_cap, 2 * ns + 2));
        size_t nh = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            const pslot *m = merge_of(t, c->sy[i].c, c->sy[i + 1].c);
            if (m)
                heap_push(c->hp, &nh, (hent){(uint32_t)m->a, (uint32_t)i, m->b});
        }
        while (nh) {
            hent top = heap_pop(c->hp, &nh);
            sym *cur = &c->sy[top.pos];
            if (cur->len == 0 || cur->next < 0)
                continue;
            sym right = c->sy[cur->next];
            const pslot *m = merge_of(t, cur->c, right.c);
            if (!m || m->b != top.id)
                continue;
            c->sy[cur->next].len = 0;
            cur->c = top.id;
            cur->len += right.len;
            cur->next = right.next;
            if (right.next >= 0)
                c->sy[right.next].prev = (int32_t)top.pos;
            /* each merge removes a symbol and pushes at most two entries: the
             * heap never holds more than 2 * ns */
            if (nh + 2 > c->hp_cap)
                KD_TRY(GROW(c->hp, c->hp_cap, nh + 2));
            if (cur->prev >= 0) {
                const pslot *pm = merge_of(t, c->sy[cur->prev].c, cur->c);
                if (pm)
                    heap_push(c->hp, &nh, (hent){(uint32_t)pm->a, (uint32_t)cur->prev, pm->b});
            }
            if (cur->next >= 0) {
                const pslot *nm = merge_of(t, cur->c, c->sy[cur->next].c);
                if (nm)
                    heap_push(c->hp, &nh, (hent){(uint32_t)nm->a, top.pos, nm->b});
            }
        }
    }
    size_t before = out->n;
    for (int32_t i = ns ? 0 : -1; i >= 0; i = c->sy[i].next)
        KD_TRY(kd_ids_push(out, c->sy[i].c));
    cache_put(t, w, n, h, out->ids + before, out->n - before);
    return KD_OK;
}

/* --- token offsets (kd_tok_encode_offsets) ---------------------------------- */

static int offv_push(offv *o, size_t v)
{
    KD_TRY(GROW(o->p, o->cap, o->n + 1));
    o->p[o->n++] = v;
    return KD_OK;
}

/* Give the entries up to `n` (the ids appended so far) the offset v. */
static int offv_fill(offv *o, size_t n, size_t v)
{
    while (o->n < n)
        KD_TRY(offv_push(o, v));
    return KD_OK;
}

/* The starts of the k tokens ids[0..k) that the model made of the pre-token
 * w[0..n), which lies at byte `base` of the pre-tokenizer's buffer: offsets in
 * the text given to pretokenize, through `map` (NULL: the buffer is that text).
 * Byte-level tokens spell their piece exactly, so each start is found by
 * walking the token strings; the rare tokens that do not spell their text
 * (byte-fallback "<0xHH>" covers one byte, an unknown token one character)
 * advance by what they stand for. */
static int piece_offsets(const kd_tokenizer *t, const char *w, size_t n, const int32_t *ids, size_t k,
                         const size_t *map, size_t base, offv *ov)
{
    size_t pos = 0;
    for (size_t i = 0; i < k; i++) {
        size_t at = base + (pos < n ? pos : n - 1);
        KD_TRY(offv_push(ov, map ? map[at] : at));
        int32_t id = ids[i];
        const char *s = id >= 0 && id < t->vm ? t->mstr[id] : NULL;
        size_t l = s ? t->mlen[id] : 0;
        if (s && pos > 0 && t->cont_len && l >= t->cont_len && !memcmp(s, t->cont_prefix, t->cont_len))
            s += t->cont_len, l -= t->cont_len;
        if (s && t->eow_len && l >= t->eow_len && pos + l - t->eow_len == n &&
            !memcmp(s + l - t->eow_len, t->eow_suffix, t->eow_len))
            l -= t->eow_len;
        if (s && l && pos + l <= n && !memcmp(w + pos, s, l))
            pos += l;
        else if (s && l == 6 && !memcmp(s, "<0x", 3) && s[5] == '>')
            pos += 1;
        else if (pos < n)
            pos += utf8_len((unsigned char)w[pos]);
    }
    return KD_OK;
}

/* The end of the normalization chunk that starts at o[i]: its first character
 * and the non-starters (canonical combining class > 0) after it. */
static size_t chunk_end(const char *o, size_t on, size_t i)
{
    size_t l;
    utf8_cp((const unsigned char *)o + i, &l);
    i += l;
    while (i < on) {
        int32_t cp = utf8_cp((const unsigned char *)o + i, &l);
        if (utf8proc_get_property(cp)->combining_class == 0)
            break;
        i += l;
    }
    return i;
}

static int sbuf_set(sbuf *b, const char *p, size_t n)
{
    b->n = 0;
    return sbuf_put(b, p, n);
}

/* Align the original text o[0..on) with its normalization z[0..zn): split o
 * into the smallest groups whose normalizations, joined, give z (a group ends
 * before a starter where normalizing it apart changes nothing), and record them
 * in c->al[0..*nal). If the groups do not add up to z (a normalizer that does
 * not work chunk by chunk), one group covers everything. */
static int norm_align(const kd_tokenizer *t, enc_ctx *c, const char *o, size_t on, const char *z, size_t zn,
                      size_t *nal)
{
    size_t na = 0, zpos = 0, gs = 0, ge = chunk_end(o, on, 0);
    const char *r;
    size_t rn;
    int ok = 1;
    KD_TRY(normalize(t, c->anorm, o, ge, &r, &rn));
    KD_TRY(sbuf_set(&c->agrp, r, rn));
    for (;;) {
        size_t ce = ge < on ? chunk_end(o, on, ge) : on;
        int split = 1;
        if (ge < on) { /* does chunk [ge, ce) normalize apart from the group? */
            KD_TRY(normalize(t, c->anorm, o + ge, ce - ge, &r, &rn));
            KD_TRY(sbuf_set(&c->achunk, r, rn));
            KD_TRY(normalize(t, c->anorm, o + gs, ce - gs, &r, &rn));
            split = rn == c->agrp.n + c->achunk.n && !memcmp(r, c->agrp.p, c->agrp.n) &&
                    !memcmp(r + c->agrp.n, c->achunk.p, c->achunk.n);
            if (!split) {
                KD_TRY(sbuf_set(&c->agrp, r, rn));
                ge = ce;
                continue;
            }
        }
        /* the group [gs, ge) is final */
        if (zpos + c->agrp.n > zn || memcmp(z + zpos, c->agrp.p, c->agrp.n))
            ok = 0;
        KD_TRY(GROW(c->al, c->al_cap, na + 1));
        c->al[na++] = (nalign){zpos, gs, c->agrp.n == ge - gs && !memcmp(c->agrp.p, o + gs, ge - gs)};
        zpos += c->agrp.n;
        if (!ok || ge >= on)
            break;
        gs = ge;
        ge = ce;
        KD_TRY(sbuf_set(&c->agrp, c->achunk.p, c->achunk.n));
    }
    if (!ok || zpos != zn) {
        c->al[0] = (nalign){0, 0, 0};
        na = 1;
    }
    *nal = na;
    return KD_OK;
}

/* The original offset of normalized offset v (see nalign). */
static size_t align_of(const nalign *al, size_t na, size_t v)
{
    size_t lo = 0, hi = na; /* the last group with norm <= v */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (al[mid].norm <= v)
            lo = mid;
        else
            hi = mid;
    }
    return al[lo].same ? al[lo].orig + (v - al[lo].norm) : al[lo].orig;
}

/* --- one text ---------------------------------------------------------------- */

/* Tokenize s[0..n) (text between added tokens) and append the ids; with ov,
 * also the start of each token as an offset in s. */
static int encode_text(const kd_tokenizer *t, enc_ctx *c, const char *s, size_t n, kd_ids *out, offv *ov)
{
    const char *buf;
    int which;
    size_t np;
    const size_t *map = NULL;
    KD_TRY(pretokenize(t, c, s, n, &buf, &which, &np, ov ? &map : NULL));
    for (size_t i = 0; i < np; i++) {
        span p = c->sp[which][i];
        size_t before = out->n;
        int done = 0;
        if (p.len == utf8_len((unsigned char)buf[p.off]) && !t->cont_prefix && !t->eow_suffix) {
            /* one character: its own token when it has one */
            int32_t id;
            const char *full;
            size_t fulln;
            KD_TRY(char_token(t, c, buf + p.off, p.len, 1, 1, &id, &full, &fulln));
            if (id >= 0) {
                KD_TRY(kd_ids_push(out, id));
                done = 1;
            }
        }
        if (!done)
            KD_TRY(bpe_word(t, c, buf + p.off, p.len, out));
        if (ov)
            KD_TRY(piece_offsets(t, buf + p.off, p.len, out->ids + before, out->n - before, map, p.off, ov));
    }
    return KD_OK;
}

/* Encode text[0..len) and append the ids to out; with ov (offsets wanted),
 * append to ov the start in text of each id appended. */
static int encode_ctx(const kd_tokenizer *t, enc_ctx *c, const char *text, size_t len, int add_special, kd_ids *out,
                      offv *ov)
{
    KD_TRY(utf8_validate(text, len));
    size_t n0 = out->n;
    if (add_special) {
        KD_TRY(ids_append(out, t->pre_ids, t->npre));
        if (ov)
            KD_TRY(offv_fill(ov, out->n - n0, 0));
    }
    /* 1. added tokens that match the raw text */
    size_t nraw;
    KD_TRY(split_added(t, &t->raw_trie, text, len, &c->sraw, &c->sraw_cap, &nraw));
    for (size_t i = 0; i < nraw; i++) {
        seg g = c->sraw[i];
        if (g.id >= 0) {
            KD_TRY(kd_ids_push(out, g.id));
            if (ov)
                KD_TRY(offv_push(ov, g.off));
            continue;
        }
        /* 2. normalize the text between them, 3. added tokens that match the
         * normalized text, 4. pre-tokenize and tokenize the rest */
        const char *s;
        size_t sn, nn, nal = 0;
        KD_TRY(normalize(t, c->norm, text + g.off, g.len, &s, &sn));
        int same = sn == g.len && !memcmp(s, text + g.off, sn);
        if (ov && !same)
            KD_TRY(norm_align(t, c, text + g.off, g.len, s, sn, &nal));
        KD_TRY(split_added(t, &t->norm_trie, s, sn, &c->snorm, &c->snorm_cap, &nn));
        for (size_t j = 0; j < nn; j++) {
            seg h = c->snorm[j];
            size_t k0 = ov ? ov->n : 0;
            if (h.id >= 0) {
                KD_TRY(kd_ids_push(out, h.id));
                if (ov)
                    KD_TRY(offv_push(ov, 0));
            } else {
                KD_TRY(encode_text(t, c, s + h.off, h.len, out, ov));
            }
            /* offsets in h -> in s -> in the original segment -> in text */
            for (size_t k = k0; ov && k < ov->n; k++) {
                size_t v = h.off + ov->p[k];
                ov->p[k] = g.off + (same ? v : align_of(c->al, nal, v));
            }
        }
    }
    if (add_special) {
        KD_TRY(ids_append(out, t->post_ids, t->npost));
        if (ov)
            KD_TRY(offv_fill(ov, out->n - n0, len));
    }
    return KD_OK;
}

int kd_tok_encode(const kd_tokenizer *t, const char *text, size_t len, int add_special, kd_ids *out)
{
    enc_ctx *c = NULL;
    size_t n0 = out->n;
    if (!text && len)
        return kd_err(KD_E_INTERNAL, "kd_tok_encode: NULL text");
    KD_TRY(ctx_get(t, &c));
    int st = encode_ctx(t, c, text ? text : "", len, add_special, out, NULL);
    ctx_put(t, c);
    if (st != KD_OK)
        out->n = n0;
    return st;
}

int kd_tok_encode_offsets(const kd_tokenizer *t, const char *text, size_t len, int add_special, kd_ids *out,
                          uint32_t **offsets)
{
    enc_ctx *c = NULL;
    size_t n0 = out->n;
    if (!text && len)
        return kd_err(KD_E_INTERNAL, "kd_tok_encode_offsets: NULL text");
    if (len > UINT32_MAX)
        return kd_err(KD_E_RANGE, "a text of %zu bytes is too long for 32-bit token offsets", len);
    KD_TRY(ctx_get(t, &c));
    offv ov = {0};
    int st = encode_ctx(t, c, text ? text : "", len, add_special, out, &ov);
    ctx_put(t, c);
    if (st == KD_OK && ov.n != out->n - n0)
        st = kd_err(KD_E_INTERNAL, "kd_tok_encode_offsets: %zu offsets for %zu tokens", ov.n, out->n - n0);
    if (st == KD_OK) {
        uint32_t *p = realloc(*offsets, (out->n ? out->n : 1) * sizeof *p);
        if (!p)
            st = kd_err(KD_E_NOMEM, "cannot allocate %zu token offsets", out->n);
        else {
            for (size_t i = 0; i < ov.n; i++)
                p[n0 + i] = (uint32_t)ov.p[i];
            *offsets = p;
        }
    }
    free(ov.p);
    if (st != KD_OK)
        out->n = n0;
    return st;
}

/* ======================================================================== */
/* 5. Batch encoding                                                        */
/* ======================================================================== */

typedef struct {
    const kd_tokenizer *t;
    const char *const *texts;
    const size_t *lens;
    size_t n;
    int add_special;
    kd_ids *outs;
    _Atomic size_t next;
    _Atomic int stop;
    pthread_mutex_t mu;
    size_t err_index; /* lowest failing index, n if none */
    int err_code;
    char err_msg[1024];
} batch_job;

static void *batch_worker(void *arg)
{
    batch_job *b = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&b->next, 1);
        if (i >= b->n || atomic_load(&b->stop))
            break;
        const char *s = b->texts[i];
        size_t len = b->lens ? b->lens[i] : (s ? strlen(s) : 0);
        int st = kd_tok_encode(b->t, s, len, b->add_special, &b->outs[i]);
        if (st != KD_OK) {
            pthread_mutex_lock(&b->mu);
            if (i < b->err_index) {
                /* keep the context without its "NAME: " prefix; the main
                 * thread re-records it (error context is per thread) */
                const char *msg = kd_strerror(st), *name = kd_status_name(st);
                size_t k = strlen(name);
                if (!strncmp(msg, name, k) && msg[k] == ':')
                    msg += k + 2;
                b->err_index = i;
                b->err_code = st;
                snprintf(b->err_msg, sizeof b->err_msg, "%s", msg);
            }
            pthread_mutex_unlock(&b->mu);
            atomic_store(&b->stop, 1);
        }
    }
    return NULL;
}

int kd_tok_encode_batch(const kd_tokenizer *t, const char *const *texts, const size_t *lens, size_t n,
                        int add_special, int nthreads, kd_ids *outs)
{
    if (n == 0)
        return KD_OK;
    if (nthreads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cpus > 0 ? (int)cpus : 1;
    }
    if ((size_t)nthreads > n)
        nthreads = (int)n;
    batch_job b = {.t = t, .texts = texts, .lens = lens, .n = n, .add_special = add_special, .outs = outs,
                   .err_index = n};
    atomic_init(&b.next, 0);
    atomic_init(&b.stop, 0);
    pthread_mutex_init(&b.mu, NULL);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    if (!th) {
        pthread_mutex_destroy(&b.mu);
        return kd_err(KD_E_NOMEM, "cannot allocate %d threads", nthreads);
    }
    int started = 0, st = KD_OK;
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&th[i], NULL, batch_worker, &b) != 0) {
            st = kd_err(KD_E_INTERNAL, "cannot start a tokenizer thread");
            atomic_store(&b.stop, 1);
            break;
        }
        started++;
    }
    batch_worker(&b); /* the calling thread works too */
    for (int i = 1; i <= started; i++)
        pthread_join(th[i], NULL);
    free(th);
    pthread_mutex_destroy(&b.mu);
    if (b.err_index < n)
        return kd_err(b.err_code, "text %zu: %s", b.err_index, b.err_msg);
    return st;
}

/* ======================================================================== */
/* 6. Decoding                                                              */
/* ======================================================================== */

static int check_id(const kd_tokenizer *t, int32_t id, size_t pos)
{
    if (id < 0 || id >= t->V || !(t->dflag[id] & DF_EXISTS))
        return kd_err(KD_E_RANGE, "id %d at position %zu is not a token of '%s' (vocab size %d)", (int)id, pos,
                      t->file, (int)t->V);
    return KD_OK;
}

int kd_tok_decode(const kd_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out, size_t *len)
{
    *out = NULL;
    if (len)
        *len = 0;
    sbuf raw = {0}, fixed = {0};
    int st = KD_OK, any = 0;
    for (size_t i = 0; i < n && st == KD_OK; i++) {
        if ((st = check_id(t, ids[i], i)) != KD_OK)
            break;
        if (skip_special && (t->dflag[ids[i]] & DF_SPECIAL))
            continue;
        if (!t->dec_bytelevel && any)
            st = sbuf_put(&raw, " ", 1);
        if (st == KD_OK)
            st = sbuf_put(&raw, t->dblob + t->doff[ids[i]], t->dlen[ids[i]]);
        any = 1;
    }
    if (st == KD_OK)
        st = GROW(raw.p, raw.cap, raw.n + 1);
    if (st == KD_OK && t->dec_bytelevel) { /* String::from_utf8_lossy */
        size_t used;
        int trunc;
        if (utf8_check(raw.p, raw.n, &trunc) != raw.n) {
            st = utf8_lossy(&fixed, (const unsigned char *)raw.p, raw.n, 1, &used);
            if (st == KD_OK)
                st = GROW(fixed.p, fixed.cap, fixed.n + 1);
            free(raw.p);
            raw = fixed;
        }
    }
    if (st != KD_OK) {
        free(raw.p);
        return st;
    }
    raw.p[raw.n] = 0;
    *out = raw.p;
    if (len)
        *len = raw.n;
    return KD_OK;
}

void kd_tok_stream_init(kd_tok_stream *s, const kd_tokenizer *tok, int skip_special)
{
    memset(s, 0, sizeof *s);
    s->tok = tok;
    s->skip_special = skip_special;
}

void kd_tok_stream_release(kd_tok_stream *s)
{
    if (!s)
        return;
    free(s->in);
    free(s->buf);
    s->in = s->buf = NULL;
    s->in_cap = s->buf_cap = 0;
    s->ntail = 0;
    s->started = 0;
}

/* Turn tail + bytes into complete text in s->buf; keep an unfinished end. */
static int stream_emit(kd_tok_stream *s, const char *bytes, size_t n, int final, const char **text, size_t *len)
{
    sbuf in = {s->in, 0, s->in_cap}, out = {s->buf, 0, s->buf_cap};
    int st = sbuf_put(&in, s->tail, s->ntail);
    if (st == KD_OK)
        st = sbuf_put(&in, bytes, n);
    s->in = in.p, s->in_cap = in.cap;
    if (st != KD_OK)
        return st;
    size_t used = in.n;
    if (s->tok->dec_bytelevel)
        st = utf8_lossy(&out, (const unsigned char *)in.p, in.n, final, &used);
    else
        st = sbuf_put(&out, in.p, in.n);
    s->buf = out.p, s->buf_cap = out.cap;
    if (st != KD_OK)
        return st;
    s->ntail = in.n - used;
    memcpy(s->tail, in.p + used, s->ntail);
    *text = out.p ? out.p : "";
    *len = out.n;
    return KD_OK;
}

int kd_tok_stream_push(kd_tok_stream *s, int32_t id, const char **text, size_t *len)
{
    const kd_tokenizer *t = s->tok;
    *text = "", *len = 0;
    KD_TRY(check_id(t, id, 0));
    if (s->skip_special && (t->dflag[id] & DF_SPECIAL))
        return KD_OK;
    if (!t->dec_bytelevel && s->started) {
        /* the null decoder joins tokens with spaces */
        sbuf sp = {0};
        KD_TRY(sbuf_put(&sp, " ", 1));
        int st = sbuf_put(&sp, t->dblob + t->doff[id], t->dlen[id]);
        if (st == KD_OK)
            st = stream_emit(s, sp.p, sp.n, 0, text, len);
        free(sp.p);
        s->started = 1;
        return st;
    }
    s->started = 1;
    return stream_emit(s, t->dblob + t->doff[id], t->dlen[id], 0, text, len);
}

int kd_tok_stream_finish(kd_tok_stream *s, const char **text, size_t *len)
{
    *text = "", *len = 0;
    KD_TRY(stream_emit(s, "", 0, 1, text, len));
    s->ntail = 0;
    s->started = 0;
    return KD_OK;
}

/* ======================================================================== */
/* 7. Accessors                                                             */
/* ======================================================================== */

int32_t kd_tok_token_to_id(const kd_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    int32_t ai = strmap_get(&t->amap, token, n);
    if (ai >= 0)
        return t->added[ai].id;
    return strmap_get(&t->vocab, token, n);
}

const char *kd_tok_id_to_token(const kd_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->V)
        return NULL;
    if (t->added_of[id] >= 0)
        return t->added[t->added_of[id]].content;
    return id < t->vm ? t->mstr[id] : NULL;
}

int32_t kd_tok_vocab_size(const kd_tokenizer *t) { return t->V; }

uint64_t kd_tok_fingerprint(const kd_tokenizer *t)
{
    uint64_t h = 1469598103934665603ull;
    for (int32_t id = 0; id < t->V; id++) {
        const char *s = kd_tok_id_to_token(t, id);
        if (!s) {
            h = (h ^ 0xffu) * 1099511628211ull;
            continue;
        }
        for (; *s; s++)
            h = (h ^ (unsigned char)*s) * 1099511628211ull;
        h = (h ^ 0u) * 1099511628211ull; /* the terminator separates tokens */
    }
    return h;
}

int kd_tok_is_special(const kd_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->V && (t->dflag[id] & DF_SPECIAL) != 0;
}

const char *kd_tok_bos_token(const kd_tokenizer *t) { return t->bos; }
const char *kd_tok_eos_token(const kd_tokenizer *t) { return t->eos; }
const char *kd_tok_pad_token(const kd_tokenizer *t) { return t->pad; }
int32_t kd_tok_bos_id(const kd_tokenizer *t) { return t->bos_id; }
int32_t kd_tok_eos_id(const kd_tokenizer *t) { return t->eos_id; }
int32_t kd_tok_pad_id(const kd_tokenizer *t) { return t->pad_id; }
const char *kd_tok_chat_template(const kd_tokenizer *t) { return t->chat_template; }
