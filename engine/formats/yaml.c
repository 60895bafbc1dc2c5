// yaml.c - YAML through libyaml's event parser into ct_yaml trees (see yaml.h).
//
// The tree is built from the event stream with a stack of open lists and mappings: a new node
// goes into the innermost open one, which is the only one that grows, so pointers to the open
// nodes stay valid. Anchored nodes are copied into a table when they are complete; an alias is
// a copy from that table, counted against a budget so a few lines of aliases cannot expand to
// billions of nodes.
#include "formats/yaml.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

enum { MAX_DEPTH = 64 };                 // nested lists and mappings
#define MAX_COPIED ((size_t)1 << 20)     // nodes anchors and aliases may copy in one file

// ----------------------------------------------------------------------------
// Nodes

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

static char *dup_n(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

// ----------------------------------------------------------------------------
// Types of plain scalars (YAML 1.1, as PyYAML's resolver)

int ct_yaml_is_null(const ct_yaml *y) {
    if (!y || y->kind != CT_YAML_SCALAR || !y->plain) return 0;
    const char *v = y->value;
    return !v[0] || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

static int is_bool(const char *v) {
    static const char *const words[] = {"yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False",
                                        "FALSE", "on", "On", "ON", "off", "Off", "OFF"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcmp(v, words[i]) == 0) return 1;
    return 0;
}

// Digits of base `base` with '_' separators (at least one digit) into *out; 0 on overflow or a
// character that is not one.
static int parse_digits(const char *s, int base, int neg, long long *out) {
    unsigned long long v = 0, lim = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
    int digits = 0;
    for (; *s; s++) {
        if (*s == '_') continue;
        int d = *s >= '0' && *s <= '9'   ? *s - '0'
                : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
                : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10
                                         : 99;
        if (d >= base || v > (lim - (unsigned long long)d) / (unsigned long long)base) return 0;
        v = v * (unsigned long long)base + (unsigned long long)d;
        digits++;
    }
    if (!digits) return 0;
    *out = neg ? (long long)(0 - v) : (long long)v;   // two's complement: -2^63 fits
    return 1;
}

int ct_yaml_int(const ct_yaml *y, long long *out) {
    if (!y || y->kind != CT_YAML_SCALAR || !y->plain) return 0;
    const char *s = y->value;
    int neg = *s == '-';
    if (*s == '-' || *s == '+') s++;
    if (s[0] == '0' && s[1] == 'x') return parse_digits(s + 2, 16, neg, out);
    if (s[0] == '0' && s[1] == 'b') return parse_digits(s + 2, 2, neg, out);
    if (s[0] == '0' && s[1]) return parse_digits(s + 1, 8, neg, out);   // YAML 1.1: 010 is eight
    if (s[0] == '_') return 0;
    return parse_digits(s, 10, neg, out);
}

static int digit(char c) { return c >= '0' && c <= '9'; }

// PyYAML's float: [-+]? digits ('_' after the first) '.' digits-or-'_' [eE][-+]digits?, or
// '.' digit ... without a sign, or [-+]?.inf, .nan (a point is required: 1e3 is a string)
static int is_float(const char *v) {
    static const char *const words[] = {".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", "+.Inf", "+.INF",
                                        ".nan", ".NaN", ".NAN"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcmp(v, words[i]) == 0) return 1;
    const char *s = v;
    int before = 0;
    if (*s == '-' || *s == '+') s++;
    for (; digit(*s) || (*s == '_' && before); s++) before += digit(*s);
    if (*s++ != '.') return 0;
    if (!before && (s - v != 1 || !digit(*s))) return 0;   // .5, never -.5
    while (digit(*s) || *s == '_') s++;
    if (!*s) return 1;
    if (*s != 'e' && *s != 'E') return 0;
    s++;
    if (*s != '-' && *s != '+') return 0;
    if (!digit(*++s)) return 0;
    while (digit(*s)) s++;
    return !*s;
}

const char *ct_yaml_type(const ct_yaml *y) {
    if (!y) return "nothing";
    if (y->kind == CT_YAML_MAP) return "a mapping";
    if (y->kind == CT_YAML_LIST) return "a list";
    long long i;
    if (!y->plain) return "a string";
    if (ct_yaml_is_null(y)) return "null";
    if (is_bool(y->value)) return "a boolean";
    if (ct_yaml_int(y, &i)) return "an integer";
    if (is_float(y->value)) return "a number";
    return "a string";
}

// ----------------------------------------------------------------------------
// The builder

typedef struct {
    char *name;
    ct_yaml node;   // a copy of the anchored node as it was when complete
} anchor;

typedef struct {
    ct_yaml *node;   // the open list or mapping
    char *key;       // mapping: a key read, waiting for its value
    int has_key;
    int merge;       // the key waiting is the merge key <<
    char *anchor;    // to register when the node closes, or NULL
} frame;

typedef struct {
    const char *name;   // the file, in messages
    ct_err *err;
    ct_yaml doc;        // a list that receives the document's root
    frame st[MAX_DEPTH + 1];
    int depth;          // frames in st (st[0] holds doc)
    anchor *anchors;
    int n_anchors, cap_anchors;
    int *slots;         // hash of anchor names -> index into anchors (-1 empty); power-of-two size
    size_t n_slots;
    size_t copied;      // nodes copied for anchors and aliases so far
} builder;

static ct_status bfail(builder *b, ct_status st, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ct_fail(b->err, st, "%s line %d: %s", b->name, line, msg);
}

static int line_of(yaml_mark_t m) { return m.line >= (size_t)INT_MAX ? INT_MAX : (int)m.line + 1; }

// Copies src into dst (dst's key kept); *budget counts nodes, levels is how many lists and
// mappings may nest in the copy. 0 OK, 1 out of memory, 2 over budget, 3 too deep.
static int copy_node(ct_yaml *dst, const ct_yaml *src, size_t *budget, int levels) {
    if (++*budget > MAX_COPIED) return 2;
    if (src->kind != CT_YAML_SCALAR && levels-- < 1) return 3;
    dst->kind = src->kind;
    dst->line = src->line;
    dst->plain = src->plain;
    if (src->value && !(dst->value = dup_n(src->value, strlen(src->value)))) return 1;
    for (int i = 0; i < src->n; i++) {
        ct_yaml *it = push(dst);
        if (!it) return 1;
        if (src->items[i].key && !(it->key = dup_n(src->items[i].key, strlen(src->items[i].key)))) return 1;
        int r = copy_node(it, &src->items[i], budget, levels);
        if (r) return r;
    }
    return 0;
}

static ct_status copy_fail(builder *b, int r, int line) {
    if (r == 1) return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    if (r == 3) return bfail(b, CT_STATUS_BAD_FORMAT, line, "lists and mappings nested more than %d deep", MAX_DEPTH);
    return bfail(b, CT_STATUS_BAD_FORMAT, line, "anchors and aliases copy more than %zu nodes", MAX_COPIED);
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ULL;   // FNV-1a
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

// The slot of name in the hash: its anchor's or the empty one where it would go.
static size_t find_slot(const builder *b, const char *name) {
    size_t i = (size_t)hash_name(name) & (b->n_slots - 1);
    while (b->slots[i] >= 0 && strcmp(b->anchors[b->slots[i]].name, name) != 0) i = (i + 1) & (b->n_slots - 1);
    return i;
}

static const anchor *find_anchor(const builder *b, const char *name) {
    if (!b->n_slots) return NULL;
    int k = b->slots[find_slot(b, name)];
    return k >= 0 ? &b->anchors[k] : NULL;
}

// Registers a copy of node under name (taking name); a later anchor of the same name replaces
// an earlier one, as YAML says.
static ct_status add_anchor(builder *b, char *name, const ct_yaml *node) {
    if (2 * ((size_t)b->n_anchors + 1) > b->n_slots) {   // grow the hash, then rehash
        size_t n = b->n_slots ? 2 * b->n_slots : 64;
        int *s = malloc(sizeof *s * n);
        if (!s) {
            free(name);
            return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
        }
        free(b->slots);
        b->slots = s;
        b->n_slots = n;
        for (size_t i = 0; i < n; i++) s[i] = -1;
        for (int k = 0; k < b->n_anchors; k++) s[find_slot(b, b->anchors[k].name)] = k;
    }
    size_t slot = find_slot(b, name);
    anchor *a;
    if (b->slots[slot] >= 0) {   // redefined: the new node replaces the old copy
        a = &b->anchors[b->slots[slot]];
        free(name);
        node_free(&a->node);
        memset(&a->node, 0, sizeof a->node);
    } else {
        if (b->n_anchors == b->cap_anchors) {
            int cap = b->cap_anchors ? 2 * b->cap_anchors : 16;
            anchor *grown = b->cap_anchors < INT_MAX / 2 ? realloc(b->anchors, sizeof *grown * (size_t)cap) : NULL;
            if (!grown) {
                free(name);
                return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
            }
            b->anchors = grown;
            b->cap_anchors = cap;
        }
        a = &b->anchors[b->n_anchors];
        memset(a, 0, sizeof *a);
        a->name = name;
        b->slots[slot] = b->n_anchors++;
    }
    int r = copy_node(&a->node, node, &b->copied, MAX_DEPTH);   // node itself nests at most this deep
    return r ? copy_fail(b, r, node->line) : CT_OK;
}

// Where the next node of the innermost open list or mapping goes (a mapping's key already
// read); NULL when out of memory.
static ct_yaml *place(builder *b) {
    frame *f = &b->st[b->depth - 1];
    ct_yaml *slot = push(f->node);
    if (!slot) return NULL;
    if (f->node->kind == CT_YAML_MAP) {
        slot->key = f->key;   // NULL for the merge key
        f->key = NULL;
        f->has_key = 0;
        if (f->merge) f->merge = 0;
    }
    return slot;
}

static int awaiting_key(const builder *b) {
    const frame *f = &b->st[b->depth - 1];
    return f->node->kind == CT_YAML_MAP && !f->has_key;
}

static int core_tag(const char *tag, const char *name) {
    static const char prefix[] = "tag:yaml.org,2002:";
    return strncmp(tag, prefix, sizeof prefix - 1) == 0 && strcmp(tag + sizeof prefix - 1, name) == 0;
}

static ct_status scalar_event(builder *b, const yaml_event_t *ev) {
    int line = line_of(ev->start_mark);
    const char *v = (const char *)ev->data.scalar.value, *tag = (const char *)ev->data.scalar.tag;
    size_t n = ev->data.scalar.length;
    if (memchr(v, 0, n)) return bfail(b, CT_STATUS_BAD_FORMAT, line, "a NUL character in a string");
    int plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE, merge_tag = 0;
    const char *want = NULL;   // the type an explicit tag asks for
    if (tag) {
        if (strcmp(tag, "!") == 0) plain = 1;   // as PyYAML: resolved from the text, quoted or not
        else if (core_tag(tag, "str")) plain = 0;
        else if (core_tag(tag, "int")) plain = 1, want = "an integer";
        else if (core_tag(tag, "float")) plain = 1, want = "a number";
        else if (core_tag(tag, "bool")) plain = 1, want = "a boolean";
        else if (core_tag(tag, "null")) plain = 1, want = "null";
        else if (core_tag(tag, "merge")) plain = 1, merge_tag = 1;
        else
            return bfail(b, CT_STATUS_UNSUPPORTED, line, "tag '%.80s'; expected none or one of YAML's own scalar tags "
                         "(!!str, !!int, !!float, !!bool, !!null)", tag);
    }
    ct_yaml tmp = {.kind = CT_YAML_SCALAR, .value = (char *)v, .line = line, .plain = plain};
    if (want) {
        const char *is = ct_yaml_type(&tmp);
        if (strcmp(is, want) != 0 && !(strcmp(want, "a number") == 0 && strcmp(is, "an integer") == 0))
            return bfail(b, CT_STATUS_BAD_FORMAT, line, "'%.80s' is tagged %s but is %s", v, tag, is);
    }
    char *text = dup_n(v, n);
    if (!text) return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    const char *anchor_text = (const char *)ev->data.scalar.anchor;
    char *anchor_name = NULL;
    if (anchor_text && !(anchor_name = dup_n(anchor_text, strlen(anchor_text)))) {
        free(text);
        return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    ct_yaml *node;
    if (awaiting_key(b)) {
        frame *f = &b->st[b->depth - 1];
        f->merge = (plain && strcmp(text, "<<") == 0 && (!tag || merge_tag)) || merge_tag;
        f->has_key = 1;
        if (f->merge) {
            free(text);
            f->key = NULL;
        } else {
            f->key = text;
        }
        if (!anchor_name) return CT_OK;
        tmp.value = f->merge ? (char *)"<<" : f->key;
        return add_anchor(b, anchor_name, &tmp);
    }
    if (!(node = place(b))) {
        free(text);
        free(anchor_name);
        return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    node->kind = CT_YAML_SCALAR;
    node->value = text;
    node->line = line;
    node->plain = plain;
    return anchor_name ? add_anchor(b, anchor_name, node) : CT_OK;
}

static ct_status alias_event(builder *b, const yaml_event_t *ev) {
    int line = line_of(ev->start_mark);
    const char *name = (const char *)ev->data.alias.anchor;
    for (int d = 1; d < b->depth; d++)
        if (b->st[d].anchor && strcmp(b->st[d].anchor, name) == 0)
            return bfail(b, CT_STATUS_BAD_FORMAT, line, "alias *%.80s inside the node it names (a recursive structure)", name);
    const anchor *a = find_anchor(b, name);
    if (!a) return bfail(b, CT_STATUS_BAD_FORMAT, line, "alias *%.80s names no anchor defined before it", name);
    if (awaiting_key(b)) {
        if (a->node.kind != CT_YAML_SCALAR)
            return bfail(b, CT_STATUS_BAD_FORMAT, line, "alias *%.80s is %s, used as a mapping key; keys must be strings", name,
                         ct_yaml_type(&a->node));
        frame *f = &b->st[b->depth - 1];
        if (!(f->key = dup_n(a->node.value, strlen(a->node.value)))) return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
        f->has_key = 1;
        return CT_OK;
    }
    ct_yaml *node = place(b);
    if (!node) return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    int r = copy_node(node, &a->node, &b->copied, MAX_DEPTH - (b->depth - 1));   // below the open ones
    node->line = line;
    return r ? copy_fail(b, r, line) : CT_OK;
}

static ct_status open_event(builder *b, const yaml_event_t *ev, ct_yaml_kind kind) {
    int line = line_of(ev->start_mark);
    const char *tag = (const char *)(kind == CT_YAML_MAP ? ev->data.mapping_start.tag : ev->data.sequence_start.tag);
    const char *anchor_name =
        (const char *)(kind == CT_YAML_MAP ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor);
    const char *what = kind == CT_YAML_MAP ? "a mapping" : "a list";
    if (tag && strcmp(tag, "!") != 0 && !core_tag(tag, kind == CT_YAML_MAP ? "map" : "seq"))
        return bfail(b, CT_STATUS_UNSUPPORTED, line, "tag '%.80s' on %s; expected none or %s", tag, what,
                     kind == CT_YAML_MAP ? "!!map" : "!!seq");
    if (awaiting_key(b)) return bfail(b, CT_STATUS_BAD_FORMAT, line, "%s as a mapping key; keys must be strings", what);
    if (b->depth > MAX_DEPTH)
        return bfail(b, CT_STATUS_BAD_FORMAT, line, "lists and mappings nested more than %d deep", MAX_DEPTH);
    char *name = NULL;
    if (anchor_name && !(name = dup_n(anchor_name, strlen(anchor_name))))
        return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_yaml *node = place(b);
    if (!node) {
        free(name);
        return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    node->kind = kind;
    node->line = line;
    b->st[b->depth++] = (frame){.node = node, .anchor = name};
    return CT_OK;
}

typedef struct {
    const char *key;
    int rank;   // explicit keys first in file order, then merged ones by precedence
} cand;

static int cmp_cand(const void *x, const void *y) {
    const cand *a = x, *b = y;
    int c = strcmp(a->key, b->key);
    return c ? c : (a->rank > b->rank) - (a->rank < b->rank);
}

// The first key of map that repeats an earlier one: BAD_FORMAT naming both lines. Sorted, so a map
// of many keys is checked in n log n.
static ct_status check_unique_keys(builder *b, const ct_yaml *map) {
    if (map->n < 2) return CT_OK;
    cand *c = malloc(sizeof *c * (size_t)map->n);
    if (!c) return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; i < map->n; i++) c[i] = (cand){map->items[i].key, i};
    qsort(c, (size_t)map->n, sizeof *c, cmp_cand);
    int dup = -1, first = -1;
    for (int i = 1, run = 0; i < map->n; i++) {
        if (strcmp(c[i].key, c[run].key) != 0) {
            run = i;
            continue;
        }
        if (dup < 0 || c[i].rank < dup) dup = c[i].rank, first = c[run].rank;
    }
    free(c);
    if (dup < 0) return CT_OK;
    return bfail(b, CT_STATUS_BAD_FORMAT, map->items[dup].line, "duplicate key '%.80s' (first on line %d)", map->items[dup].key,
                 map->items[first].line);
}

// Resolves the merge key of a closed mapping: the entries of the merged mapping (or of each
// mapping of a merged list, the earlier first) whose keys the mapping does not have are moved
// into it, as PyYAML's safe_load does.
static ct_status merge_keys(builder *b, ct_yaml *map) {
    int k = -1;
    for (int i = 0; i < map->n; i++) {
        if (map->items[i].key) continue;
        if (k >= 0)
            return bfail(b, CT_STATUS_BAD_FORMAT, map->items[i].line, "a second merge key << (first on line %d)",
                         map->items[k].line);
        k = i;
    }
    if (k < 0) return check_unique_keys(b, map);
    ct_yaml merge = map->items[k];   // out of the mapping, which may grow below
    memmove(&map->items[k], &map->items[k + 1], sizeof *map->items * (size_t)(map->n - k - 1));
    map->n--;
    ct_status rc = check_unique_keys(b, map);
    ct_yaml *srcs = &merge;
    int n_src = 1;
    if (!rc && merge.kind == CT_YAML_LIST) srcs = merge.items, n_src = merge.n;
    for (int s = 0; !rc && s < n_src; s++)
        if (srcs[s].kind != CT_YAML_MAP)
            rc = bfail(b, CT_STATUS_BAD_FORMAT, srcs[s].line, "the merge key << expects a mapping or a list of mappings, found %s",
                       ct_yaml_type(&srcs[s]));
    size_t total = (size_t)map->n;
    for (int s = 0; !rc && s < n_src; s++) total += (size_t)srcs[s].n;
    cand *c = NULL;
    unsigned char *win = NULL;
    if (!rc && total > (size_t)INT_MAX / 2) rc = bfail(b, CT_STATUS_BAD_FORMAT, merge.line, "merged mappings too large");
    if (!rc && (!(c = malloc(sizeof *c * (total + 1))) || !(win = calloc(total + 1, 1))))
        rc = ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        int r = 0;
        for (int i = 0; i < map->n; i++, r++) c[r] = (cand){map->items[i].key, r};
        for (int s = 0; s < n_src; s++)
            for (int i = 0; i < srcs[s].n; i++, r++) c[r] = (cand){srcs[s].items[i].key, r};
        qsort(c, total, sizeof *c, cmp_cand);
        for (size_t i = 0; i < total; i++)   // the first of each key wins; explicit keys are never moved
            if ((i == 0 || strcmp(c[i].key, c[i - 1].key) != 0) && c[i].rank >= map->n) win[c[i].rank] = 1;
        int n_explicit = map->n;
        r = n_explicit;
        for (int s = 0; !rc && s < n_src; s++)
            for (int i = 0; !rc && i < srcs[s].n; i++, r++) {
                if (!win[r]) continue;
                ct_yaml *slot = push(map);
                if (!slot) {
                    rc = ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory");
                    break;
                }
                *slot = srcs[s].items[i];   // moved
                memset(&srcs[s].items[i], 0, sizeof srcs[s].items[i]);
            }
    }
    free(c);
    free(win);
    node_free(&merge);
    return rc;
}

static ct_status close_event(builder *b) {
    frame *f = &b->st[b->depth - 1];
    ct_status rc = CT_OK;
    if (f->node->kind == CT_YAML_MAP) rc = merge_keys(b, f->node);
    char *name = f->anchor;
    f->anchor = NULL;
    free(f->key);
    f->key = NULL;
    b->depth--;
    if (!rc && name) return add_anchor(b, name, f->node);
    free(name);
    return rc;
}

static int col_of(yaml_mark_t m) { return m.column >= 100000 ? 100000 : (int)m.column + 1; }

// libyaml's own error: where and what.
static ct_status parser_error(builder *b, const yaml_parser_t *p, const char *text, size_t len) {
    if (p->error == YAML_MEMORY_ERROR) return ct_fail(b->err, CT_STATUS_NO_MEMORY, "out of memory while parsing %s", b->name);
    const char *problem = p->problem ? p->problem : "not YAML";
    if (p->error == YAML_READER_ERROR) {   // encoding errors carry a byte offset, not a mark
        size_t end = p->problem_offset < len ? p->problem_offset : len;
        int line = 1;
        for (size_t i = 0; i < end && line < INT_MAX; i++) line += text[i] == '\n';
        if (p->problem_value >= 0)
            return bfail(b, CT_STATUS_BAD_FORMAT, line, "%s (#%X at byte %zu)", problem, (unsigned)p->problem_value,
                         p->problem_offset);
        return bfail(b, CT_STATUS_BAD_FORMAT, line, "%s (at byte %zu)", problem, p->problem_offset);
    }
    // a scanner's context is the token it was reading (a key, a quoted string): where to look
    if (p->context && p->error == YAML_SCANNER_ERROR)
        return ct_fail(b->err, CT_STATUS_BAD_FORMAT, "%s line %d, column %d: %s: %s (at line %d, column %d)", b->name,
                       line_of(p->context_mark), col_of(p->context_mark), p->context, problem, line_of(p->problem_mark),
                       col_of(p->problem_mark));
    if (p->context)   // a parser's context is the enclosing structure
        return ct_fail(b->err, CT_STATUS_BAD_FORMAT, "%s line %d, column %d: %s (%s on line %d, column %d)", b->name,
                       line_of(p->problem_mark), col_of(p->problem_mark), problem, p->context, line_of(p->context_mark),
                       col_of(p->context_mark));
    return ct_fail(b->err, CT_STATUS_BAD_FORMAT, "%s line %d, column %d: %s", b->name, line_of(p->problem_mark),
                   col_of(p->problem_mark), problem);
}

static void builder_free(builder *b) {
    for (int d = 1; d < b->depth; d++) {
        free(b->st[d].key);
        free(b->st[d].anchor);
    }
    node_free(&b->doc);
    for (int k = 0; k < b->n_anchors; k++) {
        free(b->anchors[k].name);
        node_free(&b->anchors[k].node);
    }
    free(b->anchors);
    free(b->slots);
}

ct_status ct_yaml_parse(ct_yaml **out, const char *text, size_t len, const char *name, ct_err *err) {
    *out = NULL;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    builder b = {.name = name, .err = err, .depth = 1};
    b.doc.kind = CT_YAML_LIST;
    b.st[0].node = &b.doc;
    ct_status rc = CT_OK;
    int docs = 0, done = 0;
    while (!rc && !done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = parser_error(&b, &p, text, len);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = 1; break;
        case YAML_DOCUMENT_START_EVENT:
            if (docs++)
                rc = bfail(&b, CT_STATUS_BAD_FORMAT, line_of(ev.start_mark), "a second document in the stream; expected one");
            break;
        case YAML_SCALAR_EVENT: rc = scalar_event(&b, &ev); break;
        case YAML_ALIAS_EVENT: rc = alias_event(&b, &ev); break;
        case YAML_SEQUENCE_START_EVENT: rc = open_event(&b, &ev, CT_YAML_LIST); break;
        case YAML_MAPPING_START_EVENT: rc = open_event(&b, &ev, CT_YAML_MAP); break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: rc = close_event(&b); break;
        default: break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    ct_yaml *root = NULL;
    if (!rc && b.doc.n == 1 && b.doc.items[0].kind != CT_YAML_MAP && !ct_yaml_is_null(&b.doc.items[0]))
        rc = bfail(&b, CT_STATUS_BAD_FORMAT, b.doc.items[0].line, "expected a mapping of 'key: value' lines at the top, found %s",
                   ct_yaml_type(&b.doc.items[0]));
    if (!rc && !(root = calloc(1, sizeof *root))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        if (b.doc.n == 1 && b.doc.items[0].kind == CT_YAML_MAP) {
            *root = b.doc.items[0];   // moved
            b.doc.n = 0;
        } else {   // an empty document: an empty mapping
            root->kind = CT_YAML_MAP;
            root->line = 1;
        }
    }
    builder_free(&b);
    if (rc) return rc;
    *out = root;
    return CT_OK;
}
