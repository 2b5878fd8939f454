/* cuda.c - the teacher's forward on one GPU (see teacher/cuda.h). The layer
 * code follows kd_teacher_step in teacher/model.c step for step; the ops are
 * core/cuda/cuops.h. */
#include "teacher/cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/status.h"

#ifndef KD_HAVE_CUDA

#define NO_CUDA_ kd_err(KD_E_CUDA, "this build has no CUDA backend: rebuild with -DDISTILL_CUDA=ON")
int kd_cu_teacher_new(const kd_teacher *cpu, const kd_cu_teacher_opts *o, kd_cu_teacher **out)
{
    (void)cpu, (void)o;
    *out = NULL;
    return NO_CUDA_;
}
int kd_cu_teacher_new_random(const kd_model_config *c, const kd_cu_teacher_opts *o, uint64_t seed, double std,
                             kd_cu_teacher **out)
{
    (void)c, (void)o, (void)seed, (void)std;
    *out = NULL;
    return NO_CUDA_;
}
void kd_cu_teacher_free(kd_cu_teacher *m) { (void)m; }
const kd_model_config *kd_cu_teacher_config(const kd_cu_teacher *m) { return (void)m, NULL; }
kd_kvpool *kd_cu_teacher_pool(kd_cu_teacher *m) { return (void)m, NULL; }
int64_t kd_cu_teacher_cache_tokens(const kd_cu_teacher *m) { return (void)m, 0; }
void kd_cu_teacher_mem_get(const kd_cu_teacher *m, kd_cu_teacher_mem *out)
{
    (void)m;
    memset(out, 0, sizeof *out);
}
int kd_cu_teacher_step(kd_cu_teacher *m, kd_kvseq *const *seqs, int nseq, const int64_t *ids, const int64_t *nn,
                       kd_mla_mode mode, int all_logits, float *logits)
{
    (void)m, (void)seqs, (void)nseq, (void)ids, (void)nn, (void)mode, (void)all_logits, (void)logits;
    return NO_CUDA_;
}
const float *kd_cu_teacher_logits_dev(const kd_cu_teacher *m) { return (void)m, NULL; }
int kd_cu_teacher_routes(kd_cu_teacher *m, int32_t *routes, int64_t n) { return (void)m, (void)routes, (void)n, NO_CUDA_; }
struct kd_cu *kd_cu_teacher_cu(kd_cu_teacher *m) { return (void)m, NULL; }
int kd_cu_teacher_logits(kd_cu_teacher *m, const int64_t *ids, int64_t T, float *logits)
{
    (void)m, (void)ids, (void)T, (void)logits;
    return NO_CUDA_;
}
int kd_cu_teacher_generate_greedy(kd_cu_teacher *m, const int64_t *prompt, int64_t P, int64_t N,
                                  const int64_t *suppress, int nsuppress, int64_t *out, float *step_logits)
{
    (void)m, (void)prompt, (void)P, (void)N, (void)suppress, (void)nsuppress, (void)out, (void)step_logits;
    return NO_CUDA_;
}
int kd_cu_teacher_prof_on(kd_cu_teacher *m) { return (void)m, NO_CUDA_; }
int kd_cu_teacher_prof_report(kd_cu_teacher *m, void *file) { return (void)m, (void)file, NO_CUDA_; }

#else /* KD_HAVE_CUDA */

#include "core/cuda/cuops.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "core/sampler.h"
#include "teacher/internal.h"

typedef struct layer_ {
    kd_bf16 *ln1, *ln2;
    kd_bf16 *wa, *ba;          /* [q_a; kv_a] (Qr + R + Dr, C) with q_lora, else kv_a (R + Dr, C); bias or NULL */
    kd_bf16 *q_proj;           /* (H Dq, C) without q_lora */
    kd_bf16 *q_a_ln, *q_b;     /* (Qr), (H Dq, Qr) */
    kd_bf16 *kv_ln, *kv_b;     /* (R), (H (Dn + Dv), R) */
    kd_bf16 *o, *o_b;          /* (C, H Dv) */
    int moe;
    kd_bf16 *gu, *down;        /* dense: (2F, C), (C, F) */
    float *router, *rbias;     /* (E, C) fp32, (E) fp32 or NULL */
    kd_bf16 *egu, *edown;      /* (E, 2Fm, C), (E, C, Fm) */
    uint8_t *egu8, *edown8;    /* FP8 experts: e4m3 and 128 x 128 block scales (kd_cu_fp8_quantize) */
    float *egus, *edowns;
    kd_bf16 *sgu, *sdown;      /* shared experts: (2Fs, C), (C, Fs) or NULL */
} layer_;

struct kd_cu_teacher {
    kd_model_config cfg;
    kd_cu cu;
    kd_cu_teacher_opts o;
    layer_ *layers;
    kd_bf16 *wte, *lnf, *lmh;
    float *cos_, *sin_;        /* rope table (max_pos, Dr/2) */
    float scale;
    int64_t Dq, Wa, Dkp, Dvp, rows_lg, maxpos;
    /* the cache: per layer nblocks + 1 blocks, the last a trash block */
    kd_kvpool *pool;
    kd_bf16 *cache;            /* (L, nblocks, block, R + Dr) */
    int64_t nblocks, block, row;
    /* work buffers (bf16 unless said) */
    kd_bf16 *x, *ln, *mo, *aout, *qan, *q, *qlat, *att16, *attv;
    float *att32;
    kd_bf16 *lat, *kvd, *Qp, *Kp, *Vp, *outp;
    float *lse;
    float *rlog, *rwt;
    int32_t *ridx, *psrc, *pdst, *poff, *pcnt;
    kd_bf16 *xin, *egu_o, *eact, *ey, *sgu_o, *sact, *sy;
    uint8_t *xin8, *eact8; /* FP8 experts: the rows as e4m3, one scale per row per 128 (xins, eacts) */
    float *xins, *eacts;
    float *lg;                 /* (rows_lg, V) fp32 */
    kd_bf16 *stage16;          /* FP8: one layer's experts in bf16, before quantisation */
    kd_bf16 *lnsel;
    int32_t *d_i32;            /* device copies of the step's index arrays */
    int32_t *h_pin;            /* graphs: the pinned host copy a graph's first node reads */
    void **graphs;             /* graphs: one per bucket of decode rows (1, 2, 4, ... max_seqs), or NULL */
    int64_t maxb_all;          /* block-table width of the graphs: the context in blocks */
    int32_t *h_i32;            /* host staging */
    int64_t n_i32;
    int64_t last_rows;
    int32_t *rrec;             /* record_routes: (layers, rows, k) of the last step */
    float *mla_work;           /* mla_splits: the splits' partial sums (kd_cu_mla_decode_split) */
    int64_t rec_rows, rec_tokens; /* its rows (a graph's bucket) and new tokens */
    kd_cu_teacher_mem mem;
    void **allocs;
    int nallocs, capallocs;
};

static void *dalloc_(kd_cu_teacher *m, size_t bytes, size_t *count)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 16;
    if (m->nallocs == m->capallocs) {
        int cap = m->capallocs ? 2 * m->capallocs : 256;
        void **a = realloc(m->allocs, (size_t)cap * sizeof *a);
        if (!a)
            return NULL;
        m->allocs = a;
        m->capallocs = cap;
    }
    if (kd_cu_malloc(&p, bytes))
        return NULL;
    m->allocs[m->nallocs++] = p;
    if (count)
        *count += bytes;
    return p;
}

