/* test_jsonl.c - JSONL import and export: each kind with field mapping, bad
 * lines under skip and stop, export round trips (the exported objects equal
 * the input objects, extra fields included; import -> export -> import gives
 * identical records), resume after a kill, and the refusals of a changed file
 * or changed options. */
#include "test.h"

#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "data/jsonl.h"
#include "data/store.h"

static char *scratch(const char *name)
{
    static char buf[16][1024];
    static int k;
    char *p = buf[k++ % 16];
    snprintf(p, 1024, "%s/jsonl_%s", KD_TEST_TMP, name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot clean %s\n", p);
    return p;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static kd_import_opts opts(int kind)
{
    kd_import_opts o;
    kd_import_opts_init(&o);
    o.kind = kind;
    return o;
}

/* Export into memory and parse each line. Returns a JSON array (new reference). */
static json_t *export_lines(const char *ds, int kind)
{
    kd_store *s;
    char *buf = NULL;
    size_t len = 0;
    json_t *arr = json_array();
    if (kd_store_open(ds, KD_STORE_RDONLY, &s) != KD_OK)
        return arr;
    FILE *f = open_memstream(&buf, &len);
    kd_export_opts eo = {.kind = kind};
    int st = kd_jsonl_export_to(s, f, &eo, NULL);
    fclose(f);
    kd_store_close(s);
    if (st != KD_OK) {
        fprintf(stderr, "export failed: %s\n", kd_strerror(st));
        free(buf);
        return arr;
    }
    for (char *line = buf, *nl; line && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl)
            break;
        json_array_append_new(arr, json_loadb(line, (size_t)(nl - line), 0, NULL));
    }
    free(buf);
    return arr;
}

/* The lines of a text as JSON values (NULL for lines that do not parse). */
static json_t *parse_lines(const char *text)
{
    json_t *arr = json_array();
    const char *line = text;
    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        json_t *v = json_loadb(line, n, 0, NULL);
        json_array_append_new(arr, v ? v : json_null());
        if (!nl)
            break;
        line = nl + 1;
    }
    return arr;
}

static uint64_t count(const char *ds, kd_db db)
{
    kd_store *s;
    kd_store_read *r;
    uint64_t n = 0;
    if (kd_store_open(ds, KD_STORE_RDONLY, &s) != KD_OK)
        return UINT64_MAX;
    if (kd_store_read_begin(s, &r) == KD_OK) {
        kd_store_count(r, db, &n);
        kd_store_read_end(r);
    }
    kd_store_close(s);
    return n;
}

static int texts_equal(kd_text a, kd_text b) { return a.len == b.len && (a.len == 0 || !memcmp(a.ptr, b.ptr, a.len)); }

/* Two datasets hold the same records (content and keys; not lineage ids or times). */
static int same_records(const char *a, const char *b)
{
    kd_store *sa, *sb;
    if (kd_store_open(a, KD_STORE_RDONLY, &sa) != KD_OK)
        return 0;
    if (kd_store_open(b, KD_STORE_RDONLY, &sb) != KD_OK) {
        kd_store_close(sa);
        return 0;
    }
    kd_store_read *ra, *rb;
    kd_store_read_begin(sa, &ra);
    kd_store_read_begin(sb, &rb);
    int same = 1;
    for (int db = 0; db < KD_DB_COUNT && same; db++) {
        kd_store_cursor *ca, *cb;
        kd_record x, y;
        kd_store_cursor_open(ra, (kd_db)db, &ca);
        kd_store_cursor_open(rb, (kd_db)db, &cb);
        for (;;) {
            int na = kd_store_cursor_next(ca, &x), nb = kd_store_cursor_next(cb, &y);
            if (na != nb) {
                same = 0;
                break;
            }
            if (na != 1)
                break;
            same &= x.id == y.id && x.sample == y.sample && x.chat == y.chat && x.has_answer == y.has_answer &&
                    texts_equal(x.text, y.text) && texts_equal(x.answer, y.answer) &&
                    texts_equal(x.messages, y.messages) && texts_equal(x.extra, y.extra) &&
                    x.accepted == y.accepted && texts_equal(x.reason, y.reason);
        }
        kd_store_cursor_close(ca);
        kd_store_cursor_close(cb);
    }
    kd_store_read_end(ra);
    kd_store_read_end(rb);
    kd_store_close(sa);
    kd_store_close(sb);
    return same;
}

