// npz.h - NumPy .npy arrays and .npz archives (ZIP, stored or deflated members), validated.
//
// npy: "\x93NUMPY", major/minor version, header length (v1: u16, v2/v3: u32), a Python dict
// literal {'descr': '<f4', 'fortran_order': False, 'shape': (2304, 16384), }. Only
// little-endian (or byte-sized) dtypes in C order are accepted. npz: a zip archive of .npy
// members (formats/zip.h: stored members used in place from the mapping, deflated ones inflated
// into memory, CRC-32 checked for both, over every byte, when the archive is opened, as numpy's
// reader checks it), each member parsed as npy; member names lose their ".npy".
#ifndef CT_NPZ_H
#define CT_NPZ_H

#include <stddef.h>
#include <stdint.h>

#include "formats/safetensors.h"   // ct_dtype
#include "formats/zip.h"
#include "core/ctx.h"
#include "core/status.h"

#define CT_NPY_MAX_DIMS 8

typedef struct {
    char *name;              // member name without ".npy"
    ct_dtype dtype;
    int ndim;
    int64_t shape[CT_NPY_MAX_DIMS];
    const uint8_t *data;     // array bytes (little-endian, C order); not aligned in general
    size_t nbytes;
} ct_npy_array;

typedef struct ct_npz {
    uint8_t *map;
    size_t size;
    int mapped;
    ct_zip zip;              // the members (inflated ones owned there)
    int n;
    ct_npy_array *arrays;
} ct_npz;

ct_status ct_npz_open(ct_ctx *ctx, ct_npz **out, const char *path, ct_err *err);
// Parses an archive held in memory (borrowed: it must outlive the result).
ct_status ct_npz_parse(ct_npz **out, const uint8_t *buf, size_t size, ct_err *err);
void ct_npz_free(ct_npz *z);
const ct_npy_array *ct_npz_find(const ct_npz *z, const char *name);

// Parses one .npy file image (buf, size) into a (borrowing; .name NULL).
ct_status ct_npy_parse(ct_npy_array *a, const uint8_t *buf, size_t size, ct_err *err);
int64_t ct_npy_numel(const ct_npy_array *a);
// Float arrays (f2, f4, f8) to float32: out has ct_npy_numel(a) floats.
ct_status ct_npy_to_f32(float *out, const ct_npy_array *a, ct_err *err);

#endif
