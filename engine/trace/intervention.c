// intervention.c - interventions in the real model (see intervention.h).
#include "trace/intervention.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace/replacement.h"

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

struct ct_iv_session {
    ct_model *m;
    const ct_transcoders *tc;
    int L, D, T_prompt, in_kind, out_raw;
    int *tokens;                  // (T,) the prompt
    // the clean run (prompt positions)
    ct_frozen_run clean;
    float *clean_in;              // (L, T, D) transcoder inputs
    float *clean_raw;             // (L, T, D) raw MLP outputs
    float *err_vec;               // (L, T, D) error vectors
    ct_sparse_acts clean_acts[2]; // post- and pre-activation readouts, computed on first use
    int have_clean_acts[2];
    // one pass
    const ct_iv_opts *o;
    const ct_intervention *iv;
    int n_iv;
    ct_kv_cache **kv;             // generation: the cache (its length is the pass's first position)
    float *pending;               // (L, T, D) deltas waiting for each layer's output hook
    float *pre, *act;             // (T, F_max)
    uint8_t *encoded;             // (T,) rows of act holding this pass's activations
    float *row;                   // (D,)
    ct_sparse_acts *acts;
    int64_t acts_cap;
};
typedef struct ct_iv_session iv_ctx;

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
    // this pass's activations: every row for a readout; else only the rows free interventions
    // change (their current values)
    memset(c->encoded, 0, (size_t)T);
    if (c->o->activations) {
        if ((rc = ct_tc_encode(tc, l, x, T, c->pre, c->act, err))) return rc;
        if (c->acts && (rc = record_acts(c, l, c->o->pre_activation ? c->pre : c->act, T, F, err))) return rc;
        memset(c->encoded, 1, (size_t)T);
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
            if (!frozen_mlp && !c->encoded[t]) {
                if ((rc = ct_tc_encode(tc, l, x + (size_t)t * D, 1, NULL, c->act + (size_t)t * F, err))) return rc;
                c->encoded[t] = 1;
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

void ct_iv_session_free(ct_iv_session *c) {
    if (!c) return;
    ct_frozen_run_free(&c->clean);
    for (int k = 0; k < 2; k++) ct_sparse_acts_free(&c->clean_acts[k]);
    free(c->tokens), free(c->clean_in), free(c->clean_raw), free(c->err_vec), free(c->pending), free(c->pre);
    free(c->act), free(c->encoded), free(c->row);
    free(c);
}

ct_status ct_iv_session_open(ct_iv_session **out, ct_model *m, const ct_transcoders *tc, const int *tokens, int T,
                             ct_err *err) {
    *out = NULL;
    if (T < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "intervene: expected a prompt of at least one token, got %d", T);
    if (m->cfg.max_seq_len > 0 && T > m->cfg.max_seq_len)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "intervene: the prompt has %d tokens; the model's context is %d", T,
                       m->cfg.max_seq_len);
    ct_status rc = ct_transcoders_check(tc, m, err);
    if (rc) return rc;
    iv_ctx *c = calloc(1, sizeof *c);
    if (!c) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    *c = (iv_ctx){.m = m, .tc = tc, .L = m->cfg.n_layers, .D = m->cfg.d_model, .T_prompt = T};
    if ((rc = ct_replacement_hooks(tc, &c->in_kind, &c->out_raw, err))) {
        ct_iv_session_free(c);
        return rc;
    }
    int L = c->L, D = c->D, Fmax = 1;
    for (int l = 0; l < L; l++)
        if (tc->layers[l].d_tc > Fmax) Fmax = tc->layers[l].d_tc;
    size_t TD = (size_t)T * D, scratch = (size_t)T * (Fmax > D ? Fmax : D);
    c->tokens = malloc(sizeof(int) * (size_t)T);
    c->pending = calloc((size_t)L * TD + 1, sizeof(float));
    c->pre = malloc(sizeof(float) * scratch);
    c->act = malloc(sizeof(float) * scratch);
    c->encoded = malloc((size_t)T);
    c->row = malloc(sizeof(float) * (size_t)D);
    c->clean_in = malloc(sizeof(float) * L * TD);
    c->clean_raw = malloc(sizeof(float) * L * TD);
    c->err_vec = malloc(sizeof(float) * L * TD);
    ct_hook_id *ids = malloc(sizeof *ids * (size_t)(3 * L));
    if (!c->tokens || !c->pending || !c->pre || !c->act || !c->encoded || !c->row || !c->clean_in || !c->clean_raw ||
        !c->err_vec || !ids) {
        free(ids);
        ct_iv_session_free(c);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for interventions on a %d-token prompt", T);
    }
    memcpy(c->tokens, tokens, sizeof(int) * (size_t)T);
    // the clean run: frozen values, transcoder inputs, outputs and raw MLP outputs
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
    for (int l = 0; l < L && !rc; l++) {
        memcpy(c->clean_in + l * TD, ct_frozen_extra(&c->clean, 3 * l), sizeof(float) * TD);
        memcpy(c->clean_raw + l * TD, ct_frozen_extra(&c->clean, 3 * l + 2), sizeof(float) * TD);
    }
    // error vectors: output hook - reconstruction, zero at position 0
    if (!rc) rc = ct_tc_reconstruct(tc, c->clean_in, T, c->err_vec, err);
    for (int l = 0; l < L && !rc; l++) {
        const float *o = ct_frozen_extra(&c->clean, 3 * l + 1);
        float *e = c->err_vec + l * TD;
        for (size_t i = 0; i < TD; i++) e[i] = i < (size_t)D ? 0.0f : o[i] - e[i];
    }
    if (rc) {
        ct_iv_session_free(c);
        return rc;
    }
    *out = c;
    return CT_OK;
}

int ct_iv_session_matches(const ct_iv_session *c, const ct_model *m, const ct_transcoders *tc, const int *tokens, int T) {
    return c && c->m == m && c->tc == tc && c->T_prompt == T && memcmp(c->tokens, tokens, sizeof(int) * (size_t)T) == 0;
}

// The frozen values a prompt pass uses: patterns when attention is frozen, every norm denominator
// too when the constrained range covers every layer.
static ct_frozen frozen_of(const iv_ctx *c) {
    ct_frozen f = {0};
    if (c->o->freeze_attention || c->o->constrained) f.pattern = c->clean.fz.pattern;
    if (c->o->constrained && c->o->first == 0 && c->o->last == c->L - 1) f = c->clean.fz;
    return f;
}

static ct_status run_checks(iv_ctx *c, const ct_intervention *iv, int n_iv, const ct_iv_opts *o, ct_err *err) {
    ct_status rc = ct_iv_check(c->m, c->tc, iv, n_iv, c->T_prompt, err);
    if (rc) return rc;
    if (o->constrained && (o->first < 0 || o->last >= c->L || o->first > o->last))
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "constrained layers %d..%d outside 0..%d", o->first, o->last, c->L - 1);
    c->o = o, c->iv = iv, c->n_iv = n_iv, c->kv = NULL, c->acts = NULL, c->acts_cap = 0;
    memset(c->pending, 0, sizeof(float) * (size_t)c->L * c->T_prompt * c->D);
    return CT_OK;
}

