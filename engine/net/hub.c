// hub.c - Hugging Face files in the standard hub cache (see hub.h).
#include "net/hub.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "net/neuronpedia.h"
#include "core/sha256.h"

void ct_hub_init(ct_hub *h) {
    memset(h, 0, sizeof *h);
    const char *e;
    ct_url_base(h->endpoint, sizeof h->endpoint, (e = getenv("HF_ENDPOINT")) && *e ? e : "https://huggingface.co");
    if ((e = getenv("HF_HUB_CACHE")) && *e) snprintf(h->cache, sizeof h->cache, "%s", e);
    else if ((e = getenv("HF_HOME")) && *e) snprintf(h->cache, sizeof h->cache, "%s/hub", e);
    else if ((e = getenv("XDG_CACHE_HOME")) && *e) snprintf(h->cache, sizeof h->cache, "%s/huggingface/hub", e);
    else snprintf(h->cache, sizeof h->cache, "%s/.cache/huggingface/hub", (e = getenv("HOME")) && *e ? e : ".");
    if ((e = getenv("HF_TOKEN")) && *e) snprintf(h->auth, sizeof h->auth, "Authorization: Bearer %s", e);
    h->offline = ct_offline_env();
    h->progress = 1;
    h->http = ct_http_defaults();
    h->budget = -1;
}

// ---- names ------------------------------------------------------------------

static int name_ok(const char *s, size_t n) {
    if (n == 0 || n > 96 || s[0] == '.' || s[0] == '-') return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') return 0;
    return !(n >= 2 && memmem(s, n, "..", 2));
}

// A relative path whose segments are non-empty, not "." or "..", without control characters.
static int path_ok(const char *p, int allow_slash) {
    if (!*p || *p == '/') return 0;
    for (const char *s = p; *s;) {
        size_t k = strcspn(s, "/");
        if (k == 0 || (k == 1 && s[0] == '.') || (k == 2 && s[0] == '.' && s[1] == '.')) return 0;
        if (!allow_slash && s[k]) return 0;
        for (size_t i = 0; i < k; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == '\\' || s[i] == 0x7f) return 0;
        s += k;
        if (*s == '/') s++;
        if (!*s && s[-1] == '/') return 0;
    }
    return 1;
}

ct_status ct_hub_parse_uri(const char *uri, char repo[256], char path[1024], char rev[256], ct_err *err) {
    const char *s = uri;
    if (strncmp(s, "hf://", 5) == 0) s += 5;
    char buf[1400];
    if (strlen(s) >= sizeof buf) return ct_fail(err, CT_STATUS_BAD_ARG, "'%.64s...': too long for a Hugging Face address", uri);
    strcpy(buf, s);
    snprintf(rev, 256, "main");
    char *q = strchr(buf, '?');
    if (q) {
        *q++ = 0;
        if (strncmp(q, "revision=", 9) != 0 || strlen(q + 9) >= 256 || !path_ok(q + 9, 1))
            return ct_fail(err, CT_STATUS_BAD_ARG, "'%s': expected ?revision=<branch, tag or commit>", uri);
        snprintf(rev, 256, "%s", q + 9);
    }
    char *s1 = strchr(buf, '/');
    char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    size_t org_n = s1 ? (size_t)(s1 - buf) : 0, name_n = s1 ? (s2 ? (size_t)(s2 - s1 - 1) : strlen(s1 + 1)) : 0;
    if (!s1 || !name_ok(buf, org_n) || !name_ok(s1 + 1, name_n))
        return ct_fail(err, CT_STATUS_BAD_ARG, "'%s': expected hf://org/repo/path[?revision=...] or org/repo", uri);
    snprintf(repo, 256, "%.*s/%.*s", (int)org_n, buf, (int)name_n, s1 + 1);
    path[0] = 0;
    if (s2) {
        if (strlen(s2 + 1) >= 1024 || !path_ok(s2 + 1, 1))
            return ct_fail(err, CT_STATUS_BAD_ARG, "'%s': the path inside the repository must be relative, without '..'", uri);
        snprintf(path, 1024, "%s", s2 + 1);
    }
    return CT_OK;
}

