/* test_sft.c - the trainer: packing, per-document attention against documents
 * run alone, gradient accumulation against one big batch, the schedule, and
 * flat batches against padded rows, whole runs on the HF tiny-qwen2 fixture from a dataset of examples: counts,
 * resume bit for bit, the run key (other optimizer settings refused),
 * checkpoints, micro_batch x grad_accum splits of the same steps, bad input. */
#include "test.h"

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/hfconfig.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/util.h"
#include "data/store.h"
#include "sft/sft.h"
#include "sft/sft_impl.h"
#include "student/model.h"

#define QWEN KD_TEST_FIXTURES "/tiny-qwen2"
#define TMP KD_TEST_TMP "/sft"

static void rm_rf_(const char *path) { CHECK_OK(kd_rmtree(path)); }

static double rel_(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* ---- packing against a plain best-fit-decreasing ----------------------------------- */

static int cmp_i64_(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Bins with equal room are interchangeable in best fit, so any tie rule gives
 * the same bin count and the same multiset of fills. */
static int64_t brute_bfd_(const int64_t *len, int64_t n, int64_t cap, int64_t *fill)
{
    int64_t *idx = malloc((size_t)n * sizeof *idx), nb = 0;
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    for (int64_t i = 0; i < n; i++) /* selection sort, longest first */
        for (int64_t j = i + 1; j < n; j++)
            if (len[idx[j]] > len[idx[i]]) {
                int64_t t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
            }
    for (int64_t k = 0; k < n; k++) {
        int64_t l = len[idx[k]], best = -1;
        for (int64_t b = 0; b < nb; b++)
            if (cap - fill[b] >= l && (best < 0 || fill[b] > fill[best]))
                best = b;
        if (best < 0)
            fill[best = nb++] = 0;
        fill[best] += l;
    }
    free(idx);
    return nb;
}

TEST(pack)
{
    kd_rng r;
    kd_rng_seed(&r, 5);
    const int64_t caps[3] = {16, 100, 4096};
    for (int trial = 0; trial < 30; trial++) {
        int64_t cap = caps[trial % 3], n = 1 + (int64_t)kd_rng_below(&r, 300);
        int64_t *len = malloc((size_t)n * sizeof *len), *bin = malloc((size_t)n * sizeof *bin);
        int64_t *fa = calloc((size_t)n, sizeof *fa), *fb = calloc((size_t)n, sizeof *fb);
        for (int64_t i = 0; i < n; i++)
            len[i] = 1 + (int64_t)kd_rng_below(&r, (uint64_t)(trial % 2 ? cap : cap / 3 + 1));
        int64_t nb = kd_sft_pack(len, n, cap, bin), nref = brute_bfd_(len, n, cap, fb);
        CHECK_EQ_INT(nb, nref);
        for (int64_t i = 0; i < n; i++) {
            CHECK(bin[i] >= 0 && bin[i] < nb);
            if (bin[i] >= 0 && bin[i] < nb)
                fa[bin[i]] += len[i];
        }
        for (int64_t b = 0; b < nb; b++)
            CHECK(fa[b] > 0 && fa[b] <= cap);
        qsort(fa, (size_t)nb, sizeof *fa, cmp_i64_);
        qsort(fb, (size_t)nref, sizeof *fb, cmp_i64_);
        for (int64_t b = 0; b < nb && nb == nref; b++)
            CHECK_EQ_INT(fa[b], fb[b]);
        free(len); free(bin); free(fa); free(fb);
    }
    int64_t one = 7, b0 = -1;
    CHECK_EQ_INT(kd_sft_pack(&one, 1, 7, &b0), 1); /* exactly full */
    CHECK_EQ_INT(b0, 0);
}

/* ---- a packed row equals its documents run alone ------------------------------------- */

TEST(packed_equals_separate)
{
    kd_student *m = NULL;
    CHECK_OK(kd_student_load(QWEN, &m));
    if (!m)
        return;
    enum { T = 18 };
    const int64_t lens[3] = {5, 7, 4}; /* + 2 tokens of padding */
    int64_t ids[T], lab[T], pos[T];
    int64_t t = 0;
    for (int d = 0; d < 3; d++)
        for (int64_t i = 0; i < lens[d]; i++, t++) {
            ids[t] = (t * 53 + 11) % 512;
            lab[t] = i >= 2 ? ids[t] : -100; /* a two-token "prompt" */
            pos[t] = i;
        }
    for (int64_t i = 0; t < T; t++, i++)
        ids[t] = 0, lab[t] = -100, pos[t] = i;
    const int64_t total = kd_student_count_targets(lab, pos, 1, T);
    CHECK_EQ_INT(total, (5 - 2) + (7 - 2) + (4 - 2));
    size_t np = kd_student_numel(m);
    float *g_packed = malloc(np * sizeof(float)), *g;
    size_t n;
    double sp = 0, ss = 0, s;
    kd_student_zero_grad(m);
    CHECK_OK(kd_student_backward(m, ids, lab, pos, 1, T, 1.0 / (double)total, &sp, NULL));
    CHECK_OK(kd_student_tensor(m, kd_student_param_name(m, 0), 1, &g, &n));
    memcpy(g_packed, g, np * sizeof(float)); /* the parameters' one allocation starts here */
    kd_student_zero_grad(m);
    t = 0;
    for (int d = 0; d < 3; d++) {
        CHECK_OK(kd_student_backward(m, ids + t, lab + t, NULL, 1, lens[d], 1.0 / (double)total, &s,
                                     NULL));
        ss += s;
        t += lens[d];
    }
    double gr = rel_(g_packed, g, np);
    printf("packed row vs documents alone: loss sum %.9g vs %.9g, gradient rel %.3g\n", sp, ss, gr);
    CHECK_NEAR(sp, ss, 1e-5 * fabs(ss));
    CHECK(gr < 1e-5);
    /* positions that do not count up are refused */
    int64_t badpos[T];
    memcpy(badpos, pos, sizeof badpos);
    badpos[3] = 7;
    CHECK_ERR(kd_student_forward(m, ids, badpos, 1, T, NULL), KD_E_RANGE, "count up by one");
    free(g_packed);
    kd_student_free(m);
}

/* ---- a flat batch (the CPU trainer's) equals the padded rows --------------------------- */

TEST(flat_batch)
{
    kd_student *m = NULL;
    CHECK_OK(kd_student_load(QWEN, &m));
    if (!m)
        return;
    /* five documents in three rows of at most 16 tokens; every token a target but the first two */
    enum { NDOC = 5 };
    const uint32_t lens[NDOC] = {9, 6, 12, 3, 10};
    int32_t ids[NDOC][16];
    uint8_t mask[NDOC][2];
    sft_doc d[NDOC];
    for (int k = 0; k < NDOC; k++) {
        for (uint32_t i = 0; i < lens[k]; i++)
            ids[k][i] = (int32_t)((k * 97 + i * 31 + 5) % 512);
        mask[k][0] = 0xfc, mask[k][1] = 0xff;
        d[k] = (sft_doc){.ids = ids[k], .mask = mask[k], .n = lens[k], .full = lens[k], .targets = lens[k] - 2};
    }
    sft_docs docs = {.d = d, .n = NDOC, .cap = NDOC};
    sft_plan plan = {0};
    CHECK_OK(sft_plan_make(&plan, &docs, 16, 1, 0, 0));
    CHECK_EQ_INT(plan.nrows, 3);
    sft_batch pad = {0}, flat = {.flat = 1};
    CHECK_OK(sft_batch_fill(&pad, &docs, &plan, 0, plan.nrows, KD_SFT_LOSS_ASSISTANT));
    CHECK_OK(sft_batch_fill(&flat, &docs, &plan, 0, plan.nrows, KD_SFT_LOSS_ASSISTANT));
    CHECK_EQ_INT(pad.B, 3);
    CHECK_EQ_INT(flat.B, 1);
    CHECK_EQ_INT(flat.T, 40);
    CHECK_EQ_INT(flat.tokens, 40);
    CHECK_EQ_INT(flat.targets, pad.targets);
    CHECK(pad.B * pad.T > flat.T); /* the padded rows hold padding */
    /* the flat row is the padded rows without their padding */
    int64_t t = 0;
    for (int64_t i = 0; i < pad.B * pad.T; i++) {
        int64_t r = i / pad.T, c = i % pad.T, fill = 0;
        for (int64_t k = plan.row_start[r]; k < plan.row_start[r + 1]; k++)
            fill += d[plan.doc[k]].n;
        if (c >= fill)
            continue;
        if (t < flat.T) {
            CHECK_EQ_INT(flat.ids[t], pad.ids[i]);
            CHECK_EQ_INT(flat.labels[t], pad.labels[i]);
            CHECK_EQ_INT(flat.pos[t], pad.pos[i]);
        }
        t++;
    }
    CHECK_EQ_INT(t, flat.T);
    /* the same loss and gradients */
    const double scale = 1.0 / (double)pad.targets;
    size_t np = kd_student_numel(m), n;
    float *gp = malloc(np * sizeof(float)), *g;
    double sp = 0, sf = 0;
    kd_student_zero_grad(m);
    CHECK_OK(kd_student_backward(m, pad.ids, pad.labels, pad.pos, pad.B, pad.T, scale, &sp, NULL));
    CHECK_OK(kd_student_tensor(m, kd_student_param_name(m, 0), 1, &g, &n));
    memcpy(gp, g, np * sizeof(float));
    kd_student_zero_grad(m);
    CHECK_OK(kd_student_backward(m, flat.ids, flat.labels, flat.pos, flat.B, flat.T, scale, &sf, NULL));
    double gr = rel_(gp, g, np);
    printf("flat batch vs padded rows: loss sum %.9g vs %.9g, gradient rel %.3g\n", sf, sp, gr);
    CHECK_NEAR(sf, sp, 1e-6 * fabs(sp));
    CHECK(gr < 1e-6);
    /* a row longer than max_position_embeddings is fine while its positions fit; a position is not */
    const int64_t P = kd_student_config(m)->max_position, L = P + 8;
    int64_t *li = calloc((size_t)L, sizeof *li), *lp = calloc((size_t)L, sizeof *lp);
    for (int64_t i = 0; i < L; i++)
        li[i] = i % 100, lp[i] = i < P / 2 ? i : i - P / 2;
    CHECK_OK(kd_student_forward(m, li, lp, 1, L, NULL));
    for (int64_t i = 0; i < L; i++)
        lp[i] = i < 8 ? i : i - 8; /* the second document reaches position P - 1 ... fits; one more does not */
    CHECK_OK(kd_student_forward(m, li, lp, 1, L, NULL));
    for (int64_t i = 0; i < L; i++)
        lp[i] = i < 7 ? i : i - 7;
    CHECK_ERR(kd_student_forward(m, li, lp, 1, L, NULL), KD_E_RANGE, "max_position_embeddings");
    CHECK_ERR(kd_student_forward(m, li, NULL, 1, L, NULL), KD_E_RANGE, "max_position_embeddings");
    free(li);
    free(lp);
    free(gp);
    sft_batch_free(&pad);
    sft_batch_free(&flat);
    sft_plan_free(&plan);
    kd_student_free(m);
}

/* ---- gradient accumulation equals one big batch ------------------------------------- */

TEST(accumulation)
{
    kd_student *a = NULL, *b = NULL;
    CHECK_OK(kd_student_load(QWEN, &a));
    CHECK_OK(kd_student_load(QWEN, &b));
    if (!a || !b)
        return;
    enum { B = 4, T = 12 };
    int64_t ids[B * T], lab[B * T];
    const int masked[B] = {1, 5, 3, 10}; /* very different target counts per row */
    for (int64_t i = 0; i < B * T; i++) {
        ids[i] = (i * 97 + 3) % 512;
        lab[i] = (i % T) < masked[i / T] ? -100 : ids[i];
    }
    const int64_t total = kd_student_count_targets(lab, NULL, B, T);
    double la = 0, lb = 0, s;
    kd_student_zero_grad(a);
    CHECK_OK(kd_student_backward(a, ids, lab, NULL, B, T, 1.0 / (double)total, &la, NULL));
    kd_student_zero_grad(b);
    for (int k = 0; k < 2; k++) { /* two micro-batches of two rows */
        CHECK_OK(kd_student_backward(b, ids + k * 2 * T, lab + k * 2 * T, NULL, 2, T,
                                     1.0 / (double)total, &s, NULL));
        lb += s;
    }
    float *ga, *gb, *pa, *pb;
    size_t n;
    size_t np = kd_student_numel(a);
    CHECK_OK(kd_student_tensor(a, kd_student_param_name(a, 0), 1, &ga, &n));
    CHECK_OK(kd_student_tensor(b, kd_student_param_name(b, 0), 1, &gb, &n));
    double gr = rel_(gb, ga, np);
    kd_adamw hp = {1e-3, 0.9, 0.95, 1e-8, 0.1};
    CHECK_OK(kd_student_adamw_step(a, &hp, 1));
    CHECK_OK(kd_student_adamw_step(b, &hp, 1));
    CHECK_OK(kd_student_tensor(a, kd_student_param_name(a, 0), 0, &pa, &n));
    CHECK_OK(kd_student_tensor(b, kd_student_param_name(b, 0), 0, &pb, &n));
    double pr = rel_(pb, pa, np);
    printf("accumulation 2 x 2 rows vs 4 rows: loss %.9g vs %.9g, gradient rel %.3g, after AdamW rel %.3g\n",
           lb / (double)total, la / (double)total, gr, pr);
    CHECK_NEAR(lb, la, 1e-6 * la);
    CHECK(gr < 1e-6);
    /* the first AdamW step moves each weight by about lr * g / |g|, so a gradient
     * element at rounding level (the two batches sum rows in another order
     * through OpenBLAS) can move its weight by up to 2 lr: looser than gr */
    CHECK(pr < 5e-5);
    kd_student_free(a);
    kd_student_free(b);
}

/* ---- the schedule, against transformers' formulas written out --------------------------- */

TEST(schedule)
{
    kd_sft_optim o = {.lr = 1.0, .min_lr_ratio = 0.1, .warmup_ratio = 0.2, .schedule = KD_SFT_COSINE};
    /* total 10: warmup ceil(2.0) = 2 steps: lr 0, 0.5; then cosine from 1 to 0.1 over 8 */
    CHECK_NEAR(kd_sft_lr(&o, 0, 10), 0.0, 0);
    CHECK_NEAR(kd_sft_lr(&o, 1, 10), 0.5, 1e-15);
    CHECK_NEAR(kd_sft_lr(&o, 2, 10), 1.0, 1e-15);
    CHECK_NEAR(kd_sft_lr(&o, 6, 10), 0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 4.0 / 8.0)), 1e-15);
    CHECK_NEAR(kd_sft_lr(&o, 10, 10), 0.1, 1e-15);
    o.schedule = KD_SFT_LINEAR;
    CHECK_NEAR(kd_sft_lr(&o, 6, 10), 0.1 + 0.9 * (1 - 4.0 / 8.0), 1e-15);
    o.schedule = KD_SFT_CONSTANT;
    CHECK_NEAR(kd_sft_lr(&o, 9, 10), 1.0, 0);
    o.warmup_steps = 5; /* overrides the ratio */
    CHECK_NEAR(kd_sft_lr(&o, 4, 10), 0.8, 1e-15);
}

