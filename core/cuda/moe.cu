/* moe.cu - the MoE plumbing of the teacher on the GPU: the router's choice of
 * experts, the permutation of token rows by expert, and the weighted
 * un-permutation. See kd_cu_moe_* in core/cuda/cuops.h; the reference is
 * route_ and moe_ in teacher/model.c.
 *
 * Routing: one warp per token. The scores (sigmoid, or a softmax summed in
 * double) and the biased choice scores live in shared memory; lanes below G
 * score one group each, in the reference's order; the top-k is k rounds of a
 * warp arg-max with the reference's tie rule (the lower expert id), so the
 * experts chosen are the reference's wherever the scores are the same floats.
 *
 * Permutation: a stable counting sort on the device, with no host sync:
 * counts per expert (a warp per expert, ballots over the assignments), an
 * exclusive scan, then each expert's warp writes its assignments in order
 * (token, then rank), the order moe_ gathers them in. So expert e's rows are
 * slots off[e] .. off[e+1] of the permuted buffer, and src/dst map between
 * slots and assignments (t * k + r).
 *
 * Grouped GEMM: every expert's rows times its own weight in one launch,
 * sizes read on the device. A block takes 64 rows of one expert by 64
 * output features; grid.x is a bound on the row tiles (N*k/64 + E), and a
 * block finds its expert and tile by walking the experts' tile counts (the
 * blocks past the last tile exit). No host loop over experts, no sync, the
 * same launch whatever the routing: what a CUDA graph of a decode step
 * needs. Tiles go through shared memory to mma.sync (4 warps of 32 x 32). */
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <stdint.h>

extern "C" {
#include "core/cuda/cuops.h"
#include "core/status.h"
}
#include "core/cuda/cutry.h"
#include "core/cuda/mma.cuh"

#define RW 4 /* tokens (warps) per routing block */

/* a beats b: larger value, or equal and lower id (NaN never beats anything) */
__device__ __forceinline__ bool beats_(float v, int e, float bv, int be)
{
    return be < 0 || v > bv || (v == bv && e < be);
}

__global__ void moe_route_kernel(int32_t *idx, float *wt, const float *logits, const float *bias, int64_t N,
                                 kd_cu_route rc)
{
    extern __shared__ float sh_[];
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, E = rc.E, k = rc.k;
    const int64_t t = (int64_t)blockIdx.x * RW + w;
    float *score = sh_ + (size_t)w * 2 * E, *choice = score + E;
    unsigned char *taken = reinterpret_cast<unsigned char *>(sh_ + (size_t)RW * 2 * E) + (size_t)w * E;
    __shared__ float gs[RW][256];
    __shared__ int keep[RW][256];
    if (t >= N)
        return;
    const float *lg = logits + t * E;
    if (rc.sigmoid) {
        for (int e = l; e < E; e += 32)
            score[e] = 1.0f / (1.0f + expf(-lg[e]));
    } else {
        float mx = -INFINITY;
        for (int e = l; e < E; e += 32)
            mx = fmaxf(mx, lg[e]);
        for (int o = 16; o > 0; o >>= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        double sum = 0;
        for (int e = l; e < E; e += 32)
            sum += exp((double)lg[e] - mx);
        for (int o = 16; o > 0; o >>= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
        for (int e = l; e < E; e += 32)
            score[e] = (float)(exp((double)lg[e] - mx) / sum);
    }
    for (int e = l; e < E; e += 32) {
        choice[e] = score[e] + (bias ? bias[e] : 0.0f); /* the bias only chooses */
        taken[e] = 0;
    }
    __syncwarp();
    const int G = rc.G > 0 ? rc.G : 1, per = E / G;
    if (rc.method != KD_CU_TOPK_GREEDY && G > 1) {
        /* the group's score: V3 the sum of its top two biased scores, V2 its best */
        if (l < G) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int j = 0; j < per; j++) {
                const float v = choice[l * per + j];
                if (v > b1)
                    b2 = b1, b1 = v;
                else if (v > b2)
                    b2 = v;
            }
            gs[w][l] = rc.method == KD_CU_TOPK_NOAUX_TC ? b1 + b2 : b1;
            keep[w][l] = 0;
        }
        __syncwarp();
        if (l == 0)
            for (int r = 0; r < rc.topk_group && r < G; r++) {
                int best = -1;
                for (int g = 0; g < G; g++)
                    if (!keep[w][g] && (best < 0 || gs[w][g] > gs[w][best]))
                        best = g;
                keep[w][best] = 1;
            }
        __syncwarp();
        for (int e = l; e < E; e += 32)
            if (!keep[w][e / per])
                choice[e] = -INFINITY;
        __syncwarp();
    }
    /* top-k: k rounds of a warp arg-max over the experts not taken */
    float myw = 0.0f;
    int mye = -1;
    for (int r = 0; r < k; r++) {
        float bv = -INFINITY;
        int be = -1;
        for (int e = l; e < E; e += 32)
            if (!taken[e] && beats_(choice[e], e, bv, be))
                bv = choice[e], be = e;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oe = __shfl_xor_sync(0xffffffffu, be, o);
            if (oe >= 0 && beats_(ov, oe, bv, be))
                bv = ov, be = oe;
        }
        if (l == 0)
            taken[be] = 1;
        __syncwarp();
        if (l == r)
            mye = be, myw = score[be];
    }
    /* the weights, in the reference's order of float operations (lane 0 sums) */
    float s = 0.0f;
    for (int r = 0; r < k; r++)
        s += __shfl_sync(0xffffffffu, myw, r & 31);
    if (rc.v3) {
        if (rc.norm_topk_prob)
            myw /= s + 1e-20f;
        myw *= rc.scaling;
    } else if (k > 1 && rc.norm_topk_prob) {
        myw /= 1e-20f + s;
    } else {
        myw *= rc.scaling;
    }
    if (l < k) {
        idx[t * k + l] = mye;
        wt[t * k + l] = myw;
    }
}

/* A warp's passes over the NK assignments for expert e: how many there are,
 * and their slots from c on (src[slot] = assignment, dst its inverse), in order */
__device__ __forceinline__ int count_(const int32_t *idx, int64_t NK, int e, int l)
{
    int c = 0;
    for (int64_t a0 = 0; a0 < NK; a0 += 32) {
        const int64_t a = a0 + l;
        c += __popc(__ballot_sync(0xffffffffu, a < NK && idx[a] == e));
    }
    return c;
}

