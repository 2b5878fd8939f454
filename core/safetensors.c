/* safetensors.c - the safetensors reader and writer. See safetensors.h.
 *
 * Layout of a file, and the names used for its sizes below:
 *   [8 bytes: hlen, little-endian u64][hlen bytes: JSON header][dlen bytes: data]
 *   dlen = file size - 8 - hlen; tensor data_offsets are relative to the data.
 *
 * Reading a file goes: map it (map_file_), validate and parse the header into
 * an array of kd_st_tensor (parse_, the same code kd_st_validate runs on any
 * buffer), then sort by name. A sharded folder does that for every shard and
 * merges the arrays. Everything a handle allocates hangs off the kd_st and is
 * released by kd_st_free: the mappings, the parsed headers (tensor names and
 * metadata strings point into them) and the tensor array.
 */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "json.h"
#include "status.h"
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

typedef unsigned long long ull; /* for printf of uint64_t without PRIu64 noise */

/* ---- small helpers ------------------------------------------------------ */

/* "[64, 128]" into buf; returns buf. Long shapes are cut short, never overrun. */
static char *fmt_shape_(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t at = 0;
    buf[0] = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
    return buf;
}

static int cmp_tensor_name_(const void *a, const void *b)
{
    return strcmp(((const kd_st_tensor *)a)->name, ((const kd_st_tensor *)b)->name);
}

