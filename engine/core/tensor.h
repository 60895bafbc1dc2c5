// tensor.h - float32 tensors and the linear-algebra conventions of the engine.
//
// Conventions used by every kernel in ctrace:
//   - float32 data, row-major (C order): the last dimension is contiguous.
//   - Linear weights are stored [out, in] (PyTorch nn.Linear); y = x W^T + b.
//   - Activations of a prompt are [T, D]: one row per position.
//   - Kernel signatures put outputs first: ct_matmul(out, x, w, ...).
//   - Long reductions (norms, softmax sums) accumulate in double.
//
// A ct_tensor is a refcounted view (offset, shape, strides in elements) on a refcounted
// storage. Views made by ct_tensor_slice/select share the storage and retain it, so a view
// stays valid after its parent is freed. Storage can also wrap memory it does not own (a
// memory-mapped weight); then the owner must outlive it.
//
// Matrices stored in files stay in their dtype as a ct_mat (below); ct_mat_matmul converts them a
// tile at a time inside the product.
#ifndef CT_TENSOR_H
#define CT_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define CT_MAX_DIMS 8

typedef struct {
    float *data;
    size_t n;        // number of floats
    int refcount;
    int owned;       // 1: data was allocated here and is freed with the storage
} ct_storage;

typedef struct {
    ct_storage *storage;
    size_t offset;                  // in elements, into storage->data
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    int64_t stride[CT_MAX_DIMS];    // in elements
    int refcount;
} ct_tensor;

// New zero-filled contiguous tensor; NULL when out of memory or the shape is invalid.
ct_tensor *ct_tensor_new(int ndim, const int64_t *shape);
// New tensor that copies n contiguous floats of data, shaped by shape.
ct_tensor *ct_tensor_from(const float *data, int ndim, const int64_t *shape);
void ct_tensor_retain(ct_tensor *t);
void ct_tensor_free(ct_tensor *t);   // drops one reference; NULL is fine

int64_t ct_tensor_numel(const ct_tensor *t);
int ct_tensor_is_contiguous(const ct_tensor *t);
// Pointer to the first element of the view.
float *ct_tensor_data(const ct_tensor *t);
// Contiguous copy (or a retained self when already contiguous).
ct_tensor *ct_tensor_contiguous(ct_tensor *t);

// View of dim `dim` restricted to [start, stop) with a positive step.
ct_status ct_tensor_slice(ct_tensor **out, ct_tensor *t, int dim, int64_t start, int64_t stop,
                          int64_t step, ct_err *err);
// View with dimension `dim` fixed at index i (one dimension fewer).
ct_status ct_tensor_select(ct_tensor **out, ct_tensor *t, int dim, int64_t i, ct_err *err);

// Bytes of tensor storage currently allocated by the engine (for the Lua GC's accounting).
size_t ct_mem_bytes(void);
// Allocation wrappers that count bytes; all engine buffers of float data go through them.
void *ct_alloc(size_t nbytes);
void *ct_calloc(size_t nbytes);
// Asks that the block p (nbytes, not yet touched) be backed by 2 MiB pages where the kernel
// allows (transparent huge pages in madvise mode): its first touch then takes a 512th of the page
// faults, which cost microseconds each on virtual machines. Blocks under 8 MiB are left alone.
void ct_advise_huge(void *p, size_t nbytes);
void ct_dealloc(void *p, size_t nbytes);

// ----------------------------------------------------------------------------
// Element types of tensors in files (safetensors, npy) and matrices stored in them

typedef enum {
    CT_DT_F64, CT_DT_F32, CT_DT_F16, CT_DT_BF16, CT_DT_I64, CT_DT_I32, CT_DT_I16, CT_DT_I8,
    CT_DT_U64, CT_DT_U32, CT_DT_U16, CT_DT_U8, CT_DT_BOOL, CT_DT_F8_E4M3, CT_DT_F8_E5M2,
    CT_DT_COUNT
} ct_dtype;

const char *ct_dtype_name(ct_dtype dt);   // "F32", "BF16", ...
size_t ct_dtype_size(ct_dtype dt);        // bytes per element (0 for an unknown value)

// Scalar conversions (exact for every input, incl. subnormals, inf and NaN).
float ct_f16_to_f32(uint16_t h);
float ct_bf16_to_f32(uint16_t b);
uint16_t ct_f32_to_f16(float f);    // round to nearest even
uint16_t ct_f32_to_bf16(float f);   // round to nearest even

// out (n,) = the n elements of dtype dt (F32, F16, BF16 or F64; little-endian, any alignment) at
// src as float32, the values the scalar conversions above give. On x86-64 CPUs with AVX2 (BF16)
// or F16C (F16) eight elements convert per instruction; the one difference that makes is that a
// signalling F16 NaN comes out quiet. ct_convert_portable(1) forces the portable code (tests).
void ct_to_f32(float *out, const uint8_t *src, ct_dtype dt, size_t n);
void ct_convert_portable(int on);

