// graph.h - attribution graphs: nodes, adjacency, influence, pruning, scores, files.
//
// Node order and adjacency orientation are circuit-tracer's, so graphs compare one to one:
//   0 .. S-1                 selected features (ascending index into `active`)
//   S + l*T + t              error node of layer l, position t (layer-major)
//   S + L*T + t              token (embedding) node of position t
//   S + (L+1)*T + k          logit target k
// N = S + (L+1)*T + K. Rows are targets, columns sources: A[t, s] is the direct effect of s on
// t. Error and token nodes have no incoming edges, so only the S + K rows of the feature and
// logit nodes are stored: adj (S + K, N), feature rows first (ct_graph_row finds a node's row).
#ifndef CT_GRAPH_H
#define CT_GRAPH_H

#include <stdint.h>

#include "core/ctx.h"
#include "core/status.h"

typedef struct {
    int64_t vocab_id;   // token id; custom targets get V + i
    float prob;         // weight: the token's probability, or the weight given with a custom target
    char *label;        // token text or the custom target's label (owned)
    float *vec;         // (d_model,) a custom target's direction as given (owned), when the graph was
                        // attributed here; NULL for token targets and graphs read from files
} ct_logit_target;

// Settings the graph was computed (and pruned) with; recorded in files.
typedef struct {
    int max_n_logits;
    double desired_logit_prob;
    int batch_size;
    int64_t max_feature_nodes;   // as requested (0: all)
    int update_interval;
    double node_threshold, edge_threshold;   // -1: not pruned
} ct_graph_settings;

// An edge's split by attention heads (trace/heads.h), as a graph keeps it for its files: the
// residual part, the multi-hop rest and the n heads with the largest one-hop parts.
#define CT_EDGE_HEADS_MAX 8
typedef struct {
    int64_t target, source;    // nodes
    float residual, multi;
    int n;                     // heads kept, at most CT_EDGE_HEADS_MAX, largest |value| first
    int32_t layer[CT_EDGE_HEADS_MAX], head[CT_EDGE_HEADS_MAX];
    float value[CT_EDGE_HEADS_MAX];
} ct_head_edge;

typedef struct ct_graph {
    char *prompt;              // decoded prompt text (owned)
    int n_pos;                 // T
    int *tokens;               // (T,)
    char **token_text;         // (T,) decoded token strings (owned; may be NULL)
    char **node_label;         // (N,) labels (owned; NULL or NULL entries: none)
    int n_layers, d_model, vocab_size;
    int n_heads, n_kv_heads, d_head, d_mlp;   // the model's shape (0: unknown), for circuit-tracer's cfg
    char architecture[64];     // the model's architecture ("LlamaForCausalLM"; "" unknown)
    int64_t n_active;
    int32_t *active;           // (n_active, 3) layer, position, feature index
    float *activation;         // (n_active,)
    int64_t n_selected;
    int64_t *selected;         // (S,) ascending indices into active
    int n_logits;
    ct_logit_target *logits;   // (K,)
    int64_t n_nodes;           // N
    float *adj;                // (S + K, N) rows of the feature nodes, then of the logit nodes
    // pruned graphs: adj holds only the kept edges; node_mask (N,) the kept nodes
    uint8_t *node_mask;
    float *node_influence;     // (N,) cumulative influence rank fraction: set by pruning and loading,
                               // computed on first use for full graphs (ct_graph_node_influence)
    double scores[2];          // replacement, completeness (pruned graphs: computed at pruning)
    int has_scores;
    ct_graph_settings settings;
    char model_name[256], scan[256], input_hook[64], output_hook[64];
    char *qparams;             // the graph JSON's qParams (pins, supernodes: the viewers' state) as
                               // read, compact JSON (owned; NULL: the empty default is written)
    int64_t n_head_edges;      // edges split by heads (ct_graph_record_heads), in adj's order
    ct_head_edge *head_edges;  // (n_head_edges,) or NULL: written into graph JSON links
    char *qk_json;             // heads' scores split into QK pairs, a JSON array written as the graph
                               // JSON's "qk" (ctrace's own field; compact, owned), or NULL
} ct_graph;

