// bind_state.c - the context of a Lua state: one ct_lua_state per state, in its registry, freed
// with it. It holds what the engine may do on the state's behalf (the engine context: files it
// may read and write, the files it read, cancellation and deadline) and the network settings,
// and it is where Ctrl-C and timeouts reach a running script.
//
//   core.set_read_roots{dir, ...}   reads (engine and sandboxed Lua) only below these ({}: anywhere)
//   core.set_write_root(dir)        writes only below dir ("": anywhere)
//   core.lock_roots()               the roots are final (a sandboxed run confines itself for good)
//   core.check_write(path)          raises unless path may be written
//   core.note_read(path)            checks that path may be read and records it (Lua's own reads)
//   core.files_read()               {{path =, size =}, ...}: every file read so far, in order
//   core.clear_files_read()         starts the record again (a run's own inputs)
//   core.set_timeout(seconds)       stops the running code after that long (0 disarms)
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "bind.h"
#include "core/fileio.h"

#define STATE_KEY "ctrace.state"          // registry: the state's ct_lua_state
#define STATE_MT "ctrace.state.meta"       // registry: its metatable (__gc)

// hf:// addresses in files the engine reads (a transcoder config.yaml) resolve with the state's
// Hugging Face settings.
static ct_status resolve_hf(void *data, const char *uri, char *out, size_t n, ct_err *err) {
    ct_lua_state *s = data;
    if (strncmp(uri, "hf://", 5) != 0)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s: only hf:// addresses are understood", uri);
    return ct_hub_uri(&s->hub, uri, out, n, err);
}

static int state_gc(lua_State *L) {
    ct_lua_state *s = lua_touserdata(L, 1);
    if (s) ct_ctx_free(&s->ctx);
    return 0;
}

ct_lua_state *ct_lua_state_of(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    ct_lua_state *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (s) return s;
    s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    ct_ctx_init(&s->ctx);
    s->ctx.resolve = resolve_hf;
    s->ctx.resolve_data = s;
    ct_hub_init(&s->hub);
    s->hub.http.ctx = &s->ctx;
    ct_np_client_init(&s->np);
    s->np.http.ctx = &s->ctx;
    s->L = L;
    s->terminal = -1;
    luaL_newmetatable(L, STATE_MT);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    return s;
}

ct_ctx *ct_lua_ctx(lua_State *L) { return &ct_lua_state_of(L)->ctx; }

int ct_lua_terminal(lua_State *L) {
    ct_lua_state *s = ct_lua_state_of(L);
    return s->terminal >= 0 ? s->terminal : isatty(2);
}

// ---------------------------------------------------------------------------------------------
// Signals: the handlers only set the flag and install a hook; the hook raises inside Lua. Signals
// are process-wide, so the state whose protected call runs is the one process-global here.

static ct_lua_state *volatile g_running;

static void interrupted_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "CANCELLED: interrupted");
}

static void timeout_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "CANCELLED: timeout after %g s", ct_lua_state_of(L)->timeout_s);
}

static void on_sigint(int sig) {
    signal(sig, SIG_DFL);   // a second Ctrl-C kills the process
    ct_lua_state *s = g_running;
    if (!s) return;
    s->ctx.cancel = 1;   // engine loops stop at their next check
    lua_sethook(s->L, interrupted_hook, LUA_MASKCOUNT, 1);   // count, not call: C error handlers run unhooked
}

static void on_alarm(int sig) {
    (void)sig;
    ct_lua_state *s = g_running;
    if (!s) return;
    lua_sethook(s->L, timeout_hook, LUA_MASKCOUNT, 1);
}

void ct_lua_protect_begin(lua_State *L) {
    ct_lua_state *s = ct_lua_state_of(L);
    s->L = L;
    s->ctx.cancel = 0;
    if (s->ctx.deadline > 0 && ct_now() >= s->ctx.deadline) s->ctx.deadline = 0;   // spent by an earlier call
    g_running = s;
    signal(SIGINT, on_sigint);
}

void ct_lua_protect_end(lua_State *L) {
    (void)L;
    signal(SIGINT, SIG_DFL);
    g_running = NULL;
}

void ct_lua_set_timeout(lua_State *L, double seconds) {
    ct_lua_state *s = ct_lua_state_of(L);
    s->timeout_s = seconds;
    ct_ctx_set_timeout(&s->ctx, seconds);
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 0}, {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)}};
    if (seconds > 0 && it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
    setitimer(ITIMER_REAL, &it, NULL);
}

// ---------------------------------------------------------------------------------------------
// Lua functions

static int l_set_timeout(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    if (!(s >= 0 && s < 1e9)) return ct_lua_fail(L, CT_STATUS_BAD_ARG, "timeout: expected seconds >= 0, got %g", s);
    ct_lua_set_timeout(L, s);
    return 0;
}

static int l_set_read_roots(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    const char **dirs = lua_newuserdata(L, sizeof *dirs * (size_t)(n + 1));   // freed with the call
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        if (!(dirs[i] = lua_tostring(L, -1)))
            return ct_lua_fail(L, CT_STATUS_BAD_ARG, "set_read_roots: entry %d is not a string", i + 1);
        lua_pop(L, 1);   // the string stays referenced by the list
    }
    ct_err err = {0};
    if (ct_ctx_set_read_roots(ct_lua_ctx(L), dirs, n, &err)) return ct_lua_raise(L, &err);
    return 0;
}

static int l_lock_roots(lua_State *L) {
    ct_ctx_lock(ct_lua_ctx(L));
    return 0;
}

static int l_clear_files_read(lua_State *L) {
    ct_ctx_clear_files(ct_lua_ctx(L));
    return 0;
}

static int l_set_write_root(lua_State *L) {
    ct_err err = {0};
    if (ct_ctx_set_write_root(ct_lua_ctx(L), luaL_checkstring(L, 1), &err)) return ct_lua_raise(L, &err);
    return 0;
}

static int l_check_write(lua_State *L) {
    ct_err err = {0};
    if (ct_ctx_check_write(ct_lua_ctx(L), luaL_checkstring(L, 1), &err)) return ct_lua_raise(L, &err);
    return 0;
}

static int l_note_read(lua_State *L) {
    int fd;
    int64_t size;
    ct_err err = {0};
    if (ct_open_read(ct_lua_ctx(L), luaL_checkstring(L, 1), &fd, &size, &err)) return ct_lua_raise(L, &err);
    close(fd);
    return 0;
}

static int l_files_read(lua_State *L) {
    const ct_ctx *c = ct_lua_ctx(L);
    lua_createtable(L, c->n_files, 0);
    for (int i = 0; i < c->n_files; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, c->files[i].path);
        lua_setfield(L, -2, "path");
        lua_pushnumber(L, (lua_Number)c->files[i].size);
        lua_setfield(L, -2, "size");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

void ct_lua_register_state(lua_State *L) {
    static const luaL_Reg fns[] = {{"set_timeout", l_set_timeout}, {"set_read_roots", l_set_read_roots},
                                   {"set_write_root", l_set_write_root}, {"check_write", l_check_write},
                                   {"lock_roots", l_lock_roots}, {"note_read", l_note_read},
                                   {"files_read", l_files_read}, {"clear_files_read", l_clear_files_read}, {NULL, NULL}};
    ct_lua_set_funcs(L, fns);
}
