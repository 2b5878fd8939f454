/* model.c - the dense student (Qwen2 / Llama) on the CPU reference ops.
 *
 * Legend: B batch, T tokens, N = B*T, V vocab, C hidden, L layers, H query
 * heads, K kv heads, D head dim, Q = H*D, R = K*D, F mlp width.
 *
 * Order: the parameter layout, the activations, load, forward, backward,
 * update, free.
 */
#include "student/model.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/json.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/sampler.h"
#include "core/status.h"


/* ---- optional profile: DISTILL_PROFILE=1 times each op kind (kd_student_profile) ---- */
enum { PF_MATMUL, PF_MATMUL_BW, PF_ATTN, PF_ATTN_BW, PF_NORM, PF_ROPE, PF_SWIGLU, PF_EMBED, PF_XENT,
       PF_ADAMW, PF_OTHER, PF_COUNT };
static const char *const pf_name_[PF_COUNT] = {"matmul fwd", "matmul bwd", "attention fwd",
    "attention bwd", "rmsnorm", "rope", "swiglu", "embedding", "cross-entropy", "adamw", "other"};
static double pf_t_[PF_COUNT];
static int pf_on_ = -1;
static int pf_enabled_(void)
{
    if (pf_on_ < 0) {
        const char *e = getenv("DISTILL_PROFILE");
        pf_on_ = e && *e && strcmp(e, "0");
    }
    return pf_on_;
}
#define PROF_(k, stmt)                                   \
    do {                                                 \
        if (pf_enabled_()) {                             \
            double t0_ = kd_now();                       \
            stmt;                                        \
            pf_t_[k] += kd_now() - t0_;                  \
        } else {                                         \
            stmt;                                        \
        }                                                \
    } while (0)

void kd_student_profile(FILE *out, int reset)
{
    double tot = 0;
    for (int k = 0; k < PF_COUNT; k++)
        tot += pf_t_[k];
    if (!pf_enabled_() || tot <= 0) {
        fprintf(out, "profile: set DISTILL_PROFILE=1 to time the ops\n");
        return;
    }
    for (int k = 0; k < PF_COUNT; k++)
        fprintf(out, "profile: %-14s %9.1f ms %5.1f%%\n", pf_name_[k], pf_t_[k] * 1e3, 100 * pf_t_[k] / tot);
    if (reset)
        memset(pf_t_, 0, sizeof pf_t_);
}

/* ---- parameters -------------------------------------------------------------- */

enum {
    P_WTE,  /* (V, C)    model.embed_tokens.weight */
    P_LN1,  /* (L, C)    input_layernorm.weight */
    P_QW,   /* (L, Q, C) q_proj.weight */
    P_QB,   /* (L, Q)    q_proj.bias (attention_bias) */
    P_KW,   /* (L, R, C) */
    P_KB,   /* (L, R) */
    P_VW,   /* (L, R, C) */
    P_VB,   /* (L, R) */
    P_OW,   /* (L, C, Q) o_proj.weight */
    P_OB,   /* (L, C)    o_proj.bias (Llama attention_bias only) */
    P_LN2,  /* (L, C)    post_attention_layernorm.weight */
    P_GW,   /* (L, F, C) gate_proj.weight */
    P_GB,   /* (L, F)    (mlp_bias) */
    P_UW,   /* (L, F, C) up_proj.weight */
    P_UB,   /* (L, F) */
    P_DW,   /* (L, C, F) down_proj.weight */
    P_DB,   /* (L, C) */
    P_LNF,  /* (C)       model.norm.weight */
    P_LMH,  /* (V, C)    lm_head.weight; absent when tied */
    P_COUNT
};

/* per-layer HF suffixes of the layer slots, "" for the global ones */
static const char *const layer_suffix_[P_COUNT] = {
    "", "input_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.weight", "self_attn.k_proj.bias",
    "self_attn.v_proj.weight", "self_attn.v_proj.bias",
    "self_attn.o_proj.weight", "self_attn.o_proj.bias",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.gate_proj.bias",
    "mlp.up_proj.weight", "mlp.up_proj.bias",
    "mlp.down_proj.weight", "mlp.down_proj.bias",
    "", "",
};

/* ---- activations ------------------------------------------------------------- */

typedef struct acts {
    float *x0;       /* (N, C)    embeddings */
    float *ln1;      /* (L, N, C) */
    float *ln1_rstd; /* (L, N) */
    float *q;        /* (L, N, Q) after rope */
    float *k;        /* (L, N, R) after rope */
    float *v;        /* (L, N, R) */
    float *atty;     /* (L, N, Q) attention output */
    float *lse;      /* (L, B, H, T) */
    float *res1;     /* (L, N, C) after attention residual */
    float *ln2;      /* (L, N, C) */
    float *ln2_rstd; /* (L, N) */
    float *gate;     /* (L, N, F) */
    float *up;       /* (L, N, F) */
    float *act;      /* (L, N, F) silu(gate)*up */
    float *res2;     /* (L, N, C) after mlp residual: the layer's output */
    float *lnf;      /* (N, C) */
    float *lnf_rstd; /* (N) */
    float *logits;   /* (N, V) */
    /* backward scratch, reused across layers */
    float *dres;     /* (N, C) gradient of the residual stream */
    float *dln;      /* (N, C) */
    float *dq;       /* (N, Q) */
    float *dk;       /* (N, R) */
    float *dv;       /* (N, R) */
    float *datt;     /* (N, Q) */
    float *dgate;    /* (N, F) */
    float *dup;      /* (N, F) */
    float *dact;     /* (N, F) */
    float *dlogits;  /* (N, V) */
    float *rope_cos; /* (T, D/2) */
    float *rope_sin; /* (T, D/2) */
} acts;

