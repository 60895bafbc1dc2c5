// intervention.c - interventions in the real model (see intervention.h).
#include "intervention.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replacement.h"

enum { IN_RESID_MID, IN_NORMALIZED, IN_MLP_IN };   // as ct_replacement_hooks

void ct_iv_opts_default(ct_iv_opts *o) {
    memset(o, 0, sizeof *o);
    o->freeze_attention = 1;
    o->activations = 1;
}

void ct_sparse_acts_free(ct_sparse_acts *a) {
    free(a->idx);
    free(a->value);
    memset(a, 0, sizeof *a);
}

ct_status ct_iv_check(const ct_model *m, const ct_transcoders *tc, const ct_intervention *iv, int n_iv, int T,
                      ct_err *err) {
    if (n_iv > 0 && !iv) return ct_fail(err, CT_STATUS_BAD_ARG, "interventions: expected %d entries, got none", n_iv);
    for (int i = 0; i < n_iv; i++) {
        const ct_intervention *v = &iv[i];
        if (v->kind != CT_IV_TOKEN && (v->layer < 0 || v->layer >= tc->n_layers))
            return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "intervention %d: layer %d outside 0..%d", i + 1, v->layer,
                           tc->n_layers - 1);
        if (v->kind == CT_IV_FEATURE && (v->feature < 0 || v->feature >= tc->layers[v->layer].d_tc))
            return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "intervention %d: feature %lld outside 0..%d of layer %d", i + 1,
                           (long long)v->feature, tc->layers[v->layer].d_tc - 1, v->layer);
        if (v->pos0 < 0 || v->pos0 >= T || (v->pos1 != -1 && (v->pos1 < v->pos0 || v->pos1 >= T)))
            return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "intervention %d: positions %d..%d outside the prompt's 0..%d", i + 1,
                           v->pos0, v->pos1, T - 1);
        if (!isfinite(v->value))
            return ct_fail(err, CT_STATUS_BAD_ARG, "intervention %d: value %g is not finite", i + 1, (double)v->value);
        if (v->op != CT_IV_SET && v->op != CT_IV_SCALE && v->op != CT_IV_ADD)
            return ct_fail(err, CT_STATUS_BAD_ARG, "intervention %d: unknown operation", i + 1);
    }
    (void)m;
    return CT_OK;
}

typedef struct {
    ct_model *m;
    const ct_transcoders *tc;
    const ct_iv_opts *o;
    const ct_intervention *iv;
    int n_iv;
    int L, D, T_prompt, in_kind, out_raw;
    ct_kv_cache **kv;             // generation: the cache (its length is the pass's first position)
    // the clean run (prompt positions)
    ct_frozen_run clean;
    float *clean_in;              // (L, T, D) transcoder inputs
    float *clean_raw;             // (L, T, D) raw MLP outputs
    float *err_vec;               // (L, T, D) error vectors
    // this pass
    float *pending;               // (L, T, D) deltas waiting for each layer's output hook
    float *pre, *act;             // (T, F_max)
    float *row;                   // (D,)
    ct_sparse_acts *acts;
    int64_t acts_cap;
} iv_ctx;

// The first position of the current pass: 0 for the prompt, the cache's length for generated ones.
static int pass_pos0(const iv_ctx *c) { return c->kv && *c->kv ? (*c->kv)->len : 0; }
// The pass over the prompt, where the clean run's values apply.
static int prompt_pass(const iv_ctx *c) { return pass_pos0(c) == 0; }

static int in_range(const iv_ctx *c, int layer) {
    return !(prompt_pass(c) && c->o->constrained) || (layer >= c->o->first && layer <= c->o->last);
}

// The intervention's positions that fall in this pass (absolute pos0 .. pos0+T-1).
static int covers(const ct_intervention *v, int p) { return p >= v->pos0 && (v->pos1 == -1 || p <= v->pos1); }

static float new_value(const ct_intervention *v, float a) {
    return v->op == CT_IV_SET ? v->value : v->op == CT_IV_SCALE ? v->value * a : a + v->value;
}

