// transcoder.c - transcoder sets: formats, encode, decode, reconstruction (see transcoder.h).
#include "model/transcoder.h"

#include "core/dist.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dist.h"
#include "core/fileio.h"
#include "formats/npz.h"
#include "formats/yaml.h"

// A tensor as a float matrix (rows, cols); transposed: stored (cols, rows).
static ct_status as_mat(ct_mat *m, const uint8_t *data, ct_dtype dt, int64_t rows, int64_t cols, int transposed,
                        const char *name, ct_err *err) {
    if (dt != CT_DT_F32 && dt != CT_DT_F16 && dt != CT_DT_BF16 && dt != CT_DT_F64)
        return ct_fail(err, CT_STATUS_BAD_DTYPE, "transcoder tensor '%s' has dtype %s; expected F32, F16, BF16 or F64",
                       name, ct_dtype_name(dt));
    *m = (ct_mat){data, dt, rows, cols, transposed ? 1 : cols, transposed ? rows : 1};
    return CT_OK;
}

// Whole matrix as owned float32 row-major (rows, cols).
static float *mat_to_f32(const ct_mat *m) {
    float *out = ct_alloc(sizeof(float) * (size_t)(m->rows * m->cols) + 1);
    if (!out) return NULL;
    for (int64_t r = 0; r < m->rows; r++) ct_mat_row(m, r, out + r * m->cols);
    return out;
}

// ----------------------------------------------------------------------------
// Tensors of one layer file, whatever the container

typedef struct {
    const char *name;
    const uint8_t *data;
    ct_dtype dtype;
    int ndim;
    int64_t shape[8];
} tensor_ref;

typedef struct {
    ct_safetensors *st;
    struct ct_npz *npz;
} layer_file;

static int file_get(const layer_file *f, const char *name, tensor_ref *t) {
    if (f->st) {
        const ct_st_tensor *s = ct_safetensors_find(f->st, name);
        if (!s) return 0;
        *t = (tensor_ref){s->name, s->data, s->dtype, s->ndim, {0}};
        memcpy(t->shape, s->shape, sizeof t->shape);
        return 1;
    }
    const ct_npy_array *a = ct_npz_find(f->npz, name);
    if (!a) return 0;
    *t = (tensor_ref){a->name, a->data, a->dtype, a->ndim, {0}};
    memcpy(t->shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    return 1;
}

static char *shape_str(const tensor_ref *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

// A vector of length n as owned float32; required or optional.
static ct_status get_vec(const layer_file *f, const char *name, int64_t n, int required, float **out, const char *where,
                         ct_err *err) {
    *out = NULL;
    tensor_ref t;
    if (!file_get(f, name, &t)) {
        if (!required) return CT_OK;
        return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: missing tensor '%s'", where, name);
    }
    char sh[64];
    if (t.ndim != 1 || t.shape[0] != n)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: '%s' has shape %s; expected [%lld]", where, name, shape_str(&t, sh, sizeof sh),
                       (long long)n);
    ct_mat m;
    ct_status rc = as_mat(&m, t.data, t.dtype, 1, n, 0, name, err);
    if (rc) return rc;
    *out = mat_to_f32(&m);
    return *out ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
}

static void layer_free(ct_tc_layer *l, int d_model) {
    ct_dealloc(l->W_dec_owned, sizeof(float) * (size_t)l->d_tc * (size_t)l->n_out * (size_t)d_model + 1);
    ct_dealloc(l->W_enc_owned, sizeof(float) * (size_t)l->d_tc * (size_t)d_model + 1);
    ct_dealloc(l->b_enc, sizeof(float) * (size_t)l->d_tc + 1);
    ct_dealloc(l->threshold, sizeof(float) * (size_t)l->d_tc + 1);
    ct_dealloc(l->b_dec, sizeof(float) * (size_t)d_model + 1);
    ct_dealloc(l->W_skip_owned, sizeof(float) * (size_t)d_model * (size_t)d_model + 1);
    memset(l, 0, sizeof *l);
}

void ct_transcoders_free(ct_transcoders *tc) {
    if (!tc) return;
    for (int l = 0; tc->layers && l < tc->n_layers; l++) layer_free(&tc->layers[l], tc->d_model);
    free(tc->layers);
    for (int i = 0; i < tc->n_st; i++) ct_safetensors_free(tc->st[i]);
    free(tc->st);
    for (int i = 0; i < tc->n_npz; i++) ct_npz_free(tc->npz[i]);
    free(tc->npz);
    free(tc);
}

// Features F and d_model D from a layer file's shapes: checked before they become ints (a shape
// may claim 2^53 along one axis when another is 0).
static ct_status check_dims(int64_t F, int64_t D, const char *where, ct_err *err) {
    if (F < 1 || F > INT_MAX || D < 1 || D > (1 << 20))
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: %lld features of d_model %lld; expected 1..%d features and d_model "
                       "1..%d", where, (long long)F, (long long)D, INT_MAX, 1 << 20);
    return CT_OK;
}

// Encoder (F, D) from a tensor stored (F, D), or (D, F) when transposed: used where it is.
static ct_status set_encoder(ct_tc_layer *L, const tensor_ref *t, int transposed, ct_err *err) {
    int64_t F = L->d_tc, D = transposed ? t->shape[0] : t->shape[1];
    return as_mat(&L->W_enc, t->data, t->dtype, F, D, transposed, t->name, err);
}

