// replacement.c - the replacement model and transcoder evaluation (see replacement.h).
#include "trace/replacement.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { IN_RESID_MID, IN_NORMALIZED, IN_MLP_IN };

ct_status ct_replacement_hooks(const ct_transcoders *tc, int *input_kind, int *output_raw, ct_err *err) {
    const char *in = tc->input_hook, *out = tc->output_hook;
    if (strcmp(in, "hook_resid_mid") == 0) *input_kind = IN_RESID_MID;
    else if (strcmp(in, "ln2.hook_normalized") == 0) *input_kind = IN_NORMALIZED;
    else if (strcmp(in, "mlp.hook_in") == 0 || strcmp(in, "hook_mlp_in") == 0) *input_kind = IN_MLP_IN;
    else return ct_fail(err, CT_STATUS_UNSUPPORTED, "transcoder input hook '%s': expected hook_resid_mid, "
                        "ln2.hook_normalized or mlp.hook_in", in);
    if (strcmp(out, "mlp.hook_out") == 0) *output_raw = 1;
    else if (strcmp(out, "hook_mlp_out") == 0) *output_raw = 0;
    else return ct_fail(err, CT_STATUS_UNSUPPORTED, "transcoder output hook '%s': expected mlp.hook_out or hook_mlp_out", out);
    return CT_OK;
}

typedef struct {
    const ct_transcoders *tc;
    int input_kind;
    const float *real_out;   // (L, T, D) real MLP outputs at the output hook (position 0 is kept)
    float *pending;          // (L, T, D) decoder contributions written ahead (CLT)
    float *act;              // (T, F_max)
} repl_ctx;

static ct_status repl_mlp(void *vctx, int l, const ct_mlp_io *io, float *out, ct_err *err) {
    repl_ctx *r = vctx;
    const ct_transcoders *tc = r->tc;
    int T = io->T, D = io->D;
    size_t TD = (size_t)T * D;
    const float *x = r->input_kind == IN_RESID_MID ? io->resid_mid : r->input_kind == IN_NORMALIZED ? io->normalized : io->mlp_in;
    ct_status rc = ct_tc_encode(tc, l, x, T, NULL, r->act, err);
    if (rc) return rc;
    memset(r->act, 0, sizeof(float) * (size_t)tc->layers[l].d_tc);   // position 0: no features
    for (int j = 0; j < tc->layers[l].n_out && !rc; j++) rc = ct_tc_decode_add(tc, l, j, r->act, T, r->pending + (l + j) * TD, err);
    if (rc) return rc;
    for (int t = 0; t < T; t++) memcpy(out + (size_t)t * D, tc->layers[l].b_dec, sizeof(float) * (size_t)D);
    ct_tc_skip_add(tc, l, x, T, out);
    for (size_t i = 0; i < TD; i++) out[i] += r->pending[l * TD + i];
    memcpy(out, r->real_out + l * TD, sizeof(float) * (size_t)D);   // BOS keeps the real output
    return CT_OK;
}

// Real forward with the transcoder input and output hooks cached: in, out (L, T, D).
static ct_status real_hooks(const ct_transcoders *tc, ct_model *m, const int *tokens, int T, float *in, float *out,
                            float *logits, ct_err *err) {
    int L = tc->n_layers;
    ct_hook_id *ids = calloc((size_t)(2 * L), sizeof *ids);
    if (!ids) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_status rc = CT_OK;
    for (int l = 0; l < L && !rc; l++) {
        char name[128];
        snprintf(name, sizeof name, "blocks.%d.%s", l, tc->input_hook);
        rc = ct_hook_parse(m, name, &ids[l], err);
        snprintf(name, sizeof name, "blocks.%d.%s", l, tc->output_hook);
        if (!rc) rc = ct_hook_parse(m, name, &ids[L + l], err);
    }
    ct_hook_cache hc = {0};
    if (!rc) rc = ct_hook_cache_init(&hc, ids, 2 * L, err);
    free(ids);
    if (!rc) rc = ct_model_forward(m, tokens, T, NULL, &hc, logits, 1, err);
    size_t TD = (size_t)T * tc->d_model;
    for (int l = 0; l < L && !rc; l++) {
        memcpy(in + l * TD, ct_tensor_data(hc.values[l]), sizeof(float) * TD);
        memcpy(out + l * TD, ct_tensor_data(hc.values[L + l]), sizeof(float) * TD);
    }
    ct_hook_cache_free(&hc);
    return rc;
}

