// model.h - transformer configs, weights, the forward pass with hook points, generation.
//
// One decoder-only transformer covers every family ctrace runs; the config says which parts
// a family has (filled from the table of families in model_load.c). Dimension legend used in shape comments throughout the engine:
//   T  positions in the current call        S  positions held in the KV cache
//   D  d_model                              F  d_mlp (MLP hidden width)
//   H  query heads    KV key/value heads    hd head dimension      V vocabulary
//   L  layers
// Weight matrices are [out, in] (PyTorch's Linear) and stay where the checkpoint stores them, in
// its dtype (F32, F16 or BF16): a ct_mat into the memory-mapped file (GPT-2's Conv1D [in, out]
// as a transposed view). Products convert a tile of rows at a time into the scratch
// (ct_mat_matmul), so no float32 copy of a model is made; F32 data that is 4-byte aligned is
// read in place. Vectors (norm gains, biases) are float32: in place, or converted once into
// memory owned by the model.
// A ct_model is used from one thread at a time: its forward pass, MLP and sampling work in
// scratch memory the model owns (ct_scratch). Two models may run on two threads.
#ifndef CT_MODEL_H
#define CT_MODEL_H

#include <stdint.h>

#include "core/ctx.h"
#include "core/status.h"
#include "core/tensor.h"
#include "formats/tokenizer.h"

typedef enum { CT_ROPE_NONE, CT_ROPE_ADJACENT, CT_ROPE_HALF } ct_rope;   // pairs (2i,2i+1) or (i,i+hd/2)
typedef enum { CT_NORM_RMS, CT_NORM_LAYER } ct_norm;
typedef enum { CT_ACT_SILU, CT_ACT_GELU_TANH } ct_act;

typedef struct {
    char architecture[64];     // "LlamaForCausalLM", "llama2.c", ...
    int d_model, d_mlp, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, max_seq_len;
    ct_norm norm;
    float norm_eps;
    float norm_gain_offset;    // Gemma stores RMSNorm gains zero-centred: gain = 1 + w
    ct_rope rope;
    float rope_theta;
    float rope_local_theta;    // RoPE base of the sliding-window layers (Gemma-3 rope_local_base_freq); 0: rope_theta
    int rope_llama3;           // rope_scaling type "llama3"
    float rope_linear;         // linear RoPE scaling (positions / factor) of full-attention layers; 0: none
    float rope_local_linear;   // ... of the sliding-window layers when they have their own base; 0: none
    float rope_factor, rope_low_freq, rope_high_freq, rope_original_max;
    float attn_scale;          // multiplies q.k (1/sqrt(hd), Gemma: query_pre_attn_scalar^-1/2)
    float attn_softcap;        // 0: off; else cap * tanh(score / cap)
    float final_softcap;       // 0: off
    int sliding_window;        // 0: off; else the window of the layers marked sliding (ct_layer.sliding)
    int gated_mlp;             // down(act(gate x) * up x); else fc -> act -> proj (GPT-2)
    ct_act act;
    float embed_scale;         // Gemma: sqrt(D)
    int embed_scale_rounded;   // Gemma-3: embed_scale is rounded to the embedding's dtype
    int learned_pos;           // GPT-2 position embeddings
    int qk_norm;               // Qwen3, Gemma-3: per-head RMSNorm of q and k
    int post_norms;            // Gemma: post-attention and post-feedforward norms
    int tied;                  // unembedding = token embedding
    int bos_id, eos_id;
} ct_config;

