/* config.h - YAML configuration into typed C structs, by schema.
 *
 * A stage describes its configuration once, as a table of kd_cfg_field: the
 * key, its type, where it lives in the struct, its default, its range and a
 * line of documentation. The loader then:
 *   1. fills the struct with the defaults;
 *   2. reads a YAML file with libyaml and applies it; every unknown key, wrong
 *      type and out-of-range value is KD_E_CONFIG with "file:line:col: key.path: why";
 *   3. applies command-line overrides "a.b=c" (--set), with the same checks,
 *      naming "--set a.b=c" instead of a file position;
 * and can print the effective configuration back as YAML (--print-config),
 * with each key's documentation as a comment, that loads to the same struct.
 *
 * Example:
 *
 *     typedef struct { int64_t steps; double lr; char *out; } train_cfg;
 *     typedef struct { train_cfg train; int verbose; } my_cfg;
 *     static const kd_cfg_field train_fields[] = {
 *         KD_CFG_INT(train_cfg, steps, "100", 1, 1e9, "optimizer steps"),
 *         KD_CFG_FLOAT(train_cfg, lr, "1e-5", 0, 1, "peak learning rate"),
 *         KD_CFG_STRING(train_cfg, out, "runs/sft", "output folder"),
 *         KD_CFG_END};
 *     static const kd_cfg_field my_fields[] = {
 *         KD_CFG_SECTION(my_cfg, train, train_fields, "training"),
 *         KD_CFG_BOOL(my_cfg, verbose, "false", "log more"),
 *         KD_CFG_END};
 *     static const kd_cfg_schema my_schema = {"my", my_fields};
 *
 * Types and what YAML they accept:
 *   INT     a plain integer scalar (decimal, or 0x hex), range-checked [min, max]
 *   FLOAT   an integer or decimal scalar (1e-5, .5, 3); range-checked [min, max]; no nan/inf
 *   BOOL    true/false (also yes/no, on/off, case-insensitive)
 *   STRING  any scalar; ~ or null gives NULL. Stored as a malloc'd char *
 *   ENUM    a scalar that is one of "a|b|c"; stored as the int index
 *   STRLIST a sequence of scalars, or one scalar; stored as kd_cfg_strlist
 *   SECTION a mapping with its own field table; stored inline at `offset`.
 *           A section left empty (null: every key under it commented out)
 *           changes nothing.
 *   STEPS   a sequence of single-key mappings, `- name: {key: value, ...}`
 *           (a tagged union): `name` is one of the field's kinds and picks
 *           the sub-schema; each item is its own struct of that schema's
 *           size, defaults first. Stored as kd_cfg_steps; a new list replaces
 *           the old one whole. Errors name the item: "steps[2].filter.where".
 *           --set reaches into an item by index and kind:
 *           "steps.2.filter.where=..." (the kind must match the item's).
 *           The default is the empty list.
 * A key given twice in one mapping is an error. `~` is allowed for STRING only.
 * Quoted numbers and booleans are accepted ("7" for an INT). YAML aliases,
 * non-standard tags and multi-document files are refused (KD_E_CONFIG).
 * Files over 16 MiB are KD_E_RANGE.
 */
#ifndef KD_CONFIG_H
#define KD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    KD_CFG_T_END = 0,
    KD_CFG_T_INT,     /* int64_t */
    KD_CFG_T_FLOAT,   /* double */
    KD_CFG_T_BOOL,    /* int, 0 or 1 */
    KD_CFG_T_STRING,  /* char * (owned by the struct; kd_cfg_release frees it) */
    KD_CFG_T_ENUM,    /* int: index into the '|'-separated choices */
    KD_CFG_T_STRLIST, /* kd_cfg_strlist */
    KD_CFG_T_SECTION, /* nested struct */
    KD_CFG_T_STEPS    /* kd_cfg_steps: a list of tagged sub-configurations */
} kd_cfg_type;

typedef struct kd_cfg_strlist {
    char **items; /* owned */
    size_t n;
} kd_cfg_strlist;

struct kd_cfg_schema;

/* STEPS: the kinds a step may be. Items of the list are single-key mappings
 * `{name: {...}}`; `name` picks the schema, whose struct is allocated for the
 * item (schema->size bytes) and filled with its defaults, then the mapping. */
typedef struct kd_cfg_step_kind {
    const char *name;                   /* the key, e.g. "filter" */
    const struct kd_cfg_schema *schema; /* its fields; schema->size must be set */
} kd_cfg_step_kind;

/* One step: kinds[kind] of the field's table, and its config struct (owned). */
typedef struct kd_cfg_step {
    int kind;
    void *cfg;
} kd_cfg_step;

typedef struct kd_cfg_steps {
    size_t n;
    kd_cfg_step *items; /* owned; kd_cfg_release frees every item's struct */
} kd_cfg_steps;

typedef struct kd_cfg_field {
    const char *key;
    kd_cfg_type type;
    size_t offset;                       /* offset of the member in the parent struct */
    const char *def;                     /* default, as YAML scalar text (NULL: zero / NULL / empty) */
    double min, max;                     /* INT and FLOAT range, inclusive */
    const char *choices;                 /* ENUM: "a|b|c" */
    const struct kd_cfg_field *children; /* SECTION: its fields, offsets relative to the section */
    const char *doc;                     /* one line, printed as a comment by --print-config */
    const kd_cfg_step_kind *kinds;       /* STEPS: the kinds, terminated by {NULL, NULL} */
} kd_cfg_field;