/* ---- whole runs -------------------------------------------------------------------------- */

/* A dataset of examples for the 512-token fixture: n regular ones of lengths
 * 6..40 with a prompt part masked, then one empty, one all-masked, one of 70
 * tokens (over max_len 48), and, when bad_id, one with id 600. */
static void make_dataset_(const char *dir, int n, int bad_id)
{
    rm_rf_(dir);
    kd_store *s = NULL;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    if (!s)
        return;
    kd_store_batch *b = NULL;
    CHECK_OK(kd_store_batch_begin(s, &b));
    kd_rng r;
    kd_rng_seed(&r, 77);
    int32_t ids[80];
    uint8_t mask[10];
    uint64_t id = 0;
    for (int i = 0; i < n + 3 + bad_id; i++) {
        uint32_t len = i < n ? 6 + (uint32_t)kd_rng_below(&r, 35) : i == n ? 0 : i == n + 1 ? 12 : 70;
        memset(mask, 0, sizeof mask);
        for (uint32_t t = 0; t < len; t++) {
            ids[t] = (int32_t)kd_rng_below(&r, 512);
            if (i != n + 1 && t >= len / 3)
                mask[t >> 3] |= (uint8_t)(1u << (t & 7));
        }
        if (i == n + 3)
            ids[1] = 600;
        kd_record e = {.db = KD_DB_EXAMPLES, .id = id++, .n_tokens = len, .ids = ids, .mask = mask,
                       .origin_id = KD_NONE64, .origin_sample = KD_NONE32};
        CHECK_OK(kd_store_put(b, &e, 0, NULL));
    }
    CHECK_OK(kd_store_batch_commit(b));
    CHECK_OK(kd_store_close(s));
}

