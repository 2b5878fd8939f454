/* test_teacher_train.c - the teacher's training pass (teacher/train.h):
 * parity of the loss, every gradient and one AdamW step with transformers
 * (the tiny-deepseek-v3-train fixture); the training forward against the
 * inference model; finite differences of every parameter tensor on tiny
 * random V3 and V2 configs (yarn, biases, q_lora or not, Dv above and below
 * the query head dim, sigmoid and softmax routers, normalised or scaled
 * gate weights, random correction biases); gradient accumulation; packed
 * rows (pos) against separate documents; bad inputs. */
#include "test.h"

#include <stdint.h>

#include "core/safetensors.h"
#include "core/util.h"
#include "teacher/model.h"
#include "teacher/train.h"

#define DS3T KD_TEST_FIXTURES "/tiny-deepseek-v3-train"
#define TMP KD_TEST_TMP "/teacher_train"
/* Central differences of an fp32 model: truncation O(h^2) (about 1e-3
 * relative at h = 2e-2 on these models, 1e-5 at 1.25e-3) and rounding noise
 * O(eps * loss / h) (about 2e-4 absolute at h = 5e-3, measured) */
#define FD_RTOL 5e-3
#define FD_ATOL 5e-4

static double rel_(const float *a, const float *b, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* ---- parity with transformers ------------------------------------------------------ */

TEST(parity_fixture)
{
    int failed = -1;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK_OK(kd_teacher_parity_train(DS3T, f, &failed));
    fclose(f);
    /* the loss line, the worst line of each kind, and any failure */
    double worst_g = 0, worst_a = 0;
    char wg[256] = "", wa[256] = "";
    int ng = 0, na = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        double e;
        char name[200];
        if (!strncmp(line, "FAIL", 4) || !strncmp(line, "info", 4) || strstr(line, " loss "))
            printf("  %s\n", line);
        if (sscanf(line, "ok   grad     rel %lg (tol %*s %199s", &e, name) == 2 ||
            sscanf(line, "FAIL grad     rel %lg (tol %*s %199s", &e, name) == 2) {
            ng++;
            if (e >= worst_g)
                worst_g = e, snprintf(wg, sizeof wg, "%s", name);
        }
        if (sscanf(line, "ok   adamw    rel %lg (tol %*s %199s", &e, name) == 2 ||
            sscanf(line, "FAIL adamw    rel %lg (tol %*s %199s", &e, name) == 2) {
            na++;
            if (e >= worst_a)
                worst_a = e, snprintf(wa, sizeof wa, "%s", name);
        }
    }
    printf("  %d gradients, worst rel %.2g (%s); %d AdamW steps, worst rel %.2g (%s)\n", ng, worst_g, wg, na,
           worst_a, wa);
    free(buf);
    CHECK_EQ_INT(failed, 0);
    CHECK(ng >= 30);
    CHECK_EQ_INT(ng, na);
}

/* The same fixture with the routed experts' gradients and updated weights
 * stored per expert (the names of transformers before 5, and of the
 * checkpoint): the harness assembles them, and a planted error in one
 * expert's slice is caught. Also sets a metadata hyperparameter. */
