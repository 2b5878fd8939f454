/* test_inspect.c - kd_inspect_model on the HF fixtures, then on checkpoints
 * written here (KD_TEST_TMP) with one planted fault each: a missing tensor, a
 * mis-shaped one, MTP layers and stray tensors (fine, reported), FP8 weights
 * with good and bad block scales.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/hfconfig.h"
#include "core/inspect.h"
#include "core/safetensors.h"
#include "test.h"

#define FIX(name) KD_TEST_FIXTURES "/" name
#define BASE FIX("tiny-deepseek-v3-train") /* the smallest MoE fixture: the base of every planted fault */

/* ---- the fixtures ---------------------------------------------------------- */

static void check_fixture(const char *dir, uint64_t total, uint64_t active, size_t tensors, const char *text_has)
{
    kd_inspect_result r;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK_OK(kd_inspect_model(dir, f, &r));
    fclose(f);
    CHECK_EQ_INT(r.total_params, total);
    CHECK_EQ_INT(r.active_params, active);
    CHECK_EQ_INT(r.n_tensors, tensors);
    CHECK_EQ_INT(r.n_manifest, tensors);
    CHECK_EQ_INT(r.n_mtp + r.n_ignored + r.n_unexpected + r.n_fp8, 0);
    CHECK_EQ_INT(r.n_shards, 1);
    CHECK_EQ_INT(r.bytes_stored, total * 4); /* the fixtures are F32 */
    CHECK_EQ_INT(r.dtype_count[KD_F32], tensors);
    CHECK_EQ_INT(r.bytes_bf16, total * 2);
    CHECK_HAS(text, text_has);
    free(text);

    /* the JSON report parses and carries the same numbers */
    text = NULL;
    f = open_memstream(&text, &len);
    CHECK_OK(kd_inspect_write_json(&r, f));
    fclose(f);
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    CHECK(j != NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "params"), "total")), total);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "params"), "active")), active);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "tensors"), "count")), tensors);
    json_decref(j);
    free(text);
}

TEST(fixtures)
{
    check_fixture(FIX("tiny-qwen2"), 435328, 435328, 26, "435,328 (435.33K) total");
    check_fixture(FIX("tiny-llama3"), 508544, 508544, 21, "508,544 (508.54K) total");
    check_fixture(FIX("tiny-deepseek-v3"), 4346112, 1986816, 139, "4,346,112 (4.35M) total, 1,986,816 (1.99M) active");
    check_fixture(FIX("tiny-deepseek-v3-train"), 445224, 297768, 53, "445,224 (445.22K) total");
}

TEST(kv_cache)
{
    kd_inspect_result r;
    CHECK_OK(kd_inspect_model(FIX("tiny-llama3"), NULL, &r));
    CHECK_EQ_INT(r.kv_mla, 0);
    CHECK_EQ_INT(r.kv_bytes_per_token, 2 * 2 * 2 * 16 * 2); /* 2 (K,V) * L 2 * K 2 * D 16 * 2 B */
    CHECK_EQ_INT(r.kv_bytes_context, 256 * r.kv_bytes_per_token);
    CHECK_OK(kd_inspect_model(FIX("tiny-deepseek-v3"), NULL, &r));
    CHECK_EQ_INT(r.kv_mla, 1);
    CHECK_EQ_INT(r.kv_bytes_per_token, 3 * (64 + 16) * 2); /* L * (kv_lora_rank + qk_rope_head_dim) * 2 B */
    CHECK_EQ_INT(r.kv_bytes_context, 512 * r.kv_bytes_per_token);
}

/* ---- planted faults ----------------------------------------------------------- */

/* A case folder under KD_TEST_TMP holding BASE's config.json, with a
 * quantization_config added when block0 > 0. Returns the folder in buf. */
static const char *make_case(char *buf, size_t cap, const char *name, int64_t block0, int64_t block1)
{
    snprintf(buf, cap, "%s/inspect_%s", KD_TEST_TMP, name);
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        FAIL_("mkdir %s: %s", buf, strerror(errno));
    json_error_t err;
    json_t *cfg = json_load_file(BASE "/config.json", 0, &err);
    if (!cfg) {
        FAIL_("cannot read %s: %s", BASE "/config.json", err.text);
        return buf;
    }
    if (block0 > 0)
        json_object_set_new(cfg, "quantization_config",
                            json_pack("{s:s, s:s, s:s, s:[I,I]}", "activation_scheme", "dynamic", "fmt", "e4m3",
                                      "quant_method", "fp8", "weight_block_size", (json_int_t)block0,
                                      (json_int_t)block1));
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", buf);
    if (json_dump_file(cfg, path, JSON_INDENT(2)) != 0)
        FAIL_("cannot write %s", path);
    json_decref(cfg);
    return buf;
}

typedef struct {
    const char *skip;          /* leave this manifest tensor out */
    const char *reshape;       /* give this one reshape_to instead */
    int64_t reshape_to[2];
    int fp8;                   /* quantizable weights as F8_E4M3 + F32 scales of fp8_block */
    int64_t fp8_block[2];
    const char *bad_scale;     /* a weight whose scale gets bad_scale_shape */
    int64_t bad_scale_shape[2];
    const char *no_scale;      /* a weight whose scale is left out */
    const char *extra[12];     /* extra 1-D tensors of 8 elements */
} plan;