__device__ __forceinline__ void place_(int32_t *src, int32_t *dst, const int32_t *idx, int64_t NK, int e, int l, int c)
{
    for (int64_t a0 = 0; a0 < NK; a0 += 32) {
        const int64_t a = a0 + l;
        const bool m = a < NK && idx[a] == e;
        const unsigned b = __ballot_sync(0xffffffffu, m);
        if (m) {
            const int j = c + __popc(b & ((1u << l) - 1u));
            src[j] = (int32_t)a;
            dst[a] = j;
        }
        c += __popc(b);
    }
}

/* counts[e] = assignments to expert e; one warp per expert */
__global__ void moe_count_kernel(int32_t *counts, const int32_t *idx, int64_t NK, int E)
{
    const int e = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), l = threadIdx.x & 31;
    if (e >= E)
        return;
    const int c = count_(idx, NK, e, l);
    if (l == 0)
        counts[e] = c;
}

/* off[0..E] = the exclusive scan of counts (one block; E is small) */
__global__ void moe_scan_kernel(int32_t *off, const int32_t *counts, int E)
{
    if (threadIdx.x == 0) {
        int s = 0;
        for (int e = 0; e < E; e++) {
            off[e] = s;
            s += counts[e];
        }
        off[E] = s;
    }
}

/* src[off[e] + i] = the i-th assignment to e, in order; dst its inverse */
__global__ void moe_place_kernel(int32_t *src, int32_t *dst, const int32_t *off, const int32_t *idx, int64_t NK, int E)
{
    const int e = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), l = threadIdx.x & 31;
    if (e < E)
        place_(src, dst, idx, NK, e, l, off[e]);
}

/* The three above in one block of 1024 threads (decode: few assignments): one
 * launch, not three */
__global__ void __launch_bounds__(1024) moe_permute_one_kernel(int32_t *src, int32_t *dst, int32_t *off,
                                                                int32_t *counts, const int32_t *idx, int64_t NK, int E)
{
    __shared__ int32_t so[KD_CU_MOE_MAXE + 1];
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    for (int e = w; e < E; e += 32) {
        const int c = count_(idx, NK, e, l);
        if (l == 0)
            so[e] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int s = 0;
        for (int e = 0; e < E; e++) {
            const int c = so[e];
            counts[e] = c, off[e] = s, so[e] = s;
            s += c;
        }
        off[E] = s;
    }
    __syncthreads();
    for (int e = w; e < E; e += 32)
        place_(src, dst, idx, NK, e, l, so[e]);
}

/* xin[j] = x[src[j] / k], one block per slot, 16 bytes at a time where C allows */
__global__ void moe_gather_kernel(bf16 *xin, const bf16 *x, const int32_t *src, int k, int64_t C)
{
    const int64_t j = blockIdx.x, t = src[j] / k;
    if (C % 8 == 0) {
        const uint4 *s = reinterpret_cast<const uint4 *>(x + t * C);
        uint4 *d = reinterpret_cast<uint4 *>(xin + j * C);
        for (int64_t i = threadIdx.x; i < C / 8; i += blockDim.x)
            d[i] = s[i];
    } else {
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
            xin[j * C + i] = x[t * C + i];
    }
}

/* out[t] = bf16(sum of wt[a] y[dst[a]] over token t's assignments, in
 * ascending expert order (moe_'s order), accumulated in fp32 from zero, + add[t]
 * if given); grid (tokens, C / 256) */
__global__ void moe_combine_kernel(bf16 *out, const bf16 *y, const int32_t *dst, const int32_t *idx, const float *wt,
                                   const bf16 *add, int k, int64_t C)
{
    const int64_t t = blockIdx.x, i = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    __shared__ int32_t rows[KD_CU_MOE_MAXK];
    __shared__ float w[KD_CU_MOE_MAXK];
    if (threadIdx.x == 0) { /* insertion sort of the k assignments by expert */
        int ord[KD_CU_MOE_MAXK];
        for (int r = 0; r < k; r++) {
            ord[r] = r;
            for (int q = r; q > 0 && idx[t * k + ord[q - 1]] > idx[t * k + ord[q]]; q--) {
                const int tmp = ord[q];
                ord[q] = ord[q - 1];
                ord[q - 1] = tmp;
            }
        }
        for (int r = 0; r < k; r++)
            rows[r] = dst[t * k + ord[r]], w[r] = wt[t * k + ord[r]];
    }
    __syncthreads();
    if (i >= C)
        return;
    float acc = 0.0f;
    for (int r = 0; r < k; r++)
        acc += w[r] * __bfloat162float(y[(int64_t)rows[r] * C + i]);
    if (add)
        acc += __bfloat162float(add[t * C + i]);
    out[t * C + i] = __float2bfloat16_rn(acc);
}

#define GM 64 /* rows per grouped-GEMM tile */
#define GN 64 /* output features per tile */
#define GK 32 /* k per step */

