/* test_sampler.c - core/rng (reference outputs, determinism, shuffles),
 * core/sampler (each knob against a slow, obvious reference written out
 * here: sort + cumsum in double) and student/generate (greedy against the HF
 * fixture, seeded reproducibility, EOS).
 *
 * Distribution checks draw N samples and compare the counts with the
 * reference probabilities by Pearson's chi-square. The bound is the chi-square
 * quantile at the 4-sigma tail (z = 4, p ~ 3e-5) by the Wilson-Hilferty
 * approximation; the draws come from fixed seeds, so the outcome is
 * deterministic. A planted fault (a wrong temperature, a wrong top_p) must
 * fail the same check.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/sampler.h"
#include "student/generate.h"
#include "student/model.h"
#include "test.h"

/* ---- rng -------------------------------------------------------------------------- */

/* Expected values.
 *
 * Published: splitmix64's first four outputs from state 0 are the state
 * kd_rng_seed(0) must produce, and xoshiro256**'s first ten outputs from the
 * state {1, 2, 3, 4} (11520, 0, 1509978240, ...) are the test vector of the
 * Rust crate rand_xoshiro, produced there with the reference C code.
 *
 * The seeded streams (seeds 0 and 42) were computed once, for this test, with
 * an independent Python transcription of the reference splitmix64.c and
 * xoshiro256starstar.c (https://prng.di.unimi.it/), which first checked itself
 * against both published vectors above:
 *
 *     M = 2**64 - 1
 *     def rotl(x, k): return ((x << k) | (x >> (64 - k))) & M
 *     def splitmix64(st):
 *         st = (st + 0x9E3779B97F4A7C15) & M; z = st
 *         z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
 *         z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
 *         return st, z ^ (z >> 31)
 *     def nxt(s):
 *         r = (rotl((s[1] * 5) & M, 7) * 9) & M; t = (s[1] << 17) & M
 *         s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t
 *         s[3] = rotl(s[3], 45); return r
 *     # seed: s = 4 successive splitmix64 outputs from st = seed;
 *     # uniform: (nxt(s) >> 11) * 2.0**-53
 */
TEST(rng_reference)
{
    static const uint64_t splitmix0[4] = {0xe220a8397b1dcdafull, 0x6e789e6aa1b965f4ull,
                                          0x06c45d188009454full, 0xf88bb8a8724c81ecull};
    static const uint64_t published[10] = {
        11520ull, 0ull, 1509978240ull, 1215971899390074240ull, 1216172134540287360ull,
        607988272756665600ull, 16172922978634559625ull, 8476171486693032832ull,
        10595114339597558777ull, 2904607092377533576ull};
    static const uint64_t seed0[6] = {0x99ec5f36cb75f2b4ull, 0xbf6e1f784956452aull,
                                      0x1a5f849d4933e6e0ull, 0x6aa594f1262d2d2cull,
                                      0xbba5ad4a1f842e59ull, 0xffef8375d9ebcacaull};
    static const uint64_t seed42[6] = {0x15780b2e0c2ec716ull, 0x6104d9866d113a7eull,
                                       0xae17533239e499a1ull, 0xecb8ad4703b360a1ull,
                                       0xfde6dc7fe2ec5e64ull, 0xc50da53101795238ull};
    kd_rng r;
    kd_rng_seed(&r, 0);
    for (int i = 0; i < 4; i++)
        CHECK(r.s[i] == splitmix0[i]);

    kd_rng p = {{1, 2, 3, 4}};
    for (int i = 0; i < 10; i++) {
        uint64_t x = kd_rng_next(&p);
        if (x != published[i])
            FAIL_("state {1,2,3,4} output %d: %llu, published %llu", i, (unsigned long long)x,
                  (unsigned long long)published[i]);
    }
    test_checks_++;

    for (int i = 0; i < 6; i++)
        CHECK(kd_rng_next(&r) == seed0[i]);
    CHECK(kd_rng_uniform(&r) == 0.42221152382531557);
    kd_rng_seed(&r, 42);
    for (int i = 0; i < 6; i++)
        CHECK(kd_rng_next(&r) == seed42[i]);
    CHECK(kd_rng_uniform(&r) == 0.7192585778779156);
}

TEST(rng_determinism)
{
    kd_rng a, b, c;
    kd_rng_seed(&a, 7);
    kd_rng_seed(&b, 7);
    kd_rng_seed(&c, 8);
    int same = 1, differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = kd_rng_next(&a);
        same &= x == kd_rng_next(&b);
        differ += x != kd_rng_next(&c);
    }
    CHECK(same);
    CHECK(differ > 990);

    /* a checkpoint is the four words: a copy continues the exact stream */
    kd_rng saved;
    memcpy(saved.s, a.s, sizeof saved.s);
    uint64_t want[64];
    for (int i = 0; i < 64; i++)
        want[i] = kd_rng_next(&a);
    for (int i = 0; i < 64; i++)
        CHECK(kd_rng_next(&saved) == want[i]);

    /* uniform: in [0, 1), a multiple of 2^-53, mean 1/2 */
    double sum = 0.0, lo = 1.0, hi = 0.0;
    int on_grid = 1;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double u = kd_rng_uniform(&a);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        on_grid &= ldexp(u, 53) == floor(ldexp(u, 53));
    }
    CHECK(lo >= 0.0 && hi < 1.0);
    CHECK(on_grid);
    CHECK_NEAR(sum / n, 0.5, 4.0 * sqrt(1.0 / 12.0 / n));

    /* below: in range, unbiased for a small n (4 sigma per bucket), n = 1 */
    int64_t cnt[3] = {0, 0, 0};
    const int m = 300000;
    for (int i = 0; i < m; i++)
        cnt[kd_rng_below(&a, 3)]++;
    for (int i = 0; i < 3; i++)
        CHECK_NEAR((double)cnt[i], m / 3.0, 4.0 * sqrt(m * (1.0 / 3) * (2.0 / 3)));
    int in_range = 1;
    const uint64_t big = (1ull << 63) + 1; /* rejects almost half of the raw draws */
    for (int i = 0; i < 10000; i++) {
        in_range &= kd_rng_below(&a, big) < big;
        in_range &= kd_rng_below(&a, 1) == 0;
        in_range &= kd_rng_below(&a, 1000) < 1000;
    }
    CHECK(in_range);
}

