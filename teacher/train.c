/* train.c - the teacher (DeepSeek-V3/V2) for training on the CPU reference
 * ops. See train.h.
 *
 * Legend: B batch, T tokens, N = B*T, V vocab, C hidden, L layers, H heads,
 * Q q_lora_rank, R kv_lora_rank, Dn / Dr / Dv the nope, rope and value head
 * dims, Dq = Dn + Dr, Dp = max(Dq, Dv) (attention runs with q, k, v padded
 * to Dp with zeros: zeros change no score and no output), E routed experts,
 * k experts per token, Fm expert width, Fs = Fm * n_shared_experts, F dense
 * mlp width, Fh = max(F, Fs), M the MoE layers, A = N k the (token, expert)
 * assignments of a MoE layer.
 *
 * Order: the parameter layout and load, the activations, the layer pieces
 * (MLA, the MoE), each forward next to its backward, then the model's
 * forward, loss, backward, update, and the parity check of ref_train.
 */
#include "teacher/train.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/inspect.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "student/parity.h"
#include "teacher/internal.h"

#define NONE ((size_t)-1)
#define MAX_DR 1024 /* rope head dims above this are refused at load (a stack buffer per row) */
#define MAX_E 4096  /* routed experts, and experts per token, above these are refused at load (stack */
#define MAX_K 256   /* buffers of the router's backward; DeepSeek-V3 has 256 and 8) */

/* ---- parameters ------------------------------------------------------------------ */

/* One layer's tensors: offsets into params / grads (NONE when absent). */
typedef struct tlayer_ {
    size_t ln1, ln2;                     /* (C) */
    size_t q_a, q_a_b, q_a_ln, q_b;      /* (Q, C) (Q) (Q) (H Dq, Q) */
    size_t q_proj;                       /* (H Dq, C) when Q == 0 */
    size_t kv_a, kv_a_b, kv_ln, kv_b;    /* (R + Dr, C) (R + Dr) (R) (H (Dn + Dv), R) */
    size_t o, o_b;                       /* (C, H Dv) (C) */
    int moe;                             /* 1: the MoE below, 0: the dense mlp */
    int64_t mi;                          /* index among the MoE layers */
    size_t gate, up, down;               /* dense: (F, C) (F, C) (C, F) */
    size_t router;                       /* (E, C) mlp.gate.weight */
    size_t bias;                         /* (E) correction bias, an offset into bufs, or NONE */
    size_t egu, edown;                   /* (E, 2 Fm, C), (E, C, Fm) */
    size_t sg, su, sd;                   /* shared experts: (Fs, C) (Fs, C) (C, Fs), or NONE */
} tlayer_;

/* A named tensor: a parameter (listed once in the parameter list), an alias
 * (one routed expert's weight, inside a fused tensor) or a buffer. */
typedef struct entry_ {
    char name[128];
    size_t off, numel;
    int buffer;
} entry_;

/* the activations, (L, ...) per layer; see carve_ for every size */
typedef struct acts_ {
    float *x0;                 /* (N, C) embeddings */
    float *ln1, *ln1_rstd;     /* (L, N, C), (L, N) */
    float *qa, *qa_rstd, *qan; /* (L, N, Q) q_a_proj out, (L, N), (L, N, Q) after its norm */
    float *ckv, *kv_rstd, *cn; /* (L, N, R) latent, (L, N), (L, N, R) after its norm */
    float *qp, *kp, *vp;       /* (L, N, H, Dp) attention inputs, rope applied, padded */
    float *attp, *lse;         /* (L, N, H, Dp), (L, B, H, T) */
    float *atty;               /* (L, N, H Dv) the values part of attp */
    float *res1;               /* (L, N, C) after the attention residual */
    float *ln2, *ln2_rstd;     /* (L, N, C), (L, N) */
    float *hg, *hu, *ha;       /* (L, N, Fh) dense or shared-expert gate, up, silu(gate)*up */
    float *res2;               /* (L, N, C) the layer's output */
    float *rlog, *wt;          /* (M, N, E) router logits, (M, N, k) gate weights */
    float *xg;                 /* (M, A, C) expert inputs, grouped by expert */
    float *eg, *eu, *ea;       /* (M, A, Fm) */
    float *ey;                 /* (M, A, C) expert outputs, before their weight */
    float *lnf, *lnf_rstd;     /* (N, C), (N) */
    float *logits;             /* (N, V) */
    float *rcos, *rsin;        /* (T, Dr/2) */
    /* scratch, reused by every layer */
    float *q;                  /* (N, H Dq) */
    float *kvf;                /* (N, R + Dr) kv_a_proj_with_mqa out / its gradient */
    float *kvb;                /* (N, H (Dn + Dv)) kv_b_proj out / its gradient */
    float *kr;                 /* (N, Dr) the rope key */
    float *rsc;                /* (2 E) routing */
    float *dres, *dln, *dtmp;  /* (N, C) */
    float *dqp, *dkp, *dvp, *dattp; /* (N, H, Dp) */
    float *datt;               /* (N, H Dv) */
    float *dq;                 /* (N, H Dq) */
    float *dqa, *dqan;         /* (N, Q) */
    float *dc, *dcr;           /* (N, R) */
    float *dh1, *dh2, *dh3;    /* (N, Fh) */
    float *dwt;                /* (N, k) */
    float *drlog;              /* (N, E) */
    float *dxg, *dey;          /* (A, C) */
    float *de1, *de2, *de3;    /* (A, Fm) */
    float *dlogits;            /* (N, V) */
} acts_;

struct kd_teacher_train {
    kd_model_config cfg;
    size_t nparams;
    float *params, *grads;    /* one allocation each, the same layout */
    float *adam_m, *adam_v;   /* one allocation (2 nparams), on the first step */
    float *bufs;              /* the correction biases: one allocation */
    int64_t step;
    size_t wte, lnf, lmh;     /* lm_head is wte when tied */
    tlayer_ *layers;
    int64_t nmoe;             /* M */
    entry_ *ents;             /* every name, sorted */
    size_t nents;
    size_t *list;             /* the parameter list: indices into ents, manifest order */
    size_t nlist;
    float scale;              /* the softmax scale */
    acts_ a;
    float *acts_mem;          /* one allocation */
    int64_t *idx_mem;         /* one allocation: idx (M, N, k), perm (M, A), estart (M, E + 1) */
    int64_t act_B, act_T;
};

static int ent_cmp_(const void *a, const void *b)
{
    return strcmp(((const entry_ *)a)->name, ((const entry_ *)b)->name);
}

static const entry_ *find_(const kd_teacher_train *m, const char *name)
{
    entry_ key;
    if (strlen(name) >= sizeof key.name)
        return NULL;
    strcpy(key.name, name);
    return bsearch(&key, m->ents, m->nents, sizeof *m->ents, ent_cmp_);
}

static size_t off_(const kd_teacher_train *m, const char *fmt, long long l, const char *suffix)
{
    char name[160];
    snprintf(name, sizeof name, fmt, l, suffix);
    const entry_ *e = find_(m, name);
    return e && !e->buffer ? e->off : NONE;
}


/* Lay out the manifest: non-expert tensors in manifest order, the routed
 * experts of each MoE layer as its two fused blocks, the correction biases
 * in bufs. Fills ents (sorted), list, nparams and the buffer size. */
