/* ops.cu - the CUDA backend's ops but attention (core/cuda/attention.cu):
 * context, memory, GEMMs through cuBLASLt, and the bf16 kernels of the dense
 * students, forward and backward. See core/cuda/cuops.h for the contract.
 * Layout: helpers, kernels, then launchers (STYLE.md).
 *
 * Every cross-row reduction (norm weights, losses, the gradient norm) is two
 * passes over a FIXED number of partials, so the result does not depend on
 * the GPU's SM count or on scheduling: same inputs, same bits. The one
 * exception is the embedding's backward, a scatter-add with atomics. */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/cuda/cuops.h"
#include "core/status.h"
}
#include "core/cuda/cutry.h"
#include "core/cuda/mma.cuh"

#define LT_TRY(call)                                                                          \
    do {                                                                                      \
        cublasStatus_t s_ = (call);                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                      \
            return kd_err(KD_E_CUDA, "%s failed: cuBLAS status %d", #call, (int)s_);         \
    } while (0)
/* After a launch: a bad configuration shows up here, a fault at the next sync. */
#define LAUNCH_TRY(what) CUDA_TRY(cudaGetLastError())

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf162;

#define STREAM(cu) ((cudaStream_t)(cu)->stream)
#define NORM_PARTS 512 /* fixed partial counts: the sums' order never changes */
#define GNORM_PARTS 1024

static unsigned blocks_for(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 0x7fffffff ? 0x7fffffff : b);
}

/* ---- block reductions --------------------------------------------------------------- */

/* warp_sum, block_sum: core/cuda/mma.cuh */

__device__ static float block_max(float x, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    __syncthreads();
    if (lane == 0)
        sh[w] = x;
    __syncthreads();
    x = lane < nw ? sh[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

/* ---- conversions ------------------------------------------------------------------- */

__global__ static void f32_to_bf16_kernel(bf16 *y, const float *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

__global__ static void bf16_to_f32_kernel(float *y, const bf16 *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

/* ---- embedding ------------------------------------------------------------------------ */

__global__ static void embedding_fwd_kernel(bf162 *out, const int32_t *ids, const bf162 *wte, int64_t C2)
{
    int64_t n = blockIdx.x;
    const bf162 *row = wte + (int64_t)ids[n] * C2;
    for (int64_t i = threadIdx.x; i < C2; i += blockDim.x)
        out[n * C2 + i] = row[i];
}

__global__ static void embedding_bwd_kernel(float *dwte, const bf16 *dout, const int32_t *ids, int64_t C)
{
    int64_t n = blockIdx.x;
    float *row = dwte + (int64_t)ids[n] * C;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
        atomicAdd(row + i, __bfloat162float(dout[n * C + i]));
}

/* ---- RMSNorm with the residual add -------------------------------------------------------
 * One block per row; the row's sum of squares is taken of the rounded bf16
 * residual, the value the next layer sees. */
__global__ static void rmsnorm_fwd_kernel(bf16 *out, float *rstd, bf16 *res, const bf16 *a, const bf16 *b,
                                          const bf16 *w, int64_t C, float eps)
{
    __shared__ float sh[32];
    int64_t n = blockIdx.x;
    const bf162 *a2 = (const bf162 *)(a + n * C), *b2 = b ? (const bf162 *)(b + n * C) : NULL;
    bf162 *r2 = (bf162 *)(res + n * C);
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < C / 2; i += blockDim.x) {
        float2 x = __bfloat1622float2(a2[i]);
        if (b2) {
            float2 y = __bfloat1622float2(b2[i]);
            bf162 s = __floats2bfloat162_rn(x.x + y.x, x.y + y.y);
            r2[i] = s;
            x = __bfloat1622float2(s);
        } else if (r2 != a2) {
            r2[i] = a2[i];
        }
        ss += x.x * x.x + x.y * x.y;
    }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0 && rstd)
        rstd[n] = r;
    const bf162 *w2 = (const bf162 *)w;
    bf162 *o2 = (bf162 *)(out + n * C);
    for (int64_t i = threadIdx.x; i < C / 2; i += blockDim.x) {
        float2 x = __bfloat1622float2(r2[i]), g = __bfloat1622float2(w2[i]);
        o2[i] = __floats2bfloat162_rn(x.x * r * g.x, x.y * r * g.y);
    }
}

/* Block b of NORM_PARTS takes rows b, b + NORM_PARTS, ...; dx per row, and the
 * block's share of dw in parts[b][C] (dynamic shared memory, C floats). */
__global__ static void rmsnorm_bwd_kernel(bf16 *dx, float *parts, const bf16 *dres_in, const bf16 *dout,
                                          const bf16 *x, const bf16 *w, const float *rstd, int64_t N, int64_t C)
{
    extern __shared__ float dwsh[];
    __shared__ float sh[32];
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
        dwsh[i] = 0.0f;
    for (int64_t n = blockIdx.x; n < N; n += NORM_PARTS) {
        const bf16 *xr = x + n * C, *gr = dout + n * C;
        float r = rstd[n], dot = 0.0f;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
            float xi = __bfloat162float(xr[i]), gi = __bfloat162float(gr[i]);
            dot += gi * __bfloat162float(w[i]) * xi;
            dwsh[i] += gi * xi * r;
        }
        dot = block_sum(dot, sh);
        float k = dot * r * r * r / (float)C;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
            float v = r * __bfloat162float(w[i]) * __bfloat162float(gr[i]) - __bfloat162float(xr[i]) * k;
            if (dres_in)
                v += __bfloat162float(dres_in[n * C + i]);
            dx[n * C + i] = __float2bfloat16_rn(v);
        }
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
        parts[blockIdx.x * C + i] = dwsh[i];
}

/* dst[i] += sum over p of parts[p][i], p in order. */
__global__ static void sum_parts_kernel(float *dst, const float *parts, int nparts, int64_t C)
{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= C)
        return;
    float s = 0.0f;
    for (int p = 0; p < nparts; p++)
        s += parts[p * C + i];
    dst[i] += s;
}

