/* test_teacher.c - the DeepSeek teacher beyond what `distill parity` checks
 * against transformers: FP8 block-scaled weights (made here from the fixture
 * and dequantised here by the definition, w = fp8 * scale_inv of its 128x128
 * block), absorbed vs decompressed MLA over a whole prefill, and bad folders. */
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>

#include "core/dtype.h"
#include "core/hfconfig.h"
#include "core/safetensors.h"
#include "core/util.h"
#include "teacher/model.h"

#define DS3 KD_TEST_FIXTURES "/tiny-deepseek-v3"
#define TMP KD_TEST_TMP "/teacher"

static double rel_(const float *a, const float *b, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* Copy config.json with a quantization_config added (or not). */
static void write_config_(const char *dir, int fp8)
{
    char *txt = NULL;
    size_t len = 0;
    CHECK_OK(kd_read_file(DS3 "/config.json", 1 << 20, &txt, &len));
    if (!txt)
        return;
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (fp8) {
        char *brace = strrchr(txt, '}');
        *brace = 0;
        char *out = malloc(len + 200);
        int n = snprintf(out, len + 200, "%s, \"quantization_config\": {\"quant_method\": \"fp8\", "
                         "\"fmt\": \"e4m3\", \"activation_scheme\": \"dynamic\", "
                         "\"weight_block_size\": [128, 128]}}\n", txt);
        CHECK_OK(kd_write_file_atomic(path, out, (size_t)n));
        free(out);
    } else {
        CHECK_OK(kd_write_file_atomic(path, txt, len));
    }
    free(txt);
}

/* The fixture's weights, the quantizable 2-D ones as F8_E4M3 + F32 scales in
 * dir_q, and the same values dequantised (by the definition) as F32 in
 * dir_f. Block scales: amax of the block / 448, so each block uses the whole
 * e4m3 range; shapes that are not multiples of 128 leave partial blocks. */
static int make_fp8_(const char *dir_q, const char *dir_f)
{
    kd_st *st = NULL;
    kd_model_config cfg;
    CHECK_OK(kd_model_config_load(DS3, &cfg));
    CHECK_OK(kd_st_open(DS3, &st));
    if (!st)
        return 0;
    kd_tensor_spec *specs = NULL;
    size_t ns = 0;
    CHECK_OK(kd_model_tensors(&cfg, &specs, &ns));
    kd_st_writer *wq = NULL, *wf = NULL;
    CHECK_OK(kd_st_writer_new(&wq));
    CHECK_OK(kd_st_writer_new(&wf));
    void **keep = calloc(3 * ns, sizeof *keep);
    int nq = 0, partial = 0;
    for (size_t i = 0; i < ns; i++) {
        const kd_st_tensor *t = kd_st_find(st, specs[i].name);
        CHECK(t && t->dtype == KD_F32);
        if (!t)
            continue;
        float *f = malloc(t->numel * sizeof(float));
        memcpy(f, t->data, t->numel * sizeof(float));
        keep[3 * i] = f;
        int64_t shape[2] = {specs[i].shape[0], specs[i].ndim > 1 ? specs[i].shape[1] : 0};
        if (!specs[i].quantizable) {
            CHECK_OK(kd_st_writer_add(wq, specs[i].name, KD_F32, specs[i].ndim, shape, f));
            CHECK_OK(kd_st_writer_add(wf, specs[i].name, KD_F32, specs[i].ndim, shape, f));
            continue;
        }
        const int64_t O = shape[0], I = shape[1], bo = (O + 127) / 128, bi = (I + 127) / 128;
        partial += O % 128 || I % 128;
        unsigned char *q = malloc((size_t)(O * I));
        float *sc = malloc((size_t)(bo * bi) * sizeof(float));
        for (int64_t a = 0; a < bo; a++)
            for (int64_t b = 0; b < bi; b++) {
                float amax = 0;
                for (int64_t o = a * 128; o < O && o < (a + 1) * 128; o++)
                    for (int64_t k = b * 128; k < I && k < (b + 1) * 128; k++)
                        amax = fabsf(f[o * I + k]) > amax ? fabsf(f[o * I + k]) : amax;
                float s = amax > 0 ? amax / 448.0f : 1.0f;
                sc[a * bi + b] = s;
                for (int64_t o = a * 128; o < O && o < (a + 1) * 128; o++)
                    for (int64_t k = b * 128; k < I && k < (b + 1) * 128; k++) {
                        q[o * I + k] = kd_f32_to_fp8e4m3(f[o * I + k] / s);
                        f[o * I + k] = kd_fp8e4m3_to_f32(q[o * I + k]) * s; /* the definition */
                    }
            }
        keep[3 * i + 1] = q;
        keep[3 * i + 2] = sc;
        char sname[200];
        snprintf(sname, sizeof sname, "%s_scale_inv", specs[i].name);
        int64_t sshape[2] = {bo, bi};
        CHECK_OK(kd_st_writer_add(wq, specs[i].name, KD_F8_E4M3, 2, shape, q));
        CHECK_OK(kd_st_writer_add(wq, sname, KD_F32, 2, sshape, sc));
        CHECK_OK(kd_st_writer_add(wf, specs[i].name, KD_F32, 2, shape, f));
        nq++;
    }
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir_q);
    CHECK_OK(kd_st_writer_write(wq, p));
    snprintf(p, sizeof p, "%s/model.safetensors", dir_f);
    CHECK_OK(kd_st_writer_write(wf, p));
    kd_st_writer_free(wq);
    kd_st_writer_free(wf);
    for (size_t i = 0; i < 3 * ns; i++)
        free(keep[i]);
    free(keep);
    free(specs);
    kd_st_free(st);
    printf("fp8: %d weights quantized, %d with partial blocks\n", nq, partial);
    CHECK(partial > 0);
    return nq;
}

