// bind_transcoders.c - "ctrace.Transcoders": a loaded transcoder set.
//
// Layers, features and target layers count from 0 (as hook names and graph node ids do);
// tensors index from 1.
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "core/dist.h"
#include "bind.h"
#include "core/fileio.h"
#include "formats/yaml.h"
#include "model/train.h"
#include "model/transcoder.h"
#include "trace/replacement.h"

static ct_transcoders *check_tc(lua_State *L, int idx) { return ct_lua_check_box(L, idx, CT_MT_TRANSCODERS); }

static int check_layer(lua_State *L, ct_transcoders *tc, int arg) {
    lua_Integer l = luaL_checkinteger(L, arg);
    if (l < 0 || l >= tc->n_layers)
        ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "layer %d outside 0..%d", (int)l, tc->n_layers - 1);
    return (int)l;
}

// A contiguous (T, n) float tensor argument; returns its data and T.
static const float *check_rows(lua_State *L, int arg, int n, int *T, const char *what) {
    ct_tensor *t = ct_lua_check_tensor(L, arg);
    if (t->ndim != 2 || t->shape[1] != n || !ct_tensor_is_contiguous(t))
        ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "%s: expected a contiguous (T, %d) tensor, got %d-d with last size %d", what, n,
                    t->ndim, t->ndim ? (int)t->shape[t->ndim - 1] : 0);
    *T = (int)t->shape[0];
    return ct_tensor_data(t);
}

static ct_tensor *new_2d(lua_State *L, int64_t a, int64_t b) {
    int64_t shape[2] = {a, b};
    ct_tensor *t = ct_tensor_new(2, shape);
    if (!t) ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory for a (%lld, %lld) tensor", (long long)a, (long long)b);
    ct_lua_push_tensor(L, t);   // owned by Lua from here on
    return t;
}

// core.load_transcoders(path [, {scan = id}]): scan replaces the config's (a set loaded by its
// Hugging Face name is known by that name, "org/repo//folder@revision", as in circuit-tracer)
static int l_load_transcoders(lua_State *L) {
    const char *path = luaL_checkstring(L, 1), *scan = NULL;
    int split = 0;
    if (!lua_isnoneornil(L, 2)) {
        static const char *const keys[] = {"scan", "layer_split", NULL};
        luaL_checktype(L, 2, LUA_TTABLE);
        ct_lua_check_opts(L, 2, "load_transcoders", keys);
        lua_getfield(L, 2, "scan");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            return ct_lua_fail(L, CT_STATUS_BAD_ARG, "load_transcoders: option 'scan' expects a string, got %s", luaL_typename(L, -1));
        scan = lua_tostring(L, -1);   // referenced by the options table
        lua_pop(L, 1);
        lua_getfield(L, 2, "layer_split");
        split = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (scan && strlen(scan) >= sizeof ((ct_transcoders *)0)->scan)
            return ct_lua_fail(L, CT_STATUS_BAD_ARG, "load_transcoders: scan '%.40s...' is longer than %zu bytes", scan,
                               sizeof ((ct_transcoders *)0)->scan - 1);
    }
    ct_transcoders *tc;
    ct_err err = {0};
    if (ct_transcoders_load_share(ct_lua_ctx(L), &tc, path, split ? ct_dist_rank() : 0, split ? ct_dist_size() : 1, &err))
        return ct_lua_raise(L, &err);
    if (scan) snprintf(tc->scan, sizeof tc->scan, "%s", scan);
    void **box = ct_lua_new_box(L, CT_MT_TRANSCODERS);
    *box = tc;
    return 1;
}