static int cmp_str_ptr_(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- validation --------------------------------------------------------- */

/* One tensor's extent in the data buffer, for the tiling check. */
typedef struct span_ {
    uint64_t begin, end;
    const char *name;
} span_;

/* The result of parse_: owned by whoever holds it until parsed_release_. */
typedef struct parsed_ {
    json_t *root;    /* the header; tensor names and metadata strings point into it */
    json_t *meta;    /* root's "__metadata__", or NULL; borrowed from root */
    kd_st_tensor *t; /* (n) sorted by name; data points into the parsed buffer */
    size_t n;
} parsed_;

static void parsed_release_(parsed_ *p)
{
    json_decref(p->root);
    free(p->t);
    memset(p, 0, sizeof *p);
}

/* An error about tensor `name` of file `what`: "'what': tensor 'name': ...". */
#define BAD_TENSOR_(what, name, ...) \
    kd_err_wrap(kd_err(KD_E_FORMAT, __VA_ARGS__), "'%s': tensor '%s'", (what), (name))

/* Read a JSON integer that must be >= 0. Returns 0 and sets *out, or 1. */
static int json_uint_(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return 1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Validate one tensor entry `v` named `name` against a data buffer of `dlen`
 * bytes; fill *t (all but data and shard) and *s. */
static int parse_entry_(const char *what, const char *name, const json_t *v, uint64_t dlen,
                        kd_st_tensor *t, span_ *s)
{
    if (!json_is_object(v))
        return BAD_TENSOR_(what, name, "entry is %s, not an object", kd_json_type_name(v));
    const char *key;
    const json_t *jv;
    json_object_foreach((json_t *)v, key, jv) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 && strcmp(key, "data_offsets") != 0)
            return BAD_TENSOR_(what, name, "unknown key '%s' (an entry holds exactly dtype, shape, data_offsets)",
                               key);
    }

    const json_t *jd = json_object_get(v, "dtype");
    if (!jd)
        return BAD_TENSOR_(what, name, "missing key 'dtype'");
    if (!json_is_string(jd))
        return BAD_TENSOR_(what, name, "dtype is %s, not a string", kd_json_type_name(jd));
    if (kd_dtype_parse(json_string_value(jd), &t->dtype) != KD_OK) {
        /* keep kd_dtype_parse's text (it lists the known names) under KD_E_FORMAT */
        char why[512];
        snprintf(why, sizeof why, "%s", kd_strerror(KD_E_DTYPE) + strlen(kd_status_name(KD_E_DTYPE)) + 2);
        return BAD_TENSOR_(what, name, "%s", why);
    }

    const json_t *js = json_object_get(v, "shape");
    if (!js)
        return BAD_TENSOR_(what, name, "missing key 'shape'");
    if (!json_is_array(js))
        return BAD_TENSOR_(what, name, "shape is %s, not an array", kd_json_type_name(js));
    size_t ndim = json_array_size(js);
    if (ndim > KD_ST_MAX_DIMS)
        return BAD_TENSOR_(what, name, "shape has %zu dims, more than the %d allowed", ndim, KD_ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    for (size_t i = 0; i < ndim; i++) {
        const json_t *jx = json_array_get(js, i);
        if (!json_is_integer(jx))
            return BAD_TENSOR_(what, name, "shape dim %zu is %s, not an integer", i, kd_json_type_name(jx));
        if (json_integer_value(jx) < 0)
            return BAD_TENSOR_(what, name, "shape dim %zu is negative (%lld)", i,
                               (long long)json_integer_value(jx));
        t->shape[i] = (int64_t)json_integer_value(jx);
    }
    char sh[256];
    for (size_t i = 0; i < ndim; i++)
        if (kd_mul_overflow(numel, (uint64_t)t->shape[i], &numel))
            return BAD_TENSOR_(what, name, "shape %s has more elements than fit in 64 bits (overflow)",
                               fmt_shape_(sh, sizeof sh, t->shape, t->ndim));
    uint64_t nbytes;
    if (kd_mul_overflow(numel, kd_dtype_size(t->dtype), &nbytes))
        return BAD_TENSOR_(what, name, "shape %s of %s needs more bytes than fit in 64 bits (overflow)",
                           fmt_shape_(sh, sizeof sh, t->shape, t->ndim), kd_dtype_name(t->dtype));
    t->numel = numel;
    t->nbytes = nbytes;

    const json_t *jo = json_object_get(v, "data_offsets");
    if (!jo)
        return BAD_TENSOR_(what, name, "missing key 'data_offsets'");
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return BAD_TENSOR_(what, name, "data_offsets must be [begin, end], got %s%s", kd_json_type_name(jo),
                           json_is_array(jo) ? (json_array_size(jo) < 2 ? " of fewer than 2 entries"
                                                                         : " of more than 2 entries")
                                             : "");
    if (json_uint_(json_array_get(jo, 0), &s->begin) || json_uint_(json_array_get(jo, 1), &s->end))
        return BAD_TENSOR_(what, name, "data_offsets must be two non-negative integers");
    if (s->begin > s->end)
        return BAD_TENSOR_(what, name, "data_offsets [%llu, %llu] begin after they end", (ull)s->begin,
                           (ull)s->end);
    if (s->end - s->begin != nbytes)
        return BAD_TENSOR_(what, name, "data_offsets [%llu, %llu] hold %llu bytes, shape %s of %s needs %llu",
                           (ull)s->begin, (ull)s->end, (ull)(s->end - s->begin),
                           fmt_shape_(sh, sizeof sh, t->shape, t->ndim), kd_dtype_name(t->dtype), (ull)nbytes);
    if (s->end > dlen)
        return BAD_TENSOR_(what, name,
                           "data_offsets [%llu, %llu] run past the end of the data buffer (%llu bytes): "
                           "is the file truncated?",
                           (ull)s->begin, (ull)s->end, (ull)dlen);
    s->name = name;
    return KD_OK;
}

/* Offset order; ties (zero-size tensors) by end, then by name, so that
 * messages do not depend on the header's key order. */
static int cmp_span_(const void *a, const void *b)
{
    const span_ *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The tensors, taken in offset order, must tile [0, dlen) exactly. */
static int check_tiling_(const char *what, span_ *s, size_t n, uint64_t dlen)
{
    if (n == 0) {
        if (dlen)
            return kd_err(KD_E_FORMAT, "'%s': no tensors, but %llu bytes of data follow the header", what,
                          (ull)dlen);
        return KD_OK;
    }
    qsort(s, n, sizeof *s, cmp_span_);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].begin > at) {
            if (i == 0)
                return BAD_TENSOR_(what, s[i].name, "data_offsets [%llu, %llu]: the first tensor must begin at 0",
                                   (ull)s[i].begin, (ull)s[i].end);
            return BAD_TENSOR_(what, s[i].name,
                               "data_offsets [%llu, %llu] leave a hole of %llu bytes after tensor '%s', "
                               "which ends at %llu",
                               (ull)s[i].begin, (ull)s[i].end, (ull)(s[i].begin - at), s[i - 1].name, (ull)at);
        }
        if (s[i].begin < at)
            return BAD_TENSOR_(what, s[i].name, "data_offsets [%llu, %llu] overlap tensor '%s' [%llu, %llu]",
                               (ull)s[i].begin, (ull)s[i].end, s[i - 1].name, (ull)s[i - 1].begin,
                               (ull)s[i - 1].end);
        at = s[i].end;
    }
    if (at != dlen) /* at < dlen: every end was checked against dlen */
        return kd_err(KD_E_FORMAT, "'%s': %llu trailing bytes after the last tensor '%s', which ends at %llu of %llu",
                      what, (ull)(dlen - at), s[n - 1].name, (ull)at, (ull)dlen);
    return KD_OK;
}

static int check_meta_(const char *what, const json_t *meta)
{
    if (!json_is_object(meta))
        return kd_err(KD_E_FORMAT, "'%s': __metadata__ is %s, not an object", what, kd_json_type_name(meta));
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)meta, key, v) {
        if (!json_is_string(v))
            return kd_err(KD_E_FORMAT, "'%s': __metadata__ key '%s' is %s, not a string", what, key,
                          kd_json_type_name(v));
    }
    return KD_OK;
}

