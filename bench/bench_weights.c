// bench_weights.c - a checkpoint at size (a directory, e.g. a Llama-3.2-1B-shaped one written by
// bench/make_llama.py): load time and memory, prompt forward passes at 16 and 256 tokens against
// OpenBLAS sgemm on float32 operands of the layers' shapes, and greedy generation tokens/s
// against the bound memory bandwidth sets (weight bytes per token over a measured memcpy rate).
// Figures only. On a machine shared with other work, each comparison alternates its two sides
// (forward, sgemm, forward, ...; a generation, a memcpy, ...) and reports medians, so both see
// the same conditions.
//
//   bench_weights DIR [ELEM_BYTES [LOGITS_OUT]]
//
// ELEM_BYTES: bytes per weight element the products read (2 for BF16/F16 weights read as stored;
// 4 when a build converts them to float32 first), for the bandwidth bound. LOGITS_OUT: the
// logits (16, V) of the 16-token prompt, float32 (to compare two builds, or with the numpy
// reference: tests/ref/hf_reference.py DIR LOGITS_OUT <the ids printed>).
// Uses the public model API only, so the same file builds against any libctrace.a.
#include "bench.h"
#include "model/model.h"

#define ROUNDS 5

static void mem_report(const char *when) {
    long anon = anon_kb();
    printf("  memory %-22s RSS %7.0f MiB (anon %6.0f, file %6.0f), peak RSS %7.0f MiB, peak anon %6.0f MiB\n", when,
           status_kb("VmRSS") / 1024.0, anon / 1024.0, status_kb("RssFile") / 1024.0, status_kb("VmHWM") / 1024.0,
           peak_anon_kb / 1024.0);
}

static void die(const char *what, const ct_err *err) {
    printf("%s: %s\n", what, err->msg);
    exit(1);
}

// Seconds of one forward pass over T tokens (logits of the last position).
static double forward_s(ct_model *m, const int *ids, int T, float *logits) {
    ct_err err = {0};
    double t0 = now();
    if (ct_model_forward(m, ids, T, NULL, NULL, logits, 0, &err)) die("forward", &err);
    return now() - t0;
}

// Float32 operands of one layer's products, for the sgemm reference.
typedef struct {
    int shp[7][2];   // (N, K) of q, k, v, o, gate, up, down
    float *w[7], *x, *o;
} ref_layer;

static void ref_init(ref_layer *r, const ct_config *c) {
    int D = c->d_model, F = c->d_mlp, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int shp[7][2] = {{qd, D}, {kvd, D}, {kvd, D}, {D, qd}, {F, D}, {F, D}, {D, F}};
    memcpy(r->shp, shp, sizeof shp);
    size_t big = (size_t)(F > qd ? F : qd) > (size_t)D ? (size_t)(F > qd ? F : qd) : (size_t)D;
    for (int i = 0; i < 7; i++) {
        size_t n = (size_t)shp[i][0] * shp[i][1];
        r->w[i] = malloc(sizeof(float) * n);
        for (size_t j = 0; j < n; j++) r->w[i][j] = (float)(j % 5) / 5.0f - 0.4f;
    }
    r->x = malloc(sizeof(float) * 256 * big);
    r->o = malloc(sizeof(float) * 256 * big);
    for (size_t j = 0; j < 256 * big; j++) r->x[j] = (float)(j % 7) / 7.0f;
}

// Seconds of the layers' products at T tokens with sgemm on float32 operands (one layer's
// matrices, n_layers times).
static double sgemm_s(const ref_layer *r, int T, int n_layers) {
    double t0 = now();
    for (int l = 0; l < n_layers; l++)
        for (int i = 0; i < 7; i++)
            ct_sgemm(0, 1, T, r->shp[i][0], r->shp[i][1], 1.0f, r->x, r->shp[i][1], r->w[i], r->shp[i][1], 0.0f, r->o,
                     r->shp[i][0]);
    return now() - t0;
}

// GB/s of memcpy over n bytes (bytes copied a second).
static double memcpy_rate(char *a, char *b, size_t n) {
    double t0 = now();
    memcpy(b, a, n);
    double t = now() - t0;
    volatile char sink = b[n / 2];
    (void)sink;
    return n / t / 1e9;
}

// GB/s of reading n bytes (a sum of 64-bit words): what a product streaming its weights can reach
// at most on one thread.
static double read_rate(const uint64_t *a, size_t n) {
    double t0 = now();
    uint64_t acc[8] = {0}, s = 0;
    for (size_t i = 0; i + 8 <= n / 8; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k];
    for (int k = 0; k < 8; k++) s += acc[k];
    double t = now() - t0;
    volatile uint64_t sink = s;
    (void)sink;
    return n / t / 1e9;
}