static void *zeros(void)
{
    static void *z;
    if (!z)
        z = calloc(1, 1 << 20); /* larger than any tensor of BASE (embed: 256 x 128 x 4 B) */
    return z;
}

/* Write dir/model.safetensors: the manifest of dir/config.json, changed by `p`. */
static void write_weights(const char *dir, const plan *p)
{
    kd_model_config c;
    kd_tensor_spec *specs = NULL;
    size_t n = 0;
    CHECK_OK(kd_model_config_load(dir, &c));
    CHECK_OK(kd_model_tensors(&c, &specs, &n));
    kd_st_writer *w = NULL;
    CHECK_OK(kd_st_writer_new(&w));
    if (!w || !specs)
        return;
    char (*scale_names)[160] = calloc(n, sizeof *scale_names);
    for (size_t i = 0; i < n; i++) {
        const kd_tensor_spec *s = &specs[i];
        if (p->skip && !strcmp(s->name, p->skip))
            continue;
        const int64_t *shape = s->shape;
        if (p->reshape && !strcmp(s->name, p->reshape))
            shape = p->reshape_to;
        if (p->fp8 && s->quantizable) {
            CHECK_OK(kd_st_writer_add(w, s->name, KD_F8_E4M3, s->ndim, shape, zeros()));
            if (p->no_scale && !strcmp(s->name, p->no_scale))
                continue;
            int64_t sc[2] = {(s->shape[0] + p->fp8_block[0] - 1) / p->fp8_block[0],
                             (s->shape[1] + p->fp8_block[1] - 1) / p->fp8_block[1]};
            if (p->bad_scale && !strcmp(s->name, p->bad_scale))
                memcpy(sc, p->bad_scale_shape, sizeof sc);
            snprintf(scale_names[i], sizeof scale_names[i], "%s_scale_inv", s->name);
            CHECK_OK(kd_st_writer_add(w, scale_names[i], KD_F32, 2, sc, zeros()));
        } else {
            CHECK_OK(kd_st_writer_add(w, s->name, KD_F32, s->ndim, shape, zeros()));
        }
    }
    const int64_t eight[1] = {8};
    for (int i = 0; i < 12 && p->extra[i]; i++)
        CHECK_OK(kd_st_writer_add(w, p->extra[i], KD_F32, 1, eight, zeros()));
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_OK(kd_st_writer_write(w, path));
    kd_st_writer_free(w);
    free(scale_names);
    free(specs);
}

TEST(complete_copy)
{
    char dir[1024];
    make_case(dir, sizeof dir, "complete", 0, 0);
    write_weights(dir, &(plan){0});
    kd_inspect_result r;
    CHECK_OK(kd_inspect_model(dir, NULL, &r));
    CHECK_EQ_INT(r.total_params, 445224);
    CHECK_EQ_INT(r.active_params, 297768);
    CHECK_EQ_INT(r.n_tensors, 53);
}

TEST(missing_tensor)
{
    char dir[1024];
    make_case(dir, sizeof dir, "missing", 0, 0);
    write_weights(dir, &(plan){.skip = "model.layers.1.mlp.experts.3.up_proj.weight"});
    CHECK_ERR(kd_inspect_model(dir, NULL, NULL), KD_E_NOTFOUND,
              "tensor 'model.layers.1.mlp.experts.3.up_proj.weight' (shape [64, 128]) is missing");
    make_case(dir, sizeof dir, "missing_lm_head", 0, 0);
    write_weights(dir, &(plan){.skip = "lm_head.weight"});
    CHECK_ERR(kd_inspect_model(dir, NULL, NULL), KD_E_NOTFOUND, "'lm_head.weight'");
}

TEST(misshaped_tensor)
{
    char dir[1024];
    make_case(dir, sizeof dir, "misshaped", 0, 0);
    write_weights(dir, &(plan){.reshape = "model.layers.0.self_attn.kv_b_proj.weight", .reshape_to = {128, 33}});
    CHECK_ERR(kd_inspect_model(dir, NULL, NULL), KD_E_SHAPE,
              "tensor 'model.layers.0.self_attn.kv_b_proj.weight' has shape [128, 33], config says [128, 32]");
}