/* ---- q/k/v split and RoPE ------------------------------------------------------------------
 * One thread per (row, head, i < D/2) of the fused projection; heads [0, H)
 * are q, [H, H+K) k, [H+K, H+2K) v. */
__global__ static void qkv_rope_fwd_kernel(bf16 *q, bf16 *k, bf16 *v, const bf16 *qkv, const float *cos_,
                                           const float *sin_, const int32_t *pos, int64_t N, int64_t T, int H,
                                           int K, int D)
{
    int half = D / 2, heads = H + 2 * K;
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= N * heads * half)
        return;
    int i = (int)(idx % half);
    int h = (int)((idx / half) % heads);
    int64_t n = idx / ((int64_t)half * heads);
    const bf16 *src = qkv + n * (int64_t)heads * D + (int64_t)h * D;
    float x0 = __bfloat162float(src[i]), x1 = __bfloat162float(src[i + half]);
    bf16 *dst;
    if (h < H + K) {
        int64_t p = pos ? pos[n] : n % T;
        float c = cos_[p * half + i], s = sin_[p * half + i];
        float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
        x0 = y0;
        x1 = y1;
        dst = h < H ? q + (n * H + h) * D : k + (n * K + (h - H)) * D;
    } else {
        dst = v + (n * K + (h - H - K)) * D;
    }
    dst[i] = __float2bfloat16_rn(x0);
    dst[i + half] = __float2bfloat16_rn(x1);
}

__global__ static void qkv_rope_bwd_kernel(bf16 *dqkv, float *dqkv32, const float *dq, const float *dk, const float *dv,
                                           const float *cos_, const float *sin_, const int32_t *pos, int64_t N,
                                           int64_t T, int H, int K, int D)
{
    int half = D / 2, heads = H + 2 * K;
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= N * heads * half)
        return;
    int i = (int)(idx % half);
    int h = (int)((idx / half) % heads);
    int64_t n = idx / ((int64_t)half * heads);
    const float *src = h < H ? dq + (n * H + h) * D : h < H + K ? dk + (n * K + (h - H)) * D
                                                                : dv + (n * K + (h - H - K)) * D;
    float g0 = src[i], g1 = src[i + half];
    if (h < H + K) { /* the transpose rotation */
        int64_t p = pos ? pos[n] : n % T;
        float c = cos_[p * half + i], s = sin_[p * half + i];
        float y0 = g0 * c + g1 * s, y1 = g1 * c - g0 * s;
        g0 = y0;
        g1 = y1;
    }
    const int64_t o = n * (int64_t)heads * D + (int64_t)h * D;
    dqkv[o + i] = __float2bfloat16_rn(g0);
    dqkv[o + i + half] = __float2bfloat16_rn(g1);
    if (dqkv32) {
        dqkv32[o + i] = g0;
        dqkv32[o + i + half] = g1;
    }
}

/* ---- SwiGLU ----------------------------------------------------------------------------------- */

/* SwiGLU, 8 columns per thread (16-byte loads and stores) when F % 8 == 0,
 * else one; the same float math either way. */
__device__ __forceinline__ float silu_(float g) { return g / (1.0f + expf(-g)); }

template <int V>
__global__ static void swiglu_fwd_kernel(bf16 *out, const bf16 *gu, int64_t N, int64_t F)
{
    const int64_t FV = F / V, idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= N * FV)
        return;
    const int64_t n = idx / FV, j = (idx - n * FV) * V;
    const bf16 *g = gu + n * 2 * F + j, *u = g + F;
    bf16 *o = out + n * F + j;
    if (V == 8) {
        uint4 gv = *reinterpret_cast<const uint4 *>(g), uv = *reinterpret_cast<const uint4 *>(u), ov;
        const bf162 *g2 = reinterpret_cast<const bf162 *>(&gv), *u2 = reinterpret_cast<const bf162 *>(&uv);
        bf162 *o2 = reinterpret_cast<bf162 *>(&ov);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 a = __bfloat1622float2(g2[i]), b = __bfloat1622float2(u2[i]);
            o2[i] = __floats2bfloat162_rn(silu_(a.x) * b.x, silu_(a.y) * b.y);
        }
        *reinterpret_cast<uint4 *>(o) = ov;
    } else {
        o[0] = __float2bfloat16_rn(silu_(__bfloat162float(g[0])) * __bfloat162float(u[0]));
    }
}

__device__ __forceinline__ void swiglu_grad_(float g, float u, float d, float *dg, float *du)
{
    const float sg = 1.0f / (1.0f + expf(-g));
    *dg = d * u * sg * (1.0f + g * (1.0f - sg));
    *du = d * g * sg;
}

