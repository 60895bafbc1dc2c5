// npz.c - .npy parsing and .npz (ZIP) reading.
#include "formats/npz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

// ----------------------------------------------------------------------------
// npy

int64_t ct_npy_numel(const ct_npy_array *a) {
    int64_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

// Finds 'key' in the header dict and returns the text after its colon (skipping spaces).
static const char *dict_value(const char *h, size_t n, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 2 <= n; i++) {
        if ((h[i] == '\'' || h[i] == '"') && memcmp(h + i + 1, key, kl) == 0 && h[i + 1 + kl] == h[i]) {
            const char *p = h + i + kl + 2;
            while (p < h + n && (*p == ' ' || *p == ':')) p++;
            return p < h + n ? p : NULL;
        }
    }
    return NULL;
}

ct_status ct_npy_parse(ct_npy_array *a, const uint8_t *buf, size_t size, ct_err *err) {
    memset(a, 0, sizeof *a);
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: missing the \\x93NUMPY magic");
    int major = buf[6];
    size_t hl, off;
    if (major == 1) {
        hl = rd16(buf + 8), off = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: truncated header");
        hl = rd32(buf + 8), off = 12;
    } else {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "npy: format version %d.%d; expected 1.0, 2.0 or 3.0", major, buf[7]);
    }
    if (hl > size - off) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: header length %zu exceeds the %zu bytes after it", hl, size - off);
    const char *h = (const char *)buf + off;
    const char *d = dict_value(h, hl, "descr"), *fo = dict_value(h, hl, "fortran_order"), *sh = dict_value(h, hl, "shape");
    if (!d || !fo || !sh) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: header lacks descr, fortran_order or shape");
    size_t fo_left = (size_t)(h + hl - fo);
    if (fo_left >= 4 && memcmp(fo, "True", 4) == 0)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "npy: fortran_order arrays are not supported; expected C order");
    if (fo_left < 5 || memcmp(fo, "False", 5) != 0)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: fortran_order is neither True nor False");
    char q = *d;
    if ((q != '\'' && q != '"') || (size_t)(d - h) + 5 > hl)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: descr is not a quoted string");
    char endian = d[1];
    char kind = d[2];
    int bytes = d[3] - '0';
    char descr[4] = {d[1], d[2], d[3], 0};   // for messages: never print from the file buffer itself
    if (d[4] != q || bytes < 1 || bytes > 8)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "npy: dtype %s is not supported", descr);
    if (endian == '>' && bytes > 1)
        return ct_fail(err, CT_STATUS_BAD_DTYPE, "npy: big-endian dtype %s is not supported; expected little-endian", descr);
    if (endian != '<' && endian != '|' && endian != '=' && endian != '>')
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: dtype %s has no byte order", descr);
    static const struct { char kind; int bytes; ct_dtype dt; } types[] = {
        {'f', 2, CT_DT_F16}, {'f', 4, CT_DT_F32}, {'f', 8, CT_DT_F64}, {'i', 1, CT_DT_I8}, {'i', 2, CT_DT_I16},
        {'i', 4, CT_DT_I32}, {'i', 8, CT_DT_I64}, {'u', 1, CT_DT_U8}, {'u', 2, CT_DT_U16}, {'u', 4, CT_DT_U32},
        {'u', 8, CT_DT_U64}, {'b', 1, CT_DT_BOOL}};
    int found = 0;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i].kind == kind && types[i].bytes == bytes) a->dtype = types[i].dt, found = 1;
    if (!found) return ct_fail(err, CT_STATUS_BAD_DTYPE, "npy: dtype %s is not supported", descr);
    // shape: a tuple of non-negative integers
    if (*sh != '(') return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: shape is not a tuple");
    const char *p = sh + 1, *end = h + hl;
    uint64_t numel = 1;
    while (p < end && *p != ')') {
        while (p < end && (*p == ' ' || *p == ',')) p++;
        if (p < end && *p == ')') break;
        if (p >= end || *p < '0' || *p > '9') return ct_fail(err, CT_STATUS_BAD_SHAPE, "npy: shape entry is not an integer");
        uint64_t v = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (v > (1ULL << 40)) return ct_fail(err, CT_STATUS_BAD_SHAPE, "npy: shape entry too large");
            v = v * 10 + (uint64_t)(*p++ - '0');
        }
        if (p < end && *p == 'L') p++;   // Python 2 longs
        if (a->ndim == CT_NPY_MAX_DIMS) return ct_fail(err, CT_STATUS_BAD_SHAPE, "npy: more than %d dimensions", CT_NPY_MAX_DIMS);
        if (v && numel > (1ULL << 50) / v) return ct_fail(err, CT_STATUS_BAD_SHAPE, "npy: shape overflows");
        numel *= v;
        a->shape[a->ndim++] = (int64_t)v;
    }
    if (p >= end) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npy: unterminated shape tuple");
    size_t data_off = off + hl, want = (size_t)numel * (size_t)bytes;
    if (size - data_off != want)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "npy: shape and dtype need %zu data bytes, the file has %zu", want, size - data_off);
    a->data = buf + data_off;
    a->nbytes = want;
    return CT_OK;
}

