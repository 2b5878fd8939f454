/* cuda.c - the dense student on one GPU (see student/cuda.h). The layer code
 * follows student/model.c step for step; the ops are core/cuda/cuops.h. */
#include "student/cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/status.h"

#ifndef KD_HAVE_CUDA

void kd_cu_student_plan(const kd_model_config *c, const kd_cu_student_opts *o, kd_cu_mem *out)
{
    (void)c, (void)o;
    memset(out, 0, sizeof *out);
}
#define NO_CUDA_ kd_err(KD_E_CUDA, "this build has no CUDA backend: rebuild with -DDISTILL_CUDA=ON")
int kd_cu_student_new(const kd_model_config *c, kd_cu_getter get, void *ctx, const kd_cu_student_opts *o,
                      kd_cu_student **out)
{
    (void)c, (void)get, (void)ctx, (void)o;
    *out = NULL;
    return NO_CUDA_;
}
void kd_cu_student_free(kd_cu_student *m) { (void)m; }
int kd_cu_student_zero_grad(kd_cu_student *m) { return (void)m, NO_CUDA_; }
int kd_cu_student_backward(kd_cu_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                           int64_t B, int64_t T, double scale)
{
    (void)m, (void)ids, (void)labels, (void)pos, (void)B, (void)T, (void)scale;
    return NO_CUDA_;
}
int kd_cu_student_loss(kd_cu_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                       int64_t B, int64_t T)
{
    (void)m, (void)ids, (void)labels, (void)pos, (void)B, (void)T;
    return NO_CUDA_;
}
int kd_cu_student_logits(kd_cu_student *m, const int64_t *ids, const int64_t *pos, int64_t B, int64_t T,
                         float *out)
{
    (void)m, (void)ids, (void)pos, (void)B, (void)T, (void)out;
    return NO_CUDA_;
}
int kd_cu_student_adamw(kd_cu_student *m, const kd_adamw *hp, int no_decay_norm_bias, double max_norm)
{
    (void)m, (void)hp, (void)no_decay_norm_bias, (void)max_norm;
    return NO_CUDA_;
}
int kd_cu_student_read(kd_cu_student *m, double *loss_sum, double *grad_norm)
{
    (void)m, (void)loss_sum, (void)grad_norm;
    return NO_CUDA_;
}
int kd_cu_student_get(kd_cu_student *m, const char *name, int which, float *out, size_t numel)
{
    (void)m, (void)name, (void)which, (void)out, (void)numel;
    return NO_CUDA_;
}
int kd_cu_student_set(kd_cu_student *m, const char *name, int which, const float *in, size_t numel)
{
    (void)m, (void)name, (void)which, (void)in, (void)numel;
    return NO_CUDA_;
}
int64_t kd_cu_student_step(const kd_cu_student *m) { return (void)m, 0; }
void kd_cu_student_set_step(kd_cu_student *m, int64_t step) { (void)m, (void)step; }
int64_t kd_cu_student_numel(const kd_cu_student *m) { return (void)m, 0; }
int kd_cu_student_prof_on(kd_cu_student *m) { return (void)m, NO_CUDA_; }
int kd_cu_student_prof_report(kd_cu_student *m, void *out) { return (void)m, (void)out, NO_CUDA_; }
int kd_cu_student_mem_used(const kd_cu_student *m, size_t *used)
{
    (void)m, (void)used;
    return NO_CUDA_;
}
void kd_cu_mem_log(const kd_cu_mem *mem, const char *what) { (void)mem, (void)what; }

#else /* KD_HAVE_CUDA */

#include "core/cuda/cuops.h"

/* ---- parameters: one flat buffer, HF tensors in this order ------------------------
 * Per layer the q, k, v weights (and biases) are adjacent, so (Q + 2R, C) is
 * the fused projection's weight; likewise gate and up make (2F, C). */
enum { S_LN1, S_QW, S_KW, S_VW, S_QB, S_KB, S_VB, S_OW, S_OB, S_LN2, S_GW, S_UW, S_GB, S_UB, S_DW, S_DB, S_COUNT };
static const char *const slot_name_[S_COUNT] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.o_proj.weight",
    "self_attn.o_proj.bias", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
    "mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias",
};

typedef struct tensor_ {
    char name[96];
    int64_t off, n;
    int no_decay; /* a norm or a bias */
} tensor_;

typedef struct layout_ {
    tensor_ *t;
    int nt;
    int64_t total;               /* elements of the flat buffer */
    int64_t wte, lnf, lmh;       /* offsets; lmh == wte when tied */
    int64_t (*layer)[S_COUNT];   /* offsets, -1 when absent */
} layout_;

static void layout_free_(layout_ *l)
{
    free(l->t);
    free(l->layer);
    memset(l, 0, sizeof *l);
}

