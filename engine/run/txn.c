// txn.c - results as a transaction: the folder lock, staging, outputs, commit (txn.h).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sha256.h"
#include "run/txn.h"

#define STAGING_PREFIX ".ctrace-staging-"

ct_status ct_run_lock(int *fd, const char *folder, int exclusive, ct_err *err) {
    *fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: %s (expected a case-study folder)", folder, strerror(errno));
    if (flock(*fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB)) {
        int e = errno;
        close(*fd);
        *fd = -1;
        if (e == EWOULDBLOCK)
            return ct_fail(err, CT_STATUS_BUSY, "%s: another ctrace run is using this folder; wait for it to end", folder);
        return ct_fail(err, CT_STATUS_SYSTEM, "%s: lock: %s", folder, strerror(e));
    }
    return CT_OK;
}

void ct_run_unlock(int fd) {
    if (fd >= 0) close(fd);
}

static int is_staging(const char *name) { return strncmp(name, STAGING_PREFIX, strlen(STAGING_PREFIX)) == 0; }

ct_status ct_run_staging(char *out, size_t n, const char *folder, ct_err *err) {
    DIR *d = opendir(folder);
    if (!d) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: %s", folder, strerror(errno));
    struct dirent *e;
    ct_status rc = CT_OK;
    while (!rc && (e = readdir(d))) {   // left by runs whose parent was killed
        char p[4096];
        if (is_staging(e->d_name) && snprintf(p, sizeof p, "%s/%s", folder, e->d_name) < (int)sizeof p)
            rc = ct_remove_tree(p, err);
    }
    closedir(d);
    return rc ? rc : ct_run_staging_beside(out, n, folder, err);
}

ct_status ct_run_staging_beside(char *out, size_t n, const char *folder, ct_err *err) {
    if (snprintf(out, n, "%s/" STAGING_PREFIX "XXXXXX", folder) >= (int)n)
        return ct_fail(err, CT_STATUS_BAD_ARG, "%s: path too long", folder);
    if (!mkdtemp(out)) return ct_fail(err, CT_STATUS_IO, "%s: cannot make a staging directory: %s", folder, strerror(errno));
    mode_t um = umask(0);   // as results/ would be made
    umask(um);
    chmod(out, 0777 & ~um);
    return CT_OK;
}

// ---------------------------------------------------------------------------------------------
// Outputs

typedef struct {
    ct_run_file *files;
    int n, cap;
    const ct_ctx *ctx;   // deadline and cancellation, checked while hashing
} file_list;

static ct_status sync_fd(int fd, const char *path, ct_err *err) {
    if (fsync(fd) && errno != EINVAL) return ct_fail(err, CT_STATUS_IO, "%s: sync: %s", path, strerror(errno));
    return CT_OK;
}

static ct_status add_file(file_list *l, int dirfd, const char *name, const char *rel, const char *full, ct_err *err) {
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return ct_fail(err, CT_STATUS_IO, "%s: %s", full, strerror(errno));
    struct stat st;
    ct_status rc = CT_OK;
    if (fstat(fd, &st)) rc = ct_fail(err, CT_STATUS_IO, "%s: %s", full, strerror(errno));
    else if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: results may hold only regular files and directories "
                     "(found a link or a special file)", full);
    if (!rc) rc = sync_fd(fd, full, err);
    ct_sha256 h;
    ct_sha256_init(&h);
    char buf[1 << 16];
    ssize_t k;
    while (!rc && (k = read(fd, buf, sizeof buf)) != 0) {
        if (k < 0) rc = ct_fail(err, CT_STATUS_IO, "%s: %s", full, strerror(errno));
        else ct_sha256_update(&h, buf, (size_t)k);
        if (!rc && ct_ctx_cancelled(l->ctx))   // a huge (or sparse) output cannot outlast the run's deadline
            rc = l->ctx->cancel ? ct_fail(err, CT_STATUS_CANCELLED, "interrupted while hashing %s", full)
                                : ct_fail(err, CT_STATUS_TIMEOUT, "the run's time ran out while hashing %s", full);
    }
    close(fd);
    if (rc) return rc;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        ct_run_file *f = realloc(l->files, sizeof *f * (size_t)cap);
        if (!f) return ct_fail(err, CT_STATUS_NO_MEMORY, "outputs: out of memory");
        l->files = f, l->cap = cap;
    }
    ct_run_file *f = &l->files[l->n];
    if (!(f->path = strdup(rel))) return ct_fail(err, CT_STATUS_NO_MEMORY, "outputs: out of memory");
    f->size = st.st_size;
    ct_sha256_hex(&h, f->sha256);
    l->n++;
    return CT_OK;
}

