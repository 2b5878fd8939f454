/* safetensors.h - read and write HuggingFace safetensors files.
 *
 * Format (https://github.com/huggingface/safetensors): 8 bytes little-endian
 * u64 N, then N bytes of a UTF-8 JSON object, then the data buffer. Each key
 * except "__metadata__" names a tensor:
 *     {"dtype":"BF16","shape":[4096,4096],"data_offsets":[BEGIN,END]}
 * with offsets relative to the start of the data buffer. "__metadata__" is an
 * object of string values.
 *
 * The reader memory-maps the file and validates everything before any tensor
 * is handed out:
 *   - N >= 2, N <= KD_ST_MAX_HEADER (100,000,000, the reference limit) and
 *     8 + N <= file size;
 *   - the header is valid JSON, an object, with no duplicate keys;
 *   - every tensor entry is an object with exactly dtype/shape/data_offsets,
 *     a known dtype, non-negative integer dims (at most KD_ST_MAX_DIMS), and
 *     END - BEGIN == product(shape) * dtype size, computed without overflow;
 *   - taken in offset order, the tensors tile the data buffer exactly: the
 *     first starts at 0, each starts where the previous ended (no overlap, no
 *     hole), and the last ends at the end of the file.
 * A file that breaks any rule is KD_E_FORMAT with a message naming the file
 * and the tensor; nothing is read outside the mapping.
 *
 * A model folder with "model.safetensors.index.json" is opened as one set of
 * shards: every shard named in "weight_map" is opened and validated, and every
 * name in the weight map must be in the shard it points to.
 */
#ifndef KD_SAFETENSORS_H
#define KD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KD_ST_MAX_DIMS 8
#define KD_ST_MAX_HEADER 100000000ull

typedef struct kd_st_tensor {
    const char *name;               /* HF name, e.g. "model.norm.weight" */
    kd_dtype dtype;
    int ndim;
    int64_t shape[KD_ST_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;
    const void *data;               /* into the read-only mapping; not aligned beyond 1 */
    int shard;                      /* index of the file it lives in */
} kd_st_tensor;

typedef struct kd_st kd_st; /* an opened file or set of shards; opaque */

/* Open `path`: a .safetensors file, a folder with model.safetensors.index.json,
 * or a folder with a single model.safetensors. Errors: KD_E_NOTFOUND (no such
 * file, or a folder with neither), KD_E_IO, KD_E_FORMAT, KD_E_NOMEM. On error
 * *out is NULL. */
int kd_st_open(const char *path, kd_st **out);

/* Close and unmap. Every pointer handed out by this handle becomes invalid. */
void kd_st_free(kd_st *st);

/* Number of tensors across all shards, and the i-th in name order. */
size_t kd_st_count(const kd_st *st);
const kd_st_tensor *kd_st_at(const kd_st *st, size_t i);

/* The tensor named `name`, or NULL. O(log n). Valid until kd_st_free. */
const kd_st_tensor *kd_st_find(const kd_st *st, const char *name);

/* Convert tensor t of st to fp32 into dst (t->numel floats): F32 copied,
 * BF16 and F16 widened, F8_E4M3 multiplied by its block scales
 * "<name>_scale_inv" (F32 [ceil(O / b0), ceil(I / b1)], partial blocks at
 * the edges) when fp8_block (b0, b1) is given. Errors: KD_E_DTYPE (another
 * dtype, FP8 without fp8_block or without F32 2-D scales). */
int kd_st_tensor_f32(const kd_st *st, const kd_st_tensor *t, const int64_t *fp8_block, float *dst);

/* Metadata value for `key` from the first shard's "__metadata__", or NULL. */
const char *kd_st_metadata(const kd_st *st, const char *key);

/* Number of files behind the handle, and the path of file i. */
int kd_st_shard_count(const kd_st *st);
const char *kd_st_shard_path(const kd_st *st, int i);

/* Validate a header in memory: `buf` holds the whole file (or at least the
 * 8-byte length, the header and, for offset checks, the data, of total size
 * `len`). This is what kd_st_open runs on a mapping, exposed for the fuzzer.
 * Returns KD_OK or KD_E_FORMAT; allocates nothing that outlives the call. */
int kd_st_validate(const void *buf, size_t len, const char *what);

/* Writer. Tensors are added by reference (the data must stay alive until
 * kd_st_write returns) and written with their names sorted, offsets
 * contiguous, and the header padded with spaces to a multiple of 8 bytes so
 * the data buffer is 8-byte aligned. */
typedef struct kd_st_writer kd_st_writer;

int kd_st_writer_new(kd_st_writer **out);
void kd_st_writer_free(kd_st_writer *w);
/* Add a metadata entry (both strings are copied). */
int kd_st_writer_meta(kd_st_writer *w, const char *key, const char *value);
/* Add a tensor. `data` holds product(shape) * kd_dtype_size(dtype) bytes.
 * Errors: KD_E_RANGE (ndim too large or negative dims), KD_E_FORMAT
 * (duplicate name or name "__metadata__"). */
int kd_st_writer_add(kd_st_writer *w, const char *name, kd_dtype dtype, int ndim,
                     const int64_t *shape, const void *data);
/* Write the file atomically (temporary file, fsync, rename). KD_E_IO. */
int kd_st_writer_write(kd_st_writer *w, const char *path);

/* save_pretrained's default max_shard_size, "5GB" (decimal, as HF parses it). */
#define KD_ST_DEFAULT_SHARD_BYTES 5000000000ull

/* Write the tensors into folder `dir` the way HF's save_pretrained does, with
 * file names built from `basename` (e.g. "model"):
 *   - when they fit in one shard: "<basename>.safetensors" alone, no index;
 *   - otherwise "<basename>-00001-of-0000N.safetensors" ... and
 *     "<basename>.safetensors.index.json":
 *         {"metadata": {"total_size": N}, "weight_map": {name: file, ...}}
 *     with sorted keys and 2-space indent; total_size is the sum of the
 *     tensors' data bytes (headers not counted).
 * Shards are filled in name order, greedily, up to max_shard_bytes of tensor
 * data each (0 = KD_ST_DEFAULT_SHARD_BYTES); a tensor larger than the limit
 * gets a shard of its own, numbered before the shard being filled when it
 * came, exactly as huggingface_hub's split_state_dict_into_shards does. Every
 * file carries the writer's metadata. No tensors: one empty file.
 *
 * Each file is written atomically, the shards before the index; a failure
 * part-way can leave some shards, but never an index naming a missing one.
 * Files of an earlier write in `dir` are not removed (a stale index would
 * shadow a new single file): write into a fresh folder. `dir` must exist.
 * `basename` must be non-empty without '/'. *nshards (may be NULL) receives
 * the number of files of tensors written (1 when there is no index).
 * Errors: KD_E_IO (naming the file), KD_E_RANGE (sizes, names too long),
 * KD_E_NOMEM. */
int kd_st_writer_write_sharded(kd_st_writer *w, const char *dir, const char *basename, uint64_t max_shard_bytes,
                               int *nshards);

#ifdef __cplusplus
}
#endif
#endif
