// edges.h - attribution edges against the measured effect of perturbing their source in the real
// model with attention patterns, norm denominators and MLP outputs frozen (the local replacement
// model run forwards): doubling a feature adds its activation times its decoder row(s) at the
// output hook; an error node adds its error vector again; a token node adds its embedding again.
// A target feature's pre-activation must move by the edge within atol + rtol |edge|, a demeaned
// logit within 1e-5 + 1e-3 |edge| (tolerances in edge_check). Used by tests/c/test_attribution.c
// on tiny models and by bench/edges.c on models at their real size.
#ifndef CT_TEST_EDGES_H
#define CT_TEST_EDGES_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "trace/attribution.h"
#include "trace/intervention.h"
#include "trace/replacement.h"

// What check_graph attributes and checks.
typedef struct {
    int n_features;          // feature columns sampled (all when the graph has no more)
    int n_const;             // positions the replacement model holds constant (0: its own rule)
    int batch_size;          // of the attribution (64: several batches, mixed layers and positions)
    int max_feature_nodes;   // 0: the attribution's default
    int err_positions;       // 0: every error node; else the error nodes of this many positions
                             // (the first, the middle and the last for 3), at every layer
    double feat_atol, feat_rtol;   // feature targets: |measured - edge| <= atol + rtol |edge|
    size_t memory_limit;     // 0: the attribution's default
} edge_check;

// The tests' defaults: every error node, atol 5e-4 on feature targets.
__attribute__((unused)) static edge_check edge_check_default(int n_features, int n_const) {
    return (edge_check){n_features, n_const, 64, 0, 0, 5e-4, 0.0, 0};
}

typedef struct {
    ct_model *m;
    const ct_transcoders *tc;
    int T, Lm, Dm, out_raw;
    ct_tc_input input;
    const ct_frozen *fz;
    float *clean_in, *clean_out, *clean_skip;   // (L, T, D)
    float *delta;                               // (L, T, D) added at the output hooks
    float *embed_delta;                         // (T, D) added to the embeddings
    ct_hook_cache hc;                           // input hooks (L) and unembed.hook_pre
} probe;

static ct_status probe_mlp(void *ctx, int l, const ct_mlp_io *io, float *out, ct_err *err) {
    probe *p = ctx;
    size_t TD = (size_t)p->T * p->Dm;
    const float *x = ct_tc_input_of(p->input, io);
    for (size_t i = 0; i < TD; i++) out[i] = p->clean_out[l * TD + i] + p->delta[l * TD + i] - p->clean_skip[l * TD + i];
    ct_tc_skip_add(p->tc, l, x, p->T, out);
    return CT_OK;
}

static ct_status probe_edit(void *ctx, ct_hook_id at, float *x, int T, ct_err *err) {
    probe *p = ctx;
    if (at.kind == CT_HOOK_EMBED)
        for (size_t i = 0; i < (size_t)T * p->Dm; i++) x[i] += p->embed_delta[i];
    return CT_OK;
}

// Frozen pass with the current perturbation: inputs (L, T, D), final-norm output at T-1 (D,).
__attribute__((unused)) static void probe_run(probe *p, const int *tokens, float *inputs, float *final) {
    ct_forward_ctl ctl = {.mlp = probe_mlp, .mlp_out_raw = p->out_raw, .edit = probe_edit, .frozen = p->fz, .ctx = p};
    ct_err err = {0};
    if (ct_model_forward_ctl(p->m, tokens, p->T, NULL, &p->hc, NULL, 0, &ctl, &err)) printf("# forward: %s\n", err.msg);
    size_t TD = (size_t)p->T * p->Dm;
    for (int l = 0; l < p->Lm; l++) memcpy(inputs + l * TD, ct_tensor_data(p->hc.values[l]), sizeof(float) * TD);
    memcpy(final, ct_tensor_data(p->hc.values[p->Lm]) + (size_t)(p->T - 1) * p->Dm, sizeof(float) * p->Dm);
}

