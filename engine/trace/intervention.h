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
//   freeze_attention (default on): attention patterns are the clean run's.
#ifndef CT_INTERVENTION_H
#define CT_INTERVENTION_H

#include "model/model.h"
#include "model/transcoder.h"

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
} ct_iv_opts;

void ct_iv_opts_default(ct_iv_opts *o);

// Sparse activations of one pass: n entries (layer, pos, feature, value), sorted.
typedef struct {
    int64_t n;
    int32_t *idx;    // (n, 3)
    float *value;    // (n,)
} ct_sparse_acts;

void ct_sparse_acts_free(ct_sparse_acts *a);

// A prompt's clean run (frozen values, transcoder inputs and outputs, error vectors), kept for
// any number of interventions on it.
typedef struct ct_iv_session ct_iv_session;
ct_status ct_iv_session_open(ct_iv_session **out, ct_model *m, const ct_transcoders *tc, const int *tokens, int T,
                             ct_err *err);
void ct_iv_session_free(ct_iv_session *s);
// Whether s is the session of this model, set and prompt.
int ct_iv_session_matches(const ct_iv_session *s, const ct_model *m, const ct_transcoders *tc, const int *tokens, int T);

// Runs the prompt with the interventions. logits (T, V) every position (may be NULL); acts (may
// be NULL; needs o->activations) gets every layer's transcoder activations at positions >= 1
// (position 0 is a constant, as in graphs).
ct_status ct_iv_run(ct_iv_session *s, const ct_intervention *iv, int n_iv, const ct_iv_opts *o, float *logits,
                    ct_sparse_acts *acts, ct_err *err);
// The clean run's activations (post- or pre-activation), computed once; NULL on failure.
const ct_sparse_acts *ct_iv_clean_acts(ct_iv_session *s, int pre_activation, ct_err *err);
// Generates after the prompt with the interventions: the prompt pass as ct_iv_run (freezes apply
// to it only), then one token at a time with a KV cache, interventions whose positions reach the
// new position re-applied (free propagation). out receives up to g->max_tokens ids.
ct_status ct_iv_generate(ct_iv_session *s, const ct_intervention *iv, int n_iv, const ct_iv_opts *o, const ct_gen_opts *g,
                         int *out, int *n_out, ct_err *err);
// One-shot ct_iv_run on a new session.
ct_status ct_intervene(ct_model *m, const ct_transcoders *tc, const int *tokens, int T, const ct_intervention *iv,
                       int n_iv, const ct_iv_opts *o, float *logits, ct_sparse_acts *acts, ct_err *err);

// Checks interventions against the model and set: kinds, layers, features, positions (< T),
// finite values. NULL iv with n_iv > 0 is an error.
ct_status ct_iv_check(const ct_model *m, const ct_transcoders *tc, const ct_intervention *iv, int n_iv, int T,
                      ct_err *err);

#endif
