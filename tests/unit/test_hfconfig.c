/* test_hfconfig.c - config.json parsing, the tensor manifests and parameter
 * counts, against the HF fixtures (written by transformers) and inline JSON.
 *
 * The expected parameter counts were computed independently from the
 * fixtures' model.safetensors (sum of numel over every tensor, with a Python
 * script reading the header), not from this code.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hfconfig.h"
#include "core/safetensors.h"
#include "test.h"

#define FIX(name) KD_TEST_FIXTURES "/" name

static int parse_str(const char *json, kd_model_config *c)
{
    return kd_model_config_parse(json, strlen(json), "inline.json", c);
}

/* The manifest of the fixture `dir` names exactly the tensors of its
 * model.safetensors, with the same shapes; and gives these counts. */
static void check_manifest(const char *dir, uint64_t want_total, uint64_t want_active)
{
    kd_model_config c;
    CHECK_OK(kd_model_config_load(dir, &c));
    kd_tensor_spec *specs = NULL;
    size_t n = 0;
    CHECK_OK(kd_model_tensors(&c, &specs, &n));
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(dir, &st));
    if (!st || !specs) {
        FAIL_("cannot open %s", dir);
        free(specs);
        kd_st_free(st);
        return;
    }
    /* every spec is in the file with its shape; names are unique; counts equal:
     * so the two name sets are the same */
    CHECK_EQ_INT(kd_st_count(st), n);
    for (size_t i = 0; i < n; i++) {
        const kd_st_tensor *t = kd_st_find(st, specs[i].name);
        if (!t) {
            FAIL_("%s: manifest tensor '%s' is not in the file", dir, specs[i].name);
            continue;
        }
        int same = t->ndim == specs[i].ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = t->shape[d] == specs[i].shape[d];
        if (!same)
            FAIL_("%s: '%s' has another shape in the file", dir, specs[i].name);
        for (size_t j = i + 1; j < n; j++)
            if (!strcmp(specs[i].name, specs[j].name))
                FAIL_("%s: '%s' is twice in the manifest", dir, specs[i].name);
    }
    uint64_t total = 0, active = 0, file_total = 0;
    for (size_t i = 0; i < kd_st_count(st); i++)
        file_total += kd_st_at(st, i)->numel;
    kd_model_param_counts(&c, specs, n, &total, &active);
    CHECK_EQ_INT(total, want_total);
    CHECK_EQ_INT(active, want_active);
    CHECK_EQ_INT(file_total, want_total);
    kd_st_free(st);
    free(specs);
}

TEST(qwen2_fixture)
{
    kd_model_config c;
    CHECK_OK(kd_model_config_load(FIX("tiny-qwen2"), &c));
    CHECK_EQ_INT(c.arch, KD_ARCH_QWEN2);
    CHECK_STR(c.model_type, "qwen2");
    CHECK_EQ_INT(c.vocab_size, 512);
    CHECK_EQ_INT(c.hidden_size, 128);
    CHECK_EQ_INT(c.intermediate_size, 352);
    CHECK_EQ_INT(c.num_layers, 2);
    CHECK_EQ_INT(c.num_heads, 4);
    CHECK_EQ_INT(c.num_kv_heads, 2);
    CHECK_EQ_INT(c.head_dim, 32); /* absent: C / H */
    CHECK_EQ_INT(c.max_position, 256);
    CHECK_NEAR(c.rms_norm_eps, 1e-6, 1e-12);
    CHECK_EQ_INT(c.tie_word_embeddings, 1);
    CHECK_EQ_INT(c.attention_bias, 1);
    CHECK_EQ_INT(c.mlp_bias, 0);
    CHECK_EQ_INT(c.bos_token_id, -1); /* null */
    CHECK_EQ_INT(c.n_eos, 0);         /* null */
    CHECK_EQ_INT(c.rope.type, KD_ROPE_DEFAULT);
    CHECK_NEAR(c.rope.theta, 1e6, 0);
    CHECK_NEAR(c.rope.factor, 1, 0);
    CHECK_EQ_INT(c.torch_dtype, KD_F32);
    CHECK_EQ_INT(c.n_routed_experts, 0);
    CHECK_EQ_INT(c.fp8, 0);
    CHECK_EQ_INT(kd_model_layer_is_moe(&c, 0), 0);
    check_manifest(FIX("tiny-qwen2"), 435328, 435328);
    /* passing the file itself works too */
    CHECK_OK(kd_model_config_load(FIX("tiny-qwen2/config.json"), &c));
    CHECK_EQ_INT(c.hidden_size, 128);
}

