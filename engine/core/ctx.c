// ctx.c - cancellation, read and write roots, the record of files read, address resolution
// (see ctx.h).
#include "core/ctx.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ct_ctx_init(ct_ctx *c) { memset(c, 0, sizeof *c); }

static void free_roots(char **roots, int n) {
    for (int i = 0; i < n; i++) free(roots[i]);
    free(roots);
}

void ct_ctx_clear_files(ct_ctx *c) {
    for (int i = 0; i < c->n_files; i++) free(c->files[i].path);
    free(c->files);
    c->files = NULL;
    c->n_files = c->cap_files = 0;
}

void ct_ctx_free(ct_ctx *c) {
    if (!c) return;
    free_roots(c->read_roots, c->n_read_roots);
    free(c->write_root);
    ct_ctx_clear_files(c);
    ct_ctx_init(c);
}

void ct_ctx_lock(ct_ctx *c) { c->locked = 1; }

static ct_status locked(const ct_ctx *c, ct_err *err) {
    return c->locked ? ct_fail(err, CT_STATUS_BAD_ARG, "the directories this run may read and write are fixed") : CT_OK;
}

ct_status ct_ctx_set_read_roots(ct_ctx *c, const char *const *dirs, int n, ct_err *err) {
    ct_status rc = locked(c, err);
    if (rc) return rc;
    char **roots = calloc((size_t)n + 1, sizeof *roots), real[PATH_MAX];
    if (!roots) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        if (!realpath(dirs[i], real)) rc = ct_fail(err, CT_STATUS_IO, "read root %s: %s", dirs[i], strerror(errno));
        else if (!(roots[i] = strdup(real))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    if (rc) {
        free_roots(roots, n);
        return rc;
    }
    free_roots(c->read_roots, c->n_read_roots);
    c->read_roots = roots;
    c->n_read_roots = n;
    return CT_OK;
}

ct_status ct_ctx_set_write_root(ct_ctx *c, const char *dir, ct_err *err) {
    ct_status rc = locked(c, err);
    if (rc) return rc;
    char *root = NULL, real[PATH_MAX];
    if (dir && *dir) {
        if (!realpath(dir, real)) return ct_fail(err, CT_STATUS_IO, "write root %s: %s", dir, strerror(errno));
        if (!(root = strdup(real))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    free(c->write_root);
    c->write_root = root;
    return CT_OK;
}

double ct_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void ct_ctx_set_timeout(ct_ctx *c, double seconds) { c->deadline = seconds > 0 ? ct_now() + seconds : 0; }

int ct_ctx_cancelled(const ct_ctx *c) { return c && (c->cancel || (c->deadline > 0 && ct_now() >= c->deadline)); }

ct_status ct_ctx_check_cancel(const ct_ctx *c, ct_err *err, const char *what, ...) {
    if (!ct_ctx_cancelled(c)) return CT_OK;
    char msg[400];
    va_list ap;
    va_start(ap, what);
    vsnprintf(msg, sizeof msg, what, ap);
    va_end(ap);
    return ct_fail(err, CT_STATUS_CANCELLED, "%s %s", c->cancel ? "interrupted:" : "timeout:", msg);
}

// Whether real (a resolved path) is root or below it.
static int under(const char *real, const char *root) {
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return real[0] == '/';
    return strncmp(real, root, n) == 0 && (real[n] == '/' || real[n] == 0);
}

// The allowed read directories, for messages: "a, b and c" (at most n bytes).
static void roots_list(const ct_ctx *c, char *out, size_t n) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < c->n_read_roots && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s", i == 0 ? "" : i + 1 == c->n_read_roots ? " and " : ", ",
                              c->read_roots[i]);
}

int ct_ctx_readable(const ct_ctx *c, const char *real) {
    if (!c || c->n_read_roots == 0) return 1;
    for (int i = 0; i < c->n_read_roots; i++)
        if (under(real, c->read_roots[i])) return 1;
    return 0;
}

ct_status ct_ctx_refuse_read(const ct_ctx *c, const char *path, ct_err *err) {
    char roots[1024];
    roots_list(c, roots, sizeof roots);
    return ct_fail(err, CT_STATUS_BAD_ARG, "reading %s: this run may read only under %s", path, roots);
}

static ct_status resolve_dirs(const char *path, char full[2 * PATH_MAX], const char **rest_out, ct_err *err);

ct_status ct_ctx_unresolved_read(const ct_ctx *c, const char *path, int e, ct_err *err) {
    char roots[1024];
    roots_list(c, roots, sizeof roots);
    return ct_fail(err, CT_STATUS_BAD_ARG, "reading %.300s: refused, the path cannot be resolved (%s); this run may read "
                   "only files it resolves under %s", path, strerror(e), roots);
}

// Deny by default: a path is readable only when it resolves, whole, under a read root. A path that
// cannot be resolved (too long, a loop of links, a directory that may not be searched) is refused
// like one outside the roots; a missing file is NOT_FOUND only when the directory it would be in
// lies under a root (elsewhere it is refused, so a run learns nothing about files outside).
ct_status ct_ctx_check_read(const ct_ctx *c, const char *path, ct_err *err) {
    if (!c || c->n_read_roots == 0) return CT_OK;
    char real[PATH_MAX];
    if (realpath(path, real)) return ct_ctx_readable(c, real) ? CT_OK : ct_ctx_refuse_read(c, path, err);
    int e = strlen(path) >= PATH_MAX ? ENAMETOOLONG : errno;
    if (e != ENOENT) return ct_ctx_unresolved_read(c, path, e, err);
    char full[2 * PATH_MAX];
    const char *rest;
    ct_err ignored;
    if (resolve_dirs(path, full, &rest, &ignored) || strstr(rest, "..") || strlen(full) >= PATH_MAX)
        return ct_ctx_unresolved_read(c, path, e, err);
    if (!ct_ctx_readable(c, full)) return ct_ctx_refuse_read(c, path, err);
    return ct_fail(err, CT_STATUS_NOT_FOUND, "cannot open %s: %s", path, strerror(e));
}

// full = path with its deepest existing directory resolved (the rest, which need not exist, as
// given); *rest (rest may be NULL) points at that rest inside path.
static ct_status resolve_dirs(const char *path, char full[2 * PATH_MAX], const char **rest_out, ct_err *err) {
    const char *r = path, **rest = rest_out ? rest_out : &r;
    char dir[PATH_MAX], real[PATH_MAX];
    if (strlen(path) >= sizeof dir) return ct_fail(err, CT_STATUS_BAD_ARG, "%.200s...: path too long", path);
    snprintf(dir, sizeof dir, "%s", path);
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (!slash) {
            if (!realpath(".", real)) return ct_fail(err, CT_STATUS_IO, "cannot resolve the current directory");
            *rest = path;
            break;
        }
        *slash = 0;
        if (realpath(*dir ? dir : "/", real)) {
            *rest = path + (slash - dir) + 1;
            break;
        }
    }
    snprintf(full, 2 * PATH_MAX, "%s/%s", strcmp(real, "/") ? real : "", *rest);
    return CT_OK;
}