/* The exported objects equal the given input lines, in order. */
static void check_export_equals(const char *ds, int kind, const char *input)
{
    json_t *got = export_lines(ds, kind), *want = parse_lines(input);
    CHECK_EQ_INT(json_array_size(got), json_array_size(want));
    for (size_t i = 0; i < json_array_size(want) && i < json_array_size(got); i++) {
        if (!json_equal(json_array_get(got, i), json_array_get(want, i))) {
            char *g = json_dumps(json_array_get(got, i), JSON_COMPACT), *w = json_dumps(json_array_get(want, i), JSON_COMPACT);
            FAIL_("line %zu differs:\n  got  %s\n  want %s", i + 1, g ? g : "(null)", w ? w : "(null)");
            free(g);
            free(w);
        }
    }
    json_decref(got);
    json_decref(want);
}

/* ------------------------------------------------------------------------ */

static const char *PROMPTS =
    "{\"problem\": \"What is $1+1$?\", \"answer\": \"2\", \"level\": \"Level 1\", \"type\": \"Algebra\"}\n"
    "{\"problem\": \"Unicode: \\u00e9 \xe6\xbc\xa2\xe5\xad\x97 \xf0\x9f\x99\x82, escapes \\\" \\\\ \\n \\t\", \"answer\": \"\\\\frac{1}{2}\", "
    "\"meta\": {\"nested\": [1, 2.5, -0.1, 1e-300, 9007199254740993, true, null, {}]}}\n"
    "{\"problem\": \"no answer here\", \"source\": \"x\"}\n"
    "{\"problem\": \"numeric answer\", \"answer\": 42}\n"
    "{\"problem\": \"null answer\", \"answer\": null, \"solution\": \"kept as extra\"}\n"
    "{\"problem\": \"\", \"answer\": \"\"}\n";

TEST(prompts_round_trip)
{
    const char *ds = scratch("prompts"), *ds2 = scratch("prompts2");
    char in[1200], out[1200];
    snprintf(in, sizeof in, "%s.in.jsonl", ds);
    snprintf(out, sizeof out, "%s.out.jsonl", ds);
    write_text(in, PROMPTS);
    kd_import_opts o = opts(KD_KIND_PROMPTS);
    kd_import_stats st;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.prompts, 6);
    CHECK_EQ_INT(st.lines, 6);
    CHECK_EQ_INT(st.bad, 0);
    CHECK(st.done);
    check_export_equals(ds, KD_KIND_PROMPTS, PROMPTS);
    /* the store holds what was mapped */
    kd_store *s;
    kd_store_read *r;
    kd_record rec;
    CHECK_OK(kd_store_open(ds, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 0, 0, &rec));
    CHECK(texts_equal(rec.text, kd_text_of("What is $1+1$?")) && texts_equal(rec.answer, kd_text_of("2")));
    CHECK(texts_equal(rec.extra, kd_text_of("{\"level\":\"Level 1\",\"type\":\"Algebra\"}")));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 3, 0, &rec));
    CHECK(!rec.has_answer && texts_equal(rec.extra, kd_text_of("{\"answer\":42}")));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 5, 0, &rec));
    CHECK(rec.has_answer && rec.text.len == 0 && rec.answer.len == 0);
    json_t *lin;
    CHECK_OK(kd_store_lineage_get(r, rec.lineage, &lin));
    CHECK_STR(json_string_value(json_object_get(lin, "source")), in);
    CHECK_STR(json_string_value(json_object_get(json_object_get(lin, "fields"), "prompt")), "problem");
    json_decref(lin);
    kd_store_read_end(r);
    kd_store_close(s);
    /* import -> export -> import: identical records */
    kd_export_opts eo = {.kind = KD_KIND_PROMPTS};
    CHECK_OK(kd_jsonl_export(ds, out, &eo, NULL));
    CHECK_OK(kd_jsonl_import(ds2, out, &o, &st));
    CHECK(same_records(ds, ds2));
}

