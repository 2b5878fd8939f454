/* test_export.c - kd_student_export against the HF fixtures (tiny-qwen2,
 * tied; tiny-llama3, untied): an fp32 export loads back bit-equal with equal
 * logits, a bf16 one within its own rounding, shards load back, the JSON
 * documents keep what they must, the tokenizer files are copied byte for
 * byte, and the errors leave nothing behind. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "core/util.h"
#include "student/export.h"
#include "student/model.h"
#include "test.h"

#define TMP KD_TEST_TMP "/export"
#define TOK TMP "/tok"

/* ---- scratch ------------------------------------------------------------ */

static int rm_one_(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove TMP and everything under it, so re-runs start clean. */
static void clean_tmp_(void)
{
    if (nftw(TMP, rm_one_, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        FAIL_("cannot clean '%s': %s", TMP, strerror(errno));
}

static void mkdir_(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        FAIL_("mkdir '%s': %s", path, strerror(errno));
}

static void write_bytes_(const char *path, const void *buf, size_t len)
{
    CHECK_OK(kd_write_file_atomic(path, buf, len));
}

static int exists_(const char *dir, const char *name)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* 1 if two files have the same bytes. */
static int same_file_(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t lx = 0, ly = 0;
    int ok = kd_read_file(a, 1u << 30, &x, &lx) == KD_OK && kd_read_file(b, 1u << 30, &y, &ly) == KD_OK &&
             lx == ly && memcmp(x, y, lx) == 0;
    free(x);
    free(y);
    return ok;
}

/* How many entries of TMP have ".tmp-" in their name (leftover siblings). */
static int leftovers_(void)
{
    DIR *d = opendir(TMP);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, ".tmp-") != NULL;
    if (d)
        closedir(d);
    return n;
}

static json_t *load_json_(const char *dir, const char *name)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    json_error_t je;
    json_t *j = json_load_file(p, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        FAIL_("'%s': %s", p, je.text);
    return j;
}

/* The tokenizer folder: the real qwen3 tokenizer.json from the setup cache
 * when there is one, else a small stand-in (the export copies bytes, it does
 * not parse them), plus two optional files, one of them not even text. */
static void make_tokenizer_dir_(void)
{
    mkdir_(TOK);
    char cache[4096], src[4200];
    if (kd_tokenizer_dir("qwen3", cache, sizeof cache) == KD_OK) {
        char *buf = NULL;
        size_t len = 0;
        snprintf(src, sizeof src, "%s/tokenizer.json", cache);
        CHECK_OK(kd_read_file(src, 1u << 30, &buf, &len));
        if (buf)
            write_bytes_(TOK "/tokenizer.json", buf, len);
        free(buf);
        printf("tokenizer.json from '%s' (%zu bytes)\n", src, len);
    } else {
        const char *t = "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}\n";
        write_bytes_(TOK "/tokenizer.json", t, strlen(t));
        printf("tokenizer.json: a stand-in (no setup cache)\n");
    }
    const char *cfg = "{\"eos_token\": \"<|im_end|>\", \"chat_template\": \"{{ x }}\"}";
    write_bytes_(TOK "/tokenizer_config.json", cfg, strlen(cfg));
    unsigned char raw[256];
    for (int i = 0; i < 256; i++)
        raw[i] = (unsigned char)(255 - i);
    write_bytes_(TOK "/merges.txt", raw, sizeof raw);
}

/* ---- comparing models --------------------------------------------------- */

static kd_student *load_(const char *dir)
{
    kd_student *m = NULL;
    CHECK_OK(kd_student_load(dir, &m));
    return m;
}

/* bf16 rounding ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and goes
 * to the even 1; 1 + 3 * 2^-8 halfway between 1 + 2^-7 and 1 + 2^-6 goes to
 * the even 1 + 2^-6. Truncation or rounding half away from zero would differ. */
#define TIE_DOWN (1.0f + 0x1p-8f)
#define TIE_UP (1.0f + 3 * 0x1p-8f)

/* The fixtures' weights are bf16 values (tools/refgen.py rounds them), so a
 * bf16 export of them would prove nothing: move every parameter off the bf16
 * grid, as training does, and plant the two ties in model.norm.weight. */
static void perturb_(kd_student *m)
{
    for (size_t i = 0; i < kd_student_param_count(m); i++) {
        float *p = NULL;
        size_t n = 0;
        CHECK_OK(kd_student_tensor(m, kd_student_param_name(m, i), 0, &p, &n));
        for (size_t j = 0; p && j < n; j++)
            p[j] += p[j] * 1e-3f * (float)((int)((i + j) % 13) - 6) / 6.0f + 1e-7f;
    }
    float *norm = NULL;
    size_t n = 0;
    CHECK_OK(kd_student_tensor(m, "model.norm.weight", 0, &norm, &n));
    if (norm && n >= 3) {
        norm[0] = TIE_DOWN;
        norm[1] = TIE_UP;
        norm[2] = -TIE_UP;
    }
}

static kd_student *load_perturbed_(const char *dir)
{
    kd_student *m = load_(dir);
    if (m)
        perturb_(m);
    return m;
}

/* Every parameter of `b` equals that of `a` bit for bit (bf16 = 0), or equals
 * a's value rounded to bf16 (bf16 = 1). Returns the count of differing
 * elements. */
static size_t compare_params_(kd_student *a, kd_student *b, int bf16)
{
    size_t bad = 0, np = kd_student_param_count(a);
    CHECK_EQ_INT(kd_student_param_count(b), np);
    for (size_t i = 0; i < np; i++) {
        const char *name = kd_student_param_name(a, i);
        float *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(kd_student_tensor(a, name, 0, &x, &nx));
        CHECK_OK(kd_student_tensor(b, name, 0, &y, &ny));
        if (!x || !y || nx != ny) {
            FAIL_("parameter '%s' missing or of another size", name);
            bad++;
            continue;
        }
        size_t diff = 0;
        for (size_t j = 0; j < nx; j++) {
            float want = bf16 ? kd_bf16_to_f32(kd_f32_to_bf16(x[j])) : x[j];
            diff += memcmp(&want, &y[j], sizeof want) != 0;
        }
        if (diff)
            FAIL_("parameter '%s': %zu of %zu elements differ", name, diff, nx);
        bad += diff;
    }
    return bad;
}

/* The logits of a and b on the same tokens: bit-equal (returns 1) or not. */
static int same_logits_(kd_student *a, kd_student *b)
{
    const int64_t V = kd_student_config(a)->vocab_size, T = 24;
    int64_t ids[24];
    for (int64_t t = 0; t < T; t++)
        ids[t] = (t * 37 + 5) % V;
    float *la = malloc((size_t)(T * V) * sizeof(float)), *lb = malloc((size_t)(T * V) * sizeof(float));
    CHECK_OK(kd_student_forward(a, ids, NULL, 1, T, la));
    CHECK_OK(kd_student_forward(b, ids, NULL, 1, T, lb));
    int same = memcmp(la, lb, (size_t)(T * V) * sizeof(float)) == 0;
    free(la);
    free(lb);
    return same;
}

/* Key `k` is absent from both objects, or equal in both. */
static int same_key_(const json_t *a, const json_t *b, const char *k)
{
    const json_t *x = json_object_get(a, k), *y = json_object_get(b, k);
    return (!x && !y) || (x && y && json_equal(x, y));
}

static kd_export_opts opts_(const char *src, kd_dtype dt, const int64_t *eos, int neos)
{
    return (kd_export_opts){.src_dir = src, .tokenizer_dir = TOK, .dtype = dt, .eos_ids = eos, .neos = neos};
}

/* ---- the tests ---------------------------------------------------------- */

/* fp32: bit-equal parameters, equal logits, HF's layout. */
static void fp32_(const char *fx, int tied)
{
    char src[1024], out[1024];
    snprintf(src, sizeof src, "%s/%s", KD_TEST_FIXTURES, fx);
    snprintf(out, sizeof out, "%s/%s-f32", TMP, fx);
    kd_student *m = load_perturbed_(src);
    if (!m)
        return;
    const int64_t eos[2] = {7, 9};
    kd_export_opts o = opts_(src, KD_F32, eos, 2);
    CHECK_OK(kd_student_export(m, out, &o));
    kd_student *back = load_(out);
    if (back) {
        size_t bad = compare_params_(m, back, 0);
        int same = same_logits_(m, back);
        printf("%s fp32 export: %zu differing parameter elements, logits %s\n", fx, bad,
               same ? "bit-equal" : "DIFFER");
        CHECK(same);
        kd_student_free(back);
    }

    /* one model.safetensors, F32, format pt, no lm_head.weight when tied */
    CHECK(exists_(out, "model.safetensors"));
    CHECK(!exists_(out, "model.safetensors.index.json"));
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(out, &st));
    if (st) {
        CHECK_EQ_INT(kd_st_count(st), kd_student_param_count(m));
        CHECK_STR(kd_st_metadata(st, "format"), "pt");
        for (size_t i = 0; i < kd_st_count(st); i++)
            CHECK_EQ_INT(kd_st_at(st, i)->dtype, KD_F32);
        CHECK((kd_st_find(st, "lm_head.weight") == NULL) == tied);
        CHECK(kd_st_find(st, "model.embed_tokens.weight") != NULL);
        kd_st_free(st);
    }

    /* config.json: every source key kept, dtype set */
    json_t *a = load_json_(src, "config.json"), *b = load_json_(out, "config.json");
    if (a && b) {
        CHECK_STR(json_string_value(json_object_get(b, "dtype")), "float32");
        CHECK_STR(json_string_value(json_object_get(b, "torch_dtype")), "float32");
        CHECK_STR(json_string_value(json_object_get(b, "model_type")),
                  json_string_value(json_object_get(a, "model_type")));
        CHECK(json_equal(json_object_get(a, "architectures"), json_object_get(b, "architectures")));
        json_object_del(a, "dtype");
        json_object_del(a, "torch_dtype");
        json_object_del(b, "dtype");
        json_object_del(b, "torch_dtype");
        CHECK(json_equal(a, b));
        /* and in the same order */
        const char *ka, *kb;
        json_t *va, *vb;
        void *ia = json_object_iter(a), *ib = json_object_iter(b);
        for (; ia && ib; ia = json_object_iter_next(a, ia), ib = json_object_iter_next(b, ib)) {
            ka = json_object_iter_key(ia);
            kb = json_object_iter_key(ib);
            va = json_object_iter_value(ia);
            vb = json_object_iter_value(ib);
            CHECK_STR(ka, kb);
            (void)va;
            (void)vb;
        }
        CHECK(!ia && !ib);
    }
    json_decref(a);
    json_decref(b);

    /* generation_config.json: the source's keys, eos replaced by the list */
    a = load_json_(src, "generation_config.json");
    b = load_json_(out, "generation_config.json");
    if (a && b) {
        json_t *e = json_object_get(b, "eos_token_id");
        CHECK(json_is_array(e) && json_array_size(e) == 2);
        CHECK_EQ_INT(json_integer_value(json_array_get(e, 0)), 7);
        CHECK_EQ_INT(json_integer_value(json_array_get(e, 1)), 9);
        CHECK(same_key_(a, b, "transformers_version"));
        CHECK(same_key_(a, b, "_from_model_config"));
        CHECK(same_key_(a, b, "bos_token_id"));
        CHECK(same_key_(a, b, "use_cache"));
        CHECK_EQ_INT(json_object_size(b), json_object_size(a) + (json_object_get(a, "eos_token_id") ? 0 : 1));
    }
    json_decref(a);
    json_decref(b);
    int64_t got[8];
    int n = 0;
    CHECK_OK(kd_generation_eos(out, got, 8, &n));
    CHECK(n == 2 && got[0] == 7 && got[1] == 9);

    /* the tokenizer files: the present ones byte for byte, no others */
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "merges.txt"};
    for (size_t i = 0; i < 3; i++) {
        char x[2048], y[2048];
        snprintf(x, sizeof x, "%s/%s", TOK, files[i]);
        snprintf(y, sizeof y, "%s/%s", out, files[i]);
        if (!same_file_(x, y))
            FAIL_("'%s' is not a byte copy of '%s'", y, x);
    }
    CHECK(!exists_(out, "vocab.json") && !exists_(out, "special_tokens_map.json"));
    CHECK(!exists_(out, "chat_template.jinja") && !exists_(out, "added_tokens.json"));
    CHECK(!exists_(out, "ref_infer.safetensors"));
    kd_student_free(m);
}