static ct_status record_acts(iv_ctx *c, int l, const float *v, int T, int F, ct_err *err) {
    ct_sparse_acts *s = c->acts;
    int pos0 = pass_pos0(c);
    for (int t = 0; t < T; t++) {
        if (pos0 + t == 0) continue;   // position 0 is a constant
        for (int f = 0; f < F; f++) {
            float x = v[(size_t)t * F + f];
            if (x == 0.0f && !c->o->pre_activation) continue;
            if (s->n == c->acts_cap) {
                int64_t cap = c->acts_cap ? 2 * c->acts_cap : 4096;
                int32_t *ni = realloc(s->idx, sizeof(int32_t) * 3 * (size_t)cap);
                if (ni) s->idx = ni;
                float *nv = realloc(s->value, sizeof(float) * (size_t)cap);
                if (nv) s->value = nv;
                if (!ni || !nv) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for activations");
                c->acts_cap = cap;
            }
            int32_t *r = s->idx + 3 * s->n;
            r[0] = l, r[1] = pos0 + t, r[2] = f;
            s->value[s->n++] = x;
        }
    }
    return CT_OK;
}

// out (T, D) = layer l's raw MLP output for the pass, with this layer's intervention deltas queued
// in pending for the output hook.
static ct_status iv_mlp(void *vctx, int l, const ct_mlp_io *io, float *out, ct_err *err) {
    iv_ctx *c = vctx;
    const ct_transcoders *tc = c->tc;
    const ct_tc_layer *tl = &tc->layers[l];
    int T = io->T, D = c->D, F = tl->d_tc, pos0 = pass_pos0(c);
    size_t TD = (size_t)T * D;
    int frozen_mlp = prompt_pass(c) && c->o->constrained && in_range(c, l);
    const float *x = c->in_kind == IN_RESID_MID ? io->resid_mid : c->in_kind == IN_NORMALIZED ? io->normalized : io->mlp_in;
    int has_feature = 0;
    for (int i = 0; i < c->n_iv; i++) has_feature |= c->iv[i].kind == CT_IV_FEATURE && c->iv[i].layer == l;
    ct_status rc = CT_OK;
    // this pass's activations (readout, and the current values free interventions change)
    if (c->o->activations || (has_feature && !frozen_mlp)) {
        if ((rc = ct_tc_encode(tc, l, x, T, c->pre, c->act, err))) return rc;
        if (c->acts && (rc = record_acts(c, l, c->o->pre_activation ? c->pre : c->act, T, F, err))) return rc;
    }
    // feature interventions: constrained layers change clean activations, free ones current ones
    if (has_feature && frozen_mlp &&
        (rc = ct_tc_encode(tc, l, c->clean_in + (size_t)l * c->T_prompt * D, T, NULL, c->act, err)))
        return rc;
    for (int i = 0; i < c->n_iv; i++) {
        const ct_intervention *v = &c->iv[i];
        if (v->kind == CT_IV_TOKEN || v->layer != l) continue;
        for (int t = 0; t < T; t++) {
            if (!covers(v, pos0 + t)) continue;
            if (v->kind == CT_IV_ERROR) {   // the error vector of the clean run, prompt positions only
                if (!prompt_pass(c) || !in_range(c, l)) continue;
                float d = new_value(v, 1.0f) - 1.0f;
                const float *e = c->err_vec + ((size_t)l * T + t) * D;
                float *p = c->pending + ((size_t)l * T + t) * D;
                for (int k = 0; k < D; k++) p[k] += d * e[k];
                continue;
            }
            float a = c->act[(size_t)t * F + v->feature], d = new_value(v, a) - a;
            if (d == 0.0f) continue;
            for (int j = 0; j < tl->n_out; j++) {
                if (!in_range(c, l + j)) continue;
                if ((rc = ct_tc_decoder_row(tc, l, v->feature, j, c->row, err))) return rc;
                float *p = c->pending + ((size_t)(l + j) * T + t) * D;
                for (int k = 0; k < D; k++) p[k] += d * c->row[k];
            }
        }
    }
    if (!frozen_mlp) return ct_model_mlp(c->m, l, io->mlp_in, T, out, err);
    // constrained: the clean output, and the skip connection's response to the changed input
    memcpy(out, c->clean_raw + (size_t)l * TD, sizeof(float) * TD);
    if (tl->W_skip) {
        float *p = c->pending + (size_t)l * TD;
        ct_tc_skip_add(tc, l, x, T, p);
        for (size_t i = 0; i < TD; i++) c->pre[i] = -c->clean_in[(size_t)l * TD + i];   // pre: free scratch here
        ct_tc_skip_add(tc, l, c->pre, T, p);   // skip is linear: skip(x) - skip(x clean)
    }
    return CT_OK;
}

