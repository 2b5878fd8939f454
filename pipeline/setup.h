/* setup.h - the stages that make a pipeline's starting material, so that a
 * whole distillation, the demo's included, is one YAML file for `distill run`:
 *
 *   - problems: {output: DIR, seed, steps_min, ...}   the built-in verifiable
 *       problems (data/problems.h) as the datasets DIR/train (cold-start chats),
 *       DIR/gen and DIR/heldout (prompts), as `distill data problems DIR`;
 *   - init: {config: DIR, output: DIR, tokenizer, seed, std}   a model of
 *       DIR/config.json with random weights, as `distill init`.
 */
#ifndef KD_PIPELINE_SETUP_H
#define KD_PIPELINE_SETUP_H

#include <stdint.h>

#include "core/config.h"
#include "core/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_problems_stage {
    char *output;
    int64_t seed, steps_min, steps_max, max_operand, max_factor, train, gen, heldout;
    int restate;
} kd_problems_stage;

extern const kd_cfg_schema kd_problems_schema;

/* Write and import the problems. Errors: those of kd_problems_cfg_check and
 * kd_problems_import. */
int kd_problems_stage_run(const kd_problems_stage *c);

typedef struct kd_init_config {
    char *config;    /* folder with config.json */
    char *output;    /* the new model folder */
    char *tokenizer; /* folder with the tokenizer files; ~ = config */
    int64_t seed;
    double std;
} kd_init_config;

extern const kd_cfg_schema kd_init_schema;

/* A model of cfg_dir/config.json with random weights, normal(0, std), norms
 * 1, written to out_dir as an HF folder with the tokenizer files of tok_dir
 * (NULL = cfg_dir): a dense model (qwen2, llama) in dtype (KD_F32 or
 * KD_BF16), a DeepSeek-V3/V2 in f32. Errors: those of kd_model_config_load,
 * kd_student_init, kd_teacher_write_random and the export; KD_E_UNSUPPORTED
 * (a DeepSeek model in bf16). */
int kd_init_model(const char *cfg_dir, const char *out_dir, const char *tok_dir, uint64_t seed, double std,
                  kd_dtype dtype);

#ifdef __cplusplus
}
#endif
#endif
