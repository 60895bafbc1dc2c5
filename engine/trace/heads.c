// heads.c - head-resolved edges (see heads.h).
#include "trace/heads.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    ct_replacement *rm;
    const ct_model *m;
    const ct_config *c;
    const ct_transcoders *tc;
    const ct_clean_run *cr;
    const ct_frozen *fz;
    const ct_graph *g;
    int L, T, D, H, KV, hd;
    float *tile;        // (tile_n,) for ct_mat_matmul
    size_t tile_n;
    float *a, *b;       // (D,) scratch
} hctx;

// out (n,) = the linear part of a frozen norm with denominator d and gain w (NULL: none) applied
// to x (n,), or its adjoint: RMS x w / d (its own adjoint); LayerNorm (x - mean x) w / d, adjoint
// h - mean h with h = x w / d. out may be x.
static void norm_lin(const ct_config *c, float *out, const float *x, float d, const float *w, int n, int adjoint) {
    if (c->norm == CT_NORM_RMS) {
        for (int i = 0; i < n; i++) out[i] = x[i] * ((w ? w[i] + c->norm_gain_offset : 1.0f) / d);
        return;
    }
    double mean = 0;
    if (!adjoint) {
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++) out[i] = (float)((x[i] - mean) / d) * (w ? w[i] : 1.0f);
    } else {
        for (int i = 0; i < n; i++) mean += (out[i] = x[i] * (w ? w[i] : 1.0f) / d);
        mean /= n;
        for (int i = 0; i < n; i++) out[i] = (float)(out[i] - mean);
    }
}

// The MLP block of layer j at position p as the closed-head model sees it: a skip connection read
// at the transcoders' input hook and written at their output hook (Gemma: then the frozen post-
// feedforward norm when that hook is the raw output). x += that of x (forward), or g += its
// adjoint of g. Nothing without a skip.
static void mlp_skip(hctx *h, int j, int p, float *x, int adjoint) {
    const ct_tc_layer *tl = &h->tc->layers[j];
    const ct_layer *w = &h->m->layers[j];
    if (!tl->W_skip) return;
    int D = h->D, post = h->rm->out_raw && h->c->post_norms;
    float d2 = h->fz->ln2_scale[j][p], dp = post ? h->fz->ln2_post_scale[j][p] : 1.0f;
    const float *g2 = h->rm->input == CT_TC_IN_MLP_IN ? w->ln2_w : NULL;
    float *u = h->a, *s = h->b;
    // W (D, D) row-major; y = x W^T (XWT: y_i = sum_k W[i][k] x_k) or y = x W (XW: y_i = sum_k W[k][i] x_k)
    int xw = tl->skip_mode == CT_SKIP_XW;
    if (!adjoint) {
        if (h->rm->input == CT_TC_IN_RESID_MID) memcpy(u, x, sizeof(float) * D);
        else norm_lin(h->c, u, x, d2, g2, D, 0);
    } else {
        if (post) norm_lin(h->c, u, x, dp, w->post_ff_w, D, 1);
        else memcpy(u, x, sizeof(float) * D);
    }
    // s = u through the skip (forward) or its transpose (adjoint)
    int tr = xw ^ adjoint;   // 1: s_i = sum_k W[k][i] u_k
    for (int i = 0; i < D; i++) {
        double acc = 0;
        for (int k = 0; k < D; k++) acc += (double)(tr ? tl->W_skip[(size_t)k * D + i] : tl->W_skip[(size_t)i * D + k]) * u[k];
        s[i] = (float)acc;
    }
    if (!adjoint) {
        if (post) norm_lin(h->c, s, s, dp, w->post_ff_w, D, 0);
    } else if (h->rm->input != CT_TC_IN_RESID_MID) {
        norm_lin(h->c, s, s, d2, g2, D, 1);
    }
    for (int i = 0; i < D; i++) x[i] += s[i];
}

