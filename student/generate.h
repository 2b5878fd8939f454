/* generate.h - sampled generation for the dense student, with a KV cache.
 *
 * Legend: P prompt tokens, N = max_new, V vocab.
 *
 * Built on the public API of student/model.h only (kd_kvcache_*,
 * kd_student_extend) and core/sampler.h for the choice of each token.
 */
#ifndef KD_STUDENT_GENERATE_H
#define KD_STUDENT_GENERATE_H

#include <stdint.h>

#include "core/rng.h"
#include "core/sampler.h"
#include "student/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Generate up to max_new tokens after prompt[0..P): prefill the prompt with
 * kd_student_extend, then repeatedly choose a token from the last logits with
 * kd_sample(cfg, rng, ...) and feed it back through the cache. Stops after a
 * token that is one of the neos ids in `eos` (that token is included in the
 * output), or after max_new tokens. Nothing is suppressed: unlike
 * kd_student_generate_greedy, EOS ids can be chosen at any step.
 *
 * out (capacity P + max_new) receives the prompt followed by the generated
 * tokens; *n_out receives the total length, P + the number generated.
 *
 * rng: the generator to draw from; it advances by exactly one kd_rng_uniform
 * per generated token (none for greedy). NULL means a private generator
 * seeded with cfg->seed for this call, so a (cfg, prompt) pair alone
 * reproduces a sample. With temperature 0 this is greedy decoding and equals
 * kd_student_generate_greedy with nothing suppressed, token for token, as long
 * as no EOS id is generated.
 *
 * The cache holds P + max_new - 1 positions (the last token is never fed
 * back), which must not exceed max_position_embeddings.
 *
 * Errors: KD_E_CONFIG (cfg fails kd_sampler_check; nothing is run),
 * KD_E_RANGE (P <= 0, max_new < 0, a prompt id outside [0, V), the cache
 * would exceed max_position_embeddings, NaN logits), KD_E_NOMEM. On error
 * out[0..*n_out) holds the prompt and the tokens chosen before the failure. */
int kd_student_generate(kd_student *m, const int64_t *prompt, int64_t P, int64_t max_new,
                        const kd_sampler_cfg *cfg, kd_rng *rng, const int64_t *eos, int neos,
                        int64_t *out, int64_t *n_out);

#ifdef __cplusplus
}
#endif
#endif
