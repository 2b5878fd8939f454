/* tokenizer.h - byte-level BPE tokenizers read from HuggingFace tokenizer.json.
 *
 * A kd_tokenizer encodes text to token ids and decodes ids to text exactly as
 * HuggingFace `tokenizers` (the Rust library, 0.23) does with the same
 * tokenizer.json, for the parts of that format which byte-level BPE models use:
 *
 *   added_tokens    matched in the raw text first (longest match, leftmost
 *                   first), honouring special, lstrip, rstrip, single_word and
 *                   normalized, as HF's AddedVocabulary does;
 *   normalizer      null, NFC, NFD, NFKC, NFKD (through utf8proc), Sequence;
 *   pre_tokenizer   null, Split (Regex or String pattern; behaviors Isolated,
 *                   Removed, MergedWithPrevious, MergedWithNext, Contiguous;
 *                   invert), ByteLevel (add_prefix_space, use_regex), Sequence;
 *   model           BPE: vocab, merges ("a b" strings or [a, b] pairs),
 *                   ignore_merges, byte_fallback, unk_token, fuse_unk,
 *                   continuing_subword_prefix, end_of_word_suffix;
 *   decoder         null (tokens joined by spaces) or ByteLevel;
 *   post_processor  null, ByteLevel, TemplateProcessing, RobertaProcessing,
 *                   BertProcessing, Sequence: read only for the special tokens
 *                   that add_special puts around a text.
 * Anything else in those fields (a WordPiece model, a Metaspace pre-tokenizer,
 * BPE dropout...) makes kd_tok_load fail with KD_E_UNSUPPORTED rather than
 * tokenize differently from HF.
 *
 * Split patterns are Oniguruma regexes in HF; they run here on PCRE2 (UTF, UCP,
 * JIT), after translating the classes whose meaning differs (\s is Unicode
 * White_Space as in Oniguruma; \h is a hex digit). Known residual differences:
 * characters that only newer Unicode versions assign (the \p{..} classes use
 * the system PCRE2's tables, NFC uses utf8proc's), and \w, which Oniguruma and
 * PCRE2 define slightly differently (none of the supported files use it).
 *
 * tokenizer_config.json, when present next to tokenizer.json, supplies the
 * bos/eos/pad tokens, add_bos_token/add_eos_token and the chat template.
 *
 * Threads: after kd_tok_load returns, a tokenizer may be used from any number
 * of threads at once (encode, decode, lookups). Its internal pre-token cache
 * and scratch pool are locked internally. kd_tok_free must not race with use.
 * A kd_tok_stream belongs to one thread at a time.
 *
 * Text is UTF-8 given with an explicit length (it may hold NUL bytes). Input
 * that is not valid UTF-8 (stray continuation bytes, truncated sequences,
 * overlong forms, surrogates, code points above U+10FFFF) is rejected with
 * KD_E_UTF8 naming the byte offset; nothing is ever guessed.
 */
#ifndef KD_TOKENIZER_H
#define KD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_tokenizer kd_tokenizer;

/* A growable array of token ids. Zero-initialise it ({0}) or call
 * kd_ids_init; the encode functions append to it and grow it as needed. */
typedef struct kd_ids {
    int32_t *ids; /* (cap) ids[0..n) are valid; owned by the struct */
    size_t n, cap;
} kd_ids;

/* Set *v to the empty array. Allocates nothing. */
void kd_ids_init(kd_ids *v);
/* Free what *v holds and leave it empty (reusable). NULL-safe. */
void kd_ids_release(kd_ids *v);
/* Append one id. Errors: KD_E_NOMEM (v unchanged). */
int kd_ids_push(kd_ids *v, int32_t id);

