// bench_attribution.c - attribution graphs: time per phase, the backward phase's GFLOP/s against
// OpenBLAS sgemm measured in the same process, and peak RSS. One configuration per run (peak
// RSS is per process):
//   stories   stories260K, default transcoders, a 512-token prompt (its whole context),
//             max_feature_nodes 7500, batch 256
//   large     random Llama-shaped model, d_model 2048, 16 layers (32 query / 8 key-value heads
//             of 64), 64 tokens, 16384-feature TopK-64 PLTs, 2000 feature rows, batch 256
//             (d_mlp 2048: the MLP only runs in the clean forward pass)
//   long      random model with a 4096-token context, d_model 256, 8 layers (8 heads of 32),
//             4096-feature TopK-32 PLTs, a 2048-token prompt, max_feature_nodes 7500
//   peer-stories, peer-random   the two configurations engine/trace/attribution.md quotes circuit-tracer's
//             algorithm in PyTorch for: stories260K, 19 tokens, 5,490 active features (random
//             TopK-61 transcoders), batch 128; a random d_model 256, 8-layer model, 64 tokens,
//             2,016 features (TopK 4), batch 256
// Figures only: nothing here asserts on time.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"
#include "trace/attribution.h"

static double peak_rss_gb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1048576.0;
}

static int run(const char *name, ct_model *m, const ct_transcoders *tc, const int *tokens, int T, int64_t max_features,
               int batch) {
    ct_attr_opts o;
    ct_attr_opts_default(&o);
    ct_attr_stats st;
    o.max_feature_nodes = max_features;
    o.batch_size = batch;
    o.stats = &st;
    ct_graph *g = NULL;
    ct_err err = {0};
    double t0 = now();
    ct_replacement r;
    if (ct_replacement_init(&r, m, tc, &err) || ct_attribute(&g, &r, tokens, T, &o, &err)) {
        printf("%s: %s\n", name, err.msg);
        return 1;
    }
    ct_replacement_free(&r);
    double total = now() - t0;
    // the ceiling, measured now (same process, same threads): a square product and one shaped
    // like the backward pass's largest (rows = positions x batch)
    double ceil_sq = sgemm_gflops(0, 1024, 1024, 1024, 9);
    int D = m->cfg.d_model;
    double ceil_bw = sgemm_gflops(0, T * batch < 16384 ? T * batch : 16384, D, D, 5);
    double gf = st.backward_flops / st.backward_s / 1e9;
    printf("%s: %d tokens, %lld active features, %lld feature rows + %d logits, %lld nodes, %lld batches of %d\n", name, T,
           (long long)st.n_active, (long long)g->n_selected, g->n_logits, (long long)g->n_nodes, (long long)st.n_batches,
           st.batch_size);
    printf("%s: total %.2f s = setup %.2f + logit rows %.2f + feature rows %.2f (ranking %.2f of it) + graph %.2f\n", name,
           total, st.setup_s, st.logits_s, st.features_s, st.ranking_s, st.graph_s);
    printf("%s: backward %.2f s, %.1f GFLOP, %.1f GFLOP/s = %.0f%% of sgemm %d^3 (%.1f GFLOP/s), %.0f%% of sgemm "
           "(%d x %d x %d) (%.1f GFLOP/s)\n", name, st.backward_s, st.backward_flops / 1e9, gf, 100 * gf / ceil_sq, 1024,
           ceil_sq, 100 * gf / ceil_bw, T * batch < 16384 ? T * batch : 16384, D, D, ceil_bw);
    printf("%s: peak RSS %.2f GB, rows %s (%.2f GB) (OpenBLAS %s, %d threads)\n", name, peak_rss_gb(),
           st.spilled ? "spilled to a file" : "in memory", st.row_bytes / 1e9, ct_blas_core(), ct_get_threads());
    ct_graph_free(g);
    return 0;
}

static ct_config llama_cfg(int D, int L, int H, int KV, int hd, int F, int V, int ctx) {
    ct_config c = {0};
    c.d_model = D, c.n_layers = L, c.n_heads = H, c.n_kv_heads = KV, c.head_dim = hd, c.d_mlp = F, c.vocab_size = V;
    c.max_seq_len = ctx, c.norm = CT_NORM_RMS, c.norm_eps = 1e-5f, c.rope = CT_ROPE_HALF, c.rope_theta = 500000.0f;
    c.attn_scale = 1.0f / sqrtf((float)hd), c.gated_mlp = 1, c.act = CT_ACT_SILU, c.embed_scale = 1.0f;
    c.bos_id = 0, c.eos_id = 1;
    return c;
}