TEST(qwen2_fp32) { fp32_("tiny-qwen2", 1); }
TEST(llama3_fp32) { fp32_("tiny-llama3", 0); }

/* bf16: each element comes back as its own bf16 rounding. */
static void bf16_(const char *fx)
{
    char src[1024], out[1024];
    snprintf(src, sizeof src, "%s/%s", KD_TEST_FIXTURES, fx);
    snprintf(out, sizeof out, "%s/%s-bf16", TMP, fx);
    kd_student *m = load_perturbed_(src);
    if (!m)
        return;
    const int64_t eos[1] = {3};
    kd_export_opts o = opts_(src, KD_BF16, eos, 1);
    CHECK_OK(kd_student_export(m, out, &o));
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(out, &st));
    if (st) {
        for (size_t i = 0; i < kd_st_count(st); i++)
            CHECK_EQ_INT(kd_st_at(st, i)->dtype, KD_BF16);
        kd_st_free(st);
    }
    kd_student *back = load_(out);
    if (back) {
        size_t bad = compare_params_(m, back, 1), off = 0, total = 0;
        for (size_t i = 0; i < kd_student_param_count(m); i++) { /* how many the rounding moved */
            float *p = NULL;
            size_t n = 0;
            kd_student_tensor(m, kd_student_param_name(m, i), 0, &p, &n);
            for (size_t j = 0; j < n; j++)
                off += kd_bf16_to_f32(kd_f32_to_bf16(p[j])) != p[j];
            total += n;
        }
        printf("%s bf16 export: %zu elements differ from their bf16 rounding (%zu of %zu were rounded)\n", fx,
               bad, off, total);
        CHECK(off > total / 2);
        float *norm = NULL;
        size_t n = 0;
        CHECK_OK(kd_student_tensor(back, "model.norm.weight", 0, &norm, &n));
        if (norm && n >= 3) {
            CHECK(norm[0] == 1.0f);
            CHECK(norm[1] == 1.0f + 0x1p-6f);
            CHECK(norm[2] == -(1.0f + 0x1p-6f));
        }
        kd_student_free(back);
    }
    json_t *c = load_json_(out, "config.json"), *g = load_json_(out, "generation_config.json");
    if (c) {
        CHECK_STR(json_string_value(json_object_get(c, "dtype")), "bfloat16");
        CHECK_STR(json_string_value(json_object_get(c, "torch_dtype")), "bfloat16");
    }
    if (g) /* one id: an integer, as HF writes it */
        CHECK(json_is_integer(json_object_get(g, "eos_token_id")) &&
              json_integer_value(json_object_get(g, "eos_token_id")) == 3);
    json_decref(c);
    json_decref(g);
    kd_student_free(m);
}

