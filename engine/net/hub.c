// hub.c - Hugging Face files in the standard hub cache (see hub.h).
#include "net/hub.h"

#include <cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
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
    double t0;       // the first call: the rate counts from here
    int64_t done0;   // bytes at t0 (a resumed download starts past 0)
} bar;

static void draw(void *ud, int64_t done, int64_t total) {
    bar *b = ud;
    double t = ct_now();
    if (b->t0 == 0) b->t0 = t, b->done0 = done;
    if (t - b->last < 0.1 && done != total) return;
    b->last = t;
    b->drawn = 1;
    // the rate over this download so far, and the time the rest takes at that rate
    char rate[64] = "";
    double bps = t - b->t0 > 0.2 ? (double)(done - b->done0) / (t - b->t0) : 0;
    if (bps > 0 && total > 0 && done < total)
        snprintf(rate, sizeof rate, "  %.1f MB/s  %.0f s left", bps / 1e6, (double)(total - done) / bps);
    else if (bps > 0)
        snprintf(rate, sizeof rate, "  %.1f MB/s", bps / 1e6);
    if (total > 0)
        fprintf(stderr, "\r%s  %.1f / %.1f MB  %3d%%%-28s", b->name, done / 1e6, total / 1e6, (int)(100.0 * done / total), rate);
    else fprintf(stderr, "\r%s  %.1f MB%-28s", b->name, done / 1e6, rate);
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

// {endpoint}/{repo}/resolve/{rev}/{path}; -1 when it does not fit.
static int resolve_url(const ct_hub *h, const char *repo, const char *path, const char *rev, char *url, size_t n) {
    snprintf(url, n, "%s/%s/resolve/", h->endpoint, repo);
    return ct_url_escape(url, n, rev, 0) || ct_url_escape(url, n, "/", 1) || ct_url_escape(url, n, path, 1) ? -1 : 0;
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
    if (resolve_url(h, repo, path, rev, url, sizeof url)) return ct_fail(err, CT_STATUS_BAD_ARG, "%s: address too long", what);
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
    if (is_hex(rev, 40) && strcmp(rev, commit) != 0)   // asked at a commit, answered for another
        return ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: asked at commit %s, the server answered for commit %s", what, rev,
                       commit);

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
    if (!path[0])
        return ct_fail(err, CT_STATUS_BAD_ARG, "'%s': expected hf://org/repo/path (a file in the repository; a whole "
                       "repository is a snapshot's)", uri);
    return ct_hub_file(h, repo, path, rev, out, n, err);
}

// ---- snapshots ------------------------------------------------------------------------------

void ct_hub_names_free(ct_hub_names *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int names_add(ct_hub_names *s, const char *p, size_t len) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, sizeof *v * (size_t)cap);
        if (!v) return -1;
        s->v = v, s->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, p, len);
    c[len] = 0;
    s->v[s->n++] = c;
    return 0;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void ct_hub_snap_free(ct_hub_snap *s) {
    for (int i = 0; i < s->n; i++) free(s->files[i]);
    free(s->files);
    s->files = NULL;
    s->n = 0;
}

// A string from a server, fit for a message: at most 100 bytes, control characters as '?'.
static const char *shown(const char *s, char buf[128]) {
    size_t i = 0;
    for (; s[i] && i < 100; i++) buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    buf[i] = 0;
    if (s[i]) strcat(buf, "...");
    return buf;
}

// What a JSON value is, for a message.
static const char *json_kind(const cJSON *j, char buf[160]) {
    char b[128];
    if (cJSON_IsString(j)) {
        snprintf(buf, 160, "'%s'", shown(j->valuestring, b));
        return buf;
    }
    return !j ? "nothing" : cJSON_IsNumber(j) ? "a number" : cJSON_IsArray(j) ? "an array" : cJSON_IsObject(j) ? "an object"
         : cJSON_IsBool(j) ? "a boolean" : cJSON_IsNull(j) ? "null" : "another value";
}

// A folder, for a message: 'sub/dir', or the root.
static const char *folder_shown(const char *folder, char buf[140]) {
    char b[128];
    if (!folder[0]) return "the repository's root";
    snprintf(buf, 140, "'%s'", shown(folder, b));
    return buf;
}

