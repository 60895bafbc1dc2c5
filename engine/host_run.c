// host_run.c - the experiment process of `ctrace run` (`ctrace --run-child`, started by the
// parent through bind_run.c): it reads its spec from the parent, confines itself (run/confine.h),
// runs experiment.lua in a Lua state whose environment is an allow-list built here, and reports
// the files it read and the attributions it made. The parent enforces the deadline, writes the
// manifest and commits the results.
//
// The spec (JSON): {folder, script, staging, root, read = {dirs}, unsafe, memory, file_size}, and
// under MPI {rank, size, threads}: the parent's place in the job, which this process joins through
// the parent (ct_dist_relay: it may open no socket of its own).
//
// The script's environment (unless unsafe): the safe base functions; string, table, math, bit,
// coroutine, io and os as read-only tables without string.dump, os.execute, io.popen and the
// like; load and loadstring for text chunks only; require for ctrace's own modules (from the
// project's lua/ctrace/, text only); reading or writing an undefined global raises. io.open and
// os.remove/rename are checked against the run's roots, reads are recorded, and every write,
// flush and close is checked: a failed write fails the run even if the script catches the error.
#include <cjson/cJSON.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bind/bind.h"
#include "core/dist.h"
#include "core/fileio.h"
#include "core/sha256.h"
#include "host.h"
#include "run/child.h"
#include "run/confine.h"

#define WFILES "ctrace.wfiles"           // registry: open files written by the script -> path
#define WRITE_FAILED "ctrace.write_failed"   // registry: the first failed write's message
#define READONLY "ctrace.readonly"       // registry: the read-only tables (weak keys)

// ---------------------------------------------------------------------------------------------
// Checked file access (both sandboxed and unsafe runs)

// Notes the first failed write, which fails the run at its end whatever the script does.
static int write_failed(lua_State *L, int file, const char *what) {
    lua_getfield(L, LUA_REGISTRYINDEX, WFILES);
    lua_pushvalue(L, file);
    lua_rawget(L, -2);
    const char *path = lua_tostring(L, -1);
    lua_pushfstring(L, "IO: %s %s: %s (results would be incomplete; the run fails)", what, path ? path : "a file",
                    lua_tostring(L, -3) ? lua_tostring(L, -3) : strerror(errno));
    lua_getfield(L, LUA_REGISTRYINDEX, WRITE_FAILED);
    if (lua_isnil(L, -1)) {
        lua_pushvalue(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, WRITE_FAILED);
    }
    lua_pop(L, 1);
    return lua_error(L);
}

static int tracked(lua_State *L, int file) {
    lua_getfield(L, LUA_REGISTRYINDEX, WFILES);
    lua_pushvalue(L, file);
    lua_rawget(L, -2);
    int t = !lua_isnil(L, -1);
    lua_pop(L, 2);
    return t;
}

// Calls the original function (upvalue 1) with the values from index `from` to the top; its
// results (nresults, or all) replace them.
static void call_original(lua_State *L, int from, int nresults) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, from);
    lua_call(L, lua_gettop(L) - from, nresults);
}

// file:write(...) and file:flush(): the original method; a failure raises.
static int file_call(lua_State *L, const char *what) {
    lua_pushvalue(L, 1);   // the file stays at 1, for the message
    lua_insert(L, 1);
    call_original(L, 2, 2);
    if (lua_isnil(L, -2) && tracked(L, 1)) {
        lua_remove(L, -2);
        return write_failed(L, 1, what);
    }
    lua_pop(L, 1);
    return 1;
}
static int file_write(lua_State *L) { return file_call(L, "writing"); }
static int file_flush(lua_State *L) { return file_call(L, "flushing"); }

