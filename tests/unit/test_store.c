/* test_store.c - the LMDB dataset store: create/open/put/get/iterate/count for
 * every sub-db, key order, zero-copy examples, zstd fields, map growth, units
 * of work, lineage, readers in other processes and threads while writing, and
 * foreign, corrupt, truncated or newer files refused with a clear error. */
#include "test.h"

#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "data/store.h"

static char *scratch(const char *name)
{
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 1024, "%s/store_%s", KD_TEST_TMP, name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot clean %s\n", p);
    return p;
}

static int text_eq(kd_text t, const char *s) { return t.len == strlen(s) && (t.len == 0 || !memcmp(t.ptr, s, t.len)); }

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(p, 1, n, f);
    fclose(f);
}

/* ------------------------------------------------------------------------ */

TEST(create_put_get_every_db)
{
    const char *dir = scratch("basic");
    kd_store *s;
    CHECK_ERR(kd_store_open(dir, 0, &s), KD_E_NOTFOUND, "no dataset at");
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    if (!s)
        return;
    kd_store_batch *b;
    CHECK_OK(kd_store_batch_begin(s, &b));
    int32_t ids[5] = {151643, 7, -1, 0, 42};
    uint8_t mask[1] = {0x1A}; /* tokens 1, 3, 4 */
    kd_record recs[] = {
        {.db = KD_DB_PROMPTS, .id = 3, .text = kd_text_of("What is 2+2?"), .answer = kd_text_of("4"), .has_answer = 1,
         .extra = kd_text_of("{\"level\":\"Level 1\"}"), .lineage = 0, .created_ms = 1234},
        {.db = KD_DB_PROMPTS, .id = 4, .chat = 1, .text = kd_text_of("hi"),
         .messages = kd_text_of("[{\"role\":\"user\",\"content\":\"hi\"}]")},
        {.db = KD_DB_GENERATIONS, .id = 3, .sample = 1, .text = kd_text_of("<think>2+2</think>4"),
         .finish = KD_FINISH_STOP, .prompt_tokens = 12, .completion_tokens = 9},
        {.db = KD_DB_VERDICTS, .id = 3, .sample = 1, .accepted = 1, .has_score = 1, .score = 0.75f,
         .reason = kd_text_of("correct"), .answer = kd_text_of("4")},
        {.db = KD_DB_EXAMPLES, .id = 9, .origin_id = 3, .origin_sample = 1, .n_tokens = 5, .ids = ids, .mask = mask},
    };
    for (size_t i = 0; i < sizeof recs / sizeof recs[0]; i++) {
        int added = -1;
        CHECK_OK(kd_store_put(b, &recs[i], KD_PUT_KEEP, &added));
        CHECK_EQ_INT(added, 1);
    }
    CHECK_OK(kd_store_batch_commit(b));
    CHECK_OK(kd_store_close(s));

    char mpath[1200];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", dir);
    json_t *m = json_load_file(mpath, 0, NULL);
    CHECK(m != NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(m, "counts"), "prompts")), 2);
    CHECK_EQ_INT(json_integer_value(json_object_get(m, "schema_version")), KD_STORE_SCHEMA);
    json_decref(m);

    CHECK_OK(kd_store_open(dir, KD_STORE_RDONLY, &s));
    if (!s)
        return;
    kd_store_read *r;
    kd_record g;
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 3, 0, &g));
    CHECK(text_eq(g.text, "What is 2+2?"));
    CHECK(text_eq(g.answer, "4"));
    CHECK(g.has_answer && !g.chat);
    CHECK(text_eq(g.extra, "{\"level\":\"Level 1\"}"));
    CHECK_EQ_INT(g.created_ms, 1234);
    CHECK_EQ_INT(g.id, 3);
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 4, 0, &g));
    CHECK(g.chat && !g.has_answer);
    CHECK(text_eq(g.messages, "[{\"role\":\"user\",\"content\":\"hi\"}]"));
    CHECK(g.created_ms > 1600000000000ull); /* 0 on write = now */
    CHECK_OK(kd_store_get(r, KD_DB_GENERATIONS, 3, 1, &g));
    CHECK(text_eq(g.text, "<think>2+2</think>4"));
    CHECK_EQ_INT(g.finish, KD_FINISH_STOP);
    CHECK_EQ_INT(g.prompt_tokens, 12);
    CHECK_EQ_INT(g.completion_tokens, 9);
    CHECK_EQ_INT(g.sample, 1);
    CHECK_OK(kd_store_get(r, KD_DB_VERDICTS, 3, 1, &g));
    CHECK(g.accepted && g.has_score);
    CHECK_NEAR(g.score, 0.75, 0);
    CHECK(text_eq(g.reason, "correct"));
    CHECK_OK(kd_store_get(r, KD_DB_EXAMPLES, 9, 0, &g));
    CHECK_EQ_INT(g.n_tokens, 5);
    CHECK_EQ_INT(g.origin_id, 3);
    CHECK_EQ_INT(g.origin_sample, 1);
    for (uint32_t i = 0; i < 5; i++) {
        CHECK_EQ_INT(kd_example_token(&g, i), ids[i]);
        CHECK_EQ_INT(kd_example_mask(&g, i), (mask[0] >> i) & 1);
    }
    CHECK_ERR(kd_store_get(r, KD_DB_GENERATIONS, 3, 2, &g), KD_E_NOTFOUND, "no generation (3, 2)");
    CHECK_ERR(kd_store_get(r, KD_DB_PROMPTS, 77, 0, &g), KD_E_NOTFOUND, dir);
    uint64_t n;
    CHECK_OK(kd_store_count(r, KD_DB_PROMPTS, &n));
    CHECK_EQ_INT(n, 2);
    for (int db = 1; db < KD_DB_COUNT; db++) {
        CHECK_OK(kd_store_count(r, (kd_db)db, &n));
        CHECK_EQ_INT(n, 1);
    }
    kd_store_read_end(r);
    /* a read-only store refuses batches */
    kd_store_batch *nb;
    CHECK_ERR(kd_store_batch_begin(s, &nb), KD_E_USAGE, "read-only");
    CHECK_OK(kd_store_close(s));
}

