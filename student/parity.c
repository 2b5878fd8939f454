/* parity.c - the student against a HF reference fixture (FIXTURES.md).
 *
 * Each check prints one line: "ok  " or "FAIL", its name, the measured error
 * and the tolerance. Tolerances are FIXTURES.md's, CPU fp32 path.
 */
#include "student/parity.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/device.h"
#include "core/dtype.h"
#include "core/hfconfig.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "student/cuda.h"
#include "student/model.h"

#define TOL_LOGITS 1e-4
#define TOL_LOSS 1e-5
#define TOL_GRAD 1e-4
#define TOL_ADAMW 1e-5
#define TOL_KVCACHE 1e-5 /* cached decode vs full forward: same ops, rounding only */
/* the CUDA student, bf16 (FIXTURES.md); its AdamW is fp32 like the CPU's */
#define TOL16 2e-2
#define TOL16_ADAMW 1e-4
#define TOL16_MARGIN 2e-2

double kd_parity_rel_err(const float *out, const float *ref, size_t n)
{
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)out[i] - ref[i];
        d += e * e;
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

int kd_parity_check(FILE *out, int *failed, int ok, const char *name, const char *fmt, ...)
{
    va_list ap;
    fprintf(out, "%-4s %-8s ", ok ? "ok" : "FAIL", name);
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
    if (!ok)
        (*failed)++;
    return ok;
}

/* the fixture tensor `name`, which must be dtype dt with numel elements
 * (numel 0: any count, written to *got) */
static int ref_(const kd_st *st, const char *file, const char *name, kd_dtype dt, size_t numel,
                const kd_st_tensor **t)
{
    *t = kd_st_find(st, name);
    if (!*t)
        return kd_err(KD_E_NOTFOUND, "'%s' has no tensor '%s'", file, name);
    if ((*t)->dtype != dt)
        return kd_err(KD_E_DTYPE, "'%s': tensor '%s' is %s, expected %s", file, name,
                      kd_dtype_name((*t)->dtype), kd_dtype_name(dt));
    if (numel && (*t)->numel != numel)
        return kd_err(KD_E_SHAPE, "'%s': tensor '%s' has %llu elements, expected %zu", file, name,
                      (unsigned long long)(*t)->numel, numel);
    return KD_OK;
}

/* a copy of an I64 tensor (the mapping may be unaligned for int64) */
static int64_t *ids_copy_(const kd_st_tensor *t)
{
    int64_t *p = malloc(t->numel ? t->numel * sizeof(int64_t) : 1);
    if (p)
        memcpy(p, t->data, t->numel * sizeof(int64_t));
    return p;
}
static float *f32_copy_(const kd_st_tensor *t)
{
    float *p = malloc(t->numel ? t->numel * sizeof(float) : 1);
    if (p)
        memcpy(p, t->data, t->numel * sizeof(float));
    return p;
}

/* The relative error of the student's parameter (grad = 0) or gradient
 * (grad = 1) `name` against the reference tensor "<prefix><name>". */
static int param_vs_ref_(kd_student *m, const kd_st *st, const char *file, const char *prefix,
                         const char *name, int grad, double *err)
{
    char key[512];
    float *ours;
    size_t n;
    const kd_st_tensor *t;
    snprintf(key, sizeof key, "%s%s", prefix, name);
    KD_TRY(kd_student_tensor(m, name, grad, &ours, &n));
    KD_TRY(ref_(st, file, key, KD_F32, n, &t));
    float *r = f32_copy_(t); /* the mapping is not guaranteed to be float-aligned */
    if (!r)
        return kd_err(KD_E_NOMEM, "%s", key);
    *err = kd_parity_rel_err(ours, r, n);
    free(r);
    return KD_OK;
}

/* ---- ref_infer: logits, greedy generation, kv cache --------------------------- */

