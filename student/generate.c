/* generate.c - sampled generation for the dense student. See generate.h.
 *
 * Legend: P prompt tokens, N = max_new, V vocab.
 */
#include "student/generate.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

static int is_eos_(int64_t id, const int64_t *eos, int neos)
{
    for (int e = 0; e < neos; e++)
        if (eos[e] == id)
            return 1;
    return 0;
}

int kd_student_generate(kd_student *m, const int64_t *prompt, int64_t P, int64_t max_new,
                        const kd_sampler_cfg *cfg, kd_rng *rng, const int64_t *eos, int neos,
                        int64_t *out, int64_t *n_out)
{
    *n_out = 0;
    KD_TRY(kd_sampler_check(cfg));
    if (P <= 0 || max_new < 0)
        return kd_err(KD_E_RANGE, "generate: prompt of %lld tokens and %lld new tokens (need >= 1"
                      " prompt tokens and >= 0 new)", (long long)P, (long long)max_new);
    memcpy(out, prompt, (size_t)P * sizeof(int64_t));
    *n_out = P;
    if (max_new == 0)
        return KD_OK;

    kd_rng own;
    if (!rng) {
        kd_rng_seed(&own, cfg->seed);
        rng = &own;
    }
    const int64_t V = kd_student_config(m)->vocab_size;
    kd_kvcache *kv = NULL;
    KD_TRY(kd_kvcache_new(m, P + max_new - 1, &kv));
    /* (V) logits of the last position, then (V) the sampler's work space */
    float *row = malloc(2 * (size_t)V * sizeof(float));
    int rc = row ? KD_OK : kd_err(KD_E_NOMEM, "generate: two rows of %lld floats", (long long)V);
    if (!rc)
        rc = kd_student_extend(m, kv, prompt, P, row);
    for (int64_t i = 0; !rc && i < max_new; i++) {
        int64_t tok = 0;
        rc = kd_sample(cfg, rng, row, V, &tok, row + V);
        if (rc) {
            kd_err_wrap(rc, "generate: step %lld", (long long)i);
            break;
        }
        out[P + i] = tok;
        *n_out = P + i + 1;
        if (is_eos_(tok, eos, neos) || i + 1 == max_new)
            break;
        rc = kd_student_extend(m, kv, &tok, 1, row);
    }
    free(row);
    kd_kvcache_free(kv);
    return rc;
}
