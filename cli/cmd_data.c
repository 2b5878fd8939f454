/* cmd_data.c - `distill data <import|export|show|head|stats|merge|bench|...>`:
 * the dataset store from the command line. Each subcommand parses its options
 * and calls one function of data/jsonl.h, data/tools.h or data/curate.h. The
 * curation ops take their flags from their config schema (data/curate.h), so
 * `--key value` on the command line and `key: value` in a curate script are
 * the same thing. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data/curate.h"
#include "data/jsonl.h"
#include "data/tools.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: distill data <subcommand> [<args>]\n\n"
               "A dataset is a directory holding an LMDB environment (data.mdb, lock.mdb) and a\n"
               "manifest.json; see docs/datasets.md for the layout, keys and record formats.\n\n"
               "subcommands:\n"
               "  import DATASET FILE.jsonl  import prompts, chats or generations (resumable)\n"
               "  export DATASET [-o FILE]   write JSONL in the shapes import reads\n"
               "  show DATASET ID [SAMPLE]   a prompt with its generations and verdicts, or one unit\n"
               "  head DATASET [-n N]        the first records of a sub-database\n"
               "  stats DATASET              counts, sources, verdicts, length histograms\n"
               "  merge OUT SHARD...         merge shards into one dataset, deduplicating units\n"
               "  bench                      measure import MB/s and zero-copy examples/s\n"
               "  problems DIR               built-in arithmetic problems with cold-start CoT, as datasets\n"
               "curation (each reads IN and writes OUT, reporting kept/dropped):\n"
               "  filter IN OUT --where EXPR keep the units a predicate holds for\n"
               "  dedupe IN OUT              drop exact and near (MinHash) duplicates\n"
               "  decontaminate IN OUT --benchmarks F.jsonl  drop benchmark n-gram overlaps\n"
               "  split|sample|select IN OUT deterministic split, sample, best k per prompt\n"
               "  tokenize IN OUT            chat template + tokenizer into examples (resumable)\n"
               "  mix [IN] OUT --sources DIR:W --total N  weighted mixture of datasets\n"
               "  curate SCRIPT.yaml         run a list of these steps (configs/curation/)\n"
               "  bench-dedupe [--docs N]    MinHash dedupe benchmark\n\n"
               "'distill data <subcommand> --help' documents each one's options.\n");
}

/* A byte count or count with an optional K/M/G (binary) suffix. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return 0;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10, end++;
    else if (*end == 'M' || *end == 'm')
        shift = 20, end++;
    else if (*end == 'G' || *end == 'g')
        shift = 30, end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return 0;
    *out = (uint64_t)v << shift;
    return 1;
}

static int parse_db(const char *cmd, const char *s, kd_db *out)
{
    int d = kd_db_parse(s);
    if (d < 0)
        return kd_cli_usage_error(cmd, "unknown sub-database '%s' (prompts, generations, verdicts or examples)", s);
    *out = (kd_db)d;
    return 0;
}

/* ------------------------------------------------------------------------ */

static void import_usage(FILE *f)
{
    fprintf(f,
            "usage: distill data import DATASET FILE.jsonl [options]\n\n"
            "Imports one JSON object per line into DATASET (created if needed). The import\n"
            "commits in batches together with its progress, so a killed import rerun with\n"
            "the same options resumes where it stopped, and a finished one does nothing.\n\n"
            "options:\n"
            "      --kind KIND          prompts (default): {\"problem\", \"answer\", ...}\n"
            "                           chats: {\"messages\": [{\"role\", \"content\"}, ...]}\n"
            "                           generations: a prompt with \"generation\" (one sample)\n"
            "                           or \"generations\" (an array of samples)\n"
            "      --prompt-field NAME  the prompt text (default: the first of problem, question,\n"
            "                           prompt on the first line that has one)\n"
            "      --answer-field NAME  the reference answer (default: answer or solution;\n"
            "                           '' for none); non-string values stay extra fields\n"
            "      --id-field NAME      integer prompt ids from NAME (default: dense ids in input\n"
            "                           order, after the largest id in the dataset)\n"
            "      --messages-field NAME  chats: the messages array (default: messages)\n"
            "      --generation-field NAME  generations: the completion(s) (default: the first\n"
            "                           of generation, generations, response, output, completion)\n"
            "      --sample-field NAME  generations: the sample index (default: the next free one)\n"
            "      --verdict-field NAME generations: a boolean (or array of booleans) that\n"
            "                           becomes verdicts, e.g. correctness_math_verify\n"
            "      --field KEY=NAME     the same as --KEY-field NAME (KEY: prompt, answer, id,\n"
            "                           messages, generation, sample, verdict)\n"
            "      --source NAME        lineage: where the data came from (default: FILE)\n"
            "      --teacher NAME       lineage: the model that wrote the generations\n"
            "      --seed N             lineage: the sampling seed\n"
            "      --on-error POLICY    stop (default): fail at the first bad line, naming it;\n"
            "                           the lines before it are kept. skip: count bad lines,\n"
            "                           print the first 20 with their line numbers, go on\n"
            "      --max-line-bytes N   longer lines are bad lines (default 64M)\n"
            "      --batch-bytes N      input bytes per committed batch (default 8M)\n"
            "      --threads N          parser threads (default: the online CPUs, at most 8)\n"
            "      --fast               no fsync per batch, one sync at the end: a killed\n"
            "                           process loses nothing, an OS crash may lose or corrupt\n"
            "                           the dataset (see docs/datasets.md, Durability)\n"
            "      --name NAME          the dataset's name when this import creates it\n"
            "  -h, --help               this help\n\n"
            "Sizes take K, M or G suffixes (binary). Every input field that is not mapped\n"
            "is kept, so export writes back what import read.\n");
}

