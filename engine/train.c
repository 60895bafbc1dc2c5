// train.c - per-layer transcoder training (see train.h).
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "safetensors.h"
#include "tensor.h"

// ----------------------------------------------------------------------------
// Random numbers (splitmix64 seeding, xorshift64*)

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }

static double rng_normal(uint64_t *s) {   // Box-Muller
    double u = rng_unit(s), v = rng_unit(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * M_PI * v);
}

// ----------------------------------------------------------------------------
// Parameters and Adam state in one block

enum { P_WENC, P_BENC, P_WDEC, P_BDEC, P_WSKIP, P_N };

typedef struct {
    int D, F, skip;
    size_t off[P_N + 1];   // offsets into the flat parameter vector
    float *p, *g, *m, *v;  // (n,) each
    size_t n;
    long step;
    uint64_t rng;
    long *last_fired;      // (F,) token count when each feature last fired
    long tokens;
    double sx, sy;         // input and target scales
} state;

static void state_free(state *s) {
    free(s->p), free(s->g), free(s->m), free(s->v), free(s->last_fired);
    memset(s, 0, sizeof *s);
}

static int state_init(state *s, int D, int F, int skip) {
    memset(s, 0, sizeof *s);
    s->D = D, s->F = F, s->skip = skip;
    size_t sizes[P_N] = {(size_t)F * D, (size_t)F, (size_t)F * D, (size_t)D, skip ? (size_t)D * D : 0};
    for (int i = 0; i < P_N; i++) s->off[i + 1] = s->off[i] + sizes[i];
    s->n = s->off[P_N];
    s->p = calloc(s->n, sizeof(float));
    s->g = calloc(s->n, sizeof(float));
    s->m = calloc(s->n, sizeof(float));
    s->v = calloc(s->n, sizeof(float));
    s->last_fired = calloc((size_t)F, sizeof(long));
    return s->p && s->g && s->m && s->v && s->last_fired;
}

#define PARAM(s, i) ((s)->p + (s)->off[i])
#define GRAD(s, i) ((s)->g + (s)->off[i])

static void normalize_decoder(state *s) {
    float *W = PARAM(s, P_WDEC);
    for (int f = 0; f < s->F; f++) {
        double n = 0;
        for (int d = 0; d < s->D; d++) n += (double)W[(size_t)f * s->D + d] * W[(size_t)f * s->D + d];
        float inv = n > 0 ? (float)(1.0 / sqrt(n)) : 0.0f;
        for (int d = 0; d < s->D; d++) W[(size_t)f * s->D + d] *= inv;
    }
}

// ----------------------------------------------------------------------------
// Checkpoints: the state as a safetensors file (parameters, Adam moments, counters)

static ct_status save_state(const state *s, const char *path, ct_err *err) {
    int64_t ints[4] = {s->step, s->tokens, (int64_t)s->rng, 0};
    double scales[2] = {s->sx, s->sy};
    float sc[2] = {(float)scales[0], (float)scales[1]};
    int64_t *lf = malloc(sizeof(int64_t) * (size_t)s->F);
    if (!lf) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int f = 0; f < s->F; f++) lf[f] = s->last_fired[f];
    ct_st_entry e[] = {
        {"params", CT_DT_F32, 1, {(int64_t)s->n}, s->p, NULL},
        {"adam_m", CT_DT_F32, 1, {(int64_t)s->n}, s->m, NULL},
        {"adam_v", CT_DT_F32, 1, {(int64_t)s->n}, s->v, NULL},
        {"counters", CT_DT_I64, 1, {4}, NULL, ints},
        {"last_fired", CT_DT_I64, 1, {s->F}, NULL, lf},
        {"scales", CT_DT_F32, 1, {2}, sc, NULL},
    };
    ct_status rc = ct_safetensors_write(path, e, 6, NULL, 0, err);
    free(lf);
    return rc;
}