static void write_split_(const char *dir, int plant, const char *lr)
{
    kd_st *st = NULL;
    CHECK_OK(kd_mkdirs(dir));
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char src[512], dst[512], *txt = NULL;
        size_t len = 0;
        snprintf(src, sizeof src, "%s/%s", DS3T, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        CHECK_OK(kd_read_file(src, (size_t)1 << 30, &txt, &len));
        if (txt)
            CHECK_OK(kd_write_file_atomic(dst, txt, len));
        free(txt);
    }
    CHECK_OK(kd_st_open(DS3T "/ref_train.safetensors", &st));
    if (!st)
        return;
    kd_st_writer *w = NULL;
    CHECK_OK(kd_st_writer_new(&w));
    if (lr)
        CHECK_OK(kd_st_writer_meta(w, "adamw.lr", lr));
    enum { MAXK = 4096 };
    void *keep[MAXK];
    char *names[MAXK];
    int nk = 0;
    for (size_t i = 0; i < kd_st_count(st); i++) {
        const kd_st_tensor *t = kd_st_at(st, i);
        const char *fused = strstr(t->name, "mlp.experts.");
        if (!fused || t->ndim != 3) {
            CHECK_OK(kd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data));
            continue;
        }
        const int gu = strstr(fused, "gate_up_proj") != NULL;
        const int64_t E = t->shape[0], O = t->shape[1], I = t->shape[2], oo = gu ? O / 2 : O;
        const size_t pre = (size_t)(fused - t->name);
        for (int64_t e = 0; e < E; e++)
            for (int part = 0; part < (gu ? 2 : 1) && nk < MAXK; part++) {
                float *d = malloc((size_t)(oo * I) * sizeof(float));
                char *nm = malloc(256);
                memcpy(d, (const char *)t->data + ((size_t)(e * O + part * oo) * (size_t)I) * sizeof(float),
                       (size_t)(oo * I) * sizeof(float));
                if (plant && e == 5 && part == 1 && !strncmp(t->name, "grad.", 5))
                    for (int64_t j = 0; j < oo * I; j++)
                        d[j] = 1.5f * d[j] + 1e-3f;
                snprintf(nm, 256, "%.*smlp.experts.%lld.%s", (int)pre, t->name, (long long)e,
                         gu ? (part ? "up_proj.weight" : "gate_proj.weight") : "down_proj.weight");
                int64_t shape[2] = {oo, I};
                CHECK_OK(kd_st_writer_add(w, nm, KD_F32, 2, shape, d));
                keep[nk] = d;
                names[nk++] = nm;
            }
    }
    char path[600];
    snprintf(path, sizeof path, "%s/ref_train.safetensors", dir);
    CHECK_OK(kd_st_writer_write(w, path));
    kd_st_writer_free(w);
    for (int i = 0; i < nk; i++) {
        free(keep[i]);
        free(names[i]);
    }
    kd_st_free(st);
}

TEST(parity_per_expert_names)
{
    int failed = -1;
    FILE *null = fopen("/dev/null", "w");
    write_split_(TMP "/split", 0, NULL);
    CHECK_OK(kd_teacher_parity_train(TMP "/split", null, &failed));
    CHECK_EQ_INT(failed, 0);
    /* a planted error in expert 5's up_proj gradient fails the fused grad
     * check and the step on the reference grads of that tensor, only those */
    write_split_(TMP "/split-bad", 1, NULL);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK_OK(kd_teacher_parity_train(TMP "/split-bad", f, &failed));
    fclose(f);
    CHECK_EQ_INT(failed, 2);
    CHECK(buf && strstr(buf, "FAIL grad     rel") && strstr(buf, "FAIL adamw    rel"));
    for (char *l = buf ? strstr(buf, "FAIL") : NULL; l; l = strstr(l + 4, "FAIL"))
        CHECK(!strncmp(strchr(l, ')') + 2, "model.layers.1.mlp.experts.gate_up_proj", 39));
    free(buf);
    /* a learning rate in the metadata is used: the reference step (lr 1e-3) then differs */
    write_split_(TMP "/split-lr", 0, "0.002");
    buf = NULL;
    f = open_memstream(&buf, &len);
    CHECK_OK(kd_teacher_parity_train(TMP "/split-lr", f, &failed));
    fclose(f);
    CHECK(buf && strstr(buf, "lr 0.002") && strstr(buf, "from the fixture"));
    CHECK(failed > 0);
    free(buf);
    fclose(null);
}

/* The training forward gives the inference model's logits (the same
 * weights, ops and routing). */