template <int V>
__global__ static void swiglu_bwd_kernel(bf16 *dgu, const bf16 *dout, const bf16 *gu, int64_t N, int64_t F)
{
    const int64_t FV = F / V, idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= N * FV)
        return;
    const int64_t n = idx / FV, j = (idx - n * FV) * V;
    const bf16 *g = gu + n * 2 * F + j, *u = g + F, *d = dout + n * F + j;
    bf16 *dg = dgu + n * 2 * F + j, *du = dg + F;
    if (V == 8) {
        uint4 gv = *reinterpret_cast<const uint4 *>(g), uv = *reinterpret_cast<const uint4 *>(u);
        uint4 dv = *reinterpret_cast<const uint4 *>(d), gov, uov;
        const bf162 *g2 = reinterpret_cast<const bf162 *>(&gv), *u2 = reinterpret_cast<const bf162 *>(&uv);
        const bf162 *d2 = reinterpret_cast<const bf162 *>(&dv);
        bf162 *go2 = reinterpret_cast<bf162 *>(&gov), *uo2 = reinterpret_cast<bf162 *>(&uov);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 a = __bfloat1622float2(g2[i]), b = __bfloat1622float2(u2[i]), c = __bfloat1622float2(d2[i]);
            float ga, gb, ua, ub;
            swiglu_grad_(a.x, b.x, c.x, &ga, &ua);
            swiglu_grad_(a.y, b.y, c.y, &gb, &ub);
            go2[i] = __floats2bfloat162_rn(ga, gb);
            uo2[i] = __floats2bfloat162_rn(ua, ub);
        }
        *reinterpret_cast<uint4 *>(dg) = gov;
        *reinterpret_cast<uint4 *>(du) = uov;
    } else {
        float a, b;
        swiglu_grad_(__bfloat162float(g[0]), __bfloat162float(u[0]), __bfloat162float(d[0]), &a, &b);
        dg[0] = __float2bfloat16_rn(a);
        du[0] = __float2bfloat16_rn(b);
    }
}

/* ---- cross-entropy of one chunk of logits --------------------------------------------------------
 * One block per row: logsumexp in fp32 (an online max and sum per thread,
 * merged), then dlogits = scale (softmax - onehot), or 0 for a row that does
 * not count; row_loss[r] = lse - logit[target] (0 when not counted). */
__global__ static void xent_rows_kernel(bf16 *dlogits, float *row_loss, const float *logits, const int32_t *targets,
                                        int64_t V, float scale)
{
    __shared__ float sh[32];
    int64_t r = blockIdx.x;
    const float *x = logits + r * V;
    int32_t t = targets[r];
    float m = -INFINITY, s = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        float v = x[i];
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    float gm = block_max(m, sh);
    s = m == -INFINITY ? 0.0f : s * expf(m - gm);
    s = block_sum(s, sh);
    float lse = gm + logf(s);
    if (threadIdx.x == 0)
        row_loss[r] = t >= 0 ? lse - x[t] : 0.0f;
    if (!dlogits)
        return;
    bf16 *d = dlogits + r * V;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        float g = t >= 0 ? scale * (expf(x[i] - lse) - (i == t ? 1.0f : 0.0f)) : 0.0f;
        d[i] = __float2bfloat16_rn(g);
    }
}

/* *acc += the rows' sum, in double, in a fixed order (one block). */
__global__ static void sum_rows_kernel(float *acc, const float *rows, int64_t n)
{
    __shared__ double sh[32];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        s += rows[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0)
        *acc = (float)((double)*acc + s);
}

/* ---- the gradient norm and AdamW ------------------------------------------------------------------ */

__global__ static void norm2_parts_kernel(double *parts, const float *g, int64_t n)
{
    __shared__ double sh[32];
    double s = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)GNORM_PARTS * blockDim.x)
        s += (double)g[i] * g[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0)
        parts[blockIdx.x] = s;
}

__global__ static void norm2_final_kernel(float *out, const double *parts)
{
    __shared__ double sh[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < GNORM_PARTS; i += blockDim.x)
        s += parts[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0)
        *out = (float)s;
}

/* The arithmetic of kd_adamw_update (torch's single-tensor AdamW), per
 * element, with the weight decay of the element's segment and the clip
 * factor of torch's clip_grad_norm_ applied to the gradient first. A block
 * takes tiles of ADAM_TILE contiguous elements; the segment of a tile's first
 * element is found by bisection, later ones by stepping forward. */
#define ADAM_TILE 2048
__global__ static void adamw_kernel(float *p, bf16 *p16, const float *g, float *m, float *v, const kd_cu_seg *segs,
                                    int nseg, int64_t n, float lr, float b1, float b2, float eps, float step_size,
                                    float bc2_sqrt, const float *norm2, float max_norm)
{
    float clip = 1.0f;
    if (norm2 && !isfinite(*norm2))
        return; /* the step is skipped, as the CPU trainer skips it */
    if (norm2 && max_norm > 0.0f) {
        float gn = sqrtf(*norm2);
        if (gn > max_norm)
            clip = max_norm / (gn + 1e-6f);
    }
    for (int64_t base = (int64_t)blockIdx.x * ADAM_TILE; base < n; base += (int64_t)gridDim.x * ADAM_TILE) {
        int k = 0, hi = nseg - 1; /* the last segment starting at or before base */
        while (k < hi) {
            int mid = (k + hi + 1) / 2;
            if (segs[mid].off <= base)
                k = mid;
            else
                hi = mid - 1;
        }
        for (int64_t i = base + threadIdx.x; i < base + ADAM_TILE && i < n; i += blockDim.x) {
            while (k + 1 < nseg && segs[k + 1].off <= i)
                k++;
            float decay = 1.0f - lr * segs[k].weight_decay;
            float gi = g[i] * clip;
            float pi = p[i] * decay;
            float mi = m[i] + (gi - m[i]) * (1.0f - b1);
            float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
            float denom = sqrtf(vi) / bc2_sqrt + eps;
            pi -= step_size * (mi / denom);
            p[i] = pi;
            m[i] = mi;
            v[i] = vi;
            if (p16)
                p16[i] = __float2bfloat16_rn(pi);
        }
    }
}