// The skip matrix (D, D) stored row-major: used in place when the file holds aligned float32,
// else converted once (D^2 floats, a small part of a layer).
static ct_status set_skip(ct_tc_layer *L, const ct_mat *m, ct_err *err) {
    if (ct_mat_in_place(m) && m->cs == 1 && m->rs == m->cols) {
        L->W_skip = (const float *)m->data;
        return CT_OK;
    }
    if (!(L->W_skip_owned = mat_to_f32(m))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a skip matrix");
    L->W_skip = L->W_skip_owned;
    return CT_OK;
}

// Bytes from a matrix's first element to the end of its last.
static size_t mat_extent(const ct_mat *m) {
    if (m->rows < 1 || m->cols < 1) return 0;
    return (size_t)((m->rows - 1) * m->rs + (m->cols - 1) * m->cs + 1) * ct_dtype_size(m->dtype);
}

// ----------------------------------------------------------------------------
// Per-layer formats

// One PLT layer from a circuit-tracer safetensors, a GemmaScope params.npz or GemmaScope-2 keys.
static ct_status load_plt_layer(ct_transcoders *tc, int l, const layer_file *f, const char *where, ct_err *err) {
    ct_tc_layer *L = &tc->layers[l];
    tensor_ref enc, dec, be, bd;
    int gs2 = file_get(f, "w_enc", &enc);   // GemmaScope-2: lowercase keys, w_enc (D, F)
    int npz = f->npz != NULL;                // GemmaScope: W_enc (D, F)
    if (!gs2 && !file_get(f, "W_enc", &enc)) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: missing tensor 'W_enc'", where);
    if (!file_get(f, gs2 ? "w_dec" : "W_dec", &dec))
        return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: missing tensor '%s'", where, gs2 ? "w_dec" : "W_dec");
    if (!file_get(f, "b_enc", &be) || !file_get(f, "b_dec", &bd))
        return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: missing tensor 'b_enc' or 'b_dec'", where);
    if (be.ndim != 1 || bd.ndim != 1 || enc.ndim != 2 || dec.ndim != 2)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: expected 2-d W_enc, W_dec and 1-d b_enc, b_dec", where);
    int64_t F = be.shape[0], D = bd.shape[0];
    char s1[64], s2[64];
    ct_status rc = check_dims(F, D, where, err);
    if (rc) return rc;
    if (tc->d_model && D != tc->d_model)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: d_model %lld differs from %d in the other layers", where, (long long)D,
                       tc->d_model);
    tc->d_model = (int)D;
    L->d_tc = (int)F;
    // encoder orientation: circuit-tracer stores (F, D); GemmaScope and GemmaScope-2 (D, F)
    int enc_t = gs2 || npz;
    if (enc.shape[0] != (enc_t ? D : F) || enc.shape[1] != (enc_t ? F : D))
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: W_enc has shape %s; expected [%lld, %lld]", where,
                       shape_str(&enc, s1, sizeof s1), (long long)(enc_t ? D : F), (long long)(enc_t ? F : D));
    // decoder orientation: (F, D) rows per feature, or the older (D, F); refuse when F == D
    int dec_t;
    if (dec.shape[0] == F && dec.shape[1] == D && F != D) dec_t = 0;
    else if (dec.shape[0] == D && dec.shape[1] == F && F != D) dec_t = 1;
    else if (F == D && dec.shape[0] == F && dec.shape[1] == D)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: W_dec is square (%lld x %lld), so its orientation (features as rows "
                       "or as columns) cannot be told from its shape", where, (long long)F, (long long)D);
    else
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: W_dec has shape %s; expected [%lld, %lld] (or the older [%lld, %lld])",
                       where, shape_str(&dec, s2, sizeof s2), (long long)F, (long long)D, (long long)D, (long long)F);
    rc = set_encoder(L, &enc, enc_t, err);
    if (!rc) rc = as_mat(&L->W_dec, dec.data, dec.dtype, F, D, dec_t, dec.name, err);
    L->n_out = 1;
    if (!rc) rc = get_vec(f, "b_enc", F, 1, &L->b_enc, where, err);
    if (!rc) rc = get_vec(f, "b_dec", D, 1, &L->b_dec, where, err);
    if (!rc) rc = get_vec(f, npz || gs2 ? "threshold" : "activation_function.threshold", F, 0, &L->threshold, where, err);
    if (rc) return rc;
    // skip: circuit-tracer W_skip applied as x W^T; GemmaScope-2 affine_skip_connection as x A
    tensor_ref sk;
    int has_skip = file_get(f, "W_skip", &sk), affine = 0;
    if (!has_skip) has_skip = affine = file_get(f, "affine_skip_connection", &sk);
    if (has_skip) {
        if (sk.ndim != 2 || sk.shape[0] != D || sk.shape[1] != D)
            return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: '%s' has shape %s; expected [%lld, %lld]", where, sk.name,
                           shape_str(&sk, s1, sizeof s1), (long long)D, (long long)D);
        ct_mat m;
        if ((rc = as_mat(&m, sk.data, sk.dtype, D, D, 0, sk.name, err))) return rc;
        if ((rc = set_skip(L, &m, err))) return rc;
        L->skip_mode = affine ? CT_SKIP_XW : CT_SKIP_XWT;
    }
    // activation: TopK from a scalar k, JumpReLU from a threshold, else ReLU
    tensor_ref kt;
    if (file_get(f, "k", &kt) && kt.ndim == 0) {
        int64_t kv = 0;
        if (kt.dtype == CT_DT_I64) memcpy(&kv, kt.data, 8);
        else if (kt.dtype == CT_DT_I32) {
            int32_t k32;
            memcpy(&k32, kt.data, 4);
            kv = k32;
        }
        if (kv < 1 || kv > F) return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: TopK k = %lld outside 1..%lld", where, (long long)kv, (long long)F);
        tc->k = (int)kv;
        tc->act = CT_TC_TOPK;
    } else if (L->threshold) {
        tc->act = CT_TC_JUMPRELU;
    }
    return CT_OK;
}

// Keeps a safetensors / npz file open for the set's lifetime.
static ct_status open_file(ct_ctx *ctx, ct_transcoders *tc, const char *path, layer_file *f, ct_err *err) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path);
    ct_status rc;
    if (n > 4 && strcmp(path + n - 4, ".npz") == 0) {
        struct ct_npz **a = realloc(tc->npz, sizeof *a * (size_t)(tc->n_npz + 1));
        if (!a) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        tc->npz = a;
        if ((rc = ct_npz_open(ctx, &f->npz, path, err))) return rc;
        tc->npz[tc->n_npz++] = f->npz;
        return CT_OK;
    }
    ct_safetensors **a = realloc(tc->st, sizeof *a * (size_t)(tc->n_st + 1));
    if (!a) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    tc->st = a;
    if ((rc = ct_safetensors_open(ctx, &f->st, path, err))) return rc;
    tc->st[tc->n_st++] = f->st;
    return CT_OK;
}

