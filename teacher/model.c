/* model.c - DeepSeek-V3/V2 inference on the CPU reference ops. See model.h.
 *
 * Order: loading (one fp32 allocation for the manifest, FP8 dequantised),
 * the layer pieces (attention in both MLA forms, the router, the experts),
 * the forward over new tokens, greedy generation.
 */
#include "teacher/model.h"
#include "teacher/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/inspect.h"
#include "core/log.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/sampler.h"
#include "core/status.h"
#include "core/util.h"

/* ---- weights -------------------------------------------------------------------- */

typedef struct layer_ {
    const float *ln1, *ln2;
    const float *q_a, *q_a_b, *q_a_ln, *q_b, *q_proj; /* q_a (Q, C) [+ bias], q_b (H(Dn+Dr), Q) | q_proj */
    const float *kv_a, *kv_a_b, *kv_ln, *kv_b;          /* kv_a (R+Dr, C) [+ bias], kv_b (H(Dn+Dv), R) */
    const float *o, *o_b;                               /* (C, H Dv) [+ bias] */
    int moe;
    const float *gate, *up, *down;                      /* dense mlp (F, C) (F, C) (C, F) */
    const float *router, *router_bias;                  /* (E, C), (E) or NULL */
    const float **eg, **eu, **ed;                       /* E experts: (Fm, C) (Fm, C) (C, Fm) */
    const float *sg, *su, *sd;                          /* shared experts: (Fs, C) ... or NULL */
} layer_;

struct kd_teacher {
    kd_model_config cfg;
    kd_tensor_spec *specs;
    size_t nspecs;
    size_t *order;      /* specs sorted by name, for lookups */
    float *w;           /* every manifest tensor, fp32, one allocation */
    size_t *off;        /* offset of spec i in w */
    const float *wte, *lnf, *lm_head;
    layer_ *layers;
    const float **expert_ptrs; /* 3 E per MoE layer */
    float scale;        /* softmax scale */
    const int32_t *force; /* kd_teacher_force_routes */
    int64_t force_differ; /* given routes unlike this model's choice, and the largest gap */
    double force_gap;
};

static const kd_tensor_spec *specs_cmp_base_;
static int by_name_(const void *a, const void *b)
{
    return strcmp(specs_cmp_base_[*(const size_t *)a].name, specs_cmp_base_[*(const size_t *)b].name);
}