void kd_cu_teacher_free(kd_cu_teacher *m)
{
    if (!m)
        return;
    for (int i = 0; m->graphs && i < 32; i++)
        kd_cu_graph_free(m->graphs[i]);
    free(m->graphs);
    kd_cu_host_free(m->h_pin);
    for (int i = 0; i < m->nallocs; i++)
        kd_cu_free_ptr(m->allocs[i]);
    free(m->allocs);
    kd_kvpool_free(m->pool);
    kd_cu_free(&m->cu);
    free(m->layers);
    free(m->h_i32);
    free(m);
}

const kd_model_config *kd_cu_teacher_config(const kd_cu_teacher *m) { return &m->cfg; }
kd_kvpool *kd_cu_teacher_pool(kd_cu_teacher *m) { return m->pool; }
int64_t kd_cu_teacher_cache_tokens(const kd_cu_teacher *m) { return m->nblocks * m->block; }
void kd_cu_teacher_mem_get(const kd_cu_teacher *m, kd_cu_teacher_mem *out) { *out = m->mem; }
const float *kd_cu_teacher_logits_dev(const kd_cu_teacher *m) { return m->lg; }
struct kd_cu *kd_cu_teacher_cu(kd_cu_teacher *m) { return &m->cu; }
int kd_cu_teacher_prof_on(kd_cu_teacher *m) { return kd_cu_prof_on(&m->cu); }
int kd_cu_teacher_prof_report(kd_cu_teacher *m, void *file) { return kd_cu_prof_report(&m->cu, file); }

static int64_t pad_dim_(int64_t d)
{
    return d <= 16 ? 16 : d <= 32 ? 32 : d <= 64 ? 64 : 128;
}

/* ---- weights ---------------------------------------------------------------------------------
 * A source fills one device tensor: from the CPU teacher by HF name (rows
 * [r0, r0 + n) of a fused buffer), or random. */
typedef struct src_ {
    const kd_teacher *cpu; /* NULL: random */
    uint64_t seed, k;      /* random: the seed and a running tensor counter */
    float std;
    float *host;           /* staging, fp32 */
    kd_bf16 *h16;
    size_t cap;
} src_;

static int put_(kd_cu_teacher *m, src_ *s, void *dst, int f32, const char *name, size_t n, int kind)
{
    /* kind 0 weight, 1 norm (ones), 2 zeros */
    if (!s->cpu) {
        if (kind == 2)
            return kd_cu_memset0(dst, n * (f32 ? 4 : 2), &m->cu);
        if (kind == 1)
            return f32 ? kd_err(KD_E_INTERNAL, "fp32 norm") : kd_cu_fill_bf16(dst, (int64_t)n, 1.0f, &m->cu);
        return kd_cu_fill_normal(f32 ? NULL : dst, f32 ? dst : NULL, (int64_t)n, s->std,
                                 s->seed * 0x9e3779b97f4a7c15ull + ++s->k, &m->cu);
    }
    size_t have = 0;
    const float *w = kd_teacher_weight(s->cpu, name, &have);
    if (!w || have != n)
        return kd_err(KD_E_INTERNAL, "teacher tensor '%s': %s (%zu elements, want %zu)", name,
                      w ? "wrong size" : "missing", have, n);
    if (f32)
        return kd_cu_upload(dst, w, n * sizeof(float), &m->cu);
    if (n > s->cap) {
        kd_bf16 *h = realloc(s->h16, n * sizeof *h);
        if (!h)
            return kd_err(KD_E_NOMEM, "weight staging");
        s->h16 = h;
        s->cap = n;
    }
    for (size_t i = 0; i < n; i++)
        s->h16[i] = kd_f32_to_bf16(w[i]);
    return kd_cu_upload(dst, s->h16, n * sizeof(kd_bf16), &m->cu);
}

#define NAME_(buf, l, suffix) snprintf(buf, sizeof buf, "model.layers.%lld.%s", (long long)(l), suffix)

