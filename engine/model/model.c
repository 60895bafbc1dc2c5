// model.c - the forward pass with hook points, the KV cache, sampling and generation.
// Loading lives in model_load.c. Legend: see model.h.
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// Hook names

static const struct { const char *name; int per_layer; } hook_names[CT_HOOK_N_KINDS] = {
    [CT_HOOK_RESID_PRE] = {"hook_resid_pre", 1},
    [CT_HOOK_LN1_SCALE] = {"ln1.hook_scale", 1},
    [CT_HOOK_LN1_NORMALIZED] = {"ln1.hook_normalized", 1},
    [CT_HOOK_ATTN_IN] = {"attn.hook_in", 1},
    [CT_HOOK_Q] = {"attn.hook_q", 1},
    [CT_HOOK_K] = {"attn.hook_k", 1},
    [CT_HOOK_Q_NORM_SCALE] = {"attn.q_norm.hook_scale", 1},
    [CT_HOOK_K_NORM_SCALE] = {"attn.k_norm.hook_scale", 1},
    [CT_HOOK_V] = {"attn.hook_v", 1},
    [CT_HOOK_PATTERN] = {"attn.hook_pattern", 1},
    [CT_HOOK_Z] = {"attn.hook_z", 1},
    [CT_HOOK_ATTN_RESULT] = {"attn.hook_out", 1},
    [CT_HOOK_LN1_POST_SCALE] = {"ln1_post.hook_scale", 1},
    [CT_HOOK_ATTN_OUT] = {"hook_attn_out", 1},
    [CT_HOOK_RESID_MID] = {"hook_resid_mid", 1},
    [CT_HOOK_LN2_SCALE] = {"ln2.hook_scale", 1},
    [CT_HOOK_LN2_NORMALIZED] = {"ln2.hook_normalized", 1},
    [CT_HOOK_MLP_IN] = {"mlp.hook_in", 1},
    [CT_HOOK_MLP_PRE] = {"mlp.hook_pre", 1},
    [CT_HOOK_MLP_POST] = {"mlp.hook_post", 1},
    [CT_HOOK_MLP_RAW_OUT] = {"mlp.hook_out", 1},
    [CT_HOOK_LN2_POST_SCALE] = {"ln2_post.hook_scale", 1},
    [CT_HOOK_MLP_OUT] = {"hook_mlp_out", 1},
    [CT_HOOK_RESID_POST] = {"hook_resid_post", 1},
    [CT_HOOK_EMBED] = {"hook_embed", 0},
    [CT_HOOK_POS_EMBED] = {"hook_pos_embed", 0},
    [CT_HOOK_LNF_SCALE] = {"ln_final.hook_scale", 0},
    [CT_HOOK_LNF_NORMALIZED] = {"ln_final.hook_normalized", 0},
    [CT_HOOK_UNEMBED_PRE] = {"unembed.hook_pre", 0},
};

// Other spellings users bring from TransformerLens and circuit-tracer configs.
static const struct { const char *alias; ct_hook_kind kind; } hook_aliases[] = {
    {"hook_mlp_in", CT_HOOK_MLP_IN},
    {"hook_attn_in", CT_HOOK_ATTN_IN},
    {"attn.hook_result", CT_HOOK_ATTN_RESULT},
    {"mlp.hook_result", CT_HOOK_MLP_RAW_OUT},
    {"ln_final.hook_out", CT_HOOK_UNEMBED_PRE},
};

void ct_hook_name(ct_hook_id id, char *buf, size_t n) {
    if (hook_names[id.kind].per_layer)
        snprintf(buf, n, "blocks.%d.%s", id.layer, hook_names[id.kind].name);
    else
        snprintf(buf, n, "%s", hook_names[id.kind].name);
}

int ct_hook_exists(const ct_model *m, ct_hook_id id) {
    const ct_config *c = &m->cfg;
    if (hook_names[id.kind].per_layer && (id.layer < 0 || id.layer >= c->n_layers)) return 0;
    switch (id.kind) {
    case CT_HOOK_LN1_POST_SCALE:
    case CT_HOOK_LN2_POST_SCALE: return c->post_norms;
    case CT_HOOK_POS_EMBED: return c->learned_pos;
    case CT_HOOK_Q_NORM_SCALE:
    case CT_HOOK_K_NORM_SCALE: return c->qk_norm;
    default: return 1;
    }
}

ct_status ct_hook_parse(const ct_model *m, const char *name, ct_hook_id *out, ct_err *err) {
    const char *rest = name;
    int layer = -1;
    if (strncmp(name, "blocks.", 7) == 0) {
        char *end;
        long l = strtol(name + 7, &end, 10);
        if (end == name + 7 || *end != '.' || l < 0 || l >= m->cfg.n_layers)
            return ct_fail(err, CT_STATUS_NOT_FOUND, "hook '%s': expected blocks.<layer>.<hook> with layer in 0..%d",
                           name, m->cfg.n_layers - 1);
        layer = (int)l;
        rest = end + 1;
    }
    int kind = -1;
    for (int k = 0; k < CT_HOOK_N_KINDS && kind < 0; k++)
        if (strcmp(rest, hook_names[k].name) == 0) kind = k;
    for (size_t a = 0; a < sizeof hook_aliases / sizeof *hook_aliases && kind < 0; a++)
        if (strcmp(rest, hook_aliases[a].alias) == 0) kind = (int)hook_aliases[a].kind;
    if (kind < 0 || hook_names[kind].per_layer != (layer >= 0))
        return ct_fail(err, CT_STATUS_NOT_FOUND,
                       "no hook point '%s'; expected blocks.<l>.{hook_resid_pre, ln1.hook_scale, "
                       "ln1.hook_normalized, attn.hook_pattern, hook_resid_mid, ln2.hook_normalized, "
                       "mlp.hook_in, mlp.hook_out, hook_mlp_out, hook_resid_post, ...} or hook_embed, "
                       "ln_final.hook_scale, unembed.hook_pre", name);
    ct_hook_id id = {(ct_hook_kind)kind, layer};
    if (!ct_hook_exists(m, id))
        return ct_fail(err, CT_STATUS_NOT_FOUND, "hook '%s' does not exist in a %s model", name,
                       m->cfg.architecture);
    *out = id;
    return CT_OK;
}

ct_status ct_hook_at(const ct_model *m, int layer, const char *hook, ct_hook_id *out, ct_err *err) {
    char name[160];
    snprintf(name, sizeof name, "blocks.%d.%.100s", layer, hook);
    return ct_hook_parse(m, name, out, err);
}