/* The fp32 data of manifest tensor `name`, or NULL. */
static const float *W_(const kd_teacher *m, const char *name)
{
    size_t lo = 0, hi = m->nspecs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(m->specs[m->order[mid]].name, name);
        if (!c)
            return m->w + m->off[m->order[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const float *Wf_(const kd_teacher *m, const char *fmt, long long l, const char *suffix)
{
    char name[160];
    snprintf(name, sizeof name, fmt, l, suffix);
    return W_(m, name);
}

static double yarn_mscale_(double s, double m) { return s <= 1 ? 1.0 : 0.1 * m * log(s) + 1.0; }

float kd_teacher_scale_(const kd_model_config *c)
{
    float scale = 1.0f / sqrtf((float)(c->qk_nope_head_dim + c->qk_rope_head_dim));
    if (c->rope.type == KD_ROPE_YARN && c->rope.mscale_all_dim > 0) {
        double ms = yarn_mscale_(c->rope.factor, c->rope.mscale_all_dim);
        scale = (float)((double)scale * ms * ms);
    }
    return scale;
}

static int wire_(kd_teacher *m)
{
    const kd_model_config *c = &m->cfg;
    const int64_t L = c->num_layers, E = c->n_routed_experts;
    const char *P = "model.layers.%lld.%s";
    m->wte = W_(m, "model.embed_tokens.weight");
    m->lnf = W_(m, "model.norm.weight");
    m->lm_head = c->tie_word_embeddings ? m->wte : W_(m, "lm_head.weight");
    m->layers = calloc((size_t)L, sizeof *m->layers);
    int64_t nmoe = 0;
    for (int64_t l = 0; l < L; l++)
        nmoe += kd_model_layer_is_moe(c, l);
    m->expert_ptrs = calloc((size_t)(3 * E * nmoe + 1), sizeof *m->expert_ptrs);
    if (!m->layers || !m->expert_ptrs)
        return kd_err(KD_E_NOMEM, "teacher layers");
    const float **ep = m->expert_ptrs;
    for (int64_t l = 0; l < L; l++) {
        layer_ *y = &m->layers[l];
        long long ll = (long long)l;
        y->ln1 = Wf_(m, P, ll, "input_layernorm.weight");
        y->ln2 = Wf_(m, P, ll, "post_attention_layernorm.weight");
        y->q_a = Wf_(m, P, ll, "self_attn.q_a_proj.weight");
        y->q_a_b = Wf_(m, P, ll, "self_attn.q_a_proj.bias");
        y->q_a_ln = Wf_(m, P, ll, "self_attn.q_a_layernorm.weight");
        y->q_b = Wf_(m, P, ll, "self_attn.q_b_proj.weight");
        y->q_proj = Wf_(m, P, ll, "self_attn.q_proj.weight");
        y->kv_a = Wf_(m, P, ll, "self_attn.kv_a_proj_with_mqa.weight");
        y->kv_a_b = Wf_(m, P, ll, "self_attn.kv_a_proj_with_mqa.bias");
        y->kv_ln = Wf_(m, P, ll, "self_attn.kv_a_layernorm.weight");
        y->kv_b = Wf_(m, P, ll, "self_attn.kv_b_proj.weight");
        y->o = Wf_(m, P, ll, "self_attn.o_proj.weight");
        y->o_b = Wf_(m, P, ll, "self_attn.o_proj.bias");
        y->moe = kd_model_layer_is_moe(c, l);
        if (!y->moe) {
            y->gate = Wf_(m, P, ll, "mlp.gate_proj.weight");
            y->up = Wf_(m, P, ll, "mlp.up_proj.weight");
            y->down = Wf_(m, P, ll, "mlp.down_proj.weight");
        } else {
            y->router = Wf_(m, P, ll, "mlp.gate.weight");
            y->router_bias = Wf_(m, P, ll, "mlp.gate.e_score_correction_bias");
            y->eg = ep;
            y->eu = ep + E;
            y->ed = ep + 2 * E;
            ep += 3 * E;
            for (int64_t e = 0; e < E; e++) {
                char n[160];
                snprintf(n, sizeof n, "model.layers.%lld.mlp.experts.%lld.gate_proj.weight", ll, (long long)e);
                y->eg[e] = W_(m, n);
                snprintf(n, sizeof n, "model.layers.%lld.mlp.experts.%lld.up_proj.weight", ll, (long long)e);
                y->eu[e] = W_(m, n);
                snprintf(n, sizeof n, "model.layers.%lld.mlp.experts.%lld.down_proj.weight", ll, (long long)e);
                y->ed[e] = W_(m, n);
                if (!y->eg[e] || !y->eu[e] || !y->ed[e])
                    return kd_err(KD_E_INTERNAL, "layer %lld expert %lld is not in the manifest", ll,
                                  (long long)e);
            }
            y->sg = Wf_(m, P, ll, "mlp.shared_experts.gate_proj.weight");
            y->su = Wf_(m, P, ll, "mlp.shared_experts.up_proj.weight");
            y->sd = Wf_(m, P, ll, "mlp.shared_experts.down_proj.weight");
        }
        if (!y->ln1 || !y->ln2 || !y->kv_a || !y->kv_ln || !y->kv_b || !y->o ||
            (c->q_lora_rank > 0 ? !y->q_a || !y->q_a_ln || !y->q_b : !y->q_proj) ||
            (y->moe ? !y->router : !y->gate || !y->up || !y->down))
            return kd_err(KD_E_INTERNAL, "layer %lld: a manifest tensor is not wired", ll);
    }
    if (!m->wte || !m->lnf || !m->lm_head)
        return kd_err(KD_E_INTERNAL, "embedding, final norm or lm_head not wired");
    m->scale = kd_teacher_scale_(c);
    return KD_OK;
}

int kd_teacher_load(const char *dir, kd_teacher **out)
{
    *out = NULL;
    kd_inspect_result *res = malloc(sizeof *res);
    if (!res)
        return kd_err(KD_E_NOMEM, "inspect result");
    int rc = kd_inspect_model(dir, NULL, res);
    if (rc) {
        free(res);
        return rc;
    }
    kd_teacher *m = calloc(1, sizeof *m);
    kd_st *st = NULL;
    if (!m) {
        free(res);
        return kd_err(KD_E_NOMEM, "teacher");
    }
    m->cfg = res->cfg;
    if (res->n_mtp)
        kd_info("teacher: %zu tensors of %lld multi-token-prediction layer(s) are skipped",
                res->n_mtp, (long long)m->cfg.num_nextn_predict_layers);
    free(res);
    if (m->cfg.arch != KD_ARCH_DEEPSEEK_V3 && m->cfg.arch != KD_ARCH_DEEPSEEK_V2) {
        rc = kd_err(KD_E_UNSUPPORTED, "model_type '%s': the teacher engine runs deepseek_v3 and "
                    "deepseek_v2 (dense teachers go through the student model)", m->cfg.model_type);
        goto fail;
    }
    if ((rc = kd_model_tensors(&m->cfg, &m->specs, &m->nspecs)))
        goto fail;
    m->order = malloc(m->nspecs * sizeof *m->order);
    m->off = malloc(m->nspecs * sizeof *m->off);
    if (!m->order || !m->off) {
        rc = kd_err(KD_E_NOMEM, "teacher manifest");
        goto fail;
    }
    size_t total = 0;
    for (size_t i = 0; i < m->nspecs; i++) {
        m->order[i] = i;
        m->off[i] = total;
        size_t n = (size_t)m->specs[i].shape[0] * (size_t)(m->specs[i].ndim > 1 ? m->specs[i].shape[1] : 1);
        total += n;
    }
    specs_cmp_base_ = m->specs;
    qsort(m->order, m->nspecs, sizeof *m->order, by_name_);
    m->w = malloc((total ? total : 1) * sizeof(float));
    if (!m->w) {
        rc = kd_err(KD_E_NOMEM, "teacher weights (%zu floats)", total);
        goto fail;
    }
    if ((rc = kd_st_open(dir, &st)))
        goto fail;
    for (size_t i = 0; i < m->nspecs && rc == KD_OK; i++) {
        const kd_st_tensor *t = kd_st_find(st, m->specs[i].name);
        rc = t ? kd_st_tensor_f32(st, t, m->cfg.fp8 ? m->cfg.fp8_block : NULL, m->w + m->off[i])
               : kd_err(KD_E_NOTFOUND, "tensor '%s' is not in '%s'", m->specs[i].name, dir);
    }
    kd_st_free(st);
    st = NULL;
    if (rc || (rc = wire_(m)))
        goto fail;
    *out = m;
    return KD_OK;
fail:
    kd_st_free(st);
    kd_teacher_free(m);
    return rc;
}

void kd_teacher_free(kd_teacher *m)
{
    if (!m)
        return;
    free(m->specs);
    free(m->order);
    free(m->off);
    free(m->w);
    free(m->layers);
    free(m->expert_ptrs);
    free(m);
}

const kd_model_config *kd_teacher_config(const kd_teacher *m) { return &m->cfg; }

const float *kd_teacher_weight(const kd_teacher *m, const char *name, size_t *numel)
{
    const float *w = W_(m, name);
    *numel = 0;
    if (!w)
        return NULL;
    for (size_t i = 0; i < m->nspecs; i++)
        if (m->w + m->off[i] == w) {
            *numel = (size_t)m->specs[i].shape[0] * (size_t)(m->specs[i].ndim > 1 ? m->specs[i].shape[1] : 1);
            break;
        }
    return w;
}
float kd_teacher_softmax_scale(const kd_teacher *m) { return m->scale; }

/* ---- random weights ------------------------------------------------------------------ */

int kd_teacher_write_random(const char *cfg_dir, const char *out_dir, uint64_t seed, double std)
{
    kd_model_config c;
    KD_TRY(kd_model_config_load(cfg_dir, &c));
    if (c.arch != KD_ARCH_DEEPSEEK_V3 && c.arch != KD_ARCH_DEEPSEEK_V2)
        return kd_err(KD_E_UNSUPPORTED, "model_type '%s': random teacher weights are for deepseek_v3/v2",
                      c.model_type);
    kd_tensor_spec *specs = NULL;
    size_t ns = 0;
    KD_TRY(kd_model_tensors(&c, &specs, &ns));
    size_t total = 0;
    for (size_t i = 0; i < ns; i++)
        total += (size_t)specs[i].shape[0] * (size_t)(specs[i].ndim > 1 ? specs[i].shape[1] : 1);
    float *w = malloc((total ? total : 1) * sizeof *w);
    kd_st_writer *wr = NULL;
    int rc = w ? kd_st_writer_new(&wr) : kd_err(KD_E_NOMEM, "random weights (%zu floats)", total);
    size_t off = 0;
    for (size_t i = 0; i < ns && rc == KD_OK; i++) {
        const kd_tensor_spec *sp = &specs[i];
        const size_t n = (size_t)sp->shape[0] * (size_t)(sp->ndim > 1 ? sp->shape[1] : 1);
        const size_t nl = strlen(sp->name);
        const int norm = nl > 14 && !strcmp(sp->name + nl - 14, "layernorm.weight");
        const int fnorm = !strcmp(sp->name, "model.norm.weight");
        const int bias = strstr(sp->name, "e_score_correction_bias") != NULL;
        float *x = w + off;
        if (norm || fnorm || bias)
            for (size_t e = 0; e < n; e++)
                x[e] = bias ? 0.0f : 1.0f;
        else
            kd_fill_normal(x, n, std, seed, (uint64_t)i);
        rc = kd_st_writer_add(wr, sp->name, KD_F32, sp->ndim, sp->shape, x);
        off += n;
    }
    char p[4200];
    char *cfg = NULL;
    size_t clen = 0;
    if (rc == KD_OK)
        rc = kd_mkdirs(out_dir);
    if (rc == KD_OK)
        rc = kd_st_writer_meta(wr, "format", "pt");
    if (rc == KD_OK && (rc = kd_path_join(p, sizeof p, out_dir, "model.safetensors")) == KD_OK)
        rc = kd_st_writer_write(wr, p);
    if (rc == KD_OK && (rc = kd_path_join(p, sizeof p, cfg_dir, "config.json")) == KD_OK)
        rc = kd_read_file(p, 16u << 20, &cfg, &clen);
    if (rc == KD_OK && (rc = kd_path_join(p, sizeof p, out_dir, "config.json")) == KD_OK)
        rc = kd_write_file_atomic(p, cfg, clen);
    free(cfg);
    kd_st_writer_free(wr);
    free(w);
    free(specs);
    return rc;
}

/* ---- the paged latent cache ---------------------------------------------------------- */

int kd_teacher_kvpool_new(const kd_teacher *m, int64_t nblocks, int64_t block, kd_kvpool **out)
{
    const kd_model_config *c = &m->cfg;
    return kd_kvpool_new(c->num_layers, c->kv_lora_rank + c->qk_rope_head_dim, nblocks, block, &c->rope,
                         c->qk_rope_head_dim, c->max_position, out);
}

/* ---- one sequence's cache: a pool of its own ----------------------------------------- */

struct kd_mla_cache {
    kd_kvpool *pool;
    kd_kvseq seq;
    int64_t max_T;
};

int kd_mla_cache_new(const kd_teacher *m, int64_t max_T, kd_mla_cache **out)
{
    *out = NULL;
    const kd_model_config *c = &m->cfg;
    if (max_T <= 0 || (c->max_position > 0 && max_T > c->max_position))
        return kd_err(KD_E_RANGE, "kv cache of %lld positions (max_position_embeddings %lld)",
                      (long long)max_T, (long long)c->max_position);
    kd_mla_cache *k = calloc(1, sizeof *k);
    if (!k)
        return kd_err(KD_E_NOMEM, "kv cache");
    const int64_t bs = 16;
    int rc = kd_kvpool_new(c->num_layers, c->kv_lora_rank + c->qk_rope_head_dim, (max_T + bs - 1) / bs, bs,
                           &c->rope, c->qk_rope_head_dim, max_T, &k->pool);
    if (rc) {
        free(k);
        return rc;
    }
    k->max_T = max_T;
    *out = k;
    return KD_OK;
}

void kd_mla_cache_free(kd_mla_cache *c)
{
    if (!c)
        return;
    if (c->pool)
        kd_kvseq_release(c->pool, &c->seq);
    kd_kvpool_free(c->pool);
    free(c);
}

int64_t kd_mla_cache_len(const kd_mla_cache *c) { return c->seq.len; }

/* ---- layer pieces ---------------------------------------------------------------- */

/* DeepSeek-V3's interleaved rope: pairs (2i, 2i+1) become halves (i, i + D/2)
 * (transformers permutes q_rot and k_rot so; the permutation is the same for
 * both, so their dot products are those of the interleaved form). */
static void deinterleave_(float *x, int64_t D, float *tmp)
{
    for (int64_t i = 0; i < D / 2; i++) {
        tmp[i] = x[2 * i];
        tmp[i + D / 2] = x[2 * i + 1];
    }
    memcpy(x, tmp, (size_t)D * sizeof(float));
}

/* SwiGLU MLP on n rows: out (n, C) = down(silu(gate x) * up x); scratch 2 n F. */
static void mlp_(float *out, const float *x, const float *g, const float *u, const float *d, int64_t n,
                 int64_t C, int64_t F, float *scratch)
{
    float *a = scratch, *b = scratch + n * F;
    kd_matmul_rowwise(a, x, g, NULL, n, C, F);
    kd_matmul_rowwise(b, x, u, NULL, n, C, F);
    kd_swiglu_forward(a, a, b, n * F);
    kd_matmul_rowwise(out, a, d, NULL, n, F, C);
}

/* Route one token: the k experts (idx) and their weights (wt) from the
 * router logits (E). scratch 2 E floats. forced: the experts to take instead
 * (kd_teacher_force_routes, ids checked by the caller), NULL to choose;
 * differ/gap count how far they are from this choice. */
static void route_(const kd_model_config *c, const float *logit, const float *bias, int64_t *idx,
                   float *wt, float *scratch, const int32_t *forced, int64_t *differ, double *gap)
{
    const int64_t E = c->n_routed_experts, k = c->num_experts_per_tok;
    const int64_t G = c->n_group > 0 ? c->n_group : 1, per = E / G;
    float *score = scratch, *choice = scratch + E;
    if (c->scoring_func == KD_SCORE_SIGMOID) {
        for (int64_t e = 0; e < E; e++)
            score[e] = 1.0f / (1.0f + expf(-logit[e]));
    } else {
        float mx = -INFINITY;
        double sum = 0;
        for (int64_t e = 0; e < E; e++)
            mx = logit[e] > mx ? logit[e] : mx;
        for (int64_t e = 0; e < E; e++)
            sum += exp((double)logit[e] - mx);
        for (int64_t e = 0; e < E; e++)
            score[e] = (float)(exp((double)logit[e] - mx) / sum);
    }
    for (int64_t e = 0; e < E; e++)
        choice[e] = score[e] + (bias ? bias[e] : 0.0f); /* the bias only chooses */
    if (c->topk_method != KD_TOPK_GREEDY && G > 1) {
        /* keep the topk_group best groups: V3 scores a group by its top-2
         * biased scores summed, V2 by its best score; the rest are -inf */
        float gs[256];
        int keep[256];
        for (int64_t g = 0; g < G; g++) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int64_t j = 0; j < per; j++) {
                float v = choice[g * per + j];
                if (v > b1)
                    b2 = b1, b1 = v;
                else if (v > b2)
                    b2 = v;
            }
            gs[g] = c->topk_method == KD_TOPK_NOAUX_TC ? b1 + b2 : b1;
            keep[g] = 0;
        }
        for (int64_t r = 0; r < c->topk_group && r < G; r++) {
            int64_t best = -1;
            for (int64_t g = 0; g < G; g++)
                if (!keep[g] && (best < 0 || gs[g] > gs[best]))
                    best = g;
            keep[best] = 1;
        }
        float kept_lo = INFINITY;
        for (int64_t g = 0; forced && g < G; g++)
            kept_lo = keep[g] && gs[g] < kept_lo ? gs[g] : kept_lo;
        for (int64_t r = 0; forced && r < k; r++) { /* a forced expert in a group left out */
            const int64_t g = forced[r] / per;
            if (!keep[g]) {
                const double d = (double)kept_lo - gs[g];
                *gap = d > *gap ? d : *gap;
            }
        }
        for (int64_t g = 0; g < G; g++)
            if (!keep[g])
                for (int64_t j = 0; j < per; j++)
                    choice[g * per + j] = -INFINITY;
    }
    /* top-k of the choice scores; ties to the lower index */
    for (int64_t r = 0; r < k; r++) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            int taken = 0;
            for (int64_t q = 0; q < r && !taken; q++)
                taken = idx[q] == e;
            if (!taken && (best < 0 || choice[e] > choice[best]))
                best = e;
        }
        idx[r] = best;
        wt[r] = score[best];
    }
    if (forced) {
        int diff = 0;
        for (int64_t r = 0; r < k; r++) {
            int mine = 0;
            for (int64_t q = 0; q < k; q++)
                mine |= idx[q] == forced[r];
            if (!mine && choice[forced[r]] > -INFINITY) { /* in a kept group: below this k-th best */
                const double d = (double)choice[idx[k - 1]] - choice[forced[r]];
                *gap = d > *gap ? d : *gap;
            }
            diff |= !mine;
        }
        *differ += diff;
        for (int64_t r = 0; r < k; r++)
            idx[r] = forced[r], wt[r] = score[forced[r]];
    }
    if (c->arch == KD_ARCH_DEEPSEEK_V3) {
        if (c->norm_topk_prob) {
            float s = 0;
            for (int64_t r = 0; r < k; r++)
                s += wt[r];
            s += 1e-20f;
            for (int64_t r = 0; r < k; r++)
                wt[r] /= s;
        }
        for (int64_t r = 0; r < k; r++)
            wt[r] *= (float)c->routed_scaling_factor;
    } else if (k > 1 && c->norm_topk_prob) {
        float s = 1e-20f;
        for (int64_t r = 0; r < k; r++)
            s += wt[r];
        for (int64_t r = 0; r < k; r++)
            wt[r] /= s;
    } else {
        for (int64_t r = 0; r < k; r++)
            wt[r] *= (float)c->routed_scaling_factor;
    }
}

