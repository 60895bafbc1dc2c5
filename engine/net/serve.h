// serve.h - a small HTTP/1.0 file server on 127.0.0.1 for graphs and viewer pages (ctrace serve).
#ifndef CT_SERVE_H
#define CT_SERVE_H

#include "core/ctx.h"
#include "core/status.h"

// Serves the files of dir (GET and HEAD; "/" lists the .html pages) on 127.0.0.1:port (0: any
// free port) until ctx is cancelled. ready(ud, port) is called once listening.
ct_status ct_serve_dir(const ct_ctx *ctx, const char *dir, int port, void (*ready)(void *ud, int port), void *ud,
                       ct_err *err);

#endif
