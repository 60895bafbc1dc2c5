// fileio.c - file helpers shared by the loaders.
#include "core/fileio.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static ct_status open_error(const char *path, ct_err *err) {
    return ct_fail(err, errno == ENOENT ? CT_STATUS_NOT_FOUND : CT_STATUS_IO, "cannot open %s: %s", path,
                   strerror(errno));
}

ct_status ct_read_file(const char *path, char **buf, size_t *len, size_t max_len, ct_err *err) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return open_error(path, err);
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return ct_fail(err, CT_STATUS_IO, "%s is not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    if (max_len && n > max_len) {
        fclose(f);
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s is %zu bytes; expected at most %zu", path, n, max_len);
    }
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory reading %s (%zu bytes)", path, n);
    }
    size_t got = fread(b, 1, n, f);
    fclose(f);
    if (got != n) {
        free(b);
        return ct_fail(err, CT_STATUS_IO, "short read on %s: %zu of %zu bytes", path, got, n);
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return CT_OK;
}

ct_status ct_map_file(const char *path, void **map, size_t *size, ct_err *err) {
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return open_error(path, err);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ct_fail(err, CT_STATUS_IO, "%s is not a regular file", path);
    }
    if (sb.st_size > 0) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return ct_fail(err, CT_STATUS_IO, "cannot map %s: %s", path, strerror(errno));
        }
        *map = m;
        *size = (size_t)sb.st_size;
    }
    close(fd);
    return CT_OK;
}

void ct_unmap_file(void *map, size_t size) {
    if (map) munmap(map, size);
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

static char g_write_root[4096];   // resolved; empty: writes anywhere

ct_status ct_set_write_root(const char *root, ct_err *err) {
    if (!root || !*root) {
        g_write_root[0] = 0;
        return CT_OK;
    }
    char buf[PATH_MAX];
    if (!realpath(root, buf)) return ct_fail(err, CT_STATUS_IO, "write root %s: %s", root, strerror(errno));
    snprintf(g_write_root, sizeof g_write_root, "%s", buf);
    return CT_OK;
}

ct_status ct_check_write(const char *path, ct_err *err) {
    if (!g_write_root[0]) return CT_OK;
    // resolve the deepest existing directory of path, then add the rest back
    char dir[PATH_MAX], real[PATH_MAX], full[2 * PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    const char *rest = "";
    char *slash;
    for (;;) {
        slash = strrchr(dir, '/');
        if (!slash) {
            if (!realpath(".", real)) return ct_fail(err, CT_STATUS_IO, "cannot resolve the current directory");
            rest = path;
            break;
        }
        *slash = 0;
        if (realpath(*dir ? dir : "/", real)) {
            rest = path + (slash - dir) + 1;
            break;
        }
    }
    snprintf(full, sizeof full, "%s/%s", real, rest);
    size_t n = strlen(g_write_root);
    if (strstr(rest, "..") || strncmp(full, g_write_root, n) != 0 || (full[n] != '/' && full[n] != 0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "writing %s: this run may write only under %s", path, g_write_root);
    return CT_OK;
}

ct_status ct_mkdirs(const char *path, ct_err *err) {
    char buf[4096];
    if (!*path || strlen(path) >= sizeof buf) return ct_fail(err, CT_STATUS_BAD_ARG, "mkdirs: path empty or too long");
    strcpy(buf, path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return ct_fail(err, CT_STATUS_IO, "cannot create directory %s: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    return CT_OK;
}