TEST(key_order_and_seek)
{
    const char *dir = scratch("order");
    kd_store *s;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    if (!s)
        return;
    /* ids that sort wrongly as little-endian bytes or as text */
    uint64_t pids[] = {256, 1, 255, 65536, 2, 1ull << 40, 10, 0, 9, UINT64_MAX - 1};
    uint32_t samples[] = {256, 0, 255, 1, 65536, 2};
    kd_store_batch *b;
    CHECK_OK(kd_store_batch_begin(s, &b));
    for (size_t i = 0; i < 10; i++) {
        kd_record p = {.db = KD_DB_PROMPTS, .id = pids[i], .text = kd_text_of("p")};
        CHECK_OK(kd_store_put(b, &p, 0, NULL));
        for (size_t j = 0; j < 6; j++) {
            kd_record g = {.db = KD_DB_GENERATIONS, .id = pids[i], .sample = samples[j], .text = kd_text_of("g")};
            CHECK_OK(kd_store_put(b, &g, 0, NULL));
        }
    }
    CHECK_OK(kd_store_batch_commit(b));
    kd_store_read *r;
    kd_store_cursor *c;
    kd_record rec;
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_cursor_open(r, KD_DB_PROMPTS, &c));
    uint64_t prev = 0, count = 0;
    int rc;
    while ((rc = kd_store_cursor_next(c, &rec)) == 1) {
        if (count)
            CHECK(rec.id > prev);
        prev = rec.id;
        count++;
    }
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(count, 10);
    CHECK_EQ_INT(kd_store_cursor_next(c, &rec), 0); /* stays at the end */
    kd_store_cursor_close(c);
    CHECK_OK(kd_store_cursor_open(r, KD_DB_GENERATIONS, &c));
    uint64_t pp = 0, ps = 0;
    count = 0;
    while ((rc = kd_store_cursor_next(c, &rec)) == 1) {
        if (count)
            CHECK(rec.id > pp || (rec.id == pp && rec.sample > ps));
        pp = rec.id;
        ps = rec.sample;
        count++;
    }
    CHECK_EQ_INT(count, 60);
    /* seek lands on the first key >= (id, sample) */
    kd_store_cursor_seek(c, 255, 3);
    CHECK_EQ_INT(kd_store_cursor_next(c, &rec), 1);
    CHECK_EQ_INT(rec.id, 255);
    CHECK_EQ_INT(rec.sample, 255);
    kd_store_cursor_seek(c, 11, 0);
    CHECK_EQ_INT(kd_store_cursor_next(c, &rec), 1);
    CHECK_EQ_INT(rec.id, 255);
    CHECK_EQ_INT(rec.sample, 0);
    kd_store_cursor_close(c);
    uint64_t last;
    uint32_t ls;
    int found;
    CHECK_OK(kd_store_last(r, KD_DB_GENERATIONS, &last, &ls, &found));
    CHECK(found);
    CHECK_EQ_INT(last, UINT64_MAX - 1);
    CHECK_EQ_INT(ls, 65536);
    uint32_t next;
    CHECK_OK(kd_store_next_sample(r, 255, &next));
    CHECK_EQ_INT(next, 65537);
    CHECK_OK(kd_store_next_sample(r, 3, &next));
    CHECK_EQ_INT(next, 0);
    CHECK_OK(kd_store_next_sample(r, UINT64_MAX - 1, &next));
    CHECK_EQ_INT(next, 65537);
    CHECK_OK(kd_store_next_sample(r, UINT64_MAX, &next));
    CHECK_EQ_INT(next, 0);
    kd_store_read_end(r);
    CHECK_OK(kd_store_close(s));
}