// A probe of the clean run of tokens (T,): its frozen values (clean, which the probe points into),
// the transcoders' clean inputs, outputs and skip terms, no perturbation yet. Returns the token
// embeddings as added (T, D), held by clean. Free with probe_close.
__attribute__((unused)) static const float *probe_open(probe *p, ct_frozen_run *clean, ct_model *m, const ct_transcoders *tc,
                                                       const ct_replacement *rm, const int *tokens, int T) {
    int nL = m->cfg.n_layers, nD = m->cfg.d_model;
    size_t TD = (size_t)T * nD;
    *p = (probe){.m = m, .tc = tc, .T = T, .Lm = nL, .Dm = nD, .input = rm->input, .out_raw = rm->out_raw};
    ct_hook_id ids[2 * 64 + 1];
    ct_err err = {0};
    for (int l = 0; l < nL; l++) {
        ct_hook_at(m, l, tc->input_hook, &ids[2 * l], &err);
        ct_hook_at(m, l, tc->output_hook, &ids[2 * l + 1], &err);
    }
    ids[2 * nL] = (ct_hook_id){CT_HOOK_EMBED, -1};
    ct_frozen_capture(clean, m, tokens, T, ids, 2 * nL + 1, NULL, 0, NULL, &err);
    p->fz = &clean->fz;
    p->clean_in = malloc(sizeof(float) * nL * TD), p->clean_out = malloc(sizeof(float) * nL * TD);
    p->clean_skip = calloc(nL * TD, sizeof(float)), p->delta = calloc(nL * TD, sizeof(float));
    p->embed_delta = calloc(TD, sizeof(float));
    for (int l = 0; l < nL; l++) {
        memcpy(p->clean_in + l * TD, ct_frozen_extra(clean, 2 * l), sizeof(float) * TD);
        memcpy(p->clean_out + l * TD, ct_frozen_extra(clean, 2 * l + 1), sizeof(float) * TD);
        ct_tc_skip_add(tc, l, p->clean_in + l * TD, T, p->clean_skip + l * TD);
    }
    return ct_frozen_extra(clean, 2 * nL);
}

__attribute__((unused)) static void probe_close(probe *p, ct_frozen_run *clean) {
    free(p->clean_in), free(p->clean_out), free(p->clean_skip), free(p->delta), free(p->embed_delta);
    ct_frozen_run_free(clean);
}

static uint64_t rng_state = 99;
__attribute__((unused)) static int64_t pick(int64_t n) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int64_t)((rng_state >> 33) % (uint64_t)n);
}

// Token nodes through the intervention code: with every layer constrained (all frozen), doubling
// the embedding at position t (learned positions left out) moves each demeaned logit at the last
// position by the graph's edge from token node t, within 1e-5 + 1e-3 |edge|. Logits are compared
// before Gemma's final softcap (undone: cap atanh(logit / cap)), where graphs measure them.
__attribute__((unused)) static void check_token_interventions(const char *name, ct_replacement *rm, const ct_graph *g, const int *tokens, int T) {
    const ct_model *m = rm->m;
    int nV = m->cfg.vocab_size, nL = m->cfg.n_layers, n_bad = 0;
    int64_t S = g->n_selected, N = g->n_nodes;
    ct_iv_opts o;
    ct_iv_opts_default(&o);
    o.constrained = 1, o.first = 0, o.last = nL - 1, o.activations = 0;
    float *base = malloc(sizeof(float) * (size_t)T * nV), *lg = malloc(sizeof(float) * (size_t)T * nV);
    ct_err err = {0};
    ct_status rc = ct_iv_run(rm, tokens, T, NULL, 0, &o, base, NULL, &err);
    double worst = 0;
    for (int t = 0; !rc && t < T; t++) {
        ct_intervention iv = {CT_IV_TOKEN, 0, 0, t, t, CT_IV_SCALE, 2.0f};
        if ((rc = ct_iv_run(rm, tokens, T, &iv, 1, &o, lg, NULL, &err))) break;
        const float *b0 = base + (size_t)(T - 1) * nV, *b1 = lg + (size_t)(T - 1) * nV;
        double cap = m->cfg.final_softcap, mean = 0, *d = malloc(sizeof(double) * (size_t)nV);
        for (int v = 0; v < nV; v++) {
            d[v] = cap > 0 ? cap * (atanh(b1[v] / cap) - atanh(b0[v] / cap)) : (double)b1[v] - b0[v];
            mean += d[v] / nV;
        }
        for (int k = 0; k < g->n_logits; k++) {
            int64_t id = g->logits[k].vocab_id;
            double dk = d[id] - mean, edge = g->adj[(size_t)(S + k) * N + S + (int64_t)nL * T + t];
            worst = fmax(worst, fabs(dk - edge) / (1e-5 + 1e-3 * fabs(edge)));
            n_bad += !(fabs(dk - edge) <= 1e-5 + 1e-3 * fabs(edge));
        }
        free(d);
    }
    ok(rc == CT_OK && n_bad == 0, "%s: doubling each of the %d token embeddings by intervention moves the %d logits by "
       "the graph's edges (worst diff / tolerance %.2g)%s", name, T, g->n_logits, worst, rc ? err.msg : "");
    free(base), free(lg);
}