#define N_ACTS ((int)(sizeof(acts) / sizeof(float *)))

struct kd_student {
    kd_model_config cfg;
    kd_tensor_spec *specs; /* the manifest */
    size_t nspecs;
    size_t psize[P_COUNT]; /* elements of each slot (all layers) */
    size_t poff[P_COUNT];  /* offset of each slot in params/grads */
    size_t nparams;
    float *params;         /* one allocation */
    float *grads;          /* one allocation, same layout */
    float *adam_m, *adam_v; /* one allocation (2 * nparams), on the first step */
    int64_t step;
    float attn_scale;      /* rope attention factor (1 for the supported types) */
    acts a;
    float *acts_mem;       /* one allocation */
    int64_t act_B, act_T;  /* the shape acts_mem was laid out for */
};

static float *slot_(float *base, const kd_student *m, int p)
{
    if (!m->psize[p])
        return NULL;
    if (p == P_LMH && m->cfg.tie_word_embeddings)
        return base + m->poff[P_WTE];
    return base + m->poff[p];
}

static void layout_params_(kd_student *m)
{
    const kd_model_config *c = &m->cfg;
    const size_t V = (size_t)c->vocab_size, C = (size_t)c->hidden_size, L = (size_t)c->num_layers;
    const size_t Q = (size_t)(c->num_heads * c->head_dim), R = (size_t)(c->num_kv_heads * c->head_dim);
    const size_t F = (size_t)c->intermediate_size;
    const int qkvb = c->attention_bias, ob = c->arch == KD_ARCH_LLAMA && c->attention_bias;
    const int mb = c->mlp_bias;
    size_t *s = m->psize;
    s[P_WTE] = V * C;
    s[P_LN1] = L * C;
    s[P_QW] = L * Q * C;
    s[P_QB] = qkvb ? L * Q : 0;
    s[P_KW] = L * R * C;
    s[P_KB] = qkvb ? L * R : 0;
    s[P_VW] = L * R * C;
    s[P_VB] = qkvb ? L * R : 0;
    s[P_OW] = L * C * Q;
    s[P_OB] = ob ? L * C : 0;
    s[P_LN2] = L * C;
    s[P_GW] = L * F * C;
    s[P_GB] = mb ? L * F : 0;
    s[P_UW] = L * F * C;
    s[P_UB] = mb ? L * F : 0;
    s[P_DW] = L * C * F;
    s[P_DB] = mb ? L * C : 0;
    s[P_LNF] = C;
    s[P_LMH] = V * C; /* tied: shares P_WTE's storage, takes none of its own */
    size_t off = 0;
    for (int p = 0; p < P_COUNT; p++) {
        m->poff[p] = off;
        if (!(p == P_LMH && c->tie_word_embeddings))
            off += s[p];
    }
    m->nparams = off;
}

/* the slot and element offset of an HF name, or -1 */
static int ensure_moments_(kd_student *m);

static int find_slot_(const kd_student *m, const char *name, size_t *off, size_t *numel)
{
    int p = -1;
    size_t L = (size_t)m->cfg.num_layers;
    if (!strcmp(name, "model.embed_tokens.weight"))
        p = P_WTE;
    else if (!strcmp(name, "model.norm.weight"))
        p = P_LNF;
    else if (!strcmp(name, "lm_head.weight") && !m->cfg.tie_word_embeddings)
        p = P_LMH;
    else if (!strncmp(name, "model.layers.", 13)) {
        char *end;
        unsigned long long li = strtoull(name + 13, &end, 10);
        if (end == name + 13 || *end != '.' || li >= L)
            return -1;
        for (int q = 0; q < P_COUNT; q++)
            if (layer_suffix_[q][0] && !strcmp(end + 1, layer_suffix_[q])) {
                p = q;
                break;
            }
        if (p < 0 || !m->psize[p])
            return -1;
        *numel = m->psize[p] / L;
        *off = m->poff[p] + (size_t)li * *numel;
        return p;
    }
    if (p < 0)
        return -1;
    *numel = m->psize[p];
    *off = m->poff[p];
    return p;
}

/* ---- load --------------------------------------------------------------------- */

/* Validate the config, lay out and allocate the parameters (zero). */
static int build_(kd_student *m)
{
    if (m->cfg.arch != KD_ARCH_QWEN2 && m->cfg.arch != KD_ARCH_LLAMA)
        return kd_err(KD_E_UNSUPPORTED, "model_type '%s': the dense student takes qwen2 or llama",
                      m->cfg.model_type);
    if (m->cfg.num_heads % m->cfg.num_kv_heads || m->cfg.head_dim % 2)
        return kd_err(KD_E_CONFIG, "heads %lld / kv heads %lld / head_dim %lld do not fit",
                      (long long)m->cfg.num_heads, (long long)m->cfg.num_kv_heads,
                      (long long)m->cfg.head_dim);
    if (m->cfg.rope.type == KD_ROPE_DYNAMIC)
        return kd_err(KD_E_UNSUPPORTED, "rope type dynamic: the dense student takes default, linear, "
                      "llama3 and yarn");
    layout_params_(m);
    KD_TRY(kd_model_tensors(&m->cfg, &m->specs, &m->nspecs));
    m->params = calloc(m->nparams, sizeof(float));
    m->grads = calloc(m->nparams, sizeof(float));
    if (!m->params || !m->grads)
        return kd_err(KD_E_NOMEM, "student parameters (%zu floats)", m->nparams);
    return KD_OK;
}

