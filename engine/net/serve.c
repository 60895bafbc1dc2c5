// serve.c - a small file server for graphs and viewer pages (see serve.h).
//
// Each connection is a slot: first it reads the request (into req), then it sends the response
// (out, then the file's bytes through the same buffer), then it closes. The poll() loop moves
// every slot as far as its socket allows and closes those past their time limits.
#include "net/serve.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/http.h"

enum { REQ_MAX = 8192, CHUNK = 65536 };

typedef struct {
    int fd;                    // -1: a free slot
    int sending;               // 0: reading the request; 1: sending the response
    char req[REQ_MAX];
    size_t req_len;
    char *out;                 // bytes to send: headers, a small body, or a chunk of the file
    size_t out_len, out_pos, out_cap;
    int file;                  // the file being sent, or -1
    int64_t file_left;         // its bytes still to read
    int64_t started, last;     // monotonic ms: accepted, last progress
} conn;

static int64_t now_ms(void) { return (int64_t)(ct_now() * 1000.0); }

static void conn_close(conn *c) {
    if (c->fd >= 0) close(c->fd);
    if (c->file >= 0) close(c->file);
    free(c->out);
    c->fd = c->file = -1;
    c->out = NULL;
    c->out_len = c->out_pos = c->out_cap = c->req_len = 0;
    c->sending = 0;
    c->file_left = 0;
}

// ---- building responses -------------------------------------------------------

// Appends n bytes to c->out, growing it; 0 on success.
static int put(conn *c, const char *p, size_t n) {
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + n) cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o) return -1;
        c->out = o;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return 0;
}

static int puts_(conn *c, const char *s) { return put(c, s, strlen(s)); }

static const char *reason(int code) {
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

// The status line and headers of a response of n bytes into c->out.
static int headers(conn *c, int code, const char *type, int64_t n) {
    char h[512];
    snprintf(h, sizeof h,
             "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %lld\r\nX-Content-Type-Options: nosniff\r\n"
             "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
             code, reason(code), type, (long long)n);
    return puts_(c, h);
}

// A whole response with a short text body (no body for HEAD).
static void respond_text(conn *c, int code, const char *text, int head) {
    c->out_len = 0;
    if (headers(c, code, "text/plain; charset=utf-8", (int64_t)strlen(text)) == 0 && !head) puts_(c, text);
}

static const char *type_of(const char *path) {
    const char *dot = strrchr(path, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".json")) return "application/json";
    if (!strcmp(dot, ".svg")) return "image/svg+xml";
    if (!strcmp(dot, ".png")) return "image/png";
    if (!strcmp(dot, ".csv")) return "text/csv";
    return "application/octet-stream";
}

// s with & < > " ' as character references, safe in text and in quoted attributes.
static int put_html(conn *c, const char *s) {
    int rc = 0;
    for (; *s && !rc; s++) {
        switch (*s) {
        case '&': rc = puts_(c, "&amp;"); break;
        case '<': rc = puts_(c, "&lt;"); break;
        case '>': rc = puts_(c, "&gt;"); break;
        case '"': rc = puts_(c, "&quot;"); break;
        case '\'': rc = puts_(c, "&#39;"); break;
        default: rc = put(c, s, 1);
        }
    }
    return rc;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// The index page: every regular .html file of the directory (no links), each linked as
// ./<percent-encoded name> and shown HTML-escaped. A name cannot become a javascript: link (the
// href always starts with ./ and holds only unreserved characters and %XX) nor leave its
// attribute.
static void listing(conn *c, int dirfd, int head) {
    int dfd = dup(dirfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0) close(dfd);
        return respond_text(c, 500, "cannot list the directory\n", head);
    }
    rewinddir(d);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        struct stat st;
        if (l <= 5 || strcmp(e->d_name + l - 5, ".html") != 0) continue;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **g = realloc(names, cap * sizeof *names);
            if (!g) break;
            names = g;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, by_name);
    conn body = {.fd = -1, .file = -1};   // the page, built apart to know its length
    int rc = puts_(&body, "<!DOCTYPE html><meta charset=\"utf-8\"><title>ctrace graphs</title><h1>Graphs</h1><ul>\n");
    for (size_t i = 0; i < n && !rc; i++) {
        char href[1024] = "./";
        if (ct_url_escape(href, sizeof href, names[i], 0) != 0) continue;
        rc = puts_(&body, "<li><a href=\"") || put_html(&body, href) || puts_(&body, "\">") || put_html(&body, names[i]) ||
             puts_(&body, "</a></li>\n");
    }
    if (!rc) rc = puts_(&body, "</ul>\n");
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    c->out_len = 0;
    if (rc || headers(c, 200, "text/html; charset=utf-8", (int64_t)body.out_len) || (!head && put(c, body.out, body.out_len)))
        respond_text(c, 500, "out of memory\n", head);
    free(body.out);
}