__global__ void __launch_bounds__(128) moe_gemm_kernel(bf16 *y, const bf16 *x, const bf16 *w, const int32_t *off,
                                                       int E, int64_t N, int64_t K)
{
    __shared__ __align__(16) bf16 sX[GM][GK + 8], sW[GN][GK + 8];
    __shared__ int s_e, s_r0, s_cnt;
    if (threadIdx.x == 0) {
        int t = (int)blockIdx.x, found = -1;
        for (int e = 0; e < E; e++) {
            const int nt = (off[e + 1] - off[e] + GM - 1) / GM;
            if (t < nt) {
                found = e;
                break;
            }
            t -= nt;
        }
        s_e = found;
        s_r0 = found >= 0 ? off[found] + t * GM : 0;
        s_cnt = found >= 0 ? min(GM, off[found + 1] - s_r0) : 0;
    }
    __syncthreads();
    const int e = s_e;
    if (e < 0)
        return;
    const int r0 = s_r0, cnt = s_cnt, wi = threadIdx.x >> 5, l = threadIdx.x & 31;
    const int wm = (wi & 1) * 32, wn = (wi >> 1) * 32;
    const int64_t n0 = (int64_t)blockIdx.y * GN;
    const bf16 *we = w + (int64_t)e * N * K;
    float acc[2][4][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < 4; n++)
            acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += GK) {
        for (int i = threadIdx.x; i < GM * (GK / 8); i += blockDim.x) {
            const int r = i / (GK / 8), c = (i % (GK / 8)) * 8;
            uint4 v = make_uint4(0, 0, 0, 0), u = make_uint4(0, 0, 0, 0);
            if (r < cnt && k0 + c < K)
                v = *reinterpret_cast<const uint4 *>(x + (int64_t)(r0 + r) * K + k0 + c);
            if (n0 + r < N && k0 + c < K)
                u = *reinterpret_cast<const uint4 *>(we + (n0 + r) * K + k0 + c);
            *reinterpret_cast<uint4 *>(&sX[r][c]) = v;
            *reinterpret_cast<uint4 *>(&sW[r][c]) = u;
        }
        __syncthreads();
        const uint32_t uX = su_(&sX[0][0]), uW = su_(&sW[0][0]);
#pragma unroll
        for (int kk = 0; kk < GK / 16; kk++) {
            uint32_t a0[4], a1[4];
            ldsm_(a0, a_at_(uX, GK + 8, wm, kk * 16, l));
            ldsm_(a1, a_at_(uX, GK + 8, wm + 16, kk * 16, l));
#pragma unroll
            for (int np = 0; np < 2; np++) {
                uint32_t b[4];
                ldsm_(b, bnk_at_(uW, GK + 8, wn + np * 16, kk * 16, l));
                mma_(acc[0][2 * np], a0, b[0], b[1]);
                mma_(acc[0][2 * np + 1], a0, b[2], b[3]);
                mma_(acc[1][2 * np], a1, b[0], b[1]);
                mma_(acc[1][2 * np + 1], a1, b[2], b[3]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < 4; n++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int r = wm + m * 16 + (l >> 2) + hf * 8;
                const int64_t c = n0 + wn + n * 8 + (l & 3) * 2;
                if (r >= cnt)
                    continue;
                bf16 *dst = y + (int64_t)(r0 + r) * N + c;
                if (c < N)
                    dst[0] = __float2bfloat16_rn(acc[m][n][2 * hf]);
                if (c + 1 < N)
                    dst[1] = __float2bfloat16_rn(acc[m][n][2 * hf + 1]);
            }
}


/* ---- the grouped GEMM for few rows per expert (decode) ------------------------------------------
 * Bandwidth-bound: each expert's weight is read once per 32 of its rows, and
 * an expert without rows is not read at all. A block takes one expert and 128
 * output features; warp w computes features 16w .. 16w + 15 for up to 32 rows
 * as D^T = W x^T (the weight as mma's A operand, the rows as B, so a few rows
 * waste little). Weight and row tiles of 64 k stream through a 4-stage
 * cp.async pipeline. */
#define SF 128 /* features per block */
#define SR 32  /* rows per pass */
#define SK 64  /* k per stage */
#define SS 4   /* stages */
#define SST (SK + 8)

template <int N_> __device__ __forceinline__ void cp_wait_() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N_)); }

/* A warp's sums to y: acc[j] holds features f0 + l/4 and + 8 (f0 the warp's first of its 16) of rows
 * row0 + 8j + 2(l%4) and + 1; rows past `rows` or features past N are not written. */
__device__ __forceinline__ void store_rows_(bf16 *y, const float (*acc)[4], int64_t f0, int l, int rows, int64_t row0,
                                            int64_t N)
{
#pragma unroll
    for (int j = 0; j < SR / 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int64_t f = f0 + (l >> 2) + (q >> 1) * 8;
            const int t = j * 8 + (l & 3) * 2 + (q & 1);
            if (t < rows && f < N)
                y[(row0 + t) * N + f] = __float2bfloat16_rn(acc[j][q]);
        }
}

__global__ void __launch_bounds__(256) moe_gemm_rows_kernel(bf16 *y, const bf16 *x, const bf16 *w,
                                                            const int32_t *off, int64_t N, int64_t K)
{
    extern __shared__ __align__(16) unsigned char smem_[];
    bf16 *sW = reinterpret_cast<bf16 *>(smem_), *sX = sW + SS * SF * SST; /* [SS][SF][SST] weights, [SS][SR][SST] rows */
    const int e = blockIdx.x, wi = threadIdx.x >> 5, l = threadIdx.x & 31;
    const int base = off[e], cnt = off[e + 1] - base;
    if (cnt <= 0)
        return;
    const int64_t n0 = (int64_t)blockIdx.y * SF;
    const bf16 *we = w + (int64_t)e * N * K;
    const int nk = (int)((K + SK - 1) / SK);
    for (int r0 = 0; r0 < cnt; r0 += SR) {
        const int rows = min(SR, cnt - r0);
        auto load = [&](int st, int kt) {
            const int64_t k0 = (int64_t)kt * SK;
            bf16 *dW = sW + st * SF * SST;
            for (int i = threadIdx.x; i < SF * (SK / 8); i += 256) {
                const int r = i / (SK / 8), c = (i % (SK / 8)) * 8;
                if (n0 + r < N && k0 + c < K)
                    cp16_(dW + r * SST + c, we + (n0 + r) * K + k0 + c);
                else
                    *reinterpret_cast<uint4 *>(dW + r * SST + c) = make_uint4(0, 0, 0, 0);
            }
            bf16 *dX = sX + st * SR * SST;
            for (int i = threadIdx.x; i < SR * (SK / 8); i += 256) {
                const int r = i / (SK / 8), c = (i % (SK / 8)) * 8;
                if (r < rows && k0 + c < K)
                    cp16_(dX + r * SST + c, x + (int64_t)(base + r0 + r) * K + k0 + c);
                else
                    *reinterpret_cast<uint4 *>(dX + r * SST + c) = make_uint4(0, 0, 0, 0);
            }
        };
        float acc[SR / 8][4];
#pragma unroll
        for (int j = 0; j < SR / 8; j++)
            acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
        for (int st = 0; st < SS - 1; st++) {
            if (st < nk)
                load(st, st);
            cp_commit_();
        }
        for (int kt = 0; kt < nk; kt++) {
            cp_wait_<SS - 2>();
            __syncthreads();
            if (kt + SS - 1 < nk)
                load((kt + SS - 1) % SS, kt + SS - 1);
            cp_commit_();
            const int st = kt % SS;
            const uint32_t uW = su_(sW + st * SF * SST), uX = su_(sX + st * SR * SST);
#pragma unroll
            for (int kk = 0; kk < SK / 16; kk++) {
                uint32_t a[4];
                ldsm_(a, a_at_(uW, SST, wi * 16, kk * 16, l));
#pragma unroll
                for (int jp = 0; jp < SR / 16; jp++) {
                    uint32_t b[4];
                    ldsm_(b, bnk_at_(uX, SST, jp * 16, kk * 16, l));
                    mma_(acc[2 * jp], a, b[0], b[1]);
                    mma_(acc[2 * jp + 1], a, b[2], b[3]);
                }
            }
        }
        cp_wait_all_();
        __syncthreads();
        store_rows_(y, acc, n0 + wi * 16, l, rows, base + r0, N);
    }
}