/* ==== launchers ================================================================================ */

/* ---- GEMM plans ----------------------------------------------------------------------------------
 * Row-major D (m, n) = op(A) op(B) is column-major D^T (n, m) = op(B)^T op(A)^T,
 * so cuBLASLt gets B as its first operand and A as its second. A plan (the
 * descriptors and the heuristic's algorithm) is made once per shape. */
typedef struct {
    int64_t m, n, k;
    int ta, tb, d_f32, bias, beta;
    int64_t lda, ldb, ldd, batch, sa, sb, sd; /* leading dimensions; batch count and strides */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

enum { MAX_PLANS = 4096 }; /* the teacher makes a few per batch size */
typedef struct {
    gemm_plan p[MAX_PLANS];
    int n;
} plan_cache;

static int plan_make(gemm_plan *p, kd_cu *cu)
{
    cublasLtHandle_t lt = (cublasLtHandle_t)cu->lt;
    cudaDataType_t dt = p->d_f32 ? CUDA_R_32F : CUDA_R_16BF;
    LT_TRY(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opa = p->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = p->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (p->bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_16BF;
        LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    /* first operand: B^T (n, k) as stored: (n, k) ld ldb when !tb, else (k, n) */
    if (!p->tb)
        LT_TRY(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, p->n, p->k, p->ldb));
    else
        LT_TRY(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, p->k, p->n, p->ldb));
    if (!p->ta)
        LT_TRY(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, p->k, p->m, p->lda));
    else
        LT_TRY(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, p->m, p->k, p->lda));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->lc, dt, p->n, p->m, p->ldd));
    if (p->batch > 1) {
        int32_t bc = (int32_t)p->batch;
        cublasLtMatrixLayout_t ls[3] = {p->la, p->lb, p->lc};
        const int64_t st[3] = {p->sb, p->sa, p->sd};
        for (int i = 0; i < 3; i++) {
            LT_TRY(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
            LT_TRY(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st[i],
                                                    sizeof st[i]));
        }
    }
    cublasLtMatmulPreference_t pref;
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &cu->ws_size,
                                                sizeof cu->ws_size));
    /* callers promise 16-byte alignment (rows of a multiple of 8 elements), not
     * the 256 bytes the heuristic assumes by default */
    uint32_t al = 16;
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        cublasLtMatmulDescDestroy(p->op);
        cublasLtMatrixLayoutDestroy(p->la);
        cublasLtMatrixLayoutDestroy(p->lb);
        cublasLtMatrixLayoutDestroy(p->lc);
        return kd_err(KD_E_CUDA, "cuBLASLt has no algorithm for a %lld x %lld x %lld GEMM (status %d)",
                      (long long)p->m, (long long)p->n, (long long)p->k, (int)st);
    }
    p->algo = res.algo;
    return KD_OK;
}

static void plans_free(plan_cache *c)
{
    for (int i = 0; c && i < c->n; i++) {
        cublasLtMatmulDescDestroy(c->p[i].op);
        cublasLtMatrixLayoutDestroy(c->p[i].la);
        cublasLtMatrixLayoutDestroy(c->p[i].lb);
        cublasLtMatrixLayoutDestroy(c->p[i].lc);
    }
    free(c);
}

extern "C" int kd_cu_gemm(void *d, int d_f32, const kd_bf16 *a, int ta, const kd_bf16 *b, int tb, const kd_bf16 *bias,
                          int64_t m, int64_t n, int64_t k, float alpha, float beta, kd_cu *cu)
{
    const kd_cu_gemm_shape sh = {ta ? m : k, tb ? k : n, n, 1, 0, 0, 0};
    return kd_cu_gemm_ex(d, d_f32, a, ta, b, tb, bias, m, n, k, &sh, alpha, beta, cu);
}

extern "C" int kd_cu_gemm_ex(void *d, int d_f32, const kd_bf16 *a, int ta, const kd_bf16 *b, int tb,
                             const kd_bf16 *bias, int64_t m, int64_t n, int64_t k, const kd_cu_gemm_shape *sh,
                             float alpha, float beta, kd_cu *cu)
{
    if (m == 0 || n == 0 || sh->batch == 0)
        return KD_OK;
    plan_cache *c = (plan_cache *)cu->plans;
    int beta_on = beta != 0.0f;
    const int64_t bt = sh->batch > 1 ? sh->batch : 1;
    const int64_t sa = bt > 1 ? sh->sa : 0, sb = bt > 1 ? sh->sb : 0, sd = bt > 1 ? sh->sd : 0;
    gemm_plan *p = NULL;
    for (int i = 0; i < c->n && !p; i++) {
        gemm_plan *q = &c->p[i];
        if (q->m == m && q->n == n && q->k == k && q->ta == ta && q->tb == tb && q->d_f32 == d_f32 &&
            q->bias == (bias != NULL) && q->beta == beta_on && q->lda == sh->lda && q->ldb == sh->ldb &&
            q->ldd == sh->ldd && q->batch == bt && q->sa == sa && q->sb == sb && q->sd == sd)
            p = q;
    }
    if (!p) {
        if (c->n == MAX_PLANS)
            return kd_err(KD_E_CUDA, "more than %d GEMM shapes in one context", MAX_PLANS);
        p = &c->p[c->n];
        memset(p, 0, sizeof *p);
        p->m = m, p->n = n, p->k = k, p->ta = ta, p->tb = tb, p->d_f32 = d_f32, p->bias = bias != NULL,
        p->beta = beta_on;
        p->lda = sh->lda, p->ldb = sh->ldb, p->ldd = sh->ldd, p->batch = bt, p->sa = sa, p->sb = sb, p->sd = sd;
        KD_TRY(plan_make(p, cu));
        c->n++;
    }
    if (bias)
        LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    float be = beta_on ? beta : 0.0f;
    LT_TRY(cublasLtMatmul((cublasLtHandle_t)cu->lt, p->op, &alpha, b, p->la, a, p->lb, &be, d, p->lc, d, p->lc,
                          &p->algo, cu->ws, cu->ws_size, STREAM(cu)));
    return KD_OK;
}

