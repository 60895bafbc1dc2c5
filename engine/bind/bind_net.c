// bind_net.c - Neuronpedia and Hugging Face downloads for Lua (lua/ctrace/neuronpedia.lua and
// lua/ctrace/hub.lua wrap these).
//
//   core.np_feature(model_id, source_id, index)  -> feature | nil, message, code
//   core.np_features({{model_id, source_id, index}, ...})
//       -> list (feature or false per key), errors ({[i] = {message, code}}), requests made
//   core.np_search(model_id, {source ids}, query, offset)
//       -> {results = {...}, has_more, next_offset} | nil, message, code
//   core.hub_file("hf://org/repo/path?revision=r") -> local path | nil, message, code
//   core.hub_cached(uri) -> local path | nil, message, code (never touches the network)
//   core.hub_snapshot("org/repo" | "hf://org/repo?revision=r", {pattern, ...})
//       -> snapshot directory, {matched paths}, commit | nil, message, code (net/hub.h)
//   core.net_configure("hub" | "neuronpedia", changes) -> the settings with changes applied:
//       checked (raises on an unknown key or a bad value) and kept in the state's context
//       (bind_state.c), where every later request of the state finds them, hf:// entries of a
//       transcoder config.yaml included
// settings: {url, concurrency, chunk, timeout, connect_timeout, retries, backoff, backoff_max
// (seconds), max_body (bytes), min_rate (bytes/s), min_rate_window (seconds), file_timeout
// (seconds: one hub file, or one Neuronpedia call, as a whole), max_file (bytes: a hub file of
// unannounced size), cache (bool), cache_dir, cache_max (bytes), offline, progress}.
// A feature: {model_id, source_id, index, label, explanations = {{description, type, model}},
// top_logits = {{token, value}}, bottom_logits, density, max_activation}.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bind.h"
#include "net/hub.h"
#include "net/neuronpedia.h"

static const char *const cfg_keys[] = {"url", "concurrency", "chunk", "timeout", "connect_timeout", "retries",
                                       "backoff", "backoff_max", "max_body", "min_rate", "min_rate_window",
                                       "file_timeout", "max_file", "cache", "cache_dir", "cache_max", "offline",
                                       "progress", NULL};

static const char *opt_string(lua_State *L, int idx, const char *key) {
    lua_getfield(L, idx, key);
    const char *s = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
    if (!s && !lua_isnil(L, -1)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "option '%s' expects a string", key);
    lua_pop(L, 1);
    return s;   // still referenced by the table
}

// The number at key (def when absent), which must lie in lo..hi: else an error naming what was
// expected (what) and the value found.
static double opt_in(lua_State *L, int idx, const char *key, double def, double lo, double hi, const char *what) {
    double v = ct_lua_opt_number(L, idx, key, def);
    if (!(v >= lo && v <= hi)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "option '%s': expected %s, got %g", key, what, v);
    return v;
}

#define DAY 86400.0
#define TIB 1099511627776.0

static void read_http(lua_State *L, int idx, ct_http_opts *o) {
    o->concurrency = (int)opt_in(L, idx, "concurrency", o->concurrency, 1, 64, "1..64 requests");
    o->timeout_ms = (long)(1000 * opt_in(L, idx, "timeout", o->timeout_ms / 1000.0, 0, DAY, "0..86400 seconds (0: none)"));
    o->connect_timeout_ms = (long)(1000 * opt_in(L, idx, "connect_timeout", o->connect_timeout_ms / 1000.0, 0, DAY,
                                                 "0..86400 seconds (0: libcurl's default)"));
    o->max_retries = (int)opt_in(L, idx, "retries", o->max_retries, 0, 20, "0..20 retries");
    o->backoff_ms = (long)(1000 * opt_in(L, idx, "backoff", o->backoff_ms / 1000.0, 0, DAY, "0..86400 seconds"));
    o->backoff_max_ms = (long)(1000 * opt_in(L, idx, "backoff_max", o->backoff_max_ms / 1000.0, 0, DAY, "0..86400 seconds"));
    o->max_body = (int64_t)opt_in(L, idx, "max_body", (double)o->max_body, 1, TIB, "1 byte .. 1 TiB");
    o->min_rate = (int64_t)opt_in(L, idx, "min_rate", (double)o->min_rate, 0, TIB, "0..2^40 bytes per second (0: none)");
    o->min_rate_window_ms = (long)(1000 * opt_in(L, idx, "min_rate_window", o->min_rate_window_ms / 1000.0, 0, DAY,
                                                 "0..86400 seconds (0: the timeout)"));
    o->total_timeout_ms = (long)(1000 * opt_in(L, idx, "file_timeout", o->total_timeout_ms / 1000.0, 0, 30 * DAY,
                                               "0..2592000 seconds (0: none)"));
    o->max_file = (int64_t)opt_in(L, idx, "max_file", (double)o->max_file, 1, 1024 * TIB, "1 byte .. 1 PiB");
}

