// train.h - training transcoders in C (OpenBLAS, Adam): per-layer (PLT) and cross-layer (CLT).
//
// Objective: TopK sparsity with circuit-tracer's TopK: the k largest pre-activations of a token
// are kept as they are, negative ones included, the rest zero (no ReLU, unlike Gao et al. 2024),
// so L0 is k by construction and no sparsity penalty needs tuning; gradients flow through every
// kept entry (d act / d pre = 1 there, 0 elsewhere). Loss = mean over the batch of
// ||y_hat - y||^2 (inputs and targets scaled to unit mean square first, folded back into the
// weights at the end). A feature fires where it is kept with a non-zero value; dead features
// (not fired in the last dead_tokens tokens) get the AuxK loss: the k_aux largest dead
// pre-activations, kept as they are, reconstruct the main residual y - y_hat (held constant),
// weighted aux_coef. Decoder rows are kept at unit norm after every step. Deterministic for a
// given seed and BLAS thread count.
// A CLT trains all layers jointly: the features of layer l read x_l and write every target
// t >= l through W_dec_l[:, t - l, :]; the loss sums the targets' squared errors; a feature's
// whole decoder (all its target slices) is kept at unit norm; AuxK uses each layer's own slice.
// A PLT is the one-layer case.
#ifndef CT_TRAIN_H
#define CT_TRAIN_H

#include <stdint.h>

#include "core/ctx.h"
#include "core/status.h"
#include "model/model.h"

typedef struct {
    int layer;            // the layer trained (-1: a cross-layer transcoder)
    long step, steps;
    double loss, fvu, l0, dead, tokens_per_s;
} ct_train_progress;

typedef struct {
    int d_tc;             // features
    int k;                // TopK
    int k_aux;            // AuxK (0: off)
    float aux_coef;
    int batch;            // tokens per step
    long steps;
    float lr;             // Adam
    uint64_t seed;
    int skip;             // train a linear skip W_skip (D, D), applied as x W_skip^T
    long dead_tokens;     // a feature not active for this many tokens is dead
    int log_every;        // progress every n steps (0: never)
    const char *checkpoint;   // save state here every log_every steps and at the end (NULL: no)
    int resume;           // continue from checkpoint when it exists
    int layer;            // reported with progress (ct_train_set sets it)
    void (*progress)(void *progress_ctx, const ct_train_progress *p);
    void *progress_ctx;
    ct_ctx *ctx;          // checkpoints are read and written through it; its cancellation stops
                          // training after the current step (NULL: none)
} ct_train_opts;

// Trained parameters of one per-layer transcoder, float32, in the model's units.
typedef struct {
    int d_model, d_tc, k;
    float *W_enc;   // (F, D)
    float *b_enc;   // (F,)
    float *W_dec;   // (F, D)
    float *b_dec;   // (D,)
    float *W_skip;  // (D, D) or NULL
} ct_plt_params;

// Trains on n pairs x (n, D) -> y (n, D).
ct_status ct_train_plt(const float *x, const float *y, long n, int d_model, const ct_train_opts *o, ct_plt_params *out,
                       ct_err *err);
void ct_plt_params_free(ct_plt_params *p);

// Trained cross-layer transcoder, float32, in the model's units.
typedef struct {
    int n_layers, d_model, d_tc, k;
    float **W_enc;   // (L,) of (F, D)
    float **b_enc;   // (L,) of (F,)
    float **W_dec;   // (L,) of (F, L - l, D)
    float **b_dec;   // (L,) of (D,): the bias of target layer l
    float **W_skip;  // (L,) of (D, D) applied as x W_skip^T, or NULL (one-layer sets only)
} ct_clt_params;

// Trains on n tokens: xs[l] (n, D) inputs and ys[l] (n, D) targets of every layer l < L.
ct_status ct_train_clt(const float *const *xs, const float *const *ys, int n_layers, long n, int d_model,
                       const ct_train_opts *o, ct_clt_params *out, ct_err *err);
void ct_clt_params_free(ct_clt_params *p);
// Writes W_enc_{i}.safetensors (W_enc_i, b_enc_i, b_dec_i), W_dec_{i}.safetensors (W_dec_i) and
// config.yaml into dir.
ct_status ct_clt_save_set(ct_ctx *ctx, const char *dir, const ct_clt_params *p, const char *model_name,
                          const char *input_hook, const char *output_hook, ct_err *err);
// Writes layer_{i}.safetensors for i < n_layers and config.yaml into dir (circuit-tracer's
// layout: W_enc, W_dec (F, D), b_enc, b_dec, optional W_skip; `activation: topk` and `k` in
// config.yaml, which lists no files, so circuit-tracer finds layer_0 .. layer_{n-1} itself).
ct_status ct_plt_save_set(ct_ctx *ctx, const char *dir, const ct_plt_params *layers, int n_layers, const char *model_name,
                          const char *input_hook, const char *output_hook, ct_err *err);

// ---------------------------------------------------------------------------------------------
// A whole set for a model

typedef struct {
    const char *dir;              // the set is written here: config.yaml and the layer files
    int clt;                      // one cross-layer transcoder over every layer (else one per layer)
    const char *input_hook;       // NULL: mlp.hook_in (per-layer) or hook_resid_mid (cross-layer)
    const char *output_hook;      // NULL: mlp.hook_out (per-layer) or hook_mlp_out (cross-layer)
    const char *model_name;       // config.yaml's model_name (NULL: the model's architecture)
    const char *checkpoint_dir;   // training states, layer_{l}.state.safetensors or clt.state.safetensors
                                  // (NULL: none)
    ct_train_opts train;          // files are written through train.ctx
} ct_train_set_opts;

// Trains a set for m on texts (n token id lists, each from BOS; lens (n,)): every layer's
// (input hook, output hook) pairs at positions >= 1, then one TopK transcoder per layer (or one
// cross-layer transcoder), written to o->dir in circuit-tracer's layout.
ct_status ct_train_set(ct_model *m, const int *const *texts, const int *lens, int n, const ct_train_set_opts *o,
                       ct_err *err);

#endif
