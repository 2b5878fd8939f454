/* parity.c - the teacher under the shared inference checks. See parity.h. */
#include "teacher/parity.h"
#include "teacher/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "student/parity.h"
#include "teacher/cuda.h"
#include "teacher/model.h"

#define TOL_MLA 1e-5 /* absorbed vs decompressed decode: the same math, reassociated */
#define TOL16 3e-2    /* bf16 (the CUDA teacher), as gpu_test_teacher_cuda: the fixtures' routed experts
                         (scaled up to 16x in V2) carry their rounding to 0.013-0.027 */
#define TOL16_MARGIN 2e-2
#define ROUTE_GAP16 2e-2 /* the largest score gap by which a GPU routing choice may lose to the CPU's */

static int cu_logits_(void *g, const int64_t *ids, int64_t T, float *out)
{
    return kd_cu_teacher_logits(g, ids, T, out);
}

static int cu_generate_(void *g, const int64_t *prompt, int64_t P, int64_t N, const int64_t *sup, int nsup,
                        int64_t *out, float *steps)
{
    return kd_cu_teacher_generate_greedy(g, prompt, P, N, sup, nsup, out, steps);
}

/* The CUDA teacher's "logits" check. A near-tie between two experts' scores
 * can go either way in bf16, and one expert changed moves a row by far more
 * than rounding, so the GPU's logits (`ours`, its routes recorded) are held to
 * the CPU teacher's on the same routes (kd_teacher_force_routes), each GPU
 * choice unlike the CPU's own must be a near-tie, and the distance to the
 * reference's logits is printed as information. */
static int cu_logits_check_(const kd_parity_model *pm, const int64_t *ids, int64_t T, const float *ours,
                            const float *hf, FILE *out, int *failed)
{
    kd_teacher *m = pm->ref;
    const int64_t V = pm->vocab, k = kd_teacher_config(m)->num_experts_per_tok;
    const int64_t L = kd_teacher_config(m)->num_layers;
    int32_t *routes = malloc((size_t)(L * T * k) * sizeof *routes);
    float *cpu = malloc((size_t)(T * V) * sizeof *cpu);
    int rc = routes && cpu ? kd_cu_teacher_routes(pm->m, routes, T) : kd_err(KD_E_NOMEM, "parity routes");
    int64_t differ = 0;
    double gap = 0;
    if (!rc) {
        kd_teacher_force_routes(m, routes);
        rc = kd_teacher_logits(m, ids, T, cpu);
        kd_teacher_force_routes(m, NULL);
        kd_teacher_route_stats(m, &differ, &gap);
    }
    if (!rc) {
        double worst = 0;
        int64_t wrow = 0;
        for (int64_t t = 0; t < T; t++) {
            const double e = kd_parity_rel_err(ours + t * V, cpu + t * V, (size_t)V);
            if (!(e <= worst))
                worst = e, wrow = t;
        }
        const double all = kd_parity_rel_err(ours, cpu, (size_t)(T * V));
        const double vs_hf = kd_parity_rel_err(ours, hf, (size_t)(T * V));
        kd_parity_check(out, failed, all <= TOL16 && worst <= TOL16 && gap <= ROUTE_GAP16, "logits",
                        "rel %.2g (tol %.0e), worst row %lld rel %.2g, T=%lld, against the CPU teacher on the GPU's "
                        "routes (%lld token-layer choices unlike the CPU's own, largest gap %.2g, bar %.0e); "
                        "against the reference directly rel %.2g", all, TOL16, (long long)wrow, worst,
                        (long long)T, (long long)differ, gap, ROUTE_GAP16, vs_hf);
    }
    free(routes);
    free(cpu);
    return rc;
}

static int logits_(void *m, const int64_t *ids, int64_t T, float *out)
{
    return kd_teacher_logits(m, ids, T, out);
}

static int generate_(void *m, const int64_t *prompt, int64_t P, int64_t N, const int64_t *sup, int nsup,
                     int64_t *out, float *steps)
{
    return kd_teacher_generate_greedy(m, prompt, P, N, sup, nsup, KD_MLA_ABSORBED, out, steps);
}