// core.transcoder_config(path) -> {model_kind = string | nil, lists_files = boolean}: what a set's
// config.yaml says about the files it needs (a `transcoders` list, or the files beside it).
static int l_transcoder_config(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    char *text;
    size_t len;
    ct_yaml *cfg = NULL;
    ct_err err = {0};
    ct_status rc = ct_read_file(ct_lua_ctx(L), path, &text, &len, 16u << 20, &err);
    if (!rc) {
        rc = ct_yaml_parse(&cfg, text, len, "config.yaml", &err);
        free(text);
    }
    if (rc) {
        ct_err_where(&err, path);
        return ct_lua_raise(L, &err);
    }
    char kind[64] = "";
    const char *k = ct_yaml_str(cfg, "model_kind");
    if (k) snprintf(kind, sizeof kind, "%s", k);
    int lists = ct_yaml_get(cfg, "transcoders") != NULL;
    ct_yaml_free(cfg);
    lua_createtable(L, 0, 2);
    if (k) {
        lua_pushstring(L, kind);
        lua_setfield(L, -2, "model_kind");
    }
    lua_pushboolean(L, lists);
    lua_setfield(L, -2, "lists_files");
    return 1;
}

// tc:encode(layer, x (T, D)) -> pre (T, F), acts (T, F)
static int l_tc_encode(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    int l = check_layer(L, tc, 2), T;
    const float *x = check_rows(L, 3, tc->d_model, &T, "ctrace.Transcoders:encode");
    int F = tc->layers[l].d_tc;
    ct_tensor *pre = new_2d(L, T, F), *act = new_2d(L, T, F);
    ct_err err = {0};
    if (ct_tc_encode(tc, l, x, T, ct_tensor_data(pre), ct_tensor_data(act), &err)) return ct_lua_raise(L, &err);
    return 2;
}

// tc:encode_sparse(layer, x (T, D)) -> positions, indices, activations: three lists of the
// nonzero activations in row-major order (positions and indices from 0)
static int l_tc_encode_sparse(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    int l = check_layer(L, tc, 2), T;
    const float *x = check_rows(L, 3, tc->d_model, &T, "ctrace.Transcoders:encode_sparse");
    int F = tc->layers[l].d_tc;
    ct_tensor *act = new_2d(L, T, F);   // scratch, collected with the call
    ct_err err = {0};
    if (ct_tc_encode(tc, l, x, T, NULL, ct_tensor_data(act), &err)) return ct_lua_raise(L, &err);
    const float *a = ct_tensor_data(act);
    lua_newtable(L);
    lua_newtable(L);
    lua_newtable(L);   // [.., act, pos, idx, val]
    int n = 0;
    for (int t = 0; t < T; t++)
        for (int f = 0; f < F; f++) {
            float v = a[(size_t)t * F + f];
            if (v == 0.0f) continue;
            n++;
            lua_pushinteger(L, t);
            lua_rawseti(L, -4, n);
            lua_pushinteger(L, f);
            lua_rawseti(L, -3, n);
            lua_pushnumber(L, v);
            lua_rawseti(L, -2, n);
        }
    return 3;
}

// tc:decode(layer, acts (T, F) [, target]) -> (T, D): acts through the decoder into `target`
// (default: layer), without bias or skip.
static int l_tc_decode(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    int l = check_layer(L, tc, 2), T;
    const float *act = check_rows(L, 3, tc->layers[l].d_tc, &T, "ctrace.Transcoders:decode");
    int target = (int)luaL_optinteger(L, 4, l);
    ct_tensor *y = new_2d(L, T, tc->d_model);
    ct_err err = {0};
    if (target < l || target >= l + tc->layers[l].n_out)
        return ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "layer %d features write layers %d..%d; got target %d", l, l,
                           l + tc->layers[l].n_out - 1, target);
    if (ct_tc_decode_add(tc, l, target - l, act, T, ct_tensor_data(y), &err)) return ct_lua_raise(L, &err);
    return 1;
}

