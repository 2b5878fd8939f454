/* test_safetensors.c - the safetensors reader and writer: round trips of every
 * dtype, sharded folders, a corpus of broken files built byte by byte, and the
 * HF-written fixture. */
#include "test.h"

#include "core/safetensors.h"
#include "core/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP KD_TEST_TMP "/safetensors"

static void mkdir_p_(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        FAIL_("mkdir '%s': %s", path, strerror(errno));
}

static void write_bytes_(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        FAIL_("cannot create '%s'", path);
        return;
    }
    if (len && fwrite(buf, 1, len, f) != len)
        FAIL_("cannot write '%s'", path);
    fclose(f);
}

static void write_text_(const char *path, const char *text)
{
    write_bytes_(path, text, strlen(text));
}

/* A file image: the 8-byte length `hlen` (which may lie), the header text,
 * then `dlen` data bytes (0, 1, 2, ...). Returns its size; *out is malloc'd. */
static size_t image_(uint64_t hlen, const char *header, size_t dlen, unsigned char **out)
{
    size_t n = strlen(header), len = 8 + n + dlen;
    unsigned char *b = malloc(len);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, header, n);
    for (size_t i = 0; i < dlen; i++)
        b[8 + n + i] = (unsigned char)i;
    *out = b;
    return len;
}

/* ---- round trips -------------------------------------------------------- */

/* Fill n bytes with a pattern that differs per tensor. */
static void fill_(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 31u + i * 7u + (i >> 8));
}

typedef struct rt_tensor {
    const char *name;
    kd_dtype dtype;
    int ndim;
    int64_t shape[KD_ST_MAX_DIMS];
    size_t nbytes;
    unsigned char *data;
} rt_tensor;

/* Given in no particular order on purpose; the file must come back sorted. */
static rt_tensor rt_[] = {
    {"model.layers.0.mlp.up_proj.weight", KD_BF16, 2, {16, 8}, 0, NULL},
    {"a.f32", KD_F32, 3, {2, 3, 5}, 0, NULL},
    {"z.f16", KD_F16, 1, {7}, 0, NULL},
    {"fp8.weight", KD_F8_E4M3, 2, {4, 9}, 0, NULL},
    {"ids.i64", KD_I64, 1, {3}, 0, NULL},
    {"ids.i32", KD_I32, 2, {1, 5}, 0, NULL},
    {"bytes.u8", KD_U8, 1, {13}, 0, NULL}, /* odd size: later tensors land unaligned */
    {"mask.bool", KD_BOOL, 2, {2, 2}, 0, NULL},
    {"scalar", KD_F32, 0, {0}, 0, NULL},
    {"empty", KD_I32, 2, {0, 4}, 0, NULL},
    {"b.empty_too", KD_F16, 1, {0}, 0, NULL},
};
#define RT_N (sizeof rt_ / sizeof rt_[0])

