// test_heads.c - head-resolved edges (trace/heads.h) against the frozen model run forwards (tests/
// c/edges.h's probe) with attention heads closed: a closed head's attention-weighted values held at
// their clean ones (attn.hook_z), so a perturbation cannot pass through it. For sampled edges of a
// graph (feature and logit targets; feature, error and token sources; at one position and across):
// the residual part equals the source added once more with every head closed; each head's part the
// same with only that head open, less the closed-head effect; the multi-hop rest the whole effect
// less those. Tiny random models of every family, per-layer and cross-layer transcoders, skip
// connections, grouped keys and values, post norms, q/k norms. Tolerance: 2e-5 + 1e-3 |value|: a
// difference of two float32 passes of width 16, relative to the value.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edges.h"
#include "tiny.h"
#include "trace/attribution.h"
#include "trace/heads.h"

static const int prompt[8] = {0, 3, 4, 3, 2, 5, 3, 8};
#define TP 8

typedef struct {
    probe p;                 // first: probe_mlp reads the context as a probe
    const float *clean_z;    // (L) each (T, H*hd) the clean run's attention-weighted values
    const float *zs[8];
    int open_layer, open_head;   // the one head open; -1: none; -2: all
} hprobe;

static ct_status hp_edit(void *ctx, ct_hook_id at, float *x, int T, ct_err *err) {
    hprobe *h = ctx;
    if (at.kind != CT_HOOK_Z) return probe_edit(ctx, at, x, T, err);
    if (h->open_layer == -2) return CT_OK;
    const ct_config *c = &h->p.m->cfg;
    int nH = c->n_heads, hd = c->head_dim;
    for (int t = 0; t < T; t++)
        for (int hh = 0; hh < nH; hh++)
            if (!(at.layer == h->open_layer && hh == h->open_head))
                memcpy(x + ((size_t)t * nH + hh) * hd, h->zs[at.layer] + ((size_t)t * nH + hh) * hd, sizeof(float) * hd);
    return CT_OK;
}

// The target's value in the frozen pass with the current perturbation and open heads: a feature's
// encoder row . its input hook; a logit's demeaned unembedding row . the final norm's output.
static double measure(hprobe *h, const float *read, int layer, int pos) {
    probe *p = &h->p;
    ct_forward_ctl ctl = {.mlp = probe_mlp, .mlp_out_raw = p->out_raw, .edit = hp_edit, .frozen = p->fz, .ctx = h};
    ct_err err = {0};
    if (ct_model_forward_ctl(p->m, prompt, p->T, NULL, &p->hc, NULL, 0, &ctl, &err)) printf("# forward: %s\n", err.msg);
    const float *x = ct_tensor_data(p->hc.values[layer]) + (size_t)pos * p->Dm;   // L: unembed.hook_pre
    double s = 0;
    for (int i = 0; i < p->Dm; i++) s += (double)read[i] * x[i];
    return s;
}

static int close_to(double got, double want) { return fabs(got - want) <= 2e-5 + 1e-3 * fabs(want); }