static void base_cfg_(kd_sft_config *c, const char *data, const char *out)
{
    memset(c, 0, sizeof *c);
    CHECK_OK(kd_cfg_defaults(&kd_sft_schema, c));
    char sets[16][512];
    const char *kv[] = {"model=" QWEN, "data.max_len=48", "data.eval_fraction=0.1",
                        "optim.lr=1e-3", "optim.weight_decay=0.1", "optim.grad_clip=0.5",
                        "train.epochs=2", "train.micro_batch=2", "train.grad_accum=2",
                        "output.export=false", "output.progress=false", "output.save_every=3",
                        "output.eval_every=2", "runtime.seed=9"};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        CHECK_OK(kd_cfg_set(&kd_sft_schema, c, kv[i]));
    snprintf(sets[0], sizeof sets[0], "data.train=%s", data);
    snprintf(sets[1], sizeof sets[1], "output.dir=%s", out);
    CHECK_OK(kd_cfg_set(&kd_sft_schema, c, sets[0]));
    CHECK_OK(kd_cfg_set(&kd_sft_schema, c, sets[1]));
}

/* the "loss" lines of metrics.jsonl, as text */
static char *losses_(const char *out)
{
    char p[1024], *txt = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "%s/metrics.jsonl", out);
    if (kd_read_file(p, 1 << 24, &txt, &len))
        return NULL;
    return txt;
}

