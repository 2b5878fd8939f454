/* cmd_verify.c - `distill verify --jsonl FILE`: a verdict per line
 * (rejection/verify.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rejection/verify.h"

static void usage_(FILE *f)
{
    fprintf(f, "usage: distill verify --jsonl FILE [-o OUT] [--extract MODE] [--float-rounding N]\n"
               "                     [--whole-text] [--threads N] [--workers N]\n\n"
               "Verifies each line of FILE (\"-\" = stdin) and writes one JSON line per input line,\n"
               "in order, to OUT (default stdout):\n"
               "  in:  {\"gold\": \"...\", \"pred\": \"...\", \"kind\": \"math\"}   (kind defaults to math)\n"
               "       {\"pred\": \"...\", \"tests\": {\"inputs\": [...], \"outputs\": [...]}, \"kind\": \"code\"}\n"
               "       optional \"question\": the problem (a response restating it is no answer)\n"
               "       optional \"note\": Math-Verify per-case settings (cfg=..., prec=N, strict=False)\n"
               "  out: {\"verdict\": true|false, \"reason\": \"correct\", \"extracted\": \"...\"}\n"
               "A malformed line gives {\"verdict\": false, \"reason\": \"bad_input\", ...}; the\n"
               "stream goes on. When lines carry \"expected\", the agreement is printed on stderr.\n\n"
               "options:\n"
               "      --jsonl FILE        the input lines (required)\n"
               "  -o, --output OUT        where the verdict lines go (default stdout)\n"
               "      --extract MODE      math answer extraction: latex+expr (default), latex, expr\n"
               "      --float-rounding N  digits compared when the gold is a decimal (default 6)\n"
               "      --whole-text        extract from the whole response, not only after </think>\n"
               "      --threads N         math lines verified in parallel (default: all cores)\n"
               "      --workers N         code sandboxes at once (default 4)\n"
               "  -h, --help              this help\n\n"
               "exit codes: 0 done (whatever the verdicts), 1 failed, 2 usage error\n");
}

int cmd_verify(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"jsonl", required_argument, NULL, 'j'},   {"output", required_argument, NULL, 'o'},
        {"extract", required_argument, NULL, 'x'}, {"float-rounding", required_argument, NULL, 'r'},
        {"whole-text", no_argument, NULL, 'w'},    {"threads", required_argument, NULL, 't'},
        {"workers", required_argument, NULL, 'k'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kd_verify_opts o;
    kd_verify_opts_init(&o);
    const char *in_path = NULL, *out_path = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        char *end;
        long v;
        switch (opt) {
        case 'h':
            usage_(stdout);
            return 0;
        case 'j':
            in_path = optarg;
            break;
        case 'o':
            out_path = optarg;
            break;
        case 'x':
            if (!strcmp(optarg, "latex+expr"))
                o.math.extract = KD_MATH_EXTRACT_LATEX_EXPR;
            else if (!strcmp(optarg, "latex"))
                o.math.extract = KD_MATH_EXTRACT_LATEX;
            else if (!strcmp(optarg, "expr"))
                o.math.extract = KD_MATH_EXTRACT_EXPR;
            else
                return kd_cli_usage_error("verify", "--extract: '%s' is not latex+expr, latex or expr", optarg);
            break;
        case 'w':
            o.math.after_think = 0;
            break;
        case 'r':
        case 't':
        case 'k':
            v = strtol(optarg, &end, 10);
            if (*end || v < (opt == 'r' ? 0 : 1) || v > (opt == 'r' ? 30 : 4096))
                return kd_cli_usage_error("verify", "--%s: '%s' is out of range",
                                          opt == 'r' ? "float-rounding" : opt == 't' ? "threads" : "workers", optarg);
            if (opt == 'r')
                o.math.float_rounding = (int)v;
            else if (opt == 't')
                o.threads = (int)v;
            else
                o.code.workers = (int)v;
            break;
        default:
            return kd_cli_usage_error("verify", "bad option");
        }
    }
    if (optind < argc)
        return kd_cli_usage_error("verify", "unexpected argument '%s'", argv[optind]);
    if (!in_path)
        return kd_cli_usage_error("verify", "--jsonl FILE is required");
    FILE *in = strcmp(in_path, "-") ? fopen(in_path, "rb") : stdin;
    if (!in)
        return kd_cli_fail(kd_err(KD_E_NOTFOUND, "cannot open '%s'", in_path));
    FILE *out = out_path ? fopen(out_path, "wb") : stdout;
    if (!out) {
        if (in != stdin)
            fclose(in);
        return kd_cli_fail(kd_err(KD_E_IO, "cannot create '%s'", out_path));
    }
    kd_verify_stats st;
    int rc = kd_verify_jsonl(&o, in, out, &st);
    if (in != stdin)
        fclose(in);
    if (out != stdout && fclose(out) != 0 && rc == KD_OK)
        rc = kd_err(KD_E_IO, "writing '%s'", out_path);
    if (rc)
        return kd_cli_fail(rc);
    fprintf(stderr, "verify: %lld lines, %lld accepted, %lld malformed", (long long)st.lines,
            (long long)st.accepted, (long long)st.bad_lines);
    if (st.with_expected)
        fprintf(stderr, "; agreement with \"expected\": %lld/%lld (%.1f%%)", (long long)st.agree,
                (long long)st.with_expected, 100.0 * (double)st.agree / (double)st.with_expected);
    fprintf(stderr, "\n");
    return 0;
}
