/* mma.cuh - the device helpers the hand-written CUDA kernels share
 * (attention.cu, moe.cu, mla.cu, ops.cu, mla_ops.cu): cp.async copies,
 * mma.sync m16n8k16 bf16 with fp32 accumulation, base-2 exponentials,
 * ldmatrix fragment loads from shared memory, the fragment addresses of
 * row-major tiles, and warp and block sums. Device code
 * only; include after cuda_bf16.h. */
#ifndef KD_CORE_CUDA_MMA_CUH
#define KD_CORE_CUDA_MMA_CUH

#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf162;

#define LOG2E 1.4426950408889634f

/* cp.async from global to shared memory: 16 bytes (bypassing L1) or one
 * 4-byte word; the caller commits the group and waits for it. */
__device__ __forceinline__ void cp16_(void *dst, const void *src)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(src));
}
__device__ __forceinline__ void cp4_(void *dst, const void *src)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(a), "l"(src));
}
__device__ __forceinline__ void cp_commit_() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_wait_all_() { asm volatile("cp.async.wait_group 0;\n" ::); }

__device__ __forceinline__ uint32_t pack_(float a, float b)
{
    bf162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* 2^x, one MUFU op; ex2(-inf) = 0 */
__device__ __forceinline__ float ex2_(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ void mma_(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* ldmatrix takes 32-bit shared addresses. su_ makes one from a pointer, opaque
 * to the compiler: called in a loop body, it keeps the many fragment
 * addresses from being hoisted out of the loop, where each would hold a
 * register across it (base + constant folds into the instruction instead). */
__device__ __forceinline__ uint32_t su_(const void *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("" : "+r"(a));
    return a;
}

__device__ __forceinline__ void ldsm_(uint32_t r[4], uint32_t a)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm_t_(uint32_t r[4], uint32_t a)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* Fragment addresses in a row-major bf16 smem tile at shared address s, of
 * stride ST elements, for lane l:
 *   A (16 x 16 at row r0, col c0):               row r0 + l%16,               col c0 + (l/16)*8
 *   B pair from [n][k] storage (two n8, k16):     row n0 + l%8 + (l/16)*8,     col k0 + ((l/8)%2)*8
 *   B pair from [k][n] storage (.trans):          row k0 + l%8 + ((l/8)%2)*8,  col n0 + (l/16)*8
 * each giving regs {b0b1, b2b3} of the first n8 tile, then of the second. */
__device__ __forceinline__ uint32_t a_at_(uint32_t s, int st, int r0, int c0, int l)
{
    return s + 2 * ((r0 + (l & 15)) * st + c0 + (l >> 4) * 8);
}
__device__ __forceinline__ uint32_t bnk_at_(uint32_t s, int st, int n0, int k0, int l)
{
    return s + 2 * ((n0 + (l & 7) + (l >> 4) * 8) * st + k0 + ((l >> 3) & 1) * 8);
}
__device__ __forceinline__ uint32_t bkn_at_(uint32_t s, int st, int k0, int n0, int l)
{
    return s + 2 * ((k0 + (l & 7) + ((l >> 3) & 1) * 8) * st + n0 + (l >> 4) * 8);
}

/* The sum over a warp, in every lane. */
template <typename T> __device__ __forceinline__ T warp_sum(T x)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* The sum over the block (blockDim a multiple of 32, at most 1024), returned to
 * every thread; sh holds 32 T. A fixed tree: deterministic. */
template <typename T> __device__ __forceinline__ T block_sum(T x, T *sh)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0)
        sh[w] = x;
    __syncthreads();
    x = lane < nw ? sh[lane] : (T)0;
    return warp_sum(x);
}

#endif