TEST(examples_zero_copy)
{
    const char *dir = scratch("examples");
    kd_store *s;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    if (!s)
        return;
    static const uint32_t lens[] = {0, 1, 7, 8, 9, 100, 600, 5000};
    enum { N = sizeof lens / sizeof lens[0] };
    int32_t *ids[N];
    uint8_t *masks[N];
    kd_store_batch *b;
    CHECK_OK(kd_store_batch_begin(s, &b));
    for (int i = 0; i < N; i++) {
        ids[i] = malloc(4 * (lens[i] + 1));
        masks[i] = malloc(lens[i] / 8 + 1);
        for (uint32_t t = 0; t < lens[i]; t++)
            ids[i][t] = (int32_t)(rnd() % 300000) - 1000;
        for (uint32_t t = 0; t < lens[i] / 8 + 1; t++)
            masks[i][t] = (uint8_t)rnd(); /* junk past the last token must not leak into the store */
        kd_record e = {.db = KD_DB_EXAMPLES, .id = (uint64_t)i, .n_tokens = lens[i], .ids = ids[i],
                       .mask = masks[i], .origin_id = KD_NONE64, .origin_sample = KD_NONE32};
        CHECK_OK(kd_store_put(b, &e, 0, NULL));
    }
    /* no mask: every token in the loss */
    kd_record e = {.db = KD_DB_EXAMPLES, .id = 100, .n_tokens = 11, .ids = ids[N - 1]};
    CHECK_OK(kd_store_put(b, &e, 0, NULL));
    CHECK_OK(kd_store_batch_commit(b));

    kd_store_read *r;
    kd_store_cursor *c;
    kd_record rec;
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_cursor_open(r, KD_DB_EXAMPLES, &c));
    int i = 0;
    while (i < N && kd_store_cursor_next(c, &rec) == 1) {
        CHECK_EQ_INT(rec.n_tokens, lens[i]);
        CHECK_EQ_INT(rec.origin_id, KD_NONE64);
        int ok = 1;
        for (uint32_t t = 0; t < lens[i]; t++) {
            ok &= kd_example_token(&rec, t) == ids[i][t];
            ok &= kd_example_mask(&rec, t) == ((masks[i][t >> 3] >> (t & 7)) & 1);
        }
        CHECK(ok);
        if (lens[i] & 7) /* bits past the last token are zero */
            CHECK_EQ_INT(rec.mask[lens[i] / 8] >> (lens[i] & 7), 0);
        /* zero-copy: the ids are the value's bytes in the map, at offset 48 */
        const void *k, *v;
        size_t kl, vl;
        kd_store_cursor_raw(c, &k, &kl, &v, &vl);
        CHECK(rec.ids == (const char *)v + KD_EXAMPLE_IDS_OFFSET);
        CHECK_EQ_INT(vl, KD_EXAMPLE_IDS_OFFSET + 4 * lens[i] + (lens[i] + 7) / 8);
        /* a value on overflow pages (over ~2 KB) is 8-byte aligned: ids are aligned */
        if (lens[i] >= 600) {
            CHECK(kd_example_ids_aligned(&rec) != NULL);
            const int32_t *a = kd_example_ids_aligned(&rec);
            if (a)
                CHECK_EQ_INT(a[lens[i] - 1], ids[i][lens[i] - 1]);
        }
        i++;
    }
    CHECK_EQ_INT(i, N);
    CHECK_EQ_INT(kd_store_cursor_next(c, &rec), 1);
    CHECK_EQ_INT(rec.id, 100);
    CHECK_EQ_INT(rec.mask[0], 0xff);
    CHECK_EQ_INT(rec.mask[1], 0x07);
    kd_store_cursor_close(c);
    kd_store_read_end(r);
    CHECK_OK(kd_store_close(s));
    for (int k = 0; k < N; k++) {
        free(ids[k]);
        free(masks[k]);
    }
}

TEST(zstd_fields)
{
    const char *dir = scratch("zstd");
    kd_store *s;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    if (!s)
        return;
    size_t big = 100000;
    char *text = malloc(big + 1), *noise = malloc(5001);
    for (size_t i = 0; i < big; i++)
        text[i] = "Let $x$ be the answer. Therefore \\boxed{42}.\n"[i % 45];
    text[big] = 0;
    for (size_t i = 0; i < 5000; i++)
        noise[i] = (char)('!' + rnd() % 90); /* printable, incompressible enough */
    noise[5000] = 0;
    kd_store_batch *b;
    CHECK_OK(kd_store_batch_begin(s, &b));
    kd_record p = {.db = KD_DB_PROMPTS, .id = 1, .text = kd_text_of(text), .answer = kd_text_of(text),
                   .has_answer = 1, .extra = kd_text_of("{\"small\":1}")};
    CHECK_OK(kd_store_put(b, &p, 0, NULL));
    kd_record g = {.db = KD_DB_GENERATIONS, .id = 1, .text = kd_text_of(noise), .extra = kd_text_of(text)};
    CHECK_OK(kd_store_put(b, &g, 0, NULL));
    CHECK_OK(kd_store_batch_commit(b));
    kd_store_read *r;
    kd_store_cursor *c;
    kd_record rec;
    const void *k, *v;
    size_t kl, vl;
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_cursor_open(r, KD_DB_PROMPTS, &c));
    CHECK_EQ_INT(kd_store_cursor_next(c, &rec), 1);
    kd_store_cursor_raw(c, &k, &kl, &v, &vl);
    CHECK(vl < big / 10); /* both 100 KB fields compressed */
    CHECK(text_eq(rec.text, text));
    CHECK(text_eq(rec.answer, text));
    CHECK(text_eq(rec.extra, "{\"small\":1}"));
    CHECK_EQ_INT(((const unsigned char *)v)[2] & 3, 3); /* zmask: fields 0 and 1 */
    kd_store_cursor_close(c);
    CHECK_OK(kd_store_get(r, KD_DB_GENERATIONS, 1, 0, &rec));
    CHECK(text_eq(rec.text, noise));
    CHECK(text_eq(rec.extra, text));
    kd_store_read_end(r);
    CHECK_OK(kd_store_close(s));

    /* compress_min SIZE_MAX: stored raw */
    dir = scratch("zstd_off");
    kd_store_opts o = {.flags = KD_STORE_CREATE, .compress_min = SIZE_MAX};
    CHECK_OK(kd_store_open_opts(dir, &o, &s));
    if (s) {
        CHECK_OK(kd_store_batch_begin(s, &b));
        CHECK_OK(kd_store_put(b, &p, 0, NULL));
        CHECK_OK(kd_store_batch_commit(b));
        CHECK_OK(kd_store_read_begin(s, &r));
        CHECK_OK(kd_store_cursor_open(r, KD_DB_PROMPTS, &c));
        CHECK_EQ_INT(kd_store_cursor_next(c, &rec), 1);
        kd_store_cursor_raw(c, &k, &kl, &v, &vl);
        CHECK(vl > 2 * big);
        CHECK(text_eq(rec.text, text));
        kd_store_cursor_close(c);
        kd_store_read_end(r);
        CHECK_OK(kd_store_close(s));
    }
    free(text);
    free(noise);
}

