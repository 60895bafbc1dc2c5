// test_qk.c - a head's pre-softmax score split into pairs of nodes (trace/qk.h), against the model
// run forwards with its norm denominators and attention patterns frozen and its MLP outputs replaced
// by the clean ones plus perturbations (tests/c/edges.h's probe): removing every node leaves the
// query and key at their constant parts; adding a node's write once more (a token's embedding, a
// feature's decoder rows times its activation, an error vector) moves them by that node's part;
// the terms sum to the model's score. Tiny random models of every family (q/k norms with their
// denominators frozen too, a sliding-window layer), with per-layer and cross-layer transcoders,
// skip connections and grouped keys and values. Tolerance: 1e-4 + 1e-3 |value| per component (float32 passes of width 16).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edges.h"
#include "tiny.h"
#include "trace/intervention.h"
#include "trace/qk.h"

static const int prompt[8] = {0, 3, 4, 3, 2, 5, 3, 8};
#define TQ 8

typedef struct {
    const char *arch;
    int clt;
    const char *act;
    int skip;
    const char *in, *out;
} qk_case;

// The frozen pass's query of head h at position p and key of KV head kvh at position k.
static void probe_qk(probe *p, int layer, int h, int qpos, int kvh, int kpos, float *q, float *k) {
    const ct_config *c = &p->m->cfg;
    int hd = c->head_dim;
    ct_forward_ctl ctl = {.mlp = probe_mlp, .mlp_out_raw = p->out_raw, .edit = probe_edit, .frozen = p->fz, .ctx = p};
    ct_hook_id ids[2] = {{CT_HOOK_Q, layer}, {CT_HOOK_K, layer}};
    ct_hook_cache hc;
    ct_err err = {0};
    ct_hook_cache_init(&hc, ids, 2, &err);
    if (ct_model_forward_ctl(p->m, prompt, TQ, NULL, &hc, NULL, 0, &ctl, &err)) printf("# forward: %s\n", err.msg);
    memcpy(q, ct_tensor_data(hc.values[0]) + ((size_t)qpos * c->n_heads + h) * hd, sizeof(float) * hd);
    memcpy(k, ct_tensor_data(hc.values[1]) + ((size_t)kpos * c->n_kv_heads + kvh) * hd, sizeof(float) * hd);
    ct_hook_cache_free(&hc);
}

// max over components of |got - want| / (1e-4 + 1e-3 |want|)
static double off_by(const float *got, const float *want, int n) {
    double w = 0;
    for (int i = 0; i < n; i++) w = fmax(w, fabs((double)got[i] - want[i]) / (1e-4 + 1e-3 * fabs((double)want[i])));
    return w;
}