TEST(fp8)
{
    const char *dq = TMP "/fp8", *df = TMP "/fp8-dequant";
    kd_rmtree(TMP);
    CHECK_OK(kd_mkdirs(dq));
    CHECK_OK(kd_mkdirs(df));
    write_config_(dq, 1);
    write_config_(df, 0);
    CHECK(make_fp8_(dq, df) > 0);
    kd_teacher *a = NULL, *b = NULL, *o = NULL;
    CHECK_OK(kd_teacher_load(dq, &a));
    CHECK_OK(kd_teacher_load(df, &b));
    CHECK_OK(kd_teacher_load(DS3, &o));
    if (!a || !b || !o)
        goto out;
    const int64_t V = kd_teacher_config(a)->vocab_size, T = 12;
    int64_t ids[12];
    for (int64_t t = 0; t < T; t++)
        ids[t] = (t * 41 + 7) % V;
    float *la = malloc((size_t)(T * V) * sizeof(float)), *lb = malloc((size_t)(T * V) * sizeof(float));
    float *lo = malloc((size_t)(T * V) * sizeof(float));
    CHECK_OK(kd_teacher_logits(a, ids, T, la));
    CHECK_OK(kd_teacher_logits(b, ids, T, lb));
    CHECK_OK(kd_teacher_logits(o, ids, T, lo));
    double same = rel_(la, lb, (size_t)(T * V)), vs_orig = rel_(la, lo, (size_t)(T * V));
    printf("fp8 checkpoint vs its dequantized F32 copy: logits rel %.3g; vs the unquantized model: %.3g\n",
           same, vs_orig);
    CHECK(same == 0.0);        /* the same fp32 weights, the same arithmetic */
    CHECK(vs_orig > 1e-4);     /* quantization did change the weights... */
    CHECK(vs_orig < 0.5);      /* ...by e4m3 rounding (3 mantissa bits), not by a wrong scale */
    free(la);
    free(lb);
    free(lo);
out:
    kd_teacher_free(a);
    kd_teacher_free(b);
    kd_teacher_free(o);
}