extern "C" int kd_cu_linear_forward(kd_bf16 *y, const kd_bf16 *x, const kd_bf16 *w, const kd_bf16 *b, int64_t N,
                                    int64_t nI, int64_t nO, kd_cu *cu)
{
    return kd_cu_gemm(y, 0, x, 0, w, 1, b, N, nO, nI, 1.0f, 0.0f, cu);
}

__device__ __forceinline__ static float as_f32_(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ static float as_f32_(float x) { return x; }

template <typename T> __global__ static void colsum_parts_kernel(float *parts, const T *dy, int64_t N, int64_t O)
{
    int64_t j = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
    if (j >= O)
        return;
    float s = 0.0f;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x)
        s += as_f32_(dy[n * O + j]);
    parts[blockIdx.x * O + j] = s;
}

/* db += column sums of dy (N, O): 64 fixed partials per column, then their sum in order. */
template <typename T> static int colsum_(float *db, const T *dy, int64_t N, int64_t nO, kd_cu *cu)
{
    const int parts = 64;
    if ((int64_t)parts * nO > (int64_t)KD_CU_SCRATCH)
        return kd_err(KD_E_CUDA, "bias gradient of %lld features is over the scratch", (long long)nO);
    dim3 grid(parts, blocks_for(nO, 256));
    colsum_parts_kernel<T><<<grid, 256, 0, STREAM(cu)>>>(cu->scratch, dy, N, nO);
    LAUNCH_TRY("colsum");
    sum_parts_kernel<<<blocks_for(nO, 256), 256, 0, STREAM(cu)>>>(db, cu->scratch, parts, nO);
    LAUNCH_TRY("sum_parts");
    return KD_OK;
}

extern "C" int kd_cu_colsum_f32(float *db, const float *dy, int64_t N, int64_t nO, kd_cu *cu)
{
    return colsum_<float>(db, dy, N, nO, cu);
}

extern "C" int kd_cu_linear_backward(kd_bf16 *dx, float *dw, float *db, const kd_bf16 *dy, const kd_bf16 *x,
                                     const kd_bf16 *w, int64_t N, int64_t nI, int64_t nO, int accumulate_dx,
                                     kd_cu *cu)
{
    if (dx)
        KD_TRY(kd_cu_gemm(dx, 0, dy, 0, w, 0, NULL, N, nI, nO, 1.0f, accumulate_dx ? 1.0f : 0.0f, cu));
    if (dw)
        KD_TRY(kd_cu_gemm(dw, 1, dy, 1, x, 0, NULL, nO, nI, N, 1.0f, 1.0f, cu));
    if (db)
        KD_TRY(colsum_<bf16>(db, (const bf16 *)dy, N, nO, cu));
    return KD_OK;
}

/* The pinned ring of kd_cu_upload_async: a slot is reused once the copy that
 * last read it has run (its event), which in a training loop is long done. */
enum { RING_SLOTS = 8 };
typedef struct {
    void *buf[RING_SLOTS];
    size_t cap[RING_SLOTS];
    cudaEvent_t done[RING_SLOTS];
    int next;
} upload_ring;

static void ring_free(upload_ring *r)
{
    for (int i = 0; r && i < RING_SLOTS; i++) {
        cudaFreeHost(r->buf[i]);
        if (r->done[i])
            cudaEventDestroy(r->done[i]);
    }
    free(r);
}

extern "C" int kd_cu_upload_async(void *dst, const void *src, size_t bytes, kd_cu *cu)
{
    upload_ring *r = (upload_ring *)cu->ring;
    int i = r->next;
    r->next = (i + 1) % RING_SLOTS;
    if (!r->done[i])
        CUDA_TRY(cudaEventCreateWithFlags(&r->done[i], cudaEventDisableTiming));
    CUDA_TRY(cudaEventSynchronize(r->done[i]));
    if (r->cap[i] < bytes) {
        cudaFreeHost(r->buf[i]);
        r->buf[i] = NULL;
        r->cap[i] = 0;
        CUDA_TRY(cudaMallocHost(&r->buf[i], bytes));
        r->cap[i] = bytes;
    }
    memcpy(r->buf[i], src, bytes);
    CUDA_TRY(cudaMemcpyAsync(dst, r->buf[i], bytes, cudaMemcpyHostToDevice, STREAM(cu)));
    CUDA_TRY(cudaEventRecord(r->done[i], STREAM(cu)));
    return KD_OK;
}

/* ---- the op profile ------------------------------------------------------------------------- */

enum { PROF_MAX = 1 << 15 };
typedef struct {
    cudaEvent_t ev[PROF_MAX];
    const char *kind[PROF_MAX];
    int n, made;
} op_prof;

extern "C" int kd_cu_prof_on(kd_cu *cu)
{
    if (!cu->prof && !(cu->prof = calloc(1, sizeof(op_prof))))
        return kd_err(KD_E_NOMEM, "profile");
    cudaProfilerStart(); /* the range `ncu --profile-from-start off` records */
    return KD_OK;
}