TEST(field_mapping)
{
    const char *ds = scratch("mapping");
    char in[1200];
    snprintf(in, sizeof in, "%s.jsonl", ds);
    /* defaults resolve from the first line: question + solution */
    const char *q = "{\"question\": \"q0\", \"solution\": \"s0\", \"answer\": \"ignored: solution came first? no\"}\n"
                    "{\"question\": \"q1\", \"solution\": \"s1\"}\n";
    write_text(in, q);
    kd_import_opts o = opts(KD_KIND_PROMPTS);
    CHECK_OK(kd_jsonl_import(ds, in, &o, NULL));
    kd_store *s;
    kd_store_read *r;
    kd_record rec;
    CHECK_OK(kd_store_open(ds, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 0, 0, &rec));
    CHECK(texts_equal(rec.text, kd_text_of("q0")));
    /* "answer" is the first answer candidate, so it wins over "solution" */
    CHECK(texts_equal(rec.answer, kd_text_of("ignored: solution came first? no")));
    CHECK(texts_equal(rec.extra, kd_text_of("{\"solution\":\"s0\"}")));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 1, 0, &rec));
    CHECK(!rec.has_answer); /* line 2 has no "answer": solution stays extra */
    kd_store_read_end(r);
    kd_store_close(s);
    check_export_equals(ds, KD_KIND_PROMPTS, q);

    /* explicit names and integer ids from a field */
    ds = scratch("mapping2");
    snprintf(in, sizeof in, "%s.jsonl", ds);
    const char *m = "{\"uid\": 17, \"instruction\": \"i17\", \"output\": \"o17\", \"answer\": \"kept\"}\n"
                    "{\"uid\": 3, \"instruction\": \"i3\", \"output\": \"o3\"}\n";
    write_text(in, m);
    o.prompt_field = "instruction";
    o.answer_field = "output";
    o.id_field = "uid";
    CHECK_OK(kd_jsonl_import(ds, in, &o, NULL));
    CHECK_OK(kd_store_open(ds, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 17, 0, &rec));
    CHECK(texts_equal(rec.text, kd_text_of("i17")) && texts_equal(rec.answer, kd_text_of("o17")));
    CHECK(texts_equal(rec.extra, kd_text_of("{\"answer\":\"kept\"}")));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 3, 0, &rec));
    kd_store_read_end(r);
    kd_store_close(s);
    /* export is in id order: 3 then 17 */
    const char *sorted = "{\"uid\": 3, \"instruction\": \"i3\", \"output\": \"o3\"}\n"
                         "{\"uid\": 17, \"instruction\": \"i17\", \"output\": \"o17\", \"answer\": \"kept\"}\n";
    check_export_equals(ds, KD_KIND_PROMPTS, sorted);

    /* --answer-field '' maps no answer */
    ds = scratch("mapping3");
    o = opts(KD_KIND_PROMPTS);
    o.answer_field = "";
    snprintf(in, sizeof in, "%s.jsonl", ds);
    write_text(in, "{\"prompt\": \"p\", \"answer\": \"a\"}\n");
    CHECK_OK(kd_jsonl_import(ds, in, &o, NULL));
    check_export_equals(ds, KD_KIND_PROMPTS, "{\"prompt\": \"p\", \"answer\": \"a\"}\n");

    /* the answer name resolves at the first line that has one, even batches later */
    ds = scratch("pending");
    snprintf(in, sizeof in, "%s.jsonl", ds);
    const char *pend = "{\"problem\": \"a\"}\n{\"problem\": \"b\", \"x\": 1}\n{\"problem\": \"c\", \"solution\": \"s\"}\n"
                       "{\"problem\": \"d\", \"answer\": \"not mapped: solution came first\"}\n";
    write_text(in, pend);
    o = opts(KD_KIND_PROMPTS);
    o.batch_bytes = 16;
    CHECK_OK(kd_jsonl_import(ds, in, &o, NULL));
    check_export_equals(ds, KD_KIND_PROMPTS, pend);
    CHECK_OK(kd_store_open(ds, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 2, 0, &rec));
    CHECK(rec.has_answer && texts_equal(rec.answer, kd_text_of("s")));
    json_t *lin;
    CHECK_OK(kd_store_lineage_get(r, rec.lineage, &lin));
    CHECK_STR(json_string_value(json_object_get(json_object_get(lin, "fields"), "answer")), "solution");
    json_decref(lin);
    kd_store_read_end(r);
    kd_store_close(s);

    /* dense ids continue after the largest id: a second file appends */
    ds = scratch("append");
    char in2[1200];
    snprintf(in, sizeof in, "%s.a.jsonl", ds);
    snprintf(in2, sizeof in2, "%s.b.jsonl", ds);
    write_text(in, "{\"problem\": \"a0\"}\n{\"problem\": \"a1\"}\n{\"problem\": \"a2\"}\n");
    write_text(in2, "{\"problem\": \"b0\"}\n{\"problem\": \"b1\"}\n");
    o = opts(KD_KIND_PROMPTS);
    CHECK_OK(kd_jsonl_import(ds, in, &o, NULL));
    CHECK_OK(kd_jsonl_import(ds, in2, &o, NULL));
    CHECK_EQ_INT(count(ds, KD_DB_PROMPTS), 5);
    check_export_equals(ds, KD_KIND_PROMPTS,
                        "{\"problem\": \"a0\"}\n{\"problem\": \"a1\"}\n{\"problem\": \"a2\"}\n{\"problem\": \"b0\"}\n"
                        "{\"problem\": \"b1\"}\n");
}

