// train.c - per-layer transcoder training (see train.h).
#include "model/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fileio.h"
#include "core/tensor.h"
#include "formats/safetensors.h"

// ----------------------------------------------------------------------------
// Random numbers (splitmix64 seeding, ct_rand_u64: xorshift64*)

static double rng_unit(uint64_t *s) { return (double)(ct_rand_u64(s) >> 11) / 9007199254740992.0; }

static double rng_normal(uint64_t *s) {   // Box-Muller
    double u = rng_unit(s), v = rng_unit(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * M_PI * v);
}

// ----------------------------------------------------------------------------
// Parameters and Adam state in one block: per layer l, W_enc (F, D), b_enc (F),
// W_dec (F, L - l, D), b_dec (D) (target layer l's bias), W_skip (D, D) when skip (one layer).

enum { P_WENC, P_BENC, P_WDEC, P_BDEC, P_WSKIP, P_N };

typedef struct {
    int L, D, F, skip;
    size_t *off;           // (L * P_N + 1,) offsets into the flat vectors
    float *p, *g, *m, *v;  // (n,) each
    size_t n;
    long step, tokens;
    uint64_t rng;
    long *last_fired;      // (L, F) token count when each feature last fired
    float *sx, *sy;        // (L,) input and target scales
} state;

#define OFF(s, l, i) ((s)->off[(size_t)(l) * P_N + (i)])
#define PARAM(s, l, i) ((s)->p + OFF(s, l, i))
#define GRAD(s, l, i) ((s)->g + OFF(s, l, i))

static void state_free(state *s) {
    free(s->off), free(s->p), free(s->g), free(s->m), free(s->v), free(s->last_fired), free(s->sx), free(s->sy);
    memset(s, 0, sizeof *s);
}

static int state_init(state *s, int L, int D, int F, int skip) {
    memset(s, 0, sizeof *s);
    s->L = L, s->D = D, s->F = F, s->skip = skip;
    s->off = calloc((size_t)L * P_N + 1, sizeof(size_t));
    if (!s->off) return 0;
    size_t at = 0;
    for (int l = 0; l < L; l++) {
        size_t sizes[P_N] = {(size_t)F * D, (size_t)F, (size_t)F * (L - l) * D, (size_t)D, skip ? (size_t)D * D : 0};
        for (int i = 0; i < P_N; i++) s->off[(size_t)l * P_N + i] = at, at += sizes[i];
    }
    s->off[(size_t)L * P_N] = at;
    s->n = at;
    s->p = calloc(s->n, sizeof(float));
    s->g = calloc(s->n, sizeof(float));
    s->m = calloc(s->n, sizeof(float));
    s->v = calloc(s->n, sizeof(float));
    s->last_fired = calloc((size_t)L * F, sizeof(long));
    s->sx = calloc((size_t)L, sizeof(float));
    s->sy = calloc((size_t)L, sizeof(float));
    return s->p && s->g && s->m && s->v && s->last_fired && s->sx && s->sy;
}

// Every feature's whole decoder (all its target slices) to unit norm.
static void normalize_decoders(state *s) {
    for (int l = 0; l < s->L; l++) {
        size_t w = (size_t)(s->L - l) * s->D;
        float *W = PARAM(s, l, P_WDEC);
        for (int f = 0; f < s->F; f++) {
            double n = 0;
            for (size_t d = 0; d < w; d++) n += (double)W[f * w + d] * W[f * w + d];
            float inv = n > 0 ? (float)(1.0 / sqrt(n)) : 0.0f;
            for (size_t d = 0; d < w; d++) W[f * w + d] *= inv;
        }
    }
}

// ----------------------------------------------------------------------------
// Checkpoints: the state as a safetensors file (parameters, Adam moments, counters)