int ct_hook_shape(const ct_model *m, ct_hook_id id, int T, int64_t *shape) {
    const ct_config *c = &m->cfg;
    switch (id.kind) {
    case CT_HOOK_LN1_SCALE: case CT_HOOK_LN1_POST_SCALE: case CT_HOOK_LN2_SCALE:
    case CT_HOOK_LN2_POST_SCALE: case CT_HOOK_LNF_SCALE:
        shape[0] = T;
        return 1;
    case CT_HOOK_Q: case CT_HOOK_Z:
        shape[0] = T, shape[1] = c->n_heads, shape[2] = c->head_dim;
        return 3;
    case CT_HOOK_Q_NORM_SCALE:
        shape[0] = T, shape[1] = c->n_heads;
        return 2;
    case CT_HOOK_K_NORM_SCALE:
        shape[0] = T, shape[1] = c->n_kv_heads;
        return 2;
    case CT_HOOK_K: case CT_HOOK_V:
        shape[0] = T, shape[1] = c->n_kv_heads, shape[2] = c->head_dim;
        return 3;
    case CT_HOOK_PATTERN:
        shape[0] = c->n_heads, shape[1] = T, shape[2] = T;
        return 3;
    case CT_HOOK_MLP_PRE: case CT_HOOK_MLP_POST:
        shape[0] = T, shape[1] = c->d_mlp;
        return 2;
    default:
        shape[0] = T, shape[1] = c->d_model;
        return 2;
    }
}

ct_status ct_hook_cache_init(ct_hook_cache *c, const ct_hook_id *ids, int n, ct_err *err) {
    memset(c, 0, sizeof *c);
    c->ids = malloc(sizeof *ids * (size_t)(n + 1));
    c->values = calloc((size_t)n + 1, sizeof *c->values);
    if (!c->ids || !c->values) {
        ct_hook_cache_free(c);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    if (n) memcpy(c->ids, ids, sizeof *ids * (size_t)n);
    c->n = n;
    return CT_OK;
}

ct_status ct_hook_cache_init_all(ct_hook_cache *c, const ct_model *m, ct_err *err) {
    int cap = CT_HOOK_N_KINDS * (m->cfg.n_layers + 1), n = 0;
    ct_hook_id *ids = malloc(sizeof *ids * (size_t)cap);
    if (!ids) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int k = CT_HOOK_N_LAYER; k < CT_HOOK_N_KINDS; k++) {
        ct_hook_id id = {(ct_hook_kind)k, -1};
        if (ct_hook_exists(m, id)) ids[n++] = id;
    }
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < CT_HOOK_N_LAYER; k++) {
            ct_hook_id id = {(ct_hook_kind)k, l};
            if (ct_hook_exists(m, id)) ids[n++] = id;
        }
    ct_status rc = ct_hook_cache_init(c, ids, n, err);
    free(ids);
    return rc;
}

void ct_hook_cache_free(ct_hook_cache *c) {
    if (c->values)
        for (int i = 0; i < c->n; i++) ct_tensor_free(c->values[i]);
    free(c->values);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

// ----------------------------------------------------------------------------
// Prompts

ct_status ct_prompt_text(const ct_model *m, const char *text, size_t len, int **out, int *n, ct_err *err) {
    *out = NULL;
    *n = 0;
    if (len == 0) return ct_fail(err, CT_STATUS_BAD_ARG, "the prompt is empty");
    if (!m->tok) return ct_fail(err, CT_STATUS_BAD_ARG, "the model has no tokenizer; pass token ids");
    return ct_tokenizer_encode(m->tok, text, len, 1, out, n, err);
}

ct_status ct_prompt_ids(const ct_model *m, const int *ids, int n_ids, int **out, int *n, ct_err *err) {
    *out = NULL;
    *n = 0;
    if (n_ids < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "the prompt is empty");
    int bos = m->cfg.bos_id, special = ids[0] == bos || ids[0] == m->cfg.eos_id;
    if (m->tok && ids[0] >= 0) {
        const char *p = ct_tokenizer_piece(m->tok, ids[0]);
        special |= p && p[0] == '<' && p[strlen(p) - 1] == '>';
    }
    int add = !special && bos >= 0;
    int *o = malloc(sizeof(int) * (size_t)(n_ids + 1));
    if (!o) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (add) o[0] = bos;
    memcpy(o + add, ids, sizeof(int) * (size_t)n_ids);
    *out = o;
    *n = n_ids + add;
    return CT_OK;
}

ct_status ct_token_of_text(const ct_model *m, const char *text, size_t len, int *id, ct_err *err) {
    if (!m->tok) return ct_fail(err, CT_STATUS_BAD_ARG, "'%.*s': the model has no tokenizer", (int)(len < 64 ? len : 64), text);
    int *ids = NULL, k = 0;
    ct_status rc = ct_tokenizer_encode(m->tok, text, len, 0, &ids, &k, err);
    if (rc) return rc;
    *id = k == 1 ? ids[0] : -1;
    free(ids);
    if (k != 1)
        return ct_fail(err, CT_STATUS_BAD_ARG, "'%.*s' is %d tokens; expected exactly one token",
                       (int)(len < 64 ? len : 64), text, k);
    return CT_OK;
}

// ----------------------------------------------------------------------------
// KV cache

ct_status ct_kv_cache_init(ct_kv_cache *kv, const ct_model *m, int max_len, ct_err *err) {
    memset(kv, 0, sizeof *kv);
    const ct_config *c = &m->cfg;
    size_t n = (size_t)c->n_layers * (size_t)max_len * (size_t)c->n_kv_heads * (size_t)c->head_dim;
    kv->bytes = n * sizeof(float);
    kv->k = ct_alloc(kv->bytes);
    kv->v = ct_alloc(kv->bytes);
    if (!kv->k || !kv->v) {
        ct_kv_cache_free(kv);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a KV cache of %d positions", max_len);
    }
    kv->max_len = max_len;
    return CT_OK;
}

void ct_kv_cache_free(ct_kv_cache *kv) {
    ct_dealloc(kv->k, kv->bytes);
    ct_dealloc(kv->v, kv->bytes);
    memset(kv, 0, sizeof *kv);
}

// ----------------------------------------------------------------------------
// Scratch (ct_scratch in model.h): grown on demand, reused, freed with the model

// The forward pass's buffers for T positions: att is the scratch's att region, the others are
// carved from its fwd region (fwd_layout).
typedef struct {
    float *x;        // (T, D) residual stream
    float *xb;       // (T, D) normalized input to attention or MLP
    float *q;        // (T, H*hd)
    float *z;        // (T, H*hd)
    float *att;      // (T, S) scores then pattern of one head
    float *ao;       // (T, D)
    float *hg, *hu;  // (T, F)
    float *mo;       // (T, D)
    float *scale;    // (T,) norm denominators
    float *cs, *sn;  // (T, hd/2) RoPE angles (+1: hd may be 0 without RoPE)
    float *cs_local, *sn_local;   // (T, hd/2) the sliding-window layers' angles, when their base differs
} fwd_buffers;

// n floats rounded up to 64 bytes, so every region starts as aligned as the block, plus 64
// bytes, so regions of a multiple of 4 KiB do not start at the same address mod 4096 (loads
// from one and stores to the next would then falsely depend on each other: 4K aliasing).
static size_t region(size_t n) { return ((n + 15) & ~(size_t)15) + 16; }

// Floats of the fwd region for T positions; when base is set, points b's buffers (all but att)
// into it.
static size_t fwd_layout(const ct_config *c, int T, float *base, fwd_buffers *b) {
    size_t TD = (size_t)T * c->d_model, TQ = (size_t)T * c->n_heads * c->head_dim;
    size_t TF = (size_t)T * (c->d_mlp > 0 ? c->d_mlp : 1), TR = (size_t)T * (c->head_dim / 2) + 1;
    struct { float **p; size_t n; } parts[] = {
        {&b->x, TD}, {&b->xb, TD}, {&b->q, TQ}, {&b->z, TQ}, {&b->ao, TD}, {&b->hg, TF},
        {&b->hu, TF}, {&b->mo, TD}, {&b->scale, (size_t)T}, {&b->cs, TR}, {&b->sn, TR},
        {&b->cs_local, c->rope_local_theta > 0 ? TR : 1}, {&b->sn_local, c->rope_local_theta > 0 ? TR : 1},
    };
    size_t off = 0;
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        if (base) *parts[i].p = base + off;
        off += region(parts[i].n);
    }
    return off;
}

