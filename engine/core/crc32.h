// crc32.h - CRC-32 as zip, gzip and zlib define it (reflected polynomial 0xEDB88320, initial
// and final inversion): what an npz archive records for each member. And FNV-1a, a quick 64-bit
// checksum of what two processes must hold alike (never a defence against anyone).
#ifndef CT_CRC32_H
#define CT_CRC32_H

#include <stddef.h>
#include <stdint.h>

// The CRC-32 of n bytes at p continuing crc (0 to start), as zlib's crc32(crc, p, n). On x86-64
// CPUs with PCLMULQDQ it folds 64 bytes a step with carry-less multiplies (13 GB/s of CPU time
// here against 5 GB/s for zlib's table code); ct_crc32_portable(1) makes it use zlib (the tests
// check both).
uint32_t ct_crc32(uint32_t crc, const void *p, size_t n);
void ct_crc32_portable(int on);

// FNV-1a of n bytes at p continuing h (CT_FNV1A_START to start).
#define CT_FNV1A_START 1469598103934665603ull
static inline uint64_t ct_fnv1a(uint64_t h, const void *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ ((const uint8_t *)p)[i]) * 1099511628211ull;
    return h;
}

#endif