/* ---- the same with no shared memory (path 3) --------------------------------------------------
 * The rows kernel's blocks (an expert, 128 features, 32 rows a pass), but
 * each warp streams its 16 weight rows from global memory straight into
 * registers, 32 x GB k a stage, one stage ahead, and reads the rows' fragments
 * from global memory too (through L1: the block's eight warps read the same
 * rows). The k order within each 32 is permuted alike for both operands (a
 * product sums over k in any order): lane l (q = l % 4) loads the 16 bytes at
 * k 8q of weight rows l/4 and l/4 + 8, its A fragments (a0 a2, a1 a3) of two
 * m16n8k16 steps, and the 16 bytes at k 8q of row l/4 of the rows, its B
 * fragments of the same two steps. K % (32 GB) == 0, N % 16 == 0. It takes
 * 238 registers (one block an SM); at GB 2 and two blocks an SM (128) it
 * was slower (H100, 2026-12-08: 2,758 against 2,951 GB/s at 384 rows). */
#define GB 4 /* 32-k blocks per stage */
__device__ __forceinline__ uint4 ld_stream_(const void *p) /* read once: not kept in L1 */
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* a stage's weight fragments, [block][rows l/4, l/4 + 8], from p0 (row l/4) and p1 (row l/4 + 8) */
__device__ __forceinline__ void frag_load_(uint4 (*a)[2], const bf16 *p0, const bf16 *p1)
{
#pragma unroll
    for (int b = 0; b < GB; b++) {
        a[b][0] = ld_stream_(p0 + 32 * b);
        a[b][1] = ld_stream_(p1 + 32 * b);
    }
}

/* a stage's MMAs: the rows' B fragments from xr[j] (row l/4 of the j-th 8), n8 tiles j < nt */
__device__ __forceinline__ void frag_mma_(float (*acc)[4], const uint4 (*a)[2], const bf16 *const *xr, int nt)
{
#pragma unroll
    for (int b = 0; b < GB; b++) {
        const uint32_t lo[4] = {a[b][0].x, a[b][1].x, a[b][0].y, a[b][1].y};
        const uint32_t hi[4] = {a[b][0].z, a[b][1].z, a[b][0].w, a[b][1].w};
#pragma unroll
        for (int j = 0; j < SR / 8; j++)
            if (j < nt) {
                const uint4 xb = __ldg(reinterpret_cast<const uint4 *>(xr[j] + 32 * b));
                mma_(acc[j], lo, xb.x, xb.y);
                mma_(acc[j], hi, xb.z, xb.w);
            }
    }
}

__global__ void __launch_bounds__(256, 1) moe_gemm_frag_kernel(bf16 *y, const bf16 *x, const bf16 *w,
                                                               const int32_t *off, int64_t N, int64_t K)
{
    const int e = blockIdx.x, wi = threadIdx.x >> 5, l = threadIdx.x & 31;
    const int base = off[e], cnt = off[e + 1] - base;
    const int64_t f0 = (int64_t)blockIdx.y * SF + wi * 16;
    if (cnt <= 0 || f0 >= N)
        return;
    const bf16 *w0 = w + ((int64_t)e * N + f0 + (l >> 2)) * K + 8 * (l & 3);
    const int ks = 32 * GB, ns = (int)(K / ks);
    for (int r0 = 0; r0 < cnt; r0 += SR) {
        const int rows = min(SR, cnt - r0), nt = (rows + 7) >> 3;
        const bf16 *xr[SR / 8]; /* row l/4 of each 8 rows, the last row standing in past `rows` */
#pragma unroll
        for (int j = 0; j < SR / 8; j++)
            xr[j] = x + (int64_t)(base + r0 + min(8 * j + (l >> 2), rows - 1)) * K + 8 * (l & 3);
        float acc[SR / 8][4];
#pragma unroll
        for (int j = 0; j < SR / 8; j++)
            acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
        const bf16 *p0 = w0, *p1 = w0 + 8 * K;
        uint4 a0[GB][2], a1[GB][2];
        frag_load_(a0, p0, p1);
        for (int s = 0; s < ns; s += 2) { /* two stages a turn: the buffers stay in registers */
            if (s + 1 < ns)
                frag_load_(a1, p0 + ks, p1 + ks);
            frag_mma_(acc, a0, xr, nt);
#pragma unroll
            for (int j = 0; j < SR / 8; j++)
                xr[j] += ks;
            if (s + 1 < ns) {
                if (s + 2 < ns)
                    frag_load_(a0, p0 + 2 * ks, p1 + 2 * ks);
                frag_mma_(acc, a1, xr, nt);
#pragma unroll
                for (int j = 0; j < SR / 8; j++)
                    xr[j] += ks;
            }
            p0 += 2 * ks, p1 += 2 * ks;
        }
        store_rows_(y, acc, f0, l, rows, base + r0, N);
    }
}

/* ---- the same on FP8 (W8A8), DeepSeek-V3's recipe -----------------------------------------------
 * Weights e4m3 with one fp32 scale per 128 x 128 block (weight_scale_inv: w =
 * w8 * scale), (E, ceil(N/128), ceil(K/128)) scales; rows e4m3 with one scale
 * per row per 128 channels (kd_cu_fp8_quantize_rows). A stage is 128 k, one
 * scale group: its products go through mma.sync m16n8k32 e4m3 (whose
 * fragments have the bytes of m16n8k16 bf16's, so the same ldmatrix
 * addresses, in 2-byte units), and are added to the fp32 total times the
 * weight block's scale and the row's (DeepGEMM's promotion per 128). Blocks
 * as the bf16 kernel: an expert, 128 features, 32 rows a pass; grid.z splits
 * an expert's passes (prefill). */
