// child.h - the experiment process of `ctrace run` and its parent: starting it, the messages
// between them, and the parent's wait, which enforces the deadline and Ctrl-C with signals (the
// child is terminated, then killed after a short grace, however it is stuck).
//
// Messages are frames: a 4-byte little-endian length, a kind byte, the payload. The parent sends
// the run's settings (kind 'S') and answers requests (kind 'A'); the child sends requests it
// cannot serve itself, such as downloads (kind 'Q'), and its report at the end (kind 'R').
//
//   ct_child c;
//   ct_child_spawn(&c, argv, env, &err);     // argv[1..]: how the child finds its socket (fd 3)
//   ct_frame_send(c.sock, 'S', spec, strlen(spec), deadline, &err);
//   ct_child_end end;
//   ct_child_wait(&c, deadline, on_request, data, &end, &err);
//   if (end.how == CT_CHILD_EXITED && end.code == 0 && end.report) ... success
//   ct_child_end_free(&end);
#ifndef CT_RUN_CHILD_H
#define CT_RUN_CHILD_H
#include <signal.h>
#include <stddef.h>
#include <sys/types.h>
#include "core/status.h"

#define CT_FRAME_MAX (64 << 20)     // bytes of one message's payload
#define CT_REQUEST_MAX (1 << 20)    // bytes of one request of the child
#define CT_REPORT_MAX (16 << 20)    // bytes of its report
#define CT_CHILD_FD 3             // the child's end of the socket
#define CT_CHILD_GRACE 0.5        // seconds between terminate and kill

typedef struct {
    pid_t pid;        // also its session and process group
    int sock;         // the parent's end
    int out, err;     // its standard output and error (pipes the parent relays)
    int quiet;        // its standard output dropped (a rank of an MPI job other than 0: rank 0 prints)
} ct_child;

typedef enum {
    CT_CHILD_EXITED,        // code: its exit status
    CT_CHILD_SIGNALED,      // sig: the signal that ended it (a crash, a limit)
    CT_CHILD_TIMEOUT,       // the deadline passed: stopped
    CT_CHILD_INTERRUPTED,   // Ctrl-C (SIGINT) reached the parent: stopped
    CT_CHILD_TERMINATED,    // SIGTERM or SIGHUP reached the parent: stopped
} ct_child_how;

typedef struct {
    ct_child_how how;
    int code, sig;
    char *report;   // the child's report (kind 'R'), NUL-terminated; NULL when none came
    size_t report_n;
} ct_child_end;

// A request from the child: the answer is a malloc'ed payload (*reply, *n); the handler may set
// it even when it fails. The handler runs in the parent, unconfined.
typedef void (*ct_child_request_fn)(void *data, const char *req, size_t n, char **reply, size_t *reply_n);

// Starts path with argv and env (NULL-terminated) in a session of its own (no controlling
// terminal), stdin from /dev/null, stdout and stderr pipes to the parent, the socket at
// CT_CHILD_FD and no other descriptor; it dies with the parent.
ct_status ct_child_spawn(ct_child *c, const char *path, char *const argv[], char *const env[], ct_err *err);
// Serves the child's requests and relays its output (control characters shown as '?' when the
// parent's output is a terminal) until it exits, stopping it when the deadline (ct_now()
// seconds; 0: none) passes or SIGINT, SIGTERM or SIGHUP reaches the parent (*cancel, when given,
// is set then, so that a request being served stops too). A request over CT_REQUEST_MAX bytes, a
// report over CT_REPORT_MAX or a message out of protocol stops the child: BAD_RESPONSE.
ct_status ct_child_wait(ct_child *c, double deadline, ct_child_request_fn fn, void *data,
                        volatile sig_atomic_t *cancel, ct_child_end *end, ct_err *err);
void ct_child_end_free(ct_child_end *end);

// One frame, whole; deadline as above. recv: *kind, and a malloc'ed NUL-terminated payload of at
// most max bytes (TOO_LARGE otherwise); IO when the other end closed.
ct_status ct_frame_send(int fd, char kind, const void *data, size_t n, double deadline, ct_err *err);
ct_status ct_frame_recv(int fd, size_t max, char *kind, char **data, size_t *n, double deadline, ct_err *err);

#endif
