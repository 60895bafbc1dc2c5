// graph.c - attribution graphs: influence, pruning, scores (see graph.h).
#include "trace/graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ct_graph_free(ct_graph *g) {
    if (!g) return;
    free(g->prompt);
    if (g->token_text)
        for (int t = 0; t < g->n_pos; t++) free(g->token_text[t]);
    free(g->token_text);
    if (g->node_label)
        for (int64_t i = 0; i < g->n_nodes; i++) free(g->node_label[i]);
    free(g->node_label);
    free(g->tokens);
    free(g->qparams);
    free(g->active);
    free(g->activation);
    free(g->selected);
    for (int k = 0; g->logits && k < g->n_logits; k++) free(g->logits[k].label), free(g->logits[k].vec);
    free(g->logits);
    free(g->adj);
    free(g->node_mask);
    free(g->node_influence);
    free(g->head_edges);
    free(g->qk_json);
    free(g);
}

int64_t ct_graph_n_rows(const ct_graph *g) { return g->n_selected + g->n_logits; }

int64_t ct_graph_row_node(const ct_graph *g, int64_t r) {
    return r < g->n_selected ? r : ct_graph_logit_node(g, (int)(r - g->n_selected));
}

const float *ct_graph_row(const ct_graph *g, int64_t i) {
    int64_t S = g->n_selected, l0 = S + (int64_t)(g->n_layers + 1) * g->n_pos;
    if (i < S) return g->adj + (size_t)i * g->n_nodes;
    if (i >= l0) return g->adj + (size_t)(S + i - l0) * g->n_nodes;
    return NULL;
}

float ct_graph_weight(const ct_graph *g, int64_t target, int64_t source) {
    const float *row = ct_graph_row(g, target);
    return row ? row[source] : 0.0f;
}

int64_t ct_graph_error_node(const ct_graph *g, int layer, int pos) {
    return g->n_selected + (int64_t)layer * g->n_pos + pos;
}
int64_t ct_graph_token_node(const ct_graph *g, int pos) {
    return g->n_selected + (int64_t)g->n_layers * g->n_pos + pos;
}
int64_t ct_graph_logit_node(const ct_graph *g, int k) {
    return g->n_selected + (int64_t)(g->n_layers + 1) * g->n_pos + k;
}

ct_node_info ct_graph_node(const ct_graph *g, int64_t i) {
    ct_node_info n = {CT_NODE_FEATURE, -1, -1, -1, -1};
    int64_t S = g->n_selected, T = g->n_pos, L = g->n_layers;
    if (i < S) {
        const int32_t *a = g->active + 3 * g->selected[i];
        n = (ct_node_info){CT_NODE_FEATURE, a[0], a[1], a[2], g->selected[i]};
    } else if (i < S + L * T) {
        n = (ct_node_info){CT_NODE_ERROR, (int)((i - S) / T), (int)((i - S) % T), -1, -1};
    } else if (i < S + (L + 1) * T) {
        n = (ct_node_info){CT_NODE_TOKEN, -1, (int)(i - S - L * T), -1, -1};
    } else {
        int k = (int)(i - S - (L + 1) * T);
        n = (ct_node_info){CT_NODE_LOGIT, (int)L, (int)T - 1, g->logits[k].vocab_id, -1};
    }
    return n;
}

