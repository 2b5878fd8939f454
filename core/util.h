/* util.h - small helpers shared by every module: files, paths, checked sizes.
 *
 * Everything here that can fail returns a kd_status with context (see status.h).
 */
#ifndef KD_UTIL_H
#define KD_UTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Read a whole file into a new NUL-terminated buffer. *out belongs to the caller
 * (free()); *len excludes the NUL. Refuses files larger than `max_bytes`
 * (KD_E_RANGE). Errors: KD_E_IO (naming the path and errno), KD_E_NOMEM. */
int kd_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* Write `len` bytes to `path` atomically: to "path.tmp.<pid>", fsync, rename.
 * Errors: KD_E_IO naming the path. */
int kd_write_file_atomic(const char *path, const void *data, size_t len);

/* Join a directory and a name into buf ("dir/name"). KD_E_RANGE if it does not fit. */
int kd_path_join(char *buf, size_t cap, const char *dir, const char *name);

/* 1 if `path` is a directory, 0 otherwise. */
int kd_is_dir(const char *path);

/* Create `dir` and its missing parents (mkdir -p, mode 0755). KD_E_IO, KD_E_RANGE. */
int kd_mkdirs(const char *dir);

/* Remove `path` and everything below it (rm -rf, without following symlinks).
 * KD_OK when it does not exist. KD_E_IO naming what could not be removed. */
int kd_rmtree(const char *path);

/* Write a JSON document with json_dumps(doc, flags) and a final newline to
 * `path`, atomically (kd_write_file_atomic). KD_E_NOMEM, KD_E_IO. */
struct json_t;
int kd_write_json_atomic(const char *path, const struct json_t *doc, size_t flags);

/* The cache folder: $DISTILL_CACHE, else $XDG_CACHE_HOME/distill, else
 * $HOME/.cache/distill. Written into buf. KD_E_RANGE / KD_E_NOTFOUND (no HOME). */
int kd_cache_dir(char *buf, size_t cap);

/* The folder holding the real tokenizer files of `name` ("qwen3", "llama3_1",
 * "deepseek_v3"), as fetched by scripts/setup.sh:
 *     <cache>/tokenizers/<name>/{tokenizer.json,tokenizer_config.json}
 * Errors: KD_E_NOTFOUND with a hint to run scripts/setup.sh. */
int kd_tokenizer_dir(const char *name, char *buf, size_t cap);

/* Checked arithmetic: return 0 and set *out, or return 1 on overflow. */
static inline int kd_mul_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
static inline int kd_add_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

/* Human-readable byte count ("1.50 GiB") into buf; returns buf. */
char *kd_fmt_bytes(char *buf, size_t cap, double bytes);
/* Human-readable count with a decimal suffix ("1.54B", "37.0M"); returns buf. */
char *kd_fmt_count(char *buf, size_t cap, double n);

#ifdef __cplusplus
}
#endif
#endif
