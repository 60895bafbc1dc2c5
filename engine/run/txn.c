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
    if (rc) return rc;
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

ct_status ct_run_outputs(const char *dir, ct_run_file **files, int *n, ct_err *err) {
    file_list l = {0};
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

static ct_status remove_at(int at, const char *name, const char *full, int depth, ct_err *err) {
    struct stat st;
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW)) {
        if (errno == ENOENT) return CT_OK;
        return ct_fail(err, CT_STATUS_IO, "%s: %s", full, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        if (depth > 256) return ct_fail(err, CT_STATUS_IO, "%s: directories nested too deep to remove", full);
        int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
            if (fd >= 0) close(fd);
            return ct_fail(err, CT_STATUS_IO, "%s: %s", full, strerror(errno));
        }
        ct_status rc = CT_OK;
        struct dirent *e;
        while (!rc && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", full, e->d_name);
            rc = remove_at(dirfd(d), e->d_name, p, depth + 1, err);
        }
        closedir(d);
        if (rc) return rc;
        if (unlinkat(at, name, AT_REMOVEDIR) && errno != ENOENT)
            return ct_fail(err, CT_STATUS_IO, "%s: %s", full, strerror(errno));
        return CT_OK;
    }
    if (unlinkat(at, name, 0) && errno != ENOENT) return ct_fail(err, CT_STATUS_IO, "%s: %s", full, strerror(errno));
    return CT_OK;
}

ct_status ct_remove_tree(const char *path, ct_err *err) { return remove_at(AT_FDCWD, path, path, 0, err); }
