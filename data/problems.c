/* problems.c - arithmetic word problems, their R1-format solutions, and the
 * three disjoint splits (see problems.h for the contract).
 *
 * A problem is drawn in one pass: the start amount, then events until the
 * steps are spent, each event chosen among those that fit the running amount
 * (a loss leaves at least 1, a gain or product stays under the cap, a
 * division is exact). The story sentence and the solution lines are written
 * as each event is drawn, so the two cannot disagree.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "core/status.h"
#include "core/util.h"
#include "jsonl.h"
#include "problems.h"

#define MAX_OPERAND_LIMIT 100000
#define MAX_FACTOR_LIMIT 12
#define MAX_COUNT 10000000ull
/* Draws in a row that may find nothing new for a split before it is declared
 * too small for its count (each draw is a few microseconds). */
#define MAX_MISSES 200000

void kd_problems_cfg_init(kd_problems_cfg *c)
{
    *c = (kd_problems_cfg){.seed = 1, .steps_min = 2, .steps_max = 4, .max_operand = 50, .max_factor = 9,
                           .n_train = 2000, .n_gen = 2000, .n_heldout = 500};
}

int kd_problems_cfg_check(const kd_problems_cfg *c)
{
    if (c->seed > (uint64_t)INT64_MAX)
        return kd_err(KD_E_CONFIG, "problems: seed %" PRIu64 " is out of range [0, 2^63)", c->seed);
    if (c->steps_min < KD_PROBLEM_STEPS_MIN || c->steps_min > KD_PROBLEM_STEPS_MAX)
        return kd_err(KD_E_CONFIG, "problems: steps_min %d is out of range [%d, %d]", c->steps_min,
                      KD_PROBLEM_STEPS_MIN, KD_PROBLEM_STEPS_MAX);
    if (c->steps_max < c->steps_min || c->steps_max > KD_PROBLEM_STEPS_MAX)
        return kd_err(KD_E_CONFIG, "problems: steps_max %d is out of range [%d, %d]", c->steps_max, c->steps_min,
                      KD_PROBLEM_STEPS_MAX);
    if (c->max_operand < 5 || c->max_operand > MAX_OPERAND_LIMIT)
        return kd_err(KD_E_CONFIG, "problems: max_operand %d is out of range [5, %d]", c->max_operand,
                      MAX_OPERAND_LIMIT);
    if (c->max_factor < 2 || c->max_factor > MAX_FACTOR_LIMIT)
        return kd_err(KD_E_CONFIG, "problems: max_factor %d is out of range [2, %d]", c->max_factor,
                      MAX_FACTOR_LIMIT);
    const uint64_t n[KD_SPLIT_COUNT] = {c->n_train, c->n_gen, c->n_heldout};
    for (int i = 0; i < KD_SPLIT_COUNT; i++)
        if (n[i] < 1 || n[i] > MAX_COUNT)
            return kd_err(KD_E_CONFIG, "problems: n_%s %" PRIu64 " is out of range [1, %llu]", kd_split_name(i), n[i],
                          MAX_COUNT);
    return KD_OK;
}

const char *kd_split_name(int split)
{
    static const char *const names[KD_SPLIT_COUNT] = {"train", "gen", "heldout"};
    assert(split >= 0 && split < KD_SPLIT_COUNT);
    return names[split];
}

/* ---- words ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int she;
} people[] = {{"Mia", 1}, {"Leo", 0}, {"Ava", 1}, {"Noah", 0}, {"Zoe", 1},
              {"Omar", 0}, {"Lena", 1}, {"Ravi", 0}, {"Emma", 1}, {"Sam", 0}};

static const struct {
    const char *obj; /* what is counted */
    const char *box; /* what holds a group of them */
} things[] = {{"apples", "bags"},   {"marbles", "jars"},   {"stickers", "sheets"},   {"cookies", "tins"},
              {"pencils", "packs"}, {"shells", "buckets"}, {"stamps", "envelopes"}, {"beads", "strings"},
              {"books", "boxes"},   {"cards", "decks"}};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *const connectors[] = {"", "Then ", "Next, ", "After that, ", "Later, "};

/* ---- text buffers ----------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t cap, n;
} sbuf;

/* Append; the buffers are sized for the longest problem (problems.h), so an
 * overflow is a bug here, not bad input. */
__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    assert(k >= 0 && (size_t)k < b->cap - b->n);
    b->n += (size_t)k;
}

/* ---- the signature: a hash of the math alone ---------------------------------------- */