/* absorbed and decompressed attention over a whole prefill, then a decode */
TEST(mla_forms)
{
    kd_teacher *m = NULL;
    CHECK_OK(kd_teacher_load(DS3, &m));
    if (!m)
        return;
    const int64_t V = kd_teacher_config(m)->vocab_size, T = 20;
    int64_t ids[20];
    for (int64_t t = 0; t < T; t++)
        ids[t] = (t * 29 + 3) % V;
    kd_mla_cache *ca = NULL, *cb = NULL;
    CHECK_OK(kd_mla_cache_new(m, T, &ca));
    CHECK_OK(kd_mla_cache_new(m, T, &cb));
    float *a = malloc((size_t)(T * V) * sizeof(float)), *b = malloc((size_t)(T * V) * sizeof(float));
    CHECK_OK(kd_teacher_extend(m, ca, ids, T - 4, KD_MLA_DECOMPRESSED, 1, a));
    CHECK_OK(kd_teacher_extend(m, cb, ids, T - 4, KD_MLA_ABSORBED, 1, b));
    double e1 = rel_(b, a, (size_t)((T - 4) * V));
    CHECK_OK(kd_teacher_extend(m, ca, ids + T - 4, 4, KD_MLA_DECOMPRESSED, 1, a));
    CHECK_OK(kd_teacher_extend(m, cb, ids + T - 4, 4, KD_MLA_ABSORBED, 1, b));
    double e2 = rel_(b, a, (size_t)(4 * V));
    printf("absorbed vs decompressed: prefill of %lld rel %.3g, 4 more tokens rel %.3g\n",
           (long long)(T - 4), e1, e2);
    CHECK(e1 < 1e-5 && e2 < 1e-5);
    CHECK_EQ_INT(kd_mla_cache_len(ca), T);
    /* a full cache refuses more, unchanged */
    CHECK_ERR(kd_teacher_extend(m, ca, ids, 1, KD_MLA_ABSORBED, 0, NULL), KD_E_RANGE, "do not fit");
    CHECK_EQ_INT(kd_mla_cache_len(ca), T);
    int64_t bad = V;
    kd_mla_cache *cc = NULL;
    CHECK_OK(kd_mla_cache_new(m, 4, &cc));
    CHECK_ERR(kd_teacher_extend(m, cc, &bad, 1, KD_MLA_ABSORBED, 0, NULL), KD_E_RANGE, "outside");
    kd_mla_cache_free(cc);
    CHECK_ERR(kd_mla_cache_new(m, 100000, &cc), KD_E_RANGE, "max_position");
    CHECK(cc == NULL);
    kd_mla_cache_free(ca);
    kd_mla_cache_free(cb);
    free(a);
    free(b);
    kd_teacher_free(m);
}

/* the paged cache: a prompt prefilled once, forked into three samples that
 * share its blocks (the last one partly filled: copy-on-write), decoded in one
 * batched step with different tokens; each sample's logits equal a fresh
 * single-sequence run over the same tokens */
