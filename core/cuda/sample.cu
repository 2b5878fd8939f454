/* sample.cu - token sampling on the GPU, one CTA per row. See core/cuda/cusample.h;
 * the reference is kd_sample (core/sampler.c).
 *
 * Legend: V vocab, l a logit, T temperature, w = exp((l - lmax) / T) (1 for the
 * largest logit), key the logit's bits mapped so that unsigned order is float
 * order (-0 taken as +0), digit one of the key's radix digits: bits 21..31,
 * 10..20 and 0..9.
 *
 * Stages of a row, each a pass over the row (or over its candidate list):
 *   A      NaN check, the first argmax, an online logsumexp (for logprob),
 *          and for top-k the counts of the top digit.
 *   top-k  radix select of the k-th largest key: per digit, the counts of the
 *          keys that share the digits found so far, then the digit at which
 *          the count from the top reaches k. Exact.
 *   top-p  the same walk weighted by mass: per digit, the weights of the
 *          survivors as 2^-64 fixed point summed in integers (exact, so in no
 *          particular order), then the digit at which the mass from the top
 *          reaches ceil(top_p * total). The last digit gives the cut's logit v
 *          and the mass above it, so the number of tokens equal to v that are
 *          kept, ceil(rest / w(v)); the last of them in id order bounds the
 *          tie run (sampler.c keeps "the first nties by id").
 *   draw   draw_ of sampler.c: 256 block sums, block j summed in id order by
 *          thread j (the row goes through shared memory 32 logits of every
 *          block at a time, its weights computed by all threads), then thread
 *          0 walks the blocks and the chosen block as the CPU does.
 * Candidates: when the keys at or above the first digit found by top-k (or
 * top-p) number at most CAP, the second pass copies them (logit, id) into
 * shared memory, sorted by id afterwards, and the later passes and the draw
 * read only those: every token that can be kept is among them, and the
 * others would add only zeros to the block sums.
 *
 * The weights are glibc's exp bit for bit (exp_glibc_), so the draw's sums
 * are the CPU's; the fixed-point masses of top-p are not (see cusample.h). */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

extern "C" {
#include "core/cuda/cusample.h"
#include "core/status.h"
}
#include "core/cuda/cutry.h"

typedef unsigned __int128 u128;

#define NT 512    /* threads per row: 2 CTAs of 512 fill an SM's 2048 threads at 64 registers */
#define NW (NT / 32)
#define NBLK 256  /* the draw's blocks: NBLK_ of sampler.c */
#define CH 32     /* draw staging: logits of every block per round */
#define CAP 4096  /* candidate list entries (32 KB) */
#define NBIN 2048 /* bins of an 11-bit digit */
#define UNR 4     /* loads in flight per thread in a pass over the row */
#define FULL 0xffffffffu

/* ==== glibc's exp ======================================================================== */

/* 2^(k/128) = H_k (1 + T_k), k in [0, 128): EXP_TAB[2k] holds the bits of T_k,
 * EXP_TAB[2k+1] those of H_k minus k << 45 (exp adds the exponent back from k).
 * H_k is 2^(k/128) rounded to double, T_k the relative rest rounded; made with
 * MPFR at 300 bits, they are the values of glibc's __exp_data.tab. */
