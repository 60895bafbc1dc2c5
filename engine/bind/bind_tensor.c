// bind_tensor.c - "ctrace.Tensor": shape, 1-based indexing (as torch7), views, printing.
//
// t[i] selects index i of the first dimension (a number for 1-d tensors, else a view);
// t:select(dim, i), t:narrow(dim, first, length) and t:slice(dim, first, last) return views
// that share storage; dims and indices count from 1. t:softmax_top(row, n [, index]) reads
// the softmax of one row of logits at its n largest entries (and at one more index).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bind.h"
#include "formats/safetensors.h"

void ct_lua_push_tensor(lua_State *L, ct_tensor *t) {
    void **box = ct_lua_new_box(L, CT_MT_TENSOR);
    *box = t;
    // The collector sees only the small box: step it by the native size (in KB), as torch7
    // does, so big tensors are reclaimed without an explicit free.
    size_t kb = (size_t)ct_tensor_numel(t) * sizeof(float) / 1024;
    if (kb > 0) lua_gc(L, LUA_GCSTEP, (int)(kb < (1u << 30) ? kb : (1u << 30)));
}

ct_tensor *ct_lua_check_tensor(lua_State *L, int idx) { return ct_lua_check_box(L, idx, CT_MT_TENSOR); }

static int check_dim(lua_State *L, ct_tensor *t, int arg) {
    lua_Integer d = luaL_checkinteger(L, arg);
    if (d < 1 || d > t->ndim) ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "dimension %d out of range 1..%d", (int)d, t->ndim);
    return (int)d - 1;
}

static int l_tensor_shape(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, (lua_Integer)t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_tensor_size(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) return l_tensor_shape(L);
    lua_pushinteger(L, (lua_Integer)t->shape[check_dim(L, t, 2)]);
    return 1;
}

static int l_tensor_dim(lua_State *L) {
    lua_pushinteger(L, ct_lua_check_tensor(L, 1)->ndim);
    return 1;
}

static int l_tensor_numel(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)ct_tensor_numel(ct_lua_check_tensor(L, 1)));
    return 1;
}

static int l_tensor_select(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    int d = check_dim(L, t, 2);
    lua_Integer i = luaL_checkinteger(L, 3);
    ct_tensor *v;
    ct_err err = {0};
    if (ct_tensor_select(&v, t, d, (int64_t)i - 1, &err)) return ct_lua_raise(L, &err);
    ct_lua_push_tensor(L, v);
    return 1;
}

static int push_slice(lua_State *L, ct_tensor *t, int d, lua_Integer first, lua_Integer stop) {
    ct_tensor *v;
    ct_err err = {0};
    if (ct_tensor_slice(&v, t, d, (int64_t)first - 1, (int64_t)stop, 1, &err)) return ct_lua_raise(L, &err);
    ct_lua_push_tensor(L, v);
    return 1;
}

static int l_tensor_narrow(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    int d = check_dim(L, t, 2);
    lua_Integer first = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    return push_slice(L, t, d, first, first - 1 + len);
}

static int l_tensor_slice(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    int d = check_dim(L, t, 2);
    lua_Integer first = luaL_checkinteger(L, 3), last = luaL_optinteger(L, 4, t->shape[d]);
    return push_slice(L, t, d, first, last);
}

// Element at 1-based indices given as arguments 2..n+1.
static float *element(lua_State *L, ct_tensor *t, int first_arg) {
    int n = lua_gettop(L) - first_arg + 1;
    if (n != t->ndim) ct_lua_fail(L, CT_STATUS_BAD_ARG, "expected %d indices for a %d-d tensor, got %d", t->ndim, t->ndim, n);
    size_t off = 0;
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, first_arg + d);
        if (i < 1 || i > t->shape[d])
            ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "index %d out of range 1..%d for dimension %d", (int)i,
                        (int)t->shape[d], d + 1);
        off += (size_t)((i - 1) * t->stride[d]);
    }
    return ct_tensor_data(t) + off;
}

static int l_tensor_get(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    lua_pushnumber(L, *element(L, t, 2));
    return 1;
}

static int l_tensor_set(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    lua_Number v = luaL_checknumber(L, lua_gettop(L));
    lua_settop(L, lua_gettop(L) - 1);
    *element(L, t, 2) = (float)v;
    return 0;
}

static int l_tensor_item(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    if (ct_tensor_numel(t) != 1)
        return ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "item() needs a tensor of one element, got %lld",
                           (long long)ct_tensor_numel(t));
    lua_pushnumber(L, ct_tensor_data(t)[0]);
    return 1;
}