extern "C" void kd_cu_prof_mark(kd_cu *cu, const char *kind)
{
    op_prof *p = (op_prof *)cu->prof;
    if (!p || p->n == PROF_MAX)
        return;
    if (p->n == p->made && cudaEventCreate(&p->ev[p->made]) == cudaSuccess)
        p->made++;
    if (p->n < p->made) {
        cudaEventRecord(p->ev[p->n], STREAM(cu));
        p->kind[p->n++] = kind;
    }
}

extern "C" int kd_cu_prof_report(kd_cu *cu, void *file)
{
    op_prof *p = (op_prof *)cu->prof;
    FILE *f = (FILE *)file;
    if (!p)
        return KD_OK;
    kd_cu_prof_mark(cu, "(end)");
    cudaProfilerStop();
    KD_TRY(kd_cu_sync(cu));
    const char *names[64];
    double ms[64], total = 0;
    int nk = 0;
    for (int i = 0; i + 1 < p->n; i++) {
        float t = 0;
        CUDA_TRY(cudaEventElapsedTime(&t, p->ev[i], p->ev[i + 1]));
        int k = 0;
        while (k < nk && strcmp(names[k], p->kind[i]) != 0)
            k++;
        if (k == nk && nk < 64)
            names[nk] = p->kind[i], ms[nk++] = 0;
        if (k < nk)
            ms[k] += t;
        total += t;
    }
    for (int a = 0; a < nk; a++) /* largest first */
        for (int b = a + 1; b < nk; b++)
            if (ms[b] > ms[a]) {
                double t = ms[a];
                const char *s = names[a];
                ms[a] = ms[b], names[a] = names[b], ms[b] = t, names[b] = s;
            }
    fprintf(f, "profile: %.1f ms of GPU time between the marks\n", total);
    for (int k = 0; k < nk; k++)
        fprintf(f, "profile: %-28s %9.2f ms %5.1f%%\n", names[k], ms[k], total > 0 ? 100 * ms[k] / total : 0.0);
    p->n = 0;
    return KD_OK;
}

/* ---- context and memory ----------------------------------------------------------------------------- */

extern "C" int kd_cu_init(kd_cu *cu, int device)
{
    memset(cu, 0, sizeof *cu);
    cudaDeviceProp prop;
    CUDA_TRY(cudaSetDevice(device));
    CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    cu->device = device;
    cu->sms = prop.multiProcessorCount;
    cudaStream_t s;
    CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cu->stream = s;
    cublasLtHandle_t lt;
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) {
        kd_cu_free(cu);
        return kd_err(KD_E_CUDA, "cublasLtCreate failed");
    }
    cu->lt = lt;
    cu->ws_size = 64u << 20; /* cuBLAS asks for 32 MiB on Hopper; a little room */
    cu->plans = calloc(1, sizeof(plan_cache));
    cu->ring = calloc(1, sizeof(upload_ring));
    cudaError_t e = cudaMalloc(&cu->ws, cu->ws_size);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&cu->scratch, (size_t)KD_CU_SCRATCH * sizeof(float));
    if (e != cudaSuccess || !cu->plans || !cu->ring) {
        kd_cu_free(cu);
        return kd_err(KD_E_CUDA, "backend buffers: %s", cudaGetErrorString(e));
    }
    return KD_OK;
}

extern "C" void kd_cu_free(kd_cu *cu)
{
    if (!cu)
        return;
    plans_free((plan_cache *)cu->plans);
    ring_free((upload_ring *)cu->ring);
    if (cu->prof) {
        op_prof *p = (op_prof *)cu->prof;
        for (int i = 0; i < p->made; i++)
            cudaEventDestroy(p->ev[i]);
        free(p);
    }
    if (cu->lt)
        cublasLtDestroy((cublasLtHandle_t)cu->lt);
    cudaFree(cu->ws);
    cudaFree(cu->scratch);
    if (cu->stream)
        cudaStreamDestroy(STREAM(cu));
    memset(cu, 0, sizeof *cu);
}

extern "C" int kd_cu_sync(kd_cu *cu)
{
    CUDA_TRY(cudaStreamSynchronize(STREAM(cu)));
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

extern "C" int kd_cu_malloc(void **p, size_t bytes)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return kd_err(KD_E_NOMEM, "cudaMalloc of %.2f GiB: %s", (double)bytes / (1u << 30), cudaGetErrorString(e));
    }
    return KD_OK;
}

extern "C" void kd_cu_free_ptr(void *p) { cudaFree(p); }

extern "C" int kd_cu_upload(void *dst, const void *src, size_t bytes, kd_cu *cu)
{
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, STREAM(cu)));
    return kd_cu_sync(cu);
}

extern "C" int kd_cu_download(void *dst, const void *src, size_t bytes, kd_cu *cu)
{
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, STREAM(cu)));
    return kd_cu_sync(cu);
}

extern "C" int kd_cu_mem_info(size_t *used, size_t *total)
{
    size_t fr = 0, tot = 0;
    CUDA_TRY(cudaMemGetInfo(&fr, &tot));
    *used = tot - fr;
    *total = tot;
    return KD_OK;
}

extern "C" int kd_cu_memset0(void *p, size_t bytes, kd_cu *cu)
{
    CUDA_TRY(cudaMemsetAsync(p, 0, bytes, STREAM(cu)));
    return KD_OK;
}

extern "C" int kd_cu_f32_to_bf16(kd_bf16 *y, const float *x, int64_t n, kd_cu *cu)
{
    f32_to_bf16_kernel<<<blocks_for(n < (1 << 24) ? n : (1 << 24), 256), 256, 0, STREAM(cu)>>>((bf16 *)y, x, n);
    LAUNCH_TRY("f32_to_bf16");
    return KD_OK;
}