__device__ const uint64_t EXP_TAB[256] = {
    0x0000000000000000, 0x3ff0000000000000, 0x3c9b3b4f1a88bf6e, 0x3feff63da9fb3335,
    0xbc7160139cd8dc5d, 0x3fefec9a3e778061, 0xbc905e7a108766d1, 0x3fefe315e86e7f85,
    0x3c8cd2523567f613, 0x3fefd9b0d3158574, 0xbc8bce8023f98efa, 0x3fefd06b29ddf6de,
    0x3c60f74e61e6c861, 0x3fefc74518759bc8, 0x3c90a3e45b33d399, 0x3fefbe3ecac6f383,
    0x3c979aa65d837b6d, 0x3fefb5586cf9890f, 0x3c8eb51a92fdeffc, 0x3fefac922b7247f7,
    0x3c3ebe3d702f9cd1, 0x3fefa3ec32d3d1a2, 0xbc6a033489906e0b, 0x3fef9b66affed31b,
    0xbc9556522a2fbd0e, 0x3fef9301d0125b51, 0xbc5080ef8c4eea55, 0x3fef8abdc06c31cc,
    0xbc91c923b9d5f416, 0x3fef829aaea92de0, 0x3c80d3e3e95c55af, 0x3fef7a98c8a58e51,
    0xbc801b15eaa59348, 0x3fef72b83c7d517b, 0xbc8f1ff055de323d, 0x3fef6af9388c8dea,
    0x3c8b898c3f1353bf, 0x3fef635beb6fcb75, 0xbc96d99c7611eb26, 0x3fef5be084045cd4,
    0x3c9aecf73e3a2f60, 0x3fef54873168b9aa, 0xbc8fe782cb86389d, 0x3fef4d5022fcd91d,
    0x3c8a6f4144a6c38d, 0x3fef463b88628cd6, 0x3c807a05b0e4047d, 0x3fef3f49917ddc96,
    0x3c968efde3a8a894, 0x3fef387a6e756238, 0x3c875e18f274487d, 0x3fef31ce4fb2a63f,
    0x3c80472b981fe7f2, 0x3fef2b4565e27cdd, 0xbc96b87b3f71085e, 0x3fef24dfe1f56381,
    0x3c82f7e16d09ab31, 0x3fef1e9df51fdee1, 0xbc3d219b1a6fbffa, 0x3fef187fd0dad990,
    0x3c8b3782720c0ab4, 0x3fef1285a6e4030b, 0x3c6e149289cecb8f, 0x3fef0cafa93e2f56,
    0x3c834d754db0abb6, 0x3fef06fe0a31b715, 0x3c864201e2ac744c, 0x3fef0170fc4cd831,
    0x3c8fdd395dd3f84a, 0x3feefc08b26416ff, 0xbc86a3803b8e5b04, 0x3feef6c55f929ff1,
    0xbc924aedcc4b5068, 0x3feef1a7373aa9cb, 0xbc9907f81b512d8e, 0x3feeecae6d05d866,
    0xbc71d1e83e9436d2, 0x3feee7db34e59ff7, 0xbc991919b3ce1b15, 0x3feee32dc313a8e5,
    0x3c859f48a72a4c6d, 0x3feedea64c123422, 0xbc9312607a28698a, 0x3feeda4504ac801c,
    0xbc58a78f4817895b, 0x3feed60a21f72e2a, 0xbc7c2c9b67499a1b, 0x3feed1f5d950a897,
    0x3c4363ed60c2ac11, 0x3feece086061892d, 0x3c9666093b0664ef, 0x3feeca41ed1d0057,
    0x3c6ecce1daa10379, 0x3feec6a2b5c13cd0, 0x3c93ff8e3f0f1230, 0x3feec32af0d7d3de,
    0x3c7690cebb7aafb0, 0x3feebfdad5362a27, 0x3c931dbdeb54e077, 0x3feebcb299fddd0d,
    0xbc8f94340071a38e, 0x3feeb9b2769d2ca7, 0xbc87deccdc93a349, 0x3feeb6daa2cf6642,
    0xbc78dec6bd0f385f, 0x3feeb42b569d4f82, 0xbc861246ec7b5cf6, 0x3feeb1a4ca5d920f,
    0x3c93350518fdd78e, 0x3feeaf4736b527da, 0x3c7b98b72f8a9b05, 0x3feead12d497c7fd,
    0x3c9063e1e21c5409, 0x3feeab07dd485429, 0x3c34c7855019c6ea, 0x3feea9268a5946b7,
    0x3c9432e62b64c035, 0x3feea76f15ad2148, 0xbc8ce44a6199769f, 0x3feea5e1b976dc09,
    0xbc8c33c53bef4da8, 0x3feea47eb03a5585, 0xbc845378892be9ae, 0x3feea34634ccc320,
    0xbc93cedd78565858, 0x3feea23882552225, 0x3c5710aa807e1964, 0x3feea155d44ca973,
    0xbc93b3efbf5e2228, 0x3feea09e667f3bcd, 0xbc6a12ad8734b982, 0x3feea012750bdabf,
    0xbc6367efb86da9ee, 0x3fee9fb23c651a2f, 0xbc80dc3d54e08851, 0x3fee9f7df9519484,
    0xbc781f647e5a3ecf, 0x3fee9f75e8ec5f74, 0xbc86ee4ac08b7db0, 0x3fee9f9a48a58174,
    0xbc8619321e55e68a, 0x3fee9feb564267c9, 0x3c909ccb5e09d4d3, 0x3feea0694fde5d3f,
    0xbc7b32dcb94da51d, 0x3feea11473eb0187, 0x3c94ecfd5467c06b, 0x3feea1ed0130c132,
    0x3c65ebe1abd66c55, 0x3feea2f336cf4e62, 0xbc88a1c52fb3cf42, 0x3feea427543e1a12,
    0xbc9369b6f13b3734, 0x3feea589994cce13, 0xbc805e843a19ff1e, 0x3feea71a4623c7ad,
    0xbc94d450d872576e, 0x3feea8d99b4492ed, 0x3c90ad675b0e8a00, 0x3feeaac7d98a6699,
    0x3c8db72fc1f0eab4, 0x3feeace5422aa0db, 0xbc65b6609cc5e7ff, 0x3feeaf3216b5448c,
    0x3c7bf68359f35f44, 0x3feeb1ae99157736, 0xbc93091fa71e3d83, 0x3feeb45b0b91ffc6,
    0xbc5da9b88b6c1e29, 0x3feeb737b0cdc5e5, 0xbc6c23f97c90b959, 0x3feeba44cbc8520f,
    0xbc92434322f4f9aa, 0x3feebd829fde4e50, 0xbc85ca6cd7668e4b, 0x3feec0f170ca07ba,
    0x3c71affc2b91ce27, 0x3feec49182a3f090, 0x3c6dd235e10a73bb, 0x3feec86319e32323,
    0xbc87c50422622263, 0x3feecc667b5de565, 0x3c8b1c86e3e231d5, 0x3feed09bec4a2d33,
    0xbc91bbd1d3bcbb15, 0x3feed503b23e255d, 0x3c90cc319cee31d2, 0x3feed99e1330b358,
    0x3c8469846e735ab3, 0x3feede6b5579fdbf, 0xbc82dfcd978e9db4, 0x3feee36bbfd3f37a,
    0x3c8c1a7792cb3387, 0x3feee89f995ad3ad, 0xbc907b8f4ad1d9fa, 0x3feeee07298db666,
    0xbc55c3d956dcaeba, 0x3feef3a2b84f15fb, 0xbc90a40e3da6f640, 0x3feef9728de5593a,
    0xbc68d6f438ad9334, 0x3feeff76f2fb5e47, 0xbc91eee26b588a35, 0x3fef05b030a1064a,
    0x3c74ffd70a5fddcd, 0x3fef0c1e904bc1d2, 0xbc91bdfbfa9298ac, 0x3fef12c25bd71e09,
    0x3c736eae30af0cb3, 0x3fef199bdd85529c, 0x3c8ee3325c9ffd94, 0x3fef20ab5fffd07a,
    0x3c84e08fd10959ac, 0x3fef27f12e57d14b, 0x3c63cdaf384e1a67, 0x3fef2f6d9406e7b5,
    0x3c676b2c6c921968, 0x3fef3720dcef9069, 0xbc808a1883ccb5d2, 0x3fef3f0b555dc3fa,
    0xbc8fad5d3ffffa6f, 0x3fef472d4a07897c, 0xbc900dae3875a949, 0x3fef4f87080d89f2,
    0x3c74a385a63d07a7, 0x3fef5818dcfba487, 0xbc82919e2040220f, 0x3fef60e316c98398,
    0x3c8e5a50d5c192ac, 0x3fef69e603db3285, 0x3c843a59ac016b4b, 0x3fef7321f301b460,
    0xbc82d52107b43e1f, 0x3fef7c97337b9b5f, 0xbc892ab93b470dc9, 0x3fef864614f5a129,
    0x3c74b604603a88d3, 0x3fef902ee78b3ff6, 0x3c83c5ec519d7271, 0x3fef9a51fbc74c83,
    0xbc8ff7128fd391f0, 0x3fefa4afa2a490da, 0xbc8dae98e223747d, 0x3fefaf482d8e67f1,
    0x3c8ec3bc41aa2008, 0x3fefba1bee615a27, 0x3c842b94c3a9eb32, 0x3fefc52b376bba97,
    0x3c8a64a931d185ee, 0x3fefd0765b6e4540, 0xbc8e37bae43be3ed, 0x3fefdbfdad9cbe14,
    0x3c77893b4d91cd9d, 0x3fefe7c1819e90d8, 0x3c5305c14160cc89, 0x3feff3c22b8f71f1,
};

