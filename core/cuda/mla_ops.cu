/* mla_ops.cu - the small kernels of the teacher's forward on the GPU (teacher/cuda.c):
 * MLA's rope and latent write into the paged cache, row gathers, the
 * decompressed prefill's q/k/v assembly, the fp32 router logits, and random
 * weights for benchmarks. The reference for each is the matching lines of
 * kd_teacher_step in teacher/model.c. See cuops.h. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

extern "C" {
#include "core/cuda/cuops.h"
#include "core/status.h"
}
#include "core/cuda/cutry.h"
#include "core/cuda/mma.cuh"

#define S_(cu) ((cudaStream_t)(cu)->stream)
#define LAUNCH_() CUDA_TRY(cudaGetLastError())


/* ---- RMSNorm of strided rows into contiguous ones ------------------------------------------ */

__global__ static void norm_rows_kernel(bf16 *out, int64_t ldo, const bf16 *x, int64_t ldx, const bf16 *w,
                                        int64_t C, float eps)
{
    __shared__ float sh[32];
    const bf16 *xr = x + blockIdx.x * ldx;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float v = __bfloat162float(xr[i]);
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    const float r = rsqrtf(ss / (float)C + eps);
    bf16 *o = out + blockIdx.x * ldo;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
        o[i] = __float2bfloat16(__bfloat162float(xr[i]) * r * __bfloat162float(w[i]));
}

extern "C" int kd_cu_rmsnorm_rows(kd_bf16 *out, int64_t ldo, const kd_bf16 *x, int64_t ldx, const kd_bf16 *w,
                                  int64_t N, int64_t C, float eps, kd_cu *cu)
{
    if (N == 0)
        return KD_OK;
    norm_rows_kernel<<<(unsigned)N, 256, 0, S_(cu)>>>((bf16 *)out, ldo, (const bf16 *)x, ldx, (const bf16 *)w, C,
                                                       eps);
    LAUNCH_();
    return KD_OK;
}

/* ---- rope on a slice of each head ------------------------------------------------------------
 * One warp per (token, head): the Dr values are read into registers (pairs
 * (2i, 2i+1) when interleaved, which become halves (i, i + Dr/2), as
 * deinterleave_), then rotated and written, so dst may alias src. */
__device__ static void rope_pair_(float x1, float x2, float c, float s, float *o1, float *o2)
{
    *o1 = x1 * c - x2 * s;
    *o2 = x2 * c + x1 * s;
}

__global__ static void rope_kernel(bf16 *dst, int64_t dn, int64_t dh, const bf16 *src, int64_t sn, int64_t sh, int H,
                                   int half, const int32_t *pos, const float *cos_, const float *sin_, int inter,
                                   int64_t rows)
{
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int l = threadIdx.x & 31;
    if (w >= rows)
        return;
    const int64_t n = w / H, h = w % H;
    const bf16 *s = src + n * sn + h * sh;
    bf16 *d = dst + n * dn + h * dh;
    const int64_t p = pos[n];
    float x1[2], x2[2];
    for (int j = 0; j < 2; j++) {
        const int i = l + 32 * j;
        if (i < half) {
            x1[j] = __bfloat162float(inter ? s[2 * i] : s[i]);
            x2[j] = __bfloat162float(inter ? s[2 * i + 1] : s[i + half]);
        }
    }
    __syncwarp();
    for (int j = 0; j < 2; j++) {
        const int i = l + 32 * j;
        if (i < half) {
            float o1, o2;
            rope_pair_(x1[j], x2[j], cos_[p * half + i], sin_[p * half + i], &o1, &o2);
            d[i] = __float2bfloat16(o1);
            d[i + half] = __float2bfloat16(o2);
        }
    }
}

extern "C" int kd_cu_mla_rope(kd_bf16 *dst, int64_t dn, int64_t dh, const kd_bf16 *src, int64_t sn, int64_t sh,
                              int64_t N, int64_t H, int64_t Dr, const int32_t *pos, const float *cos_,
                              const float *sin_, int interleave, kd_cu *cu)
{
    if (Dr % 2 || Dr > 128)
        return kd_err(KD_E_CUDA, "mla rope: rope dim %lld (even, <= 128)", (long long)Dr);
    const int64_t rows = N * H;
    if (rows == 0)
        return KD_OK;
    rope_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, S_(cu)>>>((bf16 *)dst, dn, dh, (const bf16 *)src, sn, sh,
                                                                 (int)H, (int)(Dr / 2), pos, cos_, sin_, interleave,
                                                                 rows);
    LAUNCH_();
    return KD_OK;
}

/* ---- the new tokens' latents into the paged cache -------------------------------------------
 * One block per token: row ckv[n] (R + Dr, stride ld) -> cache row slot[n]:
 * [rmsnorm(c) * w | rope(kr) at pos[n]], fp32 arithmetic, bf16 stored. */
