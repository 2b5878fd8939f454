/* code.c - the code verifier (see code.h): extraction, test parsing, output
 * comparison, the Python call harness, compile-then-run, and the worker pool. */
#include "rejection/code.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "core/status.h"

void kd_code_cfg_init(kd_code_cfg *c)
{
    memset(c, 0, sizeof *c);
    kd_sandbox_cfg_init(&c->sb);
    c->sb.work_readonly = 1;
    kd_sandbox_cfg_init(&c->compile);
    c->compile.cpu_seconds = 10;
    c->compile.wall_seconds = 20;
    c->compile.mem_bytes = 2ull << 30;
    c->compile.file_bytes = 64ull << 20;
    c->compile.max_procs = 64;
    c->compile.max_files = 256;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = ncpu > 0 ? (int)ncpu : 1;
    c->float_tol = 1e-6;
    c->stop_on_timeout = 1;
}

/* ---- extraction ------------------------------------------------------------------- */

/* "python", "cpp", "c", "" (untagged) or NULL (some other language). */
static const char *lang_norm_(const char *tag, size_t n)
{
    static const struct { const char *tag, *lang; } tab[] = {
        {"python", "python"}, {"py", "python"}, {"python3", "python"}, {"py3", "python"},
        {"cpp", "cpp"}, {"c++", "cpp"}, {"cxx", "cpp"}, {"cc", "cpp"}, {"c", "c"}};
    if (n == 0)
        return "";
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (strlen(tab[i].tag) == n && strncasecmp(tab[i].tag, tag, n) == 0)
            return tab[i].lang;
    return NULL;
}

static const char *guess_lang_(const char *code, size_t n, const char *hint)
{
    if (hint && *hint)
        return hint;
    char *s = strndup(code, n);
    const char *lang = "python";
    if (s && strstr(s, "#include")) {
        static const char *const cxx[] = {"iostream", "std::", "using namespace", "bits/stdc++", "cout", "cin",
                                          "vector<", "template<", "template <"};
        lang = "c";
        for (size_t i = 0; i < sizeof cxx / sizeof *cxx; i++)
            if (strstr(s, cxx[i]))
                lang = "cpp";
    }
    free(s);
    return lang;
}

int kd_code_extract(const char *text, size_t n, const char *lang_hint, char **code, char **lang)
{
    *code = *lang = NULL;
    const char *hint = lang_hint ? lang_norm_(lang_hint, strlen(lang_hint)) : NULL;
    if (hint && !*hint)
        hint = NULL;
    const char *p = text, *end = text + n;
    for (const char *q = text; q + 8 <= end; q++)
        if (memcmp(q, "</think>", 8) == 0)
            p = q + 8;
    /* Walk lines; remember the best block so far. */
    const char *best = NULL, *best_lang = NULL;
    size_t best_len = 0;
    int best_rank = 0; /* 3 hint match, 2 tagged code, 1 untagged */
    const char *open_body = NULL, *open_lang = NULL;
    char fence = 0;
    size_t fence_n = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *s = p;
        while (s < line_end && (*s == ' ' || *s == '\t'))
            s++;
        size_t ticks = 0;
        while (s + ticks < line_end && (s[ticks] == '`' || s[ticks] == '~') && s[ticks] == s[0])
            ticks++;
        if (ticks >= 3) {
            if (!open_body) {
                const char *t = s + ticks, *te;
                while (t < line_end && (*t == ' ' || *t == '\t'))
                    t++;
                te = t;
                while (te < line_end && *te != ' ' && *te != '\t' && *te != '\r' && *te != '{')
                    te++;
                fence = s[0], fence_n = ticks;
                open_lang = lang_norm_(t, (size_t)(te - t));
                open_body = eol ? eol + 1 : end;
            } else if (s[0] == fence && ticks >= fence_n) {
                const char *after = s + ticks;
                while (after < line_end && (*after == ' ' || *after == '\t' || *after == '\r'))
                    after++;
                if (after == line_end) { /* a closing fence */
                    if (open_lang) {
                        int rank = *open_lang ? 2 : 1;
                        const char *l = *open_lang ? open_lang : NULL;
                        size_t len = (size_t)(p - open_body);
                        if (!l)
                            l = guess_lang_(open_body, len, hint);
                        if (hint && !strcmp(l, hint))
                            rank = 3;
                        if (rank >= best_rank) {
                            best = open_body, best_len = len, best_lang = l, best_rank = rank;
                        }
                    }
                    open_body = NULL;
                }
            }
        }
        p = eol ? eol + 1 : end;
    }
    if (!best)
        return kd_err(KD_E_NOTFOUND, "no closed code block in the response");
    *code = strndup(best, best_len);
    *lang = strdup(best_lang);
    if (!*code || !*lang) {
        free(*code), free(*lang);
        *code = *lang = NULL;
        return kd_err(KD_E_NOMEM, "extracted code");
    }
    return KD_OK;
}