// Whether path lies directly in folder ("" = the root); *base: its last segment.
static int in_folder(const char *path, const char *folder, const char **base) {
    const char *sl = strrchr(path, '/');
    size_t dn = sl ? (size_t)(sl - path) : 0;
    if (strlen(folder) != dn || strncmp(path, folder, dn) != 0) return 0;
    *base = sl ? sl + 1 : path;
    return 1;
}

static int name_fits(const char *p, int allow_slash) { return strlen(p) < 1024 && path_ok(p, allow_slash); }

ct_status ct_hub_parse_revision(const char *json, size_t n, const char *what, char sha[41], ct_hub_names *siblings,
                                int *trusted, ct_err *err) {
    *trusted = 0;
    sha[0] = 0;
    cJSON *j = cJSON_ParseWithLength(json, n);
    char k[160], b[128];
    ct_status rc = CT_OK;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "sha"), *sib = cJSON_GetObjectItemCaseSensitive(j, "siblings");
    if (!cJSON_IsObject(j)) {
        rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: the repository's description is not a JSON object", what);
    } else if (!cJSON_IsString(c) || !is_hex(c->valuestring, 40)) {
        rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: the answer names no commit (\"sha\": expected 40 lowercase "
                     "hexadecimal digits, found %s)", what, json_kind(c, k));
    } else {
        snprintf(sha, 41, "%s", c->valuestring);
        int count = cJSON_IsArray(sib) ? cJSON_GetArraySize(sib) : 0;
        if (count >= 1 && count <= CT_HUB_SIBLINGS_TRUSTED) {   // else unreliable: the tree endpoint lists the folder
            const cJSON *e;
            cJSON_ArrayForEach(e, sib) {
                const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "rfilename");
                if (!cJSON_IsString(f)) {
                    rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: a sibling without an \"rfilename\" string (found %s)", what,
                                 json_kind(f, k));
                    break;
                }
                if (!name_fits(f->valuestring, 1)) {
                    rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: the listing names '%s'; expected a relative path inside "
                                 "the repository (no leading '/', no '.' or '..' segment, no control character)", what,
                                 shown(f->valuestring, b));
                    break;
                }
                if (names_add(siblings, f->valuestring, strlen(f->valuestring))) {
                    rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
                    break;
                }
            }
            *trusted = rc == CT_OK;
        }
    }
    cJSON_Delete(j);
    return rc;
}

ct_status ct_hub_parse_tree(const char *json, size_t n, const char *what, const char *folder, ct_hub_names *files,
                            int *entries, ct_err *err) {
    *entries = 0;
    cJSON *j = cJSON_ParseWithLength(json, n);
    char k[160], b[128], fb[140];
    ct_status rc = CT_OK;
    if (!cJSON_IsArray(j)) {
        rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: a page of the listing of %s is not a JSON array (found %s)", what,
                     folder_shown(folder, fb), j ? json_kind(j, k) : "invalid JSON");
        cJSON_Delete(j);
        return rc;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        ++*entries;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type"), *p = cJSON_GetObjectItemCaseSensitive(e, "path");
        const char *base;
        if (!cJSON_IsString(t) || !cJSON_IsString(p)) {
            rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: an entry of the listing without \"type\" and \"path\" strings "
                         "(path: %s)", what, json_kind(p, k));
        } else if (!name_fits(p->valuestring, 1)) {
            rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: the listing names '%s'; expected a relative path inside the "
                         "repository (no leading '/', no '.' or '..' segment, no control character)", what,
                         shown(p->valuestring, b));
        } else if (!in_folder(p->valuestring, folder, &base)) {
            rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: the listing of %s names '%s', which is not directly in it",
                         what, folder_shown(folder, fb), shown(p->valuestring, b));
        } else if (strcmp(t->valuestring, "file") == 0 && names_add(files, base, strlen(base))) {
            rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        }
        if (rc) break;
    }
    cJSON_Delete(j);
    return rc;
}

