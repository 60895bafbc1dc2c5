// intervention.c - interventions in the real model (see intervention.h).
#include "trace/intervention.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ct_iv_opts_default(ct_iv_opts *o) {
    memset(o, 0, sizeof *o);
    o->freeze_attention = 1;
    o->activations = 1;
    o->free_attention_layer = -1;
}

ct_status ct_iv_check(const ct_replacement *r, const ct_intervention *iv, int n_iv, int T, ct_err *err) {
    const ct_transcoders *tc = r->tc;
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
    return CT_OK;
}

// One intervention pass (or a generation: the prompt pass, then one pass per token).
typedef struct {
    const ct_replacement *r;
    const ct_clean_run *c;        // the prompt's clean run
    const ct_iv_opts *o;
    const ct_intervention *iv;
    int n_iv;
    ct_kv_cache **kv;             // generation: the cache (its length is the pass's first position)
    ct_sparse_acts *acts;         // this pass's readout (may be NULL)
    int64_t acts_cap;
    // scratch (the replacement model's)
    float *pending;               // (L, T, D) deltas waiting for each layer's output hook
    float *pre, *act;             // (T, max(F_max, D))
    uint8_t *encoded;             // (T,) rows of act holding this pass's activations
    float *row;                   // (D,)
} iv_pass;

// The first position of the current pass: 0 for the prompt, the cache's length for generated ones.
static int pass_pos0(const iv_pass *p) { return p->kv && *p->kv ? (*p->kv)->len : 0; }
// The pass over the prompt, where the clean run's values apply.
static int prompt_pass(const iv_pass *p) { return pass_pos0(p) == 0; }

static int in_range(const iv_pass *p, int layer) {
    return !(prompt_pass(p) && p->o->constrained) || (layer >= p->o->first && layer <= p->o->last);
}

// The intervention's positions that fall in this pass (absolute pos0 .. pos0+T-1).
static int covers(const ct_intervention *v, int pos) { return pos >= v->pos0 && (v->pos1 == -1 || pos <= v->pos1); }

static float new_value(const ct_intervention *v, float a) {
    return v->op == CT_IV_SET ? v->value : v->op == CT_IV_SCALE ? v->value * a : a + v->value;
}