int64_t ct_graph_feature_node(const ct_graph *g, int layer, int pos, int64_t feature) {
    int64_t lo = 0, hi = g->n_selected;   // selected are ascending in (layer, pos, feature)
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        const int32_t *a = g->active + 3 * g->selected[mid];
        int c = a[0] != layer ? (a[0] < layer ? -1 : 1)
              : a[1] != pos   ? (a[1] < pos ? -1 : 1)
              : a[2] != feature ? (a[2] < feature ? -1 : 1) : 0;
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

int64_t ct_cantor(int64_t layer, int64_t feature) {
    return (layer + feature) * (layer + feature + 1) / 2 + feature;
}

// ---------------------------------------------------------------------------------------------
// Influence

// The stored rows of an adjacency as influence and scores read them: optionally with nodes
// left out (their rows and columns read as zero) and with columns merged into others.
typedef struct {
    const ct_graph *g;
    const float *A;          // (R, N) laid out as g->adj
    const uint8_t *mask;     // (N,) or NULL: nodes with mask 0 are left out
    const int64_t *merge;    // (N,) or NULL: column c adds into column merge[c] when merge[c] >= 0
    float *buf;              // (N,) scratch when mask or merge is set
} rows_view;

// Row r as the view reads it, or NULL when it is left out.
static const float *view_row(const rows_view *v, int64_t r) {
    int64_t N = v->g->n_nodes;
    const float *row = v->A + (size_t)r * N;
    if (!v->mask && !v->merge) return row;
    if (v->mask && !v->mask[ct_graph_row_node(v->g, r)]) return NULL;
    memcpy(v->buf, row, sizeof(float) * (size_t)N);
    if (v->merge)
        for (int64_t c = 0; c < v->g->n_selected; c++)
            if (v->merge[c] >= 0) v->buf[v->merge[c]] += v->buf[c], v->buf[c] = 0.0f;
    if (v->mask)
        for (int64_t c = 0; c < N; c++)
            if (!v->mask[c]) v->buf[c] = 0.0f;
    return v->buf;
}

// rinv (R,) = 1 / max(sum |A[r, :]|, clamp): row r of normalize(A) is |A[r, :]| * rinv[r].
static void row_inverse(const rows_view *v, double clamp, double *rinv) {
    int64_t N = v->g->n_nodes;
    for (int64_t r = 0; r < ct_graph_n_rows(v->g); r++) {
        const float *row = view_row(v, r);
        double s = 0.0;
        for (int64_t c = 0; row && c < N; c++) s += fabsf(row[c]);
        rinv[r] = 1.0 / (s > clamp ? s : clamp);
    }
}

// out (N,) = x0 M + x0 M^2 + ... with M = |A| * rinv (rinv set: normalised rows) or M = A (rinv
// NULL: signed effects); the terms reach exactly zero on a graph without cycles.
static ct_status propagate(const rows_view *v, const double *rinv, const double *x0, double *out, ct_err *err) {
    const ct_graph *g = v->g;
    int64_t N = g->n_nodes, R = ct_graph_n_rows(g);
    double *x = malloc(sizeof(double) * N), *nx = malloc(sizeof(double) * N);
    if (!x || !nx) {
        free(x), free(nx);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    memcpy(x, x0, sizeof(double) * N);
    memset(out, 0, sizeof(double) * N);
    ct_status rc = CT_OK;
    for (int it = 0;; it++) {
        memset(nx, 0, sizeof(double) * N);
        int any = 0;
        for (int64_t r = 0; r < R; r++) {
            double xr = x[ct_graph_row_node(g, r)];
            const float *row = xr != 0.0 ? view_row(v, r) : NULL;
            if (!row) continue;
            if (rinv) {
                double s = xr * rinv[r];
                for (int64_t c = 0; c < N; c++) nx[c] += s * fabsf(row[c]);
            } else {
                for (int64_t c = 0; c < N; c++) nx[c] += xr * row[c];
            }
        }
        for (int64_t c = 0; c < N; c++) {
            out[c] += nx[c];
            any |= nx[c] != 0.0;
        }
        if (!any) break;
        if (it == 1000) {
            rc = ct_fail(err, CT_STATUS_BAD_ARG, "influence did not converge after 1000 iterations (the graph has a cycle)");
            break;
        }
        double *t = x;
        x = nx, nx = t;
    }
    free(x), free(nx);
    return rc;
}

static double *logit_weights(const ct_graph *g) {
    double *w = calloc((size_t)g->n_nodes, sizeof(double));
    if (w)
        for (int k = 0; k < g->n_logits; k++) w[ct_graph_logit_node(g, k)] = g->logits[k].prob;
    return w;
}

ct_status ct_graph_influence(const ct_graph *g, double *out, ct_err *err) {
    double *rinv = malloc(sizeof(double) * (size_t)(ct_graph_n_rows(g) + 1)), *w = logit_weights(g);
    ct_status rc = rinv && w ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    rows_view v = {g, g->adj, NULL, NULL, NULL};
    if (!rc) {
        row_inverse(&v, 1e-10, rinv);
        rc = propagate(&v, rinv, w, out, err);
    }
    free(rinv), free(w);
    return rc;
}

ct_status ct_graph_total_effects(const ct_graph *g, int64_t target, double *out, ct_err *err) {
    int64_t N = g->n_nodes;
    if (target < 0 || target >= N)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "node %lld outside 0..%lld", (long long)target, (long long)(N - 1));
    double *x0 = calloc((size_t)N, sizeof(double));
    if (!x0) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    x0[target] = 1.0;
    rows_view v = {g, g->adj, NULL, NULL, NULL};
    ct_status rc = propagate(&v, NULL, x0, out, err);
    free(x0);
    return rc;
}

// circuit-tracer's find_threshold on the n scores v (modified): sorted descending, the score at
// the first index where the cumulative sum reaches q of the total (the last score if rounding
// never gets there). Quickselect on sums instead of a full sort.
static float find_threshold(float *v, int64_t n, double q) {
    if (n == 0) return 0.0f;
    double total = 0.0;
    float mn = v[0];
    for (int64_t i = 0; i < n; i++) {
        total += v[i];
        if (v[i] < mn) mn = v[i];
    }
    double target = q * total, acc = 0.0;
    int64_t lo = 0, hi = n;   // candidates v[lo, hi), every score above them counted in acc
    while (hi > lo) {
        float a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi - 1];
        float p = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        // three-way partition: [lo, gt) > p, [gt, eq) == p, [eq, hi) < p
        int64_t gt = lo, i = lo, lt = hi;
        while (i < lt) {
            if (v[i] > p) {
                float t = v[gt]; v[gt] = v[i]; v[i] = t;
                gt++, i++;
            } else if (v[i] < p) {
                lt--;
                float t = v[lt]; v[lt] = v[i]; v[i] = t;
            } else {
                i++;
            }
        }
        double s_gt = 0.0, s_eq = 0.0;
        for (int64_t k = lo; k < gt; k++) s_gt += v[k];
        for (int64_t k = gt; k < lt; k++) s_eq += v[k];
        if (gt > lo && acc + s_gt >= target) {
            hi = gt;
        } else if (acc + s_gt + s_eq >= target) {
            return p;
        } else {
            acc += s_gt + s_eq;
            lo = lt;
        }
    }
    return mn;
}

