// test_attribution.c - every edge of an attribution graph against the measured effect of
// perturbing its source in the real model, frozen (tests/c/edges.h): target feature
// pre-activations must move by the edge within atol 5e-4, demeaned logits within 1e-5 + 1e-3
// |edge|. Tiny random models of every family with per-layer (ReLU, JumpReLU, TopK; with and
// without skip) and cross-layer transcoders, among them TopK sets whose active features are mostly
// negative (circuit-tracer's TopK keeps them as they are), with weights stored F32, BF16 and F16
// (those read a tile at a time; some cases with one-row tiles, the backward's mixing in chunks of
// at most 5 rows, every step shared among 3 threads and a 12 KB working memory), then
// stories260K with its default transcoders. Rows spilled to a file that cannot be made or
// written fail the attribution with a message, never a graph.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "edges.h"
#include "trace/intervention.h"
#include "tiny.h"

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

// The influence ranking shared among the threads (every step split, as set by the caller) picks
// the same features as on one thread: a budget of half the active features, chosen a batch of 4
// at a time.
static void check_ranking_threads(const char *name, ct_model *m, const ct_transcoders *tc, int threads) {
    ct_graph *g[2] = {NULL, NULL};
    ct_err err = {0};
    for (int k = 0; k < 2; k++) {
        ct_set_threads(k ? 1 : threads);
        ct_replacement rm;
        ct_attr_opts o;
        ct_attr_opts_default(&o);
        o.batch_size = 4, o.update_interval = 1, o.max_feature_nodes = 0;
        if (ct_replacement_init(&rm, m, tc, &err)) break;
        ct_graph *all = NULL;   // the active count, for the budget
        if (ct_attribute(&all, &rm, prompt, 8, &o, &err) == CT_OK) {
            o.max_feature_nodes = all->n_active / 2;
            ct_attribute(&g[k], &rm, prompt, 8, &o, &err);
        }
        ct_graph_free(all);
        ct_replacement_free(&rm);
    }
    ct_set_threads(threads);
    int same = g[0] && g[1] && g[0]->n_selected == g[1]->n_selected &&
               memcmp(g[0]->selected, g[1]->selected, sizeof(int64_t) * (size_t)g[0]->n_selected) == 0;
    ok(same, "%s: a budget of %lld features ranked on %d threads picks the features one thread picks", name,
       g[0] ? (long long)g[0]->n_selected : -1LL, threads);
    ct_graph_free(g[0]);
    ct_graph_free(g[1]);
}

// A batch's rows go through the backward's products with W_O, W_V and a skip connection only at
// and below the layer each is read at, and at that layer as one vector: a batch holding every
// row (features of several layers) pushes exactly as many rows through those products as the
// same rows one batch each.
static void check_batch_work(const char *name, ct_model *m, const ct_transcoders *tc) {
    double rows[2] = {-1, -2};
    int layers = 0;
    ct_err err = {0};
    for (int k = 0; k < 2; k++) {
        ct_replacement rm;
        ct_attr_opts o;
        ct_attr_stats st;
        ct_attr_opts_default(&o);
        o.batch_size = k ? 1 : 4096, o.max_feature_nodes = 0, o.stats = &st;
        ct_graph *g = NULL;
        if (ct_replacement_init(&rm, m, tc, &err)) break;
        if (ct_attribute(&g, &rm, prompt, 8, &o, &err) == CT_OK) {
            rows[k] = st.backward_rows;
            for (int64_t i = 0; k == 0 && i < g->n_active; i++) layers |= 1 << g->active[3 * i];
        }
        ct_graph_free(g);
        ct_replacement_free(&rm);
    }
    ok(rows[0] == rows[1] && __builtin_popcount(layers) >= 2,
       "%s: one batch of every row (features of %d layers) puts %.0f rows through W_O, W_V and the skip; a row a batch %.0f",
       name, __builtin_popcount(layers), rows[0], rows[1]);
}