/* exp(x) for x <= 0 (or NaN), bit for bit what glibc's exp (>= 2.28,
 * sysdeps/ieee754/dbl-64/e_exp.c) returns on x86-64 with FMA, where the
 * library runs that file built with -mfma: x = k ln2/128 + r, exp(x) =
 * 2^(k/128) (1 + tail + r + C2 r^2 + C3 r^3 + C4 r^4 + C5 r^5). The constants
 * are glibc's (they fix its roundings); the fused multiply-adds are where GCC
 * fuses that file (a product whose one use is a sum in the same basic
 * block), and every other operation is an explicit _rn one, so that nvcc
 * fuses nothing more. Below 2^-1022 (x < -708) glibc's subnormal path is
 * followed too. Checked against the host's exp by tests/gpu/test_sample.c. */
__device__ __forceinline__ double exp_glibc_(double x)
{
    const double InvLn2N = 0x1.71547652b82fep0 * 128, NegLn2hiN = -0x1.62e42fefa0000p-8,
                 NegLn2loN = -0x1.cf79abc9e3b3ap-47, Shift = 0x1.8p52, C2 = 0x1.ffffffffffdbdp-2,
                 C3 = 0x1.555555555543cp-3, C4 = 0x1.55555cf172b91p-5, C5 = 0x1.1111167a4d017p-7;
    const uint32_t top = (uint32_t)((uint64_t)__double_as_longlong(x) >> 52) & 0x7ffu;
    bool big = false;
    if (top - 0x3c9u >= 0x408u - 0x3c9u) { /* |x| < 2^-54, |x| >= 512, inf or NaN */
        if (top - 0x3c9u >= 0x80000000u)
            return __dadd_rn(1.0, x);
        if (top >= 0x409u) /* |x| >= 1024 */
            return x == -INFINITY ? 0.0 : top == 0x7ffu ? __dadd_rn(1.0, x) : x < 0.0 ? 0.0 : INFINITY;
        big = true;
    }
    const double kz = __fma_rn(InvLn2N, x, Shift); /* k in its low bits */
    const uint64_t ki = (uint64_t)__double_as_longlong(kz);
    const double kd = __dsub_rn(kz, Shift);
    const double r = __fma_rn(kd, NegLn2loN, __fma_rn(kd, NegLn2hiN, x));
    const double tail = __longlong_as_double((long long)EXP_TAB[2 * (ki % 128)]);
    uint64_t sbits = EXP_TAB[2 * (ki % 128) + 1] + (ki << 45);
    const double r2 = __dmul_rn(r, r);
    const double tmp = __fma_rn(__dmul_rn(r2, r2), __fma_rn(r, C5, C4),
                                __fma_rn(r2, __fma_rn(r, C3, C2), __dadd_rn(tail, r)));
    if (!big) {
        const double sc = __longlong_as_double((long long)sbits);
        return __fma_rn(sc, tmp, sc);
    }
    if (!(ki & 0x80000000u)) { /* k > 0: x >= 512, overflow side (unused here) */
        const double sc = __longlong_as_double((long long)(sbits - (1009ull << 52)));
        return __dmul_rn(0x1p1009, __fma_rn(sc, tmp, sc));
    }
    /* k < 0: scale by 2^1022 and round once into the subnormal range. The
     * product sc * tmp has two uses in two blocks, so glibc's build does not
     * fuse it. */
    const double sc = __longlong_as_double((long long)(sbits + (1022ull << 52))), st = __dmul_rn(sc, tmp);
    double y = __dadd_rn(sc, st);
    if (y < 1.0) {
        double lo = __dadd_rn(__dsub_rn(sc, y), st);
        const double hi = __dadd_rn(1.0, y);
        lo = __dadd_rn(__dadd_rn(__dsub_rn(1.0, hi), y), lo);
        y = __dsub_rn(__dadd_rn(hi, lo), 1.0);
        if (y == 0.0)
            y = 0.0;
    }
    return __dmul_rn(0x1p-1022, y);
}

