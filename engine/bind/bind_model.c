// bind_model.c - "ctrace.Model": loading, config fields, tokenize, forward, run_with_cache,
// generate.
//
// Inputs to forward/run_with_cache/generate are a string (tokenized with the model's
// tokenizer, BOS added as Hugging Face does) or a table of token ids.
#include <stdlib.h>
#include <string.h>

#include "core/dist.h"
#include "bind.h"

static ct_model *check_model(lua_State *L, int idx) { return ct_lua_check_box(L, idx, CT_MT_MODEL); }

// load_model(path [, dtype]): the weights as stored, or held as stored in dtype "F32", "BF16" or
// "F16" (ct_model_hold_as)
static int l_load_model(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    const char *dt_name = luaL_optstring(L, 2, NULL);
    int dt = 0;   // by its name; ct_model_hold_as refuses all but F32, BF16 and F16
    while (dt_name && dt < CT_DT_COUNT && strcmp(dt_name, ct_dtype_name((ct_dtype)dt)) != 0) dt++;
    if (dt_name && dt == CT_DT_COUNT)
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "load_model: dtype '%s'; expected F32, BF16 or F16", dt_name);
    int split = lua_toboolean(L, 3);   // hold this rank's share of the layers (one process: all)
    ct_model *m;
    ct_err err = {0};
    if (ct_model_load(ct_lua_ctx(L), &m, path, &err)) return ct_lua_raise(L, &err);
    int P = ct_dist_size(), lo, hi, nl = m->cfg.n_layers;
    ct_layer_share(nl, ct_dist_rank(), P, &lo, &hi);
    if (split && P > 1 && (P > nl ? ct_fail(&err, CT_STATUS_BAD_ARG, "load_model: %d layers cannot be split among %d "
                                             "ranks (one layer each at least)", nl, P)
                                  : ct_model_hold_layers(m, lo, hi, &err))) {
        ct_model_free(m);
        return ct_lua_raise(L, &err);
    }
    if (dt_name && ct_model_hold_as(m, (ct_dtype)dt, &err)) {
        ct_model_free(m);
        return ct_lua_raise(L, &err);
    }
    void **box = ct_lua_new_box(L, CT_MT_MODEL);
    *box = m;
    return 1;
}

static ct_tokenizer *need_tokenizer(lua_State *L, ct_model *m, const char *fn) {
    if (!m->tok)
        ct_lua_fail(L, CT_STATUS_NOT_FOUND, "ctrace.Model:%s: the model at %s has no tokenizer beside it; "
                    "pass token ids instead", fn, m->path);
    return m->tok;
}

// Token ids of the input at idx (string or id table); malloc'ed. An empty string gives BOS alone.
static int *input_ids(lua_State *L, ct_model *m, int idx, int *n, const char *fn) {
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        ct_tokenizer *tok = need_tokenizer(L, m, fn);
        int *ids;
        ct_err err = {0};
        if (ct_tokenizer_encode(tok, s, len, 1, &ids, n, &err)) {
            ct_lua_raise(L, &err);
            return NULL;
        }
        if (*n == 0 && m->cfg.bos_id >= 0) ids[(*n)++] = m->cfg.bos_id;   // room: encode allocates >= 1
        return ids;
    }
    if (lua_type(L, idx) != LUA_TTABLE) {
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "ctrace.Model:%s expects a prompt string or a table of token ids, got %s", fn,
                    luaL_typename(L, idx));
        return NULL;
    }
    return ct_lua_check_ids(L, idx, n);
}

