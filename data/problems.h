/* problems.h - a built-in generator of verifiable problems: multi-step
 * arithmetic word problems with integer answers, their worked solutions in
 * R1 format, and disjoint train / generation / held-out splits.
 *
 * A PROBLEM is a start amount and a chain of events on it, told as a story:
 *
 *     Mia has 23 apples. She buys 4 bags with 7 apples each. Then she gives
 *     away 15 apples. How many apples does Mia have now?
 *
 * Events: gain k, lose k, gain g groups of s, lose g groups of s, multiply by
 * m (2..4: "doubles", "three times as many"), divide exactly by d ("splits
 * them into d equal piles and keeps one"). A STEP is one arithmetic
 * operation: gain and lose are one step, the group events two (g * s, then
 * + or -). The running amount stays in [1, max_operand * max_factor]; every
 * division is exact, so the answer is a positive integer.
 *
 * The SOLUTION (cot) is what a program that solves the problem writes, one
 * line per step, in R1 format:
 *
 *     <think>
 *     Start with 23 apples.
 *     4 bags of 7 is 4 * 7 = 28.
 *     23 + 28 = 51.
 *     51 - 15 = 36.
 *     </think>
 *
 *     The answer is \boxed{36}.
 *
 * With restate, each event's sentence comes first, on its own line (the
 * demo's setting):
 *
 *     <think>
 *     Start with 23 apples.
 *     She buys 4 bags with 7 apples each.
 *     4 bags of 7 is 4 * 7 = 28.
 *     23 + 28 = 51.
 *     ...
 *
 * Operators are ASCII (+ - * /): one byte and one token in every tokenizer,
 * and easy to read back. Every arithmetic line is "a op b = c." at its end,
 * exactly `steps` of them, the last giving the answer.
 *
 * DIFFICULTY. steps (2..6) is the main knob; max_operand bounds the start
 * amount and every amount gained or lost; max_factor bounds group counts,
 * group sizes and divisors (multipliers are at most min(4, max_factor)).
 * A split mixes steps_min..steps_max in turn (problem i has steps_min +
 * i mod (steps_max - steps_min + 1) steps), and each problem's "source" names
 * its step count, "arith-3step", so per-source tables show accuracy per
 * difficulty.
 *
 * SPLITS. A problem's math (start, events and their numbers; not the name,
 * object or wording) has a signature, and a hash of the signature alone
 * decides its split: train, gen or heldout, a third each. So the three
 * splits are disjoint by construction, in text and in math (a renamed copy
 * of a held-out problem is held out too), for every seed and every
 * configuration. Each split draws from its own stream (seed, split) and keeps
 * the problems whose signature hashes to it, skipping repeats, until it has
 * its count. A split does not depend on the other splits' counts: growing
 * n_train leaves gen and heldout as they were.
 *
 * Deterministic: the same configuration gives the same problems, byte for
 * byte, on every machine (core/rng.h).
 */
#ifndef KD_PROBLEMS_H
#define KD_PROBLEMS_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KD_PROBLEM_STEPS_MIN 2
#define KD_PROBLEM_STEPS_MAX 6
#define KD_PROBLEM_TEXT_MAX 768 /* bytes of a problem's text, NUL included (6 steps: at most about 460) */
#define KD_PROBLEM_COT_MAX 512  /* bytes of a solution, NUL included (6 steps: at most about 260) */

typedef struct kd_problems_cfg {
    uint64_t seed;          /* default 1 */
    int steps_min;          /* 2..6, default 2 */
    int steps_max;          /* steps_min..6, default 4 */
    int max_operand;        /* 5..100000, default 50: start amount, amounts gained or lost */
    int max_factor;         /* 2..12, default 9: group counts and sizes, divisors, multipliers (<= 4) */
    uint64_t n_train;       /* >= 1, default 2000: cold-start SFT chats */
    uint64_t n_gen;         /* >= 1, default 2000: prompts for the teacher to answer */
    uint64_t n_heldout;     /* >= 1, default 500: held-out evaluation prompts */
    int restate;            /* 0 or 1, default 0: the solution quotes each event's sentence
                               (without its connector) on a line of its own before its
                               arithmetic: easier for a small model, which then copies the
                               next event instead of finding it */
} kd_problems_cfg;