/* ==== pieces ============================================================================= */

/* kd_gen_rng (teacher/generate.c: xoshiro256** seeded by chained splitmix64)
 * then one kd_rng_uniform (core/rng.c) */
__device__ __forceinline__ uint64_t splitmix_(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__device__ double gen_uniform_(const kd_cu_sample_row &c)
{
    uint64_t s[4], x = c.seed ^ 0x67656e6572617465ull;
    const uint64_t mul[3] = {0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull};
    const uint64_t key[3] = {c.prompt, c.sample, c.t};
    for (int i = 0; i < 4; i++)
        s[i] = splitmix_(&x);
    for (int r = 0; r < 3; r++) {
        x = s[r] ^ (key[r] * mul[r]);
        for (int i = 0; i < 4; i++)
            s[i] = splitmix_(&x);
    }
    const uint64_t m = s[1] * 5, out = ((m << 7) | (m >> 57)) * 9;
    return __dmul_rn((double)(out >> 11), 0x1.0p-53);
}

__device__ __forceinline__ uint32_t key_(float l)
{
    const uint32_t u = l == 0.0f ? 0u : __float_as_uint(l);
    return (u >> 31) ? ~u : u | 0x80000000u;
}

__device__ __forceinline__ float unkey_(uint32_t k)
{
    return __uint_as_float((k >> 31) ? k & 0x7fffffffu : ~k);
}

/* weight_ of sampler.c: exp(((double)l - lmax) / T); dividing by 1 is exact */
__device__ __forceinline__ double weight_(float l, float lmax, double T)
{
    const double d = __dsub_rn((double)l, (double)lmax);
    return exp_glibc_(T == 1.0 ? d : __ddiv_rn(d, T));
}

/* w (in [0, 1]) in 2^-64 fixed point, to nearest */
__device__ __forceinline__ u128 fix_(double w)
{
    return w >= 1.0 ? (u128)1 << 64 : (u128)__double2ull_rn(__dmul_rn(w, 0x1p64));
}

/* fix_(weight_(l)), without the exp where it is 0: w < e^-46 < 2^-66 */
__device__ __forceinline__ u128 mass_(float l, float lmax, double T)
{
    return (double)l - (double)lmax < -46.0 * T ? 0 : fix_(weight_(l, lmax, T));
}

/* ==== shared memory ====================================================================== */

struct hist_ {
    uint32_t cnt[NBIN];            /* keys per bin */
    unsigned long long lo[NBIN];   /* their mass, 2^-64 fixed point: low 64 bits */
    uint32_t hi[NBIN];             /* and high bits */
};

/* the dynamic shared memory, by stage: the passes (list and histogram), the
 * draw over the list (weights in place of the histogram), the draw over the
 * row (the staging of 32 logits of each block, then one block) */
union shm_ {
    struct {
        uint64_t list[CAP]; /* id << 32 | the logit's bits */
        union {
            hist_ h;
            double wl[CAP];
        };
    } c;
    double stage[NBLK][CH + 1]; /* + 1: thread j reads row j without bank conflicts */
};

/* the row's state, shared by its threads */
struct row_ {
    float lmax, thr;    /* the largest logit; kept: l > thr, or l == thr and id < tie_end */
    int best, tie_end;
    int n;              /* entries in the candidate list; -1: none, the passes read the row */
    int d, ncomp, blk, pick, tie_id; /* results of select_, append_, the walk, nth_tie_ */
    uint32_t cabove;    /* select_: keys in the bins above d */
    u128 above, total, need;
    double lse, ub, red[NW];
    int wcnt[NW];
    double bsum[NBLK];
};

/* the source of a pass: the row, or the candidate list (sorted by id once filled) */
struct src_ {
    const float *x;
    const uint64_t *list;
    int n;
    __device__ float val(int j) const { return list ? __uint_as_float((uint32_t)list[j]) : x[j]; }
    __device__ int id(int j) const { return list ? (int)(list[j] >> 32) : j; }
};

/* ==== block-level helpers ================================================================== */

__device__ __forceinline__ u128 hmass_(const hist_ &h, int b)
{
    return (u128)h.hi[b] << 64 | h.lo[b];
}

__device__ __forceinline__ u128 shfl_down128_(u128 v, int o)
{
    const unsigned long long lo = __shfl_down_sync(FULL, (unsigned long long)v, o);
    const unsigned long long hi = __shfl_down_sync(FULL, (unsigned long long)(v >> 64), o);
    return (u128)hi << 64 | lo;
}

/* Add this lane's key to bin b of the histogram when `in`, with its fixed
 * point mass f when `mass`: integer sums, the same whatever the order. Each
 * lane adds its own (conflicts on a bin serialize, few in a spread row); when
 * every lane is in one bin (a row of equal logits, a digit deep in a peak)
 * the warp sums first (in 3 pieces of at most 22 bits, so the sums fit 32
 * bits) and one lane adds. Call with the whole warp. */
__device__ __forceinline__ void add128_(hist_ &h, uint32_t b, u128 t)
{
    const unsigned long long a = (unsigned long long)t, old = atomicAdd(&h.lo[b], a);
    const uint32_t c = (uint32_t)(t >> 64) + (old + a < old); /* the carry */
    if (c)
        atomicAdd(&h.hi[b], c);
}

__device__ void hist_add_(hist_ &h, bool in, uint32_t b, u128 f, bool mass)
{
    const unsigned act = __ballot_sync(FULL, in);
    if (!act)
        return;
    const int lane = threadIdx.x & 31, lead = __ffs(act) - 1;
    const uint32_t b0 = __shfl_sync(FULL, b, lead);
    if (__all_sync(FULL, !in || b == b0)) {
        if (mass) {
            const uint64_t flo = (uint64_t)f;
            const uint32_t p0 = __reduce_add_sync(FULL, in ? (uint32_t)flo & 0x3fffffu : 0u);
            const uint32_t p1 = __reduce_add_sync(FULL, in ? (uint32_t)(flo >> 22) & 0x1fffffu : 0u);
            const uint32_t p2 = __reduce_add_sync(FULL, in ? (uint32_t)(flo >> 43) | (uint32_t)(f >> 64) << 21 : 0u);
            if (lane == lead)
                add128_(h, b0, (u128)p0 + ((u128)p1 << 22) + ((u128)p2 << 43));
        }
        if (lane == lead)
            atomicAdd(&h.cnt[b0], (uint32_t)__popc(act));
        return;
    }
    if (in) {
        atomicAdd(&h.cnt[b], 1u);
        if (mass && f)
            add128_(h, b, f);
    }
}

/* Append (l, id) to the candidate list when c, in no particular order (sorted
 * later). Call with the whole warp. */
__device__ void append_(uint64_t *list, int *n, bool c, float l, int id)
{
    const unsigned m = __ballot_sync(FULL, c);
    if (!m)
        return;
    const int lane = threadIdx.x & 31, lead = __ffs(m) - 1;
    int at = 0;
    if (lane == lead)
        at = atomicAdd(n, __popc(m));
    at = __shfl_sync(FULL, at, lead) + __popc(m & ((1u << lane) - 1u));
    if (c && at < CAP)
        list[at] = (uint64_t)(uint32_t)id << 32 | __float_as_uint(l);
}

/* Sort the list's n entries ascending (so by id): a bitonic sort, padded to a
 * power of two with entries that sort last. */
__device__ void sort_list_(uint64_t *a, int n)
{
    int n2 = 1;
    while (n2 < n)
        n2 <<= 1;
    for (int i = n + threadIdx.x; i < n2; i += NT)
        a[i] = ~0ull;
    __syncthreads();
    for (int k = 2; k <= n2; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < n2; i += NT) {
                const int p = i ^ j;
                if (p > i) {
                    const uint64_t x = a[i], y = a[p];
                    if ((x > y) == ((i & k) == 0))
                        a[i] = y, a[p] = x;
                }
            }
            __syncthreads();
        }
}

