/* generate.h - the generation job: `distill generate CONFIG.yaml`.
 *
 * Reads the prompts of a dataset and writes one generations record per
 * (prompt, sample index) into a dataset (the same one by default), in prompt
 * order, each when it finishes. Every key is documented in
 * configs/generate/r1.yaml.
 *
 * Randomness is counter-based: the uniform that picks token t of sample s
 * of prompt p comes from a generator keyed by (seed, p, s, t), so a unit's
 * text depends on nothing else: not the batch, not the order, not restarts.
 *
 * Resume: units already in the output dataset are skipped, so a run killed
 * at any point (kill -9 included) and started again writes each missing
 * unit exactly once; finished units are committed every commit_every units.
 *
 * A record holds the completion text (the forced "<think>\n" included), the
 * prompt and completion token counts, the finish reason (stop, length,
 * budget: the thinking budget closed the reasoning, skipped: the prompt does
 * not fit the context), and in extra: the sum of the chosen tokens' log
 * probabilities under the model (before sampling transforms), seconds, and
 * tokens/s. The lineage entry names the model, the config hash and the seed.
 *
 * Engine (CPU reference), for DeepSeek and dense teachers alike: continuous
 * batching over a paged cache (core/kvpool.h): up to `batch` samples decode together, a
 * prompt is prefilled once and its samples share its blocks
 * (copy-on-write), and when the pool runs out the newest sample is
 * preempted and later recomputed (prompt prefilled, its tokens replayed), so
 * its text does not change. No sample is dropped for want of cache: before
 * anything is generated the pool is checked to hold every sample alone (its
 * prompt and max_new_tokens, within the context, and a block to spare); the
 * default pool grows to that, a kv_blocks too small is refused.
 *
 * With runtime.device cuda a DeepSeek teacher runs on the GPU (teacher/cuda.h):
 * the same scheduler over the GPU cache's block ids, decode absorbed, and
 * sampling on the GPU when no penalty is on (core/cuda/cusample.h: kd_sample's
 * rules and draw; DISTILL_HOST_SAMPLING=1 samples on the host instead).
 */
#ifndef KD_TEACHER_GENERATE_H
#define KD_TEACHER_GENERATE_H

#include <stdint.h>

#include "core/config.h"
#include "core/rng.h"
#include "core/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_gen_sampling {
    double temperature, top_p, min_p;
    int64_t top_k;
    double repetition_penalty; /* HF: logits of seen tokens / p if > 0 else * p; 1 = off */
    double frequency_penalty;  /* OpenAI/vLLM: minus p * count in the completion; 0 = off */
    int64_t max_new_tokens;
    int64_t thinking_budget;   /* > 0: after this many tokens inside <think>, force </think> */
    kd_cfg_strlist stop;       /* stop strings (not included in the text) */
    kd_cfg_strlist stop_ids;   /* extra stop token ids, as strings */
} kd_gen_sampling;

typedef struct kd_gen_config {
    char *model;          /* HF folder: deepseek_v3/v2 (teacher) or qwen2/llama (dense) */
    char *tokenizer;      /* folder with tokenizer.json; ~ = the model folder */
    char *input;          /* dataset with prompts */
    char *output;         /* dataset to write generations into; ~ = input */
    int64_t samples;      /* per prompt */
    int64_t limit;        /* prompts to use; 0 = all */
    char *template_name;  /* YAML "template" */
    char *system;         /* system prompt; ~ = none (R1's advice) */
    char *instruction;    /* appended to a plain prompt's text; ~ = none */
    int force_think;      /* start the assistant turn with "<think>\n" */
    int mla;              /* 0 absorbed, 1 decompressed decode (DeepSeek) */
    int64_t commit_every; /* units per committed batch */
    int64_t batch;        /* DeepSeek engine: samples in flight */
    int64_t kv_block;     /* positions per cache block */
    int64_t kv_blocks;    /* blocks in the pool; 0 = from batch, max_new_tokens, the longest prompt */
    int progress;
    kd_gen_sampling sampling;
    kd_runtime_config runtime;
} kd_gen_config;

extern const kd_cfg_schema kd_gen_schema;
/* The fields of the `sampling` section (kd_gen_sampling), for configs that embed it. */
extern const kd_cfg_field kd_gen_sampling_fields[];

typedef struct kd_gen_result {
    int64_t units, existing, generated, skipped;
    int64_t by_finish[8];
    int64_t tokens;       /* completion tokens generated in this run */
    double seconds, tokens_per_second;
    double mean_len, p50_len, p90_len, p99_len; /* completion tokens of this run's units */
} kd_gen_result;

/* Run the job. Errors: KD_E_CONFIG (bad settings, max_new_tokens past the
 * context, a kv pool that cannot hold some prompt's sample alone: the
 * message names the prompt and the keys), KD_E_NOTFOUND (model, tokenizer, dataset), KD_E_UNSUPPORTED,
 * KD_E_IO, KD_E_NOMEM, and a missing tensor / wrong shape / unsupported
 * quantisation of the model, named before anything is generated. */
int kd_generate_run(const kd_gen_config *cfg, kd_gen_result *res);

/* The counter-based generator of token t of sample s of prompt p. */
void kd_gen_rng(uint64_t seed, uint64_t prompt, uint64_t sample, uint64_t t, kd_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
