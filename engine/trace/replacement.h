// replacement.h - the replacement model (every MLP replaced by its transcoders, no error
// terms) and the evaluation of a transcoder set against the real model.
//
// Position 0 (BOS) keeps the real MLP output, as circuit-tracer treats BOS as a constant (its
// features and error are not nodes); every later position uses the transcoders: encode the input
// hook, decode (CLT: every earlier layer's features write into this one), add b_dec and skip.
#ifndef CT_REPLACEMENT_H
#define CT_REPLACEMENT_H

#include "model/model.h"
#include "model/transcoder.h"

// Logits (T, V) of the replacement model on tokens (T,).
ct_status ct_replacement_forward(const ct_transcoders *tc, ct_model *m, const int *tokens, int T, float *logits,
                                 ct_err *err);

// Error vectors of the real run: err (L, T, D) = output hook - reconstruction from the input
// hooks, every layer and position (position 0 included; circuit-tracer zeroes it in graphs).
ct_status ct_tc_errors(const ct_transcoders *tc, ct_model *m, const int *tokens, int T, float *err_out, ct_err *err);

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
ct_status ct_tc_evaluate(const ct_transcoders *tc, ct_model *m, const int *const *texts, const int *lens, int n,
                         ct_tc_eval *out, ct_err *err);
void ct_tc_eval_free(ct_tc_eval *e);

// Which ct_mlp_io field a transcoder input hook names, and whether the output hook is the raw
// MLP output; UNSUPPORTED for other hooks.
ct_status ct_replacement_hooks(const ct_transcoders *tc, int *input_kind, int *output_raw, ct_err *err);

#endif
