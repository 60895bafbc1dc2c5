// child.c - the experiment process and its parent (child.h).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/ctx.h"
#include "run/child.h"

// Set by the parent's signal handlers while it waits: the signal that asked it to stop.
static volatile sig_atomic_t g_stop;
static volatile sig_atomic_t *g_cancel;

static void on_stop(int sig) {
    g_stop = sig;
    if (g_cancel) *g_cancel = 1;
}

ct_status ct_child_spawn(ct_child *c, const char *path, char *const argv[], char *const env[], ct_err *err) {
    int sv[2], out[2] = {-1, -1}, errp[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return ct_fail(err, CT_STATUS_SYSTEM, "run: socketpair: %s", strerror(errno));
    if (pipe2(out, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) {
        int e = errno;
        close(sv[0]), close(sv[1]);
        for (int i = 0; i < 2; i++) {
            if (out[i] >= 0) close(out[i]);
            if (errp[i] >= 0) close(errp[i]);
        }
        return ct_fail(err, CT_STATUS_SYSTEM, "run: pipe: %s", strerror(e));
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]), close(sv[1]), close(out[0]), close(out[1]), close(errp[0]), close(errp[1]);
        return ct_fail(err, CT_STATUS_SYSTEM, "run: fork: %s", strerror(e));
    }
    if (pid == 0) {   // the child: only async-signal-safe calls until exec
        setsid();     // no controlling terminal: nothing to inject keystrokes into
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int null = open("/dev/null", O_RDONLY);
        if (null < 0 || dup2(null, 0) < 0 || dup2(out[1], 1) < 0 || dup2(errp[1], 2) < 0 ||
            dup2(sv[1], CT_CHILD_FD) != CT_CHILD_FD)
            _exit(127);
        close_range(CT_CHILD_FD + 1, ~0U, 0);
        signal(SIGINT, SIG_DFL), signal(SIGTERM, SIG_DFL), signal(SIGPIPE, SIG_DFL), signal(SIGALRM, SIG_DFL);
        execve(path, argv, env);
        _exit(127);
    }
    close(sv[1]), close(out[1]), close(errp[1]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);
    c->pid = pid;
    c->sock = sv[0];
    c->out = out[0];
    c->err = errp[0];
    return CT_OK;
}

// ---------------------------------------------------------------------------------------------
// Frames

// Waits until fd is ready for events; TIMEOUT past the deadline, CANCELLED when the parent was
// asked to stop.
static ct_status wait_fd(int fd, short events, double deadline, ct_err *err) {
    for (;;) {
        if (g_stop) return ct_fail(err, CT_STATUS_CANCELLED, "run: stopped");
        int ms = 1000;
        if (deadline > 0) {
            double left = deadline - ct_now();
            if (left <= 0) return ct_fail(err, CT_STATUS_TIMEOUT, "run: deadline passed");
            if (left * 1000 < ms) ms = (int)(left * 1000) + 1;
        }
        struct pollfd p = {fd, events, 0};
        int k = poll(&p, 1, ms);
        if (k > 0) return CT_OK;
        if (k < 0 && errno != EINTR) return ct_fail(err, CT_STATUS_IO, "run: poll: %s", strerror(errno));
    }
}

static ct_status io_all(int fd, int out, void *buf, size_t n, double deadline, ct_err *err) {
    char *p = buf;
    while (n > 0) {
        ct_status rc = wait_fd(fd, out ? POLLOUT : POLLIN, deadline, err);
        if (rc) return rc;
        ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, p, n, MSG_DONTWAIT);
        if (k == 0 && !out) return ct_fail(err, CT_STATUS_IO, "run: the other process closed the connection");
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return ct_fail(err, CT_STATUS_IO, "run: %s", strerror(errno));
        }
        p += k, n -= (size_t)k;
    }
    return CT_OK;
}

ct_status ct_frame_send(int fd, char kind, const void *data, size_t n, double deadline, ct_err *err) {
    if (n > CT_FRAME_MAX) return ct_fail(err, CT_STATUS_TOO_LARGE, "run: message of %zu bytes (at most %d)", n, CT_FRAME_MAX);
    unsigned char head[5] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                             (unsigned char)(n >> 24), (unsigned char)kind};
    ct_status rc = io_all(fd, 1, head, 5, deadline, err);
    if (!rc && n) rc = io_all(fd, 1, (void *)data, n, deadline, err);
    return rc;
}

