// crc32.h - CRC-32 as zip, gzip and zlib define it (reflected polynomial 0xEDB88320, initial
// and final inversion): what an npz archive records for each member.
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

#endif
