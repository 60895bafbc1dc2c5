// bind_replacement.c - "ctrace.ReplacementModel": a model with its transcoders, the object that
// attributes prompts (and, later, runs interventions).
//
// The userdata borrows the model and the transcoder set and keeps both alive through its
// uservalue; freeing either makes the replacement model unusable with a clear error.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bind.h"
#include "trace/heads.h"
#include "trace/qk.h"
#include "core/dist.h"
#include "trace/attribution.h"
#include "trace/intervention.h"

typedef struct {
    void **model_box;   // borrowed boxes (kept alive by the uservalue)
    void **tc_box;
    ct_replacement r;   // with the clean run of the last prompt intervened on
} rm_box;

static rm_box *check_rm(lua_State *L, int idx) {
    rm_box *b = luaL_checkudata(L, idx, CT_MT_REPLACEMENT);
    if (!*b->model_box) ct_lua_fail(L, CT_STATUS_BAD_ARG, "ctrace.ReplacementModel: its model was freed");
    if (!*b->tc_box) ct_lua_fail(L, CT_STATUS_BAD_ARG, "ctrace.ReplacementModel: its transcoders were freed");
    return b;
}

// ctrace.replacement_model(model, transcoders [, {constant_positions = n}])
static int l_replacement_model(lua_State *L) {
    ct_model *m = ct_lua_check_box(L, 1, CT_MT_MODEL);
    ct_transcoders *tc = ct_lua_check_box(L, 2, CT_MT_TRANSCODERS);
    static const char *const allowed[] = {"constant_positions", NULL};
    ct_lua_check_opts(L, 3, "replacement_model", allowed);
    lua_Number nc = ct_lua_opt_number(L, 3, "constant_positions", -1);   // -1: not given (the model's rule)
    if (nc != -1 && !(nc >= 1 && nc <= (1 << 20) && nc == (int)nc))
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "replacement_model: constant_positions must be an integer in 1..%d, got %g",
                           1 << 20, nc);
    ct_err err = {0};
    ct_replacement r;
    if (ct_replacement_init(&r, m, tc, &err)) return ct_lua_raise(L, &err);
    if (nc != -1) ct_replacement_set_constant(&r, (int)nc, &err);   // in range: cannot fail
    rm_box *b = lua_newuserdata(L, sizeof *b);
    b->model_box = lua_touserdata(L, 1);
    b->tc_box = lua_touserdata(L, 2);
    b->r = r;
    luaL_getmetatable(L, CT_MT_REPLACEMENT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2);
    lua_setfenv(L, -2);
    return 1;
}

static int l_rm_model(lua_State *L) {
    luaL_checkudata(L, 1, CT_MT_REPLACEMENT);
    lua_getfenv(L, 1);
    lua_rawgeti(L, -1, 1);
    return 1;
}

// rm:constant_positions() -> how many leading positions are held constant (no features, zero
// error vectors): 1 (BOS), or 4 on Gemma-3 instruction-tuned models, or as given
static int l_rm_constant_positions(lua_State *L) {
    rm_box *b = check_rm(L, 1);
    lua_pushinteger(L, b->r.n_const);
    return 1;
}

static int l_rm_transcoders(lua_State *L) {
    luaL_checkudata(L, 1, CT_MT_REPLACEMENT);
    lua_getfenv(L, 1);
    lua_rawgeti(L, -1, 2);
    return 1;
}

// The prompt argument: a string or a list of ids (ct_prompt_text, ct_prompt_ids). malloc'ed.
static int *prompt_ids(lua_State *L, int idx, const ct_model *m, int *n, const char *fn) {
    int *ids = NULL;
    ct_err err = {0};
    ct_status rc;
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        // then, as for ids, a special token first (circuit-tracer's ensure_tokenized): a text the
        // tokenizer starts with an ordinary token (Qwen3, GPT-2) gets BOS, so that the graph's
        // tokens given back as ids name the same prompt
        int *text_ids = NULL, k = 0;
        rc = ct_prompt_text(m, s, len, &text_ids, &k, &err);
        if (!rc) rc = ct_prompt_ids(m, text_ids, k, &ids, n, &err);
        free(text_ids);
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        int k;
        int *raw = ct_lua_check_ids(L, idx, &k);
        rc = ct_prompt_ids(m, raw, k, &ids, n, &err);
        free(raw);
    } else {
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: expected a prompt string or a list of token ids, got %s", fn,
                           luaL_typename(L, idx)), NULL;
    }
    if (rc) ct_lua_fail(L, rc, "%s: %s", fn, err.msg);
    return ids;
}

// Progress on a terminal: phase, done/total, rate and time left, on one rewritten line.
typedef struct {
    double t0;       // the attribution's start
    double t_rows;   // the feature rows' start (the logit rows done): their rate counts from here
    int open;        // a line is drawn without its newline yet
} progress_state;

// (A carriage return and spaces rewrite the line: no escape sequence, so the line also passes
// through ctrace run's relay of an experiment's output.) The time left is the feature rows left at
// the rate of the feature rows so far (setup and logit rows left out: they are not repeated).
static void progress_line(void *ctx, const char *phase, int64_t done, int64_t total) {
    progress_state *p = ctx;
    double now = ct_now(), el = now - p->t0;
    char line[160];
    if (strcmp(phase, "logits") == 0) p->t_rows = now;
    double rows_s = p->t_rows > 0 ? now - p->t_rows : 0, rate = rows_s > 0 ? done / rows_s : 0;
    if (strcmp(phase, "done") == 0)
        snprintf(line, sizeof line, "attribute: done in %.1f s", el);
    else if (strcmp(phase, "features") == 0 && rate > 0)
        snprintf(line, sizeof line, "attribute: feature rows %lld/%lld, %.0f rows/s, %.0f s left (%.0f s so far)",
                 (long long)done, (long long)total, rate, (total - done) / rate, el);
    else
        snprintf(line, sizeof line, "attribute: %s (%.0f s so far)", strcmp(phase, "logits") == 0 ? "logit rows done" : phase,
                 el);
    p->open = strcmp(phase, "done") != 0;
    fprintf(stderr, "\r%-78s%s", line, p->open ? "" : "\n");
    fflush(stderr);
}