static int is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return 0;
    return 1;
}

static void repo_dir(const ct_hub *h, const char *repo, char *out, size_t n) {
    char folder[300];
    snprintf(folder, sizeof folder, "models--%s", repo);
    char *sl = strchr(folder, '/');
    if (sl) {   // models--org--name
        memmove(sl + 2, sl + 1, strlen(sl + 1) + 1);
        sl[0] = sl[1] = '-';
    }
    snprintf(out, n, "%s/%s", h->cache, folder);
}

static int read_line(const char *path, char *out, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int ok = fgets(out, (int)n, f) != NULL;
    fclose(f);
    if (ok) out[strcspn(out, "\r\n")] = 0;
    return ok ? 0 : -1;
}

ct_status ct_hub_cached(const ct_hub *h, const char *repo, const char *path, const char *rev, char *out, size_t n,
                        ct_err *err) {
    char dir[1400], ref[1800], commit[128];
    repo_dir(h, repo, dir, sizeof dir);
    snprintf(commit, sizeof commit, "%s", rev);
    if (!is_hex(rev, 40)) {
        snprintf(ref, sizeof ref, "%s/refs/%s", dir, rev);
        if (read_line(ref, commit, sizeof commit) || !is_hex(commit, 40))
            return ct_fail(err, CT_STATUS_NOT_FOUND, "hf://%s/%s?revision=%s is not in the Hugging Face cache (%s has no %s)",
                           repo, path, rev, h->cache, ref);
    }
    snprintf(out, n, "%s/snapshots/%s/%s", dir, commit, path);
    if (!ct_is_file(out))
        return ct_fail(err, CT_STATUS_NOT_FOUND, "hf://%s/%s?revision=%s is not in the Hugging Face cache (no %s)", repo,
                       path, rev, out);
    return CT_OK;
}

// ---- downloading ----------------------------------------------------------------

typedef struct {
    const char *name;
    double last;
    int drawn;
} bar;


static void draw(void *ud, int64_t done, int64_t total) {
    bar *b = ud;
    double t = ct_now();
    if (t - b->last < 0.1 && done != total) return;
    b->last = t;
    b->drawn = 1;
    if (total > 0)
        fprintf(stderr, "\r%s  %.1f / %.1f MB  %3d%%", b->name, done / 1e6, total / 1e6, (int)(100.0 * done / total));
    else fprintf(stderr, "\r%s  %.1f MB", b->name, done / 1e6);
}

static void strip_etag(const char *in, char *out, size_t n) {
    if (strncmp(in, "W/", 2) == 0) in += 2;
    size_t k = strlen(in);
    if (k >= 2 && in[0] == '"' && in[k - 1] == '"') in++, k -= 2;
    if (k >= n) k = n - 1;
    memcpy(out, in, k);
    out[k] = 0;
}

// Holds an exclusive lock on path, waiting for another process to finish; cancellable, and
// given up at deadline (ct_now() seconds; 0 = none).
static ct_status lock_file(const ct_hub *h, const char *path, const char *what, double deadline, int *fd, ct_err *err) {
    *fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (*fd < 0) return ct_fail(err, CT_STATUS_IO, "cannot open lock %s: %s", path, strerror(errno));
    int told = 0;
    while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        if (ct_ctx_cancelled(h->http.ctx)) {
            close(*fd);
            return ct_fail(err, CT_STATUS_CANCELLED, "cancelled while waiting for %s", path);
        }
        if (deadline > 0 && ct_now() >= deadline) {
            close(*fd);
            return ct_fail(err, CT_STATUS_TIMEOUT, "%s: file_timeout passed while another process held %s", what, path);
        }
        if (!told++) fprintf(stderr, "ctrace: waiting for another process downloading %s\n", what);
        usleep(100000);
    }
    return CT_OK;
}