// The message of a failed API request.
static ct_status request_failed(const ct_hub *h, const ct_http_req *r, ct_status rc, const char *what, ct_err *err) {
    if (r->error_code[0]) rc = ct_fail(err, rc, "%s: %s (%s)", what, r->error_code, r->err.msg);
    else rc = ct_fail(err, rc, "%s: %s", what, r->err.msg);
    if (r->status == 401 || r->status == 403)
        ct_err_where(err, h->auth[0] ? "HF_TOKEN was sent: check access to the repository"
                                     : "no HF_TOKEN set: private and gated repositories need one");
    return rc;
}

// GET url (JSON, kept in memory within max_body) into r; the caller frees r.
static ct_status api_get(ct_hub *h, ct_http_req *r, const char *url) {
    *r = (ct_http_req){.method = "GET", .url = url, .accept = "application/json", .follow = CT_FOLLOW_RELATIVE,
                       .auth = h->auth[0] ? h->auth : NULL, .auth_prefix = h->endpoint};
    ct_status rc = ct_http_perform(r, 1, &h->http);
    h->requests += r->attempts;
    if (!rc && r->status >= 300) {   // a redirect off the endpoint (followed only within it)
        char b[128];
        rc = ct_fail(&r->err, CT_STATUS_BAD_RESPONSE, "%s redirected to '%s'; an API answer comes from the endpoint itself",
                     url, shown(r->location, b));
    }
    return rc;
}

// The commit a revision names, and the repository's files when the answer lists them reliably.
static ct_status fetch_revision(ct_hub *h, const char *repo, const char *rev, const char *what, char commit[41],
                                ct_hub_names *sib, int *trusted, ct_err *err) {
    char url[2400];
    snprintf(url, sizeof url, "%s/api/models/%s/revision/", h->endpoint, repo);
    if (ct_url_escape(url, sizeof url, rev, 0)) return ct_fail(err, CT_STATUS_BAD_ARG, "%s: address too long", what);
    ct_http_req r;
    ct_status rc = api_get(h, &r, url);
    if (rc) rc = request_failed(h, &r, rc, what, err);
    else rc = ct_hub_parse_revision(r.body_out, r.body_out_len, what, commit, sib, trusted, err);
    ct_http_req_free(&r);
    return rc;
}

// The files directly in folder at commit, from the tree endpoint, page after page.
static ct_status fetch_tree(ct_hub *h, const char *repo, const char *commit, const char *folder, const char *what,
                            ct_hub_names *out, ct_err *err) {
    char prefix[1200], url[4200], next[2048];
    snprintf(prefix, sizeof prefix, "%s/api/models/%s/tree/", h->endpoint, repo);
    snprintf(url, sizeof url, "%s%s", prefix, commit);
    if ((folder[0] && (ct_url_escape(url, sizeof url, "/", 1) || ct_url_escape(url, sizeof url, folder, 0))) ||
        strlen(url) + 30 >= sizeof url)
        return ct_fail(err, CT_STATUS_BAD_ARG, "%s: address too long", what);
    strcat(url, "?recursive=false&expand=false");
    int entries = 0;
    char fb[140];
    for (int page = 0;; page++) {
        if (page == CT_HUB_LISTING_PAGES)
            return ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: the listing of %s goes on past %d pages", what,
                           folder_shown(folder, fb), CT_HUB_LISTING_PAGES);
        ct_http_req r;
        ct_status rc = api_get(h, &r, url);
        int n = 0;
        if (rc == CT_STATUS_NOT_FOUND && page == 0 && strcmp(r.error_code, "EntryNotFound") == 0) {   // no such folder:
            ct_http_req_free(&r);                                                                  // nothing in it
            return CT_OK;
        }
        if (rc) rc = request_failed(h, &r, rc, what, err);
        else rc = ct_hub_parse_tree(r.body_out, r.body_out_len, what, folder, out, &n, err);
        entries += n;
        if (!rc && entries > CT_HUB_LISTING_MAX)
            rc = ct_fail(err, CT_STATUS_TOO_LARGE, "%s: the listing of %s holds more than %d entries", what,
                         folder_shown(folder, fb), CT_HUB_LISTING_MAX);
        snprintf(next, sizeof next, "%s", r.link_next);
        ct_http_req_free(&r);
        if (rc || !next[0]) return rc;
        char b[128];
        if (strncmp(next, prefix, strlen(prefix)) != 0)
            return ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: the next page of the listing is at '%s'; expected an address "
                           "under %s", what, shown(next, b), prefix);
        snprintf(url, sizeof url, "%s", next);
    }
}