static ct_status walk(file_list *l, int dirfd, const char *rel, const char *full, int depth, ct_err *err) {
    if (depth > 64) return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: directories nested too deep", full);
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return ct_fail(err, CT_STATUS_IO, "%s: %s", full, strerror(errno));
    }
    ct_status rc = CT_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char r[4096], p[4096];
        if (snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", e->d_name) >= (int)sizeof r ||
            snprintf(p, sizeof p, "%s/%s", full, e->d_name) >= (int)sizeof p) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: path too long", full);
            break;
        }
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
            rc = ct_fail(err, CT_STATUS_IO, "%s: %s", p, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) rc = ct_fail(err, CT_STATUS_IO, "%s: %s", p, strerror(errno));
            else {
                rc = walk(l, sub, r, p, depth + 1, err);
                if (!rc) rc = sync_fd(sub, p, err);
                close(sub);
            }
        } else if (S_ISREG(st.st_mode)) {
            rc = add_file(l, dirfd, e->d_name, r, p, err);
        } else {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: results may hold only regular files and directories "
                         "(found a link or a special file)", p);
        }
    }
    closedir(d);
    return rc;
}

static int by_path(const void *a, const void *b) {
    return strcmp(((const ct_run_file *)a)->path, ((const ct_run_file *)b)->path);
}

ct_status ct_run_outputs(const ct_ctx *c, const char *dir, ct_run_file **files, int *n, ct_err *err) {
    file_list l = {.ctx = c};
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return ct_fail(err, CT_STATUS_IO, "%s: %s", dir, strerror(errno));
    ct_status rc = walk(&l, fd, "", dir, 0, err);
    if (!rc) rc = sync_fd(fd, dir, err);
    close(fd);
    if (rc) {
        ct_run_files_free(l.files, l.n);
        return rc;
    }
    if (l.n > 1) qsort(l.files, (size_t)l.n, sizeof *l.files, by_path);
    *files = l.files, *n = l.n;
    return CT_OK;
}

void ct_run_files_free(ct_run_file *files, int n) {
    for (int i = 0; i < n; i++) free(files[i].path);
    free(files);
}

// ---------------------------------------------------------------------------------------------
// Commit and removal

static ct_status sync_dir_of(const char *path, ct_err *err) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    int fd = open(*dir ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ct_fail(err, CT_STATUS_IO, "%s: %s", dir, strerror(errno));
    ct_status rc = sync_fd(fd, dir, err);
    close(fd);
    return rc;
}

ct_status ct_run_commit(const char *staging, const char *results, ct_err *err) {
    struct stat st;
    int exists = lstat(results, &st) == 0;
    if (exists && renameat2(AT_FDCWD, staging, AT_FDCWD, results, RENAME_EXCHANGE))
        return ct_fail(err, CT_STATUS_IO, "%s: cannot replace it with the new results: %s", results, strerror(errno));
    if (!exists && rename(staging, results))
        return ct_fail(err, CT_STATUS_IO, "%s: cannot move the new results there: %s", results, strerror(errno));
    ct_status rc = sync_dir_of(results, err);
    if (rc) return rc;
    return exists ? ct_remove_tree(staging, err) : CT_OK;   // staging now holds the old results
}

// Empties directory fd of everything but directories; the name of one directory left in it goes
// to sub ("" when none). -1 on failure.
static int clear_files(int fd, char sub[256]) {
    int d2 = dup(fd);
    DIR *d = d2 >= 0 ? fdopendir(d2) : NULL;
    if (!d) {
        if (d2 >= 0) close(d2);
        return -1;
    }
    sub[0] = 0;
    int rc = 0;
    struct dirent *e;
    struct stat st;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW)) rc = errno == ENOENT ? 0 : -1;
        else if (!S_ISDIR(st.st_mode)) rc = unlinkat(fd, e->d_name, 0) && errno != ENOENT ? -1 : 0;
        else if (!sub[0]) snprintf(sub, 256, "%s", e->d_name);
    }
    closedir(d);
    return rc;
}