// Decodes %xx in place and drops any query; 0 when the path is unsafe (a .. segment, an encoded
// NUL, not starting with /).
static int clean_path(char *p) {
    char *o = p;
    for (char *s = p; *s; s++) {
        if (*s == '%') {
            if (!isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2])) return 0;
            char hex[3] = {s[1], s[2], 0};
            long v = strtol(hex, NULL, 16);
            if (v == 0) return 0;
            *o++ = (char)v;
            s += 2;
        } else if (*s == '?' || *s == '#') {
            break;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
    if (p[0] != '/') return 0;
    for (char *s = p; (s = strstr(s, "..")); s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == '/' || s[2] == 0)) return 0;
    return 1;
}

// Opens path (clean, starting with /) under dirfd one component at a time, never following a
// symbolic link: the file's descriptor, or -1 with *code the status to answer (403 for a link,
// 404 for anything else that is not a regular file).
static int open_under(int dirfd, const char *path, int *code) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    int cur = dirfd;
    char *save = NULL;
    char *comp = strtok_r(buf, "/", &save);
    *code = 404;
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        if (strcmp(comp, ".") == 0) {
            comp = next;
            continue;
        }
        int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (next ? O_DIRECTORY : O_NONBLOCK);   // a FIFO never blocks
        int fd = openat(cur, comp, flags);
        if (fd < 0) {   // a link as the last component gives ELOOP, as a directory on the way ENOTDIR
            struct stat st;
            if (errno == ELOOP || (fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))) *code = 403;
            if (cur != dirfd) close(cur);
            return -1;
        }
        if (cur != dirfd) close(cur);
        cur = fd;
        comp = next;
    }
    if (cur == dirfd) return -1;   // the directory itself: only "/" lists it
    struct stat st;
    if (fstat(cur, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(cur);
        return -1;
    }
    return cur;
}

// Whether a Host header's value names this machine's loopback: 127.0.0.1, localhost or [::1],
// optionally followed by :port.
static int loopback_host(const char *v, size_t n) {
    size_t k;
    if (n >= 5 && memcmp(v, "[::1]", 5) == 0) k = 5;
    else if (n >= 9 && memcmp(v, "127.0.0.1", 9) == 0) k = 9;
    else if (n >= 9 && strncasecmp(v, "localhost", 9) == 0) k = 9;
    else return 0;
    if (k == n) return 1;
    if (v[k] != ':' || n - k - 1 < 1 || n - k - 1 > 5) return 0;
    for (size_t i = k + 1; i < n; i++)
        if (!isdigit((unsigned char)v[i])) return 0;
    return 1;
}

