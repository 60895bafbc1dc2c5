// model_load.c - model loaders: llama2.c checkpoints and Hugging Face directories, whose
// families (config differences and weight names) are one table, hf_families.
//
// Every loader validates sizes, shapes and dtypes before reading a weight, and fills a
// ct_model whose weight matrices are views into the files in their stored dtype (see model.h).
#include <cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "model/model.h"
#include "formats/safetensors.h"

// ----------------------------------------------------------------------------
// Common

static ct_model *model_new(void) {
    ct_model *m = calloc(1, sizeof *m);
    return m;
}

void ct_model_free(ct_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) ct_dealloc(m->owned[i], m->owned_bytes[i]);
    free(m->owned);
    free(m->owned_bytes);
    for (int i = 0; i < m->n_shards; i++) ct_safetensors_free(m->shards[i]);
    free(m->shards);
    if (m->map) ct_unmap_file(m->map, m->map_size);
    free(m->layers);
    free(m->rope_inv_freq);
    free(m->rope_local_inv_freq);
    ct_scratch_free(&m->scratch);
    ct_tokenizer_free(m->tok);
    free(m);
}

// Float array owned by the model (freed with it); NULL when out of memory.
static float *model_own(ct_model *m, size_t n) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        float **o = realloc(m->owned, sizeof *o * (size_t)cap);
        if (!o) return NULL;
        m->owned = o;
        size_t *b = realloc(m->owned_bytes, sizeof *b * (size_t)cap);
        if (!b) return NULL;
        m->owned_bytes = b;
        m->cap_owned = cap;
    }
    float *p = ct_alloc(n * sizeof(float));
    if (!p) return NULL;
    m->owned[m->n_owned] = p;
    m->owned_bytes[m->n_owned++] = n * sizeof(float);
    return p;
}

ct_status ct_config_validate(ct_config *c, ct_err *err) {
    const int lim = 1 << 20;
    if (c->d_model <= 0 || c->d_model > lim || c->n_layers <= 0 || c->n_layers > 4096 || c->n_heads <= 0 ||
        c->n_heads > 4096 || c->n_kv_heads <= 0 || c->head_dim <= 0 || c->head_dim > 65536 || c->vocab_size <= 0 ||
        c->vocab_size > (1 << 24) || c->d_mlp <= 0 || c->d_mlp > (1 << 22) || c->max_seq_len <= 0)
        return ct_fail(err, CT_STATUS_BAD_FORMAT,
                       "config: dimensions out of range (d_model %d, d_mlp %d, layers %d, heads %d/%d, head_dim %d, "
                       "vocab %d, max_seq_len %d)", c->d_model, c->d_mlp, c->n_layers, c->n_heads, c->n_kv_heads,
                       c->head_dim, c->vocab_size, c->max_seq_len);
    if (c->n_heads % c->n_kv_heads != 0)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "config: %d query heads are not a multiple of %d key/value heads",
                       c->n_heads, c->n_kv_heads);
    if (c->rope != CT_ROPE_NONE && c->head_dim % 2 != 0)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "config: RoPE needs an even head_dim, got %d", c->head_dim);
    if (!(c->norm_eps >= 0) || !(c->attn_scale > 0) || !(c->rope_theta >= 0) || !isfinite(c->embed_scale) ||
        !(c->rope_local_theta >= 0) || !(c->rope_linear >= 0) || !(c->rope_local_linear >= 0) ||
        !isfinite(c->rope_linear) || !isfinite(c->rope_local_linear) || c->sliding_window < 0)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "config: eps, attention scale, RoPE theta or scaling, or sliding "
                       "window out of range");
    if (c->rope_llama3 && (!(c->rope_factor > 0) || !(c->rope_high_freq > c->rope_low_freq) ||
                           !(c->rope_original_max > 0)))
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "config: rope_scaling llama3 needs factor > 0, "
                       "high_freq_factor > low_freq_factor and original_max_position_embeddings > 0");
    return CT_OK;
}

// inv (hd/2,) = base^(-2i/hd), divided by a linear scaling factor (0: none)
static void rope_base_freq(float *inv, double base, float linear, int head_dim) {
    for (int i = 0; i < head_dim / 2; i++) {
        float f = (float)(1.0 / pow(base, (2.0 * i) / head_dim));
        inv[i] = linear > 0 ? f / linear : f;   // transformers' "linear": inv_freq / factor
    }
}

ct_status ct_model_init_rope(ct_model *m, ct_err *err) {
    const ct_config *c = &m->cfg;
    int half = c->head_dim / 2;
    free(m->rope_inv_freq);   // tables of an earlier call
    free(m->rope_local_inv_freq);
    m->rope_local_inv_freq = NULL;
    m->rope_inv_freq = malloc(sizeof(float) * (size_t)(half ? half : 1));
    if (!m->rope_inv_freq) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (c->rope_local_theta > 0) {   // sliding-window layers with their own base (Gemma-3)
        if (!(m->rope_local_inv_freq = malloc(sizeof(float) * (size_t)(half ? half : 1))))
            return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        rope_base_freq(m->rope_local_inv_freq, c->rope_local_theta, c->rope_local_linear, c->head_dim);
    }
    if (c->rope_linear > 0) {
        rope_base_freq(m->rope_inv_freq, c->rope_theta, c->rope_linear, c->head_dim);
        return CT_OK;
    }
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
        if (c->rope_llama3) {
            // Llama-3.1/3.2 frequency scaling by wavelength band
            double lam = 2.0 * M_PI / f;
            double low_wl = c->rope_original_max / c->rope_low_freq;
            double high_wl = c->rope_original_max / c->rope_high_freq;
            if (lam > low_wl) {
                f = f / c->rope_factor;
            } else if (lam >= high_wl) {
                double s = (c->rope_original_max / lam - c->rope_low_freq) / (c->rope_high_freq - c->rope_low_freq);
                f = (1.0 - s) * f / c->rope_factor + s * f;
            }
        }
        m->rope_inv_freq[i] = (float)f;
    }
    return CT_OK;
}

// Finds a tokenizer beside a checkpoint: tokenizer.json, tokenizer.bin or tok*.bin; it must fit
// the model's vocabulary (ct_tokenizer_fit).
static ct_status load_tokenizer_beside(ct_ctx *ctx, ct_model *m, const char *dir, int llama2c, ct_err *err) {
    char path[1200];
    if (!llama2c) {
        if (!ct_path_join(path, sizeof path, dir, "tokenizer.json") || !ct_is_file(path)) return CT_OK;
        ct_status rc = ct_tokenizer_load(ctx, &m->tok, path, err);
        if (!rc && (rc = ct_tokenizer_fit(m->tok, m->cfg.vocab_size, err))) ct_err_where(err, path);
        return rc;
    }
    char name[64];
    snprintf(name, sizeof name, "tok%d.bin", m->cfg.vocab_size);
    const char *cands[] = {"tokenizer.bin", name};
    for (int i = 0; i < 2; i++) {
        if (!ct_path_join(path, sizeof path, dir, cands[i]) || !ct_is_file(path)) continue;
        void *map;
        size_t size;
        ct_status rc = ct_map_file(ctx, path, &map, &size, err);
        if (rc) return rc;
        rc = ct_tokenizer_parse_llama2c(&m->tok, map, size, m->cfg.vocab_size, err);
        if (!rc) rc = ct_tokenizer_fit(m->tok, m->cfg.vocab_size, err);
        ct_unmap_file(map, size);
        if (rc) {
            ct_err_where(err, path);
        }
        return rc;
    }
    return CT_OK;
}

// ----------------------------------------------------------------------------
// llama2.c checkpoints (legacy version 0)

static void llama2c_config(ct_config *c, const int32_t *h) {
    memset(c, 0, sizeof *c);
    snprintf(c->architecture, sizeof c->architecture, "llama2.c");
    c->d_model = h[0];
    c->d_mlp = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->vocab_size = h[5] == INT32_MIN ? 0 : h[5] < 0 ? -h[5] : h[5];
    c->max_seq_len = h[6];
    c->head_dim = c->n_heads > 0 ? c->d_model / c->n_heads : 0;
    c->norm = CT_NORM_RMS;
    c->norm_eps = 1e-5f;
    c->rope = CT_ROPE_ADJACENT;
    c->rope_theta = 10000.0f;
    c->attn_scale = c->head_dim > 0 ? 1.0f / sqrtf((float)c->head_dim) : 0.0f;
    c->gated_mlp = 1;
    c->act = CT_ACT_SILU;
    c->embed_scale = 1.0f;
    c->tied = h[5] > 0;
    c->bos_id = 1;
    c->eos_id = 2;
}