static ct_status iv_edit(void *vctx, ct_hook_id at, float *x, int T, ct_err *err) {
    iv_ctx *c = vctx;
    int D = c->D, pos0 = pass_pos0(c);
    if (at.kind == CT_HOOK_EMBED) {   // token nodes: the embedding as added (x less learned positions)
        const ct_config *cfg = &c->m->cfg;
        for (int t = 0; t < T; t++) {
            float d = 0.0f;
            for (int i = 0; i < c->n_iv; i++)
                if (c->iv[i].kind == CT_IV_TOKEN && covers(&c->iv[i], pos0 + t)) d += new_value(&c->iv[i], 1.0f) - 1.0f;
            if (d == 0.0f) continue;
            float *xr = x + (size_t)t * D;
            const float *pe = cfg->learned_pos ? c->m->pos_embed + (size_t)(pos0 + t) * D : NULL;
            for (int k = 0; k < D; k++) xr[k] += d * (xr[k] - (pe ? pe[k] : 0.0f));
        }
        return CT_OK;
    }
    if (at.kind != (c->out_raw ? CT_HOOK_MLP_RAW_OUT : CT_HOOK_MLP_OUT)) return CT_OK;
    float *p = c->pending + (size_t)at.layer * T * D;
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += p[i];
    memset(p, 0, sizeof(float) * (size_t)T * D);
    (void)err;
    return CT_OK;
}

static void ctx_free(iv_ctx *c) {
    ct_frozen_run_free(&c->clean);
    free(c->clean_in), free(c->clean_raw), free(c->err_vec), free(c->pending), free(c->pre), free(c->act), free(c->row);
}

// Clean run values and pass scratch for a prompt of T positions.
static ct_status ctx_init(iv_ctx *c, ct_model *m, const ct_transcoders *tc, const int *tokens, int T,
                          const ct_intervention *iv, int n_iv, const ct_iv_opts *o, ct_err *err) {
    memset(c, 0, sizeof *c);
    *c = (iv_ctx){.m = m, .tc = tc, .o = o, .iv = iv, .n_iv = n_iv, .L = m->cfg.n_layers, .D = m->cfg.d_model,
                  .T_prompt = T};
    ct_status rc;
    if ((rc = ct_transcoders_check(tc, m, err)) || (rc = ct_replacement_hooks(tc, &c->in_kind, &c->out_raw, err)) ||
        (rc = ct_iv_check(m, tc, iv, n_iv, T, err)))
        return rc;
    if (o->constrained && (o->first < 0 || o->last >= c->L || o->first > o->last))
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "constrained layers %d..%d outside 0..%d", o->first, o->last, c->L - 1);
    int L = c->L, D = c->D, Fmax = 1;
    for (int l = 0; l < L; l++)
        if (tc->layers[l].d_tc > Fmax) Fmax = tc->layers[l].d_tc;
    size_t TD = (size_t)T * D, scratch = (size_t)T * (Fmax > D ? Fmax : D);
    c->pending = calloc((size_t)L * TD + 1, sizeof(float));
    c->pre = malloc(sizeof(float) * scratch);
    c->act = malloc(sizeof(float) * scratch);
    c->row = malloc(sizeof(float) * (size_t)D);
    if (!c->pending || !c->pre || !c->act || !c->row) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    int has_error = 0;
    for (int i = 0; i < n_iv; i++) has_error |= iv[i].kind == CT_IV_ERROR;
    if (!o->freeze_attention && !o->constrained && !has_error) return CT_OK;
    // the clean run: frozen values, transcoder inputs, outputs and raw MLP outputs
    ct_hook_id *ids = malloc(sizeof *ids * (size_t)(3 * L));
    if (!ids) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    rc = CT_OK;
    for (int l = 0; l < L && !rc; l++) {
        char name[128];
        snprintf(name, sizeof name, "blocks.%d.%s", l, tc->input_hook);
        rc = ct_hook_parse(m, name, &ids[3 * l], err);
        snprintf(name, sizeof name, "blocks.%d.%s", l, tc->output_hook);
        if (!rc) rc = ct_hook_parse(m, name, &ids[3 * l + 1], err);
        ids[3 * l + 2] = (ct_hook_id){CT_HOOK_MLP_RAW_OUT, l};
    }
    if (!rc) rc = ct_frozen_capture(&c->clean, m, tokens, T, ids, 3 * L, NULL, err);
    free(ids);
    if (rc) return rc;
    c->clean_in = malloc(sizeof(float) * L * TD);
    c->clean_raw = malloc(sizeof(float) * L * TD);
    c->err_vec = malloc(sizeof(float) * L * TD);
    if (!c->clean_in || !c->clean_raw || !c->err_vec) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int l = 0; l < L; l++) {
        memcpy(c->clean_in + l * TD, ct_frozen_extra(&c->clean, 3 * l), sizeof(float) * TD);
        memcpy(c->clean_raw + l * TD, ct_frozen_extra(&c->clean, 3 * l + 2), sizeof(float) * TD);
    }
    // error vectors: output hook - reconstruction, zero at position 0
    if ((rc = ct_tc_reconstruct(tc, c->clean_in, T, c->err_vec, err))) return rc;
    for (int l = 0; l < L; l++) {
        const float *out = ct_frozen_extra(&c->clean, 3 * l + 1);
        float *e = c->err_vec + l * TD;
        for (size_t i = 0; i < TD; i++) e[i] = i < (size_t)D ? 0.0f : out[i] - e[i];
    }
    return CT_OK;
}