static int layout_make_(const kd_model_config *c, layout_ *lay)
{
    memset(lay, 0, sizeof *lay);
    kd_tensor_spec *specs = NULL;
    size_t ns = 0;
    KD_TRY(kd_model_tensors(c, &specs, &ns));
    const int64_t L = c->num_layers;
    lay->t = calloc(ns, sizeof *lay->t);
    lay->layer = malloc((size_t)L * sizeof *lay->layer);
    if (!lay->t || !lay->layer) {
        free(specs);
        layout_free_(lay);
        return kd_err(KD_E_NOMEM, "tensor layout");
    }
    int64_t off = 0;
    int st = KD_OK;
    /* place a manifest tensor by name; returns its offset or -1 when absent */
#define PLACE_(nm, out_off)                                                                        \
    do {                                                                                           \
        out_off = -1;                                                                              \
        for (size_t i_ = 0; i_ < ns; i_++)                                                         \
            if (strcmp(specs[i_].name, (nm)) == 0) {                                               \
                int64_t n_ = 1;                                                                    \
                for (int d_ = 0; d_ < specs[i_].ndim; d_++)                                        \
                    n_ *= specs[i_].shape[d_];                                                     \
                tensor_ *t_ = &lay->t[lay->nt++];                                                  \
                snprintf(t_->name, sizeof t_->name, "%s", (nm));                                   \
                t_->off = off;                                                                     \
                t_->n = n_;                                                                        \
                t_->no_decay = specs[i_].ndim == 1;                                                \
                out_off = off;                                                                     \
                off += (n_ + 7) / 8 * 8;                                                           \
                break;                                                                             \
            }                                                                                      \
    } while (0)
    char nm[128];
    PLACE_("model.embed_tokens.weight", lay->wte);
    for (int64_t l = 0; l < L; l++)
        for (int s = 0; s < S_COUNT; s++) {
            snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, slot_name_[s]);
            PLACE_(nm, lay->layer[l][s]);
        }
    PLACE_("model.norm.weight", lay->lnf);
    PLACE_("lm_head.weight", lay->lmh);
#undef PLACE_
    if (lay->lmh < 0)
        lay->lmh = lay->wte; /* tied */
    lay->total = off;
    if ((size_t)lay->nt != ns)
        st = kd_err(KD_E_INTERNAL, "the CUDA student places %d of the %zu manifest tensors", lay->nt, ns);
    for (int64_t l = 0; st == KD_OK && l < L; l++)
        if (lay->layer[l][S_QW] < 0 || lay->layer[l][S_KW] < 0 || lay->layer[l][S_VW] < 0 ||
            lay->layer[l][S_GW] < 0 || lay->layer[l][S_UW] < 0 || lay->layer[l][S_DW] < 0 ||
            (lay->layer[l][S_QB] < 0) != (lay->layer[l][S_VB] < 0) ||
            (lay->layer[l][S_GB] < 0) != (lay->layer[l][S_UB] < 0))
            st = kd_err(KD_E_UNSUPPORTED, "layer %lld lacks a projection the CUDA student needs", (long long)l);
    if (st == KD_OK && lay->wte < 0)
        st = kd_err(KD_E_UNSUPPORTED, "no model.embed_tokens.weight");
    free(specs);
    if (st)
        layout_free_(lay);
    return st;
}

/* ---- activations ----------------------------------------------------------------- */

typedef struct acts_ {
    kd_bf16 *ln1, *q, *k, *v, *atty, *res1, *ln2, *gu, *act;
    float *rstd1, *lse, *rstd2;
} acts_;

struct kd_cu_student {
    kd_model_config cfg;
    kd_cu_student_opts o;
    kd_cu cu;
    layout_ lay;
    kd_cu_mem mem;
    int64_t step;
    /* parameters, flat */
    float *p, *g, *m, *v;
    kd_bf16 *p16;
    kd_cu_seg *segs;          /* device, one per tensor */
    float seg_wd;             /* what segs were last built with */
    int seg_nd, segs_ok;
    /* activations: x[l] (l = 0..L) the residual stream; sets[l] (or sets[0] with recompute) */
    kd_bf16 **x;
    acts_ *sets;
    kd_bf16 *qkv, *tmp, *lnf;
    float *rstdf;
    /* backward */
    kd_bf16 *dres, *dln, *dqkv, *datty, *dgu, *dact;
    float *dq, *dk, *dv, *dqkv32; /* the attention's gradients in fp32; dqkv32 for the q/k/v biases */
    /* inputs, loss */
    int32_t *ids, *tgt, *pos;
    int32_t *h_i32;           /* host staging of the three int arrays (3 * max_tokens) */
    float *rope_cos, *rope_sin, *loss, *norm2;
    void *xent_ws, *attn_ws, *norm_ws;
    size_t attn_ws_bytes;
    void *arena;              /* every device buffer above comes from here */
    size_t arena_used, arena_size;
};

/* The sizes of everything, for the planner and for the allocation. */
typedef struct sizes_ {
    size_t params, acts_layer, acts_fixed, work;
    int64_t chunk;
} sizes_;

static size_t al_(size_t n) { return (n + 255) & ~(size_t)255; }