/* ---- comparison ------------------------------------------------------------------- */

static int is_space_(char ch) { return ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v'; }

static const char *next_tok_(const char *s, size_t *len)
{
    while (*s && is_space_(*s))
        s++;
    size_t n = 0;
    while (s[n] && !is_space_(s[n]))
        n++;
    *len = n;
    return n ? s : NULL;
}

/* Parse a whole token as a number. */
static int tok_num_(const char *t, size_t n, double *out)
{
    char buf[128];
    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, t, n);
    buf[n] = 0;
    char *e;
    errno = 0;
    double d = strtod(buf, &e);
    if (*e || e == buf)
        return 0;
    *out = d;
    return 1;
}

static int num_close_(double a, double b, double tol)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    double d = fabs(a - b);
    return d <= tol || d <= tol * fmax(fabs(a), fabs(b));
}

int kd_code_output_matches(const char *got, const char *want, double tol, char *why, size_t why_cap)
{
    const char *g = got, *w = want;
    for (int k = 1;; k++) {
        size_t gn, wn;
        const char *gt = next_tok_(g, &gn), *wt = next_tok_(w, &wn);
        if (!gt && !wt)
            return 1;
        if (!gt || !wt) {
            if (why)
                snprintf(why, why_cap, "%s output: token %d is '%.*s'", gt ? "longer" : "shorter", k,
                         (int)(gt ? (gn > 40 ? 40 : gn) : (wn > 40 ? 40 : wn)), gt ? gt : wt);
            return 0;
        }
        double a, b;
        if (!(gn == wn && memcmp(gt, wt, gn) == 0) &&
            !(tok_num_(gt, gn, &a) && tok_num_(wt, wn, &b) && num_close_(a, b, tol))) {
            if (why)
                snprintf(why, why_cap, "token %d: expected '%.*s', got '%.*s'", k, (int)(wn > 40 ? 40 : wn), wt,
                         (int)(gn > 40 ? 40 : gn), gt);
            return 0;
        }
        g = gt + gn, w = wt + wn;
    }
}

static int json_close_(const json_t *a, const json_t *b, double tol)
{
    if (json_is_number(a) && json_is_number(b))
        return num_close_(json_number_value(a), json_number_value(b), tol);
    if (json_typeof(a) != json_typeof(b))
        return 0;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!json_close_(json_array_get(a, i), json_array_get(b, i), tol))
                return 0;
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        json_t *va;
        json_object_foreach((json_t *)a, k, va) {
            json_t *vb = json_object_get(b, k);
            if (!vb || !json_close_(va, vb, tol))
                return 0;
        }
        return 1;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

/* ---- tests ------------------------------------------------------------------------ */

typedef struct tests {
    json_t *root;
    const char *fn_name; /* NULL: stdin/stdout */
    size_t n;
    char **in, **out;    /* stdin style: the texts */
    json_t *inputs, *outputs;
} tests;

static void tests_release_(tests *t)
{
    for (size_t i = 0; t->in && i < t->n; i++)
        free(t->in[i]);
    for (size_t i = 0; t->out && i < t->n; i++)
        free(t->out[i]);
    free(t->in);
    free(t->out);
    json_decref(t->root);
    memset(t, 0, sizeof *t);
}

/* A stdin/stdout text: a string, an array of lines, or a number. NULL when it is none of those. */
static char *as_text_(const json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    if (json_is_number(v)) {
        char buf[64];
        if (json_is_integer(v))
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        else
            snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        return strdup(buf);
    }
    if (json_is_array(v)) {
        size_t len = 0;
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (!json_is_string(json_array_get(v, i)))
                return NULL;
            len += json_string_length(json_array_get(v, i)) + 1;
        }
        char *s = malloc(len + 1), *p = s;
        if (!s)
            return NULL;
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *e = json_array_get(v, i);
            memcpy(p, json_string_value(e), json_string_length(e));
            p += json_string_length(e);
            *p++ = '\n';
        }
        *p = 0;
        return s;
    }
    return NULL;
}