static const char *CHATS =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"hi\"}, "
    "{\"role\": \"assistant\", \"content\": \"<think>greet</think>hello\"}, {\"role\": \"user\", \"content\": \"2+2?\"}], "
    "\"source\": \"chat-set\"}\n"
    "{\"messages\": [{\"role\": \"user\", \"content\": \"only\", \"name\": \"bob\"}, {\"role\": \"assistant\", \"content\": null, "
    "\"tool_calls\": [{\"id\": \"1\"}]}]}\n";

TEST(chats_round_trip)
{
    const char *ds = scratch("chats");
    char in[1200];
    snprintf(in, sizeof in, "%s.jsonl", ds);
    write_text(in, CHATS);
    kd_import_opts o = opts(KD_KIND_CHATS);
    kd_import_stats st;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.prompts, 2);
    kd_store *s;
    kd_store_read *r;
    kd_record rec;
    CHECK_OK(kd_store_open(ds, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 0, 0, &rec));
    CHECK(rec.chat);
    CHECK(texts_equal(rec.text, kd_text_of("2+2?"))); /* the last user turn */
    CHECK(texts_equal(rec.extra, kd_text_of("{\"source\":\"chat-set\"}")));
    kd_store_read_end(r);
    kd_store_close(s);
    check_export_equals(ds, KD_KIND_CHATS, CHATS);
    check_export_equals(ds, KD_KIND_PROMPTS, CHATS);

    /* bad chats */
    ds = scratch("badchats");
    snprintf(in, sizeof in, "%s.jsonl", ds);
    write_text(in, "{\"messages\": []}\n{\"messages\": [{\"content\": \"x\"}]}\n"
                   "{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}\n{\"messages\": \"text\"}\n");
    o.on_error = KD_ON_ERROR_SKIP;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.bad, 4);
    CHECK_EQ_INT(st.prompts, 0);
    CHECK_HAS(st.bad_msg[0], "empty array");
    CHECK_HAS(st.bad_msg[1], "has no string \"role\"");
    CHECK_HAS(st.bad_msg[2], "no user message");
    CHECK_HAS(st.bad_msg[3], "is a string, expected a non-empty array");
}

static const char *GENS =
    "{\"id\": 7, \"problem\": \"p7\", \"answer\": \"4\", \"generation\": \"<think>a</think>4\", \"correct\": true, \"model\": \"r1\"}\n"
    "{\"id\": 7, \"problem\": \"p7\", \"answer\": \"4\", \"generation\": \"<think>b</think>5\", \"correct\": false, \"model\": \"r1\"}\n"
    "{\"id\": 2, \"problem\": \"p2\", \"generation\": \"g\", \"tokens\": 12}\n";