static void np_client(lua_State *L, int idx, ct_np_client *c) {
    ct_np_client_init(c);
    c->http.ctx = ct_lua_ctx(L);
    luaL_checktype(L, idx, LUA_TTABLE);
    ct_lua_check_opts(L, idx, "neuronpedia", cfg_keys);
    const char *url = opt_string(L, idx, "url"), *dir = opt_string(L, idx, "cache_dir");
    if (url) ct_url_base(c->base_url, sizeof c->base_url, url);
    if (dir) snprintf(c->cache.dir, sizeof c->cache.dir, "%s", dir);
    c->chunk = (int)ct_lua_opt_number(L, idx, "chunk", c->chunk);
    if (c->chunk < 1 || c->chunk > 4096) ct_lua_fail(L, CT_STATUS_BAD_ARG, "option 'chunk' must be 1..4096");
    c->use_cache = ct_lua_opt_bool(L, idx, "cache", 1);
    c->offline = ct_lua_opt_bool(L, idx, "offline", c->offline);
    read_http(L, idx, &c->http);
    lua_Number cap = ct_lua_opt_number(L, idx, "cache_max", 0);
    if (cap > 0 && c->use_cache) {
        ct_err err = {0};
        if (ct_cache_open(&c->cache, dir, (int64_t)cap, &err)) ct_lua_raise(L, &err);
    }
}

static void set_num(lua_State *L, const char *k, double v) {
    if (isnan(v)) return;
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v) {
    if (!v) return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void push_logits(lua_State *L, const char *k, const ct_np_logit *l, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        set_str(L, "token", l[i].token);
        set_num(L, "value", l[i].value);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, k);
}

static void push_feature(lua_State *L, const ct_np_feature *f) {
    lua_createtable(L, 0, 10);
    set_str(L, "model_id", f->model_id);
    set_str(L, "source_id", f->source_id);
    set_num(L, "index", f->index);
    set_str(L, "label", f->label);
    set_num(L, "density", f->density);
    set_num(L, "max_activation", f->max_act);
    lua_createtable(L, f->n_expl, 0);
    for (int i = 0; i < f->n_expl; i++) {
        lua_createtable(L, 0, 3);
        set_str(L, "description", f->expl[i].description);
        set_str(L, "type", f->expl[i].type_name);
        set_str(L, "model", f->expl[i].model_name);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "explanations");
    push_logits(L, "top_logits", f->pos, f->n_pos);
    push_logits(L, "bottom_logits", f->neg, f->n_neg);
}

static int push_failure(lua_State *L, const ct_err *err) {
    lua_pushnil(L);
    lua_pushstring(L, err->msg);
    lua_pushstring(L, ct_status_str(err->status));
    return 3;
}

static ct_np_key check_key(lua_State *L, int model, int source, int index) {
    ct_np_key k = {lua_tostring(L, model), lua_tostring(L, source), lua_tonumber(L, index)};
    if (lua_type(L, model) != LUA_TSTRING || lua_type(L, source) != LUA_TSTRING || lua_type(L, index) != LUA_TNUMBER)
        ct_lua_fail(L, CT_STATUS_BAD_ARG, "neuronpedia feature: expected (model_id string, source_id string, index number), "
                    "got (%s, %s, %s)", luaL_typename(L, model), luaL_typename(L, source), luaL_typename(L, index));
    return k;
}

static int l_np_feature(lua_State *L) {
    ct_np_key k = check_key(L, 1, 2, 3);
    ct_np_feature f;
    ct_err err = {0};
    if (ct_np_get_feature(&ct_lua_state_of(L)->np, &k, &f, &err)) {
        if (err.status == CT_STATUS_BAD_ARG) return ct_lua_raise(L, &err);
        return push_failure(L, &err);
    }
    push_feature(L, &f);
    ct_np_feature_free(&f);
    return 1;
}