static int weights_(kd_cu_teacher *m, src_ *s)
{
    const kd_model_config *c = &m->cfg;
    const int64_t C = c->hidden_size, H = c->num_heads, Qr = c->q_lora_rank, R = c->kv_lora_rank;
    const int64_t Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Dq = Dn + Dr;
    const int64_t E = c->n_routed_experts, Fm = c->moe_intermediate_size, Fs = Fm * c->n_shared_experts;
    const int64_t F = c->intermediate_size, V = c->vocab_size;
    size_t *cnt = &m->mem.weights;
    char nm[200], nm2[200];
#define A16_(n) ((kd_bf16 *)dalloc_(m, (size_t)(n) * 2, cnt))
#define A32_(n) ((float *)dalloc_(m, (size_t)(n) * 4, cnt))
#define CK_(p)                                                                                     \
    do {                                                                                           \
        if (!(p))                                                                                  \
            return kd_err(KD_E_NOMEM, "teacher weights on the GPU (%zu bytes so far)", *cnt);      \
    } while (0)
    m->wte = A16_(V * C);
    m->lnf = A16_(C);
    m->lmh = c->tie_word_embeddings ? m->wte : A16_(V * C);
    CK_(m->wte && m->lnf && m->lmh);
    KD_TRY(put_(m, s, m->wte, 0, "model.embed_tokens.weight", (size_t)(V * C), 0));
    KD_TRY(put_(m, s, m->lnf, 0, "model.norm.weight", (size_t)C, 1));
    if (!c->tie_word_embeddings)
        KD_TRY(put_(m, s, m->lmh, 0, "lm_head.weight", (size_t)(V * C), 0));
    for (int64_t l = 0; l < c->num_layers; l++) {
        layer_ *y = &m->layers[l];
        y->ln1 = A16_(C);
        y->ln2 = A16_(C);
        y->wa = A16_(m->Wa * C);
        y->kv_ln = A16_(R);
        y->kv_b = A16_(H * (Dn + Dv) * R);
        y->o = A16_(C * H * Dv);
        CK_(y->ln1 && y->ln2 && y->wa && y->kv_ln && y->kv_b && y->o);
        NAME_(nm, l, "input_layernorm.weight");
        KD_TRY(put_(m, s, y->ln1, 0, nm, (size_t)C, 1));
        NAME_(nm, l, "post_attention_layernorm.weight");
        KD_TRY(put_(m, s, y->ln2, 0, nm, (size_t)C, 1));
        const int64_t qa = Qr > 0 ? Qr : 0;
        if (Qr > 0) {
            NAME_(nm, l, "self_attn.q_a_proj.weight");
            KD_TRY(put_(m, s, y->wa, 0, nm, (size_t)(Qr * C), 0));
            y->q_a_ln = A16_(Qr);
            y->q_b = A16_(H * Dq * Qr);
            CK_(y->q_a_ln && y->q_b);
            NAME_(nm, l, "self_attn.q_a_layernorm.weight");
            KD_TRY(put_(m, s, y->q_a_ln, 0, nm, (size_t)Qr, 1));
            NAME_(nm, l, "self_attn.q_b_proj.weight");
            KD_TRY(put_(m, s, y->q_b, 0, nm, (size_t)(H * Dq * Qr), 0));
        } else {
            y->q_proj = A16_(H * Dq * C);
            CK_(y->q_proj);
            NAME_(nm, l, "self_attn.q_proj.weight");
            KD_TRY(put_(m, s, y->q_proj, 0, nm, (size_t)(H * Dq * C), 0));
        }
        NAME_(nm, l, "self_attn.kv_a_proj_with_mqa.weight");
        KD_TRY(put_(m, s, y->wa + qa * C, 0, nm, (size_t)((R + Dr) * C), 0));
        /* biases (DeepSeek-V2 variants with attention_bias): the fused one, zeros where absent */
        size_t nb = 0;
        NAME_(nm, l, "self_attn.q_a_proj.bias");
        NAME_(nm2, l, "self_attn.kv_a_proj_with_mqa.bias");
        if (s->cpu && (kd_teacher_weight(s->cpu, nm, &nb) || kd_teacher_weight(s->cpu, nm2, &nb))) {
            y->ba = A16_(m->Wa);
            CK_(y->ba);
            KD_TRY(kd_cu_memset0(y->ba, (size_t)m->Wa * 2, &m->cu));
            if (Qr > 0 && kd_teacher_weight(s->cpu, nm, &nb))
                KD_TRY(put_(m, s, y->ba, 0, nm, (size_t)Qr, 0));
            if (kd_teacher_weight(s->cpu, nm2, &nb))
                KD_TRY(put_(m, s, y->ba + qa, 0, nm2, (size_t)(R + Dr), 0));
        }
        NAME_(nm, l, "self_attn.kv_a_layernorm.weight");
        KD_TRY(put_(m, s, y->kv_ln, 0, nm, (size_t)R, 1));
        NAME_(nm, l, "self_attn.kv_b_proj.weight");
        KD_TRY(put_(m, s, y->kv_b, 0, nm, (size_t)(H * (Dn + Dv) * R), 0));
        NAME_(nm, l, "self_attn.o_proj.weight");
        KD_TRY(put_(m, s, y->o, 0, nm, (size_t)(C * H * Dv), 0));
        NAME_(nm, l, "self_attn.o_proj.bias");
        if (s->cpu && kd_teacher_weight(s->cpu, nm, &nb)) {
            y->o_b = A16_(C);
            CK_(y->o_b);
            KD_TRY(put_(m, s, y->o_b, 0, nm, (size_t)C, 0));
        }
        y->moe = kd_model_layer_is_moe(c, l);
        if (!y->moe) {
            y->gu = A16_(2 * F * C);
            y->down = A16_(C * F);
            CK_(y->gu && y->down);
            NAME_(nm, l, "mlp.gate_proj.weight");
            KD_TRY(put_(m, s, y->gu, 0, nm, (size_t)(F * C), 0));
            NAME_(nm, l, "mlp.up_proj.weight");
            KD_TRY(put_(m, s, y->gu + F * C, 0, nm, (size_t)(F * C), 0));
            NAME_(nm, l, "mlp.down_proj.weight");
            KD_TRY(put_(m, s, y->down, 0, nm, (size_t)(C * F), 0));
            continue;
        }
        y->router = A32_(E * C);
        if (m->o.fp8_experts) { /* staged in bf16 (one layer's, shared), then quantised */
            if (!m->stage16 && !(m->stage16 = (kd_bf16 *)dalloc_(m, (size_t)(E * 2 * Fm * C) * 2, &m->mem.work)))
                return kd_err(KD_E_NOMEM, "FP8 staging");
            y->egu = m->stage16, y->edown = m->stage16;
            y->egu8 = (uint8_t *)dalloc_(m, (size_t)(E * 2 * Fm * C), cnt);
            y->edown8 = (uint8_t *)dalloc_(m, (size_t)(E * C * Fm), cnt);
            y->egus = A32_(E * ((2 * Fm + 127) / 128) * ((C + 127) / 128));
            y->edowns = A32_(E * ((C + 127) / 128) * ((Fm + 127) / 128));
            CK_(y->egu8 && y->edown8 && y->egus && y->edowns);
        } else {
            y->egu = A16_(E * 2 * Fm * C);
            y->edown = A16_(E * C * Fm);
        }
        CK_(y->router && y->egu && y->edown);
        NAME_(nm, l, "mlp.gate.weight");
        KD_TRY(put_(m, s, y->router, 1, nm, (size_t)(E * C), 0));
        NAME_(nm, l, "mlp.gate.e_score_correction_bias");
        if (s->cpu ? kd_teacher_weight(s->cpu, nm, &nb) != NULL : c->topk_method == KD_TOPK_NOAUX_TC) {
            y->rbias = A32_(E);
            CK_(y->rbias);
            KD_TRY(put_(m, s, y->rbias, 1, nm, (size_t)E, 2 * !s->cpu));
        }
        for (int64_t e = 0; e < E; e++) {
            char en[200];
            snprintf(en, sizeof en, "model.layers.%lld.mlp.experts.%lld.gate_proj.weight", (long long)l, (long long)e);
            KD_TRY(put_(m, s, y->egu + e * 2 * Fm * C, 0, en, (size_t)(Fm * C), 0));
            snprintf(en, sizeof en, "model.layers.%lld.mlp.experts.%lld.up_proj.weight", (long long)l, (long long)e);
            KD_TRY(put_(m, s, y->egu + e * 2 * Fm * C + Fm * C, 0, en, (size_t)(Fm * C), 0));
        }
        if (y->egu8)
            KD_TRY(kd_cu_fp8_quantize(y->egu8, y->egus, y->egu, E, 2 * Fm, C, &m->cu));
        for (int64_t e = 0; e < E; e++) {
            char en[200];
            snprintf(en, sizeof en, "model.layers.%lld.mlp.experts.%lld.down_proj.weight", (long long)l, (long long)e);
            KD_TRY(put_(m, s, y->edown + e * C * Fm, 0, en, (size_t)(C * Fm), 0));
        }
        if (y->edown8)
            KD_TRY(kd_cu_fp8_quantize(y->edown8, y->edowns, y->edown, E, C, Fm, &m->cu));
        if (Fs > 0) {
            y->sgu = A16_(2 * Fs * C);
            y->sdown = A16_(C * Fs);
            CK_(y->sgu && y->sdown);
            NAME_(nm, l, "mlp.shared_experts.gate_proj.weight");
            KD_TRY(put_(m, s, y->sgu, 0, nm, (size_t)(Fs * C), 0));
            NAME_(nm, l, "mlp.shared_experts.up_proj.weight");
            KD_TRY(put_(m, s, y->sgu + Fs * C, 0, nm, (size_t)(Fs * C), 0));
            NAME_(nm, l, "mlp.shared_experts.down_proj.weight");
            KD_TRY(put_(m, s, y->sdown, 0, nm, (size_t)(C * Fs), 0));
        }
    }
    return KD_OK;
}

/* ---- work buffers and the cache ------------------------------------------------------------ */

/* The key splits of a decode step of `rows` sequences: none once the rows' CTAs
 * fill the SMs (measured on an H100, 2026-12-08: 2 splits at 256 rows cost 4%),
 * else enough for two CTAs per SM, at most opts.mla_splits (0: 8) */
static int mla_splits_(const kd_cu_teacher *m, int64_t rows)
{
    const int64_t most = m->o.mla_splits ? m->o.mla_splits : 8, hb = (m->cfg.num_heads + 15) / 16;
    const int64_t sms = m->cu.sms > 0 ? m->cu.sms : 132;
    if (most <= 1 || rows < 1 || rows * hb >= sms)
        return 1;
    const int64_t sp = (2 * sms + rows * hb - 1) / (rows * hb);
    return (int)(sp > most ? most : sp);
}

