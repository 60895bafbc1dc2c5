// transcoder.h - transcoder sets: per-layer (PLT) and cross-layer (CLT) transcoders, the
// published file formats, encode / decode / reconstruction.
//
// Legend: L layers, D d_model, F features of one layer (d_transcoder), T positions.
// A PLT of layer l reads the input hook of layer l and writes the output hook of layer l:
//   pre = x W_enc^T + b_enc (F,); a = act(pre); y_hat = a W_dec + b_dec (+ skip(x)).
// A CLT feature of layer l reads layer l and writes every layer l' >= l through its decoder
// slice W_dec[l][f, l' - l, :]; b_dec of a CLT layer belongs to the target layer.
// Activations: ReLU; JumpReLU pre * (pre > threshold); TopK (circuit-tracer's): the k largest
// pre-activations of a position kept as they are, negative ones included, the rest zero (no
// ReLU; ties at the k-th value to the lower index). A feature is active where its activation is
// non-zero, whatever its sign.
// Weights stay in the mapped files in the dtype and layout they are stored in; nothing makes a
// float32 copy of an encoder or a decoder. Encoders: aligned F32, (F, D) or (D, F), goes to
// sgemm as it is; anything else (BF16, F16, F64, the unaligned F32 of npz members) is converted
// a tile of features at a time inside ct_tc_encode (ct_mat_matmul, as model weights are). Decoders are read row by
// row on demand (only the rows of active features are touched), with read-around off, so sets
// larger than memory work from the page cache they can get.
#ifndef CT_TRANSCODER_H
#define CT_TRANSCODER_H

#include <stdint.h>

#include "model/model.h"
#include "formats/safetensors.h"
#include "core/status.h"

typedef enum { CT_TC_PLT, CT_TC_CLT } ct_tc_kind;
typedef enum { CT_TC_RELU, CT_TC_JUMPRELU, CT_TC_TOPK } ct_tc_act;

typedef enum { CT_SKIP_NONE, CT_SKIP_XWT, CT_SKIP_XW } ct_skip_mode;   // y += x W^T or y += x W

typedef struct {
    int d_tc;              // F
    ct_mat W_enc;          // (F, D) as the file stores it: features as rows (cs 1) or as the
                           // columns of a (D, F) tensor (rs 1); any float dtype, any alignment
    float *W_enc_owned;    // the encoder's memory when the set owns it (random sets), else NULL
    float *b_enc;          // (F,)
    float *threshold;      // (F,) or NULL
    ct_mat W_dec;          // PLT (F, D); CLT (F, n_out * D), slice j at columns j*D
    float *W_dec_owned;    // the decoder's memory when the set owns it (random sets), else NULL
    int n_out;             // PLT 1; CLT L - l
    float *b_dec;          // (D,)
    const float *W_skip;   // (D, D) or NULL: the file's when it holds aligned float32, else W_skip_owned
    float *W_skip_owned;   // a float32 copy of a skip stored in another dtype, else NULL
    ct_skip_mode skip_mode;
} ct_tc_layer;

typedef struct ct_transcoders {
    ct_tc_kind kind;
    int n_layers, d_model;
    ct_tc_act act;
    int k;                 // TopK
    char input_hook[64], output_hook[64];
    char model_name[256], scan[256], format[64], path[1024];
    char np_model_id[128], np_source_set[128];   // config neuronpedia_model_id / _source_set, or ""
    ct_tc_layer *layers;   // (L,); a layer not held (the layer split) all zero
    int hold_lo, hold_hi;  // the layers this process holds, [hold_lo, hold_hi) (ct_transcoders_load_layers);
                           // hold_hi 0: all of them
    // files the weights live in
    ct_safetensors **st;
    int n_st;
    struct ct_npz **npz;
    int n_npz;
} ct_transcoders;

