// serve.c - a small file server for graphs and viewer pages (see serve.h). One connection at a
// time, bounded request size, paths confined to the directory.
#include "net/serve.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        p += w, n -= (size_t)w;
    }
}

static void respond(int fd, int code, const char *type, const char *body, size_t n, int head) {
    char h[256];
    const char *reason = code == 200 ? "OK" : code == 404 ? "Not Found" : code == 400 ? "Bad Request" : "Method Not Allowed";
    int k = snprintf(h, sizeof h, "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", code,
                     reason, type, n);
    send_all(fd, h, (size_t)k);
    if (!head) send_all(fd, body, n);
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

// Decodes %xx in place; 0 when the path is unsafe (.. segment, NUL, not starting with /).
static int clean_path(char *p) {
    char *o = p;
    for (char *s = p; *s; s++) {
        if (*s == '%' && s[1] && s[2]) {
            char hex[3] = {s[1], s[2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end || v == 0) return 0;
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

static void handle(int fd, const char *dir) {
    char req[8192];
    size_t n = 0;
    while (n < sizeof req - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0) return;   // a slow client gets nothing
        ssize_t r = recv(fd, req + n, sizeof req - 1 - n, 0);
        if (r <= 0) return;
        n += (size_t)r;
        req[n] = 0;
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n")) break;
    }
    char method[8], path[4096];
    if (sscanf(req, "%7s %4095s", method, path) != 2) return respond(fd, 400, "text/plain", "bad request\n", 12, 0);
    int head = strcmp(method, "HEAD") == 0;
    if (strcmp(method, "GET") && !head) return respond(fd, 405, "text/plain", "GET or HEAD\n", 12, 0);
    if (!clean_path(path)) return respond(fd, 400, "text/plain", "bad path\n", 9, head);
    char full[8192];
    snprintf(full, sizeof full, "%s%s", dir, path);
    struct stat st;
    if (strcmp(path, "/") == 0) {   // a list of the viewer pages
        char body[65536];
        size_t k = (size_t)snprintf(body, sizeof body, "<!DOCTYPE html><meta charset=\"utf-8\"><title>ctrace graphs</title><h1>Graphs</h1><ul>\n");
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d)) && k < sizeof body - 600) {
            size_t l = strlen(e->d_name);
            if (l > 5 && strcmp(e->d_name + l - 5, ".html") == 0 && !strchr(e->d_name, '<') && !strchr(e->d_name, '"'))
                k += (size_t)snprintf(body + k, sizeof body - k, "<li><a href=\"%s\">%s</a></li>\n", e->d_name, e->d_name);
        }
        if (d) closedir(d);
        k += (size_t)snprintf(body + k, sizeof body - k, "</ul>\n");
        return respond(fd, 200, "text/html; charset=utf-8", body, k, head);
    }
    if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) return respond(fd, 404, "text/plain", "not found\n", 10, head);
    FILE *f = fopen(full, "rb");
    char *body = f ? malloc((size_t)st.st_size + 1) : NULL;
    size_t got = body ? fread(body, 1, (size_t)st.st_size, f) : 0;
    if (f) fclose(f);
    if (!body || got != (size_t)st.st_size) {
        free(body);
        return respond(fd, 404, "text/plain", "not readable\n", 13, head);
    }
    respond(fd, 200, type_of(full), body, got, head);
    free(body);
}

ct_status ct_serve_dir(const ct_ctx *ctx, const char *dir, int port, void (*ready)(void *ud, int port), void *ud,
                       ct_err *err) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return ct_fail(err, CT_STATUS_NOT_FOUND, "serve: %s is not a directory", dir);
    if (port < 0 || port > 65535) return ct_fail(err, CT_STATUS_BAD_ARG, "serve: port %d outside 0..65535", port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return ct_fail(err, CT_STATUS_IO, "serve: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0 || getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        int e = errno;
        close(s);
        return ct_fail(err, CT_STATUS_IO, "serve: cannot listen on 127.0.0.1:%d: %s", port, strerror(e));
    }
    if (ready) ready(ud, ntohs(a.sin_port));
    while (!ct_ctx_cancelled(ctx)) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        int conn = accept(s, NULL, NULL);
        if (conn < 0) continue;
        handle(conn, dir);
        close(conn);
    }
    close(s);
    return ct_fail(err, CT_STATUS_CANCELLED, "serve: stopped");
}