// CLT layer i: W_enc_{i}.safetensors (W_enc_i, b_enc_i, b_dec_i, threshold_i) and
// W_dec_{i}.safetensors (W_dec_i (F, L - i, D)); W_skip (L, D, D) in either file, optional.
static ct_status load_clt_layer(ct_ctx *ctx, ct_transcoders *tc, int i, const char *enc_path, const char *dec_path,
                                ct_err *err) {
    layer_file fe, fd;
    ct_status rc = open_file(ctx, tc, enc_path, &fe, err);
    if (!rc) rc = open_file(ctx, tc, dec_path, &fd, err);
    if (rc) return rc;
    ct_tc_layer *L = &tc->layers[i];
    char name[64], s1[64];
    tensor_ref enc, dec;
    snprintf(name, sizeof name, "W_enc_%d", i);
    if (!file_get(&fe, name, &enc)) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: missing tensor '%s'", enc_path, name);
    snprintf(name, sizeof name, "W_dec_%d", i);
    if (!file_get(&fd, name, &dec)) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: missing tensor '%s'", dec_path, name);
    if (enc.ndim != 2) return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: W_enc_%d must be 2-d", enc_path, i);
    int64_t F = enc.shape[0], D = enc.shape[1], n_out = tc->n_layers - i;
    if ((rc = check_dims(F, D, enc_path, err))) return rc;
    if (tc->d_model && D != tc->d_model)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: d_model %lld differs from %d in the other layers", enc_path, (long long)D,
                       tc->d_model);
    tc->d_model = (int)D;
    L->d_tc = (int)F;
    if (dec.ndim != 3 || dec.shape[0] != F || dec.shape[1] != n_out || dec.shape[2] != D)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: W_dec_%d has shape %s; expected [%lld, %lld, %lld] (features, the %lld "
                       "layers from %d on, d_model)", dec_path, i, shape_str(&dec, s1, sizeof s1), (long long)F, (long long)n_out,
                       (long long)D, (long long)n_out, i);
    if ((rc = set_encoder(L, &enc, 0, err))) return rc;
    if ((rc = as_mat(&L->W_dec, dec.data, dec.dtype, F, n_out * D, 0, dec.name, err))) return rc;
    L->n_out = (int)n_out;
    snprintf(name, sizeof name, "b_enc_%d", i);
    if ((rc = get_vec(&fe, name, F, 1, &L->b_enc, enc_path, err))) return rc;
    snprintf(name, sizeof name, "b_dec_%d", i);
    if ((rc = get_vec(&fe, name, D, 1, &L->b_dec, enc_path, err))) return rc;
    snprintf(name, sizeof name, "threshold_%d", i);
    if ((rc = get_vec(&fe, name, F, 0, &L->threshold, enc_path, err))) return rc;
    if (L->threshold) tc->act = CT_TC_JUMPRELU;
    tensor_ref sk;
    if (file_get(&fe, "W_skip", &sk) || file_get(&fd, "W_skip", &sk)) {
        if (sk.ndim != 3 || sk.shape[0] != tc->n_layers || sk.shape[1] != D || sk.shape[2] != D)
            return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: W_skip has shape %s; expected [%d, %lld, %lld]", enc_path,
                           shape_str(&sk, s1, sizeof s1), tc->n_layers, (long long)D, (long long)D);
        ct_mat m;
        size_t es = ct_dtype_size(sk.dtype);
        if ((rc = as_mat(&m, sk.data + (size_t)i * (size_t)(D * D) * es, sk.dtype, D, D, 0, "W_skip", err))) return rc;
        if ((rc = set_skip(L, &m, err))) return rc;
        L->skip_mode = CT_SKIP_XW;
    }
    return CT_OK;
}

// GemmaScope-2 cross-layer layer file i: w_enc (D, F), w_dec (F, L, D) of which layer i uses
// the slices i.., b_enc, b_dec, optional threshold and affine_skip_connection (x A).
static ct_status load_gs2_clt_layer(ct_transcoders *tc, int i, const layer_file *f, const char *where, ct_err *err) {
    ct_tc_layer *L = &tc->layers[i];
    tensor_ref enc, dec, be, bd;
    char s1[64];
    if (!file_get(f, "w_enc", &enc) || !file_get(f, "w_dec", &dec) || !file_get(f, "b_enc", &be) || !file_get(f, "b_dec", &bd))
        return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: a GemmaScope-2 cross-layer file needs w_enc, w_dec, b_enc and b_dec", where);
    if (be.ndim != 1 || bd.ndim != 1 || enc.ndim != 2)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: expected 2-d w_enc and 1-d b_enc, b_dec", where);
    int64_t F = be.shape[0], D = bd.shape[0], NL = tc->n_layers;
    ct_status rc = check_dims(F, D, where, err);
    if (rc) return rc;
    if (tc->d_model && D != tc->d_model)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: d_model %lld differs from %d in the other layers", where, (long long)D,
                       tc->d_model);
    if (enc.shape[0] != D || enc.shape[1] != F)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: w_enc has shape %s; expected [%lld, %lld]", where,
                       shape_str(&enc, s1, sizeof s1), (long long)D, (long long)F);
    if (dec.ndim != 3 || dec.shape[0] != F || dec.shape[1] != NL || dec.shape[2] != D)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: w_dec has shape %s; expected [%lld, %lld, %lld] (features, all %lld layers, "
                       "d_model)", where, shape_str(&dec, s1, sizeof s1), (long long)F, (long long)NL, (long long)D, (long long)NL);
    tc->d_model = (int)D;
    L->d_tc = (int)F;
    rc = set_encoder(L, &enc, 1, err);
    if (rc) return rc;
    // layer i writes layers i..L-1: columns [i*D, L*D) of each feature's (L*D) row
    if ((rc = as_mat(&L->W_dec, dec.data + (size_t)(i * D) * ct_dtype_size(dec.dtype), dec.dtype, F, (NL - i) * D, 0,
                     dec.name, err)))
        return rc;
    L->W_dec.rs = NL * D;
    L->n_out = (int)(NL - i);
    if ((rc = get_vec(f, "b_enc", F, 1, &L->b_enc, where, err)) || (rc = get_vec(f, "b_dec", D, 1, &L->b_dec, where, err)) ||
        (rc = get_vec(f, "threshold", F, 0, &L->threshold, where, err)))
        return rc;
    if (L->threshold) tc->act = CT_TC_JUMPRELU;
    tensor_ref sk;
    if (file_get(f, "affine_skip_connection", &sk)) {
        ct_mat m;
        if (sk.ndim != 2 || sk.shape[0] != D || sk.shape[1] != D)
            return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: affine_skip_connection has shape %s; expected [%lld, %lld]", where,
                           shape_str(&sk, s1, sizeof s1), (long long)D, (long long)D);
        if ((rc = as_mat(&m, sk.data, sk.dtype, D, D, 0, sk.name, err))) return rc;
        if ((rc = set_skip(L, &m, err))) return rc;
        L->skip_mode = CT_SKIP_XW;
    }
    return CT_OK;
}

// ----------------------------------------------------------------------------
// Resolving the paths a config.yaml lists: relative to its directory, absolute, or addresses
// (hf://) the context resolves (fetched into the Hugging Face cache by the host's resolver)

static ct_status resolve(ct_ctx *ctx, const char *base_dir, const char *p, char *out, size_t n, ct_err *err) {
    if (strstr(p, "://")) return ct_ctx_resolve(ctx, p, out, n, err);
    int k = p[0] == '/' ? snprintf(out, n, "%s", p) : snprintf(out, n, "%s/%s", base_dir, p);
    if (k < 0 || (size_t)k >= n)   // a cut path would name another file
        return ct_fail(err, CT_STATUS_BAD_ARG, "transcoder file %.200s...: path longer than %zu bytes", p, n - 1);
    // the context's read check first: a file outside the read roots is refused whether or not it exists
    ct_status rc = ct_ctx_check_read(ctx, out, err);
    if (rc && rc != CT_STATUS_NOT_FOUND) return rc;
    return !rc && ct_is_file(out) ? CT_OK : ct_fail(err, CT_STATUS_NOT_FOUND, "transcoder file %s does not exist", out);
}

// ----------------------------------------------------------------------------
// Loading a set

// The set has n layers; under the layer split (hold_lo, hold_hi: rank and size until here) the
// rank's share of them is held.
static ct_status set_layers(ct_transcoders *tc, int n, ct_err *err) {
    if (n <= 0 || n > 4096) return ct_fail(err, CT_STATUS_BAD_FORMAT, "transcoders: %d layers; expected 1..4096", n);
    int rank = tc->hold_lo, size = tc->hold_hi;
    tc->hold_lo = tc->hold_hi = 0;
    if (size > n)
        return ct_fail(err, CT_STATUS_BAD_ARG, "transcoders: %d layers cannot be split among %d ranks (one layer each at "
                       "least)", n, size);
    if (size > 1) ct_layer_share(n, rank, size, &tc->hold_lo, &tc->hold_hi);
    tc->n_layers = n;
    tc->layers = calloc((size_t)n, sizeof *tc->layers);
    return tc->layers ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
}