// Makes *p (*cap floats) hold at least n floats; growing drops the contents. 0: out of memory.
static int grow(float **p, size_t *cap, size_t n) {
    if (n <= *cap) return 1;
    ct_dealloc(*p, *cap * sizeof(float));
    *p = ct_alloc(n * sizeof(float));
    *cap = *p ? n : 0;
    return *p != NULL;
}

// Makes the scratch's tile hold what ct_mat_matmul needs for the largest weight matrix of m that
// is not read in place (nothing when every one is). 0: out of memory.
static int grow_tile(ct_model *m) {
    size_t n = 0;
    const ct_mat *top[] = {&m->lm_head};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++) n = n > ct_mat_scratch_floats(top[i]) ? n : ct_mat_scratch_floats(top[i]);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const ct_layer *w = &m->layers[l];
        const ct_mat *mats[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < sizeof mats / sizeof *mats; i++)
            if (mats[i]->data && ct_mat_scratch_floats(mats[i]) > n) n = ct_mat_scratch_floats(mats[i]);
    }
    return grow(&m->scratch.tile, &m->scratch.tile_n, n);
}

void ct_scratch_free(ct_scratch *s) {
    ct_dealloc(s->fwd, s->fwd_n * sizeof(float));
    ct_dealloc(s->att, s->att_n * sizeof(float));
    ct_dealloc(s->pack, s->pack_n * sizeof(float));
    ct_dealloc(s->mlp, s->mlp_n * sizeof(float));
    ct_dealloc(s->tile, s->tile_n * sizeof(float));
    free(s->probs);
    memset(s, 0, sizeof *s);
}

// ----------------------------------------------------------------------------
// Forward pass

// Where a hook's tensor is (NULL: not requested).
static float *hook_slot(ct_hook_cache *hc, ct_hook_kind kind, int layer) {
    if (!hc) return NULL;
    for (int i = 0; i < hc->n; i++)
        if (hc->ids[i].kind == kind && hc->ids[i].layer == layer && hc->values[i])
            return ct_tensor_data(hc->values[i]);
    return NULL;
}

static void hook_copy(ct_hook_cache *hc, ct_hook_kind kind, int layer, const float *src, size_t n) {
    float *dst = hook_slot(hc, kind, layer);
    if (dst) memcpy(dst, src, n * sizeof(float));
}

// h (n,) = x normalised with denominator d, before the gain: RMS x / d, LayerNorm (x - mean x) / d
// (the same arithmetic as ct_rmsnorm / ct_layernorm).
static void normalize_row(const ct_config *c, float *h, const float *x, float d, int n) {
    if (c->norm == CT_NORM_RMS) {
        float inv = 1.0f / d;
        for (int i = 0; i < n; i++) h[i] = x[i] * inv;
    } else {
        double mean = 0.0;
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++) h[i] = (float)(x[i] - mean) / d;
    }
}

// out (T, D) = norm(x (T, D)) with gain; scale (T,) gets the denominators. normalized_hook
// (T, D) (may be NULL) gets the value before the gain. frozen (T,) (may be NULL): denominators
// to use instead of computing them, which makes the norm linear in x.
static void norm_rows(const ct_config *c, float *out, const float *x, const float *w, const float *b,
                      float *scale, float *normalized_hook, int T, int n, const float *frozen) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * n;
        float *o = out + (size_t)t * n;
        float d;
        if (frozen) {
            d = frozen[t];
            normalize_row(c, o, xr, d, n);
            for (int i = 0; i < n; i++)
                o[i] = c->norm == CT_NORM_RMS ? o[i] * (w ? w[i] + c->norm_gain_offset : 1.0f)
                                              : o[i] * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
        } else {
            d = c->norm == CT_NORM_RMS ? ct_rmsnorm(o, xr, w, c->norm_gain_offset, c->norm_eps, n)
                                       : ct_layernorm(o, xr, w, b, c->norm_eps, n);
        }
        scale[t] = d;
        if (normalized_hook) normalize_row(c, normalized_hook + (size_t)t * n, xr, d, n);
    }
}

// v (hd,) = a q/k norm of v in place with gain g: denominator *frozen when given (the norm is then
// linear), else computed; *scale (may be NULL) gets the denominator used.
static void head_norm(const ct_config *c, float *v, const float *g, const float *frozen, float *scale) {
    int hd = c->head_dim;
    float d;
    if (frozen) {
        d = *frozen;
        float inv = 1.0f / d;
        for (int i = 0; i < hd; i++) v[i] = v[i] * inv * (g ? g[i] + c->norm_gain_offset : 1.0f);
    } else {
        d = ct_rmsnorm(v, v, g, c->norm_gain_offset, c->norm_eps, hd);
    }
    if (scale) *scale = d;
}

// cs, sn (T, hd/2): cos and sin of position * inv_freq (hd/2,) for the T positions from pos0.
static void rope_table(const ct_model *m, const float *inv_freq, float *cs, float *sn, int pos0, int T) {
    int half = m->cfg.head_dim / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            float ang = (float)(pos0 + t) * inv_freq[i];
            cs[t * half + i] = cosf(ang);
            sn[t * half + i] = sinf(ang);
        }
}

// Rotates one head vector v (hd,) by the angles of one position (cs, sn: (hd/2,)).
static void rope_apply(const ct_config *c, float *v, const float *cs, const float *sn) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        int a = c->rope == CT_ROPE_ADJACENT ? 2 * i : i;
        int b = c->rope == CT_ROPE_ADJACENT ? 2 * i + 1 : i + half;
        float v0 = v[a], v1 = v[b];
        v[a] = v0 * cs[i] - v1 * sn[i];
        v[b] = v0 * sn[i] + v1 * cs[i];
    }
}