static uint64_t mix64(uint64_t z) /* splitmix64's finalizer */
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t sig_add(uint64_t h, int64_t v)
{
    return mix64(h ^ ((uint64_t)v + 0x9E3779B97F4A7C15ull));
}

/* ---- events ----------------------------------------------------------------------- */

enum { EV_ADD, EV_SUB, EV_GADD, EV_GSUB, EV_MUL, EV_DIV, EV_COUNT };
static const int ev_cost[EV_COUNT] = {1, 1, 2, 2, 1, 1};
static const int ev_weight[EV_COUNT] = {3, 3, 2, 2, 1, 1}; /* mostly + and -, some grouping, a little * and / */

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* A uniform integer in [lo, hi]; lo <= hi. */
static int64_t draw(kd_rng *r, int64_t lo, int64_t hi)
{
    assert(lo <= hi);
    return lo + (int64_t)kd_rng_below(r, (uint64_t)(hi - lo + 1));
}

typedef struct {
    const kd_problems_cfg *c;
    int64_t cap; /* the running amount stays in [1, cap] */
    int64_t x;   /* the running amount */
    int she;
    const char *obj, *box;
    sbuf text, cot;
} gen;

/* Divisors d of x in [2, max_factor] with x / d >= 2, into ds; their count. */
static int divisors(const gen *g, int64_t ds[MAX_FACTOR_LIMIT])
{
    int n = 0;
    for (int64_t d = 2; d <= g->c->max_factor; d++)
        if (g->x % d == 0 && g->x / d >= 2)
            ds[n++] = d;
    return n;
}

static int fits(const gen *g, int ev)
{
    int64_t room = g->cap - g->x, ds[MAX_FACTOR_LIMIT];
    switch (ev) {
    case EV_ADD: return room >= 2;
    case EV_SUB: return g->x - 1 >= 2;
    case EV_GADD: return room >= 4;
    case EV_GSUB: return g->x - 1 >= 4;
    case EV_MUL: return min64(min64(4, g->c->max_factor), g->cap / g->x) >= 2;
    case EV_DIV: return divisors(g, ds) > 0;
    }
    return 0;
}

/* Append one story sentence: the connector (none for the first event), then
 * the body with its first letter capitalized when it opens the sentence. */