// Counts consecutive files dir/fmt(i) from 0; *gap set when a later index exists after a hole.
static int count_files(const char *dir, const char *fmt, int *gap) {
    char p[1200], name[64];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, fmt, n);
        snprintf(p, sizeof p, "%s/%s", dir, name);
        if (!ct_is_file(p)) break;
    }
    *gap = 0;
    for (int k = n + 1; k < n + 64; k++) {
        snprintf(name, sizeof name, fmt, k);
        snprintf(p, sizeof p, "%s/%s", dir, name);
        if (ct_is_file(p)) *gap = k;
    }
    return n;
}

// The files a config.yaml's transcoders list names, layer by layer (files[i] is the scalar of
// layer i's path): strings, the list index being the layer (circuit-tracer's form), or maps
// {id, layer, filepath} in any order, each layer 0..n-1 once (its form before August 2025).
static ct_status list_files(const ct_yaml *list, const char *name, const ct_yaml **files, ct_err *err) {
    int n = list->n;
    if (n == 0) return CT_OK;
    const ct_yaml *first = &list->items[0];
    for (int i = 0; i < n; i++) {
        const ct_yaml *e = &list->items[i];
        if (e->kind == CT_YAML_LIST || ct_yaml_is_null(e))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: transcoders entry %d: expected a path or an {id, layer, "
                           "filepath} mapping, found %s", name, e->line, i, ct_yaml_type(e));
        if ((e->kind == CT_YAML_MAP) != (first->kind == CT_YAML_MAP))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: transcoders entry %d is %s and entry 0 (line %d) %s; "
                           "expected paths only or mappings only", name, e->line, i, e->kind == CT_YAML_MAP ? "a mapping" : "a path",
                           first->line, first->kind == CT_YAML_MAP ? "a mapping" : "a path");
        if (e->kind == CT_YAML_SCALAR) {
            files[i] = e;
            continue;
        }
        const ct_yaml *layer = ct_yaml_get(e, "layer"), *path = ct_yaml_get(e, "filepath");
        long long l;
        if (!layer || !ct_yaml_int(layer, &l))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: transcoders entry %d: layer: expected an integer, found %s",
                           name, layer ? layer->line : e->line, i, layer ? ct_yaml_type(layer) : "nothing");
        if (!path || path->kind != CT_YAML_SCALAR || ct_yaml_is_null(path))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: transcoders entry %d: filepath: expected a path, found %s",
                           name, path ? path->line : e->line, i, path ? ct_yaml_type(path) : "nothing");
        if (l < 0 || l >= n)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: transcoders entry %d is for layer %lld; a list of %d "
                           "entries covers layers 0..%d, each once", name, layer->line, i, l, n, n - 1);
        if (files[l])
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: layer %lld has a second transcoder (the first on line %d)",
                           name, layer->line, l, files[l]->line);
        files[l] = path;
    }
    return CT_OK;
}

// Whether layer i's files are opened: every layer's without a layer split; else a per-layer set's
// held layers, a cross-layer set's layers below the last held one (their decoders write into it).
static int holds_file(const ct_transcoders *tc, int i) {
    if (!tc->hold_hi) return 1;
    return tc->kind == CT_TC_CLT ? i < tc->hold_hi : i >= tc->hold_lo && i < tc->hold_hi;
}

static ct_status load_dir_files(ct_ctx *ctx, ct_transcoders *tc, const char *dir, const ct_yaml *list, const char *name,
                                ct_err *err) {
    char p[1200], q[1200];
    ct_status rc;
    if (tc->kind == CT_TC_CLT && !list) {
        int gap, n = count_files(dir, "W_enc_%d.safetensors", &gap);
        if (gap) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: W_enc_%d.safetensors is missing (W_enc_%d exists)", dir, n, gap);
        if ((rc = set_layers(tc, n, err))) return rc;
        for (int i = 0; i < n && holds_file(tc, i); i++) {
            snprintf(p, sizeof p, "%s/W_enc_%d.safetensors", dir, i);
            snprintf(q, sizeof q, "%s/W_dec_%d.safetensors", dir, i);
            if ((rc = load_clt_layer(ctx, tc, i, p, q, err))) return rc;
        }
        return CT_OK;
    }
    int n;
    if (list) {
        n = list->n;
    } else {
        int gap;
        n = count_files(dir, "layer_%d.safetensors", &gap);
        if (gap) return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: layer_%d.safetensors is missing (layer_%d exists)", dir, n, gap);
    }
    if ((rc = set_layers(tc, n, err))) return rc;
    const ct_yaml **files = list ? calloc((size_t)n, sizeof *files) : NULL;   // (n,) the path of each layer
    if (list && !files) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (list) rc = list_files(list, name, files, err);
    for (int i = 0; !rc && i < n; i++) {
        if (!holds_file(tc, i)) continue;
        if (list) {
            if ((rc = resolve(ctx, dir, files[i]->value, p, sizeof p, err))) break;
            for (int k = 0; k < i && !rc; k++)
                if (strcmp(files[k]->value, files[i]->value) == 0)
                    rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: layer %d repeats the file of layer %d", name,
                                 files[i]->line, i, k);
            if (rc) break;
        } else {
            snprintf(p, sizeof p, "%s/layer_%d.safetensors", dir, i);
        }
        layer_file f;
        if ((rc = open_file(ctx, tc, p, &f, err))) break;
        rc = tc->kind == CT_TC_CLT ? load_gs2_clt_layer(tc, i, &f, p, err) : load_plt_layer(tc, i, &f, p, err);
    }
    free(files);
    return rc;
}

// A string setting of config.yaml into out (n bytes): absent or null leaves out as it is; a list,
// a mapping or a string too long for out is refused.
static ct_status config_string(const ct_yaml *cfg, const char *key, const char *name, char *out, size_t n, ct_err *err) {
    const ct_yaml *v = ct_yaml_get(cfg, key);
    if (!v || ct_yaml_is_null(v)) return CT_OK;
    if (v->kind != CT_YAML_SCALAR)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: %s: expected a string, found %s", name, v->line, key, ct_yaml_type(v));
    size_t k = strlen(v->value);
    if (k >= n)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: %s: %zu characters; expected at most %zu", name, v->line, key, k, n - 1);
    memcpy(out, v->value, k + 1);
    return CT_OK;
}