/* Parse the tests; on a problem, why says what and 0 is returned. */
static int tests_parse_(const char *text, tests *t, char *why, size_t cap)
{
    memset(t, 0, sizeof *t);
    json_error_t je;
    t->root = text ? json_loads(text, 0, &je) : NULL;
    if (!t->root) {
        snprintf(why, cap, "tests are not JSON: %s", text ? je.text : "none given");
        return 0;
    }
    t->inputs = json_object_get(t->root, "inputs");
    t->outputs = json_object_get(t->root, "outputs");
    json_t *fn = json_object_get(t->root, "fn_name");
    if (!json_is_object(t->root) || !json_is_array(t->inputs) || !json_is_array(t->outputs)) {
        snprintf(why, cap, "tests need \"inputs\" and \"outputs\" arrays");
        return 0;
    }
    t->n = json_array_size(t->inputs);
    if (t->n == 0 || t->n != json_array_size(t->outputs)) {
        snprintf(why, cap, "%zu inputs and %zu outputs", t->n, json_array_size(t->outputs));
        return 0;
    }
    if (fn && !json_is_null(fn)) {
        if (!json_is_string(fn) || !json_string_length(fn)) {
            snprintf(why, cap, "fn_name must be a non-empty string");
            return 0;
        }
        t->fn_name = json_string_value(fn);
        return 1;
    }
    t->in = calloc(t->n, sizeof *t->in);
    t->out = calloc(t->n, sizeof *t->out);
    if (!t->in || !t->out) {
        snprintf(why, cap, "out of memory");
        return 0;
    }
    for (size_t i = 0; i < t->n; i++) {
        t->in[i] = as_text_(json_array_get(t->inputs, i));
        t->out[i] = as_text_(json_array_get(t->outputs, i));
        if (!t->in[i] || !t->out[i]) {
            snprintf(why, cap, "test %zu: stdin/stdout tests need strings", i + 1);
            return 0;
        }
    }
    return 1;
}

/* ---- running ---------------------------------------------------------------------- */

/* Imports solution.py, calls the function on args.json, prints the result as
 * one JSON line. The solution's own prints go to stderr. */
static const char harness_py_[] =
    "import importlib.util, json, sys\n"
    "def _conv(o):\n"
    "    if isinstance(o, (set, frozenset)):\n"
    "        try:\n"
    "            return sorted(o)\n"
    "        except TypeError:\n"
    "            return list(o)\n"
    "    return repr(o)\n"
    "def main():\n"
    "    with open('args.json') as f:\n"
    "        args = json.load(f)\n"
    "    real = sys.stdout\n"
    "    sys.stdout = sys.stderr\n"
    "    spec = importlib.util.spec_from_file_location('solution', 'solution.py')\n"
    "    mod = importlib.util.module_from_spec(spec)\n"
    "    sys.modules['solution'] = mod\n"
    "    spec.loader.exec_module(mod)\n"
    "    fn = getattr(mod, sys.argv[1], None)\n"
    "    if fn is None and hasattr(mod, 'Solution'):\n"
    "        fn = getattr(mod.Solution(), sys.argv[1], None)\n"
    "    if not callable(fn):\n"
    "        sys.stderr.write('harness: no function %s in the solution\\n' % sys.argv[1])\n"
    "        sys.exit(3)\n"
    "    if not isinstance(args, list):\n"
    "        args = [args]\n"
    "    res = fn(*args)\n"
    "    sys.stdout = real\n"
    "    real.write('\\n' + json.dumps(res, default=_conv) + '\\n')\n"
    "    real.flush()\n"
    "main()\n";

