// graph_io.c - attribution graph files: Neuronpedia / circuit-tracer JSON, graph-metadata.json,
// and the full graph as safetensors (see graph.h and formats.md section 5).
#include <cJSON.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "trace/graph.h"
#include "formats/safetensors.h"

// ---------------------------------------------------------------------------------------------
// Writing JSON text

// A growing text buffer, or a stream into a file being written (f set: the text goes straight
// to the file, so a graph's JSON never needs its whole text in memory); write errors surface
// once, at the end.
// script: the text goes inside an HTML <script> element, every "<" written as a JSON escape (u003c).
typedef struct {
    char *s;
    size_t n, cap;
    int oom;
    FILE *f;
    int script;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->f) {   // a failed write is caught by ct_wfile_commit
        size_t from = 0;
        // in a <script> element every '<' (only inside JSON strings) becomes \u003c: no "</script>"
        // ends the element and no "<!--" with "<script" puts the parser in its escaped states
        for (size_t i = 0; b->script && i < n; i++) {
            if (s[i] == '<') {
                fwrite(s + from, 1, i - from, b->f);
                fputs("\\u003c", b->f);
                from = i + 1;
            }
        }
        fwrite(s + from, 1, n - from, b->f);
        b->n += n;
        return;
    }
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns, b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n >= 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

// Length of the valid UTF-8 sequence at s (0: invalid).
static int utf8_len(const unsigned char *s) {
    unsigned c = s[0];
    int n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 && c >= 0xC2 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 && c <= 0xF4 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0))) return 0;
    if (n == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))) return 0;
    return n;
}

// A JSON string; invalid UTF-8 bytes become U+FFFD (as a tokenizer's decode shows them).
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        int n = utf8_len(p);
        if (n == 0) {
            sb_str(b, "\xEF\xBF\xBD");
            p++;
        } else if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            sb_put(b, e, 2);
            p++;
        } else if (*p < 0x20) {
            const char *esc = *p == '\n' ? "\\n" : *p == '\t' ? "\\t" : *p == '\r' ? "\\r" : NULL;
            if (esc) sb_str(b, esc);
            else sb_printf(b, "\\u%04x", *p);
            p++;
        } else {
            sb_put(b, (const char *)p, (size_t)n);
            p += n;
        }
    }
    sb_put(b, "\"", 1);
}

// The shortest decimal that reads back as the same float32.
static void sb_float(sbuf *b, float v) {
    if (!isfinite(v)) {
        sb_str(b, "null");
        return;
    }
    char tmp[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
        if (strtof(tmp, NULL) == v) break;
    }
    sb_str(b, tmp);
}

static void sb_double(sbuf *b, double v) {
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    sb_str(b, tmp);
}

// Writes the buffer to path (atomically, checked against c's write root).
static ct_status sb_save(ct_ctx *ctx, sbuf *b, const char *path, ct_err *err) {
    if (b->oom) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory writing %s", path);
    return ct_write_file(ctx, path, b->s, b->n, err);
}

// ---------------------------------------------------------------------------------------------
// Graph JSON

void ct_graph_node_id(const ct_graph *g, int64_t i, char *buf, size_t n) {
    ct_node_info ni = ct_graph_node(g, i);
    switch (ni.kind) {
    case CT_NODE_FEATURE: snprintf(buf, n, "%d_%lld_%d", ni.layer, (long long)ni.feature, ni.pos); break;
    case CT_NODE_ERROR: snprintf(buf, n, "%d_-1_%d", ni.layer, ni.pos); break;
    case CT_NODE_TOKEN: snprintf(buf, n, "E_%d_%d", g->tokens[ni.pos], ni.pos); break;
    case CT_NODE_LOGIT: snprintf(buf, n, "%d_%lld_%d", g->n_layers + 1, (long long)ni.feature, ni.pos); break;
    }
}

int64_t ct_graph_find_node_id(const ct_graph *g, const char *id) {
    int a, b, c;
    char rest[8];
    if (sscanf(id, "E_%d_%d%1s", &a, &b, rest) == 2)
        return b >= 0 && b < g->n_pos && g->tokens[b] == a ? ct_graph_token_node(g, b) : -1;
    if (sscanf(id, "%d_%d_%d%1s", &a, &b, &c, rest) != 3 || a < 0 || c < 0 || c >= g->n_pos) return -1;
    if (a == g->n_layers + 1) {
        for (int k = 0; k < g->n_logits; k++)
            if (g->logits[k].vocab_id == b && c == g->n_pos - 1) return ct_graph_logit_node(g, k);
        return -1;
    }
    if (a >= g->n_layers) return -1;
    if (b == -1) return ct_graph_error_node(g, a, c);
    return b >= 0 ? ct_graph_feature_node(g, a, c, b) : -1;
}

static void write_node(sbuf *b, const ct_graph *g, int64_t i, int first_logit) {
    ct_node_info ni = ct_graph_node(g, i);
    char id[64], js[64];
    ct_graph_node_id(g, i, id, sizeof id);
    const char *type = "cross layer transcoder";
    int64_t feature = -1;
    char layer[16];
    snprintf(layer, sizeof layer, "%d", ni.layer);
    float prob = 0.0f;
    switch (ni.kind) {
    case CT_NODE_FEATURE:
        feature = ct_cantor(ni.layer, ni.feature);
        snprintf(js, sizeof js, "%d_%lld-0", ni.layer, (long long)ni.feature);
        break;
    case CT_NODE_ERROR:
        type = "mlp reconstruction error";
        snprintf(js, sizeof js, "%d_-1-%d", ni.layer, ni.pos);
        break;
    case CT_NODE_TOKEN:
        type = "embedding";
        feature = ni.pos;
        snprintf(layer, sizeof layer, "E");
        snprintf(js, sizeof js, "E_%d-%d", g->tokens[ni.pos], ni.pos);
        break;
    case CT_NODE_LOGIT:
        type = "logit";
        feature = ni.feature;
        snprintf(layer, sizeof layer, "%d", g->n_layers + 1);
        snprintf(js, sizeof js, "L_%lld-%d", (long long)ni.feature, ni.pos);
        prob = g->logits[i - ct_graph_logit_node(g, 0)].prob;
        break;
    }
    sb_str(b, "    {\"node_id\": ");
    sb_json_str(b, id);
    sb_printf(b, ", \"feature\": %lld, \"layer\": \"%s\", \"ctx_idx\": %d, \"feature_type\": \"%s\", \"token_prob\": ",
              (long long)feature, layer, ni.pos, type);
    sb_float(b, prob);
    sb_printf(b, ", \"is_target_logit\": %s, \"run_idx\": 0, \"reverse_ctx_idx\": 0, \"jsNodeId\": ",
              first_logit ? "true" : "false");
    sb_json_str(b, js);
    sb_str(b, ", \"clerp\": ");
    if (ni.kind == CT_NODE_LOGIT) {
        int k = (int)(i - ct_graph_logit_node(g, 0));
        char *label = g->logits[k].label ? g->logits[k].label : "";
        size_t n = strlen(label) + 64;
        char *c = malloc(n);
        if (c) {
            snprintf(c, n, "Output \"%s\" (p=%.3f)", label, (double)g->logits[k].prob);
            sb_json_str(b, c);
            free(c);
        } else {
            b->oom = 1;
        }
    } else {
        sb_json_str(b, g->node_label && g->node_label[i] ? g->node_label[i] : "");
    }
    sb_str(b, ", \"influence\": ");
    if (ni.kind == CT_NODE_LOGIT || !g->node_influence) sb_str(b, "null");
    else sb_float(b, g->node_influence[i]);
    sb_str(b, ", \"activation\": ");
    if (ni.kind == CT_NODE_FEATURE) sb_float(b, g->activation[ni.active]);
    else sb_str(b, "null");
    sb_str(b, "}");
}