void ct_model_rope(const ct_model *m, int layer, int pos, float *v) {
    const ct_config *c = &m->cfg;
    if (c->rope == CT_ROPE_NONE) return;
    int half = c->head_dim / 2;
    const float *inv = m->layers[layer].sliding && m->rope_local_inv_freq ? m->rope_local_inv_freq : m->rope_inv_freq;
    float *cs = malloc(sizeof(float) * (size_t)half * 2 + 1), *sn = cs ? cs + half : NULL;
    if (!cs) return;
    for (int i = 0; i < half; i++) {   // as rope_table
        float ang = (float)pos * inv[i];
        cs[i] = cosf(ang), sn[i] = sinf(ang);
    }
    rope_apply(c, v, cs, sn);
    free(cs);
}

// y (n,) += a * x (n,)
static void axpy(float *restrict y, float a, const float *restrict x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// q . k (hd,) summed pair by pair in RoPE-pair order, so a checkpoint gives the same bits
// whether its heads store pairs adjacent (llama2.c) or split in halves (Hugging Face).
static float rope_dot(const ct_config *c, const float *q, const float *k) {
    int half = c->head_dim / 2;
    float s = 0.0f;
    if (c->rope == CT_ROPE_ADJACENT) {
        for (int i = 0; i < half; i++) s += q[2 * i] * k[2 * i] + q[2 * i + 1] * k[2 * i + 1];
    } else if (c->rope == CT_ROPE_HALF) {
        for (int i = 0; i < half; i++) s += q[i] * k[i] + q[i + half] * k[i + half];
    } else {
        for (int i = 0; i < c->head_dim; i++) s += q[i] * k[i];
    }
    return s;
}

static float act_fn(const ct_config *c, float x) {
    return c->act == CT_ACT_SILU ? ct_silu(x) : ct_gelu_tanh(x);
}

// Pre-softmax score of one query with its keys j in [lo, p] into a (S,): scaled, soft-capped,
// zero outside [lo, p]; then the pattern over [lo, p].
static void score_row_softmax(const ct_config *c, float *a, int lo, int p, int S) {
    for (int j = 0; j < lo; j++) a[j] = 0.0f;
    for (int j = p + 1; j < S; j++) a[j] = 0.0f;
    if (c->attn_softcap > 0)
        for (int j = lo; j <= p; j++) a[j] = c->attn_softcap * tanhf(a[j] / c->attn_softcap);
    ct_softmax(a + lo, p - lo + 1);
}

// rows (n, hd) of a head, src rows strided by `stride`, into out (n, hd) contiguous in RoPE-pair
// order (i, i + hd/2): llama2.c's adjacent pairs and Hugging Face's halves then give the same
// products, bit for bit.
static void pack_head(const ct_config *c, float *restrict out, const float *restrict src, int n, int stride) {
    int hd = c->head_dim, half = hd / 2;
    for (int r = 0; r < n; r++) {
        const float *x = src + (size_t)r * stride;
        float *o = out + (size_t)r * hd;
        if (c->rope == CT_ROPE_ADJACENT) {
            for (int i = 0; i < half; i++) o[i] = x[2 * i], o[i + half] = x[2 * i + 1];
        } else {
            memcpy(o, x, sizeof(float) * (size_t)hd);
        }
    }
}

// Positions per block of queries in the batched path: a block's products cover the keys up to
// its last query, so the causal half of the scores is mostly skipped.
#define ATT_BLOCK 64

// Attention of layer l for T new positions starting at pos0; keys/values for positions
// 0..pos0+T-1 are in kc/vc (S, KV*hd). z (T, H*hd); att (T, S) scratch; pattern hook (H, T, T)
// when pos0 == 0.
// frozen (H, T, T) (may be NULL, pos0 must be 0): the pattern to use instead of softmax(q.k).
// One query (generation) is a plain loop; more are blocks of matrix products: scores
// Q_h K_h^T (B, keys) and z_h = P_h V_h (B, hd) per head and block of B queries. pack
// (S + ATT_BLOCK, hd) scratch holds one head's keys and a block's queries in pair order.
static void attention(const ct_model *m, int l, const float *q, const float *kc, const float *vc,
                      int pos0, int T, float *restrict z, float *restrict att, float *pattern_hook, const float *frozen,
                      float *restrict pack) {
    const ct_config *c = &m->cfg;
    int hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd, group = c->n_heads / c->n_kv_heads;
    int S = pos0 + T;
    int window = m->layers[l].sliding ? c->sliding_window : 0;
    for (int h = 0; h < c->n_heads; h++) {
        int kvh = h / group;
        const float *kh = kc + (size_t)kvh * hd, *vh = vc + (size_t)kvh * hd;
        if (T == 1) {   // one query: a plain loop beats a BLAS call
            int p = pos0, lo = window && p - window + 1 > 0 ? p - window + 1 : 0;
            const float *qv = q + (size_t)h * hd;
            float *a = att;
            for (int j = lo; j <= p; j++) a[j] = rope_dot(c, qv, kh + (size_t)j * kvd) * c->attn_scale;
            score_row_softmax(c, a, lo, p, S);
            if (pattern_hook) pattern_hook[h] = a[0];
            float *zo = z + (size_t)h * hd;
            for (int i = 0; i < hd; i++) zo[i] = 0.0f;
            for (int j = lo; j <= p; j++) axpy(zo, a[j], vh + (size_t)j * kvd, hd);
            continue;
        }
        float *kp = pack, *qp = pack + (size_t)S * hd;   // (S, hd) keys, (ATT_BLOCK, hd) queries
        if (!frozen) pack_head(c, kp, kh, S, kvd);
        for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
            int B = T - t0 < ATT_BLOCK ? T - t0 : ATT_BLOCK;
            int hi = frozen ? S : pos0 + t0 + B;   // keys [k0, hi) serve the block (a frozen pattern is used whole)
            int k0 = !frozen && window && pos0 + t0 - window + 1 > 0 ? pos0 + t0 - window + 1 : 0;
            float *a = att + (size_t)t0 * S;   // rows t0 .. t0+B-1 of (T, S)
            if (frozen) {
                for (int t = t0; t < t0 + B; t++)
                    memcpy(att + (size_t)t * S, frozen + ((size_t)h * T + t) * T, sizeof(float) * (size_t)S);
            } else {
                // scores (B, hi - k0) = scale * Q_h[t0:t0+B] (B, hd) @ K_h[k0:hi]^T
                pack_head(c, qp, q + (size_t)t0 * qd + (size_t)h * hd, B, qd);
                ct_sgemm(0, 1, B, hi - k0, hd, c->attn_scale, qp, hd, kp + (size_t)k0 * hd, hd, 0.0f, a + k0, S);
                for (int t = t0; t < t0 + B; t++) {
                    int p = pos0 + t, lo = window && p - window + 1 > 0 ? p - window + 1 : 0;
                    score_row_softmax(c, att + (size_t)t * S, lo, p, S);
                }
            }
            if (pattern_hook)
                for (int t = t0; t < t0 + B; t++)
                    memcpy(pattern_hook + ((size_t)h * T + t) * T, att + (size_t)t * S, sizeof(float) * (size_t)T);
            // z_h[t0:t0+B] (B, hd) = P_h (B, keys k0..hi) @ V_h (keys, hd), rows of z strided by H*hd
            ct_sgemm(0, 0, B, hd, hi - k0, 1.0f, a + k0, S, vh + (size_t)k0 * kvd, kvd, 0.0f,
                     z + (size_t)t0 * qd + (size_t)h * hd, qd);
        }
    }
}

