// qk.c - a head's pre-softmax score split into terms for pairs of nodes (see qk.h).
#include "trace/qk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trace/attribution.h"

void ct_qk_free(ct_qk *q) {
    free(q->active), free(q->act), free(q->q), free(q->k), free(q->q0), free(q->k0), free(q->q_clean), free(q->k_clean);
    free(q->row), free(q->k_row), free(q->gq), free(q->gk_row);
    free(q->q_idx), free(q->q_nrm), free(q->q_pack), free(q->q_tot);
    memset(q, 0, sizeof *q);
}

// dirs (n * hd, D): for each position pos[p], the rows of W (the query or key projection) of head h,
// each times gain[p * hd + c] (the frozen q/k norm: gain / denominator; gain NULL: 1), rotated as
// the pass rotates that head at pos[p]: component c of the head's vector there (before its bias) is
// dirs[p * hd + c] . the attention's input.
static void head_directions(const ct_model *m, const ct_mat *W, int layer, int h, const int *pos, int n, const float *gain,
                            float *dirs, float *v) {
    int hd = m->cfg.head_dim, D = m->cfg.d_model;
    for (int p = 0; p < n; p++) {
        float *blk = dirs + (size_t)p * hd * D;
        for (int c = 0; c < hd; c++) {
            float *r = blk + (size_t)c * D;
            ct_mat_row(W, (int64_t)h * hd + c, r);
            if (gain)
                for (int d = 0; d < D; d++) r[d] *= gain[(size_t)p * hd + c];
        }
        for (int d = 0; d < D; d++) {   // RoPE is linear: rotate each column
            for (int c = 0; c < hd; c++) v[c] = blk[(size_t)c * D + d];
            ct_model_rope(m, layer, pos[p], v);
            for (int c = 0; c < hd; c++) blk[(size_t)c * D + d] = v[c];
        }
    }
}

// One side at n positions pos (ascending): every node's part (n * hd, n_cols) of head h's vector
// there, read at the attention input. The first call fills out's columns (every call lists the same).
static ct_status side(ct_replacement *rm, const int *tokens, int T, int layer, const ct_mat *W, int h, const int *pos, int n,
                      const float *gain, ct_qk *out, float **parts, ct_err *err) {
    const ct_model *m = rm->m;
    int hd = m->cfg.head_dim, D = m->cfg.d_model, rows = n * hd;
    float *dirs = malloc(sizeof(float) * (size_t)rows * D), *v = malloc(sizeof(float) * (size_t)hd);
    int *at = malloc(sizeof(int) * (size_t)rows);
    ct_status rc = dirs && v && at ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_resid_rows rr = {0};
    if (!rc) {
        head_directions(m, W, layer, h, pos, n, gain, dirs, v);
        for (int r = 0; r < rows; r++) at[r] = pos[r / hd];
        rc = ct_attribute_resid(rm, tokens, T, layer, 1, at, dirs, rows, &rr, err);
    }
    if (!rc) {
        *parts = rr.rows, rr.rows = NULL;
        if (!out->active) {
            out->n_active = rr.n_active, out->n_cols = rr.n_cols;
            out->active = rr.active, out->act = rr.act;
            rr.active = NULL, rr.act = NULL;
        }
    }
    ct_resid_rows_free(&rr);
    free(dirs), free(v), free(at);
    return rc;
}

typedef struct { int64_t col; float norm; } node_norm;

static int cmp_norm(const void *x, const void *y) {   // by norm descending, then column
    const node_norm *a = x, *b = y;
    if (a->norm != b->norm) return a->norm > b->norm ? -1 : 1;
    return a->col < b->col ? -1 : a->col > b->col;
}

// The columns whose part (hd, n_cols) is not all zero, then the constant (n_cols), by norm
// descending: idx (n,) their columns, norm (n,), packed (n, hd) their parts as rows.
static int64_t live_nodes(const float *parts, const float *zero, int hd, int64_t n_cols, node_norm *tmp, int64_t *idx,
                          float *norm, float *packed) {
    int64_t n = 0;
    for (int64_t i = 0; i <= n_cols; i++) {
        double s = 0;
        for (int c = 0; c < hd; c++) {
            double x = i < n_cols ? parts[(size_t)c * n_cols + i] : zero[c];
            s += x * x;
        }
        if (s > 0) tmp[n++] = (node_norm){i, (float)sqrt(s)};
    }
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_norm);
    for (int64_t r = 0; r < n; r++) {
        idx[r] = tmp[r].col, norm[r] = tmp[r].norm;
        for (int c = 0; c < hd; c++)
            packed[(size_t)r * hd + c] = tmp[r].col < n_cols ? parts[(size_t)c * n_cols + tmp[r].col] : zero[c];
    }
    return n;
}

