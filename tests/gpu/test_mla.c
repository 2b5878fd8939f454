/* test_mla.c (gpu) - MLA decode attention over a paged latent cache
 * (core/cuda/mla.cu) against kd_attention_cached on the gathered rows, as
 * teacher/model.c calls it: DeepSeek's R = 512 and Dr = 64 with 16 and 20
 * heads (a partial head tile), the tiny fixtures' R = 64, Dr = 16; lengths
 * of 1, under, at and over a 64-key tile, and long; block tables in shuffled
 * order, with sequences that share their first blocks (forked samples);
 * each case whole and split over the keys (kd_cu_mla_decode_split: 2, 3 and
 * 8 runs, more runs than a short sequence has tiles included). Then timing
 * lines (not assertions) at a Moonlight decode shape and at few long
 * sequences, whole and split. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
#include "core/cuda/cuops.h"
#include "core/log.h"
#include "core/ops.h"
#include "core/rng.h"

static void case_(const int32_t *lens, int S, int64_t H, int64_t R, int64_t Dr, int64_t block, int share)
{
    const int64_t D = R + Dr;
    int64_t maxb = 0, total = 0;
    for (int s = 0; s < S; s++) {
        int64_t nb = (lens[s] + block - 1) / block;
        maxb = nb > maxb ? nb : maxb;
        total += nb;
    }
    /* blocks handed out in a shuffled order; with share, sequence s > 0 reuses the first
     * half of sequence 0's blocks where it has that many positions */
    const int64_t nblocks = total + 3;
    uint64_t *perm = malloc((size_t)nblocks * sizeof *perm);
    for (int64_t i = 0; i < nblocks; i++)
        perm[i] = (uint64_t)i;
    kd_rng_shuffle_u64(&rng, perm, (size_t)nblocks);
    int32_t *table = calloc((size_t)(S * maxb), sizeof *table);
    int64_t next = 0;
    for (int s = 0; s < S; s++) {
        int64_t nb = (lens[s] + block - 1) / block;
        for (int64_t j = 0; j < nb; j++) {
            int shared = share && s > 0 && j < (lens[0] + block - 1) / block / 2 && (j + 1) * block <= lens[s];
            table[s * maxb + j] = shared ? table[j] : (int32_t)perm[next++];
        }
    }
    float *pool = rnd(nblocks * block * D, 1), *q = rnd(S * H * D, 1);
    const float scale = 1.0f / sqrtf((float)(128 + 64)); /* DeepSeek's qk head dim */
    /* the reference, sequence by sequence on its gathered rows */
    float *want = malloc((size_t)(S * H * R) * sizeof *want);
    for (int s = 0; s < S; s++) {
        float *rows = malloc((size_t)(lens[s] * D) * sizeof *rows), *scr = malloc((size_t)lens[s] * sizeof *scr);
        for (int64_t t = 0; t < lens[s]; t++)
            memcpy(rows + t * D, pool + ((int64_t)table[s * maxb + t / block] * block + t % block) * D,
                   (size_t)D * sizeof *rows);
        kd_attention_cached(want + s * H * R, q + s * H * D, rows, rows, D, D, lens[s] - 1, 1, H, 1, D, R, scale, scr);
        free(rows), free(scr);
    }
    kd_bf16 *dq = up16(q, S * H * D), *dpool = up16(pool, nblocks * block * D);
    int32_t *dtab = dev((size_t)(S * maxb) * 4), *dlens = dev((size_t)S * 4);
    float *dout = dev((size_t)(S * H * R) * 4);
    CHECK_OK(kd_cu_upload(dtab, table, (size_t)(S * maxb) * 4, &cu));
    CHECK_OK(kd_cu_upload(dlens, lens, (size_t)S * 4, &cu));
    static const int splits[] = {1, 2, 3, 8};
    float *got = malloc((size_t)(S * H * R) * sizeof *got);
    float *work = dev((size_t)(8 * S * H * (R + 2)) * 4);
    for (size_t si = 0; si < sizeof splits / sizeof splits[0]; si++) {
        CHECK_OK(kd_cu_memset0(dout, (size_t)(S * H * R) * 4, &cu));
        CHECK_OK(kd_cu_mla_decode_split(dout, dq, dpool, dtab, dlens, S, H, R, Dr, block, maxb, scale, splits[si],
                                        work, &cu));
        CHECK_OK(kd_cu_sync(&cu));
        CHECK_OK(kd_cu_download(got, dout, (size_t)(S * H * R) * 4, &cu));
        double worst = 0;
        int ws = 0;
        for (int s = 0; s < S; s++) {
            double e = rel_err(got + s * H * R, want + s * H * R, H * R);
            if (!(e <= worst))
                worst = e, ws = s;
        }
        printf("  S %d H %3lld R %3lld Dr %2lld block %2lld%s, %d split%s: worst rel err %.1e (sequence %d, %d "
               "positions)\n", S, (long long)H, (long long)R, (long long)Dr, (long long)block,
               share ? " shared prefix" : "", splits[si], splits[si] > 1 ? "s" : "", worst, ws, lens[ws]);
        CHECK(worst <= 2e-2);
    }
    kd_cu_free_ptr(work);
    free(perm), free(table), free(pool), free(q), free(want), free(got);
    kd_cu_free_ptr(dq), kd_cu_free_ptr(dpool), kd_cu_free_ptr(dtab), kd_cu_free_ptr(dlens), kd_cu_free_ptr(dout);
}