static ct_status save_state(ct_ctx *ctx, const state *s, const char *path, ct_err *err) {
    int64_t ints[4] = {s->step, s->tokens, (int64_t)s->rng, s->L};
    size_t nf = (size_t)s->L * s->F;
    int64_t *lf = malloc(sizeof(int64_t) * nf);
    float *sc = malloc(sizeof(float) * 2 * (size_t)s->L);
    if (!lf || !sc) {
        free(lf), free(sc);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    for (size_t f = 0; f < nf; f++) lf[f] = s->last_fired[f];
    memcpy(sc, s->sx, sizeof(float) * (size_t)s->L);
    memcpy(sc + s->L, s->sy, sizeof(float) * (size_t)s->L);
    ct_st_entry e[] = {
        {.name = "params", .dtype = CT_DT_F32, .ndim = 1, .shape = {(int64_t)s->n}, .data = s->p},
        {.name = "adam_m", .dtype = CT_DT_F32, .ndim = 1, .shape = {(int64_t)s->n}, .data = s->m},
        {.name = "adam_v", .dtype = CT_DT_F32, .ndim = 1, .shape = {(int64_t)s->n}, .data = s->v},
        {.name = "counters", .dtype = CT_DT_I64, .ndim = 1, .shape = {4}, .i64 = ints},
        {.name = "last_fired", .dtype = CT_DT_I64, .ndim = 1, .shape = {(int64_t)nf}, .i64 = lf},
        {.name = "scales", .dtype = CT_DT_F32, .ndim = 1, .shape = {2 * s->L}, .data = sc},
    };
    ct_status rc = ct_safetensors_write(ctx, path, e, 6, NULL, 0, err);
    free(lf), free(sc);
    return rc;
}

static ct_status load_state(ct_ctx *ctx, state *s, const char *path, ct_err *err) {
    ct_safetensors *st;
    ct_status rc = ct_safetensors_open(ctx, &st, path, err);
    if (rc) return rc;
    const char *names[] = {"params", "adam_m", "adam_v"};
    float *dst[] = {s->p, s->m, s->v};
    for (int i = 0; i < 3 && !rc; i++) {
        const ct_st_tensor *t = ct_safetensors_find(st, names[i]);
        if (!t || t->dtype != CT_DT_F32 || ct_st_numel(t) != (int64_t)s->n)
            rc = ct_fail(err, CT_STATUS_BAD_SHAPE, "checkpoint %s: '%s' missing or not %zu floats (other width or skip?)",
                         path, names[i], s->n);
        else memcpy(dst[i], t->data, sizeof(float) * s->n);
    }
    size_t nf = (size_t)s->L * s->F;
    const ct_st_tensor *c = ct_safetensors_find(st, "counters"), *lf = ct_safetensors_find(st, "last_fired"),
                       *sc = ct_safetensors_find(st, "scales");
    if (!rc && (!c || c->dtype != CT_DT_I64 || ct_st_numel(c) != 4 || !lf || lf->dtype != CT_DT_I64 ||
                ct_st_numel(lf) != (int64_t)nf || !sc || sc->dtype != CT_DT_F32 || ct_st_numel(sc) != 2 * s->L))
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "checkpoint %s: counters, last_fired or scales missing", path);
    if (!rc) {
        int64_t ints[4];
        memcpy(ints, c->data, sizeof ints);
        s->step = (long)ints[0], s->tokens = (long)ints[1], s->rng = (uint64_t)ints[2];
        for (size_t f = 0; f < nf; f++) {
            int64_t v;
            memcpy(&v, lf->data + 8 * f, 8);
            s->last_fired[f] = (long)v;
        }
        memcpy(s->sx, sc->data, sizeof(float) * (size_t)s->L);
        memcpy(s->sy, sc->data + sizeof(float) * (size_t)s->L, sizeof(float) * (size_t)s->L);
    }
    ct_safetensors_free(st);
    return rc;
}

// ----------------------------------------------------------------------------
// Training

// Backward through feature f of layer l with activation a, for token b: out gradients gy
// (L, B, D) of the targets t >= l (t_max: the last target used), input x (D,):
// dW_dec[f, t-l] += a gy_t; dpre = sum_t gy_t . W_dec[f, t-l]; db_enc += dpre; dW_enc[f] += dpre x.
static void feature_backward(state *s, int l, int f, float a, const float *gy, int B, int b, int t_max, const float *x) {
    int D = s->D, w = (s->L - l) * D;
    const float *wd = PARAM(s, l, P_WDEC) + (size_t)f * w;
    float *gwd = GRAD(s, l, P_WDEC) + (size_t)f * w, *gwe = GRAD(s, l, P_WENC) + (size_t)f * D;
    double ga = 0;
    for (int t = l; t <= t_max; t++) {
        const float *g = gy + ((size_t)t * B + b) * D;
        for (int d = 0; d < D; d++) {
            gwd[(t - l) * D + d] += a * g[d];
            ga += (double)g[d] * wd[(t - l) * D + d];
        }
    }
    GRAD(s, l, P_BENC)[f] += (float)ga;
    for (int d = 0; d < D; d++) gwe[d] += (float)ga * x[d];
}

