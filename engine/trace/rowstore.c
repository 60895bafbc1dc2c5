// rowstore.c - attribution rows in memory or packed in a file (see rowstore.h).
#include "trace/rowstore.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/tensor.h"

struct ct_rowstore {
    ct_row_layout lay;
    int64_t max_rows, n_rows;
    float *mem;              // in memory: room for max_rows full rows (only what is written is touched), or NULL
    int fd;                  // spill file (unlinked), -1 in memory
    int64_t *off;            // (max_rows,) offset of each packed row in memory or the file, in floats
    int32_t *layer, *pos;    // (max_rows,) each row's read point
    int64_t n_floats;        // written so far
    float *buf;              // spilled: packing / reading buffer (n_cols)
};

// Segments of a row read at (layer, pos), with values taken from v laid out packed.
static int segments(const ct_row_layout *y, int layer, int pos, const float *v, ct_row_seg *segs) {
    int n = 0, T = y->n_pos, top = layer < y->n_layers ? layer : y->n_layers;
    int p = pos < T - 1 ? pos : T - 1;
    for (int l = 0; l < top; l++) {
        int64_t a = y->start[l * T + 1], b = y->start[l * T + p + 1];
        segs[n++] = (ct_row_seg){a, b - a, v};
        v += b - a;
    }
    segs[n++] = (ct_row_seg){y->n_active, y->n_cols - y->n_active, v};
    return n;
}

static int64_t packed_len(const ct_row_layout *y, int layer, int pos) {
    ct_row_seg segs[1024 + 1];
    int n = segments(y, layer, pos, NULL, segs);
    int64_t len = 0;
    for (int i = 0; i < n; i++) len += segs[i].n;
    return len;
}

ct_status ct_rowstore_open(ct_rowstore **out, const ct_row_layout *lay, int64_t max_rows, size_t mem_bytes, ct_err *err) {
    *out = NULL;
    if (lay->n_layers > 1024) return ct_fail(err, CT_STATUS_UNSUPPORTED, "row store: at most 1024 layers, got %d", lay->n_layers);
    ct_rowstore *s = calloc(1, sizeof *s);
    if (!s) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    s->lay = *lay;
    s->max_rows = max_rows;
    s->fd = -1;
    double need = (double)max_rows * lay->n_cols * sizeof(float);
    s->off = malloc(sizeof(int64_t) * (size_t)(max_rows + 1));
    s->layer = malloc(sizeof(int32_t) * (size_t)(max_rows + 1));
    s->pos = malloc(sizeof(int32_t) * (size_t)(max_rows + 1));
    if (!s->off || !s->layer || !s->pos) {
        ct_rowstore_close(s);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    if (need <= (double)mem_bytes) {
        if (!(s->mem = ct_calloc((size_t)need + 1))) {
            ct_rowstore_close(s);
            return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory: %lld rows of %lld columns need %.1f GB",
                           (long long)max_rows, (long long)lay->n_cols, need / 1e9);
        }
    } else {
        const char *dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        char path[4200];
        snprintf(path, sizeof path, "%s/ctrace-rows-XXXXXX", dir);
        s->fd = mkstemp(path);
        if (s->fd < 0) {
            ct_rowstore_close(s);
            return ct_fail(err, CT_STATUS_IO, "row store: cannot create a file in %s: %s", dir, strerror(errno));
        }
        unlink(path);   // gone when closed, even if the process dies
        if (!(s->buf = malloc(sizeof(float) * (size_t)(lay->n_cols + 1)))) {
            ct_rowstore_close(s);
            return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        }
    }
    *out = s;
    return CT_OK;
}

void ct_rowstore_close(ct_rowstore *s) {
    if (!s) return;
    if (s->mem) ct_dealloc(s->mem, (size_t)((double)s->max_rows * s->lay.n_cols * sizeof(float)) + 1);
    if (s->fd >= 0) close(s->fd);
    free(s->off), free(s->layer), free(s->pos), free(s->buf);
    free(s);
}

int ct_rowstore_spilled(const ct_rowstore *s) { return s->mem == NULL; }
int64_t ct_rowstore_rows(const ct_rowstore *s) { return s->n_rows; }

size_t ct_rowstore_bytes(const ct_rowstore *s) { return (size_t)s->n_floats * sizeof(float); }

ct_status ct_rowstore_append(ct_rowstore *s, const float *row, int layer, int pos, ct_err *err) {
    if (s->n_rows >= s->max_rows) return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "row store: full at %lld rows", (long long)s->max_rows);
    int64_t r = s->n_rows;
    s->layer[r] = layer, s->pos[r] = pos;
    // the row packed: into memory, or the buffer and then the file
    float *dst = s->mem ? s->mem + s->n_floats : s->buf;
    ct_row_seg segs[1024 + 1];
    int n = segments(&s->lay, layer, pos, NULL, segs);
    int64_t len = 0;
    for (int i = 0; i < n; i++) {
        memcpy(dst + len, row + segs[i].col, sizeof(float) * (size_t)segs[i].n);
        len += segs[i].n;
    }
    if (!s->mem) {
        size_t bytes = sizeof(float) * (size_t)len;
        off_t at = (off_t)s->n_floats * (off_t)sizeof(float);
        for (size_t done = 0; done < bytes;) {
            ssize_t w = pwrite(s->fd, (const char *)s->buf + done, bytes - done, at + (off_t)done);
            if (w <= 0) return ct_fail(err, CT_STATUS_IO, "row store: writing row %lld: %s", (long long)r, w < 0 ? strerror(errno) : "disk full");
            done += (size_t)w;
        }
    }
    s->off[r] = s->n_floats;
    s->n_floats += len;
    s->n_rows++;
    return CT_OK;
}

ct_status ct_rowstore_read(ct_rowstore *s, int64_t r, ct_row_seg *segs, int *n_segs, ct_err *err) {
    if (r < 0 || r >= s->n_rows) return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "row store: row %lld of %lld", (long long)r, (long long)s->n_rows);
    if (s->mem) {
        *n_segs = segments(&s->lay, s->layer[r], s->pos[r], s->mem + s->off[r], segs);
        return CT_OK;
    }
    size_t bytes = sizeof(float) * (size_t)packed_len(&s->lay, s->layer[r], s->pos[r]);
    off_t at = (off_t)s->off[r] * (off_t)sizeof(float);
    for (size_t done = 0; done < bytes;) {
        ssize_t n = pread(s->fd, (char *)s->buf + done, bytes - done, at + (off_t)done);
        if (n <= 0) return ct_fail(err, CT_STATUS_IO, "row store: reading row %lld: %s", (long long)r, n < 0 ? strerror(errno) : "short file");
        done += (size_t)n;
    }
    *n_segs = segments(&s->lay, s->layer[r], s->pos[r], s->buf, segs);
    return CT_OK;
}

float ct_row_value(const ct_row_seg *segs, int n_segs, int64_t c) {
    int lo = 0, hi = n_segs;   // segments ascend by column: the last one starting at or before c
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (segs[mid].col <= c) lo = mid;
        else hi = mid;
    }
    if (n_segs > 0 && c >= segs[lo].col && c < segs[lo].col + segs[lo].n) return segs[lo].v[c - segs[lo].col];
    return 0.0f;
}