/* The MoE block on n rows: routed experts (tokens grouped per expert, one
 * matmul each) plus the shared experts. out (n, C) overwritten. */
static int moe_(kd_teacher *m, const layer_ *y, float *out, const float *x, int64_t n)
{
    const kd_model_config *c = &m->cfg;
    const int64_t C = c->hidden_size, E = c->n_routed_experts, k = c->num_experts_per_tok;
    const int64_t Fm = c->moe_intermediate_size, Fs = Fm * c->n_shared_experts;
    const int64_t Fmax = Fs > Fm ? Fs : Fm;
    float *logits = malloc((size_t)(n * E) * sizeof(float));
    int64_t *idx = malloc((size_t)(n * k) * sizeof(int64_t));
    float *wt = malloc((size_t)(n * k) * sizeof(float));
    float *rs = malloc((size_t)(2 * E) * sizeof(float));
    float *xin = malloc((size_t)(n * C) * sizeof(float)), *yo = malloc((size_t)(n * C) * sizeof(float));
    float *scr = malloc((size_t)(2 * n * Fmax) * sizeof(float));
    int64_t *rows = malloc((size_t)n * sizeof(int64_t));
    float *rw = malloc((size_t)n * sizeof(float));
    int rc = KD_OK;
    if (!logits || !idx || !wt || !rs || !xin || !yo || !scr || !rows || !rw) {
        rc = kd_err(KD_E_NOMEM, "moe scratch");
        goto done;
    }
    kd_matmul_rowwise(logits, x, y->router, NULL, n, C, E);
    const int32_t *forced = m->force ? m->force + (y - m->layers) * n * k : NULL;
    for (int64_t i = 0; forced && i < n * k; i++)
        if (forced[i] < 0 || forced[i] >= E) {
            rc = kd_err(KD_E_RANGE, "forced route %lld of layer %lld: expert %d of %lld", (long long)i,
                        (long long)(y - m->layers), forced[i], (long long)E);
            goto done;
        }
    for (int64_t t = 0; t < n; t++)
        route_(c, logits + t * E, y->router_bias, idx + t * k, wt + t * k, rs, forced ? forced + t * k : NULL,
               &m->force_differ, &m->force_gap);
    memset(out, 0, (size_t)(n * C) * sizeof(float));
    for (int64_t e = 0; e < E; e++) {
        int64_t cnt = 0;
        for (int64_t t = 0; t < n; t++)
            for (int64_t r = 0; r < k; r++)
                if (idx[t * k + r] == e) {
                    rows[cnt] = t;
                    rw[cnt] = wt[t * k + r];
                    memcpy(xin + cnt * C, x + t * C, (size_t)C * sizeof(float));
                    cnt++;
                }
        if (!cnt)
            continue;
        mlp_(yo, xin, y->eg[e], y->eu[e], y->ed[e], cnt, C, Fm, scr);
        for (int64_t j = 0; j < cnt; j++)
            for (int64_t i = 0; i < C; i++)
                out[rows[j] * C + i] += rw[j] * yo[j * C + i];
    }
    if (y->sg) {
        mlp_(yo, x, y->sg, y->su, y->sd, n, C, Fs, scr);
        kd_residual_forward(out, out, yo, n * C);
    }
done:
    free(logits);
    free(idx);
    free(wt);
    free(rs);
    free(xin);
    free(yo);
    free(scr);
    free(rows);
    free(rw);
    return rc;
}