TEST(llama3_fixture)
{
    kd_model_config c;
    CHECK_OK(kd_model_config_load(FIX("tiny-llama3"), &c));
    CHECK_EQ_INT(c.arch, KD_ARCH_LLAMA);
    CHECK_EQ_INT(c.vocab_size, 512);
    CHECK_EQ_INT(c.hidden_size, 128);
    CHECK_EQ_INT(c.intermediate_size, 384);
    CHECK_EQ_INT(c.num_heads, 8);
    CHECK_EQ_INT(c.num_kv_heads, 2);
    CHECK_EQ_INT(c.head_dim, 16);
    CHECK_EQ_INT(c.tie_word_embeddings, 0);
    CHECK_EQ_INT(c.attention_bias, 0);
    CHECK_EQ_INT(c.mlp_bias, 0);
    CHECK_EQ_INT(c.bos_token_id, 1);
    CHECK_EQ_INT(c.n_eos, 1);
    CHECK_EQ_INT(c.eos_token_ids[0], 2);
    CHECK_NEAR(c.rms_norm_eps, 1e-5, 1e-12);
    CHECK_EQ_INT(c.rope.type, KD_ROPE_LLAMA3);
    CHECK_NEAR(c.rope.theta, 500000, 0);
    CHECK_NEAR(c.rope.factor, 8, 0);
    CHECK_NEAR(c.rope.low_freq_factor, 1, 0);
    CHECK_NEAR(c.rope.high_freq_factor, 4, 0);
    CHECK_EQ_INT(c.rope.original_max_position, 64);
    check_manifest(FIX("tiny-llama3"), 508544, 508544);
}

