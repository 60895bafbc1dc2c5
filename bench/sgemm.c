// sgemm.c - the machine's ceiling for ctrace's numeric work: OpenBLAS sgemm GFLOP/s on square
// matrices, median of repeats, at the BLAS library's default thread count.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    int sizes[] = {64, 256, 1024};
    for (int s = 0; s < 3; s++) {
        int n = sizes[s], reps = n < 512 ? 200 : 15;
        float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
        for (int i = 0; i < n * n; i++) a[i] = (float)(i % 7) / 7, b[i] = (float)(i % 5) / 5;
        double t[200];
        for (int r = 0; r < reps; r++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            t[r] = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        }
        qsort(t, (size_t)reps, sizeof(double), cmp);
        printf("sgemm %4d x %4d x %4d: %.1f GFLOP/s (median of %d, %d threads)\n", n, n, n, 2.0 * n * n * n / t[reps / 2] / 1e9,
               reps, openblas_get_num_threads());
        free(a), free(b), free(c);
    }
    return 0;
}