TEST(forward_vs_inference)
{
    kd_teacher_train *m = NULL;
    CHECK_OK(kd_teacher_train_new(DS3T, &m));
    if (!m)
        return;
    kd_teacher *inf = NULL;
    CHECK_OK(kd_teacher_load(DS3T, &inf));
    const kd_model_config *c = kd_teacher_train_config(m);
    const int64_t B = 2, T = 13, V = c->vocab_size;
    int64_t ids[26];
    for (int i = 0; i < 26; i++)
        ids[i] = (i * 37 + 11) % V;
    float *a = malloc((size_t)(B * T * V) * sizeof(float)), *b = malloc((size_t)(B * T * V) * sizeof(float));
    CHECK_OK(kd_teacher_train_forward(m, ids, NULL, B, T, a));
    for (int64_t r = 0; r < B && inf; r++)
        CHECK_OK(kd_teacher_logits(inf, ids + r * T, T, b + r * T * V));
    double e = rel_(a, b, (size_t)(B * T * V));
    printf("  training forward vs inference logits: rel %.2g\n", e);
    CHECK(e <= 1e-5);
    free(a);
    free(b);
    kd_teacher_free(inf);
    kd_teacher_train_free(m);
}

/* ---- finite differences on tiny random configs ------------------------------------------- */

static const char *const cfg_v3_ =
    "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 48, \"hidden_size\": 32, \"intermediate_size\": 40,"
    " \"moe_intermediate_size\": 12, \"num_hidden_layers\": 3, \"first_k_dense_replace\": 1,"
    " \"n_routed_experts\": 8, \"n_shared_experts\": 1, \"num_experts_per_tok\": 3, \"n_group\": 4,"
    " \"topk_group\": 2, \"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\","
    " \"routed_scaling_factor\": 2.5, \"norm_topk_prob\": true, \"num_attention_heads\": 2,"
    " \"num_key_value_heads\": 2, \"q_lora_rank\": 20, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8,"
    " \"qk_rope_head_dim\": 8, \"v_head_dim\": 12, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-6,"
    " \"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0,"
    " \"original_max_position_embeddings\": 16, \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0,"
    " \"mscale_all_dim\": 1.0}, \"attention_bias\": true, \"tie_word_embeddings\": false,"
    " \"rope_interleave\": true}";

/* V2-Lite style: no q_lora, softmax greedy, normalised, Dv above the query dim, tied */
static const char *const cfg_v2_ =
    "{\"model_type\": \"deepseek_v2\", \"vocab_size\": 40, \"hidden_size\": 24, \"intermediate_size\": 32,"
    " \"moe_intermediate_size\": 10, \"num_hidden_layers\": 2, \"first_k_dense_replace\": 1,"
    " \"n_routed_experts\": 6, \"n_shared_experts\": 2, \"num_experts_per_tok\": 2, \"n_group\": 1,"
    " \"topk_group\": 1, \"topk_method\": \"greedy\", \"scoring_func\": \"softmax\","
    " \"routed_scaling_factor\": 1.0, \"norm_topk_prob\": true, \"num_attention_heads\": 3,"
    " \"num_key_value_heads\": 3, \"q_lora_rank\": null, \"kv_lora_rank\": 12, \"qk_nope_head_dim\": 6,"
    " \"qk_rope_head_dim\": 4, \"v_head_dim\": 14, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-6,"
    " \"rope_theta\": 10000.0, \"attention_bias\": false, \"tie_word_embeddings\": true}";

/* V2: group-limited greedy, not normalised but scaled */
static const char *const cfg_v2g_ =
    "{\"model_type\": \"deepseek_v2\", \"vocab_size\": 40, \"hidden_size\": 24, \"intermediate_size\": 32,"
    " \"moe_intermediate_size\": 10, \"num_hidden_layers\": 2, \"first_k_dense_replace\": 1,"
    " \"n_routed_experts\": 8, \"n_shared_experts\": 1, \"num_experts_per_tok\": 3, \"n_group\": 4,"
    " \"topk_group\": 2, \"topk_method\": \"group_limited_greedy\", \"routed_scaling_factor\": 3.0,"
    " \"norm_topk_prob\": false, \"num_attention_heads\": 2, \"num_key_value_heads\": 2, \"q_lora_rank\": 16,"
    " \"kv_lora_rank\": 12, \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 4, \"v_head_dim\": 8,"
    " \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0,"
    " \"attention_bias\": false, \"tie_word_embeddings\": false}";