static int sub_import(int argc, char **argv)
{
    enum { O_KIND = 0x100, O_PROMPT, O_ANSWER, O_ID, O_MESSAGES, O_GEN, O_SAMPLE, O_VERDICT, O_FIELD, O_SOURCE,
           O_TEACHER, O_SEED, O_ONERR, O_MAXLINE, O_BATCH, O_THREADS, O_FAST, O_NAME };
    static const struct option lo[] = {
        {"kind", required_argument, NULL, O_KIND},
        {"prompt-field", required_argument, NULL, O_PROMPT},
        {"answer-field", required_argument, NULL, O_ANSWER},
        {"id-field", required_argument, NULL, O_ID},
        {"messages-field", required_argument, NULL, O_MESSAGES},
        {"generation-field", required_argument, NULL, O_GEN},
        {"sample-field", required_argument, NULL, O_SAMPLE},
        {"verdict-field", required_argument, NULL, O_VERDICT},
        {"field", required_argument, NULL, O_FIELD},
        {"source", required_argument, NULL, O_SOURCE},
        {"teacher", required_argument, NULL, O_TEACHER},
        {"seed", required_argument, NULL, O_SEED},
        {"on-error", required_argument, NULL, O_ONERR},
        {"max-line-bytes", required_argument, NULL, O_MAXLINE},
        {"batch-bytes", required_argument, NULL, O_BATCH},
        {"threads", required_argument, NULL, O_THREADS},
        {"fast", no_argument, NULL, O_FAST},
        {"name", required_argument, NULL, O_NAME},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *cmd = "data import";
    kd_import_opts o;
    kd_import_opts_init(&o);
    o.progress = 1;
    int opt;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        const char *a = optarg;
        switch (opt) {
        case 'h': import_usage(stdout); return 0;
        case O_KIND:
            if ((o.kind = kd_jsonl_kind_parse(a)) < 0)
                return kd_cli_usage_error(cmd, "unknown --kind '%s' (prompts, chats or generations)", a);
            break;
        case O_PROMPT: o.prompt_field = a; break;
        case O_ANSWER: o.answer_field = a; break;
        case O_ID: o.id_field = a; break;
        case O_MESSAGES: o.messages_field = a; break;
        case O_GEN: o.generation_field = a; break;
        case O_SAMPLE: o.sample_field = a; break;
        case O_VERDICT: o.verdict_field = a; break;
        case O_FIELD: {
            const char *eq = strchr(a, '=');
            if (!eq)
                return kd_cli_usage_error(cmd, "--field wants KEY=NAME, got '%s'", a);
            size_t kl = (size_t)(eq - a);
            const char *name = eq + 1;
#define K(s) (kl == strlen(s) && !strncmp(a, s, kl))
            if (K("prompt") || K("problem"))
                o.prompt_field = name;
            else if (K("answer"))
                o.answer_field = name;
            else if (K("id"))
                o.id_field = name;
            else if (K("messages"))
                o.messages_field = name;
            else if (K("generation"))
                o.generation_field = name;
            else if (K("sample"))
                o.sample_field = name;
            else if (K("verdict"))
                o.verdict_field = name;
            else
                return kd_cli_usage_error(cmd, "unknown --field key '%.*s' (prompt, answer, id, messages, generation, "
                                               "sample or verdict)",
                                          (int)kl, a);
#undef K
            break;
        }
        case O_SOURCE: o.source = a; break;
        case O_TEACHER: o.teacher = a; break;
        case O_SEED:
            if (!parse_size(a, &v) || v > INT64_MAX)
                return kd_cli_usage_error(cmd, "--seed wants a non-negative integer, got '%s'", a);
            o.seed = (int64_t)v;
            break;
        case O_ONERR:
            if (!strcmp(a, "stop"))
                o.on_error = KD_ON_ERROR_STOP;
            else if (!strcmp(a, "skip"))
                o.on_error = KD_ON_ERROR_SKIP;
            else
                return kd_cli_usage_error(cmd, "--on-error wants skip or stop, got '%s'", a);
            break;
        case O_MAXLINE:
        case O_BATCH:
            if (!parse_size(a, &v) || v == 0 || v > (1ull << 40))
                return kd_cli_usage_error(cmd, "--%s wants a positive size, got '%s'",
                                          opt == O_MAXLINE ? "max-line-bytes" : "batch-bytes", a);
            if (opt == O_MAXLINE)
                o.max_line = (size_t)v;
            else
                o.batch_bytes = (size_t)v;
            break;
        case O_THREADS:
            if (!parse_size(a, &v) || v == 0 || v > 64)
                return kd_cli_usage_error(cmd, "--threads wants 1 to 64, got '%s'", a);
            o.threads = (int)v;
            break;
        case O_FAST: o.store_flags |= KD_STORE_FAST; break;
        case O_NAME: o.name = a; break;
        default: return kd_cli_usage_error(cmd, "bad option");
        }
    }
    if (argc - optind != 2)
        return kd_cli_usage_error(cmd, "wants DATASET and FILE.jsonl");
    const char *ds = argv[optind], *file = argv[optind + 1];
    kd_import_stats st;
    int rc = kd_jsonl_import(ds, file, &o, &st);
    if (st.bad)
        kd_warn("%" PRIu64 " bad line(s) skipped in '%s' in all%s", st.bad, file,
                st.bad > (uint64_t)KD_IMPORT_MAX_REPORT ? " (the first ones are listed above)" : "");
    if (rc != KD_OK)
        return kd_cli_fail(rc);
    if (!st.already_done)
        kd_info("imported '%s' into '%s': %" PRIu64 " lines, %" PRIu64 " prompts, %" PRIu64 " generations, %" PRIu64
                " verdicts, %" PRIu64 " bad lines; this run %.1f MB in %.2f s (%.1f MB/s)",
                file, ds, st.lines, st.prompts, st.generations, st.verdicts, st.bad, (double)st.run_bytes / 1e6,
                st.seconds, st.seconds > 0 ? (double)st.run_bytes / 1e6 / st.seconds : 0.0);
    return 0;
}

