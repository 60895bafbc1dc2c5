// bench_transcoder.c - transcoders at their real size. Medians of repeats; figures only.
//
//   bench_transcoder                 one Gemma-2-2B-sized per-layer transcoder (d_model 2304, 16384
//                                    features, random weights in memory, JumpReLU thresholds set for
//                                    about 70 active features per token): encode and sparse decode
//   bench_transcoder SET [T...]      a transcoder set from files (bench/make_tc_sets.py writes
//                                    size-faithful ones): load time (median of 5 loads from the page
//                                    cache), memory after loading (RSS, its anonymous part, the
//                                    engine's own allocations), the first encode of every layer
//                                    after a load and the next ones, at each prompt length T
//                                    (default 11 and 64), in GFLOP/s beside OpenBLAS sgemm on the
//                                    same shape from float32 in memory; decoder rows per second;
//                                    peak RSS. The set is read in full once before timing, so
//                                    loads are from the page cache.
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"
#include "core/fileio.h"
#include "formats/npz.h"
#include "model/transcoder.h"

// CPU seconds of this process (user + system): less disturbed than wall time on a shared machine
static double cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static float rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)(*s >> 40) / 16777216.0f * 2.0f - 1.0f;
}

// N(0, 1) (Box-Muller): the inputs the sets of bench/make_tc_sets.py are calibrated for
static float gauss(uint64_t *s) {
    double u = (rnd(s) + 1.0) * 0.5 + 1e-12, v = (rnd(s) + 1.0) * 0.5;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static void memory(const char *when) {
    long anon = anon_kb();
    printf("  memory %-22s RSS %7.2f GiB (anonymous %.3f GiB, file %.2f GiB); engine allocations %.3f GiB\n", when,
           status_kb("VmRSS") / 1048576.0, anon / 1048576.0, status_kb("RssFile") / 1048576.0, ct_mem_bytes() / 1073741824.0);
}

static int bench_set(const char *path, const int *Ts, int nT) {
    ct_err err = {0};
    ct_transcoders *tc = NULL;
    // warm the page cache (and check the set loads)
    if (ct_transcoders_load(NULL, &tc, path, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int L = tc->n_layers, D = tc->d_model, F = tc->layers[0].d_tc;
    const char *dt = ct_dtype_name(tc->layers[0].W_enc.dtype);
    double bytes = 0;
    for (int l = 0; l < L; l++) {
        const ct_tc_layer *y = &tc->layers[l];
        bytes += (double)y->d_tc * D * (ct_dtype_size(y->W_enc.dtype) + y->n_out * ct_dtype_size(y->W_dec.dtype));
    }
    for (int i = 0; i < tc->n_st; i++) ct_map_advise(tc->st[i]->map, tc->st[i]->size, CT_ADVISE_POPULATE);
    for (int i = 0; i < tc->n_npz; i++) ct_map_advise(tc->npz[i]->map, tc->npz[i]->size, CT_ADVISE_POPULATE);
    ct_transcoders_free(tc);
    printf("set %s: %d layers, d_model %d, %d features, encoders %s, %.2f GB of encoders and decoders\n", path, L, D, F, dt,
           bytes / 1e9);
    const int reps = 5;
    double tl[reps], cl[reps];
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu();
        if (ct_transcoders_load(NULL, &tc, path, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        tl[r] = now() - t0, cl[r] = cpu() - c0;
        if (r == reps - 1) break;
        ct_transcoders_free(tc);
    }
    printf("  load: %.3f s median of %d from the page cache (%.3f s of CPU)\n", median(tl, reps), reps, median(cl, reps));
    memory("after loading");
    // decoder rows: 2000 random features a layer
    float *row = malloc(sizeof(float) * (size_t)D);
    uint64_t s = 11;
    int n_rows = 0;
    double t0 = now();
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 2000; k++) {
            int64_t f = (int64_t)((rnd(&s) * 0.5f + 0.5f) * (float)(tc->layers[l].d_tc - 1));
            ct_tc_decoder_row(tc, l, f, 0, row, &err);
            n_rows++;
        }
    double td = now() - t0;
    printf("  decoder rows (random features, in the page cache, first touch): %.0f rows/s\n", n_rows / td);
    for (int i = 0; i < nT; i++) {
        int T = Ts[i];
        float *x = malloc(sizeof(float) * (size_t)T * D), *act = malloc(sizeof(float) * (size_t)T * F);
        float *y = calloc((size_t)T * D, sizeof(float));
        for (size_t k = 0; k < (size_t)T * D; k++) x[k] = gauss(&s);
        double te[16], td[16];
        long active = 0;
        int passes = 5;
        for (int p = 0; p < passes; p++) {
            te[p] = td[p] = 0;
            for (int l = 0; l < L; l++) {
                double t1 = now();
                if (ct_tc_encode(tc, l, x, T, NULL, act, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
                double t2 = now();
                if (ct_tc_decode_add(tc, l, 0, act, T, y, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
                te[p] += t2 - t1, td[p] += now() - t2;
                if (p == 0)
                    for (size_t k = 0; k < (size_t)T * F; k++) active += act[k] != 0;
            }
        }
        double first = te[0], dfirst = td[0], e = median(te + 1, passes - 1), d = median(td + 1, passes - 1);
        double flop = 2.0 * T * (double)F * D * L, ceiling = sgemm_gflops(1, T, F, D, 5);
        printf("  T=%-3d %.1f active features per position and layer\n", T, (double)active / T / L);
        printf("    encode every layer: first after load %.3f s (%.1f GFLOP/s), then %.3f s median (%.1f GFLOP/s); "
               "sgemm at (%d, %d, %d), float32 in memory: %.1f GFLOP/s\n", first, flop / first / 1e9, e, flop / e / 1e9, T, F, D,
               ceiling);
        printf("    sparse decode of every layer: first %.3f s, then %.3f s median\n", dfirst, d);
        free(x), free(act), free(y);
    }
    free(row);
    memory("after encoding");
    ct_transcoders_free(tc);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("  peak RSS %.2f GiB, peak anonymous %.3f GiB (of the checkpoints above)\n", ru.ru_maxrss / 1048576.0,
           peak_anon_kb / 1048576.0);
    return 0;
}

static int bench_layer(void) {
    const int D = 2304, F = 16384, T = 64, reps = 9;
    uint64_t s = 42;
    float *We = malloc(sizeof(float) * (size_t)F * D), *Wd = malloc(sizeof(float) * (size_t)F * D);
    for (size_t i = 0; i < (size_t)F * D; i++) {
        We[i] = rnd(&s) * 0.025f;
        Wd[i] = rnd(&s) * 0.025f;
    }
    ct_tc_layer layer = {.d_tc = F, .W_enc = {(const uint8_t *)We, CT_DT_F32, F, D, D, 1}, .b_enc = calloc(F, sizeof(float)),
                         .threshold = malloc(sizeof(float) * F), .W_dec = {(const uint8_t *)Wd, CT_DT_F32, F, D, D, 1},
                         .n_out = 1, .b_dec = calloc(D, sizeof(float))};
    for (int f = 0; f < F; f++) layer.threshold[f] = 1.05f;
    ct_transcoders tc = {.kind = CT_TC_PLT, .n_layers = 1, .d_model = D, .act = CT_TC_JUMPRELU, .layers = &layer};
    float *x = malloc(sizeof(float) * (size_t)T * D), *act = malloc(sizeof(float) * (size_t)T * F);
    float *y = malloc(sizeof(float) * (size_t)T * D);
    for (int i = 0; i < T * D; i++) x[i] = rnd(&s);
    ct_err err;
    double te[16], td[16];
    long active = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        ct_tc_encode(&tc, 0, x, T, NULL, act, &err);
        double t1 = now();
        memset(y, 0, sizeof(float) * (size_t)T * D);
        ct_tc_decode_add(&tc, 0, 0, act, T, y, &err);
        double t2 = now();
        te[r] = t1 - t0, td[r] = t2 - t1;
        if (r == 0)
            for (int i = 0; i < T * F; i++) active += act[i] != 0;
    }
    double e = median(te, reps), d = median(td, reps);
    printf("transcoder layer 2304 x 16384, %d tokens, %.1f active features per token\n", T, (double)active / T);
    printf("  encode:        %.1f ms median, %.0f tokens/s, %.1f GFLOP/s\n", e * 1e3, T / e, 2.0 * T * D * F / e / 1e9);
    printf("  sparse decode: %.2f ms median, %.0f tokens/s\n", d * 1e3, T / d);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return bench_layer();
    int Ts[8] = {11, 64}, nT = 2;
    if (argc > 2) {
        nT = 0;
        for (int i = 2; i < argc && nT < 8; i++) Ts[nT++] = atoi(argv[i]);
    }
    return bench_set(argv[1], Ts, nT);
}