TEST(paged_batch)
{
    kd_teacher *m = NULL;
    CHECK_OK(kd_teacher_load(DS3, &m));
    if (!m)
        return;
    const int64_t V = kd_teacher_config(m)->vocab_size, P = 10, bs = 4;
    int64_t prompt[10];
    for (int64_t t = 0; t < P; t++)
        prompt[t] = (t * 37 + 11) % V;
    kd_kvpool *pool = NULL;
    CHECK_OK(kd_teacher_kvpool_new(m, 12, bs, &pool));
    if (!pool)
        goto out;
    kd_kvseq a = {0}, b = {0}, c3 = {0};
    kd_kvseq *pa = &a;
    int64_t n = P;
    CHECK_OK(kd_teacher_step(m, pool, &pa, 1, prompt, &n, KD_MLA_DECOMPRESSED, 0, NULL));
    CHECK_EQ_INT(kd_kvpool_free_blocks(pool), 12 - 3); /* 10 positions in blocks of 4 */
    CHECK_OK(kd_kvseq_fork(pool, &a, &b));
    CHECK_OK(kd_kvseq_fork(pool, &a, &c3));
    CHECK_EQ_INT(kd_kvseq_need(pool, &b, 1), 1); /* the shared last block is copied first */
    for (int round = 0; round < 3; round++) {
        kd_kvseq *seqs[3] = {&a, &b, &c3};
        int64_t next[3] = {(5 + round) % V, (77 + round) % V, (200 + round) % V}, nn[3] = {1, 1, 1};
        float *lg = malloc((size_t)(3 * V) * sizeof(float));
        CHECK_OK(kd_teacher_step(m, pool, seqs, 3, next, nn, KD_MLA_ABSORBED, 0, lg));
        for (int k = 0; k < 3; k++) {
            /* reference: the prompt and this sample's tokens so far, alone */
            int64_t toks[16], T = P;
            memcpy(toks, prompt, sizeof prompt);
            for (int r = 0; r <= round; r++)
                toks[T++] = (k == 0 ? 5 : k == 1 ? 77 : 200) + r;
            float *ref = malloc((size_t)(T * V) * sizeof(float));
            CHECK_OK(kd_teacher_logits(m, toks, T, ref));
            double e = rel_(lg + k * V, ref + (T - 1) * V, (size_t)V);
            if (e > 1e-5)
                FAIL_("round %d sample %d: batched paged logits rel %.3g", round, k, e);
            free(ref);
        }
        free(lg);
    }
    printf("paged: 3 samples forked from a 10-token prompt, 3 batched decode steps: free blocks %lld of 12\n",
           (long long)kd_kvpool_free_blocks(pool));
    /* pool full: refused, nothing changed */
    kd_kvseq d = {0};
    kd_kvseq *pd = &d;
    int64_t many[64] = {0}, n64 = 64;
    int64_t before = kd_kvpool_free_blocks(pool);
    CHECK_ERR(kd_teacher_step(m, pool, &pd, 1, many, &n64, KD_MLA_ABSORBED, 0, NULL), KD_E_RANGE, "kv pool full");
    CHECK_EQ_INT(kd_kvpool_free_blocks(pool), before);
    CHECK_EQ_INT(d.len, 0);
    kd_kvseq_release(pool, &a);
    kd_kvseq_release(pool, &b);
    kd_kvseq_release(pool, &c3);
    CHECK_EQ_INT(kd_kvpool_free_blocks(pool), 12); /* every block back */
out:
    kd_kvpool_free(pool);
    kd_teacher_free(m);
}

/* routes given from outside (what the GPU test does with the GPU's choices):
 * every token of every MoE layer sent to experts 0 .. k-1 changes the logits,
 * reports the choices unlike the model's own with a positive score gap, is
 * deterministic, refuses an expert id out of range, and NULL chooses again
 * (the unforced logits come back) */
TEST(forced_routes)
{
    kd_teacher *m = NULL;
    CHECK_OK(kd_teacher_load(DS3, &m));
    if (!m)
        return;
    const kd_model_config *c = kd_teacher_config(m);
    const int64_t V = c->vocab_size, T = 12, k = c->num_experts_per_tok, L = c->num_layers;
    int64_t ids[12];
    for (int64_t t = 0; t < T; t++)
        ids[t] = (t * 41 + 7) % V;
    int32_t *routes = malloc((size_t)(L * T * k) * sizeof *routes);
    float *a = malloc((size_t)(T * V) * sizeof(float)), *b = malloc((size_t)(T * V) * sizeof(float));
    float *b2 = malloc((size_t)(T * V) * sizeof(float)), *a2 = malloc((size_t)(T * V) * sizeof(float));
    for (int64_t i = 0; i < L * T * k; i++)
        routes[i] = (int32_t)(i % k);
    int64_t differ = -1;
    double gap = -1;
    CHECK_OK(kd_teacher_logits(m, ids, T, a));
    kd_teacher_route_stats(m, &differ, &gap);
    CHECK(differ == 0 && gap == 0); /* nothing forced */
    kd_teacher_force_routes(m, routes);
    CHECK_OK(kd_teacher_logits(m, ids, T, b));
    kd_teacher_route_stats(m, &differ, &gap);
    const int64_t d1 = differ;
    CHECK_OK(kd_teacher_logits(m, ids, T, b2));
    kd_teacher_route_stats(m, &differ, &gap);
    routes[L * T * k - 1] = (int32_t)c->n_routed_experts; /* an expert that does not exist */
    CHECK_ERR(kd_teacher_logits(m, ids, T, a2), KD_E_RANGE, "expert");
    routes[L * T * k - 1] = -1;
    CHECK_ERR(kd_teacher_logits(m, ids, T, a2), KD_E_RANGE, "expert -1");
    kd_teacher_force_routes(m, NULL);
    CHECK_OK(kd_teacher_logits(m, ids, T, a2));
    const double moved = rel_(b, a, (size_t)(T * V));
    printf("forced routes: %lld of %lld token-layer choices unlike the model's own, largest gap %.3g; logits moved "
           "%.3g\n", (long long)d1, (long long)(T * (L - c->first_k_dense_replace)), gap, moved);
    CHECK(d1 > 0 && differ == d1 && gap > 0);
    CHECK(moved > 1e-3);
    CHECK(memcmp(b, b2, (size_t)(T * V) * sizeof(float)) == 0);
    CHECK(memcmp(a, a2, (size_t)(T * V) * sizeof(float)) == 0);
    free(routes), free(a), free(b), free(b2), free(a2);
    kd_teacher_free(m);
}