// The metadata object; full adds the optional fields a graph file carries (graph-metadata.json
// entries hold only the index fields).
static void write_metadata(sbuf *b, const ct_graph *g, const ct_json_opts *o, const char *indent, int full) {
    const char *scan = o && o->scan ? o->scan : g->scan[0] ? g->scan : "ctrace";
    sb_printf(b, "{\n%s  \"slug\": ", indent);
    sb_json_str(b, o && o->slug ? o->slug : "graph");
    sb_printf(b, ",\n%s  \"scan\": ", indent);
    sb_json_str(b, scan);
    sb_printf(b, ",\n%s  \"transcoder_list\": [],\n%s  \"prompt_tokens\": [", indent, indent);
    for (int t = 0; t < g->n_pos; t++) {
        if (t) sb_str(b, ", ");
        char id[16];
        snprintf(id, sizeof id, "%d", g->tokens[t]);
        sb_json_str(b, g->token_text && g->token_text[t] ? g->token_text[t] : id);
    }
    sb_printf(b, "],\n%s  \"prompt\": ", indent);
    sb_json_str(b, g->prompt);
    sb_printf(b, ",\n%s  \"node_threshold\": ", indent);
    if (g->settings.node_threshold >= 0) sb_double(b, g->settings.node_threshold);
    else sb_str(b, "null");
    sb_printf(b, ",\n%s  \"schema_version\": 1", indent);
    if (full) {
        sb_printf(b, ",\n%s  \"info\": {\"generator\": {\"name\": \"ctrace\", \"version\": \"%s\"}}", indent, CT_VERSION);
        sb_printf(b, ",\n%s  \"generation_settings\": {\"max_n_logits\": %d, \"desired_logit_prob\": ", indent,
                  g->settings.max_n_logits);
        sb_double(b, g->settings.desired_logit_prob);
        sb_printf(b, ", \"batch_size\": %d, \"max_feature_nodes\": %lld, \"update_interval\": %d}", g->settings.batch_size,
                  (long long)g->settings.max_feature_nodes, g->settings.update_interval);
        sb_printf(b, ",\n%s  \"pruning_settings\": {\"node_threshold\": ", indent);
        sb_double(b, g->settings.node_threshold);
        sb_str(b, ", \"edge_threshold\": ");
        sb_double(b, g->settings.edge_threshold);
        sb_str(b, "}");
        if (o && o->source_set) {
            sb_printf(b, ",\n%s  \"feature_details\": {\"neuronpedia_source_set\": ", indent);
            sb_json_str(b, o->source_set);
            sb_str(b, "}");
        }
    }
    sb_printf(b, "\n%s}", indent);
}

static ct_status check_slug(const char *slug, ct_err *err) {
    if (!slug || !*slug) return ct_fail(err, CT_STATUS_BAD_ARG, "save_json: expected a non-empty slug");
    for (const char *p = slug; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return ct_fail(err, CT_STATUS_BAD_ARG, "save_json: slug '%s' may hold only letters, digits, '-', '_' and '.'", slug);
    return CT_OK;
}

// An edge's place in the order graph JSON writes links in: its target's row, then its source.
static int64_t row_of(const ct_graph *g, int64_t node) {
    return node < g->n_selected ? node : g->n_selected + (node - ct_graph_logit_node(g, 0));
}

// The JSON text of a pruned graph p into b.
static ct_status json_text(const ct_graph *p, const ct_json_opts *o, sbuf *b, ct_err *err) {
    int64_t N = p->n_nodes;
    uint8_t *used = calloc((size_t)N + 1, 1);
    if (!used) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    // written nodes: on a kept edge, plus every token and logit node
    for (int64_t r = 0; r < ct_graph_n_rows(p); r++) {
        const float *row = p->adj + (size_t)r * N;
        for (int64_t c = 0; c < N; c++)
            if (row[c] != 0.0f) used[ct_graph_row_node(p, r)] = used[c] = 1;
    }
    for (int64_t i = ct_graph_token_node(p, 0); i < N; i++) used[i] = 1;
    sb_str(b, "{\n  \"metadata\": ");
    write_metadata(b, p, o, "  ", 1);
    // the viewers' state (pins, supernodes) as read from a graph JSON, else circuit-tracer's empty
    // one (compact, as a read one is written back)
    sb_str(b, ",\n  \"qParams\": ");
    sb_str(b, p->qparams ? p->qparams : "{\"pinnedIds\":[],\"supernodes\":[],\"linkType\":\"both\",\"clickedId\":\"\",\"sg_pos\":\"\"}");
    if (p->qk_json) {   // ctrace's own: heads' QK splits, for its viewer
        sb_str(b, ",\n  \"qk\": ");
        sb_str(b, p->qk_json);
    }
    sb_str(b, ",\n  \"nodes\": [\n");
    int first = 1;
    int64_t l0 = ct_graph_logit_node(p, 0);
    for (int64_t i = 0; i < N; i++) {
        if (!used[i]) continue;
        if (!first) sb_str(b, ",\n");
        first = 0;
        write_node(b, p, i, i == l0);
    }
    sb_str(b, "\n  ],\n  \"links\": [\n");
    first = 1;
    int64_t k = 0;   // the next edge split by heads (p->head_edges: in this order)
    for (int64_t r = 0; r < ct_graph_n_rows(p); r++) {
        const float *row = p->adj + (size_t)r * N;
        int64_t target = ct_graph_row_node(p, r);
        char t[64];
        ct_graph_node_id(p, target, t, sizeof t);
        for (int64_t c = 0; c < N; c++) {
            if (row[c] == 0.0f) continue;
            char s[64];
            ct_graph_node_id(p, c, s, sizeof s);
            sb_printf(b, "%s    {\"source\": \"%s\", \"target\": \"%s\", \"weight\": ", first ? "" : ",\n", s, t);
            sb_float(b, row[c]);
            while (k < p->n_head_edges && (row_of(p, p->head_edges[k].target) < r ||
                                           (row_of(p, p->head_edges[k].target) == r && p->head_edges[k].source < c)))
                k++;   // a split edge with no link (weight 0): nothing to write it on
            const ct_head_edge *e = k < p->n_head_edges ? &p->head_edges[k] : NULL;
            if (e && e->target == target && e->source == c) {   // extra fields the viewers may ignore
                sb_str(b, ", \"heads\": [");
                for (int i = 0; i < e->n; i++) {
                    sb_printf(b, "%s{\"layer\": %d, \"head\": %d, \"weight\": ", i ? ", " : "", e->layer[i], e->head[i]);
                    sb_float(b, e->value[i]);
                    sb_str(b, "}");
                }
                sb_str(b, "], \"residual\": ");
                sb_float(b, e->residual);
                sb_str(b, ", \"multi_hop\": ");
                sb_float(b, e->multi);
                k++;
            }
            sb_str(b, "}");
            first = 0;
        }
    }
    sb_str(b, "\n  ]\n}\n");
    free(used);
    return b->oom ? ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a graph JSON of %lld nodes", (long long)N) : CT_OK;
}

// The JSON of g into b: a full graph is pruned with the settings' thresholds first.
static ct_status graph_json(const ct_graph *g, const ct_json_opts *o, sbuf *b, ct_err *err) {
    ct_status rc = check_slug(o ? o->slug : NULL, err);
    if (rc) return rc;
    ct_graph *p = NULL;
    if (!g->node_mask) {
        double nt = g->settings.node_threshold >= 0 ? g->settings.node_threshold : 0.8;
        double et = g->settings.edge_threshold >= 0 ? g->settings.edge_threshold : 0.98;
        if ((rc = ct_graph_prune(&p, g, nt, et, err))) return rc;
    }
    rc = json_text(p ? p : g, o, b, err);
    ct_graph_free(p);
    return rc;
}

ct_status ct_graph_json(const ct_graph *g, const ct_json_opts *o, char **out, size_t *n, ct_err *err) {
    *out = NULL;
    *n = 0;
    sbuf b = {0};
    ct_status rc = graph_json(g, o, &b, err);
    if (rc) {
        free(b.s);
        return rc;
    }
    *out = b.s;
    *n = b.n;
    return CT_OK;
}

// Streams the text into the file through a 1 MiB buffer: memory stays flat whatever the size.
// prefix and suffix (may be NULL) wrap it; with them the JSON is escaped for a <script> element.
static ct_status save_streamed(ct_ctx *ctx, const ct_graph *g, const char *path, const ct_json_opts *o, const char *prefix,
                               const char *suffix, ct_err *err) {
    ct_status rc = check_slug(o ? o->slug : NULL, err);
    if (rc) return rc;
    ct_wfile w;
    if ((rc = ct_wfile_open(ctx, &w, path, err))) return rc;
    char *iobuf = malloc(1 << 20);
    if (iobuf) setvbuf(w.f, iobuf, _IOFBF, 1 << 20);
    if (prefix) fputs(prefix, w.f);
    sbuf b = {.f = w.f, .script = prefix || suffix};
    rc = graph_json(g, o, &b, err);
    if (suffix) fputs(suffix, w.f);
    if (rc) ct_wfile_abort(&w);
    else rc = ct_wfile_commit(&w, err);
    free(iobuf);   // after the stream is closed
    return rc;
}

ct_status ct_graph_save_json(ct_ctx *ctx, const ct_graph *g, const char *path, const ct_json_opts *o, ct_err *err) {
    return save_streamed(ctx, g, path, o, NULL, NULL, err);
}

ct_status ct_graph_save_page(ct_ctx *ctx, const ct_graph *g, const char *path, const ct_json_opts *o, const char *prefix,
                             const char *suffix, ct_err *err) {
    return save_streamed(ctx, g, path, o, prefix ? prefix : "", suffix ? suffix : "", err);
}

// Puts entry (taken: freed here) into dir/graph-metadata.json in place of the one with its slug,
// else at the end.
static ct_status upsert_entry(ct_ctx *ctx, const char *dir, const char *slug_of_entry, cJSON *entry, ct_err *err) {
    ct_status rc;
    char path[4200];
    snprintf(path, sizeof path, "%s/graph-metadata.json", dir);
    cJSON *root = NULL;
    char *text = NULL;
    size_t len = 0;
    if (access(path, F_OK) == 0) {
        if ((rc = ct_read_file(ctx, path, &text, &len, (size_t)1 << 32, err))) {
            cJSON_Delete(entry);
            return rc;
        }
        root = cJSON_ParseWithLength(text, len);
        free(text);
        if (!cJSON_IsObject(root) || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "graphs"))) {
            cJSON_Delete(root), cJSON_Delete(entry);
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: expected an object with a \"graphs\" array", path);
        }
    } else {
        root = cJSON_CreateObject();
        if (root) cJSON_AddItemToObject(root, "graphs", cJSON_CreateArray());
    }
    cJSON *graphs = root ? cJSON_GetObjectItemCaseSensitive(root, "graphs") : NULL;
    if (!entry || !graphs) {
        cJSON_Delete(root), cJSON_Delete(entry);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    int replaced = 0, i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, graphs) {
        const cJSON *slug = cJSON_GetObjectItemCaseSensitive(it, "slug");
        if (cJSON_IsString(slug) && strcmp(slug->valuestring, slug_of_entry) == 0) {
            cJSON_ReplaceItemInArray(graphs, i, entry);
            replaced = 1;
            break;
        }
        i++;
    }
    if (!replaced) cJSON_AddItemToArray(graphs, entry);
    // indent 2, one entry per line
    sbuf ob = {0};
    sb_str(&ob, "{\n  \"graphs\": [");
    i = 0;
    cJSON_ArrayForEach(it, graphs) {
        char *e = cJSON_PrintUnformatted(it);
        if (!e) ob.oom = 1;
        sb_str(&ob, i++ ? ",\n    " : "\n    ");
        sb_str(&ob, e ? e : "");
        free(e);
    }
    sb_str(&ob, "\n  ]\n}\n");
    cJSON_Delete(root);
    rc = sb_save(ctx, &ob, path, err);
    free(ob.s);
    return rc;
}