ct_status ct_model_parse_llama2c(ct_model **out, const uint8_t *buf, size_t size, ct_err *err) {
    *out = NULL;
    if (size < 28)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c checkpoint: %zu bytes is shorter than the 28-byte header",
                       size);
    if ((uintptr_t)buf % 4 != 0) return ct_fail(err, CT_STATUS_BAD_ARG, "llama2.c checkpoint: buffer not 4-byte aligned");
    int32_t h[7];
    memcpy(h, buf, sizeof h);
    uint32_t magic;
    memcpy(&magic, buf, 4);
    if (magic == 0x616b3432u)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "llama2.c checkpoint: versioned format (magic 'ak42') is not "
                       "supported; expected the legacy version 0 (export with --version 0)");
    ct_config c;
    llama2c_config(&c, h);
    if (h[3] <= 0 || h[0] % h[3] != 0)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c checkpoint: dim %d is not a positive multiple of n_heads %d",
                       h[0], h[3]);
    ct_status rc = ct_config_validate(&c, err);
    if (rc) return rc;
    uint64_t D = (uint64_t)c.d_model, F = (uint64_t)c.d_mlp, L = (uint64_t)c.n_layers, V = (uint64_t)c.vocab_size;
    uint64_t kvd = (uint64_t)c.n_kv_heads * (uint64_t)c.head_dim, S = (uint64_t)c.max_seq_len;
    uint64_t want = V * D + L * D + L * D * D + 2 * L * kvd * D + L * D * D + L * D + 3 * L * F * D + D +
                    S * (uint64_t)c.head_dim + (c.tied ? 0 : V * D);
    if (kvd > D) return ct_fail(err, CT_STATUS_BAD_FORMAT, "llama2.c checkpoint: %d kv heads exceed %d heads",
                                c.n_kv_heads, c.n_heads);
    if (want > (size - 28) / 4 || want * 4 != size - 28)
        return ct_fail(err, CT_STATUS_BAD_FORMAT,
                       "llama2.c checkpoint: header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d%s, seq %d) "
                       "needs %llu bytes of weights, file has %zu",
                       c.d_model, c.d_mlp, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                       c.tied ? "" : " unshared", c.max_seq_len, (unsigned long long)(want * 4), size - 28);
    ct_model *m = model_new();
    if (!m || !(m->layers = calloc(L, sizeof(ct_layer)))) {
        free(m);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    m->cfg = c;
    const float *p = (const float *)(buf + 28);
    m->embed = ct_mat_f32(p, (int64_t)V, (int64_t)D);
    p += V * D;
    const float *rms_att = p; p += L * D;
    const float *wq = p; p += L * D * D;
    const float *wk = p; p += L * kvd * D;
    const float *wv = p; p += L * kvd * D;
    const float *wo = p; p += L * D * D;
    const float *rms_ffn = p; p += L * D;
    const float *w1 = p; p += L * F * D;
    const float *w2 = p; p += L * D * F;
    const float *w3 = p; p += L * F * D;
    m->lnf_w = p; p += D;
    p += S * (uint64_t)c.head_dim;   // two unused RoPE tables of seq_len * hd/2 floats
    m->lm_head = c.tied ? m->embed : ct_mat_f32(p, (int64_t)V, (int64_t)D);
    for (uint64_t l = 0; l < L; l++) {
        ct_layer *w = &m->layers[l];
        w->ln1_w = rms_att + l * D;
        w->wq = ct_mat_f32(wq + l * D * D, (int64_t)D, (int64_t)D);
        w->wk = ct_mat_f32(wk + l * kvd * D, (int64_t)kvd, (int64_t)D);
        w->wv = ct_mat_f32(wv + l * kvd * D, (int64_t)kvd, (int64_t)D);
        w->wo = ct_mat_f32(wo + l * D * D, (int64_t)D, (int64_t)D);
        w->ln2_w = rms_ffn + l * D;
        w->w_gate = ct_mat_f32(w1 + l * F * D, (int64_t)F, (int64_t)D);
        w->w_down = ct_mat_f32(w2 + l * D * F, (int64_t)D, (int64_t)F);
        w->w_up = ct_mat_f32(w3 + l * F * D, (int64_t)F, (int64_t)D);
    }
    if ((rc = ct_model_init_rope(m, err))) {
        ct_model_free(m);
        return rc;
    }
    *out = m;
    return CT_OK;
}

ct_status ct_model_load_llama2c(ct_ctx *ctx, ct_model **out, const char *path, ct_err *err) {
    *out = NULL;
    void *map;
    size_t size;
    ct_status rc = ct_map_file(ctx, path, &map, &size, err);
    if (rc) return rc;
    ct_model *m;
    rc = ct_model_parse_llama2c(&m, map, size, err);
    if (rc) {
        ct_unmap_file(map, size);
        ct_err_where(err, path);
        return rc;
    }
    m->map = map;
    m->map_size = size;
    snprintf(m->path, sizeof m->path, "%s", path);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    if ((rc = load_tokenizer_beside(ctx, m, dir, 1, err))) {
        ct_model_free(m);
        return rc;
    }
    *out = m;
    return CT_OK;
}

// ----------------------------------------------------------------------------
// Hugging Face directories: the table of model families
//
// A row per family: the architecture config.json names, how its config differs from the
// common decoder (RMSNorm, gated SiLU MLP, RoPE), and its weight names. Adding a family is a
// row here, plus a change to the forward pass in model.c only when the family computes
// something new. Whether a family has post norms, q/k norms, learned positions or a gated MLP
// follows from its weight names (post_attn_w, q_norm, pos_embed, w_gate).

// config.json keys of the dimensions (NULL: not in the family's config; the default holds)
typedef struct {
    const char *d_model, *d_mlp, *n_layers, *n_heads, *n_kv_heads, *head_dim, *vocab_size, *max_seq_len,
        *norm_eps, *tied;
    int d_model_def, n_layers_def, n_heads_def, vocab_size_def, max_seq_len_def;
    int d_mlp_per_d_model;   // d_mlp when absent: this times d_model (or d_mlp_def)
    double norm_eps_def;     // n_kv_heads defaults to n_heads, head_dim to d_model / n_heads
    int d_mlp_def, n_kv_heads_def, head_dim_def;   // 0: the rules above
} hf_keys;

// Weight names as PyTorch stores them: whole names, then per-layer printf patterns taking the
// layer index. NULL: the family has no such tensor.
typedef struct {
    const char *embed, *pos_embed, *final_norm_w, *final_norm_b, *lm_head;   // (V, D) (max_seq_len, D) (D,) (D,) (V, D)
    const char *ln1_w, *ln1_b;                       // (D,)
    const char *wq, *wk, *wv, *wo;                   // (H*hd, D) (KV*hd, D) (KV*hd, D) (D, H*hd)
    const char *bq, *bk, *bv, *bo;                   // (H*hd,) (KV*hd,) (KV*hd,) (D,)
    const char *q_norm, *k_norm;                     // (hd,)
    const char *post_attn_w, *ln2_w, *ln2_b, *post_ff_w;   // (D,)
    const char *w_gate, *w_up, *w_down;              // (F, D) (F, D) (D, F)
    const char *b_up, *b_down;                       // (F,) (D,)
    const char *qkv_w, *qkv_b;   // q, k, v fused (GPT-2's c_attn): Conv1D (D, H*hd + 2 KV*hd) and its bias, split by columns
} hf_names;

typedef struct {
    const char *architecture;     // config.json "architectures"[0]
    const hf_keys *keys;
    ct_norm norm;
    float norm_gain_offset;       // RMSNorm gain = offset + w (Gemma stores gains zero-centred: 1)
    ct_rope rope;                 // CT_ROPE_NONE: no RoPE (rope_theta and rope_scaling are not read)
    ct_act act;
    const char *act_keys[2];      // config.json keys naming the activation (the first present counts)
    const char *act_names[2];     // the names accepted for it (an error quotes the first)
    int tied;                     // tie_word_embeddings when the config does not say
    int embed_scale_sqrt_d;       // embeddings times sqrt(d_model) (Gemma)
    const char *attn_scalar;      // key: attention scale = value^-1/2 (Gemma); NULL: 1/sqrt(head_dim)
    const char *attn_softcap, *final_softcap;   // keys of the logit softcaps (NULL: none)
    double attn_softcap_def, final_softcap_def; // the softcaps when the config does not say (a null
                                                // value in the config: none)
    const char *sliding_window;   // key of the attention window of the sliding layers (NULL: none)
    int sliding_window_def;       // the window when the config does not say
    int sliding_pattern;          // without layer_types, layer i slides iff (i + 1) % pattern != 0
                                  // (config key sliding_window_pattern, else this: Gemma-2 2, Gemma-3 6)
    double attn_scalar_def;       // attn_scalar when the config does not say (0: head_dim)
    double rope_theta_def;        // rope_theta when the config does not say (0: 10000)
    const char *rope_local;       // key of the sliding layers' own RoPE base (Gemma-3: rope_local_base_freq),
    double rope_local_def;        // and its default; rope_scaling then applies to full-attention layers only
    int embed_scale_rounded;      // sqrt(d_model) rounded to the embedding's stored dtype (Gemma-3, as
                                  // transformers: embed_scale.to(weight.dtype))
    const char *text_config;      // key of a nested text config holding the text model's keys (multimodal)
    int conv1d;                   // 2-D weights stored [in, out] (GPT-2's Conv1D), transposed when loaded
    int optional_biases;          // bias tensors may be absent
    const char *alt_prefix;       // every name may carry this prefix (GPT-2: "transformer."), lm_head excepted
    hf_names w;
} hf_family;

