// zip.c - ZIP archives: reading (stored and deflated members, ZIP64) and writing (stored).
#include "formats/zip.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/crc32.h"
#include "core/fileio.h"

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

// Longest member name accepted (bytes).
#define ZIP_MAX_NAME 4096

// ----------------------------------------------------------------------------
// Reading

typedef struct {
    uint64_t count, cd_off, cd_size;
} eocd;

static ct_status find_eocd(const uint8_t *b, size_t n, eocd *e, const char *what, ct_err *err) {
    if (n < 22) return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: %zu bytes is too short for a zip archive", what, n);
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
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: ZIP64 end record out of range", what);
            e->count = rd64(b + z64 + 32);
            e->cd_size = rd64(b + z64 + 40);
            e->cd_off = rd64(b + z64 + 48);
        }
        if (e->cd_off > n || e->cd_size > n - e->cd_off)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: central directory [%llu, +%llu) outside the %zu-byte file", what,
                           (unsigned long long)e->cd_off, (unsigned long long)e->cd_size, n);
        if (e->count > e->cd_size / 46 + 1)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: %llu entries cannot fit a %llu-byte central directory", what,
                           (unsigned long long)e->count, (unsigned long long)e->cd_size);
        return CT_OK;
    }
    return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: no end-of-central-directory record (not a zip archive)", what);
}

static ct_status inflate_member(ct_zip_member *m, const uint8_t *data, uint64_t csize, uint64_t usize, const char *what,
                                ct_err *err) {
    if (usize > (64ULL << 30) || (csize == 0 && usize > 0) || usize / 1032 > csize + 1)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: member '%s' claims %llu bytes from %llu compressed", what, m->name,
                       (unsigned long long)usize, (unsigned long long)csize);
    m->owned = malloc(usize ? (size_t)usize : 1);
    if (!m->owned)
        return ct_fail(err, CT_STATUS_NO_MEMORY, "%s: out of memory inflating '%s' (%llu bytes)", what, m->name,
                       (unsigned long long)usize);
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK) return ct_fail(err, CT_STATUS_NO_MEMORY, "%s: inflate init failed", what);
    uint64_t in_done = 0, out_done = 0;
    int zr = Z_OK;
    while (zr == Z_OK) {   // chunks: z_stream counts are 32-bit
        size_t in_chunk = csize - in_done > (1u << 30) ? (1u << 30) : (size_t)(csize - in_done);
        size_t out_chunk = usize - out_done > (1u << 30) ? (1u << 30) : (size_t)(usize - out_done);
        s.next_in = (Bytef *)(data + in_done);
        s.avail_in = (uInt)in_chunk;
        s.next_out = m->owned + out_done;
        s.avail_out = (uInt)out_chunk;
        zr = inflate(&s, Z_NO_FLUSH);
        in_done += in_chunk - s.avail_in;
        out_done += out_chunk - s.avail_out;
        if (zr == Z_OK && in_chunk - s.avail_in == 0 && out_chunk - s.avail_out == 0) zr = Z_BUF_ERROR;
    }
    inflateEnd(&s);
    if (zr != Z_STREAM_END || out_done != usize)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: member '%s' does not inflate to its %llu declared bytes", what, m->name,
                       (unsigned long long)usize);
    return CT_OK;
}

