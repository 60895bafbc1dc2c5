// sgemm.c - the machine's ceiling for ctrace's numeric work: OpenBLAS sgemm GFLOP/s, median of
// repeats, at the BLAS library's default thread count. With no arguments: square matrices of 64,
// 256 and 1024; else each argument MxNxK is one product C (M, N) = A (M, K) B (N, K)^T, and the
// argument "copy" measures memcpy of 512 MiB on one thread (bytes read plus bytes written per
// second, as STREAM counts its copy), and "read" the rate at which all threads together read
// 1 GiB held in memory: the bound on a pass over weights held in memory, as generation makes
// (every weight read once a token).
#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
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

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} read_part;

// Sums a part's words, four chains at a time (the sum keeps the reads from being dropped).
static void *read_words(void *arg) {
    read_part *r = arg;
    uint64_t s[4] = {0};
    size_t i = 0;
    for (; i + 4 <= r->n; i += 4)
        for (int k = 0; k < 4; k++) s[k] += r->p[i + k];
    for (; i < r->n; i++) s[0] += r->p[i];
    r->sum = s[0] + s[1] + s[2] + s[3];
    return NULL;
}

// n bytes read by every thread at once (one part each), median of reps, as a line "read: X GB/s".
static void read_rate(size_t n, int reps) {
    int th = openblas_get_num_threads();
    if (th < 1) th = 1;
    if (th > 64) th = 64;
    uint64_t *a = malloc(n);
    double t[32];
    if (!a) {
        fprintf(stderr, "sgemm: out of memory for a read of %zu bytes\n", n);
        exit(1);
    }
    memset(a, 1, n);
    size_t words = n / 8;
    uint64_t check = 0;
    for (int r = 0; r < reps; r++) {
        read_part parts[64];
        pthread_t ids[64];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int k = 0; k < th; k++) {
            parts[k] = (read_part){a + words * k / th, words * (k + 1) / th - words * k / th, 0};
            if (k > 0 && pthread_create(&ids[k], NULL, read_words, &parts[k]) != 0) {
                fprintf(stderr, "sgemm: cannot start a reading thread\n");
                exit(1);
            }
        }
        read_words(&parts[0]);
        for (int k = 1; k < th; k++) pthread_join(ids[k], NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        t[r] = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        for (int k = 0; k < th; k++) check += parts[k].sum;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp);
    printf("read: %.1f GB/s (%zu MiB read by %d threads, median of %d; checksum %llu)\n", n / t[reps / 2] / 1e9, n >> 20, th,
           reps, (unsigned long long)(check & 0xff));
    free(a);
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
        if (strcmp(argv[i], "read") == 0) {
            read_rate((size_t)1 << 30, 9);
            continue;
        }
        if (sscanf(argv[i], "%dx%dx%d", &M, &N, &K) != 3 || M <= 0 || N <= 0 || K <= 0) {
            fprintf(stderr, "sgemm: expected MxNxK with positive sizes, copy or read, got '%s'\n", argv[i]);
            return 2;
        }
        double macs = (double)M * N * K;
        measure(M, N, K, macs < 1e8 ? 100 : macs < 1e10 ? 15 : 5);
    }
    return 0;
}
