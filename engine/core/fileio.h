// fileio.h - whole-file reads and read-only mappings with clear errors.
#ifndef CT_FILEIO_H
#define CT_FILEIO_H

#include <stddef.h>

#include "core/status.h"

// Reads the file into a malloc'ed, NUL-terminated buffer; *len excludes the NUL.
// max_len bounds the size (0: no bound).
ct_status ct_read_file(const char *path, char **buf, size_t *len, size_t max_len, ct_err *err);
// Maps the file read-only. An empty file gives *map NULL and *size 0.
ct_status ct_map_file(const char *path, void **map, size_t *size, ct_err *err);
void ct_unmap_file(void *map, size_t size);
int ct_is_dir(const char *path);
int ct_is_file(const char *path);
// Creates directory path and its missing parents (mode 0755).
ct_status ct_mkdirs(const char *path, ct_err *err);
// dir + "/" + name into out (n bytes); 0 when it does not fit.
int ct_path_join(char *out, size_t n, const char *dir, const char *name);

// Confines every file the engine writes to the directory root (NULL or "": no confinement), as
// sandboxed experiments need. ct_check_write fails with BAD_ARG naming the path and the root when
// path (resolved through its existing directories) is not under root.
ct_status ct_set_write_root(const char *root, ct_err *err);
ct_status ct_check_write(const char *path, ct_err *err);

#endif
