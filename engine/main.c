// main.c - the `ctrace` program.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "host.h"
#include "core/dist.h"
#include "core/tensor.h"

int main(int argc, char **argv) {
    // OpenBLAS reads OPENBLAS_CORETYPE when it loads: restart once with the right kernels when
    // it fell back to generic ones (see ct_blas_better_core); on failure carry on as we are.
    const char *core = ct_blas_better_core();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);
    ct_err err = {0};
    if (ct_dist_init(&argc, &argv, &err)) {
        fprintf(stderr, "ctrace: %s\n", err.msg);
        return 2;
    }
    int st = ct_host_main(argc, argv);
    ct_dist_finalize(st);
    return st;
}
