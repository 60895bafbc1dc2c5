// test_mat.c - matrices in their stored dtype (ct_mat): the bulk conversion ct_to_f32 against
// the scalar conversions on every BF16 and F16 bit pattern, at any alignment and length, fast and
// portable code; ct_mat_matmul against a double-precision product of the scalar-converted
// values for F32 (aligned and not), F16 and BF16, rows contiguous, row-strided, transposed and
// fully strided layouts, one and several positions, tiles of one row up to the whole matrix.
// Tolerance: the float32 rounding bound of a K-term dot product, K 2^-24 sum |w x| (plus one
// rounding of the bias), whatever order the terms are added in; a wrong element is off by
// O(|w x|). Bit for bit: F32 read in place is ct_matmul, and one position on a half-precision
// matrix sums in ct_matmul's order (the same bits as ct_matmul on the converted matrix), and so
// does each of 2..CT_MAT_FEW positions in ct_mat_matmul_few; tiles shared among 1, 2 or 3
// threads give the bits of one.
#include <errno.h>
#include <math.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/tensor.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

static uint64_t seed = 42;

static float frand(void) { return ct_rand_uniform(&seed); }

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// ----------------------------------------------------------------------------
// Conversion

// Every 16-bit pattern through ct_to_f32 against the scalar conversion, at byte offset `off`.
// quiet_nan: a NaN may come back with the quiet bit set (F16C quiets signalling NaNs).
static long convert_mismatches(ct_dtype dt, int off, int quiet_nan) {
    uint8_t *src = malloc(2 * 65536 + 8);
    float *out = malloc(sizeof(float) * 65536);
    for (uint32_t h = 0; h < 65536; h++) src[off + 2 * h] = (uint8_t)h, src[off + 2 * h + 1] = (uint8_t)(h >> 8);
    ct_to_f32(out, src + off, dt, 65536);
    long bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float want = dt == CT_DT_BF16 ? ct_bf16_to_f32((uint16_t)h) : ct_f16_to_f32((uint16_t)h);
        uint32_t a = bits(out[h]), b = bits(want);
        if (quiet_nan && want != want) a |= 0x400000u, b |= 0x400000u;
        bad += a != b;
    }
    free(src);
    free(out);
    return bad;
}

// Lengths 0..40 from every start in a random buffer: the tails past the vector blocks.
static long tail_mismatches(ct_dtype dt) {
    uint8_t src[2 * 64 + 1];
    float out[64];
    long bad = 0;
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(ct_rand_u64(&seed) >> 11);
    for (int s = 0; s < 8; s++)
        for (int n = 0; n <= 40; n++) {
            for (int i = 0; i < 64; i++) out[i] = -7.0f;
            ct_to_f32(out, src + s, dt, (size_t)n);
            for (int i = 0; i < n; i++) {
                uint16_t h = (uint16_t)(src[s + 2 * i] | src[s + 2 * i + 1] << 8);
                float want = dt == CT_DT_BF16 ? ct_bf16_to_f32(h) : ct_f16_to_f32(h);
                bad += bits(out[i]) != bits(want) && !(want != want && out[i] != out[i]);
            }
            for (int i = n; i < 64; i++) bad += out[i] != -7.0f;   // nothing written past n
        }
    return bad;
}

