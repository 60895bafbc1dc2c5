// status.h - status codes and error messages for the ctrace engine.
//
// Every engine function that can fail returns a ct_status: CT_OK (0) or a negative code.
// The codes and their names live in one X-macro table. Details go into a ct_err the caller
// passes in (the owning object keeps its last message), so a binding can raise
// "BAD_SHAPE: <what was expected, what was found>".
#ifndef CT_STATUS_H
#define CT_STATUS_H

#include <stddef.h>

#define CT_VERSION "0.1.0"

#define CT_STATUS_TABLE(X)                                                      \
    X(CT_OK, 0, "OK", "success")                                                \
    X(CT_STATUS_NO_MEMORY, -1, "NO_MEMORY", "out of memory")                    \
    X(CT_STATUS_IO, -2, "IO", "file could not be read or written")              \
    X(CT_STATUS_BAD_FORMAT, -3, "BAD_FORMAT", "malformed file or data")         \
    X(CT_STATUS_BAD_SHAPE, -4, "BAD_SHAPE", "tensor shape does not match")      \
    X(CT_STATUS_BAD_DTYPE, -5, "BAD_DTYPE", "unsupported or wrong dtype")       \
    X(CT_STATUS_NOT_FOUND, -6, "NOT_FOUND", "missing file, tensor or key")      \
    X(CT_STATUS_UNSUPPORTED, -7, "UNSUPPORTED", "feature not supported")        \
    X(CT_STATUS_BAD_ARG, -8, "BAD_ARG", "invalid argument")                     \
    X(CT_STATUS_OUT_OF_RANGE, -9, "OUT_OF_RANGE", "index out of range")         \
    X(CT_STATUS_BAD_UTF8, -10, "BAD_UTF8", "invalid UTF-8")                     \
    X(CT_STATUS_CANCELLED, -11, "CANCELLED", "cancelled")                       \
    X(CT_STATUS_NETWORK, -12, "NETWORK", "server could not be reached")         \
    X(CT_STATUS_TIMEOUT, -13, "TIMEOUT", "request timed out")                   \
    X(CT_STATUS_HTTP, -14, "HTTP", "server answered with an error status")      \
    X(CT_STATUS_RATE_LIMITED, -15, "RATE_LIMITED", "server rate limit reached") \
    X(CT_STATUS_BAD_RESPONSE, -16, "BAD_RESPONSE", "malformed server response") \
    X(CT_STATUS_TOO_LARGE, -17, "TOO_LARGE", "response larger than the limit")  \
    X(CT_STATUS_CHECKSUM, -18, "CHECKSUM", "content does not match its hash")   \
    X(CT_STATUS_OFFLINE, -19, "OFFLINE", "needs the network in offline mode")   \
    X(CT_STATUS_BUSY, -20, "BUSY", "in use by another process")                 \
    X(CT_STATUS_SYSTEM, -21, "SYSTEM", "the operating system refused")          \
    X(CT_STATUS_REMOTE, -22, "REMOTE", "another rank of the MPI job failed")

typedef enum {
#define CT_X(name, value, str, desc) name = value,
    CT_STATUS_TABLE(CT_X)
#undef CT_X
} ct_status;

// Short upper-case name of a status ("BAD_SHAPE"); "UNKNOWN" for values not in the table.
const char *ct_status_str(ct_status st);
// One-line description of a status ("tensor shape does not match").
const char *ct_status_desc(ct_status st);

// Error details: the message a failed call leaves for its caller.
typedef struct {
    ct_status status;
    char msg[512];
} ct_err;

// Records status and a printf-style message in err (err may be NULL) and returns status, so
// failing paths read `return ct_fail(err, CT_STATUS_BAD_SHAPE, "expected %d, got %d", a, b);`.
ct_status ct_fail(ct_err *err, ct_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Appends " (in <where>)" to err's message, so a reader's message names the file.
void ct_err_where(ct_err *err, const char *where);

// Aborts with file and line: only for broken internal invariants, never for bad input.
#define CT_ASSERT(cond)                                                                  \
    do {                                                                                 \
        if (!(cond)) ct_assert_fail(__FILE__, __LINE__, #cond);                         \
    } while (0)
void ct_assert_fail(const char *file, int line, const char *cond) __attribute__((noreturn));

#endif