// T random tokens after BOS (id 0).
static int *random_tokens(int T, int V) {
    int *tokens = malloc(sizeof(int) * (size_t)T);
    uint64_t s = 3;
    tokens[0] = 0;
    for (int t = 1; t < T; t++) tokens[t] = 2 + (int)((ct_rand_uniform(&s) + 1.0f) * 0.5f * (V - 3));
    return tokens;
}

static int random_case(const char *name, ct_config cfg, int d_tc, int k, int T, int64_t max_features, int batch) {
    ct_model *m = NULL;
    ct_transcoders *tc = NULL;
    ct_err err = {0};
    if (ct_model_random(&m, &cfg, 1, &err) || ct_transcoders_random(&tc, m, d_tc, k, 2, &err)) {
        printf("%s: %s\n", name, err.msg);
        return 1;
    }
    int *tokens = random_tokens(T, cfg.vocab_size);
    int rc = run(name, m, tc, tokens, T, max_features, batch);
    free(tokens);
    ct_transcoders_free(tc);
    ct_model_free(m);
    return rc;
}

static ct_model *load_stories(void) {
    const char *models = getenv("CTRACE_MODELS") ? getenv("CTRACE_MODELS") : "../shared/models";
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K", models);
    ct_model *m = NULL;
    ct_err err = {0};
    if (ct_model_load(NULL, &m, path, &err)) printf("stories260K: %s\n", err.msg);
    return m;
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "stories";
    if (strcmp(which, "peer-stories") == 0) {   // the PyTorch figure in the README: 19 tokens, 5,490 features
        ct_model *m = load_stories();
        ct_transcoders *tc = NULL;
        ct_err err = {0};
        if (!m || ct_transcoders_random(&tc, m, 1024, 61, 2, &err)) return 1;
        int *tokens = random_tokens(19, m->cfg.vocab_size);
        int rc = run("stories260K 19 tokens, random TopK-61 transcoders", m, tc, tokens, 19, 0, 128);
        free(tokens);
        ct_transcoders_free(tc);
        ct_model_free(m);
        return rc;
    }
    if (strcmp(which, "peer-random") == 0)   // 64 tokens, 2,016 features, batch 256
        return random_case("random d256 L8 64 tokens", llama_cfg(256, 8, 8, 8, 32, 1024, 512, 128), 4096, 4, 64, 0, 256);
    if (strcmp(which, "stories") == 0) {
        ct_model *m = load_stories();
        ct_transcoders *tc = NULL;
        ct_err err = {0};
        if (!m || ct_transcoders_load(NULL, &tc, "experiments/stories260K-transcoders/transcoders", &err)) {
            printf("stories: %s\n", err.msg);
            return 1;
        }
        // a 512-token prompt: BOS and 511 tokens the model samples itself (seed 7)
        int tokens[512] = {m->cfg.bos_id}, n = 0;
        ct_gen_opts g = {.max_tokens = 511, .temperature = 1.0f, .top_p = 1.0f, .seed = 7, .stop_at_eos = 0};
        if (ct_model_generate(m, tokens, 1, &g, tokens + 1, &n, &err) || n != 511) {
            printf("stories: generation gave %d tokens: %s\n", n, err.msg);
            return 1;
        }
        int rc = run("stories260K 512 tokens", m, tc, tokens, 512, 7500, 256);
        ct_transcoders_free(tc);
        ct_model_free(m);
        return rc;
    }
    if (strcmp(which, "large") == 0)
        return random_case("large d2048 L16 64 tokens", llama_cfg(2048, 16, 32, 8, 64, 2048, 2048, 128), 16384, 64, 64, 2000,
                           256);
    if (strcmp(which, "long") == 0)
        return random_case("long d256 L8 2048 tokens", llama_cfg(256, 8, 8, 8, 32, 1024, 512, 4096), 4096, 32, 2048, 7500, 256);
    printf("usage: bench_attribution stories|large|long|peer-stories|peer-random\n");
    return 2;
}
