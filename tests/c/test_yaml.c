// test_yaml.c - config files through libyaml (formats/yaml.h) and what the transcoder loader
// makes of them.
//
// 1. Against PyYAML's safe_load (circuit-tracer's own loader, pure Python, an implementation
//    independent of libyaml): every config.yaml layout in tests/fixtures/configs, the fuzz
//    seeds, and snippets of the YAML a config may use (flow style, block scalars with their
//    chomping, quoting and escapes, multi-line plain scalars, anchors, aliases and merge keys,
//    document markers, explicit tags, CRLF, the YAML 1.1 integers, booleans, nulls and floats)
//    give the same value, compared as canonical JSON (keys sorted).
// 2. Hand-worked: line numbers of nodes, the text of block scalars, merge-key precedence, the
//    type helpers (ct_yaml_int, ct_yaml_type, ct_yaml_is_null).
// 3. Bad YAML: each error names the file and the line (and column where libyaml gives one):
//    a missing ':', bad indentation, an unterminated string or flow list, tabs, a second
//    document, aliases undefined or recursive, an alias bomb, unknown tags, repeated keys,
//    non-string keys, nesting past 64, invalid UTF-8, control characters, a top level that is
//    not a mapping.
// 4. Wrong types in a transcoder config (transcoders: 5, a mapping where a string is expected,
//    k as a string, the older {id, layer, filepath} form with a layer missing, repeated or out
//    of range, ...): ct_transcoders_load refuses each with the file, the line, what was
//    expected and what was found.
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "tiny.h"
#include "formats/yaml.h"
#include "model/transcoder.h"

// ---- a growable string

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1) + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)k);
}

// ---- the tree as the JSON Python's json.dumps(sort_keys=True, ensure_ascii=False) writes

static void json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"') sb_put(b, "\\\"", 2);
        else if (c == '\\') sb_put(b, "\\\\", 2);
        else if (c == '\n') sb_put(b, "\\n", 2);
        else if (c == '\r') sb_put(b, "\\r", 2);
        else if (c == '\t') sb_put(b, "\\t", 2);
        else if (c == '\b') sb_put(b, "\\b", 2);
        else if (c == '\f') sb_put(b, "\\f", 2);
        else if (c < 0x20) sb_printf(b, "\\u%04x", c);
        else sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
}