TEST(against_cpu)
{
    static const int32_t lens[] = {1, 5, 63, 64, 65, 200, 1000};
    case_(lens, 7, 16, 512, 64, 16, 0);
    case_(lens, 7, 20, 512, 64, 64, 1);
    static const int32_t tiny[] = {1, 9, 100, 100};
    case_(tiny, 4, 4, 64, 16, 8, 1);
    static const int32_t one[] = {300};
    case_(one, 1, 128, 512, 64, 64, 0); /* DeepSeek-V3's 128 heads */
}

TEST(errors)
{
    CHECK_ERR(kd_cu_mla_decode(NULL, NULL, NULL, NULL, NULL, 1, 16, 48, 64, 16, 1, 0.1f, &cu), KD_E_CUDA, "R 48");
    CHECK_ERR(kd_cu_mla_decode(NULL, NULL, NULL, NULL, NULL, 1, 16, 512, 60, 16, 1, 0.1f, &cu), KD_E_CUDA, "Dr 60");
    CHECK_ERR(kd_cu_mla_decode(NULL, NULL, NULL, NULL, NULL, 1, 16, 512, 64, 16, 1, -1.0f, &cu), KD_E_CUDA,
              "scale -1");
    CHECK_ERR(kd_cu_mla_decode_split(NULL, NULL, NULL, NULL, NULL, 1, 16, 512, 64, 16, 1, 0.1f, 0, NULL, &cu), KD_E_CUDA,
              "0 splits");
    CHECK_ERR(kd_cu_mla_decode_split(NULL, NULL, NULL, NULL, NULL, 1, 16, 512, 64, 16, 1, 0.1f, 4, NULL, &cu), KD_E_CUDA,
              "work buffer");
}

/* timing: Moonlight's 16 heads, blocks of 64; 256 sequences of 1024 positions, and 8 of 16384
 * (long reasoning traces, few sequences: where splitting the keys matters), whole and split */
static void timing_(int S, int L, int splits)
{
    const int64_t H = 16, R = 512, Dr = 64, D = R + Dr, block = 64, maxb = L / block;
    kd_bf16 *dq = dev((size_t)(S * H * D) * 2), *dpool = dev((size_t)(S * maxb * block * D) * 2);
    float *dout = dev((size_t)(S * H * R) * 4), *work = dev((size_t)(splits * S * H * (R + 2)) * 4);
    int32_t *table = malloc((size_t)(S * maxb) * sizeof *table), *lens = malloc((size_t)S * sizeof *lens);
    for (int64_t i = 0; i < S * maxb; i++)
        table[i] = (int32_t)i;
    for (int s = 0; s < S; s++)
        lens[s] = L;
    int32_t *dtab = dev((size_t)(S * maxb) * 4), *dlens = dev((size_t)S * 4);
    CHECK_OK(kd_cu_upload(dtab, table, (size_t)(S * maxb) * 4, &cu));
    CHECK_OK(kd_cu_upload(dlens, lens, (size_t)S * 4, &cu));
    for (int pass = 0; pass < 2; pass++) {
        CHECK_OK(kd_cu_sync(&cu));
        double t0 = kd_now();
        for (int r = 0; r < 10; r++)
            CHECK_OK(kd_cu_mla_decode_split(dout, dq, dpool, dtab, dlens, S, H, R, Dr, block, maxb, 0.07f, splits,
                                            work, &cu));
        CHECK_OK(kd_cu_sync(&cu));
        double dt = (kd_now() - t0) / 10;
        if (pass)
            printf("  timing: %d sequences x %d positions, %lld heads, R %lld + %lld, %2d split%s: %.3f ms, cache read "
                   "%.0f GB/s\n", S, L, (long long)H, (long long)R, (long long)Dr, splits, splits > 1 ? "s" : " ",
                   dt * 1e3, (double)S * L * D * 2 / dt / 1e9);
    }
    free(table), free(lens);
    kd_cu_free_ptr(dq), kd_cu_free_ptr(dpool), kd_cu_free_ptr(dout), kd_cu_free_ptr(dtab), kd_cu_free_ptr(dlens);
    kd_cu_free_ptr(work);
}

TEST(timing)
{
    timing_(256, 1024, 1);
    timing_(256, 1024, 2);
    timing_(64, 256, 1);
    timing_(64, 256, 4);
    timing_(8, 16384, 1);
    timing_(8, 16384, 16);
}

int main(void)
{
    kd_rng_seed(&rng, 11);
    if (kd_cu_init(&cu, 0) != KD_OK) {
        fprintf(stderr, "no CUDA device: %s\n", kd_strerror(KD_E_CUDA));
        return 1;
    }
    RUN(against_cpu);
    RUN(errors);
    RUN(timing);
    kd_cu_free(&cu);
    return test_summary();
}
