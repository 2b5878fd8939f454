/* test_chat.c - the native chat templates (core/chat.h) and the token offsets
 * they rely on (kd_tok_encode_offsets).
 *
 * The expected texts below were written by hand from the Jinja templates (see
 * the comments in core/chat.c), not copied from the renderer's output; the
 * differential test against the Jinja engine itself is tests/e2e/chat_jinja.sh.
 * The tests with real tokenizers need the files scripts/setup.sh fetches
 * (DISTILL_CACHE as for the other tests).
 */
#include <stdint.h>

#include "core/chat.h"
#include "core/util.h"
#include "test.h"

#define DS_BOS "<｜begin▁of▁sentence｜>"
#define DS_EOS "<｜end▁of▁sentence｜>"
#define DS_USER "<｜User｜>"
#define DS_ASSISTANT "<｜Assistant｜>"
#define QWEN25_SYSTEM "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
#define L31_SYSTEM                                                                                                    \
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday "  \
    "Date: 26 Jul 2024\n\n"
#define L_USER "<|start_header_id|>user<|end_header_id|>\n\n"
#define L_SYS "<|start_header_id|>system<|end_header_id|>\n\n"
#define L_ASSISTANT "<|start_header_id|>assistant<|end_header_id|>\n\n"

#define NMSG(a) (sizeof(a) / sizeof((a)[0]))

/* ---- conversations -------------------------------------------------------------- */

/* A: a system prompt, two turns, reasoning in both answers; the last answer
 * has whitespace around it. */
static const kd_chat_msg CONV_A[] = {
    {"system", "You are terse."},
    {"user", "What is 2+2?"},
    {"assistant", "<think>\nadd\n</think>\n\n4"},
    {"user", "And 3+3?"},
    {"assistant", " <think>x</think>6 \n"},
};

/* B: one user message in four scripts. */
static const kd_chat_msg CONV_B[] = {
    {"user", "Hi 👋 مرحبا 你好"},
};

/* C: two system messages, an empty answer. */
static const kd_chat_msg CONV_C[] = {
    {"system", "A"},
    {"system", "B"},
    {"user", "q"},
    {"assistant", ""},
};

typedef struct {
    kd_chat_template tpl;
    const kd_chat_msg *msgs;
    size_t n;
    int gen;
    const char *text;
    const char *spans[4]; /* the text of each span, NULL-terminated */
} golden;