static int l_np_features(lua_State *L) {
    ct_np_client *c = &ct_lua_state_of(L)->np;
    int requests0 = c->requests;
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    // keys: the strings stay referenced by the list at index 1 while we use them
    ct_np_key *keys = lua_newuserdata(L, sizeof *keys * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        if (!lua_istable(L, -1)) ct_lua_fail(L, CT_STATUS_BAD_ARG, "neuronpedia.features: item %d is %s; expected a table", i + 1, luaL_typename(L, -1));
        int t = lua_gettop(L);
        lua_rawgeti(L, t, 1);
        lua_rawgeti(L, t, 2);
        lua_rawgeti(L, t, 3);
        if (lua_isnil(L, -3)) {   // named fields
            lua_pop(L, 3);
            lua_getfield(L, t, "model_id");
            lua_getfield(L, t, "source_id");
            lua_getfield(L, t, "index");
        }
        keys[i] = check_key(L, t + 1, t + 2, t + 3);
        lua_pop(L, 4);
    }
    ct_np_feature *out = lua_newuserdata(L, sizeof *out * (size_t)(n + 1));
    ct_status *st = lua_newuserdata(L, sizeof *st * (size_t)(n + 1));
    ct_err *errs = lua_newuserdata(L, sizeof *errs * (size_t)(n + 1));
    ct_err err = {0};
    ct_status rc = ct_np_get_features(c, keys, n, out, st, errs, &err);
    if (rc) {
        for (int i = 0; i < n; i++) ct_np_feature_free(&out[i]);
        if (rc == CT_STATUS_BAD_ARG) return ct_lua_raise(L, &err);
        return push_failure(L, &err);
    }
    lua_createtable(L, n, 0);
    lua_newtable(L);
    for (int i = 0; i < n; i++) {
        if (st[i] == CT_OK) {
            push_feature(L, &out[i]);
            ct_np_feature_free(&out[i]);
        } else {
            lua_pushboolean(L, 0);
            lua_createtable(L, 0, 2);
            set_str(L, "message", errs[i].msg);
            set_str(L, "code", ct_status_str(st[i]));
            lua_rawseti(L, -3, i + 1);
        }
        lua_rawseti(L, -3, i + 1);
    }
    lua_pushinteger(L, c->requests - requests0);
    return 3;
}

