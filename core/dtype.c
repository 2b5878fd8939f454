/* dtype.c - dtype names, sizes and scalar conversions. See dtype.h. */
#include "dtype.h"
#include "status.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} info[KD_DTYPE_COUNT] = {
    [KD_F32] = {"F32", 4},     [KD_F16] = {"F16", 2}, [KD_BF16] = {"BF16", 2},
    [KD_F8_E4M3] = {"F8_E4M3", 1}, [KD_I64] = {"I64", 8}, [KD_I32] = {"I32", 4},
    [KD_U8] = {"U8", 1},       [KD_BOOL] = {"BOOL", 1},
};

size_t kd_dtype_size(kd_dtype t) { return (unsigned)t < KD_DTYPE_COUNT ? info[t].size : 0; }

const char *kd_dtype_name(kd_dtype t) { return (unsigned)t < KD_DTYPE_COUNT ? info[t].name : "?"; }

int kd_dtype_parse(const char *name, kd_dtype *out)
{
    for (int i = 0; i < KD_DTYPE_COUNT; i++)
        if (strcmp(name, info[i].name) == 0) {
            *out = (kd_dtype)i;
            return KD_OK;
        }
    return kd_err(KD_E_DTYPE, "unknown dtype '%.64s' (known: F32 F16 BF16 F8_E4M3 I64 I32 U8 BOOL)", name);
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float kd_bf16_to_f32(unsigned short h) { return u2f((uint32_t)h << 16); }

unsigned short kd_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (unsigned short)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

float kd_f16_to_f32(unsigned short h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f)
        return u2f(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

unsigned short kd_f32_to_f16(float f)
{
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000u;
    float a = fabsf(f);
    if (isnan(f))
        return (unsigned short)(sign | 0x7e00u);
    if (a >= 65520.0f) /* rounds to infinity at and above 65504 + half an ulp */
        return (unsigned short)(sign | 0x7c00u);
    if (a < 6.103515625e-05f) { /* subnormal: multiples of 2^-24, ties to even */
        float q = a * 16777216.0f;
        return (unsigned short)(sign | (uint32_t)nearbyintf(q));
    }
    uint32_t au = f2u(a);
    uint32_t r = au + 0xfffu + ((au >> 13) & 1u);
    return (unsigned short)(sign | (((r >> 23) - 112u) << 10) | ((r >> 13) & 0x3ffu));
}

float kd_fp8e4m3_to_f32(unsigned char b)
{
    uint32_t sign = b >> 7, exp = (b >> 3) & 0xfu, man = b & 7u;
    float v;
    if (exp == 0xf && man == 7)
        return NAN;
    if (exp == 0)
        v = ldexpf((float)man, -9); /* subnormal: man * 2^-3 * 2^-6 */
    else
        v = ldexpf(1.0f + (float)man / 8.0f, (int)exp - 7);
    return sign ? -v : v;
}

unsigned char kd_f32_to_fp8e4m3(float f)
{
    unsigned char sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (isnan(f))
        return 0x7f;
    if (a >= 448.0f)
        return sign | 0x7e; /* saturate to max finite */
    if (a < ldexpf(1.0f, -6)) { /* subnormal: multiples of 2^-9 */
        int m = (int)nearbyintf(a * 512.0f);
        return sign | (unsigned char)m; /* m == 8 is exactly the smallest normal */
    }
    int e;
    float fr = frexpf(a, &e); /* a = fr * 2^e, fr in [0.5,1) */
    int exp = e - 1 + 7;
    float man = nearbyintf((fr * 2.0f - 1.0f) * 8.0f);
    if (man >= 8.0f) {
        man = 0;
        exp++;
    }
    if (exp > 15 || (exp == 15 && man > 6))
        return sign | 0x7e;
    return sign | (unsigned char)(exp << 3) | (unsigned char)man;
}