static void push_table_rec(lua_State *L, const ct_tensor *t, const float *p, int d) {
    lua_createtable(L, (int)t->shape[d], 0);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        if (d == t->ndim - 1) lua_pushnumber(L, p[i]);
        else push_table_rec(L, t, p + i * t->stride[d], d + 1);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

static int l_tensor_totable(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    if (t->ndim == 0) {
        lua_pushnumber(L, ct_tensor_data(t)[0]);
        return 1;
    }
    push_table_rec(L, t, ct_tensor_data(t), 0);
    return 1;
}

// 1-based index of the largest element of a 1-d tensor.
static int l_tensor_argmax(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    if (t->ndim != 1) return ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "argmax() needs a 1-d tensor, got %d-d", t->ndim);
    if (t->shape[0] == 0) return ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "argmax() of an empty tensor");
    const float *p = ct_tensor_data(t);
    int64_t best = 0;
    for (int64_t i = 1; i < t->shape[0]; i++)
        if (p[i * t->stride[0]] > p[best * t->stride[0]]) best = i;
    lua_pushinteger(L, (lua_Integer)best + 1);
    return 1;
}

// t:softmax_top(row, n [, index]) -> top [, p]: the softmax of row `row` of a 2-d tensor of
// logits (T, V), read out by ct_softmax_topk. top = its n largest entries, the most probable
// first (ties: the lower index), as {index =, prob =, value =}; p = the probability of entry
// `index`. Rows and indices count from 1.
static int l_tensor_softmax_top(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    if (t->ndim != 2) return ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "softmax_top() needs a 2-d tensor (T, V), got %d-d", t->ndim);
    int64_t T = t->shape[0], V = t->shape[1];
    lua_Integer row = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
    int has_at = !lua_isnoneornil(L, 4);
    lua_Integer at = has_at ? luaL_checkinteger(L, 4) : 1;
    if (row < 1 || row > T) return ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "row %d out of range 1..%lld", (int)row, (long long)T);
    if (n < 0) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "softmax_top() expects n >= 0, got %d", (int)n);
    if (has_at && (at < 1 || at > V))
        return ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "index %d out of range 1..%lld", (int)at, (long long)V);
    if (n > V) n = V;
    const float *x = ct_tensor_data(t) + (row - 1) * t->stride[0];   // (V,)
    if (t->stride[1] != 1) {   // a strided view: the row copied
        float *c = lua_newuserdata(L, sizeof(float) * (size_t)(V + 1));
        for (int64_t i = 0; i < V; i++) c[i] = x[i * t->stride[1]];
        x = c;
    }
    int64_t *idx = lua_newuserdata(L, sizeof(int64_t) * (size_t)(n + 1));   // (n,)
    double *p = lua_newuserdata(L, sizeof(double) * (size_t)(n + 1));       // (n,)
    int64_t at0 = at - 1;
    double p_at = 0.0;
    n = ct_softmax_topk(idx, p, &p_at, x, V, n, &at0, has_at);
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)idx[i] + 1);
        lua_setfield(L, -2, "index");
        lua_pushnumber(L, p[i]);
        lua_setfield(L, -2, "prob");
        lua_pushnumber(L, x[idx[i]]);
        lua_setfield(L, -2, "value");
        lua_rawseti(L, -2, (int)i + 1);
    }
    if (!has_at) return 1;
    lua_pushnumber(L, p_at);
    return 2;
}

static int l_tensor_clone(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    ct_tensor *src = ct_tensor_contiguous(t);
    ct_tensor *c = src ? ct_tensor_from(ct_tensor_data(src), t->ndim, t->shape) : NULL;
    ct_tensor_free(src);
    if (!c) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    ct_lua_push_tensor(L, c);
    return 1;
}

