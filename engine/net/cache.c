// cache.c - the on-disk key/value cache (see cache.h).
#include "net/cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/sha256.h"

#define MAGIC "ctrace-cache 1 "

void ct_cache_default_dir(char *buf, size_t n) {
    const char *e;
    if ((e = getenv("CTRACE_CACHE")) && *e) snprintf(buf, n, "%s", e);
    else if ((e = getenv("XDG_CACHE_HOME")) && *e) snprintf(buf, n, "%s/ctrace", e);
    else snprintf(buf, n, "%s/.cache/ctrace", (e = getenv("HOME")) && *e ? e : ".");
}

ct_status ct_cache_open(ct_cache *c, const char *dir, int64_t max_bytes, ct_err *err) {
    memset(c, 0, sizeof *c);
    if (dir && *dir) snprintf(c->dir, sizeof c->dir, "%s", dir);
    else ct_cache_default_dir(c->dir, sizeof c->dir);
    c->max_bytes = max_bytes > 0 ? max_bytes : (int64_t)1 << 30;
    return ct_mkdirs(NULL, c->dir, err);
}

static void sha_hex(const void *data, size_t n, char hex[65]) {
    ct_sha256 s;
    ct_sha256_init(&s);
    ct_sha256_update(&s, data, n);
    ct_sha256_hex(&s, hex);
}

static void entry_path(const ct_cache *c, const char *key, char *out, size_t n, char sub[]) {
    char h[65];
    sha_hex(key, strlen(key), h);
    snprintf(sub, 1100, "%s/%.2s", c->dir, h);
    snprintf(out, n, "%s/%s.entry", sub, h);
}

ct_status ct_cache_get(const ct_cache *c, const char *key, char **data, size_t *n, ct_err *err) {
    char path[1200], sub[1100];
    entry_path(c, key, path, sizeof path, sub);
    *data = NULL;
    *n = 0;
    char *buf;
    size_t len;
    if (!ct_is_file(path) || ct_read_file(NULL, path, &buf, &len, (size_t)c->max_bytes + 4096, NULL))
        return ct_fail(err, CT_STATUS_NOT_FOUND, "'%s' is not in the cache", key);
    // header: MAGIC <64 hex> <length>\n<key>\n<payload>
    char want[65] = "", got[65];
    unsigned long long plen = 0;
    size_t klen = strlen(key), mlen = strlen(MAGIC);
    const char *nl = memchr(buf, '\n', len);
    size_t hlen = nl ? (size_t)(nl - buf) + 1 : 0;
    int ok = nl && len > mlen && memcmp(buf, MAGIC, mlen) == 0 &&
             sscanf(buf + mlen, "%64[0-9a-f] %llu", want, &plen) == 2 && strlen(want) == 64 &&
             len >= hlen + klen + 1 && memcmp(buf + hlen, key, klen) == 0 && buf[hlen + klen] == '\n' &&
             plen == len - hlen - klen - 1;
    if (ok) {
        sha_hex(buf + hlen + klen + 1, (size_t)plen, got);
        ok = strcmp(got, want) == 0;
    }
    if (!ok) {   // torn or tampered: remove it so the next writer replaces it
        free(buf);
        unlink(path);
        return ct_fail(err, CT_STATUS_NOT_FOUND, "'%s': the cache entry %s failed its check and was removed", key, path);
    }
    memmove(buf, buf + hlen + klen + 1, (size_t)plen);
    buf[plen] = 0;
    utimensat(AT_FDCWD, path, NULL, 0);   // recently used
    *data = buf;
    *n = (size_t)plen;
    return CT_OK;
}

ct_status ct_cache_put(const ct_cache *c, const char *key, const void *data, size_t n, ct_err *err) {
    char path[1200], sub[1100], tmp[1300], hex[65];
    entry_path(c, key, path, sizeof path, sub);
    ct_status rc = ct_mkdirs(NULL, sub, err);
    if (rc) return rc;
    static unsigned counter;
    snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path, (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    sha_hex(data, n, hex);
    FILE *f = fopen(tmp, "wb");
    if (!f) return ct_fail(err, CT_STATUS_IO, "cannot write cache entry %s: %s", tmp, strerror(errno));
    int ok = fprintf(f, MAGIC "%s %zu\n%s\n", hex, n, key) > 0 && fwrite(data, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ct_fail(err, CT_STATUS_IO, "cannot write cache entry %s: %s", path, strerror(e));
    }
    return CT_OK;
}

typedef struct {
    char path[1400];
    int64_t size;
    struct timespec used;
} entry;

static int by_age(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->used.tv_sec != y->used.tv_sec) return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
    if (x->used.tv_nsec != y->used.tv_nsec) return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
    return strcmp(x->path, y->path);
}

ct_status ct_cache_trim(const ct_cache *c, int64_t *total_out, ct_err *err) {
    char lockp[1100];
    snprintf(lockp, sizeof lockp, "%s/.trim.lock", c->dir);
    int lk = open(lockp, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (lk < 0) return ct_fail(err, CT_STATUS_IO, "cannot open %s: %s", lockp, strerror(errno));
    if (flock(lk, LOCK_EX | LOCK_NB) != 0) {   // another process is trimming
        close(lk);
        if (total_out) *total_out = -1;
        return CT_OK;
    }
    entry *es = NULL;
    size_t n = 0, cap = 0;
    int64_t total = 0;
    time_t now = time(NULL);
    ct_status rc = CT_OK;
    DIR *top = opendir(c->dir);
    struct dirent *d;
    while (top && (d = readdir(top))) {
        if (strlen(d->d_name) != 2) continue;
        char sub[1100];
        snprintf(sub, sizeof sub, "%s/%s", c->dir, d->d_name);
        DIR *s = opendir(sub);
        struct dirent *f;
        while (s && (f = readdir(s))) {
            size_t L = strlen(f->d_name);
            int is_entry = L > 6 && strcmp(f->d_name + L - 6, ".entry") == 0;
            int is_tmp = L > 4 && strcmp(f->d_name + L - 4, ".tmp") == 0;
            if (!is_entry && !is_tmp) continue;
            char p[1400];
            snprintf(p, sizeof p, "%s/%s", sub, f->d_name);
            struct stat sb;
            if (stat(p, &sb) != 0) continue;
            if (is_tmp) {   // left by a process that died mid-write
                if (now - sb.st_mtime > 3600) unlink(p);
                continue;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                entry *ne = realloc(es, cap * sizeof *es);
                if (!ne) {
                    rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
                    break;
                }
                es = ne;
            }
            snprintf(es[n].path, sizeof es[n].path, "%s", p);
            es[n].size = sb.st_size;
            es[n].used = sb.st_mtim;
            total += sb.st_size;
            n++;
        }
        if (s) closedir(s);
        if (rc) break;
    }
    if (top) closedir(top);
    if (!rc && total > c->max_bytes) {
        qsort(es, n, sizeof *es, by_age);
        int64_t goal = c->max_bytes / 10 * 9;
        for (size_t i = 0; i < n && total > goal; i++)
            if (unlink(es[i].path) == 0 || errno == ENOENT) total -= es[i].size;
    }
    free(es);
    flock(lk, LOCK_UN);
    close(lk);
    if (total_out) *total_out = total;
    return rc;
}