// file:close(): a written file is flushed and synced to disk first; any failure raises.
static int file_close(lua_State *L) {
    int written = lua_gettop(L) >= 1 && tracked(L, 1);
    if (written) {
        FILE **fp = lua_touserdata(L, 1);   // a LuaJIT file handle starts with its FILE *
        if (fp && *fp && (fflush(*fp) || ferror(*fp) || (fsync(fileno(*fp)) && errno != EINVAL))) {
            lua_pushstring(L, strerror(errno));
            return write_failed(L, 1, "writing");
        }
    }
    lua_pushvalue(L, 1);   // the file stays at 1
    lua_insert(L, 1);
    call_original(L, 2, 2);
    if (written) {
        if (lua_isnil(L, -2)) {
            lua_remove(L, -2);
            return write_failed(L, 1, "closing");
        }
        lua_getfield(L, LUA_REGISTRYINDEX, WFILES);
        lua_pushvalue(L, 1);
        lua_pushnil(L);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 1;
}

static int mode_writes(const char *mode) { return strpbrk(mode, "wa+") != NULL; }

// io.open(path, mode): checked against the run's roots (reads recorded), then the original
// (upvalue 1); a file opened for writing is tracked until closed.
static int io_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    const char *mode = luaL_optstring(L, 2, "r");
    size_t ml = strlen(mode);
    if (!(ml >= 1 && ml <= 3 && strchr("rwa", mode[0]) && strspn(mode + 1, "+b") == ml - 1))
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "io.open: mode '%s' (expected r, w or a, then + and b)", mode);
    ct_err err = {0};
    ct_ctx *c = ct_lua_ctx(L);
    if (mode_writes(mode)) {
        if (ct_ctx_check_write(c, path, &err)) return ct_lua_raise(L, &err);
    } else {   // refused outside the roots whether or not the file exists; missing: nil, message
        int fd;
        int64_t size;
        if (ct_open_read(c, path, &fd, &size, &err)) {
            if (err.status != CT_STATUS_NOT_FOUND) return ct_lua_raise(L, &err);
            lua_pushnil(L);
            lua_pushfstring(L, "%s: No such file or directory", path);
            return 2;
        }
        close(fd);
    }
    lua_settop(L, 2);
    call_original(L, 1, 2);
    if (mode_writes(mode) && lua_isuserdata(L, -2)) {
        lua_getfield(L, LUA_REGISTRYINDEX, WFILES);
        lua_pushvalue(L, -3);
        lua_pushstring(L, path);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    return 2;
}

// io.lines(path): checked and recorded, then the original.
static int io_lines(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) {
        int fd;
        int64_t size;
        ct_err err = {0};
        if (ct_open_read(ct_lua_ctx(L), luaL_checkstring(L, 1), &fd, &size, &err)) return ct_lua_raise(L, &err);
        close(fd);
    }
    call_original(L, 1, LUA_MULTRET);
    return lua_gettop(L);
}

// os.remove(path), os.rename(from, to): every path checked as a write.
static int os_checked(lua_State *L) {
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        ct_err err = {0};
        if (ct_ctx_check_write(ct_lua_ctx(L), luaL_checkstring(L, i), &err)) return ct_lua_raise(L, &err);
    }
    call_original(L, 1, LUA_MULTRET);
    return lua_gettop(L);
}

// Replaces t[name] (t at index idx) by the C function f with the original as its upvalue.
static void wrap(lua_State *L, int idx, const char *name, lua_CFunction f) {
    lua_getfield(L, idx, name);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, idx < 0 ? idx - 1 : idx, name);
}

static void install_checked_io(lua_State *L) {
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, WFILES);
    luaL_getmetatable(L, "FILE*");   // the methods of file handles
    lua_getfield(L, -1, "__index");
    if (!lua_istable(L, -1)) lua_pop(L, 1), lua_pushvalue(L, -1);
    wrap(L, -1, "write", file_write);
    wrap(L, -1, "flush", file_flush);
    wrap(L, -1, "close", file_close);
    lua_pop(L, 2);
    lua_getglobal(L, "io");
    wrap(L, -1, "open", io_open);
    wrap(L, -1, "lines", io_lines);
    lua_pop(L, 1);
    lua_getglobal(L, "os");
    wrap(L, -1, "remove", os_checked);
    wrap(L, -1, "rename", os_checked);
    lua_pop(L, 1);
}