int kd_student_init(const char *dir, uint64_t seed, double std, kd_student **out)
{
    *out = NULL;
    kd_student *m = calloc(1, sizeof *m);
    if (!m)
        return kd_err(KD_E_NOMEM, "student model");
    int rc = kd_model_config_load(dir, &m->cfg);
    if (rc == KD_OK)
        rc = build_(m);
    if (rc) {
        kd_student_free(m);
        return rc;
    }
    for (int p = 0; p < P_COUNT; p++) {
        if (!m->psize[p] || (p == P_LMH && m->cfg.tie_word_embeddings))
            continue;
        float *x = m->params + m->poff[p];
        if (p == P_LN1 || p == P_LN2 || p == P_LNF) {
            for (size_t i = 0; i < m->psize[p]; i++)
                x[i] = 1.0f;
        } else { /* normal(0, std), as HF's _init_weights (biases too, here) */
            kd_fill_normal(x, m->psize[p], std, seed, (uint64_t)p);
        }
    }
    *out = m;
    return KD_OK;
}

int kd_student_load(const char *dir, kd_student **out)
{
    *out = NULL;
    kd_student *m = calloc(1, sizeof *m);
    if (!m)
        return kd_err(KD_E_NOMEM, "student model");
    kd_st *st = NULL;
    int rc = kd_model_config_load(dir, &m->cfg);
    if (rc)
        goto fail;
    if ((rc = build_(m)))
        goto fail;
    if ((rc = kd_st_open(dir, &st)))
        goto fail;
    size_t covered = 0;
    for (size_t i = 0; i < m->nspecs; i++) {
        const kd_tensor_spec *sp = &m->specs[i];
        size_t off, numel;
        if (find_slot_(m, sp->name, &off, &numel) < 0) {
            rc = kd_err(KD_E_INTERNAL, "manifest tensor '%s' has no place in the dense student",
                        sp->name);
            goto fail;
        }
        const kd_st_tensor *t = kd_st_find(st, sp->name);
        if (!t) {
            rc = kd_err(KD_E_NOTFOUND, "tensor '%s' is not in '%s'", sp->name, dir);
            goto fail;
        }
        int ok = t->ndim == sp->ndim && t->numel == numel;
        for (int d = 0; ok && d < sp->ndim; d++)
            ok = t->shape[d] == sp->shape[d];
        if (!ok) {
            rc = kd_err(KD_E_SHAPE, "tensor '%s' has %d dims / %llu elements, config says %d / %zu",
                        sp->name, t->ndim, (unsigned long long)t->numel, sp->ndim, numel);
            goto fail;
        }
        if ((rc = kd_st_tensor_f32(st, t, m->cfg.fp8 ? m->cfg.fp8_block : NULL, m->params + off)))
            goto fail;
        covered += numel;
    }
    if (covered != m->nparams) {
        rc = kd_err(KD_E_INTERNAL, "manifest covers %zu of %zu parameters", covered, m->nparams);
        goto fail;
    }
    kd_st_free(st);
    *out = m;
    return KD_OK;
fail:
    kd_st_free(st);
    kd_student_free(m);
    return rc;
}

void kd_student_free(kd_student *m)
{
    if (!m)
        return;
    free(m->specs);
    free(m->params);
    free(m->grads);
    free(m->adam_m);
    free(m->acts_mem);
    free(m);
}

const kd_model_config *kd_student_config(const kd_student *m) { return &m->cfg; }
size_t kd_student_param_count(const kd_student *m) { return m->nspecs; }
const char *kd_student_param_name(const kd_student *m, size_t i)
{
    return i < m->nspecs ? m->specs[i].name : NULL;
}

int kd_student_tensor(kd_student *m, const char *name, int which, float **data, size_t *numel)
{
    size_t off, n;
    if (find_slot_(m, name, &off, &n) < 0)
        return kd_err(KD_E_NOTFOUND, "no parameter '%s' in the student", name);
    if (which >= 2)
        KD_TRY(ensure_moments_(m));
    float *base = which == 0 ? m->params : which == 1 ? m->grads : which == 2 ? m->adam_m : m->adam_v;
    *data = base + off;
    *numel = n;
    return KD_OK;
}

/* ---- activations ------------------------------------------------------------ */

static int ensure_acts_(kd_student *m, int64_t B, int64_t T)
{
    if (m->acts_mem && m->act_B == B && m->act_T == T)
        return KD_OK;
    const kd_model_config *c = &m->cfg;
    const size_t N = (size_t)(B * T), V = (size_t)c->vocab_size, C = (size_t)c->hidden_size;
    const size_t L = (size_t)c->num_layers, H = (size_t)c->num_heads, D = (size_t)c->head_dim;
    const size_t Q = H * D, R = (size_t)c->num_kv_heads * D, F = (size_t)c->intermediate_size;
    const size_t sz[N_ACTS] = {
        N * C, L * N * C, L * N, L * N * Q, L * N * R, L * N * R, L * N * Q, L * N * H,
        L * N * C, L * N * C, L * N, L * N * F, L * N * F, L * N * F, L * N * C, N * C, N, N * V,
        N * C, N * C, N * Q, N * R, N * R, N * Q, N * F, N * F, N * F, N * V,
        (size_t)T * D / 2, (size_t)T * D / 2,
    };
    size_t total = 0;
    for (int i = 0; i < N_ACTS; i++)
        total += sz[i];
    free(m->acts_mem);
    m->acts_mem = malloc(total * sizeof(float));
    if (!m->acts_mem) {
        m->act_B = m->act_T = 0;
        return kd_err(KD_E_NOMEM, "student activations (%zu floats)", total);
    }
    float **ptrs = (float **)&m->a;
    float *p = m->acts_mem;
    for (int i = 0; i < N_ACTS; i++) {
        ptrs[i] = p;
        p += sz[i];
    }
    m->act_B = B;
    m->act_T = T;
    return kd_rope_table(m->a.rope_cos, m->a.rope_sin, &c->rope, T, (int64_t)D, &m->attn_scale);
}