/* One radix pass over src: every survivor (l >= lo, not -inf) whose key has
 * the digits of pref above bit shift + nbits is counted, and weighed when
 * mass, in bin (key >> shift) of nbits. With comp, every survivor whose key is
 * >= cmin is also appended to the list (src is then the row). */
__device__ void pass_(union shm_ &sm, row_ &rs, const src_ &s, float lo, uint32_t pref, int shift, int nbits,
                      bool mass, bool comp, uint32_t cmin, float lmax, double T)
{
    hist_ &h = sm.c.h;
    const int nb = 1 << nbits, top = shift + nbits;
    for (int b = threadIdx.x; b < nb; b += NT)
        h.cnt[b] = 0, h.lo[b] = 0, h.hi[b] = 0;
    __syncthreads();
    for (int base = 0; base < s.n; base += NT * UNR) {
        float v[UNR];
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int j = base + u * NT + (int)threadIdx.x;
            v[u] = j < s.n ? s.val(j) : -INFINITY; /* past the end: not a survivor */
        }
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int j = base + u * NT + (int)threadIdx.x;
            const float l = v[u];
            const uint32_t key = key_(l);
            const bool surv = l >= lo && l != -INFINITY;
            if (comp) {
                const bool c = surv && key >= cmin;
                append_(sm.c.list, &rs.ncomp, c, l, c ? s.id(j) : 0);
            }
            const bool in = surv && (top >= 32 || (key >> top) == (pref >> top));
            const u128 f = mass && in ? mass_(l, lmax, T) : 0;
            hist_add_(h, in, (key >> shift) & (uint32_t)(nb - 1), f, mass);
        }
    }
    __syncthreads();
}

/* The bin d where the histogram's running total from the top bin down reaches
 * need: above(d) < need <= above(d) + h(d), h the counts, or the masses when
 * mass. With frac > 0, need is ceil(frac * total) instead (at least 1; top-p's
 * target). Sets rs.d (-1 when the total falls short), rs.above (the measure of
 * the bins above d), rs.cabove (their count), rs.total and rs.need. Warp 0
 * works; call with every thread. */
