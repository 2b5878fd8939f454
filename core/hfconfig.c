/* hfconfig.c - HuggingFace config.json into kd_model_config, and the tensor
 * manifest of each architecture. See hfconfig.h.
 *
 * Legend for shape comments: V vocab, C hidden, L layers, H query heads,
 * K key/value heads, D head dim, F dense mlp width, Fm expert mlp width,
 * E routed experts, k experts per token, Q q_lora_rank, R kv_lora_rank,
 * Dn qk_nope_head_dim, Dr qk_rope_head_dim, Dv v_head_dim.
 *
 * The parser reads only the keys it needs and ignores the rest (a config.json
 * carries many keys for training and generation that do not change the
 * weights). Every key it reads is type-checked and range-checked, and every
 * error names the file and the key.
 */
#include "hfconfig.h"
#include "json.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"
#include "util.h"

/* Sanity bounds on sizes. They are far above any released model (DeepSeek-V3:
 * C 7168, L 61, E 256, V 129280) and keep every shape product inside int64 and
 * the manifest of a hostile config.json from growing without bound. */
#define KD_HF_MAX_DIM (1ll << 24)        /* any width or vocabulary */
#define KD_HF_MAX_HEADS (1ll << 16)      /* attention heads */
#define KD_HF_MAX_LAYERS 1024ll          /* decoder layers, MTP layers */
#define KD_HF_MAX_EXPERTS 4096ll         /* routed experts per layer */
#define KD_HF_MAX_EXPERT_SLOTS (1ll << 20) /* layers * experts */
#define KD_HF_MAX_POSITION (1ll << 32)   /* max_position_embeddings */
#define KD_HF_MAX_CONFIG_BYTES (16u << 20)

/* ---- typed access to config.json keys ------------------------------------ */

/* Where a key lives, for messages: "hidden_size" or "rope_parameters.factor". */
typedef struct {
    const char *what; /* the file (or caller's label) */
    const char *sect; /* the enclosing object's key, or NULL at top level */
} keyctx;

static const char *keyname_(const keyctx *k, const char *key, char *buf, size_t cap)
{
    if (k->sect)
        snprintf(buf, cap, "%s.%s", k->sect, key);
    else
        snprintf(buf, cap, "%s", key);
    return buf;
}