static int l_tensor_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TNUMBER) {
        ct_tensor *t = ct_lua_check_tensor(L, 1);
        if (t->ndim == 0) return ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "cannot index a 0-d tensor");
        lua_Integer i = lua_tointeger(L, 2);
        if (i < 1 || i > t->shape[0])
            return ct_lua_fail(L, CT_STATUS_OUT_OF_RANGE, "index %d out of range 1..%d", (int)i, (int)t->shape[0]);
        if (t->ndim == 1) {
            lua_pushnumber(L, ct_tensor_data(t)[(i - 1) * t->stride[0]]);
            return 1;
        }
        ct_tensor *v;
        ct_err err = {0};
        if (ct_tensor_select(&v, t, 0, (int64_t)i - 1, &err)) return ct_lua_raise(L, &err);
        ct_lua_push_tensor(L, v);
        return 1;
    }
    luaL_getmetatable(L, CT_MT_TENSOR);
    lua_getfield(L, -1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int l_tensor_len(lua_State *L) {
    ct_tensor *t = ct_lua_check_tensor(L, 1);
    lua_pushinteger(L, t->ndim ? (lua_Integer)t->shape[0] : 0);
    return 1;
}

// Prints like a tensor library: nested brackets, 4 decimals, at most 3 items at each edge.
static void fmt_rec(luaL_Buffer *b, const ct_tensor *t, const float *p, int d, int indent) {
    luaL_addchar(b, '[');
    int64_t n = t->shape[d], edge = 3;
    for (int64_t i = 0; i < n; i++) {
        if (n > 2 * edge && i == edge) {
            luaL_addstring(b, d == t->ndim - 1 ? "..., " : "...,\n");
            if (d != t->ndim - 1)
                for (int s = 0; s < indent + 1; s++) luaL_addchar(b, ' ');
            i = n - edge;
        }
        if (d == t->ndim - 1) {
            char num[32];
            snprintf(num, sizeof num, "%.4f", p[i * t->stride[d]]);
            luaL_addstring(b, num);
        } else {
            fmt_rec(b, t, p + i * t->stride[d], d + 1, indent + 1);
        }
        if (i < n - 1) {
            luaL_addchar(b, ',');
            if (d == t->ndim - 1) {
                luaL_addchar(b, ' ');
            } else {
                luaL_addchar(b, '\n');
                for (int s = 0; s < indent + 1; s++) luaL_addchar(b, ' ');
            }
        }
    }
    luaL_addchar(b, ']');
}

static int l_tensor_tostring(lua_State *L) {
    void **box = luaL_checkudata(L, 1, CT_MT_TENSOR);
    if (!*box) {
        lua_pushstring(L, "ctrace.Tensor (freed)");
        return 1;
    }
    ct_tensor *t = *box;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "tensor(");
    if (t->ndim == 0) {
        char num[32];
        snprintf(num, sizeof num, "%.4f", ct_tensor_data(t)[0]);
        luaL_addstring(&b, num);
    } else {
        fmt_rec(&b, t, ct_tensor_data(t), 0, 7);
    }
    luaL_addstring(&b, ", shape=(");
    for (int i = 0; i < t->ndim; i++) {
        char num[32];
        snprintf(num, sizeof num, i ? ", %lld" : "%lld", (long long)t->shape[i]);
        luaL_addstring(&b, num);
    }
    luaL_addstring(&b, "))");
    luaL_pushresult(&b);
    return 1;
}

static int l_tensor_free(lua_State *L) {
    void **box = luaL_checkudata(L, 1, CT_MT_TENSOR);
    ct_tensor_free(*box);
    *box = NULL;
    return 0;
}

// ctrace.tensor{...} / ctrace.zeros(d1, d2, ...): tensors made from Lua.
static int l_zeros(lua_State *L) {
    int n = lua_gettop(L);
    if (n < 1 || n > CT_MAX_DIMS) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "zeros expects 1..%d sizes", CT_MAX_DIMS);
    int64_t shape[CT_MAX_DIMS];
    for (int i = 0; i < n; i++) {
        lua_Integer s = luaL_checkinteger(L, i + 1);
        if (s < 0) return ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "size %d is negative (%d)", i + 1, (int)s);
        shape[i] = s;
    }
    ct_tensor *t = ct_tensor_new(n, shape);
    if (!t) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    ct_lua_push_tensor(L, t);
    return 1;
}

static int l_tensor_from(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    int64_t shape[1] = {n};
    ct_tensor *t = ct_tensor_new(1, shape);
    if (!t) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory");
    ct_lua_push_tensor(L, t);   // owned by Lua from here: raising below cannot leak
    float *p = ct_tensor_data(t);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        if (lua_type(L, -1) != LUA_TNUMBER)
            return ct_lua_fail(L, CT_STATUS_BAD_ARG, "tensor{}: entry %d is %s, expected a number", i + 1, luaL_typename(L, -1));
        p[i] = (float)lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    return 1;
}

// ctrace.save_safetensors(path, {name = tensor, ...} [, {key = "value", ...}]): writes the
// tensors as F32 in name order, and the metadata in key order (the same tables give the same
// bytes), through a temporary file and a rename.
static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

// The n keys of the table at idx (strings, checked by the caller), sorted, into out.
static void sorted_keys(lua_State *L, int idx, const char **out, int n) {
    int i = 0;
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) out[i++] = lua_tostring(L, -2);
    qsort(out, (size_t)n, sizeof *out, cmp_str);
}