static const golden GOLDEN[] = {
    /* ---- chatml (Qwen2.5) */
    {KD_CHAT_CHATML, CONV_A, NMSG(CONV_A), 0,
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n<think>\nadd\n</think>\n\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
     "<|im_start|>assistant\n <think>x</think>6 \n<|im_end|>\n",
     {"<think>\nadd\n</think>\n\n4<|im_end|>", " <think>x</think>6 \n<|im_end|>"}},
    {KD_CHAT_CHATML, CONV_B, NMSG(CONV_B), 1,
     QWEN25_SYSTEM "<|im_start|>user\nHi 👋 مرحبا 你好<|im_end|>\n<|im_start|>assistant\n", {NULL}},
    {KD_CHAT_CHATML, CONV_C, NMSG(CONV_C), 0,
     "<|im_start|>system\nA<|im_end|>\n<|im_start|>system\nB<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"
     "<|im_start|>assistant\n<|im_end|>\n",
     {"<|im_end|>"}},
    /* ---- qwen3: the first answer comes before the last user message and loses
     * its reasoning; the last keeps it, rewritten */
    {KD_CHAT_QWEN3, CONV_A, NMSG(CONV_A), 0,
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
     "<|im_start|>assistant\n<think>\nx\n</think>\n\n6 \n<|im_end|>\n",
     {"4<|im_end|>", "<think>\nx\n</think>\n\n6 \n<|im_end|>"}},
    {KD_CHAT_QWEN3, CONV_B, NMSG(CONV_B), 1, "<|im_start|>user\nHi 👋 مرحبا 你好<|im_end|>\n<|im_start|>assistant\n",
     {NULL}},
    {KD_CHAT_QWEN3, CONV_C, NMSG(CONV_C), 0,
     "<|im_start|>system\nA<|im_end|>\n<|im_start|>system\nB<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"
     "<|im_start|>assistant\n<think>\n\n</think>\n\n<|im_end|>\n",
     {"<think>\n\n</think>\n\n<|im_end|>"}},
    /* ---- llama3: content | trim */
    {KD_CHAT_LLAMA3, CONV_A, NMSG(CONV_A), 0,
     "<|begin_of_text|>" L_SYS "You are terse.<|eot_id|>" L_USER "What is 2+2?<|eot_id|>" L_ASSISTANT
     "<think>\nadd\n</think>\n\n4<|eot_id|>" L_USER "And 3+3?<|eot_id|>" L_ASSISTANT "<think>x</think>6<|eot_id|>",
     {"<think>\nadd\n</think>\n\n4<|eot_id|>", "<think>x</think>6<|eot_id|>"}},
    {KD_CHAT_LLAMA3, CONV_B, NMSG(CONV_B), 1, "<|begin_of_text|>" L_USER "Hi 👋 مرحبا 你好<|eot_id|>" L_ASSISTANT,
     {NULL}},
    /* ---- llama3_1: the dated system turn always comes first */
    {KD_CHAT_LLAMA3_1, CONV_A, NMSG(CONV_A), 1,
     L31_SYSTEM "You are terse.<|eot_id|>" L_USER "What is 2+2?<|eot_id|>" L_ASSISTANT
     "<think>\nadd\n</think>\n\n4<|eot_id|>" L_USER "And 3+3?<|eot_id|>" L_ASSISTANT "<think>x</think>6<|eot_id|>"
     L_ASSISTANT,
     {"<think>\nadd\n</think>\n\n4<|eot_id|>", "<think>x</think>6<|eot_id|>"}},
    {KD_CHAT_LLAMA3_1, CONV_B, NMSG(CONV_B), 1, L31_SYSTEM "<|eot_id|>" L_USER "Hi 👋 مرحبا 你好<|eot_id|>" L_ASSISTANT,
     {NULL}},
    {KD_CHAT_LLAMA3_1, CONV_C, NMSG(CONV_C), 0,
     L31_SYSTEM "A<|eot_id|>" L_SYS "B<|eot_id|>" L_USER "q<|eot_id|>" L_ASSISTANT "<|eot_id|>", {"<|eot_id|>"}},
    /* ---- deepseek_v3: keeps everything */
    {KD_CHAT_DEEPSEEK_V3, CONV_A, NMSG(CONV_A), 1,
     DS_BOS "You are terse." DS_USER "What is 2+2?" DS_ASSISTANT "<think>\nadd\n</think>\n\n4" DS_EOS DS_USER
     "And 3+3?" DS_ASSISTANT " <think>x</think>6 \n" DS_EOS DS_ASSISTANT,
     {"<think>\nadd\n</think>\n\n4" DS_EOS, " <think>x</think>6 \n" DS_EOS}},
    {KD_CHAT_DEEPSEEK_V3, CONV_C, NMSG(CONV_C), 0, DS_BOS "A\n\nB" DS_USER "q" DS_ASSISTANT DS_EOS, {DS_EOS}},
    /* ---- deepseek_r1: earlier answers lose their reasoning, the last keeps it */
    {KD_CHAT_DEEPSEEK_R1, CONV_A, NMSG(CONV_A), 0,
     DS_BOS "You are terse." DS_USER "What is 2+2?" DS_ASSISTANT "\n\n4" DS_EOS DS_USER "And 3+3?" DS_ASSISTANT
     " <think>x</think>6 \n" DS_EOS,
     {"\n\n4" DS_EOS, " <think>x</think>6 \n" DS_EOS}},
    {KD_CHAT_DEEPSEEK_R1, CONV_A, 4, 1,
     DS_BOS "You are terse." DS_USER "What is 2+2?" DS_ASSISTANT "\n\n4" DS_EOS DS_USER "And 3+3?" DS_ASSISTANT
     "<think>\n",
     {"\n\n4" DS_EOS}},
    {KD_CHAT_DEEPSEEK_R1, CONV_B, NMSG(CONV_B), 1, DS_BOS DS_USER "Hi 👋 مرحبا 你好" DS_ASSISTANT "<think>\n", {NULL}},
};