// Python's repr of a float: the shortest digits that read back, fixed notation for exponents
// -4..15 (with ".0" when integral), else d.ddde+XX.
static void json_float(sbuf *b, double x) {
    if (isinf(x)) {
        sb_put(b, x < 0 ? "-Infinity" : "Infinity", x < 0 ? 9 : 8);
        return;
    }
    if (isnan(x)) {
        sb_put(b, "NaN", 3);
        return;
    }
    char e[64];
    for (int p = 0; p < 17; p++) {
        snprintf(e, sizeof e, "%.*e", p, x);
        if (strtod(e, NULL) == x) break;
    }
    int exp = atoi(strchr(e, 'e') + 1);
    char digits[32];
    int nd = 0, neg = e[0] == '-';
    for (const char *s = e + neg; *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    if (neg) sb_put(b, "-", 1);
    if (exp < -4 || exp >= 16) {
        sb_put(b, digits, 1);
        if (nd > 1) sb_put(b, ".", 1), sb_put(b, digits + 1, (size_t)nd - 1);
        sb_printf(b, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
    } else if (exp < 0) {
        sb_put(b, "0.", 2);
        for (int i = 0; i < -exp - 1; i++) sb_put(b, "0", 1);
        sb_put(b, digits, (size_t)nd);
    } else {
        for (int i = 0; i <= exp; i++) sb_put(b, i < nd ? &digits[i] : "0", 1);
        sb_put(b, ".", 1);
        if (nd > exp + 1) sb_put(b, digits + exp + 1, (size_t)(nd - exp - 1));
        else sb_put(b, "0", 1);
    }
}

static const ct_yaml *sort_base;
static int cmp_idx(const void *x, const void *y) {
    return strcmp(sort_base->items[*(const int *)x].key, sort_base->items[*(const int *)y].key);
}

static void json(sbuf *b, const ct_yaml *y) {
    if (y->kind == CT_YAML_LIST) {
        sb_put(b, "[", 1);
        for (int i = 0; i < y->n; i++) {
            if (i) sb_put(b, ", ", 2);
            json(b, &y->items[i]);
        }
        sb_put(b, "]", 1);
        return;
    }
    if (y->kind == CT_YAML_MAP) {
        int *idx = malloc(sizeof(int) * (size_t)(y->n + 1));
        for (int i = 0; i < y->n; i++) idx[i] = i;
        sort_base = y;
        qsort(idx, (size_t)y->n, sizeof *idx, cmp_idx);
        sb_put(b, "{", 1);
        for (int i = 0; i < y->n; i++) {
            if (i) sb_put(b, ", ", 2);
            json_string(b, y->items[idx[i]].key);
            sb_put(b, ": ", 2);
            json(b, &y->items[idx[i]]);
        }
        sb_put(b, "}", 1);
        free(idx);
        return;
    }
    const char *type = ct_yaml_type(y), *v = y->value;
    long long i;
    if (strcmp(type, "null") == 0) {
        sb_put(b, "null", 4);
    } else if (strcmp(type, "a boolean") == 0) {
        int t = strchr("yYtToO", v[0]) && !(v[0] == 'o' || v[0] == 'O' ? (v[1] == 'f' || v[1] == 'F') : 0);
        sb_put(b, t ? "true" : "false", t ? 4 : 5);
    } else if (ct_yaml_int(y, &i)) {
        sb_printf(b, "%lld", i);
    } else if (strcmp(type, "a number") == 0) {
        char clean[128];
        size_t k = 0;
        for (const char *s = v; *s && k + 1 < sizeof clean; s++)
            if (*s != '_') clean[k++] = *s;
        clean[k] = 0;
        const char *s = clean + (clean[0] == '-' || clean[0] == '+');
        double x = strcasecmp(s, ".inf") == 0 ? INFINITY : strcasecmp(s, ".nan") == 0 ? NAN : strtod(s, NULL);
        json_float(b, clean[0] == '-' ? -x : x);
    } else {
        json_string(b, v);
    }
}

static char *tree_json(const ct_yaml *y) {
    sbuf b = {0};
    json(&b, y);
    return b.p;
}

// ---- helpers

static int has(const ct_err *e, const char *s) { return strstr(e->msg, s) != NULL; }

static ct_yaml *parse(const char *text, ct_err *e) {
    ct_yaml *y = NULL;
    memset(e, 0, sizeof *e);
    ct_yaml_parse(&y, text, strlen(text), "config.yaml", e);
    return y;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long k = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)k + 1);
    *n = fread(p, 1, (size_t)k, f);
    p[*n] = 0;
    fclose(f);
    return p;
}

