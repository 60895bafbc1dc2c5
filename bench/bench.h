// bench.h - what the C benchmarks share: wall time, medians, OpenBLAS's sgemm rate, fields of
// /proc/self/status and the peak of the anonymous memory seen at their memory reports. Included
// by one source file each; a program need not use every function.
#ifndef CT_BENCH_H
#define CT_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tensor.h"

__attribute__((unused)) static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The median of t (n,), which it sorts.
__attribute__((unused)) static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

// kB of a /proc/self/status field ("VmHWM", "RssAnon", ...)
__attribute__((unused)) static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') v = atol(line + n + 1);
    if (f) fclose(f);
    return v;
}

static long peak_anon_kb;   // the largest RssAnon anon_kb has seen

// RssAnon now (kB), kept in peak_anon_kb when it is the largest yet.
__attribute__((unused)) static long anon_kb(void) {
    long anon = status_kb("RssAnon");
    if (anon > peak_anon_kb) peak_anon_kb = anon;
    return anon;
}

// GFLOP/s of OpenBLAS sgemm (ct_sgemm) on float32 in memory, median of reps (at most 32):
// C (M, N) = A (M, K) @ B, B (K, N) or, with tb, (N, K) transposed.
__attribute__((unused)) static double sgemm_gflops(int tb, int M, int N, int K, int reps) {
    float *a = malloc(sizeof(float) * (size_t)M * K), *b = malloc(sizeof(float) * (size_t)K * N);
    float *c = malloc(sizeof(float) * (size_t)M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) / 7;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) / 5;
    double t[32];
    for (int r = 0; r < reps && r < 32; r++) {
        double t0 = now();
        ct_sgemm(0, tb, M, N, K, 1.0f, a, K, b, tb ? K : N, 0.0f, c, N);
        t[r] = now() - t0;
    }
    free(a), free(b), free(c);
    return 2.0 * M * N * K / median(t, reps < 32 ? reps : 32) / 1e9;
}

#endif