TEST(rng_shuffle)
{
    enum { N = 1000 };
    uint64_t x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = y[i] = (uint64_t)i;
    kd_rng a, b;
    kd_rng_seed(&a, 99);
    kd_rng_seed(&b, 99);
    kd_rng_shuffle_u64(&a, x, N);
    kd_rng_shuffle_u64(&b, y, N);
    CHECK(memcmp(x, y, sizeof x) == 0); /* same seed, same permutation */
    char seen[N] = {0};
    int perm = 1, moved = 0;
    for (int i = 0; i < N; i++) {
        perm &= x[i] < N && !seen[x[i]];
        if (x[i] < N)
            seen[x[i]] = 1;
        moved += x[i] != (uint64_t)i;
    }
    CHECK(perm);
    CHECK(moved > N - 20);
    kd_rng_shuffle_u64(&a, x, 0); /* empty and single arrays are fine */
    kd_rng_shuffle_u64(&a, x, 1);

    /* all 6 orders of 3 items equally likely */
    int64_t count[6] = {0};
    const int n = 120000;
    for (int t = 0; t < n; t++) {
        uint64_t z[3] = {0, 1, 2};
        kd_rng_shuffle_u64(&a, z, 3);
        count[z[0] * 2 + (z[1] > z[2])]++;
    }
    for (int i = 0; i < 6; i++)
        CHECK_NEAR((double)count[i], n / 6.0, 4.0 * sqrt(n * (1.0 / 6) * (5.0 / 6)));
}

/* ---- the reference sampler -------------------------------------------------------- */

typedef struct {
    float l;
    int64_t id;
} ranked_;

