// attribution.c - attribution graphs of the local replacement model (see attribution.h).
//
// Columns of a row follow circuit-tracer: every active feature (index into the sorted active
// list), then L*T error nodes, T token nodes, K logit nodes; a row is the direct effect of every
// column on one target. Rows are computed for the K logit targets first, then for feature
// targets, ranked by their estimated influence when the budget does not cover all of them, and
// kept in a row store (memory, or a file past the memory limit) until the graph takes the
// selected columns. The first n_const positions are constants (BOS; Gemma-3 instruction-tuned
// models: the chat prefix): no features, zero error vectors.
#include "trace/attribution.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace/replacement.h"
#include "trace/rowstore.h"

void ct_attr_opts_default(ct_attr_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_n_logits = 10;
    o->desired_logit_prob = 0.95;
    o->batch_size = 512;
    o->update_interval = 4;
}

typedef struct {
    ct_model *m;
    const ct_transcoders *tc;
    int L, T, D, H, KV, hd;
    ct_tc_input input;      // which value the transcoders read
    int out_raw;            // their output hook is the raw MLP output
    int n_const;            // leading positions held constant (no features, zero error vectors)
    // from the clean run (held by the replacement model until the graph is built)
    const ct_frozen *fz;    // frozen patterns and norm denominators
    const float *embed;     // (T, D) token embeddings as added
    const float *err_vec;   // (L, T, D) error vectors (zero at the constant positions)
    const float *logits;    // (V,) last position
    int64_t n_active;
    int32_t *active;        // (n_active, 3)
    float *act_val;         // (n_active,)
    int64_t *start;         // (L*T + 1) first active index of (layer, position)
    int64_t n_cols;         // n_active + (L+1)*T + K
    int K;
    // batch scratch, sized in ct_attribute
    float *G;               // (T, B, D) gradients, position-major
    float *A1, *A2;         // products along the way (see run_batch)
    float *S;               // (max features at one (layer, position), D) source vectors
    float *v;               // (D,)
    float *tile;            // (tile_n,) W_O and W_V converted a tile at a time (NULL when read in place)
    float *PA, *PC;         // (g_pack, max(D, H*hd)) live rows gathered for one product, and its result
    size_t tile_n;
    float *enc;             // (B, D) the encoder rows of a batch of feature targets
    float **enc_rows;       // (B,) pointers into enc
    int64_t *feats;         // (B,)
    int *first;             // (T + 1,) first live row at each position
    double flops;           // of the backward passes so far
    double gemm_s;          // seconds in their matrix products
    int64_t max_block;
} attr_ctx;

static void ctx_free(attr_ctx *a) {
    free(a->active); free(a->act_val); free(a->start);
    free(a->G); free(a->A1); free(a->A2); free(a->S); free(a->v); free(a->tile); free(a->PA); free(a->PC);
    free(a->first);
    free(a->enc); free(a->enc_rows); free(a->feats);
}

// ---------------------------------------------------------------------------------------------
// The clean run: frozen values, error vectors, active features

static ct_status take_clean_run(attr_ctx *a, ct_replacement *rm, const int *tokens, ct_err *err) {
    ct_clean_run *c;
    ct_status rc = ct_replacement_clean(rm, tokens, a->T, &c, err);
    if (rc) return rc;
    ct_scratch_free(&rm->m->scratch);   // no forward pass runs until the graph is built: its room goes to the rows
    a->fz = &c->frozen.fz;
    a->embed = c->embed;
    a->err_vec = c->err;
    a->logits = c->logits;
    // active features, sorted by (layer, position, index) as the clean run lists them (none at
    // the constant positions): a copy the graph takes over (the clean run keeps its own for
    // interventions)
    const ct_sparse_acts *acts = ct_clean_acts(rm, c, 0, err);
    if (!acts) return err->status;
    int64_t n = acts->n;
    a->n_active = n;
    a->active = malloc(sizeof(int32_t) * 3 * (size_t)(n + 1));
    a->act_val = malloc(sizeof(float) * (size_t)(n + 1));
    a->start = calloc((size_t)a->L * a->T + 1, sizeof(int64_t));
    if (!a->active || !a->act_val || !a->start) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for active features");
    memcpy(a->active, acts->idx, sizeof(int32_t) * 3 * (size_t)n);
    memcpy(a->act_val, acts->value, sizeof(float) * (size_t)n);
    // start[l * T + t]: the first active index of (layer, position)
    for (int64_t i = 0; i < n; i++) a->start[(int64_t)a->active[3 * i] * a->T + a->active[3 * i + 1] + 1]++;
    for (int64_t k = 0; k < (int64_t)a->L * a->T; k++) {
        if (a->start[k + 1] > a->max_block) a->max_block = a->start[k + 1];
        a->start[k + 1] += a->start[k];
    }
    return CT_OK;
}

// ---------------------------------------------------------------------------------------------
// Backward pass of one batch

// out (Tp, B, D) (+)= the transpose of a frozen norm's Jacobian applied to in (Tp, B, D):
// in * gain / d[t], centred over D for LayerNorm. w NULL: no gain (the normalised value). Only
// the rows live at each position (first, see run_batch; NULL: all) are read and written.
static void norm_back(const attr_ctx *a, float *out, const float *in, const float *d, const float *w, int Tp, int B,
                      const int *first, int add) {
    const ct_config *c = &a->m->cfg;
    int D = a->D;
    float off = c->norm == CT_NORM_RMS ? c->norm_gain_offset : 0.0f;
    for (int t = 0; t < Tp; t++) {
        float inv = 1.0f / d[t];
        for (int b = first ? first[t] : 0; b < B; b++) {
            const float *x = in + ((size_t)t * B + b) * D;
            float *y = out + ((size_t)t * B + b) * D;
            double mean = 0.0;
            if (c->norm == CT_NORM_LAYER) {
                for (int i = 0; i < D; i++) mean += x[i] * (w ? w[i] : 1.0f) * inv;
                mean /= D;
            }
            for (int i = 0; i < D; i++) {
                float v = x[i] * (w ? w[i] + off : 1.0f) * inv - (float)mean;
                y[i] = add ? y[i] + v : v;
            }
        }
    }
}