static int cmp_name_(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void write_rt_(const char *path)
{
    kd_st_writer *w;
    CHECK_OK(kd_st_writer_new(&w));
    CHECK_OK(kd_st_writer_meta(w, "format", "pt"));
    CHECK_OK(kd_st_writer_meta(w, "note", "written by test_safetensors"));
    for (size_t i = 0; i < RT_N; i++) {
        rt_tensor *t = &rt_[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= (size_t)t->shape[d];
        t->nbytes = numel * kd_dtype_size(t->dtype);
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        fill_(t->data, t->nbytes, (unsigned)i + 1);
        if (t->dtype == KD_BOOL)
            for (size_t j = 0; j < t->nbytes; j++)
                t->data[j] &= 1;
        CHECK_OK(kd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->nbytes ? t->data : NULL));
    }
    CHECK_OK(kd_st_writer_write(w, path));
    kd_st_writer_free(w);
}

TEST(roundtrip_every_dtype)
{
    const char *path = TMP "/roundtrip.safetensors";
    write_rt_(path);

    kd_st *st;
    CHECK_OK(kd_st_open(path, &st));
    if (!st)
        return;
    CHECK_EQ_INT(kd_st_count(st), RT_N);
    CHECK_EQ_INT(kd_st_shard_count(st), 1);
    CHECK_STR(kd_st_shard_path(st, 0), path);
    CHECK_STR(kd_st_metadata(st, "format"), "pt");
    CHECK_STR(kd_st_metadata(st, "note"), "written by test_safetensors");
    CHECK(kd_st_metadata(st, "absent") == NULL);

    /* kd_st_at walks in name order */
    const char *names[RT_N];
    for (size_t i = 0; i < RT_N; i++)
        names[i] = rt_[i].name;
    qsort(names, RT_N, sizeof names[0], cmp_name_);
    for (size_t i = 0; i < RT_N; i++)
        CHECK_STR(kd_st_at(st, i)->name, names[i]);

    for (size_t i = 0; i < RT_N; i++) {
        const rt_tensor *e = &rt_[i];
        const kd_st_tensor *t = kd_st_find(st, e->name);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK_STR(t->name, e->name);
        CHECK_EQ_INT(t->dtype, e->dtype);
        CHECK_EQ_INT(t->ndim, e->ndim);
        for (int d = 0; d < e->ndim; d++)
            CHECK_EQ_INT(t->shape[d], e->shape[d]);
        CHECK_EQ_INT(t->nbytes, e->nbytes);
        CHECK_EQ_INT(t->numel, e->nbytes / kd_dtype_size(e->dtype));
        CHECK_EQ_INT(t->shard, 0);
        CHECK(e->nbytes == 0 || memcmp(t->data, e->data, e->nbytes) == 0);
    }
    const kd_st_tensor *s = kd_st_find(st, "scalar");
    CHECK(s && s->ndim == 0 && s->numel == 1 && s->nbytes == 4);
    const kd_st_tensor *z = kd_st_find(st, "empty");
    CHECK(z && z->numel == 0 && z->nbytes == 0);
    CHECK(kd_st_find(st, "nope") == NULL);
    CHECK(kd_st_find(st, "") == NULL);
    kd_st_free(st);

    /* the bytes on disk: header padded with spaces to a multiple of 8 */
    char *buf;
    size_t len;
    CHECK_OK(kd_read_file(path, 1 << 20, &buf, &len));
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | (unsigned char)buf[i];
    CHECK_EQ_INT(n % 8, 0);
    CHECK(buf[8] == '{');
    size_t end = 8 + (size_t)n;
    while (end > 8 && buf[end - 1] == ' ')
        end--;
    CHECK(buf[end - 1] == '}');
    CHECK(8 + n - end < 8);
    CHECK_OK(kd_st_validate(buf, len, "in memory"));
    free(buf);
}

/* A fast structure against a slow obvious one: bsearch vs a linear scan. */
TEST(find_matches_linear_scan)
{
    kd_st *st;
    CHECK_OK(kd_st_open(TMP "/roundtrip.safetensors", &st));
    if (!st)
        return;
    for (size_t i = 0; i < RT_N; i++) {
        const kd_st_tensor *slow = NULL;
        for (size_t j = 0; j < kd_st_count(st); j++)
            if (strcmp(kd_st_at(st, j)->name, rt_[i].name) == 0)
                slow = kd_st_at(st, j);
        CHECK(slow != NULL && kd_st_find(st, rt_[i].name) == slow);
    }
    for (size_t j = 1; j < kd_st_count(st); j++)
        CHECK(strcmp(kd_st_at(st, j - 1)->name, kd_st_at(st, j)->name) < 0);
    kd_st_free(st);
}

TEST(writer_rejects)
{
    kd_st_writer *w;
    CHECK_OK(kd_st_writer_new(&w));
    float x[4] = {1, 2, 3, 4};
    int64_t shape[KD_ST_MAX_DIMS + 1] = {4, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_OK(kd_st_writer_add(w, "x", KD_F32, 1, shape, x));
    CHECK_ERR(kd_st_writer_add(w, "x", KD_F32, 1, shape, x), KD_E_FORMAT, "'x' is added twice");
    CHECK_ERR(kd_st_writer_add(w, "__metadata__", KD_F32, 1, shape, x), KD_E_FORMAT, "reserved");
    CHECK_ERR(kd_st_writer_add(w, "y", KD_F32, KD_ST_MAX_DIMS + 1, shape, x), KD_E_RANGE, "9 dims");
    CHECK_ERR(kd_st_writer_add(w, "y", KD_F32, -1, shape, x), KD_E_RANGE, "-1 dims");
    int64_t neg[2] = {2, -2};
    CHECK_ERR(kd_st_writer_add(w, "y", KD_F32, 2, neg, x), KD_E_RANGE, "negative");
    int64_t huge[2] = {INT64_C(1) << 40, INT64_C(1) << 40};
    CHECK_ERR(kd_st_writer_add(w, "y", KD_F32, 2, huge, x), KD_E_RANGE, "overflow");
    CHECK_ERR(kd_st_writer_add(w, "bad\xff", KD_F32, 1, shape, x), KD_E_UTF8, "UTF-8");
    CHECK_ERR(kd_st_writer_meta(w, "k", "bad\xff"), KD_E_UTF8, "UTF-8");
    /* the failed adds left the writer usable: a file with just "x" */
    CHECK_OK(kd_st_writer_write(w, TMP "/after_rejects.safetensors"));
    kd_st_writer_free(w);
    kd_st *st;
    CHECK_OK(kd_st_open(TMP "/after_rejects.safetensors", &st));
    if (st) {
        CHECK_EQ_INT(kd_st_count(st), 1);
        CHECK(kd_st_metadata(st, "k") == NULL);
        kd_st_free(st);
    }
    CHECK_OK(kd_st_writer_new(&w));
    CHECK_ERR(kd_st_writer_write(w, TMP "/no/such/folder/x.safetensors"), KD_E_IO, "no/such/folder");
    kd_st_writer_free(w);
}

TEST(zero_tensors)
{
    kd_st_writer *w;
    CHECK_OK(kd_st_writer_new(&w));
    CHECK_OK(kd_st_writer_write(w, TMP "/none.safetensors"));
    kd_st_writer_free(w);
    kd_st *st;
    CHECK_OK(kd_st_open(TMP "/none.safetensors", &st));
    if (st) {
        CHECK_EQ_INT(kd_st_count(st), 0);
        CHECK(kd_st_find(st, "x") == NULL);
        CHECK(kd_st_metadata(st, "format") == NULL);
        kd_st_free(st);
    }
}

/* ---- folders and shards ------------------------------------------------- */

/* Write a shard holding tensors `names` (F32, shape [k+1] for the k-th). */
static void write_shard_(const char *path, const char **names, int n, const char *format)
{
    static float data[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    kd_st_writer *w;
    CHECK_OK(kd_st_writer_new(&w));
    if (format)
        CHECK_OK(kd_st_writer_meta(w, "format", format));
    for (int i = 0; i < n; i++) {
        int64_t shape[1] = {i + 1};
        CHECK_OK(kd_st_writer_add(w, names[i], KD_F32, 1, shape, data));
    }
    CHECK_OK(kd_st_writer_write(w, path));
    kd_st_writer_free(w);
}

#define SHARDED TMP "/sharded"
#define S1 "model-00001-of-00003.safetensors"
#define S2 "model-00002-of-00003.safetensors"
#define S3 "model-00003-of-00003.safetensors"

static void write_index_(const char *dir, const char *weight_map)
{
    char path[1024], text[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    snprintf(text, sizeof text, "{\"metadata\": {\"total_size\": 100},\n \"weight_map\": {%s}}\n", weight_map);
    write_text_(path, text);
}

static const char *sh1_[] = {"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"};
static const char *sh2_[] = {"model.layers.0.mlp.down_proj.weight", "model.layers.1.input_layernorm.weight",
                             "model.layers.1.mlp.down_proj.weight"};
static const char *sh3_[] = {"lm_head.weight", "model.norm.weight"};

#define GOOD_MAP                                                                                    \
    "\"model.embed_tokens.weight\": \"" S1 "\", \"model.layers.0.input_layernorm.weight\": \"" S1 "\"," \
    "\"model.layers.0.mlp.down_proj.weight\": \"" S2 "\", \"model.layers.1.input_layernorm.weight\": \"" S2 "\"," \
    "\"model.layers.1.mlp.down_proj.weight\": \"" S2 "\","                                          \
    "\"lm_head.weight\": \"" S3 "\", \"model.norm.weight\": \"" S3 "\""

TEST(sharded_folder)
{
    mkdir_p_(SHARDED);
    write_shard_(SHARDED "/" S1, sh1_, 2, "pt");
    write_shard_(SHARDED "/" S2, sh2_, 3, "second");
    write_shard_(SHARDED "/" S3, sh3_, 2, NULL);
    write_index_(SHARDED, GOOD_MAP);

    kd_st *st;
    CHECK_OK(kd_st_open(SHARDED, &st));
    if (!st)
        return;
    CHECK_EQ_INT(kd_st_count(st), 7);
    CHECK_EQ_INT(kd_st_shard_count(st), 3);
    CHECK_STR(kd_st_shard_path(st, 0), SHARDED "/" S1);
    CHECK_STR(kd_st_shard_path(st, 2), SHARDED "/" S3);
    CHECK_STR(kd_st_metadata(st, "format"), "pt"); /* the first shard's */

    const kd_st_tensor *t = kd_st_find(st, "model.embed_tokens.weight");
    CHECK(t && t->shard == 0 && t->numel == 1 && ((const float *)t->data)[0] == 1.0f);
    t = kd_st_find(st, "model.layers.1.mlp.down_proj.weight");
    CHECK(t && t->shard == 1 && t->numel == 3);
    if (t) {
        float v[3];
        memcpy(v, t->data, sizeof v); /* data is not aligned beyond 1 */
        CHECK(v[0] == 1.0f && v[2] == 3.0f);
    }
    t = kd_st_find(st, "model.norm.weight");
    CHECK(t && t->shard == 2 && t->shape[0] == 2);
    CHECK_STR(kd_st_at(st, 0)->name, "lm_head.weight");
    for (size_t i = 1; i < kd_st_count(st); i++)
        CHECK(strcmp(kd_st_at(st, i - 1)->name, kd_st_at(st, i)->name) < 0);
    kd_st_free(st);
}

/* Each bad folder gets its own copy of the three good shards. */
static void bad_folder_(const char *dir)
{
    char p[1024];
    mkdir_p_(dir);
    snprintf(p, sizeof p, "%s/%s", dir, S1);
    write_shard_(p, sh1_, 2, "pt");
    snprintf(p, sizeof p, "%s/%s", dir, S2);
    write_shard_(p, sh2_, 3, NULL);
    snprintf(p, sizeof p, "%s/%s", dir, S3);
    write_shard_(p, sh3_, 2, NULL);
}

static void check_bad_index_(const char *dir, const char *weight_map, int code, const char *needle)
{
    bad_folder_(dir);
    write_index_(dir, weight_map);
    kd_st *st = (kd_st *)1;
    int rc = kd_st_open(dir, &st);
    CHECK_ERR(rc, code, needle);
    CHECK(st == NULL);
}

TEST(sharded_folder_errors)
{
    /* a weight map naming a tensor that its shard does not hold */
    check_bad_index_(TMP "/bad_missing_tensor", GOOD_MAP ", \"model.ghost.weight\": \"" S2 "\"", KD_E_FORMAT,
                     "tensor 'model.ghost.weight' in '" S2 "', which does not hold it");
    /* a weight map naming a shard file that is not there */
    unlink(TMP "/bad_missing_file/model-00004-of-00003.safetensors");
    check_bad_index_(TMP "/bad_missing_file", GOOD_MAP ", \"x\": \"model-00004-of-00003.safetensors\"",
                     KD_E_NOTFOUND, "model-00004-of-00003.safetensors");
    /* a tensor listed under the wrong shard */
    check_bad_index_(TMP "/bad_wrong_shard",
                     "\"model.embed_tokens.weight\": \"" S2 "\", \"lm_head.weight\": \"" S3 "\","
                     "\"model.layers.0.input_layernorm.weight\": \"" S1 "\"",
                     KD_E_FORMAT,
                     "but it is in '" S1 "'");
    /* shard names must stay inside the folder */
    check_bad_index_(TMP "/bad_path", "\"a\": \"../roundtrip.safetensors\"", KD_E_FORMAT, "plain file name");
    check_bad_index_(TMP "/bad_path", "\"a\": \"sub/x.safetensors\"", KD_E_FORMAT, "plain file name");
    check_bad_index_(TMP "/bad_path", "\"a\": 3", KD_E_FORMAT, "not a file name");
    check_bad_index_(TMP "/bad_empty_map", "", KD_E_FORMAT, "weight_map is empty");

    /* the same tensor in two shards */
    const char *dup[] = {"model.norm.weight"};
    bad_folder_(TMP "/bad_dup");
    write_shard_(TMP "/bad_dup/extra.safetensors", dup, 1, NULL);
    write_index_(TMP "/bad_dup", GOOD_MAP ", \"x\": \"extra.safetensors\"");
    kd_st *st;
    CHECK_ERR(kd_st_open(TMP "/bad_dup", &st), KD_E_FORMAT,
              "tensor 'model.norm.weight' is in two shards, 'extra.safetensors' and '" S3 "'");

    /* a broken shard is reported under its own path */
    mkdir_p_(TMP "/bad_shard");
    write_text_(TMP "/bad_shard/" S1, "garbage");
    write_index_(TMP "/bad_shard", "\"a\": \"" S1 "\"");
    CHECK_ERR(kd_st_open(TMP "/bad_shard", &st), KD_E_FORMAT, "bad_shard/" S1 "': file is 7 bytes");

    /* an index that is not JSON, or has no weight_map */
    mkdir_p_(TMP "/bad_index");
    write_text_(TMP "/bad_index/model.safetensors.index.json", "{\"weight_map\": {\n  \"a\": }");
    CHECK_ERR(kd_st_open(TMP "/bad_index", &st), KD_E_FORMAT, "line 2");
    write_text_(TMP "/bad_index/model.safetensors.index.json", "{\"metadata\": {}}");
    CHECK_ERR(kd_st_open(TMP "/bad_index", &st), KD_E_FORMAT, "missing key 'weight_map'");
}

TEST(single_file_folder)
{
    mkdir_p_(TMP "/single");
    unlink(TMP "/single/model.safetensors.index.json");
    const char *names[] = {"w"};
    write_shard_(TMP "/single/model.safetensors", names, 1, "pt");
    kd_st *st;
    CHECK_OK(kd_st_open(TMP "/single", &st));
    if (st) {
        CHECK_EQ_INT(kd_st_count(st), 1);
        CHECK_EQ_INT(kd_st_shard_count(st), 1);
        CHECK_STR(kd_st_shard_path(st, 0), TMP "/single/model.safetensors");
        CHECK_STR(kd_st_metadata(st, "format"), "pt");
        kd_st_free(st);
    }
    CHECK_OK(kd_st_open(TMP "/single/", &st)); /* a trailing slash is fine */
    kd_st_free(st);

    mkdir_p_(TMP "/empty_folder");
    CHECK_ERR(kd_st_open(TMP "/empty_folder", &st), KD_E_NOTFOUND, "has neither");
    CHECK(st == NULL);
    CHECK_ERR(kd_st_open(TMP "/does_not_exist.safetensors", &st), KD_E_NOTFOUND, "does_not_exist");
    CHECK(st == NULL);
}

/* ---- broken files ------------------------------------------------------- */

/* One broken file: a header (its length is strlen unless `hlen` is set) and
 * `dlen` data bytes, and what opening it must say. */
typedef struct bad_case {
    const char *what;
    uint64_t hlen; /* 0: strlen(header), which may itself be 0 */
    const char *header;
    size_t dlen;
    const char *needle;
} bad_case;

#define T1(d, shape, off) "{\"t\":{\"dtype\":\"" d "\",\"shape\":" shape ",\"data_offsets\":" off "}}"

static const bad_case bad_[] = {
    {"header length past EOF", 100, "{}", 0, "header length 100 runs past the end of the file (10 bytes)"},
    {"header length 100 MB + 1", 100000001, "{}", 0, "header length 100000001 exceeds the limit"},
    {"header length 2^64-1", UINT64_MAX, "{}", 0, "header length 18446744073709551615 exceeds the limit"},
    {"header length 0", 0, "", 0, "header length 0 is too small"},
    {"header length 1", 1, "{", 0, "header length 1 is too small"},
    {"not JSON", 0, "{\"t\": nope}", 0, "header is not valid JSON"},
    {"not JSON, second line", 0, "{\n\"a\": [1,}", 0, "line 2"},
    {"trailing JSON", 0, "{} {}", 0, "header is not valid JSON"},
    {"not UTF-8", 0, "{\"\xff\": 1}", 0, "header is not valid JSON"},
    {"JSON array", 0, "[1, 2]", 0, "header is an array, not an object"},
    {"truncated data", 0, T1("F32", "[4]", "[0,16]"), 8,
     "tensor 't': data_offsets [0, 16] run past the end of the data buffer (8 bytes)"},
    {"overlap", 0,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
     24, "tensor 'b': data_offsets [8, 24] overlap tensor 'a' [0, 16]"},
    {"zero-size inside another", 0,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
     "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}",
     16, "tensor 'z': data_offsets [8, 8] overlap tensor 'a'"},
    {"same range twice", 0,
     "{\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
     "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
     8, "tensor 'b': data_offsets [0, 8] overlap tensor 'a' [0, 8]"},
    {"hole", 0,
     "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     24, "tensor 'b': data_offsets [16, 24] leave a hole of 8 bytes after tensor 'a'"},
    {"first not at 0", 0, T1("F32", "[2]", "[8,16]"), 16, "the first tensor must begin at 0"},
    {"trailing bytes", 0, T1("F32", "[2]", "[0,8]"), 12, "4 trailing bytes after the last tensor 't'"},
    {"data but no tensors", 0, "{\"__metadata__\":{}}", 4, "no tensors, but 4 bytes of data"},
    {"shape/size mismatch", 0, T1("F32", "[64]", "[0,100]"), 100,
     "tensor 't': data_offsets [0, 100] hold 100 bytes, shape [64] of F32 needs 256"},
    {"scalar size mismatch", 0, T1("BF16", "[]", "[0,4]"), 4, "shape [] of BF16 needs 2"},
    {"unknown dtype", 0, T1("F64", "[1]", "[0,8]"), 8, "tensor 't': unknown dtype 'F64'"},
    {"dtype in lowercase", 0, T1("f32", "[1]", "[0,4]"), 4, "unknown dtype 'f32'"},
    {"dtype a number", 0, "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "dtype is an integer, not a string"},
    {"negative dim", 0, T1("F32", "[2,-1]", "[0,0]"), 0, "shape dim 1 is negative (-1)"},
    {"real dim", 0, T1("F32", "[1.5]", "[0,4]"), 4, "shape dim 0 is a number, not an integer"},
    {"string dim", 0, T1("F32", "[\"4\"]", "[0,16]"), 16, "shape dim 0 is a string, not an integer"},
    {"shape not an array", 0, T1("F32", "4", "[0,16]"), 16, "shape is an integer, not an array"},
    {"too many dims", 0, T1("U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]"), 1, "shape has 9 dims, more than the 8"},
    {"shape product overflow", 0, T1("U8", "[1099511627776,1099511627776]", "[0,0]"), 0,
     "shape [1099511627776, 1099511627776] has more elements than fit in 64 bits"},
    {"bytes overflow", 0, T1("I64", "[4611686018427387904]", "[0,0]"), 0, "needs more bytes than fit in 64"},
    {"dim past int64", 0, T1("U8", "[18446744073709551616]", "[0,0]"), 0, "header is not valid JSON"},
    {"data_offsets with 3 entries", 0, T1("U8", "[1]", "[0,1,1]"), 1, "data_offsets must be [begin, end]"},
    {"data_offsets with 1 entry", 0, T1("U8", "[1]", "[1]"), 1, "data_offsets must be [begin, end]"},
    {"data_offsets not integers", 0, T1("U8", "[1]", "[0,1.0]"), 1, "two non-negative integers"},
    {"negative data_offsets", 0, T1("U8", "[1]", "[-1,0]"), 1, "two non-negative integers"},
    {"begin > end", 0, T1("U8", "[0]", "[8,0]"), 8, "data_offsets [8, 0] begin after they end"},
    {"duplicate tensor keys", 0,
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
     "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
     2, "duplicate object key"},
    {"duplicate keys in an entry", 0, "{\"t\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "duplicate object key"},
    {"metadata non-string", 0, "{\"__metadata__\":{\"format\":\"pt\",\"epoch\":3}}", 0,
     "__metadata__ key 'epoch' is an integer, not a string"},
    {"metadata not an object", 0, "{\"__metadata__\":[\"pt\"]}", 0, "__metadata__ is an array, not an object"},
    {"extra key", 0, "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"extra\":0}}", 1,
     "tensor 't': unknown key 'extra'"},
    {"missing key", 0, "{\"t\":{\"dtype\":\"U8\",\"shape\":[1]}}", 0, "tensor 't': missing key 'data_offsets'"},
    {"entry not an object", 0, "{\"t\":[\"U8\",[1],[0,1]]}", 1, "tensor 't': entry is an array, not an object"},
};

TEST(broken_files)
{
    for (size_t i = 0; i < sizeof bad_ / sizeof bad_[0]; i++) {
        const bad_case *c = &bad_[i];
        unsigned char *img;
        size_t len = image_(c->hlen ? c->hlen : strlen(c->header), c->header, c->dlen, &img);
        char path[512];
        snprintf(path, sizeof path, TMP "/bad_%02zu.safetensors", i);
        write_bytes_(path, img, len);

        test_current_ = c->what;
        kd_st *st = (kd_st *)1;
        CHECK_ERR(kd_st_open(path, &st), KD_E_FORMAT, c->needle);
        CHECK(st == NULL);
        const char *named = path; /* the message names the file */
        CHECK_ERR(kd_st_open(path, &st), KD_E_FORMAT, named);
        CHECK_ERR(kd_st_validate(img, len, "mem"), KD_E_FORMAT, c->needle);
        CHECK_ERR(kd_st_validate(img, len, "mem"), KD_E_FORMAT, "'mem': ");
        free(img);
    }
    test_current_ = "broken_files";
}

TEST(short_files)
{
    kd_st *st;
    write_bytes_(TMP "/empty.safetensors", "", 0);
    CHECK_ERR(kd_st_open(TMP "/empty.safetensors", &st), KD_E_FORMAT, "file is 0 bytes, too short");
    CHECK_ERR(kd_st_validate(NULL, 0, "e"), KD_E_FORMAT, "'e': file is 0 bytes");
    write_bytes_(TMP "/short.safetensors", "\x02\0\0\0\0", 5);
    CHECK_ERR(kd_st_open(TMP "/short.safetensors", &st), KD_E_FORMAT, "file is 5 bytes, too short");
    CHECK_ERR(kd_st_validate("\x02\0\0\0\0", 5, "s"), KD_E_FORMAT, "file is 5 bytes");
    /* a directory is opened as a model folder; other non-files are KD_E_IO */
    CHECK_ERR(kd_st_open("/dev/null", &st), KD_E_IO, "not a regular file");
}

TEST(legal_oddities)
{
    /* keys out of offset order, a zero-size tensor at the end, metadata first */
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[2,5]},"
                    "\"z\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[5,5]},"
                    "\"y\":{\"dtype\":\"F32\",\"shape\":[7,0],\"data_offsets\":[0,0]},"
                    "\"a\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}   ";
    unsigned char *img;
    size_t len = image_(strlen(h), h, 5, &img);
    CHECK_OK(kd_st_validate(img, len, "mem"));
    write_bytes_(TMP "/odd.safetensors", img, len);
    kd_st *st;
    CHECK_OK(kd_st_open(TMP "/odd.safetensors", &st));
    if (st) {
        CHECK_EQ_INT(kd_st_count(st), 4);
        CHECK_STR(kd_st_at(st, 0)->name, "a");
        CHECK_STR(kd_st_at(st, 3)->name, "z");
        const kd_st_tensor *b = kd_st_find(st, "b");
        CHECK(b && ((const unsigned char *)b->data)[0] == 2 && ((const unsigned char *)b->data)[2] == 4);
        kd_st_free(st);
    }
    free(img);
}

/* Plant faults everywhere in a valid file: every truncation must be refused,
 * and no single-byte change may crash (ASan builds check the reads). */
TEST(every_prefix_and_byte_flip)
{
    char *buf;
    size_t len;
    CHECK_OK(kd_read_file(TMP "/roundtrip.safetensors", 1 << 20, &buf, &len));
    int bad_prefix = 0;
    for (size_t n = 0; n < len; n++)
        bad_prefix += kd_st_validate(buf, n, "prefix") != KD_E_FORMAT;
    CHECK_EQ_INT(bad_prefix, 0);
    CHECK_OK(kd_st_validate(buf, len, "whole"));

    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | (unsigned char)buf[i];
    int odd = 0;
    for (size_t i = 0; i < 8 + hlen; i++) {
        char keep = buf[i];
        buf[i] = (char)(keep ^ 0x01);
        int rc = kd_st_validate(buf, len, "flip");
        odd += rc != KD_OK && rc != KD_E_FORMAT;
        buf[i] = keep;
    }
    CHECK_EQ_INT(odd, 0);
    free(buf);
}

/* ---- the HF fixture ----------------------------------------------------- */

TEST(hf_fixture)
{
    const char *path = KD_TEST_FIXTURES "/tiny-qwen2/model.safetensors";
    kd_st *st;
    CHECK_OK(kd_st_open(path, &st));
    if (!st)
        return;
    CHECK_EQ_INT(kd_st_count(st), 26);
    CHECK_STR(kd_st_metadata(st, "format"), "pt");
    for (size_t i = 0; i < kd_st_count(st); i++)
        CHECK_EQ_INT(kd_st_at(st, i)->dtype, KD_F32);
    const kd_st_tensor *e = kd_st_find(st, "model.embed_tokens.weight");
    CHECK(e != NULL);
    if (e) {
        CHECK_EQ_INT(e->ndim, 2);
        CHECK_EQ_INT(e->shape[0], 512);
        CHECK_EQ_INT(e->shape[1], 128);
        CHECK_EQ_INT(e->nbytes, 512 * 128 * 4);
        float v;
        memcpy(&v, e->data, 4);
        CHECK(isfinite(v));
    }
    kd_st_free(st);

    /* the folder opens the same file */
    CHECK_OK(kd_st_open(KD_TEST_FIXTURES "/tiny-qwen2", &st));
    if (st) {
        CHECK_EQ_INT(kd_st_count(st), 26);
        CHECK_STR(kd_st_shard_path(st, 0), KD_TEST_FIXTURES "/tiny-qwen2/model.safetensors");
        kd_st_free(st);
    }

    char *buf;
    size_t len;
    CHECK_OK(kd_read_file(path, 64 << 20, &buf, &len));
    CHECK_OK(kd_st_validate(buf, len, path));
    free(buf);
}

/* ---- the sharded writer ------------------------------------------------- */

#define SHW TMP "/sharded_writer"

/* F32 tensors "t<i>" of n[i] elements, values 100*i + j; a writer over them
 * (the data lives in the static buffer until the next call). */
static float shw_data_[5][128];
static kd_st_writer *shw_writer_(const int *n, int count)
{
    kd_st_writer *w = NULL;
    CHECK_OK(kd_st_writer_new(&w));
    if (!w)
        return NULL;
    CHECK_OK(kd_st_writer_meta(w, "format", "pt"));
    for (int i = 0; i < count; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        for (int j = 0; j < n[i]; j++)
            shw_data_[i][j] = (float)(100 * i + j);
        int64_t shape[1] = {n[i]};
        CHECK_OK(kd_st_writer_add(w, name, KD_F32, 1, shape, shw_data_[i]));
    }
    return w;
}

/* A fresh empty folder (the files of an earlier run removed). */
static void shw_dir_(const char *dir)
{
    static const char *names[] = {"model.safetensors", "model.safetensors.index.json",
                                  "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                  "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                  "model-00003-of-00003.safetensors"};
    char p[1024];
    mkdir_p_(SHW);
    mkdir_p_(dir);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
}

/* Every tensor of the folder equals what shw_writer_ put in, in shard `want[i]`. */
static void shw_check_(const char *dir, const int *n, int count, const int *want, int nshards)
{
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(dir, &st));
    if (!st)
        return;
    CHECK_EQ_INT(kd_st_count(st), count);
    CHECK_EQ_INT(kd_st_shard_count(st), nshards);
    CHECK_STR(kd_st_metadata(st, "format"), "pt");
    for (int i = 0; i < count; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        const kd_st_tensor *t = kd_st_find(st, name);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK_EQ_INT(t->dtype, KD_F32);
        CHECK_EQ_INT(t->ndim, 1);
        CHECK_EQ_INT(t->shape[0], n[i]);
        CHECK_EQ_INT(t->shard, want[i]);
        CHECK(memcmp(t->data, shw_data_[i], (size_t)n[i] * 4) == 0);
        /* every shard also carries the metadata */
        kd_st *one = NULL;
        CHECK_OK(kd_st_open(kd_st_shard_path(st, t->shard), &one));
        if (one) {
            CHECK_STR(kd_st_metadata(one, "format"), "pt");
            kd_st_free(one);
        }
    }
    kd_st_free(st);
}

/* The index: total_size and the weight map, as a parsed document. */
static void shw_check_index_(const char *dir, long long total, const char *const *files, int count)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(kd_read_file(path, 1 << 20, &text, &len));
    if (!text)
        return;
    CHECK(len > 0 && text[len - 1] == '\n');
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    CHECK(root != NULL);
    CHECK_EQ_INT(json_object_size(root), 2);
    json_t *meta = json_object_get(root, "metadata"), *wm = json_object_get(root, "weight_map");
    CHECK(json_is_object(meta) && json_object_size(meta) == 1);
    CHECK(json_is_integer(json_object_get(meta, "total_size")));
    CHECK_EQ_INT(json_integer_value(json_object_get(meta, "total_size")), total);
    CHECK(json_is_object(wm));
    CHECK_EQ_INT(json_object_size(wm), count);
    for (int i = 0; i < count; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        CHECK_STR(json_string_value(json_object_get(wm, name)), files[i]);
    }
    json_decref(root);
    free(text);
}

static int exists_(const char *dir, const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

TEST(sharded_writer_single)
{
    const char *dir = SHW "/single";
    shw_dir_(dir);
    const int n[3] = {4, 8, 2}, want[3] = {0, 0, 0};
    kd_st_writer *w = shw_writer_(n, 3);
    if (!w)
        return;
    int ns = -1;
    /* exactly at the limit is still one shard (HF splits only above it) */
    CHECK_OK(kd_st_writer_write_sharded(w, dir, "model", 14 * 4, &ns));
    CHECK_EQ_INT(ns, 1);
    CHECK(exists_(dir, "model.safetensors"));
    CHECK(!exists_(dir, "model.safetensors.index.json"));
    CHECK(!exists_(dir, "model-00001-of-00001.safetensors"));
    shw_check_(dir, n, 3, want, 1);
    /* the default limit (0 = 5 GB) is one shard too; and the file is what kd_st_writer_write makes */
    CHECK_OK(kd_st_writer_write_sharded(w, dir, "model", 0, &ns));
    CHECK_EQ_INT(ns, 1);
    CHECK_OK(kd_st_writer_write(w, SHW "/plain.safetensors"));
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    CHECK_OK(kd_read_file(SHW "/single/model.safetensors", 1 << 20, &a, &la));
    CHECK_OK(kd_read_file(SHW "/plain.safetensors", 1 << 20, &b, &lb));
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0);
    free(a);
    free(b);
    kd_st_writer_free(w);

    /* no tensors: one empty file that opens */
    const char *empty = SHW "/empty";
    shw_dir_(empty);
    CHECK_OK(kd_st_writer_new(&w));
    CHECK_OK(kd_st_writer_write_sharded(w, empty, "model", 16, &ns));
    CHECK_EQ_INT(ns, 1);
    kd_st_writer_free(w);
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(empty, &st));
    if (st)
        CHECK_EQ_INT(kd_st_count(st), 0);
    kd_st_free(st);
}

TEST(sharded_writer_three)
{
    const char *dir = SHW "/three";
    shw_dir_(dir);
    /* 16, 16, 16, 16, 16 bytes with a 40-byte limit: [t0 t1] [t2 t3] [t4] */
    const int n[5] = {4, 4, 4, 4, 4}, want[5] = {0, 0, 1, 1, 2};
    kd_st_writer *w = shw_writer_(n, 5);
    if (!w)
        return;
    int ns = -1;
    CHECK_OK(kd_st_writer_write_sharded(w, dir, "model", 40, &ns));
    kd_st_writer_free(w);
    CHECK_EQ_INT(ns, 3);
    CHECK(!exists_(dir, "model.safetensors"));
    CHECK(exists_(dir, "model-00001-of-00003.safetensors"));
    CHECK(exists_(dir, "model-00003-of-00003.safetensors"));
    shw_check_(dir, n, 5, want, 3);
    const char *files[5] = {"model-00001-of-00003.safetensors", "model-00001-of-00003.safetensors",
                            "model-00002-of-00003.safetensors", "model-00002-of-00003.safetensors",
                            "model-00003-of-00003.safetensors"};
    shw_check_index_(dir, 20 * 4, files, 5);

    /* each shard holds only its own tensors */
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(SHW "/three/model-00002-of-00003.safetensors", &st));
    if (st) {
        CHECK_EQ_INT(kd_st_count(st), 2);
        CHECK(kd_st_find(st, "t2") && kd_st_find(st, "t3"));
        kd_st_free(st);
    }
}

TEST(sharded_writer_oversize)
{
    const char *dir = SHW "/oversize";
    shw_dir_(dir);
    /* 16, 400, 16 bytes with a 40-byte limit: t1 gets its own shard, appended
     * when it comes, before the shard that t0 started: [t1] [t0 t2] */
    const int n[3] = {4, 100, 4}, want[3] = {1, 0, 1};
    kd_st_writer *w = shw_writer_(n, 3);
    if (!w)
        return;
    int ns = -1;
    CHECK_OK(kd_st_writer_write_sharded(w, dir, "model", 40, &ns));
    CHECK_EQ_INT(ns, 2);
    shw_check_(dir, n, 3, want, 2);
    const char *files[3] = {"model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors",
                            "model-00002-of-00002.safetensors"};
    shw_check_index_(dir, 108 * 4, files, 3);
    kd_st_writer_free(w);

    /* a single tensor over the limit is one file, not an index of one */
    const char *one = SHW "/oversize_one";
    shw_dir_(one);
    const int n1[1] = {100}, want1[1] = {0};
    w = shw_writer_(n1, 1);
    if (!w)
        return;
    CHECK_OK(kd_st_writer_write_sharded(w, one, "model", 40, &ns));
    CHECK_EQ_INT(ns, 1);
    CHECK(exists_(one, "model.safetensors") && !exists_(one, "model.safetensors.index.json"));
    shw_check_(one, n1, 1, want1, 1);
    /* a missing folder is an I/O error naming the file */
    CHECK_ERR(kd_st_writer_write_sharded(w, SHW "/no/such", "model", 40, &ns), KD_E_IO, "no/such/model.safetensors");
    kd_st_writer_free(w);
}

int main(void)
{
    mkdir_p_(TMP);
    RUN(roundtrip_every_dtype);
    RUN(find_matches_linear_scan);
    RUN(writer_rejects);
    RUN(zero_tensors);
    RUN(sharded_folder);
    RUN(sharded_folder_errors);
    RUN(single_file_folder);
    RUN(broken_files);
    RUN(short_files);
    RUN(legal_oddities);
    RUN(every_prefix_and_byte_flip);
    RUN(hf_fixture);
    RUN(sharded_writer_single);
    RUN(sharded_writer_three);
    RUN(sharded_writer_oversize);
    for (size_t i = 0; i < RT_N; i++)
        free(rt_[i].data);
    return test_summary();
}