TEST(deepseek_v3_fixture)
{
    kd_model_config c;
    CHECK_OK(kd_model_config_load(FIX("tiny-deepseek-v3"), &c));
    CHECK_EQ_INT(c.arch, KD_ARCH_DEEPSEEK_V3);
    CHECK_EQ_INT(c.vocab_size, 512);
    CHECK_EQ_INT(c.hidden_size, 256);
    CHECK_EQ_INT(c.num_layers, 3);
    CHECK_EQ_INT(c.num_heads, 4);
    CHECK_EQ_INT(c.q_lora_rank, 96);
    CHECK_EQ_INT(c.kv_lora_rank, 64);
    CHECK_EQ_INT(c.qk_nope_head_dim, 32);
    CHECK_EQ_INT(c.qk_rope_head_dim, 16);
    CHECK_EQ_INT(c.v_head_dim, 32);
    CHECK_EQ_INT(c.rope_interleave, 1);
    CHECK_EQ_INT(c.n_routed_experts, 16);
    CHECK_EQ_INT(c.n_shared_experts, 1);
    CHECK_EQ_INT(c.num_experts_per_tok, 4);
    CHECK_EQ_INT(c.moe_intermediate_size, 128);
    CHECK_EQ_INT(c.first_k_dense_replace, 1);
    CHECK_EQ_INT(c.moe_layer_freq, 1);
    CHECK_EQ_INT(c.n_group, 4);
    CHECK_EQ_INT(c.topk_group, 2);
    CHECK_EQ_INT(c.norm_topk_prob, 1);
    CHECK_NEAR(c.routed_scaling_factor, 2.5, 0);
    CHECK_EQ_INT(c.scoring_func, KD_SCORE_SIGMOID); /* V3 default */
    CHECK_EQ_INT(c.topk_method, KD_TOPK_NOAUX_TC);  /* V3 default */
    CHECK_EQ_INT(c.num_nextn_predict_layers, 1);
    CHECK_EQ_INT(c.rope.type, KD_ROPE_YARN);
    CHECK_NEAR(c.rope.theta, 10000, 0);
    CHECK_NEAR(c.rope.factor, 4, 0);
    CHECK_NEAR(c.rope.mscale, 1, 0);
    CHECK_NEAR(c.rope.mscale_all_dim, 1, 0);
    CHECK_EQ_INT(c.rope.original_max_position, 128);
    CHECK_NEAR(c.rope.beta_fast, 32, 0);
    CHECK_NEAR(c.rope.beta_slow, 1, 0);
    CHECK_NEAR(c.rope.attention_factor, 0, 0);
    CHECK_EQ_INT(kd_model_layer_is_moe(&c, 0), 0);
    CHECK_EQ_INT(kd_model_layer_is_moe(&c, 1), 1);
    CHECK_EQ_INT(kd_model_layer_is_moe(&c, 2), 1);
    check_manifest(FIX("tiny-deepseek-v3"), 4346112, 1986816);

    /* roles and quantizable flags of a few tensors */
    kd_tensor_spec *s;
    size_t n;
    CHECK_OK(kd_model_tensors(&c, &s, &n));
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        const char *nm = s[i].name;
        if (!strcmp(nm, "model.embed_tokens.weight")) {
            CHECK(s[i].role == KD_TR_EMBED && !s[i].quantizable);
            seen++;
        } else if (!strcmp(nm, "lm_head.weight") || !strcmp(nm, "model.layers.1.mlp.gate.weight") ||
                   !strcmp(nm, "model.layers.1.input_layernorm.weight")) {
            CHECK(s[i].role == KD_TR_DENSE && !s[i].quantizable);
            seen++;
        } else if (!strcmp(nm, "model.layers.2.mlp.experts.15.down_proj.weight")) {
            CHECK(s[i].role == KD_TR_EXPERT && s[i].quantizable);
            CHECK_EQ_INT(s[i].shape[0], 256);
            CHECK_EQ_INT(s[i].shape[1], 128);
            seen++;
        } else if (!strcmp(nm, "model.layers.1.mlp.shared_experts.up_proj.weight") ||
                   !strcmp(nm, "model.layers.0.self_attn.kv_b_proj.weight")) {
            CHECK(s[i].role == KD_TR_DENSE && s[i].quantizable);
            seen++;
        }
    }
    CHECK_EQ_INT(seen, 7);
    free(s);
}

TEST(deepseek_v3_train_fixture)
{
    kd_model_config c;
    CHECK_OK(kd_model_config_load(FIX("tiny-deepseek-v3-train"), &c));
    CHECK_EQ_INT(c.rope.type, KD_ROPE_DEFAULT);
    CHECK_NEAR(c.rope.theta, 10000, 0);
    CHECK_NEAR(c.rope.factor, 1, 0);
    CHECK_EQ_INT(c.n_routed_experts, 8);
    CHECK_EQ_INT(c.num_experts_per_tok, 2);
    CHECK_EQ_INT(c.n_group, 2);
    CHECK_EQ_INT(c.topk_group, 1);
    check_manifest(FIX("tiny-deepseek-v3-train"), 445224, 297768);
}

/* ---- inline JSON ---------------------------------------------------------- */

#define LLAMA_BASE                                                                                  \
    "\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "                   \
    "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 100, "                \
    "\"intermediate_size\": 96, \"max_position_embeddings\": 8192"

static int rope_equal(const kd_rope *a, const kd_rope *b)
{
    return a->type == b->type && a->theta == b->theta && a->factor == b->factor &&
           a->original_max_position == b->original_max_position && a->low_freq_factor == b->low_freq_factor &&
           a->high_freq_factor == b->high_freq_factor && a->beta_fast == b->beta_fast &&
           a->beta_slow == b->beta_slow && a->mscale == b->mscale && a->mscale_all_dim == b->mscale_all_dim &&
           a->attention_factor == b->attention_factor;
}