__attribute__((format(printf, 4, 5))) static void sentence(gen *g, kd_rng *r, int first, const char *fmt, ...)
{
    const char *conn = first ? "" : connectors[kd_rng_below(r, COUNT_OF(connectors))];
    char body[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(body, sizeof body, fmt, ap);
    (void)k;
    va_end(ap);
    assert(k > 0 && (size_t)k < sizeof body);
    if (!conn[0] && body[0] >= 'a' && body[0] <= 'z')
        body[0] = (char)(body[0] - 'a' + 'A');
    sb_printf(&g->text, " %s%s", conn, body);
    if (g->c->restate) { /* the solution quotes the event before working it out */
        if (body[0] >= 'a' && body[0] <= 'z')
            body[0] = (char)(body[0] - 'a' + 'A');
        sb_printf(&g->cot, "%s\n", body);
    }
}

/* Draw the parameters of event `ev` (which fits), tell it, solve it, and
 * fold it into the signature. */
static void event(gen *g, kd_rng *r, int ev, int first, uint64_t *sig)
{
    const char *p = g->she ? "she" : "he", *obj = g->she ? "her" : "him", *pos = g->she ? "her" : "his";
    const int64_t x = g->x, room = g->cap - x, mo = g->c->max_operand, mf = g->c->max_factor;
    int64_t a = 0, b = 0, y = x;
    int v;
    switch (ev) {
    case EV_ADD:
        a = draw(r, 2, min64(mo, room));
        y = x + a;
        v = (int)kd_rng_below(r, 4);
        if (v == 0)
            sentence(g, r, first, "%s finds %" PRId64 " more %s.", p, a, g->obj);
        else if (v == 1)
            sentence(g, r, first, "a friend gives %s %" PRId64 " more %s.", obj, a, g->obj);
        else if (v == 2)
            sentence(g, r, first, "%s gets %" PRId64 " more %s.", p, a, g->obj);
        else
            sentence(g, r, first, "%s buys %" PRId64 " more %s.", p, a, g->obj);
        sb_printf(&g->cot, "%" PRId64 " + %" PRId64 " = %" PRId64 ".\n", x, a, y);
        break;
    case EV_SUB:
        a = draw(r, 2, min64(mo, x - 1));
        y = x - a;
        v = (int)kd_rng_below(r, 4);
        if (v == 0)
            sentence(g, r, first, "%s gives away %" PRId64 " %s.", p, a, g->obj);
        else if (v == 1)
            sentence(g, r, first, "%s loses %" PRId64 " %s.", p, a, g->obj);
        else if (v == 2)
            sentence(g, r, first, "%s sells %" PRId64 " %s.", p, a, g->obj);
        else
            sentence(g, r, first, "%s gives %" PRId64 " %s to a friend.", p, a, g->obj);
        sb_printf(&g->cot, "%" PRId64 " - %" PRId64 " = %" PRId64 ".\n", x, a, y);
        break;
    case EV_GADD:
    case EV_GSUB: {
        int64_t lim = ev == EV_GADD ? room : x - 1; /* the product must fit */
        a = draw(r, 2, min64(mf, lim / 2));
        b = draw(r, 2, min64(mf, lim / a));
        y = ev == EV_GADD ? x + a * b : x - a * b;
        v = (int)kd_rng_below(r, 3);
        if (ev == EV_GADD && v == 0)
            sentence(g, r, first, "%s buys %" PRId64 " %s with %" PRId64 " %s each.", p, a, g->box, b, g->obj);
        else if (ev == EV_GADD && v == 1)
            sentence(g, r, first, "%s gets %" PRId64 " %s of %" PRId64 " %s.", p, a, g->box, b, g->obj);
        else if (ev == EV_GADD)
            sentence(g, r, first, "%s receives %" PRId64 " %s, each holding %" PRId64 " %s.", p, a, g->box, b,
                     g->obj);
        else if (v == 0)
            sentence(g, r, first, "%s gives %" PRId64 " friends %" PRId64 " %s each.", p, a, b, g->obj);
        else if (v == 1)
            sentence(g, r, first, "%s fills %" PRId64 " %s with %" PRId64 " %s each and gives them away.", p, a,
                     g->box, b, g->obj);
        else
            sentence(g, r, first, "%s sells %" PRId64 " %s of %" PRId64 " %s.", p, a, g->box, b, g->obj);
        if (ev == EV_GSUB && v == 0)
            sb_printf(&g->cot, "%" PRId64 " friends with %" PRId64 " each is %" PRId64 " * %" PRId64 " = %" PRId64
                      ".\n", a, b, a, b, a * b);
        else
            sb_printf(&g->cot, "%" PRId64 " %s of %" PRId64 " is %" PRId64 " * %" PRId64 " = %" PRId64 ".\n", a,
                      g->box, b, a, b, a * b);
        sb_printf(&g->cot, "%" PRId64 " %c %" PRId64 " = %" PRId64 ".\n", x, ev == EV_GADD ? '+' : '-', a * b, y);
        break;
    }
    case EV_MUL: {
        static const char *const verb[] = {"", "", "doubles", "triples", "quadruples"};
        static const char *const times[] = {"", "", "twice", "three times", "four times"};
        a = draw(r, 2, min64(min64(4, mf), g->cap / x));
        y = x * a;
        if (kd_rng_below(r, 2) == 0)
            sentence(g, r, first, "the number of %s %s has %s.", g->obj, p, verb[a]);
        else
            sentence(g, r, first, "%s ends up with %s as many %s as before.", p, times[a], g->obj);
        sb_printf(&g->cot, "%" PRId64 " * %" PRId64 " = %" PRId64 ".\n", x, a, y);
        break;
    }
    case EV_DIV: {
        int64_t ds[MAX_FACTOR_LIMIT];
        int n = divisors(g, ds);
        a = ds[kd_rng_below(r, (uint64_t)n)];
        y = x / a;
        if (kd_rng_below(r, 2) == 0)
            sentence(g, r, first, "%s splits %s %s into %" PRId64 " equal piles and keeps one pile.", p, pos, g->obj,
                     a);
        else
            sentence(g, r, first, "%s packs %s %s equally into %" PRId64 " %s and keeps one of them.", p, pos, g->obj,
                     a, g->box);
        sb_printf(&g->cot, "%" PRId64 " / %" PRId64 " = %" PRId64 ".\n", x, a, y);
        break;
    }
    default: assert(0);
    }
    assert(y >= 1 && y <= g->cap);
    g->x = y;
    *sig = sig_add(sig_add(sig_add(*sig, ev), a), b);
}

void kd_problem_make(const kd_problems_cfg *c, int steps, kd_rng *r, kd_problem *out)
{
    assert(kd_problems_cfg_check(c) == KD_OK);
    assert(steps >= KD_PROBLEM_STEPS_MIN && steps <= KD_PROBLEM_STEPS_MAX);
    memset(out, 0, sizeof *out); /* the whole struct is deterministic, padding and tails included */
    int who = (int)kd_rng_below(r, COUNT_OF(people)), what = (int)kd_rng_below(r, COUNT_OF(things));
    gen g = {.c = c,
             .cap = (int64_t)c->max_operand * c->max_factor,
             .x = draw(r, 2, c->max_operand),
             .she = people[who].she,
             .obj = things[what].obj,
             .box = things[what].box,
             .text = {out->text, sizeof out->text, 0},
             .cot = {out->cot, sizeof out->cot, 0}};
    const char *name = people[who].name;
    uint64_t sig = sig_add(sig_add(0, steps), g.x);

    static const char *const opening[] = {"has", "starts with", "collects"};
    sb_printf(&g.text, "%s %s %" PRId64 " %s.", name, opening[kd_rng_below(r, COUNT_OF(opening))], g.x, g.obj);
    sb_printf(&g.cot, "<think>\nStart with %" PRId64 " %s.\n", g.x, g.obj);

    for (int left = steps, first = 1; left > 0; first = 0) {
        int total = 0, ev = -1;
        for (int e = 0; e < EV_COUNT; e++)
            if (ev_cost[e] <= left && fits(&g, e))
                total += ev_weight[e];
        assert(total > 0); /* + or - always fits: the cap is at least 10 */
        int pick = (int)kd_rng_below(r, (uint64_t)total);
        for (int e = 0; e < EV_COUNT && ev < 0; e++)
            if (ev_cost[e] <= left && fits(&g, e) && (pick -= ev_weight[e]) < 0)
                ev = e;
        event(&g, r, ev, first, &sig);
        left -= ev_cost[ev];
    }

    static const char *const question[] = {"How many %s does %s have now?", "How many %s does %s have in the end?",
                                           "How many %s does %s end up with?"};
    sb_printf(&g.text, " ");
    int q = (int)kd_rng_below(r, COUNT_OF(question));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    sb_printf(&g.text, question[q], g.obj, name);
#pragma GCC diagnostic pop
    sb_printf(&g.cot, "</think>\n\nThe answer is \\boxed{%" PRId64 "}.", g.x);

    out->steps = steps;
    out->answer = g.x;
    out->signature = sig ? sig : 1; /* 0 marks an empty slot in kd_problems_each's set */
    snprintf(out->source, sizeof out->source, "arith-%dstep", steps);
}

int kd_problem_split(const kd_problem *p)
{
    return (int)((p->signature >> 32) % KD_SPLIT_COUNT); /* the high half: the set below indexes by the low */
}

/* ---- splits ----------------------------------------------------------------------- */

int kd_problems_each(const kd_problems_cfg *c, int split, int (*fn)(const kd_problem *p, void *ctx), void *ctx)
{
    assert(split >= 0 && split < KD_SPLIT_COUNT && fn);
    KD_TRY(kd_problems_cfg_check(c));
    const uint64_t n = split == KD_SPLIT_TRAIN ? c->n_train : split == KD_SPLIT_GEN ? c->n_gen : c->n_heldout;
    size_t cap = 64;
    while (cap < 2 * n)
        cap *= 2;
    uint64_t *seen = calloc(cap, sizeof *seen); /* signatures kept so far; open addressing, 0 = empty */
    kd_problem *p = malloc(sizeof *p);
    if (!seen || !p) {
        free(seen);
        free(p);
        return kd_err(KD_E_NOMEM, "problems: %s split of %" PRIu64, kd_split_name(split), n);
    }
    kd_rng r;
    kd_rng_seed(&r, mix64(c->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(split + 1))));
    const int nsteps = c->steps_max - c->steps_min + 1;
    int st = KD_OK;
    for (uint64_t kept = 0, misses = 0; kept < n && st == KD_OK;) {
        int steps = c->steps_min + (int)(kept % (uint64_t)nsteps);
        kd_problem_make(c, steps, &r, p);
        int fresh = 0;
        if (kd_problem_split(p) == split) {
            size_t i = p->signature & (cap - 1);
            while (seen[i] && seen[i] != p->signature)
                i = (i + 1) & (cap - 1);
            if (!seen[i]) {
                seen[i] = p->signature;
                fresh = 1;
            }
        }
        if (!fresh) {
            if (++misses >= MAX_MISSES)
                st = kd_err(KD_E_RANGE,
                            "problems: found only %" PRIu64 " of %" PRIu64 " distinct %s problems (%d steps, "
                            "max_operand %d, max_factor %d): raise the ranges or lower n_%s",
                            kept, n, kd_split_name(split), steps, c->max_operand, c->max_factor,
                            kd_split_name(split));
            continue;
        }
        misses = 0;
        kept++;
        st = fn(p, ctx);
    }
    free(seen);
    free(p);
    return st;
}