static int work_(kd_cu_teacher *m)
{
    const kd_model_config *c = &m->cfg;
    const int64_t C = c->hidden_size, H = c->num_heads, Qr = c->q_lora_rank, R = c->kv_lora_rank;
    const int64_t Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Dq = m->Dq;
    const int64_t E = c->n_routed_experts, k = c->num_experts_per_tok, Fm = c->moe_intermediate_size;
    const int64_t Fs = Fm * c->n_shared_experts, F = c->intermediate_size, V = c->vocab_size;
    const int64_t N = m->o.max_tokens, M = m->o.max_tokens, NK = N * (k > 0 ? k : 1);
    const int64_t Fmax = F > Fs ? F : Fs;
    size_t *cnt = &m->mem.work;
    m->x = A16_(N * C);
    m->ln = A16_(N * C);
    m->mo = A16_(N * C);
    m->aout = A16_(N * m->Wa);
    m->qan = A16_(N * (Qr > 0 ? Qr : 1));
    m->q = A16_(N * H * Dq);
    m->qlat = A16_(N * H * (R + Dr));
    m->att32 = A32_(N * H * R);
    m->att16 = A16_(N * H * R);
    m->attv = A16_(N * H * Dv);
    m->lat = A16_(M * (R + Dr));
    m->kvd = A16_(M * H * (Dn + Dv));
    m->Qp = A16_(M * H * m->Dkp);
    m->Kp = A16_(M * H * m->Dkp);
    m->Vp = A16_(M * H * m->Dvp);
    m->outp = A16_(M * H * m->Dvp);
    m->lse = A32_(M * H);
    m->rlog = A32_(N * (E > 0 ? E : 1));
    m->rwt = A32_(NK);
    m->ridx = (int32_t *)dalloc_(m, (size_t)NK * 4, cnt);
    m->psrc = (int32_t *)dalloc_(m, (size_t)NK * 4, cnt);
    m->pdst = (int32_t *)dalloc_(m, (size_t)NK * 4, cnt);
    m->poff = (int32_t *)dalloc_(m, (size_t)(E + 1) * 4, cnt);
    m->pcnt = (int32_t *)dalloc_(m, (size_t)(E + 1) * 4, cnt);
    m->xin = A16_(NK * C);
    m->egu_o = A16_(NK * 2 * (Fm > 0 ? Fm : 1));
    m->eact = A16_(NK * (Fm > 0 ? Fm : 1));
    m->ey = A16_(NK * C);
    if (m->o.fp8_experts) {
        const int64_t Fm1 = Fm > 0 ? Fm : 1;
        m->xin8 = (uint8_t *)dalloc_(m, (size_t)(NK * C), cnt);
        m->eact8 = (uint8_t *)dalloc_(m, (size_t)(NK * Fm1), cnt);
        m->xins = A32_(NK * ((C + 127) / 128));
        m->eacts = A32_(NK * ((Fm1 + 127) / 128));
        if (!m->xin8 || !m->eact8 || !m->xins || !m->eacts)
            return kd_err(KD_E_NOMEM, "teacher FP8 row buffers on the GPU (%zu bytes so far)", *cnt);
    }
    m->sgu_o = A16_(N * 2 * Fmax);
    m->sact = A16_(N * Fmax);
    m->sy = A16_(N * C);
    if (m->o.mla_splits != 1) {
        int64_t most = 0;
        for (int64_t r = 1; r <= m->o.max_seqs; r++)
            most = mla_splits_(m, r) * r > most ? mla_splits_(m, r) * r : most;
        if (!(m->mla_work = A32_(most * H * (R + 2))))
            return kd_err(KD_E_NOMEM, "teacher split decode work");
    }
    if (m->o.record_routes && !(m->rrec = (int32_t *)dalloc_(m, (size_t)(c->num_layers * NK) * 4, cnt)))
        return kd_err(KD_E_NOMEM, "teacher route record");
    m->rows_lg = m->o.max_seqs;
    m->lg = A32_(m->rows_lg * V);
    m->lnsel = A16_(m->rows_lg * C);
    /* index arrays: ids, pos, slot (N each), table (S x max blocks), lens (S),
     * packed: latent rows, positions, q rows (M each), out rows (N H), selected rows */
    const int64_t maxb = (m->maxpos + m->block - 1) / m->block;
    m->n_i32 = 3 * N + m->o.max_seqs * maxb + m->o.max_seqs + 3 * M + N * H + m->rows_lg + 64;
    m->d_i32 = (int32_t *)dalloc_(m, (size_t)m->n_i32 * 4, cnt);
    m->h_i32 = malloc((size_t)m->n_i32 * 4);
    m->maxb_all = maxb;
    if (m->o.graphs) {
        KD_TRY(kd_cu_host_alloc((void **)&m->h_pin, (size_t)m->n_i32 * 4));
        if (!(m->graphs = calloc(32, sizeof *m->graphs)))
            return kd_err(KD_E_NOMEM, "graphs");
    }
    if (!m->x || !m->ln || !m->mo || !m->aout || !m->qan || !m->q || !m->qlat || !m->att32 || !m->att16 ||
        !m->attv || !m->lat || !m->kvd || !m->Qp || !m->Kp || !m->Vp || !m->outp || !m->lse || !m->rlog ||
        !m->rwt || !m->ridx || !m->psrc || !m->pdst || !m->poff || !m->pcnt || !m->xin || !m->egu_o ||
        !m->eact || !m->ey || !m->sgu_o || !m->sact || !m->sy || !m->lg || !m->lnsel || !m->d_i32 || !m->h_i32)
        return kd_err(KD_E_NOMEM, "teacher work buffers on the GPU (%zu bytes so far)", *cnt);
    return KD_OK;
}

static void on_copy_(void *ctx, int32_t from, int32_t to)
{
    kd_cu_teacher *m = ctx;
    const size_t bb = (size_t)(m->block * m->row) * sizeof(kd_bf16);
    for (int64_t l = 0; l < m->cfg.num_layers; l++) {
        char *base = (char *)m->cache + (size_t)l * (size_t)(m->nblocks + 1) * bb;
        if (kd_cu_copy(base + (size_t)to * bb, base + (size_t)from * bb, bb, &m->cu))
            kd_warn("teacher cache: a copy-on-write block copy failed");
    }
}

static int cache_(kd_cu_teacher *m)
{
    const kd_model_config *c = &m->cfg;
    const size_t per_block = (size_t)(c->num_layers * m->block * m->row) * sizeof(kd_bf16);
    int64_t nb = m->o.kv_blocks;
    if (nb <= 0) {
        size_t used = 0, total = 0;
        KD_TRY(kd_cu_mem_info(&used, &total));
        const double res = (m->o.reserve_gib > 0 ? m->o.reserve_gib : 2.0) * 1073741824.0;
        const double avail = (double)total - (double)used - res;
        nb = avail > 0 ? (int64_t)(avail / (double)per_block) - 1 : 0;
        const int64_t most = (int64_t)1 << 30;
        nb = nb > most ? most : nb;
        if (nb < 1)
            return kd_err(KD_E_NOMEM, "no device memory left for the teacher's cache (%.2f GiB used of %.2f)",
                          (double)used / 1073741824.0, (double)total / 1073741824.0);
    }
    m->cache = dalloc_(m, per_block * (size_t)(nb + 1), &m->mem.cache); /* + a trash block (graphs' padding) */
    if (!m->cache)
        return kd_err(KD_E_NOMEM, "teacher cache of %lld blocks (%.2f GiB)", (long long)nb,
                      (double)per_block * (double)nb / 1073741824.0);
    m->nblocks = nb;
    KD_TRY(kd_kvpool_new_index(nb, m->block, m->maxpos, &m->pool));
    kd_kvpool_on_copy(m->pool, on_copy_, m);
    return KD_OK;
}