static int max_width(const ct_transcoders *tc) {
    int F = 0;
    for (int l = 0; l < tc->n_layers; l++)
        if (tc->layers[l].d_tc > F) F = tc->layers[l].d_tc;
    return F;
}

// Replacement forward given the real outputs (L, T, D).
static ct_status repl_forward(const ct_transcoders *tc, ct_model *m, const int *tokens, int T, const float *real_out,
                              float *logits, ct_err *err) {
    int in_kind, raw;
    ct_status rc = ct_replacement_hooks(tc, &in_kind, &raw, err);
    if (rc) return rc;
    size_t LTD = (size_t)tc->n_layers * T * tc->d_model;
    repl_ctx r = {tc, in_kind, real_out, calloc(LTD, sizeof(float)), malloc(sizeof(float) * (size_t)T * max_width(tc))};
    if (!r.pending || !r.act) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_forward_ctl ctl = {.mlp = repl_mlp, .mlp_out_raw = raw, .ctx = &r};
    if (!rc) rc = ct_model_forward_ctl(m, tokens, T, NULL, NULL, logits, 1, &ctl, err);
    free(r.pending);
    free(r.act);
    return rc;
}

ct_status ct_replacement_forward(const ct_transcoders *tc, ct_model *m, const int *tokens, int T, float *logits,
                                 ct_err *err) {
    ct_status rc = ct_transcoders_check(tc, m, err);
    if (rc) return rc;
    size_t LTD = (size_t)tc->n_layers * T * tc->d_model;
    float *in = malloc(sizeof(float) * LTD), *out = malloc(sizeof(float) * LTD);
    rc = in && out ? real_hooks(tc, m, tokens, T, in, out, logits, err) : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) rc = repl_forward(tc, m, tokens, T, out, logits, err);
    free(in);
    free(out);
    return rc;
}

ct_status ct_tc_errors(const ct_transcoders *tc, ct_model *m, const int *tokens, int T, float *err_out, ct_err *err) {
    ct_status rc = ct_transcoders_check(tc, m, err);
    if (rc) return rc;
    size_t LTD = (size_t)tc->n_layers * T * tc->d_model;
    float *in = malloc(sizeof(float) * LTD), *out = malloc(sizeof(float) * LTD);
    rc = in && out ? real_hooks(tc, m, tokens, T, in, out, NULL, err) : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) rc = ct_tc_reconstruct(tc, in, T, err_out, err);
    for (size_t i = 0; !rc && i < LTD; i++) err_out[i] = out[i] - err_out[i];
    free(in);
    free(out);
    return rc;
}

void ct_tc_eval_free(ct_tc_eval *e) {
    free(e->fvu);
    free(e->l0);
    free(e->dead);
    memset(e, 0, sizeof *e);
}

// log-softmax of (V,) into out (double)
static void log_softmax(const float *x, int V, double *out) {
    double mx = x[0], s = 0.0;
    for (int i = 1; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < V; i++) s += exp(x[i] - mx);
    double lse = mx + log(s);
    for (int i = 0; i < V; i++) out[i] = x[i] - lse;
}

