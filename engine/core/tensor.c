// tensor.c - tensor storage, views and the float32 kernels on OpenBLAS.
#include "core/tensor.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

// ----------------------------------------------------------------------------
// Counted allocation

static _Atomic size_t g_mem_bytes;   // statistics only; no state a script depends on

size_t ct_mem_bytes(void) { return atomic_load(&g_mem_bytes); }

void *ct_alloc(size_t nbytes) {
    void *p = malloc(nbytes ? nbytes : 1);
    if (p) atomic_fetch_add(&g_mem_bytes, nbytes);
    return p;
}

void *ct_calloc(size_t nbytes) {
    void *p = calloc(1, nbytes ? nbytes : 1);
    if (p) atomic_fetch_add(&g_mem_bytes, nbytes);
    ct_advise_huge(p, nbytes);
    return p;
}

void ct_advise_huge(void *p, size_t nbytes) {
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (!p || nbytes < 4 * huge) return;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + nbytes) & ~(huge - 1);
    (void)madvise((void *)a, e - a, MADV_HUGEPAGE);   // a hint: refused or unsupported, nothing changes
}

void ct_dealloc(void *p, size_t nbytes) {
    if (!p) return;
    free(p);
    atomic_fetch_sub(&g_mem_bytes, nbytes);
}

// ----------------------------------------------------------------------------
// Tensors

static int shape_numel(int ndim, const int64_t *shape, size_t *out) {
    size_t n = 1;
    if (ndim < 0 || ndim > CT_MAX_DIMS) return 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return 0;
        if (shape[i] && n > SIZE_MAX / 4 / (size_t)shape[i]) return 0;
        n *= (size_t)shape[i];
    }
    *out = n;
    return 1;
}

ct_tensor *ct_tensor_new(int ndim, const int64_t *shape) {
    size_t n;
    if (!shape_numel(ndim, shape, &n)) return NULL;
    ct_storage *s = malloc(sizeof *s);
    ct_tensor *t = malloc(sizeof *t);
    float *data = ct_calloc(n * sizeof(float));
    if (!s || !t || !data) {
        free(s);
        free(t);
        ct_dealloc(data, n * sizeof(float));
        return NULL;
    }
    *s = (ct_storage){.data = data, .n = n, .refcount = 1, .owned = 1};
    memset(t, 0, sizeof *t);
    t->storage = s;
    t->ndim = ndim;
    t->refcount = 1;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->stride[i] = stride;
        stride *= shape[i];
    }
    return t;
}

ct_tensor *ct_tensor_from(const float *data, int ndim, const int64_t *shape) {
    ct_tensor *t = ct_tensor_new(ndim, shape);
    if (t && t->storage->n) memcpy(t->storage->data, data, t->storage->n * sizeof(float));
    return t;
}

void ct_tensor_retain(ct_tensor *t) {
    if (t) t->refcount++;
}

static void storage_free(ct_storage *s) {
    if (!s || --s->refcount > 0) return;
    if (s->owned) ct_dealloc(s->data, s->n * sizeof(float));
    free(s);
}

void ct_tensor_free(ct_tensor *t) {
    if (!t || --t->refcount > 0) return;
    storage_free(t->storage);
    free(t);
}

int64_t ct_tensor_numel(const ct_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int ct_tensor_is_contiguous(const ct_tensor *t) {
    int64_t stride = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != stride) return 0;
        stride *= t->shape[i];
    }
    return 1;
}

float *ct_tensor_data(const ct_tensor *t) { return t->storage->data + t->offset; }

ct_tensor *ct_tensor_contiguous(ct_tensor *t) {
    if (ct_tensor_is_contiguous(t)) {
        ct_tensor_retain(t);
        return t;
    }
    ct_tensor *c = ct_tensor_new(t->ndim, t->shape);
    if (!c) return NULL;
    int64_t n = ct_tensor_numel(t), idx[CT_MAX_DIMS] = {0};
    const float *src = ct_tensor_data(t);
    float *dst = ct_tensor_data(c);
    for (int64_t k = 0; k < n; k++) {
        int64_t off = 0;
        for (int d = 0; d < t->ndim; d++) off += idx[d] * t->stride[d];
        dst[k] = src[off];
        for (int d = t->ndim - 1; d >= 0; d--) {   // odometer increment
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return c;
}

static ct_tensor *view_of(ct_tensor *t) {
    ct_tensor *v = malloc(sizeof *v);
    if (!v) return NULL;
    *v = *t;
    v->refcount = 1;
    v->storage->refcount++;
    return v;
}

ct_status ct_tensor_slice(ct_tensor **out, ct_tensor *t, int dim, int64_t start, int64_t stop,
                          int64_t step, ct_err *err) {
    if (dim < 0 || dim >= t->ndim)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "dimension %d out of range for a %d-d tensor",
                       dim, t->ndim);
    if (step < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "slice step must be >= 1, got %lld",
                                 (long long)step);
    if (start < 0 || stop > t->shape[dim] || start > stop)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE,
                       "slice [%lld, %lld) out of range for dimension %d of size %lld",
                       (long long)start, (long long)stop, dim, (long long)t->shape[dim]);
    ct_tensor *v = view_of(t);
    if (!v) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory making a view");
    v->offset += (size_t)(start * t->stride[dim]);
    v->shape[dim] = (stop - start + step - 1) / step;
    v->stride[dim] = t->stride[dim] * step;
    *out = v;
    return CT_OK;
}