__global__ static void kv_write_kernel(bf16 *cache, const int32_t *slot, const bf16 *ckv, int64_t ld, const bf16 *w,
                                       int R, int Dr, float eps, const int32_t *pos, const float *cos_,
                                       const float *sin_, int inter)
{
    __shared__ float sh[32];
    const int64_t n = blockIdx.x;
    const bf16 *x = ckv + n * ld;
    bf16 *d = cache + (int64_t)slot[n] * (R + Dr);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < R; i += blockDim.x) {
        float v = __bfloat162float(x[i]);
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    const float r = rsqrtf(ss / (float)R + eps);
    for (int i = threadIdx.x; i < R; i += blockDim.x)
        d[i] = __float2bfloat16(__bfloat162float(x[i]) * r * __bfloat162float(w[i]));
    const int half = Dr / 2;
    const int64_t p = pos[n];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float x1 = __bfloat162float(inter ? x[R + 2 * i] : x[R + i]);
        const float x2 = __bfloat162float(inter ? x[R + 2 * i + 1] : x[R + i + half]);
        float o1, o2;
        rope_pair_(x1, x2, cos_[p * half + i], sin_[p * half + i], &o1, &o2);
        d[R + i] = __float2bfloat16(o1);
        d[R + i + half] = __float2bfloat16(o2);
    }
}

extern "C" int kd_cu_mla_kv_write(kd_bf16 *cache, const int32_t *slot, const kd_bf16 *ckv, int64_t ld,
                                  const kd_bf16 *w, int64_t N, int64_t R, int64_t Dr, float eps, const int32_t *pos,
                                  const float *cos_, const float *sin_, int interleave, kd_cu *cu)
{
    if (N == 0)
        return KD_OK;
    if (Dr % 2)
        return kd_err(KD_E_CUDA, "mla kv write: odd rope dim %lld", (long long)Dr);
    kv_write_kernel<<<(unsigned)N, 128, 0, S_(cu)>>>((bf16 *)cache, slot, (const bf16 *)ckv, ld, (const bf16 *)w,
                                                      (int)R, (int)Dr, eps, pos, cos_, sin_, interleave);
    LAUNCH_();
    return KD_OK;
}

/* ---- row gather -------------------------------------------------------------------------------- */

__global__ static void gather_kernel(bf16 *dst, int64_t ldd, const bf16 *src, int64_t lds, const int32_t *idx,
                                     int64_t W)
{
    const int64_t m = blockIdx.x;
    const int32_t r = idx[m];
    bf16 *d = dst + m * ldd;
    for (int64_t i = threadIdx.x; i < W; i += blockDim.x)
        d[i] = r >= 0 ? src[(int64_t)r * lds + i] : __float2bfloat16(0.0f);
}

extern "C" int kd_cu_rows_gather(kd_bf16 *dst, int64_t ldd, const kd_bf16 *src, int64_t lds, const int32_t *idx,
                                 int64_t M, int64_t W, kd_cu *cu)
{
    if (M == 0)
        return KD_OK;
    gather_kernel<<<(unsigned)M, 128, 0, S_(cu)>>>((bf16 *)dst, ldd, (const bf16 *)src, lds, idx, W);
    LAUNCH_();
    return KD_OK;
}

/* ---- the decompressed prefill's q, k, v ------------------------------------------------------
 * Row m of the packed sequences, head h:
 *   Q = [q[qrow[m], h] (Dn + Dr) | 0 ...]   (zeros when qrow[m] < 0: a cached position)
 *   K = [kv[m, h, :Dn] | lat[m, R:R + Dr] | 0 ...]
 *   V = [kv[m, h, Dn:Dn + Dv] | 0 ...]
 * padded to Dkp and Dvp columns (the zeros change no dot product). */
__global__ static void prefill_qkv_kernel(bf16 *Q, bf16 *K, bf16 *V, int Dkp, int Dvp, const bf16 *q,
                                          const int32_t *qrow, const bf16 *kv, const bf16 *lat, int H, int Dn, int Dr,
                                          int Dv, int R)
{
    const int64_t m = blockIdx.x;
    const int h = blockIdx.y;
    const int Dq = Dn + Dr;
    const int32_t qr = qrow[m];
    const bf16 z = __float2bfloat16(0.0f);
    const bf16 *kvh = kv + (m * H + h) * (int64_t)(Dn + Dv);
    bf16 *Qo = Q + (m * H + h) * (int64_t)Dkp, *Ko = K + (m * H + h) * (int64_t)Dkp;
    bf16 *Vo = V + (m * H + h) * (int64_t)Dvp;
    for (int i = threadIdx.x; i < Dkp; i += blockDim.x) {
        Qo[i] = qr >= 0 && i < Dq ? q[((int64_t)qr * H + h) * Dq + i] : z;
        Ko[i] = i < Dn ? kvh[i] : i < Dq ? lat[m * (int64_t)(R + Dr) + R + (i - Dn)] : z;
    }
    for (int i = threadIdx.x; i < Dvp; i += blockDim.x)
        Vo[i] = i < Dv ? kvh[Dn + i] : z;
}