/* Render g and compare text and spans. */
static void check_golden(const golden *g, size_t k)
{
    char *text = NULL;
    kd_span *sp = NULL;
    size_t nsp = 0;
    int st = kd_chat_render_text(g->tpl, g->msgs, g->n, g->gen, &text, &sp, &nsp);
    test_checks_++;
    if (st != KD_OK) {
        FAIL_("golden %zu (%s): %s", k, kd_chat_template_name(g->tpl), kd_strerror(st));
        return;
    }
    if (strcmp(text, g->text))
        FAIL_("golden %zu (%s):\n  got  \"%s\"\n  want \"%s\"", k, kd_chat_template_name(g->tpl), text, g->text);
    size_t want = 0;
    while (want < 4 && g->spans[want])
        want++;
    CHECK_EQ_INT(nsp, want);
    for (size_t i = 0; i < nsp && i < want; i++) {
        size_t n = sp[i].end - sp[i].start;
        test_checks_++;
        if (sp[i].end > strlen(text) || n != strlen(g->spans[i]) || memcmp(text + sp[i].start, g->spans[i], n))
            FAIL_("golden %zu (%s): span %zu is \"%.*s\", want \"%s\"", k, kd_chat_template_name(g->tpl), i, (int)n,
                  sp[i].end <= strlen(text) ? text + sp[i].start : "", g->spans[i]);
    }
    free(text);
    free(sp);
}

/* Render and expect exactly `want` (a convenience for the small cases). */
static void check_render(kd_chat_template tpl, const kd_chat_msg *m, size_t n, int gen, const char *want)
{
    char *text = NULL;
    kd_span *sp = NULL;
    size_t nsp = 0;
    CHECK_OK(kd_chat_render_text(tpl, m, n, gen, &text, &sp, &nsp));
    CHECK_STR(text, want);
    free(text);
    free(sp);
}

/* ---- rendering ---------------------------------------------------------------------- */

TEST(names)
{
    kd_chat_template t;
    for (int i = 0; i < KD_CHAT_NTEMPLATES; i++) {
        CHECK_OK(kd_chat_template_find(kd_chat_template_name((kd_chat_template)i), &t));
        CHECK_EQ_INT(t, i);
        CHECK_HAS(kd_chat_template_names(), kd_chat_template_name((kd_chat_template)i));
    }
    CHECK_OK(kd_chat_template_find("deepseek_r1", &t));
    CHECK_EQ_INT(t, KD_CHAT_DEEPSEEK_R1);
    CHECK_ERR(kd_chat_template_find("qwen2", &t), KD_E_NOTFOUND, "'qwen2' (known: chatml, qwen3");
    CHECK_STR(kd_chat_template_eot(KD_CHAT_CHATML), "<|im_end|>");
    CHECK_STR(kd_chat_template_eot(KD_CHAT_LLAMA3_1), "<|eot_id|>");
    CHECK_STR(kd_chat_template_eot(KD_CHAT_DEEPSEEK_R1), DS_EOS);
}

TEST(golden_texts)
{
    for (size_t k = 0; k < NMSG(GOLDEN); k++)
        check_golden(&GOLDEN[k], k);
}

/* Jinja's trim is Python's str.strip(): U+001C..U+001F, U+0085, U+3000 are
 * whitespace; U+200B and U+FEFF are not. */
TEST(python_whitespace)
{
    static const kd_chat_msg m[] = {
        {"user", "\x1c\xe3\x80\x80 hi \xc2\x85\n"},
        {"assistant", "\xe2\x80\x8b x \xef\xbb\xbf"},
    };
    check_render(KD_CHAT_LLAMA3, m, 2, 0,
                 "<|begin_of_text|>" L_USER "hi<|eot_id|>" L_ASSISTANT "\xe2\x80\x8b x \xef\xbb\xbf<|eot_id|>");
    /* Qwen3 strips only newlines around the reasoning and the answer */
    static const kd_chat_msg q[] = {
        {"user", "q"},
        {"assistant", "<think>\n r \n\n</think>\n\n a \n"},
    };
    check_render(KD_CHAT_QWEN3, q, 2, 0,
                 "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n r \n</think>\n\n a \n<|im_end|>\n");
}