// ct_sgemm, counting its floating-point operations and time
static void gemm(attr_ctx *a, int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc) {
    double t = ct_now();
    ct_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    a->gemm_s += ct_now() - t;
    a->flops += 2.0 * M * N * K;
}

// Rows of one packed product (gemm_live_mat): enough for the BLAS's full rate.
#define PACK_ROWS 1024
static int g_pack = PACK_ROWS;   // tests: fewer

void ct_attr_pack_limit(int rows) { g_pack = rows > 0 ? rows : PACK_ROWS; }

// Copies the live rows of X (Tp, B, w) from (position *t, row *b) on into P (m, w) in order, at
// most g_pack of them; returns m and moves (*t, *b) past them. Live: rows first[t] .. B-1 of
// position t, at least one at every position below Tp (the batch's last row is at Tp - 1).
static int gather_live(float *P, const float *X, int w, const int *first, int Tp, int B, int *t, int *b) {
    int m = 0;
    while (*t < Tp && m < g_pack) {
        int n = B - *b < g_pack - m ? B - *b : g_pack - m;
        memcpy(P + (size_t)m * w, X + ((size_t)*t * B + *b) * w, sizeof(float) * (size_t)n * w);
        m += n, *b += n;
        if (*b == B && ++*t < Tp) *b = first[*t];
    }
    return m;
}

// The inverse of gather_live: P (m, w) into the live rows of X from (t, b) on.
static void scatter_live(float *X, const float *P, int w, int m, const int *first, int Tp, int B, int t, int b) {
    for (int i = 0; i < m;) {
        int n = B - b < m - i ? B - b : m - i;
        memcpy(X + ((size_t)t * B + b) * w, P + (size_t)i * w, sizeof(float) * (size_t)n * w);
        i += n, b += n;
        if (b == B && ++t < Tp) b = first[t];
    }
}

// C (M, n) = A (M, k) @ W for W (k, n) a weight matrix as the model stores it (W_O (D, H*hd),
// W_V (KV*hd, D), a skip connection) in its dtype: F32 read in place, any other dtype a tile of
// W's columns at a time converted into a->tile.
static void mat_product(attr_ctx *a, int M, const ct_mat *W, const float *A, float *C) {
    int k = (int)W->rows, n = (int)W->cols;
    int tw = W->cs != 1;   // columns contiguous (a transposed view): products read W^T (n, k)
    if (ct_mat_in_place(W)) {
        gemm(a, 0, tw, M, n, k, A, k, (const float *)(const void *)W->data, (int)(tw ? W->cs : W->rs), 0.0f, C, n);
        return;
    }
    CT_ASSERT(a->tile && a->tile_n >= (size_t)k);
    int R = (int)(a->tile_n / (size_t)k < (size_t)n ? a->tile_n / (size_t)k : (size_t)n);   // columns per tile
    ct_mat Wt = ct_mat_t(W);   // (n, k)
    for (int n0 = 0; n0 < n; n0 += R) {
        int r = n - n0 < R ? n - n0 : R;
        if (tw) {   // tile (r, k) = rows n0 .. n0+r-1 of W^T
            ct_mat_rows(&Wt, n0, r, a->tile);
        } else {    // tile (k, r) = columns n0 .. n0+r-1 of W
            ct_mat blk = ct_mat_cols(W, n0, r);
            ct_mat_rows(&blk, 0, k, a->tile);
        }
        gemm(a, 0, tw, M, r, k, A, k, a->tile, tw ? k : r, 0.0f, C + n0, n);
    }
}

// C (Tp, B, n) = A (Tp, B, k) @ W for the rows live at each position (first NULL: every row).
// The leading positions where every row is live are one product over A as it lies; the live rows
// of the others are gathered into a->PA (g_pack at a time), multiplied into a->PC and scattered
// back: a few large products where one per position would have few rows each (a batch's rows
// spread over the positions, so late positions keep few of them). Measured on gemma-2-2b, Dallas
// prompt: the backward's products at 164 GFLOP/s against 116 with one product per position.
static void gemm_live_mat(attr_ctx *a, const int *first, int Tp, int B, const ct_mat *W, const float *A, float *C) {
    int k = (int)W->rows, n = (int)W->cols, t0 = 0;
    while (t0 < Tp && (!first || first[t0] == 0)) t0++;
    if (t0 > 0) mat_product(a, t0 * B, W, A, C);
    for (int t = t0, b = t0 < Tp ? first[t0] : 0; t < Tp;) {
        int ts = t, bs = b, m = gather_live(a->PA, A, k, first, Tp, B, &t, &b);
        mat_product(a, m, W, a->PA, a->PC);
        scatter_live(C, a->PC, n, m, first, Tp, B, ts, bs);
    }
}

// Source vectors of (layer lf, position t) as written into layer lf + j: S (n, D).
static ct_status fill_sources(attr_ctx *a, int lf, int t, int j, ct_err *err) {
    int64_t s = a->start[lf * a->T + t], e = a->start[lf * a->T + t + 1];
    for (int64_t i = s; i < e; i++) {
        float *row = a->S + (size_t)(i - s) * a->D;
        ct_status rc = ct_tc_decoder_row(a->tc, lf, a->active[3 * i + 2], j, row, err);
        if (rc) return rc;
        for (int k = 0; k < a->D; k++) row[k] *= a->act_val[i];
    }
    return CT_OK;
}

typedef struct {
    int layer, pos;       // read point: layer L for logit targets
    const float *vec;     // (D,) at the transcoder input hook (features) or final norm output
} attr_row;

