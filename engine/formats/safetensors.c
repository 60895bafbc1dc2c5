// safetensors.c - safetensors reading (validated, mmap) and writing.
#include "formats/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"

#define ST_MAX_HEADER (100u * 1000u * 1000u)

// ----------------------------------------------------------------------------
// Reading

// Orders of pointers to tensors: by where their data begins, by name.
static int cmp_by_begin(const void *a, const void *b) {
    const ct_st_tensor *x = *(ct_st_tensor *const *)a, *y = *(ct_st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(ct_st_tensor *const *)a)->name, (*(ct_st_tensor *const *)b)->name);
}

void ct_safetensors_free(ct_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->by_name);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    if (st->mapped && st->map) munmap(st->map, st->size);
    free(st);
}

// Reads a JSON number that must be a non-negative integer below 2^53.
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static ct_status parse_entry(ct_st_tensor *t, const cJSON *e, const uint8_t *data,
                             uint64_t data_size, ct_err *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: entry '%.80s' is not an object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return ct_fail(err, CT_STATUS_BAD_FORMAT,
                       "safetensors: tensor '%.80s' needs string dtype, array shape and data_offsets",
                       name);
    int k;
    for (k = 0; k < CT_DT_COUNT; k++)
        if (strcmp(dt->valuestring, ct_dtype_name((ct_dtype)k)) == 0) break;
    if (k == CT_DT_COUNT)
        return ct_fail(err, CT_STATUS_BAD_DTYPE, "safetensors: tensor '%.80s' has unknown dtype '%.32s'",
                       name, dt->valuestring);
    t->dtype = (ct_dtype)k;
    int nd = cJSON_GetArraySize(shape);
    if (nd > CT_ST_MAX_DIMS)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "safetensors: tensor '%.80s' has %d dimensions (max %d)",
                       name, nd, CT_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, shape) {
        uint64_t d;
        if (!json_u64(v, &d))
            return ct_fail(err, CT_STATUS_BAD_SHAPE,
                           "safetensors: tensor '%.80s' shape entry %d is not a non-negative integer",
                           name, i);
        t->shape[i++] = (int64_t)d;
        if (d && numel > UINT64_MAX / 16 / d)
            return ct_fail(err, CT_STATUS_BAD_SHAPE, "safetensors: tensor '%.80s' shape overflows", name);
        numel *= d;
    }
    uint64_t begin, end;
    if (cJSON_GetArraySize(offs) != 2 || !json_u64(cJSON_GetArrayItem(offs, 0), &begin) ||
        !json_u64(cJSON_GetArrayItem(offs, 1), &end))
        return ct_fail(err, CT_STATUS_BAD_FORMAT,
                       "safetensors: tensor '%.80s' data_offsets must be two non-negative integers", name);
    if (begin > end || end > data_size)
        return ct_fail(err, CT_STATUS_BAD_FORMAT,
                       "safetensors: tensor '%.80s' data_offsets [%llu, %llu] outside the %llu data bytes",
                       name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)data_size);
    if (end - begin != numel * ct_dtype_size((ct_dtype)k))
        return ct_fail(err, CT_STATUS_BAD_SHAPE,
                       "safetensors: tensor '%.80s' holds %llu bytes but shape and %s need %llu", name,
                       (unsigned long long)(end - begin), ct_dtype_name((ct_dtype)k),
                       (unsigned long long)(numel * ct_dtype_size((ct_dtype)k)));
    t->data = data + begin;
    t->nbytes = (size_t)(end - begin);
    t->name = strdup(name);
    return t->name ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
}

static ct_status parse_metadata(ct_safetensors *st, const cJSON *m, ct_err *err) {
    if (!cJSON_IsObject(m))
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: __metadata__ is not an object");
    int n = cJSON_GetArraySize(m);
    st->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    st->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (!st->meta_keys || !st->meta_values) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    const cJSON *v;
    cJSON_ArrayForEach(v, m) {
        if (!cJSON_IsString(v))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: __metadata__ value '%.80s' is not a string",
                           v->string);
        st->meta_keys[st->n_meta] = strdup(v->string);
        st->meta_values[st->n_meta] = strdup(v->valuestring);
        st->n_meta++;
        if (!st->meta_keys[st->n_meta - 1] || !st->meta_values[st->n_meta - 1])
            return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    return CT_OK;
}