/* logit descending, then id ascending */
static int rank_cmp_(const void *pa, const void *pb)
{
    const ranked_ *a = pa, *b = pb;
    if (a->l != b->l)
        return a->l > b->l ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The distribution kd_sample should draw from, computed the plain way: sort,
 * apply each knob in HF's order on the sorted list, softmax. p (V) receives
 * it; *nkept the size of its support. Logits must be finite or -inf. */
static void ref_dist_(const kd_sampler_cfg *c, const float *l, int64_t V, double *p, int64_t *nkept)
{
    ranked_ *r = malloc((size_t)V * sizeof *r);
    char *keep = malloc((size_t)V);
    for (int64_t i = 0; i < V; i++)
        r[i] = (ranked_){l[i], i};
    qsort(r, (size_t)V, sizeof *r, rank_cmp_);
    double *x = malloc((size_t)V * sizeof *x); /* x[j]: scaled logit of rank j */
    for (int64_t j = 0; j < V; j++) {
        x[j] = (double)r[j].l / c->temperature;
        keep[j] = r[j].l != -INFINITY;
    }
    if (c->top_k > 0 && c->top_k < V)
        for (int64_t j = 0; j < V; j++)
            keep[j] &= r[j].l >= r[c->top_k - 1].l; /* ties with the k-th stay (HF) */
    if (c->top_p < 1.0) {
        double z = 0.0, cum = 0.0;
        for (int64_t j = 0; j < V; j++)
            if (keep[j])
                z += exp(x[j] - x[0]);
        for (int64_t j = 0; j < V; j++)
            if (keep[j]) {
                if (j > 0 && cum >= c->top_p) /* the prefix before j already reaches top_p */
                    keep[j] = 0;
                cum += exp(x[j] - x[0]) / z;
            }
    }
    if (c->min_p > 0.0)
        for (int64_t j = 0; j < V; j++)
            keep[j] &= exp(x[j] - x[0]) >= c->min_p; /* rank 0 is the largest */
    double z = 0.0;
    *nkept = 0;
    for (int64_t j = 0; j < V; j++)
        if (keep[j]) {
            z += exp(x[j] - x[0]);
            ++*nkept;
        }
    for (int64_t j = 0; j < V; j++)
        p[r[j].id] = keep[j] ? exp(x[j] - x[0]) / z : 0.0;
    free(x);
    free(keep);
    free(r);
}

static int64_t argmax_(const float *l, int64_t V)
{
    int64_t b = 0;
    for (int64_t i = 1; i < V; i++)
        if (l[i] > l[b])
            b = i;
    return b;
}

typedef struct {
    double chi2, bound; /* Pearson's statistic and its 4-sigma bound */
    int bins;           /* bins tested: tokens with N p >= 5, plus the rest pooled */
    int64_t outside;    /* draws of tokens the reference gives probability 0 */
    int64_t missing;    /* tokens with N p >= 30 never drawn */
    int64_t kept;       /* support of the reference */
    int failed;         /* kd_sample returned an error */
} dist_check_;

/* Draw n tokens with c from a generator seeded with `seed` and compare the
 * counts with ref_dist_(ref). Tokens expected fewer than 5 times are pooled
 * into one bin (tested when the pool expects >= 5). scratch as kd_sample. */
static dist_check_ draw_and_compare_s_(const kd_sampler_cfg *c, const kd_sampler_cfg *ref,
                                       const float *l, int64_t V, int64_t n, uint64_t seed,
                                       float *scratch)
{
    dist_check_ d = {0};
    double *p = malloc((size_t)V * sizeof *p);
    int64_t *cnt = calloc((size_t)V, sizeof *cnt);
    ref_dist_(ref, l, V, p, &d.kept);
    kd_rng r;
    kd_rng_seed(&r, seed);
    for (int64_t t = 0; t < n && !d.failed; t++) {
        int64_t id = -1;
        d.failed = kd_sample(c, &r, l, V, &id, scratch) != KD_OK || id < 0 || id >= V;
        if (!d.failed)
            cnt[id]++;
    }
    double pool_e = 0.0;
    int64_t pool_c = 0;
    for (int64_t i = 0; i < V; i++) {
        if (p[i] == 0.0) {
            d.outside += cnt[i];
            continue;
        }
        double e = (double)n * p[i];
        if (e < 5.0) {
            pool_e += e;
            pool_c += cnt[i];
            continue;
        }
        d.chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
        d.missing += e >= 30.0 && cnt[i] == 0;
        d.bins++;
    }
    if (pool_e >= 5.0) {
        d.chi2 += (pool_c - pool_e) * (pool_c - pool_e) / pool_e;
        d.bins++;
    }
    const int df = d.bins - 1;
    if (df < 1) {
        d.bound = HUGE_VAL; /* one bin: nothing to compare but `outside` */
    } else {
        double h = 2.0 / (9.0 * df), q = 1.0 - h + 4.0 * sqrt(h);
        d.bound = df * q * q * q;
    }
    free(cnt);
    free(p);
    return d;
}

static dist_check_ draw_and_compare_(const kd_sampler_cfg *c, const kd_sampler_cfg *ref,
                                     const float *l, int64_t V, int64_t n, uint64_t seed)
{
    return draw_and_compare_s_(c, ref, l, V, n, seed, NULL);
}

static int dist_ok_(const dist_check_ *d)
{
    return !d->failed && d->outside == 0 && d->missing == 0 && d->chi2 <= d->bound;
}

#define CHECK_DIST(d, what)                                                                    \
    do {                                                                                       \
        test_checks_++;                                                                        \
        if (!dist_ok_(&(d)))                                                                   \
            FAIL_("%s: chi2 %.2f (bound %.2f), %lld outside, %lld missing, %lld kept%s", what, \
                  (d).chi2, (d).bound, (long long)(d).outside, (long long)(d).missing,         \
                  (long long)(d).kept, (d).failed ? ", kd_sample failed" : "");               \
    } while (0)

/* V logits uniform in [lo, hi) */
static void fill_uniform_(kd_rng *r, float *l, int64_t V, double lo, double hi)
{
    for (int64_t i = 0; i < V; i++)
        l[i] = (float)(lo + (hi - lo) * kd_rng_uniform(r));
}

/* V logits, standard normal times `scale` (Box-Muller) */
static void fill_normal_(kd_rng *r, float *l, int64_t V, double scale)
{
    for (int64_t i = 0; i < V; i++) {
        double u = 1.0 - kd_rng_uniform(r), v = kd_rng_uniform(r);
        l[i] = (float)(scale * sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
    }
}

static kd_sampler_cfg cfg_(double t, int64_t k, double p, double minp)
{
    kd_sampler_cfg c;
    kd_sampler_cfg_init(&c);
    c.temperature = t;
    c.top_k = k;
    c.top_p = p;
    c.min_p = minp;
    return c;
}

/* ---- sampler ---------------------------------------------------------------------- */

TEST(sampler_config)
{
    kd_sampler_cfg c;
    kd_sampler_cfg_init(&c);
    CHECK_OK(kd_sampler_check(&c));
    c = cfg_(0.0, 0, 1.0, 0.0);
    CHECK_OK(kd_sampler_check(&c));
    c = cfg_(0.7, 20, 0.95, 0.05);
    CHECK_OK(kd_sampler_check(&c));
    c = cfg_(NAN, 0, 1.0, 0.0);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "temperature nan");
    c = cfg_(-0.5, 0, 1.0, 0.0);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "temperature -0.5 must be");
    c = cfg_(INFINITY, 0, 1.0, 0.0);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "temperature inf");
    c = cfg_(1.0, -1, 1.0, 0.0);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "top_k -1 must be >= 0");
    c = cfg_(1.0, 0, 0.0, 0.0);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "top_p 0 must be in (0, 1]");
    c = cfg_(1.0, 0, 1.5, 0.0);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "top_p 1.5");
    c = cfg_(1.0, 0, NAN, 0.0);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "top_p nan");
    c = cfg_(1.0, 0, 1.0, -0.1);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "min_p -0.1 must be in [0, 1]");
    c = cfg_(1.0, 0, 1.0, 1.01);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "min_p 1.01");
    c = cfg_(1.0, 0, 1.0, NAN);
    CHECK_ERR(kd_sampler_check(&c), KD_E_CONFIG, "min_p nan");
    /* an all-zero struct is not a config (top_p 0) */
    kd_sampler_cfg zero = {0};
    CHECK_ERR(kd_sampler_check(&zero), KD_E_CONFIG, "top_p");

    /* kd_sample refuses a bad config and leaves the rng and the output alone */
    float l[4] = {1, 2, 3, 4};
    kd_rng r, r0;
    kd_rng_seed(&r, 1);
    r0 = r;
    int64_t id = -7;
    c = cfg_(1.0, 0, 2.0, 0.0);
    CHECK_ERR(kd_sample(&c, &r, l, 4, &id, NULL), KD_E_CONFIG, "top_p 2");
    CHECK(id == -7 && memcmp(&r, &r0, sizeof r) == 0);
}