// ctrace's record of a folder's listing at a commit: <repo dir>/ctrace-listings/<commit>/<sha256 of the folder>.json
static void record_path(const char *dir, const char *commit, const char *folder, char *out, size_t n) {
    ct_sha256 s;
    char hex[65];
    ct_sha256_init(&s);
    ct_sha256_update(&s, folder, strlen(folder));
    ct_sha256_hex(&s, hex);
    snprintf(out, n, "%s/ctrace-listings/%s/%s.json", dir, commit, hex);
}

// Names from a JSON array of strings, each a file name (no '/'); -1 when any is not.
static int names_from(const cJSON *a, ct_hub_names *out) {
    const cJSON *e;
    if (!cJSON_IsArray(a)) return -1;
    cJSON_ArrayForEach(e, a)
        if (!cJSON_IsString(e) || !name_fits(e->valuestring, 0) || names_add(out, e->valuestring, strlen(e->valuestring)))
            return -1;
    return 0;
}

// The recorded listing of folder, or -1 (none, or not one ctrace wrote for this folder).
static int record_read(const char *path, const char *folder, ct_hub_names *out) {
    char *text;
    size_t len;
    if (ct_read_file(NULL, path, &text, &len, 64u << 20, NULL)) return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format"), *f = cJSON_GetObjectItemCaseSensitive(j, "folder");
    int ok = cJSON_IsNumber(fmt) && fmt->valuedouble == 1 && cJSON_IsString(f) && strcmp(f->valuestring, folder) == 0 &&
             names_from(cJSON_GetObjectItemCaseSensitive(j, "files"), out) == 0;
    cJSON_Delete(j);
    if (!ok) ct_hub_names_free(out);
    return ok ? 0 : -1;
}

// Records a listing fetched from the server (a failure to write costs a request next time, nothing else).
static void record_write(const char *path, const char *repo, const char *commit, const char *folder, const ct_hub_names *files) {
    cJSON *j = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(j, "files");
    cJSON_AddNumberToObject(j, "format", 1);
    cJSON_AddStringToObject(j, "repo", repo);
    cJSON_AddStringToObject(j, "commit", commit);
    cJSON_AddStringToObject(j, "folder", folder);
    for (int i = 0; a && i < files->n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(files->v[i]));
    char *text = cJSON_Print(j), d[1800];
    cJSON_Delete(j);
    snprintf(d, sizeof d, "%s", path);
    *strrchr(d, '/') = 0;
    if (text && !ct_mkdirs(NULL, d, NULL)) ct_write_file(NULL, path, text, strlen(text), NULL);
    free(text);
}

// The files directly in folder according to huggingface_hub's listing of the commit
// (trees/<commit>.json, written by snapshot_download), or -1.
static int trees_read(const char *dir, const char *commit, const char *folder, ct_hub_names *out) {
    char path[1800], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/trees/%s.json", dir, commit);
    if (ct_read_file(NULL, path, &text, &len, 64u << 20, NULL)) return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "format_version"), *files = cJSON_GetObjectItemCaseSensitive(j, "files");
    int ok = cJSON_IsNumber(v) && v->valuedouble == 1 && cJSON_IsObject(files);
    const cJSON *e;
    if (ok) cJSON_ArrayForEach(e, files) {
        const char *base;
        if (!e->string || !name_fits(e->string, 1)) ok = 0;
        else if (in_folder(e->string, folder, &base) && names_add(out, base, strlen(base))) ok = 0;
        if (!ok) break;
    }
    cJSON_Delete(j);
    if (!ok) ct_hub_names_free(out);
    return ok ? 0 : -1;
}

// The regular files in a directory of the cache (no listing known: what is there).
static void local_list(const char *path, ct_hub_names *out) {
    DIR *d = opendir(path);
    struct dirent *de;
    char p[4096];
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.' || (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")))
            if (ct_path_join(p, sizeof p, path, de->d_name) && ct_is_file(p)) names_add(out, de->d_name, strlen(de->d_name));
    if (d) closedir(d);
}