// The request in c->req is complete: builds the response in c->out (and c->file).
static void answer(conn *c, int dirfd) {
    char method[16], target[4096], version[16];
    if (sscanf(c->req, "%15s %4095s %15s", method, target, version) != 3 || strncmp(version, "HTTP/1.", 7) != 0)
        return respond_text(c, 400, "bad request line; expected METHOD /path HTTP/1.x\n", 0);
    int head = strcmp(method, "HEAD") == 0;
    // the Host header(s): exactly one on HTTP/1.1, at most one on HTTP/1.0, and a loopback name
    int hosts = 0, host_ok = 0;
    for (char *line = strchr(c->req, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char *l = line + 1;
        if (strncasecmp(l, "host:", 5) != 0) continue;
        const char *v = l + 5;
        while (*v == ' ' || *v == '\t') v++;
        size_t n = strcspn(v, "\r\n");
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
        hosts++;
        host_ok = loopback_host(v, n);
    }
    if (hosts > 1) return respond_text(c, 400, "more than one Host header\n", head);
    if (hosts == 0 && strcmp(version, "HTTP/1.0") != 0) return respond_text(c, 400, "no Host header\n", head);
    if (hosts == 1 && !host_ok)
        return respond_text(c, 403, "this server answers only requests for 127.0.0.1, localhost or [::1]\n", head);
    if (strcmp(method, "GET") != 0 && !head) return respond_text(c, 405, "GET or HEAD only\n", 0);
    if (!clean_path(target)) return respond_text(c, 400, "bad path\n", head);
    if (strcmp(target, "/") == 0) return listing(c, dirfd, head);
    int code;
    int fd = open_under(dirfd, target, &code);
    if (fd < 0) return respond_text(c, code, code == 403 ? "symbolic links are not served\n" : "not found\n", head);
    struct stat st;
    c->out_len = 0;
    if (fstat(fd, &st) != 0 || headers(c, 200, type_of(target), (int64_t)st.st_size) != 0) {
        close(fd);
        return respond_text(c, 500, "cannot read the file\n", head);
    }
    if (head) {
        close(fd);
        return;
    }
    c->file = fd;
    c->file_left = (int64_t)st.st_size;
}

// ---- moving connections along ---------------------------------------------------

// Reads what the client sent; once the headers are complete, prepares the response.
static void on_readable(conn *c, int dirfd, int64_t t) {
    ssize_t r = recv(c->fd, c->req + c->req_len, sizeof c->req - 1 - c->req_len, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (r <= 0) return conn_close(c);
    c->req_len += (size_t)r;
    c->req[c->req_len] = 0;
    c->last = t;
    if (memchr(c->req, 0, c->req_len)) respond_text(c, 400, "NUL byte in the request\n", 0);
    else if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) answer(c, dirfd);
    else if (c->req_len == sizeof c->req - 1) respond_text(c, 431, "request headers longer than 8 KiB\n", 0);
    else return;
    c->sending = 1;
}

// Sends as much as the socket takes, refilling the buffer from the file; closes when done.
static void on_writable(conn *c, int64_t t) {
    for (;;) {
        if (c->out_pos == c->out_len) {
            if (c->file < 0 || c->file_left == 0) {
                shutdown(c->fd, SHUT_WR);
                return conn_close(c);
            }
            if (c->out_cap < CHUNK) {
                char *o = realloc(c->out, CHUNK);
                if (!o) return conn_close(c);
                c->out = o;
                c->out_cap = CHUNK;
            }
            size_t want = c->file_left < (int64_t)c->out_cap ? (size_t)c->file_left : c->out_cap;
            ssize_t r = read(c->file, c->out, want);
            if (r <= 0) return conn_close(c);   // the file shrank or cannot be read: cut the response short
            c->out_len = (size_t)r;
            c->out_pos = 0;
            c->file_left -= r;
        }
        ssize_t w = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (w <= 0) return conn_close(c);
        c->out_pos += (size_t)w;
        c->last = t;
    }
}

// A new connection: a free slot, else the slot of the oldest connection still sending its
// request (a stalled client gives way), else a 503 at once.
static void on_accept(int s, conn *cs, int64_t t) {
    for (;;) {
        int fd = accept4(s, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        conn *slot = NULL, *oldest = NULL;
        for (int i = 0; i < CT_SERVE_MAX_CONN && !slot; i++) {
            if (cs[i].fd < 0) slot = &cs[i];
            else if (!cs[i].sending && (!oldest || cs[i].started < oldest->started)) oldest = &cs[i];
        }
        if (!slot && oldest) {
            conn_close(oldest);
            slot = oldest;
        }
        if (!slot) {
            static const char busy[] = "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
            close(fd);
            continue;
        }
        slot->fd = fd;
        slot->started = slot->last = t;
    }
}

ct_status ct_serve_dir(const ct_ctx *ctx, const char *dir, int port, void (*ready)(void *ud, int port), void *ud,
                       ct_err *err) {
    if (port < 0 || port > 65535) return ct_fail(err, CT_STATUS_BAD_ARG, "serve: port %d; expected 0..65535", port);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) return ct_fail(err, CT_STATUS_NOT_FOUND, "serve: %s: expected a directory (%s)", dir, strerror(errno));
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        close(dirfd);
        return ct_fail(err, CT_STATUS_IO, "serve: socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 64) != 0 || getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        int e = errno;
        close(s);
        close(dirfd);
        return ct_fail(err, CT_STATUS_IO, "serve: cannot listen on 127.0.0.1:%d: %s%s", port, strerror(e),
                       e == EADDRINUSE ? " (another program serves there: choose another port with --port N, or "
                                         "--port 0 for any free one)" : "");
    }
    conn *cs = calloc(CT_SERVE_MAX_CONN, sizeof *cs);
    if (!cs) {
        close(s);
        close(dirfd);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "serve: out of memory");
    }
    for (int i = 0; i < CT_SERVE_MAX_CONN; i++) cs[i].fd = cs[i].file = -1;
    if (ready) ready(ud, ntohs(a.sin_port));
    struct pollfd p[CT_SERVE_MAX_CONN + 1];
    int who[CT_SERVE_MAX_CONN + 1];   // the slot of each pollfd after the first
    while (!ct_ctx_cancelled(ctx)) {
        int np = 0;
        p[np++] = (struct pollfd){s, POLLIN, 0};
        for (int i = 0; i < CT_SERVE_MAX_CONN; i++) {
            if (cs[i].fd < 0) continue;
            who[np] = i;
            p[np++] = (struct pollfd){cs[i].fd, (short)(cs[i].sending ? POLLOUT : POLLIN), 0};
        }
        int r = poll(p, (nfds_t)np, 200);   // short: cancellation is seen within 0.2 s
        int64_t t = now_ms();
        if (r > 0) {
            for (int k = 1; k < np; k++) {
                conn *c = &cs[who[k]];
                if (!p[k].revents || c->fd != p[k].fd) continue;
                if (!c->sending) on_readable(c, dirfd, t);
                if (c->fd >= 0 && c->sending) on_writable(c, t);
            }
            if (p[0].revents & POLLIN) on_accept(s, cs, t);
        }
        for (int i = 0; i < CT_SERVE_MAX_CONN; i++) {   // time limits
            conn *c = &cs[i];
            if (c->fd < 0) continue;
            if (c->sending ? t - c->last > CT_SERVE_IDLE_MS || t - c->started > CT_SERVE_LIFETIME_MS
                           : t - c->started > CT_SERVE_REQUEST_MS)
                conn_close(c);
        }
    }
    for (int i = 0; i < CT_SERVE_MAX_CONN; i++) conn_close(&cs[i]);
    free(cs);
    close(s);
    close(dirfd);
    return ct_fail(err, CT_STATUS_CANCELLED, "serve: stopped");
}