TEST(generations_scalar)
{
    const char *ds = scratch("gens");
    char in[1200];
    snprintf(in, sizeof in, "%s.jsonl", ds);
    char *text = malloc(strlen(GENS) + 200);
    strcpy(text, GENS);
    strcat(text, "{\"id\": 7, \"problem\": \"not p7\", \"generation\": \"x\"}\n"); /* disagrees on prompt 7 */
    write_text(in, text);
    kd_import_opts o = opts(KD_KIND_GENERATIONS);
    o.id_field = "id";
    o.verdict_field = "correct";
    o.teacher = "deepseek-r1";
    o.on_error = KD_ON_ERROR_SKIP;
    kd_import_stats st;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.prompts, 2);
    CHECK_EQ_INT(st.generations, 3);
    CHECK_EQ_INT(st.verdicts, 2);
    CHECK_EQ_INT(st.bad, 1);
    CHECK_EQ_INT(st.bad_line[0], 4);
    CHECK_HAS(st.bad_msg[0], "prompt id 7 is already in the dataset with a different text");
    kd_store *s;
    kd_store_read *r;
    kd_record rec;
    int exists;
    CHECK_OK(kd_store_open(ds, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_GENERATIONS, 7, 1, &rec));
    CHECK(texts_equal(rec.text, kd_text_of("<think>b</think>5")));
    CHECK(texts_equal(rec.extra, kd_text_of("{\"model\":\"r1\"}")));
    CHECK_OK(kd_store_get(r, KD_DB_VERDICTS, 7, 1, &rec));
    CHECK(!rec.accepted);
    CHECK_OK(kd_store_get(r, KD_DB_VERDICTS, 7, 0, &rec));
    CHECK(rec.accepted);
    CHECK_OK(kd_store_unit_exists(r, 2, 0, &exists));
    CHECK(exists);
    json_t *lin;
    CHECK_OK(kd_store_lineage_get(r, rec.lineage, &lin));
    CHECK_STR(json_string_value(json_object_get(lin, "teacher")), "deepseek-r1");
    CHECK_STR(json_string_value(json_object_get(lin, "form")), "scalar");
    json_decref(lin);
    kd_store_read_end(r);
    kd_store_close(s);
    /* export: generation lines in key order (prompt 2 first) */
    const char *want =
        "{\"id\": 2, \"problem\": \"p2\", \"generation\": \"g\", \"tokens\": 12}\n"
        "{\"id\": 7, \"problem\": \"p7\", \"answer\": \"4\", \"generation\": \"<think>a</think>4\", \"correct\": true, \"model\": \"r1\"}\n"
        "{\"id\": 7, \"problem\": \"p7\", \"answer\": \"4\", \"generation\": \"<think>b</think>5\", \"correct\": false, \"model\": \"r1\"}\n";
    check_export_equals(ds, KD_KIND_GENERATIONS, want);
    /* and re-import gives the same records */
    const char *ds2 = scratch("gens2");
    char out[1200];
    snprintf(out, sizeof out, "%s.out.jsonl", ds);
    kd_export_opts eo = {.kind = KD_KIND_GENERATIONS};
    CHECK_OK(kd_jsonl_export(ds, out, &eo, NULL));
    CHECK_OK(kd_jsonl_import(ds2, out, &o, &st));
    CHECK(same_records(ds, ds2));

    /* explicit sample indices; a repeated unit is a bad line */
    ds = scratch("gens_sample");
    snprintf(in, sizeof in, "%s.jsonl", ds);
    write_text(in, "{\"problem\": \"p\", \"id\": 1, \"s\": 4, \"response\": \"r4\"}\n"
                   "{\"problem\": \"p\", \"id\": 1, \"s\": 4, \"response\": \"again\"}\n"
                   "{\"problem\": \"p\", \"id\": 1, \"response\": \"next free\"}\n");
    o = opts(KD_KIND_GENERATIONS);
    o.id_field = "id";
    o.sample_field = "s";
    o.on_error = KD_ON_ERROR_SKIP;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.bad, 2); /* line 2: unit taken; line 3: no "s" */
    CHECK_HAS(st.bad_msg[0], "unit (prompt 1, sample 4) is already in the dataset");
    CHECK_HAS(st.bad_msg[1], "no 's' field");
    free(text);
}