/* ---- files ------------------------------------------------------------------------ */

static const char *const file_names[KD_SPLIT_COUNT] = {"train_chats.jsonl", "gen_prompts.jsonl",
                                                       "heldout_prompts.jsonl"};

typedef struct {
    FILE *f;
    int split;
    const char *path;
} writer;

static int write_line(const kd_problem *p, void *ctx)
{
    writer *w = ctx;
    char answer[24];
    snprintf(answer, sizeof answer, "%" PRId64, p->answer);
    json_t *o;
    if (w->split == KD_SPLIT_TRAIN)
        o = json_pack("{s:[{s:s, s:s}, {s:s, s:s}], s:s, s:s}", "messages", "role", "user", "content", p->text,
                      "role", "assistant", "content", p->cot, "answer", answer, "source", p->source);
    else
        o = json_pack("{s:s, s:s, s:s}", "problem", p->text, "answer", answer, "source", p->source);
    if (!o)
        return kd_err(KD_E_NOMEM, "problems: a JSON line for '%s'", w->path);
    int bad = json_dumpf(o, w->f, JSON_COMPACT) != 0 || fputc('\n', w->f) == EOF;
    json_decref(o);
    return bad ? kd_err(KD_E_IO, "cannot write '%s': %s", w->path, strerror(errno)) : KD_OK;
}

