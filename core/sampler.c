/* sampler.c - temperature, top-k, top-p, min-p and one draw. See sampler.h.
 *
 * Legend: V vocab, l a logit, T temperature, w = exp((l - lmax) / T) the
 * unnormalized probability (w = 1 for the largest logit), m the number of
 * top-p candidates.
 *
 * Every filter keeps a set of the form "every logit above thr, plus the first
 * nties tokens (by id) whose logit equals thr, and only those with w >= min_w"
 * (keep_ below). So the logits are never masked or permuted: the filters only
 * compute thr, nties and min_w, and the draw is one pass over the logits in id
 * order.
 */
#include "sampler.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

void kd_sampler_cfg_init(kd_sampler_cfg *cfg)
{
    cfg->temperature = 1.0;
    cfg->top_k = 0;
    cfg->top_p = 1.0;
    cfg->min_p = 0.0;
    cfg->seed = 0;
}

int kd_sampler_check(const kd_sampler_cfg *cfg)
{
    if (!(isfinite(cfg->temperature) && cfg->temperature >= 0.0))
        return kd_err(KD_E_CONFIG, "sampler: temperature %g must be a finite number >= 0 (0 = greedy)",
                      cfg->temperature);
    if (cfg->top_k < 0)
        return kd_err(KD_E_CONFIG, "sampler: top_k %lld must be >= 0 (0 = off)", (long long)cfg->top_k);
    if (!(cfg->top_p > 0.0 && cfg->top_p <= 1.0))
        return kd_err(KD_E_CONFIG, "sampler: top_p %g must be in (0, 1] (1 = off)", cfg->top_p);
    if (!(cfg->min_p >= 0.0 && cfg->min_p <= 1.0))
        return kd_err(KD_E_CONFIG, "sampler: min_p %g must be in [0, 1] (0 = off)", cfg->min_p);
    return KD_OK;
}

/* ---- the kept set ---------------------------------------------------------------- */

typedef struct keep_ {
    float thr;     /* keep every l > thr, */
    int64_t nties; /* and the first nties tokens (by id) with l == thr, all when < 0, */
    double min_w;  /* of which only those with w >= min_w (min-p) */
    double lmax, T;
} keep_;

static double weight_(const keep_ *k, float l) { return exp(((double)l - k->lmax) / k->T); }

/* w of a token if it is kept, else 0. Call in id order; *seen counts the
 * tokens with l == thr met so far. */
static double kept_weight_(const keep_ *k, float l, int64_t *seen)
{
    if (!(l >= k->thr) || l == -INFINITY)
        return 0.0;
    if (l == k->thr && k->nties >= 0) {
        if (*seen >= k->nties)
            return 0.0;
        (*seen)++;
    }
    double w = weight_(k, l);
    return w >= k->min_w ? w : 0.0;
}

/* ---- top-k ----------------------------------------------------------------------- */

/* qsort order: descending */
static int desc_cmp_(const void *pa, const void *pb)
{
    float a = *(const float *)pa, b = *(const float *)pb;
    return (a < b) - (a > b);
}

static void swapf_(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

/* Rearrange a[0..n) (no NaN) so that a[kth] holds what it would hold sorted in
 * descending order, nothing smaller before it and nothing larger after (C++'s
 * nth_element). Quickselect with a median-of-three pivot and a three-way
 * partition, so runs of equal logits cost linear time; past 2 log2(n) rounds
 * the range is sorted instead, which bounds the worst case by O(n log n). */
static void select_desc_(float *a, int64_t n, int64_t kth)
{
    int64_t lo = 0, hi = n;
    int rounds = 0;
    for (int64_t m = n; m > 1; m >>= 1)
        rounds += 2;
    while (hi - lo > 1) {
        if (rounds-- == 0) {
            qsort(a + lo, (size_t)(hi - lo), sizeof *a, desc_cmp_);
            return;
        }
        float x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi - 1];
        float p = fmaxf(fminf(x, y), fminf(fmaxf(x, y), z)); /* the median */
        /* a[lo, gt) > p, a[gt, i) == p, a[lt, hi) < p */
        int64_t gt = lo, i = lo, lt = hi;
        while (i < lt) {
            if (a[i] > p)
                swapf_(&a[i++], &a[gt++]);
            else if (a[i] < p)
                swapf_(&a[i], &a[--lt]);
            else
                i++;
        }
        if (kth < gt)
            hi = gt;
        else if (kth >= lt)
            lo = lt;
        else
            return;
    }
}