/* ------------------------------------------------------------------------ */

static void export_usage(FILE *f)
{
    fprintf(f, "usage: distill data export DATASET [-o FILE] [--kind KIND]\n\n"
               "Writes JSONL in the shapes 'distill data import' reads. Records keep the field\n"
               "names of the import that made them, and their extra fields, so import -> export\n"
               "gives back the input objects (key order aside).\n\n"
               "options:\n"
               "  -o, --output FILE    write to FILE (atomically, at the end); default stdout\n"
               "      --kind KIND      prompts (default): every record of 'prompts', chats as\n"
               "                       {\"messages\"}; chats: only the chats; generations: one\n"
               "                       line per generation with its prompt and verdict (array-form\n"
               "                       imports: one line per prompt)\n"
               "      --no-progress    no progress bar\n"
               "  -h, --help           this help\n");
}

static int sub_export(int argc, char **argv)
{
    enum { O_KIND = 0x100, O_NOPROG };
    static const struct option lo[] = {{"output", required_argument, NULL, 'o'},
                                       {"kind", required_argument, NULL, O_KIND},
                                       {"no-progress", no_argument, NULL, O_NOPROG},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    const char *cmd = "data export", *outp = NULL;
    kd_export_opts o = {.kind = KD_KIND_PROMPTS, .progress = 1};
    int opt;
    while ((opt = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
        switch (opt) {
        case 'h': export_usage(stdout); return 0;
        case 'o': outp = optarg; break;
        case O_KIND:
            if ((o.kind = kd_jsonl_kind_parse(optarg)) < 0)
                return kd_cli_usage_error(cmd, "unknown --kind '%s' (prompts, chats or generations)", optarg);
            break;
        case O_NOPROG: o.progress = 0; break;
        default: return kd_cli_usage_error(cmd, "bad option");
        }
    }
    if (argc - optind != 1)
        return kd_cli_usage_error(cmd, "wants one DATASET");
    if (!outp || !strcmp(outp, "-"))
        o.progress = 0; /* stdout may be the terminal too */
    kd_export_stats st;
    int rc = kd_jsonl_export(argv[optind], outp, &o, &st);
    if (rc != KD_OK)
        return kd_cli_fail(rc);
    if (outp && strcmp(outp, "-"))
        kd_info("exported %" PRIu64 " lines (%" PRIu64 " records, %.1f MB) to '%s'", st.lines, st.records,
                (double)st.bytes / 1e6, outp);
    return 0;
}

/* ------------------------------------------------------------------------ */

static void show_usage(FILE *f)
{
    fprintf(f, "usage: distill data show DATASET ID [SAMPLE] [--db DB] [--max-chars N]\n\n"
               "Pretty-prints prompt ID with its lineage and every generation and verdict of it,\n"
               "or with SAMPLE the unit (ID, SAMPLE) only. With --db examples, example ID.\n\n"
               "options:\n"
               "      --db DB          prompts (default) or examples\n"
               "      --max-chars N    characters of each text shown (default 2000; 0 = all)\n"
               "  -h, --help           this help\n");
}

static void head_usage(FILE *f)
{
    fprintf(f, "usage: distill data head DATASET [-n N] [--db DB] [--max-chars N]\n\n"
               "Pretty-prints the first N records of a sub-database in key order.\n\n"
               "options:\n"
               "  -n, --count N        how many (default 5)\n"
               "      --db DB          prompts (default), generations, verdicts or examples\n"
               "      --max-chars N    characters of each text shown (default 500; 0 = all)\n"
               "  -h, --help           this help\n");
}

static int sub_show_head(int argc, char **argv, int head)
{
    enum { O_DB = 0x100, O_MAX };
    static const struct option lo[] = {{"db", required_argument, NULL, O_DB},
                                       {"max-chars", required_argument, NULL, O_MAX},
                                       {"count", required_argument, NULL, 'n'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    const char *cmd = head ? "data head" : "data show";
    kd_db db = KD_DB_PROMPTS;
    kd_show_opts so = {.max_chars = head ? 500 : 2000};
    uint64_t n = 5, v;
    int opt;
    while ((opt = getopt_long(argc, argv, head ? "n:h" : "h", lo, NULL)) != -1) {
        switch (opt) {
        case 'h': head ? head_usage(stdout) : show_usage(stdout); return 0;
        case O_DB:
            if (parse_db(cmd, optarg, &db))
                return 2;
            break;
        case O_MAX:
            if (!parse_size(optarg, &v))
                return kd_cli_usage_error(cmd, "--max-chars wants a count, got '%s'", optarg);
            so.max_chars = v;
            break;
        case 'n':
            if (!parse_size(optarg, &n))
                return kd_cli_usage_error(cmd, "-n wants a count, got '%s'", optarg);
            break;
        default: return kd_cli_usage_error(cmd, "bad option");
        }
    }
    int rc;
    if (head) {
        if (argc - optind != 1)
            return kd_cli_usage_error(cmd, "wants one DATASET");
        rc = kd_data_head(argv[optind], stdout, db, n, &so);
    } else {
        int nargs = argc - optind;
        uint64_t id, sample = 0;
        if (nargs < 2 || nargs > 3)
            return kd_cli_usage_error(cmd, "wants DATASET ID [SAMPLE]");
        if (!parse_size(argv[optind + 1], &id) || strpbrk(argv[optind + 1], "KkMmGg"))
            return kd_cli_usage_error(cmd, "ID wants a non-negative integer, got '%s'", argv[optind + 1]);
        if (nargs == 3 && (!parse_size(argv[optind + 2], &sample) || sample >= UINT32_MAX))
            return kd_cli_usage_error(cmd, "SAMPLE wants a non-negative integer, got '%s'", argv[optind + 2]);
        if (db != KD_DB_PROMPTS && db != KD_DB_EXAMPLES)
            return kd_cli_usage_error(cmd, "--db wants prompts or examples (a prompt shows its generations and "
                                           "verdicts)");
        rc = kd_data_show(argv[optind], stdout, db, id, nargs == 3, (uint32_t)sample, &so);
    }
    return rc == KD_OK ? 0 : kd_cli_fail(rc);
}

static void stats_usage(FILE *f)
{
    fprintf(f, "usage: distill data stats DATASET [--json]\n\n"
               "Counts per sub-database, per source (lineage) and per verdict and reason, and\n"
               "length histograms: characters of prompts, answers and generations, tokens of\n"
               "examples (power-of-two buckets, with min/mean/p50/p90/p99/max).\n\n"
               "options:\n"
               "      --json           one JSON object instead of the tables\n"
               "  -h, --help           this help\n");
}

static int sub_stats(int argc, char **argv)
{
    static const struct option lo[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int opt, json = 0;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (opt == 'h') {
            stats_usage(stdout);
            return 0;
        } else if (opt == 'j') {
            json = 1;
        } else {
            return kd_cli_usage_error("data stats", "bad option");
        }
    }
    if (argc - optind != 1)
        return kd_cli_usage_error("data stats", "wants one DATASET");
    int rc = kd_data_stats(argv[optind], stdout, json);
    return rc == KD_OK ? 0 : kd_cli_fail(rc);
}

static void merge_usage(FILE *f)
{
    fprintf(f, "usage: distill data merge OUT SHARD... [--fast]\n\n"
               "Merges shards (one per generation node) into OUT, created if needed. Records are\n"
               "copied as they are with their lineage. A unit (prompt id, sample index) or\n"
               "example id already present is kept and the later copy counted as a duplicate.\n"
               "Shards must agree on the text of a prompt id they share, else it is an error\n"
               "naming the prompt. Rerunning a killed merge completes it.\n\n"
               "options:\n"
               "      --fast           no fsync per batch, one sync at the end (see import --help)\n"
               "      --no-progress    no progress bar\n"
               "  -h, --help           this help\n");
}

static int sub_merge(int argc, char **argv)
{
    enum { O_FAST = 0x100, O_NOPROG };
    static const struct option lo[] = {{"fast", no_argument, NULL, O_FAST},
                                       {"no-progress", no_argument, NULL, O_NOPROG},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    kd_merge_opts o = {.progress = 1};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (opt == 'h') {
            merge_usage(stdout);
            return 0;
        } else if (opt == O_FAST) {
            o.store_flags |= KD_STORE_FAST;
        } else if (opt == O_NOPROG) {
            o.progress = 0;
        } else {
            return kd_cli_usage_error("data merge", "bad option");
        }
    }
    if (argc - optind < 2)
        return kd_cli_usage_error("data merge", "wants OUT and at least one SHARD");
    kd_merge_stats ms;
    int rc = kd_data_merge(argv[optind], (const char *const *)argv + optind + 1, argc - optind - 1, &o, &ms);
    if (rc != KD_OK)
        return kd_cli_fail(rc);
    for (int db = 0; db < KD_DB_COUNT; db++)
        if (ms.added[db] || ms.duplicates[db])
            kd_info("merge: %s: %" PRIu64 " added, %" PRIu64 " duplicates skipped", kd_db_name((kd_db)db),
                    ms.added[db], ms.duplicates[db]);
    kd_info("merge: %" PRIu64 " lineage entries added to '%s'", ms.lineages, argv[optind]);
    return 0;
}

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: distill data bench [--records N] [--tokens T] [--dir DIR] [--keep] [--threads N]\n\n"
               "Generates a MATH-like JSONL of N lines and imports it (durable, then --fast),\n"
               "reporting MB/s; writes N tokenized examples of T tokens and iterates them\n"
               "zero-copy three times, reading every token and mask bit, reporting examples/s.\n\n"
               "options:\n"
               "      --records N      JSONL lines and examples (default 200000)\n"
               "      --tokens T       tokens per example (default 256)\n"
               "      --dir DIR        scratch folder (default: a new one under $TMPDIR or /tmp)\n"
               "      --keep           keep the scratch folder\n"
               "      --threads N      import parser threads (default: online CPUs, at most 8)\n"
               "  -h, --help           this help\n");
}

static int sub_bench(int argc, char **argv)
{
    enum { O_REC = 0x100, O_TOK, O_DIR, O_KEEP, O_THR };
    static const struct option lo[] = {{"records", required_argument, NULL, O_REC},
                                       {"tokens", required_argument, NULL, O_TOK},
                                       {"dir", required_argument, NULL, O_DIR},
                                       {"keep", no_argument, NULL, O_KEEP},
                                       {"threads", required_argument, NULL, O_THR},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    kd_bench_opts o = {0};
    uint64_t v;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (opt) {
        case 'h': bench_usage(stdout); return 0;
        case O_REC:
        case O_TOK:
        case O_THR:
            if (!parse_size(optarg, &v) || v == 0 || v > UINT32_MAX || (opt == O_THR && v > 64))
                return kd_cli_usage_error("data bench", "wants a positive count, got '%s'", optarg);
            if (opt == O_REC)
                o.records = v;
            else if (opt == O_TOK)
                o.tokens = (uint32_t)v;
            else
                o.threads = (int)v;
            break;
        case O_DIR: o.dir = optarg; break;
        case O_KEEP: o.keep = 1; break;
        default: return kd_cli_usage_error("data bench", "bad option");
        }
    }
    if (optind != argc)
        return kd_cli_usage_error("data bench", "unexpected argument '%s'", argv[optind]);
    int rc = kd_data_bench(&o, stdout);
    return rc == KD_OK ? 0 : kd_cli_fail(rc);
}

/* ------------------------------------------------------------------------ */
/* Curation: flags come from the op's schema. */

static void flag_name_(char *buf, size_t cap, const char *key)
{
    snprintf(buf, cap, "%s", key);
    for (char *c = buf; *c; c++)
        if (*c == '_')
            *c = '-';
}

static void curate_op_usage(FILE *f, const kd_curate_op *op)
{
    char flag[64], left[96];
    int mix = !strcmp(op->name, "mix"); /* the one op that may take no IN: its sources are flags */
    fprintf(f, "usage: distill data %s %s [options]\n\n%s.\n", op->name, mix ? "[IN] OUT --sources DIR:WEIGHT..." : "IN OUT",
            op->summary);
    if (mix)
        fprintf(f, "Draws --total units; a source's share is proportional to its weight. IN, when\n"
                   "given, is one more source, with --input-weight.\n");
    fprintf(f, "Writes OUT.partial and renames it to OUT when done; a rerun with the same input\n"
               "and options is a no-op (\"already done\"); see docs/datasets.md, Curation.\n\noptions:\n");
    for (const kd_cfg_field *fl = op->schema->fields; fl->key; fl++) {
        flag_name_(flag, sizeof flag, fl->key);
        switch (fl->type) {
        case KD_CFG_T_BOOL: snprintf(left, sizeof left, "--%s, --no-%s", flag, flag); break;
        case KD_CFG_T_STRLIST: snprintf(left, sizeof left, "--%s V (repeatable)", flag); break;
        case KD_CFG_T_ENUM: snprintf(left, sizeof left, "--%s %s", flag, fl->choices); break;
        default: snprintf(left, sizeof left, "--%s V", flag); break;
        }
        fprintf(f, "      %-28s %s", left, fl->doc ? fl->doc : "");
        if (fl->def)
            fprintf(f, " (default: %s)", fl->def);
        fputc('\n', f);
    }
    fprintf(f, "      %-28s %s\n", "--fast", "no fsync per batch, one sync at the end (see import --help)");
    fprintf(f, "      %-28s %s\n", "--no-progress", "no progress bar");
    fprintf(f, "  -h, %-28s %s\n", "--help", "this help");
}

static int set_flag_(const kd_curate_op *op, void *cfg, const kd_cfg_field *fl, const char *val)
{
    char *base = (char *)cfg + fl->offset;
    if (fl->type == KD_CFG_T_STRING) { /* as given: no YAML parsing of an expression */
        char *c = strdup(val);
        if (!c)
            return kd_err(KD_E_NOMEM, "out of memory");
        free(*(char **)base);
        *(char **)base = c;
        return KD_OK;
    }
    if (fl->type == KD_CFG_T_STRLIST) {
        kd_cfg_strlist *l = (kd_cfg_strlist *)base;
        char **ni = realloc(l->items, (l->n + 1) * sizeof *ni);
        char *c = strdup(val);
        if (!ni || !c) {
            free(c);
            if (ni)
                l->items = ni;
            return kd_err(KD_E_NOMEM, "out of memory");
        }
        l->items = ni;
        l->items[l->n++] = c;
        return KD_OK;
    }
    size_t n = strlen(fl->key) + strlen(val) + 2;
    char *a = malloc(n);
    if (!a)
        return kd_err(KD_E_NOMEM, "out of memory");
    snprintf(a, n, "%s=%s", fl->key, val);
    int st = kd_cfg_set(op->schema, cfg, a);
    free(a);
    return st;
}

static int sub_curate_op(int argc, char **argv)
{
    const kd_curate_op *op = kd_curate_op_find(argv[0]);
    char cmd[64], flag[64];
    snprintf(cmd, sizeof cmd, "data %s", op->name);
    void *cfg = calloc(1, op->schema->size);
    if (!cfg)
        return kd_cli_fail(kd_err(KD_E_NOMEM, "out of memory"));
    int rc = kd_cfg_defaults(op->schema, cfg), code = 0;
    kd_curate_run *run = (kd_curate_run *)((char *)cfg + op->run_offset);
    run->progress = 1;
    const char *pos[2];
    int npos = 0;
    for (int i = 1; i < argc && rc == KD_OK && !code; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            curate_op_usage(stdout, op);
            kd_cfg_release(op->schema, cfg);
            free(cfg);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            if (npos == 2) {
                code = kd_cli_usage_error(cmd, "unexpected argument '%s'", a);
                break;
            }
            pos[npos++] = a;
            continue;
        }
        if (!strcmp(a, "--fast")) {
            run->store_flags |= KD_STORE_FAST;
            continue;
        }
        if (!strcmp(a, "--no-progress")) {
            run->progress = 0;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int negate = 0;
        const kd_cfg_field *fl = NULL;
        for (int pass = 0; pass < 2 && !fl; pass++) {
            const char *nm = name + (pass ? 3 : 0);
            size_t nl = nlen - (pass ? 3 : 0);
            if (pass && (nlen <= 3 || strncmp(name, "no-", 3) != 0))
                break;
            for (const kd_cfg_field *x = op->schema->fields; x->key; x++) {
                flag_name_(flag, sizeof flag, x->key);
                if (strlen(flag) == nl && !strncmp(flag, nm, nl) && (!pass || x->type == KD_CFG_T_BOOL)) {
                    fl = x;
                    negate = pass;
                }
            }
        }
        if (!fl) {
            code = kd_cli_usage_error(cmd, "unknown option '%.*s'", (int)nlen + 2, a);
            break;
        }
        const char *val;
        if (fl->type == KD_CFG_T_BOOL && !eq)
            val = negate ? "false" : "true";
        else if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            code = kd_cli_usage_error(cmd, "option '%s' wants a value", a);
            break;
        }
        rc = set_flag_(op, cfg, fl, val);
    }
    if (rc == KD_OK && !code && npos == 1 && !strcmp(op->name, "mix")) { /* mix OUT: sources only */
        pos[1] = pos[0];
        pos[0] = NULL;
        npos = 2;
    }
    if (rc == KD_OK && !code && npos != 2)
        code = kd_cli_usage_error(cmd, "wants IN and OUT datasets");
    kd_curate_report rep;
    if (rc == KD_OK && !code)
        rc = op->fn(pos[0], pos[1], cfg, &rep);
    if (rc == KD_OK && !code) {
        char line[512];
        kd_info("%s", kd_curate_report_line(&rep, line, sizeof line));
    }
    kd_cfg_release(op->schema, cfg);
    free(cfg);
    if (code)
        return code;
    return rc == KD_OK ? 0 : kd_cli_fail(rc);
}

static void curate_usage(FILE *f)
{
    fprintf(f, "usage: distill data curate SCRIPT.yaml [--set KEY=VALUE]... [--print-config] [--fast]\n\n"
               "Runs the script's steps in order. The YAML is\n"
               "  {input: DIR, output: DIR, steps: [{dedupe: {...}}, {filter: {where: ...}}, ...]}\n"
               "and each step's keys are the flags of 'distill data <step> --help'. Step N writes\n"
               "OUTPUT/steps/NN-<step>/, the last step OUTPUT/final/. Each step prints a one-line\n"
               "report; a rerun of a finished script does nothing. Examples: configs/curation/.\n\n"
               "options:\n"
               "      --set KEY=VALUE  override one key: output=DIR, steps.2.filter.where=...\n"
               "      --print-config   print the effective script as YAML and exit\n"
               "      --fast           no fsync per batch, one sync at the end of each step\n"
               "      --no-progress    no progress bars\n"
               "  -h, --help           this help\n");
}

static int sub_curate(int argc, char **argv)
{
    enum { O_FAST = 0x100, O_NOPROG };
    static const struct option lo[] = {{"set", required_argument, NULL, KD_OPT_SET},
                                       {"print-config", no_argument, NULL, KD_OPT_PRINT_CONFIG},
                                       {"fast", no_argument, NULL, O_FAST},
                                       {"no-progress", no_argument, NULL, O_NOPROG},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    kd_cli_config cc = {0};
    kd_curate_run run = {.progress = 1};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (opt == 'h') {
            curate_usage(stdout);
            free(cc.sets);
            return 0;
        } else if (opt == O_FAST) {
            run.store_flags |= KD_STORE_FAST;
        } else if (opt == O_NOPROG) {
            run.progress = 0;
        } else if (!kd_cli_config_opt(&cc, opt, optarg)) {
            free(cc.sets);
            return kd_cli_usage_error("data curate", "bad option");
        }
    }
    if (argc - optind != 1) {
        free(cc.sets);
        return kd_cli_usage_error("data curate", "wants one SCRIPT.yaml");
    }
    cc.path = argv[optind];
    kd_curate_script s = {0};
    int printed = 0;
    int rc = kd_cli_config_build(&cc, &kd_curate_script_schema, &s, &printed);
    if (rc == KD_OK && !printed)
        rc = kd_curate_script_run(&s, &run, NULL);
    kd_cfg_release(&kd_curate_script_schema, &s);
    free(cc.sets);
    return rc == KD_OK ? 0 : kd_cli_fail(rc);
}

static int sub_bench_dedupe(int argc, char **argv)
{
    static const struct option lo[] = {{"docs", required_argument, NULL, 'n'},
                                       {"threads", required_argument, NULL, 't'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    uint64_t docs = 1000000, threads = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (opt == 'h') {
            printf("usage: distill data bench-dedupe [--docs N] [--threads T]\n\n"
                   "Generates N documents of 60 words (10%% planted near duplicates of an earlier\n"
                   "document, one word changed) and dedupes them in memory with the default MinHash\n"
                   "parameters (5-grams, 128 permutations, 16 bands x 8 rows); prints docs/s, the\n"
                   "recall of the planted pairs and the false positives.\n\n"
                   "options:\n"
                   "      --docs N     documents (default 1M; K, M, G suffixes)\n"
                   "      --threads T  signature threads (default: online CPUs)\n"
                   "  -h, --help       this help\n");
            return 0;
        } else if (opt == 'n' || opt == 't') {
            uint64_t v;
            if (!parse_size(optarg, &v) || v == 0 || (opt == 't' && v > 64))
                return kd_cli_usage_error("data bench-dedupe", "wants a positive count, got '%s'", optarg);
            *(opt == 'n' ? &docs : &threads) = v;
        } else {
            return kd_cli_usage_error("data bench-dedupe", "bad option");
        }
    }
    int rc = kd_dedupe_bench(docs, (int)threads, stdout);
    return rc == KD_OK ? 0 : kd_cli_fail(rc);
}

/* ------------------------------------------------------------------------ */

static int sub_show(int argc, char **argv) { return sub_show_head(argc, argv, 0); }
static int sub_head(int argc, char **argv) { return sub_show_head(argc, argv, 1); }

int cmd_data(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } subs[] = {{"import", sub_import}, {"export", sub_export}, {"show", sub_show}, {"head", sub_head},
                {"stats", sub_stats},   {"merge", sub_merge},   {"bench", sub_bench},
                {"curate", sub_curate}, {"bench-dedupe", sub_bench_dedupe}, {"problems", cmd_data_problems}};
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    if (kd_curate_op_find(argv[1]))
        return sub_curate_op(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) {
            optind = 1; /* the subcommand parses from its own argv[0] */
            return subs[i].fn(argc - 1, argv + 1);
        }
    return kd_cli_usage_error("data", "'%s' is not a data subcommand (import, export, show, head, stats, merge, bench, problems, filter, dedupe, decontaminate, split, sample, select, tokenize, mix, curate, bench-dedupe)",
                              argv[1]);
}