static void sizes_get_(const kd_model_config *c, const kd_cu_student_opts *o, int64_t params, sizes_ *s)
{
    const size_t N = (size_t)o->max_tokens, C = (size_t)c->hidden_size, H = (size_t)c->num_heads;
    const size_t D = (size_t)c->head_dim, Q = H * D, R = (size_t)c->num_kv_heads * D;
    const size_t F = (size_t)c->intermediate_size, V = (size_t)c->vocab_size, L = (size_t)c->num_layers;
    const size_t b2 = 2, f4 = 4;
    s->params = (size_t)params;
    /* one set of saved activations */
    s->acts_layer = al_(N * C * b2) * 4 + al_(N * Q * b2) * 2 + al_(N * R * b2) * 2 + al_(N * 2 * F * b2) +
                    al_(N * F * b2) + al_(N * f4) * 2 + al_(N * H * f4);
    /* the residual stream x[0..L], qkv, tmp, lnf, rstdf */
    s->acts_fixed = al_(N * C * b2) * (L + 1) + al_(N * (Q + 2 * R) * b2) + al_(N * C * b2) * 2 + al_(N * f4);
    int64_t chunk = o->xent_chunk;
    if (chunk <= 0) { /* about 1 GiB of fp32 logits */
        chunk = (int64_t)((1u << 30) / (V * f4));
        chunk = chunk < 128 ? 128 : chunk;
    }
    if (chunk > (int64_t)N)
        chunk = (int64_t)N;
    s->chunk = chunk;
    s->work = al_(N * C * b2) * 2 + al_(N * (Q + 2 * R) * b2) + al_(N * (Q + 2 * R) * f4) * 2 + al_(N * Q * b2) * 2 +
              al_(N * 2 * F * b2) +
              al_(N * F * b2) + al_(kd_cu_xent_ws_bytes(chunk, (int64_t)V)) +
              al_(kd_cu_attention_ws_bytes(1, (int64_t)N, (int64_t)H, c->num_kv_heads, (int64_t)D)) +
              al_(kd_cu_norm_ws_bytes(params)) + al_(N * 4) * 3 + al_((size_t)o->max_T * D / 2 * f4) * 2 + 1024 +
              al_((L * S_COUNT + 3) * sizeof(kd_cu_seg));
}

static int64_t count_params_(const kd_model_config *c)
{
    layout_ lay;
    if (layout_make_(c, &lay))
        return -1;
    int64_t n = lay.total;
    layout_free_(&lay);
    return n;
}

static void plan_(const kd_model_config *c, const kd_cu_student_opts *o, int64_t P, kd_cu_mem *out, sizes_ *s)
{
    sizes_get_(c, o, P, s);
    const size_t L = (size_t)c->num_layers, n = s->params;
    memset(out, 0, sizeof *out);
    out->weights = al_(n * 4) + al_(n * 2);
    out->grads = al_(n * 4);
    out->moments = al_(n * 4) * 2;
    out->acts = s->acts_fixed + s->acts_layer * (o->recompute ? 1 : L);
    out->work = s->work + (64u << 20) + (size_t)KD_CU_SCRATCH * 4; /* + the context's buffers */
    out->total = out->weights + out->grads + out->moments + out->acts + out->work;
}

void kd_cu_student_plan(const kd_model_config *c, const kd_cu_student_opts *o, kd_cu_mem *out)
{
    sizes_ s;
    int64_t P = count_params_(c);
    plan_(c, o, P < 0 ? 0 : P, out, &s);
}

void kd_cu_mem_log(const kd_cu_mem *mem, const char *what)
{
    const double G = 1024.0 * 1024 * 1024;
    kd_info("%s: expected peak GPU memory %.2f GiB = weights %.2f + grads %.2f + moments %.2f + "
            "activations %.2f + work %.2f",
            what, mem->total / G, mem->weights / G, mem->grads / G, mem->moments / G, mem->acts / G, mem->work / G);
}

static void *take_(kd_cu_student *m, size_t bytes)
{
    size_t b = al_(bytes);
    if (m->arena_used + b > m->arena_size)
        return NULL;
    void *p = (char *)m->arena + m->arena_used;
    m->arena_used += b;
    return p;
}

void kd_cu_student_free(kd_cu_student *m)
{
    if (!m)
        return;
    if (m->arena)
        kd_cu_free_ptr(m->arena);
    kd_cu_free(&m->cu);
    layout_free_(&m->lay);
    free(m->x);
    free(m->sets);
    free(m->h_i32);
    free(m);
}