TEST(qwen2_bf16) { bf16_("tiny-qwen2"); }
TEST(llama3_bf16) { bf16_("tiny-llama3"); }

/* A small shard limit: several shards and an index, and it still loads back. */
static void sharded_(const char *fx, kd_dtype dt)
{
    char src[1024], out[1024];
    snprintf(src, sizeof src, "%s/%s", KD_TEST_FIXTURES, fx);
    snprintf(out, sizeof out, "%s/%s-shards-%s", TMP, fx, kd_dtype_name(dt));
    kd_student *m = load_perturbed_(src);
    if (!m)
        return;
    kd_export_opts o = opts_(src, dt, NULL, 0);
    o.max_shard_bytes = 64 << 10;
    CHECK_OK(kd_student_export(m, out, &o));
    CHECK(!exists_(out, "model.safetensors"));
    CHECK(exists_(out, "model.safetensors.index.json"));
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(out, &st));
    uint64_t total = 0;
    if (st) {
        printf("%s %s export with 64 KiB shards: %d shards\n", fx, kd_dtype_name(dt), kd_st_shard_count(st));
        CHECK(kd_st_shard_count(st) > 2);
        CHECK_EQ_INT(kd_st_count(st), kd_student_param_count(m));
        for (size_t i = 0; i < kd_st_count(st); i++)
            total += kd_st_at(st, i)->nbytes;
        kd_st_free(st);
    }
    json_t *idx = load_json_(out, "model.safetensors.index.json");
    if (idx) {
        CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")), total);
        CHECK_EQ_INT(json_object_size(json_object_get(idx, "weight_map")), kd_student_param_count(m));
    }
    json_decref(idx);
    kd_student *back = load_(out);
    if (back) {
        compare_params_(m, back, dt == KD_BF16);
        if (dt == KD_F32)
            CHECK(same_logits_(m, back));
        kd_student_free(back);
    }
    /* neos = 0 keeps the source's eos_token_id (llama3: 2; qwen2: none) */
    int64_t a[8], b[8];
    int na = 0, nb = 0;
    CHECK_OK(kd_generation_eos(src, a, 8, &na));
    CHECK_OK(kd_generation_eos(out, b, 8, &nb));
    CHECK(na == nb && memcmp(a, b, (size_t)na * sizeof a[0]) == 0);
    kd_student_free(m);
}

