/* test_curate.c - dataset curation (data/curate.h): each op on small
 * hand-built datasets whose expected kept/dropped sets are worked out here by
 * hand, the filter language's errors, MinHash recall on planted near
 * duplicates, decontamination reports, split/sample determinism, select,
 * tokenize masks against kd_chat_render_ids, and the script runner's rerun. */
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/chat.h"
#include "core/log.h"
#include "core/tokenizer.h"
#include "core/util.h"
#include "data/curate.h"
#include "data/store.h"

static char *scratch(const char *name)
{
    static char buf[16][1024];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, 1024, "%s/curate_%s", KD_TEST_TMP, name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.partial'", p, p);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot clean %s\n", p);
    return p;
}

/* A unit to put: prompt id, sample, prompt text, generation text (NULL: none),
 * verdict (-1 none, 0 rejected, 1 accepted), lineage source index (0/1). */
typedef struct unit {
    uint64_t pid;
    uint32_t sample;
    const char *prompt, *gen;
    int verdict;
    int source;
    uint32_t tokens;
} unit;

static void make_ds(const char *dir, const unit *u, size_t n)
{
    kd_store *s;
    CHECK_OK(kd_store_open(dir, KD_STORE_CREATE, &s));
    kd_store_batch *b;
    CHECK_OK(kd_store_batch_begin(s, &b));
    uint32_t lin[2];
    kd_lineage la = {.kind = "import", .source = "src_a", .seed = -1}, lb = {.kind = "import", .source = "src_b", .seed = -1};
    CHECK_OK(kd_store_lineage_add(b, &la, NULL, &lin[0]));
    CHECK_OK(kd_store_lineage_add(b, &lb, NULL, &lin[1]));
    for (size_t i = 0; i < n; i++) {
        kd_record p = {.db = KD_DB_PROMPTS, .id = u[i].pid, .lineage = lin[u[i].source], .text = kd_text_of(u[i].prompt)};
        CHECK_OK(kd_store_put(b, &p, KD_PUT_KEEP, NULL));
        if (u[i].gen) {
            kd_record g = {.db = KD_DB_GENERATIONS, .id = u[i].pid, .sample = u[i].sample, .lineage = lin[u[i].source],
                           .text = kd_text_of(u[i].gen), .finish = KD_FINISH_STOP,
                           .completion_tokens = u[i].tokens};
            CHECK_OK(kd_store_put(b, &g, KD_PUT_REPLACE, NULL));
        }
        if (u[i].verdict >= 0) {
            kd_record v = {.db = KD_DB_VERDICTS, .id = u[i].pid, .sample = u[i].sample, .lineage = lin[u[i].source],
                           .accepted = u[i].verdict};
            CHECK_OK(kd_store_put(b, &v, KD_PUT_REPLACE, NULL));
        }
    }
    CHECK_OK(kd_store_batch_commit(b));
    CHECK_OK(kd_store_close(s));
}

/* The output's unit keys, "pid:sample pid:sample ..." (prompts only: "pid ..."). */
static void keys_of(const char *dir, char *buf, size_t cap)
{
    kd_store *s;
    buf[0] = 0;
    if (kd_store_open(dir, KD_STORE_RDONLY, &s) != KD_OK) {
        snprintf(buf, cap, "(cannot open)");
        return;
    }
    kd_store_read *r;
    CHECK_OK(kd_store_read_begin(s, &r));
    uint64_t ng = 0;
    kd_store_count(r, KD_DB_GENERATIONS, &ng);
    kd_store_cursor *c;
    CHECK_OK(kd_store_cursor_open(r, ng ? KD_DB_GENERATIONS : KD_DB_PROMPTS, &c));
    kd_record rec;
    size_t o = 0;
    while (kd_store_cursor_next(c, &rec) > 0 && o < cap)
        o += ng ? (size_t)snprintf(buf + o, cap - o, "%s%llu:%u", o ? " " : "", (unsigned long long)rec.id, rec.sample)
                : (size_t)snprintf(buf + o, cap - o, "%s%llu", o ? " " : "", (unsigned long long)rec.id);
    kd_store_cursor_close(c);
    kd_store_read_end(r);
    kd_store_close(s);
}

static uint64_t count_of(const char *dir, kd_db db)
{
    kd_store *s;
    uint64_t n = 0;
    if (kd_store_open(dir, KD_STORE_RDONLY, &s) != KD_OK)
        return UINT64_MAX;
    kd_store_read *r;
    if (kd_store_read_begin(s, &r) == KD_OK) {
        kd_store_count(r, db, &n);
        kd_store_read_end(r);
    }
    kd_store_close(s);
    return n;
}

/* 100 pseudo-random words from a seed, space-separated, into buf. */
static void words100(char *buf, size_t cap, uint64_t seed, int change_at)
{
    static const char *v[] = {"apple", "river", "stone", "cloud", "green", "seven", "table", "light", "north",
                              "quick", "brown", "fox",   "jumps", "lazy",  "dog",   "ocean", "paper", "music",
                              "night", "plant", "house", "happy", "train", "clock", "bread", "chair", "smile",
                              "tiger", "water", "field", "queen", "honey", "glass", "storm", "dream", "sugar"};
    size_t o = 0;
    uint64_t x = seed * 2654435761u + 1;
    for (int i = 0; i < 100 && o < cap; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const char *w = i == change_at ? "CHANGED" : v[x % (sizeof v / sizeof v[0])];
        o += (size_t)snprintf(buf + o, cap - o, "%s%s%llu", i ? " " : "", w, (unsigned long long)(x % 97));
    }
}

/* ------------------------------------------------------------------------ */

