// test_qk.c - a head's pre-softmax score split into pairs of nodes (trace/qk.h), against the model
// run forwards with its norm denominators and attention patterns frozen and its MLP outputs replaced
// by the clean ones plus perturbations (tests/c/edges.h's probe): removing every node leaves the
// query and key at their constant parts; adding a node's write once more (a token's embedding, a
// feature's decoder rows times its activation, an error vector) moves them by that node's part;
// the terms sum to the model's score. Tiny random models of the families without q/k norms, with
// per-layer and cross-layer transcoders, skip connections and grouped keys and values; q/k norms
// are refused. Tolerance: 1e-4 + 1e-3 |value| per component (float32 passes of width 16).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edges.h"
#include "tiny.h"
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
    ct_status rc = ct_replacement_init(&rm, m, tc, &err);
    if (!rc) rc = ct_qk_run(&qk, &rm, prompt, TQ, layer, head, qpos, kpos, &err);
    if (c->qk_norm) {
        ok(rc == CT_STATUS_UNSUPPORTED && strstr(err.msg, "q/k norms"), "%s: q/k norms refused (%s)", name, err.msg);
        if (!rc) ct_qk_free(&qk);
        ct_replacement_free(&rm);
        return;
    }
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
    ok(good, "%s: the top 10 pairs, by size, each the product of its parts (%s)", name, rc ? err.msg : "ok");

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
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const qk_case *k = &cases[i];
        char mdir[256], tdir[256], name[256];
        snprintf(mdir, sizeof mdir, "%s/%s", tmp, k->arch);
        snprintf(tdir, sizeof tdir, "%s/tc%zu", tmp, i);
        snprintf(name, sizeof name, "%s %s %s%s %s->%s", k->arch, k->clt ? "CLT" : "PLT", k->act, k->skip ? "+skip" : "", k->in,
                 k->out);
        make_family(mdir, k->arch, CT_DT_F32);
        make_transcoders_enc(tdir, family_width(k->arch), k->clt, k->act, k->skip, k->in, k->out, TC_ENC_F32);
        ct_model *m = NULL;
        ct_transcoders *tc = NULL;
        ct_err err = {0};
        int okm = ct_model_load(NULL, &m, mdir, &err) == CT_OK && ct_transcoders_load(NULL, &tc, tdir, &err) == CT_OK;
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