static ct_status verify(const char *file, const char *etag, int64_t size, const char *what, ct_err *err) {
    struct stat sb;
    if (stat(file, &sb) != 0) return ct_fail(err, CT_STATUS_IO, "cannot stat %s: %s", file, strerror(errno));
    if (size >= 0 && sb.st_size != size)
        return ct_fail(err, CT_STATUS_CHECKSUM, "%s: downloaded %lld bytes; the server announced %lld", what,
                       (long long)sb.st_size, (long long)size);
    char hex[65];
    ct_status rc = CT_OK;
    if (is_hex(etag, 64)) {
        if (!(rc = ct_sha256_file(NULL, file, hex, err)) && strcmp(hex, etag) != 0)
            rc = ct_fail(err, CT_STATUS_CHECKSUM, "%s: downloaded bytes have sha256 %s; the server's ETag says %s", what, hex, etag);
    } else if (is_hex(etag, 40)) {
        if (!(rc = ct_git_blob_sha1_file(NULL, file, hex, err)) && strcmp(hex, etag) != 0)
            rc = ct_fail(err, CT_STATUS_CHECKSUM, "%s: downloaded bytes have git blob sha1 %s; the server's ETag says %s", what,
                         hex, etag);
    }
    return rc;
}

// Points link at target with a relative symlink (replacing what is there).
static ct_status link_to(const char *link, const char *target, int depth, ct_err *err) {
    char rel[3000] = "";
    for (int i = 0; i < depth; i++) strcat(rel, "../");
    strncat(rel, target, sizeof rel - strlen(rel) - 1);
    char tmp[2700];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", link, (long)getpid());
    unlink(tmp);
    if (symlink(rel, tmp) != 0 || rename(tmp, link) != 0) {
        int e = errno;
        unlink(tmp);
        return ct_fail(err, CT_STATUS_IO, "cannot link %s -> %s: %s", link, rel, strerror(e));
    }
    return CT_OK;
}

static ct_status write_ref(const char *dir, const char *rev, const char *commit, ct_err *err) {
    char p[1800], cur[128];
    snprintf(p, sizeof p, "%s/refs/%s", dir, rev);
    if (read_line(p, cur, sizeof cur) == 0 && strcmp(cur, commit) == 0) return CT_OK;
    char d[1800];
    snprintf(d, sizeof d, "%s", p);
    *strrchr(d, '/') = 0;
    ct_status rc = ct_mkdirs(NULL, d, err);
    return rc ? rc : ct_write_file(NULL, p, commit, strlen(commit), err);
}

