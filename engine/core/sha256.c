// sha256.c - SHA-256 and SHA-1 (see sha256.h).
#include "core/sha256.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void block256(uint32_t *h, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    // the eight working variables in registers (a rotation of names, not of memory)
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

static void blocks256(uint32_t *h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) block256(h, p + 64 * i);
}

typedef void (*blocks_fn)(uint32_t *h, const uint8_t *p, size_t n);

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

// The x86 SHA extensions (SHA-NI): four rounds per pair of sha256rnds2, the message schedule by
// sha256msg1/msg2. The state lives as ABEF and CDGH, as the instructions want it.
__attribute__((target("sha,sse4.1"))) static void blocks256_shani(uint32_t *h, const uint8_t *p, size_t n) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);   // big-endian words
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1);         // CDAB
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B);        // HGFE
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);                                                // ABEF
    s1 = _mm_blend_epi16(s1, t, 0xF0);                                                     // CDGH
    for (size_t b = 0; b < n; b++, p += 64) {
        __m128i save0 = s0, save1 = s1, w[4];
        for (int g = 0; g < 16; g++) {
            if (g < 4) {
                w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), swap);
            } else {   // W[t-16] + s0(W[t-15]) + W[t-7], then + s1(W[t-2])
                __m128i x = _mm_sha256msg1_epu32(w[g & 3], w[(g + 1) & 3]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(w[(g + 3) & 3], w[(g + 2) & 3], 4));
                w[g & 3] = _mm_sha256msg2_epu32(x, w[(g + 3) & 3]);
            }
            __m128i m = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i *)&K[4 * g]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
        }
        s0 = _mm_add_epi32(s0, save0);
        s1 = _mm_add_epi32(s1, save1);
    }
    t = _mm_shuffle_epi32(s0, 0x1B);                                   // FEBA
    s1 = _mm_shuffle_epi32(s1, 0xB1);                                  // DCHG
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, s1, 0xF0));  // DCBA
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, t, 8));     // HGFE
}

static int g_portable;   // ct_sha256_portable
void ct_sha256_portable(int on) { g_portable = on; }

// SHA-NI when the CPU has it (and SSE4.1), else the portable blocks.
static blocks_fn sha256_blocks(void) {
    static blocks_fn fn;
    if (g_portable) return blocks256;
    if (!fn) {
        unsigned a, b, c, d, sse41 = 0, sha = 0;
        if (__get_cpuid(1, &a, &b, &c, &d)) sse41 = c & bit_SSE4_1;
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) sha = b & (1u << 29);
        fn = sse41 && sha ? blocks256_shani : blocks256;
    }
    return fn;
}
#else
void ct_sha256_portable(int on) { (void)on; }
static blocks_fn sha256_blocks(void) { return blocks256; }
#endif

// Feeds bytes through 64-byte blocks (whole blocks straight from data); pad appends 0x80, zeros
// and the big-endian bit length.
static void hash_update(ct_hash_buf *m, uint32_t *h, blocks_fn blocks, const void *data, size_t n) {
    const uint8_t *p = data;
    m->len += n;
    if (m->n > 0) {
        size_t k = 64 - m->n < n ? 64 - m->n : n;
        memcpy(m->buf + m->n, p, k);
        m->n += k, p += k, n -= k;
        if (m->n < 64) return;
        blocks(h, m->buf, 1);
        m->n = 0;
    }
    if (n >= 64) blocks(h, p, n / 64);
    p += n / 64 * 64, n %= 64;
    memcpy(m->buf, p, n);
    m->n = n;
}

static void hash_final(ct_hash_buf *m, uint32_t *h, int words, blocks_fn blocks, char *hex) {
    uint64_t bits = m->len * 8;
    uint8_t pad[72] = {0x80};   // 0x80, zeros up to 56 mod 64, then the length
    size_t k = m->n < 56 ? 56 - m->n : 120 - m->n;
    for (int i = 0; i < 8; i++) pad[k + i] = (uint8_t)(bits >> (56 - 8 * i));
    hash_update(m, h, blocks, pad, k + 8);
    for (int i = 0; i < words; i++) snprintf(hex + 8 * i, 9, "%08x", h[i]);
}

void ct_sha256_init(ct_sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->m = (ct_hash_buf){0};
}

void ct_sha256_update(ct_sha256 *s, const void *data, size_t n) { hash_update(&s->m, s->h, sha256_blocks(), data, n); }
void ct_sha256_hex(ct_sha256 *s, char hex[65]) { hash_final(&s->m, s->h, 8, sha256_blocks(), hex); }

// Feeds the file's bytes to update(state, ...), after prefix (n_prefix bytes: Git's "blob <size>\0",
// written by head from the size) when head is set.
static ct_status hash_file(ct_ctx *ctx, const char *path, void *state, void (*update)(void *, const void *, size_t),
                           int (*head)(char *, size_t, int64_t), ct_err *err) {
    int fd;
    int64_t size;
    ct_status rc = ct_open_read(ctx, path, &fd, &size, err);
    if (rc) return rc;
    uint8_t buf[1 << 16];
    if (head) {
        int k = head((char *)buf, sizeof buf, size);
        update(state, buf, (size_t)k + 1);   // with the NUL
    }
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        update(state, buf, (size_t)n);
    }
    close(fd);
    return n < 0 ? ct_fail(err, CT_STATUS_IO, "cannot read %s: %s", path, strerror(errno)) : CT_OK;
}

static void sha256_update(void *s, const void *p, size_t n) { ct_sha256_update(s, p, n); }

ct_status ct_sha256_file(ct_ctx *ctx, const char *path, char hex[65], ct_err *err) {
    ct_sha256 s;
    ct_sha256_init(&s);
    ct_status rc = hash_file(ctx, path, &s, sha256_update, NULL, err);
    if (!rc) ct_sha256_hex(&s, hex);
    return rc;
}

// ---- SHA-1 -------------------------------------------------------------------

static uint32_t rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void block1(uint32_t *h, const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & c) | (~b & d), k = 0x5a827999;
        else if (i < 40) f = b ^ c ^ d, k = 0x6ed9eba1;
        else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
        else f = b ^ c ^ d, k = 0xca62c1d6;
        uint32_t t = rotl(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rotl(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

void ct_sha1_init(ct_sha1 *s) {
    static const uint32_t h0[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    memcpy(s->h, h0, sizeof h0);
    s->m = (ct_hash_buf){0};
}

static void blocks1(uint32_t *h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) block1(h, p + 64 * i);
}

void ct_sha1_update(ct_sha1 *s, const void *data, size_t n) { hash_update(&s->m, s->h, blocks1, data, n); }
void ct_sha1_hex(ct_sha1 *s, char hex[41]) { hash_final(&s->m, s->h, 5, blocks1, hex); }

static void sha1_update(void *s, const void *p, size_t n) { ct_sha1_update(s, p, n); }
static int blob_head(char *buf, size_t n, int64_t size) { return snprintf(buf, n, "blob %lld", (long long)size); }

ct_status ct_git_blob_sha1_file(ct_ctx *ctx, const char *path, char hex[41], ct_err *err) {
    ct_sha1 s;
    ct_sha1_init(&s);
    ct_status rc = hash_file(ctx, path, &s, sha1_update, blob_head, err);
    if (!rc) ct_sha1_hex(&s, hex);
    return rc;
}