// The size a HEAD announces for repo/path at commit (-1: none), and whether its blob is cached already.
static ct_status announced(ct_hub *h, const char *repo, const char *path, const char *commit, const char *dir,
                           int64_t *size, int *have_blob, ct_err *err) {
    char url[2400], what[1400];
    snprintf(what, sizeof what, "hf://%s/%s?revision=%s", repo, path, commit);
    if (resolve_url(h, repo, path, commit, url, sizeof url)) return ct_fail(err, CT_STATUS_BAD_ARG, "%s: address too long", what);
    ct_http_req r = {.method = "HEAD", .url = url, .follow = CT_FOLLOW_RELATIVE, .auth = h->auth[0] ? h->auth : NULL,
                     .auth_prefix = h->endpoint};
    ct_status rc = ct_http_perform(&r, 1, &h->http);
    h->requests += r.attempts;
    if (rc) {
        rc = request_failed(h, &r, rc, what, err);
        ct_http_req_free(&r);
        return rc;
    }
    char etag[160], blob[1800];
    strip_etag(r.linked_etag[0] ? r.linked_etag : r.etag, etag, sizeof etag);
    *size = r.linked_size >= 0 ? r.linked_size : r.status < 300 ? r.content_length : -1;
    ct_http_req_free(&r);
    struct stat sb;
    snprintf(blob, sizeof blob, "%s/blobs/%s", dir, etag);
    *have_blob = etag[0] && !strchr(etag, '/') && !strstr(etag, "..") && stat(blob, &sb) == 0 && S_ISREG(sb.st_mode) &&
                 (*size < 0 || sb.st_size == *size);
    return CT_OK;
}

