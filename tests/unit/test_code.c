/* test_code.c - rejection/code: extraction, the output comparison, and
 * verification of correct / wrong / crashing / slow / hostile solutions in
 * Python, C and C++, in stdin/stdout and function-call styles, bad tests, no
 * code, and verify_many bounded by its worker count (checked by timing: N
 * jobs that each sleep S seconds take at least ceil(N/W)*S and well under
 * N*S). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "rejection/code.h"
#include "test.h"

static kd_code_cfg g_cfg;
static char g_tmp[512];

static void cfg_setup_(void)
{
    kd_code_cfg_init(&g_cfg);
    g_cfg.sb.cpu_seconds = 1;
    g_cfg.sb.wall_seconds = 2;
    g_cfg.sb.mem_bytes = 256ull << 20;
    snprintf(g_tmp, sizeof g_tmp, "%s/code_%d", KD_TEST_TMP, (int)getpid());
    kd_mkdirs(g_tmp);
    g_cfg.sb.tmp_base = g_cfg.compile.tmp_base = g_tmp;
}

/* Verify and check the reason; returns the verdict's score. */
static double verify_(const char *name, const char *response, const char *tests, const char *want)
{
    kd_verdict v;
    int st = kd_code_verify(&g_cfg, response, strlen(response), NULL, tests, &v);
    CHECK_OK(st);
    if (strcmp(v.reason, want) != 0)
        FAIL_("%s: reason %s (%s), want %s", name, v.reason, v.detail, want);
    test_checks_++;
    CHECK_EQ_INT(v.accepted, !strcmp(want, "correct"));
    double score = v.score;
    kd_verdict_release(&v);
    return score;
}

/* ---- extraction and comparison ---------------------------------------------------- */

TEST(extract)
{
    char *code, *lang;
    const char *r1 = "<think>try\n```python\nprint(0)\n```\n</think>\nHere:\n```python\nprint(1)\n```\nand\n"
                     "```text\noutput\n```\n";
    CHECK_OK(kd_code_extract(r1, strlen(r1), NULL, &code, &lang));
    CHECK_STR(code, "print(1)\n");
    CHECK_STR(lang, "python");
    free(code), free(lang);

    /* the last code block; a hint picks its language */
    const char *r2 = "```cpp\nint main(){}\n```\n\n```py\nx = 1\n```\n";
    CHECK_OK(kd_code_extract(r2, strlen(r2), NULL, &code, &lang));
    CHECK_STR(lang, "python");
    free(code), free(lang);
    CHECK_OK(kd_code_extract(r2, strlen(r2), "cpp", &code, &lang));
    CHECK_STR(code, "int main(){}\n");
    CHECK_STR(lang, "cpp");
    free(code), free(lang);

    /* untagged: guessed; tildes; indented fences */
    const char *r3 = "~~~\n#include <iostream>\nint main(){ std::cout << 1; }\n~~~\n";
    CHECK_OK(kd_code_extract(r3, strlen(r3), NULL, &code, &lang));
    CHECK_STR(lang, "cpp");
    free(code), free(lang);
    const char *r4 = "  ```C\n  #include <stdio.h>\n  ```\n";
    CHECK_OK(kd_code_extract(r4, strlen(r4), NULL, &code, &lang));
    CHECK_STR(lang, "c");
    free(code), free(lang);

    /* a fence inside a longer fence is content */
    const char *r5 = "````python\ns = '''\n```\n'''\n````\n";
    CHECK_OK(kd_code_extract(r5, strlen(r5), NULL, &code, &lang));
    CHECK_STR(code, "s = '''\n```\n'''\n");
    free(code), free(lang);

    /* no code: prose, an unclosed (truncated) block, a non-code language */
    const char *none[] = {"the answer is 42", "```python\nprint(1)\n", "```bash\nls\n```\n",
                          "<think>```python\nprint(1)\n```</think> no code here"};
    for (int i = 0; i < 4; i++)
        CHECK_ERR(kd_code_extract(none[i], strlen(none[i]), NULL, &code, &lang), KD_E_NOTFOUND, "code block");
}

TEST(compare)
{
    char why[128];
    CHECK(kd_code_output_matches("3\n", "3", 1e-6, NULL, 0));
    CHECK(kd_code_output_matches("1 2\r\n3  \n\n", "1\n2 3", 1e-6, NULL, 0));
    CHECK(kd_code_output_matches("", "  \n", 1e-6, NULL, 0));
    CHECK(kd_code_output_matches("0.3333333", "0.333333333", 1e-6, NULL, 0));
    CHECK(kd_code_output_matches("1e9", "1000000001", 1e-6, NULL, 0));    /* relative */
    CHECK(kd_code_output_matches("1e-9", "0", 1e-6, NULL, 0));            /* absolute */
    CHECK(kd_code_output_matches("3.0", "3", 1e-6, NULL, 0));
    CHECK(!kd_code_output_matches("0.3334", "0.3333", 1e-6, why, sizeof why));
    CHECK_HAS(why, "token 1");
    CHECK(!kd_code_output_matches("1 2", "1 2 3", 1e-6, why, sizeof why));
    CHECK_HAS(why, "shorter");
    CHECK(!kd_code_output_matches("1 2 3", "1 2", 1e-6, why, sizeof why));
    CHECK_HAS(why, "longer");
    CHECK(!kd_code_output_matches("YES", "yes", 1e-6, NULL, 0));
    CHECK(!kd_code_output_matches("nan", "1", 1e-6, NULL, 0));
    CHECK(!kd_code_output_matches("12", "12.5", 1e-6, NULL, 0));
}