int kd_cu_student_new(const kd_model_config *c, kd_cu_getter get, void *ctx, const kd_cu_student_opts *o,
                      kd_cu_student **out)
{
    *out = NULL;
    if (c->arch == KD_ARCH_DEEPSEEK_V3 || c->arch == KD_ARCH_DEEPSEEK_V2)
        return kd_err(KD_E_UNSUPPORTED, "the CUDA trainer takes dense students (Qwen2 / Llama), not %s",
                      c->model_type);
    if (c->hidden_size % 8 || c->head_dim % 8 || c->intermediate_size % 8 || c->head_dim > 128)
        return kd_err(KD_E_UNSUPPORTED, "the CUDA student needs hidden_size, head_dim and intermediate_size "
                      "multiples of 8 and head_dim <= 128 (got %lld, %lld, %lld)", (long long)c->hidden_size,
                      (long long)c->head_dim, (long long)c->intermediate_size);
    if (o->max_tokens <= 0 || o->max_T <= 0 || o->max_T > o->max_tokens)
        return kd_err(KD_E_RANGE, "CUDA student: max_tokens %lld, max_T %lld", (long long)o->max_tokens,
                      (long long)o->max_T);
    kd_cu_student *m = calloc(1, sizeof *m);
    if (!m)
        return kd_err(KD_E_NOMEM, "CUDA student");
    m->cfg = *c;
    m->o = *o;
    int st = layout_make_(c, &m->lay);
    if (st == KD_OK)
        st = kd_cu_init(&m->cu, o->device);
    if (st == KD_OK)
        m->cu.attn_two_pass = o->attn_two_pass;
    if (st) {
        kd_cu_student_free(m);
        return st;
    }
    const int64_t N = o->max_tokens, C = c->hidden_size, H = c->num_heads, D = c->head_dim, Q = H * D;
    const int64_t R = c->num_kv_heads * D, F = c->intermediate_size, L = c->num_layers, P = m->lay.total;
    sizes_ sz;
    plan_(c, o, P, &m->mem, &sz);
    m->o.xent_chunk = sz.chunk;
    m->arena_size = m->mem.weights + m->mem.grads + m->mem.moments + m->mem.acts + sz.work;
    if ((st = kd_cu_malloc(&m->arena, m->arena_size))) {
        double gib = (double)m->arena_size / (1u << 30);
        kd_cu_student_free(m);
        return kd_err_wrap(st, "CUDA student: %.2f GiB for %lld parameters at %lld tokens per micro-batch%s", gib,
                           (long long)P, (long long)N, o->recompute ? "" : " (try activation recompute)");
    }
    m->x = calloc((size_t)L + 1, sizeof *m->x);
    m->sets = calloc(o->recompute ? 1 : (size_t)L, sizeof *m->sets);
    m->h_i32 = malloc((size_t)N * 3 * sizeof *m->h_i32);
    if (!m->x || !m->sets || !m->h_i32) {
        kd_cu_student_free(m);
        return kd_err(KD_E_NOMEM, "CUDA student");
    }
#define TAKE_(ptr, bytes) (ptr) = take_(m, (bytes))
    TAKE_(m->p, P * 4);
    TAKE_(m->p16, P * 2);
    TAKE_(m->g, P * 4);
    TAKE_(m->m, P * 4);
    TAKE_(m->v, P * 4);
    for (int64_t l = 0; l <= L; l++)
        TAKE_(m->x[l], N * C * 2);
    for (int64_t s = 0; s < (o->recompute ? 1 : L); s++) {
        acts_ *a = &m->sets[s];
        TAKE_(a->ln1, N * C * 2), TAKE_(a->res1, N * C * 2), TAKE_(a->ln2, N * C * 2);
        TAKE_(a->q, N * Q * 2), TAKE_(a->atty, N * Q * 2), TAKE_(a->k, N * R * 2), TAKE_(a->v, N * R * 2);
        TAKE_(a->gu, N * 2 * F * 2), TAKE_(a->act, N * F * 2);
        TAKE_(a->rstd1, N * 4), TAKE_(a->rstd2, N * 4), TAKE_(a->lse, N * H * 4);
    }
    TAKE_(m->qkv, N * (Q + 2 * R) * 2);
    TAKE_(m->tmp, N * C * 2);
    TAKE_(m->lnf, N * C * 2);
    TAKE_(m->rstdf, N * 4);
    TAKE_(m->dres, N * C * 2), TAKE_(m->dln, N * C * 2);
    TAKE_(m->dqkv, N * (Q + 2 * R) * 2);
    TAKE_(m->dq, N * (Q + 2 * R) * 4); /* dq, dk, dv in one */
    if (m->lay.layer[0][S_QB] >= 0)
        TAKE_(m->dqkv32, N * (Q + 2 * R) * 4);
    m->dk = m->dq ? m->dq + N * Q : NULL;
    m->dv = m->dk ? m->dk + N * R : NULL;
    TAKE_(m->datty, N * Q * 2);
    TAKE_(m->dgu, N * 2 * F * 2);
    TAKE_(m->dact, N * F * 2);
    TAKE_(m->xent_ws, kd_cu_xent_ws_bytes(sz.chunk, c->vocab_size));
    m->attn_ws_bytes = kd_cu_attention_ws_bytes(1, N, H, c->num_kv_heads, D);
    TAKE_(m->attn_ws, m->attn_ws_bytes);
    TAKE_(m->norm_ws, kd_cu_norm_ws_bytes(P));
    TAKE_(m->ids, N * 4), TAKE_(m->tgt, N * 4), TAKE_(m->pos, N * 4);
    TAKE_(m->rope_cos, o->max_T * D / 2 * 4), TAKE_(m->rope_sin, o->max_T * D / 2 * 4);
    TAKE_(m->loss, 256);
    TAKE_(m->norm2, 256);
    TAKE_(m->segs, (size_t)m->lay.nt * sizeof(kd_cu_seg));
#undef TAKE_
    if (!m->segs) {
        kd_cu_student_free(m);
        return kd_err(KD_E_INTERNAL, "CUDA student: the arena plan is short");
    }
    /* weights: fp32 master from the getter, then the bf16 copy */
    st = kd_cu_memset0(m->arena, m->arena_used, &m->cu);
    for (int i = 0; st == KD_OK && i < m->lay.nt; i++) {
        const tensor_ *t = &m->lay.t[i];
        float *data = NULL;
        size_t numel = (size_t)t->n;
        if ((st = get(ctx, t->name, &data, &numel)))
            break;
        if ((int64_t)numel != t->n)
            st = kd_err(KD_E_SHAPE, "tensor '%s': %zu elements, the manifest says %lld", t->name, numel,
                        (long long)t->n);
        else
            st = kd_cu_upload(m->p + t->off, data, numel * 4, &m->cu);
    }
    if (st == KD_OK)
        st = kd_cu_f32_to_bf16(m->p16, m->p, P, &m->cu);
    if (st == KD_OK) { /* the rope table of positions 0 .. max_T-1 */
        float *cs = malloc((size_t)(o->max_T * D / 2) * 4), *sn = malloc((size_t)(o->max_T * D / 2) * 4);
        st = cs && sn ? kd_rope_table(cs, sn, &c->rope, o->max_T, D, NULL) : kd_err(KD_E_NOMEM, "rope table");
        if (st == KD_OK)
            st = kd_cu_upload(m->rope_cos, cs, (size_t)(o->max_T * D / 2) * 4, &m->cu);
        if (st == KD_OK)
            st = kd_cu_upload(m->rope_sin, sn, (size_t)(o->max_T * D / 2) * 4, &m->cu);
        free(cs);
        free(sn);
    }
    if (st == KD_OK)
        st = kd_cu_sync(&m->cu);
    if (st) {
        kd_cu_student_free(m);
        return st;
    }
    *out = m;
    return KD_OK;
}