static const hf_keys hf_keys_common = {
    .d_model = "hidden_size", .d_mlp = "intermediate_size", .n_layers = "num_hidden_layers",
    .n_heads = "num_attention_heads", .n_kv_heads = "num_key_value_heads", .head_dim = "head_dim",
    .vocab_size = "vocab_size", .max_seq_len = "max_position_embeddings", .norm_eps = "rms_norm_eps",
    .tied = "tie_word_embeddings", .max_seq_len_def = 2048, .norm_eps_def = 1e-6,
};

static const hf_keys hf_keys_gemma3 = {   // Gemma3TextConfig's defaults (gemma-3-4b's text_config omits most keys)
    .d_model = "hidden_size", .d_mlp = "intermediate_size", .n_layers = "num_hidden_layers",
    .n_heads = "num_attention_heads", .n_kv_heads = "num_key_value_heads", .head_dim = "head_dim",
    .vocab_size = "vocab_size", .max_seq_len = "max_position_embeddings", .norm_eps = "rms_norm_eps",
    .tied = "tie_word_embeddings", .d_model_def = 2304, .d_mlp_def = 9216, .n_layers_def = 26, .n_heads_def = 8,
    .n_kv_heads_def = 4, .head_dim_def = 256, .vocab_size_def = 262208, .max_seq_len_def = 131072, .norm_eps_def = 1e-6,
};

static const hf_keys hf_keys_gpt2 = {   // GPT2Config's names and defaults
    .d_model = "n_embd", .d_mlp = "n_inner", .n_layers = "n_layer", .n_heads = "n_head", .vocab_size = "vocab_size",
    .max_seq_len = "n_positions", .norm_eps = "layer_norm_epsilon", .d_model_def = 768, .n_layers_def = 12,
    .n_heads_def = 12, .vocab_size_def = 50257, .max_seq_len_def = 1024, .d_mlp_per_d_model = 4,
    .norm_eps_def = 1e-5,
};

#define LAYER "model.layers.%d."
// The weight names Llama, Gemma-2 and Qwen3 checkpoints share (each family adds its norms).
#define LLAMA_NAMES                                                                                                 \
    .embed = "model.embed_tokens.weight", .final_norm_w = "model.norm.weight", .lm_head = "lm_head.weight",          \
    .ln1_w = LAYER "input_layernorm.weight", .wq = LAYER "self_attn.q_proj.weight",                                  \
    .wk = LAYER "self_attn.k_proj.weight", .wv = LAYER "self_attn.v_proj.weight", .wo = LAYER "self_attn.o_proj.weight", \
    .bq = LAYER "self_attn.q_proj.bias", .bk = LAYER "self_attn.k_proj.bias", .bv = LAYER "self_attn.v_proj.bias",   \
    .bo = LAYER "self_attn.o_proj.bias", .w_gate = LAYER "mlp.gate_proj.weight", .w_up = LAYER "mlp.up_proj.weight", \
    .w_down = LAYER "mlp.down_proj.weight", .b_up = LAYER "mlp.up_proj.bias", .b_down = LAYER "mlp.down_proj.bias"
// Gemma-3 text models as transformers' modeling_gemma3.py and Gemma3TextConfig define them: Gemma-2's
// layout plus q/k norms, 5 sliding (local RoPE base) to 1 full layer, no softcaps unless the config
// sets them
#define GEMMA3                                                                                                      \
    .keys = &hf_keys_gemma3, .norm = CT_NORM_RMS, .norm_gain_offset = 1.0f, .rope = CT_ROPE_HALF,                   \
    .act = CT_ACT_GELU_TANH, .act_keys = {"hidden_activation", "hidden_act"}, .act_names = {"gelu_pytorch_tanh"},   \
    .tied = 1, .embed_scale_sqrt_d = 1, .embed_scale_rounded = 1, .attn_scalar = "query_pre_attn_scalar",          \
    .attn_scalar_def = 256, .attn_softcap = "attn_logit_softcapping", .final_softcap = "final_logit_softcapping",   \
    .sliding_window = "sliding_window", .sliding_window_def = 4096, .sliding_pattern = 6, .rope_theta_def = 1e6,   \
    .rope_local = "rope_local_base_freq", .rope_local_def = 1e4, .optional_biases = 1,                             \
    .w = {                                                                                                          \
        LLAMA_NAMES,                                                                                                \
        .q_norm = LAYER "self_attn.q_norm.weight", .k_norm = LAYER "self_attn.k_norm.weight",                       \
        .post_attn_w = LAYER "post_attention_layernorm.weight", .ln2_w = LAYER "pre_feedforward_layernorm.weight",  \
        .post_ff_w = LAYER "post_feedforward_layernorm.weight",                                                     \
    }
static const hf_family hf_families[] = {
    {
        .architecture = "LlamaForCausalLM", .keys = &hf_keys_common, .norm = CT_NORM_RMS, .rope = CT_ROPE_HALF,
        .act = CT_ACT_SILU, .act_keys = {"hidden_act"}, .act_names = {"silu"}, .optional_biases = 1,
        .w = {
            LLAMA_NAMES,
            .ln2_w = LAYER "post_attention_layernorm.weight",
        },
    },
    {
        .architecture = "Gemma2ForCausalLM", .keys = &hf_keys_common, .norm = CT_NORM_RMS, .norm_gain_offset = 1.0f,
        .rope = CT_ROPE_HALF, .act = CT_ACT_GELU_TANH, .act_keys = {"hidden_activation", "hidden_act"},
        .act_names = {"gelu_pytorch_tanh"}, .tied = 1, .embed_scale_sqrt_d = 1, .attn_scalar = "query_pre_attn_scalar",
        .attn_softcap = "attn_logit_softcapping", .final_softcap = "final_logit_softcapping",
        .sliding_window = "sliding_window", .sliding_pattern = 2, .optional_biases = 1,
        // Gemma2Config's defaults for keys a config leaves out
        .attn_scalar_def = 256, .attn_softcap_def = 50.0, .final_softcap_def = 30.0, .sliding_window_def = 4096,
        .w = {
            LLAMA_NAMES,
            .post_attn_w = LAYER "post_attention_layernorm.weight", .ln2_w = LAYER "pre_feedforward_layernorm.weight",
            .post_ff_w = LAYER "post_feedforward_layernorm.weight",
        },
    },
    {
        .architecture = "Gemma3ForCausalLM", GEMMA3,
    },
    {   // the text tower of the multimodal Gemma-3 (4b and up): its keys under text_config, its weights
        // under language_model.model. beside vision tensors (not read)
        .architecture = "Gemma3ForConditionalGeneration", GEMMA3, .text_config = "text_config",
        .alt_prefix = "language_model.",
    },
    {
        .architecture = "GPT2LMHeadModel", .keys = &hf_keys_gpt2, .norm = CT_NORM_LAYER, .rope = CT_ROPE_NONE,
        .act = CT_ACT_GELU_TANH, .act_keys = {"activation_function"}, .act_names = {"gelu_new", "gelu_pytorch_tanh"},
        .tied = 1, .conv1d = 1, .alt_prefix = "transformer.",
        .w = {
            .embed = "wte.weight", .pos_embed = "wpe.weight", .final_norm_w = "ln_f.weight", .final_norm_b = "ln_f.bias",
            .lm_head = "lm_head.weight",
            .ln1_w = "h.%d.ln_1.weight", .ln1_b = "h.%d.ln_1.bias",
            .qkv_w = "h.%d.attn.c_attn.weight", .qkv_b = "h.%d.attn.c_attn.bias",
            .wo = "h.%d.attn.c_proj.weight", .bo = "h.%d.attn.c_proj.bias",
            .ln2_w = "h.%d.ln_2.weight", .ln2_b = "h.%d.ln_2.bias",
            .w_up = "h.%d.mlp.c_fc.weight", .b_up = "h.%d.mlp.c_fc.bias",
            .w_down = "h.%d.mlp.c_proj.weight", .b_down = "h.%d.mlp.c_proj.bias",
        },
    },
    {
        .architecture = "Qwen3ForCausalLM", .keys = &hf_keys_common, .norm = CT_NORM_RMS, .rope = CT_ROPE_HALF,
        .act = CT_ACT_SILU, .act_keys = {"hidden_act"}, .act_names = {"silu"}, .optional_biases = 1,
        .w = {
            LLAMA_NAMES,
            .q_norm = LAYER "self_attn.q_norm.weight", .k_norm = LAYER "self_attn.k_norm.weight",
            .ln2_w = LAYER "post_attention_layernorm.weight",
        },
    },
};
#undef GEMMA3
#undef LLAMA_NAMES
#undef LAYER
#define N_FAMILIES (int)(sizeof hf_families / sizeof *hf_families)