// Checks sampled feature columns, error nodes and every token column of a graph of the prompt
// against perturbations (what: see edge_check). Returns how many of the checked feature columns
// have a negative activation.
__attribute__((unused)) static int64_t check_graph(const char *name, ct_model *m, const ct_transcoders *tc,
                                                   const int *tokens, int T, const edge_check *ck) {
    int n_features = ck->n_features, n_const = ck->n_const;
    ct_err err = {0};
    ct_attr_opts o;
    ct_attr_opts_default(&o);
    o.batch_size = ck->batch_size;
    if (ck->max_feature_nodes) o.max_feature_nodes = ck->max_feature_nodes;
    if (ck->memory_limit) o.memory_limit = ck->memory_limit;
    ct_graph *g = NULL;
    ct_replacement rm;
    ct_status rc = ct_replacement_init(&rm, m, tc, &err);
    if (!rc && n_const) rc = ct_replacement_set_constant(&rm, n_const, &err);
    n_const = rm.n_const;
    if (!rc) rc = ct_attribute(&g, &rm, tokens, T, &o, &err);
    ok(rc == CT_OK, "%s: attribute (%s)", name, rc ? err.msg : "ok");
    if (rc) return 0;
    check_token_interventions(name, &rm, g, tokens, T);
    int nL = m->cfg.n_layers, nD = m->cfg.d_model;
    size_t TD = (size_t)T * nD;
    probe p;
    ct_frozen_run clean;
    const float *embed = probe_open(&p, &clean, m, tc, &rm, tokens, T);
    ct_replacement_free(&rm);
    ct_hook_id pid[65];
    for (int l = 0; l < nL; l++) ct_hook_at(m, l, tc->input_hook, &pid[l], &err);
    pid[nL] = (ct_hook_id){CT_HOOK_UNEMBED_PRE, -1};
    ct_hook_cache_init(&p.hc, pid, nL + 1, &err);

    // demeaned unembedding of the logit targets
    int K = g->n_logits;
    double *u = calloc((size_t)K * nD, sizeof(double)), *mean = calloc(nD, sizeof(double));
    float *row = malloc(sizeof(float) * nD);   // (D,): a row of the unembedding, then of a decoder
    for (int v = 0; v < m->cfg.vocab_size; v++) {
        ct_mat_row(&m->lm_head, v, row);
        for (int i = 0; i < nD; i++) mean[i] += row[i];
    }
    for (int k = 0; k < K; k++) {
        ct_mat_row(&m->lm_head, g->logits[k].vocab_id, row);
        for (int i = 0; i < nD; i++) u[k * nD + i] = row[i] - mean[i] / m->cfg.vocab_size;
    }

    float *base_in = malloc(sizeof(float) * nL * TD), *in = malloc(sizeof(float) * nL * TD);
    float base_fin[4096], fin[4096];
    probe_run(&p, tokens, base_in, base_fin);
    // the frozen pass with no perturbation reproduces the clean run
    ok(check_close(base_in, p.clean_in, nL * TD, 1e-5, 1e-5, "frozen pass = clean run"), "%s: frozen pass reproduces the clean run", name);

    int64_t S = g->n_selected;
    double worst_f = 0, worst_l = 0;
    int64_t n_bad = 0, n_checked = 0, n_cols = 0, n_negative = 0;
    // error positions checked: all, or ck->err_positions spread from the first to the last
    int n_ep = ck->err_positions > 0 && ck->err_positions < T ? ck->err_positions : T;
    int *ep = malloc(sizeof(int) * (size_t)n_ep);
    for (int i = 0; i < n_ep; i++) ep[i] = n_ep == T ? i : n_ep == 1 ? T - 1 : (int)((int64_t)i * (T - 1) / (n_ep - 1));
    float *recon = malloc(sizeof(float) * nL * TD);   // error = clean output - reconstruction
    ct_tc_reconstruct(tc, p.clean_in, T, recon, &err);
    // columns to check: sampled features, the error nodes at those positions, every token node
    int64_t n_err = (int64_t)nL * n_ep;
    int64_t n_try = (S < n_features ? S : n_features) + n_err + T;
    uint8_t *seen = calloc(S + 1, 1);
    for (int64_t q = 0; q < n_try; q++) {
        int64_t col;
        memset(p.delta, 0, sizeof(float) * nL * TD);
        memset(p.embed_delta, 0, sizeof(float) * TD);
        if (q < n_try - n_err - T) {   // a feature: double it
            do col = S <= n_features ? q : pick(S);
            while (S > n_features && seen[col]);
            seen[col] = 1;
            ct_node_info ni = ct_graph_node(g, col);
            float a = g->activation[ni.active];
            n_negative += a < 0;
            for (int j = 0; j < tc->layers[ni.layer].n_out; j++) {
                ct_tc_decoder_row(tc, ni.layer, ni.feature, j, row, &err);
                float *d = p.delta + ((size_t)(ni.layer + j) * T + ni.pos) * nD;
                for (int i = 0; i < nD; i++) d[i] = a * row[i];
            }
        } else if (q < n_try - T) {   // an error node: add its vector again
            int64_t e = q - (n_try - n_err - T);
            int l = (int)(e / n_ep), t = ep[e % n_ep];
            col = S + (int64_t)l * T + t;
            if (t >= n_const)   // constant positions: a zero error vector
                for (int i = 0; i < nD; i++)
                    p.delta[((size_t)l * T + t) * nD + i] = p.clean_out[((size_t)l * T + t) * nD + i] - recon[((size_t)l * T + t) * nD + i];
        } else {   // a token node: add its embedding again
            int t = (int)(q - (n_try - T));
            col = S + (int64_t)nL * T + t;
            memcpy(p.embed_delta + (size_t)t * nD, embed + (size_t)t * nD, sizeof(float) * nD);
        }
        n_cols++;
        probe_run(&p, tokens, in, fin);
        // feature targets
        for (int64_t r = 0; r < S; r++) {
            ct_node_info ni = ct_graph_node(g, r);
            if (ct_tc_encoder_row(tc, ni.layer, ni.feature, row, &err)) {   // the feature's encoder row
                printf("# %s: encoder row of feature row %lld: %s\n", name, (long long)r, err.msg);
                n_bad++;
                continue;
            }
            const float *x1 = in + ((size_t)ni.layer * T + ni.pos) * nD, *x0 = base_in + ((size_t)ni.layer * T + ni.pos) * nD;
            double meas = 0;
            for (int i = 0; i < nD; i++) meas += ((double)x1[i] - x0[i]) * row[i];
            double pred = ct_graph_weight(g, r, col), d = fabs(meas - pred);
            if (d > worst_f) worst_f = d;
            if (!(d <= ck->feat_atol + ck->feat_rtol * fabs(pred))) {
                if (n_bad < 5) printf("# %s: feature row %lld col %lld: measured %.6g, edge %.6g\n", name, (long long)r, (long long)col, meas, pred);
                n_bad++;
            }
            n_checked++;
        }
        for (int k = 0; k < K; k++) {
            double meas = 0;
            for (int i = 0; i < nD; i++) meas += ((double)fin[i] - base_fin[i]) * u[k * nD + i];
            double pred = ct_graph_weight(g, ct_graph_logit_node(g, k), col), d = fabs(meas - pred);
            if (d / (fabs(pred) + 1e-3) > worst_l) worst_l = d / (fabs(pred) + 1e-3);
            if (!(d <= 1e-5 + 1e-3 * fabs(pred))) {
                if (n_bad < 5) printf("# %s: logit %d col %lld: measured %.8g, edge %.8g\n", name, k, (long long)col, meas, pred);
                n_bad++;
            }
            n_checked++;
        }
    }
    printf("# %s: %lld active features, %lld columns checked (%lld features, %lld of them negative), %lld edges; "
           "worst feature |diff| %.3g, worst logit relative %.3g\n", name, (long long)g->n_active, (long long)n_cols,
           (long long)(n_try - n_err - T), (long long)n_negative, (long long)n_checked, worst_f, worst_l);
    ok(n_bad == 0 && n_checked > 0, "%s: %lld edges equal the measured effects (%lld off)", name, (long long)n_checked, (long long)n_bad);
    ok(S >= (n_features < 100 ? 1 : 100) || S == g->n_active, "%s: %lld feature nodes", name, (long long)S);
    // the constant positions: no feature node, and every edge from their error nodes zero
    int const_ok = 1;
    for (int64_t r = 0; r < S; r++) const_ok = const_ok && ct_graph_node(g, r).pos >= n_const;
    for (int l = 0; l < nL; l++)
        for (int t = 0; t < n_const && t < T; t++) {
            int64_t col = S + (int64_t)l * T + t;
            for (int64_t r = 0; r < S; r++) const_ok = const_ok && ct_graph_weight(g, r, col) == 0.0f;
            for (int k = 0; k < K; k++) const_ok = const_ok && ct_graph_weight(g, ct_graph_logit_node(g, k), col) == 0.0f;
        }
    ok(const_ok, "%s: positions 0..%d are constant: no feature node, no edge from their error nodes", name, n_const - 1);

    free(seen), free(u), free(mean), free(base_in), free(in), free(ep), free(recon), free(row);
    ct_hook_cache_free(&p.hc);
    probe_close(&p, &clean);
    ct_graph_free(g);
    return n_negative;
}

#endif