// A float matrix (rows, cols) of any float dtype, element (r, c) at data[r*rs + c*cs] (strides in
// elements). Weights stay in the file they were stored in, in their stored dtype, as a ct_mat;
// kernels convert what they read (a row, a tile of rows) into float32 as they go.
typedef struct {
    const uint8_t *data;
    ct_dtype dtype;
    int64_t rows, cols, rs, cs;
} ct_mat;

// A contiguous row-major float32 matrix (rows, cols) at data (borrowed).
ct_mat ct_mat_f32(const float *data, int64_t rows, int64_t cols);
// The transpose (cols, rows) of m, as a view of the same data.
ct_mat ct_mat_t(const ct_mat *m);
// Columns [c0, c0 + n) of m, as a view of the same data.
ct_mat ct_mat_cols(const ct_mat *m, int64_t c0, int64_t n);
// Reads row r (cols floats) into out.
void ct_mat_row(const ct_mat *m, int64_t r, float *out);
// out (n, cols) = rows r0 .. r0+n-1 of m as float32.
void ct_mat_rows(const ct_mat *m, int64_t r0, int64_t n, float *out);
// Whether the float32 kernels read m as it is: F32, 4-byte aligned, rows (cs == 1) or columns
// (rs == 1) contiguous. Any other matrix is converted a tile at a time.
int ct_mat_in_place(const ct_mat *m);

// A tile: CT_MAT_TILE floats (2 MiB) of rows of W (N, K), that is R = CT_MAT_TILE / K rows (a
// multiple of 16 from 16 on, at least 1, at most N). ct_mat_tile_floats(W) is R K, the floats of
// one tile (0 when W is read in place); ct_mat_scratch_floats(W) is what ct_mat_matmul wants: a
// tile for each worker, up to ct_get_threads() of them and one a tile. ct_mat_tile_limit(n) puts
// n in place of CT_MAT_TILE (tests: one-row tiles with n = 1; 0 restores CT_MAT_TILE).
// Measured on 2 cores (a bf16 Llama-3.2-1B forward at 16, 64 and 256 positions, GemmaScope and
// Llama-3.2-1B transcoder sets at 11 and 64): 512K-float tiles beat 1M ones on the model by 10-25%
// (its K/V projections, one 1M tile each, run on one thread) and are within 6% on the encoders.
#define CT_MAT_TILE ((size_t)1 << 19)
size_t ct_mat_tile_floats(const ct_mat *W);
size_t ct_mat_scratch_floats(const ct_mat *W);
void ct_mat_tile_limit(size_t floats);

// out (T, N) = x (T, K) @ W^T [+ b (N,)] for W (N, K) of any float dtype: a Linear weight
// [out, in] as stored (cs == 1), or the transpose of a stored (K, N) (rs == 1: y = x W), or any
// strides. tile (tile_n floats, at least K; ct_mat_scratch_floats(W) for full speed; may be NULL
// when ct_mat_tile_floats(W) is 0) is scratch for converted tiles.
//   - one position, rows or columns contiguous: every element read once (converted in registers
//     or a piece at a time into a small buffer on the stack) and summed in ct_matmul's order: the
//     bits ct_matmul gives on a row-major float32 copy of W. From CT_MATVEC_SHARED bytes of W on,
//     the outputs are split into one range per thread (ct_parallel): the same bits.
//   - W read in place, several positions: as ct_matmul (rows contiguous) or one sgemm (columns
//     contiguous), the same bits as those.
//   - otherwise: tiles of R rows of W (fewer when tile_n holds less than one tile), each
//     converted into a worker's part of tile and multiplied by one sgemm on that worker's thread
//     (ct_parallel: as many workers as tile_n has room for, up to ct_get_threads() and the number
//     of tiles; each takes the next tile not yet taken). Each output sums over all of K in a
//     product of a shape fixed by W alone, on one thread, so the bits do not depend on the thread
//     count; only how OpenBLAS blocks a smaller product can change the float32 summation order.
//     A W of one tile is one ct_sgemm (on the BLAS's threads when large).
void ct_mat_matmul(float *out, const float *x, const ct_mat *W, const float *b, int T, float *tile, size_t tile_n);
// Weight bytes from which one position's product is shared among the threads (generation reads
// every weight once a token: one thread alone does not reach the memory's bandwidth; a pass over
// 4 MiB takes about 0.3 ms, starting a thread some 30 us).
#define CT_MATVEC_SHARED ((size_t)4 << 20)
// ct_mat_matmul for 2 .. CT_MAT_FEW positions on a W in BF16 or F16 with rows contiguous, where
// the CPU converts them in registers (AVX2, and F16C for F16); returns 0 (nothing done) for any
// other product. No tile: each row converted as it is read, and each output summed as the
// one-position path sums it, so every position gets the bits of its own one-position product
// whatever T and the thread count. That is not the bits of ct_mat_matmul on several positions
// (sgemm's order, the same as on a float32 copy of W), hence a call of its own: ctrace's
// encoders use it (11 positions over the bf16 encoders of Llama-3.2-1B's transcoders, 131,072 x
// 2,048 a layer: 1.3 s for the 16 layers instead of 2.0 s converting tiles for sgemm); a model's
// weights do not, so a half-precision checkpoint computes exactly as its float32 conversion.
#define CT_MAT_FEW 16
int ct_mat_matmul_few(float *out, const float *x, const ct_mat *W, const float *b, int T);