TEST(rope_both_forms)
{
    kd_model_config a, b;
    /* llama3 */
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", "
                       "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                       "\"original_max_position_embeddings\": 8192}}",
                       &a));
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"rope_parameters\": {\"rope_theta\": 500000, \"rope_type\": \"llama3\", "
                       "\"factor\": 8, \"low_freq_factor\": 1, \"high_freq_factor\": 4, "
                       "\"original_max_position_embeddings\": 8192}}",
                       &b));
    CHECK(rope_equal(&a.rope, &b.rope));
    CHECK_EQ_INT(a.rope.type, KD_ROPE_LLAMA3);
    CHECK_NEAR(a.rope.theta, 500000, 0);

    /* yarn, legacy "type" key, DeepSeek-V3 style */
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"rope_theta\": 10000, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, "
                       "\"original_max_position_embeddings\": 4096, \"beta_fast\": 32, \"beta_slow\": 1, "
                       "\"mscale\": 1.0, \"mscale_all_dim\": 1.0}}",
                       &a));
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"rope_parameters\": {\"rope_theta\": 10000, \"rope_type\": \"yarn\", "
                       "\"factor\": 40, \"original_max_position_embeddings\": 4096, \"beta_fast\": 32, "
                       "\"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0}}",
                       &b));
    CHECK(rope_equal(&a.rope, &b.rope));
    CHECK_EQ_INT(b.rope.type, KD_ROPE_YARN);
    CHECK_NEAR(b.rope.factor, 40, 0);

    /* linear; and no rope keys at all: default, theta 10000 */
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"rope_theta\": 1e4, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}}", &a));
    CHECK_EQ_INT(a.rope.type, KD_ROPE_LINEAR);
    CHECK_NEAR(a.rope.factor, 2, 0);
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"rope_scaling\": null}", &a));
    CHECK_EQ_INT(a.rope.type, KD_ROPE_DEFAULT);
    CHECK_NEAR(a.rope.theta, 10000, 0);

    /* rope_parameters wins over rope_scaling */
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"rope_theta\": 5, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}, "
                       "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 7}}",
                       &a));
    CHECK_EQ_INT(a.rope.type, KD_ROPE_DEFAULT);
    CHECK_NEAR(a.rope.theta, 7, 0);

    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"rope_scaling\": {\"type\": \"longrope\", \"factor\": 2}}", &a),
              KD_E_UNSUPPORTED, "longrope");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": \"yarn\"}}", &a), KD_E_CONFIG,
              "rope_parameters.factor");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 8, "
                        "\"low_freq_factor\": 1, \"high_freq_factor\": 4}}",
                        &a),
              KD_E_CONFIG, "original_max_position_embeddings");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"rope_theta\": -1}", &a), KD_E_CONFIG, "rope_theta");
}