// y (D,) += a * W_dec_l[f, t - l, :]
static void add_decoder(const state *s, int l, int f, int t, float a, float *y) {
    const float *w = PARAM(s, l, P_WDEC) + (size_t)f * (s->L - l) * s->D + (size_t)(t - l) * s->D;
    for (int d = 0; d < s->D; d++) y[d] += a * w[d];
}

ct_status ct_train_clt(const float *const *xs, const float *const *ys, int L, long n, int D, const ct_train_opts *o,
                       ct_clt_params *out, ct_err *err) {
    memset(out, 0, sizeof *out);
    int F = o->d_tc, K = o->k, KA = o->k_aux, B = o->batch;
    if (F == D)
        return ct_fail(err, CT_STATUS_BAD_ARG, "train: d_transcoder %d equals d_model; the circuit-tracer layout cannot tell "
                       "a square W_dec's orientation, so choose another width", F);
    if (L < 1 || F < 1 || K < 1 || K > F || KA < 0 || KA > F || B < 1 || o->steps < 1 || n < 1 || !(o->lr > 0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "train: need d_tc >= 1, 1 <= k <= d_tc, 0 <= k_aux <= d_tc, batch >= 1, "
                       "steps >= 1, lr > 0 and data (got d_tc %d, k %d, k_aux %d, batch %d, steps %ld, lr %g, %ld tokens)",
                       F, K, KA, B, o->steps, o->lr, n);
    if (o->skip && L > 1) return ct_fail(err, CT_STATUS_UNSUPPORTED, "train: skip connections are trained for per-layer sets only");
    state s;
    if (!state_init(&s, L, D, F, o->skip)) {
        state_free(&s);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a %d-layer %d x %d transcoder", L, F, D);
    }
    ct_status rc = CT_OK;
    struct stat sb;
    if (o->resume && o->checkpoint && stat(o->checkpoint, &sb) == 0) {
        rc = load_state(o->ctx, &s, o->checkpoint, err);
    } else {
        s.rng = o->seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
        if (!s.rng) s.rng = 1;
        for (int l = 0; l < L; l++) {
            // scales: unit mean square per dimension (float: checkpoints store them exactly)
            double sxx = 0, syy = 0;
            for (long i = 0; i < n * D; i++) sxx += (double)xs[l][i] * xs[l][i], syy += (double)ys[l][i] * ys[l][i];
            s.sx[l] = (float)(sqrt(sxx / ((double)n * D)) + 1e-12);
            s.sy[l] = (float)(sqrt(syy / ((double)n * D)) + 1e-12);
            // decoders random unit vectors, encoder = the decoder's first slice (transposed), b_dec = mean target
            float *Wd = PARAM(&s, l, P_WDEC), *bd = PARAM(&s, l, P_BDEC);
            for (size_t i = 0; i < (size_t)F * (L - l) * D; i++) Wd[i] = (float)rng_normal(&s.rng);
            for (long i = 0; i < n; i++)
                for (int d = 0; d < D; d++) bd[d] += (float)(ys[l][(size_t)i * D + d] / s.sy[l] / n);
        }
        normalize_decoders(&s);
        for (int l = 0; l < L; l++)
            for (int f = 0; f < F; f++)
                memcpy(PARAM(&s, l, P_WENC) + (size_t)f * D, PARAM(&s, l, P_WDEC) + (size_t)f * (L - l) * D,
                       sizeof(float) * (size_t)D);
    }
    size_t LBD = (size_t)L * B * D;
    float *xb = malloc(sizeof(float) * LBD), *yb = malloc(sizeof(float) * LBD), *yh = malloc(sizeof(float) * LBD);
    float *gy = malloc(sizeof(float) * LBD), *pre = malloc(sizeof(float) * (size_t)L * B * F);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)L * B * K);   // (L, B, K) the kept (TopK) features
    int64_t *ia = malloc(sizeof(int64_t) * (size_t)(KA + 1));      // (KA,) AuxK features of one token
    int *dead = malloc(sizeof(int) * (size_t)F);                    // (F,) the dead features of a layer
    float *dv = malloc(sizeof(float) * (size_t)F);                  // (F,) their pre-activations for one token
    long *rows = malloc(sizeof(long) * (size_t)B);
    float *ea = malloc(sizeof(float) * (size_t)D), *ga_aux = malloc(sizeof(float) * (size_t)B * D * L);
    double *mean = malloc(sizeof(double) * (size_t)D);
    if (!rc && (!xb || !yb || !yh || !gy || !pre || !idx || !ia || !dead || !dv || !rows || !ea || !ga_aux || !mean))
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a batch of %d", B);
    double w0 = ct_now();
    long step0 = s.step;
    double log_loss = 0, log_num = 0, log_den = 0, log_l0 = 0;
    int log_n = 0;
    while (!rc && s.step < o->steps) {
        if ((rc = ct_ctx_check_cancel(o->ctx, err, "training stopped at step %ld", s.step))) {
            break;
        }
        for (int b = 0; b < B; b++) rows[b] = (long)(ct_rand_u64(&s.rng) % (uint64_t)n);
        memset(s.g, 0, sizeof(float) * s.n);
        double loss = 0, var = 0, l0 = 0;
        for (int l = 0; l < L; l++) {   // inputs, targets, encoders, biases, skip
            float *x = xb + (size_t)l * B * D, *y = yb + (size_t)l * B * D, *h = yh + (size_t)l * B * D;
            float *pl = pre + (size_t)l * B * F;
            const float *be = PARAM(&s, l, P_BENC), *bd = PARAM(&s, l, P_BDEC);
            for (int b = 0; b < B; b++)
                for (int d = 0; d < D; d++) {
                    x[(size_t)b * D + d] = (float)(xs[l][(size_t)rows[b] * D + d] / s.sx[l]);
                    y[(size_t)b * D + d] = (float)(ys[l][(size_t)rows[b] * D + d] / s.sy[l]);
                }
            // pre (B, F) = x (B, D) @ W_enc^T + b_enc
            ct_sgemm(0, 1, B, F, D, 1.0f, x, D, PARAM(&s, l, P_WENC), D, 0.0f, pl, F);
            for (int b = 0; b < B; b++) {
                for (int f = 0; f < F; f++) pl[(size_t)b * F + f] += be[f];
                memcpy(h + (size_t)b * D, bd, sizeof(float) * (size_t)D);
            }
            if (s.skip) ct_sgemm(0, 1, B, D, D, 1.0f, x, D, PARAM(&s, l, P_WSKIP), D, 1.0f, h, D);
        }
        // TopK as circuit-tracer defines it: the K largest pre-activations kept as they are, negative
        // ones included (largest first, ties: lower index), and the decoders into every target t >= l.
        // A kept feature is active (fires) when its value is non-zero.
        for (int l = 0; l < L; l++)
            for (int b = 0; b < B; b++) {
                int64_t *ib = idx + ((size_t)l * B + b) * K;
                const float *pr = pre + ((size_t)l * B + b) * F;
                ct_topk(ib, pr, F, K);
                for (int j = 0; j < K; j++) {
                    int f = (int)ib[j];
                    if (pr[f] == 0.0f) continue;
                    l0 += 1;
                    s.last_fired[(size_t)l * F + f] = s.tokens + b;
                    for (int t = l; t < L; t++) add_decoder(&s, l, f, t, pr[f], yh + ((size_t)t * B + b) * D);
                }
            }
        for (int t = 0; t < L; t++) {   // loss and its gradient per target
            const float *y = yb + (size_t)t * B * D, *h = yh + (size_t)t * B * D;
            float *g = gy + (size_t)t * B * D;
            for (int d = 0; d < D; d++) mean[d] = 0;
            for (int b = 0; b < B; b++)
                for (int d = 0; d < D; d++) mean[d] += y[(size_t)b * D + d] / B;
            for (size_t i = 0; i < (size_t)B * D; i++) {
                double e = h[i] - y[i], c = y[i] - mean[i % (size_t)D];
                loss += e * e;
                var += c * c;
                g[i] = (float)(2.0 * e / B);
            }
        }
        for (int l = 0; l < L; l++) {   // backward: act = pre on the kept entries, so d act / d pre = 1 there
            for (int b = 0; b < B; b++)
                for (int j = 0; j < K; j++) {
                    int f = (int)idx[((size_t)l * B + b) * K + j];
                    feature_backward(&s, l, f, pre[((size_t)l * B + b) * F + f], gy, B, b, L - 1, xb + ((size_t)l * B + b) * D);
                }
            float *gbd = GRAD(&s, l, P_BDEC);
            for (int b = 0; b < B; b++)
                for (int d = 0; d < D; d++) gbd[d] += gy[((size_t)l * B + b) * D + d];
            if (s.skip)   // dW_skip (D, D) = gy^T (D, B) @ x (B, D)
                ct_sgemm(1, 0, D, D, B, 1.0f, gy + (size_t)l * B * D, D, xb + (size_t)l * B * D, D, 0.0f,
                         GRAD(&s, l, P_WSKIP), D);
        }
        // AuxK: each layer's dead features reconstruct the residual of its own target
        int n_dead_all = 0;
        for (int l = 0; l < L; l++) {
            int n_dead = 0;
            for (int f = 0; f < F; f++)
                if (s.tokens - s.last_fired[(size_t)l * F + f] > o->dead_tokens && s.step > 0) dead[n_dead++] = f;
            n_dead_all += n_dead;
            if (KA == 0 || n_dead == 0) continue;
            int ka = KA < n_dead ? KA : n_dead;
            float *g = ga_aux + (size_t)l * B * D;   // laid out as gy: target l's rows, each written before use
            for (int b = 0; b < B; b++) {
                const float *pr = pre + ((size_t)l * B + b) * F;
                // the ka largest pre-activations among the dead features, kept as they are (the same
                // TopK as the main path; ties: lower index)
                for (int i = 0; i < n_dead; i++) dv[i] = pr[dead[i]];
                ct_topk(ia, dv, n_dead, ka);
                for (int j = 0; j < ka; j++) ia[j] = dead[ia[j]];
                for (int d = 0; d < D; d++) ea[d] = 0;
                for (int j = 0; j < ka; j++) add_decoder(&s, l, (int)ia[j], l, pr[ia[j]], ea);
                const float *h = yh + ((size_t)l * B + b) * D, *y = yb + ((size_t)l * B + b) * D;
                for (int d = 0; d < D; d++) g[(size_t)b * D + d] = (float)(2.0 * o->aux_coef * (ea[d] - (y[d] - h[d])) / B);
                for (int j = 0; j < ka; j++)
                    feature_backward(&s, l, (int)ia[j], pr[ia[j]], ga_aux, B, b, l, xb + ((size_t)l * B + b) * D);
            }
        }
        // Adam
        s.step++;
        double b1 = 0.9, b2 = 0.999, bc1 = 1 - pow(b1, (double)s.step), bc2 = 1 - pow(b2, (double)s.step);
        for (size_t i = 0; i < s.n; i++) {
            s.m[i] = (float)(b1 * s.m[i] + (1 - b1) * s.g[i]);
            s.v[i] = (float)(b2 * s.v[i] + (1 - b2) * (double)s.g[i] * s.g[i]);
            s.p[i] -= (float)(o->lr * (s.m[i] / bc1) / (sqrt(s.v[i] / bc2) + 1e-8));
        }
        normalize_decoders(&s);
        s.tokens += B;
        log_loss += loss / B, log_num += loss, log_den += var, log_l0 += l0 / B / L, log_n++;
        if ((o->log_every > 0 && s.step % o->log_every == 0) || s.step == o->steps) {
            double dt = ct_now() - w0;
            ct_train_progress p = {o->layer, s.step, o->steps, log_loss / log_n, log_den > 0 ? log_num / log_den : 0,
                                   log_l0 / log_n, (double)n_dead_all / ((double)F * L),
                                   dt > 0 ? (double)(s.step - step0) * B / dt : 0};
            if (o->progress) o->progress(o->progress_ctx, &p);
            log_loss = log_num = log_den = log_l0 = 0, log_n = 0;
            if (o->checkpoint) rc = save_state(o->ctx, &s, o->checkpoint, err);
        }
    }
    free(xb), free(yb), free(yh), free(gy), free(pre), free(idx), free(ia), free(dead), free(dv), free(rows), free(ea), free(ga_aux);
    free(mean);
    if (!rc) {   // fold the scales into the weights: x -> x / sx_l, y_t = sy_t * y'_t
        out->n_layers = L, out->d_model = D, out->d_tc = F, out->k = K;
        out->W_enc = calloc((size_t)L, sizeof(float *));
        out->b_enc = calloc((size_t)L, sizeof(float *));
        out->W_dec = calloc((size_t)L, sizeof(float *));
        out->b_dec = calloc((size_t)L, sizeof(float *));
        out->W_skip = s.skip ? calloc((size_t)L, sizeof(float *)) : NULL;
        int ok = out->W_enc && out->b_enc && out->W_dec && out->b_dec && (!s.skip || out->W_skip);
        for (int l = 0; ok && l < L; l++) {
            size_t w = (size_t)(L - l) * D;
            ok = (out->W_enc[l] = malloc(sizeof(float) * (size_t)F * D)) && (out->b_enc[l] = malloc(sizeof(float) * (size_t)F)) &&
                 (out->W_dec[l] = malloc(sizeof(float) * (size_t)F * w)) && (out->b_dec[l] = malloc(sizeof(float) * (size_t)D));
            if (!ok) break;
            for (size_t i = 0; i < (size_t)F * D; i++) out->W_enc[l][i] = (float)(PARAM(&s, l, P_WENC)[i] / s.sx[l]);
            memcpy(out->b_enc[l], PARAM(&s, l, P_BENC), sizeof(float) * (size_t)F);
            for (int f = 0; f < F; f++)
                for (size_t c = 0; c < w; c++)
                    out->W_dec[l][f * w + c] = (float)(PARAM(&s, l, P_WDEC)[f * w + c] * s.sy[l + c / (size_t)D]);
            for (int d = 0; d < D; d++) out->b_dec[l][d] = (float)(PARAM(&s, l, P_BDEC)[d] * s.sy[l]);
            if (s.skip) {
                if (!(ok = (out->W_skip[l] = malloc(sizeof(float) * (size_t)D * D)) != NULL)) break;
                for (size_t i = 0; i < (size_t)D * D; i++)
                    out->W_skip[l][i] = (float)(PARAM(&s, l, P_WSKIP)[i] * s.sy[l] / s.sx[l]);
            }
        }
        if (!ok) {
            ct_clt_params_free(out);
            rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        }
    }
    state_free(&s);
    return rc;
}