static char *read_all_(const char *p, size_t *len)
{
    char *txt = NULL;
    *len = 0;
    if (kd_read_file(p, 1 << 28, &txt, len))
        return NULL;
    return txt;
}

TEST(run_and_resume)
{
    mkdir(TMP, 0755);
    const char *data = TMP "/data", *a = TMP "/run-a", *b = TMP "/run-b";
    make_dataset_(data, 40, 0);
    rm_rf_(a);
    rm_rf_(b);
    kd_sft_config c;
    kd_sft_result ra, rb;
    base_cfg_(&c, data, a);
    CHECK_OK(kd_sft_run(&c, &ra));
    printf("run: %lld steps, %lld examples, %lld rows, loss %.6f, eval %.6f, truncated %lld, "
           "empty %lld, no target %lld\n", (long long)ra.steps, (long long)ra.examples,
           (long long)ra.rows, ra.last_loss, ra.last_eval_loss, (long long)ra.truncated,
           (long long)ra.skipped_empty, (long long)ra.skipped_no_target);
    CHECK_EQ_INT(ra.truncated, 1);
    CHECK_EQ_INT(ra.skipped_empty, 1);
    CHECK_EQ_INT(ra.skipped_no_target, 1);
    CHECK_EQ_INT(ra.examples, 41 - 4); /* 40 + the truncated one, 4 held out */
    CHECK(ra.steps >= 4);
    CHECK(isfinite(ra.last_eval_loss));
    kd_cfg_release(&kd_sft_schema, &c);

    /* the same run, stopped half way and resumed */
    base_cfg_(&c, data, b);
    char set[64];
    snprintf(set, sizeof set, "train.stop_after=%lld", (long long)(ra.steps / 2));
    CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, set));
    CHECK_OK(kd_sft_run(&c, &rb));
    CHECK_EQ_INT(rb.steps, ra.steps / 2);
    /* without resume, a folder with checkpoints is refused */
    CHECK_ERR(kd_sft_run(&c, &rb), KD_E_CONFIG, "already holds checkpoints");
    CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, "train.stop_after=0"));
    CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, "output.resume=true"));
    CHECK_OK(kd_sft_run(&c, &rb));
    CHECK_EQ_INT(rb.steps, ra.steps);
    char *la = losses_(a), *lb = losses_(b);
    CHECK(la && lb);
    if (la && lb) {
        CHECK(strlen(la) > 100);
        /* every loss, lr, grad norm and eval loss, bit for bit (printed with %.17g);
         * only the timing fields may differ */
        const char *p = la, *q = lb;
        int lines = 0, same = 1;
        while (*p && *q) {
            const char *e1 = strchr(p, '\n'), *e2 = strchr(q, '\n');
            if (!e1 || !e2)
                break;
            const char *s1 = strstr(p, "\"step_seconds\""), *s2 = strstr(q, "\"step_seconds\"");
            size_t n1 = (size_t)((s1 && s1 < e1 ? s1 : e1) - p), n2 = (size_t)((s2 && s2 < e2 ? s2 : e2) - q);
            if (n1 != n2 || memcmp(p, q, n1)) {
                same = 0;
                fprintf(stderr, "differs:\n  %.*s\n  %.*s\n", (int)n1, p, (int)n2, q);
            }
            lines++;
            p = e1 + 1;
            q = e2 + 1;
        }
        CHECK(same);
        CHECK(!*p && !*q); /* the same number of lines */
        printf("resume: %d metrics lines equal bit for bit\n", lines);
    }
    free(la);
    free(lb);
    /* and the final weights and moments too */
    char pa[1024], pb[1024];
    for (int k = 0; k < 2; k++) {
        const char *f = k ? "optimizer.safetensors" : "model.safetensors";
        snprintf(pa, sizeof pa, "%s/checkpoints/step-%08lld/%s", a, (long long)ra.steps, f);
        snprintf(pb, sizeof pb, "%s/checkpoints/step-%08lld/%s", b, (long long)ra.steps, f);
        size_t na, nb;
        char *xa = read_all_(pa, &na), *xb = read_all_(pb, &nb);
        CHECK(xa && xb && na == nb && !memcmp(xa, xb, na));
        free(xa);
        free(xb);
    }
    /* keep_last 2: only the two newest checkpoints remain */
    snprintf(pa, sizeof pa, "%s/checkpoints", a);
    DIR *d = opendir(pa);
    int nck = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        nck += !strncmp(e->d_name, "step-", 5);
    if (d)
        closedir(d);
    CHECK_EQ_INT(nck, 2);
    /* the checkpoint is a model folder */
    snprintf(pa, sizeof pa, "%s/checkpoints/step-%08lld", a, (long long)ra.steps);
    kd_student *m = NULL;
    CHECK_OK(kd_student_load(pa, &m));
    kd_student_free(m);
    /* a checkpoint made with other settings is refused */
    CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, "data.max_len=64"));
    CHECK_ERR(kd_sft_run(&c, &rb), KD_E_CONFIG, "max_len");
    CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, "data.max_len=48"));
    /* ... and so is one whose optimizer or loss differs: each setting of the update,
     * named with its value in the checkpoint and in the config (base_cfg_'s values) */
    static const struct {
        const char *set, *restore, *msg;
    } upd[] = {
        {"optim.lr=1e-2", "optim.lr=1e-3", "optim.lr is 0.001 there and 0.01 here"},
        {"optim.schedule=constant", "optim.schedule=cosine",
         "optim.schedule is \"cosine\" there and \"constant\" here"},
        {"optim.weight_decay=0.5", "optim.weight_decay=0.1", "optim.weight_decay is 0.1 there and 0.5 here"},
        {"optim.min_lr_ratio=0", "optim.min_lr_ratio=0.1", "optim.min_lr_ratio is 0.1 there and 0 here"},
        {"optim.warmup_ratio=0.2", "optim.warmup_ratio=0.03", "optim.warmup_ratio is 0.03 there and 0.2 here"},
        {"optim.warmup_steps=2", "optim.warmup_steps=0", "optim.warmup_steps is 0 there and 2 here"},
        {"optim.beta1=0.8", "optim.beta1=0.9", "optim.beta1 is 0.9 there and 0.8 here"},
        {"optim.beta2=0.999", "optim.beta2=0.95", "optim.beta2 is 0.95 there and 0.999 here"},
        {"optim.eps=1e-6", "optim.eps=1e-8", "optim.eps is 1e-08 there and 1e-06 here"},
        {"optim.grad_clip=1", "optim.grad_clip=0.5", "optim.grad_clip is 0.5 there and 1 here"},
        {"optim.decay_norm_bias=true", "optim.decay_norm_bias=false",
         "optim.decay_norm_bias is false there and true here"},
        /* these two change the example counts too; the setting is named, the cause */
        {"data.loss_on=all", "data.loss_on=assistant", "data.loss_on is \"assistant\" there and \"all\" here"},
        {"data.overlong=drop", "data.overlong=truncate", "data.overlong is \"truncate\" there and \"drop\" here"},
        /* a value equal to 17 digits but not in its last bit */
        {"optim.lr=0.0010000000000000002", "optim.lr=1e-3",
         "optim.lr is 0.001 there and 0.0010000000000000002 here"},
    };
    for (size_t i = 0; i < sizeof upd / sizeof upd[0]; i++) {
        CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, upd[i].set));
        CHECK_ERR(kd_sft_run(&c, &rb), KD_E_CONFIG, upd[i].msg);
        CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, upd[i].restore));
    }
    /* what changes neither the losses nor the update may differ (docs/training.md):
     * the output's cadence, stop_after, nonfinite, the threads and the device are
     * not in the key (the run is complete, so the resume only loads and checks) */
    static const char *const free_[] = {"output.log_every=3", "output.eval_every=1",
                                         "output.save_every=1", "output.keep_last=4",
                                         "output.progress=true", "train.stop_after=2",
                                         "train.nonfinite=skip", "train.recompute=true",
                                         "runtime.threads=1"};
    for (size_t i = 0; i < sizeof free_ / sizeof free_[0]; i++)
        CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, free_[i]));
    CHECK_OK(kd_sft_run(&c, &rb));
    CHECK_EQ_INT(rb.steps, ra.steps);
    /* a checkpoint written before the update's settings joined the key still resumes
     * (they are warned about, unchecked); one without the first format's keys does not */
    snprintf(pa, sizeof pa, "%s/checkpoints/step-%08lld/trainer_state.json", b, (long long)ra.steps);
    json_t *ts = json_load_file(pa, 0, NULL), *run = json_object_get(ts, "run");
    CHECK(json_object_get(run, "optim.lr") && json_object_get(run, "data.loss_on"));
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(run, tmp, k, v)
    {
        if (!strncmp(k, "optim.", 6) || !strncmp(k, "data.", 5))
            json_object_del(run, k);
    }
    CHECK_EQ_INT(json_object_size(run), 10);
    CHECK_OK(json_dump_file(ts, pa, JSON_INDENT(2)) ? KD_E_IO : KD_OK);
    CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, "optim.lr=1e-2")); /* unchecked there */
    CHECK_OK(kd_sft_run(&c, &rb));
    json_object_del(run, "train_tokens");
    CHECK_OK(json_dump_file(ts, pa, JSON_INDENT(2)) ? KD_E_IO : KD_OK);
    CHECK_ERR(kd_sft_run(&c, &rb), KD_E_CONFIG, "train_tokens is missing there and 851 here");
    json_decref(ts);
    kd_cfg_release(&kd_sft_schema, &c);
}