static void check_conversion(void) {
    for (int portable = 0; portable < 2; portable++) {
        ct_convert_portable(portable);
        const char *mode = portable ? "portable" : "fast";
        for (int off = 0; off < 2; off++) {
            long b = convert_mismatches(CT_DT_BF16, off, 0);
            ok(b == 0, "%s: all 65536 BF16 patterns at byte offset %d equal ct_bf16_to_f32 bit for bit (%ld differ)", mode,
               off, b);
            long f = convert_mismatches(CT_DT_F16, off, !portable);
            ok(f == 0, "%s: all 65536 F16 patterns at byte offset %d equal ct_f16_to_f32 bit for bit%s (%ld differ)", mode,
               off, portable ? "" : ", NaNs up to the quiet bit", f);
        }
        if (portable) {   // the portable code keeps signalling NaNs as they are
            long f = convert_mismatches(CT_DT_F16, 0, 0);
            ok(f == 0, "portable: F16 NaN payloads kept exactly (%ld differ)", f);
        }
        long tb = tail_mismatches(CT_DT_BF16), tf = tail_mismatches(CT_DT_F16);
        ok(tb == 0 && tf == 0, "%s: lengths 0..40 from 8 byte offsets convert exactly and write nothing past n "
           "(BF16 %ld, F16 %ld bad)", mode, tb, tf);
    }
    ct_convert_portable(0);
    // which code runs: F16C quiets a signalling NaN (0x7c01), the portable code keeps it
    int f16c = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned ra, rb, rc, rd;
    f16c = __builtin_cpu_supports("avx") && __get_cpuid(1, &ra, &rb, &rc, &rd) && (rc >> 29 & 1);
#endif
    uint8_t snan[16];
    float q[8];
    for (int i = 0; i < 8; i++) snan[2 * i] = 0x01, snan[2 * i + 1] = 0x7c;
    ct_to_f32(q, snan, CT_DT_F16, 8);
    ok(bits(q[0]) == (f16c ? 0x7fc02000u : 0x7f802000u), "this CPU %s F16C: the fast F16 code %s (%08x)",
       f16c ? "has" : "lacks", f16c ? "runs F16C (a signalling NaN comes out quiet)" : "is the portable code",
       (unsigned)bits(q[0]));
    double d[3] = {1.0 / 3.0, -1e300, 5e-324};
    float f32[3] = {1.5f, -0.0f, 3e38f}, out[3];
    ct_to_f32(out, (const uint8_t *)d, CT_DT_F64, 3);
    int good = out[0] == (float)(1.0 / 3.0) && isinf(out[1]) && out[1] < 0 && out[2] == 0.0f;
    ct_to_f32(out, (const uint8_t *)f32, CT_DT_F32, 3);
    good = good && memcmp(out, f32, sizeof f32) == 0;
    ok(good, "F64 rounds to float32, F32 is copied");
}

// ----------------------------------------------------------------------------
// Products

typedef enum { LAY_ROWS, LAY_ROWS_STRIDED, LAY_TRANSPOSED, LAY_STRIDED, N_LAYOUTS } layout;
static const char *layout_names[N_LAYOUTS] = {"rows contiguous", "rows strided", "transposed view", "both strided"};

// A matrix (N, K) of random values in dtype dt, laid out as asked, in a byte buffer at byte
// offset off (the caller frees *buf); vals (N, K) gets the values it holds, as the scalar
// conversions read them.
static ct_mat make_mat(uint8_t **buf, float *vals, ct_dtype dt, layout lay, int N, int K, int off) {
    int64_t rs, cs;
    switch (lay) {
    case LAY_ROWS: rs = K, cs = 1; break;
    case LAY_ROWS_STRIDED: rs = K + 3, cs = 1; break;
    case LAY_TRANSPOSED: rs = 1, cs = N + 2; break;
    default: rs = 2, cs = 2 * N + 1; break;
    }
    size_t es = ct_dtype_size(dt), n = (size_t)((N - 1) * rs + (K - 1) * cs + 1);
    *buf = calloc(n * es + 8, 1);
    uint8_t *p = *buf + off;
    for (int r = 0; r < N; r++)
        for (int c = 0; c < K; c++) {
            float v = frand();
            uint8_t *e = p + (size_t)(r * rs + c * cs) * es;
            if (dt == CT_DT_F32) {
                memcpy(e, &v, 4);
            } else {
                uint16_t h = dt == CT_DT_BF16 ? ct_f32_to_bf16(v) : ct_f32_to_f16(v);
                e[0] = (uint8_t)h, e[1] = (uint8_t)(h >> 8);
                v = dt == CT_DT_BF16 ? ct_bf16_to_f32(h) : ct_f16_to_f32(h);
            }
            vals[(size_t)r * K + c] = v;
        }
    return (ct_mat){p, dt, N, K, rs, cs};
}

