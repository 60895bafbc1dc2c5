// replacement.h - the replacement model: a model with its transcoders, and the clean run of a
// prompt that attribution, interventions and evaluation all start from.
//
// The clean run is the real model's pass over the prompt, keeping what the local replacement
// model holds fixed and what it reads: attention patterns and norm denominators, each layer's
// transcoder input and output hook, the raw MLP outputs, the token embeddings as added, and the
// error vectors (output hook - the transcoders' reconstruction; zero at the constant positions).
// A ct_replacement keeps the clean run of the last prompt it was asked for, so a sweep of
// interventions on one prompt pays for it once.
//
// Constant positions, as circuit-tracer's zero_positions: the first n_const positions (BOS alone,
// n_const 1; Gemma-3 instruction-tuned models <bos><start_of_turn>user\n, n_const 4) have no
// feature nodes and zero error vectors, so nothing is attributed through their MLPs.
//
// The replacement forward pass (every MLP replaced by its transcoders, no error terms) keeps the
// real MLP output at the constant positions; every later position uses the transcoders: encode
// the input hook, decode (CLT: every earlier layer's features write into this one), add b_dec and
// skip.
#ifndef CT_REPLACEMENT_H
#define CT_REPLACEMENT_H

#include "model/model.h"
#include "model/transcoder.h"

// Which value the transcoders read: the MLP's input as the forward pass offers it (ct_mlp_io).
typedef enum {
    CT_TC_IN_RESID_MID,    // hook_resid_mid: the residual stream before the pre-MLP norm
    CT_TC_IN_NORMALIZED,   // ln2.hook_normalized: the norm's output before its gain
    CT_TC_IN_MLP_IN,       // mlp.hook_in (hook_mlp_in): after the gain
} ct_tc_input;

// The transcoders' input of layer io (T, D).
const float *ct_tc_input_of(ct_tc_input in, const ct_mlp_io *io);

// Sparse activations: n entries (layer, pos, feature, value), sorted by (layer, pos, feature);
// beside a clean run's, also each entry's clean value.
typedef struct {
    int64_t n;
    int32_t *idx;    // (n, 3)
    float *value;    // (n,)
    float *clean;    // (n,) the clean run's value (0 where not active there), or NULL
} ct_sparse_acts;

void ct_sparse_acts_free(ct_sparse_acts *a);
// out = the union of a pass's activations a and the clean run's c (both sorted), each entry with
// its value in both (0 where absent from one).
ct_status ct_sparse_acts_union(ct_sparse_acts *out, const ct_sparse_acts *a, const ct_sparse_acts *c, ct_err *err);
// Appends the activations v (T, F) of layer `layer` at positions pos0 .. pos0+T-1 (the constant
// positions below n_const left out): every value with keep_zero, else the non-zero ones. *cap is
// a's capacity.
ct_status ct_sparse_acts_append(ct_sparse_acts *a, int64_t *cap, int layer, int pos0, int n_const, const float *v, int T,
                                int F, int keep_zero, ct_err *err);
// Index of (layer, pos, feature) in a, or -1.
int64_t ct_sparse_acts_find(const ct_sparse_acts *a, int layer, int pos, int64_t feature);

typedef struct {
    int T, L, D;
    int *tokens;              // (T,)
    ct_frozen_run frozen;     // attention patterns and norm denominators, and the hooks below
    const float *embed;       // (T, D) token embeddings as added (Gemma: scaled)
    float *in;                // (L, T, D) transcoder inputs
    float *out;               // (L, T, D) transcoder output hook values
    const float *raw;         // (L, T, D) raw MLP outputs (out itself when the output hook is raw)
    float *err;               // (L, T, D) error vectors, zero at the constant positions
    float *resid;             // (L, T, D) the residual stream entering each layer (hook_resid_pre)
    float *logits;            // (V,) the last position's, or (T, V) when all positions were asked for
    ct_sparse_acts acts[2];   // post- [0] and pre-activation [1] readouts of every layer at
    int have_acts[2];         // positions >= n_const, computed on first use (ct_clean_acts)
} ct_clean_run;

typedef struct {
    ct_model *m;
    const ct_transcoders *tc;
    ct_tc_input input;        // parsed once from tc->input_hook
    int out_raw;              // the output hook is the raw MLP output (mlp.hook_out), not hook_mlp_out
    int n_const;              // leading positions held constant (see above)
    int prefix[4], n_prefix;  // tokens a prompt must start with (Gemma-3 instruction-tuned: 2 105 2364 107), or none
    ct_clean_run *clean;      // the clean run of the last prompt asked for, or NULL
    float *work;              // scratch for passes over the prompt (interventions), kept between them
    size_t work_n;            // floats in work
} ct_replacement;