// The row's clean values from a pass that keeps them (the query, the keys lo..query, the q/k-norm
// gains), then the query's side: its nodes' parts and its constant part. key < 0: a row.
static ct_status begin(ct_qk *out, ct_replacement *rm, const int *tokens, int T, int layer, int head, int query, int key,
                       ct_err *err) {
    memset(out, 0, sizeof *out);
    ct_model *m = rm->m;
    const ct_config *c = &m->cfg;
    int L = c->n_layers, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    if (layer < 0 || layer >= L || head < 0 || head >= H)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "qk: layer %d head %d; the model has layers 0..%d, heads 0..%d", layer,
                       head, L - 1, H - 1);
    if (query < 0 || query >= T || key > query)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "qk: query position %d, key position %d; expected 0 <= key <= query < %d",
                       query, key, T);
    int lo = m->layers[layer].sliding && c->sliding_window > 0 && query - c->sliding_window + 1 > 0
                 ? query - c->sliding_window + 1 : 0;
    if (key >= 0 && key < lo)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "qk: key %d is outside layer %d's sliding window of %d before query %d",
                       key, layer, c->sliding_window, query);
    int kvh = head / (H / KV), n_row = query - lo + 1;
    *out = (ct_qk){.layer = layer, .head = head, .query = query, .key = key, .hd = hd, .scale = c->attn_scale, .lo = lo,
                   .cap = c->attn_softcap > 0 ? c->attn_softcap : 0};
    ct_hook_id ids[4] = {{CT_HOOK_Q, layer}, {CT_HOOK_K, layer}, {CT_HOOK_Q_NORM_SCALE, layer}, {CT_HOOK_K_NORM_SCALE, layer}};
    ct_hook_cache hc = {0};
    ct_status rc = ct_hook_cache_init(&hc, ids, c->qk_norm ? 4 : 2, err);
    if (!rc) rc = ct_model_forward(m, tokens, T, NULL, &hc, NULL, 0, err);
    out->q_clean = malloc(sizeof(float) * (size_t)hd), out->q0 = malloc(sizeof(float) * (size_t)hd);
    out->k_row = malloc(sizeof(float) * (size_t)n_row * hd), out->row = malloc(sizeof(double) * (size_t)n_row);
    if (c->qk_norm) out->gq = malloc(sizeof(float) * (size_t)hd), out->gk_row = malloc(sizeof(float) * (size_t)n_row * hd);
    if (!rc && (!out->q_clean || !out->q0 || !out->k_row || !out->row || (c->qk_norm && (!out->gq || !out->gk_row))))
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        const float *Q = ct_tensor_data(hc.values[0]), *K = ct_tensor_data(hc.values[1]);   // (T, H, hd) (T, KV, hd)
        memcpy(out->q_clean, Q + ((size_t)query * H + head) * hd, sizeof(float) * (size_t)hd);
        for (int r = 0; r < n_row; r++) {
            const float *kr = K + ((size_t)(lo + r) * KV + kvh) * hd;
            memcpy(out->k_row + (size_t)r * hd, kr, sizeof(float) * (size_t)hd);
            double s = 0;
            for (int j = 0; j < hd; j++) s += (double)out->q_clean[j] * kr[j];
            out->row[r] = out->scale * s;
        }
    }
    if (!rc && c->qk_norm) {   // (T, H) and (T, KV) denominators
        const float *dq = ct_tensor_data(hc.values[2]), *dk = ct_tensor_data(hc.values[3]);
        const float *wq = m->layers[layer].q_norm, *wk = m->layers[layer].k_norm;
        for (int j = 0; j < hd; j++) out->gq[j] = (1.0f / dq[(size_t)query * H + head]) * (wq ? wq[j] + c->norm_gain_offset : 1.0f);
        for (int r = 0; r < n_row; r++)
            for (int j = 0; j < hd; j++)
                out->gk_row[(size_t)r * hd + j] =
                    (1.0f / dk[(size_t)(lo + r) * KV + kvh]) * (wk ? wk[j] + c->norm_gain_offset : 1.0f);
    }
    ct_hook_cache_free(&hc);
    if (!rc) rc = side(rm, tokens, T, layer, &m->layers[layer].wq, head, &query, 1, out->gq, out, &out->q, err);
    int64_t N = out->n_cols + 1;
    node_norm *tmp = NULL;
    if (!rc) {
        out->q_tot = malloc(sizeof(double) * (size_t)hd), out->q_idx = malloc(sizeof(int64_t) * (size_t)N);
        out->q_nrm = malloc(sizeof(float) * (size_t)N), out->q_pack = malloc(sizeof(float) * (size_t)N * hd);
        tmp = malloc(sizeof *tmp * (size_t)N);
        if (!out->q_tot || !out->q_idx || !out->q_nrm || !out->q_pack || !tmp) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    for (int j = 0; !rc && j < hd; j++) {   // the constant part: what the nodes leave of the clean query
        double s = 0;
        for (int64_t i = 0; i < out->n_cols; i++) s += out->q[(size_t)j * out->n_cols + i];
        out->q0[j] = (float)(out->q_clean[j] - s);
        out->q_tot[j] = s + out->q0[j];
    }
    if (!rc) out->n_qlive = live_nodes(out->q, out->q0, hd, out->n_cols, tmp, out->q_idx, out->q_nrm, out->q_pack);
    free(tmp);
    if (rc) ct_qk_free(out);
    return rc;
}

