// bind.h - helpers shared by the Lua bindings (one file per Lua type). Only engine/bind/ and
// host.c include lua.h.
//
// Conventions: engine failures are raised as "<STATUS>: <message>" after every C temporary
// is freed (return ct_lua_raise(L, &err) as the last statement); options are named tables
// checked strictly (unknown keys raise); userdata box one engine pointer and a freed box
// (pointer NULL) raises "ctrace.X expected (freed)".
#ifndef CT_BIND_H
#define CT_BIND_H

#include <lauxlib.h>
#include <lua.h>

#include "core/ctx.h"
#include "net/hub.h"
#include "net/neuronpedia.h"
#include "trace/graph.h"
#include "trace/replacement.h"
#include "model/model.h"
#include "core/status.h"
#include "core/tensor.h"
#include "formats/tokenizer.h"

#define CT_MT_TENSOR "ctrace.Tensor"
#define CT_MT_MODEL "ctrace.Model"
#define CT_MT_TOKENIZER "ctrace.Tokenizer"
#define CT_MT_TRANSCODERS "ctrace.Transcoders"
#define CT_MT_REPLACEMENT "ctrace.ReplacementModel"
#define CT_MT_GRAPH "ctrace.Graph"
#define CT_MT_ACTIVATIONS "ctrace.Activations"

// The context of a Lua state (bind_state.c), one per state, freed with it: what the engine may
// do on the state's behalf and the network settings ct.hub.configure and
// ct.neuronpedia.configure leave, so every engine call made from the state uses them (loaders
// resolving hf:// addresses in a transcoder config.yaml included).
typedef struct {
    ct_ctx ctx;          // files read and written, the record of files read, cancellation, deadline
    ct_hub hub;          // Hugging Face: endpoint, cache, token, offline, HTTP options
    ct_np_client np;     // Neuronpedia: server, key, cache, offline, HTTP options
    lua_State *L;        // the state a protected call runs in (the signal handlers hook it)
    double timeout_s;    // the armed timeout, for its message
    int terminal;        // stderr reaches a person's terminal: 1, 0, or -1 (isatty(2) tells)
} ct_lua_state;

ct_lua_state *ct_lua_state_of(lua_State *L);
// The engine context every binding passes to the engine.
ct_ctx *ct_lua_ctx(lua_State *L);
// Whether stderr reaches a terminal (progress lines are drawn): in the experiment process of
// ctrace run, whether the parent's does.
int ct_lua_terminal(lua_State *L);
// Around each protected call of the host: cancellation cleared, Ctrl-C armed for this state (its
// handler cancels engine loops and makes the running Lua code raise "CANCELLED: interrupted").
void ct_lua_protect_begin(lua_State *L);
void ct_lua_protect_end(lua_State *L);
// Arms (seconds > 0) or disarms the state's deadline: engine loops stop once it passes and the
// running Lua code raises "CANCELLED: timeout after N s".
void ct_lua_set_timeout(lua_State *L, double seconds);

// Raises err as a Lua error "<STATUS>: <message>". Never returns.
int ct_lua_raise(lua_State *L, const ct_err *err);
// Raises a formatted error with a status name prefix. Never returns.
int ct_lua_fail(lua_State *L, ct_status st, const char *fmt, ...);

// Checks that the table at idx (or nil) only has keys from allowed (NULL-terminated).
void ct_lua_check_opts(lua_State *L, int idx, const char *fn, const char *const *allowed);
lua_Number ct_lua_opt_number(lua_State *L, int idx, const char *key, lua_Number def);
int ct_lua_opt_bool(lua_State *L, int idx, const char *key, int def);

// Creates the metatable of a Lua type: its methods (also kept as __methods, so lua/ctrace can add
// methods written in Lua), __index (index, or the methods table when NULL) and the metamethods in
// meta (__gc, __tostring, __len, ...; may be NULL). The stack is left as it was.
void ct_lua_new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction index, const luaL_Reg *meta);
// Sets each function of fns (NULL-terminated) as a field of the table at the top of the stack.
void ct_lua_set_funcs(lua_State *L, const luaL_Reg *fns);

// Boxes: the userdata holds one pointer. new_box sets the metatable.
void **ct_lua_new_box(lua_State *L, const char *mt);
void *ct_lua_check_box(lua_State *L, int idx, const char *mt);   // raises on wrong type or freed

// Token ids: reads a Lua array of integers (ids) into a malloc'ed array.
int *ct_lua_check_ids(lua_State *L, int idx, int *n);
void ct_lua_push_ids(lua_State *L, const int *ids, int n);

// Generation options {max_tokens, temperature, top_p, seed, stop_at_eos} at idx, checked.
void ct_lua_gen_opts(lua_State *L, int idx, const char *fn, ct_gen_opts *o);
// Pushes the text generated after prompt (ct_tokenizer_continuation).
ct_status ct_lua_push_continuation(lua_State *L, const ct_tokenizer *tok, const int *prompt, int n, const int *gen,
                                   int n_gen, ct_err *err);

// Tensor type
void ct_lua_push_tensor(lua_State *L, ct_tensor *t);   // takes the reference
ct_tensor *ct_lua_check_tensor(lua_State *L, int idx);
// Registers type-specific functions into the module table at the top of the stack.
void ct_lua_register_model(lua_State *L);
void ct_lua_register_tokenizer(lua_State *L);
void ct_lua_register_tensor(lua_State *L);
void ct_lua_register_transcoders(lua_State *L);
void ct_lua_register_json(lua_State *L);
void ct_lua_register_replacement(lua_State *L);
void ct_lua_register_graph(lua_State *L);
void ct_lua_register_net(lua_State *L);
void ct_lua_register_state(lua_State *L);
void ct_lua_register_activations(lua_State *L);
void ct_lua_register_run(lua_State *L);
// In an experiment process of `ctrace run` (bind_run.c): a request to the parent, answered
// (*reply malloc'ed); and the record of every attribution made, for the manifest: its prompt's
// tokens, the scalar options the script gave (table at index opts, may be none) with the values
// in force over them (table at index in_force), and its time.
ct_status ct_lua_broker(const char *req, size_t n, char **reply, size_t *reply_n, ct_err *err);
void ct_lua_record_attribution(lua_State *L, const ct_graph *g, int opts, int in_force, double seconds);

// Pushes a new ctrace.Activations that takes a's arrays (a is left empty).
void ct_lua_push_activations(lua_State *L, ct_sparse_acts *a);
// Pushes one activation entry {layer, pos, feature, value, clean, delta}.
void ct_lua_push_activation(lua_State *L, int layer, int pos, int64_t feature, float value, float clean);

// Pushes a new ctrace.Graph that owns g.
void ct_lua_push_graph(lua_State *L, ct_graph *g);
// The live graph whose node tables carry graph_id id, or NULL (freed or collected).
ct_graph *ct_lua_graph_by_id(lua_State *L, lua_Number id);
// A node argument at arg of the graph at gi: a node table (its index), a 1-based index, or a
// node_id string; raises when it is none of the graph's (kept) nodes. Returns its 0-based index.
int64_t ct_lua_check_node(lua_State *L, int gi, int arg);

// Tokenizer userdata that borrows a model's tokenizer keeps the model alive (uservalue).
void ct_lua_push_tokenizer_of(lua_State *L, int model_idx, ct_tokenizer *tok);

// The ctrace.core module.
int luaopen_ctrace_core(lua_State *L);

#endif