/* ---- forward ------------------------------------------------------------------------ */

#define W16_(off) (m->p16 + (off))
#define OPT16_(off) ((off) >= 0 ? m->p16 + (off) : NULL)

/* Layer l's forward into its set. The layer's input x[l] is made here by the
 * first rmsnorm from the previous layer's res1 + tmp (its mlp output), or,
 * when recomputing, read as it is. */
static int layer_forward_(kd_cu_student *m, int64_t l, int64_t B, int64_t T, int recompute)
{
    const kd_model_config *c = &m->cfg;
    const int64_t N = B * T, C = c->hidden_size, H = c->num_heads, K = c->num_kv_heads, D = c->head_dim;
    const int64_t Q = H * D, R = K * D, F = c->intermediate_size;
    const int64_t *o = m->lay.layer[l];
    acts_ *a = &m->sets[m->o.recompute ? 0 : l];
    kd_cu *cu = &m->cu;
    const float eps = (float)c->rms_norm_eps, scale = 1.0f / sqrtf((float)D);
    if (l == 0 || recompute) {
        kd_cu_prof_mark(&m->cu, "rmsnorm fwd");
        KD_TRY(kd_cu_rmsnorm_forward(a->ln1, a->rstd1, m->x[l], m->x[l], NULL, W16_(o[S_LN1]), N, C, eps, cu));
    } else {
        const acts_ *p = &m->sets[m->o.recompute ? 0 : l - 1];
        kd_cu_prof_mark(&m->cu, "rmsnorm fwd");
        KD_TRY(kd_cu_rmsnorm_forward(a->ln1, a->rstd1, m->x[l], p->res1, m->tmp, W16_(o[S_LN1]), N, C, eps, cu));
    }
    kd_cu_prof_mark(&m->cu, "gemm fwd qkv");
    KD_TRY(kd_cu_linear_forward(m->qkv, a->ln1, W16_(o[S_QW]), OPT16_(o[S_QB]), N, C, Q + 2 * R, cu));
    kd_cu_prof_mark(&m->cu, "qkv split+rope fwd");
    KD_TRY(kd_cu_qkv_rope_forward(a->q, a->k, a->v, m->qkv, m->rope_cos, m->rope_sin, m->pos, B, T, H, K, D, cu));
    kd_cu_prof_mark(&m->cu, "attention fwd");
    KD_TRY(kd_cu_attention_forward(a->atty, a->lse, a->q, a->k, a->v, m->pos, B, T, H, K, D, scale, cu));
    kd_cu_prof_mark(&m->cu, "gemm fwd o");
    KD_TRY(kd_cu_linear_forward(m->tmp, a->atty, W16_(o[S_OW]), OPT16_(o[S_OB]), N, Q, C, cu));
    kd_cu_prof_mark(&m->cu, "rmsnorm fwd");
    KD_TRY(kd_cu_rmsnorm_forward(a->ln2, a->rstd2, a->res1, m->x[l], m->tmp, W16_(o[S_LN2]), N, C, eps, cu));
    kd_cu_prof_mark(&m->cu, "gemm fwd gate/up");
    KD_TRY(kd_cu_linear_forward(a->gu, a->ln2, W16_(o[S_GW]), OPT16_(o[S_GB]), N, C, 2 * F, cu));
    kd_cu_prof_mark(&m->cu, "swiglu fwd");
    KD_TRY(kd_cu_swiglu_forward(a->act, a->gu, N, F, cu));
    if (!recompute) { /* the mlp's output, for the next layer's residual add */
        kd_cu_prof_mark(&m->cu, "gemm fwd down");
        KD_TRY(kd_cu_linear_forward(m->tmp, a->act, W16_(o[S_DW]), OPT16_(o[S_DB]), N, F, C, cu));
    }
    return KD_OK;
}