// *claimed: the compressed bytes of the members read so far, this one added; members that share
// their data (more bytes than the file holds) are refused.
static ct_status read_member(ct_zip_member *m, const uint8_t *b, size_t n, const uint8_t *cd, size_t cd_left, size_t *used,
                             uint64_t *claimed, const char *what, int flags, ct_err *err) {
    if (cd_left < 46 || rd32(cd) != 0x02014b50u)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: corrupt central directory entry", what);
    int method = rd16(cd + 10);
    uint32_t crc = rd32(cd + 16);
    uint64_t csize = rd32(cd + 20), usize = rd32(cd + 24), loff = rd32(cd + 42);
    size_t nl = rd16(cd + 28), xl = rd16(cd + 30), cl = rd16(cd + 32);
    if (46 + nl + xl + cl > cd_left)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: central directory entry overruns the directory", what);
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
    if (nl == 0 || nl > ZIP_MAX_NAME || memchr(cd + 46, 0, nl))
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: member name of %zu bytes%s", what, nl,
                       nl && nl <= ZIP_MAX_NAME ? " holding a NUL" : "");
    if (!(m->name = malloc(nl + 1))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    memcpy(m->name, cd + 46, nl);
    m->name[nl] = 0;
    if (n < 30 || loff > n - 30 || rd32(b + loff) != 0x04034b50u)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: member '%s' local header out of range or corrupt", what, m->name);
    uint64_t start = loff + 30 + rd16(b + loff + 26) + rd16(b + loff + 28);
    if (start > n || csize > n - start)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: member '%s' data [%llu, +%llu) outside the file", what, m->name,
                       (unsigned long long)start, (unsigned long long)csize);
    *claimed += csize;
    if (*claimed > n)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: member '%s' brings the members' data to %llu bytes, more than the "
                       "%zu-byte file holds (members overlap)", what, m->name, (unsigned long long)*claimed, n);
    const uint8_t *data = b + start;
    if (method == 0) {
        if (csize != usize) return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: stored member '%s' sizes disagree", what, m->name);
        // its pages mapped in one call first (cheaper than a fault per page)
        if (flags & CT_ZIP_MAPPED) ct_map_advise(data, (size_t)usize, CT_ADVISE_POPULATE);
    } else if (method == 8 && (flags & CT_ZIP_STORED_ONLY)) {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s: member '%s' is compressed; expected stored members, as %s writes "
                       "them", what, m->name, strcmp(what, "pt") == 0 ? "torch.save" : "its writer");
    } else if (method == 8) {
        ct_status rc = inflate_member(m, data, csize, usize, what, err);
        if (rc) return rc;
        data = m->owned;
    } else {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s: member '%s' uses compression method %d; expected stored (0) or "
                       "deflate (8)", what, m->name, method);
    }
    uint32_t c = ct_crc32(0, data, (size_t)usize);
    if (c != crc)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: member '%s' fails its CRC-32 check (the directory records %08x, the "
                       "%llu bytes give %08x): the archive is damaged", what, m->name, crc, (unsigned long long)usize, c);
    m->data = data;
    m->size = (size_t)usize;
    return CT_OK;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const ct_zip_member *const *)a)->name, (*(const ct_zip_member *const *)b)->name);
}

ct_status ct_zip_parse(ct_zip *z, const uint8_t *buf, size_t size, const char *what, int flags, ct_err *err) {
    memset(z, 0, sizeof *z);
    eocd e = {0};
    ct_status rc = find_eocd(buf, size, &e, what, err);
    if (rc) return rc;
    if (!(z->members = calloc((size_t)e.count + 1, sizeof *z->members))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    size_t off = (size_t)e.cd_off, left = (size_t)e.cd_size;
    uint64_t claimed = 0;   // compressed bytes of the members so far
    for (uint64_t i = 0; i < e.count && !rc; i++) {
        size_t used = 0;
        ct_zip_member *m = &z->members[z->n++];
        rc = read_member(m, buf, size, buf + off, left, &used, &claimed, what, flags, err);
        off += used;
        left -= used;
    }
    // unique names, checked in the order of the names (n log n: a directory may list a million
    // members); the order kept for lookups
    if (!rc && !(z->by_name = malloc(sizeof *z->by_name * ((size_t)z->n + 1))))
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        for (int i = 0; i < z->n; i++) z->by_name[i] = &z->members[i];
        qsort(z->by_name, (size_t)z->n, sizeof *z->by_name, cmp_by_name);
        for (int i = 1; i < z->n && !rc; i++)
            if (strcmp(z->by_name[i - 1]->name, z->by_name[i]->name) == 0)
                rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: member '%s' appears twice", what, z->by_name[i]->name);
    }
    if (rc) ct_zip_free(z);
    return rc;
}