static ct_status apply_config(ct_transcoders *tc, const ct_yaml *cfg, const char *name, ct_err *err) {
    char kind[64] = "";
    ct_status rc = config_string(cfg, "model_kind", name, kind, sizeof kind, err);
    if (rc) return rc;
    if (kind[0] && strcmp(kind, "transcoder_set") != 0 && strcmp(kind, "cross_layer_transcoder") != 0)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s line %d: model_kind '%s'; expected transcoder_set or "
                       "cross_layer_transcoder", name, ct_yaml_get(cfg, "model_kind")->line, kind);
    if (kind[0]) tc->kind = strcmp(kind, "cross_layer_transcoder") == 0 ? CT_TC_CLT : CT_TC_PLT;
    if (!rc) rc = config_string(cfg, "feature_input_hook", name, tc->input_hook, sizeof tc->input_hook, err);
    if (!rc) rc = config_string(cfg, "feature_output_hook", name, tc->output_hook, sizeof tc->output_hook, err);
    if (!rc) rc = config_string(cfg, "model_name", name, tc->model_name, sizeof tc->model_name, err);
    if (!rc) rc = config_string(cfg, "neuronpedia_model_id", name, tc->np_model_id, sizeof tc->np_model_id, err);
    if (!rc) rc = config_string(cfg, "neuronpedia_source_set", name, tc->np_source_set, sizeof tc->np_source_set, err);
    if (!rc) rc = config_string(cfg, "scan", name, tc->scan, sizeof tc->scan, err);
    const ct_yaml *list = ct_yaml_get(cfg, "transcoders");
    if (!rc && list && list->kind != CT_YAML_LIST && !ct_yaml_is_null(list))
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: transcoders: expected a list of paths (or of {id, layer, filepath} "
                     "mappings), found %s", name, list->line, ct_yaml_type(list));
    return rc;
}

// Activation named in config.yaml (checked after the weights: a threshold implies JumpReLU).
static ct_status config_activation(ct_transcoders *tc, const ct_yaml *cfg, const char *name, ct_err *err) {
    const ct_yaml *a = ct_yaml_get(cfg, "activation");
    if (!a || ct_yaml_is_null(a)) a = ct_yaml_get(cfg, "activation_function");
    if (!a || ct_yaml_is_null(a)) return CT_OK;
    if (a->kind != CT_YAML_SCALAR)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: %s: expected relu, jump_relu or topk, found %s", name, a->line,
                       a->key, ct_yaml_type(a));
    const char *v = a->value;
    if (strcmp(v, "relu") == 0) tc->act = CT_TC_RELU;
    else if (strcmp(v, "jump_relu") == 0 || strcmp(v, "jumprelu") == 0) tc->act = CT_TC_JUMPRELU;
    else if (strcmp(v, "topk") == 0) tc->act = CT_TC_TOPK;
    else return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s line %d: unknown activation '%s'; expected relu, jump_relu or topk",
                        name, a->line, v);
    const ct_yaml *k = ct_yaml_get(cfg, "k");
    if (tc->act == CT_TC_TOPK) {
        long long kv = 0;
        if (!k || !ct_yaml_int(k, &kv) || kv < 1 || kv > 1 << 24)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s line %d: activation topk needs an integer k in 1..16777216; found %s%s%.40s%s",
                           name, k ? k->line : a->line, k ? ct_yaml_type(k) : "no k", k && k->kind == CT_YAML_SCALAR ? " '" : "",
                           k && k->kind == CT_YAML_SCALAR ? k->value : "", k && k->kind == CT_YAML_SCALAR ? "'" : "");
        tc->k = (int)kv;
        for (int l = 0; l < tc->n_layers; l++)   // torch.topk refuses a k above the width too (held layers)
            if (tc->layers[l].d_tc && tc->k > tc->layers[l].d_tc)
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "config.yaml line %d: activation topk with k = %d but layer %d has %d features",
                               a->line, tc->k, l, tc->layers[l].d_tc);
    }
    if (tc->act == CT_TC_JUMPRELU)
        for (int l = 0; l < tc->n_layers; l++)
            if (tc->layers[l].d_tc && !tc->layers[l].threshold)
                return ct_fail(err, CT_STATUS_NOT_FOUND, "%s line %d: jump_relu but layer %d has no threshold", name, a->line, l);
    return CT_OK;
}

ct_status ct_transcoders_load(ct_ctx *ctx, ct_transcoders **out, const char *path, ct_err *err) {
    return ct_transcoders_load_share(ctx, out, path, 0, 1, err);
}

ct_status ct_transcoders_load_share(ct_ctx *ctx, ct_transcoders **out, const char *path, int rank, int size, ct_err *err) {
    *out = NULL;
    if (size < 1 || rank < 0 || rank >= size)
        return ct_fail(err, CT_STATUS_BAD_ARG, "transcoders: rank %d of %d", rank, size);
    ct_status rc = ct_ctx_check_read(ctx, path, err);   // a refused path: refused before anything else is looked at
    if (rc && rc != CT_STATUS_NOT_FOUND) return rc;
    ct_transcoders *tc = calloc(1, sizeof *tc);
    if (!tc) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    tc->hold_lo = rank, tc->hold_hi = size;   // the share, until set_layers knows the layers
    snprintf(tc->path, sizeof tc->path, "%s", path);
    char dir[1024], cfg_path[1200];
    const char *cfg_name = cfg_path;   // messages about the config name it and the line
    ct_yaml *cfg = NULL;
    rc = CT_OK;
    size_t n = strlen(path);
    if (n + sizeof "/W_enc_0.safetensors" > sizeof dir) {   // a cut path would name other files
        ct_transcoders_free(tc);
        return ct_fail(err, CT_STATUS_BAD_ARG, "transcoders %.200s...: path longer than %zu bytes", path,
                       sizeof dir - sizeof "/W_enc_0.safetensors");
    }
    int is_yaml = n > 5 && (strcmp(path + n - 5, ".yaml") == 0 || strcmp(path + n - 4, ".yml") == 0);
    if (ct_is_dir(path) || is_yaml) {
        snprintf(dir, sizeof dir, "%s", path);
        if (is_yaml) {
            char *s = strrchr(dir, '/');
            if (s) *s = 0; else snprintf(dir, sizeof dir, ".");
            snprintf(cfg_path, sizeof cfg_path, "%s", path);
        } else {
            snprintf(cfg_path, sizeof cfg_path, "%s/config.yaml", dir);
        }
        char p[1200];
        snprintf(p, sizeof p, "%s/W_enc_0.safetensors", dir);
        tc->kind = ct_is_file(p) ? CT_TC_CLT : CT_TC_PLT;
        if (ct_is_file(cfg_path)) {
            char *text;
            size_t len;
            rc = ct_read_file(ctx, cfg_path, &text, &len, 16u << 20, err);
            if (!rc) {
                rc = ct_yaml_parse(&cfg, text, len, cfg_name, err);
                free(text);
            }
            if (!rc) rc = apply_config(tc, cfg, cfg_name, err);
        } else if (is_yaml) {
            rc = ct_fail(err, CT_STATUS_NOT_FOUND, "no such file: %s", cfg_path);
        }
        const ct_yaml *list = cfg ? ct_yaml_get(cfg, "transcoders") : NULL;
        if (ct_yaml_is_null(list)) list = NULL;   // `transcoders:` with nothing: the layer files of the folder
        if (!rc) rc = load_dir_files(ctx, tc, dir, list, cfg_name, err);
        snprintf(tc->format, sizeof tc->format, "%s", tc->kind == CT_TC_CLT ? "clt" : "plt");
    } else if (ct_is_file(path)) {
        layer_file f;
        rc = set_layers(tc, 1, err);
        if (!rc) rc = open_file(ctx, tc, path, &f, err);
        if (!rc) rc = load_plt_layer(tc, 0, &f, path, err);
    } else {
        rc = access(path, F_OK) == 0
                 ? ct_fail(err, CT_STATUS_IO, "transcoders %s is not a regular file or a directory", path)
                 : ct_fail(err, CT_STATUS_NOT_FOUND, "no transcoders at %s (no such file or directory)", path);
    }
    if (!rc && cfg) rc = config_activation(tc, cfg, cfg_name, err);
    if (!rc && !tc->input_hook[0]) {   // defaults as circuit-tracer's sets
        int gemmascope = tc->n_npz > 0;
        snprintf(tc->input_hook, sizeof tc->input_hook, "%s",
                 tc->kind == CT_TC_CLT ? "hook_resid_mid" : gemmascope ? "ln2.hook_normalized" : "mlp.hook_in");
    }
    if (!rc && !tc->output_hook[0])
        snprintf(tc->output_hook, sizeof tc->output_hook, "%s",
                 tc->kind == CT_TC_CLT || tc->n_npz > 0 ? "hook_mlp_out" : "mlp.hook_out");
    ct_yaml_free(cfg);
    if (rc) {
        ct_transcoders_free(tc);
        return rc;
    }
    // decoders are read a few rows at a time: a fault on them reads only what it needs; encoders
    // are read whole by every encoding
    for (int l = 0; l < tc->n_layers; l++) {
        if (!tc->layers[l].d_tc) continue;   // not held
        ct_map_advise(tc->layers[l].W_dec.data, mat_extent(&tc->layers[l].W_dec), CT_ADVISE_RANDOM);
        if (!tc->layers[l].W_enc_owned) ct_map_advise(tc->layers[l].W_enc.data, mat_extent(&tc->layers[l].W_enc), CT_ADVISE_HUGE);
    }
    *out = tc;
    return CT_OK;
}