// A working memory too small for the rows sends them to a file under $TMPDIR: a directory that
// does not exist, or a disk that fills (RLIMIT_FSIZE stands in for it), fails the attribution
// with CT_STATUS_IO and a message naming the row store, and leaves no graph.
static void check_spill_failures(ct_model *m, const ct_transcoders *tc, const char *tmp) {
    const char *old = getenv("TMPDIR");
    char *saved = old ? strdup(old) : NULL;
    for (int k = 0; k < 2; k++) {
        char dir[300];
        snprintf(dir, sizeof dir, k == 0 ? "%s/no/such/dir" : "%s", tmp);
        setenv("TMPDIR", dir, 1);
        struct rlimit lim, small = {4096, 4096};
        void (*h)(int) = signal(SIGXFSZ, SIG_IGN);   // a write past the limit fails with EFBIG
        getrlimit(RLIMIT_FSIZE, &lim);
        if (k == 1) small.rlim_max = lim.rlim_max, setrlimit(RLIMIT_FSIZE, &small);
        ct_replacement rm;
        ct_err err = {0};
        ct_attr_opts o;
        ct_attr_opts_default(&o);
        o.memory_limit = 12 << 10;
        ct_graph *g = NULL;
        ct_status rc = ct_replacement_init(&rm, m, tc, &err);
        if (!rc) rc = ct_attribute(&g, &rm, prompt, 8, &o, &err);
        if (k == 1) setrlimit(RLIMIT_FSIZE, &lim);
        signal(SIGXFSZ, h);
        const char *want = k == 0 ? "row store: cannot create a file in" : "row store: writing row";
        ok(rc == CT_STATUS_IO && !g && strstr(err.msg, want),
           "rows spilled to %s: CT_STATUS_IO, no graph, \"%s...\" (got status %d: %s)",
           k == 0 ? "a directory that does not exist" : "a disk that fills at 4 KB", want, rc, err.msg);
        ct_graph_free(g);
        ct_replacement_free(&rm);
    }
    if (saved) setenv("TMPDIR", saved, 1);
    else unsetenv("TMPDIR");
    free(saved);
}

// An intervention pass starts at the lowest layer its interventions touch, from the clean run's
// residual stream there, the readout below it the clean run's: its logits and activations (post-
// and pre-activation) have the same bits as a pass through every layer, for features, error
// nodes, tokens and none, free and constrained, attention frozen or not. And it does start there:
// a change to that stored residual stream shows in its logits.
static int same_acts(const ct_sparse_acts *a, const ct_sparse_acts *b) {
    return a->n == b->n && (a->n == 0 || (memcmp(a->idx, b->idx, sizeof(int32_t) * 3 * (size_t)a->n) == 0 &&
                                          memcmp(a->value, b->value, sizeof(float) * (size_t)a->n) == 0));
}

// Encoders in BF16 (as the published Llama, Qwen and cross-layer sets store them): a prompt's
// positions encoded together have the bits of each encoded alone (ct_mat_matmul_few), so an
// intervention re-encoding one position sees the clean run's pre-activations exactly. Needs the
// CPU's AVX2 (elsewhere tiles: within rounding, not asserted here).
static void check_encode_alone(const char *name, const ct_transcoders *tc) {
    enum { T = 8 };
    int dm = tc->d_model, same = 1, avx2 = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    avx2 = __builtin_cpu_supports("avx2");
#endif
    uint64_t seed = 7;
    float *x = malloc(sizeof(float) * T * (size_t)dm);
    for (int i = 0; i < T * dm; i++) x[i] = ct_rand_uniform(&seed) - 0.5f;
    for (int l = 0; l < tc->n_layers; l++) {
        int nf = tc->layers[l].d_tc;
        float *all = malloc(sizeof(float) * T * (size_t)nf), *one = malloc(sizeof(float) * (size_t)nf);
        ct_err err = {0};
        same = same && ct_tc_encode(tc, l, x, T, all, NULL, &err) == CT_OK;
        for (int t = 0; same && t < T; t++)
            same = ct_tc_encode(tc, l, x + (size_t)t * dm, 1, one, NULL, &err) == CT_OK &&
                   memcmp(one, all + (size_t)t * nf, sizeof(float) * (size_t)nf) == 0;
        free(all), free(one);
    }
    free(x);
    if (avx2) ok(same, "%s: %d positions encoded together have the bits of each encoded alone, every layer", name, T);
}