// ----------------------------------------------------------------------------
// Kernels (contiguous float arrays)

// C (M, N) = alpha op(A) op(B) + beta C, row-major; ta/tb transpose A (M, K) / B (K, N) as
// stored. Small products run on one BLAS thread: waking the pool costs more than they do. The
// bits of a larger one can depend on the thread count (OpenBLAS 0.3.21, Haswell kernels: at
// (16, 2048, 2048) half the outputs differ in their last bits between 1 and 2 threads).
void ct_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc);
// Runs fn(arg, w, n_workers) for w = 0 .. n_workers-1 on n_workers threads (the caller's among
// them; n_workers = ct_get_threads(), at most max_workers and CT_MAX_WORKERS), each with the BLAS
// kept to its own thread: worker w does its share of the work with ct_sgemm_here. Returns after
// every worker has.
#define CT_MAX_WORKERS 16
void ct_parallel(int max_workers, void (*fn)(void *arg, int w, int n_workers), void *arg);
// As ct_sgemm, on the calling thread only: for the workers of ct_parallel.
void ct_sgemm_here(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc);
// B (M, N) = A^T B in place, A (M, M) lower triangular (row-major, leading dimension lda), on the
// calling thread only: for the workers of ct_parallel.
void ct_strmm_lower_t_here(int M, int N, const float *A, int lda, float *B, int ldb);
// out (T, n_out) = x (T, n_in) @ w (n_out, n_in)^T [+ b (n_out,)]
void ct_matmul(float *out, const float *x, const float *w, const float *b, int T, int n_in,
               int n_out);
// out (n,) = x (n,) * g (n,) / sqrt(mean(x^2) + eps), g offset by gain_offset (Gemma: 1).
// Returns the denominator sqrt(mean(x^2) + eps).
float ct_rmsnorm(float *out, const float *x, const float *g, float gain_offset, float eps, int n);
// out (n,) = (x - mean) / sqrt(var + eps) * g + b. Returns the denominator.
float ct_layernorm(float *out, const float *x, const float *g, const float *b, float eps, int n);
// In-place softmax over n values, double accumulation.
void ct_softmax(float *x, int n);
// log sum exp(x) for x (n,): max + log(sum exp(x - max)), the sum in double. -inf for n = 0 or
// when every x is -inf; +inf when some x is +inf; NaN when some x is NaN.
double ct_logsumexp(const float *x, int64_t n);
float ct_gelu_tanh(float x);
float ct_silu(float x);

// Top-k selection. Values rank largest first, NaN after every number (-inf included), equal
// values by the lower index first: a total order, so the answer is unique.
// idx (k,) = the indices of the k highest-ranked values of x (n,), in rank order. Returns
// min(k, n), 0 when k <= 0. A binary heap of k entries kept in idx: O(n log k), no allocation.
int64_t ct_topk(int64_t *idx, const float *x, int64_t n, int64_t k);
// Softmax of logits x (n,) read at a few entries: idx (k,) the k largest logits as ct_topk
// ranks them (the most probable first) and p_top (k,) their probabilities; p_at (n_at,) the
// probabilities of the entries at (n_at,), each in 0..n-1 (at may be NULL when n_at is 0).
// p = exp(x - max) / sum exp(x - max) in double, that is exp(x - ct_logsumexp(x, n)); every p
// is NaN when x holds a NaN or +inf or only -inf. Returns min(k, n), 0 when k <= 0.
int64_t ct_softmax_topk(int64_t *idx, double *p_top, double *p_at, const float *x, int64_t n, int64_t k,
                        const int64_t *at, int64_t n_at);

// Uniform(-1, 1) from a splitmix64 state (the same sequence everywhere): random weights.
float ct_rand_uniform(uint64_t *state);
// The next 64 random bits of a xorshift64* stream (state non-zero); the same sequence everywhere.
// Sampling and training draw from it.
uint64_t ct_rand_u64(uint64_t *state);

// OpenBLAS picks its kernels at load time from the CPU model; on CPUs it does not know it falls
// back to its slowest x86-64 kernels (Prescott, SSE3: a fifth of the speed on AVX-512 parts).
// When that happened and OPENBLAS_CORETYPE is unset, returns the core type this CPU supports
// ("SkylakeX" with AVX-512, "Haswell" with AVX2 and FMA); the caller sets OPENBLAS_CORETYPE and
// restarts the process before the library loads again. NULL otherwise.
const char *ct_blas_better_core(void);
// The kernel family OpenBLAS is using ("SkylakeX", "Haswell", "Prescott", ...).
const char *ct_blas_core(void);
// Number of BLAS threads (0 leaves the library default).
void ct_set_threads(int n);
int ct_get_threads(void);

#endif