ct_status ct_train_plt(const float *x, const float *y, long n, int D, const ct_train_opts *o, ct_plt_params *out,
                       ct_err *err) {
    memset(out, 0, sizeof *out);
    ct_clt_params c;   // the one-layer case of the cross-layer trainer
    ct_status rc = ct_train_clt(&x, &y, 1, n, D, o, &c, err);
    if (rc) return rc;
    out->d_model = D, out->d_tc = c.d_tc, out->k = c.k;
    out->W_enc = c.W_enc[0], out->b_enc = c.b_enc[0], out->W_dec = c.W_dec[0], out->b_dec = c.b_dec[0];
    out->W_skip = c.W_skip ? c.W_skip[0] : NULL;
    free(c.W_enc), free(c.b_enc), free(c.W_dec), free(c.b_dec), free(c.W_skip);
    return CT_OK;
}

void ct_clt_params_free(ct_clt_params *p) {
    for (int l = 0; l < p->n_layers; l++) {
        if (p->W_enc) free(p->W_enc[l]);
        if (p->b_enc) free(p->b_enc[l]);
        if (p->W_dec) free(p->W_dec[l]);
        if (p->b_dec) free(p->b_dec[l]);
        if (p->W_skip) free(p->W_skip[l]);
    }
    free(p->W_enc), free(p->b_enc), free(p->W_dec), free(p->b_dec), free(p->W_skip);
    memset(p, 0, sizeof *p);
}