/* Validate the whole file `buf` of `len` bytes, named `what` in messages, and
 * parse it into *p (which the caller releases). Tensor data pointers point
 * into `buf`. On error *p is empty. Every rule of safetensors.h lives here. */
static int parse_(const unsigned char *buf, size_t len, const char *what, parsed_ *p)
{
    memset(p, 0, sizeof *p);
    if (len < 8)
        return kd_err(KD_E_FORMAT, "'%s': file is %zu bytes, too short for the 8-byte header length", what, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen < 2)
        return kd_err(KD_E_FORMAT, "'%s': header length %llu is too small (the least header is \"{}\")", what,
                      (ull)hlen);
    if (hlen > KD_ST_MAX_HEADER)
        return kd_err(KD_E_FORMAT, "'%s': header length %llu exceeds the limit of %llu bytes", what, (ull)hlen,
                      (ull)KD_ST_MAX_HEADER);
    if (hlen > len - 8)
        return kd_err(KD_E_FORMAT, "'%s': header length %llu runs past the end of the file (%zu bytes)", what,
                      (ull)hlen, len);

    json_error_t je;
    p->root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!p->root)
        return kd_err(KD_E_FORMAT, "'%s': header is not valid JSON: %s (line %d, column %d)", what, je.text,
                      je.line, je.column);
    int rc = KD_OK;
    span_ *spans = NULL;
    if (!json_is_object(p->root)) {
        rc = kd_err(KD_E_FORMAT, "'%s': header is %s, not an object", what, kd_json_type_name(p->root));
        goto fail;
    }

    const unsigned char *data = buf + 8 + hlen;
    uint64_t dlen = len - 8 - hlen;
    size_t cap = json_object_size(p->root);
    p->t = calloc(cap ? cap : 1, sizeof *p->t);
    spans = malloc((cap ? cap : 1) * sizeof *spans);
    if (!p->t || !spans) {
        rc = kd_err(KD_E_NOMEM, "'%s': cannot allocate %zu tensor entries", what, cap);
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(p->root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = check_meta_(what, v)) != KD_OK)
                goto fail;
            p->meta = v;
            continue;
        }
        kd_st_tensor *t = &p->t[p->n];
        if ((rc = parse_entry_(what, key, v, dlen, t, &spans[p->n])) != KD_OK)
            goto fail;
        t->name = key;
        t->data = data + spans[p->n].begin; /* begin <= end <= dlen: inside, or one past the end */
        t->shard = 0;
        p->n++;
    }
    if ((rc = check_tiling_(what, spans, p->n, dlen)) != KD_OK)
        goto fail;
    free(spans);
    qsort(p->t, p->n, sizeof *p->t, cmp_tensor_name_);
    return KD_OK;

fail:
    free(spans);
    parsed_release_(p);
    return rc;
}

int kd_st_validate(const void *buf, size_t len, const char *what)
{
    parsed_ p;
    /* KD_E_NOMEM can also come back (a header of millions of entries on a
     * starved machine): that is not the file's fault, so it is not FORMAT. */
    int rc = parse_(len ? buf : (const void *)"", len, what ? what : "(buffer)", &p);
    parsed_release_(&p);
    return rc;
}

/* ---- the reader --------------------------------------------------------- */

/* One file behind a handle. */
typedef struct st_file_ {
    char *path;   /* as opened, e.g. "dir/model-00001-of-00002.safetensors" */
    void *map;    /* read-only private mapping of the whole file; NULL when it is empty */
    size_t size;  /* bytes in the file (and the mapping) */
    json_t *root; /* the parsed header */
    json_t *meta; /* root's "__metadata__", or NULL; borrowed from root */
} st_file_;

struct kd_st {
    st_file_ *files;      /* (nfiles) */
    int nfiles;
    kd_st_tensor *tensors; /* (count) across all files, sorted by name */
    size_t count;
};

/* Map `path` into f (f->path is set first, so kd_st_free can clean up a
 * half-opened file). */
