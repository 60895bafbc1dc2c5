// qk.h - why an attention head looks where it looks: its pre-softmax score at one query and one
// key position split into terms for pairs of nodes, one on the query side and one on the key side.
//
// With the norm denominators frozen at their clean values (as the attribution graph holds them;
// with Qwen3's and Gemma-3's per-head q/k norms, theirs too), the query q of head h at position p
// is linear in the residual stream there, and the residual stream is the sum of what the graph's
// nodes write into it (through the frozen model) and of constants (biases, transcoders' b_dec, the
// positions held constant):
//   q = sum_i q_i + q0,   k = sum_j k_j + k0,   score = scale q . k = scale sum_{i,j} q_i . k_j
// over i, j in the nodes and the constant. q_i (hd,) is node i's part of the query, RoPE at p
// applied (k_j: at the key position); each comes from one backward pass a component, as the
// graph's edges do (ct_attribute_resid). The constant parts are the clean query and key less
// their nodes' parts. The score is before any softcap (Gemma-2): what the softcap then bends.
#ifndef CT_QK_H
#define CT_QK_H

#include "trace/graph.h"
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
    double prob;                 // the attention probability at key (softcap and softmax over the row)
    // the row: every key the query sees, lo..query (a sliding window starts later)
    int lo;
    double *row;                 // (query - lo + 1,) their pre-softmax scores
    double cap;                  // the attention softcap, 0: none
    float *k_row;                // (query - lo + 1, hd) their clean keys
    float *gq, *gk_row;          // (hd,) and (query - lo + 1, hd): q/k norm gains / denominators, or NULL
    // the query side as ct_qk_top reads it, made once: its live nodes (non-zero part; the constant
    // as n_cols) by norm descending, their norms and parts as rows; and every node's part summed
    int64_t n_qlive;
    int64_t *q_idx;              // (n_qlive,)
    float *q_nrm, *q_pack;       // (n_qlive,) (n_qlive, hd)
    double *q_tot;               // (hd,) the query's parts and constant summed (the query)
} ct_qk;

// The split of head `head`'s score at layer `layer`, query position `query`, key position `key`
// (key <= query, within a sliding window), for tokens (T,).
ct_status ct_qk_run(ct_qk *out, ct_replacement *rm, const int *tokens, int T, int layer, int head, int query, int key,
                    ct_err *err);
void ct_qk_free(ct_qk *q);

typedef struct {
    int64_t i, j;     // query-side and key-side node: a column, or n_cols for the constant part
    double value;     // scale q_i . k_j
    double shift;     // the attention probability at the key less what it is with this term left out of
                      // the key's score (the row's other scores kept): what the pair adds to it
} ct_qk_pair;

// The n pairs (at most) of largest |value| into pairs (n,), sorted by |value| descending (ties:
// lower i, then lower j; pairs tied exactly at the n-th place are chosen in the order of their
// nodes' norms); *n_out: how many. Nodes whose part is zero on their side are left out.
// Pairs are chosen on float32 products, bounded by the parts' norms (exact: a pair left unread
// cannot beat the n-th), and their values then summed in double.
ct_status ct_qk_top(const ct_qk *q, int n, ct_qk_pair *pairs, int *n_out, ct_err *err);

// One key of a row: its score, probability and top pairs.
typedef struct {
    int key;
    double score, total, prob;
    int n_pairs;
    ct_qk_pair *pairs;   // (n_pairs,) as ct_qk_top
    double without;      // the score with one node's parts taken from both the query and the key
    double prob_without; // the probability then (every key's score without it); NAN: no node given
} ct_qk_key;

// A node of the pairs, to take out of a row: a feature (layer, pos, feature), an error node
// (layer, pos) or a token (pos).
typedef struct {
    ct_node_kind kind;
    int layer, pos;
    int64_t feature;
} ct_qk_node;

// The whole row of head `layer`.`head` from position `query`: every key it sees.
typedef struct {
    int layer, head, query, lo;  // keys lo..query (lo > 0 within a sliding window)
    double scale;
    int64_t n_active, n_cols;    // the pairs' columns, as ct_qk's
    int32_t *active;             // (n_active, 3) layer, position, feature
    float *act;                  // (n_active,)
    int n_keys;                  // query - lo + 1
    ct_qk_key *keys;             // (n_keys,) in key order
} ct_qk_row;

// Each key of the row split as ct_qk_run splits one, with its top `top` pairs. The query side is
// computed once, the keys' sides a batch of keys at a time. without (may be NULL): a node whose
// parts are taken out of the query and of every key: each key's score and probability then (what
// removing the node does to the pattern in the frozen model, where only this layer's attention
// answers). Free with ct_qk_row_free.
ct_status ct_qk_row_run(ct_qk_row *out, ct_replacement *rm, const int *tokens, int T, int layer, int head, int query, int top,
                        const ct_qk_node *without, ct_err *err);
void ct_qk_row_free(ct_qk_row *r);

#endif