static int l_save_safetensors(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    // validate everything before allocating: a raised error then leaks nothing
    int n = 0, n_meta = 0;
    for (int k = 2; k <= 3; k++) {
        if (lua_isnoneornil(L, k)) continue;
        for (lua_pushnil(L); lua_next(L, k); lua_pop(L, 1)) {
            void **box = k == 2 ? luaL_testudata(L, -1, CT_MT_TENSOR) : NULL;
            if (lua_type(L, -2) != LUA_TSTRING || (k == 2 ? !box || !*box : lua_type(L, -1) != LUA_TSTRING))
                return ct_lua_fail(L, CT_STATUS_BAD_ARG, "save_safetensors: %s entries must be name = %s; found %s = %s%s",
                                   k == 2 ? "tensor" : "metadata", k == 2 ? "Tensor" : "string", luaL_typename(L, -2),
                                   luaL_typename(L, -1), box && !*box ? " (freed)" : "");
            size_t len;
            const char *name = lua_tolstring(L, -2, &len);
            if (len == 0 || strlen(name) != len || (k == 2 && strcmp(name, "__metadata__") == 0))
                return ct_lua_fail(L, CT_STATUS_BAD_ARG, "save_safetensors: %s name '%s' is empty, holds a NUL byte or is "
                                   "__metadata__; expected a plain name", k == 2 ? "a tensor" : "a metadata", name);
            if (k == 2 && ((ct_tensor *)*box)->ndim < 1)
                return ct_lua_fail(L, CT_STATUS_BAD_SHAPE, "save_safetensors: tensor '%s' has no dimensions; expected 1 or more", name);
            if (k == 2) n++;
            else n_meta++;
        }
    }
    // names, then metadata keys, borrowed from the argument tables (which outlive the call)
    const char **names = calloc((size_t)n + (size_t)n_meta + 1, sizeof *names);
    const char **meta = calloc(2 * (size_t)n_meta + 1, sizeof *meta);
    ct_st_entry *e = calloc((size_t)n + 1, sizeof *e);
    ct_tensor **held = calloc((size_t)n + 1, sizeof *held);
    ct_err err = {0};
    ct_status rc = names && meta && e && held ? CT_OK : ct_fail(&err, CT_STATUS_NO_MEMORY, "save_safetensors: out of memory");
    if (!rc) {
        sorted_keys(L, 2, names, n);
        if (n_meta) sorted_keys(L, 3, names + n, n_meta);
    }
    for (int i = 0; !rc && i < n_meta; i++) {
        meta[2 * i] = names[n + i];
        lua_getfield(L, 3, names[n + i]);   // plain names (checked above): getfield finds them
        meta[2 * i + 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    for (int i = 0; !rc && i < n; i++) {
        lua_getfield(L, 2, names[i]);
        ct_tensor *t = *(ct_tensor **)lua_touserdata(L, -1);   // checked above
        lua_pop(L, 1);
        held[i] = ct_tensor_contiguous(t);
        if (!held[i]) {
            rc = ct_fail(&err, CT_STATUS_NO_MEMORY, "save_safetensors: out of memory");
            break;
        }
        e[i].name = names[i];
        e[i].dtype = CT_DT_F32;
        e[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[i].shape[d] = t->shape[d];
        e[i].data = ct_tensor_data(held[i]);
    }
    if (!rc) rc = ct_safetensors_write(ct_lua_ctx(L), path, e, n, meta, n_meta, &err);
    for (int i = 0; held && i < n; i++) ct_tensor_free(held[i]);
    free(held);
    free(e);
    free(meta);
    free(names);
    if (rc) return ct_lua_raise(L, &err);
    return 0;
}

void ct_lua_register_tensor(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"shape", l_tensor_shape},   {"size", l_tensor_size},       {"dim", l_tensor_dim},
        {"numel", l_tensor_numel},   {"select", l_tensor_select},   {"narrow", l_tensor_narrow},
        {"slice", l_tensor_slice},   {"get", l_tensor_get},         {"set", l_tensor_set},
        {"item", l_tensor_item},     {"totable", l_tensor_totable}, {"argmax", l_tensor_argmax},
        {"clone", l_tensor_clone},   {"free", l_tensor_free},       {"softmax_top", l_tensor_softmax_top},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__len", l_tensor_len}, {"__tostring", l_tensor_tostring}, {"__gc", l_tensor_free},
                                    {NULL, NULL}};
    static const luaL_Reg fns[] = {{"zeros", l_zeros}, {"tensor", l_tensor_from}, {"save_safetensors", l_save_safetensors}, {NULL, NULL}};
    ct_lua_new_type(L, CT_MT_TENSOR, methods, l_tensor_index, meta);
    luaL_getmetatable(L, CT_MT_TENSOR);
    lua_pushstring(L, CT_MT_TENSOR);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    ct_lua_set_funcs(L, fns);
}