/* a random model of cfg in TMP/name; norms and correction biases made random too */
static kd_teacher_train *random_model_(const char *name, const char *cfg, uint64_t seed)
{
    char dir[512], cdir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", TMP, name);
    snprintf(cdir, sizeof cdir, "%s/%s-cfg", TMP, name);
    CHECK_OK(kd_mkdirs(dir));
    CHECK_OK(kd_mkdirs(cdir));
    snprintf(path, sizeof path, "%s/config.json", cdir);
    CHECK_OK(kd_write_file_atomic(path, cfg, strlen(cfg)));
    CHECK_OK(kd_teacher_write_random(cdir, dir, seed, 0.3));
    kd_teacher_train *m = NULL;
    CHECK_OK(kd_teacher_train_new(dir, &m));
    if (!m)
        return NULL;
    uint64_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < kd_teacher_train_param_count(m); i++) {
        const char *n = kd_teacher_train_param_name(m, i);
        float *p;
        size_t k;
        if (!strstr(n, "norm.weight") || kd_teacher_train_tensor(m, n, 0, &p, &k))
            continue;
        for (size_t j = 0; j < k; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            p[j] = 1.0f + 0.3f * (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
        }
    }
    const kd_model_config *c = kd_teacher_train_config(m);
    for (int64_t l = 0; l < c->num_layers; l++) {
        char bn[128];
        float *p;
        size_t k;
        snprintf(bn, sizeof bn, "model.layers.%lld.mlp.gate.e_score_correction_bias", (long long)l);
        if (kd_teacher_train_tensor(m, bn, 0, &p, &k))
            continue;
        for (size_t j = 0; j < k; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            p[j] = 0.2f * (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
        }
    }
    return m;
}

/* the summed token losses, in double (a backward with scale 0 adds nothing) */
static double loss_sum_(kd_teacher_train *m, const int64_t *ids, const int64_t *labels, int64_t B, int64_t T)
{
    double sum = 0;
    CHECK_OK(kd_teacher_train_backward(m, ids, labels, NULL, B, T, 0.0, &sum, NULL));
    return sum;
}

/* Central differences of the summed loss against the gradient of scale 1,
 * at the 2 largest-gradient elements of every parameter tensor, plus one
 * random element. Routing makes the loss piecewise smooth: a step that flips
 * an expert choice shows as a jump, so a mismatch is retried with smaller
 * steps before it counts. */
static void finite_diff_(const char *name, const char *cfg, uint64_t seed)
{
    kd_teacher_train *m = random_model_(name, cfg, seed);
    if (!m)
        return;
    const kd_model_config *c = kd_teacher_train_config(m);
    enum { B = 2, T = 7 };
    int64_t ids[B * T], labels[B * T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int64_t)((i * 29 + (int)seed * 7 + 3) % c->vocab_size);
        labels[i] = i % 5 == 2 ? -100 : ids[i];
    }
    kd_teacher_train_zero_grad(m);
    double sum = 0;
    CHECK_OK(kd_teacher_train_backward(m, ids, labels, NULL, B, T, 1.0, &sum, NULL));
    int kinds = 0, bad = 0;
    double worst = 0;
    char wname[160] = "";
    for (size_t i = 0; i < kd_teacher_train_param_count(m); i++) {
        const char *pn = kd_teacher_train_param_name(m, i);
        float *p, *g;
        size_t n;
        CHECK_OK(kd_teacher_train_tensor(m, pn, 0, &p, &n));
        CHECK_OK(kd_teacher_train_tensor(m, pn, 1, &g, &n));
        size_t pick[3] = {0, 0, (size_t)(seed * 7919 + i * 104729) % n};
        for (size_t j = 0; j < n; j++)
            if (fabsf(g[j]) > fabsf(g[pick[0]]))
                pick[0] = j;
        pick[1] = pick[0] ? 0 : 1 % n;
        for (size_t j = 0; j < n; j++)
            if (j != pick[0] && fabsf(g[j]) > fabsf(g[pick[1]]))
                pick[1] = j;
        for (int q = 0; q < 3; q++) {
            const size_t j = pick[q];
            const float p0 = p[j], an = g[j];
            double err = INFINITY, fd = 0;
            static const float hs[] = {5e-3f, 2e-2f, 1.25e-3f, 1e-2f};
            for (int hi = 0; hi < 4 && !(err <= 1); hi++) {
                const float h = hs[hi];
                p[j] = p0 + h;
                double lp = loss_sum_(m, ids, labels, B, T);
                p[j] = p0 - h;
                double lm = loss_sum_(m, ids, labels, B, T);
                p[j] = p0;
                fd = (lp - lm) / (2.0 * (double)h);
                err = fabs(fd - an) / (FD_RTOL * fabs(an) + FD_ATOL);
            }
            if (err > worst)
                worst = err, snprintf(wname, sizeof wname, "%s[%zu] fd %.6g grad %.6g", pn, j, fd, an);
            if (!(err <= 1)) {
                bad++;
                fprintf(stderr, "  %s: %s[%zu]: finite difference %.6g, gradient %.6g\n", name, pn, j, fd, an);
            }
        }
        kinds++;
    }
    printf("  %s: %d tensors, 3 elements each, worst %.2g of the tolerance (%s)\n", name, kinds, worst, wname);
    CHECK_EQ_INT(bad, 0);
    kd_teacher_train_free(m);
}