/* decode the same tokens both ways from one prefill */
static int check_mla_(kd_teacher *m, const char *file, FILE *out, int *failed)
{
    kd_st *st = NULL;
    KD_TRY(kd_st_open(file, &st));
    const kd_st_tensor *t = kd_st_find(st, "gen_tokens");
    int rc = KD_OK;
    if (!t || t->dtype != KD_I64 || t->numel < 4) {
        kd_st_free(st);
        return kd_err(KD_E_FORMAT, "'%s': no I64 gen_tokens of at least 4 tokens", file);
    }
    const int64_t PN = (int64_t)t->numel, P = PN / 2, V = kd_teacher_config(m)->vocab_size;
    int64_t *ids = malloc((size_t)PN * sizeof *ids);
    float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)V * sizeof *b);
    kd_mla_cache *ca = NULL, *cb = NULL;
    double worst = 0;
    if (!ids || !a || !b)
        rc = kd_err(KD_E_NOMEM, "mla check");
    if (!rc) {
        memcpy(ids, t->data, (size_t)PN * sizeof *ids);
        rc = kd_mla_cache_new(m, PN, &ca);
    }
    if (!rc)
        rc = kd_mla_cache_new(m, PN, &cb);
    if (!rc)
        rc = kd_teacher_extend(m, ca, ids, P, KD_MLA_DECOMPRESSED, 0, a);
    if (!rc)
        rc = kd_teacher_extend(m, cb, ids, P, KD_MLA_DECOMPRESSED, 0, b);
    for (int64_t i = P; !rc && i < PN; i++) {
        rc = kd_teacher_extend(m, ca, ids + i, 1, KD_MLA_DECOMPRESSED, 0, a);
        if (!rc)
            rc = kd_teacher_extend(m, cb, ids + i, 1, KD_MLA_ABSORBED, 0, b);
        double e = rc ? 0 : kd_parity_rel_err(b, a, (size_t)V);
        if (!(e <= worst))
            worst = e;
    }
    if (!rc) {
        int ok = worst <= TOL_MLA;
        fprintf(out, "%-4s %-8s rel %.2g (tol %.0e), absorbed vs decompressed decode, worst of %lld steps\n",
                ok ? "ok" : "FAIL", "mla", worst, TOL_MLA, (long long)(PN - P));
        *failed += !ok;
    }
    kd_mla_cache_free(ca);
    kd_mla_cache_free(cb);
    free(ids);
    free(a);
    free(b);
    kd_st_free(st);
    return rc;
}

int kd_teacher_parity_run(const char *dir, int cuda, FILE *out, int *failed)
{
    *failed = 0;
    char infer[4200], train[4200];
    struct stat sb;
    snprintf(infer, sizeof infer, "%s/ref_infer.safetensors", dir);
    snprintf(train, sizeof train, "%s/ref_train.safetensors", dir);
    if (stat(infer, &sb) != 0)
        return kd_err(KD_E_NOTFOUND, "'%s' holds no ref_infer.safetensors", dir);
    kd_teacher *m = NULL;
    KD_TRY(kd_teacher_load(dir, &m));
    const kd_model_config *c = kd_teacher_config(m);
    fprintf(out, "info model    %s, %lld layers, hidden %lld, vocab %lld, %lld experts (top %lld), "
                 "q_lora %lld, kv_lora %lld, rope %s, softmax scale %.6g, device %s\n",
            c->model_type, (long long)c->num_layers, (long long)c->hidden_size, (long long)c->vocab_size,
            (long long)c->n_routed_experts, (long long)c->num_experts_per_tok, (long long)c->q_lora_rank,
            (long long)c->kv_lora_rank, c->rope.type == KD_ROPE_YARN ? "yarn" : "default",
            (double)kd_teacher_softmax_scale(m), cuda ? "cuda (bf16)" : "cpu");
    kd_parity_model pm = {m, c->vocab_size, logits_, generate_};
    kd_cu_teacher *g = NULL;
    int rc = KD_OK;
    if (cuda) { /* the CUDA teacher, the CPU one as the reference for greedy margins */
        kd_cu_teacher_opts o = {.device = 0, .max_tokens = 4096, .max_seqs = 8, .kv_blocks = 1024,
                                .record_routes = 1};
        rc = kd_cu_teacher_new(m, &o, &g);
        pm = (kd_parity_model){g, c->vocab_size, cu_logits_, cu_generate_, TOL16, TOL16_MARGIN, 1, m, logits_,
                               cu_logits_check_,
                               "cached decode steps are checked against the CPU teacher on the GPU's routes by "
                               "gpu_test_teacher_cuda (here the two GPU paths could route a near-tie apart)"};
    }
    if (!rc)
        rc = kd_parity_check_infer(&pm, dir, infer, out, failed);
    if (!rc && !cuda)
        rc = check_mla_(m, infer, out, failed);
    kd_cu_teacher_free(g);
    kd_teacher_free(m);
    if (!rc && cuda)
        fprintf(out, "skip train    the teacher trains on the CPU only\n");
    else if (!rc && stat(train, &sb) == 0)
        rc = kd_teacher_parity_train(dir, out, failed);
    return rc;
}