static void check_case(const char *name, ct_model *m, const ct_transcoders *tc) {
    const ct_config *c = &m->cfg;
    int nL = c->n_layers, nD = c->d_model, nH = c->n_heads, T = TP;
    size_t TD = (size_t)T * nD;
    ct_err err = {0};
    ct_replacement rm;
    ct_graph *g = NULL;
    ct_attr_opts o;
    ct_attr_opts_default(&o);
    o.batch_size = 16;
    ct_status rc = ct_replacement_init(&rm, m, tc, &err);
    if (!rc) rc = ct_attribute(&g, &rm, prompt, T, &o, &err);
    ok(rc == CT_OK, "%s: attribute (%s)", name, rc ? err.msg : "ok");
    if (rc) {
        ct_replacement_free(&rm);
        return;
    }
    // the probe, with each layer's clean attention-weighted values and the readouts
    hprobe h = {.open_layer = -1};
    ct_frozen_run clean;
    const float *embed = probe_open(&h.p, &clean, m, tc, &rm, prompt, T);
    ct_hook_id zid[8];
    for (int l = 0; l < nL; l++) zid[l] = (ct_hook_id){CT_HOOK_Z, l};
    ct_hook_cache zc = {0};
    ct_hook_cache_init(&zc, zid, nL, &err);
    ct_model_forward(m, prompt, T, NULL, &zc, NULL, 0, &err);
    for (int l = 0; l < nL; l++) h.zs[l] = ct_tensor_data(zc.values[l]);
    ct_hook_id pid[9];
    for (int l = 0; l < nL; l++) ct_hook_at(m, l, tc->input_hook, &pid[l], &err);
    pid[nL] = (ct_hook_id){CT_HOOK_UNEMBED_PRE, -1};
    ct_hook_cache_init(&h.p.hc, pid, nL + 1, &err);
    float *recon = malloc(sizeof(float) * nL * TD), *row = malloc(sizeof(float) * nD), *read = malloc(sizeof(float) * nD);
    ct_tc_reconstruct(tc, h.p.clean_in, T, recon, &err);
    double *mean = calloc((size_t)nD, sizeof(double));
    for (int v = 0; v < c->vocab_size; v++) {
        ct_mat_row(&m->lm_head, v, row);
        for (int i = 0; i < nD; i++) mean[i] += row[i] / c->vocab_size;
    }

    // targets: the last layer's features at the last three positions and the first logit; sources:
    // each target's three largest edges, a token and an error node at another position
    int64_t S = g->n_selected, targets[16], n_targets = 0;
    for (int64_t r = 0; r < S && n_targets < 6; r++) {
        ct_node_info ni = ct_graph_node(g, r);
        if (ni.layer == nL - 1 && ni.pos >= T - 3) targets[n_targets++] = r;
    }
    targets[n_targets++] = ct_graph_logit_node(g, 0);
    int n_edges = 0, n_bad = 0, n_cross = 0, n_multi = 0, kinds[3] = {0};
    double worst = 0, sum_worst = 0;
    for (int64_t ti = 0; ti < n_targets; ti++) {
        int64_t t = targets[ti], src[6];
        ct_node_info tn = ct_graph_node(g, t);
        int n_src = 0, R = tn.kind == CT_NODE_LOGIT ? nL : tn.layer, pt = tn.pos;
        const float *arow = ct_graph_row(g, t);
        for (int k = 0; k < 3; k++) {   // the largest edges
            int64_t best = -1;
            for (int64_t s = 0; s < ct_graph_logit_node(g, 0); s++) {
                int taken = 0;
                for (int q = 0; q < n_src; q++) taken |= src[q] == s;
                if (!taken && (best < 0 || fabs(arow[s]) > fabs(arow[best]))) best = s;
            }
            src[n_src++] = best;
        }
        src[n_src++] = ct_graph_token_node(g, pt - 2);
        src[n_src++] = ct_graph_error_node(g, 0, pt - 1);
        // the target's read
        if (tn.kind == CT_NODE_FEATURE) {
            ct_tc_encoder_row(tc, tn.layer, tn.feature, read, &err);
        } else {
            ct_mat_row(&m->lm_head, tn.feature, read);
            for (int i = 0; i < nD; i++) read[i] = (float)(read[i] - mean[i]);
        }
        for (int si = 0; si < n_src; si++) {
            int64_t s = src[si];
            ct_node_info sn = ct_graph_node(g, s);
            ct_edge_heads e;
            rc = ct_edge_heads_run(&e, &rm, g, t, s, &err);
            if (rc) {
                printf("# %s: edge %lld -> %lld: %s\n", name, (long long)s, (long long)t, err.msg);
                n_bad++;
                continue;
            }
            // the source once more
            memset(h.p.delta, 0, sizeof(float) * nL * TD);
            memset(h.p.embed_delta, 0, sizeof(float) * TD);
            if (sn.kind == CT_NODE_FEATURE) {
                for (int j = 0; j < tc->layers[sn.layer].n_out; j++) {
                    ct_tc_decoder_row(tc, sn.layer, sn.feature, j, row, &err);
                    float *d = h.p.delta + ((size_t)(sn.layer + j) * T + sn.pos) * nD;
                    for (int i = 0; i < nD; i++) d[i] = g->activation[sn.active] * row[i];
                }
                kinds[0]++;
            } else if (sn.kind == CT_NODE_ERROR) {
                size_t o0 = ((size_t)sn.layer * T + sn.pos) * nD;
                for (int i = 0; i < nD; i++) h.p.delta[o0 + i] = h.p.clean_out[o0 + i] - recon[o0 + i];
                kinds[1]++;
            } else {
                memcpy(h.p.embed_delta + (size_t)sn.pos * nD, embed + (size_t)sn.pos * nD, sizeof(float) * nD);
                kinds[2]++;
            }
            double base[3], with[3];   // no perturbation, then the source added: closed, all open
            for (int k = 0; k < 2; k++) {
                h.open_layer = k ? -2 : -1;
                float *dl = h.p.delta, *de = h.p.embed_delta;
                h.p.delta = calloc(nL * TD, sizeof(float)), h.p.embed_delta = calloc(TD, sizeof(float));
                base[k] = measure(&h, read, R, pt);
                free(h.p.delta), free(h.p.embed_delta);
                h.p.delta = dl, h.p.embed_delta = de;
                with[k] = measure(&h, read, R, pt);
            }
            double closed = with[0] - base[0], full = with[1] - base[1], sum = 0;
            int good = close_to(e.residual, closed) && close_to(e.edge, full);
            worst = fmax(worst, fabs(e.residual - closed) / (2e-5 + 1e-3 * fabs(closed)));
            for (int l = 0; l < nL; l++)
                for (int hh = 0; hh < nH; hh++) {
                    h.open_layer = l, h.open_head = hh;
                    double one = measure(&h, read, R, pt) - with[0];   // base with one head open = base closed
                    double part = e.heads[(size_t)l * nH + hh];
                    good = good && close_to(part, one);
                    worst = fmax(worst, fabs(part - one) / (2e-5 + 1e-3 * fabs(one)));
                    sum += one;
                    if (l > R || (l == R && R == nL)) good = good && part == 0;
                }
            h.open_layer = -1;
            double multi = full - closed - sum;
            good = good && fabs(e.multi - multi) <= 1e-4 + 1e-3 * fabs(multi);
            double total = e.residual + e.multi;
            for (int k = 0; k < nL * nH; k++) total += e.heads[k];
            sum_worst = fmax(sum_worst, fabs(total - e.edge) / (1e-6 + 1e-6 * fabs(e.edge)));
            n_cross += sn.pos != pt && fabs(e.edge) > 1e-4;
            n_multi += fabs(e.multi) > 1e-3;
            if (!good && n_bad < 5)
                printf("# %s: edge %lld -> %lld: edge %.6g (measured %.6g) residual %.6g (%.6g) multi %.6g (%.6g)\n", name,
                       (long long)s, (long long)t, e.edge, full, e.residual, closed, e.multi, multi);
            n_bad += !good;
            n_edges++;
            ct_edge_heads_free(&e);
        }
    }
    ok(n_bad == 0 && n_edges >= 20 && kinds[0] && kinds[1] && kinds[2] && n_cross > 0,
       "%s: %d edges (%d feature, %d error, %d token sources; %d across positions, %d with multi-hop paths): the residual "
       "part, each head's part and the multi-hop rest equal the frozen model's with heads closed (worst diff / tolerance "
       "%.2g)", name, n_edges, kinds[0], kinds[1], kinds[2], n_cross, n_multi, worst);
    ok(sum_worst <= 1, "%s: the parts sum to the edge (worst diff / 1e-6 (1 + |edge|): %.2g)", name, sum_worst);

    // bad input
    int64_t N = g->n_nodes;
    ct_edge_heads e;
    ok(ct_edge_heads_run(&e, &rm, g, ct_graph_token_node(g, 1), 0, &err) == CT_STATUS_OUT_OF_RANGE &&
       strstr(err.msg, "target node"), "%s: a token target refused (%s)", name, err.msg);
    ok(ct_edge_heads_run(&e, &rm, g, 0, N - 1, &err) == CT_STATUS_OUT_OF_RANGE && strstr(err.msg, "source node"),
       "%s: a logit source refused (%s)", name, err.msg);
    ok(ct_edge_heads_run(&e, &rm, g, N, 0, &err) == CT_STATUS_OUT_OF_RANGE, "%s: a node past the last refused (%s)", name,
       err.msg);

    free(recon), free(row), free(read), free(mean);
    ct_hook_cache_free(&zc);
    ct_hook_cache_free(&h.p.hc);
    probe_close(&h.p, &clean);
    ct_graph_free(g);
    ct_replacement_free(&rm);
}