TEST(finite_diff_v3) { finite_diff_("v3", cfg_v3_, 1); }
TEST(finite_diff_v2_lite) { finite_diff_("v2lite", cfg_v2_, 2); }
TEST(finite_diff_v2_group) { finite_diff_("v2group", cfg_v2g_, 3); }

/* every gradient, in parameter-list order, into out (numel floats) */
static void gather_grads_(kd_teacher_train *m, float *out)
{
    size_t o = 0;
    for (size_t i = 0; i < kd_teacher_train_param_count(m); i++) {
        float *t;
        size_t k = 0;
        CHECK_OK(kd_teacher_train_tensor(m, kd_teacher_train_param_name(m, i), 1, &t, &k));
        memcpy(out + o, t, k * sizeof(float));
        o += k;
    }
    CHECK_EQ_INT(o, kd_teacher_train_numel(m));
}

/* Two micro-batches with scale 1/(all targets) add up to the one batch;
 * fused and per-expert names share storage; AdamW runs; the norm is right. */
TEST(accumulate_and_names)
{
    kd_teacher_train *m = random_model_("acc", cfg_v3_, 4);
    if (!m)
        return;
    const kd_model_config *c = kd_teacher_train_config(m);
    enum { B = 2, T = 9 };
    int64_t ids[B * T], labels[B * T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int64_t)((i * 13 + 5) % c->vocab_size);
        labels[i] = i < 3 ? -100 : ids[i];
    }
    const int64_t n = kd_teacher_train_count_targets(labels, NULL, B, T);
    float loss;
    CHECK_OK(kd_teacher_train_loss_backward(m, ids, labels, NULL, B, T, &loss));
    const size_t np = kd_teacher_train_numel(m);
    float *g0 = malloc(np * sizeof(float)), *g1 = malloc(np * sizeof(float));
    gather_grads_(m, g0);
    double s2 = 0;
    for (size_t j = 0; j < np; j++)
        s2 += (double)g0[j] * g0[j];
    CHECK_NEAR(kd_teacher_train_grad_norm(m), sqrt(s2), 1e-6 * sqrt(s2));
    kd_teacher_train_zero_grad(m);
    double s_a = 0, s_b = 0;
    CHECK_OK(kd_teacher_train_backward(m, ids, labels, NULL, 1, T, 1.0 / (double)n, &s_a, NULL));
    CHECK_OK(kd_teacher_train_backward(m, ids + T, labels + T, NULL, 1, T, 1.0 / (double)n, &s_b, NULL));
    CHECK_NEAR((s_a + s_b) / (double)n, loss, 1e-5 * fabs(loss));
    gather_grads_(m, g1);
    double e = rel_(g1, g0, np);
    printf("  accumulated vs one batch: grad rel %.2g, loss %.6g\n", e, (double)loss);
    CHECK(e <= 1e-5);
    free(g1);
    /* per-expert and fused names */
    float *fused, *one;
    size_t nf, n1;
    CHECK_OK(kd_teacher_train_tensor(m, "model.layers.1.mlp.experts.gate_up_proj", 0, &fused, &nf));
    CHECK_OK(kd_teacher_train_tensor(m, "model.layers.1.mlp.experts.3.up_proj.weight", 0, &one, &n1));
    CHECK_EQ_INT(nf, c->n_routed_experts * 2 * c->moe_intermediate_size * c->hidden_size);
    CHECK(one == fused + (3 * 2 + 1) * n1);
    CHECK_OK(kd_teacher_train_tensor(m, "model.layers.1.mlp.experts.down_proj", 1, &fused, &nf));
    CHECK_OK(kd_teacher_train_tensor(m, "model.layers.1.mlp.experts.7.down_proj.weight", 1, &one, &n1));
    CHECK(one == fused + 7 * n1);
    CHECK_ERR(kd_teacher_train_tensor(m, "model.layers.1.mlp.gate.e_score_correction_bias", 1, &one, &n1),
              KD_E_NOTFOUND, "buffer");
    CHECK_ERR(kd_teacher_train_tensor(m, "model.layers.9.mlp.gate.weight", 0, &one, &n1), KD_E_NOTFOUND, "");
    /* one AdamW step moves the weights, not the buffer */
    float *bias, *w;
    CHECK_OK(kd_teacher_train_tensor(m, "model.layers.1.mlp.gate.e_score_correction_bias", 0, &bias, &n1));
    float b0 = bias[0];
    CHECK_OK(kd_teacher_train_tensor(m, "model.layers.1.mlp.gate.weight", 0, &w, &n1));
    float w0 = w[0];
    kd_adamw hp = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    CHECK_OK(kd_teacher_train_adamw_step(m, &hp, 1));
    CHECK_EQ_INT(kd_teacher_train_step(m), 1);
    CHECK(bias[0] == b0);
    CHECK(w[0] != w0);
    free(g0);
    kd_teacher_train_free(m);
}