void ct_zip_free(ct_zip *z) {
    for (int i = 0; i < z->n; i++) free(z->members[i].name), free(z->members[i].owned);
    free(z->members);
    free(z->by_name);
    memset(z, 0, sizeof *z);
}

const ct_zip_member *ct_zip_find(const ct_zip *z, const char *name) {
    size_t lo = 0, hi = z->by_name ? (size_t)z->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(z->by_name[mid]->name, name);
        if (c == 0) return z->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

// ----------------------------------------------------------------------------
// Writing

#define ZIP_ALIGN 64
#define ZIP_BIG 0xFFFFFFFFu   // sizes and offsets from here on go in ZIP64 fields
#define ZIP_DATE 0x0021       // 1980-01-01 (a valid date; time 00:00)

static void put_bytes(ct_zip_writer *w, const void *p, size_t n) {
    if (w->failed) return;
    if (n && fwrite(p, 1, n, w->f) != n) {
        w->failed = 1;
        snprintf(w->why, sizeof w->why, "write failed after %llu bytes", (unsigned long long)w->off);
        return;
    }
    w->off += n;
}

static void put16(ct_zip_writer *w, uint32_t v) {
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put_bytes(w, b, 2);
}

static void put32(ct_zip_writer *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put_bytes(w, b, 4);
}

static void put64(ct_zip_writer *w, uint64_t v) {
    put32(w, (uint32_t)v);
    put32(w, (uint32_t)(v >> 32));
}

static void fail(ct_zip_writer *w, const char *why) {
    if (!w->failed) snprintf(w->why, sizeof w->why, "%s", why);
    w->failed = 1;
}

// General purpose flag bit 11 (names in UTF-8) for a name with bytes beyond ASCII.
static uint32_t utf8_flag(const char *name) {
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p >= 0x80) return 1u << 11;
    return 0;
}

void ct_zip_writer_init(ct_zip_writer *w, FILE *f) {
    memset(w, 0, sizeof *w);
    w->f = f;
}

void ct_zip_begin(ct_zip_writer *w, const char *name, uint64_t size) {
    if (w->failed) return;
    size_t nl = strlen(name);
    if (nl == 0 || nl > ZIP_MAX_NAME) return fail(w, "member name empty or too long");
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 16;
        ct_zip_record *r = realloc(w->rec, sizeof *r * (size_t)nc);
        if (!r) return fail(w, "out of memory");
        w->rec = r, w->cap = nc;
    }
    ct_zip_record *r = &w->rec[w->n];
    if (!(r->name = strdup(name))) return fail(w, "out of memory");
    w->n++;
    r->off = w->off, r->size = size, r->crc = 0;
    int big = size >= ZIP_BIG;
    // extra fields: ZIP64 sizes when big, then padding so the data starts on a 64-byte boundary
    size_t z64 = big ? 20 : 0, base = (size_t)(w->off % ZIP_ALIGN) + 30 + nl + z64 + 4;
    size_t pad = (ZIP_ALIGN - base % ZIP_ALIGN) % ZIP_ALIGN;
    put32(w, 0x04034b50u);
    put16(w, big || r->off >= ZIP_BIG ? 45 : 20);   // version needed: as the central header says
    put16(w, utf8_flag(name)), put16(w, 0);         // flags, method: stored
    put16(w, 0), put16(w, ZIP_DATE);            // time, date
    put32(w, 0);                                // CRC-32: written by ct_zip_end
    put32(w, big ? ZIP_BIG : (uint32_t)size), put32(w, big ? ZIP_BIG : (uint32_t)size);
    put16(w, (uint32_t)nl), put16(w, (uint32_t)(z64 + 4 + pad));
    put_bytes(w, name, nl);
    if (big) put16(w, 1), put16(w, 16), put64(w, size), put64(w, size);
    put16(w, 0x4246), put16(w, (uint32_t)pad);   // "FB", as PyTorch pads
    static const uint8_t zeros[ZIP_ALIGN];
    put_bytes(w, zeros, pad);
    w->put = 0, w->crc = 0;
}