ct_status ct_npy_to_f32(float *out, const ct_npy_array *a, ct_err *err) {
    ct_st_tensor t = {.name = a->name ? a->name : (char *)"npy", .dtype = a->dtype, .ndim = a->ndim, .data = a->data,
                      .nbytes = a->nbytes};
    memcpy(t.shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    return ct_st_to_f32(out, &t, err);
}

// ----------------------------------------------------------------------------
// npz: a zip of .npy members

void ct_npz_free(ct_npz *z) {
    if (!z) return;
    for (int i = 0; i < z->n; i++) free(z->arrays[i].name);
    free(z->arrays);
    ct_zip_free(&z->zip);
    if (z->mapped) ct_unmap_file(z->map, z->size);
    free(z);
}

const ct_npy_array *ct_npz_find(const ct_npz *z, const char *name) {
    for (int i = 0; i < z->n; i++)
        if (strcmp(z->arrays[i].name, name) == 0) return &z->arrays[i];
    return NULL;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const ct_npy_array *const *)a)->name, (*(const ct_npy_array *const *)b)->name);
}

static ct_status parse_into(ct_npz *z, ct_err *err) {
    ct_status rc = ct_zip_parse(&z->zip, z->map, z->size, "npz", z->mapped ? CT_ZIP_MAPPED : 0, err);
    if (rc) return rc;
    z->arrays = calloc((size_t)z->zip.n + 1, sizeof *z->arrays);
    if (!z->arrays) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; i < z->zip.n; i++) {
        const ct_zip_member *m = &z->zip.members[i];
        ct_npy_array *a = &z->arrays[z->n];
        if ((rc = ct_npy_parse(a, m->data, m->size, err))) {
            ct_err_where(err, m->name);
            return rc;
        }
        size_t nl = strlen(m->name);
        if (!(a->name = strdup(m->name))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        if (nl > 4 && strcmp(a->name + nl - 4, ".npy") == 0) a->name[nl - 4] = 0;
        z->n++;
    }
    // unique names once ".npy" is dropped, checked in the order of the names (n log n)
    const ct_npy_array **by_name = malloc(sizeof *by_name * ((size_t)z->n + 1));
    if (!by_name) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; i < z->n; i++) by_name[i] = &z->arrays[i];
    qsort(by_name, (size_t)z->n, sizeof *by_name, cmp_by_name);
    for (int i = 1; i < z->n && !rc; i++)
        if (strcmp(by_name[i - 1]->name, by_name[i]->name) == 0)
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: member '%s' appears twice", by_name[i]->name);
    free(by_name);
    return rc;
}

// mapped: buf is a file mapping the result takes over (unmapped by ct_npz_free), else borrowed
static ct_status parse(ct_npz **out, const uint8_t *buf, size_t size, int mapped, ct_err *err) {
    *out = NULL;
    ct_npz *z = calloc(1, sizeof *z);
    if (!z) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    z->map = (uint8_t *)buf;
    z->size = size;
    z->mapped = mapped;
    ct_status rc = parse_into(z, err);
    if (rc) {
        z->mapped = 0;   // the caller unmaps
        ct_npz_free(z);
        return rc;
    }
    *out = z;
    return CT_OK;
}

ct_status ct_npz_parse(ct_npz **out, const uint8_t *buf, size_t size, ct_err *err) { return parse(out, buf, size, 0, err); }

ct_status ct_npz_open(ct_ctx *ctx, ct_npz **out, const char *path, ct_err *err) {
    *out = NULL;
    void *map;
    size_t size;
    ct_status rc = ct_map_file(ctx, path, &map, &size, err);
    if (rc) return rc;
    ct_map_advise(map, size, CT_ADVISE_HUGE);   // every stored member is read whole (its CRC) before any use
    rc = parse(out, map, size, 1, err);
    if (rc) {
        ct_unmap_file(map, size);
        ct_err_where(err, path);
        return rc;
    }
    return CT_OK;
}