/* ---- packed rows ------------------------------------------------------------------------ */

/* Rows of several documents (pos restarting at 0) against every document run
 * alone: the student's normalisation (student/parity.c check_packed_), the
 * summed token losses over the packed targets, so the packed row's loss and
 * gradients equal the separate documents' backwards at scale 1 / (packed
 * targets), summed. */
static void packed_vs_separate_(const char *name, const char *cfg, uint64_t seed)
{
    kd_teacher_train *m = random_model_(name, cfg, seed);
    if (!m)
        return;
    const kd_model_config *c = kd_teacher_train_config(m);
    enum { B = 2, T = 12, ND = 5 };
    /* row 0: documents of 5, 4, 3 tokens; row 1: 7, 5 */
    static const int64_t doc_len[ND] = {5, 4, 3, 7, 5}, doc_row[ND] = {0, 0, 0, 1, 1};
    int64_t ids[B * T], labels[B * T], pos[B * T];
    for (int64_t d = 0, b = -1, t = 0; d < ND; d++) {
        if (doc_row[d] != b)
            b = doc_row[d], t = 0;
        for (int64_t j = 0; j < doc_len[d]; j++, t++)
            pos[b * T + t] = j;
    }
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int64_t)((i * 29 + 7) % c->vocab_size);
        labels[i] = i % 7 == 3 ? -100 : ids[i]; /* a few ignored targets inside documents */
    }
    const int64_t n = kd_teacher_train_count_targets(labels, pos, B, T);
    CHECK(n < kd_teacher_train_count_targets(labels, NULL, B, T)); /* document ends drop targets */
    float loss = -1;
    CHECK_OK(kd_teacher_train_loss_backward(m, ids, labels, pos, B, T, &loss));
    const size_t np = kd_teacher_train_numel(m);
    float *g0 = malloc(np * sizeof(float)), *g1 = malloc(np * sizeof(float));
    gather_grads_(m, g0);
    float floss = -1;
    int64_t fcnt = -1;
    CHECK_OK(kd_teacher_train_loss(m, ids, labels, pos, B, T, &floss, &fcnt));
    CHECK_EQ_INT(fcnt, n);
    CHECK_NEAR(floss, loss, 1e-6 * fabs(loss));
    /* each document alone, as a row of its own */
    kd_teacher_train_zero_grad(m);
    double sum = 0;
    int64_t nsep = 0;
    for (int64_t d = 0, b = -1, t = 0; d < ND; d++) {
        if (doc_row[d] != b)
            b = doc_row[d], t = 0;
        const int64_t o = b * T + t, len = doc_len[d];
        nsep += kd_teacher_train_count_targets(labels + o, NULL, 1, len);
        double s1 = 0;
        CHECK_OK(kd_teacher_train_backward(m, ids + o, labels + o, NULL, 1, len, 1.0 / (double)n, &s1, NULL));
        sum += s1;
        t += len;
    }
    CHECK_EQ_INT(nsep, n);
    const double lsep = sum / (double)n, le = fabs(lsep - loss) / fabs((double)loss);
    gather_grads_(m, g1);
    const double e = rel_(g0, g1, np);
    printf("  %s packed (2 rows, 5 documents, %lld targets) vs separate: loss %.8g vs %.8g (rel %.2g), "
           "grad rel %.2g\n", name, (long long)n, (double)loss, lsep, le, e);
    CHECK(le <= 1e-5);
    CHECK(e <= 1e-5);
    free(g0);
    free(g1);
    kd_teacher_train_free(m);
}

