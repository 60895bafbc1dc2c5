// attribution.h - attribution graphs of the local replacement model.
//
// A clean forward pass fixes attention patterns and norm denominators; MLPs become transcoder
// features plus error nodes (the replacement model's constant positions, BOS or a chat prefix,
// have no features and zero error vectors).
// The model is then linear in the residual stream, and the edge from source s to target t is
// g_t(write point of s) . v_s, where g_t is the vector-Jacobian product of the target vector
// (an encoder row at the feature's input hook, or a demeaned unembedding column at the final
// norm's output) through the frozen model, and v_s the vector s writes (a activation times its
// decoder row(s), an error vector, a token embedding). Rows are computed B at a time with
// hand-written matrix products, position-major: G (T', B, D).
#ifndef CT_ATTRIBUTION_H
#define CT_ATTRIBUTION_H

#include "trace/graph.h"
#include "trace/replacement.h"

// An explicit attribution target: a vocabulary token (vec NULL) or a direction (D,).
typedef struct {
    int token;            // token id, or -1 with vec
    const float *vec;     // (D,) custom direction, read at the final norm's output
    const char *label;    // custom label (tokens: NULL, the token's text is used)
    float weight;         // custom targets: their weight in influence (tokens: their probability)
} ct_attr_target;

// Where the time went (filled when ct_attr_opts.stats is set).
typedef struct {
    double setup_s, logits_s, features_s, ranking_s, graph_s;   // wall-clock seconds per phase
    double backward_s, backward_flops;   // inside the backward passes (logit and feature rows)
    double backward_gemm_s;              // ... of which in sgemm
    double backward_rows;                // rows through their products with W_O, W_V and skip connections
    int64_t n_active, n_rows, n_batches;
    int batch_size;                      // rows per backward pass (the option, or fewer to fit memory)
    int spilled;                         // rows kept in a file rather than memory
    size_t row_bytes;                    // the rows' size (memory or file)
    double comm_bytes;                   // MPI: bytes of rows this rank sent and received
    double comm_s;                       // MPI: seconds in the ranks' agreement and broadcasts
} ct_attr_stats;

typedef struct {
    int max_n_logits;             // salient targets: at most this many (10)
    double desired_logit_prob;    // ... until their cumulative probability reaches this (0.95)
    int batch_size;               // rows per backward pass (512)
    int64_t max_feature_nodes;    // feature rows computed; 0: every active feature
    int update_interval;          // batches between influence re-rankings (4)
    const ct_attr_target *targets;   // explicit targets (n_targets > 0), else salient logits
    int n_targets;
    // progress (may be NULL): phase name, units done and total
    void (*progress)(void *ctx, const char *phase, int64_t done, int64_t total);
    void *progress_ctx;
    const ct_ctx *ctx;            // cancellation and deadline, checked between batches (may be NULL)
    ct_attr_stats *stats;         // may be NULL
    size_t memory_limit;          // working memory in bytes (0: CT_ATTR_MEMORY_LIMIT): rows beyond half of it go
                                  // to a file, batches shrink to keep their scratch within a quarter
} ct_attr_opts;

#define CT_ATTR_MEMORY_LIMIT ((size_t)4 << 30)   // the default working memory, 4 GiB

void ct_attr_opts_default(ct_attr_opts *o);

// Computes the attribution graph of tokens (T,) (which start with BOS or another special token;
// ct_replacement_check_prompt's start on models that require one)
// in the replacement model r, from the prompt's clean run (r's held one when it is of these tokens,
// else a new one r keeps: interventions on the prompt after the graph start from it; r releases
// it before the graph is built when it is more than a quarter of o->memory_limit, to leave the
// graph its room).
ct_status ct_attribute(ct_graph **out, ct_replacement *r, const int *tokens, int T, const ct_attr_opts *o, ct_err *err);
// Rows in one of the backward's mixing products at most (1024; tests: fewer, to cross the seams
// between them; 0 restores the default).
void ct_attr_pack_limit(int rows);
// Floats of work from which a step of the backward pass is shared among the threads (1 << 18;
// tests: 1, to share every step; 0 restores the default).
void ct_attr_split_limit(int64_t floats);

// Direct effects on directions read at the residual stream entering layer `layer` (blocks.l.
// hook_resid_pre; layer L: the final norm's input), or with attn_in at that layer's attention input
// (blocks.l.attn.hook_in, after the frozen pre-attention norm), at positions pos (n,) (ascending)
// with vectors vec (n, D): rows over the columns of ct_attribute's rows but the logit ones (every
// active feature of the clean run, L*T error nodes, T token nodes), each computed as ct_attribute
// computes a row. A row's sum plus the constants (biases, the positions held constant) is its
// direction's dot product with the clean value read there.
typedef struct {
    int64_t n_active, n_cols;   // n_cols = n_active + (L + 1) * T
    int32_t *active;            // (n_active, 3) layer, position, feature
    float *act;                 // (n_active,) activations
    float *rows;                // (n, n_cols)
} ct_resid_rows;

ct_status ct_attribute_resid(ct_replacement *rm, const int *tokens, int T, int layer, int attn_in, const int *pos,
                             const float *vec, int n, ct_resid_rows *out, ct_err *err);
void ct_resid_rows_free(ct_resid_rows *r);

#endif