void kd_teacher_force_routes(kd_teacher *m, const int32_t *routes) { m->force = routes; }

void kd_teacher_route_stats(kd_teacher *m, int64_t *differ, double *worst_gap)
{
    *differ = m->force_differ, *worst_gap = m->force_gap;
    m->force_differ = 0, m->force_gap = 0;
}

/* ---- the forward over new tokens ---------------------------------------------------- */

int kd_teacher_step(kd_teacher *m, kd_kvpool *pool, kd_kvseq *const *seqs, int nseq, const int64_t *ids,
                    const int64_t *nn, kd_mla_mode mode, int all_logits, float *logits)
{
    const kd_model_config *c = &m->cfg;
    const int64_t V = c->vocab_size, C = c->hidden_size, L = c->num_layers, H = c->num_heads;
    const int64_t Qr = c->q_lora_rank, R = c->kv_lora_rank, Dn = c->qk_nope_head_dim;
    const int64_t Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Dq = Dn + Dr;
    const int64_t F = c->intermediate_size, row = R + Dr;
    if (nseq <= 0)
        return kd_err(KD_E_RANGE, "a step of %d sequences", nseq);
    int64_t N = 0, Tmax = 0;
    for (int i = 0; i < nseq; i++) {
        if (nn[i] <= 0)
            return kd_err(KD_E_RANGE, "%lld new tokens for sequence %d", (long long)nn[i], i);
        N += nn[i];
        Tmax = seqs[i]->len + nn[i] > Tmax ? seqs[i]->len + nn[i] : Tmax;
    }
    for (int64_t r = 0; r < N; r++)
        if (ids[r] < 0 || ids[r] >= V)
            return kd_err(KD_E_RANGE, "token id %lld at %lld is outside [0, %lld)", (long long)ids[r],
                          (long long)r, (long long)V);
    KD_TRY(kd_kvpool_reserve(pool, seqs, nseq, nn));
    const int dec = mode == KD_MLA_DECOMPRESSED;
    const int64_t sz[] = {
        N * C,                          /* x: the residual stream */
        N * C,                          /* ln */
        N * C,                          /* mo: attention / mlp output */
        N * (Qr > 0 ? Qr : 1),          /* qa */
        N * H * Dq,                     /* q */
        N * (R + Dr),                   /* ckv */
        dec ? 1 : N * H * (R + Dr),     /* qlat: absorbed queries [W_UK^T q_nope | q_rot] */
        N * H * (R > Dv ? R : Dv),      /* att: attention output (latents, absorbed) */
        N * H * Dv,                     /* attv: per-head values */
        2 * N * (F > 1 ? F : 1),        /* mlp scratch */
        Tmax + 2 * Dr,                  /* scores, rope tmp */
        Tmax * row,                     /* glat: one sequence's latents, gathered */
        dec ? Tmax * R : 1,             /* cl */
        dec ? Tmax * H * (Dn + Dv) : 1, /* kvb */
        dec ? Tmax * H * Dq : 1,        /* Kd */
        dec ? Tmax * H * Dv : 1,        /* Vd */
    };
    enum { NS = sizeof sz / sizeof sz[0] };
    size_t total = 0;
    for (int i = 0; i < NS; i++)
        total += (size_t)sz[i];
    float *mem = malloc(total * sizeof(float)), *pt[NS];
    int64_t *pos = malloc((size_t)N * sizeof *pos), *offs = malloc((size_t)nseq * sizeof *offs);
    if (!mem || !pos || !offs) {
        free(mem);
        free(pos);
        free(offs);
        return kd_err(KD_E_NOMEM, "teacher scratch (%zu floats)", total);
    }
    for (int i = 0, o = 0; i < nseq; o += (int)nn[i], i++)
        offs[i] = o; /* the sequence's first row */
    for (int64_t i = 0, o = 0; i < NS; o += sz[i], i++)
        pt[i] = mem + o;
    float *x = pt[0], *ln = pt[1], *mo = pt[2], *qa = pt[3], *q = pt[4], *ckv = pt[5], *qlat = pt[6];
    float *att = pt[7], *attv = pt[8], *mlps = pt[9], *s = pt[10], *tmp = s + Tmax, *glat = pt[11];
    float *cl = pt[12], *kvb = pt[13], *Kd = pt[14], *Vd = pt[15];
    int rc = KD_OK;
    for (int i = 0, r = 0; i < nseq; i++)
        for (int64_t k = 0; k < nn[i]; k++)
            pos[r++] = seqs[i]->len + k;

    kd_embedding_forward(x, ids, m->wte, N, C);
    for (int64_t l = 0; l < L && rc == KD_OK; l++) {
        const layer_ *y = &m->layers[l];
        kd_rmsnorm_forward(ln, NULL, x, y->ln1, N, C, c->rms_norm_eps);
        /* q (N, H, Dn + Dr), its rope part rotated at its position */
        if (Qr > 0) {
            kd_matmul_rowwise(qa, ln, y->q_a, y->q_a_b, N, C, Qr);
            kd_rmsnorm_forward(qa, NULL, qa, y->q_a_ln, N, Qr, c->rms_norm_eps);
            kd_matmul_rowwise(q, qa, y->q_b, NULL, N, Qr, H * Dq);
        } else {
            kd_matmul_rowwise(q, ln, y->q_proj, NULL, N, C, H * Dq);
        }
        for (int64_t r = 0; r < N; r++)
            for (int64_t h = 0; h < H; h++) {
                float *qr = q + (r * H + h) * Dq + Dn;
                if (c->rope_interleave)
                    deinterleave_(qr, Dr, tmp);
                kd_rope_forward(qr, kd_kvpool_cos(pool, pos[r]), kd_kvpool_sin(pool, pos[r]), NULL, 1, 1, 1, Dr);
            }
        /* the new tokens' latents [norm(c) | rope(kr)] into their blocks */
        kd_matmul_rowwise(ckv, ln, y->kv_a, y->kv_a_b, N, C, R + Dr);
        for (int i = 0, r = 0; i < nseq; i++)
            for (int64_t k = 0; k < nn[i]; k++, r++) {
                float *dst = kd_kvpool_at(pool, seqs[i], l, pos[r]);
                kd_rmsnorm_forward(dst, NULL, ckv + r * (R + Dr), y->kv_ln, 1, R, c->rms_norm_eps);
                memcpy(dst + R, ckv + r * (R + Dr) + R, (size_t)Dr * sizeof(float));
                if (c->rope_interleave)
                    deinterleave_(dst + R, Dr, tmp);
                kd_rope_forward(dst + R, kd_kvpool_cos(pool, pos[r]), kd_kvpool_sin(pool, pos[r]), NULL, 1, 1, 1,
                                Dr);
            }
        if (!dec) /* absorbed queries: q_lat = W_UK^T q_nope per head, then q_rot */
#pragma omp parallel for collapse(2) if (N * H >= 16)
            for (int64_t r = 0; r < N; r++)
                for (int64_t h = 0; h < H; h++) {
                    const float *qn = q + (r * H + h) * Dq;
                    float *ql = qlat + (r * H + h) * (R + Dr);
                    memset(ql, 0, (size_t)R * sizeof(float));
                    for (int64_t i = 0; i < Dn; i++) {
                        const float *wk = y->kv_b + (h * (Dn + Dv) + i) * R, a = qn[i];
#pragma omp simd
                        for (int64_t k = 0; k < R; k++) /* elementwise: the same bits at any width */
                            ql[k] += a * wk[k];
                    }
                    memcpy(ql + R, qn + Dn, (size_t)Dr * sizeof(float));
                }
        /* attention, sequence by sequence, over its gathered latents; absorbed, the
         * sequences run in parallel, each on its thread's scratch (the same arithmetic) */
        if (!dec) {
            int oom = 0;
#pragma omp parallel if (nseq > 1)
            {
                float *gl = malloc((size_t)(Tmax * row + Tmax) * sizeof(float));
                if (!gl) {
#pragma omp atomic write
                    oom = 1;
                }
#pragma omp for schedule(dynamic, 1)
                for (int i = 0; i < nseq; i++) {
                    if (!gl)
                        continue;
                    const int64_t p0 = seqs[i]->len, off = offs[i];
                    kd_kvpool_gather(pool, seqs[i], l, p0 + nn[i], gl);
                    kd_attention_cached(att + off * H * R, qlat + off * H * (R + Dr), gl, gl, row, row, p0, nn[i],
                                        H, 1, R + Dr, R, m->scale, gl + Tmax * row);
                }
                free(gl);
            }
            if (oom) {
                rc = kd_err(KD_E_NOMEM, "teacher attention scratch");
                break;
            }
        }
        for (int i = 0, off = 0; dec && i < nseq; off += (int)nn[i], i++) { /* decompressed: one by one */
            const kd_kvseq *sq = seqs[i];
            const int64_t p0 = sq->len, T = p0 + nn[i];
            kd_kvpool_gather(pool, sq, l, T, glat);
            /* keys [k_nope_h | kr] and values of every position, decompressed */
            for (int64_t t = 0; t < T; t++)
                memcpy(cl + t * R, glat + t * row, (size_t)R * sizeof(float));
            kd_matmul_rowwise(kvb, cl, y->kv_b, NULL, T, R, H * (Dn + Dv));
            for (int64_t t = 0; t < T; t++)
                for (int64_t h = 0; h < H; h++) {
                    const float *src = kvb + (t * H + h) * (Dn + Dv);
                    memcpy(Kd + (t * H + h) * Dq, src, (size_t)Dn * sizeof(float));
                    memcpy(Kd + (t * H + h) * Dq + Dn, glat + t * row + R, (size_t)Dr * sizeof(float));
                    memcpy(Vd + (t * H + h) * Dv, src + Dn, (size_t)Dv * sizeof(float));
                }
            kd_attention_cached(attv + off * H * Dv, q + off * H * Dq, Kd, Vd, H * Dq, H * Dv, p0, nn[i],
                                H, H, Dq, Dv, m->scale, s);
        }
        if (!dec) /* W_UV on the attended latents */
#pragma omp parallel for collapse(2) if (N * H >= 16)
            for (int64_t r = 0; r < N; r++)
                for (int64_t h = 0; h < H; h++) /* W_UV's Dv rows of R from kv_b, as one row-wise product */
                    kd_matmul_rowwise(attv + (r * H + h) * Dv, att + (r * H + h) * R,
                                      y->kv_b + (h * (Dn + Dv) + Dn) * R, NULL, 1, R, Dv);
        kd_matmul_rowwise(mo, attv, y->o, y->o_b, N, H * Dv, C);
        kd_residual_forward(x, x, mo, N * C);
        kd_rmsnorm_forward(ln, NULL, x, y->ln2, N, C, c->rms_norm_eps);
        if (y->moe)
            rc = moe_(m, y, mo, ln, N);
        else
            mlp_(mo, ln, y->gate, y->up, y->down, N, C, F, mlps);
        kd_residual_forward(x, x, mo, N * C);
    }
    if (rc == KD_OK) {
        /* the final norm of the rows whose logits are wanted, then one matmul */
        int64_t nout = 0;
        for (int i = 0, r = 0; i < nseq; i++) {
            for (int64_t k = 0; k < nn[i]; k++, r++)
                if (logits && (all_logits || k + 1 == nn[i]))
                    kd_rmsnorm_forward(ln + (nout++) * C, NULL, x + r * C, m->lnf, 1, C, c->rms_norm_eps);
            seqs[i]->len += nn[i];
        }
        if (nout)
            kd_matmul_rowwise(logits, ln, m->lm_head, NULL, nout, C, V);
    }
    free(mem);
    free(pos);
    free(offs);
    return rc;
}