// out (T, N) against sum_k x[t,k] vals[n,k] (+ b[n]) in double: the count of entries off by more
// than K 2^-24 sum |x w| + 2^-24 |b| (+ 1e-30), and the worst ratio of error to that bound.
static int count_off(const float *out, const float *x, const float *vals, const float *b, int T, int N, int K, double *worst) {
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double s = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)x[(size_t)t * K + k] * vals[(size_t)n * K + k];
                s += p, mag += fabs(p);
            }
            if (b) s += b[n], mag += fabs(b[n]) / K;
            double bound = K * 0x1p-24 * mag + 1e-30, e = fabs(out[(size_t)t * N + n] - s);
            if (e / bound > *worst) *worst = e / bound;
            bad += !(e <= bound);
        }
    return bad;
}

static void check_products(void) {
    const ct_dtype dts[4] = {CT_DT_F32, CT_DT_F32, CT_DT_F16, CT_DT_BF16};
    const int offs[4] = {0, 2, 0, 1};   // F32 at an address not 4-byte aligned: converted, not in place
    const int Ts[3] = {1, 3, 40}, Ks[2] = {37, 1100}, N = 29;
    for (int d = 0; d < 4; d++)
        for (int lay = 0; lay < N_LAYOUTS; lay++)
            for (int ki = 0; ki < 2; ki++) {
                int K = Ks[ki], bad = 0, cases = 0;
                double worst = 0;
                float *vals = malloc(sizeof(float) * (size_t)N * K), *x = malloc(sizeof(float) * 40 * (size_t)K);
                float *out = malloc(sizeof(float) * 40 * (size_t)N), b[29];
                uint8_t *buf;
                ct_mat W = make_mat(&buf, vals, dts[d], (layout)lay, N, K, offs[d]);
                for (int i = 0; i < 40 * K; i++) x[i] = frand();
                for (int i = 0; i < N; i++) b[i] = frand();
                size_t need = ct_mat_tile_floats(&W);
                // tiles of one row, of 5 rows and a partial last one, and of the whole matrix
                size_t tiles[3] = {need ? (size_t)K : 0, need ? (size_t)K * 5 + 3 : 0, need};
                float *tile = need ? malloc(sizeof(float) * need) : NULL;
                for (int ti = 0; ti < 3; ti++)
                    for (int t = 0; t < 3; t++)
                        for (int withb = 0; withb < 2; withb++) {
                            for (int i = 0; i < 40 * N; i++) out[i] = NAN;
                            ct_mat_matmul(out, x, &W, withb ? b : NULL, Ts[t], tile, tiles[ti]);
                            bad += count_off(out, x, vals, withb ? b : NULL, Ts[t], N, K, &worst);
                            cases++;
                        }
                ok(bad == 0, "%s%s, %s, (29, %d): %d products (T 1, 3, 40; tiles of 1, 5 and 29 rows; with and without "
                   "bias) within K 2^-24 sum|w x| of the double-precision product (worst %.3f of the bound)",
                   ct_dtype_name(dts[d]), offs[d] % 4 && dts[d] == CT_DT_F32 ? " unaligned" : "", layout_names[lay], K,
                   cases, worst);
                free(vals), free(x), free(out), free(buf), free(tile);
            }
}

