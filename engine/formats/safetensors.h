// safetensors.h - validated, memory-mapped safetensors reader and a writer.
//
// File layout: [u64 N][N bytes of JSON header][data]. The header maps tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} relative to the data start. Opening a file
// validates everything before any tensor byte is read: header length within the file and at
// most 100 MB, a JSON object, known dtypes, non-negative integer shapes, end - begin equal to
// numel * dtype size, ranges inside the file, no overlapping ranges, unique names.
#ifndef CT_SAFETENSORS_H
#define CT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "core/status.h"
#include "core/tensor.h"   // ct_dtype

#define CT_ST_MAX_DIMS 8

typedef struct {
    char *name;
    ct_dtype dtype;
    int ndim;
    int64_t shape[CT_ST_MAX_DIMS];
    const uint8_t *data;   // into the mapping; not aligned in general
    size_t nbytes;
} ct_st_tensor;

typedef struct ct_safetensors {
    uint8_t *map;          // whole file (mmap) or a borrowed buffer
    size_t size;
    int mapped;
    int n_tensors;
    ct_st_tensor *tensors;
    ct_st_tensor **by_name;   // (n_tensors,) the tensors in the order of their names (for lookups)
    int n_meta;
    char **meta_keys, **meta_values;   // "__metadata__" string map
} ct_safetensors;

// Maps and validates the file at path.
ct_status ct_safetensors_open(ct_ctx *ctx, ct_safetensors **out, const char *path, ct_err *err);
// Validates a buffer already in memory (borrowed: it must outlive the result). Used by the fuzzer.
ct_status ct_safetensors_parse(ct_safetensors **out, const uint8_t *buf, size_t size, ct_err *err);
void ct_safetensors_free(ct_safetensors *st);

const ct_st_tensor *ct_safetensors_find(const ct_safetensors *st, const char *name);
int64_t ct_st_numel(const ct_st_tensor *t);
// Converts a float tensor (F64, F32, F16, BF16) to float32: out has ct_st_numel(t) floats.
ct_status ct_st_to_f32(float *out, const ct_st_tensor *t, ct_err *err);

// ----------------------------------------------------------------------------
// Writer

typedef struct {
    const char *name;
    ct_dtype dtype;          // F32, F16 or BF16 (data is converted from float32), or I64
    int ndim;
    int64_t shape[CT_ST_MAX_DIMS];
    const float *data;       // numel floats
    const int64_t *i64;      // numel integers when dtype is I64
    // F32 only, when data is NULL: fills row r (numel / shape[0] floats), so a large tensor
    // never has to exist in memory at once
    void (*row)(void *ctx, int64_t r, float *out);
    void *ctx;
} ct_st_entry;

// Writes entries in the given order to path (through a temporary file and a rename).
// meta: n_meta key/value pairs for "__metadata__" (may be 0).
ct_status ct_safetensors_write(ct_ctx *ctx, const char *path, const ct_st_entry *entries, int n,
                               const char *const *meta_kv, int n_meta, ct_err *err);

#endif
