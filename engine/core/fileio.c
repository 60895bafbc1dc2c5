// fileio.c - checked reads, mappings and atomic writes (see fileio.h).
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static ct_status open_error(const char *path, ct_err *err) {
    return ct_fail(err, errno == ENOENT ? CT_STATUS_NOT_FOUND : CT_STATUS_IO, "cannot open %s: %s", path,
                   strerror(errno));
}

// The resolved path of the file behind fd (checked against the roots: the file actually opened,
// whatever links path went through). A location that cannot be had whole (longer than PATH_MAX)
// is refused: the read check denies by default.
static ct_status fd_path(const ct_ctx *c, int fd, const char *path, char *real, ct_err *err) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, real, PATH_MAX);
    if (k >= PATH_MAX) return ct_ctx_unresolved_read(c, path, ENAMETOOLONG, err);   // cut: not the file's path
    if (k > 0 && real[0] == '/') {
        real[k] = 0;
        return CT_OK;
    }
    // no /proc: resolve the name and make sure it is the same file
    struct stat a, b;
    if (!realpath(path, real)) return ct_ctx_unresolved_read(c, path, errno, err);
    if (stat(real, &a) != 0 || fstat(fd, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return ct_ctx_unresolved_read(c, path, ESTALE, err);
    return CT_OK;
}

ct_status ct_open_read(ct_ctx *c, const char *path, int *fd_out, int64_t *size, ct_err *err) {
    *fd_out = -1;
    // with read roots, the name is checked before anything is opened (no device or FIFO outside the
    // roots is ever opened), and the file opened after (links swapped in between do not count)
    ct_status rc = ct_ctx_check_read(c, path, err);
    if (rc) return rc;
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return open_error(path, err);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ct_fail(err, CT_STATUS_IO, "%s is not a regular file", path);
    }
    char real[PATH_MAX + 1];
    if (c && c->n_read_roots > 0) rc = fd_path(c, fd, path, real, err);   // only roots need it
    if (!rc && !ct_ctx_readable(c, real)) rc = ct_ctx_refuse_read(c, path, err);
    if (!rc) rc = ct_ctx_note_file(c, path, (int64_t)sb.st_size, err);
    if (rc) {
        close(fd);
        return rc;
    }
    *fd_out = fd;
    *size = (int64_t)sb.st_size;
    return CT_OK;
}