// out (T, D) = layer l's raw MLP output for the pass, with this layer's intervention deltas queued
// in pending for the output hook.
static ct_status iv_mlp(void *vp, int l, const ct_mlp_io *io, float *out, ct_err *err) {
    iv_pass *p = vp;
    const ct_transcoders *tc = p->r->tc;
    const ct_tc_layer *tl = &tc->layers[l];
    const ct_clean_run *c = p->c;
    int T = io->T, D = c->D, F = tl->d_tc, pos0 = pass_pos0(p);
    size_t TD = (size_t)T * D;
    int frozen_mlp = prompt_pass(p) && p->o->constrained && in_range(p, l);
    const float *x = ct_tc_input_of(p->r->input, io);
    int has_feature = 0;
    for (int i = 0; i < p->n_iv; i++) has_feature |= p->iv[i].kind == CT_IV_FEATURE && p->iv[i].layer == l;
    ct_status rc = CT_OK;
    // this pass's activations: every row for a readout; else only the rows free interventions
    // change (their current values)
    memset(p->encoded, 0, (size_t)T);
    if (p->o->activations) {
        if ((rc = ct_tc_encode(tc, l, x, T, p->pre, p->act, err))) return rc;
        if (p->acts && (rc = ct_sparse_acts_append(p->acts, &p->acts_cap, l, pos0, p->r->n_const,
                                                    p->o->pre_activation ? p->pre : p->act, T, F, p->o->pre_activation, err)))
            return rc;
        memset(p->encoded, 1, (size_t)T);
    }
    // feature interventions: constrained layers change clean activations, free ones current ones
    if (has_feature && frozen_mlp && (rc = ct_tc_encode(tc, l, c->in + (size_t)l * TD, T, NULL, p->act, err))) return rc;
    for (int i = 0; i < p->n_iv; i++) {
        const ct_intervention *v = &p->iv[i];
        if (v->kind == CT_IV_TOKEN || v->layer != l) continue;
        for (int t = 0; t < T; t++) {
            if (!covers(v, pos0 + t)) continue;
            if (v->kind == CT_IV_ERROR) {   // the error vector of the clean run, prompt positions only
                if (!prompt_pass(p) || !in_range(p, l)) continue;
                float d = new_value(v, 1.0f) - 1.0f;
                const float *e = c->err + ((size_t)l * T + t) * D;
                float *q = p->pending + ((size_t)l * T + t) * D;
                for (int k = 0; k < D; k++) q[k] += d * e[k];
                continue;
            }
            if (!frozen_mlp && !p->encoded[t]) {
                if ((rc = ct_tc_encode(tc, l, x + (size_t)t * D, 1, NULL, p->act + (size_t)t * F, err))) return rc;
                p->encoded[t] = 1;
            }
            float a = p->act[(size_t)t * F + v->feature], d = new_value(v, a) - a;
            if (d == 0.0f) continue;
            for (int j = 0; j < tl->n_out; j++) {
                if (!in_range(p, l + j)) continue;
                if ((rc = ct_tc_decoder_row(tc, l, v->feature, j, p->row, err))) return rc;
                float *q = p->pending + ((size_t)(l + j) * T + t) * D;
                for (int k = 0; k < D; k++) q[k] += d * p->row[k];
            }
        }
    }
    if (!frozen_mlp) return ct_model_mlp(p->r->m, l, io->mlp_in, T, out, err);
    // constrained: the clean output, and the skip connection's response to the changed input
    memcpy(out, c->raw + (size_t)l * TD, sizeof(float) * TD);
    if (tl->W_skip) {
        float *q = p->pending + (size_t)l * TD;
        ct_tc_skip_add(tc, l, x, T, q);
        for (size_t i = 0; i < TD; i++) p->pre[i] = -c->in[(size_t)l * TD + i];   // pre: free scratch here
        ct_tc_skip_add(tc, l, p->pre, T, q);   // skip is linear: skip(x) - skip(x clean)
    }
    return CT_OK;
}

static ct_status iv_edit(void *vp, ct_hook_id at, float *x, int T, ct_err *err) {
    iv_pass *p = vp;
    const ct_model *m = p->r->m;
    int D = p->c->D, pos0 = pass_pos0(p);
    if (at.kind == CT_HOOK_EMBED) {   // token nodes: the embedding as added (x less learned positions)
        for (int t = 0; t < T; t++) {
            float d = 0.0f;
            for (int i = 0; i < p->n_iv; i++)
                if (p->iv[i].kind == CT_IV_TOKEN && covers(&p->iv[i], pos0 + t)) d += new_value(&p->iv[i], 1.0f) - 1.0f;
            if (d == 0.0f) continue;
            float *xr = x + (size_t)t * D, *pe = NULL;
            if (m->cfg.learned_pos) ct_mat_row(&m->pos_embed, pos0 + t, pe = p->row);   // (D,) the position's row
            for (int k = 0; k < D; k++) xr[k] += d * (xr[k] - (pe ? pe[k] : 0.0f));
        }
        return CT_OK;
    }
    if (at.kind != (p->r->out_raw ? CT_HOOK_MLP_RAW_OUT : CT_HOOK_MLP_OUT)) return CT_OK;
    float *q = p->pending + (size_t)at.layer * T * D;
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += q[i];
    memset(q, 0, sizeof(float) * (size_t)T * D);
    (void)err;
    return CT_OK;
}