static double capped(const ct_qk *q, double s) { return q->cap > 0 ? q->cap * tanh(s / q->cap) : s; }

// The attention probability at q->key were its score s, the row's other scores as they are.
static double prob_at(const ct_qk *q, double s) {
    int n = q->query - q->lo + 1, k = q->key - q->lo;
    double a = capped(q, s), mx = -INFINITY, z = 0;
    for (int r = 0; r < n; r++)
        if (r != k) mx = fmax(mx, capped(q, q->row[r]));
    if (mx == -INFINITY) return 1.0;   // the only key
    for (int r = 0; r < n; r++)
        if (r != k) z += exp(capped(q, q->row[r]) - mx);
    return 1.0 / (1.0 + exp(mx + log(z) - a));
}

// q->key's side from its parts k (hd, n_cols), borrowed: its clean key, constant part, score, total
// and probability.
static ct_status finish_key(ct_qk *q, int key, float *k, ct_err *err) {
    int hd = q->hd;
    q->key = key, q->k = k;
    if (!q->k_clean) q->k_clean = malloc(sizeof(float) * (size_t)hd);
    if (!q->k0) q->k0 = malloc(sizeof(float) * (size_t)hd);
    if (!q->k_clean || !q->k0) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    memcpy(q->k_clean, q->k_row + (size_t)(key - q->lo) * hd, sizeof(float) * (size_t)hd);
    double total = 0;
    for (int j = 0; j < hd; j++) {
        double sk = 0;
        for (int64_t i = 0; i < q->n_cols; i++) sk += k[(size_t)j * q->n_cols + i];
        q->k0[j] = (float)(q->k_clean[j] - sk);
        total += q->q_tot[j] * (sk + q->k0[j]);
    }
    q->score = q->row[key - q->lo];
    q->total = q->scale * total;
    q->prob = prob_at(q, q->score);
    return CT_OK;
}

ct_status ct_qk_run(ct_qk *out, ct_replacement *rm, const int *tokens, int T, int layer, int head, int query, int key,
                    ct_err *err) {
    if (key < 0) {
        memset(out, 0, sizeof *out);
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "qk: key position %d; expected 0 <= key <= query", key);
    }
    ct_status rc = begin(out, rm, tokens, T, layer, head, query, key, err);
    if (rc) return rc;
    const ct_model *m = rm->m;
    int kvh = head / (m->cfg.n_heads / m->cfg.n_kv_heads);
    float *k = NULL;
    rc = side(rm, tokens, T, layer, &m->layers[layer].wk, kvh, &key, 1, out->gk_row ? out->gk_row + (size_t)(key - out->lo) * out->hd : NULL,
              out, &k, err);
    if (!rc) rc = finish_key(out, key, k, err);
    else free(k);
    if (rc) ct_qk_free(out);
    return rc;
}

// by |value| descending, then i, then j
static int cmp_pair(const void *x, const void *y) {
    const ct_qk_pair *a = x, *b = y;
    double u = fabs(a->value), v = fabs(b->value);
    if (u != v) return u > v ? -1 : 1;
    if (a->i != b->i) return a->i < b->i ? -1 : 1;
    return a->j < b->j ? -1 : a->j > b->j;
}

#define TOP_QB 256    // query-side nodes a tile
#define TOP_KB 1024   // key-side nodes a tile