ct_status ct_transcoders_check(const ct_transcoders *tc, const ct_model *m, ct_err *err) {
    if (tc->d_model != m->cfg.d_model)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "transcoders have d_model %d; the model has %d", tc->d_model, m->cfg.d_model);
    if (tc->n_layers != m->cfg.n_layers)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "transcoders cover %d layers; the model has %d", tc->n_layers, m->cfg.n_layers);
    int mlo = ct_model_is_split(m) ? m->hold_lo : 0, mhi = ct_model_is_split(m) ? m->hold_hi : 0;
    if (tc->hold_lo != mlo || tc->hold_hi != (mhi == m->cfg.n_layers && mlo == 0 ? 0 : mhi))
        return ct_fail(err, CT_STATUS_BAD_ARG, "the model holds layers %d..%d and the transcoders %d..%d: a layer-split "
                       "model needs transcoders loaded for the same layers", m->hold_hi ? m->hold_lo : 0,
                       (m->hold_hi ? m->hold_hi : m->cfg.n_layers) - 1, tc->hold_lo,
                       (tc->hold_hi ? tc->hold_hi : tc->n_layers) - 1);
    const char *hooks[2] = {tc->input_hook, tc->output_hook};
    for (int i = 0; i < 2; i++) {
        ct_hook_id id;
        if (ct_hook_at(m, 0, hooks[i], &id, err))
            return ct_fail(err, CT_STATUS_NOT_FOUND, "transcoders %s hook '%s' is not a hook point of this %s model",
                           i ? "write to the" : "read the", hooks[i], m->cfg.architecture);
    }
    return CT_OK;
}

// ----------------------------------------------------------------------------
// Encode, decode, reconstruct

// CT_OK when the set holds layer's weights (layer in range), else why not.
static ct_status check_layer(const ct_transcoders *tc, int layer, ct_err *err) {
    if (layer < 0 || layer >= tc->n_layers)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "transcoder layer %d outside 0..%d", layer, tc->n_layers - 1);
    if (!tc->layers[layer].d_tc)
        return ct_fail(err, CT_STATUS_BAD_ARG, "transcoder layer %d is held by another rank: this process holds layers "
                       "%d..%d (a layer-split set)", layer, tc->hold_lo, tc->hold_hi - 1);
    return CT_OK;
}

ct_status ct_tc_activate(const ct_transcoders *tc, int layer, float *v, int T, ct_err *err) {
    const ct_tc_layer *L = &tc->layers[layer];
    int F = L->d_tc;
    if (tc->act == CT_TC_TOPK) {
        // per position: the k largest pre-activations kept as they are, negative ones included,
        // the rest zero (circuit-tracer's TopK; no ReLU). Ties at the k-th value go to the lower
        // index and NaN ranks below every number (ct_topk's order).
        int64_t K = tc->k < F ? tc->k : F;
        int64_t *idx = malloc(sizeof(int64_t) * (size_t)(K + 1));   // (K,)
        float *val = malloc(sizeof(float) * (size_t)(K + 1));       // (K,)
        if (!idx || !val) {
            free(idx), free(val);
            return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for TopK of %lld features", (long long)K);
        }
        for (int t = 0; t < T; t++) {
            float *r = v + (size_t)t * F;   // (F,)
            ct_topk(idx, r, F, K);
            for (int64_t k = 0; k < K; k++) val[k] = r[idx[k]];
            memset(r, 0, sizeof(float) * (size_t)F);
            for (int64_t k = 0; k < K; k++) r[idx[k]] = val[k];
        }
        free(idx), free(val);
        return CT_OK;
    }
    for (int t = 0; t < T; t++) {
        float *r = v + (size_t)t * F;
        for (int f = 0; f < F; f++) {
            if (tc->act == CT_TC_JUMPRELU && L->threshold) r[f] = r[f] > L->threshold[f] ? r[f] : 0.0f;
            else r[f] = r[f] > 0.0f ? r[f] : 0.0f;
        }
    }
    return CT_OK;
}