void ct_zip_put(ct_zip_writer *w, const void *p, size_t n) {
    if (w->failed) return;
    w->crc = ct_crc32(w->crc, p, n);
    w->put += n;
    put_bytes(w, p, n);
}

void ct_zip_end(ct_zip_writer *w) {
    if (w->failed) return;
    ct_zip_record *r = &w->rec[w->n - 1];
    if (w->put != r->size) return fail(w, "a member's bytes differ from its declared size");
    r->crc = w->crc;
    // the CRC into the local header, then back to the end
    uint8_t b[4] = {(uint8_t)r->crc, (uint8_t)(r->crc >> 8), (uint8_t)(r->crc >> 16), (uint8_t)(r->crc >> 24)};
    if (fseeko(w->f, (off_t)(r->off + 14), SEEK_SET) != 0 || fwrite(b, 1, 4, w->f) != 4 || fseeko(w->f, 0, SEEK_END) != 0)
        fail(w, "could not seek back to a member's header");
}

ct_status ct_zip_finish(ct_zip_writer *w, ct_err *err) {
    uint64_t cd_off = w->off;
    for (int i = 0; i < w->n && !w->failed; i++) {
        const ct_zip_record *r = &w->rec[i];
        size_t nl = strlen(r->name);
        int big_size = r->size >= ZIP_BIG, big_off = r->off >= ZIP_BIG;
        size_t z64 = (big_size ? 16 : 0) + (big_off ? 8 : 0);
        put32(w, 0x02014b50u);
        put16(w, z64 ? 45 : 20), put16(w, z64 ? 45 : 20);   // version made by, needed
        put16(w, utf8_flag(r->name)), put16(w, 0), put16(w, 0), put16(w, ZIP_DATE);
        put32(w, r->crc);
        put32(w, big_size ? ZIP_BIG : (uint32_t)r->size), put32(w, big_size ? ZIP_BIG : (uint32_t)r->size);
        put16(w, (uint32_t)nl), put16(w, z64 ? (uint32_t)(4 + z64) : 0), put16(w, 0);   // name, extra, comment
        put16(w, 0), put16(w, 0), put32(w, 0);                                           // disk, attributes
        put32(w, big_off ? ZIP_BIG : (uint32_t)r->off);
        put_bytes(w, r->name, nl);
        if (z64) {
            put16(w, 1), put16(w, (uint32_t)z64);
            if (big_size) put64(w, r->size), put64(w, r->size);
            if (big_off) put64(w, r->off);
        }
    }
    uint64_t cd_size = w->off - cd_off;
    if (w->n >= 0xFFFF || cd_off >= ZIP_BIG || cd_size >= ZIP_BIG) {
        uint64_t z64 = w->off;
        put32(w, 0x06064b50u), put64(w, 44), put16(w, 45), put16(w, 45), put32(w, 0), put32(w, 0);
        put64(w, (uint64_t)w->n), put64(w, (uint64_t)w->n), put64(w, cd_size), put64(w, cd_off);
        put32(w, 0x07064b50u), put32(w, 0), put64(w, z64), put32(w, 1);
    }
    put32(w, 0x06054b50u), put16(w, 0), put16(w, 0);
    put16(w, w->n >= 0xFFFF ? 0xFFFF : (uint32_t)w->n), put16(w, w->n >= 0xFFFF ? 0xFFFF : (uint32_t)w->n);
    put32(w, cd_size >= ZIP_BIG ? ZIP_BIG : (uint32_t)cd_size), put32(w, cd_off >= ZIP_BIG ? ZIP_BIG : (uint32_t)cd_off);
    put16(w, 0);
    int failed = w->failed;
    char why[sizeof w->why];
    memcpy(why, w->why, sizeof why);
    ct_zip_writer_free(w);
    return failed ? ct_fail(err, CT_STATUS_IO, "zip: %s", why) : CT_OK;
}

void ct_zip_writer_free(ct_zip_writer *w) {
    for (int i = 0; i < w->n; i++) free(w->rec[i].name);
    free(w->rec);
    w->rec = NULL, w->n = w->cap = 0;
}
