// yaml.h - YAML config files (transcoder config.yaml) parsed by libyaml into a small tree, with
// errors naming the file and the line.
//
// The whole of YAML as libyaml reads it: block and flow style, every scalar style (plain,
// quoted, literal and folded block scalars), comments, document markers, anchors and aliases
// (an alias is a copy of the node its anchor names), merge keys (`<<: *base`, as PyYAML's
// safe_load: explicit keys win, then earlier merged maps). Refused, each with a message naming
// the line: a second document in the stream, tags other than YAML's own (`!!str`, `!!int`,
// ...), lists or mappings as mapping keys, repeated keys, an alias to an anchor not yet
// complete (a recursive structure) or never defined, aliases expanding to more than 2^20 nodes,
// nesting deeper than 64 levels, NUL characters in a string. An empty file (or a document of
// nothing but null) reads as an empty mapping; any other top-level node that is not a mapping
// is refused.
//
// Scalars keep their text as written (quotes removed, escapes applied, block scalars folded);
// `plain` says whether YAML resolves its type (null, boolean, integer, float, string) from the
// text, as it does for unquoted scalars (and, as PyYAML, for any scalar tagged with the
// non-specific `!`). ct_yaml_is_null, ct_yaml_int and ct_yaml_type apply the YAML 1.1 rules
// PyYAML's safe_load (circuit-tracer's loader) uses; not kept: sexagesimal numbers (1:30 reads
// as a string) and `!!float` on an integer's text (reads as an integer).
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
    int line;           // 1-based source line where the node starts
    int plain;          // scalar: 1 when YAML resolves its type from the text (unquoted, no !!str)
    int n;              // list items or map entries
    int cap;            // room for items (grows by doubling)
    ct_yaml *items;     // (n,)
};

// Parses text (len bytes) into a mapping; *out is freed with ct_yaml_free. name is the file's
// name in error messages ("config.yaml line 4, column 3: ...").
ct_status ct_yaml_parse(ct_yaml **out, const char *text, size_t len, const char *name, ct_err *err);
void ct_yaml_free(ct_yaml *y);
// Entry of a mapping by key, or NULL.
const ct_yaml *ct_yaml_get(const ct_yaml *map, const char *key);
// Scalar value of a key, or NULL when absent or not a scalar.
const char *ct_yaml_str(const ct_yaml *map, const char *key);
// 1 when y is a null scalar (unquoted ~, null, Null, NULL or nothing).
int ct_yaml_is_null(const ct_yaml *y);
// 1 when y is an integer scalar (unquoted decimal, 0x hex, 0b binary, 0-prefixed octal, '_'
// separators) that fits a long long, its value in *out; else 0.
int ct_yaml_int(const ct_yaml *y, long long *out);
// What y is, for messages: "a mapping", "a list", "null", "a boolean", "an integer", "a number"
// or "a string".
const char *ct_yaml_type(const ct_yaml *y);

#endif