void ct_plt_params_free(ct_plt_params *p) {
    free(p->W_enc), free(p->b_enc), free(p->W_dec), free(p->b_dec), free(p->W_skip);
    memset(p, 0, sizeof *p);
}

// config.yaml as circuit-tracer reads it: model_kind, the hooks, `activation: topk` and k (the
// files are found by their names: layer_{i}.safetensors, or W_enc_{i} / W_dec_{i}).
static ct_status write_config(ct_ctx *ctx, const char *dir, const char *kind, const char *model_name, const char *input_hook,
                              const char *output_hook, int k, ct_err *err) {
    char path[1200];
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    ct_wfile w;
    ct_status rc = ct_wfile_open(ctx, &w, path, err);
    if (rc) return rc;
    fprintf(w.f, "model_name: %s\nmodel_kind: %s\nfeature_input_hook: %s\nfeature_output_hook: %s\nactivation: topk\nk: %d\n",
            model_name, kind, input_hook, output_hook, k);
    return ct_wfile_commit(&w, err);
}

ct_status ct_clt_save_set(ct_ctx *ctx, const char *dir, const ct_clt_params *p, const char *model_name,
                          const char *input_hook, const char *output_hook, ct_err *err) {
    if (ct_mkdirs(ctx, dir, err)) return err->status;
    char path[1200], n1[32], n2[32], n3[32], n4[32];
    int L = p->n_layers;
    for (int l = 0; l < L; l++) {
        snprintf(n1, sizeof n1, "W_enc_%d", l);
        snprintf(n2, sizeof n2, "b_enc_%d", l);
        snprintf(n3, sizeof n3, "b_dec_%d", l);
        snprintf(n4, sizeof n4, "W_dec_%d", l);
        ct_st_entry e[] = {
            {.name = n1, .dtype = CT_DT_F32, .ndim = 2, .shape = {p->d_tc, p->d_model}, .data = p->W_enc[l]},
            {.name = n2, .dtype = CT_DT_F32, .ndim = 1, .shape = {p->d_tc}, .data = p->b_enc[l]},
            {.name = n3, .dtype = CT_DT_F32, .ndim = 1, .shape = {p->d_model}, .data = p->b_dec[l]},
        };
        ct_st_entry d = {.name = n4, .dtype = CT_DT_F32, .ndim = 3, .shape = {p->d_tc, L - l, p->d_model}, .data = p->W_dec[l]};
        snprintf(path, sizeof path, "%s/W_enc_%d.safetensors", dir, l);
        ct_status rc = ct_safetensors_write(ctx, path, e, 3, NULL, 0, err);
        snprintf(path, sizeof path, "%s/W_dec_%d.safetensors", dir, l);
        if (!rc) rc = ct_safetensors_write(ctx, path, &d, 1, NULL, 0, err);
        if (rc) return rc;
    }
    return write_config(ctx, dir, "cross_layer_transcoder", model_name, input_hook, output_hook, p->k, err);
}

