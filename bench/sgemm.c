// sgemm.c - the machine's ceiling for ctrace's numeric work: OpenBLAS sgemm GFLOP/s, median of
// repeats, at the BLAS library's default thread count. With no arguments: square matrices of 64,
// 256 and 1024; else each argument MxNxK is one product C (M, N) = A (M, K) B (N, K)^T, and the
// argument "copy" measures memcpy of 512 MiB (bytes read plus bytes written per second, as STREAM
// counts its copy: the memory traffic one thread can move, against which a pass over weights held
// in memory is measured).
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// One shape: the median of reps products, printed as a line "sgemm M x N x K: X GFLOP/s ...".
static void measure(int M, int N, int K, int reps) {
    float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * N * K), *c = malloc(sizeof(float) * M * N);
    double *t = malloc(sizeof(double) * reps);
    if (!a || !b || !c || !t) {
        fprintf(stderr, "sgemm: out of memory for %d x %d x %d\n", M, N, K);
        exit(1);
    }
    for (long i = 0; i < (long)M * K; i++) a[i] = (float)(i % 7) / 7;
    for (long i = 0; i < (long)N * K; i++) b[i] = (float)(i % 5) / 5;
    for (int r = 0; r < reps; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        t[r] = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp);
    printf("sgemm %4d x %4d x %4d: %.1f GFLOP/s (median of %d, %d threads)\n", M, N, K, 2.0 * M * N * K / t[reps / 2] / 1e9,
           reps, openblas_get_num_threads());
    free(a), free(b), free(c), free(t);
}

// memcpy of n bytes, median of reps, as a line "copy: X GB/s" (2n bytes of traffic a copy).
static void copy_rate(size_t n, int reps) {
    char *a = malloc(n), *b = malloc(n);
    double t[32];
    if (!a || !b) {
        fprintf(stderr, "sgemm: out of memory for a copy of %zu bytes\n", n);
        exit(1);
    }
    memset(a, 1, n), memset(b, 2, n);
    for (int r = 0; r < reps; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        memcpy(r % 2 ? a : b, r % 2 ? b : a, n);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        t[r] = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp);
    printf("copy: %.1f GB/s (memcpy of %zu MiB, read + written, median of %d)\n", 2.0 * n / t[reps / 2] / 1e9, n >> 20,
           reps);
    free(a), free(b);
}

int main(int argc, char **argv) {
    if (argc == 1) {
        measure(64, 64, 64, 200), measure(256, 256, 256, 200), measure(1024, 1024, 1024, 15);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        int M, N, K;
        if (strcmp(argv[i], "copy") == 0) {
            copy_rate((size_t)512 << 20, 9);
            continue;
        }
        if (sscanf(argv[i], "%dx%dx%d", &M, &N, &K) != 3 || M <= 0 || N <= 0 || K <= 0) {
            fprintf(stderr, "sgemm: expected MxNxK with positive sizes or copy, got '%s'\n", argv[i]);
            return 2;
        }
        double macs = (double)M * N * K;
        measure(M, N, K, macs < 1e8 ? 100 : macs < 1e10 ? 15 : 5);
    }
    return 0;
}
