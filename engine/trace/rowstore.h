// rowstore.h - the rows of an attribution run, held in memory or spilled to a file.
//
// A row is the direct effect of every column (active features, then error, token and logit
// nodes) on one target read at (layer, position). By causality only features of earlier layers
// at positions up to the target's can be non-zero, so a spilled row keeps just those: one
// segment per earlier layer (the layer's features at positions 1..pos, consecutive columns
// since features are sorted by layer, position, index) and the error/token/logit tail. Rows in
// memory are kept the same way: memory is touched only for what the rows can hold.
#ifndef CT_ROWSTORE_H
#define CT_ROWSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
    int n_layers, n_pos;
    int64_t n_active;        // feature columns
    int64_t n_cols;          // n_active + (L+1)*T + K
    const int64_t *start;    // (L*T + 1) first feature column of (layer, position)
} ct_row_layout;

typedef struct {
    int64_t col, n;          // columns col .. col+n-1
    const float *v;          // their values (valid until the next read)
} ct_row_seg;

typedef struct ct_rowstore ct_rowstore;

// Room for max_rows rows: in memory when they fit in mem_bytes, else in a file under dir (or
// $TMPDIR, or /tmp) that is deleted as soon as it is opened.
ct_status ct_rowstore_open(ct_rowstore **out, const ct_row_layout *lay, int64_t max_rows, size_t mem_bytes, ct_err *err);
void ct_rowstore_close(ct_rowstore *s);
int ct_rowstore_spilled(const ct_rowstore *s);
int64_t ct_rowstore_rows(const ct_rowstore *s);
// Bytes the rows take (memory or file).
size_t ct_rowstore_bytes(const ct_rowstore *s);
// Appends a full-width row (n_cols) of a target read at (layer, pos); layer L for logits.
ct_status ct_rowstore_append(ct_rowstore *s, const float *row, int layer, int pos, ct_err *err);
// Row r as segments (at most L + 1); *n_segs set.
ct_status ct_rowstore_read(ct_rowstore *s, int64_t r, ct_row_seg *segs, int *n_segs, ct_err *err);
// Value of row r (last read with ct_rowstore_read) at column c, from its segments.
float ct_row_value(const ct_row_seg *segs, int n_segs, int64_t c);

#endif