int kd_teacher_extend(kd_teacher *m, kd_mla_cache *kc, const int64_t *ids, int64_t n,
                      kd_mla_mode mode, int all_logits, float *logits)
{
    if (n <= 0 || kc->seq.len + n > kc->max_T)
        return kd_err(KD_E_RANGE, "%lld new tokens at position %lld do not fit a kv cache of %lld",
                      (long long)n, (long long)kc->seq.len, (long long)kc->max_T);
    kd_kvseq *sq = &kc->seq;
    return kd_teacher_step(m, kc->pool, &sq, 1, ids, &n, mode, all_logits, logits);
}

int kd_teacher_logits(kd_teacher *m, const int64_t *ids, int64_t T, float *logits)
{
    kd_mla_cache *kc = NULL;
    KD_TRY(kd_mla_cache_new(m, T, &kc));
    int rc = kd_teacher_extend(m, kc, ids, T, KD_MLA_DECOMPRESSED, 1, logits);
    kd_mla_cache_free(kc);
    return rc;
}

int kd_teacher_generate_greedy(kd_teacher *m, const int64_t *prompt, int64_t P, int64_t N,
                               const int64_t *suppress, int nsuppress, kd_mla_mode mode,
                               int64_t *out, float *step_logits)
{
    const int64_t V = m->cfg.vocab_size;
    if (P <= 0 || N < 0)
        return kd_err(KD_E_RANGE, "prompt of %lld tokens, %lld new", (long long)P, (long long)N);
    memcpy(out, prompt, (size_t)P * sizeof(int64_t));
    if (N == 0)
        return KD_OK;
    kd_mla_cache *kc = NULL;
    KD_TRY(kd_mla_cache_new(m, P + N, &kc));
    float *row = malloc((size_t)V * sizeof(float));
    kd_sampler_cfg greedy;
    kd_sampler_cfg_init(&greedy);
    greedy.temperature = 0.0;
    int rc = row ? KD_OK : kd_err(KD_E_NOMEM, "logits row");
    if (!rc)
        rc = kd_teacher_extend(m, kc, prompt, P, KD_MLA_DECOMPRESSED, 0, row);
    for (int64_t i = 0; !rc && i < N; i++) {
        if (step_logits)
            memcpy(step_logits + i * V, row, (size_t)V * sizeof(float));
        for (int e = 0; e < nsuppress; e++)
            if (suppress[e] >= 0 && suppress[e] < V)
                row[suppress[e]] = -INFINITY;
        int64_t best = 0; /* greedy: the first maximum, as torch.argmax */
        if ((rc = kd_sample(&greedy, NULL, row, V, &best, NULL)))
            break;
        out[P + i] = best;
        if (i + 1 < N)
            rc = kd_teacher_extend(m, kc, &best, 1, mode, 0, row);
    }
    free(row);
    kd_mla_cache_free(kc);
    return rc;
}

/* ---- shared with the training model (teacher/internal.h) ------------------------------ */

void kd_teacher_route_(const kd_model_config *c, const float *logit, const float *bias, int64_t *idx, float *wt,
                       float *scratch)
{
    route_(c, logit, bias, idx, wt, scratch, NULL, NULL, NULL);
}
