/* mla.cu - MLA decode attention in the absorbed form over a paged latent
 * cache (what FlashMLA does), in CUDA C. See kd_cu_mla_decode in
 * core/cuda/cuops.h; the reference is kd_attention_cached (core/cpu/ops.c)
 * on the gathered latents, as teacher/model.c calls it.
 *
 * Every head of a sequence reads the same cached rows: the normalised latent
 * (R) and the rotated rope key (Dr), D = R + Dr per position, stored in pool
 * blocks of `block` positions that a block table maps. So one CTA takes one
 * sequence and 16 of its heads (the m16 of mma.sync) and streams the
 * sequence's rows through shared memory once for all of them: 64 keys at a
 * time, gathered through the block table with cp.async. Per tile: warp w
 * scores keys 16w..16w+15 for the 16 heads (Q K^T over D), the scores meet
 * in shared memory for the online softmax (fp32, base 2), and each warp
 * accumulates its quarter of the R output columns, O += P V, V being the
 * latent prefix of the same rows. Keys past the sequence's length are zero
 * rows with score -inf.
 *
 * Split-KV (kd_cu_mla_decode_split): grid.z splits each sequence's tiles
 * into `splits` runs of about equal length (from its own length, on the
 * device, so one launch shape serves any lengths: what a CUDA graph needs);
 * each CTA leaves its unnormalised sums, running max and denominator, and
 * mla_combine_kernel weighs the splits by 2^(max_z - max) in split order. */
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

#define MH 16  /* heads per CTA */
#define MK 64  /* keys per tile */
#define MW 4   /* warps */
#define MNT 16 /* most n8 output tiles per warp: R <= 4 * 16 * 8 = 512 */