static int layout_(kd_teacher_train *m, const kd_tensor_spec *specs, size_t nspecs, size_t *nbufs)
{
    const kd_model_config *c = &m->cfg;
    const int64_t L = c->num_layers, E = c->n_routed_experts, C = c->hidden_size, Fm = c->moe_intermediate_size;
    size_t *eblock = malloc((size_t)L * sizeof *eblock); /* each layer's fused block, or NONE */
    m->ents = calloc(nspecs + 2 * (size_t)L + 1, sizeof *m->ents);
    m->list = calloc(nspecs + 2 * (size_t)L + 1, sizeof *m->list);
    if (!eblock || !m->ents || !m->list) {
        free(eblock);
        return kd_err(KD_E_NOMEM, "teacher parameter table");
    }
    for (int64_t l = 0; l < L; l++)
        eblock[l] = NONE;
    size_t off = 0, boff = 0, ne = 0;
    for (size_t i = 0; i < nspecs; i++) {
        const kd_tensor_spec *s = &specs[i];
        const size_t numel = (size_t)s->shape[0] * (size_t)(s->ndim > 1 ? s->shape[1] : 1);
        entry_ *en = &m->ents[ne++];
        snprintf(en->name, sizeof en->name, "%s", s->name);
        en->numel = numel;
        long long l, e;
        char rest[64];
        size_t n = strlen(s->name);
        if (sscanf(s->name, "model.layers.%lld.mlp.experts.%lld.%63s", &l, &e, rest) == 3 && l >= 0 && l < L &&
            e >= 0 && e < E) {
            if (eblock[l] == NONE) { /* the fused pair, listed where the first expert appears */
                eblock[l] = off;
                entry_ *gu = &m->ents[ne++], *dn = &m->ents[ne++];
                snprintf(gu->name, sizeof gu->name, "model.layers.%lld.mlp.experts.gate_up_proj", l);
                snprintf(dn->name, sizeof dn->name, "model.layers.%lld.mlp.experts.down_proj", l);
                gu->off = off;
                gu->numel = (size_t)(E * 2 * Fm * C);
                dn->off = off + gu->numel;
                dn->numel = (size_t)(E * C * Fm);
                m->list[m->nlist++] = (size_t)(gu - m->ents);
                m->list[m->nlist++] = (size_t)(dn - m->ents);
                off += gu->numel + dn->numel;
            }
            const size_t fc = (size_t)(Fm * C);
            if (!strcmp(rest, "gate_proj.weight"))
                en->off = eblock[l] + (size_t)e * 2 * fc;
            else if (!strcmp(rest, "up_proj.weight"))
                en->off = eblock[l] + (size_t)e * 2 * fc + fc;
            else if (!strcmp(rest, "down_proj.weight"))
                en->off = eblock[l] + (size_t)E * 2 * fc + (size_t)e * fc;
            else {
                free(eblock);
                return kd_err(KD_E_INTERNAL, "manifest tensor '%s': an unknown expert weight", s->name);
            }
            if (numel != fc) {
                free(eblock);
                return kd_err(KD_E_INTERNAL, "manifest tensor '%s' has %zu elements, expected %zu", s->name,
                              numel, fc);
            }
        } else if (n > 23 && !strcmp(s->name + n - 23, "e_score_correction_bias")) {
            en->buffer = 1;
            en->off = boff;
            boff += numel;
        } else {
            en->off = off;
            off += numel;
            m->list[m->nlist++] = (size_t)(en - m->ents);
        }
    }
    free(eblock);
    m->nents = ne;
    m->nparams = off;
    *nbufs = boff;
    /* sort the names, keeping the list pointing at the same entries */
    size_t *rank = malloc(ne * sizeof *rank);
    entry_ *sorted = malloc(ne * sizeof *sorted);
    if (!rank || !sorted) {
        free(rank);
        free(sorted);
        return kd_err(KD_E_NOMEM, "teacher parameter table");
    }
    memcpy(sorted, m->ents, ne * sizeof *sorted);
    qsort(sorted, ne, sizeof *sorted, ent_cmp_);
    for (size_t i = 0; i < ne; i++) {
        const entry_ *f = bsearch(&m->ents[i], sorted, ne, sizeof *sorted, ent_cmp_);
        assert(f);
        rank[i] = (size_t)(f - sorted);
    }
    for (size_t i = 0; i < m->nlist; i++)
        m->list[i] = rank[m->list[i]];
    free(m->ents);
    m->ents = sorted;
    free(rank);
    return KD_OK;
}

static int wire_(kd_teacher_train *m)
{
    const kd_model_config *c = &m->cfg;
    const int64_t L = c->num_layers;
    const char *P = "model.layers.%lld.%s";
    const entry_ *e;
    m->wte = (e = find_(m, "model.embed_tokens.weight")) ? e->off : NONE;
    m->lnf = (e = find_(m, "model.norm.weight")) ? e->off : NONE;
    m->lmh = c->tie_word_embeddings ? m->wte : (e = find_(m, "lm_head.weight")) ? e->off : NONE;
    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers)
        return kd_err(KD_E_NOMEM, "teacher layers");
    for (int64_t l = 0; l < L; l++) {
        tlayer_ *y = &m->layers[l];
        long long ll = (long long)l;
        y->ln1 = off_(m, P, ll, "input_layernorm.weight");
        y->ln2 = off_(m, P, ll, "post_attention_layernorm.weight");
        y->q_a = off_(m, P, ll, "self_attn.q_a_proj.weight");
        y->q_a_b = off_(m, P, ll, "self_attn.q_a_proj.bias");
        y->q_a_ln = off_(m, P, ll, "self_attn.q_a_layernorm.weight");
        y->q_b = off_(m, P, ll, "self_attn.q_b_proj.weight");
        y->q_proj = off_(m, P, ll, "self_attn.q_proj.weight");
        y->kv_a = off_(m, P, ll, "self_attn.kv_a_proj_with_mqa.weight");
        y->kv_a_b = off_(m, P, ll, "self_attn.kv_a_proj_with_mqa.bias");
        y->kv_ln = off_(m, P, ll, "self_attn.kv_a_layernorm.weight");
        y->kv_b = off_(m, P, ll, "self_attn.kv_b_proj.weight");
        y->o = off_(m, P, ll, "self_attn.o_proj.weight");
        y->o_b = off_(m, P, ll, "self_attn.o_proj.bias");
        y->moe = kd_model_layer_is_moe(c, l);
        y->gate = y->up = y->down = y->router = y->bias = y->egu = y->edown = y->sg = y->su = y->sd = NONE;
        if (!y->moe) {
            y->gate = off_(m, P, ll, "mlp.gate_proj.weight");
            y->up = off_(m, P, ll, "mlp.up_proj.weight");
            y->down = off_(m, P, ll, "mlp.down_proj.weight");
        } else {
            char n[160];
            y->mi = m->nmoe++;
            y->router = off_(m, P, ll, "mlp.gate.weight");
            snprintf(n, sizeof n, "model.layers.%lld.mlp.gate.e_score_correction_bias", ll);
            y->bias = (e = find_(m, n)) ? e->off : NONE;
            y->egu = off_(m, P, ll, "mlp.experts.gate_up_proj");
            y->edown = off_(m, P, ll, "mlp.experts.down_proj");
            y->sg = off_(m, P, ll, "mlp.shared_experts.gate_proj.weight");
            y->su = off_(m, P, ll, "mlp.shared_experts.up_proj.weight");
            y->sd = off_(m, P, ll, "mlp.shared_experts.down_proj.weight");
        }
        if (y->ln1 == NONE || y->ln2 == NONE || y->kv_a == NONE || y->kv_ln == NONE || y->kv_b == NONE ||
            y->o == NONE ||
            (c->q_lora_rank > 0 ? y->q_a == NONE || y->q_a_ln == NONE || y->q_b == NONE : y->q_proj == NONE) ||
            (y->moe ? y->router == NONE || y->egu == NONE || y->edown == NONE
                    : y->gate == NONE || y->up == NONE || y->down == NONE))
            return kd_err(KD_E_INTERNAL, "layer %lld: a manifest tensor is not wired", ll);
    }
    if (m->wte == NONE || m->lnf == NONE || m->lmh == NONE)
        return kd_err(KD_E_INTERNAL, "embedding, final norm or lm_head not wired");
    m->scale = kd_teacher_scale_(c); /* the inference model's */
    return KD_OK;
}

int kd_teacher_train_new(const char *dir, kd_teacher_train **out)
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
    kd_teacher_train *m = calloc(1, sizeof *m);
    kd_tensor_spec *specs = NULL;
    size_t nspecs = 0, nbufs = 0;
    kd_st *st = NULL;
    if (!m) {
        free(res);
        return kd_err(KD_E_NOMEM, "teacher");
    }
    m->cfg = res->cfg;
    if (res->n_mtp)
        kd_info("teacher train: %zu tensors of %lld multi-token-prediction layer(s) are not trained",
                res->n_mtp, (long long)m->cfg.num_nextn_predict_layers);
    free(res);
    const kd_model_config *c = &m->cfg;
    if (c->arch != KD_ARCH_DEEPSEEK_V3 && c->arch != KD_ARCH_DEEPSEEK_V2) {
        rc = kd_err(KD_E_UNSUPPORTED, "model_type '%s': the teacher trains deepseek_v3 and deepseek_v2 "
                    "(dense models train as the student)", c->model_type);
        goto fail;
    }
    if (c->n_routed_experts > MAX_E || c->num_experts_per_tok > MAX_K) {
        rc = kd_err(KD_E_UNSUPPORTED, "%lld experts, %lld per token: the training model takes up to %d and %d",
                    (long long)c->n_routed_experts, (long long)c->num_experts_per_tok, MAX_E, MAX_K);
        goto fail;
    }
    if (c->qk_rope_head_dim % 2 || c->qk_rope_head_dim > MAX_DR) {
        rc = kd_err(KD_E_UNSUPPORTED, "qk_rope_head_dim %lld: the training model takes an even size up to %d",
                    (long long)c->qk_rope_head_dim, MAX_DR);
        goto fail;
    }
    if ((rc = kd_model_tensors(c, &specs, &nspecs)) || (rc = layout_(m, specs, nspecs, &nbufs)))
        goto fail;
    m->params = calloc(m->nparams ? m->nparams : 1, sizeof(float));
    m->grads = calloc(m->nparams ? m->nparams : 1, sizeof(float));
    m->bufs = calloc(nbufs ? nbufs : 1, sizeof(float));
    if (!m->params || !m->grads || !m->bufs) {
        rc = kd_err(KD_E_NOMEM, "teacher parameters (%zu floats, twice)", m->nparams);
        goto fail;
    }
    if ((rc = kd_st_open(dir, &st)))
        goto fail;
    for (size_t i = 0; i < nspecs && rc == KD_OK; i++) {
        const kd_st_tensor *t = kd_st_find(st, specs[i].name);
        const entry_ *e = find_(m, specs[i].name);
        if (!t)
            rc = kd_err(KD_E_NOTFOUND, "tensor '%s' is not in '%s'", specs[i].name, dir);
        else if (!e || t->numel != e->numel)
            rc = kd_err(KD_E_SHAPE, "tensor '%s' has %llu elements, the manifest says %zu", specs[i].name,
                        (unsigned long long)t->numel, e ? e->numel : 0);
        else
            rc = kd_st_tensor_f32(st, t, c->fp8 ? c->fp8_block : NULL, (e->buffer ? m->bufs : m->params) + e->off);
    }
    kd_st_free(st);
    if (rc || (rc = wire_(m)))
        goto fail;
    free(specs);
    *out = m;
    return KD_OK;
