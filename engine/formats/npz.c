// npz.c - .npy parsing and .npz (ZIP) reading.
#include "formats/npz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/crc32.h"
#include "core/fileio.h"

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

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
// zip

void ct_npz_free(ct_npz *z) {
    if (!z) return;
    for (int i = 0; i < z->n; i++) {
        free(z->arrays[i].name);
        free(z->arrays[i].owned);
    }
    free(z->arrays);
    if (z->mapped) ct_unmap_file(z->map, z->size);
    free(z);
}

const ct_npy_array *ct_npz_find(const ct_npz *z, const char *name) {
    for (int i = 0; i < z->n; i++)
        if (strcmp(z->arrays[i].name, name) == 0) return &z->arrays[i];
    return NULL;
}

typedef struct {
    uint64_t count, cd_off, cd_size;
} eocd;

static ct_status find_eocd(const uint8_t *b, size_t n, eocd *e, ct_err *err) {
    if (n < 22) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: %zu bytes is too short for a zip archive", n);
    size_t lo = n > 65557 ? n - 65557 : 0;
    for (size_t i = n - 22 + 1; i-- > lo;) {
        if (rd32(b + i) != 0x06054b50u) continue;
        e->count = rd16(b + i + 10);
        e->cd_size = rd32(b + i + 12);
        e->cd_off = rd32(b + i + 16);
        if ((e->count == 0xFFFF || e->cd_size == 0xFFFFFFFFu || e->cd_off == 0xFFFFFFFFu) && i >= 20 &&
            rd32(b + i - 20) == 0x07064b50u) {   // ZIP64 locator -> ZIP64 end record
            uint64_t z64 = rd64(b + i - 20 + 8);
            if (n < 56 || z64 > n - 56 || rd32(b + z64) != 0x06064b50u)
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: ZIP64 end record out of range");
            e->count = rd64(b + z64 + 32);
            e->cd_size = rd64(b + z64 + 40);
            e->cd_off = rd64(b + z64 + 48);
        }
        if (e->cd_off > n || e->cd_size > n - e->cd_off)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: central directory [%llu, +%llu) outside the %zu-byte file",
                           (unsigned long long)e->cd_off, (unsigned long long)e->cd_size, n);
        if (e->count > e->cd_size / 46 + 1)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: %llu entries cannot fit a %llu-byte central directory",
                           (unsigned long long)e->count, (unsigned long long)e->cd_size);
        return CT_OK;
    }
    return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: no end-of-central-directory record (not a zip archive)");
}