int main(void) {
    char tmp[] = "/tmp/ct_headsXXXXXX";
    if (!mkdtemp(tmp)) return 1;
    static const struct {
        const char *arch;
        int clt;
        const char *act;
        int skip;
        const char *in, *out;
    } cases[] = {
        {"LlamaForCausalLM", 0, "relu", 0, "mlp.hook_in", "mlp.hook_out"},
        {"LlamaForCausalLM", 1, "relu", 1, "hook_resid_mid", "hook_mlp_out"},
        {"Gemma2ForCausalLM", 0, "jumprelu", 1, "ln2.hook_normalized", "mlp.hook_out"},
        {"Gemma2ForCausalLM", 1, "relu", 1, "mlp.hook_in", "hook_mlp_out"},
        {"GPT2LMHeadModel", 0, "jumprelu", 1, "mlp.hook_in", "hook_mlp_out"},
        {"GPT2LMHeadModel", 1, "relu", 0, "hook_resid_mid", "hook_mlp_out"},
        {"Qwen3ForCausalLM", 0, "topk", 1, "mlp.hook_in", "mlp.hook_out"},
        {"Gemma3ForCausalLM", 1, "jumprelu", 1, "ln2.hook_normalized", "mlp.hook_out"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char mdir[256], tdir[256], name[256];
        snprintf(mdir, sizeof mdir, "%s/%s", tmp, cases[i].arch);
        snprintf(tdir, sizeof tdir, "%s/tc%zu", tmp, i);
        snprintf(name, sizeof name, "%s %s %s%s %s->%s", cases[i].arch, cases[i].clt ? "CLT" : "PLT", cases[i].act,
                 cases[i].skip ? "+skip" : "", cases[i].in, cases[i].out);
        ct_model *m;
        ct_transcoders *tc;
        ct_err err = {0};
        int okm = make_and_load(mdir, tdir, cases[i].arch, CT_DT_F32, cases[i].clt, cases[i].act, cases[i].skip, cases[i].in,
                                cases[i].out, TC_ENC_F32, &m, &tc, &err);
        ok(okm, "%s: load (%s)", name, okm ? "ok" : err.msg);
        if (okm) check_case(name, m, tc);
        ct_transcoders_free(tc);
        ct_model_free(m);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) printf("# could not remove %s\n", tmp);
    return check_done();
}