fail:
    free(specs);
    kd_teacher_train_free(m);
    return rc;
}

void kd_teacher_train_free(kd_teacher_train *m)
{
    if (!m)
        return;
    free(m->params);
    free(m->grads);
    free(m->adam_m);
    free(m->bufs);
    free(m->layers);
    free(m->ents);
    free(m->list);
    free(m->acts_mem);
    free(m->idx_mem);
    free(m);
}

const kd_model_config *kd_teacher_train_config(const kd_teacher_train *m) { return &m->cfg; }
size_t kd_teacher_train_param_count(const kd_teacher_train *m) { return m->nlist; }
const char *kd_teacher_train_param_name(const kd_teacher_train *m, size_t i)
{
    return i < m->nlist ? m->ents[m->list[i]].name : NULL;
}
int64_t kd_teacher_train_step(const kd_teacher_train *m) { return m->step; }
size_t kd_teacher_train_numel(const kd_teacher_train *m) { return m->nparams; }

static int ensure_moments_(kd_teacher_train *m)
{
    if (m->adam_m)
        return KD_OK;
    m->adam_m = calloc(2 * m->nparams + 1, sizeof(float));
    if (!m->adam_m)
        return kd_err(KD_E_NOMEM, "AdamW moments (%zu floats)", 2 * m->nparams);
    m->adam_v = m->adam_m + m->nparams;
    return KD_OK;
}

int kd_teacher_train_set_step(kd_teacher_train *m, int64_t step)
{
    if (step < 0)
        return kd_err(KD_E_RANGE, "optimizer step %lld", (long long)step);
    if (step > 0)
        KD_TRY(ensure_moments_(m));
    m->step = step;
    return KD_OK;
}

int kd_teacher_train_is_buffer(const kd_teacher_train *m, const char *name)
{
    const entry_ *e = find_(m, name);
    return e && e->buffer;
}

int kd_teacher_train_tensor(kd_teacher_train *m, const char *name, int which, float **data, size_t *numel)
{
    const entry_ *e = find_(m, name);
    if (!e)
        return kd_err(KD_E_NOTFOUND, "no tensor '%s' in the teacher", name);
    if (e->buffer && which != 0)
        return kd_err(KD_E_NOTFOUND, "'%s' is a buffer: it has no gradient or optimizer state", name);
    if (which < 0 || which > 3)
        return kd_err(KD_E_NOTFOUND, "tensor kind %d of '%s' (0 param, 1 grad, 2 and 3 moments)", which, name);
    if (which >= 2)
        KD_TRY(ensure_moments_(m));
    float *base = e->buffer ? m->bufs : which == 0 ? m->params : which == 1 ? m->grads
                                        : which == 2 ? m->adam_m : m->adam_v;
    *data = base + e->off;
    *numel = e->numel;
    return KD_OK;
}

/* ---- activations ------------------------------------------------------------------ */

/* Point the activations into base (when not NULL); returns the floats needed. */
static size_t carve_(const kd_model_config *c, int64_t nmoe, int64_t B, int64_t T, acts_ *a, float *base)
{
    const size_t N = (size_t)(B * T), L = (size_t)c->num_layers, M = (size_t)nmoe, C = (size_t)c->hidden_size;
    const size_t V = (size_t)c->vocab_size, H = (size_t)c->num_heads, Q = (size_t)c->q_lora_rank;
    const size_t R = (size_t)c->kv_lora_rank, Dn = (size_t)c->qk_nope_head_dim, Dr = (size_t)c->qk_rope_head_dim;
    const size_t Dv = (size_t)c->v_head_dim, Dq = Dn + Dr, Dp = Dq > Dv ? Dq : Dv;
    const size_t E = (size_t)c->n_routed_experts, k = (size_t)c->num_experts_per_tok;
    const size_t Fm = (size_t)c->moe_intermediate_size, Fs = Fm * (size_t)c->n_shared_experts;
    const size_t F = (size_t)c->intermediate_size, Fh = F > Fs ? F : Fs, A = N * k;
    size_t o = 0;
#define TAKE(f, n)                    \
    do {                              \
        if (base)                     \
            a->f = base + o;          \
        o += (size_t)(n);             \
    } while (0)
    TAKE(x0, N * C);
    TAKE(ln1, L * N * C);
    TAKE(ln1_rstd, L * N);
    TAKE(qa, L * N * Q);
    TAKE(qa_rstd, L * N);
    TAKE(qan, L * N * Q);
    TAKE(ckv, L * N * R);
    TAKE(kv_rstd, L * N);
    TAKE(cn, L * N * R);
    TAKE(qp, L * N * H * Dp);
    TAKE(kp, L * N * H * Dp);
    TAKE(vp, L * N * H * Dp);
    TAKE(attp, L * N * H * Dp);
    TAKE(lse, L * N * H);
    TAKE(atty, L * N * H * Dv);
    TAKE(res1, L * N * C);
    TAKE(ln2, L * N * C);
    TAKE(ln2_rstd, L * N);
    TAKE(hg, L * N * Fh);
    TAKE(hu, L * N * Fh);
    TAKE(ha, L * N * Fh);
    TAKE(res2, L * N * C);
    TAKE(rlog, M * N * E);
    TAKE(wt, M * N * k);
    TAKE(xg, M * A * C);
    TAKE(eg, M * A * Fm);
    TAKE(eu, M * A * Fm);
    TAKE(ea, M * A * Fm);
    TAKE(ey, M * A * C);
    TAKE(lnf, N * C);
    TAKE(lnf_rstd, N);
    TAKE(logits, N * V);
    TAKE(rcos, (size_t)T * Dr / 2);
    TAKE(rsin, (size_t)T * Dr / 2);
    TAKE(q, N * H * Dq);
    TAKE(kvf, N * (R + Dr));
    TAKE(kvb, N * H * (Dn + Dv));
    TAKE(kr, N * Dr);
    TAKE(rsc, 2 * E);
    TAKE(dres, N * C);
    TAKE(dln, N * C);
    TAKE(dtmp, N * C);
    TAKE(dqp, N * H * Dp);
    TAKE(dkp, N * H * Dp);
    TAKE(dvp, N * H * Dp);
    TAKE(dattp, N * H * Dp);
    TAKE(datt, N * H * Dv);
    TAKE(dq, N * H * Dq);
    TAKE(dqa, N * Q);
    TAKE(dqan, N * Q);
    TAKE(dc, N * R);
    TAKE(dcr, N * R);
    TAKE(dh1, N * Fh);
    TAKE(dh2, N * Fh);
    TAKE(dh3, N * Fh);
    TAKE(dwt, N * k);
    TAKE(drlog, N * E);
    TAKE(dxg, M ? A * C : 0);
    TAKE(dey, M ? A * C : 0);
    TAKE(de1, M ? A * Fm : 0);
    TAKE(de2, M ? A * Fm : 0);
    TAKE(de3, M ? A * Fm : 0);
    TAKE(dlogits, N * V);
#undef TAKE
    return o;
}

static int ensure_acts_(kd_teacher_train *m, int64_t B, int64_t T)
{
    if (m->acts_mem && m->act_B == B && m->act_T == T)
        return KD_OK;
    const kd_model_config *c = &m->cfg;
    const size_t total = carve_(c, m->nmoe, B, T, &m->a, NULL);
    const size_t N = (size_t)(B * T), M = (size_t)m->nmoe, E = (size_t)c->n_routed_experts;
    const size_t k = (size_t)c->num_experts_per_tok, ni = M * (2 * N * k + E + 1);
    free(m->acts_mem);
    free(m->idx_mem);
    m->acts_mem = malloc((total ? total : 1) * sizeof(float));
    m->idx_mem = malloc((ni ? ni : 1) * sizeof(int64_t));
    m->act_B = m->act_T = 0;
    if (!m->acts_mem || !m->idx_mem) {
        free(m->acts_mem);
        free(m->idx_mem);
        m->acts_mem = NULL;
        m->idx_mem = NULL;
        return kd_err(KD_E_NOMEM, "teacher activations (%zu floats)", total);
    }
    carve_(c, m->nmoe, B, T, &m->a, m->acts_mem);
    KD_TRY(kd_rope_table(m->a.rcos, m->a.rsin, &c->rope, T, c->qk_rope_head_dim, NULL));
    m->act_B = B;
    m->act_T = T;
    return KD_OK;
}

