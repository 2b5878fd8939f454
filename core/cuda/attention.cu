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
 * Tiles: the forward and dQ blocks take 128 queries, 4 warps of 32 rows (two
 * m16 row blocks per warp, so each K/V fragment read from shared memory
 * feeds two MMAs), over key tiles of FC (forward) and QC (dQ) keys; 32 keep
 * the 128-dim kernels within 255 registers without spilling. The dK/dV block
 * takes 128 keys, 8 warps of 16, over 64-query steps. Head dim padded to DP
 * (16, 32, 64 or 128) with zeros. Fragment layouts are PTX's for m16n8k16: in
 * a C fragment lane l holds rows l/4 and l/4 + 8, columns 2(l%4) and +1 of
 * its n8 tile; two adjacent C tiles are exactly one A fragment, so P never
 * leaves registers. Blocks go head-major (blockIdx.x = b*H + h, the fastest
 * index), so the blocks resident together share K/V tiles in L2; the longest
 * query tiles start first, so the tail is short. Each step waits for its
 * cp.async tiles and syncs once, then prefetches the next into the other
 * buffer (which every warp finished with before that sync).
 *
 * The backward: one block per key tile accumulates dK and dV over the
 * queries (and the query heads of its kv group) that see it, in registers,
 * without atomics. dQ comes one of two ways (kd_cu.attn_two_pass). By
 * default the same block puts each step's dS in shared memory, and its 8
 * warps multiply it by the key tile and add the (64 x D) products into dq
 * with fp32 atomics, FlashAttention-2's way: 5 matmuls per score tile, but
 * the order of the adds, and so dq's last bits, vary from run to run. Two
 * passes: a second kernel per query tile recomputes S and dP and accumulates
 * dQ in registers: 7 matmuls, the same bits on every run. */
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


#define FW 4          /* warps of a forward or dQ block, 32 query rows each */
#define FR (FW * 32)  /* queries per forward or dQ block */
#define FC 32         /* keys per forward tile */
#define QC 32         /* keys per dQ tile */
#define KW 8          /* warps of a dK/dV block, 16 keys each */
#define KR (KW * 16)  /* keys per dK/dV block */
#define KC 64         /* queries per dK/dV step */
#define LN2 0.6931471805599453f

/* NR rows of a (B, T, NH, D) tensor, head hh, rows r0.., into smem [NR][ST]
 * with cp.async (16 bytes at a time, bypassing registers and L1); zeros past T
 * and past D. The caller commits and waits. */
template <int DP, int NR>
__device__ __forceinline__ void load_tile_async_(bf16 *s, const bf16 *g, int b, int r0, int hh, int T, int NH, int D)
{
    constexpr int ST = DP + 8, V8 = DP / 8;
    const int c = (threadIdx.x % V8) * 8, dr = blockDim.x / V8; /* blockDim.x is a multiple of V8 */
    int r = threadIdx.x / V8;
    const bf16 *src = g + (((int64_t)b * T + r0 + r) * NH + hh) * D + c;
    const int64_t step = (int64_t)dr * NH * D;
    /* not unrolled: this runs inside the key loops, where registers are short */
#pragma unroll 1
    for (; r < NR; r += dr, src += step) {
        bf16 *dst = s + r * ST + c;
        if (r0 + r < T && c < D) {
            /* inline, not cp16_: the address arithmetic stays in this loop as ptxas schedules it best */
            uint32_t a = (uint32_t)__cvta_generic_to_shared(dst);
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(src));
        } else {
            *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
}

/* ds(t): the start of t's document; past T a value that masks everything */
__device__ __forceinline__ int ds_(const int32_t *pos, int b, int t, int T)
{
    if (t >= T)
        return 0x3fffffff;
    return pos ? t - pos[(int64_t)b * T + t] : 0;
}

/* Row state of a lane in a 32-row warp of a query block: rows
 * w*32 + m*16 + l/4 + 8*hf (m, hf in 0..1), i.e. its C fragments' rows. */
__device__ __forceinline__ int row_(int w, int l, int m, int hf) { return w * 32 + m * 16 + (l >> 2) + hf * 8; }

/* ---- forward ------------------------------------------------------------------------ */

/* One key tile for a warp's 32 rows: S = Q K^T, the online softmax (running
 * max mx of the raw scores and sum ls per lane row) and O += P V. mask
 * applies the causal and document masks; without it every score counts.
 * scale_log2 > 0 (kd_cu_attention_forward checks), so the max of the raw
 * scores gives the max of the scaled ones: masking needs no else branch,
 * which as a branch cost registers. */
template <int DK, int DV>
__device__ __forceinline__ void fwd_tile_(float o[2][DV / 8][4], float mx[2][2], float ls[2][2], const bf16 *sQ,
                                          const bf16 *sK, const bf16 *sV, const int *sDs, int w, int l, int q0,
                                          int k0, float scale_log2, bool mask)
{
    constexpr int ST = DK + 8, SV = DV + 8; /* Q and K rows; V rows */
    const uint32_t uQ = su_(sQ), uK = su_(sK), uV = su_(sV);
    float s[2][FC / 8][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < FC / 8; n++)
            s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DK / 16; kk++) {
        uint32_t a0[4], a1[4];
        ldsm_(a0, a_at_(uQ, ST, w * 32, kk * 16, l));
        ldsm_(a1, a_at_(uQ, ST, w * 32 + 16, kk * 16, l));
#pragma unroll
        for (int np = 0; np < FC / 16; np++) {
            uint32_t bf[4];
            ldsm_(bf, bnk_at_(uK, ST, np * 16, kk * 16, l));
            mma_(s[0][2 * np], a0, bf[0], bf[1]);
            mma_(s[0][2 * np + 1], a0, bf[2], bf[3]);
            mma_(s[1][2 * np], a1, bf[0], bf[1]);
            mma_(s[1][2 * np + 1], a1, bf[2], bf[3]);
        }
    }
    if (mask)
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int n = 0; n < FC / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int col = k0 + n * 8 + (l & 3) * 2 + (e & 1), r = row_(w, l, m, e >> 1);
                    if (col > q0 + r || col < sDs[r])
                        s[m][n][e] = -INFINITY;
                }
    uint32_t pk[2][FC / 16][4]; /* P as A fragments: (m, 16-key chunk) */