// Bit for bit: F32 in place is ct_matmul; one position on F16/BF16 is ct_matmul on the
// converted matrix, for rows of several conversion pieces and a tail.
static void check_bits(void) {
    enum { N = 23, K = 1100, T = 5 };
    float *vals = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * T * K), b[N];
    float a[T * N], c[T * N];
    for (int i = 0; i < T * K; i++) x[i] = frand();
    for (int i = 0; i < N; i++) b[i] = frand();
    uint8_t *buf;
    ct_mat W = make_mat(&buf, vals, CT_DT_F32, LAY_ROWS, N, K, 0);
    int same = ct_mat_tile_floats(&W) == 0;
    for (int t = 1; t <= T; t += T - 1) {
        ct_mat_matmul(a, x, &W, b, t, NULL, 0);
        ct_matmul(c, x, vals, b, t, K, N);
        same = same && memcmp(a, c, sizeof(float) * (size_t)t * N) == 0;
    }
    free(buf);
    ok(same, "F32 rows contiguous and aligned: read in place (no tile), ct_matmul's bits for 1 and %d positions", T);
    W = make_mat(&buf, vals, CT_DT_F32, LAY_ROWS_STRIDED, N, K, 0);
    ct_mat_matmul(a, x, &W, b, 1, NULL, 0);
    ct_matmul(c, x, vals, b, 1, K, N);
    ok(memcmp(a, c, sizeof(float) * N) == 0, "F32 rows strided, one position: in place, ct_matmul's bits");
    free(buf);
    const ct_dtype all[3] = {CT_DT_F32, CT_DT_F16, CT_DT_BF16};
    for (int d = 0; d < 3; d++) {   // columns contiguous (a transposed view)
        W = make_mat(&buf, vals, all[d], LAY_TRANSPOSED, N, K, 0);
        ct_mat_matmul(a, x, &W, b, 1, NULL, 0);
        ct_matmul(c, x, vals, b, 1, K, N);
        ok(memcmp(a, c, sizeof(float) * N) == 0, "%s transposed view, one position: read row by row of the stored "
           "transpose, ct_matmul's bits on a row-major copy", ct_dtype_name(all[d]));
        free(buf);
    }
    const ct_dtype half[2] = {CT_DT_F16, CT_DT_BF16};
    for (int portable = 0; portable < 2; portable++)
        for (int h = 0; h < 2; h++) {
            ct_convert_portable(portable);
            W = make_mat(&buf, vals, half[h], LAY_ROWS, N, K, h);
            ct_mat_matmul(a, x, &W, b, 1, NULL, 0);   // one position needs no tile
            ct_matmul(c, x, vals, b, 1, K, N);
            ok(memcmp(a, c, sizeof(float) * N) == 0 && ct_mat_tile_floats(&W) == (size_t)N * K,
               "%s, one position, %s: each row converted as it is read gives ct_matmul's bits on the converted "
               "matrix; several positions need a tile, here the whole (%d, %d) matrix", ct_dtype_name(half[h]),
               portable ? "portable code (pieces on the stack)" : "fast code (in registers where the CPU can)", N, K);
            free(buf);
        }
    ct_convert_portable(0);
    ct_mat big = {NULL, CT_DT_BF16, 4, CT_MAT_TILE + 5, CT_MAT_TILE + 5, 1};
    ct_mat wide = {NULL, CT_DT_BF16, 100000, 1000, 1000, 1};   // 524 rows a tile: 512, a multiple of 16
    ct_mat_tile_limit(1);
    size_t small = ct_mat_tile_floats(&W);
    ct_mat_tile_limit(0);
    ok(ct_mat_tile_floats(&big) == CT_MAT_TILE + 5 && small == K && ct_mat_tile_floats(&wide) == 512 * 1000,
       "a tile holds at least one row (%zu floats for rows of %zu), else whole blocks of 16 rows (%zu floats for rows "
       "of 1000); ct_mat_tile_limit(1) gives one-row tiles (%zu)", ct_mat_tile_floats(&big), (size_t)CT_MAT_TILE + 5,
       ct_mat_tile_floats(&wide), small);
    int n0 = ct_get_threads();
    ct_set_threads(3);
    size_t three = ct_mat_scratch_floats(&wide);
    ct_set_threads(n0);
    ct_mat square = {NULL, CT_DT_BF16, 500, 1000, 1000, 1};   // one tile
    ok(three == 3 * ct_mat_tile_floats(&wide) && ct_mat_scratch_floats(&square) == 500 * 1000,
       "scratch: a tile for each worker (3 threads, 196 tiles: 3 tiles), no more workers than tiles (1 tile: 1)");
    free(vals), free(x);
}

