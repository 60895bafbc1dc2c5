// main.c - the `ctrace` program.
#include <stdlib.h>
#include <unistd.h>

#include "host.h"
#include "core/tensor.h"

int main(int argc, char **argv) {
    // OpenBLAS reads OPENBLAS_CORETYPE when it loads: restart once with the right kernels when
    // it fell back to generic ones (see ct_blas_better_core); on failure carry on as we are.
    const char *core = ct_blas_better_core();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);
    return ct_host_main(argc, argv);
}
