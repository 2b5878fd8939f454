/* log.h - levelled logging and the one progress bar every stage uses.
 *
 * Logging writes to stderr, one line per call, prefixed by the level in
 * lowercase ("error: ", "warning: ", "info: ", "debug: "), git-style. The level
 * comes from kd_log_set_level() (the CLI's --log-level / -q / -v), else from
 * the environment variable DISTILL_LOG (error|warning|info|debug), else info.
 *
 * The progress bar draws itself in place on a TTY:
 *
 *     generate  [#########...........]  4521/10000  45%  812.3/s  ETA 00:06:44
 *
 * and, when stderr is not a TTY (CI, a log file, nohup), prints the same
 * fields as a plain line at most every DISTILL_PROGRESS_SECONDS seconds
 * (default 10), plus a final line. It is safe to advance from many threads.
 */
#ifndef KD_LOG_H
#define KD_LOG_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KD_LOG_ERROR = 0, KD_LOG_WARNING, KD_LOG_INFO, KD_LOG_DEBUG } kd_log_level;

/* Set the level; messages above it are dropped. */
void kd_log_set_level(kd_log_level level);
kd_log_level kd_log_get_level(void);
/* Parse "error|warning|info|debug" (also "warn"). Returns KD_OK or KD_E_USAGE. */
int kd_log_parse_level(const char *s, kd_log_level *out);

void kd_log(kd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define kd_error(...) kd_log(KD_LOG_ERROR, __VA_ARGS__)
#define kd_warn(...) kd_log(KD_LOG_WARNING, __VA_ARGS__)
#define kd_info(...) kd_log(KD_LOG_INFO, __VA_ARGS__)
#define kd_debug(...) kd_log(KD_LOG_DEBUG, __VA_ARGS__)

/* Tag every later message and progress line of this process ("9 sft"), and
 * draw progress as plain lines: for a process whose output interleaves with
 * others' (the runner's stages that run at once). NULL or "" clears it. */
void kd_log_set_tag(const char *tag);

/* A progress bar. The caller owns the struct; kd_progress_init sets it up. */
typedef struct kd_progress {
    char label[32];
    uint64_t total;            /* 0 = unknown: no bar, no ETA */
    _Atomic uint64_t done;
    double t_start, t_last_draw;
    double interval;           /* seconds between plain lines when not a TTY */
    int tty;                   /* draws in place with \r */
    int enabled;               /* 0 when the log level is below info */
    _Atomic int drawing;       /* one drawer at a time; others skip */
    FILE *out;
    char note[160];            /* appended after the figures, e.g. "loss 1.23 lr 4e-05" */
} kd_progress;

/* Start a bar named `label` for `total` units (0 if unknown). Draws nothing yet. */
void kd_progress_init(kd_progress *p, const char *label, uint64_t total);
/* Add `n` units; redraws when enough time has passed. Thread-safe. */
void kd_progress_add(kd_progress *p, uint64_t n);
/* Set the note drawn after the figures (printf format; truncated to fit).
 * Call from the thread that calls kd_progress_add, or with none drawing. */
void kd_progress_note(kd_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Draw the final state and end the line. Call once, from one thread. */
void kd_progress_finish(kd_progress *p);

/* Format the bar's text for `done` of `total` after `elapsed` seconds into buf.
 * Exposed for tests; kd_progress uses it. */
void kd_progress_format(char *buf, size_t cap, const char *label, uint64_t done, uint64_t total,
                        double elapsed, int with_bar);

/* Monotonic seconds. */
double kd_now(void);

#ifdef __cplusplus
}
#endif
#endif
