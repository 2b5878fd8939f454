/* attention.cu - causal grouped-query attention over packed rows, forward and
 * backward, FlashAttention-2 style, on the tensor cores (mma.sync m16n8k16
 * bf16 with fp32 accumulation). See kd_cu_attention_* in core/cuda/cuops.h;
 * the reference is kd_attention_forward/backward (core/cpu/ops.c).
 *
 * Why our own kernel and not cuDNN's fused SDPA: packed rows need a mask per
 * document. cuDNN 9.19 takes variable lengths per batch entry (ragged
 * offsets), which would mean re-laying out every packed row as one entry per
 * document, and its dedicated SDPA descriptors have no causal attribute in
 * the backward. A document mask is two compares per score here, and whole
 * key tiles outside every query's document are skipped, so a row of K
 * documents costs about 1/K of a causal row.
 *
 * Masking: the query at t sees key j iff ds(t) <= j <= t, with ds(t) =
 * t - pos[t] the start of its document (0 without pos). ds never decreases
 * along a row, which bounds the tiles each block visits.
 *
 * Tiles: 64 queries x 64 keys per step, 4 warps of 16 rows, head dim padded
 * to DP (16, 32, 64 or 128) with zeros. Fragment layouts are PTX's for
 * m16n8k16: in a C fragment lane l holds rows l/4 and l/4 + 8, columns
 * 2(l%4) and +1 of its n8 tile; two adjacent C tiles are exactly one A
 * fragment, so P never leaves registers.
 *
 * The backward is two kernels and no atomics (deterministic): one per key
 * tile accumulates dK and dV over the queries (and the query heads of its
 * kv group) that see it; one per query tile accumulates dQ. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

extern "C" {
#include "core/cuda/cuops.h"
#include "core/status.h"
}

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf162;

#define BR 64 /* queries per block */
#define BC 64 /* keys per tile */
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* ---- tensor-core helpers ---------------------------------------------------------- */