static int make_(const kd_model_config *c, const kd_cu_teacher_opts *o, src_ *s, kd_cu_teacher **out)
{
    *out = NULL;
    if (c->arch != KD_ARCH_DEEPSEEK_V3 && c->arch != KD_ARCH_DEEPSEEK_V2)
        return kd_err(KD_E_UNSUPPORTED, "the CUDA teacher runs deepseek_v3 / deepseek_v2, not %s", c->model_type);
    const int64_t R = c->kv_lora_rank, Dr = c->qk_rope_head_dim, Dq = c->qk_nope_head_dim + Dr;
    if (c->hidden_size % 8 || R % 32 || R > 512 || (R + Dr) % 16 || Dr > 128 || Dr % 2 ||
        (c->q_lora_rank > 0 && c->q_lora_rank % 8) || c->moe_intermediate_size % 8 || c->intermediate_size % 8 ||
        Dq % 8 || c->v_head_dim % 8 || (Dq > 128 && !(Dq == 192 && c->v_head_dim == 128)) ||
        c->n_routed_experts > KD_CU_MOE_MAXE || c->num_experts_per_tok > KD_CU_MOE_MAXK)
        return kd_err(KD_E_UNSUPPORTED, "the CUDA teacher needs hidden, q_lora, intermediate sizes multiples of 8, "
                      "kv_lora a multiple of 32 up to 512 (+ rope dim a multiple of 16), head dims multiples of 8 "
                      "up to 128 (or 192/128), at most %d experts, top-%d", KD_CU_MOE_MAXE, KD_CU_MOE_MAXK);
    if (o->fp8_experts && (c->moe_intermediate_size % 16 || c->hidden_size % 16))
        return kd_err(KD_E_UNSUPPORTED, "FP8 experts need hidden and moe_intermediate sizes multiples of 16");
    if (o->max_tokens <= 0 || o->max_seqs <= 0 || o->max_seqs > o->max_tokens)
        return kd_err(KD_E_RANGE, "CUDA teacher: max_tokens %lld, max_seqs %lld", (long long)o->max_tokens,
                      (long long)o->max_seqs);
    kd_cu_teacher *m = calloc(1, sizeof *m);
    if (!m)
        return kd_err(KD_E_NOMEM, "CUDA teacher");
    m->cfg = *c;
    m->o = *o;
    m->block = o->block > 0 ? o->block : 16;
    m->row = R + Dr;
    m->Dq = Dq;
    m->Wa = (c->q_lora_rank > 0 ? c->q_lora_rank : 0) + R + Dr;
    if (Dq == 192 && c->v_head_dim == 128)
        m->Dkp = 192, m->Dvp = 128;
    else
        m->Dkp = m->Dvp = pad_dim_(Dq > c->v_head_dim ? Dq : c->v_head_dim);
    m->maxpos = c->max_position > 0 ? c->max_position : 4096;
    m->scale = kd_teacher_scale_(c);
    m->layers = calloc((size_t)c->num_layers, sizeof *m->layers);
    int rc = m->layers ? kd_cu_init(&m->cu, o->device) : kd_err(KD_E_NOMEM, "CUDA teacher layers");
    /* the rope table: the CPU pool's (kd_rope_table over max_position) */
    const int64_t half = Dr / 2;
    float *tab = rc ? NULL : malloc((size_t)(2 * m->maxpos * half) * sizeof(float));
    if (!rc && !tab)
        rc = kd_err(KD_E_NOMEM, "rope table");
    if (!rc)
        rc = kd_rope_table(tab, tab + m->maxpos * half, &c->rope, m->maxpos, Dr, NULL);
    if (!rc) {
        m->cos_ = dalloc_(m, (size_t)(2 * m->maxpos * half) * 4, &m->mem.work);
        rc = m->cos_ ? kd_cu_upload(m->cos_, tab, (size_t)(2 * m->maxpos * half) * 4, &m->cu)
                     : kd_err(KD_E_NOMEM, "rope table on the GPU");
        m->sin_ = m->cos_ + m->maxpos * half;
    }
    free(tab);
    if (!rc)
        rc = weights_(m, s);
    if (!rc)
        rc = work_(m);
    if (!rc)
        rc = kd_cu_sync(&m->cu);
    if (!rc)
        rc = cache_(m);
    if (rc) {
        kd_cu_teacher_free(m);
        return rc;
    }
    const double G = 1073741824.0;
    kd_info("CUDA teacher: weights %.2f GiB (%s experts), work %.2f GiB, cache %.2f GiB = %lld blocks of %lld = "
            "%lld tokens (%lld layers x %lld values per token, bf16)",
            m->mem.weights / G, o->fp8_experts ? "FP8" : "bf16", m->mem.work / G, m->mem.cache / G,
            (long long)m->nblocks, (long long)m->block,
            (long long)(m->nblocks * m->block), (long long)c->num_layers, (long long)m->row);
    *out = m;
    return KD_OK;
}

int kd_cu_teacher_new(const kd_teacher *cpu, const kd_cu_teacher_opts *o, kd_cu_teacher **out)
{
    src_ s = {.cpu = cpu};
    int rc = make_(kd_teacher_config(cpu), o, &s, out);
    free(s.h16);
    return rc;
}

int kd_cu_teacher_new_random(const kd_model_config *c, const kd_cu_teacher_opts *o, uint64_t seed, double std,
                             kd_cu_teacher **out)
{
    src_ s = {.seed = seed, .std = (float)std};
    return make_(c, o, &s, out);
}

/* ---- the step ---------------------------------------------------------------------------------- */

#define P_(cu, kind) kd_cu_prof_mark(cu, kind)

static int mlp_(kd_cu_teacher *m, const layer_ *y, int64_t N)
{
    const kd_model_config *c = &m->cfg;
    kd_cu *cu = &m->cu;
    const int64_t C = c->hidden_size, F = c->intermediate_size;
    P_(cu, "dense mlp");
    KD_TRY(kd_cu_linear_forward(m->sgu_o, m->ln, y->gu, NULL, N, C, 2 * F, cu));
    KD_TRY(kd_cu_swiglu_forward(m->sact, m->sgu_o, N, F, cu));
    return kd_cu_linear_forward(m->mo, m->sact, y->down, NULL, N, F, C, cu);
}