ct_status ct_plt_save_set(ct_ctx *ctx, const char *dir, const ct_plt_params *layers, int n_layers, const char *model_name,
                          const char *input_hook, const char *output_hook, ct_err *err) {
    if (ct_mkdirs(ctx, dir, err)) return err->status;
    char path[1200];
    for (int l = 0; l < n_layers; l++) {
        const ct_plt_params *p = &layers[l];
        // exactly the parameters of circuit-tracer's SingleLayerTranscoder: its loader is strict, so
        // an extra tensor (such as a scalar k) would make it refuse the file; k is in config.yaml
        ct_st_entry e[] = {
            {.name = "W_enc", .dtype = CT_DT_F32, .ndim = 2, .shape = {p->d_tc, p->d_model}, .data = p->W_enc},
            {.name = "W_dec", .dtype = CT_DT_F32, .ndim = 2, .shape = {p->d_tc, p->d_model}, .data = p->W_dec},
            {.name = "b_enc", .dtype = CT_DT_F32, .ndim = 1, .shape = {p->d_tc}, .data = p->b_enc},
            {.name = "b_dec", .dtype = CT_DT_F32, .ndim = 1, .shape = {p->d_model}, .data = p->b_dec},
            {.name = "W_skip", .dtype = CT_DT_F32, .ndim = 2, .shape = {p->d_model, p->d_model}, .data = p->W_skip},
        };
        snprintf(path, sizeof path, "%s/layer_%d.safetensors", dir, l);
        ct_status rc = ct_safetensors_write(ctx, path, e, p->W_skip ? 5 : 4, NULL, 0, err);
        if (rc) return rc;
    }
    // no transcoders list: circuit-tracer resolves list entries against the working directory,
    // not the set's folder, and finds layer_0 .. layer_{n-1} by itself without one
    return write_config(ctx, dir, "transcoder_set", model_name, input_hook, output_hook, layers[0].k, err);
}