/* Upload ids, the shifted targets and pos (host arrays; checked as the CPU does). */
static int inputs_(kd_cu_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos, int64_t B,
                   int64_t T)
{
    const kd_model_config *c = &m->cfg;
    const int64_t N = B * T, V = c->vocab_size;
    if (B <= 0 || T <= 0 || N > m->o.max_tokens || T > m->o.max_T)
        return kd_err(KD_E_RANGE, "micro-batch %lld x %lld is over the CUDA student's plan (%lld tokens, rows of %lld)",
                      (long long)B, (long long)T, (long long)m->o.max_tokens, (long long)m->o.max_T);
    int32_t *hi = m->h_i32, *ht = hi + N, *hp = ht + N;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t, y = KD_IGNORE_INDEX;
            if (ids[i] < 0 || ids[i] >= V)
                return kd_err(KD_E_RANGE, "token id %lld at %lld is outside [0, %lld)", (long long)ids[i],
                              (long long)i, (long long)V);
            if (pos && !(pos[i] == 0 || (t > 0 && pos[i] == pos[i - 1] + 1)))
                return kd_err(KD_E_RANGE, "pos[%lld] = %lld: positions must restart at 0 or count up by one",
                              (long long)i, (long long)pos[i]);
            if (t + 1 < T && !(pos && pos[i + 1] == 0))
                y = labels ? labels[i + 1] : ids[i + 1];
            if (y != KD_IGNORE_INDEX && (y < 0 || y >= V))
                return kd_err(KD_E_RANGE, "label %lld at row %lld, token %lld is outside [0, %lld)", (long long)y,
                              (long long)b, (long long)(t + 1), (long long)V);
            hi[i] = (int32_t)ids[i];
            ht[i] = (int32_t)y;
            hp[i] = (int32_t)(pos ? pos[i] : t);
        }
    KD_TRY(kd_cu_upload_async(m->ids, hi, (size_t)N * 4, &m->cu));
    KD_TRY(kd_cu_upload_async(m->tgt, ht, (size_t)N * 4, &m->cu));
    return kd_cu_upload_async(m->pos, hp, (size_t)N * 4, &m->cu);
}

/* The forward to the final norm (m->lnf). */
static int forward_(kd_cu_student *m, int64_t B, int64_t T)
{
    const kd_model_config *c = &m->cfg;
    const int64_t N = B * T, C = c->hidden_size, L = c->num_layers;
    kd_cu *cu = &m->cu;
    kd_cu_prof_mark(&m->cu, "embedding fwd");
    KD_TRY(kd_cu_embedding_forward(m->x[0], m->ids, W16_(m->lay.wte), N, C, cu));
    for (int64_t l = 0; l < L; l++)
        KD_TRY(layer_forward_(m, l, B, T, 0));
    const acts_ *p = &m->sets[m->o.recompute ? 0 : L - 1];
    kd_cu_prof_mark(&m->cu, "rmsnorm fwd");
    return kd_cu_rmsnorm_forward(m->lnf, m->rstdf, m->x[L], p->res1, m->tmp, W16_(m->lay.lnf), N, C,
                                 (float)c->rms_norm_eps, cu);
}

/* The forward and the loss (and with grads, dlnf in m->dln). */
static int forward_loss_(kd_cu_student *m, int64_t B, int64_t T, double scale, int grads)
{
    const kd_model_config *c = &m->cfg;
    KD_TRY(forward_(m, B, T));
    kd_cu_prof_mark(&m->cu, "lm head + loss (fwd+bwd)");
    return kd_cu_linear_xent(m->loss, grads ? m->dln : NULL, grads ? m->g + m->lay.lmh : NULL, m->lnf,
                             W16_(m->lay.lmh), m->tgt, B * T, c->hidden_size, c->vocab_size, (float)scale,
                             m->o.xent_chunk, m->xent_ws, &m->cu);
}

int kd_cu_student_logits(kd_cu_student *m, const int64_t *ids, const int64_t *pos, int64_t B, int64_t T,
                         float *out)
{
    const int64_t N = B * T, C = m->cfg.hidden_size, V = m->cfg.vocab_size, chunk = m->o.xent_chunk;
    KD_TRY(inputs_(m, ids, NULL, pos, B, T));
    KD_TRY(forward_(m, B, T));
    for (int64_t r0 = 0; r0 < N; r0 += chunk) { /* the loss's chunk buffer holds fp32 logits */
        int64_t n = N - r0 < chunk ? N - r0 : chunk;
        KD_TRY(kd_cu_gemm(m->xent_ws, 1, m->lnf + r0 * C, 0, W16_(m->lay.lmh), 1, NULL, n, V, C, 1.0f, 0.0f, &m->cu));
        KD_TRY(kd_cu_download(out + r0 * V, m->xent_ws, (size_t)(n * V) * 4, &m->cu));
    }
    return KD_OK;
}