TEST(report_line)
{
    kd_curate_report r = {.op = "dedupe", .kept = 9512, .dropped = 488, .nreasons = 2};
    snprintf(r.reasons[0].name, sizeof r.reasons[0].name, "exact");
    r.reasons[0].n = 301;
    snprintf(r.reasons[1].name, sizeof r.reasons[1].name, "near");
    r.reasons[1].n = 187;
    char line[256];
    CHECK_STR(kd_curate_report_line(&r, line, sizeof line), "dedupe: kept 9,512, dropped 488 (exact 301, near 187)");
    kd_curate_report z = {.op = "filter", .kept = 1234567};
    CHECK_STR(kd_curate_report_line(&z, line, sizeof line), "filter: kept 1,234,567, dropped 0");
}

TEST(filter_parser)
{
    kd_filter *f;
    CHECK_OK(kd_filter_parse("tokens < 100 and verdict == accepted and not source == \"x y\"", &f));
    kd_filter_row row = {.tokens = 50, .verdict = "accepted", .source = "z"};
    CHECK_EQ_INT(kd_filter_eval(f, &row), 1);
    row.source = "x y";
    CHECK_EQ_INT(kd_filter_eval(f, &row), 0);
    row.source = "z";
    row.tokens = 100;
    CHECK_EQ_INT(kd_filter_eval(f, &row), 0);
    CHECK(kd_filter_uses(f, "tokens") && !kd_filter_uses(f, "pass_rate"));
    kd_filter_free(f);
    /* precedence: and binds tighter than or */
    CHECK_OK(kd_filter_parse("chars > 5 or chars < 2 and pass_rate >= 0.5", &f));
    kd_filter_row r2 = {.chars = 6, .pass_rate = 0};
    CHECK_EQ_INT(kd_filter_eval(f, &r2), 1);
    r2.chars = 1;
    CHECK_EQ_INT(kd_filter_eval(f, &r2), 0);
    r2.pass_rate = 0.5;
    CHECK_EQ_INT(kd_filter_eval(f, &r2), 1);
    kd_filter_free(f);
    CHECK_OK(kd_filter_parse("(chars > 5 or chars < 2) and not (finish_reason == length)", &f));
    kd_filter_row r3 = {.chars = 1, .finish_reason = "stop"};
    CHECK_EQ_INT(kd_filter_eval(f, &r3), 1);
    r3.finish_reason = "length";
    CHECK_EQ_INT(kd_filter_eval(f, &r3), 0);
    kd_filter_free(f);
    CHECK_OK(kd_filter_parse("   ", &f)); /* empty keeps everything */
    CHECK_EQ_INT(kd_filter_eval(f, &r3), 1);
    kd_filter_free(f);

    /* hostile expressions: errors name the column */
    CHECK_ERR(kd_filter_parse("tokns < 3", &f), KD_E_CONFIG, "column 1: unknown field 'tokns'");
    CHECK_ERR(kd_filter_parse("chars < 3 and tokens <", &f), KD_E_CONFIG, "column 23: expected a value");
    CHECK_ERR(kd_filter_parse("chars < abc", &f), KD_E_CONFIG, "column 9: field 'chars' is a number");
    CHECK_ERR(kd_filter_parse("verdict == maybe", &f), KD_E_CONFIG, "column 12: verdict is accepted");
    CHECK_ERR(kd_filter_parse("source > x", &f), KD_E_CONFIG, "column 10: field 'source' is a string");
    CHECK_ERR(kd_filter_parse("(chars < 3", &f), KD_E_CONFIG, "column 11: expected ')'");
    CHECK_ERR(kd_filter_parse("chars < 3 xor chars > 1", &f), KD_E_CONFIG, "column 11: unexpected text");
    CHECK_ERR(kd_filter_parse("source == \"abc", &f), KD_E_CONFIG, "column 11: unterminated string");
    CHECK_ERR(kd_filter_parse("chars ~ 3", &f), KD_E_CONFIG, "column 7: expected an operator");
    CHECK_ERR(kd_filter_parse("and", &f), KD_E_CONFIG, "column 1: unknown field 'and'");
    CHECK_ERR(kd_filter_parse("not", &f), KD_E_CONFIG, "column 4: expected a field");
    CHECK_ERR(kd_filter_parse("chars < nan", &f), KD_E_CONFIG, "is a number");
    char deep[400];
    memset(deep, '(', 300);
    deep[300] = 0;
    CHECK_ERR(kd_filter_parse(deep, &f), KD_E_CONFIG, "nested too deeply");
    CHECK(f == NULL);
}

TEST(detect_script)
{
    CHECK_STR(kd_detect_script("Hello world", 11), "latin");
    const char *zh = "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c"; /* 你好世界 */
    CHECK_STR(kd_detect_script(zh, strlen(zh)), "cjk");
    const char *ru = "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"; /* привет */
    CHECK_STR(kd_detect_script(ru, strlen(ru)), "cyrillic");
    CHECK_STR(kd_detect_script("1 + 2 = 3", 9), "none");
}

static const unit filter_units[] = {
    {1, 0, "p1", "aaaa", 1, 0, 10}, {1, 1, "p1", "bb", 0, 0, 20},  {2, 0, "p2", "cccccc", 1, 1, 30},
    {2, 1, "p2", "d", 1, 1, 40},    {3, 0, "p3", "eee", -1, 0, 50},
};