#define QK 128      /* k (bytes) per stage: one scale group */
#define QST (QK + 16) /* smem row stride, bytes: 16-byte aligned, ldmatrix without bank conflicts */

__device__ __forceinline__ void mma8_(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__global__ void __launch_bounds__(256) moe_gemm_w8a8_kernel(bf16 *y, const uint8_t *x8, const float *xs,
                                                            const uint8_t *w8, const float *ws, const int32_t *off,
                                                            int64_t N, int64_t K)
{
    extern __shared__ __align__(16) unsigned char smem_[];
    uint8_t *sW = smem_, *sX = sW + SS * SF * QST; /* [SS][SF][QST] weight bytes, [SS][SR][QST] row bytes */
    float *sS = reinterpret_cast<float *>(sX + SS * SR * QST); /* [SS][SR] the rows' scales of the stage's group */
    const int e = blockIdx.x, wi = threadIdx.x >> 5, l = threadIdx.x & 31;
    const int base = off[e], cnt = off[e + 1] - base;
    const int64_t n0 = (int64_t)blockIdx.y * SF, nkb = (K + QK - 1) / QK, nfb = (N + 127) / 128;
    const uint8_t *we = w8 + (int64_t)e * N * K;
    const float *wsc = ws + ((int64_t)e * nfb + blockIdx.y) * nkb;
    const int nk = (int)nkb;
    for (int r0 = (int)blockIdx.z * SR; r0 < cnt; r0 += (int)gridDim.z * SR) {
        const int rows = min(SR, cnt - r0);
        auto load = [&](int st, int kt) {
            const int64_t k0 = (int64_t)kt * QK;
            uint8_t *dW = sW + st * SF * QST, *dX = sX + st * SR * QST;
            for (int i = threadIdx.x; i < SF * (QK / 16); i += 256) {
                const int r = i / (QK / 16), c = (i % (QK / 16)) * 16;
                if (n0 + r < N && k0 + c < K)
                    cp16_(dW + r * QST + c, we + (n0 + r) * K + k0 + c);
                else
                    *reinterpret_cast<uint4 *>(dW + r * QST + c) = make_uint4(0, 0, 0, 0);
            }
            for (int i = threadIdx.x; i < SR * (QK / 16); i += 256) {
                const int r = i / (QK / 16), c = (i % (QK / 16)) * 16;
                if (r < rows && k0 + c < K)
                    cp16_(dX + r * QST + c, x8 + (int64_t)(base + r0 + r) * K + k0 + c);
                else
                    *reinterpret_cast<uint4 *>(dX + r * QST + c) = make_uint4(0, 0, 0, 0);
            }
            if (threadIdx.x < SR) {
                float *d = sS + st * SR + threadIdx.x;
                if ((int)threadIdx.x < rows)
                    cp4_(d, xs + (int64_t)(base + r0 + threadIdx.x) * nkb + kt);
                else
                    *d = 0.0f;
            }
        };
        float acc[SR / 8][4];
#pragma unroll
        for (int j = 0; j < SR / 8; j++)
            acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
        for (int st = 0; st < SS - 1; st++) {
            if (st < nk)
                load(st, st);
            cp_commit_();
        }
        for (int kt = 0; kt < nk; kt++) {
            cp_wait_<SS - 2>();
            __syncthreads();
            if (kt + SS - 1 < nk)
                load((kt + SS - 1) % SS, kt + SS - 1);
            cp_commit_();
            const int st = kt % SS;
            const uint32_t uW = su_(sW + st * SF * QST), uX = su_(sX + st * SR * QST);
            float part[SR / 8][4];
#pragma unroll
            for (int j = 0; j < SR / 8; j++)
                part[j][0] = part[j][1] = part[j][2] = part[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < QK / 32; kk++) { /* 32 bytes of k = 16 two-byte units */
                uint32_t a[4];
                ldsm_(a, a_at_(uW, QST / 2, wi * 16, kk * 16, l));
#pragma unroll
                for (int jp = 0; jp < SR / 16; jp++) {
                    uint32_t b[4];
                    ldsm_(b, bnk_at_(uX, QST / 2, jp * 16, kk * 16, l));
                    mma8_(part[2 * jp], a, b[0], b[1]);
                    mma8_(part[2 * jp + 1], a, b[2], b[3]);
                }
            }
            const float wk = wsc[kt];
            const float *rs = sS + st * SR;
#pragma unroll
            for (int j = 0; j < SR / 8; j++)
#pragma unroll
                for (int q = 0; q < 4; q++)
                    acc[j][q] = fmaf(part[j][q], wk * rs[j * 8 + (l & 3) * 2 + (q & 1)], acc[j][q]);
        }
        cp_wait_all_();
        __syncthreads();
        store_rows_(y, acc, n0 + wi * 16, l, rows, base + r0, N);
    }
}

/* ---- W8A8 with no shared memory (decode) -----------------------------------------------------
 * moe_gemm_frag_kernel's scheme on e4m3 bytes: m16n8k32's fragments hold the
 * bytes of m16n8k16's, so lane l (q = l % 4) loads the 16 bytes at k 16q of
 * each 64 of weight rows l/4 and l/4 + 8 and of row l/4 of the rows: two
 * MMA steps' A and B fragments, k permuted alike. A 128-k scale group a stage,
 * four stages in registers (three loading while one multiplies); each group's
 * sums promoted to the fp32 total times the weight block's scale and the
 * row's, as moe_gemm_w8a8_kernel does. K % 128 == 0, N % 16 == 0. */
__device__ __forceinline__ void q_load_(uint4 (&a)[2][2], const uint8_t *p0, const uint8_t *p1, int64_t k0)
{
    a[0][0] = ld_stream_(p0 + k0), a[0][1] = ld_stream_(p1 + k0);
    a[1][0] = ld_stream_(p0 + k0 + 64), a[1][1] = ld_stream_(p1 + k0 + 64);
}

__device__ __forceinline__ void q_group_(float (*acc)[4], const uint4 (&a)[2][2], const uint8_t *const *xr,
                                         const int *row, const float *xs, float wk, int nt, int64_t g, int64_t nkb)
{
    float part[SR / 8][4];
#pragma unroll
    for (int j = 0; j < SR / 8; j++)
        part[j][0] = part[j][1] = part[j][2] = part[j][3] = 0.0f;
#pragma unroll
    for (int b = 0; b < 2; b++) {
        const uint32_t lo[4] = {a[b][0].x, a[b][1].x, a[b][0].y, a[b][1].y};
        const uint32_t hi[4] = {a[b][0].z, a[b][1].z, a[b][0].w, a[b][1].w};
#pragma unroll
        for (int j = 0; j < SR / 8; j++)
            if (j < nt) {
                const uint4 xb = __ldg(reinterpret_cast<const uint4 *>(xr[j] + 128 * g + 64 * b));
                mma8_(part[j], lo, xb.x, xb.y);
                mma8_(part[j], hi, xb.z, xb.w);
            }
    }
#pragma unroll
    for (int j = 0; j < SR / 8; j++)
        if (j < nt) {
            const float s0 = wk * __ldg(xs + (int64_t)row[2 * j] * nkb + g);
            const float s1 = wk * __ldg(xs + (int64_t)row[2 * j + 1] * nkb + g);
            acc[j][0] = fmaf(part[j][0], s0, acc[j][0]);
            acc[j][1] = fmaf(part[j][1], s1, acc[j][1]);
            acc[j][2] = fmaf(part[j][2], s0, acc[j][2]);
            acc[j][3] = fmaf(part[j][3], s1, acc[j][3]);
        }
}

__global__ void __launch_bounds__(256, 1) moe_gemm_w8a8_frag_kernel(bf16 *y, const uint8_t *x8, const float *xs,
                                                                    const uint8_t *w8, const float *ws,
                                                                    const int32_t *off, int64_t N, int64_t K)
{
    const int e = blockIdx.x, wi = threadIdx.x >> 5, l = threadIdx.x & 31, q = l & 3;
    const int base = off[e], cnt = off[e + 1] - base;
    const int64_t f0 = (int64_t)blockIdx.y * SF + wi * 16, nkb = K / 128, nfb = (N + 127) / 128;
    if (cnt <= 0 || f0 >= N)
        return;
    const uint8_t *p0 = w8 + ((int64_t)e * N + f0 + (l >> 2)) * K + 16 * q, *p1 = p0 + 8 * K;
    const float *wsc = ws + ((int64_t)e * nfb + blockIdx.y) * nkb;
    for (int r0 = 0; r0 < cnt; r0 += SR) {
        const int rows = min(SR, cnt - r0), nt = (rows + 7) >> 3;
        const uint8_t *xr[SR / 8]; /* B: row l/4 of each 8 rows, the last row standing in past `rows` */
        int row[SR / 4];           /* the scales: rows 8j + 2q and + 1 */
#pragma unroll
        for (int j = 0; j < SR / 8; j++) {
            xr[j] = x8 + (int64_t)(base + r0 + min(8 * j + (l >> 2), rows - 1)) * K + 16 * q;
            row[2 * j] = base + r0 + min(8 * j + 2 * q, rows - 1);
            row[2 * j + 1] = base + r0 + min(8 * j + 2 * q + 1, rows - 1);
        }
        float acc[SR / 8][4];
#pragma unroll
        for (int j = 0; j < SR / 8; j++)
            acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
        uint4 a0[2][2], a1[2][2], a2[2][2], a3[2][2];
        q_load_(a0, p0, p1, 0);
        if (nkb > 1)
            q_load_(a1, p0, p1, 128);
        if (nkb > 2)
            q_load_(a2, p0, p1, 256);
        for (int64_t g = 0; g < nkb; g += 4) { /* a ring of four stages, unrolled: registers stay registers */
            if (g + 3 < nkb)
                q_load_(a3, p0, p1, 128 * (g + 3));
            q_group_(acc, a0, xr, row, xs, __ldg(wsc + g), nt, g, nkb);
            if (g + 1 < nkb) {
                if (g + 4 < nkb)
                    q_load_(a0, p0, p1, 128 * (g + 4));
                q_group_(acc, a1, xr, row, xs, __ldg(wsc + g + 1), nt, g + 1, nkb);
            }
            if (g + 2 < nkb) {
                if (g + 5 < nkb)
                    q_load_(a1, p0, p1, 128 * (g + 5));
                q_group_(acc, a2, xr, row, xs, __ldg(wsc + g + 2), nt, g + 2, nkb);
            }
            if (g + 3 < nkb) {
                if (g + 6 < nkb)
                    q_load_(a2, p0, p1, 128 * (g + 6));
                q_group_(acc, a3, xr, row, xs, __ldg(wsc + g + 3), nt, g + 3, nkb);
            }
        }
        store_rows_(y, acc, f0, l, rows, base + r0, N);
    }
}

/* ---- FP8 block quantisation: one block per 128 x 128 tile ---------------------------------------
 * scale = amax / 448 (1 for an all-zero tile), w8 = e4m3(w / scale), saturating. */
__global__ void fp8_quant_kernel(uint8_t *w8, float *ws, const bf16 *w, int64_t N, int64_t K)
{
    __shared__ float red[32];
    const int64_t e = blockIdx.z, nb = blockIdx.y, kb = blockIdx.x;
    const int64_t nkb = gridDim.x, nfb = gridDim.y;
    const bf16 *we = w + e * N * K;
    float mx = 0.0f;
    for (int i = threadIdx.x; i < 128 * 128; i += blockDim.x) {
        const int64_t r = nb * 128 + i / 128, c = kb * 128 + i % 128;
        if (r < N && c < K)
            mx = fmaxf(mx, fabsf(__bfloat162float(we[r * K + c])));
    }
#pragma unroll
    for (int o = 16; o; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((threadIdx.x & 31) == 0)
        red[threadIdx.x >> 5] = mx;
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = 0.0f;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++)
            m = fmaxf(m, red[i]);
        red[0] = m > 0.0f ? m / 448.0f : 1.0f;
        ws[(e * nfb + nb) * nkb + kb] = red[0];
    }
    __syncthreads();
    const float inv = 1.0f / red[0];
    for (int i = threadIdx.x; i < 128 * 128; i += blockDim.x) {
        const int64_t r = nb * 128 + i / 128, c = kb * 128 + i % 128;
        if (r < N && c < K)
            w8[e * N * K + r * K + c] = __nv_fp8_e4m3(__bfloat162float(we[r * K + c]) * inv).__x;
    }
}

