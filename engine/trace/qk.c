// qk.c - a head's pre-softmax score split into terms for pairs of nodes (see qk.h).
#include "trace/qk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trace/attribution.h"

void ct_qk_free(ct_qk *q) {
    free(q->active), free(q->act), free(q->q), free(q->k), free(q->q0), free(q->k0), free(q->q_clean), free(q->k_clean);
    memset(q, 0, sizeof *q);
}

// dirs (hd, D) = the rows of W (the query or key projection) of head h, rotated as the pass rotates
// that head at position pos: component c of the head's vector (before its bias) is dirs[c] . the
// attention's input.
static void head_directions(const ct_model *m, const ct_mat *W, int layer, int h, int pos, float *dirs, float *v) {
    int hd = m->cfg.head_dim, D = m->cfg.d_model;
    for (int c = 0; c < hd; c++) ct_mat_row(W, (int64_t)h * hd + c, dirs + (size_t)c * D);
    for (int d = 0; d < D; d++) {   // RoPE is linear: rotate each column
        for (int c = 0; c < hd; c++) v[c] = dirs[(size_t)c * D + d];
        ct_model_rope(m, layer, pos, v);
        for (int c = 0; c < hd; c++) dirs[(size_t)c * D + d] = v[c];
    }
}

// One side: every node's part (hd, n_cols) of the head's vector at pos, read at the attention input.
static ct_status side(ct_replacement *rm, const int *tokens, int T, int layer, const ct_mat *W, int h, int pos, ct_qk *out,
                      float **parts, ct_err *err) {
    const ct_model *m = rm->m;
    int hd = m->cfg.head_dim, D = m->cfg.d_model;
    float *dirs = malloc(sizeof(float) * (size_t)hd * D), *v = malloc(sizeof(float) * (size_t)hd);
    int *at = malloc(sizeof(int) * (size_t)hd);
    ct_status rc = dirs && v && at ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_resid_rows rows = {0};
    if (!rc) {
        head_directions(m, W, layer, h, pos, dirs, v);
        for (int c = 0; c < hd; c++) at[c] = pos;
        rc = ct_attribute_resid(rm, tokens, T, layer, 1, at, dirs, hd, &rows, err);
    }
    if (!rc) {
        *parts = rows.rows, rows.rows = NULL;
        if (!out->active) {   // the columns' features (both sides list the same)
            out->n_active = rows.n_active, out->n_cols = rows.n_cols;
            out->active = rows.active, out->act = rows.act;
            rows.active = NULL, rows.act = NULL;
        }
    }
    ct_resid_rows_free(&rows);
    free(dirs), free(v), free(at);
    return rc;
}

ct_status ct_qk_run(ct_qk *out, ct_replacement *rm, const int *tokens, int T, int layer, int head, int query, int key,
                    ct_err *err) {
    memset(out, 0, sizeof *out);
    ct_model *m = rm->m;
    const ct_config *c = &m->cfg;
    int L = c->n_layers, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    if (c->qk_norm)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "qk: %s normalises queries and keys per head (q/k norms); their split is "
                       "not built yet", c->architecture);
    if (layer < 0 || layer >= L || head < 0 || head >= H)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "qk: layer %d head %d; the model has layers 0..%d, heads 0..%d", layer,
                       head, L - 1, H - 1);
    if (query < 0 || query >= T || key < 0 || key > query)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "qk: query position %d, key position %d; expected 0 <= key <= query < %d",
                       query, key, T);
    if (m->layers[layer].sliding && c->sliding_window > 0 && query - key >= c->sliding_window)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "qk: key %d is outside layer %d's sliding window of %d before query %d",
                       key, layer, c->sliding_window, query);
    int kvh = head / (H / KV);
    out->layer = layer, out->head = head, out->query = query, out->key = key, out->hd = hd;
    out->scale = c->attn_scale;
    ct_status rc = side(rm, tokens, T, layer, &m->layers[layer].wq, head, query, out, &out->q, err);
    if (!rc) rc = side(rm, tokens, T, layer, &m->layers[layer].wk, kvh, key, out, &out->k, err);
    // the model's query and key, from a pass that keeps them
    ct_hook_id ids[2] = {{CT_HOOK_Q, layer}, {CT_HOOK_K, layer}};
    ct_hook_cache hc = {0};
    if (!rc) rc = ct_hook_cache_init(&hc, ids, 2, err);
    if (!rc) rc = ct_model_forward(m, tokens, T, NULL, &hc, NULL, 0, err);
    out->q_clean = malloc(sizeof(float) * (size_t)hd), out->k_clean = malloc(sizeof(float) * (size_t)hd);
    out->q0 = malloc(sizeof(float) * (size_t)hd), out->k0 = malloc(sizeof(float) * (size_t)hd);
    if (!rc && (!out->q_clean || !out->k_clean || !out->q0 || !out->k0)) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        memcpy(out->q_clean, ct_tensor_data(hc.values[0]) + ((size_t)query * H + head) * hd, sizeof(float) * (size_t)hd);
        memcpy(out->k_clean, ct_tensor_data(hc.values[1]) + ((size_t)key * KV + kvh) * hd, sizeof(float) * (size_t)hd);
        double s = 0, total = 0;
        for (int j = 0; j < hd; j++) {   // the constant parts: what the nodes leave of the clean vectors
            double sq = 0, sk = 0;
            for (int64_t i = 0; i < out->n_cols; i++) {
                sq += out->q[(size_t)j * out->n_cols + i];
                sk += out->k[(size_t)j * out->n_cols + i];
            }
            out->q0[j] = (float)(out->q_clean[j] - sq);
            out->k0[j] = (float)(out->k_clean[j] - sk);
            s += (double)out->q_clean[j] * out->k_clean[j];
            total += (sq + out->q0[j]) * (sk + out->k0[j]);
        }
        out->score = out->scale * s;
        out->total = out->scale * total;
    }
    ct_hook_cache_free(&hc);
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