// tc:reconstruct({x_0, ..., x_{L-1}}) -> {y_0, ...}: every output hook from the input hooks
static int l_tc_reconstruct(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if ((int)lua_objlen(L, 2) != tc->n_layers)
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "reconstruct expects a list of %d input tensors, got %d", tc->n_layers,
                           (int)lua_objlen(L, 2));
    int T = -1, D = tc->d_model;
    ct_tensor *in = NULL;
    for (int l = 0; l < tc->n_layers; l++) {
        lua_rawgeti(L, 2, l + 1);
        int Tl;
        const float *x = check_rows(L, -1, D, &Tl, "ctrace.Transcoders:reconstruct");
        if (T < 0) {
            T = Tl;
            in = new_2d(L, (int64_t)tc->n_layers * T, D);   // [.., x, in]
            lua_insert(L, -2);
        } else if (Tl != T) {
            return ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "reconstruct: input %d has %d positions, input 1 has %d", l + 1, Tl, T);
        }
        memcpy(ct_tensor_data(in) + (size_t)l * T * D, x, sizeof(float) * (size_t)T * D);
        lua_pop(L, 1);
    }
    ct_tensor *out = new_2d(L, (int64_t)tc->n_layers * T, D);
    ct_err err = {0};
    if (ct_tc_reconstruct(tc, ct_tensor_data(in), T, ct_tensor_data(out), &err)) return ct_lua_raise(L, &err);
    lua_createtable(L, tc->n_layers, 0);
    for (int l = 0; l < tc->n_layers; l++) {
        ct_tensor *v;
        if (ct_tensor_slice(&v, out, 0, (int64_t)l * T, (int64_t)(l + 1) * T, 1, &err)) return ct_lua_raise(L, &err);
        ct_lua_push_tensor(L, v);
        lua_rawseti(L, -2, l + 1);
    }
    return 1;
}

static int push_vec(lua_State *L, const float *v, int n) {
    if (!v) {
        lua_pushnil(L);
        return 1;
    }
    int64_t shape[1] = {n};
    ct_tensor *t = ct_tensor_from(v, 1, shape);
    if (!t) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    ct_lua_push_tensor(L, t);
    return 1;
}

// tc:decoder_row(layer, feature [, target]) -> (D,)
static int l_tc_decoder_row(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    int l = check_layer(L, tc, 2);
    lua_Integer f = luaL_checkinteger(L, 3);
    int target = (int)luaL_optinteger(L, 4, l);
    int64_t shape[1] = {tc->d_model};
    ct_tensor *t = ct_tensor_new(1, shape);
    if (!t) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    ct_lua_push_tensor(L, t);
    ct_err err = {0};
    if (ct_tc_decoder_row(tc, l, (int64_t)f, target - l, ct_tensor_data(t), &err)) return ct_lua_raise(L, &err);
    return 1;
}

// tc:encoder_row(layer, feature) -> (D,)
static int l_tc_encoder_row(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    int l = check_layer(L, tc, 2);
    lua_Integer f = luaL_checkinteger(L, 3);
    if (f < 0 || f >= tc->layers[l].d_tc)
        return ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "feature %d outside 0..%d", (int)f, tc->layers[l].d_tc - 1);
    int64_t shape[1] = {tc->d_model};
    ct_tensor *t = ct_tensor_new(1, shape);
    if (!t) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    ct_lua_push_tensor(L, t);
    ct_err err = {0};
    if (ct_tc_encoder_row(tc, l, (int64_t)f, ct_tensor_data(t), &err)) return ct_lua_raise(L, &err);
    return 1;
}

// tc:params(layer) -> {b_enc=, b_dec=, threshold=} copies
static int l_tc_params(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    int l = check_layer(L, tc, 2);
    const ct_tc_layer *y = &tc->layers[l];
    lua_createtable(L, 0, 3);
    push_vec(L, y->b_enc, y->d_tc);
    lua_setfield(L, -2, "b_enc");
    push_vec(L, y->b_dec, tc->d_model);
    lua_setfield(L, -2, "b_dec");
    push_vec(L, y->threshold, y->d_tc);
    lua_setfield(L, -2, "threshold");
    return 1;
}