/* ---- forward ------------------------------------------------------------------- */

/* pos (B, T): each row a run of documents, positions 0, 1, ... restarting at 0 */
static int check_pos_(const int64_t *pos, int64_t B, int64_t T)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t p = pos[b * T + t];
            if (p != 0 && (t == 0 || p != pos[b * T + t - 1] + 1))
                return kd_err(KD_E_RANGE, "position %lld at row %lld, token %lld: positions must "
                              "start at 0 and count up by one within each document",
                              (long long)p, (long long)b, (long long)t);
        }
    return KD_OK;
}

int kd_student_forward(kd_student *m, const int64_t *ids, const int64_t *pos, int64_t B, int64_t T,
                       float *logits)
{
    const kd_model_config *c = &m->cfg;
    const int64_t N = B * T, V = c->vocab_size, C = c->hidden_size, L = c->num_layers;
    const int64_t H = c->num_heads, K = c->num_kv_heads, D = c->head_dim, Q = H * D, R = K * D;
    const int64_t F = c->intermediate_size;
    if (B <= 0 || T <= 0)
        return kd_err(KD_E_RANGE, "batch %lld x %lld tokens", (long long)B, (long long)T);
    /* with positions, a row may hold documents of more tokens in all than a
     * position can reach (the trainer's flat batches); each position must fit */
    if (c->max_position > 0 && !pos && T > c->max_position)
        return kd_err(KD_E_RANGE, "%lld tokens exceed max_position_embeddings %lld", (long long)T,
                      (long long)c->max_position);
    for (int64_t i = 0; pos && c->max_position > 0 && i < N; i++)
        if (pos[i] >= c->max_position)
            return kd_err(KD_E_RANGE, "position %lld (token %lld) exceeds max_position_embeddings %lld",
                          (long long)pos[i], (long long)i, (long long)c->max_position);
    for (int64_t i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return kd_err(KD_E_RANGE, "token id %lld at %lld is outside [0, %lld)",
                          (long long)ids[i], (long long)i, (long long)V);
    if (pos)
        KD_TRY(check_pos_(pos, B, T));
    KD_TRY(ensure_acts_(m, B, T));
    acts *a = &m->a;
    float *P = m->params;
    const float scale = 1.0f / sqrtf((float)D);

    PROF_(PF_EMBED, kd_embedding_forward(a->x0, ids, slot_(P, m, P_WTE), N, C));
    for (int64_t l = 0; l < L; l++) {
        const float *xin = l == 0 ? a->x0 : a->res2 + (l - 1) * N * C;
        float *ln1 = a->ln1 + l * N * C, *q = a->q + l * N * Q, *k = a->k + l * N * R;
        float *v = a->v + l * N * R, *atty = a->atty + l * N * Q, *lse = a->lse + l * N * H;
        float *res1 = a->res1 + l * N * C, *ln2 = a->ln2 + l * N * C;
        float *gate = a->gate + l * N * F, *up = a->up + l * N * F, *act = a->act + l * N * F;
        float *res2 = a->res2 + l * N * C;
#define W(p, n) (slot_(P, m, p) ? slot_(P, m, p) + l * (n) : NULL)
        PROF_(PF_NORM, kd_rmsnorm_forward(ln1, a->ln1_rstd + l * N, xin, W(P_LN1, C), N, C, c->rms_norm_eps));
        PROF_(PF_MATMUL, kd_matmul_forward(q, ln1, W(P_QW, Q * C), W(P_QB, Q), N, C, Q));
        PROF_(PF_MATMUL, kd_matmul_forward(k, ln1, W(P_KW, R * C), W(P_KB, R), N, C, R));
        PROF_(PF_MATMUL, kd_matmul_forward(v, ln1, W(P_VW, R * C), W(P_VB, R), N, C, R));
        PROF_(PF_ROPE, kd_rope_forward(q, a->rope_cos, a->rope_sin, pos, B, T, H, D));
        PROF_(PF_ROPE, kd_rope_forward(k, a->rope_cos, a->rope_sin, pos, B, T, K, D));
        PROF_(PF_ATTN, kd_attention_forward(atty, lse, q, k, v, pos, B, T, H, K, D, scale));
        PROF_(PF_MATMUL, kd_matmul_forward(res1, atty, W(P_OW, C * Q), W(P_OB, C), N, Q, C));
        PROF_(PF_OTHER, kd_residual_forward(res1, res1, xin, N * C));
        PROF_(PF_NORM, kd_rmsnorm_forward(ln2, a->ln2_rstd + l * N, res1, W(P_LN2, C), N, C, c->rms_norm_eps));
        PROF_(PF_MATMUL, kd_matmul_forward(gate, ln2, W(P_GW, F * C), W(P_GB, F), N, C, F));
        PROF_(PF_MATMUL, kd_matmul_forward(up, ln2, W(P_UW, F * C), W(P_UB, F), N, C, F));
        PROF_(PF_SWIGLU, kd_swiglu_forward(act, gate, up, N * F));
        PROF_(PF_MATMUL, kd_matmul_forward(res2, act, W(P_DW, C * F), W(P_DB, C), N, F, C));
        PROF_(PF_OTHER, kd_residual_forward(res2, res2, res1, N * C));
#undef W
    }
    PROF_(PF_NORM, kd_rmsnorm_forward(a->lnf, a->lnf_rstd, a->res2 + (L - 1) * N * C, slot_(P, m, P_LNF), N, C,
                       c->rms_norm_eps));
    PROF_(PF_MATMUL, kd_matmul_forward(a->logits, a->lnf, slot_(P, m, P_LMH), NULL, N, C, V));
    if (logits)
        memcpy(logits, a->logits, (size_t)(N * V) * sizeof(float));
    return KD_OK;
}

/* ---- backward ------------------------------------------------------------------- */

/* The targets of a batch: position t is scored against labels[b, t+1]; the
 * last position of a row, and the last of each document of a packed row,
 * predict nothing. NULL labels count every next token. */
static int targets_(const kd_student *m, const int64_t *labels, const int64_t *ids,
                    const int64_t *pos, int64_t B, int64_t T, int64_t *tgt)
{
    const int64_t V = m->cfg.vocab_size;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t, y = KD_IGNORE_INDEX;
            if (t + 1 < T && !(pos && pos[i + 1] == 0))
                y = labels ? labels[i + 1] : ids[i + 1];
            if (y != KD_IGNORE_INDEX && (y < 0 || y >= V))
                return kd_err(KD_E_RANGE, "label %lld at row %lld, token %lld is outside [0, %lld)",
                              (long long)y, (long long)b, (long long)(t + 1), (long long)V);
            tgt[i] = y;
        }
    return KD_OK;
}

