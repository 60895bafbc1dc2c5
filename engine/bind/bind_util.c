// bind_util.c - error raising, option tables, boxes and id lists for the bindings.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bind.h"

int ct_lua_raise(lua_State *L, const ct_err *err) {
    return luaL_error(L, "%s: %s", ct_status_str(err->status), err->msg);
}

int ct_lua_fail(lua_State *L, ct_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return luaL_error(L, "%s: %s", ct_status_str(st), msg);
}

void ct_lua_check_opts(lua_State *L, int idx, const char *fn, const char *const *allowed) {
    if (lua_isnoneornil(L, idx)) return;
    if (!lua_istable(L, idx)) {
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s expects an options table, got %s", fn, luaL_typename(L, idx));
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {   // [key, value]
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; allowed[i] && !known; i++) known = strcmp(k, allowed[i]) == 0;
        }
        if (!known) {
            char list[400] = "";
            size_t n = 0;
            for (int i = 0; allowed[i] && n < sizeof list - 64; i++)
                n += (size_t)snprintf(list + n, sizeof list - n, i ? ", %s" : "%s", allowed[i]);
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1);
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: unknown option '%s' (expected one of: %s)", fn, k, list);
        }
    }
}

lua_Number ct_lua_opt_number(lua_State *L, int idx, const char *key, lua_Number def) {
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, key);
    lua_Number v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) {
            const char *tn = luaL_typename(L, -1);
            lua_pop(L, 1);
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "option '%s' expects a number, got %s", key, tn);
        }
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

int ct_lua_opt_bool(lua_State *L, int idx, const char *key, int def) {
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, key);
    int v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1)) {
            const char *tn = luaL_typename(L, -1);
            lua_pop(L, 1);
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "option '%s' expects a boolean, got %s", key, tn);
        }
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

void **ct_lua_new_box(lua_State *L, const char *mt) {
    void **box = lua_newuserdata(L, sizeof(void *));
    *box = NULL;
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    return box;
}

// The name under which the function running at stack level `level` (0: this C function, 1: its
// caller) sits in metatable mt's methods (its __methods table), or NULL: what a method called on a
// freed object was called.
static const char *method_name(lua_State *L, const char *mt, int level) {
    lua_Debug ar;
    const char *name = NULL;
    if (!lua_getstack(L, level, &ar) || !lua_getinfo(L, "f", &ar)) return NULL;   // [.., fn]
    luaL_getmetatable(L, mt);                                                 // [.., fn, mt]
    lua_getfield(L, -1, "__methods");                                         // [.., fn, mt, methods]
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (!name && lua_next(L, -2)) {                                    // [.., methods, key, value]
            if (lua_rawequal(L, -1, -5) && lua_type(L, -2) == LUA_TSTRING) name = lua_tostring(L, -2);
            lua_pop(L, name ? 2 : 1);
        }
    }
    lua_pop(L, 3);   // the name stays referenced by the methods table
    return name;
}

void *ct_lua_check_box(lua_State *L, int idx, const char *mt) {
    void **box = luaL_checkudata(L, idx, mt);
    if (!*box) {
        // the method's name: a C method's, else that of a Lua method of the type that called it
        const char *name = method_name(L, mt, 0);
        if (!name) name = method_name(L, mt, 1);
        if (name) ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s:%s called on a freed %s (free() released it)", mt, name, mt + 7);
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "a freed %s was used (free() released it)", mt);
    }
    return *box;
}

int *ct_lua_check_ids(lua_State *L, int idx, int *n) {
    luaL_checktype(L, idx, LUA_TTABLE);
    int len = (int)lua_objlen(L, idx);
    int *ids = malloc(sizeof(int) * (size_t)(len > 0 ? len : 1));
    if (!ids) {
        ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
        return NULL;
    }
    for (int i = 0; i < len; i++) {
        lua_rawgeti(L, idx, i + 1);
        lua_Number v = lua_tonumber(L, -1);
        int bad = lua_type(L, -1) != LUA_TNUMBER || v != (lua_Number)(int)v;
        lua_pop(L, 1);
        if (bad) {
            free(ids);
            ct_lua_fail(L, CT_STATUS_BAD_ARG, "token ids: entry %d is not an integer", i + 1);
        }
        ids[i] = (int)v;
    }
    *n = len;
    return ids;
}

void ct_lua_push_ids(lua_State *L, const int *ids, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

void ct_lua_gen_opts(lua_State *L, int idx, const char *fn, ct_gen_opts *o) {
    *o = (ct_gen_opts){
        .max_tokens = (int)ct_lua_opt_number(L, idx, "max_tokens", 64),
        .temperature = (float)ct_lua_opt_number(L, idx, "temperature", 1.0),
        .top_p = (float)ct_lua_opt_number(L, idx, "top_p", 1.0),
        .seed = (uint64_t)ct_lua_opt_number(L, idx, "seed", 0),
        .stop_at_eos = ct_lua_opt_bool(L, idx, "stop_at_eos", 1),
    };
    if (o->max_tokens < 0 || o->max_tokens > (1 << 20))
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: max_tokens must be in 0..1048576, got %d", fn, o->max_tokens);
    if (!(o->temperature >= 0)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: temperature must be >= 0", fn);
    if (!(o->top_p > 0 && o->top_p <= 1)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s: top_p must be in (0, 1]", fn);
}

ct_status ct_lua_push_continuation(lua_State *L, const ct_tokenizer *tok, const int *prompt, int n, const int *gen,
                                   int n_gen, ct_err *err) {
    char *text;
    size_t len;
    ct_status rc = ct_tokenizer_continuation(tok, prompt, n, gen, n_gen, &text, &len, err);
    if (rc) return rc;
    lua_pushlstring(L, text, len);
    free(text);
    return CT_OK;
}

void ct_lua_new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction index, const luaL_Reg *meta) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__methods");
    if (index) {
        lua_pop(L, 1);
        lua_pushcfunction(L, index);
    }
    lua_setfield(L, -2, "__index");
    ct_lua_set_funcs(L, meta);
    lua_pop(L, 1);
}

void ct_lua_set_funcs(lua_State *L, const luaL_Reg *fns) {
    for (; fns && fns->name; fns++) {
        lua_pushcfunction(L, fns->func);
        lua_setfield(L, -2, fns->name);
    }
}