/* The k-th largest of x[0..V) counting duplicates (torch.topk(x, k).values[-1]),
 * 1 <= k < V; -inf when fewer than k logits are finite. One pass: a logit above
 * the running threshold theta (the k-th largest so far) goes to buf (cap > k
 * floats), which is cut back to its k largest when full. A logit <= theta can
 * not change the k-th largest, so it is skipped with one compare. */
static float kth_largest_(const float *x, int64_t V, int64_t k, float *buf, int64_t cap)
{
    float theta = -INFINITY;
    int64_t n = 0;
    for (int64_t i = 0; i < V; i++) {
        if (x[i] > theta) {
            buf[n++] = x[i];
            if (n == cap) {
                select_desc_(buf, n, k - 1);
                theta = buf[k - 1];
                n = k;
            }
        }
    }
    if (n < k)
        return -INFINITY;
    select_desc_(buf, n, k - 1);
    return buf[k - 1];
}

/* ---- top-p ----------------------------------------------------------------------- */

/* Candidate levels: the survivors with w >= eps. The top-p set is a prefix of
 * the ranking, so the first level whose mass reaches the target holds all of
 * it, and only that level is gathered and sorted. A peaked LM distribution
 * stops at the first level (a few dozen tokens); the last level, every
 * survivor, is for flat rows with top_p near 1. */
static const double top_p_eps_[] = {1e-2, 1e-4, 1e-8};
enum { NLEV_ = 4 }; /* the three above and "every survivor"; top_p_'s first pass is unrolled for 4 */

/* The top-p cut among buf[0..m), the candidates of one level (every one of
 * them ranks above every survivor left out of the level): set k->thr and
 * k->nties so that the kept set is the shortest prefix of the ranking (logit
 * descending, then id ascending) whose mass reaches target, at least one
 * token. A weighted quickselect: partition around a pivot and go to the part
 * where the cumulative mass crosses the target; a range of 16 or fewer is
 * sorted and walked. Expected O(m), with about 2m exps. Returns 0 when all of
 * buf falls short of the target (by rounding: the level's mass reached it when
 * summed in id order). Reorders buf. */
static int cut_(float *buf, int64_t m, double target, keep_ *k)
{
    int64_t lo = 0, hi = m; /* the range that holds the cut */
    double above = 0.0;     /* the mass of buf[0, lo), all ranked above the range */
    while (hi - lo > 16) {
        float x = buf[lo], y = buf[lo + (hi - lo) / 2], z = buf[hi - 1];
        float p = fmaxf(fminf(x, y), fminf(fmaxf(x, y), z));
        int64_t gt = lo, i = lo, lt = hi; /* [lo, gt) > p, [gt, lt) == p, [lt, hi) < p */
        while (i < lt) {
            if (buf[i] > p)
                swapf_(&buf[i++], &buf[gt++]);
            else if (buf[i] < p)
                swapf_(&buf[i], &buf[--lt]);
            else
                i++;
        }
        double mgt = 0.0;
        for (int64_t j = lo; j < gt; j++)
            mgt += weight_(k, buf[j]);
        if (gt > lo && above + mgt >= target) {
            hi = gt;
            continue;
        }
        /* the cut is in the run of p (every candidate equal to p is in it),
         * or, when nothing is below p, the range ends short of the target */
        const int64_t neq = lt - gt;
        const double wp = weight_(k, p);
        if (above + mgt + (double)neq * wp >= target || lt == hi) {
            if (lt == hi && hi == m && above + mgt + (double)neq * wp < target)
                return 0;
            const double need = wp > 0.0 ? (target - above - mgt) / wp : (double)neq;
            const int64_t c = need >= (double)neq ? neq : (int64_t)ceil(need);
            k->thr = p;
            k->nties = c < 1 ? 1 : c;
            return 1;
        }
        above += mgt + (double)neq * wp;
        lo = lt;
    }
    qsort(buf + lo, (size_t)(hi - lo), sizeof *buf, desc_cmp_);
    int64_t i = lo; /* keep rank 0, and each rank whose predecessors sum below the target */
    double cum = above;
    while (i < hi && (i == 0 || cum < target))
        cum += weight_(k, buf[i++]);
    if (cum < target && hi == m)
        return 0;
    k->thr = buf[i - 1];
    k->nties = 0;
    for (int64_t j = i - 1; j >= lo && buf[j] == k->thr; j--)
        k->nties++;
    return 1;
}