TEST(dense_keys)
{
    kd_model_config c;
    /* head_dim null: derived; eos list; bos int; legacy torch_dtype; biases */
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"head_dim\": null, \"eos_token_id\": [128001, 128008, 128009], "
                       "\"bos_token_id\": 128000, \"torch_dtype\": \"bfloat16\", \"attention_bias\": true, "
                       "\"mlp_bias\": true, \"tie_word_embeddings\": true}",
                       &c));
    CHECK_EQ_INT(c.head_dim, 16);
    CHECK_EQ_INT(c.n_eos, 3);
    CHECK_EQ_INT(c.eos_token_ids[0], 128001);
    CHECK_EQ_INT(c.eos_token_ids[2], 128009);
    CHECK_EQ_INT(c.bos_token_id, 128000);
    CHECK_EQ_INT(c.torch_dtype, KD_BF16);
    CHECK_EQ_INT(c.tie_word_embeddings, 1);
    /* Llama biases: q/k/v/o and the MLP's; no lm_head when tied */
    kd_tensor_spec *s;
    size_t n;
    CHECK_OK(kd_model_tensors(&c, &s, &n));
    CHECK_EQ_INT(n, 1 + 2 * (2 + 4 * 2 + 3 * 2) + 1);
    int o_bias = 0, down_bias = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(strcmp(s[i].name, "lm_head.weight") != 0);
        if (!strcmp(s[i].name, "model.layers.1.self_attn.o_proj.bias"))
            o_bias = (int)s[i].shape[0];
        if (!strcmp(s[i].name, "model.layers.0.mlp.down_proj.bias"))
            down_bias = (int)s[i].shape[0];
    }
    CHECK_EQ_INT(o_bias, 64);
    CHECK_EQ_INT(down_bias, 64);
    free(s);

    /* "dtype" beats "torch_dtype"; explicit head_dim not C/H; defaults */
    CHECK_OK(parse_str("{" LLAMA_BASE ", \"dtype\": \"float16\", \"torch_dtype\": \"bfloat16\", \"head_dim\": 32, "
                       "\"eos_token_id\": 7}",
                       &c));
    CHECK_EQ_INT(c.torch_dtype, KD_F16);
    CHECK_EQ_INT(c.head_dim, 32);
    CHECK_EQ_INT(c.n_eos, 1);
    CHECK_EQ_INT(c.eos_token_ids[0], 7);
    CHECK_EQ_INT(c.bos_token_id, -1);
    CHECK_EQ_INT(c.tie_word_embeddings, 0);
    CHECK_EQ_INT(c.attention_bias, 0);

    /* qwen2: q/k/v biases even when the key says false; no o_proj bias */
    CHECK_OK(parse_str("{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"num_hidden_layers\": 1, "
                       "\"num_attention_heads\": 4, \"vocab_size\": 10, \"intermediate_size\": 32, "
                       "\"attention_bias\": false}",
                       &c));
    CHECK_EQ_INT(c.attention_bias, 1);
    CHECK_EQ_INT(c.num_kv_heads, 4);
    CHECK_EQ_INT(c.tie_word_embeddings, 0);
    CHECK_EQ_INT(c.max_position, 0);
    CHECK_OK(kd_model_tensors(&c, &s, &n));
    CHECK_EQ_INT(n, 1 + (2 + 4 + 3 + 3) + 1 + 1);
    free(s);
}

#define V2_LITE                                                                                        \
    "\"model_type\": \"deepseek_v2\", \"hidden_size\": 64, \"num_hidden_layers\": 3, "               \
    "\"num_attention_heads\": 4, \"vocab_size\": 100, \"intermediate_size\": 96, "                   \
    "\"q_lora_rank\": null, \"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 8, " \
    "\"v_head_dim\": 16, \"n_routed_experts\": 8, \"num_experts_per_tok\": 2, "                       \
    "\"moe_intermediate_size\": 24, \"n_shared_experts\": 2, \"first_k_dense_replace\": 1"