int64_t kd_student_count_targets(const int64_t *labels, const int64_t *pos, int64_t B, int64_t T)
{
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t + 1 < T; t++)
            n += labels[b * T + t + 1] != KD_IGNORE_INDEX && !(pos && pos[b * T + t + 1] == 0);
    return n;
}

int kd_student_loss(kd_student *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                    int64_t B, int64_t T, double *loss_sum, int64_t *count)
{
    KD_TRY(kd_student_forward(m, ids, pos, B, T, NULL));
    int64_t *tgt = malloc((size_t)(B * T) * sizeof(int64_t));
    if (!tgt)
        return kd_err(KD_E_NOMEM, "targets");
    int st = targets_(m, labels, ids, pos, B, T, tgt);
    if (!st)
        *loss_sum = kd_crossentropy_forward(m->a.logits, tgt, B * T, m->cfg.vocab_size, count);
    free(tgt);
    return st;
}

void kd_student_zero_grad(kd_student *m) { memset(m->grads, 0, m->nparams * sizeof(float)); }

int kd_student_loss_backward(kd_student *m, const int64_t *ids, const int64_t *labels, int64_t B,
                             int64_t T, float *loss)
{
    int64_t n = kd_student_count_targets(labels, NULL, B, T);
    double sum = 0.0;
    kd_student_zero_grad(m);
    KD_TRY(kd_student_backward(m, ids, labels, NULL, B, T, n ? 1.0 / (double)n : 0.0, &sum, NULL));
    *loss = (float)(n ? sum / (double)n : 0.0);
    return KD_OK;
}

