/* config.c - YAML configuration into typed C structs, by schema. See config.h.
 *
 * Every YAML text (a file, the value of one --set, a schema default) goes
 * through libyaml twice:
 *   1. as events, which is where a syntax error, an alias, a tag we do not
 *      take and a second document are caught at their exact mark, and where
 *      plain scalars tagged !!str are noted (they are never null);
 *   2. through the document API (yaml_parser_load), whose node tree is then
 *      walked against the field table.
 * Walking is driven by the schema: a node the schema does not expect is
 * described and refused, never descended into, so recursion is as deep as the
 * schema and no deeper, whatever the input.
 *
 * Every failure names where it happened: "file:line:col: key.path: why" for
 * text from a file, "--set a.b=c: key.path: why" for an override. libyaml's
 * marks are 0-based; messages print them 1-based.
 *
 * Numbers go through strtoll/strtod and are printed with printf, which follow
 * LC_NUMERIC: the process must stay in the "C" locale (distill never calls
 * setlocale).
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"
#include "status.h"
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* The largest configuration file we read; a real one is a few KiB. */
#define CFG_MAX_FILE ((size_t)16 << 20)
/* Key paths ("train.optim.lr", "data.files[3]") and messages are cut to these. */
#define CFG_PATH_MAX 512
#define CFG_MSG_MAX 900
/* A scalar quoted back in a message ("got '...'") is cut after this many bytes. */
#define CFG_QUOTE_MAX 60

/* ---- where the text came from, and its errors ---------------------------- */

/* One YAML text being applied: its name for messages, and its parsed tree. */
typedef struct {
    const char *where;   /* file name, "--set a.b=c", or "schema 'x' default '...'" */
    int positional;      /* 1: messages carry line:col from node marks (file text) */
    int syntax_code;     /* status of a YAML syntax error: KD_E_FORMAT for files */
    yaml_document_t doc; /* valid when have_doc */
    int have_doc;
    size_t *str_tagged;  /* start offsets of null-looking plain scalars tagged !!str, ascending */
    size_t n_str_tagged, cap_str_tagged;
} src_;

static void src_release_(src_ *s)
{
    if (s->have_doc)
        yaml_document_delete(&s->doc);
    s->have_doc = 0;
    free(s->str_tagged);
    s->str_tagged = NULL;
    s->n_str_tagged = s->cap_str_tagged = 0;
}

/* Record `code` with "where[:line:col]: [path: ]message". Returns `code`. */
static int vfail_(const src_ *s, int code, const yaml_mark_t *mark, const char *path, const char *fmt,
                  va_list ap)
{
    char msg[CFG_MSG_MAX], at[64] = "";
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (mark && s->positional)
        snprintf(at, sizeof at, ":%zu:%zu", mark->line + 1, mark->column + 1);
    if (path && path[0])
        return kd_err(code, "%s%s: %s: %s", s->where, at, path, msg);
    return kd_err(code, "%s%s: %s", s->where, at, msg);
}

/* KD_E_CONFIG at node `n` (NULL: no position). */
static int fail_(const src_ *s, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_(const src_ *s, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int st = vfail_(s, KD_E_CONFIG, n ? &n->start_mark : NULL, path, fmt, ap);
    va_end(ap);
    return st;
}

/* `code` at a mark. */
static int fail_mark_(const src_ *s, int code, const yaml_mark_t *mark, const char *path, const char *fmt,
                      ...) __attribute__((format(printf, 5, 6)));
static int fail_mark_(const src_ *s, int code, const yaml_mark_t *mark, const char *path, const char *fmt,
                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    int st = vfail_(s, code, mark, path, fmt, ap);
    va_end(ap);
    return st;
}

/* libyaml's own account of a syntax error: its problem text at its mark, and
 * its context ("while scanning a simple key") with that one's mark. */
static int syntax_error_(const src_ *s, const yaml_parser_t *p, const char *text, size_t len,
                         const char *path)
{
    if (p->error == YAML_MEMORY_ERROR)
        return kd_err(KD_E_NOMEM, "%s: out of memory while parsing YAML", s->where);
    const char *problem = p->problem ? p->problem : "invalid YAML";
    yaml_mark_t mark = p->problem_mark;
    if (p->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset (bad UTF-8, a control character). */
        memset(&mark, 0, sizeof mark);
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (text[i] == '\n') {
                mark.line++;
                mark.column = 0;
            } else {
                mark.column++;
            }
        }
        if (p->problem_value != -1)
            return fail_mark_(s, s->syntax_code, &mark, path, "%s (#x%X)", problem,
                              (unsigned)p->problem_value);
        return fail_mark_(s, s->syntax_code, &mark, path, "%s", problem);
    }
    if (p->context && s->positional)
        return fail_mark_(s, s->syntax_code, &mark, path, "%s (%s at %zu:%zu)", problem, p->context,
                          p->context_mark.line + 1, p->context_mark.column + 1);
    if (p->context)
        return fail_mark_(s, s->syntax_code, &mark, path, "%s (%s)", problem, p->context);
    return fail_mark_(s, s->syntax_code, &mark, path, "%s", problem);
}

/* ---- parsing ------------------------------------------------------------- */

#define YAML_TAG_PREFIX "tag:yaml.org,2002:"

/* The text of YAML's null as a plain scalar: ~, null, Null, NULL or nothing. */
static int looks_null_(const char *t, size_t len)
{
    return len == 0 || (len == 1 && t[0] == '~') ||
           (len == 4 && (!memcmp(t, "null", 4) || !memcmp(t, "Null", 4) || !memcmp(t, "NULL", 4)));
}