/* the index arrays of MoE layer mi: idx (N, k), perm (A), estart (E + 1) */
static void moe_idx_(const kd_teacher_train *m, int64_t mi, int64_t N, int64_t **idx, int64_t **perm,
                     int64_t **estart)
{
    const int64_t k = m->cfg.num_experts_per_tok, E = m->cfg.n_routed_experts;
    int64_t *base = m->idx_mem + mi * (2 * N * k + E + 1);
    *idx = base;
    *perm = base + N * k;
    *estart = base + 2 * N * k;
}

/* ---- MLA: forward and backward --------------------------------------------------------
 * x (N, C) the normed input; out (N, C) overwritten with o_proj's output.
 * Queries: q_b(norm(q_a x)) or q_proj x, (N, H, [Dn | Dr]). Keys and values:
 * kv_a x = [c (R) | kr (Dr)]; kv_b(norm(c)) = (N, H, [k_nope (Dn) | v (Dv)]);
 * the key is [k_nope | rope(kr)], kr shared by every head. The rope part of
 * q and k is rotated at the token's position (pos[n], or t = n % T without
 * pos), after the interleaved pairs are made halves when rope_interleave;
 * with pos, attention stays within each document. */

/* pairs (2i, 2i+1) to halves (i, i + D/2), and back (the transpose) */
static void deinterleave_(float *x, int64_t D)
{
    float tmp[MAX_DR];
    for (int64_t i = 0; i < D / 2; i++) {
        tmp[i] = x[2 * i];
        tmp[i + D / 2] = x[2 * i + 1];
    }
    memcpy(x, tmp, (size_t)D * sizeof(float));
}
static void interleave_(float *x, int64_t D)
{
    float tmp[MAX_DR];
    for (int64_t i = 0; i < D / 2; i++) {
        tmp[2 * i] = x[i];
        tmp[2 * i + 1] = x[i + D / 2];
    }
    memcpy(x, tmp, (size_t)D * sizeof(float));
}

static void rope_row_(const kd_teacher_train *m, float *x, int64_t t)
{
    const int64_t Dr = m->cfg.qk_rope_head_dim;
    if (m->cfg.rope_interleave)
        deinterleave_(x, Dr);
    kd_rope_forward(x, m->a.rcos + t * (Dr / 2), m->a.rsin + t * (Dr / 2), NULL, 1, 1, 1, Dr);
}
static void rope_row_backward_(const kd_teacher_train *m, float *dx, int64_t t)
{
    const int64_t Dr = m->cfg.qk_rope_head_dim;
    kd_rope_backward(dx, m->a.rcos + t * (Dr / 2), m->a.rsin + t * (Dr / 2), NULL, 1, 1, 1, Dr);
    if (m->cfg.rope_interleave)
        interleave_(dx, Dr);
}

static void mla_forward_(kd_teacher_train *m, const tlayer_ *y, int64_t l, float *out, const float *x,
                         const int64_t *pos, int64_t B, int64_t T)
{
    const kd_model_config *c = &m->cfg;
    acts_ *a = &m->a;
    const float *P = m->params;
    const int64_t N = B * T, C = c->hidden_size, H = c->num_heads, Q = c->q_lora_rank, R = c->kv_lora_rank;
    const int64_t Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Dq = Dn + Dr;
    const int64_t Dp = Dq > Dv ? Dq : Dv, Dkv = Dn + Dv;
    const double eps = c->rms_norm_eps;
#define W(o) ((o) == NONE ? NULL : P + (o))
    float *qa = a->qa + l * N * Q, *qan = a->qan + l * N * Q, *ckv = a->ckv + l * N * R, *cn = a->cn + l * N * R;
    float *qp = a->qp + l * N * H * Dp, *kp = a->kp + l * N * H * Dp, *vp = a->vp + l * N * H * Dp;
    float *attp = a->attp + l * N * H * Dp, *atty = a->atty + l * N * H * Dv;
    if (Q > 0) {
        kd_matmul_forward(qa, x, W(y->q_a), W(y->q_a_b), N, C, Q);
        kd_rmsnorm_forward(qan, a->qa_rstd + l * N, qa, W(y->q_a_ln), N, Q, eps);
        kd_matmul_forward(a->q, qan, W(y->q_b), NULL, N, Q, H * Dq);
    } else {
        kd_matmul_forward(a->q, x, W(y->q_proj), NULL, N, C, H * Dq);
    }
    kd_matmul_forward(a->kvf, x, W(y->kv_a), W(y->kv_a_b), N, C, R + Dr);
    for (int64_t n = 0; n < N; n++) {
        memcpy(ckv + n * R, a->kvf + n * (R + Dr), (size_t)R * sizeof(float));
        memcpy(a->kr + n * Dr, a->kvf + n * (R + Dr) + R, (size_t)Dr * sizeof(float));
    }
    kd_rmsnorm_forward(cn, a->kv_rstd + l * N, ckv, W(y->kv_ln), N, R, eps);
    kd_matmul_forward(a->kvb, cn, W(y->kv_b), NULL, N, R, H * Dkv);
#pragma omp parallel for if (N * H > 256)
    for (int64_t n = 0; n < N; n++) {
        float *kr = a->kr + n * Dr;
        const int64_t p = pos ? pos[n] : n % T; /* the token's position within its document */
        rope_row_(m, kr, p);
        for (int64_t h = 0; h < H; h++) {
            float *qd = qp + (n * H + h) * Dp, *kd = kp + (n * H + h) * Dp, *vd = vp + (n * H + h) * Dp;
            const float *qs = a->q + (n * H + h) * Dq, *kvs = a->kvb + (n * H + h) * Dkv;
            memset(qd, 0, (size_t)Dp * sizeof(float));
            memset(kd, 0, (size_t)Dp * sizeof(float));
            memset(vd, 0, (size_t)Dp * sizeof(float));
            memcpy(qd, qs, (size_t)Dq * sizeof(float));
            rope_row_(m, qd + Dn, p);
            memcpy(kd, kvs, (size_t)Dn * sizeof(float));
            memcpy(kd + Dn, kr, (size_t)Dr * sizeof(float));
            memcpy(vd, kvs + Dn, (size_t)Dv * sizeof(float));
        }
    }
    kd_attention_forward(attp, a->lse + l * N * H, qp, kp, vp, pos, B, T, H, H, Dp, m->scale);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++)
            memcpy(atty + (n * H + h) * Dv, attp + (n * H + h) * Dp, (size_t)Dv * sizeof(float));
    kd_matmul_forward(out, atty, W(y->o), W(y->o_b), N, H * Dv, C);
#undef W
}

/* dout (N, C) the gradient of out; dx (N, C) += the gradient of x. */
static void mla_backward_(kd_teacher_train *m, const tlayer_ *y, int64_t l, float *dx, const float *dout,
                          const float *x, const int64_t *pos, int64_t B, int64_t T)
{
    const kd_model_config *c = &m->cfg;
    acts_ *a = &m->a;
    const float *P = m->params;
    float *G = m->grads;
    const int64_t N = B * T, C = c->hidden_size, H = c->num_heads, Q = c->q_lora_rank, R = c->kv_lora_rank;
    const int64_t Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Dq = Dn + Dr;
    const int64_t Dp = Dq > Dv ? Dq : Dv, Dkv = Dn + Dv;
#define W(o) ((o) == NONE ? NULL : P + (o))
#define DW(o) ((o) == NONE ? NULL : G + (o))
#define Z(p, n) memset((p), 0, (size_t)(n) * sizeof(float))
    float *qa = a->qa + l * N * Q, *qan = a->qan + l * N * Q, *ckv = a->ckv + l * N * R, *cn = a->cn + l * N * R;
    float *qp = a->qp + l * N * H * Dp, *kp = a->kp + l * N * H * Dp, *vp = a->vp + l * N * H * Dp;
    float *attp = a->attp + l * N * H * Dp, *atty = a->atty + l * N * H * Dv;
    Z(a->datt, N * H * Dv);
    kd_matmul_backward(a->datt, DW(y->o), DW(y->o_b), dout, atty, W(y->o), N, H * Dv, C);
    Z(a->dattp, N * H * Dp);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++)
            memcpy(a->dattp + (n * H + h) * Dp, a->datt + (n * H + h) * Dv, (size_t)Dv * sizeof(float));
    Z(a->dqp, N * H * Dp);
    Z(a->dkp, N * H * Dp);
    Z(a->dvp, N * H * Dp);
    kd_attention_backward(a->dqp, a->dkp, a->dvp, a->dattp, qp, kp, vp, attp, a->lse + l * N * H, pos, B, T, H, H,
                          Dp, m->scale);
    /* back to q (N, H, Dq), kv_b's output (N, H, Dkv) and the kv_a output (N, R + Dr) */