static int key_err_(const keyctx *k, const char *key, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int key_err_(const keyctx *k, const char *key, int code, const char *fmt, ...)
{
    char name[128], msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kd_err(code, "%s: key '%s' %s", k->what, keyname_(k, key, name, sizeof name), msg);
}

/* The value of `key`, or NULL when it is absent or null. */
static json_t *get_(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

/* Optional integer: *out is left alone when the key is absent or null.
 * *found (may be NULL) says whether it was there. */
static int opt_int_(json_t *obj, const keyctx *k, const char *key, int64_t *out, int *found)
{
    json_t *v = get_(obj, key);
    if (found)
        *found = v != NULL;
    if (!v)
        return KD_OK;
    if (!json_is_integer(v))
        return key_err_(k, key, KD_E_CONFIG, "must be an integer, got %s", kd_json_type_name(v));
    *out = (int64_t)json_integer_value(v);
    return KD_OK;
}

static int req_int_(json_t *obj, const keyctx *k, const char *key, int64_t *out)
{
    int found;
    KD_TRY(opt_int_(obj, k, key, out, &found));
    if (!found)
        return key_err_(k, key, KD_E_CONFIG, "is missing (an integer is required)");
    return KD_OK;
}

static int opt_num_(json_t *obj, const keyctx *k, const char *key, double *out, int *found)
{
    json_t *v = get_(obj, key);
    if (found)
        *found = v != NULL;
    if (!v)
        return KD_OK;
    if (!json_is_number(v))
        return key_err_(k, key, KD_E_CONFIG, "must be a number, got %s", kd_json_type_name(v));
    *out = json_number_value(v);
    return KD_OK;
}

static int req_num_(json_t *obj, const keyctx *k, const char *key, double *out)
{
    int found;
    KD_TRY(opt_num_(obj, k, key, out, &found));
    if (!found)
        return key_err_(k, key, KD_E_CONFIG, "is missing (a number is required)");
    return KD_OK;
}

static int opt_bool_(json_t *obj, const keyctx *k, const char *key, int *out)
{
    json_t *v = get_(obj, key);
    if (!v)
        return KD_OK;
    if (!json_is_boolean(v))
        return key_err_(k, key, KD_E_CONFIG, "must be true or false, got %s", kd_json_type_name(v));
    *out = json_is_true(v);
    return KD_OK;
}

/* Optional string: *out is NULL when absent or null; it points into `obj`. */
static int opt_str_(json_t *obj, const keyctx *k, const char *key, const char **out)
{
    json_t *v = get_(obj, key);
    *out = NULL;
    if (!v)
        return KD_OK;
    if (!json_is_string(v))
        return key_err_(k, key, KD_E_CONFIG, "must be a string, got %s", kd_json_type_name(v));
    *out = json_string_value(v);
    return KD_OK;
}

/* Optional object: *out is NULL when absent or null. */
static int opt_obj_(json_t *obj, const keyctx *k, const char *key, json_t **out)
{
    json_t *v = get_(obj, key);
    *out = NULL;
    if (!v)
        return KD_OK;
    if (!json_is_object(v))
        return key_err_(k, key, KD_E_CONFIG, "must be an object, got %s", kd_json_type_name(v));
    *out = v;
    return KD_OK;
}

static int check_range_(const keyctx *k, const char *key, int64_t v, int64_t lo, int64_t hi)
{
    if (v < lo || v > hi)
        return key_err_(k, key, KD_E_CONFIG, "is %lld, must be in [%lld, %lld]", (long long)v,
                        (long long)lo, (long long)hi);
    return KD_OK;
}

static int check_pos_num_(const keyctx *k, const char *key, double v)
{
    if (!(v > 0) || v > 1e300)
        return key_err_(k, key, KD_E_CONFIG, "is %g, must be a positive number", v);
    return KD_OK;
}

/* ---- rope ---------------------------------------------------------------- */

static int parse_rope_type_(const keyctx *k, const char *key, const char *s, kd_rope_type *out)
{
    static const struct {
        const char *name;
        kd_rope_type type;
    } types[] = {{"default", KD_ROPE_DEFAULT}, {"linear", KD_ROPE_LINEAR}, {"dynamic", KD_ROPE_DYNAMIC},
                 {"yarn", KD_ROPE_YARN},       {"llama3", KD_ROPE_LLAMA3}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(s, types[i].name)) {
            *out = types[i].type;
            return KD_OK;
        }
    char name[128];
    return kd_err(KD_E_UNSUPPORTED,
                  "%s: rope type '%.64s' (key '%s') is not supported (supported: default, linear, "
                  "dynamic, yarn, llama3)",
                  k->what, s, keyname_(k, key, name, sizeof name));
}

/* Rope from "rope_parameters" (transformers 5), else "rope_scaling" +
 * "rope_theta" (older files). Within the object, "rope_type" wins over the
 * legacy "type"; a rope_theta inside rope_parameters wins over the top-level
 * one. Defaults: theta 10000 (transformers' default), factor 1, yarn betas
 * 32 / 1, mscale and mscale_all_dim 0 (absent: transformers tests them for truth). */
static int parse_rope_(json_t *root, const char *what, kd_rope *r)
{
    keyctx top = {what, NULL};
    memset(r, 0, sizeof *r);
    r->type = KD_ROPE_DEFAULT;
    r->theta = 10000.0;
    r->factor = 1.0;
    r->beta_fast = 32.0;
    r->beta_slow = 1.0;
    r->mscale = 0.0;
    r->mscale_all_dim = 0.0;

    KD_TRY(opt_num_(root, &top, "rope_theta", &r->theta, NULL));
    json_t *p;
    const char *sect = "rope_parameters";
    KD_TRY(opt_obj_(root, &top, sect, &p));
    if (!p) {
        sect = "rope_scaling";
        KD_TRY(opt_obj_(root, &top, sect, &p));
    }
    if (p) {
        keyctx k = {what, sect};
        const char *type = NULL, *tkey = "rope_type";
        KD_TRY(opt_str_(p, &k, "rope_type", &type));
        if (!type) {
            tkey = "type";
            KD_TRY(opt_str_(p, &k, "type", &type));
        }
        if (!type && !strcmp(sect, "rope_scaling"))
            return key_err_(&k, "rope_type", KD_E_CONFIG, "is missing (neither 'rope_type' nor 'type' is given)");
        if (type)
            KD_TRY(parse_rope_type_(&k, tkey, type, &r->type));

        int has_orig;
        KD_TRY(opt_int_(p, &k, "original_max_position_embeddings", &r->original_max_position, &has_orig));
        if (has_orig)
            KD_TRY(check_range_(&k, "original_max_position_embeddings", r->original_max_position, 1,
                                KD_HF_MAX_POSITION));

        if (r->type != KD_ROPE_DEFAULT) {
            KD_TRY(req_num_(p, &k, "factor", &r->factor));
            KD_TRY(check_pos_num_(&k, "factor", r->factor));
        }
        if (r->type == KD_ROPE_LLAMA3) {
            KD_TRY(req_num_(p, &k, "low_freq_factor", &r->low_freq_factor));
            KD_TRY(req_num_(p, &k, "high_freq_factor", &r->high_freq_factor));
            KD_TRY(check_pos_num_(&k, "low_freq_factor", r->low_freq_factor));
            KD_TRY(check_pos_num_(&k, "high_freq_factor", r->high_freq_factor));
            if (r->high_freq_factor <= r->low_freq_factor)
                return key_err_(&k, "high_freq_factor", KD_E_CONFIG, "is %g, must be above low_freq_factor (%g)",
                                r->high_freq_factor, r->low_freq_factor);
            if (!has_orig)
                return key_err_(&k, "original_max_position_embeddings", KD_E_CONFIG,
                                "is missing (llama3 rope needs it)");
        }
        if (r->type == KD_ROPE_YARN) {
            KD_TRY(opt_num_(p, &k, "beta_fast", &r->beta_fast, NULL));
            KD_TRY(opt_num_(p, &k, "beta_slow", &r->beta_slow, NULL));
            KD_TRY(opt_num_(p, &k, "mscale", &r->mscale, NULL));
            KD_TRY(opt_num_(p, &k, "mscale_all_dim", &r->mscale_all_dim, NULL));
            KD_TRY(opt_num_(p, &k, "attention_factor", &r->attention_factor, NULL));
            KD_TRY(check_pos_num_(&k, "beta_fast", r->beta_fast));
            KD_TRY(check_pos_num_(&k, "beta_slow", r->beta_slow));
            if (r->mscale < 0 || r->mscale_all_dim < 0 || r->attention_factor < 0)
                return key_err_(&k, r->mscale < 0 ? "mscale" : r->mscale_all_dim < 0 ? "mscale_all_dim"
                                                                                   : "attention_factor",
                                KD_E_CONFIG, "must not be negative");
        }
        int inner;
        KD_TRY(opt_num_(p, &k, "rope_theta", &r->theta, &inner));
        if (inner)
            return check_pos_num_(&k, "rope_theta", r->theta);
    }
    return check_pos_num_(&top, "rope_theta", r->theta);
}

/* ---- the config ---------------------------------------------------------- */

const char *kd_arch_name(kd_arch a)
{
    switch (a) {
    case KD_ARCH_QWEN2: return "Qwen2";
    case KD_ARCH_LLAMA: return "Llama";
    case KD_ARCH_DEEPSEEK_V3: return "DeepSeek-V3";
    case KD_ARCH_DEEPSEEK_V2: return "DeepSeek-V2";
    }
    return "?";
}

static int is_deepseek_(const kd_model_config *c)
{
    return c->arch == KD_ARCH_DEEPSEEK_V3 || c->arch == KD_ARCH_DEEPSEEK_V2;
}

static int parse_model_type_(json_t *root, const char *what, kd_model_config *c)
{
    static const struct {
        const char *name;
        kd_arch arch;
    } types[] = {{"qwen2", KD_ARCH_QWEN2},
                 {"llama", KD_ARCH_LLAMA},
                 {"deepseek_v3", KD_ARCH_DEEPSEEK_V3},
                 {"deepseek_v2", KD_ARCH_DEEPSEEK_V2}};
    keyctx k = {what, NULL};
    const char *mt;
    KD_TRY(opt_str_(root, &k, "model_type", &mt));
    if (!mt)
        return key_err_(&k, "model_type", KD_E_CONFIG, "is missing (a string is required)");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(mt, types[i].name)) {
            c->arch = types[i].arch;
            snprintf(c->model_type, sizeof c->model_type, "%s", mt);
            return KD_OK;
        }
    return kd_err(KD_E_UNSUPPORTED,
                  "%s: model_type '%.64s' is not supported (supported: qwen2, llama, deepseek_v3, deepseek_v2)",
                  what, mt);
}

/* "dtype" (transformers 5) or legacy "torch_dtype"; F32 when absent. */
static int parse_dtype_(json_t *root, const char *what, kd_model_config *c)
{
    keyctx k = {what, NULL};
    const char *key = "dtype", *s;
    KD_TRY(opt_str_(root, &k, key, &s));
    if (!s) {
        key = "torch_dtype";
        KD_TRY(opt_str_(root, &k, key, &s));
    }
    c->torch_dtype = KD_F32;
    if (!s)
        return KD_OK;
    if (!strcmp(s, "float32"))
        c->torch_dtype = KD_F32;
    else if (!strcmp(s, "bfloat16"))
        c->torch_dtype = KD_BF16;
    else if (!strcmp(s, "float16"))
        c->torch_dtype = KD_F16;
    else
        return key_err_(&k, key, KD_E_CONFIG, "is '%.64s', must be one of float32, bfloat16, float16", s);
    return KD_OK;
}

/* bos_token_id: an integer or null (-1). eos_token_id: an integer, a list of
 * integers, or null (none). */
static int parse_special_tokens_(json_t *root, const char *what, kd_model_config *c)
{
    keyctx k = {what, NULL};
    c->bos_token_id = -1;
    KD_TRY(opt_int_(root, &k, "bos_token_id", &c->bos_token_id, NULL));
    c->n_eos = 0;
    json_t *e = get_(root, "eos_token_id");
    if (!e)
        return KD_OK;
    if (json_is_integer(e)) {
        c->eos_token_ids[c->n_eos++] = (int64_t)json_integer_value(e);
        return KD_OK;
    }
    if (!json_is_array(e))
        return key_err_(&k, "eos_token_id", KD_E_CONFIG, "must be an integer or a list of integers, got %s",
                        kd_json_type_name(e));
    if (json_array_size(e) > KD_MAX_EOS)
        return key_err_(&k, "eos_token_id", KD_E_CONFIG, "lists %zu ids, at most %d are supported",
                        json_array_size(e), KD_MAX_EOS);
    size_t i;
    json_t *v;
    json_array_foreach(e, i, v)
    {
        if (!json_is_integer(v))
            return key_err_(&k, "eos_token_id", KD_E_CONFIG, "item %zu must be an integer, got %s", i,
                            kd_json_type_name(v));
        c->eos_token_ids[c->n_eos++] = (int64_t)json_integer_value(v);
    }
    return KD_OK;
}

/* quantization_config: only {"quant_method": "fp8", "weight_block_size": [b0, b1]}
 * (DeepSeek's block-scaled e4m3 weights) is understood. */
static int parse_quant_(json_t *root, const char *what, kd_model_config *c)
{
    keyctx top = {what, NULL};
    json_t *q;
    KD_TRY(opt_obj_(root, &top, "quantization_config", &q));
    c->fp8 = 0;
    c->fp8_block[0] = c->fp8_block[1] = 0;
    if (!q)
        return KD_OK;
    keyctx k = {what, "quantization_config"};
    const char *method, *fmt;
    KD_TRY(opt_str_(q, &k, "quant_method", &method));
    if (!method)
        return key_err_(&k, "quant_method", KD_E_CONFIG, "is missing (a string is required)");
    if (strcmp(method, "fp8"))
        return kd_err(KD_E_UNSUPPORTED, "%s: quantization method '%.64s' is not supported (supported: fp8)",
                      what, method);
    KD_TRY(opt_str_(q, &k, "fmt", &fmt));
    if (fmt && strcmp(fmt, "e4m3"))
        return kd_err(KD_E_UNSUPPORTED, "%s: fp8 format '%.64s' is not supported (supported: e4m3)", what, fmt);
    c->fp8 = 1;
    c->fp8_block[0] = c->fp8_block[1] = 128;
    json_t *b = get_(q, "weight_block_size");
    if (b) {
        if (!json_is_array(b) || json_array_size(b) != 2 || !json_is_integer(json_array_get(b, 0)) ||
            !json_is_integer(json_array_get(b, 1)))
            return key_err_(&k, "weight_block_size", KD_E_CONFIG, "must be a list of two integers");
        for (int i = 0; i < 2; i++) {
            c->fp8_block[i] = (int64_t)json_integer_value(json_array_get(b, (size_t)i));
            KD_TRY(check_range_(&k, "weight_block_size", c->fp8_block[i], 1, KD_HF_MAX_DIM));
        }
    }
    return KD_OK;
}

static int parse_topk_method_(const keyctx *k, const char *s, kd_topk_method *out)
{
    if (!strcmp(s, "greedy"))
        *out = KD_TOPK_GREEDY;
    else if (!strcmp(s, "group_limited_greedy"))
        *out = KD_TOPK_GROUP_LIMITED;
    else if (!strcmp(s, "noaux_tc"))
        *out = KD_TOPK_NOAUX_TC;
    else
        return kd_err(KD_E_UNSUPPORTED,
                      "%s: topk_method '%.64s' is not supported (supported: greedy, group_limited_greedy, noaux_tc)",
                      k->what, s);
    return KD_OK;
}

/* MLA and MoE keys of deepseek_v3 / deepseek_v2. */
static int parse_deepseek_(json_t *root, const char *what, kd_model_config *c)
{
    keyctx k = {what, NULL};
    int v3 = c->arch == KD_ARCH_DEEPSEEK_V3;

    /* MLA */
    c->q_lora_rank = 0;
    KD_TRY(opt_int_(root, &k, "q_lora_rank", &c->q_lora_rank, NULL));
    KD_TRY(check_range_(&k, "q_lora_rank", c->q_lora_rank, 0, KD_HF_MAX_DIM));
    KD_TRY(req_int_(root, &k, "kv_lora_rank", &c->kv_lora_rank));
    KD_TRY(check_range_(&k, "kv_lora_rank", c->kv_lora_rank, 1, KD_HF_MAX_DIM));
    KD_TRY(req_int_(root, &k, "qk_nope_head_dim", &c->qk_nope_head_dim));
    KD_TRY(check_range_(&k, "qk_nope_head_dim", c->qk_nope_head_dim, 0, KD_HF_MAX_DIM));
    KD_TRY(req_int_(root, &k, "qk_rope_head_dim", &c->qk_rope_head_dim));
    KD_TRY(check_range_(&k, "qk_rope_head_dim", c->qk_rope_head_dim, 2, KD_HF_MAX_DIM));
    if (c->qk_rope_head_dim % 2)
        return key_err_(&k, "qk_rope_head_dim", KD_E_CONFIG, "is %lld, must be even (rope rotates pairs)",
                        (long long)c->qk_rope_head_dim);
    KD_TRY(req_int_(root, &k, "v_head_dim", &c->v_head_dim));
    KD_TRY(check_range_(&k, "v_head_dim", c->v_head_dim, 1, KD_HF_MAX_DIM));
    /* transformers: DeepseekV3 interleaves q_pe/k_pe unless rope_interleave is
     * false; DeepseekV2's rotary embedding is interleaved by construction. */
    c->rope_interleave = 1;
    KD_TRY(opt_bool_(root, &k, "rope_interleave", &c->rope_interleave));
    /* transformers keeps head_dim = qk_rope_head_dim for DeepSeek (the rope width) */
    int has_hd;
    KD_TRY(opt_int_(root, &k, "head_dim", &c->head_dim, &has_hd));
    if (!has_hd)
        c->head_dim = c->qk_rope_head_dim;
    KD_TRY(check_range_(&k, "head_dim", c->head_dim, 1, KD_HF_MAX_DIM));

    /* MoE */
    c->n_routed_experts = 0;
    c->n_shared_experts = 0;
    c->num_experts_per_tok = 0;
    c->moe_intermediate_size = 0;
    c->first_k_dense_replace = 0;
    c->moe_layer_freq = 1;
    c->n_group = c->topk_group = 1;
    c->routed_scaling_factor = 1.0;
    c->norm_topk_prob = v3;
    c->scoring_func = v3 ? KD_SCORE_SIGMOID : KD_SCORE_SOFTMAX;
    c->topk_method = v3 ? KD_TOPK_NOAUX_TC : KD_TOPK_GREEDY;
    c->num_nextn_predict_layers = 0;

    KD_TRY(opt_int_(root, &k, "num_nextn_predict_layers", &c->num_nextn_predict_layers, NULL));
    KD_TRY(check_range_(&k, "num_nextn_predict_layers", c->num_nextn_predict_layers, 0, KD_HF_MAX_LAYERS));
    KD_TRY(opt_int_(root, &k, "n_routed_experts", &c->n_routed_experts, NULL));
    KD_TRY(check_range_(&k, "n_routed_experts", c->n_routed_experts, 0, KD_HF_MAX_EXPERTS));
    if (c->n_routed_experts == 0)
        return KD_OK; /* a dense DeepSeek: the MoE keys do not matter */
    if (c->n_routed_experts * c->num_layers > KD_HF_MAX_EXPERT_SLOTS)
        return key_err_(&k, "n_routed_experts", KD_E_CONFIG, "is %lld, too many for %lld layers (at most %lld in all)",
                        (long long)c->n_routed_experts, (long long)c->num_layers,
                        (long long)KD_HF_MAX_EXPERT_SLOTS);

    KD_TRY(req_int_(root, &k, "num_experts_per_tok", &c->num_experts_per_tok));
    KD_TRY(check_range_(&k, "num_experts_per_tok", c->num_experts_per_tok, 1, KD_HF_MAX_EXPERTS));
    if (c->num_experts_per_tok > c->n_routed_experts)
        return key_err_(&k, "num_experts_per_tok", KD_E_CONFIG, "is %lld, more than n_routed_experts (%lld)",
                        (long long)c->num_experts_per_tok, (long long)c->n_routed_experts);
    KD_TRY(req_int_(root, &k, "moe_intermediate_size", &c->moe_intermediate_size));
    KD_TRY(check_range_(&k, "moe_intermediate_size", c->moe_intermediate_size, 1, KD_HF_MAX_DIM));
    KD_TRY(opt_int_(root, &k, "n_shared_experts", &c->n_shared_experts, NULL));
    KD_TRY(check_range_(&k, "n_shared_experts", c->n_shared_experts, 0, KD_HF_MAX_EXPERTS));
    KD_TRY(opt_int_(root, &k, "first_k_dense_replace", &c->first_k_dense_replace, NULL));
    KD_TRY(check_range_(&k, "first_k_dense_replace", c->first_k_dense_replace, 0, KD_HF_MAX_LAYERS));
    KD_TRY(opt_int_(root, &k, "moe_layer_freq", &c->moe_layer_freq, NULL));
    KD_TRY(check_range_(&k, "moe_layer_freq", c->moe_layer_freq, 1, KD_HF_MAX_LAYERS));
    KD_TRY(opt_num_(root, &k, "routed_scaling_factor", &c->routed_scaling_factor, NULL));
    KD_TRY(check_pos_num_(&k, "routed_scaling_factor", c->routed_scaling_factor));
    KD_TRY(opt_bool_(root, &k, "norm_topk_prob", &c->norm_topk_prob));

    const char *s;
    KD_TRY(opt_str_(root, &k, "scoring_func", &s));
    if (s) {
        if (!strcmp(s, "softmax"))
            c->scoring_func = KD_SCORE_SOFTMAX;
        else if (!strcmp(s, "sigmoid"))
            c->scoring_func = KD_SCORE_SIGMOID;
        else
            return kd_err(KD_E_UNSUPPORTED, "%s: scoring_func '%.64s' is not supported (supported: softmax, sigmoid)",
                          what, s);
    }
    KD_TRY(opt_str_(root, &k, "topk_method", &s));
    if (s)
        KD_TRY(parse_topk_method_(&k, s, &c->topk_method));

    KD_TRY(opt_int_(root, &k, "n_group", &c->n_group, NULL));
    KD_TRY(check_range_(&k, "n_group", c->n_group, 1, KD_HF_MAX_EXPERTS));
    KD_TRY(opt_int_(root, &k, "topk_group", &c->topk_group, NULL));
    KD_TRY(check_range_(&k, "topk_group", c->topk_group, 1, KD_HF_MAX_EXPERTS));
    if (c->topk_group > c->n_group)
        return key_err_(&k, "topk_group", KD_E_CONFIG, "is %lld, more than n_group (%lld)", (long long)c->topk_group,
                        (long long)c->n_group);
    if (c->n_routed_experts % c->n_group)
        return key_err_(&k, "n_routed_experts", KD_E_CONFIG, "is %lld, not divisible by n_group (%lld)",
                        (long long)c->n_routed_experts, (long long)c->n_group);
    /* group-limited routing picks k experts among topk_group groups of E/n_group */
    if (c->topk_method != KD_TOPK_GREEDY &&
        c->num_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
        return key_err_(&k, "num_experts_per_tok", KD_E_CONFIG,
                        "is %lld, more than the %lld experts in topk_group (%lld) groups of %lld",
                        (long long)c->num_experts_per_tok, (long long)(c->topk_group * (c->n_routed_experts / c->n_group)),
                        (long long)c->topk_group, (long long)(c->n_routed_experts / c->n_group));
    return KD_OK;
}

static int parse_root_(json_t *root, const char *what, kd_model_config *c)
{
    keyctx k = {what, NULL};
    KD_TRY(parse_model_type_(root, what, c));

    KD_TRY(req_int_(root, &k, "hidden_size", &c->hidden_size));
    KD_TRY(check_range_(&k, "hidden_size", c->hidden_size, 1, KD_HF_MAX_DIM));
    KD_TRY(req_int_(root, &k, "num_hidden_layers", &c->num_layers));
    KD_TRY(check_range_(&k, "num_hidden_layers", c->num_layers, 1, KD_HF_MAX_LAYERS));
    KD_TRY(req_int_(root, &k, "num_attention_heads", &c->num_heads));
    KD_TRY(check_range_(&k, "num_attention_heads", c->num_heads, 1, KD_HF_MAX_HEADS));
    KD_TRY(req_int_(root, &k, "vocab_size", &c->vocab_size));
    KD_TRY(check_range_(&k, "vocab_size", c->vocab_size, 1, KD_HF_MAX_DIM));
    KD_TRY(req_int_(root, &k, "intermediate_size", &c->intermediate_size));
    KD_TRY(check_range_(&k, "intermediate_size", c->intermediate_size, 1, KD_HF_MAX_DIM));

    c->num_kv_heads = c->num_heads;
    KD_TRY(opt_int_(root, &k, "num_key_value_heads", &c->num_kv_heads, NULL));
    KD_TRY(check_range_(&k, "num_key_value_heads", c->num_kv_heads, 1, KD_HF_MAX_HEADS));
    if (c->num_heads % c->num_kv_heads)
        return key_err_(&k, "num_attention_heads", KD_E_CONFIG, "is %lld, not divisible by num_key_value_heads (%lld)",
                        (long long)c->num_heads, (long long)c->num_kv_heads);

    c->max_position = 0; /* unknown */
    KD_TRY(opt_int_(root, &k, "max_position_embeddings", &c->max_position, NULL));
    KD_TRY(check_range_(&k, "max_position_embeddings", c->max_position, 0, KD_HF_MAX_POSITION));
    c->rms_norm_eps = 1e-6; /* transformers' default for all four */
    KD_TRY(opt_num_(root, &k, "rms_norm_eps", &c->rms_norm_eps, NULL));
    if (!(c->rms_norm_eps > 0) || c->rms_norm_eps >= 1)
        return key_err_(&k, "rms_norm_eps", KD_E_CONFIG, "is %g, must be in (0, 1)", c->rms_norm_eps);
    c->tie_word_embeddings = 0;
    KD_TRY(opt_bool_(root, &k, "tie_word_embeddings", &c->tie_word_embeddings));

    c->attention_bias = c->mlp_bias = 0;
    if (c->arch == KD_ARCH_QWEN2) {
        c->attention_bias = 1; /* Qwen2 always has q/k/v biases, whatever the key says */
    } else {
        KD_TRY(opt_bool_(root, &k, "attention_bias", &c->attention_bias));
        if (c->arch == KD_ARCH_LLAMA)
            KD_TRY(opt_bool_(root, &k, "mlp_bias", &c->mlp_bias));
    }

    KD_TRY(parse_special_tokens_(root, what, c));
    KD_TRY(parse_rope_(root, what, &c->rope));
    KD_TRY(parse_dtype_(root, what, c));
    KD_TRY(parse_quant_(root, what, c));

    if (is_deepseek_(c))
        return parse_deepseek_(root, what, c);

    int has_hd;
    KD_TRY(opt_int_(root, &k, "head_dim", &c->head_dim, &has_hd));
    if (has_hd) {
        KD_TRY(check_range_(&k, "head_dim", c->head_dim, 1, KD_HF_MAX_DIM));
    } else {
        if (c->hidden_size % c->num_heads)
            return key_err_(&k, "hidden_size", KD_E_CONFIG,
                            "is %lld, not divisible by num_attention_heads (%lld), and head_dim is not given",
                            (long long)c->hidden_size, (long long)c->num_heads);
        c->head_dim = c->hidden_size / c->num_heads;
    }
    if (c->head_dim % 2)
        return key_err_(&k, "head_dim", KD_E_CONFIG, "is %lld, must be even (rope rotates pairs)",
                        (long long)c->head_dim);
    return KD_OK;
}

int kd_model_config_parse(const char *json, size_t len, const char *what, kd_model_config *out)
{
    if (!what)
        what = "config.json";
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return kd_err(KD_E_FORMAT, "%s:%d:%d: invalid JSON: %s", what, jerr.line, jerr.column, jerr.text);
    int st;
    if (!json_is_object(root))
        st = kd_err(KD_E_FORMAT, "%s: must hold a JSON object, not %s", what, kd_json_type_name(root));
    else
        st = parse_root_(root, what, out);
    json_decref(root);
    if (st != KD_OK)
        memset(out, 0, sizeof *out);
    return st;
}

int kd_model_config_load(const char *path, kd_model_config *out)
{
    char file[4096];
    if (kd_is_dir(path))
        KD_TRY(kd_path_join(file, sizeof file, path, "config.json"));
    else if (snprintf(file, sizeof file, "%s", path) >= (int)sizeof file)
        return kd_err(KD_E_RANGE, "path too long: '%.200s...'", path);
    char *text;
    size_t len;
    KD_TRY(kd_read_file(file, KD_HF_MAX_CONFIG_BYTES, &text, &len));
    int st = kd_model_config_parse(text, len, file, out);
    free(text);
    return st;
}

int kd_model_layer_is_moe(const kd_model_config *c, int64_t l)
{
    return is_deepseek_(c) && c->n_routed_experts > 0 && l >= c->first_k_dense_replace &&
           l % c->moe_layer_freq == 0;
}

/* ---- the manifest -------------------------------------------------------- */

typedef struct {
    kd_tensor_spec *v;
    size_t n, cap;
    int nomem;
} specs_;

/* Append one spec; on allocation failure remember it and drop the rest. */
static void add_(specs_ *s, kd_tensor_role role, int quantizable, int ndim, int64_t d0, int64_t d1,
                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void add_(specs_ *s, kd_tensor_role role, int quantizable, int ndim, int64_t d0, int64_t d1,
                 const char *fmt, ...)
{
    if (s->nomem)
        return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        kd_tensor_spec *v = realloc(s->v, cap * sizeof *v);
        if (!v) {
            s->nomem = 1;
            return;
        }
        s->v = v;
        s->cap = cap;
    }
    kd_tensor_spec *t = &s->v[s->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    /* names are built from bounded integers (KD_HF_MAX_*): they always fit */
    if (len < 0 || (size_t)len >= sizeof t->name)
        abort();
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 0;
    t->role = role;
    t->quantizable = quantizable;
}

/* A linear layer: "<prefix>.weight" [out, in], plus "<prefix>.bias" [out]. */
static void linear_(specs_ *s, kd_tensor_role role, const char *prefix, int64_t out, int64_t in, int bias)
{
    add_(s, role, 1, 2, out, in, "%s.weight", prefix);
    if (bias)
        add_(s, role, 0, 1, out, 0, "%s.bias", prefix);
}

static void norm_(specs_ *s, const char *prefix, int64_t n)
{
    add_(s, KD_TR_DENSE, 0, 1, n, 0, "%s.weight", prefix);
}

/* gate/up/down of a SwiGLU MLP of width f under `prefix`. */
static void mlp_(specs_ *s, kd_tensor_role role, const char *prefix, int64_t C, int64_t f, int bias)
{
    char p[128];
    snprintf(p, sizeof p, "%s.gate_proj", prefix);
    linear_(s, role, p, f, C, bias);
    snprintf(p, sizeof p, "%s.up_proj", prefix);
    linear_(s, role, p, f, C, bias);
    snprintf(p, sizeof p, "%s.down_proj", prefix);
    linear_(s, role, p, C, f, bias);
}

/* Llama / Qwen2 decoder layer l. */
static void dense_layer_(specs_ *s, const kd_model_config *c, int64_t l)
{
    const int64_t C = c->hidden_size, H = c->num_heads, K = c->num_kv_heads, D = c->head_dim;
    const int qkv_bias = c->attention_bias;
    /* Llama's attention_bias also adds an o_proj bias; Qwen2's o_proj never has one */
    const int o_bias = c->arch == KD_ARCH_LLAMA && c->attention_bias;
    char p[128];
    snprintf(p, sizeof p, "model.layers.%lld.input_layernorm", (long long)l);
    norm_(s, p, C);
    snprintf(p, sizeof p, "model.layers.%lld.self_attn.q_proj", (long long)l);
    linear_(s, KD_TR_DENSE, p, H * D, C, qkv_bias); /* (H*D, C) */
    snprintf(p, sizeof p, "model.layers.%lld.self_attn.k_proj", (long long)l);
    linear_(s, KD_TR_DENSE, p, K * D, C, qkv_bias); /* (K*D, C) */
    snprintf(p, sizeof p, "model.layers.%lld.self_attn.v_proj", (long long)l);
    linear_(s, KD_TR_DENSE, p, K * D, C, qkv_bias); /* (K*D, C) */
    snprintf(p, sizeof p, "model.layers.%lld.self_attn.o_proj", (long long)l);
    linear_(s, KD_TR_DENSE, p, C, H * D, o_bias); /* (C, H*D) */
    snprintf(p, sizeof p, "model.layers.%lld.post_attention_layernorm", (long long)l);
    norm_(s, p, C);
    snprintf(p, sizeof p, "model.layers.%lld.mlp", (long long)l);
    mlp_(s, KD_TR_DENSE, p, C, c->intermediate_size, c->mlp_bias); /* (F, C) (F, C) (C, F) */
}

/* DeepSeek-V2/V3 decoder layer l: MLA, then a dense MLP or the MoE block.
 * attention_bias (false in every released checkpoint) follows transformers:
 * q_a_proj, kv_a_proj_with_mqa and o_proj get biases, the others never. */
static void deepseek_layer_(specs_ *s, const kd_model_config *c, int64_t l)
{
    const int64_t C = c->hidden_size, H = c->num_heads, Q = c->q_lora_rank, R = c->kv_lora_rank;
    const int64_t Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim;
    const int ab = c->attention_bias;
    const long long L = (long long)l;
    char p[128];
    snprintf(p, sizeof p, "model.layers.%lld.input_layernorm", L);
    norm_(s, p, C);
    if (Q > 0) {
        snprintf(p, sizeof p, "model.layers.%lld.self_attn.q_a_proj", L);
        linear_(s, KD_TR_DENSE, p, Q, C, ab); /* (Q, C) */
        snprintf(p, sizeof p, "model.layers.%lld.self_attn.q_a_layernorm", L);
        norm_(s, p, Q);
        snprintf(p, sizeof p, "model.layers.%lld.self_attn.q_b_proj", L);
        linear_(s, KD_TR_DENSE, p, H * (Dn + Dr), Q, 0); /* (H*(Dn+Dr), Q) */
    } else {
        snprintf(p, sizeof p, "model.layers.%lld.self_attn.q_proj", L);
        linear_(s, KD_TR_DENSE, p, H * (Dn + Dr), C, 0); /* (H*(Dn+Dr), C) */
    }
    snprintf(p, sizeof p, "model.layers.%lld.self_attn.kv_a_proj_with_mqa", L);
    linear_(s, KD_TR_DENSE, p, R + Dr, C, ab); /* (R+Dr, C) */
    snprintf(p, sizeof p, "model.layers.%lld.self_attn.kv_a_layernorm", L);
    norm_(s, p, R);
    snprintf(p, sizeof p, "model.layers.%lld.self_attn.kv_b_proj", L);
    linear_(s, KD_TR_DENSE, p, H * (Dn + Dv), R, 0); /* (H*(Dn+Dv), R) */
    snprintf(p, sizeof p, "model.layers.%lld.self_attn.o_proj", L);
    linear_(s, KD_TR_DENSE, p, C, H * Dv, ab); /* (C, H*Dv) */
    snprintf(p, sizeof p, "model.layers.%lld.post_attention_layernorm", L);
    norm_(s, p, C);

    if (!kd_model_layer_is_moe(c, l)) {
        snprintf(p, sizeof p, "model.layers.%lld.mlp", L);
        mlp_(s, KD_TR_DENSE, p, C, c->intermediate_size, 0); /* (F, C) (F, C) (C, F) */
        return;
    }
    const int64_t E = c->n_routed_experts, Fm = c->moe_intermediate_size;
    /* the router stays in bf16 in FP8 checkpoints: not quantizable */
    add_(s, KD_TR_DENSE, 0, 2, E, C, "model.layers.%lld.mlp.gate.weight", L); /* (E, C) */
    if (c->topk_method == KD_TOPK_NOAUX_TC)
        add_(s, KD_TR_DENSE, 0, 1, E, 0, "model.layers.%lld.mlp.gate.e_score_correction_bias", L); /* (E) */
    for (int64_t e = 0; e < E; e++) {
        snprintf(p, sizeof p, "model.layers.%lld.mlp.experts.%lld", L, (long long)e);
        mlp_(s, KD_TR_EXPERT, p, C, Fm, 0); /* (Fm, C) (Fm, C) (C, Fm) */
    }
    if (c->n_shared_experts > 0) {
        snprintf(p, sizeof p, "model.layers.%lld.mlp.shared_experts", L);
        mlp_(s, KD_TR_DENSE, p, C, Fm * c->n_shared_experts, 0);
    }
}

int kd_model_tensors(const kd_model_config *c, kd_tensor_spec **out, size_t *n)
{
    specs_ s = {0};
    const int64_t V = c->vocab_size, C = c->hidden_size;
    *out = NULL;
    *n = 0;
    add_(&s, KD_TR_EMBED, 0, 2, V, C, "model.embed_tokens.weight"); /* (V, C) */
    for (int64_t l = 0; l < c->num_layers; l++) {
        if (is_deepseek_(c))
            deepseek_layer_(&s, c, l);
        else
            dense_layer_(&s, c, l);
    }
    norm_(&s, "model.norm", C);
    if (!c->tie_word_embeddings)
        add_(&s, KD_TR_DENSE, 0, 2, V, C, "lm_head.weight"); /* (V, C); bf16 in FP8 checkpoints */
    if (s.nomem) {
        free(s.v);
        return kd_err(KD_E_NOMEM, "cannot allocate the tensor manifest of a %s model (%zu tensors so far)",
                      c->model_type, s.n);
    }
    *out = s.v;
    *n = s.n;
    return KD_OK;
}

static uint64_t numel_(const kd_tensor_spec *t)
{
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->shape[i];
    return n;
}

/* The layer index of "model.layers.N.…", or -1. */
static int64_t layer_of_(const char *name)
{
    static const char pre[] = "model.layers.";
    if (strncmp(name, pre, sizeof pre - 1))
        return -1;
    char *end;
    long long l = strtoll(name + sizeof pre - 1, &end, 10);
    return *end == '.' ? (int64_t)l : -1;
}

void kd_model_param_counts(const kd_model_config *c, const kd_tensor_spec *specs, size_t n, uint64_t *total,
                           uint64_t *active)
{
    uint64_t tot = 0, expert_total = 0, expert_active = 0;
    const uint64_t E = (uint64_t)c->n_routed_experts, k = (uint64_t)c->num_experts_per_tok;
    /* experts are grouped by layer in the manifest: sum one layer, then scale it by k / E */
    int64_t cur = -1;
    uint64_t layer_experts = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t m = numel_(&specs[i]);
        tot += m;
        if (specs[i].role != KD_TR_EXPERT)
            continue;
        int64_t l = layer_of_(specs[i].name);
        if (l != cur) {
            if (E)
                expert_active += layer_experts * k / E;
            layer_experts = 0;
            cur = l;
        }
        layer_experts += m;
        expert_total += m;
    }
    if (E)
        expert_active += layer_experts * k / E;
    if (total)
        *total = tot;
    if (active)
        *active = tot - expert_total + expert_active;
}