TEST(filter_op)
{
    const char *in = scratch("f_in"), *out = scratch("f_out"), *out2 = scratch("f_out2"), *out3 = scratch("f_out3");
    make_ds(in, filter_units, 5);
    kd_filter_opts o = {.where = "verdict == accepted and not source == src_b"};
    kd_curate_report rep;
    CHECK_OK(kd_curate_filter(in, out, &o, &rep));
    char keys[256];
    keys_of(out, keys, sizeof keys);
    CHECK_STR(keys, "1:0"); /* accepted: 1:0, 2:0, 2:1; src_b: prompt 2 */
    CHECK_EQ_INT(rep.kept, 1);
    CHECK_EQ_INT(rep.dropped, 4);
    CHECK_EQ_INT(count_of(out, KD_DB_PROMPTS), 1);
    CHECK_EQ_INT(count_of(out, KD_DB_VERDICTS), 1);
    /* rerun: already done; other options on the same output: refused */
    CHECK_OK(kd_curate_filter(in, out, &o, &rep));
    CHECK_EQ_INT(rep.already_done, 1);
    CHECK_EQ_INT(rep.kept, 1);
    kd_filter_opts o2 = {.where = "chars < 3"};
    CHECK_ERR(kd_curate_filter(in, out, &o2, &rep), KD_E_CONFIG, "other input or options");
    /* pass_rate: prompt 1 has 1/2, prompt 2 has 2/2, prompt 3 0/1 */
    kd_filter_opts o3 = {.where = "pass_rate >= 0.5 and chars <= 4"};
    CHECK_OK(kd_curate_filter(in, out2, &o3, &rep));
    keys_of(out2, keys, sizeof keys);
    CHECK_STR(keys, "1:0 1:1 2:1");
    kd_filter_opts o4 = {.where = "tokens > 25 or verdict == none"};
    CHECK_OK(kd_curate_filter(in, out3, &o4, &rep));
    keys_of(out3, keys, sizeof keys);
    CHECK_STR(keys, "2:0 2:1 3:0");
}

TEST(dedupe_op)
{
    char t1[2048], t2[2048], t3[2048];
    words100(t1, sizeof t1, 1, -1);
    words100(t2, sizeof t2, 1, 50); /* t1 with one word changed */
    words100(t3, sizeof t3, 2, -1); /* unrelated */
    const unit u[] = {
        {1, 0, "Hello   World, friend", "g", 1, 0, 0}, {1, 1, "Hello   World, friend", "g", 0, 0, 0},
        {2, 0, "hello world,\tFRIEND", "g", 1, 0, 0},  /* exact after normalising */
        {3, 0, t1, "g", 1, 0, 0},  {4, 0, t3, "g", 1, 0, 0}, {5, 0, t2, "g", 1, 0, 0}, /* near of 3 */
        {6, 0, "something else entirely", "g", 1, 0, 0},
    };
    const char *in = scratch("d_in"), *out = scratch("d_out");
    make_ds(in, u, 7);
    kd_dedupe_opts o;
    memset(&o, 0, sizeof o);
    CHECK_OK(kd_cfg_defaults(&kd_dedupe_schema, &o));
    kd_curate_report rep;
    CHECK_OK(kd_curate_dedupe(in, out, &o, &rep));
    char keys[256], line[256];
    keys_of(out, keys, sizeof keys);
    CHECK_STR(keys, "1:0 1:1 3:0 4:0 6:0");
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line), "dedupe: kept 5, dropped 2 (exact 1, near 1)");
    /* generation mode: all generation texts are "g": one per exact cluster */
    const char *out2 = scratch("d_out2");
    o.on = 1;
    CHECK_OK(kd_curate_dedupe(in, out2, &o, &rep));
    keys_of(out2, keys, sizeof keys);
    CHECK_STR(keys, "1:0");
    /* bands * rows must be perms */
    o.bands = 10;
    CHECK_ERR(kd_curate_dedupe(in, scratch("d_out3"), &o, &rep), KD_E_CONFIG, "bands * rows");
    kd_cfg_release(&kd_dedupe_schema, &o);
}

TEST(minhash_recall)
{
    enum { N = 60 };
    static char buf[2 * N][2048];
    const char *texts[2 * N];
    size_t lens[2 * N];
    for (int i = 0; i < N; i++) {
        words100(buf[i], sizeof buf[i], 100 + (uint64_t)i, -1);
        words100(buf[N + i], sizeof buf[N + i], 100 + (uint64_t)i, 20 + (i * 7) % 60); /* one word changed, inside */
    }
    for (int i = 0; i < 2 * N; i++) {
        texts[i] = buf[i];
        lens[i] = strlen(buf[i]);
    }
    kd_dedupe_opts o = {.exact = 1, .near = 1, .ngram = 5, .perms = 128, .bands = 16, .rows = 8, .seed = 1, .threads = 2};
    uint8_t dup[2 * N];
    CHECK_OK(kd_minhash_dedupe(texts, lens, 2 * N, &o, dup));
    int found = 0, fp = 0;
    for (int i = 0; i < N; i++) {
        fp += dup[i] != 0;
        found += dup[N + i] == 2;
    }
    CHECK_EQ_INT(found, N);
    CHECK_EQ_INT(fp, 0);
    /* with a Jaccard threshold above the pairs' similarity (~0.9), nothing is joined */
    o.threshold = 0.99;
    CHECK_OK(kd_minhash_dedupe(texts, lens, 2 * N, &o, dup));
    found = 0;
    for (int i = 0; i < N; i++)
        found += dup[N + i] != 0;
    CHECK_EQ_INT(found, 0);
}