// Checks that the set fits the model (d_model, layers, hooks) and that its hooks are ones a
// replacement can read and write. The constant positions follow circuit-tracer: 4 for a Gemma-3
// model whose name (ct_model_name) contains "gemma-3" and ends in "-it", whose prompts must then
// start <bos><start_of_turn>user\n (2 105 2364 107); else 1.
ct_status ct_replacement_init(ct_replacement *r, ct_model *m, const ct_transcoders *tc, ct_err *err);
// Holds the first n positions constant instead (1 .. 2^20), with no required prompt start; drops
// the held clean run.
ct_status ct_replacement_set_constant(ct_replacement *r, int n, ct_err *err);
// BAD_ARG when tokens (T,) do not start as the model requires (n_prefix), naming what they start with.
ct_status ct_replacement_check_prompt(const ct_replacement *r, const int *tokens, int T, ct_err *err);
void ct_replacement_free(ct_replacement *r);

// The clean run of tokens (T,): the one held when it is of these tokens, else a new one (which
// replaces it; the tokens are checked with ct_replacement_check_prompt). Valid until the next call
// with other tokens, or ct_replacement_release. Refused on a layer-split model (BAD_ARG).
ct_status ct_replacement_clean(ct_replacement *r, const int *tokens, int T, ct_clean_run **out, ct_err *err);
// The same on a layer-split model too, where it is a collective: every rank calls it with the same
// tokens (ct_attribute does). Each rank runs its layers on the residual stream the rank below sends
// and sends its own up; the clean run then holds this rank's layers (hooks, frozen values, error
// vectors; the others zero), every rank's active features (ct_clean_acts, post-activation), the
// last rank's logits and, on rank 0, the embeddings.
ct_status ct_replacement_clean_all(ct_replacement *r, const int *tokens, int T, ct_clean_run **out, ct_err *err);
// Frees the held clean run (its memory: inputs, outputs and errors (L, T, D), the frozen patterns;
// attribution does before it builds its graph when the run is large, to leave the graph the room).
void ct_replacement_release(ct_replacement *r);
// At least n floats of r's scratch (grown when needed; kept until ct_replacement_free); NULL when
// out of memory.
float *ct_replacement_work(ct_replacement *r, size_t n);

// A clean run not held by r (all_logits: logits of every position). Free with ct_clean_run_free.
// Refused on a layer-split model.
ct_status ct_clean_run_open(ct_clean_run **out, const ct_replacement *r, const int *tokens, int T, int all_logits,
                            ct_err *err);
void ct_clean_run_free(ct_clean_run *c);
// Bytes the clean run holds (its dense arrays and frozen values; activation lists left out).
size_t ct_clean_run_bytes(const ct_clean_run *c);
// Every layer's activations in the clean run at positions >= n_const: post-activation (non-zero
// ones) or pre-activation (all); computed once. NULL on failure.
const ct_sparse_acts *ct_clean_acts(const ct_replacement *r, ct_clean_run *c, int pre_activation, ct_err *err);

// The error vectors of every layer and position (position 0 included, which graphs zero):
// err_out (L, T, D) = output hook - the transcoders' reconstruction, in the real run of tokens (T,).
// Any hooks the model has will do (a replacement model reads only some).
ct_status ct_tc_errors(ct_model *m, const ct_transcoders *tc, const int *tokens, int T, float *err_out, ct_err *err);

// Logits (T, V) of the replacement model on tokens (T,).
ct_status ct_replacement_forward(ct_replacement *r, const int *tokens, int T, float *logits, ct_err *err);

typedef struct {
    int n_layers;
    double *fvu;        // (L,) fraction of variance of the output hook left unexplained
    double *l0;         // (L,) mean active features per token
    double *dead;       // (L,) fraction of features never active
    double agreement;   // top-1 next-token agreement of the replacement model with the real one
    double kl;          // mean KL(real || replacement) per position, nats
    long n_tokens;      // positions counted (position 0 of each text excluded)
} ct_tc_eval;

// Evaluates on n texts given as token ids (each starting with BOS). Fills out (arrays malloc'ed;
// free with ct_tc_eval_free).
ct_status ct_tc_evaluate(ct_replacement *r, const int *const *texts, const int *lens, int n, ct_tc_eval *out,
                         ct_err *err);
void ct_tc_eval_free(ct_tc_eval *e);

#endif
