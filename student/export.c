/* export.c - a student as a HuggingFace model folder. See export.h.
 *
 * kd_student_export reads and checks everything it can before it creates
 * anything (the out folder's state, config.json, generation_config.json, the
 * tokenizer), then writes every file into a fresh sibling folder made with
 * mkdtemp and renames that over out_dir. The JSON documents are kept as
 * parsed by jansson (key order is preserved) and written back with 2-space
 * indent like save_pretrained.
 */
#define _POSIX_C_SOURCE 200809L
#include "student/export.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/util.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4096
/* Tokenizer files are copied whole through memory; the largest real ones
 * (tokenizer.json of 200k-token vocabularies) are tens of MiB. */
#define MAX_COPY_BYTES (1ull << 30)
#define MAX_JSON_BYTES (64ull << 20)

/* The tokenizer files save_pretrained may write; the first is required. */
static const char *const tokenizer_files_[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
    "merges.txt",     "added_tokens.json",     "chat_template.jinja",
};
#define NTOKENIZER_FILES (sizeof tokenizer_files_ / sizeof tokenizer_files_[0])

/* ---- folders ------------------------------------------------------------ */

/* 1 if `path` exists (as anything), 0 if not; other stat errors are reported. */
static int exists_(const char *path, struct stat *sb, int *rc)
{
    *rc = KD_OK;
    if (stat(path, sb) == 0)
        return 1;
    if (errno != ENOENT && errno != ENOTDIR)
        *rc = kd_err(KD_E_IO, "cannot stat '%s': %s", path, strerror(errno));
    return 0;
}

/* 1 if the folder holds anything besides . and .., 0 if not, < 0 on error. */
static int dir_nonempty_(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return kd_err(KD_E_IO, "cannot open folder '%s': %s", dir, strerror(errno));
    struct dirent *e;
    int any = 0;
    while (!any && (e = readdir(d)))
        any = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return any;
}

/* fsync a folder so that a rename inside it is durable; best effort. */
static void sync_dir_(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ---- JSON documents ----------------------------------------------------- */

/* Parse `text` (from `path`) as a JSON object into *out (caller decrefs). */
static int parse_object_(const char *text, size_t len, const char *path, json_t **out)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    *out = NULL;
    if (!root)
        return kd_err(KD_E_FORMAT, "'%s': not valid JSON: %s (line %d, column %d)", path, je.text, je.line,
                      je.column);
    if (!json_is_object(root)) {
        int rc = kd_err(KD_E_FORMAT, "'%s' is %s, not an object", path, kd_json_type_name(root));
        json_decref(root);
        return rc;
    }
    *out = root;
    return KD_OK;
}

/* The fewest significant digits (at least DBL_DIG) with which every real in
 * `v` reads back as the same double. jansson prints all reals with one
 * precision; its default of 17 turns the 1e-06 of a config into
 * 9.9999999999999995e-07. DBL_DIG digits print every value that was written
 * with at most that many (all of a usual config) the way it was written. */
static int real_digits_(const json_t *v)
{
    int best = DBL_DIG;
    if (json_is_real(v)) {
        double x = json_real_value(v);
        char buf[64];
        for (int p = DBL_DIG; p < 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, x);
            if (strtod(buf, NULL) == x)
                return p;
        }
        return 17;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            int d = real_digits_(x);
            best = d > best ? d : best;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            int d = real_digits_(x);
            best = d > best ? d : best;
        }
    }
    return best;
}

/* Write `doc` to DIR/NAME with 2-space indent and a final newline, keys in
 * their order, atomically. */
static int write_json_(const json_t *doc, const char *dir, const char *name)
{
    char path[PATH_CAP];
    KD_TRY(kd_path_join(path, sizeof path, dir, name));
    return kd_write_json_atomic(path, doc,
                                JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(real_digits_(doc)));
}