// ct_mat_matmul_few: 2 .. CT_MAT_FEW positions on BF16 / F16 rows where the CPU converts in
// registers, every position's outputs the bits of that position alone (ct_mat_matmul's
// one-position path, ct_matmul's order), on 1, 2 and 3 threads (2103 x 1100 is over
// CT_MATVEC_SHARED: rows split), rows contiguous and strided, data at an odd address; one
// position and CT_MAT_FEW + 1 refused (ct_mat_matmul's tiles then, within the rounding bound).
static void check_few(void) {
    enum { N = 2103, K = 1100, TMAX = CT_MAT_FEW + 1 };
    float *vals = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * TMAX * K), b[N];
    float *a = malloc(sizeof(float) * TMAX * N), *one = malloc(sizeof(float) * TMAX * N);
    for (int i = 0; i < TMAX * K; i++) x[i] = frand();
    for (int i = 0; i < N; i++) b[i] = frand();
    int avx2 = 0, f16c = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned ra, rb, rc, rd;
    avx2 = __builtin_cpu_supports("avx2");
    f16c = __builtin_cpu_supports("avx") && __get_cpuid(1, &ra, &rb, &rc, &rd) && (rc >> 29 & 1);
#endif
    const ct_dtype half[2] = {CT_DT_BF16, CT_DT_F16};
    const int Ts[6] = {2, 5, 8, 9, 11, CT_MAT_FEW};
    int n0 = ct_get_threads();
    for (int h = 0; h < 2; h++) {
        int fast = avx2 && (half[h] == CT_DT_BF16 || f16c), same = 1, cases = 0, bad = 0;
        double worst = 0;
        for (int lay = 0; lay < 2; lay++) {   // LAY_ROWS, LAY_ROWS_STRIDED
            uint8_t *buf;
            ct_mat W = make_mat(&buf, vals, half[h], (layout)lay, N, K, 1);
            size_t tn = ct_mat_scratch_floats(&W);
            float *tile = malloc(sizeof(float) * tn);
            ct_set_threads(1);
            for (int t = 0; t < TMAX; t++) ct_mat_matmul(one + (size_t)t * N, x + (size_t)t * K, &W, b, 1, NULL, 0);
            for (int th = 1; th <= 3; th++) {
                ct_set_threads(th);
                for (int ti = 0; ti < 6; ti++) {
                    int T = Ts[ti];
                    for (int i = 0; i < T * N; i++) a[i] = NAN;
                    int done = ct_mat_matmul_few(a, x, &W, b, T);
                    if (!done) ct_mat_matmul(a, x, &W, b, T, tile, tn);
                    same = same && done == fast && memcmp(a, one, sizeof(float) * (size_t)T * N) == 0;
                    bad += count_off(a, x, vals, b, T, N, K, &worst);
                    cases++;
                }
                for (int i = 0; i < TMAX * N; i++) a[i] = NAN;
                same = same && !ct_mat_matmul_few(a, x, &W, b, TMAX) && !ct_mat_matmul_few(a, x, &W, b, 1);
                ct_mat_matmul(a, x, &W, b, TMAX, tile, tn);
                bad += count_off(a, x, vals, b, TMAX, N, K, &worst);
            }
            free(tile), free(buf);
        }
        ct_set_threads(n0);
        ok(bad == 0 && (!fast || same),
           "%s rows, %d products of 2..%d positions (rows contiguous and strided, 1-3 threads)%s; %d positions in "
           "tiles; all within the rounding bound (worst %.3f)", ct_dtype_name(half[h]), cases, CT_MAT_FEW,
           fast ? ": each position the bits of its own one-position product" : " (this CPU: refused, tiles)", TMAX, worst);
    }
    free(vals), free(x), free(a), free(one);
}

