/* log.c - logging and the progress bar. See log.h. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"
#include "status.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int level_set;
static kd_log_level cur_level = KD_LOG_INFO;

static const char *level_names[] = {"error", "warning", "info", "debug"};
static char tag_[64];

void kd_log_set_tag(const char *tag) { snprintf(tag_, sizeof tag_, "%s", tag ? tag : ""); }

int kd_log_parse_level(const char *s, kd_log_level *out)
{
    for (int i = 0; i <= KD_LOG_DEBUG; i++)
        if (s && strcasecmp(s, level_names[i]) == 0) {
            *out = (kd_log_level)i;
            return KD_OK;
        }
    if (s && strcasecmp(s, "warn") == 0) {
        *out = KD_LOG_WARNING;
        return KD_OK;
    }
    return kd_err(KD_E_USAGE, "unknown log level '%s' (expected error, warning, info or debug)",
                  s ? s : "");
}

void kd_log_set_level(kd_log_level level)
{
    cur_level = level;
    level_set = 1;
}

kd_log_level kd_log_get_level(void)
{
    if (!level_set) {
        kd_log_level l = KD_LOG_INFO;
        const char *env = getenv("DISTILL_LOG");
        if (env && kd_log_parse_level(env, &l) == KD_OK)
            cur_level = l;
        level_set = 1;
    }
    return cur_level;
}

void kd_log(kd_log_level level, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    if (level > kd_log_get_level())
        return;
    int n = snprintf(line, sizeof line, "%s: %s%s", level_names[level], tag_, tag_[0] ? ": " : "");
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    /* one write per line so lines from threads do not interleave */
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}

double kd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_hms(char *buf, size_t cap, double s)
{
    if (s < 0 || s > 1e8) {
        snprintf(buf, cap, "--:--:--");
        return;
    }
    unsigned long t = (unsigned long)(s + 0.5);
    snprintf(buf, cap, "%02lu:%02lu:%02lu", t / 3600, (t / 60) % 60, t % 60);
}

void kd_progress_format(char *buf, size_t cap, const char *label, uint64_t done, uint64_t total,
                        double elapsed, int with_bar)
{
    enum { BAR = 24 }; /* bar width in cells; fits an 80-column line with the numbers */
    double rate = elapsed > 0 ? (double)done / elapsed : 0.0;
    char eta[16], el[16], bar[BAR + 3];
    size_t n = 0;
    fmt_hms(el, sizeof el, elapsed);
    if (total > 0) {
        double frac = done >= total ? 1.0 : (double)done / (double)total;
        fmt_hms(eta, sizeof eta, rate > 0 ? (double)(total - (done < total ? done : total)) / rate : -1);
        if (with_bar) {
            int fill = (int)(frac * BAR);
            bar[0] = '[';
            for (int i = 0; i < BAR; i++)
                bar[1 + i] = i < fill ? '#' : '.';
            bar[BAR + 1] = ']';
            bar[BAR + 2] = 0;
        } else {
            bar[0] = 0;
        }
        n = (size_t)snprintf(buf, cap, "%-10s %s%s%llu/%llu %3d%% %.1f/s elapsed %s ETA %s", label, bar,
                             with_bar ? " " : "", (unsigned long long)done, (unsigned long long)total,
                             (int)(frac * 100.0), rate, el, eta);
    } else {
        n = (size_t)snprintf(buf, cap, "%-10s %llu %.1f/s elapsed %s", label, (unsigned long long)done,
                             rate, el);
    }
    (void)n;
}

void kd_progress_init(kd_progress *p, const char *label, uint64_t total)
{
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total;
    atomic_store(&p->done, 0);
    atomic_store(&p->drawing, 0);
    p->out = stderr;
    p->tty = isatty(fileno(stderr)) && !tag_[0]; /* tagged: other processes print beside us */
    p->enabled = kd_log_get_level() >= KD_LOG_INFO;
    const char *env = getenv("DISTILL_PROGRESS_SECONDS");
    p->interval = env ? atof(env) : 10.0;
    if (!(p->interval >= 0))
        p->interval = 10.0;
    p->t_start = kd_now();
    p->t_last_draw = p->t_start;
}

void kd_progress_note(kd_progress *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->note, sizeof p->note, fmt, ap);
    va_end(ap);
}

static void draw(kd_progress *p, int final)
{
    char line[448];
    double now = kd_now();
    kd_progress_format(line, 256, p->label, atomic_load(&p->done), p->total, now - p->t_start,
                       p->tty);
    if (p->note[0]) {
        size_t n = strlen(line);
        snprintf(line + n, sizeof line - n, " | %s", p->note);
    }
    if (p->tty)
        fprintf(p->out, "\r%s\033[K%s", line, final ? "\n" : "");
    else
        fprintf(p->out, "progress: %s%s%s\n", tag_, tag_[0] ? ": " : "", line);
    fflush(p->out);
    p->t_last_draw = now;
}

void kd_progress_add(kd_progress *p, uint64_t n)
{
    atomic_fetch_add(&p->done, n);
    if (!p->enabled)
        return;
    double now = kd_now();
    double gap = p->tty ? 0.1 : p->interval; /* 10 redraws a second is smooth and cheap */
    if (now - p->t_last_draw < gap)
        return;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&p->drawing, &expected, 1))
        return;
    if (kd_now() - p->t_last_draw >= gap)
        draw(p, 0);
    atomic_store(&p->drawing, 0);
}

void kd_progress_finish(kd_progress *p)
{
    if (p->enabled)
        draw(p, 1);
}