__device__ __forceinline__ uint32_t pack_(float a, float b)
{
    bf162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ void mma_(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_(uint32_t r[4], const bf16 *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm_t_(uint32_t r[4], const bf16 *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* Fragment addresses in a row-major smem tile of stride ST, for lane l:
 *   A (16 x 16 at row r0, col c0):               row r0 + l%16,               col c0 + (l/16)*8
 *   B pair from [n][k] storage (two n8, k16):     row n0 + l%8 + (l/16)*8,     col k0 + ((l/8)%2)*8
 *   B pair from [k][n] storage (.trans):          row k0 + l%8 + ((l/8)%2)*8,  col n0 + (l/16)*8
 * each giving regs {b0b1, b2b3} of the first n8 tile, then of the second. */
__device__ __forceinline__ const bf16 *a_at_(const bf16 *s, int st, int r0, int c0, int l)
{
    return s + (r0 + (l & 15)) * st + c0 + (l >> 4) * 8;
}
__device__ __forceinline__ const bf16 *bnk_at_(const bf16 *s, int st, int n0, int k0, int l)
{
    return s + (n0 + (l & 7) + (l >> 4) * 8) * st + k0 + ((l >> 3) & 1) * 8;
}
__device__ __forceinline__ const bf16 *bkn_at_(const bf16 *s, int st, int k0, int n0, int l)
{
    return s + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * st + n0 + (l >> 4) * 8;
}

/* 64 rows of a (B, T, NH, D) tensor, head hh, rows r0.., into smem [64][ST]
 * (zeros past T and past D). 128 threads. */
template <int DP>
__device__ __forceinline__ void load_tile_(bf16 *s, const bf16 *g, int b, int r0, int hh, int T, int NH, int D)
{
    constexpr int ST = DP + 8, V8 = DP / 8;
    for (int i = threadIdx.x; i < 64 * V8; i += blockDim.x) {
        int r = i / V8, c = (i % V8) * 8, t = r0 + r;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (t < T && c < D)
            v = *reinterpret_cast<const uint4 *>(g + (((int64_t)b * T + t) * NH + hh) * D + c);
        *reinterpret_cast<uint4 *>(s + r * ST + c) = v;
    }
}

/* The same with cp.async (16 bytes at a time, bypassing registers and L1),
 * for double buffering: the caller commits and waits. */
template <int DP>
__device__ __forceinline__ void load_tile_async_(bf16 *s, const bf16 *g, int b, int r0, int hh, int T, int NH, int D)
{
    constexpr int ST = DP + 8, V8 = DP / 8;
    for (int i = threadIdx.x; i < 64 * V8; i += blockDim.x) {
        int r = i / V8, c = (i % V8) * 8, t = r0 + r;
        bf16 *dst = s + r * ST + c;
        if (t < T && c < D) {
            uint32_t a = (uint32_t)__cvta_generic_to_shared(dst);
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a),
                         "l"(g + (((int64_t)b * T + t) * NH + hh) * D + c));
        } else {
            *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
}
__device__ __forceinline__ void cp_commit_() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait_() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/* ds(t): the start of t's document; past T a value that masks everything */
__device__ __forceinline__ int ds_(const int32_t *pos, int b, int t, int T)
{
    if (t >= T)
        return 0x3fffffff;
    return pos ? t - pos[(int64_t)b * T + t] : 0;
}

/* S = Q K^T for one warp's 16 rows against a 64-key tile: s[8][4] (C tiles). */
template <int DP>
__device__ __forceinline__ void qk_(float s[8][4], const uint32_t qf[DP / 16][4], const bf16 *sK, int l)
{
    constexpr int ST = DP + 8;
#pragma unroll
    for (int n = 0; n < 8; n++)
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++)
#pragma unroll
        for (int np = 0; np < 4; np++) {
            uint32_t bf[4];
            ldsm_(bf, bnk_at_(sK, ST, np * 16, kk * 16, l));
            mma_(s[2 * np], qf[kk], bf[0], bf[1]);
            mma_(s[2 * np + 1], qf[kk], bf[2], bf[3]);
        }
}

/* ---- forward ------------------------------------------------------------------------ */

template <int DP>
__global__ void __launch_bounds__(128) attn_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                                       const bf16 *v, const int32_t *pos, int T, int H, int K,
                                                       int D, float scale_log2)
{
    constexpr int ST = DP + 8;
    extern __shared__ __align__(16) unsigned char smem_[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem_), *sKV = sQ + BR * ST; /* then K0 V0 K1 V1 */
    __shared__ int sDs[BR];
    /* the last query tiles see the most keys: they start first, so the tail is short */
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BR, h = blockIdx.y, b = blockIdx.z, kh = h / (H / K);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    load_tile_<DP>(sQ, q, b, q0, h, T, H, D);
    if (threadIdx.x < BR)
        sDs[threadIdx.x] = ds_(pos, b, q0 + threadIdx.x, T);
    __syncthreads();
    const int kmin = sDs[0], kmax = min(q0 + BR - 1, T - 1); /* ds never decreases: row 0 has the least */
    const int kfirst = (kmin / BC) * BC;
    load_tile_async_<DP>(sKV, k, b, kfirst, kh, T, K, D);
    load_tile_async_<DP>(sKV + BC * ST, v, b, kfirst, kh, T, K, D);
    cp_commit_();
    /* a warp's rows see a whole tile, unmasked, when the tile ends before its first
     * row and starts at or after the document start of its last row */
    const int wt0 = q0 + w * 16, wds = sDs[w * 16 + 15];
    uint32_t qf[DP / 16][4];
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++)
        ldsm_(qf[kk], a_at_(sQ, ST, w * 16, kk * 16, l));
    const int ra = w * 16 + (l >> 2), ta = q0 + ra, tb = ta + 8, dsa = sDs[ra], dsb = sDs[ra + 8];
    float o[DP / 8][4];
#pragma unroll
    for (int d = 0; d < DP / 8; d++)
        o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f;
    for (int k0 = kfirst, it = 0; k0 <= kmax; k0 += BC, it++) {
        const bf16 *sK = sKV + (it & 1) * 2 * BC * ST, *sV = sK + BC * ST;
        if (k0 + BC <= kmax) { /* prefetch the next tile into the other buffer */
            bf16 *nK = sKV + ((it + 1) & 1) * 2 * BC * ST;
            load_tile_async_<DP>(nK, k, b, k0 + BC, kh, T, K, D);
            load_tile_async_<DP>(nK + BC * ST, v, b, k0 + BC, kh, T, K, D);
            cp_commit_();
            cp_wait_<1>();
        } else {
            cp_wait_<0>();
        }
        __syncthreads();
        float s[8][4];
        qk_<DP>(s, qf, sK, l);
        float xa = -INFINITY, xb = -INFINITY;
        if (k0 + BC - 1 <= wt0 && k0 >= wds && wt0 + 15 < T) {
#pragma unroll
            for (int n = 0; n < 8; n++) {
                s[n][0] *= scale_log2, s[n][1] *= scale_log2, s[n][2] *= scale_log2, s[n][3] *= scale_log2;
                xa = fmaxf(xa, fmaxf(s[n][0], s[n][1]));
                xb = fmaxf(xb, fmaxf(s[n][2], s[n][3]));
            }
        } else {
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int col = k0 + n * 8 + (l & 3) * 2 + (e & 1), t = e < 2 ? ta : tb, ds = e < 2 ? dsa : dsb;
                    const float x = (col <= t && col >= ds && t < T) ? s[n][e] * scale_log2 : -INFINITY;
                    s[n][e] = x;
                    if (e < 2)
                        xa = fmaxf(xa, x);
                    else
                        xb = fmaxf(xb, x);
                }
        }
        xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 1));
        xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 2));
        xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 1));
        xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 2));
        const float na = fmaxf(ma, xa), nb = fmaxf(mb, xb);
        const float ua = na == -INFINITY ? 0.0f : na, ub = nb == -INFINITY ? 0.0f : nb; /* all masked so far */
        const float aa = exp2f(ma - ua), ab = exp2f(mb - ub);
        float sa = 0.0f, sb = 0.0f;
