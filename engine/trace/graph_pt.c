// graph_pt.c - graphs in circuit-tracer's .pt files (Graph.to_pt / Graph.from_pt).
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "core/fileio.h"
#include "core/tensor.h"
#include "formats/pt.h"
#include "trace/graph.h"

// ---------------------------------------------------------------------------------------------
// Writing

// The tensors of the file, in the order of their storages data/0, data/1, ...
enum { T_ADJ, T_ACTIVE, T_PROBS, T_TOKENS, T_SELECTED, T_ACTS, N_TENSORS };

typedef struct {
    const ct_graph *g;
    int64_t *active, *tokens;   // int64 copies
    float *probs;
} pt_out;

// The bytes of tensor k, written through the zip writer (the adjacency a row at a time).
static void put_tensor(ct_zip_writer *w, const pt_out *o, int k, float *zero_row) {
    const ct_graph *g = o->g;
    int64_t N = g->n_nodes;
    switch (k) {
    case T_ADJ:
        for (int64_t r = 0; r < N; r++) {
            const float *row = ct_graph_row(g, r);
            ct_zip_put(w, row ? row : zero_row, sizeof(float) * (size_t)N);
        }
        break;
    case T_ACTIVE: ct_zip_put(w, o->active, sizeof(int64_t) * 3 * (size_t)g->n_active); break;
    case T_PROBS: ct_zip_put(w, o->probs, sizeof(float) * (size_t)g->n_logits); break;
    case T_TOKENS: ct_zip_put(w, o->tokens, sizeof(int64_t) * (size_t)g->n_pos); break;
    case T_SELECTED: ct_zip_put(w, g->selected, sizeof(int64_t) * (size_t)g->n_selected); break;
    default: ct_zip_put(w, g->activation, sizeof(float) * (size_t)g->n_active); break;
    }
}

// An int, or None when unknown (0).
static void int_or_none(ct_pkw *w, int v) {
    if (v > 0) ct_pkw_int(w, v);
    else ct_pkw_none(w);
}

// circuit_tracer.utils.tl_nnsight_mapping.UnifiedConfig (a dataclass: the class, no arguments,
// then its fields as the state)
static void write_cfg(ct_pkw *w, const ct_graph *g) {
    ct_pkw_global(w, "circuit_tracer.utils.tl_nnsight_mapping", "UnifiedConfig");
    ct_pkw_op(w, ')');
    ct_pkw_op(w, 0x81);   // NEWOBJ
    ct_pkw_op(w, '}');
    ct_pkw_op(w, '(');
    ct_pkw_str(w, "n_layers"), ct_pkw_int(w, g->n_layers);
    ct_pkw_str(w, "d_model"), int_or_none(w, g->d_model);
    ct_pkw_str(w, "d_head"), int_or_none(w, g->d_head);
    ct_pkw_str(w, "n_heads"), int_or_none(w, g->n_heads);
    ct_pkw_str(w, "d_mlp"), int_or_none(w, g->d_mlp);
    ct_pkw_str(w, "d_vocab"), int_or_none(w, g->vocab_size);
    // the model's name is what circuit-tracer gives AutoTokenizer
    ct_pkw_str(w, "tokenizer_name"), ct_pkw_str(w, g->model_name);
    ct_pkw_str(w, "model_name"), ct_pkw_str(w, g->model_name);
    ct_pkw_str(w, "original_architecture"), ct_pkw_str(w, g->architecture);
    ct_pkw_str(w, "n_key_value_heads"), int_or_none(w, g->n_kv_heads);
    ct_pkw_str(w, "dtype"), ct_pkw_global(w, "torch", "float32");   // ctrace computes in float32
    ct_pkw_op(w, 'u');
    ct_pkw_op(w, 'b');   // BUILD
}

