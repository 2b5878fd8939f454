/* hfconfig.h - HuggingFace config.json into one model config struct, and the
 * tensor manifest of each supported architecture.
 *
 * Supported model_type values: "qwen2", "llama", "deepseek_v3", "deepseek_v2".
 * Anything else is KD_E_UNSUPPORTED naming the type and this list.
 *
 * Rope: both the older keys ("rope_theta" + "rope_scaling": {...}) and the
 * transformers-5 key ("rope_parameters": {"rope_theta": ..., "rope_type": ...})
 * are read. "rope_type" (or the legacy "type") selects default | linear |
 * dynamic | yarn | llama3. When both forms are present, rope_parameters wins.
 *
 * DeepSeek defaults when the key is absent (matching transformers):
 *   deepseek_v3: scoring_func "sigmoid", topk_method "noaux_tc", norm_topk_prob true
 *   deepseek_v2: scoring_func "softmax", topk_method "greedy",   norm_topk_prob false
 * q_lora_rank null means q is projected directly (V2-Lite).
 *
 * Legend for shape comments: V vocab, C hidden, L layers, H query heads,
 * K key/value heads, D head dim, F mlp width, E routed experts.
 */
#ifndef KD_HFCONFIG_H
#define KD_HFCONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KD_ARCH_QWEN2 = 0, KD_ARCH_LLAMA, KD_ARCH_DEEPSEEK_V3, KD_ARCH_DEEPSEEK_V2 } kd_arch;
typedef enum { KD_ROPE_DEFAULT = 0, KD_ROPE_LINEAR, KD_ROPE_DYNAMIC, KD_ROPE_YARN, KD_ROPE_LLAMA3 } kd_rope_type;
typedef enum { KD_SCORE_SOFTMAX = 0, KD_SCORE_SIGMOID } kd_scoring;
typedef enum { KD_TOPK_GREEDY = 0, KD_TOPK_GROUP_LIMITED, KD_TOPK_NOAUX_TC } kd_topk_method;

#define KD_MAX_EOS 8

typedef struct kd_rope {
    kd_rope_type type;
    double theta;                  /* base */
    double factor;                 /* linear/dynamic/yarn/llama3 scaling factor (1 if none) */
    int64_t original_max_position; /* original_max_position_embeddings (0 if absent) */
    double low_freq_factor, high_freq_factor; /* llama3 */
    double beta_fast, beta_slow;              /* yarn (defaults 32, 1) */
    double mscale, mscale_all_dim;            /* yarn, DeepSeek (0 when absent) */
    double attention_factor;                  /* yarn, if given (0 = derive) */
} kd_rope;

typedef struct kd_model_config {
    kd_arch arch;
    char model_type[32];
    int64_t vocab_size;         /* V */
    int64_t hidden_size;        /* C */
    int64_t intermediate_size;  /* F of dense MLPs */
    int64_t num_layers;         /* L (num_hidden_layers) */
    int64_t num_heads;          /* H */
    int64_t num_kv_heads;       /* K (defaults to H) */
    int64_t head_dim;           /* D (defaults to C / H; DeepSeek: the key, else qk_rope_head_dim, as transformers) */
    int64_t max_position;       /* max_position_embeddings */
    double rms_norm_eps;
    int tie_word_embeddings;
    int attention_bias;         /* qwen2: q/k/v biases, always; llama: q/k/v/o biases; deepseek: q_a/kv_a/o */
    int mlp_bias;               /* llama only */
    int64_t bos_token_id;       /* -1 if null/absent */
    int64_t eos_token_ids[KD_MAX_EOS];
    int n_eos;
    kd_rope rope;
    kd_dtype torch_dtype;       /* "dtype" / "torch_dtype" (F32 if absent) */

    /* DeepSeek MLA */
    int64_t q_lora_rank;        /* 0 = none (V2-Lite) */
    int64_t kv_lora_rank;
    int64_t qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int rope_interleave;        /* V3: pairs (2i, 2i+1) */
    /* DeepSeek MoE */
    int64_t n_routed_experts;   /* E; 0 for dense models */
    int64_t n_shared_experts;
    int64_t num_experts_per_tok;
    int64_t moe_intermediate_size;
    int64_t first_k_dense_replace;
    int64_t moe_layer_freq;     /* default 1 */
    int64_t n_group, topk_group;
    int norm_topk_prob;
    double routed_scaling_factor;
    kd_scoring scoring_func;
    kd_topk_method topk_method;
    int64_t num_nextn_predict_layers; /* MTP layers stored after the L main layers */
    /* FP8 checkpoints: quantization_config {"quant_method": "fp8", "weight_block_size": [128,128]} */
    int fp8;
    int64_t fp8_block[2];
} kd_model_config;

/* Parse config.json text. `what` names the source in errors. Errors:
 * KD_E_FORMAT (not JSON, not an object; with line:col), KD_E_CONFIG (a needed
 * key missing, of the wrong type, or out of range, naming the key),
 * KD_E_UNSUPPORTED (model_type, rope type, scoring/topk method). */
int kd_model_config_parse(const char *json, size_t len, const char *what, kd_model_config *out);

/* Read DIR/config.json (or a path to a .json file). */
int kd_model_config_load(const char *path, kd_model_config *out);

/* 1 if layer `l` (0-based) of a DeepSeek model is MoE, 0 if dense. */
int kd_model_layer_is_moe(const kd_model_config *c, int64_t l);

const char *kd_arch_name(kd_arch a);

/* The tensor manifest: every tensor the architecture needs, in HF names. */
typedef enum {
    KD_TR_DENSE = 0,  /* used by every token */
    KD_TR_EXPERT,     /* one routed expert's weight: active for top-k of E */
    KD_TR_EMBED,      /* the input embedding (a lookup, not a matmul) */
} kd_tensor_role;

typedef struct kd_tensor_spec {
    char name[128];
    int ndim;
    int64_t shape[2];
    kd_tensor_role role;
    int quantizable; /* a 2-D linear weight an FP8 checkpoint stores as F8_E4M3 + weight_scale_inv */
} kd_tensor_spec;

/* Enumerate the manifest into a new array (*out, caller frees) of *n specs.
 * MTP layers are not part of it. Errors: KD_E_NOMEM. */
int kd_model_tensors(const kd_model_config *c, kd_tensor_spec **out, size_t *n);

/* Parameter counts from the manifest: total, and active per token (dense +
 * embedding + num_experts_per_tok / n_routed_experts of the expert weights). */
void kd_model_param_counts(const kd_model_config *c, const kd_tensor_spec *specs, size_t n,
                           uint64_t *total, uint64_t *active);

#ifdef __cplusplus
}
#endif
#endif