// Removes name (in directory at) and everything below it, never following a link, holding two
// descriptors whatever the depth: it walks down to a directory with no directory in it, empties
// and removes it, and starts again from the top (a tree as deep as paths allow, with few
// descriptors to spare).
static ct_status remove_at(int at, const char *name, const char *top, ct_err *err) {
    struct stat st;
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW)) {
        if (errno == ENOENT) return CT_OK;
        return ct_fail(err, CT_STATUS_IO, "removing %s: %s", top, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(at, name, 0) && errno != ENOENT) return ct_fail(err, CT_STATUS_IO, "removing %s: %s", top, strerror(errno));
        return CT_OK;
    }
    for (;;) {
        int parent = at;   // ours to close only below the top
        const char *cur = name;
        char sub[256] = "", held[256];
        int fd = openat(parent, cur, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), depth = 0;
        while (fd >= 0 && clear_files(fd, sub) == 0 && sub[0]) {   // down to a directory with none below
            if (depth > 0) close(parent);
            parent = fd;
            memcpy(held, sub, sizeof held);
            cur = held;
            fd = openat(parent, cur, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            depth++;
        }
        int gone = fd >= 0 && !sub[0] && unlinkat(parent, cur, AT_REMOVEDIR) == 0;
        int e = errno;
        if (fd >= 0) close(fd);
        if (depth > 0) close(parent);
        if (!gone) return ct_fail(err, CT_STATUS_IO, "removing %s: %s", top, strerror(e));
        if (depth == 0) return CT_OK;   // the top itself
    }
}

ct_status ct_remove_tree(const char *path, ct_err *err) { return remove_at(AT_FDCWD, path, path, err); }

ct_status ct_run_read(const char *dir, const char *rel, size_t max, char **buf, size_t *n, ct_err *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: %s (a directory, not a link, expected)", dir, strerror(errno));
    char part[4096];
    const char *p = rel;
    while (fd >= 0) {   // one component at a time, none of them a link
        size_t k = strcspn(p, "/");
        if (k == 0 || k >= sizeof part || (k <= 2 && strncmp(p, "..", k) == 0)) {
            close(fd);
            return ct_fail(err, CT_STATUS_BAD_ARG, "%s/%s: a plain relative path expected", dir, rel);
        }
        memcpy(part, p, k), part[k] = 0;
        int last = p[k] == 0;
        int next = openat(fd, part, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (last ? O_NONBLOCK : O_DIRECTORY));
        close(fd);
        if (next < 0) return ct_fail(err, errno == ENOENT ? CT_STATUS_NOT_FOUND : CT_STATUS_IO, "%s/%s: %s%s", dir, rel,
                                     strerror(errno), errno == ELOOP ? " (a link: refused)" : "");
        fd = next;
        if (last) break;
        p += k + 1;
    }
    struct stat st;
    ct_status rc = CT_OK;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode))
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/%s: not a regular file", dir, rel);
    else if ((size_t)st.st_size > max)
        rc = ct_fail(err, CT_STATUS_TOO_LARGE, "%s/%s: %lld bytes (at most %zu)", dir, rel, (long long)st.st_size, max);
    char *b = rc ? NULL : malloc((size_t)st.st_size + 1);
    if (!rc && !b) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "%s/%s: out of memory", dir, rel);
    size_t got = 0;
    while (!rc && got < (size_t)st.st_size) {
        ssize_t k = read(fd, b + got, (size_t)st.st_size - got);
        if (k <= 0) rc = ct_fail(err, CT_STATUS_IO, "%s/%s: %s", dir, rel, k < 0 ? strerror(errno) : "shorter than its size");
        else got += (size_t)k;
    }
    close(fd);
    if (rc) {
        free(b);
        return rc;
    }
    b[got] = 0;
    *buf = b, *n = got;
    return CT_OK;
}
