// bind_run.c - `ctrace run`'s process handling for Lua (lua/ctrace/casestudy.lua drives it; the
// experiment process itself is host_run.c).
//
// In the parent:
//   core.run_lock(folder, exclusive) -> lock (lock:release(); released when collected or when
//       the process ends); raises BUSY when another run holds the folder
//   core.run_staging(folder [, beside]) -> a new empty staging directory in folder (beside: another
//       rank's, removing no earlier run's)
//   core.run_child(spec_json, {timeout =, unsafe =, credentials =, download_limit =, quiet =}, on_request)
//       -> {how =, code =, signal =, report =}
//       starts the experiment process, sends it the spec, answers its requests with
//       on_request(text) -> text (made with this state's network settings, but with the Hugging
//       Face and Neuronpedia tokens only if credentials, and downloads within download_limit
//       bytes), relays its output (quiet: its standard error only), stops it at the deadline or on Ctrl-C. how: "exited",
//       "signaled", "timeout", "interrupted" or "terminated"; report: its report text, if any
//   core.run_outputs(dir [, seconds]) -> {{path =, size =, sha256 =}, ...} (synced; raises on links,
//       and TIMEOUT when hashing takes longer than seconds)
//   core.run_commit(staging, results); core.remove_tree(path)
//   core.run_read(dir, relpath [, max_bytes]) -> text | nil, message (no link followed; a regular
//       file; 256 MiB at most by default)
//   core.sandbox_probe() -> {landlock_abi =, seccomp =, net =, scoped =, memory_total = bytes}
// In the experiment process:
//   core.broker(text) -> text: a request to the parent (downloads, feature labels)
//   core.run_results: the staging directory the run writes into (set by host_run.c)
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bind.h"
#include "core/dist.h"
#include "run/child.h"
#include "run/confine.h"
#include "run/txn.h"

#define LOCK_MT "ctrace.RunLock"

// a relayed request of the experiment process (dist.h) is one of its requests (child.h)
_Static_assert(CT_DIST_RELAY_MAX <= CT_REQUEST_MAX, "relayed requests must fit the requests the parent reads");

static int lock_release(lua_State *L) {
    int *fd = luaL_checkudata(L, 1, LOCK_MT);
    ct_run_unlock(*fd);
    *fd = -1;
    return 0;
}

static int l_run_lock(lua_State *L) {
    const char *folder = luaL_checkstring(L, 1);
    int exclusive = lua_toboolean(L, 2);
    int *fd = lua_newuserdata(L, sizeof *fd);
    *fd = -1;
    if (luaL_newmetatable(L, LOCK_MT)) {
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "__gc");
        lua_newtable(L);
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "release");
        lua_setfield(L, -2, "__index");
    }
    lua_setmetatable(L, -2);
    ct_err err = {0};
    if (ct_run_lock(fd, folder, exclusive, &err)) return ct_lua_raise(L, &err);
    return 1;
}

static int l_run_staging(lua_State *L) {
    char out[4096];
    ct_err err = {0};
    const char *folder = luaL_checkstring(L, 1);
    int beside = lua_toboolean(L, 2);   // another rank's: earlier runs' staging left alone
    if ((beside ? ct_run_staging_beside : ct_run_staging)(out, sizeof out, folder, &err)) return ct_lua_raise(L, &err);
    lua_pushstring(L, out);
    return 1;
}

static int l_run_outputs(lua_State *L) {
    ct_run_file *files = NULL;
    int n = 0;
    ct_err err = {0};
    ct_ctx *c = ct_lua_ctx(L);
    double saved = c->deadline, left = luaL_optnumber(L, 2, 0);
    if (left > 0) c->deadline = ct_now() + left;
    ct_status rc = ct_run_outputs(c, luaL_checkstring(L, 1), &files, &n, &err);
    c->deadline = saved;
    if (rc) return ct_lua_raise(L, &err);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, files[i].path);
        lua_setfield(L, -2, "path");
        lua_pushnumber(L, (lua_Number)files[i].size);
        lua_setfield(L, -2, "size");
        lua_pushstring(L, files[i].sha256);
        lua_setfield(L, -2, "sha256");
        lua_rawseti(L, -2, i + 1);
    }
    ct_run_files_free(files, n);
    return 1;
}