ct_status ct_tensor_select(ct_tensor **out, ct_tensor *t, int dim, int64_t i, ct_err *err) {
    if (dim < 0 || dim >= t->ndim)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "dimension %d out of range for a %d-d tensor",
                       dim, t->ndim);
    if (i < 0 || i >= t->shape[dim])
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "index %lld out of range for dimension %d of size %lld",
                       (long long)i, dim, (long long)t->shape[dim]);
    ct_tensor *v = view_of(t);
    if (!v) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory making a view");
    v->offset += (size_t)(i * t->stride[dim]);
    for (int d = dim; d < t->ndim - 1; d++) {
        v->shape[d] = t->shape[d + 1];
        v->stride[d] = t->stride[d + 1];
    }
    v->ndim--;
    *out = v;
    return CT_OK;
}

// ----------------------------------------------------------------------------
// Kernels

float ct_rand_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);   // splitmix64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (float)((double)(z >> 40) / 8388608.0 - 1.0);
}

uint64_t ct_rand_u64(uint64_t *s) {   // xorshift64*
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

const char *ct_blas_better_core(void) {
    if (getenv("OPENBLAS_CORETYPE")) return NULL;
    const char *core = openblas_get_corename();
    if (!core || (strcasecmp(core, "Prescott") != 0 && strcasecmp(core, "Core2") != 0 && strcasecmp(core, "Nehalem") != 0))
        return NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

const char *ct_blas_core(void) {
    const char *core = openblas_get_corename();
    return core ? core : "unknown";
}

static int g_threads;   // the thread count large products use (0: not yet read from the library)

static int large_threads(void) {
    if (!g_threads) g_threads = openblas_get_num_threads();   // honours OPENBLAS_NUM_THREADS
    return g_threads;
}

void ct_sgemm_here(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
                ldb, beta, C, ldc);
}

void ct_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc) {
    int small = (double)M * N * K < (double)(1 << 22), large = large_threads();   // read before any change
    int want = small ? 1 : large;
    if (openblas_get_num_threads() != want) openblas_set_num_threads(want);
    ct_sgemm_here(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

typedef struct {
    void (*fn)(void *arg, int w, int n_workers);
    void *arg;
    int w, n;
} worker;

static void *run_worker(void *p) {
    worker *k = p;
    k->fn(k->arg, k->w, k->n);
    return NULL;
}

// The BLAS's products on the calling thread only (ct_sgemm_here).
static void blas_one_thread(void) {
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

void ct_parallel(int max_workers, void (*fn)(void *arg, int w, int n_workers), void *arg) {
    int n = large_threads();
    if (n > max_workers) n = max_workers;
    if (n > CT_MAX_WORKERS) n = CT_MAX_WORKERS;
    if (n < 1) n = 1;
    blas_one_thread();   // each worker's products on its own thread
    worker k[CT_MAX_WORKERS];
    pthread_t th[CT_MAX_WORKERS];
    int started = 0;
    for (int w = 1; w < n; w++) {
        k[w] = (worker){fn, arg, w, n};
        if (pthread_create(&th[w], NULL, run_worker, &k[w]) != 0) break;
        started = w;
    }
    // a worker that could not start: its share runs here, after the caller's own
    fn(arg, 0, n);
    for (int w = started + 1; w < n; w++) fn(arg, w, n);
    for (int w = 1; w <= started; w++) pthread_join(th[w], NULL);
}

void ct_strmm_lower_t_here(int M, int N, const float *A, int lda, float *B, int ldb) {
    cblas_strmm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, M, N, 1.0f, A, lda, B, ldb);
}

void ct_matmul(float *out, const float *x, const float *w, const float *b, int T, int n_in,
               int n_out) {
    if (T == 1) {
        // out (n_out,) = w (n_out, n_in) @ x (n_in,): a plain loop beats a BLAS call on the
        // small matrices generation meets, and gives the same bits for any thread count.
        // Eight partial sums (fixed order, so results do not depend on the machine) let the
        // compiler use vector instructions.
        for (int o = 0; o < n_out; o++) {
            const float *row = w + (size_t)o * n_in;
            float acc[8] = {0};
            int i = 0;
            for (; i + 8 <= n_in; i += 8)
                for (int k = 0; k < 8; k++) acc[k] += row[i + k] * x[i + k];
            float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; i < n_in; i++) s += row[i] * x[i];
            out[o] = s;
        }
    } else {
        ct_sgemm(0, 1, T, n_out, n_in, 1.0f, x, n_in, w, n_in, 0.0f, out, n_out);
    }
    if (b)
        for (int t = 0; t < T; t++)
            for (int o = 0; o < n_out; o++) out[(size_t)t * n_out + o] += b[o];
}

float ct_rmsnorm(float *out, const float *x, const float *g, float gain_offset, float eps, int n) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float denom = sqrtf((float)(ss / n) + eps);
    float inv = 1.0f / denom;
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * (g ? g[i] + gain_offset : 1.0f);
    return denom;
}