static void check_case(const char *name, ct_model *m, const ct_transcoders *tc) {
    ct_replacement rm;
    ct_err err = {0};
    ct_qk qk;
    const ct_config *c = &m->cfg;
    int nL = c->n_layers, nD = c->d_model, hd = c->head_dim, layer = nL - 1, head = c->n_heads - 1, qpos = 7, kpos = 3;
    int kvh = head / (c->n_heads / c->n_kv_heads);
    if (m->layers[layer].sliding && c->sliding_window > 0 && qpos - kpos >= c->sliding_window) kpos = qpos - 1;
    ct_status rc = ct_replacement_init(&rm, m, tc, &err);
    if (!rc) rc = ct_qk_run(&qk, &rm, prompt, TQ, layer, head, qpos, kpos, &err);
    ok(rc == CT_OK, "%s: qk (%s)", name, rc ? err.msg : "ok");
    if (rc) {
        ct_replacement_free(&rm);
        return;
    }
    int n_const = rm.n_const;
    // the terms over every pair (nodes and constants) sum to the model's score
    int64_t N = qk.n_cols;
    double total = 0;
    for (int j = 0; j < hd; j++) {
        double sq = qk.q0[j], sk = qk.k0[j];
        for (int64_t i = 0; i < N; i++) sq += qk.q[(size_t)j * N + i], sk += qk.k[(size_t)j * N + i];
        total += sq * sk;
    }
    total *= qk.scale;
    ok(fabs(total - qk.score) <= 1e-5 * fabs(qk.score) + 1e-6, "%s: the %lld x %lld terms sum to the score %.6g (%.6g)", name,
       (long long)(N + 1), (long long)(N + 1), qk.score, total);

    // the probe: the clean run's frozen values and hooks
    int T = TQ;
    size_t TD = (size_t)T * nD;
    probe p;
    ct_frozen_run clean;
    const float *embed = probe_open(&p, &clean, m, tc, &rm, prompt, T);
    ok(!c->qk_norm || (clean.fz.q_norm_scale && clean.fz.k_norm_scale), "%s: the frozen run holds the q/k-norm denominators",
       name);
    float *q = malloc(sizeof(float) * hd), *k = malloc(sizeof(float) * hd), *q1 = malloc(sizeof(float) * hd),
          *k1 = malloc(sizeof(float) * hd), *want_q = malloc(sizeof(float) * hd), *want_k = malloc(sizeof(float) * hd);
    float *row = malloc(sizeof(float) * nD);
    probe_qk(&p, layer, head, qpos, kvh, kpos, q, k);
    ok(off_by(q, qk.q_clean, hd) <= 1 && off_by(k, qk.k_clean, hd) <= 1, "%s: the frozen pass gives the clean query and key", name);

    // every node removed: the constant parts are left (the output hooks keep b_dec and the skip,
    // the positions held constant keep their MLP outputs; the embeddings go)
    for (int l = 0; l < nL; l++)
        for (int t = n_const; t < T; t++) {
            float *d = p.delta + ((size_t)l * T + t) * nD;
            const float *o = p.clean_out + ((size_t)l * T + t) * nD, *s = p.clean_skip + ((size_t)l * T + t) * nD;
            for (int i = 0; i < nD; i++) d[i] = -(o[i] - tc->layers[l].b_dec[i] - s[i]);
        }
    for (size_t i = 0; i < TD; i++) p.embed_delta[i] = -embed[i];
    probe_qk(&p, layer, head, qpos, kvh, kpos, q1, k1);
    double w0 = fmax(off_by(q1, qk.q0, hd), off_by(k1, qk.k0, hd));
    ok(w0 <= 1, "%s: every node removed leaves the query and key at their constant parts (worst diff / tolerance %.2g)",
       name, w0);

    // nodes added once more: each moves the query and key by its part. Every token, every error node
    // and every feature at positions up to the query
    double worst = 0;
    int n_nodes = 0;
    for (int64_t col = 0; col < N; col++) {
        memset(p.delta, 0, sizeof(float) * nL * TD);
        memset(p.embed_delta, 0, sizeof(float) * TD);
        int64_t NA = qk.n_active;
        if (col < NA) {
            const int32_t *f = qk.active + 3 * col;
            if (f[0] >= layer || f[1] > qpos) continue;
            for (int j = 0; j < tc->layers[f[0]].n_out; j++) {
                ct_tc_decoder_row(tc, f[0], f[2], j, row, &err);
                float *d = p.delta + ((size_t)(f[0] + j) * T + f[1]) * nD;
                for (int i = 0; i < nD; i++) d[i] = qk.act[col] * row[i];
            }
        } else if (col < NA + (int64_t)nL * T) {
            int l = (int)((col - NA) / T), t = (int)((col - NA) % T);
            if (l >= layer || t < n_const || t > qpos) continue;
            const float *o = p.clean_out + ((size_t)l * T + t) * nD, *s = p.clean_skip + ((size_t)l * T + t) * nD;
            // the error vector: the clean output less the reconstruction (b_dec, skip and every feature's write)
            float *e = p.delta + ((size_t)l * T + t) * nD;
            for (int i = 0; i < nD; i++) e[i] = o[i] - tc->layers[l].b_dec[i] - s[i];
            for (int64_t a = 0; a < NA; a++) {
                const int32_t *f = qk.active + 3 * a;
                if (f[1] != t || f[0] > l || l - f[0] >= tc->layers[f[0]].n_out) continue;
                ct_tc_decoder_row(tc, f[0], f[2], l - f[0], row, &err);
                for (int i = 0; i < nD; i++) e[i] -= qk.act[a] * row[i];
            }
        } else {
            int t = (int)(col - NA - (int64_t)nL * T);
            if (t > qpos) continue;
            memcpy(p.embed_delta + (size_t)t * nD, embed + (size_t)t * nD, sizeof(float) * nD);
        }
        probe_qk(&p, layer, head, qpos, kvh, kpos, q1, k1);
        for (int j = 0; j < hd; j++) {
            want_q[j] = q[j] + qk.q[(size_t)j * N + col];
            want_k[j] = k[j] + qk.k[(size_t)j * N + col];
        }
        worst = fmax(worst, fmax(off_by(q1, want_q, hd), off_by(k1, want_k, hd)));
        n_nodes++;
    }
    ok(n_nodes > 10 && worst <= 1, "%s: each of %d nodes added once more moves the query and key by its part (worst diff / "
       "tolerance %.2g)", name, n_nodes, worst);

    // the top pairs: sorted by size, each the product of its two parts
    ct_qk_pair top[10];
    int n_top = 0;
    rc = ct_qk_top(&qk, 10, top, &n_top, &err);
    int good = rc == CT_OK && n_top == 10;
    for (int t = 0; good && t < n_top; t++) {
        double v = 0;
        for (int j = 0; j < hd; j++) {
            float a = top[t].i < N ? qk.q[(size_t)j * N + top[t].i] : qk.q0[j];
            float b = top[t].j < N ? qk.k[(size_t)j * N + top[t].j] : qk.k0[j];
            v += (double)a * b;
        }
        v *= qk.scale;
        good = fabs(v - top[t].value) <= 1e-5 + 1e-4 * fabs(v) && (t == 0 || fabs(top[t].value) <= fabs(top[t - 1].value));
    }
    // and no pair left out is larger than the 10th: every pair of the (N + 1)^2 in double
    double tenth = n_top == 10 ? fabs(top[9].value) : 0;
    int64_t n_above = 0;
    for (int64_t i = 0; i <= N; i++)
        for (int64_t j2 = 0; j2 <= N; j2++) {
            double v = 0;
            for (int j = 0; j < hd; j++)
                v += (double)(i < N ? qk.q[(size_t)j * N + i] : qk.q0[j]) * (j2 < N ? qk.k[(size_t)j * N + j2] : qk.k0[j]);
            n_above += fabs(v * qk.scale) > tenth * (1 + 1e-6) + 1e-12;
        }
    good = good && n_above < 10;
    ok(good, "%s: the top 10 pairs, by size, each the product of its parts; %lld of all pairs larger than the 10th (%s)",
       name, (long long)n_above, rc ? err.msg : "ok");

    // linearity: a query-side node (a feature after the key position, so the key does not move)
    // scaled by a moves the query by (a - 1) q_i and the score by (a - 1) sum_j scale q_i . k_j
    int64_t lin_col = -1;
    for (int64_t col = 0; col < qk.n_active && lin_col < 0; col++) {
        const int32_t *f = qk.active + 3 * col;
        double nq = 0;
        for (int j = 0; j < hd; j++) nq += fabs(qk.q[(size_t)j * N + col]);
        if (f[0] < layer && f[1] > kpos && f[1] <= qpos && nq > 1e-3) lin_col = col;
    }
    double lin_worst = 0;
    static const float scales[] = {0.0f, 2.0f, -1.0f, 3.5f};
    for (size_t s = 0; lin_col >= 0 && s < sizeof scales / sizeof *scales; s++) {
        const int32_t *f = qk.active + 3 * lin_col;
        memset(p.delta, 0, sizeof(float) * nL * TD);
        memset(p.embed_delta, 0, sizeof(float) * TD);
        for (int j = 0; j < tc->layers[f[0]].n_out; j++) {
            ct_tc_decoder_row(tc, f[0], f[2], j, row, &err);
            float *d = p.delta + ((size_t)(f[0] + j) * T + f[1]) * nD;
            for (int i = 0; i < nD; i++) d[i] = (scales[s] - 1) * qk.act[lin_col] * row[i];
        }
        probe_qk(&p, layer, head, qpos, kvh, kpos, q1, k1);
        double row_sum = 0, got = 0;   // sum_j term(i, j) = scale q_i . k (the clean key); the frozen score
        for (int j = 0; j < hd; j++) {
            want_q[j] = q[j] + (scales[s] - 1) * qk.q[(size_t)j * N + lin_col];
            row_sum += (double)qk.q[(size_t)j * N + lin_col] * qk.k_clean[j];
            got += (double)q1[j] * k1[j];
        }
        row_sum *= qk.scale, got *= qk.scale;
        double want = qk.score + (scales[s] - 1) * row_sum;
        lin_worst = fmax(lin_worst, fmax(off_by(q1, want_q, hd), fabs(got - want) / (1e-4 + 1e-3 * fabs(want))));
    }
    ok(lin_col >= 0 && lin_worst <= 1, "%s: a query-side feature scaled by 0, 2, -1, 3.5 moves the query by (a-1) its part "
       "and the score by (a-1) its terms (worst diff / tolerance %.2g)", name, lin_worst);

    // the attention probability and each pair's shift, against the pass's pattern and the softmax
    // of the row recomputed here from its queries and keys
    ct_hook_id pid[3] = {{CT_HOOK_PATTERN, layer}, {CT_HOOK_Q, layer}, {CT_HOOK_K, layer}};
    ct_hook_cache phc = {0};
    ct_hook_cache_init(&phc, pid, 3, &err);
    ct_model_forward(m, prompt, T, NULL, &phc, NULL, 0, &err);
    const float *pat = ct_tensor_data(phc.values[0]) + ((size_t)head * T + qpos) * T;   // (T,) the query's row
    const float *Qh = ct_tensor_data(phc.values[1]) + ((size_t)qpos * c->n_heads + head) * hd;
    int lo = m->layers[layer].sliding && c->sliding_window > 0 && qpos - c->sliding_window + 1 > 0 ? qpos - c->sliding_window + 1 : 0;
    double sc[TQ];
    for (int t = lo; t <= qpos; t++) {
        const float *Kt = ct_tensor_data(phc.values[2]) + ((size_t)t * c->n_kv_heads + kvh) * hd;
        double d = 0;
        for (int j = 0; j < hd; j++) d += (double)Qh[j] * Kt[j];
        sc[t] = d * c->attn_scale;
    }
    double shift_worst = 0;
    for (int t = 0; t < n_top; t++) {   // p(key) with the pair's term taken from the key's score
        double z = 0, pk = 0, cap = c->attn_softcap;
        for (int u = lo; u <= qpos; u++) {
            double s = u == kpos ? sc[u] - top[t].value : sc[u];
            double e = exp(cap > 0 ? cap * tanh(s / cap) : s);
            z += e;
            if (u == kpos) pk = e;
        }
        shift_worst = fmax(shift_worst, fabs(top[t].shift - (pat[kpos] - pk / z)));
    }
    ok(fabs(qk.prob - pat[kpos]) <= 1e-5 && shift_worst <= 1e-5, "%s: probability %.6g (pattern %.6g); the top pairs' "
       "shifts (worst diff %.2g; 1e-5)", name, qk.prob, pat[kpos], shift_worst);

    // the row: every key the query sees, each as the single-key split gives it (the same score and
    // probability; the same pairs but where two are within float32 rounding of each other, values
    // within 1e-6 (1 + |value|): the key's side comes from a backward batch of several keys), the
    // terms summing to the score and the probabilities to 1
    ct_qk_row qr;
    rc = ct_qk_row_run(&qr, &rm, prompt, T, layer, head, qpos, 10, NULL, &err);
    ct_qk_key *keys = qr.keys;
    int n_keys = qr.n_keys;
    int row_ok = rc == CT_OK && n_keys == qpos - lo + 1;
    double psum = 0;
    for (int r = 0; row_ok && r < n_keys; r++) {
        ct_qk one;
        ct_qk_pair one_top[10];
        int n_one = 0;
        row_ok = keys[r].key == lo + r && !ct_qk_run(&one, &rm, prompt, T, layer, head, qpos, lo + r, &err) &&
                 !ct_qk_top(&one, 10, one_top, &n_one, &err);
        row_ok = row_ok && n_one == keys[r].n_pairs && one.score == keys[r].score && one.prob == keys[r].prob &&
                 fabs(keys[r].prob - pat[lo + r]) <= 1e-5 && fabs(keys[r].total - keys[r].score) <= 1e-5 * fabs(keys[r].score) + 1e-6;
        for (int t = 0; row_ok && t < n_one; t++)   // the key's side from a batch of keys: float32 sums in another order
            row_ok = fabs(one_top[t].value - keys[r].pairs[t].value) <= 1e-6 * (1 + fabs(one_top[t].value)) &&
                     ((one_top[t].i == keys[r].pairs[t].i && one_top[t].j == keys[r].pairs[t].j) ||
                      fabs(fabs(one_top[t].value) - fabs(keys[r].pairs[t].value)) <= 1e-6 * (1 + fabs(one_top[t].value)));
        if (one.q) ct_qk_free(&one);
        psum += keys[r].prob;
    }
    ok(row_ok && fabs(psum - 1) <= 1e-9, "%s: the row of %d keys: each key as its own split; "
       "probabilities sum to %.12g (%s)", name, n_keys, psum, rc ? err.msg : "ok");
    ct_qk_row_free(&qr);
    ct_hook_cache_free(&phc);

    // a node taken out: the row predicted without it (its parts gone from the query and every key)
    // against an intervention in the frozen model (features and norms held, q/k norms included)
    // with only this layer's attention free, its pattern read through a hook (1e-5)
    int64_t wcol = -1;   // the feature with the largest part of the key
    double wbest = 1e-3;
    for (int64_t col = 0; col < qk.n_active; col++) {
        double nk = 0;
        for (int j = 0; j < hd; j++) nk += fabs(qk.k[(size_t)j * N + col]);
        if (nk > wbest) wbest = nk, wcol = col;
    }
    const int32_t *wf = wcol >= 0 ? qk.active + 3 * wcol : NULL;
    ct_qk_node wn = {CT_NODE_FEATURE, wf ? wf[0] : 0, wf ? wf[1] : 0, wf ? wf[2] : 0};
    rc = wf ? ct_qk_row_run(&qr, &rm, prompt, T, layer, head, qpos, 1, &wn, &err) : CT_STATUS_NOT_FOUND;
    ct_iv_opts io;
    ct_iv_opts_default(&io);
    io.constrained = 1, io.first = 0, io.last = nL - 1, io.activations = 0, io.free_attention_layer = layer;
    ct_hook_id pat_id = {CT_HOOK_PATTERN, layer};
    ct_hook_cache ihc = {0};
    ct_intervention iv = {CT_IV_FEATURE, wn.layer, wn.feature, wn.pos, wn.pos, CT_IV_SCALE, 0.0f};
    if (!rc) rc = ct_hook_cache_init(&ihc, &pat_id, 1, &err);
    io.hooks = &ihc;
    if (!rc) rc = ct_iv_run(&rm, prompt, T, &iv, 1, &io, NULL, NULL, &err);
    double wo_worst = 0, moved = 0;
    for (int r = 0; !rc && r < qr.n_keys; r++) {
        double meas = ct_tensor_data(ihc.values[0])[((size_t)head * T + qpos) * T + qr.keys[r].key];
        wo_worst = fmax(wo_worst, fabs(meas - qr.keys[r].prob_without));
        moved = fmax(moved, fabs(qr.keys[r].prob_without - qr.keys[r].prob));
    }
    ok(rc == CT_OK && wo_worst <= 1e-5 && moved > 1e-4, "%s: without feature %d_%d_%d the frozen model with layer %d's "
       "attention free gives the predicted row (worst %.2g; 1e-5; the row moved by up to %.3g) (%s)", name, wn.layer,
       (int)wn.feature, wn.pos, layer, wo_worst, moved, rc ? err.msg : "ok");
    if (wf) ct_qk_row_free(&qr);
    ct_hook_cache_free(&ihc);

    free(q), free(k), free(q1), free(k1), free(want_q), free(want_k), free(row);
    probe_close(&p, &clean);
    ct_qk_free(&qk);
    ct_replacement_free(&rm);
}