// scan: a string; "a,b,..." (a list of transcoders, as circuit-tracer keeps one) a list; "" None
static void write_scan(ct_pkw *w, const char *scan) {
    if (!scan[0]) return ct_pkw_none(w);
    if (!strchr(scan, ',')) return ct_pkw_str(w, scan);
    ct_pkw_op(w, ']');
    ct_pkw_op(w, '(');
    char buf[sizeof ((ct_graph *)0)->scan];
    snprintf(buf, sizeof buf, "%s", scan);
    for (char *s = buf, *e; s; s = e ? e + 1 : NULL) {
        if ((e = strchr(s, ','))) *e = 0;
        ct_pkw_str(w, s);
    }
    ct_pkw_op(w, 'e');
}

// What circuit-tracer's Graph does not hold, in a member of its own ("<dir>/ctrace.json", which
// torch.load passes over): the prompt's token texts, the logit labels byte for byte, the feature
// hooks and the settings the graph was computed with, so a graph read back is the graph saved.
static char *ctrace_json(const ct_graph *g) {
    cJSON *o = cJSON_CreateObject(), *texts = cJSON_AddArrayToObject(o, "prompt_tokens"), *s;
    for (int t = 0; t < g->n_pos; t++)
        cJSON_AddItemToArray(texts, cJSON_CreateString(g->token_text && g->token_text[t] ? g->token_text[t] : ""));
    // the logit labels as they are (the pickle's are text: a byte token's label becomes U+FFFD there)
    cJSON *labels = cJSON_AddArrayToObject(o, "logit_labels");
    for (int k = 0; k < g->n_logits; k++)
        cJSON_AddItemToArray(labels, cJSON_CreateString(g->logits[k].label ? g->logits[k].label : ""));
    cJSON_AddStringToObject(o, "feature_input_hook", g->input_hook);
    cJSON_AddStringToObject(o, "feature_output_hook", g->output_hook);
    s = cJSON_AddObjectToObject(o, "generation_settings");
    cJSON_AddNumberToObject(s, "max_n_logits", g->settings.max_n_logits);
    cJSON_AddNumberToObject(s, "desired_logit_prob", g->settings.desired_logit_prob);
    cJSON_AddNumberToObject(s, "batch_size", g->settings.batch_size);
    cJSON_AddNumberToObject(s, "max_feature_nodes", (double)g->settings.max_feature_nodes);
    cJSON_AddNumberToObject(s, "update_interval", g->settings.update_interval);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

static void read_ctrace_json(ct_graph *g, const ct_zip_member *m) {
    cJSON *o = m ? cJSON_ParseWithLength((const char *)m->data, m->size) : NULL;
    const cJSON *texts = cJSON_GetObjectItemCaseSensitive(o, "prompt_tokens"), *t = cJSON_IsArray(texts) ? texts->child : NULL;
    for (int i = 0; i < g->n_pos && t; i++, t = t->next) {
        char *s = cJSON_IsString(t) ? strdup(t->valuestring) : NULL;
        if (s) free(g->token_text[i]), g->token_text[i] = s;
    }
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(o, "logit_labels"), *l = cJSON_IsArray(labels) ? labels->child : NULL;
    for (int k = 0; k < g->n_logits && l; k++, l = l->next) {
        char *s = cJSON_IsString(l) && strlen(l->valuestring) <= 4096 ? strdup(l->valuestring) : NULL;
        if (s) free(g->logits[k].label), g->logits[k].label = s;
    }
    const cJSON *v;
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(o, "feature_input_hook")))
        snprintf(g->input_hook, sizeof g->input_hook, "%s", v->valuestring);
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(o, "feature_output_hook")))
        snprintf(g->output_hook, sizeof g->output_hook, "%s", v->valuestring);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "generation_settings");
    ct_graph_settings *gs = &g->settings;
    // whole numbers in range only (a stranger's file)
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(s, "max_n_logits")) && v->valuedouble >= 0 && v->valuedouble <= INT_MAX)
        gs->max_n_logits = (int)v->valuedouble;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(s, "desired_logit_prob"))) gs->desired_logit_prob = v->valuedouble;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(s, "batch_size")) && v->valuedouble >= 0 && v->valuedouble <= INT_MAX)
        gs->batch_size = (int)v->valuedouble;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(s, "max_feature_nodes")) && v->valuedouble >= 0 &&
        v->valuedouble <= 9e15)
        gs->max_feature_nodes = (int64_t)v->valuedouble;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(s, "update_interval")) && v->valuedouble >= 0 &&
        v->valuedouble <= INT_MAX)
        gs->update_interval = (int)v->valuedouble;
    cJSON_Delete(o);
}