static ct_status load_state(state *s, const char *path, ct_err *err) {
    ct_safetensors *st;
    ct_status rc = ct_safetensors_open(&st, path, err);
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
    const ct_st_tensor *c = ct_safetensors_find(st, "counters"), *lf = ct_safetensors_find(st, "last_fired"),
                       *sc = ct_safetensors_find(st, "scales");
    if (!rc && (!c || c->dtype != CT_DT_I64 || ct_st_numel(c) != 4 || !lf || lf->dtype != CT_DT_I64 ||
                ct_st_numel(lf) != s->F || !sc || sc->dtype != CT_DT_F32 || ct_st_numel(sc) != 2))
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "checkpoint %s: counters, last_fired or scales missing", path);
    if (!rc) {
        int64_t ints[4];
        memcpy(ints, c->data, sizeof ints);
        s->step = (long)ints[0], s->tokens = (long)ints[1], s->rng = (uint64_t)ints[2];
        for (int f = 0; f < s->F; f++) {
            int64_t v;
            memcpy(&v, lf->data + 8 * (size_t)f, 8);
            s->last_fired[f] = (long)v;
        }
        float scl[2];
        memcpy(scl, sc->data, sizeof scl);
        s->sx = scl[0], s->sy = scl[1];
    }
    ct_safetensors_free(st);
    return rc;
}

// ----------------------------------------------------------------------------
// TopK selection: indices of the k largest values of v (F,) (ties: lower index)

static void topk(const float *v, int F, int k, int *idx, const unsigned char *allowed) {
    int n = 0;
    for (int f = 0; f < F; f++) {
        if (allowed && !allowed[f]) continue;
        if (n < k) {   // insertion into the sorted prefix (descending)
            int j = n++;
            while (j > 0 && v[idx[j - 1]] < v[f]) idx[j] = idx[j - 1], j--;
            idx[j] = f;
        } else if (v[f] > v[idx[k - 1]]) {
            int j = k - 1;
            while (j > 0 && v[idx[j - 1]] < v[f]) idx[j] = idx[j - 1], j--;
            idx[j] = f;
        }
    }
    for (int j = n; j < k; j++) idx[j] = -1;
}

// ----------------------------------------------------------------------------
// Training

// Backward through one active feature f with activation a, output gradient g (D,) and input
// x (D,): dW_dec[f] += a g; dpre = g . W_dec[f]; db_enc[f] += dpre; dW_enc[f] += dpre x.
static void feature_backward(state *s, int f, float a, const float *g, const float *x) {
    int D = s->D;
    const float *wd = PARAM(s, P_WDEC) + (size_t)f * D;
    float *gwd = GRAD(s, P_WDEC) + (size_t)f * D, *gwe = GRAD(s, P_WENC) + (size_t)f * D;
    double ga = 0;
    for (int d = 0; d < D; d++) {
        gwd[d] += a * g[d];
        ga += (double)g[d] * wd[d];
    }
    GRAD(s, P_BENC)[f] += (float)ga;
    for (int d = 0; d < D; d++) gwe[d] += (float)ga * x[d];
}