TEST(sampler_greedy)
{
    kd_rng r;
    kd_rng_seed(&r, 3);
    float *l = malloc(1000 * sizeof(float));
    const kd_sampler_cfg g = cfg_(0.0, 5, 0.5, 0.3); /* greedy ignores the other knobs */
    int ok = 1;
    for (int t = 0; t < 200; t++) {
        int64_t V = 1 + (int64_t)kd_rng_below(&r, 1000), id = -1;
        fill_normal_(&r, l, V, 2.0);
        if (t % 3 == 0) /* a tie at the maximum: the first one wins */
            l[V - 1] = l[argmax_(l, V)];
        ok &= kd_sample(&g, NULL, l, V, &id, NULL) == KD_OK && id == argmax_(l, V);
    }
    CHECK(ok);
    float ties[5] = {1, 3, 3, -INFINITY, 3};
    int64_t id = -1;
    CHECK_OK(kd_sample(&g, NULL, ties, 5, &id, NULL));
    CHECK_EQ_INT(id, 1);
    float masked[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHECK_OK(kd_sample(&g, NULL, masked, 3, &id, NULL));
    CHECK_EQ_INT(id, 0); /* torch.argmax of all -inf */
    float inf[3] = {1, INFINITY, 2};
    CHECK_OK(kd_sample(&g, NULL, inf, 3, &id, NULL));
    CHECK_EQ_INT(id, 1);
    free(l);
}

TEST(sampler_top_k1)
{
    kd_rng r, data;
    kd_rng_seed(&r, 11);
    kd_rng_seed(&data, 12);
    float l[300];
    const double temps[] = {1e-3, 0.1, 1.0, 10.0, 1e4};
    int ok = 1;
    for (int t = 0; t < 100; t++) {
        fill_normal_(&data, l, 300, 3.0);
        for (int i = 0; i < 5; i++) {
            kd_sampler_cfg c = cfg_(temps[i], 1, t % 2 ? 0.9 : 1.0, t % 3 ? 0.0 : 0.5);
            int64_t id = -1;
            ok &= kd_sample(&c, &r, l, 300, &id, NULL) == KD_OK && id == argmax_(l, 300);
        }
    }
    CHECK(ok);
}

TEST(sampler_top_k)
{
    enum { V = 2000, K = 20 };
    kd_rng r;
    kd_rng_seed(&r, 21);
    float *l = malloc(V * sizeof(float));
    fill_normal_(&r, l, V, 2.0);
    /* the k largest, plainly */
    ranked_ *s = malloc(V * sizeof *s);
    for (int i = 0; i < V; i++)
        s[i] = (ranked_){l[i], i};
    qsort(s, V, sizeof *s, rank_cmp_);
    char in_top[V] = {0};
    for (int j = 0; j < K; j++)
        in_top[s[j].id] = 1;
    /* a high temperature flattens the distribution, so the tail would show */
    kd_sampler_cfg c = cfg_(50.0, K, 1.0, 0.0);
    int64_t outside = 0, hit[V] = {0}, distinct = 0;
    for (int t = 0; t < 50000; t++) {
        int64_t id = -1;
        if (kd_sample(&c, &r, l, V, &id, NULL) != KD_OK || !in_top[id])
            outside++;
        else if (!hit[id]++)
            distinct++;
    }
    CHECK_EQ_INT(outside, 0);
    CHECK_EQ_INT(distinct, K);
    dist_check_ d = draw_and_compare_(&c, &c, l, V, 100000, 22);
    CHECK_DIST(d, "top_k 20, T 50");
    CHECK_EQ_INT(d.kept, K);

    /* ties at the k-th logit all stay (HF: scores < topk(...)[-1] removed) */
    float tie[6] = {5, 4, 4, 1, 4, 0};
    kd_sampler_cfg c2 = cfg_(1.0, 2, 1.0, 0.0);
    d = draw_and_compare_(&c2, &c2, tie, 6, 100000, 23);
    CHECK_DIST(d, "top_k 2 with ties");
    CHECK_EQ_INT(d.kept, 4);
    /* k >= V is off */
    kd_sampler_cfg c3 = cfg_(1.0, 6, 1.0, 0.0), off = cfg_(1.0, 0, 1.0, 0.0);
    d = draw_and_compare_(&c3, &off, tie, 6, 100000, 24);
    CHECK_DIST(d, "top_k = V");
    CHECK_EQ_INT(d.kept, 6);

    /* ascending logits: every logit beats the running threshold, so the
     * buffer of 2k fills and is cut back every k logits */
    for (int i = 0; i < V; i++)
        l[i] = 0.001f * (float)i;
    kd_sampler_cfg asc = cfg_(0.003, 7, 1.0, 0.0);
    d = draw_and_compare_(&asc, &asc, l, V, 50000, 25);
    CHECK_DIST(d, "top_k 7 over ascending logits");
    CHECK_EQ_INT(d.kept, 7);
    /* k near V (the buffer is the whole row) and k just above V / 2 */
    fill_uniform_(&r, l, 60, -1.0, 1.0);
    const int64_t ks[] = {59, 31, 30};
    for (int i = 0; i < 3; i++) {
        kd_sampler_cfg ck = cfg_(1.0, ks[i], 1.0, 0.0);
        d = draw_and_compare_(&ck, &ck, l, 60, 60000, 26 + (uint64_t)i);
        CHECK_DIST(d, "top_k near V");
        CHECK_EQ_INT(d.kept, ks[i]);
    }
    /* four distinct values over the whole row: the buffer fills with ties,
     * and every tie with the k-th stays */
    for (int i = 0; i < V; i++)
        l[i] = 0.5f * (float)kd_rng_below(&r, 4);
    kd_sampler_cfg ct = cfg_(1.0, 300, 1.0, 0.0);
    d = draw_and_compare_(&ct, &ct, l, V, 50000, 29);
    CHECK_DIST(d, "top_k 300 over four values");
    CHECK(d.kept >= 300);
    free(s);
    free(l);
}

/* Top-p keeps exactly the reference's set (never a token outside it, every
 * token in it drawn) with the reference's probabilities, over random vocab
 * sizes, logits and top_p; with ties cut inside a run; combined with top-k. */
TEST(sampler_top_p)
{
    kd_rng r;
    kd_rng_seed(&r, 31);
    float l[80];
    int trials_ok = 1;
    for (int t = 0; t < 24; t++) {
        int64_t V = 2 + (int64_t)kd_rng_below(&r, 79);
        /* a narrow spread so every kept token is drawn often enough to see */
        fill_uniform_(&r, l, V, -1.0, 1.0);
        double top_p = 0.05 + 0.9 * kd_rng_uniform(&r);
        kd_sampler_cfg c = cfg_(1.0, t % 4 == 0 ? 10 : 0, top_p, 0.0);
        dist_check_ d = draw_and_compare_(&c, &c, l, V, 30000, 100 + (uint64_t)t);
        if (!dist_ok_(&d)) {
            trials_ok = 0;
            FAIL_("trial %d (V %lld, top_p %.4f, top_k %lld): chi2 %.2f bound %.2f, %lld outside,"
                  " %lld missing", t, (long long)V, top_p, (long long)c.top_k, d.chi2, d.bound,
                  (long long)d.outside, (long long)d.missing);
        }
    }
    CHECK(trials_ok);

    /* ten equal logits: p = 0.1 each; top_p 0.35 needs 4 of them, the lowest ids */
    float flat[10] = {0};
    kd_sampler_cfg c = cfg_(1.0, 0, 0.35, 0.0);
    dist_check_ d = draw_and_compare_(&c, &c, flat, 10, 100000, 41);
    CHECK_DIST(d, "ties cut at top_p 0.35");
    CHECK_EQ_INT(d.kept, 4);
    kd_rng_seed(&r, 42);
    int low_ids = 1;
    for (int t = 0; t < 2000; t++) {
        int64_t id = -1;
        low_ids &= kd_sample(&c, &r, flat, 10, &id, NULL) == KD_OK && id >= 0 && id < 4;
    }
    CHECK(low_ids);
    /* a tie run after a larger logit: {3} then 2,2,2 (ids 1, 3, 5) */
    float run[6] = {1.0f, 0.5f, -3.0f, 0.5f, -3.0f, 0.5f};
    c = cfg_(1.0, 0, 0.6, 0.0);
    d = draw_and_compare_(&c, &c, run, 6, 100000, 43);
    CHECK_DIST(d, "tie run after the maximum");
    /* a tiny top_p keeps only the maximum */
    c = cfg_(1.0, 0, 1e-9, 0.0);
    d = draw_and_compare_(&c, &c, run, 6, 1000, 44);
    CHECK_DIST(d, "top_p 1e-9");
    CHECK_EQ_INT(d.kept, 1);

    /* The candidate levels (w >= 1e-2, 1e-4, 1e-8, all). One dominant token
     * and 999 tokens just below w = 1e-2: level 0 holds too little mass, so
     * the cut is made in level 1, inside a run of equal logits, then with
     * distinct logits. Each kept token is drawn ~100 times. */
    enum { VL = 1000 };
    float *lv = malloc(VL * sizeof(float));
    lv[0] = 0.0f;
    for (int i = 1; i < VL; i++)
        lv[i] = -4.71f; /* w = 0.009 */
    c = cfg_(1.0, 0, 0.503, 0.0);
    d = draw_and_compare_(&c, &c, lv, VL, 60000, 46);
    CHECK_DIST(d, "top_p cut in level 1, ties");
    printf("top_p 0.503 over a run of 999 ties keeps %lld tokens\n", (long long)d.kept);
    CHECK(d.kept > 400 && d.kept < 500);
    for (int i = 1; i < VL; i++)
        lv[i] = (float)(-5.3 + 0.6 * kd_rng_uniform(&r));
    c = cfg_(1.0, 0, 0.6, 0.0);
    d = draw_and_compare_(&c, &c, lv, VL, 60000, 47);
    CHECK_DIST(d, "top_p cut in level 1");
    CHECK(d.kept > 100 && d.kept < VL - 100);
    /* level 2: 999 tokens at w in [3e-5, 7e-5], cut about halfway; each is
     * expected ~3 times, so they are pooled, and a token past the cut would
     * likely (95%) show as drawn outside */
    for (int i = 1; i < VL; i++)
        lv[i] = (float)(-10.4 + 0.83 * kd_rng_uniform(&r));
    c = cfg_(1.0, 0, 0.975, 0.0);
    d = draw_and_compare_(&c, &c, lv, VL, 60000, 48);
    CHECK_DIST(d, "top_p cut in level 2");
    CHECK(d.kept > 100 && d.kept < VL - 100);
    /* the last level: w ~ 5e-9; its tokens are too rare to draw, so this
     * only runs the path (ASan builds check its memory) */
    for (int i = 1; i < VL; i++)
        lv[i] = (float)(-19.3 + 0.4 * kd_rng_uniform(&r));
    c = cfg_(1.0, 0, 0.9999975, 0.0);
    d = draw_and_compare_(&c, &c, lv, VL, 2000, 49);
    CHECK_DIST(d, "top_p cut in the last level");
    CHECK(d.kept > 100 && d.kept < VL - 100);
    free(lv);

    /* planted fault: the sampler at top_p 0.5 against a reference at 0.8 */
    float pl[20];
    fill_uniform_(&r, pl, 20, -1.0, 1.0);
    kd_sampler_cfg a = cfg_(1.0, 0, 0.5, 0.0), b = cfg_(1.0, 0, 0.8, 0.0);
    d = draw_and_compare_(&a, &b, pl, 20, 40000, 45);
    CHECK(!dist_ok_(&d));
}

TEST(sampler_temperature)
{
    enum { V = 16 };
    kd_rng r;
    kd_rng_seed(&r, 51);
    float l[V];
    fill_normal_(&r, l, V, 1.5);
    const double temps[] = {0.5, 1.0, 2.0};
    for (int i = 0; i < 3; i++) {
        kd_sampler_cfg c = cfg_(temps[i], 0, 1.0, 0.0);
        dist_check_ d = draw_and_compare_(&c, &c, l, V, 200000, 60 + (uint64_t)i);
        char what[64];
        snprintf(what, sizeof what, "T %.1f over 200k draws", temps[i]);
        printf("%s: chi2 %.2f (df %d, bound %.2f)\n", what, d.chi2, V - 1, d.bound);
        CHECK_DIST(d, what);
    }
    /* planted fault: draws at T 1 against softmax(l / 1.15) */
    kd_sampler_cfg t1 = cfg_(1.0, 0, 1.0, 0.0), t115 = cfg_(1.15, 0, 1.0, 0.0);
    dist_check_ d = draw_and_compare_(&t1, &t115, l, V, 200000, 64);
    printf("planted fault (T 1 vs 1.15): chi2 %.2f, bound %.2f\n", d.chi2, d.bound);
    CHECK(!dist_ok_(&d));
    /* -inf logits are masked out, never drawn */
    l[3] = l[7] = -INFINITY;
    kd_sampler_cfg c = cfg_(3.0, 0, 1.0, 0.0);
    d = draw_and_compare_(&c, &c, l, V, 100000, 65);
    CHECK_DIST(d, "masked tokens");
    CHECK_EQ_INT(d.kept, V - 2);
    /* exactly one uniform per sampled token */
    kd_rng a, b;
    kd_rng_seed(&a, 66);
    b = a;
    int64_t id;
    kd_sampler_cfg full = cfg_(0.8, 5, 0.9, 0.1);
    CHECK_OK(kd_sample(&full, &a, l, V, &id, NULL));
    kd_rng_uniform(&b);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
}

TEST(sampler_min_p)
{
    kd_rng r;
    kd_rng_seed(&r, 71);
    float l[64];
    int ok = 1;
    for (int t = 0; t < 20; t++) {
        fill_uniform_(&r, l, 64, -2.0, 2.0);
        kd_sampler_cfg c = cfg_(0.5 + kd_rng_uniform(&r), 0, 1.0, 0.02 + 0.5 * kd_rng_uniform(&r));
        if (t % 2) { /* every knob at once, in HF's order */
            c.top_k = 40;
            c.top_p = 0.9;
        }
        dist_check_ d = draw_and_compare_(&c, &c, l, 64, 40000, 200 + (uint64_t)t);
        if (!dist_ok_(&d)) {
            ok = 0;
            FAIL_("trial %d (T %.3f min_p %.3f top_k %lld top_p %.2f): chi2 %.2f bound %.2f, "
                  "%lld outside, %lld missing", t, c.temperature, c.min_p, (long long)c.top_k,
                  c.top_p, d.chi2, d.bound, (long long)d.outside, (long long)d.missing);
        }
    }
    CHECK(ok);
    /* min_p 1 keeps the maximum and its ties only */
    float tie[5] = {2, 1, 2, 0, 2};
    kd_sampler_cfg c = cfg_(1.0, 0, 1.0, 1.0);
    dist_check_ d = draw_and_compare_(&c, &c, tie, 5, 30000, 72);
    CHECK_DIST(d, "min_p 1");
    CHECK_EQ_INT(d.kept, 3);
    /* the threshold: p / p_max = exp(l - lmax) against min_p = exp(-1) */
    float edge[3] = {0.0f, -0.9f, -1.1f};
    c = cfg_(1.0, 0, 1.0, exp(-1.0));
    d = draw_and_compare_(&c, &c, edge, 3, 30000, 73);
    CHECK_DIST(d, "min_p edge");
    CHECK_EQ_INT(d.kept, 2);
}

/* A caller's scratch buffer changes nothing but the allocations. */
TEST(sampler_scratch)
{
    enum { V = 3000 };
    kd_rng r;
    kd_rng_seed(&r, 75);
    float *l = malloc(V * sizeof(float)), *scratch = malloc(V * sizeof(float));
    fill_normal_(&r, l, V, 2.0);
    const kd_sampler_cfg cs[] = {cfg_(1.0, 0, 1.0, 0.0), cfg_(0.8, 40, 1.0, 0.0),
                                 cfg_(0.8, 0, 0.9, 0.0), cfg_(1.3, 2000, 0.95, 0.02)};
    int same = 1;
    for (int q = 0; q < 4; q++) {
        kd_rng a, b;
        kd_rng_seed(&a, 76 + (uint64_t)q);
        b = a;
        for (int t = 0; t < 200; t++) {
            int64_t x = -1, y = -2;
            same &= kd_sample(&cs[q], &a, l, V, &x, NULL) == KD_OK;
            same &= kd_sample(&cs[q], &b, l, V, &y, scratch) == KD_OK;
            same &= x == y;
        }
        dist_check_ d = draw_and_compare_s_(&cs[q], &cs[q], l, V, 5000, 80 + (uint64_t)q, scratch);
        CHECK_DIST(d, "with scratch");
    }
    CHECK(same);
    free(scratch);
    free(l);
}

/* NaN logits are an error, never sampled or argmaxed; so are +inf and a row
 * of all -inf when sampling. Nothing is drawn from the rng. */
TEST(sampler_bad_logits)
{
    kd_rng r, r0;
    kd_rng_seed(&r, 81);
    r0 = r;
    kd_sampler_cfg s = cfg_(1.0, 0, 1.0, 0.0), g = cfg_(0.0, 0, 1.0, 0.0);
    float nan_[4] = {1, NAN, 3, 2};
    int64_t id = -5;
    CHECK_ERR(kd_sample(&s, &r, nan_, 4, &id, NULL), KD_E_RANGE, "logit 1 of 4 is nan");
    CHECK_ERR(kd_sample(&g, &r, nan_, 4, &id, NULL), KD_E_RANGE, "is nan");
    s.top_k = 2;
    CHECK_ERR(kd_sample(&s, &r, nan_, 4, &id, NULL), KD_E_RANGE, "is nan");
    s.top_k = 0;
    float inf_[3] = {1, 2, INFINITY};
    CHECK_ERR(kd_sample(&s, &r, inf_, 3, &id, NULL), KD_E_RANGE, "logit 2 is +inf");
    float none[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHECK_ERR(kd_sample(&s, &r, none, 3, &id, NULL), KD_E_RANGE, "all 3 logits are -inf");
    CHECK(id == -5);
    CHECK(memcmp(&r, &r0, sizeof r) == 0);
    /* one finite logit among -inf: always it */
    float one[4] = {-INFINITY, -INFINITY, -7.0f, -INFINITY};
    int only = 1;
    for (int t = 0; t < 100; t++)
        only &= kd_sample(&s, &r, one, 4, &id, NULL) == KD_OK && id == 2;
    CHECK(only);
    /* a vocabulary of one, every knob on */
    kd_sampler_cfg all = cfg_(0.7, 3, 0.5, 0.9);
    float single = -2.5f;
    id = -1;
    CHECK_OK(kd_sample(&all, &r, &single, 1, &id, NULL));
    CHECK_EQ_INT(id, 0);
}

/* A Qwen-sized vocabulary: top-k and top-p stay in their sets, and the time
 * per token is printed (no bound: this is a report, not a benchmark gate). */
TEST(sampler_large_vocab)
{
    const int64_t V = 151936;
    kd_rng r;
    kd_rng_seed(&r, 91);
    float *l = malloc((size_t)V * sizeof(float));
    fill_normal_(&r, l, V, 3.0);
    ranked_ *s = malloc((size_t)V * sizeof *s);
    for (int64_t i = 0; i < V; i++)
        s[i] = (ranked_){l[i], i};
    qsort(s, (size_t)V, sizeof *s, rank_cmp_);
    int64_t *rank = malloc((size_t)V * sizeof *rank);
    for (int64_t j = 0; j < V; j++)
        rank[s[j].id] = j;
    /* the top-p 0.9 set at T 0.7, from the sorted list */
    double *p = malloc((size_t)V * sizeof *p);
    int64_t kept = 0;
    kd_sampler_cfg cp = cfg_(0.7, 0, 0.9, 0.0);
    ref_dist_(&cp, l, V, p, &kept);

    struct {
        const char *name;
        kd_sampler_cfg c;
    } runs[] = {
        {"greedy", cfg_(0.0, 0, 1.0, 0.0)},
        {"T 1", cfg_(1.0, 0, 1.0, 0.0)},
        {"top_k 50", cfg_(1.0, 50, 1.0, 0.0)},
        {"top_p 0.9 T 0.7", cp},
        {"top_k 50 top_p 0.9 min_p 0.05", cfg_(0.7, 50, 0.9, 0.05)},
    };
    for (size_t q = 0; q < sizeof runs / sizeof runs[0]; q++) {
        const int n = 200;
        int ok = 1;
        double t0 = kd_now();
        for (int t = 0; t < n; t++) {
            int64_t id = -1;
            ok &= kd_sample(&runs[q].c, &r, l, V, &id, NULL) == KD_OK && id >= 0 && id < V;
            if (ok && runs[q].c.top_k)
                ok &= rank[id] < runs[q].c.top_k;
            if (ok && q == 3)
                ok &= p[id] > 0.0;
        }
        double ms = (kd_now() - t0) * 1e3 / n;
        printf("V %lld, %-30s %.3f ms/token\n", (long long)V, runs[q].name, ms);
        if (!ok)
            FAIL_("%s: a draw failed or fell outside its set", runs[q].name);
        test_checks_++;
    }
    printf("V %lld, top_p 0.9 at T 0.7 keeps %lld tokens\n", (long long)V, (long long)kept);
    free(p);
    free(rank);
    free(s);
    free(l);
}

/* ---- generation ------------------------------------------------------------------- */

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

typedef struct {
    kd_student *m;
    int64_t *prompt, *ref; /* gen_prompt (P), gen_tokens (P + N) from ref_infer.safetensors */
    int64_t P, PN;
} fixture_;

static int fixture_open_(fixture_ *f)
{
    memset(f, 0, sizeof *f);
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", KD_TEST_FIXTURES);
    snprintf(path, sizeof path, "%s/ref_infer.safetensors", dir);
    kd_st *ri = NULL;
    CHECK_OK(kd_student_load(dir, &f->m));
    CHECK_OK(kd_st_open(path, &ri));
    size_t P = 0, PN = 0;
    if (ri) {
        f->prompt = copy_(ri, "gen_prompt", KD_I64, &P);
        f->ref = copy_(ri, "gen_tokens", KD_I64, &PN);
        kd_st_free(ri);
    }
    f->P = (int64_t)P;
    f->PN = (int64_t)PN;
    CHECK(f->m && f->prompt && f->ref && PN > P && P > 0);
    return f->m && f->prompt && f->ref && PN > P && P > 0;
}

static void fixture_close_(fixture_ *f)
{
    kd_student_free(f->m);
    free(f->prompt);
    free(f->ref);
}

/* Greedy through kd_student_generate equals HF's gen_tokens and
 * kd_student_generate_greedy. The reference suppresses EOS
 * (min_new_tokens), so no EOS is passed here. */
TEST(generate_greedy_hf)
{
    fixture_ f;
    if (!fixture_open_(&f)) {
        fixture_close_(&f);
        return;
    }
    const int64_t N = f.PN - f.P;
    int64_t *out = malloc((size_t)f.PN * sizeof *out), *out2 = malloc((size_t)f.PN * sizeof *out2);
    int64_t n = -1;
    kd_sampler_cfg g = cfg_(0.0, 0, 1.0, 0.0);
    CHECK_OK(kd_student_generate(f.m, f.prompt, f.P, N, &g, NULL, NULL, 0, out, &n));
    CHECK_EQ_INT(n, f.PN);
    int64_t same = 0;
    while (same < f.PN && out[same] == f.ref[same])
        same++;
    printf("tiny-qwen2 greedy generate: %lld/%lld tokens identical to HF\n", (long long)same,
           (long long)f.PN);
    CHECK_EQ_INT(same, f.PN);
    CHECK_OK(kd_student_generate_greedy(f.m, f.prompt, f.P, N, NULL, 0, out2, NULL));
    CHECK(memcmp(out, out2, (size_t)f.PN * sizeof *out) == 0);
    free(out);
    free(out2);
    fixture_close_(&f);
}

TEST(generate_sampled)
{
    fixture_ f;
    if (!fixture_open_(&f)) {
        fixture_close_(&f);
        return;
    }
    enum { N = 24 };
    const int64_t P = f.P, cap = P + N;
    int64_t *a = malloc((size_t)cap * sizeof *a), *b = malloc((size_t)cap * sizeof *b);
    int64_t na = 0, nb = 0;
    /* a hot temperature so the tiny model's choices vary */
    kd_sampler_cfg c = cfg_(2.0, 100, 0.98, 0.0);
    c.seed = 1234;

    /* same seed, same tokens; the rng advances one uniform per token */
    kd_rng r1, r2, adv;
    kd_rng_seed(&r1, 1234);
    kd_rng_seed(&r2, 1234);
    kd_rng_seed(&adv, 1234);
    CHECK_OK(kd_student_generate(f.m, f.prompt, P, N, &c, &r1, NULL, 0, a, &na));
    CHECK_OK(kd_student_generate(f.m, f.prompt, P, N, &c, &r2, NULL, 0, b, &nb));
    CHECK_EQ_INT(na, cap);
    CHECK_EQ_INT(nb, cap);
    CHECK(memcmp(a, b, (size_t)cap * sizeof *a) == 0);
    CHECK(memcmp(a, f.prompt, (size_t)P * sizeof *a) == 0);
    for (int i = 0; i < N; i++)
        kd_rng_uniform(&adv);
    CHECK(memcmp(&r1, &adv, sizeof adv) == 0);
    /* no rng: a private one seeded with cfg.seed, the same stream */
    CHECK_OK(kd_student_generate(f.m, f.prompt, P, N, &c, NULL, NULL, 0, b, &nb));
    CHECK(nb == cap && memcmp(a, b, (size_t)cap * sizeof *a) == 0);
    printf("tiny-qwen2 sampled (T 2, top_k 100, top_p 0.98, seed 1234):");
    for (int64_t i = P; i < cap; i++)
        printf(" %lld", (long long)a[i]);
    printf("\n");
    /* other seeds give other samples */
    int differs = 0;
    for (uint64_t seed = 1; seed <= 4; seed++) {
        c.seed = seed;
        CHECK_OK(kd_student_generate(f.m, f.prompt, P, N, &c, NULL, NULL, 0, b, &nb));
        differs += memcmp(a, b, (size_t)cap * sizeof *a) != 0;
    }
    CHECK(differs >= 3);
    c.seed = 1234;

    /* EOS: make the 4th generated token the EOS; the same seed then stops
     * right after its first occurrence, and everything before is unchanged.
     * An id outside the vocabulary in the list is harmless. */
    const int64_t t = a[P + 3];
    int64_t first = 3;
    for (int64_t i = 0; i < 3; i++)
        if (a[P + i] == t) {
            first = i;
            break;
        }
    const int64_t eos[2] = {1 << 20, t};
    CHECK_OK(kd_student_generate(f.m, f.prompt, P, N, &c, NULL, eos, 2, b, &nb));
    CHECK_EQ_INT(nb, P + first + 1);
    CHECK(memcmp(a, b, (size_t)nb * sizeof *a) == 0);
    CHECK_EQ_INT(b[nb - 1], t);
    /* greedy stops on the first token when it is an EOS */
    kd_sampler_cfg g = cfg_(0.0, 0, 1.0, 0.0);
    const int64_t geos = f.ref[P];
    CHECK_OK(kd_student_generate(f.m, f.prompt, P, N, &g, NULL, &geos, 1, b, &nb));
    CHECK_EQ_INT(nb, P + 1);
    CHECK_EQ_INT(b[P], geos);
    free(a);
    free(b);
    fixture_close_(&f);
}

TEST(generate_errors)
{
    fixture_ f;
    if (!fixture_open_(&f)) {
        fixture_close_(&f);
        return;
    }
    const int64_t P = f.P;
    const int64_t maxpos = kd_student_config(f.m)->max_position;
    int64_t *out = malloc((size_t)(maxpos + 8) * sizeof *out);
    int64_t n = -1;
    kd_sampler_cfg c = cfg_(1.0, 0, 1.0, 0.0), bad = cfg_(1.0, 0, 0.0, 0.0);
    CHECK_ERR(kd_student_generate(f.m, f.prompt, P, 4, &bad, NULL, NULL, 0, out, &n), KD_E_CONFIG,
              "top_p");
    CHECK_EQ_INT(n, 0);
    CHECK_ERR(kd_student_generate(f.m, f.prompt, 0, 4, &c, NULL, NULL, 0, out, &n), KD_E_RANGE,
              "prompt of 0 tokens");
    CHECK_ERR(kd_student_generate(f.m, f.prompt, P, -1, &c, NULL, NULL, 0, out, &n), KD_E_RANGE,
              "-1 new tokens");
    /* max_new 0: the prompt back */
    CHECK_OK(kd_student_generate(f.m, f.prompt, P, 0, &c, NULL, NULL, 0, out, &n));
    CHECK(n == P && memcmp(out, f.prompt, (size_t)P * sizeof *out) == 0);
    /* the cache holds P + max_new - 1 positions: exactly max_position fits,
     * one more does not */
    CHECK_OK(kd_student_generate(f.m, f.prompt, P, maxpos - P + 1, &c, NULL, NULL, 0, out, &n));
    CHECK_EQ_INT(n, maxpos + 1);
    CHECK_ERR(kd_student_generate(f.m, f.prompt, P, maxpos - P + 2, &c, NULL, NULL, 0, out, &n),
              KD_E_RANGE, "kv cache of");
    /* a prompt id outside the vocabulary */
    int64_t badp[2] = {1, kd_student_config(f.m)->vocab_size};
    CHECK_ERR(kd_student_generate(f.m, badp, 2, 4, &c, NULL, NULL, 0, out, &n), KD_E_RANGE,
              "outside [0, ");
    free(out);
    fixture_close_(&f);
}

/* penalties, by their definitions (HF's repetition penalty, OpenAI's frequency penalty) */
TEST(penalties)
{
    float l[5] = {2.0f, -2.0f, 1.0f, -1.0f, 0.5f};
    const uint8_t seen[5] = {1, 1, 0, 0, 1};
    const int64_t counts[5] = {0, 3, 0, 1, 2};
    kd_sample_penalize(l, 5, seen, counts, 2.0, 0.0);
    CHECK(l[0] == 1.0f && l[1] == -4.0f && l[2] == 1.0f && l[3] == -1.0f && l[4] == 0.25f);
    kd_sample_penalize(l, 5, NULL, counts, 1.0, 0.5);
    CHECK(l[0] == 1.0f && l[1] == -5.5f && l[2] == 1.0f && l[3] == -1.5f && l[4] == -0.75f);
    float z[2] = {1.0f, 2.0f};
    kd_sample_penalize(z, 2, NULL, NULL, 3.0, 1.0); /* nothing seen, nothing counted */
    CHECK(z[0] == 1.0f && z[1] == 2.0f);
}

int main(void)
{
    RUN(penalties);
    RUN(rng_reference);
    RUN(rng_determinism);
    RUN(rng_shuffle);
    RUN(sampler_config);
    RUN(sampler_greedy);
    RUN(sampler_top_k1);
    RUN(sampler_top_k);
    RUN(sampler_top_p);
    RUN(sampler_temperature);
    RUN(sampler_min_p);
    RUN(sampler_scratch);
    RUN(sampler_bad_logits);
    RUN(sampler_large_vocab);
    RUN(generate_greedy_hf);
    RUN(generate_sampled);
    RUN(generate_errors);
    return test_summary();
}
