// replacement.c - the replacement model, the clean run, transcoder evaluation (see replacement.h).
#include "trace/replacement.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crc32.h"
#include "core/dist.h"

const float *ct_tc_input_of(ct_tc_input in, const ct_mlp_io *io) {
    return in == CT_TC_IN_RESID_MID ? io->resid_mid : in == CT_TC_IN_NORMALIZED ? io->normalized : io->mlp_in;
}

void ct_sparse_acts_free(ct_sparse_acts *a) {
    free(a->idx);
    free(a->value);
    free(a->clean);
    memset(a, 0, sizeof *a);
}

// -1, 0, 1 as entry i of a sorts before, with, after entry j of b
static int cmp_entry(const ct_sparse_acts *a, int64_t i, const ct_sparse_acts *b, int64_t j) {
    for (int k = 0; k < 3; k++)
        if (a->idx[3 * i + k] != b->idx[3 * j + k]) return a->idx[3 * i + k] < b->idx[3 * j + k] ? -1 : 1;
    return 0;
}

ct_status ct_sparse_acts_union(ct_sparse_acts *out, const ct_sparse_acts *a, const ct_sparse_acts *c, ct_err *err) {
    memset(out, 0, sizeof *out);
    int64_t cap = a->n + c->n + 1;
    out->idx = malloc(sizeof(int32_t) * 3 * (size_t)cap);
    out->value = malloc(sizeof(float) * (size_t)cap);
    out->clean = malloc(sizeof(float) * (size_t)cap);
    if (!out->idx || !out->value || !out->clean) {
        ct_sparse_acts_free(out);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for activations");
    }
    int64_t i = 0, j = 0, n = 0;
    while (i < a->n || j < c->n) {
        int d = i >= a->n ? 1 : j >= c->n ? -1 : cmp_entry(a, i, c, j);   // <0: a only, >0: c only
        memcpy(out->idx + 3 * n, d <= 0 ? a->idx + 3 * i : c->idx + 3 * j, sizeof(int32_t) * 3);
        out->value[n] = d <= 0 ? a->value[i++] : 0.0f;
        out->clean[n] = d >= 0 ? c->value[j++] : 0.0f;
        n++;
    }
    out->n = n;
    return CT_OK;
}