static ct_status parse_into(ct_safetensors *st, ct_err *err) {
    const uint8_t *buf = st->map;
    size_t size = st->size;
    if (size < 8)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: file of %zu bytes is shorter than the 8-byte header length", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    if (n > ST_MAX_HEADER)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: header length %llu exceeds the 100 MB limit",
                       (unsigned long long)n);
    if (n > size - 8)
        return ct_fail(err, CT_STATUS_BAD_FORMAT,
                       "safetensors: header length %llu is larger than the %zu bytes after it",
                       (unsigned long long)n, size - 8);
    const char *end_ptr = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)buf + 8, (size_t)n, &end_ptr, 0);
    if (!root)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: header is not valid JSON (near byte %lld)",
                       end_ptr ? (long long)(end_ptr - (const char *)buf) : -1LL);
    ct_status rc = CT_OK;
    if (!cJSON_IsObject(root)) {
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: header is not a JSON object");
        goto done;
    }
    int count = cJSON_GetArraySize(root);
    st->tensors = calloc((size_t)count + 1, sizeof(ct_st_tensor));
    if (!st->tensors) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    const uint8_t *data = buf + 8 + n;
    uint64_t data_size = size - 8 - n;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (st->meta_keys) {
                rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: __metadata__ appears twice");
                goto done;
            }
            if ((rc = parse_metadata(st, e, err))) goto done;
            continue;
        }
        if ((rc = parse_entry(&st->tensors[st->n_tensors], e, data, data_size, err))) goto done;
        st->n_tensors++;
    }
    // Unique names and disjoint ranges, checked in sorted orders (n log n: a header may hold a
    // million entries); the order by name stays for ct_safetensors_find.
    ct_st_tensor **tmp = malloc(sizeof *tmp * ((size_t)st->n_tensors + 1));
    st->by_name = malloc(sizeof *st->by_name * ((size_t)st->n_tensors + 1));
    if (!tmp || !st->by_name) {
        free(tmp);
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    for (int i = 0; i < st->n_tensors; i++) st->by_name[i] = tmp[i] = &st->tensors[i];
    qsort(st->by_name, (size_t)st->n_tensors, sizeof *tmp, cmp_by_name);
    for (int i = 1; i < st->n_tensors && !rc; i++)
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0)
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: tensor '%.80s' appears twice", st->by_name[i]->name);
    qsort(tmp, (size_t)st->n_tensors, sizeof *tmp, cmp_by_begin);
    for (int i = 1; i < st->n_tensors && !rc; i++)
        if (tmp[i - 1]->nbytes && tmp[i]->nbytes && tmp[i - 1]->data + tmp[i - 1]->nbytes > tmp[i]->data)
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "safetensors: tensors '%.80s' and '%.80s' overlap",
                         tmp[i - 1]->name, tmp[i]->name);
    free(tmp);
done:
    cJSON_Delete(root);
    return rc;
}

ct_status ct_safetensors_parse(ct_safetensors **out, const uint8_t *buf, size_t size, ct_err *err) {
    *out = NULL;
    ct_safetensors *st = calloc(1, sizeof *st);
    if (!st) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    st->map = (uint8_t *)buf;
    st->size = size;
    ct_status rc = parse_into(st, err);
    if (rc) {
        ct_safetensors_free(st);
        return rc;
    }
    *out = st;
    return CT_OK;
}

ct_status ct_safetensors_open(ct_ctx *ctx, ct_safetensors **out, const char *path, ct_err *err) {
    *out = NULL;
    ct_safetensors *st = calloc(1, sizeof *st);
    if (!st) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    void *map;
    ct_status rc = ct_map_file(ctx, path, &map, &st->size, err);
    if (rc) {
        free(st);
        return rc;
    }
    st->map = map;
    st->mapped = map != NULL;
    if ((rc = parse_into(st, err))) {
        ct_err_where(err, path);
        ct_safetensors_free(st);
        return rc;
    }
    *out = st;
    return CT_OK;
}