extern "C" int kd_cu_mla_prefill_qkv(kd_bf16 *Q, kd_bf16 *K, kd_bf16 *V, int64_t Dkp, int64_t Dvp, const kd_bf16 *q,
                                     const int32_t *qrow, const kd_bf16 *kv, const kd_bf16 *lat, int64_t M, int64_t H,
                                     int64_t Dn, int64_t Dr, int64_t Dv, int64_t R, kd_cu *cu)
{
    if (M == 0)
        return KD_OK;
    if (H > 65535 || Dkp < Dn + Dr || Dvp < Dv)
        return kd_err(KD_E_CUDA, "mla prefill: %lld heads, padded dims %lld/%lld", (long long)H, (long long)Dkp,
                      (long long)Dvp);
    prefill_qkv_kernel<<<dim3((unsigned)M, (unsigned)H), 64, 0, S_(cu)>>>(
        (bf16 *)Q, (bf16 *)K, (bf16 *)V, (int)Dkp, (int)Dvp, (const bf16 *)q, qrow, (const bf16 *)kv,
        (const bf16 *)lat, (int)H, (int)Dn, (int)Dr, (int)Dv, (int)R);
    LAUNCH_();
    return KD_OK;
}

/* ---- the router's logits in fp32 (transformers casts to fp32 for them) ------------------------
 * One warp per (token, expert): a dot product of C, lanes over 8-column chunks. */
__global__ static void router_kernel(float *out, const bf16 *x, const float *w, int64_t N, int E, int64_t C)
{
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int l = threadIdx.x & 31;
    if (wid >= N * E)
        return;
    const int64_t n = wid / E, e = wid % E;
    const bf16 *xr = x + n * C;
    const float *wr = w + e * C;
    float s = 0.0f;
    for (int64_t i = l; i < C; i += 32)
        s += __bfloat162float(xr[i]) * wr[i];
    s = warp_sum(s);
    if (l == 0)
        out[n * E + e] = s;
}

extern "C" int kd_cu_router_logits(float *out, const kd_bf16 *x, const float *w, int64_t N, int64_t E, int64_t C,
                                   kd_cu *cu)
{
    const int64_t warps = N * E;
    if (warps == 0)
        return KD_OK;
    router_kernel<<<(unsigned)((warps + 7) / 8), 256, 0, S_(cu)>>>(out, (const bf16 *)x, w, N, (int)E, C);
    LAUNCH_();
    return KD_OK;
}

/* ---- random weights (benchmarks) ------------------------------------------------------------------
 * x[i] ~ normal(0, std) from a hash of (seed, i) (splitmix64, Box-Muller): the
 * same values on every GPU, whatever the launch shape; not kd_fill_normal's
 * stream (the CPU's random weights are another model). */
__device__ static uint64_t mix_(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ static void normal_kernel(bf16 *xb, float *xf, int64_t n, float std, uint64_t seed)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const uint64_t h = mix_(seed ^ mix_((uint64_t)i));
        const float u1 = ((float)(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
        const float u2 = (float)((h >> 16) & 0xffffff) * (1.0f / 16777216.0f);
        const float v = std * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
        if (xb)
            xb[i] = __float2bfloat16(v);
        else
            xf[i] = v;
    }
}

extern "C" int kd_cu_fill_normal(kd_bf16 *xb, float *xf, int64_t n, float std, uint64_t seed, kd_cu *cu)
{
    if (n == 0)
        return KD_OK;
    int64_t g = (n + 255) / 256;
    normal_kernel<<<(unsigned)(g < 65536 ? g : 65536), 256, 0, S_(cu)>>>((bf16 *)xb, xf, n, std, seed);
    LAUNCH_();
    return KD_OK;
}

__global__ static void const_kernel(bf16 *x, int64_t n, float v)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __float2bfloat16(v);
}

extern "C" int kd_cu_fill_bf16(kd_bf16 *x, int64_t n, float v, kd_cu *cu)
{
    if (n == 0)
        return KD_OK;
    int64_t g = (n + 255) / 256;
    const_kernel<<<(unsigned)(g < 65536 ? g : 65536), 256, 0, S_(cu)>>>((bf16 *)x, n, v);
    LAUNCH_();
    return KD_OK;
}

extern "C" int kd_cu_copy(void *dst, const void *src, size_t bytes, kd_cu *cu)
{
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, S_(cu)));
    return KD_OK;
}
