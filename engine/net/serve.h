// serve.h - a small HTTP/1.0 file server on 127.0.0.1 for graphs and viewer pages (ctrace serve).
#ifndef CT_SERVE_H
#define CT_SERVE_H

#include "core/status.h"

// Serves the files of dir (GET and HEAD; "/" lists the .html pages) on 127.0.0.1:port (0: any
// free port) until *cancel becomes non-zero. ready(ctx, port) is called once listening.
ct_status ct_serve_dir(const char *dir, int port, volatile int *cancel, void (*ready)(void *ctx, int port), void *ctx,
                       ct_err *err);

#endif