int main(void) {
    char tmp[] = "/tmp/ct_qkXXXXXX";
    if (!mkdtemp(tmp)) return 1;
    const qk_case cases[] = {
        {"LlamaForCausalLM", 0, "relu", 0, "mlp.hook_in", "mlp.hook_out"},
        {"LlamaForCausalLM", 1, "relu", 1, "hook_resid_mid", "hook_mlp_out"},
        {"Gemma2ForCausalLM", 0, "jumprelu", 1, "ln2.hook_normalized", "hook_mlp_out"},
        {"GPT2LMHeadModel", 0, "jumprelu", 1, "mlp.hook_in", "hook_mlp_out"},
        {"GPT2LMHeadModel", 1, "relu", 0, "hook_resid_mid", "hook_mlp_out"},
        {"Qwen3ForCausalLM", 0, "topk", 0, "mlp.hook_in", "mlp.hook_out"},
        {"Qwen3ForCausalLM", 1, "relu", 1, "hook_resid_mid", "hook_mlp_out"},
        {"Gemma3ForCausalLM", 0, "jumprelu", 1, "mlp.hook_in", "hook_mlp_out"},
        {"Gemma3ForConditionalGeneration", 1, "topk", 0, "ln2.hook_normalized", "mlp.hook_out"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const qk_case *k = &cases[i];
        char mdir[256], tdir[256], name[256];
        snprintf(mdir, sizeof mdir, "%s/%s", tmp, k->arch);
        snprintf(tdir, sizeof tdir, "%s/tc%zu", tmp, i);
        snprintf(name, sizeof name, "%s %s %s%s %s->%s", k->arch, k->clt ? "CLT" : "PLT", k->act, k->skip ? "+skip" : "", k->in,
                 k->out);
        ct_model *m;
        ct_transcoders *tc;
        ct_err err = {0};
        int okm = make_and_load(mdir, tdir, k->arch, CT_DT_F32, k->clt, k->act, k->skip, k->in, k->out, TC_ENC_F32, &m, &tc, &err);
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