TEST(packed_v3) { packed_vs_separate_("packv3", cfg_v3_, 5); }
TEST(packed_v2_lite) { packed_vs_separate_("packv2", cfg_v2_, 6); }

/* pos = NULL and pos = 0..T-1 are the same computation, bit for bit */
TEST(packed_null_pos)
{
    kd_teacher_train *m = random_model_("packnull", cfg_v3_, 7);
    if (!m)
        return;
    const kd_model_config *c = kd_teacher_train_config(m);
    enum { B = 2, T = 10 };
    int64_t ids[B * T], labels[B * T], pos[B * T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int64_t)((i * 11 + 3) % c->vocab_size);
        labels[i] = i == 4 ? -100 : ids[i];
        pos[i] = i % T;
    }
    const size_t nl = (size_t)(B * T * c->vocab_size), np = kd_teacher_train_numel(m);
    float *l0 = malloc(nl * sizeof(float)), *l1 = malloc(nl * sizeof(float));
    float *g0 = malloc(np * sizeof(float)), *g1 = malloc(np * sizeof(float));
    CHECK_OK(kd_teacher_train_forward(m, ids, NULL, B, T, l0));
    CHECK_OK(kd_teacher_train_forward(m, ids, pos, B, T, l1));
    CHECK(!memcmp(l0, l1, nl * sizeof(float)));
    CHECK_EQ_INT(kd_teacher_train_count_targets(labels, NULL, B, T),
                 kd_teacher_train_count_targets(labels, pos, B, T));
    float a = -1, b = -2;
    CHECK_OK(kd_teacher_train_loss_backward(m, ids, labels, NULL, B, T, &a));
    gather_grads_(m, g0);
    CHECK_OK(kd_teacher_train_loss_backward(m, ids, labels, pos, B, T, &b));
    gather_grads_(m, g1);
    CHECK(a == b);
    CHECK(!memcmp(g0, g1, np * sizeof(float)));
    printf("  pos NULL vs 0..T-1: loss %.8g, logits and gradients identical\n", (double)a);
    free(l0);
    free(l1);
    free(g0);
    free(g1);
    kd_teacher_train_free(m);
}