TEST(bad_folders)
{
    kd_teacher *m = NULL;
    CHECK_ERR(kd_teacher_load(KD_TEST_FIXTURES "/tiny-qwen2", &m), KD_E_UNSUPPORTED, "qwen2");
    CHECK(m == NULL);
    CHECK_ERR(kd_teacher_load(TMP "/nothing", &m), KD_E_NOTFOUND, "nothing");
    /* a tensor missing: named before anything is loaded */
    const char *d = TMP "/missing";
    CHECK_OK(kd_mkdirs(d));
    write_config_(d, 0);
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(DS3, &st));
    kd_st_writer *w = NULL;
    CHECK_OK(kd_st_writer_new(&w));
    for (size_t i = 0; st && i < kd_st_count(st); i++) {
        const kd_st_tensor *t = kd_st_at(st, i);
        if (strcmp(t->name, "model.layers.1.mlp.experts.3.up_proj.weight"))
            CHECK_OK(kd_st_writer_add(w, t->name, t->dtype, t->ndim, (const int64_t *)t->shape, t->data));
    }
    CHECK_OK(kd_st_writer_write(w, TMP "/missing/model.safetensors"));
    kd_st_writer_free(w);
    kd_st_free(st);
    CHECK_ERR(kd_teacher_load(d, &m), KD_E_NOTFOUND, "model.layers.1.mlp.experts.3.up_proj.weight");
}

/* An MTP layer (model.layers.L.*, num_nextn_predict_layers = 1) in the
 * checkpoint is recognised and skipped: the logits do not change. */
TEST(mtp_skipped)
{
    const char *d = TMP "/mtp";
    kd_rmtree(d);
    CHECK_OK(kd_mkdirs(d));
    write_config_(d, 0); /* the fixture's config already says num_nextn_predict_layers: 1 */
    kd_st *st = NULL;
    CHECK_OK(kd_st_open(DS3, &st));
    kd_st_writer *w = NULL;
    CHECK_OK(kd_st_writer_new(&w));
    char (*names)[160] = calloc(kd_st_count(st), sizeof *names);
    size_t nm = 0;
    for (size_t i = 0; st && i < kd_st_count(st); i++) {
        const kd_st_tensor *t = kd_st_at(st, i);
        CHECK_OK(kd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data));
        /* layer 2 copied as layer 3, the MTP layer of a 3-layer model */
        if (!strncmp(t->name, "model.layers.2.", 15)) {
            snprintf(names[nm], sizeof names[nm], "model.layers.3.%s", t->name + 15);
            CHECK_OK(kd_st_writer_add(w, names[nm], t->dtype, t->ndim, t->shape, t->data));
            nm++;
        }
    }
    CHECK(nm > 0);
    CHECK_OK(kd_st_writer_write(w, TMP "/mtp/model.safetensors"));
    kd_st_writer_free(w);
    free(names);
    kd_st_free(st);
    kd_teacher *a = NULL, *b = NULL;
    CHECK_OK(kd_teacher_load(d, &a));
    CHECK_OK(kd_teacher_load(DS3, &b));
    if (a && b) {
        const int64_t V = kd_teacher_config(a)->vocab_size, T = 6;
        int64_t ids[6] = {1, 5, 9, 33, 200, 7};
        float *la = malloc((size_t)(T * V) * sizeof(float)), *lb = malloc((size_t)(T * V) * sizeof(float));
        CHECK_OK(kd_teacher_logits(a, ids, T, la));
        CHECK_OK(kd_teacher_logits(b, ids, T, lb));
        CHECK(!memcmp(la, lb, (size_t)(T * V) * sizeof(float)));
        printf("mtp: %zu tensors of layer 3 present and skipped; logits unchanged\n", nm);
        free(la);
        free(lb);
    }
    kd_teacher_free(a);
    kd_teacher_free(b);
}