TEST(decontaminate_op)
{
    const char *in = scratch("c_in"), *out = scratch("c_out");
    char bench[1024];
    snprintf(bench, sizeof bench, "%s/curate_bench.jsonl", KD_TEST_TMP);
    FILE *f = fopen(bench, "w");
    fprintf(f, "{\"problem\": \"Find all primes p such that p squared plus two is prime.\"}\n"
               "{\"problem\": \"Let x be the number of ways to tile a 2 by n board with dominoes.\"}\n");
    fclose(f);
    const unit u[] = {
        {1, 0, "A question about cats and dogs and other animals in the zoo", "g", 1, 0, 0},
        {2, 0, "Hard one: LET X BE THE NUMBER OF WAYS, to tile a 2-by-n board!", "g", 1, 0, 0}, /* line 2, 8-gram */
        {3, 0, "Find all primes p such that q squared plus two", "g", 1, 0, 0},              /* at most 6 words in a row */
        {4, 0, "unrelated", "so find all primes p such that p squared plus two", 1, 0, 0},   /* response only */
    };
    make_ds(in, u, 4);
    kd_decontam_opts o = {.ngram = 8};
    char *bl[] = {bench};
    o.benchmarks = (kd_cfg_strlist){bl, 1};
    kd_curate_report rep;
    CHECK_OK(kd_curate_decontaminate(in, out, &o, &rep));
    char keys[256];
    keys_of(out, keys, sizeof keys);
    CHECK_STR(keys, "1:0 3:0 4:0");
    char rp[1200], *text = NULL;
    size_t len;
    snprintf(rp, sizeof rp, "%s/decontam_report.jsonl", out);
    CHECK_OK(kd_read_file(rp, 1 << 20, &text, &len));
    CHECK_HAS(text, "\"prompt_id\":2");
    CHECK_HAS(text, "\"line\":2");
    CHECK_HAS(text, "curate_bench.jsonl");
    CHECK_HAS(text, "\"ngram\":\"let x be the number of ways, to\""); /* the span as written, casefolded */
    free(text);
    /* with response checking, unit 4 goes too */
    const char *out2 = scratch("c_out2");
    o.response = 1;
    CHECK_OK(kd_curate_decontaminate(in, out2, &o, &rep));
    keys_of(out2, keys, sizeof keys);
    CHECK_STR(keys, "1:0 3:0");
    CHECK_EQ_INT(rep.dropped, 2);
    o.benchmarks.items[0] = "/nonexistent/b.jsonl";
    CHECK_ERR(kd_curate_decontaminate(in, scratch("c_out3"), &o, &rep), KD_E_NOTFOUND, "b.jsonl");
}

TEST(split_sample)
{
    enum { N = 1000 };
    static unit u[N];
    static char texts[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof texts[i], "p%d", i);
        u[i] = (unit){(uint64_t)i + 1, 0, texts[i], NULL, -1, 0, 0};
    }
    const char *in = scratch("s_in");
    make_ds(in, u, N); /* prompts only: the units are prompts */
    kd_split_opts a = {.fraction = 0.2, .part = 1, .seed = 7}, b = a;
    b.part = 0;
    kd_curate_report ra, rb, rc;
    const char *test = scratch("s_test"), *train = scratch("s_train"), *test2 = scratch("s_test2");
    CHECK_OK(kd_curate_split(in, test, &a, &ra));
    CHECK_OK(kd_curate_split(in, train, &b, &rb));
    CHECK_STR(ra.unit, "prompts");
    CHECK_EQ_INT(ra.kept + rb.kept, N);
    CHECK(ra.kept >= 150 && ra.kept <= 250);
    /* deterministic: the same options into another folder give the same keys */
    CHECK_OK(kd_curate_split(in, test2, &a, &rc));
    static char k1[8192], k2[8192];
    keys_of(test, k1, sizeof k1);
    keys_of(test2, k2, sizeof k2);
    CHECK_STR(k1, k2);
    kd_sample_opts so = {.n = 123, .seed = 3};
    CHECK_OK(kd_curate_sample(in, scratch("s_sample"), &so, &ra));
    CHECK_EQ_INT(ra.kept, 123);
    CHECK_EQ_INT(ra.dropped, N - 123);
}

TEST(select_op)
{
    const unit u[] = {
        {1, 0, "p1", "0123456789", 0, 0, 0},          /* shortest but rejected */
        {1, 1, "p1", "01234567890123456789", 1, 0, 0}, /* 20 */
        {1, 2, "p1", "012345678901234", 1, 0, 0},      /* 15: the pick */
        {2, 0, "p2", "abc", 0, 0, 0},                  /* no correct sample: dropped */
        {3, 0, "p3", "xx", 1, 0, 0},  {3, 1, "p3", "x", 1, 0, 0},
    };
    const char *in = scratch("sel_in"), *out = scratch("sel_out"), *out2 = scratch("sel_out2");
    make_ds(in, u, 6);
    kd_select_opts o = {.k = 1, .by = 0};
    kd_curate_report rep;
    CHECK_OK(kd_curate_select(in, out, &o, &rep));
    char keys[256], line[256];
    keys_of(out, keys, sizeof keys);
    CHECK_STR(keys, "1:2 3:1");
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line),
              "select: kept 2, dropped 4 (not_best 2, not_correct 2)");
    o.by = 2; /* longest, any verdict */
    CHECK_OK(kd_curate_select(in, out2, &o, &rep));
    keys_of(out2, keys, sizeof keys);
    CHECK_STR(keys, "1:1 2:0 3:0");
}