static int l_np_search(lua_State *L) {
    const char *model = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *query = luaL_checkstring(L, 3);
    int offset = (int)luaL_optinteger(L, 4, 0);
    int nl = (int)lua_objlen(L, 2);
    const char **layers = lua_newuserdata(L, sizeof *layers * (size_t)(nl + 1));
    for (int i = 0; i < nl; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) ct_lua_fail(L, CT_STATUS_BAD_ARG, "neuronpedia.search: source %d is not a string", i + 1);
        layers[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    ct_np_hit *hits;
    int count, more, next;
    ct_err err = {0};
    if (ct_np_search(&ct_lua_state_of(L)->np, model, layers, nl, query, offset, &hits, &count, &more, &next, &err))
        return push_failure(L, &err);
    lua_createtable(L, 0, 3);
    lua_createtable(L, count, 0);
    for (int i = 0; i < count; i++) {
        lua_createtable(L, 0, 6);
        set_str(L, "model_id", hits[i].model_id);
        set_str(L, "source_id", hits[i].source_id);
        set_num(L, "index", hits[i].index);
        set_str(L, "label", hits[i].description);
        set_str(L, "type", hits[i].type_name);
        set_num(L, "cosine", hits[i].cosine);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "results");
    lua_pushboolean(L, more);
    lua_setfield(L, -2, "has_more");
    if (more && next >= 0) set_num(L, "next_offset", next);
    ct_np_hits_free(hits, count);
    return 1;
}

static void hub_cfg(lua_State *L, int idx, ct_hub *h) {
    ct_hub_init(h);
    h->http.ctx = ct_lua_ctx(L);
    luaL_checktype(L, idx, LUA_TTABLE);
    ct_lua_check_opts(L, idx, "hub", cfg_keys);
    const char *url = opt_string(L, idx, "url");
    if (url) ct_url_base(h->endpoint, sizeof h->endpoint, url);
    h->offline = ct_lua_opt_bool(L, idx, "offline", h->offline);
    h->progress = ct_lua_opt_bool(L, idx, "progress", h->progress);
    read_http(L, idx, &h->http);
}

static int hub_call(lua_State *L, int cached) {
    ct_hub *h = &ct_lua_state_of(L)->hub;
    const char *uri = luaL_checkstring(L, 1);
    char path[4096];
    ct_err err = {0};
    ct_status rc;
    if (cached) {
        char repo[256], p[1024], rev[256];
        rc = ct_hub_parse_uri(uri, repo, p, rev, &err);
        if (!rc) rc = ct_hub_cached(h, repo, p, rev, path, sizeof path, &err);
    } else {
        rc = ct_hub_uri(h, uri, path, sizeof path, &err);
    }
    if (rc == CT_STATUS_BAD_ARG) return ct_lua_raise(L, &err);
    if (rc) return push_failure(L, &err);
    lua_pushstring(L, path);
    return 1;
}

static int l_hub_snapshot(lua_State *L) {
    const char *uri = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_objlen(L, 2);
    if (n < 1 || n > CT_HUB_PATTERNS_MAX)
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "hub.snapshot: expected a list of 1..%d file patterns, got %d", CT_HUB_PATTERNS_MAX, n);
    const char *pats[CT_HUB_PATTERNS_MAX];
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            return ct_lua_fail(L, CT_STATUS_BAD_ARG, "hub.snapshot: pattern %d is %s; expected a string", i + 1, luaL_typename(L, -1));
        pats[i] = lua_tostring(L, -1);
        lua_pop(L, 1);   // the string stays referenced by the list
    }
    char repo[256], path[1024], rev[256];
    ct_err err = {0};
    if (ct_hub_parse_uri(uri, repo, path, rev, &err)) return ct_lua_raise(L, &err);
    if (path[0])
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "hub.snapshot: '%s' names a file; expected a repository (org/repo or "
                           "hf://org/repo[?revision=...])", uri);
    ct_hub_snap s;
    ct_status rc = ct_hub_snapshot(&ct_lua_state_of(L)->hub, repo, rev, pats, n, &s, &err);
    if (rc == CT_STATUS_BAD_ARG) return ct_lua_raise(L, &err);
    if (rc) return push_failure(L, &err);
    lua_pushstring(L, s.dir);
    lua_createtable(L, s.n, 0);
    for (int i = 0; i < s.n; i++) {
        lua_pushstring(L, s.files[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushstring(L, s.commit);
    ct_hub_snap_free(&s);
    return 3;
}

static int l_hub_file(lua_State *L) { return hub_call(L, 0); }
static int l_hub_cached(lua_State *L) { return hub_call(L, 1); }

// Copies every field of the table at src into the table at dst.
static void copy_fields(lua_State *L, int src, int dst) {
    lua_pushnil(L);
    while (lua_next(L, src)) {   // [key, value]
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, dst);
    }
}

// net_configure(kind, changes) -> the state's settings for kind ("hub" or "neuronpedia") with
// changes applied, checked and made the state's client.
static int l_net_configure(lua_State *L) {
    const char *kind = luaL_checkstring(L, 1);
    int hub = strcmp(kind, "hub") == 0;
    if (!hub && strcmp(kind, "neuronpedia") != 0)
        return ct_lua_fail(L, CT_STATUS_BAD_ARG, "net_configure: '%s'; expected hub or neuronpedia", kind);
    if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    char key[64];
    snprintf(key, sizeof key, "ctrace.net.%s", kind);
    lua_newtable(L);   // 3: the merged settings
    lua_getfield(L, LUA_REGISTRYINDEX, key);   // 4: the settings so far (or nil)
    if (!lua_isnil(L, 4)) copy_fields(L, 4, 3);
    if (!lua_isnil(L, 2)) copy_fields(L, 2, 3);
    ct_lua_state *s = ct_lua_state_of(L);
    ct_np_client c;
    np_client(L, 3, &c);   // checks every option; raises before anything changes
    if (hub) {
        ct_hub h;
        hub_cfg(L, 3, &h);
        s->hub = h;
    } else {
        s->np = c;
    }
    lua_pushvalue(L, 3);
    lua_setfield(L, LUA_REGISTRYINDEX, key);
    lua_newtable(L);   // a copy for the caller
    copy_fields(L, 3, lua_gettop(L));
    return 1;
}

// np_upload_graph(json_text, slug) -> the graph's page on Neuronpedia (raises on failure)
static int l_np_upload_graph(lua_State *L) {
    size_t n;
    const char *json = luaL_checklstring(L, 1, &n), *slug = luaL_checkstring(L, 2);
    char *page = NULL;
    ct_err err = {0};
    if (ct_np_upload_graph(&ct_lua_state_of(L)->np, slug, json, n, &page, &err)) return ct_lua_raise(L, &err);
    lua_pushstring(L, page);
    free(page);
    return 1;
}

// np_graph(model_id, slug) -> the published graph's JSON text (raises on failure)
static int l_np_graph(lua_State *L) {
    const char *model = luaL_checkstring(L, 1), *slug = luaL_checkstring(L, 2);
    char *json = NULL;
    size_t n = 0;
    ct_err err = {0};
    if (ct_np_get_graph(&ct_lua_state_of(L)->np, model, slug, &json, &n, &err)) return ct_lua_raise(L, &err);
    lua_pushlstring(L, json, n);
    free(json);
    return 1;
}

void ct_lua_register_net(lua_State *L) {
    static const luaL_Reg fns[] = {{"np_feature", l_np_feature}, {"np_features", l_np_features}, {"np_search", l_np_search},
                                   {"np_upload_graph", l_np_upload_graph}, {"np_graph", l_np_graph},
                                   {"hub_file", l_hub_file}, {"hub_cached", l_hub_cached}, {"hub_snapshot", l_hub_snapshot},
                                   {"net_configure", l_net_configure},
                                   {NULL, NULL}};
    ct_lua_set_funcs(L, fns);
}