typedef struct {
    const float *ln1_w, *ln1_b;            // (D,)
    ct_mat wq, wk, wv, wo;                 // (H*hd, D) (KV*hd, D) (KV*hd, D) (D, H*hd)
    const float *bq, *bk, *bv, *bo;        // (H*hd,) (KV*hd,) (KV*hd,) (D,)  or NULL
    const float *q_norm, *k_norm;          // (hd,) or NULL
    const float *post_attn_w;              // (D,) Gemma post-attention norm
    const float *ln2_w, *ln2_b;            // (D,)
    ct_mat w_gate, w_up, w_down;           // (F, D) (F, D) (D, F); w_gate.data NULL when not gated
    const float *b_up, *b_down;            // (F,) (D,) or NULL
    const float *post_ff_w;                // (D,) Gemma post-feedforward norm
    int sliding;   // sliding-window attention (cfg.sliding_window) with the sliding layers' RoPE base
                   // (Gemma-2: even layers; Gemma-3: from layer_types or sliding_window_pattern)
} ct_layer;

// Working memory of the forward pass, ct_model_mlp and top-p sampling, owned by the model:
// grown when a call needs more (more positions, a longer KV cache), reused by every later
// call, freed with the model. Generation therefore allocates nothing per token. The regions
// are separate allocations: an MLP control calling ct_model_mlp inside a pass may grow `mlp`
// without moving the buffers the pass is using.
typedef struct {
    float *fwd;       // the pass's per-position buffers, carved for T positions (model.c: fwd_buffers)
    size_t fwd_n;     // floats in fwd
    float *att;       // (T, S) one head's scores, then its pattern
    size_t att_n;     // floats in att
    float *pack;      // (S + 64, hd) one head's keys and a block of queries (model.c: attention)
    size_t pack_n;    // floats in pack
    float *mlp;       // ct_model_mlp: gate (T, F) and up (T, F)
    size_t mlp_n;     // floats in mlp
    float *tile;      // weights converted to float32 a tile at a time (ct_mat_matmul: a tile for each
                      // thread), shared by the pass and ct_model_mlp (no product runs inside another)
    size_t tile_n;    // floats in tile
    void *probs;      // (V,) probability and index pairs for top-p, or NULL
    size_t probs_n;   // pairs in probs
    int busy;         // a forward pass is running (a second one on the same model is refused)
} ct_scratch;

typedef struct ct_model ct_model;
struct ct_model {
    ct_config cfg;
    ct_mat embed;              // (V, D)
    ct_mat pos_embed;          // (max_seq_len, D); data NULL without learned positions
    ct_layer *layers;          // (L,)
    const float *lnf_w, *lnf_b;   // (D,)
    ct_mat lm_head;            // (V, D); the embedding's view when tied
    float *rope_inv_freq;      // (hd/2,)
    float *rope_local_inv_freq;   // (hd/2,) of the sliding-window layers, or NULL (they use rope_inv_freq)
    ct_tokenizer *tok;         // NULL when the checkpoint has no tokenizer beside it
    char path[1024];
    // resources the weights live in
    void *map;                 // llama2.c checkpoint mapping
    size_t map_size;
    struct ct_safetensors **shards;
    int n_shards;
    float **owned;             // converted vectors (and a random model's weights)
    size_t *owned_bytes;
    int n_owned, cap_owned;
    ct_scratch scratch;        // working memory of the forward pass (model.c)
    int hold_lo, hold_hi;      // the layers this process holds, [hold_lo, hold_hi) (ct_model_hold_layers);
                               // hold_hi 0: all of them
};

// Loads a llama2.c checkpoint (.bin), a directory holding one, or a Hugging Face directory
// (config.json + model.safetensors or model.safetensors.index.json). A tokenizer beside it
// (tok*.bin / tokenizer.bin, or tokenizer.json) is loaded too when present.
ct_status ct_model_load(ct_ctx *ctx, ct_model **out, const char *path, ct_err *err);
ct_status ct_model_load_llama2c(ct_ctx *ctx, ct_model **out, const char *path, ct_err *err);
ct_status ct_model_load_hf(ct_ctx *ctx, ct_model **out, const char *dir, ct_err *err);
// The same with config.json's text (len bytes, borrowed) given instead of read from dir. Used by the
// fuzzer.
ct_status ct_model_load_hf_config(ct_ctx *ctx, ct_model **out, const char *dir, const char *text, size_t len,
                                  ct_err *err);