static int moe_(kd_cu_teacher *m, const layer_ *y, int64_t N)
{
    const kd_model_config *c = &m->cfg;
    kd_cu *cu = &m->cu;
    const int64_t C = c->hidden_size, E = c->n_routed_experts, k = c->num_experts_per_tok;
    const int64_t Fm = c->moe_intermediate_size, Fs = Fm * c->n_shared_experts;
    P_(cu, "moe route");
    KD_TRY(kd_cu_router_logits(m->rlog, m->ln, y->router, N, E, C, cu));
    kd_cu_route rc = {.E = (int)E, .k = (int)k, .G = (int)(c->n_group > 0 ? c->n_group : 1),
                      .topk_group = (int)c->topk_group, .method = (int)c->topk_method,
                      .sigmoid = c->scoring_func == KD_SCORE_SIGMOID, .v3 = c->arch == KD_ARCH_DEEPSEEK_V3,
                      .norm_topk_prob = c->norm_topk_prob, .scaling = (float)c->routed_scaling_factor};
    KD_TRY(kd_cu_moe_route(m->ridx, m->rwt, m->rlog, y->rbias, N, &rc, cu));
    if (m->rrec)
        KD_TRY(kd_cu_copy(m->rrec + (y - m->layers) * N * k, m->ridx, (size_t)(N * k) * 4, cu));
    KD_TRY(kd_cu_moe_permute(m->psrc, m->pdst, m->poff, m->pcnt, m->ridx, N, (int)k, (int)E, cu));
    KD_TRY(kd_cu_moe_gather(m->xin, m->ln, m->psrc, N, (int)k, C, cu));
    P_(cu, "moe experts");
    if (y->egu8) {
        KD_TRY(kd_cu_fp8_quantize_rows(m->xin8, m->xins, m->xin, N * k, C, cu));
        KD_TRY(kd_cu_moe_gemm_fp8(m->egu_o, m->xin8, m->xins, y->egu8, y->egus, m->poff, (int)E, N * k, 2 * Fm, C,
                                  cu));
        KD_TRY(kd_cu_swiglu_forward(m->eact, m->egu_o, N * k, Fm, cu));
        KD_TRY(kd_cu_fp8_quantize_rows(m->eact8, m->eacts, m->eact, N * k, Fm, cu));
        KD_TRY(kd_cu_moe_gemm_fp8(m->ey, m->eact8, m->eacts, y->edown8, y->edowns, m->poff, (int)E, N * k, C, Fm,
                                  cu));
    } else {
        KD_TRY(kd_cu_moe_gemm(m->egu_o, m->xin, y->egu, m->poff, (int)E, N * k, 2 * Fm, C, cu));
        KD_TRY(kd_cu_swiglu_forward(m->eact, m->egu_o, N * k, Fm, cu));
        KD_TRY(kd_cu_moe_gemm(m->ey, m->eact, y->edown, m->poff, (int)E, N * k, C, Fm, cu));
    }
    if (y->sgu) {
        P_(cu, "shared experts");
        KD_TRY(kd_cu_linear_forward(m->sgu_o, m->ln, y->sgu, NULL, N, C, 2 * Fs, cu));
        KD_TRY(kd_cu_swiglu_forward(m->sact, m->sgu_o, N, Fs, cu));
        KD_TRY(kd_cu_linear_forward(m->sy, m->sact, y->sdown, NULL, N, Fs, C, cu));
    }
    P_(cu, "moe combine");
    return kd_cu_moe_combine(m->mo, m->ey, m->pdst, m->ridx, m->rwt, y->sgu ? m->sy : NULL, N, (int)k, C, cu);
}

/* The device pointers of a step's index arrays (one upload). */
typedef struct idx_ {
    const int32_t *ids, *pos, *slot, *tab, *len, *lat, *ppos, *qrow, *orow, *sel;
} idx_;

/* Everything on the GPU from the ids to the logits of the first nsel selected
 * rows (nsel <= rows_lg): what a CUDA graph of a decode step records. */
static int body_(kd_cu_teacher *m, const idx_ *ix, int64_t N, int64_t M, int decode, int64_t maxb, int64_t nsel)
{
    const kd_model_config *c = &m->cfg;
    kd_cu *cu = &m->cu;
    const int64_t V = c->vocab_size, C = c->hidden_size, L = c->num_layers, H = c->num_heads;
    const int64_t Qr = c->q_lora_rank, R = c->kv_lora_rank, Dn = c->qk_nope_head_dim;
    const int64_t Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Dq = m->Dq, row = m->row;
    const float eps = (float)c->rms_norm_eps;
    const int32_t *d_ids = ix->ids, *d_pos = ix->pos, *d_slot = ix->slot, *d_tab = ix->tab, *d_len = ix->len;
    const int32_t *d_lat = ix->lat, *d_ppos = ix->ppos, *d_qrow = ix->qrow, *d_orow = ix->orow;
    P_(cu, "embedding");
    KD_TRY(kd_cu_embedding_forward(m->x, d_ids, m->wte, N, C, cu));
    const size_t lstride = (size_t)((m->nblocks + 1) * m->block * row); /* + the trash block */
    for (int64_t l = 0; l < L; l++) {
        const layer_ *y = &m->layers[l];
        kd_bf16 *cache = m->cache + (size_t)l * lstride;
        P_(cu, "norms");
        KD_TRY(kd_cu_rmsnorm_forward(m->ln, NULL, m->x, m->x, l ? m->mo : NULL, y->ln1, N, C, eps, cu));
        P_(cu, "attn proj");
        /* q (N, H, Dn + Dr) and the latents ckv (N, R + Dr) */
        const kd_bf16 *ckv;
        int64_t ldc;
        if (Qr > 0) {
            KD_TRY(kd_cu_linear_forward(m->aout, m->ln, y->wa, y->ba, N, C, m->Wa, cu));
            KD_TRY(kd_cu_rmsnorm_rows(m->qan, Qr, m->aout, m->Wa, y->q_a_ln, N, Qr, eps, cu));
            KD_TRY(kd_cu_linear_forward(m->q, m->qan, y->q_b, NULL, N, Qr, H * Dq, cu));
            ckv = m->aout + Qr, ldc = m->Wa;
        } else {
            KD_TRY(kd_cu_linear_forward(m->q, m->ln, y->q_proj, NULL, N, C, H * Dq, cu));
            KD_TRY(kd_cu_linear_forward(m->aout, m->ln, y->wa, y->ba, N, C, R + Dr, cu));
            ckv = m->aout, ldc = R + Dr;
        }
        P_(cu, "attn rope/cache");
        KD_TRY(kd_cu_mla_kv_write(cache, d_slot, ckv, ldc, y->kv_ln, N, R, Dr, eps, d_pos, m->cos_, m->sin_,
                                  c->rope_interleave, cu));
        if (decode) {
            /* absorbed: qlat[:, h] = [q_nope_h W_UK_h | rope(q_rot_h)] */
            KD_TRY(kd_cu_mla_rope(m->qlat + R, H * row, row, m->q + Dn, H * Dq, Dq, N, H, Dr, d_pos, m->cos_,
                                  m->sin_, c->rope_interleave, cu));
            P_(cu, "attn absorb");
            const kd_cu_gemm_shape uk = {H * Dq, R, H * row, H, Dq, (Dn + Dv) * R, row};
            KD_TRY(kd_cu_gemm_ex(m->qlat, 0, m->q, 0, y->kv_b, 0, NULL, N, R, Dn, &uk, 1.0f, 0.0f, cu));
            P_(cu, "mla decode");
            KD_TRY(kd_cu_mla_decode_split(m->att32, m->qlat, cache, d_tab, d_len, N, H, R, Dr, m->block, maxb,
                                          m->scale, mla_splits_(m, N), m->mla_work, cu));
            P_(cu, "attn absorb");
            KD_TRY(kd_cu_f32_to_bf16(m->att16, m->att32, N * H * R, cu));
            const kd_cu_gemm_shape uv = {H * R, R, H * Dv, H, R, (Dn + Dv) * R, Dv};
            KD_TRY(kd_cu_gemm_ex(m->attv, 0, m->att16, 0, y->kv_b + Dn * R, 1, NULL, N, Dv, R, &uv, 1.0f, 0.0f,
                                 cu));
        } else {
            KD_TRY(kd_cu_mla_rope(m->q + Dn, H * Dq, Dq, m->q + Dn, H * Dq, Dq, N, H, Dr, d_pos, m->cos_, m->sin_,
                                  c->rope_interleave, cu));
            P_(cu, "prefill attn");
            /* every position's latent, expanded: kvd (M, H, Dn + Dv) */
            KD_TRY(kd_cu_rows_gather(m->lat, row, cache, row, d_lat, M, row, cu));
            const kd_cu_gemm_shape kv = {row, R, H * (Dn + Dv), 1, 0, 0, 0};
            KD_TRY(kd_cu_gemm_ex(m->kvd, 0, m->lat, 0, y->kv_b, 1, NULL, M, H * (Dn + Dv), R, &kv, 1.0f, 0.0f, cu));
            KD_TRY(kd_cu_mla_prefill_qkv(m->Qp, m->Kp, m->Vp, m->Dkp, m->Dvp, m->q, d_qrow, m->kvd, m->lat, M, H, Dn,
                                         Dr, Dv, R, cu));
            if (m->Dkp != m->Dvp)
                KD_TRY(kd_cu_attention_forward_dv(m->outp, m->lse, m->Qp, m->Kp, m->Vp, d_ppos, 1, M, H, H, m->Dkp,
                                                  m->Dvp, m->scale, cu));
            else
                KD_TRY(kd_cu_attention_forward(m->outp, m->lse, m->Qp, m->Kp, m->Vp, d_ppos, 1, M, H, H, m->Dkp,
                                               m->scale, cu));
            KD_TRY(kd_cu_rows_gather(m->attv, Dv, m->outp, m->Dvp, d_orow, N * H, Dv, cu));
        }
        P_(cu, "attn proj");
        KD_TRY(kd_cu_linear_forward(m->mo, m->attv, y->o, y->o_b, N, H * Dv, C, cu));
        P_(cu, "norms");
        KD_TRY(kd_cu_rmsnorm_forward(m->ln, NULL, m->x, m->x, m->mo, y->ln2, N, C, eps, cu));
        KD_TRY(y->moe ? moe_(m, y, N) : mlp_(m, y, N));
    }
    P_(cu, "lm head");
    KD_TRY(kd_cu_rmsnorm_forward(m->ln, NULL, m->x, m->x, m->mo, m->lnf, N, C, eps, cu));
    KD_TRY(kd_cu_rows_gather(m->lnsel, C, m->ln, C, ix->sel, nsel, C, cu));
    return kd_cu_gemm(m->lg, 1, m->lnsel, 0, m->lmh, 1, NULL, nsel, V, C, 1.0f, 0.0f, cu);
}

