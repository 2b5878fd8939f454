/* plots.c - the pipeline report's plots, drawn by gnuplot (see run.h).
 *
 * For each plot the runner writes its data (OUTPUT/plots/NAME.dat) and a
 * gnuplot script (NAME.gp), then runs gnuplot on the script (posix_spawnp,
 * no shell) to make NAME.svg. Without gnuplot the data and scripts stay and a
 * warning says so. The plots: training loss of every sft/cold_start stage,
 * acceptance by reason of the reject stages, completion lengths of accepted
 * versus rejected samples, pass@1 of every eval stage. */
#include "pipeline/plots.h"

#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/log.h"
#include "core/status.h"
#include "core/util.h"
#include "data/curate.h"
#include "data/store.h"
#include "pipeline/eval.h"
#include "rejection/reject.h"
#include "sft/sft.h"

extern char **environ;

/* Run gnuplot on `script`; 0 when the SVG was drawn. */
static int gnuplot_(const char *script)
{
    pid_t pid;
    char *argv[] = {"gnuplot", (char *)script, NULL};
    if (posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ) != 0)
        return -1;
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static FILE *open_(const char *dir, const char *name, const char *ext)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s.%s", dir, name, ext);
    return fopen(p, "w");
}

/* The script header shared by every plot. */
static void head_(FILE *g, const char *dir, const char *name, const char *title)
{
    fprintf(g, "set terminal svg size 720,420 dynamic background rgb 'white'\n"
               "set output '%s/%s.svg'\nset title \"%s\"\nset grid\nset key outside right\n",
            dir, name, title);
}

/* Training loss: one line per sft stage (its metrics.jsonl). */
static int loss_(const char *dir, const kd_pipeline_config *c)
{
    FILE *d = open_(dir, "loss", "dat"), *g = open_(dir, "loss", "gp");
    if (!d || !g) {
        if (d)
            fclose(d);
        if (g)
            fclose(g);
        return 0;
    }
    int n = 0;
    head_(g, dir, "loss", "training loss");
    fprintf(g, "set xlabel 'optimizer step'\nset ylabel 'loss'\nplot ");
    for (size_t i = 0; i < c->stages.n; i++) {
        const kd_cfg_step *s = &c->stages.items[i];
        if (strcmp(kd_pipeline_kind_name(s->kind), "sft") && strcmp(kd_pipeline_kind_name(s->kind), "cold_start"))
            continue;
        const kd_sft_config *sc = s->cfg;
        char p[1200];
        snprintf(p, sizeof p, "%s/metrics.jsonl", sc->output.dir);
        FILE *m = fopen(p, "r");
        if (!m)
            continue;
        fprintf(d, "# stage %zu %s\n", i + 1, kd_pipeline_kind_name(s->kind));
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, m) > 0) {
            json_t *j = json_loads(line, 0, NULL);
            json_t *st = json_object_get(j, "step"), *lo = json_object_get(j, "loss");
            if (json_is_integer(st) && json_is_number(lo) && !json_object_get(j, "eval_loss"))
                fprintf(d, "%lld %.6g\n", (long long)json_integer_value(st), json_number_value(lo));
            json_decref(j);
        }
        free(line);
        fclose(m);
        fprintf(d, "\n\n");
        fprintf(g, "%s'%s/loss.dat' index %d with lines lw 2 title 'stage %zu (%s)'", n ? ", " : "", dir, n,
                i + 1, kd_pipeline_kind_name(s->kind));
        n++;
    }
    fprintf(g, "\n");
    fclose(d);
    fclose(g);
    return n;
}

/* Acceptance by reason: the summaries of the reject stages in the state. */
static int reasons_(const char *dir, json_t *state)
{
    FILE *d = open_(dir, "acceptance", "dat"), *g = open_(dir, "acceptance", "gp");
    int n = 0;
    json_t *a = json_object_get(state, "stages");
    for (size_t i = 0; d && g && i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i), *by = json_object_get(json_object_get(e, "summary"), "by_reason");
        if (strcmp(json_string_value(json_object_get(e, "kind")) ?: "", "reject") || !json_is_object(by))
            continue;
        const char *k;
        json_t *v;
        json_object_foreach(by, k, v) fprintf(d, "\"%s\" %lld\n", k, (long long)json_integer_value(v));
        n++;
        break; /* the first reject stage */
    }
    if (g) {
        head_(g, dir, "acceptance", "samples by verdict reason");
        fprintf(g, "set style fill solid 0.8\nset boxwidth 0.7\nset xtics rotate by -30\nunset key\n"
                   "set ylabel 'samples'\nplot '%s/acceptance.dat' using 2:xtic(1) with boxes\n",
                dir);
    }
    if (d)
        fclose(d);
    if (g)
        fclose(g);
    return n;
}

/* Completion lengths (tokens, or characters when not recorded) of accepted
 * and rejected samples, from the first reject stage's dataset. */
