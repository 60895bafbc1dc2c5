// yaml.h - a reader for the YAML subset transcoder configs use, with line-numbered errors.
//
// Accepted: a top-level mapping of `key: value` lines; values are plain, 'single'- or
// "double"-quoted scalars, flow lists `[a, b]`, block lists (`key:` followed by `- item`
// lines), or one nested mapping level (`key:` followed by indented `k: v` lines); comments
// start with '#'. Anything else (anchors, multi-line scalars, tabs for indentation, duplicate
// keys) is an error naming the line.
#ifndef CT_YAML_H
#define CT_YAML_H

#include <stddef.h>

#include "core/status.h"

typedef enum { CT_YAML_SCALAR, CT_YAML_LIST, CT_YAML_MAP } ct_yaml_kind;

typedef struct ct_yaml ct_yaml;
struct ct_yaml {
    ct_yaml_kind kind;
    char *key;          // in a map: the key
    char *value;        // scalar text (quotes removed, escapes applied)
    int line;           // 1-based source line
    int n;              // list items or map entries
    int cap;            // room for items (grows by doubling)
    ct_yaml *items;     // (n,)
};

// Parses text (len bytes) into a mapping; *out is freed with ct_yaml_free.
ct_status ct_yaml_parse(ct_yaml **out, const char *text, size_t len, ct_err *err);
void ct_yaml_free(ct_yaml *y);
// Entry of a mapping by key, or NULL.
const ct_yaml *ct_yaml_get(const ct_yaml *map, const char *key);
// Scalar value of a key, or NULL when absent or not a scalar.
const char *ct_yaml_str(const ct_yaml *map, const char *key);

#endif
