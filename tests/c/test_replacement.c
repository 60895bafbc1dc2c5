// test_replacement.c - the replacement model's clean run and the engine functions around it, on
// stories260K with its default transcoders: the prompt rules (BOS added to text and to ids that
// start with an ordinary token), one-token targets, the text of a continuation, the clean run
// (held per prompt, its values against a plain forward pass and the transcoders), sparse
// activation sets, donor values for swaps, a constrained no-op, a feature's logit effect, the
// graph's influence cache, and training a whole set into a directory.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model/train.h"
#include "trace/attribution.h"
#include "trace/intervention.h"

static const char *shared_models(void) {
    const char *s = getenv("CTRACE_MODELS");
    return s ? s : "../shared/models";
}

static int same_ids(const int *a, int na, const int *b, int nb) {
    return na == nb && memcmp(a, b, sizeof(int) * (size_t)na) == 0;
}

// the middle of a mapped matrix: a page of its own (the pages at its ends may be shared)
static const void *mid(const ct_mat *w) {
    return w->data + (size_t)w->rows * (size_t)w->cols * ct_dtype_size(w->dtype) / 2;
}

int main(void) {
    char path[1024];
    ct_err err = {0};
    ct_model *m = NULL;
    ct_transcoders *tc = NULL;
    snprintf(path, sizeof path, "%s/stories260K", shared_models());
    ct_status rc = ct_model_load(NULL, &m, path, &err);
    if (!rc) rc = ct_transcoders_load(NULL, &tc, "experiments/stories260K-transcoders/transcoders", &err);
    ok(rc == CT_OK, "stories260K and its transcoders (%s)", rc ? err.msg : "ok");
    if (rc) return check_done();
    int L = m->cfg.n_layers, D = m->cfg.d_model, V = m->cfg.vocab_size;
    // mapped encoders hint huge pages (read whole by every encoding), decoders random reads
    if (thp_here()) {
        char fe[256], fd[256];
        int hints = 1;
        for (int l = 0; l < tc->n_layers; l++)
            hints = hints && !tc->layers[l].W_enc_owned && vma_flags(mid(&tc->layers[l].W_enc), fe, sizeof fe) && strstr(fe, " hg") &&
                    vma_flags(mid(&tc->layers[l].W_dec), fd, sizeof fd) && strstr(fd, " rr") && strstr(fd, " nh");
        ok(hints, "encoders of every layer mapped with the huge-page hint, decoders with random reads (VmFlags:%s |%s)", fe, fd);
    }

    // ---- prompts
    const char *text = "Once upon a time, there was a little girl named Lily. She";
    int *ids, n, *ids2, n2;
    rc = ct_prompt_text(m, text, strlen(text), &ids, &n, &err);
    ok(rc == CT_OK && n > 3 && ids[0] == m->cfg.bos_id, "text: tokenized with BOS (%d tokens)", n);
    ok(ct_prompt_ids(m, ids + 1, n - 1, &ids2, &n2, &err) == CT_OK && same_ids(ids2, n2, ids, n),
       "ids from an ordinary token: BOS prepended");
    free(ids2);
    ok(ct_prompt_ids(m, ids, n, &ids2, &n2, &err) == CT_OK && same_ids(ids2, n2, ids, n), "ids from BOS: as given");
    free(ids2);
    int eos_first[2] = {m->cfg.eos_id, ids[1]};
    ok(ct_prompt_ids(m, eos_first, 2, &ids2, &n2, &err) == CT_OK && same_ids(ids2, n2, eos_first, 2), "ids from EOS: as given");
    free(ids2);
    ok(ct_prompt_ids(m, ids, 0, &ids2, &n2, &err) == CT_STATUS_BAD_ARG && ct_prompt_text(m, "", 0, &ids2, &n2, &err) == CT_STATUS_BAD_ARG,
       "an empty prompt: BAD_ARG");
    int one;
    ok(ct_token_of_text(m, "Lily", 4, &one, &err) == CT_OK && one >= 0 && one < V, "'Lily' is one token (%d)", one);
    ok(ct_token_of_text(m, " Lily is here", 13, &one, &err) == CT_STATUS_BAD_ARG && strstr(err.msg, "exactly one token"),
       "a longer text is refused: %s", err.msg);

    // ---- continuation text: decode(prompt + gen) less decode(prompt)
    const char *more = "there was";   // llama2.c's tokenizer adds the leading space itself
    int *g, ng;
    ct_tokenizer_encode(m->tok, more, strlen(more), 0, &g, &ng, &err);
    int *p0, np0;
    ct_prompt_text(m, "Once upon a time,", 17, &p0, &np0, &err);
    char *cont;
    size_t clen;
    ok(ct_tokenizer_continuation(m->tok, p0, np0, g, ng, &cont, &clen, &err) == CT_OK && strcmp(cont, " there was") == 0 &&
           clen == 10,
       "the continuation keeps the space between prompt and text: '%s'", cont);
    free(cont), free(g), free(p0);

    // ---- a hook asked for twice is filled twice (the clean run asks for overlapping hooks)
    ct_hook_id hid[4] = {{CT_HOOK_MLP_RAW_OUT, 0}, {CT_HOOK_MLP_RAW_OUT, 0}, {CT_HOOK_RESID_MID, 1}, {CT_HOOK_MLP_RAW_OUT, 0}};
    ct_hook_cache hc;
    ct_hook_cache_init(&hc, hid, 4, &err);
    rc = ct_model_forward(m, ids, n, NULL, &hc, NULL, 0, &err);
    size_t nh = (size_t)n * D;
    float sum_abs = 0;
    for (size_t i = 0; i < nh; i++) sum_abs += fabsf(ct_tensor_data(hc.values[0])[i]);
    ok(rc == CT_OK && sum_abs > 0 && memcmp(ct_tensor_data(hc.values[0]), ct_tensor_data(hc.values[1]), nh * 4) == 0 &&
           memcmp(ct_tensor_data(hc.values[0]), ct_tensor_data(hc.values[3]), nh * 4) == 0,
       "a hook asked for three times: every slot holds it");
    ct_hook_cache_free(&hc);

    // ---- the clean run
    ct_replacement r;
    ok(ct_replacement_init(&r, m, tc, &err) == CT_OK && r.input == CT_TC_IN_MLP_IN && r.out_raw, "mlp.hook_in -> mlp.hook_out");
    ct_clean_run *c, *c2;
    ok(ct_replacement_clean(&r, ids, n, &c, &err) == CT_OK && ct_replacement_clean(&r, ids, n, &c2, &err) == CT_OK && c == c2,
       "the same prompt: the held clean run");
    float *real = malloc(sizeof(float) * (size_t)n * V);
    ct_model_forward(m, ids, n, NULL, NULL, real, 1, &err);
    ok(check_close(c->logits, real + (size_t)(n - 1) * V, (size_t)V, 1e-5, 0, "last logits"),
       "its logits are the forward pass's (one row against T rows through BLAS: 1e-5)");
    int emb_ok = 1, err0 = 1;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < D; i++) emb_ok &= c->embed[(size_t)t * D + i] == ((const float *)m->embed.data)[(size_t)ids[t] * D + i];
    for (int l = 0; l < L; l++)
        for (int i = 0; i < D; i++) err0 &= c->err[(size_t)l * n * D + i] == 0.0f;
    ok(emb_ok && err0, "embeddings as added; error vectors zero at position 0");
    float *rec = malloc(sizeof(float) * (size_t)L * n * D);
    ct_tc_reconstruct(tc, c->in, n, rec, &err);
    double worst = 0;
    for (int l = 0; l < L; l++)
        for (size_t i = D; i < (size_t)n * D; i++) {
            size_t k = (size_t)l * n * D + i;
            worst = fmax(worst, fabs((double)c->err[k] - ((double)c->out[k] - rec[k])));
        }
    ok(worst < 1e-6 && c->raw == c->out, "errors = output hook - reconstruction (max diff %.2g); raw MLP output = the hook", worst);
    const ct_sparse_acts *acts = ct_clean_acts(&r, c, 0, &err);
    float *act = malloc(sizeof(float) * (size_t)n * 2048);
    int64_t nz = 0, match = 1, sorted = 1;
    for (int l = 0; acts && l < L; l++) {
        int F = tc->layers[l].d_tc;
        ct_tc_encode(tc, l, c->in + (size_t)l * n * D, n, NULL, act, &err);
        for (int t = 1; t < n; t++)
            for (int f = 0; f < F; f++) {
                float v = act[(size_t)t * F + f];
                if (v == 0.0f) continue;
                int64_t k = ct_sparse_acts_find(acts, l, t, f);
                match &= k >= 0 && acts->value[k] == v;
                nz++;
            }
    }
    for (int64_t i = 1; acts && i < acts->n; i++) {
        const int32_t *a = acts->idx + 3 * (i - 1), *b = acts->idx + 3 * i;
        sorted &= a[0] < b[0] || (a[0] == b[0] && (a[1] < b[1] || (a[1] == b[1] && a[2] < b[2])));
    }
    ok(acts && acts->n == nz && match && sorted && ct_clean_acts(&r, c, 0, &err) == acts,
       "clean activations: the %lld non-zero ones at positions >= 1, sorted, computed once", (long long)nz);

    // ---- union of a pass's and the clean run's activations
    int32_t ia[] = {0, 1, 5, 1, 2, 3}, ic[] = {0, 1, 4, 0, 1, 5, 2, 0, 0};
    float va[] = {1, 2}, vc[] = {7, 8, 9};
    ct_sparse_acts A = {2, ia, va, NULL}, C = {3, ic, vc, NULL}, U;
    ok(ct_sparse_acts_union(&U, &A, &C, &err) == CT_OK && U.n == 4 && U.idx[2] == 4 && U.value[0] == 0 && U.clean[0] == 7 &&
           U.value[1] == 1 && U.clean[1] == 8 && U.value[2] == 2 && U.clean[2] == 0 && U.idx[9] == 2 && U.clean[3] == 9,
       "union: entries of either set, each with both values");
    ct_sparse_acts_free(&U);

    // ---- donor values: from the same prompt they are the clean activations
    int32_t feat[9];
    for (int i = 0; i < 3; i++) memcpy(feat + 3 * i, acts->idx + 3 * (i * 97), sizeof(int32_t) * 3);
    float dv[3];
    ok(ct_iv_donor_values(&r, ids, n, feat, 3, dv, &err) == CT_OK && dv[0] == acts->value[0] && dv[1] == acts->value[97] &&
           dv[2] == acts->value[194] && r.clean == c,
       "donor values from the same prompt = its activations; the held clean run stays");
    feat[1] = n + 3;
    ok(ct_iv_donor_values(&r, ids, n, feat, 1, dv, &err) == CT_STATUS_OUT_OF_RANGE, "a position past the donor: %s", err.msg);

    // ---- a constrained pass that changes nothing is the real pass
    ct_iv_opts o;
    ct_iv_opts_default(&o);
    o.constrained = 1, o.first = 0, o.last = L - 1, o.activations = 0;
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    ok(ct_iv_run(&r, ids, n, NULL, 0, &o, lg, NULL, &err) == CT_OK &&
           check_close(lg, real, (size_t)n * V, 1e-5, 0, "constrained no-op"),
       "every layer constrained, no intervention: the real logits");
    o.first = 1, o.last = 2;
    ok(ct_iv_run(&r, ids, n, NULL, 0, &o, lg, NULL, &err) == CT_OK && check_close(lg, real, (size_t)n * V, 1e-5, 0, "layers 1-2"),
       "layers 1-2 constrained: the real logits");

    // ---- other prompts replace the held run
    ok(ct_replacement_clean(&r, ids + 1, n - 1, &c2, &err) == CT_OK && c2 != NULL && r.clean == c2 && c2->T == n - 1,
       "another prompt: a new clean run held in its place");
    ct_replacement_release(&r);
    ok(r.clean == NULL, "released");

    // ---- a feature's direct effect on the logits
    float *eff = malloc(sizeof(float) * (size_t)V), row[64];
    ok(ct_tc_logit_effect(tc, m, 2, 17, eff, &err) == CT_OK, "logit effect of feature 17 of layer 2");
    ct_tc_decoder_row(tc, 2, 17, 0, row, &err);
    worst = 0;
    for (int v = 0; v < V; v++) {
        double s = 0;
        for (int i = 0; i < D; i++) s += (double)((const float *)m->lm_head.data)[(size_t)v * D + i] * row[i] * m->lnf_w[i];
        worst = fmax(worst, fabs(s - eff[v]));
    }
    ok(worst < 1e-5, "= W_U (g * decoder row), max diff %.2g", worst);
    ok(ct_tc_logit_effect(tc, m, L, 0, eff, &err) == CT_STATUS_OUT_OF_RANGE, "a layer past the set: OUT_OF_RANGE");

    // ---- the graph's influence, computed once
    ct_attr_opts ao;
    ct_attr_opts_default(&ao);
    ao.max_feature_nodes = 200;
    ct_graph *gr = NULL;
    ok(ct_attribute(&gr, &r, ids, n, &ao, &err) == CT_OK && r.clean && r.clean->T == n && r.clean->have_acts[0],
       "a graph; its clean run (%zu bytes) stays for interventions on the prompt, its activations with it",
       ct_clean_run_bytes(r.clean));
    ct_graph *gr2 = NULL;
    ao.memory_limit = 4 * ct_clean_run_bytes(r.clean) - 4;   // the clean run is more than a quarter of it
    ok(ct_attribute(&gr2, &r, ids, n, &ao, &err) == CT_OK && r.clean == NULL,
       "with a working memory under 4x the clean run, the run is released before the graph is built");
    ct_graph_free(gr2);
    const float *cum, *cum2;
    int64_t N = gr ? gr->n_nodes : 0;
    double *inf = malloc(sizeof(double) * (size_t)N);
    int64_t *order = malloc(sizeof(int64_t) * (size_t)N);
    float *want = malloc(sizeof(float) * (size_t)N);
    ct_graph_influence(gr, inf, &err);
    ct_graph_rank_fraction(inf, N, order, want);
    ok(ct_graph_node_influence(gr, &cum, &err) == CT_OK && ct_graph_node_influence(gr, &cum2, &err) == CT_OK && cum == cum2 &&
           memcmp(cum, want, sizeof(float) * (size_t)N) == 0,
       "node influence: the rank fraction of the influence, kept in the graph");
    ct_graph_free(gr);
    free(inf), free(order), free(want);

    // ---- training a whole set, written through a context confined to a directory
    char dir[] = "/tmp/ct_test_train_XXXXXX";
    mkdtemp(dir);
    ct_ctx ctx;
    ct_ctx_init(&ctx);
    ct_ctx_set_write_root(&ctx, dir, &err);
    const int *texts[2] = {ids, ids + 1};
    int lens[2] = {n, n - 1};
    char out[1100];
    snprintf(out, sizeof out, "%s/set", dir);
    ct_train_set_opts so = {.dir = out, .train = {.d_tc = 32, .k = 4, .batch = 16, .steps = 5, .lr = 1e-3f, .seed = 3,
                                                  .dead_tokens = 1000, .ctx = &ctx}};
    ct_transcoders *t2 = NULL;
    rc = ct_train_set(m, texts, lens, 2, &so, &err);
    ok(rc == CT_OK && ct_transcoders_load(NULL, &t2, out, &err) == CT_OK && t2->n_layers == L && t2->layers[0].d_tc == 32 &&
           strcmp(t2->input_hook, "mlp.hook_in") == 0 && t2->act == CT_TC_TOPK && t2->k == 4,
       "a per-layer TopK set trained and written (%s)", rc ? err.msg : "ok");
    ct_transcoders_free(t2);
    so.dir = "/tmp/ct_test_train_outside";
    ok(ct_train_set(m, texts, lens, 2, &so, &err) == CT_STATUS_BAD_ARG && access(so.dir, F_OK) != 0,
       "outside the context's write root: refused, nothing written");
    ct_ctx_free(&ctx);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) return 1;

    free(ids), free(real), free(rec), free(act), free(lg), free(eff);
    ct_replacement_free(&r);
    ct_transcoders_free(tc);
    ct_model_free(m);
    return check_done();
}
