/* text.h - the text verifiers of rejection sampling: format, language,
 * readability and degeneration. They look at the words of a completion, never
 * at its correctness (that is the math and code verifiers' job), and they are
 * what DeepSeek-R1 used besides correctness:
 *
 *   - R1-Zero's format reward puts "the thinking process between '<think>'
 *     and '</think>' tags" (kd_check_format);
 *   - R1's language consistency reward is "the proportion of target language
 *     words in the CoT" (kd_check_language, whose score is that proportion);
 *   - R1's cold-start and rejection-sampling data "filtered out chain-of-thought
 *     with mixed languages, long paragraphs, and code blocks"
 *     (kd_check_language's mixed_language, kd_check_readability);
 *   - and what every distillation pipeline drops: loops and truncated traces
 *     (kd_check_degeneration).
 *
 * THE PARTS OF A COMPLETION. R1's chat template ends the generation prompt
 * with "<think>\n", so the model writes `reasoning</think>answer`; distill
 * stores completions with that forced "<think>\n" in front (docs/generation.md).
 * With think_in_prompt set (the default) both shapes are accepted; without it
 * the completion itself must open with <think>. The chain of thought (CoT) is
 * the text between the opening <think> and the last </think>; the answer is
 * the text after the last </think> (kd_text_think, kd_text_answer).
 *
 * INPUT. Every function takes text as (pointer, byte length): it may hold NUL
 * bytes and need not be valid UTF-8. Bytes that are not UTF-8 are neutral:
 * they are neither words nor white space, and they never make a check fail on
 * their own nor crash it. `text` may be NULL when n is 0. Time is O(n) (the
 * n-gram check O(n * ngram_n)), memory O(1) in n (O(period_max + ngram_n)):
 * a 10 MB completion is checked in well under a second.
 *
 * THE VERDICT. Each check overwrites *v (which must have been initialised
 * with kd_verdict_init; its old `extracted` is freed): accepted 1/0, score,
 * a stable reason token (below) and a detail line naming the byte offset and
 * the numbers behind the decision. A rejection is a verdict, not an error:
 * the functions return KD_OK for every text. They return
 *   KD_E_CONFIG  a configuration value out of range or an unknown `lang`
 *                (the message names the key): fix the configuration; v is
 *                rejected with reason "config";
 *   KD_E_NOMEM   an allocation failed (v: reason "error").
 * All functions are thread-safe: they keep no state between calls.
 *
 * Reasons, by check:
 *   format        ok, no_think, many_think, empty_think, empty_answer,
 *                 unclosed_think, misordered_think, text_before_think
 *   language      ok, wrong_language, mixed_language
 *   readability   ok, long_paragraph, code_in_think
 *   degeneration  ok, repetition, truncated
 */
#ifndef KD_REJECTION_TEXT_H
#define KD_REJECTION_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "rejection/verdict.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The knobs of the four checks. Fill it with kd_text_cfg_init (or load it
 * from YAML with kd_text_schema, whose keys are the field names); a value of
 * 0 disables the check it belongs to where noted. */
typedef struct kd_text_cfg {
    /* format */
    int think_in_prompt; /* the prompt opened <think>: the completion may start without it (1) */

    /* language (on the CoT) */
    char *lang;               /* target: a language code (en, zh, ru, ar, ... "zh-CN" works),
                                 a script name as kd_detect_script answers (latin, cjk, cyrillic,
                                 arabic, other), or NULL / "" / "auto": the script of most words.
                                 Owned by the struct when loaded through kd_text_schema. */
    double lang_min_fraction; /* wrong_language below this share of target-script words (0.5) */
    double mixed_max_fraction;/* mixed_language above this share of words in foreign runs (0.02);
                                 1 disables */
    int64_t mixed_min_run;    /* a foreign run counts from this many consecutive foreign words (2) */

    /* readability */
    int64_t max_paragraph_chars; /* long_paragraph above this many characters (3000); 0 disables */
    int forbid_code_in_think;    /* code_in_think for a ``` fence inside the CoT (1) */

    /* degeneration */
    int64_t ngram_n;           /* n-grams of 1..ngram_n words are checked for loops (8); 0 disables */
    int64_t ngram_max_repeats; /* repetition above this many consecutive copies of one n-gram (10) */
    int64_t period_max;        /* repetition for a substring with a period of at most this many */
    int64_t period_min_span;   /*   bytes (500) spanning at least this many bytes (2000); must be
                                    >= 3 * period_max; period_max 0 disables */
} kd_text_cfg;

/* The YAML schema of kd_text_cfg ("text"): every field above, with the
 * defaults of kd_text_cfg_init. kd_cfg_release(&kd_text_schema, c) frees
 * `lang` when it was loaded. */
extern const kd_cfg_schema kd_text_schema;

/* Fill c with the R1-like defaults (the values in parentheses above; lang
 * NULL, i.e. auto). Nothing to free. */