ct_status ct_read_file(ct_ctx *c, const char *path, char **buf, size_t *len, size_t max_len, ct_err *err) {
    *buf = NULL;
    *len = 0;
    int fd;
    int64_t size;
    ct_status rc = ct_open_read(c, path, &fd, &size, err);
    if (rc) return rc;
    size_t n = (size_t)size;
    if (max_len && n > max_len) {
        close(fd);
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s is %zu bytes; expected at most %zu", path, n, max_len);
    }
    char *b = malloc(n + 1);
    if (!b) {
        close(fd);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory reading %s (%zu bytes)", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, b + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    if (got != n) {
        free(b);
        return ct_fail(err, CT_STATUS_IO, "short read on %s: %zu of %zu bytes", path, got, n);
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return CT_OK;
}

// Files from 2 MiB on are mapped at a 2 MiB boundary, so the page cache's 2 MiB pieces of them
// (see CT_ADVISE_HUGE) can be mapped whole: an address range reserved 2 MiB larger, the file
// placed at its first boundary, the rest given back. (Recent kernels place large file mappings
// so themselves; older ones do not.)
#define MAP_ALIGN ((size_t)2 << 20)
static void *map_aligned(int fd, size_t n) {
    if (n < MAP_ALIGN) return mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    uint8_t *r = mmap(NULL, n + MAP_ALIGN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) return mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    uint8_t *a = (uint8_t *)(((uintptr_t)r + MAP_ALIGN - 1) & ~(uintptr_t)(MAP_ALIGN - 1));
    void *m = mmap(a, n, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    if (m == MAP_FAILED) {
        munmap(r, n + MAP_ALIGN);
        return mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    }
    uintptr_t pg = sysconf(_SC_PAGESIZE) > 0 ? (uintptr_t)sysconf(_SC_PAGESIZE) : 4096;
    uint8_t *end = (uint8_t *)(((uintptr_t)a + n + pg - 1) & ~(pg - 1));   // past the file's last page
    if (a > r) munmap(r, (size_t)(a - r));
    if (r + n + MAP_ALIGN > end) munmap(end, (size_t)(r + n + MAP_ALIGN - end));
    return m;
}

ct_status ct_map_file(ct_ctx *c, const char *path, void **map, size_t *size, ct_err *err) {
    *map = NULL;
    *size = 0;
    int fd;
    int64_t n;
    ct_status rc = ct_open_read(c, path, &fd, &n, err);
    if (rc) return rc;
    if (n > 0) {
        void *m = map_aligned(fd, (size_t)n);
        if (m == MAP_FAILED) {
            close(fd);
            return ct_fail(err, CT_STATUS_IO, "cannot map %s: %s", path, strerror(errno));
        }
        *map = m;
        *size = (size_t)n;
    }
    close(fd);
    return CT_OK;
}

void ct_unmap_file(void *map, size_t size) {
    if (map) munmap(map, size);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22   // Linux 5.14
#endif

void ct_map_advise(const void *p, size_t n, ct_advice advice) {
    static long page;
    if (!p || !n) return;
    if (!page) page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1), b = ((uintptr_t)p + n + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
    int adv = advice == CT_ADVISE_POPULATE   ? MADV_POPULATE_READ
              : advice == CT_ADVISE_WILLNEED ? MADV_WILLNEED
              : advice == CT_ADVISE_HUGE     ? MADV_HUGEPAGE
              : advice == CT_ADVISE_DONTNEED ? MADV_DONTNEED
                                             : MADV_RANDOM;
    if (madvise((void *)a, b - a, adv) != 0 && advice == CT_ADVISE_POPULATE && errno == EINVAL)
        madvise((void *)a, b - a, MADV_WILLNEED);   // an older kernel: read ahead at least
    if (advice == CT_ADVISE_RANDOM) madvise((void *)a, b - a, MADV_NOHUGEPAGE);   // nor 2 MiB at a time
}

// Pieces a range is mapped in, so ct_prefetch_stop waits for at most one (64 MiB: about 25 ms
// from a disk reading 2.9 GB/s).
#define PREFETCH_PIECE ((size_t)64 << 20)

struct ct_prefetch {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const void **ptr;   // (n,)
    size_t *len;        // (n,)
    int n, ahead;
    int at;             // the range the caller works on (-1 before the first)
    atomic_int stop;
};

static void *prefetch_main(void *arg) {
    ct_prefetch *p = arg;
    for (int i = 0; i < p->n; i++) {
        pthread_mutex_lock(&p->mu);
        while (!atomic_load(&p->stop) && i > p->at + p->ahead) pthread_cond_wait(&p->cv, &p->mu);
        int stop = atomic_load(&p->stop);
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        const char *a = p->ptr[i];
        for (size_t off = 0; off < p->len[i] && !atomic_load(&p->stop); off += PREFETCH_PIECE)
            ct_map_advise(a + off, p->len[i] - off < PREFETCH_PIECE ? p->len[i] - off : PREFETCH_PIECE, CT_ADVISE_POPULATE);
    }
    return NULL;
}

ct_prefetch *ct_prefetch_start(const void *const *ptr, const size_t *len, int n, int ahead) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += len[i];
    if (total == 0) return NULL;   // nothing to read
    ct_prefetch *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->ptr = malloc(sizeof(void *) * (size_t)n);
    p->len = malloc(sizeof(size_t) * (size_t)n);
    if (!p->ptr || !p->len) goto fail;
    memcpy(p->ptr, ptr, sizeof(void *) * (size_t)n);
    memcpy(p->len, len, sizeof(size_t) * (size_t)n);
    p->n = n, p->ahead = ahead < 0 ? 0 : ahead, p->at = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, prefetch_main, p) == 0) return p;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
fail:
    free(p->ptr), free(p->len), free(p);
    return NULL;
}