TEST(qwen3_reasoning)
{
    /* a user turn that is wholly a tool response does not count as the last
     * query: both answers come after the real one and keep their reasoning */
    static const kd_chat_msg a[] = {
        {"user", "q"},
        {"assistant", "<think>r1</think>a1"},
        {"user", "<tool_response>\nout\n</tool_response>"},
        {"assistant", "<think>r2</think>a2"},
    };
    check_render(KD_CHAT_QWEN3, a, 4, 0,
                 "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n</think>\n\na1<|im_end|>\n"
                 "<|im_start|>user\n<tool_response>\nout\n</tool_response><|im_end|>\n"
                 "<|im_start|>assistant\n<think>\nr2\n</think>\n\na2<|im_end|>\n");
    /* several tags: the reasoning is after the last <think> before the first
     * </think>; the answer after the last </think> */
    static const kd_chat_msg b[] = {
        {"user", "q"},
        {"assistant", "<think>\n\na<think>b\n\n</think>c</think>\n\nd"},
    };
    check_render(KD_CHAT_QWEN3, b, 2, 0,
                 "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nb\n</think>\n\nd<|im_end|>\n");
    /* after the last query: an answer without reasoning stays plain unless it
     * is the last message */
    static const kd_chat_msg c[] = {
        {"user", "q"},
        {"assistant", "x"},
        {"assistant", "y"},
    };
    check_render(KD_CHAT_QWEN3, c, 3, 0,
                 "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nx<|im_end|>\n"
                 "<|im_start|>assistant\n<think>\n\n</think>\n\ny<|im_end|>\n");
    /* no user message at all: nothing counts as after the last query */
    static const kd_chat_msg d[] = {
        {"assistant", "<think>r</think>a"},
    };
    check_render(KD_CHAT_QWEN3, d, 1, 0, "<|im_start|>assistant\na<|im_end|>\n");
}

TEST(deepseek_reasoning)
{
    /* R1 keeps what follows the LAST </think>; V3 keeps it all */
    static const kd_chat_msg m[] = {
        {"user", "q"},
        {"assistant", "<think>a</think>b</think>c"},
        {"user", "again"},
    };
    check_render(KD_CHAT_DEEPSEEK_R1, m, 3, 1, DS_BOS DS_USER "q" DS_ASSISTANT "c" DS_EOS DS_USER "again" DS_ASSISTANT
                 "<think>\n");
    check_render(KD_CHAT_DEEPSEEK_V3, m, 3, 1, DS_BOS DS_USER "q" DS_ASSISTANT "<think>a</think>b</think>c" DS_EOS
                 DS_USER "again" DS_ASSISTANT);
    /* a system message anywhere goes to the front */
    static const kd_chat_msg s[] = {
        {"user", "q"},
        {"system", "late"},
    };
    check_render(KD_CHAT_DEEPSEEK_V3, s, 2, 0, DS_BOS "late" DS_USER "q");
}

TEST(errors)
{
    char *text = (char *)"untouched";
    kd_span *sp = NULL;
    size_t nsp = 7;
    CHECK_ERR(kd_chat_render_text(KD_CHAT_CHATML, CONV_A, 0, 0, &text, &sp, &nsp), KD_E_FORMAT, "at least one");
    static const kd_chat_msg tool[] = {{"user", "q"}, {"tool", "42"}};
    CHECK_ERR(kd_chat_render_text(KD_CHAT_QWEN3, tool, 2, 0, &text, &sp, &nsp), KD_E_UNSUPPORTED,
              "message 1: role 'tool'");
    static const kd_chat_msg nocontent[] = {{"user", "q"}, {"assistant", NULL}};
    CHECK_ERR(kd_chat_render_text(KD_CHAT_DEEPSEEK_V3, nocontent, 2, 0, &text, &sp, &nsp), KD_E_UNSUPPORTED,
              "tool calls");
    static const kd_chat_msg norole[] = {{NULL, "q"}};
    CHECK_ERR(kd_chat_render_text(KD_CHAT_LLAMA3, norole, 1, 0, &text, &sp, &nsp), KD_E_FORMAT, "no role");
    static const kd_chat_msg bad[] = {{"user", "ok"}, {"user", "a\xc3(b"}};
    CHECK_ERR(kd_chat_render_text(KD_CHAT_LLAMA3, bad, 2, 0, &text, &sp, &nsp), KD_E_UTF8, "message 1");
    static const kd_chat_msg surrogate[] = {{"user", "\xed\xa0\x80"}};
    CHECK_ERR(kd_chat_render_text(KD_CHAT_CHATML, surrogate, 1, 0, &text, &sp, &nsp), KD_E_UTF8, "byte 0");
    CHECK_STR(text, "untouched");
    CHECK(sp == NULL && nsp == 7);
}