static const char *ARRAYS =
    "{\"problem\": \"p0\", \"answer\": \"1\", \"generations\": [\"a\", \"b\", \"c\"], \"correctness_math_verify\": [true, false, null], \"source\": \"amc\"}\n"
    "{\"problem\": \"p1\", \"answer\": \"2\", \"generations\": [], \"correctness_math_verify\": [], \"source\": \"aime\"}\n"
    "{\"problem\": \"p2\", \"generations\": [\"x\"], \"source\": \"olympiad\"}\n";

TEST(generations_array_form)
{
    const char *ds = scratch("arrays");
    char in[1200];
    snprintf(in, sizeof in, "%s.jsonl", ds);
    write_text(in, ARRAYS);
    kd_import_opts o = opts(KD_KIND_GENERATIONS);
    o.verdict_field = "correctness_math_verify";
    kd_import_stats st;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.prompts, 3);
    CHECK_EQ_INT(st.generations, 4);
    CHECK_EQ_INT(st.verdicts, 2);
    /* p1 has no generations, so it is not a generation line */
    const char *want =
        "{\"problem\": \"p0\", \"answer\": \"1\", \"generations\": [\"a\", \"b\", \"c\"], \"correctness_math_verify\": [true, false, null], \"source\": \"amc\"}\n"
        "{\"problem\": \"p2\", \"generations\": [\"x\"], \"correctness_math_verify\": [null], \"source\": \"olympiad\"}\n";
    check_export_equals(ds, KD_KIND_GENERATIONS, want);
    /* the prompts keep the line's extra fields */
    check_export_equals(ds, KD_KIND_PROMPTS,
                        "{\"problem\": \"p0\", \"answer\": \"1\", \"source\": \"amc\"}\n"
                        "{\"problem\": \"p1\", \"answer\": \"2\", \"source\": \"aime\"}\n"
                        "{\"problem\": \"p2\", \"source\": \"olympiad\"}\n");
    /* the form is fixed by the first line */
    ds = scratch("arrays_mixed");
    snprintf(in, sizeof in, "%s.jsonl", ds);
    write_text(in, "{\"problem\": \"p\", \"generations\": [\"a\"]}\n{\"problem\": \"q\", \"generations\": \"b\"}\n"
                   "{\"problem\": \"r\", \"generations\": [\"a\", 3]}\n");
    o.on_error = KD_ON_ERROR_SKIP;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.bad, 2);
    CHECK_HAS(st.bad_msg[0], "first line had an array");
    CHECK_HAS(st.bad_msg[1], "element 1 of 'generations' is an integer");
}

/* The bad-line file: lines 2-7 and 9 are bad; line 8 is 10 MB. */
static char *bad_file_text(void)
{
    size_t big = 10u << 20;
    char *t = malloc(big + 4096);
    strcpy(t, "{\"problem\": \"good 1\"}\n"
              "not json at all\n"
              "[1, 2, 3]\n"
              "{\"answer\": \"no problem field\"}\n"
              "{\"problem\": 5}\n"
              "{\"problem\": \"bad \xff\xfe bytes\"}\n"
              "\n"
              "{\"problem\": \"");
    size_t n = strlen(t);
    memset(t + n, 'x', big);
    n += big;
    strcpy(t + n, "\"}\n"
                  "{\"problem\": \"a\", \"problem\": \"b\"}\n"
                  "{\"problem\": \"good 10\"}");
    return t;
}