/* ---- stdin/stdout ----------------------------------------------------------------- */

static const char *ADD_TESTS = "{\"inputs\": [\"1 2\\n\", \"10 -3\\n\", \"0 0\\n\"], \"outputs\": [\"3\\n\", \"7\", \"0\\n\"]}";

TEST(python_stdin)
{
    verify_("correct", "Sure.\n```python\na, b = map(int, input().split())\nprint(a + b)\n```\n", ADD_TESTS, "correct");
    verify_("whitespace", "```python\na, b = map(int, input().split())\nprint('  ', a + b, '\\n\\n')\n```\n",
            ADD_TESTS, "correct");
    double s = verify_("wrong", "```python\na, b = map(int, input().split())\nprint(a + b if a else 5)\n```",
                       ADD_TESTS, "wrong_answer");
    CHECK_NEAR(s, 2.0 / 3.0, 1e-9);
    verify_("crash", "```python\nraise ValueError('boom')\n```", ADD_TESTS, "runtime_error");
    verify_("slow", "```python\nwhile True: pass\n```", ADD_TESTS, "timeout");
    verify_("memory", "```python\nx = [0] * (1 << 30)\n```", ADD_TESTS, "memory_limit");
    verify_("network", "```python\nimport socket\nsocket.create_connection(('8.8.8.8', 53))\n```", ADD_TESTS,
            "sandbox_violation");
    verify_("float",
            "```python\nprint(1 / 3)\n```",
            "{\"inputs\": [\"\"], \"outputs\": [\"0.333333333\"]}", "correct");

    /* the detail names the test */
    kd_verdict v;
    const char *resp = "```python\nprint(4)\n```";
    CHECK_OK(kd_code_verify(&g_cfg, resp, strlen(resp), NULL, ADD_TESTS, &v));
    CHECK_HAS(v.detail, "test 1/3");
    CHECK_HAS(v.detail, "expected '3', got '4'");
    CHECK_STR(v.extracted, "print(4)\n");
    kd_verdict_release(&v);
}

TEST(c_and_cpp)
{
    verify_("c correct",
            "```c\n#include <stdio.h>\nint main(void){ long a, b; scanf(\"%ld %ld\", &a, &b); printf(\"%ld\\n\", a + b); }\n```",
            ADD_TESTS, "correct");
    verify_("c crash", "```c\n#include <stdio.h>\nint main(void){ int *p = 0; *p = 1; return 0; }\n```", ADD_TESTS,
            "runtime_error");
    verify_("c compile error", "```c\nint main(void){ return x; }\n```", ADD_TESTS, "compile_error");
    verify_("cpp correct",
            "```cpp\n#include <iostream>\nint main(){ long a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }\n```",
            ADD_TESTS, "correct");
    verify_("cpp wrong", "```cpp\n#include <cstdio>\nint main(){ puts(\"3\"); }\n```", ADD_TESTS, "wrong_answer");
    verify_("cpp slow", "```cpp\nint main(){ volatile unsigned long x = 0; for (;;) x++; }\n```", ADD_TESTS, "timeout");
    verify_("cpp memory",
            "```cpp\n#include <vector>\nint main(){ std::vector<long> v; for(;;) v.push_back(1); }\n```", ADD_TESTS,
            "memory_limit");
    verify_("fn style in C", "```c\nint add(int a, int b){ return a + b; }\n```",
            "{\"fn_name\": \"add\", \"inputs\": [[1, 2]], \"outputs\": [3]}", "bad_tests");
}

/* ---- function-call style ---------------------------------------------------------- */

TEST(python_fn)
{
    const char *tests = "{\"fn_name\": \"add\", \"inputs\": [[1, 2], [10, -3]], \"outputs\": [3, 7]}";
    verify_("function", "```python\ndef add(a, b):\n    print('debug noise')\n    return a + b\n```", tests, "correct");
    verify_("method", "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```", tests,
            "correct");
    verify_("wrong", "```python\ndef add(a, b):\n    return a - b\n```", tests, "wrong_answer");
    verify_("missing", "```python\ndef plus(a, b):\n    return a + b\n```", tests, "runtime_error");
    verify_("raises", "```python\ndef add(a, b):\n    return a / 0\n```", tests, "runtime_error");
    verify_("slow", "```python\ndef add(a, b):\n    while True: pass\n```", tests, "timeout");
    verify_("float and lists", "```python\ndef f(xs):\n    return [x / 3 for x in xs], (1, 'a')\n```",
            "{\"fn_name\": \"f\", \"inputs\": [[[1, 2]]], \"outputs\": [[[0.3333333333, 0.6666666667], [1, \"a\"]]]}",
            "correct");
    verify_("taco wrapped", "```python\ndef add(a, b):\n    return a + b\n```",
            "{\"fn_name\": \"add\", \"inputs\": [[1, 2]], \"outputs\": [[3]]}", "correct");
}

