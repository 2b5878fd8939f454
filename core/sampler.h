/* sampler.h - choose the next token from a row of logits, as HF generate does.
 *
 * Legend: V vocab.
 *
 * The stages and their order are those of transformers' generate with
 * do_sample=True (GenerationMixin._get_logits_processor): temperature, then
 * top-k, then top-p, then min-p, then one draw from the softmax of what is
 * left. Temperature 0 is greedy (do_sample=False): the first argmax, as
 * torch.argmax, and the other knobs are ignored.
 *
 *   temperature  T > 0 divides the logits: p ~ exp(l / T).
 *   top_k        keep the tokens whose logit is >= the k-th largest logit.
 *                Like HF's TopKLogitsWarper (scores < topk(scores, k)[-1] are
 *                removed), every token tied with the k-th is kept, so more
 *                than k tokens survive when the k-th logit is tied.
 *   top_p        rank the surviving tokens by probability, highest first, and
 *                keep the shortest prefix whose probability sums to >= top_p
 *                (so at least one token). HF's TopPLogitsWarper removes the
 *                tokens whose ascending cumulative probability is <=
 *                1 - top_p, which is the same set in exact arithmetic; HF sums
 *                float32 from the low end and this sums double from the high
 *                end, so a case within rounding of the boundary can differ.
 *                Ties: HF ranks with torch.sort(stable=False), whose order
 *                among equal logits is unspecified (std::sort or x86-simd-sort
 *                on the CPU, bitonic or radix sort on CUDA), so there is no
 *                HF tie rule to match. Here equal logits rank by id, lower id
 *                first: when the cut falls inside a run of equal logits, the
 *                lower ids of the run are kept.
 *   min_p        keep the tokens whose probability is >= min_p times the
 *                largest probability among the survivors (HF's
 *                MinPLogitsWarper); the most likely token always stays.
 *
 * The probabilities are computed in double from the float logits. Tokens with
 * logit -inf are never drawn (they are how callers mask tokens out).
 *
 * Cost, for V = 151936 (Qwen) on one core: greedy one compare per logit;
 * top-k one pass that keeps a buffer of the 2k largest so far (quickselect
 * when it fills); top-p one pass of exp over the survivors for their total,
 * then only the candidates that can be in the set (those within a factor
 * 1e-2, else 1e-4, 1e-8, else all, of the largest probability, whichever
 * first holds top_p of the mass) are gathered, and a weighted quickselect
 * finds the cut among them. Expected O(V) for every combination of knobs;
 * nothing is sorted but ranges of at most 16. Each filter yields a threshold
 * ("every logit above thr, plus the first c tokens equal to it"), so the
 * logits themselves are never masked or permuted; the draw is an inverse-CDF
 * walk in id order over at most 256 block sums and then one block.
 * Measured on the development machine (x86-64, -O2): greedy ~0.1 ms, top_k
 * 50 ~0.3 ms, temperature only ~0.9 ms, top_p without top_k ~1.5-2 ms (one
 * double exp per logit dominates).
 */
#ifndef KD_SAMPLER_H
#define KD_SAMPLER_H

#include <stdint.h>

#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_sampler_cfg {
    double temperature; /* 0 = greedy (first argmax); > 0: sample from softmax(l / T) */
    int64_t top_k;      /* 0 = off */
    double top_p;       /* 1.0 = off; in (0, 1] */
    double min_p;       /* 0 = off; in [0, 1] */
    uint64_t seed;      /* seed for the caller's kd_rng (see kd_student_generate); kd_sample
                           itself only draws from the generator it is given */
} kd_sampler_cfg;

/* Set cfg to "sample from the model's own distribution": temperature 1, top_k
 * 0, top_p 1, min_p 0, seed 0. Note that an all-zero struct is NOT a valid
 * config (top_p 0 is refused); start from this and change what you need.
 * Unlike this, HF's GenerationConfig defaults top_k to 50: to reproduce a HF
 * run that did not set top_k, set top_k = 50. */
void kd_sampler_cfg_init(kd_sampler_cfg *cfg);

/* Check a config. Returns KD_OK, or KD_E_CONFIG naming the knob and its value
 * when temperature is NaN, infinite or negative, top_k is negative, top_p is
 * outside (0, 1] or min_p outside [0, 1] (NaN is outside both). The caller
 * should report the message and not sample. */
int kd_sampler_check(const kd_sampler_cfg *cfg);

/* Choose one token from logits[0..V) with cfg; *out_id receives it (in
 * [0, V)). Greedy (temperature 0) draws nothing and rng may be NULL;
 * otherwise exactly one kd_rng_uniform is drawn from rng, whatever the logits
 * and knobs, so a stream of samples stays in step with its generator.
 *
 * The logits are only read, never rescaled or masked in place (the pointer
 * is const; a caller holding a float * passes it as is).
 *
 * scratch: NULL, or a buffer of at least V floats that the call may
 * overwrite, the work space of top-k and top-p. A caller sampling in a loop
 * passes one to save an allocation per token; with NULL the call allocates
 * what it needs (2 top_k floats, or the top-p candidates) and frees it.
 *
 * Errors (nothing is drawn from rng, *out_id is untouched):
 *   KD_E_CONFIG  cfg fails kd_sampler_check.
 *   KD_E_RANGE   a logit is NaN (always an error, greedy included: a NaN row
 *                means the forward broke, and it is not silently sampled or
 *                argmaxed); when sampling, a logit is +inf or every logit is
 *                -inf (the softmax is undefined; HF's multinomial would raise).
 *                Greedy over a row of all -inf returns 0, as torch.argmax.
 *   KD_E_NOMEM   scratch is NULL and the work space cannot be allocated.
 * V must be > 0 (asserted). */
int kd_sample(const kd_sampler_cfg *cfg, kd_rng *rng, const float *logits, int64_t V,
              int64_t *out_id, float *scratch);

/* Penalties on logits (V) in place, before kd_sample:
 *   repetition (HF's RepetitionPenaltyLogitsProcessor): a token in `seen`
 *     (prompt or completion; may be NULL) has its logit divided by
 *     `repetition` when positive, multiplied when negative; 1 = off;
 *   frequency (OpenAI / vLLM): minus `frequency` times the token's count in
 *     the completion (`counts`; may be NULL); 0 = off. */
void kd_sample_penalize(float *logits, int64_t V, const uint8_t *seen, const int64_t *counts,
                        double repetition, double frequency);

#ifdef __cplusplus
}
#endif
#endif
