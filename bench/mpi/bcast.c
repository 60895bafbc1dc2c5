// bcast.c - the broadcast rate between the ranks of an MPI job as attribution uses it: a batch of
// rows (S MiB, in a buffer touched before, as attribution reuses its own) from one rank to all,
// N times from each rank in turn; the median seconds of one. Figures only.
//   mpirun -n 2 build/bench/mpi_bcast [MiB] [N]    (bench/mpi.sh builds and runs it)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctx.h"
#include "core/dist.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    ct_err err = {0};
    if (ct_dist_init(&argc, &argv, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 64, bytes = mib << 20;
    int n = argc > 2 ? atoi(argv[2]) : 9, P = ct_dist_size();
    char *buf = malloc(bytes);
    double *t = malloc(sizeof(double) * (size_t)n * (size_t)P);
    if (!buf || !t) return 1;
    memset(buf, ct_dist_rank(), bytes);
    for (int i = 0; i < n * P; i++) {
        double t0 = ct_now();
        if (ct_dist_bcast(buf, bytes, i % P, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            ct_dist_finalize(1);
            return 1;
        }
        t[i] = ct_now() - t0;
    }
    qsort(t, (size_t)n * (size_t)P, sizeof(double), cmp);
    double med = t[n * P / 2];
    if (ct_dist_rank() == 0)
        printf("%d ranks: broadcast of %zu MiB, median of %d: %.4f s, %.2f GB/s\n", P, mib, n * P, med, bytes / med / 1e9);
    free(buf), free(t);
    ct_dist_finalize(0);
    return 0;
}
