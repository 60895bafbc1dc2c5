// bind_graph.c - "ctrace.Graph": an attribution graph (full, or pruned).
//
// Nodes reach Lua as tables: {index = 1-based node index (row and column of the adjacency
// tensor), node_id = the graph JSON id, kind = "feature" | "error" | "token" | "logit", layer,
// pos, feature, activation, influence (cumulative rank fraction, as graph JSON), label, ...}.
// Layers, positions and feature indices count from 0, as in node ids.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bind.h"
#include "trace/graph.h"

typedef struct {
    ct_graph *g;       // first field: ct_lua_check_box reads it
    int64_t id;        // graph_id of its node tables
} graph_box;

#define GRAPHS_BY_ID "ctrace.graphs"   // registry: weak table graph_id -> graph

static ct_graph *check_graph(lua_State *L, int idx) { return ct_lua_check_box(L, idx, CT_MT_GRAPH); }

void ct_lua_push_graph(lua_State *L, ct_graph *g) {
    static int64_t next_id = 1;
    graph_box *b = lua_newuserdata(L, sizeof *b);
    b->g = g;
    b->id = next_id++;
    luaL_getmetatable(L, CT_MT_GRAPH);
    lua_setmetatable(L, -2);
    lua_getfield(L, LUA_REGISTRYINDEX, GRAPHS_BY_ID);   // [.., ud, graphs]
    lua_pushnumber(L, (lua_Number)b->id);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

ct_graph *ct_lua_graph_by_id(lua_State *L, lua_Number id) {
    lua_getfield(L, LUA_REGISTRYINDEX, GRAPHS_BY_ID);
    lua_pushnumber(L, id);
    lua_rawget(L, -2);
    graph_box *b = luaL_testudata(L, -1, CT_MT_GRAPH);
    lua_pop(L, 2);
    return b ? b->g : NULL;
}

// Cumulative influence rank fraction of every node (the JSON "influence" field).
static const float *cumulative(lua_State *L, int idx) {
    const float *cum;
    ct_err err = {0};
    if (ct_graph_node_influence(ct_lua_check_box(L, idx, CT_MT_GRAPH), &cum, &err)) ct_lua_raise(L, &err);
    return cum;
}

static const char *kind_name(ct_node_kind k) {
    return k == CT_NODE_FEATURE ? "feature" : k == CT_NODE_ERROR ? "error" : k == CT_NODE_TOKEN ? "token" : "logit";
}

static void set_num(lua_State *L, const char *k, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

// Pushes the table of node i (0-based).
static void push_node(lua_State *L, int gi, int64_t i) {
    ct_graph *g = check_graph(L, gi);
    const float *cum = cumulative(L, gi);
    ct_node_info ni = ct_graph_node(g, i);
    char id[64];
    ct_graph_node_id(g, i, id, sizeof id);
    lua_createtable(L, 0, 10);
    set_num(L, "index", (double)(i + 1));
    set_str(L, "node_id", id);
    set_num(L, "graph_id", (double)((graph_box *)lua_touserdata(L, gi))->id);   // which graph it came from
    set_str(L, "kind", kind_name(ni.kind));
    set_num(L, "pos", ni.pos);
    if (ni.kind != CT_NODE_TOKEN) set_num(L, "layer", ni.layer);
    if (ni.kind == CT_NODE_FEATURE) {
        set_num(L, "feature", (double)ni.feature);
        set_num(L, "activation", g->activation[ni.active]);
    }
    if (ni.kind == CT_NODE_TOKEN) {
        set_num(L, "token", g->tokens[ni.pos]);
        if (g->token_text && g->token_text[ni.pos]) set_str(L, "text", g->token_text[ni.pos]);
    }
    if (ni.kind == CT_NODE_LOGIT) {
        const ct_logit_target *t = &g->logits[i - ct_graph_logit_node(g, 0)];
        set_num(L, "token", (double)t->vocab_id);
        set_num(L, "prob", t->prob);
        set_str(L, "text", t->label ? t->label : "");
    } else {
        set_num(L, "influence", cum[i]);
    }
    if (g->node_label && g->node_label[i]) set_str(L, "label", g->node_label[i]);
}

// A node argument: a node table (its index), a 1-based index, or a node_id string.
int64_t ct_lua_check_node(lua_State *L, int gi, int arg) {
    ct_graph *g = check_graph(L, gi);
    int64_t i = -1;
    if (lua_istable(L, arg)) {
        lua_getfield(L, arg, "graph_id");
        lua_Number gid = lua_tonumber(L, -1);
        lua_getfield(L, arg, "index");
        lua_Number v = lua_tonumber(L, -1);
        lua_pop(L, 2);
        if (gid != ((graph_box *)lua_touserdata(L, gi))->id)
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "the node belongs to another graph (graph_id %g)", gid);
        lua_getfield(L, arg, "node_id");
        const char *id = lua_tostring(L, -1);
        char mine[64] = "";
        if (v >= 1 && v <= (lua_Number)g->n_nodes) ct_graph_node_id(g, (int64_t)v - 1, mine, sizeof mine);
        if (!id || strcmp(id, mine) != 0)
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "node %s does not belong to this graph", id ? id : "(no node_id)");
        lua_pop(L, 1);
        i = (int64_t)v - 1;
    } else if (lua_type(L, arg) == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, arg);
        if (v != floor(v) || v < 1 || v > (lua_Number)g->n_nodes)
            ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "node index %g outside 1..%lld", v, (long long)g->n_nodes);
        i = (int64_t)v - 1;
    } else if (lua_type(L, arg) == LUA_TSTRING) {
        i = ct_graph_find_node_id(g, lua_tostring(L, arg));
        if (i < 0) ct_lua_fail(L, CT_STATUS_NOT_FOUND, "no node '%s' in this graph", lua_tostring(L, arg));
    } else {
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "expected a node (table, index or node_id), got %s", luaL_typename(L, arg));
    }
    if (g->node_mask && !g->node_mask[i])
        ct_lua_fail(L, CT_STATUS_NOT_FOUND, "node %lld was pruned from this graph", (long long)(i + 1));
    return i;
}