static int map_file_(const char *path, st_file_ *f)
{
    if (!(f->path = strdup(path)))
        return kd_err(KD_E_NOMEM, "cannot copy path '%s'", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kd_err(errno == ENOENT ? KD_E_NOTFOUND : KD_E_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return kd_err(KD_E_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return kd_err(KD_E_IO, "'%s' is not a regular file", path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size > 0) { /* mmap of 0 bytes is EINVAL; an empty file is parsed as "" */
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return kd_err(KD_E_IO, "cannot map '%s' (%zu bytes): %s", path, f->size, strerror(e));
        }
        f->map = m;
    }
    close(fd);
    return KD_OK;
}

/* Map and validate `path` as file number st->nfiles (st->files has room). */
static int add_file_(kd_st *st, const char *path, parsed_ *p)
{
    st_file_ *f = &st->files[st->nfiles++];
    memset(p, 0, sizeof *p);
    KD_TRY(map_file_(path, f));
    KD_TRY(parse_(f->map ? f->map : (const void *)"", f->size, f->path, p));
    f->root = p->root; /* the file owns the header from here on */
    f->meta = p->meta;
    p->root = NULL;
    return KD_OK;
}

static int open_single_(kd_st *st, const char *path)
{
    if (!(st->files = calloc(1, sizeof *st->files)))
        return kd_err(KD_E_NOMEM, "cannot allocate a handle for '%s'", path);
    parsed_ p;
    int rc = add_file_(st, path, &p);
    if (rc != KD_OK)
        return rc;
    st->tensors = p.t;
    st->count = p.n;
    return KD_OK;
}

/* Open the shards named by the parsed index `root` of folder `dir`. Shards
 * are numbered in file-name order, so "model-00001-of-..." is shard 0. */
static int open_shards_(kd_st *st, const char *dir, const char *idx, json_t *root)
{
    if (!json_is_object(root))
        return kd_err(KD_E_FORMAT, "'%s': the index is %s, not an object", idx, kd_json_type_name(root));
    json_t *wm = json_object_get(root, "weight_map");
    if (!wm)
        return kd_err(KD_E_FORMAT, "'%s': missing key 'weight_map'", idx);
    if (!json_is_object(wm))
        return kd_err(KD_E_FORMAT, "'%s': weight_map is %s, not an object", idx, kd_json_type_name(wm));
    size_t nmap = json_object_size(wm);
    if (nmap == 0)
        return kd_err(KD_E_FORMAT, "'%s': weight_map is empty", idx);

    int rc = KD_OK;
    parsed_ *ps = NULL;
    const char **names = malloc(nmap * sizeof *names); /* shard file names, sorted, unique */
    if (!names)
        return kd_err(KD_E_NOMEM, "'%s': cannot allocate %zu names", idx, nmap);
    size_t nnames = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            rc = kd_err(KD_E_FORMAT, "'%s': weight_map entry '%s' is %s, not a file name", idx, key,
                        kd_json_type_name(v));
            goto out;
        }
        const char *s = json_string_value(v);
        if (!*s || strchr(s, '/') || strstr(s, "..")) {
            rc = kd_err(KD_E_FORMAT, "'%s': weight_map puts tensor '%s' in '%s': a shard must be a plain file "
                        "name in the same folder", idx, key, s);
            goto out;
        }
        names[nnames++] = s;
    }
    qsort(names, nnames, sizeof *names, cmp_str_ptr_);
    size_t u = 0;
    for (size_t i = 0; i < nnames; i++)
        if (u == 0 || strcmp(names[u - 1], names[i]) != 0)
            names[u++] = names[i];
    nnames = u;
    if (nnames > INT_MAX) { /* kd_st_tensor.shard is an int */
        rc = kd_err(KD_E_FORMAT, "'%s': %zu shards is too many", idx, nnames);
        goto out;
    }

    st->files = calloc(nnames, sizeof *st->files);
    ps = calloc(nnames, sizeof *ps);
    if (!st->files || !ps) {
        rc = kd_err(KD_E_NOMEM, "'%s': cannot allocate %zu shards", idx, nnames);
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < nnames; i++) {
        char path[4096];
        if ((rc = kd_path_join(path, sizeof path, dir, names[i])) != KD_OK)
            goto out;
        if ((rc = add_file_(st, path, &ps[i])) != KD_OK) {
            if (rc == KD_E_NOTFOUND)
                rc = kd_err_wrap(rc, "'%s': weight_map names shard '%s'", idx, names[i]);
            goto out;
        }
        total += ps[i].n;
    }

    /* merge, then sort by name; a name in two shards shows up as neighbours */
    if (!(st->tensors = malloc((total ? total : 1) * sizeof *st->tensors))) {
        rc = kd_err(KD_E_NOMEM, "'%s': cannot allocate %zu tensors", idx, total);
        goto out;
    }
    for (size_t i = 0; i < nnames; i++) {
        for (size_t j = 0; j < ps[i].n; j++) {
            st->tensors[st->count] = ps[i].t[j];
            st->tensors[st->count++].shard = (int)i;
        }
    }
    qsort(st->tensors, st->count, sizeof *st->tensors, cmp_tensor_name_);
    for (size_t i = 1; i < st->count; i++) {
        const kd_st_tensor *a = &st->tensors[i - 1], *b = &st->tensors[i];
        if (strcmp(a->name, b->name) == 0) {
            int x = a->shard < b->shard ? a->shard : b->shard, y = a->shard < b->shard ? b->shard : a->shard;
            rc = kd_err(KD_E_FORMAT, "'%s': tensor '%s' is in two shards, '%s' and '%s'", idx, a->name,
                        names[x], names[y]);
            goto out;
        }
    }

    json_object_foreach(wm, key, v) {
        const kd_st_tensor *t = kd_st_find(st, key);
        if (!t) {
            rc = kd_err(KD_E_FORMAT, "'%s': weight_map puts tensor '%s' in '%s', which does not hold it", idx, key,
                        json_string_value(v));
            goto out;
        }
        if (strcmp(names[t->shard], json_string_value(v)) != 0) {
            rc = kd_err(KD_E_FORMAT, "'%s': weight_map puts tensor '%s' in '%s', but it is in '%s'", idx, key,
                        json_string_value(v), names[t->shard]);
            goto out;
        }
    }

out:
    if (ps)
        for (size_t i = 0; i < nnames; i++)
            parsed_release_(&ps[i]);
    free(ps);
    free(names);
    return rc;
}