float ct_layernorm(float *out, const float *x, const float *g, const float *b, float eps, int n) {
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    float denom = sqrtf((float)var + eps);
    for (int i = 0; i < n; i++) {
        float v = (float)(x[i] - mean) / denom;
        out[i] = v * (g ? g[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
    return denom;
}

void ct_softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

float ct_gelu_tanh(float x) {
    const float c = 0.7978845608028654f;   // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

float ct_silu(float x) { return x / (1.0f + expf(-x)); }

// The maximum of x (n,) and sum exp(x - max) (*sum, double). When x holds a NaN: NaN for
// both; when the maximum is infinite (+inf, or -inf: n = 0 or every x is -inf): the maximum,
// and *sum NaN.
static double max_sum_exp(const float *x, int64_t n, double *sum) {
    float mx = -INFINITY;
    int nan = 0;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] > mx) mx = x[i];
        else if (x[i] != x[i]) nan = 1;
    }
    *sum = NAN;
    if (nan) return NAN;
    if (isinf(mx)) return mx;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += exp((double)x[i] - mx);
    *sum = s;
    return mx;
}

double ct_logsumexp(const float *x, int64_t n) {
    double sum, mx = max_sum_exp(x, n, &sum);
    return isfinite(mx) ? mx + log(sum) : mx;
}

void ct_set_threads(int n) {
    if (n > 0) g_threads = n;
}

int ct_get_threads(void) { return large_threads(); }

// ----------------------------------------------------------------------------
// Top-k selection

// Entry a of x ranks before entry b: the larger value, a number before NaN, else the lower index.
static inline int ranks_before(const float *x, int64_t a, int64_t b) {
    float va = x[a], vb = x[b];
    if (va > vb) return 1;
    if (va < vb) return 0;
    int na = va != va, nb = vb != vb;   // equal, or at least one NaN
    if (na != nb) return nb;
    return a < b;
}

// Restores the heap below h[i] (m entries): every parent ranks after its children, so h[0]
// holds the lowest-ranked entry kept.
static void sift_down(int64_t *h, const float *x, int64_t i, int64_t m) {
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= m) return;
        if (c + 1 < m && ranks_before(x, h[c], h[c + 1])) c++;   // the lower-ranked child
        if (!ranks_before(x, h[i], h[c])) return;
        int64_t t = h[i];
        h[i] = h[c], h[c] = t;
        i = c;
    }
}

int64_t ct_topk(int64_t *idx, const float *x, int64_t n, int64_t k) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    for (int64_t i = 0; i < k; i++) idx[i] = i;
    for (int64_t i = k / 2; i-- > 0;) sift_down(idx, x, i, k);
    float low = x[idx[0]];   // the lowest-ranked value kept
    for (int64_t i = k; i < n; i++) {
        // i has a higher index than every entry kept, so it enters only by a strictly larger
        // value, or as a number over a NaN
        float v = x[i];
        if (v > low || (low != low && v == v)) {
            idx[0] = i;
            sift_down(idx, x, 0, k);
            low = x[idx[0]];
        }
    }
    for (int64_t m = k - 1; m > 0; m--) {   // heap sort: the lowest-ranked entry to the end
        int64_t t = idx[0];
        idx[0] = idx[m], idx[m] = t;
        sift_down(idx, x, 0, m);
    }
    return k;
}

int64_t ct_softmax_topk(int64_t *idx, double *p_top, double *p_at, const float *x, int64_t n, int64_t k,
                        const int64_t *at, int64_t n_at) {
    k = ct_topk(idx, x, n, k);
    double sum, mx = max_sum_exp(x, n, &sum);
    for (int64_t i = 0; i < k; i++) p_top[i] = exp((double)x[idx[i]] - mx) / sum;
    for (int64_t i = 0; i < n_at; i++) p_at[i] = exp((double)x[at[i]] - mx) / sum;
    return k;
}

// ----------------------------------------------------------------------------
// Element types

static const struct { const char *name; size_t size; } dtypes[CT_DT_COUNT] = {
    [CT_DT_F64] = {"F64", 8},  [CT_DT_F32] = {"F32", 4},   [CT_DT_F16] = {"F16", 2},
    [CT_DT_BF16] = {"BF16", 2}, [CT_DT_I64] = {"I64", 8},  [CT_DT_I32] = {"I32", 4},
    [CT_DT_I16] = {"I16", 2},  [CT_DT_I8] = {"I8", 1},     [CT_DT_U64] = {"U64", 8},
    [CT_DT_U32] = {"U32", 4},  [CT_DT_U16] = {"U16", 2},   [CT_DT_U8] = {"U8", 1},
    [CT_DT_BOOL] = {"BOOL", 1}, [CT_DT_F8_E4M3] = {"F8_E4M3", 1}, [CT_DT_F8_E5M2] = {"F8_E5M2", 1},
};

