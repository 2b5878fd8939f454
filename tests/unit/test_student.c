/* test_student.c - the dense student against the HF fixtures (tiny-qwen2,
 * tiny-llama3): logits, loss, every gradient and one AdamW step, with the
 * tolerances of FIXTURES.md. One line per check with the measured error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "student/model.h"
#include "test.h"

static double rel_err_(const float *out, const float *ref, size_t n)
{
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)out[i] - ref[i];
        d += e * e;
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* a fixture tensor as a newly allocated copy (caller frees) */
static void *copy_(const kd_st *st, const char *name, kd_dtype dt, size_t *numel)
{
    const kd_st_tensor *t = kd_st_find(st, name);
    if (!t || t->dtype != dt)
        return NULL;
    void *p = malloc(t->nbytes ? t->nbytes : 1);
    memcpy(p, t->data, t->nbytes);
    if (numel)
        *numel = t->numel;
    return p;
}

static void check_fixture_(const char *fx)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/%s", KD_TEST_FIXTURES, fx);
    kd_student *m = NULL;
    CHECK_OK(kd_student_load(dir, &m));
    if (!m)
        return;
    const int64_t V = kd_student_config(m)->vocab_size;

    /* logits */
    kd_st *ri = NULL;
    snprintf(path, sizeof path, "%s/ref_infer.safetensors", dir);
    CHECK_OK(kd_st_open(path, &ri));
    if (ri) {
        size_t T = 0, nl = 0;
        int64_t *ids = copy_(ri, "input_ids", KD_I64, &T);
        float *ref = copy_(ri, "logits", KD_F32, &nl);
        CHECK(ids && ref && nl == T * (size_t)V);
        if (ids && ref && nl == T * (size_t)V) {
            float *out = malloc(nl * sizeof(float));
            CHECK_OK(kd_student_forward(m, ids, NULL, 1, (int64_t)T, out));
            double worst = 0.0;
            for (size_t t = 0; t < T; t++) {
                double e = rel_err_(out + t * V, ref + t * V, (size_t)V);
                if (e > worst)
                    worst = e;
            }
            double all = rel_err_(out, ref, nl);
            printf("%s logits: overall rel %.3g, worst row rel %.3g (T=%zu)\n", fx, all, worst, T);
            CHECK(all <= 1e-4);
            CHECK(worst <= 1e-4);
            free(out);
        }
        free(ids);
        free(ref);
        kd_st_free(ri);
    }

    /* loss, gradients, AdamW */
    kd_st *rt = NULL;
    snprintf(path, sizeof path, "%s/ref_train.safetensors", dir);
    CHECK_OK(kd_st_open(path, &rt));
    if (rt) {
        const kd_st_tensor *ti = kd_st_find(rt, "input_ids");
        size_t n = 0, nlab = 0, nloss = 0;
        int64_t *ids = copy_(rt, "input_ids", KD_I64, &n);
        int64_t *labels = copy_(rt, "labels", KD_I64, &nlab);
        float *refloss = copy_(rt, "loss", KD_F32, &nloss);
        CHECK(ti && ti->ndim == 2 && ids && labels && refloss && n == nlab && nloss == 1);
        if (ti && ti->ndim == 2 && ids && labels && refloss && n == nlab) {
            int64_t B = ti->shape[0], T = ti->shape[1];
            float loss = 0.0f;
            CHECK_OK(kd_student_loss_backward(m, ids, labels, B, T, &loss));
            double le = fabs((double)loss - refloss[0]) / fabs((double)refloss[0]);
            printf("%s loss: %.8f vs ref %.8f, rel %.3g\n", fx, loss, refloss[0], le);
            CHECK(le <= 1e-5);

            double gworst = 0.0;
            size_t np = kd_student_param_count(m);
            for (size_t i = 0; i < np; i++) {
                const char *name = kd_student_param_name(m, i);
                char key[256];
                snprintf(key, sizeof key, "grad.%s", name);
                size_t rn = 0, gn = 0;
                float *ref = copy_(rt, key, KD_F32, &rn), *g = NULL;
                CHECK_OK(kd_student_tensor(m, name, 1, &g, &gn));
                if (!ref || !g || rn != gn) {
                    FAIL_("%s: gradient '%s' missing or of the wrong size", fx, name);
                    free(ref);
                    continue;
                }
                double e = rel_err_(g, ref, gn);
                printf("%s grad %-48s rel %.3g\n", fx, name, e);
                if (!(e <= 1e-4))
                    FAIL_("%s: gradient '%s' rel %.3g > 1e-4", fx, name, e);
                if (e > gworst)
                    gworst = e;
                free(ref);
            }
            printf("%s grads: worst rel %.3g over %zu tensors\n", fx, gworst, np);

            const kd_adamw hp = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                                 .weight_decay = 0.1};
            CHECK_OK(kd_student_adamw_step(m, &hp, 0));
            double pworst = 0.0;
            for (size_t i = 0; i < np; i++) {
                const char *name = kd_student_param_name(m, i);
                char key[256];
                snprintf(key, sizeof key, "after_adamw.%s", name);
                size_t rn = 0, pn = 0;
                float *ref = copy_(rt, key, KD_F32, &rn), *p = NULL;
                CHECK_OK(kd_student_tensor(m, name, 0, &p, &pn));
                if (!ref || !p || rn != pn) {
                    FAIL_("%s: after_adamw '%s' missing or of the wrong size", fx, name);
                    free(ref);
                    continue;
                }
                double e = rel_err_(p, ref, pn);
                /* End to end (our gradients, then our step). Not a failure:
                 * at step 1 the update is lr * g / (|g| + eps), so elements
                 * whose reference gradient is ~eps (1e-8) amplify gradient
                 * noise far below the 1e-4 gradient tolerance (seen in
                 * tiny-qwen2 layer 1 k_proj.bias, g = 2e-9). The strict 1e-5
                 * check of the optimizer is adamw_from_ref_grads_ below. */
                printf("%s adamw %-47s rel %.3g%s\n", fx, name, e,
                       e <= 1e-5 ? "" : "  (WARN > 1e-5: ill-conditioned, see comment)");
                if (e > pworst)
                    pworst = e;
                free(ref);
            }
            printf("%s adamw (own grads): worst rel %.3g\n", fx, pworst);
        }
        free(ids);
        free(labels);
        free(refloss);
        kd_st_free(rt);
    }
    kd_student_free(m);
}

