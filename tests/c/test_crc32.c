// test_crc32.c - CRC-32 (core/crc32.h) against its definition: the check value of "123456789"
// (0xCBF43926, the catalogue value for CRC-32/ISO-HDLC, which zip uses) and a bit-at-a-time
// implementation written here from the polynomial, over every length 0..1100 at 16 alignments,
// a 5 MB buffer, and a buffer fed in uneven pieces; with PCLMULQDQ (where the CPU has it) and
// with zlib's code.
#include <string.h>

#include "check.h"
#include "core/crc32.h"

// The definition: reflected polynomial 0xEDB88320, register inverted before and after.
static uint32_t crc_bits(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
    }
    return ~crc;
}

static void run(const char *how, const uint8_t *buf, size_t big) {
    printf("# %s\n", how);
    ok(ct_crc32(0, "123456789", 9) == 0xCBF43926u, "check value of \"123456789\": %08x", ct_crc32(0, "123456789", 9));
    ok(ct_crc32(0, "", 0) == 0 && ct_crc32(0x1234u, buf, 0) == 0x1234u, "no bytes leave the value as it was");
    int bad = 0;
    for (size_t off = 0; off < 16; off++)
        for (size_t n = 0; n <= 1100; n++) {
            uint32_t seed = (uint32_t)(n * 2654435761u);
            if (ct_crc32(seed, buf + off, n) != crc_bits(seed, buf + off, n)) {
                if (bad++ < 5) printf("# differs at offset %zu, length %zu\n", off, n);
            }
        }
    ok(bad == 0, "every length 0..1100 at 16 alignments, continuing a previous value: the definition's (%d differ)", bad);
    uint32_t whole = crc_bits(0, buf + 3, big), parts = 0;
    ok(ct_crc32(0, buf + 3, big) == whole, "%zu bytes at an odd address: %08x", big, whole);
    size_t done = 0, step = 1;
    while (done < big) {   // pieces of 1, 2, 4, ... 65536, 1, 2, ... bytes
        size_t k = step < big - done ? step : big - done;
        parts = ct_crc32(parts, buf + 3 + done, k);
        done += k;
        step = step >= 65536 ? 1 : step * 2 + 1;
    }
    ok(parts == whole, "the same bytes fed in uneven pieces: %08x", parts);
}

int main(void) {
    size_t big = 5 * 1000 * 1000 + 13;
    uint8_t *buf = malloc(big + 64);
    uint64_t s = 1;
    for (size_t i = 0; i < big + 64; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (uint8_t)(s >> 56);
    }
    run("PCLMULQDQ where the CPU has it", buf, big);
    ct_crc32_portable(1);
    run("zlib's code", buf, big);
    ct_crc32_portable(0);
    free(buf);
    return check_done();
}