// Validates a llama2.c checkpoint held in memory (borrowed). Used by the fuzzer and tests.
ct_status ct_model_parse_llama2c(ct_model **out, const uint8_t *buf, size_t size, ct_err *err);
void ct_model_free(ct_model *m);
// Holds m's weights as a checkpoint stored in dt (CT_DT_BF16 or CT_DT_F16) holds them, as
// circuit-tracer's --dtype has its model cast: every matrix stored in another float dtype is
// rounded to dt (nearest even) into memory m owns, in dt (a float32 checkpoint's matrices take half
// their bytes), every vector (norm gains, biases) is rounded and kept as float32, and an embedding
// scale taken in the weights' dtype is rounded. The arithmetic stays float32, so m then computes
// exactly as the same checkpoint saved in dt. CT_DT_F32 keeps the matrices and vectors as stored
// (widening changes no number) but takes the embedding scale unrounded, as the checkpoint saved in
// F32 has it. When every matrix was copied, the checkpoint's mapped pages are dropped from m.
// Call it before m is used: a replacement model keeps results of the weights it saw.
ct_status ct_model_hold_as(ct_model *m, ct_dtype dt, ct_err *err);
// Keeps only layers [lo, hi) of m, for a layer-split model (one rank's share of an MPI job): the
// other layers' weights are dropped from m (their pages are never read), the embedding kept when lo
// is 0 (or tied to a kept unembedding), the final norm and unembedding when hi is L. A forward pass
// then runs exactly the held layers (ct_forward_ctl first_layer and last_layer); anything reaching
// for a dropped weight is refused (BAD_ARG naming the held layers). Call it before m is used.
ct_status ct_model_hold_layers(ct_model *m, int lo, int hi, ct_err *err);
// Whether m holds only some of its layers (ct_model_hold_layers with a range short of 0..L).
int ct_model_is_split(const ct_model *m);
// CT_OK when m holds layer l (l == -1: the embedding; l == L: the final norm and unembedding),
// else BAD_ARG naming what (fn) needed it and the layers m holds.
ct_status ct_model_holds(const ct_model *m, int l, const char *fn, ct_err *err);
// A Llama-shaped model (RMS norms, gated SiLU MLP, RoPE) with uniform random weights scaled by
// 1/sqrt(fan-in), for benchmarks and tests at sizes no checkpoint is worth writing for.
ct_status ct_model_random(ct_model **out, const ct_config *cfg, uint64_t seed, ct_err *err);
// Checks the config for values the forward pass cannot run with; called by every loader.
ct_status ct_config_validate(ct_config *c, ct_err *err);
// Fills rope_inv_freq (and rope_local_inv_freq when the config has a local base) from the config,
// replacing the tables of an earlier call.
ct_status ct_model_init_rope(ct_model *m, ct_err *err);
// The name the model goes by, into buf: "org/name" for a snapshot of the Hugging Face hub cache
// (.../models--org--name/snapshots/<rev>), else the last component of its path ("gemma-3-1b-it").
void ct_model_name(const ct_model *m, char *buf, size_t n);
// Bytes of weight matrices one generation step reads: every layer's matrices and the
// unembedding, in their stored dtype (the embedding's one row left out unless it is the
// unembedding too). The bound memory bandwidth sets on tokens/s is bandwidth / this.
size_t ct_model_step_bytes(const ct_model *m);
// Rotates one head vector v (hd,) as a pass rotates the queries and keys of layer `layer` at
// position pos (RoPE with the layer's base); nothing for a model without RoPE.
void ct_model_rope(const ct_model *m, int layer, int pos, float *v);
// Frees the scratch (ct_model_free does) and leaves it empty.
void ct_scratch_free(ct_scratch *s);

// ----------------------------------------------------------------------------
// Prompts