static void write_pickle(ct_pkw *w, const ct_graph *g) {
    int64_t N = g->n_nodes, NA = g->n_active, K = g->n_logits, T = g->n_pos, S = g->n_selected;
    ct_pkw_begin(w);
    ct_pkw_op(w, '}');
    ct_pkw_op(w, '(');
    ct_pkw_str(w, "input_string"), ct_pkw_str(w, g->prompt ? g->prompt : "");
    ct_pkw_str(w, "adjacency_matrix"), ct_pkw_tensor(w, "0", CT_DT_F32, 2, (int64_t[]){N, N});
    ct_pkw_str(w, "cfg"), write_cfg(w, g);
    ct_pkw_str(w, "active_features"), ct_pkw_tensor(w, "1", CT_DT_I64, 2, (int64_t[]){NA, 3});
    ct_pkw_str(w, "logit_targets");
    ct_pkw_op(w, ']');
    ct_pkw_op(w, '(');
    for (int k = 0; k < K; k++) {   // LogitTarget(token_str, vocab_idx): a NamedTuple
        ct_pkw_global(w, "circuit_tracer.attribution.targets", "LogitTarget");
        ct_pkw_str(w, g->logits[k].label ? g->logits[k].label : "");
        ct_pkw_int(w, g->logits[k].vocab_id);
        ct_pkw_op(w, 0x86);   // TUPLE2
        ct_pkw_op(w, 0x81);   // NEWOBJ
    }
    ct_pkw_op(w, 'e');
    ct_pkw_str(w, "logit_probabilities"), ct_pkw_tensor(w, "2", CT_DT_F32, 1, (int64_t[]){K});
    ct_pkw_str(w, "vocab_size"), ct_pkw_int(w, g->vocab_size);
    ct_pkw_str(w, "input_tokens"), ct_pkw_tensor(w, "3", CT_DT_I64, 1, (int64_t[]){T});
    ct_pkw_str(w, "selected_features"), ct_pkw_tensor(w, "4", CT_DT_I64, 1, (int64_t[]){S});
    ct_pkw_str(w, "activation_values"), ct_pkw_tensor(w, "5", CT_DT_F32, 1, (int64_t[]){NA});
    ct_pkw_str(w, "scan"), write_scan(w, g->scan);
    ct_pkw_op(w, 'u');
    ct_pkw_end(w);
}