// ----------------------------------------------------------------------------
// Hugging Face directories: loading

typedef struct {
    ct_model *m;
    const hf_family *f;
    const char *dir;
    const char *prefix;   // "" or the family's alt_prefix
    ct_err *err;
} hf_ctx;

static const ct_st_tensor *hf_find(hf_ctx *h, const char *name) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", h->prefix, name);
    for (int i = 0; i < h->m->n_shards; i++) {
        const ct_st_tensor *t = ct_safetensors_find(h->m->shards[i], full);
        if (t) return t;
    }
    return NULL;
}

// The tensor `name` with exactly the given shape ([d0] for ndim 1, [d0, d1] for 2) and a float
// dtype (F32, F16 or BF16). optional: a missing tensor gives *out NULL and CT_OK.
static ct_status hf_tensor(hf_ctx *h, const ct_st_tensor **out, const char *name, int optional, int ndim, int64_t d0,
                           int64_t d1) {
    *out = NULL;
    const ct_st_tensor *t = hf_find(h, name);
    if (!t) {
        if (optional) return CT_OK;
        return ct_fail(h->err, CT_STATUS_NOT_FOUND, "missing tensor '%s%s' in %s", h->prefix, name, h->dir);
    }
    int64_t want[2] = {d0, d1};
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[128] = "", exp[64];
        size_t k = 0;
        for (int i = 0; i < t->ndim && k < sizeof got - 24; i++)
            k += (size_t)snprintf(got + k, sizeof got - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
        if (ndim == 1) snprintf(exp, sizeof exp, "[%lld]", (long long)d0);
        else snprintf(exp, sizeof exp, "[%lld, %lld]", (long long)d0, (long long)d1);
        return ct_fail(h->err, CT_STATUS_BAD_SHAPE, "tensor '%s%s' has shape [%s]; expected %s", h->prefix, name,
                       got, exp);
    }
    if (t->dtype != CT_DT_F32 && t->dtype != CT_DT_F16 && t->dtype != CT_DT_BF16)
        return ct_fail(h->err, CT_STATUS_BAD_DTYPE, "tensor '%s%s' has dtype %s; expected F32, F16 or BF16",
                       h->prefix, name, ct_dtype_name(t->dtype));
    *out = t;
    return CT_OK;
}

// Vector `name` (d0,) as float32: in place for aligned F32, else converted into memory the
// model owns. optional: a missing tensor gives *out NULL and CT_OK.
static ct_status hf_get(hf_ctx *h, const float **out, const char *name, int optional, int64_t d0) {
    *out = NULL;
    const ct_st_tensor *t;
    ct_status rc = hf_tensor(h, &t, name, optional, 1, d0, 0);
    if (rc || !t) return rc;
    if (t->dtype == CT_DT_F32 && (uintptr_t)t->data % 4 == 0) {
        *out = (const float *)t->data;
        return CT_OK;
    }
    float *p = model_own(h->m, (size_t)ct_st_numel(t));
    if (!p) return ct_fail(h->err, CT_STATUS_NO_MEMORY, "out of memory converting '%s'", name);
    ct_to_f32(p, t->data, t->dtype, (size_t)ct_st_numel(t));
    *out = p;
    return CT_OK;
}

// Matrix `name` [d0, d1] as a view into its file, in its stored dtype. optional: a missing
// tensor leaves *out empty (data NULL) and gives CT_OK.
static ct_status hf_get_mat(hf_ctx *h, ct_mat *out, const char *name, int optional, int64_t d0, int64_t d1) {
    *out = (ct_mat){0};
    const ct_st_tensor *t;
    ct_status rc = hf_tensor(h, &t, name, optional, 2, d0, d1);
    if (!rc && t) *out = (ct_mat){t->data, t->dtype, d0, d1, d1, 1};
    return rc;
}

// Conv1D weight stored [in, out] (n_in, n_total): the column block [c0, c0+n_out) as an [out, in]
// view (n_out, n_in) of the file (its transpose: columns contiguous).
static ct_status hf_get_conv1d(hf_ctx *h, ct_mat *out, const char *name, int64_t n_in, int64_t n_total, int64_t c0,
                               int64_t n_out) {
    ct_mat w;   // (n_in, n_total)
    ct_status rc = hf_get_mat(h, &w, name, 0, n_in, n_total);
    if (rc) return rc;
    ct_mat blk = ct_mat_cols(&w, c0, n_out);   // (n_in, n_out)
    *out = ct_mat_t(&blk);
    return CT_OK;
}

// The first config value of the wrong type met while reading: reading goes on with the default,
// and the config is refused once read (cfg_refuse), naming the key, what it holds and what it needs.
typedef struct {
    const char *key, *expected;
    const cJSON *found;
} cfg_bad;

static void wrong_type(cfg_bad *b, const char *key, const cJSON *v, const char *expected) {
    if (!b->key) *b = (cfg_bad){key, expected, v};
}

static ct_status cfg_refuse(const cfg_bad *b, const char *dir, ct_err *err) {
    if (!b->key) return CT_OK;
    const cJSON *v = b->found;
    char found[64];
    if (cJSON_IsNumber(v)) snprintf(found, sizeof found, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v)) snprintf(found, sizeof found, "the string \"%.24s\"", v->valuestring);
    else snprintf(found, sizeof found, "%s", cJSON_IsBool(v) ? "a boolean" : cJSON_IsArray(v) ? "a list" : "an object");
    return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: \"%s\" is %s; expected %s", dir, b->key, found, b->expected);
}

// A key's value, or the default when the key is missing or null (transformers' None).
static int json_int(cfg_bad *b, const cJSON *o, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return def;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2e9) {
        wrong_type(b, key, v, "an integer");
        return def;
    }
    return (int)v->valuedouble;
}

static double json_num(cfg_bad *b, const cJSON *o, const char *key, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return def;
    if (!cJSON_IsNumber(v)) {
        wrong_type(b, key, v, "a number");
        return def;
    }
    return v->valuedouble;
}

static int json_bool(cfg_bad *b, const cJSON *o, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return def;
    if (!cJSON_IsBool(v)) {
        wrong_type(b, key, v, "true or false");
        return def;
    }
    return cJSON_IsTrue(v);
}

// Reads eos_token_id that may be a number or a list (first entry).
static int json_token_id(cfg_bad *b, const cJSON *o, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v) || (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0)) return def;
    const cJSON *e = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, 0) : v;
    if (cJSON_IsNumber(e) && e->valuedouble >= -1 && e->valuedouble < (1 << 24) && e->valuedouble == floor(e->valuedouble))
        return (int)e->valuedouble;
    wrong_type(b, key, e, "a token id (an integer from -1) or a list of them");
    return def;
}

// json_int / json_num with a key the family may lack (NULL: the default).
static int key_int(cfg_bad *b, const cJSON *o, const char *key, int def) { return key ? json_int(b, o, key, def) : def; }
static double key_num(cfg_bad *b, const cJSON *o, const char *key, double def) { return key ? json_num(b, o, key, def) : def; }
// Whether the key is there with a null value: "none" (0) for softcaps and windows, as transformers
// reads None, where a missing key takes the family's default.
static int key_null(const cJSON *o, const char *key) { return key && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, key)); }

// One RoPE specification (rope_scaling, or an entry of rope_parameters: rope_type, factor,
// rope_theta) for the full-attention layers or (local) the sliding layers' own base. Types:
// default, linear (families with a local base: Gemma-3) and llama3 (the others).
static ct_status hf_rope_spec(ct_config *c, const hf_family *f, const cJSON *o, int local, const char *what,
                              cfg_bad *bad, const char *dir, ct_err *err) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "rope_type");
    if (!cJSON_IsString(type)) type = cJSON_GetObjectItemCaseSensitive(o, "type");
    const char *ty = cJSON_IsString(type) ? type->valuestring : "default";
    float *theta = local ? &c->rope_local_theta : &c->rope_theta;
    *theta = (float)json_num(bad, o, "rope_theta", *theta);
    float *linear = local ? &c->rope_local_linear : &c->rope_linear;
    if (strcmp(ty, "default") == 0) {
        *linear = 0.0f;
    } else if (strcmp(ty, "linear") == 0 && f->rope_local) {
        double factor = json_num(bad, o, "factor", 0.0);
        if (bad->key) return cfg_refuse(bad, dir, err);   // its type, rather than the default's range
        if (!(factor > 0 && factor < 1e9))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: %s type linear needs a factor > 0, got %g", dir,
                           what, factor);
        *linear = (float)factor;
    } else if (strcmp(ty, "llama3") == 0 && !f->rope_local) {
        c->rope_llama3 = 1;
        c->rope_factor = (float)json_num(bad, o, "factor", 8.0);
        c->rope_low_freq = (float)json_num(bad, o, "low_freq_factor", 1.0);
        c->rope_high_freq = (float)json_num(bad, o, "high_freq_factor", 4.0);
        c->rope_original_max = (float)json_num(bad, o, "original_max_position_embeddings", 8192);
    } else {
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s/config.json: %s type '%.32s'; expected %s", dir, what, ty,
                       f->rope_local ? "default or linear" : "default or llama3");
    }
    return CT_OK;
}

