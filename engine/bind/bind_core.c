// core.c - the ctrace.core module: registers every type and a few engine facts.
#include <stdlib.h>
#include <time.h>

#include "bind.h"

static int l_mem_bytes(lua_State *L) {
    lua_pushnumber(L, (lua_Number)ct_mem_bytes());
    return 1;
}

static int l_threads(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) ct_set_threads((int)luaL_checkinteger(L, 1));
    lua_pushinteger(L, ct_get_threads());
    return 1;
}

// Monotonic wall-clock seconds (os.clock counts CPU time of every BLAS thread).
static int l_clock(lua_State *L) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    lua_pushnumber(L, (lua_Number)t.tv_sec + (lua_Number)t.tv_nsec * 1e-9);
    return 1;
}

// The methods table of a ctrace type, so lua/ctrace can add conveniences written in Lua.
static int l_methods(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    luaL_getmetatable(L, name);
    if (!lua_istable(L, -1)) return ct_lua_fail(L, CT_STATUS_NOT_FOUND, "no ctrace type named '%s'", name);
    lua_getfield(L, -1, "__methods");
    return 1;
}

int luaopen_ctrace_core(lua_State *L) {
    lua_newtable(L);
    ct_lua_register_tensor(L);
    ct_lua_register_model(L);
    ct_lua_register_tokenizer(L);
    ct_lua_register_transcoders(L);
    ct_lua_register_json(L);
    ct_lua_register_replacement(L);
    ct_lua_register_graph(L);
    lua_pushcfunction(L, l_mem_bytes);
    lua_setfield(L, -2, "mem_bytes");
    lua_pushcfunction(L, l_threads);
    lua_setfield(L, -2, "threads");
    lua_pushcfunction(L, l_methods);
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, l_clock);
    lua_setfield(L, -2, "clock");
    lua_pushstring(L, CT_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, ct_blas_core());
    lua_setfield(L, -2, "blas_core");
    return 1;
}
