// heads.h - head-resolved edges: the part of an attribution graph's edge that goes through each
// attention head.
//
// In the local replacement model (attention patterns and norm denominators frozen, MLPs replaced
// by features and error nodes with their transcoders' skip connections kept) an edge A[t, s] is a
// sum over paths from the source's write to the target's read. A path crosses each layer's
// attention through the residual connection or through one of its heads. Grouped:
//   residual    paths through no head: source and target at one position (else 0)
//   head (m, h) paths through head h of layer m and no other head: one hop from the source's
//               position p_s to the target's p_t
//   multi       paths through two heads or more: edge - residual - the sum of the heads' parts
// so the parts sum to the edge. They are computed directly, with no perturbation: the target's
// read direction carried back down its own position with every head closed (the residual stream,
// the skip connections, the frozen norms) gives at layer m, head h, y_mh = W_O,h^T P1^T g_m (P1:
// Gemma's post-attention norm); the source's write carried up its own position the same way gives
// v_m = W_V N1 x_m (N1: the pre-attention norm); head (m, h)'s part is A_m[h, p_t, p_s] y_mh . v_m
// (v's key/value head of h). The residual part is the closed-head gradient read at the source's
// writes.
#ifndef CT_HEADS_H
#define CT_HEADS_H

#include "trace/graph.h"
#include "trace/replacement.h"

typedef struct {
    int n_layers, n_heads;
    double edge;        // the graph's A[target, source]
    double residual;    // through no head
    double *heads;      // (L, H) through exactly one head, head h of layer m at [m * H + h]
    double multi;       // through two heads or more: edge - residual - sum of heads
} ct_edge_heads;

// The edge from node `source` to node `target` of g (a graph of rm on g's prompt; a pruned graph's
// kept edge) split by heads. Custom logit targets (no unembedding row) are refused.
ct_status ct_edge_heads_run(ct_edge_heads *out, ct_replacement *rm, const ct_graph *g, int64_t target, int64_t source,
                            ct_err *err);
void ct_edge_heads_free(ct_edge_heads *e);

// Splits every kept edge of the pruned graph g (of rm) from a feature, error or token node and keeps
// in g->head_edges each one's residual part, multi-hop rest and its top (1..CT_EDGE_HEADS_MAX)
// heads by the size of their part, in adj's order (graph JSON writes them into its links). Each
// source's side and each target's are computed once.
ct_status ct_graph_record_heads(ct_graph *g, ct_replacement *rm, int top, ct_err *err);

#endif