// Reads opts.targets (a list of token ids, one-token strings, or {vector=, label=, weight=}).
// Fills targets (malloc'ed, with vectors malloc'ed into vecs) and returns their count.
static int read_targets(lua_State *L, int opts, ct_model *m, ct_attr_target **out, float **vecs) {
    *out = NULL;
    *vecs = NULL;
    if (lua_isnoneornil(L, opts)) return 0;
    lua_getfield(L, opts, "targets");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    int ti = lua_gettop(L), D = m->cfg.d_model;
    if (!lua_istable(L, ti)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: targets must be a list, got %s", luaL_typename(L, ti));
    int n = (int)lua_objlen(L, ti);
    if (n == 0) ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: targets is an empty list");
    // allocated as Lua userdata so an error below frees them
    ct_attr_target *t = lua_newuserdata(L, sizeof *t * (size_t)n);
    float *v = lua_newuserdata(L, sizeof(float) * (size_t)n * D);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, ti, i + 1);
        t[i] = (ct_attr_target){-1, NULL, NULL, 1.0f};
        int ty = lua_type(L, -1);
        if (ty == LUA_TNUMBER) {
            lua_Number x = lua_tonumber(L, -1);
            if (x != floor(x) || x < 0 || x >= m->cfg.vocab_size)
                ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "attribute: target %d: token id %g is not in the vocabulary 0..%d", i + 1,
                            x, m->cfg.vocab_size - 1);
            t[i].token = (int)x;
        } else if (ty == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            ct_err err = {0};
            if (ct_token_of_text(m, s, len, &t[i].token, &err)) ct_lua_fail(L, err.status, "attribute: target %d: %s", i + 1, err.msg);
        } else if (ty == LUA_TTABLE) {
            int e = lua_gettop(L);
            lua_getfield(L, e, "vector");
            float *dst = v + (size_t)i * D;
            if (luaL_testudata(L, -1, CT_MT_TENSOR)) {
                ct_tensor *x = ct_lua_check_tensor(L, -1);
                if (ct_tensor_numel(x) != D || !ct_tensor_is_contiguous(x))
                    ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "attribute: target %d: vector has %lld values; expected d_model %d",
                                i + 1, (long long)ct_tensor_numel(x), D);
                memcpy(dst, ct_tensor_data(x), sizeof(float) * D);
            } else if (lua_istable(L, -1) && (int)lua_objlen(L, -1) == D) {
                for (int k = 0; k < D; k++) {
                    lua_rawgeti(L, -1, k + 1);
                    dst[k] = (float)lua_tonumber(L, -1);
                    lua_pop(L, 1);
                }
            } else {
                ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: target %d: expected vector = a tensor or list of %d numbers", i + 1, D);
            }
            lua_pop(L, 1);
            lua_getfield(L, e, "label");
            t[i].label = lua_isstring(L, -1) ? lua_tostring(L, -1) : "custom";   // kept alive by the targets table
            lua_pop(L, 1);
            lua_getfield(L, e, "weight");
            t[i].weight = lua_isnumber(L, -1) ? (float)lua_tonumber(L, -1) : 1.0f;
            lua_pop(L, 1);
            t[i].vec = dst;
        } else {
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: target %d: expected a token id, a token string or "
                        "{vector=, label=, weight=}, got %s", i + 1, luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    *out = t;
    *vecs = v;
    return n;   // the two userdata stay on the stack until the call returns
}

