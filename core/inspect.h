/* inspect.h - check a HuggingFace model folder against the tensor manifest of
 * its architecture, and describe it: what `distill inspect DIR` prints.
 *
 * A model folder holds config.json and the weights (model.safetensors, or
 * shards listed by model.safetensors.index.json). Inspecting it:
 *   1. loads config.json (kd_model_config_load);
 *   2. opens the weights (kd_st_open), which validates every file;
 *   3. checks that every tensor of the manifest (kd_model_tensors) is present
 *      with the right shape and a float dtype (F32, F16, BF16). In an FP8
 *      checkpoint (quantization_config with quant_method "fp8") a quantizable
 *      weight may instead be F8_E4M3, and then needs its block scales
 *      "<name without .weight>.weight_scale_inv", F32 of shape
 *      [ceil(out / block0), ceil(in / block1)];
 *   4. sorts the other tensors: the layers of multi-token prediction
 *      ("model.layers.N.*" with L <= N < L + num_nextn_predict_layers) are
 *      counted and reported as not used; "*.rotary_emb.inv_freq" buffers are
 *      ignored; anything else is unexpected and logged as one warning (up to
 *      5 names and the count). None of these is an error.
 *
 * Legend: L layers, K key/value heads, D head dim, R kv_lora_rank,
 * Dr qk_rope_head_dim.
 */
#ifndef KD_INSPECT_H
#define KD_INSPECT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dtype.h"
#include "hfconfig.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KD_INSPECT_MAX_NAMES 5

/* What an inspection found. Plain data: nothing to free. */
typedef struct kd_inspect_result {
    char dir[1024];             /* the folder, as given (truncated if longer) */
    kd_model_config cfg;        /* config.json */
    uint64_t total_params;      /* sum of numel over the manifest */
    uint64_t active_params;     /* per token: experts count num_experts_per_tok / n_routed_experts */
    size_t n_tensors;           /* every tensor in the weight files */
    size_t n_manifest;          /* tensors the architecture needs (all present) */
    size_t n_fp8;               /* manifest weights stored as F8_E4M3 (each with a scale tensor) */
    size_t n_mtp;               /* tensors of MTP layers: present, not used */
    size_t n_ignored;           /* rotary_emb.inv_freq buffers */
    size_t n_unexpected;        /* tensors nothing accounts for */
    char unexpected[KD_INSPECT_MAX_NAMES][128]; /* the first of them, in name order */
    int n_shards;               /* weight files */
    uint64_t bytes_stored;      /* every tensor in the weight files, as stored */
    uint64_t bytes_mtp;         /* of which MTP layers */
    uint64_t bytes_bf16;        /* the manifest's parameters in bf16: total_params * 2 */
    size_t dtype_count[KD_DTYPE_COUNT];   /* tensors per dtype, over every tensor in the files */
    uint64_t dtype_bytes[KD_DTYPE_COUNT]; /* their bytes */
    int kv_mla;                 /* 1: the KV cache holds MLA's compressed latent */
    uint64_t kv_bytes_per_token;  /* bf16 KV cache per token: dense 2*L*K*D*2, MLA L*(R+Dr)*2 */
    uint64_t kv_bytes_context;    /* the same for max_position tokens (0 if unknown; saturates) */
} kd_inspect_result;

/* Inspect the model folder `dir` (see above). When `out` is not NULL, print
 * the human-readable report to it. When `res` is not NULL, fill it in; its
 * contents are unspecified on error.
 *
 * Errors, each with a message naming the file, key or tensor:
 *   KD_E_NOTFOUND     no config.json or no weights in `dir`, or a manifest
 *                     tensor (or the scale of an FP8 weight) is missing;
 *   KD_E_SHAPE        a tensor's shape differs from the manifest (both shapes
 *                     are in the message);
 *   KD_E_DTYPE        a tensor has a dtype the model cannot use (e.g. F8_E4M3
 *                     without an fp8 quantization_config, or a non-F32 scale);
 *   KD_E_CONFIG, KD_E_FORMAT, KD_E_UNSUPPORTED  from config.json;
 *   KD_E_FORMAT, KD_E_IO  from the safetensors files;
 *   KD_E_NOMEM.
 * The caller reports the status (kd_strerror) and stops: the folder cannot be
 * loaded as it is. Warnings (unexpected tensors) go to the log. */
int kd_inspect_model(const char *dir, FILE *out, kd_inspect_result *res);

/* Print the human-readable report of `res` to `out` (what kd_inspect_model
 * prints). */
void kd_inspect_print(const kd_inspect_result *res, FILE *out);

/* Write `res` to `out` as one JSON object and a newline. Errors: KD_E_NOMEM,
 * KD_E_IO (the write failed). */
int kd_inspect_write_json(const kd_inspect_result *res, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