// out (T, D) = the raw MLP output of layer l on x (T, D) (after the pre-MLP norm); hg, hu (T, F)
// scratch; hooks (may be NULL) get mlp.hook_pre and mlp.hook_post. Weights are converted through
// the scratch's tile.
static void mlp(const ct_model *m, int l, const float *x, int T, float *restrict hg, float *restrict hu, float *out,
                ct_hook_cache *hooks) {
    const ct_config *c = &m->cfg;
    const ct_layer *w = &m->layers[l];
    float *tile = m->scratch.tile;
    size_t tn = m->scratch.tile_n, TF = (size_t)T * c->d_mlp;
    if (c->gated_mlp) {
        ct_mat_matmul(hg, x, &w->w_gate, NULL, T, tile, tn);
        ct_mat_matmul(hu, x, &w->w_up, w->b_up, T, tile, tn);
        hook_copy(hooks, CT_HOOK_MLP_PRE, l, hg, TF);
        for (size_t i = 0; i < TF; i++) hg[i] = act_fn(c, hg[i]) * hu[i];
    } else {
        ct_mat_matmul(hg, x, &w->w_up, w->b_up, T, tile, tn);
        hook_copy(hooks, CT_HOOK_MLP_PRE, l, hg, TF);
        for (size_t i = 0; i < TF; i++) hg[i] = act_fn(c, hg[i]);
    }
    hook_copy(hooks, CT_HOOK_MLP_POST, l, hg, TF);
    ct_mat_matmul(out, hg, &w->w_down, w->b_down, T, tile, tn);
}

ct_status ct_model_mlp(ct_model *m, int layer, const float *x, int T, float *out, ct_err *err) {
    ct_status rc = ct_model_holds(m, layer, "mlp", err);
    if (rc) return rc;
    size_t TF = region((size_t)T * m->cfg.d_mlp + 1);
    ct_scratch *sc = &m->scratch;   // its own region: a pass calling this holds fwd and att
    if (!grow(&sc->mlp, &sc->mlp_n, 2 * TF) || !grow_tile(m))
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for an MLP over %d positions", T);
    float *hg = sc->mlp, *hu = sc->mlp + TF;   // (T, F) each
    mlp(m, layer, x, T, hg, hu, out, NULL);
    return CT_OK;
}

ct_status ct_model_forward(ct_model *m, const int *tokens, int T, ct_kv_cache *kv, ct_hook_cache *hooks,
                           float *logits, int all_logits, ct_err *err) {
    return ct_model_forward_ctl(m, tokens, T, kv, hooks, logits, all_logits, NULL, err);
}

