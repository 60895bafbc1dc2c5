// pt.h - PyTorch's .pt files (torch.save since PyTorch 1.6): a zip archive (formats/zip.h) whose
// members sit under one directory, "<archive>/":
//   data.pkl         a pickle (protocol 2) of the saved object; each tensor a call of
//                    torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) whose
//                    storage is a persistent id ('storage', torch.FloatStorage, key, 'cpu', numel)
//   data/<key>       the storage's bytes, little-endian
//   version          "3\n"; byteorder "little" (PyTorch 2.1 on)
//
// Reading runs the pickle on a small machine that calls nothing: it builds a tree of values
// (ct_pk) from the opcodes; a class named by GLOBAL is only a name, and calling it (REDUCE,
// NEWOBJ) makes an object holding the class name, the arguments and, after BUILD, the state. Two
// calls are understood: _rebuild_tensor_v2 makes a tensor, checked against its storage (C-order
// strides, inside the storage), and collections.OrderedDict() an empty dict. Work and memory are
// bounded: members stored (torch.save compresses nothing), data.pkl at most 64 MiB making at most
// 2^20 values, memo indices bounded by the opcodes read, every length by the bytes left, storages
// found by binary search. Writing: ct_pkw builds the pickle of a dict of plain values, objects and tensors; the
// caller stores the tensors' bytes as data/<key> members (ct_pt_storage_name).
#ifndef CT_PT_H
#define CT_PT_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "core/status.h"
#include "formats/safetensors.h"   // ct_dtype
#include "formats/zip.h"

#define CT_PK_MAX_DIMS 8

typedef enum {
    CT_PK_NONE, CT_PK_BOOL, CT_PK_INT, CT_PK_FLOAT, CT_PK_STR, CT_PK_BYTES,
    CT_PK_TUPLE, CT_PK_LIST, CT_PK_DICT,   // items; a dict's keys and values alternate
    CT_PK_GLOBAL,                          // s: "module.name"
    CT_PK_OBJECT,                          // cls (a GLOBAL) called with args; state from BUILD
    CT_PK_STORAGE,                         // dtype, numel, data (the data/<key> member)
    CT_PK_TENSOR,                          // dtype, ndim, shape, data (offset applied)
    CT_PK_MARK                             // the pickle's MARK (never in a finished tree)
} ct_pk_kind;

typedef struct ct_pk ct_pk;
struct ct_pk {
    ct_pk_kind kind;
    int64_t i;                 // BOOL, INT
    double f;                  // FLOAT
    char *s;                   // STR, BYTES, GLOBAL (NUL-terminated; len bytes)
    size_t len;
    ct_pk **items;             // TUPLE, LIST, DICT (2 n entries)
    int64_t n, cap;
    ct_pk *cls, *args, *state; // OBJECT
    ct_dtype dtype;            // STORAGE, TENSOR
    int64_t numel;
    const uint8_t *data;
    int ndim;                  // TENSOR
    int64_t shape[CT_PK_MAX_DIMS];
};

typedef struct ct_pt_file {
    ct_zip zip;
    uint8_t *map;      // the file, mapped (NULL for a buffer parsed in place)
    size_t size;
    ct_pk *root;       // the saved object
    const char *dir;   // "<archive>/", dir_len bytes (into the data.pkl member's name)
    size_t dir_len;
    ct_pk **nodes;     // every node made (freed together: the memo may share them)
    size_t n_nodes, cap_nodes;
} ct_pt;

ct_status ct_pt_open(ct_ctx *ctx, ct_pt **out, const char *path, ct_err *err);
// Parses a .pt image held in memory (borrowed: it must outlive the result).
ct_status ct_pt_parse(ct_pt **out, const uint8_t *buf, size_t size, ct_err *err);
void ct_pt_free(ct_pt *p);
// The value of a dict's string key (NULL when d is no dict or lacks it); an object's attribute
// (from its BUILD state dict) with ct_pk_attr.
const ct_pk *ct_pk_get(const ct_pk *d, const char *key);
const ct_pk *ct_pk_attr(const ct_pk *obj, const char *name);
const char *ct_pk_kind_name(ct_pk_kind k);

// Pickle writing (protocol 2, as torch.save writes): values pushed in the order pickle reads them.
typedef struct {
    uint8_t *p;
    size_t n, cap;
    int failed;   // out of memory, or a tensor PyTorch cannot hold: the pickle is incomplete (the caller checks)
} ct_pkw;

void ct_pkw_begin(ct_pkw *w);                    // PROTO 2
void ct_pkw_end(ct_pkw *w);                      // STOP
void ct_pkw_free(ct_pkw *w);
void ct_pkw_op(ct_pkw *w, uint8_t op);           // one opcode: '(' MARK, ')' EMPTY_TUPLE, 't' TUPLE, '}' ...
void ct_pkw_none(ct_pkw *w);
void ct_pkw_bool(ct_pkw *w, int v);
void ct_pkw_int(ct_pkw *w, int64_t v);
void ct_pkw_float(ct_pkw *w, double v);
void ct_pkw_str(ct_pkw *w, const char *s);   // bytes that are no UTF-8 become U+FFFD
void ct_pkw_global(ct_pkw *w, const char *module, const char *name);
// A tensor of dtype (F32, F64, I64, I32, BF16, F16), C order, whose bytes are storage key's.
void ct_pkw_tensor(ct_pkw *w, const char *key, ct_dtype dtype, int ndim, const int64_t *shape);
// PyTorch's storage class name for dtype ("FloatStorage", ...), NULL for none.
const char *ct_pt_storage_name(ct_dtype dtype);

#endif