TEST(map_grows_on_map_full)
{
    const char *dir = scratch("grow");
    kd_store_opts o = {.flags = KD_STORE_CREATE, .map_size = 64 << 10};
    kd_store *s;
    CHECK_OK(kd_store_open_opts(dir, &o, &s));
    if (!s)
        return;
    uint64_t start = kd_store_map_size(s);
    CHECK(start <= (1 << 20));
    enum { N = 3000, LEN = 8000 };
    char *text = malloc(LEN + 1);
    /* batches of 100 records of 8 KB of noise (incompressible): 24 MB in all, and
     * one batch of 6 MB bigger than the map at that point */
    kd_store_batch *b = NULL;
    for (int i = 0; i < N; i++) {
        if (!b)
            CHECK_OK(kd_store_batch_begin(s, &b));
        for (int j = 0; j < LEN; j++)
            text[j] = (char)('a' + rnd() % 26);
        text[LEN] = 0;
        snprintf(text, 16, "%08d", i);
        text[8] = ' ';
        kd_record p = {.db = KD_DB_PROMPTS, .id = (uint64_t)i, .text = kd_text_of(text)};
        CHECK_OK(kd_store_put(b, &p, 0, NULL));
        if ((i < 2000 && i % 100 == 99) || i == N - 1) {
            CHECK_OK(kd_store_batch_commit(b));
            b = NULL;
        }
    }
    CHECK(kd_store_map_size(s) >= (uint64_t)N * LEN);
    CHECK_OK(kd_store_close(s));
    /* all there after reopening with the default map */
    CHECK_OK(kd_store_open(dir, KD_STORE_RDONLY, &s));
    if (s) {
        kd_store_read *r;
        kd_store_cursor *c;
        kd_record rec;
        uint64_t n = 0;
        int ok = 1;
        CHECK_OK(kd_store_read_begin(s, &r));
        CHECK_OK(kd_store_cursor_open(r, KD_DB_PROMPTS, &c));
        while (kd_store_cursor_next(c, &rec) == 1) {
            char want[16];
            snprintf(want, sizeof want, "%08llu", (unsigned long long)n);
            ok &= rec.id == n && rec.text.len == LEN && !memcmp(rec.text.ptr, want, 8);
            n++;
        }
        CHECK(ok);
        CHECK_EQ_INT(n, N);
        kd_store_cursor_close(c);
        kd_store_read_end(r);
        CHECK_OK(kd_store_close(s));
    }
    free(text);
}

TEST(units_of_work)
{
    const char *dir = scratch("units");
    kd_store *s;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    if (!s)
        return;
    kd_store_batch *b;
    kd_store_read *r;
    kd_record rec;
    int exists, added;
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_unit_exists(r, 5, 0, &exists));
    CHECK_EQ_INT(exists, 0);
    kd_store_read_end(r);
    CHECK_OK(kd_store_batch_begin(s, &b));
    kd_record g = {.db = KD_DB_GENERATIONS, .id = 5, .sample = 0, .text = kd_text_of("first"), .finish = KD_FINISH_STOP};
    CHECK_OK(kd_store_put(b, &g, KD_PUT_KEEP, &added));
    CHECK_EQ_INT(added, 1);
    /* the batch's view sees its own puts */
    CHECK_OK(kd_store_unit_exists(kd_store_batch_view(b), 5, 0, &exists));
    CHECK_EQ_INT(exists, 1);
    CHECK_OK(kd_store_batch_commit(b));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_unit_exists(r, 5, 0, &exists));
    CHECK_EQ_INT(exists, 1);
    kd_store_read_end(r);
    /* KEEP keeps the first; REPLACE overwrites */
    CHECK_OK(kd_store_batch_begin(s, &b));
    g.text = kd_text_of("second");
    CHECK_OK(kd_store_put(b, &g, KD_PUT_KEEP, &added));
    CHECK_EQ_INT(added, 0);
    CHECK_OK(kd_store_get(kd_store_batch_view(b), KD_DB_GENERATIONS, 5, 0, &rec));
    CHECK(text_eq(rec.text, "first"));
    g.sample = 1;
    CHECK_OK(kd_store_put(b, &g, KD_PUT_KEEP, &added));
    CHECK_EQ_INT(added, 1);
    CHECK_OK(kd_store_batch_commit(b));
    CHECK_OK(kd_store_batch_begin(s, &b));
    g.sample = 0;
    g.text = kd_text_of("replaced");
    CHECK_OK(kd_store_put(b, &g, KD_PUT_REPLACE, &added));
    CHECK_EQ_INT(added, 1);
    CHECK_OK(kd_store_batch_commit(b));
    /* an aborted batch leaves nothing */
    CHECK_OK(kd_store_batch_begin(s, &b));
    g.sample = 7;
    CHECK_OK(kd_store_put(b, &g, KD_PUT_KEEP, &added));
    kd_store_batch_abort(b);
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_GENERATIONS, 5, 0, &rec));
    CHECK(text_eq(rec.text, "replaced"));
    CHECK_OK(kd_store_unit_exists(r, 5, 7, &exists));
    CHECK_EQ_INT(exists, 0);
    uint32_t next;
    CHECK_OK(kd_store_next_sample(r, 5, &next));
    CHECK_EQ_INT(next, 2);
    kd_store_read_end(r);
    CHECK_OK(kd_store_close(s));

    /* a writer killed mid-batch: its units are absent, the others complete */
    pid_t pid = fork();
    if (pid == 0) {
        kd_store *cs;
        kd_store_batch *cb;
        if (kd_store_open(dir, 0, &cs) || kd_store_batch_begin(cs, &cb))
            _exit(3);
        for (uint32_t k = 10; k < 1000; k++) {
            kd_record cg = {.db = KD_DB_GENERATIONS, .id = 6, .sample = k, .text = kd_text_of("never committed")};
            kd_store_put(cb, &cg, 0, NULL);
        }
        kill(getpid(), SIGKILL);
        _exit(4);
    }
    int wst;
    waitpid(pid, &wst, 0);
    CHECK(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL);
    CHECK_OK(kd_store_open(dir, 0, &s));
    if (s) {
        CHECK_OK(kd_store_read_begin(s, &r));
        uint64_t n;
        CHECK_OK(kd_store_count(r, KD_DB_GENERATIONS, &n));
        CHECK_EQ_INT(n, 2);
        kd_store_read_end(r);
        /* and the writer lock was released: a new batch works */
        CHECK_OK(kd_store_batch_begin(s, &b));
        g.sample = 2;
        CHECK_OK(kd_store_put(b, &g, 0, NULL));
        CHECK_OK(kd_store_batch_commit(b));
        CHECK_OK(kd_store_close(s));
    }
}