ct_status ct_train_plt(const float *x, const float *y, long n, int D, const ct_train_opts *o, ct_plt_params *out,
                       ct_err *err) {
    memset(out, 0, sizeof *out);
    int F = o->d_tc, K = o->k, KA = o->k_aux, B = o->batch;
    if (F == D)
        return ct_fail(err, CT_STATUS_BAD_ARG, "train: d_transcoder %d equals d_model; the circuit-tracer layout cannot tell "
                       "a square W_dec's orientation, so choose another width", F);
    if (F < 1 || K < 1 || K > F || KA < 0 || KA > F || B < 1 || o->steps < 1 || n < 1 || !(o->lr > 0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "train: need d_tc >= 1, 1 <= k <= d_tc, 0 <= k_aux <= d_tc, batch >= 1, "
                       "steps >= 1, lr > 0 and data (got d_tc %d, k %d, k_aux %d, batch %d, steps %ld, lr %g, %ld tokens)",
                       F, K, KA, B, o->steps, o->lr, n);
    state s;
    if (!state_init(&s, D, F, o->skip)) {
        state_free(&s);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a %d x %d transcoder", F, D);
    }
    ct_status rc = CT_OK;
    struct stat sb;
    if (o->resume && o->checkpoint && stat(o->checkpoint, &sb) == 0) {
        rc = load_state(&s, o->checkpoint, err);
    } else {
        // scales: unit mean square per dimension for inputs and targets
        double sxx = 0, syy = 0;
        for (long i = 0; i < n * D; i++) sxx += (double)x[i] * x[i], syy += (double)y[i] * y[i];
        s.sx = (float)(sqrt(sxx / ((double)n * D)) + 1e-12);   // float: checkpoints store them exactly
        s.sy = (float)(sqrt(syy / ((double)n * D)) + 1e-12);
        s.rng = o->seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
        if (!s.rng) s.rng = 1;
        // decoder rows random unit vectors, encoder = decoder^T, b_dec = mean target
        float *Wd = PARAM(&s, P_WDEC), *We = PARAM(&s, P_WENC), *bd = PARAM(&s, P_BDEC);
        for (size_t i = 0; i < (size_t)F * D; i++) Wd[i] = (float)rng_normal(&s.rng);
        normalize_decoder(&s);
        memcpy(We, Wd, sizeof(float) * (size_t)F * D);
        for (long i = 0; i < n; i++)
            for (int d = 0; d < D; d++) bd[d] += (float)(y[(size_t)i * D + d] / s.sy / n);
    }
    float *xb = malloc(sizeof(float) * (size_t)B * D), *yb = malloc(sizeof(float) * (size_t)B * D);
    float *pre = malloc(sizeof(float) * (size_t)B * F), *yh = malloc(sizeof(float) * (size_t)B * D);
    float *gy = malloc(sizeof(float) * (size_t)B * D), *res = malloc(sizeof(float) * (size_t)B * D);
    int *idx = malloc(sizeof(int) * (size_t)B * (K + KA + 1));
    unsigned char *dead = malloc((size_t)F);
    double *mean = malloc(sizeof(double) * (size_t)D);
    float *ea = malloc(sizeof(float) * (size_t)D), *ga_aux = malloc(sizeof(float) * (size_t)D);
    if (!rc && (!xb || !yb || !pre || !yh || !gy || !res || !idx || !dead || !mean || !ea || !ga_aux))
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a batch of %d", B);
    struct timespec w0;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    long step0 = s.step;
    double log_loss = 0, log_fvu_num = 0, log_fvu_den = 0, log_l0 = 0;
    int log_n = 0;
    while (!rc && s.step < o->steps) {
        if (o->cancel && *o->cancel) {
            rc = ct_fail(err, CT_STATUS_CANCELLED, "training cancelled at step %ld", s.step);
            break;
        }
        // batch
        for (int b = 0; b < B; b++) {
            long i = (long)(rng_next(&s.rng) % (uint64_t)n);
            for (int d = 0; d < D; d++) {
                xb[(size_t)b * D + d] = (float)(x[(size_t)i * D + d] / s.sx);
                yb[(size_t)b * D + d] = (float)(y[(size_t)i * D + d] / s.sy);
            }
        }
        const float *We = PARAM(&s, P_WENC), *be = PARAM(&s, P_BENC), *Wd = PARAM(&s, P_WDEC), *bd = PARAM(&s, P_BDEC);
        memset(s.g, 0, sizeof(float) * s.n);
        float *gbd = GRAD(&s, P_BDEC);
        // pre (B, F) = xb (B, D) @ W_enc^T + b_enc
        ct_sgemm(0, 1, B, F, D, 1.0f, xb, D, We, D, 0.0f, pre, F);
        for (int b = 0; b < B; b++)
            for (int f = 0; f < F; f++) pre[(size_t)b * F + f] += be[f];
        // y_hat = sum of the k selected features' decoder rows + b_dec (+ skip)
        for (int b = 0; b < B; b++) memcpy(yh + (size_t)b * D, bd, sizeof(float) * (size_t)D);
        if (s.skip) ct_sgemm(0, 1, B, D, D, 1.0f, xb, D, PARAM(&s, P_WSKIP), D, 1.0f, yh, D);
        double l0 = 0;
        for (int b = 0; b < B; b++) {
            int *ib = idx + (size_t)b * K;
            topk(pre + (size_t)b * F, F, K, ib, NULL);
            for (int j = 0; j < K; j++) {
                int f = ib[j];
                float a = pre[(size_t)b * F + f];
                if (a <= 0) {
                    ib[j] = -1;
                    continue;
                }
                l0 += 1;
                s.last_fired[f] = s.tokens + b;
                for (int d = 0; d < D; d++) yh[(size_t)b * D + d] += a * Wd[(size_t)f * D + d];
            }
        }
        // loss and its gradient
        double loss = 0, var = 0;
        for (int d = 0; d < D; d++) mean[d] = 0;
        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++) mean[d] += yb[(size_t)b * D + d] / B;
        for (size_t i = 0; i < (size_t)B * D; i++) {
            double e = yh[i] - yb[i], c = yb[i] - mean[i % (size_t)D];
            loss += e * e;
            var += c * c;
            res[i] = yb[i] - yh[i];
            gy[i] = (float)(2.0 * e / B);
        }
        // backward through the selected features
        for (int b = 0; b < B; b++)
            for (int j = 0; j < K; j++) {
                int f = idx[(size_t)b * K + j];
                if (f >= 0) feature_backward(&s, f, pre[(size_t)b * F + f], gy + (size_t)b * D, xb + (size_t)b * D);
            }
        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++) gbd[d] += gy[(size_t)b * D + d];
        if (s.skip)   // dW_skip (D, D) = gy^T (D, B) @ xb (B, D)
            ct_sgemm(1, 0, D, D, B, 1.0f, gy, D, xb, D, 0.0f, GRAD(&s, P_WSKIP), D);
        // AuxK: dead features reconstruct the residual
        int n_dead = 0;
        for (int f = 0; f < F; f++) n_dead += (dead[f] = s.tokens - s.last_fired[f] > o->dead_tokens && s.step > 0);
        if (KA > 0 && n_dead > 0) {
            int ka = KA < n_dead ? KA : n_dead;
            int *ia = idx + (size_t)B * K;
            for (int b = 0; b < B; b++) {
                topk(pre + (size_t)b * F, F, ka, ia, dead);
                for (int d = 0; d < D; d++) ea[d] = 0;
                for (int j = 0; j < ka; j++) {
                    int f = ia[j];
                    if (f < 0 || pre[(size_t)b * F + f] <= 0) continue;
                    for (int d = 0; d < D; d++) ea[d] += pre[(size_t)b * F + f] * Wd[(size_t)f * D + d];
                }
                float *g = ga_aux;
                for (int d = 0; d < D; d++) g[d] = (float)(2.0 * o->aux_coef * (ea[d] - res[(size_t)b * D + d]) / B);
                for (int j = 0; j < ka; j++) {
                    int f = ia[j];
                    if (f >= 0 && pre[(size_t)b * F + f] > 0) feature_backward(&s, f, pre[(size_t)b * F + f], g, xb + (size_t)b * D);
                }
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
        normalize_decoder(&s);
        s.tokens += B;
        log_loss += loss / B, log_fvu_num += loss, log_fvu_den += var, log_l0 += l0 / B, log_n++;
        if ((o->log_every > 0 && s.step % o->log_every == 0) || s.step == o->steps) {
            struct timespec w1;
            clock_gettime(CLOCK_MONOTONIC, &w1);
            double dt = (double)(w1.tv_sec - w0.tv_sec) + (w1.tv_nsec - w0.tv_nsec) * 1e-9;
            ct_train_progress p = {s.step, o->steps, log_loss / log_n, log_fvu_den > 0 ? log_fvu_num / log_fvu_den : 0,
                                   log_l0 / log_n, (double)n_dead / F, dt > 0 ? (double)(s.step - step0) * B / dt : 0};
            if (o->progress) o->progress(o->ctx, &p);
            log_loss = log_fvu_num = log_fvu_den = log_l0 = 0, log_n = 0;
            if (o->checkpoint) rc = save_state(&s, o->checkpoint, err);
        }
    }
    free(xb), free(yb), free(pre), free(yh), free(gy), free(res), free(idx), free(dead), free(mean), free(ea), free(ga_aux);
    if (!rc) {   // fold the scales into the weights: x -> x / sx, y = sy * y'
        out->d_model = D, out->d_tc = F, out->k = K;
        out->W_enc = malloc(sizeof(float) * (size_t)F * D);
        out->b_enc = malloc(sizeof(float) * (size_t)F);
        out->W_dec = malloc(sizeof(float) * (size_t)F * D);
        out->b_dec = malloc(sizeof(float) * (size_t)D);
        out->W_skip = s.skip ? malloc(sizeof(float) * (size_t)D * D) : NULL;
        if (!out->W_enc || !out->b_enc || !out->W_dec || !out->b_dec || (s.skip && !out->W_skip)) {
            ct_plt_params_free(out);
            rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        } else {
            for (size_t i = 0; i < (size_t)F * D; i++) {
                out->W_enc[i] = (float)(PARAM(&s, P_WENC)[i] / s.sx);
                out->W_dec[i] = (float)(PARAM(&s, P_WDEC)[i] * s.sy);
            }
            memcpy(out->b_enc, PARAM(&s, P_BENC), sizeof(float) * (size_t)F);
            for (int d = 0; d < D; d++) out->b_dec[d] = (float)(PARAM(&s, P_BDEC)[d] * s.sy);
            for (size_t i = 0; s.skip && i < (size_t)D * D; i++) out->W_skip[i] = (float)(PARAM(&s, P_WSKIP)[i] * s.sy / s.sx);
        }
    }
    state_free(&s);
    return rc;
}

void ct_plt_params_free(ct_plt_params *p) {
    free(p->W_enc), free(p->b_enc), free(p->W_dec), free(p->b_dec), free(p->W_skip);
    memset(p, 0, sizeof *p);
}

ct_status ct_plt_save_set(const char *dir, const ct_plt_params *layers, int n_layers, const char *model_name,
                          const char *input_hook, const char *output_hook, ct_err *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return ct_fail(err, CT_STATUS_IO, "cannot create %s: %s", dir, strerror(errno));
    char path[1200];
    for (int l = 0; l < n_layers; l++) {
        const ct_plt_params *p = &layers[l];
        int64_t k = p->k;
        ct_st_entry e[] = {
            {"W_enc", CT_DT_F32, 2, {p->d_tc, p->d_model}, p->W_enc, NULL},
            {"W_dec", CT_DT_F32, 2, {p->d_tc, p->d_model}, p->W_dec, NULL},
            {"b_enc", CT_DT_F32, 1, {p->d_tc}, p->b_enc, NULL},
            {"b_dec", CT_DT_F32, 1, {p->d_model}, p->b_dec, NULL},
            {"k", CT_DT_I64, 0, {0}, NULL, &k},
            {"W_skip", CT_DT_F32, 2, {p->d_model, p->d_model}, p->W_skip, NULL},
        };
        snprintf(path, sizeof path, "%s/layer_%d.safetensors", dir, l);
        ct_status rc = ct_safetensors_write(path, e, p->W_skip ? 6 : 5, NULL, 0, err);
        if (rc) return rc;
    }
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return ct_fail(err, CT_STATUS_IO, "cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, "model_name: %s\nmodel_kind: transcoder_set\nfeature_input_hook: %s\nfeature_output_hook: %s\n"
               "activation: topk\nk: %d\ntranscoders:\n", model_name, input_hook, output_hook, layers[0].k);
    for (int l = 0; l < n_layers; l++) fprintf(f, "  - layer_%d.safetensors\n", l);
    if (fclose(f) != 0 || rename(tmp, path) != 0) return ct_fail(err, CT_STATUS_IO, "cannot write %s", path);
    return CT_OK;
}