int kd_cu_student_loss(kd_cu_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                       int64_t B, int64_t T)
{
    KD_TRY(inputs_(m, ids, labels, pos, B, T));
    return forward_loss_(m, B, T, 1.0, 0);
}

/* ---- backward ------------------------------------------------------------------------ */

#define G32_(off) ((off) >= 0 ? m->g + (off) : NULL)

int kd_cu_student_backward(kd_cu_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                           int64_t B, int64_t T, double scale)
{
    const kd_model_config *c = &m->cfg;
    const int64_t N = B * T, C = c->hidden_size, L = c->num_layers, H = c->num_heads, K = c->num_kv_heads;
    const int64_t D = c->head_dim, Q = H * D, R = K * D, F = c->intermediate_size;
    const float scale_qk = 1.0f / sqrtf((float)D);
    kd_cu *cu = &m->cu;
    KD_TRY(inputs_(m, ids, labels, pos, B, T));
    if (kd_cu_attention_ws_bytes(B, T, H, K, D) > m->attn_ws_bytes)
        return kd_err(KD_E_INTERNAL, "attention workspace of %lld x %lld is over the plan", (long long)B,
                      (long long)T);
    KD_TRY(forward_loss_(m, B, T, scale, 1));
    /* dlnf (in dln) -> d x[L] */
    kd_cu_prof_mark(&m->cu, "rmsnorm bwd");
    KD_TRY(kd_cu_rmsnorm_backward(m->dres, m->g + m->lay.lnf, NULL, m->dln, m->x[L], W16_(m->lay.lnf), m->rstdf, N,
                                  C, cu));
    for (int64_t l = L - 1; l >= 0; l--) {
        const int64_t *o = m->lay.layer[l];
        acts_ *a = &m->sets[m->o.recompute ? 0 : l];
        if (m->o.recompute)
            KD_TRY(layer_forward_(m, l, B, T, 1));
        kd_cu_prof_mark(&m->cu, "gemm bwd down");
        KD_TRY(kd_cu_linear_backward(m->dact, G32_(o[S_DW]), G32_(o[S_DB]), m->dres, a->act, W16_(o[S_DW]), N, F, C,
                                     0, cu));
        kd_cu_prof_mark(&m->cu, "swiglu bwd");
        KD_TRY(kd_cu_swiglu_backward(m->dgu, m->dact, a->gu, N, F, cu));
        kd_cu_prof_mark(&m->cu, "gemm bwd gate/up");
        KD_TRY(kd_cu_linear_backward(m->dln, G32_(o[S_GW]), G32_(o[S_GB]), m->dgu, a->ln2, W16_(o[S_GW]), N, C,
                                     2 * F, 0, cu));
        kd_cu_prof_mark(&m->cu, "rmsnorm bwd");
        KD_TRY(kd_cu_rmsnorm_backward(m->dres, G32_(o[S_LN2]), m->dres, m->dln, a->res1, W16_(o[S_LN2]), a->rstd2,
                                      N, C, cu));
        kd_cu_prof_mark(&m->cu, "gemm bwd o");
        KD_TRY(kd_cu_linear_backward(m->datty, G32_(o[S_OW]), G32_(o[S_OB]), m->dres, a->atty, W16_(o[S_OW]), N, Q,
                                     C, 0, cu));
        kd_cu_prof_mark(&m->cu, "attention bwd");
        KD_TRY(kd_cu_attention_backward(m->dq, m->dk, m->dv, m->datty, a->q, a->k, a->v, a->atty, a->lse, m->pos, B,
                                        T, H, K, D, scale_qk, m->attn_ws, cu));
        kd_cu_prof_mark(&m->cu, "qkv split+rope bwd");
        KD_TRY(kd_cu_qkv_rope_backward(m->dqkv, o[S_QB] >= 0 ? m->dqkv32 : NULL, m->dq, m->dk, m->dv, m->rope_cos,
                                       m->rope_sin, m->pos, B, T, H, K, D, cu));
        kd_cu_prof_mark(&m->cu, "gemm bwd qkv");
        KD_TRY(kd_cu_linear_backward(m->dln, G32_(o[S_QW]), NULL, m->dqkv, a->ln1, W16_(o[S_QW]), N, C, Q + 2 * R, 0,
                                     cu));
        if (o[S_QB] >= 0) {
            kd_cu_prof_mark(&m->cu, "bias grads (fp32)");
            KD_TRY(kd_cu_colsum_f32(m->g + o[S_QB], m->dqkv32, N, Q + 2 * R, cu));
        }
        kd_cu_prof_mark(&m->cu, "rmsnorm bwd");
        KD_TRY(kd_cu_rmsnorm_backward(m->dres, G32_(o[S_LN1]), m->dres, m->dln, m->x[l], W16_(o[S_LN1]), a->rstd1,
                                      N, C, cu));
    }
    kd_cu_prof_mark(&m->cu, "embedding bwd");
    return kd_cu_embedding_backward(m->g + m->lay.wte, m->dres, m->ids, N, C, cu);
}