TEST(lineage_round_trip)
{
    const char *dir = scratch("lineage");
    kd_store *s;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    if (!s)
        return;
    kd_store_batch *b;
    uint32_t a = 0, c = 0, d = 0, e = 0;
    CHECK_OK(kd_store_batch_begin(s, &b));
    kd_lineage l = {.kind = "generate", .source = "prompts-v1", .teacher = "deepseek-r1", .config_hash = "abc",
                    .seed = 42};
    json_t *extra = json_pack("{s:s}", "host", "node-3");
    CHECK_OK(kd_store_lineage_add(b, &l, extra, &a));
    kd_lineage l2 = {.kind = "import", .source = "x.jsonl", .seed = -1};
    CHECK_OK(kd_store_lineage_add(b, &l2, NULL, &c));
    CHECK_EQ_INT(a, 1);
    CHECK_EQ_INT(c, 2);
    json_t *got = NULL;
    CHECK_OK(kd_store_lineage_get(kd_store_batch_view(b), a, &got));
    /* dedupe: an equal entry (apart from its id) is reused, a different one is new */
    CHECK_OK(kd_store_lineage_add_json(b, got, 1, &d));
    CHECK_EQ_INT(d, a);
    json_object_set_new(got, "seed", json_integer(43));
    CHECK_OK(kd_store_lineage_add_json(b, got, 1, &e));
    CHECK_EQ_INT(e, 3);
    json_decref(got);
    kd_record p = {.db = KD_DB_PROMPTS, .id = 1, .text = kd_text_of("x"), .lineage = a};
    CHECK_OK(kd_store_put(b, &p, 0, NULL));
    CHECK_ERR(kd_store_lineage_add_json(b, extra, 0, &d), KD_E_USAGE, "source");
    json_decref(extra);
    CHECK_OK(kd_store_batch_commit(b));
    CHECK_OK(kd_store_close(s));

    CHECK_OK(kd_store_open(dir, KD_STORE_RDONLY, &s));
    if (!s)
        return;
    kd_store_read *r;
    kd_record rec;
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 1, 0, &rec));
    CHECK_EQ_INT(rec.lineage, a);
    CHECK_OK(kd_store_lineage_get(r, rec.lineage, &got));
    CHECK_STR(json_string_value(json_object_get(got, "source")), "prompts-v1");
    CHECK_STR(json_string_value(json_object_get(got, "teacher")), "deepseek-r1");
    CHECK_STR(json_string_value(json_object_get(got, "config_hash")), "abc");
    CHECK_STR(json_string_value(json_object_get(got, "host")), "node-3");
    CHECK_EQ_INT(json_integer_value(json_object_get(got, "seed")), 42);
    CHECK(json_string_length(json_object_get(got, "created")) == 20);
    json_decref(got);
    CHECK_OK(kd_store_lineage_get(r, c, &got));
    CHECK(json_is_null(json_object_get(got, "seed")) && json_is_null(json_object_get(got, "teacher")));
    json_decref(got);
    CHECK_ERR(kd_store_lineage_get(r, 0, &got), KD_E_NOTFOUND, "unknown");
    CHECK_ERR(kd_store_lineage_get(r, 99, &got), KD_E_NOTFOUND, "lineage/00000099");
    json_t *all;
    CHECK_OK(kd_store_meta_list(r, "lineage/", &all));
    CHECK_EQ_INT(json_object_size(all), 3);
    json_decref(all);
    kd_store_read_end(r);
    CHECK_OK(kd_store_close(s));
}

/* Readers in child processes (each opens the dataset itself) and in threads,
 * while the parent writes and the map grows under them. A reader checks that
 * every snapshot is whole: prompts 0..n-1 all present and readable. */
static int check_snapshot(kd_store *s, uint64_t *seen)
{
    kd_store_read *r;
    kd_store_cursor *c;
    kd_record rec;
    if (kd_store_read_begin(s, &r) != KD_OK)
        return 1;
    uint64_t n = 0, count = 0;
    int bad = kd_store_count(r, KD_DB_PROMPTS, &count) != KD_OK;
    if (!bad && kd_store_cursor_open(r, KD_DB_PROMPTS, &c) == KD_OK) {
        int rc;
        while ((rc = kd_store_cursor_next(c, &rec)) == 1) {
            char want[32];
            snprintf(want, sizeof want, "prompt %llu", (unsigned long long)n);
            bad |= rec.id != n || rec.text.len < strlen(want) || memcmp(rec.text.ptr, want, strlen(want)) != 0;
            n++;
        }
        bad |= rc != 0;
        kd_store_cursor_close(c);
    }
    kd_store_read_end(r);
    bad |= n != count || n < *seen;
    *seen = n;
    return bad;
}

