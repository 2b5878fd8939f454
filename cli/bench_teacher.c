/* bench_teacher.c - `distill bench teacher`: prefill and decode throughput of
 * a teacher (DeepSeek, or a dense Qwen2/Llama) on the CPU reference backend,
 * and how decode scales with the number of sequences stepped together (the
 * engine's batch). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/log.h"
#include "core/rng.h"
#include "student/model.h"
#include "teacher/model.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill bench teacher --model DIR [--prompt P] [--new N] [--batch B,B,...] [--json]\n\n"
               "Loads a model: deepseek_v3/v2 or a dense qwen2/llama (e.g. `distill init\n"
               "configs/models/tiny-deepseek-v3 DIR`), and times, for each batch size B: the\n"
               "prefill of B prompts of P random tokens (one sequence at a time; DeepSeek:\n"
               "decompressed attention), then N decode steps of all B sequences together (the\n"
               "engine's batched step over the paged cache; DeepSeek: absorbed attention).\n"
               "Peer: tools/bench_teacher_cpu.py (transformers, same shapes). Prints prefill tokens/s\n"
               "and decode tokens/s (B tokens per step). Threads: OMP_NUM_THREADS.\n\n"
               "options:\n"
               "      --model DIR    the model folder\n"
               "      --prompt P     prompt tokens (default 128)\n"
               "      --new N        decode steps (default 32)\n"
               "      --batch LIST   batch sizes (default 1,4,16)\n"
               "      --json         one JSON line per batch size\n"
               "  -h, --help         this help\n");
}

int bench_teacher(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'}, {"prompt", required_argument, NULL, 'p'},
        {"new", required_argument, NULL, 'n'},   {"batch", required_argument, NULL, 'b'},
        {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *blist = "1,4,16";
    long P = 128, N = 32;
    int json = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'h':
            usage_(stdout);
            return 0;
        case 'm':
            dir = optarg;
            break;
        case 'p':
        case 'n': {
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0 || v > 1 << 20)
                return kd_cli_usage_error("bench teacher", "--%s takes a positive integer",
                                          opt == 'p' ? "prompt" : "new");
            *(opt == 'p' ? &P : &N) = v;
            break;
        }
        case 'b':
            blist = optarg;
            break;
        case 'j':
            json = 1;
            break;
        default:
            return kd_cli_usage_error("bench teacher", "bad option");
        }
    }
    if (!dir)
        return kd_cli_usage_error("bench teacher", "--model is required");
    kd_teacher *m = NULL;
    kd_student *d = NULL;
    kd_model_config mc;
    int st = kd_model_config_load(dir, &mc);
    if (st == KD_OK)
        st = mc.arch == KD_ARCH_DEEPSEEK_V3 || mc.arch == KD_ARCH_DEEPSEEK_V2 ? kd_teacher_load(dir, &m)
                                                                           : kd_student_load(dir, &d);
    if (st)
        return kd_cli_fail(st);
    const int64_t V = mc.vocab_size;
    { /* one untimed warm-up (thread pools, first touches), as the peer's: a short prefill, one decode step */
        kd_kvpool *wp = NULL;
        kd_kvseq ws = {0}, *wsp = &ws;
        int64_t wid[8] = {1, 2, 3, 4, 5, 6, 7, 8}, wn = P < 8 ? P : 8, one = 1;
        float *wl = malloc((size_t)V * sizeof *wl);
        st = wl ? KD_OK : kd_err(KD_E_NOMEM, "bench buffers");
        if (st == KD_OK)
            st = m ? kd_teacher_kvpool_new(m, 2, 16, &wp) : kd_student_kvpool_new(d, 2, 16, &wp);
        if (st == KD_OK)
            st = m ? kd_teacher_step(m, wp, &wsp, 1, wid, &wn, KD_MLA_DECOMPRESSED, 0, wl)
                   : kd_student_step_paged(d, wp, &wsp, 1, wid, &wn, 0, wl);
        if (st == KD_OK)
            st = m ? kd_teacher_step(m, wp, &wsp, 1, wid, &one, KD_MLA_ABSORBED, 0, wl)
                   : kd_student_step_paged(d, wp, &wsp, 1, wid, &one, 0, wl);
        if (wp)
            kd_kvseq_release(wp, &ws);
        kd_kvpool_free(wp);
        free(wl);
    }
    const char *thr = getenv("OMP_NUM_THREADS");
    for (const char *p = blist; st == KD_OK && *p;) {
        char *end;
        long B = strtol(p, &end, 10);
        if (end == p || B <= 0 || B > 4096) {
            st = kd_err(KD_E_USAGE, "--batch: '%s' is not a list of positive sizes", blist);
            break;
        }
        p = *end == ',' ? end + 1 : end;
        kd_kvpool *pool = NULL;
        const int64_t bs = 16, nb = B * ((P + N + bs - 1) / bs + 1);
        kd_kvseq *seqs = calloc((size_t)B, sizeof *seqs);
        kd_kvseq **sp = calloc((size_t)B, sizeof *sp);
        int64_t *ids = malloc((size_t)(P > B ? P : B) * sizeof *ids), *nn = malloc((size_t)B * sizeof *nn);
        float *lg = malloc((size_t)(B * V) * sizeof *lg);
        if (!seqs || !sp || !ids || !nn || !lg)
            st = kd_err(KD_E_NOMEM, "bench buffers");
        if (st == KD_OK)
            st = m ? kd_teacher_kvpool_new(m, nb, bs, &pool) : kd_student_kvpool_new(d, nb, bs, &pool);
        kd_rng r;
        kd_rng_seed(&r, 11);
        double t0 = kd_now();
        for (long b = 0; st == KD_OK && b < B; b++) {
            for (long t = 0; t < P; t++)
                ids[t] = (int64_t)kd_rng_below(&r, (uint64_t)V);
            sp[b] = &seqs[b];
            int64_t n = P;
            st = m ? kd_teacher_step(m, pool, &sp[b], 1, ids, &n, KD_MLA_DECOMPRESSED, 0, lg)
                   : kd_student_step_paged(d, pool, &sp[b], 1, ids, &n, 0, lg);
        }
        double t_pre = kd_now() - t0;
        t0 = kd_now();
        for (long s = 0; st == KD_OK && s < N; s++) {
            for (long b = 0; b < B; b++) {
                ids[b] = (int64_t)kd_rng_below(&r, (uint64_t)V);
                nn[b] = 1;
            }
            st = m ? kd_teacher_step(m, pool, sp, (int)B, ids, nn, KD_MLA_ABSORBED, 0, lg)
                   : kd_student_step_paged(d, pool, sp, (int)B, ids, nn, 0, lg);
        }
        double t_dec = kd_now() - t0;
        if (st == KD_OK) {
            double pre = (double)(B * P) / t_pre, dec = (double)(B * N) / t_dec;
            if (json)
                printf("{\"bench\": \"teacher\", \"backend\": \"cpu-fp32\", \"model\": \"%s\", \"batch\": %ld, "
                       "\"prompt\": %ld, \"new\": %ld, \"threads\": \"%s\", \"prefill_tokens_per_second\": %.1f, "
                       "\"decode_tokens_per_second\": %.1f, \"decode_ms_per_step\": %.2f}\n",
                       dir, B, P, N, thr ? thr : "all", pre, dec, t_dec * 1e3 / (double)N);
            else
                printf("bench teacher: batch %4ld: prefill %8.1f tokens/s, decode %8.1f tokens/s (%.2f ms/step), "
                       "prompt %ld, %ld steps, threads %s\n",
                       B, pre, dec, t_dec * 1e3 / (double)N, P, N, thr ? thr : "all");
        }
        for (long b = 0; seqs && pool && b < B; b++)
            kd_kvseq_release(pool, &seqs[b]);
        kd_kvpool_free(pool);
        free(seqs);
        free(sp);
        free(ids);
        free(nn);
        free(lg);
    }
    kd_teacher_free(m);
    kd_student_free(d);
    return st ? kd_cli_fail(st) : 0;
}