// rm:attribute(prompt_or_ids, opts) -> ctrace.Graph, stats (time per phase, rows, memory)
static int l_rm_attribute(lua_State *L) {
    rm_box *b = check_rm(L, 1);
    ct_model *m = b->r.m;
    static const char *const allowed[] = {"max_n_logits", "desired_logit_prob", "batch_size", "max_feature_nodes",
                                          "update_interval", "targets", "verbose", "memory_limit", NULL};
    ct_lua_check_opts(L, 3, "attribute", allowed);
    ct_attr_opts o;
    ct_attr_opts_default(&o);
    lua_Number v;
    v = ct_lua_opt_number(L, 3, "max_n_logits", o.max_n_logits);
    o.max_n_logits = v >= 1 && v <= 1e6 ? (int)v : (v < 1 ? 0 : 1000000);
    o.desired_logit_prob = ct_lua_opt_number(L, 3, "desired_logit_prob", o.desired_logit_prob);
    v = ct_lua_opt_number(L, 3, "batch_size", o.batch_size);
    o.batch_size = v >= 1 && v <= 65536 ? (int)v : (v < 1 ? 0 : 65536);
    v = ct_lua_opt_number(L, 3, "max_feature_nodes", 0);
    if (!lua_isnoneornil(L, 3)) {
        lua_getfield(L, 3, "max_feature_nodes");
        int given = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (given && !(v >= 1))
            return ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: max_feature_nodes must be at least 1, got %g", v);
    }
    o.max_feature_nodes = v > 9e15 ? 0 : (int64_t)v;
    v = ct_lua_opt_number(L, 3, "update_interval", o.update_interval);
    o.update_interval = v >= 1 && v <= 1e6 ? (int)v : (v < 1 ? 0 : 1000000);
    v = ct_lua_opt_number(L, 3, "memory_limit", (lua_Number)o.memory_limit);
    if (!(v >= 0 && v < 1e18)) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: memory_limit must be a byte count, got %g", v);
    if (v > 0) o.memory_limit = (size_t)v;   // 0: the default
    ct_attr_stats stats;
    o.stats = &stats;
    int verbose = ct_lua_opt_bool(L, 3, "verbose", ct_lua_terminal(L) && ct_dist_rank() == 0);   // MPI: rank 0's progress
    progress_state ps = {ct_now(), 0, 0};
    if (verbose) o.progress = progress_line, o.progress_ctx = &ps;
    o.ctx = ct_lua_ctx(L);
    ct_attr_target *targets;
    float *vecs;
    o.n_targets = read_targets(L, 3, m, &targets, &vecs);
    o.targets = targets;
    int n;
    int *ids = prompt_ids(L, 2, m, &n, "attribute");
    ct_graph *g = NULL;
    ct_err err = {0};
    ct_status rc = ct_attribute(&g, &b->r, ids, n, &o, &err);
    free(ids);
    if (ps.open) fputc('\n', stderr);   // a failure (Ctrl-C too) on a line of its own
    if (rc) return ct_lua_raise(L, &err);
    if (lua_type(L, 2) == LUA_TSTRING) {   // the prompt as given
        char *p = strdup(lua_tostring(L, 2));
        if (p) free(g->prompt), g->prompt = p;
    }
    ct_lua_push_graph(L, g);   // owned by Lua from here
    // the options in force, defaults included, for the manifest (over the scalars the script gave)
    lua_createtable(L, 0, 6);
#define F(k, v) (lua_pushnumber(L, (lua_Number)(v)), lua_setfield(L, -2, k))
    F("max_n_logits", o.max_n_logits), F("desired_logit_prob", o.desired_logit_prob), F("batch_size", o.batch_size);
    F("update_interval", o.update_interval), F("memory_limit", o.memory_limit);
#undef F
    lua_pushboolean(L, verbose);
    lua_setfield(L, -2, "verbose");
    if (o.max_feature_nodes > 0) lua_pushnumber(L, (lua_Number)o.max_feature_nodes);
    else lua_pushstring(L, "unlimited");
    lua_setfield(L, -2, "max_feature_nodes");
    ct_lua_record_attribution(L, g, 3, lua_gettop(L), stats.setup_s + stats.logits_s + stats.features_s + stats.graph_s);
    lua_pop(L, 1);
    lua_createtable(L, 0, 14);
#define F(k, v) (lua_pushnumber(L, (lua_Number)(v)), lua_setfield(L, -2, k))
    F("setup_s", stats.setup_s), F("logits_s", stats.logits_s), F("features_s", stats.features_s);
    F("ranking_s", stats.ranking_s), F("graph_s", stats.graph_s), F("backward_s", stats.backward_s);
    F("backward_gemm_s", stats.backward_gemm_s);
    F("backward_flops", stats.backward_flops), F("n_rows", stats.n_rows), F("n_batches", stats.n_batches);
    F("batch_size", stats.batch_size), F("row_bytes", stats.row_bytes), F("n_active", stats.n_active);
    F("comm_bytes", stats.comm_bytes), F("comm_s", stats.comm_s);
#undef F
    lua_pushboolean(L, stats.spilled);
    lua_setfield(L, -2, "spilled");
    return 2;
}

// ---------------------------------------------------------------------------------------------
// QK attribution

// The columns pairs name: the clean run's active features, L*T error nodes, T token nodes.
typedef struct {
    int64_t n_active, n_cols;
    const int32_t *active;   // (n_active, 3)
    const float *act;        // (n_active,)
    const int *tokens;       // (T,)
    int L, T;
} qk_cols;

// A node (col == n_cols: the constant part) as a Lua table: kind, layer, pos, feature, activation,
// token, and its id as graph JSON names it.
static void push_qk_node(lua_State *L, const qk_cols *c, int64_t col) {
    lua_createtable(L, 0, 6);
    char id[64];
    int64_t NA = c->n_active;
    if (col < NA) {
        const int32_t *f = c->active + 3 * col;
        lua_pushstring(L, "feature"), lua_setfield(L, -2, "kind");
        lua_pushinteger(L, f[0]), lua_setfield(L, -2, "layer");
        lua_pushinteger(L, f[1]), lua_setfield(L, -2, "pos");
        lua_pushinteger(L, f[2]), lua_setfield(L, -2, "feature");
        lua_pushnumber(L, c->act[col]), lua_setfield(L, -2, "activation");
        snprintf(id, sizeof id, "%d_%d_%d", f[0], f[2], f[1]);
    } else if (col < NA + (int64_t)c->L * c->T) {
        int l = (int)((col - NA) / c->T), t = (int)((col - NA) % c->T);
        lua_pushstring(L, "error"), lua_setfield(L, -2, "kind");
        lua_pushinteger(L, l), lua_setfield(L, -2, "layer");
        lua_pushinteger(L, t), lua_setfield(L, -2, "pos");
        snprintf(id, sizeof id, "%d_-1_%d", l, t);
    } else if (col < c->n_cols) {
        int t = (int)(col - NA - (int64_t)c->L * c->T);
        lua_pushstring(L, "token"), lua_setfield(L, -2, "kind");
        lua_pushinteger(L, t), lua_setfield(L, -2, "pos");
        lua_pushinteger(L, c->tokens[t]), lua_setfield(L, -2, "token");
        snprintf(id, sizeof id, "E_%d_%d", c->tokens[t], t);
    } else {
        lua_pushstring(L, "constant"), lua_setfield(L, -2, "kind");
        snprintf(id, sizeof id, "constant");
    }
    lua_pushstring(L, id), lua_setfield(L, -2, "node_id");
}

// Sets t.score, t.total, t.prob and t.terms = {{query = node, key = node, value =, shift =}, ...}
// on the table on top of the stack.
static void set_qk_key(lua_State *L, const qk_cols *c, double score, double total, double prob, const ct_qk_pair *pairs, int n) {
    lua_pushnumber(L, score), lua_setfield(L, -2, "score");
    lua_pushnumber(L, total), lua_setfield(L, -2, "total");
    lua_pushnumber(L, prob), lua_setfield(L, -2, "prob");
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 4);
        push_qk_node(L, c, pairs[i].i), lua_setfield(L, -2, "query");
        push_qk_node(L, c, pairs[i].j), lua_setfield(L, -2, "key");
        lua_pushnumber(L, pairs[i].value), lua_setfield(L, -2, "value");
        lua_pushnumber(L, pairs[i].shift), lua_setfield(L, -2, "shift");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "terms");
}