TEST(deepseek_v2_defaults)
{
    kd_model_config c;
    CHECK_OK(parse_str("{" V2_LITE "}", &c));
    CHECK_EQ_INT(c.arch, KD_ARCH_DEEPSEEK_V2);
    CHECK_EQ_INT(c.q_lora_rank, 0);
    CHECK_EQ_INT(c.scoring_func, KD_SCORE_SOFTMAX);
    CHECK_EQ_INT(c.topk_method, KD_TOPK_GREEDY);
    CHECK_EQ_INT(c.norm_topk_prob, 0);
    CHECK_EQ_INT(c.moe_layer_freq, 1);
    CHECK_EQ_INT(c.n_group, 1);
    CHECK_EQ_INT(c.topk_group, 1);
    CHECK_NEAR(c.routed_scaling_factor, 1.0, 0);
    CHECK_EQ_INT(c.num_nextn_predict_layers, 0);
    CHECK_EQ_INT(c.rope_interleave, 1);
    CHECK_EQ_INT(c.fp8, 0);

    kd_tensor_spec *s;
    size_t n;
    CHECK_OK(kd_model_tensors(&c, &s, &n));
    /* embed + layer 0 (2 norms, q_proj, kv_a, kv_a_norm, kv_b, o, 3 mlp) +
     * 2 MoE layers (2 norms, 5 attn, gate (no bias: greedy), 8*3 experts, 3 shared) + norm + lm_head */
    CHECK_EQ_INT(n, 1 + 10 + 2 * (2 + 5 + 1 + 24 + 3) + 2);
    int q_proj = 0, bias = 0, shared = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(s[i].name, "model.layers.1.self_attn.q_proj.weight"))
            q_proj = s[i].shape[0] == 4 * (16 + 8) && s[i].shape[1] == 64;
        if (strstr(s[i].name, "e_score_correction_bias") || strstr(s[i].name, "q_a_proj"))
            bias++;
        if (!strcmp(s[i].name, "model.layers.2.mlp.shared_experts.gate_proj.weight"))
            shared = s[i].shape[0] == 48 && s[i].shape[1] == 64;
    }
    CHECK(q_proj);
    CHECK_EQ_INT(bias, 0);
    CHECK(shared);
    uint64_t total, active;
    kd_model_param_counts(&c, s, n, &total, &active);
    const uint64_t expert = 3 * 24 * 64; /* one expert's three matrices */
    CHECK_EQ_INT(total - active, 2 * (8 - 2) * expert);
    free(s);

    /* explicit V2 choices, moe_layer_freq, rope_interleave false */
    CHECK_OK(parse_str("{" V2_LITE ", \"scoring_func\": \"sigmoid\", \"topk_method\": \"group_limited_greedy\", "
                       "\"n_group\": 4, \"topk_group\": 2, \"norm_topk_prob\": true, \"moe_layer_freq\": 2, "
                       "\"rope_interleave\": false}",
                       &c));
    CHECK_EQ_INT(c.scoring_func, KD_SCORE_SIGMOID);
    CHECK_EQ_INT(c.topk_method, KD_TOPK_GROUP_LIMITED);
    CHECK_EQ_INT(c.rope_interleave, 0);
    CHECK_EQ_INT(kd_model_layer_is_moe(&c, 0), 0);
    CHECK_EQ_INT(kd_model_layer_is_moe(&c, 1), 0);
    CHECK_EQ_INT(kd_model_layer_is_moe(&c, 2), 1);

    /* a dense DeepSeek: no MoE keys needed */
    CHECK_OK(parse_str("{\"model_type\": \"deepseek_v3\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                       "\"num_attention_heads\": 4, \"vocab_size\": 100, \"intermediate_size\": 96, "
                       "\"q_lora_rank\": 16, \"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, "
                       "\"qk_rope_head_dim\": 8, \"v_head_dim\": 16, \"n_routed_experts\": null}",
                       &c));
    CHECK_EQ_INT(c.n_routed_experts, 0);
    CHECK_EQ_INT(kd_model_layer_is_moe(&c, 1), 0);
    CHECK_EQ_INT(c.head_dim, 8); /* transformers: qk_rope_head_dim */
}

TEST(fp8_quantization)
{
    kd_model_config c;
    CHECK_OK(parse_str("{" V2_LITE ", \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
                       "\"quant_method\": \"fp8\", \"weight_block_size\": [128, 64]}}",
                       &c));
    CHECK_EQ_INT(c.fp8, 1);
    CHECK_EQ_INT(c.fp8_block[0], 128);
    CHECK_EQ_INT(c.fp8_block[1], 64);
    CHECK_OK(parse_str("{" V2_LITE ", \"quantization_config\": {\"quant_method\": \"fp8\"}}", &c));
    CHECK_EQ_INT(c.fp8, 1);
    CHECK_EQ_INT(c.fp8_block[0], 128);
    CHECK_EQ_INT(c.fp8_block[1], 128);
    CHECK_ERR(parse_str("{" V2_LITE ", \"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}}", &c),
              KD_E_UNSUPPORTED, "'gptq'");
    CHECK_ERR(parse_str("{" V2_LITE ", \"quantization_config\": {\"quant_method\": \"fp8\", "
                        "\"weight_block_size\": [128]}}",
                        &c),
              KD_E_CONFIG, "quantization_config.weight_block_size");
    CHECK_ERR(parse_str("{" V2_LITE ", \"quantization_config\": {\"quant_method\": \"fp8\", "
                        "\"weight_block_size\": [0, 128]}}",
                        &c),
              KD_E_CONFIG, "weight_block_size");
}

