// yaml.c - the YAML subset reader (see yaml.h).
#include "formats/yaml.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t n;
    int indent;   // leading spaces
    int line;
} yline;

static void node_free(ct_yaml *y) {
    for (int i = 0; i < y->n; i++) node_free(&y->items[i]);
    free(y->items);
    free(y->key);
    free(y->value);
}

void ct_yaml_free(ct_yaml *y) {
    if (!y) return;
    node_free(y);
    free(y);
}

const ct_yaml *ct_yaml_get(const ct_yaml *map, const char *key) {
    if (!map || map->kind != CT_YAML_MAP) return NULL;
    for (int i = 0; i < map->n; i++)
        if (strcmp(map->items[i].key, key) == 0) return &map->items[i];
    return NULL;
}

const char *ct_yaml_str(const ct_yaml *map, const char *key) {
    const ct_yaml *v = ct_yaml_get(map, key);
    return v && v->kind == CT_YAML_SCALAR ? v->value : NULL;
}

static ct_yaml *push(ct_yaml *parent) {
    if (parent->n == parent->cap) {   // doubling: a list of a million items is not a million copies
        if (parent->cap > INT_MAX / 2) return NULL;
        int cap = parent->cap ? 2 * parent->cap : 8;
        ct_yaml *it = realloc(parent->items, sizeof *it * (size_t)cap);
        if (!it) return NULL;
        parent->items = it;
        parent->cap = cap;
    }
    ct_yaml *it = &parent->items[parent->n++];
    memset(it, 0, sizeof *it);
    return it;
}

static int cmp_keys(const void *a, const void *b) {
    const ct_yaml *x = *(const ct_yaml *const *)a, *y = *(const ct_yaml *const *)b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x > y) - (x < y);   // equal keys in file order
}

// The first key of map that repeats an earlier one: BAD_FORMAT naming both lines. Sorted, so a map
// of many keys is checked in n log n.
static ct_status check_unique_keys(const ct_yaml *map, ct_err *err) {
    if (map->n < 2) return CT_OK;
    const ct_yaml **by_key = malloc(sizeof *by_key * (size_t)map->n);
    if (!by_key) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; i < map->n; i++) by_key[i] = &map->items[i];
    qsort(by_key, (size_t)map->n, sizeof *by_key, cmp_keys);
    const ct_yaml *dup = NULL, *first = NULL, *run = by_key[0];
    for (int i = 1; i < map->n; i++) {
        if (strcmp(by_key[i]->key, run->key) != 0) {
            run = by_key[i];
            continue;
        }
        if (!dup || by_key[i] < dup) dup = by_key[i], first = run;
    }
    ct_status rc = dup ? ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: duplicate key '%.80s' (first on line %d)",
                                 dup->line, dup->key, first->line)
                       : CT_OK;
    free(by_key);
    return rc;
}

// Reads one scalar from s (n bytes): its text into v when v is not NULL (without it, only its
// length: the caller allocates exactly that much), *k its length, *used the bytes consumed. Stops
// at an unquoted ',' or ']' when in_flow.
static ct_status scan_scalar(const char *s, size_t n, int in_flow, int line, char *v, size_t *k_out, size_t *used,
                             ct_err *err) {
    size_t i = 0, k = 0;
    while (i < n && s[i] == ' ') i++;
    if (i < n && (s[i] == '"' || s[i] == '\'')) {
        char q = s[i++];
        for (;;) {
            if (i >= n)
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: unterminated %s-quoted string", line,
                               q == '"' ? "double" : "single");
            if (s[i] == q) {
                if (q == '\'' && i + 1 < n && s[i + 1] == '\'') {   // '' inside single quotes
                    if (v) v[k] = '\'';
                    k++;
                    i += 2;
                    continue;
                }
                i++;
                break;
            }
            if (q == '"' && s[i] == '\\' && i + 1 < n) {
                char e = s[i + 1];
                if (v) v[k] = e == 'n' ? '\n' : e == 't' ? '\t' : e;
                k++;
                i += 2;
                continue;
            }
            if (v) v[k] = s[i];
            k++;
            i++;
        }
        while (i < n && s[i] == ' ') i++;
        if (i < n && s[i] != '#' && !(in_flow && (s[i] == ',' || s[i] == ']')))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: unexpected text after a quoted string", line);
    } else {
        size_t start = i;
        while (i < n && !(in_flow && (s[i] == ',' || s[i] == ']')) && !(s[i] == '#' && i > 0 && s[i - 1] == ' ')) i++;
        size_t end = i;
        while (end > start && s[end - 1] == ' ') end--;
        if (v) memcpy(v, s + start, end - start);
        k = end - start;
    }
    *k_out = k;
    *used = i;
    return CT_OK;
}

// Parses one scalar from s (n bytes) into a malloc'ed string of its own length (a flow list of a
// million items holds a million short strings, not a million copies of the rest of its line).
static ct_status scalar(const char *s, size_t n, int in_flow, int line, char **out, size_t *used, ct_err *err) {
    size_t k;
    ct_status rc = scan_scalar(s, n, in_flow, line, NULL, &k, used, err);
    if (rc) return rc;
    char *v = malloc(k + 1);
    if (!v) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    scan_scalar(s, n, in_flow, line, v, &k, used, err);
    v[k] = 0;
    *out = v;
    return CT_OK;
}