static int qk_int_opt(lua_State *L, int idx, const char *k, int def, int required) {
    lua_getfield(L, idx, k);
    int has = !lua_isnil(L, -1);
    lua_Number v = lua_tonumber(L, -1);
    if ((has && (lua_type(L, -1) != LUA_TNUMBER || v != floor(v) || fabs(v) > 2e9)) || (!has && required))
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "qk: option '%s' expects an integer, got %s", k, luaL_typename(L, -1));
    lua_pop(L, 1);
    return has ? (int)v : def;
}

// A node table at idx, as graph nodes and rm:qk's terms name them: {kind = "feature" (the default
// when feature is given) | "error" | "token", layer =, pos =, feature =}, or a graph JSON node_id
// ("{layer}_{feature}_{pos}", "{layer}_-1_{pos}", "E_{token}_{pos}").
// The next integer of s at *p, followed by `end` (0: the string's end): 1 and *v, or 0.
static int next_int(const char **p, char end, long long lo, long long hi, long long *v) {
    char *e;
    errno = 0;
    long long x = strtoll(*p, &e, 10);
    if (e == *p || errno || *e != end || x < lo || x > hi || (**p != '-' && (**p < '0' || **p > '9'))) return 0;
    *v = x, *p = e + (end != 0);
    return 1;
}

static void read_qk_node(lua_State *L, int idx, ct_qk_node *n, long long *token) {
    memset(n, 0, sizeof *n);
    *token = -1;
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx), *p = s;
        long long a = 0, b = 0, c = 0;
        int ok = 0;
        if (s[0] == 'E' && s[1] == '_') {
            p += 2;
            ok = next_int(&p, '_', 0, INT_MAX, &b) && next_int(&p, 0, 0, INT_MAX, &c);
            n->kind = CT_NODE_TOKEN, n->pos = (int)c, *token = b;
        } else {
            ok = next_int(&p, '_', 0, INT_MAX, &a) && next_int(&p, '_', -1, INT64_MAX, &b) && next_int(&p, 0, 0, INT_MAX, &c);
            n->kind = b == -1 ? CT_NODE_ERROR : CT_NODE_FEATURE, n->layer = (int)a, n->feature = b, n->pos = (int)c;
        }
        if (!ok)
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "qk: without: '%s' is no node id (expected layer_feature_pos, layer_-1_pos or "
                        "E_token_pos)", s);
        return;
    }
    if (!lua_istable(L, idx)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "qk: without expects a node (table or node_id), got %s", luaL_typename(L, idx));
    lua_getfield(L, idx, "kind");
    const char *kind = lua_tostring(L, -1);
    int feature = qk_int_opt(L, idx, "feature", -1, 0);
    if (kind && strcmp(kind, "feature") == 0 && feature < 0)
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "qk: without: a feature node needs its feature index, got %d", feature);
    if (kind && strcmp(kind, "error") && strcmp(kind, "token") && strcmp(kind, "feature"))
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "qk: without: a node of kind '%s'; expected feature, error or token", kind);
    if (!kind && feature < 0) ct_lua_fail(L, CT_STATUS_BAD_ARG, "qk: without: expected a node with kind or feature");
    n->kind = kind && strcmp(kind, "error") == 0 ? CT_NODE_ERROR : kind && strcmp(kind, "token") == 0 ? CT_NODE_TOKEN : CT_NODE_FEATURE;
    lua_pop(L, 1);
    n->layer = qk_int_opt(L, idx, "layer", -1, 0), n->pos = qk_int_opt(L, idx, "pos", -1, 0), n->feature = feature;
}

// rm:qk(prompt, {layer =, head =, query = last position, key =, top = 20}) -> {layer, head, query,
// key, scale, score, total, prob, terms = {{query = node, key = node, value =, shift =}, ...}}:
// head `head`'s pre-softmax score at layer `layer` between positions query and key split into pairs
// of nodes (trace/qk.h), the top pairs by size; total: the sum over every pair, the constant parts
// included (equal to score). Without key: the whole row, {layer, head, query, scale, keys = {{key =,
// score =, total =, prob =, terms =}, ...}} over every key the query sees.
static int l_rm_qk(lua_State *L) {
    rm_box *b = check_rm(L, 1);
    ct_model *m = b->r.m;
    static const char *const allowed[] = {"layer", "head", "query", "key", "top", "without", NULL};
    luaL_checktype(L, 3, LUA_TTABLE);
    ct_lua_check_opts(L, 3, "qk", allowed);
    int layer = qk_int_opt(L, 3, "layer", 0, 1), head = qk_int_opt(L, 3, "head", 0, 1);
    int query = qk_int_opt(L, 3, "query", -1, 0), key = qk_int_opt(L, 3, "key", -1, 0), top = qk_int_opt(L, 3, "top", 20, 0);
    lua_getfield(L, 3, "key");
    int row = lua_isnil(L, -1);
    lua_pop(L, 1);
    ct_qk_node without, *wo = NULL;
    long long wtoken = -1;   // a token node's id as its node_id names it
    lua_getfield(L, 3, "without");
    if (!lua_isnil(L, -1)) {
        if (!row) ct_lua_fail(L, CT_STATUS_BAD_ARG, "qk: without = node changes every key's score: leave out key (the whole row)");
        read_qk_node(L, lua_gettop(L), &without, &wtoken);
        wo = &without;
    }
    lua_pop(L, 1);
    int T;
    int *ids = prompt_ids(L, 2, m, &T, "qk");   // raises nothing after this but through ct_lua_raise below
    if (query == -1) query = T - 1;
    ct_qk q = {0};
    ct_qk_row r = {0};
    ct_err err = {0};
    ct_qk_pair *pairs = NULL;
    int n = 0;
    ct_status rc = top >= 1 && top <= 100000 ? CT_OK : ct_fail(&err, CT_STATUS_BAD_ARG, "qk: top must be in 1..100000, got %d", top);
    if (!rc && wo && wtoken >= 0 && (without.pos >= T || ids[without.pos] != wtoken))
        rc = ct_fail(&err, CT_STATUS_NOT_FOUND, "qk: without: node E_%lld_%d names token %lld at position %d, where the prompt "
                     "has %d (of %d positions)", wtoken, without.pos, wtoken, without.pos, without.pos < T ? ids[without.pos] : -1, T);
    if (!rc && row) rc = ct_qk_row_run(&r, &b->r, ids, T, layer, head, query, top, wo, &err);
    if (!rc && !row) rc = ct_qk_run(&q, &b->r, ids, T, layer, head, query, key, &err);
    if (!rc && !row && !(pairs = malloc(sizeof *pairs * (size_t)top))) rc = ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc && !row) rc = ct_qk_top(&q, top, pairs, &n, &err);
    if (rc) {
        free(ids), free(pairs);
        ct_qk_free(&q), ct_qk_row_free(&r);
        return ct_lua_raise(L, &err);
    }
    qk_cols c = row ? (qk_cols){r.n_active, r.n_cols, r.active, r.act, ids, m->cfg.n_layers, T}
                    : (qk_cols){q.n_active, q.n_cols, q.active, q.act, ids, m->cfg.n_layers, T};
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, layer), lua_setfield(L, -2, "layer");
    lua_pushinteger(L, head), lua_setfield(L, -2, "head");
    lua_pushinteger(L, query), lua_setfield(L, -2, "query");
    lua_pushnumber(L, row ? r.scale : q.scale), lua_setfield(L, -2, "scale");
    if (row) {
        lua_createtable(L, r.n_keys, 0);
        for (int i = 0; i < r.n_keys; i++) {
            const ct_qk_key *k = &r.keys[i];
            lua_createtable(L, 0, 5);
            lua_pushinteger(L, k->key), lua_setfield(L, -2, "key");
            set_qk_key(L, &c, k->score, k->total, k->prob, k->pairs, k->n_pairs);
            if (wo) {
                lua_pushnumber(L, k->without), lua_setfield(L, -2, "score_without");
                lua_pushnumber(L, k->prob_without), lua_setfield(L, -2, "prob_without");
            }
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "keys");
    } else {
        lua_pushinteger(L, key), lua_setfield(L, -2, "key");
        set_qk_key(L, &c, q.score, q.total, q.prob, pairs, n);
    }
    free(ids), free(pairs);
    ct_qk_free(&q), ct_qk_row_free(&r);
    return 1;
}