ct_status ct_graph_save_pt(ct_ctx *ctx, const ct_graph *g, const char *path, ct_err *err) {
    if (g->node_mask)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "save: only full graphs are saved as .pt (this one is pruned)");
    // the archive's directory: the file's name without its extension, as torch.save names it
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", base);
    if (strrchr(dir, '.')) *strrchr(dir, '.') = 0;
    if (!dir[0]) snprintf(dir, sizeof dir, "archive");
    pt_out o = {g, malloc(sizeof(int64_t) * 3 * (size_t)(g->n_active + 1)), malloc(sizeof(int64_t) * (size_t)(g->n_pos + 1)),
                malloc(sizeof(float) * (size_t)(g->n_logits + 1))};
    float *zero_row = calloc((size_t)g->n_nodes + 1, sizeof(float));
    ct_pkw w;
    write_pickle(&w, g);
    char *extra = ctrace_json(g);
    ct_status rc = o.active && o.tokens && o.probs && zero_row && !w.failed && extra ? CT_OK
                                                                            : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (!rc) {
        for (int64_t i = 0; i < 3 * g->n_active; i++) o.active[i] = g->active[i];
        for (int t = 0; t < g->n_pos; t++) o.tokens[t] = g->tokens[t];
        for (int k = 0; k < g->n_logits; k++) o.probs[k] = g->logits[k].prob;
    }
    int64_t N = g->n_nodes;
    const uint64_t bytes[N_TENSORS] = {sizeof(float) * (uint64_t)N * (uint64_t)N, sizeof(int64_t) * 3 * (uint64_t)g->n_active,
                                       sizeof(float) * (uint64_t)g->n_logits, sizeof(int64_t) * (uint64_t)g->n_pos,
                                       sizeof(int64_t) * (uint64_t)g->n_selected, sizeof(float) * (uint64_t)g->n_active};
    ct_wfile f;
    if (!rc) rc = ct_wfile_open(ctx, &f, path, err);
    if (!rc) {
        ct_zip_writer z;
        ct_zip_writer_init(&z, f.f);
        char name[300];
        snprintf(name, sizeof name, "%s/data.pkl", dir);
        ct_zip_begin(&z, name, w.n), ct_zip_put(&z, w.p, w.n), ct_zip_end(&z);
        snprintf(name, sizeof name, "%s/byteorder", dir);
        ct_zip_begin(&z, name, 6), ct_zip_put(&z, "little", 6), ct_zip_end(&z);
        for (int k = 0; k < N_TENSORS; k++) {
            snprintf(name, sizeof name, "%s/data/%d", dir, k);
            ct_zip_begin(&z, name, bytes[k]);
            put_tensor(&z, &o, k, zero_row);
            ct_zip_end(&z);
        }
        snprintf(name, sizeof name, "%s/version", dir);
        ct_zip_begin(&z, name, 2), ct_zip_put(&z, "3\n", 2), ct_zip_end(&z);
        snprintf(name, sizeof name, "%s/ctrace.json", dir);
        ct_zip_begin(&z, name, strlen(extra)), ct_zip_put(&z, extra, strlen(extra)), ct_zip_end(&z);
        rc = ct_zip_finish(&z, err);
        if (rc) ct_wfile_abort(&f);
        else rc = ct_wfile_commit(&f, err);
        if (rc) ct_err_where(err, path);
    }
    ct_pkw_free(&w);
    free(extra);
    free(o.active), free(o.tokens), free(o.probs), free(zero_row);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Reading

static ct_status bad(ct_err *err, const char *path, const char *what) {
    return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: %s", path, what);
}

// A tensor value of d[key] with ndim dimensions (the first n0 long when n0 >= 0; the second 3 for
// active_features); its elements read as int64 (ints) or float (floats) into a new array.
static ct_status get_tensor(const ct_pk *d, const char *key, int ndim, int64_t n0, int64_t n1, const ct_pk **out,
                            const char *path, ct_err *err) {
    const ct_pk *t = ct_pk_get(d, key);
    if (!t) return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: no %s in the saved graph", path, key);
    if (t->kind != CT_PK_TENSOR)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: %s is a %s; expected a tensor", path, key, ct_pk_kind_name(t->kind));
    if (t->ndim != ndim || (n0 >= 0 && t->shape[0] != n0) || (ndim == 2 && n1 >= 0 && t->shape[1] != n1))
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: %s has %d dimension(s) [%lld%s]; expected %d [%lld%s]", path, key,
                       t->ndim, (long long)(t->ndim ? t->shape[0] : 0), t->ndim > 1 ? ", ..." : "", ndim, (long long)n0,
                       ndim > 1 ? ", ..." : "");
    *out = t;
    return CT_OK;
}

static int64_t int_at(const ct_pk *t, int64_t i) {
    int64_t v;
    int32_t v32;
    if (t->dtype == CT_DT_I64) memcpy(&v, t->data + 8 * i, 8);
    else memcpy(&v32, t->data + 4 * i, 4), v = v32;
    return v;
}

static ct_status want_ints(const ct_pk *t, const char *key, const char *path, ct_err *err) {
    return t->dtype == CT_DT_I64 || t->dtype == CT_DT_I32
               ? CT_OK
               : ct_fail(err, CT_STATUS_BAD_DTYPE, "%s: %s has dtype %s; expected int64 or int32", path, key,
                         ct_dtype_name(t->dtype));
}