/* The standard tags of the YAML core types; anything else is refused. */
static int is_std_tag_(const char *tag)
{
    static const char *const ok[] = {"str", "int", "float", "bool", "null", "seq", "map"};
    size_t n = strlen(YAML_TAG_PREFIX);
    if (strncmp(tag, YAML_TAG_PREFIX, n) != 0)
        return 0;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(tag + n, ok[i]))
            return 1;
    return 0;
}

static int note_str_tagged_(src_ *s, size_t offset)
{
    if (s->n_str_tagged == s->cap_str_tagged) {
        size_t cap = s->cap_str_tagged ? 2 * s->cap_str_tagged : 8;
        size_t *n = realloc(s->str_tagged, cap * sizeof *n);
        if (!n)
            return kd_err(KD_E_NOMEM, "%s: out of memory", s->where);
        s->str_tagged = n;
        s->cap_str_tagged = cap;
    }
    s->str_tagged[s->n_str_tagged++] = offset;
    return KD_OK;
}

/* Pass 1: the event stream. Refuses aliases, foreign tags and a second
 * document; notes null-looking plain scalars tagged !!str ("!!str ~"), which
 * the document API cannot tell from untagged ones. Events come in document
 * order, so the offsets are noted in ascending order. */
static int scan_events_(src_ *s, const char *text, size_t len, const char *path)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return kd_err(KD_E_NOMEM, "%s: cannot start the YAML parser", s->where);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int st = KD_OK, docs = 0, done = 0;
    while (st == KD_OK && !done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            st = syntax_error_(s, &p, text, len, path);
            break;
        }
        const yaml_char_t *tag = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                st = fail_mark_(s, KD_E_CONFIG, &ev.start_mark, path,
                                "a second YAML document starts here; a configuration is one document");
            break;
        case YAML_ALIAS_EVENT:
            st = fail_mark_(s, KD_E_CONFIG, &ev.start_mark, path,
                            "alias '*%s' is not supported; write the value out in full",
                            (const char *)ev.data.alias.anchor);
            break;
        case YAML_SCALAR_EVENT:
            tag = ev.data.scalar.tag;
            if (tag && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                !strcmp((const char *)tag, YAML_TAG_PREFIX "str") &&
                looks_null_((const char *)ev.data.scalar.value, ev.data.scalar.length))
                st = note_str_tagged_(s, ev.start_mark.index);
            break;
        case YAML_SEQUENCE_START_EVENT:
            tag = ev.data.sequence_start.tag;
            break;
        case YAML_MAPPING_START_EVENT:
            tag = ev.data.mapping_start.tag;
            break;
        default:
            break;
        }
        if (st == KD_OK && tag && !is_std_tag_((const char *)tag))
            st = fail_mark_(s, KD_E_CONFIG, &ev.start_mark, path,
                            "tag '%s' is not supported (only the standard !!str, !!int, !!float, "
                            "!!bool, !!null, !!seq, !!map)",
                            (const char *)tag);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return st;
}

/* Parse `text` into s->doc. Its root is NULL when the text holds no document. */
static int parse_(src_ *s, const char *text, size_t len, const char *path)
{
    KD_TRY(scan_events_(s, text, len, path));
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return kd_err(KD_E_NOMEM, "%s: cannot start the YAML parser", s->where);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int st = KD_OK;
    if (yaml_parser_load(&p, &s->doc))
        s->have_doc = 1;
    else
        st = syntax_error_(s, &p, text, len, path);
    yaml_parser_delete(&p);
    return st;
}

/* ---- scalars ------------------------------------------------------------- */

static const char *scalar_(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

/* YAML's null: a plain ~, null, Null, NULL or nothing at all, unless tagged
 * !!str. n == NULL (an empty --set value) is null too. */
static int is_null_(const src_ *s, const yaml_node_t *n)
{
    if (!n)
        return 1;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    if (!looks_null_(scalar_(n), n->data.scalar.length))
        return 0;
    size_t lo = 0, hi = s->n_str_tagged, at = n->start_mark.index;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->str_tagged[mid] == at)
            return 0;
        if (s->str_tagged[mid] < at)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 1;
}

/* What a node is, for "got ...": null, a mapping, a sequence, or the quoted
 * scalar (cut, control characters shown as '?'). Returns buf or a literal. */