TEST(bad_lines_skip)
{
    const char *ds = scratch("bad_skip");
    char in[1200];
    snprintf(in, sizeof in, "%s.jsonl", ds);
    char *t = bad_file_text();
    write_text(in, t);
    kd_import_opts o = opts(KD_KIND_PROMPTS);
    o.on_error = KD_ON_ERROR_SKIP;
    o.batch_bytes = 64; /* many batches: the bad lines straddle them */
    kd_import_stats st;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.lines, 10);
    CHECK_EQ_INT(st.prompts, 3);
    CHECK_EQ_INT(st.bad, 7);
    CHECK_EQ_INT(st.n_reported, 7);
    static const uint64_t want_lines[] = {2, 3, 4, 5, 6, 7, 9};
    static const char *const want_msg[] = {"not JSON", "not a JSON object but an array", "no 'problem' field",
                                           "field 'problem' is an integer, expected a string", "invalid UTF-8",
                                           "empty line", "duplicate"};
    for (int i = 0; i < 7; i++) {
        CHECK_EQ_INT(st.bad_line[i], want_lines[i]);
        CHECK_HAS(st.bad_msg[i], want_msg[i]);
    }
    kd_store *s;
    kd_store_read *r;
    kd_record rec;
    CHECK_OK(kd_store_open(ds, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 1, 0, &rec));
    CHECK_EQ_INT(rec.text.len, 10u << 20);
    CHECK_OK(kd_store_get(r, KD_DB_PROMPTS, 2, 0, &rec));
    CHECK(texts_equal(rec.text, kd_text_of("good 10")));
    kd_store_read_end(r);
    kd_store_close(s);

    /* with a 1 MB line limit the 10 MB line is bad too */
    ds = scratch("bad_long");
    o.max_line = 1u << 20;
    o.batch_bytes = 0;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.bad, 8);
    CHECK_EQ_INT(st.prompts, 2);
    CHECK_EQ_INT(st.bad_line[6], 8);
    CHECK_HAS(st.bad_msg[6], "longer than the 1048576 allowed");
    free(t);
}

TEST(bad_lines_stop_then_resume)
{
    const char *ds = scratch("bad_stop");
    char in[1200];
    snprintf(in, sizeof in, "%s.jsonl", ds);
    char *t = bad_file_text();
    write_text(in, t);
    kd_import_opts o = opts(KD_KIND_PROMPTS);
    kd_import_stats st;
    char wbuf[1300];
    snprintf(wbuf, sizeof wbuf, "%s:2: not JSON", in);
    const char *want = wbuf;
    CHECK_ERR(kd_jsonl_import(ds, in, &o, &st), KD_E_FORMAT, want);
    CHECK_EQ_INT(count(ds, KD_DB_PROMPTS), 1); /* line 1 kept, nothing after line 2 */
    CHECK_EQ_INT(st.lines, 1);
    /* again: the same line stops it */
    CHECK_ERR(kd_jsonl_import(ds, in, &o, &st), KD_E_FORMAT, want);
    CHECK_EQ_INT(count(ds, KD_DB_PROMPTS), 1);
    /* switch to skip: it resumes at line 2 and finishes */
    o.on_error = KD_ON_ERROR_SKIP;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.resumed_line, 1);
    CHECK_EQ_INT(st.bad, 7);
    CHECK_EQ_INT(st.prompts, 3);
    CHECK_EQ_INT(count(ds, KD_DB_PROMPTS), 3);
    CHECK_EQ_INT(st.bad_line[0], 2);
    free(t);
}