// ---------------------------------------------------------------------------------------------
// A whole set for a model

// Layer l's (input hook, output hook) pairs over texts, positions >= 1: x, y (count, D), malloc'ed.
static ct_status collect(ct_model *m, int layer, const char *in_hook, const char *out_hook, const int *const *texts,
                         const int *lens, int n, float **x, float **y, long *count, ct_err *err) {
    ct_hook_id hid[2];
    ct_status rc = ct_hook_at(m, layer, in_hook, &hid[0], err);
    if (!rc) rc = ct_hook_at(m, layer, out_hook, &hid[1], err);
    if (rc) return rc;
    long total = 0;
    for (int i = 0; i < n; i++) total += lens[i] > 1 ? lens[i] - 1 : 0;
    int D = m->cfg.d_model;
    *x = malloc(sizeof(float) * (size_t)(total + 1) * D);
    *y = malloc(sizeof(float) * (size_t)(total + 1) * D);
    if (!*x || !*y) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for %ld activations", total);
    long k = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (lens[i] < 2) continue;
        ct_hook_cache hc;
        if ((rc = ct_hook_cache_init(&hc, hid, 2, err))) break;
        rc = ct_model_forward(m, texts[i], lens[i], NULL, &hc, NULL, 0, err);
        if (!rc) {
            size_t cnt = (size_t)(lens[i] - 1) * D;
            memcpy(*x + (size_t)k * D, ct_tensor_data(hc.values[0]) + D, sizeof(float) * cnt);
            memcpy(*y + (size_t)k * D, ct_tensor_data(hc.values[1]) + D, sizeof(float) * cnt);
            k += lens[i] - 1;
        }
        ct_hook_cache_free(&hc);
    }
    *count = k;
    return rc;
}

