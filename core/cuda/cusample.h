/* cusample.h - token sampling on the GPU, the twin of kd_sample (core/sampler.h).
 *
 * Legend: S rows (sequences in a decode step), V vocab.
 *
 * Each row of logits (S, V) fp32 gets one token, by the rules of kd_sample:
 * temperature 0 is greedy (the first argmax); otherwise temperature, top-k
 * (every tie with the k-th logit kept), top-p (ties at the cut ranked by id,
 * lower first), min-p, then one inverse-CDF draw in id order over
 * sampler.c's 256 block sums and then one block. The uniform of the draw is
 * made on the device from the row's (seed, prompt, sample, t): the same bits
 * as kd_gen_rng (teacher/generate.h) then one kd_rng_uniform, so nothing is
 * computed on the host per token and each row may have its own knobs.
 *
 * What is exact. The token is kd_sample's for the same logits and knobs,
 * bit for bit, in every case but one:
 *   - greedy, the top-k threshold (a radix select of the k-th largest), the
 *     NaN / inf checks: exact (float compares only);
 *   - the weights w = exp((l - lmax) / T) are glibc's exp, bit for bit: the
 *     device runs glibc's algorithm (table, polynomial, and the fused
 *     multiply-adds where GCC fuses them in glibc's FMA build, which x86-64
 *     CPUs with FMA use), so min-p's test w >= min_p is exact;
 *   - the draw: the same 256 blocks of V / 256 + 1 logits, each block summed
 *     in double in id order, the total and the walk over the blocks in block
 *     order, then the walk inside one block, exactly as draw_ in sampler.c:
 *     the same doubles in the same order, so the same token;
 *   - top-p is the exception. The CPU sums the survivors' weights in id order
 *     (the total) and in the orders of its quickselect (the cut), which no
 *     parallel sum reproduces; here every weight is rounded to a 2^-64 fixed
 *     point and summed exactly in integers (so the result does not depend on
 *     the order, or on the row's place in the batch). Both stay within
 *     rounding of the exact sums (the CPU's: about 1e-16 relative per
 *     addition; these: 2^-65 per weight), so the kept set can differ only
 *     when the target top_p * total falls within that of a token's
 *     cumulative mass (or of a whole number of tied tokens), a coincidence
 *     in the last bits of a double. Where the sums are exact on both sides
 *     (every weight 1, p = j / V) the cut is the same.
 * The log-probability is logits[id] - logsumexp(logits), as generate.c
 * records it with kd_logsumexp (an fp32 max, expf, a double sum): close, not
 * bit-exact (expf on the device, another order of the sum); the test allows
 * 1e-5.
 * Deterministic: the same row gives the same token and log-probability
 * wherever it sits in the batch, whatever S.
 *
 * Cost: one CTA of 512 threads per row; a few passes over the row (the max,
 * one per radix digit of top-k or top-p, the draw), with the candidates of
 * top-k / top-p moved to shared memory when at most 4096 survive a first
 * digit, so the later passes read those only. Measured figures are printed
 * by tests/gpu/test_sample.c.
 */
#ifndef KD_CUDA_CUSAMPLE_H
#define KD_CUDA_CUSAMPLE_H

#include <stdint.h>

#include "core/cuda/cuops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One row's knobs and the key of its random draw, as kd_sampler_cfg and
 * kd_gen_rng's arguments (seed is the run's seed, prompt the prompt id,
 * sample the sample index, t the index of the token in the completion).
 * Plain data: an array of these is uploaded as is. */
typedef struct kd_cu_sample_row {
    double temperature; /* 0 = greedy; > 0 */
    double top_p;       /* (0, 1]; 1 = off */
    double min_p;       /* [0, 1]; 0 = off */
    int64_t top_k;      /* >= 0; 0 or >= V = off */
    uint64_t seed, prompt, sample, t;
} kd_cu_sample_row;

/* The largest V: the draw's staging holds one block (V / 256 + 1 doubles) in
 * shared memory. */
#define KD_CU_SAMPLE_MAXV (1 << 21)

/* Choose one token per row. logits (S, V) fp32, rows (S), ids (S) int32 and
 * logprob (S) fp32 (or NULL: not computed) are device memory; queued on cu's
 * stream, nothing waits. ids[s] is the token of row s, or -1 where kd_sample
 * would return an error: a NaN logit (greedy too), invalid knobs (those
 * kd_sampler_check refuses), or, when sampling, a +inf logit or a row of all
 * -inf. logprob[s] is NaN where ids[s] is -1 or the row has no finite max.
 * Errors: KD_E_CUDA when V is outside 1 .. KD_CU_SAMPLE_MAXV, S < 0, or the
 * launch fails. */
int kd_cu_sample(int32_t *ids, float *logprob, const float *logits, const kd_cu_sample_row *rows, int64_t S,
                 int64_t V, kd_cu *cu);

/* For the tests: y (n) = the device exp the sampler uses, at x (n) <= 0
 * (device memory). Bit for bit glibc's exp on an x86-64 CPU with FMA. */
int kd_cu_sample_exp(double *y, const double *x, int64_t n, kd_cu *cu);

#ifdef __cplusplus
}
#endif
#endif
