// status.c - the status table and error helpers.
#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


const char *ct_status_str(ct_status st) {
    switch (st) {
#define CT_X(name, value, str, desc) case name: return str;
        CT_STATUS_TABLE(CT_X)
#undef CT_X
    }
    return "UNKNOWN";
}

const char *ct_status_desc(ct_status st) {
    switch (st) {
#define CT_X(name, value, str, desc) case name: return desc;
        CT_STATUS_TABLE(CT_X)
#undef CT_X
    }
    return "unknown status";
}

// Control characters in a message (it may quote a name from a file) become '?', so a message
// never moves a terminal's cursor or forges a line of output.
static void sanitize(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

ct_status ct_fail(ct_err *err, ct_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        sanitize(err->msg);
        err->status = st;
    }
    return st;
}

void ct_err_where(ct_err *err, const char *where) {
    if (!err) return;
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof err->msg - n, " (in %s)", where);
    sanitize(err->msg + n);
}

void ct_assert_fail(const char *file, int line, const char *cond) {
    fprintf(stderr, "ctrace: internal error at %s:%d: assertion '%s' failed\n", file, line, cond);
    abort();
}