// Fills node (a scalar or a flow list) from the text after "key:" or "- ".
static ct_status value(ct_yaml *node, const char *s, size_t n, int line, ct_err *err) {
    size_t i = 0, used;
    while (i < n && s[i] == ' ') i++;
    node->line = line;
    if (i < n && s[i] == '[') {
        node->kind = CT_YAML_LIST;
        i++;
        for (;;) {
            while (i < n && s[i] == ' ') i++;
            if (i < n && s[i] == ']') break;
            ct_yaml *it = push(node);
            if (!it) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
            it->line = line;
            ct_status rc = scalar(s + i, n - i, 1, line, &it->value, &used, err);
            if (rc) return rc;
            i += used;
            if (i < n && s[i] == ',') {
                i++;
                continue;
            }
            if (i < n && s[i] == ']') break;
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: unterminated flow list (expected ',' or ']')", line);
        }
        return CT_OK;
    }
    if (i < n && (s[i] == '&' || s[i] == '*' || s[i] == '|' || s[i] == '>' || s[i] == '{'))
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "config.yaml line %d: '%c' (anchors, block scalars, flow maps) is not "
                       "supported", line, s[i]);
    node->kind = CT_YAML_SCALAR;
    return scalar(s + i, n - i, 0, line, &node->value, &used, err);
}

// Finds the ':' that ends a key (outside quotes), or -1.
static long key_colon(const char *s, size_t n) {
    char q = 0;
    for (size_t i = 0; i < n; i++) {
        if (q) {
            if (s[i] == q) q = 0;
        } else if (s[i] == '"' || s[i] == '\'') {
            q = s[i];
        } else if (s[i] == ':' && (i + 1 == n || s[i + 1] == ' ')) {
            return (long)i;
        } else if (s[i] == '#' && i > 0 && s[i - 1] == ' ') {
            return -1;
        }
    }
    return -1;
}

// Parses the lines [*pos, n) with indentation > parent_indent into map (a mapping).
static ct_status parse_map(ct_yaml *map, const yline *lines, int nl, int *pos, int indent, ct_err *err) {
    map->kind = CT_YAML_MAP;
    while (*pos < nl) {
        const yline *L = &lines[*pos];
        if (L->indent < indent) return check_unique_keys(map, err);
        if (L->indent > indent)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: unexpected indentation", L->line);
        if (L->s[0] == '-')
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: a list item where a 'key: value' was expected",
                           L->line);
        long c = key_colon(L->s, L->n);
        if (c <= 0) return ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: expected 'key: value'", L->line);
        ct_yaml *e = push(map);
        if (!e) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        size_t used;
        ct_status rc = scalar(L->s, (size_t)c, 0, L->line, &e->key, &used, err);
        if (rc) return rc;
        e->line = L->line;
        const char *rest = L->s + c + 1;
        size_t rn = L->n - (size_t)c - 1;
        size_t j = 0;
        while (j < rn && rest[j] == ' ') j++;
        (*pos)++;
        if (j < rn && rest[j] != '#') {
            if ((rc = value(e, rest, rn, L->line, err))) return rc;
            continue;
        }
        // block value: a list or a nested map on the following lines, or an empty scalar
        if (*pos < nl && lines[*pos].s[0] == '-' && lines[*pos].indent >= indent) {
            e->kind = CT_YAML_LIST;
            int li = lines[*pos].indent;
            while (*pos < nl && lines[*pos].indent == li && lines[*pos].s[0] == '-') {
                const yline *I = &lines[*pos];
                if (I->n < 2 || I->s[1] != ' ')
                    return ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: expected '- item'", I->line);
                ct_yaml *it = push(e);
                if (!it) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
                if ((rc = value(it, I->s + 2, I->n - 2, I->line, err))) return rc;
                if (it->kind != CT_YAML_SCALAR)
                    return ct_fail(err, CT_STATUS_UNSUPPORTED, "config.yaml line %d: nested lists are not supported", I->line);
                (*pos)++;
            }
        } else if (*pos < nl && lines[*pos].indent > indent) {
            if (indent > 0)
                return ct_fail(err, CT_STATUS_UNSUPPORTED, "config.yaml line %d: mappings nested more than one level",
                               lines[*pos].line);
            if ((rc = parse_map(e, lines, nl, pos, lines[*pos].indent, err))) return rc;
        } else {
            e->kind = CT_YAML_SCALAR;
            e->value = calloc(1, 1);
            if (!e->value) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        }
    }
    return check_unique_keys(map, err);
}

ct_status ct_yaml_parse(ct_yaml **out, const char *text, size_t len, ct_err *err) {
    *out = NULL;
    int cap = 64, nl = 0, line = 0;
    yline *lines = malloc(sizeof *lines * (size_t)cap);
    if (!lines) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_status rc = CT_OK;
    for (size_t i = 0; i < len && !rc;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line++;
        size_t end = e;
        if (end > i && text[end - 1] == '\r') end--;
        size_t k = i;
        while (k < end && text[k] == ' ') k++;
        if (k < end && text[k] == '\t') rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: tab in indentation", line);
        if (!memchr(text + i, 0, end - i) && k < end && text[k] != '#' && !(end - k == 3 && memcmp(text + k, "---", 3) == 0)) {
            if (nl == cap) {
                yline *l2 = realloc(lines, sizeof *lines * (size_t)(cap *= 2));
                if (!l2) {
                    rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
                    break;
                }
                lines = l2;
            }
            while (end > k && text[end - 1] == ' ') end--;
            lines[nl++] = (yline){text + k, end - k, (int)(k - i), line};
        } else if (memchr(text + i, 0, end - i)) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: NUL byte", line);
        }
        i = e + 1;
    }
    ct_yaml *root = calloc(1, sizeof *root);
    if (!rc && !root) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    int pos = 0;
    if (!rc) rc = parse_map(root, lines, nl, &pos, nl ? lines[0].indent : 0, err);
    if (!rc && pos < nl) rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: unexpected indentation", lines[pos].line);
    free(lines);
    if (rc) {
        ct_yaml_free(root);
        return rc;
    }
    *out = root;
    return CT_OK;
}