/* Load a tokenizer. `path` is a folder holding tokenizer.json (and optionally
 * tokenizer_config.json), or the path of a tokenizer.json file itself, in which
 * case tokenizer_config.json is looked for in the same folder.
 * On success *out is a new tokenizer; release it with kd_tok_free.
 * Errors (every message names the file and the JSON field at fault):
 *   KD_E_NOTFOUND     no tokenizer.json at `path`
 *   KD_E_IO           it cannot be read
 *   KD_E_FORMAT       not JSON, a missing/ill-typed field, a merge naming a
 *                     token that is not in the vocabulary, two tokens with one
 *                     id, an invalid Split regex, an unknown bos_token...
 *   KD_E_RANGE        a token id below 0 or above 2^24
 *   KD_E_UNSUPPORTED  a model/normalizer/pre-tokenizer/decoder type this
 *                     implementation does not run (named in the message)
 *   KD_E_NOMEM
 * Takes about 0.3-0.6 s for a 150K-token vocabulary; do it once per process. */
int kd_tok_load(const char *path, kd_tokenizer **out);

/* Free a tokenizer and everything it owns. Pointers returned by the accessors
 * below become invalid. NULL-safe. */
void kd_tok_free(kd_tokenizer *tok);

/* Encode `len` bytes of UTF-8 `text` and APPEND the ids to `out`.
 * add_special: 0 encodes the text alone (HF's add_special_tokens=False).
 *   1 also adds the special tokens the tokenizer puts around a text: the bos
 *   token when tokenizer_config.json says add_bos_token (eos likewise with
 *   add_eos_token); where it says neither, what the post_processor template
 *   adds (Llama 3: <|begin_of_text|>). Qwen adds nothing, DeepSeek-V3 adds
 *   <｜begin▁of▁sentence｜>, as transformers' AutoTokenizer does.
 * Special-token text inside `text` ("<|im_start|>") always becomes its single
 * id, as in HF.
 * Errors: KD_E_UTF8 (message names the byte offset), KD_E_NOMEM, KD_E_INTERNAL
 * (a regex engine failure, e.g. its stack limit on pathological input).
 * On error out->n is what it was on entry. Thread-safe. */
int kd_tok_encode(const kd_tokenizer *tok, const char *text, size_t len, int add_special, kd_ids *out);

/* kd_tok_encode, and where each token starts: the ids are appended to `out`
 * exactly as kd_tok_encode appends them, and *offsets (NULL or an array from
 * malloc that this function realloc()s; the caller free()s it) is resized to
 * out->n entries, of which those from the entry count out->n had on entry
 * onwards are the byte offsets in `text` where the appended tokens start.
 * Earlier entries are kept.
 *   - Offsets never decrease. A token's bytes are text[offset, next offset)
 *     (the last token: up to len), except where the normalizer changed the
 *     text: a token that starts inside a changed stretch (the smallest run of
 *     characters that normalizes apart from its neighbours, e.g. "e" + U+0301)
 *     gets the start of that stretch.
 *   - An added token matched with lstrip/rstrip starts where its stripped
 *     whitespace starts. The tokens add_special puts in front start at 0,
 *     those it puts behind at len.
 *   - Byte-fallback and unknown tokens (no byte-level tokenizer makes them)
 *     are assumed to stand for one byte and one character.
 * Errors: those of kd_tok_encode; KD_E_RANGE if len >= 4 GiB. On error out
 * and *offsets are what they were on entry. Thread-safe. */
int kd_tok_encode_offsets(const kd_tokenizer *tok, const char *text, size_t len, int add_special, kd_ids *out,
                          uint32_t **offsets);

/* Encode n texts on `nthreads` threads (<= 0: one per online CPU), appending
 * the ids of texts[i] to outs[i]. lens may be NULL: the texts are then
 * NUL-terminated. outs is an array of n initialised kd_ids.
 * Results are exactly those of kd_tok_encode on each text in turn.
 * Errors: those of kd_tok_encode, for the lowest failing index i, with
 * "text i: " prefixed to the message; other outs may then hold partial results.
 * Also KD_E_INTERNAL if a thread cannot be started. */
int kd_tok_encode_batch(const kd_tokenizer *tok, const char *const *texts, const size_t *lens, size_t n,
                        int add_special, int nthreads, kd_ids *outs);