#pragma unroll
        for (int n = 0; n < 8; n++) {
            s[n][0] = exp2f(s[n][0] - ua), s[n][1] = exp2f(s[n][1] - ua);
            s[n][2] = exp2f(s[n][2] - ub), s[n][3] = exp2f(s[n][3] - ub);
            sa += s[n][0] + s[n][1];
            sb += s[n][2] + s[n][3];
        }
        la = la * aa + sa;
        lb = lb * ab + sb;
        ma = na, mb = nb;
#pragma unroll
        for (int d = 0; d < DP / 8; d++)
            o[d][0] *= aa, o[d][1] *= aa, o[d][2] *= ab, o[d][3] *= ab;
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            const uint32_t pa[4] = {pack_(s[2 * kk][0], s[2 * kk][1]), pack_(s[2 * kk][2], s[2 * kk][3]),
                                    pack_(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dp = 0; dp < DP / 16; dp++) {
                uint32_t bf[4];
                ldsm_t_(bf, bkn_at_(sV, ST, kk * 16, dp * 16, l));
                mma_(o[2 * dp], pa, bf[0], bf[1]);
                mma_(o[2 * dp + 1], pa, bf[2], bf[3]);
            }
        }
        __syncthreads(); /* this buffer is consumed before the prefetch after next refills it */
    }
    la += __shfl_xor_sync(0xffffffffu, la, 1);
    la += __shfl_xor_sync(0xffffffffu, la, 2);
    lb += __shfl_xor_sync(0xffffffffu, lb, 1);
    lb += __shfl_xor_sync(0xffffffffu, lb, 2);
    const float ia = la > 0.0f ? 1.0f / la : 0.0f, ib = lb > 0.0f ? 1.0f / lb : 0.0f;
#pragma unroll
    for (int d = 0; d < DP / 8; d++) {
        const int c = d * 8 + (l & 3) * 2;
        if (c < D && ta < T)
            *reinterpret_cast<bf162 *>(out + (((int64_t)b * T + ta) * H + h) * D + c) =
                __floats2bfloat162_rn(o[d][0] * ia, o[d][1] * ia);
        if (c < D && tb < T)
            *reinterpret_cast<bf162 *>(out + (((int64_t)b * T + tb) * H + h) * D + c) =
                __floats2bfloat162_rn(o[d][2] * ib, o[d][3] * ib);
    }
    if ((l & 3) == 0) {
        if (ta < T)
            lse[((int64_t)b * H + h) * T + ta] = (ma + log2f(la)) * LN2;
        if (tb < T)
            lse[((int64_t)b * H + h) * T + tb] = (mb + log2f(lb)) * LN2;
    }
}