static int l_run_commit(lua_State *L) {
    ct_err err = {0};
    if (ct_run_commit(luaL_checkstring(L, 1), luaL_checkstring(L, 2), &err)) return ct_lua_raise(L, &err);
    return 0;
}

static int l_run_read(lua_State *L) {
    char *buf;
    size_t n;
    ct_err err = {0};
    if (ct_run_read(luaL_checkstring(L, 1), luaL_checkstring(L, 2), (size_t)luaL_optnumber(L, 3, 256 << 20), &buf, &n, &err)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", ct_status_str(err.status), err.msg);
        return 2;
    }
    lua_pushlstring(L, buf, n);
    free(buf);
    return 1;
}

static int l_remove_tree(lua_State *L) {
    ct_err err = {0};
    if (ct_remove_tree(luaL_checkstring(L, 1), &err)) return ct_lua_raise(L, &err);
    return 0;
}

static int l_sandbox_probe(lua_State *L) {
    ct_isolation iso;
    ct_confine_probe(&iso);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, iso.landlock_abi);
    lua_setfield(L, -2, "landlock_abi");
    lua_pushboolean(L, iso.seccomp);
    lua_setfield(L, -2, "seccomp");
    lua_pushboolean(L, iso.net);
    lua_setfield(L, -2, "net");
    lua_pushboolean(L, iso.scoped);
    lua_setfield(L, -2, "scoped");
    lua_pushnumber(L, (lua_Number)sysconf(_SC_PHYS_PAGES) * (lua_Number)sysconf(_SC_PAGESIZE));
    lua_setfield(L, -2, "memory_total");
    return 1;
}

// The environment a sandboxed experiment process starts with: locale, time zone, thread counts,
// ctrace's own settings and the sanitizers' options; never a token, key or proxy (requests that
// need them are the parent's).
static int env_allowed(const char *kv) {
    static const char *const exact[] = {"HOME=", "LANG=", "LANGUAGE=", "TZ=", "TERM=", "GOTO_NUM_THREADS=",
                                        "ASAN_OPTIONS=", "UBSAN_OPTIONS=", "LSAN_OPTIONS=", NULL};
    static const char *const prefix[] = {"LC_", "OPENBLAS_", "OMP_", "CTRACE_", NULL};
    for (int i = 0; exact[i]; i++)
        if (strncmp(kv, exact[i], strlen(exact[i])) == 0) return 1;
    const char *v = strchr(kv, '='), *scheme = v ? strstr(v, "://") : NULL;
    if (scheme && strchr(scheme, '@')) return 0;   // a URL with a user name or password in it
    for (int i = 0; prefix[i]; i++)
        if (strncmp(kv, prefix[i], strlen(prefix[i])) == 0)
            return !strcasestr(kv, "TOKEN") && !strcasestr(kv, "KEY") && !strcasestr(kv, "SECRET") &&
                   !strcasestr(kv, "PASSWORD") && !strcasestr(kv, "AUTH");
    return 0;
}

// An MPI launcher's variable: the experiment process joins the job through its parent, never by
// itself (it would claim the parent's rank).
static int launcher_var(const char *kv) {
    static const char *const prefix[] = {"OMPI_", "PMIX_", "PMI_", NULL};
    for (int i = 0; prefix[i]; i++)
        if (strncmp(kv, prefix[i], strlen(prefix[i])) == 0) return 1;
    return 0;
}

extern char **environ;

typedef struct {
    lua_State *L;
    int handler;   // stack index of on_request
} request_ctx;