/* ---- the same through the trainer: micro_batch x grad_accum -------------------------- */

/* metrics.jsonl of out, one JSON object per line; n receives the count */
static json_t **metrics_(const char *out, int *n)
{
    char *txt = losses_(out), *p = txt;
    json_t **v = NULL;
    *n = 0;
    while (p && *p) {
        char *e = strchr(p, '\n');
        json_t *o = json_loadb(p, e ? (size_t)(e - p) : strlen(p), 0, NULL);
        CHECK(o != NULL);
        v = realloc(v, (size_t)(*n + 1) * sizeof *v);
        v[(*n)++] = o;
        p = e ? e + 1 : p + strlen(p);
    }
    free(txt);
    return v;
}

static double num_(const json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

/* What this proves: kd_sft_run, given the same rows per step, makes the same
 * optimizer steps whether a step's 4 rows go through as one micro-batch of 4
 * (grad_accum 1), 2 of 2 or 4 of 1 (grad_accum 4): the step's target count
 * taken over all its micro-batches, each micro-batch's backward scaled by it,
 * the summed loss, the global norm, clipping (grad_clip 0.5 bites here), the
 * schedule and AdamW with weight decay, over two epochs (each ends on a short
 * step), and the eval loss. The rows are the same by construction: an epoch's
 * packing depends on (seed, epoch, max_len) only and a step takes the next
 * micro_batch * grad_accum rows; every step's tokens and targets being equal
 * checks that. Micro-batches pad their rows to their longest, so a 4-row one
 * carries padding that 1-row ones do not: padding adds no loss and no gradient.
 * Not bit for bit: products of other shapes sum in another order (OpenBLAS),
 * so loss, grad norm and eval loss agree to 1e-5 relative (the lr, tokens and
 * targets exactly), and each final weight tensor to 1e-4 of the distance it
 * moved, but the k_proj biases: adding one vector to every key leaves each
 * softmax unchanged, so their exact gradient is zero and the one computed is
 * rounding, which AdamW (each step moves a weight by about lr * m / sqrt(v))
 * turns into steps of about lr in any direction; their figure is printed, not
 * held. Normalising each micro-batch by its own targets instead fails this by
 * far (checked by planting it). */
TEST(accumulation_run)
{
    mkdir(TMP, 0755);
    const char *data = TMP "/data-acc";
    make_dataset_(data, 40, 0);
    static const char *const split[][2] = {
        {"train.micro_batch=4", "train.grad_accum=1"},
        {"train.micro_batch=2", "train.grad_accum=2"},
        {"train.micro_batch=1", "train.grad_accum=4"},
    };
    enum { NS = sizeof split / sizeof split[0] };
    char out[NS][256];
    kd_sft_result r[NS];
    json_t **m[NS];
    int nm[NS];
    for (int i = 0; i < NS; i++) {
        snprintf(out[i], sizeof out[i], TMP "/run-acc%d", i);
        rm_rf_(out[i]);
        kd_sft_config c;
        base_cfg_(&c, data, out[i]);
        CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, split[i][0]));
        CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, split[i][1]));
        CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, "output.save_every=0")); /* the last only */
        CHECK_OK(kd_sft_run(&c, &r[i]));
        kd_cfg_release(&kd_sft_schema, &c);
        m[i] = metrics_(out[i], &nm[i]);
    }
    kd_student *w0 = NULL, *w[NS] = {NULL};
    CHECK_OK(kd_student_load(QWEN, &w0));
    for (int i = 0; i < NS; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/checkpoints/step-%08lld", out[i], (long long)r[0].steps);
        CHECK_OK(kd_student_load(p, &w[i]));
    }
    CHECK(r[0].steps >= 8);
    for (int i = 1; i < NS; i++) {
        CHECK_EQ_INT(r[i].steps, r[0].steps);
        CHECK_EQ_INT(nm[i], nm[0]);
        double worst = 0, worst_ev = 0;
        int steps = 0;
        for (int l = 0; l < nm[0] && l < nm[i]; l++) {
            const json_t *a = m[0][l], *b = m[i][l];
            CHECK_EQ_INT((int64_t)num_(b, "step"), (int64_t)num_(a, "step"));
            if (json_object_get(a, "eval_loss")) {
                CHECK(json_object_get(b, "eval_loss") != NULL);
                double d = fabs(num_(b, "eval_loss") / num_(a, "eval_loss") - 1);
                worst_ev = d > worst_ev ? d : worst_ev;
                continue;
            }
            steps++;
            CHECK_EQ_INT((int64_t)num_(b, "tokens"), (int64_t)num_(a, "tokens"));
            CHECK_EQ_INT((int64_t)num_(b, "targets"), (int64_t)num_(a, "targets"));
            CHECK(num_(b, "lr") == num_(a, "lr"));
            CHECK(json_is_false(json_object_get(b, "skipped")));
            for (int k = 0; k < 2; k++) {
                const char *f = k ? "grad_norm" : "loss";
                double d = fabs(num_(b, f) / num_(a, f) - 1);
                worst = d > worst ? d : worst;
                if (!(d < 1e-5))
                    fprintf(stderr, "step %d %s: %.17g vs %.17g\n", (int)num_(a, "step"), f,
                            num_(b, f), num_(a, f));
            }
        }
        CHECK_EQ_INT(steps, r[0].steps);
        CHECK(worst < 1e-5);
        CHECK(worst_ev < 1e-5);
        /* the final weights, tensor by tensor, against the distance each moved */
        double wr = 0, kb = 0;
        const char *worst_t = "";
        for (size_t t = 0; w0 && w[0] && w[i] && t < kd_student_param_count(w0); t++) {
            const char *nm = kd_student_param_name(w0, t);
            float *p0, *pa, *pb;
            size_t n;
            CHECK_OK(kd_student_tensor(w0, nm, 0, &p0, &n));
            CHECK_OK(kd_student_tensor(w[0], nm, 0, &pa, &n));
            CHECK_OK(kd_student_tensor(w[i], nm, 0, &pb, &n));
            double dd = 0, dm = 0;
            for (size_t j = 0; j < n; j++) {
                dd += ((double)pb[j] - pa[j]) * ((double)pb[j] - pa[j]);
                dm += ((double)pa[j] - p0[j]) * ((double)pa[j] - p0[j]);
            }
            CHECK(dm > 0);
            const double rel = dm > 0 ? sqrt(dd / dm) : 1;
            if (strstr(nm, "k_proj.bias")) {
                kb = rel > kb ? rel : kb;
                continue;
            }
            if (rel > wr) {
                wr = rel;
                worst_t = nm;
            }
        }
        printf("accumulation through the trainer, %s %s vs %s %s: %d steps, loss and grad norm "
               "rel %.3g, eval loss rel %.3g, final weights %.3g of the distance moved (%s), "
               "k_proj biases %.3g\n", split[i][0] + 6, split[i][1] + 6, split[0][0] + 6,
               split[0][1] + 6, steps, worst, worst_ev, wr, worst_t, kb);
        CHECK(wr < 1e-4);
    }
    kd_student_free(w0);
    for (int i = 0; i < NS; i++) {
        kd_student_free(w[i]);
        for (int l = 0; l < nm[i]; l++)
            json_decref(m[i][l]);
        free(m[i]);
    }
}