/* ---- backward ------------------------------------------------------------------------ */

/* delta (B, H, T) = rowsum(dO * O), one warp per row. */
__global__ void attn_delta_kernel(float *delta, const bf16 *dout, const bf16 *out, int B, int T, int H, int D)
{
    int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); /* (b, t, h) order */
    if (row >= (int64_t)B * T * H)
        return;
    const int l = threadIdx.x & 31;
    const bf16 *a = dout + row * D, *o = out + row * D;
    float s = 0.0f;
    for (int c = l; c < D; c += 32)
        s += __bfloat162float(a[c]) * __bfloat162float(o[c]);
    for (int x = 16; x > 0; x >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, x);
    if (l == 0) {
        const int h = (int)(row % H);
        const int64_t bt = row / H, b = bt / T, t = bt % T;
        delta[(b * H + h) * T + t] = s;
    }
}

/* dk (B, T, K, D) = the sum over g of part (B, T, H, D) at head kh*G + g, in order. */
__global__ void attn_gqa_sum_kernel(float *dk, const float *part, int64_t BT, int H, int K, int D)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= BT * K * D)
        return;
    const int G = H / K, d = (int)(i % D);
    const int64_t kh = (i / D) % K, bt = i / ((int64_t)D * K);
    const float *p = part + (bt * H + kh * G) * D + d;
    float s = 0.0f;
    for (int g = 0; g < G; g++)
        s += p[(int64_t)g * D];
    dk[i] = s;
}

/* dQ: one block per 64 queries of one head, over the key tiles the forward visited. */
template <int DP>
__global__ void __launch_bounds__(128) attn_dq_kernel(float *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                                      const bf16 *v, const float *lse, const float *delta,
                                                      const int32_t *pos, int T, int H, int K, int D, float scale,
                                                      float scale_log2)
{
    constexpr int ST = DP + 8;
    extern __shared__ __align__(16) unsigned char smem_[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem_), *sO = sQ + BR * ST, *sKV = sO + BR * ST; /* then K0 V0 K1 V1 */
    __shared__ int sDs[BR];
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BR, h = blockIdx.y, b = blockIdx.z, kh = h / (H / K);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    load_tile_<DP>(sQ, q, b, q0, h, T, H, D);
    load_tile_<DP>(sO, dout, b, q0, h, T, H, D);
    if (threadIdx.x < BR)
        sDs[threadIdx.x] = ds_(pos, b, q0 + threadIdx.x, T);
    __syncthreads();
    const int kmin = sDs[0], kmax = min(q0 + BR - 1, T - 1), kfirst = (kmin / BC) * BC;
    load_tile_async_<DP>(sKV, k, b, kfirst, kh, T, K, D);
    load_tile_async_<DP>(sKV + BC * ST, v, b, kfirst, kh, T, K, D);
    cp_commit_();
    const int wt0 = q0 + w * 16, wds = sDs[w * 16 + 15];
    uint32_t qf[DP / 16][4], of[DP / 16][4];
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
        ldsm_(qf[kk], a_at_(sQ, ST, w * 16, kk * 16, l));
        ldsm_(of[kk], a_at_(sO, ST, w * 16, kk * 16, l));
    }
    const int ra = w * 16 + (l >> 2), ta = q0 + ra, tb = ta + 8, dsa = sDs[ra], dsb = sDs[ra + 8];
    const int64_t ia = ((int64_t)b * H + h) * T + ta;
    const float la = ta < T ? lse[ia] * LOG2E : 0.0f, lb = tb < T ? lse[ia + 8] * LOG2E : 0.0f;
    const float da = ta < T ? delta[ia] : 0.0f, db = tb < T ? delta[ia + 8] : 0.0f;
    float acc[DP / 8][4];