const char *ct_dtype_name(ct_dtype dt) { return dt < CT_DT_COUNT ? dtypes[dt].name : "?"; }
size_t ct_dtype_size(ct_dtype dt) { return dt < CT_DT_COUNT ? dtypes[dt].size : 0; }

float ct_bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float ct_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {   // subnormal: normalise
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);   // inf or NaN (payload kept)
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t ct_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

uint16_t ct_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);      // NaN
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);     // overflow (rounds up) -> inf
    if (a < 0x38800000u) {                                      // subnormal or zero in f16
        if (a < 0x33000000u) return (uint16_t)sign;             // below half the smallest
        // value = man * 2^(e - 150); in units of the f16 subnormal 2^-24: man >> (126 - e)
        uint32_t man = (a & 0x7fffff) | 0x800000;
        int s = 126 - (int)(a >> 23);   // 14..24
        uint32_t r = man >> s, rem = man & ((1u << s) - 1), half = 1u << (s - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = a - 0x38000000u;   // rebias exponent: 127 -> 15
    uint32_t h = r >> 13, rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

// ----------------------------------------------------------------------------
// Conversion of stored elements to float32

static int g_convert_portable;   // tests: 1 forces the portable code

void ct_convert_portable(int on) { g_convert_portable = on; }

static uint32_t load_u16(const uint8_t *p) { return (uint32_t)(p[0] | p[1] << 8); }

// bf16 is the high half of a float32. Blocks of 16 with a fixed trip count vectorise at -O2.
static void bf16_portable(float *restrict out, const uint8_t *restrict src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) {
            uint32_t u = load_u16(src + 2 * (i + k)) << 16;
            memcpy(out + i + k, &u, 4);
        }
    for (; i < n; i++) out[i] = ct_bf16_to_f32((uint16_t)load_u16(src + 2 * i));
}

// ct_f16_to_f32 without branches: exponent and mantissa shifted into place and rebiased
// (15 -> 127; inf and NaN keep an all-ones exponent and the payload), subnormals as em * 2^-24
// (exact: em < 2^10), then the sign.
static inline float f16_bits_to_f32(uint32_t h) {
    uint32_t em = h & 0x7fffu, sign = (h & 0x8000u) << 16;
    uint32_t u = (em << 13) + (em >= 0x7c00u ? (uint32_t)(255 - 31) << 23 : (uint32_t)(127 - 15) << 23);
    float f;
    memcpy(&f, &u, 4);
    float sub = (float)(int32_t)em * 0x1p-24f;
    f = em < 0x400u ? sub : f;
    memcpy(&u, &f, 4);
    u |= sign;
    memcpy(&f, &u, 4);
    return f;
}

static void f16_portable(float *restrict out, const uint8_t *restrict src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) out[i + k] = f16_bits_to_f32(load_u16(src + 2 * (i + k)));
    for (; i < n; i++) out[i] = f16_bits_to_f32(load_u16(src + 2 * i));
}

#if defined(__x86_64__) && defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#include <cpuid.h>
#include <immintrin.h>
#define CT_X86_CONVERT 1

// The 256-bit loops end with vzeroupper before the portable code takes the tail: the compiler
// leaves it out before a tail call, and SSE code after dirty upper halves runs several times
// slower (every later product of the process, not just this one).
__attribute__((target("avx2"))) static void bf16_avx2(float *out, const uint8_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i)));
        _mm256_storeu_si256((__m256i *)(void *)(out + i), _mm256_slli_epi32(w, 16));
    }
    _mm256_zeroupper();
    bf16_portable(out + i, src + 2 * i, n - i);
}

__attribute__((target("avx,f16c"))) static void f16_f16c(float *out, const uint8_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i))));
    _mm256_zeroupper();
    f16_portable(out + i, src + 2 * i, n - i);
}

// w (n,) . x (n,) for a BF16 / F16 row w as ct_matmul's one-row loop sums a float32 row: the
// eight lanes are its eight partial sums (multiply, then add: no fused multiply-add), added in
// its order, then the n % 8 trailing products in turn. Each element is read once and converted
// in a register.
__attribute__((target("avx2"))) static float dot_bf16_avx2(const uint8_t *w, const float *x, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(w + 2 * i)));
        __m256 v = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(v, _mm256_loadu_ps(x + i)));
    }
    float a[8];
    _mm256_storeu_ps(a, acc);
    _mm256_zeroupper();
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; i < n; i++) s += ct_bf16_to_f32((uint16_t)load_u16(w + 2 * i)) * x[i];
    return s;
}

__attribute__((target("avx,f16c"))) static float dot_f16_f16c(const uint8_t *w, const float *x, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + 2 * i)));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(v, _mm256_loadu_ps(x + i)));
    }
    float a[8];
    _mm256_storeu_ps(a, acc);
    _mm256_zeroupper();
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; i < n; i++) s += ct_f16_to_f32((uint16_t)load_u16(w + 2 * i)) * x[i];
    return s;
}

// CPU features, read once (the tile workers of ct_mat_matmul convert on several threads)
static int g_avx2, g_f16c;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static void read_cpu(void) {
    g_avx2 = __builtin_cpu_supports("avx2") != 0;
    // AVX usable (the OS saves the registers: the builtin checks), then F16C (CPUID 1, ECX bit 29;
    // clang knows no "f16c" for __builtin_cpu_supports)
    unsigned a, b, c, d;
    g_f16c = __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
}
#endif