/* Decode n ids to text into a new NUL-terminated buffer *out (the caller
 * free()s it); *len (may be NULL) gets its length without the NUL.
 * skip_special: leave out special added tokens (<|im_end|>, ...).
 * With the ByteLevel decoder the token bytes are joined and any bytes that do
 * not form valid UTF-8 become U+FFFD, one per maximal invalid subsequence, as
 * Rust's String::from_utf8_lossy (and so HF decode) does.
 * Errors: KD_E_RANGE for an id that names no token (HF silently drops such ids;
 * we report them: the message gives the position and the id), KD_E_NOMEM. */
int kd_tok_decode(const kd_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, char **out,
                  size_t *len);

/* Incremental decoding for generation: push ids one at a time and get back
 * only text that is complete UTF-8. Bytes of a character that the next token
 * may complete are held back. The concatenation of every push's text and the
 * finish text equals kd_tok_decode of all the ids, byte for byte.
 * The struct is the caller's; kd_tok_stream_init sets it up (allocating
 * nothing) and kd_tok_stream_release frees its buffers. */
typedef struct kd_tok_stream {
    const kd_tokenizer *tok;
    int skip_special;
    int started;           /* a token was emitted (for the space-joining null decoder) */
    unsigned char tail[4]; /* an incomplete UTF-8 sequence held back */
    size_t ntail;
    char *in, *buf;        /* scratch and output buffers */
    size_t in_cap, buf_cap;
} kd_tok_stream;

void kd_tok_stream_init(kd_tok_stream *s, const kd_tokenizer *tok, int skip_special);
/* Feed one id. *text and *len receive the newly complete text (possibly empty,
 * never NUL-terminated in general), valid until the next call on `s`.
 * Errors: KD_E_RANGE for an id that names no token (the stream is unchanged),
 * KD_E_NOMEM. */
int kd_tok_stream_push(kd_tok_stream *s, int32_t id, const char **text, size_t *len);
/* End the stream: a held-back incomplete sequence comes out as U+FFFD. The
 * stream is then empty and may be reused. *text is valid until the next call. */
int kd_tok_stream_finish(kd_tok_stream *s, const char **text, size_t *len);
void kd_tok_stream_release(kd_tok_stream *s);

/* The id of a token given as its vocabulary string: an added token's content
 * ("<|im_end|>") or a model token in the byte-level alphabet ("Ġthe").
 * Returns -1 if there is none. Added tokens win, as in HF. */
int32_t kd_tok_token_to_id(const kd_tokenizer *tok, const char *token);
/* The string of token `id` (the added token's content, else the model's
 * vocabulary string), NUL-terminated, or NULL if no token has this id.
 * Valid until kd_tok_free. */
const char *kd_tok_id_to_token(const kd_tokenizer *tok, int32_t id);
/* One more than the largest id of any token (model or added): the embedding
 * rows a model needs at least. Ids below it may still name no token. */
int32_t kd_tok_vocab_size(const kd_tokenizer *tok);
/* A 64-bit fingerprint of the vocabulary: FNV-1a over every id's token
 * string, in id order (an id without a token counts as a lone 0xff byte).
 * Equal for two tokenizers that map every id to the same string; a dataset
 * records it so training can refuse examples of another vocabulary. */
uint64_t kd_tok_fingerprint(const kd_tokenizer *tok);
/* 1 if `id` is a special added token (skipped by skip_special), else 0. */
int kd_tok_is_special(const kd_tokenizer *tok, int32_t id);

/* The bos/eos/pad tokens named by tokenizer_config.json (a string or an
 * {"content": ...} object there): their text, or NULL where unset or without
 * a config file; and their ids, or -1. Strings valid until kd_tok_free. */
const char *kd_tok_bos_token(const kd_tokenizer *tok);
const char *kd_tok_eos_token(const kd_tokenizer *tok);
const char *kd_tok_pad_token(const kd_tokenizer *tok);
int32_t kd_tok_bos_id(const kd_tokenizer *tok);
int32_t kd_tok_eos_id(const kd_tokenizer *tok);
int32_t kd_tok_pad_id(const kd_tokenizer *tok);

/* The raw Jinja `chat_template` of tokenizer_config.json, or NULL. Where the
 * config holds a list of named templates, the one named "default" (else the
 * first). Valid until kd_tok_free. */
const char *kd_tok_chat_template(const kd_tokenizer *tok);

#ifdef __cplusplus
}
#endif
#endif