TEST(qwen2_sharded) { sharded_("tiny-qwen2", KD_F32); }
TEST(llama3_sharded) { sharded_("tiny-llama3", KD_F32); }
TEST(llama3_sharded_bf16) { sharded_("tiny-llama3", KD_BF16); }

/* No generation_config.json in the source: a new one from the config. And
 * config.json's numbers are written short, not as jansson's default 17
 * digits would (1.0000000000000001e-05); jansson drops the exponent's
 * leading zero where Python writes 1e-05, the same double. */
TEST(fresh_generation_config)
{
    const char *src = TMP "/src-nogen", *out = TMP "/nogen";
    mkdir_(src);
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(kd_read_file(KD_TEST_FIXTURES "/tiny-llama3/config.json", 1 << 20, &text, &len));
    if (!text)
        return;
    write_bytes_(TMP "/src-nogen/config.json", text, len);
    free(text);
    kd_student *m = load_(KD_TEST_FIXTURES "/tiny-llama3");
    if (!m)
        return;
    const int64_t eos[3] = {2, 11, 12};
    kd_export_opts o = opts_(src, KD_F32, eos, 3);
    CHECK_OK(kd_student_export(m, out, &o));
    json_t *g = load_json_(out, "generation_config.json");
    if (g) {
        CHECK_EQ_INT(json_integer_value(json_object_get(g, "bos_token_id")), 1);
        json_t *e = json_object_get(g, "eos_token_id");
        CHECK(json_is_array(e) && json_array_size(e) == 3 && json_integer_value(json_array_get(e, 2)) == 12);
    }
    json_decref(g);
    /* neos = 0 with no source file: the config's eos */
    const char *out2 = TMP "/nogen2";
    o = opts_(src, KD_F32, NULL, 0);
    CHECK_OK(kd_student_export(m, out2, &o));
    int64_t ids[8];
    int n = 0;
    CHECK_OK(kd_generation_eos(out2, ids, 8, &n));
    CHECK(n == 1 && ids[0] == 2);

    CHECK_OK(kd_read_file(TMP "/nogen/config.json", 1 << 20, &text, &len));
    CHECK_HAS(text, "\"rms_norm_eps\": 1e-5,");
    CHECK_HAS(text, "\"initializer_range\": 0.02,");
    CHECK_HAS(text, "\"rope_theta\": 500000.0");
    CHECK_HAS(text, "\"dtype\": \"float32\"");
    CHECK(len > 0 && text[len - 1] == '\n');
    free(text);
    kd_student_free(m);
}

