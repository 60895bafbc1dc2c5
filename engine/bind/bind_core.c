// core.c - the ctrace.core module: registers every type and a few engine facts.
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "bind.h"
#include "core/fileio.h"
#include "net/serve.h"
#include "core/sha256.h"

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

// sha256(path) -> the file's SHA-256 as hex
static int l_sha256(lua_State *L) {
    char hex[65];
    ct_err err = {0};
    if (ct_sha256_file(luaL_checkstring(L, 1), hex, &err)) return ct_lua_raise(L, &err);
    lua_pushstring(L, hex);
    return 1;
}

// mkdirs(path): creates the directory and its missing parents
static int l_mkdirs(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ct_err err = {0};
    if (ct_check_write(path, &err) || ct_mkdirs(path, &err)) return ct_lua_raise(L, &err);
    return 0;
}

// list_dir(path) -> sorted names of the entries (not . and ..), and whether path is a directory
static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    lua_newtable(L);
    if (!d) {
        lua_pushboolean(L, 0);
        return 2;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (n == cap) {
            char **nn = realloc(names, sizeof *names * (size_t)(cap = cap ? 2 * cap : 32));
            if (!nn) break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
        free(names[i]);
    }
    free(names);
    lua_pushboolean(L, 1);
    return 2;
}

// set_write_root(dir): every file the engine writes from now on must be under dir ("" lifts it)
static int l_set_write_root(lua_State *L) {
    ct_err err = {0};
    if (ct_set_write_root(luaL_checkstring(L, 1), &err)) return ct_lua_raise(L, &err);
    return 0;
}

// check_write(path): raises unless path may be written
static int l_check_write(lua_State *L) {
    ct_err err = {0};
    if (ct_check_write(luaL_checkstring(L, 1), &err)) return ct_lua_raise(L, &err);
    return 0;
}

// realpath(path) -> the resolved absolute path, or nil
static int l_realpath(lua_State *L) {
    char buf[PATH_MAX];
    if (!realpath(luaL_checkstring(L, 1), buf)) return 0;
    lua_pushstring(L, buf);
    return 1;
}

// set_timeout(seconds): after that much wall-clock time engine loops stop and the running Lua
// code raises "CANCELLED: timeout" (0 disarms).
static lua_State *volatile g_timeout_state;
static double g_timeout_seconds;

static void timeout_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "CANCELLED: timeout after %g s", g_timeout_seconds);
}

static void on_alarm(int sig) {
    (void)sig;
    ct_cancel_requested = 1;
    if (g_timeout_state) lua_sethook(g_timeout_state, timeout_hook, LUA_MASKCOUNT, 1);
}

static int l_set_timeout(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    if (!(s >= 0 && s < 1e9)) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "timeout: expected seconds >= 0, got %g", s);
    g_timeout_state = L;
    g_timeout_seconds = s;
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 0}, {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)}};
    if (s > 0 && it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
    setitimer(ITIMER_REAL, &it, NULL);
    return 0;
}

// traceback(msg): an error handler that first removes any interrupt or timeout hook (so the
// handler itself is not interrupted), then adds debug.traceback's stack.
static int l_traceback(lua_State *L) {
    lua_sethook(L, NULL, 0, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, "ctrace.traceback");
    if (!lua_isfunction(L, -1)) {
        lua_settop(L, 1);
        return 1;
    }
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

static void serve_ready(void *ctx, int port) {
    fprintf(stderr, "ctrace serve: listening on http://127.0.0.1:%d/\n", port);
    fflush(stderr);
    (void)ctx;
}

// serve(dir, port): serves dir on 127.0.0.1 until Ctrl-C (returns then)
static int l_serve(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    int port = (int)luaL_optinteger(L, 2, 8046);
    ct_err err = {0};
    ct_status rc = ct_serve_dir(dir, port, &ct_cancel_requested, serve_ready, NULL, &err);
    if (rc && rc != CT_STATUS_CANCELLED) return ct_lua_raise(L, &err);
    return 0;
}

// Peak resident set size of the process, bytes.
static int l_peak_rss(lua_State *L) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    lua_pushnumber(L, (lua_Number)ru.ru_maxrss * 1024);
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
    ct_lua_register_net(L);
    lua_pushcfunction(L, l_mem_bytes);
    lua_setfield(L, -2, "mem_bytes");
    lua_pushcfunction(L, l_threads);
    lua_setfield(L, -2, "threads");
    lua_pushcfunction(L, l_methods);
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, l_clock);
    lua_setfield(L, -2, "clock");
    lua_pushcfunction(L, l_sha256);
    lua_setfield(L, -2, "sha256");
    lua_pushcfunction(L, l_peak_rss);
    lua_setfield(L, -2, "peak_rss");
    lua_pushcfunction(L, l_mkdirs);
    lua_setfield(L, -2, "mkdirs");
    lua_pushcfunction(L, l_list_dir);
    lua_setfield(L, -2, "list_dir");
    lua_pushcfunction(L, l_serve);
    lua_setfield(L, -2, "serve");
    lua_pushcfunction(L, l_traceback);
    lua_setfield(L, -2, "traceback");
    lua_pushcfunction(L, l_realpath);
    lua_setfield(L, -2, "realpath");
    lua_pushcfunction(L, l_set_timeout);
    lua_setfield(L, -2, "set_timeout");
    lua_pushcfunction(L, l_set_write_root);
    lua_setfield(L, -2, "set_write_root");
    lua_pushcfunction(L, l_check_write);
    lua_setfield(L, -2, "check_write");
    lua_pushstring(L, CT_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, ct_blas_core());
    lua_setfield(L, -2, "blas_core");
    return 1;
}