ct_status ct_model_forward_ctl(ct_model *m, const int *tokens, int T, ct_kv_cache *kv_in, ct_hook_cache *hooks,
                               float *logits, int all_logits, const ct_forward_ctl *ctl, ct_err *err) {
    const ct_config *c = &m->cfg;
    int D = c->d_model, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int V = c->vocab_size, L = c->n_layers;
    ct_scratch *sc = &m->scratch;
    if (sc->busy)
        return ct_fail(err, CT_STATUS_BAD_ARG, "forward: this model is inside a pass already (a control may not start "
                       "another pass on the same model)");
    if (T <= 0) return ct_fail(err, CT_STATUS_BAD_ARG, "forward: expected at least one token, got %d", T);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "forward: token %d at position %d is outside the vocabulary 0..%d",
                           tokens[t], t, V - 1);
    const ct_frozen *fz = ctl ? ctl->frozen : NULL;
    if (fz && (kv_in && kv_in->len != 0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "forward: frozen values need a pass from position 0");
    int first = ctl ? ctl->first_layer : 0, last = ctl && ctl->last_layer ? ctl->last_layer : L;
    if (first < 0 || first >= L || (first > 0 && (!ctl->resid || kv_in)))
        return ct_fail(err, CT_STATUS_BAD_ARG, "forward: a pass from layer %d of 0..%d needs the residual stream entering "
                       "it, and no KV cache", first, L - 1);
    if (last <= first || last > L || (last < L && (!ctl->resid_out || kv_in)))
        return ct_fail(err, CT_STATUS_BAD_ARG, "forward: a pass from layer %d to before layer %d of %d needs a residual "
                       "stream to leave and no KV cache", first, last, L);
    if (ct_model_is_split(m) && (first != m->hold_lo || last != m->hold_hi))
        return ct_fail(err, CT_STATUS_BAD_ARG, "forward: this process holds layers %d..%d of %d (a layer-split model); a "
                       "pass over layers %d..%d needs the others (only attribution runs on a layer-split model)",
                       m->hold_lo, m->hold_hi - 1, L, first, last - 1);
    ct_kv_cache local = {0}, *kv = kv_in;
    ct_status rc = CT_OK;
    if (!kv) {
        if ((rc = ct_kv_cache_init(&local, m, T, err))) return rc;
        kv = &local;
    }
    int pos0 = kv->len, S = pos0 + T;
    if (S > kv->max_len) {
        if (kv == &local) ct_kv_cache_free(&local);
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "forward: %d positions exceed the KV cache of %d", S, kv->max_len);
    }
    if (c->learned_pos && S > c->max_seq_len) {
        if (kv == &local) ct_kv_cache_free(&local);
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "forward: %d positions exceed the model's %d learned positions",
                       S, c->max_seq_len);
    }
    // hook tensors for this call
    if (hooks) {
        for (int i = 0; i < hooks->n; i++) {
            ct_tensor_free(hooks->values[i]);
            int64_t shape[4];
            int nd = ct_hook_shape(m, hooks->ids[i], T, shape);
            hooks->values[i] = ct_tensor_new(nd, shape);
            if (!hooks->values[i]) {
                if (kv == &local) ct_kv_cache_free(&local);
                return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for hook tensors");
            }
        }
    }
    size_t TD = (size_t)T * D;
    // buffers from the scratch; on a KV cache, att also fits the one-token steps that follow
    // (S up to kv->max_len), so generation grows nothing after its prompt pass
    fwd_buffers b;
    size_t att_n = (size_t)T * S;
    if (kv_in && (size_t)kv->max_len > att_n) att_n = (size_t)kv->max_len;
    sc->busy = 1;
    if (!grow(&sc->fwd, &sc->fwd_n, fwd_layout(c, T, NULL, &b)) || !grow(&sc->att, &sc->att_n, att_n) ||
        !grow(&sc->pack, &sc->pack_n, (size_t)((kv_in && kv->max_len > S ? kv->max_len : S) + ATT_BLOCK) * hd) ||
        !grow_tile(m)) {
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a forward pass over %d positions", T);
        goto done;
    }
    fwd_layout(c, T, sc->fwd, &b);
    b.att = sc->att;

    if (c->rope != CT_ROPE_NONE) rope_table(m, m->rope_inv_freq, b.cs, b.sn, pos0, T);
    if (c->rope != CT_ROPE_NONE && m->rope_local_inv_freq) rope_table(m, m->rope_local_inv_freq, b.cs_local, b.sn_local, pos0, T);

    // embeddings: x = embed[token] * scale (+ pos_embed); or the residual stream entering the first layer
    if (first > 0) {
        memcpy(b.x, ctl->resid, sizeof(float) * TD);
    } else {
        for (int t = 0; t < T; t++) {
            float *xr = b.x + (size_t)t * D;
            ct_mat_row(&m->embed, tokens[t], xr);
            for (int i = 0; i < D; i++) xr[i] *= c->embed_scale;
        }
        hook_copy(hooks, CT_HOOK_EMBED, -1, b.x, TD);
        if (c->learned_pos) {
            float *ph = hook_slot(hooks, CT_HOOK_POS_EMBED, -1);
            ct_mat_rows(&m->pos_embed, pos0, T, b.xb);   // (T, D); xb is free until the first norm
            for (size_t i = 0; i < TD; i++) b.x[i] += b.xb[i];
            if (ph) memcpy(ph, b.xb, sizeof(float) * TD);
        }
        if (ctl && ctl->edit && (rc = ctl->edit(ctl->ctx, (ct_hook_id){CT_HOOK_EMBED, -1}, b.x, T, err))) goto done;
    }

    for (int l = first; l < last; l++) {
        const ct_layer *w = &m->layers[l];
        float *kc = kv->k + (size_t)l * kv->max_len * kvd, *vc = kv->v + (size_t)l * kv->max_len * kvd;
        hook_copy(hooks, CT_HOOK_RESID_PRE, l, b.x, TD);

        // attention
        norm_rows(c, b.xb, b.x, w->ln1_w, w->ln1_b, b.scale, hook_slot(hooks, CT_HOOK_LN1_NORMALIZED, l), T, D,
                  fz && fz->ln1_scale ? fz->ln1_scale[l] : NULL);
        hook_copy(hooks, CT_HOOK_LN1_SCALE, l, b.scale, (size_t)T);
        hook_copy(hooks, CT_HOOK_ATTN_IN, l, b.xb, TD);
        ct_mat_matmul(b.q, b.xb, &w->wq, w->bq, T, sc->tile, sc->tile_n);
        ct_mat_matmul(kc + (size_t)pos0 * kvd, b.xb, &w->wk, w->bk, T, sc->tile, sc->tile_n);
        ct_mat_matmul(vc + (size_t)pos0 * kvd, b.xb, &w->wv, w->bv, T, sc->tile, sc->tile_n);
        int own_base = w->sliding && m->rope_local_inv_freq;   // the sliding layers' own RoPE base (Gemma-3)
        float *qs = hook_slot(hooks, CT_HOOK_Q_NORM_SCALE, l), *ks = hook_slot(hooks, CT_HOOK_K_NORM_SCALE, l);
        const float *fq = fz && fz->q_norm_scale ? fz->q_norm_scale[l] : NULL;   // (T, H) or NULL
        const float *fk = fz && fz->k_norm_scale ? fz->k_norm_scale[l] : NULL;   // (T, KV) or NULL
        for (int t = 0; t < T; t++) {
            float *kr = kc + (size_t)(pos0 + t) * kvd;
            float *qr = b.q + (size_t)t * qd;
            const float *cs = (own_base ? b.cs_local : b.cs) + (size_t)t * (hd / 2);
            const float *sn = (own_base ? b.sn_local : b.sn) + (size_t)t * (hd / 2);
            for (int h = 0; h < c->n_heads; h++) {
                size_t i = (size_t)t * c->n_heads + h;
                if (c->qk_norm) head_norm(c, qr + h * hd, w->q_norm, fq ? fq + i : NULL, qs ? qs + i : NULL);
                if (c->rope != CT_ROPE_NONE) rope_apply(c, qr + h * hd, cs, sn);
            }
            for (int h = 0; h < c->n_kv_heads; h++) {
                size_t i = (size_t)t * c->n_kv_heads + h;
                if (c->qk_norm) head_norm(c, kr + h * hd, w->k_norm, fk ? fk + i : NULL, ks ? ks + i : NULL);
                if (c->rope != CT_ROPE_NONE) rope_apply(c, kr + h * hd, cs, sn);
            }
        }
        hook_copy(hooks, CT_HOOK_Q, l, b.q, (size_t)T * qd);
        hook_copy(hooks, CT_HOOK_K, l, kc + (size_t)pos0 * kvd, (size_t)T * kvd);
        hook_copy(hooks, CT_HOOK_V, l, vc + (size_t)pos0 * kvd, (size_t)T * kvd);
        attention(m, l, b.q, kc, vc, pos0, T, b.z, b.att, pos0 == 0 ? hook_slot(hooks, CT_HOOK_PATTERN, l) : NULL,
                  fz && fz->pattern ? fz->pattern[l] : NULL, sc->pack);
        if (ctl && ctl->edit && (rc = ctl->edit(ctl->ctx, (ct_hook_id){CT_HOOK_Z, l}, b.z, T, err))) goto done;
        hook_copy(hooks, CT_HOOK_Z, l, b.z, (size_t)T * qd);
        ct_mat_matmul(b.ao, b.z, &w->wo, w->bo, T, sc->tile, sc->tile_n);
        hook_copy(hooks, CT_HOOK_ATTN_RESULT, l, b.ao, TD);
        if (c->post_norms) {
            norm_rows(c, b.ao, b.ao, w->post_attn_w, NULL, b.scale, NULL, T, D,
                      fz && fz->ln1_post_scale ? fz->ln1_post_scale[l] : NULL);
            hook_copy(hooks, CT_HOOK_LN1_POST_SCALE, l, b.scale, (size_t)T);
        }
        hook_copy(hooks, CT_HOOK_ATTN_OUT, l, b.ao, TD);
        for (size_t i = 0; i < TD; i++) b.x[i] += b.ao[i];
        if (ctl && ctl->edit && (rc = ctl->edit(ctl->ctx, (ct_hook_id){CT_HOOK_RESID_MID, l}, b.x, T, err))) goto done;
        hook_copy(hooks, CT_HOOK_RESID_MID, l, b.x, TD);

        // MLP
        float *normalized = hook_slot(hooks, CT_HOOK_LN2_NORMALIZED, l);
        if (!normalized && ctl && ctl->mlp) normalized = b.ao;   // free until the next layer
        norm_rows(c, b.xb, b.x, w->ln2_w, w->ln2_b, b.scale, normalized, T, D, fz && fz->ln2_scale ? fz->ln2_scale[l] : NULL);
        hook_copy(hooks, CT_HOOK_LN2_SCALE, l, b.scale, (size_t)T);
        hook_copy(hooks, CT_HOOK_MLP_IN, l, b.xb, TD);
        if (ctl && ctl->mlp) {   // replaced: the controller writes the MLP's output
            ct_mlp_io io = {b.x, normalized, b.xb, T, D};
            if ((rc = ctl->mlp(ctl->ctx, l, &io, b.mo, err))) goto done;
            if (ctl->mlp_out_raw && ctl->edit &&
                (rc = ctl->edit(ctl->ctx, (ct_hook_id){CT_HOOK_MLP_RAW_OUT, l}, b.mo, T, err))) goto done;
            if (ctl->mlp_out_raw) hook_copy(hooks, CT_HOOK_MLP_RAW_OUT, l, b.mo, TD);
            if (ctl->mlp_out_raw && c->post_norms) {
                norm_rows(c, b.mo, b.mo, w->post_ff_w, NULL, b.scale, NULL, T, D, fz && fz->ln2_post_scale ? fz->ln2_post_scale[l] : NULL);
                hook_copy(hooks, CT_HOOK_LN2_POST_SCALE, l, b.scale, (size_t)T);
            }
        } else {
            mlp(m, l, b.xb, T, b.hg, b.hu, b.mo, hooks);
            if (ctl && ctl->edit && (rc = ctl->edit(ctl->ctx, (ct_hook_id){CT_HOOK_MLP_RAW_OUT, l}, b.mo, T, err))) goto done;
            hook_copy(hooks, CT_HOOK_MLP_RAW_OUT, l, b.mo, TD);
            if (c->post_norms) {
                norm_rows(c, b.mo, b.mo, w->post_ff_w, NULL, b.scale, NULL, T, D, fz && fz->ln2_post_scale ? fz->ln2_post_scale[l] : NULL);
                hook_copy(hooks, CT_HOOK_LN2_POST_SCALE, l, b.scale, (size_t)T);
            }
        }
        if (ctl && ctl->edit && (rc = ctl->edit(ctl->ctx, (ct_hook_id){CT_HOOK_MLP_OUT, l}, b.mo, T, err))) goto done;
        hook_copy(hooks, CT_HOOK_MLP_OUT, l, b.mo, TD);
        for (size_t i = 0; i < TD; i++) b.x[i] += b.mo[i];
        hook_copy(hooks, CT_HOOK_RESID_POST, l, b.x, TD);
    }

    if (last < L) {   // the residual stream leaving the last layer run, for the next rank
        memcpy(ctl->resid_out, b.x, sizeof(float) * TD);
    } else {
        norm_rows(c, b.xb, b.x, m->lnf_w, m->lnf_b, b.scale, hook_slot(hooks, CT_HOOK_LNF_NORMALIZED, -1), T, D,
                  fz ? fz->lnf_scale : NULL);
        hook_copy(hooks, CT_HOOK_LNF_SCALE, -1, b.scale, (size_t)T);
        hook_copy(hooks, CT_HOOK_UNEMBED_PRE, -1, b.xb, TD);
        if (logits) {
            int t0 = all_logits ? 0 : T - 1, n = T - t0;
            ct_mat_matmul(logits, b.xb + (size_t)t0 * D, &m->lm_head, NULL, n, sc->tile, sc->tile_n);
            if (c->final_softcap > 0)
                for (size_t i = 0; i < (size_t)n * V; i++) logits[i] = c->final_softcap * tanhf(logits[i] / c->final_softcap);
        }
    }
    kv->len = S;
    // a hook asked for twice: the pass filled its first slot; the others get a copy
    for (int i = 0; hooks && i < hooks->n; i++)
        for (int j = 0; j < i; j++)
            if (hooks->ids[j].kind == hooks->ids[i].kind && hooks->ids[j].layer == hooks->ids[i].layer) {
                memcpy(ct_tensor_data(hooks->values[i]), ct_tensor_data(hooks->values[j]),
                       sizeof(float) * (size_t)ct_tensor_numel(hooks->values[i]));
                break;
            }
