/* rng.h - the one random number generator every stage shares: xoshiro256**
 * (Blackman and Vigna, https://prng.di.unimi.it/), seeded from a 64-bit seed
 * with splitmix64.
 *
 * Deterministic and portable: the same seed gives the same stream on every
 * machine and build, so a sample, a shuffle or a dropout mask can be redone
 * from its seed.
 *
 * The state is plain data (four uint64 words, no pointers, no hidden globals).
 * A training checkpoint saves a generator by writing r.s[0..3] and restores it
 * by writing them back; the restored generator continues the exact stream.
 * A state of all zeros is invalid (the generator would emit zeros forever);
 * kd_rng_seed never produces it, and a restored state must come from a seeded
 * generator.
 *
 * Not cryptographic, and not thread-safe: give each thread (each sample, each
 * data-loader worker) its own kd_rng, seeded from its own seed.
 */
#ifndef KD_RNG_H
#define KD_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_rng {
    uint64_t s[4]; /* xoshiro256** state; save and restore it as is */
} kd_rng;

/* Seed r from `seed`: s[0..3] are the first four outputs of splitmix64 started
 * at `seed`, as the xoshiro authors recommend. Every seed is valid, 0
 * included. */
void kd_rng_seed(kd_rng *r, uint64_t seed);

/* The next 64 random bits (the reference xoshiro256** next()). */
uint64_t kd_rng_next(kd_rng *r);

/* A uniform double in [0, 1): the top 53 bits of kd_rng_next times 2^-53, so
 * every value is a multiple of 2^-53 and 1.0 is never returned. Uses one
 * output. */
double kd_rng_uniform(kd_rng *r);

/* A uniform integer in [0, n), without modulo bias (a draw below 2^64 mod n is
 * rejected and redrawn, so it uses one output almost always). n must be > 0
 * (asserted). */
uint64_t kd_rng_below(kd_rng *r, uint64_t n);

/* Shuffle a[0..n) in place with Fisher-Yates (from the end, j = below(i + 1)),
 * every permutation equally likely. Uses n - 1 draws of kd_rng_below (none
 * for n <= 1). */
/* Fill x[0..n) with normal(0, std) draws (Box-Muller), in fixed chunks of
 * 2^20 elements, each chunk its own generator seeded from (seed, stream,
 * chunk), filled in parallel: the values do not depend on the thread count.
 * Random weights in real shapes use it (distill init). */
void kd_fill_normal(float *x, size_t n, double std, uint64_t seed, uint64_t stream);

void kd_rng_shuffle_u64(kd_rng *r, uint64_t *a, size_t n);

#ifdef __cplusplus
}
#endif
#endif
