// bench_transcoder.c - encode and sparse-decode throughput of one Gemma-2-2B-sized per-layer
// transcoder (d_model 2304, 16384 features, random weights, JumpReLU thresholds set for about
// 70 active features per token), medians of repeats.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/transcoder.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    const int D = 2304, F = 16384, T = 64, reps = 9;
    uint64_t s = 42;
    float *We = malloc(sizeof(float) * (size_t)F * D), *Wd = malloc(sizeof(float) * (size_t)F * D);
    for (size_t i = 0; i < (size_t)F * D; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        We[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.05f;
        Wd[i] = ((float)(s >> 20 & 0xFFFFF) / 1048576.0f - 0.5f) * 0.05f;
    }
    ct_tc_layer layer = {.d_tc = F, .W_enc = We, .b_enc = calloc(F, sizeof(float)), .threshold = malloc(sizeof(float) * F),
                         .W_dec = {(const uint8_t *)Wd, CT_DT_F32, F, D, D, 1}, .n_out = 1, .b_dec = calloc(D, sizeof(float))};
    for (int f = 0; f < F; f++) layer.threshold[f] = 1.05f;
    ct_transcoders tc = {.kind = CT_TC_PLT, .n_layers = 1, .d_model = D, .act = CT_TC_JUMPRELU, .layers = &layer};
    float *x = malloc(sizeof(float) * (size_t)T * D), *act = malloc(sizeof(float) * (size_t)T * F);
    float *y = malloc(sizeof(float) * (size_t)T * D);
    for (int i = 0; i < T * D; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)(s >> 40) / 16777216.0f * 2.0f - 1.0f;
    }
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
    qsort(te, reps, sizeof(double), cmp);
    qsort(td, reps, sizeof(double), cmp);
    double e = te[reps / 2], d = td[reps / 2];
    printf("transcoder layer 2304 x 16384, %d tokens, %.1f active features per token\n", T, (double)active / T);
    printf("  encode:        %.1f ms median, %.0f tokens/s, %.1f GFLOP/s\n", e * 1e3, T / e, 2.0 * T * D * F / e / 1e9);
    printf("  sparse decode: %.2f ms median, %.0f tokens/s\n", d * 1e3, T / d);
    return 0;
}