// Token id lists of a table of texts (strings tokenized with BOS, or id tables); malloc'ed.
static int **texts_ids(lua_State *L, int idx, ct_model *m, int **lens, int *n) {
    luaL_checktype(L, idx, LUA_TTABLE);
    *n = (int)lua_objlen(L, idx);
    int **ids = calloc((size_t)*n + 1, sizeof *ids);
    *lens = calloc((size_t)*n + 1, sizeof **lens);
    ct_err err = {0};
    ct_status rc = ids && *lens ? CT_OK : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; i < *n && !rc; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            if (!m->tok) rc = ct_fail(&err, CT_STATUS_NOT_FOUND, "texts: the model has no tokenizer; pass token ids");
            else rc = ct_tokenizer_encode(m->tok, s, len, 1, &ids[i], &(*lens)[i], &err);
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            int k = (int)lua_objlen(L, -1);
            ids[i] = malloc(sizeof(int) * (size_t)(k + 1));
            (*lens)[i] = k;
            for (int j = 0; ids[i] && j < k; j++) {
                lua_rawgeti(L, -1, j + 1);
                ids[i][j] = (int)lua_tointeger(L, -1);
                lua_pop(L, 1);
            }
        } else {
            rc = ct_fail(&err, CT_STATUS_BAD_ARG, "texts[%d] is %s; expected a string or a table of ids", i + 1,
                         luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    if (rc) {
        for (int i = 0; ids && i < *n; i++) free(ids[i]);
        free(ids);
        free(*lens);
        ct_lua_raise(L, &err);
    }
    return ids;
}

// tc:evaluate(model, texts) -> {layers = {{fvu=, l0=, dead=}, ...}, agreement=, kl=, n_tokens=}
static int l_tc_evaluate(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    ct_model *m = ct_lua_check_box(L, 2, CT_MT_MODEL);
    int n, *lens, **ids = texts_ids(L, 3, m, &lens, &n);
    ct_tc_eval e;
    ct_err err = {0};
    ct_replacement r = {0};
    ct_status rc = ct_replacement_init(&r, m, tc, &err);
    if (!rc) rc = ct_tc_evaluate(&r, (const int *const *)ids, lens, n, &e, &err);
    ct_replacement_free(&r);
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(lens);
    if (rc) return ct_lua_raise(L, &err);
    lua_createtable(L, 0, 4);
    lua_createtable(L, e.n_layers, 0);
    for (int l = 0; l < e.n_layers; l++) {
        lua_createtable(L, 0, 3);
        lua_pushnumber(L, e.fvu[l]);
        lua_setfield(L, -2, "fvu");
        lua_pushnumber(L, e.l0[l]);
        lua_setfield(L, -2, "l0");
        lua_pushnumber(L, e.dead[l]);
        lua_setfield(L, -2, "dead");
        lua_rawseti(L, -2, l + 1);
    }
    lua_setfield(L, -2, "layers");
    lua_pushnumber(L, e.agreement);
    lua_setfield(L, -2, "agreement");
    lua_pushnumber(L, e.kl);
    lua_setfield(L, -2, "kl");
    lua_pushnumber(L, (lua_Number)e.n_tokens);
    lua_setfield(L, -2, "n_tokens");
    ct_tc_eval_free(&e);
    return 1;
}

static void print_progress(void *ctx, const ct_train_progress *p) {
    (void)ctx;
    if (p->layer < 0)
        fprintf(stderr, "clt step %ld/%ld loss %.4f fvu %.4f l0 %.1f dead %.1f%% %.0f tok/s\n", p->step, p->steps, p->loss,
                p->fvu, p->l0, 100.0 * p->dead, p->tokens_per_s);
    else fprintf(stderr, "layer %d step %ld/%ld loss %.4f fvu %.4f l0 %.1f dead %.1f%% %.0f tok/s\n", p->layer, p->step,
                 p->steps, p->loss, p->fvu, p->l0, 100.0 * p->dead, p->tokens_per_s);
}

// ctrace.train_transcoders(model, texts, opts): trains a transcoder set for every layer
// (ct_train_set) and writes it (config.yaml + layer files) to opts.dir.
static int l_train_transcoders(lua_State *L) {
    ct_model *m = ct_lua_check_box(L, 1, CT_MT_MODEL);
    static const char *const allowed[] = {"dir", "d_transcoder", "k", "k_aux", "aux_coef", "batch", "steps", "lr", "seed",
                                          "skip", "input_hook", "output_hook", "dead_tokens", "log_every", "checkpoint_dir",
                                          "resume", "quiet", "model_name", "kind", NULL};
    ct_lua_check_opts(L, 3, "ctrace.train_transcoders", allowed);
    ct_train_set_opts o = {0};
    lua_getfield(L, 3, "dir");
    if (!(o.dir = lua_tostring(L, -1)))
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "ctrace.train_transcoders: option 'dir' (output directory) is required");
    lua_getfield(L, 3, "kind");
    const char *kind = lua_isstring(L, -1) ? lua_tostring(L, -1) : "plt";
    o.clt = strcmp(kind, "clt") == 0;
    if (!o.clt && strcmp(kind, "plt") != 0)
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "ctrace.train_transcoders: kind '%s'; expected plt or clt", kind);
    lua_getfield(L, 3, "input_hook");
    o.input_hook = lua_tostring(L, -1);
    lua_getfield(L, 3, "output_hook");
    o.output_hook = lua_tostring(L, -1);
    lua_getfield(L, 3, "checkpoint_dir");
    o.checkpoint_dir = lua_tostring(L, -1);
    lua_getfield(L, 3, "model_name");
    o.model_name = lua_tostring(L, -1);   // the strings stay referenced by the options table
    int d_tc = (int)ct_lua_opt_number(L, 3, "d_transcoder", 1024);
    o.train = (ct_train_opts){
        .d_tc = d_tc,
        .k = (int)ct_lua_opt_number(L, 3, "k", 16),
        .k_aux = (int)ct_lua_opt_number(L, 3, "k_aux", d_tc < 32 && d_tc > 0 ? d_tc : 32),   // a small set: all its features
        .aux_coef = (float)ct_lua_opt_number(L, 3, "aux_coef", 1.0 / 32),
        .batch = (int)ct_lua_opt_number(L, 3, "batch", 1024),
        .steps = (long)ct_lua_opt_number(L, 3, "steps", 2000),
        .lr = (float)ct_lua_opt_number(L, 3, "lr", 1e-3),
        .seed = (uint64_t)ct_lua_opt_number(L, 3, "seed", 1),
        .skip = ct_lua_opt_bool(L, 3, "skip", 0),
        .dead_tokens = (long)ct_lua_opt_number(L, 3, "dead_tokens", 100000),
        .log_every = (int)ct_lua_opt_number(L, 3, "log_every", 200),
        .resume = ct_lua_opt_bool(L, 3, "resume", 0),
        .progress = ct_lua_opt_bool(L, 3, "quiet", 0) ? NULL : print_progress,
        .ctx = ct_lua_ctx(L),
    };
    int n, *lens, **ids = texts_ids(L, 2, m, &lens, &n);
    ct_err err = {0};
    ct_status rc = ct_train_set(m, (const int *const *)ids, lens, n, &o, &err);
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(lens);
    if (rc) return ct_lua_raise(L, &err);
    lua_pushstring(L, o.dir);
    return 1;
}