int64_t ct_sparse_acts_find(const ct_sparse_acts *a, int layer, int pos, int64_t feature) {
    int64_t lo = 0, hi = a->n, key[3] = {layer, pos, feature};
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = 0;
        for (int k = 0; k < 3 && !c; k++) c = a->idx[3 * mid + k] < key[k] ? -1 : a->idx[3 * mid + k] > key[k];
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

// circuit-tracer's rule for Gemma-3 instruction-tuned models: "gemma-3" in the model's name and
// the name ending in "-it"
static int gemma3_it(const ct_model *m) {
    char name[512];
    ct_model_name(m, name, sizeof name);
    size_t n = strlen(name);
    return strncmp(m->cfg.architecture, "Gemma3For", 9) == 0 && strstr(name, "gemma-3") && n >= 3 &&
           strcmp(name + n - 3, "-it") == 0;
}

ct_status ct_replacement_init(ct_replacement *r, ct_model *m, const ct_transcoders *tc, ct_err *err) {
    memset(r, 0, sizeof *r);
    r->n_const = 1;
    if (gemma3_it(m)) {   // <bos><start_of_turn>user\n
        static const int prefix[4] = {2, 105, 2364, 107};
        memcpy(r->prefix, prefix, sizeof prefix);
        r->n_prefix = r->n_const = 4;
    }
    ct_status rc = ct_transcoders_check(tc, m, err);
    if (rc) return rc;
    if (ct_model_is_split(m)) {   // the ranks' shares must tile the layers, in rank order
        int lo, hi, L = m->cfg.n_layers;
        ct_layer_share(L, ct_dist_rank(), ct_dist_size(), &lo, &hi);
        if (lo != m->hold_lo || hi != m->hold_hi)
            return ct_fail(err, CT_STATUS_BAD_ARG, "rank %d of %d holds layers %d..%d of %d; its share of the layer split "
                           "is %d..%d (load the model and transcoders with the layer split on every rank)", ct_dist_rank(),
                           ct_dist_size(), m->hold_lo, m->hold_hi - 1, L, lo, hi - 1);
    }
    const char *in = tc->input_hook, *out = tc->output_hook;
    if (strcmp(in, "hook_resid_mid") == 0) r->input = CT_TC_IN_RESID_MID;
    else if (strcmp(in, "ln2.hook_normalized") == 0) r->input = CT_TC_IN_NORMALIZED;
    else if (strcmp(in, "mlp.hook_in") == 0 || strcmp(in, "hook_mlp_in") == 0) r->input = CT_TC_IN_MLP_IN;
    else return ct_fail(err, CT_STATUS_UNSUPPORTED, "transcoder input hook '%s': expected hook_resid_mid, "
                        "ln2.hook_normalized or mlp.hook_in", in);
    if (strcmp(out, "mlp.hook_out") == 0) r->out_raw = 1;
    else if (strcmp(out, "hook_mlp_out") == 0) r->out_raw = 0;
    else return ct_fail(err, CT_STATUS_UNSUPPORTED, "transcoder output hook '%s': expected mlp.hook_out or hook_mlp_out", out);
    r->m = m;
    r->tc = tc;
    return CT_OK;
}

ct_status ct_replacement_set_constant(ct_replacement *r, int n, ct_err *err) {
    if (n < 1 || n > (1 << 20))
        return ct_fail(err, CT_STATUS_BAD_ARG, "constant_positions must be in 1..%d, got %d", 1 << 20, n);
    ct_replacement_release(r);
    r->n_const = n;
    r->n_prefix = 0;
    return CT_OK;
}

ct_status ct_replacement_check_prompt(const ct_replacement *r, const int *tokens, int T, ct_err *err) {
    int good = T >= r->n_prefix;
    for (int i = 0; good && i < r->n_prefix; i++) good = tokens[i] == r->prefix[i];
    if (good) return CT_OK;
    char got[96] = "";
    size_t k = 0;
    for (int i = 0; i < T && i < 6 && k < sizeof got - 16; i++) k += (size_t)snprintf(got + k, sizeof got - k, " %d", tokens[i]);
    return ct_fail(err, CT_STATUS_BAD_ARG, "this instruction-tuned Gemma-3 model's prompts start <bos><start_of_turn>user\\n "
                   "(ids 2 105 2364 107; its first %d positions are held constant), got ids%s%s; give the prompt as "
                   "a chat ({chat = {{role = \"user\", content = ...}}})", r->n_const, got, T > 6 ? " ..." : "");
}

void ct_replacement_release(ct_replacement *r) {
    ct_clean_run_free(r->clean);
    r->clean = NULL;
}

void ct_replacement_free(ct_replacement *r) {
    ct_replacement_release(r);
    free(r->work);
    memset(r, 0, sizeof *r);
}

float *ct_replacement_work(ct_replacement *r, size_t n) {
    if (n > r->work_n) {
        float *w = realloc(r->work, sizeof(float) * n);
        if (!w) return NULL;
        r->work = w;
        r->work_n = n;
    }
    return r->work;
}

// ---------------------------------------------------------------------------------------------
// The clean run

void ct_clean_run_free(ct_clean_run *c) {
    if (!c) return;
    ct_frozen_run_free(&c->frozen);
    for (int k = 0; k < 2; k++) ct_sparse_acts_free(&c->acts[k]);
    if (c->raw != c->out) free((float *)c->raw);
    free(c->tokens), free(c->in), free(c->out), free(c->err), free(c->resid), free(c->logits);
    free(c);
}

size_t ct_clean_run_bytes(const ct_clean_run *c) {
    if (!c) return 0;
    size_t LTD = (size_t)c->L * c->T * c->D, n = (c->raw != c->out ? 5 : 4) * LTD;
    for (int i = 0; i < c->frozen.hc.n; i++) n += c->frozen.hc.values[i] ? (size_t)ct_tensor_numel(c->frozen.hc.values[i]) : 0;
    return n * sizeof(float);
}

// Keeps the activations of one layer of the reconstruction as ct_clean_acts lists them.
typedef struct {
    ct_clean_run *c;
    int64_t cap;
    int n_const;
} keep_acts;

static ct_status keep_layer_acts(void *arg, int layer, const float *act, int F, ct_err *err) {
    keep_acts *k = arg;
    return ct_sparse_acts_append(&k->c->acts[0], &k->cap, layer, 0, k->n_const, act, k->c->T, F, 0, err);
}

// bcast of n bytes at *p from rank root, *p malloc'ed on the other ranks (n + 1 bytes)
static ct_status bcast_new(void **p, size_t n, int root, ct_err *err) {
    if (ct_dist_rank() != root) {
        free(*p);
        if (!(*p = malloc(n + 1))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory receiving %zu bytes", n);
    }
    return ct_dist_bcast(*p, n, root, err);
}

// A layer-split rank's reconstruction (see clean_run): it encodes its layers [lo, hi) into the
// clean run's activations; every rank's are shared in rank order (so every rank lists all, in
// layer order, as one process does); then it reconstructs its layers' output hooks into c->err,
// adding each decoder's part in the order one process adds it (layer after layer, from 0), a
// cross-layer set's lower layers from their shared activations.
static ct_status split_reconstruct(ct_clean_run *c, const ct_transcoders *tc, int lo, int hi, keep_acts *k, ct_err *err) {
    int T = c->T, D = c->D, F = 1;
    size_t TD = (size_t)T * D;
    for (int l = 0; l < hi; l++) F = tc->layers[l].d_tc > F ? tc->layers[l].d_tc : F;
    float *act = malloc(sizeof(float) * (size_t)T * F);   // (T, F)
    ct_status rc = act ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int l = lo; l < hi && !rc; l++) {
        rc = ct_tc_encode(tc, l, c->in + l * TD, T, NULL, act, err);
        if (!rc) rc = keep_layer_acts(k, l, act, tc->layers[l].d_tc, err);
    }
    // every rank's activations, in rank order: counts, then entries
    ct_sparse_acts *a = &c->acts[0], all = {0};
    for (int r = 0; r < ct_dist_size() && !rc; r++) {
        int64_t n = a->n;
        void *idx = r == ct_dist_rank() ? a->idx : NULL, *val = r == ct_dist_rank() ? a->value : NULL;
        rc = ct_dist_bcast(&n, sizeof n, r, err);
        if (!rc) rc = bcast_new(&idx, sizeof(int32_t) * 3 * (size_t)n, r, err);
        if (!rc) rc = bcast_new(&val, sizeof(float) * (size_t)n, r, err);
        int32_t *ni = rc ? NULL : realloc(all.idx, sizeof(int32_t) * 3 * (size_t)(all.n + n + 1));
        float *nv = rc || !ni ? NULL : realloc(all.value, sizeof(float) * (size_t)(all.n + n + 1));
        if (ni) all.idx = ni;
        if (nv) all.value = nv;
        if (!rc && (!ni || !nv)) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for activations");
        if (!rc) {
            memcpy(all.idx + 3 * all.n, idx, sizeof(int32_t) * 3 * (size_t)n);
            memcpy(all.value + all.n, val, sizeof(float) * (size_t)n);
            all.n += n;
        }
        if (r != ct_dist_rank()) free(idx), free(val);
    }
    ct_sparse_acts_free(a);
    *a = all;
    // the reconstruction of the held layers, decoder after decoder as ct_tc_reconstruct adds them
    for (int l = lo; l < hi && !rc; l++) {
        float *y = c->err + l * TD;
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * D, tc->layers[l].b_dec, sizeof(float) * (size_t)D);
        ct_tc_skip_add(tc, l, c->in + l * TD, T, y);
    }
    for (int lf = tc->kind == CT_TC_CLT ? 0 : lo; lf < hi && !rc; lf++) {
        int Ff = tc->layers[lf].d_tc;
        if (lf >= lo) {   // its own activations, every position's (the constant ones too, as one process)
            rc = ct_tc_encode(tc, lf, c->in + lf * TD, T, NULL, act, err);
        } else {   // a lower rank's, from the shared list (positions from n_const on: the others' errors are zero)
            memset(act, 0, sizeof(float) * (size_t)T * Ff);
            for (int64_t i = 0; i < a->n; i++)
                if (a->idx[3 * i] == lf) act[(size_t)a->idx[3 * i + 1] * Ff + a->idx[3 * i + 2]] = a->value[i];
        }
        for (int l = lf > lo ? lf : lo; l < hi && l - lf < tc->layers[lf].n_out && !rc; l++)
            rc = ct_tc_decode_add(tc, lf, l - lf, act, T, c->err + l * TD, err);
    }
    free(act);
    return rc;
}