__global__ void __launch_bounds__(MW * 32) mla_decode_kernel(float *out, float *ml, const bf16 *q,
                                                             const bf16 *cache, const int32_t *table,
                                                             const int32_t *lens, int H, int R, int Dr, int block,
                                                             int max_blocks, float scale_log2)
{
    const int D = R + Dr, ST = D + 8; /* smem row stride: 16-byte rows, ldmatrix without bank conflicts */
    extern __shared__ __align__(16) unsigned char smem_[];
    bf16 *sQ = reinterpret_cast<bf16 *>(smem_), *sK = sQ + MH * ST, *sP = sK + MK * ST; /* sP: [MH][MK + 8] */
    float *sS = reinterpret_cast<float *>(sP + MH * (MK + 8));                        /* [MH][MK + 4] */
    __shared__ float sAl[MH], sMx[MH], sL[MH];
    const int s = blockIdx.x, h0 = blockIdx.y * MH, w = threadIdx.x >> 5, l = threadIdx.x & 31;
    const int len = lens[s], V8 = D / 8, splits = (int)gridDim.z;
    /* this CTA's keys: split z of the sequence's tiles (all of them when not split) */
    const int ntiles = (len + MK - 1) / MK, chunk = (ntiles + splits - 1) / splits;
    const int tb = min(len, (int)blockIdx.z * chunk * MK), te = min(len, ((int)blockIdx.z + 1) * chunk * MK);
    const int32_t *tab = table + (int64_t)s * max_blocks;
    /* the 16 heads' queries (zeros past H) */
    for (int i = threadIdx.x; i < MH * V8; i += blockDim.x) {
        const int r = i / V8, c = (i % V8) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (h0 + r < H)
            v = *reinterpret_cast<const uint4 *>(q + ((int64_t)s * H + h0 + r) * D + c);
        *reinterpret_cast<uint4 *>(sQ + r * ST + c) = v;
    }
    if (threadIdx.x < MH)
        sMx[threadIdx.x] = -INFINITY, sL[threadIdx.x] = 0.0f;
    const int NT = R / (MW * 8), c0 = w * NT * 8; /* this warp's output columns c0 .. c0 + 8 NT */
    float acc[MNT][4];
#pragma unroll
    for (int n = 0; n < MNT; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    for (int t0 = tb; t0 < te; t0 += MK) {
        __syncthreads(); /* the previous tile is consumed */
        for (int i = threadIdx.x; i < MK * V8; i += blockDim.x) {
            const int r = i / V8, c = (i % V8) * 8, t = t0 + r;
            bf16 *dst = sK + r * ST + c;
            if (t < te) {
                const int64_t row = (int64_t)tab[t / block] * block + t % block;
                cp16_(dst, cache + row * D + c);
            } else {
                *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
            }
        }
        cp_commit_();
        cp_wait_all_();
        __syncthreads();
        /* S for keys 16w .. 16w + 15: two n8 tiles */
        const uint32_t uQ = su_(sQ), uK = su_(sK);
        float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t a[4], b[4];
            ldsm_(a, a_at_(uQ, ST, 0, kk * 16, l));
            ldsm_(b, bnk_at_(uK, ST, w * 16, kk * 16, l));
            mma_(sc[0], a, b[0], b[1]);
            mma_(sc[1], a, b[2], b[3]);
        }
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = (l >> 2) + (e >> 1) * 8, col = w * 16 + n * 8 + (l & 3) * 2 + (e & 1);
                sS[row * (MK + 4) + col] = t0 + col < te ? sc[n][e] : -INFINITY;
            }
        __syncthreads();
        /* the online softmax: warp w takes rows 4w .. 4w + 3, two columns a lane */
        for (int rr = 0; rr < MH / MW; rr++) {
            const int row = w * (MH / MW) + rr;
            const float a = sS[row * (MK + 4) + l], b = sS[row * (MK + 4) + l + 32];
            float mx = fmaxf(a, b);
            for (int o = 16; o > 0; o >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float old = sMx[row], nm = fmaxf(old, mx);
            const float base = nm == -INFINITY ? 0.0f : nm * scale_log2; /* all masked so far: 0 */
            const float pa = ex2_(fmaf(a, scale_log2, -base)), pb = ex2_(fmaf(b, scale_log2, -base));
            float sum = pa + pb;
            for (int o = 16; o > 0; o >>= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, o);
            sP[row * (MK + 8) + l] = __float2bfloat16_rn(pa);
            sP[row * (MK + 8) + l + 32] = __float2bfloat16_rn(pb);
            __syncwarp();
            if (l == 0) {
                const float al = ex2_(fmaf(old, scale_log2, -base));
                sAl[row] = al;
                sL[row] = sL[row] * al + sum;
                sMx[row] = nm;
            }
        }
        __syncthreads();
        /* O = O * alpha + P V over this warp's columns */
        const float aa = sAl[l >> 2], ab = sAl[(l >> 2) + 8];
        const uint32_t uP = su_(sP);
#pragma unroll
        for (int n = 0; n < MNT; n++)
            if (n < NT)
                acc[n][0] *= aa, acc[n][1] *= aa, acc[n][2] *= ab, acc[n][3] *= ab;
#pragma unroll
        for (int kk = 0; kk < MK / 16; kk++) {
            uint32_t a[4];
            ldsm_(a, a_at_(uP, MK + 8, 0, kk * 16, l));
#pragma unroll
            for (int np = 0; np < MNT / 2; np++) {
                if (2 * np >= NT)
                    break;
                uint32_t b[4];
                ldsm_t_(b, bkn_at_(uK, ST, kk * 16, c0 + np * 16, l));
                mma_(acc[2 * np], a, b[0], b[1]);
                if (2 * np + 1 < NT)
                    mma_(acc[2 * np + 1], a, b[2], b[3]);
            }
        }
    }
    __syncthreads();
    /* one split: normalised into out; several: split z's unnormalised sums into out's
     * z-th slice (S, H, R each) and its running max (base 2, scaled) and denominator into ml */
    const int ra = l >> 2, rb = ra + 8;
    const int64_t S = gridDim.x, zoff = splits > 1 ? (int64_t)blockIdx.z * S * H : 0;
    float ia = sL[ra] > 0.0f ? 1.0f / sL[ra] : 0.0f, ib = sL[rb] > 0.0f ? 1.0f / sL[rb] : 0.0f;
    if (splits > 1) {
        ia = ib = 1.0f;
        if (threadIdx.x < MH && h0 + (int)threadIdx.x < H) {
            const int64_t i = zoff + (int64_t)s * H + h0 + threadIdx.x;
            const float mx = sMx[threadIdx.x];
            ml[2 * i] = mx == -INFINITY ? -INFINITY : mx * scale_log2;
            ml[2 * i + 1] = sL[threadIdx.x];
        }
    }
#pragma unroll
    for (int n = 0; n < MNT; n++) {
        if (n >= NT)
            break;
        const int c = c0 + n * 8 + (l & 3) * 2;
        if (h0 + ra < H)
            *reinterpret_cast<float2 *>(out + (zoff + (int64_t)s * H + h0 + ra) * R + c) =
                make_float2(acc[n][0] * ia, acc[n][1] * ia);
        if (h0 + rb < H)
            *reinterpret_cast<float2 *>(out + (zoff + (int64_t)s * H + h0 + rb) * R + c) =
                make_float2(acc[n][2] * ib, acc[n][3] * ib);
    }
}