static int l_model_tokenize(lua_State *L) {
    ct_model *m = check_model(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    static const char *const allowed[] = {"add_special_tokens", NULL};
    ct_lua_check_opts(L, 3, "ctrace.Model:tokenize", allowed);
    int add = ct_lua_opt_bool(L, 3, "add_special_tokens", 1);
    int *ids, n;
    ct_err err = {0};
    if (ct_tokenizer_encode(need_tokenizer(L, m, "tokenize"), s, len, add, &ids, &n, &err)) return ct_lua_raise(L, &err);
    ct_lua_push_ids(L, ids, n);
    free(ids);
    return 1;
}

static int l_model_detokenize(lua_State *L) {
    ct_model *m = check_model(L, 1);
    static const char *const allowed[] = {"skip_special_tokens", NULL};
    ct_lua_check_opts(L, 3, "ctrace.Model:detokenize", allowed);
    int skip = ct_lua_opt_bool(L, 3, "skip_special_tokens", 0);
    ct_tokenizer *tok = need_tokenizer(L, m, "detokenize");
    int n, *ids = ct_lua_check_ids(L, 2, &n);
    char *text;
    size_t len;
    ct_err err = {0};
    ct_status rc = ct_tokenizer_decode(tok, ids, n, skip, &text, &len, &err);
    free(ids);
    if (rc) return ct_lua_raise(L, &err);
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

static int l_model_forward(lua_State *L) {
    ct_model *m = check_model(L, 1);
    int n, *ids = input_ids(L, m, 2, &n, "forward");
    int64_t shape[2] = {n, m->cfg.vocab_size};
    ct_tensor *logits = ct_tensor_new(2, shape);
    ct_err err = {0};
    ct_status rc = logits ? ct_model_forward(m, ids, n, NULL, NULL, ct_tensor_data(logits), 1, &err)
                          : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory for logits of %d positions", n);
    free(ids);
    if (rc) {
        ct_tensor_free(logits);
        return ct_lua_raise(L, &err);
    }
    ct_lua_push_tensor(L, logits);
    return 1;
}

static int l_model_run_with_cache(lua_State *L) {
    ct_model *m = check_model(L, 1);
    static const char *const allowed[] = {"hooks", NULL};
    ct_lua_check_opts(L, 3, "ctrace.Model:run_with_cache", allowed);
    ct_hook_cache hc;
    ct_err err = {0};
    int n_hooks = -1;
    ct_hook_id *hids = NULL;
    if (!lua_isnoneornil(L, 3)) {
        lua_getfield(L, 3, "hooks");
        if (!lua_isnil(L, -1)) {
            if (!lua_istable(L, -1)) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "option 'hooks' expects a list of hook names");
            n_hooks = (int)lua_objlen(L, -1);
            hids = lua_newuserdata(L, sizeof *hids * (size_t)(n_hooks + 1));   // GC-owned scratch
            for (int i = 0; i < n_hooks; i++) {
                lua_rawgeti(L, -2, i + 1);
                const char *name = lua_tostring(L, -1);
                if (!name) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "hooks[%d] is not a string", i + 1);
                if (ct_hook_parse(m, name, &hids[i], &err)) return ct_lua_raise(L, &err);
                lua_pop(L, 1);
            }
        }
    }
    int n, *ids = input_ids(L, m, 2, &n, "run_with_cache");
    ct_status rc = n_hooks >= 0 ? ct_hook_cache_init(&hc, hids, n_hooks, &err) : ct_hook_cache_init_all(&hc, m, &err);
    if (rc) {
        free(ids);
        return ct_lua_raise(L, &err);
    }
    int64_t shape[2] = {n, m->cfg.vocab_size};
    ct_tensor *logits = ct_tensor_new(2, shape);
    rc = logits ? ct_model_forward(m, ids, n, NULL, &hc, ct_tensor_data(logits), 1, &err)
                : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory for logits");
    free(ids);
    if (rc) {
        ct_tensor_free(logits);
        ct_hook_cache_free(&hc);
        return ct_lua_raise(L, &err);
    }
    ct_lua_push_tensor(L, logits);
    lua_createtable(L, 0, hc.n);
    for (int i = 0; i < hc.n; i++) {
        char name[96];
        ct_hook_name(hc.ids[i], name, sizeof name);
        ct_tensor_retain(hc.values[i]);
        ct_lua_push_tensor(L, hc.values[i]);
        lua_setfield(L, -2, name);
    }
    ct_hook_cache_free(&hc);
    return 2;
}

static int l_model_generate(lua_State *L) {
    ct_model *m = check_model(L, 1);
    static const char *const allowed[] = {"max_tokens", "temperature", "top_p", "seed", "stop_at_eos", NULL};
    ct_lua_check_opts(L, 3, "ctrace.Model:generate", allowed);
    ct_gen_opts o;
    ct_lua_gen_opts(L, 3, "ctrace.Model:generate", &o);
    ct_tokenizer *tok = need_tokenizer(L, m, "generate");
    int n, *ids = input_ids(L, m, 2, &n, "generate");
    int *gen = malloc(sizeof(int) * (size_t)(o.max_tokens + 1));
    ct_err err = {0};
    int n_gen = 0;
    ct_status rc = gen ? ct_model_generate(m, ids, n, &o, gen, &n_gen, &err) : ct_fail(&err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) rc = ct_lua_push_continuation(L, tok, ids, n, gen, n_gen, &err);
    free(ids);
    free(gen);
    if (rc) return ct_lua_raise(L, &err);
    return 1;
}

static int l_model_config(lua_State *L) {
    ct_model *m = check_model(L, 1);
    const ct_config *c = &m->cfg;
    lua_createtable(L, 0, 16);
#define SETI(k, v) (lua_pushinteger(L, (v)), lua_setfield(L, -2, k))
#define SETN(k, v) (lua_pushnumber(L, (v)), lua_setfield(L, -2, k))
    lua_pushstring(L, c->architecture);
    lua_setfield(L, -2, "architecture");
    SETI("d_model", c->d_model);
    SETI("d_mlp", c->d_mlp);
    SETI("n_layers", c->n_layers);
    SETI("n_heads", c->n_heads);
    SETI("n_kv_heads", c->n_kv_heads);
    SETI("d_head", c->head_dim);
    SETI("d_vocab", c->vocab_size);
    SETI("n_ctx", c->max_seq_len);
    SETI("bos_token_id", c->bos_id);
    SETI("eos_token_id", c->eos_id);
    SETN("norm_eps", c->norm_eps);
    SETN("rope_theta", c->rope_theta);
    lua_pushboolean(L, c->tied);
    lua_setfield(L, -2, "tied_embeddings");
    lua_pushstring(L, m->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, ct_dtype_name(m->layers[m->hold_lo].wq.dtype));
    lua_setfield(L, -2, "dtype");
    SETN("step_bytes", (double)ct_model_step_bytes(m));
    if (ct_model_is_split(m)) {   // {first, last}: the layers this rank holds (the layer split)
        lua_createtable(L, 2, 0);
        lua_pushinteger(L, m->hold_lo), lua_rawseti(L, -2, 1);
        lua_pushinteger(L, m->hold_hi - 1), lua_rawseti(L, -2, 2);
        lua_setfield(L, -2, "held_layers");
    }
#undef SETI
#undef SETN
    return 1;
}

