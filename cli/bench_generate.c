/* bench_generate.c - `distill bench generate`: bulk generation throughput of the
 * CUDA teacher engine (teacher/cuda.h) with random weights in a real shape,
 * by number of concurrent sequences, and the fraction of the bandwidth
 * roofline each decode step reaches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/hfconfig.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/util.h"
#include "teacher/cuda.h"

#ifdef KD_HAVE_CUDA
#include "core/cuda/cuops.h"
#include "core/cuda/cusample.h"
#endif

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill bench generate --model-config DIR [--prompt P] [--new N] [--samples K]\n"
               "                              [--conc C,C,...] [--dtype bf16|fp8] [--temperature T] [--top-p P]\n"
               "                              [--graphs] [--split-kv S] [--json]\n\n"
               "Makes a DeepSeek-V3/V2 model of DIR's config.json with random bf16 weights on the\n"
               "GPU (no checkpoint is read) and, for each concurrency C: prefills ceil(C / K)\n"
               "prompts of P random tokens in one step, forks K samples from each (sharing the\n"
               "prompt's cache blocks), then decodes N tokens for all C sequences together:\n"
               "absorbed MLA over the paged latent cache, MoE by grouped GEMMs, sampling on the\n"
               "GPU (the per-sample counter-based generator), one read of the C ids per step.\n"
               "Prints output tokens/s of the decode, the step time, and the roofline: the bytes a\n"
               "step must read (every dense weight, the routed experts that have tokens, expected\n"
               "under uniform routing: E (1 - (1 - k/E)^C) per layer, and the cache rows) over\n"
               "the device's copy bandwidth measured here (cudaMemcpy device to device, bytes\n"
               "read + written). DISTILL_PROFILE=1 adds GPU time by op of the last concurrency's decode steps\n"
               "after the first (also the range `ncu --profile-from-start off` times kernel by kernel).\n"
               "Peer: tools/bench_generate_peer.py (transformers generate, same shapes).\n\n"
               "options:\n"
               "      --model-config DIR  a folder with config.json (e.g. configs/models/moonlight-16b-a3b)\n"
               "      --prompt P          prompt tokens (default 128)\n"
               "      --new N             tokens generated per sequence (default 256)\n"
               "      --samples K         samples per prompt (default 16)\n"
               "      --conc LIST         concurrent sequences (default 1,64,256)\n"
               "      --dtype D           bf16 (default), or fp8: the routed experts in e4m3 with 128x128\n"
               "                          block scales, their input rows per token per 128 channels, e4m3\n"
               "                          MMAs (W8A8; the rest stays bf16)\n"
               "      --graphs            replay each decode step from a CUDA graph of its bucket of rows\n"
               "      --split-kv S        split decode attention over each sequence's keys into up to S\n"
               "                          runs while the rows leave SMs idle (default 8; 1 = whole)\n"
               "      --temperature T     (default 0.6; 0 = greedy)\n"
               "      --top-p P           (default 0.95)\n"
               "      --json              one JSON line per concurrency\n"
               "  -h, --help              this help\n");
}

int bench_generate(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model-config", required_argument, NULL, 'm'}, {"prompt", required_argument, NULL, 'p'},
        {"new", required_argument, NULL, 'n'},          {"samples", required_argument, NULL, 'k'},
        {"conc", required_argument, NULL, 'c'},         {"temperature", required_argument, NULL, 't'},
        {"top-p", required_argument, NULL, 'P'},        {"json", no_argument, NULL, 'j'},
        {"dtype", required_argument, NULL, 'd'},        {"graphs", no_argument, NULL, 'g'},
        {"split-kv", required_argument, NULL, 's'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *clist = "1,64,256";
    long P = 128, N = 256, K = 16;
    double temp = 0.6, top_p = 0.95;
    int json = 0, fp8 = 0, graphs = 0, splits = 8, opt;
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
        case 'n':
        case 'k': {
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0 || v > 1 << 16)
                return kd_cli_usage_error("bench generate", "--%s takes a positive integer up to 65536",
                                          opt == 'p' ? "prompt" : opt == 'n' ? "new" : "samples");
            *(opt == 'p' ? &P : opt == 'n' ? &N : &K) = v;
            break;
        }
        case 'c':
            clist = optarg;
            break;
        case 't':
        case 'P': {
            double v = strtod(optarg, &end);
            if (*end || !(v >= 0) || (opt == 'P' && !(v > 0 && v <= 1)))
                return kd_cli_usage_error("bench generate", "--%s: bad value '%s'",
                                          opt == 't' ? "temperature" : "top-p", optarg);
            *(opt == 't' ? &temp : &top_p) = v;
            break;
        }
        case 'j':
            json = 1;
            break;
        case 'g':
            graphs = 1;
            break;
        case 's': {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 64)
                return kd_cli_usage_error("bench generate", "--split-kv takes 1 .. 64, not '%s'", optarg);
            splits = (int)v;
            break;
        }
        case 'd':
            if (strcmp(optarg, "bf16") && strcmp(optarg, "fp8"))
                return kd_cli_usage_error("bench generate", "--dtype: bf16 or fp8, not '%s'", optarg);
            fp8 = !strcmp(optarg, "fp8");
            break;
        default:
            return kd_cli_usage_error("bench generate", "bad option");
        }
    }
    if (!dir)
        return kd_cli_usage_error("bench generate", "--model-config is required");
    long conc[32];
    int nc = 0;
    for (const char *p = clist; *p;) {
        char *end;
        long c = strtol(p, &end, 10);
        if (end == p || c <= 0 || c > 4096 || nc == 32 || (*end && *end != ','))
            return kd_cli_usage_error("bench generate", "--conc: '%s' is not a list of sizes 1..4096", clist);
        conc[nc++] = c;
        p = *end == ',' ? end + 1 : end;
    }
#ifndef KD_HAVE_CUDA
    (void)json, (void)temp, (void)top_p, (void)conc, (void)fp8, (void)graphs, (void)splits;
    return kd_cli_fail(kd_err(KD_E_CUDA, "bench generate: this build has no CUDA backend"));
#else
    kd_model_config mc;
    int st = kd_model_config_load(dir, &mc);
    if (st)
        return kd_cli_fail(st);
    long cmax = 0;
    for (int i = 0; i < nc; i++)
        cmax = conc[i] > cmax ? conc[i] : cmax;
    const long np_max = (cmax + K - 1) / K;
    kd_cu_teacher_opts o = {.device = 0, .max_tokens = np_max * P > cmax ? np_max * P : cmax, .max_seqs = cmax,
                            .fp8_experts = fp8, .graphs = graphs, .mla_splits = splits};
    if (o.max_tokens < 256)
        o.max_tokens = 256;
    /* the copy bandwidth of this device, the roofline's denominator */
    double bw = 0;
    { /* before the teacher: its cache takes the memory left */
        kd_cu bcu;
        if ((st = kd_cu_init(&bcu, 0)))
            return kd_cli_fail(st);
        void *a = NULL, *b = NULL;
        const size_t nb = (size_t)1 << 30;
        if (!kd_cu_malloc(&a, nb) && !kd_cu_malloc(&b, nb)) {
            kd_cu_copy(b, a, nb, &bcu);
            kd_cu_sync(&bcu);
            double t = kd_now();
            for (int i = 0; i < 5; i++)
                kd_cu_copy(b, a, nb, &bcu);
            kd_cu_sync(&bcu);
            bw = 2.0 * 5 * (double)nb / (kd_now() - t);
        }
        kd_cu_free_ptr(a);
        kd_cu_free_ptr(b);
        kd_cu_free(&bcu);
    }
    kd_cu_teacher *g = NULL;
    double t0 = kd_now();
    if ((st = kd_cu_teacher_new_random(&mc, &o, 1234, 0.02, &g)))
        return kd_cli_fail(st);
    kd_info("bench generate: random weights made on the GPU in %.1f s", kd_now() - t0);
    kd_cu *cu = kd_cu_teacher_cu(g);
    kd_kvpool *pool = kd_cu_teacher_pool(g);
    const int64_t V = mc.vocab_size, L = mc.num_layers, C = mc.hidden_size, H = mc.num_heads;
    const int64_t E = mc.n_routed_experts, kx = mc.num_experts_per_tok, Fm = mc.moe_intermediate_size;
    const int64_t R = mc.kv_lora_rank, Dr = mc.qk_rope_head_dim, Dn = mc.qk_nope_head_dim, Dv = mc.v_head_dim;
    int64_t nmoe = 0;
    for (int64_t l = 0; l < L; l++)
        nmoe += kd_model_layer_is_moe(&mc, l);
    /* bytes of every weight a decode step reads whatever the routing (bf16) */
    const int64_t attn = (mc.q_lora_rank > 0 ? mc.q_lora_rank * C + H * (Dn + Dr) * mc.q_lora_rank
                                             : H * (Dn + Dr) * C) +
                         (R + Dr) * C + H * (Dn + Dv) * R + C * H * Dv;
    const int64_t dense = L * attn + (L - nmoe) * 3 * mc.intermediate_size * C +
                          nmoe * (3 * Fm * mc.n_shared_experts * C + E * C) + V * C;
    const double expert_bytes = (fp8 ? 1.0 : 2.0) * 3 * Fm * C;

    kd_info("bench generate: device copy bandwidth %.0f GB/s (read + write)", bw / 1e9);

    kd_cu_sample_row *hrows = malloc((size_t)cmax * sizeof *hrows);
    kd_cu_sample_row *drows = NULL;
    int32_t *dids = NULL, *hids = malloc((size_t)cmax * sizeof *hids);
    int64_t *ids = malloc((size_t)(np_max * P > cmax ? np_max * P : cmax) * sizeof *ids);
    int64_t *nn = malloc((size_t)cmax * sizeof *nn);
    kd_kvseq *seqs = calloc((size_t)cmax, sizeof *seqs);
    kd_kvseq **sp = calloc((size_t)cmax, sizeof *sp);
    if (!hrows || !hids || !ids || !nn || !seqs || !sp || kd_cu_malloc((void **)&drows, (size_t)cmax * sizeof *drows) ||
        kd_cu_malloc((void **)&dids, (size_t)cmax * 4))
        st = kd_err(KD_E_NOMEM, "bench buffers");
    kd_rng r;
    kd_rng_seed(&r, 11);
    const char *prof = getenv("DISTILL_PROFILE");
    for (int ci = 0; st == KD_OK && ci < nc; ci++) {
        const long S = conc[ci], np = (S + K - 1) / K;
        /* prefill the prompts, one step */
        for (long i = 0; i < np * P; i++)
            ids[i] = (int64_t)kd_rng_below(&r, (uint64_t)V);
        for (long i = 0; i < np; i++)
            nn[i] = P, sp[i] = &seqs[i];
        kd_kvseq *prompts = calloc((size_t)np, sizeof *prompts);
        kd_kvseq **pp = calloc((size_t)np, sizeof *pp);
        if (!prompts || !pp) {
            st = kd_err(KD_E_NOMEM, "bench prompts");
            free(prompts);
            free(pp);
            break;
        }
        for (long i = 0; i < np; i++)
            pp[i] = &prompts[i];
        kd_cu_sync(cu);
        double tp = kd_now();
        st = kd_cu_teacher_step(g, pp, (int)np, ids, nn, KD_MLA_DECOMPRESSED, 0, NULL);
        for (long s = 0; st == KD_OK && s < S; s++) {
            st = kd_kvseq_fork(pool, &prompts[s / K], &seqs[s]);
            sp[s] = &seqs[s];
            hrows[s] = (kd_cu_sample_row){temp, top_p, 0.0, 0, 1234, (uint64_t)(s / K), (uint64_t)(s % K), 0};
        }
        for (long i = 0; i < np; i++)
            kd_kvseq_release(pool, &prompts[i]);
        free(prompts);
        free(pp);
        /* the first token of each sample from its prompt's logits (row s / K) */
        const float *lg = kd_cu_teacher_logits_dev(g);
        for (long s = 0; st == KD_OK && s < S; s++) {
            kd_cu_sample_row one = hrows[s];
            st = kd_cu_upload_async(drows + s, &one, sizeof one, cu);
            if (!st)
                st = kd_cu_sample(dids + s, NULL, lg + (s / K) * V, drows + s, 1, V, cu);
        }
        if (!st)
            st = kd_cu_download(hids, dids, (size_t)S * 4, cu);
        double t_pre = kd_now() - tp;
        /* decode; the profile covers its steps after the first (which makes the GEMM plans
         * and records the graphs: one-time host work that would read as GPU idle) */
        double td = kd_now(), kv_bytes = 0;
        for (long t = 0; st == KD_OK && t < N; t++) {
            if (t == 1 && prof && *prof && *prof != '0' && ci == nc - 1)
                kd_cu_teacher_prof_on(g);
            for (long s = 0; s < S; s++) {
                ids[s] = hids[s] >= 0 ? hids[s] : 0;
                nn[s] = 1;
                hrows[s].t = (uint64_t)t + 1;
                kv_bytes += (double)(seqs[s].len + 1) * (double)(L * (R + Dr)) * 2.0;
            }
            st = kd_cu_teacher_step(g, sp, (int)S, ids, nn, KD_MLA_ABSORBED, 0, NULL);
            if (!st)
                st = kd_cu_upload_async(drows, hrows, (size_t)S * sizeof *hrows, cu);
            kd_cu_prof_mark(cu, "sampler");
            if (!st)
                st = kd_cu_sample(dids, NULL, kd_cu_teacher_logits_dev(g), drows, S, V, cu);
            kd_cu_prof_mark(cu, "id read-back");
            if (!st)
                st = kd_cu_download(hids, dids, (size_t)S * 4, cu);
        }
        const double t_dec = kd_now() - td;
        long bad = 0;
        for (long s = 0; s < S; s++)
            bad += hids[s] < 0;
        if (st == KD_OK && bad)
            st = kd_err(KD_E_RANGE, "bench generate: %ld of %ld samples had no valid token (NaN logits?)", bad, S);
        if (st == KD_OK) {
            const double touched = (double)E * (1.0 - pow(1.0 - (double)kx / (double)E, (double)S));
            const double wbytes = 2.0 * (double)dense + (double)nmoe * touched * expert_bytes;
            const double step_bytes = wbytes + kv_bytes / (double)N;
            const double step_s = t_dec / (double)N, floor_s = bw > 0 ? step_bytes / bw : 0;
            const double tps = (double)(S * N) / t_dec;
            kd_cu_teacher_mem mem;
            kd_cu_teacher_mem_get(g, &mem);
            if (json)
                printf("{\"bench\": \"generate\", \"model_config\": \"%s\", \"dtype\": \"%s\", \"graphs\": %d, \"split_kv\": %d, \"concurrency\": %ld, "
                       "\"prompt\": %ld, \"new\": %ld, \"samples\": %ld, \"temperature\": %g, \"top_p\": %g, "
                       "\"output_tokens_per_second\": %.1f, \"step_ms\": %.3f, \"prefill_s\": %.3f, "
                       "\"step_bytes\": %.0f, \"weight_bytes\": %.0f, \"experts_touched_per_layer\": %.1f, "
                       "\"copy_bandwidth_gbs\": %.0f, \"roofline_step_ms\": %.3f, \"roofline_fraction\": %.3f, "
                       "\"cache_tokens\": %lld}\n",
                       dir, fp8 ? "fp8" : "bf16", graphs, splits, S, P, N, K, temp, top_p, tps, step_s * 1e3, t_pre, step_bytes, wbytes,
                       touched, bw / 1e9,
                       floor_s * 1e3, floor_s / step_s, (long long)kd_cu_teacher_cache_tokens(g));
            else
                printf("bench generate: %s%s%s, %4ld sequences: %9.1f output tokens/s, %.2f ms/step, roofline %.2f ms "
                       "(%.1f MB/step: %.1f experts/layer) = %.0f%%, prefill %.2f s\n",
                       fp8 ? "fp8" : "bf16", graphs ? " graphs" : "", splits == 1 ? " whole-kv" : "", S, tps, step_s * 1e3, floor_s * 1e3, step_bytes / 1e6, touched,
                       100 * floor_s / step_s, t_pre);
        }
        if (prof && *prof && *prof != '0' && ci == nc - 1)
            kd_cu_teacher_prof_report(g, stdout);
        for (long s = 0; s < S; s++)
            kd_kvseq_release(pool, &seqs[s]);
    }
    kd_cu_free_ptr(drows);
    kd_cu_free_ptr(dids);
    free(hrows);
    free(hids);
    free(ids);
    free(nn);
    free(seqs);
    free(sp);
    kd_cu_teacher_free(g);
    return st ? kd_cli_fail(st) : 0;
#endif
}
