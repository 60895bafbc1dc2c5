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

#include "core/crc32.h"
#include "core/dist.h"
#include "trace/replacement.h"
#include "trace/rowstore.h"

void ct_attr_opts_default(ct_attr_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_n_logits = 10;
    o->desired_logit_prob = 0.95;
    o->batch_size = 512;
    o->update_interval = 4;
    o->memory_limit = CT_ATTR_MEMORY_LIMIT;
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
    float *G;               // (T*B, D) room for a batch's gradients, packed (layout)
    float *A1, *A2;         // (T*B, D + KV*hd), (T*B, max(D, H*hd)): products along the way
    float *S;               // (S_workers, S_n) source vectors: (max features at one (layer, position), D) each
    size_t S_n;
    int S_workers;
    float *M;               // (S_workers, M_n) mix_back's buffers: (T, about 256 columns) each
    size_t M_n;
    float *v;               // (D,)
    float *gain;            // (D,) a norm's gain (norm_back)
    float *tile;            // (tile_n,) W_O or W_V converted (NULL when every one is read in place)
    const uint8_t *tile_of; // the data of the matrix the tile holds, and whether transposed
    int tile_tw;
    size_t tile_n;
    float *enc;             // (B, D) the encoder rows of a batch of feature targets
    float **enc_rows;       // (B,) pointers into enc
    int64_t *feats;         // (B,)
    // a batch's packed layout (see layout): groups of rows read at one layer, segments of a group's
    // rows at one position
    int n_groups;
    int *grp;               // (B,) each row's group
    int *gb;                // (L + 2,) group g holds rows gb[g] .. gb[g+1]-1
    int *first;             // ((L + 1) (T + 1),) [g (T+1) + t]: group g's first row at position >= t
    int64_t *off;           // ((L + 1) (T + 1),) [g (T+1) + t]: where that row lies (later rows follow)
    int *gseg;              // (L + 2,) group g's first segment
    int *seg_pos;           // ((L + 1) (T + 1),) each segment's position (at most (L + 1) T segments)
    int64_t *seg_off;       // ((L + 1) (T + 1),) where each segment starts (one more: the layout's rows)
    double flops;           // of the backward passes so far
    double prod_rows;       // rows through mat_product so far
    double gemm_s;          // seconds in their matrix products
    int64_t max_block;
    // the layer split (a layer-split model: this rank's layers [lo, hi); else 0, L)
    int split, lo, hi;
    float *xbuf;            // (B, n_cols) a batch's columns packed for another rank (split)
} attr_ctx;

// Where row b of position t lies in a batch's packed layout (t <= the row's position).
static inline int64_t at(const attr_ctx *a, int t, int b) {
    size_t i = (size_t)a->grp[b] * (a->T + 1) + t;
    return a->off[i] + b - a->first[i];
}

// Rows of the first ng groups in the layout.
static int64_t live_rows(const attr_ctx *a, int ng) { return a->seg_off[a->gseg[ng]]; }

// Rows of the first ng groups at position t.
static int64_t rows_at(const attr_ctx *a, int ng, int t) {
    int64_t n = 0;
    for (int g = 0; g < ng; g++) n += a->gb[g + 1] - a->first[(size_t)g * (a->T + 1) + t];
    return n;
}

static void ctx_free(attr_ctx *a) {
    free(a->active); free(a->act_val); free(a->start);
    free(a->G); free(a->A1); free(a->A2); free(a->S); free(a->M); free(a->v); free(a->gain); free(a->tile);
    free(a->grp); free(a->gb); free(a->first); free(a->off); free(a->gseg); free(a->seg_pos); free(a->seg_off);
    free(a->enc); free(a->enc_rows); free(a->feats); free(a->xbuf);
}

// ---------------------------------------------------------------------------------------------
// The clean run: frozen values, error vectors, active features

