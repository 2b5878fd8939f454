/* bench.c - `distill data bench`: the store's two throughput figures.
 *
 *   import   MB/s of JSONL read, parsed, encoded and committed (durable and --fast)
 *   iterate  tokenized examples/s read zero-copy from the map, every token
 *            and loss-mask bit touched (what the trainer's loader does)
 *
 * The JSONL imitates MATH / NuminaMath rows: a LaTeX-flavoured problem of
 * 100-800 characters, a short answer, a 300-2500 character solution and a few
 * small fields, so parsing, escaping and compression all take part.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"
#include "jsonl.h"
#include "tools.h"

static uint64_t rng_next(uint64_t *s) /* xorshift64*: enough for synthetic text */
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static const char *const words[] = {
    "Let",      "$x$",     "be",        "a",          "real",    "number",     "such",       "that",
    "the",      "sum",     "of",        "\\frac{1}{2}", "and",   "$y^2$",      "is",         "equal",
    "to",       "Find",    "value",     "positive",   "integer", "$n$",        "triangle",   "$ABC$",
    "with",     "sides",   "\\sqrt{3}", "probability", "Compute", "$\\pi$",    "modulo",     "prime",
    "function", "$f(x)$",  "satisfies", "for",        "all",     "polynomial", "roots",      "\"exactly\"",
    "circle",   "radius",  "area",      "\\cdot",     "what",    "smallest",   "largest",    "possible",
    "Therefore", "so",     "we",        "have",       "Since",   "thus",       "$\\boxed{7}$", "step",
    "by",       "solving", "equation",  "gives",      "\\le",    "\\ge",       "digits",     "sequence"};

static void gen_text(uint64_t *rng, size_t lo, size_t hi, char *buf)
{
    size_t want = lo + rng_next(rng) % (hi - lo + 1), n = 0;
    while (n < want) {
        const char *w = words[rng_next(rng) % (sizeof words / sizeof words[0])];
        size_t l = strlen(w);
        memcpy(buf + n, w, l);
        n += l;
        buf[n++] = rng_next(rng) % 23 == 0 ? '\n' : ' ';
    }
    buf[n] = 0;
}

static int write_jsonl(const char *path, uint64_t n, uint64_t *bytes)
{
    static const char *const subjects[] = {"Algebra", "Geometry", "Number Theory", "Precalculus", "Counting & Probability",
                                           "Intermediate Algebra", "Prealgebra"};
    FILE *f = fopen(path, "w");
    if (!f)
        return kd_err(KD_E_IO, "cannot create '%s'", path);
    char *problem = malloc(4096), *solution = malloc(8192);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int st = KD_OK;
    for (uint64_t i = 0; i < n && problem && solution; i++) {
        gen_text(&rng, 100, 800, problem);
        gen_text(&rng, 300, 2500, solution);
        char answer[32], uid[64], level[16];
        snprintf(answer, sizeof answer, "%" PRIu64, rng_next(&rng) % 1000);
        snprintf(uid, sizeof uid, "train/%" PRIu64 ".json", i);
        snprintf(level, sizeof level, "Level %d", (int)(rng_next(&rng) % 5) + 1);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "problem", problem, "solution", solution, "answer",
                              answer, "level", level, "type", subjects[rng_next(&rng) % 7], "unique_id", uid);
        if (!o || json_dumpf(o, f, JSON_COMPACT) != 0 || fputc('\n', f) == EOF)
            st = kd_err(KD_E_IO, "cannot write '%s'", path);
        json_decref(o);
        if (st)
            break;
    }
    if (!problem || !solution)
        st = kd_err(KD_E_NOMEM, "bench text");
    free(problem);
    free(solution);
    if (fclose(f) != 0 && st == KD_OK)
        st = kd_err(KD_E_IO, "cannot write '%s'", path);
    struct stat sb;
    *bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    return st;
}