TEST(resume_after_kill_and_refusals)
{
    const char *ds = scratch("resume");
    char in[1200];
    snprintf(in, sizeof in, "%s.jsonl", ds);
    enum { N = 60000 };
    FILE *f = fopen(in, "w");
    for (int i = 0; i < N; i++)
        fprintf(f, "{\"problem\": \"problem number %d with some padding text to make it longer\", \"answer\": \"%d\", "
                   "\"i\": %d}\n",
                i, i * 7, i);
    fclose(f);
    kd_import_opts o = opts(KD_KIND_PROMPTS);
    o.batch_bytes = 16 << 10;
    o.threads = 2;
    /* kill -9 a child import at a few points, then finish it here */
    int killed = 0;
    for (int round = 0; round < 3; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            kd_log_set_level(KD_LOG_ERROR);
            kd_jsonl_import(ds, in, &o, NULL);
            _exit(0);
        }
        usleep(20000 + 40000 * (useconds_t)round);
        kill(pid, SIGKILL);
        int wst;
        waitpid(pid, &wst, 0);
        killed += WIFSIGNALED(wst);
    }
    kd_import_stats st;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK(killed >= 1);
    CHECK(st.done);
    CHECK_EQ_INT(st.lines, N);
    CHECK_EQ_INT(st.prompts, N);
    CHECK_EQ_INT(count(ds, KD_DB_PROMPTS), N);
    /* every record equals its line */
    kd_store *s;
    kd_store_read *r;
    kd_store_cursor *c;
    kd_record rec;
    CHECK_OK(kd_store_open(ds, KD_STORE_RDONLY, &s));
    CHECK_OK(kd_store_read_begin(s, &r));
    CHECK_OK(kd_store_cursor_open(r, KD_DB_PROMPTS, &c));
    int ok = 1;
    uint64_t n = 0;
    while (kd_store_cursor_next(c, &rec) == 1) {
        char want[200], wa[32], wx[32];
        snprintf(want, sizeof want, "problem number %llu with some padding text to make it longer",
                 (unsigned long long)n);
        snprintf(wa, sizeof wa, "%llu", (unsigned long long)n * 7);
        snprintf(wx, sizeof wx, "{\"i\":%llu}", (unsigned long long)n);
        ok &= rec.id == n && texts_equal(rec.text, kd_text_of(want)) && texts_equal(rec.answer, kd_text_of(wa)) &&
              texts_equal(rec.extra, kd_text_of(wx));
        n++;
    }
    CHECK(ok);
    CHECK_EQ_INT(n, N);
    kd_store_cursor_close(c);
    kd_store_read_end(r);
    kd_store_close(s);
    /* a finished import is a no-op */
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK(st.already_done);
    CHECK_EQ_INT(st.prompts, N);
    CHECK_EQ_INT(count(ds, KD_DB_PROMPTS), N);
    /* other options for the same file: refused */
    o.source = "elsewhere";
    CHECK_ERR(kd_jsonl_import(ds, in, &o, &st), KD_E_CONFIG, "with other options");
    o.source = NULL;
    /* the file changed: refused */
    f = fopen(in, "a");
    fprintf(f, "{\"problem\": \"one more\"}\n");
    fclose(f);
    CHECK_ERR(kd_jsonl_import(ds, in, &o, &st), KD_E_CONFIG, "changed since it was imported");
    CHECK_EQ_INT(count(ds, KD_DB_PROMPTS), N);
    /* missing file; dataset in a foreign file */
    CHECK_ERR(kd_jsonl_import(ds, "/nonexistent/x.jsonl", &o, &st), KD_E_NOTFOUND, "x.jsonl");
}

TEST(duplicate_prompt_ids)
{
    const char *ds = scratch("dupids");
    char in[1200];
    snprintf(in, sizeof in, "%s.jsonl", ds);
    write_text(in, "{\"id\": 1, \"problem\": \"a\"}\n{\"id\": 1, \"problem\": \"a\"}\n{\"id\": -4, \"problem\": \"b\"}\n"
                   "{\"id\": \"7\", \"problem\": \"c\"}\n{\"problem\": \"d\"}\n{\"id\": 2, \"problem\": \"e\"}\r\n");
    kd_import_opts o = opts(KD_KIND_PROMPTS);
    o.id_field = "id";
    o.on_error = KD_ON_ERROR_SKIP;
    kd_import_stats st;
    CHECK_OK(kd_jsonl_import(ds, in, &o, &st));
    CHECK_EQ_INT(st.prompts, 2);
    CHECK_EQ_INT(st.bad, 4);
    CHECK_HAS(st.bad_msg[0], "prompt id 1 is already in the dataset");
    CHECK_HAS(st.bad_msg[1], "field 'id' is an integer, expected an integer from 0");
    CHECK_HAS(st.bad_msg[2], "field 'id' is a string");
    CHECK_HAS(st.bad_msg[3], "no 'id' field");
}

int main(void)
{
    kd_log_set_level(KD_LOG_ERROR); /* the skipped lines are checked through the stats */
    RUN(prompts_round_trip);
    RUN(field_mapping);
    RUN(chats_round_trip);
    RUN(generations_scalar);
    RUN(generations_array_form);
    RUN(bad_lines_skip);
    RUN(bad_lines_stop_then_resume);
    RUN(resume_after_kill_and_refusals);
    RUN(duplicate_prompt_ids);
    return test_summary();
}
