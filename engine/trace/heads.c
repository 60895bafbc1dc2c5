// heads.c - head-resolved edges (see heads.h).
#include "trace/heads.h"

#include <math.h>
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
    float *a, *b, *gp; // (D,) scratch: mlp_skip's (a, b), target_side's (gp)
    double *mean;       // (D,) the unembedding's mean row, made for the first logit target read
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

// r (D,) = the unembedding row of vocab id v less the mean row: the demeaned logit's direction.
static ct_status demeaned_row(hctx *h, int64_t v, float *r, ct_err *err) {
    int D = h->D;
    int64_t V = h->c->vocab_size;
    if (!h->mean) {
        if (!(h->mean = calloc((size_t)D, sizeof(double)))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        for (int64_t w = 0; w < V; w++) {
            ct_mat_row(&h->m->lm_head, w, r);
            for (int i = 0; i < D; i++) h->mean[i] += r[i];
        }
    }
    ct_mat_row(&h->m->lm_head, v, r);
    for (int i = 0; i < D; i++) r[i] = (float)(r[i] - h->mean[i] / (double)V);
    return CT_OK;
}

// The target's read: its layer R (a feature's; L for a logit, read after the last layer), position
// and direction r (D,) in the residual stream there (a feature: its encoder row back through the
// frozen pre-MLP norm to hook_resid_mid; a logit: the demeaned unembedding row (a custom target:
// its direction as given) back through the final norm).
static ct_status target_read(hctx *h, int64_t target, int *R, int *pos, float *r, ct_err *err) {
    const ct_graph *g = h->g;
    ct_node_info t = ct_graph_node(g, target);
    int D = h->D;
    ct_status rc;
    if (t.kind == CT_NODE_FEATURE) {
        rc = ct_tc_encoder_row(h->tc, t.layer, t.feature, r, err);
        if (rc) return rc;
        if (h->rm->input != CT_TC_IN_RESID_MID)
            norm_lin(h->c, r, r, h->fz->ln2_scale[t.layer][t.pos],
                     h->rm->input == CT_TC_IN_MLP_IN ? h->m->layers[t.layer].ln2_w : NULL, D, 1);
        *R = t.layer, *pos = t.pos;
        return CT_OK;
    }
    int64_t k = target - ct_graph_logit_node(g, 0), V = h->c->vocab_size;
    if (g->logits[k].vec) {   // a custom target: its direction as given
        memcpy(r, g->logits[k].vec, sizeof(float) * D);
    } else if (g->logits[k].vocab_id < 0 || g->logits[k].vocab_id >= V) {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "edge heads: logit target %lld is a custom target (%s) whose direction "
                       "the graph does not keep (a graph read from a file)", (long long)k,
                       g->logits[k].label ? g->logits[k].label : "no label");
    } else if ((rc = demeaned_row(h, g->logits[k].vocab_id, r, err))) {
        return rc;
    }
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
    float *g = r, *gp = h->gp;
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

// The work of one target: its read (layer R, position pt), its closed-head side (y, g_post, g_pre).
typedef struct {
    int R, pt;
    float *r, *y, *g_post, *g_pre, *wr;   // (D,) (L, H*hd) (L, D) (D,) (D,)
} tside;

static void ctx_close(hctx *h, tside *t) {
    free(h->tile), free(h->a), free(h->b), free(h->gp), free(h->mean);
    free(t->r), free(t->y), free(t->g_post), free(t->g_pre), free(t->wr);
}

// h and t for graph g of rm (checked against rm's model), on g's clean run.
static ct_status ctx_open(hctx *h, tside *t, ct_replacement *rm, const ct_graph *g, ct_err *err) {
    const ct_model *m = rm->m;
    const ct_config *c = &m->cfg;
    int L = c->n_layers, D = c->d_model;
    memset(h, 0, sizeof *h), memset(t, 0, sizeof *t);
    if (g->n_layers != L || g->d_model != D || (g->n_heads > 0 && g->n_heads != c->n_heads))
        return ct_fail(err, CT_STATUS_BAD_ARG, "edge heads: the graph has %d layers of width %d and %d heads; the model %d of "
                       "%d and %d (a graph of another model)", g->n_layers, g->d_model, g->n_heads, L, D, c->n_heads);
    ct_clean_run *cr;
    ct_status rc = ct_replacement_clean(rm, g->tokens, g->n_pos, &cr, err);
    if (rc) return rc;
    *h = (hctx){rm, m, c, rm->tc, cr, &cr->frozen.fz, g, L, g->n_pos, D, c->n_heads, c->n_kv_heads, c->head_dim, NULL, 0,
                NULL, NULL, NULL, NULL};
    for (int l = 0; l < L; l++) {
        size_t a = ct_mat_scratch_floats(&m->layers[l].wv), b = ct_mat_scratch_floats(&m->layers[l].wo);
        h->tile_n = a > h->tile_n ? a : h->tile_n, h->tile_n = b > h->tile_n ? b : h->tile_n;
    }
    h->tile = h->tile_n ? malloc(sizeof(float) * h->tile_n) : NULL;
    h->a = malloc(sizeof(float) * (size_t)D), h->b = malloc(sizeof(float) * (size_t)D), h->gp = malloc(sizeof(float) * (size_t)D);
    t->r = malloc(sizeof(float) * (size_t)D), t->y = malloc(sizeof(float) * (size_t)L * h->H * h->hd);
    t->g_post = malloc(sizeof(float) * (size_t)L * D), t->g_pre = malloc(sizeof(float) * (size_t)D);
    t->wr = malloc(sizeof(float) * (size_t)D);
    if ((h->tile_n && !h->tile) || !h->a || !h->b || !h->gp || !t->r || !t->y || !t->g_post || !t->g_pre || !t->wr) {
        ctx_close(h, t);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    return CT_OK;
}

static ct_status target_open(hctx *h, tside *t, int64_t target, ct_err *err) {
    ct_status rc = target_read(h, target, &t->R, &t->pt, t->r, err);
    if (!rc) target_side(h, t->R, t->pt, t->r, t->y, t->g_post, t->g_pre);
    return rc;
}

// The parts of the edge from source (its side v (L, KV*hd)) to t's target: *residual, heads (L, H).
static ct_status split_edge(hctx *h, tside *t, int64_t source, const float *v, double *residual, double *heads,
                            ct_err *err) {
    int D = h->D, H = h->H, KV = h->KV, hd = h->hd;
    ct_node_info s = ct_graph_node(h->g, source);
    double res = 0;
    if (s.pos == t->pt) {   // the closed-head gradient at each of the source's writes below the read
        float act = s.kind == CT_NODE_FEATURE ? h->g->activation[s.active] : 1.0f;
        if (s.kind == CT_NODE_TOKEN)
            for (int i = 0; i < D; i++) res += (double)t->g_pre[i] * h->cr->embed[(size_t)s.pos * D + i];
        for (int j = 0; j < t->R && j < h->L; j++) {
            int wrote;
            ct_status rc = source_write(h, &s, act, j, t->wr, &wrote, err);
            if (rc) return rc;
            for (int i = 0; wrote && i < D; i++) res += (double)t->g_post[(size_t)j * D + i] * t->wr[i];
        }
    }
    *residual = res;
    memset(heads, 0, sizeof(double) * (size_t)h->L * H);
    for (int l = 0; l <= t->R && l < h->L; l++) {
        const float *pat = h->fz->pattern[l];   // (H, T, T)
        for (int hh = 0; hh < H; hh++) {
            const float *yh = t->y + ((size_t)l * H + hh) * hd, *vh = v + ((size_t)l * KV + hh / (H / KV)) * hd;
            double d = 0;
            for (int i = 0; i < hd; i++) d += (double)yh[i] * vh[i];
            heads[(size_t)l * H + hh] = pat[((size_t)hh * h->T + t->pt) * h->T + s.pos] * d;
        }
    }
    return CT_OK;
}

static ct_status check_ends(const ct_graph *g, int64_t target, int64_t source, ct_err *err) {
    int64_t N = g->n_nodes, S = g->n_selected, first_logit = ct_graph_logit_node(g, 0);
    if (target < 0 || target >= N || (target >= S && target < first_logit))
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "edge heads: target node %lld; expected a feature (0..%lld) or a logit "
                       "(%lld..%lld)", (long long)target, (long long)S - 1, (long long)first_logit, (long long)N - 1);
    if (source < 0 || source >= first_logit)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "edge heads: source node %lld; expected a feature, error or token node "
                       "(0..%lld)", (long long)source, (long long)first_logit - 1);
    if (g->node_mask && (!g->node_mask[source] || !g->node_mask[target] || ct_graph_weight(g, target, source) == 0.0f))
        return ct_fail(err, CT_STATUS_NOT_FOUND, "edge heads: the edge from node %lld to node %lld is not kept in this pruned "
                       "graph", (long long)source, (long long)target);
    return CT_OK;
}

