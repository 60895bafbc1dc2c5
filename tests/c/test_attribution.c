// test_attribution.c - every edge of an attribution graph against the measured effect of
// perturbing its source in the real model with attention patterns, norm denominators and MLP
// outputs frozen (the local replacement model run forwards): doubling a feature adds its
// activation times its decoder row(s) at the output hook; an error node adds its error vector
// again; a token node adds its embedding again. Target feature pre-activations must move by the
// edge within atol 5e-4, demeaned logits within 1e-5 + 1e-3 |edge|. Tiny random models of every
// family with per-layer (ReLU, JumpReLU, TopK; with and without skip) and cross-layer
// transcoders, among them TopK sets whose active features are mostly negative (circuit-tracer's
// TopK keeps them as they are), with weights stored F32, BF16 and F16 (those read a tile at a
// time; some cases with one-row tiles), then stories260K with its default transcoders.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace/attribution.h"
#include "check.h"
#include "trace/intervention.h"
#include "trace/replacement.h"
#include "tiny.h"

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
static void probe_run(probe *p, const int *tokens, float *inputs, float *final) {
    ct_forward_ctl ctl = {.mlp = probe_mlp, .mlp_out_raw = p->out_raw, .edit = probe_edit, .frozen = p->fz, .ctx = p};
    ct_err err = {0};
    if (ct_model_forward_ctl(p->m, tokens, p->T, NULL, &p->hc, NULL, 0, &ctl, &err)) printf("# forward: %s\n", err.msg);
    size_t TD = (size_t)p->T * p->Dm;
    for (int l = 0; l < p->Lm; l++) memcpy(inputs + l * TD, ct_tensor_data(p->hc.values[l]), sizeof(float) * TD);
    memcpy(final, ct_tensor_data(p->hc.values[p->Lm]) + (size_t)(p->T - 1) * p->Dm, sizeof(float) * p->Dm);
}

static uint64_t rng_state = 99;
static int64_t pick(int64_t n) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int64_t)((rng_state >> 33) % (uint64_t)n);
}