/* ==== launchers ======================================================================== */

extern "C" int kd_cu_moe_route(int32_t *idx, float *wt, const float *logits, const float *bias, int64_t N,
                               const kd_cu_route *rc, kd_cu *cu)
{
    const int G = rc->G > 0 ? rc->G : 1;
    if (rc->E < 1 || rc->E > KD_CU_MOE_MAXE || rc->k < 1 || rc->k > KD_CU_MOE_MAXK || rc->k > rc->E ||
        rc->E % G || G > 256 || (rc->method != KD_CU_TOPK_GREEDY && G > 1 && (rc->topk_group < 1 || rc->topk_group > G)))
        return kd_err(KD_E_CUDA, "moe route: %d experts, top-%d, %d groups, top-%d groups (need 1 <= k <= %d, "
                      "E <= %d a multiple of the groups, at most 256 groups)", rc->E, rc->k, rc->G, rc->topk_group,
                      KD_CU_MOE_MAXK, KD_CU_MOE_MAXE);
    if (N == 0)
        return KD_OK;
    const size_t shm = (size_t)RW * rc->E * (2 * sizeof(float) + 1);
    moe_route_kernel<<<(unsigned)((N + RW - 1) / RW), RW * 32, shm, (cudaStream_t)cu->stream>>>(idx, wt, logits, bias,
                                                                                              N, *rc);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

extern "C" int kd_cu_moe_permute(int32_t *src, int32_t *dst, int32_t *off, int32_t *counts, const int32_t *idx,
                                 int64_t N, int k, int E, kd_cu *cu)
{
    if (E < 1 || E > KD_CU_MOE_MAXE || k < 1 || k > KD_CU_MOE_MAXK || N * k > 0x7fffffff)
        return kd_err(KD_E_CUDA, "moe permute: %d experts, top-%d, %lld tokens", E, k, (long long)N);
    cudaStream_t s = (cudaStream_t)cu->stream;
    const int64_t NK = N * k;
    if (NK <= 4096) {
        moe_permute_one_kernel<<<1, 1024, 0, s>>>(src, dst, off, counts, idx, NK, E);
        CUDA_TRY(cudaGetLastError());
        return KD_OK;
    }
    const unsigned blocks = (unsigned)((E + 7) / 8);
    moe_count_kernel<<<blocks, 256, 0, s>>>(counts, idx, NK, E);
    moe_scan_kernel<<<1, 32, 0, s>>>(off, counts, E);
    if (NK)
        moe_place_kernel<<<blocks, 256, 0, s>>>(src, dst, off, idx, NK, E);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

extern "C" int kd_cu_moe_gather(kd_bf16 *xin, const kd_bf16 *x, const int32_t *src, int64_t N, int k, int64_t C,
                                kd_cu *cu)
{
    if (N * k == 0)
        return KD_OK;
    moe_gather_kernel<<<(unsigned)(N * k), 128, 0, (cudaStream_t)cu->stream>>>((bf16 *)xin, (const bf16 *)x, src, k,
                                                                               C);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

extern "C" int kd_cu_moe_combine(kd_bf16 *out, const kd_bf16 *y, const int32_t *dst, const int32_t *idx,
                                 const float *wt, const kd_bf16 *add, int64_t N, int k, int64_t C, kd_cu *cu)
{
    if (k < 1 || k > KD_CU_MOE_MAXK || C < 1 || (C + 255) / 256 > 65535)
        return kd_err(KD_E_CUDA, "moe combine: top-%d (need 1 .. %d), C %lld", k, KD_CU_MOE_MAXK, (long long)C);
    if (N == 0)
        return KD_OK;
    dim3 grid((unsigned)N, (unsigned)((C + 255) / 256));
    moe_combine_kernel<<<grid, 256, 0, (cudaStream_t)cu->stream>>>((bf16 *)out, (const bf16 *)y, dst, idx, wt,
                                                                   (const bf16 *)add, k, C);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

/* A test hook, read once: KD_CU_MOE_PATH=1|2|3 forces the grouped GEMMs' path
 * (bf16: 1, 2, 3; fp8: 2, 3) where the shape allows */
static int moe_forced_(void)
{
    static int forced = -1;
    if (forced < 0) {
        const char *fp = getenv("KD_CU_MOE_PATH");
        forced = fp && *fp >= '1' && *fp <= '3' ? *fp - '0' : 0;
    }
    return forced;
}

extern "C" int kd_cu_moe_gemm_fp8(kd_bf16 *y, const uint8_t *x8, const float *xs, const uint8_t *w, const float *ws,
                                  const int32_t *off, int E, int64_t NK, int64_t N, int64_t K, kd_cu *cu)
{
    return kd_cu_moe_gemm_fp8_path(y, x8, xs, w, ws, off, E, NK, N, K, 0, cu);
}

extern "C" int kd_cu_moe_gemm_fp8_path(kd_bf16 *y, const uint8_t *x8, const float *xs, const uint8_t *w,
                                       const float *ws, const int32_t *off, int E, int64_t NK, int64_t N, int64_t K,
                                       int path, kd_cu *cu)
{
    if (E < 1 || E > KD_CU_MOE_MAXE || K < 16 || K % 16 || N < 1 || (N + SF - 1) / SF > 65535 || NK > 0x7fffffff)
        return kd_err(KD_E_CUDA, "moe gemm fp8: %d experts, %lld rows, N %lld, K %lld (need K a multiple of 16)", E,
                      (long long)NK, (long long)N, (long long)K);
    const int frag_ok = K % 128 == 0 && N % 16 == 0;
    if (path == 3 && !frag_ok)
        return kd_err(KD_E_CUDA, "moe gemm fp8 path 3: K %lld not a multiple of 128 or N %lld of 16", (long long)K,
                      (long long)N);
    if (NK == 0)
        return KD_OK;
    if (path == 0) /* path 3 opt-in (KD_CU_MOE_PATH=3, decode shapes) until run on a GPU */
        path = moe_forced_() == 3 && frag_ok && NK <= (int64_t)SR * E ? 3 : 2;
    if (path == 3) {
        dim3 grid((unsigned)E, (unsigned)((N + SF - 1) / SF));
        moe_gemm_w8a8_frag_kernel<<<grid, 256, 0, (cudaStream_t)cu->stream>>>((bf16 *)y, x8, xs, w, ws, off, N, K);
        CUDA_TRY(cudaGetLastError());
        return KD_OK;
    }
    const size_t shm = (size_t)SS * (SF + SR) * QST + (size_t)SS * SR * sizeof(float);
    static int attr_set = 0;
    if (!attr_set) {
        CUDA_TRY(cudaFuncSetAttribute(moe_gemm_w8a8_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
        attr_set = 1;
    }
    /* grid.z: more than a pass of rows per expert on average (prefill) splits the passes */
    const int64_t passes = (NK + (int64_t)SR * E - 1) / ((int64_t)SR * E);
    dim3 grid((unsigned)E, (unsigned)((N + SF - 1) / SF), (unsigned)(passes < 16 ? passes : 16));
    moe_gemm_w8a8_kernel<<<grid, 256, shm, (cudaStream_t)cu->stream>>>((bf16 *)y, x8, xs, w, ws, off, N, K);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

/* one warp per row and 128 channels: scale = amax / 448 (1 when all zero), x8 = e4m3(x / scale) */
__global__ void fp8_quant_rows_kernel(uint8_t *x8, float *xs, const bf16 *x, int64_t rows, int64_t K)
{
    const int64_t g = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5, nkb = (K + 127) / 128;
    const int l = threadIdx.x & 31;
    if (g >= rows * nkb)
        return;
    const int64_t r = g / nkb, c0 = (g % nkb) * 128 + l * 4;
    float v[4], mx = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        v[i] = c0 + i < K ? __bfloat162float(x[r * K + c0 + i]) : 0.0f;
        mx = fmaxf(mx, fabsf(v[i]));
    }
#pragma unroll
    for (int o = 16; o; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float sc = mx > 0.0f ? mx / 448.0f : 1.0f, inv = 1.0f / sc;
    if (l == 0)
        xs[g] = sc;
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (c0 + i < K)
            x8[r * K + c0 + i] = __nv_fp8_e4m3(v[i] * inv).__x;
}

extern "C" int kd_cu_fp8_quantize_rows(uint8_t *x8, float *xs, const kd_bf16 *x, int64_t rows, int64_t K, kd_cu *cu)
{
    if (rows < 0 || K < 1)
        return kd_err(KD_E_CUDA, "fp8 quantise rows: %lld x %lld", (long long)rows, (long long)K);
    const int64_t warps = rows * ((K + 127) / 128);
    if (warps == 0)
        return KD_OK;
    fp8_quant_rows_kernel<<<(unsigned)((warps + 7) / 8), 256, 0, (cudaStream_t)cu->stream>>>(x8, xs, (const bf16 *)x,
                                                                                          rows, K);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

extern "C" int kd_cu_fp8_quantize(uint8_t *w8, float *ws, const kd_bf16 *w, int64_t E, int64_t N, int64_t K, kd_cu *cu)
{
    if (E < 1 || N < 1 || K < 1 || (N + 127) / 128 > 65535 || E > 65535)
        return kd_err(KD_E_CUDA, "fp8 quantise: %lld x %lld x %lld", (long long)E, (long long)N, (long long)K);
    dim3 grid((unsigned)((K + 127) / 128), (unsigned)((N + 127) / 128), (unsigned)E);
    fp8_quant_kernel<<<grid, 256, 0, (cudaStream_t)cu->stream>>>(w8, ws, (const bf16 *)w, N, K);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

extern "C" int kd_cu_moe_gemm(kd_bf16 *y, const kd_bf16 *x, const kd_bf16 *w, const int32_t *off, int E, int64_t NK,
                              int64_t N, int64_t K, kd_cu *cu)
{
    return kd_cu_moe_gemm_path(y, x, w, off, E, NK, N, K, 0, cu);
}

extern "C" int kd_cu_moe_gemm_path(kd_bf16 *y, const kd_bf16 *x, const kd_bf16 *w, const int32_t *off, int E,
                                   int64_t NK, int64_t N, int64_t K, int path, kd_cu *cu)
{
    if (E < 1 || E > KD_CU_MOE_MAXE || K < 8 || K % 8 || N < 1 || (N + GN - 1) / GN > 65535 || NK > 0x7fffffff)
        return kd_err(KD_E_CUDA, "moe gemm: %d experts, %lld rows, N %lld, K %lld (need K a multiple of 8)", E,
                      (long long)NK, (long long)N, (long long)K);
    if (NK == 0)
        return KD_OK;
    const int forced = moe_forced_();
    const int asked = path, frag_ok = K % (32 * GB) == 0 && N % 16 == 0;
    if (path == 0)
        path = forced;
    if (path == 0) /* about a pass of 32 rows per expert or less: decode */
        path = NK <= (int64_t)SR * E ? 3 : 1;
    if (path == 3 && !frag_ok) { /* not the register kernel's shape: the shared-memory one */
        if (asked == 3)
            return kd_err(KD_E_CUDA, "moe gemm path 3: K %lld not a multiple of %d or N %lld of 16", (long long)K,
                          32 * GB, (long long)N);
        path = 2;
    }
    if (path == 3) {
        dim3 grid((unsigned)E, (unsigned)((N + SF - 1) / SF));
        moe_gemm_frag_kernel<<<grid, 256, 0, (cudaStream_t)cu->stream>>>((bf16 *)y, (const bf16 *)x,
                                                                         (const bf16 *)w, off, N, K);
        CUDA_TRY(cudaGetLastError());
        return KD_OK;
    }
    if (path == 2) {
        const size_t shm = (size_t)SS * (SF + SR) * SST * sizeof(bf16);
        static int attr_set = 0;
        if (!attr_set) {
            CUDA_TRY(cudaFuncSetAttribute(moe_gemm_rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
            attr_set = 1;
        }
        dim3 grid((unsigned)E, (unsigned)((N + SF - 1) / SF));
        moe_gemm_rows_kernel<<<grid, 256, shm, (cudaStream_t)cu->stream>>>((bf16 *)y, (const bf16 *)x,
                                                                           (const bf16 *)w, off, N, K);
        CUDA_TRY(cudaGetLastError());
        return KD_OK;
    }
    dim3 grid((unsigned)((NK + GM - 1) / GM + E), (unsigned)((N + GN - 1) / GN));
    moe_gemm_kernel<<<grid, 128, 0, (cudaStream_t)cu->stream>>>((bf16 *)y, (const bf16 *)x, (const bf16 *)w, off, E,
                                                                N, K);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}