static void push_tok_list(lua_State *L, const ct_model *m, const float *effect, const int64_t *ids, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)ids[i]);
        lua_setfield(L, -2, "id");
        lua_pushnumber(L, effect[ids[i]]);
        lua_setfield(L, -2, "value");
        const char *piece = m->tok ? ct_tokenizer_piece(m->tok, (int)ids[i]) : NULL;
        if (piece) {
            lua_pushstring(L, piece);
            lua_setfield(L, -2, "token");
        }
        lua_rawseti(L, -2, i + 1);
    }
}

// tc:top_logits(model, layer, feature [, n]) -> {top = {{id, token, value}, ...}, bottom = ...}:
// the feature's direct effect on the logits (ct_tc_logit_effect), its n largest (ties: lower id
// first) and n most negative (ties: higher id first)
static int l_tc_top_logits(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    ct_model *m = ct_lua_check_box(L, 2, CT_MT_MODEL);
    int l = check_layer(L, tc, 3);
    lua_Integer f = luaL_checkinteger(L, 4);
    int n = (int)luaL_optinteger(L, 5, 10), V = m->cfg.vocab_size;
    if (n < 1 || n > V) n = V < 10 ? V : 10;
    float *effect = malloc(sizeof(float) * (size_t)V), *neg = malloc(sizeof(float) * (size_t)V);
    int64_t *top = malloc(sizeof(int64_t) * (size_t)n), *bottom = malloc(sizeof(int64_t) * (size_t)n);
    ct_err err = {0};
    ct_status rc = effect && neg && top && bottom ? ct_tc_logit_effect(tc, m, l, (int64_t)f, effect, &err)
                                                  : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        ct_topk(top, effect, V, n);
        for (int v = 0; v < V; v++) neg[v] = -effect[V - 1 - v];   // reversed: ties go to the higher id
        ct_topk(bottom, neg, V, n);
        for (int i = 0; i < n; i++) bottom[i] = V - 1 - bottom[i];
        lua_createtable(L, 0, 2);
        push_tok_list(L, m, effect, top, n);
        lua_setfield(L, -2, "top");
        push_tok_list(L, m, effect, bottom, n);
        lua_setfield(L, -2, "bottom");
    }
    free(effect), free(neg), free(top), free(bottom);
    return rc ? ct_lua_raise(L, &err) : 1;
}