// The pass over tokens: their clean run, checks, scratch (r's, reused between passes).
static ct_status pass_open(iv_pass *p, ct_replacement *r, const int *tokens, int T, const ct_intervention *iv, int n_iv,
                           const ct_iv_opts *o, ct_err *err) {
    memset(p, 0, sizeof *p);
    ct_clean_run *c;
    ct_status rc = ct_replacement_clean(r, tokens, T, &c, err);
    if (!rc) rc = ct_iv_check(r, iv, n_iv, T, err);
    if (rc) return rc;
    int L = c->L, D = c->D;
    if (o->constrained && (o->first < 0 || o->last >= L || o->first > o->last))
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "constrained layers %d..%d outside 0..%d", o->first, o->last, L - 1);
    size_t W = (size_t)D;
    for (int l = 0; l < L; l++) W = (size_t)r->tc->layers[l].d_tc > W ? (size_t)r->tc->layers[l].d_tc : W;
    size_t LTD = (size_t)L * T * D, TW = (size_t)T * W;
    float *w = ct_replacement_work(r, LTD + 2 * TW + D + (size_t)T);
    if (!w) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for interventions on a %d-token prompt", T);
    *p = (iv_pass){.r = r, .c = c, .o = o, .iv = iv, .n_iv = n_iv};
    p->pending = w, p->pre = w + LTD, p->act = w + LTD + TW, p->row = w + LTD + 2 * TW;
    p->encoded = (uint8_t *)(w + LTD + 2 * TW + D);   // T floats of room for T bytes
    memset(p->pending, 0, sizeof(float) * LTD);
    return CT_OK;
}

// The frozen values a prompt pass uses: patterns when attention is frozen, every norm denominator
// too when the constrained range covers every layer.
static ct_frozen frozen_of(const iv_pass *p) {
    ct_frozen f = {0};
    const ct_frozen *clean = &p->c->frozen.fz;
    if (p->o->freeze_attention || p->o->constrained) f.pattern = clean->pattern;
    if (p->o->constrained && p->o->first == 0 && p->o->last == p->c->L - 1) f = *clean;
    return f;
}

static int g_skip = 1;   // tests: 0 runs every layer

void ct_iv_skip_clean_layers(int on) { g_skip = on; }

// The first layer the pass runs: the layers below every intervention see only the clean run's
// values, so the pass starts from the clean residual stream entering it, with the same bits as a
// pass through them (their readout is the clean run's: keep_clean_readout).
static int first_changed_layer(const iv_pass *p) {
    if (!g_skip) return 0;
    int first = p->c->L - 1;
    for (int i = 0; i < p->n_iv; i++) {
        int l = p->iv[i].kind == CT_IV_TOKEN ? 0 : p->iv[i].layer;
        if (l < first) first = l;
    }
    return first;
}

// The readout of the layers below `first`, which the pass does not run: the clean run's entries.
static ct_status keep_clean_readout(iv_pass *p, ct_replacement *r, int first, ct_err *err) {
    const ct_sparse_acts *clean = ct_clean_acts(r, r->clean, p->o->pre_activation, err);   // r->clean is p->c
    if (!clean) return err->status;
    int64_t n = 0;
    while (n < clean->n && clean->idx[3 * n] < first) n++;
    ct_sparse_acts *a = p->acts;
    a->idx = malloc(sizeof(int32_t) * 3 * (size_t)(n + 1));
    a->value = malloc(sizeof(float) * (size_t)(n + 1));
    if (!a->idx || !a->value) {
        ct_sparse_acts_free(a);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for activations");
    }
    memcpy(a->idx, clean->idx, sizeof(int32_t) * 3 * (size_t)n);
    memcpy(a->value, clean->value, sizeof(float) * (size_t)n);
    a->n = n;
    p->acts_cap = n + 1;
    return CT_OK;
}