#pragma unroll
    for (int m = 0; m < 2; m++) {
        float xa = -INFINITY, xb = -INFINITY;
#pragma unroll
        for (int n = 0; n < FC / 8; n++) {
            xa = fmaxf(xa, fmaxf(s[m][n][0], s[m][n][1]));
            xb = fmaxf(xb, fmaxf(s[m][n][2], s[m][n][3]));
        }
        xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 1));
        xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 2));
        xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 1));
        xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 2));
        const float na = fmaxf(mx[m][0], xa), nb = fmaxf(mx[m][1], xb);
        /* the new max in log2 units (0 while all is masked) */
        const float ua = na == -INFINITY ? 0.0f : na * scale_log2, ub = nb == -INFINITY ? 0.0f : nb * scale_log2;
        const float aa = ex2_(fmaf(mx[m][0], scale_log2, -ua)), ab = ex2_(fmaf(mx[m][1], scale_log2, -ub));
        float sa = 0.0f, sb = 0.0f;
#pragma unroll
        for (int n = 0; n < FC / 8; n++) {
            s[m][n][0] = ex2_(fmaf(s[m][n][0], scale_log2, -ua)), s[m][n][1] = ex2_(fmaf(s[m][n][1], scale_log2, -ua));
            s[m][n][2] = ex2_(fmaf(s[m][n][2], scale_log2, -ub)), s[m][n][3] = ex2_(fmaf(s[m][n][3], scale_log2, -ub));
            sa += s[m][n][0] + s[m][n][1];
            sb += s[m][n][2] + s[m][n][3];
        }
        ls[m][0] = ls[m][0] * aa + sa, ls[m][1] = ls[m][1] * ab + sb;
        mx[m][0] = na, mx[m][1] = nb;
#pragma unroll
        for (int d = 0; d < DV / 8; d++)
            o[m][d][0] *= aa, o[m][d][1] *= aa, o[m][d][2] *= ab, o[m][d][3] *= ab;
#pragma unroll
        for (int kk = 0; kk < FC / 16; kk++) {
            pk[m][kk][0] = pack_(s[m][2 * kk][0], s[m][2 * kk][1]);
            pk[m][kk][1] = pack_(s[m][2 * kk][2], s[m][2 * kk][3]);
            pk[m][kk][2] = pack_(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
            pk[m][kk][3] = pack_(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
        }
    }
#pragma unroll
    for (int kk = 0; kk < FC / 16; kk++)
#pragma unroll
        for (int dp = 0; dp < DV / 16; dp++) {
            uint32_t bf[4];
            ldsm_t_(bf, bkn_at_(uV, SV, kk * 16, dp * 16, l));
            mma_(o[0][2 * dp], pk[0][kk], bf[0], bf[1]);
            mma_(o[0][2 * dp + 1], pk[0][kk], bf[2], bf[3]);
            mma_(o[1][2 * dp], pk[1][kk], bf[0], bf[1]);
            mma_(o[1][2 * dp + 1], pk[1][kk], bf[2], bf[3]);
        }
}