TEST(tokenize_masks)
{
    char dir[1024];
    if (kd_tokenizer_dir("qwen3", dir, sizeof dir) != KD_OK) {
        printf("skip: no qwen3 tokenizer (set DISTILL_CACHE)\n");
        return;
    }
    const unit u[] = {
        {1, 0, "What is 2+2?", "<think>easy</think>The answer is 4.", 1, 0, 0},
        {2, 0, "Name a colour.", "Blue.", 1, 0, 0},
        {3, 0, "Write a long one.", "one two three four five six seven eight nine ten one two three four five six seven eight nine ten one two three four five six seven eight nine ten one two three four five six seven eight nine ten", 1, 0, 0},
    };
    const char *in = scratch("t_in"), *out = scratch("t_out");
    make_ds(in, u, 3);
    kd_tokenize_opts o;
    memset(&o, 0, sizeof o);
    CHECK_OK(kd_cfg_defaults(&kd_tokenize_schema, &o));
    free(o.template_name);
    free(o.tokenizer);
    o.template_name = strdup("chatml");
    o.tokenizer = strdup("qwen3");
    o.max_tokens = 64; /* units 1 and 2 render to 47 and 37 tokens with chatml's default system turn; unit 3 to more */
    o.threads = 2;
    o.batch = 2;
    kd_curate_report rep;
    CHECK_OK(kd_curate_tokenize(in, out, &o, &rep));
    char line[256];
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line), "tokenize: kept 2, dropped 1 (too_long 1); 2 examples");
    kd_tokenizer *tok;
    CHECK_OK(kd_tok_load(dir, &tok));
    kd_ids eot = {0};
    CHECK_OK(kd_tok_encode(tok, "<|im_end|>", 10, 0, &eot));
    kd_store *s;
    CHECK_OK(kd_store_open(out, KD_STORE_RDONLY, &s));
    kd_store_read *r;
    CHECK_OK(kd_store_read_begin(s, &r));
    for (int e = 0; e < 2; e++) {
        kd_record ex;
        CHECK_OK(kd_store_get(r, KD_DB_EXAMPLES, (uint64_t)e, 0, &ex));
        CHECK_EQ_INT(ex.origin_id, u[e].pid);
        kd_chat_msg m[2] = {{"user", u[e].prompt}, {"assistant", u[e].gen}};
        kd_ids ids = {0};
        uint8_t *mask = NULL;
        CHECK_OK(kd_chat_render_ids(KD_CHAT_CHATML, tok, m, 2, 0, &ids, &mask));
        CHECK_EQ_INT(ex.n_tokens, ids.n);
        int same = 1, last_in = -1, first_in = -1;
        for (uint32_t i = 0; i < ex.n_tokens && i < ids.n; i++) {
            same &= kd_example_token(&ex, i) == ids.ids[i] && kd_example_mask(&ex, i) == mask[i];
            if (kd_example_mask(&ex, i)) {
                last_in = (int)i;
                if (first_in < 0)
                    first_in = (int)i;
            }
        }
        CHECK(same);
        /* the closing <|im_end|> (EOS of the turn) is the last token in the loss */
        CHECK(last_in >= 0 && kd_example_token(&ex, (uint32_t)last_in) == eot.ids[0]);
        /* the assistant content decodes from the first masked token */
        char *text = NULL;
        size_t tl = 0;
        int32_t tmp[256];
        int n = last_in - first_in;
        for (int i = 0; i < n && i < 256; i++)
            tmp[i] = kd_example_token(&ex, (uint32_t)(first_in + i));
        CHECK_OK(kd_tok_decode(tok, tmp, (size_t)n, 0, &text, &tl));
        CHECK_STR(text, u[e].gen);
        free(text);
        kd_ids_release(&ids);
        free(mask);
    }
    kd_store_read_end(r);
    kd_store_close(s);
    /* truncate instead: all three, the long one cut to 64 tokens */
    const char *out2 = scratch("t_out2");
    o.truncate = 1;
    CHECK_OK(kd_curate_tokenize(in, out2, &o, &rep));
    CHECK_EQ_INT(rep.kept, 3);
    CHECK_EQ_INT(count_of(out2, KD_DB_EXAMPLES), 3);
    CHECK_OK(kd_store_open(out2, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    kd_record ex3;
    CHECK_OK(kd_store_get(r, KD_DB_EXAMPLES, 2, 0, &ex3));
    CHECK_EQ_INT(ex3.n_tokens, 64);
    CHECK_EQ_INT(ex3.origin_id, 3);
    kd_store_read_end(r);
    kd_store_close(s);
    kd_ids_release(&eot);
    kd_tok_free(tok);
    kd_cfg_release(&kd_tokenize_schema, &o);
}

TEST(script_rerun)
{
    const char *in = scratch("sc_in"), *outdir = scratch("sc_out");
    make_ds(in, filter_units, 5);
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "input: %s\noutput: %s\nsteps:\n"
             "  - dedupe: {on: generation}\n"
             "  - filter:\n      where: verdict == accepted\n"
             "  - select: {k: 1, by: shortest}\n",
             in, outdir);
    kd_curate_script sc;
    memset(&sc, 0, sizeof sc);
    CHECK_OK(kd_cfg_defaults(&kd_curate_script_schema, &sc));
    CHECK_OK(kd_cfg_load_string(&kd_curate_script_schema, &sc, yaml, strlen(yaml), "script.yaml"));
    CHECK_EQ_INT(sc.steps.n, 3);
    kd_curate_report reps[3];
    CHECK_OK(kd_curate_script_run(&sc, NULL, reps));
    /* dedupe: all generation texts differ; filter: 1:0 2:0 2:1; select shortest
     * (completion tokens when recorded: 2:0 has 30, 2:1 has 40): 1:0 2:0 */
    CHECK_EQ_INT(reps[0].kept, 5);
    CHECK_EQ_INT(reps[1].kept, 3);
    CHECK_EQ_INT(reps[2].already_done, 0);
    char final[1200], keys[256], step2[1200];
    snprintf(final, sizeof final, "%s/final", outdir);
    keys_of(final, keys, sizeof keys);
    CHECK_STR(keys, "1:0 2:0");
    snprintf(step2, sizeof step2, "%s/steps/02-filter", outdir);
    CHECK_EQ_INT(count_of(step2, KD_DB_GENERATIONS), 3);
    /* rerun: every step already done, same counts */
    CHECK_OK(kd_curate_script_run(&sc, NULL, reps));
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(reps[i].already_done, 1);
    CHECK_EQ_INT(reps[2].kept, 2);
    /* an unknown step lists the known ones, with the item's path */
    kd_curate_script bad;
    memset(&bad, 0, sizeof bad);
    const char *ybad = "input: a\noutput: b\nsteps:\n  - dedupe: {}\n  - filtre: {where: x}\n";
    CHECK_ERR(kd_cfg_load_string(&kd_curate_script_schema, &bad, ybad, strlen(ybad), "bad.yaml"), KD_E_CONFIG,
              "bad.yaml:5:5: steps[1]: unknown step 'filtre' (known steps: filter, dedupe, decontaminate");
    const char *ybad2 = "steps:\n  - dedupe: {}\n  - filter: {wher: x}\n";
    CHECK_ERR(kd_cfg_load_string(&kd_curate_script_schema, &bad, ybad2, strlen(ybad2), "bad.yaml"), KD_E_CONFIG,
              "steps[1].filter.wher: unknown key");
    kd_cfg_release(&kd_curate_script_schema, &bad);
    kd_cfg_release(&kd_curate_script_schema, &sc);
}