static const char *describe_(const src_ *s, const yaml_node_t *n, char *buf, size_t cap)
{
    if (is_null_(s, n))
        return "null";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a sequence";
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    size_t len = n->data.scalar.length, show = len > CFG_QUOTE_MAX ? CFG_QUOTE_MAX : len, o = 0;
    assert(cap > CFG_QUOTE_MAX + 8);
    buf[o++] = '\'';
    for (size_t i = 0; i < show; i++) {
        unsigned char c = n->data.scalar.value[i];
        buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (show < len)
        o += (size_t)snprintf(buf + o, cap - o, "...");
    buf[o++] = '\'';
    buf[o] = 0;
    return buf;
}

/* A plain integer: optional sign, then decimal digits or 0x and hex digits.
 * 1 if `t` is one (*overflow set when it does not fit in int64). */
static int parse_int_(const char *t, int64_t *out, int *overflow)
{
    const char *p = t + (*t == '+' || *t == '-');
    int hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    const char *d = hex ? p + 2 : p;
    if (!*d)
        return 0;
    for (const char *q = d; *q; q++)
        if (hex ? !((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F'))
                : !(*q >= '0' && *q <= '9'))
            return 0;
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, hex ? 16 : 10);
    if (*end)
        return 0;
    *overflow = errno == ERANGE;
    *out = v;
    return 1;
}

/* A decimal number: digits, sign, '.', exponent; no hex floats, nan or inf.
 * 1 if `t` is one (*overflow set when its magnitude exceeds a double; an
 * underflow to a subnormal or zero is kept, so every printed double reads back). */
static int parse_float_(const char *t, double *out, int *overflow)
{
    int digit = 0;
    for (const char *q = t; *q; q++) {
        if (*q >= '0' && *q <= '9')
            digit = 1;
        else if (*q != '+' && *q != '-' && *q != '.' && *q != 'e' && *q != 'E')
            return 0;
    }
    if (!digit)
        return 0;
    char *end;
    errno = 0;
    double v = strtod(t, &end);
    if (end == t || *end)
        return 0;
    *overflow = errno == ERANGE && isinf(v);
    *out = v;
    return 1;
}

/* `v` as "%.15g" (plain for every value written with 15 digits or fewer:
 * 10, 0.1, 1e-05), else "%.16g" or "%.17g", the first that reads back to
 * exactly `v`; "%.17g" always does. */
static void fmt_double_(char *buf, size_t cap, double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* The int64 bounds of a field's double range: [ceil(min), floor(max)], clamped. */
static void int_bounds_(const kd_cfg_field *f, int64_t *lo, int64_t *hi)
{
    const double two63 = 9223372036854775808.0;
    *lo = f->min <= -two63 ? INT64_MIN : (int64_t)ceil(f->min);
    *hi = f->max >= two63 ? INT64_MAX : (int64_t)floor(f->max);
}

/* ENUM: the index of `t` among f->choices, or -1. */
static int enum_index_(const kd_cfg_field *f, const char *t, size_t len)
{
    const char *c = f->choices;
    for (int i = 0;; i++) {
        const char *bar = strchr(c, '|');
        size_t n = bar ? (size_t)(bar - c) : strlen(c);
        if (n == len && !memcmp(c, t, n))
            return i;
        if (!bar)
            return -1;
        c = bar + 1;
    }
}

static const char *want_(const kd_cfg_field *f)
{
    switch (f->type) {
    case KD_CFG_T_INT: return "an integer";
    case KD_CFG_T_FLOAT: return "a number";
    case KD_CFG_T_BOOL: return "true or false";
    case KD_CFG_T_STRING: return "a string";
    case KD_CFG_T_ENUM: return "one of";
    case KD_CFG_T_STRLIST: return "a list of strings";
    case KD_CFG_T_SECTION: return "a mapping";
    case KD_CFG_T_STEPS: return "a list of steps";
    case KD_CFG_T_END: break;
    }
    return "?";
}

/* ---- applying a node to a field ------------------------------------------ */

static void strlist_free_(kd_cfg_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* A copy of scalar `n` as a C string; refuses one holding a NUL character. */
static int dup_scalar_(const src_ *s, const yaml_node_t *n, const char *path, char **out)
{
    if (strlen(scalar_(n)) != n->data.scalar.length)
        return fail_(s, n, path, "a NUL character cannot be part of a string here");
    *out = strdup(scalar_(n));
    if (!*out)
        return kd_err(KD_E_NOMEM, "%s: %s: out of memory", s->where, path);
    return KD_OK;
}

/* STRLIST: a sequence of non-null scalars, or one scalar. All or nothing:
 * the old list is replaced only when the new one is complete. */
static int set_strlist_(const src_ *s, kd_cfg_strlist *l, const yaml_node_t *n, const char *path)
{
    char got[CFG_QUOTE_MAX + 16], item_path[CFG_PATH_MAX];
    kd_cfg_strlist nl = {NULL, 0};
    if (n && n->type == YAML_SCALAR_NODE && !is_null_(s, n)) {
        nl.items = malloc(sizeof *nl.items);
        if (!nl.items)
            return kd_err(KD_E_NOMEM, "%s: %s: out of memory", s->where, path);
        int st = dup_scalar_(s, n, path, &nl.items[0]);
        if (st != KD_OK) {
            free(nl.items);
            return st;
        }
        nl.n = 1;
    } else if (n && n->type == YAML_SEQUENCE_NODE) {
        size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (count) {
            nl.items = calloc(count, sizeof *nl.items);
            if (!nl.items)
                return kd_err(KD_E_NOMEM, "%s: %s: out of memory", s->where, path);
        }
        for (size_t i = 0; i < count; i++) {
            const yaml_node_t *it = yaml_document_get_node((yaml_document_t *)&s->doc,
                                                           n->data.sequence.items.start[i]);
            snprintf(item_path, sizeof item_path, "%s[%zu]", path, i);
            int st = KD_OK;
            if (it->type != YAML_SCALAR_NODE || is_null_(s, it))
                st = fail_(s, it, item_path, "expected a string, got %s",
                           describe_(s, it, got, sizeof got));
            else
                st = dup_scalar_(s, it, item_path, &nl.items[i]);
            if (st != KD_OK) {
                strlist_free_(&nl);
                return st;
            }
            nl.n = i + 1;
        }
    } else {
        return fail_(s, n, path, "expected a list of strings, got %s", describe_(s, n, got, sizeof got));
    }
    strlist_free_(l);
    *l = nl;
    return KD_OK;
}

static int apply_mapping_(const src_ *s, const kd_cfg_field *fields, char *base, const yaml_node_t *n,
                          const char *path);
static int defaults_(const kd_cfg_schema *schema, const kd_cfg_field *fields, char *base, const char *path);
static void release_(const kd_cfg_field *fields, char *base);
static void join_path_(char *buf, size_t cap, const char *path, const char *key, size_t len);

static void steps_free_(const kd_cfg_field *f, kd_cfg_steps *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->items[i].cfg)
            release_(f->kinds[l->items[i].kind].schema->fields, l->items[i].cfg);
        free(l->items[i].cfg);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* "dedupe, filter, tokenize" */
static void known_kinds_(const kd_cfg_field *f, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = 0;
    for (const kd_cfg_step_kind *k = f->kinds; k->name && o < cap; k++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", k == f->kinds ? "" : ", ", k->name);
}

static int find_kind_(const kd_cfg_field *f, const char *name, size_t len)
{
    for (int i = 0; f->kinds[i].name; i++)
        if (strlen(f->kinds[i].name) == len && !memcmp(f->kinds[i].name, name, len))
            return i;
    return -1;
}

/* STEPS: a sequence of single-key mappings {kind: mapping-or-null}. All or
 * nothing, as for STRLIST: the old list is replaced when the new one is whole. */
static int set_steps_(const src_ *s, const kd_cfg_field *f, kd_cfg_steps *l, const yaml_node_t *n,
                      const char *path)
{
    char got[CFG_QUOTE_MAX + 16], item_path[CFG_PATH_MAX], known[CFG_MSG_MAX / 2];
    yaml_document_t *doc = (yaml_document_t *)&s->doc;
    kd_cfg_steps nl = {0, NULL};
    if (n && n->type == YAML_SCALAR_NODE && is_null_(s, n)) {
        steps_free_(f, l);
        return KD_OK;
    }
    if (!n || n->type != YAML_SEQUENCE_NODE)
        return fail_(s, n, path, "expected a list of steps (- name: {...}), got %s", describe_(s, n, got, sizeof got));
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count) {
        nl.items = calloc(count, sizeof *nl.items);
        if (!nl.items)
            return kd_err(KD_E_NOMEM, "%s: %s: out of memory", s->where, path);
    }
    int st = KD_OK;
    for (size_t i = 0; i < count && st == KD_OK; i++) {
        const yaml_node_t *it = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
        snprintf(item_path, sizeof item_path, "%s[%zu]", path, i);
        if (it->type != YAML_MAPPING_NODE || it->data.mapping.pairs.top - it->data.mapping.pairs.start != 1) {
            known_kinds_(f, known, sizeof known);
            st = fail_(s, it, item_path, "a step is a mapping with one key, the step's name (%s), got %s", known,
                       describe_(s, it, got, sizeof got));
            break;
        }
        const yaml_node_t *k = yaml_document_get_node(doc, it->data.mapping.pairs.start->key);
        const yaml_node_t *v = yaml_document_get_node(doc, it->data.mapping.pairs.start->value);
        if (k->type != YAML_SCALAR_NODE) {
            st = fail_(s, k, item_path, "a step's name must be a scalar, got %s", describe_(s, k, got, sizeof got));
            break;
        }
        int kind = find_kind_(f, scalar_(k), k->data.scalar.length);
        if (kind < 0) {
            known_kinds_(f, known, sizeof known);
            st = fail_(s, k, item_path, "unknown step '%.*s' (known steps: %s)",
                       (int)(k->data.scalar.length > 64 ? 64 : k->data.scalar.length), scalar_(k), known);
            break;
        }
        const kd_cfg_schema *sub = f->kinds[kind].schema;
        assert(sub->size > 0);
        nl.items[i].kind = kind;
        nl.items[i].cfg = calloc(1, sub->size);
        nl.n = i + 1;
        if (!nl.items[i].cfg) {
            st = kd_err(KD_E_NOMEM, "%s: %s: out of memory", s->where, item_path);
            break;
        }
        char sub_path[CFG_PATH_MAX];
        join_path_(sub_path, sizeof sub_path, item_path, f->kinds[kind].name, strlen(f->kinds[kind].name));
        st = defaults_(sub, sub->fields, nl.items[i].cfg, sub_path);
        if (st == KD_OK && !(v->type == YAML_SCALAR_NODE && is_null_(s, v)))
            st = apply_mapping_(s, sub->fields, nl.items[i].cfg, v, sub_path);
    }
    if (st != KD_OK) {
        steps_free_(f, &nl);
        return st;
    }
    steps_free_(f, l);
    *l = nl;
    return KD_OK;
}

/* Apply node `n` (NULL: null) to field `f` of the struct at `base`. */
static int apply_field_(const src_ *s, const kd_cfg_field *f, char *base, const yaml_node_t *n,
                        const char *path)
{
    char got[CFG_QUOTE_MAX + 16], lo_s[40], hi_s[40];
    void *ptr = base + f->offset;
    if (f->type == KD_CFG_T_SECTION)
        return apply_mapping_(s, f->children, ptr, n, path);
    if (f->type == KD_CFG_T_STEPS)
        return set_steps_(s, f, ptr, n, path);
    if (f->type == KD_CFG_T_STRLIST)
        return set_strlist_(s, ptr, n, path);
    if (f->type == KD_CFG_T_STRING && is_null_(s, n)) {
        free(*(char **)ptr);
        *(char **)ptr = NULL;
        return KD_OK;
    }
    if (!n || n->type != YAML_SCALAR_NODE || (is_null_(s, n) && f->type != KD_CFG_T_ENUM)) {
        if (f->type == KD_CFG_T_ENUM)
            return fail_(s, n, path, "expected one of %s, got %s", f->choices, describe_(s, n, got, sizeof got));
        return fail_(s, n, path, "expected %s, got %s", want_(f), describe_(s, n, got, sizeof got));
    }
    const char *t = scalar_(n);
    size_t len = n->data.scalar.length;
    int overflow = 0;
    switch (f->type) {
    case KD_CFG_T_INT: {
        int64_t v, lo, hi;
        if (strlen(t) != len || !parse_int_(t, &v, &overflow))
            return fail_(s, n, path, "expected an integer, got %s", describe_(s, n, got, sizeof got));
        int_bounds_(f, &lo, &hi);
        if (overflow || v < lo || v > hi)
            return fail_(s, n, path, "%s is out of range [%lld, %lld]", t, (long long)lo, (long long)hi);
        *(int64_t *)ptr = v;
        return KD_OK;
    }
    case KD_CFG_T_FLOAT: {
        double v;
        if (strlen(t) != len || !parse_float_(t, &v, &overflow))
            return fail_(s, n, path, "expected a number, got %s", describe_(s, n, got, sizeof got));
        if (overflow || v < f->min || v > f->max) {
            fmt_double_(lo_s, sizeof lo_s, f->min);
            fmt_double_(hi_s, sizeof hi_s, f->max);
            return fail_(s, n, path, "%s is out of range [%s, %s]", t, lo_s, hi_s);
        }
        *(double *)ptr = v;
        return KD_OK;
    }
    case KD_CFG_T_BOOL: {
        static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
        for (int i = 0; i < 3; i++) {
            if (!strcasecmp(t, yes[i]) || !strcasecmp(t, no[i])) {
                *(int *)ptr = !strcasecmp(t, yes[i]);
                return KD_OK;
            }
        }
        return fail_(s, n, path, "expected true or false, got %s", describe_(s, n, got, sizeof got));
    }
    case KD_CFG_T_STRING: {
        char *v;
        KD_TRY(dup_scalar_(s, n, path, &v));
        free(*(char **)ptr);
        *(char **)ptr = v;
        return KD_OK;
    }
    case KD_CFG_T_ENUM: {
        int i = enum_index_(f, t, len);
        if (i < 0 && is_null_(s, n))
            return fail_(s, n, path, "expected one of %s, got null", f->choices);
        if (i < 0)
            return fail_(s, n, path, "%s is not one of %s", describe_(s, n, got, sizeof got), f->choices);
        *(int *)ptr = i;
        return KD_OK;
    }
    default:
        break;
    }
    assert(!"unknown field type");
    return kd_err(KD_E_INTERNAL, "field '%s' has unknown type %d", f->key, (int)f->type);
}

static const kd_cfg_field *find_field_(const kd_cfg_field *fields, const char *key, size_t len)
{
    for (const kd_cfg_field *f = fields; f->key; f++)
        if (strlen(f->key) == len && !memcmp(f->key, key, len))
            return f;
    return NULL;
}

/* "steps, lr, out" */
static void known_keys_(const kd_cfg_field *fields, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = 0;
    for (const kd_cfg_field *f = fields; f->key && o < cap; f++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", f == fields ? "" : ", ", f->key);
}

/* `path` + "." + key, cut to fit. */
static void join_path_(char *buf, size_t cap, const char *path, const char *key, size_t len)
{
    int n = len > 200 ? 200 : (int)len;
    snprintf(buf, cap, "%s%s%.*s", path, path[0] ? "." : "", n, key);
}

static int unknown_key_(const src_ *s, const yaml_node_t *at, const kd_cfg_field *fields, const char *parent,
                        const char *path)
{
    char known[CFG_MSG_MAX / 2];
    known_keys_(fields, known, sizeof known);
    if (parent[0])
        return fail_(s, at, path, "unknown key (known keys in '%s': %s)", parent, known);
    return fail_(s, at, path, "unknown key (known top-level keys: %s)", known);
}

/* Apply mapping `n` to the fields of the struct at `base`. */
static int apply_mapping_(const src_ *s, const kd_cfg_field *fields, char *base, const yaml_node_t *n,
                          const char *path)
{
    char got[CFG_QUOTE_MAX + 16], child[CFG_PATH_MAX];
    yaml_document_t *doc = (yaml_document_t *)&s->doc;
    /* a section whose keys are all commented out reads as null: it changes nothing */
    if (path[0] && n && n->type == YAML_SCALAR_NODE && is_null_(s, n))
        return KD_OK;
    if (!n || n->type != YAML_MAPPING_NODE) {
        if (!path[0])
            return fail_(s, n, path, "the document must be a mapping of keys, got %s",
                         describe_(s, n, got, sizeof got));
        return fail_(s, n, path, "expected a mapping, got %s", describe_(s, n, got, sizeof got));
    }
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = yaml_document_get_node(doc, pr->key);
        const yaml_node_t *v = yaml_document_get_node(doc, pr->value);
        if (k->type != YAML_SCALAR_NODE)
            return fail_(s, k, path, "a key must be a scalar, got %s", describe_(s, k, got, sizeof got));
        const char *key = scalar_(k);
        size_t klen = k->data.scalar.length;
        join_path_(child, sizeof child, path, key, klen);
        const kd_cfg_field *f = find_field_(fields, key, klen);
        if (!f)
            return unknown_key_(s, k, fields, path, child);
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < pr; q++) {
            const yaml_node_t *qk = yaml_document_get_node(doc, q->key);
            if (qk->data.scalar.length == klen && !memcmp(scalar_(qk), key, klen))
                return fail_(s, k, child, "duplicate key");
        }
        KD_TRY(apply_field_(s, f, base, v, child));
    }
    return KD_OK;
}

/* Parse `text` (YAML for one value) and apply it to field `f`; releases s. */
static int apply_text_(src_ *s, const kd_cfg_field *f, char *base, const char *text, size_t len,
                       const char *path)
{
    int st = parse_(s, text, len, path);
    if (st == KD_OK)
        st = apply_field_(s, f, base, yaml_document_get_root_node(&s->doc), path);
    src_release_(s);
    return st;
}

/* ---- the public entry points --------------------------------------------- */

static int defaults_(const kd_cfg_schema *schema, const kd_cfg_field *fields, char *base, const char *path)
{
    char child[CFG_PATH_MAX], where[CFG_PATH_MAX];
    for (const kd_cfg_field *f = fields; f->key; f++) {
        void *ptr = base + f->offset;
        join_path_(child, sizeof child, path, f->key, strlen(f->key));
        if (f->type == KD_CFG_T_SECTION) {
            KD_TRY(defaults_(schema, f->children, ptr, child));
            continue;
        }
        if (f->def) {
            snprintf(where, sizeof where, "schema '%s', default '%s'", schema->name, f->def);
            src_ s = {.where = where, .positional = 0, .syntax_code = KD_E_CONFIG};
            KD_TRY(apply_text_(&s, f, base, f->def, strlen(f->def), child));
            continue;
        }
        switch (f->type) {
        case KD_CFG_T_INT: *(int64_t *)ptr = 0; break;
        case KD_CFG_T_FLOAT: *(double *)ptr = 0; break;
        case KD_CFG_T_BOOL:
        case KD_CFG_T_ENUM: *(int *)ptr = 0; break;
        case KD_CFG_T_STRING:
            free(*(char **)ptr);
            *(char **)ptr = NULL;
            break;
        case KD_CFG_T_STRLIST: strlist_free_(ptr); break;
        case KD_CFG_T_STEPS: steps_free_(f, ptr); break;
        default: break;
        }
    }
    return KD_OK;
}

int kd_cfg_defaults(const kd_cfg_schema *schema, void *cfg)
{
    assert(schema && schema->fields && cfg);
    return defaults_(schema, schema->fields, cfg, "");
}

int kd_cfg_load_string(const kd_cfg_schema *schema, void *cfg, const char *yaml, size_t len,
                       const char *name)
{
    assert(schema && schema->fields && cfg && (yaml || !len));
    src_ s = {.where = name ? name : "<string>", .positional = 1, .syntax_code = KD_E_FORMAT};
    int st = parse_(&s, yaml ? yaml : "", len, NULL);
    if (st == KD_OK) {
        /* No document (only comments), or a bare "---" / "~": nothing to change. */
        const yaml_node_t *root = yaml_document_get_root_node(&s.doc);
        if (root && !is_null_(&s, root))
            st = apply_mapping_(&s, schema->fields, cfg, root, "");
    }
    src_release_(&s);
    return st;
}

int kd_cfg_load_file(const kd_cfg_schema *schema, void *cfg, const char *path)
{
    char *text;
    size_t len;
    KD_TRY(kd_read_file(path, CFG_MAX_FILE, &text, &len));
    int st = kd_cfg_load_string(schema, cfg, text, len, path);
    free(text);
    return st;
}

int kd_cfg_set(const kd_cfg_schema *schema, void *cfg, const char *assignment)
{
    assert(schema && schema->fields && cfg && assignment);
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return kd_err(KD_E_USAGE, "--set %s: expected key.path=value", assignment);
    char where[CFG_MSG_MAX / 2], path[CFG_PATH_MAX] = "", parent[CFG_PATH_MAX], full[CFG_PATH_MAX];
    snprintf(where, sizeof where, "--set %s", assignment);
    join_path_(full, sizeof full, "", assignment, (size_t)(eq - assignment));
    src_ s = {.where = where, .positional = 0, .syntax_code = KD_E_CONFIG};

    const kd_cfg_field *fields = schema->fields, *f;
    char *base = cfg;
    for (const char *seg = assignment;;) {
        const char *dot = memchr(seg, '.', (size_t)(eq - seg));
        size_t n = (size_t)((dot ? dot : eq) - seg);
        snprintf(parent, sizeof parent, "%s", path);
        join_path_(path, sizeof path, parent, seg, n);
        f = find_field_(fields, seg, n);
        if (!f)
            return unknown_key_(&s, NULL, fields, parent, path);
        if (!dot)
            break;
        if (f->type == KD_CFG_T_STEPS) {
            /* steps.<index>.<kind>.key... */
            const kd_cfg_steps *l = (const kd_cfg_steps *)(base + f->offset);
            const char *is = dot + 1, *idot = memchr(is, '.', (size_t)(eq - is));
            char *iend;
            unsigned long long idx = strtoull(is, &iend, 10);
            if (!idot || iend != idot || iend == is || idx >= l->n)
                return fail_(&s, NULL, full, "'%s' has %zu steps; address one as %s.<index>.<step>.<key>", path, l->n,
                             path);
            const kd_cfg_step_kind *k = &f->kinds[l->items[idx].kind];
            const char *ks = idot + 1, *kdot = memchr(ks, '.', (size_t)(eq - ks));
            if (!kdot || (size_t)(kdot - ks) != strlen(k->name) || memcmp(ks, k->name, strlen(k->name)))
                return fail_(&s, NULL, full, "step %llu of '%s' is '%s'; write %s.%llu.%s.<key>", idx, path, k->name,
                             path, idx, k->name);
            snprintf(parent, sizeof parent, "%s[%llu].%s", path, idx, k->name);
            snprintf(path, sizeof path, "%s", parent);
            base = l->items[idx].cfg;
            fields = k->schema->fields;
            seg = kdot + 1;
            continue;
        }
        if (f->type != KD_CFG_T_SECTION)
            return fail_(&s, NULL, full, "'%s' is not a section", path);
        base += f->offset;
        fields = f->children;
        seg = dot + 1;
    }
    if (f->type == KD_CFG_T_STEPS)
        return fail_(&s, NULL, path, "is a list of steps; set one step's key as %s.<index>.<step>.<key>", path);
    if (f->type == KD_CFG_T_SECTION) {
        char known[CFG_MSG_MAX / 2];
        known_keys_(f->children, known, sizeof known);
        return fail_(&s, NULL, path, "is a section; set its keys one at a time (%s)", known);
    }
    return apply_text_(&s, f, base, eq + 1, strlen(eq + 1), path);
}

int kd_cfg_build(const kd_cfg_schema *schema, void *cfg, const char *path, char *const *sets, int nsets)
{
    KD_TRY(kd_cfg_defaults(schema, cfg));
    if (path)
        KD_TRY(kd_cfg_load_file(schema, cfg, path));
    for (int i = 0; i < nsets; i++)
        KD_TRY(kd_cfg_set(schema, cfg, sets[i]));
    return KD_OK;
}

/* ---- printing ------------------------------------------------------------ */

/* Decode one UTF-8 character; its length, or 0 when malformed (overlong,
 * surrogate, past U+10FFFF, cut short). */
static size_t utf8_decode_(const unsigned char *p, uint32_t *cp)
{
    uint32_t c = p[0];
    size_t n;
    uint32_t min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2, c &= 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, c &= 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return n;
}

/* Characters written as themselves inside a double-quoted scalar: what
 * libyaml's reader accepts, less the line breaks (U+2028, U+2029; U+0085 is
 * outside anyway) and the byte-order mark, which it would not read back as is. */
static int printable_(uint32_t c)
{
    return (c >= 0x20 && c <= 0x7E) || (c >= 0xA0 && c <= 0xD7FF && c != 0x2028 && c != 0x2029) ||
           (c >= 0xE000 && c <= 0xFFFD && c != 0xFEFF) || (c >= 0x10000 && c <= 0x10FFFF);
}

/* `s` as a double-quoted YAML scalar. KD_E_UTF8 if it is not valid UTF-8
 * (never the case for a string that came through the loader). */
static int print_string_(FILE *out, const char *str, const char *path)
{
    const unsigned char *p = (const unsigned char *)str;
    fputc('"', out);
    while (*p) {
        uint32_t c;
        size_t n = utf8_decode_(p, &c);
        if (!n)
            return kd_err(KD_E_UTF8, "%s: the string is not valid UTF-8 and cannot be written as YAML", path);
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", (char)c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c == '\r')
            fputs("\\r", out);
        else if (printable_(c))
            fwrite(p, 1, n, out);
        else if (c < 0x100)
            fprintf(out, "\\x%02X", (unsigned)c);
        else if (c < 0x10000)
            fprintf(out, "\\u%04X", (unsigned)c);
        else
            fprintf(out, "\\U%08X", (unsigned)c);
        p += n;
    }
    fputc('"', out);
    return KD_OK;
}

/* The documentation line(s) as "# " comments at `indent`. */
static void print_doc_(FILE *out, const char *doc, int indent)
{
    while (*doc) {
        const char *nl = strchr(doc, '\n');
        int n = nl ? (int)(nl - doc) : (int)strlen(doc);
        fprintf(out, "%*s# %.*s\n", indent, "", n, doc);
        doc += n + (nl != NULL);
    }
}

/* An enum name as written: plain when it is a simple word, else quoted.
 * KD_E_INTERNAL if the struct holds an index past the choices (a caller
 * wrote it; the loader never does). */
static int print_enum_(FILE *out, const kd_cfg_field *f, int index, const char *path)
{
    const char *c = f->choices;
    for (int i = 0; i < index && c; i++) {
        c = strchr(c, '|');
        c = c ? c + 1 : NULL;
    }
    if (index < 0 || !c)
        return kd_err(KD_E_INTERNAL, "%s: enum index %d is not one of %s", path, index, f->choices);
    const char *bar = strchr(c, '|');
    int n = bar ? (int)(bar - c) : (int)strlen(c);
    int plain = n > 0 && ((c[0] >= 'a' && c[0] <= 'z') || (c[0] >= 'A' && c[0] <= 'Z') ||
                          (c[0] >= '0' && c[0] <= '9') || c[0] == '_');
    for (int i = 0; i < n; i++)
        if (!((c[i] >= 'a' && c[i] <= 'z') || (c[i] >= 'A' && c[i] <= 'Z') || (c[i] >= '0' && c[i] <= '9') ||
              c[i] == '_' || c[i] == '-' || c[i] == '.' || c[i] == '/'))
            plain = 0;
    if (plain) {
        fprintf(out, "%.*s", n, c);
    } else {
        fputc('"', out);
        for (int i = 0; i < n; i++) {
            if (c[i] == '"' || c[i] == '\\')
                fputc('\\', out);
            fputc(c[i], out);
        }
        fputc('"', out);
    }
    return KD_OK;
}

static int print_fields_(FILE *out, const kd_cfg_field *fields, const char *base, int indent, int with_docs,
                         const char *path)
{
    char child[CFG_PATH_MAX], num[40];
    for (const kd_cfg_field *f = fields; f->key; f++) {
        const void *ptr = base + f->offset;
        join_path_(child, sizeof child, path, f->key, strlen(f->key));
        if (with_docs && f->doc)
            print_doc_(out, f->doc, indent);
        fprintf(out, "%*s%s:", indent, "", f->key);
        switch (f->type) {
        case KD_CFG_T_SECTION:
            if (!f->children->key) {
                fputs(" {}\n", out);
            } else {
                fputc('\n', out);
                KD_TRY(print_fields_(out, f->children, ptr, indent + 2, with_docs, child));
            }
            continue;
        case KD_CFG_T_STEPS: {
            const kd_cfg_steps *l = ptr;
            if (!l->n) {
                fputs(" []\n", out);
                continue;
            }
            fputc('\n', out);
            for (size_t i = 0; i < l->n; i++) {
                const kd_cfg_step_kind *k = &f->kinds[l->items[i].kind];
                char item[CFG_PATH_MAX];
                snprintf(item, sizeof item, "%s[%zu].%s", child, i, k->name);
                fprintf(out, "%*s- %s:", indent + 2, "", k->name);
                if (!k->schema->fields->key) {
                    fputs(" {}\n", out);
                } else {
                    fputc('\n', out);
                    KD_TRY(print_fields_(out, k->schema->fields, l->items[i].cfg, indent + 6, with_docs, item));
                }
            }
            continue;
        }
        case KD_CFG_T_INT: fprintf(out, " %lld", (long long)*(const int64_t *)ptr); break;
        case KD_CFG_T_FLOAT:
            fmt_double_(num, sizeof num, *(const double *)ptr);
            fprintf(out, " %s", num);
            break;
        case KD_CFG_T_BOOL: fputs(*(const int *)ptr ? " true" : " false", out); break;
        case KD_CFG_T_STRING: {
            const char *v = *(char *const *)ptr;
            fputc(' ', out);
            if (v)
                KD_TRY(print_string_(out, v, child));
            else
                fputc('~', out);
            break;
        }
        case KD_CFG_T_ENUM:
            fputc(' ', out);
            KD_TRY(print_enum_(out, f, *(const int *)ptr, child));
            break;
        case KD_CFG_T_STRLIST: {
            const kd_cfg_strlist *l = ptr;
            fputs(" [", out);
            for (size_t i = 0; i < l->n; i++) {
                if (i)
                    fputs(", ", out);
                KD_TRY(print_string_(out, l->items[i], child));
            }
            fputc(']', out);
            break;
        }
        default: assert(!"unknown field type");
        }
        fputc('\n', out);
    }
    return KD_OK;
}

int kd_cfg_print(const kd_cfg_schema *schema, const void *cfg, FILE *out, int with_docs)
{
    assert(schema && schema->fields && cfg && out);
    KD_TRY(print_fields_(out, schema->fields, cfg, 0, with_docs, ""));
    if (fflush(out) != 0 || ferror(out))
        return kd_err(KD_E_IO, "cannot write the '%s' configuration: %s", schema->name, strerror(errno));
    return KD_OK;
}

/* ---- release ------------------------------------------------------------- */

static void release_(const kd_cfg_field *fields, char *base)
{
    for (const kd_cfg_field *f = fields; f->key; f++) {
        void *ptr = base + f->offset;
        if (f->type == KD_CFG_T_SECTION) {
            release_(f->children, ptr);
        } else if (f->type == KD_CFG_T_STRING) {
            free(*(char **)ptr);
            *(char **)ptr = NULL;
        } else if (f->type == KD_CFG_T_STRLIST) {
            strlist_free_(ptr);
        } else if (f->type == KD_CFG_T_STEPS) {
            steps_free_(f, ptr);
        }
    }
}

void kd_cfg_release(const kd_cfg_schema *schema, void *cfg)
{
    if (!schema || !cfg)
        return;
    release_(schema->fields, cfg);
}

int kd_cfg_text(const kd_cfg_schema *schema, const void *cfg, int with_docs, char **out, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return kd_err(KD_E_NOMEM, "configuration text");
    int st = kd_cfg_print(schema, cfg, f, with_docs);
    if (fclose(f) != 0 && st == KD_OK)
        st = kd_err(KD_E_NOMEM, "configuration text");
    if (st != KD_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    if (len)
        *len = n;
    return KD_OK;
}

uint64_t kd_cfg_hash(const kd_cfg_schema *schema, const void *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    uint64_t h = 1469598103934665603ull;
    if (kd_cfg_text(schema, cfg, 0, &buf, &len) == KD_OK)
        for (size_t i = 0; i < len; i++)
            h = (h ^ (unsigned char)buf[i]) * 1099511628211ull;
    free(buf);
    return h;
}

void *kd_cfg_section(const kd_cfg_schema *schema, void *cfg, const char *key)
{
    for (const kd_cfg_field *f = schema->fields; f->key; f++)
        if (f->type == KD_CFG_T_SECTION && !strcmp(f->key, key))
            return (char *)cfg + f->offset;
    return NULL;
}