#pragma omp parallel for if (N * H > 256)
    for (int64_t n = 0; n < N; n++) {
        float *dkr = a->kvf + n * (R + Dr) + R;
        const int64_t p = pos ? pos[n] : n % T;
        memset(dkr, 0, (size_t)Dr * sizeof(float));
        for (int64_t h = 0; h < H; h++) {
            const float *dqs = a->dqp + (n * H + h) * Dp, *dks = a->dkp + (n * H + h) * Dp;
            float *dq = a->dq + (n * H + h) * Dq, *dkv = a->kvb + (n * H + h) * Dkv;
            memcpy(dq, dqs, (size_t)Dq * sizeof(float));
            rope_row_backward_(m, dq + Dn, p);
            memcpy(dkv, dks, (size_t)Dn * sizeof(float));
            memcpy(dkv + Dn, a->dvp + (n * H + h) * Dp, (size_t)Dv * sizeof(float));
            for (int64_t i = 0; i < Dr; i++)
                dkr[i] += dks[Dn + i];
        }
        rope_row_backward_(m, dkr, p);
    }
    Z(a->dc, N * R);
    kd_matmul_backward(a->dc, DW(y->kv_b), NULL, a->kvb, cn, W(y->kv_b), N, R, H * Dkv);
    Z(a->dcr, N * R);
    kd_rmsnorm_backward(a->dcr, DW(y->kv_ln), a->dc, ckv, W(y->kv_ln), a->kv_rstd + l * N, N, R);
    for (int64_t n = 0; n < N; n++)
        memcpy(a->kvf + n * (R + Dr), a->dcr + n * R, (size_t)R * sizeof(float));
    kd_matmul_backward(dx, DW(y->kv_a), DW(y->kv_a_b), a->kvf, x, W(y->kv_a), N, C, R + Dr);
    if (Q > 0) {
        Z(a->dqan, N * Q);
        kd_matmul_backward(a->dqan, DW(y->q_b), NULL, a->dq, qan, W(y->q_b), N, Q, H * Dq);
        Z(a->dqa, N * Q);
        kd_rmsnorm_backward(a->dqa, DW(y->q_a_ln), a->dqan, qa, W(y->q_a_ln), a->qa_rstd + l * N, N, Q);
        kd_matmul_backward(dx, DW(y->q_a), DW(y->q_a_b), a->dqa, x, W(y->q_a), N, C, Q);
    } else {
        kd_matmul_backward(dx, DW(y->q_proj), NULL, a->dq, x, W(y->q_proj), N, C, H * Dq);
    }
#undef W
#undef DW
#undef Z
}

/* ---- SwiGLU MLP: out = down(silu(gate x) * up x) ----------------------------------------
 * x (n, C); g, u (n, F) and act (n, F) kept for the backward; out (n, C)
 * overwritten. The dense mlp, the shared experts and each routed expert. */
static void mlp_forward_(float *out, float *g, float *u, float *act, const float *x, const float *wg,
                         const float *wu, const float *wd, int64_t n, int64_t C, int64_t F)
{
    kd_matmul_forward(g, x, wg, NULL, n, C, F);
    kd_matmul_forward(u, x, wu, NULL, n, C, F);
    kd_swiglu_forward(act, g, u, n * F);
    kd_matmul_forward(out, act, wd, NULL, n, F, C);
}

/* dx (n, C) += and the weight gradients +=, from dout (n, C); d1, d2, d3
 * (n, F) scratch. */
static void mlp_backward_(float *dx, float *dwg, float *dwu, float *dwd, const float *dout, const float *x,
                          const float *g, const float *u, const float *act, const float *wg, const float *wu,
                          const float *wd, int64_t n, int64_t C, int64_t F, float *d1, float *d2, float *d3)
{
    memset(d3, 0, (size_t)(n * F) * sizeof(float));
    kd_matmul_backward(d3, dwd, NULL, dout, act, wd, n, F, C);
    memset(d1, 0, (size_t)(n * F) * sizeof(float));
    memset(d2, 0, (size_t)(n * F) * sizeof(float));
    kd_swiglu_backward(d1, d2, d3, g, u, n * F);
    kd_matmul_backward(dx, dwg, NULL, d1, x, wg, n, C, F);
    kd_matmul_backward(dx, dwu, NULL, d2, x, wu, n, C, F);
}

/* ---- MoE: forward and backward ------------------------------------------------------------
 * x (N, C) the normed input; out (N, C) overwritten with the routed experts'
 * weighted sum (every token to its k experts, no capacity) plus the shared
 * experts. Rows are grouped by expert (perm: the assignment t k + r of each
 * grouped row; estart: each expert's first row), and each expert's output is
 * added in expert order, as transformers' index_add_. */
static void moe_forward_(kd_teacher_train *m, const tlayer_ *y, int64_t l, float *out, const float *x, int64_t N)
{
    const kd_model_config *c = &m->cfg;
    acts_ *a = &m->a;
    const float *P = m->params;
    const int64_t C = c->hidden_size, E = c->n_routed_experts, k = c->num_experts_per_tok, A = N * k;
    const int64_t Fm = c->moe_intermediate_size, Fs = Fm * c->n_shared_experts, F = c->intermediate_size;
    const int64_t Fh = F > Fs ? F : Fs, mi = y->mi;
    float *rlog = a->rlog + mi * N * E, *wt = a->wt + mi * N * k, *xg = a->xg + mi * A * C;
    float *eg = a->eg + mi * A * Fm, *eu = a->eu + mi * A * Fm, *ea = a->ea + mi * A * Fm, *ey = a->ey + mi * A * C;
    int64_t *idx, *perm, *estart;
    moe_idx_(m, mi, N, &idx, &perm, &estart);
    kd_matmul_forward(rlog, x, P + y->router, NULL, N, C, E);
    for (int64_t t = 0; t < N; t++)
        kd_teacher_route_(c, rlog + t * E, y->bias == NONE ? NULL : m->bufs + y->bias, idx + t * k, wt + t * k,
                          a->rsc);
    /* group the assignments by expert, in token order within each */
    for (int64_t e = 0; e <= E; e++)
        estart[e] = 0;
    for (int64_t i = 0; i < A; i++)
        estart[idx[i] + 1]++;
    for (int64_t e = 0; e < E; e++)
        estart[e + 1] += estart[e];
    for (int64_t e = 0, j = 0; e < E; e++)
        for (int64_t i = 0; i < A; i++)
            if (idx[i] == e)
                perm[j++] = i;
    for (int64_t j = 0; j < A; j++)
        memcpy(xg + j * C, x + (perm[j] / k) * C, (size_t)C * sizeof(float));
    const float *gu = P + y->egu, *dn = P + y->edown;
    /* the experts on their own threads, the shared ones first (job -1: every
     * token, the longest job, so that it does not end the loop alone); each
     * writes its own rows, and its products run whole on one thread */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t e = -1; e < E; e++) {
        if (e < 0) {
            if (y->sg != NONE)
                mlp_forward_(a->dtmp, a->hg + l * N * Fh, a->hu + l * N * Fh, a->ha + l * N * Fh, x, P + y->sg,
                             P + y->su, P + y->sd, N, C, Fs);
            continue;
        }
        const int64_t s = estart[e], cnt = estart[e + 1] - s;
        if (cnt)
            mlp_forward_(ey + s * C, eg + s * Fm, eu + s * Fm, ea + s * Fm, xg + s * C, gu + e * 2 * Fm * C,
                         gu + e * 2 * Fm * C + Fm * C, dn + e * C * Fm, cnt, C, Fm);
    }
    memset(out, 0, (size_t)(N * C) * sizeof(float));
    for (int64_t j = 0; j < A; j++) {
        const float w = wt[perm[j]], *src = ey + j * C;
        float *dst = out + (perm[j] / k) * C;
        for (int64_t i = 0; i < C; i++)
            dst[i] += w * src[i];
    }
    if (y->sg != NONE)
        kd_residual_forward(out, out, a->dtmp, N * C);
}

/* The gradient of one token's router logits (E) += from that of its gate
 * weights dwt (k): through routed_scaling_factor, the top-k normalisation
 * and the sigmoid (V3) or softmax (V2) scores, as route_ computes the
 * weights; the selection is a constant. */