TEST(example_scripts_load)
{
    const char *names[] = {"r1_sft.yaml"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/configs/curation/%s", KD_TEST_SRC, names[i]);
        kd_curate_script sc;
        memset(&sc, 0, sizeof sc);
        CHECK_OK(kd_cfg_build(&kd_curate_script_schema, &sc, p, NULL, 0));
        CHECK(sc.steps.n >= 5);
        kd_cfg_release(&kd_curate_script_schema, &sc);
    }
}

/* ---- mix ------------------------------------------------------------------ */

/* The generations' extra "mix_origin" in key order: "src pid:sample#copy ..."
 * with src the source folder's last character. */
static void origins_of(const char *dir, char *buf, size_t cap)
{
    kd_store *s;
    buf[0] = 0;
    if (kd_store_open(dir, KD_STORE_RDONLY, &s) != KD_OK) {
        snprintf(buf, cap, "(cannot open)");
        return;
    }
    kd_store_read *r;
    CHECK_OK(kd_store_read_begin(s, &r));
    kd_store_cursor *c;
    CHECK_OK(kd_store_cursor_open(r, KD_DB_GENERATIONS, &c));
    kd_record rec;
    size_t o = 0;
    while (kd_store_cursor_next(c, &rec) > 0 && o < cap) {
        json_t *x = json_loadb(rec.extra.ptr, rec.extra.len, 0, NULL), *m = json_object_get(x, "mix_origin");
        const char *src = json_string_value(json_object_get(m, "source"));
        o += (size_t)snprintf(buf + o, cap - o, "%s%c%lld:%lld#%lld", o ? " " : "", src ? src[strlen(src) - 1] : '?',
                              (long long)json_integer_value(json_object_get(m, "prompt_id")),
                              (long long)json_integer_value(json_object_get(m, "sample")),
                              (long long)json_integer_value(json_object_get(m, "copy")));
        json_decref(x);
    }
    kd_store_cursor_close(c);
    kd_store_read_end(r);
    kd_store_close(s);
}

/* n generation units: prompts 1.. with 2 samples each, texts tagged with `tag`. */
static void make_mix_src(const char *dir, const char *tag, int n)
{
    static char texts[64][2][32];
    static unit u[64];
    for (int i = 0; i < n && i < 64; i++) {
        snprintf(texts[i][0], 32, "%s prompt %d", tag, i / 2);
        snprintf(texts[i][1], 32, "%s gen %d", tag, i);
        u[i] = (unit){(uint64_t)(i / 2 + 1), (uint32_t)(i % 2), texts[i][0], texts[i][1], i % 3 == 0, 1, 0};
    }
    make_ds(dir, u, (size_t)n);
}

static kd_mix_opts mix_opts(const char *s1, const char *s2, int64_t total)
{
    static char items[4][1100];
    static char *ptrs[2];
    static int k;
    kd_mix_opts o;
    memset(&o, 0, sizeof o);
    o.total = total;
    ptrs[0] = items[k++ % 4];
    snprintf(ptrs[0], 1100, "%s", s1);
    o.sources.items = ptrs;
    o.sources.n = 1;
    if (s2) {
        ptrs[1] = items[k++ % 4];
        snprintf(ptrs[1], 1100, "%s", s2);
        o.sources.n = 2;
    }
    return o;
}