static ct_status want_floats(const ct_pk *t, const char *key, const char *path, ct_err *err) {
    return t->dtype == CT_DT_F32 || t->dtype == CT_DT_F16 || t->dtype == CT_DT_BF16 || t->dtype == CT_DT_F64
               ? CT_OK
               : ct_fail(err, CT_STATUS_BAD_DTYPE, "%s: %s has dtype %s; expected float32, float16, bfloat16 or float64",
                         path, key, ct_dtype_name(t->dtype));
}

// An int attribute of cfg (0 when absent or None).
static int cfg_int(const ct_pk *cfg, const char *name) {
    const ct_pk *v = ct_pk_attr(cfg, name);
    return v && v->kind == CT_PK_INT && v->i > 0 && v->i <= INT_MAX ? (int)v->i : 0;
}

static void cfg_str(const ct_pk *cfg, const char *name, char *out, size_t n) {
    const ct_pk *v = ct_pk_attr(cfg, name);
    if (v && v->kind == CT_PK_STR) snprintf(out, n, "%s", v->s);
}

// logit_targets: LogitTarget(token_str, vocab_idx) objects (or plain (str, int) tuples), or an
// older file's tensor of token ids.
static ct_status read_targets(ct_graph *g, const ct_pk *lt, const char *path, ct_err *err) {
    if (lt && lt->kind == CT_PK_TENSOR) {
        ct_status rc = lt->ndim == 1 && lt->shape[0] == g->n_logits ? want_ints(lt, "logit_targets", path, err)
                                                                     : bad(err, path, "logit_targets does not match logit_probabilities");
        for (int k = 0; !rc && k < g->n_logits; k++)
            if (!(g->logits[k].label = strdup(""))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
            else g->logits[k].vocab_id = int_at(lt, k);
        return rc;
    }
    if (!lt || lt->kind != CT_PK_LIST || lt->n != g->n_logits)
        return bad(err, path, "logit_targets is not a list of one LogitTarget per logit probability");
    for (int k = 0; k < g->n_logits; k++) {
        const ct_pk *e = lt->items[k], *a = e->kind == CT_PK_OBJECT ? e->args : e;
        if (!a || a->kind != CT_PK_TUPLE || a->n != 2 || a->items[0]->kind != CT_PK_STR || a->items[1]->kind != CT_PK_INT)
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: logit target %d is not LogitTarget(token_str, vocab_idx)", path, k);
        if (a->items[0]->len > 4096)   // labels are tokens or short names; one memoized string may be named by every target
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: logit target %d has a label of %zu bytes; expected at most 4096",
                           path, k, a->items[0]->len);
        if (!(g->logits[k].label = strdup(a->items[0]->s))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        g->logits[k].vocab_id = a->items[1]->i;
    }
    return CT_OK;
}

static ct_status read_graph(ct_graph *g, const ct_pk *d, const char *path, ct_err *err) {
    if (!d || d->kind != CT_PK_DICT)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: the saved object is a %s; expected the dict of Graph.to_pt", path,
                       d ? ct_pk_kind_name(d->kind) : "nothing");
    const ct_pk *cfg = ct_pk_get(d, "cfg"), *s;
    const ct_pk *nl = ct_pk_attr(cfg, "n_layers");
    if (!nl || nl->kind != CT_PK_INT || nl->i < 1 || nl->i > 100000)
        return bad(err, path, "cfg has no n_layers of 1..100000 (expected circuit-tracer's UnifiedConfig or a "
                   "TransformerLens config)");
    g->n_layers = (int)nl->i;
    g->d_model = cfg_int(cfg, "d_model"), g->n_heads = cfg_int(cfg, "n_heads"), g->d_head = cfg_int(cfg, "d_head");
    g->d_mlp = cfg_int(cfg, "d_mlp"), g->n_kv_heads = cfg_int(cfg, "n_key_value_heads");
    cfg_str(cfg, "model_name", g->model_name, sizeof g->model_name);
    cfg_str(cfg, "original_architecture", g->architecture, sizeof g->architecture);
    const ct_pk *vs = ct_pk_get(d, "vocab_size");
    g->vocab_size = vs && vs->kind == CT_PK_INT && vs->i > 0 && vs->i <= INT_MAX ? (int)vs->i : cfg_int(cfg, "d_vocab");
    if ((s = ct_pk_get(d, "scan")) && s->kind == CT_PK_STR) {
        snprintf(g->scan, sizeof g->scan, "%s", s->s);
    } else if (s && s->kind == CT_PK_LIST) {   // a list of transcoders: joined by commas
        size_t at = 0;
        for (int64_t i = 0; i < s->n && s->items[i]->kind == CT_PK_STR; i++) {
            size_t len = strnlen(s->items[i]->s, sizeof g->scan);
            if (at + (i > 0) + len >= sizeof g->scan) return bad(err, path, "scan: the list of transcoders is longer than 255 bytes");
            if (i) g->scan[at++] = ',';
            memcpy(g->scan + at, s->items[i]->s, len);
            at += len;
            g->scan[at] = 0;
        }
    }
    s = ct_pk_get(d, "input_string");
    if (!(g->prompt = strdup(s && s->kind == CT_PK_STR ? s->s : ""))) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");

    const ct_pk *it, *af, *sf, *av, *lp, *adj;
    ct_status rc;
    if ((rc = get_tensor(d, "input_tokens", 1, -1, 0, &it, path, err)) || (rc = want_ints(it, "input_tokens", path, err)) ||
        (rc = get_tensor(d, "active_features", 2, -1, 3, &af, path, err)) ||
        (rc = want_ints(af, "active_features", path, err)) ||
        (rc = get_tensor(d, "selected_features", 1, -1, 0, &sf, path, err)) ||
        (rc = want_ints(sf, "selected_features", path, err)) ||
        (rc = get_tensor(d, "activation_values", 1, af->shape[0], 0, &av, path, err)) ||
        (rc = want_floats(av, "activation_values", path, err)) ||
        (rc = get_tensor(d, "logit_probabilities", 1, -1, 0, &lp, path, err)) ||
        (rc = want_floats(lp, "logit_probabilities", path, err)))
        return rc;
    if (it->shape[0] < 1 || it->shape[0] > INT_MAX || lp->shape[0] < 1 || lp->shape[0] > INT_MAX)
        return ct_fail(err, CT_STATUS_BAD_SHAPE, "%s: expected 1..%d input tokens and logit targets, found %lld and %lld", path,
                       INT_MAX, (long long)it->shape[0], (long long)lp->shape[0]);
    g->n_pos = (int)it->shape[0], g->n_logits = (int)lp->shape[0];
    g->n_active = af->shape[0], g->n_selected = sf->shape[0];
    g->n_nodes = g->n_selected + (int64_t)(g->n_layers + 1) * g->n_pos + g->n_logits;   // < 2^63: sizes are below 2^40
    int64_t N = g->n_nodes;
    if ((rc = get_tensor(d, "adjacency_matrix", 2, N, N, &adj, path, err)) ||
        (rc = want_floats(adj, "adjacency_matrix", path, err)))
        return rc;
    g->active = malloc(sizeof(int32_t) * 3 * (size_t)(g->n_active + 1));
    g->activation = malloc(sizeof(float) * (size_t)(g->n_active + 1));
    g->selected = malloc(sizeof(int64_t) * (size_t)(g->n_selected + 1));
    g->tokens = malloc(sizeof(int) * (size_t)(g->n_pos + 1));
    g->token_text = calloc((size_t)g->n_pos + 1, sizeof(char *));
    g->logits = calloc((size_t)g->n_logits + 1, sizeof(ct_logit_target));
    float *probs = malloc(sizeof(float) * (size_t)g->n_logits);
    if (!g->active || !g->activation || !g->selected || !g->tokens || !g->token_text || !g->logits || !probs) {
        free(probs);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    for (int64_t i = 0; i < g->n_active; i++) {
        int64_t l = int_at(af, 3 * i), p = int_at(af, 3 * i + 1), f = int_at(af, 3 * i + 2);
        if (l < 0 || l >= g->n_layers || p < 0 || p >= g->n_pos || f < 0 || f > INT32_MAX) {
            free(probs);
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: active feature %lld is (%lld, %lld, %lld); expected layers below %d, "
                           "positions below %d, feature indices of 0..%d", path, (long long)i, (long long)l, (long long)p,
                           (long long)f, g->n_layers, g->n_pos, INT32_MAX);
        }
        g->active[3 * i] = (int32_t)l, g->active[3 * i + 1] = (int32_t)p, g->active[3 * i + 2] = (int32_t)f;
    }
    ct_to_f32(g->activation, av->data, av->dtype, (size_t)g->n_active);
    ct_to_f32(probs, lp->data, lp->dtype, (size_t)g->n_logits);
    // selected features: ascending indices whose (layer, position, index) ascend too (node lookups
    // search them), as circuit-tracer orders them
    for (int64_t i = 0; i < g->n_selected; i++) {
        g->selected[i] = int_at(sf, i);
        int ok = g->selected[i] >= 0 && g->selected[i] < g->n_active;
        if (ok && i) {
            const int32_t *a = g->active + 3 * g->selected[i - 1], *b = g->active + 3 * g->selected[i];
            ok = g->selected[i] > g->selected[i - 1] && (a[0] != b[0] ? a[0] < b[0] : a[1] != b[1] ? a[1] < b[1] : a[2] < b[2]);
        }
        if (!ok) {
            free(probs);
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: selected_features must be ascending indices below %lld of features "
                           "in ascending (layer, position, index) order", path, (long long)g->n_active);
        }
    }
    for (int t = 0; t < g->n_pos; t++) {
        int64_t v = int_at(it, t);
        if (v < 0 || v > INT_MAX) {
            free(probs);
            return ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: input token %d is %lld; expected 0..%d", path, t, (long long)v, INT_MAX);
        }
        g->tokens[t] = (int)v;
        if (!(g->token_text[t] = strdup(""))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    for (int k = 0; k < g->n_logits; k++) g->logits[k].prob = probs[k];
    free(probs);
    if (rc || (rc = read_targets(g, ct_pk_get(d, "logit_targets"), path, err))) return rc;
    // the adjacency: the rows of feature and logit nodes; the others must be zero
    float *row = malloc(sizeof(float) * (size_t)(N + 1));
    if (!row || !(g->adj = malloc(sizeof(float) * (size_t)(g->n_selected + g->n_logits) * (size_t)N + 1))) {
        free(row);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory for a %lld-node graph", (long long)N);
    }
    size_t es = ct_dtype_size(adj->dtype);
    for (int64_t r = 0; r < N && !rc; r++) {
        float *dst = (float *)ct_graph_row(g, r);
        ct_to_f32(dst ? dst : row, adj->data + (size_t)r * (size_t)N * es, adj->dtype, (size_t)N);
        for (int64_t c = 0; !dst && c < N && !rc; c++)
            if (row[c] != 0.0f)
                rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "%s: adjacency_matrix row %lld (an error or token node) is not zero",
                             path, (long long)r);
    }
    free(row);
    g->settings.node_threshold = g->settings.edge_threshold = -1;
    return rc;
}

ct_status ct_graph_from_pt(ct_graph **out, const ct_pt *p, const char *path, ct_err *err) {
    *out = NULL;
    ct_graph *g = calloc(1, sizeof *g);
    ct_status rc = g ? read_graph(g, p->root, path, err) : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    if (rc) {
        ct_graph_free(g);
        return rc;
    }
    char name[4200];   // ctrace's own member, beside data.pkl
    snprintf(name, sizeof name, "%.*sctrace.json", (int)p->dir_len, p->dir);
    read_ctrace_json(g, ct_zip_find(&p->zip, name));
    *out = g;
    return CT_OK;
}

ct_status ct_graph_load_pt(ct_ctx *ctx, ct_graph **out, const char *path, ct_err *err) {
    *out = NULL;
    ct_pt *p = NULL;
    ct_status rc = ct_pt_open(ctx, &p, path, err);
    if (!rc) rc = ct_graph_from_pt(out, p, path, err);
    ct_pt_free(p);
    return rc;
}
