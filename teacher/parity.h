/* parity.h - the parity harness for the teacher (DeepSeek-V3/V2): what
 * `distill parity DIR` runs when DIR holds a deepseek model. */
#ifndef KD_TEACHER_PARITY_H
#define KD_TEACHER_PARITY_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The checks of ref_infer.safetensors (kd_parity_check_infer: logits,
 * greedy generation with the absorbed decode, the KV cache), plus "mla":
 * the absorbed and the decompressed decode give the same logits at every
 * step. ref_train is reported as skipped (the teacher has no backward).
 * *failed counts the failed checks. With cuda, the CUDA teacher
 * (teacher/cuda.h) runs the inference checks at the bf16 tolerances (2e-2),
 * with the CPU teacher as the reference for greedy margins; "mla" and the
 * training checks are the CPU's. Errors: KD_E_NOTFOUND (no
 * ref_infer.safetensors), KD_E_CUDA, and those of kd_teacher_load. */
int kd_teacher_parity_run(const char *dir, int cuda, FILE *out, int *failed);

#ifdef __cplusplus
}
#endif
#endif
