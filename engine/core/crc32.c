// crc32.c - CRC-32 (see crc32.h).
//
// The folding method of Gopal et al., "Fast CRC Computation for Generic Polynomials Using
// PCLMULQDQ Instruction" (Intel, 2009), in the bit-reflected domain: four 128-bit lanes are
// each multiplied by x^(512+64) and x^512 mod P (k1, k2) and added to the next 64 bytes; at the
// end the lanes are folded into one by x^(128+64), x^128 (k3, k4), the 128 bits into 64 by x^64
// (k5), and a Barrett reduction with P and floor(x^64 / P) (mu) gives the 32-bit remainder.
// The constants are those of the paper for P = 0x104C11DB7 (bit-reflected and shifted by one, as
// the reflected domain wants). Lengths that are not a multiple of 16 end in zlib's code.
#include "core/crc32.h"

#include <zlib.h>

static int g_portable;   // tests: 1 forces zlib's code

void ct_crc32_portable(int on) { g_portable = on; }

static uint32_t crc32_zlib(uint32_t crc, const uint8_t *p, size_t n) {
    while (n) {   // zlib's lengths are 32-bit
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, k);
        p += k, n -= k;
    }
    return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

// The raw (uninverted) CRC state after n bytes at p, n >= 64 and a multiple of 16.
__attribute__((target("pclmul,sse4.1"))) static uint32_t fold(uint32_t crc, const uint8_t *p, size_t n) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124);
    const __m128i pmu = _mm_set_epi64x(0x01f7011641, 0x01db710641);   // P', mu'
    __m128i x0 = _mm_loadu_si128((const __m128i *)p), x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32)), x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)crc));
    p += 64, n -= 64;
    for (; n >= 64; p += 64, n -= 64) {   // each lane: lo * k1 + hi * k2 + the next 16 bytes
#define FOLD(x, k, next) \
    x = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), next)
        FOLD(x0, k1k2, _mm_loadu_si128((const __m128i *)p));
        FOLD(x1, k1k2, _mm_loadu_si128((const __m128i *)(p + 16)));
        FOLD(x2, k1k2, _mm_loadu_si128((const __m128i *)(p + 32)));
        FOLD(x3, k1k2, _mm_loadu_si128((const __m128i *)(p + 48)));
    }
    // four lanes into one, then the remaining 16-byte blocks
    FOLD(x0, k3k4, x1);
    FOLD(x0, k3k4, x2);
    FOLD(x0, k3k4, x3);
    for (; n >= 16; p += 16, n -= 16) FOLD(x0, k3k4, _mm_loadu_si128((const __m128i *)p));
#undef FOLD
    // 128 bits to 64: the low half times x^64 (k4) added to the high half; then the low 32 bits
    // times k5 added to the rest
    const __m128i lo32 = _mm_setr_epi32(~0, 0, ~0, 0);
    x0 = _mm_xor_si128(_mm_srli_si128(x0, 8), _mm_clmulepi64_si128(x0, k3k4, 0x10));
    x0 = _mm_xor_si128(_mm_srli_si128(x0, 4), _mm_clmulepi64_si128(_mm_and_si128(x0, lo32), k5, 0x00));
    // Barrett: q = (x mod x^32) * mu mod x^32, then x + q * P; the remainder sits in bits 32..63
    __m128i q = _mm_clmulepi64_si128(_mm_and_si128(x0, lo32), pmu, 0x10);
    q = _mm_clmulepi64_si128(_mm_and_si128(q, lo32), pmu, 0x00);
    return (uint32_t)_mm_extract_epi32(_mm_xor_si128(x0, q), 1);
}

static int has_pclmul(void) {
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    return v;
}
#endif

uint32_t ct_crc32(uint32_t crc, const void *buf, size_t n) {
    const uint8_t *p = buf;
#if defined(__x86_64__) && defined(__GNUC__)
    if (!g_portable && n >= 64 && has_pclmul()) {
        size_t k = n & ~(size_t)15;
        crc = ~fold(~crc, p, k);
        p += k, n -= k;
    }
#endif
    return crc32_zlib(crc, p, n);
}
