// qk.h - why an attention head looks where it looks: its pre-softmax score at one query and one
// key position split into terms for pairs of nodes, one on the query side and one on the key side.
//
// With the norm denominators frozen at their clean values (as the attribution graph holds them),
// the query q of head h at position p is linear in the residual stream there, and the residual
// stream is the sum of what the graph's nodes write into it (through the frozen model) and of
// constants (biases, transcoders' b_dec, the positions held constant):
//   q = sum_i q_i + q0,   k = sum_j k_j + k0,   score = scale q . k = scale sum_{i,j} q_i . k_j
// over i, j in the nodes and the constant. q_i (hd,) is node i's part of the query, RoPE at p
// applied (k_j: at the key position); each comes from one backward pass a component, as the
// graph's edges do (ct_attribute_resid). The constant parts are the clean query and key less
// their nodes' parts. The score is before any softcap (Gemma-2): what the softcap then bends.
// Models with q/k norms (Qwen3, Gemma-3) are not split yet (UNSUPPORTED).
#ifndef CT_QK_H
#define CT_QK_H

#include "trace/replacement.h"

typedef struct {
    int layer, head, query, key, hd;
    int64_t n_active, n_cols;    // columns: the clean run's active features, L*T error nodes, T token nodes
    int32_t *active;             // (n_active, 3) layer, position, feature
    float *act;                  // (n_active,)
    float *q, *k;                // (hd, n_cols) each node's part of the query and of the key
    float *q0, *k0;              // (hd,) their constant parts
    float *q_clean, *k_clean;    // (hd,) the model's query and key (RoPE applied)
    double scale;                // multiplies q . k
    double score;                // scale q_clean . k_clean: the pre-softmax score
    double total;                // the sum of every pair's term, the constant parts included (= score)
} ct_qk;

// The split of head `head`'s score at layer `layer`, query position `query`, key position `key`
// (key <= query, within a sliding window), for tokens (T,).
ct_status ct_qk_run(ct_qk *out, ct_replacement *rm, const int *tokens, int T, int layer, int head, int query, int key,
                    ct_err *err);
void ct_qk_free(ct_qk *q);

typedef struct {
    int64_t i, j;     // query-side and key-side node: a column, or n_cols for the constant part
    double value;     // scale q_i . k_j
} ct_qk_pair;

// The n pairs (at most) of largest |value| into pairs (n,), sorted by |value| descending (ties:
// lower i, then lower j); *n_out: how many. Nodes whose part is zero on their side are left out.
ct_status ct_qk_top(const ct_qk *q, int n, ct_qk_pair *pairs, int *n_out, ct_err *err);

#endif