// Attention backward of layer l when each row's gradient Gp (Tp, B, D) is non-zero only at the
// row's own position p: Z = Gp[p] W_O (one vector per row); dV_h[k] = P_h[p, k] Z_h for k <= p;
// A1 (Tp, B, D) = dV W_V for the live rows.
static void attention_back_single(attr_ctx *a, const attr_row *r, int B, int Tp, int l, const float *Gp) {
    int T = a->T, D = a->D, hd = a->hd, H = a->H, KV = a->KV, group = H / KV, qd = H * hd, kvd = KV * hd;
    const ct_layer *w = &a->m->layers[l];
    float *X = a->A2, *Z = a->A2 + (size_t)B * D;   // X (B, D) the rows' gradients, Z (B, H*hd)
    for (int b = 0; b < B; b++) memcpy(X + (size_t)b * D, Gp + ((size_t)r[b].pos * B + b) * D, sizeof(float) * D);
    gemm_live_mat(a, NULL, 1, B, &w->wo, X, Z);   // Z (B, H*hd) = X (B, D) @ W_O (D, H*hd)
    float *DV = a->A1 + (size_t)Tp * B * D;   // (Tp, B, KV*hd) past the end of the output's room
    for (int b = 0; b < B; b++) {
        int p = r[b].pos;
        for (int k = 0; k <= p; k++) {
            float *o = DV + ((size_t)k * B + b) * kvd;
            memset(o, 0, sizeof(float) * kvd);
            for (int h = 0; h < H; h++) {
                float pk = a->fz->pattern[l][((size_t)h * T + p) * T + k];
                const float *z = Z + (size_t)b * qd + (size_t)h * hd;
                float *oh = o + (size_t)(h / group) * hd;
                for (int i = 0; i < hd; i++) oh[i] += pk * z[i];
            }
        }
        a->flops += 2.0 * (p + 1) * H * hd;
    }
    gemm_live_mat(a, a->first, Tp, B, &w->wv, DV, a->A1);
}

// rows (B, n_cols) += the direct effects of every column on each of the B targets, which come
// sorted by position. The gradient of a target is zero after its position, so at position t
// only rows first[t] .. B-1 are live; every product skips the others.
static ct_status run_batch(attr_ctx *a, const attr_row *r, int B, float *rows, ct_err *err) {
    const ct_config *c = &a->m->cfg;
    const ct_transcoders *tc = a->tc;
    int L = a->L, T = a->T, D = a->D, hd = a->hd, H = a->H, KV = a->KV, group = H / KV;
    int qd = H * hd, kvd = KV * hd;
    int64_t ldr = a->n_cols;
    int Tp = r[B - 1].pos + 1, top = -1;
    int *first = a->first;
    for (int b = 0, t = 0; t <= Tp; t++) {
        while (b < B && r[b].pos < t) b++;
        first[t] = b;
    }
    for (int b = 0; b < B; b++)
        if (r[b].layer > top) top = r[b].layer;
    float *G = a->G;
    memset(G, 0, sizeof(float) * (size_t)Tp * B * D);
    // logit targets: seed at the final norm's output
    for (int b = 0; b < B; b++)
        if (r[b].layer == L) {
            float *g = G + ((size_t)r[b].pos * B + b) * D;
            memcpy(g, r[b].vec, sizeof(float) * D);
            norm_back(a, g, g, a->fz->lnf_scale + r[b].pos, a->m->lnf_w, 1, 1, NULL, 0);
        }
    for (int l = (top < L ? top : L - 1); l >= 0; l--) {
        const ct_tc_layer *tl = &tc->layers[l];
        const ct_layer *w = &a->m->layers[l];
        // 1. sources written at layer l's output hook (nothing reaches them from the targets
        // injected at this layer)
        if (top > l) {
            const float *GO = G;
            if (a->out_raw && c->post_norms) {   // raw MLP output: back through the post-FF norm
                norm_back(a, a->A1, G, a->fz->ln2_post_scale[l], w->post_ff_w, Tp, B, first, 0);
                GO = a->A1;
            }
            int l0 = tc->kind == CT_TC_CLT ? 0 : l;
            for (int lf = l0; lf <= l; lf++) {
                if (l - lf >= tc->layers[lf].n_out) continue;
                for (int t = a->n_const; t < Tp; t++) {
                    int64_t s0 = a->start[lf * T + t], n = a->start[lf * T + t + 1] - s0;
                    int f = first[t];
                    if (n == 0) continue;
                    ct_status rc = fill_sources(a, lf, t, l - lf, err);
                    if (rc) return rc;
                    // rows[live, s0:s0+n] += GO[t, live] (B', D) @ S^T (D, n)
                    gemm(a, 0, 1, B - f, (int)n, D, GO + ((size_t)t * B + f) * D, D, a->S, D, 1.0f,
                             rows + f * ldr + s0, (int)ldr);
                }
            }
            for (int t = a->n_const; t < Tp; t++) {
                int f = first[t];
                int64_t col = a->n_active + (int64_t)l * T + t;
                gemm(a, 0, 1, B - f, 1, D, GO + ((size_t)t * B + f) * D, D, a->err_vec + ((size_t)l * T + t) * D, D,
                         1.0f, rows + f * ldr + col, (int)ldr);
            }
            // 2. skip connection: PLT y = x W^T gives g_x = g_y W; CLT y = x W gives g_x = g_y W^T
            if (tl->W_skip) {
                float *GI = a->A2;
                ct_mat skip = {(const uint8_t *)tl->W_skip, CT_DT_F32, D, D, D, 1};   // (D, D) row-major
                if (tl->skip_mode == CT_SKIP_XW) skip = ct_mat_t(&skip);
                gemm_live_mat(a, first, Tp, B, &skip, GO, GI);
                if (a->input == CT_TC_IN_RESID_MID) {
                    for (int t = 0; t < Tp; t++)
                        for (size_t i = ((size_t)t * B + first[t]) * D; i < (size_t)(t + 1) * B * D; i++) G[i] += GI[i];
                } else {
                    norm_back(a, G, GI, a->fz->ln2_scale[l], a->input == CT_TC_IN_MLP_IN ? w->ln2_w : NULL, Tp, B, first, 1);
                }
            }
        }
        // 3. feature targets of this layer: encoder rows at the input hook
        for (int b = 0; b < B; b++) {
            if (r[b].layer != l) continue;
            float *g = G + ((size_t)r[b].pos * B + b) * D, *v = a->v;
            memcpy(v, r[b].vec, sizeof(float) * D);
            if (a->input != CT_TC_IN_RESID_MID)
                norm_back(a, v, v, a->fz->ln2_scale[l] + r[b].pos, a->input == CT_TC_IN_MLP_IN ? w->ln2_w : NULL, 1, 1, NULL, 0);
            for (int i = 0; i < D; i++) g[i] += v[i];
        }
        // 4. attention with frozen patterns: Z = G' W_O; dV_h = P_h^T Z_h; G += N1^T(dV W_V)
        const float *Gp = G;
        if (c->post_norms) {
            norm_back(a, a->A1, G, a->fz->ln1_post_scale[l], w->post_attn_w, Tp, B, first, 0);
            Gp = a->A1;
        }
        // every target injected at this layer (or a logit target at the last layer): the
        // gradient sits at one position per row, and mixing is a scaled copy of the pattern row
        int single = 1;
        for (int b = 0; b < B && single; b++) single = r[b].layer == l || (r[b].layer == L && l == L - 1);
        if (single) {
            attention_back_single(a, r, B, Tp, l, Gp);
            norm_back(a, G, a->A1, a->fz->ln1_scale[l], w->ln1_w, Tp, B, first, 1);
            continue;
        }
        float *Z = a->A2;   // (Tp, B, H*hd)
        gemm_live_mat(a, first, Tp, B, &w->wo, Gp, Z);
        float *ZH = a->A1;   // (H, Tp, B, hd), zero where a row is not live
        for (int h = 0; h < H; h++)
            for (int t = 0; t < Tp; t++) {
                float *dst = ZH + ((size_t)h * Tp + t) * B * hd;
                memset(dst, 0, sizeof(float) * (size_t)first[t] * hd);
                for (int b = first[t]; b < B; b++)
                    memcpy(dst + (size_t)b * hd, Z + ((size_t)t * B + b) * qd + (size_t)h * hd, sizeof(float) * hd);
            }
        // ZH_h (Tp', cols) = P_h^T ZH_h in place, P_h lower triangular; chunks of rows with
        // nearby positions use only the leading Tp' positions their last row needs
        int cs = (256 + hd - 1) / hd;
        for (int c0 = 0; c0 < B; c0 += cs) {
            int c1 = c0 + cs < B ? c0 + cs : B, Tc = r[c1 - 1].pos + 1;
            for (int h = 0; h < H; h++)
            {
                ct_strmm_lower_t(Tc, (c1 - c0) * hd, a->fz->pattern[l] + (size_t)h * T * T, T,
                                 ZH + (size_t)h * Tp * B * hd + (size_t)c0 * hd, B * hd);
                a->flops += (double)Tc * (Tc + 1) * (c1 - c0) * hd;
            }
        }
        float *DV = a->A2;   // (Tp, B, KV*hd): heads sharing a key/value head summed
        for (int t = 0; t < Tp; t++)
            for (int b = first[t]; b < B; b++) {
                float *dst = DV + ((size_t)t * B + b) * kvd;
                for (int k = 0; k < KV; k++) {
                    float *o = dst + (size_t)k * hd;
                    const float *src = ZH + (((size_t)(k * group) * Tp + t) * B + b) * hd;
                    memcpy(o, src, sizeof(float) * hd);
                    for (int h = 1; h < group; h++) {
                        const float *s2 = src + (size_t)h * Tp * B * hd;
                        for (int i = 0; i < hd; i++) o[i] += s2[i];
                    }
                }
            }
        float *XN = a->A1;   // (Tp, B, D) gradient at the attention input (after ln1)
        gemm_live_mat(a, first, Tp, B, &w->wv, DV, XN);
        norm_back(a, G, XN, a->fz->ln1_scale[l], w->ln1_w, Tp, B, first, 1);
    }
    // 5. token embeddings
    for (int t = 0; t < Tp; t++) {
        int f = first[t];
        int64_t col = a->n_active + (int64_t)L * T + t;
        gemm(a, 0, 1, B - f, 1, D, G + ((size_t)t * B + f) * D, D, a->embed + (size_t)t * D, D, 1.0f,
                 rows + f * ldr + col, (int)ldr);
    }
    return CT_OK;
}

