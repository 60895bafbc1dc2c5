// sha256.h - SHA-256 and SHA-1 (FIPS 180-4) of buffers and files, for manifests and download
// checks (Hugging Face names LFS files by their SHA-256 and other files by their git blob SHA-1).
#ifndef CT_SHA256_H
#define CT_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "core/status.h"

// The message buffer both hashes share: 64-byte blocks.
typedef struct {
    uint64_t len;       // bytes so far
    uint8_t buf[64];
    size_t n;           // bytes in buf
} ct_hash_buf;

typedef struct {
    uint32_t h[8];
    ct_hash_buf m;
} ct_sha256;

void ct_sha256_init(ct_sha256 *s);
void ct_sha256_update(ct_sha256 *s, const void *data, size_t n);
// Writes the digest as 64 lowercase hex digits and a NUL into hex (65 bytes).
void ct_sha256_hex(ct_sha256 *s, char hex[65]);
// On x86-64 CPUs with the SHA extensions, SHA-256 runs them (about 7x the portable code);
// ct_sha256_portable(1) makes it use the portable code (the tests check both give the same).
void ct_sha256_portable(int on);
// The digest of a file's contents (read through ctx: checked and recorded, see fileio.h).
ct_status ct_sha256_file(ct_ctx *ctx, const char *path, char hex[65], ct_err *err);

typedef struct {
    uint32_t h[5];
    ct_hash_buf m;
} ct_sha1;

void ct_sha1_init(ct_sha1 *s);
void ct_sha1_update(ct_sha1 *s, const void *data, size_t n);
void ct_sha1_hex(ct_sha1 *s, char hex[41]);
// Git's object id of a file as a blob: SHA-1 of "blob <size>\0" followed by the contents.
ct_status ct_git_blob_sha1_file(ct_ctx *ctx, const char *path, char hex[41], ct_err *err);

#endif