ct_status ct_graph_metadata_upsert(ct_ctx *ctx, const ct_graph *g, const char *dir, const ct_json_opts *o, ct_err *err) {
    ct_status rc = check_slug(o ? o->slug : NULL, err);
    if (rc) return rc;
    sbuf b = {0};
    write_metadata(&b, g, o, "", 0);
    cJSON *entry = b.oom ? NULL : cJSON_Parse(b.s);
    free(b.s);
    if (!entry) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    return upsert_entry(ctx, dir, o->slug, entry, err);
}

static const char *jstr(const cJSON *o, const char *key);

ct_status ct_graph_metadata_add_file(ct_ctx *ctx, const char *path, ct_err *err) {
    char *text = NULL;
    size_t len = 0;
    ct_status rc = ct_read_file(ctx, path, &text, &len, (size_t)1 << 32, err);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    cJSON *md = root ? cJSON_DetachItemFromObjectCaseSensitive(root, "metadata") : NULL;
    cJSON_Delete(root);
    const char *slug = md ? jstr(md, "slug") : NULL;
    if (!cJSON_IsObject(md) || !slug) {
        cJSON_Delete(md);
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: expected a graph JSON with a metadata object naming its slug", path);
    }
    char dir[4096];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    if ((rc = check_slug(slug, err))) {
        cJSON_Delete(md);
        return rc;
    }
    // the entry: the fields write_metadata writes first, without those only the graph JSON has
    static const char *const graph_only[] = {"info", "generation_settings", "pruning_settings", "feature_details", NULL};
    for (int i = 0; graph_only[i]; i++) cJSON_DeleteItemFromObjectCaseSensitive(md, graph_only[i]);
    return upsert_entry(ctx, dir, slug, md, err);
}

// ---------------------------------------------------------------------------------------------
// Reading graph JSON

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jint(const cJSON *o, const char *key, long long *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15) return 0;
    *out = (long long)v->valuedouble;
    return 1;
}

// A decimal integer in [lo, hi] that is all of s (metadata fields, layer names); 0 otherwise.
static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

// The most layers a graph file may name (files name a model's layers; no model has this many).
#define GRAPH_MAX_LAYERS 100000

typedef struct {
    const char *id;
    int kind, layer, pos;
    long long feature;   // transcoder index, token id or vocab id
    double activation, influence, prob;
    const char *clerp;
} json_node;

static int cmp_json_node(const void *x, const void *y) {
    const json_node *a = x, *b = y;
    if (a->kind != b->kind) return a->kind - b->kind;
    if (a->layer != b->layer) return a->layer - b->layer;
    if (a->pos != b->pos) return a->pos - b->pos;
    return a->feature < b->feature ? -1 : a->feature > b->feature;
}

static int cmp_id(const void *x, const void *y) {
    return strcmp(((const json_node *)x)->id, ((const json_node *)y)->id);
}

static ct_status bad(ct_err *err, const char *path, const char *what, int i) {
    return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: node %d: %s", path, i + 1, what);
}

static int finite_num(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) && fabs(x->valuedouble) <= FLT_MAX;
}

static int count_num(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble <= INT_MAX && x->valuedouble == floor(x->valuedouble);
}

