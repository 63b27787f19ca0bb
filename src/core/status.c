#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sm_status sm_fail(sm_error *err, sm_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

sm_status sm_error_prefix(sm_error *err, const char *fmt, ...) {
    if (!err) return SM_EINTERNAL;
    char prefix[SM_ERROR_MSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Shift the message right and put the prefix in front, cutting the tail if too long. */
    size_t plen = strlen(prefix), mlen = strlen(err->msg);
    if (plen > SM_ERROR_MSG_CAP - 1) plen = SM_ERROR_MSG_CAP - 1;
    if (plen + mlen > SM_ERROR_MSG_CAP - 1) mlen = SM_ERROR_MSG_CAP - 1 - plen;
    memmove(err->msg + plen, err->msg, mlen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen + mlen] = '\0';
    return err->code;
}

const char *sm_status_name(sm_status code) {
    static const char *const names[] = {
        [SM_OK] = "ok",
        [SM_EINVAL] = "invalid argument",
        [SM_EIO] = "I/O error",
        [SM_EFORMAT] = "malformed input",
        [SM_EUNSUPPORTED] = "unsupported",
        [SM_ENOMEM] = "out of memory",
        [SM_ERANGE] = "out of range",
        [SM_ECUDA] = "CUDA error",
        [SM_ESQL] = "SQLite error",
        [SM_ELUA] = "Lua error",
        [SM_EINTERNAL] = "internal error",
    };
    if ((unsigned)code < sizeof names / sizeof names[0] && names[code]) return names[code];
    return "unknown status";
}

sm_status sm_alloc(void **out, size_t bytes, const char *what, sm_error *err) {
    *out = malloc(bytes ? bytes : 1);
    if (!*out) return sm_fail(err, SM_ENOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return SM_OK;
}

sm_status sm_calloc(void **out, size_t count, size_t size, const char *what, sm_error *err) {
    if (size && count > (size_t)-1 / size)
        return sm_fail(err, SM_ENOMEM, "size overflow allocating %zu x %zu bytes for %s", count, size, what);
    *out = calloc(count ? count : 1, size ? size : 1);
    if (!*out) return sm_fail(err, SM_ENOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return SM_OK;
}