static void check_iv_skip(const char *name, ct_model *m, const ct_transcoders *tc) {
    int nl = m->cfg.n_layers, nv = m->cfg.vocab_size, T = 8;
    ct_replacement rm;
    ct_err err = {0};
    ct_status rc = ct_replacement_init(&rm, m, tc, &err);
    const ct_intervention ivs[][2] = {
        {{CT_IV_FEATURE, nl - 1, 5, 3, 3, CT_IV_SET, 3.0f}},
        {{CT_IV_FEATURE, 1, 2, 2, -1, CT_IV_SET, 2.0f}, {CT_IV_ERROR, nl - 1, 0, 4, 4, CT_IV_SCALE, 0.0f}},
        {{CT_IV_ERROR, nl - 1, 0, 5, 6, CT_IV_SCALE, -1.0f}},
        {{CT_IV_TOKEN, 0, 0, 5, 5, CT_IV_SCALE, 0.5f}},
    };
    const int n_ivs[] = {1, 2, 1, 1, 0};
    float *lg0 = malloc(sizeof(float) * (size_t)T * nv), *lg1 = malloc(sizeof(float) * (size_t)T * nv);
    int same = !rc && lg0 && lg1, runs = 0;
    for (int mode = 0; mode < 6 && same; mode++) {
        ct_iv_opts o;
        ct_iv_opts_default(&o);
        o.activations = mode >= 4, o.pre_activation = mode == 5;
        if (mode == 1) o.freeze_attention = 0;
        if (mode == 2 || mode == 3) o.constrained = 1, o.first = mode == 2 ? 0 : 1, o.last = nl - 1;
        for (int k = 0; k < 5 && same; k++) {
            const ct_intervention *iv = k < 4 ? ivs[k] : NULL;
            ct_sparse_acts a0 = {0}, a1 = {0};
            ct_iv_skip_clean_layers(0);
            rc = ct_iv_run(&rm, prompt, T, iv, n_ivs[k], &o, lg0, &a0, &err);
            ct_iv_skip_clean_layers(1);
            if (!rc) rc = ct_iv_run(&rm, prompt, T, iv, n_ivs[k], &o, lg1, &a1, &err);
            same = !rc && memcmp(lg0, lg1, sizeof(float) * (size_t)T * nv) == 0 && same_acts(&a0, &a1) &&
                   (!o.activations || a0.n > 0);
            ct_sparse_acts_free(&a0), ct_sparse_acts_free(&a1);
            runs++;
        }
    }
    ok(same, "%s: intervention passes from the lowest layer touched give the bits of whole passes (%d cases%s%s)", name,
       runs, rc ? ": " : "", rc ? err.msg : "");
    int moved = 0;
    if (same) {   // the feature at the last layer: the pass reads the residual stream entering it
        ct_iv_opts o;
        ct_iv_opts_default(&o);
        o.activations = 0;
        float *x = rm.clean->resid + (size_t)(nl - 1) * T * m->cfg.d_model;
        ct_iv_run(&rm, prompt, T, ivs[0], 1, &o, lg0, NULL, &err);
        x[0] += 1.0f;
        ct_iv_run(&rm, prompt, T, ivs[0], 1, &o, lg1, NULL, &err);
        x[0] -= 1.0f;
        moved = memcmp(lg0, lg1, sizeof(float) * (size_t)nv) != 0;
    }
    ok(moved, "%s: a pass changing layer %d reads the clean residual stream entering it", name, nl - 1);
    // a pass from a later layer needs the residual stream there and no KV cache; one stopping early
    // needs somewhere for the residual stream leaving it, and at least one layer
    ct_kv_cache kv = {0};
    float *out = malloc(sizeof(float) * (size_t)T * m->cfg.d_model);
    ct_forward_ctl bad[4] = {{.first_layer = 1}, {.first_layer = nl}, {.first_layer = 1, .resid = lg0, .last_layer = 1},
                             {.last_layer = 1}};
    int refused = out && ct_kv_cache_init(&kv, m, T, &err) == CT_OK;
    for (int k = 0; k < 4 && refused; k++)
        refused = ct_model_forward_ctl(m, prompt, T, NULL, NULL, lg0, 1, &bad[k], &err) == CT_STATUS_BAD_ARG &&
                  strstr(err.msg, "a pass from layer");
    ct_forward_ctl with_kv = {.first_layer = 1, .resid = lg0};
    refused = refused && ct_model_forward_ctl(m, prompt, T, &kv, NULL, lg0, 1, &with_kv, &err) == CT_STATUS_BAD_ARG;
    ok(refused, "%s: a pass from layer 1 without the residual stream, from layer %d, stopping before it starts or "
       "without room for the residual stream it leaves, or with a KV cache: refused (%s)", name, nl, err.msg);
    // layers 0 and 1.. in two passes, the residual stream handed over (the layer split's pipeline):
    // the logits of one pass, bit for bit
    ct_forward_ctl part0 = {.last_layer = 1, .resid_out = out}, part1 = {.first_layer = 1, .resid = out};
    int piped = out && ct_model_forward(m, prompt, T, NULL, NULL, lg0, 1, &err) == CT_OK &&
               ct_model_forward_ctl(m, prompt, T, NULL, NULL, NULL, 1, &part0, &err) == CT_OK &&
               ct_model_forward_ctl(m, prompt, T, NULL, NULL, lg1, 1, &part1, &err) == CT_OK &&
               memcmp(lg0, lg1, sizeof(float) * (size_t)T * nv) == 0;
    ok(piped, "%s: layer 0, then layers 1..%d from the residual stream it leaves: the logits of one pass, bit for bit",
       name, nl - 1);
    free(out);
    ct_kv_cache_free(&kv);
    free(lg0), free(lg1);
    ct_replacement_free(&rm);
}

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
    int threads = ct_get_threads();
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const tc_case *k = &cases[c];
        char mdir[256], tdir[256], name[256];
        ct_dtype dt = k->dt;
        snprintf(mdir, sizeof mdir, "%s/%s-%s", tmp, k->arch, ct_dtype_name(dt));
        snprintf(tdir, sizeof tdir, "%s/tc%zu", tmp, c);
        snprintf(name, sizeof name, "%s %s %s %s%s %s->%s%s%s", k->arch, ct_dtype_name(dt), k->clt ? "CLT" : "PLT", k->act,
                 k->skip ? "+skip" : "", k->in, k->out, k->small_tiles ? ", one-row tiles, products of 5 rows, 3 threads, 12 KB" : "",
                 k->enc == TC_ENC_GS2 ? ", encoders (D, F)" : k->enc == TC_ENC_BF16 ? ", encoders bf16" : "");
        ct_mat_tile_limit(k->small_tiles ? 1 : 0);
        ct_attr_pack_limit(k->small_tiles ? 5 : 0);
        ct_attr_split_limit(k->small_tiles ? 1 : 0);   // every step of the backward shared among 3 threads
        ct_set_threads(k->small_tiles ? 3 : threads);
        ct_model *m;
        ct_transcoders *tc;
        ct_err err = {0};
        int okm = make_and_load(mdir, tdir, k->arch, dt, k->clt, k->act, k->skip, k->in, k->out, k->enc, &m, &tc, &err);
        ok(okm, "%s: load (%s)", name, okm ? "ok" : err.msg);
        edge_check ck = edge_check_default(100, 0);
        // one-row tiles: a working memory of 12 KB too (rows in a file, batches of a row or two)
        if (k->small_tiles) ck.memory_limit = 12 << 10;
        int64_t neg = okm ? check_graph(name, m, tc, prompt, 8, &ck) : 0;
        if (okm && c == 0) check_spill_failures(m, tc, tmp);
        if (okm && k->skip && !k->small_tiles) check_batch_work(name, m, tc);
        if (okm) check_iv_skip(name, m, tc);
        if (okm && k->enc == TC_ENC_BF16) check_encode_alone(name, tc);
        if (okm && k->small_tiles) check_ranking_threads(name, m, tc, 3);
        if (okm && strcmp(k->act, "topk-negative") == 0)
            ok(neg >= 20, "%s: %lld of the checked features have a negative activation (active as they are)", name, (long long)neg);
        // Gemma-3 instruction-tuned models hold 4 positions constant (their chat prefix): the same
        // graph with 4 constant positions is exact too, and has no feature at positions 0..3 and
        // no edge from an error node there
        if (okm && k->arch[5] == '3' && !k->clt && dt == CT_DT_F32) {
            snprintf(name, sizeof name, "%s %s %s, 4 constant positions", k->arch, k->act, k->out);
            ck.n_const = 4;
            check_graph(name, m, tc, prompt, 8, &ck);
        }
        ct_transcoders_free(tc);
        ct_model_free(m);
    }
    ct_mat_tile_limit(0);
    ct_attr_pack_limit(0);
    ct_attr_split_limit(0);
    ct_set_threads(threads);

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
        edge_check ck = edge_check_default(150, 0);
        check_graph("stories260K", m, tc, ids, n, &ck);
        free(ids);
    }
    ct_transcoders_free(tc);
    ct_model_free(m);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) printf("# could not remove %s\n", tmp);
    return check_done();
}
