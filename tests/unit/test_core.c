/* test_core.c - status codes and error context, logging levels, the progress
 * bar's text, dtype conversions, file and path helpers, the tokenizer cache. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "core/dtype.h"
#include "core/log.h"
#include "core/util.h"

static int fails_with_context(void) { return kd_err(KD_E_SHAPE, "tensor '%s' has shape [%d]", "w", 64); }

TEST(status_names_and_context)
{
    CHECK_STR(kd_status_name(KD_OK), "KD_OK");
    CHECK_STR(kd_status_name(KD_E_SHAPE), "KD_E_SHAPE");
    CHECK_STR(kd_status_name(KD_E_INTERNAL), "KD_E_INTERNAL");
    CHECK_STR(kd_status_name(12345), "KD_E_UNKNOWN");
    int st = fails_with_context();
    CHECK_EQ_INT(st, KD_E_SHAPE);
    CHECK_STR(kd_strerror(st), "KD_E_SHAPE: tensor 'w' has shape [64]");
    /* a different code than the one recorded gets its generic text */
    CHECK_STR(kd_strerror(KD_E_IO), "KD_E_IO: input/output error");
    /* wrapping prepends context */
    kd_err_wrap(st, "cannot load '%s'", "m.safetensors");
    CHECK_STR(kd_strerror(st), "KD_E_SHAPE: cannot load 'm.safetensors': tensor 'w' has shape [64]");
    CHECK_EQ_INT(kd_err_wrap(KD_OK, "x"), KD_OK);
    kd_err_clear();
    CHECK_STR(kd_strerror(KD_E_SHAPE), "KD_E_SHAPE: tensor shape mismatch");
    kd_err_wrap(KD_E_NOTFOUND, "dataset 'runs/x'");
    CHECK_STR(kd_strerror(KD_E_NOTFOUND), "KD_E_NOTFOUND: dataset 'runs/x': not found");
    CHECK_HAS(kd_strerror(ENOENT), "KD_E_UNKNOWN: ");
    /* every code has a distinct name */
    for (int a = KD_E_FIRST; a <= KD_E_LAST; a++)
        for (int b = a + 1; b <= KD_E_LAST; b++)
            CHECK(strcmp(kd_status_name(a), kd_status_name(b)) != 0);
}

TEST(exit_codes)
{
    CHECK_EQ_INT(kd_exit_code(KD_OK), 0);
    CHECK_EQ_INT(kd_exit_code(KD_E_USAGE), 2);
    CHECK_EQ_INT(kd_exit_code(KD_E_IO), 1);
    CHECK_EQ_INT(kd_exit_code(KD_E_CONFIG), 1);
}

TEST(log_levels)
{
    kd_log_level l;
    CHECK_OK(kd_log_parse_level("debug", &l));
    CHECK_EQ_INT(l, KD_LOG_DEBUG);
    CHECK_OK(kd_log_parse_level("WARN", &l));
    CHECK_EQ_INT(l, KD_LOG_WARNING);
    CHECK_ERR(kd_log_parse_level("loud", &l), KD_E_USAGE, "unknown log level 'loud'");
    CHECK_ERR(kd_log_parse_level(NULL, &l), KD_E_USAGE, "unknown log level");
}

TEST(progress_text)
{
    char buf[256];
    kd_progress_format(buf, sizeof buf, "generate", 50, 200, 10.0, 1);
    CHECK_HAS(buf, "generate");
    CHECK_HAS(buf, "50/200");
    CHECK_HAS(buf, " 25%");
    CHECK_HAS(buf, "5.0/s");
    CHECK_HAS(buf, "ETA 00:00:30"); /* 150 left at 5/s */
    CHECK_HAS(buf, "[######..................]");
    kd_progress_format(buf, sizeof buf, "import", 7, 0, 2.0, 1);
    CHECK_HAS(buf, "import");
    CHECK_HAS(buf, "3.5/s");
    CHECK(!strstr(buf, "ETA"));
    kd_progress_format(buf, sizeof buf, "x", 0, 10, 0.0, 0);
    CHECK_HAS(buf, "ETA --:--:--");
    CHECK(!strstr(buf, "["));
    kd_progress_format(buf, sizeof buf, "x", 20, 10, 1.0, 1); /* overshoot stays at 100% */
    CHECK_HAS(buf, "100%");
    /* a non-TTY bar prints plain lines and counts from many adds */
    kd_progress p;
    kd_progress_init(&p, "t", 1000);
    for (int i = 0; i < 1000; i++)
        kd_progress_add(&p, 1);
    CHECK_EQ_INT(atomic_load(&p.done), 1000);
    kd_progress_finish(&p);
}