// Closes (checked) every file the script left open for writing; the run's write failure, if any.
static const char *finish_writes(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, WFILES);
    for (;;) {
        lua_pushnil(L);
        if (!lua_next(L, -2)) break;
        lua_pop(L, 1);   // the file
        luaL_getmetatable(L, "FILE*");
        lua_getfield(L, -1, "close");
        lua_remove(L, -2);
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 0, 0)) lua_pop(L, 1);
        lua_pushnil(L);   // forgotten either way
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, WRITE_FAILED);
    const char *msg = lua_tostring(L, -1);   // kept alive by the registry
    lua_pop(L, 1);
    return msg;
}

// ---------------------------------------------------------------------------------------------
// The sandboxed state

static int readonly_newindex(lua_State *L) {
    return ct_lua_fail(L, CT_STATUS_BAD_ARG, "the standard library is read-only in ctrace run (tried to set '%s')",
                       lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

// Gives the table below the top a metatable out of the script's reach: __index the value on top
// (popped), __newindex the function newindex.
static void set_locked_metatable(lua_State *L, lua_CFunction newindex) {
    lua_createtable(L, 0, 3);
    lua_insert(L, -2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushstring(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

// Replaces global name by a read-only view of it.
static void make_readonly(lua_State *L, const char *name) {
    lua_newtable(L);   // the view
    lua_getglobal(L, name);
    set_locked_metatable(L, readonly_newindex);
    lua_getfield(L, LUA_REGISTRYINDEX, READONLY);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_setglobal(L, name);
}

static int sb_rawset(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, LUA_REGISTRYINDEX, READONLY);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    if (lua_toboolean(L, -1)) return readonly_newindex(L);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    lua_pushvalue(L, 1);
    return 1;
}

// Loads a text chunk: precompiled (binary) chunks are refused, LuaJIT does not verify them.
static int load_text(lua_State *L, const char *s, size_t n, const char *name) {
    if (n > 0 && s[0] == 0x1b) {
        lua_pushnil(L);
        lua_pushstring(L, "BAD_ARG: precompiled (binary) chunks cannot be loaded in ctrace run");
        return 2;
    }
    if (luaL_loadbuffer(L, s, n, name)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

// load(text | reader, name), loadstring(text, name): text chunks in the global environment.
// Loads a chunk for the script: text only, in the script's environment.
static int load_for_script(lua_State *L, const char *s, size_t n, const char *name) {
    int k = load_text(L, s, n, name);
    if (k == 1) {
        lua_getfield(L, LUA_REGISTRYINDEX, "ctrace.env");
        lua_setfenv(L, -2);
    }
    return k;
}

static int sb_load(lua_State *L) {
    const char *name = luaL_optstring(L, 2, "=(load)");
    if (lua_type(L, 1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, 1, &n);
        return load_for_script(L, s, n, name);
    }
    luaL_checktype(L, 1, LUA_TFUNCTION);   // a reader: its pieces, joined, then checked
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
        lua_pushvalue(L, 1);
        lua_call(L, 0, 1);
        if (lua_isnil(L, -1) || (lua_isstring(L, -1) && lua_objlen(L, -1) == 0)) {
            lua_pop(L, 1);
            break;
        }
        if (!lua_isstring(L, -1)) return luaL_error(L, "load: the reader must return strings");
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    return load_for_script(L, s, n, name);
}

static const char *const MODULES[] = {"ctrace", "ctrace.core", "ctrace.study", "ctrace.svg", "ctrace.viewer",
                                      "ctrace.graph", "ctrace.intervention", "ctrace.transcoders",
                                      "ctrace.dashboards", "ctrace.labels", "ctrace.neuronpedia", "ctrace.hub", "ctrace.chat",
                                      "ctrace.sandbox", "ctrace.dist", "ctrace.planted", "ctrace.supernodes", NULL};

// require(name): ctrace's own modules only, as text from the project's lua/ctrace/.
static int sb_require(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "ctrace.loaded");
    lua_getfield(L, -1, name);
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
    int known = 0;
    for (int i = 0; MODULES[i]; i++) known |= strcmp(name, MODULES[i]) == 0;
    if (!known)
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "require '%s': experiments may require ctrace and its modules "
                           "for studies only (ctrace run --unsafe allows more)", name);
    if (strcmp(name, "ctrace.core") == 0) {
        lua_pushcfunction(L, luaopen_ctrace_core);
        lua_call(L, 0, 1);
    } else {
        char mod[256], path[4096];
        snprintf(mod, sizeof mod, "%s", strcmp(name, "ctrace") == 0 ? "ctrace.init" : name);
        for (char *p = mod; *p; p++)
            if (*p == '.') *p = '/';
        lua_getfield(L, LUA_REGISTRYINDEX, "ctrace.root");
        snprintf(path, sizeof path, "%s/lua/%s.lua", lua_tostring(L, -1), mod);
        lua_pop(L, 1);
        FILE *f = fopen(path, "rb");
        if (!f) return ct_lua_fail(L, CT_STATUS_NOT_FOUND, "require '%s': %s: %s", name, path, strerror(errno));
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        char buf[4096];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, f)) > 0) luaL_addlstring(&b, buf, k);
        fclose(f);
        luaL_pushresult(&b);
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        lua_pushfstring(L, "@%s", path);
        if (load_text(L, s, n, lua_tostring(L, -1)) != 1) return lua_error(L);
        lua_pushstring(L, name);
        lua_call(L, 1, 1);
    }
    if (lua_isnil(L, -1)) lua_pop(L, 1), lua_pushboolean(L, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);   // the loaded table
    return 1;
}

static int strict_index(lua_State *L) {
    lua_pushvalue(L, 2);
    lua_rawget(L, LUA_GLOBALSINDEX);
    if (lua_isnil(L, -1))
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "undefined global '%s'", lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
    return 1;
}

static int strict_newindex(lua_State *L) {
    return ct_lua_fail(L, CT_STATUS_BAD_ARG, "assignment to undefined global '%s' (declare it local)",
                       lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

static void open_lib(lua_State *L, lua_CFunction f, const char *name) {
    lua_pushcfunction(L, f);
    lua_pushstring(L, name);
    lua_call(L, 1, 0);
}

static int forbidden(lua_State *L) {
    return ct_lua_fail(L, CT_STATUS_BAD_ARG, "%s is not available in ctrace run (--unsafe allows it, for folders you trust)",
                       lua_tostring(L, lua_upvalueindex(1)));
}

// table.name raises, saying what was refused.
static void forbid(lua_State *L, const char *table, const char *name) {
    lua_getglobal(L, table);
    lua_pushfstring(L, "%s.%s", table, name);
    lua_pushcclosure(L, forbidden, 1);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

// A state holding only the allow-list; the script's environment (strict) is left on the stack.
static lua_State *sandbox_state(const char *root) {
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    open_lib(L, luaopen_base, "");   // and coroutine
    open_lib(L, luaopen_table, LUA_TABLIBNAME);
    open_lib(L, luaopen_string, LUA_STRLIBNAME);
    open_lib(L, luaopen_math, LUA_MATHLIBNAME);
    open_lib(L, luaopen_io, LUA_IOLIBNAME);
    open_lib(L, luaopen_os, LUA_OSLIBNAME);
    open_lib(L, luaopen_bit, LUA_BITLIBNAME);
    open_lib(L, luaopen_debug, LUA_DBLIBNAME);
    lua_getglobal(L, "debug");   // tracebacks for the host's messages; debug itself goes
    lua_getfield(L, -1, "traceback");
    lua_setfield(L, LUA_REGISTRYINDEX, "ctrace.traceback");
    lua_pop(L, 1);
    static const char *const gone[] = {"debug", "dofile", "loadfile", "getfenv", "setfenv", "module", "newproxy",
                                       "gcinfo", "package", "jit", NULL};
    for (int i = 0; gone[i]; i++) lua_pushnil(L), lua_setglobal(L, gone[i]);
    forbid(L, "string", "dump");
    static const char *const os_gone[] = {"execute", "exit", "tmpname", "setlocale", NULL};
    static const char *const io_gone[] = {"popen", "input", "output", "tmpfile", "close", NULL};
    for (int i = 0; os_gone[i]; i++) forbid(L, "os", os_gone[i]);
    for (int i = 0; io_gone[i]; i++) forbid(L, "io", io_gone[i]);
    lua_pushcfunction(L, sb_load), lua_setglobal(L, "load");
    lua_pushcfunction(L, sb_load), lua_setglobal(L, "loadstring");
    lua_pushcfunction(L, sb_require), lua_setglobal(L, "require");
    lua_pushcfunction(L, sb_rawset), lua_setglobal(L, "rawset");
    install_checked_io(L);
    lua_newtable(L);   // weak keys
    lua_createtable(L, 0, 1);
    lua_pushstring(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, READONLY);
    static const char *const libs[] = {"string", "table", "math", "bit", "coroutine", "io", "os", NULL};
    for (int i = 0; libs[i]; i++) make_readonly(L, libs[i]);
    lua_pushstring(L, "");   // strings' metatable is out of reach (it holds the real string table)
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "ctrace.loaded");
    lua_pushstring(L, root);
    lua_setfield(L, LUA_REGISTRYINDEX, "ctrace.root");
    luaL_getmetatable(L, "FILE*");   // file handles' methods out of reach (their checks stay)
    lua_pushstring(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    lua_newtable(L);   // the script's environment
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "ctrace.env");
    lua_pushcfunction(L, strict_index);
    set_locked_metatable(L, strict_newindex);
    return L;
}

// ---------------------------------------------------------------------------------------------
// The process

typedef struct {
    const char *folder, *script, *staging, *root;
    const char *read[64];
    int n_read, unsafe;
    double memory, file_size;
    int rank, size, threads;   // under MPI (size > 1): the parent's rank and the job's size
} run_spec;

static ct_status parse_spec(cJSON *j, run_spec *s, ct_err *err) {
    memset(s, 0, sizeof *s);
    const char **str[] = {&s->folder, &s->script, &s->staging, &s->root};
    const char *names[] = {"folder", "script", "staging", "root"};
    for (int i = 0; i < 4; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(j, names[i]);
        if (!cJSON_IsString(v)) return ct_fail(err, CT_STATUS_BAD_ARG, "run spec: '%s' must be a string", names[i]);
        *str[i] = v->valuestring;
    }
    cJSON *r, *read = cJSON_GetObjectItemCaseSensitive(j, "read");
    cJSON_ArrayForEach(r, read) {
        if (!cJSON_IsString(r) || s->n_read == 63) return ct_fail(err, CT_STATUS_BAD_ARG, "run spec: 'read' (up to 63 paths)");
        s->read[s->n_read++] = r->valuestring;
    }
    s->unsafe = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "unsafe"));
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "memory");
    s->memory = cJSON_IsNumber(v) ? v->valuedouble : 0;
    v = cJSON_GetObjectItemCaseSensitive(j, "file_size");
    s->file_size = cJSON_IsNumber(v) ? v->valuedouble : 0;
    const char *ints[] = {"rank", "size", "threads"};
    int *to[] = {&s->rank, &s->size, &s->threads};
    for (int i = 0; i < 3; i++) {
        v = cJSON_GetObjectItemCaseSensitive(j, ints[i]);
        *to[i] = cJSON_IsNumber(v) ? v->valueint : (i == 1);
    }
    if (s->size < 1 || s->rank < 0 || s->rank >= s->size || s->threads < 0)
        return ct_fail(err, CT_STATUS_BAD_ARG, "run spec: rank %d of %d, %d threads", s->rank, s->size, s->threads);
    return CT_OK;
}

