// fileio.h - the files the engine reads and writes for a caller (models, tokenizers, transcoders,
// graphs, results) go through these functions, which consult the caller's context (core/ctx.h;
// NULL: no limits): reads are checked against its read roots on the file actually opened and
// listed in its record, writes are checked against its write root and replace their file
// atomically. (The network layer's own caches in net/ manage their files themselves.)
#ifndef CT_FILEIO_H
#define CT_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/ctx.h"
#include "core/status.h"

// Opens path for reading: a regular file (a FIFO, device or directory is refused without
// blocking), inside c's read roots, recorded in c's list of files read. *fd: a descriptor the
// caller closes; *size: the file's size.
ct_status ct_open_read(ct_ctx *c, const char *path, int *fd, int64_t *size, ct_err *err);
// Reads the file into a malloc'ed, NUL-terminated buffer; *len excludes the NUL.
// max_len bounds the size (0: no bound).
ct_status ct_read_file(ct_ctx *c, const char *path, char **buf, size_t *len, size_t max_len, ct_err *err);
// Maps the file read-only. An empty file gives *map NULL and *size 0.
ct_status ct_map_file(ct_ctx *c, const char *path, void **map, size_t *size, ct_err *err);
void ct_unmap_file(void *map, size_t size);
// Hints about the pages behind [p, p + n) of a read-only file mapping (widened to whole pages;
// a hint the kernel lacks or refuses is ignored: they change speed, never results).
//   POPULATE  map them now, reading what the page cache lacks: one call instead of a page
//             fault per page (on this kind of machine faults cost ~8x more per byte)
//   WILLNEED  start reading them into the page cache in the background
//   RANDOM    a fault reads only the pages it needs (no read-around, no 2 MiB pages, even
//             inside a range hinted HUGE): for tensors read a few rows at a time
//   HUGE      read whole, again and again (weights of every pass, encoders): given before the
//             pages are first read, the page cache holds them in 2 MiB pieces mapped whole where
//             the filesystem keeps such pieces (ext4 from Linux 6.16, XFS; ct_map_file places
//             files on 2 MiB boundaries), so a pass over them is not slowed
//             by a mapping of 4 KiB pages that the machine's memory activity has made cold
//             (on this kind of machine up to 8x: 0.8 s instead of 0.1 s for 2.5 GB)
//   DONTNEED  no longer needed: this process drops them (a later read faults them in from the file)
typedef enum { CT_ADVISE_POPULATE, CT_ADVISE_WILLNEED, CT_ADVISE_RANDOM, CT_ADVISE_HUGE, CT_ADVISE_DONTNEED } ct_advice;
void ct_map_advise(const void *p, size_t n, ct_advice advice);
// A thread that maps ranges of file mappings in order (POPULATE: reading what the page cache
// lacks), at most `ahead` ranges beyond the one the caller works on, so the disk reads the next
// ranges while the caller computes on the current one. The bound keeps what is read early from
// pushing out, in a memory-limited cgroup, what the caller still needs.
//   ct_prefetch *p = ct_prefetch_start(ptr, len, n, 2);   // ranges copied; NULL: no thread
//   for (i = 0; i < n; i++) { ct_prefetch_at(p, i); ...use range i... }
//   ct_prefetch_stop(p);                                  // waits for the piece being read
// Every call accepts NULL (nothing done). Speed only: results never depend on it.
typedef struct ct_prefetch ct_prefetch;
ct_prefetch *ct_prefetch_start(const void *const *ptr, const size_t *len, int n, int ahead);
void ct_prefetch_at(ct_prefetch *p, int i);
void ct_prefetch_stop(ct_prefetch *p);
int ct_is_dir(const char *path);
int ct_is_file(const char *path);
// Creates directory path and its missing parents (mode 0755), checked against c's write root.
ct_status ct_mkdirs(ct_ctx *c, const char *path, ct_err *err);
// dir + "/" + name into out (n bytes); 0 when it does not fit.
int ct_path_join(char *out, size_t n, const char *dir, const char *name);

// A file written under a temporary name beside its path and renamed over it by ct_wfile_commit,
// so readers see the old file or the whole new one, never a part of it. A failed write (a full
// disk), a failed commit or ct_wfile_abort removes the temporary file and leaves path as it was.
//   ct_wfile w;
//   if ((rc = ct_wfile_open(ctx, &w, path, err))) return rc;
//   fprintf(w.f, ...); fwrite(..., w.f);          // errors are caught by the commit
//   return ct_wfile_commit(&w, err);
typedef struct {
    FILE *f;
    ct_ctx *ctx;   // counts a failure in ctx->write_errors
    char path[4096];
    char tmp[4200];
} ct_wfile;

ct_status ct_wfile_open(ct_ctx *c, ct_wfile *w, const char *path, ct_err *err);
// Flushes, syncs to disk, closes and renames into place; any write error on the way fails it.
ct_status ct_wfile_commit(ct_wfile *w, ct_err *err);
void ct_wfile_abort(ct_wfile *w);
// The whole of data (n bytes) as the new content of path.
ct_status ct_write_file(ct_ctx *c, const char *path, const void *data, size_t n, ct_err *err);

#endif
