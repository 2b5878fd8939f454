/* export.h - write a trained student as a HuggingFace model folder, the
 * layout save_pretrained + tokenizer.save_pretrained produce, so that
 * transformers (and kd_student_load) can load it:
 *
 *     out_dir/config.json             the source config, dtype updated
 *     out_dir/generation_config.json  eos_token_id set to the given ids
 *     out_dir/model.safetensors       or model-0000i-of-0000N.safetensors
 *                                     + model.safetensors.index.json
 *     out_dir/tokenizer.json ...      the tokenizer files, copied verbatim
 */
#ifndef KD_STUDENT_EXPORT_H
#define KD_STUDENT_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "student/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_export_opts {
    const char *src_dir;       /* the model folder the student was loaded from: config.json,
                                  generation_config.json (optional) */
    const char *tokenizer_dir; /* folder with tokenizer.json etc.; NULL = src_dir */
    kd_dtype dtype;            /* KD_F32 or KD_BF16 */
    uint64_t max_shard_bytes;  /* tensor bytes per shard; 0 = 5 GB like HF */
    const int64_t *eos_ids;    /* the EOS ids for generation_config.json, e.g. the chat
                                  template's end-of-turn token and the tokenizer's eos */
    int neos;                  /* 0 = keep the source's eos_token_id */
} kd_export_opts;

/* Export the parameters of `m` into the new folder `out_dir`.
 *
 * Files written:
 *   - config.json: src_dir/config.json as parsed, every key kept in its order
 *     and value (architectures, model_type, rope...), with "torch_dtype" and
 *     "dtype" set to "float32" or "bfloat16". It must describe `m` (same
 *     model_type and dimensions), else KD_E_CONFIG.
 *   - the weights: every parameter under its HF name (kd_student_param_name),
 *     in opts->dtype (BF16 rounded to nearest even), with metadata
 *     {"format": "pt"}, sharded above max_shard_bytes as
 *     kd_st_writer_write_sharded. Tied embeddings store no lm_head.weight, as
 *     HF does.
 *   - generation_config.json: src_dir's when present, with eos_token_id
 *     replaced by eos_ids (an integer for one id, a list for more; kept when
 *     neos is 0); else a new one with the config's bos_token_id and the eos
 *     ids (or the config's).
 *   - from tokenizer_dir, byte for byte, whichever exist of tokenizer.json
 *     (required), tokenizer_config.json, special_tokens_map.json, vocab.json,
 *     merges.txt, added_tokens.json, chat_template.jinja.
 *
 * Atomic: everything is written into a sibling "out_dir.tmp-XXXXXX" which is
 * renamed to out_dir at the end, so a crash leaves either no export or a
 * whole one (plus, at worst, a stale .tmp- folder). Missing parents of
 * out_dir are created. out_dir may exist only as an empty folder.
 *
 * Errors:
 *   KD_E_CONFIG    out_dir exists and is not an empty folder (remove it or
 *                  choose another); config.json does not describe `m`
 *   KD_E_DTYPE     opts->dtype is neither KD_F32 nor KD_BF16
 *   KD_E_NOTFOUND  src_dir/config.json or tokenizer_dir/tokenizer.json missing
 *   KD_E_FORMAT    config.json or generation_config.json is not a JSON object
 *   KD_E_IO, KD_E_NOMEM, KD_E_RANGE
 * On error out_dir is left as it was. */
int kd_student_export(kd_student *m, const char *out_dir, const kd_export_opts *opts);

/* The general form, for any model with a tensor manifest (kd_model_tensors):
 * the student's above, the teacher's (teacher/train.h). get(ctx, name, ...)
 * returns each manifest tensor's fp32 data and element count by HF name;
 * config.json must describe cfg. Files, atomicity and errors as
 * kd_student_export, plus get's errors. */
typedef int (*kd_export_get)(void *ctx, const char *name, float **data, size_t *numel);
int kd_model_export(const kd_model_config *cfg, kd_export_get get, void *ctx, const char *out_dir,
                    const kd_export_opts *o);

/* Copy the tokenizer files (the list above; tokenizer.json required) from
 * src_dir into the existing folder dst_dir, byte for byte, each atomically.
 * Errors: KD_E_NOTFOUND (no tokenizer.json), KD_E_IO, KD_E_NOMEM. */
int kd_copy_tokenizer_files(const char *src_dir, const char *dst_dir);

#ifdef __cplusplus
}
#endif
#endif