TEST(mix_counts)
{
    const char *a = scratch("mx_a"), *b = scratch("mx_b"), *out = scratch("mx_out");
    make_mix_src(a, "a", 20);
    make_mix_src(b, "b", 20);
    char sa[1100], sb[1100], line[256];
    snprintf(sa, sizeof sa, "%s:0.7", a);
    snprintf(sb, sizeof sb, "%s:0.3", b);
    kd_mix_opts o = mix_opts(sa, sb, 10);
    kd_curate_report rep;
    CHECK_OK(kd_curate_mix(NULL, out, &o, &rep));
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line), "mix: kept 10 (curate_mx_a 7, curate_mx_b 3)");
    CHECK_STR(rep.unit, "generations");
    CHECK_EQ_INT(count_of(out, KD_DB_GENERATIONS), 10);
    /* every kept generation keeps its verdict (i % 3 == 0 ones are accepted, all have one) */
    CHECK_EQ_INT(count_of(out, KD_DB_VERDICTS), 10);
    /* prompt ids renumbered from 0: a's first, then b's; samples 0.. per prompt */
    static char keys[4096], org[4096];
    keys_of(out, keys, sizeof keys);
    CHECK(!strncmp(keys, "0:0", 3));
    origins_of(out, org, sizeof org);
    int na = 0, nb = 0;
    for (const char *p = org; *p; p++)
        if ((p == org || p[-1] == ' ') && (*p == 'a' || *p == 'b'))
            *p == 'a' ? na++ : nb++;
    CHECK_EQ_INT(na, 7);
    CHECK_EQ_INT(nb, 3);
    /* the prompts: one per distinct (source, prompt id), no collision across sources */
    uint64_t np = count_of(out, KD_DB_PROMPTS);
    CHECK(np >= 5 && np <= 10);
    /* rerun: a no-op with the stored report */
    CHECK_OK(kd_curate_mix(NULL, out, &o, &rep));
    CHECK_EQ_INT(rep.already_done, 1);
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line),
              "mix: already done: kept 10 (curate_mx_a 7, curate_mx_b 3)");
    /* other options into the same output are refused */
    kd_mix_opts o2 = mix_opts(sa, sb, 11);
    CHECK_ERR(kd_curate_mix(NULL, out, &o2, &rep), KD_E_CONFIG, "with other input or options");
    /* integer weights, input included with input_weight: 1:1 over 5 gives 3/2 (the tie to the earlier) */
    snprintf(sb, sizeof sb, "%s:1", b);
    kd_mix_opts o3 = mix_opts(sb, NULL, 5);
    o3.input_weight = 1;
    CHECK_OK(kd_curate_mix(a, scratch("mx_out3"), &o3, &rep));
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line), "mix: kept 5 (curate_mx_a 3, curate_mx_b 2)");
}

TEST(mix_shortfall)
{
    const char *a = scratch("mx_a"), *c = scratch("mx_c");
    make_mix_src(a, "a", 20);
    make_mix_src(c, "c", 2);
    char sa[1100], sc[1100], line[256];
    snprintf(sa, sizeof sa, "%s:1", a);
    snprintf(sc, sizeof sc, "%s:1", c);
    kd_curate_report rep;
    /* shares 5/5; c holds 2: a gets the other 8 */
    kd_mix_opts o = mix_opts(sa, sc, 10);
    CHECK_OK(kd_curate_mix(NULL, scratch("mx_sf1"), &o, &rep));
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line), "mix: kept 10 (curate_mx_a 8, curate_mx_c 2)");
    /* asking more than they hold keeps all 22 */
    o = mix_opts(sa, sc, 30);
    CHECK_OK(kd_curate_mix(NULL, scratch("mx_sf2"), &o, &rep));
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line), "mix: kept 22 (curate_mx_a 20, curate_mx_c 2)");
    /* no unit twice without replacement */
    static char org[8192];
    o = mix_opts(sa, sc, 30);
    const char *sf3 = scratch("mx_sf3");
    CHECK_OK(kd_curate_mix(NULL, sf3, &o, &rep));
    origins_of(sf3, org, sizeof org);
    CHECK(strstr(org, "#1") == NULL);
    CHECK_EQ_INT(count_of(sf3, KD_DB_GENERATIONS), 22);
    CHECK_EQ_INT(count_of(sf3, KD_DB_PROMPTS), 11);
}

TEST(mix_replacement)
{
    const char *a = scratch("mx_a"), *c = scratch("mx_c"), *out = scratch("mx_rep");
    make_mix_src(a, "a", 20);
    make_mix_src(c, "c", 2);
    char sa[1100], sc[1100], line[256];
    snprintf(sa, sizeof sa, "%s:1", a);
    snprintf(sc, sizeof sc, "%s:1", c);
    kd_mix_opts o = mix_opts(sa, sc, 12);
    o.replacement = 1;
    kd_curate_report rep;
    CHECK_OK(kd_curate_mix(NULL, out, &o, &rep));
    /* c holds 2 units but gets its full share of 6: repeats */
    CHECK_STR(kd_curate_report_line(&rep, line, sizeof line), "mix: kept 12 (curate_mx_a 6, curate_mx_c 6)");
    CHECK_EQ_INT(count_of(out, KD_DB_GENERATIONS), 12);
    CHECK_EQ_INT(count_of(out, KD_DB_VERDICTS), 12);
    static char org[4096];
    origins_of(out, org, sizeof org);
    CHECK(strstr(org, "c1:0#") != NULL || strstr(org, "c1:1#") != NULL);
    CHECK(strstr(org, "#1") != NULL); /* some unit came out twice, as another key */
    /* c's units all hang off one output prompt (c has one prompt, id 1) */
    char keys[1024];
    keys_of(out, keys, sizeof keys);
    CHECK(count_of(out, KD_DB_PROMPTS) <= 6);
    CHECK(strstr(keys, ":5") != NULL); /* the c prompt's samples go 0..5 */
}