#define READ_TARGET 6000

static void *reader_thread(void *arg)
{
    kd_store *s = arg;
    uint64_t seen = 0;
    intptr_t bad = 0;
    for (int iter = 0; iter < 100000 && seen < READ_TARGET && !bad; iter++)
        bad = check_snapshot(s, &seen);
    return (void *)(intptr_t)(bad || seen != READ_TARGET);
}

TEST(readers_in_processes_and_threads)
{
    const char *dir = scratch("readers");
    kd_store_opts o = {.flags = KD_STORE_CREATE, .map_size = 256 << 10};
    kd_store *s;
    CHECK_OK(kd_store_open_opts(dir, &o, &s));
    if (!s)
        return;
    enum { NPROC = 3, NTHREAD = 3 };
    pid_t kids[NPROC];
    for (int k = 0; k < NPROC; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            /* never use the parent's handle: open our own */
            kd_store *cs;
            uint64_t seen = 0;
            /* a tiny map: the parent's growth reaches us as MDB_MAP_RESIZED */
            kd_store_opts co = {.flags = KD_STORE_RDONLY, .map_size = 64 << 10};
            if (kd_store_open_opts(dir, &co, &cs) != KD_OK)
                _exit(10);
            int bad = 0;
            double t0 = kd_now();
            while (seen < READ_TARGET && !bad && kd_now() - t0 < 60)
                bad = check_snapshot(cs, &seen);
            kd_store_close(cs);
            _exit(bad ? 11 : seen == READ_TARGET ? 0 : 12);
        }
    }
    pthread_t th[NTHREAD];
    for (int t = 0; t < NTHREAD; t++)
        pthread_create(&th[t], NULL, reader_thread, s);
    char text[3000];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = 0;
    for (int i = 0; i < READ_TARGET; i += 200) {
        kd_store_batch *b;
        CHECK_OK(kd_store_batch_begin(s, &b));
        for (int j = i; j < i + 200; j++) {
            int n = snprintf(text, sizeof text, "prompt %d", j);
            text[n] = ' ';
            for (int z = n + 1; z < (int)sizeof text - 1; z++) /* noise: the map must grow */
                text[z] = (char)('a' + rnd() % 26);
            kd_record p = {.db = KD_DB_PROMPTS, .id = (uint64_t)j, .text = kd_text_of(text)};
            CHECK_OK(kd_store_put(b, &p, 0, NULL));
        }
        CHECK_OK(kd_store_batch_commit(b));
    }
    CHECK(kd_store_map_size(s) > (256 << 10));
    for (int t = 0; t < NTHREAD; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        CHECK_EQ_INT((intptr_t)ret, 0);
    }
    for (int k = 0; k < NPROC; k++) {
        int wst;
        waitpid(kids[k], &wst, 0);
        CHECK(WIFEXITED(wst));
        CHECK_EQ_INT(WEXITSTATUS(wst), 0);
    }
    CHECK_OK(kd_store_close(s));
}

/* ------------------------------------------------------------------------ */
/* Foreign, corrupt and newer files */

static void put_raw_lmdb(const char *dir, const char *db, const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 8);
    if (mdb_env_open(env, dir, 0, 0644) == 0 && mdb_txn_begin(env, NULL, 0, &txn) == 0) {
        if (mdb_dbi_open(txn, db, MDB_CREATE, &dbi) == 0) {
            MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
            mdb_put(txn, dbi, &key, &val, 0);
        }
        mdb_txn_commit(txn);
    }
    mdb_env_close(env);
}

static void make_dataset(const char *dir, int nprompts)
{
    kd_store *s;
    kd_store_batch *b;
    if (kd_store_open(dir, KD_STORE_CREATE, &s) != KD_OK)
        return;
    kd_store_batch_begin(s, &b);
    char text[2000];
    for (int i = 0; i < nprompts; i++) {
        for (size_t j = 0; j < sizeof text - 1; j++)
            text[j] = (char)('a' + rnd() % 26);
        text[sizeof text - 1] = 0;
        kd_record p = {.db = KD_DB_PROMPTS, .id = (uint64_t)i, .text = kd_text_of(text)};
        kd_store_put(b, &p, 0, NULL);
    }
    kd_store_batch_commit(b);
    kd_store_close(s);
}