ct_status ct_frame_recv(int fd, size_t max, char *kind, char **data, size_t *n, double deadline, ct_err *err) {
    unsigned char head[5];
    ct_status rc = io_all(fd, 0, head, 5, deadline, err);
    if (rc) return rc;
    uint32_t len = head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 24;
    if (len > max || len > CT_FRAME_MAX)
        return ct_fail(err, CT_STATUS_TOO_LARGE, "run: message of %u bytes announced (at most %zu)", len, max);
    char *p = malloc((size_t)len + 1);
    if (!p) return ct_fail(err, CT_STATUS_NO_MEMORY, "run: out of memory for a message of %u bytes", len);
    if ((rc = io_all(fd, 0, p, len, deadline, err))) {
        free(p);
        return rc;
    }
    p[len] = 0;
    *kind = (char)head[4], *data = p, *n = len;
    return CT_OK;
}

// ---------------------------------------------------------------------------------------------
// The parent's wait

// Whether the wait must stop: a signal came or the deadline (0: none) passed.
static int must_stop(double deadline) { return g_stop || (deadline > 0 && ct_now() >= deadline); }

// Copies one read's worth of what the child wrote on *fd (64 KiB at most) to dest; at the end of
// the child's output, closes *fd (-1). On a terminal, control characters (C0 but for \n, \t and
// \r, DEL and the UTF-8 C1 range: escape sequences among them) are shown as '?': the child's
// output cannot hide or redraw the parent's own lines (a carriage return only rewrites the
// child's own line, as progress lines do). A slow or stalled reader of dest never holds the
// parent past the deadline or a signal: what is left is then dropped.
static void relay(int *fd, int dest, double deadline) {
    char buf[65536];
    ssize_t k = *fd >= 0 ? read(*fd, buf, sizeof buf) : 0;
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (k <= 0) {
        if (*fd >= 0) close(*fd);
        *fd = -1;
        return;
    }
    if (dest < 0) return;   // dropped
    if (isatty(dest))
        for (ssize_t i = 0; i < k; i++) {
            unsigned char ch = (unsigned char)buf[i];
            unsigned char next = i + 1 < k ? (unsigned char)buf[i + 1] : 0x80;   // cut after 0xc2: as if C1
            if ((ch < 0x20 && ch != '\n' && ch != '\t' && ch != '\r') || ch == 0x7f) {
                buf[i] = '?';
            } else if (ch == 0xc2 && next >= 0x80 && next <= 0x9f) {   // U+0080..U+009F
                buf[i] = '?';
                if (i + 1 < k) buf[++i] = '?';
            }
        }
    for (ssize_t off = 0; off < k && !must_stop(deadline);) {
        struct pollfd p = {dest, POLLOUT, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        size_t chunk = (size_t)(k - off) < 4096 ? (size_t)(k - off) : 4096;   // PIPE_BUF: never blocks
        ssize_t w = write(dest, buf + off, chunk);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (w <= 0) break;
        off += w;
    }
}

// Terminates the child and its session, kills them after the grace period, and reaps the child.
static void stop_child(ct_child *c, int *status) {
    kill(-c->pid, SIGTERM);
    kill(c->pid, SIGTERM);
    double until = ct_now() + CT_CHILD_GRACE;
    while (ct_now() < until) {
        if (waitpid(c->pid, status, WNOHANG) == c->pid) goto reaped;
        usleep(10000);
    }
    kill(-c->pid, SIGKILL);
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, status, 0) < 0 && errno == EINTR) {}
reaped:
    kill(-c->pid, SIGKILL);   // anything left in its group
}

static void end_from_status(ct_child_end *end, int status) {
    if (WIFSIGNALED(status)) end->how = CT_CHILD_SIGNALED, end->sig = WTERMSIG(status);
    else end->how = CT_CHILD_EXITED, end->code = WEXITSTATUS(status);
}

// One message of the child, handled. Returns OK to go on, IO when the child closed the
// connection, CANCELLED/TIMEOUT when the wait must stop, or fails with BAD_RESPONSE.
static ct_status handle_message(ct_child *c, double deadline, ct_child_request_fn fn, void *data, ct_child_end *end,
                                ct_err *err) {
    char kind, *msg;
    size_t n;
    ct_err e = {0};
    ct_status r = ct_frame_recv(c->sock, CT_REPORT_MAX, &kind, &msg, &n, deadline, &e);
    if (r == CT_STATUS_IO || r == CT_STATUS_CANCELLED || r == CT_STATUS_TIMEOUT) return r;
    if (r) return ct_fail(err, CT_STATUS_BAD_RESPONSE, "run: the experiment process sent a malformed message: %s", e.msg);
    if (kind == 'Q' && n <= CT_REQUEST_MAX && fn && !end->report) {
        char *reply = NULL;
        size_t reply_n = 0;
        fn(data, msg, n, &reply, &reply_n);
        free(msg);
        if (reply && reply_n > CT_FRAME_MAX) {   // an answer too large to send: say so instead
            free(reply);
            reply = strdup("{\"error\":\"TOO_LARGE: the answer is larger than a message may be\"}");
            reply_n = reply ? strlen(reply) : 0;
        }
        r = ct_frame_send(c->sock, 'A', reply ? reply : "", reply ? reply_n : 0, deadline, &e);
        free(reply);
        return r == CT_STATUS_CANCELLED || r == CT_STATUS_TIMEOUT ? r : CT_OK;
    }
    if (kind == 'R' && !end->report) {
        end->report = msg, end->report_n = n;
        return CT_OK;
    }
    free(msg);
    return ct_fail(err, CT_STATUS_BAD_RESPONSE, "run: the experiment process sent a message out of protocol "
                   "(kind '%c', %zu bytes)", kind, n);
}