/* The bucket of a decode step of nseq sequences for its graph: the next power
 * of two (the last bucket is max_seqs). */
static int bucket_(const kd_cu_teacher *m, int nseq, int64_t *rows)
{
    int b = 0;
    int64_t r = 1;
    while (r < nseq && r < m->o.max_seqs)
        r *= 2, b++;
    *rows = r < m->o.max_seqs ? r : m->o.max_seqs;
    return b;
}

/* A decode step through the CUDA graph of its bucket: the index arrays of B
 * rows (the sequences, then padding rows that read and write the trash block
 * past the pool's) in the pinned buffer, copied by the graph's first node; the
 * graph is recorded on the bucket's first step. */
static int decode_graph_(kd_cu_teacher *m, kd_kvseq *const *seqs, int nseq, const int64_t *ids)
{
    kd_cu *cu = &m->cu;
    int64_t B = 0;
    const int bi = bucket_(m, nseq, &B);
    const int64_t mb = m->maxb_all, blk = m->block;
    int32_t *h = m->h_pin;
    int32_t *h_ids = h, *h_pos = h + B, *h_slot = h + 2 * B, *h_tab = h + 3 * B, *h_len = h_tab + B * mb;
    int32_t *h_sel = h_len + B;
    const int64_t used = (h_sel - h) + B;
    if (used > m->n_i32 || B > m->rows_lg)
        return kd_err(KD_E_INTERNAL, "teacher graph index arrays: %lld > %lld", (long long)used, (long long)m->n_i32);
    const int32_t trash = (int32_t)m->nblocks;
    KD_TRY(kd_cu_sync(cu)); /* the last replay has read the pinned arrays (its step was synced anyway) */
    m->rec_rows = B;
    for (int64_t i = 0; i < B; i++) {
        const kd_kvseq *s = i < nseq ? seqs[i] : NULL;
        h_ids[i] = s ? (int32_t)ids[i] : 0;
        h_pos[i] = s ? (int32_t)s->len : 0;
        h_slot[i] = s ? s->blocks[s->len / blk] * (int32_t)blk + (int32_t)(s->len % blk) : trash * (int32_t)blk;
        for (int64_t b = 0; b < mb; b++)
            h_tab[i * mb + b] = s && b < s->nblocks ? s->blocks[b] : trash;
        h_len[i] = s ? (int32_t)(s->len + 1) : 1;
        h_sel[i] = (int32_t)i;
    }
    if (!m->graphs[bi]) {
        const int32_t *d = m->d_i32;
        const idx_ ix = {d, d + B, d + 2 * B, d + 3 * B, d + 3 * B + B * mb, NULL, NULL, NULL, NULL,
                         d + 4 * B + B * mb};
        KD_TRY(kd_cu_capture_begin(cu));
        int rc = kd_cu_h2d_async(m->d_i32, h, (size_t)used * 4, cu);
        if (!rc)
            rc = body_(m, &ix, B, B, 1, mb, B);
        void *g = NULL;
        const int rc2 = kd_cu_capture_end(cu, &g); /* always end the capture */
        KD_TRY(rc);
        KD_TRY(rc2);
        m->graphs[bi] = g;
        kd_debug("CUDA teacher: decode graph of %lld rows recorded", (long long)B);
    }
    return kd_cu_graph_launch(m->graphs[bi], cu);
}