/* Narrow k (which keeps l >= k->thr, every tie) to the top-p set: rank the
 * survivors by logit, highest first (equal logits: lower id first), and keep
 * the shortest prefix whose mass reaches top_p of the survivors' total. The
 * work buffer is scratch, or allocated here. Errors: KD_E_NOMEM. */
static int top_p_(const float *x, int64_t V, double top_p, keep_ *k, float *scratch)
{
    const float floor_ = k->thr; /* top-k's threshold, or -inf */
    float lthr[NLEV_];           /* level L: l >= lthr[L], the same test in both passes */
    for (int L = 0; L < NLEV_ - 1; L++)
        lthr[L] = (float)(k->lmax + k->T * log(top_p_eps_[L]));
    lthr[NLEV_ - 1] = -INFINITY;
    /* the levels' masses and counts, in scalars so they stay in registers */
    double m0 = 0.0, m1 = 0.0, m2 = 0.0, m3 = 0.0;
    int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    for (int64_t i = 0; i < V; i++) {
        const float l = x[i];
        if (!(l >= floor_) || l == -INFINITY)
            continue;
        /* branch-free: about half the logits of a row fall in level 2, so
         * a branch on it would be mispredicted all the time */
        const double w = weight_(k, l);
        const int in2 = l >= lthr[2], in1 = l >= lthr[1], in0 = l >= lthr[0];
        m3 += w, c3++;
        m2 += in2 ? w : 0.0, c2 += in2;
        m1 += in1 ? w : 0.0, c1 += in1;
        m0 += in0 ? w : 0.0, c0 += in0;
    }
    const double mass[NLEV_] = {m0, m1, m2, m3};
    const int64_t cnt[NLEV_] = {c0, c1, c2, c3};
    const double target = top_p * m3;
    for (int L = 0; L < NLEV_; L++) {
        if (L < NLEV_ - 1 && mass[L] < target)
            continue;
        const int64_t m = cnt[L];
        float *buf = scratch ? scratch : malloc((size_t)m * sizeof(float));
        if (!buf)
            return kd_err(KD_E_NOMEM, "sampler: a top-p buffer of %lld floats", (long long)m);
        int64_t n = 0;
        for (int64_t i = 0; i < V; i++)
            if (x[i] >= floor_ && x[i] != -INFINITY && x[i] >= lthr[L])
                buf[n++] = x[i];
        assert(n == m);
        const int found = cut_(buf, m, target, k);
        if (!scratch)
            free(buf);
        if (found)
            return KD_OK;
        /* short by rounding: widen to the next level; past the last one,
         * keep every survivor (k unchanged) */
    }
    return KD_OK;
}

/* ---- the draw -------------------------------------------------------------------- */

/* The inverse CDF of the kept tokens, in id order, at U (uniform in [0, 1))
 * times their total mass. The first pass sums each of at most NBLK_ blocks, so
 * the second pass scans one block instead of the row. */
enum { NBLK_ = 256 };