static int l_graph_node(lua_State *L) {
    int64_t i = ct_lua_check_node(L, 1, 2);
    push_node(L, 1, i);
    return 1;
}

// g:nodes([kind]) -> list of node tables (kept nodes of a pruned graph)
static int l_graph_nodes(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    const char *kind = luaL_optstring(L, 2, NULL);
    lua_newtable(L);
    int n = 0;
    for (int64_t i = 0; i < g->n_nodes; i++) {
        if (g->node_mask && !g->node_mask[i]) continue;
        if (kind && strcmp(kind, kind_name(ct_graph_node(g, i).kind)) != 0) continue;
        push_node(L, 1, i);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

typedef struct {
    int64_t node;
    float w;
} edge;

static int cmp_edge(const void *x, const void *y) {
    const edge *a = x, *b = y;
    float fa = fabsf(a->w), fb = fabsf(b->w);
    if (fa != fb) return fa > fb ? -1 : 1;
    return a->node < b->node ? -1 : a->node > b->node;
}

// Edges into (in = 1) or out of a node, strongest first: list of {node=, weight=}.
static int push_edges(lua_State *L, int in) {
    ct_graph *g = check_graph(L, 1);
    int64_t i = ct_lua_check_node(L, 1, 2), N = g->n_nodes;
    static const char *const allowed[] = {"n", NULL};
    ct_lua_check_opts(L, 3, in ? "edges_in" : "edges_out", allowed);
    lua_Number limit = ct_lua_opt_number(L, 3, "n", (lua_Number)N);
    edge *e = lua_newuserdata(L, sizeof(edge) * (size_t)(N + 1));
    int64_t n = 0;
    const float *row = ct_graph_row(g, i);
    if (in)
        for (int64_t j = 0; row && j < N; j++)
            if (row[j] != 0.0f) e[n++] = (edge){j, row[j]};
    if (!in)
        for (int64_t r = 0; r < ct_graph_n_rows(g); r++) {
            float w = g->adj[(size_t)r * N + i];
            if (w != 0.0f) e[n++] = (edge){ct_graph_row_node(g, r), w};
        }
    qsort(e, (size_t)n, sizeof *e, cmp_edge);
    lua_newtable(L);
    for (int64_t k = 0; k < n && k < limit; k++) {
        lua_createtable(L, 0, 2);
        push_node(L, 1, e[k].node);
        lua_setfield(L, -2, "node");
        set_num(L, "weight", e[k].w);
        lua_rawseti(L, -2, (int)k + 1);
    }
    return 1;
}

static int l_graph_edges_in(lua_State *L) { return push_edges(L, 1); }
static int l_graph_edges_out(lua_State *L) { return push_edges(L, 0); }

static int l_graph_adjacency(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    int64_t N = g->n_nodes, shape[2] = {N, N};
    ct_tensor *t = ct_tensor_new(2, shape);
    if (!t) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory for a %lld-node adjacency", (long long)N);
    float *d = ct_tensor_data(t);
    memset(d, 0, sizeof(float) * (size_t)N * N);
    for (int64_t r = 0; r < ct_graph_n_rows(g); r++)
        memcpy(d + (size_t)ct_graph_row_node(g, r) * N, g->adj + (size_t)r * N, sizeof(float) * (size_t)N);
    ct_lua_push_tensor(L, t);
    return 1;
}

// g:influence() -> Tensor (N,) of each node's total influence on the logits
static int l_graph_influence(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    int64_t N = g->n_nodes;
    ct_tensor *t = ct_tensor_new(1, &N);
    double *inf = malloc(sizeof(double) * (size_t)(N + 1));
    ct_err err = {0};
    ct_status rc = t && inf ? ct_graph_influence(g, inf, &err) : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc)
        for (int64_t i = 0; i < N; i++) ct_tensor_data(t)[i] = (float)inf[i];
    free(inf);
    if (rc) {
        ct_tensor_free(t);
        return ct_lua_raise(L, &err);
    }
    ct_lua_push_tensor(L, t);
    return 1;
}

// g:total_effects(node) -> Tensor (N,): every node's signed effect on node summed over paths
static int l_graph_total_effects(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    int64_t target = ct_lua_check_node(L, 1, 2), N = g->n_nodes;
    ct_tensor *t = ct_tensor_new(1, &N);
    double *v = malloc(sizeof(double) * (size_t)(N + 1));
    ct_err err = {0};
    ct_status rc = t && v ? ct_graph_total_effects(g, target, v, &err) : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc)
        for (int64_t i = 0; i < N; i++) ct_tensor_data(t)[i] = (float)v[i];
    free(v);
    if (rc) {
        ct_tensor_free(t);
        return ct_lua_raise(L, &err);
    }
    ct_lua_push_tensor(L, t);
    return 1;
}