// The relay's transport: a request to the parent, its answer (ct_dist_relay).
static ct_status to_parent(const void *req, size_t n, char **reply, size_t *reply_n, ct_err *err) {
    return ct_lua_broker(req, n, reply, reply_n, err);
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_getfield(L, LUA_REGISTRYINDEX, "ctrace.traceback");
    lua_pushstring(L, msg);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

// A Lua value of the record of attributions (tables of tables, numbers, strings, booleans; an
// array when its keys are 1..n) as JSON, read in C: no Lua function of the script's runs.
static cJSON *to_json(lua_State *L, int idx, int depth) {
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: return cJSON_CreateNumber(lua_tonumber(L, idx));
    case LUA_TSTRING: return cJSON_CreateString(lua_tostring(L, idx));
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TTABLE: break;
    default: return cJSON_CreateNull();
    }
    if (depth > 8) return cJSON_CreateNull();
    size_t n = lua_objlen(L, idx);
    lua_pushnil(L);
    if (n == 0 && lua_next(L, idx)) {   // a map
        lua_pop(L, 2);
        cJSON *out = cJSON_CreateObject();
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) == LUA_TSTRING)
                cJSON_AddItemToObject(out, lua_tostring(L, -2), to_json(L, lua_gettop(L), depth + 1));
            lua_pop(L, 1);
        }
        return out;
    }
    if (n > 0) lua_pop(L, 1);   // the nil lua_next did not take
    cJSON *out = cJSON_CreateArray();
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        cJSON_AddItemToArray(out, to_json(L, lua_gettop(L), depth + 1));
        lua_pop(L, 1);
    }
    return out;
}