typedef struct kd_cfg_schema {
    const char *name;           /* e.g. "sft"; used in messages */
    const kd_cfg_field *fields; /* terminated by KD_CFG_END */
    size_t size;                /* sizeof the config struct (for callers that allocate it) */
} kd_cfg_schema;

#define KD_CFG_INT(S, m, def, lo, hi, doc) {#m, KD_CFG_T_INT, offsetof(S, m), def, lo, hi, NULL, NULL, doc, NULL}
#define KD_CFG_FLOAT(S, m, def, lo, hi, doc) {#m, KD_CFG_T_FLOAT, offsetof(S, m), def, lo, hi, NULL, NULL, doc, NULL}
#define KD_CFG_BOOL(S, m, def, doc) {#m, KD_CFG_T_BOOL, offsetof(S, m), def, 0, 0, NULL, NULL, doc, NULL}
#define KD_CFG_STRING(S, m, def, doc) {#m, KD_CFG_T_STRING, offsetof(S, m), def, 0, 0, NULL, NULL, doc, NULL}
#define KD_CFG_ENUM(S, m, def, choices, doc) {#m, KD_CFG_T_ENUM, offsetof(S, m), def, 0, 0, choices, NULL, doc, NULL}
#define KD_CFG_STRLIST(S, m, doc) {#m, KD_CFG_T_STRLIST, offsetof(S, m), NULL, 0, 0, NULL, NULL, doc, NULL}
#define KD_CFG_SECTION(S, m, fields, doc) {#m, KD_CFG_T_SECTION, offsetof(S, m), NULL, 0, 0, NULL, fields, doc, NULL}
#define KD_CFG_STEPS(S, m, kinds, doc) {#m, KD_CFG_T_STEPS, offsetof(S, m), NULL, 0, 0, NULL, NULL, doc, kinds}
#define KD_CFG_END {NULL, KD_CFG_T_END, 0, NULL, 0, 0, NULL, NULL, NULL, NULL}

/* Fill `cfg` (a zeroed struct of the schema's type) with every default.
 * Errors: KD_E_CONFIG if a default in the schema itself does not parse. */
int kd_cfg_defaults(const kd_cfg_schema *schema, void *cfg);

/* Apply the YAML file at `path` over `cfg`. The document must be a mapping
 * (an empty file is allowed and changes nothing). Errors: KD_E_NOTFOUND/KD_E_IO
 * (the file), KD_E_FORMAT (YAML syntax, with file:line:col), KD_E_CONFIG (an
 * unknown key, wrong type, out-of-range value, duplicate key; with
 * file:line:col and the key path). On error `cfg` may be partly updated but is
 * still safe to release. */
int kd_cfg_load_file(const kd_cfg_schema *schema, void *cfg, const char *path);

/* The same for YAML text in memory; `name` stands in for the file name. */
int kd_cfg_load_string(const kd_cfg_schema *schema, void *cfg, const char *yaml, size_t len,
                       const char *name);

/* Apply one override "a.b.c=value". The value is parsed as a YAML scalar, or a
 * flow sequence "[x, y]" for STRLIST. Errors: KD_E_USAGE (no '='), KD_E_CONFIG
 * (unknown key path, a section given a scalar, type or range). */
int kd_cfg_set(const kd_cfg_schema *schema, void *cfg, const char *assignment);

/* Write the configuration as YAML that kd_cfg_load_file reads back to an equal
 * struct. Each key is preceded by its documentation as a "# " comment when
 * `with_docs` is set. Floats print in the shortest form that reads back
 * exactly. Errors: KD_E_UTF8 (a string in the struct is not UTF-8),
 * KD_E_INTERNAL (an enum index past its choices), KD_E_IO (the write failed). */
int kd_cfg_print(const kd_cfg_schema *schema, const void *cfg, FILE *out, int with_docs);
/* kd_cfg_print into a new NUL-terminated string (*out, free() it; *len bytes
 * before the NUL, len may be NULL). Errors: kd_cfg_print's, KD_E_NOMEM. */
int kd_cfg_text(const kd_cfg_schema *schema, const void *cfg, int with_docs, char **out, size_t *len);
/* A 64-bit FNV-1a hash of the configuration as kd_cfg_print writes it without
 * docs: equal for equal effective configurations (lineage, pipeline state). */
uint64_t kd_cfg_hash(const kd_cfg_schema *schema, const void *cfg);
/* The top-level section `key` of cfg (a struct of `schema`), or NULL when
 * the schema has no such section (e.g. "runtime"). */
void *kd_cfg_section(const kd_cfg_schema *schema, void *cfg, const char *key);

/* Free what the struct holds (strings, lists), leaving it zeroed where freed. */
void kd_cfg_release(const kd_cfg_schema *schema, void *cfg);

/* The usual sequence for a command: defaults, then the file (if `path` is not
 * NULL), then every override in order. */
int kd_cfg_build(const kd_cfg_schema *schema, void *cfg, const char *path, char *const *sets,
                 int nsets);

#ifdef __cplusplus
}
#endif
#endif