void kd_text_cfg_init(kd_text_cfg *c);

/* ---- the parts -------------------------------------------------------------- */

/* The chain of thought: after the first <think> up to the last </think>. With
 * no </think>: after the first <think> up to the end (an unfinished CoT), or,
 * with no <think> either, the whole text when think_in_prompt is set and
 * nothing (length 0) when it is not. *cot points into text (valid as long as
 * text is); it may still hold tags when the format is wrong. */
void kd_text_think(const char *text, size_t n, int think_in_prompt, const char **cot, size_t *clen);

/* The answer: the text after the last </think>. With no </think>: nothing
 * (length 0, *ans = text + n) when the text opened a CoT it never closed (a
 * <think>, or think_in_prompt), else the whole text. Not trimmed. *ans points
 * into text. */
void kd_text_answer(const char *text, size_t n, int think_in_prompt, const char **ans, size_t *alen);

/* ---- the checks --------------------------------------------------------------- */

/* Format: exactly one CoT, non-empty, followed by a non-empty answer ("empty"
 * is white space only). Score 1 or 0. On acceptance v->extracted is a copy of
 * the answer with white space trimmed at both ends (malloc'd, NUL-terminated;
 * kd_verdict_release frees it).
 *   no_think           no tags at all (without think_in_prompt), or </think> without <think>
 *   many_think         more than one <think> or </think> (a leading <think> under
 *                      think_in_prompt is the prompt's own and does not count)
 *   unclosed_think     a CoT that never ends (no </think>)
 *   misordered_think   </think> before <think>
 *   text_before_think  something other than white space before <think>
 *   empty_think, empty_answer */
int kd_check_format(const kd_text_cfg *c, const char *text, size_t n, kd_verdict *v);

/* Language consistency, on the CoT (kd_text_think; the whole text when it has
 * none). Words are maximal runs of letters (utf8proc's L and M categories);
 * each CJK character (Han, kana, Hangul) is a word by itself, as Chinese has
 * no spaces. A word's script is the script of most of its letters, by
 * kd_detect_script (data/curate.h): latin, cjk, cyrillic, arabic, other. It
 * tells scripts apart, not languages ("en" and "fr" are both latin).
 * Neutral (not counted): numbers, punctuation, symbols, one-letter words
 * (math variables: x, n, θ), words holding digits or '_' (x1, a_n), LaTeX
 * ($..$, $$..$$, \(..\), \[..\] and every \command), code (```fenced``` and
 * `inline`), the think tags and bytes that are not UTF-8.
 * score = target-script words / counted words (R1's reward; 1 with no
 * counted words). A foreign run is a maximal stretch of counted words none of
 * which is in the target script.
 *   wrong_language  score < lang_min_fraction
 *   mixed_language  the words of foreign runs of >= mixed_min_run words are
 *                   more than mixed_max_fraction of the counted words
 *                   (English with a Chinese sentence; a stray 你好 is a run of 2
 *                   and a single foreign word never counts) */
int kd_check_language(const kd_text_cfg *c, const char *text, size_t n, kd_verdict *v);

/* Readability. Score 1 or 0.
 *   code_in_think   (forbid_code_in_think) a line of the CoT starting with ```
 *                   (after white space): R1's filter of code blocks in a math CoT.
 *                   Turn it off for code prompts.
 *   long_paragraph  a paragraph (lines between blank lines, over the whole
 *                   text; fenced code and lines holding only a think tag left
 *                   out) of more than max_paragraph_chars characters (UTF-8
 *                   lead bytes: a code point, or a stray byte, is one) */
int kd_check_readability(const kd_text_cfg *c, const char *text, size_t n, kd_verdict *v);

/* Degeneration, over the whole text. Score 1 or 0.
 *   truncated   finish_length is set (the generation hit its token limit)
 *   repetition  (a) the same n-gram of 1..ngram_n words repeated more than
 *               ngram_max_repeats times in a row ("the the the ...", "Wait, let
 *               me check. Wait, let me check. ..."); words are split at white
 *               space, each CJK character is a word, and an n-gram with no
 *               letter ("0 &", "1 +") never counts, so written-out matrices
 *               and sums pass; or
 *               (b) any substring of at least period_min_span bytes with a
 *               period of at most period_max bytes (a sentence or paragraph
 *               looping until the token limit). Exact repetition only: a loop
 *               whose copies differ (a counter that increments) is not found.
 * The detail names the period, the span and the byte offset. */
int kd_check_degeneration(const kd_text_cfg *c, const char *text, size_t n, int finish_length, kd_verdict *v);

/* Every check, in the order degeneration, format, language, readability; *v
 * is the first rejection, or "ok" with the language score and the format's
 * extracted answer. */
int kd_check_text(const kd_text_cfg *c, const char *text, size_t n, int finish_length, kd_verdict *v);

#ifdef __cplusplus
}
#endif
#endif