extern "C" int kd_cu_bf16_to_f32(float *y, const kd_bf16 *x, int64_t n, kd_cu *cu)
{
    bf16_to_f32_kernel<<<blocks_for(n < (1 << 24) ? n : (1 << 24), 256), 256, 0, STREAM(cu)>>>(y, (const bf16 *)x, n);
    LAUNCH_TRY("bf16_to_f32");
    return KD_OK;
}

/* ---- elementwise and row ops ------------------------------------------------------------------------ */

extern "C" int kd_cu_embedding_forward(kd_bf16 *out, const int32_t *ids, const kd_bf16 *wte, int64_t N, int64_t C,
                                       kd_cu *cu)
{
    if (N == 0)
        return KD_OK;
    embedding_fwd_kernel<<<(unsigned)N, 128, 0, STREAM(cu)>>>((bf162 *)out, ids, (const bf162 *)wte, C / 2);
    LAUNCH_TRY("embedding_fwd");
    return KD_OK;
}

extern "C" int kd_cu_embedding_backward(float *dwte, const kd_bf16 *dout, const int32_t *ids, int64_t N, int64_t C,
                                        kd_cu *cu)
{
    if (N == 0)
        return KD_OK;
    embedding_bwd_kernel<<<(unsigned)N, 256, 0, STREAM(cu)>>>(dwte, (const bf16 *)dout, ids, C);
    LAUNCH_TRY("embedding_bwd");
    return KD_OK;
}

extern "C" int kd_cu_rmsnorm_forward(kd_bf16 *out, float *rstd, kd_bf16 *res, const kd_bf16 *a, const kd_bf16 *b,
                                     const kd_bf16 *w, int64_t N, int64_t C, float eps, kd_cu *cu)
{
    if (C % 2)
        return kd_err(KD_E_CUDA, "rmsnorm: C = %lld is odd", (long long)C);
    if (N == 0)
        return KD_OK;
    rmsnorm_fwd_kernel<<<(unsigned)N, 256, 0, STREAM(cu)>>>((bf16 *)out, rstd, (bf16 *)res, (const bf16 *)a,
                                                            (const bf16 *)b, (const bf16 *)w, C, eps);
    LAUNCH_TRY("rmsnorm_fwd");
    return KD_OK;
}