// Tiles shared among workers: the same bits on 1, 2 and 3 threads, and with scratch for fewer
// workers than threads, for both stored layouts and half-precision and unaligned F32 data. Each
// tile's product (64, 128, 512) is large enough for ct_sgemm to use the BLAS's threads.
static void check_threads(void) {
    enum { N = 600, K = 512, T = 64 };
    float *vals = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * T * K);
    float *a = malloc(sizeof(float) * T * N), *c = malloc(sizeof(float) * T * N);
    for (int i = 0; i < T * K; i++) x[i] = frand();
    const ct_dtype dts[3] = {CT_DT_BF16, CT_DT_F16, CT_DT_F32};
    int n0 = ct_get_threads(), same = 1, cases = 0;
    ct_mat_tile_limit(128 * K);   // 128 rows a tile: 5 tiles, the last partial
    for (int d = 0; d < 3; d++)
        for (int lay = 0; lay < N_LAYOUTS; lay += 2) {   // rows contiguous, transposed view
            uint8_t *buf;
            ct_mat W = make_mat(&buf, vals, dts[d], (layout)lay, N, K, dts[d] == CT_DT_F32 ? 2 : 0);
            size_t one = ct_mat_tile_floats(&W);
            float *tile = malloc(sizeof(float) * 3 * one);
            ct_set_threads(1);
            ct_mat_matmul(c, x, &W, NULL, T, tile, one);
            for (int th = 1; th <= 3; th++)
                for (int room = 1; room <= th; room++) {
                    ct_set_threads(th);
                    for (int i = 0; i < T * N; i++) a[i] = NAN;
                    ct_mat_matmul(a, x, &W, NULL, T, tile, room * one);
                    same = same && memcmp(a, c, sizeof(float) * T * N) == 0;
                    cases++;
                }
            free(tile), free(buf);
        }
    ct_mat_tile_limit(0);
    ct_set_threads(n0);
    ok(same, "%d products (BF16, F16, unaligned F32; rows contiguous and transposed; 5 tiles on 1, 2 and 3 threads, "
       "scratch for 1 to 3 workers): the bits of one thread", cases);
    free(vals), free(x), free(a), free(c);

    // one position over CT_MATVEC_SHARED bytes: outputs split among 2 and 3 threads (rows, and
    // column blocks of a transposed view with a partial last block), ct_matmul's bits on the
    // converted matrix; N not a multiple of the threads, K of 8
    enum { N1 = 2103, K1 = 1100 };
    vals = malloc(sizeof(float) * N1 * K1), x = malloc(sizeof(float) * K1);
    a = malloc(sizeof(float) * N1), c = malloc(sizeof(float) * N1);
    for (int i = 0; i < K1; i++) x[i] = frand();
    const ct_dtype one_pos[4] = {CT_DT_BF16, CT_DT_F16, CT_DT_F32, CT_DT_F32};
    same = 1, cases = 0;
    int big = 1;
    for (int d = 0; d < 4; d++)
        for (int lay = 0; lay < N_LAYOUTS; lay += 2) {
            uint8_t *buf;
            ct_mat W = make_mat(&buf, vals, one_pos[d], (layout)lay, N1, K1, d == 3 ? 2 : 0);   // the last: unaligned
            big = big && (size_t)N1 * K1 * ct_dtype_size(one_pos[d]) >= CT_MATVEC_SHARED;
            ct_matmul(c, x, vals, NULL, 1, K1, N1);
            for (int th = 1; th <= 3; th++) {
                ct_set_threads(th);
                for (int i = 0; i < N1; i++) a[i] = NAN;
                ct_mat_matmul(a, x, &W, NULL, 1, NULL, 0);
                same = same && memcmp(a, c, sizeof(float) * N1) == 0;
                cases++;
            }
            free(buf);
        }
    ct_set_threads(n0);
    ok(same && big, "%d one-position products of (%d, %d) (BF16, F16, F32, unaligned F32; rows contiguous and "
       "transposed; %s CT_MATVEC_SHARED) on 1, 2 and 3 threads: ct_matmul's bits", cases, N1, K1,
       big ? "all over" : "NOT all over");
    free(vals), free(x), free(a), free(c);
}