int kd_cu_teacher_step(kd_cu_teacher *m, kd_kvseq *const *seqs, int nseq, const int64_t *ids, const int64_t *nn,
                       kd_mla_mode mode, int all_logits, float *logits)
{
    const kd_model_config *c = &m->cfg;
    kd_cu *cu = &m->cu;
    const int64_t V = c->vocab_size, C = c->hidden_size, H = c->num_heads;
    if (nseq <= 0 || nseq > m->o.max_seqs)
        return kd_err(KD_E_RANGE, "a step of %d sequences (at most %lld)", nseq, (long long)m->o.max_seqs);
    int64_t N = 0, M = 0, maxb = 1;
    static int no_absorb = -1; /* a test hook, read once: KD_CU_TEACHER_NO_ABSORB=1 decodes decompressed too */
    if (no_absorb < 0) {
        const char *na = getenv("KD_CU_TEACHER_NO_ABSORB");
        no_absorb = na && *na == '1';
    }
    int decode = mode == KD_MLA_ABSORBED && !no_absorb;
    for (int i = 0; i < nseq; i++) {
        if (nn[i] <= 0)
            return kd_err(KD_E_RANGE, "%lld new tokens for sequence %d", (long long)nn[i], i);
        N += nn[i];
        M += seqs[i]->len + nn[i];
        decode &= nn[i] == 1;
    }
    if (N > m->o.max_tokens || (!decode && M > m->o.max_tokens))
        return kd_err(KD_E_RANGE, "a step of %lld new tokens over %lld positions (max_tokens %lld)", (long long)N,
                      (long long)M, (long long)m->o.max_tokens);
    const int64_t nout = all_logits ? N : nseq;
    if (all_logits && !logits)
        return kd_err(KD_E_RANGE, "all_logits needs a host buffer");
    for (int64_t r = 0; r < N; r++)
        if (ids[r] < 0 || ids[r] >= V)
            return kd_err(KD_E_RANGE, "token id %lld at %lld is outside [0, %lld)", (long long)ids[r],
                          (long long)r, (long long)V);
    KD_TRY(kd_kvpool_reserve(m->pool, seqs, nseq, nn));
    m->rec_tokens = N;
    if (decode && m->graphs && !all_logits) { /* replayed from its bucket's graph */
        KD_TRY(decode_graph_(m, seqs, nseq, ids));
        for (int i = 0; i < nseq; i++)
            seqs[i]->len += 1;
        if (logits)
            KD_TRY(kd_cu_download(logits, m->lg, (size_t)(nseq * V) * sizeof(float), cu));
        m->last_rows = nseq;
        return KD_OK;
    }
    for (int i = 0; i < nseq; i++) {
        const int64_t nbk = (seqs[i]->len + nn[i] + m->block - 1) / m->block;
        maxb = nbk > maxb ? nbk : maxb;
    }
    /* the index arrays, in one upload */
    int32_t *h = m->h_i32;
    int32_t *h_ids = h, *h_pos = h_ids + N, *h_slot = h_pos + N, *h_tab = h_slot + N, *h_len = h_tab + nseq * maxb;
    int32_t *h_lat = h_len + nseq, *h_ppos = h_lat + (decode ? 0 : M), *h_qrow = h_ppos + (decode ? 0 : M);
    int32_t *h_orow = h_qrow + (decode ? 0 : M), *h_sel = h_orow + (decode ? 0 : N * H);
    const int64_t used = (h_sel - h) + (nout > m->rows_lg ? m->rows_lg : nout);
    if (used > m->n_i32)
        return kd_err(KD_E_INTERNAL, "teacher step index arrays: %lld > %lld", (long long)used, (long long)m->n_i32);
#define SLOT_(s, t) ((s)->blocks[(t) / m->block] * (int32_t)m->block + (int32_t)((t) % m->block))
    for (int i = 0, r = 0, pm = 0; i < nseq; i++) {
        const kd_kvseq *s = seqs[i];
        for (int64_t j = 0; j < nn[i]; j++, r++) {
            h_ids[r] = (int32_t)ids[r];
            h_pos[r] = (int32_t)(s->len + j);
            h_slot[r] = SLOT_(s, s->len + j);
        }
        for (int64_t b = 0; b < maxb; b++)
            h_tab[i * maxb + b] = b < s->nblocks ? s->blocks[b] : 0;
        h_len[i] = (int32_t)(s->len + nn[i]);
        if (!decode)
            for (int64_t t = 0; t < s->len + nn[i]; t++, pm++) {
                h_lat[pm] = SLOT_(s, t);
                h_ppos[pm] = (int32_t)t;
                const int64_t newr = r - nn[i] + (t - s->len);
                h_qrow[pm] = t >= s->len ? (int32_t)newr : -1;
                if (t >= s->len)
                    for (int64_t hh = 0; hh < H; hh++)
                        h_orow[newr * H + hh] = (int32_t)(pm * H + hh);
            }
    }
#undef SLOT_
    for (int i = 0, r = 0, o = 0; i < nseq; i++)
        for (int64_t j = 0; j < nn[i]; j++, r++)
            if (all_logits || j + 1 == nn[i])
                h_sel[o++] = r;
    KD_TRY(kd_cu_upload_async(m->d_i32, h, (size_t)used * 4, cu));
    const int32_t *d = m->d_i32;
    const idx_ ix = {d, d + (h_pos - h), d + (h_slot - h), d + (h_tab - h), d + (h_len - h), d + (h_lat - h),
                     d + (h_ppos - h), d + (h_qrow - h), d + (h_orow - h), d + (h_sel - h)};

    m->rec_rows = N;
    KD_TRY(body_(m, &ix, N, M, decode, maxb, nout < m->rows_lg ? nout : m->rows_lg));
    for (int i = 0; i < nseq; i++)
        seqs[i]->len += nn[i];
    /* the logits of the selected rows, rows_lg at a time (the first chunk is body_'s) */
    for (int64_t o0 = 0; o0 < nout; o0 += m->rows_lg) {
        const int64_t n = nout - o0 < m->rows_lg ? nout - o0 : m->rows_lg;
        if (o0) { /* the next chunk's selection */
            for (int64_t i = 0; i < n; i++)
                h_sel[i] = (int32_t)(o0 + i);
            KD_TRY(kd_cu_upload_async((int32_t *)ix.sel, h_sel, (size_t)n * 4, cu));
            KD_TRY(kd_cu_rows_gather(m->lnsel, C, m->ln, C, ix.sel, n, C, cu));
            KD_TRY(kd_cu_gemm(m->lg, 1, m->lnsel, 0, m->lmh, 1, NULL, n, V, C, 1.0f, 0.0f, cu));
        }
        if (logits)
            KD_TRY(kd_cu_download(logits + o0 * V, m->lg, (size_t)(n * V) * sizeof(float), cu));
    }
    P_(cu, "idle");
    m->last_rows = nout;
    return KD_OK;
}

int kd_cu_teacher_routes(kd_cu_teacher *m, int32_t *routes, int64_t n)
{
    const int64_t L = m->cfg.num_layers, k = m->cfg.num_experts_per_tok, B = m->rec_rows;
    if (!m->rrec || n != m->rec_tokens || n > B)
        return kd_err(KD_E_RANGE, "teacher routes: %s (%lld tokens asked, the last step had %lld)",
                      m->rrec ? "another step's size" : "not recorded (opts.record_routes)", (long long)n,
                      (long long)m->rec_tokens);
    int32_t *h = malloc((size_t)(L * B * k) * 4);
    if (!h)
        return kd_err(KD_E_NOMEM, "teacher routes");
    int rc = kd_cu_download(h, m->rrec, (size_t)(L * B * k) * 4, &m->cu);
    for (int64_t l = 0; !rc && l < L; l++)
        if (m->layers[l].moe)
            memcpy(routes + l * n * k, h + l * B * k, (size_t)(n * k) * 4);
    free(h);
    return rc;
}

/* ---- parity helpers ------------------------------------------------------------------------ */

int kd_cu_teacher_logits(kd_cu_teacher *m, const int64_t *ids, int64_t T, float *logits)
{
    kd_kvseq s = {0};
    kd_kvseq *sp = &s;
    int rc = kd_cu_teacher_step(m, &sp, 1, ids, &T, KD_MLA_DECOMPRESSED, 1, logits);
    kd_kvseq_release(m->pool, &s);
    return rc;
}

int kd_cu_teacher_generate_greedy(kd_cu_teacher *m, const int64_t *prompt, int64_t P, int64_t N,
                                  const int64_t *suppress, int nsuppress, int64_t *out, float *step_logits)
{
    const int64_t V = m->cfg.vocab_size;
    if (P <= 0 || N < 0)
        return kd_err(KD_E_RANGE, "prompt of %lld tokens, %lld new", (long long)P, (long long)N);
    memcpy(out, prompt, (size_t)P * sizeof(int64_t));
    if (N == 0)
        return KD_OK;
    kd_kvseq s = {0};
    kd_kvseq *sp = &s;
    float *row = malloc((size_t)V * sizeof(float));
    kd_sampler_cfg greedy;
    kd_sampler_cfg_init(&greedy);
    greedy.temperature = 0.0;
    int rc = row ? kd_cu_teacher_step(m, &sp, 1, prompt, &P, KD_MLA_DECOMPRESSED, 0, row)
                 : kd_err(KD_E_NOMEM, "logits row");
    const int64_t one = 1;
    for (int64_t i = 0; !rc && i < N; i++) {
        if (step_logits)
            memcpy(step_logits + i * V, row, (size_t)V * sizeof(float));
        for (int e = 0; e < nsuppress; e++)
            if (suppress[e] >= 0 && suppress[e] < V)
                row[suppress[e]] = -INFINITY;
        int64_t best = 0;
        if ((rc = kd_sample(&greedy, NULL, row, V, &best, NULL)))
            break;
        out[P + i] = best;
        if (i + 1 < N)
            rc = kd_cu_teacher_step(m, &sp, 1, &best, &one, KD_MLA_ABSORBED, 0, row);
    }
    free(row);
    kd_kvseq_release(m->pool, &s);
    return rc;
}

#endif /* KD_HAVE_CUDA */