ct_status ct_hub_file(ct_hub *h, const char *repo, const char *path, const char *rev, char *out, size_t n,
                      ct_err *err) {
    char what[1400];
    snprintf(what, sizeof what, "hf://%s/%s%s%s", repo, path, strcmp(rev, "main") ? "?revision=" : "",
             strcmp(rev, "main") ? rev : "");
    char r2[256], p2[1024], v2[256], full[1400];
    snprintf(full, sizeof full, "%s/%s?revision=%s", repo, path, rev);
    ct_status rc = ct_hub_parse_uri(full, r2, p2, v2, err);
    if (rc) return rc;
    if (!p2[0]) return ct_fail(err, CT_STATUS_BAD_ARG, "%s: no file path inside the repository", what);
    if (h->offline) {
        if (!ct_hub_cached(h, repo, path, rev, out, n, NULL)) return CT_OK;
        return ct_fail(err, CT_STATUS_OFFLINE, "%s is not in the Hugging Face cache (%s) and offline mode is on "
                       "(HF_HUB_OFFLINE or CTRACE_OFFLINE); download it on a machine with network access", what, h->cache);
    }
    if (is_hex(rev, 40) && !ct_hub_cached(h, repo, path, rev, out, n, NULL)) return CT_OK;   // a commit never changes
    // file_timeout (http.total_timeout_ms) bounds the file as a whole: the HEAD, waiting for the
    // lock and the download share it
    double deadline = h->http.total_timeout_ms > 0 ? ct_now() + h->http.total_timeout_ms / 1000.0 : 0;

    // 1. what the server says the file is
    char url[2400];
    snprintf(url, sizeof url, "%s/%s/resolve/", h->endpoint, repo);
    if (ct_url_escape(url, sizeof url, rev, 0) || ct_url_escape(url, sizeof url, "/", 1) ||
        ct_url_escape(url, sizeof url, path, 1))
        return ct_fail(err, CT_STATUS_BAD_ARG, "%s: address too long", what);
    ct_http_req head = {.method = "HEAD", .url = url, .follow = CT_FOLLOW_RELATIVE, .auth = h->auth[0] ? h->auth : NULL,
                        .auth_prefix = h->endpoint};
    rc = ct_http_perform(&head, 1, &h->http);   // its own deadline: total_timeout_ms from now
    h->requests += head.attempts;
    if (rc == CT_STATUS_NETWORK || rc == CT_STATUS_TIMEOUT) {   // unreachable: the cache may still have it
        if (!ct_hub_cached(h, repo, path, rev, out, n, NULL)) {
            fprintf(stderr, "ctrace: %s; using the cached %s\n", head.err.msg, what);
            ct_http_req_free(&head);
            return CT_OK;
        }
    }
    if (rc) {
        if (head.error_code[0]) rc = ct_fail(err, rc, "%s: %s (%s)", what, head.error_code, head.err.msg);
        else rc = ct_fail(err, rc, "%s: %s", what, head.err.msg);
        if (head.status == 401 || head.status == 403)
            ct_err_where(err, h->auth[0] ? "HF_TOKEN was sent: check access to the repository"
                                          : "no HF_TOKEN set: private and gated repositories need one");
        ct_http_req_free(&head);
        return rc;
    }
    char etag[160], commit[64], dl_url[2400];
    strip_etag(head.linked_etag[0] ? head.linked_etag : head.etag, etag, sizeof etag);
    snprintf(commit, sizeof commit, "%s", head.repo_commit);
    int64_t size = head.linked_size >= 0 ? head.linked_size : head.status < 300 ? head.content_length : -1;
    snprintf(dl_url, sizeof dl_url, "%s", head.status >= 300 && head.location[0] ? head.location : head.final_url);
    ct_http_req_free(&head);
    if (!etag[0] || !is_hex(commit, 40) || strchr(etag, '/') || strstr(etag, ".."))
        return ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: the server sent no usable ETag and X-Repo-Commit (etag '%s', commit '%s')",
                       what, etag, commit);

    // 2. the cache entry
    char dir[1400], blob[1700], pointer[2600], tmp[1800], lockp[2800], d[2600];
    repo_dir(h, repo, dir, sizeof dir);
    snprintf(blob, sizeof blob, "%s/blobs/%s", dir, etag);
    snprintf(pointer, sizeof pointer, "%s/snapshots/%s/%s", dir, commit, path);
    if (strcmp(rev, commit) != 0 && (rc = write_ref(dir, rev, commit, err))) return rc;
    struct stat sb;
    if (stat(pointer, &sb) == 0 && S_ISREG(sb.st_mode) && (size < 0 || sb.st_size == size)) {
        snprintf(out, n, "%s", pointer);
        return CT_OK;
    }
    if (h->budget >= 0 && size > h->budget)
        return ct_fail(err, CT_STATUS_TOO_LARGE, "%s: %lld bytes, more than this run may still download (%lld bytes; "
                       "ctrace run --download-limit)", what, (long long)size, (long long)h->budget);
    snprintf(d, sizeof d, "%s/blobs", dir);
    if ((rc = ct_mkdirs(NULL, d, err))) return rc;
    snprintf(d, sizeof d, "%s", pointer);
    *strrchr(d, '/') = 0;
    if ((rc = ct_mkdirs(NULL, d, err))) return rc;
    snprintf(d, sizeof d, "%s/.locks/%s", h->cache, strrchr(dir, '/') + 1);
    if ((rc = ct_mkdirs(NULL, d, err))) return rc;
    snprintf(lockp, sizeof lockp, "%s/%s.lock", d, etag);
    int fd;
    if ((rc = lock_file(h, lockp, what, deadline, &fd, err))) return rc;

    // 3. the bytes (unless another process fetched them while we waited)
    if (!(stat(blob, &sb) == 0 && (size < 0 || sb.st_size == size))) {
        snprintf(tmp, sizeof tmp, "%s.incomplete", blob);
        bar b = {.name = what};
        ct_http_opts o = h->http;
        if (h->budget >= 0 && o.max_file > h->budget) o.max_file = h->budget;   // a size not announced
        if (deadline > 0) {   // what is left of file_timeout (at least 1 ms: the request then fails at once)
            long left = (long)((deadline - ct_now()) * 1000.0);
            o.total_timeout_ms = left > 1 ? left : 1;
        }
        if (h->progress && isatty(2)) {
            o.progress = draw;
            o.progress_ud = &b;
        }
        ct_http_req get = {.method = "GET", .url = dl_url, .out_path = tmp, .follow = CT_FOLLOW_ALL,
                           .auth = h->auth[0] ? h->auth : NULL, .auth_prefix = h->endpoint,
                           .expect_known = size >= 0, .expect_size = size};   // never more bytes than announced
        rc = ct_http_perform(&get, 1, &o);
        h->requests += get.attempts;
        if (b.drawn) fputc('\n', stderr);
        if (rc == CT_STATUS_TIMEOUT && deadline > 0 && ct_now() >= deadline - 0.01)
            rc = ct_fail(err, rc, "%s: not downloaded within file_timeout (%.0f s): %s", what,
                         h->http.total_timeout_ms / 1000.0, get.err.msg);
        else if (rc) rc = ct_fail(err, rc, "%s: %s", what, get.err.msg);
        ct_http_req_free(&get);
        if (!rc && stat(tmp, &sb) == 0 && size >= 0 && sb.st_size < size)   // cut short: keep it to resume
            rc = ct_fail(err, CT_STATUS_NETWORK, "%s: the download stopped at %lld of %lld bytes; run again to resume", what,
                         (long long)sb.st_size, (long long)size);
        else if (!rc && (rc = verify(tmp, etag, size, what, err)) == CT_STATUS_CHECKSUM)
            unlink(tmp);   // never keep bytes that fail their check
        if (!rc && rename(tmp, blob) != 0) rc = ct_fail(err, CT_STATUS_IO, "cannot rename %s: %s", tmp, strerror(errno));
        if (!rc && h->budget >= 0 && stat(blob, &sb) == 0) h->budget = sb.st_size < h->budget ? h->budget - sb.st_size : 0;
    }
    // 4. the snapshot entry: snapshots/<commit>/<path> -> ../../blobs/<etag> (one more ../ per directory in path)
    if (!rc) {
        int depth = 2;
        for (const char *c = path; *c; c++) depth += *c == '/';
        char target[300];
        snprintf(target, sizeof target, "blobs/%s", etag);
        rc = link_to(pointer, target, depth, err);
    }
    flock(fd, LOCK_UN);
    close(fd);
    if (!rc) snprintf(out, n, "%s", pointer);
    return rc;
}

ct_status ct_hub_uri(ct_hub *h, const char *uri, char *out, size_t n, ct_err *err) {
    char repo[256], path[1024], rev[256];
    ct_status rc = ct_hub_parse_uri(uri, repo, path, rev, err);
    if (rc) return rc;
    if (!path[0]) return ct_fail(err, CT_STATUS_BAD_ARG, "'%s': expected hf://org/repo/path (a file in the repository)", uri);
    return ct_hub_file(h, repo, path, rev, out, n, err);
}