TEST(foreign_and_corrupt_files)
{
    kd_store *s = NULL;
    char path[1200];
    const char *dir;

    /* random bytes, a text file, an empty file as data.mdb */
    dir = scratch("random");
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unsigned char junk[65536];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)rnd();
    write_bytes(path, junk, sizeof junk);
    CHECK_ERR(kd_store_open(dir, KD_STORE_RDONLY, &s), KD_E_FORMAT, "is not an LMDB file");
    CHECK_ERR(kd_store_open(dir, KD_STORE_CREATE, &s), KD_E_FORMAT, "is not an LMDB file");
    CHECK(s == NULL);
    const char *txt = "{\"problem\": \"this is JSONL, not LMDB\"}\n";
    write_bytes(path, txt, strlen(txt));
    CHECK_ERR(kd_store_open(dir, 0, &s), KD_E_FORMAT, "data.mdb' is not an LMDB file");
    write_bytes(path, "", 0);
    CHECK_ERR(kd_store_open(dir, KD_STORE_RDONLY, &s), KD_E_FORMAT, "empty");
    /* an empty data.mdb is a create that was killed: KD_STORE_CREATE finishes it */
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    CHECK_OK(kd_store_close(s));
    s = NULL;

    /* a file where the directory should be */
    dir = scratch("afile");
    write_bytes(dir, "x", 1);
    CHECK_ERR(kd_store_open(dir, KD_STORE_CREATE, &s), KD_E_FORMAT, "is a file, not a dataset directory");
    unlink(dir);

    /* a truncated copy: the meta page claims pages the file no longer has */
    dir = scratch("full");
    make_dataset(dir, 2000);
    char *src = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    CHECK_OK(kd_read_file(path, 1u << 30, &src, &len));
    const char *dir2 = scratch("truncated");
    mkdir(dir2, 0755);
    char path2[1200];
    snprintf(path2, sizeof path2, "%s/data.mdb", dir2);
    write_bytes(path2, src, len / 2);
    CHECK_ERR(kd_store_open(dir2, KD_STORE_RDONLY, &s), KD_E_FORMAT, "truncated");
    CHECK_ERR(kd_store_open(dir2, 0, &s), KD_E_FORMAT, "truncated");
    write_bytes(path2, src, 5000); /* a meta page and a half */
    CHECK_ERR(kd_store_open(dir2, KD_STORE_RDONLY, &s), KD_E_FORMAT, dir2);
    write_bytes(path2, src, 100);
    CHECK_ERR(kd_store_open(dir2, KD_STORE_RDONLY, &s), KD_E_FORMAT, dir2);
    /* the copy in full reads fine */
    write_bytes(path2, src, len);
    CHECK_OK(kd_store_open(dir2, KD_STORE_RDONLY, &s));
    kd_store_close(s);
    s = NULL;
    free(src);

    /* an LMDB environment that is not a dataset */
    dir = scratch("plainlmdb");
    mkdir(dir, 0755);
    put_raw_lmdb(dir, NULL, "hello", 5, "world", 5);
    CHECK_ERR(kd_store_open(dir, KD_STORE_CREATE, &s), KD_E_FORMAT, "not a distill dataset");

    /* a newer schema version, and a version that is not a number */
    dir = scratch("newer");
    make_dataset(dir, 1);
    put_raw_lmdb(dir, "meta", "schema_version", 14, "2", 1);
    CHECK_ERR(kd_store_open(dir, KD_STORE_RDONLY, &s), KD_E_FORMAT, "schema version 2; this distill reads version 1");
    put_raw_lmdb(dir, "meta", "schema_version", 14, "\"one\"", 5);
    CHECK_ERR(kd_store_open(dir, 0, &s), KD_E_FORMAT, "is not a positive number");
    put_raw_lmdb(dir, "meta", "schema_version", 14, "1", 1);
    CHECK_OK(kd_store_open(dir, KD_STORE_RDONLY, &s));
    kd_store_close(s);
    s = NULL;

    /* damaged records: named by key, never a crash */
    dir = scratch("damaged");
    make_dataset(dir, 1);
    unsigned char key[8] = {0, 0, 0, 0, 0, 0, 0, 5};
    put_raw_lmdb(dir, "prompts", key, 8, "short", 5);
    unsigned char v[40] = {9, 1};
    key[7] = 6;
    put_raw_lmdb(dir, "prompts", key, 8, v, sizeof v);
    key[7] = 7;
    unsigned char w[40] = {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0, 0};
    w[32] = 200; /* field 0 of 200 bytes in a 40-byte value */
    put_raw_lmdb(dir, "prompts", key, 8, w, sizeof w);
    put_raw_lmdb(dir, "prompts", "abc", 3, w, sizeof w);
    CHECK_OK(kd_store_open(dir, KD_STORE_RDONLY, &s));
    if (s) {
        kd_store_read *r;
        kd_record rec;
        CHECK_OK(kd_store_read_begin(s, &r));
        CHECK_ERR(kd_store_get(r, KD_DB_PROMPTS, 5, 0, &rec), KD_E_FORMAT, "prompt 5: damaged record");
        CHECK_ERR(kd_store_get(r, KD_DB_PROMPTS, 6, 0, &rec), KD_E_FORMAT, "record layout version 9");
        CHECK_ERR(kd_store_get(r, KD_DB_PROMPTS, 7, 0, &rec), KD_E_FORMAT, "field 0 of 200 bytes runs past");
        kd_store_cursor *c;
        CHECK_OK(kd_store_cursor_open(r, KD_DB_PROMPTS, &c));
        int rc, good = 0;
        while ((rc = kd_store_cursor_next(c, &rec)) == 1)
            good++;
        CHECK_EQ_INT(good, 1);
        CHECK_EQ_INT(rc, KD_E_FORMAT);
        CHECK_HAS(kd_strerror(rc), "': prompt 5: damaged record: 5 bytes");
        kd_store_cursor_close(c);
        kd_store_read_end(r);
        kd_store_close(s);
    }
}

/* Plant faults: every single-byte change and every truncation of encoded
 * records decodes or fails with KD_E_FORMAT (ASan watches the reads). */