/* ---- tokenizers ---------------------------------------------------------------------- */

static const char *TOK_NAMES[3] = {"qwen3", "llama3_1", "deepseek_v3"};
static kd_tokenizer *TOK[3];

/* The tokenizer a template goes with. */
static kd_tokenizer *tok_for(kd_chat_template t)
{
    return t == KD_CHAT_CHATML || t == KD_CHAT_QWEN3   ? TOK[0]
           : t == KD_CHAT_LLAMA3 || t == KD_CHAT_LLAMA3_1 ? TOK[1]
                                                          : TOK[2];
}

TEST(load_tokenizers)
{
    for (int k = 0; k < 3; k++) {
        char dir[4096];
        int st = kd_tokenizer_dir(TOK_NAMES[k], dir, sizeof dir);
        if (st != KD_OK) {
            FAIL_("the %s tokenizer files are missing (setup is part of testing; DISTILL_CACHE must be the "
                  "same for both): %s", TOK_NAMES[k], kd_strerror(st));
            continue;
        }
        CHECK_OK(kd_tok_load(dir, &TOK[k]));
    }
}

/* The bytes of one token, or NULL when they are not valid UTF-8 alone (part
 * of a character). */
static char *token_text(const kd_tokenizer *t, int32_t id, size_t *len)
{
    char *s = NULL;
    if (kd_tok_decode(t, &id, 1, 0, &s, len) != KD_OK)
        return NULL;
    if (strstr(s, "\xef\xbf\xbd")) {
        free(s);
        return NULL;
    }
    return s;
}

/* kd_tok_encode_offsets gives kd_tok_encode's ids and offsets that never
 * decrease; where the normalizer left the text alone, each whole-character
 * token's bytes are exactly text[offset, next offset). */
static void check_offsets(const kd_tokenizer *t, const char *name, const char *text, int add_special, int exact)
{
    size_t len = strlen(text);
    kd_ids a = {0}, b = {0};
    uint32_t *off = NULL;
    CHECK_OK(kd_tok_encode(t, text, len, add_special, &a));
    CHECK_OK(kd_tok_encode_offsets(t, text, len, add_special, &b, &off));
    test_checks_++;
    if (a.n != b.n || (a.n && memcmp(a.ids, b.ids, a.n * sizeof *a.ids))) {
        FAIL_("%s: ids with offsets differ from kd_tok_encode on \"%s\"", name, text);
        goto out;
    }
    for (size_t i = 0; i < b.n; i++) {
        size_t end = i + 1 < b.n ? off[i + 1] : len;
        test_checks_++;
        if (off[i] > end || end > len) {
            FAIL_("%s: token %zu of \"%s\": offsets %u..%zu out of order", name, i, text, off[i], end);
            break;
        }
        size_t tl;
        char *tt = exact ? token_text(t, b.ids[i], &tl) : NULL;
        if (tt && (tl != end - off[i] || memcmp(text + off[i], tt, tl)))
            FAIL_("%s: token %zu (\"%s\") of \"%s\" is at [%u, %zu): \"%.*s\"", name, i, tt, text, off[i], end,
                  (int)(end - off[i]), text + off[i]);
        free(tt);
    }
out:
    kd_ids_release(&a);
    kd_ids_release(&b);
    free(off);
}

