// test_sha256.c - SHA-256 against the FIPS 180-4 / NIST example digests (one block, two blocks,
// a million 'a' fed in uneven pieces), Python's digest of 100,003 bytes in pieces of every
// alignment, and sha256sum's digest of a file written here; with the SHA extensions (where the
// CPU has them) and with the portable code.
#include <string.h>

#include "check.h"
#include "core/sha256.h"

static void digest(const void *p, size_t n, char hex[65]) {
    ct_sha256 s;
    ct_sha256_init(&s);
    ct_sha256_update(&s, p, n);
    ct_sha256_hex(&s, hex);
}

static int vectors(const char *how) {
    char hex[65];
    printf("# %s\n", how);
    digest("", 0, hex);
    ok(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0, "empty: %s", hex);
    digest("abc", 3, hex);
    ok(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0, "abc: %s", hex);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    digest(two, strlen(two), hex);
    ok(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0, "two blocks: %s", hex);
    ct_sha256 s;
    ct_sha256_init(&s);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof a ? left : sizeof a;
        ct_sha256_update(&s, a, k);
        left -= k;
    }
    ct_sha256_hex(&s, hex);
    ok(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0, "a million a: %s", hex);
    // every byte value, 1,563 blocks and a tail, fed in pieces of every alignment (digest from
    // Python's hashlib); on a CPU with the SHA extensions this runs them
    static unsigned char data[100003];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)((i * 7 + (i >> 8)) % 256);
    for (size_t piece = 1; piece <= 200; piece += 37) {
        ct_sha256_init(&s);
        for (size_t at = 0; at < sizeof data; at += piece)
            ct_sha256_update(&s, data + at, at + piece <= sizeof data ? piece : sizeof data - at);
        ct_sha256_hex(&s, hex);
        ok(strcmp(hex, "a247996142a29ed10b00f34e01db2ba80934866a97e92271000e5a4e94b521cf") == 0, "100,003 bytes in pieces of %zu: %s",
           piece, hex);
    }
    digest(data, sizeof data, hex);
    ok(strcmp(hex, "a247996142a29ed10b00f34e01db2ba80934866a97e92271000e5a4e94b521cf") == 0, "100,003 bytes at once: %s", hex);
    FILE *f = fopen("/tmp/ct_sha256_test", "wb");
    fputs("abc", f);
    fclose(f);
    ct_err err = {0};
    ok(ct_sha256_file(NULL, "/tmp/ct_sha256_test", hex, &err) == CT_OK &&
           strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0, "file: %s", hex);
    remove("/tmp/ct_sha256_test");
    ok(ct_sha256_file(NULL, "/nonexistent/x", hex, &err) == CT_STATUS_NOT_FOUND && strstr(err.msg, "/nonexistent/x"), "missing file: %s",
       err.msg);
    return 0;
}

int main(void) {
    vectors("the code this CPU runs (the SHA extensions where it has them)");
    ct_sha256_portable(1);
    vectors("the portable code");
    return check_done();
}