// The clean run of tokens for a set reading tc->input_hook and writing tc->output_hook; own_raw:
// keep the raw MLP outputs apart (they differ from the output hook). Error vectors are zero at the
// first n_const positions.
static ct_status clean_run(ct_clean_run **out, ct_model *m, const ct_transcoders *tc, int own_raw, int n_const,
                           const int *tokens, int T, int all_logits, ct_err *err) {
    *out = NULL;
    if (T < 1) return ct_fail(err, CT_STATUS_BAD_ARG, "expected a prompt of at least one token, got %d", T);
    if (m->cfg.max_seq_len > 0 && T > m->cfg.max_seq_len)
        return ct_fail(err, CT_STATUS_OUT_OF_RANGE, "the prompt has %d tokens; the model's context is %d", T,
                       m->cfg.max_seq_len);
    int L = m->cfg.n_layers, D = m->cfg.d_model, V = m->cfg.vocab_size;
    size_t TD = (size_t)T * D, LTD = (size_t)L * TD;
    ct_clean_run *c = calloc(1, sizeof *c);
    ct_hook_id *ids = malloc(sizeof *ids * (size_t)(4 * L + 1));
    if (!c || !ids) {
        free(c), free(ids);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    c->T = T, c->L = L, c->D = D;
    c->tokens = malloc(sizeof(int) * (size_t)T);
    // (L, T, D) each; a layer-split model fills its own layers' (the others stay zero pages)
    c->in = calloc(LTD, sizeof(float));
    c->out = calloc(LTD, sizeof(float));
    c->raw = own_raw ? calloc(LTD, sizeof(float)) : c->out;
    c->err = calloc(LTD, sizeof(float));
    c->resid = calloc(LTD, sizeof(float));
    c->logits = malloc(sizeof(float) * (size_t)V * (all_logits ? (size_t)T : 1));
    ct_status rc = c->tokens && c->in && c->out && c->raw && c->err && c->resid && c->logits
                       ? CT_OK
                       : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for the clean run of a %d-token prompt", T);
    // the pass: frozen values, then per layer the input and output hooks (and the raw output)
    // and the residual stream entering it, then the embeddings. A layer-split model runs its layers
    // on the residual stream the rank below sends, and sends its own to the rank above.
    int split = ct_model_is_split(m), lo = split ? m->hold_lo : 0, hi = split ? m->hold_hi : L, me = ct_dist_rank();
    float *resid_in = NULL, *resid_out = NULL;
    ct_forward_ctl ctl = {.first_layer = lo, .last_layer = hi};
    if (split && !rc) {   // every rank must run the same prompt (checked before anything is sent)
        rc = ct_dist_same(ct_fnv1a(CT_FNV1A_START, tokens, sizeof(int) * (size_t)T) ^ (uint64_t)T, "prompts", err);
    }
    if (split && !rc) {
        ctl.resid = resid_in = lo > 0 ? malloc(sizeof(float) * TD) : NULL;
        ctl.resid_out = resid_out = hi < L ? malloc(sizeof(float) * TD) : NULL;
        if ((lo > 0 && !resid_in) || (hi < L && !resid_out)) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        if (!rc && lo > 0) rc = ct_dist_recv(resid_in, sizeof(float) * TD, me - 1, err);
    }
    int n = 0;
    for (int l = lo; l < hi && !rc; l++) {
        rc = ct_hook_at(m, l, tc->input_hook, &ids[n++], err);
        if (!rc) rc = ct_hook_at(m, l, tc->output_hook, &ids[n++], err);
        if (own_raw) ids[n++] = (ct_hook_id){CT_HOOK_MLP_RAW_OUT, l};
        ids[n++] = (ct_hook_id){CT_HOOK_RESID_PRE, l};
    }
    if (lo == 0) ids[n++] = (ct_hook_id){CT_HOOK_EMBED, -1};
    if (!rc) rc = ct_frozen_capture(&c->frozen, m, tokens, T, ids, n, c->logits, all_logits, split ? &ctl : NULL, err);
    free(ids);
    if (split && !rc && hi < L) rc = ct_dist_send(resid_out, sizeof(float) * TD, me + 1, err);
    if (split && !rc)   // the last rank's logits
        rc = ct_dist_bcast(c->logits, sizeof(float) * (size_t)V * (all_logits ? (size_t)T : 1), ct_dist_size() - 1, err);
    free(resid_in), free(resid_out);
    if (!rc) {
        int per = own_raw ? 4 : 3;
        memcpy(c->tokens, tokens, sizeof(int) * (size_t)T);
        for (int l = lo; l < hi; l++) {
            int e = per * (l - lo);
            memcpy(c->in + l * TD, ct_frozen_extra(&c->frozen, e), sizeof(float) * TD);
            memcpy(c->out + l * TD, ct_frozen_extra(&c->frozen, e + 1), sizeof(float) * TD);
            if (own_raw) memcpy((float *)c->raw + l * TD, ct_frozen_extra(&c->frozen, e + 2), sizeof(float) * TD);
            memcpy(c->resid + l * TD, ct_frozen_extra(&c->frozen, e + per - 1), sizeof(float) * TD);
            for (int k = 0; k < per; k++) ct_frozen_drop_extra(&c->frozen, e + k);   // copied: one copy is enough
        }
        c->embed = lo == 0 ? ct_frozen_extra(&c->frozen, per * (hi - lo)) : NULL;
        // error = output hook - reconstruction from every layer's features; constant positions
        // zero. The reconstruction's activations are the clean run's (one encode serves both).
        keep_acts k = {c, 0, n_const};
        rc = split ? split_reconstruct(c, tc, lo, hi, &k, err) : ct_tc_reconstruct_each(tc, c->in, T, c->err, keep_layer_acts, &k, err);
        c->have_acts[0] = !rc;
        size_t zero = (size_t)(n_const < T ? n_const : T) * D;
        for (int l = lo; l < hi && !rc; l++) {
            float *e = c->err + l * TD;
            const float *o = c->out + l * TD;
            for (size_t i = 0; i < TD; i++) e[i] = i < zero ? 0.0f : o[i] - e[i];
        }
    }
    if (rc) {
        // a layer-split rank that fails leaves its neighbours waiting for what it would have sent
        if (split) ct_dist_abort(err->msg);
        ct_clean_run_free(c);
        return rc;
    }
    *out = c;
    return CT_OK;
}

// Refused on a layer-split model outside attribution: its clean run is a collective of every rank.
static ct_status not_split(const ct_model *m, ct_err *err) {
    if (!ct_model_is_split(m)) return CT_OK;
    return ct_fail(err, CT_STATUS_BAD_ARG, "this process holds layers %d..%d of %d (a layer-split model): only attribution "
                   "runs on it", m->hold_lo, m->hold_hi - 1, m->cfg.n_layers);
}

static ct_status open_run(ct_clean_run **out, const ct_replacement *r, const int *tokens, int T, int all_logits,
                          ct_err *err) {
    // Gemma-2 with hook_mlp_out: the raw MLP output differs from the output hook (post-FF norm)
    int own_raw = !r->out_raw && r->m->cfg.post_norms;
    return clean_run(out, r->m, r->tc, own_raw, r->n_const, tokens, T, all_logits, err);
}

ct_status ct_clean_run_open(ct_clean_run **out, const ct_replacement *r, const int *tokens, int T, int all_logits,
                            ct_err *err) {
    *out = NULL;
    ct_status rc = not_split(r->m, err);
    return rc ? rc : open_run(out, r, tokens, T, all_logits, err);
}

ct_status ct_replacement_clean(ct_replacement *r, const int *tokens, int T, ct_clean_run **out, ct_err *err) {
    *out = NULL;
    ct_status rc = not_split(r->m, err);
    return rc ? rc : ct_replacement_clean_all(r, tokens, T, out, err);
}

ct_status ct_replacement_clean_all(ct_replacement *r, const int *tokens, int T, ct_clean_run **out, ct_err *err) {
    *out = NULL;
    ct_clean_run *c = r->clean;
    if (!(c && c->T == T && memcmp(c->tokens, tokens, sizeof(int) * (size_t)T) == 0)) {
        ct_status rc = ct_replacement_check_prompt(r, tokens, T, err);
        if (rc) return rc;
        ct_replacement_release(r);
        rc = open_run(&r->clean, r, tokens, T, 0, err);
        if (rc) return rc;
    }
    *out = r->clean;
    return CT_OK;
}

ct_status ct_sparse_acts_append(ct_sparse_acts *a, int64_t *cap, int layer, int pos0, int n_const, const float *v, int T,
                                int F, int keep_zero, ct_err *err) {
    for (int t = 0; t < T; t++) {
        if (pos0 + t < n_const) continue;   // a constant position
        for (int f = 0; f < F; f++) {
            float x = v[(size_t)t * F + f];
            if (x == 0.0f && !keep_zero) continue;
            if (a->n == *cap) {
                int64_t nc = *cap ? 2 * *cap : 4096;
                int32_t *ni = realloc(a->idx, sizeof(int32_t) * 3 * (size_t)nc);
                if (ni) a->idx = ni;
                float *nv = realloc(a->value, sizeof(float) * (size_t)nc);
                if (nv) a->value = nv;
                if (!ni || !nv) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for activations");
                *cap = nc;
            }
            int32_t *p = a->idx + 3 * a->n;
            p[0] = layer, p[1] = pos0 + t, p[2] = f;
            a->value[a->n++] = x;
        }
    }
    return CT_OK;
}

const ct_sparse_acts *ct_clean_acts(const ct_replacement *r, ct_clean_run *c, int pre_activation, ct_err *err) {
    int k = pre_activation != 0;
    if (c->have_acts[k]) return &c->acts[k];
    const ct_transcoders *tc = r->tc;
    int F = 1;
    for (int l = 0; l < c->L; l++) F = tc->layers[l].d_tc > F ? tc->layers[l].d_tc : F;
    float *v = malloc(sizeof(float) * (size_t)c->T * F);
    ct_sparse_acts *a = &c->acts[k];
    int64_t cap = 0;
    ct_status rc = v ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    size_t TD = (size_t)c->T * c->D;
    for (int l = 0; l < c->L && !rc; l++) {
        rc = ct_tc_encode(tc, l, c->in + l * TD, c->T, k ? v : NULL, k ? NULL : v, err);
        if (!rc) rc = ct_sparse_acts_append(a, &cap, l, 0, r->n_const, v, c->T, tc->layers[l].d_tc, k, err);
    }
    free(v);
    if (rc) {
        ct_sparse_acts_free(a);
        return NULL;
    }
    c->have_acts[k] = 1;
    return a;
}

ct_status ct_tc_errors(ct_model *m, const ct_transcoders *tc, const int *tokens, int T, float *err_out, ct_err *err) {
    ct_clean_run *c;
    ct_status rc = ct_transcoders_check(tc, m, err);
    if (!rc) rc = not_split(m, err);
    if (!rc) rc = clean_run(&c, m, tc, 0, 1, tokens, T, 0, err);
    if (rc) return rc;
    rc = ct_tc_reconstruct(tc, c->in, T, err_out, err);
    for (size_t i = 0; !rc && i < (size_t)c->L * T * c->D; i++) err_out[i] = c->out[i] - err_out[i];
    ct_clean_run_free(c);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The replacement forward pass

typedef struct {
    const ct_replacement *r;
    const float *real_out;   // (L, T, D) real output hook values (kept at the constant positions)
    float *pending;          // (L, T, D) decoder contributions written ahead (CLT)
    float *act;              // (T, F_max)
} repl_ctx;

static ct_status repl_mlp(void *vctx, int l, const ct_mlp_io *io, float *out, ct_err *err) {
    repl_ctx *x = vctx;
    const ct_transcoders *tc = x->r->tc;
    int T = io->T, D = io->D;
    size_t TD = (size_t)T * D;
    const float *in = ct_tc_input_of(x->r->input, io);
    ct_status rc = ct_tc_encode(tc, l, in, T, NULL, x->act, err);
    if (rc) return rc;
    int nc = x->r->n_const < T ? x->r->n_const : T;
    memset(x->act, 0, sizeof(float) * (size_t)nc * tc->layers[l].d_tc);   // constant positions: no features
    for (int j = 0; j < tc->layers[l].n_out && !rc; j++) rc = ct_tc_decode_add(tc, l, j, x->act, T, x->pending + (l + j) * TD, err);
    if (rc) return rc;
    for (int t = 0; t < T; t++) memcpy(out + (size_t)t * D, tc->layers[l].b_dec, sizeof(float) * (size_t)D);
    ct_tc_skip_add(tc, l, in, T, out);
    for (size_t i = 0; i < TD; i++) out[i] += x->pending[l * TD + i];
    memcpy(out, x->real_out + l * TD, sizeof(float) * (size_t)nc * D);   // constant positions keep the real output
    return CT_OK;
}

static int max_width(const ct_transcoders *tc) {
    int F = 0;
    for (int l = 0; l < tc->n_layers; l++)
        if (tc->layers[l].d_tc > F) F = tc->layers[l].d_tc;
    return F;
}

// Replacement forward of c's tokens: logits (T, V).
static ct_status repl_forward(const ct_replacement *r, const ct_clean_run *c, float *logits, ct_err *err) {
    size_t LTD = (size_t)c->L * c->T * c->D;
    repl_ctx x = {r, c->out, calloc(LTD, sizeof(float)), malloc(sizeof(float) * (size_t)c->T * max_width(r->tc))};
    ct_status rc = x.pending && x.act ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_forward_ctl ctl = {.mlp = repl_mlp, .mlp_out_raw = r->out_raw, .ctx = &x};
    if (!rc) rc = ct_model_forward_ctl(r->m, c->tokens, c->T, NULL, NULL, logits, 1, &ctl, err);
    free(x.pending);
    free(x.act);
    return rc;
}

ct_status ct_replacement_forward(ct_replacement *r, const int *tokens, int T, float *logits, ct_err *err) {
    ct_clean_run *c;
    ct_status rc = ct_replacement_clean(r, tokens, T, &c, err);
    return rc ? rc : repl_forward(r, c, logits, err);
}

// ---------------------------------------------------------------------------------------------
// Evaluation

void ct_tc_eval_free(ct_tc_eval *e) {
    free(e->fvu);
    free(e->l0);
    free(e->dead);
    memset(e, 0, sizeof *e);
}

// log-softmax of (V,) into out (double)
static void log_softmax(const float *x, int V, double *out) {
    double lse = ct_logsumexp(x, V);
    for (int i = 0; i < V; i++) out[i] = x[i] - lse;
}

ct_status ct_tc_evaluate(ct_replacement *r, const int *const *texts, const int *lens, int n, ct_tc_eval *e, ct_err *err) {
    memset(e, 0, sizeof *e);
    const ct_transcoders *tc = r->tc;
    int L = tc->n_layers, D = tc->d_model, V = r->m->cfg.vocab_size, Fm = max_width(tc);
    e->n_layers = L;
    e->fvu = calloc((size_t)L, sizeof(double));
    e->l0 = calloc((size_t)L, sizeof(double));
    e->dead = calloc((size_t)L, sizeof(double));
    double *sse = calloc((size_t)L, sizeof(double)), *ss = calloc((size_t)L, sizeof(double));
    double *sum = calloc((size_t)L * D, sizeof(double)), *lp = malloc(sizeof(double) * (size_t)V * 2);
    unsigned char *fired = calloc((size_t)L * Fm, 1);
    long agree = 0, count = 0;
    double kl = 0.0;
    ct_status rc = CT_OK;
    if (!e->fvu || !e->l0 || !e->dead || !sse || !ss || !sum || !lp || !fired)
        rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int s = 0; s < n && !rc; s++) {
        int T = lens[s];
        if (T < 2) continue;
        size_t TD = (size_t)T * D, LTD = (size_t)L * TD;
        ct_clean_run *c = NULL;
        float *rec = malloc(sizeof(float) * LTD), *act = malloc(sizeof(float) * (size_t)T * Fm);
        float *lg2 = malloc(sizeof(float) * (size_t)T * V);
        if (!rec || !act || !lg2) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        if (!rc) rc = ct_clean_run_open(&c, r, texts[s], T, 1, err);
        if (!rc) rc = ct_tc_reconstruct(tc, c->in, T, rec, err);
        for (int l = 0; l < L && !rc; l++) {   // FVU pieces, L0, fired features (positions >= 1)
            int F = tc->layers[l].d_tc;
            for (int t = 1; t < T; t++)
                for (int d = 0; d < D; d++) {
                    double y = c->out[l * TD + (size_t)t * D + d], p = rec[l * TD + (size_t)t * D + d];
                    sse[l] += (y - p) * (y - p);
                    ss[l] += y * y;
                    sum[(size_t)l * D + d] += y;
                }
            rc = ct_tc_encode(tc, l, c->in + l * TD, T, NULL, act, err);
            for (int t = 1; t < T && !rc; t++)
                for (int f = 0; f < F; f++)
                    if (act[(size_t)t * F + f] != 0.0f) {
                        e->l0[l] += 1.0;
                        fired[(size_t)l * Fm + f] = 1;
                    }
        }
        if (!rc) rc = repl_forward(r, c, lg2, err);
        for (int t = 1; t < T && !rc; t++) {   // predictions after the BOS position
            const float *a = c->logits + (size_t)t * V, *b = lg2 + (size_t)t * V;
            int ia = 0, ib = 0;
            for (int v = 1; v < V; v++) {
                if (a[v] > a[ia]) ia = v;
                if (b[v] > b[ib]) ib = v;
            }
            agree += ia == ib;
            log_softmax(a, V, lp);
            log_softmax(b, V, lp + V);
            double k = 0.0;
            for (int v = 0; v < V; v++) k += exp(lp[v]) * (lp[v] - lp[V + v]);
            kl += k;
            count++;
        }
        ct_clean_run_free(c);
        free(rec), free(act), free(lg2);
    }
    if (!rc && count == 0) rc = ct_fail(err, CT_STATUS_BAD_ARG, "evaluate: no text has more than one token");
    for (int l = 0; l < L && !rc; l++) {
        double var = ss[l];
        for (int d = 0; d < D; d++) var -= sum[(size_t)l * D + d] * sum[(size_t)l * D + d] / (double)count;
        e->fvu[l] = var > 0 ? sse[l] / var : 0.0;
        e->l0[l] /= (double)count;
        int dead = 0;
        for (int f = 0; f < tc->layers[l].d_tc; f++) dead += !fired[(size_t)l * Fm + f];
        e->dead[l] = (double)dead / tc->layers[l].d_tc;
    }
    e->agreement = count ? (double)agree / count : 0.0;
    e->kl = count ? kl / count : 0.0;
    e->n_tokens = count;
    free(sse), free(ss), free(sum), free(lp), free(fired);
    if (rc) ct_tc_eval_free(e);
    return rc;
}