// A "qk" array as ctrace writes it: heads' QK splits, each {layer, head, query, key (counts), score,
// prob (numbers), pairs: [{query, key (node ids), value, shift (numbers)}, ...]}. what names it.
static ct_status check_qk(const cJSON *qk, const char *what, ct_err *err) {
    if (!cJSON_IsArray(qk)) return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: expected a list of heads' QK splits", what);
    int i = 0;
    const cJSON *q;
    cJSON_ArrayForEach(q, qk) {
        i++;
        const cJSON *pairs = cJSON_GetObjectItemCaseSensitive(q, "pairs");
        if (!cJSON_IsObject(q) || !count_num(q, "layer") || !count_num(q, "head") || !count_num(q, "query") ||
            !count_num(q, "key") || !finite_num(q, "score") || !finite_num(q, "prob") || !cJSON_IsArray(pairs))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: entry %d: expected {layer, head, query, key: counts; score, prob: "
                           "numbers; pairs: a list}", what, i);
        int k = 0;
        const cJSON *p;
        cJSON_ArrayForEach(p, pairs) {
            k++;
            if (!cJSON_IsObject(p) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(p, "query")) ||
                !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(p, "key")) || !finite_num(p, "value") || !finite_num(p, "shift"))
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: entry %d, pair %d: expected {query, key: node ids; value, "
                               "shift: numbers}", what, i, k);
        }
    }
    return CT_OK;
}

// A link's split by heads as graph JSON writes it ("heads": [{"layer", "head", "weight"}, ...],
// "residual", "multi_hop") into g->head_edges (grown as needed), for the edge target <- source.
static ct_status read_link_heads(ct_graph *g, const cJSON *link, const cJSON *hs, int64_t target, int64_t source,
                                 const char *path, int li, ct_err *err) {
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(link, "residual"), *mh = cJSON_GetObjectItemCaseSensitive(link, "multi_hop");
    int n = cJSON_IsArray(hs) ? cJSON_GetArraySize(hs) : -1;
    if (n < 0 || n > CT_EDGE_HEADS_MAX || !finite_num(link, "residual") || !finite_num(link, "multi_hop"))
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: link %d: heads must be a list of at most %d heads (found %s of %d), "
                       "with residual and multi_hop finite numbers", path, li + 1, CT_EDGE_HEADS_MAX,
                       n < 0 ? "no list" : "a list", n < 0 ? 0 : n);
    if ((g->n_head_edges & (g->n_head_edges - 1)) == 0) {   // 0, 1, 2, 4, ...: double the room
        ct_head_edge *m = realloc(g->head_edges, sizeof *m * (size_t)(g->n_head_edges ? 2 * g->n_head_edges : 1));
        if (!m) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        g->head_edges = m;
    }
    ct_head_edge *e = &g->head_edges[g->n_head_edges];
    *e = (ct_head_edge){target, source, (float)res->valuedouble, (float)mh->valuedouble, 0, {0}, {0}, {0}};
    const cJSON *h;
    cJSON_ArrayForEach(h, hs) {
        long long layer = -1, head = -1;
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(h, "weight");
        int max_head = g->n_heads > 0 ? g->n_heads - 1 : (1 << 16) - 1;   // a graph JSON does not say how many
        if (!jint(h, "layer", &layer) || !jint(h, "head", &head) || !finite_num(h, "weight") || layer < 0 ||
            layer >= g->n_layers || head < 0 || head > max_head)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: link %d: head %d: expected layer (0..%d), head (0..%d) and a finite "
                           "weight; found layer %lld, head %lld", path, li + 1, e->n + 1, g->n_layers - 1, max_head, layer, head);
        e->layer[e->n] = (int32_t)layer, e->head[e->n] = (int32_t)head, e->value[e->n] = (float)w->valuedouble;
        e->n++;
    }
    g->n_head_edges++;
    return CT_OK;
}

typedef struct { int64_t row, source, i; } edge_key;   // an edge's place, and its record's index

static int cmp_edge_key(const void *x, const void *y) {
    const edge_key *a = x, *b = y;
    if (a->row != b->row) return a->row < b->row ? -1 : 1;
    if (a->source != b->source) return a->source < b->source ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

// g->head_edges in the adjacency's order, a link given twice kept once (its last, as its weight).
static ct_status sort_head_edges(ct_graph *g, ct_err *err) {
    int64_t n = g->n_head_edges, w = 0;
    if (n < 2) return CT_OK;
    edge_key *k = malloc(sizeof *k * (size_t)n);
    ct_head_edge *e = malloc(sizeof *e * (size_t)n);
    if (!k || !e) {
        free(k), free(e);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) k[i] = (edge_key){row_of(g, g->head_edges[i].target), g->head_edges[i].source, i};
    qsort(k, (size_t)n, sizeof *k, cmp_edge_key);
    for (int64_t i = 0; i < n; i++) {
        if (w > 0 && k[i].row == k[i - 1].row && k[i].source == k[i - 1].source) w--;
        e[w++] = g->head_edges[k[i].i];
    }
    free(g->head_edges), free(k);
    g->head_edges = e, g->n_head_edges = w;
    return CT_OK;
}

ct_status ct_graph_load_json(ct_ctx *ctx, ct_graph **out, const char *path, ct_err *err) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    ct_status rc = ct_read_file(ctx, path, &text, &len, (size_t)1 << 32, err);
    if (rc) return rc;
    rc = ct_graph_parse_json(out, text, len, path, err);
    free(text);
    return rc;
}