#pragma unroll
    for (int d = 0; d < DP / 8; d++)
        acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
    for (int k0 = kfirst, it = 0; k0 <= kmax; k0 += BC, it++) {
        const bf16 *sK = sKV + (it & 1) * 2 * BC * ST, *sV = sK + BC * ST;
        if (k0 + BC <= kmax) {
            bf16 *nK = sKV + ((it + 1) & 1) * 2 * BC * ST;
            load_tile_async_<DP>(nK, k, b, k0 + BC, kh, T, K, D);
            load_tile_async_<DP>(nK + BC * ST, v, b, k0 + BC, kh, T, K, D);
            cp_commit_();
            cp_wait_<1>();
        } else {
            cp_wait_<0>();
        }
        __syncthreads();
        float s[8][4], dp[8][4];
        qk_<DP>(s, qf, sK, l); /* S */
        qk_<DP>(dp, of, sV, l); /* dP = dO V^T: the same product with dO for Q and V for K */
        const int full = k0 + BC - 1 <= wt0 && k0 >= wds && wt0 + 15 < T;
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int col = k0 + n * 8 + (l & 3) * 2 + (e & 1), t = e < 2 ? ta : tb, ds = e < 2 ? dsa : dsb;
                const float p = (full || (col <= t && col >= ds && t < T))
                                    ? exp2f(s[n][e] * scale_log2 - (e < 2 ? la : lb))
                                    : 0.0f;
                s[n][e] = p * (dp[n][e] - (e < 2 ? da : db)); /* dS */
            }
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            const uint32_t pa[4] = {pack_(s[2 * kk][0], s[2 * kk][1]), pack_(s[2 * kk][2], s[2 * kk][3]),
                                    pack_(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dd = 0; dd < DP / 16; dd++) {
                uint32_t bf[4];
                ldsm_t_(bf, bkn_at_(sK, ST, kk * 16, dd * 16, l));
                mma_(acc[2 * dd], pa, bf[0], bf[1]);
                mma_(acc[2 * dd + 1], pa, bf[2], bf[3]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int d = 0; d < DP / 8; d++) {
        const int c = d * 8 + (l & 3) * 2;
        if (c < D && ta < T)
            *reinterpret_cast<float2 *>(dq + (((int64_t)b * T + ta) * H + h) * D + c) =
                make_float2(acc[d][0] * scale, acc[d][1] * scale);
        if (c < D && tb < T)
            *reinterpret_cast<float2 *>(dq + (((int64_t)b * T + tb) * H + h) * D + c) =
                make_float2(acc[d][2] * scale, acc[d][3] * scale);
    }
}

/* dK, dV: one block per 64 keys and one query head, over the query tiles
 * whose documents reach these keys. With GQA (G = H/K > 1) each block writes
 * its head's share to the workspace (fp32, (B, T, H, D)) and attn_gqa_sum
 * adds the G shares in order; a block per kv head doing all G would leave
 * too few, too unequal blocks. Scores are computed transposed (keys as
 * rows), so P^T and dS^T are A fragments. */
template <int DP>
__global__ void __launch_bounds__(128) attn_dkdv_kernel(float *dk, float *dv, const bf16 *dout, const bf16 *q,
                                                        const bf16 *k, const bf16 *v, const float *lse,
                                                        const float *delta, const int32_t *pos, int T, int H, int K,
                                                        int D, float scale, float scale_log2)
{
    constexpr int ST = DP + 8;
    extern __shared__ __align__(16) unsigned char smem_[];
    bf16 *sK = reinterpret_cast<bf16 *>(smem_), *sV = sK + BC * ST, *sQO = sV + BC * ST; /* then Q0 O0 Q1 O1 */
    __shared__ int sDs[2][BR];
    __shared__ float sL[2][BR], sD[2][BR];
    const int k0 = blockIdx.x * BC, h = blockIdx.y, b = blockIdx.z, G = H / K, kh = h / G;
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    load_tile_<DP>(sK, k, b, k0, kh, T, K, D);
    load_tile_<DP>(sV, v, b, k0, kh, T, K, D);
    const int ka = k0 + w * 16 + (l >> 2), kb = ka + 8; /* this lane's key rows */
    float ak[DP / 8][4], av[DP / 8][4];
#pragma unroll
    for (int d = 0; d < DP / 8; d++)
        ak[d][0] = ak[d][1] = ak[d][2] = ak[d][3] = av[d][0] = av[d][1] = av[d][2] = av[d][3] = 0.0f;
    /* the (head, query tile) pairs this key tile meets, in order; a query tile is
     * past the keys' reach once its first query starts its document after them */
    const int qfirst = (k0 / BR) * BR;
    int nq = 0;
    while (qfirst + nq * BR < T && ds_(pos, b, qfirst + nq * BR, T) <= k0 + BC - 1)
        nq++;
    const int steps = nq;
    /* stage step j's Q, dO (cp.async) and its per-query values into buffer j & 1 */
    auto stage = [&](int j) {
        const int q0 = qfirst + j * BR, u = j & 1;
        load_tile_async_<DP>(sQO + u * 2 * BR * ST, q, b, q0, h, T, H, D);
        load_tile_async_<DP>(sQO + u * 2 * BR * ST + BR * ST, dout, b, q0, h, T, H, D);
        if (threadIdx.x < BR) {
            const int t = q0 + threadIdx.x;
            const int64_t i = ((int64_t)b * H + h) * T + t;
            sDs[u][threadIdx.x] = ds_(pos, b, t, T);
            sL[u][threadIdx.x] = t < T ? lse[i] * LOG2E : 0.0f;
            sD[u][threadIdx.x] = t < T ? delta[i] : 0.0f;
        }
        cp_commit_();
    };
    if (steps > 0)
        stage(0);
    for (int j = 0; j < steps; j++) {
        const int q0 = qfirst + j * BR, u = j & 1;
        const bf16 *sQ = sQO + u * 2 * BR * ST, *sO = sQ + BR * ST;
        if (j + 1 < steps) {
            stage(j + 1);
            cp_wait_<1>();
        } else {
            cp_wait_<0>();
        }
        __syncthreads();
        {
            const int *cDs = sDs[u];
            const float *cL = sL[u], *cD = sD[u];
            /* a warp's keys are seen whole by the tile's queries when every query comes
             * after its last key and every document starts at or before its first */
            const int wk0 = k0 + w * 16;
            const int full = q0 >= wk0 + 15 && cDs[BR - 1] <= wk0 && q0 + BR - 1 < T && wk0 + 15 < T;
            float st[8][4], dpt[8][4];
#pragma unroll
            for (int n = 0; n < 8; n++)
                st[n][0] = st[n][1] = st[n][2] = st[n][3] = dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < DP / 16; kk++) {
                uint32_t kf[4], vf[4];
                ldsm_(kf, a_at_(sK, ST, w * 16, kk * 16, l));
                ldsm_(vf, a_at_(sV, ST, w * 16, kk * 16, l));
#pragma unroll
                for (int np = 0; np < 4; np++) {
                    uint32_t bq[4], bo[4];
                    ldsm_(bq, bnk_at_(sQ, ST, np * 16, kk * 16, l));
                    ldsm_(bo, bnk_at_(sO, ST, np * 16, kk * 16, l));
                    mma_(st[2 * np], kf, bq[0], bq[1]); /* S^T = K Q^T */
                    mma_(st[2 * np + 1], kf, bq[2], bq[3]);
                    mma_(dpt[2 * np], vf, bo[0], bo[1]); /* dP^T = V dO^T */
                    mma_(dpt[2 * np + 1], vf, bo[2], bo[3]);
                }
            }
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int c = n * 8 + (l & 3) * 2 + (e & 1), t = q0 + c, key = e < 2 ? ka : kb;
                    const float p = (full || (key <= t && key >= cDs[c] && t < T && key < T))
                                        ? exp2f(st[n][e] * scale_log2 - cL[c])
                                        : 0.0f;
                    st[n][e] = p;                         /* P^T */
                    dpt[n][e] = p * (dpt[n][e] - cD[c]); /* dS^T */
                }
#pragma unroll
            for (int kk = 0; kk < BR / 16; kk++) {
                const uint32_t pa[4] = {pack_(st[2 * kk][0], st[2 * kk][1]), pack_(st[2 * kk][2], st[2 * kk][3]),
                                        pack_(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                        pack_(st[2 * kk + 1][2], st[2 * kk + 1][3])};
                const uint32_t sa[4] = {pack_(dpt[2 * kk][0], dpt[2 * kk][1]), pack_(dpt[2 * kk][2], dpt[2 * kk][3]),
                                        pack_(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                        pack_(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
                for (int dd = 0; dd < DP / 16; dd++) {
                    uint32_t bo[4], bq[4];
                    ldsm_t_(bo, bkn_at_(sO, ST, kk * 16, dd * 16, l));
                    ldsm_t_(bq, bkn_at_(sQ, ST, kk * 16, dd * 16, l));
                    mma_(av[2 * dd], pa, bo[0], bo[1]); /* dV += P^T dO */
                    mma_(av[2 * dd + 1], pa, bo[2], bo[3]);
                    mma_(ak[2 * dd], sa, bq[0], bq[1]); /* dK += dS^T Q */
                    mma_(ak[2 * dd + 1], sa, bq[2], bq[3]);
                }
            }
        }
        __syncthreads(); /* buffer u is consumed before step j + 2 refills it */
    }
#pragma unroll
    for (int d = 0; d < DP / 8; d++) {
        const int c = d * 8 + (l & 3) * 2;
        /* GQA: this head's share, in (B, T, H, D); else the result, in (B, T, K, D) */
        const int64_t NH = G > 1 ? H : K, hh = G > 1 ? h : kh;
        if (c < D && ka < T) {
            const int64_t o = (((int64_t)b * T + ka) * NH + hh) * D + c;
            *reinterpret_cast<float2 *>(dk + o) = make_float2(ak[d][0] * scale, ak[d][1] * scale);
            *reinterpret_cast<float2 *>(dv + o) = make_float2(av[d][0], av[d][1]);
        }
        if (c < D && kb < T) {
            const int64_t o = (((int64_t)b * T + kb) * NH + hh) * D + c;
            *reinterpret_cast<float2 *>(dk + o) = make_float2(ak[d][2] * scale, ak[d][3] * scale);
            *reinterpret_cast<float2 *>(dv + o) = make_float2(av[d][2], av[d][3]);
        }
    }
}

/* ==== launchers ======================================================================== */

#define CUDA_TRY(call)                                                                        \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess)                                                                \
            return kd_err(KD_E_CUDA, "%s failed: %s", #call, cudaGetErrorString(e_));         \
    } while (0)

static int check_(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D)
{
    if (D % 8 || D > 128 || D < 8 || K < 1 || H % K || T > 0x3fffffff || B > 65535 || H > 65535)
        return kd_err(KD_E_CUDA, "attention: B %lld, T %lld, H %lld, K %lld, D %lld (need D a multiple of 8 up to "
                      "128, H a multiple of K)", (long long)B, (long long)T, (long long)H, (long long)K, (long long)D);
    return KD_OK;
}

static int dp_(int64_t D) { return D <= 16 ? 16 : D <= 32 ? 32 : D <= 64 ? 64 : 128; }

template <int DP>
static int fwd_(kd_bf16 *out, float *lse, const kd_bf16 *q, const kd_bf16 *k, const kd_bf16 *v, const int32_t *pos,
                int B, int T, int H, int K, int D, float scale, cudaStream_t s)
{
    const size_t shm = (size_t)(BR + 4 * BC) * (DP + 8) * sizeof(bf16); /* Q, two K/V buffers */
    CUDA_TRY(cudaFuncSetAttribute(attn_fwd_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    dim3 grid((T + BR - 1) / BR, H, B);
    attn_fwd_kernel<DP><<<grid, 128, shm, s>>>((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k,
                                                (const bf16 *)v, pos, T, H, K, D, scale * LOG2E);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

template <int DP>
static int bwd_(float *dq, float *dk, float *dv, const kd_bf16 *dout, const kd_bf16 *q, const kd_bf16 *k,
                const kd_bf16 *v, const float *lse, const float *delta, const int32_t *pos, int B, int T, int H, int K,
                int D, float scale, float *part, cudaStream_t s)
{
    const size_t shm = (size_t)(2 * BR + 4 * BC) * (DP + 8) * sizeof(bf16); /* two tiles, two buffers of two */
    CUDA_TRY(cudaFuncSetAttribute(attn_dq_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    CUDA_TRY(cudaFuncSetAttribute(attn_dkdv_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    dim3 gq((T + BR - 1) / BR, H, B), gk((T + BC - 1) / BC, H, B);
    const int G = H / K;
    const int64_t n = (int64_t)B * T * H * D;
    attn_dq_kernel<DP><<<gq, 128, shm, s>>>(dq, (const bf16 *)dout, (const bf16 *)q, (const bf16 *)k,
                                             (const bf16 *)v, lse, delta, pos, T, H, K, D, scale, scale * LOG2E);
    CUDA_TRY(cudaGetLastError());
    attn_dkdv_kernel<DP><<<gk, 128, shm, s>>>(G > 1 ? part : dk, G > 1 ? part + n : dv, (const bf16 *)dout,
                                               (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, lse, delta, pos, T,
                                               H, K, D, scale, scale * LOG2E);
    CUDA_TRY(cudaGetLastError());
    if (G > 1) {
        const int64_t m = (int64_t)B * T * K * D;
        attn_gqa_sum_kernel<<<(unsigned)((m + 255) / 256), 256, 0, s>>>(dk, part, (int64_t)B * T, H, K, D);
        attn_gqa_sum_kernel<<<(unsigned)((m + 255) / 256), 256, 0, s>>>(dv, part + n, (int64_t)B * T, H, K, D);
        CUDA_TRY(cudaGetLastError());
    }
    return KD_OK;
}

extern "C" int kd_cu_attention_forward(kd_bf16 *out, float *lse, const kd_bf16 *q, const kd_bf16 *k,
                                       const kd_bf16 *v, const int32_t *pos, int64_t B, int64_t T, int64_t H,
                                       int64_t K, int64_t D, float scale, kd_cu *cu)
{
    KD_TRY(check_(B, T, H, K, D));
    if (B * T == 0)
        return KD_OK;
    cudaStream_t s = (cudaStream_t)cu->stream;
    switch (dp_(D)) {
    case 16: return fwd_<16>(out, lse, q, k, v, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, s);
    case 32: return fwd_<32>(out, lse, q, k, v, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, s);
    case 64: return fwd_<64>(out, lse, q, k, v, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, s);
    default: return fwd_<128>(out, lse, q, k, v, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, s);
    }
}

/* ws: delta (B, H, T), then with GQA the heads' shares of dK and dV (B, T, H, D) each */
static size_t delta_bytes_(int64_t B, int64_t T, int64_t H) { return ((size_t)(B * H * T) * sizeof(float) + 255) & ~(size_t)255; }

extern "C" size_t kd_cu_attention_ws_bytes(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D)
{
    return delta_bytes_(B, T, H) + (H > K ? 2 * (size_t)(B * T * H * D) * sizeof(float) : 0);
}

extern "C" int kd_cu_attention_backward(float *dq, float *dk, float *dv, const kd_bf16 *dout,
                                        const kd_bf16 *q, const kd_bf16 *k, const kd_bf16 *v, const kd_bf16 *out,
                                        const float *lse, const int32_t *pos, int64_t B, int64_t T, int64_t H,
                                        int64_t K, int64_t D, float scale, void *ws, kd_cu *cu)
{
    KD_TRY(check_(B, T, H, K, D));
    if (B * T == 0)
        return KD_OK;
    cudaStream_t s = (cudaStream_t)cu->stream;
    float *delta = (float *)ws, *part = (float *)((char *)ws + delta_bytes_(B, T, H));
    const int64_t rows = B * T * H;
    attn_delta_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, s>>>(delta, (const bf16 *)dout, (const bf16 *)out, (int)B,
                                                                  (int)T, (int)H, (int)D);
    CUDA_TRY(cudaGetLastError());
    switch (dp_(D)) {
    case 16: return bwd_<16>(dq, dk, dv, dout, q, k, v, lse, delta, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, part, s);
    case 32: return bwd_<32>(dq, dk, dv, dout, q, k, v, lse, delta, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, part, s);
    case 64: return bwd_<64>(dq, dk, dv, dout, q, k, v, lse, delta, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, part, s);
    default: return bwd_<128>(dq, dk, dv, dout, q, k, v, lse, delta, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, part, s);
    }
}