// rm:edge_heads(g, source, target) -> {edge =, residual =, multi =, heads = {{layer =, head =,
// value =}, ...}}: the edge of g (a graph of this replacement model) from source to target split
// into its residual part, each attention head's one-hop part (the heads with a non-zero part,
// largest first; ties: lower layer, then head) and the multi-hop rest (trace/heads.h).
static int l_rm_edge_heads(lua_State *L) {
    rm_box *b = check_rm(L, 1);
    const ct_graph *g = ct_lua_check_box(L, 2, CT_MT_GRAPH);
    int64_t source = ct_lua_check_node(L, 2, 3), target = ct_lua_check_node(L, 2, 4);
    ct_edge_heads e;
    ct_err err = {0};
    if (ct_edge_heads_run(&e, &b->r, g, target, source, &err)) return ct_lua_raise(L, &err);
    int n = e.n_layers * e.n_heads, k = 0;
    int *order = malloc(sizeof(int) * (size_t)n);
    if (!order) {
        ct_edge_heads_free(&e);
        return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    }
    for (int i = 0; i < n; i++)   // the non-zero parts, by size (insertion: a few hundred heads)
        if (e.heads[i] != 0) {
            int j = k++;
            for (; j > 0 && fabs(e.heads[order[j - 1]]) < fabs(e.heads[i]); j--) order[j] = order[j - 1];
            order[j] = i;
        }
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, e.edge), lua_setfield(L, -2, "edge");
    lua_pushnumber(L, e.residual), lua_setfield(L, -2, "residual");
    lua_pushnumber(L, e.multi), lua_setfield(L, -2, "multi");
    lua_createtable(L, k, 0);
    for (int i = 0; i < k; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, order[i] / e.n_heads), lua_setfield(L, -2, "layer");
        lua_pushinteger(L, order[i] % e.n_heads), lua_setfield(L, -2, "head");
        lua_pushnumber(L, e.heads[order[i]]), lua_setfield(L, -2, "value");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "heads");
    free(order);
    ct_edge_heads_free(&e);
    return 1;
}

// rm:record_heads(g, top): every kept edge of the pruned graph g split by heads, its `top` heads
// kept in g for its graph JSON (trace/heads.h ct_graph_record_heads). Returns the number of edges.
static int l_rm_record_heads(lua_State *L) {
    rm_box *b = check_rm(L, 1);
    ct_graph *g = ct_lua_check_box(L, 2, CT_MT_GRAPH);
    lua_Number top = luaL_checknumber(L, 3);
    if (top != floor(top) || top < 1 || top > CT_EDGE_HEADS_MAX)
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "record_heads: %g heads an edge; expected an integer in 1..%d", top,
                           CT_EDGE_HEADS_MAX);
    ct_err err = {0};
    if (ct_graph_record_heads(g, &b->r, (int)top, &err)) return ct_lua_raise(L, &err);
    lua_pushnumber(L, (lua_Number)g->n_head_edges);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Interventions

static int field_int(lua_State *L, int t, const char *k, int *out) {
    lua_getfield(L, t, k);
    int has = !lua_isnil(L, -1);
    if (has) {
        lua_Number v = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || v != floor(v) || fabs(v) > 2e9)
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention field '%s': expected an integer, got %s", k, luaL_typename(L, -1));
        *out = (int)v;
    }
    lua_pop(L, 1);
    return has;
}