extern "C" int kd_cu_rmsnorm_backward(kd_bf16 *dx, float *dw, const kd_bf16 *dres_in, const kd_bf16 *dout,
                                      const kd_bf16 *x, const kd_bf16 *w, const float *rstd, int64_t N, int64_t C,
                                      kd_cu *cu)
{
    if ((int64_t)NORM_PARTS * C > (int64_t)KD_CU_SCRATCH || C * 4 > 96 * 1024)
        return kd_err(KD_E_CUDA, "rmsnorm backward: C = %lld is too wide", (long long)C);
    if (N == 0)
        return KD_OK;
    size_t shm = (size_t)C * sizeof(float);
    if (shm > 48 * 1024)
        CUDA_TRY(cudaFuncSetAttribute(rmsnorm_bwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    rmsnorm_bwd_kernel<<<NORM_PARTS, 256, shm, STREAM(cu)>>>((bf16 *)dx, cu->scratch, (const bf16 *)dres_in,
                                                             (const bf16 *)dout, (const bf16 *)x, (const bf16 *)w,
                                                             rstd, N, C);
    LAUNCH_TRY("rmsnorm_bwd");
    sum_parts_kernel<<<blocks_for(C, 256), 256, 0, STREAM(cu)>>>(dw, cu->scratch, NORM_PARTS, C);
    LAUNCH_TRY("sum_parts");
    return KD_OK;
}

extern "C" int kd_cu_qkv_rope_forward(kd_bf16 *q, kd_bf16 *k, kd_bf16 *v, const kd_bf16 *qkv, const float *cos_,
                                      const float *sin_, const int32_t *pos, int64_t B, int64_t T, int64_t H,
                                      int64_t K, int64_t D, kd_cu *cu)
{
    int64_t N = B * T, n = N * (H + 2 * K) * (D / 2);
    if (n == 0)
        return KD_OK;
    qkv_rope_fwd_kernel<<<blocks_for(n, 256), 256, 0, STREAM(cu)>>>((bf16 *)q, (bf16 *)k, (bf16 *)v,
                                                                     (const bf16 *)qkv, cos_, sin_, pos, N, T,
                                                                     (int)H, (int)K, (int)D);
    LAUNCH_TRY("qkv_rope_fwd");
    return KD_OK;
}

extern "C" int kd_cu_qkv_rope_backward(kd_bf16 *dqkv, float *dqkv32, const float *dq, const float *dk, const float *dv,
                                       const float *cos_, const float *sin_, const int32_t *pos, int64_t B,
                                       int64_t T, int64_t H, int64_t K, int64_t D, kd_cu *cu)
{
    int64_t N = B * T, n = N * (H + 2 * K) * (D / 2);
    if (n == 0)
        return KD_OK;
    qkv_rope_bwd_kernel<<<blocks_for(n, 256), 256, 0, STREAM(cu)>>>((bf16 *)dqkv, dqkv32, dq, dk, dv, cos_, sin_,
                                                                     pos, N, T, (int)H, (int)K, (int)D);
    LAUNCH_TRY("qkv_rope_bwd");
    return KD_OK;
}

extern "C" int kd_cu_swiglu_forward(kd_bf16 *out, const kd_bf16 *gu, int64_t N, int64_t F, kd_cu *cu)
{
    if (N * F == 0)
        return KD_OK;
    if (F % 8 == 0 && ((uintptr_t)out | (uintptr_t)gu) % 16 == 0)
        swiglu_fwd_kernel<8><<<blocks_for(N * F / 8, 256), 256, 0, STREAM(cu)>>>((bf16 *)out, (const bf16 *)gu, N, F);
    else
        swiglu_fwd_kernel<1><<<blocks_for(N * F, 256), 256, 0, STREAM(cu)>>>((bf16 *)out, (const bf16 *)gu, N, F);
    LAUNCH_TRY("swiglu_fwd");
    return KD_OK;
}

extern "C" int kd_cu_swiglu_backward(kd_bf16 *dgu, const kd_bf16 *dout, const kd_bf16 *gu, int64_t N, int64_t F,
                                     kd_cu *cu)
{
    if (N * F == 0)
        return KD_OK;
    if (F % 8 == 0 && ((uintptr_t)dgu | (uintptr_t)dout | (uintptr_t)gu) % 16 == 0)
        swiglu_bwd_kernel<8><<<blocks_for(N * F / 8, 256), 256, 0, STREAM(cu)>>>((bf16 *)dgu, (const bf16 *)dout,
                                                                              (const bf16 *)gu, N, F);
    else
        swiglu_bwd_kernel<1><<<blocks_for(N * F, 256), 256, 0, STREAM(cu)>>>((bf16 *)dgu, (const bf16 *)dout,
                                                                          (const bf16 *)gu, N, F);
    LAUNCH_TRY("swiglu_bwd");
    return KD_OK;
}

/* ---- linear + cross-entropy ------------------------------------------------------------------------------
 * ws: the chunk's fp32 logits, then its bf16 dlogits, then its row losses. */
static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

extern "C" size_t kd_cu_xent_ws_bytes(int64_t chunk, int64_t V)
{
    return align256((size_t)chunk * V * sizeof(float)) + align256((size_t)chunk * V * sizeof(kd_bf16)) +
           (size_t)chunk * sizeof(float);
}

extern "C" int kd_cu_linear_xent(float *loss_sum, kd_bf16 *dx, float *dw, const kd_bf16 *x, const kd_bf16 *w,
                                 const int32_t *targets, int64_t N, int64_t C, int64_t V, float scale, int64_t chunk,
                                 void *ws, kd_cu *cu)
{
    float *logits = (float *)ws;
    bf16 *dlogits = (bf16 *)((char *)ws + align256((size_t)chunk * V * sizeof(float)));
    float *row_loss = (float *)((char *)dlogits + align256((size_t)chunk * V * sizeof(kd_bf16)));
    int grads = dx || dw;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        int64_t n = N - r0 < chunk ? N - r0 : chunk;
        const kd_bf16 *xc = x + r0 * C;
        KD_TRY(kd_cu_gemm(logits, 1, xc, 0, w, 1, NULL, n, V, C, 1.0f, 0.0f, cu));
        xent_rows_kernel<<<(unsigned)n, 512, 0, STREAM(cu)>>>(grads ? dlogits : NULL, row_loss, logits,
                                                              targets + r0, V, scale);
        LAUNCH_TRY("xent_rows");
        sum_rows_kernel<<<1, 1024, 0, STREAM(cu)>>>(loss_sum, row_loss, n);
        LAUNCH_TRY("sum_rows");
        if (dx)
            KD_TRY(kd_cu_gemm(dx + r0 * C, 0, (const kd_bf16 *)dlogits, 0, w, 0, NULL, n, C, V, 1.0f, 0.0f, cu));
        if (dw)
            KD_TRY(kd_cu_gemm(dw, 1, (const kd_bf16 *)dlogits, 1, xc, 0, NULL, V, C, n, 1.0f, 1.0f, cu));
    }
    return KD_OK;
}

/* ---- optimizer ----------------------------------------------------------------------------------------------- */

extern "C" size_t kd_cu_norm_ws_bytes(int64_t n)
{
    (void)n;
    return GNORM_PARTS * sizeof(double);
}

extern "C" int kd_cu_grad_norm2(float *out, const float *g, int64_t n, void *ws, kd_cu *cu)
{
    norm2_parts_kernel<<<GNORM_PARTS, 256, 0, STREAM(cu)>>>((double *)ws, g, n);
    LAUNCH_TRY("norm2_parts");
    norm2_final_kernel<<<1, 1024, 0, STREAM(cu)>>>(out, (const double *)ws);
    LAUNCH_TRY("norm2_final");
    return KD_OK;
}

extern "C" int kd_cu_adamw(float *p, kd_bf16 *p16, const float *g, float *m, float *v, const kd_cu_seg *segs_dev,
                           int nseg, int64_t n, float lr, float beta1, float beta2, float eps, int64_t step,
                           const float *norm2_dev, float max_norm, kd_cu *cu)
{
    if (step < 1 || nseg < 1)
        return kd_err(KD_E_CUDA, "adamw: step %lld, %d segments", (long long)step, nseg);
    /* the scalar algebra in double, as kd_adamw_update */
    double bc1 = 1.0 - pow((double)beta1, (double)step), bc2 = 1.0 - pow((double)beta2, (double)step);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    unsigned blocks = (unsigned)(cu->sms > 0 ? cu->sms * 8 : 1024);
    adamw_kernel<<<blocks, 256, 0, STREAM(cu)>>>(p, (bf16 *)p16, g, m, v, segs_dev, nseg, n, lr, beta1, beta2, eps,
                                                 step_size, bc2_sqrt, norm2_dev, max_norm);
    LAUNCH_TRY("adamw");
    return KD_OK;
}