static void on_request(void *data, const char *req, size_t n, char **reply, size_t *reply_n) {
    if (ct_dist_serve(req, n, reply, reply_n)) return;   // the child's share of the MPI job (dist.h)
    request_ctx *r = data;
    lua_State *L = r->L;
    lua_pushvalue(L, r->handler);
    lua_pushlstring(L, req, n);
    size_t len = 0;
    const char *s = NULL;
    if (lua_pcall(L, 1, 1, 0) == 0) s = lua_tolstring(L, -1, &len);
    if (!s) s = "{\"error\":\"IO: the request could not be served\"}", len = strlen(s);
    if ((*reply = malloc(len ? len : 1))) memcpy(*reply, s, len), *reply_n = len;
    lua_pop(L, 1);
}

static int l_run_child(lua_State *L) {
    size_t spec_n;
    const char *spec = luaL_checklstring(L, 1, &spec_n);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const keys[] = {"timeout", "unsafe", "credentials", "download_limit", "quiet", NULL};
    ct_lua_check_opts(L, 2, "run_child", keys);
    double timeout = ct_lua_opt_number(L, 2, "timeout", 0);
    int unsafe = ct_lua_opt_bool(L, 2, "unsafe", 0), credentials = ct_lua_opt_bool(L, 2, "credentials", 0);
    double budget = ct_lua_opt_number(L, 2, "download_limit", -1);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char **env = lua_newuserdata(L, sizeof *env * (n_env + 2));   // collected with the call
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if ((unsafe || env_allowed(environ[i])) && strncmp(environ[i], "CTRACE_TERMINAL=", 16) && !launcher_var(environ[i]))
            env[k++] = environ[i];
    if (isatty(2)) env[k++] = "CTRACE_TERMINAL=1";   // progress lines reach a person (host_run.c)
    env[k] = NULL;
    char *argv[] = {"ctrace", "--run-child", NULL};
    ct_child c;
    ct_err err = {0};
    ct_lua_state *s = ct_lua_state_of(L);
    if (ct_child_spawn(&c, "/proc/self/exe", argv, env, &err)) return ct_lua_raise(L, &err);
    c.quiet = ct_lua_opt_bool(L, 2, "quiet", 0);
    // the requests served for the child: until the run's deadline, within its download budget,
    // and with the user's tokens only when asked (--credentials)
    double saved_deadline = s->ctx.deadline;
    int64_t saved_budget = s->hub.budget;
    char hub_auth[sizeof s->hub.auth], np_auth[sizeof s->np.auth];
    memcpy(hub_auth, s->hub.auth, sizeof hub_auth);
    memcpy(np_auth, s->np.auth, sizeof np_auth);
    if (!credentials) s->hub.auth[0] = 0, s->np.auth[0] = 0;
    s->hub.budget = budget >= 0 ? (int64_t)budget : -1;
    double deadline = timeout > 0 ? ct_now() + timeout : 0;
    s->ctx.deadline = deadline;
    s->ctx.cancel = 0;
    ct_child_end end;
    ct_status rc = ct_frame_send(c.sock, 'S', spec, spec_n, deadline, &err);
    request_ctx rq = {L, 3};
    if (rc) {   // it died at once; its exit says why
        ct_child_wait(&c, ct_now() + 5, NULL, NULL, NULL, &end, &err);
        rc = CT_OK;
    } else {
        rc = ct_child_wait(&c, deadline, on_request, &rq, &s->ctx.cancel, &end, &err);
    }
    s->ctx.deadline = saved_deadline;
    s->ctx.cancel = 0;
    s->hub.budget = saved_budget;
    memcpy(s->hub.auth, hub_auth, sizeof hub_auth);
    memcpy(s->np.auth, np_auth, sizeof np_auth);
    if (rc) {
        ct_child_end_free(&end);
        return ct_lua_raise(L, &err);
    }
    static const char *const how[] = {"exited", "signaled", "timeout", "interrupted", "terminated"};
    lua_createtable(L, 0, 4);
    lua_pushstring(L, how[end.how]);
    lua_setfield(L, -2, "how");
    lua_pushinteger(L, end.code);
    lua_setfield(L, -2, "code");
    lua_pushinteger(L, end.sig);
    lua_setfield(L, -2, "signal");
    if (end.report) {
        lua_pushlstring(L, end.report, end.report_n);
        lua_setfield(L, -2, "report");
    }
    ct_child_end_free(&end);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// The experiment process's side

ct_status ct_lua_broker(const char *req, size_t n, char **reply, size_t *reply_n, ct_err *err) {
    ct_status rc = ct_frame_send(CT_CHILD_FD, 'Q', req, n, 0, err);
    char kind = 0;
    if (!rc) rc = ct_frame_recv(CT_CHILD_FD, CT_FRAME_MAX, &kind, reply, reply_n, 0, err);
    if (!rc && kind != 'A') {
        free(*reply);
        rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "run: unexpected message from the parent");
    }
    return rc;
}

