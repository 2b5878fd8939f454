/* status.h - status codes and error context for every distill function.
 *
 * Every function that can fail returns an int: KD_OK (0) or one of the negative
 * KD_E_* codes below. Codes live in their own range, the way LMDB keeps its
 * MDB_* codes apart from errno, so a status is never confused with a count.
 *
 * A failing function records a context message with kd_err() on the way out:
 *
 *     return kd_err(KD_E_SHAPE, "tensor '%s' has shape [%d], config says [%d]", ...);
 *
 * and the caller that finally reports it prints kd_strerror(status), which
 * starts with the code's name:
 *
 *     KD_E_SHAPE: tensor 'model.norm.weight' has shape [64], config says [128]
 *
 * The context lives in thread-local storage: it stays valid until the same
 * thread records another error. A caller that adds context of its own wraps it
 * with kd_err_wrap(), which prepends to the message already recorded.
 *
 * User-caused problems (bad input, a missing file, a full disk) are returned
 * as statuses. Programmer errors are asserts.
 */
#ifndef KD_STATUS_H
#define KD_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kd_status {
    KD_OK = 0,
    KD_E_FIRST = -30900,
    KD_E_NOMEM = KD_E_FIRST, /* an allocation failed */
    KD_E_IO,                 /* open/read/write/mmap failed; errno text in the context */
    KD_E_FORMAT,             /* a file or document is malformed (safetensors, JSON, YAML...) */
    KD_E_SHAPE,              /* a tensor's shape disagrees with what is required */
    KD_E_DTYPE,              /* an unknown dtype, or a dtype that cannot be used here */
    KD_E_CONFIG,             /* a configuration key is unknown, of the wrong type or out of range */
    KD_E_USAGE,              /* bad command-line usage; the CLI exits with 2 */
    KD_E_NOTFOUND,           /* a named thing (file, tensor, key, record) does not exist */
    KD_E_UNSUPPORTED,        /* valid input that this build does not handle (a model_type, a feature) */
    KD_E_RANGE,              /* a value is outside its allowed range, or a size overflows */
    KD_E_UTF8,               /* text is not valid UTF-8 */
    KD_E_CUDA,               /* a CUDA, cuBLAS or cuDNN call failed, or CUDA is not built in */
    KD_E_INTERNAL,           /* an invariant broke in a way that could be reported, not asserted */
    KD_E_LAST = KD_E_INTERNAL
} kd_status;

/* Record a context message for status `code` on this thread and return `code`.
 * The message is formatted with printf rules and truncated to about 1 KiB. */
int kd_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepend "<context>: " to the message recorded for `code` (or to the code's
 * generic text when none is recorded) and return `code`. Used by callers that
 * know more, e.g. the file name around a parse error. KD_OK passes through. */
int kd_err_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "NAME: context" for `code`. When this thread's last recorded error is not
 * `code`, the context is the code's generic description. Non-kd codes (errno
 * values, positive numbers) get strerror()'s text. The returned string is valid
 * until this thread's next call to kd_strerror, kd_err or kd_err_wrap. */
const char *kd_strerror(int code);

/* The bare name of a code, e.g. "KD_E_SHAPE", or "KD_OK". Static storage. */
const char *kd_status_name(int code);

/* Forget this thread's recorded context. */
void kd_err_clear(void);

/* The process exit code for a status: 0 for KD_OK, 2 for KD_E_USAGE, 1 otherwise. */
int kd_exit_code(int code);

/* Propagate a failing status. */
#define KD_TRY(expr)                  \
    do {                              \
        int kd_try_st_ = (expr);      \
        if (kd_try_st_ != KD_OK)      \
            return kd_try_st_;        \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