// Snippets compared with PyYAML (each parses to a mapping in both).
static const char *const snippets[] = {
    "a: [1, 'two', \"three\", {x: y, z: [p, q]}]\nb: {}\nc: []\n",
    "lit: |\n  line 1\n   indented\n  line 3\nkeep: |+\n  kept\n\n\nstrip: |-\n  stripped\n\nfold: >\n  folded\n  lines\n\n  para\n"
    "foldstrip: >-\n  a\n  b\nlast: end\n",
    "dq: \"tab\\there \\\"quoted\\\" \\x41 \\u00e9 \\\\ back\"\nsq: 'it''s #not a comment'\nplain: value # a comment\n"
    "hash: a#b\ncolon: 'a: b'\nurl: hf://org/repo/file.npz?revision=main\n",
    "multi: this plain\n  scalar runs\n  over lines\nquoted: \"and this\n  one too\"\n",
    "base: &b {x: 1, y: 2}\nlist: &l [a, b]\nuse:\n  <<: *b\n  y: 3\ncopy: *l\nboth: [*b, *l]\n",
    "one: &o {k: 1, a: 1}\ntwo: &t {k: 2, b: 2}\nm:\n  <<: [*o, *t]\n  c: 3\n",
    "%YAML 1.1\n---\na: 1\nb: two\n...\n",
    "ints: [0, 7, -3, +12, 010, 0x1F, 0b101, 1_000, 08, 0o17]\n"
    "bools: [yes, No, TRUE, false, on, OFF, y, n]\nnulls: [~, null, Null, NULL, '', 'null']\nempty:\n"
    "floats: [1.5, -0.25, 3., .5, 6.02e+23, 1.0e-7, 100.0, 1e3, -.5, .inf, -.Inf]\n",
    "tagged: [!!str 123, !!int \"42\", !!float 7.5, !!bool \"yes\", !!null \"\", !!str ~, ! \"12\"]\n",
    "crlf: yes\r\nlist:\r\n  - a\r\n  - b\r\n",
    "seq_at_key_level:\n- a\n- b\nnested:\n    deep:\n        deeper: [1, 2]\n",
    "transcoders:\n  - id: \"t0\"\n    layer: 0\n    filepath: \"hf://a/b/layer_0.safetensors?revision=r\"\n    \n"
    "  - id: \"t1\"\n    layer: 1\n    filepath: \"x.safetensors\"\n",
    "\"quoted key\": 1\n'single key': 2\nkey with spaces: 3\n? explicit\n: value\nunicode: \"caf\xc3\xa9 \xe2\x86\x92 \xe6\xbc\xa2\"\n",
    "# only a comment line first\n\n\nkey: value   \n   # indented comment\nother: [a,   b ,c]\n",
    "a: !!seq [1]\nb: !!map {c: d}\nc: ! 12\n",
};