// Model fields read as m.d_model, m.n_layers, ... (names as TransformerLens' cfg).
static int l_model_index(lua_State *L) {
    luaL_getmetatable(L, CT_MT_MODEL);
    lua_getfield(L, -1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1)) return 1;
    lua_settop(L, 2);
    if (lua_type(L, 2) != LUA_TSTRING) return 0;
    l_model_config(L);   // [m, key, cfg]
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

// m:unembedding([id]) -> the unembedding row of token id (D,), or the whole matrix (V, D)
static int l_model_unembedding(lua_State *L) {
    ct_model *m = check_model(L, 1);
    int D = m->cfg.d_model, V = m->cfg.vocab_size;
    ct_err err = {0};
    if (ct_model_holds(m, m->cfg.n_layers, "unembedding", &err)) return ct_lua_raise(L, &err);
    if (lua_isnoneornil(L, 2)) {   // a float32 copy of the whole matrix, in whatever dtype it is stored
        int64_t shape[2] = {V, D};
        ct_tensor *t = ct_tensor_new(2, shape);
        if (!t) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
        ct_mat_rows(&m->lm_head, 0, V, ct_tensor_data(t));
        ct_lua_push_tensor(L, t);
        return 1;
    }
    lua_Number id = luaL_checknumber(L, 2);
    if (id != (lua_Number)(int)id || id < 0 || id >= V)
        return ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "unembedding: token id %g outside 0..%d", id, V - 1);
    int64_t shape[1] = {D};
    ct_tensor *t = ct_tensor_new(1, shape);
    if (!t) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    ct_mat_row(&m->lm_head, (int64_t)id, ct_tensor_data(t));
    ct_lua_push_tensor(L, t);
    return 1;
}

// m:token_label(id) -> the text token id stands for (tok:token_text), or the id in decimal when
// the model has no tokenizer or its tokenizer has no token of that id (a vocabulary larger
// than the tokenizer, as Qwen3's 151,936 rows for 151,669 tokens); OUT_OF_RANGE outside the
// model's vocabulary
static int l_model_token_label(lua_State *L) {
    ct_model *m = check_model(L, 1);
    lua_Number id = luaL_checknumber(L, 2);
    int V = m->cfg.vocab_size;
    if (id != (lua_Number)(int)id || id < 0 || id >= V)
        return ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "token_label: token id %g outside 0..%d", id, V - 1);
    if (!m->tok || !ct_tokenizer_piece(m->tok, (int)id)) {
        lua_pushfstring(L, "%d", (int)id);
        return 1;
    }
    char *s;
    size_t n;
    ct_err err = {0};
    if (ct_tokenizer_token_text(m->tok, (int)id, &s, &n, &err)) return ct_lua_raise(L, &err);
    lua_pushlstring(L, s, n);
    free(s);
    return 1;
}

static int l_model_tokenizer(lua_State *L) {
    ct_model *m = check_model(L, 1);
    ct_lua_push_tokenizer_of(L, 1, need_tokenizer(L, m, "tokenizer"));
    return 1;
}

static int l_model_free(lua_State *L) {
    void **box = luaL_checkudata(L, 1, CT_MT_MODEL);
    ct_model_free(*box);
    *box = NULL;
    return 0;
}

static int l_model_tostring(lua_State *L) {
    void **box = luaL_checkudata(L, 1, CT_MT_MODEL);
    ct_model *m = *box;
    if (!m) lua_pushstring(L, "ctrace.Model (freed)");
    else
        lua_pushfstring(L, "ctrace.Model(%s, %d layers, d_model %d, vocab %d: %s)", m->cfg.architecture,
                        m->cfg.n_layers, m->cfg.d_model, m->cfg.vocab_size, m->path);
    return 1;
}

void ct_lua_register_model(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"tokenize", l_model_tokenize}, {"detokenize", l_model_detokenize}, {"forward", l_model_forward},
        {"run_with_cache", l_model_run_with_cache}, {"generate", l_model_generate}, {"config", l_model_config},
        {"unembedding", l_model_unembedding}, {"tokenizer", l_model_tokenizer}, {"token_label", l_model_token_label},
        {"free", l_model_free}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", l_model_free}, {"__tostring", l_model_tostring}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"load_model", l_load_model}, {NULL, NULL}};
    ct_lua_new_type(L, CT_MT_MODEL, methods, l_model_index, meta);
    ct_lua_set_funcs(L, fns);
}