/* ---- the step ---------------------------------------------------------------------------- */

int kd_cu_student_zero_grad(kd_cu_student *m)
{
    kd_cu_prof_mark(&m->cu, "zero grads");
    KD_TRY(kd_cu_memset0(m->g, (size_t)m->lay.total * 4, &m->cu));
    return kd_cu_memset0(m->loss, 4, &m->cu);
}

int kd_cu_student_adamw(kd_cu_student *m, const kd_adamw *hp, int no_decay_norm_bias, double max_norm)
{
    if (!m->segs_ok || m->seg_wd != (float)hp->weight_decay || m->seg_nd != no_decay_norm_bias) {
        kd_cu_seg *s = malloc((size_t)m->lay.nt * sizeof *s);
        if (!s)
            return kd_err(KD_E_NOMEM, "segments");
        for (int i = 0; i < m->lay.nt; i++) {
            s[i].off = m->lay.t[i].off;
            s[i].n = m->lay.t[i].n;
            s[i].weight_decay = no_decay_norm_bias && m->lay.t[i].no_decay ? 0.0f : (float)hp->weight_decay;
        }
        int st = kd_cu_upload(m->segs, s, (size_t)m->lay.nt * sizeof *s, &m->cu);
        free(s);
        KD_TRY(st);
        m->segs_ok = 1;
        m->seg_wd = (float)hp->weight_decay;
        m->seg_nd = no_decay_norm_bias;
    }
    kd_cu_prof_mark(&m->cu, "grad norm");
    KD_TRY(kd_cu_grad_norm2(m->norm2, m->g, m->lay.total, m->norm_ws, &m->cu));
    m->step++;
    /* the padding between tensors has zero gradient, moments and weights: it stays 0 */
    kd_cu_prof_mark(&m->cu, "adamw");
    return kd_cu_adamw(m->p, m->p16, m->g, m->m, m->v, m->segs, m->lay.nt, m->lay.total, (float)hp->lr,
                       (float)hp->beta1, (float)hp->beta2, (float)hp->eps, m->step, m->norm2, (float)max_norm,
                       &m->cu);
}

int kd_cu_student_read(kd_cu_student *m, double *loss_sum, double *grad_norm)
{
    float v[2];
    KD_TRY(kd_cu_download(&v[0], m->loss, 4, &m->cu));
    KD_TRY(kd_cu_download(&v[1], m->norm2, 4, &m->cu));
    if (loss_sum)
        *loss_sum = v[0];
    if (grad_norm)
        *grad_norm = sqrt((double)v[1]);
    return KD_OK;
}

static int find_(const kd_cu_student *m, const char *name, size_t numel, const tensor_ **out)
{
    for (int i = 0; i < m->lay.nt; i++) {
        const tensor_ *t = &m->lay.t[i];
        if (strcmp(t->name, name) != 0)
            continue;
        if ((int64_t)numel != t->n)
            return kd_err(KD_E_SHAPE, "tensor '%s' has %lld elements, not %zu", name, (long long)t->n, numel);
        *out = t;
        return KD_OK;
    }
    return kd_err(KD_E_NOTFOUND, "no tensor '%s' in the CUDA student", name);
}

static float *base_(const kd_cu_student *m, int which)
{
    return which == 0 ? m->p : which == 1 ? m->g : which == 2 ? m->m : m->v;
}

int kd_cu_student_get(kd_cu_student *m, const char *name, int which, float *out, size_t numel)
{
    const tensor_ *t = NULL;
    KD_TRY(find_(m, name, numel, &t));
    return kd_cu_download(out, base_(m, which) + t->off, numel * 4, &m->cu);
}

int kd_cu_student_set(kd_cu_student *m, const char *name, int which, const float *in, size_t numel)
{
    const tensor_ *t = NULL;
    KD_TRY(find_(m, name, numel, &t));
    KD_TRY(kd_cu_upload(base_(m, which) + t->off, in, numel * 4, &m->cu));
    if (which == 0)
        KD_TRY(kd_cu_f32_to_bf16(m->p16 + t->off, m->p + t->off, t->n, &m->cu));
    return kd_cu_sync(&m->cu);
}

int64_t kd_cu_student_step(const kd_cu_student *m) { return m->step; }
void kd_cu_student_set_step(kd_cu_student *m, int64_t step) { m->step = step; }

int kd_cu_student_prof_on(kd_cu_student *m) { return kd_cu_prof_on(&m->cu); }
int kd_cu_student_prof_report(kd_cu_student *m, void *out) { return kd_cu_prof_report(&m->cu, out); }

int64_t kd_cu_student_numel(const kd_cu_student *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->lay.nt; i++)
        n += m->lay.t[i].n;
    return n;
}

int kd_cu_student_mem_used(const kd_cu_student *m, size_t *used)
{
    size_t total;
    (void)m;
    return kd_cu_mem_info(used, &total);
}

#endif /* KD_HAVE_CUDA */