ct_status ct_tc_encode(const ct_transcoders *tc, int layer, const float *x, int T, float *pre, float *act, ct_err *err) {
    ct_status rc0 = check_layer(tc, layer, err);
    if (rc0) return rc0;
    const ct_tc_layer *L = &tc->layers[layer];
    const ct_mat *W = &L->W_enc;
    int F = L->d_tc;
    float *buf = pre ? pre : act;
    if (!buf) return CT_OK;
    // the whole encoder is read: its pages mapped in one call (nothing to do when they are)
    if (!L->W_enc_owned) ct_map_advise(W->data, mat_extent(W), CT_ADVISE_POPULATE);
    // buf (T, F) = x (T, D) @ W_enc (F, D)^T + b_enc, W_enc as stored: a few positions on half
    // precision each summed as one alone (ct_mat_matmul_few), else converted a tile at a time
    // into scratch when it is not aligned float32 (tiles shared among the threads), except for
    // one position (each row converted as it is read)
    if (!ct_mat_matmul_few(buf, x, W, L->b_enc, T)) {
        size_t tile_n = T > 1 ? ct_mat_scratch_floats(W) : 0;
        float *tile = tile_n ? malloc(sizeof(float) * tile_n) : NULL;
        if (tile_n && !tile) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for encoder tiles of %zu floats", tile_n);
        ct_mat_matmul(buf, x, W, L->b_enc, T, tile, tile_n);
        free(tile);
    }
    if (act) {
        if (act != buf) memcpy(act, buf, sizeof(float) * (size_t)T * F);
        return ct_tc_activate(tc, layer, act, T, err);
    }
    return CT_OK;
}

static ct_status check_feature(const ct_transcoders *tc, int layer, int64_t f, ct_err *err) {
    ct_status rc = check_layer(tc, layer, err);
    if (rc) return rc;
    if (f < 0 || f >= tc->layers[layer].d_tc)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "feature %lld outside 0..%d of layer %d", (long long)f,
                       tc->layers[layer].d_tc - 1, layer);
    return CT_OK;
}

ct_status ct_tc_encoder_row(const ct_transcoders *tc, int layer, int64_t f, float *out, ct_err *err) {
    ct_status rc = check_feature(tc, layer, f, err);
    if (!rc) ct_mat_row(&tc->layers[layer].W_enc, f, out);
    return rc;
}

ct_status ct_tc_encoder_rows(const ct_transcoders *tc, int layer, const int64_t *features, int n, float *const *rows,
                             ct_err *err) {
    for (int i = 0; i < n; i++) {
        ct_status rc = check_feature(tc, layer, features[i], err);
        if (rc) return rc;
    }
    const ct_mat *W = &tc->layers[layer].W_enc;
    if (W->cs == 1) {   // rows as stored
        for (int i = 0; i < n; i++) ct_mat_row(W, features[i], rows[i]);
        return CT_OK;
    }
    // stored (D, F): stored row d holds element d of every feature's row
    size_t es = ct_dtype_size(W->dtype);
    for (int64_t d = 0; d < W->cols; d++) {
        const uint8_t *src = W->data + (size_t)(d * W->cs) * es;
        for (int i = 0; i < n; i++) ct_to_f32(rows[i] + d, src + (size_t)(features[i] * W->rs) * es, W->dtype, 1);
    }
    return CT_OK;
}

void ct_tc_prefetch_rows(const ct_transcoders *tc, int layer, const int64_t *features, int n) {
    const ct_mat *W = &tc->layers[layer].W_dec;
    if (W->cs != 1 || tc->layers[layer].W_dec_owned) return;   // a row is not one range of the file
    size_t es = ct_dtype_size(W->dtype), len = (size_t)W->cols * es;
    const uint8_t *a = NULL, *b = NULL;   // the range gathered so far: rows that are near merge
    for (int i = 0; i < n; i++) {
        if (features[i] < 0 || features[i] >= W->rows) continue;
        const uint8_t *p = W->data + (size_t)(features[i] * W->rs) * es;
        if (a && p >= a && p <= b + 4096) {
            if (p + len > b) b = p + len;
            continue;
        }
        if (a) ct_map_advise(a, (size_t)(b - a), CT_ADVISE_WILLNEED);
        a = p, b = p + len;
    }
    if (a) ct_map_advise(a, (size_t)(b - a), CT_ADVISE_WILLNEED);
}

ct_status ct_tc_decoder_row(const ct_transcoders *tc, int layer, int64_t f, int j, float *out, ct_err *err) {
    ct_status rc = check_feature(tc, layer, f, err);
    if (rc) return rc;
    const ct_tc_layer *L = &tc->layers[layer];
    if (j < 0 || j >= L->n_out)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "layer %d features write %d layer(s); target offset %d is out of range",
                       layer, L->n_out, j);
    int D = tc->d_model;
    // one slice of the row: columns [j*D, (j+1)*D)
    ct_mat slice = L->W_dec;
    slice.data += (size_t)(j * D * slice.cs) * ct_dtype_size(slice.dtype);
    slice.cols = D;
    ct_mat_row(&slice, f, out);
    return CT_OK;
}

ct_status ct_tc_decode_add(const ct_transcoders *tc, int layer, int j, const float *act, int T, float *y, ct_err *err) {
    const ct_tc_layer *L = &tc->layers[layer];
    int F = L->d_tc, D = tc->d_model;
    // the nonzero activations grouped by feature (one sequential scan, then counting sort), so
    // each decoder row is read once
    size_t nnz = 0;
    for (size_t i = 0; i < (size_t)T * F; i++) nnz += act[i] != 0.0f;
    int *start = calloc((size_t)F + 1, sizeof(int)), *pos = malloc(sizeof(int) * (nnz + 1));
    float *row = malloc(sizeof(float) * (size_t)D);
    double *acc = calloc((size_t)T * D, sizeof(double));   // (T, D): sums of up to F terms
    ct_status rc = start && pos && row && acc ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        for (size_t i = 0; i < (size_t)T * F; i++)
            if (act[i] != 0.0f) start[i % (size_t)F + 1]++;
        for (int f = 0; f < F; f++) start[f + 1] += start[f];
        int *fill = calloc((size_t)F, sizeof(int));
        if (!fill) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        for (int t = 0; !rc && t < T; t++)
            for (int f = 0; f < F; f++)
                if (act[(size_t)t * F + f] != 0.0f) pos[start[f] + fill[f]++] = t;
        free(fill);
        // the rows about to be read, asked for at once
        int64_t *feats = malloc(sizeof(int64_t) * (nnz + 1));
        int n = 0;
        for (int f = 0; feats && f < F; f++)
            if (start[f] != start[f + 1]) feats[n++] = f;
        if (feats) ct_tc_prefetch_rows(tc, layer, feats, n);
        free(feats);
    }
    for (int f = 0; f < F && !rc; f++) {
        if (start[f] == start[f + 1]) continue;
        if ((rc = ct_tc_decoder_row(tc, layer, f, j, row, err))) break;
        for (int k = start[f]; k < start[f + 1]; k++) {
            int t = pos[k];
            double a = act[(size_t)t * F + f], *at = acc + (size_t)t * D;
            for (int d = 0; d < D; d++) at[d] += a * row[d];
        }
    }
    for (size_t i = 0; !rc && i < (size_t)T * D; i++) y[i] += (float)acc[i];
    free(start);
    free(pos);
    free(row);
    free(acc);
    return rc;
}

void ct_tc_skip_add(const ct_transcoders *tc, int layer, const float *x, int T, float *y) {
    const ct_tc_layer *L = &tc->layers[layer];
    if (!L->W_skip) return;
    int D = tc->d_model;
    ct_sgemm(0, L->skip_mode == CT_SKIP_XWT, T, D, D, 1.0f, x, D, L->W_skip, D, 1.0f, y, D);
}