// Whether the 8-wide code serves BF16 (AVX2) / F16 (F16C) here.
static int fast_bf16(void) {
#ifdef CT_X86_CONVERT
    pthread_once(&g_cpu_once, read_cpu);
    return g_avx2 && !g_convert_portable;
#else
    return 0;
#endif
}

static int fast_f16(void) {
#ifdef CT_X86_CONVERT
    pthread_once(&g_cpu_once, read_cpu);
    return g_f16c && !g_convert_portable;
#else
    return 0;
#endif
}

void ct_to_f32(float *out, const uint8_t *src, ct_dtype dt, size_t n) {
    switch (dt) {
    case CT_DT_F32:
        memcpy(out, src, n * 4);
        return;
    case CT_DT_BF16:
#ifdef CT_X86_CONVERT
        if (fast_bf16()) {
            bf16_avx2(out, src, n);
            return;
        }
#endif
        bf16_portable(out, src, n);
        return;
    case CT_DT_F16:
#ifdef CT_X86_CONVERT
        if (fast_f16()) {
            f16_f16c(out, src, n);
            return;
        }
#endif
        f16_portable(out, src, n);
        return;
    default:   // F64
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
    }
}

// ----------------------------------------------------------------------------
// Matrices in their stored dtype

ct_mat ct_mat_f32(const float *data, int64_t rows, int64_t cols) {
    return (ct_mat){(const uint8_t *)data, CT_DT_F32, rows, cols, cols, 1};
}

ct_mat ct_mat_t(const ct_mat *m) { return (ct_mat){m->data, m->dtype, m->cols, m->rows, m->cs, m->rs}; }

ct_mat ct_mat_cols(const ct_mat *m, int64_t c0, int64_t n) {
    ct_mat v = *m;
    v.data = m->data + (size_t)(c0 * m->cs) * ct_dtype_size(m->dtype);
    v.cols = n;
    return v;
}

void ct_mat_row(const ct_mat *m, int64_t r, float *out) {
    size_t es = ct_dtype_size(m->dtype);
    const uint8_t *p = m->data + (size_t)(r * m->rs) * es;
    if (m->cs == 1) {   // a contiguous row
        ct_to_f32(out, p, m->dtype, (size_t)m->cols);
        return;
    }
    size_t step = (size_t)m->cs * es;
    for (int64_t c = 0; c < m->cols; c++, p += step) ct_to_f32(&out[c], p, m->dtype, 1);
}

void ct_mat_rows(const ct_mat *m, int64_t r0, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) ct_mat_row(m, r0 + i, out + (size_t)i * (size_t)m->cols);
}

int ct_mat_in_place(const ct_mat *m) {
    return m->dtype == CT_DT_F32 && (uintptr_t)m->data % sizeof(float) == 0 && (m->cs == 1 || m->rs == 1);
}

static size_t g_tile = CT_MAT_TILE;   // tests: smaller tiles

void ct_mat_tile_limit(size_t floats) { g_tile = floats ? floats : CT_MAT_TILE; }

// Rows of W (N, K) a tile holds: g_tile / K, a multiple of 16 from 16 rows on (whole blocks for
// the BLAS kernels), at least one row and at most N.
static int tile_rows(const ct_mat *W) {
    int64_t r = (int64_t)(g_tile / (size_t)(W->cols > 0 ? W->cols : 1));
    if (r >= 16) r &= ~(int64_t)15;
    if (r > W->rows) r = W->rows;
    return r < 1 ? 1 : (int)r;
}

// Workers a product shares n tiles among: one a tile, up to the thread count.
static int tile_workers(int64_t n_tiles) {
    int w = ct_get_threads();
    if (w > CT_MAX_WORKERS) w = CT_MAX_WORKERS;
    return n_tiles < w ? (int)n_tiles : w < 1 ? 1 : w;
}

size_t ct_mat_tile_floats(const ct_mat *W) {
    if (ct_mat_in_place(W)) return 0;
    return (size_t)tile_rows(W) * (size_t)W->cols;
}

size_t ct_mat_scratch_floats(const ct_mat *W) {
    int R = tile_rows(W);
    return ct_mat_tile_floats(W) * (size_t)tile_workers((W->rows + R - 1) / R);
}