TEST(dtype_names_sizes)
{
    const char *names[] = {"F32", "F16", "BF16", "F8_E4M3", "I64", "I32", "U8", "BOOL"};
    const size_t sizes[] = {4, 2, 2, 1, 8, 4, 1, 1};
    for (int i = 0; i < KD_DTYPE_COUNT; i++) {
        kd_dtype t;
        CHECK_OK(kd_dtype_parse(names[i], &t));
        CHECK_EQ_INT(t, i);
        CHECK_STR(kd_dtype_name(t), names[i]);
        CHECK_EQ_INT(kd_dtype_size(t), sizes[i]);
    }
    kd_dtype t;
    CHECK_ERR(kd_dtype_parse("F64", &t), KD_E_DTYPE, "unknown dtype 'F64'");
    CHECK_ERR(kd_dtype_parse("f32", &t), KD_E_DTYPE, "'f32'");
}

/* Known encodings from the IEEE 754 / bfloat16 / OCP FP8 specifications. */
TEST(dtype_known_values)
{
    CHECK_EQ_INT(kd_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(kd_f32_to_bf16(-2.0f), 0xc000);
    CHECK_EQ_INT(kd_f32_to_bf16(3.140625f), 0x4049);
    CHECK_EQ_INT(kd_f32_to_bf16(1.00390625f), 0x3f80);   /* tie -> even (down) */
    CHECK_EQ_INT(kd_f32_to_bf16(1.01171875f), 0x3f82);   /* tie -> even (up) */
    CHECK(isnan(kd_bf16_to_f32(kd_f32_to_bf16(NAN))));
    CHECK_EQ_INT(kd_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(kd_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(kd_f32_to_f16(65536.0f), 0x7c00);       /* overflow -> inf */
    CHECK_EQ_INT(kd_f32_to_f16(-0.5f), 0xb800);
    CHECK_EQ_INT(kd_f32_to_f16(5.9604644775390625e-08f), 0x0001); /* smallest subnormal */
    CHECK_EQ_INT(kd_f32_to_f16(0.333251953125f), 0x3555);
    CHECK_NEAR(kd_f16_to_f32(0x3555), 0.333251953125, 0);
    CHECK_EQ_INT(kd_f32_to_fp8e4m3(448.0f), 0x7e);
    CHECK_EQ_INT(kd_f32_to_fp8e4m3(1e6f), 0x7e);          /* saturates */
    CHECK_EQ_INT(kd_f32_to_fp8e4m3(-448.0f), 0xfe);
    CHECK_EQ_INT(kd_f32_to_fp8e4m3(1.0f), 0x38);
    CHECK_EQ_INT(kd_f32_to_fp8e4m3(0.001953125f), 0x01);  /* 2^-9, smallest subnormal */
    CHECK_EQ_INT(kd_f32_to_fp8e4m3(0.015625f), 0x08);     /* 2^-6, smallest normal */
    CHECK_EQ_INT(kd_f32_to_fp8e4m3(1.0625f), 0x38);       /* tie between 1 and 1.125 -> even */
    CHECK_EQ_INT(kd_f32_to_fp8e4m3(1.1875f), 0x3a);       /* tie between 1.125 and 1.25 -> even */
    CHECK_NEAR(kd_fp8e4m3_to_f32(0x7e), 448.0, 0);
    CHECK_NEAR(kd_fp8e4m3_to_f32(0x01), 0.001953125, 0);
    CHECK(isnan(kd_fp8e4m3_to_f32(0x7f)));
    CHECK(isnan(kd_fp8e4m3_to_f32(0xff)));
}

/* Every finite code converts to f32 and back to itself. */
TEST(dtype_exhaustive_roundtrip)
{
    int bad = 0;
    for (unsigned c = 0; c < 256; c++) {
        float f = kd_fp8e4m3_to_f32((unsigned char)c);
        if (!isnan(f) && kd_f32_to_fp8e4m3(f) != c && !(c == 0x80 && kd_f32_to_fp8e4m3(f) == 0x80))
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    for (unsigned c = 0; c < 65536; c++) {
        float f = kd_bf16_to_f32((unsigned short)c);
        if (!isnan(f) && kd_f32_to_bf16(f) != c)
            bad++;
        f = kd_f16_to_f32((unsigned short)c);
        if (!isnan(f) && kd_f32_to_f16(f) != c)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(files_and_paths)
{
    char path[512], *buf;
    size_t len;
    CHECK_OK(kd_path_join(path, sizeof path, KD_TEST_TMP, "core_file.txt"));
    CHECK_OK(kd_write_file_atomic(path, "hello\n", 6));
    CHECK_OK(kd_read_file(path, 100, &buf, &len));
    CHECK_EQ_INT(len, 6);
    CHECK_STR(buf, "hello\n");
    free(buf);
    CHECK_ERR(kd_read_file(path, 3, &buf, &len), KD_E_RANGE, "more than the 3 allowed");
    CHECK_ERR(kd_read_file(KD_TEST_TMP "/no/such/file", 100, &buf, &len), KD_E_NOTFOUND,
              "no/such/file");
    CHECK_ERR(kd_read_file(KD_TEST_TMP, 100, &buf, &len), KD_E_IO, "is a directory");
    CHECK_ERR(kd_write_file_atomic(KD_TEST_TMP "/no/such/dir/f", "x", 1), KD_E_IO, "cannot create");
    char small[8];
    CHECK_ERR(kd_path_join(small, sizeof small, "abcdef", "ghi"), KD_E_RANGE, "path too long");
    CHECK_OK(kd_path_join(path, sizeof path, "a/", "b"));
    CHECK_STR(path, "a/b");
    CHECK(kd_is_dir(KD_TEST_TMP));
    char b[32];
    CHECK_STR(kd_fmt_bytes(b, sizeof b, 1536.0), "1.50 KiB");
    CHECK_STR(kd_fmt_count(b, sizeof b, 4346112.0), "4.35M");
    uint64_t o;
    CHECK(kd_mul_overflow(1ull << 40, 1ull << 40, &o));
    CHECK(!kd_mul_overflow(1ull << 20, 1ull << 20, &o) && o == 1ull << 40);
}

TEST(cache_dir_precedence)
{
    char buf[512], *saved = getenv("DISTILL_CACHE") ? strdup(getenv("DISTILL_CACHE")) : NULL;
    setenv("DISTILL_CACHE", "/x/cache", 1);
    CHECK_OK(kd_cache_dir(buf, sizeof buf));
    CHECK_STR(buf, "/x/cache");
    unsetenv("DISTILL_CACHE");
    setenv("XDG_CACHE_HOME", "/y", 1);
    CHECK_OK(kd_cache_dir(buf, sizeof buf));
    CHECK_STR(buf, "/y/distill");
    unsetenv("XDG_CACHE_HOME");
    setenv("DISTILL_CACHE", KD_TEST_TMP "/empty-cache", 1);
    CHECK_ERR(kd_tokenizer_dir("qwen3", buf, sizeof buf), KD_E_NOTFOUND, "run scripts/setup.sh");
    if (saved) {
        setenv("DISTILL_CACHE", saved, 1);
        free(saved);
    } else {
        unsetenv("DISTILL_CACHE");
    }
}

/* scripts/setup.sh fetched the real tokenizer files: each is a byte-level BPE
 * tokenizer.json with a large vocabulary, plus its tokenizer_config.json. */
TEST(tokenizer_files_fetched)
{
    const char *names[] = {"qwen3", "llama3_1", "deepseek_v3"};
    for (int i = 0; i < 3; i++) {
        char dir[1024], file[1100];
        int st = kd_tokenizer_dir(names[i], dir, sizeof dir);
        CHECK_OK(st);
        if (st != KD_OK)
            continue;
        snprintf(file, sizeof file, "%s/tokenizer.json", dir);
        json_error_t e;
        json_t *j = json_load_file(file, 0, &e);
        CHECK(j != NULL);
        if (!j)
            continue;
        json_t *model = json_object_get(j, "model");
        CHECK_STR(json_string_value(json_object_get(model, "type")), "BPE");
        CHECK(json_object_size(json_object_get(model, "vocab")) > 100000);
        CHECK(json_array_size(json_object_get(j, "added_tokens")) > 0);
        json_decref(j);
        snprintf(file, sizeof file, "%s/tokenizer_config.json", dir);
        /* Llama 3.1's model_max_length is 1e30 written as an integer, past
         * int64: jansson reads it only with integers decoded as reals */
        j = json_load_file(file, JSON_DECODE_INT_AS_REAL, &e);
        CHECK(j && json_is_object(j));
        json_decref(j);
    }
}

int main(void)
{
    RUN(status_names_and_context);
    RUN(exit_codes);
    RUN(log_levels);
    RUN(progress_text);
    RUN(dtype_names_sizes);
    RUN(dtype_known_values);
    RUN(dtype_exhaustive_roundtrip);
    RUN(files_and_paths);
    RUN(cache_dir_precedence);
    RUN(tokenizer_files_fetched);
    return test_summary();
}