TEST(bad_input)
{
    mkdir(TMP, 0755);
    const char *data = TMP "/data-bad", *out = TMP "/run-bad";
    make_dataset_(data, 10, 1);
    rm_rf_(out);
    kd_sft_config c;
    kd_sft_result r;
    base_cfg_(&c, data, out);
    CHECK_ERR(kd_sft_run(&c, &r), KD_E_RANGE, "id 600 is outside the model's vocabulary [0, 512)");
    kd_cfg_release(&kd_sft_schema, &c);
    /* not a dataset */
    base_cfg_(&c, TMP "/nothing-here", out);
    CHECK_ERR(kd_sft_run(&c, &r), KD_E_NOTFOUND, "neither a dataset folder nor a .jsonl");
    kd_cfg_release(&kd_sft_schema, &c);
    /* a .jsonl of chats needs a tokenizer: the fixture folder has none */
    FILE *f = fopen(TMP "/chats.jsonl", "w");
    if (f) {
        fputs("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", f);
        fclose(f);
    }
    base_cfg_(&c, TMP "/chats.jsonl", out);
    CHECK_ERR(kd_sft_run(&c, &r), KD_E_CONFIG, "needs a tokenizer");
    kd_cfg_release(&kd_sft_schema, &c);
}

/* A copy of the fixture with one weight set to `bad` (nan or inf). */
static void poisoned_model_(const char *dir, float bad)
{
    rm_rf_(dir);
    mkdir(dir, 0755);
    kd_student *m = NULL;
    CHECK_OK(kd_student_load(QWEN, &m));
    if (!m)
        return;
    float *p;
    size_t n;
    CHECK_OK(kd_student_tensor(m, "model.norm.weight", 0, &p, &n));
    p[3] = bad;
    kd_tensor_spec *specs = NULL;
    size_t ns = 0;
    CHECK_OK(kd_model_tensors(kd_student_config(m), &specs, &ns));
    kd_st_writer *w = NULL;
    CHECK_OK(kd_st_writer_new(&w));
    for (size_t i = 0; i < ns; i++) {
        CHECK_OK(kd_student_tensor(m, specs[i].name, 0, &p, &n));
        CHECK_OK(kd_st_writer_add(w, specs[i].name, KD_F32, specs[i].ndim, specs[i].shape, p));
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_OK(kd_st_writer_write(w, path));
    kd_st_writer_free(w);
    free(specs);
    kd_student_free(m);
    size_t len;
    char *cfg = read_all_(QWEN "/config.json", &len);
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(cfg && kd_write_file_atomic(path, cfg, len) == KD_OK);
    free(cfg);
}

TEST(nonfinite)
{
    mkdir(TMP, 0755);
    const char *data = TMP "/data-nf", *model = TMP "/model-nan", *out = TMP "/run-nf";
    make_dataset_(data, 12, 0);
    poisoned_model_(model, NAN);
    rm_rf_(out);
    kd_sft_config c;
    kd_sft_result r;
    base_cfg_(&c, data, out);
    char set[512];
    snprintf(set, sizeof set, "model=%s", model);
    CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, set));
    CHECK_ERR(kd_sft_run(&c, &r), KD_E_RANGE, "the loss is nan");
    CHECK_OK(kd_cfg_set(&kd_sft_schema, &c, "train.nonfinite=skip"));
    rm_rf_(out);
    CHECK_OK(kd_sft_run(&c, &r));
    CHECK(r.steps > 0);
    CHECK_EQ_INT(r.steps_skipped, r.steps); /* every step skipped, counted, none applied */
    kd_cfg_release(&kd_sft_schema, &c);
}

int main(void)
{
    RUN(pack);
    RUN(packed_equals_separate);
    RUN(flat_batch);
    RUN(accumulation);
    RUN(schedule);
    RUN(run_and_resume);
    RUN(accumulation_run);
    RUN(bad_input);
    RUN(nonfinite);
    return test_summary();
}
