// bind_json.c - ctrace.json_encode / ctrace.json_decode on cJSON.
//
// Tables with keys 1..n (and nothing else) become arrays, other tables objects with string
// keys; an empty table is an empty array unless it has the metatable ctrace.json_object.
// Numbers are written so that they read back to the same double. NaN and infinity are errors;
// nesting beyond 200 levels and cycles are errors.
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bind.h"

static cJSON *to_json(lua_State *L, int idx, int depth, char *err, size_t errn);

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_array(lua_State *L, int idx, size_t *n) {
    size_t len = lua_objlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return 0;
        }
    }
    *n = len;
    return count == len;
}

// d (finite) as the shortest of %.15g, %.16g and %.17g that reads back as d. (cJSON prints %1.15g
// whenever that is merely close to d, so 0.1 + 0.2 would come back as 0.3.)
static cJSON *number(double d) {
    char buf[32];
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, d);
        if (strtod(buf, NULL) == d) break;
    }
    return cJSON_CreateRaw(buf);
}

static cJSON *to_json(lua_State *L, int idx, int depth, char *err, size_t errn) {
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return cJSON_CreateNull();
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TSTRING: return cJSON_CreateString(lua_tostring(L, idx));
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) {
            snprintf(err, errn, "cannot encode %s in JSON", isnan(d) ? "NaN" : "infinity");
            return NULL;
        }
        return number(d);
    }
    case LUA_TTABLE: {
        if (depth > 200) {
            snprintf(err, errn, "nesting deeper than 200 levels (a cycle?)");
            return NULL;
        }
        size_t n;
        int object = 0;
        if (lua_getmetatable(L, idx)) {
            luaL_getmetatable(L, "ctrace.json_object");
            object = lua_rawequal(L, -1, -2);
            lua_pop(L, 2);
        }
        if (!object && is_array(L, idx, &n)) {
            cJSON *a = cJSON_CreateArray();
            for (size_t i = 1; a && i <= n; i++) {
                lua_rawgeti(L, idx, (int)i);
                cJSON *v = to_json(L, -1, depth + 1, err, errn);
                lua_pop(L, 1);
                if (!v) {
                    cJSON_Delete(a);
                    return NULL;
                }
                cJSON_AddItemToArray(a, v);
            }
            return a;
        }
        // objects: keys sorted, so the same table always gives the same bytes
        int nk = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
                snprintf(err, errn, "object keys must be strings or numbers, got %s", luaL_typename(L, -1));
                lua_pop(L, 1);
                return NULL;
            }
            nk++;
        }
        char **keys = calloc((size_t)nk + 1, sizeof *keys);
        cJSON *o = keys ? cJSON_CreateObject() : NULL;
        int k = 0;
        lua_pushnil(L);
        while (o && lua_next(L, idx)) {
            lua_pop(L, 1);
            char kbuf[64];
            if (lua_type(L, -1) == LUA_TNUMBER) snprintf(kbuf, sizeof kbuf, "%.17g", lua_tonumber(L, -1));
            keys[k++] = strdup(lua_type(L, -1) == LUA_TNUMBER ? kbuf : lua_tostring(L, -1));
        }
        qsort(keys, (size_t)k, sizeof *keys, cmp_str);
        for (int i = 0; o && i < k; i++) {
            char *end;
            double num = strtod(keys[i], &end);
            lua_pushstring(L, keys[i]);
            lua_rawget(L, idx);
            if (lua_isnil(L, -1) && *end == 0) {   // a number key
                lua_pop(L, 1);
                lua_pushnumber(L, num);
                lua_rawget(L, idx);
            }
            cJSON *v = to_json(L, -1, depth + 1, err, errn);
            lua_pop(L, 1);
            if (!v) {
                cJSON_Delete(o);
                o = NULL;
                break;
            }
            cJSON_AddItemToObject(o, keys[i], v);
        }
        for (int i = 0; keys && i < k; i++) free(keys[i]);
        free(keys);
        return o;
    }
    default:
        snprintf(err, errn, "cannot encode a %s in JSON", luaL_typename(L, idx));
        return NULL;
    }
}

static int l_json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    char err[200] = "out of memory";
    cJSON *j = to_json(L, 1, 0, err, sizeof err);
    if (!j) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "json_encode: %s", err);
    char *s = lua_toboolean(L, 2) ? cJSON_Print(j) : cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static void push_json(lua_State *L, const cJSON *j) {
    if (cJSON_IsNull(j)) lua_pushnil(L);
    else if (cJSON_IsBool(j)) lua_pushboolean(L, cJSON_IsTrue(j));
    else if (cJSON_IsNumber(j)) lua_pushnumber(L, j->valuedouble);
    else if (cJSON_IsString(j)) lua_pushstring(L, j->valuestring);
    else if (cJSON_IsArray(j)) {
        lua_createtable(L, cJSON_GetArraySize(j), 0);
        int i = 1;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            push_json(L, e);
            lua_rawseti(L, -2, i++);
        }
    } else {
        lua_newtable(L);
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            push_json(L, e);
            lua_setfield(L, -2, e->string);
        }
    }
}

static int l_json_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!j) return ct_lua_fail(L, CT_STATUS_BAD_FORMAT, "json_decode: invalid JSON near byte %d", end ? (int)(end - s) : -1);
    lua_checkstack(L, 220);
    push_json(L, j);
    cJSON_Delete(j);
    return 1;
}

void ct_lua_register_json(lua_State *L) {
    luaL_newmetatable(L, "ctrace.json_object");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_json_encode);
    lua_setfield(L, -2, "json_encode");
    lua_pushcfunction(L, l_json_decode);
    lua_setfield(L, -2, "json_decode");
}
