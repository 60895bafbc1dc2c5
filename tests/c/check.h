// check.h - a minimal TAP harness for the C tests: ok lines, close-number checks that print
// the largest difference, and a plan printed at the end.
#ifndef CT_CHECK_H
#define CT_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_n, check_failed;

#define ok(cond, ...)                                              \
    do {                                                           \
        int ok_c_ = (cond);                                        \
        check_n++;                                                 \
        if (!ok_c_) check_failed++;                                \
        printf("%sok %d - ", ok_c_ ? "" : "not ", check_n);        \
        printf(__VA_ARGS__);                                       \
        printf("\n");                                              \
        if (!ok_c_) printf("#   failed at %s:%d\n", __FILE__, __LINE__); \
        fflush(stdout);                                            \
    } while (0)

// |a - b| <= atol + rtol * |b| elementwise; prints the largest difference.
static inline int check_close(const float *a, const float *b, size_t n, double atol, double rtol, const char *label) {
    double worst = 0.0;
    size_t at = 0;
    int good = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst || isnan(d)) worst = d, at = i;
        if (!(d <= atol + rtol * fabs((double)b[i]))) good = 0;
    }
    printf("# %s: max |diff| %.3g at %zu (%zu values)\n", label, worst, at, n);
    return good;
}

static inline int check_done(void) {
    printf("1..%d\n", check_n);
    if (check_failed) printf("# %d of %d checks failed\n", check_failed, check_n);
    return check_failed ? 1 : 0;
}

#endif