TEST(mix_seed)
{
    const char *a = scratch("mx_a"), *b = scratch("mx_b");
    make_mix_src(a, "a", 60);
    make_mix_src(b, "b", 60);
    char sa[1100], sb[1100];
    snprintf(sa, sizeof sa, "%s:2", a);
    snprintf(sb, sizeof sb, "%s:1", b);
    static char k1[8192], k2[8192], k3[8192];
    for (int repl = 0; repl < 2; repl++) {
        kd_mix_opts o = mix_opts(sa, sb, 30);
        o.replacement = repl;
        o.seed = 5;
        kd_curate_report rep;
        const char *o1 = scratch("mx_s1"), *o2 = scratch("mx_s2"), *o3 = scratch("mx_s3");
        CHECK_OK(kd_curate_mix(NULL, o1, &o, &rep));
        CHECK_EQ_INT(rep.kept, 30);
        CHECK_OK(kd_curate_mix(NULL, o2, &o, &rep));
        o.seed = 6;
        CHECK_OK(kd_curate_mix(NULL, o3, &o, &rep));
        origins_of(o1, k1, sizeof k1);
        origins_of(o2, k2, sizeof k2);
        origins_of(o3, k3, sizeof k3);
        CHECK_STR(k1, k2);
        CHECK(strcmp(k1, k3) != 0);
    }
}

TEST(mix_errors)
{
    const char *a = scratch("mx_a"), *out = scratch("mx_err");
    make_mix_src(a, "a", 4);
    char s1[1100], s2[1100];
    kd_curate_report rep;
    snprintf(s1, sizeof s1, "%s:-1", a);
    kd_mix_opts o = mix_opts(s1, NULL, 3);
    CHECK_ERR(kd_curate_mix(NULL, out, &o, &rep), KD_E_CONFIG, "weight -1 is negative");
    snprintf(s1, sizeof s1, "%s:0", a);
    o = mix_opts(s1, NULL, 3);
    CHECK_ERR(kd_curate_mix(NULL, out, &o, &rep), KD_E_CONFIG, "the weights sum to 0");
    snprintf(s1, sizeof s1, "%s:x1", a);
    o = mix_opts(s1, NULL, 3);
    CHECK_ERR(kd_curate_mix(NULL, out, &o, &rep), KD_E_CONFIG, "weight 'x1' is not a number");
    o = mix_opts(a, NULL, 3);
    CHECK_ERR(kd_curate_mix(NULL, out, &o, &rep), KD_E_CONFIG, "wants DIR:WEIGHT");
    snprintf(s1, sizeof s1, "%s:1", a);
    o = mix_opts(s1, "/nonexistent/mix_src:1", 3);
    CHECK_ERR(kd_curate_mix(NULL, out, &o, &rep), KD_E_NOTFOUND, "source '/nonexistent/mix_src' is not a dataset");
    snprintf(s2, sizeof s2, "%s/:2", a);
    o = mix_opts(s1, s2, 3);
    CHECK_ERR(kd_curate_mix(NULL, out, &o, &rep), KD_E_CONFIG, "is listed twice");
    o = mix_opts(s1, NULL, 0);
    CHECK_ERR(kd_curate_mix(NULL, out, &o, &rep), KD_E_CONFIG, "total is 0");
    CHECK(access(out, F_OK) != 0);
}

TEST(mix_script)
{
    const char *in = scratch("mx_in"), *b = scratch("mx_b"), *outdir = scratch("mx_sc");
    make_mix_src(in, "i", 10);
    make_mix_src(b, "b", 10);
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "input: %s\noutput: %s\nsteps:\n"
             "  - filter: {where: verdict == accepted}\n"
             "  - mix: {sources: [\"%s:3\"], input_weight: 1, total: 8}\n",
             in, outdir, b);
    kd_curate_script sc;
    memset(&sc, 0, sizeof sc);
    CHECK_OK(kd_cfg_defaults(&kd_curate_script_schema, &sc));
    CHECK_OK(kd_cfg_load_string(&kd_curate_script_schema, &sc, yaml, strlen(yaml), "mix.yaml"));
    kd_curate_report reps[2];
    CHECK_OK(kd_curate_script_run(&sc, NULL, reps));
    /* the filter keeps 4 of 10 (i % 3 == 0); shares 2/6 fit */
    CHECK_EQ_INT(reps[0].kept, 4);
    char line[256];
    CHECK_STR(kd_curate_report_line(&reps[1], line, sizeof line), "mix: kept 8 (01-filter 2, curate_mx_b 6)");
    CHECK_OK(kd_curate_script_run(&sc, NULL, reps));
    CHECK_EQ_INT(reps[1].already_done, 1);
    kd_cfg_release(&kd_curate_script_schema, &sc);
    /* the example script loads */
    char p[1024];
    snprintf(p, sizeof p, "%s/configs/curation/mix.yaml", KD_TEST_SRC);
    memset(&sc, 0, sizeof sc);
    CHECK_OK(kd_cfg_build(&kd_curate_script_schema, &sc, p, NULL, 0));
    CHECK(sc.steps.n >= 1);
    kd_cfg_release(&kd_curate_script_schema, &sc);
}

int main(void)
{
    kd_log_set_level(KD_LOG_WARNING);
    RUN(report_line);
    RUN(filter_parser);
    RUN(detect_script);
    RUN(filter_op);
    RUN(dedupe_op);
    RUN(minhash_recall);
    RUN(decontaminate_op);
    RUN(split_sample);
    RUN(select_op);
    RUN(tokenize_masks);
    RUN(script_rerun);
    RUN(example_scripts_load);
    RUN(mix_counts);
    RUN(mix_shortfall);
    RUN(mix_replacement);
    RUN(mix_seed);
    RUN(mix_errors);
    RUN(mix_script);
    return test_summary();
}
