/* fuzz_config.c - libFuzzer harness for the YAML configuration loader.
 *
 * Each input is loaded (kd_cfg_load_string) over the defaults of a schema
 * with every field type and a section two levels deep, then printed. The
 * printed text must load back into a second struct that equals the first,
 * field by field, and prints identically: anything else is a loader or
 * printer bug, and aborts. This holds even when the load failed, since a
 * failed load leaves every field valid. The input is also tried as one --set
 * assignment.
 *
 *     fuzz_config -max_total_time=60 /tmp/corpus  (seeds: tests/fuzz/corpus/config/)
 */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/status.h"

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
    kd_cfg_steps pipeline;
} fz_cfg;

static const kd_cfg_field inner_fields[] = {
    KD_CFG_INT(inner_cfg, depth, "3", -10, 10, "how deep"),
    KD_CFG_STRING(inner_cfg, label, "deep", "a label"),
    KD_CFG_ENUM(inner_cfg, kind, "b", "a|b|c", "the kind"),
    KD_CFG_FLOAT(inner_cfg, scale, "0.5", -1e300, 1e300, "a scale"),
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

static const kd_cfg_schema inner_schema = {"inner", inner_fields, sizeof(inner_cfg)};
static const kd_cfg_schema opt_schema = {"opt", opt_fields, sizeof(opt_cfg)};
static const kd_cfg_step_kind step_kinds[] = {{"inner", &inner_schema}, {"opt", &opt_schema}, {NULL, NULL}};

static const kd_cfg_field top_fields[] = {
    KD_CFG_INT(fz_cfg, steps, "100", 1, 1e9, "optimizer steps"),
    KD_CFG_INT(fz_cfg, big, "0", -1e19, 1e19, "any int64"),
    KD_CFG_FLOAT(fz_cfg, temp, "1.0", -DBL_MAX, DBL_MAX, "any finite double"),
    KD_CFG_BOOL(fz_cfg, verbose, "false", "log more"),
    KD_CFG_STRING(fz_cfg, out, "runs/x", "output folder"),
    KD_CFG_STRING(fz_cfg, note, NULL, "a free note"),
    KD_CFG_ENUM(fz_cfg, mode, "greedy", "greedy|sample|beam", "decoding"),
    KD_CFG_STRLIST(fz_cfg, files, "input files"),
    KD_CFG_SECTION(fz_cfg, opt, opt_fields, "the optimizer"),
    KD_CFG_STEPS(fz_cfg, pipeline, step_kinds, "a list of steps"),
    KD_CFG_END,
};

static const kd_cfg_schema schema = {"fuzz", top_fields, sizeof(fz_cfg)};

/* The printed configuration, malloc'd; aborts if printing fails (it cannot
 * for a struct the loader filled: every string in it is valid UTF-8). */
static char *print_or_die(const fz_cfg *c, int with_docs, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        abort();
    int st = kd_cfg_print(&schema, c, f, with_docs);
    fclose(f);
    if (st != KD_OK) {
        fprintf(stderr, "print failed: %s\n", kd_strerror(st));
        abort();
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

/* Field by field, doubles bit for bit. Comparing printed texts alone would
 * miss a printer that loses precision: its second print repeats the first. */
static int cfg_eq(const fz_cfg *a, const fz_cfg *b)
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

/* Print `a`, load that into a zeroed struct (the text sets every field): the
 * two structs must be equal, and print the same text. */
static void check_roundtrip(const fz_cfg *a, int with_docs)
{
    size_t len1, len2;
    char *t1 = print_or_die(a, with_docs, &len1);
    fz_cfg b = {0};
    int st = kd_cfg_load_string(&schema, &b, t1, len1, "printed");
    if (st != KD_OK) {
        fprintf(stderr, "printed config does not load: %s\n--- text:\n%s\n", kd_strerror(st), t1);
        abort();
    }
    char *t2 = print_or_die(&b, with_docs, &len2);
    if (!cfg_eq(a, &b)) {
        fprintf(stderr, "round trip changed a value\n--- printed:\n%s\n--- reloaded and printed:\n%s\n", t1, t2);
        abort();
    }
    if (len1 != len2 || memcmp(t1, t2, len1) != 0) {
        fprintf(stderr, "round trip differs\n--- first:\n%s\n--- second:\n%s\n", t1, t2);
        abort();
    }
    free(t1);
    free(t2);
    kd_cfg_release(&schema, &b);
}

static char *dup_or_die(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        abort();
    return d;
}

static kd_cfg_strlist duplist_or_die(const kd_cfg_strlist *l)
{
    kd_cfg_strlist d = {NULL, l->n};
    if (l->n && !(d.items = calloc(l->n, sizeof *d.items)))
        abort();
    for (size_t i = 0; i < l->n; i++)
        d.items[i] = dup_or_die(l->items[i]);
    return d;
}

/* A deep copy of the defaults, which are parsed once: kd_cfg_defaults runs
 * libyaml for every field, and would otherwise dominate each run. */
static void defaults_copy(fz_cfg *c)
{
    static fz_cfg defaults;
    static int ready;
    if (!ready) {
        if (kd_cfg_defaults(&schema, &defaults) != KD_OK)
            abort();
        ready = 1;
    }
    *c = defaults;
    c->out = dup_or_die(defaults.out);
    c->note = dup_or_die(defaults.note);
    c->files = duplist_or_die(&defaults.files);
    c->opt.tags = duplist_or_die(&defaults.opt.tags);
    c->opt.inner.label = dup_or_die(defaults.opt.inner.label);
    c->opt.inner.names = duplist_or_die(&defaults.opt.inner.names);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_cfg a;
    defaults_copy(&a);
    kd_cfg_load_string(&schema, &a, (const char *)data, size, "fuzz");
    check_roundtrip(&a, size & 1);

    /* The same bytes as one override, when they form a C string. */
    if (size < 4096 && !memchr(data, 0, size)) {
        char *set = malloc(size + 1);
        if (!set)
            abort();
        memcpy(set, data, size);
        set[size] = 0;
        kd_cfg_set(&schema, &a, set);
        free(set);
        check_roundtrip(&a, 0);
    }
    kd_cfg_release(&schema, &a);
    return 0;
}