const ct_st_tensor *ct_safetensors_find(const ct_safetensors *st, const char *name) {
    int lo = 0, hi = st->by_name ? st->n_tensors : 0;   // binary search of the names
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(st->by_name[mid]->name, name);
        if (c == 0) return st->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int64_t ct_st_numel(const ct_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

ct_status ct_st_to_f32(float *out, const ct_st_tensor *t, ct_err *err) {
    size_t n = (size_t)ct_st_numel(t);
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case CT_DT_F32:
        memcpy(out, p, n * 4);
        return CT_OK;
    case CT_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return CT_OK;
    case CT_DT_F16:
    case CT_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
            out[i] = t->dtype == CT_DT_F16 ? ct_f16_to_f32(h) : ct_bf16_to_f32(h);
        }
        return CT_OK;
    default:
        return ct_fail(err, CT_STATUS_BAD_DTYPE, "tensor '%.80s' has dtype %s; expected F32, F16, BF16 or F64",
                       t->name, ct_dtype_name(t->dtype));
    }
}

// ----------------------------------------------------------------------------
// Writing

ct_status ct_safetensors_write(ct_ctx *ctx, const char *path, const ct_st_entry *entries, int n,
                               const char *const *meta_kv, int n_meta, ct_err *err) {
    ct_status rc = ct_ctx_check_write(ctx, path, err);
    if (rc) return rc;
    cJSON *root = cJSON_CreateObject();
    if (!root) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    char *header = NULL;
    ct_wfile w = {0};
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; m && i < n_meta; i++) cJSON_AddStringToObject(m, meta_kv[2 * i], meta_kv[2 * i + 1]);
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const ct_st_entry *e = &entries[i];
        if ((e->dtype != CT_DT_F32 && e->dtype != CT_DT_F16 && e->dtype != CT_DT_BF16 && !(e->dtype == CT_DT_I64 && e->i64)) ||
            (!e->data && !e->i64 && !(e->row && e->dtype == CT_DT_F32 && e->ndim >= 1))) {
            rc = ct_fail(err, CT_STATUS_BAD_DTYPE, "safetensors writer: tensor '%s': dtype %s; expected F32, F16, BF16 or I64 "
                         "data (or F32 rows)", e->name, ct_dtype_name(e->dtype));
            goto done;
        }
        uint64_t numel = 1;
        cJSON *o = cJSON_AddObjectToObject(root, e->name);
        cJSON *shape = cJSON_CreateArray();
        cJSON *offs = cJSON_CreateArray();
        if (!o || !shape || !offs) {
            cJSON_Delete(shape);
            cJSON_Delete(offs);
            rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
            goto done;
        }
        cJSON_AddStringToObject(o, "dtype", ct_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[d]));
            numel *= (uint64_t)e->shape[d];
        }
        cJSON_AddItemToObject(o, "shape", shape);
        uint64_t nb = numel * ct_dtype_size(e->dtype);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + nb)));
        cJSON_AddItemToObject(o, "data_offsets", offs);
        offset += nb;
    }
    header = cJSON_PrintUnformatted(root);
    if (!header) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    size_t hlen = strlen(header), padded = (hlen + 7) / 8 * 8;
    if ((rc = ct_wfile_open(ctx, &w, path, err))) goto done;
    FILE *f = w.f;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++) {
        const ct_st_entry *e = &entries[i];
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= (size_t)e->shape[d];
        if (e->dtype == CT_DT_F32 && !e->data) {
            size_t cols = e->shape[0] ? numel / (size_t)e->shape[0] : 0;
            float *buf = malloc(sizeof(float) * (cols + 1));
            ok = buf != NULL;
            for (int64_t r = 0; ok && r < e->shape[0]; r++) {
                e->row(e->ctx, r, buf);
                ok = fwrite(buf, 4, cols, f) == cols;
            }
            free(buf);
        } else if (e->dtype == CT_DT_F32) {
            ok = fwrite(e->data, 4, numel, f) == numel;
        } else if (e->dtype == CT_DT_I64) {
            ok = fwrite(e->i64, 8, numel, f) == numel;
        } else {
            for (size_t k = 0; ok && k < numel; k++) {
                uint16_t h = e->dtype == CT_DT_F16 ? ct_f32_to_f16(e->data[k]) : ct_f32_to_bf16(e->data[k]);
                uint8_t b[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
                ok = fwrite(b, 1, 2, f) == 2;
            }
        }
    }
    if (ok) rc = ct_wfile_commit(&w, err);
    else rc = ct_fail(err, CT_STATUS_IO, "cannot write %s: %s", path, strerror(errno ? errno : EIO));
done:
    ct_wfile_abort(&w);   // after a commit: nothing left to do
    free(header);
    cJSON_Delete(root);
    return rc;
}
