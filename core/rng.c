/* rng.c - xoshiro256** seeded by splitmix64. See rng.h.
 *
 * Both are transcriptions of the public-domain reference code by Blackman and
 * Vigna (https://prng.di.unimi.it/splitmix64.c, xoshiro256starstar.c); the
 * constants are theirs.
 */
#include "rng.h"

#include <math.h>

#include <assert.h>

static uint64_t rotl_(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* one step of splitmix64: advance *x and return its mixed output */
static uint64_t splitmix64_(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kd_rng_seed(kd_rng *r, uint64_t seed)
{
    /* splitmix64 is a bijection of its counter, and the four counters differ,
     * so at most one word can be zero: the state is never all zeros. */
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64_(&seed);
}

uint64_t kd_rng_next(kd_rng *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl_(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl_(s[3], 45);
    return result;
}

double kd_rng_uniform(kd_rng *r)
{
    return (double)(kd_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t kd_rng_below(kd_rng *r, uint64_t n)
{
    assert(n > 0);
    /* 2^64 mod n: the draws below it are the surplus that would make the low
     * residues more likely; reject them. At most n - 1 < 2^64 of 2^64 values
     * are rejected, so the expected number of draws is below 2. */
    const uint64_t reject_below = (0 - n) % n;
    for (;;) {
        uint64_t x = kd_rng_next(r);
        if (x >= reject_below)
            return x % n;
    }
}

void kd_rng_shuffle_u64(kd_rng *r, uint64_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)kd_rng_below(r, (uint64_t)i);
        uint64_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

void kd_fill_normal(float *x, size_t n, double std, uint64_t seed, uint64_t stream)
{
    enum { CHUNK = 1 << 20 };
    const size_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(dynamic, 1) if (nchunks > 1)
    for (size_t c = 0; c < nchunks; c++) {
        kd_rng r;
        kd_rng_seed(&r, seed ^ (0x9e3779b97f4a7c15ull * (stream * 1000003u + c + 1)));
        const size_t hi = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        for (size_t i = c * CHUNK; i < hi; i++) {
            double u1 = kd_rng_uniform(&r), u2 = kd_rng_uniform(&r);
            x[i] = (float)(std * sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2));
        }
    }
}