ct_status ct_hub_snapshot(ct_hub *h, const char *repo, const char *rev, const char *const *patterns, int n_patterns,
                          ct_hub_snap *out, ct_err *err) {
    memset(out, 0, sizeof *out);
    char r2[256], p2[1024], v2[256], full[1400], what[600], b[128];
    snprintf(full, sizeof full, "%s?revision=%s", repo, rev);
    ct_status rc = ct_hub_parse_uri(full, r2, p2, v2, err);
    if (rc) return rc;
    if (p2[0] || strcmp(r2, repo) != 0)
        return ct_fail(err, CT_STATUS_BAD_ARG, "'%s': expected a repository (org/name)", shown(repo, b));
    snprintf(what, sizeof what, "hf://%s%s%s", repo, strcmp(rev, "main") ? "?revision=" : "", strcmp(rev, "main") ? rev : "");
    if (n_patterns < 1 || n_patterns > CT_HUB_PATTERNS_MAX)
        return ct_fail(err, CT_STATUS_BAD_ARG, "%s: expected 1..%d file patterns, got %d", what, CT_HUB_PATTERNS_MAX, n_patterns);

    // the folders the patterns name (literal), each listed once
    char (*folders)[1024] = calloc((size_t)n_patterns, sizeof *folders);
    int folder_of[CT_HUB_PATTERNS_MAX], n_folders = 0;
    ct_hub_names *lists = calloc((size_t)n_patterns, sizeof *lists), sib = {0}, matched = {0};
    if (!folders || !lists) {
        free(folders);
        free(lists);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    for (int i = 0; i < n_patterns && !rc; i++) {
        const char *p = patterns[i], *sl = strrchr(p, '/'), *base = sl ? sl + 1 : p;
        size_t dn = sl ? (size_t)(sl - p) : 0;
        char folder[1024];
        snprintf(folder, sizeof folder, "%.*s", (int)dn, p);
        int bad = strlen(p) >= sizeof *folders || !*base || (sl && !path_ok(folder, 1));
        for (const char *c = base; *c && !bad; c++) bad = (unsigned char)*c < 0x20 || *c == 0x7f;
        if (bad) {
            rc = ct_fail(err, CT_STATUS_BAD_ARG, "%s: pattern '%s': expected a path in the repository whose last segment may "
                         "hold wildcards (the folders before it relative, without '.' or '..')", what, shown(p, b));
            break;
        }
        int f = 0;
        while (f < n_folders && strcmp(folders[f], folder) != 0) f++;
        if (f == n_folders) snprintf(folders[n_folders++], sizeof *folders, "%s", folder);
        folder_of[i] = f;
    }

    // 1. the commit
    char dir[1400], commit[41] = "";
    ct_err neterr = {0};
    int trusted = 0, cache_only = h->offline, from_server = 0;
    repo_dir(h, repo, dir, sizeof dir);
    if (!rc && is_hex(rev, 40)) {
        snprintf(commit, sizeof commit, "%s", rev);
    } else if (!rc && !h->offline) {
        rc = fetch_revision(h, repo, rev, what, commit, &sib, &trusted, err);
        if (rc == CT_STATUS_NETWORK || rc == CT_STATUS_TIMEOUT) {   // unreachable: the cache may have it
            neterr = *err;
            cache_only = 1;
            commit[0] = 0;
            rc = CT_OK;
        }
        from_server = !rc && !cache_only;
    }
    if (!rc && !commit[0]) {
        char ref[1800];
        snprintf(ref, sizeof ref, "%s/refs/%s", dir, rev);
        if (read_line(ref, commit, sizeof commit) || !is_hex(commit, 40)) {
            commit[0] = 0;
            if (neterr.status) rc = ct_fail(err, neterr.status, "%s; the Hugging Face cache has no snapshot of it either", neterr.msg);
            else rc = ct_fail(err, CT_STATUS_OFFLINE, "%s is not in the Hugging Face cache (%s has no refs/%s) and offline mode "
                              "is on (HF_HUB_OFFLINE or CTRACE_OFFLINE); download it on a machine with network access",
                              what, h->cache, rev);
        }
    }
    if (!rc && from_server && strcmp(rev, commit) != 0) rc = write_ref(dir, rev, commit, err);   // as huggingface_hub
    snprintf(out->dir, sizeof out->dir, "%s/snapshots/%s", dir, commit);

    // 2. each folder's listing
    int listed_all = 1;   // every listing is known (else what the cache holds is taken as it is)
    for (int f = 0; f < n_folders && !rc; f++) {
        char rec[1800];
        record_path(dir, commit, folders[f], rec, sizeof rec);
        if (record_read(rec, folders[f], &lists[f]) == 0 || trees_read(dir, commit, folders[f], &lists[f]) == 0) continue;
        if (cache_only) {
            char local[4096];
            snprintf(local, sizeof local, "%s%s%s", out->dir, folders[f][0] ? "/" : "", folders[f]);
            local_list(local, &lists[f]);
            listed_all = 0;
            continue;
        }
        if (trusted) {
            const char *base;
            for (int i = 0; i < sib.n && !rc; i++)
                if (in_folder(sib.v[i], folders[f], &base) && names_add(&lists[f], base, strlen(base)))
                    rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        } else {
            rc = fetch_tree(h, repo, commit, folders[f], what, &lists[f], err);
            if ((rc == CT_STATUS_NETWORK || rc == CT_STATUS_TIMEOUT) && !from_server) {   // a commit: the cache may have it
                neterr = *err;
                cache_only = 1;
                ct_hub_names_free(&lists[f]);
                rc = CT_OK;
                f--;   // this folder again, from the cache
                continue;
            }
        }
        if (!rc) record_write(rec, repo, commit, folders[f], &lists[f]);
    }

    // 3. the files that match, once each, sorted
    for (int i = 0; i < n_patterns && !rc; i++) {
        const char *sl = strrchr(patterns[i], '/'), *pat = sl ? sl + 1 : patterns[i], *folder = folders[folder_of[i]];
        const ct_hub_names *l = &lists[folder_of[i]];
        for (int k = 0; k < l->n && !rc; k++) {
            if (fnmatch(pat, l->v[k], 0) != 0) continue;
            char p[2100];
            int len = snprintf(p, sizeof p, "%s%s%s", folder, folder[0] ? "/" : "", l->v[k]);
            if (len >= 1024) continue;   // no path in a repository is that long
            if (names_add(&matched, p, (size_t)len)) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        }
    }
    if (!rc && matched.n) {
        qsort(matched.v, (size_t)matched.n, sizeof *matched.v, cmp_name);
        int k = 1;
        for (int i = 1; i < matched.n; i++) {
            if (strcmp(matched.v[i], matched.v[k - 1]) == 0) free(matched.v[i]);
            else matched.v[k++] = matched.v[i];
        }
        matched.n = k;
    }
    if (!rc && matched.n > CT_HUB_SNAPSHOT_MAX)
        rc = ct_fail(err, CT_STATUS_TOO_LARGE, "%s: %d files match; a snapshot takes at most %d", what, matched.n,
                     CT_HUB_SNAPSHOT_MAX);

    // 4. the files: from the cache alone, or fetched at the commit
    char path[4096];
    if (!rc && cache_only) {
        int missing = 0;
        char first[3][128];
        for (int i = 0; i < matched.n; i++) {
            snprintf(path, sizeof path, "%s/%s", out->dir, matched.v[i]);
            if (!ct_is_file(path) && missing++ < 3) shown(matched.v[i], first[missing - 1]);
        }
        if (missing) {
            char list[600];
            snprintf(list, sizeof list, "%s%s%s%s%s%s", first[0], missing > 1 ? ", " : "", missing > 1 ? first[1] : "",
                     missing > 2 ? ", " : "", missing > 2 ? first[2] : "", missing > 3 ? ", ..." : "");
            if (neterr.status)
                rc = ct_fail(err, neterr.status, "%s; the cached snapshot %.12s lacks %d of its %d files (%s)", neterr.msg,
                             commit, missing, matched.n, list);
            else
                rc = ct_fail(err, CT_STATUS_OFFLINE, "%s: the cached snapshot %.12s lacks %d of its %d files (%s) and offline "
                             "mode is on (HF_HUB_OFFLINE or CTRACE_OFFLINE)", what, commit, missing, matched.n, list);
        } else if (!matched.n && !listed_all) {   // nothing there, and nothing says whether anything belongs
            if (neterr.status) rc = ct_fail(err, neterr.status, "%s; the cached snapshot %.12s holds no file it asks for", neterr.msg, commit);
            else rc = ct_fail(err, CT_STATUS_OFFLINE, "%s: the cached snapshot %.12s holds no file matching %s%s and offline "
                              "mode is on (HF_HUB_OFFLINE or CTRACE_OFFLINE)", what, commit, shown(patterns[0], b),
                              n_patterns > 1 ? ", ..." : "");
        } else if (neterr.status) {
            fprintf(stderr, "ctrace: %s; using the cached snapshot %.12s of %s%s\n", neterr.msg, commit, what,
                    listed_all ? "" : " as it is (no listing of it is known)");
        }
    } else if (!rc) {
        if (h->budget >= 0) {   // a snapshot larger than the budget is refused before any download
            int64_t need = 0;
            int count = 0;
            for (int i = 0; i < matched.n && !rc; i++) {
                snprintf(path, sizeof path, "%s/%s", out->dir, matched.v[i]);
                int64_t size = -1;
                int have = 0;
                if (ct_is_file(path) || (rc = announced(h, repo, matched.v[i], commit, dir, &size, &have, err)) || have) continue;
                need += size > 0 ? size : 0;
                count++;
            }
            if (!rc && need > h->budget)
                rc = ct_fail(err, CT_STATUS_TOO_LARGE, "%s: the %d files still to download hold %lld bytes, more than this "
                             "run may still download (%lld bytes; ctrace run --download-limit)", what, count, (long long)need,
                             (long long)h->budget);
        }
        if (!rc) rc = ct_mkdirs(NULL, out->dir, err);
        for (int i = 0; i < matched.n && !rc; i++) {
            char want[4096];
            snprintf(want, sizeof want, "%s/%s", out->dir, matched.v[i]);
            rc = ct_hub_file(h, repo, matched.v[i], commit, path, sizeof path, err);
            if (!rc && strcmp(path, want) != 0)
                rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "%s: %s came back outside the snapshot %s", what, matched.v[i], commit);
        }
    }

    for (int f = 0; f < n_folders; f++) ct_hub_names_free(&lists[f]);
    free(lists);
    free(folders);
    ct_hub_names_free(&sib);
    if (rc) {
        ct_hub_names_free(&matched);
        return rc;
    }
    snprintf(out->commit, sizeof out->commit, "%s", commit);
    out->files = matched.v;
    out->n = matched.n;
    return CT_OK;
}