__device__ void select_(union shm_ &sm, row_ &rs, int nbits, bool mass, u128 need, double frac)
{
    if (threadIdx.x < 32) {
        const hist_ &h = sm.c.h;
        const int lane = threadIdx.x, per = (1 << nbits) / 32, b0 = lane * per;
        u128 m = 0;
        uint32_t c = 0;
        for (int b = b0; b < b0 + per; b++) {
            m += mass ? hmass_(h, b) : (u128)h.cnt[b];
            c += h.cnt[b];
        }
        u128 mi = m; /* inclusive sums from the top lane down */
        uint32_t ci = c;
        for (int o = 1; o < 32; o <<= 1) {
            const u128 t = shfl_down128_(mi, o);
            const uint32_t tc = __shfl_down_sync(FULL, ci, o);
            if (lane + o < 32)
                mi += t, ci += tc;
        }
        const u128 total = (u128)__shfl_sync(FULL, (unsigned long long)(mi >> 64), 0) << 64 |
                           __shfl_sync(FULL, (unsigned long long)mi, 0);
        if (frac > 0.0) {
            need = (u128)ceil(frac * (double)total);
            need = need < 1 ? 1 : need > total ? total : need;
        }
        if (lane == 0)
            rs.d = -1, rs.total = total, rs.need = need;
        __syncwarp();
        u128 acc = mi - m;
        uint32_t cacc = ci - c;
        if (acc < need && need <= mi)
            for (int b = b0 + per - 1; b >= b0; b--) {
                const u128 hb = mass ? hmass_(h, b) : (u128)h.cnt[b];
                if (need <= acc + hb) {
                    rs.d = b, rs.above = acc, rs.cabove = cacc;
                    break;
                }
                acc += hb, cacc += h.cnt[b];
            }
    }
    __syncthreads();
}

/* The id of the c-th (from 1) element equal to v, in src's order (ids
 * ascending). Each warp counts in its slice; the warp whose slice holds it
 * finds it. */
__device__ int nth_tie_(row_ &rs, const src_ &s, float v, int c)
{
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int seg = ((s.n + NW - 1) / NW + 31) & ~31, j0 = min(s.n, w * seg), j1 = min(s.n, j0 + seg);
    int cnt = 0;
    for (int j = j0; j < j1; j += 32)
        cnt += __popc(__ballot_sync(FULL, j + lane < j1 && s.val(j + lane) == v));
    if (lane == 0)
        rs.wcnt[w] = cnt;
    __syncthreads();
    int pre = 0;
    for (int q = 0; q < w; q++)
        pre += rs.wcnt[q];
    if (pre < c && c <= pre + cnt)
        for (int j = j0; j < j1; j += 32) {
            const unsigned m = __ballot_sync(FULL, j + lane < j1 && s.val(j + lane) == v);
            if (pre + __popc(m) >= c) {
                unsigned mm = m;
                for (int q = pre + 1; q < c; q++)
                    mm &= mm - 1; /* drop the lowest set bit */
                if (lane == 0)
                    rs.tie_id = s.id(j + __ffs(mm) - 1);
                break;
            }
            pre += __popc(m);
        }
    __syncthreads();
    return rs.tie_id;
}

/* kept_weight_ of sampler.c, the tie count replaced by its id bound */
__device__ __forceinline__ double kept_(const row_ &rs, float l, int i, double T, double min_w)
{
    if (!(l >= rs.thr) || l == -INFINITY || (l == rs.thr && i >= rs.tie_end))
        return 0.0;
    const double w = weight_(l, rs.lmax, T);
    return w >= min_w ? w : 0.0;
}

/* thread 0: the block holding u = U Z (Z the sum of the block sums in block
 * order), or, when rounding puts u past the end, the last block with mass;
 * rs.ub = u less the blocks before it. As draw_ in sampler.c. */
__device__ void walk_blocks_(row_ &rs, int nb, double U)
{
    double Z = 0.0;
    for (int j = 0; j < nb; j++)
        Z = __dadd_rn(Z, rs.bsum[j]);
    const double u = __dmul_rn(U, Z);
    double acc = 0.0;
    int b = -1, last = -1;
    for (int j = 0; j < nb; j++) {
        if (!(rs.bsum[j] > 0.0))
            continue;
        last = j;
        if (u < __dadd_rn(acc, rs.bsum[j])) {
            b = j;
            break;
        }
        acc = __dadd_rn(acc, rs.bsum[j]);
    }
    rs.blk = b < 0 ? last : b;
    rs.ub = __dsub_rn(u, acc);
}

/* thread 0: the token within the chosen block, weights w[0..n) of ids
 * id0 + j (ids NULL) or ids[j] >> 32 (list entries) */
__device__ int walk_in_(const double *w, const uint64_t *ids, int id0, int n, double ub)
{
    double s = 0.0;
    int pick = -1;
    for (int j = 0; j < n; j++)
        if (w[j] > 0.0) {
            pick = ids ? (int)(ids[j] >> 32) : id0 + j;
            s = __dadd_rn(s, w[j]);
            if (ub < s)
                break;
        }
    return pick;
}