int kd_student_backward(kd_student *m, const int64_t *ids, const int64_t *labels,
                        const int64_t *pos, int64_t B, int64_t T, double scale, double *loss_sum,
                        int64_t *count)
{
    KD_TRY(kd_student_forward(m, ids, pos, B, T, NULL));
    const kd_model_config *c = &m->cfg;
    const int64_t N = B * T, V = c->vocab_size, C = c->hidden_size, L = c->num_layers;
    const int64_t H = c->num_heads, K = c->num_kv_heads, D = c->head_dim, Q = H * D, R = K * D;
    const int64_t F = c->intermediate_size;
    acts *a = &m->a;
    float *P = m->params, *G = m->grads;
    const float scale_qk = 1.0f / sqrtf((float)D);

    int64_t *tgt = malloc((size_t)N * sizeof(int64_t));
    if (!tgt)
        return kd_err(KD_E_NOMEM, "targets");
    int st = targets_(m, labels, ids, pos, B, T, tgt);
    if (st) {
        free(tgt);
        return st;
    }
    int64_t cnt = 0;
    double sum = 0;
    PROF_(PF_XENT, sum = kd_crossentropy_forward(a->logits, tgt, N, V, &cnt));
    if (loss_sum)
        *loss_sum = sum;
    if (count)
        *count = cnt;
    PROF_(PF_XENT, kd_crossentropy_backward(a->dlogits, a->logits, tgt, N, V, scale));
    free(tgt);

#define Z(p, n) memset((p), 0, (size_t)(n) * sizeof(float))
    Z(a->dln, N * C);
    PROF_(PF_MATMUL_BW, kd_matmul_backward(a->dln, slot_(G, m, P_LMH), NULL, a->dlogits, a->lnf, slot_(P, m, P_LMH), N,
                       C, V));
    Z(a->dres, N * C);
    PROF_(PF_NORM, kd_rmsnorm_backward(a->dres, slot_(G, m, P_LNF), a->dln, a->res2 + (L - 1) * N * C,
                        slot_(P, m, P_LNF), a->lnf_rstd, N, C));
    for (int64_t l = L - 1; l >= 0; l--) {
        const float *xin = l == 0 ? a->x0 : a->res2 + (l - 1) * N * C;
        float *ln1 = a->ln1 + l * N * C, *q = a->q + l * N * Q, *k = a->k + l * N * R;
        float *v = a->v + l * N * R, *atty = a->atty + l * N * Q, *lse = a->lse + l * N * H;
        float *res1 = a->res1 + l * N * C, *ln2 = a->ln2 + l * N * C;
        float *gate = a->gate + l * N * F, *up = a->up + l * N * F, *act = a->act + l * N * F;
#define W(p, n) (slot_(P, m, p) ? slot_(P, m, p) + l * (n) : NULL)
#define DW(p, n) (slot_(G, m, p) ? slot_(G, m, p) + l * (n) : NULL)
        /* res2 = res1 + down(act): dres is d res2, and flows on to d res1 */
        Z(a->dact, N * F);
        PROF_(PF_MATMUL_BW, kd_matmul_backward(a->dact, DW(P_DW, C * F), DW(P_DB, C), a->dres, act, W(P_DW, C * F), N,
                           F, C));
        Z(a->dgate, N * F);
        Z(a->dup, N * F);
        PROF_(PF_SWIGLU, kd_swiglu_backward(a->dgate, a->dup, a->dact, gate, up, N * F));
        Z(a->dln, N * C);
        PROF_(PF_MATMUL_BW, kd_matmul_backward(a->dln, DW(P_GW, F * C), DW(P_GB, F), a->dgate, ln2, W(P_GW, F * C), N,
                           C, F));
        PROF_(PF_MATMUL_BW, kd_matmul_backward(a->dln, DW(P_UW, F * C), DW(P_UB, F), a->dup, ln2, W(P_UW, F * C), N,
                           C, F));
        PROF_(PF_NORM, kd_rmsnorm_backward(a->dres, DW(P_LN2, C), a->dln, res1, W(P_LN2, C),
                            a->ln2_rstd + l * N, N, C));
        /* res1 = xin + o(atty): dres is now d res1, and flows on to d xin */
        Z(a->datt, N * Q);
        PROF_(PF_MATMUL_BW, kd_matmul_backward(a->datt, DW(P_OW, C * Q), DW(P_OB, C), a->dres, atty, W(P_OW, C * Q), N,
                           Q, C));
        Z(a->dq, N * Q);
        Z(a->dk, N * R);
        Z(a->dv, N * R);
        PROF_(PF_ATTN_BW, kd_attention_backward(a->dq, a->dk, a->dv, a->datt, q, k, v, atty, lse, pos, B, T, H, K, D,
                              scale_qk));
        PROF_(PF_ROPE, kd_rope_backward(a->dq, a->rope_cos, a->rope_sin, pos, B, T, H, D));
        PROF_(PF_ROPE, kd_rope_backward(a->dk, a->rope_cos, a->rope_sin, pos, B, T, K, D));
        Z(a->dln, N * C);
        PROF_(PF_MATMUL_BW, kd_matmul_backward(a->dln, DW(P_QW, Q * C), DW(P_QB, Q), a->dq, ln1, W(P_QW, Q * C), N, C, Q));
        PROF_(PF_MATMUL_BW, kd_matmul_backward(a->dln, DW(P_KW, R * C), DW(P_KB, R), a->dk, ln1, W(P_KW, R * C), N, C, R));
        PROF_(PF_MATMUL_BW, kd_matmul_backward(a->dln, DW(P_VW, R * C), DW(P_VB, R), a->dv, ln1, W(P_VW, R * C), N, C, R));
        PROF_(PF_NORM, kd_rmsnorm_backward(a->dres, DW(P_LN1, C), a->dln, xin, W(P_LN1, C), a->ln1_rstd + l * N, N,
                            C));
#undef W
#undef DW
    }
    PROF_(PF_EMBED, kd_embedding_backward(slot_(G, m, P_WTE), a->dres, ids, N, C));
#undef Z
    return KD_OK;
}

/* ---- update ------------------------------------------------------------------------ */

static int ensure_moments_(kd_student *m)
{
    if (m->adam_m)
        return KD_OK;
    /* malloc and write zeros, not calloc: AdamW reads a moment before writing
     * it, and a read of calloc's zero page followed by a write costs a
     * copy-on-write fault with a TLB shootdown on every core, per page */
    m->adam_m = malloc(2 * m->nparams * sizeof(float));
    if (!m->adam_m)
        return kd_err(KD_E_NOMEM, "AdamW moments (%zu floats)", 2 * m->nparams);
    float *z = m->adam_m;
    const size_t n = 2 * m->nparams;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++)
        z[i] = 0.0f;
    m->adam_v = m->adam_m + m->nparams;
    return KD_OK;
}

/* slots that are norm weights or biases: no weight decay when asked */
static int no_decay_slot_(int p)
{
    return p == P_LN1 || p == P_LN2 || p == P_LNF || p == P_QB || p == P_KB || p == P_VB ||
           p == P_OB || p == P_GB || p == P_UB || p == P_DB;
}

int kd_student_adamw_step(kd_student *m, const kd_adamw *hp, int no_decay_norm_bias)
{
    KD_TRY(ensure_moments_(m));
    m->step++;
    if (!no_decay_norm_bias) {
        PROF_(PF_ADAMW, kd_adamw_update(m->params, m->grads, m->adam_m, m->adam_v, (int64_t)m->nparams,
                                        hp, m->step));
        return KD_OK;
    }
    kd_adamw nd = *hp;
    nd.weight_decay = 0.0;
    for (int p = 0; p < P_COUNT; p++) {
        if (!m->psize[p] || (p == P_LMH && m->cfg.tie_word_embeddings))
            continue;
        size_t o = m->poff[p];
        PROF_(PF_ADAMW, kd_adamw_update(m->params + o, m->grads + o, m->adam_m + o, m->adam_v + o,
                                        (int64_t)m->psize[p], no_decay_slot_(p) ? &nd : hp, m->step));
    }
    return KD_OK;
}

double kd_student_grad_norm(const kd_student *m) { return kd_norm2_det(m->grads, m->nparams); }

