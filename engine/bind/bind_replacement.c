// bind_replacement.c - "ctrace.ReplacementModel": a model with its transcoders, the object that
// attributes prompts (and, later, runs interventions).
//
// The userdata borrows the model and the transcoder set and keeps both alive through its
// uservalue; freeing either makes the replacement model unusable with a clear error.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attribution.h"
#include "bind.h"

typedef struct {
    void **model_box;   // borrowed boxes (kept alive by the uservalue)
    void **tc_box;
} rm_box;

static rm_box *check_rm(lua_State *L, int idx, ct_model **m, ct_transcoders **tc) {
    rm_box *b = luaL_checkudata(L, idx, CT_MT_REPLACEMENT);
    if (!*b->model_box) ct_lua_fail(L, CT_STATUS_BAD_ARG, "ctrace.ReplacementModel: its model was freed");
    if (!*b->tc_box) ct_lua_fail(L, CT_STATUS_BAD_ARG, "ctrace.ReplacementModel: its transcoders were freed");
    *m = *b->model_box;
    *tc = *b->tc_box;
    return b;
}

// ctrace.replacement_model(model, transcoders)
static int l_replacement_model(lua_State *L) {
    ct_model *m = ct_lua_check_box(L, 1, CT_MT_MODEL);
    ct_transcoders *tc = ct_lua_check_box(L, 2, CT_MT_TRANSCODERS);
    ct_err err = {0};
    if (ct_transcoders_check(tc, m, &err)) return ct_lua_raise(L, &err);
    rm_box *b = lua_newuserdata(L, sizeof *b);
    b->model_box = lua_touserdata(L, 1);
    b->tc_box = lua_touserdata(L, 2);
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

static int l_rm_transcoders(lua_State *L) {
    luaL_checkudata(L, 1, CT_MT_REPLACEMENT);
    lua_getfenv(L, 1);
    lua_rawgeti(L, -1, 2);
    return 1;
}

// The prompt argument: a string (tokenized with BOS) or a list of ids (BOS prepended when the
// first id is not a special token). Returns malloc'ed ids.
static int *prompt_ids(lua_State *L, int idx, ct_model *m, int *n) {
    int *ids = NULL;
    ct_err err = {0};
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (len == 0) ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: the prompt is empty");
        if (!m->tok) ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: the model has no tokenizer; pass token ids");
        if (ct_tokenizer_encode(m->tok, s, len, 1, &ids, n, &err)) ct_lua_raise(L, &err);
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        int k;
        int *raw = ct_lua_check_ids(L, idx, &k);
        if (k == 0) {
            free(raw);
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: the prompt is empty");
        }
        int bos = m->cfg.bos_id, special = raw[0] == bos || raw[0] == m->cfg.eos_id;
        if (m->tok && raw[0] >= 0) {
            const char *p = ct_tokenizer_piece(m->tok, raw[0]);
            special |= p && p[0] == '<' && p[strlen(p) - 1] == '>';
        }
        ids = malloc(sizeof(int) * (size_t)(k + 1));
        if (!ids) {
            free(raw);
            ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
        }
        *n = 0;
        if (!special && bos >= 0) ids[(*n)++] = bos;
        memcpy(ids + *n, raw, sizeof(int) * (size_t)k);
        *n += k;
        free(raw);
    } else {
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: expected a prompt string or a list of token ids, got %s",
                    luaL_typename(L, idx));
    }
    return ids;
}

// Progress on a terminal: phase, done/total, rate and time left, on one rewritten line.
typedef struct {
    double t0;
    int64_t last_done;
} progress_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress_line(void *ctx, const char *phase, int64_t done, int64_t total) {
    progress_state *p = ctx;
    double el = now_s() - p->t0;
    if (strcmp(phase, "done") == 0) {
        fprintf(stderr, "\r\033[Kattribute: done in %.1f s\n", el);
        return;
    }
    double rate = el > 0 ? done / el : 0;
    if (strcmp(phase, "features") == 0 && rate > 0)
        fprintf(stderr, "\r\033[Kattribute: feature rows %lld/%lld, %.0f rows/s, %.0f s left", (long long)done,
                (long long)total, rate, (total - done) / rate);
    else
        fprintf(stderr, "\r\033[Kattribute: %s", phase);
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
            int *ids = NULL, k = 0;
            ct_err err = {0};
            if (!m->tok) ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: target '%s': the model has no tokenizer", s);
            if (ct_tokenizer_encode(m->tok, s, len, 0, &ids, &k, &err)) ct_lua_raise(L, &err);
            int id = k == 1 ? ids[0] : -1;
            free(ids);
            if (k != 1)
                ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: target '%s' is %d tokens; a target must be exactly one token", s, k);
            t[i].token = id;
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
    ct_model *m;
    ct_transcoders *tc;
    check_rm(L, 1, &m, &tc);
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
    v = ct_lua_opt_number(L, 3, "memory_limit", 0);
    if (!(v >= 0 && v < 1e18)) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "attribute: memory_limit must be a byte count, got %g", v);
    o.memory_limit = (size_t)v;
    ct_attr_stats stats;
    o.stats = &stats;
    int verbose = ct_lua_opt_bool(L, 3, "verbose", isatty(2));
    progress_state ps = {now_s(), 0};
    if (verbose) o.progress = progress_line, o.progress_ctx = &ps;
    o.cancel = &ct_cancel_requested;
    ct_attr_target *targets;
    float *vecs;
    o.n_targets = read_targets(L, 3, m, &targets, &vecs);
    o.targets = targets;
    int n;
    int *ids = prompt_ids(L, 2, m, &n);
    ct_graph *g = NULL;
    ct_err err = {0};
    ct_status rc = ct_attribute(&g, m, tc, ids, n, &o, &err);
    free(ids);
    if (rc) return ct_lua_raise(L, &err);
    if (lua_type(L, 2) == LUA_TSTRING) {   // the prompt as given
        char *p = strdup(lua_tostring(L, 2));
        if (p) free(g->prompt), g->prompt = p;
    }
    ct_lua_push_graph(L, g);
    lua_createtable(L, 0, 14);
#define F(k, v) (lua_pushnumber(L, (lua_Number)(v)), lua_setfield(L, -2, k))
    F("setup_s", stats.setup_s), F("logits_s", stats.logits_s), F("features_s", stats.features_s);
    F("ranking_s", stats.ranking_s), F("graph_s", stats.graph_s), F("backward_s", stats.backward_s);
    F("backward_flops", stats.backward_flops), F("n_rows", stats.n_rows), F("n_batches", stats.n_batches);
    F("batch_size", stats.batch_size), F("row_bytes", stats.row_bytes);
#undef F
    lua_pushboolean(L, stats.spilled);
    lua_setfield(L, -2, "spilled");
    return 2;
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
        {"attribute", l_rm_attribute}, {"model", l_rm_model}, {"transcoders", l_rm_transcoders}, {NULL, NULL}};
    luaL_newmetatable(L, CT_MT_REPLACEMENT);
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__methods");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_rm_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_replacement_model);
    lua_setfield(L, -2, "replacement_model");
}