// The columns whose part (hd, n_cols) is not all zero, then the constant (n_cols): idx (n,), and their
// parts packed as rows: packed (n, hd).
static int64_t live_nodes(const float *parts, const float *zero, int hd, int64_t n_cols, int64_t *idx, float *packed) {
    int64_t n = 0;
    for (int64_t i = 0; i <= n_cols; i++) {
        int live = 0;
        for (int c = 0; c < hd && !live; c++) live = (i < n_cols ? parts[(size_t)c * n_cols + i] : zero[c]) != 0.0f;
        if (!live) continue;
        for (int c = 0; c < hd; c++) packed[(size_t)n * hd + c] = i < n_cols ? parts[(size_t)c * n_cols + i] : zero[c];
        idx[n++] = i;
    }
    return n;
}

#define TOP_BLOCK 256   // query-side nodes a product at a time

ct_status ct_qk_top(const ct_qk *q, int n, ct_qk_pair *pairs, int *n_out, ct_err *err) {
    *n_out = 0;
    if (n < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "qk: %d pairs asked for; expected at least 1", n);
    int hd = q->hd;
    int64_t N = q->n_cols + 1;
    int64_t *iq = malloc(sizeof(int64_t) * (size_t)N), *ik = malloc(sizeof(int64_t) * (size_t)N);
    float *Q = malloc(sizeof(float) * (size_t)N * hd), *K = malloc(sizeof(float) * (size_t)N * hd);
    float *C = malloc(sizeof(float) * (size_t)TOP_BLOCK * (size_t)N), *A = malloc(sizeof(float) * (size_t)TOP_BLOCK * (size_t)N);
    int64_t *pick = malloc(sizeof(int64_t) * (size_t)n);
    ct_qk_pair *best = malloc(sizeof *best * (size_t)(2 * n));
    if (!iq || !ik || !Q || !K || !C || !A || !pick || !best) {
        free(iq), free(ik), free(Q), free(K), free(C), free(A), free(pick), free(best);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for the pairs of %lld nodes", (long long)N);
    }
    int64_t nq = live_nodes(q->q, q->q0, hd, q->n_cols, iq, Q), nk = live_nodes(q->k, q->k0, hd, q->n_cols, ik, K);
    int kept = 0;
    for (int64_t i0 = 0; i0 < nq && nk > 0; i0 += TOP_BLOCK) {
        int nb = nq - i0 < TOP_BLOCK ? (int)(nq - i0) : TOP_BLOCK;
        // C (nb, nk) = scale Q[i0..] (nb, hd) @ K (nk, hd)^T
        ct_sgemm(0, 1, nb, (int)nk, hd, (float)q->scale, Q + (size_t)i0 * hd, hd, K, hd, 0.0f, C, (int)nk);
        for (size_t e = 0; e < (size_t)nb * (size_t)nk; e++) A[e] = fabsf(C[e]);
        int64_t got = ct_topk(pick, A, (int64_t)nb * nk, n);
        for (int64_t t = 0; t < got; t++)
            best[kept++] = (ct_qk_pair){iq[i0 + pick[t] / nk], ik[pick[t] % nk], C[pick[t]]};
        qsort(best, (size_t)kept, sizeof *best, cmp_pair);
        if (kept > n) kept = n;
    }
    memcpy(pairs, best, sizeof *best * (size_t)kept);
    *n_out = kept;
    free(iq), free(ik), free(Q), free(K), free(C), free(A), free(pick), free(best);
    return CT_OK;
}