ct_status ct_ctx_check_write(const ct_ctx *c, const char *path, ct_err *err) {
    if (!c || !c->write_root) return CT_OK;
    char full[2 * PATH_MAX];
    const char *rest;
    ct_status rc = resolve_dirs(path, full, &rest, err);
    if (rc) return rc;
    if (strstr(rest, "..") || !under(full, c->write_root))
        return ct_fail(err, CT_STATUS_BAD_ARG, "writing %s: this run may write only under %s%s", path, c->write_root,
                       c->write_hint ? c->write_hint : "");
    return CT_OK;
}

ct_status ct_ctx_note_file(ct_ctx *c, const char *path, int64_t size, ct_err *err) {
    if (!c) return CT_OK;
    char name[2 * PATH_MAX];   // the directory resolved (it exists: the file was opened), the name as given
    ct_status rc = resolve_dirs(path, name, NULL, err);
    if (rc) return rc;
    for (int i = 0; i < c->n_files; i++)
        if (strcmp(c->files[i].path, name) == 0) return CT_OK;
    if (c->n_files == c->cap_files) {
        int cap = c->cap_files ? 2 * c->cap_files : 16;
        ct_ctx_file *f = realloc(c->files, sizeof *f * (size_t)cap);
        if (!f) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        c->files = f;
        c->cap_files = cap;
    }
    char *p = strdup(name);
    if (!p) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    c->files[c->n_files++] = (ct_ctx_file){p, size};
    return CT_OK;
}

ct_status ct_ctx_resolve(const ct_ctx *c, const char *addr, char *out, size_t n, ct_err *err) {
    const char *scheme = strstr(addr, "://");
    if (!scheme) {
        if ((size_t)snprintf(out, n, "%s", addr) >= n) return ct_fail(err, CT_STATUS_BAD_ARG, "path too long: %.200s", addr);
        return CT_OK;
    }
    if (!c || !c->resolve)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s: addresses with a scheme need a resolver (hf:// works from ctrace)", addr);
    return c->resolve(c->resolve_data, addr, out, n, err);
}