/* A non-empty out folder is refused and left alone; an empty one is used;
 * a missing tokenizer.json is KD_E_NOTFOUND; failures leave no folder. */
TEST(errors)
{
    const char *src = KD_TEST_FIXTURES "/tiny-qwen2";
    kd_student *m = load_(src);
    if (!m)
        return;
    kd_export_opts o = opts_(src, KD_F32, NULL, 0);

    const char *full = TMP "/full";
    mkdir_(full);
    write_bytes_(TMP "/full/keep.txt", "mine", 4);
    CHECK_ERR(kd_student_export(m, full, &o), KD_E_CONFIG, "output folder '" TMP "/full' exists and is not empty");
    CHECK_ERR(kd_student_export(m, TMP "/full/", &o), KD_E_CONFIG, "not empty");
    CHECK(exists_(full, "keep.txt") && !exists_(full, "config.json"));
    CHECK_ERR(kd_student_export(m, TMP "/full/keep.txt", &o), KD_E_CONFIG, "is not a folder");

    const char *empty = TMP "/empty";
    mkdir_(empty);
    CHECK_OK(kd_student_export(m, empty, &o));
    CHECK(exists_(empty, "model.safetensors"));
    /* a second export over the first is refused */
    CHECK_ERR(kd_student_export(m, empty, &o), KD_E_CONFIG, "not empty");

    /* missing parents are made; a trailing slash is fine */
    CHECK_OK(kd_student_export(m, TMP "/deep/er/out/", &o));
    CHECK(exists_(TMP "/deep/er/out", "config.json"));

    /* tokenizer.json missing: from an empty folder, and the default (src_dir, the fixture has none) */
    mkdir_(TMP "/tok-empty");
    o.tokenizer_dir = TMP "/tok-empty";
    CHECK_ERR(kd_student_export(m, TMP "/notok", &o), KD_E_NOTFOUND, "tok-empty' has no readable tokenizer.json");
    o.tokenizer_dir = NULL;
    CHECK_ERR(kd_student_export(m, TMP "/notok", &o), KD_E_NOTFOUND, "tokenizer.json");
    CHECK(!kd_is_dir(TMP "/notok"));
    o.tokenizer_dir = TOK;

    /* a failure after the folder was started: an optional tokenizer file that
     * cannot be read (a folder in its place) */
    mkdir_(TMP "/tok-bad");
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(kd_read_file(TOK "/tokenizer.json", 1u << 30, &text, &len));
    if (text)
        write_bytes_(TMP "/tok-bad/tokenizer.json", text, len);
    free(text);
    mkdir_(TMP "/tok-bad/vocab.json");
    o.tokenizer_dir = TMP "/tok-bad";
    CHECK_ERR(kd_student_export(m, TMP "/halfway", &o), KD_E_IO, "vocab.json");
    CHECK(!kd_is_dir(TMP "/halfway"));
    o.tokenizer_dir = TOK;

    /* the options and the source config */
    o.dtype = KD_F16;
    CHECK_ERR(kd_student_export(m, TMP "/f16", &o), KD_E_DTYPE, "F16");
    o.dtype = KD_F32;
    o.src_dir = KD_TEST_FIXTURES "/tiny-llama3";
    CHECK_ERR(kd_student_export(m, TMP "/mismatch", &o), KD_E_CONFIG, "model_type is 'llama', the model's 'qwen2'");
    o.src_dir = TMP "/tok-empty";
    CHECK_ERR(kd_student_export(m, TMP "/noconfig", &o), KD_E_NOTFOUND, "config.json");
    mkdir_(TMP "/badgen");
    CHECK_OK(kd_read_file(KD_TEST_FIXTURES "/tiny-qwen2/config.json", 1 << 20, &text, &len));
    if (text)
        write_bytes_(TMP "/badgen/config.json", text, len);
    free(text);
    write_bytes_(TMP "/badgen/generation_config.json", "[1, 2]", 6);
    o.src_dir = TMP "/badgen";
    CHECK_ERR(kd_student_export(m, TMP "/badgen-out", &o), KD_E_FORMAT, "is an array, not an object");
    CHECK(!kd_is_dir(TMP "/mismatch") && !kd_is_dir(TMP "/noconfig") && !kd_is_dir(TMP "/badgen-out"));

    CHECK_EQ_INT(leftovers_(), 0);
    kd_student_free(m);
}

int main(void)
{
    clean_tmp_();
    mkdir_(TMP);
    make_tokenizer_dir_();
    RUN(qwen2_fp32);
    RUN(llama3_fp32);
    RUN(qwen2_bf16);
    RUN(llama3_bf16);
    RUN(qwen2_sharded);
    RUN(llama3_sharded);
    RUN(llama3_sharded_bf16);
    RUN(fresh_generation_config);
    RUN(errors);
    return test_summary();
}