// tc:errors(model, input) -> {e_0, ..., e_{L-1}}: (T, D) error vectors of the real run
// (output hook minus the transcoders' reconstruction) at every layer
static int l_tc_errors(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    ct_model *m = ct_lua_check_box(L, 2, CT_MT_MODEL);
    int n, *lens, **ids;
    lua_createtable(L, 1, 0);   // wrap the input as a list of one text
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, 1);
    ids = texts_ids(L, lua_gettop(L), m, &lens, &n);
    int T = lens[0];
    ct_tensor *all = ct_tensor_new(2, (int64_t[]){(int64_t)tc->n_layers * T, tc->d_model});
    ct_err err = {0};
    ct_status rc = all ? ct_tc_errors(m, tc, ids[0], T, ct_tensor_data(all), &err)
                       : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory");
    free(ids[0]);
    free(ids);
    free(lens);
    if (rc) {
        ct_tensor_free(all);
        return ct_lua_raise(L, &err);
    }
    ct_lua_push_tensor(L, all);   // [.., list, all]
    lua_createtable(L, tc->n_layers, 0);
    for (int l = 0; l < tc->n_layers; l++) {
        ct_tensor *v;
        if (ct_tensor_slice(&v, all, 0, (int64_t)l * T, (int64_t)(l + 1) * T, 1, &err)) return ct_lua_raise(L, &err);
        ct_lua_push_tensor(L, v);
        lua_rawseti(L, -2, l + 1);
    }
    return 1;
}

static int l_tc_d_transcoder(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    lua_pushinteger(L, tc->layers[check_layer(L, tc, 2)].d_tc);
    return 1;
}

