// zip.h - ZIP archives, the container of .npz files and of PyTorch's .pt files (torch.save).
//
// Reading: the end-of-central-directory record is found from the end (ZIP64 records are
// followed); central entries give method, sizes, CRC and local offset; stored members are used
// in place, deflated ones are inflated (zlib) into memory; each member's CRC-32 is checked over
// every byte when the archive is parsed (core/crc32.h: memory speed; numpy's and PyTorch's
// readers check it too). Members may not share their data (the bytes they claim together stay
// within the archive) and names are unique, so the work stays linear (n log n) in the file.
//
// Writing: members stored (no compression), each member's data starting on a 64-byte boundary of
// the file (as torch.save places them), ZIP64 records where a size or offset passes 4 GiB - 1,
// times and dates fixed (1980-01-01): the same members give the same bytes.
#ifndef CT_ZIP_H
#define CT_ZIP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef struct {
    char *name;              // as stored
    const uint8_t *data;     // the member's bytes: into the archive when stored, else owned
    size_t size;
    uint8_t *owned;          // an inflated member (NULL for stored ones)
} ct_zip_member;

typedef struct {
    int n;
    ct_zip_member *members;   // (n,) in the central directory's order
    ct_zip_member **by_name;  // (n,) sorted by name (ct_zip_find searches it)
} ct_zip;

// Parses the archive buf (size bytes, borrowed: it must outlive z). what names the format in
// messages ("npz", "pt"); flags: CT_ZIP_MAPPED (buf is a file mapping: stored members' pages are
// mapped in one call before their CRC is read), CT_ZIP_STORED_ONLY (a compressed member is
// refused before it is inflated).
enum { CT_ZIP_MAPPED = 1, CT_ZIP_STORED_ONLY = 2 };
ct_status ct_zip_parse(ct_zip *z, const uint8_t *buf, size_t size, const char *what, int flags, ct_err *err);
void ct_zip_free(ct_zip *z);
// The member of that name (binary search), or NULL.
const ct_zip_member *ct_zip_find(const ct_zip *z, const char *name);

// A writer over f (a file being written from its start):
//   ct_zip_writer w;
//   ct_zip_writer_init(&w, f);
//   ct_zip_begin(&w, "archive/data.pkl", n);  ct_zip_put(&w, p, n);  ct_zip_end(&w);
//   ...
//   ct_zip_finish(&w, err);   // the central directory; frees w's records
// Write errors and a member whose bytes differ from its declared size are reported by
// ct_zip_finish (ct_zip_writer_free drops a writer given up on).
typedef struct {
    char *name;
    uint64_t off, size;   // local header offset, data bytes
    uint32_t crc;
} ct_zip_record;

typedef struct {
    FILE *f;
    uint64_t off;          // bytes written so far
    ct_zip_record *rec;    // (n,)
    int n, cap;
    uint64_t put;          // bytes of the open member so far
    uint32_t crc;          // and their CRC-32
    int failed;            // a write failed, out of memory or a size mismatch
    char why[160];         // the first failure
} ct_zip_writer;

void ct_zip_writer_init(ct_zip_writer *w, FILE *f);
void ct_zip_begin(ct_zip_writer *w, const char *name, uint64_t size);
void ct_zip_put(ct_zip_writer *w, const void *p, size_t n);
void ct_zip_end(ct_zip_writer *w);
ct_status ct_zip_finish(ct_zip_writer *w, ct_err *err);
void ct_zip_writer_free(ct_zip_writer *w);

#endif