// Reads one intervention table at index t: {layer =, pos =, feature =} or {node =} (a graph node
// table), or {error = true, layer =, pos =}, or {token = true, pos =}; and exactly one of
// scale =, value = (set), add =. pos: an index, {first, last}, {first, "end"}, or "all".
static void read_intervention(lua_State *L, int t, int i, ct_model *m, const ct_transcoders *tc, ct_intervention *v) {
    t = t < 0 ? lua_gettop(L) + t + 1 : t;
    if (!lua_istable(L, t)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: expected a table, got %s", i, luaL_typename(L, t));
    static const char *const keys[] = {"layer", "pos", "feature", "node", "error", "token", "scale", "value", "add", NULL};
    char fn[64];
    snprintf(fn, sizeof fn, "intervention %d", i);
    ct_lua_check_opts(L, t, fn, keys);
    memset(v, 0, sizeof *v);
    v->kind = CT_IV_FEATURE;
    v->pos1 = -2;   // unset
    lua_getfield(L, t, "node");
    int node = lua_gettop(L);
    if (!lua_isnil(L, node)) {   // a node of a graph made with this model and transcoder set
        if (!lua_istable(L, node)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: node must be a graph node table", i);
        lua_getfield(L, node, "graph_id");
        ct_graph *g = lua_isnumber(L, -1) ? ct_lua_graph_by_id(L, lua_tonumber(L, -1)) : NULL;
        lua_pop(L, 1);
        if (g && (g->n_layers != tc->n_layers || g->d_model != tc->d_model || g->vocab_size != m->cfg.vocab_size ||
                  strcmp(g->input_hook, tc->input_hook) != 0 || strcmp(g->scan, tc->scan) != 0))
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: the node comes from a graph of another model or transcoder set", i);
        lua_getfield(L, node, "kind");
        const char *k = lua_tostring(L, -1);
        if (!k || (strcmp(k, "feature") && strcmp(k, "error") && strcmp(k, "token")))
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: a node of kind %s cannot be intervened on (feature, error "
                        "or token)", i, k ? k : "(none)");
        v->kind = strcmp(k, "feature") == 0 ? CT_IV_FEATURE : strcmp(k, "error") == 0 ? CT_IV_ERROR : CT_IV_TOKEN;
        lua_pop(L, 1);
        int f = 0;
        field_int(L, node, "layer", &v->layer);
        field_int(L, node, "pos", &v->pos0);
        if (field_int(L, node, "feature", &f)) v->feature = f;
        v->pos1 = v->pos0;
    } else {
        lua_getfield(L, t, "error");
        int err = lua_toboolean(L, -1);
        lua_getfield(L, t, "token");
        int tok = lua_toboolean(L, -1);
        lua_pop(L, 2);
        v->kind = err ? CT_IV_ERROR : tok ? CT_IV_TOKEN : CT_IV_FEATURE;
        if (v->kind != CT_IV_TOKEN && !field_int(L, t, "layer", &v->layer))
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: expected layer", i);
        int f;
        if (v->kind == CT_IV_FEATURE) {
            if (!field_int(L, t, "feature", &f)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: expected feature", i);
            v->feature = f;
        }
    }
    lua_pop(L, 1);   // node
    // positions
    lua_getfield(L, t, "pos");
    int p = lua_gettop(L);
    if (lua_type(L, p) == LUA_TNUMBER) {
        field_int(L, t, "pos", &v->pos0);
        v->pos1 = v->pos0;
    } else if (lua_type(L, p) == LUA_TSTRING && strcmp(lua_tostring(L, p), "all") == 0) {
        v->pos0 = 0, v->pos1 = -1;
    } else if (lua_istable(L, p)) {
        lua_rawgeti(L, p, 1);
        lua_rawgeti(L, p, 2);
        int ok = lua_isnumber(L, -2) && (lua_isnumber(L, -1) || (lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "end") == 0));
        if (!ok) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: pos must be an index, {first, last}, {first, \"end\"} or \"all\"", i);
        v->pos0 = (int)lua_tonumber(L, -2);
        v->pos1 = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tonumber(L, -1) : -1;
        lua_pop(L, 2);
    } else if (v->pos1 == -2) {
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: expected pos (an index, {first, last}, {first, \"end\"} or \"all\")", i);
    }
    lua_pop(L, 1);
    // the operation
    int n_ops = 0;
    static const char *const ops[] = {"scale", "value", "add"};
    for (int k = 0; k < 3; k++) {
        lua_getfield(L, t, ops[k]);
        if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) != LUA_TNUMBER) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: %s must be a number", i, ops[k]);
            v->op = k == 0 ? CT_IV_SCALE : k == 1 ? CT_IV_SET : CT_IV_ADD;
            v->value = (float)lua_tonumber(L, -1);
            if (!isfinite(lua_tonumber(L, -1)))
                ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: %s is %g; expected a finite number", i, ops[k], lua_tonumber(L, -1));
            n_ops++;
        }
        lua_pop(L, 1);
    }
    if (n_ops != 1) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervention %d: expected exactly one of scale, value (set) or add, got %d", i, n_ops);
}

// The interventions list at idx as a userdata-backed array (freed with the call's stack).
static ct_intervention *read_interventions(lua_State *L, int idx, ct_model *m, const ct_transcoders *tc, int *n) {
    if (!lua_istable(L, idx)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "interventions: expected a list, got %s", luaL_typename(L, idx));
    *n = (int)lua_objlen(L, idx);
    ct_intervention *iv = lua_newuserdata(L, sizeof *iv * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, i + 1);
        read_intervention(L, -1, i + 1, m, tc, &iv[i]);
        lua_pop(L, 1);
    }
    return iv;
}

