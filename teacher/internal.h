/* internal.h - what teacher/model.c shares with teacher/train.c; not a
 * public interface. */
#ifndef KD_TEACHER_INTERNAL_H
#define KD_TEACHER_INTERNAL_H

#include <stdint.h>

#include "core/hfconfig.h"

/* Route one token as the inference model does (teacher/model.h): the k
 * experts idx (k) chosen from the router logits (E) with the correction
 * bias (E, or NULL) used only to choose, and their gate weights wt (k), from
 * the unbiased scores, normalised and scaled per the config. scratch holds
 * 2 E floats. The one implementation of the selection, so training and
 * inference choose the same experts. */
void kd_teacher_route_(const kd_model_config *c, const float *logit, const float *bias, int64_t *idx, float *wt,
                       float *scratch);

/* The attention softmax scale of the config, as DeepseekV3Attention sets it:
 * 1/sqrt(qk_nope + qk_rope), times mscale(factor, mscale_all_dim)^2 for yarn. */
float kd_teacher_scale_(const kd_model_config *c);

#endif