// The frozen values a prompt pass uses: patterns when attention is frozen, every norm denominator
// too when the constrained range covers every layer.
static ct_frozen frozen_of(const iv_ctx *c) {
    ct_frozen f = {0};
    if (c->o->freeze_attention || c->o->constrained) f.pattern = c->clean.fz.pattern;
    if (c->o->constrained && c->o->first == 0 && c->o->last == c->L - 1) {
        f = c->clean.fz;
    }
    return f;
}

ct_status ct_intervene(ct_model *m, const ct_transcoders *tc, const int *tokens, int T, const ct_intervention *iv,
                       int n_iv, const ct_iv_opts *o, float *logits, ct_sparse_acts *acts, ct_err *err) {
    if (T < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "intervene: expected a prompt of at least one token, got %d", T);
    if (m->cfg.max_seq_len > 0 && T > m->cfg.max_seq_len)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "intervene: the prompt has %d tokens; the model's context is %d", T,
                       m->cfg.max_seq_len);
    if (acts) memset(acts, 0, sizeof *acts);
    iv_ctx c;
    ct_status rc = ctx_init(&c, m, tc, tokens, T, iv, n_iv, o, err);
    if (!rc) {
        c.acts = o->activations ? acts : NULL;
        ct_frozen fz = frozen_of(&c);
        ct_forward_ctl ctl = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit,
                              .frozen = fz.pattern ? &fz : NULL, .ctx = &c};
        rc = ct_model_forward_ctl(m, tokens, T, NULL, NULL, logits, 1, &ctl, err);
    }
    ctx_free(&c);
    if (rc && acts) ct_sparse_acts_free(acts);
    return rc;
}

ct_status ct_intervene_generate(ct_model *m, const ct_transcoders *tc, const int *prompt, int n_prompt,
                                const ct_intervention *iv, int n_iv, const ct_iv_opts *o, const ct_gen_opts *g,
                                int *out, int *n_out, ct_err *err) {
    *n_out = 0;
    ct_iv_opts po = *o;
    po.activations = 0;
    iv_ctx c;
    ct_status rc = ctx_init(&c, m, tc, prompt, n_prompt, iv, n_iv, &po, err);
    ct_kv_cache *kv = NULL;
    if (!rc) {
        c.kv = &kv;
        ct_frozen fz = frozen_of(&c);
        ct_forward_ctl first = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit, .frozen = fz.pattern ? &fz : NULL, .ctx = &c};
        ct_forward_ctl step = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit, .ctx = &c};
        rc = ct_model_generate_ctl(m, prompt, n_prompt, g, &first, &step, &kv, out, n_out, err);
    }
    ctx_free(&c);
    return rc;
}