static int lengths_(const char *dir, const kd_pipeline_config *c)
{
    const kd_reject_config *rc = NULL;
    for (size_t i = 0; i < c->stages.n && !rc; i++)
        if (!strcmp(kd_pipeline_kind_name(c->stages.items[i].kind), "reject"))
            rc = c->stages.items[i].cfg;
    if (!rc)
        return 0;
    kd_store *s = NULL;
    if (kd_store_open(rc->output ? rc->output : rc->input, KD_STORE_RDONLY, &s) != KD_OK) {
        kd_err_clear();
        return 0;
    }
    enum { NB = 20 };
    double *len = NULL;
    int *acc = NULL;
    size_t n = 0, cap = 0;
    kd_store_read *r = NULL;
    kd_store_cursor *cur = NULL;
    kd_record g, v;
    if (kd_store_read_begin(s, &r) == KD_OK && kd_store_cursor_open(r, KD_DB_GENERATIONS, &cur) == KD_OK) {
        while (kd_store_cursor_next(cur, &g) == 1) {
            if (kd_store_get(r, KD_DB_VERDICTS, g.id, g.sample, &v) != KD_OK)
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                double *nl = realloc(len, cap * sizeof *nl);
                int *na = nl ? realloc(acc, cap * sizeof *na) : NULL;
                if (nl)
                    len = nl;
                if (!na)
                    break;
                acc = na;
            }
            len[n] = g.completion_tokens ? (double)g.completion_tokens : (double)g.text.len;
            acc[n++] = v.accepted;
        }
    }
    kd_err_clear();
    kd_store_cursor_close(cur);
    if (r)
        kd_store_read_end(r);
    kd_store_close(s);
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        lo = len[i] < lo ? len[i] : lo;
        hi = len[i] > hi ? len[i] : hi;
    }
    int h[2][NB] = {{0}};
    const double w = n && hi > lo ? (hi - lo) / NB : 1.0;
    for (size_t i = 0; i < n; i++) {
        int b = (int)((len[i] - lo) / w);
        h[acc[i] != 0][b < NB ? b : NB - 1]++;
    }
    free(len);
    free(acc);
    if (!n)
        return 0;
    FILE *d = open_(dir, "lengths", "dat"), *gp = open_(dir, "lengths", "gp");
    if (d) {
        fprintf(d, "# bin_start accepted rejected\n");
        for (int b = 0; b < NB; b++)
            fprintf(d, "%.1f %d %d\n", lo + b * w, h[1][b], h[0][b]);
        fclose(d);
    }
    if (gp) {
        head_(gp, dir, "lengths", "completion length: accepted vs rejected");
        fprintf(gp, "set style data histograms\nset style histogram clustered\nset style fill solid 0.7\n"
                    "set xlabel 'completion length (bin start)'\nset ylabel 'samples'\nset xtics rotate by -45\n"
                    "plot '%s/lengths.dat' using 2:xtic(1) title 'accepted', '' using 3 title 'rejected'\n",
                dir);
        fclose(gp);
    }
    return 1;
}

/* pass@1 of every eval stage, labelled by kd_eval_label. */
static int pass1_(const char *dir, const kd_pipeline_config *c, json_t *state)
{
    FILE *d = open_(dir, "pass1", "dat"), *g = open_(dir, "pass1", "gp");
    int n = 0;
    json_t *a = json_object_get(state, "stages");
    for (size_t i = 0; d && i < c->stages.n && i < json_array_size(a); i++) {
        if (strcmp(kd_pipeline_kind_name(c->stages.items[i].kind), "eval"))
            continue;
        const kd_eval_config *ec = c->stages.items[i].cfg;
        json_t *p = json_object_get(json_object_get(json_array_get(a, i), "summary"), "pass1");
        if (!json_is_number(p))
            continue;
        char label[256];
        fprintf(d, "\"%s\" %.4f\n", kd_eval_label(ec, label, sizeof label), json_number_value(p));
        n++;
    }
    if (g) {
        head_(g, dir, "pass1", "pass@1 on the held-out prompts");
        fprintf(g, "set style fill solid 0.8\nset boxwidth 0.6\nset yrange [0:1]\nunset key\nset ylabel 'pass@1'\n"
                   "plot '%s/pass1.dat' using 2:xtic(1) with boxes\n",
                dir);
    }
    if (d)
        fclose(d);
    if (g)
        fclose(g);
    return n;
}

int kd_pipeline_plots(const kd_pipeline_config *c, json_t *state, json_t **drawn)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/plots", c->output);
    KD_TRY(kd_mkdirs(dir));
    *drawn = json_array();
    const char *names[4] = {"loss", "acceptance", "lengths", "pass1"};
    const int have[4] = {loss_(dir, c), reasons_(dir, state), lengths_(dir, c), pass1_(dir, c, state)};
    int missing = 0;
    for (int i = 0; i < 4; i++) {
        if (!have[i])
            continue;
        char gp[1200];
        snprintf(gp, sizeof gp, "%s/%s.gp", dir, names[i]);
        if (gnuplot_(gp) == 0)
            json_array_append_new(*drawn, json_sprintf("plots/%s.svg", names[i]));
        else
            missing++;
    }
    if (missing)
        kd_warn("run: %d plot(s) not drawn (is gnuplot installed? scripts/setup.sh installs gnuplot-nox); their "
                "data and scripts are in %s",
                missing, dir);
    return KD_OK;
}
