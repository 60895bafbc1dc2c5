// intervention.h - interventions on transcoder features, error nodes and token embeddings in the
// real model, in circuit-tracer's modes.
//
// A feature's intervention changes its activation a to a' (set: a' = value; scale: a' = value *
// a; add: a' = a + value) by adding (a' - a) times its decoder row(s) at the transcoder's output
// hook (a cross-layer feature at every later layer). a is the feature's activation in the pass
// itself (free propagation) or in the clean run (constrained layers). Error and token nodes act
// as features of activation 1 whose decoder is their vector (the error vector at the output hook,
// the embedding as added): scale 0 removes one, scale 2 doubles it.
//
// Modes:
//   free (default): the real model runs; every MLP output gets the deltas of its layer, and
//     later features are recomputed from the changed residual stream.
//   constrained layers [first, last]: inside the range MLP outputs are the clean run's plus the
//     deltas computed from clean activations (and, with skip transcoders, skip(x) - skip(x
//     clean)); cross-layer decoders write only inside the range. The range covering every layer
//     also freezes every norm denominator: the direct effects the attribution graph holds.
//   freeze_attention (default on): attention patterns are the clean run's (but, with
//     free_attention_layer, those of one layer, recomputed: how a head's pattern answers).
// Every pass starts from the prompt's clean run (trace/replacement.h), which the replacement model
// keeps between calls on the same prompt.
#ifndef CT_INTERVENTION_H
#define CT_INTERVENTION_H

#include "trace/replacement.h"

typedef enum { CT_IV_FEATURE, CT_IV_ERROR, CT_IV_TOKEN } ct_iv_kind;
typedef enum { CT_IV_SET, CT_IV_SCALE, CT_IV_ADD } ct_iv_op;

typedef struct {
    ct_iv_kind kind;
    int layer;           // features and error nodes
    int64_t feature;     // features
    int pos0, pos1;      // positions pos0 .. pos1; pos1 = -1: every position from pos0 on (also
                         // generated ones)
    ct_iv_op op;
    float value;
} ct_intervention;

typedef struct {
    int freeze_attention;        // 1: patterns of the clean run (prompt positions)
    int constrained;             // 1: layers first .. last are constrained
    int first, last;
    int pre_activation;          // activations read before the activation function
    int activations;             // 1: return every layer's activations (else only what is needed)
    int free_attention_layer;    // -1 (default): none; else this layer's patterns are computed from
                                 // the pass's queries and keys while the others stay frozen (needs
                                 // freeze_attention or constrained layers; the prompt pass only)
    ct_hook_cache *hooks;        // NULL, or hooks the prompt pass fills (it then runs every layer)
} ct_iv_opts;

void ct_iv_opts_default(ct_iv_opts *o);

// Checks interventions against the replacement model: kinds, layers, features, positions (< T),
// finite values, the operation. NULL iv with n_iv > 0 is an error.
ct_status ct_iv_check(const ct_replacement *r, const ct_intervention *iv, int n_iv, int T, ct_err *err);

// Runs the prompt tokens (T,) with the interventions. logits (T, V) every position (may be NULL);
// acts (may be NULL; needs o->activations) gets every layer's transcoder activations at positions
// >= r->n_const (the constant positions left out, as in graphs), sorted.
ct_status ct_iv_run(ct_replacement *r, const int *tokens, int T, const ct_intervention *iv, int n_iv, const ct_iv_opts *o,
                    float *logits, ct_sparse_acts *acts, ct_err *err);
// Tests: 0 makes ct_iv_run run every layer (by default a pass starts at the lowest layer an
// intervention touches, from the clean run's residual stream there, its readout below that layer
// the clean run's); 1 restores it.
void ct_iv_skip_clean_layers(int on);
// The prompt's clean activations (post- or pre-activation), computed once per clean run.
const ct_sparse_acts *ct_iv_clean_acts(ct_replacement *r, const int *tokens, int T, int pre_activation, ct_err *err);
// Generates after the prompt with the interventions: the prompt pass as ct_iv_run (freezes apply
// to it only), then one token at a time with a KV cache, interventions whose positions reach the
// new position re-applied (free propagation). out receives up to g->max_tokens ids.
ct_status ct_iv_generate(ct_replacement *r, const int *tokens, int T, const ct_intervention *iv, int n_iv,
                         const ct_iv_opts *o, const ct_gen_opts *g, int *out, int *n_out, ct_err *err);

// For a swap: the activations the features (layer, pos, feature) (n, 3) have in the clean run of a
// second prompt (donor tokens (T,)), into values (n,) (0 where a feature is not active). The
// replacement model's held clean run is left as it was. OUT_OF_RANGE when a position is not in
// the donor prompt.
ct_status ct_iv_donor_values(const ct_replacement *r, const int *tokens, int T, const int32_t *feat, int n,
                             float *values, ct_err *err);

#endif