/* out (s, h) = sum_z 2^(m_z - m) o_z / sum_z 2^(m_z - m) l_z, m = max_z m_z, in split order;
 * one block per (sequence, head), threads over R */
__global__ void mla_combine_kernel(float *out, const float *part, const float *ml, int splits, int64_t SH, int R)
{
    const int64_t i = blockIdx.x;
    float m = -INFINITY;
    for (int z = 0; z < splits; z++)
        m = fmaxf(m, ml[2 * (z * SH + i)]);
    float den = 0.0f;
    for (int z = 0; z < splits; z++) {
        const float mz = ml[2 * (z * SH + i)];
        den += mz == -INFINITY ? 0.0f : ex2_(mz - m) * ml[2 * (z * SH + i) + 1];
    }
    const float inv = den > 0.0f ? 1.0f / den : 0.0f;
    for (int c = threadIdx.x; c < R; c += blockDim.x) {
        float o = 0.0f;
        for (int z = 0; z < splits; z++) {
            const float mz = ml[2 * (z * SH + i)];
            if (mz != -INFINITY)
                o += ex2_(mz - m) * part[(z * SH + i) * R + c];
        }
        out[i * R + c] = o * inv;
    }
}

extern "C" int kd_cu_mla_decode(float *out, const kd_bf16 *q, const kd_bf16 *cache, const int32_t *table,
                                const int32_t *lens, int64_t S, int64_t H, int64_t R, int64_t Dr, int64_t block,
                                int64_t max_blocks, float scale, kd_cu *cu)
{
    return kd_cu_mla_decode_split(out, q, cache, table, lens, S, H, R, Dr, block, max_blocks, scale, 1, NULL, cu);
}

extern "C" int kd_cu_mla_decode_split(float *out, const kd_bf16 *q, const kd_bf16 *cache, const int32_t *table,
                                      const int32_t *lens, int64_t S, int64_t H, int64_t R, int64_t Dr, int64_t block,
                                      int64_t max_blocks, float scale, int splits, float *work, kd_cu *cu)
{
    /* NT = R / 32 columns tiles per warp, taken in pairs by ldmatrix.x4: R a multiple of 32 up to 512 */
    if (R < 32 || R > 512 || R % 32 || Dr < 0 || (R + Dr) % 16 || block < 1 || max_blocks < 1 || H < 1 ||
        S > 0x7fffffff || (H + MH - 1) / MH > 65535 || !(scale > 0.0f) || splits < 1 || splits > 64 ||
        (splits > 1 && !work))
        return kd_err(KD_E_CUDA, "mla decode: R %lld, Dr %lld, H %lld, block %lld, scale %g, %d splits (need R a "
                      "multiple of 32 up to 512, R + Dr a multiple of 16, scale > 0, 1 .. 64 splits with a work "
                      "buffer past 1)", (long long)R, (long long)Dr, (long long)H, (long long)block, (double)scale,
                      splits);
    if (S == 0)
        return KD_OK;
    const int ST = (int)(R + Dr) + 8;
    const size_t shm = (size_t)(MH + MK) * ST * sizeof(bf16) + (size_t)MH * (MK + 8) * sizeof(bf16) +
                       (size_t)MH * (MK + 4) * sizeof(float);
    CUDA_TRY(cudaFuncSetAttribute(mla_decode_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    dim3 grid((unsigned)S, (unsigned)((H + MH - 1) / MH), (unsigned)splits);
    float *part = splits > 1 ? work : out, *ml = splits > 1 ? work + (size_t)splits * S * H * R : NULL;
    mla_decode_kernel<<<grid, MW * 32, shm, (cudaStream_t)cu->stream>>>(part, ml, (const bf16 *)q,
                                                                          (const bf16 *)cache, table, lens, (int)H,
                                                                          (int)R, (int)Dr, (int)block,
                                                                          (int)max_blocks, scale * LOG2E);
    CUDA_TRY(cudaGetLastError());
    if (splits > 1) {
        mla_combine_kernel<<<(unsigned)(S * H), 128, 0, (cudaStream_t)cu->stream>>>(out, part, ml, splits, S * H,
                                                                                     (int)R);
        CUDA_TRY(cudaGetLastError());
    }
    return KD_OK;
}
