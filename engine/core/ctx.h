// ctx.h - what the engine may do on behalf of one caller (a Lua state, a test, a benchmark):
// when to stop, which files it may read and write, which files it read, and how addresses such
// as hf://org/repo/file become local paths.
//
// Engine functions that read or write files for a caller (models, tokenizers, transcoders,
// graphs, results) take a ct_ctx * as their first argument and open files only through
// core/fileio.h, which consults it; long loops that can stop (attribution, training, network
// requests, the file server) check its cancellation. NULL means no limits, no record and never
// cancelled (tests, benchmarks, fuzzers). The network layer's own caches (net/) manage their
// files themselves.
//
//   ct_ctx c;
//   ct_ctx_init(&c);
//   const char *roots[] = {"/data/models", "."};
//   ct_ctx_set_read_roots(&c, roots, 2, &err);        // reads only below these directories
//   ct_ctx_set_write_root(&c, "results", &err);       // writes only below this one
//   ct_ctx_lock(&c);                                  // for good: the roots can no longer change
//   ct_model_load(&c, &m, "/data/models/x", &err);    // checked, and listed in c.files
//   ...
//   ct_ctx_free(&c);
//
// A context belongs to one thread. cancel may be set from a signal handler.
#ifndef CT_CTX_H
#define CT_CTX_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

// A file read through the context: its path (directories resolved, the file's own name as given,
// so a link in a cache's snapshot keeps its name) and its size when it was opened.
typedef struct {
    char *path;
    int64_t size;
} ct_ctx_file;

typedef struct ct_ctx {
    volatile sig_atomic_t cancel;   // non-zero: long loops stop at their next check (CANCELLED)
    double deadline;                // CLOCK_MONOTONIC seconds after which they stop too; 0: none
    char **read_roots;              // (n_read_roots,) resolved directories; none: any file may be read
    int n_read_roots;
    char *write_root;               // resolved directory; NULL: files may be written anywhere
    int locked;                     // the roots can no longer change (ct_ctx_lock)
    int write_errors;               // writes that failed on the way to disk (a full disk), caught or not
    const char *write_hint;         // said after a refused write (what to write where); NULL: nothing
    ct_ctx_file *files;             // (n_files,) every file read, in the order first opened
    int n_files, cap_files;
    // Turns an address that is not a local path (hf://...) into one; NULL: such addresses fail.
    ct_status (*resolve)(void *data, const char *uri, char *out, size_t n, ct_err *err);
    void *resolve_data;
} ct_ctx;

void ct_ctx_init(ct_ctx *c);
// Frees the roots and the list of files (the context itself belongs to the caller).
void ct_ctx_free(ct_ctx *c);

// The directories files may be read from (n of them, resolved now; each must exist); n = 0 lifts
// the restriction. On failure the roots stay as they were.
ct_status ct_ctx_set_read_roots(ct_ctx *c, const char *const *dirs, int n, ct_err *err);
// Confines writes to dir (resolved now; it must exist); NULL or "" lifts the confinement. On
// failure the write root stays as it was.
ct_status ct_ctx_set_write_root(ct_ctx *c, const char *dir, ct_err *err);
// Makes the roots final: every later change of them fails with BAD_ARG.
void ct_ctx_lock(ct_ctx *c);
// Forgets the files read so far (a new run starts its own record).
void ct_ctx_clear_files(ct_ctx *c);

// Whether c was cancelled or its deadline has passed (NULL: never).
int ct_ctx_cancelled(const ct_ctx *c);
// CANCELLED with a message naming what stopped ("attribution after 512 of 4096 rows") when
// ct_ctx_cancelled(c), else OK.
ct_status ct_ctx_check_cancel(const ct_ctx *c, ct_err *err, const char *what, ...)
    __attribute__((format(printf, 3, 4)));
// Sets the deadline `seconds` from now (0: none).
void ct_ctx_set_timeout(ct_ctx *c, double seconds);
// Monotonic wall-clock seconds.
double ct_now(void);

// Whether the resolved path real lies under a read root (or c has none).
int ct_ctx_readable(const ct_ctx *c, const char *real);
// BAD_ARG: "reading <path>: this run may read only under <the read roots>".
ct_status ct_ctx_refuse_read(const ct_ctx *c, const char *path, ct_err *err);
// Whether path may be read (deny by default): BAD_ARG naming the path and the allowed directories
// when it resolves outside every read root or cannot be resolved at all (a path longer than
// PATH_MAX, a loop of links, an unsearchable directory); NOT_FOUND when it does not exist but its
// directory lies under a root (a missing file elsewhere is refused, telling nothing about it).
ct_status ct_ctx_check_read(const ct_ctx *c, const char *path, ct_err *err);
// BAD_ARG: "reading <path>: refused, the path cannot be resolved (<errno e>); ...".
ct_status ct_ctx_unresolved_read(const ct_ctx *c, const char *path, int e, ct_err *err);
// Whether path (which need not exist yet; its deepest existing directory is resolved) may be
// written: BAD_ARG naming the path and the write root when it is not under it.
ct_status ct_ctx_check_write(const ct_ctx *c, const char *path, ct_err *err);
// Records a file read under the name path (listed as its resolved directory plus its own name).
// Each file is listed once.
ct_status ct_ctx_note_file(ct_ctx *c, const char *path, int64_t size, ct_err *err);
// The local path of an address: a local path unchanged, anything with a scheme (hf://) through
// the resolver. out: n bytes.
ct_status ct_ctx_resolve(const ct_ctx *c, const char *addr, char *out, size_t n, ct_err *err);

#endif