// The tokens a prompt runs on, malloc'ed into *out (*n of them): text tokenized with BOS as
// Hugging Face does, or ids with BOS prepended when the first is an ordinary token (not BOS, EOS
// or a special "<...>" piece). BAD_ARG for an empty prompt or text without a tokenizer.
ct_status ct_prompt_text(const ct_model *m, const char *text, size_t len, int **out, int *n, ct_err *err);
ct_status ct_prompt_ids(const ct_model *m, const int *ids, int n_ids, int **out, int *n, ct_err *err);
// The id of the one token text encodes to (no special tokens added); BAD_ARG when it is not
// exactly one token.
ct_status ct_token_of_text(const ct_model *m, const char *text, size_t len, int *id, ct_err *err);

// ----------------------------------------------------------------------------
// Hook points

typedef enum {
    // per layer
    CT_HOOK_RESID_PRE,      // (T, D)  blocks.l.hook_resid_pre
    CT_HOOK_LN1_SCALE,      // (T,)    blocks.l.ln1.hook_scale (the norm's denominator)
    CT_HOOK_LN1_NORMALIZED, // (T, D)  blocks.l.ln1.hook_normalized (before the gain)
    CT_HOOK_ATTN_IN,        // (T, D)  blocks.l.attn.hook_in (after the gain)
    CT_HOOK_Q,              // (T, H, hd)  after q-norm and RoPE
    CT_HOOK_K,              // (T, KV, hd)
    CT_HOOK_Q_NORM_SCALE,   // (T, H)  blocks.l.attn.q_norm.hook_scale: q-norm denominators (Qwen3, Gemma-3)
    CT_HOOK_K_NORM_SCALE,   // (T, KV) blocks.l.attn.k_norm.hook_scale
    CT_HOOK_V,              // (T, KV, hd)
    CT_HOOK_PATTERN,        // (H, T, T) post-softmax
    CT_HOOK_Z,              // (T, H, hd) attention-weighted values
    CT_HOOK_ATTN_RESULT,    // (T, D)  o_proj output, before any post-attention norm
    CT_HOOK_LN1_POST_SCALE, // (T,)    Gemma post-attention norm denominator
    CT_HOOK_ATTN_OUT,       // (T, D)  attention contribution to the residual
    CT_HOOK_RESID_MID,      // (T, D)
    CT_HOOK_LN2_SCALE,      // (T,)
    CT_HOOK_LN2_NORMALIZED, // (T, D)
    CT_HOOK_MLP_IN,         // (T, D)  after norm and gain
    CT_HOOK_MLP_PRE,        // (T, F)  gate (or fc) pre-activation
    CT_HOOK_MLP_POST,       // (T, F)  act(gate) * up (or act(fc))
    CT_HOOK_MLP_RAW_OUT,    // (T, D)  blocks.l.mlp.hook_out: raw MLP output
    CT_HOOK_LN2_POST_SCALE, // (T,)    Gemma post-feedforward norm denominator
    CT_HOOK_MLP_OUT,        // (T, D)  blocks.l.hook_mlp_out: MLP contribution to the residual
    CT_HOOK_RESID_POST,     // (T, D)
    CT_HOOK_N_LAYER,
    // global
    CT_HOOK_EMBED = CT_HOOK_N_LAYER,   // (T, D) token embedding as added (scaled on Gemma)
    CT_HOOK_POS_EMBED,      // (T, D)
    CT_HOOK_LNF_SCALE,      // (T,)
    CT_HOOK_LNF_NORMALIZED, // (T, D)
    CT_HOOK_UNEMBED_PRE,    // (T, D) final-norm output after the gain
    CT_HOOK_N_KINDS
} ct_hook_kind;

typedef struct {
    ct_hook_kind kind;
    int layer;   // -1 for global hooks
} ct_hook_id;