ct_status ct_iv_run(ct_replacement *r, const int *tokens, int T, const ct_intervention *iv, int n_iv, const ct_iv_opts *o,
                    float *logits, ct_sparse_acts *acts, ct_err *err) {
    if (acts) memset(acts, 0, sizeof *acts);
    iv_pass p;
    ct_status rc = pass_open(&p, r, tokens, T, iv, n_iv, o, err);
    if (rc) return rc;
    p.acts = o->activations ? acts : NULL;
    ct_frozen fz = frozen_of(&p);
    int L = p.c->L, free_l = o->free_attention_layer;
    const float **pat = NULL;   // (L) the frozen patterns but the free layer's
    if (free_l != -1 && (free_l < 0 || free_l >= L))
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "free_attention_layer %d outside 0..%d", free_l, L - 1);
    if (free_l >= 0 && !fz.pattern)
        return ct_fail(err, CT_STATUS_BAD_ARG, "free_attention_layer %d: every pattern is free already (freeze_attention "
                       "off, no constrained layers)", free_l);
    if (free_l >= 0) {
        if (!(pat = malloc(sizeof *pat * (size_t)L))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        for (int l = 0; l < L; l++) pat[l] = l == free_l ? NULL : fz.pattern[l];
        fz.pattern = pat;
    }
    int first = o->hooks ? 0 : first_changed_layer(&p);
    if (first > 0 && p.acts && (rc = keep_clean_readout(&p, r, first, err))) {
        free(pat);
        return rc;
    }
    ct_forward_ctl ctl = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit, .frozen = fz.pattern ? &fz : NULL, .ctx = &p,
                          .first_layer = first, .resid = p.c->resid + (size_t)first * T * p.c->D};
    rc = ct_model_forward_ctl(r->m, tokens, T, NULL, o->hooks, logits, 1, &ctl, err);
    free(pat);
    if (rc && acts) ct_sparse_acts_free(acts);
    return rc;
}

const ct_sparse_acts *ct_iv_clean_acts(ct_replacement *r, const int *tokens, int T, int pre_activation, ct_err *err) {
    ct_clean_run *c;
    return ct_replacement_clean(r, tokens, T, &c, err) ? NULL : ct_clean_acts(r, c, pre_activation, err);
}

ct_status ct_iv_generate(ct_replacement *r, const int *tokens, int T, const ct_intervention *iv, int n_iv,
                         const ct_iv_opts *o, const ct_gen_opts *g, int *out, int *n_out, ct_err *err) {
    *n_out = 0;
    if (o->free_attention_layer != -1 || o->hooks)
        return ct_fail(err, CT_STATUS_BAD_ARG, "generate: free_attention_layer and hooks are for one pass over a prompt "
                       "(intervene)");
    ct_iv_opts po = *o;
    po.activations = 0, po.hooks = NULL;
    iv_pass p;
    ct_status rc = pass_open(&p, r, tokens, T, iv, n_iv, &po, err);
    if (rc) return rc;
    ct_kv_cache *kv = NULL;
    p.kv = &kv;
    ct_frozen fz = frozen_of(&p);
    ct_forward_ctl first = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit, .frozen = fz.pattern ? &fz : NULL, .ctx = &p};
    ct_forward_ctl step = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit, .ctx = &p};
    return ct_model_generate_ctl(r->m, tokens, T, g, &first, &step, &kv, out, n_out, err);
}

ct_status ct_iv_donor_values(const ct_replacement *r, const int *tokens, int T, const int32_t *feat, int n,
                             float *values, ct_err *err) {
    for (int i = 0; i < n; i++)
        if (feat[3 * i + 1] < 0 || feat[3 * i + 1] >= T)
            return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "position %d (member %d) is not in the second prompt (%d tokens)",
                           feat[3 * i + 1], i + 1, T);
    ct_clean_run *c;
    ct_status rc = ct_replacement_check_prompt(r, tokens, T, err);
    if (!rc) rc = ct_clean_run_open(&c, r, tokens, T, 0, err);
    if (rc) return rc;
    const ct_sparse_acts *a = ct_clean_acts(r, c, 0, err);
    for (int i = 0; a && i < n; i++) {
        int64_t k = ct_sparse_acts_find(a, feat[3 * i], feat[3 * i + 1], feat[3 * i + 2]);
        values[i] = k >= 0 ? a->value[k] : 0.0f;
    }
    rc = a ? CT_OK : err->status;
    ct_clean_run_free(c);
    return rc;
}