// out (D,) = what source node s writes into the residual stream at layer j's MLP output (after
// Gemma's frozen post-feedforward norm when the output hook is the raw output): a feature's decoder
// row times its activation, an error node's vector. 0: nothing written there.
static ct_status source_write(hctx *h, const ct_node_info *s, float act, int j, float *out, int *wrote, ct_err *err) {
    int D = h->D;
    *wrote = 0;
    if (s->kind == CT_NODE_FEATURE) {
        const ct_tc_layer *tl = &h->tc->layers[s->layer];
        if (j < s->layer || j - s->layer >= tl->n_out) return CT_OK;
        ct_status rc = ct_tc_decoder_row(h->tc, s->layer, s->feature, j - s->layer, out, err);
        if (rc) return rc;
        for (int i = 0; i < D; i++) out[i] *= act;
    } else if (s->kind == CT_NODE_ERROR && j == s->layer) {
        memcpy(out, h->cr->err + ((size_t)j * h->T + s->pos) * D, sizeof(float) * D);
    } else {
        return CT_OK;
    }
    if (h->rm->out_raw && h->c->post_norms)
        norm_lin(h->c, out, out, h->fz->ln2_post_scale[j][s->pos], h->m->layers[j].post_ff_w, D, 0);
    *wrote = 1;
    return CT_OK;
}

// The target's read: its layer R (a feature's; L for a logit, read after the last layer), position
// and direction r (D,) in the residual stream there (a feature: its encoder row back through the
// frozen pre-MLP norm to hook_resid_mid; a logit: the demeaned unembedding row back through the
// final norm).
static ct_status target_read(hctx *h, int64_t target, int *R, int *pos, float *r, ct_err *err) {
    const ct_graph *g = h->g;
    ct_node_info t = ct_graph_node(g, target);
    int D = h->D;
    if (t.kind == CT_NODE_FEATURE) {
        ct_status rc = ct_tc_encoder_row(h->tc, t.layer, t.feature, r, err);
        if (rc) return rc;
        if (h->rm->input != CT_TC_IN_RESID_MID)
            norm_lin(h->c, r, r, h->fz->ln2_scale[t.layer][t.pos],
                     h->rm->input == CT_TC_IN_MLP_IN ? h->m->layers[t.layer].ln2_w : NULL, D, 1);
        *R = t.layer, *pos = t.pos;
        return CT_OK;
    }
    int64_t k = target - ct_graph_logit_node(g, 0), V = h->c->vocab_size;
    if (g->logits[k].vocab_id < 0 || g->logits[k].vocab_id >= V)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "edge heads: logit target %lld is a custom target (%s); its direction is "
                       "not kept in the graph", (long long)k, g->logits[k].label ? g->logits[k].label : "no label");
    double *mean = calloc((size_t)D, sizeof(double));
    if (!mean) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int64_t v = 0; v < V; v++) {   // u = W_U[v] - mean_v W_U[v]
        ct_mat_row(&h->m->lm_head, v, r);
        for (int i = 0; i < D; i++) mean[i] += r[i];
    }
    ct_mat_row(&h->m->lm_head, g->logits[k].vocab_id, r);
    for (int i = 0; i < D; i++) r[i] = (float)(r[i] - mean[i] / (double)V);
    free(mean);
    norm_lin(h->c, r, r, h->fz->lnf_scale[h->T - 1], h->m->lnf_w, D, 1);
    *R = h->L, *pos = h->T - 1;
    return CT_OK;
}