TEST(errors)
{
    kd_model_config c;
    CHECK_ERR(parse_str("{\"model_type\": \"mistral\", \"hidden_size\": 64}", &c), KD_E_UNSUPPORTED,
              "model_type 'mistral' is not supported (supported: qwen2, llama, deepseek_v3, deepseek_v2)");
    CHECK_ERR(parse_str("{\"hidden_size\": 64}", &c), KD_E_CONFIG, "'model_type'");
    /* missing keys, naming the key and the file */
    CHECK_ERR(parse_str("{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                        "\"vocab_size\": 10, \"intermediate_size\": 8}",
                        &c),
              KD_E_CONFIG, "inline.json: key 'hidden_size' is missing");
    CHECK_ERR(parse_str("{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 10}",
                        &c),
              KD_E_CONFIG, "'intermediate_size' is missing");
    CHECK_ERR(parse_str("{\"model_type\": \"deepseek_v3\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 10, \"intermediate_size\": 8, "
                        "\"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 8, \"v_head_dim\": 16}",
                        &c),
              KD_E_CONFIG, "'kv_lora_rank' is missing");
    CHECK_ERR(parse_str("{\"model_type\": \"deepseek_v3\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 10, \"intermediate_size\": 8, "
                        "\"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 8, "
                        "\"v_head_dim\": 16, \"n_routed_experts\": 8, \"num_experts_per_tok\": 2}",
                        &c),
              KD_E_CONFIG, "'moe_intermediate_size' is missing");
    /* wrong types */
    CHECK_ERR(parse_str("{\"model_type\": \"llama\", \"hidden_size\": \"128\", \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 10, \"intermediate_size\": 8}",
                        &c),
              KD_E_CONFIG, "key 'hidden_size' must be an integer, got a string");
    CHECK_ERR(parse_str("{\"model_type\": \"llama\", \"hidden_size\": 64.5, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 10, \"intermediate_size\": 8}",
                        &c),
              KD_E_CONFIG, "'hidden_size' must be an integer");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"tie_word_embeddings\": 1}", &c), KD_E_CONFIG, "'tie_word_embeddings'");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"eos_token_id\": \"</s>\"}", &c), KD_E_CONFIG, "'eos_token_id'");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"eos_token_id\": [1, \"x\"]}", &c), KD_E_CONFIG, "'eos_token_id'");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"eos_token_id\": [1,2,3,4,5,6,7,8,9]}", &c), KD_E_CONFIG, "at most 8");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"rope_scaling\": [1]}", &c), KD_E_CONFIG, "'rope_scaling' must be an object");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"model_type\": 3}", &c), KD_E_FORMAT, "duplicate"); /* JSON_REJECT_DUPLICATES */
    CHECK_ERR(parse_str("{\"model_type\": 3}", &c), KD_E_CONFIG, "'model_type' must be a string");
    CHECK_ERR(parse_str("{" LLAMA_BASE ", \"dtype\": \"float64\"}", &c), KD_E_CONFIG, "'dtype'");
    CHECK_ERR(parse_str("{" V2_LITE ", \"scoring_func\": \"relu\"}", &c), KD_E_UNSUPPORTED, "scoring_func 'relu'");
    CHECK_ERR(parse_str("{" V2_LITE ", \"topk_method\": \"random\"}", &c), KD_E_UNSUPPORTED, "topk_method 'random'");
    /* nonsensical values */
    CHECK_ERR(parse_str("{\"model_type\": \"llama\", \"hidden_size\": 0, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 10, \"intermediate_size\": 8}",
                        &c),
              KD_E_CONFIG, "'hidden_size' is 0");
    CHECK_ERR(parse_str("{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": -2, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 10, \"intermediate_size\": 8}",
                        &c),
              KD_E_CONFIG, "'num_hidden_layers' is -2");
    CHECK_ERR(parse_str("{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 6, \"num_key_value_heads\": 4, \"vocab_size\": 10, "
                        "\"intermediate_size\": 8, \"head_dim\": 16}",
                        &c),
              KD_E_CONFIG, "not divisible by num_key_value_heads");
    CHECK_ERR(parse_str("{\"model_type\": \"llama\", \"hidden_size\": 100, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 8, \"vocab_size\": 10, \"intermediate_size\": 8}",
                        &c),
              KD_E_CONFIG, "'hidden_size' is 100, not divisible by num_attention_heads (8)");
    CHECK_ERR(parse_str("{\"model_type\": \"deepseek_v2\", \"hidden_size\": 64, \"num_hidden_layers\": 3, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 100, \"intermediate_size\": 96, "
                        "\"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 8, "
                        "\"v_head_dim\": 16, \"n_routed_experts\": 8, \"num_experts_per_tok\": 9, "
                        "\"moe_intermediate_size\": 24}",
                        &c),
              KD_E_CONFIG, "'num_experts_per_tok' is 9, more than n_routed_experts (8)");
    CHECK_ERR(parse_str("{" V2_LITE ", \"n_group\": 2, \"topk_group\": 3}", &c), KD_E_CONFIG,
              "'topk_group' is 3, more than n_group (2)");
    CHECK_ERR(parse_str("{" V2_LITE ", \"n_group\": 3, \"topk_group\": 1}", &c), KD_E_CONFIG,
              "'n_routed_experts' is 8, not divisible by n_group (3)");
    /* JSON syntax: line and column */
    CHECK_ERR(parse_str("{\n  \"model_type\": \"llama\",\n  \"hidden_size\": 64,,\n}", &c), KD_E_FORMAT,
              "inline.json:3:");
    CHECK_ERR(parse_str("", &c), KD_E_FORMAT, "inline.json:");
    CHECK_ERR(parse_str("[1, 2]", &c), KD_E_FORMAT, "must hold a JSON object");
    /* the file: missing, and the path in the message */
    CHECK_ERR(kd_model_config_load(KD_TEST_TMP "/no-such-model", &c), KD_E_NOTFOUND, "no-such-model");
}