ct_status ct_edge_heads_run(ct_edge_heads *out, ct_replacement *rm, const ct_graph *g, int64_t target, int64_t source,
                            ct_err *err) {
    memset(out, 0, sizeof *out);
    hctx h;
    tside t;
    ct_status rc = check_ends(g, target, source, err);
    if (!rc) rc = ctx_open(&h, &t, rm, g, err);
    if (rc) return rc;
    float *v = malloc(sizeof(float) * (size_t)h.L * h.KV * h.hd);
    out->heads = malloc(sizeof(double) * (size_t)h.L * h.H);
    if (!v || !out->heads) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) rc = target_open(&h, &t, target, err);
    if (!rc) rc = source_side(&h, source, v, err);
    if (!rc) rc = split_edge(&h, &t, source, v, &out->residual, out->heads, err);
    if (!rc) {
        out->n_layers = h.L, out->n_heads = h.H;
        out->edge = ct_graph_weight(g, target, source);
        double sum = out->residual;
        for (int i = 0; i < h.L * h.H; i++) sum += out->heads[i];
        out->multi = out->edge - sum;
    }
    free(v);
    ctx_close(&h, &t);
    if (rc) ct_edge_heads_free(out);
    return rc;
}

ct_status ct_graph_record_heads(ct_graph *g, ct_replacement *rm, int top, ct_err *err) {
    if (!g->node_mask)
        return ct_fail(err, CT_STATUS_BAD_ARG, "edge heads: a full graph has an edge for every pair; record the heads of a "
                       "pruned graph's edges");
    if (top < 1 || top > CT_EDGE_HEADS_MAX)
        return ct_fail(err, CT_STATUS_BAD_ARG, "edge heads: %d heads an edge asked for; expected 1..%d", top, CT_EDGE_HEADS_MAX);
    hctx h;
    tside t;
    ct_status rc = ctx_open(&h, &t, rm, g, err);
    if (rc) return rc;
    int64_t N = g->n_nodes, n_rows = ct_graph_n_rows(g), first_logit = ct_graph_logit_node(g, 0), n_src = 0, n_edges = 0;
    int LH = h.L * h.H;
    size_t vn = (size_t)h.L * h.KV * h.hd;
    // the sources of kept edges, each side computed once: slot[c] its place in V, or -1
    int64_t *slot = malloc(sizeof(int64_t) * (size_t)N);
    double *heads = malloc(sizeof(double) * (size_t)LH);
    int *order = malloc(sizeof(int) * (size_t)LH);
    if (!slot || !heads || !order) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int64_t c = 0; !rc && c < N; c++) {
        slot[c] = -1;
        for (int64_t r = 0; r < n_rows && c < first_logit; r++)
            if (g->adj[(size_t)r * N + c] != 0.0f) {
                slot[c] = n_src++;
                break;
            }
    }
    for (int64_t r = 0; !rc && r < n_rows; r++)
        for (int64_t c = 0; c < first_logit; c++) n_edges += g->adj[(size_t)r * N + c] != 0.0f;
    float *V = rc ? NULL : malloc(sizeof(float) * vn * (size_t)(n_src ? n_src : 1));
    ct_head_edge *rec = rc ? NULL : calloc((size_t)(n_edges ? n_edges : 1), sizeof *rec);
    if (!rc && (!V || !rec))
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for the heads of %lld edges from %lld sources",
                     (long long)n_edges, (long long)n_src);
    for (int64_t c = 0; !rc && c < N; c++)
        if (slot[c] >= 0) rc = source_side(&h, c, V + vn * (size_t)slot[c], err);
    int64_t k = 0;
    for (int64_t r = 0; !rc && r < n_rows; r++) {
        const float *row = g->adj + (size_t)r * N;
        int64_t target = ct_graph_row_node(g, r);
        int any = 0;
        for (int64_t c = 0; c < first_logit && !any; c++) any = row[c] != 0.0f;
        if (!any) continue;
        if ((rc = target_open(&h, &t, target, err))) break;
        for (int64_t c = 0; !rc && c < first_logit; c++) {
            if (row[c] == 0.0f) continue;
            double res;
            if ((rc = split_edge(&h, &t, c, V + vn * (size_t)slot[c], &res, heads, err))) break;
            ct_head_edge *e = &rec[k++];
            double sum = res;
            int n = 0;
            for (int i = 0; i < LH; i++) {   // the top heads by |part| (ties: lower layer, then head)
                sum += heads[i];
                if (heads[i] == 0) continue;
                int j = n < top ? n++ : top;
                for (; j > 0 && fabs(heads[order[j - 1]]) < fabs(heads[i]); j--)
                    if (j < top) order[j] = order[j - 1];
                if (j < top) order[j] = i;
            }
            *e = (ct_head_edge){target, c, (float)res, (float)(row[c] - sum), n, {0}, {0}, {0}};
            for (int i = 0; i < n; i++)
                e->layer[i] = order[i] / h.H, e->head[i] = order[i] % h.H, e->value[i] = (float)heads[order[i]];
        }
    }
    free(slot), free(heads), free(order), free(V);
    ctx_close(&h, &t);
    if (rc) {
        free(rec);
        return rc;
    }
    free(g->head_edges);
    g->head_edges = rec, g->n_head_edges = k;
    return CT_OK;
}