TEST(token_offsets)
{
    static const char *texts[] = {
        "Hello, world! It's 2024.",
        "  leading and trailing  \n\n",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
        "<｜begin▁of▁sentence｜><｜User｜>问题<｜Assistant｜>答<｜end▁of▁sentence｜>",
        "emoji 👩‍👩‍👧‍👦 🇫🇷 and CJK 你好世界 and RTL مرحبا بالعالم שלום",
        "numbers 1234567 3.14159 ١٢٣",
        "<think>\nreasoning\n</think>\n\nanswer",
        "",
        "\xe2\x80\xa8\xc2\x85\xef\xbb\xbf odd spaces\t\v\f",
    };
    for (int k = 0; k < 3; k++) {
        if (!TOK[k])
            continue;
        for (size_t i = 0; i < NMSG(texts); i++) {
            check_offsets(TOK[k], TOK_NAMES[k], texts[i], 0, 1);
            check_offsets(TOK[k], TOK_NAMES[k], texts[i], 1, 0); /* add_special: zero-width specials */
        }
    }
    if (!TOK[0] || !TOK[1])
        return;
    /* Qwen normalizes to NFC: a token starting inside a changed stretch gets
     * the stretch's start; after it, offsets are exact again */
    static const struct {
        const char *text;
        uint32_t off[8];
        size_t n;
    } nfc[] = {
        {"e\xcc\x81 x", {0, 3}, 2},                                  /* "é", " x" */
        {"\xe1\x84\x80\xe1\x85\xa1 a", {0, 6}, 2},                    /* jamo L+V compose to 가 */
        {"<|im_start|>e\xcc\x81<|im_end|>", {0, 12, 15}, 3},          /* specials stay exact */
    };
    for (size_t i = 0; i < NMSG(nfc); i++) {
        kd_ids v = {0};
        uint32_t *off = NULL;
        CHECK_OK(kd_tok_encode_offsets(TOK[0], nfc[i].text, strlen(nfc[i].text), 0, &v, &off));
        CHECK_EQ_INT(v.n, nfc[i].n);
        for (size_t j = 0; j < v.n && j < nfc[i].n; j++)
            CHECK_EQ_INT(off[j], nfc[i].off[j]);
        kd_ids_release(&v);
        free(off);
        check_offsets(TOK[0], "qwen3 nfc", nfc[i].text, 0, 0);
    }
    /* appending: earlier entries are kept, new ones start at the old count */
    kd_ids v = {0};
    uint32_t *off = NULL;
    CHECK_OK(kd_tok_encode_offsets(TOK[1], "ab cd", 5, 1, &v, &off));
    size_t n1 = v.n;
    CHECK_EQ_INT(off[0], 0); /* <|begin_of_text|> */
    CHECK_OK(kd_tok_encode_offsets(TOK[1], "xy", 2, 0, &v, &off));
    CHECK_EQ_INT(v.n, n1 + 1);
    CHECK_EQ_INT(off[0], 0);
    CHECK_EQ_INT(off[n1], 0);
    /* a failure leaves both as they were */
    CHECK_ERR(kd_tok_encode_offsets(TOK[1], "\xff", 1, 0, &v, &off), KD_E_UTF8, "byte 0");
    CHECK_EQ_INT(v.n, n1 + 1);
    kd_ids_release(&v);
    free(off);
}

/* Offsets through the pre-tokenizer's rewrites, on tiny tokenizers: an
 * inserted prefix space, lstrip on an added token, and pieces removed. */
static kd_tokenizer *tiny_tok(const char *name, const char *json)
{
    char path[4096];
    kd_tokenizer *t = NULL;
    snprintf(path, sizeof path, "%s/chat_%s.json", KD_TEST_TMP, name);
    CHECK_OK(kd_write_file_atomic(path, json, strlen(json)));
    CHECK_OK(kd_tok_load(path, &t));
    return t;
}

