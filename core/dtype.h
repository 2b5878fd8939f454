/* dtype.h - element types of tensors and of the files that hold them.
 *
 * The names are safetensors' names. kd_dtype values are stable: they are
 * written into checkpoints and datasets, so only append.
 */
#ifndef KD_DTYPE_H
#define KD_DTYPE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kd_dtype {
    KD_F32 = 0,
    KD_F16,
    KD_BF16,
    KD_F8_E4M3, /* OCP e4m3fn: 1-4-3, no infinities, max 448; DeepSeek's FP8 weights */
    KD_I64,
    KD_I32,
    KD_U8,
    KD_BOOL,    /* one byte per element, 0 or 1 */
    KD_DTYPE_COUNT
} kd_dtype;

/* Bytes per element. */
size_t kd_dtype_size(kd_dtype t);
/* The safetensors name, e.g. "BF16". */
const char *kd_dtype_name(kd_dtype t);
/* Parse a safetensors dtype name. Returns KD_OK or KD_E_DTYPE (naming the string). */
int kd_dtype_parse(const char *name, kd_dtype *out);

/* Scalar conversions used by the CPU reference path and by tests. Round to
 * nearest even; NaN stays NaN. fp8 e4m3 saturates to +-448 on overflow. */
float kd_bf16_to_f32(unsigned short h);
unsigned short kd_f32_to_bf16(float f);
float kd_f16_to_f32(unsigned short h);
unsigned short kd_f32_to_f16(float f);
float kd_fp8e4m3_to_f32(unsigned char b);
unsigned char kd_f32_to_fp8e4m3(float f);

#ifdef __cplusplus
}
#endif
#endif