int kd_parity_check_infer(const kd_parity_model *pm, const char *dir, const char *file, FILE *out,
                          int *failed)
{
    const int64_t V = pm->vocab;
    kd_st *st = NULL;
    KD_TRY(kd_st_open(file, &st));
    const kd_st_tensor *ti, *tl, *tp, *tg;
    int64_t *ids = NULL, *prompt = NULL, *gen = NULL, *mine = NULL, eos[16];
    float *ref = NULL, *logits = NULL, *steps = NULL, *full = NULL;
    int neos = 0, rc;
    if ((rc = ref_(st, file, "input_ids", KD_I64, 0, &ti)) ||
        (rc = ref_(st, file, "logits", KD_F32, ti->numel * (size_t)V, &tl)) ||
        (rc = ref_(st, file, "gen_prompt", KD_I64, 0, &tp)) ||
        (rc = ref_(st, file, "gen_tokens", KD_I64, 0, &tg)))
        goto done;
    const size_t T = ti->numel, P = tp->numel, PN = tg->numel;
    if (!T || !P || PN <= P) {
        rc = kd_err(KD_E_SHAPE, "'%s': %zu input ids, %zu prompt and %zu generated tokens", file, T,
                    P, PN);
        goto done;
    }
    const int64_t N = (int64_t)(PN - P);
    ids = ids_copy_(ti);
    ref = f32_copy_(tl);
    prompt = ids_copy_(tp);
    gen = ids_copy_(tg);
    mine = malloc(PN * sizeof(int64_t));
    logits = malloc(T * (size_t)V * sizeof(float));
    steps = malloc((size_t)(N * V) * sizeof(float));
    full = malloc(PN * (size_t)V * sizeof(float));
    if (!ids || !ref || !prompt || !gen || !mine || !logits || !steps || !full) {
        rc = kd_err(KD_E_NOMEM, "parity buffers for '%s'", file);
        goto done;
    }

    /* logits: overall and per row */
    if ((rc = pm->logits(pm->m, ids, (int64_t)T, logits)))
        goto done;
    if (pm->logits_check) {
        if ((rc = pm->logits_check(pm, ids, (int64_t)T, logits, ref, out, failed)))
            goto done;
    } else {
        double all = kd_parity_rel_err(logits, ref, T * (size_t)V), worst = 0.0;
        size_t wrow = 0;
        for (size_t t = 0; t < T; t++) {
            double e = kd_parity_rel_err(logits + t * V, ref + t * V, (size_t)V);
            if (!(e <= worst))
                worst = e, wrow = t;
        }
        const double tol = pm->tol_logits > 0 ? pm->tol_logits : TOL_LOGITS;
        kd_parity_check(out, failed, all <= tol && worst <= tol, "logits",
               "rel %.2g (tol %.0e), worst row %zu rel %.2g, T=%zu", all, tol, wrow, worst, T);
    }

    /* greedy generation, EOS suppressed as generate(min_new_tokens=N) */
    if ((rc = kd_generation_eos(dir, eos, 16, &neos)))
        goto done;
    int pok = !memcmp(prompt, gen, P * sizeof(int64_t));
    if ((rc = pm->generate(pm->m, prompt, (int64_t)P, N, eos, neos, mine, steps)))
        goto done;
    size_t same = 0;
    while (same < PN && mine[same] == gen[same])
        same++;
    if (!pok)
        kd_parity_check(out, failed, 0, "generate", "gen_tokens does not start with gen_prompt");
    else if (same == PN)
        kd_parity_check(out, failed, 1, "generate", "%lld/%lld new tokens identical (%d eos suppressed)",
               (long long)N, (long long)N, neos);
    else if (pm->ref_logits && same < P) {
        kd_parity_check(out, failed, 0, "generate", "the prompt was not kept (position %zu)", same);
    } else if (pm->ref_logits && gen[same] >= 0 && gen[same] < V) {
        /* a bf16 backend: tolerated where the reference's top-2 logits are within bf16 rounding */
        float *rl = malloc(PN * (size_t)V * sizeof(float));
        if (!rl) {
            rc = kd_err(KD_E_NOMEM, "parity buffers for '%s'", file);
            goto done;
        }
        if ((rc = pm->ref_logits(pm->ref, gen, (int64_t)same, rl))) {
            free(rl);
            goto done;
        }
        const float *row = rl + (same - 1) * V;
        double a = row[gen[same]], b = row[mine[same]], mag = fmax(1.0, fmax(fabs(a), fabs(b)));
        int ok = fabs(a - b) <= pm->tol_margin * mag;
        kd_parity_check(out, failed, ok, "generate",
               "%zu/%lld new tokens identical, then position %zu: got %lld, want %lld; the CPU reference's "
               "logits there %.6g vs %.6g, margin %.3g (%s bf16 rounding, tol %.0e of %.3g)", same - P,
               (long long)N, same, (long long)mine[same], (long long)gen[same], b, a, fabs(a - b),
               ok ? "within" : "beyond", pm->tol_margin, mag);
        free(rl);
    } else {
        /* the reference's margin at the first mismatch: top-1 minus top-2 of our logits there */
        const float *row = steps + (same - P) * V;
        kd_parity_check(out, failed, 0, "generate",
               "first mismatch at position %zu: got %lld, want %lld (logit %.6g vs %.6g)", same,
               (long long)mine[same], (long long)gen[same], row[mine[same]],
               gen[same] >= 0 && gen[same] < V ? row[gen[same]] : NAN);
    }

    /* kv cache: each decode step's logits against the full forward over gen_tokens */
    if (pm->no_kvcache)
        fprintf(out, "skip kvcache  %s\n",
                pm->no_kvcache_why ? pm->no_kvcache_why : "this backend generates by full forwards (no KV cache)");
    else if (pok && same == PN) {
        if ((rc = pm->logits(pm->m, gen, (int64_t)PN, full)))
            goto done;
        double kw = 0.0;
        for (int64_t i = 0; i < N; i++) {
            double e = kd_parity_rel_err(steps + i * V, full + ((int64_t)P - 1 + i) * V, (size_t)V);
            if (!(e <= kw))
                kw = e;
        }
        kd_parity_check(out, failed, kw <= TOL_KVCACHE, "kvcache",
               "rel %.2g (tol %.0e), cached steps vs full forward, worst of %lld", kw, TOL_KVCACHE,
               (long long)N);
    }
done:
    free(ids);
    free(ref);
    free(prompt);
    free(gen);
    free(mine);
    free(logits);
    free(steps);
    free(full);
    kd_st_free(st);
    return rc;
}