// Parses a hook name (canonical or alias) for this model; NOT_FOUND names what exists.
ct_status ct_hook_parse(const ct_model *m, const char *name, ct_hook_id *out, ct_err *err);
// The per-layer hook named hook ("mlp.hook_in", "hook_resid_mid", ...) of layer `layer`.
ct_status ct_hook_at(const ct_model *m, int layer, const char *hook, ct_hook_id *out, ct_err *err);
// Canonical name of a hook into buf.
void ct_hook_name(ct_hook_id id, char *buf, size_t n);
// Whether the model has this hook (e.g. ln1_post only on Gemma-2, pos_embed only on GPT-2).
int ct_hook_exists(const ct_model *m, ct_hook_id id);
// Shape of the hook's tensor for T positions; returns ndim.
int ct_hook_shape(const ct_model *m, ct_hook_id id, int T, int64_t *shape);

// Requested hooks and, after a forward pass, their tensors.
typedef struct {
    int n;
    ct_hook_id *ids;
    ct_tensor **values;   // filled by ct_model_forward (owned by the cache)
} ct_hook_cache;

ct_status ct_hook_cache_init(ct_hook_cache *c, const ct_hook_id *ids, int n, ct_err *err);
void ct_hook_cache_free(ct_hook_cache *c);
// Every hook the model has, all layers.
ct_status ct_hook_cache_init_all(ct_hook_cache *c, const ct_model *m, ct_err *err);

// ----------------------------------------------------------------------------
// Forward pass and generation

typedef struct {
    int max_len, len;
    size_t bytes;   // of each of k and v
    float *k, *v;   // (L, max_len, KV*hd)
} ct_kv_cache;

ct_status ct_kv_cache_init(ct_kv_cache *kv, const ct_model *m, int max_len, ct_err *err);
void ct_kv_cache_free(ct_kv_cache *kv);

// The MLP's inputs at one layer, for a replacement (all (T, D)).
typedef struct {
    const float *resid_mid;    // residual stream before the pre-MLP norm
    const float *normalized;   // pre-MLP norm output before the gain
    const float *mlp_in;       // after the gain
    int T, D;
} ct_mlp_io;

// Values of a clean run held fixed in a later pass (the local replacement model): attention
// patterns and norm denominators. Any pointer may be NULL (computed as usual). Only for passes
// from position 0 over the same number of positions T as the clean run.
typedef struct {
    const float *const *pattern;          // (L) each (H, T, T) post-softmax
    const float *const *ln1_scale;        // (L) each (T,)
    const float *const *ln1_post_scale;   // (L) each (T,) Gemma post-attention norm
    const float *const *ln2_scale;        // (L) each (T,)
    const float *const *ln2_post_scale;   // (L) each (T,) Gemma post-feedforward norm
    const float *lnf_scale;               // (T,)
    const float *const *q_norm_scale;     // (L) each (T, H) per-head q-norm denominators (Qwen3, Gemma-3)
    const float *const *k_norm_scale;     // (L) each (T, KV)
} ct_frozen;

// out (T, D) = the raw MLP output of layer `layer` on x (T, D), the pre-MLP norm's output.
// Works in the model's scratch (its own region: callable from an MLP control inside a pass).
ct_status ct_model_mlp(ct_model *m, int layer, const float *x, int T, float *out, ct_err *err);

struct ct_forward_ctl;
// A clean run's values for passes that hold them fixed, plus any extra hooks asked for.
typedef struct {
    ct_hook_cache hc;        // the frozen values, then the extra hooks
    int n_frozen;
    ct_frozen fz;            // points into hc
    const float **ptrs;      // (7L) storage behind fz's per-layer arrays
} ct_frozen_run;

// Runs tokens (T,) from position 0 and keeps every attention pattern and norm denominator, and
// the extra hooks (n_extra ids); logits (may be NULL): (T, V) when all_logits, else (V,) of the
// last position. ctl (may be NULL) may run a range of layers (first_layer .. last_layer): the
// frozen values are then those of its layers (NULL for the others; lnf_scale only with the last).
ct_status ct_frozen_capture(ct_frozen_run *out, ct_model *m, const int *tokens, int T, const ct_hook_id *extra,
                            int n_extra, float *logits, int all_logits, const struct ct_forward_ctl *ctl, ct_err *err);
