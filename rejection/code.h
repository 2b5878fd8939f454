/* code.h - the code verifier: pull the program out of a response, run it in
 * the sandbox (sandbox.h) against test cases, and say whether it passed.
 *
 * Languages: Python (the interpreter runs the file), C and C++ (the system
 * compiler, itself inside the sandbox with the larger `compile` limits, then
 * the binary). Test styles:
 *
 *   stdin/stdout   {"inputs": ["1 2\n", ...], "outputs": ["3\n", ...]}
 *                  Each input is fed on stdin; stdout is compared token by
 *                  token (any whitespace separates tokens), and two tokens that
 *                  both parse as numbers match within float_tol (absolute or
 *                  relative). Strings in arrays are joined with newlines.
 *   function call  {"fn_name": "add", "inputs": [[1, 2], ...], "outputs": [3, ...]}
 *                  Python only: a harness imports the solution and calls
 *                  fn_name(*inputs[i]) (a top-level function, else a method of
 *                  class Solution), prints the result as JSON, and the result
 *                  is compared as JSON (numbers within float_tol; an expected
 *                  one-element list also matches its element, as APPS/TACO
 *                  wrap outputs). What the solution prints goes to stderr.
 *
 * Reasons (kd_verdict.reason): "correct", "wrong_answer", "runtime_error",
 * "timeout", "memory_limit", "compile_error", "no_code", "bad_tests",
 * "sandbox_violation" (the seccomp filter killed it). The first failing test
 * names the reason and the detail ("test 3/10: expected '3', got '4'"); the
 * score is the fraction of tests passed.
 */
#ifndef KD_REJECTION_CODE_H
#define KD_REJECTION_CODE_H

#include <stddef.h>

#include "rejection/sandbox.h"
#include "rejection/verdict.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_code_cfg {
    kd_sandbox_cfg sb;      /* each test run (the working directory is read-only then) */
    kd_sandbox_cfg compile; /* the C/C++ compile: 10 s CPU, 20 s wall, 2 GiB, 64 processes */
    int workers;            /* kd_code_verify_many: sandboxes at once; default: online CPUs */
    double float_tol;       /* default 1e-6 */
    const char *python;     /* NULL: /usr/bin/python3, else python3 on PATH */
    const char *cc, *cxx;   /* NULL: cc and c++ on PATH */
    int stop_on_timeout;    /* default 1: after a test times out, the rest fail without running */
    int fail_fast;          /* default 0: stop at the first failing test (score counts the rest as failed) */
} kd_code_cfg;

/* Defaults above; sb and compile from kd_sandbox_cfg_init with those changes. */
void kd_code_cfg_init(kd_code_cfg *c);

/* Find the code in a response: after the last "</think>" when there is one,
 * the last fenced block (``` or ~~~) tagged with a code language (python, py,
 * c, cpp, c++, cc, cxx), else the last untagged one. With lang_hint ("python",
 * "cpp", "c"; NULL for any) a block in that language wins. An unclosed fence
 * (a truncated response) is not code. *code and *lang ("python", "cpp", "c")
 * are malloc'd and belong to the caller. Errors: KD_E_NOTFOUND (no code
 * block), KD_E_NOMEM. */
int kd_code_extract(const char *text, size_t n, const char *lang_hint, char **code, char **lang);

/* Verify one response against tests_json (see the top of this file). v is
 * overwritten (kd_verdict_init first is not needed; kd_verdict_release it
 * after); v->extracted is the code. Program failures are verdicts; the return
 * is an error only when the sandbox itself cannot run: KD_E_UNSUPPORTED,
 * KD_E_IO, KD_E_NOMEM (v then says "error"). */
int kd_code_verify(const kd_code_cfg *c, const char *response, size_t n, const char *lang_hint,
                   const char *tests_json, kd_verdict *v);

/* Verify responses[i] (lens[i] bytes; lens NULL: NUL-terminated) against
 * tests[i] into out[i] for i < n, with at most c->workers sandboxes at a time
 * (a pool of threads). Every out[i] is filled; the return is the first error
 * any job hit (the others still ran). */
int kd_code_verify_many(const kd_code_cfg *c, size_t n, const char *const *responses, const size_t *lens,
                        const char *const *tests, kd_verdict *out);

/* Token-wise comparison of program output with the expected text (the
 * stdin/stdout rule above). 1 when they match. On a mismatch, when why is
 * not NULL, a short description is written there. */
int kd_code_output_matches(const char *got, const char *want, double tol, char *why, size_t why_cap);

#ifdef __cplusplus
}
#endif
#endif
