/* test_config.c - the schema-driven YAML loader (core/config.h): defaults,
 * files, every error with its position and key path, --set overrides, and the
 * print / load round trip. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/config.h"
#include "core/runtime.h"
#include "core/status.h"
#include "test.h"

/* ---- a schema with every type, and a section two levels deep ------------- */

typedef struct {
    int64_t depth;
    char *label;
    int kind;
    double scale;
    int flag;
    kd_cfg_strlist names;
} inner_cfg;

typedef struct {
    double lr;
    int warm;
    kd_cfg_strlist tags;
    inner_cfg inner;
} opt_cfg;

typedef struct {
    int64_t steps;
    int64_t big;
    double temp;
    int verbose;
    char *out;
    char *note;
    int mode;
    kd_cfg_strlist files;
    opt_cfg opt;
} t_cfg;

static const kd_cfg_field inner_fields[] = {
    KD_CFG_INT(inner_cfg, depth, "3", -10, 10, "how deep"),
    KD_CFG_STRING(inner_cfg, label, "deep", "a label"),
    KD_CFG_ENUM(inner_cfg, kind, "b", "a|b|c", "the kind"),
    KD_CFG_FLOAT(inner_cfg, scale, "0.5", -1, 1, "a scale"),
    KD_CFG_BOOL(inner_cfg, flag, "off", "a flag"),
    KD_CFG_STRLIST(inner_cfg, names, "some names"),
    KD_CFG_END,
};

static const kd_cfg_field opt_fields[] = {
    KD_CFG_FLOAT(opt_cfg, lr, "1e-5", 0, 1, "peak learning rate"),
    KD_CFG_BOOL(opt_cfg, warm, "yes", "warm up first"),
    KD_CFG_STRLIST(opt_cfg, tags, "tags"),
    KD_CFG_SECTION(opt_cfg, inner, inner_fields, "the inner section"),
    KD_CFG_END,
};

static const kd_cfg_field top_fields[] = {
    KD_CFG_INT(t_cfg, steps, "100", 1, 1e9, "optimizer steps"),
    KD_CFG_INT(t_cfg, big, "0", -1e19, 1e19, "any int64"),
    KD_CFG_FLOAT(t_cfg, temp, "1.0", 0, 2, "sampling temperature"),
    KD_CFG_BOOL(t_cfg, verbose, "false", "log more"),
    KD_CFG_STRING(t_cfg, out, "runs/x", "output folder"),
    KD_CFG_STRING(t_cfg, note, NULL, "a free note; ~ for none"),
    KD_CFG_ENUM(t_cfg, mode, "greedy", "greedy|sample|beam", "decoding"),
    KD_CFG_STRLIST(t_cfg, files, "input files"),
    KD_CFG_SECTION(t_cfg, opt, opt_fields, "the optimizer"),
    KD_CFG_END,
};

static const kd_cfg_schema schema = {"test", top_fields, sizeof(t_cfg)};

/* ---- helpers ------------------------------------------------------------- */

static int load(t_cfg *c, const char *yaml)
{
    return kd_cfg_load_string(&schema, c, yaml, strlen(yaml), "t.yaml");
}

/* Defaults, then `yaml` must fail with `code` and a message holding `needle`. */
#define LOAD_ERR(yaml, code, needle)                     \
    do {                                                 \
        t_cfg c_ = {0};                                  \
        CHECK_OK(kd_cfg_defaults(&schema, &c_));         \
        CHECK_ERR(load(&c_, yaml), code, needle);        \
        kd_cfg_release(&schema, &c_);                    \
    } while (0)

/* Defaults, then `set` must fail with `code` and a message holding `needle`. */
#define SET_ERR(set, code, needle)                       \
    do {                                                 \
        t_cfg c_ = {0};                                  \
        CHECK_OK(kd_cfg_defaults(&schema, &c_));         \
        CHECK_ERR(kd_cfg_set(&schema, &c_, set), code, needle); \
        kd_cfg_release(&schema, &c_);                    \
    } while (0)

/* The printed configuration (kd_cfg_text), malloc'd; NULL when printing fails. */
static char *print_cfg(const t_cfg *c, int with_docs)
{
    char *buf = NULL;
    size_t len = 0;
    int st = kd_cfg_text(&schema, c, with_docs, &buf, &len);
    if (st != KD_OK) {
        fprintf(stderr, "print: %s\n", kd_strerror(st));
        return NULL;
    }
    if (len != strlen(buf)) {
        fprintf(stderr, "print: length %zu, string %zu\n", len, strlen(buf));
        free(buf);
        return NULL;
    }
    return buf;
}

static int str_eq(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static int list_eq(const kd_cfg_strlist *a, const kd_cfg_strlist *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->items[i], b->items[i]))
            return 0;
    return 1;
}

/* Field by field; floats bit-exact (memcmp keeps -0 apart from 0). */
static int cfg_eq(const t_cfg *a, const t_cfg *b)
{
    const inner_cfg *ai = &a->opt.inner, *bi = &b->opt.inner;
    return a->steps == b->steps && a->big == b->big && !memcmp(&a->temp, &b->temp, sizeof a->temp) &&
           a->verbose == b->verbose && str_eq(a->out, b->out) && str_eq(a->note, b->note) &&
           a->mode == b->mode && list_eq(&a->files, &b->files) &&
           !memcmp(&a->opt.lr, &b->opt.lr, sizeof a->opt.lr) && a->opt.warm == b->opt.warm &&
           list_eq(&a->opt.tags, &b->opt.tags) && ai->depth == bi->depth && str_eq(ai->label, bi->label) &&
           ai->kind == bi->kind && !memcmp(&ai->scale, &bi->scale, sizeof ai->scale) &&
           ai->flag == bi->flag && list_eq(&ai->names, &bi->names);
}

/* Print `c`, load the text over fresh defaults, and compare. */
static void check_roundtrip(const t_cfg *c, int with_docs)
{
    char *text = print_cfg(c, with_docs);
    CHECK(text != NULL);
    if (!text)
        return;
    t_cfg back = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &back));
    CHECK_OK(kd_cfg_load_string(&schema, &back, text, strlen(text), "printed"));
    CHECK(cfg_eq(c, &back));
    char *again = print_cfg(&back, with_docs);
    CHECK(again && !strcmp(text, again));
    if (!cfg_eq(c, &back))
        fprintf(stderr, "printed text:\n%s\nreprinted:\n%s\n", text, again ? again : "(null)");
    free(again);
    free(text);
    kd_cfg_release(&schema, &back);
}