static int l_graph_logits(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    lua_createtable(L, g->n_logits, 0);
    for (int k = 0; k < g->n_logits; k++) {
        lua_createtable(L, 0, 4);
        set_str(L, "token", g->logits[k].label ? g->logits[k].label : "");
        set_num(L, "id", (double)g->logits[k].vocab_id);
        set_num(L, "prob", g->logits[k].prob);
        set_num(L, "index", (double)(ct_graph_logit_node(g, k) + 1));
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

static int l_graph_tokens(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    ct_lua_push_ids(L, g->tokens, g->n_pos);
    lua_createtable(L, g->n_pos, 0);
    for (int t = 0; t < g->n_pos; t++) {
        lua_pushstring(L, g->token_text && g->token_text[t] ? g->token_text[t] : "");
        lua_rawseti(L, -2, t + 1);
    }
    return 2;
}

static int l_graph_prompt(lua_State *L) {
    lua_pushstring(L, check_graph(L, 1)->prompt ? check_graph(L, 1)->prompt : "");
    return 1;
}

static int l_graph_info(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    int64_t kept = 0;
    for (int64_t i = 0; i < g->n_nodes; i++) kept += !g->node_mask || g->node_mask[i];
    lua_createtable(L, 0, 16);
    set_num(L, "n_nodes", (double)g->n_nodes);
    set_num(L, "n_kept", (double)kept);
    set_num(L, "n_active", (double)g->n_active);
    set_num(L, "n_features", (double)g->n_selected);
    set_num(L, "n_layers", g->n_layers);
    set_num(L, "n_pos", g->n_pos);
    set_num(L, "n_logits", g->n_logits);
    lua_pushboolean(L, g->node_mask != NULL);
    lua_setfield(L, -2, "pruned");
    set_str(L, "scan", g->scan);
    set_str(L, "model_name", g->model_name);
    set_str(L, "input_hook", g->input_hook);
    set_str(L, "output_hook", g->output_hook);
    set_num(L, "max_n_logits", g->settings.max_n_logits);
    set_num(L, "desired_logit_prob", g->settings.desired_logit_prob);
    set_num(L, "batch_size", g->settings.batch_size);
    set_num(L, "max_feature_nodes", (double)g->settings.max_feature_nodes);
    set_num(L, "update_interval", g->settings.update_interval);
    if (g->settings.node_threshold >= 0) set_num(L, "node_threshold", g->settings.node_threshold);
    if (g->settings.edge_threshold >= 0) set_num(L, "edge_threshold", g->settings.edge_threshold);
    int64_t edges = 0;
    for (size_t k = 0; k < (size_t)ct_graph_n_rows(g) * g->n_nodes; k++) edges += g->adj[k] != 0.0f;
    set_num(L, "n_edges", (double)edges);
    return 1;
}

static int l_graph_prune(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    static const char *const allowed[] = {"node_threshold", "edge_threshold", NULL};
    ct_lua_check_opts(L, 2, "prune", allowed);
    double nt = ct_lua_opt_number(L, 2, "node_threshold", 0.8), et = ct_lua_opt_number(L, 2, "edge_threshold", 0.98);
    ct_graph *p = NULL;
    ct_err err = {0};
    if (ct_graph_prune(&p, g, nt, et, &err)) return ct_lua_raise(L, &err);
    ct_lua_push_graph(L, p);
    return 1;
}

static int l_graph_scores(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    double r, c;
    ct_err err = {0};
    if (ct_graph_scores(g, &r, &c, &err)) return ct_lua_raise(L, &err);
    lua_pushnumber(L, r);
    lua_pushnumber(L, c);
    return 2;
}

// g:set_label(node, text)
static int l_graph_set_label(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    int64_t i = ct_lua_check_node(L, 1, 2);
    const char *s = luaL_optstring(L, 3, NULL);
    if (!g->node_label && !(g->node_label = calloc((size_t)g->n_nodes, sizeof(char *))))
        return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    free(g->node_label[i]);
    g->node_label[i] = s ? strdup(s) : NULL;
    return 0;
}

// g:head_edges() -> {{source =, target = (1-based node indices), residual =, multi =, heads =
// {{layer =, head =, value =}, ...}}, ...}: the edges split by heads (rm:record_heads), in the
// adjacency's order
static int l_graph_head_edges(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    lua_createtable(L, (int)g->n_head_edges, 0);
    for (int64_t k = 0; k < g->n_head_edges; k++) {
        const ct_head_edge *e = &g->head_edges[k];
        lua_createtable(L, 0, 5);
        set_num(L, "source", (double)(e->source + 1));
        set_num(L, "target", (double)(e->target + 1));
        set_num(L, "residual", e->residual);
        set_num(L, "multi", e->multi);
        lua_createtable(L, e->n, 0);
        for (int i = 0; i < e->n; i++) {
            lua_createtable(L, 0, 3);
            set_num(L, "layer", e->layer[i]);
            set_num(L, "head", e->head[i]);
            set_num(L, "value", e->value[i]);
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "heads");
        lua_rawseti(L, -2, (int)k + 1);
    }
    return 1;
}

// g:set_qk_json(text): the graph JSON's "qk" array (heads' QK splits; ctrace.graph's prune{qk})
static int l_graph_set_qk_json(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    ct_err err = {0};
    if (ct_graph_set_qk_json(g, s, n, &err)) return ct_lua_raise(L, &err);
    return 0;
}

// g:qparams() -> the graph JSON's qParams (pins, supernodes) as JSON text, or nil (the default)
// g:set_qparams(text): replaces them (ctrace.graph's set_supernodes)
static int l_graph_qparams(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    if (!g->qparams) return 0;
    lua_pushstring(L, g->qparams);
    return 1;
}

static int l_graph_set_qparams(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    ct_err err = {0};
    if (ct_graph_set_qparams(g, s, n, &err)) return ct_lua_raise(L, &err);
    return 0;
}

// The JSON options at idx ({slug=, scan=, source_set=[, metadata=]}); the strings stay referenced
// by the options table.
static ct_json_opts json_opts(lua_State *L, int idx, const char *fn) {
    static const char *const allowed[] = {"slug", "scan", "source_set", "metadata", NULL};
    ct_lua_check_opts(L, idx, fn, allowed);
    ct_json_opts o = {0};
    if (lua_istable(L, idx)) {
        lua_getfield(L, idx, "slug");
        o.slug = lua_tostring(L, -1);
        lua_getfield(L, idx, "scan");
        o.scan = lua_tostring(L, -1);
        lua_getfield(L, idx, "source_set");
        o.source_set = lua_tostring(L, -1);
        lua_pop(L, 3);
    }
    return o;
}

// g:save_json(path, {slug=, scan=, source_set=}): the graph JSON (a full graph is pruned with
// the default thresholds first) and its entry in graph-metadata.json beside it.
static int l_graph_save_json(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    const char *path = luaL_checkstring(L, 2);
    ct_json_opts o = json_opts(L, 3, "save_json");
    // default slug: the file name without .json
    char slug[256];
    if (!o.slug) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        snprintf(slug, sizeof slug, "%s", base);
        char *dot = strrchr(slug, '.');
        if (dot && strcmp(dot, ".json") == 0) *dot = 0;
        o.slug = slug;
    }
    ct_err err = {0};
    if (ct_graph_save_json(ct_lua_ctx(L), g, path, &o, &err)) return ct_lua_raise(L, &err);
    if (ct_lua_opt_bool(L, 3, "metadata", 1)) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *sl = strrchr(dir, '/');
        if (sl) *sl = 0;
        else snprintf(dir, sizeof dir, ".");
        if (ct_graph_metadata_upsert(ct_lua_ctx(L), g, dir, &o, &err)) return ct_lua_raise(L, &err);
    }
    return 0;
}