// ---------------------------------------------------------------------------------------------
// Targets

typedef struct {
    int64_t vocab_id;
    float prob;
    char *label;
    float *vec;   // (D,)
} target;

static char *token_label(const ct_model *m, int id) {
    char *txt = NULL;
    size_t len = 0;
    if (m->tok && ct_tokenizer_token_text(m->tok, id, &txt, &len, NULL) == CT_OK) {
        char *s = malloc(len + 1);
        if (s) {
            memcpy(s, txt, len);
            s[len] = 0;
        }
        free(txt);
        return s;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%d", id);
    return strdup(buf);
}

static ct_status make_targets(attr_ctx *a, const ct_attr_opts *o, target **out, int *n_out, ct_err *err) {
    const ct_model *m = a->m;
    int V = m->cfg.vocab_size, D = a->D;
    // probabilities of the real output at the last position
    float *p = malloc(sizeof(float) * V);   // (V,)
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)(o->max_n_logits < V ? o->max_n_logits : V));   // (max_n_logits,)
    double *mean = calloc((size_t)D, sizeof(double));
    float *u = malloc(sizeof(float) * D);   // (D,) an unembedding row
    if (!p || !idx || !mean || !u) {
        free(p), free(idx), free(mean), free(u);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    memcpy(p, a->logits, sizeof(float) * V);
    ct_softmax(p, V);
    for (int v = 0; v < V; v++) {
        ct_mat_row(&m->lm_head, v, u);
        for (int i = 0; i < D; i++) mean[i] += u[i];
    }
    int K = 0;
    if (o->n_targets > 0) {
        K = o->n_targets;
    } else {
        ct_topk(idx, p, V, o->max_n_logits);   // the most probable first, ties: lower id
        double cum = 0.0;
        while (K < o->max_n_logits && K < V) {
            cum += p[idx[K++]];
            if (cum >= o->desired_logit_prob) break;
        }
    }
    target *tg = calloc((size_t)K, sizeof *tg);
    ct_status rc = tg ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    int n_custom = 0;
    for (int k = 0; k < K && !rc; k++) {
        if (!(tg[k].vec = malloc(sizeof(float) * D))) {
            rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
            break;
        }
        const ct_attr_target *x = o->n_targets > 0 ? &o->targets[k] : NULL;
        int v = x ? x->token : (int)idx[k];
        if (x && !x->vec && (v < 0 || v >= V)) {
            rc = ct_fail(err, CT_STATUS_OUT_OF_RANGE, "target token %d is outside the vocabulary 0..%d", v, V - 1);
            break;
        }
        if (x && x->vec) {
            tg[k].vocab_id = V + n_custom++;
            tg[k].prob = x->weight;
            tg[k].label = strdup(x->label ? x->label : "custom");
            memcpy(tg[k].vec, x->vec, sizeof(float) * D);
            for (int i = 0; i < D; i++)
                if (!isfinite(tg[k].vec[i])) {
                    rc = ct_fail(err, CT_STATUS_BAD_ARG, "custom target %d: element %d is not finite", k + 1, i + 1);
                    break;
                }
        } else {
            tg[k].vocab_id = v;
            tg[k].prob = p[v];
            tg[k].label = token_label(m, v);
            ct_mat_row(&m->lm_head, v, u);
            for (int i = 0; i < D; i++) tg[k].vec[i] = (float)(u[i] - mean[i] / V);
        }
        if (!rc && !tg[k].label) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    free(p), free(idx), free(mean), free(u);
    *out = tg;
    *n_out = K;
    return rc;
}

static void targets_free(target *tg, int K) {
    for (int k = 0; tg && k < K; k++) {
        free(tg[k].vec);
        free(tg[k].label);
    }
    free(tg);
}

// ---------------------------------------------------------------------------------------------
// Influence ranking (circuit-tracer's partial influences)

// sum |x[i]| over n floats: sixteen float partial sums in a fixed order (vectorisable, the same
// bits on every run), added in double.
static double abs_sum(const float *x, int64_t n) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) acc[k] += fabsf(x[i + k]);
    double s = 0.0;
    for (int k = 0; k < 16; k++) s += acc[k];
    for (; i < n; i++) s += fabsf(x[i]);
    return s;
}