// Seconds a generated token takes: (generating 1 + n tokens - generating 1) / n, greedy, after
// an 8-token prompt.
static double token_s(ct_model *m, const int *ids, int n) {
    int out[64], n_out = 0;
    ct_err err = {0};
    ct_gen_opts g = {.max_tokens = 1, .temperature = 0.0f, .top_p = 1.0f, .stop_at_eos = 0};
    double t[2];
    for (int k = 0; k < 2; k++) {
        g.max_tokens = k ? 1 + n : 1;
        double t0 = now();
        if (ct_model_generate(m, ids, 8, &g, out, &n_out, &err)) die("generate", &err);
        t[k] = now() - t0;
    }
    return (t[1] - t[0]) / n;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_weights DIR [ELEM_BYTES [LOGITS_OUT]]\n");
        return 2;
    }
    int elem = argc > 2 ? atoi(argv[2]) : 2;
    mem_report("at start");
    ct_model *m = NULL;
    ct_err err = {0};
    double t0 = now();
    if (ct_model_load(NULL, &m, argv[1], &err)) die("load", &err);
    double t_load = now() - t0;
    const ct_config *c = &m->cfg;
    int D = c->d_model, F = c->d_mlp, L = c->n_layers, V = c->vocab_size;
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    double layer_params = (double)qd * D * 2 + 2.0 * kvd * D + 3.0 * F * D;   // q, o, k, v, gate, up, down
    printf("%s: %s, d_model %d, d_mlp %d, %d layers, %d/%d heads of %d, vocab %d; %.3f B parameters in matrices\n",
           argv[1], c->architecture, D, F, L, c->n_heads, c->n_kv_heads, c->head_dim, V,
           (L * layer_params + (double)V * D) / 1e9);
    printf("  load: %.3f s\n", t_load);
    mem_report("after load");

    int ids[256];
    uint64_t s = 5;
    for (int i = 0; i < 256; i++) ids[i] = (int)(ct_rand_u64(&s) % (uint64_t)V);
    float *logits = malloc(sizeof(float) * (size_t)V);
    // memory: the first passes and a generation (the figures before any reference operand exists)
    const int Ts[2] = {16, 256};
    double first[2];
    for (int k = 0; k < 2; k++) {
        first[k] = forward_s(m, ids, Ts[k], logits);
        mem_report(k ? "after 256 tokens" : "after 16 tokens");
    }
    token_s(m, ids, 4);
    mem_report("after generation");
    printf("  first passes (pages faulted in from the page cache): %.0f ms (16 tokens), %.0f ms (256 tokens)\n",
           first[0] * 1e3, first[1] * 1e3);
    if (argc > 3) {   // every position's logits of the 16-token prompt
        float *all = malloc(sizeof(float) * 16 * (size_t)V);
        FILE *f = fopen(argv[3], "wb");
        if (ct_model_forward(m, ids, 16, NULL, NULL, all, 1, &err)) die("forward", &err);
        if (f) fwrite(all, sizeof(float), 16 * (size_t)V, f), fclose(f);
        free(all);
        printf("  logits (16, %d) of the ids", V);
        for (int i = 0; i < 16; i++) printf(" %d", ids[i]);
        printf(" in %s\n", argv[3]);
    }

    // forward passes against sgemm at the layers' shapes, alternating
    ref_layer ref;
    ref_init(&ref, c);
    for (int k = 0; k < 2; k++) {
        int T = Ts[k];
        double tf[ROUNDS], ts[ROUNDS];
        for (int r = 0; r < ROUNDS; r++) {
            tf[r] = forward_s(m, ids, T, logits);
            ts[r] = sgemm_s(&ref, T, L);
        }
        double f = median(tf, ROUNDS), g = median(ts, ROUNDS);
        double flops = 2.0 * T * L * layer_params;
        printf("  forward over %3d tokens: %8.1f ms; the layers' products (%.1f GFLOP) at sgemm's rate on float32 "
               "operands: %8.1f ms (%.1f GFLOP/s); forward / sgemm %.2f (medians of %d alternating rounds)\n",
               T, f * 1e3, flops / 1e9, g * 1e3, flops / g / 1e9, f / g, ROUNDS);
    }
    for (int i = 0; i < 7; i++) free(ref.w[i]);
    free(ref.x), free(ref.o);

    // generation against memory bandwidth, alternating
    size_t nb = (size_t)1 << 30;
    char *a = malloc(nb), *b = malloc(nb);
    memset(a, 1, nb), memset(b, 2, nb);
    double tt[ROUNDS], bw[ROUNDS], rd[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        tt[r] = token_s(m, ids, 8);
        bw[r] = memcpy_rate(a, b, nb);
        rd[r] = read_rate((const uint64_t *)(const void *)a, nb);
    }
    free(a), free(b);
    double per_tok = median(tt, ROUNDS), mb = median(bw, ROUNDS), mr = median(rd, ROUNDS);
    double wbytes = ((double)L * layer_params + (double)V * D) * elem;   // matrices read per token
    printf("  generation: %.2f tokens/s (%.1f ms a token); %.2f GB of weights a token (%d bytes an element); memcpy "
           "%.1f GB/s: bound %.2f tokens/s, reached %.0f%%; reading alone %.1f GB/s: %.2f tokens/s, reached %.0f%% "
           "(medians of %d alternating rounds)\n",
           1.0 / per_tok, per_tok * 1e3, wbytes / 1e9, elem, mb, mb * 1e9 / wbytes, 100.0 * wbytes / (mb * 1e9) / per_tok,
           mr, mr * 1e9 / wbytes, 100.0 * wbytes / (mr * 1e9) / per_tok, ROUNDS);
    free(logits);
    ct_model_free(m);
    return 0;
}