/* the first list entry with id >= i */
__device__ __forceinline__ int lower_bound_(const uint64_t *list, int n, int i)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if ((int)(list[mid] >> 32) < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ==== the kernel ============================================================================ */

__global__ void __launch_bounds__(NT, 2) sample_kernel(int32_t *ids, float *logprob, const float *logits,
                                                       const kd_cu_sample_row *rows, int V)
{
    extern __shared__ __align__(16) unsigned char smem_[];
    union shm_ &sm = *reinterpret_cast<union shm_ *>(smem_);
    __shared__ row_ rs;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const kd_cu_sample_row cfg = rows[blockIdx.x];
    const float *x = logits + (int64_t)blockIdx.x * V;
    const double T = cfg.temperature;
    if (!(isfinite(T) && T >= 0.0) || cfg.top_k < 0 || !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) ||
        !(cfg.min_p >= 0.0 && cfg.min_p <= 1.0)) { /* kd_sampler_check's refusals */
        if (tid == 0) {
            ids[blockIdx.x] = -1;
            if (logprob)
                logprob[blockIdx.x] = NAN;
        }
        return;
    }
    const bool topk = T > 0.0 && cfg.top_k > 0 && cfg.top_k < V;

    /* ---- A: NaN, the first argmax, the online logsumexp, top-k's first digit ---- */
    if (topk) {
        for (int b = tid; b < NBIN; b += NT)
            sm.c.h.cnt[b] = 0;
        __syncthreads();
    }
    float m = -INFINITY, mo = -INFINITY;
    int bi = -1, nan = 0;
    double so = 0.0; /* sum of exp(l - mo) over this thread's logits */
    for (int base = 0; base < V; base += NT * UNR) {
        float v[UNR];
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int j = base + u * NT + tid;
            v[u] = j < V ? x[j] : -INFINITY;
        }
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int j = base + u * NT + tid;
            const float l = v[u];
            if (l != l) {
                nan = 1;
            } else if (j < V) {
                if (bi < 0 || l > m)
                    m = l, bi = j;
                if (logprob && l != -INFINITY) {
                    if (l > mo)
                        so *= (double)expf(mo - l), mo = l;
                    so += (double)expf(l - mo);
                }
            }
            if (topk)
                hist_add_(sm.c.h, l == l && l != -INFINITY, key_(l) >> 21, 0, false);
        }
    }
    for (int o = 16; o > 0; o >>= 1) { /* larger, or equal and first */
        const float om = __shfl_xor_sync(FULL, m, o);
        const int ob = __shfl_xor_sync(FULL, bi, o);
        if (ob >= 0 && (bi < 0 || om > m || (om == m && ob < bi)))
            m = om, bi = ob;
    }
    if (lane == 0)
        rs.wcnt[w] = bi, rs.red[w] = (double)m;
    nan = __syncthreads_or(nan);
    if (tid == 0) {
        int b = -1;
        float bm = -INFINITY;
        for (int q = 0; q < NW; q++) {
            const int ob = rs.wcnt[q];
            const float om = (float)rs.red[q];
            if (ob >= 0 && (b < 0 || om > bm || (om == bm && ob < b)))
                bm = om, b = ob;
        }
        rs.best = b < 0 ? 0 : b, rs.lmax = b < 0 ? -INFINITY : bm;
    }
    __syncthreads();
    const float lmax = rs.lmax;
    if (logprob) { /* lse = lmax + log sum exp(l - lmax), as kd_logsumexp */
        double t = mo == -INFINITY ? 0.0 : so * exp((double)mo - (double)lmax);
        for (int o = 16; o > 0; o >>= 1)
            t += __shfl_xor_sync(FULL, t, o);
        __syncthreads();
        if (lane == 0)
            rs.red[w] = t;
        __syncthreads();
        if (tid == 0) {
            double z = 0.0;
            for (int q = 0; q < NW; q++)
                z += rs.red[q];
            rs.lse = isfinite(lmax) ? (double)lmax + log(z) : NAN;
        }
        __syncthreads();
    }
    const bool sampling = T > 0.0;
    if (nan || (sampling && !isfinite(lmax))) { /* kd_sample's KD_E_RANGE */
        if (tid == 0) {
            ids[blockIdx.x] = -1;
            if (logprob)
                logprob[blockIdx.x] = NAN;
        }
        return;
    }
    if (!sampling) {
        if (tid == 0) {
            ids[blockIdx.x] = rs.best;
            if (logprob)
                logprob[blockIdx.x] = (float)((double)x[rs.best] - rs.lse);
        }
        return;
    }
    const double U = gen_uniform_(cfg);
    if (tid == 0)
        rs.thr = -INFINITY, rs.tie_end = V, rs.n = -1, rs.ncomp = 0;
    src_ s = {x, nullptr, V};

    /* ---- top-k: the k-th largest logit, a radix select on counts ---- */
    if (topk) {
        select_(sm, rs, 11, false, (u128)cfg.top_k, 0.0);
        if (rs.d >= 0) { /* else fewer than k finite logits: no cut */
            uint32_t key = (uint32_t)rs.d << 21;
            uint32_t need = (uint32_t)cfg.top_k - (uint32_t)rs.above;
            const bool comp = rs.cabove + sm.c.h.cnt[rs.d] <= CAP;
            __syncthreads();
            pass_(sm, rs, s, -INFINITY, key, 10, 11, false, comp, key, lmax, T);
            if (comp) {
                if (tid == 0)
                    rs.n = rs.ncomp;
                __syncthreads();
                sort_list_(sm.c.list, rs.n);
                s = src_{x, sm.c.list, rs.n};
            }
            select_(sm, rs, 11, false, need, 0.0);
            key |= (uint32_t)rs.d << 10, need -= (uint32_t)rs.above;
            pass_(sm, rs, s, -INFINITY, key, 0, 10, false, false, 0, lmax, T);
            select_(sm, rs, 10, false, need, 0.0);
            if (tid == 0)
                rs.thr = unkey_(key | (uint32_t)rs.d);
            __syncthreads();
        }
    }

    /* ---- top-p: the cut in the ranking, a radix select on mass ---- */
    if (cfg.top_p < 1.0) {
        const float floor_ = rs.thr;
        pass_(sm, rs, s, floor_, 0, 21, 11, true, false, 0, lmax, T);
        select_(sm, rs, 11, true, 0, cfg.top_p);
        uint32_t key = (uint32_t)rs.d << 21;
        const u128 target = rs.need;
        u128 above = rs.above;
        const bool comp = rs.n < 0 && rs.cabove + sm.c.h.cnt[rs.d] <= CAP;
        __syncthreads();
        pass_(sm, rs, s, floor_, key, 10, 11, true, comp, key, lmax, T);
        if (comp) {
            if (tid == 0)
                rs.n = rs.ncomp;
            __syncthreads();
            sort_list_(sm.c.list, rs.n);
            s = src_{x, sm.c.list, rs.n};
        }
        select_(sm, rs, 11, true, target - above, 0.0);
        key |= (uint32_t)rs.d << 10, above += rs.above;
        pass_(sm, rs, s, floor_, key, 0, 10, true, false, 0, lmax, T);
        select_(sm, rs, 10, true, target - above, 0.0);
        key |= (uint32_t)rs.d, above += rs.above;
        /* the cut is in the run of v: keep the first c of its nv tokens */
        const float v = unkey_(key);
        const int nv = (int)sm.c.h.cnt[rs.d];
        const u128 wv = fix_(weight_(v, lmax, T));
        const u128 c = (target - above + wv - 1) / wv;
        __syncthreads();
        const int tie_end = c < (u128)nv ? nth_tie_(rs, s, v, (int)c) + 1 : V;
        if (tid == 0)
            rs.thr = v, rs.tie_end = tie_end;
        __syncthreads();
    }

    /* ---- the draw: block sums, the walk ---- */
    const double min_w = cfg.min_p;
    const int bs = V / NBLK + 1, nb = (V + bs - 1) / bs;
    if (rs.n >= 0) { /* over the list */
        const int n = rs.n;
        for (int j = tid; j < n; j += NT)
            sm.c.wl[j] = kept_(rs, s.val(j), s.id(j), T, min_w);
        __syncthreads();
        if (tid < NBLK) {
            const int j1 = lower_bound_(sm.c.list, n, (tid + 1) * bs);
            double sum = 0.0;
            for (int j = lower_bound_(sm.c.list, n, tid * bs); j < j1; j++)
                sum = __dadd_rn(sum, sm.c.wl[j]);
            rs.bsum[tid] = sum;
        }
        __syncthreads();
        if (tid == 0) {
            walk_blocks_(rs, nb, U);
            const int j0 = lower_bound_(sm.c.list, n, rs.blk * bs), j1 = lower_bound_(sm.c.list, n, (rs.blk + 1) * bs);
            rs.pick = walk_in_(sm.c.wl + j0, sm.c.list + j0, 0, j1 - j0, rs.ub);
        }
    } else { /* over the row, 32 logits of each block per round */
        double sum = 0.0;
        for (int c0 = 0; c0 < bs; c0 += CH) {
            float v[NBLK * CH / NT];
#pragma unroll
            for (int q = 0; q < NBLK * CH / NT; q++) {
                const int e = q * NT + tid, b = e / CH, o = e % CH, i = b * bs + c0 + o;
                v[q] = c0 + o < bs && i < V ? x[i] : -INFINITY;
            }
#pragma unroll
            for (int q = 0; q < NBLK * CH / NT; q++) {
                const int e = q * NT + tid, b = e / CH, o = e % CH;
                sm.stage[b][o] = kept_(rs, v[q], b * bs + c0 + o, T, min_w);
            }
            __syncthreads();
            if (tid < NBLK)
                for (int o = 0; o < CH; o++)
                    sum = __dadd_rn(sum, sm.stage[tid][o]); /* + 0 past the block: no change */
            __syncthreads();
        }
        if (tid < NBLK)
            rs.bsum[tid] = sum;
        __syncthreads();
        if (tid == 0)
            walk_blocks_(rs, nb, U);
        __syncthreads();
        const int i0 = rs.blk * bs, n = min(V - i0, bs);
        double *st = &sm.stage[0][0];
        for (int j = tid; j < n; j += NT)
            st[j] = kept_(rs, x[i0 + j], i0 + j, T, min_w);
        __syncthreads();
        if (tid == 0)
            rs.pick = walk_in_(st, nullptr, i0, n, rs.ub);
    }
    if (tid == 0) {
        ids[blockIdx.x] = rs.pick;
        if (logprob)
            logprob[blockIdx.x] = (float)((double)x[rs.pick] - rs.lse);
    }
}

