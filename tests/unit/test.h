/* test.h - the unit-test harness: one executable per file, TEST() functions
 * run in order by RUN(), CHECK* macros that report file:line and keep going.
 *
 *     TEST(roundtrip) { CHECK_EQ_INT(f(1), 2); }
 *     int main(void) { RUN(roundtrip); return test_summary(); }
 *
 * Paths: KD_TEST_SRC (the source tree), KD_TEST_FIXTURES (unpacked HF
 * fixtures), KD_TEST_TMP (scratch, under the build tree).
 */
#ifndef KD_TEST_H
#define KD_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

static int test_failures_;
static int test_checks_;
static const char *test_current_ = "";

#define TEST(name) static void test_##name(void)
#define RUN(name)                                        \
    do {                                                 \
        int before_ = test_failures_;                    \
        test_current_ = #name;                           \
        test_##name();                                   \
        printf("%s %s\n", test_failures_ == before_ ? "ok  " : "FAIL", #name); \
        fflush(stdout);                                  \
    } while (0)

#define FAIL_(...)                                                        \
    do {                                                                  \
        test_failures_++;                                                 \
        fprintf(stderr, "%s:%d: in %s: ", __FILE__, __LINE__, test_current_); \
        fprintf(stderr, __VA_ARGS__);                                     \
        fputc('\n', stderr);                                              \
    } while (0)

#define CHECK(cond)                                  \
    do {                                             \
        test_checks_++;                              \
        if (!(cond))                                 \
            FAIL_("check failed: %s", #cond);        \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                              \
    do {                                                                                \
        long long a_ = (long long)(a), b_ = (long long)(b);                             \
        test_checks_++;                                                                 \
        if (a_ != b_)                                                                   \
            FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);                            \
    } while (0)

#define CHECK_STR(a, b)                                                                 \
    do {                                                                                \
        const char *a_ = (a), *b_ = (b);                                                \
        test_checks_++;                                                                 \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                          \
            FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
    } while (0)

/* a string contains a substring */
#define CHECK_HAS(hay, needle)                                                          \
    do {                                                                                \
        const char *h_ = (hay), *n_ = (needle);                                         \
        test_checks_++;                                                                 \
        if (!h_ || !strstr(h_, n_))                                                     \
            FAIL_("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);            \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                           \
    do {                                                                                \
        double a_ = (a), b_ = (b);                                                      \
        test_checks_++;                                                                 \
        if (!(fabs(a_ - b_) <= (tol)))                                                  \
            FAIL_("%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, a_, b_, (double)(tol));    \
    } while (0)

/* a call returns KD_OK; on failure print kd_strerror */
#define CHECK_OK(expr)                                                                  \
    do {                                                                                \
        int st_ = (expr);                                                               \
        test_checks_++;                                                                 \
        if (st_ != KD_OK)                                                               \
            FAIL_("%s: %s", #expr, kd_strerror(st_));                                   \
    } while (0)

/* a call fails with `code` and its message contains `needle` */
#define CHECK_ERR(expr, code, needle)                                                   \
    do {                                                                                \
        int st_ = (expr);                                                               \
        test_checks_++;                                                                 \
        if (st_ != (code))                                                              \
            FAIL_("%s: expected %s, got %s", #expr, kd_status_name(code), kd_strerror(st_)); \
        else if ((needle) && !strstr(kd_strerror(st_), (needle)))                       \
            FAIL_("%s: message \"%s\" lacks \"%s\"", #expr, kd_strerror(st_), (needle)); \
    } while (0)

static inline int test_summary(void)
{
    printf("%d checks, %d failures\n", test_checks_, test_failures_);
    return test_failures_ ? 1 : 0;
}

#endif