// The config of a family from config.json (j); the text model's keys are in t (j itself, or
// j's text_config for a multimodal family).
static ct_status hf_config(ct_config *c, const hf_family **family, const cJSON *j, const cJSON **text, const char *dir,
                           ct_err *err) {
    memset(c, 0, sizeof *c);
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    if (!cJSON_IsString(a0))
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: expected \"architectures\": [\"...ForCausalLM\"]", dir);
    const char *arch = a0->valuestring;
    snprintf(c->architecture, sizeof c->architecture, "%s", arch);
    const hf_family *f = NULL;
    for (int i = 0; i < N_FAMILIES && !f; i++)
        if (strcmp(arch, hf_families[i].architecture) == 0) f = &hf_families[i];
    if (!f) {   // "A, B, C or D"
        char known[512] = "";
        size_t n = 0;
        for (int i = 0; i < N_FAMILIES && n < sizeof known; i++)
            n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", i == 0 ? "" : i == N_FAMILIES - 1 ? " or " : ", ",
                                  hf_families[i].architecture);
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s/config.json: unknown architecture '%.64s'; expected %s", dir, arch,
                       known);
    }
    *family = f;
    const cJSON *t = j;
    if (f->text_config) {
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(j, f->text_config);
        if (tc && !cJSON_IsObject(tc))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: \"%s\" must be an object", dir, f->text_config);
        if (tc) t = tc;   // absent: the keys are at the top level (a text-only copy of the config)
    }
    *text = t;
    const hf_keys *k = f->keys;
    cfg_bad bs = {0}, *bad = &bs;
    c->d_model = key_int(bad, t, k->d_model, k->d_model_def);
    c->n_layers = key_int(bad, t, k->n_layers, k->n_layers_def);
    c->n_heads = key_int(bad, t, k->n_heads, k->n_heads_def);
    c->n_kv_heads = key_int(bad, t, k->n_kv_heads, k->n_kv_heads_def ? k->n_kv_heads_def : c->n_heads);
    long long mlp_def = k->d_mlp_def ? k->d_mlp_def : (long long)k->d_mlp_per_d_model * c->d_model;
    c->d_mlp = key_int(bad, t, k->d_mlp, mlp_def >= INT_MIN && mlp_def <= INT_MAX ? (int)mlp_def : 0);
    c->vocab_size = key_int(bad, t, k->vocab_size, k->vocab_size_def);
    c->max_seq_len = key_int(bad, t, k->max_seq_len, k->max_seq_len_def);
    c->head_dim = key_int(bad, t, k->head_dim, k->head_dim_def ? k->head_dim_def : c->n_heads > 0 ? c->d_model / c->n_heads : 0);
    c->norm = f->norm;
    c->norm_eps = (float)key_num(bad, t, k->norm_eps, k->norm_eps_def);
    c->norm_gain_offset = f->norm_gain_offset;
    c->rope = f->rope;
    c->gated_mlp = f->w.w_gate != NULL;
    c->act = f->act;
    c->embed_scale = f->embed_scale_sqrt_d ? sqrtf((float)c->d_model) : 1.0f;
    c->embed_scale_rounded = f->embed_scale_rounded;
    c->learned_pos = f->w.pos_embed != NULL;
    c->qk_norm = f->w.q_norm != NULL;
    c->post_norms = f->w.post_attn_w != NULL;
    // tie_word_embeddings, BOS and EOS: the text config's, else the top level's
    c->tied = k->tied ? json_bool(bad, t, k->tied, json_bool(bad, j, k->tied, f->tied)) : f->tied;
    c->bos_id = json_token_id(bad, t, "bos_token_id", json_token_id(bad, j, "bos_token_id", -1));
    c->eos_id = json_token_id(bad, t, "eos_token_id", json_token_id(bad, j, "eos_token_id", -1));
    c->attn_scale = c->head_dim > 0 ? 1.0f / sqrtf((float)c->head_dim) : 0;
    if (f->attn_scalar)
        c->attn_scale = (float)(1.0 / sqrt(json_num(bad, t, f->attn_scalar, f->attn_scalar_def > 0 ? f->attn_scalar_def : c->head_dim)));
    c->attn_softcap = key_null(t, f->attn_softcap) ? 0.0f : (float)key_num(bad, t, f->attn_softcap, f->attn_softcap_def);
    c->final_softcap = key_null(t, f->final_softcap) ? 0.0f : (float)key_num(bad, t, f->final_softcap, f->final_softcap_def);
    c->sliding_window = key_null(t, f->sliding_window) ? 0 : key_int(bad, t, f->sliding_window, f->sliding_window_def);
    if (json_bool(bad, t, "use_bidirectional_attention", 0))
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s/config.json: use_bidirectional_attention (an embedding model); "
                       "expected a causal language model", dir);
    if (f->rope != CT_ROPE_NONE) {
        c->rope_theta = (float)json_num(bad, t, "rope_theta", f->rope_theta_def > 0 ? f->rope_theta_def : 10000.0);
        if (f->rope_local) c->rope_local_theta = (float)json_num(bad, t, f->rope_local, f->rope_local_def);
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(t, "rope_scaling");
        ct_status rc;
        if (cJSON_IsObject(rs) && (rc = hf_rope_spec(c, f, rs, 0, "rope_scaling", bad, dir, err))) return rc;
        // newer files: rope_parameters per layer type (its rope_theta values win over the keys above)
        const cJSON *rp = cJSON_GetObjectItemCaseSensitive(t, "rope_parameters");
        if (f->rope_local && cJSON_IsObject(rp)) {
            const cJSON *full = cJSON_GetObjectItemCaseSensitive(rp, "full_attention");
            const cJSON *slide = cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention");
            if (!cJSON_IsObject(full) && !cJSON_IsObject(slide))
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: rope_parameters: expected "
                               "{\"full_attention\": {...}, \"sliding_attention\": {...}}", dir);
            if (cJSON_IsObject(full) && (rc = hf_rope_spec(c, f, full, 0, "rope_parameters.full_attention", bad, dir, err)))
                return rc;
            if (cJSON_IsObject(slide) && (rc = hf_rope_spec(c, f, slide, 1, "rope_parameters.sliding_attention", bad, dir, err)))
                return rc;
        }
    }
    // the activation, when the config names it, must be the family's
    const cJSON *act = NULL;
    for (int i = 0; i < 2 && f->act_keys[i] && !cJSON_IsString(act); i++)
        act = cJSON_GetObjectItemCaseSensitive(t, f->act_keys[i]);
    if (cJSON_IsString(act)) {
        int known = 0;
        for (int i = 0; i < 2 && f->act_names[i]; i++) known |= strcmp(act->valuestring, f->act_names[i]) == 0;
        if (!known)
            return ct_fail(err, CT_STATUS_UNSUPPORTED, "%s/config.json: %s '%.32s'; expected %s", dir, f->act_keys[0],
                           act->valuestring, f->act_names[0]);
    }
    return cfg_refuse(bad, dir, err);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static ct_status hf_open_shards(ct_ctx *ctx, ct_model *m, const char *dir, ct_err *err) {
    char path[1200];
    ct_path_join(path, sizeof path, dir, "model.safetensors");
    if (ct_is_file(path)) {
        m->shards = calloc(1, sizeof *m->shards);
        if (!m->shards) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        m->n_shards = 1;
        return ct_safetensors_open(ctx, &m->shards[0], path, err);
    }
    ct_path_join(path, sizeof path, dir, "model.safetensors.index.json");
    char *text;
    size_t len;
    ct_status rc = ct_read_file(ctx, path, &text, &len, 64u << 20, err);
    if (rc == CT_STATUS_NOT_FOUND)
        return ct_fail(err, CT_STATUS_NOT_FOUND, "%s: no model.safetensors or model.safetensors.index.json", dir);
    if (rc) return rc;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = j ? cJSON_GetObjectItemCaseSensitive(j, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(j);
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: expected a JSON object with \"weight_map\"", path);
    }
    // the distinct shard file names
    int n = cJSON_GetArraySize(wm);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    m->shards = calloc((size_t)n + 1, sizeof *m->shards);
    if (!names || !m->shards) {
        free(names);
        cJSON_Delete(j);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || strcmp(e->valuestring, "..") == 0) {
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: weight_map entry '%.80s' must name a file in the directory",
                         path, e->string);
            break;
        }
        names[k++] = e->valuestring;
    }
    // distinct names: sorted, then the repeats dropped (n log n: an index may map a million tensors)
    qsort(names, (size_t)k, sizeof *names, cmp_str);
    int distinct = 0;
    for (int i = 0; i < k; i++)
        if (!distinct || strcmp(names[distinct - 1], names[i]) != 0) names[distinct++] = names[i];
    k = distinct;
    for (int i = 0; i < k && !rc; i++) {
        char sp[1200];
        if (!ct_path_join(sp, sizeof sp, dir, names[i])) {
            rc = ct_fail(err, CT_STATUS_BAD_ARG, "path too long");
            break;
        }
        rc = ct_safetensors_open(ctx, &m->shards[i], sp, err);
        if (!rc) m->n_shards++;
    }
    // every mapped tensor must exist in its shard
    cJSON_ArrayForEach(e, wm) {
        if (rc) break;
        int found = 0;
        for (int i = 0; i < m->n_shards && !found; i++) found = ct_safetensors_find(m->shards[i], e->string) != NULL;
        if (!found) rc = ct_fail(err, CT_STATUS_NOT_FOUND, "%s lists '%.80s' in %.80s, which does not hold it", path,
                                 e->string, e->valuestring);
    }
    free(names);
    cJSON_Delete(j);
    return rc;
}