/* 1 when the files at a and b hold the same bytes; 0 when they differ or b is
 * missing. */
static int same_content(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    char ba[8192], bb[8192];
    while (same) {
        size_t na = fread(ba, 1, sizeof ba, fa), nb = fread(bb, 1, sizeof bb, fb);
        if (na != nb || memcmp(ba, bb, na) != 0)
            same = 0;
        else if (na == 0)
            break;
    }
    if (same && (ferror(fa) || ferror(fb)))
        same = 0;
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

/* Write one split to path through a temporary file; keep an identical old file. */
static int write_split(const kd_problems_cfg *c, int split, const char *path)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return kd_err(KD_E_RANGE, "problems: path '%s' is too long", path);
    writer w = {fopen(tmp, "w"), split, path};
    if (!w.f)
        return kd_err(KD_E_IO, "cannot create '%s': %s", tmp, strerror(errno));
    int st = kd_problems_each(c, split, write_line, &w);
    if (st == KD_OK && (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0))
        st = kd_err(KD_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
    if (fclose(w.f) != 0 && st == KD_OK)
        st = kd_err(KD_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
    if (st == KD_OK && same_content(tmp, path)) {
        unlink(tmp);
        return KD_OK;
    }
    if (st == KD_OK && rename(tmp, path) != 0)
        st = kd_err(KD_E_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (st != KD_OK)
        unlink(tmp);
    return st;
}

int kd_problems_write(const kd_problems_cfg *c, const char *dir)
{
    KD_TRY(kd_problems_cfg_check(c));
    KD_TRY(kd_mkdirs(dir));
    for (int s = 0; s < KD_SPLIT_COUNT; s++) {
        char path[4096];
        KD_TRY(kd_path_join(path, sizeof path, dir, file_names[s]));
        KD_TRY(write_split(c, s, path));
    }
    return KD_OK;
}

int kd_problems_import(const kd_problems_cfg *c, const char *dir, int progress)
{
    KD_TRY(kd_problems_write(c, dir));
    static const char *const ds_names[KD_SPLIT_COUNT] = {"arith-train", "arith-gen", "arith-heldout"};
    for (int s = 0; s < KD_SPLIT_COUNT; s++) {
        char file[4096], ds[4096];
        KD_TRY(kd_path_join(file, sizeof file, dir, file_names[s]));
        KD_TRY(kd_path_join(ds, sizeof ds, dir, kd_split_name(s)));
        kd_import_opts o;
        kd_import_opts_init(&o);
        o.kind = s == KD_SPLIT_TRAIN ? KD_KIND_CHATS : KD_KIND_PROMPTS;
        o.answer_field = "answer"; /* chats map no answer unless told */
        o.seed = (int64_t)c->seed;
        o.name = ds_names[s];
        o.progress = progress;
        int st = kd_jsonl_import(ds, file, &o, NULL);
        if (st != KD_OK)
            return kd_err_wrap(st, "problems: importing '%s'", ds);
    }
    return KD_OK;
}