// g:save_page(path, prefix, suffix, {slug=, scan=, source_set=}): the graph JSON save_json
// writes, escaped for a <script> element, between prefix and suffix (the viewer page), streamed.
static int l_graph_save_page(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    const char *path = luaL_checkstring(L, 2), *prefix = luaL_checkstring(L, 3), *suffix = luaL_checkstring(L, 4);
    ct_json_opts o = json_opts(L, 5, "save_page");
    if (!o.slug) o.slug = "graph";
    ct_err err = {0};
    if (ct_graph_save_page(ct_lua_ctx(L), g, path, &o, prefix, suffix, &err)) return ct_lua_raise(L, &err);
    return 0;
}

// g:json({slug=, scan=, source_set=}) -> the graph JSON save_json writes, as a string (slug
// default "graph")
static int l_graph_json(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    ct_json_opts o = json_opts(L, 2, "json");
    if (!o.slug) o.slug = "graph";
    char *text;
    size_t n;
    ct_err err = {0};
    if (ct_graph_json(g, &o, &text, &n, &err)) return ct_lua_raise(L, &err);
    lua_pushlstring(L, text, n);
    free(text);
    return 1;
}

static int ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

// g:save(path): circuit-tracer's .pt when path ends in .pt, else safetensors
static int l_graph_save(lua_State *L) {
    ct_graph *g = check_graph(L, 1);
    size_t n;
    const char *path = luaL_checklstring(L, 2, &n);
    ct_err err = {0};
    ct_status rc = ends_with(path, n, ".pt") ? ct_graph_save_pt(ct_lua_ctx(L), g, path, &err)
                                             : ct_graph_save(ct_lua_ctx(L), g, path, &err);
    if (rc) return ct_lua_raise(L, &err);
    return 0;
}