/* A pool of block ids only (the CUDA teacher's): the same tables, free counts
 * and copy-on-write decisions as a pool with rows, and each copy reported. */
static int copies_, last_from_, last_to_;
static void on_copy_(void *ctx, int32_t from, int32_t to)
{
    (void)ctx;
    copies_++;
    last_from_ = from;
    last_to_ = to;
}

TEST(index_pool)
{
    kd_kvpool *a = NULL, *b = NULL;
    kd_rope rope;
    memset(&rope, 0, sizeof rope);
    rope.theta = 10000;
    CHECK_OK(kd_kvpool_new(2, 8, 10, 4, &rope, 4, 64, &a));
    CHECK_OK(kd_kvpool_new_index(10, 4, 64, &b));
    if (!a || !b)
        return;
    kd_kvpool_on_copy(a, on_copy_, NULL);
    kd_kvpool_on_copy(b, on_copy_, NULL);
    kd_kvseq sa[2], sb[2];
    memset(sa, 0, sizeof sa);
    memset(sb, 0, sizeof sb);
    kd_kvseq *pa = &sa[0], *pb = &sb[0];
    const int64_t six = 6, one = 1;
    CHECK_OK(kd_kvpool_reserve(a, &pa, 1, &six));
    CHECK_OK(kd_kvpool_reserve(b, &pb, 1, &six));
    sa[0].len = sb[0].len = 6;
    CHECK_OK(kd_kvseq_fork(a, &sa[0], &sa[1]));
    CHECK_OK(kd_kvseq_fork(b, &sb[0], &sb[1]));
    copies_ = 0;
    pa = &sa[1], pb = &sb[1];
    CHECK(kd_kvseq_need(b, &sb[1], 1) == 1); /* the shared, partly filled block is copied */
    CHECK_OK(kd_kvpool_reserve(a, &pa, 1, &one));
    CHECK_OK(kd_kvpool_reserve(b, &pb, 1, &one));
    CHECK(copies_ == 2); /* once per pool */
    CHECK(last_from_ == sb[0].blocks[1] && last_to_ == sb[1].blocks[1] && last_from_ != last_to_);
    for (int i = 0; i < 2; i++)
        for (int64_t j = 0; j < sa[i].nblocks; j++)
            CHECK(sa[i].blocks[j] == sb[i].blocks[j]);
    CHECK(kd_kvpool_free_blocks(a) == kd_kvpool_free_blocks(b));
    const int64_t many = 64;
    CHECK(kd_kvpool_reserve(b, &pb, 1, &many) == KD_E_RANGE); /* past max_pos */
    kd_err_clear();
    for (int i = 0; i < 2; i++) {
        kd_kvseq_release(a, &sa[i]);
        kd_kvseq_release(b, &sb[i]);
    }
    CHECK(kd_kvpool_free_blocks(b) == 10);
    kd_kvpool_free(b);
    CHECK(kd_kvpool_new_index(0, 4, 64, &b) == KD_E_RANGE && b == NULL);
    kd_err_clear();
    kd_kvpool_free(a);
}

int main(void)
{
    RUN(index_pool);
    RUN(fp8);
    RUN(mla_forms);
    RUN(paged_batch);
    RUN(forced_routes);
    RUN(mtp_skipped);
    RUN(bad_folders);
    return test_summary();
}