ct_status ct_graph_parse_json(ct_graph **out, const char *text, size_t len, const char *path, ct_err *err) {
    *out = NULL;
    ct_status rc = CT_OK;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: not valid JSON", path);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(root, "nodes");
    const cJSON *links = cJSON_GetObjectItemCaseSensitive(root, "links");
    const cJSON *ptoks = cJSON_GetObjectItemCaseSensitive(meta, "prompt_tokens");
    if (!cJSON_IsObject(meta) || !cJSON_IsArray(nodes) || !cJSON_IsArray(links) || !cJSON_IsArray(ptoks)) {
        cJSON_Delete(root);
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: expected metadata (with prompt_tokens), nodes and links", path);
    }
    int n = cJSON_GetArraySize(nodes), T = cJSON_GetArraySize(ptoks);
    json_node *jn = calloc((size_t)n + 1, sizeof *jn);
    ct_graph *g = calloc(1, sizeof *g);
    if (!jn || !g) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    int i = 0, L = -1, K = 0, S = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, nodes) {
        json_node *x = &jn[i];
        const char *type = jstr(it, "feature_type"), *layer = jstr(it, "layer");
        long long ctx_idx, feature;
        x->id = jstr(it, "node_id");
        if (!x->id || !type || !layer || !jint(it, "ctx_idx", &ctx_idx) || !jint(it, "feature", &feature) || ctx_idx < 0 || ctx_idx >= T) {
            rc = bad(err, path, "expected node_id, feature_type, layer, feature and ctx_idx within the prompt", i);
            goto done;
        }
        x->pos = (int)ctx_idx;
        x->clerp = jstr(it, "clerp");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "activation");
        x->activation = cJSON_IsNumber(v) ? v->valuedouble : 0.0;
        v = cJSON_GetObjectItemCaseSensitive(it, "influence");
        x->influence = cJSON_IsNumber(v) ? v->valuedouble : 0.0;
        v = cJSON_GetObjectItemCaseSensitive(it, "token_prob");
        x->prob = cJSON_IsNumber(v) ? v->valuedouble : 0.0;
        long long lv = -1;
        if (strcmp(type, "embedding") != 0 && !parse_int(layer, 0, GRAPH_MAX_LAYERS + 1, &lv)) {
            rc = bad(err, path, "expected a layer of 0..100001 (a decimal integer in a string)", i);
            goto done;
        }
        int l = (int)lv;
        if (strcmp(type, "cross layer transcoder") == 0) {
            long long idx;   // the index is in the node id: {layer}_{index}_{pos}
            if (sscanf(x->id, "%*d_%lld_", &idx) != 1 || idx < 0 || idx > INT32_MAX) {
                rc = bad(err, path, "a feature node_id must read {layer}_{index}_{position} with an index of 0..2147483647", i);
                goto done;
            }
            *x = (json_node){x->id, CT_NODE_FEATURE, l, x->pos, idx, x->activation, x->influence, 0, x->clerp};
            S++;
        } else if (strcmp(type, "mlp reconstruction error") == 0) {
            x->kind = CT_NODE_ERROR, x->layer = l;
        } else if (strcmp(type, "embedding") == 0) {
            long long tok;
            if (sscanf(x->id, "E_%lld_", &tok) != 1 || tok < 0 || tok > INT_MAX) {
                rc = bad(err, path, "an embedding node_id must read E_{token}_{position} with a token id of 0..2147483647", i);
                goto done;
            }
            x->kind = CT_NODE_TOKEN, x->layer = -1, x->feature = tok;
        } else if (strcmp(type, "logit") == 0) {
            x->kind = CT_NODE_LOGIT, x->layer = l, x->feature = feature;
            L = l - 1;
            K++;
        } else {
            rc = bad(err, path, "unknown feature_type", i);
            goto done;
        }
        i++;
    }
    if (L < 0 || K == 0) {
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: expected at least one logit node (of layer 1 or above)", path);
        goto done;
    }
    for (int k = 0; k < n; k++)   // the logit nodes name the layers: features lie below them
        if (jn[k].kind == CT_NODE_FEATURE && jn[k].layer >= L) {
            rc = bad(err, path, "a feature's layer must be below the graph's layers (the logit nodes' layer minus one)", k);
            goto done;
        }
    // features sorted by (layer, position, index); logits in file order
    json_node *feats = malloc(sizeof(json_node) * (size_t)(S + 1));
    if (!feats) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    int s = 0;
    for (int k = 0; k < n; k++)
        if (jn[k].kind == CT_NODE_FEATURE) feats[s++] = jn[k];
    qsort(feats, (size_t)S, sizeof *feats, cmp_json_node);
    g->n_pos = T, g->n_layers = L, g->n_logits = K, g->n_selected = S, g->n_active = S;
    g->n_nodes = S + (int64_t)(L + 1) * T + K;
    int64_t N = g->n_nodes;
    if ((uint64_t)N > SIZE_MAX / sizeof(float) / ((size_t)S + (size_t)K)) {
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: %d feature and logit rows of %lld nodes (%d layers, %d positions) "
                     "exceed the address space", path, S + K, (long long)N, L, T);
        free(feats);
        goto done;
    }
    g->tokens = calloc((size_t)T + 1, sizeof(int));
    g->token_text = calloc((size_t)T + 1, sizeof(char *));
    g->active = malloc(sizeof(int32_t) * 3 * (size_t)(S + 1));
    g->activation = malloc(sizeof(float) * (size_t)(S + 1));
    g->selected = malloc(sizeof(int64_t) * (size_t)(S + 1));
    g->logits = calloc((size_t)K, sizeof(ct_logit_target));
    g->adj = calloc((size_t)(S + K) * (size_t)N, sizeof(float));
    g->node_mask = calloc((size_t)N, 1);
    g->node_influence = calloc((size_t)N, sizeof(float));
    g->node_label = calloc((size_t)N, sizeof(char *));
    if (!g->tokens || !g->token_text || !g->active || !g->activation || !g->selected || !g->logits || !g->adj ||
        !g->node_mask || !g->node_influence || !g->node_label) {
        free(feats);
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a graph of %lld nodes", (long long)N);
        goto done;
    }
    for (int k = 0; k < S; k++) {
        int32_t *a = g->active + 3 * k;
        a[0] = feats[k].layer, a[1] = feats[k].pos, a[2] = (int32_t)feats[k].feature;
        g->activation[k] = (float)feats[k].activation;
        g->selected[k] = k;
    }
    free(feats);
    // node ids -> node index, via a sorted table of the ids
    int k_logit = 0;
    for (int k = 0; k < n; k++) {
        json_node *x = &jn[k];
        int64_t idx = -1;
        switch (x->kind) {
        case CT_NODE_FEATURE: idx = ct_graph_feature_node(g, x->layer, x->pos, x->feature); break;
        case CT_NODE_ERROR:
            if (x->layer >= 0 && x->layer < L) idx = ct_graph_error_node(g, x->layer, x->pos);
            break;
        case CT_NODE_TOKEN:
            idx = ct_graph_token_node(g, x->pos);
            g->tokens[x->pos] = (int)x->feature;
            break;
        case CT_NODE_LOGIT:
            idx = ct_graph_logit_node(g, k_logit);
            g->logits[k_logit] = (ct_logit_target){x->feature, (float)x->prob, NULL, NULL};
            k_logit++;
            break;
        }
        if (idx < 0) {
            rc = bad(err, path, "layer outside the graph's layers", k);
            goto done;
        }
        if (g->node_mask[idx]) {
            rc = bad(err, path, "the same node as an earlier one (a node appears once)", k);
            goto done;
        }
        g->node_mask[idx] = 1;
        g->node_influence[idx] = (float)x->influence;
        if (x->clerp && *x->clerp && x->kind != CT_NODE_LOGIT && !(g->node_label[idx] = strdup(x->clerp))) {
            rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
            goto done;
        }
        // logit labels: the token inside Output "..." (p=...)
        if (x->kind == CT_NODE_LOGIT) {
            const char *c = x->clerp ? x->clerp : "";
            const char *q1 = strchr(c, '"'), *q2 = strrchr(c, '"');
            size_t ln = q1 && q2 > q1 ? (size_t)(q2 - q1 - 1) : 0;
            char *lab = malloc(ln + 1);
            if (!lab) {
                rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
                goto done;
            }
            if (ln) memcpy(lab, q1 + 1, ln);
            lab[ln] = 0;
            g->logits[k_logit - 1].label = lab;
        }
        x->feature = idx;   // from here on: the node index
    }
    // links: node ids looked up in the nodes sorted by id
    qsort(jn, (size_t)n, sizeof *jn, cmp_id);
    int li = 0;
    cJSON_ArrayForEach(it, links) {
        const char *src = jstr(it, "source"), *dst = jstr(it, "target");
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(it, "weight");
        json_node ks = {.id = src}, kt = {.id = dst};
        const json_node *fs = src ? bsearch(&ks, jn, (size_t)n, sizeof *jn, cmp_id) : NULL;
        const json_node *ft = dst ? bsearch(&kt, jn, (size_t)n, sizeof *jn, cmp_id) : NULL;
        int64_t si = fs ? fs->feature : -1, ti = ft ? ft->feature : -1;
        float *row = ti >= 0 ? (float *)ct_graph_row(g, ti) : NULL;
        if (si < 0 || !row || !cJSON_IsNumber(w)) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: link %d: expected a source naming a node, a target naming a "
                         "feature or logit node, and a weight", path, li + 1);
            goto done;
        }
        row[si] = (float)w->valuedouble;
        const cJSON *hs = cJSON_GetObjectItemCaseSensitive(it, "heads");
        if (hs && (rc = read_link_heads(g, it, hs, ti, si, path, li, err))) goto done;
        li++;
    }
    if ((rc = sort_head_edges(g, err))) goto done;
    // prompt and settings
    int t = 0;
    cJSON_ArrayForEach(it, ptoks) {   // in one pass: an array is a list, its items are not indexed
        g->token_text[t++] = strdup(cJSON_IsString(it) ? it->valuestring : "");
    }
    g->prompt = strdup(jstr(meta, "prompt") ? jstr(meta, "prompt") : "");
    snprintf(g->scan, sizeof g->scan, "%s", jstr(meta, "scan") ? jstr(meta, "scan") : "");
    // the viewers' state, kept as it is (an object only: it is written back verbatim)
    const cJSON *qp = cJSON_GetObjectItemCaseSensitive(root, "qParams");
    if (cJSON_IsObject(qp) && !(g->qparams = cJSON_PrintUnformatted(qp))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    const cJSON *qk = cJSON_GetObjectItemCaseSensitive(root, "qk");   // ctrace's heads' QK splits, kept as they are
    if (qk && !rc) {
        char what[300];
        snprintf(what, sizeof what, "%s: qk", path);
        if (!(rc = check_qk(qk, what, err)) && !(g->qk_json = cJSON_PrintUnformatted(qk)))
            rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    g->settings.node_threshold = g->settings.edge_threshold = -1;
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(meta, "node_threshold");
    if (cJSON_IsNumber(nt)) g->settings.node_threshold = nt->valuedouble;
    const cJSON *gs = cJSON_GetObjectItemCaseSensitive(meta, "generation_settings");
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(meta, "pruning_settings");
    long long v;
    if (jint(gs, "max_n_logits", &v)) g->settings.max_n_logits = (int)v;
    if (jint(gs, "batch_size", &v)) g->settings.batch_size = (int)v;
    if (jint(gs, "max_feature_nodes", &v)) g->settings.max_feature_nodes = v;
    if (jint(gs, "update_interval", &v)) g->settings.update_interval = (int)v;
    const cJSON *dv = cJSON_GetObjectItemCaseSensitive(gs, "desired_logit_prob");
    if (cJSON_IsNumber(dv)) g->settings.desired_logit_prob = dv->valuedouble;
    dv = cJSON_GetObjectItemCaseSensitive(ps, "edge_threshold");
    if (cJSON_IsNumber(dv)) g->settings.edge_threshold = dv->valuedouble;
    for (t = 0; t < T; t++)
        if (!g->token_text[t]) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!g->prompt) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
done:
    cJSON_Delete(root);
    free(jn);
    if (rc) {
        ct_graph_free(g);
        g = NULL;
    }
    *out = g;
    return rc;
}