// Layer l's tensor named by pattern (NULL: the family has none; *vec / *mat is left as is): a
// vector [d0] into *vec, or a matrix [d0, d1] as PyTorch's Linear stores it ([out, in]; Conv1D
// families store [in, out]) into *mat.
static ct_status hf_layer_get(hf_ctx *h, const float **vec, ct_mat *mat, const char *pattern, int l, int optional,
                              int64_t d0, int64_t d1) {
    if (!pattern) return CT_OK;
    char n[160];
    snprintf(n, sizeof n, pattern, l);
    if (!mat) return hf_get(h, vec, n, optional, d0);
    if (h->f->conv1d) return hf_get_conv1d(h, mat, n, d1, d0, 0, d0);
    return hf_get_mat(h, mat, n, optional, d0, d1);
}

// q, k, v of layer l from a fused Conv1D weight (D, H*hd + 2 KV*hd), split by columns, and its
// fused bias (GPT-2's c_attn); nothing when the family has none.
static ct_status hf_layer_qkv(hf_ctx *h, ct_layer *w, int l) {
    const ct_config *c = &h->m->cfg;
    const hf_names *nm = &h->f->w;
    int64_t D = c->d_model, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    char n[160];
    ct_status rc = CT_OK;
    if (nm->qkv_b) {
        const float *b;   // (H*hd + 2 KV*hd,)
        snprintf(n, sizeof n, nm->qkv_b, l);
        if ((rc = hf_get(h, &b, n, 0, qd + 2 * kvd))) return rc;
        w->bq = b, w->bk = b + qd, w->bv = b + qd + kvd;
    }
    if (nm->qkv_w) {
        snprintf(n, sizeof n, nm->qkv_w, l);
        if ((rc = hf_get_conv1d(h, &w->wq, n, D, qd + 2 * kvd, 0, qd)) ||
            (rc = hf_get_conv1d(h, &w->wk, n, D, qd + 2 * kvd, qd, kvd)))
            return rc;
        rc = hf_get_conv1d(h, &w->wv, n, D, qd + 2 * kvd, qd + kvd, kvd);
    }
    return rc;
}

// Which layers use sliding-window attention: the text config's layer_types ("sliding_attention"
// or "full_attention" per layer), else layer i slides iff (i + 1) % sliding_window_pattern != 0
// (transformers' rule; the family's pattern when the config has none).
static ct_status hf_layer_types(ct_model *m, const hf_family *f, const cJSON *t, const char *dir, ct_err *err) {
    int L = m->cfg.n_layers;
    if (!f->sliding_pattern) return CT_OK;
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(t, "layer_types");
    if (types && !cJSON_IsNull(types)) {
        if (!cJSON_IsArray(types))
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: layer_types must be a list of %d layer types", dir, L);
        if (cJSON_GetArraySize(types) != L)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: layer_types must list %d layer types, got %d", dir, L,
                           cJSON_GetArraySize(types));
        for (int l = 0; l < L; l++) {
            const cJSON *e = cJSON_GetArrayItem(types, l);
            const char *v = cJSON_IsString(e) ? e->valuestring : NULL;
            if (!v || (strcmp(v, "sliding_attention") != 0 && strcmp(v, "full_attention") != 0))
                return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: layer_types[%d] is '%.40s'; expected "
                               "\"sliding_attention\" or \"full_attention\"", dir, l, v ? v : "(not a string)");
            m->layers[l].sliding = v[0] == 's';
        }
        return CT_OK;
    }
    cfg_bad bs = {0}, *bad = &bs;
    int pattern = json_int(bad, t, "sliding_window_pattern", json_int(bad, t, "_sliding_window_pattern", f->sliding_pattern));
    if (bad->key) return cfg_refuse(bad, dir, err);
    if (pattern < 1)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s/config.json: sliding_window_pattern must be at least 1, got %d", dir,
                       pattern);
    for (int l = 0; l < L; l++) m->layers[l].sliding = (l + 1) % pattern != 0;
    return CT_OK;
}

// x rounded to nearest (ties to even) in a dtype with `bits` significand bits (BF16 8, F16 11);
// x is a normal number of that dtype's range (a square root of a dimension)
static float round_to_bits(float x, int bits) {
    int e;
    double f = frexp((double)x, &e);   // x = f 2^e, f in [0.5, 1)
    return (float)ldexp(rint(ldexp(f, bits)), e - bits);
}

// The scale in the embedding's dtype (families with embed_scale_rounded)
static void round_embed_scale(ct_model *m) {
    ct_dtype dt = m->embed.dtype;
    if (dt == CT_DT_BF16 || dt == CT_DT_F16) m->cfg.embed_scale = round_to_bits(m->cfg.embed_scale, dt == CT_DT_BF16 ? 8 : 11);
}

static ct_status hf_layer(hf_ctx *h, int l) {
    const ct_config *c = &h->m->cfg;
    const hf_names *nm = &h->f->w;
    ct_layer *w = &h->m->layers[l];
    int64_t D = c->d_model, F = c->d_mlp, qd = (int64_t)c->n_heads * c->head_dim,
            kvd = (int64_t)c->n_kv_heads * c->head_dim, hd = c->head_dim;
    int ob = h->f->optional_biases;
    // every tensor a layer may have, in loading order, with its shape as Linear stores it:
    // vectors (vec) and matrices (mat)
    const struct { const float **vec; ct_mat *mat; const char *name; int optional; int64_t d0, d1; } t[] = {
        {&w->ln1_w, NULL, nm->ln1_w, 0, D, 0},       {&w->ln1_b, NULL, nm->ln1_b, 0, D, 0},
        {NULL, &w->wq, nm->wq, 0, qd, D},            {NULL, &w->wk, nm->wk, 0, kvd, D},
        {NULL, &w->wv, nm->wv, 0, kvd, D},           {NULL, &w->wo, nm->wo, 0, D, qd},
        {&w->bq, NULL, nm->bq, ob, qd, 0},           {&w->bk, NULL, nm->bk, ob, kvd, 0},
        {&w->bv, NULL, nm->bv, ob, kvd, 0},          {&w->bo, NULL, nm->bo, ob, D, 0},
        {&w->q_norm, NULL, nm->q_norm, 0, hd, 0},    {&w->k_norm, NULL, nm->k_norm, 0, hd, 0},
        {&w->post_attn_w, NULL, nm->post_attn_w, 0, D, 0},
        {&w->ln2_w, NULL, nm->ln2_w, 0, D, 0},       {&w->ln2_b, NULL, nm->ln2_b, 0, D, 0},
        {&w->post_ff_w, NULL, nm->post_ff_w, 0, D, 0},
        {NULL, &w->w_gate, nm->w_gate, 0, F, D},     {NULL, &w->w_up, nm->w_up, 0, F, D},
        {NULL, &w->w_down, nm->w_down, 0, D, F},     {&w->b_up, NULL, nm->b_up, ob, F, 0},
        {&w->b_down, NULL, nm->b_down, ob, D, 0},
    };
    ct_status rc = CT_OK;
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        if (t[i].mat == &w->wq && (rc = hf_layer_qkv(h, w, l))) return rc;   // fused q, k, v in their place
        if ((rc = hf_layer_get(h, t[i].vec, t[i].mat, t[i].name, l, t[i].optional, t[i].d0, t[i].d1))) return rc;
    }
    return CT_OK;
}

