// test_topk.c - ct_topk against a full qsort of the indices (the same total order: larger value
// first, NaN after every number, ties to the lower index) on random arrays of many sizes and
// k (0, 1, n-1, n, > n, ...), with many ties, signed zeros, NaN and +-inf; ct_logsumexp against
// a direct long-double sum; ct_softmax_topk's probabilities against exp(x - logsumexp); a
// transcoder's TopK activation (circuit-tracer's: the k largest pre-activations kept as they
// are, negative ones included) on a set worked out by hand.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/tensor.h"
#include "model/transcoder.h"

// ---------------------------------------------------------------------------------------------
// Reference: qsort of every index by the order ct_topk documents

static const float *ref_x;

static int ref_cmp(const void *pa, const void *pb) {
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    float va = ref_x[a], vb = ref_x[b];
    int na = isnan(va), nb = isnan(vb);
    if (na != nb) return na ? 1 : -1;        // numbers before NaN
    if (!na && va != vb) return va > vb ? -1 : 1;
    return a < b ? -1 : a > b;               // equal values (or both NaN): lower index first
}

static void ref_topk(int64_t *idx, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    ref_x = x;
    qsort(idx, (size_t)n, sizeof *idx, ref_cmp);
}

// ---------------------------------------------------------------------------------------------
// Inputs

typedef enum { GEN_UNIFORM, GEN_TIES, GEN_SPECIAL, GEN_EQUAL, GEN_NAN, GEN_ASCENDING, GEN_DESCENDING, GEN_COUNT } gen_kind;
static const char *gen_name[GEN_COUNT] = {"uniform", "many ties and signed zeros", "NaN and +-inf among ties",
                                          "all equal", "all NaN", "ascending", "descending"};

static void fill(float *x, int64_t n, gen_kind g, uint64_t *rng) {
    static const float few[] = {-2.0f, -1.0f, -0.0f, 0.0f, 1.0f, 2.0f, 0.5f};
    for (int64_t i = 0; i < n; i++) {
        float u = ct_rand_uniform(rng);   // (-1, 1)
        switch (g) {
        case GEN_UNIFORM: x[i] = 10.0f * u; break;
        case GEN_TIES: x[i] = few[(int)((u + 1.0f) * 3.5f) % 7]; break;
        case GEN_SPECIAL: {
            float r = ct_rand_uniform(rng);
            x[i] = r < -0.7f ? NAN : r < -0.5f ? INFINITY : r < -0.3f ? -INFINITY : few[(int)((u + 1.0f) * 3.5f) % 7];
            break;
        }
        case GEN_EQUAL: x[i] = 3.0f; break;
        case GEN_NAN: x[i] = NAN; break;
        case GEN_ASCENDING: x[i] = (float)i; break;
        case GEN_DESCENDING: x[i] = (float)(n - i); break;
        default: break;
        }
    }
}

// ---------------------------------------------------------------------------------------------