// ---------------------------------------------------------------------------------------------
// safetensors

// Row r of the (N, N) adjacency as circuit-tracer stores it (zero for error and token nodes).
static void adjacency_row(void *ctx, int64_t r, float *out) {
    const ct_graph *g = ctx;
    const float *row = ct_graph_row(g, r);
    if (row) memcpy(out, row, sizeof(float) * (size_t)g->n_nodes);
    else memset(out, 0, sizeof(float) * (size_t)g->n_nodes);
}

ct_status ct_graph_save(ct_ctx *ctx, const ct_graph *g, const char *path, ct_err *err) {
    if (g->node_mask)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "save: only full graphs are saved as safetensors (this one is pruned)");
    int64_t N = g->n_nodes, S = g->n_selected, NA = g->n_active, T = g->n_pos, K = g->n_logits;
    int64_t *active = malloc(sizeof(int64_t) * 3 * (size_t)(NA + 1)), *tokens = malloc(sizeof(int64_t) * (size_t)(T + 1));
    int64_t *logit_tokens = malloc(sizeof(int64_t) * (size_t)(K + 1));
    float *probs = malloc(sizeof(float) * (size_t)(K + 1));
    ct_status rc = active && tokens && logit_tokens && probs ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        for (int64_t i = 0; i < 3 * NA; i++) active[i] = g->active[i];
        for (int64_t t = 0; t < T; t++) tokens[t] = g->tokens[t];
        for (int64_t k = 0; k < K; k++) logit_tokens[k] = g->logits[k].vocab_id, probs[k] = g->logits[k].prob;
        ct_st_entry e[] = {
            {.name = "adjacency_matrix", .dtype = CT_DT_F32, .ndim = 2, .shape = {N, N}, .row = adjacency_row, .ctx = (void *)g},
            {.name = "active_features", .dtype = CT_DT_I64, .ndim = 2, .shape = {NA, 3}, .i64 = active},
            {.name = "selected_features", .dtype = CT_DT_I64, .ndim = 1, .shape = {S}, .i64 = g->selected},
            {.name = "activation_values", .dtype = CT_DT_F32, .ndim = 1, .shape = {NA}, .data = g->activation},
            {.name = "logit_tokens", .dtype = CT_DT_I64, .ndim = 1, .shape = {K}, .i64 = logit_tokens},
            {.name = "logit_probabilities", .dtype = CT_DT_F32, .ndim = 1, .shape = {K}, .data = probs},
            {.name = "input_tokens", .dtype = CT_DT_I64, .ndim = 1, .shape = {T}, .i64 = tokens},
        };
        // metadata: strings only; logit labels and token texts as JSON arrays
        cJSON *labels = cJSON_CreateArray(), *texts = cJSON_CreateArray();
        for (int k = 0; k < K; k++) cJSON_AddItemToArray(labels, cJSON_CreateString(g->logits[k].label ? g->logits[k].label : ""));
        for (int t = 0; t < T; t++)
            cJSON_AddItemToArray(texts, cJSON_CreateString(g->token_text && g->token_text[t] ? g->token_text[t] : ""));
        char *lab = cJSON_PrintUnformatted(labels), *txt = cJSON_PrintUnformatted(texts);
        cJSON_Delete(labels), cJSON_Delete(texts);
        char n_layers[16], d_model[16], vocab[16], n_heads[16], n_kv[16], d_head[16], d_mlp[16], settings[512];
        snprintf(n_layers, sizeof n_layers, "%d", g->n_layers);
        snprintf(d_model, sizeof d_model, "%d", g->d_model);
        snprintf(vocab, sizeof vocab, "%d", g->vocab_size);
        snprintf(n_heads, sizeof n_heads, "%d", g->n_heads);
        snprintf(n_kv, sizeof n_kv, "%d", g->n_kv_heads);
        snprintf(d_head, sizeof d_head, "%d", g->d_head);
        snprintf(d_mlp, sizeof d_mlp, "%d", g->d_mlp);
        snprintf(settings, sizeof settings,
                 "{\"max_n_logits\": %d, \"desired_logit_prob\": %.17g, \"batch_size\": %d, \"max_feature_nodes\": %lld, "
                 "\"update_interval\": %d}", g->settings.max_n_logits, g->settings.desired_logit_prob, g->settings.batch_size,
                 (long long)g->settings.max_feature_nodes, g->settings.update_interval);
        const char *meta[] = {"format", "ctrace-graph", "version", CT_VERSION, "input_string", g->prompt ? g->prompt : "",
                              "prompt_tokens", txt ? txt : "[]", "logit_labels", lab ? lab : "[]", "n_layers", n_layers,
                              "d_model", d_model, "vocab_size", vocab, "n_heads", n_heads, "n_key_value_heads", n_kv,
                              "d_head", d_head, "d_mlp", d_mlp, "architecture", g->architecture,
                              "scan_name", g->scan, "model_name", g->model_name,
                              "feature_input_hook", g->input_hook, "feature_output_hook", g->output_hook,
                              "generation_settings", settings};
        if (!lab || !txt) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        else rc = ct_safetensors_write(ctx, path, e, (int)(sizeof e / sizeof e[0]), meta, (int)(sizeof meta / sizeof meta[0]) / 2, err);
        free(lab), free(txt);
    }
    free(active), free(tokens), free(logit_tokens), free(probs);
    return rc;
}