/* Resolve an executable: a path with '/' as is, else the first match on PATH. */
static int resolve_exe_(const char *name, char *buf, size_t cap)
{
    if (strchr(name, '/')) {
        snprintf(buf, cap, "%s", name);
        return access(buf, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        if (len && snprintf(buf, cap, "%.*s/%s", (int)len, path, name) < (int)cap && access(buf, X_OK) == 0)
            return 1;
        path += len + (colon ? 1 : 0);
    }
    return 0;
}

/* Show the interpreter's install folder read-only when it is outside the
 * system folders every sandbox shows (a pyenv or venv Python). */
static void add_prefix_(kd_sandbox_cfg *sb, const char *exe, char *store, size_t cap)
{
    char real[PATH_MAX];
    if (!realpath(exe, real))
        return;
    static const char *const sys[] = {"/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/etc/"};
    for (size_t i = 0; i < sizeof sys / sizeof *sys; i++)
        if (!strncmp(real, sys[i], strlen(sys[i])))
            return;
    char *slash = strrchr(real, '/');
    if (slash && slash != real)
        *slash = 0; /* .../bin */
    slash = strrchr(real, '/');
    if (slash && slash != real)
        *slash = 0; /* the prefix */
    int k = 0;
    while (k < KD_SANDBOX_MAX_RO - 1 && sb->ro_paths[k])
        k++;
    if (k < KD_SANDBOX_MAX_RO - 1) {
        snprintf(store, cap, "%s", real);
        sb->ro_paths[k] = store;
        sb->ro_paths[k + 1] = NULL;
    }
}

/* The last line of s with something on it, into a new string. */
static char *last_line_(const char *s)
{
    const char *end = s + strlen(s);
    while (end > s && is_space_(end[-1]))
        end--;
    const char *start = end;
    while (start > s && start[-1] != '\n')
        start--;
    return strndup(start, (size_t)(end - start));
}

/* A short tail of stderr for details: its last non-empty line. */
static void err_tail_(const kd_sandbox_result *r, char *buf, size_t cap)
{
    char *l = last_line_(r->err ? r->err : "");
    snprintf(buf, cap, "%s", l && *l ? l : (r->signal ? strsignal(r->signal) : "no message"));
    free(l);
}

/* Map a sandbox failure to a verdict reason; NULL when the run ended well. */
static const char *run_reason_(const kd_sandbox_result *r)
{
    if (!strcmp(r->reason, "ok"))
        return NULL;
    if (!strcmp(r->reason, "sandbox_violation") || !strcmp(r->reason, "timeout") ||
        !strcmp(r->reason, "memory_limit"))
        return r->reason;
    return "runtime_error"; /* runtime_error, output_limit, file_limit */
}

typedef struct job {
    const kd_code_cfg *c;
    kd_sandbox_cfg sb, compile;
    char ro_store[PATH_MAX];
    char python[PATH_MAX], cc[PATH_MAX], cxx[PATH_MAX];
} job;

static int run_tests_(job *j, kd_sandbox_box *box, const char *lang, tests *t, kd_verdict *v)
{
    const kd_code_cfg *c = j->c;
    char detail[KD_DETAIL_MAX] = "", why[160], fail_buf[KD_REASON_MAX];
    const char *fail = NULL;
    size_t passed = 0, i = 0;
    for (; i < t->n; i++) {
        kd_sandbox_result r;
        const char *py_argv[] = {j->python, "solution.py", NULL};
        const char *fn_argv[] = {j->python, "harness.py", t->fn_name, NULL};
        const char *bin_argv[] = {"./prog", NULL};
        const char *const *argv = !strcmp(lang, "python") ? (t->fn_name ? fn_argv : py_argv) : bin_argv;
        const char *in = "";
        size_t in_len = 0;
        if (t->fn_name) {
            char *args = json_dumps(json_array_get(t->inputs, i), JSON_ENCODE_ANY | JSON_COMPACT);
            if (!args)
                return kd_err(KD_E_NOMEM, "test arguments");
            kd_sandbox_file f = {"args.json", args, strlen(args), 0};
            int st = kd_sandbox_box_write(box, &f);
            free(args);
            KD_TRY(st);
        } else {
            in = t->in[i];
            in_len = strlen(in);
        }
        KD_TRY(kd_sandbox_box_run(box, &j->sb, argv, in, in_len, &r));
        const char *bad = run_reason_(&r);
        if (bad) {
            char tail[120];
            err_tail_(&r, tail, sizeof tail);
            if (!strcmp(bad, "timeout"))
                snprintf(why, sizeof why, "over %.3g s (cpu %.2f s, wall %.2f s)",
                         r.timed_out ? j->sb.wall_seconds : j->sb.cpu_seconds, r.cpu_seconds, r.wall_seconds);
            else if (!strcmp(bad, "sandbox_violation"))
                snprintf(why, sizeof why, "killed by the seccomp filter (a forbidden system call)");
            else if (!strcmp(r.reason, "output_limit"))
                snprintf(why, sizeof why, "more than %llu bytes of output", (unsigned long long)j->sb.out_bytes);
            else
                snprintf(why, sizeof why, "%s", tail);
        } else if (t->fn_name) {
            char *line = last_line_(r.out);
            json_error_t je;
            json_t *got = line ? json_loads(line, JSON_DECODE_ANY, &je) : NULL;
            const json_t *want = json_array_get(t->outputs, i);
            int ok = got && (json_close_(got, want, c->float_tol) ||
                             (json_is_array(want) && json_array_size(want) == 1 &&
                              json_close_(got, json_array_get(want, 0), c->float_tol)));
            if (!ok) {
                bad = "wrong_answer";
                char *ws = json_dumps(want, JSON_ENCODE_ANY | JSON_COMPACT);
                snprintf(why, sizeof why, "expected %.60s, got %.60s", ws ? ws : "?", line ? line : "");
                free(ws);
            }
            json_decref(got);
            free(line);
        } else if (!kd_code_output_matches(r.out, t->out[i], c->float_tol, why, sizeof why)) {
            bad = "wrong_answer";
        }
        int timed_out = !strcmp(r.reason, "timeout");
        if (bad && !fail) {
            snprintf(fail_buf, sizeof fail_buf, "%s", bad); /* bad may point into r */
            fail = fail_buf;
            snprintf(detail, sizeof detail, "test %zu/%zu: %s", i + 1, t->n, why);
        }
        kd_sandbox_result_release(&r);
        if (!bad) {
            passed++;
            continue;
        }
        if (c->fail_fast || (timed_out && c->stop_on_timeout))
            break;
    }
    double score = (double)passed / (double)t->n;
    if (!fail)
        kd_verdict_set(v, 1, 1.0, "correct", "%zu/%zu tests passed", t->n, t->n);
    else
        kd_verdict_set(v, 0, score, fail, "%s", detail);
    return KD_OK;
}

static int verify_(job *j, const char *response, size_t n, const char *lang_hint, const char *tests_json,
                   kd_verdict *v)
{
    const kd_code_cfg *c = j->c;
    char *code = NULL, *lang = NULL, why[200];
    if (kd_code_extract(response ? response : "", response ? n : 0, lang_hint, &code, &lang) != KD_OK) {
        kd_verdict_set(v, 0, 0, "no_code", "no closed ``` code block in the response");
        return KD_OK;
    }
    v->extracted = code;
    tests t;
    if (!tests_parse_(tests_json, &t, why, sizeof why)) {
        tests_release_(&t);
        free(lang);
        kd_verdict_set(v, 0, 0, "bad_tests", "%s", why);
        return KD_OK;
    }
    int py = !strcmp(lang, "python");
    if (t.fn_name && !py) {
        tests_release_(&t);
        kd_verdict_set(v, 0, 0, "bad_tests", "function-call tests ('%s') need Python; the code is %s", t.fn_name,
                       lang);
        free(lang);
        return KD_OK;
    }
    const char *tool = py ? (c->python ? c->python : NULL) : !strcmp(lang, "c") ? (c->cc ? c->cc : "cc")
                                                                                : (c->cxx ? c->cxx : "c++");
    char *exe = py ? j->python : !strcmp(lang, "c") ? j->cc : j->cxx;
    int found = tool ? resolve_exe_(tool, exe, PATH_MAX)
                     : (resolve_exe_("/usr/bin/python3", exe, PATH_MAX) || resolve_exe_("python3", exe, PATH_MAX));
    if (!found) {
        tests_release_(&t);
        free(lang);
        return kd_err(KD_E_NOTFOUND, "no %s found for the code verifier", tool ? tool : "python3");
    }
    if (py) {
        add_prefix_(&j->sb, exe, j->ro_store, sizeof j->ro_store);
    }

    kd_sandbox_box *box = NULL;
    int st = kd_sandbox_box_create(&j->sb, &box);
    if (st == KD_OK) {
        kd_sandbox_file src = {py ? "solution.py" : !strcmp(lang, "c") ? "prog.c" : "prog.cpp", code, strlen(code), 0};
        st = kd_sandbox_box_write(box, &src);
        if (st == KD_OK && t.fn_name) {
            kd_sandbox_file h = {"harness.py", harness_py_, sizeof harness_py_ - 1, 0};
            st = kd_sandbox_box_write(box, &h);
        }
    }
    int compiled = 1;
    if (st == KD_OK && !py) {
        const char *c_argv[] = {exe, "-O2", "-pipe", "-o", "prog", "prog.c", "-lm", NULL};
        const char *cxx_argv[] = {exe, "-O2", "-pipe", "-std=gnu++17", "-o", "prog", "prog.cpp", NULL};
        kd_sandbox_result r;
        st = kd_sandbox_box_run(box, &j->compile, !strcmp(lang, "c") ? c_argv : cxx_argv, "", 0, &r);
        if (st == KD_OK && strcmp(r.reason, "ok") != 0) {
            compiled = 0;
            /* the first line that says "error", else the last line */
            const char *e = r.err ? strstr(r.err, "error") : NULL;
            char line[160];
            if (e) {
                while (e > r.err && e[-1] != '\n')
                    e--;
                snprintf(line, sizeof line, "%.*s", (int)strcspn(e, "\n"), e);
            } else {
                err_tail_(&r, line, sizeof line);
            }
            kd_verdict_set(v, 0, 0, "compile_error", "%s%s", !strcmp(r.reason, "timeout") ? "compile timed out: " : "",
                           line);
        }
        if (st == KD_OK)
            kd_sandbox_result_release(&r);
    }
    if (st == KD_OK && compiled)
        st = run_tests_(j, box, lang, &t, v);
    kd_sandbox_box_free(box);
    tests_release_(&t);
    free(lang);
    if (st != KD_OK)
        kd_verdict_set(v, 0, 0, "error", "%s", kd_strerror(st));
    return st;
}

static void job_init_(job *j, const kd_code_cfg *c)
{
    memset(j, 0, sizeof *j);
    j->c = c;
    j->sb = c->sb;
    j->compile = c->compile;
}

int kd_code_verify(const kd_code_cfg *c, const char *response, size_t n, const char *lang_hint,
                   const char *tests_json, kd_verdict *v)
{
    kd_verdict_init(v);
    job *j = malloc(sizeof *j);
    if (!j) {
        kd_verdict_set(v, 0, 0, "error", "out of memory");
        return kd_err(KD_E_NOMEM, "code verifier job");
    }
    job_init_(j, c);
    int st = verify_(j, response, n, lang_hint, tests_json, v);
    free(j);
    return st;
}

/* ---- many at once ----------------------------------------------------------------- */

typedef struct pool {
    const kd_code_cfg *c;
    size_t n, next;
    const char *const *responses;
    const size_t *lens;
    const char *const *tests;
    kd_verdict *out;
    pthread_mutex_t mu;
    int first_err;
    char msg[1024];
} pool;

static void *worker_(void *arg)
{
    pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n)
            break;
        const char *resp = p->responses[i];
        size_t len = p->lens ? p->lens[i] : (resp ? strlen(resp) : 0);
        int st = kd_code_verify(p->c, resp, len, NULL, p->tests[i], &p->out[i]);
        if (st != KD_OK) {
            pthread_mutex_lock(&p->mu);
            if (!p->first_err) {
                p->first_err = st;
                snprintf(p->msg, sizeof p->msg, "response %zu: %s", i, kd_strerror(st));
            }
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

int kd_code_verify_many(const kd_code_cfg *c, size_t n, const char *const *responses, const size_t *lens,
                        const char *const *tests, kd_verdict *out)
{
    pool p = {.c = c, .n = n, .responses = responses, .lens = lens, .tests = tests, .out = out};
    for (size_t i = 0; i < n; i++)
        kd_verdict_init(&out[i]);
    pthread_mutex_init(&p.mu, NULL);
    size_t w = c->workers > 0 ? (size_t)c->workers : 1;
    if (w > n)
        w = n;
    pthread_t *th = calloc(w ? w : 1, sizeof *th);
    if (!th) {
        pthread_mutex_destroy(&p.mu);
        return kd_err(KD_E_NOMEM, "code verifier threads");
    }
    size_t started = 0;
    for (; started < w; started++)
        if (pthread_create(&th[started], NULL, worker_, &p) != 0)
            break;
    if (started == 0 && n > 0)
        worker_(&p); /* no thread could start: do it here */
    for (size_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(th);
    pthread_mutex_destroy(&p.mu);
    if (p.first_err)
        return kd_err(p.first_err, "%s", p.msg);
    return KD_OK;
}