/* One AdamW step from the reference gradients: every parameter vs
 * after_adamw, rel <= 1e-5. This tests the optimizer alone. */
static void adamw_from_ref_grads_(const char *fx)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/%s", KD_TEST_FIXTURES, fx);
    snprintf(path, sizeof path, "%s/ref_train.safetensors", dir);
    kd_student *m = NULL;
    kd_st *rt = NULL;
    CHECK_OK(kd_student_load(dir, &m));
    CHECK_OK(kd_st_open(path, &rt));
    if (!m || !rt) {
        kd_student_free(m);
        kd_st_free(rt);
        return;
    }
    size_t np = kd_student_param_count(m);
    for (size_t i = 0; i < np; i++) {
        char key[256];
        snprintf(key, sizeof key, "grad.%s", kd_student_param_name(m, i));
        size_t rn = 0, gn = 0;
        float *ref = copy_(rt, key, KD_F32, &rn), *g = NULL;
        CHECK_OK(kd_student_tensor(m, kd_student_param_name(m, i), 1, &g, &gn));
        CHECK(ref && g && rn == gn);
        if (ref && g && rn == gn)
            memcpy(g, ref, gn * sizeof(float));
        free(ref);
    }
    const kd_adamw hp = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    CHECK_OK(kd_student_adamw_step(m, &hp, 0));
    double worst = 0.0;
    for (size_t i = 0; i < np; i++) {
        const char *name = kd_student_param_name(m, i);
        char key[256];
        snprintf(key, sizeof key, "after_adamw.%s", name);
        size_t rn = 0, pn = 0;
        float *ref = copy_(rt, key, KD_F32, &rn), *p = NULL;
        CHECK_OK(kd_student_tensor(m, name, 0, &p, &pn));
        if (ref && p && rn == pn) {
            double e = rel_err_(p, ref, pn);
            printf("%s adamw(ref grads) %-38s rel %.3g\n", fx, name, e);
            if (!(e <= 1e-5))
                FAIL_("%s: adamw from reference grads '%s' rel %.3g > 1e-5", fx, name, e);
            if (e > worst)
                worst = e;
        } else
            FAIL_("%s: after_adamw '%s' missing", fx, name);
        free(ref);
    }
    printf("%s adamw (reference grads): worst rel %.3g\n", fx, worst);
    kd_st_free(rt);
    kd_student_free(m);
}

TEST(qwen2_adamw) { adamw_from_ref_grads_("tiny-qwen2"); }
TEST(llama3_adamw) { adamw_from_ref_grads_("tiny-llama3"); }

TEST(qwen2) { check_fixture_("tiny-qwen2"); }
TEST(llama3) { check_fixture_("tiny-llama3"); }