int main(void) {
    (void)make_family;
    ct_err e;
    ct_yaml *y;

    // ---- 1. the same values as PyYAML's safe_load
    {
        char tmp[] = "/tmp/ct_yamlXXXXXX";
        if (!mkdtemp(tmp)) return 1;
        const char *dirs[] = {"ls tests/fixtures/configs/*.yaml", "find tests/fuzz/seeds/yaml -type f -name \"*.yaml\" | sort"};
        char *paths[128];
        int n = 0;
        for (int d = 0; d < 2; d++) {
            FILE *ls = popen(dirs[d], "r");   // the fixtures, and the seeds that are not links to them
            char line[512];
            while (ls && n < 100 && fgets(line, sizeof line, ls)) {
                line[strcspn(line, "\n")] = 0;
                paths[n++] = strdup(line);
            }
            if (ls) pclose(ls);
        }
        int n_files = n;
        ok(n_files >= 10, "%d fixture and seed files", n_files);
        for (size_t i = 0; i < sizeof snippets / sizeof *snippets; i++) {
            char p[128];
            snprintf(p, sizeof p, "%s/snippet%zu.yaml", tmp, i);
            write_file(p, snippets[i]);
            paths[n++] = strdup(p);
        }
        sbuf cmd = {0};
        const char *py_src = "/usr/bin/python3 -c 'import json, sys, yaml\nfor p in sys.argv[1:]:\n"
                             "  print(json.dumps(yaml.safe_load(open(p, encoding=\"utf-8\")), sort_keys=True, ensure_ascii=False))'";
        sb_put(&cmd, py_src, strlen(py_src));
        for (int i = 0; i < n; i++) sb_put(&cmd, " ", 1), sb_put(&cmd, paths[i], strlen(paths[i]));
        FILE *py = popen(cmd.p, "r");
        static char line[1 << 16];
        for (int i = 0; i < n; i++) {
            size_t len;
            char *text = slurp(paths[i], &len);
            if (!py || !fgets(line, sizeof line, py)) line[0] = 0;
            line[strcspn(line, "\n")] = 0;
            y = NULL;
            memset(&e, 0, sizeof e);
            ct_status rc = text ? ct_yaml_parse(&y, text, len, "config.yaml", &e) : CT_STATUS_IO;
            char *mine = rc ? NULL : tree_json(y);
            int same = mine && strcmp(mine, line) == 0;
            ok(same, "%s: the value PyYAML's safe_load gives", paths[i] + (i < n_files ? 0 : strlen(tmp) + 1));
            if (!same) printf("#   ctrace: %s\n#   PyYAML: %s\n", mine ? mine : e.msg, line);
            free(mine);
            free(text);
            ct_yaml_free(y);
            free(paths[i]);
        }
        ok(py && pclose(py) == 0, "PyYAML (python3-yaml) ran");
        free(cmd.p);
        snprintf(line, sizeof line, "rm -rf %s", tmp);
        if (system(line) != 0) return 1;
    }

    // ---- 2. hand-worked
    {
        y = parse("# header\nmodel_name: \"x\"\n\ntranscoders:\n  - a.npz\n  - |\n    b\n    c\nk: 24\n", &e);
        const ct_yaml *l = ct_yaml_get(y, "transcoders");
        ok(y && ct_yaml_get(y, "model_name")->line == 2 && l && l->kind == CT_YAML_LIST && l->n == 2 && l->items[0].line == 5 &&
               strcmp(l->items[1].value, "b\nc\n") == 0 && l->items[1].line == 6 && ct_yaml_get(y, "k")->line == 9,
           "lines of nodes; a literal block scalar's text (%s)", y ? "parsed" : e.msg);
        ok(y && !ct_yaml_get(y, "model_name")->plain && ct_yaml_get(y, "k")->plain, "quoted scalars are not plain; plain are");
        ct_yaml_free(y);
        // merge: explicit keys win, then the first merged mapping
        y = parse("a: &a {k: 1, x: a}\nb: &b {k: 2, x: b, z: b}\nm: {<<: [*a, *b], x: m}\n", &e);
        const ct_yaml *m = ct_yaml_get(y, "m");
        ok(m && m->n == 3 && strcmp(ct_yaml_str(m, "x"), "m") == 0 && strcmp(ct_yaml_str(m, "k"), "1") == 0 &&
               strcmp(ct_yaml_str(m, "z"), "b") == 0 && !ct_yaml_get(m, "<<"),
           "merge keys: explicit x, k from the first merged mapping, z from the second");
        ct_yaml_free(y);
        y = parse("\"<<\": 1\n", &e);
        ok(y && y->n == 1 && strcmp(ct_yaml_str(y, "<<"), "1") == 0, "a quoted \"<<\" is an ordinary key");
        ct_yaml_free(y);
        // an alias is a copy: the anchor's node redefined later does not change earlier copies
        y = parse("a: &x 1\nb: *x\nc: &x 2\nd: *x\n", &e);
        ok(y && strcmp(ct_yaml_str(y, "b"), "1") == 0 && strcmp(ct_yaml_str(y, "d"), "2") == 0, "an anchor redefined");
        ct_yaml_free(y);
        y = parse("", &e);
        ok(y && y->kind == CT_YAML_MAP && y->n == 0, "an empty file: an empty mapping");
        ct_yaml_free(y);
        y = parse("# nothing\n---\n...\n", &e);
        ok(y && y->kind == CT_YAML_MAP && y->n == 0, "a document of nothing: an empty mapping");
        ct_yaml_free(y);
        // type helpers
        struct {
            const char *text, *type;
            int is_int;
            long long v;
        } types[] = {{"0", "an integer", 1, 0}, {"-17", "an integer", 1, -17}, {"+3", "an integer", 1, 3},
                     {"1_024", "an integer", 1, 1024}, {"010", "an integer", 1, 8}, {"0x1f", "an integer", 1, 31},
                     {"0b110", "an integer", 1, 6}, {"9223372036854775807", "an integer", 1, 9223372036854775807LL},
                     {"-9223372036854775808", "an integer", 1, (-9223372036854775807LL - 1)},
                     {"9223372036854775808", "a string", 0, 0}, {"08", "a string", 0, 0}, {"0o17", "a string", 0, 0},
                     {"1e3", "a string", 0, 0}, {"1.5", "a number", 0, 0}, {".5", "a number", 0, 0},
                     {"-.5", "a string", 0, 0}, {"-.inf", "a number", 0, 0}, {"yes", "a boolean", 0, 0},
                     {"Off", "a boolean", 0, 0}, {"~", "null", 0, 0}, {"", "null", 0, 0}, {"abc", "a string", 0, 0}};
        int bad = 0;
        for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
            ct_yaml s = {.kind = CT_YAML_SCALAR, .value = (char *)types[i].text, .plain = 1};
            long long v = -1;
            int is = ct_yaml_int(&s, &v);
            if (strcmp(ct_yaml_type(&s), types[i].type) != 0 || is != types[i].is_int || (is && v != types[i].v)) {
                printf("#   '%s': %s, int %d (%lld)\n", types[i].text, ct_yaml_type(&s), is, v);
                bad++;
            }
        }
        ct_yaml q = {.kind = CT_YAML_SCALAR, .value = "5", .plain = 0};
        long long v;
        ok(bad == 0 && !ct_yaml_int(&q, &v) && strcmp(ct_yaml_type(&q), "a string") == 0 && !ct_yaml_is_null(NULL),
           "YAML 1.1 types of %zu plain scalars; a quoted 5 is a string", sizeof types / sizeof *types);
    }

    // ---- 3. bad YAML: file and line
    {
        struct {
            const char *text;
            ct_status st;
            const char *msg;
        } bad[] = {
            {"model_name: x\nmodel_kind: transcoder_set\nfeature_input_hook: a\nfeature_output_hook \"b\"\n", CT_STATUS_BAD_FORMAT,
             "config.yaml line 4, column 1: while scanning a simple key: could not find expected ':'"},
            {"a: 1\nb: 2\n  c: 3\n", CT_STATUS_BAD_FORMAT, "config.yaml line 3, column 4: mapping values are not allowed"},
            {"a:\n  - x\n b: y\n", CT_STATUS_BAD_FORMAT, "config.yaml line 3, column 2: did not find expected key (while parsing a block mapping on line 1"},
            {"a: 1\nb: \"open\nc: 2\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2, column 4: while scanning a quoted scalar: found unexpected end of stream"},
            {"a: [1, 2\nb: 3\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2, column 2: did not find expected ',' or ']'"},
            {"a: 1\nb:\n\tc: 2\n", CT_STATUS_BAD_FORMAT, "config.yaml line 3, column 1: while scanning for the next token: found character that cannot start any token"},
            {"a: 1\n---\nb: 2\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2: a second document in the stream"},
            {"a: 1\nb: *nope\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2: alias *nope names no anchor defined before it"},
            {"a: &r\n  b: [1, *r]\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2: alias *r inside the node it names"},
            {"a: !python/object x\n", CT_STATUS_UNSUPPORTED, "config.yaml line 1: tag '!python/object'"},
            {"a: !!binary aGk=\n", CT_STATUS_UNSUPPORTED, "config.yaml line 1: tag 'tag:yaml.org,2002:binary'"},
            {"a: !!set {x}\n", CT_STATUS_UNSUPPORTED, "config.yaml line 1: tag 'tag:yaml.org,2002:set' on a mapping"},
            {"a: !!int twelve\n", CT_STATUS_BAD_FORMAT, "config.yaml line 1: 'twelve' is tagged tag:yaml.org,2002:int but is a string"},
            {"a: 1\nb: 2\na: 3\n", CT_STATUS_BAD_FORMAT, "config.yaml line 3: duplicate key 'a' (first on line 1)"},
            {"a: 1\n[x, y]: 2\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2: a list as a mapping key"},
            {"a: &m {x: 1}\n*m : 2\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2: alias *m is a mapping, used as a mapping key"},
            {"a: \"nul \\0 inside\"\n", CT_STATUS_BAD_FORMAT, "config.yaml line 1: a NUL character in a string"},
            {"a: 1\nb: \xff\xfe\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2: invalid leading UTF-8 octet"},
            {"a: 1\n\nb: x\x01y\n", CT_STATUS_BAD_FORMAT, "config.yaml line 3: control characters are not allowed"},
            {"- a\n- b\n", CT_STATUS_BAD_FORMAT, "config.yaml line 1: expected a mapping of 'key: value' lines at the top, found a list"},
            {"just text\n", CT_STATUS_BAD_FORMAT, "config.yaml line 1: expected a mapping of 'key: value' lines at the top, found a string"},
            {"a: 1\n<<: [x]\n", CT_STATUS_BAD_FORMAT, "config.yaml line 2: the merge key << expects a mapping or a list of mappings, found a string"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            y = parse(bad[i].text, &e);
            ok(!y && e.status == bad[i].st && has(&e, bad[i].msg), "bad YAML %zu: %s", i + 1, e.msg);
            ct_yaml_free(y);
        }
        // nesting past 64; an alias bomb (each level doubles: 2^30 nodes if expanded)
        sbuf b = {0};
        sb_printf(&b, "a: ");
        for (int i = 0; i < 70; i++) sb_put(&b, "[", 1);
        for (int i = 0; i < 70; i++) sb_put(&b, "]", 1);
        sb_put(&b, "\n", 1);
        y = parse(b.p, &e);
        ok(!y && has(&e, "config.yaml line 1: lists and mappings nested more than 64 deep"), "deep nesting: %s", e.msg);
        ct_yaml_free(y);
        b.n = 0;   // 60 levels anchored, copied under 10 more: deeper than 64 through an alias
        sb_printf(&b, "a: &a ");
        for (int i = 0; i < 120; i++) sb_put(&b, i < 60 ? "[" : "]", 1);
        sb_printf(&b, "\nb: [[[[[[[[[[*a]]]]]]]]]]\n");
        y = parse(b.p, &e);
        ok(!y && has(&e, "config.yaml line 2: lists and mappings nested more than 64 deep"), "deep nesting by an alias: %s", e.msg);
        ct_yaml_free(y);
        b.n = 0;
        sb_printf(&b, "l0: &l0 [x, x]\n");
        for (int i = 1; i <= 30; i++) sb_printf(&b, "l%d: &l%d [*l%d, *l%d]\n", i, i, i - 1, i - 1);
        y = parse(b.p, &e);
        ok(!y && has(&e, "anchors and aliases copy more than 1048576 nodes"), "alias bomb: %s", e.msg);
        ct_yaml_free(y);
        free(b.p);
    }

    // ---- 4. wrong types in a transcoder config
    {
        char tmp[] = "/tmp/ct_yamlcfgXXXXXX";
        if (!mkdtemp(tmp)) return 1;
        char set[128], cfg[160];
        snprintf(set, sizeof set, "%s/set", tmp);
        make_transcoders(set, D, 0, "relu", 0, "mlp.hook_in", "mlp.hook_out");   // layer_0, layer_1 and a config.yaml
        snprintf(cfg, sizeof cfg, "%s/config.yaml", set);
        char long_name[400];
        memset(long_name, 'n', 300);
        long_name[300] = 0;
        char long_cfg[512];
        snprintf(long_cfg, sizeof long_cfg, "model_kind: transcoder_set\nmodel_name: %s\n", long_name);
        struct {
            const char *text, *msg;
        } cases[] = {
            {"model_kind: transcoder_set\ntranscoders: 5\n", "config.yaml line 2: transcoders: expected a list of paths (or of {id, layer, filepath} mappings), found an integer"},
            {"model_kind: transcoder_set\ntranscoders: layer_0.safetensors\n", "config.yaml line 2: transcoders: expected a list of paths (or of {id, layer, filepath} mappings), found a string"},
            {"model_kind: transcoder_set\ntranscoders: {a: b}\n", "found a mapping"},
            {"model_kind: transcoder_set\nmodel_name: {org: google, name: gemma}\n", "config.yaml line 2: model_name: expected a string, found a mapping"},
            {"model_kind: transcoder_set\nfeature_input_hook: [mlp.hook_in]\n", "config.yaml line 2: feature_input_hook: expected a string, found a list"},
            {"model_kind: [transcoder_set]\n", "config.yaml line 1: model_kind: expected a string, found a list"},
            {"model_kind: encoder\n", "config.yaml line 1: model_kind 'encoder'; expected transcoder_set or cross_layer_transcoder"},
            {long_cfg, "config.yaml line 2: model_name: 300 characters; expected at most 255"},
            {"activation: {name: relu}\n", "config.yaml line 1: activation: expected relu, jump_relu or topk, found a mapping"},
            {"activation: topk\nk: \"4\"\n", "config.yaml line 2: activation topk needs an integer k in 1..16777216; found a string '4'"},
            {"activation: topk\nk: 0\n", "found an integer '0'"},
            {"activation: topk\n", "config.yaml line 1: activation topk needs an integer k in 1..16777216; found no k"},
            {"transcoders:\n  - layer_0.safetensors\n  -\n", "config.yaml line 3: transcoders entry 1: expected a path or an {id, layer, filepath} mapping, found null"},
            {"transcoders:\n  - [layer_0.safetensors]\n", "config.yaml line 2: transcoders entry 0: expected a path or an {id, layer, filepath} mapping, found a list"},
            {"transcoders:\n  - layer_0.safetensors\n  - {layer: 1, filepath: layer_1.safetensors}\n", "config.yaml line 3: transcoders entry 1 is a mapping and entry 0 (line 2) a path; expected paths only or mappings only"},
            {"transcoders:\n  - id: a\n    filepath: layer_0.safetensors\n", "config.yaml line 2: transcoders entry 0: layer: expected an integer, found nothing"},
            {"transcoders:\n  - layer: \"0\"\n    filepath: layer_0.safetensors\n", "config.yaml line 2: transcoders entry 0: layer: expected an integer, found a string"},
            {"transcoders:\n  - layer: 0\n    filepath: layer_0.safetensors\n  - layer: 2\n    filepath: layer_1.safetensors\n", "config.yaml line 4: transcoders entry 1 is for layer 2; a list of 2 entries covers layers 0..1, each once"},
            {"transcoders:\n  - layer: 1\n    filepath: layer_0.safetensors\n  - layer: 1\n    filepath: layer_1.safetensors\n", "config.yaml line 4: layer 1 has a second transcoder (the first on line 3)"},
            {"transcoders:\n  - layer: 0\n    filepath: {path: layer_0.safetensors}\n", "config.yaml line 3: transcoders entry 0: filepath: expected a path, found a mapping"},
            {"transcoders:\n  - layer: 0\n", "config.yaml line 2: transcoders entry 0: filepath: expected a path, found nothing"},
            {"transcoders: [layer_0.safetensors, layer_0.safetensors]\n", "config.yaml line 1: layer 1 repeats the file of layer 0"},
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            write_file(cfg, cases[i].text);
            ct_transcoders *tc = NULL;
            memset(&e, 0, sizeof e);
            ct_status rc = ct_transcoders_load(NULL, &tc, set, &e);
            ok(rc != CT_OK && has(&e, cases[i].msg) && has(&e, cfg), "config %zu: %s", i + 1, e.msg);
            ct_transcoders_free(tc);
        }
        // the same files load when the config is right: null lists, null settings, quoted or not
        const char *good[] = {"model_kind: transcoder_set\ntranscoders:\nmodel_name: ~\n",
                              "transcoders:\n  - layer: 1\n    filepath: layer_1.safetensors\n  - layer: 0\n    filepath: \"layer_0.safetensors\"\n",
                              "activation: topk\nk: 0x10\n"};
        for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
            write_file(cfg, good[i]);
            ct_transcoders *tc = NULL;
            ct_status rc = ct_transcoders_load(NULL, &tc, set, &e);
            ok(rc == CT_OK && tc->n_layers == 2 && (i != 2 || tc->k == 16), "good config %zu loads (%s)", i + 1, rc ? e.msg : "ok");
            ct_transcoders_free(tc);
        }
        char rm[200];
        snprintf(rm, sizeof rm, "rm -rf %s", tmp);
        if (system(rm) != 0) return 1;
    }
    return check_done();
}