/* ---- bad input -------------------------------------------------------------------- */

TEST(bad_tests_and_no_code)
{
    const char *ok = "```python\nprint(1)\n```";
    verify_("not json", ok, "{\"inputs\": [", "bad_tests");
    verify_("no outputs", ok, "{\"inputs\": [\"1\"]}", "bad_tests");
    verify_("length", ok, "{\"inputs\": [\"1\", \"2\"], \"outputs\": [\"1\"]}", "bad_tests");
    verify_("empty", ok, "{\"inputs\": [], \"outputs\": []}", "bad_tests");
    verify_("objects", ok, "{\"inputs\": [{}], \"outputs\": [\"1\"]}", "bad_tests");
    verify_("fn_name type", ok, "{\"fn_name\": 3, \"inputs\": [[1]], \"outputs\": [1]}", "bad_tests");
    verify_("null tests", ok, NULL, "bad_tests");
    verify_("no code", "I think the answer is to add them.", ADD_TESTS, "no_code");
    verify_("truncated", "```python\nprint(1)\n", ADD_TESTS, "no_code");
    /* line arrays and numbers as stdin/stdout */
    verify_("arrays", "```python\nprint(int(input()) + int(input()))\n```",
            "{\"inputs\": [[\"1\", \"2\"]], \"outputs\": [3]}", "correct");
}

/* ---- many at once ----------------------------------------------------------------- */

static double now_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

TEST(verify_many_bounded)
{
    enum { N = 12, W = 3 };
    const double S = 0.4;
    kd_code_cfg c = g_cfg;
    c.workers = W;
    const char *sleeper = "```python\nimport time\ntime.sleep(0.4)\nprint(int(input()) * 2)\n```";
    const char *wrong = "```python\nimport time\ntime.sleep(0.4)\nprint(0)\n```";
    const char *t = "{\"inputs\": [\"21\\n\"], \"outputs\": [\"42\"]}";
    const char *resp[N], *tests[N];
    for (int i = 0; i < N; i++)
        resp[i] = i % 4 == 3 ? wrong : sleeper, tests[i] = t;
    kd_verdict out[N];
    double t0 = now_();
    CHECK_OK(kd_code_verify_many(&c, N, resp, NULL, tests, out));
    double dt = now_() - t0;
    for (int i = 0; i < N; i++) {
        CHECK_STR(out[i].reason, i % 4 == 3 ? "wrong_answer" : "correct");
        kd_verdict_release(&out[i]);
    }
    printf("  %d jobs, %d workers, %.2f s each: %.2f s\n", N, W, S, dt);
    CHECK(dt >= (N / W) * S * 0.95); /* never more than W at once */
    CHECK(dt < N * S * 0.75);        /* but several at once */

    /* mixed languages and outcomes, more workers than jobs */
    c.workers = 16;
    const char *mixed[] = {"```python\nprint(3)\n```", "```c\n#include <stdio.h>\nint main(){puts(\"3\");}\n```",
                           "no code", "```python\nimport os\nos.kill(-1, 9)\n```"};
    const char *mt[] = {ADD_TESTS, "{\"inputs\": [\"\"], \"outputs\": [\"3\"]}", ADD_TESTS, ADD_TESTS};
    size_t lens[4];
    for (int i = 0; i < 4; i++)
        lens[i] = strlen(mixed[i]);
    kd_verdict mo[4];
    CHECK_OK(kd_code_verify_many(&c, 4, mixed, lens, mt, mo));
    CHECK_STR(mo[0].reason, "wrong_answer");
    CHECK_NEAR(mo[0].score, 1.0 / 3.0, 1e-9);
    CHECK_STR(mo[1].reason, "correct");
    CHECK_STR(mo[2].reason, "no_code");
    CHECK_STR(mo[3].reason, "sandbox_violation");
    for (int i = 0; i < 4; i++)
        kd_verdict_release(&mo[i]);
}

int main(void)
{
    cfg_setup_();
    printf("  isolation: %s\n", kd_sandbox_isolation());
    RUN(extract);
    RUN(compare);
    RUN(python_stdin);
    RUN(c_and_cpp);
    RUN(python_fn);
    RUN(bad_tests_and_no_code);
    RUN(verify_many_bounded);
    kd_rmtree(g_tmp);
    return test_summary();
}