// *claimed: the compressed bytes of the members read so far, this one added; members that share
// their data (more bytes than the file holds) are refused, so the work stays linear in the file.
static ct_status read_member(ct_npz *z, ct_npy_array *a, const uint8_t *cd, size_t cd_left, size_t *used,
                             uint64_t *claimed, ct_err *err) {
    const uint8_t *b = z->map;
    size_t n = z->size;
    if (cd_left < 46 || rd32(cd) != 0x02014b50u) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: corrupt central directory entry");
    int method = rd16(cd + 10);
    uint32_t crc = rd32(cd + 16);
    uint64_t csize = rd32(cd + 20), usize = rd32(cd + 24), loff = rd32(cd + 42);
    size_t nl = rd16(cd + 28), xl = rd16(cd + 30), cl = rd16(cd + 32);
    if (46 + nl + xl + cl > cd_left) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: central directory entry overruns the directory");
    *used = 46 + nl + xl + cl;
    // ZIP64 extra field: 64-bit values for the fields set to 0xFFFFFFFF, in order
    for (size_t x = 0; x + 4 <= xl;) {
        const uint8_t *f = cd + 46 + nl + x;
        size_t id = rd16(f), len = rd16(f + 2), k = 4;
        if (x + 4 + len > xl) break;
        if (id == 1) {
            if (usize == 0xFFFFFFFFu && k + 8 <= len + 4) usize = rd64(f + k), k += 8;
            if (csize == 0xFFFFFFFFu && k + 8 <= len + 4) csize = rd64(f + k), k += 8;
            if (loff == 0xFFFFFFFFu && k + 8 <= len + 4) loff = rd64(f + k), k += 8;
        }
        x += 4 + len;
    }
    char name[256];
    if (nl == 0 || nl >= sizeof name) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: member name of %zu bytes", nl);
    memcpy(name, cd + 46, nl);
    name[nl] = 0;
    if (nl > 4 && strcmp(name + nl - 4, ".npy") == 0) name[nl - 4] = 0;
    if (loff > n - 30 || n < 30 || rd32(b + loff) != 0x04034b50u)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: member '%s' local header out of range or corrupt", name);
    uint64_t start = loff + 30 + rd16(b + loff + 26) + rd16(b + loff + 28);
    if (start > n || csize > n - start)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: member '%s' data [%llu, +%llu) outside the file", name,
                       (unsigned long long)start, (unsigned long long)csize);
    *claimed += csize;
    if (*claimed > n)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: member '%s' brings the members' data to %llu bytes, more than the "
                       "%zu-byte file holds (members overlap)", name, (unsigned long long)*claimed, n);
    const uint8_t *data = b + start;
    if (method == 0) {
        if (csize != usize) return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: stored member '%s' sizes disagree", name);
    } else if (method == 8) {
        if (usize > (64ULL << 30) || (csize == 0 && usize > 0) || usize / 1032 > csize + 1)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: member '%s' claims %llu bytes from %llu compressed", name,
                           (unsigned long long)usize, (unsigned long long)csize);
        a->owned = malloc(usize ? (size_t)usize : 1);
        if (!a->owned) return ct_fail(err, CT_STATUS_NO_MEMORY, "npz: out of memory inflating '%s' (%llu bytes)", name,
                                      (unsigned long long)usize);
        z_stream s;
        memset(&s, 0, sizeof s);
        if (inflateInit2(&s, -15) != Z_OK) return ct_fail(err, CT_STATUS_NO_MEMORY, "npz: inflate init failed");
        uint64_t in_done = 0, out_done = 0;
        int zr = Z_OK;
        while (zr == Z_OK) {   // chunks: z_stream counts are 32-bit
            size_t in_chunk = csize - in_done > (1u << 30) ? (1u << 30) : (size_t)(csize - in_done);
            size_t out_chunk = usize - out_done > (1u << 30) ? (1u << 30) : (size_t)(usize - out_done);
            s.next_in = (Bytef *)(data + in_done);
            s.avail_in = (uInt)in_chunk;
            s.next_out = a->owned + out_done;
            s.avail_out = (uInt)out_chunk;
            zr = inflate(&s, Z_NO_FLUSH);
            in_done += in_chunk - s.avail_in;
            out_done += out_chunk - s.avail_out;
            if (zr == Z_OK && in_chunk - s.avail_in == 0 && out_chunk - s.avail_out == 0) zr = Z_BUF_ERROR;
        }
        inflateEnd(&s);
        if (zr != Z_STREAM_END || out_done != usize)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: member '%s' does not inflate to its %llu declared bytes", name,
                           (unsigned long long)usize);
        data = a->owned;
    } else {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "npz: member '%s' uses compression method %d; expected stored (0) or deflate (8)",
                       name, method);
    }
    // every byte is checked, as numpy's reader does: a stored member straight from the mapping,
    // its pages mapped in one call first (cheaper than a fault per page)
    if (z->mapped && method == 0) ct_map_advise(data, (size_t)usize, CT_ADVISE_POPULATE);
    uint32_t c = ct_crc32(0, data, (size_t)usize);
    if (c != crc)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "npz: member '%s' fails its CRC-32 check (the directory records %08x, the "
                       "%llu bytes give %08x): the archive is damaged", name, crc, (unsigned long long)usize, c);
    uint8_t *owned = a->owned;   // ct_npy_parse clears *a
    ct_status rc = ct_npy_parse(a, data, (size_t)usize, err);
    a->owned = owned;
    if (rc) {
        ct_err_where(err, name);
        return rc;
    }
    a->name = strdup(name);
    return a->name ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const ct_npy_array *const *)a)->name, (*(const ct_npy_array *const *)b)->name);
}

static ct_status parse_into(ct_npz *z, ct_err *err) {
    eocd e = {0};
    ct_status rc = find_eocd(z->map, z->size, &e, err);
    if (rc) return rc;
    z->arrays = calloc((size_t)e.count + 1, sizeof *z->arrays);
    if (!z->arrays) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    size_t off = (size_t)e.cd_off, left = (size_t)e.cd_size;
    uint64_t claimed = 0;   // compressed bytes of the members so far
    for (uint64_t i = 0; i < e.count; i++) {
        size_t used = 0;
        ct_npy_array *a = &z->arrays[z->n];
        rc = read_member(z, a, z->map + off, left, &used, &claimed, err);
        if (rc) {
            free(a->owned);
            a->owned = NULL;
            return rc;
        }
        z->n++;
        off += used;
        left -= used;
    }
    // unique names, checked in the order of the names (n log n: a directory may list a million members)
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
