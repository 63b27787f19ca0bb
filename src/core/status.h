/* src/core/status.h — status codes and error messages.
 *
 * Every fallible call returns an sm_status and, on failure, fills an sm_error whose message
 * says what went wrong and where (file, tensor, key, line). Library code never prints and never
 * aborts: main() prints err.msg once and exits non-zero. */
#ifndef SM_STATUS_H
#define SM_STATUS_H

#include <stddef.h>

typedef enum sm_status {
    SM_OK = 0,
    SM_EINVAL,       /* bad argument or option (user error)            */
    SM_EIO,          /* file missing, unreadable, unwritable            */
    SM_EFORMAT,      /* malformed file: safetensors, JSON, tokenizer    */
    SM_EUNSUPPORTED, /* well-formed but not supported by this engine    */
    SM_ENOMEM,       /* host or device allocation failed / won't fit    */
    SM_ERANGE,       /* index or length out of range (context, KV, ...) */
    SM_ECUDA,        /* CUDA / cuBLASLt / NCCL failure                   */
    SM_ESQL,         /* SQLite failure                                   */
    SM_ELUA,         /* Lua script error                                 */
    SM_EINTERNAL     /* a bug: an invariant that should never break      */
} sm_status;

#define SM_ERROR_MSG_CAP 1024

typedef struct sm_error {
    sm_status code;
    char msg[SM_ERROR_MSG_CAP];
} sm_error;

/* Record a failure in err (may be NULL) and return code, so callers write
 *   return sm_fail(err, SM_EFORMAT, "%s: bad header", path); */
sm_status sm_fail(sm_error *err, sm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepend context to an existing message ("loading draft: " + msg). Returns err->code. */
sm_status sm_error_prefix(sm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *sm_status_name(sm_status code);

/* Propagate a failure unchanged. */
#define SM_TRY(expr)                               \
    do {                                           \
        sm_status sm_try_status_ = (expr);         \
        if (sm_try_status_ != SM_OK) return sm_try_status_; \
    } while (0)

/* Checked allocation helpers: they fail with a message naming what was being allocated. */
sm_status sm_alloc(void **out, size_t bytes, const char *what, sm_error *err);
sm_status sm_calloc(void **out, size_t count, size_t size, const char *what, sm_error *err);

#endif