// ---------------------------------------------------------------------------------------------
// Scores

// Replacement and completeness of the graph as v reads it.
static ct_status scores_of(const rows_view *v, double *repl, double *compl, ct_err *err) {
    const ct_graph *g = v->g;
    int64_t N = g->n_nodes, R = ct_graph_n_rows(g), S = g->n_selected, T = g->n_pos, L = g->n_layers;
    int64_t e0 = S, e1 = S + L * T, t1 = e1 + T;
    double *rinv = malloc(sizeof(double) * (size_t)(R + 1)), *inf = malloc(sizeof(double) * (size_t)(N + 1));
    double *w = logit_weights(g);
    ct_status rc = rinv && inf && w ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        row_inverse(v, 1e-10, rinv);
        rc = propagate(v, rinv, w, inf, err);
    }
    if (!rc) {
        double tok = 0.0, er = 0.0, num = 0.0, den = 0.0;
        for (int64_t i = e1; i < t1; i++) tok += inf[i];
        for (int64_t i = e0; i < e1; i++) er += inf[i];
        *repl = tok + er > 0 ? tok / (tok + er) : 0.0;
        // sum over nodes of (1 - error share of its input) (influence + w); nodes without a row
        // read no error
        for (int64_t n = 0; n < N; n++) num += inf[n] + w[n], den += inf[n] + w[n];
        for (int64_t r = 0; r < R; r++) {
            const float *row = view_row(v, r);
            double err_frac = 0.0;
            for (int64_t c = e0; row && c < e1; c++) err_frac += fabsf(row[c]);
            int64_t n = ct_graph_row_node(g, r);
            num -= err_frac * rinv[r] * (inf[n] + w[n]);
        }
        *compl = den > 0 ? num / den : 0.0;
    }
    free(rinv), free(inf), free(w);
    return rc;
}