static int write_tmp(const char *name, const char *text, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", KD_TEST_TMP, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* ---- defaults and valid input -------------------------------------------- */

TEST(defaults)
{
    t_cfg c = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    CHECK_EQ_INT(c.steps, 100);
    CHECK_EQ_INT(c.big, 0);
    CHECK(c.temp == 1.0);
    CHECK_EQ_INT(c.verbose, 0);
    CHECK_STR(c.out, "runs/x");
    CHECK(c.note == NULL);
    CHECK_EQ_INT(c.mode, 0);
    CHECK_EQ_INT(c.files.n, 0);
    CHECK(c.files.items == NULL);
    CHECK(c.opt.lr == 1e-5);
    CHECK_EQ_INT(c.opt.warm, 1);
    CHECK_EQ_INT(c.opt.tags.n, 0);
    CHECK_EQ_INT(c.opt.inner.depth, 3);
    CHECK_STR(c.opt.inner.label, "deep");
    CHECK_EQ_INT(c.opt.inner.kind, 1);
    CHECK(c.opt.inner.scale == 0.5);
    CHECK_EQ_INT(c.opt.inner.flag, 0);
    CHECK_EQ_INT(c.opt.inner.names.n, 0);
    /* Defaults over a filled struct reset it, freeing what it held. */
    CHECK_OK(load(&c, "note: hi\nfiles: [a, b]\nout: elsewhere\n"));
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    CHECK(c.note == NULL);
    CHECK_EQ_INT(c.files.n, 0);
    CHECK_STR(c.out, "runs/x");
    kd_cfg_release(&schema, &c);
    CHECK(c.out == NULL && c.opt.inner.label == NULL);
}

TEST(bad_schema_default)
{
    typedef struct {
        double x;
    } bad_cfg;
    static const kd_cfg_field bad_fields[] = {KD_CFG_FLOAT(bad_cfg, x, "fast", 0, 1, "x"), KD_CFG_END};
    static const kd_cfg_schema bad = {"bad", bad_fields, sizeof(bad_cfg)};
    static const kd_cfg_field range_fields[] = {KD_CFG_FLOAT(bad_cfg, x, "5", 0, 1, "x"), KD_CFG_END};
    static const kd_cfg_schema range = {"range", range_fields, sizeof(bad_cfg)};
    bad_cfg c = {0};
    CHECK_ERR(kd_cfg_defaults(&bad, &c), KD_E_CONFIG, "schema 'bad', default 'fast': x: expected a number");
    CHECK_ERR(kd_cfg_defaults(&range, &c), KD_E_CONFIG, "x: 5 is out of range [0, 1]");
}

static const char valid_yaml[] =
    "# every type, set\n"
    "steps: 0x10\n"
    "big: -9223372036854775808\n"
    "temp: .25\n"
    "verbose: On\n"
    "out: \"runs/with space\"\n"
    "note: 'a note'\n"
    "mode: beam\n"
    "files:\n"
    "  - a.jsonl\n"
    "  - \"b c.jsonl\"\n"
    "opt:\n"
    "  lr: 3\n"
    "  warm: NO\n"
    "  tags: solo\n"
    "  inner:\n"
    "    depth: -10\n"
    "    label: ~\n"
    "    kind: c\n"
    "    scale: -1e-3\n"
    "    flag: TRUE\n"
    "    names: [x, 'y', \"z\"]\n";

TEST(valid_file)
{
    char path[1024];
    CHECK(write_tmp("config_valid.yaml", valid_yaml, path, sizeof path) == 0);
    t_cfg c = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    /* opt.lr = 3 is out of [0, 1]: the file must fail there, then succeed once fixed */
    CHECK_ERR(kd_cfg_load_file(&schema, &c, path), KD_E_CONFIG, ":13:7: opt.lr: 3 is out of range [0, 1]");
    kd_cfg_release(&schema, &c);

    char fixed[sizeof valid_yaml];
    strcpy(fixed, valid_yaml);
    char *lr = strstr(fixed, "lr: 3");
    lr[4] = '1';
    CHECK(write_tmp("config_valid.yaml", fixed, path, sizeof path) == 0);
    memset(&c, 0, sizeof c);
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    CHECK_OK(kd_cfg_load_file(&schema, &c, path));
    CHECK_EQ_INT(c.steps, 16);
    CHECK(c.big == INT64_MIN);
    CHECK(c.temp == 0.25);
    CHECK_EQ_INT(c.verbose, 1);
    CHECK_STR(c.out, "runs/with space");
    CHECK_STR(c.note, "a note");
    CHECK_EQ_INT(c.mode, 2);
    CHECK_EQ_INT(c.files.n, 2);
    if (c.files.n == 2) {
        CHECK_STR(c.files.items[0], "a.jsonl");
        CHECK_STR(c.files.items[1], "b c.jsonl");
    }
    CHECK(c.opt.lr == 1.0);
    CHECK_EQ_INT(c.opt.warm, 0);
    CHECK_EQ_INT(c.opt.tags.n, 1);
    if (c.opt.tags.n == 1)
        CHECK_STR(c.opt.tags.items[0], "solo");
    CHECK_EQ_INT(c.opt.inner.depth, -10);
    CHECK(c.opt.inner.label == NULL);
    CHECK_EQ_INT(c.opt.inner.kind, 2);
    CHECK(c.opt.inner.scale == -1e-3);
    CHECK_EQ_INT(c.opt.inner.flag, 1);
    CHECK_EQ_INT(c.opt.inner.names.n, 3);
    if (c.opt.inner.names.n == 3) {
        CHECK_STR(c.opt.inner.names.items[0], "x");
        CHECK_STR(c.opt.inner.names.items[1], "y");
        CHECK_STR(c.opt.inner.names.items[2], "z");
    }
    /* A later file replaces strings and lists (ASan checks the old ones are freed). */
    CHECK_OK(load(&c, "out: again\nfiles: []\nopt: {inner: {names: one}}\n"));
    CHECK_STR(c.out, "again");
    CHECK_EQ_INT(c.files.n, 0);
    CHECK_EQ_INT(c.opt.inner.names.n, 1);
    kd_cfg_release(&schema, &c);
    CHECK(c.out == NULL && c.note == NULL && c.files.items == NULL && c.opt.inner.names.items == NULL);
}

TEST(scalar_forms)
{
    t_cfg c = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    CHECK_OK(load(&c, "steps: +42\nbig: 9223372036854775807\n"));
    CHECK_EQ_INT(c.steps, 42);
    CHECK(c.big == INT64_MAX);
    CHECK_OK(load(&c, "steps: 0X1f\nbig: -0x10\n"));
    CHECK_EQ_INT(c.steps, 31);
    CHECK_EQ_INT(c.big, -16);
    CHECK_OK(load(&c, "steps: \"7\"\n")); /* the schema decides, not the quoting */
    CHECK_EQ_INT(c.steps, 7);
    CHECK_OK(load(&c, "temp: 2\n"));
    CHECK(c.temp == 2.0);
    CHECK_OK(load(&c, "temp: 1.\n"));
    CHECK(c.temp == 1.0);
    CHECK_OK(load(&c, "temp: 5e-324\n")); /* a subnormal reads back */
    CHECK(c.temp == 5e-324);
    const char *bools[] = {"true", "True", "YES", "on", "false", "False", "no", "OFF"};
    for (int i = 0; i < 8; i++) {
        char y[64];
        snprintf(y, sizeof y, "verbose: %s\n", bools[i]);
        CHECK_OK(load(&c, y));
        CHECK_EQ_INT(c.verbose, i < 4);
    }
    /* null and the strings that look like it */
    CHECK_OK(load(&c, "note: x\n"));
    CHECK_OK(load(&c, "note: null\n"));
    CHECK(c.note == NULL);
    CHECK_OK(load(&c, "note: \"null\"\n"));
    CHECK_STR(c.note, "null");
    CHECK_OK(load(&c, "note:\n"));
    CHECK(c.note == NULL);
    CHECK_OK(load(&c, "note: ''\n"));
    CHECK_STR(c.note, "");
    CHECK_OK(load(&c, "note: ~\n"));
    CHECK(c.note == NULL);
    CHECK_OK(load(&c, "note: !!str ~\n"));
    CHECK_STR(c.note, "~");
    CHECK_OK(load(&c, "note: !!str\n"));
    CHECK_STR(c.note, "");
    CHECK_OK(load(&c, "note: 'it''s'\n"));
    CHECK_STR(c.note, "it's");
    CHECK_OK(load(&c, "note: \"tab\\there \\u00e9\"\n"));
    CHECK_STR(c.note, "tab\there \xc3\xa9");
    CHECK_OK(load(&c, "note: |\n  two\n  lines\n"));
    CHECK_STR(c.note, "two\nlines\n");
    CHECK_OK(load(&c, "files: [\"~\", '']\n"));
    CHECK_EQ_INT(c.files.n, 2);
    CHECK_OK(load(&c, "files: [!!str ~, x, !!str null, !!str, !!str NULL]\nnote: !!str Null\n"));
    CHECK_EQ_INT(c.files.n, 5);
    if (c.files.n == 5) {
        CHECK_STR(c.files.items[0], "~");
        CHECK_STR(c.files.items[2], "null");
        CHECK_STR(c.files.items[3], "");
        CHECK_STR(c.files.items[4], "NULL");
    }
    CHECK_STR(c.note, "Null");
    CHECK_OK(load(&c, "steps: !!int 5\nopt: !!map {tags: !!seq [a]}\n"));
    CHECK_EQ_INT(c.steps, 5);
    /* an anchor alone is harmless */
    CHECK_OK(load(&c, "out: &x somewhere\n"));
    CHECK_STR(c.out, "somewhere");
    kd_cfg_release(&schema, &c);
}

TEST(empty_and_missing)
{
    char path[1024];
    t_cfg c = {0}, d = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    CHECK_OK(kd_cfg_defaults(&schema, &d));
    CHECK(write_tmp("config_empty.yaml", "", path, sizeof path) == 0);
    CHECK_OK(kd_cfg_load_file(&schema, &c, path));
    CHECK(cfg_eq(&c, &d));
    CHECK_OK(load(&c, "# only a comment\n\n"));
    CHECK_OK(load(&c, "---\n"));
    CHECK_OK(load(&c, "--- ~\n...\n"));
    CHECK_OK(load(&c, "{}\n"));
    CHECK_OK(kd_cfg_load_string(&schema, &c, NULL, 0, NULL));
    CHECK(cfg_eq(&c, &d));
    snprintf(path, sizeof path, "%s/config_no_such_file.yaml", KD_TEST_TMP);
    CHECK_ERR(kd_cfg_load_file(&schema, &c, path), KD_E_NOTFOUND, "config_no_such_file.yaml");
    kd_cfg_release(&schema, &c);
    kd_cfg_release(&schema, &d);
}

/* ---- errors -------------------------------------------------------------- */

TEST(unknown_keys)
{
    LOAD_ERR("steps: 5\nstepz: 6\n", KD_E_CONFIG,
             "t.yaml:2:1: stepz: unknown key (known top-level keys: steps, big, temp, verbose, out, note, mode, "
             "files, opt)");
    LOAD_ERR("opt:\n  inner:\n    depth: 1\n    dept: 2\n", KD_E_CONFIG,
             "t.yaml:4:5: opt.inner.dept: unknown key (known keys in 'opt.inner': depth, label, kind, scale, "
             "flag, names)");
    LOAD_ERR("opt:\n  lrr: 0.1\n", KD_E_CONFIG,
             "t.yaml:2:3: opt.lrr: unknown key (known keys in 'opt': lr, warm, tags, inner)");
    LOAD_ERR("\"steps\\0x\": 1\n", KD_E_CONFIG, "t.yaml:1:1: steps: unknown key");
    LOAD_ERR("? [a, b]\n: 1\n", KD_E_CONFIG, "t.yaml:1:3: a key must be a scalar, got a sequence");
}

TEST(wrong_types)
{
    LOAD_ERR("steps: 1.5\n", KD_E_CONFIG, "t.yaml:1:8: steps: expected an integer, got '1.5'");
    LOAD_ERR("steps: 1e3\n", KD_E_CONFIG, "t.yaml:1:8: steps: expected an integer, got '1e3'");
    LOAD_ERR("steps: fast\n", KD_E_CONFIG, "t.yaml:1:8: steps: expected an integer, got 'fast'");
    LOAD_ERR("steps: 0x\n", KD_E_CONFIG, "steps: expected an integer, got '0x'");
    LOAD_ERR("steps: 1_000\n", KD_E_CONFIG, "steps: expected an integer, got '1_000'");
    LOAD_ERR("steps: \" 5\"\n", KD_E_CONFIG, "steps: expected an integer, got ' 5'");
    LOAD_ERR("temp: fast\n", KD_E_CONFIG, "t.yaml:1:7: temp: expected a number, got 'fast'");
    LOAD_ERR("temp: nan\n", KD_E_CONFIG, "temp: expected a number, got 'nan'");
    LOAD_ERR("temp: .inf\n", KD_E_CONFIG, "temp: expected a number, got '.inf'");
    LOAD_ERR("temp: -inf\n", KD_E_CONFIG, "temp: expected a number, got '-inf'");
    LOAD_ERR("temp: 0x1p0\n", KD_E_CONFIG, "temp: expected a number, got '0x1p0'");
    LOAD_ERR("temp: 1e\n", KD_E_CONFIG, "temp: expected a number, got '1e'");
    LOAD_ERR("verbose: maybe\n", KD_E_CONFIG, "t.yaml:1:10: verbose: expected true or false, got 'maybe'");
    LOAD_ERR("verbose: 1\n", KD_E_CONFIG, "verbose: expected true or false, got '1'");
    LOAD_ERR("out: [a]\n", KD_E_CONFIG, "t.yaml:1:6: out: expected a string, got a sequence");
    LOAD_ERR("out: \"a\\0b\"\n", KD_E_CONFIG, "t.yaml:1:6: out: a NUL character cannot be part of a string");
    LOAD_ERR("mode: fats\n", KD_E_CONFIG, "t.yaml:1:7: mode: 'fats' is not one of greedy|sample|beam");
    LOAD_ERR("mode: Greedy\n", KD_E_CONFIG, "mode: 'Greedy' is not one of greedy|sample|beam");
    LOAD_ERR("mode: {a: 1}\n", KD_E_CONFIG, "mode: expected one of greedy|sample|beam, got a mapping");
    LOAD_ERR("files: {a: 1}\n", KD_E_CONFIG, "t.yaml:1:8: files: expected a list of strings, got a mapping");
    LOAD_ERR("files: [a, [b]]\n", KD_E_CONFIG, "t.yaml:1:12: files[1]: expected a string, got a sequence");
    LOAD_ERR("files: [!!str ~, ~]\n", KD_E_CONFIG, "t.yaml:1:18: files[1]: expected a string, got null");
    LOAD_ERR("opt:\n  tags:\n    - a\n    - ~\n", KD_E_CONFIG,
             "t.yaml:4:7: opt.tags[1]: expected a string, got null");
    LOAD_ERR("opt:\n  inner:\n    kind: [a]\n", KD_E_CONFIG,
             "t.yaml:3:11: opt.inner.kind: expected one of a|b|c, got a sequence");
    LOAD_ERR("opt:\n  inner:\n    scale: x\n", KD_E_CONFIG, "t.yaml:3:12: opt.inner.scale: expected a number");
    LOAD_ERR("opt:\n  inner:\n    flag: 2\n", KD_E_CONFIG, "t.yaml:3:11: opt.inner.flag: expected true or false");
    /* a long value is cut in the message */
    LOAD_ERR("steps: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", KD_E_CONFIG,
             "aaaaaaaaaa...'");
}

TEST(nulls)
{
    LOAD_ERR("steps: ~\n", KD_E_CONFIG, "t.yaml:1:8: steps: expected an integer, got null");
    LOAD_ERR("steps: null\n", KD_E_CONFIG, "steps: expected an integer, got null");
    LOAD_ERR("steps:\ntemp: 1\n", KD_E_CONFIG, "steps: expected an integer, got null");
    LOAD_ERR("temp: NULL\n", KD_E_CONFIG, "temp: expected a number, got null");
    LOAD_ERR("verbose: ~\n", KD_E_CONFIG, "verbose: expected true or false, got null");
    LOAD_ERR("mode: ~\n", KD_E_CONFIG, "mode: expected one of greedy|sample|beam, got null");
    LOAD_ERR("files: ~\n", KD_E_CONFIG, "files: expected a list of strings, got null");
    /* a section with every key commented out is null: it changes nothing */
    t_cfg c = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    CHECK_OK(load(&c, "opt:\n#  lr: 0.5\nsteps: 7\n"));
    CHECK_OK(load(&c, "opt: ~\n"));
    CHECK_EQ_INT(c.steps, 7);
    CHECK(c.opt.lr == 1e-5);
    CHECK_EQ_INT(c.opt.inner.depth, 3);
    kd_cfg_release(&schema, &c);
}

TEST(ranges)
{
    LOAD_ERR("steps: 0\n", KD_E_CONFIG, "t.yaml:1:8: steps: 0 is out of range [1, 1000000000]");
    LOAD_ERR("steps: 1000000001\n", KD_E_CONFIG, "t.yaml:1:8: steps: 1000000001 is out of range [1, 1000000000]");
    LOAD_ERR("steps: -5\n", KD_E_CONFIG, "steps: -5 is out of range [1, 1000000000]");
    LOAD_ERR("big: 9223372036854775808\n", KD_E_CONFIG, "big: 9223372036854775808 is out of range");
    LOAD_ERR("big: -0x8000000000000001\n", KD_E_CONFIG, "big: -0x8000000000000001 is out of range");
    LOAD_ERR("opt:\n  inner:\n    depth: -11\n", KD_E_CONFIG,
             "t.yaml:3:12: opt.inner.depth: -11 is out of range [-10, 10]");
    LOAD_ERR("opt:\n  inner:\n    depth: 11\n", KD_E_CONFIG, "opt.inner.depth: 11 is out of range [-10, 10]");
    LOAD_ERR("temp: -0.1\n", KD_E_CONFIG, "t.yaml:1:7: temp: -0.1 is out of range [0, 2]");
    LOAD_ERR("temp: 2.0000001\n", KD_E_CONFIG, "temp: 2.0000001 is out of range [0, 2]");
    LOAD_ERR("temp: 1e400\n", KD_E_CONFIG, "temp: 1e400 is out of range [0, 2]");
    LOAD_ERR("opt:\n  inner:\n    scale: -1.5\n", KD_E_CONFIG, "opt.inner.scale: -1.5 is out of range [-1, 1]");
    LOAD_ERR("opt:\n  inner:\n    scale: 1.5\n", KD_E_CONFIG, "opt.inner.scale: 1.5 is out of range [-1, 1]");
    /* the bounds themselves are in range */
    t_cfg c = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    CHECK_OK(load(&c, "steps: 1\ntemp: 0\nopt: {inner: {depth: 10, scale: -1}}\n"));
    CHECK_OK(load(&c, "steps: 1000000000\ntemp: 2\nopt: {inner: {depth: -10, scale: 1}}\n"));
    kd_cfg_release(&schema, &c);
}

TEST(structure)
{
    LOAD_ERR("steps: 1\ntemp: 1\nsteps: 2\n", KD_E_CONFIG, "t.yaml:3:1: steps: duplicate key");
    LOAD_ERR("opt:\n  inner:\n    depth: 1\n    depth: 2\n", KD_E_CONFIG, "t.yaml:4:5: opt.inner.depth: duplicate key");
    LOAD_ERR("opt: 5\n", KD_E_CONFIG, "t.yaml:1:6: opt: expected a mapping, got '5'");
    LOAD_ERR("opt:\n  inner: [1, 2]\n", KD_E_CONFIG, "t.yaml:2:10: opt.inner: expected a mapping, got a sequence");
    LOAD_ERR("steps:\n  a: 1\n", KD_E_CONFIG, "t.yaml:2:3: steps: expected an integer, got a mapping");
    LOAD_ERR("out:\n  a: 1\n", KD_E_CONFIG, "t.yaml:2:3: out: expected a string, got a mapping");
    LOAD_ERR("- a\n- b\n", KD_E_CONFIG, "t.yaml:1:1: the document must be a mapping of keys, got a sequence");
    LOAD_ERR("hello\n", KD_E_CONFIG, "t.yaml:1:1: the document must be a mapping of keys, got 'hello'");
    LOAD_ERR("steps: 1\n---\nsteps: 2\n", KD_E_CONFIG,
             "t.yaml:2:1: a second YAML document starts here; a configuration is one document");
    LOAD_ERR("out: &a x\nnote: *a\n", KD_E_CONFIG, "t.yaml:2:7: alias '*a' is not supported");
    LOAD_ERR("opt: &o\n  lr: 0.1\nopt2: *o\n", KD_E_CONFIG, "t.yaml:3:7: alias '*o' is not supported");
    LOAD_ERR("out: !foo x\n", KD_E_CONFIG, "t.yaml:1:6: tag '!foo' is not supported");
    LOAD_ERR("out: !!python/object x\n", KD_E_CONFIG, "tag 'tag:yaml.org,2002:python/object' is not supported");
}

TEST(syntax_errors)
{
    LOAD_ERR("steps: 1\n  temp: 2\n", KD_E_FORMAT, "t.yaml:2:7: mapping values are not allowed in this context");
    LOAD_ERR("steps: 1\nfiles: [a, b\ntemp: 1\n", KD_E_FORMAT, "t.yaml:3:5: did not find expected ',' or ']' (while parsing a flow sequence at 2:8)");
    LOAD_ERR("steps: 1\nout: \"abc\n", KD_E_FORMAT, "t.yaml:3:1: found unexpected end of stream");
    LOAD_ERR("steps: 1\nout: a\x01z\n", KD_E_FORMAT, "t.yaml:2:7: control characters are not allowed (#x1)");
    LOAD_ERR("out: \xff\n", KD_E_FORMAT, "t.yaml:1:6: invalid leading UTF-8 octet");
    LOAD_ERR("\tsteps: 1\n", KD_E_FORMAT, "t.yaml:1:1:");
}

/* ---- overrides ----------------------------------------------------------- */

TEST(overrides)
{
    char path[1024];
    t_cfg c = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    CHECK_OK(kd_cfg_set(&schema, &c, "opt.inner.depth=-2"));
    CHECK_EQ_INT(c.opt.inner.depth, -2);
    CHECK_OK(kd_cfg_set(&schema, &c, "out=\"x y\""));
    CHECK_STR(c.out, "x y");
    CHECK_OK(kd_cfg_set(&schema, &c, "out=plain words here"));
    CHECK_STR(c.out, "plain words here");
    CHECK_OK(kd_cfg_set(&schema, &c, "out=a=b"));
    CHECK_STR(c.out, "a=b");
    CHECK_OK(kd_cfg_set(&schema, &c, "note="));
    CHECK(c.note == NULL);
    CHECK_OK(kd_cfg_set(&schema, &c, "note='null'"));
    CHECK_STR(c.note, "null");
    CHECK_OK(kd_cfg_set(&schema, &c, "files=[a, \"b c\", d]"));
    CHECK_EQ_INT(c.files.n, 3);
    if (c.files.n == 3)
        CHECK_STR(c.files.items[1], "b c");
    CHECK_OK(kd_cfg_set(&schema, &c, "opt.tags=one"));
    CHECK_EQ_INT(c.opt.tags.n, 1);
    CHECK_OK(kd_cfg_set(&schema, &c, "opt.tags=[]"));
    CHECK_EQ_INT(c.opt.tags.n, 0);
    CHECK_OK(kd_cfg_set(&schema, &c, "mode=sample"));
    CHECK_EQ_INT(c.mode, 1);
    CHECK_OK(kd_cfg_set(&schema, &c, "verbose=yes"));
    CHECK_EQ_INT(c.verbose, 1);
    CHECK_OK(kd_cfg_set(&schema, &c, "opt.lr=2.5e-4"));
    CHECK(c.opt.lr == 2.5e-4);
    kd_cfg_release(&schema, &c);

    SET_ERR("temp=fast", KD_E_CONFIG, "--set temp=fast: temp: expected a number, got 'fast'");
    SET_ERR("steps=0", KD_E_CONFIG, "--set steps=0: steps: 0 is out of range [1, 1000000000]");
    SET_ERR("opt.inner.depth=99", KD_E_CONFIG, "--set opt.inner.depth=99: opt.inner.depth: 99 is out of range");
    SET_ERR("opt.lrr=1", KD_E_CONFIG, "--set opt.lrr=1: opt.lrr: unknown key (known keys in 'opt': lr, warm, tags, inner)");
    SET_ERR("opt.inner.x.y=1", KD_E_CONFIG, "opt.inner.x: unknown key (known keys in 'opt.inner': depth,");
    SET_ERR("nope=1", KD_E_CONFIG, "--set nope=1: nope: unknown key (known top-level keys: steps,");
    SET_ERR("steps.x=1", KD_E_CONFIG, "--set steps.x=1: steps.x: 'steps' is not a section");
    SET_ERR("opt=1", KD_E_CONFIG, "--set opt=1: opt: is a section; set its keys one at a time (lr, warm, tags, inner)");
    SET_ERR("opt.inner={depth: 1}", KD_E_CONFIG, "opt.inner: is a section");
    SET_ERR("steps", KD_E_USAGE, "--set steps: expected key.path=value");
    SET_ERR("=5", KD_E_CONFIG, "unknown key");
    SET_ERR("out=\"x y", KD_E_CONFIG, "--set out=\"x y: out: found unexpected end of stream");
    SET_ERR("out=[a]", KD_E_CONFIG, "--set out=[a]: out: expected a string, got a sequence");
    SET_ERR("files=[a, [b]]", KD_E_CONFIG, "files[1]: expected a string, got a sequence");
    SET_ERR("out=*a", KD_E_CONFIG, "alias '*a' is not supported");
    SET_ERR("steps=1\n---\n2", KD_E_CONFIG, "a second YAML document");
    SET_ERR("steps=", KD_E_CONFIG, "--set steps=: steps: expected an integer, got null");

    /* an override over a file value */
    CHECK(write_tmp("config_over.yaml", "steps: 5\nopt:\n  inner:\n    label: from-file\n", path, sizeof path) == 0);
    char *sets[] = {"opt.inner.label=from set", "steps=6"};
    memset(&c, 0, sizeof c);
    CHECK_OK(kd_cfg_build(&schema, &c, path, sets, 2));
    CHECK_EQ_INT(c.steps, 6);
    CHECK_STR(c.opt.inner.label, "from set");
    kd_cfg_release(&schema, &c);
}

TEST(build)
{
    char path[1024];
    t_cfg c = {0};
    CHECK_OK(kd_cfg_build(&schema, &c, NULL, NULL, 0));
    CHECK_EQ_INT(c.steps, 100);
    kd_cfg_release(&schema, &c);

    /* stops at the first failing override; the later one is not applied */
    char *sets[] = {"steps=7", "temp=fast", "mode=beam"};
    memset(&c, 0, sizeof c);
    CHECK_ERR(kd_cfg_build(&schema, &c, NULL, sets, 3), KD_E_CONFIG, "--set temp=fast");
    CHECK_EQ_INT(c.steps, 7);
    CHECK_EQ_INT(c.mode, 0);
    kd_cfg_release(&schema, &c);

    /* a file error stops before the overrides */
    CHECK(write_tmp("config_bad.yaml", "steps: 3\ntemp: hot\n", path, sizeof path) == 0);
    memset(&c, 0, sizeof c);
    CHECK_ERR(kd_cfg_build(&schema, &c, path, sets, 1), KD_E_CONFIG, "config_bad.yaml:2:7: temp: expected a number");
    CHECK_EQ_INT(c.steps, 3);
    kd_cfg_release(&schema, &c);

    memset(&c, 0, sizeof c);
    snprintf(path, sizeof path, "%s/config_missing.yaml", KD_TEST_TMP);
    CHECK_ERR(kd_cfg_build(&schema, &c, path, NULL, 0), KD_E_NOTFOUND, "config_missing.yaml");
    kd_cfg_release(&schema, &c);
}

/* ---- printing ------------------------------------------------------------ */

TEST(print_roundtrip)
{
    t_cfg c = {0};
    CHECK_OK(kd_cfg_defaults(&schema, &c));
    check_roundtrip(&c, 0);
    check_roundtrip(&c, 1);

    char *text = print_cfg(&c, 1);
    CHECK_HAS(text, "# optimizer steps\nsteps: 100\n");
    CHECK_HAS(text, "note: ~\n");
    CHECK_HAS(text, "out: \"runs/x\"\n");
    CHECK_HAS(text, "mode: greedy\n");
    CHECK_HAS(text, "files: []\n");
    CHECK_HAS(text, "# the optimizer\nopt:\n  # peak learning rate\n  lr: 1e-05\n");
    CHECK_HAS(text, "  # the inner section\n  inner:\n    # how deep\n    depth: 3\n");
    CHECK_HAS(text, "    kind: b\n");
    free(text);
    text = print_cfg(&c, 0);
    CHECK(text && !strchr(text, '#'));
    free(text);

    /* every field changed, strings that need escapes, floats that need all digits */
    CHECK_OK(load(&c, "steps: 123456789\nbig: -9223372036854775808\ntemp: 0.1\nverbose: yes\n"
                      "out: \"q\\\"uote \\\\ back\\nnew\\ttab \\r cr\"\n"
                      "note: \"\\x01 \\x7f \\x85 \\u00a0 \\u2028 \\u2029 \\ufeff \\U0001F600 # not: a comment\"\n"
                      "mode: beam\nfiles: [\"\", \"~\", null?, 'a, b', \"]\"]\n"
                      "opt:\n  lr: 0.30000000000000004\n  warm: off\n  tags: [x]\n"
                      "  inner: {depth: -7, label: 'yes', kind: a, scale: -0.0, flag: on, names: [\"- x\", \": y\"]}\n"));
    CHECK_EQ_INT(c.files.n, 5);
    check_roundtrip(&c, 0);
    check_roundtrip(&c, 1);
    text = print_cfg(&c, 0);
    CHECK_HAS(text, "temp: 0.1\n");
    CHECK_HAS(text, "lr: 0.30000000000000004\n");
    CHECK_HAS(text, "big: -9223372036854775808\n");
    CHECK_HAS(text, "out: \"q\\\"uote \\\\ back\\nnew\\ttab \\r cr\"\n");
    CHECK_HAS(text, "\\x01 \\x7F \\x85 \xc2\xa0 \\u2028 \\u2029 \\uFEFF \xf0\x9f\x98\x80");
    CHECK_HAS(text, "label: \"yes\"\n");
    CHECK_HAS(text, "scale: -0\n");
    free(text);

    c.opt.inner.scale = 4.9406564584124654e-324;
    c.temp = 1.9999999999999998;
    check_roundtrip(&c, 1);

    /* a string that is not UTF-8 cannot be printed (it never comes from a file) */
    free(c.note);
    c.note = strdup("bad \xc3");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK_ERR(kd_cfg_print(&schema, &c, f, 0), KD_E_UTF8, "note: the string is not valid UTF-8");
    fclose(f);
    free(buf);
    char *txt = (char *)"untouched";
    CHECK_ERR(kd_cfg_text(&schema, &c, 0, &txt, NULL), KD_E_UTF8, "note: the string is not valid UTF-8");
    CHECK_STR(txt, "untouched");
    free(c.note);
    c.note = NULL;
    c.opt.inner.kind = 3; /* past a|b|c: a caller's bug, reported rather than printed */
    f = open_memstream(&buf, &len);
    CHECK_ERR(kd_cfg_print(&schema, &c, f, 0), KD_E_INTERNAL, "opt.inner.kind: enum index 3 is not one of a|b|c");
    fclose(f);
    free(buf);
    kd_cfg_release(&schema, &c);
}

/* A schema of one empty section prints "{}" for it, which loads back. */
TEST(print_empty_section)
{
    typedef struct {
        int dummy;
    } e_cfg;
    typedef struct {
        e_cfg empty;
        int64_t n;
    } p_cfg;
    static const kd_cfg_field empty_fields[] = {KD_CFG_END};
    static const kd_cfg_field p_fields[] = {
        KD_CFG_SECTION(p_cfg, empty, empty_fields, "nothing yet"),
        KD_CFG_INT(p_cfg, n, "1", 0, 9, "n"),
        KD_CFG_END,
    };
    static const kd_cfg_schema ps = {"p", p_fields, sizeof(p_cfg)};
    p_cfg c = {0};
    CHECK_OK(kd_cfg_defaults(&ps, &c));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK_OK(kd_cfg_print(&ps, &c, f, 1));
    fclose(f);
    CHECK_STR(buf, "# nothing yet\nempty: {}\n# n\nn: 1\n");
    CHECK_OK(kd_cfg_load_string(&ps, &c, buf, len, "p"));
    free(buf);
}

/* ---- STEPS: a list of tagged sub-configurations ------------------------ */

typedef struct {
    char *where;
    int64_t n;
} step_a_cfg;
typedef struct {
    int fast;
    kd_cfg_strlist files;
} step_b_cfg;
typedef struct {
    char *name;
    kd_cfg_steps steps;
} steps_cfg;
static const kd_cfg_field step_a_fields[] = {KD_CFG_STRING(step_a_cfg, where, "all", "a predicate"),
                                             KD_CFG_INT(step_a_cfg, n, "3", 0, 10, "a count"), KD_CFG_END};
static const kd_cfg_field step_b_fields[] = {KD_CFG_BOOL(step_b_cfg, fast, "false", "go fast"),
                                             KD_CFG_STRLIST(step_b_cfg, files, "some files"), KD_CFG_END};
static const kd_cfg_schema step_a_schema = {"a", step_a_fields, sizeof(step_a_cfg)};
static const kd_cfg_schema step_b_schema = {"b", step_b_fields, sizeof(step_b_cfg)};
static const kd_cfg_step_kind step_kinds[] = {{"alpha", &step_a_schema}, {"beta", &step_b_schema}, {NULL, NULL}};
static const kd_cfg_field steps_fields[] = {KD_CFG_STRING(steps_cfg, name, "x", "a name"),
                                            KD_CFG_STEPS(steps_cfg, steps, step_kinds, "the steps"), KD_CFG_END};
static const kd_cfg_schema steps_schema = {"steps", steps_fields, sizeof(steps_cfg)};

TEST(steps_load)
{
    steps_cfg c;
    memset(&c, 0, sizeof c);
    CHECK_OK(kd_cfg_defaults(&steps_schema, &c));
    CHECK_EQ_INT(c.steps.n, 0);
    const char *y = "name: n\nsteps:\n  - alpha: {n: 7}\n  - beta:\n      fast: true\n      files: [f1, f2]\n"
                    "  - alpha:\n  - alpha: {where: \"x == 1\"}\n";
    CHECK_OK(kd_cfg_load_string(&steps_schema, &c, y, strlen(y), "s.yaml"));
    CHECK_EQ_INT(c.steps.n, 4);
    CHECK_EQ_INT(c.steps.items[0].kind, 0);
    CHECK_EQ_INT(((step_a_cfg *)c.steps.items[0].cfg)->n, 7);
    CHECK_STR(((step_a_cfg *)c.steps.items[0].cfg)->where, "all"); /* defaults first */
    CHECK_EQ_INT(c.steps.items[1].kind, 1);
    CHECK_EQ_INT(((step_b_cfg *)c.steps.items[1].cfg)->fast, 1);
    CHECK_EQ_INT(((step_b_cfg *)c.steps.items[1].cfg)->files.n, 2);
    CHECK_EQ_INT(((step_a_cfg *)c.steps.items[2].cfg)->n, 3); /* null body: all defaults */
    CHECK_STR(((step_a_cfg *)c.steps.items[3].cfg)->where, "x == 1");
    /* --set into an item, by index and kind */
    CHECK_OK(kd_cfg_set(&steps_schema, &c, "steps.0.alpha.n=9"));
    CHECK_EQ_INT(((step_a_cfg *)c.steps.items[0].cfg)->n, 9);
    CHECK_ERR(kd_cfg_set(&steps_schema, &c, "steps.1.alpha.n=9"), KD_E_CONFIG, "step 1 of 'steps' is 'beta'");
    CHECK_ERR(kd_cfg_set(&steps_schema, &c, "steps.4.alpha.n=9"), KD_E_CONFIG, "has 4 steps");
    CHECK_ERR(kd_cfg_set(&steps_schema, &c, "steps=[]"), KD_E_CONFIG, "is a list of steps");
    CHECK_ERR(kd_cfg_set(&steps_schema, &c, "steps.0.alpha.n=11"), KD_E_CONFIG, "steps[0].alpha.n");
    /* print round-trips */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK_OK(kd_cfg_print(&steps_schema, &c, f, 1));
    fclose(f);
    CHECK_HAS(buf, "steps:\n  - alpha:\n      # a predicate\n      where: \"all\"\n");
    steps_cfg d;
    memset(&d, 0, sizeof d);
    CHECK_OK(kd_cfg_defaults(&steps_schema, &d));
    CHECK_OK(kd_cfg_load_string(&steps_schema, &d, buf, len, "printed"));
    CHECK_EQ_INT(d.steps.n, 4);
    CHECK_EQ_INT(((step_a_cfg *)d.steps.items[0].cfg)->n, 9);
    CHECK_STR(((step_b_cfg *)d.steps.items[1].cfg)->files.items[1], "f2");
    CHECK_STR(((step_a_cfg *)d.steps.items[3].cfg)->where, "x == 1");
    char *buf2 = NULL;
    size_t len2 = 0;
    f = open_memstream(&buf2, &len2);
    CHECK_OK(kd_cfg_print(&steps_schema, &d, f, 1));
    fclose(f);
    CHECK_STR(buf, buf2);
    free(buf);
    free(buf2);
    /* a new list replaces the old one whole; the empty list prints as [] */
    CHECK_OK(kd_cfg_load_string(&steps_schema, &d, "steps: []\n", 10, "e"));
    CHECK_EQ_INT(d.steps.n, 0);
    buf = NULL;
    f = open_memstream(&buf, &len);
    CHECK_OK(kd_cfg_print(&steps_schema, &d, f, 0));
    fclose(f);
    CHECK_HAS(buf, "steps: []\n");
    free(buf);
    kd_cfg_release(&steps_schema, &d);
    kd_cfg_release(&steps_schema, &c);
    CHECK_EQ_INT(c.steps.n, 0);
}

TEST(steps_errors)
{
    steps_cfg c;
    memset(&c, 0, sizeof c);
    CHECK_OK(kd_cfg_defaults(&steps_schema, &c));
    const char *y1 = "steps:\n  - alpha: {}\n  - gamma: {}\n";
    CHECK_ERR(kd_cfg_load_string(&steps_schema, &c, y1, strlen(y1), "s.yaml"), KD_E_CONFIG,
              "s.yaml:3:5: steps[1]: unknown step 'gamma' (known steps: alpha, beta)");
    const char *y2 = "steps:\n  - alpha: {}\n  - beta: {}\n  - alpha: {nn: 1}\n";
    CHECK_ERR(kd_cfg_load_string(&steps_schema, &c, y2, strlen(y2), "s.yaml"), KD_E_CONFIG,
              "s.yaml:4:13: steps[2].alpha.nn: unknown key");
    const char *y3 = "steps:\n  - alpha: {n: 99}\n";
    CHECK_ERR(kd_cfg_load_string(&steps_schema, &c, y3, strlen(y3), "s.yaml"), KD_E_CONFIG, "steps[0].alpha.n");
    const char *y4 = "steps:\n  - alpha: {}\n    beta: {}\n";
    CHECK_ERR(kd_cfg_load_string(&steps_schema, &c, y4, strlen(y4), "s.yaml"), KD_E_CONFIG,
              "steps[0]: a step is a mapping with one key");
    const char *y5 = "steps: alpha\n";
    CHECK_ERR(kd_cfg_load_string(&steps_schema, &c, y5, strlen(y5), "s.yaml"), KD_E_CONFIG, "expected a list of steps");
    const char *y6 = "steps:\n  - alpha: [1]\n";
    CHECK_ERR(kd_cfg_load_string(&steps_schema, &c, y6, strlen(y6), "s.yaml"), KD_E_CONFIG, "steps[0].alpha");
    const char *y7 = "steps:\n  - 3\n";
    CHECK_ERR(kd_cfg_load_string(&steps_schema, &c, y7, strlen(y7), "s.yaml"), KD_E_CONFIG, "steps[0]");
    /* the failed loads left the (empty) list as it was */
    CHECK_EQ_INT(c.steps.n, 0);
    kd_cfg_release(&steps_schema, &c);
}

/* runtime.threads takes effect in this process (OpenMP has read its
 * environment long before the config is applied) */
TEST(runtime_threads)
{
#ifdef _OPENMP
    unsetenv("OMP_NUM_THREADS");
    kd_runtime_config rt = {.seed = 1, .device = KD_DEVICE_CPU, .threads = 1, .progress_seconds = 10};
    CHECK_OK(kd_runtime_apply(&rt));
    CHECK_EQ_INT(omp_get_max_threads(), 1);
    CHECK_STR(getenv("OMP_NUM_THREADS"), "1");
#endif
}

int main(void)
{
    RUN(defaults);
    RUN(bad_schema_default);
    RUN(valid_file);
    RUN(scalar_forms);
    RUN(empty_and_missing);
    RUN(unknown_keys);
    RUN(wrong_types);
    RUN(nulls);
    RUN(ranges);
    RUN(structure);
    RUN(syntax_errors);
    RUN(overrides);
    RUN(build);
    RUN(print_roundtrip);
    RUN(print_empty_section);
    RUN(steps_load);
    RUN(steps_errors);
    RUN(runtime_threads);
    return test_summary();
}
