/* setup.c - the problems and init stages (see setup.h). */
#include "pipeline/setup.h"

#include <stddef.h>

#include "core/hfconfig.h"
#include "core/status.h"
#include "data/problems.h"
#include "student/export.h"
#include "student/model.h"
#include "teacher/model.h"

static const kd_cfg_field problems_fields_[] = {
    KD_CFG_STRING(kd_problems_stage, output, NULL, "folder of the datasets train, gen and heldout"),
    KD_CFG_INT(kd_problems_stage, seed, "1", 0, 1e15, "the problems' seed"),
    KD_CFG_INT(kd_problems_stage, steps_min, "2", 2, 6, "fewest arithmetic steps per problem"),
    KD_CFG_INT(kd_problems_stage, steps_max, "4", 2, 6, "most arithmetic steps per problem"),
    KD_CFG_INT(kd_problems_stage, max_operand, "50", 5, 100000, "largest start amount and amount gained or lost"),
    KD_CFG_INT(kd_problems_stage, max_factor, "9", 2, 12, "largest group count, group size and divisor"),
    KD_CFG_INT(kd_problems_stage, train, "2000", 1, 10000000, "cold-start chats (solver-written R1 traces)"),
    KD_CFG_INT(kd_problems_stage, gen, "2000", 1, 10000000, "prompts for the teacher to answer"),
    KD_CFG_INT(kd_problems_stage, heldout, "500", 1, 10000000, "held-out prompts for evaluation"),
    KD_CFG_BOOL(kd_problems_stage, restate, "false", "the solutions quote each event before working it out"),
    KD_CFG_END};

const kd_cfg_schema kd_problems_schema = {"problems", problems_fields_, sizeof(kd_problems_stage)};

int kd_problems_stage_run(const kd_problems_stage *c)
{
    if (!c->output)
        return kd_err(KD_E_CONFIG, "problems: 'output' is not set");
    kd_problems_cfg p;
    kd_problems_cfg_init(&p);
    p.seed = (uint64_t)c->seed;
    p.steps_min = (int)c->steps_min;
    p.steps_max = (int)c->steps_max;
    p.max_operand = (int)c->max_operand;
    p.max_factor = (int)c->max_factor;
    p.n_train = (uint64_t)c->train;
    p.n_gen = (uint64_t)c->gen;
    p.n_heldout = (uint64_t)c->heldout;
    p.restate = c->restate;
    KD_TRY(kd_problems_cfg_check(&p));
    return kd_problems_import(&p, c->output, 1);
}

static const kd_cfg_field init_fields_[] = {
    KD_CFG_STRING(kd_init_config, config, NULL, "folder with the model's config.json"),
    KD_CFG_STRING(kd_init_config, output, NULL, "the new model folder"),
    KD_CFG_STRING(kd_init_config, tokenizer, NULL, "folder with the tokenizer files; ~ = config"),
    KD_CFG_INT(kd_init_config, seed, "0", 0, 1e15, "random seed of the weights"),
    KD_CFG_FLOAT(kd_init_config, std, "0.02", 0, 10, "standard deviation of the weights (norms are 1)"),
    KD_CFG_END};

const kd_cfg_schema kd_init_schema = {"init", init_fields_, sizeof(kd_init_config)};

int kd_init_model(const char *cfg_dir, const char *out_dir, const char *tok_dir, uint64_t seed, double std,
                  kd_dtype dtype)
{
    kd_model_config cfg;
    KD_TRY(kd_model_config_load(cfg_dir, &cfg));
    if (cfg.arch == KD_ARCH_DEEPSEEK_V3 || cfg.arch == KD_ARCH_DEEPSEEK_V2) {
        if (dtype != KD_F32)
            return kd_err(KD_E_UNSUPPORTED, "init: a deepseek model is written in f32");
        KD_TRY(kd_teacher_write_random(cfg_dir, out_dir, seed, std));
        return kd_copy_tokenizer_files(tok_dir ? tok_dir : cfg_dir, out_dir);
    }
    kd_student *m = NULL;
    int st = kd_student_init(cfg_dir, seed, std, &m);
    if (st == KD_OK) {
        kd_export_opts eo = {.src_dir = cfg_dir, .tokenizer_dir = tok_dir, .dtype = dtype};
        st = kd_student_export(m, out_dir, &eo);
    }
    kd_student_free(m);
    return st;
}