template <int DK, int DV>
__global__ void __launch_bounds__(FW * 32, 2) attn_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                                             const bf16 *v, const int32_t *pos, int T, int H, int K,
                                                             int D, int Dv, float scale_log2)
{
    constexpr int ST = DK + 8, SV = DV + 8, KV = FC * (ST + SV); /* a K tile and a V tile */
    extern __shared__ __align__(16) unsigned char smem_[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem_), *sKV = sQ + FR * ST; /* then K0 V0 K1 V1 */
    __shared__ int sDs[FR];
    const int b = blockIdx.x / H, h = blockIdx.x % H, kh = h / (H / K);
    const int q0 = (gridDim.y - 1 - blockIdx.y) * FR; /* the last query tiles see the most keys */
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    load_tile_async_<DK, FR>(sQ, q, b, q0, h, T, H, D);
    for (int i = threadIdx.x; i < FR; i += blockDim.x)
        sDs[i] = ds_(pos, b, q0 + i, T);
    __syncthreads();
    const int kmax = min(q0 + FR - 1, T - 1), kfirst = (sDs[0] / FC) * FC; /* row 0 has the least ds */
    load_tile_async_<DK, FC>(sKV, k, b, kfirst, kh, T, K, D);
    load_tile_async_<DV, FC>(sKV + FC * ST, v, b, kfirst, kh, T, K, Dv);
    cp_commit_();
    /* the warp's rows: the first and last document starts bound the tiles it sees */
    const int wt0 = q0 + w * 32, wlo = sDs[w * 32], whi = sDs[w * 32 + 31];
    float o[2][DV / 8][4], mx[2][2], ls[2][2];
#pragma unroll
    for (int m = 0; m < 2; m++) {
#pragma unroll
        for (int d = 0; d < DV / 8; d++)
            o[m][d][0] = o[m][d][1] = o[m][d][2] = o[m][d][3] = 0.0f;
        mx[m][0] = mx[m][1] = -INFINITY, ls[m][0] = ls[m][1] = 0.0f;
    }
    for (int k0 = kfirst, it = 0; k0 <= kmax; k0 += FC, it++) {
        const bf16 *sK = sKV + (it & 1) * KV, *sV = sK + FC * ST;
        cp_wait_all_();
        __syncthreads(); /* tile it is in; every warp is done with tile it - 1 */
        if (k0 + FC <= kmax) {
            bf16 *nK = sKV + ((it + 1) & 1) * KV;
            load_tile_async_<DK, FC>(nK, k, b, k0 + FC, kh, T, K, D);
            load_tile_async_<DV, FC>(nK + FC * ST, v, b, k0 + FC, kh, T, K, Dv);
            cp_commit_();
        }
        if (k0 > wt0 + 31 || k0 + FC - 1 < wlo)
            continue; /* the tile is after the warp's rows or before their documents */
        /* a tile ending before the warp's first row and starting at or after the
         * document start of its last row is seen whole */
        fwd_tile_<DK, DV>(o, mx, ls, sQ, sK, sV, sDs, w, l, q0, k0, scale_log2,
                      !(k0 + FC - 1 <= wt0 && k0 >= whi && wt0 + 31 < T));
    }
    /* out through the warp's own rows of sQ (no other warp reads them), then
     * 16-byte stores along rows */
#pragma unroll
    for (int m = 0; m < 2; m++) {
        float la = ls[m][0], lb = ls[m][1];
        la += __shfl_xor_sync(0xffffffffu, la, 1);
        la += __shfl_xor_sync(0xffffffffu, la, 2);
        lb += __shfl_xor_sync(0xffffffffu, lb, 1);
        lb += __shfl_xor_sync(0xffffffffu, lb, 2);
        const float ia = la > 0.0f ? 1.0f / la : 0.0f, ib = lb > 0.0f ? 1.0f / lb : 0.0f;
        bf16 *ra = sQ + row_(w, l, m, 0) * ST, *rb = sQ + row_(w, l, m, 1) * ST;
#pragma unroll
        for (int d = 0; d < DV / 8; d++) {
            const int c = d * 8 + (l & 3) * 2;
            *reinterpret_cast<bf162 *>(ra + c) = __floats2bfloat162_rn(o[m][d][0] * ia, o[m][d][1] * ia);
            *reinterpret_cast<bf162 *>(rb + c) = __floats2bfloat162_rn(o[m][d][2] * ib, o[m][d][3] * ib);
        }
        if ((l & 3) == 0) {
            const int ta = q0 + row_(w, l, m, 0), tb = ta + 8;
            if (ta < T)
                lse[((int64_t)b * H + h) * T + ta] = (mx[m][0] * scale_log2 + log2f(la)) * LN2;
            if (tb < T)
                lse[((int64_t)b * H + h) * T + tb] = (mx[m][1] * scale_log2 + log2f(lb)) * LN2;
        }
    }
    __syncwarp();
    constexpr int V8 = DV / 8;
    for (int i = l; i < 32 * V8; i += 32) {
        const int r = i / V8, c = (i % V8) * 8, t = wt0 + r;
        if (t < T && c < Dv)
            *reinterpret_cast<uint4 *>(out + (((int64_t)b * T + t) * H + h) * Dv + c) =
                *reinterpret_cast<const uint4 *>(sQ + (w * 32 + r) * ST + c);
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
    const bf162 *a = reinterpret_cast<const bf162 *>(dout + row * D), *o = reinterpret_cast<const bf162 *>(out + row * D);
    float s = 0.0f;
    for (int c = l; c < D / 2; c += 32) { /* D is even */
        const float2 x = __bfloat1622float2(a[c]), y = __bfloat1622float2(o[c]);
        s += x.x * y.x + x.y * y.y;
    }
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

/* dQ: one block per 128 queries of one head, over the 32-key tiles the
 * forward visited: S and dP for the warp's 32 rows, dS = P (dP - delta),
 * dQ += dS K. */
template <int DP>
__global__ void __launch_bounds__(FW * 32, 2) attn_dq_kernel(float *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                                            const bf16 *v, const float *lse, const float *delta,
                                                            const int32_t *pos, int T, int H, int K, int D,
                                                            float scale, float scale_log2)
{
    constexpr int ST = DP + 8;
    extern __shared__ __align__(16) unsigned char smem_[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem_), *sO = sQ + FR * ST, *sKV = sO + FR * ST; /* then K0 V0 K1 V1 */
    __shared__ int sDs[FR];
    const int b = blockIdx.x / H, h = blockIdx.x % H, kh = h / (H / K);
    const int q0 = (gridDim.y - 1 - blockIdx.y) * FR;
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    load_tile_async_<DP, FR>(sQ, q, b, q0, h, T, H, D);
    load_tile_async_<DP, FR>(sO, dout, b, q0, h, T, H, D);
    for (int i = threadIdx.x; i < FR; i += blockDim.x)
        sDs[i] = ds_(pos, b, q0 + i, T);
    __syncthreads();
    const int kmax = min(q0 + FR - 1, T - 1), kfirst = (sDs[0] / QC) * QC;
    load_tile_async_<DP, QC>(sKV, k, b, kfirst, kh, T, K, D);
    load_tile_async_<DP, QC>(sKV + QC * ST, v, b, kfirst, kh, T, K, D);
    cp_commit_();
    const int wt0 = q0 + w * 32, wlo = sDs[w * 32], whi = sDs[w * 32 + 31];
    int tr[2][2], dr[2][2];
    float lr[2][2], dl[2][2]; /* lse in log2 units and delta of the lane's rows */
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int t = q0 + row_(w, l, m, hf);
            const int64_t i = ((int64_t)b * H + h) * T + t;
            tr[m][hf] = t, dr[m][hf] = sDs[row_(w, l, m, hf)];
            lr[m][hf] = t < T ? lse[i] * LOG2E : 0.0f;
            dl[m][hf] = t < T ? delta[i] : 0.0f;
        }
    float acc[2][DP / 8][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int d = 0; d < DP / 8; d++)
            acc[m][d][0] = acc[m][d][1] = acc[m][d][2] = acc[m][d][3] = 0.0f;
    for (int k0 = kfirst, it = 0; k0 <= kmax; k0 += QC, it++) {
        const bf16 *sK = sKV + (it & 1) * 2 * QC * ST, *sV = sK + QC * ST;
        cp_wait_all_();
        __syncthreads();
        if (k0 + QC <= kmax) {
            bf16 *nK = sKV + ((it + 1) & 1) * 2 * QC * ST;
            load_tile_async_<DP, QC>(nK, k, b, k0 + QC, kh, T, K, D);
            load_tile_async_<DP, QC>(nK + QC * ST, v, b, k0 + QC, kh, T, K, D);
            cp_commit_();
        }
        if (k0 > wt0 + 31 || k0 + QC - 1 < wlo)
            continue;
        const uint32_t uQ = su_(sQ), uO = su_(sO), uK = su_(sK), uV = su_(sV);
        float s[2][4][4], dp[2][4][4];
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int n = 0; n < 4; n++)
                s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = dp[m][n][0] = dp[m][n][1] = dp[m][n][2] =
                    dp[m][n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            uint32_t a0[4], a1[4], o0[4], o1[4];
            ldsm_(a0, a_at_(uQ, ST, w * 32, kk * 16, l));
            ldsm_(a1, a_at_(uQ, ST, w * 32 + 16, kk * 16, l));
            ldsm_(o0, a_at_(uO, ST, w * 32, kk * 16, l));
            ldsm_(o1, a_at_(uO, ST, w * 32 + 16, kk * 16, l));
#pragma unroll
            for (int np = 0; np < 2; np++) {
                uint32_t bk[4], bv[4];
                ldsm_(bk, bnk_at_(uK, ST, np * 16, kk * 16, l));
                ldsm_(bv, bnk_at_(uV, ST, np * 16, kk * 16, l));
                mma_(s[0][2 * np], a0, bk[0], bk[1]); /* S = Q K^T */
                mma_(s[0][2 * np + 1], a0, bk[2], bk[3]);
                mma_(s[1][2 * np], a1, bk[0], bk[1]);
                mma_(s[1][2 * np + 1], a1, bk[2], bk[3]);
                mma_(dp[0][2 * np], o0, bv[0], bv[1]); /* dP = dO V^T */
                mma_(dp[0][2 * np + 1], o0, bv[2], bv[3]);
                mma_(dp[1][2 * np], o1, bv[0], bv[1]);
                mma_(dp[1][2 * np + 1], o1, bv[2], bv[3]);
            }
        }
        const bool full = k0 + QC - 1 <= wt0 && k0 >= whi && wt0 + 31 < T;
        uint32_t sa[2][2][4]; /* dS as A fragments: (m, 16-key chunk) */
#pragma unroll
        for (int m = 0; m < 2; m++) {
#pragma unroll
            for (int n = 0; n < 4; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int col = k0 + n * 8 + (l & 3) * 2 + (e & 1), hf = e >> 1;
                    const float p = (full || (col <= tr[m][hf] && col >= dr[m][hf]))
                                        ? ex2_(fmaf(s[m][n][e], scale_log2, -lr[m][hf]))
                                        : 0.0f;
                    s[m][n][e] = p * (dp[m][n][e] - dl[m][hf]); /* dS */
                }
#pragma unroll
            for (int kk = 0; kk < QC / 16; kk++) {
                sa[m][kk][0] = pack_(s[m][2 * kk][0], s[m][2 * kk][1]);
                sa[m][kk][1] = pack_(s[m][2 * kk][2], s[m][2 * kk][3]);
                sa[m][kk][2] = pack_(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
                sa[m][kk][3] = pack_(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
            }
        }
#pragma unroll
        for (int kk = 0; kk < QC / 16; kk++)
#pragma unroll
            for (int dd = 0; dd < DP / 16; dd++) {
                uint32_t bf[4];
                ldsm_t_(bf, bkn_at_(uK, ST, kk * 16, dd * 16, l));
                mma_(acc[0][2 * dd], sa[0][kk], bf[0], bf[1]); /* dQ += dS K */
                mma_(acc[0][2 * dd + 1], sa[0][kk], bf[2], bf[3]);
                mma_(acc[1][2 * dd], sa[1][kk], bf[0], bf[1]);
                mma_(acc[1][2 * dd + 1], sa[1][kk], bf[2], bf[3]);
            }
    }
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int d = 0; d < DP / 8; d++) {
            const int c = d * 8 + (l & 3) * 2, ta = tr[m][0], tb = tr[m][1];
            if (c < D && ta < T)
                *reinterpret_cast<float2 *>(dq + (((int64_t)b * T + ta) * H + h) * D + c) =
                    make_float2(acc[m][d][0] * scale, acc[m][d][1] * scale);
            if (c < D && tb < T)
                *reinterpret_cast<float2 *>(dq + (((int64_t)b * T + tb) * H + h) * D + c) =
                    make_float2(acc[m][d][2] * scale, acc[m][d][3] * scale);
        }
}

/* One 64-query step of a dK/dV block for warp w's 16 keys (rows ka, kb of
 * this lane): S^T and dP^T, then P^T and dS^T, then dV += P^T dO and dK +=
 * dS^T Q. With FQ, dS also goes to sDS ([query][key], stride KR + 8) for
 * the block's dQ. */
template <int DP, bool FQ>
__device__ __forceinline__ void dkdv_step_(float ak[DP / 8][4], float av[DP / 8][4], bf16 *sDS, const bf16 *sQ,
                                           const bf16 *sO, const bf16 *sK, const bf16 *sV, const int *cP,
                                           const float *cL, const float *cD, int w, int l, int q0, int wk0, int ka,
                                           int kb, int T, float scale_log2)
{
    constexpr int ST = DP + 8, SS = KR + 8;
    /* the warp's keys are seen whole by the step's queries when every query
     * comes after its last key and every document starts at or before its first */
    const bool full = q0 >= wk0 + 15 && (q0 + KC - 1) - cP[KC - 1] <= wk0 && q0 + KC - 1 < T && wk0 + 15 < T;
    const uint32_t uQ = su_(sQ), uO = su_(sO), uK = su_(sK), uV = su_(sV);
    float st[8][4], dpt[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
        st[n][0] = st[n][1] = st[n][2] = st[n][3] = dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
        uint32_t kf[4], vf[4];
        ldsm_(kf, a_at_(uK, ST, w * 16, kk * 16, l));
        ldsm_(vf, a_at_(uV, ST, w * 16, kk * 16, l));
#pragma unroll
        for (int np = 0; np < 4; np++) {
            uint32_t bq[4], bo[4];
            ldsm_(bq, bnk_at_(uQ, ST, np * 16, kk * 16, l));
            ldsm_(bo, bnk_at_(uO, ST, np * 16, kk * 16, l));
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
            const float p = (full || (key <= t && key >= t - cP[c] && t < T))
                                ? ex2_(fmaf(st[n][e], scale_log2, -cL[c] * LOG2E))
                                : 0.0f;
            st[n][e] = p;                        /* P^T */
            dpt[n][e] = p * (dpt[n][e] - cD[c]); /* dS^T */
        }
    if (FQ) /* dS for the block's dQ, as the bf16 the dK product takes */
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                sDS[(n * 8 + (l & 3) * 2 + (e & 1)) * SS + w * 16 + (l >> 2) + (e >> 1) * 8] =
                    __float2bfloat16_rn(dpt[n][e]);
#pragma unroll
    for (int kk = 0; kk < KC / 16; kk++) {
        const uint32_t pa[4] = {pack_(st[2 * kk][0], st[2 * kk][1]), pack_(st[2 * kk][2], st[2 * kk][3]),
                                pack_(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                pack_(st[2 * kk + 1][2], st[2 * kk + 1][3])};
        const uint32_t sa[4] = {pack_(dpt[2 * kk][0], dpt[2 * kk][1]), pack_(dpt[2 * kk][2], dpt[2 * kk][3]),
                                pack_(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                pack_(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
        for (int dd = 0; dd < DP / 16; dd++) {
            uint32_t bo[4], bq[4];
            ldsm_t_(bo, bkn_at_(uO, ST, kk * 16, dd * 16, l));
            ldsm_t_(bq, bkn_at_(uQ, ST, kk * 16, dd * 16, l));
            mma_(av[2 * dd], pa, bo[0], bo[1]); /* dV += P^T dO */
            mma_(av[2 * dd + 1], pa, bo[2], bo[3]);
            mma_(ak[2 * dd], sa, bq[0], bq[1]); /* dK += dS^T Q */
            mma_(ak[2 * dd + 1], sa, bq[2], bq[3]);
        }
    }
}

/* FQ's dQ for one 64-query step: dQ (64 x D) += dS (64 x 128 keys) K, split
 * over the 8 warps as 4 blocks of 16 rows by 2 halves of the head dim, the
 * key chunks of warps whose keys met no query skipped; added into dq (fp32,
 * zeroed before the kernel) with atomics, so the sum's order varies. */
template <int DP>
__device__ __forceinline__ void dq_step_(float *dq, const bf16 *sDS, const bf16 *sK, const int *sAct, int w, int l,
                                         int b, int h, int q0, int T, int H, int D, float scale)
{
    constexpr int ST = DP + 8, SS = KR + 8, NP = DP >= 32 ? DP / 32 : 1;
    const int mr = w & 3, cb = (w >> 2) * NP * 16;
    if (cb >= DP || q0 + mr * 16 >= T)
        return;
    const uint32_t uS = su_(sDS), uK = su_(sK);
    float acc[2 * NP][4];
#pragma unroll
    for (int n = 0; n < 2 * NP; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    bool any = false;
#pragma unroll 1
    for (int kk = 0; kk < KW; kk++) {
        if (!sAct[kk])
            continue;
        any = true;
        uint32_t a[4];
        ldsm_(a, a_at_(uS, SS, mr * 16, kk * 16, l));
#pragma unroll
        for (int p = 0; p < NP; p++) {
            uint32_t bf[4];
            ldsm_t_(bf, bkn_at_(uK, ST, kk * 16, cb + p * 16, l));
            mma_(acc[2 * p], a, bf[0], bf[1]);
            mma_(acc[2 * p + 1], a, bf[2], bf[3]);
        }
    }
    if (!any)
        return;
    const int ta = q0 + mr * 16 + (l >> 2), tb = ta + 8;
#pragma unroll
    for (int n = 0; n < 2 * NP; n++) {
        const int c = cb + n * 8 + (l & 3) * 2;
        if (c >= D)
            continue;
        if (ta < T)
            atomicAdd(reinterpret_cast<float2 *>(dq + (((int64_t)b * T + ta) * H + h) * D + c),
                      make_float2(acc[n][0] * scale, acc[n][1] * scale));
        if (tb < T)
            atomicAdd(reinterpret_cast<float2 *>(dq + (((int64_t)b * T + tb) * H + h) * D + c),
                      make_float2(acc[n][2] * scale, acc[n][3] * scale));
    }
}

/* dK, dV: one block per 128 keys and one query head, over the 64-query steps
 * whose documents reach these keys. With GQA (G = H/K > 1) each block writes
 * its head's share to the workspace (fp32, (B, T, H, D)) and attn_gqa_sum
 * adds the G shares in order; a block per kv head doing all G would leave
 * too few, too unequal blocks. Scores are computed transposed (keys as
 * rows), so P^T and dS^T are A fragments. */
template <int DP, bool FQ>
__global__ void __launch_bounds__(KW * 32, 1) attn_dkdv_kernel(float *dk, float *dv, float *dq, const bf16 *dout,
                                                              const bf16 *q, const bf16 *k, const bf16 *v,
                                                              const float *lse, const float *delta,
                                                              const int32_t *pos, int T, int H, int K, int D,
                                                              float scale, float scale_log2)
{
    constexpr int ST = DP + 8;
    extern __shared__ __align__(16) unsigned char smem_[];
    bf16 *sK = reinterpret_cast<bf16 *>(smem_), *sV = sK + KR * ST, *sQO = sV + KR * ST; /* then Q0 O0 Q1 O1 */
    bf16 *sDS = sQO + 4 * KC * ST; /* FQ: the step's dS, [query][key], stride KR + 8 */
    __shared__ int sP[2][KC]; /* pos of the step's queries (their own t without pos) */
    __shared__ float sL[2][KC], sD[2][KC];
    __shared__ int sAct[KW]; /* FQ: whether warp w's keys met the step's queries */
    const int b = blockIdx.x / H, h = blockIdx.x % H, G = H / K, kh = h / G;
    const int k0 = blockIdx.y * KR; /* the first key tiles meet the most queries: they start first */
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    load_tile_async_<DP, KR>(sK, k, b, k0, kh, T, K, D);
    load_tile_async_<DP, KR>(sV, v, b, k0, kh, T, K, D);
    /* the query steps this key tile meets, a prefix of those from qfirst on: a
     * step is past the keys' reach once its first query starts its document
     * after them (ds never decreases) */
    const int qfirst = (k0 / KC) * KC, ntile = (T - qfirst + KC - 1) / KC;
    int steps = 0;
    for (int j0 = 0; j0 < ntile; j0 += blockDim.x) {
        const int j = j0 + threadIdx.x;
        const int c = __syncthreads_count(j < ntile && ds_(pos, b, qfirst + j * KC, T) <= k0 + KR - 1);
        steps += c;
        if (c < (int)blockDim.x)
            break;
    }
    /* stage step j's Q, dO and per-query values into buffer j & 1 (cp.async) */
    auto stage = [&](int j) {
        const int q0 = qfirst + j * KC, u = j & 1;
        load_tile_async_<DP, KC>(sQO + u * 2 * KC * ST, q, b, q0, h, T, H, D);
        load_tile_async_<DP, KC>(sQO + u * 2 * KC * ST + KC * ST, dout, b, q0, h, T, H, D);
        if (threadIdx.x < KC) {
            const int t = q0 + threadIdx.x;
            const int64_t i = ((int64_t)b * H + h) * T + t;
            if (t < T) {
                cp4_(&sL[u][threadIdx.x], lse + i);
                cp4_(&sD[u][threadIdx.x], delta + i);
                if (pos)
                    cp4_(&sP[u][threadIdx.x], pos + (int64_t)b * T + t);
                else
                    sP[u][threadIdx.x] = t;
            } else {
                sL[u][threadIdx.x] = sD[u][threadIdx.x] = 0.0f, sP[u][threadIdx.x] = 0;
            }
        }
        cp_commit_();
    };
    const int wk0 = k0 + w * 16, ka = wk0 + (l >> 2), kb = ka + 8; /* this lane's key rows */
    float ak[DP / 8][4], av[DP / 8][4];
#pragma unroll
    for (int d = 0; d < DP / 8; d++)
        ak[d][0] = ak[d][1] = ak[d][2] = ak[d][3] = av[d][0] = av[d][1] = av[d][2] = av[d][3] = 0.0f;
    if (steps > 0)
        stage(0);
    for (int j = 0; j < steps; j++) {
        const int q0 = qfirst + j * KC, u = j & 1;
        const bf16 *sQ = sQO + u * 2 * KC * ST, *sO = sQ + KC * ST;
        cp_wait_all_();
        __syncthreads(); /* step j is in; every warp is done with step j - 1's buffer */
        if (j + 1 < steps)
            stage(j + 1);
        const int *cP = sP[u];
        const float *cL = sL[u], *cD = sD[u];
        /* skip when every query comes before the warp's keys, or every document
         * starts after them (the first query's starts first) */
        const bool act = !(wk0 >= T || q0 + KC - 1 < wk0 || q0 - cP[0] > wk0 + 15);
        if (FQ) {
            if (l == 0)
                sAct[w] = act;
            if (act)
                dkdv_step_<DP, true>(ak, av, sDS, sQ, sO, sK, sV, cP, cL, cD, w, l, q0, wk0, ka, kb, T, scale_log2);
            __syncthreads(); /* every warp's dS is in sDS */
            dq_step_<DP>(dq, sDS, sK, sAct, w, l, b, h, q0, T, H, D, scale);
        } else if (act) {
            dkdv_step_<DP, false>(ak, av, sDS, sQ, sO, sK, sV, cP, cL, cD, w, l, q0, wk0, ka, kb, T, scale_log2);
        }
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


/* grid.y counts tiles of 128 (at most 65535); T <= 65535*64 leaves room for 64 */
static int check_(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D)
{
    if (D % 8 || D > 128 || D < 8 || K < 1 || H % K || T > 65535LL * 64 || B * H > 0x7fffffff)
        return kd_err(KD_E_CUDA, "attention: B %lld, T %lld, H %lld, K %lld, D %lld (need D a multiple of 8 up to "
                      "128, H a multiple of K, T up to %lld)", (long long)B, (long long)T, (long long)H, (long long)K,
                      (long long)D, 65535LL * 64);
    return KD_OK;
}

static int dp_(int64_t D) { return D <= 16 ? 16 : D <= 32 ? 32 : D <= 64 ? 64 : 128; }

/* the dynamic shared memory a kernel takes, and all of the SM's carveout for it */
template <typename F> static cudaError_t smem_attr_(F *f, size_t shm)
{
    cudaError_t e = cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    return e != cudaSuccess ? e : cudaFuncSetAttribute(f, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
}

template <int DK, int DV>
static int fwd_(kd_bf16 *out, float *lse, const kd_bf16 *q, const kd_bf16 *k, const kd_bf16 *v, const int32_t *pos,
                int B, int T, int H, int K, int D, int Dv, float scale, cudaStream_t s)
{
    /* Q, two K/V buffers */
    const size_t shm = ((size_t)(FR + 2 * FC) * (DK + 8) + (size_t)2 * FC * (DV + 8)) * sizeof(bf16);
    CUDA_TRY(smem_attr_(attn_fwd_kernel<DK, DV>, shm));
    dim3 grid(B * H, (T + FR - 1) / FR);
    attn_fwd_kernel<DK, DV><<<grid, FW * 32, shm, s>>>((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k,
                                                        (const bf16 *)v, pos, T, H, K, D, Dv, scale * LOG2E);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

template <int DP>
static int bwd_(float *dq, float *dk, float *dv, const kd_bf16 *dout, const kd_bf16 *q, const kd_bf16 *k,
                const kd_bf16 *v, const float *lse, const float *delta, const int32_t *pos, int B, int T, int H, int K,
                int D, float scale, float *part, int two_pass, cudaStream_t s)
{
    const size_t shq = (size_t)(2 * FR + 4 * QC) * (DP + 8) * sizeof(bf16); /* Q, dO, two K/V buffers */
    const size_t shk = (size_t)(2 * KR + 4 * KC) * (DP + 8) * sizeof(bf16); /* K, V, two Q/dO buffers */
    const size_t shf = shk + (size_t)KC * (KR + 8) * sizeof(bf16);          /* and dS */
    dim3 gq(B * H, (T + FR - 1) / FR), gk(B * H, (T + KR - 1) / KR);
    const int G = H / K;
    const int64_t n = (int64_t)B * T * H * D;
    float *ok = G > 1 ? part : dk, *ov = G > 1 ? part + n : dv;
    if (two_pass) {
        CUDA_TRY(smem_attr_(attn_dq_kernel<DP>, shq));
        CUDA_TRY(smem_attr_(attn_dkdv_kernel<DP, false>, shk));
        attn_dq_kernel<DP><<<gq, FW * 32, shq, s>>>(dq, (const bf16 *)dout, (const bf16 *)q, (const bf16 *)k,
                                                     (const bf16 *)v, lse, delta, pos, T, H, K, D, scale,
                                                     scale * LOG2E);
        CUDA_TRY(cudaGetLastError());
        attn_dkdv_kernel<DP, false><<<gk, KW * 32, shk, s>>>(ok, ov, NULL, (const bf16 *)dout, (const bf16 *)q,
                                                              (const bf16 *)k, (const bf16 *)v, lse, delta, pos, T,
                                                              H, K, D, scale, scale * LOG2E);
    } else {
        CUDA_TRY(smem_attr_(attn_dkdv_kernel<DP, true>, shf));
        CUDA_TRY(cudaMemsetAsync(dq, 0, (size_t)n * sizeof(float), s));
        attn_dkdv_kernel<DP, true><<<gk, KW * 32, shf, s>>>(ok, ov, dq, (const bf16 *)dout, (const bf16 *)q,
                                                             (const bf16 *)k, (const bf16 *)v, lse, delta, pos, T,
                                                             H, K, D, scale, scale * LOG2E);
    }
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
    return kd_cu_attention_forward_dv(out, lse, q, k, v, pos, B, T, H, K, D, D, scale, cu);
}

extern "C" int kd_cu_attention_forward_dv(kd_bf16 *out, float *lse, const kd_bf16 *q, const kd_bf16 *k,
                                          const kd_bf16 *v, const int32_t *pos, int64_t B, int64_t T, int64_t H,
                                          int64_t K, int64_t Dk, int64_t Dv, float scale, kd_cu *cu)
{
    /* MLA's decompressed form: q/k heads of up to 192 (nope + rope), values of up to 128 */
    const int mla = Dk != Dv;
    if (mla && (Dk % 8 || Dk > 192 || Dv % 8 || Dv < 8 || Dv > 128))
        return kd_err(KD_E_CUDA, "attention: q/k head dim %lld, v head dim %lld (need multiples of 8, at most 192 "
                      "and 128)", (long long)Dk, (long long)Dv);
    KD_TRY(check_(B, T, H, K, mla ? Dv : Dk));
    if (!(scale > 0.0f)) /* the forward's softmax takes the max of the unscaled scores */
        return kd_err(KD_E_CUDA, "attention: scale %g (need > 0)", (double)scale);
    if (B * T == 0)
        return KD_OK;
    cudaStream_t s = (cudaStream_t)cu->stream;
    const int b = (int)B, t = (int)T, h = (int)H, kk = (int)K, dk = (int)Dk, dv = (int)Dv;
    if (mla)
        return fwd_<192, 128>(out, lse, q, k, v, pos, b, t, h, kk, dk, dv, scale, s);
    switch (dp_(Dk)) {
    case 16: return fwd_<16, 16>(out, lse, q, k, v, pos, b, t, h, kk, dk, dv, scale, s);
    case 32: return fwd_<32, 32>(out, lse, q, k, v, pos, b, t, h, kk, dk, dv, scale, s);
    case 64: return fwd_<64, 64>(out, lse, q, k, v, pos, b, t, h, kk, dk, dv, scale, s);
    default: return fwd_<128, 128>(out, lse, q, k, v, pos, b, t, h, kk, dk, dv, scale, s);
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
    const int tp = cu->attn_two_pass;
    const int64_t rows = B * T * H;
    attn_delta_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, s>>>(delta, (const bf16 *)dout, (const bf16 *)out, (int)B,
                                                                  (int)T, (int)H, (int)D);
    CUDA_TRY(cudaGetLastError());
    switch (dp_(D)) {
    case 16: return bwd_<16>(dq, dk, dv, dout, q, k, v, lse, delta, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, part, tp, s);
    case 32: return bwd_<32>(dq, dk, dv, dout, q, k, v, lse, delta, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, part, tp, s);
    case 64: return bwd_<64>(dq, dk, dv, dout, q, k, v, lse, delta, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, part, tp, s);
    default: return bwd_<128>(dq, dk, dv, dout, q, k, v, lse, delta, pos, (int)B, (int)T, (int)H, (int)K, (int)D, scale, part, tp, s);
    }
}