static void read_iv_opts(lua_State *L, int idx, ct_model *m, ct_iv_opts *o, const char *fn) {
    static const char *const allowed[] = {"freeze_attention", "constrained_layers", "readout", "activations", "watch",
                                          "max_tokens", "temperature", "top_p", "seed", "stop_at_eos",
                                          "free_attention_layer", "hooks", NULL};
    ct_lua_check_opts(L, idx, fn, allowed);
    ct_iv_opts_default(o);
    o->freeze_attention = ct_lua_opt_bool(L, idx, "freeze_attention", 1);
    o->activations = ct_lua_opt_bool(L, idx, "activations", 1);
    if (lua_istable(L, idx)) {
        lua_getfield(L, idx, "free_attention_layer");
        if (!lua_isnil(L, -1)) {
            lua_Number v = lua_tonumber(L, -1);
            if (lua_type(L, -1) != LUA_TNUMBER || v != floor(v) || fabs(v) > 1e6)
                ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: free_attention_layer expects a layer (an integer), got %s %s", fn,
                            luaL_typename(L, -1), lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
            o->free_attention_layer = (int)v;
        }
        lua_pop(L, 1);
        lua_getfield(L, idx, "hooks");
        if (!lua_isnil(L, -1) && strcmp(fn, "intervene") != 0)
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: hooks are read from one pass over a prompt (intervene)", fn);
        lua_pop(L, 1);
        lua_getfield(L, idx, "constrained_layers");
        if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "all") == 0) {
            o->constrained = 1, o->first = 0, o->last = m->cfg.n_layers - 1;
        } else if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            if (!lua_isnumber(L, -2) || !lua_isnumber(L, -1))
                ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: constrained_layers must be {first, last} or \"all\"", fn);
            o->constrained = 1, o->first = (int)lua_tonumber(L, -2), o->last = (int)lua_tonumber(L, -1);
            lua_pop(L, 2);
        } else if (!lua_isnil(L, -1)) {
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: constrained_layers must be {first, last} or \"all\"", fn);
        }
        lua_pop(L, 1);
        lua_getfield(L, idx, "readout");
        const char *r = lua_tostring(L, -1);
        if (r && strcmp(r, "pre") && strcmp(r, "post"))
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: readout must be \"pre\" or \"post\", got '%s'", fn, r);
        o->pre_activation = r && strcmp(r, "pre") == 0;
        lua_pop(L, 1);
    }
}

