// txn.h - a case-study folder's results as a transaction. A run writes into a private staging
// directory beside results/; only a run that ended cleanly is committed, by exchanging staging
// and results/ in one rename, so results/ always holds one whole run (or none) and a failed,
// killed or timed-out run leaves it as it was. A lock on the folder keeps a second run out.
//
//   int lock;
//   ct_run_lock(&lock, folder, 1, &err);            // BUSY when another run holds it
//   char staging[4096];
//   ct_run_staging(staging, sizeof staging, folder, &err);   // <folder>/.ctrace-staging-XXXXXX
//   ... the experiment writes into staging ...
//   ct_run_outputs(ctx, staging, &files, &n, &err); // only regular files; synced; hashed
//   ct_run_commit(staging, results, &err);          // results/ <- staging, atomically
//   ct_run_unlock(lock);
#ifndef CT_RUN_TXN_H
#define CT_RUN_TXN_H
#include <stddef.h>
#include <stdint.h>
#include "core/ctx.h"
#include "core/status.h"

// Takes the folder's lock (flock on the directory: it goes with the process, however it ends).
// exclusive: a run; shared: a reader (ctrace check --no-run). BUSY at once when taken.
ct_status ct_run_lock(int *fd, const char *folder, int exclusive, ct_err *err);
void ct_run_unlock(int fd);
// A new, empty staging directory in folder (mode 0700). Staging directories that earlier runs
// left (a killed parent) are removed first: call it holding the exclusive lock.
ct_status ct_run_staging(char *out, size_t n, const char *folder, ct_err *err);
// The same removing nothing: the staging of another rank of an MPI job, made after rank 0 (which
// holds the lock) made its own.
ct_status ct_run_staging_beside(char *out, size_t n, const char *folder, ct_err *err);

typedef struct {
    char *path;       // relative to the directory
    int64_t size;
    char sha256[65];
} ct_run_file;

// Every file under dir (sorted by path), each synced to disk and hashed, and every directory
// synced. BAD_FORMAT when dir holds anything but regular files and directories (a link, a FIFO,
// a file with a second hard link) or nests them deeper than 64; IO when a sync fails (a full
// disk); TIMEOUT or CANCELLED when c's deadline passes or c is cancelled on the way (c may be
// NULL).
ct_status ct_run_outputs(const ct_ctx *c, const char *dir, ct_run_file **files, int *n, ct_err *err);
void ct_run_files_free(ct_run_file *files, int n);
// Makes staging the new results (a directory; a link or file there is replaced, never followed)
// in one atomic rename, syncs the folder, then removes the old results.
ct_status ct_run_commit(const char *staging, const char *results, ct_err *err);
// Removes a directory tree without following links (nothing outside it is touched).
ct_status ct_remove_tree(const char *path, ct_err *err);
// Reads dir/rel (a relative path: no "..", no component a link, the file a regular one of at most
// max bytes) into a malloc'ed NUL-terminated buffer: files of a folder that may come from a
// stranger (expected/, results/), read by an unconfined process.
ct_status ct_run_read(const char *dir, const char *rel, size_t max, char **buf, size_t *n, ct_err *err);

#endif