ct_status ct_qk_top(const ct_qk *q, int n, ct_qk_pair *pairs, int *n_out, ct_err *err) {
    *n_out = 0;
    if (n < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "qk: %d pairs asked for; expected at least 1", n);
    int hd = q->hd;
    int64_t N = q->n_cols + 1, cols = q->n_cols;
    int64_t *ik = malloc(sizeof(int64_t) * (size_t)N);
    float *nk_ = malloc(sizeof(float) * (size_t)N);
    node_norm *tmp = malloc(sizeof *tmp * (size_t)N);
    float *K = malloc(sizeof(float) * (size_t)N * hd);
    float *C = malloc(sizeof(float) * TOP_QB * TOP_KB), *A = malloc(sizeof(float) * TOP_QB * TOP_KB);
    int64_t *pick = malloc(sizeof(int64_t) * (size_t)n);
    ct_qk_pair *best = malloc(sizeof *best * (size_t)(2 * n));
    if (!ik || !nk_ || !tmp || !K || !C || !A || !pick || !best) {
        free(ik), free(nk_), free(tmp), free(K), free(C), free(A), free(pick), free(best);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for the pairs of %lld nodes", (long long)N);
    }
    const int64_t *iq = q->q_idx;
    const float *nq_ = q->q_nrm, *Q = q->q_pack;
    int64_t nq = q->n_qlive, nk = live_nodes(q->k, q->k0, hd, cols, tmp, ik, nk_, K);
    int kept = 0;
    // tiles of pairs in the order of their nodes' norms: |q_i . k_j| <= |q_i| |k_j| (with room for
    // float32 rounding) bounds a tile by its first row and column; one below the n-th best cannot
    // enter, nor can the rest of its row of tiles, nor (its first) any later row
    for (int64_t i0 = 0; i0 < nq; i0 += TOP_QB) {
        int nb = nq - i0 < TOP_QB ? (int)(nq - i0) : TOP_QB;
        double qmax = fabs(q->scale) * nq_[i0] * (1 + 1e-4);
        int64_t j0 = 0;
        for (; j0 < nk; j0 += TOP_KB) {
            if (kept == n && qmax * nk_[j0] < fabs(best[n - 1].value)) break;
            int kb = nk - j0 < TOP_KB ? (int)(nk - j0) : TOP_KB;
            // C (nb, kb) = scale Q[i0..] (nb, hd) @ K[j0..] (kb, hd)^T
            ct_sgemm_here(0, 1, nb, kb, hd, (float)q->scale, Q + (size_t)i0 * hd, hd, K + (size_t)j0 * hd, hd, 0.0f, C, kb);
            for (size_t e = 0; e < (size_t)nb * (size_t)kb; e++) A[e] = fabsf(C[e]);
            int64_t got = ct_topk(pick, A, (int64_t)nb * kb, n);
            for (int64_t t = 0; t < got; t++)
                best[kept++] = (ct_qk_pair){iq[i0 + pick[t] / kb], ik[j0 + pick[t] % kb], C[pick[t]], 0};
            qsort(best, (size_t)kept, sizeof *best, cmp_pair);
            if (kept > n) kept = n;
        }
        if (j0 == 0 && nk > 0) break;
    }
    for (int t = 0; t < kept; t++) {   // each value in double from its parts, and its shift
        double v = 0;
        for (int c = 0; c < hd; c++) {
            double a = best[t].i < cols ? q->q[(size_t)c * cols + best[t].i] : q->q0[c];
            double b = best[t].j < cols ? q->k[(size_t)c * cols + best[t].j] : q->k0[c];
            v += a * b;
        }
        best[t].value = q->scale * v;
        best[t].shift = q->prob - prob_at(q, q->score - best[t].value);
    }
    qsort(best, (size_t)kept, sizeof *best, cmp_pair);
    memcpy(pairs, best, sizeof *best * (size_t)kept);
    *n_out = kept;
    free(ik), free(nk_), free(tmp), free(K), free(C), free(A), free(pick), free(best);
    return CT_OK;
}

void ct_qk_row_free(ct_qk_row *r) {
    if (r->keys)
        for (int i = 0; i < r->n_keys; i++) free(r->keys[i].pairs);
    free(r->keys), free(r->active), free(r->act);
    memset(r, 0, sizeof *r);
}

#define ROW_ROWS 256   // key-side rows (keys x hd) a backward batch at a time