TEST(errors)
{
    kd_student *m = NULL;
    CHECK_ERR(kd_student_load(KD_TEST_FIXTURES "/tiny-deepseek-v3", &m), KD_E_UNSUPPORTED,
              "deepseek_v3");
    CHECK(m == NULL);
    CHECK_OK(kd_student_load(KD_TEST_FIXTURES "/tiny-qwen2", &m));
    if (m) {
        int64_t ids[2] = {0, 100000};
        CHECK_ERR(kd_student_forward(m, ids, NULL, 1, 2, NULL), KD_E_RANGE, "outside");
        int64_t ok_ids[3] = {1, 2, 3}, labels[3] = {-100, 7, 512}; /* 512 is past the vocab of 512 */
        float loss = 0;
        CHECK_ERR(kd_student_loss_backward(m, ok_ids, labels, 1, 3, &loss), KD_E_RANGE,
                  "label 512 at row 0, token 2 is outside [0, 512)");
        float *p;
        size_t n;
        CHECK_ERR(kd_student_tensor(m, "lm_head.weight", 0, &p, &n), KD_E_NOTFOUND, "lm_head");
        kd_student_free(m);
    }
}

/* Greedy generation with the KV cache against gen_tokens (identical), and
 * each cached step's logits against the full forward at that position
 * (rel <= 1e-5). EOS ids from generation_config.json are suppressed, as HF
 * generate(min_new_tokens=N) does. */
static void generate_(const char *fx)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/%s", KD_TEST_FIXTURES, fx);
    snprintf(path, sizeof path, "%s/ref_infer.safetensors", dir);
    kd_student *m = NULL;
    kd_st *ri = NULL;
    CHECK_OK(kd_student_load(dir, &m));
    CHECK_OK(kd_st_open(path, &ri));
    size_t P = 0, PN = 0;
    int64_t *prompt = ri ? copy_(ri, "gen_prompt", KD_I64, &P) : NULL;
    int64_t *ref = ri ? copy_(ri, "gen_tokens", KD_I64, &PN) : NULL;
    CHECK(prompt && ref && PN > P && P > 0);
    if (m && prompt && ref && PN > P && P > 0) {
        const int64_t V = kd_student_config(m)->vocab_size, N = (int64_t)(PN - P);
        int64_t eos[16];
        int neos = 0;
        CHECK_OK(kd_generation_eos(dir, eos, 16, &neos));
        int64_t *out = malloc(PN * sizeof(int64_t));
        float *steps = malloc((size_t)(N * V) * sizeof(float));
        float *full = malloc(PN * (size_t)V * sizeof(float));
        CHECK_OK(kd_student_generate_greedy(m, prompt, (int64_t)P, N, eos, neos, out, steps));
        size_t same = 0;
        while (same < PN && out[same] == ref[same])
            same++;
        printf("%s generate: %zu/%zu tokens identical (%d eos suppressed)\n", fx, same, PN, neos);
        CHECK(same == PN);
        CHECK_OK(kd_student_forward(m, ref, NULL, 1, (int64_t)PN, full));
        double worst = 0.0;
        for (int64_t i = 0; i < N; i++) {
            double e = rel_err_(steps + i * V, full + ((int64_t)P - 1 + i) * V, (size_t)V);
            if (e > worst)
                worst = e;
        }
        printf("%s kv cache vs full forward: worst step rel %.3g\n", fx, worst);
        CHECK(worst <= 1e-5);
        /* a cache overflow is a status, not a crash */
        kd_kvcache *kv = NULL;
        CHECK_OK(kd_kvcache_new(m, 2, &kv));
        if (kv) {
            CHECK_ERR(kd_student_extend(m, kv, ref, 3, NULL), KD_E_RANGE, "kv cache");
            CHECK(kd_kvcache_len(kv) == 0);
            kd_kvcache_free(kv);
        }
        free(out);
        free(steps);
        free(full);
    }
    free(prompt);
    free(ref);
    kd_st_free(ri);
    kd_student_free(m);
}

/* The batched step over the paged cache: three samples forked from one
 * prompt (its last block partly filled, so the first write copies it) and a
 * fourth sequence of another length, stepped together with prefill rows and
 * decode rows in one batch; each sequence's logits equal the training
 * forward's over the same tokens alone. A full pool is refused with nothing
 * changed, and every block comes back. */