ct_status ct_train_set(ct_model *m, const int *const *texts, const int *lens, int n, const ct_train_set_opts *so,
                       ct_err *err) {
    int clt = so->clt, NL = m->cfg.n_layers, D = m->cfg.d_model;
    const char *in_hook = so->input_hook ? so->input_hook : clt ? "hook_resid_mid" : "mlp.hook_in";
    const char *out_hook = so->output_hook ? so->output_hook : clt ? "hook_mlp_out" : "mlp.hook_out";
    const char *model_name = so->model_name ? so->model_name : m->cfg.architecture;
    ct_train_opts o = so->train;
    ct_status rc = CT_OK;
    char ck[1200];
    float **xs = calloc((size_t)NL, sizeof(float *)), **ys = calloc((size_t)NL, sizeof(float *));
    ct_plt_params *params = calloc((size_t)NL, sizeof *params);
    if (!xs || !ys || !params) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    long count = 0;
    for (int l = 0; l < NL && !rc; l++) {
        rc = collect(m, l, in_hook, out_hook, texts, lens, n, &xs[l], &ys[l], &count, err);
        if (rc || clt) continue;   // a CLT trains every layer at once below
        o.layer = l;
        if (so->checkpoint_dir) {
            snprintf(ck, sizeof ck, "%s/layer_%d.state.safetensors", so->checkpoint_dir, l);
            o.checkpoint = ck;
        }
        rc = ct_train_plt(xs[l], ys[l], count, D, &o, &params[l], err);
        free(xs[l]), free(ys[l]);
        xs[l] = ys[l] = NULL;
    }
    if (!rc && clt) {
        ct_clt_params cp;
        o.layer = -1;
        if (so->checkpoint_dir) {
            snprintf(ck, sizeof ck, "%s/clt.state.safetensors", so->checkpoint_dir);
            o.checkpoint = ck;
        }
        rc = ct_train_clt((const float *const *)xs, (const float *const *)ys, NL, count, D, &o, &cp, err);
        if (!rc) {
            rc = ct_clt_save_set(o.ctx, so->dir, &cp, model_name, in_hook, out_hook, err);
            ct_clt_params_free(&cp);
        }
    } else if (!rc) {
        rc = ct_plt_save_set(o.ctx, so->dir, params, NL, model_name, in_hook, out_hook, err);
    }
    for (int l = 0; l < NL; l++) {
        if (xs) free(xs[l]);
        if (ys) free(ys[l]);
        if (params) ct_plt_params_free(&params[l]);
    }
    free(xs), free(ys), free(params);
    return rc;
}
