// test_sha256.c - SHA-256 against the FIPS 180-4 / NIST example digests (one block, two blocks,
// a million 'a' fed in uneven pieces) and sha256sum's digest of a file written here.
#include <string.h>

#include "check.h"
#include "core/sha256.h"

static void digest(const void *p, size_t n, char hex[65]) {
    ct_sha256 s;
    ct_sha256_init(&s);
    ct_sha256_update(&s, p, n);
    ct_sha256_hex(&s, hex);
}

int main(void) {
    char hex[65];
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
    FILE *f = fopen("/tmp/ct_sha256_test", "wb");
    fputs("abc", f);
    fclose(f);
    ct_err err = {0};
    ok(ct_sha256_file(NULL, "/tmp/ct_sha256_test", hex, &err) == CT_OK &&
           strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0, "file: %s", hex);
    remove("/tmp/ct_sha256_test");
    ok(ct_sha256_file(NULL, "/nonexistent/x", hex, &err) == CT_STATUS_NOT_FOUND && strstr(err.msg, "/nonexistent/x"), "missing file: %s",
       err.msg);
    return check_done();
}