void kd_student_scale_grads(kd_student *m, float s)
{
    float *g = m->grads;
#pragma omp parallel for if (m->nparams > 65536)
    for (size_t i = 0; i < m->nparams; i++)
        g[i] *= s;
}

int64_t kd_student_step(const kd_student *m) { return m->step; }

int kd_student_set_step(kd_student *m, int64_t step)
{
    if (step < 0)
        return kd_err(KD_E_RANGE, "optimizer step %lld", (long long)step);
    if (step > 0)
        KD_TRY(ensure_moments_(m));
    m->step = step;
    return KD_OK;
}

size_t kd_student_numel(const kd_student *m) { return m->nparams; }

/* ---- inference over the paged cache ---------------------------------------------- */

int kd_student_kvpool_new(const kd_student *m, int64_t nblocks, int64_t block, kd_kvpool **out)
{
    const kd_model_config *c = &m->cfg;
    return kd_kvpool_new(c->num_layers, 2 * c->num_kv_heads * c->head_dim, nblocks, block, &c->rope,
                         c->head_dim, c->max_position, out);
}

int kd_student_step_paged(kd_student *m, kd_kvpool *pool, kd_kvseq *const *seqs, int nseq, const int64_t *ids,
                          const int64_t *nn, int all_logits, float *logits)
{
    const kd_model_config *c = &m->cfg;
    const int64_t V = c->vocab_size, C = c->hidden_size, L = c->num_layers;
    const int64_t H = c->num_heads, K = c->num_kv_heads, D = c->head_dim, Q = H * D, R = K * D;
    const int64_t F = c->intermediate_size;
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
    /* scratch: x, ln (N, C); q, att (N, Q); k, v (N, R); gate, up (N, F) */
    const size_t need = (size_t)(2 * N * C + 2 * N * Q + 2 * N * R + 2 * N * F);
    float *mem = malloc(need * sizeof(float));
    int64_t *pos = malloc((size_t)N * sizeof *pos), *offs = malloc((size_t)nseq * sizeof *offs);
    if (!mem || !pos || !offs) {
        free(mem);
        free(pos);
        free(offs);
        return kd_err(KD_E_NOMEM, "decode scratch (%zu floats)", need);
    }
    for (int i = 0, o = 0; i < nseq; o += (int)nn[i], i++)
        offs[i] = o; /* the sequence's first row */
    float *x = mem, *ln = x + N * C, *q = ln + N * C, *att = q + N * Q, *k = att + N * Q, *v = k + N * R;
    float *gate = v + N * R, *up = gate + N * F;
    float *P = m->params;
    const float scale = 1.0f / sqrtf((float)D);
    for (int i = 0, r = 0; i < nseq; i++)
        for (int64_t t = 0; t < nn[i]; t++)
            pos[r++] = seqs[i]->len + t;

    kd_embedding_forward(x, ids, slot_(P, m, P_WTE), N, C);
    for (int64_t l = 0; l < L; l++) {
#define W(p, sz) (slot_(P, m, p) ? slot_(P, m, p) + l * (sz) : NULL)
        kd_rmsnorm_forward(ln, NULL, x, W(P_LN1, C), N, C, c->rms_norm_eps);
        kd_matmul_rowwise(q, ln, W(P_QW, Q * C), W(P_QB, Q), N, C, Q);
        kd_matmul_rowwise(k, ln, W(P_KW, R * C), W(P_KB, R), N, C, R);
        kd_matmul_rowwise(v, ln, W(P_VW, R * C), W(P_VB, R), N, C, R);
        /* each row rotated at its own position; its [k | v] into its block */
        for (int i = 0, r = 0; i < nseq; i++)
            for (int64_t t = 0; t < nn[i]; t++, r++) {
                const float *cs = kd_kvpool_cos(pool, pos[r]), *sn = kd_kvpool_sin(pool, pos[r]);
                kd_rope_forward(q + r * Q, cs, sn, NULL, 1, 1, H, D);
                kd_rope_forward(k + r * R, cs, sn, NULL, 1, 1, K, D);
                float *dst = kd_kvpool_at(pool, seqs[i], l, pos[r]);
                memcpy(dst, k + r * R, (size_t)R * sizeof(float));
                memcpy(dst + R, v + r * R, (size_t)R * sizeof(float));
            }
        /* attention, sequence by sequence, over its gathered rows: the sequences
         * in parallel, each on its thread's scratch (the same arithmetic) */
        int oom = 0;
#pragma omp parallel if (nseq > 1)
        {
            float *kvt = malloc((size_t)(2 * Tmax * R + Tmax) * sizeof(float)); /* rows, then scores */
            if (!kvt) {
#pragma omp atomic write
                oom = 1;
            }
#pragma omp for schedule(dynamic, 1)
            for (int i = 0; i < nseq; i++) {
                if (!kvt)
                    continue;
                const int64_t p0 = seqs[i]->len;
                kd_kvpool_gather(pool, seqs[i], l, p0 + nn[i], kvt);
                kd_attention_cached(att + offs[i] * Q, q + offs[i] * Q, kvt, kvt + R, 2 * R, 2 * R, p0, nn[i], H, K,
                                    D, D, scale, kvt + 2 * Tmax * R);
            }
            free(kvt);
        }
        if (oom) {
            free(mem);
            free(pos);
            free(offs);
            return kd_err(KD_E_NOMEM, "decode attention scratch");
        }
        kd_matmul_rowwise(ln, att, W(P_OW, C * Q), W(P_OB, C), N, Q, C);
        kd_residual_forward(x, x, ln, N * C);
        kd_rmsnorm_forward(ln, NULL, x, W(P_LN2, C), N, C, c->rms_norm_eps);
        kd_matmul_rowwise(gate, ln, W(P_GW, F * C), W(P_GB, F), N, C, F);
        kd_matmul_rowwise(up, ln, W(P_UW, F * C), W(P_UB, F), N, C, F);
        kd_swiglu_forward(gate, gate, up, N * F);
        kd_matmul_rowwise(ln, gate, W(P_DW, C * F), W(P_DB, C), N, F, C);
        kd_residual_forward(x, x, ln, N * C);
#undef W
    }
    /* the final norm of the rows whose logits are wanted, then one matmul */
    int64_t nout = 0;
    for (int i = 0, r = 0; i < nseq; i++) {
        for (int64_t t = 0; t < nn[i]; t++, r++)
            if (logits && (all_logits || t + 1 == nn[i]))
                kd_rmsnorm_forward(ln + (nout++) * C, NULL, x + r * C, slot_(P, m, P_LNF), 1, C, c->rms_norm_eps);
        seqs[i]->len += nn[i];
    }
    if (nout)
        kd_matmul_rowwise(logits, ln, slot_(P, m, P_LMH), NULL, nout, C, V);
    free(mem);
    free(pos);
    free(offs);
    return KD_OK;
}

