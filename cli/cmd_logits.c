/* cmd_logits.c - `distill logits --model DIR --ids 1,2,3 --out FILE.safetensors`:
 * the F32 logits [T, V] of one token sequence, for any supported model (the
 * student for qwen2/llama, the teacher for deepseek_v3/v2). For debugging and
 * for checks that compare against another implementation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/hfconfig.h"
#include "core/safetensors.h"
#include "student/model.h"
#include "teacher/model.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill logits --model DIR --ids I,J,K,... --out FILE.safetensors\n\n"
               "Runs the model on the token ids (positions 0..T-1, one sequence, CPU fp32) and\n"
               "writes a safetensors file with \"input_ids\" I64 [T] and \"logits\" F32 [T, V].\n"
               "Models: qwen2 and llama (the student), deepseek_v3 and deepseek_v2 (the teacher).\n\n"
               "options:\n"
               "      --model DIR   HF model folder (config.json + weights)\n"
               "      --ids LIST    comma-separated token ids, each in [0, vocab)\n"
               "      --out FILE    the safetensors file to write (atomically)\n"
               "  -h, --help        this help\n");
}

/* "1,2,3" into a new array; KD_E_USAGE naming the bad item */
static int parse_ids_(const char *s, int64_t **out, int64_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int64_t *v = malloc(cap * sizeof *v);
    if (!v)
        return kd_err(KD_E_NOMEM, "ids");
    int64_t k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || (*end && *end != ',') || x < 0) {
            free(v);
            return kd_err(KD_E_USAGE, "--ids: item %lld ('%.20s') is not a non-negative integer",
                          (long long)k + 1, p);
        }
        v[k++] = x;
        p = *end ? end + 1 : end;
    }
    if (!k) {
        free(v);
        return kd_err(KD_E_USAGE, "--ids: no ids");
    }
    *out = v;
    *n = k;
    return KD_OK;
}

int cmd_logits(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'}, {"ids", required_argument, NULL, 'i'},
        {"out", required_argument, NULL, 'o'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *ids_s = NULL, *outp = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            usage_(stdout);
            return 0;
        case 'm':
            dir = optarg;
            break;
        case 'i':
            ids_s = optarg;
            break;
        case 'o':
            outp = optarg;
            break;
        default:
            return kd_cli_usage_error("logits", "bad option");
        }
    }
    if (!dir || !ids_s || !outp)
        return kd_cli_usage_error("logits", "--model, --ids and --out are required");
    if (optind < argc)
        return kd_cli_usage_error("logits", "unexpected argument '%s'", argv[optind]);
    int64_t *ids = NULL, T = 0;
    int st = parse_ids_(ids_s, &ids, &T);
    if (st)
        return kd_cli_fail(st);
    kd_model_config cfg;
    float *logits = NULL;
    if ((st = kd_model_config_load(dir, &cfg)) == KD_OK) {
        logits = malloc((size_t)(T * cfg.vocab_size) * sizeof(float));
        if (!logits)
            st = kd_err(KD_E_NOMEM, "logits [%lld, %lld]", (long long)T, (long long)cfg.vocab_size);
    }
    if (st == KD_OK && (cfg.arch == KD_ARCH_DEEPSEEK_V3 || cfg.arch == KD_ARCH_DEEPSEEK_V2)) {
        kd_teacher *m = NULL;
        if ((st = kd_teacher_load(dir, &m)) == KD_OK)
            st = kd_teacher_logits(m, ids, T, logits);
        kd_teacher_free(m);
    } else if (st == KD_OK) {
        kd_student *m = NULL;
        if ((st = kd_student_load(dir, &m)) == KD_OK)
            st = kd_student_forward(m, ids, NULL, 1, T, logits);
        kd_student_free(m);
    }
    if (st == KD_OK) {
        kd_st_writer *w = NULL;
        int64_t s1[1] = {T}, s2[2] = {T, cfg.vocab_size};
        if ((st = kd_st_writer_new(&w)) == KD_OK && (st = kd_st_writer_add(w, "input_ids", KD_I64, 1, s1, ids)) == KD_OK &&
            (st = kd_st_writer_add(w, "logits", KD_F32, 2, s2, logits)) == KD_OK &&
            (st = kd_st_writer_meta(w, "model", dir)) == KD_OK)
            st = kd_st_writer_write(w, outp);
        kd_st_writer_free(w);
    }
    free(ids);
    free(logits);
    if (st)
        return kd_cli_fail(st);
    printf("logits: wrote %s [%lld, %lld]\n", outp, (long long)T, (long long)cfg.vocab_size);
    return 0;
}
