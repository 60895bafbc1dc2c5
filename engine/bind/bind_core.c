// bind_core.c - the ctrace.core module: registers every type and a few engine facts.
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <zlib.h>

#include "bind.h"
#include "core/dist.h"
#include "core/fileio.h"
#include "core/sha256.h"
#include "net/serve.h"

static int l_mem_bytes(lua_State *L) {
    lua_pushnumber(L, (lua_Number)ct_mem_bytes());
    return 1;
}

static int l_threads(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) ct_set_threads((int)luaL_checkinteger(L, 1));
    lua_pushinteger(L, ct_get_threads());
    return 1;
}

// This process's rank, the job's size (1: not an MPI job) and whether this build joins MPI jobs.
static int l_dist(lua_State *L) {
    lua_pushinteger(L, ct_dist_rank());
    lua_pushinteger(L, ct_dist_size());
    lua_pushboolean(L, ct_dist_built());
    return 3;
}

// dist_gather(s): on rank 0 the strings of every rank (a list in rank order), elsewhere nil.
static int l_dist_gather(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char **parts;
    size_t *sizes;
    ct_err err = {0};
    if (ct_dist_gather(s, n, &parts, &sizes, &err)) return ct_lua_raise(L, &err);
    if (!parts) return 0;
    int P = ct_dist_size();
    lua_createtable(L, P, 0);
    for (int r = 0; r < P; r++) {
        lua_pushlstring(L, parts[r], sizes[r]);
        lua_rawseti(L, -2, r + 1);
        free(parts[r]);
    }
    free(parts), free(sizes);
    return 1;
}

// dist_bcast(s): rank 0's string s on every rank (s is ignored elsewhere).
static int l_dist_bcast(lua_State *L) {
    size_t n = 0;
    const char *s = ct_dist_rank() == 0 ? luaL_checklstring(L, 1, &n) : NULL;
    uint64_t len = n;
    ct_err err = {0};
    if (ct_dist_bcast(&len, sizeof len, 0, &err)) return ct_lua_raise(L, &err);
    char *buf = malloc(len ? (size_t)len : 1);
    if (!buf) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "out of memory for %llu broadcast bytes", (unsigned long long)len);
    if (s) memcpy(buf, s, n);
    if (ct_dist_bcast(buf, (size_t)len, 0, &err)) {
        free(buf);
        return ct_lua_raise(L, &err);
    }
    lua_pushlstring(L, buf, (size_t)len);
    free(buf);
    return 1;
}

// dist_abort(msg): under MPI, msg printed with this rank and the whole job aborted; else nothing.
static int l_dist_abort(lua_State *L) {
    ct_dist_abort(luaL_checkstring(L, 1));
    return 0;
}

// dist_agree(ok) -> whether every rank passed ok (a collective: no rank returns before all reach it)
static int l_dist_agree(lua_State *L) {
    ct_err err = {0};
    lua_pushboolean(L, ct_dist_agree(lua_toboolean(L, 1) ? CT_OK : CT_STATUS_REMOTE, &err) == CT_OK);
    return 1;
}

// dist_alone(on): this process works alone (true) or as its rank again (false); see dist.h.
static int l_dist_alone(lua_State *L) {
    ct_dist_alone(lua_toboolean(L, 1));
    return 0;
}

// Monotonic wall-clock seconds (os.clock counts CPU time of every BLAS thread).
static int l_clock(lua_State *L) {
    lua_pushnumber(L, ct_now());
    return 1;
}

// sha256(path) -> the file's SHA-256 as hex (read through the state's read check)
static int l_sha256(lua_State *L) {
    char hex[65];
    ct_err err = {0};
    if (ct_sha256_file(ct_lua_ctx(L), luaL_checkstring(L, 1), hex, &err)) return ct_lua_raise(L, &err);
    lua_pushstring(L, hex);
    return 1;
}

// mkdirs(path): creates the directory and its missing parents
static int l_mkdirs(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ct_err err = {0};
    if (ct_mkdirs(ct_lua_ctx(L), path, &err)) return ct_lua_raise(L, &err);
    return 0;
}

// write_file(path, text): the file's new content, whole or not at all (written under a temporary
// name, synced and renamed; checked against the state's write root); raises IO on failure
static int l_write_file(lua_State *L) {
    size_t n;
    const char *path = luaL_checkstring(L, 1), *text = luaL_checklstring(L, 2, &n);
    ct_err err = {0};
    if (ct_write_file(ct_lua_ctx(L), path, text, n, &err)) return ct_lua_raise(L, &err);
    return 0;
}

// realpath(path) -> the resolved absolute path, or nil
// zlib_compress(s) -> s in zlib's format (RFC 1950, level 6: the same bytes every time)
static int l_zlib_compress(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    uLongf cap = compressBound((uLong)n);
    Bytef *out = malloc(cap ? cap : 1);
    if (!out) return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "zlib_compress: out of memory for %zu bytes", n);
    int zr = compress2(out, &cap, (const Bytef *)s, (uLong)n, 6);
    if (zr != Z_OK) {
        free(out);
        return ct_lua_fail(L, CT_STATUS_NO_MEMORY, "zlib_compress: zlib error %d", zr);
    }
    lua_pushlstring(L, (const char *)out, cap);
    free(out);
    return 1;
}