static const char *meta_get(const ct_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

// Reads tensor name as n int64 values into out (malloc'ed) after checking its shape.
static ct_status get_i64(const ct_safetensors *st, const char *path, const char *name, int ndim, int64_t d0, int64_t d1,
                         int64_t **out, ct_err *err) {
    const ct_st_tensor *t = ct_safetensors_find(st, name);
    if (!t) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: no tensor %s", path, name);
    if (t->dtype != CT_DT_I64 || t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1))
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: %s: expected I64 with %d dimension(s) [%lld%s], found %s with %d",
                       path, name, ndim, (long long)d0, ndim == 2 ? ", ..." : "", ct_dtype_name(t->dtype), t->ndim);
    size_t n = (size_t)ct_st_numel(t);
    if (!(*out = malloc(sizeof(int64_t) * (n + 1)))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    memcpy(*out, t->data, sizeof(int64_t) * n);
    return CT_OK;
}

static ct_status get_f32(const ct_safetensors *st, const char *path, const char *name, int64_t numel, float **out,
                         ct_err *err) {
    const ct_st_tensor *t = ct_safetensors_find(st, name);
    if (!t) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: no tensor %s", path, name);
    if (ct_st_numel(t) != numel)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: %s: expected %lld values, found %lld", path, name, (long long)numel,
                       (long long)ct_st_numel(t));
    if (!(*out = malloc(sizeof(float) * (size_t)(numel + 1)))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    return ct_st_to_f32(*out, t, err);
}

ct_status ct_graph_load(ct_ctx *ctx, ct_graph **out, const char *path, ct_err *err) {
    *out = NULL;
    ct_safetensors *st = NULL;
    ct_status rc = ct_safetensors_open(ctx, &st, path, err);
    if (rc) return rc;
    ct_graph *g = calloc(1, sizeof *g);
    int64_t *tmp = NULL, *lt = NULL, *active = NULL;
    float *probs = NULL, *row = NULL;
    cJSON *labels = NULL, *texts = NULL, *gs = NULL;
    const ct_st_tensor *adj = ct_safetensors_find(st, "adjacency_matrix");
    const ct_st_tensor *af = ct_safetensors_find(st, "active_features");
    const ct_st_tensor *sf = ct_safetensors_find(st, "selected_features");
    const ct_st_tensor *it = ct_safetensors_find(st, "input_tokens");
    const ct_st_tensor *lk = ct_safetensors_find(st, "logit_tokens");
    const char *nl = meta_get(st, "n_layers");
    if (!g) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    if (!adj || !af || !sf || !it || !lk || !nl || adj->ndim != 2 || af->ndim != 2 || sf->ndim != 1 || it->ndim != 1 ||
        lk->ndim != 1) {
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: expected adjacency_matrix, active_features, selected_features, "
                     "input_tokens, logit_tokens and n_layers in the metadata", path);
        goto done;
    }
    // every count from the file is checked before any arithmetic: n_layers, positions and logits
    // become ints, and the node count must not overflow
    long long n_layers, d_model = 0, vocab = 0;
    const char *dm = meta_get(st, "d_model"), *vs = meta_get(st, "vocab_size");
    if (!parse_int(nl, 0, GRAPH_MAX_LAYERS, &n_layers) || (dm && !parse_int(dm, 0, INT_MAX, &d_model)) ||
        (vs && !parse_int(vs, 0, INT_MAX, &vocab))) {
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: metadata n_layers must be a decimal integer of 0..%d, d_model and "
                     "vocab_size of 0..%d; found n_layers '%.24s'", path, GRAPH_MAX_LAYERS, INT_MAX, nl);
        goto done;
    }
    if (it->shape[0] < 1 || it->shape[0] > INT_MAX || lk->shape[0] < 1 || lk->shape[0] > INT_MAX) {
        rc = ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: expected 1..%d input_tokens and logit_tokens, found %lld and %lld",
                     path, INT_MAX, (long long)it->shape[0], (long long)lk->shape[0]);
        goto done;
    }
    g->n_layers = (int)n_layers, g->d_model = (int)d_model, g->vocab_size = (int)vocab;
    // the model's shape (files before these keys: unknown, 0)
    int *shape[4] = {&g->n_heads, &g->n_kv_heads, &g->d_head, &g->d_mlp};
    const char *shape_keys[4] = {"n_heads", "n_key_value_heads", "d_head", "d_mlp"};
    for (int i = 0; i < 4; i++) {
        long long v = 0;
        const char *sv = meta_get(st, shape_keys[i]);
        if (sv && !parse_int(sv, 0, INT_MAX, &v)) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: metadata %s must be a decimal integer of 0..%d; found '%.24s'", path,
                         shape_keys[i], INT_MAX, sv);
            goto done;
        }
        *shape[i] = (int)v;
    }
    g->n_active = af->shape[0], g->n_selected = sf->shape[0], g->n_pos = (int)it->shape[0], g->n_logits = (int)lk->shape[0];
    // below 2^53 + 100001 * 2^31 + 2^31: no overflow
    g->n_nodes = g->n_selected + (int64_t)(g->n_layers + 1) * g->n_pos + g->n_logits;
    int64_t N = g->n_nodes;
    if (adj->shape[0] != N || adj->shape[1] != N) {
        rc = ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: adjacency_matrix is [%lld, %lld]; %lld selected features, %d layers, "
                     "%d positions and %d logits make %lld nodes", path, (long long)adj->shape[0], (long long)adj->shape[1],
                     (long long)g->n_selected, g->n_layers, g->n_pos, g->n_logits, (long long)N);
        goto done;
    }
    if ((rc = get_i64(st, path, "active_features", 2, g->n_active, 3, &active, err)) ||
        (rc = get_i64(st, path, "selected_features", 1, g->n_selected, 0, &g->selected, err)) ||
        (rc = get_f32(st, path, "activation_values", g->n_active, &g->activation, err)) ||
        (rc = get_i64(st, path, "input_tokens", 1, g->n_pos, 0, &tmp, err)) ||
        (rc = get_i64(st, path, "logit_tokens", 1, g->n_logits, 0, &lt, err)) ||
        (rc = get_f32(st, path, "logit_probabilities", g->n_logits, &probs, err)))
        goto done;
    g->active = malloc(sizeof(int32_t) * 3 * (size_t)(g->n_active + 1));
    g->tokens = malloc(sizeof(int) * (size_t)(g->n_pos + 1));
    g->token_text = calloc((size_t)g->n_pos + 1, sizeof(char *));
    g->logits = calloc((size_t)g->n_logits + 1, sizeof(ct_logit_target));
    if (!g->active || !g->tokens || !g->token_text || !g->logits) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < 3 * g->n_active; i++) {
        if (active[i] < 0 || active[i] > INT32_MAX) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: active_features holds %lld", path, (long long)active[i]);
            goto done;
        }
        g->active[i] = (int32_t)active[i];
    }
    for (int64_t i = 0; i < g->n_active; i++)
        if (g->active[3 * i] >= g->n_layers || g->active[3 * i + 1] >= g->n_pos) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: active feature %lld is at layer %d, position %d; expected layers "
                         "below %d and positions below %d", path, (long long)i, g->active[3 * i], g->active[3 * i + 1],
                         g->n_layers, g->n_pos);
            goto done;
        }
    // selected features: ascending indices whose (layer, position, index) ascend too (node lookups
    // search them)
    for (int64_t i = 0; i < g->n_selected; i++) {
        int ok = g->selected[i] >= 0 && g->selected[i] < g->n_active;
        if (ok && i) {
            const int32_t *a = g->active + 3 * g->selected[i - 1], *b = g->active + 3 * g->selected[i];
            ok = g->selected[i] > g->selected[i - 1] &&
                 (a[0] != b[0] ? a[0] < b[0] : a[1] != b[1] ? a[1] < b[1] : a[2] < b[2]);
        }
        if (!ok) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: selected_features must be ascending indices below %lld of "
                         "features in ascending (layer, position, index) order", path, (long long)g->n_active);
            goto done;
        }
    }
    for (int t = 0; t < g->n_pos; t++) {
        if (tmp[t] < 0 || tmp[t] > INT_MAX) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: input token %d is %lld; expected 0..%d", path, t, (long long)tmp[t],
                         INT_MAX);
            goto done;
        }
        g->tokens[t] = (int)tmp[t];
    }
    // the adjacency: the rows of feature and logit nodes; the others must be zero
    if (!(g->adj = malloc(sizeof(float) * (size_t)(g->n_selected + g->n_logits) * (size_t)N + 1)) ||
        !(row = malloc(sizeof(float) * (size_t)(N + 1)))) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a %lld-node graph", (long long)N);
        goto done;
    }
    if (adj->dtype != CT_DT_F32 && adj->dtype != CT_DT_F16 && adj->dtype != CT_DT_BF16) {
        rc = ct_fail(err, CT_STATUS_BAD_DTYPE, "%s: adjacency_matrix has dtype %s; expected F32, F16 or BF16", path,
                     ct_dtype_name(adj->dtype));
        goto done;
    }
    ct_mat am = {adj->data, adj->dtype, N, N, N, 1};
    for (int64_t r = 0; r < N; r++) {
        float *dst = (float *)ct_graph_row(g, r);
        ct_mat_row(&am, r, dst ? dst : row);
        for (int64_t c = 0; !dst && c < N; c++)
            if (row[c] != 0.0f) {
                rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: adjacency_matrix row %lld (an error or token node) is not zero",
                             path, (long long)r);
                goto done;
            }
    }
    labels = cJSON_Parse(meta_get(st, "logit_labels") ? meta_get(st, "logit_labels") : "[]");
    texts = cJSON_Parse(meta_get(st, "prompt_tokens") ? meta_get(st, "prompt_tokens") : "[]");
    gs = cJSON_Parse(meta_get(st, "generation_settings") ? meta_get(st, "generation_settings") : "{}");
    // labels and token texts: each array walked once (its items are a list, not indexed)
    const cJSON *l = cJSON_IsArray(labels) ? labels->child : NULL;
    for (int k = 0; k < g->n_logits; k++, l = l ? l->next : NULL) {
        g->logits[k] = (ct_logit_target){lt[k], probs[k], strdup(cJSON_IsString(l) ? l->valuestring : ""), NULL};
        if (!g->logits[k].label) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    const cJSON *s = cJSON_IsArray(texts) ? texts->child : NULL;
    for (int t = 0; t < g->n_pos && !rc; t++, s = s ? s->next : NULL) {
        if (!(g->token_text[t] = strdup(cJSON_IsString(s) ? s->valuestring : "")))
            rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    const char *v;
    g->prompt = strdup((v = meta_get(st, "input_string")) ? v : "");
    snprintf(g->scan, sizeof g->scan, "%s", (v = meta_get(st, "scan_name")) ? v : "");
    snprintf(g->model_name, sizeof g->model_name, "%s", (v = meta_get(st, "model_name")) ? v : "");
    snprintf(g->architecture, sizeof g->architecture, "%s", (v = meta_get(st, "architecture")) ? v : "");
    snprintf(g->input_hook, sizeof g->input_hook, "%s", (v = meta_get(st, "feature_input_hook")) ? v : "");
    snprintf(g->output_hook, sizeof g->output_hook, "%s", (v = meta_get(st, "feature_output_hook")) ? v : "");
    long long x;
    if (jint(gs, "max_n_logits", &x)) g->settings.max_n_logits = (int)x;
    if (jint(gs, "batch_size", &x)) g->settings.batch_size = (int)x;
    if (jint(gs, "max_feature_nodes", &x)) g->settings.max_feature_nodes = x;
    if (jint(gs, "update_interval", &x)) g->settings.update_interval = (int)x;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(gs, "desired_logit_prob");
    if (cJSON_IsNumber(d)) g->settings.desired_logit_prob = d->valuedouble;
    g->settings.node_threshold = g->settings.edge_threshold = -1;
    if (!rc && !g->prompt) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
done:
    cJSON_Delete(labels), cJSON_Delete(texts), cJSON_Delete(gs);
    free(tmp), free(lt), free(active), free(probs), free(row);
    ct_safetensors_free(st);
    if (rc) {
        ct_graph_free(g);
        g = NULL;
    }
    *out = g;
    return rc;
}

ct_status ct_graph_set_qk_json(ct_graph *g, const char *text, size_t len, ct_err *err) {
    if (!g->node_mask)
        return ct_fail(err, CT_STATUS_BAD_ARG, "graph qk: QK splits go with a pruned graph (a full graph's JSON is written "
                       "from a pruned copy)");
    cJSON *j = cJSON_ParseWithLength(text, len);
    ct_status rc = j ? check_qk(j, "graph qk", err) : ct_fail(err, CT_STATUS_BAD_FORMAT, "graph qk: not JSON");
    char *c = rc ? NULL : cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!rc && !c) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (rc) return rc;
    free(g->qk_json);
    g->qk_json = c;
    return CT_OK;
}