static ct_status take_clean_run(attr_ctx *a, ct_replacement *rm, const int *tokens, ct_err *err) {
    ct_clean_run *c;
    ct_status rc = ct_replacement_clean_all(rm, tokens, a->T, &c, err);   // a collective on a layer-split model
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

// A step of the backward with at least this many floats of work is shared among the threads
// (ct_parallel); less runs on the calling thread.
#define SPLIT_FLOATS (1 << 18)
static int64_t g_split = SPLIT_FLOATS;   // tests: less

void ct_attr_split_limit(int64_t floats) { g_split = floats > 0 ? floats : SPLIT_FLOATS; }

static int n_split(int64_t floats) {
    int n = ct_get_threads();
    return floats < g_split ? 1 : n < CT_MAX_WORKERS ? n : CT_MAX_WORKERS;
}

typedef struct {
    const attr_ctx *a;
    float *out;
    const float *in, *d, *gain;
    int ns, add;
    const int *pos;
    const int64_t *off;
} norm_job;

// Worker w of nw: every nw-th row of norm_back's (see there).
static void norm_rows(void *arg, int w, int nw) {
    const norm_job *j = arg;
    int D = j->a->D, layer = j->a->m->cfg.norm == CT_NORM_LAYER;
    const float *g = j->gain;
    for (int s = 0; s < j->ns; s++) {
        float inv = 1.0f / j->d[j->pos[s]];
        for (int64_t k = j->off[s]; k < j->off[s + 1]; k++) {
            if (k % nw != w) continue;
            const float *x = j->in + (size_t)k * D;
            float *y = j->out + (size_t)k * D;
            float mean = 0.0f;
            if (layer) {
                double m = 0.0;
                for (int i = 0; i < D; i++) m += x[i] * g[i] * inv;
                mean = (float)(m / D);
            }
            int i = 0;   // fixed-size blocks vectorise at -O2
            if (j->add) {
                for (; i + 16 <= D; i += 16)
                    for (int q = 0; q < 16; q++) y[i + q] += x[i + q] * g[i + q] * inv - mean;
                for (; i < D; i++) y[i] += x[i] * g[i] * inv - mean;
            } else {
                for (; i + 16 <= D; i += 16)
                    for (int q = 0; q < 16; q++) y[i + q] = x[i + q] * g[i + q] * inv - mean;
                for (; i < D; i++) y[i] = x[i] * g[i] * inv - mean;
            }
        }
    }
}

// out (n, D) (+)= the transpose of a frozen norm's Jacobian applied to in (n, D): in * gain / d[t],
// centred over D for LayerNorm, for the rows of the layout's first ns segments (each at its
// position t; ns 0: one row at position 0). w NULL: no gain (the normalised value).
static void norm_back(attr_ctx *a, float *out, const float *in, const float *d, const float *w, int ns, int add) {
    static const int zero[1] = {0};
    static const int64_t one[2] = {0, 1};
    const ct_config *c = &a->m->cfg;
    float g0 = c->norm == CT_NORM_RMS ? c->norm_gain_offset : 0.0f;
    for (int i = 0; i < a->D; i++) a->gain[i] = w ? w[i] + g0 : 1.0f;
    norm_job j = {a, out, in, d, a->gain, ns ? ns : 1, add, ns ? a->seg_pos : zero, ns ? a->seg_off : one};
    int nw = n_split(j.off[j.ns] * a->D);
    if (nw > 1) ct_parallel(nw, norm_rows, &j);
    else norm_rows(&j, 0, 1);
}

// ct_sgemm, counting its floating-point operations and time
static void gemm(attr_ctx *a, int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc) {
    double t = ct_now();
    ct_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    a->gemm_s += ct_now() - t;
    a->flops += 2.0 * M * N * K;
}

// Rows of one of mix_back's products at most (tests: fewer, to cross the seams of its chunks).
#define PACK_ROWS 1024
static int g_pack = PACK_ROWS;

void ct_attr_pack_limit(int rows) { g_pack = rows > 0 ? rows : PACK_ROWS; }

// Rows of one of split_product's pieces at most: the pieces depend on the product alone, never on
// the thread count, so a row's bits do not either (the BLAS may sum a row differently in products
// of different heights).
#define PIECE_ROWS 256

typedef struct {
    int M, N, K, tw, ldw, n_pieces;
    const float *A, *W;
    float *C;
} split_job;

// Worker w of nw: every nw-th of split_product's pieces, each one product on this thread.
static void split_worker(void *arg, int w, int nw) {
    const split_job *j = arg;
    for (int p = w; p < j->n_pieces; p += nw) {
        int m0 = (int)((int64_t)j->M * p / j->n_pieces), m1 = (int)((int64_t)j->M * (p + 1) / j->n_pieces);
        if (m1 > m0)
            ct_sgemm_here(0, j->tw, m1 - m0, j->N, j->K, 1.0f, j->A + (size_t)m0 * j->K, j->K, j->W, j->ldw, 0.0f,
                          j->C + (size_t)m0 * j->N, j->N);
    }
}

// C (M, N) = A (M, K) @ op(W), W (K, N) with leading dimension ldw, or (N, K) when tw: the rows of
// A in pieces of at most PIECE_ROWS (one piece for a small product) shared among the threads, each
// piece one product on its thread. The BLAS's own threads, never woken, do not spin beside the
// backward's other steps (measured on gemma-2-2b, 64 tokens: the backward 171 s against 179 s with
// the BLAS's threads).
static void split_product(attr_ctx *a, int M, int N, int K, const float *A, const float *W, int ldw, int tw, float *C) {
    double t = ct_now();
    // an even number of pieces: two threads (a laptop's, this machine's) finish together
    int n_pieces = (int64_t)M * N < g_split ? 1 : 2 * ((M + 2 * PIECE_ROWS - 1) / (2 * PIECE_ROWS));
    split_job j = {M, N, K, tw, ldw, n_pieces > 0 ? n_pieces : 1, A, W, C};
    int nw = n_split((int64_t)M * N);
    if (nw > j.n_pieces) nw = j.n_pieces;
    ct_parallel(nw, split_worker, &j);
    a->gemm_s += ct_now() - t;
    a->flops += 2.0 * M * N * K;
}

typedef struct {
    ct_mat W;    // rows contiguous
    float *out;  // (W.rows, W.cols)
} convert_job;

// Worker w of nw: its share of W's rows converted to float.
static void convert_worker(void *arg, int w, int nw) {
    const convert_job *j = arg;
    int64_t r0 = j->W.rows * w / nw, r1 = j->W.rows * (w + 1) / nw;
    ct_mat_rows(&j->W, r0, r1 - r0, j->out + (size_t)r0 * j->W.cols);
}

// C (M, n) = A (M, k) @ W for W (k, n) a weight matrix as the model stores it (W_O (D, H*hd),
// W_V (KV*hd, D), a skip connection) in its dtype: F32 read in place; any other dtype converted
// whole into a->tile, which keeps it for the next product with the same W.
static void mat_product(attr_ctx *a, int M, const ct_mat *W, const float *A, float *C) {
    int k = (int)W->rows, n = (int)W->cols;
    a->prod_rows += M;
    int tw = W->cs != 1;   // columns contiguous (a transposed view): products read W^T (n, k)
    if (ct_mat_in_place(W)) {
        split_product(a, M, n, k, A, (const float *)(const void *)W->data, (int)(tw ? W->cs : W->rs), tw, C);
        return;
    }
    CT_ASSERT(a->tile && a->tile_n >= (size_t)k * n);
    if (a->tile_of != W->data || a->tile_tw != tw) {
        convert_job j = {tw ? ct_mat_t(W) : *W, a->tile};   // (n, k) = W^T or (k, n) = W, rows contiguous
        ct_parallel(n_split((int64_t)k * n), convert_worker, &j);
        a->tile_of = W->data, a->tile_tw = tw;
    }
    split_product(a, M, n, k, A, a->tile, tw ? k : n, tw, C);
}

typedef struct {
    int layer, pos;       // read point: layer L for logit targets
    const float *vec;     // (D,) at the transcoder input hook (features) or final norm output
    int resid;            // read instead at the residual stream entering `layer` (1), or at its attention's
                          // input (2) (ct_attribute_resid; a batch of such rows reads them all at one layer)
} attr_row;

// Source vectors of (layer lf, position t) as written into layer lf + j: S (n, D).
static ct_status fill_sources(const attr_ctx *a, float *S, int lf, int t, int j, ct_err *err) {
    int64_t s = a->start[lf * a->T + t], e = a->start[lf * a->T + t + 1];
    for (int64_t i = s; i < e; i++) {
        float *row = S + (size_t)(i - s) * a->D;
        ct_status rc = ct_tc_decoder_row(a->tc, lf, a->active[3 * i + 2], j, row, err);
        if (rc) return rc;
        for (int k = 0; k < a->D; k++) row[k] *= a->act_val[i];
    }
    return CT_OK;
}

typedef struct {
    const attr_ctx *a;
    const float *GO;      // (n_live, D) the gradient at layer l's output hook
    float *rows;          // (B, n_cols)
    int l, ng;            // the groups live at layer l's output
    ct_status rc[CT_MAX_WORKERS];
    ct_err err[CT_MAX_WORKERS];
} sources_job;

// Worker w of nw: the columns of every nw-th position of sources_back's (see there), with its
// own source matrix a->S + w * S_n and the BLAS on its own thread.
static void sources_worker(void *arg, int w, int nw) {
    sources_job *j = arg;
    const attr_ctx *a = j->a;
    const ct_transcoders *tc = a->tc;
    int T = a->T, D = a->D, l = j->l;
    int64_t ldr = a->n_cols;
    float *S = a->S + (size_t)w * a->S_n;
    for (int t = a->n_const + w; t < T && !j->rc[w]; t += nw) {
        if (!rows_at(a, j->ng, t)) continue;
        for (int lf = tc->kind == CT_TC_CLT ? 0 : l; lf <= l && !j->rc[w]; lf++) {
            int64_t s0 = a->start[lf * T + t], n = a->start[lf * T + t + 1] - s0;
            if (l - lf >= tc->layers[lf].n_out || n == 0) continue;
            if ((j->rc[w] = fill_sources(a, S, lf, t, l - lf, &j->err[w]))) break;
            // rows[live, s0:s0+n] += GO[t, live] (B', D) @ S^T (D, n), a group at a time
            for (int g = 0; g < j->ng; g++) {
                size_t i = (size_t)g * (T + 1) + t;
                int f = a->first[i], e = a->gb[g + 1];
                if (f < e)
                    ct_sgemm_here(0, 1, e - f, (int)n, D, 1.0f, j->GO + (size_t)a->off[i] * D, D, S, D, 1.0f,
                                  j->rows + f * ldr + s0, (int)ldr);
            }
        }
        int64_t col = a->n_active + (int64_t)l * T + t;   // the error node of (l, t)
        for (int g = 0; g < j->ng; g++) {
            size_t i = (size_t)g * (T + 1) + t;
            int f = a->first[i], e = a->gb[g + 1];
            if (f < e)
                ct_sgemm_here(0, 1, e - f, 1, D, 1.0f, j->GO + (size_t)a->off[i] * D, D, a->err_vec + ((size_t)l * T + t) * D, D,
                              1.0f, j->rows + f * ldr + col, (int)ldr);
        }
    }
}

// rows (B, n_cols) += the direct effects of the features written at layer l's output hook (every
// layer's for a cross-layer set) and of layer l's error nodes, through GO (the layout's rows of
// its first ng groups, D): one product per position and group, the positions shared among the
// threads.
static ct_status sources_back(attr_ctx *a, const float *GO, int l, int ng, float *rows, ct_err *err) {
    const ct_transcoders *tc = a->tc;
    int T = a->T, D = a->D;
    sources_job j = {.a = a, .GO = GO, .rows = rows, .l = l, .ng = ng};
    int64_t live = 0;   // multiply-adds, counted here in a fixed order
    for (int t = a->n_const; t < T; t++) {
        int64_t n = 1;
        for (int lf = tc->kind == CT_TC_CLT ? 0 : l; lf <= l; lf++)
            if (l - lf < tc->layers[lf].n_out) n += a->start[lf * T + t + 1] - a->start[lf * T + t];
        live += rows_at(a, ng, t) * n;
    }
    a->flops += 2.0 * (double)live * D;
    int nw = n_split(live * D);
    if (nw > a->S_workers) nw = a->S_workers;
    ct_parallel(nw, sources_worker, &j);   // one worker too: its products on this thread alone
    for (int w = 0; w < nw; w++)
        if (j.rc[w]) {
            *err = j.err[w];
            return j.rc[w];
        }
    return CT_OK;
}

// Rows in one of mix_back's chunks: about 256 columns of head_dim hd each.
static int mix_rows(int hd) { return (256 + hd - 1) / hd; }

typedef struct {
    const attr_ctx *a;
    const attr_row *r;
    const float *Z;   // (n_live, H*hd)
    float *DV;        // (n_live, KV*hd)
    int l, ng, cs;
} mix_job;

// Worker w of nw: every nw-th chunk of mix_back's (see there), in its own buffer a->M + w * M_n.
static void mix_worker(void *arg, int w, int nw) {
    const mix_job *j = arg;
    const attr_ctx *a = j->a;
    int T = a->T, hd = a->hd, H = a->H, KV = a->KV, group = H / KV, k = 0;
    size_t qd = (size_t)H * hd, kvd = (size_t)KV * hd;
    float *X = a->M + (size_t)w * a->M_n;
    for (int g = 0; g < j->ng; g++)
    for (int c0 = a->gb[g]; c0 < a->gb[g + 1]; c0 += j->cs) {
        if (k++ % nw != w) continue;
        int c1 = c0 + j->cs < a->gb[g + 1] ? c0 + j->cs : a->gb[g + 1], Tc = j->r[c1 - 1].pos + 1, n = (c1 - c0) * hd;
        const int *first = a->first + (size_t)g * (T + 1);
        for (int h = 0; h < H; h++) {
            // X (Tc, n): head h of the chunk's rows, zero where a row is not live
            for (int t = 0; t < Tc; t++)
                for (int b = c0; b < c1; b++) {
                    float *x = X + (size_t)t * n + (size_t)(b - c0) * hd;
                    if (b < first[t]) memset(x, 0, sizeof(float) * hd);
                    else memcpy(x, j->Z + (size_t)at(a, t, b) * qd + (size_t)h * hd, sizeof(float) * hd);
                }
            ct_strmm_lower_t_here(Tc, n, a->fz->pattern[j->l] + (size_t)h * T * T, T, X, n);
            // into the live rows of DV: the group's first head copied, the others added
            for (int t = 0; t < Tc; t++)
                for (int b = c0 > first[t] ? c0 : first[t]; b < c1; b++) {
                    float *o = j->DV + (size_t)at(a, t, b) * kvd + (size_t)(h / group) * hd;
                    const float *x = X + (size_t)t * n + (size_t)(b - c0) * hd;
                    if (h % group == 0) memcpy(o, x, sizeof(float) * hd);
                    else
                        for (int i = 0; i < hd; i++) o[i] += x[i];
                }
        }
    }
}

// DV (n_live, KV*hd) = for each row of the layout's first ng groups: the sum over the heads h
// sharing a key/value head of dV_h = P_h^T Z_h, for Z (n_live, H*hd) the gradient at the
// attention's output (before W_O) and P_h the frozen pattern (lower triangular). Chunks of a
// group's rows with nearby positions (one product of about 256 columns each; at most g_pack rows)
// use only the leading positions their last row needs; the chunks are shared among the threads.
static void mix_back(attr_ctx *a, const attr_row *r, int ng, int l, const float *Z, float *DV) {
    int cs = mix_rows(a->hd);
    mix_job j = {a, r, Z, DV, l, ng, cs < g_pack ? cs : g_pack};
    double macs = 0.0;
    for (int g = 0; g < ng; g++)
        for (int c0 = a->gb[g]; c0 < a->gb[g + 1]; c0 += j.cs) {
            int c1 = c0 + j.cs < a->gb[g + 1] ? c0 + j.cs : a->gb[g + 1], Tc = r[c1 - 1].pos + 1;
            macs += (double)Tc * (Tc + 1) / 2 * (c1 - c0) * a->hd * a->H;
        }
    a->flops += 2.0 * macs;
    ct_parallel(n_split((int64_t)(macs / 16)), mix_worker, &j);   // one worker too: its products on this thread alone
}

// DV (n_live, KV*hd) at rows b0 .. b1-1, whose gradient Gp (n_live, D) at layer l's attention
// output is non-zero only at the row's own position p (read at this layer): Z = Gp[p] W_O (one
// vector per row); dV_h[k] = P_h[p, k] Z_h for k <= p.
static void single_back(attr_ctx *a, const attr_row *r, int b0, int b1, int l, const float *Gp, float *DV) {
    int n = b1 - b0, T = a->T, D = a->D, hd = a->hd, H = a->H, KV = a->KV, group = H / KV, qd = H * hd, kvd = KV * hd;
    float *X = a->A2, *Z = a->A2 + (size_t)n * D;   // X (n, D) the rows' gradients, Z (n, H*hd)
    for (int b = b0; b < b1; b++) memcpy(X + (size_t)(b - b0) * D, Gp + (size_t)at(a, r[b].pos, b) * D, sizeof(float) * D);
    mat_product(a, n, &a->m->layers[l].wo, X, Z);   // Z (n, H*hd) = X (n, D) @ W_O (D, H*hd)
    for (int b = b0; b < b1; b++) {
        int p = r[b].pos;
        for (int k = 0; k <= p; k++) {
            float *o = DV + (size_t)at(a, k, b) * kvd;
            memset(o, 0, sizeof(float) * kvd);
            for (int h = 0; h < H; h++) {
                float pk = a->fz->pattern[l][((size_t)h * T + p) * T + k];
                const float *z = Z + (size_t)(b - b0) * qd + (size_t)h * hd;
                float *oh = o + (size_t)(h / group) * hd;
                for (int i = 0; i < hd; i++) oh[i] += pk * z[i];
            }
        }
        a->flops += 2.0 * (p + 1) * H * hd;
    }
}

// The columns (B, n_cols) before column n (a cross-layer set's partial sums at the features of
// lower layers) to (send) or from rank peer, packed through a->xbuf.
static ct_status pass_prefix(attr_ctx *a, float *rows, int B, int64_t n, int peer, int send, ct_err *err) {
    size_t w = (size_t)n, bytes = sizeof(float) * (size_t)B * w;
    if (send)
        for (int b = 0; b < B; b++) memcpy(a->xbuf + b * w, rows + (size_t)b * a->n_cols, sizeof(float) * w);
    ct_status rc = send ? ct_dist_send(a->xbuf, bytes, peer, err) : ct_dist_recv(a->xbuf, bytes, peer, err);
    if (!rc && !send)
        for (int b = 0; b < B; b++) memcpy(rows + (size_t)b * a->n_cols, a->xbuf + b * w, sizeof(float) * w);
    return rc;
}

// A batch's packed layout. Its rows come in groups read at one layer (r[b].layer: a feature's,
// L for logit targets, the layer of residual-stream rows), the groups in descending order of
// their layer and each group's rows by position. A target's gradient is zero below its position,
// so a group holds at position t only its rows first[t] .. (its last): that segment lies at
// off[t], the segments of a group position after position, the groups one after another. A
// group's gradient is zero above its layer, so the pass at layer l runs only over the groups
// already read, the layout's leading rows, and each product over them is one product.
static void layout(attr_ctx *a, const attr_row *r, int B) {
    int T = a->T, ng = 0, ns = 0;
    int64_t n = 0;
    for (int b = 0; b < B; b++) {
        if (b == 0 || r[b].layer != r[b - 1].layer) a->gb[ng++] = b;
        a->grp[b] = ng - 1;
    }
    a->gb[ng] = B;
    a->n_groups = ng;
    for (int g = 0; g < ng; g++) {
        int *first = a->first + (size_t)g * (T + 1);
        int64_t *off = a->off + (size_t)g * (T + 1);
        a->gseg[g] = ns;
        for (int b = a->gb[g], t = 0; t <= T; t++) {
            while (b < a->gb[g + 1] && r[b].pos < t) b++;
            first[t] = b, off[t] = n;
            if (t < T && b < a->gb[g + 1]) a->seg_pos[ns] = t, a->seg_off[ns++] = n, n += a->gb[g + 1] - b;
        }
    }
    a->gseg[ng] = ns;
    a->seg_off[ns] = n;
}

// The layout's groups read above layer l (strictly: their gradient reaches its output), or at it too.
static int groups_above(const attr_ctx *a, const attr_row *r, int l, int strictly) {
    int g = 0;
    while (g < a->n_groups && (r[a->gb[g]].layer > l || (!strictly && r[a->gb[g]].layer == l))) g++;
    return g;
}

// rows (B, n_cols) += the direct effects of every column on each of the B targets, which come
// sorted by layer (descending), then position (see layout). Under the layer split each rank runs
// its own layers [lo, hi) of the pass: it takes the gradient (and a cross-layer set's partial sums
// at lower layers' features) from the rank above when the pass starts above it, and hands both to
// the rank below; rank 0 reads the token columns. Every value is computed as one process computes
// it, in the same order. A failure here leaves a neighbour waiting: it aborts the job
// (ct_dist_abort).
static ct_status run_layers(attr_ctx *a, const attr_row *r, int B, float *rows, ct_err *err);

static ct_status run_batch(attr_ctx *a, const attr_row *r, int B, float *rows, ct_err *err) {
    ct_status rc = run_layers(a, r, B, rows, err);
    if (rc && a->split) ct_dist_abort(err->msg);
    return rc;
}

static ct_status run_layers(attr_ctx *a, const attr_row *r, int B, float *rows, ct_err *err) {
    const ct_config *c = &a->m->cfg;
    const ct_transcoders *tc = a->tc;
    int L = a->L, T = a->T, D = a->D, me = ct_dist_rank();
    int64_t ldr = a->n_cols;
    layout(a, r, B);
    int64_t n_all = live_rows(a, a->n_groups);
    int top = r[0].layer;
    // the first layer the pass runs through (rows read at the residual stream entering layer `top`:
    // the one below it)
    int start = r[0].resid ? top - 1 : top < L ? top : L - 1;
    if (a->split && start < a->lo) return CT_OK;   // the pass does not reach this rank's layers
    float *G = a->G;
    int clt = tc->kind == CT_TC_CLT;
    ct_status rc = CT_OK;
    if (start >= a->hi) {   // (layer split) the rank above ran the layers before
        rc = ct_dist_recv(G, sizeof(float) * (size_t)n_all * D, me + 1, err);
        if (!rc && clt) rc = pass_prefix(a, rows, B, a->start[(int64_t)a->hi * T], me + 1, 0, err);
        if (rc) return rc;
    } else {
        memset(G, 0, sizeof(float) * (size_t)n_all * D);
        // logit targets: seed at the final norm's output; residual-stream rows: as they are
        for (int b = 0; b < B; b++)
            if (r[b].layer == L || r[b].resid) {
                float *g = G + (size_t)at(a, r[b].pos, b) * D;
                memcpy(g, r[b].vec, sizeof(float) * D);
                if (!r[b].resid) norm_back(a, g, g, a->fz->lnf_scale + r[b].pos, a->m->lnf_w, 0, 0);
                if (r[b].resid == 2)   // read at the attention's input: back through the frozen pre-attention norm
                    norm_back(a, g, g, a->fz->ln1_scale[r[b].layer] + r[b].pos, a->m->layers[r[b].layer].ln1_w, 0, 0);
            }
    }
    for (int l = start < a->hi ? start : a->hi - 1; l >= a->lo; l--) {
        const ct_tc_layer *tl = &tc->layers[l];
        const ct_layer *w = &a->m->layers[l];
        // 1. sources written at layer l's output hook, through the groups read above layer l
        int ng = groups_above(a, r, l, 1), ns = a->gseg[ng];
        int n_live = (int)live_rows(a, ng);
        if (ng > 0) {
            const float *GO = G;
            if (a->out_raw && c->post_norms) {   // raw MLP output: back through the post-FF norm
                norm_back(a, a->A1, G, a->fz->ln2_post_scale[l], w->post_ff_w, ns, 0);
                GO = a->A1;
            }
            if ((rc = sources_back(a, GO, l, ng, rows, err))) return rc;
            // 2. skip connection: PLT y = x W^T gives g_x = g_y W; CLT y = x W gives g_x = g_y W^T
            if (tl->W_skip) {
                float *GI = a->A2;
                ct_mat skip = {(const uint8_t *)tl->W_skip, CT_DT_F32, D, D, D, 1};   // (D, D) row-major
                if (tl->skip_mode == CT_SKIP_XW) skip = ct_mat_t(&skip);
                mat_product(a, n_live, &skip, GO, GI);
                if (a->input == CT_TC_IN_RESID_MID) {
                    for (size_t i = 0; i < (size_t)n_live * D; i++) G[i] += GI[i];
                } else {
                    norm_back(a, G, GI, a->fz->ln2_scale[l], a->input == CT_TC_IN_MLP_IN ? w->ln2_w : NULL, ns, 1);
                }
            }
        }
        // 3. feature targets of this layer: encoder rows at the input hook
        for (int b = 0; b < B; b++) {
            if (r[b].layer != l || r[b].resid) continue;
            float *g = G + (size_t)at(a, r[b].pos, b) * D, *v = a->v;
            memcpy(v, r[b].vec, sizeof(float) * D);
            if (a->input != CT_TC_IN_RESID_MID)
                norm_back(a, v, v, a->fz->ln2_scale[l] + r[b].pos, a->input == CT_TC_IN_MLP_IN ? w->ln2_w : NULL, 0, 0);
            for (int i = 0; i < D; i++) g[i] += v[i];
        }
        // 4. attention with frozen patterns, through the groups read at layer l or above:
        // Z = G' W_O; dV_h = P_h^T Z_h; G += N1^T(dV W_V)
        ng = groups_above(a, r, l, 0), ns = a->gseg[ng];
        n_live = (int)live_rows(a, ng);
        if (ng == 0) continue;
        const float *Gp = G;
        if (c->post_norms) {
            norm_back(a, a->A1, G, a->fz->ln1_post_scale[l], w->post_attn_w, ns, 0);
            Gp = a->A1;
        }
        // the groups whose gradient has gone through an attention (a prefix: what follows are read
        // at this layer, or are logit targets at the last layer, or residual-stream rows just
        // below their layer), then those whose gradient sits at one position per row, where
        // mixing is a scaled copy of the pattern row
        int nf = 0;
        while (nf < ng) {
            const attr_row *q = &r[a->gb[nf]];
            if ((!q->resid && q->layer == l) || (q->layer == L && l == L - 1) || (q->resid && l == q->layer - 1)) break;
            nf++;
        }
        CT_ASSERT(nf >= ng - 1);   // one fresh group at most: a batch holds one kind of row
        float *DV = a->A1 + (size_t)n_all * D;   // (n_live, KV*hd) past the end of XN's room
        if (nf > 0) {
            float *Z = a->A2;   // (its rows, H*hd)
            mat_product(a, (int)live_rows(a, nf), &w->wo, Gp, Z);
            mix_back(a, r, nf, l, Z, DV);
        }
        if (nf < ng) single_back(a, r, a->gb[nf], a->gb[ng], l, Gp, DV);
        float *XN = a->A1;   // (n_live, D) gradient at the attention input (after ln1)
        mat_product(a, n_live, &w->wv, DV, XN);
        norm_back(a, G, XN, a->fz->ln1_scale[l], w->ln1_w, ns, 1);
    }
    if (a->lo > 0) {   // (layer split) the rank below runs the layers after
        rc = ct_dist_send(G, sizeof(float) * (size_t)n_all * D, me - 1, err);
        if (!rc && clt) rc = pass_prefix(a, rows, B, a->start[(int64_t)a->lo * T], me - 1, 1, err);
        return rc;
    }
    // 5. token embeddings, every group read by now
    for (int g = 0; g < a->n_groups; g++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)g * (T + 1) + t;
            int f = a->first[i], e = a->gb[g + 1];
            if (f < e)
                gemm(a, 0, 1, e - f, 1, D, G + (size_t)a->off[i] * D, D, a->embed + (size_t)t * D, D, 1.0f,
                     rows + f * ldr + a->n_active + (int64_t)L * T + t, (int)ldr);
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
    // the unembedding's rows, on the rank that holds it (the layer split: the last; only it seeds
    // the logit rows)
    int unembed = a->hi == a->L;
    for (int v = 0; unembed && v < V; v++) {
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
            if (unembed) ct_mat_row(&m->lm_head, v, u);
            for (int i = 0; i < D; i++) tg[k].vec[i] = unembed ? (float)(u[i] - mean[i] / V) : 0.0f;
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

typedef struct {
    const float *sq;
    int64_t ld, n_rows, K;
    const double *x, *rowsum;
    double *nx;
} infl_job;

// Worker w of nw: nx[q] += sum_r x[r] / rowsum[r] * sq[r, q - K] for its share of the q
// (partial_influence's step), every sum in the order of r.
static void infl_worker(void *arg, int w, int nw) {
    const infl_job *j = arg;
    int64_t n = j->n_rows - j->K, q0 = j->K + n * w / nw, q1 = j->K + n * (w + 1) / nw;
    double *nx = j->nx;
    for (int64_t r = 0; r < j->n_rows; r++) {
        if (j->x[r] == 0.0) continue;
        double wgt = j->x[r] / (j->rowsum[r] > 1e-8 ? j->rowsum[r] : 1e-8);
        const float *row = j->sq + r * j->ld - j->K;   // row[q]: visit q - K, that is row q
        int64_t q = q0;
        for (; q + 16 <= q1; q += 16)   // fixed-size blocks vectorise at -O2
            for (int i = 0; i < 16; i++) nx[q + i] += wgt * row[q + i];
        for (; q < q1; q++) nx[q] += wgt * row[q];
    }
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
        infl_job j = {sq, ld, n_rows, K, x, rowsum, nx};
        ct_parallel(n_split((n_rows - K) * n_rows), infl_worker, &j);
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

// by layer (descending), then position, then index
static int cmp_layer_pos(const void *x, const void *y, void *ctx) {
    const int32_t *act = ctx;
    int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
    if (act[3 * i] != act[3 * j]) return act[3 * j] - act[3 * i];
    if (act[3 * i + 1] != act[3 * j + 1]) return act[3 * i + 1] - act[3 * j + 1];
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

// Computes batches of rows into bbuf (B, n_cols), then stores them: row sums, the values at the
// visited features' columns (sq), and the rows themselves.
typedef struct {
    ct_rowstore *store;
    float *bbuf;            // (B, n_cols); under MPI (HOLD_BATCHES, B, n_cols): this rank's batches of a group
    float *rbuf;            // (B, n_cols) another rank's batch, or NULL (one process)
    double *rowsum;         // (max rows,)
    float *sq;              // (max rows, ld) or NULL: values at the columns of visited features
    int64_t ld;
    const int64_t *visit;   // (ld,) feature of each visit index
    int64_t n_visit;        // visit indices known so far
} rows_state;

// batch (nb,) for the feature targets order[0..nb) (indices into a->active): each row's layer and
// position, and (vectors) its encoder row, read a layer at a time into a->enc
static ct_status feature_batch(attr_ctx *a, const int64_t *order, int nb, attr_row *batch, int vectors, ct_err *err) {
    for (int i = 0; i < nb; i++) {
        const int32_t *af = a->active + 3 * order[i];
        batch[i] = (attr_row){af[0], af[1], a->enc + (size_t)i * a->D, 0};
    }
    for (int l = a->lo; vectors && l < a->hi; l++) {   // the layers this rank runs
        int n = 0;
        for (int i = 0; i < nb; i++)
            if (batch[i].layer == l) a->feats[n] = a->active[3 * order[i] + 2], a->enc_rows[n++] = a->enc + (size_t)i * a->D;
        ct_status rc = n ? ct_tc_encoder_rows(a->tc, l, a->feats, n, a->enc_rows, err) : CT_OK;
        if (rc) return rc;
    }
    return CT_OK;
}

// Stores the rows (B, n_cols) of batch r.
static ct_status store_rows(attr_ctx *a, rows_state *rs, const attr_row *r, int B, const float *rows, ct_err *err) {
    int64_t nc = a->n_cols;
    ct_status rc = CT_OK;
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

// The rows to compute in one go: logit targets (tg, K of them) or features (order, n of them).
typedef struct {
    const target *tg;
    const int64_t *order;
    int64_t n;
} row_list;

// Batch j (rows j B ..) of list: the rows' layers and positions, and (vectors) their vectors. *nb: its rows.
static ct_status list_batch(attr_ctx *a, const row_list *list, int64_t j, int B, attr_row *batch, int *nb, int vectors,
                            ct_err *err) {
    int64_t i0 = j * B;
    *nb = list->n - i0 < B ? (int)(list->n - i0) : B;
    if (list->order) return feature_batch(a, list->order + i0, *nb, batch, vectors, err);
    for (int i = 0; i < *nb; i++) batch[i] = (attr_row){a->L, a->T - 1, list->tg[i0 + i].vec, 0};
    return CT_OK;
}

// Under MPI, batches are shared out a group of GROUP_PER_RANK x P at a time, each rank holding at
// most HOLD_BATCHES of a group's (its own, computed before the group is stored).
#define GROUP_PER_RANK 2
#define HOLD_BATCHES (GROUP_PER_RANK + 1)

// Owners of a group's n batches (owner (n,)): the longest first, each to the rank with the least
// work so far that holds fewer than HOLD_BATCHES (ties: the lower batch, the lower rank). A batch's
// work, estimated: 12 x its rows x the layers its backward runs through (its highest read layer +
// 1), plus over its rows the layers each one's gradient runs through times the positions it
// reaches ((layer + 1) (position + 1)); the weights fitted to the batches' times of a gemma-2-2b
// graph (23% error, against 27% and 45% for either term alone) when every row of a batch was
// carried from the batch's top layer; rows now start at their own layer (see layout), which the
// second term follows (the first, and the weights, not refitted since).
static ct_status share_out(attr_ctx *a, const row_list *list, int64_t j0, int n, int B, attr_row *batch, int P,
                           int *owner, ct_err *err) {
    int64_t *cost = calloc((size_t)n, sizeof *cost), *load = calloc((size_t)P, sizeof *load);
    int *held = calloc((size_t)P, sizeof *held), *done = calloc((size_t)n, sizeof *done);
    if (!cost || !load || !held || !done) {
        free(cost), free(load), free(held), free(done);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory sharing out %d batches among %d ranks", n, P);
    }
    for (int k = 0; k < n; k++) {
        int nb, top = 0;
        list_batch(a, list, j0 + k, B, batch, &nb, 0, NULL);
        for (int i = 0; i < nb; i++) {
            top = batch[i].layer > top ? batch[i].layer : top;
            cost[k] += (int64_t)(batch[i].layer + 1) * (batch[i].pos + 1);
        }
        cost[k] += 12 * (int64_t)nb * (top + 1);
    }
    for (int step = 0; step < n; step++) {
        int k = -1;
        for (int q = 0; q < n; q++)
            if (!done[q] && (k < 0 || cost[q] > cost[k])) k = q;
        int r = -1;
        for (int p = 0; p < P; p++)
            if (held[p] < HOLD_BATCHES && (r < 0 || load[p] < load[r])) r = p;
        done[k] = 1, owner[k] = r, held[r]++, load[r] += cost[k];
    }
    free(cost), free(load), free(held), free(done);
    return CT_OK;
}

// The columns rank r of p finishes under the layer split: its layers' features and error nodes,
// and on rank 0 the token nodes. span (3, 2): [first, end) of each.
static void own_columns(const attr_ctx *a, int r, int p, int64_t span[3][2]) {
    int lo, hi, T = a->T;
    ct_layer_share(a->L, r, p, &lo, &hi);
    span[0][0] = a->start[(int64_t)lo * T], span[0][1] = a->start[(int64_t)hi * T];
    span[1][0] = a->n_active + (int64_t)lo * T, span[1][1] = a->n_active + (int64_t)hi * T;
    span[2][0] = span[2][1] = a->n_active + (int64_t)a->L * T;
    if (r == 0) span[2][1] += T;
}

// The columns span (3, 2) of rows (B, n_cols) into a->xbuf, packed row after row (pack), or back.
static void pack_spans(attr_ctx *a, float *rows, int B, int64_t span[3][2], int pack) {
    float *x = a->xbuf;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < 3; k++) {
            size_t n = (size_t)(span[k][1] - span[k][0]);
            float *row = rows + (size_t)b * a->n_cols + span[k][0];
            memcpy(pack ? x : row, pack ? row : x, sizeof(float) * n);
            x += n;
        }
}

// Under the layer split every rank computes its part of each batch (run_batch), then each rank's
// finished columns (own_columns) go to every rank, rank after rank, so each holds the rows one
// process computes. Returns the bytes broadcast.
static ct_status share_columns(attr_ctx *a, float *rows, int B, double *bytes, ct_err *err) {
    int P = ct_dist_size();
    ct_status rc = CT_OK;
    *bytes = 0;
    for (int r = 0; r < P && !rc; r++) {
        int64_t span[3][2], w = 0;
        own_columns(a, r, P, span);
        for (int k = 0; k < 3; k++) w += span[k][1] - span[k][0];
        if (r == ct_dist_rank()) pack_spans(a, rows, B, span, 1);
        rc = ct_dist_bcast(a->xbuf, sizeof(float) * (size_t)B * (size_t)w, r, err);
        *bytes += sizeof(float) * (double)B * (double)w;
        if (!rc && r != ct_dist_rank()) pack_spans(a, rows, B, span, 0);
    }
    return rc;
}

// list_rows under the layer split: batch after batch through every rank (see run_batch).
static ct_status pipeline_rows(attr_ctx *a, rows_state *rs, const row_list *list, attr_row *batch, int B,
                               const ct_attr_opts *o, int64_t done0, int64_t total, ct_attr_stats *stats, ct_err *err) {
    int64_t n_batches = (list->n + B - 1) / B;
    ct_status rc = CT_OK;
    for (int64_t j = 0; !rc && j < n_batches; j++) {
        int nb;
        rc = list->order ? ct_ctx_check_cancel(o->ctx, err, "attribution stopped after %lld of %lld feature rows",
                                               (long long)(done0 + j * B), (long long)total)
                         : CT_OK;
        double t = ct_now();
        if ((rc = ct_dist_agree(rc, err))) break;   // every rank goes on, or none
        stats->comm_s += ct_now() - t;
        if ((rc = list_batch(a, list, j, B, batch, &nb, 1, err))) {
            ct_dist_abort(err->msg);
            break;
        }
        memset(rs->bbuf, 0, sizeof(float) * (size_t)nb * (size_t)a->n_cols);
        if ((rc = timed_batch(a, batch, nb, rs->bbuf, stats, err))) break;
        double bytes;
        t = ct_now();
        if ((rc = share_columns(a, rs->bbuf, nb, &bytes, err))) break;
        stats->comm_s += ct_now() - t, stats->comm_bytes += bytes;
        if ((rc = store_rows(a, rs, batch, nb, rs->bbuf, err))) break;
        if (list->order) report(o, "features", done0 + j * B + nb, total);
    }
    return rc;
}

// The rows of list, stored in order, by every rank. One process computes each batch and stores
// it. Under MPI the batches are shared out a group at a time (share_out: balanced by their work),
// each rank computes its own, then every batch is broadcast from its rank in order and stored by
// all. Each batch is the one a single process forms, so the rows have the same bits on any number
// of ranks (and threads). done0, total: progress before the list and in all (feature rows). A
// layer-split model's rows: pipeline_rows.
static ct_status list_rows(attr_ctx *a, rows_state *rs, const row_list *list, attr_row *batch, int B,
                           const ct_attr_opts *o, int64_t done0, int64_t total, ct_attr_stats *stats, ct_err *err) {
    if (a->split) return pipeline_rows(a, rs, list, batch, B, o, done0, total, stats, err);
    int P = ct_dist_size(), me = ct_dist_rank(), G = P == 1 ? 1 : GROUP_PER_RANK * P;
    int64_t n_batches = (list->n + B - 1) / B;
    size_t batch_floats = (size_t)B * (size_t)a->n_cols;
    int *owner = malloc(sizeof(int) * (size_t)G), *slot = malloc(sizeof(int) * (size_t)G);
    ct_status rc = owner && slot ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int64_t g0 = 0; !rc && g0 < n_batches; g0 += G) {
        int n = n_batches - g0 < G ? (int)(n_batches - g0) : G, nb, held = 0;
        if (P == 1) owner[0] = 0;
        else if ((rc = share_out(a, list, g0, n, B, batch, P, owner, err))) break;
        for (int k = 0; !rc && k < n; k++) {   // this rank's batches of the group
            if (owner[k] != me) continue;
            float *rows = rs->bbuf + (size_t)held * batch_floats;
            slot[k] = held++;
            rc = list->order ? ct_ctx_check_cancel(o->ctx, err, "attribution stopped after %lld of %lld feature rows",
                                                   (long long)(done0 + (g0 + k) * B), (long long)total)
                             : CT_OK;
            if (!rc) rc = list_batch(a, list, g0 + k, B, batch, &nb, 1, err);
            if (!rc) memset(rows, 0, sizeof(float) * (size_t)nb * (size_t)a->n_cols);
            if (!rc) rc = timed_batch(a, batch, nb, rows, stats, err);
        }
        double t = ct_now();
        if ((rc = ct_dist_agree(rc, err))) break;
        stats->comm_s += ct_now() - t;
        for (int k = 0; !rc && k < n; k++) {   // every batch of the group, in order
            float *rows = owner[k] == me ? rs->bbuf + (size_t)slot[k] * batch_floats : rs->rbuf;
            rc = list_batch(a, list, g0 + k, B, batch, &nb, 0, err);
            size_t bytes = sizeof(float) * (size_t)nb * (size_t)a->n_cols;
            t = ct_now();
            if (!rc) rc = ct_dist_bcast(rows, bytes, owner[k], err);
            if (P > 1) stats->comm_s += ct_now() - t, stats->comm_bytes += (double)bytes;
            if (!rc) rc = store_rows(a, rs, batch, nb, rows, err);
            if (!rc && list->order) report(o, "features", done0 + (g0 + k) * B + nb, total);
        }
    }
    free(owner), free(slot);
    return rc;
}

// FNV-1a of the clean run's active features, their activations' bits and the logit targets: what
// the ranks of an MPI job must share.
static uint64_t setup_checksum(const attr_ctx *a, const target *tg) {
    uint64_t h = ct_fnv1a(CT_FNV1A_START, a->active, sizeof(int32_t) * 3 * (size_t)a->n_active);
    h = ct_fnv1a(h, a->act_val, sizeof(float) * (size_t)a->n_active);
    for (int k = 0; k < a->K; k++) h = ct_fnv1a(h, &tg[k].vocab_id, sizeof tg[k].vocab_id);
    return ct_fnv1a(h, &a->n_cols, sizeof a->n_cols);
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

// The context of a prompt of T tokens on rm (its layers: those the model holds).
static attr_ctx ctx_of(const ct_replacement *rm, int T) {
    const ct_model *m = rm->m;
    attr_ctx a = {.m = rm->m, .tc = rm->tc, .L = m->cfg.n_layers, .T = T, .D = m->cfg.d_model, .H = m->cfg.n_heads,
                  .KV = m->cfg.n_kv_heads, .hd = m->cfg.head_dim, .input = rm->input, .out_raw = rm->out_raw,
                  .n_const = rm->n_const, .split = ct_model_is_split(m), .lo = 0, .hi = m->cfg.n_layers};
    if (a.split) a.lo = m->hold_lo, a.hi = m->hold_hi;
    return a;
}

// The backward passes' scratch for batches of B rows (a->G .. a->feats; see attr_ctx).
static ct_status ctx_scratch(attr_ctx *a, int B, ct_err *err) {
    int T = a->T, D = a->D;
    size_t qd = (size_t)a->H * a->hd, kvd = (size_t)a->KV * a->hd, wmax = (size_t)D > qd ? (size_t)D : qd;
    size_t s1 = (size_t)T * B * (D + kvd), s2 = (size_t)T * B * wmax;
    if (s2 < (size_t)B * (D + qd)) s2 = (size_t)B * (D + qd);
    a->G = malloc(sizeof(float) * (size_t)T * B * D);
    a->A1 = malloc(sizeof(float) * s1);
    a->A2 = malloc(sizeof(float) * s2);
    ct_advise_huge(a->G, sizeof(float) * (size_t)T * B * D);
    ct_advise_huge(a->A1, sizeof(float) * s1);
    ct_advise_huge(a->A2, sizeof(float) * s2);
    a->S_workers = ct_get_threads() < CT_MAX_WORKERS ? ct_get_threads() : CT_MAX_WORKERS;
    a->S_n = (size_t)(a->max_block + 1) * D;
    a->S = malloc(sizeof(float) * a->S_n * (size_t)a->S_workers);
    a->M_n = (size_t)T * mix_rows(a->hd) * a->hd;
    a->M = malloc(sizeof(float) * a->M_n * (size_t)a->S_workers);
    a->v = malloc(sizeof(float) * (size_t)D);
    a->gain = malloc(sizeof(float) * (size_t)D);
    for (int l = a->lo; l < a->hi; l++) {   // room for W_O or W_V converted, when one is not read in place
        const ct_mat *wo = &a->m->layers[l].wo, *wv = &a->m->layers[l].wv;
        size_t no = ct_mat_in_place(wo) ? 0 : (size_t)wo->rows * wo->cols, nv = ct_mat_in_place(wv) ? 0 : (size_t)wv->rows * wv->cols;
        if (no > a->tile_n) a->tile_n = no;
        if (nv > a->tile_n) a->tile_n = nv;
    }
    a->tile = a->tile_n ? malloc(sizeof(float) * a->tile_n) : NULL;
    size_t n_seg = (size_t)(a->L + 1) * (T + 1);   // a layout's groups: at most one per layer and the logits'
    a->grp = malloc(sizeof(int) * (size_t)B);
    a->gb = malloc(sizeof(int) * (size_t)(a->L + 2));
    a->first = malloc(sizeof(int) * n_seg);
    a->off = malloc(sizeof(int64_t) * n_seg);
    a->gseg = malloc(sizeof(int) * (size_t)(a->L + 2));
    a->seg_pos = malloc(sizeof(int) * n_seg);
    a->seg_off = malloc(sizeof(int64_t) * n_seg);
    a->enc = malloc(sizeof(float) * (size_t)B * D);
    a->enc_rows = malloc(sizeof(float *) * (size_t)B);
    a->feats = malloc(sizeof(int64_t) * (size_t)B);
    if (!a->G || !a->A1 || !a->A2 || !a->S || !a->M || !a->v || !a->gain || (a->tile_n && !a->tile) || !a->grp || !a->gb ||
        !a->first || !a->off || !a->gseg || !a->seg_pos || !a->seg_off ||
        !a->enc || !a->enc_rows || !a->feats)
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for attribution scratch (batch of %d rows, %lld columns)", B,
                       (long long)a->n_cols);
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
    attr_ctx a = ctx_of(rm, T);
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
    // memory: rows in RAM up to half the limit (else in a file); the batch's scratch (see
    // run_batch) within a quarter, by fewer rows per batch when needed
    size_t limit = o->memory_limit ? o->memory_limit : CT_ATTR_MEMORY_LIMIT;
    size_t qd = (size_t)a.H * a.hd, kvd = (size_t)a.KV * a.hd, wmax = (size_t)D > qd ? (size_t)D : qd;
    size_t per_row = sizeof(float) * ((size_t)T * (D + D + kvd + wmax) + (size_t)a.n_cols);   // G, A1, A2, its row
    int B = o->batch_size;
    while (B > 1 && (size_t)B * per_row > limit / 4) B /= 2;
    stats.batch_size = B;
    if ((rc = ctx_scratch(&a, B, err))) goto done;
    ct_row_layout lay = {L, T, NA, a.n_cols, a.start};
    if ((rc = ct_rowstore_open(&rs.store, &lay, n_rows, limit / 2, err))) goto done;
    int row_split = ct_dist_size() > 1 && !a.split;   // MPI without the layer split: batches shared out
    rs.bbuf = malloc(sizeof(float) * (row_split ? HOLD_BATCHES : 1) * (size_t)B * (size_t)a.n_cols);
    if (row_split) rs.rbuf = malloc(sizeof(float) * (size_t)B * (size_t)a.n_cols);
    if (a.split) a.xbuf = malloc(sizeof(float) * (size_t)B * (size_t)a.n_cols);
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
    if (!rs.bbuf || (row_split && !rs.rbuf) || (a.split && !a.xbuf) || !rs.rowsum || (budget < NA && !rs.sq) || !visit ||
        !row_node || !order || !pick || !infl || !visited || !batch) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for attribution scratch (batch of %d rows, %lld columns)", B,
                     (long long)a.n_cols);
        goto done;
    }

    // under MPI: every rank must hold the same clean run (active features and their activations,
    // logit targets), or the rows they share would not fit together
    if ((rc = ct_dist_same(setup_checksum(&a, tg), "active features, activations and logit targets", err))) goto done;

    // logit rows
    for (int k = 0; k < K; k++) row_node[k] = NA + (int64_t)(L + 1) * T + k;
    row_list logit_rows = {tg, NULL, K};
    if ((rc = list_rows(&a, &rs, &logit_rows, batch, B, o, 0, K, &stats, err))) goto done;
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
        // batch by layer (descending), then position, as run_batch wants
        qsort(order, (size_t)n_pending, sizeof(int64_t), cmp_index);
        for (int64_t i0 = 0; i0 < n_pending; i0 += B) {
            int nb = n_pending - i0 < B ? (int)(n_pending - i0) : B;
            qsort_r(order + i0, (size_t)nb, sizeof(int64_t), cmp_layer_pos, a.active);
        }
        for (int64_t i = 0; i < n_pending; i++) {
            visit[n_visited + i] = order[i];
            visited[order[i]] = 1;
            row_node[K + n_visited + i] = order[i];
        }
        rs.n_visit = n_visited + n_pending;
        if (rs.sq && (rc = fill_sq(&rs, n_visited, n_visited + n_pending, err))) goto done;
        row_list feature_rows = {NULL, order, n_pending};
        if ((rc = list_rows(&a, &rs, &feature_rows, batch, B, o, n_visited, budget, &stats, err))) goto done;
        n_visited += n_pending;
    }
    stats.features_s = (t1 = ct_now()) - t0;
    stats.backward_flops = a.flops;
    stats.backward_rows = a.prod_rows;
    stats.backward_gemm_s = a.gemm_s;
    stats.n_active = NA;
    stats.n_rows = ct_rowstore_rows(rs.store);
    stats.spilled = ct_rowstore_spilled(rs.store);
    stats.row_bytes = ct_rowstore_bytes(rs.store);
    // the scratch is done with; the graph takes its room, and the clean run's when that is more
    // than a quarter of the working memory (else it stays for interventions on the same prompt; a
    // layer-split model's is always released, on every rank alike: it serves nothing else)
    free(rs.sq), free(rs.bbuf), free(rs.rbuf), free(a.G), free(a.A1), free(a.A2);
    rs.sq = NULL, rs.bbuf = rs.rbuf = NULL, a.G = a.A1 = a.A2 = NULL;
    if (a.split || ct_clean_run_bytes(rm->clean) > limit / 4) ct_replacement_release(rm);

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
    g->n_heads = m->cfg.n_heads, g->n_kv_heads = m->cfg.n_kv_heads, g->d_head = m->cfg.head_dim, g->d_mlp = m->cfg.d_mlp;
    snprintf(g->architecture, sizeof g->architecture, "%s", m->cfg.architecture);
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
    ct_advise_huge(g->adj, sizeof(float) * (size_t)(S + K) * (size_t)N);
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
        int custom = tg[k].vocab_id >= a.m->cfg.vocab_size;   // its direction kept (edge heads read it)
        g->logits[k] = (ct_logit_target){tg[k].vocab_id, tg[k].prob, tg[k].label, custom ? tg[k].vec : NULL};
        tg[k].label = NULL;
        if (custom) tg[k].vec = NULL;
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
    free(rs.bbuf), free(rs.rbuf), free(rs.rowsum), free(rs.sq), free(visit);
    free(row_node), free(order), free(pick), free(infl), free(visited), free(batch), free(col_of);
    ctx_free(&a);
    *out = g;
    return rc;
}

ct_status ct_attribute_resid(ct_replacement *rm, const int *tokens, int T, int layer, int attn_in, const int *pos,
                             const float *vec, int n, ct_resid_rows *out, ct_err *err) {
    memset(out, 0, sizeof *out);
    ct_model *m = rm->m;
    int L = m->cfg.n_layers, D = m->cfg.d_model;
    if (ct_model_is_split(m))
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "residual-stream rows: not on a layer-split model (it holds layers %d..%d)",
                       m->hold_lo, m->hold_hi - 1);
    if (T < 1 || layer < 0 || layer > L - (attn_in != 0) || n < 1)
        return ct_fail(err, CT_STATUS_BAD_ARG, "residual-stream rows: %d rows at layer %d of 0..%d over %d tokens", n, layer, L, T);
    for (int i = 0; i < n; i++)
        if (pos[i] < 0 || pos[i] >= T || (i > 0 && pos[i] < pos[i - 1]))
            return ct_fail(err, CT_STATUS_BAD_ARG, "residual-stream rows: position %d (row %d) outside 0..%d or out of order",
                           pos[i], i + 1, T - 1);
    attr_ctx a = ctx_of(rm, T);
    attr_row *batch = malloc(sizeof *batch * (size_t)n);
    ct_status rc = batch ? take_clean_run(&a, rm, tokens, err) : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    a.n_cols = a.n_active + (int64_t)(L + 1) * T;
    if (!rc) rc = ctx_scratch(&a, n, err);
    float *rows = rc ? NULL : calloc((size_t)n * (size_t)a.n_cols, sizeof(float));
    if (!rc && !rows) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for %d rows of %lld columns", n, (long long)a.n_cols);
    for (int i = 0; !rc && i < n; i++) batch[i] = (attr_row){layer, pos[i], vec + (size_t)i * D, attn_in ? 2 : 1};
    if (!rc) rc = run_batch(&a, batch, n, rows, err);
    if (!rc) {
        *out = (ct_resid_rows){a.n_active, a.n_cols, a.active, a.act_val, rows};
        a.active = NULL, a.act_val = NULL, rows = NULL;
    }
    free(rows), free(batch);
    ctx_free(&a);
    return rc;
}

void ct_resid_rows_free(ct_resid_rows *r) {
    free(r->active), free(r->act), free(r->rows);
    memset(r, 0, sizeof *r);
}
