// bind_activations.c - "ctrace.Activations": every transcoder feature's activation in an
// intervention's pass beside its clean value, kept in C (one sorted array) and turned into Lua
// tables only when asked for.
//
//   acts:get(layer, pos, feature) -> {layer, pos, feature, value, clean, delta} or nil
//   acts:list() -> every entry, sorted by (layer, pos, feature)
//   #acts -> the number of entries
#include <stdlib.h>
#include <string.h>

#include "bind.h"

void ct_lua_push_activation(lua_State *L, int layer, int pos, int64_t feature, float value, float clean) {
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, layer), lua_setfield(L, -2, "layer");
    lua_pushinteger(L, pos), lua_setfield(L, -2, "pos");
    lua_pushnumber(L, (lua_Number)feature), lua_setfield(L, -2, "feature");
    lua_pushnumber(L, value), lua_setfield(L, -2, "value");
    lua_pushnumber(L, clean), lua_setfield(L, -2, "clean");
    lua_pushnumber(L, (double)value - clean), lua_setfield(L, -2, "delta");
}

void ct_lua_push_activations(lua_State *L, ct_sparse_acts *a) {
    ct_sparse_acts *u = lua_newuserdata(L, sizeof *u);
    *u = *a;
    memset(a, 0, sizeof *a);
    luaL_getmetatable(L, CT_MT_ACTIVATIONS);
    lua_setmetatable(L, -2);
}

static ct_sparse_acts *check_acts(lua_State *L, int idx) { return luaL_checkudata(L, idx, CT_MT_ACTIVATIONS); }

static void push_entry(lua_State *L, const ct_sparse_acts *a, int64_t i) {
    const int32_t *id = a->idx + 3 * i;
    ct_lua_push_activation(L, id[0], id[1], id[2], a->value[i], a->clean ? a->clean[i] : 0.0f);
}

static int l_acts_get(lua_State *L) {
    ct_sparse_acts *a = check_acts(L, 1);
    int64_t i = ct_sparse_acts_find(a, (int)luaL_checkinteger(L, 2), (int)luaL_checkinteger(L, 3), luaL_checkinteger(L, 4));
    if (i < 0) return 0;
    push_entry(L, a, i);
    return 1;
}

static int l_acts_list(lua_State *L) {
    ct_sparse_acts *a = check_acts(L, 1);
    lua_createtable(L, (int)a->n, 0);
    for (int64_t i = 0; i < a->n; i++) {
        push_entry(L, a, i);
        lua_rawseti(L, -2, (int)(i + 1));
    }
    return 1;
}

static int l_acts_len(lua_State *L) {
    lua_pushnumber(L, (lua_Number)check_acts(L, 1)->n);
    return 1;
}

static int l_acts_gc(lua_State *L) {
    ct_sparse_acts_free(check_acts(L, 1));
    return 0;
}

static int l_acts_tostring(lua_State *L) {
    lua_pushfstring(L, "ctrace.Activations(%d entries)", (int)check_acts(L, 1)->n);
    return 1;
}

void ct_lua_register_activations(lua_State *L) {
    static const luaL_Reg methods[] = {{"get", l_acts_get}, {"list", l_acts_list}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__len", l_acts_len}, {"__gc", l_acts_gc}, {"__tostring", l_acts_tostring}, {NULL, NULL}};
    ct_lua_new_type(L, CT_MT_ACTIVATIONS, methods, NULL, meta);
}