// The report (JSON): every file read outside staging with its SHA-256, every attribution, the
// peak memory.
static char *report(lua_State *L, const run_spec *s, const ct_isolation *iso, double seconds, ct_err *err) {
    const ct_ctx *c = ct_lua_ctx(L);
    char staging[4096];
    if (!realpath(s->staging, staging)) snprintf(staging, sizeof staging, "%s", s->staging);
    size_t sl = strlen(staging);
    cJSON *j = cJSON_CreateObject(), *files = cJSON_AddArrayToObject(j, "inputs");
    for (int i = 0; i < c->n_files && !err->status; i++) {
        const char *p = c->files[i].path;
        if (strncmp(p, staging, sl) == 0 && p[sl] == '/') continue;   // read back what the run wrote
        char hex[65];
        if (ct_sha256_file(NULL, p, hex, err)) break;
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "path", p);
        cJSON_AddStringToObject(f, "sha256", hex);
        cJSON_AddItemToArray(files, f);
    }
    char *text = NULL;
    if (!err->status) {
        lua_getfield(L, LUA_REGISTRYINDEX, "ctrace.attributions");   // out of the script's reach
        cJSON_AddItemToObject(j, "attributions", to_json(L, lua_gettop(L), 0));
        lua_pop(L, 1);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)ru.ru_maxrss * 1024);
        cJSON_AddNumberToObject(j, "seconds", seconds);
        if (!s->unsafe) {   // what was in force
            cJSON *o = cJSON_AddObjectToObject(j, "isolation");
            cJSON_AddNumberToObject(o, "landlock_abi", iso->landlock_abi);
            cJSON_AddBoolToObject(o, "seccomp", iso->seccomp);
            cJSON_AddBoolToObject(o, "landlock_net", iso->net);
            cJSON_AddBoolToObject(o, "landlock_scoped", iso->scoped);
            cJSON_AddNumberToObject(o, "memory_limit_bytes", (double)iso->memory);
            cJSON_AddNumberToObject(o, "file_size_limit_bytes", (double)iso->file_size);
            cJSON_AddStringToObject(o, "network", "none (requests go through ctrace run)");
        }
        if (!(text = cJSON_PrintUnformatted(j))) ct_fail(err, CT_STATUS_NO_MEMORY, "run: out of memory for the report");
    }
    cJSON_Delete(j);
    return text;
}