static int l_tc_check(lua_State *L) {
    ct_transcoders *tc = check_tc(L, 1);
    ct_model *m = ct_lua_check_box(L, 2, CT_MT_MODEL);
    ct_err err = {0};
    if (ct_transcoders_check(tc, m, &err)) return ct_lua_raise(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_tc_index(lua_State *L) {
    luaL_getmetatable(L, CT_MT_TRANSCODERS);
    lua_getfield(L, -1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1) || lua_type(L, 2) != LUA_TSTRING) return 1;
    ct_transcoders *tc = check_tc(L, 1);
    const char *k = lua_tostring(L, 2);
    static const char *acts[] = {"relu", "jump_relu", "topk"};
    if (strcmp(k, "n_layers") == 0) lua_pushinteger(L, tc->n_layers);
    else if (strcmp(k, "d_model") == 0) lua_pushinteger(L, tc->d_model);
    else if (strcmp(k, "kind") == 0) lua_pushstring(L, tc->kind == CT_TC_CLT ? "clt" : "plt");
    else if (strcmp(k, "activation") == 0) lua_pushstring(L, acts[tc->act]);
    else if (strcmp(k, "k") == 0 && tc->act == CT_TC_TOPK) lua_pushinteger(L, tc->k);
    else if (strcmp(k, "feature_input_hook") == 0) lua_pushstring(L, tc->input_hook);
    else if (strcmp(k, "feature_output_hook") == 0) lua_pushstring(L, tc->output_hook);
    else if (strcmp(k, "model_name") == 0) lua_pushstring(L, tc->model_name);
    else if (strcmp(k, "neuronpedia_model_id") == 0) lua_pushstring(L, tc->np_model_id);
    else if (strcmp(k, "neuronpedia_source_set") == 0) lua_pushstring(L, tc->np_source_set);
    else if (strcmp(k, "scan") == 0) lua_pushstring(L, tc->scan);
    else if (strcmp(k, "path") == 0) lua_pushstring(L, tc->path);
    else if (strcmp(k, "skip") == 0) lua_pushboolean(L, tc->layers[tc->hold_lo].W_skip != NULL);
    else if (strcmp(k, "files") == 0) lua_pushinteger(L, tc->n_st + tc->n_npz);   // weight files opened
    else if (strcmp(k, "held_layers") == 0 && tc->hold_hi) {   // {first, last} under the layer split
        lua_createtable(L, 2, 0);
        lua_pushinteger(L, tc->hold_lo), lua_rawseti(L, -2, 1);
        lua_pushinteger(L, tc->hold_hi - 1), lua_rawseti(L, -2, 2);
    } else lua_pushnil(L);
    return 1;
}

static int l_tc_free(lua_State *L) {
    void **box = luaL_checkudata(L, 1, CT_MT_TRANSCODERS);
    ct_transcoders_free(*box);
    *box = NULL;
    return 0;
}

static int l_tc_tostring(lua_State *L) {
    void **box = luaL_checkudata(L, 1, CT_MT_TRANSCODERS);
    ct_transcoders *tc = *box;
    if (!tc) lua_pushstring(L, "ctrace.Transcoders (freed)");
    else
        lua_pushfstring(L, "ctrace.Transcoders(%s, %d layers, d_model %d, %d features in layer 0, %s -> %s: %s)",
                        tc->kind == CT_TC_CLT ? "clt" : "plt", tc->n_layers, tc->d_model, tc->layers[0].d_tc, tc->input_hook,
                        tc->output_hook, tc->path);
    return 1;
}

void ct_lua_register_transcoders(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"encode", l_tc_encode}, {"encode_sparse", l_tc_encode_sparse}, {"decode", l_tc_decode},
        {"reconstruct", l_tc_reconstruct}, {"decoder_row", l_tc_decoder_row}, {"encoder_row", l_tc_encoder_row},
        {"params", l_tc_params}, {"d_transcoder", l_tc_d_transcoder}, {"check", l_tc_check}, {"evaluate", l_tc_evaluate},
        {"top_logits", l_tc_top_logits}, {"errors", l_tc_errors}, {"free", l_tc_free}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", l_tc_free}, {"__tostring", l_tc_tostring}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"load_transcoders", l_load_transcoders}, {"transcoder_config", l_transcoder_config},
                                   {"train_transcoders", l_train_transcoders},
                                   {NULL, NULL}};
    ct_lua_new_type(L, CT_MT_TRANSCODERS, methods, l_tc_index, meta);
    ct_lua_set_funcs(L, fns);
}