__global__ void exp_kernel(double *y, const double *x, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = exp_glibc_(x[i]);
}

/* ==== launchers ============================================================================ */

extern "C" int kd_cu_sample(int32_t *ids, float *logprob, const float *logits, const kd_cu_sample_row *rows,
                            int64_t S, int64_t V, kd_cu *cu)
{
    if (S < 0 || V < 1 || V > KD_CU_SAMPLE_MAXV || S > 0x7fffffff)
        return kd_err(KD_E_CUDA, "sample: %lld rows of %lld logits (need 1 <= V <= %d)", (long long)S, (long long)V,
                      KD_CU_SAMPLE_MAXV);
    if (S == 0)
        return KD_OK;
    const size_t shm = sizeof(union shm_);
    CUDA_TRY(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    sample_kernel<<<(unsigned)S, NT, shm, (cudaStream_t)cu->stream>>>(ids, logprob, logits, rows, (int)V);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}

extern "C" int kd_cu_sample_exp(double *y, const double *x, int64_t n, kd_cu *cu)
{
    if (n <= 0)
        return KD_OK;
    exp_kernel<<<(unsigned)((n + 255) / 256), 256, 0, (cudaStream_t)cu->stream>>>(y, x, n);
    CUDA_TRY(cudaGetLastError());
    return KD_OK;
}