// The column of node n among q's, or -1 (NOT_FOUND in err).
static int64_t node_column(const ct_qk *q, const ct_qk_node *n, int L, int T, ct_err *err) {
    if (n->kind == CT_NODE_FEATURE) {
        for (int64_t i = 0; i < q->n_active; i++) {
            const int32_t *f = q->active + 3 * i;
            if (f[0] == n->layer && f[1] == n->pos && f[2] == n->feature) return i;
        }
        ct_fail(err, CT_STATUS_NOT_FOUND, "qk: feature %d_%lld_%d is not active in the prompt's clean run", n->layer,
                (long long)n->feature, n->pos);
        return -1;
    }
    if (n->pos < 0 || n->pos >= T || (n->kind == CT_NODE_ERROR && (n->layer < 0 || n->layer >= L)) ||
        (n->kind != CT_NODE_ERROR && n->kind != CT_NODE_TOKEN)) {
        ct_fail(err, CT_STATUS_NOT_FOUND, "qk: no such node (kind %d, layer %d, position %d; %d layers, %d positions)",
                (int)n->kind, n->layer, n->pos, L, T);
        return -1;
    }
    return q->n_active + (n->kind == CT_NODE_ERROR ? (int64_t)n->layer * T + n->pos : (int64_t)L * T + n->pos);
}

ct_status ct_qk_row_run(ct_qk_row *out, ct_replacement *rm, const int *tokens, int T, int layer, int head, int query, int top,
                        const ct_qk_node *without, ct_err *err) {
    memset(out, 0, sizeof *out);
    if (top < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "qk: %d pairs asked for; expected at least 1", top);
    ct_qk q;
    ct_status rc = begin(&q, rm, tokens, T, layer, head, query, -1, err);
    if (rc) return rc;
    const ct_model *m = rm->m;
    int hd = q.hd, kvh = head / (m->cfg.n_heads / m->cfg.n_kv_heads), n_row = query - q.lo + 1;
    int64_t col = without ? node_column(&q, without, m->cfg.n_layers, T, err) : -1;
    if (without && col < 0) {
        ct_qk_free(&q);
        return err->status;
    }
    int per = ROW_ROWS / hd > 0 ? ROW_ROWS / hd : 1;
    *out = (ct_qk_row){layer, head, query, q.lo, q.scale, q.n_active, q.n_cols, NULL, NULL, n_row, calloc((size_t)n_row, sizeof(ct_qk_key))};
    int *pos = malloc(sizeof(int) * (size_t)per);
    if (!out->keys || !pos) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int b0 = 0; !rc && b0 < n_row; b0 += per) {
        int nb = n_row - b0 < per ? n_row - b0 : per;
        float *parts = NULL;   // (nb * hd, n_cols)
        for (int b = 0; b < nb; b++) pos[b] = q.lo + b0 + b;
        rc = side(rm, tokens, T, layer, &m->layers[layer].wk, kvh, pos, nb, q.gk_row ? q.gk_row + (size_t)b0 * hd : NULL, &q,
                  &parts, err);
        for (int b = 0; !rc && b < nb; b++) {
            ct_qk_key *k = &out->keys[b0 + b];
            k->pairs = malloc(sizeof *k->pairs * (size_t)top);
            if (!k->pairs) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
            if (!rc) rc = finish_key(&q, pos[b], parts + (size_t)b * hd * q.n_cols, err);
            if (!rc) rc = ct_qk_top(&q, top, k->pairs, &k->n_pairs, err);
            if (!rc && k->n_pairs < top) {   // a long row asks for room it may not fill
                ct_qk_pair *shrunk = realloc(k->pairs, sizeof *k->pairs * (size_t)(k->n_pairs ? k->n_pairs : 1));
                if (shrunk) k->pairs = shrunk;
            }
            k->key = pos[b], k->score = q.score, k->total = q.total, k->prob = q.prob;
            k->without = k->prob_without = NAN;
            if (!rc && col >= 0) {   // scale (q - q_col) . (k - k_col)
                double s = 0;
                for (int c = 0; c < hd; c++)
                    s += ((double)q.q_clean[c] - q.q[(size_t)c * q.n_cols + col]) *
                         ((double)q.k_clean[c] - q.k[(size_t)c * q.n_cols + col]);
                k->without = q.scale * s;
            }
        }
        q.k = NULL;   // borrowed from parts
        free(parts);
    }
    free(pos);
    if (!rc && col >= 0) {   // the row's probabilities with every key's score without the node
        double mx = -INFINITY, z = 0;
        for (int r = 0; r < n_row; r++) mx = fmax(mx, capped(&q, out->keys[r].without));
        for (int r = 0; r < n_row; r++) z += exp(capped(&q, out->keys[r].without) - mx);
        for (int r = 0; r < n_row; r++) out->keys[r].prob_without = exp(capped(&q, out->keys[r].without) - mx) / z;
    }
    out->active = q.active, out->act = q.act;
    q.active = NULL, q.act = NULL;
    ct_qk_free(&q);
    if (rc) ct_qk_row_free(out);
    return rc;
}