// acc (8,) += w (n,) * x (n,) lane by lane, n a multiple of 8: ct_matmul's one-row loop
static void dot8(float *restrict acc, const float *restrict w, const float *restrict x, int n) {
    for (int i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += w[i + k] * x[i + k];
}

// The partial sums added in ct_matmul's order, then the n < 8 trailing products.
static float dot8_finish(const float *acc, const float *w, const float *x, int n) {
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (int i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

// Elements of a row converted at a time on the one-position path (a multiple of 8; 2 KiB).
#define DOT_PIECE 512
// Outputs computed together when W's columns are contiguous (one position).
#define COL_BLOCK 256

// a (n,) += s (n,) * xi
static void axpy_block(float *restrict a, const float *restrict s, float xi, int n) {
    int c = 0;
    for (; c + 8 <= n; c += 8)
        for (int k = 0; k < 8; k++) a[c + k] += s[c + k] * xi;
    for (; c < n; c++) a[c] += s[c] * xi;
}

// out (N,) = W (N, K) @ x (K,) for W with columns contiguous (rs == 1: its transpose S (K, N) is
// stored by rows, cs apart), reading S's rows in order for a block of outputs at a time. Each
// output gets the partial sums of ct_matmul's one-row loop (acc[i % 8] over i), added in its
// order, then the trailing products: the bits ct_matmul gives on W as a row-major copy.
// Outputs o_begin .. o_end-1 only (o_begin a multiple of COL_BLOCK).
static void matvec_cols(float *out, const float *x, const ct_mat *W, int o_begin, int o_end) {
    int N = o_end, K = (int)W->cols, K8 = K & ~7;
    size_t es = ct_dtype_size(W->dtype);
    int f32 = W->dtype == CT_DT_F32 && (uintptr_t)W->data % sizeof(float) == 0;
    float acc[8][COL_BLOCK], buf[COL_BLOCK];   // (8, COL_BLOCK) partial sums, (COL_BLOCK,) a converted piece
    for (int o0 = o_begin; o0 < N; o0 += COL_BLOCK) {
        int nb = N - o0 < COL_BLOCK ? N - o0 : COL_BLOCK;
        memset(acc, 0, sizeof acc);
        float *o = out + o0;
        for (int i = 0; i < K; i++) {
            const uint8_t *p = W->data + ((size_t)i * (size_t)W->cs + (size_t)o0) * es;   // S[i, o0:o0+nb]
            const float *s = (const float *)(const void *)p;
            if (!f32) ct_to_f32(buf, p, W->dtype, (size_t)nb), s = buf;
            if (i == K8)
                for (int c = 0; c < nb; c++)
                    o[c] = ((acc[0][c] + acc[1][c]) + (acc[2][c] + acc[3][c])) + ((acc[4][c] + acc[5][c]) + (acc[6][c] + acc[7][c]));
            if (i < K8) axpy_block(acc[i & 7], s, x[i], nb);
            else axpy_block(o, s, x[i], nb);
        }
        if (K8 == K)
            for (int c = 0; c < nb; c++)
                o[c] = ((acc[0][c] + acc[1][c]) + (acc[2][c] + acc[3][c])) + ((acc[4][c] + acc[5][c]) + (acc[6][c] + acc[7][c]));
    }
}

// out (N,) = W (N, K) @ x (K,) for W with rows contiguous (cs == 1), outputs o_begin .. o_end-1:
// each row read once, a half-precision row converted in registers (AVX2 / F16C) or a piece at a
// time into buf (L1-resident), and summed in ct_matmul's order.
static void matvec_rows(float *out, const float *x, const ct_mat *W, int o_begin, int o_end) {
    int K = (int)W->cols;
    int f32 = W->dtype == CT_DT_F32 && (uintptr_t)W->data % sizeof(float) == 0;
    const float *wf = (const float *)(const void *)W->data;
    size_t es = ct_dtype_size(W->dtype);
    float buf[DOT_PIECE];
    int K8 = K & ~7;
#ifdef CT_X86_CONVERT
    int vec_bf16 = W->dtype == CT_DT_BF16 && fast_bf16(), vec_f16 = W->dtype == CT_DT_F16 && fast_f16();
#endif
    for (int o = o_begin; o < o_end; o++) {
        float acc[8] = {0};
        if (f32) {
            const float *row = wf + (size_t)o * (size_t)W->rs;
            dot8(acc, row, x, K8);
            out[o] = dot8_finish(acc, row + K8, x + K8, K - K8);
            continue;
        }
        const uint8_t *row = W->data + (size_t)o * (size_t)W->rs * es;
#ifdef CT_X86_CONVERT
        if (vec_bf16) {
            out[o] = dot_bf16_avx2(row, x, K);
            continue;
        }
        if (vec_f16) {
            out[o] = dot_f16_f16c(row, x, K);
            continue;
        }
#endif
        for (int i = 0; i < K; i += DOT_PIECE) {
            int n = K - i < DOT_PIECE ? K - i : DOT_PIECE;
            ct_to_f32(buf, row + (size_t)i * es, W->dtype, (size_t)n);
            if (i + n < K) {
                dot8(acc, buf, x + i, n);
            } else {   // the last piece: whole blocks of 8, then the tail
                int n8 = n & ~7;
                dot8(acc, buf, x + i, n8);
                out[o] = dot8_finish(acc, buf + n8, x + i + n8, n - n8);
            }
        }
    }
}

// One position's product shared among the threads: worker w computes a contiguous range of
// outputs (whole column blocks when W's columns are contiguous). Each output is computed as on
// one thread, so the bits do not depend on the thread count.
typedef struct {
    float *out;
    const float *x;
    const ct_mat *W;
} matvec_job;

static void matvec_worker(void *p, int w, int n_workers) {
    const matvec_job *j = p;
    int64_t N = j->W->rows;
    if (j->W->cs == 1) {
        matvec_rows(j->out, j->x, j->W, (int)(N * w / n_workers), (int)(N * (w + 1) / n_workers));
    } else {
        int64_t blocks = (N + COL_BLOCK - 1) / COL_BLOCK, b0 = blocks * w / n_workers, b1 = blocks * (w + 1) / n_workers;
        matvec_cols(j->out, j->x, j->W, (int)(b0 * COL_BLOCK), (int)(b1 * COL_BLOCK < N ? b1 * COL_BLOCK : N));
    }
}

// ct_mat_matmul_few: each row of W read once a group of FEW_GROUP positions, converted 8
// elements at a time and multiplied with the group's rows of x as dot_bf16_avx2 / dot_f16_f16c
// multiply it with one; outputs split among the threads by rows.
#define FEW_GROUP 8

typedef struct {
    float *out;        // (T, N)
    const float *x;    // (T, K)
    const ct_mat *W;   // (N, K), rows contiguous, BF16 or F16
    int T;
} few_job;

#ifdef CT_X86_CONVERT
__attribute__((target("avx2,f16c"))) static inline __m256 load8_half(const uint8_t *p, int f16) {
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    return f16 ? _mm256_cvtph_ps(h) : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// out[p * N] (p < P) = row (K,) . x[p * K ..] (P <= FEW_GROUP): the P sums of dot_bf16_avx2 at once
__attribute__((target("avx2,f16c"), always_inline)) static inline void few_dots(float *out, int N, const uint8_t *row,
                                                                              const float *x, int K, int P, int f16) {
    __m256 acc[FEW_GROUP];
#pragma GCC unroll 8
    for (int p = 0; p < P; p++) acc[p] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= K; i += 8) {
        __m256 v = load8_half(row + 2 * i, f16);
#pragma GCC unroll 8
        for (int p = 0; p < P; p++) acc[p] = _mm256_add_ps(acc[p], _mm256_mul_ps(v, _mm256_loadu_ps(x + (size_t)p * K + i)));
    }
    for (int p = 0; p < P; p++) {
        float a[8];
        _mm256_storeu_ps(a, acc[p]);
        float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        for (int j = i; j < K; j++) {
            uint16_t h = (uint16_t)load_u16(row + 2 * j);
            s += (f16 ? ct_f16_to_f32(h) : ct_bf16_to_f32(h)) * x[(size_t)p * K + j];
        }
        out[(size_t)p * N] = s;
    }
}

// Rows o0 .. o1-1 of the product, FEW_GROUP positions at a time (the group's size a constant in
// each call, so its accumulators stay in registers).
__attribute__((target("avx2,f16c"))) static void few_rows(const few_job *j, int o0, int o1) {
    const ct_mat *W = j->W;
    int N = (int)W->rows, K = (int)W->cols, f16 = W->dtype == CT_DT_F16;
    for (int o = o0; o < o1; o++) {
        const uint8_t *row = W->data + (size_t)o * (size_t)W->rs * 2;
        for (int t0 = 0; t0 < j->T; t0 += FEW_GROUP) {
            float *out = j->out + (size_t)t0 * N + o;
            const float *x = j->x + (size_t)t0 * K;
            switch (j->T - t0 < FEW_GROUP ? j->T - t0 : FEW_GROUP) {
            case 1: few_dots(out, N, row, x, K, 1, f16); break;
            case 2: few_dots(out, N, row, x, K, 2, f16); break;
            case 3: few_dots(out, N, row, x, K, 3, f16); break;
            case 4: few_dots(out, N, row, x, K, 4, f16); break;
            case 5: few_dots(out, N, row, x, K, 5, f16); break;
            case 6: few_dots(out, N, row, x, K, 6, f16); break;
            case 7: few_dots(out, N, row, x, K, 7, f16); break;
            default: few_dots(out, N, row, x, K, 8, f16); break;
            }
        }
    }
    _mm256_zeroupper();
}
#endif

static void few_worker(void *p, int w, int n_workers) {
#ifdef CT_X86_CONVERT
    const few_job *j = p;
    int64_t N = j->W->rows;
    few_rows(j, (int)(N * w / n_workers), (int)(N * (w + 1) / n_workers));
#else
    (void)p, (void)w, (void)n_workers;
#endif
}

int ct_mat_matmul_few(float *out, const float *x, const ct_mat *W, const float *b, int T) {
    int N = (int)W->rows, K = (int)W->cols;
    // few_rows needs AVX2 (fast_bf16) for both dtypes, and F16C for F16
    int fast = (W->dtype == CT_DT_BF16 && fast_bf16()) || (W->dtype == CT_DT_F16 && fast_f16() && fast_bf16());
    if (T < 2 || T > CT_MAT_FEW || W->cs != 1 || !fast) return 0;
    few_job j = {out, x, W, T};
    if ((size_t)N * (size_t)K * 2 >= CT_MATVEC_SHARED && ct_get_threads() > 1)
        ct_parallel(CT_MAX_WORKERS, few_worker, &j);
    else
        few_worker(&j, 0, 1);
    if (b)
        for (int t = 0; t < T; t++)
            for (int o = 0; o < N; o++) out[(size_t)t * N + o] += b[o];
    return 1;
}

// A product ct_mat_matmul shares out in tiles of R rows of W.
typedef struct {
    const ct_mat *W;
    const float *x;   // (T, K)
    float *out;       // (T, N)
    float *tiles;     // (workers, R * K): a tile for each worker
    int T, N, K, R;
    atomic_int next;  // the next tile a worker takes
} tile_job;

typedef void gemm_fn(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                     float beta, float *C, int ldc);

// out[:, n0:n0+r] (T, r) = x (T, K) @ W[n0:n0+r]^T, rows n0 .. n0+r-1 of W converted into tile
// first; gemm is ct_sgemm or, on a worker, ct_sgemm_here.
static void tile_product(const tile_job *j, int n0, int r, float *tile, gemm_fn *gemm) {
    const ct_mat *W = j->W;
    int T = j->T, N = j->N, K = j->K;
    if (W->rs == 1 && W->cs != 1) {
        // columns contiguous: tile (K, r) = S[:, n0:n0+r] of the stored S = W^T (K, N), K
        // contiguous pieces of r
        ct_mat S = ct_mat_t(W), blk = ct_mat_cols(&S, n0, r);
        ct_mat_rows(&blk, 0, K, tile);
        gemm(0, 0, T, r, K, 1.0f, j->x, K, tile, r, 0.0f, j->out + n0, N);
    } else {
        // tile (r, K) = W[n0:n0+r]; out[:, n0:n0+r] (T, r) = x (T, K) @ tile^T
        ct_mat_rows(W, n0, r, tile);
        gemm(0, 1, T, r, K, 1.0f, j->x, K, tile, K, 0.0f, j->out + n0, N);
    }
}

// Worker w: the next tile not yet taken, until none is left (a worker that gets less of the CPU
// takes fewer), converted into w's own tile and multiplied on w's own thread.
static void tile_worker(void *p, int w, int n_workers) {
    tile_job *j = p;
    float *tile = j->tiles + (size_t)w * j->R * j->K;
    for (int64_t n0; (n0 = (int64_t)atomic_fetch_add(&j->next, 1) * j->R) < j->N;)
        tile_product(j, (int)n0, j->N - n0 < j->R ? j->N - (int)n0 : j->R, tile, ct_sgemm_here);
    (void)n_workers;
}

void ct_mat_matmul(float *out, const float *x, const ct_mat *W, const float *b, int T, float *tile, size_t tile_n) {
    int N = (int)W->rows, K = (int)W->cols;
    int f32 = W->dtype == CT_DT_F32 && (uintptr_t)W->data % sizeof(float) == 0;
    const float *wf = (const float *)(const void *)W->data;
    size_t es = ct_dtype_size(W->dtype);
    if (f32 && W->cs == 1 && W->rs == K && T > 1) {
        ct_matmul(out, x, wf, b, T, K, N);
        return;
    }
    if (T == 1 && (W->cs == 1 || W->rs == 1)) {
        // out (N,) = W (N, K) @ x (K,): every element read once, in ct_matmul's order
        matvec_job j = {out, x, W};
        if ((size_t)N * (size_t)K * es >= CT_MATVEC_SHARED && ct_get_threads() > 1)
            ct_parallel(CT_MAX_WORKERS, matvec_worker, &j);
        else
            matvec_worker(&j, 0, 1);
    } else if (f32 && W->cs == 1) {
        ct_sgemm(0, 1, T, N, K, 1.0f, x, K, wf, (int)W->rs, 0.0f, out, N);
    } else if (f32 && W->rs == 1) {
        // out (T, N) = x (T, K) @ S (K, N) for the stored S = W^T, read in place
        ct_sgemm(0, 0, T, N, K, 1.0f, x, K, wf, (int)W->cs, 0.0f, out, N);
    } else {
        CT_ASSERT(tile && tile_n >= (size_t)K);
        // tiles of R rows (fewer when tile_n holds less than one), shared among as many workers
        // as tile_n has room for
        int R = tile_rows(W);
        if (tile_n < (size_t)R * K) R = (int)(tile_n / (size_t)K);
        int64_t n_tiles = (N + R - 1) / R;
        int workers = tile_workers(n_tiles);
        if ((size_t)workers > tile_n / ((size_t)R * K)) workers = (int)(tile_n / ((size_t)R * K));
        tile_job j = {W, x, out, tile, T, N, K, R, 0};
        if (workers > 1) {
            ct_parallel(workers, tile_worker, &j);
        } else if (n_tiles > 1) {   // the tiles in turn, each product on this thread as a worker's would be
            blas_one_thread();
            for (int n0 = 0; n0 < N; n0 += R) tile_product(&j, n0, N - n0 < R ? N - n0 : R, tile, ct_sgemm_here);
        } else {   // one tile: one product, on the BLAS's threads when it is large
            tile_product(&j, 0, N, tile, ct_sgemm);
        }
    }
    if (b)
        for (int t = 0; t < T; t++)
            for (int o = 0; o < N; o++) out[(size_t)t * N + o] += b[o];
}