TEST(decode_survives_damage)
{
    kd_record_encoder *e;
    CHECK_OK(kd_record_encoder_new(64, 1, &e));
    char big[500];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = "abcabcabd"[i % 9];
    big[sizeof big - 1] = 0;
    int32_t ids[20] = {1, 2, 3};
    kd_record recs[] = {
        {.db = KD_DB_PROMPTS, .text = kd_text_of(big), .answer = kd_text_of("42"), .extra = kd_text_of("{}")},
        {.db = KD_DB_GENERATIONS, .text = kd_text_of("short"), .extra = kd_text_of(big)},
        {.db = KD_DB_VERDICTS, .reason = kd_text_of("ok"), .answer = kd_text_of(big)},
        {.db = KD_DB_EXAMPLES, .n_tokens = 20, .ids = ids},
    };
    kd_record_scratch sc = {0};
    int unexpected = 0, caught = 0;
    for (size_t k = 0; k < 4; k++) {
        const void *val;
        size_t vlen;
        CHECK_OK(kd_record_encode(e, &recs[k], &val, &vlen));
        unsigned char *copy = malloc(vlen);
        memcpy(copy, val, vlen);
        kd_record out;
        CHECK_OK(kd_record_decode(recs[k].db, copy, vlen, &sc, "r", &out));
        for (size_t cut = 0; cut < vlen; cut++) {
            unsigned char *t = malloc(cut ? cut : 1);
            memcpy(t, copy, cut);
            int st = kd_record_decode(recs[k].db, t, cut, &sc, "r", &out);
            unexpected += st != KD_OK && st != KD_E_FORMAT;
            caught += st == KD_E_FORMAT;
            free(t);
        }
        for (size_t pos = 0; pos < vlen; pos++)
            for (int bit = 0; bit < 8; bit += 3) {
                copy[pos] ^= (unsigned char)(1u << bit);
                int st = kd_record_decode(recs[k].db, copy, vlen, &sc, "r", &out);
                unexpected += st != KD_OK && st != KD_E_FORMAT;
                copy[pos] ^= (unsigned char)(1u << bit);
            }
        free(copy);
    }
    CHECK_EQ_INT(unexpected, 0);
    CHECK(caught > 100);
    kd_record_scratch_release(&sc);
    kd_record_encoder_free(e);
}

TEST(fast_mode_and_reopen)
{
    const char *dir = scratch("fast");
    kd_store *s;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE | KD_STORE_FAST, &s));
    if (!s)
        return;
    kd_store_batch *b;
    for (int i = 0; i < 10; i++) {
        CHECK_OK(kd_store_batch_begin(s, &b));
        kd_record p = {.db = KD_DB_PROMPTS, .id = (uint64_t)i, .text = kd_text_of("fast")};
        CHECK_OK(kd_store_put(b, &p, 0, NULL));
        CHECK_OK(kd_store_batch_commit(b));
    }
    CHECK_OK(kd_store_close(s));
    CHECK_OK(kd_store_open(dir, KD_STORE_RDONLY, &s));
    if (s) {
        kd_store_read *r;
        uint64_t n;
        CHECK_OK(kd_store_read_begin(s, &r));
        CHECK_OK(kd_store_count(r, KD_DB_PROMPTS, &n));
        CHECK_EQ_INT(n, 10);
        json_t *ds;
        CHECK_OK(kd_store_meta_get(r, "dataset", &ds));
        CHECK_STR(json_string_value(json_object_get(ds, "name")), "store_fast");
        json_decref(ds);
        CHECK_ERR(kd_store_meta_get(r, "nope", &ds), KD_E_NOTFOUND, "no meta 'nope'");
        kd_store_read_end(r);
        CHECK_OK(kd_store_close(s));
    }
}

static long manifest_prompts(const char *dir)
{
    char mpath[1200];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", dir);
    json_t *m = json_load_file(mpath, 0, NULL);
    long n = m ? (long)json_integer_value(json_object_get(json_object_get(m, "counts"), "prompts")) : -1;
    json_decref(m);
    return n;
}

/* A writer killed after its last commit, before close, leaves manifest.json behind the data; the
 * next writer mirrors the data at its close even when it commits nothing (a finished import's
 * rerun), and a reader leaves the file alone. */
TEST(manifest_after_killed_writer)
{
    const char *dir = scratch("killed_manifest");
    kd_store *s;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE | KD_STORE_FAST, &s));
    if (!s)
        return;
    CHECK_OK(kd_store_close(s));
    CHECK_EQ_INT(manifest_prompts(dir), 0);
    pid_t pid = fork();
    if (pid == 0) {
        kd_store *cs;
        kd_store_batch *cb;
        if (kd_store_open(dir, KD_STORE_FAST, &cs) || kd_store_batch_begin(cs, &cb))
            _exit(3);
        for (uint64_t k = 0; k < 7; k++) {
            kd_record p = {.db = KD_DB_PROMPTS, .id = k, .text = kd_text_of("committed, then killed")};
            kd_store_put(cb, &p, 0, NULL);
        }
        if (kd_store_batch_commit(cb))
            _exit(5);
        kill(getpid(), SIGKILL);
        _exit(4);
    }
    int wst;
    waitpid(pid, &wst, 0);
    CHECK(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL);
    CHECK_EQ_INT(manifest_prompts(dir), 0); /* behind: the killed writer never closed */
    CHECK_OK(kd_store_open(dir, KD_STORE_RDONLY, &s));
    if (s)
        CHECK_OK(kd_store_close(s));
    CHECK_EQ_INT(manifest_prompts(dir), 0); /* a reader does not write */
    CHECK_OK(kd_store_open(dir, 0, &s));
    if (s)
        CHECK_OK(kd_store_close(s)); /* commits nothing */
    CHECK_EQ_INT(manifest_prompts(dir), 7);
}

int main(void)
{
    RUN(create_put_get_every_db);
    RUN(key_order_and_seek);
    RUN(examples_zero_copy);
    RUN(zstd_fields);
    RUN(map_grows_on_map_full);
    RUN(units_of_work);
    RUN(lineage_round_trip);
    RUN(readers_in_processes_and_threads);
    RUN(foreign_and_corrupt_files);
    RUN(decode_survives_damage);
    RUN(fast_mode_and_reopen);
    RUN(manifest_after_killed_writer);
    return test_summary();
}