/* The eos ids as HF writes eos_token_id: an integer for one, a list for more. */
static json_t *eos_value_(const int64_t *ids, int n)
{
    if (n == 1)
        return json_integer((json_int_t)ids[0]);
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer((json_int_t)ids[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* ---- the documents of an export ----------------------------------------- */

/* The source config.json, checked against the student, dtype set. */
static int make_config_(const kd_model_config *s, const char *src_dir, kd_dtype dt, json_t **out)
{
    char path[PATH_CAP], *text;
    size_t len;
    *out = NULL;
    KD_TRY(kd_path_join(path, sizeof path, src_dir, "config.json"));
    KD_TRY(kd_read_file(path, MAX_JSON_BYTES, &text, &len));
    kd_model_config c;
    json_t *doc = NULL;
    int rc = kd_model_config_parse(text, len, path, &c);
    if (rc == KD_OK)
        rc = parse_object_(text, len, path, &doc);
    free(text);
    if (rc != KD_OK)
        return rc;

    if (strcmp(c.model_type, s->model_type) != 0)
        rc = kd_err(KD_E_CONFIG, "'%s' does not describe the model: model_type is '%s', the model's '%s'",
                    path, c.model_type, s->model_type);
#define SAME_(field)                                                                                          \
    else if (c.field != s->field)                                                                            \
        rc = kd_err(KD_E_CONFIG, "'%s' does not describe the model: " #field " is %lld, the model's %lld", \
                    path, (long long)c.field, (long long)s->field);
    SAME_(vocab_size) SAME_(hidden_size) SAME_(intermediate_size) SAME_(num_layers) SAME_(num_heads)
    SAME_(num_kv_heads) SAME_(head_dim) SAME_(tie_word_embeddings) SAME_(attention_bias) SAME_(mlp_bias)
    SAME_(n_routed_experts) SAME_(kv_lora_rank) SAME_(q_lora_rank)
#undef SAME_

    const char *name = dt == KD_BF16 ? "bfloat16" : "float32";
    if (rc == KD_OK && (json_object_set_new(doc, "torch_dtype", json_string(name)) != 0 ||
                        json_object_set_new(doc, "dtype", json_string(name)) != 0))
        rc = kd_err(KD_E_NOMEM, "'%s': cannot set the dtype", path);
    if (rc != KD_OK) {
        json_decref(doc);
        return rc;
    }
    *out = doc;
    return KD_OK;
}

/* The source generation_config.json with the eos ids, or a new one. */
static int make_generation_(const kd_model_config *c, const char *src_dir, const kd_export_opts *o, json_t **out)
{
    char path[PATH_CAP], *text;
    size_t len;
    json_t *doc = NULL;
    *out = NULL;
    KD_TRY(kd_path_join(path, sizeof path, src_dir, "generation_config.json"));
    int rc = kd_read_file(path, MAX_JSON_BYTES, &text, &len);
    if (rc == KD_OK) {
        rc = parse_object_(text, len, path, &doc);
        free(text);
    }
    if (rc != KD_OK && rc != KD_E_NOTFOUND) /* absent: a new one */
        return rc;
    int bad = 0;
    if (!doc) {
        if (!(doc = json_object()))
            return kd_err(KD_E_NOMEM, "cannot build generation_config.json");
        if (c->bos_token_id >= 0)
            bad = json_object_set_new(doc, "bos_token_id", json_integer((json_int_t)c->bos_token_id)) != 0;
        if (!bad && o->neos == 0 && c->n_eos > 0)
            bad = json_object_set_new(doc, "eos_token_id", eos_value_(c->eos_token_ids, c->n_eos)) != 0;
    }
    if (!bad && o->neos > 0)
        bad = json_object_set_new(doc, "eos_token_id", eos_value_(o->eos_ids, o->neos)) != 0;
    if (bad) {
        json_decref(doc);
        return kd_err(KD_E_NOMEM, "cannot build generation_config.json");
    }
    *out = doc;
    return KD_OK;
}

/* The manifest's tensors (kd_model_tensors), got by name, into `dir` in dtype `dt`. */
static int write_weights_(const kd_model_config *cfg, kd_export_get get, void *ctx, const char *dir,
                          kd_dtype dt, uint64_t max_shard_bytes)
{
    kd_tensor_spec *specs = NULL;
    size_t nspecs = 0;
    KD_TRY(kd_model_tensors(cfg, &specs, &nspecs));
    int rc = KD_OK;
    unsigned short *half = NULL; /* the bf16 copy of every tensor, one allocation */
    kd_st_writer *w = NULL;
    size_t total = 0;
    for (size_t i = 0; i < nspecs; i++) {
        const kd_tensor_spec *sp = &specs[i];
        float *p;
        size_t n, want = 1;
        if ((rc = get(ctx, sp->name, &p, &n)) != KD_OK)
            goto out;
        for (int d = 0; d < sp->ndim; d++)
            want *= (size_t)sp->shape[d];
        if (want != n) {
            rc = kd_err(KD_E_INTERNAL, "tensor '%s': the manifest says %zu elements, the model %zu", sp->name,
                        want, n);
            goto out;
        }
        total += n;
    }
    if (dt == KD_BF16 && !(half = malloc((total ? total : 1) * sizeof *half))) {
        rc = kd_err(KD_E_NOMEM, "cannot allocate %zu bf16 parameters for the export", total);
        goto out;
    }
    if ((rc = kd_st_writer_new(&w)) != KD_OK || (rc = kd_st_writer_meta(w, "format", "pt")) != KD_OK)
        goto out;
    size_t at = 0;
    for (size_t i = 0; i < nspecs; i++) {
        const kd_tensor_spec *sp = &specs[i];
        float *p;
        size_t n;
        if ((rc = get(ctx, sp->name, &p, &n)) != KD_OK)
            goto out;
        const void *data = p;
        if (half) {
            for (size_t j = 0; j < n; j++)
                half[at + j] = kd_f32_to_bf16(p[j]);
            data = half + at;
            at += n;
        }
        if ((rc = kd_st_writer_add(w, sp->name, dt, sp->ndim, sp->shape, data)) != KD_OK)
            goto out;
    }
    rc = kd_st_writer_write_sharded(w, dir, "model", max_shard_bytes, NULL);
out:
    kd_st_writer_free(w);
    free(half);
    free(specs);
    return rc;
}

/* Copy SRC/NAME to DST/NAME byte for byte. `required`: a missing file is
 * KD_E_NOTFOUND; otherwise it is skipped. */
static int copy_file_(const char *src, const char *dst, const char *name, int required)
{
    char from[PATH_CAP], to[PATH_CAP], *buf;
    size_t len;
    KD_TRY(kd_path_join(from, sizeof from, src, name));
    KD_TRY(kd_path_join(to, sizeof to, dst, name));
    int rc = kd_read_file(from, MAX_COPY_BYTES, &buf, &len);
    if (rc == KD_E_NOTFOUND)
        return required ? kd_err(KD_E_NOTFOUND, "tokenizer folder '%s' has no %s", src, name) : KD_OK;
    if (rc != KD_OK)
        return rc;
    rc = kd_write_file_atomic(to, buf, len);
    free(buf);
    return rc;
}

/* ---- the export --------------------------------------------------------- */

/* The state out_dir may be in: absent, or an empty folder. */
int kd_copy_tokenizer_files(const char *src_dir, const char *dst_dir)
{
    int rc = KD_OK;
    for (size_t i = 0; i < NTOKENIZER_FILES && rc == KD_OK; i++)
        rc = copy_file_(src_dir, dst_dir, tokenizer_files_[i], i == 0);
    return rc;
}

static int check_out_dir_(const char *dir)
{
    struct stat sb;
    int rc;
    if (!exists_(dir, &sb, &rc))
        return rc;
    if (!S_ISDIR(sb.st_mode))
        return kd_err(KD_E_CONFIG, "output '%s' exists and is not a folder; remove it or choose another", dir);
    int full = dir_nonempty_(dir);
    if (full < 0)
        return full;
    if (full)
        return kd_err(KD_E_CONFIG, "output folder '%s' exists and is not empty; remove it or choose another", dir);
    return KD_OK;
}

int kd_model_export(const kd_model_config *cfg, kd_export_get get, void *ctx, const char *out_dir,
                    const kd_export_opts *o)
{
    assert(cfg && get && out_dir && o && o->src_dir && o->neos >= 0 && (o->neos == 0 || o->eos_ids));
    if (o->dtype != KD_F32 && o->dtype != KD_BF16)
        return kd_err(KD_E_DTYPE, "export dtype %s: the export writes F32 or BF16", kd_dtype_name(o->dtype));
    const char *tok_dir = o->tokenizer_dir ? o->tokenizer_dir : o->src_dir;

    /* out_dir without trailing slashes, so that the sibling is "a.tmp-", not "a/.tmp-" */
    char dst[PATH_CAP], tmp[PATH_CAP + 16];
    size_t len = strlen(out_dir);
    while (len > 1 && out_dir[len - 1] == '/')
        len--;
    if (len == 0 || len >= sizeof dst)
        return kd_err(KD_E_RANGE, "output path '%s' is empty or too long", out_dir);
    memcpy(dst, out_dir, len);
    dst[len] = 0;
    KD_TRY(check_out_dir_(dst));

    /* everything that can be read and checked, before anything is made */
    char tok_json[PATH_CAP];
    KD_TRY(kd_path_join(tok_json, sizeof tok_json, tok_dir, "tokenizer.json"));
    if (access(tok_json, R_OK) != 0) {
        int e = errno;
        return kd_err(e == ENOENT ? KD_E_NOTFOUND : KD_E_IO, "tokenizer folder '%s' has no readable tokenizer.json: %s",
                      tok_dir, strerror(e));
    }
    json_t *config = NULL, *gen = NULL;
    int rc = make_config_(cfg, o->src_dir, o->dtype, &config);
    if (rc == KD_OK)
        rc = make_generation_(cfg, o->src_dir, o, &gen);
    if (rc != KD_OK)
        goto out;

    /* the sibling folder, filled, then renamed over out_dir */
    char *slash = strrchr(dst, '/');
    if (slash && slash != dst) {
        *slash = 0;
        rc = kd_mkdirs(dst);
        *slash = '/';
        if (rc != KD_OK)
            goto out;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", dst);
    if (!mkdtemp(tmp)) {
        rc = kd_err(KD_E_IO, "cannot create folder '%s': %s", tmp, strerror(errno));
        goto out;
    }
    if (chmod(tmp, 0755) != 0) /* mkdtemp makes it 0700; a model folder is for everyone to read */
        rc = kd_err(KD_E_IO, "cannot chmod '%s': %s", tmp, strerror(errno));
    if (rc == KD_OK)
        rc = write_json_(config, tmp, "config.json");
    if (rc == KD_OK)
        rc = write_json_(gen, tmp, "generation_config.json");
    if (rc == KD_OK)
        rc = write_weights_(cfg, get, ctx, tmp, o->dtype, o->max_shard_bytes);
    if (rc == KD_OK)
        rc = kd_copy_tokenizer_files(tok_dir, tmp);
    /* rename replaces out_dir only when it is (still) an empty folder */
    if (rc == KD_OK && rename(tmp, dst) != 0)
        rc = kd_err(KD_E_IO, "cannot rename '%s' to '%s': %s", tmp, dst,
                    errno == ENOTEMPTY || errno == EEXIST ? "the output folder is no longer empty"
                                                          : strerror(errno));
    if (rc != KD_OK) {
        (void)kd_rmtree(tmp);
        goto out;
    }
    if ((slash = strrchr(dst, '/'))) {
        if (slash == dst)
            sync_dir_("/");
        else {
            *slash = 0;
            sync_dir_(dst);
        }
    } else
        sync_dir_(".");

out:
    json_decref(config);
    json_decref(gen);
    return rc;
}

static int student_get_(void *ctx, const char *name, float **data, size_t *numel)
{
    return kd_student_tensor(ctx, name, 0, data, numel);
}

int kd_student_export(kd_student *m, const char *out_dir, const kd_export_opts *o)
{
    return kd_model_export(kd_student_config(m), student_get_, m, out_dir, o);
}
