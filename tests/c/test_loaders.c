// test_loaders.c - sizes and counts from untrusted headers are checked before any arithmetic
// (under UBSan, an unchecked n_layers + 1 of 2^31 - 1 is a failure of its own), lookups stay
// fast on files of many entries, and the read check denies by default: a path that cannot be
// resolved, or a missing one outside the read roots, is refused.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/ctx.h"
#include "core/fileio.h"
#include "formats/npz.h"
#include "formats/safetensors.h"
#include "formats/tokenizer.h"
#include "formats/yaml.h"
#include "trace/graph.h"

static int has(const ct_err *e, const char *s) { return strstr(e->msg, s) != NULL; }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

// A safetensors file of header (JSON) and data_bytes zero bytes.
static void write_st(const char *path, const char *header, size_t data_bytes) {
    FILE *f = fopen(path, "wb");
    uint64_t n = strlen(header);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fputs(header, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

// A graph safetensors of one position and one logit, with the given n_layers metadata; the
// adjacency is [adj, adj].
static ct_status load_graph_st(const char *dir, const char *n_layers, int adj, ct_err *e) {
    char path[512], header[2048];
    snprintf(path, sizeof path, "%s/g.safetensors", dir);
    size_t a = (size_t)adj * (size_t)adj * 4;
    snprintf(header, sizeof header,
             "{\"__metadata__\":{\"n_layers\":\"%s\"},"
             "\"active_features\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
             "\"selected_features\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[0,0]},"
             "\"activation_values\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
             "\"input_tokens\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
             "\"logit_tokens\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]},"
             "\"logit_probabilities\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]},"
             "\"adjacency_matrix\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[20,%zu]}}",
             n_layers, adj, adj, 20 + a);
    write_st(path, header, 20 + a);
    ct_graph *g = NULL;
    ct_status rc = ct_graph_load(NULL, &g, path, e);
    ct_graph_free(g);
    return rc;
}

static ct_status load_graph_json(const char *dir, const char *text, ct_err *e) {
    char path[512];
    snprintf(path, sizeof path, "%s/g.json", dir);
    write_text(path, text);
    ct_graph *g = NULL;
    ct_status rc = ct_graph_load_json(NULL, &g, path, e);
    ct_graph_free(g);
    return rc;
}

int main(void) {
    char dir[] = "/tmp/ct_test_loaders_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    ct_err e = {0};
    ct_status rc;

    // ---- graph safetensors: n_layers and the counts that make the node count
    rc = load_graph_st(dir, "2", 4, &e);   // 0 features + 3 * 1 positions + 1 logit = 4 nodes
    ok(rc == CT_OK, "a well-formed graph file loads (%s)", rc ? e.msg : "ok");
    rc = load_graph_st(dir, "2147483647", 4, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "n_layers must be a decimal integer of 0..100000"), "n_layers 2^31 - 1: %s", e.msg);
    rc = load_graph_st(dir, "-3", 4, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "'-3'"), "negative n_layers: %s", e.msg);
    rc = load_graph_st(dir, "4294967298", 4, &e);   // atoi would have made it 2
    ok(rc == CT_STATUS_BAD_FORMAT, "n_layers 2^32 + 2 is not read as 2: %s", e.msg);
    rc = load_graph_st(dir, "2 ", 4, &e);
    ok(rc == CT_STATUS_BAD_FORMAT, "n_layers with trailing text: %s", e.msg);

    // ---- graph JSON: indices and layers that do not fit the graph
    const char *head = "{\"metadata\":{\"prompt_tokens\":[\"a\"]},\"links\":[],\"nodes\":[";
    const char *logit = "{\"node_id\":\"3_7_0\",\"feature\":7,\"layer\":\"3\",\"ctx_idx\":0,\"feature_type\":\"logit\"}";
    char text[1024];
    snprintf(text, sizeof text, "%s%s]}", head, logit);
    rc = load_graph_json(dir, text, &e);
    ok(rc == CT_OK, "a graph JSON of one logit loads (%s)", rc ? e.msg : "ok");
    snprintf(text, sizeof text, "%s{\"node_id\":\"0_4294967296_0\",\"feature\":1,\"layer\":\"0\",\"ctx_idx\":0,"
             "\"feature_type\":\"cross layer transcoder\"},%s]}", head, logit);
    rc = load_graph_json(dir, text, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "0..2147483647"), "a feature index of 2^32 is not cut to 0: %s", e.msg);
    snprintf(text, sizeof text, "%s{\"node_id\":\"5_1_0\",\"feature\":1,\"layer\":\"5\",\"ctx_idx\":0,"
             "\"feature_type\":\"cross layer transcoder\"},%s]}", head, logit);
    rc = load_graph_json(dir, text, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "below the graph's layers"), "a feature above the last layer: %s", e.msg);
    snprintf(text, sizeof text, "%s{\"node_id\":\"3_7_0\",\"feature\":7,\"layer\":\"99999999999\",\"ctx_idx\":0,"
             "\"feature_type\":\"logit\"}]}", head);
    rc = load_graph_json(dir, text, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "expected a layer of 0..100001"), "a layer past int: %s", e.msg);
    snprintf(text, sizeof text, "%s{\"node_id\":\"E_99999999999_0\",\"feature\":0,\"layer\":\"E\",\"ctx_idx\":0,"
             "\"feature_type\":\"embedding\"},%s]}", head, logit);
    rc = load_graph_json(dir, text, &e);
    ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "token id of 0..2147483647"), "a token id past int: %s", e.msg);

    // ---- safetensors: lookups among many tensors (binary search on the names)
    {
        size_t cap = 4 << 20, k = 0;
        char *h = malloc(cap);
        k += (size_t)snprintf(h + k, cap - k, "{");
        for (int i = 0; i < 20000; i++)
            k += (size_t)snprintf(h + k, cap - k, "%s\"t%05d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
                                  i ? "," : "", 19999 - i, 4 * i, 4 * i + 4);
        snprintf(h + k, cap - k, "}");
        size_t hl = strlen(h), n = 8 + hl + 4 * 20000;
        uint8_t *buf = calloc(1, n);
        for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
        memcpy(buf + 8, h, hl);
        ct_safetensors *st = NULL;
        rc = ct_safetensors_parse(&st, buf, n, &e);
        int found = rc == CT_OK;
        for (int i = 0; found && i < 20000; i++) {
            char name[16];
            snprintf(name, sizeof name, "t%05d", i);
            const ct_st_tensor *t = ct_safetensors_find(st, name);
            found = t && strcmp(t->name, name) == 0 && t->data == buf + 8 + hl + 4 * (19999 - i);
        }
        ok(found && !ct_safetensors_find(st, "t20000") && !ct_safetensors_find(st, ""),
           "each of 20,000 tensors is found by name, a missing name is not");
        ct_safetensors_free(st);
        free(buf);
        free(h);
    }
    // a shape of 2^53 along one axis and 0 along another holds no data: it parses, and loaders
    // check the dimensions themselves (test_loaders.sh); two axes of 2^40 overflow
    {
        const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,0]}}";
        size_t hl = strlen(h);
        uint8_t *buf = calloc(1, 8 + hl);
        for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
        memcpy(buf + 8, h, hl);
        ct_safetensors *st = NULL;
        rc = ct_safetensors_parse(&st, buf, 8 + hl, &e);
        ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "overflows"), "2^40 x 2^40: %s", e.msg);
        free(buf);
    }

    // ---- npy / npz
    {
        char hdr[128];
        int hl = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }");
        uint8_t buf[256] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)hl, 0};
        memcpy(buf + 10, hdr, (size_t)hl);
        ct_npy_array a;
        rc = ct_npy_parse(&a, buf, 10 + (size_t)hl, &e);
        ok(rc == CT_STATUS_BAD_SHAPE && has(&e, "overflows"), "npy 2^40 x 2^40: %s", e.msg);
    }

    // ---- YAML: duplicate keys found among many, in n log n; a long flow list
    {
        size_t cap = 4 << 20, k = 0;
        char *y = malloc(cap);
        for (int i = 0; i < 100000; i++) k += (size_t)snprintf(y + k, cap - k, "k%d: %d\n", i, i);
        k += (size_t)snprintf(y + k, cap - k, "k5: again\nk3: again\n");
        ct_yaml *doc = NULL;
        rc = ct_yaml_parse(&doc, y, k, "config.yaml", &e);
        ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "line 100001: duplicate key 'k5' (first on line 6)"),
           "the first repeated key of 100,002 is named: %s", e.msg);
        ct_yaml_free(doc);
        k = (size_t)snprintf(y, cap, "list: [");
        for (int i = 0; i < 200000; i++) k += (size_t)snprintf(y + k, cap - k, "%sitem%d", i ? ", " : "", i);
        k += (size_t)snprintf(y + k, cap - k, "]\n");
        rc = ct_yaml_parse(&doc, y, k, "config.yaml", &e);
        const ct_yaml *l = rc ? NULL : ct_yaml_get(doc, "list");
        ok(l && l->n == 200000 && strcmp(l->items[199999].value, "item199999") == 0, "a flow list of 200,000 items (%s)",
           rc ? e.msg : "ok");
        ct_yaml_free(doc);
        free(y);
    }

    // ---- tokenizer.json: two added tokens of one id (the second freed the first's piece)
    {
        const char *j = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]},"
                        "\"added_tokens\":[{\"id\":2,\"content\":\"<x>\"},{\"id\":2,\"content\":\"<y>\"}]}";
        ct_tokenizer *t = NULL;
        rc = ct_tokenizer_parse_json(&t, j, strlen(j), NULL, 0, &e);
        ok(rc == CT_STATUS_BAD_FORMAT && has(&e, "expected distinct ids"), "added tokens sharing an id: %s", e.msg);
        ct_tokenizer_free(t);
    }

    // ---- the read check denies by default
    {
        char in[600], outside[600], p[800];
        snprintf(in, sizeof in, "%s/in", dir);
        snprintf(outside, sizeof outside, "%s/out", dir);
        mkdir(in, 0755);
        mkdir(outside, 0755);
        ct_ctx c;
        ct_ctx_init(&c);
        const char *roots[] = {in};
        rc = ct_ctx_set_read_roots(&c, roots, 1, &e);
        ok(rc == CT_OK, "read roots set (%s)", rc ? e.msg : "ok");
        snprintf(p, sizeof p, "%s/missing", in);
        rc = ct_ctx_check_read(&c, p, &e);
        ok(rc == CT_STATUS_NOT_FOUND, "a missing file under a root: NOT_FOUND (%s)", e.msg);
        snprintf(p, sizeof p, "%s/missing", outside);
        rc = ct_ctx_check_read(&c, p, &e);
        ok(rc == CT_STATUS_BAD_ARG && has(&e, "may read only under"), "a missing file outside: refused (%s)", e.msg);
        snprintf(p, sizeof p, "%s/in/../out/missing", dir);
        rc = ct_ctx_check_read(&c, p, &e);
        ok(rc == CT_STATUS_BAD_ARG, "a missing file reached by .. out of a root: refused (%s)", e.msg);
        char a[700], b[700];
        snprintf(a, sizeof a, "%s/loop_a", in);
        snprintf(b, sizeof b, "%s/loop_b", in);
        symlink("loop_b", a);
        symlink("loop_a", b);
        snprintf(p, sizeof p, "%s/x", a);
        rc = ct_ctx_check_read(&c, p, &e);
        ok(rc == CT_STATUS_BAD_ARG && has(&e, "cannot be resolved"), "a loop of links: refused (%s)", e.msg);
        int fd;
        int64_t size;
        rc = ct_open_read(&c, a, &fd, &size, &e);
        ok(rc == CT_STATUS_BAD_ARG && has(&e, "cannot be resolved"), "opening through a loop of links: refused (%s)", e.msg);
        char longp[5000];
        size_t k = (size_t)snprintf(longp, sizeof longp, "%s", in);
        while (k < 4300) k += (size_t)snprintf(longp + k, sizeof longp - k, "/%s", "0123456789");
        rc = ct_ctx_check_read(&c, longp, &e);
        ok(rc == CT_STATUS_BAD_ARG && has(&e, "cannot be resolved"), "a path longer than PATH_MAX: refused (%s)", e.msg);
        ct_ctx_free(&c);
        unlink(a);
        unlink(b);
        rmdir(in);
        rmdir(outside);
    }

    char p[600];
    snprintf(p, sizeof p, "%s/g.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/g.json", dir);
    unlink(p);
    rmdir(dir);
    return check_done();
}