// The target's side with every head closed, from its read direction r (D,) at layer R, position
// p: y (L, H*hd), zero from layer R + 1 on, each head's W_O^T P1^T g at its layer; g_post (L, D)
// the gradient at each layer's MLP output (below R; zero above); g_pre (D,) the gradient entering
// layer 0. r is used up.
static void target_side(hctx *h, int R, int p, float *r, float *y, float *g_post, float *g_pre) {
    int D = h->D, Hd = h->H * h->hd;
    memset(y, 0, sizeof(float) * (size_t)h->L * Hd);
    memset(g_post, 0, sizeof(float) * (size_t)h->L * D);
    float *g = r, *gp = malloc(sizeof(float) * (size_t)D);
    for (int m = (R < h->L ? R : h->L - 1); m >= 0; m--) {
        const ct_layer *w = &h->m->layers[m];
        if (m < R) {   // the MLP of layer m sits between the read and its attention
            memcpy(g_post + (size_t)m * D, g, sizeof(float) * D);
            mlp_skip(h, m, p, g, 1);
        }
        if (h->c->post_norms) norm_lin(h->c, gp, g, h->fz->ln1_post_scale[m][p], w->post_attn_w, D, 1);
        else memcpy(gp, g, sizeof(float) * D);
        ct_mat wot = ct_mat_t(&w->wo);   // (H*hd, D): y = gp W_O
        ct_mat_matmul(y + (size_t)m * Hd, gp, &wot, NULL, 1, h->tile, h->tile_n);
    }
    memcpy(g_pre, g, sizeof(float) * D);
    free(gp);
}