typedef enum { CT_NODE_FEATURE, CT_NODE_ERROR, CT_NODE_TOKEN, CT_NODE_LOGIT } ct_node_kind;

typedef struct {
    ct_node_kind kind;
    int layer;          // features and errors; tokens -1; logits L
    int pos;
    int64_t feature;    // features: transcoder index; logits: vocab id; else -1
    int64_t active;     // features: index into active; else -1
} ct_node_info;

void ct_graph_free(ct_graph *g);
// Rows stored in adj (S + K) and the node each belongs to.
int64_t ct_graph_n_rows(const ct_graph *g);
int64_t ct_graph_row_node(const ct_graph *g, int64_t r);
// The row of node i (N floats), or NULL for error and token nodes (their rows are zero).
const float *ct_graph_row(const ct_graph *g, int64_t i);
// A[target, source].
float ct_graph_weight(const ct_graph *g, int64_t target, int64_t source);
// Describes node i (0 <= i < N).
ct_node_info ct_graph_node(const ct_graph *g, int64_t i);
// Node index of the error node (layer, pos), token node pos, logit k.
int64_t ct_graph_error_node(const ct_graph *g, int layer, int pos);
int64_t ct_graph_token_node(const ct_graph *g, int pos);
int64_t ct_graph_logit_node(const ct_graph *g, int k);
// Node index of a feature (layer, pos, feature) among the selected ones, or -1.
int64_t ct_graph_feature_node(const ct_graph *g, int layer, int pos, int64_t feature);

// The graph JSON id of node i ("{layer}_{feature}_{pos}", "{layer}_-1_{pos}", "E_{token}_{pos}",
// "{L+1}_{vocab}_{T-1}") into buf; the node index of an id, or -1.
void ct_graph_node_id(const ct_graph *g, int64_t i, char *buf, size_t n);
int64_t ct_graph_find_node_id(const ct_graph *g, const char *id);

// Total influence of every node on the logits: w A + w A^2 + ... with A = normalize(adj)
// (|adj| / row sums, clamped at 1e-10) and w the logit weights. out (N,), float64.
ct_status ct_graph_influence(const ct_graph *g, double *out, ct_err *err);

// cum (N,) = the cumulative fraction of total influence at each node's rank (descending, ties
// by index): the graph JSON "influence" field. order (N,) is scratch.
void ct_graph_rank_fraction(const double *inf, int64_t N, int64_t *order, float *cum);

// The graph's cumulative influence rank fraction of every node (N,), computed once and kept in g.
ct_status ct_graph_node_influence(ct_graph *g, const float **out, ct_err *err);

// out (N,): the signed effect of every node on node target summed over all paths of the graph
// (A + A^2 + ... read from the target's row): what the linear graph predicts for removing a node.
ct_status ct_graph_total_effects(const ct_graph *g, int64_t target, double *out, ct_err *err);

// circuit-tracer's pruning (node threshold, edge threshold, iterate until every kept feature has
// an incoming and an outgoing edge and every kept error node an outgoing one). Returns a new
// graph holding the kept edges, node_mask, node_influence and the scores of the pruned graph.
ct_status ct_graph_prune(ct_graph **out, const ct_graph *g, double node_threshold, double edge_threshold, ct_err *err);

// Replacement and completeness scores of the full graph (or those recorded at pruning).
ct_status ct_graph_scores(const ct_graph *g, double *replacement, double *completeness, ct_err *err);

// Sets g->qk_json from text (len bytes): it must be a JSON array (BAD_FORMAT otherwise).
ct_status ct_graph_set_qk_json(ct_graph *g, const char *text, size_t len, ct_err *err);
// Sets g->qparams (the viewers' state: pins, supernodes) from text: a JSON object whose
// "supernodes", when present, is circuit-tracer's [[name, node_id, ...], ...] with node ids of
// this graph's kept nodes (BAD_FORMAT or NOT_FOUND otherwise).
ct_status ct_graph_set_qparams(ct_graph *g, const char *text, size_t len, ct_err *err);