ct_status ct_tc_evaluate(const ct_transcoders *tc, ct_model *m, const int *const *texts, const int *lens, int n,
                         ct_tc_eval *e, ct_err *err) {
    memset(e, 0, sizeof *e);
    ct_status rc = ct_transcoders_check(tc, m, err);
    if (rc) return rc;
    int L = tc->n_layers, D = tc->d_model, V = m->cfg.vocab_size, Fm = max_width(tc);
    e->n_layers = L;
    e->fvu = calloc((size_t)L, sizeof(double));
    e->l0 = calloc((size_t)L, sizeof(double));
    e->dead = calloc((size_t)L, sizeof(double));
    double *sse = calloc((size_t)L, sizeof(double)), *ss = calloc((size_t)L, sizeof(double));
    double *sum = calloc((size_t)L * D, sizeof(double)), *lp = malloc(sizeof(double) * (size_t)V * 2);
    unsigned char *fired = calloc((size_t)L * Fm, 1);
    long agree = 0, count = 0;
    double kl = 0.0;
    if (!e->fvu || !e->l0 || !e->dead || !sse || !ss || !sum || !lp || !fired)
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int s = 0; s < n && !rc; s++) {
        int T = lens[s];
        if (T < 2) continue;
        size_t LTD = (size_t)L * T * D;
        float *in = malloc(sizeof(float) * LTD), *out = malloc(sizeof(float) * LTD), *rec = malloc(sizeof(float) * LTD);
        float *act = malloc(sizeof(float) * (size_t)T * Fm);
        float *lg = malloc(sizeof(float) * (size_t)T * V), *lg2 = malloc(sizeof(float) * (size_t)T * V);
        if (!in || !out || !rec || !act || !lg || !lg2) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        if (!rc) rc = real_hooks(tc, m, texts[s], T, in, out, lg, err);
        if (!rc) rc = ct_tc_reconstruct(tc, in, T, rec, err);
        for (int l = 0; l < L && !rc; l++) {   // FVU pieces, L0, fired features (positions >= 1)
            int F = tc->layers[l].d_tc;
            size_t TD = (size_t)T * D;
            for (int t = 1; t < T; t++)
                for (int d = 0; d < D; d++) {
                    double y = out[l * TD + (size_t)t * D + d], r = rec[l * TD + (size_t)t * D + d];
                    sse[l] += (y - r) * (y - r);
                    ss[l] += y * y;
                    sum[(size_t)l * D + d] += y;
                }
            rc = ct_tc_encode(tc, l, in + l * TD, T, NULL, act, err);
            for (int t = 1; t < T && !rc; t++)
                for (int f = 0; f < F; f++)
                    if (act[(size_t)t * F + f] != 0.0f) {
                        e->l0[l] += 1.0;
                        fired[(size_t)l * Fm + f] = 1;
                    }
        }
        if (!rc) rc = repl_forward(tc, m, texts[s], T, out, lg2, err);
        for (int t = 1; t < T && !rc; t++) {   // predictions after the BOS position
            const float *a = lg + (size_t)t * V, *b = lg2 + (size_t)t * V;
            int ia = 0, ib = 0;
            for (int v = 1; v < V; v++) {
                if (a[v] > a[ia]) ia = v;
                if (b[v] > b[ib]) ib = v;
            }
            agree += ia == ib;
            log_softmax(a, V, lp);
            log_softmax(b, V, lp + V);
            double k = 0.0;
            for (int v = 0; v < V; v++) k += exp(lp[v]) * (lp[v] - lp[V + v]);
            kl += k;
            count++;
        }
        free(in), free(out), free(rec), free(act), free(lg), free(lg2);
    }
    if (!rc && count == 0) rc = ct_fail(err, CT_STATUS_BAD_ARG, "evaluate: no text has more than one token");
    for (int l = 0; l < L && !rc; l++) {
        double var = ss[l];
        for (int d = 0; d < D; d++) var -= sum[(size_t)l * D + d] * sum[(size_t)l * D + d] / (double)count;
        e->fvu[l] = var > 0 ? sse[l] / var : 0.0;
        e->l0[l] /= (double)count;
        int dead = 0;
        for (int f = 0; f < tc->layers[l].d_tc; f++) dead += !fired[(size_t)l * Fm + f];
        e->dead[l] = (double)dead / tc->layers[l].d_tc;
    }
    e->agreement = count ? (double)agree / count : 0.0;
    e->kl = count ? kl / count : 0.0;
    e->n_tokens = count;
    free(sse), free(ss), free(sum), free(lp), free(fired);
    if (rc) ct_tc_eval_free(e);
    return rc;
}