// Influence on the logits of every active feature, estimated from the n_rows rows computed so
// far (the first K for the logit targets, then one per visited feature in visit order):
// x_0 = logit weights on the logit rows; x_{k+1}[q] = sum_r x_k[r] |A[r, feature of q]| / rowsum r;
// out[c] = sum_k sum_r x_k[r] |A[r, c]| / rowsum r. The iteration runs on sq, the rows' values at
// the visited features' columns (sq[r * ld + q - K]); one pass over the stored rows finishes it.
// Only a ranking: float sums.
static ct_status partial_influence(ct_rowstore *store, const float *sq, int64_t ld, int64_t n_rows, const double *rowsum,
                                   const target *tg, int K, int64_t n_active, float *out, ct_err *err) {
    double *x = calloc((size_t)n_rows, sizeof(double)), *s = calloc((size_t)n_rows, sizeof(double));
    double *nx = calloc((size_t)n_rows, sizeof(double));
    if (!x || !s || !nx) {
        free(x), free(s), free(nx);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    for (int k = 0; k < K; k++) x[k] = tg[k].prob;
    ct_status rc = CT_OK;
    for (int it = 0;; it++) {
        int any = 0;
        for (int64_t r = 0; r < n_rows; r++) {
            s[r] += x[r];
            any |= x[r] != 0.0;
        }
        if (!any) break;
        if (it == 128) {
            rc = ct_fail(err, CT_STATUS_BAD_ARG, "influence estimate did not converge after 128 iterations");
            break;
        }
        memset(nx, 0, sizeof(double) * n_rows);
        for (int64_t r = 0; r < n_rows; r++) {
            if (x[r] == 0.0) continue;
            double wgt = x[r] / (rowsum[r] > 1e-8 ? rowsum[r] : 1e-8);
            const float *row = sq + r * ld;   // row[j]: visit j, that is row K + j
            for (int64_t q = K; q < n_rows; q++) nx[q] += wgt * row[q - K];
        }
        double *tmp = x;
        x = nx, nx = tmp;
    }
    memset(out, 0, sizeof(float) * n_active);
    ct_row_seg segs[1025];
    int n_segs;
    for (int64_t r = 0; !rc && r < n_rows; r++) {
        if (s[r] == 0.0) continue;
        float wgt = (float)(s[r] / (rowsum[r] > 1e-8 ? rowsum[r] : 1e-8));
        if ((rc = ct_rowstore_read(store, r, segs, &n_segs, err))) break;
        for (int k = 0; k < n_segs; k++) {
            int64_t n = segs[k].col + segs[k].n <= n_active ? segs[k].n : n_active - segs[k].col, c = 0;
            float *o = out + segs[k].col;
            const float *v = segs[k].v;
            for (; c + 16 <= n; c += 16)   // fixed-size blocks vectorise at -O2
                for (int i = 0; i < 16; i++) o[c + i] += wgt * fabsf(v[c + i]);
            for (; c < n; c++) o[c] += wgt * fabsf(v[c]);
        }
    }
    free(x), free(s), free(nx);
    return rc;
}

static ct_status timed_batch(attr_ctx *a, const attr_row *r, int B, float *rows, ct_attr_stats *stats, ct_err *err) {
    double t = ct_now();
    ct_status rc = run_batch(a, r, B, rows, err);
    stats->backward_s += ct_now() - t;
    stats->n_batches++;
    return rc;
}

static int cmp_index(const void *x, const void *y) {
    int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
    return i < j ? -1 : i > j;
}

// by position, then layer, then index
static int cmp_pos_layer(const void *x, const void *y, void *ctx) {
    const int32_t *act = ctx;
    int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
    if (act[3 * i + 1] != act[3 * j + 1]) return act[3 * i + 1] - act[3 * j + 1];
    if (act[3 * i] != act[3 * j]) return act[3 * i] - act[3 * j];
    return i < j ? -1 : i > j;
}

// The prompt's text and each token's text (ids when the model has no tokenizer).
static ct_status prompt_text(ct_graph *g, const ct_model *m, ct_err *err) {
    g->token_text = calloc((size_t)g->n_pos, sizeof(char *));
    if (!g->token_text) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    size_t total = 1;
    for (int t = 0; t < g->n_pos; t++) {
        if (!(g->token_text[t] = token_label(m, g->tokens[t]))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        total += strlen(g->token_text[t]);
    }
    if (!(g->prompt = malloc(total))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    g->prompt[0] = 0;
    for (int t = 0; t < g->n_pos; t++) strcat(g->prompt, g->token_text[t]);
    return CT_OK;
}

// ---------------------------------------------------------------------------------------------

static ct_status check_opts(const ct_attr_opts *o, ct_err *err) {
    if (o->max_n_logits < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "max_n_logits: expected at least 1, got %d", o->max_n_logits);
    if (!(o->desired_logit_prob > 0.0 && o->desired_logit_prob <= 1.0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "desired_logit_prob: expected a value in (0, 1], got %g", o->desired_logit_prob);
    if (o->batch_size < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "batch_size: expected at least 1, got %d", o->batch_size);
    if (o->max_feature_nodes < 0)
        return ct_fail(err, CT_STATUS_BAD_ARG, "max_feature_nodes: expected a positive count, got %lld",
                       (long long)o->max_feature_nodes);
    if (o->update_interval < 1)
        return ct_fail(err, CT_STATUS_BAD_ARG, "update_interval: expected at least 1, got %d", o->update_interval);
    return CT_OK;
}

static void report(const ct_attr_opts *o, const char *phase, int64_t done, int64_t total) {
    if (o->progress) o->progress(o->progress_ctx, phase, done, total);
}

// Computes a batch of rows into bbuf (B, n_cols), then stores them: row sums, the values at the
// visited features' columns (sq), and the rows themselves.
typedef struct {
    ct_rowstore *store;
    float *bbuf;            // (B, n_cols)
    double *rowsum;         // (max rows,)
    float *sq;              // (max rows, ld) or NULL: values at the columns of visited features
    int64_t ld;
    const int64_t *visit;   // (ld,) feature of each visit index
    int64_t n_visit;        // visit indices known so far
} rows_state;

// batch (nb,) for the feature targets order[0..nb) (indices into a->active), their encoder rows
// read a layer at a time into a->enc
static ct_status feature_batch(attr_ctx *a, const int64_t *order, int nb, attr_row *batch, ct_err *err) {
    for (int i = 0; i < nb; i++) {
        const int32_t *af = a->active + 3 * order[i];
        batch[i] = (attr_row){af[0], af[1], a->enc + (size_t)i * a->D};
    }
    for (int l = 0; l < a->L; l++) {
        int n = 0;
        for (int i = 0; i < nb; i++)
            if (batch[i].layer == l) a->feats[n] = a->active[3 * order[i] + 2], a->enc_rows[n++] = a->enc + (size_t)i * a->D;
        ct_status rc = n ? ct_tc_encoder_rows(a->tc, l, a->feats, n, a->enc_rows, err) : CT_OK;
        if (rc) return rc;
    }
    return CT_OK;
}

static ct_status batch_rows(attr_ctx *a, rows_state *rs, const attr_row *r, int B, ct_attr_stats *stats, ct_err *err) {
    int64_t nc = a->n_cols;
    float *rows = ct_rowstore_next(rs->store, B);   // in memory: computed in place
    if (!rows) {
        rows = rs->bbuf;
        memset(rows, 0, sizeof(float) * (size_t)B * nc);
    }
    ct_status rc = timed_batch(a, r, B, rows, stats, err);
    for (int b = 0; !rc && b < B; b++) {
        const float *row = rows + (size_t)b * nc;
        int64_t at = ct_rowstore_rows(rs->store);
        rs->rowsum[at] = abs_sum(row, nc);
        if (rs->sq)
            for (int64_t j = 0; j < rs->n_visit; j++) rs->sq[at * rs->ld + j] = fabsf(row[rs->visit[j]]);
        rc = ct_rowstore_append(rs->store, row, r[b].layer, r[b].pos, err);
    }
    return rc;
}

// The stored rows' values at the columns of visits j0 .. j1-1 (features chosen after the rows).
static ct_status fill_sq(rows_state *rs, int64_t j0, int64_t j1, ct_err *err) {
    ct_row_seg segs[1025];
    int n_segs;
    for (int64_t r = 0; r < ct_rowstore_rows(rs->store); r++) {
        ct_status rc = ct_rowstore_read(rs->store, r, segs, &n_segs, err);
        if (rc) return rc;
        for (int64_t j = j0; j < j1; j++) rs->sq[r * rs->ld + j] = fabsf(ct_row_value(segs, n_segs, rs->visit[j]));
    }
    return CT_OK;
}

ct_status ct_attribute(ct_graph **out, ct_replacement *rm, const int *tokens, int T, const ct_attr_opts *o, ct_err *err) {
    *out = NULL;
    ct_model *m = rm->m;
    const ct_transcoders *tc = rm->tc;
    ct_status rc;
    if ((rc = check_opts(o, err))) return rc;
    if (T < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "attribute: expected a prompt of at least one token, got %d", T);
    if (m->cfg.max_seq_len > 0 && T > m->cfg.max_seq_len)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "attribute: the prompt has %d tokens; the model's context is %d",
                       T, m->cfg.max_seq_len);
    attr_ctx a = {.m = m, .tc = tc, .L = m->cfg.n_layers, .T = T, .D = m->cfg.d_model, .H = m->cfg.n_heads,
                  .KV = m->cfg.n_kv_heads, .hd = m->cfg.head_dim, .input = rm->input, .out_raw = rm->out_raw,
                  .n_const = rm->n_const};
    target *tg = NULL;
    rows_state rs = {0};
    float *infl = NULL;
    int64_t *row_node = NULL, *order = NULL, *pick = NULL, *col_of = NULL, *visit = NULL;
    attr_row *batch = NULL;
    uint8_t *visited = NULL;
    ct_graph *g = NULL;
    int L = a.L, D = a.D;
    ct_attr_stats stats = {0};
    double t0 = ct_now(), t1;

    report(o, "setup", 0, 1);
    if ((rc = take_clean_run(&a, rm, tokens, err))) goto done;
    if ((rc = make_targets(&a, o, &tg, &a.K, err))) goto done;
    stats.setup_s = (t1 = ct_now()) - t0;
    int K = a.K;
    int64_t NA = a.n_active;
    a.n_cols = NA + (int64_t)(L + 1) * T + K;
    int64_t budget = o->max_feature_nodes > 0 && o->max_feature_nodes < NA ? o->max_feature_nodes : NA;
    int64_t n_rows = K + budget;
    // memory: rows in RAM up to half the limit (else packed in a file); the batch's scratch
    // (see run_batch) within an eighth, by fewer rows per batch when needed
    size_t limit = o->memory_limit ? o->memory_limit : (size_t)4 << 30;
    size_t qd = (size_t)a.H * a.hd, kvd = (size_t)a.KV * a.hd, wmax = (size_t)D > qd ? (size_t)D : qd;
    size_t per_row = sizeof(float) * ((size_t)T * (D + (wmax > D + kvd ? wmax : D + kvd) + wmax + D + qd) + (size_t)a.n_cols);
    int B = o->batch_size;
    while (B > 1 && (size_t)B * per_row > limit / 8) B /= 2;
    stats.batch_size = B;
    size_t s1 = (size_t)T * B * (wmax > D + kvd ? wmax : D + kvd), s2 = (size_t)T * B * wmax;
    if (s2 < (size_t)B * (D + qd)) s2 = (size_t)B * (D + qd);
    a.G = malloc(sizeof(float) * (size_t)T * B * D);
    a.A1 = malloc(sizeof(float) * s1);
    a.A2 = malloc(sizeof(float) * s2);
    a.S = malloc(sizeof(float) * (size_t)(a.max_block + 1) * D);
    a.v = malloc(sizeof(float) * (size_t)D);
    for (int l = 0; l < L; l++) {   // room for a tile of W_O or W_V (k, columns) when not read in place
        ct_mat wo_t = ct_mat_t(&m->layers[l].wo), wv_t = ct_mat_t(&m->layers[l].wv);
        size_t n = ct_mat_tile_floats(&wo_t) > ct_mat_tile_floats(&wv_t) ? ct_mat_tile_floats(&wo_t) : ct_mat_tile_floats(&wv_t);
        if (n > a.tile_n) a.tile_n = n;
    }
    a.tile = a.tile_n ? malloc(sizeof(float) * a.tile_n) : NULL;
    a.PA = malloc(sizeof(float) * (size_t)g_pack * wmax);
    a.PC = malloc(sizeof(float) * (size_t)g_pack * wmax);
    a.first = malloc(sizeof(int) * (size_t)(T + 1));
    a.enc = malloc(sizeof(float) * (size_t)B * D);
    a.enc_rows = malloc(sizeof(float *) * (size_t)B);
    a.feats = malloc(sizeof(int64_t) * (size_t)B);
    ct_row_layout lay = {L, T, NA, a.n_cols, a.start};
    if ((rc = ct_rowstore_open(&rs.store, &lay, n_rows, limit / 2, err))) goto done;
    if (ct_rowstore_spilled(rs.store)) rs.bbuf = malloc(sizeof(float) * (size_t)B * (size_t)a.n_cols);
    rs.rowsum = calloc((size_t)n_rows, sizeof(double));
    if (budget < NA) {   // the influence ranking reads the rows at the visited features' columns
        rs.ld = budget;
        rs.sq = malloc(sizeof(float) * (size_t)n_rows * (size_t)budget + 1);
    }
    rs.visit = visit = malloc(sizeof(int64_t) * (size_t)(budget + 1));
    row_node = malloc(sizeof(int64_t) * (size_t)n_rows);
    order = malloc(sizeof(int64_t) * (size_t)(NA + 1));
    pick = malloc(sizeof(int64_t) * (size_t)(budget + 1));
    infl = malloc(sizeof(float) * (size_t)(NA + 1));
    visited = calloc((size_t)NA + 1, 1);
    batch = malloc(sizeof(attr_row) * (size_t)B);
    if (!a.G || !a.A1 || !a.A2 || !a.S || !a.v || !a.first || (a.tile_n && !a.tile) || !a.PA || !a.PC || !a.enc || !a.enc_rows || !a.feats ||
        (ct_rowstore_spilled(rs.store) && !rs.bbuf) || !rs.rowsum || (budget < NA && !rs.sq) || !visit ||
        !row_node || !order || !pick || !infl || !visited || !batch) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for attribution scratch (batch of %d rows, %lld columns)", B,
                     (long long)a.n_cols);
        goto done;
    }

    // logit rows
    for (int k0 = 0; k0 < K; k0 += B) {
        int nb = K - k0 < B ? K - k0 : B;
        for (int i = 0; i < nb; i++) {
            batch[i] = (attr_row){L, T - 1, tg[k0 + i].vec};
            row_node[k0 + i] = NA + (int64_t)(L + 1) * T + k0 + i;
        }
        if ((rc = batch_rows(&a, &rs, batch, nb, &stats, err))) goto done;
    }
    report(o, "logits", K, K);
    stats.logits_s = (t0 = ct_now()) - t1;

    // feature rows: the whole budget at once, or update_interval batches at a time in order of
    // estimated influence
    int64_t n_visited = 0;
    while (n_visited < budget) {
        int64_t n_pending = 0;
        if (budget == NA) {
            for (int64_t i = 0; i < NA; i++) order[n_pending++] = i;
        } else {
            double tr = ct_now();
            if ((rc = partial_influence(rs.store, rs.sq, rs.ld, ct_rowstore_rows(rs.store), rs.rowsum, tg, K, NA, infl, err)))
                goto done;
            int64_t n_rank = 0;   // the unvisited features (order) and their influences, packed into infl
            for (int64_t i = 0; i < NA; i++)
                if (!visited[i]) order[n_rank] = i, infl[n_rank++] = infl[i];
            int64_t q = (int64_t)o->update_interval * o->batch_size;
            n_pending = q < budget - n_visited ? q : budget - n_visited;
            // the n_pending most influential (ties: lower index), as features
            n_pending = ct_topk(pick, infl, n_rank, n_pending);
            for (int64_t i = 0; i < n_pending; i++) pick[i] = order[pick[i]];
            memcpy(order, pick, sizeof(int64_t) * (size_t)n_pending);
            stats.ranking_s += ct_now() - tr;
        }
        // batches: consecutive in (layer, position) order, so each starts at few layers; within a
        // batch by position, as run_batch wants
        qsort(order, (size_t)n_pending, sizeof(int64_t), cmp_index);
        for (int64_t i0 = 0; i0 < n_pending; i0 += B) {
            int nb = n_pending - i0 < B ? (int)(n_pending - i0) : B;
            qsort_r(order + i0, (size_t)nb, sizeof(int64_t), cmp_pos_layer, a.active);
        }
        for (int64_t i = 0; i < n_pending; i++) {
            visit[n_visited + i] = order[i];
            visited[order[i]] = 1;
            row_node[K + n_visited + i] = order[i];
        }
        rs.n_visit = n_visited + n_pending;
        if (rs.sq && (rc = fill_sq(&rs, n_visited, n_visited + n_pending, err))) goto done;
        for (int64_t i0 = 0; i0 < n_pending; i0 += B) {
            if ((rc = ct_ctx_check_cancel(o->ctx, err, "attribution stopped after %lld of %lld feature rows",
                                          (long long)(n_visited + i0), (long long)budget)))
                goto done;
            int nb = n_pending - i0 < B ? (int)(n_pending - i0) : B;
            if ((rc = feature_batch(&a, order + i0, nb, batch, err))) goto done;
            if ((rc = batch_rows(&a, &rs, batch, nb, &stats, err))) goto done;
            report(o, "features", n_visited + i0 + nb, budget);
        }
        n_visited += n_pending;
    }
    stats.features_s = (t1 = ct_now()) - t0;
    stats.backward_flops = a.flops;
    stats.backward_gemm_s = a.gemm_s;
    stats.n_active = NA;
    stats.n_rows = ct_rowstore_rows(rs.store);
    stats.spilled = ct_rowstore_spilled(rs.store);
    stats.row_bytes = ct_rowstore_bytes(rs.store);
    // the scratch is done with; the graph takes its room, and the clean run's when that is more
    // than a quarter of the working memory (else it stays for interventions on the same prompt)
    free(rs.sq), free(rs.bbuf), free(a.G), free(a.A1), free(a.A2);
    rs.sq = NULL, rs.bbuf = NULL, a.G = a.A1 = a.A2 = NULL;
    if (ct_clean_run_bytes(rm->clean) > limit / 4) ct_replacement_release(rm);

    // graph: selected features ascending, then error, token and logit nodes
    g = calloc(1, sizeof *g);
    if (!g) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    int64_t S = budget, N = S + (int64_t)(L + 1) * T + K;
    g->n_pos = T;
    g->n_layers = L;
    g->d_model = D;
    g->vocab_size = m->cfg.vocab_size;
    g->n_active = NA;
    g->active = a.active, a.active = NULL;
    g->activation = a.act_val, a.act_val = NULL;
    g->n_selected = S;
    g->selected = malloc(sizeof(int64_t) * (size_t)(S + 1));
    g->tokens = malloc(sizeof(int) * (size_t)T);
    g->n_logits = K;
    g->logits = calloc((size_t)K, sizeof(ct_logit_target));
    g->n_nodes = N;
    g->adj = calloc((size_t)(S + K) * (size_t)N, sizeof(float));
    col_of = malloc(sizeof(int64_t) * (size_t)(NA + 1));
    if (!g->selected || !g->tokens || !g->logits || !g->adj || !col_of) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a graph of %lld nodes", (long long)N);
        goto done;
    }
    memcpy(g->tokens, tokens, sizeof(int) * (size_t)T);
    if ((rc = prompt_text(g, m, err))) goto done;
    int64_t s = 0;
    for (int64_t i = 0; i < NA; i++) {
        col_of[i] = visited[i] ? s : -1;
        if (visited[i]) g->selected[s++] = i;
    }
    for (int k = 0; k < K; k++) {
        g->logits[k] = (ct_logit_target){tg[k].vocab_id, tg[k].prob, tg[k].label};
        tg[k].label = NULL;
    }
    ct_row_seg segs[1025];
    int n_segs;
    for (int64_t r = 0; r < ct_rowstore_rows(rs.store); r++) {
        if ((rc = ct_rowstore_read(rs.store, r, segs, &n_segs, err))) goto done;
        int64_t node = row_node[r];
        int64_t ti = node < NA ? col_of[node] : S + (node - NA - (int64_t)(L + 1) * T);   // stored row
        float *dst = g->adj + (size_t)ti * N;
        for (int k = 0; k < n_segs; k++)
            for (int64_t i = 0; i < segs[k].n; i++) {
                int64_t c = segs[k].col + i;
                if (c >= NA) dst[S + c - NA] = segs[k].v[i];   // error, token (and zero logit) columns
                else if (col_of[c] >= 0) dst[col_of[c]] = segs[k].v[i];
            }
    }
    g->settings = (ct_graph_settings){o->max_n_logits, o->desired_logit_prob, o->batch_size, o->max_feature_nodes,
                                      o->update_interval, -1, -1};
    snprintf(g->scan, sizeof g->scan, "%s", tc->scan);
    snprintf(g->model_name, sizeof g->model_name, "%s", tc->model_name);
    snprintf(g->input_hook, sizeof g->input_hook, "%s", tc->input_hook);
    snprintf(g->output_hook, sizeof g->output_hook, "%s", tc->output_hook);
    stats.graph_s = ct_now() - t1;
    if (o->stats) *o->stats = stats;
    report(o, "done", 1, 1);

done:
    if (rc) {
        ct_graph_free(g);
        g = NULL;
    }
    targets_free(tg, a.K);
    ct_rowstore_close(rs.store);
    free(rs.bbuf), free(rs.rowsum), free(rs.sq), free(visit);
    free(row_node), free(order), free(pick), free(infl), free(visited), free(batch), free(col_of);
    ctx_free(&a);
    *out = g;
    return rc;
}
