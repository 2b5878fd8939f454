/* status.c - status names, thread-local error context. See status.h. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define KD_ERRMSG_MAX 1024

static _Thread_local int last_code;
static _Thread_local char last_msg[KD_ERRMSG_MAX];
static _Thread_local char out_buf[KD_ERRMSG_MAX + 64];

static const struct {
    const char *name;
    const char *text;
} codes[] = {
    {"KD_E_NOMEM", "out of memory"},
    {"KD_E_IO", "input/output error"},
    {"KD_E_FORMAT", "malformed input"},
    {"KD_E_SHAPE", "tensor shape mismatch"},
    {"KD_E_DTYPE", "unsupported or unknown dtype"},
    {"KD_E_CONFIG", "invalid configuration"},
    {"KD_E_USAGE", "invalid usage"},
    {"KD_E_NOTFOUND", "not found"},
    {"KD_E_UNSUPPORTED", "not supported"},
    {"KD_E_RANGE", "value out of range"},
    {"KD_E_UTF8", "invalid UTF-8"},
    {"KD_E_CUDA", "CUDA error"},
    {"KD_E_INTERNAL", "internal error"},
};

_Static_assert(sizeof codes / sizeof codes[0] == KD_E_LAST - KD_E_FIRST + 1,
               "every kd_status needs a name");

static int is_kd_code(int code) { return code >= KD_E_FIRST && code <= KD_E_LAST; }

const char *kd_status_name(int code)
{
    if (code == KD_OK)
        return "KD_OK";
    if (is_kd_code(code))
        return codes[code - KD_E_FIRST].name;
    return "KD_E_UNKNOWN";
}

int kd_err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    last_code = code;
    return code;
}

int kd_err_wrap(int code, const char *fmt, ...)
{
    char prefix[KD_ERRMSG_MAX], old[KD_ERRMSG_MAX];
    va_list ap;
    if (code == KD_OK)
        return code;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (last_code == code && last_msg[0])
        snprintf(old, sizeof old, "%s", last_msg);
    else
        snprintf(old, sizeof old, "%s",
                 is_kd_code(code) ? codes[code - KD_E_FIRST].text : strerror(code > 0 ? code : -code));
    snprintf(last_msg, sizeof last_msg, "%s: %s", prefix, old);
    last_code = code;
    return code;
}

const char *kd_strerror(int code)
{
    if (code == KD_OK)
        return "KD_OK: success";
    if (!is_kd_code(code)) {
        snprintf(out_buf, sizeof out_buf, "KD_E_UNKNOWN: %s", strerror(code > 0 ? code : -code));
        return out_buf;
    }
    snprintf(out_buf, sizeof out_buf, "%s: %s", codes[code - KD_E_FIRST].name,
             (last_code == code && last_msg[0]) ? last_msg : codes[code - KD_E_FIRST].text);
    return out_buf;
}

void kd_err_clear(void)
{
    last_code = 0;
    last_msg[0] = 0;
}

int kd_exit_code(int code)
{
    if (code == KD_OK)
        return 0;
    return code == KD_E_USAGE ? 2 : 1;
}