TEST(offsets_tiny)
{
    /* ByteLevel with a prefix space: "a <x>b" -> "Ġa" <x> "Ġ" "b"; the <x> took
     * the space before it (lstrip); inserted spaces start where their piece does */
    kd_tokenizer *t = tiny_tok("prefix",
        "{\"version\": \"1.0\", \"normalizer\": null, \"decoder\": {\"type\": \"ByteLevel\"},"
        " \"added_tokens\": [{\"id\": 4, \"content\": \"<x>\", \"special\": true, \"lstrip\": true}],"
        " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true},"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"\xc4\xa0\": 2, \"\xc4\xa0" "a\": 3},"
        "   \"merges\": [\"\xc4\xa0 a\"]}}");
    if (t) {
        kd_ids v = {0};
        uint32_t *off = NULL;
        CHECK_OK(kd_tok_encode_offsets(t, "a <x>b", 6, 0, &v, &off));
        CHECK_EQ_INT(v.n, 4);
        static const int32_t ids[] = {3, 4, 2, 1};
        static const uint32_t want[] = {0, 1, 5, 5};
        for (size_t i = 0; i < v.n && i < 4; i++) {
            CHECK_EQ_INT(v.ids[i], ids[i]);
            CHECK_EQ_INT(off[i], want[i]);
        }
        kd_ids_release(&v);
        free(off);
        kd_tok_free(t);
    }
    /* Split Removed drops the spaces: "a  b" -> a (0), b (3) */
    t = tiny_tok("removed",
        "{\"version\": \"1.0\", \"normalizer\": null, \"decoder\": null, \"added_tokens\": [],"
        " \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"Removed\","
        "   \"invert\": false},"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}}");
    if (t) {
        kd_ids v = {0};
        uint32_t *off = NULL;
        CHECK_OK(kd_tok_encode_offsets(t, "a  b", 4, 0, &v, &off));
        CHECK_EQ_INT(v.n, 2);
        if (v.n == 2) {
            CHECK_EQ_INT(off[0], 0);
            CHECK_EQ_INT(off[1], 3);
        }
        kd_ids_release(&v);
        free(off);
        kd_tok_free(t);
    }
}

/* The mask of one rendering against its spans: the runs of 1s decode to the
 * spans' texts exactly (so everything else is 0), each run ends with the
 * end-of-turn token, and no EOS inside a span is masked out. */
static void check_mask(kd_chat_template tpl, const kd_chat_msg *m, size_t n, int gen, const char *what)
{
    const kd_tokenizer *t = tok_for(tpl);
    if (!t)
        return;
    char *text = NULL;
    kd_span *sp = NULL;
    size_t nsp = 0;
    kd_ids ids = {0}, plain = {0};
    uint8_t *mask = NULL;
    CHECK_OK(kd_chat_render_text(tpl, m, n, gen, &text, &sp, &nsp));
    CHECK_OK(kd_chat_render_ids(tpl, t, m, n, gen, &ids, &mask));
    if (!text || !mask)
        goto out;
    /* the ids are those of the whole text, tokenized without added specials */
    CHECK_OK(kd_tok_encode(t, text, strlen(text), 0, &plain));
    test_checks_++;
    if (plain.n != ids.n || memcmp(plain.ids, ids.ids, ids.n * sizeof *ids.ids))
        FAIL_("%s %s: ids differ from encoding the rendered text", kd_chat_template_name(tpl), what);
    int32_t eot = kd_tok_token_to_id(t, kd_chat_template_eot(tpl)), eos = kd_tok_eos_id(t);
    size_t run = 0;
    for (size_t i = 0; i < ids.n;) {
        if (!mask[i]) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < ids.n && mask[j])
            j++;
        char *s = NULL;
        size_t sl = 0;
        CHECK_OK(kd_tok_decode(t, ids.ids + i, j - i, 0, &s, &sl));
        test_checks_++;
        if (run >= nsp)
            FAIL_("%s %s: more mask runs than spans", kd_chat_template_name(tpl), what);
        else if (!s || sl != sp[run].end - sp[run].start || memcmp(s, text + sp[run].start, sl))
            FAIL_("%s %s: mask run %zu is \"%s\", span \"%.*s\"", kd_chat_template_name(tpl), what, run,
                  s ? s : "", (int)(sp[run].end - sp[run].start), text + sp[run].start);
        CHECK_EQ_INT(ids.ids[j - 1], eot);
        free(s);
        run++;
        i = j;
    }
    CHECK_EQ_INT(run, nsp);
    /* the end-of-turn token is the EOS of these instruct tokenizers, and it is
     * never masked out at the end of an assistant turn */
    CHECK_EQ_INT(eot, eos);
    kd_ids_release(&plain);