static void route_backward_(const kd_model_config *c, float *dlogit, const float *logit, const int64_t *idx,
                            const float *dwt, double *s)
{
    const int64_t E = c->n_routed_experts, k = c->num_experts_per_tok;
    const double rsf = c->routed_scaling_factor;
    const int sigmoid = c->scoring_func == KD_SCORE_SIGMOID;
    if (sigmoid) {
        for (int64_t r = 0; r < k; r++)
            s[idx[r]] = 1.0 / (1.0 + exp(-(double)logit[idx[r]]));
    } else {
        double mx = -INFINITY, sum = 0;
        for (int64_t e = 0; e < E; e++)
            mx = logit[e] > mx ? logit[e] : mx;
        for (int64_t e = 0; e < E; e++)
            sum += (s[e] = exp((double)logit[e] - mx));
        for (int64_t e = 0; e < E; e++)
            s[e] /= sum;
    }
    /* d score of each chosen expert: wt_r = f * s_r / (sum_r s_r + 1e-20) when normalised */
    int norm, scaled;
    if (c->arch == KD_ARCH_DEEPSEEK_V3)
        norm = c->norm_topk_prob, scaled = 1;
    else
        norm = k > 1 && c->norm_topk_prob, scaled = !norm;
    const double f = scaled ? rsf : 1.0;
    double ds[MAX_K], S = 1e-20, dot = 0;
    for (int64_t r = 0; r < k; r++)
        S += s[idx[r]], dot += (double)dwt[r] * s[idx[r]];
    for (int64_t r = 0; r < k; r++)
        ds[r] = norm ? f * ((double)dwt[r] / S - dot / (S * S)) : f * dwt[r];
    if (sigmoid) {
        for (int64_t r = 0; r < k; r++)
            dlogit[idx[r]] += (float)(ds[r] * s[idx[r]] * (1.0 - s[idx[r]]));
    } else {
        double sd = 0;
        for (int64_t r = 0; r < k; r++)
            sd += ds[r] * s[idx[r]];
        for (int64_t e = 0; e < E; e++)
            dlogit[e] += (float)(-s[e] * sd);
        for (int64_t r = 0; r < k; r++)
            dlogit[idx[r]] += (float)(s[idx[r]] * ds[r]);
    }
}

/* dout (N, C) the gradient of out; dx (N, C) +=. */
static void moe_backward_(kd_teacher_train *m, const tlayer_ *y, int64_t l, float *dx, const float *dout,
                          const float *x, int64_t N)
{
    const kd_model_config *c = &m->cfg;
    acts_ *a = &m->a;
    const float *P = m->params;
    float *G = m->grads;
    const int64_t C = c->hidden_size, E = c->n_routed_experts, k = c->num_experts_per_tok, A = N * k;
    const int64_t Fm = c->moe_intermediate_size, Fs = Fm * c->n_shared_experts, F = c->intermediate_size;
    const int64_t Fh = F > Fs ? F : Fs, mi = y->mi;
    float *rlog = a->rlog + mi * N * E, *wt = a->wt + mi * N * k, *xg = a->xg + mi * A * C;
    float *eg = a->eg + mi * A * Fm, *eu = a->eu + mi * A * Fm, *ea = a->ea + mi * A * Fm, *ey = a->ey + mi * A * C;
    int64_t *idx, *perm, *estart;
    moe_idx_(m, mi, N, &idx, &perm, &estart);
    /* each assignment: d(its output) = w dout[t], d w = dout[t] . (its output) */
#pragma omp parallel for if (A * C > 65536)
    for (int64_t j = 0; j < A; j++) {
        const float *d = dout + (perm[j] / k) * C, *yo = ey + j * C, w = wt[perm[j]];
        float *dy = a->dey + j * C;
        double s = 0;
        for (int64_t i = 0; i < C; i++) {
            dy[i] = w * d[i];
            s += (double)d[i] * yo[i];
        }
        a->dwt[perm[j]] = (float)s;
    }
    const float *gu = P + y->egu, *dn = P + y->edown;
    float *dgu = G + y->egu, *ddn = G + y->edown;
    memset(a->dxg, 0, (size_t)(A * C) * sizeof(float));
    /* as in the forward: one thread per expert, the shared experts first (the
     * only job that adds into dx; the routed ones write their dxg rows) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t e = -1; e < E; e++) {
        if (e < 0) {
            if (y->sg != NONE)
                mlp_backward_(dx, G + y->sg, G + y->su, G + y->sd, dout, x, a->hg + l * N * Fh, a->hu + l * N * Fh,
                              a->ha + l * N * Fh, P + y->sg, P + y->su, P + y->sd, N, C, Fs, a->dh1, a->dh2,
                              a->dh3);
            continue;
        }
        const int64_t s = estart[e], cnt = estart[e + 1] - s;
        if (cnt)
            mlp_backward_(a->dxg + s * C, dgu + e * 2 * Fm * C, dgu + e * 2 * Fm * C + Fm * C, ddn + e * C * Fm,
                          a->dey + s * C, xg + s * C, eg + s * Fm, eu + s * Fm, ea + s * Fm, gu + e * 2 * Fm * C,
                          gu + e * 2 * Fm * C + Fm * C, dn + e * C * Fm, cnt, C, Fm, a->de1 + s * Fm,
                          a->de2 + s * Fm, a->de3 + s * Fm);
    }
    for (int64_t j = 0; j < A; j++) {
        const float *src = a->dxg + j * C;
        float *dst = dx + (perm[j] / k) * C;
        for (int64_t i = 0; i < C; i++)
            dst[i] += src[i];
    }
    /* the router, through the gate weights */
    memset(a->drlog, 0, (size_t)(N * E) * sizeof(float));
#pragma omp parallel for if (N * E > 4096)
    for (int64_t t = 0; t < N; t++) {
        double s[MAX_E];
        route_backward_(c, a->drlog + t * E, rlog + t * E, idx + t * k, a->dwt + t * k, s);
    }
    kd_matmul_backward(dx, G + y->router, NULL, a->drlog, x, P + y->router, N, C, E);
}

/* ---- the model: forward, loss, backward --------------------------------------------------- */

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

int kd_teacher_train_forward(kd_teacher_train *m, const int64_t *ids, const int64_t *pos, int64_t B, int64_t T,
                             float *logits)
{
    const kd_model_config *c = &m->cfg;
    const int64_t N = B * T, V = c->vocab_size, C = c->hidden_size, L = c->num_layers;
    const int64_t F = c->intermediate_size, Fs = c->moe_intermediate_size * c->n_shared_experts;
    const int64_t Fh = F > Fs ? F : Fs;
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
            return kd_err(KD_E_RANGE, "token id %lld at %lld is outside [0, %lld)", (long long)ids[i],
                          (long long)i, (long long)V);
    if (pos)
        KD_TRY(check_pos_(pos, B, T));
    KD_TRY(ensure_acts_(m, B, T));
    acts_ *a = &m->a;
    const float *P = m->params;
    kd_embedding_forward(a->x0, ids, P + m->wte, N, C);
    for (int64_t l = 0; l < L; l++) {
        const tlayer_ *y = &m->layers[l];
        const float *xin = l == 0 ? a->x0 : a->res2 + (l - 1) * N * C;
        float *ln1 = a->ln1 + l * N * C, *res1 = a->res1 + l * N * C, *ln2 = a->ln2 + l * N * C;
        float *res2 = a->res2 + l * N * C;
        kd_rmsnorm_forward(ln1, a->ln1_rstd + l * N, xin, P + y->ln1, N, C, c->rms_norm_eps);
        mla_forward_(m, y, l, res1, ln1, pos, B, T);
        kd_residual_forward(res1, res1, xin, N * C);
        kd_rmsnorm_forward(ln2, a->ln2_rstd + l * N, res1, P + y->ln2, N, C, c->rms_norm_eps);
        if (y->moe)
            moe_forward_(m, y, l, res2, ln2, N);
        else
            mlp_forward_(res2, a->hg + l * N * Fh, a->hu + l * N * Fh, a->ha + l * N * Fh, ln2, P + y->gate,
                         P + y->up, P + y->down, N, C, F);
        kd_residual_forward(res2, res2, res1, N * C);
    }
    kd_rmsnorm_forward(a->lnf, a->lnf_rstd, a->res2 + (L - 1) * N * C, P + m->lnf, N, C, c->rms_norm_eps);
    kd_matmul_forward(a->logits, a->lnf, P + m->lmh, NULL, N, C, V);
    if (logits)
        memcpy(logits, a->logits, (size_t)(N * V) * sizeof(float));
    return KD_OK;
}

/* position t is scored against labels[b, t+1]; the last of each row, and the last of each document of a
 * packed row (pos[b, t+1] == 0), predict nothing */
static int targets_(const kd_teacher_train *m, const int64_t *labels, const int64_t *pos, int64_t B, int64_t T,
                    int64_t *tgt)
{
    const int64_t V = m->cfg.vocab_size;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const int64_t i = b * T + t;
            const int64_t y = t + 1 < T && !(pos && pos[i + 1] == 0) ? labels[i + 1] : KD_IGNORE_INDEX;
            if (y != KD_IGNORE_INDEX && (y < 0 || y >= V))
                return kd_err(KD_E_RANGE, "label %lld at row %lld, token %lld is outside [0, %lld)", (long long)y,
                              (long long)b, (long long)(t + 1), (long long)V);
            tgt[i] = y;
        }
    return KD_OK;
}