// hf:// addresses in files the engine reads resolve through the parent.
static ct_status resolve_by_parent(void *data, const char *uri, char *out, size_t n, ct_err *err) {
    (void)data;
    cJSON *req = cJSON_CreateObject(), *args = cJSON_AddArrayToObject(req, "args"), *box = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "call", "hub_file");
    cJSON_AddStringToObject(box, "v", uri);
    cJSON_AddItemToArray(args, box);
    char *text = cJSON_PrintUnformatted(req), *reply = NULL;
    cJSON_Delete(req);
    size_t reply_n;
    ct_status rc = text ? ct_lua_broker(text, strlen(text), &reply, &reply_n, err)
                        : ct_fail(err, CT_STATUS_NO_MEMORY, "run: out of memory");
    free(text);
    if (rc) return rc;
    cJSON *j = cJSON_Parse(reply);
    free(reply);
    cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "results");
    cJSON *path = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res, 0), "v");
    cJSON *msg = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res, 1), "v");
    if (cJSON_IsString(path) && strlen(path->valuestring) < n) snprintf(out, n, "%s", path->valuestring);
    else rc = ct_fail(err, CT_STATUS_NETWORK, "%s: %s", uri, cJSON_IsString(msg) ? msg->valuestring : "not available");
    cJSON_Delete(j);
    return rc;
}