/* positions that do not start at 0 or skip inside a document: KD_E_RANGE, as the student */
TEST(packed_bad_pos)
{
    kd_teacher_train *m = random_model_("packbad", cfg_v2_, 8);
    if (!m)
        return;
    enum { B = 1, T = 6 };
    int64_t ids[T] = {1, 2, 3, 4, 5, 6}, labels[T] = {1, 2, 3, 4, 5, 6};
    int64_t late[T] = {1, 2, 3, 0, 1, 2}, skip[T] = {0, 1, 3, 0, 1, 2}, skip2[T] = {0, 1, 2, 0, 2, 3};
    int64_t neg[T] = {0, 1, -1, 0, 1, 2}, ok[T] = {0, 1, 2, 0, 0, 1};
    const char *msg = "positions must start at 0";
    float loss;
    double sum;
    int64_t *bad[] = {late, skip, skip2, neg};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_ERR(kd_teacher_train_forward(m, ids, bad[i], B, T, NULL), KD_E_RANGE, msg);
        CHECK_ERR(kd_teacher_train_loss(m, ids, labels, bad[i], B, T, &loss, NULL), KD_E_RANGE, msg);
        CHECK_ERR(kd_teacher_train_backward(m, ids, labels, bad[i], B, T, 1.0, &sum, NULL), KD_E_RANGE, msg);
        CHECK_ERR(kd_teacher_train_loss_backward(m, ids, labels, bad[i], B, T, &loss), KD_E_RANGE, msg);
    }
    /* a one-token document is fine */
    CHECK_OK(kd_teacher_train_loss_backward(m, ids, labels, ok, B, T, &loss));
    CHECK_EQ_INT(kd_teacher_train_count_targets(labels, ok, B, T), 3);
    kd_teacher_train_free(m);
}

/* ---- bad inputs ------------------------------------------------------------------------ */

TEST(bad_inputs)
{
    kd_teacher_train *m = NULL;
    CHECK_OK(kd_teacher_train_new(DS3T, &m));
    if (!m)
        return;
    enum { B = 2, T = 5 };
    int64_t ids[B * T], labels[B * T];
    for (int i = 0; i < B * T; i++)
        ids[i] = i, labels[i] = -100;
    float loss = -1;
    CHECK_OK(kd_teacher_train_loss_backward(m, ids, labels, NULL, B, T, &loss));
    CHECK(loss == 0.0f);
    CHECK(kd_teacher_train_grad_norm(m) == 0.0);
    int64_t cnt = -1;
    CHECK_OK(kd_teacher_train_loss(m, ids, labels, NULL, B, T, &loss, &cnt));
    CHECK(loss == 0.0f && cnt == 0);
    ids[3] = kd_teacher_train_config(m)->vocab_size;
    CHECK_ERR(kd_teacher_train_loss_backward(m, ids, labels, NULL, B, T, &loss), KD_E_RANGE, "token id");
    ids[3] = -1;
    CHECK_ERR(kd_teacher_train_forward(m, ids, NULL, B, T, NULL), KD_E_RANGE, "token id");
    ids[3] = 3;
    labels[4] = 100000;
    CHECK_ERR(kd_teacher_train_loss(m, ids, labels, NULL, B, T, &loss, NULL), KD_E_RANGE, "label");
    CHECK_ERR(kd_teacher_train_forward(m, ids, NULL, 0, T, NULL), KD_E_RANGE, "");
    CHECK_ERR(kd_teacher_train_forward(m, ids, NULL, 1, 100000, NULL), KD_E_RANGE, "max_position");
    kd_teacher_train_free(m);
    /* a dense model and a missing folder */
    kd_teacher_train *d = NULL;
    CHECK_ERR(kd_teacher_train_new(KD_TEST_FIXTURES "/tiny-qwen2", &d), KD_E_UNSUPPORTED, "qwen2");
    CHECK(d == NULL);
    CHECK_ERR(kd_teacher_train_new(TMP "/no-such-folder", &d), KD_E_NOTFOUND, "");
    int failed = 0;
    CHECK_ERR(kd_teacher_parity_train(KD_TEST_FIXTURES "/tiny-deepseek-v3", stdout, &failed), KD_E_NOTFOUND, "");
}

int main(void)
{
    kd_mkdirs(TMP);
    RUN(parity_fixture);
    RUN(parity_per_expert_names);
    RUN(forward_vs_inference);
    RUN(finite_diff_v3);
    RUN(finite_diff_v2_lite);
    RUN(finite_diff_v2_group);
    RUN(accumulate_and_names);
    RUN(packed_v3);
    RUN(packed_v2_lite);
    RUN(packed_null_pos);
    RUN(packed_bad_pos);
    RUN(bad_inputs);
    return test_summary();
}