ct_status ct_graph_set_qparams(ct_graph *g, const char *text, size_t len, ct_err *err) {
    cJSON *j = cJSON_ParseWithLength(text, len);
    ct_status rc = cJSON_IsObject(j) ? CT_OK : ct_fail(err, CT_STATUS_BAD_FORMAT, "graph qParams: expected a JSON object");
    const cJSON *sn = NULL, *e, *top = rc ? NULL : j;
    cJSON_ArrayForEach(e, top) {
        if (!e->string || strcmp(e->string, "supernodes") != 0) continue;
        if (sn) rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "graph qParams: \"supernodes\" appears twice; expected once");
        sn = e;
    }
    if (!rc && sn && !cJSON_IsArray(sn))
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "graph qParams: supernodes must be an array of [name, node_id, ...]");
    int k = 0;
    const cJSON *list = rc ? NULL : sn;
    cJSON_ArrayForEach(e, list) {   // supernode k + 1: a name, then kept nodes, each once
        const cJSON *m;
        int i = 0;
        k++;
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) < 2) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "graph qParams: supernode %d is not [name, node_id, ...]", k);
            break;
        }
        cJSON_ArrayForEach(m, e) {
            if (!cJSON_IsString(m)) {
                rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "graph qParams: supernode %d entry %d is not a string", k, i + 1);
                break;
            }
            int64_t n = i > 0 ? ct_graph_find_node_id(g, m->valuestring) : 0;
            if (n < 0 || (i > 0 && g->node_mask && !g->node_mask[n])) {
                rc = ct_fail(err, CT_STATUS_NOT_FOUND, "graph qParams: supernode %d names node '%.64s', which this graph %s",
                             k, m->valuestring, n < 0 ? "does not have" : "pruned");
                break;
            }
            for (const cJSON *o = e->child->next; i > 0 && o != m; o = o->next)
                if (strcmp(o->valuestring, m->valuestring) == 0) {
                    rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "graph qParams: supernode %d names node '%.64s' twice", k,
                                 m->valuestring);
                    break;
                }
            if (rc) break;
            i++;
        }
        if (rc) break;
    }
    char *c = rc ? NULL : cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!rc && !c) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (rc) return rc;
    free(g->qparams);
    g->qparams = c;
    return CT_OK;
}
