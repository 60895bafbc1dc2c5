// serve.h - a small HTTP/1.0 file server on 127.0.0.1 for graphs and viewer pages (ctrace serve).
//
// One thread and one poll() loop over non-blocking sockets, so a slow client holds only its own
// connection: at most CT_SERVE_MAX_CONN at once (a new one replaces the oldest still sending
// its request, else gets 503), a request's line and headers must arrive within
// CT_SERVE_REQUEST_MS, a response must make progress every CT_SERVE_IDLE_MS and end within
// CT_SERVE_LIFETIME_MS. Cancelling the context stops the loop within 0.2 s.
//
// What it answers: GET and HEAD; "/" lists the .html pages (names HTML-escaped, links relative
// and percent-encoded); any other path names a regular file of the directory, opened one
// component at a time with O_NOFOLLOW from the directory itself, so no symbolic link is followed
// (403) and nothing outside the directory is ever opened. Only loopback Host headers are
// accepted (127.0.0.1, localhost, [::1], with any port): a page of another site that a browser
// reaches through a DNS name pointing at 127.0.0.1 gets 403 and no content. HTTP/1.1 requests
// must carry Host; HTTP/1.0 ones may omit it.
#ifndef CT_SERVE_H
#define CT_SERVE_H

#include "core/ctx.h"
#include "core/status.h"

enum {
    CT_SERVE_MAX_CONN = 64,
    CT_SERVE_REQUEST_MS = 10000,
    CT_SERVE_IDLE_MS = 30000,
    CT_SERVE_LIFETIME_MS = 600000,
};

// Serves the files of dir on 127.0.0.1:port (0: any free port) until ctx is cancelled.
// ready(ud, port) is called once listening.
ct_status ct_serve_dir(const ct_ctx *ctx, const char *dir, int port, void (*ready)(void *ud, int port), void *ud,
                       ct_err *err);

#endif