ct_status ct_graph_scores(const ct_graph *g, double *replacement, double *completeness, ct_err *err) {
    if (g->has_scores) {
        *replacement = g->scores[0];
        *completeness = g->scores[1];
        return CT_OK;
    }
    if (g->node_mask)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "scores: this graph was read from JSON and holds only its kept edges");
    rows_view v = {g, g->adj, NULL, NULL, NULL};
    return scores_of(&v, replacement, completeness, err);
}

// ---------------------------------------------------------------------------------------------
// Pruning

// A shallow copy of g's description (prompt, features, targets, settings) without adjacency.
static ct_status copy_header(ct_graph **out, const ct_graph *g, ct_err *err) {
    ct_graph *p = calloc(1, sizeof *p);
    if (!p) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    *p = *g;
    p->prompt = NULL, p->token_text = NULL, p->node_label = NULL, p->tokens = NULL, p->active = NULL;
    p->activation = NULL, p->selected = NULL, p->logits = NULL, p->adj = NULL, p->node_mask = NULL;
    p->node_influence = NULL, p->has_scores = 0, p->qparams = NULL, p->n_head_edges = 0, p->head_edges = NULL, p->qk_json = NULL;
    int ok = 1;
    p->prompt = strdup(g->prompt ? g->prompt : "");
    if (g->qparams && !(p->qparams = strdup(g->qparams))) ok = 0;
    p->tokens = malloc(sizeof(int) * (size_t)(g->n_pos + 1));
    p->token_text = calloc((size_t)g->n_pos + 1, sizeof(char *));
    p->active = malloc(sizeof(int32_t) * 3 * (size_t)(g->n_active + 1));
    p->activation = malloc(sizeof(float) * (size_t)(g->n_active + 1));
    p->selected = malloc(sizeof(int64_t) * (size_t)(g->n_selected + 1));
    p->logits = calloc((size_t)g->n_logits + 1, sizeof(ct_logit_target));
    if (!p->prompt || !p->tokens || !p->token_text || !p->active || !p->activation || !p->selected || !p->logits) ok = 0;
    if (ok) {
        memcpy(p->tokens, g->tokens, sizeof(int) * (size_t)g->n_pos);
        memcpy(p->active, g->active, sizeof(int32_t) * 3 * (size_t)g->n_active);
        memcpy(p->activation, g->activation, sizeof(float) * (size_t)g->n_active);
        memcpy(p->selected, g->selected, sizeof(int64_t) * (size_t)g->n_selected);
        for (int t = 0; t < g->n_pos && ok; t++)
            if (g->token_text && g->token_text[t] && !(p->token_text[t] = strdup(g->token_text[t]))) ok = 0;
        for (int k = 0; k < g->n_logits && ok; k++) {
            p->logits[k] = g->logits[k];
            p->logits[k].vec = NULL;
            if (!(p->logits[k].label = strdup(g->logits[k].label ? g->logits[k].label : ""))) ok = 0;
            if (ok && g->logits[k].vec) {
                if (!(p->logits[k].vec = malloc(sizeof(float) * (size_t)g->d_model))) ok = 0;
                else memcpy(p->logits[k].vec, g->logits[k].vec, sizeof(float) * (size_t)g->d_model);
            }
        }
    }
    if (ok && g->node_label) {
        if (!(p->node_label = calloc((size_t)g->n_nodes, sizeof(char *)))) ok = 0;
        for (int64_t i = 0; ok && i < g->n_nodes; i++)
            if (g->node_label[i] && !(p->node_label[i] = strdup(g->node_label[i]))) ok = 0;
    }
    if (!ok) {
        ct_graph_free(p);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    *out = p;
    return CT_OK;
}

static int cmp_desc(const void *x, const void *y, void *ctx) {
    const double *v = ctx;
    int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
    if (v[i] != v[j]) return v[i] > v[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

void ct_graph_rank_fraction(const double *inf, int64_t N, int64_t *order, float *cum) {
    for (int64_t i = 0; i < N; i++) order[i] = i;
    qsort_r(order, (size_t)N, sizeof(int64_t), cmp_desc, (void *)inf);
    double total = 0.0, acc = 0.0;
    for (int64_t i = 0; i < N; i++) total += inf[i];
    for (int64_t i = 0; i < N; i++) {
        acc += inf[order[i]];
        cum[order[i]] = (float)(total > 0 ? acc / total : 0.0);
    }
}

static int is_feature_or_error(const ct_graph *g, int64_t i) { return i < g->n_selected + (int64_t)g->n_layers * g->n_pos; }

// The edge score circuit-tracer prunes with: normalize(P)[t, s] * (influence(P) + w)[t].
static float edge_score(float a, double rinv, double out_inf) { return (float)(fabsf(a) * rinv * out_inf); }

ct_status ct_graph_prune(ct_graph **out, const ct_graph *g, double node_threshold, double edge_threshold, ct_err *err) {
    *out = NULL;
    if (!(node_threshold >= 0.0 && node_threshold <= 1.0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "node_threshold: expected a value in [0, 1], got %g", node_threshold);
    if (!(edge_threshold >= 0.0 && edge_threshold <= 1.0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "edge_threshold: expected a value in [0, 1], got %g", edge_threshold);
    if (g->node_mask) return ct_fail(err, CT_STATUS_UNSUPPORTED, "prune: the graph is already pruned; prune the full graph");
    int64_t N = g->n_nodes, S = g->n_selected, R = ct_graph_n_rows(g);
    int64_t keep_from = N - g->n_logits - g->n_pos;   // tokens and logits are always kept
    double *node_inf = malloc(sizeof(double) * (size_t)(N + 1)), *rinv = malloc(sizeof(double) * (size_t)(R + 1));
    double *pinf = malloc(sizeof(double) * (size_t)(N + 1)), *w = logit_weights(g);
    float *nscore = malloc(sizeof(float) * (size_t)(N + 1)), *buf = malloc(sizeof(float) * (size_t)(N + 1));
    uint8_t *mask = malloc((size_t)N + 1), *mask1 = malloc((size_t)N + 1), *has_in = malloc((size_t)N + 1);
    uint8_t *has_out = malloc((size_t)N + 1);
    int64_t *order = malloc(sizeof(int64_t) * (size_t)(N + 1)), *merge = malloc(sizeof(int64_t) * (size_t)(N + 1));
    float *P = malloc(sizeof(float) * (size_t)R * (size_t)N + 1);
    ct_graph *p = NULL;
    ct_status rc = node_inf && rinv && pinf && w && nscore && buf && mask && mask1 && has_in && has_out && order && merge && P
                       ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for pruning %lld nodes", (long long)N);
    if (rc) goto done;
    // 1. node influence and the node threshold
    if ((rc = ct_graph_influence(g, node_inf, err))) goto done;
    for (int64_t i = 0; i < N; i++) nscore[i] = (float)node_inf[i];
    float node_thr = find_threshold(nscore, N, node_threshold);
    for (int64_t i = 0; i < N; i++) mask[i] = mask1[i] = i >= keep_from || (float)node_inf[i] >= node_thr;
    // 2. edge scores on the graph restricted to the kept nodes; the edge threshold
    rows_view kept = {g, g->adj, mask1, NULL, buf};
    row_inverse(&kept, 1e-10, rinv);
    if ((rc = propagate(&kept, rinv, w, pinf, err))) goto done;
    for (int64_t r = 0; r < R; r++) {
        int64_t n = ct_graph_row_node(g, r);
        const float *row = g->adj + (size_t)r * N;
        for (int64_t c = 0; c < N; c++)
            P[(size_t)r * N + c] = mask1[n] && mask1[c] ? edge_score(row[c], rinv[r], pinf[n] + w[n]) : 0.0f;
    }
    float edge_thr = find_threshold(P, R * N, edge_threshold);   // reorders P
#define KEPT(r, n, c) \
    (mask[n] && mask[c] && (sc = edge_score(g->adj[(size_t)(r) * N + (c)], rinv[r], pinf[n] + w[n])) > 0.0f && sc >= edge_thr)
    // 3. until nothing changes: features and errors need a kept outgoing edge, features a kept
    // incoming one; edges of dropped nodes go
    for (int changed = 1; changed;) {
        memset(has_in, 0, (size_t)N);
        memset(has_out, 0, (size_t)N);
        for (int64_t r = 0; r < R; r++) {
            int64_t n = ct_graph_row_node(g, r);
            float sc;
            for (int64_t c = 0; mask[n] && c < N; c++)
                if (KEPT(r, n, c)) has_in[n] = has_out[c] = 1;
        }
        changed = 0;
        for (int64_t i = 0; i < keep_from; i++) {
            int keep = mask[i] && (!is_feature_or_error(g, i) || has_out[i]) && (i >= S || has_in[i]);
            if (keep != mask[i]) mask[i] = (uint8_t)keep, changed = 1;
        }
    }
    // 4. the pruned graph: kept edges (in P's memory), node mask, cumulative influence
    if ((rc = copy_header(&p, g, err))) goto done;
    for (int64_t r = 0; r < R; r++) {
        int64_t n = ct_graph_row_node(g, r);
        float sc;
        for (int64_t c = 0; c < N; c++) P[(size_t)r * N + c] = KEPT(r, n, c) ? g->adj[(size_t)r * N + c] : 0.0f;
    }
#undef KEPT
    p->adj = P, P = NULL;
    p->node_mask = mask, mask = NULL;
    if (!(p->node_influence = malloc(sizeof(float) * (size_t)(N + 1)))) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    ct_graph_rank_fraction(node_inf, N, order, p->node_influence);
    // 5. scores of the pruned graph: dropped features merge into their (layer, position) error
    // node; every edge of the full graph counts
    for (int64_t i = 0; i < N; i++) mask1[i] = 1, merge[i] = -1;
    for (int64_t f = 0; f < S; f++) {
        if (p->node_mask[f]) continue;
        const int32_t *a = g->active + 3 * g->selected[f];
        merge[f] = ct_graph_error_node(g, a[0], a[1]);
        mask1[f] = 0;
    }
    rows_view merged = {g, g->adj, mask1, merge, buf};
    if ((rc = scores_of(&merged, &p->scores[0], &p->scores[1], err))) goto done;
    p->has_scores = 1;
    p->settings.node_threshold = node_threshold;
    p->settings.edge_threshold = edge_threshold;
done:
    if (rc) {
        ct_graph_free(p);
        p = NULL;
    }
    free(node_inf), free(rinv), free(pinf), free(w), free(nscore), free(buf), free(mask), free(mask1), free(has_in);
    free(has_out), free(order), free(merge), free(P);
    *out = p;
    return rc;
}

ct_status ct_graph_node_influence(ct_graph *g, const float **out, ct_err *err) {
    *out = NULL;
    if (!g->node_influence) {
        int64_t N = g->n_nodes;
        double *inf = malloc(sizeof(double) * (size_t)(N + 1));
        int64_t *order = malloc(sizeof(int64_t) * (size_t)(N + 1));
        float *cum = malloc(sizeof(float) * (size_t)(N + 1));
        ct_status rc = inf && order && cum ? ct_graph_influence(g, inf, err) : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        if (!rc) ct_graph_rank_fraction(inf, N, order, cum);
        free(inf), free(order);
        if (rc) {
            free(cum);
            return rc;
        }
        g->node_influence = cum;
    }
    *out = g->node_influence;
    return CT_OK;
}
