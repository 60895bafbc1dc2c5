// bind_tokenizer.c - "ctrace.Tokenizer": encode/decode with Hugging Face defaults.
//
// A tokenizer loaded from a file is owned by its userdata; one taken from a model
// (model:tokenizer()) borrows the model's and keeps the model alive through its uservalue.
#include <stdlib.h>

#include "bind.h"

typedef struct {
    ct_tokenizer *tok;   // first field: ct_lua_check_box reads it
    int owned;
    void **model_box;    // borrowed from this model's box (kept alive by the uservalue)
} tok_box;

static ct_tokenizer *check_tok(lua_State *L, int idx) {
    tok_box *b = luaL_checkudata(L, idx, CT_MT_TOKENIZER);
    if (b->model_box && !*b->model_box) b->tok = NULL;   // the model was freed
    return ct_lua_check_box(L, idx, CT_MT_TOKENIZER);
}

static tok_box *new_tok_box(lua_State *L) {
    tok_box *b = lua_newuserdata(L, sizeof *b);
    b->tok = NULL;
    b->owned = 0;
    b->model_box = NULL;
    luaL_getmetatable(L, CT_MT_TOKENIZER);
    lua_setmetatable(L, -2);
    return b;
}

void ct_lua_push_tokenizer_of(lua_State *L, int model_idx, ct_tokenizer *tok) {
    model_idx = model_idx < 0 ? lua_gettop(L) + model_idx + 1 : model_idx;
    tok_box *b = new_tok_box(L);   // [..., ud]
    b->tok = tok;
    b->model_box = lua_touserdata(L, model_idx);
    lua_createtable(L, 1, 0);      // [..., ud, env]
    lua_pushvalue(L, model_idx);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, -2);            // [..., ud]
}

static int l_load_tokenizer(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    tok_box *b = new_tok_box(L);
    ct_err err = {0};
    if (ct_tokenizer_load(ct_lua_ctx(L), &b->tok, path, &err)) return ct_lua_raise(L, &err);
    b->owned = 1;
    return 1;
}

static int l_tok_encode(lua_State *L) {
    ct_tokenizer *t = check_tok(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    static const char *const allowed[] = {"add_special_tokens", NULL};
    ct_lua_check_opts(L, 3, "ctrace.Tokenizer:encode", allowed);
    int add = ct_lua_opt_bool(L, 3, "add_special_tokens", 1);
    int *ids, n;
    ct_err err = {0};
    if (ct_tokenizer_encode(t, s, len, add, &ids, &n, &err)) return ct_lua_raise(L, &err);
    ct_lua_push_ids(L, ids, n);
    free(ids);
    return 1;
}

static int l_tok_decode(lua_State *L) {
    ct_tokenizer *t = check_tok(L, 1);
    static const char *const allowed[] = {"skip_special_tokens", NULL};
    ct_lua_check_opts(L, 3, "ctrace.Tokenizer:decode", allowed);
    int skip = ct_lua_opt_bool(L, 3, "skip_special_tokens", 0);
    int n, *ids = ct_lua_check_ids(L, 2, &n);
    char *text;
    size_t len;
    ct_err err = {0};
    ct_status rc = ct_tokenizer_decode(t, ids, n, skip, &text, &len, &err);
    free(ids);
    if (rc) return ct_lua_raise(L, &err);
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

static int l_tok_vocab_size(lua_State *L) {
    lua_pushinteger(L, ct_tokenizer_vocab_size(check_tok(L, 1)));
    return 1;
}

static int l_tok_id_to_token(lua_State *L) {
    ct_tokenizer *t = check_tok(L, 1);
    const char *p = ct_tokenizer_piece(t, (int)luaL_checkinteger(L, 2));
    if (p) lua_pushstring(L, p);
    else lua_pushnil(L);
    return 1;
}

// tok:token_text(id): the text one token stands for inside a text (leading space kept)
static int l_tok_token_text(lua_State *L) {
    ct_tokenizer *t = check_tok(L, 1);
    char *s;
    size_t n;
    ct_err err = {0};
    if (ct_tokenizer_token_text(t, (int)luaL_checkinteger(L, 2), &s, &n, &err)) return ct_lua_raise(L, &err);
    lua_pushlstring(L, s, n);
    free(s);
    return 1;
}

static int l_tok_token_to_id(lua_State *L) {
    ct_tokenizer *t = check_tok(L, 1);
    int id = ct_tokenizer_lookup(t, luaL_checkstring(L, 2));
    if (id >= 0) lua_pushinteger(L, id);
    else lua_pushnil(L);
    return 1;
}

static int l_tok_special(lua_State *L) {
    ct_tokenizer *t = check_tok(L, 1);
    lua_createtable(L, 0, 2);
    int bos = ct_tokenizer_bos(t), eos = ct_tokenizer_eos(t);
    if (bos >= 0) lua_pushinteger(L, bos), lua_setfield(L, -2, "bos_token_id");
    if (eos >= 0) lua_pushinteger(L, eos), lua_setfield(L, -2, "eos_token_id");
    return 1;
}

static int l_tok_index(lua_State *L) {
    luaL_getmetatable(L, CT_MT_TOKENIZER);
    lua_getfield(L, -1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1) || lua_type(L, 2) != LUA_TSTRING) return 1;
    lua_settop(L, 2);
    l_tok_special(L);   // bos_token_id, eos_token_id
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int l_tok_gc(lua_State *L) {
    tok_box *b = luaL_checkudata(L, 1, CT_MT_TOKENIZER);
    if (b->owned) ct_tokenizer_free(b->tok);
    b->tok = NULL;
    return 0;
}

void ct_lua_register_tokenizer(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"encode", l_tok_encode}, {"decode", l_tok_decode}, {"vocab_size", l_tok_vocab_size},
        {"id_to_token", l_tok_id_to_token}, {"token_text", l_tok_token_text}, {"token_to_id", l_tok_token_to_id},
        {"free", l_tok_gc}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", l_tok_gc}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"load_tokenizer", l_load_tokenizer}, {NULL, NULL}};
    ct_lua_new_type(L, CT_MT_TOKENIZER, methods, l_tok_index, meta);
    ct_lua_set_funcs(L, fns);
}