static int open_index_(kd_st *st, const char *dir, const char *idx)
{
    char *text;
    size_t len;
    KD_TRY(kd_read_file(idx, KD_ST_MAX_HEADER, &text, &len));
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root)
        return kd_err(KD_E_FORMAT, "'%s': not valid JSON: %s (line %d, column %d)", idx, je.text, je.line,
                      je.column);
    int rc = open_shards_(st, dir, idx, root);
    json_decref(root);
    return rc;
}

static int exists_(const char *path)
{
    return access(path, F_OK) == 0 || errno != ENOENT; /* other errors: let open() report them */
}

static int open_dir_(kd_st *st, const char *dir)
{
    char path[4096];
    KD_TRY(kd_path_join(path, sizeof path, dir, INDEX_NAME));
    if (exists_(path))
        return open_index_(st, dir, path);
    KD_TRY(kd_path_join(path, sizeof path, dir, SINGLE_NAME));
    if (exists_(path))
        return open_single_(st, path);
    return kd_err(KD_E_NOTFOUND, "folder '%s' has neither " INDEX_NAME " nor " SINGLE_NAME, dir);
}

int kd_st_open(const char *path, kd_st **out)
{
    assert(path && out);
    *out = NULL;
    kd_st *st = calloc(1, sizeof *st);
    if (!st)
        return kd_err(KD_E_NOMEM, "cannot allocate a handle for '%s'", path);
    int rc = kd_is_dir(path) ? open_dir_(st, path) : open_single_(st, path);
    if (rc != KD_OK) {
        kd_st_free(st);
        return rc;
    }
    *out = st;
    return KD_OK;
}

void kd_st_free(kd_st *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->nfiles; i++) {
        st_file_ *f = &st->files[i];
        if (f->map)
            munmap(f->map, f->size);
        json_decref(f->root);
        free(f->path);
    }
    free(st->files);
    free(st->tensors);
    free(st);
}

size_t kd_st_count(const kd_st *st)
{
    assert(st);
    return st->count;
}

const kd_st_tensor *kd_st_at(const kd_st *st, size_t i)
{
    assert(st && i < st->count);
    return &st->tensors[i];
}

const kd_st_tensor *kd_st_find(const kd_st *st, const char *name)
{
    assert(st && name);
    kd_st_tensor key = {.name = name};
    return bsearch(&key, st->tensors, st->count, sizeof *st->tensors, cmp_tensor_name_);
}

const char *kd_st_metadata(const kd_st *st, const char *key)
{
    assert(st && key);
    if (st->nfiles == 0 || !st->files[0].meta)
        return NULL;
    return json_string_value(json_object_get(st->files[0].meta, key)); /* NULL when absent */
}

int kd_st_shard_count(const kd_st *st)
{
    assert(st);
    return st->nfiles;
}

const char *kd_st_shard_path(const kd_st *st, int i)
{
    assert(st && i >= 0 && i < st->nfiles);
    return st->files[i].path;
}

/* ---- the writer --------------------------------------------------------- */

/* A tensor waiting to be written; the data is borrowed from the caller. */
typedef struct wtensor_ {
    char *name;        /* owned copy */
    uint64_t nbytes;
    const void *data;  /* borrowed; NULL allowed when nbytes == 0 */
    json_t *entry;     /* its header entry, borrowed from kd_st_writer.header */
} wtensor_;

struct kd_st_writer {
    wtensor_ *t; /* (n) in the order added */
    size_t n, cap;
    json_t *header; /* name -> {"dtype", "shape"}; owns the entries; data_offsets are set per file written */
    json_t *meta;   /* key -> string value */
};

int kd_st_writer_new(kd_st_writer **out)
{
    assert(out);
    kd_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->header = json_object()) || !(w->meta = json_object())) {
        kd_st_writer_free(w);
        *out = NULL;
        return kd_err(KD_E_NOMEM, "cannot allocate a safetensors writer");
    }
    *out = w;
    return KD_OK;
}