static void paged_batch_(const char *fx)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", KD_TEST_FIXTURES, fx);
    kd_student *m = NULL;
    CHECK_OK(kd_student_load(dir, &m));
    if (!m)
        return;
    const int64_t V = kd_student_config(m)->vocab_size, P = 10, bs = 4, NB = 16;
    int64_t toks[4][24];
    int64_t len[4] = {P, P, P, 0};
    for (int64_t t = 0; t < P; t++)
        toks[0][t] = toks[1][t] = toks[2][t] = (t * 37 + 11) % V;
    kd_kvpool *pool = NULL;
    CHECK_OK(kd_student_kvpool_new(m, NB, bs, &pool));
    float *lg = malloc((size_t)(8 * V) * sizeof(float)), *ref = malloc((size_t)(24 * V) * sizeof(float));
    if (!pool || !lg || !ref)
        goto out;
    kd_kvseq sq[4] = {{0}};
    kd_kvseq *pa = &sq[0];
    int64_t n = P;
    CHECK_OK(kd_student_step_paged(m, pool, &pa, 1, toks[0], &n, 0, lg));
    CHECK_EQ_INT(kd_kvpool_free_blocks(pool), NB - 3);
    CHECK_OK(kd_kvseq_fork(pool, &sq[0], &sq[1]));
    CHECK_OK(kd_kvseq_fork(pool, &sq[0], &sq[2]));
    CHECK_EQ_INT(kd_kvseq_need(pool, &sq[1], 1), 1); /* the shared last block is copied first */
    double worst = 0.0;
    for (int round = 0; round < 3; round++) {
        /* samples 0-2 take one token; sequence 3 takes 5 (a prefill, then chunks) */
        kd_kvseq *seqs[4] = {&sq[0], &sq[1], &sq[2], &sq[3]};
        int64_t ids[8], nn[4] = {1, 1, 1, 5}, r = 0;
        for (int k = 0; k < 4; k++)
            for (int64_t i = 0; i < nn[k]; i++) {
                int64_t id = (int64_t)(k * 101 + round * 13 + i * 7 + 3) % V;
                toks[k][len[k]++] = id;
                ids[r++] = id;
            }
        CHECK_OK(kd_student_step_paged(m, pool, seqs, 4, ids, nn, 0, lg));
        for (int k = 0; k < 4; k++) {
            CHECK_EQ_INT(sq[k].len, len[k]);
            CHECK_OK(kd_student_forward(m, toks[k], NULL, 1, len[k], ref));
            double e = rel_err_(lg + k * V, ref + (len[k] - 1) * V, (size_t)V);
            worst = e > worst ? e : worst;
        }
    }
    printf("%s paged: 3 forked samples + 1 chunked sequence, 3 batched steps: worst rel %.3g\n", fx, worst);
    CHECK(worst <= 1e-5);
    /* every position's logits (all_logits) of a chunk */
    {
        kd_kvseq *p3 = &sq[3];
        int64_t ids[3] = {5, 6, 7}, n3 = 3;
        memcpy(toks[3] + len[3], ids, sizeof ids);
        len[3] += 3;
        CHECK_OK(kd_student_step_paged(m, pool, &p3, 1, ids, &n3, 1, lg));
        CHECK_OK(kd_student_forward(m, toks[3], NULL, 1, len[3], ref));
        double e = rel_err_(lg, ref + (len[3] - 3) * V, (size_t)(3 * V));
        if (e > 1e-5)
            FAIL_("all_logits: rel %.3g", e);
    }
    /* pool full: refused, nothing changed; a bad id likewise */
    kd_kvseq d = {0};
    kd_kvseq *pd = &d;
    int64_t many[64] = {0}, n64 = 64, bad = V, one = 1;
    int64_t before = kd_kvpool_free_blocks(pool);
    CHECK_ERR(kd_student_step_paged(m, pool, &pd, 1, many, &n64, 0, NULL), KD_E_RANGE, "kv pool full");
    CHECK_ERR(kd_student_step_paged(m, pool, &pd, 1, &bad, &one, 0, NULL), KD_E_RANGE, "outside");
    CHECK_EQ_INT(kd_kvpool_free_blocks(pool), before);
    CHECK_EQ_INT(d.len, 0);
    for (int k = 0; k < 4; k++)
        kd_kvseq_release(pool, &sq[k]);
    CHECK_EQ_INT(kd_kvpool_free_blocks(pool), NB); /* every block back */
out:
    free(lg);
    free(ref);
    kd_kvpool_free(pool);
    kd_student_free(m);
}

TEST(qwen2_paged) { paged_batch_("tiny-qwen2"); }
TEST(llama3_paged) { paged_batch_("tiny-llama3"); }
TEST(qwen2_generate) { generate_("tiny-qwen2"); }
TEST(llama3_generate) { generate_("tiny-llama3"); }

int main(void)
{
    RUN(qwen2);
    RUN(llama3);
    RUN(qwen2_adamw);
    RUN(llama3_adamw);
    RUN(errors);
    RUN(qwen2_generate);
    RUN(llama3_generate);
    RUN(qwen2_paged);
    RUN(llama3_paged);
    return test_summary();
}