/* Fill c with the defaults above. */
void kd_problems_cfg_init(kd_problems_cfg *c);

/* KD_OK, or KD_E_CONFIG naming the first field out of range and its value
 * ("problems: steps_max 7 is out of range [2, 6]"). Counts are at most
 * 10,000,000 each. */
int kd_problems_cfg_check(const kd_problems_cfg *c);

typedef enum { KD_SPLIT_TRAIN = 0, KD_SPLIT_GEN, KD_SPLIT_HELDOUT, KD_SPLIT_COUNT } kd_split;
/* "train", "gen", "heldout". Static storage. */
const char *kd_split_name(int split);

/* One problem: plain data, no pointers. */
typedef struct kd_problem {
    int steps;                      /* arithmetic operations in the solution */
    int64_t answer;                 /* the final amount, >= 1 */
    uint64_t signature;             /* hash of the math (start, events, numbers), not the wording */
    char source[16];                /* "arith-<steps>step" */
    char text[KD_PROBLEM_TEXT_MAX]; /* the word problem */
    char cot[KD_PROBLEM_COT_MAX];   /* "<think>\n...</think>\n\nThe answer is \\boxed{N}." */
} kd_problem;

/* Draw one problem of `steps` steps (2..6, asserted) from r with c's number
 * ranges (c must pass kd_problems_cfg_check; asserted), into *out. Uses a
 * variable number of draws from r. No split is applied: see kd_problems_each. */
void kd_problem_make(const kd_problems_cfg *c, int steps, kd_rng *r, kd_problem *out);

/* The split a problem belongs to, from its signature. */
int kd_problem_split(const kd_problem *p);

/* Call fn(p, ctx) for each problem of split `split` in order, count of them
 * (c->n_train, n_gen or n_heldout). p is valid during the call only. A
 * non-zero return from fn stops the walk and is returned. Errors:
 * KD_E_CONFIG (the configuration), KD_E_RANGE (the ranges hold too few
 * distinct problems for the count: raise max_operand, max_factor or
 * steps_max, or lower the count), KD_E_NOMEM. */
int kd_problems_each(const kd_problems_cfg *c, int split, int (*fn)(const kd_problem *p, void *ctx), void *ctx);

/* Write the three splits under directory `dir` (created if missing) as JSONL:
 *     train_chats.jsonl      {"messages": [{"role": "user", "content": TEXT},
 *                                          {"role": "assistant", "content": COT}],
 *                             "answer": "36", "source": "arith-3step"}
 *     gen_prompts.jsonl      {"problem": TEXT, "answer": "36", "source": "arith-3step"}
 *     heldout_prompts.jsonl  the same shape
 * Each file is written to a temporary name and renamed; a file whose content
 * would not change is left alone, mtime included, so rerunning an import of
 * it (kd_problems_import) is a no-op. Errors: those of kd_problems_each,
 * KD_E_IO naming the file. */
int kd_problems_write(const kd_problems_cfg *c, const char *dir);

/* kd_problems_write, then import each file through kd_jsonl_import into its
 * own dataset: DIR/train (kind chats, the answer mapped), DIR/gen and
 * DIR/heldout (kind prompts), with lineage seed c->seed. Rerunning with the
 * same configuration does nothing; a different configuration into the same
 * DIR is refused by the import (KD_E_CONFIG: the file changed): use a new
 * DIR. `progress`: draw the import progress bars on stderr. Errors: those of
 * kd_problems_write and kd_jsonl_import, wrapped with the dataset's path. */
int kd_problems_import(const kd_problems_cfg *c, const char *dir, int progress);

#ifdef __cplusplus
}
#endif
#endif