// Data of extra hook i (in the order asked for).
const float *ct_frozen_extra(const ct_frozen_run *f, int i);
// Frees extra hook i's tensor once its values are copied elsewhere.
void ct_frozen_drop_extra(ct_frozen_run *f, int i);
void ct_frozen_run_free(ct_frozen_run *f);

// Forward-pass controls. mlp, when set, replaces every layer's MLP: it writes out (T, D) at the
// MLP's raw output (mlp_out_raw: before Gemma's post-feedforward norm, which is then applied)
// or at its contribution to the residual. edit, when set, may change x (T, D) in place at
// hook_embed (after positions are added), blocks.l.hook_resid_mid, mlp.hook_out (raw output)
// and hook_mlp_out, and x (T, H*hd) at attn.hook_z (each head's attention-weighted values),
// before the value is used. first_layer > 0 starts the pass at that layer from
// resid (T, D), the residual stream entering it (a pass from position 0 without a KV cache):
// the layers before it are not run. last_layer > 0 stops the pass after layer last_layer - 1,
// writing the residual stream leaving it into resid_out (T, D) (no final norm, no logits; hooks of
// layers not run are left zero). A layer-split model runs exactly its held layers this way.
typedef struct ct_forward_ctl {
    ct_status (*mlp)(void *ctx, int layer, const ct_mlp_io *io, float *out, ct_err *err);
    int mlp_out_raw;
    ct_status (*edit)(void *ctx, ct_hook_id at, float *x, int T, ct_err *err);
    const ct_frozen *frozen;
    void *ctx;
    int first_layer;
    const float *resid;
    int last_layer;
    float *resid_out;
} ct_forward_ctl;

// Runs tokens (T,) at positions kv->len .. kv->len+T-1 (kv may be NULL: a fresh pass from
// position 0) and appends their keys and values to kv. Buffers come from the model's scratch,
// sized on a call with kv for one-token steps up to kv->max_len, so later steps reuse them; a
// control may not start another pass on the same model from inside one (BAD_ARG). logits: (T, V) when all_logits, else
// (V,) for the last position; may be NULL. hooks (may be NULL) are filled for the T positions.
ct_status ct_model_forward(ct_model *m, const int *tokens, int T, ct_kv_cache *kv,
                           ct_hook_cache *hooks, float *logits, int all_logits, ct_err *err);
// The same with controls (ctl may be NULL).
ct_status ct_model_forward_ctl(ct_model *m, const int *tokens, int T, ct_kv_cache *kv, ct_hook_cache *hooks,
                               float *logits, int all_logits, const ct_forward_ctl *ctl, ct_err *err);

typedef struct {
    int max_tokens;
    float temperature;   // 0: greedy
    float top_p;         // 1: off
    uint64_t seed;
    int stop_at_eos;     // stop when the model emits EOS (or BOS, as llama2.c does)
} ct_gen_opts;

// Generates after the prompt tokens; out receives up to opts->max_tokens ids (*n_out set).
ct_status ct_model_generate(ct_model *m, const int *prompt, int n_prompt, const ct_gen_opts *opts,
                            int *out, int *n_out, ct_err *err);

// The same with forward controls for the prompt pass and for each later token (either may be
// NULL). *kv_out (may be NULL) points at the KV cache while generation runs, so a control's
// context can read the position a pass starts at (kv->len).
ct_status ct_model_generate_ctl(ct_model *m, const int *prompt, int n_prompt, const ct_gen_opts *opts,
                                const ct_forward_ctl *prompt_ctl, const ct_forward_ctl *step_ctl, ct_kv_cache **kv_out,
                                int *out, int *n_out, ct_err *err);

// Index of the sampled token from logits (V,) (modified in place). Top-p allocates a (V,)
// array per call; ct_model_generate samples in the model's scratch instead.
int ct_sample(float *logits, int V, float temperature, float top_p, uint64_t *rng_state);

#endif