// A thread reading the mapped encoders from disk two layers ahead of the layer being encoded
// (NULL when none is mapped, or no thread starts).
static ct_prefetch *prefetch_encoders(const ct_transcoders *tc) {
    const void **ptr = malloc(sizeof(void *) * (size_t)tc->n_layers);
    size_t *len = malloc(sizeof(size_t) * (size_t)tc->n_layers);
    ct_prefetch *pf = NULL;
    if (ptr && len) {
        for (int l = 0; l < tc->n_layers; l++) {
            const ct_tc_layer *L = &tc->layers[l];
            ptr[l] = L->W_enc.data, len[l] = L->W_enc_owned ? 0 : mat_extent(&L->W_enc);
        }
        pf = ct_prefetch_start(ptr, len, tc->n_layers, 2);
    }
    free(ptr), free(len);
    return pf;
}

ct_status ct_tc_reconstruct_each(const ct_transcoders *tc, const float *inputs, int T, float *out,
                                 ct_status (*each)(void *arg, int layer, const float *act, int F, ct_err *err), void *arg,
                                 ct_err *err) {
    int L = tc->n_layers, D = tc->d_model;
    size_t TD = (size_t)T * D;
    if (tc->hold_hi)
        return ct_fail(err, CT_STATUS_BAD_ARG, "reconstruct: this process holds transcoder layers %d..%d of %d (a layer-split "
                       "set); reconstructing every layer needs them all", tc->hold_lo, tc->hold_hi - 1, L);
    for (int l = 0; l < L; l++) {
        float *y = out + l * TD;
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * D, tc->layers[l].b_dec, sizeof(float) * (size_t)D);
        ct_tc_skip_add(tc, l, inputs + l * TD, T, y);
    }
    ct_status rc = CT_OK;
    ct_prefetch *pf = prefetch_encoders(tc);
    for (int l = 0; l < L && !rc; l++) {
        int F = tc->layers[l].d_tc;
        float *act = malloc(sizeof(float) * (size_t)T * F);
        if (!act) {
            ct_prefetch_stop(pf);
            return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        }
        ct_prefetch_at(pf, l);
        rc = ct_tc_encode(tc, l, inputs + l * TD, T, NULL, act, err);
        if (!rc && each) rc = each(arg, l, act, F, err);
        for (int j = 0; !rc && j < tc->layers[l].n_out; j++) rc = ct_tc_decode_add(tc, l, j, act, T, out + (l + j) * TD, err);
        free(act);
    }
    ct_prefetch_stop(pf);
    return rc;
}

ct_status ct_tc_reconstruct(const ct_transcoders *tc, const float *inputs, int T, float *out, ct_err *err) {
    return ct_tc_reconstruct_each(tc, inputs, T, out, NULL, NULL, err);
}

// ----------------------------------------------------------------------------
// Random sets

static float *random_vec(size_t n, float scale, float base, uint64_t *seed) {
    float *p = ct_alloc(sizeof(float) * n + 1);
    if (p)
        for (size_t i = 0; i < n; i++) p[i] = base + scale * ct_rand_uniform(seed);
    return p;
}

ct_status ct_transcoders_random(ct_transcoders **out, const ct_model *m, int d_tc, int k, uint64_t seed, ct_err *err) {
    *out = NULL;
    int L = m->cfg.n_layers, D = m->cfg.d_model;
    if (d_tc <= 0 || k < 0 || k > d_tc)
        return ct_fail(err, CT_STATUS_BAD_ARG, "random transcoders: expected d_tc > 0 and 0 <= k <= d_tc, got %d and %d", d_tc, k);
    ct_transcoders *tc = calloc(1, sizeof *tc);
    if (!tc || !(tc->layers = calloc((size_t)L, sizeof(ct_tc_layer)))) {
        free(tc);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    tc->kind = CT_TC_PLT, tc->n_layers = L, tc->d_model = D;
    tc->act = k ? CT_TC_TOPK : CT_TC_RELU, tc->k = k;
    snprintf(tc->input_hook, sizeof tc->input_hook, "mlp.hook_in");
    snprintf(tc->output_hook, sizeof tc->output_hook, "mlp.hook_out");
    snprintf(tc->format, sizeof tc->format, "random");
    snprintf(tc->path, sizeof tc->path, "random:%llu", (unsigned long long)seed);
    float s = 1.0f / sqrtf((float)D);
    int ok = 1;
    for (int l = 0; l < L && ok; l++) {
        ct_tc_layer *y = &tc->layers[l];
        y->d_tc = d_tc, y->n_out = 1;
        ok = (y->W_enc_owned = random_vec((size_t)d_tc * D, s, 0, &seed)) && (y->b_enc = random_vec((size_t)d_tc, 0.1f, 0, &seed)) &&
             (y->b_dec = random_vec((size_t)D, 0.1f, 0, &seed)) && (y->W_dec_owned = random_vec((size_t)d_tc * D, s, 0, &seed));
        if (ok) y->W_enc = (ct_mat){(const uint8_t *)y->W_enc_owned, CT_DT_F32, d_tc, D, D, 1};
        if (ok) y->W_dec = (ct_mat){(const uint8_t *)y->W_dec_owned, CT_DT_F32, d_tc, D, D, 1};
    }
    if (!ok) {
        ct_transcoders_free(tc);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for random transcoders");
    }
    *out = tc;
    return CT_OK;
}

ct_status ct_tc_logit_effect(const ct_transcoders *tc, const ct_model *m, int layer, int64_t f, float *out, ct_err *err) {
    int D = tc->d_model, V = m->cfg.vocab_size;
    if (D != m->cfg.d_model) return ct_fail(err, CT_STATUS_BAD_SHAPE, "transcoders d_model %d, model %d", D, m->cfg.d_model);
    if (layer < 0 || layer >= tc->n_layers)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "layer %d outside 0..%d", layer, tc->n_layers - 1);
    ct_status rc0 = ct_model_holds(m, m->cfg.n_layers, "logit effect", err);
    if (!rc0) rc0 = check_layer(tc, layer, err);
    if (rc0) return rc0;
    float *d = calloc((size_t)D, sizeof(float)), *row = malloc(sizeof(float) * (size_t)D), *u = malloc(sizeof(float) * (size_t)D);
    ct_status rc = d && row && u ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int j = 0; !rc && j < tc->layers[layer].n_out; j++) {
        rc = ct_tc_decoder_row(tc, layer, f, j, row, err);
        for (int i = 0; !rc && i < D; i++) d[i] += row[i];
    }
    for (int i = 0; !rc && i < D; i++) d[i] *= m->lnf_w ? m->lnf_w[i] + m->cfg.norm_gain_offset : 1.0f;
    for (int v = 0; !rc && v < V; v++) {
        ct_mat_row(&m->lm_head, v, u);   // (D,) unembedding row
        double s = 0;
        for (int i = 0; i < D; i++) s += (double)u[i] * d[i];
        out[v] = (float)s;
    }
    free(d);
    free(row);
    free(u);
    return rc;
}