// Token nodes through the intervention code: with every layer constrained (all frozen), doubling
// the embedding at position t (learned positions left out) moves each demeaned logit at the last
// position by the graph's edge from token node t, within 1e-5 + 1e-3 |edge|. Logits are compared
// before Gemma's final softcap (undone: cap atanh(logit / cap)), where graphs measure them.
static void check_token_interventions(const char *name, ct_replacement *rm, const ct_graph *g, const int *tokens, int T) {
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

// Checks every column of the named kinds against perturbations; n_features sampled features.
// n_const: the positions the replacement model holds constant (0: its own rule). Returns how many of
// the checked feature columns have a negative activation.
static int64_t check_graph(const char *name, ct_model *m, const ct_transcoders *tc, const int *tokens, int T, int n_features,
                           int n_const) {
    ct_err err = {0};
    ct_attr_opts o;
    ct_attr_opts_default(&o);
    o.batch_size = 64;   // several batches, mixed layers and positions
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
    probe p = {.m = m, .tc = tc, .T = T, .Lm = nL, .Dm = nD, .input = rm.input, .out_raw = rm.out_raw};
    ct_replacement_free(&rm);
    // clean run: frozen values, transcoder inputs and outputs, embeddings
    ct_frozen_run clean;
    ct_hook_id ids[2 * 64 + 1], pid[65];
    for (int l = 0; l < nL; l++) {
        ct_hook_at(m, l, tc->input_hook, &ids[2 * l], &err);
        ct_hook_at(m, l, tc->output_hook, &ids[2 * l + 1], &err);
        pid[l] = ids[2 * l];
    }
    ids[2 * nL] = (ct_hook_id){CT_HOOK_EMBED, -1};
    ct_frozen_capture(&clean, m, tokens, T, ids, 2 * nL + 1, NULL, 0, &err);
    p.fz = &clean.fz;
    p.clean_in = malloc(sizeof(float) * nL * TD), p.clean_out = malloc(sizeof(float) * nL * TD);
    p.clean_skip = calloc(nL * TD, sizeof(float)), p.delta = calloc(nL * TD, sizeof(float));
    p.embed_delta = calloc(TD, sizeof(float));
    for (int l = 0; l < nL; l++) {
        memcpy(p.clean_in + l * TD, ct_frozen_extra(&clean, 2 * l), sizeof(float) * TD);
        memcpy(p.clean_out + l * TD, ct_frozen_extra(&clean, 2 * l + 1), sizeof(float) * TD);
        ct_tc_skip_add(tc, l, p.clean_in + l * TD, T, p.clean_skip + l * TD);
    }
    const float *embed = ct_frozen_extra(&clean, 2 * nL);
    pid[nL] = (ct_hook_id){CT_HOOK_UNEMBED_PRE, -1};
    ct_hook_cache_init(&p.hc, pid, nL + 1, &err);

    // demeaned unembedding of the logit targets
    int K = g->n_logits;
    double *u = calloc((size_t)K * nD, sizeof(double)), *mean = calloc(nD, sizeof(double));
    for (int v = 0; v < m->cfg.vocab_size; v++)
        for (int i = 0; i < nD; i++) mean[i] += mat_at(&m->lm_head, v, i);
    for (int k = 0; k < K; k++)
        for (int i = 0; i < nD; i++) u[k * nD + i] = mat_at(&m->lm_head, g->logits[k].vocab_id, i) - mean[i] / m->cfg.vocab_size;

    float *base_in = malloc(sizeof(float) * nL * TD), *in = malloc(sizeof(float) * nL * TD);
    float *wrow = malloc(sizeof(float) * nD);
    float base_fin[4096], fin[4096];
    probe_run(&p, tokens, base_in, base_fin);
    // the frozen pass with no perturbation reproduces the clean run
    ok(check_close(base_in, p.clean_in, nL * TD, 1e-5, 1e-5, "frozen pass = clean run"), "%s: frozen pass reproduces the clean run", name);

    int64_t S = g->n_selected;
    double worst_f = 0, worst_l = 0;
    int64_t n_bad = 0, n_checked = 0, n_cols = 0, n_negative = 0;
    // columns to check: sampled features, every error node, every token node
    int64_t n_err = (int64_t)nL * T;
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
            float row[4096];
            for (int j = 0; j < tc->layers[ni.layer].n_out; j++) {
                ct_tc_decoder_row(tc, ni.layer, ni.feature, j, row, &err);
                float *d = p.delta + ((size_t)(ni.layer + j) * T + ni.pos) * nD;
                for (int i = 0; i < nD; i++) d[i] = a * row[i];
            }
        } else if (q < n_try - T) {   // an error node: add its vector again
            int64_t e = q - (n_try - n_err - T);
            col = S + e;
            const float *ev = p.clean_out;   // error = clean output - reconstruction
            (void)ev;
            int l = (int)(e / T), t = (int)(e % T);
            // the error vector of (l, t) from the graph's own definition: recompute from the set
            float *recon = malloc(sizeof(float) * nL * TD);
            ct_tc_reconstruct(tc, p.clean_in, T, recon, &err);
            if (t >= n_const)   // constant positions: a zero error vector
                for (int i = 0; i < nD; i++)
                    p.delta[((size_t)l * T + t) * nD + i] = p.clean_out[((size_t)l * T + t) * nD + i] - recon[((size_t)l * T + t) * nD + i];
            free(recon);
        } else {   // a token node: add its embedding again
            int t = (int)(q - (n_try - T));
            col = S + n_err + t;
            memcpy(p.embed_delta + (size_t)t * nD, embed + (size_t)t * nD, sizeof(float) * nD);
        }
        n_cols++;
        probe_run(&p, tokens, in, fin);
        // feature targets
        for (int64_t r = 0; r < S; r++) {
            ct_node_info ni = ct_graph_node(g, r);
            if (ct_tc_encoder_row(tc, ni.layer, ni.feature, wrow, &err)) {   // the feature's encoder row
                printf("# %s: encoder row of feature row %lld\n", name, (long long)r);
                n_bad++;
                continue;
            }
            const float *x1 = in + ((size_t)ni.layer * T + ni.pos) * nD, *x0 = base_in + ((size_t)ni.layer * T + ni.pos) * nD;
            double meas = 0;
            for (int i = 0; i < nD; i++) meas += ((double)x1[i] - x0[i]) * wrow[i];
            double pred = ct_graph_weight(g, r, col), d = fabs(meas - pred);
            if (d > worst_f) worst_f = d;
            if (!(d <= 5e-4)) {
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

    free(seen), free(u), free(mean), free(base_in), free(in), free(wrow);
    free(p.clean_in), free(p.clean_out), free(p.clean_skip), free(p.delta), free(p.embed_delta);
    ct_hook_cache_free(&p.hc);
    ct_frozen_run_free(&clean);
    ct_graph_free(g);
    return n_negative;
}

typedef struct {
    const char *arch;
    int clt;
    const char *act;
    int skip;
    const char *in, *out;
    ct_dtype dt;     // of the model's weights
    int small_tiles; // products convert one row (or column) of a weight at a time
    int enc;         // how the encoders are stored (tiny.h TC_ENC_*)
} tc_case;

static const int prompt[8] = {0, 3, 4, 3, 2, 5, 3, 8};

int main(void) {
    char tmp[] = "/tmp/ct_attrXXXXXX";
    if (!mkdtemp(tmp)) return 1;
    const tc_case cases[] = {
        {"LlamaForCausalLM", 0, "relu", 0, "mlp.hook_in", "mlp.hook_out", CT_DT_F32, 0, TC_ENC_F32},
        {"LlamaForCausalLM", 0, "topk", 1, "hook_resid_mid", "mlp.hook_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Gemma2ForCausalLM", 0, "jumprelu", 0, "ln2.hook_normalized", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Gemma2ForCausalLM", 0, "relu", 1, "mlp.hook_in", "mlp.hook_out", CT_DT_F32, 0, TC_ENC_F32},
        {"GPT2LMHeadModel", 0, "jumprelu", 1, "mlp.hook_in", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"GPT2LMHeadModel", 0, "topk", 0, "ln2.hook_normalized", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Qwen3ForCausalLM", 0, "topk", 0, "mlp.hook_in", "mlp.hook_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Qwen3ForCausalLM", 0, "relu", 1, "mlp.hook_in", "mlp.hook_out", CT_DT_F32, 0, TC_ENC_F32},
        {"LlamaForCausalLM", 1, "relu", 1, "hook_resid_mid", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Gemma2ForCausalLM", 1, "jumprelu", 0, "hook_resid_mid", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"GPT2LMHeadModel", 1, "relu", 0, "hook_resid_mid", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"LlamaForCausalLM", 0, "topk-negative", 1, "mlp.hook_in", "mlp.hook_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Gemma2ForCausalLM", 0, "topk-negative", 0, "ln2.hook_normalized", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Gemma3ForCausalLM", 0, "jumprelu", 1, "mlp.hook_in", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Gemma3ForConditionalGeneration", 0, "topk", 0, "ln2.hook_normalized", "mlp.hook_out", CT_DT_F32, 0, TC_ENC_F32},
        {"Gemma3ForCausalLM", 1, "jumprelu", 1, "hook_resid_mid", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_F32},
        {"LlamaForCausalLM", 0, "relu", 0, "mlp.hook_in", "mlp.hook_out", CT_DT_BF16, 0, TC_ENC_F32},
        {"Gemma2ForCausalLM", 0, "jumprelu", 0, "ln2.hook_normalized", "hook_mlp_out", CT_DT_F16, 0, TC_ENC_F32},
        {"GPT2LMHeadModel", 1, "relu", 0, "hook_resid_mid", "hook_mlp_out", CT_DT_BF16, 0, TC_ENC_F32},
        {"Qwen3ForCausalLM", 0, "topk", 0, "mlp.hook_in", "mlp.hook_out", CT_DT_BF16, 1, TC_ENC_F32},
        {"LlamaForCausalLM", 1, "relu", 1, "hook_resid_mid", "hook_mlp_out", CT_DT_F16, 1, TC_ENC_F32},
        {"GPT2LMHeadModel", 0, "jumprelu", 1, "mlp.hook_in", "hook_mlp_out", CT_DT_F16, 1, TC_ENC_F32},
        {"Gemma3ForCausalLM", 0, "jumprelu", 1, "mlp.hook_in", "hook_mlp_out", CT_DT_BF16, 1, TC_ENC_F32},
        // encoders as the published sets store them: (D, F) float32, (F, D) bf16
        {"Gemma2ForCausalLM", 0, "jumprelu", 1, "mlp.hook_in", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_GS2},
        {"LlamaForCausalLM", 0, "relu", 1, "hook_resid_mid", "mlp.hook_out", CT_DT_F32, 0, TC_ENC_BF16},
        {"Gemma2ForCausalLM", 1, "relu", 0, "hook_resid_mid", "hook_mlp_out", CT_DT_F32, 0, TC_ENC_BF16},
        {"LlamaForCausalLM", 0, "topk", 0, "mlp.hook_in", "mlp.hook_out", CT_DT_BF16, 1, TC_ENC_BF16},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const tc_case *k = &cases[c];
        char mdir[256], tdir[256], name[256];
        ct_dtype dt = k->dt;
        snprintf(mdir, sizeof mdir, "%s/%s-%s", tmp, k->arch, ct_dtype_name(dt));
        snprintf(tdir, sizeof tdir, "%s/tc%zu", tmp, c);
        snprintf(name, sizeof name, "%s %s %s %s%s %s->%s%s%s", k->arch, ct_dtype_name(dt), k->clt ? "CLT" : "PLT", k->act,
                 k->skip ? "+skip" : "", k->in, k->out, k->small_tiles ? ", one-row tiles" : "",
                 k->enc == TC_ENC_GS2 ? ", encoders (D, F)" : k->enc == TC_ENC_BF16 ? ", encoders bf16" : "");
        ct_mat_tile_limit(k->small_tiles ? 1 : 0);
        make_family(mdir, k->arch, dt);
        make_transcoders_enc(tdir, family_width(k->arch), k->clt, k->act, k->skip, k->in, k->out, k->enc);
        ct_model *m = NULL;
        ct_transcoders *tc = NULL;
        ct_err err = {0};
        int okm = ct_model_load(NULL, &m, mdir, &err) == CT_OK && ct_transcoders_load(NULL, &tc, tdir, &err) == CT_OK;
        ok(okm, "%s: load (%s)", name, okm ? "ok" : err.msg);
        int64_t neg = okm ? check_graph(name, m, tc, prompt, 8, 100, 0) : 0;
        if (okm && strcmp(k->act, "topk-negative") == 0)
            ok(neg >= 20, "%s: %lld of the checked features have a negative activation (active as they are)", name, (long long)neg);
        // Gemma-3 instruction-tuned models hold 4 positions constant (their chat prefix): the same
        // graph with 4 constant positions is exact too, and has no feature at positions 0..3 and
        // no edge from an error node there
        if (okm && k->arch[5] == '3' && !k->clt && dt == CT_DT_F32) {
            snprintf(name, sizeof name, "%s %s %s, 4 constant positions", k->arch, k->act, k->out);
            check_graph(name, m, tc, prompt, 8, 100, 4);
        }
        ct_transcoders_free(tc);
        ct_model_free(m);
    }
    ct_mat_tile_limit(0);

    // stories260K with its default transcoders: real weights
    const char *models = getenv("CTRACE_MODELS") ? getenv("CTRACE_MODELS") : "../shared/models";
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K", models);
    ct_model *m = NULL;
    ct_transcoders *tc = NULL;
    ct_err err = {0};
    int okm = ct_model_load(NULL, &m, path, &err) == CT_OK &&
              ct_transcoders_load(NULL, &tc, "experiments/stories260K-transcoders/transcoders", &err) == CT_OK;
    ok(okm, "stories260K: load (%s)", okm ? "ok" : err.msg);
    if (okm) {
        int *ids = NULL, n = 0;
        const char *text = "Once upon a time, there was a little girl named Lily. She";
        ct_tokenizer_encode(m->tok, text, strlen(text), 1, &ids, &n, &err);
        check_graph("stories260K", m, tc, ids, n, 150, 0);
        free(ids);
    }
    ct_transcoders_free(tc);
    ct_model_free(m);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) printf("# could not remove %s\n", tmp);
    return check_done();
}