// The source's side with every head closed: v (L, KV*hd), zero up to its first write: each
// layer's values W_V N1 x of what the source put into the residual stream at its position.
static ct_status source_side(hctx *h, int64_t source, float *v, ct_err *err) {
    int D = h->D, KVd = h->KV * h->hd;
    ct_node_info s = ct_graph_node(h->g, source);
    float act = s.kind == CT_NODE_FEATURE ? h->g->activation[s.active] : 1.0f;
    float *x = calloc((size_t)D, sizeof(float)), *xn = malloc(sizeof(float) * (size_t)D), *wr = malloc(sizeof(float) * (size_t)D);
    if (!x || !xn || !wr) {
        free(x), free(xn), free(wr);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    int live = s.kind == CT_NODE_TOKEN;
    if (live) memcpy(x, h->cr->embed + (size_t)s.pos * D, sizeof(float) * D);
    memset(v, 0, sizeof(float) * (size_t)h->L * KVd);
    ct_status rc = CT_OK;
    for (int m = 0; m < h->L && !rc; m++) {
        const ct_layer *w = &h->m->layers[m];
        if (live) {
            norm_lin(h->c, xn, x, h->fz->ln1_scale[m][s.pos], w->ln1_w, D, 0);
            ct_mat_matmul(v + (size_t)m * KVd, xn, &w->wv, NULL, 1, h->tile, h->tile_n);
            mlp_skip(h, m, s.pos, x, 0);
        }
        int wrote;
        if ((rc = source_write(h, &s, act, m, wr, &wrote, err))) break;
        if (wrote) {
            for (int i = 0; i < D; i++) x[i] += wr[i];
            live = 1;
        }
    }
    free(x), free(xn), free(wr);
    return rc;
}

void ct_edge_heads_free(ct_edge_heads *e) {
    free(e->heads);
    memset(e, 0, sizeof *e);
}

ct_status ct_edge_heads_run(ct_edge_heads *out, ct_replacement *rm, const ct_graph *g, int64_t target, int64_t source,
                            ct_err *err) {
    memset(out, 0, sizeof *out);
    const ct_model *m = rm->m;
    const ct_config *c = &m->cfg;
    int L = c->n_layers, D = c->d_model, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    int64_t N = g->n_nodes, S = g->n_selected, first_logit = ct_graph_logit_node(g, 0);
    if (g->n_layers != L || g->d_model != D)
        return ct_fail(err, CT_STATUS_BAD_ARG, "edge heads: the graph has %d layers of width %d; the model %d of %d",
                       g->n_layers, g->d_model, L, D);
    if (target < 0 || target >= N || (target >= S && target < first_logit))
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "edge heads: target node %lld; expected a feature (0..%lld) or a logit "
                       "(%lld..%lld)", (long long)target, (long long)S - 1, (long long)first_logit, (long long)N - 1);
    if (source < 0 || source >= first_logit)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "edge heads: source node %lld; expected a feature, error or token node "
                       "(0..%lld)", (long long)source, (long long)first_logit - 1);
    if (g->node_mask && (!g->node_mask[source] || !g->node_mask[target] || ct_graph_weight(g, target, source) == 0.0f))
        return ct_fail(err, CT_STATUS_NOT_FOUND, "edge heads: the edge from node %lld to node %lld is not kept in this pruned "
                       "graph", (long long)source, (long long)target);
    ct_clean_run *cr;
    ct_status rc = ct_replacement_clean(rm, g->tokens, g->n_pos, &cr, err);
    if (rc) return rc;
    hctx h = {rm, m, c, rm->tc, cr, &cr->frozen.fz, g, L, g->n_pos, D, H, KV, hd, NULL, 0, NULL, NULL};
    size_t tile_n = ct_mat_scratch_floats(&m->layers[0].wv);
    for (int l = 0; l < L; l++) {
        size_t a = ct_mat_scratch_floats(&m->layers[l].wv), b = ct_mat_scratch_floats(&m->layers[l].wo);
        tile_n = a > tile_n ? a : tile_n, tile_n = b > tile_n ? b : tile_n;
    }
    h.tile_n = tile_n;
    h.tile = tile_n ? malloc(sizeof(float) * tile_n) : NULL;
    h.a = malloc(sizeof(float) * (size_t)D), h.b = malloc(sizeof(float) * (size_t)D);
    float *r = malloc(sizeof(float) * (size_t)D), *y = malloc(sizeof(float) * (size_t)L * H * hd);
    float *g_post = malloc(sizeof(float) * (size_t)L * D), *g_pre = malloc(sizeof(float) * (size_t)D);
    float *v = malloc(sizeof(float) * (size_t)L * KV * hd), *wr = malloc(sizeof(float) * (size_t)D);
    out->heads = calloc((size_t)L * H, sizeof(double));
    if ((tile_n && !h.tile) || !h.a || !h.b || !r || !y || !g_post || !g_pre || !v || !wr || !out->heads)
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    int R = 0, pt = 0;
    if (!rc) rc = target_read(&h, target, &R, &pt, r, err);
    if (!rc) {
        target_side(&h, R, pt, r, y, g_post, g_pre);
        rc = source_side(&h, source, v, err);
    }
    if (!rc) {
        ct_node_info s = ct_graph_node(g, source);
        out->n_layers = L, out->n_heads = H;
        out->edge = ct_graph_weight(g, target, source);
        double res = 0;
        if (s.pos == pt) {   // the closed-head gradient at each of the source's writes below the read
            float act = s.kind == CT_NODE_FEATURE ? g->activation[s.active] : 1.0f;
            if (s.kind == CT_NODE_TOKEN)
                for (int i = 0; i < D; i++) res += (double)g_pre[i] * cr->embed[(size_t)s.pos * D + i];
            for (int j = 0; j < R && j < L && !rc; j++) {
                int wrote;
                rc = source_write(&h, &s, act, j, wr, &wrote, err);
                for (int i = 0; wrote && !rc && i < D; i++) res += (double)g_post[(size_t)j * D + i] * wr[i];
            }
        }
        out->residual = res;
        double sum = res;
        for (int l = 0; l <= R && l < L; l++) {
            const float *pat = cr->frozen.fz.pattern[l];   // (H, T, T)
            for (int hh = 0; hh < H; hh++) {
                const float *yh = y + ((size_t)l * H + hh) * hd, *vh = v + ((size_t)l * KV + hh / (H / KV)) * hd;
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)yh[i] * vh[i];
                double a = pat[((size_t)hh * h.T + pt) * h.T + s.pos];
                out->heads[(size_t)l * H + hh] = a * d;
                sum += a * d;
            }
        }
        out->multi = out->edge - sum;
    }
    free(h.tile), free(h.a), free(h.b), free(r), free(y), free(g_post), free(g_pre), free(v), free(wr);
    if (rc) ct_edge_heads_free(out);
    return rc;
}