ct_status ct_child_wait(ct_child *c, double deadline, ct_child_request_fn fn, void *data,
                        volatile sig_atomic_t *cancel, ct_child_end *end, ct_err *err) {
    memset(end, 0, sizeof *end);
    struct sigaction sa, old_int, old_term, old_hup;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;   // no SA_RESTART: a blocked poll returns
    g_stop = 0;
    g_cancel = cancel;
    sigaction(SIGINT, &sa, &old_int), sigaction(SIGTERM, &sa, &old_term), sigaction(SIGHUP, &sa, &old_hup);
    ct_status rc = CT_OK;
    int status = 0, reaped = 0;
    while (!reaped) {
        if (must_stop(deadline)) break;
        struct pollfd p[3] = {{c->sock, POLLIN, 0}, {c->out, POLLIN, 0}, {c->err, POLLIN, 0}};
        int ms = c->sock < 0 && c->out < 0 && c->err < 0 ? 2 : 50;   // the child's exit is polled too
        if (deadline > 0 && (deadline - ct_now()) * 1000 < ms) ms = (int)((deadline - ct_now()) * 1000) + 1;
        int k = poll(p, 3, ms);
        if (k < 0 && errno != EINTR) break;
        if (k > 0 && p[1].revents) relay(&c->out, c->quiet ? -1 : 1, deadline);
        if (k > 0 && p[2].revents) relay(&c->err, 2, deadline);
        if (k > 0 && p[0].revents && c->sock >= 0) {
            ct_status r = handle_message(c, deadline, fn, data, end, err);
            if (r == CT_STATUS_IO) {   // closed: the child is ending
                close(c->sock);
                c->sock = -1;
            } else if (r == CT_STATUS_CANCELLED || r == CT_STATUS_TIMEOUT) {
                break;
            } else if (r) {
                rc = r;
                break;
            }
        }
        pid_t w = waitpid(c->pid, &status, WNOHANG);
        if (w == c->pid) reaped = 1;
        else if (w < 0 && errno != EINTR) break;
    }
    if (!reaped) {
        int stop = g_stop;
        int late = deadline > 0 && ct_now() >= deadline;
        stop_child(c, &status);
        if (!rc && stop == SIGINT) end->how = CT_CHILD_INTERRUPTED;
        else if (!rc && stop) end->how = CT_CHILD_TERMINATED;
        else if (!rc && late) end->how = CT_CHILD_TIMEOUT;
        else end_from_status(end, status);
        if (end->how != CT_CHILD_EXITED) free(end->report), end->report = NULL;
    } else {
        kill(-c->pid, SIGKILL);   // nothing of its session outlives it
        end_from_status(end, status);
        // a report still in the socket (sent just before the exit)
        while (c->sock >= 0 && !end->report && handle_message(c, ct_now() + 1, NULL, NULL, end, err) == CT_OK) {}
    }
    // what is left (the writers are gone: the pipes end), unless the parent was asked to stop
    double drain = ct_now() + 2;
    while ((c->out >= 0 || c->err >= 0) && !g_stop && ct_now() < drain) {
        struct pollfd p[2] = {{c->out, POLLIN, 0}, {c->err, POLLIN, 0}};
        if (poll(p, 2, 50) <= 0) continue;
        if (p[0].revents) relay(&c->out, 1, drain);
        if (p[1].revents) relay(&c->err, 2, drain);
    }
    int *fds[] = {&c->sock, &c->out, &c->err};
    for (int i = 0; i < 3; i++)
        if (*fds[i] >= 0) close(*fds[i]), *fds[i] = -1;
    sigaction(SIGINT, &old_int, NULL), sigaction(SIGTERM, &old_term, NULL), sigaction(SIGHUP, &old_hup, NULL);
    g_cancel = NULL;
    return rc;
}

void ct_child_end_free(ct_child_end *end) {
    free(end->report);
    end->report = NULL;
}
