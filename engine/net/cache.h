// cache.h - a small on-disk key/value cache (Neuronpedia responses, labels).
//
// Each entry is one file, dir/<h[0:2]>/<h>.entry with h = sha256(key), holding a header line
// "ctrace-cache 1 <sha256 of payload> <payload bytes>", the key on the next line, then the
// payload. Entries are written under a unique temporary name and renamed, so a reader sees a
// whole entry or none; reads check the header, the key, the length and the hash, and delete an
// entry that fails (reported as a miss). Reading touches the entry's time; ct_cache_trim evicts
// the least recently used entries beyond max_bytes, one process at a time (flock), others skip.
#ifndef CT_CACHE_H
#define CT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
    char dir[1024];
    int64_t max_bytes;
} ct_cache;

// The user's cache directory for ctrace: $CTRACE_CACHE, else $XDG_CACHE_HOME/ctrace, else
// ~/.cache/ctrace.
void ct_cache_default_dir(char *buf, size_t n);
// Opens (creates) a cache in dir; max_bytes <= 0 means 1 GiB.
ct_status ct_cache_open(ct_cache *c, const char *dir, int64_t max_bytes, ct_err *err);
// CT_OK with *data (malloc'ed, NUL-terminated) and *n, or NOT_FOUND.
ct_status ct_cache_get(const ct_cache *c, const char *key, char **data, size_t *n, ct_err *err);
ct_status ct_cache_put(const ct_cache *c, const char *key, const void *data, size_t n, ct_err *err);
// Evicts least recently used entries until the total is at most 90% of max_bytes (when over
// it); *total gets the bytes left (may be NULL).
ct_status ct_cache_trim(const ct_cache *c, int64_t *total, ct_err *err);

#endif