ct_status ct_model_load_hf(ct_ctx *ctx, ct_model **out, const char *dir, ct_err *err) {
    *out = NULL;
    char path[1200];
    if (!ct_path_join(path, sizeof path, dir, "config.json")) return ct_fail(err, CT_STATUS_BAD_ARG, "path too long");
    char *text;
    size_t len;
    ct_status rc = ct_read_file(ctx, path, &text, &len, 16u << 20, err);
    if (rc) return rc;
    rc = ct_model_load_hf_config(ctx, out, dir, text, len, err);
    free(text);
    return rc;
}

ct_status ct_model_load_hf_config(ct_ctx *ctx, ct_model **out, const char *dir, const char *text, size_t len,
                                  ct_err *err) {
    *out = NULL;
    char path[1200];
    if (!ct_path_join(path, sizeof path, dir, "config.json")) return ct_fail(err, CT_STATUS_BAD_ARG, "path too long");
    ct_status rc;
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s is not a JSON object", path);
    }
    ct_model *m = model_new();
    if (!m) {
        cJSON_Delete(j);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    const hf_family *f = NULL;
    const cJSON *t = j;
    rc = hf_config(&m->cfg, &f, j, &t, dir, err);
    if (!rc) rc = ct_config_validate(&m->cfg, err);
    if (!rc && !(m->layers = calloc((size_t)m->cfg.n_layers, sizeof(ct_layer))))
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) rc = hf_layer_types(m, f, t, dir, err);
    cJSON_Delete(j);
    if (!rc) rc = hf_open_shards(ctx, m, dir, err);
    for (int i = 0; !rc && i < m->n_shards; i++)   // every pass reads the weights whole
        if (m->shards[i]->mapped) ct_map_advise(m->shards[i]->map, m->shards[i]->size, CT_ADVISE_HUGE);
    hf_ctx h = {m, f, dir, "", err};
    const hf_names *nm = f ? &f->w : NULL;
    const ct_config *c = &m->cfg;
    int64_t D = c->d_model, V = c->vocab_size;
    if (!rc && f->alt_prefix && !hf_find(&h, nm->embed)) h.prefix = f->alt_prefix;
    if (!rc) rc = hf_get_mat(&h, &m->embed, nm->embed, 0, V, D);
    if (!rc && f->embed_scale_rounded) round_embed_scale(m);
    if (!rc && nm->pos_embed) rc = hf_get_mat(&h, &m->pos_embed, nm->pos_embed, 0, c->max_seq_len, D);
    if (!rc) rc = hf_get(&h, &m->lnf_w, nm->final_norm_w, 0, D);
    if (!rc && nm->final_norm_b) rc = hf_get(&h, &m->lnf_b, nm->final_norm_b, 0, D);
    for (int l = 0; !rc && l < c->n_layers; l++) rc = hf_layer(&h, l);
    if (!rc) {
        h.prefix = "";
        m->lm_head = m->embed;
        if (!c->tied && !(rc = hf_get_mat(&h, &m->lm_head, nm->lm_head, 1, V, D)) && !m->lm_head.data)
            rc = ct_fail(err, CT_STATUS_NOT_FOUND, "missing tensor '%s' in %s (config says "
                         "tie_word_embeddings is false)", nm->lm_head, dir);
    }
    if (!rc) rc = ct_model_init_rope(m, err);
    if (!rc) rc = load_tokenizer_beside(ctx, m, dir, 0, err);
    if (!rc && m->tok) {   // ids the config leaves out come from the tokenizer
        if (m->cfg.bos_id < 0) m->cfg.bos_id = ct_tokenizer_bos(m->tok);
        if (m->cfg.eos_id < 0) m->cfg.eos_id = ct_tokenizer_eos(m->tok);
    }
    if (rc) {
        ct_model_free(m);
        return rc;
    }
    snprintf(m->path, sizeof m->path, "%s", dir);
    *out = m;
    return CT_OK;
}

static size_t mat_bytes(const ct_mat *w) {
    return w->data ? (size_t)w->rows * (size_t)w->cols * ct_dtype_size(w->dtype) : 0;
}

size_t ct_model_step_bytes(const ct_model *m) {
    size_t n = mat_bytes(&m->lm_head);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const ct_layer *w = &m->layers[l];
        n += mat_bytes(&w->wq) + mat_bytes(&w->wk) + mat_bytes(&w->wv) + mat_bytes(&w->wo) + mat_bytes(&w->w_gate) +
             mat_bytes(&w->w_up) + mat_bytes(&w->w_down);
    }
    return n;
}

void ct_model_name(const ct_model *m, char *buf, size_t n) {
    char p[sizeof m->path];
    snprintf(p, sizeof p, "%s", m->path);
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/') p[--len] = 0;
    const char *snap = strstr(p, "/snapshots/"), *repo = NULL;
    if (snap && !strchr(snap + 11, '/')) {   // .../models--org--name/snapshots/<rev>
        const char *s = snap;
        while (s > p && s[-1] != '/') s--;
        if (strncmp(s, "models--", 8) == 0) repo = s + 8;
    }
    if (repo) {
        char id[sizeof m->path];
        snprintf(id, sizeof id, "%.*s", (int)(snap - repo), repo);
        char *sep = strstr(id, "--");   // the cache writes org/name as org--name
        if (sep) {
            *sep = '/';
            memmove(sep + 1, sep + 2, strlen(sep + 2) + 1);
        }
        snprintf(buf, n, "%s", id);
        return;
    }
    const char *base = strrchr(p, '/');
    snprintf(buf, n, "%s", base ? base + 1 : p);
}

// ----------------------------------------------------------------------------
// Weights held in another dtype (ct_model_hold_as)

// w (rows, cols) of any float dtype and strides -> a row-major copy in dt owned by m. row: (cols,)
// *kept counts the matrices left as they were (already in dt).
static int hold_mat(ct_model *m, ct_mat *w, ct_dtype dt, float *row, int *kept) {
    if (!w->data) return 1;
    if (w->dtype == dt) return ++*kept;
    uint16_t *p = (uint16_t *)model_own(m, ((size_t)w->rows * (size_t)w->cols + 1) / 2);
    if (!p) return 0;
    for (int64_t r = 0; r < w->rows; r++) {
        ct_mat_row(w, r, row);
        uint16_t *o = p + (size_t)r * (size_t)w->cols;
        for (int64_t c = 0; c < w->cols; c++) o[c] = dt == CT_DT_BF16 ? ct_f32_to_bf16(row[c]) : ct_f32_to_f16(row[c]);
    }
    *w = (ct_mat){(const uint8_t *)p, dt, w->rows, w->cols, w->cols, 1};
    return 1;
}

// *v (n,), when present -> a copy owned by m, each value rounded to dt
static int hold_vec(ct_model *m, const float **v, size_t n, ct_dtype dt) {
    if (!*v) return 1;
    float *p = model_own(m, n);
    if (!p) return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b[2];
        uint16_t h = dt == CT_DT_BF16 ? ct_f32_to_bf16((*v)[i]) : ct_f32_to_f16((*v)[i]);
        memcpy(b, &h, 2);
        ct_to_f32(&p[i], b, dt, 1);
    }
    *v = p;
    return 1;
}

ct_status ct_model_hold_as(ct_model *m, ct_dtype dt, ct_err *err) {
    const ct_config *c = &m->cfg;
    if (dt != CT_DT_F32 && dt != CT_DT_BF16 && dt != CT_DT_F16)
        return ct_fail(err, CT_STATUS_BAD_ARG, "weights can be held in F32, BF16 or F16, not %s", ct_dtype_name(dt));
    if (c->embed_scale_rounded) m->cfg.embed_scale = sqrtf((float)c->d_model);   // rounded below for BF16, F16
    if (dt == CT_DT_F32) return CT_OK;
    size_t D = (size_t)c->d_model, F = (size_t)c->d_mlp, hd = (size_t)c->head_dim;
    size_t qd = (size_t)c->n_heads * hd, kvd = (size_t)c->n_kv_heads * hd;
    size_t longest = (size_t)(F > D ? F : D) + qd;   // the longest row of any matrix
    float *row = malloc(sizeof(float) * longest);
    int tied = m->lm_head.data == m->embed.data, kept = 0;
    int ok = row && hold_mat(m, &m->embed, dt, row, &kept) && hold_mat(m, &m->pos_embed, dt, row, &kept) &&
             (tied || hold_mat(m, &m->lm_head, dt, row, &kept)) && hold_vec(m, &m->lnf_w, D, dt) &&
             hold_vec(m, &m->lnf_b, D, dt);
    if (ok && tied) m->lm_head = m->embed;
    for (int l = 0; ok && l < c->n_layers; l++) {
        ct_layer *w = &m->layers[l];
        ok = hold_mat(m, &w->wq, dt, row, &kept) && hold_mat(m, &w->wk, dt, row, &kept) &&
             hold_mat(m, &w->wv, dt, row, &kept) && hold_mat(m, &w->wo, dt, row, &kept) &&
             hold_mat(m, &w->w_gate, dt, row, &kept) && hold_mat(m, &w->w_up, dt, row, &kept) &&
             hold_mat(m, &w->w_down, dt, row, &kept) && hold_vec(m, &w->ln1_w, D, dt) && hold_vec(m, &w->ln1_b, D, dt) &&
             hold_vec(m, &w->bq, qd, dt) && hold_vec(m, &w->bk, kvd, dt) && hold_vec(m, &w->bv, kvd, dt) &&
             hold_vec(m, &w->bo, D, dt) && hold_vec(m, &w->q_norm, hd, dt) && hold_vec(m, &w->k_norm, hd, dt) &&
             hold_vec(m, &w->post_attn_w, D, dt) && hold_vec(m, &w->ln2_w, D, dt) && hold_vec(m, &w->ln2_b, D, dt) &&
             hold_vec(m, &w->b_up, F, dt) && hold_vec(m, &w->b_down, D, dt) && hold_vec(m, &w->post_ff_w, D, dt);
    }
    free(row);
    if (!ok) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory holding the weights in %s", ct_dtype_name(dt));
    if (c->embed_scale_rounded) round_embed_scale(m);
    if (!kept) {   // nothing reads the checkpoint's pages any more
        for (int i = 0; i < m->n_shards; i++)
            if (m->shards[i]->mapped) ct_map_advise(m->shards[i]->map, m->shards[i]->size, CT_ADVISE_DONTNEED);
        if (m->map) ct_map_advise(m->map, m->map_size, CT_ADVISE_DONTNEED);
    }
    return CT_OK;
}