static int run(lua_State *L, const run_spec *s, const ct_isolation *iso, int env) {
    ct_lua_state *st = ct_lua_state_of(L);
    const char *term = getenv("CTRACE_TERMINAL");   // the parent's stderr is a terminal: draw progress
    st->terminal = term && strcmp(term, "1") == 0;
    ct_err err = {0};
    if (!s->unsafe) {
        if (ct_ctx_set_write_root(&st->ctx, s->staging, &err)) goto fail;
        st->ctx.write_hint = " (the run's results: ct.results_dir(arg[0]), which becomes results/ when the run succeeds)";
        const char *roots[65];
        memcpy(roots, s->read, sizeof *roots * (size_t)s->n_read);
        roots[s->n_read] = s->staging;
        if (ct_ctx_set_read_roots(&st->ctx, roots, s->n_read + 1, &err)) goto fail;
        st->ctx.resolve = resolve_by_parent;
    }
    ct_ctx_lock(&st->ctx);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "ctrace.attributions");
    // ctrace.core knows where the results go; the network goes through the parent (ctrace.sandbox)
    lua_getglobal(L, "require");
    lua_pushstring(L, "ctrace.core");
    if (lua_pcall(L, 1, 1, 0)) {
        fprintf(stderr, "ctrace run: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_pushstring(L, s->root);
    lua_setfield(L, -2, "root");
    lua_pushstring(L, s->staging);
    lua_setfield(L, -2, "run_results");
    if (!s->unsafe) {   // nothing over the run's record, roots, processes or a server
        static const char *const gone[] = {"clear_files_read", "note_read", "files_read", "set_read_roots",
                                           "set_write_root", "lock_roots", "check_write", "set_timeout", "run_lock",
                                           "run_staging", "run_child", "run_outputs", "run_commit", "remove_tree",
                                           "run_read", "serve", "realpath", NULL};
        for (int i = 0; gone[i]; i++) lua_pushnil(L), lua_setfield(L, -2, gone[i]);
    }
    lua_pop(L, 1);
    if (!s->unsafe) {
        lua_getglobal(L, "require");
        lua_pushstring(L, "ctrace.sandbox");
        if (lua_pcall(L, 1, 1, 0) || (lua_getfield(L, -1, "install"), lua_pcall(L, 0, 0, 0))) {
            fprintf(stderr, "ctrace run: %s\n", lua_tostring(L, -1));
            return 1;
        }
        lua_pop(L, 1);
    }
    char *text;
    size_t n;
    if (ct_read_file(&st->ctx, s->script, &text, &n, 64 << 20, &err)) goto fail;   // checked and recorded
    lua_pushcfunction(L, traceback);
    char name[4200];
    snprintf(name, sizeof name, "@%s", s->script);
    int loaded = load_text(L, text, n, name);
    free(text);
    if (loaded != 1) {
        fprintf(stderr, "ctrace run: %s\n", lua_tostring(L, -1));
        return 1;
    }
    if (env) {
        lua_pushvalue(L, env);
        lua_setfenv(L, -2);
    }
    lua_pushstring(L, "arg");   // arg: the script's path
    lua_createtable(L, 0, 1);
    lua_pushstring(L, s->script);
    lua_rawseti(L, -2, 0);
    lua_rawset(L, env ? env : LUA_GLOBALSINDEX);
    double t0 = ct_now();
    if (lua_pcall(L, 0, 0, -2)) {
        fprintf(stderr, "ctrace run: %s\n", lua_tostring(L, -1));
        return 1;
    }
    const char *wf = finish_writes(L);
    if (wf || st->ctx.write_errors) {
        if (wf) fprintf(stderr, "ctrace run: %s\n", wf);
        else fprintf(stderr, "ctrace run: IO: %d file(s) could not be written (a full disk?); results would be "
                     "incomplete, the run fails\n", st->ctx.write_errors);
        return 1;
    }
    char *rep = report(L, s, iso, ct_now() - t0, &err);
    if (!rep) goto fail;
    ct_status rc = ct_frame_send(CT_CHILD_FD, 'R', rep, strlen(rep), 0, &err);
    free(rep);
    if (rc) goto fail;
    return 0;
fail:
    fprintf(stderr, "ctrace run: %s: %s\n", ct_status_str(err.status), err.msg);
    return 1;
}

static lua_State *g_state;   // the experiment's state, kept to the end of the process

int ct_host_run_child(void) {
    char kind, *text;
    size_t n;
    ct_err err = {0};
    if (ct_frame_recv(CT_CHILD_FD, CT_FRAME_MAX, &kind, &text, &n, 0, &err) || kind != 'S') {
        fprintf(stderr, "ctrace --run-child: started by ctrace run only (%s)\n", err.msg[0] ? err.msg : "no spec");
        return 2;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    run_spec s;
    if (!j || parse_spec(j, &s, &err)) {
        fprintf(stderr, "ctrace run: %s\n", err.msg[0] ? err.msg : "bad spec");
        cJSON_Delete(j);
        return 2;
    }
    if (s.size > 1) ct_dist_relay(s.rank, s.size, to_parent);   // the job, through the parent
    if (s.threads > 0) ct_set_threads(s.threads);
    int status = 1;
    ct_isolation iso = {0};
    if (!s.unsafe) {
        ct_confine_policy p = {s.read, s.n_read, s.staging, (int64_t)s.memory, (int64_t)s.file_size};
        if (ct_confine(&p, &iso, &err)) {
            fprintf(stderr, "ctrace run: %s: %s\n", ct_status_str(err.status), err.msg);
            cJSON_Delete(j);
            return 1;
        }
    }
    lua_State *L = s.unsafe ? ct_host_new() : sandbox_state(s.root);
    if (!L) {
        fprintf(stderr, "ctrace run: cannot create a Lua state (out of memory)\n");
    } else {
        if (s.unsafe) {
            install_checked_io(L);
            lua_pushnil(L);   // no strict environment
        }
        status = run(L, &s, &iso, lua_isnil(L, -1) ? 0 : lua_gettop(L));
        g_state = L;   // never closed: no finalizer the script set runs after its report
    }
    cJSON_Delete(j);
    fflush(NULL);
    _exit(status);   // no exit handler: the state (and what it owns) ends with the process
}