void kd_st_writer_free(kd_st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->t[i].name);
    free(w->t);
    json_decref(w->header);
    json_decref(w->meta);
    free(w);
}

/* A second entry for the same key replaces the first. */
int kd_st_writer_meta(kd_st_writer *w, const char *key, const char *value)
{
    assert(w && key && value);
    json_t *s = json_string(value);
    if (!s)
        return kd_err(KD_E_UTF8, "metadata '%s': value is not valid UTF-8", key);
    if (json_object_set_new(w->meta, key, s) != 0)
        return kd_err(KD_E_UTF8, "metadata key is not valid UTF-8");
    return KD_OK;
}

int kd_st_writer_add(kd_st_writer *w, const char *name, kd_dtype dtype, int ndim, const int64_t *shape,
                     const void *data)
{
    assert(w && name && (ndim == 0 || shape) && (int)dtype >= 0 && (int)dtype < KD_DTYPE_COUNT);
    if (strcmp(name, "__metadata__") == 0)
        return kd_err(KD_E_FORMAT, "tensor '__metadata__': the name is reserved for metadata");
    if (json_object_get(w->header, name))
        return kd_err(KD_E_FORMAT, "tensor '%s' is added twice", name);
    if (ndim < 0 || ndim > KD_ST_MAX_DIMS)
        return kd_err(KD_E_RANGE, "tensor '%s': %d dims, allowed 0 to %d", name, ndim, KD_ST_MAX_DIMS);
    uint64_t numel = 1, nbytes;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return kd_err(KD_E_RANGE, "tensor '%s': dim %d is negative (%lld)", name, i, (long long)shape[i]);
        if (kd_mul_overflow(numel, (uint64_t)shape[i], &numel))
            return kd_err(KD_E_RANGE, "tensor '%s': the shape overflows 64 bits", name);
    }
    if (kd_mul_overflow(numel, kd_dtype_size(dtype), &nbytes) || nbytes > (uint64_t)INT64_MAX)
        return kd_err(KD_E_RANGE, "tensor '%s': the size in bytes overflows", name);
    assert(data || nbytes == 0);

    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        wtensor_ *t = realloc(w->t, cap * sizeof *t);
        if (!t)
            return kd_err(KD_E_NOMEM, "cannot grow the writer to %zu tensors", cap);
        w->t = t;
        w->cap = cap;
    }
    json_t *dims = json_array(), *entry = json_object();
    char *copy = strdup(name);
    int bad = !dims || !entry || !copy;
    for (int i = 0; i < ndim && !bad; i++)
        bad = json_array_append_new(dims, json_integer(shape[i])) != 0;
    bad = bad || json_object_set_new(entry, "dtype", json_string(kd_dtype_name(dtype))) != 0;
    bad = bad || json_object_set(entry, "shape", dims) != 0;
    json_decref(dims);
    if (bad) {
        json_decref(entry);
        free(copy);
        return kd_err(KD_E_NOMEM, "tensor '%s': cannot build its header entry", name);
    }
    if (json_object_set_new(w->header, name, entry) != 0) { /* steals entry even on failure */
        free(copy);
        return kd_err(KD_E_UTF8, "tensor name is not valid UTF-8");
    }
    w->t[w->n++] = (wtensor_){.name = copy, .nbytes = nbytes, .data = data, .entry = entry};
    return KD_OK;
}

static int cmp_wtensor_(const void *a, const void *b)
{
    return strcmp(((const wtensor_ *)a)->name, ((const wtensor_ *)b)->name);
}

/* Put w->t in name order: the order of every file's data and of sharding. */
static void sort_tensors_(kd_st_writer *w)
{
    if (w->n) /* w->t is NULL while empty, and qsort wants a real pointer */
        qsort(w->t, w->n, sizeof *w->t, cmp_wtensor_);
}

/* Write one file holding the tensors w->t[idx[0..n)] (idx increasing, so the
 * data is in name order), or all of w->t when idx is NULL, with the writer's
 * metadata. w->t must be sorted.
 *
 * The whole file is assembled in one buffer because kd_write_file_atomic takes
 * one buffer. That costs a copy of the file's tensors in memory; fine for the
 * student checkpoints written today, and bounded by the shard size when the
 * sharded writer is used. */