int64_t kd_teacher_train_count_targets(const int64_t *labels, const int64_t *pos, int64_t B, int64_t T)
{
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t + 1 < T; t++)
            n += labels[b * T + t + 1] != KD_IGNORE_INDEX && !(pos && pos[b * T + t + 1] == 0);
    return n;
}

/* forward, then the targets and the loss sum */
static int forward_loss_(kd_teacher_train *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                         int64_t B, int64_t T, int64_t *tgt, double *sum, int64_t *cnt)
{
    KD_TRY(kd_teacher_train_forward(m, ids, pos, B, T, NULL));
    KD_TRY(targets_(m, labels, pos, B, T, tgt));
    *sum = kd_crossentropy_forward(m->a.logits, tgt, B * T, m->cfg.vocab_size, cnt);
    return KD_OK;
}

int kd_teacher_train_loss_sum(kd_teacher_train *m, const int64_t *ids, const int64_t *labels,
                              const int64_t *pos, int64_t B, int64_t T, double *loss_sum, int64_t *count)
{
    if (B <= 0 || T <= 0)
        return kd_err(KD_E_RANGE, "batch %lld x %lld tokens", (long long)B, (long long)T);
    int64_t *tgt = malloc((size_t)(B * T) * sizeof *tgt), cnt = 0;
    if (!tgt)
        return kd_err(KD_E_NOMEM, "targets");
    double sum = 0;
    int rc = forward_loss_(m, ids, labels, pos, B, T, tgt, &sum, &cnt);
    free(tgt);
    if (rc)
        return rc;
    if (loss_sum)
        *loss_sum = sum;
    if (count)
        *count = cnt;
    return KD_OK;
}

int kd_teacher_train_loss(kd_teacher_train *m, const int64_t *ids, const int64_t *labels, const int64_t *pos,
                          int64_t B, int64_t T, float *loss, int64_t *count)
{
    double sum = 0;
    int64_t cnt = 0;
    KD_TRY(kd_teacher_train_loss_sum(m, ids, labels, pos, B, T, &sum, &cnt));
    *loss = (float)(cnt ? sum / (double)cnt : 0.0);
    if (count)
        *count = cnt;
    return KD_OK;
}

void kd_teacher_train_zero_grad(kd_teacher_train *m) { memset(m->grads, 0, m->nparams * sizeof(float)); }

int kd_teacher_train_loss_backward(kd_teacher_train *m, const int64_t *ids, const int64_t *labels,
                                   const int64_t *pos, int64_t B, int64_t T, float *loss)
{
    if (B <= 0 || T <= 0)
        return kd_err(KD_E_RANGE, "batch %lld x %lld tokens", (long long)B, (long long)T);
    if (pos)
        KD_TRY(check_pos_(pos, B, T)); /* before counting targets by it */
    const int64_t n = kd_teacher_train_count_targets(labels, pos, B, T);
    double sum = 0;
    kd_teacher_train_zero_grad(m);
    KD_TRY(kd_teacher_train_backward(m, ids, labels, pos, B, T, n ? 1.0 / (double)n : 0.0, &sum, NULL));
    *loss = (float)(n ? sum / (double)n : 0.0);
    return KD_OK;
}

int kd_teacher_train_backward(kd_teacher_train *m, const int64_t *ids, const int64_t *labels,
                              const int64_t *pos, int64_t B, int64_t T, double scale, double *loss_sum,
                              int64_t *count)
{
    if (B <= 0 || T <= 0)
        return kd_err(KD_E_RANGE, "batch %lld x %lld tokens", (long long)B, (long long)T);
    const kd_model_config *c = &m->cfg;
    const int64_t N = B * T, V = c->vocab_size, C = c->hidden_size, L = c->num_layers;
    const int64_t F = c->intermediate_size, Fs = c->moe_intermediate_size * c->n_shared_experts;
    const int64_t Fh = F > Fs ? F : Fs;
    int64_t *tgt = malloc((size_t)N * sizeof *tgt), cnt = 0;
    if (!tgt)
        return kd_err(KD_E_NOMEM, "targets");
    double sum = 0;
    int rc = forward_loss_(m, ids, labels, pos, B, T, tgt, &sum, &cnt);
    if (rc) {
        free(tgt);
        return rc;
    }
    if (loss_sum)
        *loss_sum = sum;
    if (count)
        *count = cnt;
    acts_ *a = &m->a;
    const float *P = m->params;
    float *G = m->grads;
    kd_crossentropy_backward(a->dlogits, a->logits, tgt, N, V, scale);
    free(tgt);
    memset(a->dln, 0, (size_t)(N * C) * sizeof(float));
    kd_matmul_backward(a->dln, G + m->lmh, NULL, a->dlogits, a->lnf, P + m->lmh, N, C, V);
    memset(a->dres, 0, (size_t)(N * C) * sizeof(float));
    kd_rmsnorm_backward(a->dres, G + m->lnf, a->dln, a->res2 + (L - 1) * N * C, P + m->lnf, a->lnf_rstd, N, C);
    for (int64_t l = L - 1; l >= 0; l--) {
        const tlayer_ *y = &m->layers[l];
        const float *xin = l == 0 ? a->x0 : a->res2 + (l - 1) * N * C;
        const float *ln1 = a->ln1 + l * N * C, *res1 = a->res1 + l * N * C, *ln2 = a->ln2 + l * N * C;
        /* res2 = res1 + mlp(ln2): dres is d res2, and flows on to d res1 */
        memset(a->dln, 0, (size_t)(N * C) * sizeof(float));
        if (y->moe)
            moe_backward_(m, y, l, a->dln, a->dres, ln2, N);
        else
            mlp_backward_(a->dln, G + y->gate, G + y->up, G + y->down, a->dres, ln2, a->hg + l * N * Fh,
                          a->hu + l * N * Fh, a->ha + l * N * Fh, P + y->gate, P + y->up, P + y->down, N, C, F,
                          a->dh1, a->dh2, a->dh3);
        kd_rmsnorm_backward(a->dres, G + y->ln2, a->dln, res1, P + y->ln2, a->ln2_rstd + l * N, N, C);
        /* res1 = xin + mla(ln1): dres is d res1, and flows on to d xin */
        memset(a->dln, 0, (size_t)(N * C) * sizeof(float));
        mla_backward_(m, y, l, a->dln, a->dres, ln1, pos, B, T);
        kd_rmsnorm_backward(a->dres, G + y->ln1, a->dln, xin, P + y->ln1, a->ln1_rstd + l * N, N, C);
    }
    kd_embedding_backward(G + m->wte, a->dres, ids, N, C);
    return KD_OK;
}

/* ---- update ---------------------------------------------------------------------------- */

static int no_decay_(const char *name)
{
    size_t n = strlen(name);
    return strstr(name, "norm.weight") != NULL || (n > 5 && !strcmp(name + n - 5, ".bias"));
}

int kd_teacher_train_adamw_step(kd_teacher_train *m, const kd_adamw *hp, int no_decay_norm_bias)
{
    KD_TRY(ensure_moments_(m));
    m->step++;
    if (!no_decay_norm_bias) {
        kd_adamw_update(m->params, m->grads, m->adam_m, m->adam_v, (int64_t)m->nparams, hp, m->step);
        return KD_OK;
    }
    kd_adamw nd = *hp;
    nd.weight_decay = 0.0;
    /* a few dozen tensors, most too small to split: one thread each */
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < m->nlist; i++) {
        const entry_ *e = &m->ents[m->list[i]];
        kd_adamw_update(m->params + e->off, m->grads + e->off, m->adam_m + e->off, m->adam_v + e->off,
                        (int64_t)e->numel, no_decay_(e->name) ? &nd : hp, m->step);
    }
    return KD_OK;
}

double kd_teacher_train_grad_norm(const kd_teacher_train *m) { return kd_norm2_det(m->grads, m->nparams); }

void kd_teacher_train_scale_grads(kd_teacher_train *m, float s)
{
    float *g = m->grads;
#pragma omp parallel for if (m->nparams > 65536)
    for (size_t i = 0; i < m->nparams; i++)
        g[i] *= s;
}

/* ---- parity: ref_train.safetensors (FIXTURES.md) ---------------------------------------- */

#define TOL_LOSS 1e-5
#define TOL_GRAD 1e-4
#define TOL_ADAMW 1e-5

/* the F32 reference tensor `key` of n elements, copied (the mapping may be
 * unaligned); NULL into *ref when absent */
static int ref_f32_(const kd_st *st, const char *file, const char *key, size_t n, float **ref)
{
    *ref = NULL;
    const kd_st_tensor *t = kd_st_find(st, key);
    if (!t)
        return KD_OK;
    if (t->dtype != KD_F32)
        return kd_err(KD_E_DTYPE, "'%s': tensor '%s' is %s, expected F32", file, key, kd_dtype_name(t->dtype));
    if (t->numel != n)
        return kd_err(KD_E_SHAPE, "'%s': tensor '%s' has %llu elements, expected %zu", file, key,
                      (unsigned long long)t->numel, n);
    *ref = malloc(n ? n * sizeof(float) : 1);
    if (!*ref)
        return kd_err(KD_E_NOMEM, "%s", key);
    memcpy(*ref, t->data, n * sizeof(float));
    return KD_OK;
}