/* Group-limited routing needs k <= topk_group * E / n_group; rope dims even. */
TEST(more_ranges)
{
    kd_model_config c;
    CHECK_ERR(parse_str("{\"model_type\": \"deepseek_v2\", \"hidden_size\": 64, \"num_hidden_layers\": 3, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 100, \"intermediate_size\": 96, "
                        "\"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 8, "
                        "\"v_head_dim\": 16, \"n_routed_experts\": 8, \"num_experts_per_tok\": 3, "
                        "\"moe_intermediate_size\": 24, \"topk_method\": \"noaux_tc\", \"n_group\": 4, "
                        "\"topk_group\": 1}",
                        &c),
              KD_E_CONFIG, "'num_experts_per_tok' is 3, more than the 2 experts");
    CHECK_ERR(parse_str("{\"model_type\": \"deepseek_v2\", \"hidden_size\": 64, \"num_hidden_layers\": 3, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 100, \"intermediate_size\": 96, "
                        "\"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 7, "
                        "\"v_head_dim\": 16}",
                        &c),
              KD_E_CONFIG, "'qk_rope_head_dim' is 7, must be even");
    CHECK_ERR(parse_str("{\"model_type\": \"deepseek_v2\", \"hidden_size\": 64, \"num_hidden_layers\": 3, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 100, \"intermediate_size\": 96, "
                        "\"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 8, "
                        "\"v_head_dim\": \"16\"}",
                        &c),
              KD_E_CONFIG, "'v_head_dim' must be an integer");
}

int main(void)
{
    RUN(qwen2_fixture);
    RUN(llama3_fixture);
    RUN(deepseek_v3_fixture);
    RUN(deepseek_v3_train_fixture);
    RUN(rope_both_forms);
    RUN(dense_keys);
    RUN(deepseek_v2_defaults);
    RUN(fp8_quantization);
    RUN(errors);
    RUN(more_ranges);
    return test_summary();
}
