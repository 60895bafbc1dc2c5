// graph.c - attribution graphs: influence, pruning, scores (see graph.h).
#include "graph.h"

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
    free(g->active);
    free(g->activation);
    free(g->selected);
    for (int k = 0; g->logits && k < g->n_logits; k++) free(g->logits[k].label);
    free(g->logits);
    free(g->adj);
    free(g->node_mask);
    free(g->node_influence);
    free(g);
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

// rinv (N,) = 1 / max(sum |A[r, :]|, clamp): row r of normalize(A) is |A[r, :]| * rinv[r].
static void row_inverse(const float *A, int64_t N, double clamp, double *rinv) {
    for (int64_t r = 0; r < N; r++) {
        const float *row = A + (size_t)r * N;
        double s = 0.0;
        for (int64_t c = 0; c < N; c++) s += fabsf(row[c]);
        rinv[r] = 1.0 / (s > clamp ? s : clamp);
    }
}

// out (N,) = w An + w An^2 + ... with An = |A| * rinv (rows); the terms reach exactly zero on a
// graph without cycles.
static ct_status influence(const float *A, const double *rinv, const double *w, int64_t N, double *out, ct_err *err) {
    double *x = malloc(sizeof(double) * N), *nx = malloc(sizeof(double) * N);
    if (!x || !nx) {
        free(x), free(nx);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    memcpy(x, w, sizeof(double) * N);
    memset(out, 0, sizeof(double) * N);
    ct_status rc = CT_OK;
    for (int it = 0;; it++) {
        memset(nx, 0, sizeof(double) * N);
        int any = 0;
        for (int64_t r = 0; r < N; r++) {
            if (x[r] == 0.0) continue;
            double s = x[r] * rinv[r];
            const float *row = A + (size_t)r * N;
            for (int64_t c = 0; c < N; c++) nx[c] += s * fabsf(row[c]);
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
    int64_t N = g->n_nodes;
    double *rinv = malloc(sizeof(double) * (size_t)(N + 1)), *w = logit_weights(g);
    ct_status rc = rinv && w ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        row_inverse(g->adj, N, 1e-10, rinv);
        rc = influence(g->adj, rinv, w, N, out, err);
    }
    free(rinv), free(w);
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

// Replacement and completeness of A (N, N) with logit weights w.
static ct_status scores_of(const ct_graph *g, const float *A, double *repl, double *compl, ct_err *err) {
    int64_t N = g->n_nodes, S = g->n_selected, T = g->n_pos, L = g->n_layers;
    int64_t e0 = S, e1 = S + L * T, t1 = e1 + T;
    double *rinv = malloc(sizeof(double) * (size_t)(N + 1)), *inf = malloc(sizeof(double) * (size_t)(N + 1));
    double *w = logit_weights(g);
    ct_status rc = rinv && inf && w ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        row_inverse(A, N, 1e-10, rinv);
        rc = influence(A, rinv, w, N, inf, err);
    }
    if (!rc) {
        double tok = 0.0, er = 0.0, num = 0.0, den = 0.0;
        for (int64_t i = e1; i < t1; i++) tok += inf[i];
        for (int64_t i = e0; i < e1; i++) er += inf[i];
        *repl = tok + er > 0 ? tok / (tok + er) : 0.0;
        for (int64_t r = 0; r < N; r++) {
            const float *row = A + (size_t)r * N;
            double err_frac = 0.0;
            for (int64_t c = e0; c < e1; c++) err_frac += fabsf(row[c]);
            double out_inf = inf[r] + w[r];
            num += (1.0 - err_frac * rinv[r]) * out_inf;
            den += out_inf;
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
    return scores_of(g, g->adj, replacement, completeness, err);
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
    p->node_influence = NULL, p->has_scores = 0;
    int ok = 1;
    p->prompt = strdup(g->prompt ? g->prompt : "");
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
            if (!(p->logits[k].label = strdup(g->logits[k].label ? g->logits[k].label : ""))) ok = 0;
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

ct_status ct_graph_prune(ct_graph **out, const ct_graph *g, double node_threshold, double edge_threshold, ct_err *err) {
    *out = NULL;
    if (!(node_threshold >= 0.0 && node_threshold <= 1.0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "node_threshold: expected a value in [0, 1], got %g", node_threshold);
    if (!(edge_threshold >= 0.0 && edge_threshold <= 1.0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "edge_threshold: expected a value in [0, 1], got %g", edge_threshold);
    if (g->node_mask) return ct_fail(err, CT_STATUS_UNSUPPORTED, "prune: the graph is already pruned; prune the full graph");
    int64_t N = g->n_nodes, S = g->n_selected;
    int64_t keep_from = N - g->n_logits - g->n_pos;   // tokens and logits are always kept
    double *node_inf = malloc(sizeof(double) * (size_t)(N + 1)), *rinv = malloc(sizeof(double) * (size_t)(N + 1));
    double *pinf = malloc(sizeof(double) * (size_t)(N + 1)), *w = logit_weights(g);
    float *nscore = malloc(sizeof(float) * (size_t)(N + 1));
    uint8_t *mask = malloc((size_t)N + 1), *has_in = malloc((size_t)N + 1), *has_out = malloc((size_t)N + 1);
    float *P = malloc(sizeof(float) * (size_t)N * (size_t)N + 1);
    float *scores = NULL, *merged = NULL;
    int64_t *order = NULL;
    ct_graph *p = NULL;
    ct_status rc = node_inf && rinv && pinf && w && nscore && mask && has_in && has_out && P
                       ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for pruning %lld nodes", (long long)N);
    if (rc) goto done;
    // 1. node influence and the node threshold
    if ((rc = ct_graph_influence(g, node_inf, err))) goto done;
    for (int64_t i = 0; i < N; i++) nscore[i] = (float)node_inf[i];
    float node_thr = find_threshold(nscore, N, node_threshold);
    for (int64_t i = 0; i < N; i++) mask[i] = i >= keep_from || (float)node_inf[i] >= node_thr;
    // 2. edge scores on the graph restricted to kept nodes
    for (int64_t r = 0; r < N; r++)
        for (int64_t c = 0; c < N; c++) {
            size_t k = (size_t)r * N + c;
            P[k] = mask[r] && mask[c] ? g->adj[k] : 0.0f;
        }
    row_inverse(P, N, 1e-10, rinv);
    if ((rc = influence(P, rinv, w, N, pinf, err))) goto done;
    int64_t n_nz = 0;
    for (size_t k = 0; k < (size_t)N * N; k++) n_nz += P[k] != 0.0f;
    if (!(scores = malloc(sizeof(float) * (size_t)(n_nz + 1)))) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for %lld edge scores", (long long)n_nz);
        goto done;
    }
    // edge score = normalize(P)[t, s] * (influence + w)[t]; P becomes the score matrix
    n_nz = 0;
    for (int64_t r = 0; r < N; r++)
        for (int64_t c = 0; c < N; c++) {
            size_t k = (size_t)r * N + c;
            if (P[k] == 0.0f) continue;
            P[k] = (float)(fabsf(P[k]) * rinv[r] * (pinf[r] + w[r]));
            scores[n_nz++] = P[k];
        }
    float edge_thr = find_threshold(scores, n_nz, edge_threshold);
    // 3. until nothing changes: features and errors need a kept outgoing edge, features a kept
    // incoming one; edges of dropped nodes go
    for (int changed = 1; changed;) {
        memset(has_in, 0, (size_t)N);
        memset(has_out, 0, (size_t)N);
        for (int64_t r = 0; r < N; r++) {
            if (!mask[r]) continue;
            const float *row = P + (size_t)r * N;
            for (int64_t c = 0; c < N; c++)
                if (mask[c] && row[c] > 0.0f && row[c] >= edge_thr) has_in[r] = has_out[c] = 1;
        }
        changed = 0;
        for (int64_t i = 0; i < keep_from; i++) {
            int keep = mask[i] && (!is_feature_or_error(g, i) || has_out[i]) && (i >= S || has_in[i]);
            if (keep != mask[i]) mask[i] = (uint8_t)keep, changed = 1;
        }
    }
    // 4. the pruned graph: kept edges, node mask, cumulative influence rank fraction
    if ((rc = copy_header(&p, g, err))) goto done;
    p->node_mask = mask, mask = NULL;
    p->node_influence = malloc(sizeof(float) * (size_t)(N + 1));
    order = malloc(sizeof(int64_t) * (size_t)(N + 1));
    merged = malloc(sizeof(float) * (size_t)N * (size_t)N + 1);
    if (!p->node_influence || !order || !merged) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < (size_t)N * N; k++) {
        int64_t r = (int64_t)(k / N), c = (int64_t)(k % N);
        P[k] = p->node_mask[r] && p->node_mask[c] && P[k] > 0.0f && P[k] >= edge_thr ? g->adj[k] : 0.0f;
    }
    p->adj = P, P = NULL;
    ct_graph_rank_fraction(node_inf, N, order, p->node_influence);
    // scores of the pruned graph: dropped features merge into their (layer, position) error node
    memcpy(merged, g->adj, sizeof(float) * (size_t)N * N);
    for (int64_t f = 0; f < S; f++) {
        if (p->node_mask[f]) continue;
        const int32_t *a = g->active + 3 * g->selected[f];
        int64_t e = ct_graph_error_node(g, a[0], a[1]);
        for (int64_t r = 0; r < N; r++) {
            float *row = merged + (size_t)r * N;
            row[e] += row[f];
            row[f] = 0.0f;
        }
        memset(merged + (size_t)f * N, 0, sizeof(float) * (size_t)N);
    }
    if ((rc = scores_of(g, merged, &p->scores[0], &p->scores[1], err))) goto done;
    p->has_scores = 1;
    p->settings.node_threshold = node_threshold;
    p->settings.edge_threshold = edge_threshold;
done:
    if (rc) {
        ct_graph_free(p);
        p = NULL;
    }
    free(node_inf), free(rinv), free(pinf), free(w), free(nscore), free(mask), free(has_in), free(has_out);
    free(P), free(scores), free(merged), free(order);
    *out = p;
    return rc;
}