ct_status ct_model_hold_layers(ct_model *m, int lo, int hi, ct_err *err) {
    int L = m->cfg.n_layers;
    if (lo < 0 || hi > L || lo >= hi)
        return ct_fail(err, CT_STATUS_BAD_ARG, "hold layers %d..%d: expected a range within the model's 0..%d", lo, hi - 1,
                       L - 1);
    if (ct_model_is_split(m))
        return ct_fail(err, CT_STATUS_BAD_ARG, "hold layers %d..%d: the model holds layers %d..%d already", lo, hi - 1,
                       m->hold_lo, m->hold_hi - 1);
    for (int l = 0; l < L; l++)
        if (l < lo || l >= hi) memset(&m->layers[l], 0, sizeof m->layers[l]);
    int tied = m->lm_head.data == m->embed.data;
    if (hi < L) m->lm_head = (ct_mat){0}, m->lnf_w = m->lnf_b = NULL;
    if (lo > 0 && !(tied && hi == L)) m->embed = (ct_mat){0};
    if (lo > 0) m->pos_embed = (ct_mat){0};
    m->hold_lo = lo, m->hold_hi = hi;
    return CT_OK;
}

int ct_model_is_split(const ct_model *m) { return m->hold_hi > 0 && (m->hold_lo > 0 || m->hold_hi < m->cfg.n_layers); }

ct_status ct_model_holds(const ct_model *m, int l, const char *fn, ct_err *err) {
    int L = m->cfg.n_layers;
    if (!ct_model_is_split(m) || (l >= m->hold_lo && l < m->hold_hi) || (l == -1 && m->hold_lo == 0) ||
        (l == L && m->hold_hi == L))
        return CT_OK;
    char what[32];
    if (l == -1) snprintf(what, sizeof what, "the embedding");
    else if (l == L) snprintf(what, sizeof what, "the unembedding");
    else snprintf(what, sizeof what, "layer %d", l);
    return ct_fail(err, CT_STATUS_BAD_ARG, "%s: needs %s, held by another rank: this process holds layers %d..%d of %d "
                   "(a layer-split model)", fn, what, m->hold_lo, m->hold_hi - 1, L);
}

// ----------------------------------------------------------------------------
// Dispatch

ct_status ct_model_load(ct_ctx *ctx, ct_model **out, const char *path, ct_err *err) {
    *out = NULL;
    ct_status rc = ct_ctx_check_read(ctx, path, err);   // a refused path: refused before anything else is looked at
    if (rc && rc != CT_STATUS_NOT_FOUND) return rc;
    if (ct_is_file(path)) return ct_model_load_llama2c(ctx, out, path, err);
    if (!ct_is_dir(path))
        return access(path, F_OK) == 0 ? ct_fail(err, CT_STATUS_IO, "model %s is not a regular file or a directory", path)
                                       : ct_fail(err, CT_STATUS_NOT_FOUND, "no model at %s (no such file or directory)", path);
    char p[1200];
    if (ct_path_join(p, sizeof p, path, "config.json") && ct_is_file(p)) return ct_model_load_hf(ctx, out, path, err);
    // a directory holding a llama2.c checkpoint: the one .bin that is not a tokenizer
    DIR *d = opendir(path);
    if (!d) return ct_fail(err, CT_STATUS_IO, "cannot read directory %s", path);
    char found[256] = "";
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".bin") == 0 && strncmp(e->d_name, "tok", 3) != 0) {
            if (!count || strcmp(e->d_name, found) < 0) snprintf(found, sizeof found, "%s", e->d_name);
            count++;
        }
    }
    closedir(d);
    if (count != 1)
        return ct_fail(err, count ? CT_STATUS_BAD_ARG : CT_STATUS_NOT_FOUND,
                       "%s: expected config.json (Hugging Face) or one llama2.c .bin checkpoint, found %d .bin files",
                       path, count);
    ct_path_join(p, sizeof p, path, found);
    return ct_model_load_llama2c(ctx, out, p, err);
}

// ----------------------------------------------------------------------------
// Random models (benchmarks and tests at sizes no checkpoint file is worth writing for)

// n floats owned by m, uniform(-scale, scale) + base; NULL when out of memory.
static const float *random_weights(ct_model *m, size_t n, float scale, float base, uint64_t *seed) {
    float *p = model_own(m, n);
    if (p)
        for (size_t i = 0; i < n; i++) p[i] = base + scale * ct_rand_uniform(seed);
    return p;
}

// *out = a float32 matrix (rows, cols) owned by m, uniform(-scale, scale); 0 when out of memory.
static int random_mat(ct_model *m, ct_mat *out, size_t rows, size_t cols, float scale, uint64_t *seed) {
    const float *p = random_weights(m, rows * cols, scale, 0.0f, seed);
    if (p) *out = ct_mat_f32(p, (int64_t)rows, (int64_t)cols);
    return p != NULL;
}

ct_status ct_model_random(ct_model **out, const ct_config *cfg, uint64_t seed, ct_err *err) {
    *out = NULL;
    ct_model *m = model_new();
    if (!m) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    m->cfg = *cfg;
    ct_config *c = &m->cfg;
    snprintf(c->architecture, sizeof c->architecture, "random");
    snprintf(m->path, sizeof m->path, "random:%llu", (unsigned long long)seed);
    ct_status rc = ct_config_validate(c, err);
    if (!rc && (c->learned_pos || c->post_norms || c->qk_norm || c->norm != CT_NORM_RMS || !c->gated_mlp))
        rc = ct_fail(err, CT_STATUS_UNSUPPORTED, "random models: a Llama-shaped config (RMS norms, gated MLP)");
    if (rc) {
        ct_model_free(m);
        return rc;
    }
    size_t D = c->d_model, F = c->d_mlp, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    float sd = 1.0f / sqrtf((float)D), sf = 1.0f / sqrtf((float)F), sq = 1.0f / sqrtf((float)qd);
    int ok = (m->layers = calloc((size_t)c->n_layers, sizeof(ct_layer))) != NULL;
    ok = ok && random_mat(m, &m->embed, (size_t)c->vocab_size, D, 1.0f, &seed);
    for (int l = 0; ok && l < c->n_layers; l++) {
        ct_layer *w = &m->layers[l];
        ok = (w->ln1_w = random_weights(m, D, 0.1f, 1.0f, &seed)) && (w->ln2_w = random_weights(m, D, 0.1f, 1.0f, &seed)) &&
             random_mat(m, &w->wq, qd, D, sd, &seed) && random_mat(m, &w->wk, kvd, D, sd, &seed) &&
             random_mat(m, &w->wv, kvd, D, sd, &seed) && random_mat(m, &w->wo, D, qd, sq, &seed) &&
             random_mat(m, &w->w_gate, F, D, sd, &seed) && random_mat(m, &w->w_up, F, D, sd, &seed) &&
             random_mat(m, &w->w_down, D, F, sf, &seed);
    }
    ok = ok && (m->lnf_w = random_weights(m, D, 0.1f, 1.0f, &seed));
    if (ok && c->tied) m->lm_head = m->embed;
    else ok = ok && random_mat(m, &m->lm_head, (size_t)c->vocab_size, D, sd, &seed);
    rc = ok ? ct_model_init_rope(m, err) : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a random model");
    if (rc) {
        ct_model_free(m);
        return rc;
    }
    *out = m;
    return CT_OK;
}
