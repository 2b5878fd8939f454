/* model.c - the trainer's model: a dense student (student/model.h), the
 * same student on the GPU (student/cuda.h), or a DeepSeek-V3/V2 teacher
 * (teacher/train.h), chosen by config.json's model_type and the device. The
 * APIs mirror each other; this is the one switch between them, so that
 * every part of the loop is written once. */
#include "sft/sft_impl.h"

#include <math.h>
#include <string.h>

#include "core/hfconfig.h"
#include "core/log.h"
#include "core/status.h"
#include "student/export.h"

static int host_get_(void *ctx, const char *name, float **data, size_t *numel)
{
    return kd_student_tensor(ctx, name, 0, data, numel);
}

int sft_model_load(const char *dir, const sft_model_opts *o, sft_model *m)
{
    memset(m, 0, sizeof *m);
    kd_model_config c;
    KD_TRY(kd_model_config_load(dir, &c));
    if (c.arch == KD_ARCH_DEEPSEEK_V3 || c.arch == KD_ARCH_DEEPSEEK_V2) {
        if (o && o->cuda)
            kd_warn("sft: the teacher's cold start trains on the CPU (MoE training on CUDA is not built yet)");
        return kd_teacher_train_new(dir, &m->t);
    }
    KD_TRY(kd_student_load(dir, &m->s));
    if (!o || !o->cuda)
        return KD_OK;
    kd_cu_student_opts co = {.device = 0, .max_tokens = o->max_tokens, .max_T = o->max_T, .recompute = o->recompute};
    kd_cu_mem mem;
    kd_cu_student_plan(&c, &co, &mem);
    kd_cu_mem_log(&mem, "sft");
    int st = kd_cu_student_new(&c, host_get_, m->s, &co, &m->g);
    if (st) {
        sft_model_free(m);
        return st;
    }
    return KD_OK;
}

void sft_model_free(sft_model *m)
{
    kd_cu_student_free(m->g);
    kd_student_free(m->s);
    kd_teacher_train_free(m->t);
    memset(m, 0, sizeof *m);
}

int sft_model_push(sft_model *m)
{
    if (!m->g)
        return KD_OK;
    for (size_t i = 0; i < kd_student_param_count(m->s); i++) {
        const char *name = kd_student_param_name(m->s, i);
        for (int which = 0; which < 4; which++) {
            float *d;
            size_t n;
            if (which == 1)
                continue; /* gradients are zeroed at each step */
            KD_TRY(kd_student_tensor(m->s, name, which, &d, &n));
            KD_TRY(kd_cu_student_set(m->g, name, which, d, n));
        }
    }
    return KD_OK;
}

int sft_model_gpu_step(sft_model *m, const kd_adamw *hp, int no_decay_norm_bias, double clip, double *loss_sum,
                       double *grad_norm)
{
    KD_TRY(kd_cu_student_adamw(m->g, hp, no_decay_norm_bias, clip));
    KD_TRY(kd_cu_student_read(m->g, loss_sum, grad_norm));
    if (!isfinite(*grad_norm)) /* the GPU skipped the update; the step does not count */
        kd_cu_student_set_step(m->g, kd_cu_student_step(m->g) - 1);
    return KD_OK;
}

const kd_model_config *sft_model_config(const sft_model *m)
{
    return m->t ? kd_teacher_train_config(m->t) : kd_student_config(m->s);
}

int sft_model_loss(sft_model *m, const int64_t *ids, const int64_t *labels, const int64_t *pos, int64_t B,
                   int64_t T, double *sum, int64_t *count)
{
    if (m->g) {
        KD_TRY(kd_cu_student_zero_grad(m->g));
        KD_TRY(kd_cu_student_loss(m->g, ids, labels, pos, B, T));
        if (count)
            *count = kd_student_count_targets(labels, pos, B, T);
        return kd_cu_student_read(m->g, sum, NULL);
    }
    return m->t ? kd_teacher_train_loss_sum(m->t, ids, labels, pos, B, T, sum, count)
                : kd_student_loss(m->s, ids, labels, pos, B, T, sum, count);
}

int sft_model_backward(sft_model *m, const int64_t *ids, const int64_t *labels, const int64_t *pos, int64_t B,
                       int64_t T, double scale, double *sum, int64_t *count)
{
    if (m->g) {
        *sum = 0;
        if (count)
            *count = kd_student_count_targets(labels, pos, B, T);
        return kd_cu_student_backward(m->g, ids, labels, pos, B, T, scale);
    }
    return m->t ? kd_teacher_train_backward(m->t, ids, labels, pos, B, T, scale, sum, count)
                : kd_student_backward(m->s, ids, labels, pos, B, T, scale, sum, count);
}

int sft_model_zero_grad(sft_model *m)
{
    if (m->g)
        return kd_cu_student_zero_grad(m->g);
    if (m->t)
        kd_teacher_train_zero_grad(m->t);
    else
        kd_student_zero_grad(m->s);
    return KD_OK;
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

int64_t sft_model_step(const sft_model *m)
{
    return m->g ? kd_cu_student_step(m->g) : m->t ? kd_teacher_train_step(m->t) : kd_student_step(m->s);
}

int sft_model_set_step(sft_model *m, int64_t step)
{
    if (m->g)
        kd_cu_student_set_step(m->g, step);
    return m->t ? kd_teacher_train_set_step(m->t, step) : kd_student_set_step(m->s, step);
}

int sft_model_tensor(sft_model *m, const char *name, int which, float **data, size_t *numel)
{
    if (m->t)
        return kd_teacher_train_tensor(m->t, name, which, data, numel);
    KD_TRY(kd_student_tensor(m->s, name, which, data, numel));
    return m->g ? kd_cu_student_get(m->g, name, which, *data, *numel) : KD_OK;
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