/* the student as a parity model */
static int student_logits_(void *m, const int64_t *ids, int64_t T, float *out)
{
    return kd_student_forward(m, ids, NULL, 1, T, out);
}
static int student_generate_(void *m, const int64_t *prompt, int64_t P, int64_t N, const int64_t *sup,
                             int nsup, int64_t *out, float *steps)
{
    return kd_student_generate_greedy(m, prompt, P, N, sup, nsup, out, steps);
}

/* ---- ref_train: loss, gradients, AdamW ---------------------------------------- */

/* FIXTURES.md's hyperparameters, overridden by the fixture's metadata when it
 * records them ("adamw.lr", "adamw.beta1", "adamw.beta2", "adamw.eps",
 * "adamw.weight_decay", or the same keys without the prefix). */
int kd_parity_adamw_hp(const kd_st *st, kd_adamw *hp)
{
    *hp = (kd_adamw){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    static const char *const keys[] = {"lr", "beta1", "beta2", "eps", "weight_decay"};
    double *dst[] = {&hp->lr, &hp->beta1, &hp->beta2, &hp->eps, &hp->weight_decay};
    int found = 0;
    for (int i = 0; i < 5; i++) {
        char k[64];
        snprintf(k, sizeof k, "adamw.%s", keys[i]);
        const char *v = kd_st_metadata(st, k);
        if (!v)
            v = kd_st_metadata(st, keys[i]);
        if (v) {
            char *end;
            double d = strtod(v, &end);
            if (end == v || *end)
                return kd_err(KD_E_FORMAT, "metadata '%s' = '%s' is not a number", k, v);
            *dst[i] = d;
            found++;
        }
    }
    return found;
}

/* Every gradient of the student against the fixture's "grad.<name>", one
 * line each under `check`. On the CPU the tolerance is relative. In bf16 a
 * gradient that cancels to a small fraction of the whole (the k_proj bias:
 * adding the same vector to every key leaves a softmax unchanged, so only
 * rope keeps its gradient from being 0) is held to the error the relative
 * tolerance allows a tensor at CANCEL of the global gradient norm, and its
 * line says so. */
#define CANCEL 1e-2
static int grads_vs_ref_(kd_student *m, const kd_st *st, const char *file, const char *check, double tol, int cuda,
                         FILE *out, int *failed)
{
    const size_t np = kd_student_param_count(m);
    double global = 0;
    for (size_t i = 0; i < np; i++) {
        char key[512];
        const kd_st_tensor *t;
        snprintf(key, sizeof key, "grad.%s", kd_student_param_name(m, i));
        KD_TRY(ref_(st, file, key, KD_F32, 0, &t));
        float *r = f32_copy_(t);
        if (!r)
            return kd_err(KD_E_NOMEM, "%s", key);
        for (size_t j = 0; j < t->numel; j++)
            global += (double)r[j] * r[j];
        free(r);
    }
    global = sqrt(global);
    for (size_t i = 0; i < np; i++) {
        const char *name = kd_student_param_name(m, i);
        char key[512];
        const kd_st_tensor *t;
        double e;
        KD_TRY(param_vs_ref_(m, st, file, "grad.", name, 1, &e));
        snprintf(key, sizeof key, "grad.%s", name);
        KD_TRY(ref_(st, file, key, KD_F32, 0, &t));
        float *r = f32_copy_(t);
        if (!r)
            return kd_err(KD_E_NOMEM, "%s", key);
        double rn = 0;
        for (size_t j = 0; j < t->numel; j++)
            rn += (double)r[j] * r[j];
        rn = sqrt(rn);
        free(r);
        if (cuda && rn < CANCEL * global && e > tol) {
            const double abs_err = e * rn, allowed = tol * CANCEL * global;
            kd_parity_check(out, failed, abs_err <= allowed, check,
                            "grad rel %.2g of a tensor that cancels to %.2g%% of the gradient norm: abs %.2g "
                            "(tol %.2g = %.0e x %.0e x norm %.3g) %s",
                            e, 100 * rn / global, abs_err, allowed, tol, CANCEL, global, name);
        } else {
            kd_parity_check(out, failed, e <= tol, check, "grad rel %.2g (tol %.0e) %s", e, tol, name);
        }
    }
    return KD_OK;
}

/* ---- the CUDA student under the same checks ------------------------------------
 * It starts from a loaded CPU model's weights, and its results are copied back
 * into that model's buffers, so that every comparison below is shared. */
static int host_w_(void *m, const char *name, float **data, size_t *numel)
{
    return kd_student_tensor(m, name, 0, data, numel);
}

static int gpu_new_(kd_student *m, kd_cu_student **g)
{
    const kd_model_config *c = kd_student_config(m);
    kd_cu_student_opts o = {.device = 0, .max_tokens = 8192, .max_T = 2048};
    return kd_cu_student_new(c, host_w_, m, &o, g);
}

/* The CUDA student's weights (which 0) or gradients (1) into m's. */
static int gpu_pull_(kd_cu_student *g, kd_student *m, int which)
{
    for (size_t i = 0; i < kd_student_param_count(m); i++) {
        const char *name = kd_student_param_name(m, i);
        float *d;
        size_t n;
        KD_TRY(kd_student_tensor(m, name, which, &d, &n));
        KD_TRY(kd_cu_student_get(g, name, which, d, n));
    }
    return KD_OK;
}

/* The loss sum of one micro-batch on the GPU (gradients zeroed first when
 * fresh), its gradients pulled into m. */
static int gpu_backward_(kd_cu_student *g, kd_student *m, const int64_t *ids, const int64_t *labels,
                         const int64_t *pos, int64_t B, int64_t T, double scale, int fresh, double *sum)
{
    if (fresh)
        KD_TRY(kd_cu_student_zero_grad(g));
    KD_TRY(kd_cu_student_backward(g, ids, labels, pos, B, T, scale));
    KD_TRY(kd_cu_student_read(g, sum, NULL));
    return gpu_pull_(g, m, 1);
}

/* the CUDA student as a parity model */
typedef struct gpu_pm_ {
    kd_cu_student *g;
    int64_t V;
} gpu_pm_;

static int gpu_logits_(void *pm, const int64_t *ids, int64_t T, float *out)
{
    return kd_cu_student_logits(((gpu_pm_ *)pm)->g, ids, NULL, 1, T, out);
}

/* Greedy decoding by a full forward per token (the training backend keeps no
 * KV cache), the EOS ids suppressed as generate(min_new_tokens=N); steps
 * (N, V) receives each step's logits. */
static int gpu_generate_(void *pm, const int64_t *prompt, int64_t P, int64_t N, const int64_t *sup, int nsup,
                         int64_t *out, float *steps)
{
    const int64_t V = ((gpu_pm_ *)pm)->V;
    float *all = malloc((size_t)(P + N) * (size_t)V * sizeof(float));
    if (!all)
        return kd_err(KD_E_NOMEM, "parity generation");
    memcpy(out, prompt, (size_t)P * sizeof *out);
    int rc = KD_OK;
    for (int64_t i = 0; i < N && rc == KD_OK; i++) {
        if ((rc = gpu_logits_(pm, out, P + i, all)))
            break;
        float *row = steps + i * V;
        memcpy(row, all + (P + i - 1) * V, (size_t)V * sizeof(float));
        int64_t best = -1;
        for (int64_t v = 0; v < V; v++) {
            int banned = 0;
            for (int k = 0; k < nsup; k++)
                banned |= sup[k] == v;
            if (!banned && (best < 0 || row[v] > row[best]))
                best = v;
        }
        out[P + i] = best;
    }
    free(all);
    return rc;
}

/* A fresh model of `dir` whose gradients are the fixture's "grad.<name>"
 * tensors, clipped to clip_norm as clip_grad_norm_ when clip_norm > 0, after
 * one AdamW step with hp: the optimizer checked alone, on the reference
 * gradients. *out is freed by the caller. */
static int step_on_ref_grads_(const char *dir, const kd_st *st, const char *file, const kd_adamw *hp,
                              double clip_norm, int cuda, kd_student **out)
{
    char key[512];
    const kd_st_tensor *t;
    kd_student *m = NULL;
    KD_TRY(kd_student_load(dir, &m));
    int rc = KD_OK;
    for (size_t i = 0; i < kd_student_param_count(m) && rc == KD_OK; i++) {
        const char *name = kd_student_param_name(m, i);
        float *g;
        size_t n;
        snprintf(key, sizeof key, "grad.%s", name);
        if ((rc = kd_student_tensor(m, name, 1, &g, &n)) == KD_OK &&
            (rc = ref_(st, file, key, KD_F32, n, &t)) == KD_OK)
            memcpy(g, t->data, n * sizeof(float));
    }
    if (rc == KD_OK && cuda) { /* the same on the GPU: its norm, clip and update */
        kd_cu_student *g = NULL;
        if ((rc = gpu_new_(m, &g)) == KD_OK)
            rc = kd_cu_student_zero_grad(g);
        for (size_t i = 0; i < kd_student_param_count(m) && rc == KD_OK; i++) {
            const char *name = kd_student_param_name(m, i);
            float *gr;
            size_t n;
            if ((rc = kd_student_tensor(m, name, 1, &gr, &n)) == KD_OK)
                rc = kd_cu_student_set(g, name, 1, gr, n);
        }
        if (rc == KD_OK)
            rc = kd_cu_student_adamw(g, hp, 0, clip_norm);
        if (rc == KD_OK)
            rc = gpu_pull_(g, m, 0);
        kd_cu_student_free(g);
        if (rc) {
            kd_student_free(m);
            return rc;
        }
        *out = m;
        return KD_OK;
    }
    if (rc == KD_OK && clip_norm > 0) {
        double norm = kd_student_grad_norm(m);
        if (norm > clip_norm)
            kd_student_scale_grads(m, (float)(clip_norm / (norm + 1e-6)));
    }
    if (rc == KD_OK)
        rc = kd_student_adamw_step(m, hp, 0);
    if (rc) {
        kd_student_free(m);
        return rc;
    }
    *out = m;
    return KD_OK;
}

/* The batch of a training reference file: input_ids and labels [B, T], the
 * position_ids when asked (packed rows), and the reference loss. */
typedef struct ref_batch_ {
    int64_t *ids, *labels, *pos;
    int64_t B, T;
    float loss;
} ref_batch_;

static void ref_batch_free_(ref_batch_ *b)
{
    free(b->ids);
    free(b->labels);
    free(b->pos);
    memset(b, 0, sizeof *b);
}

static int ref_batch_load_(const kd_st *st, const char *file, int with_pos, ref_batch_ *b)
{
    const kd_st_tensor *ti, *tl, *tp = NULL, *tloss;
    memset(b, 0, sizeof *b);
    KD_TRY(ref_(st, file, "input_ids", KD_I64, 0, &ti));
    KD_TRY(ref_(st, file, "labels", KD_I64, ti->numel, &tl));
    if (with_pos)
        KD_TRY(ref_(st, file, "position_ids", KD_I64, ti->numel, &tp));
    KD_TRY(ref_(st, file, "loss", KD_F32, 1, &tloss));
    if (ti->ndim != 2)
        return kd_err(KD_E_SHAPE, "'%s': input_ids has %d dims, expected [B, T]", file, ti->ndim);
    b->B = ti->shape[0];
    b->T = ti->shape[1];
    memcpy(&b->loss, tloss->data, sizeof b->loss);
    b->ids = ids_copy_(ti);
    b->labels = ids_copy_(tl);
    b->pos = tp ? ids_copy_(tp) : NULL;
    if (!b->ids || !b->labels || (tp && !b->pos)) {
        ref_batch_free_(b);
        return kd_err(KD_E_NOMEM, "'%s': the batch", file);
    }
    return KD_OK;
}

static int check_train_(const char *dir, const char *file, int cuda, FILE *out, int *failed)
{
    const double tol_loss = cuda ? TOL16 : TOL_LOSS, tol_grad = cuda ? TOL16 : TOL_GRAD;
    const double tol_adamw = cuda ? TOL16_ADAMW : TOL_ADAMW;
    kd_cu_student *g = NULL;
    kd_st *st = NULL;
    kd_student *m = NULL, *m2 = NULL;
    ref_batch_ rb = {0};
    int rc;
    KD_TRY(kd_st_open(file, &st));
    if ((rc = ref_batch_load_(st, file, 0, &rb)))
        goto done;
    kd_adamw hp;
    int found = kd_parity_adamw_hp(st, &hp);
    if (found < 0) {
        rc = found;
        goto done;
    }
    fprintf(out, "info adamw    lr %g betas (%g, %g) eps %g weight_decay %g (%s)\n", hp.lr, hp.beta1,
            hp.beta2, hp.eps, hp.weight_decay, found ? "from the fixture" : "FIXTURES.md defaults");
    if ((rc = kd_student_load(dir, &m)))
        goto done;
    float rl = rb.loss, loss;
    if (cuda) {
        const int64_t n = kd_student_count_targets(rb.labels, NULL, rb.B, rb.T);
        double sum = 0;
        if ((rc = gpu_new_(m, &g)) ||
            (rc = gpu_backward_(g, m, rb.ids, rb.labels, NULL, rb.B, rb.T, n ? 1.0 / (double)n : 0.0, 1, &sum)))
            goto done;
        loss = n ? (float)(sum / (double)n) : 0.0f;
    } else if ((rc = kd_student_loss_backward(m, rb.ids, rb.labels, rb.B, rb.T, &loss)))
        goto done;
    double le = fabs((double)loss - rl) / fabs((double)rl);
    kd_parity_check(out, failed, le <= tol_loss, "loss", "rel %.2g (tol %.0e), %.8g vs ref %.8g", le, tol_loss,
           loss, rl);

    const size_t np = kd_student_param_count(m);
    if ((rc = grads_vs_ref_(m, st, file, "grad", tol_grad, cuda, out, failed)))
        goto done;

    /* end to end: our gradients, then our step (information only) */
    if (cuda ? (rc = kd_cu_student_adamw(g, &hp, 0, 0)) || (rc = gpu_pull_(g, m, 0))
             : (rc = kd_student_adamw_step(m, &hp, 0)))
        goto done;
    double e2e = 0.0;
    const char *e2e_name = "";
    for (size_t i = 0; i < np; i++) {
        const char *name = kd_student_param_name(m, i);
        double e;
        if ((rc = param_vs_ref_(m, st, file, "after_adamw.", name, 0, &e)))
            goto done;
        if (!(e <= e2e))
            e2e = e, e2e_name = name;
    }

    /* strict: the step applied to the reference gradients */
    if ((rc = step_on_ref_grads_(dir, st, file, &hp, 0, cuda, &m2)))
        goto done;
    for (size_t i = 0; i < np; i++) {
        const char *name = kd_student_param_name(m2, i);
        double e;
        if ((rc = param_vs_ref_(m2, st, file, "after_adamw.", name, 0, &e)))
            goto done;
        kd_parity_check(out, failed, e <= tol_adamw, "adamw", "rel %.2g (tol %.0e) %s (step on reference grads)",
               e, tol_adamw, name);
    }
    fprintf(out, "info adamw-e2e worst rel %.2g (%s): our grads then our step, not checked; at step 1 "
                 "the update is lr*g/(|g|+eps), so elements with |g| near eps amplify gradient "
                 "differences far below the gradient tolerance\n",
            e2e, e2e_name);
done:
    kd_cu_student_free(g);
    ref_batch_free_(&rb);
    kd_student_free(m);
    kd_student_free(m2);
    kd_st_free(st);
    return rc;
}

/* ---- ref_packed: one row of several documents ----------------------------------
 * The reference ran each document alone and normalised the summed token losses
 * by the targets of all of them; the packed row (position_ids restarting at 0)
 * must give the same loss and gradients. */
static int check_packed_(const char *dir, const char *file, int cuda, FILE *out, int *failed)
{
    const double tol_loss = cuda ? TOL16 : TOL_LOSS, tol_grad = cuda ? TOL16 : TOL_GRAD;
    kd_cu_student *g = NULL;
    kd_st *st = NULL;
    kd_student *m = NULL;
    ref_batch_ rb = {0};
    int rc;
    KD_TRY(kd_st_open(file, &st));
    if ((rc = ref_batch_load_(st, file, 1, &rb)) || (rc = kd_student_load(dir, &m)))
        goto done;
    const int64_t *ids = rb.ids, *labels = rb.labels, *pos = rb.pos, B = rb.B, T = rb.T;
    const int64_t n = kd_student_count_targets(labels, pos, B, T);
    double sum = 0;
    kd_student_zero_grad(m);
    if (cuda ? (rc = gpu_new_(m, &g)) || (rc = gpu_backward_(g, m, ids, labels, pos, B, T, n ? 1.0 / (double)n : 0.0,
                                                             1, &sum))
             : (rc = kd_student_backward(m, ids, labels, pos, B, T, n ? 1.0 / (double)n : 0.0, &sum, NULL)))
        goto done;
    const float rl = rb.loss;
    const double loss = n ? sum / (double)n : 0.0, le = fabs(loss - rl) / fabs((double)rl);
    const char *docs = kd_st_metadata(st, "doc_lengths");
    kd_parity_check(out, failed, le <= tol_loss, "packed", "loss rel %.2g (tol %.0e), %.8g vs ref %.8g "
           "(documents %s, %lld targets)", le, tol_loss, loss, rl, docs ? docs : "?", (long long)n);
    if ((rc = grads_vs_ref_(m, st, file, "packed", tol_grad, cuda, out, failed)))
        goto done;
done:
    kd_cu_student_free(g);
    ref_batch_free_(&rb);
    kd_student_free(m);
    kd_st_free(st);
    return rc;
}

/* ---- ref_accum: gradient accumulation, clipping -----------------------------------
 * The reference is one batch of B rows; we run it as micro-batches of one row
 * each, scaled by the targets of the whole batch, and compare the loss, the
 * gradients, the global gradient norm, and the AdamW step without and with
 * clipping (the latter applied to the reference gradients, strictly). */
static int check_accum_(const char *dir, const char *file, int cuda, FILE *out, int *failed)
{
    const double tol_loss = cuda ? TOL16 : TOL_LOSS, tol_grad = cuda ? TOL16 : TOL_GRAD;
    const double tol_adamw = cuda ? TOL16_ADAMW : TOL_ADAMW;
    kd_cu_student *g = NULL;
    kd_st *st = NULL;
    kd_student *m = NULL, *m2 = NULL;
    ref_batch_ rb = {0};
    int rc;
    KD_TRY(kd_st_open(file, &st));
    if ((rc = ref_batch_load_(st, file, 0, &rb)))
        goto done;
    kd_adamw hp;
    if ((rc = kd_parity_adamw_hp(st, &hp)) < 0)
        goto done;
    if ((rc = kd_student_load(dir, &m)))
        goto done;
    const int64_t *ids = rb.ids, *labels = rb.labels, B = rb.B, T = rb.T;
    const int64_t n = kd_student_count_targets(labels, NULL, B, T);
    double sum = 0, s;
    kd_student_zero_grad(m);
    if (cuda && (rc = gpu_new_(m, &g)))
        goto done;
    for (int64_t b = 0; b < B; b++) { /* one row per micro-batch */
        if (cuda) { /* the loss sum accumulates on the GPU: the last read is the whole */
            if ((rc = gpu_backward_(g, m, ids + b * T, labels + b * T, NULL, 1, T, n ? 1.0 / (double)n : 0.0,
                                    b == 0, &s)))
                goto done;
            sum = s;
            continue;
        }
        if ((rc = kd_student_backward(m, ids + b * T, labels + b * T, NULL, 1, T,
                                      n ? 1.0 / (double)n : 0.0, &s, NULL)))
            goto done;
        sum += s;
    }
    const float rl = rb.loss;
    const double loss = n ? sum / (double)n : 0.0, le = fabs(loss - rl) / fabs((double)rl);
    kd_parity_check(out, failed, le <= tol_loss, "accum", "loss rel %.2g (tol %.0e), %.8g vs ref %.8g "
           "(%lld micro-batches of 1 row)", le, tol_loss, loss, rl, (long long)B);
    const size_t np = kd_student_param_count(m);
    if ((rc = grads_vs_ref_(m, st, file, "accum", tol_grad, cuda, out, failed)))
        goto done;
    const char *gn = kd_st_metadata(st, "grad_norm"), *cn = kd_st_metadata(st, "clip_norm");
    double norm = kd_student_grad_norm(m);
    if (gn) {
        double ref = strtod(gn, NULL), e = fabs(norm - ref) / ref;
        kd_parity_check(out, failed, e <= tol_grad, "accum", "grad norm rel %.2g (tol %.0e), %.9g vs ref %s", e,
               tol_grad, norm, gn);
    }
    /* the steps, on the reference gradients: plain, then clipped as clip_grad_norm_ */
    for (int clip = 0; clip < 2 && !(clip && !cn); clip++) {
        kd_student_free(m2);
        m2 = NULL;
        if ((rc = step_on_ref_grads_(dir, st, file, &hp, clip ? strtod(cn, NULL) : 0, cuda, &m2)))
            goto done;
        double worst = 0;
        const char *wn = "";
        for (size_t i = 0; i < np; i++) {
            const char *name = kd_student_param_name(m2, i);
            double e;
            if ((rc = param_vs_ref_(m2, st, file, clip ? "after_adamw_clip." : "after_adamw.", name, 0,
                                    &e)))
                goto done;
            if (!(e <= worst))
                worst = e, wn = name;
        }
        kd_parity_check(out, failed, worst <= tol_adamw, "accum", "%s worst rel %.2g (tol %.0e) %s",
               clip ? "AdamW after clipping" : "AdamW", worst, tol_adamw, wn);
    }
done:
    kd_cu_student_free(g);
    ref_batch_free_(&rb);
    kd_student_free(m);
    kd_student_free(m2);
    kd_st_free(st);
    return rc;
}

/* ---- the run --------------------------------------------------------------------- */

static int exists_(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

int kd_parity_run(const char *dir, kd_parity_device device, FILE *out, int *failed)
{
    *failed = 0;
    const int cuda = device == KD_PARITY_CUDA;
    if (cuda && kd_cuda_device_count() == 0)
        return kd_err(KD_E_CUDA, "device cuda: %s", kd_cuda_built() ? "no CUDA device is visible"
                                                                     : "this build has no CUDA backend");
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return kd_err(KD_E_NOTFOUND, "fixture directory '%s' does not exist", dir);
    kd_model_config cfg;
    KD_TRY(kd_model_config_load(dir, &cfg));
    if (cfg.arch != KD_ARCH_QWEN2 && cfg.arch != KD_ARCH_LLAMA)
        return kd_err(KD_E_UNSUPPORTED, "model_type '%s' is not a dense student (qwen2, llama): "
                      "DeepSeek models go through kd_teacher_parity_run", cfg.model_type);
    char infer[4200], train[4200];
    snprintf(infer, sizeof infer, "%s/ref_infer.safetensors", dir);
    snprintf(train, sizeof train, "%s/ref_train.safetensors", dir);
    const int hi = exists_(infer), ht = exists_(train);
    if (!hi && !ht)
        return kd_err(KD_E_NOTFOUND, "'%s' holds neither ref_infer.safetensors nor ref_train.safetensors",
                      dir);
    fprintf(out, "info model    %s, %lld layers, hidden %lld, vocab %lld, device %s\n", cfg.model_type,
            (long long)cfg.num_layers, (long long)cfg.hidden_size, (long long)cfg.vocab_size,
            cuda ? "cuda (bf16)" : "cpu");
    if (hi) {
        kd_student *m = NULL;
        KD_TRY(kd_student_load(dir, &m));
        kd_parity_model pm = {m, kd_student_config(m)->vocab_size, student_logits_, student_generate_};
        gpu_pm_ gp = {NULL, kd_student_config(m)->vocab_size};
        int rc = KD_OK;
        if (cuda) { /* the CUDA student, and the CPU one as the reference for greedy margins */
            rc = gpu_new_(m, &gp.g);
            pm = (kd_parity_model){&gp, gp.V, gpu_logits_, gpu_generate_, TOL16, TOL16_MARGIN, 1, m, student_logits_};
        }
        if (rc == KD_OK)
            rc = kd_parity_check_infer(&pm, dir, infer, out, failed);
        kd_cu_student_free(gp.g);
        kd_student_free(m);
        KD_TRY(rc);
    } else
        fprintf(out, "skip infer    no ref_infer.safetensors\n");
    if (ht)
        KD_TRY(check_train_(dir, train, cuda, out, failed));
    else
        fprintf(out, "skip train    no ref_train.safetensors\n");
    char packed[4200], accum[4200];
    snprintf(packed, sizeof packed, "%s/ref_packed.safetensors", dir);
    snprintf(accum, sizeof accum, "%s/ref_accum.safetensors", dir);
    if (exists_(packed))
        KD_TRY(check_packed_(dir, packed, cuda, out, failed));
    else
        fprintf(out, "skip packed   no ref_packed.safetensors\n");
    if (exists_(accum))
        KD_TRY(check_accum_(dir, accum, cuda, out, failed));
    else
        fprintf(out, "skip accum    no ref_accum.safetensors\n");
    return KD_OK;
}