void ct_prefetch_at(ct_prefetch *p, int i) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->at = i;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void ct_prefetch_stop(ct_prefetch *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->ptr), free(p->len), free(p);
}

int ct_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int ct_is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int ct_path_join(char *out, size_t n, const char *dir, const char *name) {
    int k = snprintf(out, n, "%s/%s", dir, name);
    return k >= 0 && (size_t)k < n;
}

ct_status ct_mkdirs(ct_ctx *c, const char *path, ct_err *err) {
    char buf[4096];
    if (!*path || strlen(path) >= sizeof buf) return ct_fail(err, CT_STATUS_BAD_ARG, "mkdirs: path empty or too long");
    ct_status rc = ct_ctx_check_write(c, path, err);
    if (rc) return rc;
    strcpy(buf, path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char ch = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return ct_fail(err, CT_STATUS_IO, "cannot create directory %s: %s", buf, strerror(errno));
            *p = ch;
            if (!ch) break;
        }
    }
    return CT_OK;
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

ct_status ct_wfile_open(ct_ctx *c, ct_wfile *w, const char *path, ct_err *err) {
    memset(w, 0, sizeof *w);
    if (strlen(path) >= sizeof w->path) return ct_fail(err, CT_STATUS_BAD_ARG, "writing %.200s...: path too long", path);
    ct_status rc = ct_ctx_check_write(c, path, err);
    if (rc) return rc;
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmpXXXXXX", path);
    w->ctx = c;
    int fd = mkstemp(w->tmp);   // a new file of our own: never a link planted under that name
    if (fd < 0) {
        if (c) c->write_errors++;
        return ct_fail(err, CT_STATUS_IO, "cannot write %s: %s", path, strerror(errno));
    }
    mode_t mask = umask(0);     // mkstemp makes 0600; a written file gets the usual 0666 less the umask
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    if (!(w->f = fdopen(fd, "wb"))) {
        close(fd);
        unlink(w->tmp);
        return ct_fail(err, CT_STATUS_IO, "cannot write %s: %s", path, strerror(errno));
    }
    return CT_OK;
}

void ct_wfile_abort(ct_wfile *w) {
    if (!w->f) return;
    fclose(w->f);
    unlink(w->tmp);
    w->f = NULL;
}

ct_status ct_wfile_commit(ct_wfile *w, ct_err *err) {
    if (!w->f) return ct_fail(err, CT_STATUS_IO, "writing %s: the file is not open", w->path);
    int ok = !ferror(w->f) && fflush(w->f) == 0;
    int e = errno;
    ok = ok && fsync(fileno(w->f)) == 0;
    if (!ok) e = errno;
    if (fclose(w->f) != 0 && ok) ok = 0, e = errno;
    w->f = NULL;
    if (ok && rename(w->tmp, w->path) != 0) ok = 0, e = errno;
    if (!ok) {
        unlink(w->tmp);
        if (w->ctx) w->ctx->write_errors++;
        return ct_fail(err, CT_STATUS_IO, "cannot write %s: %s", w->path, strerror(e ? e : EIO));
    }
    return CT_OK;
}

ct_status ct_write_file(ct_ctx *c, const char *path, const void *data, size_t n, ct_err *err) {
    ct_wfile w;
    ct_status rc = ct_wfile_open(c, &w, path, err);
    if (rc) return rc;
    if (n && fwrite(data, 1, n, w.f) != n) {
        int e = errno;
        ct_wfile_abort(&w);
        if (c) c->write_errors++;
        return ct_fail(err, CT_STATUS_IO, "cannot write %s: %s", path, strerror(e ? e : EIO));
    }
    return ct_wfile_commit(&w, err);
}