// Loads a set from a config.yaml, a directory (config.yaml, layer_{i}.safetensors, or the CLT
// W_enc_{i}/W_dec_{i} files), or one file (.npz or .safetensors: a one-layer set). Every file,
// those a config.yaml lists included, is opened through ctx; hf:// entries go through its resolver.
ct_status ct_transcoders_load(ct_ctx *ctx, ct_transcoders **out, const char *path, ct_err *err);
// The same holding only what rank `rank` of `size` needs under the layer split (its share of the
// layers, ct_layer_share): a per-layer set's files of those layers; a cross-layer set's files of
// every layer below the share's end (their decoders write into it; only those slices are read).
// Other layers' files are not opened. size 1: every layer.
ct_status ct_transcoders_load_share(ct_ctx *ctx, ct_transcoders **out, const char *path, int rank, int size, ct_err *err);
void ct_transcoders_free(ct_transcoders *tc);
// A per-layer set for m with uniform random weights (mlp.hook_in -> mlp.hook_out, d_tc features
// per layer, TopK k, or ReLU when k is 0), for benchmarks and tests.
ct_status ct_transcoders_random(ct_transcoders **out, const ct_model *m, int d_tc, int k, uint64_t seed, ct_err *err);
// Checks that the set fits the model: d_model, layer count, hook names, and for a layer-split
// model that the set holds the same layers.
ct_status ct_transcoders_check(const ct_transcoders *tc, const ct_model *m, ct_err *err);

// pre (T, F) = x (T, D) W_enc^T + b_enc; act (T, F) = activation(pre). Either output may be NULL.
ct_status ct_tc_encode(const ct_transcoders *tc, int layer, const float *x, int T, float *pre, float *act, ct_err *err);
// Encoder row of feature f of `layer`: out (D,), the direction whose dot product with the input
// is f's pre-activation (before b_enc).
ct_status ct_tc_encoder_row(const ct_transcoders *tc, int layer, int64_t f, float *out, ct_err *err);
// Encoder rows of n features of `layer`: rows[i] (D,) = the row of features[i]. An encoder
// stored (D, F) is read one stored row at a time for all n features (each page visited once).
ct_status ct_tc_encoder_rows(const ct_transcoders *tc, int layer, const int64_t *features, int n, float *const *rows,
                             ct_err *err);
// Starts reading the decoder rows of n features of `layer` (every slice) into the page cache in
// the background: when they are not there, one request for all instead of a fault per page.
void ct_tc_prefetch_rows(const ct_transcoders *tc, int layer, const int64_t *features, int n);
// The activation function alone, in place on v (T, F).
ct_status ct_tc_activate(const ct_transcoders *tc, int layer, float *v, int T, ct_err *err);
// y (T, D) += act (T, F) @ W_dec slice j (the decoder into layer `layer + j`); reads only the
// rows of features active somewhere.
ct_status ct_tc_decode_add(const ct_transcoders *tc, int layer, int j, const float *act, int T, float *y, ct_err *err);
// y (T, D) += skip_l(x (T, D)) when the layer has a skip connection.
void ct_tc_skip_add(const ct_transcoders *tc, int layer, const float *x, int T, float *y);
// Decoder row of feature f of `layer` into target layer + j: out (D,).
ct_status ct_tc_decoder_row(const ct_transcoders *tc, int layer, int64_t f, int j, float *out, ct_err *err);
// The direct effect of feature f of `layer` on the logits: out (V,) = W_U (g * d), with d its
// decoder vectors summed over the layers it writes and g the final norm's gain (the norm's
// denominator left out, as feature dashboards show top logits).
ct_status ct_tc_logit_effect(const ct_transcoders *tc, const ct_model *m, int layer, int64_t f, float *out, ct_err *err);
// Reconstruction of every output hook from every input hook: inputs (L, T, D) -> out (L, T, D)
// (features at position 0 included; callers that zero BOS do it on the activations).
ct_status ct_tc_reconstruct(const ct_transcoders *tc, const float *inputs, int T, float *out, ct_err *err);
// The same, handing each layer's activations act (T, F) to each(arg, layer, act, F, err) on the
// way (a failure it returns stops the reconstruction).
ct_status ct_tc_reconstruct_each(const ct_transcoders *tc, const float *inputs, int T, float *out,
                                 ct_status (*each)(void *arg, int layer, const float *act, int F, ct_err *err), void *arg,
                                 ct_err *err);

#endif
