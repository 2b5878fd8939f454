/* model.c - the trainer's model: a dense student (student/model.h) or a
 * DeepSeek-V3/V2 teacher (teacher/train.h), chosen by config.json's
 * model_type. The two APIs mirror each other; this is the one switch
 * between them, so that every part of the loop is written once. */
#include "sft/sft_impl.h"

#include <string.h>

#include "core/hfconfig.h"
#include "core/status.h"
#include "student/export.h"

int sft_model_load(const char *dir, sft_model *m)
{
    memset(m, 0, sizeof *m);
    kd_model_config c;
    KD_TRY(kd_model_config_load(dir, &c));
    if (c.arch == KD_ARCH_DEEPSEEK_V3 || c.arch == KD_ARCH_DEEPSEEK_V2)
        return kd_teacher_train_new(dir, &m->t);
    return kd_student_load(dir, &m->s);
}

void sft_model_free(sft_model *m)
{
    kd_student_free(m->s);
    kd_teacher_train_free(m->t);
    memset(m, 0, sizeof *m);
}

const kd_model_config *sft_model_config(const sft_model *m)
{
    return m->t ? kd_teacher_train_config(m->t) : kd_student_config(m->s);
}

int sft_model_loss(sft_model *m, const int64_t *ids, const int64_t *labels, const int64_t *pos, int64_t B,
                   int64_t T, double *sum, int64_t *count)
{
    return m->t ? kd_teacher_train_loss_sum(m->t, ids, labels, pos, B, T, sum, count)
                : kd_student_loss(m->s, ids, labels, pos, B, T, sum, count);
}

int sft_model_backward(sft_model *m, const int64_t *ids, const int64_t *labels, const int64_t *pos, int64_t B,
                       int64_t T, double scale, double *sum, int64_t *count)
{
    return m->t ? kd_teacher_train_backward(m->t, ids, labels, pos, B, T, scale, sum, count)
                : kd_student_backward(m->s, ids, labels, pos, B, T, scale, sum, count);
}

void sft_model_zero_grad(sft_model *m)
{
    if (m->t)
        kd_teacher_train_zero_grad(m->t);
    else
        kd_student_zero_grad(m->s);
}

double sft_model_grad_norm(const sft_model *m)
{
    return m->t ? kd_teacher_train_grad_norm(m->t) : kd_student_grad_norm(m->s);
}

void sft_model_scale_grads(sft_model *m, float s)
{
    if (m->t)
        kd_teacher_train_scale_grads(m->t, s);
    else
        kd_student_scale_grads(m->s, s);
}

int sft_model_adamw(sft_model *m, const kd_adamw *hp, int no_decay_norm_bias)
{
    return m->t ? kd_teacher_train_adamw_step(m->t, hp, no_decay_norm_bias)
                : kd_student_adamw_step(m->s, hp, no_decay_norm_bias);
}

int64_t sft_model_step(const sft_model *m) { return m->t ? kd_teacher_train_step(m->t) : kd_student_step(m->s); }

int sft_model_set_step(sft_model *m, int64_t step)
{
    return m->t ? kd_teacher_train_set_step(m->t, step) : kd_student_set_step(m->s, step);
}

int sft_model_tensor(sft_model *m, const char *name, int which, float **data, size_t *numel)
{
    return m->t ? kd_teacher_train_tensor(m->t, name, which, data, numel)
                : kd_student_tensor(m->s, name, which, data, numel);
}

int sft_model_is_buffer(const sft_model *m, const char *name)
{
    return m->t ? kd_teacher_train_is_buffer(m->t, name) : 0;
}

static int get_(void *ctx, const char *name, float **data, size_t *numel)
{
    return sft_model_tensor(ctx, name, 0, data, numel);
}

int sft_model_export(sft_model *m, const char *out_dir, const kd_export_opts *o)
{
    return kd_model_export(sft_model_config(m), get_, m, out_dir, o);
}