static void remove_dataset(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb", "manifest.json"};
    char p[4200];
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int bench_import(FILE *out, const char *ds, const char *jsonl, uint64_t bytes, unsigned flags, int threads,
                        const char *label)
{
    kd_import_opts io;
    kd_import_opts_init(&io);
    io.store_flags = flags;
    io.threads = threads;
    kd_import_stats st;
    KD_TRY(kd_jsonl_import(ds, jsonl, &io, &st));
    fprintf(out, "import     %-8s %8.1f MB in %6.2f s = %7.1f MB/s  (%.0f lines/s, %" PRIu64 " prompts)\n", label,
            (double)bytes / 1e6, st.seconds, (double)bytes / 1e6 / st.seconds, (double)st.lines / st.seconds,
            st.prompts);
    return KD_OK;
}

static int bench_examples(FILE *out, const char *ds, uint64_t n, uint32_t tokens)
{
    kd_store *s;
    kd_store_opts so = {.flags = KD_STORE_CREATE};
    KD_TRY(kd_store_open_opts(ds, &so, &s));
    int32_t *ids = malloc(4 * (size_t)tokens);
    uint8_t *mask = malloc(((size_t)tokens + 7) / 8);
    int st = ids && mask ? KD_OK : kd_err(KD_E_NOMEM, "bench example");
    uint64_t rng = 42, expect_sum = 0, expect_loss = 0;
    double t0 = kd_now();
    kd_store_batch *b = NULL;
    for (uint64_t i = 0; i < n && st == KD_OK; i++) {
        if (!b && (st = kd_store_batch_begin(s, &b)) != KD_OK)
            break;
        uint32_t prompt_len = tokens / 4;
        for (uint32_t t = 0; t < tokens; t++) {
            ids[t] = (int32_t)(rng_next(&rng) % 151936); /* Qwen2.5's vocabulary size */
            expect_sum += (uint64_t)ids[t];
        }
        memset(mask, 0, (tokens + 7) / 8);
        for (uint32_t t = prompt_len; t < tokens; t++) /* loss on the completion only */
            mask[t >> 3] |= (uint8_t)(1u << (t & 7));
        expect_loss += tokens - prompt_len;
        kd_record r = {.db = KD_DB_EXAMPLES, .id = i, .origin_id = i, .origin_sample = 0, .n_tokens = tokens,
                       .ids = ids, .mask = mask};
        st = kd_store_put(b, &r, KD_PUT_REPLACE, NULL);
        if (st == KD_OK && kd_store_batch_bytes(b) >= (64u << 20)) {
            st = kd_store_batch_commit(b);
            b = NULL;
        }
    }
    if (b)
        st = st == KD_OK ? kd_store_batch_commit(b) : (kd_store_batch_abort(b), st);
    double tw = kd_now() - t0;
    free(ids);
    free(mask);
    if (st == KD_OK)
        fprintf(out, "examples   wrote %" PRIu64 " x %u tokens in %.2f s = %.0f examples/s (durable)\n", n, tokens, tw,
                (double)n / tw);
    /* iterate: three passes, the first may read from disk */
    for (int pass = 1; pass <= 3 && st == KD_OK; pass++) {
        kd_store_read *r;
        kd_store_cursor *c;
        kd_record rec;
        uint64_t count = 0, sum = 0, loss = 0, aligned = 0;
        double t1 = kd_now();
        if ((st = kd_store_read_begin(s, &r)) != KD_OK)
            break;
        if ((st = kd_store_cursor_open(r, KD_DB_EXAMPLES, &c)) != KD_OK) {
            kd_store_read_end(r);
            break;
        }
        int rc;
        while ((rc = kd_store_cursor_next(c, &rec)) == 1) {
            const int32_t *a = kd_example_ids_aligned(&rec);
            if (a) {
                aligned++;
                for (uint32_t t = 0; t < rec.n_tokens; t++)
                    sum += (uint64_t)a[t];
            } else {
                for (uint32_t t = 0; t < rec.n_tokens; t++)
                    sum += (uint64_t)kd_example_token(&rec, t);
            }
            for (uint32_t k = 0; k < (rec.n_tokens + 7) / 8; k++)
                loss += (uint64_t)__builtin_popcount(rec.mask[k]);
            count++;
        }
        kd_store_cursor_close(c);
        kd_store_read_end(r);
        double ti = kd_now() - t1;
        if (rc < 0) {
            st = rc;
            break;
        }
        if (count != n || sum != expect_sum || loss != expect_loss) {
            st = kd_err(KD_E_INTERNAL, "bench: read back %" PRIu64 " examples, checksum %s", count,
                        sum != expect_sum ? "differs" : loss != expect_loss ? "of the mask differs" : "ok");
            break;
        }
        fprintf(out,
                "iterate    pass %d: %" PRIu64 " examples in %.3f s = %.2fM examples/s, %.0fM tokens/s "
                "(ids 4-byte aligned in %.0f%%)\n",
                pass, count, ti, (double)count / ti / 1e6, (double)count * tokens / ti / 1e6,
                100.0 * (double)aligned / (double)(count ? count : 1));
    }
    int c = kd_store_close(s);
    return st ? st : c;
}

int kd_data_bench(const kd_bench_opts *o, FILE *out)
{
    uint64_t n = o->records ? o->records : 200000;
    uint32_t tokens = o->tokens ? o->tokens : 256;
    char dir[4096], jsonl[4200], d1[4200], d2[4200], d3[4200];
    if (o->dir) {
        snprintf(dir, sizeof dir, "%s", o->dir);
        if (mkdir(dir, 0755) != 0 && !kd_is_dir(dir))
            return kd_err(KD_E_IO, "cannot create '%s'", dir);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/distill-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir))
            return kd_err(KD_E_IO, "cannot create a scratch folder under '%s'", tmp && *tmp ? tmp : "/tmp");
    }
    snprintf(jsonl, sizeof jsonl, "%s/bench.jsonl", dir);
    snprintf(d1, sizeof d1, "%s/import-durable", dir);
    snprintf(d2, sizeof d2, "%s/import-fast", dir);
    snprintf(d3, sizeof d3, "%s/examples", dir);
    remove_dataset(d1);
    remove_dataset(d2);
    remove_dataset(d3);
    fprintf(out, "distill data bench: %" PRIu64 " records, %u tokens per example, scratch '%s'\n", n, tokens, dir);
    uint64_t bytes = 0;
    double t0 = kd_now();
    int st = write_jsonl(jsonl, n, &bytes);
    if (st == KD_OK)
        fprintf(out, "jsonl      generated %.1f MB (%" PRIu64 " lines) in %.2f s\n", (double)bytes / 1e6, n,
                kd_now() - t0);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = o->threads > 0 ? o->threads : (cpus > 8 ? 8 : (int)cpus);
    if (st == KD_OK)
        fprintf(out, "import     %d parser thread(s), %ld CPU(s) online\n", threads, cpus);
    if (st == KD_OK)
        st = bench_import(out, d1, jsonl, bytes, 0, threads, "durable");
    if (st == KD_OK)
        st = bench_import(out, d2, jsonl, bytes, KD_STORE_FAST, threads, "--fast");
    if (st == KD_OK)
        st = bench_examples(out, d3, n, tokens);
    fflush(out);
    if (!o->keep) {
        unlink(jsonl);
        remove_dataset(d1);
        remove_dataset(d2);
        remove_dataset(d3);
        rmdir(dir);
    }
    return st;
}