TEST(mtp_and_extras)
{
    char dir[1024];
    make_case(dir, sizeof dir, "mtp", 0, 0);
    /* L = 2 and num_nextn_predict_layers = 1: layer 2 is the MTP layer */
    write_weights(dir, &(plan){.extra = {"model.layers.2.enorm.weight", "model.layers.2.hnorm.weight",
                                         "model.layers.2.input_layernorm.weight",
                                         "model.layers.2.shared_head.norm.weight",
                                         "model.layers.2.self_attn.kv_a_layernorm.weight",
                                         "model.layers.0.self_attn.rotary_emb.inv_freq"}});
    kd_inspect_result r;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK_OK(kd_inspect_model(dir, f, &r));
    fclose(f);
    CHECK_EQ_INT(r.n_mtp, 5);
    CHECK_EQ_INT(r.bytes_mtp, 5 * 8 * 4);
    CHECK_EQ_INT(r.n_ignored, 1);
    CHECK_EQ_INT(r.n_unexpected, 0);
    CHECK_EQ_INT(r.n_tensors, 53 + 6);
    CHECK_EQ_INT(r.total_params, 445224); /* MTP layers are not counted */
    CHECK_HAS(text, "MTP layer(s) present, 5 tensors, not used");
    free(text);

    /* a layer beyond the MTP ones and stray names: a warning, not an error */
    make_case(dir, sizeof dir, "extras", 0, 0);
    write_weights(dir, &(plan){.extra = {"model.layers.3.input_layernorm.weight", "stray.a", "stray.b", "stray.c",
                                         "stray.d", "stray.e", "model.layers.2.enorm.weight"}});
    CHECK_OK(kd_inspect_model(dir, NULL, &r));
    CHECK_EQ_INT(r.n_unexpected, 6);
    CHECK_EQ_INT(r.n_mtp, 1);
    CHECK_STR(r.unexpected[0], "model.layers.3.input_layernorm.weight"); /* name order */
    CHECK_STR(r.unexpected[4], "stray.d");
}

TEST(fp8)
{
    char dir[1024];
    kd_inspect_result r;
    /* 32 x 32 blocks: q_b_proj [96, 48] has scales [3, 2], kv_b_proj [128, 32] [4, 1] */
    make_case(dir, sizeof dir, "fp8", 32, 32);
    write_weights(dir, &(plan){.fp8 = 1, .fp8_block = {32, 32}});
    CHECK_OK(kd_inspect_model(dir, NULL, &r));
    CHECK_EQ_INT(r.cfg.fp8, 1);
    /* per layer: q_a, q_b, kv_a, kv_b, o; layer 0 dense mlp 3; layer 1 8*3 experts + 3 shared */
    CHECK_EQ_INT(r.n_fp8, 5 * 2 + 3 + 24 + 3);
    CHECK_EQ_INT(r.n_tensors, 53 + r.n_fp8);
    CHECK_EQ_INT(r.n_unexpected, 0);
    CHECK_EQ_INT(r.total_params, 445224);
    CHECK_EQ_INT(r.active_params, 297768);
    CHECK_EQ_INT(r.dtype_count[KD_F8_E4M3], r.n_fp8);

    /* the default block (128 x 128): every scale of BASE is [1, 1] */
    make_case(dir, sizeof dir, "fp8_default", 128, 128);
    write_weights(dir, &(plan){.fp8 = 1, .fp8_block = {128, 128}});
    CHECK_OK(kd_inspect_model(dir, NULL, &r));

    make_case(dir, sizeof dir, "fp8_bad_scale", 32, 32);
    write_weights(dir, &(plan){.fp8 = 1, .fp8_block = {32, 32}, .bad_scale = "model.layers.1.self_attn.q_b_proj.weight",
                               .bad_scale_shape = {3, 1}});
    CHECK_ERR(kd_inspect_model(dir, NULL, NULL), KD_E_SHAPE,
              "tensor 'model.layers.1.self_attn.q_b_proj.weight_scale_inv' has shape [3, 1], config says [3, 2]");

    make_case(dir, sizeof dir, "fp8_no_scale", 32, 32);
    write_weights(dir, &(plan){.fp8 = 1, .fp8_block = {32, 32}, .no_scale = "model.layers.1.mlp.experts.7.down_proj.weight"});
    CHECK_ERR(kd_inspect_model(dir, NULL, NULL), KD_E_NOTFOUND,
              "'model.layers.1.mlp.experts.7.down_proj.weight_scale_inv'");

    /* F8_E4M3 weights without an fp8 quantization_config */
    make_case(dir, sizeof dir, "fp8_no_config", 0, 0);
    write_weights(dir, &(plan){.fp8 = 1, .fp8_block = {128, 128}});
    CHECK_ERR(kd_inspect_model(dir, NULL, NULL), KD_E_DTYPE, "no fp8 quantization_config");
}

TEST(no_folder)
{
    CHECK_ERR(kd_inspect_model(KD_TEST_TMP "/inspect_no_such_folder", NULL, NULL), KD_E_NOTFOUND,
              "model folder '" KD_TEST_TMP "/inspect_no_such_folder' does not exist");
    /* a config.json but no weights */
    char dir[1024];
    make_case(dir, sizeof dir, "no_weights", 0, 0);
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    remove(path);
    CHECK_ERR(kd_inspect_model(dir, NULL, NULL), KD_E_NOTFOUND, "model.safetensors");
}

int main(void)
{
    RUN(fixtures);
    RUN(kv_cache);
    RUN(complete_copy);
    RUN(missing_tensor);
    RUN(misshaped_tensor);
    RUN(mtp_and_extras);
    RUN(fp8);
    RUN(no_folder);
    free(zeros());
    return test_summary();
}