/* The relative error of tensor `name` (which: 0 param, 1 grad) against
 * "<prefix><name>", or, for a fused routed-expert tensor the fixture does not
 * hold, against the per-expert tensors ("<prefix>...experts.E.*_proj.weight")
 * assembled in its layout. *found is 0 when the fixture has neither. */
static int vs_ref_(kd_teacher_train *m, const kd_st *st, const char *file, const char *prefix, const char *name,
                   int which, double *err, int *found)
{
    char key[512];
    float *ours = NULL, *ref = NULL;
    size_t n = 0;
    *found = 0;
    KD_TRY(kd_teacher_train_tensor(m, name, which, &ours, &n));
    snprintf(key, sizeof key, "%s%s", prefix, name);
    KD_TRY(ref_f32_(st, file, key, n, &ref));
    long long l;
    char kind[32];
    const kd_model_config *c = &m->cfg;
    if (!ref && sscanf(name, "model.layers.%lld.mlp.experts.%31s", &l, kind) == 2 &&
        (!strcmp(kind, "gate_up_proj") || !strcmp(kind, "down_proj"))) {
        const int64_t E = c->n_routed_experts;
        const size_t fc = (size_t)(c->moe_intermediate_size * c->hidden_size);
        const int gu = !strcmp(kind, "gate_up_proj");
        ref = malloc(n * sizeof(float));
        if (!ref)
            return kd_err(KD_E_NOMEM, "%s", key);
        for (int64_t e = 0; e < E; e++)
            for (int part = 0; part < (gu ? 2 : 1); part++) {
                float *one = NULL;
                snprintf(key, sizeof key, "%smodel.layers.%lld.mlp.experts.%lld.%s", prefix, l, (long long)e,
                         gu ? (part ? "up_proj.weight" : "gate_proj.weight") : "down_proj.weight");
                int rc = ref_f32_(st, file, key, fc, &one);
                if (rc || !one) {
                    free(ref);
                    return rc;
                }
                memcpy(ref + (size_t)e * (gu ? 2 : 1) * fc + (size_t)part * fc, one, fc * sizeof(float));
                free(one);
            }
    }
    if (!ref)
        return KD_OK;
    *found = 1;
    *err = kd_parity_rel_err(ours, ref, n);
    free(ref);
    return KD_OK;
}


/* the reference's gradients (fused or per expert) into m's */
static int load_ref_grads_(kd_teacher_train *m, const kd_st *st, const char *file)
{
    char key[512];
    for (size_t i = 0; i < m->nents; i++) {
        const entry_ *e = &m->ents[i];
        float *g = NULL, *ref;
        size_t n = 0;
        if (e->buffer)
            continue;
        snprintf(key, sizeof key, "grad.%s", e->name);
        KD_TRY(kd_teacher_train_tensor(m, e->name, 1, &g, &n));
        KD_TRY(ref_f32_(st, file, key, n, &ref));
        if (ref)
            memcpy(g, ref, n * sizeof(float));
        free(ref);
    }
    return KD_OK;
}

int kd_teacher_parity_train(const char *dir, FILE *out, int *failed)
{
    char file[4200];
    *failed = 0;
    snprintf(file, sizeof file, "%s/ref_train.safetensors", dir);
    kd_st *st = NULL;
    kd_teacher_train *m = NULL, *m2 = NULL;
    int64_t *ids = NULL, *labels = NULL;
    int rc;
    KD_TRY(kd_st_open(file, &st));
    const kd_st_tensor *ti = kd_st_find(st, "input_ids"), *tl = kd_st_find(st, "labels"), *tloss = kd_st_find(st, "loss");
    if (!ti || !tl || !tloss || ti->dtype != KD_I64 || tl->dtype != KD_I64 || tloss->dtype != KD_F32 ||
        ti->ndim != 2 || tl->numel != ti->numel || tloss->numel != 1) {
        rc = kd_err(KD_E_FORMAT, "'%s': needs input_ids and labels I64 [B, T] and loss F32 [1]", file);
        goto done;
    }
    kd_adamw hp;
    int found = kd_parity_adamw_hp(st, &hp);
    if (found < 0) {
        rc = found;
        goto done;
    }
    fprintf(out, "info adamw    lr %g betas (%g, %g) eps %g weight_decay %g (%s)\n", hp.lr, hp.beta1, hp.beta2,
            hp.eps, hp.weight_decay, found ? "from the fixture" : "FIXTURES.md defaults");
    const int64_t B = ti->shape[0], T = ti->shape[1];
    ids = malloc(ti->numel * sizeof *ids);
    labels = malloc(tl->numel * sizeof *labels);
    if (!ids || !labels) {
        rc = kd_err(KD_E_NOMEM, "the batch");
        goto done;
    }
    memcpy(ids, ti->data, ti->numel * sizeof *ids);
    memcpy(labels, tl->data, tl->numel * sizeof *labels);
    float rl, loss;
    memcpy(&rl, tloss->data, sizeof rl);
    if ((rc = kd_teacher_train_new(dir, &m)) || (rc = kd_teacher_train_loss_backward(m, ids, labels, NULL, B, T, &loss)))
        goto done;
    const double le = fabs((double)loss - rl) / fabs((double)rl);
    kd_parity_check(out, failed, le <= TOL_LOSS, "loss", "rel %.2g (tol %.0e), %.8g vs ref %.8g", le, TOL_LOSS, loss, rl);

    /* every gradient the fixture holds must be one of ours (a correction bias's must be zero) */
    for (size_t i = 0; i < kd_st_count(st); i++) {
        const kd_st_tensor *t = kd_st_at(st, i);
        if (strncmp(t->name, "grad.", 5))
            continue;
        const entry_ *e = find_(m, t->name + 5);
        if (e && !e->buffer)
            continue;
        double mx = 0;
        for (uint64_t j = 0; t->dtype == KD_F32 && j < t->numel; j++) {
            float v;
            memcpy(&v, (const char *)t->data + j * sizeof v, sizeof v);
            mx = fabs(v) > mx ? fabs(v) : mx;
        }
        kd_parity_check(out, failed, e && t->dtype == KD_F32 && mx == 0, "grad", "%s: %s (max |g| %.2g)", t->name + 5,
               e ? "a buffer here, zero gradient expected" : "not a parameter of this model", mx);
    }
    const size_t np = kd_teacher_train_param_count(m);
    for (size_t i = 0; i < np; i++) {
        const char *name = kd_teacher_train_param_name(m, i);
        double e = 0;
        int have;
        if ((rc = vs_ref_(m, st, file, "grad.", name, 1, &e, &have)))
            goto done;
        if (have)
            kd_parity_check(out, failed, e <= TOL_GRAD, "grad", "rel %.2g (tol %.0e) %s", e, TOL_GRAD, name);
        else
            kd_parity_check(out, failed, 0, "grad", "%s: the fixture has no grad.%s", name, name);
    }

    /* end to end: our gradients, then our step (information only, as the student's) */
    if ((rc = kd_teacher_train_adamw_step(m, &hp, 0)))
        goto done;
    double e2e = 0.0;
    const char *e2e_name = "";
    for (size_t i = 0; i < np; i++) {
        const char *name = kd_teacher_train_param_name(m, i);
        double e = 0;
        int have;
        if ((rc = vs_ref_(m, st, file, "after_adamw.", name, 0, &e, &have)))
            goto done;
        if (have && !(e <= e2e))
            e2e = e, e2e_name = name;
    }
    /* strict: the step applied to the reference gradients */
    if ((rc = kd_teacher_train_new(dir, &m2)) || (rc = load_ref_grads_(m2, st, file)) ||
        (rc = kd_teacher_train_adamw_step(m2, &hp, 0)))
        goto done;
    for (size_t i = 0; i < np; i++) {
        const char *name = kd_teacher_train_param_name(m2, i);
        double e = 0;
        int have;
        if ((rc = vs_ref_(m2, st, file, "after_adamw.", name, 0, &e, &have)))
            goto done;
        if (have)
            kd_parity_check(out, failed, e <= TOL_ADAMW, "adamw", "rel %.2g (tol %.0e) %s (step on reference grads)", e,
                   TOL_ADAMW, name);
        else
            kd_parity_check(out, failed, 0, "adamw", "%s: the fixture has no after_adamw.%s", name, name);
    }
    fprintf(out, "info adamw-e2e worst rel %.2g (%s): our grads then our step, not checked; at step 1 the update "
                 "is lr*g/(|g|+eps), so elements with |g| near eps amplify gradient differences far below the "
                 "gradient tolerance\n",
            e2e, e2e_name);
done:
    free(ids);
    free(labels);
    kd_teacher_train_free(m);
    kd_teacher_train_free(m2);
    kd_st_free(st);
    return rc;
}