// Views: the transpose and a column block address the same elements.
static void check_views(void) {
    float a[12];
    for (int i = 0; i < 12; i++) a[i] = (float)i;
    ct_mat m = ct_mat_f32(a, 3, 4), t = ct_mat_t(&m), c = ct_mat_cols(&m, 1, 2), tc = ct_mat_cols(&t, 1, 2);
    float r[4], rt[3], rc[2], rtc[2];
    ct_mat_row(&m, 2, r);
    ct_mat_row(&t, 3, rt);
    ct_mat_row(&c, 1, rc);
    ct_mat_row(&tc, 2, rtc);
    ok(r[0] == 8 && r[3] == 11 && t.rows == 4 && t.cols == 3 && rt[0] == 3 && rt[1] == 7 && rt[2] == 11 && c.cols == 2 &&
       rc[0] == 5 && rc[1] == 6 && rtc[0] == 6 && rtc[1] == 10,
       "views: row 2 of (3, 4), row 3 of its transpose, columns 1..2 of row 1, of the transpose's row 2");
}

// Threads that cannot start (a seccomp filter refusing clone and clone3, as a sandbox or a
// thread limit would): ct_parallel runs their share on the calling thread, and a product shared
// among 2 threads, in tiles and for one position, gives the bits it gives on one. In a child
// process, which leaves with _exit (no exit handler may need a thread).
static void check_no_threads(void) {
    enum { N = 600, K = 512, T = 16 };
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        float *vals = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * T * K);
        float *a = malloc(sizeof(float) * T * N), *c = malloc(sizeof(float) * T * N);
        for (int i = 0; i < T * K; i++) x[i] = frand();
        uint8_t *buf;
        ct_mat W = make_mat(&buf, vals, CT_DT_BF16, LAY_ROWS, N, K, 0);
        ct_mat_tile_limit(128 * K);   // 5 tiles
        size_t one = ct_mat_tile_floats(&W);
        float *tile = malloc(sizeof(float) * 2 * one);
        ct_set_threads(1);
        ct_mat_matmul(c, x, &W, NULL, T, tile, one);
        scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
        int rc = !f || seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 0) ||
                 seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) || seccomp_load(f);
        if (rc) _exit(3);
        ct_set_threads(2);
        for (int i = 0; i < T * N; i++) a[i] = NAN;
        ct_mat_matmul(a, x, &W, NULL, T, tile, 2 * one);
        int same = memcmp(a, c, sizeof(float) * T * N) == 0;
        // one position over CT_MATVEC_SHARED bytes: each thread's range of outputs
        enum { N1 = 2103, K1 = 1100 };
        float *v1 = malloc(sizeof(float) * N1 * K1), *x1 = malloc(sizeof(float) * K1), r1[N1], r2[N1];
        for (int i = 0; i < K1; i++) x1[i] = frand();
        uint8_t *buf1;
        ct_mat W1 = make_mat(&buf1, v1, CT_DT_F32, LAY_ROWS, N1, K1, 0);
        ct_matmul(r1, x1, v1, NULL, 1, K1, N1);
        ct_mat_matmul(r2, x1, &W1, NULL, 1, NULL, 0);
        same = same && memcmp(r1, r2, sizeof r1) == 0;
        _exit(same ? 0 : 1);
    }
    int status = 0;
    int waited = pid > 0 && waitpid(pid, &status, 0) == pid;
    ok(waited && WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "no thread can start (clone refused): products on 2 threads run on the caller, the bits of one thread "
       "(child exit status %d)", waited && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int main(void) {
    check_conversion();
    check_views();
    check_products();
    check_bits();
    check_few();
    check_threads();
    check_no_threads();
    return check_done();
}