int main(void) {
    static const int64_t sizes[] = {0, 1, 2, 3, 4, 5, 7, 8, 16, 17, 31, 64, 100, 257, 1000, 1024, 4099};
    int64_t n_max = 4099 + 8;
    float *x = malloc(sizeof(float) * (size_t)n_max);
    int64_t *got = malloc(sizeof(int64_t) * (size_t)(n_max + 8)), *want = malloc(sizeof(int64_t) * (size_t)n_max);
    uint64_t rng = 12345;

    // every generator x every size x k in {0, 1, 2, 3, n/2, n-1, n, n+1, n+7, random}, three draws each
    for (int g = 0; g < GEN_COUNT; g++) {
        int cases = 0, bad_order = 0, bad_count = 0, bad_tail = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            int64_t n = sizes[si];
            for (int draw = 0; draw < 3; draw++) {
                fill(x, n, (gen_kind)g, &rng);
                ref_topk(want, x, n);
                int64_t ks[] = {0, 1, 2, 3, n / 2, n - 1, n, n + 1, n + 7,
                                n ? (int64_t)((ct_rand_uniform(&rng) + 1.0f) * 0.5f * n) : 0};
                for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                    int64_t k = ks[ki];
                    if (k < 0) continue;
                    for (int64_t i = 0; i < k + 1; i++) got[i] = -7;   // sentinel past the answer
                    int64_t r = ct_topk(got, x, n, k), m = k < n ? k : n;
                    cases++;
                    if (r != m) bad_count++;
                    if (memcmp(got, want, sizeof(int64_t) * (size_t)m) != 0) bad_order++;
                    for (int64_t i = m; i < k + 1; i++)
                        if (got[i] != -7) {
                            bad_tail++;
                            break;
                        }
                }
            }
        }
        ok(bad_order == 0 && bad_count == 0 && bad_tail == 0,
           "%s: %d cases equal the qsort reference (%d wrong order, %d wrong count, %d wrote past min(k, n))",
           gen_name[g], cases, bad_order, bad_count, bad_tail);
    }

    // hand-written cases: the order is total
    {
        float y[] = {1.0f, NAN, 2.0f, -INFINITY, 2.0f, INFINITY, -0.0f, 0.0f, NAN, -1.0f};
        int64_t expect[] = {5, 2, 4, 0, 6, 7, 9, 3, 1, 8};
        int64_t r = ct_topk(got, y, 10, 10);
        ok(r == 10 && memcmp(got, expect, sizeof expect) == 0,
           "+inf, 2, 2 (lower index first), 1, -0 and 0 as equal (index order), -1, -inf, NaN, NaN: got %lld %lld %lld ... %lld %lld",
           (long long)got[0], (long long)got[1], (long long)got[2], (long long)got[8], (long long)got[9]);
        r = ct_topk(got, y, 10, 3);
        ok(r == 3 && got[0] == 5 && got[1] == 2 && got[2] == 4, "k = 3 of the same: inf, then the two 2s by index");
        float z[] = {NAN, NAN, -INFINITY};
        r = ct_topk(got, z, 3, 1);
        ok(r == 1 && got[0] == 2, "-inf ranks before NaN");
        ok(ct_topk(got, z, 3, -1) == 0 && ct_topk(got, z, 0, 5) == 0, "k < 0 and n = 0 select nothing");
    }

    // a vocabulary-sized row: 256,000 values with ties, k = 10 and 1000
    {
        int64_t V = 256000;
        float *big = malloc(sizeof(float) * (size_t)V);
        int64_t *bw = malloc(sizeof(int64_t) * (size_t)V), *bg = malloc(sizeof(int64_t) * 1000);
        for (int64_t i = 0; i < V; i++) big[i] = roundf(ct_rand_uniform(&rng) * 2000.0f) / 100.0f;   // many ties
        ref_topk(bw, big, V);
        int64_t r10 = ct_topk(bg, big, V, 10);
        int good10 = r10 == 10 && memcmp(bg, bw, sizeof(int64_t) * 10) == 0;
        int64_t r1k = ct_topk(bg, big, V, 1000);
        int good1k = r1k == 1000 && memcmp(bg, bw, sizeof(int64_t) * 1000) == 0;
        ok(good10 && good1k, "256,000 values with ties: k = 10 and k = 1000 equal the reference");
        free(big), free(bw), free(bg);
    }

    // logsumexp against log(sum exp(x)) in long double, without the max shift
    {
        int bad = 0, cases = 0;
        double worst = 0.0;
        for (size_t si = 1; si < sizeof sizes / sizeof *sizes; si++) {
            int64_t n = sizes[si];
            static const float scales[] = {1.0f, 30.0f, 1000.0f};
            for (int s = 0; s < 3; s++) {
                for (int64_t i = 0; i < n; i++) x[i] = scales[s] * ct_rand_uniform(&rng) + (s == 2 ? 500.0f : 0.0f);
                if (n > 3) x[n / 3] = -INFINITY;   // contributes nothing
                long double sum = 0.0L;
                for (int64_t i = 0; i < n; i++) sum += expl((long double)x[i]);
                double want_l = (double)logl(sum), got_l = ct_logsumexp(x, n);
                double d = fabs(got_l - want_l) / fmax(1.0, fabs(want_l));
                if (d > worst) worst = d;
                if (!(d <= 1e-13)) bad++;
                cases++;
            }
        }
        ok(bad == 0, "logsumexp: %d arrays (values up to 1500, one -inf) within 1e-13 relative of a long-double sum; "
           "worst %.3g", cases, worst);
        float one = 7.25f, special[] = {1.0f, NAN, 2.0f}, pinf[] = {1.0f, INFINITY}, minf[] = {-INFINITY, -INFINITY};
        ok(ct_logsumexp(&one, 1) == 7.25, "one value: itself");
        ok(isinf(ct_logsumexp(x, 0)) && ct_logsumexp(x, 0) < 0, "no values: -inf");
        ok(isinf(ct_logsumexp(minf, 2)) && ct_logsumexp(minf, 2) < 0, "only -inf: -inf");
        ok(isinf(ct_logsumexp(pinf, 2)) && ct_logsumexp(pinf, 2) > 0, "with +inf: +inf");
        ok(isnan(ct_logsumexp(special, 3)), "with NaN: NaN");
    }

    // softmax read-out: the same indices as ct_topk, p = exp(x - logsumexp), every p sums to 1
    {
        int64_t n = 1000, at[3] = {0, 17, 999};
        double *p = malloc(sizeof(double) * (size_t)n), p_at[3];
        for (int64_t i = 0; i < n; i++) x[i] = 8.0f * ct_rand_uniform(&rng);
        x[17] = x[3];   // a tie
        int64_t *top = malloc(sizeof(int64_t) * (size_t)n);
        int64_t r = ct_softmax_topk(top, p, p_at, x, n, n, at, 3);
        ct_topk(got, x, n, n);
        double lse = ct_logsumexp(x, n), worst = 0.0, total = 0.0;
        for (int64_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs(p[i] - exp((double)x[top[i]] - lse)) / p[i]);
            total += p[i];
        }
        for (int j = 0; j < 3; j++) worst = fmax(worst, fabs(p_at[j] - exp((double)x[at[j]] - lse)) / p_at[j]);
        ok(r == n && memcmp(top, got, sizeof(int64_t) * (size_t)n) == 0, "softmax_topk: ct_topk's indices");
        ok(worst < 1e-12 && fabs(total - 1.0) < 1e-12, "softmax_topk: p = exp(x - logsumexp) (worst %.3g relative), sum 1 - %.3g",
           worst, 1.0 - total);
        int64_t r3 = ct_softmax_topk(top, p, NULL, x, n, 3, NULL, 0);
        ok(r3 == 3 && top[0] == got[0] && top[2] == got[2] && p[0] >= p[1] && p[1] >= p[2], "softmax_topk: k = 3, no ids");
        float z[] = {1.0f, NAN};
        ct_softmax_topk(top, p, p_at, z, 2, 2, at, 1);
        ok(isnan(p[0]) && isnan(p[1]) && isnan(p_at[0]), "softmax_topk: a NaN logit gives NaN probabilities");
        free(p), free(top);
    }

    // a transcoder's TopK activation, worked out by hand: d_model 2, 5 features, k 3.
    // W_enc rows (1,0) (0,1) (1,1) (-1,0) (0,-1), b_enc -0.5 each; W_dec rows (1,0) (0,1) (1,1) (2,0)
    // (0,2), b_dec (0.1, -0.1). circuit-tracer's TopK keeps the 3 largest pre-activations of a row as
    // they are (torch.topk, then x * gate): negative kept values stay; ReLU-after-TopK would zero them.
    {
        float We[10] = {1, 0, 0, 1, 1, 1, -1, 0, 0, -1}, Wd[10] = {1, 0, 0, 1, 1, 1, 2, 0, 0, 2};
        float be[5] = {-0.5f, -0.5f, -0.5f, -0.5f, -0.5f}, bd[2] = {0.1f, -0.1f};
        ct_tc_layer layer = {.d_tc = 5, .W_enc = {(const uint8_t *)We, CT_DT_F32, 5, 2, 2, 1}, .b_enc = be, .W_dec = {(const uint8_t *)Wd, CT_DT_F32, 5, 2, 2, 1},
                             .n_out = 1, .b_dec = bd};
        ct_transcoders tc = {.kind = CT_TC_PLT, .n_layers = 1, .d_model = 2, .act = CT_TC_TOPK, .k = 3, .layers = &layer};
        float xs[8] = {-1, -2, 1, 0.5f, 0, 0, -2, 1};   // (4, 2)
        float want_pre[20] = {-1.5f, -2.5f, -3.5f, 0.5f, 1.5f, 0.5f,  0,     1,     -1.5f, -1,
                              -0.5f, -0.5f, -0.5f, -0.5f, -0.5f, -2.5f, 0.5f, -1.5f, 1.5f,  -1.5f};
        float want_act[20] = {-1.5f, 0,     0,     0.5f, 1.5f,   // kept 1.5, 0.5, -1.5
                              0.5f,  0,     1,     0,    0,      // kept 1, 0.5 and 0
                              -0.5f, -0.5f, -0.5f, 0,    0,      // five equal values: the three lowest indices
                              0,     0.5f,  -1.5f, 1.5f, 0};     // -1.5 twice at the 3rd place: feature 2 kept
        float pre[20], act[20], y[8] = {0};
        ct_err err = {0};
        ok(ct_tc_encode(&tc, 0, xs, 4, pre, act, &err) == CT_OK && memcmp(pre, want_pre, sizeof pre) == 0 &&
               memcmp(act, want_act, sizeof act) == 0,
           "TopK activation by hand: row 1 %g %g %g %g %g (want -1.5 0 0 0.5 1.5), row 4 %g %g %g %g %g", act[0], act[1], act[2],
           act[3], act[4], act[15], act[16], act[17], act[18], act[19]);
        float v[20];
        memcpy(v, want_pre, sizeof v);
        ok(ct_tc_activate(&tc, 0, v, 4, &err) == CT_OK && memcmp(v, want_act, sizeof v) == 0, "ct_tc_activate alone, in place");
        int neg = 0, active = 0;
        for (int i = 0; i < 20; i++) neg += act[i] < 0, active += act[i] != 0;
        ok(neg == 5 && active == 11, "11 active features (non-zero), 5 of them negative; a kept exact zero is not active");
        // reconstruction: -1.5 (1,0) + 0.5 (2,0) + 1.5 (0,2) + b_dec = (-0.4, 2.9); row 3: -0.5 ((1,0) + (0,1) + (1,1)) + b_dec
        ct_tc_reconstruct(&tc, xs, 4, y, &err);
        ok(fabsf(y[0] - -0.4f) < 1e-6f && fabsf(y[1] - 2.9f) < 1e-6f && fabsf(y[4] - -0.9f) < 1e-6f && fabsf(y[5] - -1.1f) < 1e-6f,
           "reconstruction by hand: (%g, %g) = (-0.4, 2.9), (%g, %g) = (-0.9, -1.1)", y[0], y[1], y[4], y[5]);
        tc.k = 5;   // k = F: every pre-activation kept as it is
        memcpy(v, want_pre, sizeof v);
        ok(ct_tc_activate(&tc, 0, v, 4, &err) == CT_OK && memcmp(v, want_pre, sizeof v) == 0, "k = d_transcoder: the identity");
    }

    free(x), free(got), free(want);
    return check_done();
}
