// check.h - a minimal TAP harness for the C tests: ok lines, close-number checks that print
// the largest difference, and a plan printed at the end.
#ifndef CT_CHECK_H
#define CT_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

// 1 when the kernel has transparent huge pages (the huge-page hints can be checked)
static inline int thp_here(void) { return access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0; }

// This process's mapping holding p: its "VmFlags:" line of /proc/self/smaps ("hg": a hint
// for huge pages, "nh": none, "rr": random reads) copied into flags; 0 when no mapping holds p.
static inline int vma_flags(const void *p, char *flags, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, found = 0;
    flags[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && line[strspn(line, "0123456789abcdef")] == '-')
            in = (unsigned long)p >= a && (unsigned long)p < b;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            size_t k = strcspn(line + 8, "\n");
            if (k >= n) k = n - 1;
            memcpy(flags, line + 8, k);
            flags[k] = 0;
            found = 1;
            break;
        }
    }
    if (f) fclose(f);
    return found;
}

// 1 when a mapping of this process without access ("---p": an address range only reserved)
// ends at a or starts at b: what would be left of a reservation around [a, b)
static inline int reserved_beside(unsigned long a, unsigned long b) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512], perms[8];
    int any = 0;
    unsigned long x, y;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx %7s", &x, &y, perms) == 3 && (y == a || x == b) && strcmp(perms, "---p") == 0) any = 1;
    if (f) fclose(f);
    return any;
}

static inline int check_done(void) {
    printf("1..%d\n", check_n);
    if (check_failed) printf("# %d of %d checks failed\n", check_failed, check_n);
    return check_failed ? 1 : 0;
}

#endif