static int64_t draw_(const float *x, int64_t V, const keep_ *k, double U)
{
    const int64_t bs = V / NBLK_ + 1; /* so that ceil(V / bs) <= NBLK_ */
    double bsum[NBLK_];
    int64_t bseen[NBLK_], seen = 0, nb = 0;
    double Z = 0.0;
    for (int64_t b0 = 0; b0 < V; b0 += bs, nb++) {
        const int64_t b1 = b0 + bs < V ? b0 + bs : V;
        double s = 0.0;
        bseen[nb] = seen;
        for (int64_t i = b0; i < b1; i++)
            s += kept_weight_(k, x[i], &seen);
        bsum[nb] = s;
        Z += s;
    }
    assert(Z >= 1.0); /* the largest logit is kept with w = 1 */
    /* the block holding u; when rounding puts u past the end, the last block
     * with mass */
    const double u = U * Z;
    double acc = 0.0;
    int64_t b = -1, last = -1;
    for (int64_t j = 0; j < nb; j++) {
        if (!(bsum[j] > 0.0))
            continue;
        last = j;
        if (u < acc + bsum[j]) {
            b = j;
            break;
        }
        acc += bsum[j];
    }
    if (b < 0)
        b = last;
    assert(b >= 0);
    const double ub = u - acc;
    double s = 0.0;
    int64_t pick = -1;
    seen = bseen[b];
    for (int64_t i = b * bs; i < V && i < (b + 1) * bs; i++) {
        double w = kept_weight_(k, x[i], &seen);
        if (w > 0.0) {
            pick = i;
            s += w;
            if (ub < s)
                break;
        }
    }
    assert(pick >= 0);
    return pick;
}

int kd_sample(const kd_sampler_cfg *cfg, kd_rng *rng, const float *logits, int64_t V,
              int64_t *out_id, float *scratch)
{
    assert(V > 0);
    KD_TRY(kd_sampler_check(cfg));

    int64_t best = 0; /* the first maximum, as torch.argmax */
    for (int64_t i = 0; i < V; i++) {
        if (isnan(logits[i]))
            return kd_err(KD_E_RANGE, "sampler: logit %lld of %lld is nan", (long long)i, (long long)V);
        if (logits[i] > logits[best])
            best = i;
    }
    if (cfg->temperature == 0.0) {
        *out_id = best;
        return KD_OK;
    }
    assert(rng);
    const float lmax = logits[best];
    if (lmax == INFINITY)
        return kd_err(KD_E_RANGE, "sampler: logit %lld is +inf, the softmax is undefined",
                      (long long)best);
    if (lmax == -INFINITY)
        return kd_err(KD_E_RANGE, "sampler: all %lld logits are -inf, nothing to sample",
                      (long long)V);

    keep_ k = {.thr = -INFINITY, .nties = -1, .min_w = 0.0, .lmax = lmax, .T = cfg->temperature};
    /* dividing by T > 0 keeps the order of the logits: top-k selects on them */
    if (cfg->top_k > 0 && cfg->top_k < V) {
        const int64_t cap = cfg->top_k < V / 2 ? 2 * cfg->top_k : V;
        float *buf = scratch ? scratch : malloc((size_t)cap * sizeof(float));
        if (!buf)
            return kd_err(KD_E_NOMEM, "sampler: a top-k buffer of %lld floats", (long long)cap);
        k.thr = kth_largest_(logits, V, cfg->top_k, buf, cap);
        if (!scratch)
            free(buf);
    }
    if (cfg->top_p < 1.0)
        KD_TRY(top_p_(logits, V, cfg->top_p, &k, scratch));
    /* p_i / p_max = w_i, since the largest logit survives top-k and top-p */
    k.min_w = cfg->min_p;
    *out_id = draw_(logits, V, &k, kd_rng_uniform(rng));
    return KD_OK;
}

void kd_sample_penalize(float *logits, int64_t V, const uint8_t *seen, const int64_t *counts,
                        double repetition, double frequency)
{
    const float rp = (float)repetition;
    for (int64_t v = 0; v < V; v++) {
        if (seen && repetition != 1.0 && seen[v])
            logits[v] = logits[v] > 0 ? logits[v] / rp : logits[v] * rp;
        if (counts && frequency != 0.0 && counts[v])
            logits[v] -= (float)(frequency * (double)counts[v]);
    }
}