done:
    sc->busy = 0;
    if (kv == &local) ct_kv_cache_free(&local);
    return rc;
}

// ----------------------------------------------------------------------------
// Frozen values

ct_status ct_frozen_capture(ct_frozen_run *f, ct_model *m, const int *tokens, int T, const ct_hook_id *extra,
                            int n_extra, float *logits, int all_logits, const ct_forward_ctl *ctl, ct_err *err) {
    memset(f, 0, sizeof *f);
    int L = m->cfg.n_layers, post = m->cfg.post_norms != 0, qkn = m->cfg.qk_norm != 0;
    int lo = ctl ? ctl->first_layer : 0, hi = ctl && ctl->last_layer ? ctl->last_layer : L;
    if (lo < 0 || hi > L || lo >= hi)
        return ct_fail(err, CT_STATUS_BAD_ARG, "frozen run: layers %d..%d of %d", lo, hi - 1, L);
    // the kinds held per layer, each in its slot of ptrs (7, L): pattern, ln1, ln2, post-attention,
    // post-feedforward, q-norm, k-norm denominators (those the model has)
    static const ct_hook_kind per_layer[7] = {CT_HOOK_PATTERN, CT_HOOK_LN1_SCALE, CT_HOOK_LN2_SCALE, CT_HOOK_LN1_POST_SCALE,
                                              CT_HOOK_LN2_POST_SCALE, CT_HOOK_Q_NORM_SCALE, CT_HOOK_K_NORM_SCALE};
    const int has[7] = {1, 1, 1, post, post, qkn, qkn};
    ct_hook_id *ids = malloc(sizeof *ids * (size_t)(7 * L + 1 + n_extra));
    f->ptrs = calloc((size_t)(7 * L), sizeof *f->ptrs);
    if (!ids || !f->ptrs) {
        free(ids);
        ct_frozen_run_free(f);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    int n = 0;
    for (int k = 0; k < 7; k++)   // the layers the pass runs
        for (int l = lo; l < hi && has[k]; l++) ids[n++] = (ct_hook_id){per_layer[k], l};
    if (hi == L) ids[n++] = (ct_hook_id){CT_HOOK_LNF_SCALE, -1};
    f->n_frozen = n;
    for (int i = 0; i < n_extra; i++) ids[n++] = extra[i];
    ct_status rc = ct_hook_cache_init(&f->hc, ids, n, err);
    free(ids);
    if (!rc) rc = ct_model_forward_ctl(m, tokens, T, NULL, &f->hc, logits, all_logits, ctl, err);
    if (rc) {
        ct_frozen_run_free(f);
        return rc;
    }
    // each kind's values by layer, NULL for the layers the pass did not run
    for (int i = 0, k = 0; k < 7; k++)
        for (int l = lo; l < hi && has[k]; l++) f->ptrs[k * L + l] = ct_tensor_data(f->hc.values[i++]);
    const float *const *p = f->ptrs;
    f->fz = (ct_frozen){p, p + L, post ? p + 3 * L : NULL, p + 2 * L, post ? p + 4 * L : NULL,
                        hi == L ? ct_tensor_data(f->hc.values[f->n_frozen - 1]) : NULL, qkn ? p + 5 * L : NULL,
                        qkn ? p + 6 * L : NULL};
    return CT_OK;
}

const float *ct_frozen_extra(const ct_frozen_run *f, int i) { return ct_tensor_data(f->hc.values[f->n_frozen + i]); }

void ct_frozen_drop_extra(ct_frozen_run *f, int i) {
    ct_tensor_free(f->hc.values[f->n_frozen + i]);
    f->hc.values[f->n_frozen + i] = NULL;
}

void ct_frozen_run_free(ct_frozen_run *f) {
    ct_hook_cache_free(&f->hc);
    free(f->ptrs);
    memset(f, 0, sizeof *f);
}

// ----------------------------------------------------------------------------
// Sampling and generation

// Uniform [0, 1) from the top 24 bits of the next 32.
static float rng_f32(uint64_t *s) { return (float)((uint32_t)(ct_rand_u64(s) >> 32) >> 8) / 16777216.0f; }

typedef struct {
    float p;
    int i;
} prob_index;

static int cmp_prob_desc(const void *a, const void *b) {
    const prob_index *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->i - y->i;
}

// Index of the sampled token from logits (V,) (modified in place); pi (V,) is the top-p sort's
// scratch (NULL with top-p on: greedy on the probabilities, the out-of-memory fallback).
static int sample(float *logits, int V, float temperature, float top_p, uint64_t *rng, prob_index *pi) {
    if (temperature <= 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < V; i++) logits[i] /= temperature;
    ct_softmax(logits, V);
    float r = rng_f32(rng);
    if (top_p <= 0.0f || top_p >= 1.0f) {
        double cdf = 0.0;
        for (int i = 0; i < V; i++) {
            cdf += logits[i];
            if (r < cdf) return i;
        }
        return V - 1;
    }
    // nucleus: smallest set of most probable tokens whose mass exceeds top_p
    if (!pi) return sample(logits, V, 0.0f, 1.0f, rng, NULL);   // greedy on the probabilities
    for (int i = 0; i < V; i++) pi[i] = (prob_index){logits[i], i};
    qsort(pi, (size_t)V, sizeof *pi, cmp_prob_desc);
    double cum = 0.0;
    int last = V - 1;
    for (int i = 0; i < V; i++) {
        cum += pi[i].p;
        if (cum > top_p) {
            last = i;
            break;
        }
    }
    double target = r * cum, cdf = 0.0;
    int chosen = pi[last].i;
    for (int i = 0; i <= last; i++) {
        cdf += pi[i].p;
        if (target < cdf) {
            chosen = pi[i].i;
            break;
        }
    }
    return chosen;
}

// Whether sample() takes the nucleus branch (NaN included, as there).
static int uses_top_p(float temperature, float top_p) {
    return !(temperature <= 0.0f) && !(top_p <= 0.0f || top_p >= 1.0f);
}

int ct_sample(float *logits, int V, float temperature, float top_p, uint64_t *rng) {
    prob_index *pi = uses_top_p(temperature, top_p) ? malloc(sizeof *pi * (size_t)V) : NULL;
    int chosen = sample(logits, V, temperature, top_p, rng, pi);
    free(pi);
    return chosen;
}

// The model's top-p scratch (V,), grown to V pairs; NULL when out of memory.
static prob_index *scratch_probs(ct_model *m) {
    ct_scratch *sc = &m->scratch;
    size_t V = (size_t)m->cfg.vocab_size;
    if (sc->probs_n < V) {
        free(sc->probs);
        sc->probs = malloc(sizeof(prob_index) * V);
        sc->probs_n = sc->probs ? V : 0;
    }
    return sc->probs;
}

ct_status ct_model_generate(ct_model *m, const int *prompt, int n_prompt, const ct_gen_opts *o,
                            int *out, int *n_out, ct_err *err) {
    return ct_model_generate_ctl(m, prompt, n_prompt, o, NULL, NULL, NULL, out, n_out, err);
}

ct_status ct_model_generate_ctl(ct_model *m, const int *prompt, int n_prompt, const ct_gen_opts *o,
                                const ct_forward_ctl *prompt_ctl, const ct_forward_ctl *step_ctl, ct_kv_cache **kv_out,
                                int *out, int *n_out, ct_err *err) {
    *n_out = 0;
    if (n_prompt <= 0) return ct_fail(err, CT_STATUS_BAD_ARG, "generate: expected a non-empty prompt (at least BOS)");
    if (o->max_tokens < 0) return ct_fail(err, CT_STATUS_BAD_ARG, "generate: max_tokens must be >= 0, got %d", o->max_tokens);
    int total = n_prompt + o->max_tokens;
    if (m->cfg.learned_pos && total > m->cfg.max_seq_len) total = m->cfg.max_seq_len;
    if (o->max_tokens == 0) return CT_OK;
    ct_kv_cache kv;
    ct_status rc = ct_kv_cache_init(&kv, m, total, err);
    if (rc) return rc;
    if (kv_out) *kv_out = &kv;   // the controls' context may read the pass position (kv.len)
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    if (!logits) {
        ct_kv_cache_free(&kv);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    uint64_t rng = o->seed ? o->seed : 0x9E3779B97F4A7C15ULL;
    prob_index *pi = uses_top_p(o->temperature, o->top_p) ? scratch_probs(m) : NULL;
    rc = ct_model_forward_ctl(m, prompt, n_prompt, &kv, NULL, logits, 0, prompt_ctl, err);
    while (!rc && *n_out < o->max_tokens) {
        int next = sample(logits, m->cfg.vocab_size, o->temperature, o->top_p, &rng, pi);
        if (o->stop_at_eos && (next == m->cfg.eos_id || next == m->cfg.bos_id)) break;
        out[(*n_out)++] = next;
        if (*n_out == o->max_tokens || kv.len >= total) break;
        rc = ct_model_forward_ctl(m, &next, 1, &kv, NULL, logits, 0, step_ctl, err);
    }
    if (kv_out) *kv_out = NULL;
    free(logits);
    ct_kv_cache_free(&kv);
    return rc;
}