static int l_broker(lua_State *L) {
    size_t n, reply_n;
    const char *req = luaL_checklstring(L, 1, &n);
    char *reply;
    ct_err err = {0};
    if (ct_lua_broker(req, n, &reply, &reply_n, &err)) return ct_lua_raise(L, &err);
    lua_pushlstring(L, reply, reply_n);
    free(reply);
    return 1;
}

// Copies the string-keyed scalars of the table at index from into the table on top.
static void copy_scalars(lua_State *L, int from) {
    if (!lua_istable(L, from)) return;
    lua_pushnil(L);
    while (lua_next(L, from)) {
        int t = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING && (t == LUA_TNUMBER || t == LUA_TSTRING || t == LUA_TBOOLEAN)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        } else {
            lua_pop(L, 1);
        }
    }
}

// Adds an attribution to the run's record (registry "ctrace.attributions", present only in an
// experiment process): prompt token ids, the logit targets, the options given (numbers, strings,
// booleans) with the values in force over them, and seconds.
void ct_lua_record_attribution(lua_State *L, const ct_graph *g, int opts, int in_force, double seconds) {
    opts = opts < 0 ? lua_gettop(L) + opts + 1 : opts;
    in_force = in_force < 0 ? lua_gettop(L) + in_force + 1 : in_force;
    lua_getfield(L, LUA_REGISTRYINDEX, "ctrace.attributions");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_createtable(L, 0, 4);
    ct_lua_push_ids(L, g->tokens, g->n_pos);
    lua_setfield(L, -2, "prompt_tokens");
    // the logit targets attributed (token ids, or V + i for a direction given as a target), with
    // their labels and weights: what targets, max_n_logits and desired_logit_prob chose
    lua_createtable(L, g->n_logits, 0);
    for (int k = 0; k < g->n_logits; k++) {
        lua_createtable(L, 0, 3);
        lua_pushnumber(L, (lua_Number)g->logits[k].vocab_id);
        lua_setfield(L, -2, "id");
        lua_pushstring(L, g->logits[k].label ? g->logits[k].label : "");
        lua_setfield(L, -2, "label");
        lua_pushnumber(L, g->logits[k].prob);
        lua_setfield(L, -2, "weight");
        lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, "logit_targets");
    lua_newtable(L);
    copy_scalars(L, opts);
    copy_scalars(L, in_force);
    lua_setfield(L, -2, "options");
    lua_pushnumber(L, seconds);
    lua_setfield(L, -2, "seconds");
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 1);
}

void ct_lua_register_run(lua_State *L) {
    static const luaL_Reg fns[] = {{"run_lock", l_run_lock}, {"run_staging", l_run_staging},
                                   {"run_child", l_run_child}, {"run_outputs", l_run_outputs},
                                   {"run_commit", l_run_commit}, {"remove_tree", l_remove_tree},
                                   {"run_read", l_run_read},
                                   {"sandbox_probe", l_sandbox_probe}, {"broker", l_broker}, {NULL, NULL}};
    ct_lua_set_funcs(L, fns);
}