// Checks the watch list opts.watch (before any engine memory needs freeing).
static void check_watch(lua_State *L, int opts) {
    if (!lua_istable(L, opts)) return;
    lua_getfield(L, opts, "watch");
    int w = lua_gettop(L);
    if (!lua_isnil(L, w) && !lua_istable(L, w)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervene: watch must be a list of features");
    for (int i = 0; lua_istable(L, w) && i < (int)lua_objlen(L, w); i++) {
        lua_rawgeti(L, w, i + 1);
        int t = lua_gettop(L), x;
        if (!lua_istable(L, t) || !field_int(L, t, "layer", &x) || !field_int(L, t, "pos", &x) || !field_int(L, t, "feature", &x))
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "watch %d: expected a feature {layer, pos, feature}", i + 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

// Pushes, for each node of the watch list at idx ({layer, pos, feature} tables, graph nodes
// among them), {layer, pos, feature, value, clean, delta}; 0 where a feature is not active.
static void push_watched(lua_State *L, int idx, const ct_sparse_acts *a) {
    int n = (int)lua_objlen(L, idx);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        int t = lua_gettop(L), layer = -1, pos = -1, feature = -1;   // checked by check_watch
        field_int(L, t, "layer", &layer), field_int(L, t, "pos", &pos), field_int(L, t, "feature", &feature);
        int64_t j = ct_sparse_acts_find(a, layer, pos, feature);
        ct_lua_push_activation(L, layer, pos, feature, j >= 0 ? a->value[j] : 0.0f, j >= 0 ? a->clean[j] : 0.0f);
        lua_rawseti(L, -3, i + 1);
        lua_pop(L, 1);
    }
}

// opts.hooks at idx: a list of hook names (as m:run_with_cache names them) -> ids (n), held by a
// userdata left on the stack (NULL and nothing pushed without the option). Raises on a bad list.
static ct_hook_id *read_hooks(lua_State *L, int idx, const ct_model *m, int *n) {
    *n = 0;
    if (!lua_istable(L, idx)) return NULL;
    lua_getfield(L, idx, "hooks");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    int t = lua_gettop(L), k = lua_istable(L, t) ? (int)lua_objlen(L, t) : 0;
    if (k < 1 || k > 4096) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervene: hooks expects a list of hook names, got %s", luaL_typename(L, t));
    ct_hook_id *ids = lua_newuserdata(L, sizeof *ids * (size_t)k);   // collected if a name is bad
    for (int i = 0; i < k; i++) {
        lua_rawgeti(L, t, i + 1);
        ct_err err = {0};
        if (lua_type(L, -1) != LUA_TSTRING) ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervene: hook %d: expected a name, got %s", i + 1, luaL_typename(L, -1));
        if (ct_hook_parse(m, lua_tostring(L, -1), &ids[i], &err)) ct_lua_raise(L, &err);
        if (ids[i].kind == CT_HOOK_MLP_PRE || ids[i].kind == CT_HOOK_MLP_POST)
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "intervene: hook '%s' is inside the MLP, which an intervention's pass replaces; "
                        "its input (mlp.hook_in) and output (mlp.hook_out, hook_mlp_out) are hooks of the pass", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_remove(L, t);
    *n = k;
    return ids;
}

// rm:intervene(prompt, interventions, opts) -> logits (T, V), and the activations: a
// ctrace.Activations (every feature with its clean value), the watched list, or nil
static int l_rm_intervene(lua_State *L) {
    rm_box *b = check_rm(L, 1);
    ct_model *m = b->r.m;
    int n_iv;
    ct_intervention *iv = read_interventions(L, 3, m, b->r.tc, &n_iv);
    ct_iv_opts o;
    read_iv_opts(L, 4, m, &o, "intervene");
    check_watch(L, 4);
    int n_hooks = 0;
    ct_hook_id *hook_ids = read_hooks(L, 4, m, &n_hooks);
    int T;
    int *ids = prompt_ids(L, 2, m, &T, "intervene");
    int64_t shape[2] = {T, m->cfg.vocab_size};
    ct_tensor *logits = ct_tensor_new(2, shape);
    ct_sparse_acts acts = {0}, both = {0};
    const ct_sparse_acts *clean = NULL;
    ct_err err = {0};
    ct_hook_cache hc = {0};
    ct_status rc = logits ? CT_OK : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory for logits");
    if (!rc && hook_ids) rc = ct_hook_cache_init(&hc, hook_ids, n_hooks, &err);
    if (!rc && hook_ids) o.hooks = &hc;
    if (!rc) rc = ct_iv_run(&b->r, ids, T, iv, n_iv, &o, ct_tensor_data(logits), &acts, &err);
    if (!rc && o.activations && !(clean = ct_iv_clean_acts(&b->r, ids, T, o.pre_activation, &err))) rc = err.status;
    if (!rc && o.activations) rc = ct_sparse_acts_union(&both, &acts, clean, &err);
    free(ids);
    ct_sparse_acts_free(&acts);
    if (rc) {
        ct_tensor_free(logits);
        ct_hook_cache_free(&hc);
        return ct_lua_raise(L, &err);
    }
    ct_lua_push_tensor(L, logits);
    if (lua_istable(L, 4)) lua_getfield(L, 4, "watch");
    else lua_pushnil(L);
    int watch = lua_gettop(L);
    if (o.activations && lua_istable(L, watch)) {
        push_watched(L, watch, &both);
        ct_sparse_acts_free(&both);
    } else if (o.activations) {
        ct_lua_push_activations(L, &both);   // takes both
    } else {
        lua_pushnil(L);
    }
    lua_remove(L, watch);
    if (!o.hooks) return 2;
    lua_createtable(L, 0, hc.n);   // {name = tensor}
    for (int i = 0; i < hc.n; i++) {
        char name[96];
        ct_hook_name(hc.ids[i], name, sizeof name);
        ct_lua_push_tensor(L, hc.values[i]);   // takes it
        hc.values[i] = NULL;
        lua_setfield(L, -2, name);
    }
    ct_hook_cache_free(&hc);
    return 3;
}

// rm:donor_values(prompt, {{layer, pos, feature}, ...}) -> {value, ...}: the features' activations
// in the clean run of another prompt (0 where not active), for swaps
static int l_rm_donor_values(lua_State *L) {
    rm_box *b = check_rm(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    int n = (int)lua_objlen(L, 3);
    int32_t *feat = lua_newuserdata(L, sizeof(int32_t) * 3 * (size_t)(n + 1));   // freed with the call
    float *values = lua_newuserdata(L, sizeof(float) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 3, i + 1);
        int t = lua_gettop(L), x[3];
        if (!lua_istable(L, t) || !field_int(L, t, "layer", &x[0]) || !field_int(L, t, "pos", &x[1]) ||
            !field_int(L, t, "feature", &x[2]))
            return ct_lua_fail(L, CT_STATUS_BAD_ARG, "donor_values: entry %d: expected {layer, pos, feature}", i + 1);
        memcpy(feat + 3 * i, x, sizeof x);
        lua_pop(L, 1);
    }
    int T;
    int *ids = prompt_ids(L, 2, b->r.m, &T, "swap");
    ct_err err = {0};
    ct_status rc = ct_iv_donor_values(&b->r, ids, T, feat, n, values, &err);
    free(ids);
    if (rc) return ct_lua_raise(L, &err);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushnumber(L, values[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

// rm:generate(prompt, interventions, {max_tokens, temperature, top_p, seed, ...}) -> text, ids
static int l_rm_generate(lua_State *L) {
    rm_box *b = check_rm(L, 1);
    ct_model *m = b->r.m;
    int n_iv;
    ct_intervention *iv = read_interventions(L, 3, m, b->r.tc, &n_iv);
    ct_iv_opts o;
    read_iv_opts(L, 4, m, &o, "generate");
    ct_gen_opts g;
    ct_lua_gen_opts(L, 4, "generate", &g);
    if (!m->tok) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "generate: the model has no tokenizer");
    int T;
    int *ids = prompt_ids(L, 2, m, &T, "generate");
    int *out = malloc(sizeof(int) * (size_t)(g.max_tokens + 1)), n = 0;
    ct_err err = {0};
    ct_status rc = out ? ct_iv_generate(&b->r, ids, T, iv, n_iv, &o, &g, out, &n, &err)
                       : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) rc = ct_lua_push_continuation(L, m->tok, ids, T, out, n, &err);
    free(ids);
    if (rc) {
        free(out);
        return ct_lua_raise(L, &err);
    }
    ct_lua_push_ids(L, out, n);
    free(out);
    return 2;
}

static int l_rm_gc(lua_State *L) {
    rm_box *b = luaL_checkudata(L, 1, CT_MT_REPLACEMENT);
    ct_replacement_free(&b->r);
    return 0;
}

static int l_rm_tostring(lua_State *L) {
    rm_box *b = luaL_checkudata(L, 1, CT_MT_REPLACEMENT);
    ct_model *m = *b->model_box;
    ct_transcoders *tc = *b->tc_box;
    if (!m || !tc) lua_pushstring(L, "ctrace.ReplacementModel (freed model or transcoders)");
    else
        lua_pushfstring(L, "ctrace.ReplacementModel(%s, %d layers; %s transcoders %s -> %s)", m->cfg.architecture,
                        m->cfg.n_layers, tc->kind == CT_TC_CLT ? "cross-layer" : "per-layer", tc->input_hook, tc->output_hook);
    return 1;
}

void ct_lua_register_replacement(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"attribute", l_rm_attribute}, {"qk", l_rm_qk}, {"edge_heads", l_rm_edge_heads}, {"record_heads", l_rm_record_heads}, {"intervene_raw", l_rm_intervene}, {"generate", l_rm_generate},
        {"donor_values", l_rm_donor_values}, {"model", l_rm_model}, {"transcoders", l_rm_transcoders},
        {"constant_positions", l_rm_constant_positions}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", l_rm_gc}, {"__tostring", l_rm_tostring}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"replacement_model", l_replacement_model}, {NULL, NULL}};
    ct_lua_new_type(L, CT_MT_REPLACEMENT, methods, NULL, meta);
    ct_lua_set_funcs(L, fns);
}