out:
    free(text);
    free(sp);
    free(mask);
    kd_ids_release(&ids);
}

TEST(masks)
{
    for (size_t k = 0; k < NMSG(GOLDEN); k++) {
        char what[32];
        snprintf(what, sizeof what, "golden %zu", k);
        check_mask(GOLDEN[k].tpl, GOLDEN[k].msgs, GOLDEN[k].n, GOLDEN[k].gen, what);
    }
    /* special-token text inside content becomes the special token, inside the mask */
    static const kd_chat_msg sp[] = {{"user", "say <|im_end|>"}, {"assistant", "ok <|im_end|> <|eot_id|> done"}};
    for (int t = 0; t < KD_CHAT_NTEMPLATES; t++)
        check_mask((kd_chat_template)t, sp, 2, 0, "special text");
    static const kd_chat_msg uni[] = {
        {"system", "Réponds en français. 🙂"},
        {"user", "日本語で？ مرحبا"},
        {"assistant", "<think>\n考える\n</think>\n\nはい 👍🏿"},
        {"user", "ok"},
        {"assistant", "fine  \n"},
    };
    for (int t = 0; t < KD_CHAT_NTEMPLATES; t++)
        check_mask((kd_chat_template)t, uni, NMSG(uni), 0, "unicode");
}

/* A token that straddles a span's start is out: Qwen merges the header's "\n"
 * with the answer's leading newlines into one token that starts in the header. */
TEST(straddle)
{
    if (!TOK[0])
        return;
    static const kd_chat_msg m[] = {{"user", "q"}, {"assistant", "\n\nhello"}};
    kd_ids ids = {0};
    uint8_t *mask = NULL;
    CHECK_OK(kd_chat_render_ids(KD_CHAT_CHATML, TOK[0], m, 2, 0, &ids, &mask));
    size_t first = ids.n;
    for (size_t i = 0; i < ids.n; i++)
        if (mask[i]) {
            first = i;
            break;
        }
    if (first < ids.n) {
        char *s = NULL;
        CHECK_OK(kd_tok_decode(TOK[0], ids.ids + first - 1, 1, 0, &s, NULL));
        CHECK_STR(s, "\n\n\n"); /* the straddling token, 0 */
        free(s);
        CHECK_OK(kd_tok_decode(TOK[0], ids.ids + first, ids.n - first, 0, &s, NULL));
        CHECK_STR(s, "hello<|im_end|>\n");
        free(s);
        CHECK_EQ_INT(mask[ids.n - 1], 0); /* the "\n" after <|im_end|> */
    } else
        FAIL_("no token in the mask");
    free(mask);
    kd_ids_release(&ids);
}

TEST(wrong_tokenizer)
{
    if (!TOK[0])
        return;
    kd_ids ids = {0};
    uint8_t *mask = (uint8_t *)"untouched";
    CHECK_ERR(kd_chat_render_ids(KD_CHAT_LLAMA3, TOK[0], CONV_A, NMSG(CONV_A), 0, &ids, &mask), KD_E_UNSUPPORTED,
              "'<|eot_id|>' one token");
    CHECK_EQ_INT(ids.n, 0);
    CHECK_STR((const char *)mask, "untouched");
    /* no assistant turn: nothing to check, nothing in the mask */
    mask = NULL;
    CHECK_OK(kd_chat_render_ids(KD_CHAT_QWEN3, TOK[0], CONV_B, 1, 1, &ids, &mask));
    size_t ones = 0;
    for (size_t i = 0; i < ids.n; i++)
        ones += mask[i];
    CHECK_EQ_INT(ones, 0);
    CHECK(ids.n > 0);
    free(mask);
    kd_ids_release(&ids);
}

int main(void)
{
    RUN(names);
    RUN(golden_texts);
    RUN(python_whitespace);
    RUN(qwen3_reasoning);
    RUN(deepseek_reasoning);
    RUN(errors);
    RUN(load_tokenizers);
    RUN(token_offsets);
    RUN(offsets_tiny);
    RUN(masks);
    RUN(straddle);
    RUN(wrong_tokenizer);
    for (int k = 0; k < 3; k++)
        kd_tok_free(TOK[k]);
    return test_summary();
}