static int l_realpath(lua_State *L) {
    char buf[PATH_MAX];
    if (!realpath(luaL_checkstring(L, 1), buf)) return 0;
    lua_pushstring(L, buf);
    return 1;
}

// exists(path) -> "file", "directory" or nil (nothing is read). With read roots, a path the state
// may not read (outside the roots, existing or not, or not resolvable) raises BAD_ARG, as a read
// would: nothing is told about it; nil is for a missing path under a root.
static int l_exists(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ct_err err = {0};
    ct_status rc = ct_ctx_check_read(ct_lua_ctx(L), path, &err);
    if (rc && rc != CT_STATUS_NOT_FOUND) return ct_lua_raise(L, &err);
    if (rc) lua_pushnil(L);
    else if (ct_is_file(path)) lua_pushstring(L, "file");
    else if (ct_is_dir(path)) lua_pushstring(L, "directory");
    else lua_pushnil(L);
    return 1;
}

// list_dir(path) -> sorted names of the entries (not . and ..), and whether path is a directory.
// With read roots, a path outside them (or one that cannot be resolved) raises BAD_ARG; a missing
// one under them gives {}, false.
static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ct_err err = {0};
    ct_status rc = ct_ctx_check_read(ct_lua_ctx(L), path, &err);
    if (rc && rc != CT_STATUS_NOT_FOUND) return ct_lua_raise(L, &err);
    DIR *d = rc ? NULL : opendir(path);
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
    int port = (int)luaL_optinteger(L, 2, 8041);
    ct_err err = {0};
    ct_status rc = ct_serve_dir(ct_lua_ctx(L), dir, port, serve_ready, NULL, &err);
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

// Fields of a /proc file ("Key:   N kB" lines) into the table on top of the stack, in bytes; 0
// when the file cannot be read.
typedef struct { const char *key, *field; } proc_key;
static int proc_fields(lua_State *L, const char *path, const proc_key *keys, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    while (fgets(line, sizeof line, f))
        for (size_t i = 0; i < n; i++)
            if (strncmp(line, keys[i].key, strlen(keys[i].key)) == 0) {
                lua_pushnumber(L, strtod(line + strlen(keys[i].key), NULL) * 1024);   // kB
                lua_setfield(L, -2, keys[i].field);
            }
    fclose(f);
    return 1;
}

// The process's memory now, bytes, from /proc/self/status: {rss =, anon =, file =, peak_rss =}
// (anonymous and file-backed resident pages apart: mapped weights are file pages), and from
// /proc/self/smaps_rollup file_huge, the file pages mapped 2 MiB at a time (absent where the
// kernel lacks it); nil where /proc cannot be read.
static int l_memory(lua_State *L) {
    static const proc_key status[] = {{"VmRSS:", "rss"}, {"RssAnon:", "anon"}, {"RssFile:", "file"}, {"VmHWM:", "peak_rss"}};
    static const proc_key rollup[] = {{"FilePmdMapped:", "file_huge"}};
    lua_newtable(L);
    if (!proc_fields(L, "/proc/self/status", status, sizeof status / sizeof status[0])) {
        lua_pushnil(L);
        return 1;
    }
    proc_fields(L, "/proc/self/smaps_rollup", rollup, 1);
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
    static const luaL_Reg fns[] = {
        {"mem_bytes", l_mem_bytes}, {"threads", l_threads}, {"dist", l_dist}, {"dist_gather", l_dist_gather}, {"dist_alone", l_dist_alone},
        {"dist_abort", l_dist_abort}, {"dist_bcast", l_dist_bcast}, {"dist_agree", l_dist_agree}, {"methods", l_methods}, {"clock", l_clock},
        {"sha256", l_sha256}, {"peak_rss", l_peak_rss}, {"memory", l_memory}, {"mkdirs", l_mkdirs}, {"list_dir", l_list_dir},
        {"write_file", l_write_file}, {"exists", l_exists}, {"serve", l_serve}, {"traceback", l_traceback}, {"zlib_compress", l_zlib_compress}, {"realpath", l_realpath}, {NULL, NULL}};
    lua_newtable(L);
    ct_lua_register_tensor(L);
    ct_lua_register_model(L);
    ct_lua_register_tokenizer(L);
    ct_lua_register_transcoders(L);
    ct_lua_register_json(L);
    ct_lua_register_replacement(L);
    ct_lua_register_graph(L);
    ct_lua_register_net(L);
    ct_lua_register_state(L);
    ct_lua_register_activations(L);
    ct_lua_register_run(L);
    ct_lua_set_funcs(L, fns);
    lua_pushstring(L, CT_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, ct_blas_core());
    lua_setfield(L, -2, "blas_core");
    return 1;
}