static int write_file_(kd_st_writer *w, const size_t *idx, size_t n, const char *path)
{
    json_t *header = json_object();
    if (!header)
        return kd_err(KD_E_NOMEM, "'%s': cannot build the header", path);
    uint64_t at = 0;
    for (size_t k = 0; k < n; k++) {
        wtensor_ *t = &w->t[idx ? idx[k] : k];
        uint64_t end;
        if (kd_add_overflow(at, t->nbytes, &end) || end > (uint64_t)INT64_MAX) {
            json_decref(header);
            return kd_err(KD_E_RANGE, "'%s': tensors total more bytes than fit in 63 bits", path);
        }
        json_t *off = json_pack("[II]", (json_int_t)at, (json_int_t)end);
        if (!off || json_object_set_new(t->entry, "data_offsets", off) != 0 ||
            json_object_set(header, t->name, t->entry) != 0) {
            json_decref(header);
            return kd_err(KD_E_NOMEM, "'%s': cannot build the header", path);
        }
        at = end;
    }
    if (json_object_size(w->meta) && json_object_set(header, "__metadata__", w->meta) != 0) {
        json_decref(header);
        return kd_err(KD_E_NOMEM, "'%s': cannot build the header", path);
    }
    char *hdr = json_dumps(header, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(header);
    if (!hdr)
        return kd_err(KD_E_NOMEM, "'%s': cannot serialise the header", path);

    size_t jlen = strlen(hdr), hlen = (jlen + 7) & ~(size_t)7; /* pad: the data buffer starts 8-aligned */
    if (hlen > KD_ST_MAX_HEADER) { /* the reader would refuse it */
        free(hdr);
        return kd_err(KD_E_RANGE, "'%s': the header would be %zu bytes, more than the %llu allowed", path, hlen,
                      (ull)KD_ST_MAX_HEADER);
    }
    uint64_t total;
    if (kd_add_overflow(8 + hlen, at, &total) || total > SIZE_MAX) {
        free(hdr);
        return kd_err(KD_E_RANGE, "'%s': the file would be too large", path);
    }
    unsigned char *buf = malloc(total);
    if (!buf) {
        free(hdr);
        return kd_err(KD_E_NOMEM, "'%s': cannot allocate %llu bytes to assemble the file", path, (ull)total);
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, hdr, jlen);
    memset(buf + 8 + jlen, ' ', hlen - jlen);
    free(hdr);
    unsigned char *p = buf + 8 + hlen;
    for (size_t k = 0; k < n; k++) {
        const wtensor_ *t = &w->t[idx ? idx[k] : k];
        if (t->nbytes)
            memcpy(p, t->data, t->nbytes);
        p += t->nbytes;
    }
    int rc = kd_write_file_atomic(path, buf, total);
    free(buf);
    return rc;
}

int kd_st_writer_write(kd_st_writer *w, const char *path)
{
    assert(w && path);
    sort_tensors_(w);
    return write_file_(w, NULL, w->n, path);
}

/* ---- the sharded writer ------------------------------------------------- */

/* Assign the sorted tensors to shards as huggingface_hub's
 * split_state_dict_into_shards_factory does (what save_pretrained runs):
 * walk the tensors, fill the current shard greedily and close it when the
 * next tensor would take it over the limit; a tensor larger than the limit is
 * a shard of its own, appended to the list at once, so it is numbered before
 * the shard that was being filled when it came. shard[i] receives the shard
 * number of w->t[i]; the count is returned. 0 tensors give 0 shards. */
static int plan_shards_(const kd_st_writer *w, uint64_t max, int *shard, size_t *pending)
{
    int nshards = 0;
    size_t npend = 0;
    uint64_t size = 0; /* of the current shard, the tensors in pending[0..npend) */
    for (size_t i = 0; i < w->n; i++) {
        uint64_t nb = w->t[i].nbytes;
        if (nb > max) {
            shard[i] = nshards++;
            continue;
        }
        if (size + nb > max) { /* size <= max and nb <= max: no overflow; npend > 0 as size > 0 */
            for (size_t k = 0; k < npend; k++)
                shard[pending[k]] = nshards;
            nshards++;
            npend = 0;
            size = 0;
        }
        pending[npend++] = i;
        size += nb;
    }
    if (npend) {
        for (size_t k = 0; k < npend; k++)
            shard[pending[k]] = nshards;
        nshards++;
    }
    return nshards;
}

/* The index as save_pretrained writes it: sorted keys, indent 2, a newline. */
static int write_index_(const kd_st_writer *w, const int *shard, const char *const *files, uint64_t total,
                        const char *path)
{
    json_t *map = json_object();
    json_t *root = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    int bad = !map || !root;
    for (size_t i = 0; i < w->n && !bad; i++)
        bad = json_object_set_new(map, w->t[i].name, json_string(files[shard[i]])) != 0;
    int rc = bad ? kd_err(KD_E_NOMEM, "'%s': cannot build the index", path)
                 : kd_write_json_atomic(path, root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    return rc;
}

int kd_st_writer_write_sharded(kd_st_writer *w, const char *dir, const char *basename, uint64_t max_shard_bytes,
                               int *nshards)
{
    assert(w && dir && basename && *basename && !strchr(basename, '/'));
    if (nshards)
        *nshards = 0;
    if (max_shard_bytes == 0)
        max_shard_bytes = KD_ST_DEFAULT_SHARD_BYTES;
    sort_tensors_(w);
    char path[4096], name[1024];
    uint64_t total = 0;
    for (size_t i = 0; i < w->n; i++)
        if (kd_add_overflow(total, w->t[i].nbytes, &total))
            return kd_err(KD_E_RANGE, "'%s': tensors total more bytes than fit in 64 bits", dir);

    int *shard = malloc((w->n ? w->n : 1) * sizeof *shard);
    size_t *idx = malloc((w->n ? w->n : 1) * sizeof *idx);
    if (!shard || !idx) {
        free(shard);
        free(idx);
        return kd_err(KD_E_NOMEM, "'%s': cannot plan the shards of %zu tensors", dir, w->n);
    }
    int n = plan_shards_(w, max_shard_bytes, shard, idx);
    int rc = KD_OK;
    if (n <= 1) { /* one file, no index, as save_pretrained */
        if ((size_t)snprintf(name, sizeof name, "%s.safetensors", basename) >= sizeof name)
            rc = kd_err(KD_E_RANGE, "file name of '%s' too long", basename);
        else if ((rc = kd_path_join(path, sizeof path, dir, name)) == KD_OK)
            rc = write_file_(w, NULL, w->n, path);
        n = 1;
        goto out;
    }

    char **files = calloc((size_t)n, sizeof *files);
    if (!files) {
        rc = kd_err(KD_E_NOMEM, "'%s': cannot name %d shards", dir, n);
        goto out;
    }
    for (int s = 0; s < n && rc == KD_OK; s++) {
        int len = snprintf(name, sizeof name, "%s-%05d-of-%05d.safetensors", basename, s + 1, n);
        if (len < 0 || (size_t)len >= sizeof name)
            rc = kd_err(KD_E_RANGE, "shard name of '%s' too long", basename);
        else if (!(files[s] = strdup(name)))
            rc = kd_err(KD_E_NOMEM, "'%s': cannot name %d shards", dir, n);
    }
    /* the shards first, the index last: the index is what makes the set visible */
    for (int s = 0; s < n && rc == KD_OK; s++) {
        size_t k = 0;
        for (size_t i = 0; i < w->n; i++)
            if (shard[i] == s)
                idx[k++] = i;
        if ((rc = kd_path_join(path, sizeof path, dir, files[s])) == KD_OK)
            rc = write_file_(w, idx, k, path);
    }
    if (rc == KD_OK) {
        if ((size_t)snprintf(name, sizeof name, "%s.safetensors.index.json", basename) >= sizeof name)
            rc = kd_err(KD_E_RANGE, "index name of '%s' too long", basename);
        else if ((rc = kd_path_join(path, sizeof path, dir, name)) == KD_OK)
            rc = write_index_(w, shard, (const char *const *)files, total, path);
    }
    for (int s = 0; s < n; s++)
        free(files[s]);
    free(files);

out:
    free(shard);
    free(idx);
    if (rc == KD_OK && nshards)
        *nshards = n;
    return rc;
}

int kd_st_tensor_f32(const kd_st *st, const kd_st_tensor *t, const int64_t *fp8_block, float *dst)
{
    const unsigned char *src = t->data;
    switch (t->dtype) {
    case KD_F32:
        memcpy(dst, src, t->numel * sizeof(float));
        return KD_OK;
    case KD_BF16:
    case KD_F16:
        for (uint64_t i = 0; i < t->numel; i++) {
            unsigned short h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = t->dtype == KD_BF16 ? kd_bf16_to_f32(h) : kd_f16_to_f32(h);
        }
        return KD_OK;
    case KD_F8_E4M3: {
        char sname[300];
        snprintf(sname, sizeof sname, "%s_scale_inv", t->name);
        const kd_st_tensor *s = fp8_block ? kd_st_find(st, sname) : NULL;
        if (!s || s->dtype != KD_F32 || t->ndim != 2 || s->ndim != 2)
            return kd_err(KD_E_DTYPE, "tensor '%s' is F8_E4M3 without %s", t->name,
                          fp8_block ? "F32 block scales" : "an fp8 quantization_config");
        const int64_t O = t->shape[0], I = t->shape[1], b0 = fp8_block[0], b1 = fp8_block[1];
        const int64_t sI = s->shape[1];
#pragma omp parallel for if (O * I > 65536)
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++) {
                float sc;
                memcpy(&sc, (const char *)s->data + 4 * (size_t)((o / b0) * sI + i / b1), 4);
                dst[o * I + i] = kd_fp8e4m3_to_f32(src[o * I + i]) * sc;
            }
        return KD_OK;
    }
    default:
        return kd_err(KD_E_DTYPE, "tensor '%s' is %s; expected F32, BF16, F16 or F8_E4M3", t->name,
                      kd_dtype_name(t->dtype));
    }
}