ct_status ct_iv_run(ct_iv_session *c, const ct_intervention *iv, int n_iv, const ct_iv_opts *o, float *logits,
                    ct_sparse_acts *acts, ct_err *err) {
    if (acts) memset(acts, 0, sizeof *acts);
    ct_status rc = run_checks(c, iv, n_iv, o, err);
    if (rc) return rc;
    c->acts = o->activations ? acts : NULL;
    ct_frozen fz = frozen_of(c);
    ct_forward_ctl ctl = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit, .frozen = fz.pattern ? &fz : NULL, .ctx = c};
    rc = ct_model_forward_ctl(c->m, c->tokens, c->T_prompt, NULL, NULL, logits, 1, &ctl, err);
    c->acts = NULL;
    if (rc && acts) ct_sparse_acts_free(acts);
    return rc;
}

const ct_sparse_acts *ct_iv_clean_acts(ct_iv_session *c, int pre_activation, ct_err *err) {
    int k = pre_activation != 0;
    if (!c->have_clean_acts[k]) {
        ct_iv_opts o;
        ct_iv_opts_default(&o);
        o.freeze_attention = 0;
        o.pre_activation = k;
        if (ct_iv_run(c, NULL, 0, &o, NULL, &c->clean_acts[k], err)) return NULL;
        c->have_clean_acts[k] = 1;
    }
    return &c->clean_acts[k];
}

ct_status ct_iv_generate(ct_iv_session *c, const ct_intervention *iv, int n_iv, const ct_iv_opts *o, const ct_gen_opts *g,
                         int *out, int *n_out, ct_err *err) {
    *n_out = 0;
    ct_iv_opts po = *o;
    po.activations = 0;
    ct_status rc = run_checks(c, iv, n_iv, &po, err);
    if (rc) return rc;
    ct_kv_cache *kv = NULL;
    c->kv = &kv;
    ct_frozen fz = frozen_of(c);
    ct_forward_ctl first = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit, .frozen = fz.pattern ? &fz : NULL, .ctx = c};
    ct_forward_ctl step = {.mlp = iv_mlp, .mlp_out_raw = 1, .edit = iv_edit, .ctx = c};
    rc = ct_model_generate_ctl(c->m, c->tokens, c->T_prompt, g, &first, &step, &kv, out, n_out, err);
    c->kv = NULL;
    return rc;
}

ct_status ct_intervene(ct_model *m, const ct_transcoders *tc, const int *tokens, int T, const ct_intervention *iv,
                       int n_iv, const ct_iv_opts *o, float *logits, ct_sparse_acts *acts, ct_err *err) {
    ct_iv_session *s;
    ct_status rc = ct_iv_session_open(&s, m, tc, tokens, T, err);
    if (!rc) rc = ct_iv_run(s, iv, n_iv, o, logits, acts, err);
    ct_iv_session_free(s);
    return rc;
}