// ctrace.load_graph(path): a graph JSON (.json), circuit-tracer's .pt, or a full graph in
// safetensors
static int l_load_graph(lua_State *L) {
    size_t n;
    const char *path = luaL_checklstring(L, 1, &n);
    ct_graph *g = NULL;
    ct_err err = {0};
    ct_status rc = ends_with(path, n, ".json") ? ct_graph_load_json(ct_lua_ctx(L), &g, path, &err)
                   : ends_with(path, n, ".pt") ? ct_graph_load_pt(ct_lua_ctx(L), &g, path, &err)
                                               : ct_graph_load(ct_lua_ctx(L), &g, path, &err);
    if (rc) return ct_lua_raise(L, &err);
    ct_lua_push_graph(L, g);
    return 1;
}

// ctrace.core.parse_graph_json(text, name): a graph JSON held in a string (name for messages)
static int l_parse_graph_json(lua_State *L) {
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n), *name = luaL_optstring(L, 2, "graph JSON");
    ct_graph *g = NULL;
    ct_err err = {0};
    if (ct_graph_parse_json(&g, text, n, name, &err)) return ct_lua_raise(L, &err);
    ct_lua_push_graph(L, g);
    return 1;
}

static int l_graph_free(lua_State *L) {
    graph_box *b = luaL_checkudata(L, 1, CT_MT_GRAPH);
    ct_graph_free(b->g);
    b->g = NULL;
    return 0;
}