// Neuronpedia / circuit-tracer graph JSON. Full graphs are pruned with the settings' thresholds
// first (defaults 0.8 / 0.98). Node labels become each node's clerp.
typedef struct {
    const char *slug;
    const char *scan;            // Neuronpedia model id; default the graph's
    const char *source_set;      // feature_details.neuronpedia_source_set (may be NULL)
} ct_json_opts;
ct_status ct_graph_save_json(ct_ctx *ctx, const ct_graph *g, const char *path, const ct_json_opts *o, ct_err *err);
// The same JSON between prefix and suffix (an HTML page around it), every "<" in it written
// "\u003c" (JSON has '<' only inside strings), so nothing a label holds can end or escape the
// <script> element that holds it ("</script>", "<!--" then "<script").
ct_status ct_graph_save_page(ct_ctx *ctx, const ct_graph *g, const char *path, const ct_json_opts *o, const char *prefix,
                             const char *suffix, ct_err *err);
// The same JSON as a string: *out (malloc'ed, NUL-terminated), *n bytes.
ct_status ct_graph_json(const ct_graph *g, const ct_json_opts *o, char **out, size_t *n, ct_err *err);
// Adds or replaces the slug's entry in dir/graph-metadata.json.
ct_status ct_graph_metadata_upsert(ct_ctx *ctx, const ct_graph *g, const char *dir, const ct_json_opts *o, ct_err *err);
// The entry of the graph JSON at path (its metadata object) put into graph-metadata.json beside it,
// as ct_graph_metadata_upsert puts a graph's: graphs saved without their entry listed afterwards.
ct_status ct_graph_metadata_add_file(ct_ctx *ctx, const char *path, ct_err *err);
// Reads a graph JSON back: nodes and links (a pruned graph over the nodes the file holds).
ct_status ct_graph_load_json(ct_ctx *ctx, ct_graph **out, const char *path, ct_err *err);
// The same from a graph JSON in memory (text, len bytes); path names it in messages.
ct_status ct_graph_parse_json(ct_graph **out, const char *text, size_t len, const char *path, ct_err *err);

// The full graph as safetensors with circuit-tracer's Graph field names (adjacency_matrix,
// active_features, selected_features, activation_values, logit_tokens, logit_probabilities,
// input_tokens) and the prompt and settings in the metadata.
ct_status ct_graph_save(ct_ctx *ctx, const ct_graph *g, const char *path, ct_err *err);
ct_status ct_graph_load(ct_ctx *ctx, ct_graph **out, const char *path, ct_err *err);

// The full graph as circuit-tracer's Graph.to_pt writes it (torch.save of a dict: input_string,
// adjacency_matrix (N, N) float32, cfg (a circuit_tracer UnifiedConfig), active_features,
// logit_targets (LogitTarget(token_str, vocab_idx) each), logit_probabilities, vocab_size,
// input_tokens, selected_features, activation_values, scan), and read back from such a file
// (older files' logit_targets as a tensor of token ids, any cfg object with n_layers; tensors
// float32, float16, bfloat16 or float64, int64 or int32). trace/graph_pt.c.
ct_status ct_graph_save_pt(ct_ctx *ctx, const ct_graph *g, const char *path, ct_err *err);
ct_status ct_graph_load_pt(ct_ctx *ctx, ct_graph **out, const char *path, ct_err *err);
// The graph of a parsed .pt (formats/pt.h); path names it in messages.
struct ct_pt_file;
ct_status ct_graph_from_pt(ct_graph **out, const struct ct_pt_file *p, const char *path, ct_err *err);

// Cantor pairing of (layer, feature), as Neuronpedia numbers features.
int64_t ct_cantor(int64_t layer, int64_t feature);

#endif