/* ---- one sequence's cache: a pool of its own ----------------------------------------- */

struct kd_kvcache {
    kd_kvpool *pool;
    kd_kvseq seq;
};

int kd_kvcache_new(const kd_student *m, int64_t max_T, kd_kvcache **out)
{
    *out = NULL;
    const kd_model_config *c = &m->cfg;
    if (max_T <= 0 || (c->max_position > 0 && max_T > c->max_position))
        return kd_err(KD_E_RANGE, "kv cache of %lld positions (max_position_embeddings %lld)",
                      (long long)max_T, (long long)c->max_position);
    kd_kvcache *kv = calloc(1, sizeof *kv);
    if (!kv)
        return kd_err(KD_E_NOMEM, "kv cache");
    const int64_t bs = 16;
    int rc = kd_kvpool_new(c->num_layers, 2 * c->num_kv_heads * c->head_dim, (max_T + bs - 1) / bs, bs,
                           &c->rope, c->head_dim, max_T, &kv->pool);
    if (rc) {
        free(kv);
        return rc;
    }
    *out = kv;
    return KD_OK;
}

void kd_kvcache_free(kd_kvcache *kv)
{
    if (!kv)
        return;
    if (kv->pool)
        kd_kvseq_release(kv->pool, &kv->seq);
    kd_kvpool_free(kv->pool);
    free(kv);
}

int64_t kd_kvcache_len(const kd_kvcache *kv) { return kv->seq.len; }

int kd_student_extend(kd_student *m, kd_kvcache *kv, const int64_t *ids, int64_t n, float *logits)
{
    kd_kvseq *sq = &kv->seq;
    if (n <= 0 || sq->len + n > kd_kvpool_max_pos(kv->pool))
        return kd_err(KD_E_RANGE, "%lld new tokens at position %lld do not fit a kv cache of %lld",
                      (long long)n, (long long)sq->len, (long long)kd_kvpool_max_pos(kv->pool));
    return kd_student_step_paged(m, kv->pool, &sq, 1, ids, &n, 0, logits);
}

int kd_student_generate_greedy(kd_student *m, const int64_t *prompt, int64_t P, int64_t N,
                               const int64_t *suppress, int nsuppress, int64_t *out,
                               float *step_logits)
{
    const int64_t V = m->cfg.vocab_size;
    if (P <= 0 || N < 0)
        return kd_err(KD_E_RANGE, "prompt of %lld tokens, %lld new", (long long)P, (long long)N);
    memcpy(out, prompt, (size_t)P * sizeof(int64_t));
    if (N == 0)
        return KD_OK;
    kd_kvcache *kv = NULL;
    KD_TRY(kd_kvcache_new(m, P + N, &kv));
    float *row = malloc((size_t)V * sizeof(float));
    kd_sampler_cfg greedy;
    kd_sampler_cfg_init(&greedy);
    greedy.temperature = 0.0;
    int rc = row ? KD_OK : kd_err(KD_E_NOMEM, "logits row");
    if (!rc)
        rc = kd_student_extend(m, kv, prompt, P, row);
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
            rc = kd_student_extend(m, kv, &best, 1, row);
    }
    free(row);
    kd_kvcache_free(kv);
    return rc;
}

int kd_generation_eos(const char *dir, int64_t *ids, int max, int *n)
{
    char path[4096];
    *n = 0;
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return KD_OK; /* no generation config: nothing to suppress */
    fclose(f);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return kd_err(KD_E_FORMAT, "'%s': %s (line %d)", path, root ? "not an object" : je.text,
                      je.line);
    }
    json_t *e = json_object_get(root, "eos_token_id");
    int rc = KD_OK;
    if (!e || json_is_null(e)) {
    } else if (json_is_integer(e)) {
        ids[(*n)++] = (int64_t)json_integer_value(e);
    } else if (json_is_array(e) && json_array_size(e) <= (size_t)max) {
        size_t i;
        json_t *v;
        json_array_foreach(e, i, v) {
            if (!json_is_integer(v)) {
                rc = kd_err(KD_E_CONFIG, "'%s': eos_token_id item %zu is %s", path, i,
                            kd_json_type_name(v));
                break;
            }
            ids[(*n)++] = (int64_t)json_integer_value(v);
        }
    } else {
        rc = kd_err(KD_E_CONFIG, "'%s': eos_token_id must be null, an integer or a list of at most %d"
                    " integers, got %s", path, max, kd_json_type_name(e));
    }
    json_decref(root);
    if (rc)
        *n = 0;
    return rc;
}