static int l_graph_tostring(lua_State *L) {
    graph_box *b = luaL_checkudata(L, 1, CT_MT_GRAPH);
    ct_graph *g = b->g;
    if (!g) {
        lua_pushstring(L, "ctrace.Graph (freed)");
        return 1;
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < g->n_nodes; i++) kept += !g->node_mask || g->node_mask[i];
    lua_pushfstring(L, "ctrace.Graph(%s%d tokens, %d features of %d active, %d logits, %d nodes)",
                    g->node_mask ? "pruned, " : "", g->n_pos, (int)g->n_selected, (int)g->n_active, g->n_logits, (int)kept);
    return 1;
}

// ctrace.core.graph_metadata_add(path): the graph JSON at path listed in graph-metadata.json beside it.
static int l_graph_metadata_add(lua_State *L) {
    ct_err err = {0};
    if (ct_graph_metadata_add_file(ct_lua_ctx(L), luaL_checkstring(L, 1), &err)) return ct_lua_raise(L, &err);
    return 0;
}

void ct_lua_register_graph(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"node", l_graph_node}, {"nodes", l_graph_nodes}, {"edges_in", l_graph_edges_in}, {"edges_out", l_graph_edges_out},
        {"json", l_graph_json}, {"adjacency", l_graph_adjacency}, {"influence", l_graph_influence},
        {"total_effects", l_graph_total_effects}, {"logits", l_graph_logits}, {"tokens", l_graph_tokens},
        {"prompt", l_graph_prompt}, {"info", l_graph_info}, {"prune", l_graph_prune}, {"scores", l_graph_scores},
        {"set_label", l_graph_set_label}, {"set_qk_json", l_graph_set_qk_json}, {"qparams", l_graph_qparams}, {"set_qparams", l_graph_set_qparams}, {"head_edges", l_graph_head_edges}, {"save_json", l_graph_save_json}, {"save_page", l_graph_save_page}, {"save", l_graph_save}, {"free", l_graph_free},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", l_graph_free}, {"__tostring", l_graph_tostring}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"load_graph", l_load_graph}, {"parse_graph_json", l_parse_graph_json},
                                   {"graph_metadata_add", l_graph_metadata_add}, {NULL, NULL}};
    ct_lua_new_type(L, CT_MT_GRAPH, methods, NULL, meta);
    ct_lua_set_funcs(L, fns);
    lua_newtable(L);   // graphs by id, weak values: a node table does not keep its graph alive
    lua_createtable(L, 0, 1);
    lua_pushstring(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, GRAPHS_BY_ID);
}
