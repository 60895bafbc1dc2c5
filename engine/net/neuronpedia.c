// neuronpedia.c - Neuronpedia response parsing and the feature client (see neuronpedia.h).
#include "net/neuronpedia.h"

#include <cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// ---- parsing ----------------------------------------------------------------

static char *dup_str(const cJSON *j) { return cJSON_IsString(j) ? strdup(j->valuestring) : NULL; }
static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static double num_or_nan(const cJSON *j) { return cJSON_IsNumber(j) ? j->valuedouble : NAN; }

// An index as Neuronpedia writes it: a decimal string (GET, search) or a number (batch requests).
static int read_index(const cJSON *j, double *out) {
    double v = NAN;
    if (cJSON_IsNumber(j)) v = j->valuedouble;
    else if (cJSON_IsString(j) && j->valuestring[0]) {
        char *e;
        v = strtod(j->valuestring, &e);
        if (*e || strspn(j->valuestring, "0123456789") != strlen(j->valuestring)) v = NAN;
    }
    if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v)) return -1;
    *out = v;
    return 0;
}

static const char *type_name_of(const cJSON *j) {
    switch (j ? j->type & 0xff : 0) {
    case cJSON_Object: return "an object";
    case cJSON_Array: return "an array";
    case cJSON_String: return "a string";
    case cJSON_Number: return "a number";
    case cJSON_NULL: return "null";
    case cJSON_True: case cJSON_False: return "a boolean";
    }
    return "nothing";
}

static int read_logits(const cJSON *o, const char *skey, const char *vkey, ct_np_logit **out, int *n) {
    const cJSON *s = get(o, skey), *v = get(o, vkey);
    *out = NULL;
    *n = 0;
    if (!cJSON_IsArray(s)) return 0;
    int m = cJSON_GetArraySize(s);
    if (m == 0) return 0;
    if (!(*out = calloc((size_t)m, sizeof **out))) return -1;
    for (int i = 0; i < m; i++) {
        const cJSON *t = cJSON_GetArrayItem(s, i);
        if (!cJSON_IsString(t)) continue;
        ct_np_logit *l = &(*out)[*n];
        if (!(l->token = strdup(t->valuestring))) return -1;
        l->value = cJSON_IsArray(v) ? num_or_nan(cJSON_GetArrayItem(v, i)) : NAN;
        (*n)++;
    }
    return 0;
}

static int is_preferred(const char *type) {
    return type && (strcmp(type, "np_max-act-logits") == 0 || strcmp(type, "np_max-act") == 0);
}

static ct_status feature_from(const cJSON *o, ct_np_feature *f, ct_err *err) {
    memset(f, 0, sizeof *f);
    f->density = f->max_act = NAN;
    if (cJSON_IsNull(o)) return ct_fail(err, CT_STATUS_NOT_FOUND, "feature not found (the server answered null)");
    if (!cJSON_IsObject(o)) return ct_fail(err, CT_STATUS_BAD_RESPONSE, "expected a feature object, found %s", type_name_of(o));
    if (read_index(get(o, "index"), &f->index))
        return ct_fail(err, CT_STATUS_BAD_RESPONSE, "feature 'index' is %s; expected a non-negative integer", type_name_of(get(o, "index")));
    f->model_id = dup_str(get(o, "modelId"));
    f->source_id = dup_str(get(o, "layer"));
    if (!f->model_id || !f->source_id) {
        ct_np_feature_free(f);
        return ct_fail(err, CT_STATUS_BAD_RESPONSE, "feature without string 'modelId' and 'layer'");
    }
    f->density = num_or_nan(get(o, "frac_nonzero"));
    f->max_act = num_or_nan(get(o, "maxActApprox"));
    const cJSON *ex = get(o, "explanations");
    int ok = 1, pick = -1;
    if (cJSON_IsArray(ex)) {
        int m = cJSON_GetArraySize(ex);
        if (m > 0 && !(f->expl = calloc((size_t)m, sizeof *f->expl))) ok = 0;
        for (int i = 0; ok && i < m; i++) {
            const cJSON *e = cJSON_GetArrayItem(ex, i);
            if (!cJSON_IsString(get(e, "description"))) continue;
            ct_np_expl *x = &f->expl[f->n_expl];
            x->description = dup_str(get(e, "description"));
            x->type_name = dup_str(get(e, "typeName"));
            x->model_name = dup_str(get(e, "explanationModelName"));
            if (!x->description) ok = 0;
            if (pick < 0 && is_preferred(x->type_name)) pick = f->n_expl;
            f->n_expl++;
        }
    }
    if (ok) f->label = strdup(f->n_expl ? f->expl[pick >= 0 ? pick : 0].description : "");
    if (!ok || !f->label || read_logits(o, "pos_str", "pos_values", &f->pos, &f->n_pos) ||
        read_logits(o, "neg_str", "neg_values", &f->neg, &f->n_neg)) {
        ct_np_feature_free(f);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    return CT_OK;
}

static cJSON *parse(const char *json, size_t n, ct_err *err) {
    cJSON *j = cJSON_ParseWithLength(json, n);
    if (!j) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json && at <= json + n ? (long)(at - json) : -1;
        ct_fail(err, CT_STATUS_BAD_RESPONSE, "response is not valid JSON (%zu bytes, error near byte %ld)", n, off);
    }
    return j;
}

ct_status ct_np_parse_feature(const char *json, size_t n, ct_np_feature *f, ct_err *err) {
    memset(f, 0, sizeof *f);
    cJSON *j = parse(json, n, err);
    if (!j) return CT_STATUS_BAD_RESPONSE;
    ct_status rc = feature_from(j, f, err);
    cJSON_Delete(j);
    return rc;
}

ct_status ct_np_parse_features(const char *json, size_t n, ct_np_feature **fs, int *count, ct_err *err) {
    *fs = NULL;
    *count = 0;
    cJSON *j = parse(json, n, err);
    if (!j) return CT_STATUS_BAD_RESPONSE;
    ct_status rc = CT_OK;
    if (!cJSON_IsArray(j)) rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "expected an array of features, found %s", type_name_of(j));
    int m = rc ? 0 : cJSON_GetArraySize(j);
    if (m > 0 && !(*fs = calloc((size_t)m, sizeof **fs))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; !rc && i < m; i++) {
        rc = feature_from(cJSON_GetArrayItem(j, i), &(*fs)[i], err);
        if (rc) ct_err_where(err, "item of the batch response");
        else (*count)++;
    }
    if (rc) {
        for (int i = 0; i < *count; i++) ct_np_feature_free(&(*fs)[i]);
        free(*fs);
        *fs = NULL;
        *count = 0;
    }
    cJSON_Delete(j);
    return rc;
}

ct_status ct_np_parse_search(const char *json, size_t n, ct_np_hit **hits, int *count, int *has_more,
                             int *next_offset, ct_err *err) {
    *hits = NULL;
    *count = *has_more = 0;
    *next_offset = -1;
    cJSON *j = parse(json, n, err);
    if (!j) return CT_STATUS_BAD_RESPONSE;
    ct_status rc = CT_OK;
    const cJSON *res = get(j, "results");
    if (!cJSON_IsArray(res)) rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "search response 'results' is %s; expected an array", type_name_of(res));
    int m = rc ? 0 : cJSON_GetArraySize(res);
    if (m > 0 && !(*hits = calloc((size_t)m, sizeof **hits))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; !rc && i < m; i++) {
        const cJSON *r = cJSON_GetArrayItem(res, i);
        ct_np_hit *h = &(*hits)[*count];
        if (!cJSON_IsObject(r) || read_index(get(r, "index"), &h->index) || !cJSON_IsString(get(r, "layer")) ||
            !cJSON_IsString(get(r, "modelId"))) {
            rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "search result %d lacks modelId, layer or a valid index", i + 1);
            break;
        }
        h->model_id = dup_str(get(r, "modelId"));
        h->source_id = dup_str(get(r, "layer"));
        h->description = strdup(cJSON_IsString(get(r, "description")) ? get(r, "description")->valuestring : "");
        h->type_name = dup_str(get(r, "typeName"));
        h->cosine = num_or_nan(get(r, "cosine_similarity"));
        (*count)++;
        if (!h->model_id || !h->source_id || !h->description) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    if (!rc) {
        *has_more = cJSON_IsTrue(get(j, "hasMore"));
        const cJSON *no = get(j, "nextOffset");
        if (*has_more && cJSON_IsNumber(no) && no->valuedouble >= 0 && no->valuedouble < 1e9) *next_offset = (int)no->valuedouble;
        else if (*has_more) *next_offset = -1;
    }
    if (rc) {
        ct_np_hits_free(*hits, *count);
        *hits = NULL;
        *count = 0;
    }
    cJSON_Delete(j);
    return rc;
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static void add_logits(cJSON *o, const char *skey, const char *vkey, const ct_np_logit *l, int n) {
    cJSON *s = cJSON_AddArrayToObject(o, skey), *v = cJSON_AddArrayToObject(o, vkey);
    for (int i = 0; s && v && i < n; i++) {
        cJSON_AddItemToArray(s, cJSON_CreateString(l[i].token));
        cJSON_AddItemToArray(v, num_or_null(l[i].value));
    }
}

char *ct_np_feature_json(const ct_np_feature *f) {
    cJSON *o = cJSON_CreateObject();
    char idx[32];
    snprintf(idx, sizeof idx, "%.0f", f->index);
    cJSON_AddStringToObject(o, "modelId", f->model_id);
    cJSON_AddStringToObject(o, "layer", f->source_id);
    cJSON_AddStringToObject(o, "index", idx);
    cJSON_AddItemToObject(o, "frac_nonzero", num_or_null(f->density));
    cJSON_AddItemToObject(o, "maxActApprox", num_or_null(f->max_act));
    add_logits(o, "pos_str", "pos_values", f->pos, f->n_pos);
    add_logits(o, "neg_str", "neg_values", f->neg, f->n_neg);
    cJSON *ex = cJSON_AddArrayToObject(o, "explanations");
    for (int i = 0; ex && i < f->n_expl; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "description", f->expl[i].description);
        cJSON_AddItemToObject(e, "typeName", f->expl[i].type_name ? cJSON_CreateString(f->expl[i].type_name) : cJSON_CreateNull());
        cJSON_AddItemToObject(e, "explanationModelName",
                              f->expl[i].model_name ? cJSON_CreateString(f->expl[i].model_name) : cJSON_CreateNull());
        cJSON_AddItemToArray(ex, e);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

void ct_np_feature_free(ct_np_feature *f) {
    if (!f) return;
    for (int i = 0; i < f->n_expl; i++) {
        free(f->expl[i].description);
        free(f->expl[i].type_name);
        free(f->expl[i].model_name);
    }
    for (int i = 0; i < f->n_pos; i++) free(f->pos[i].token);
    for (int i = 0; i < f->n_neg; i++) free(f->neg[i].token);
    free(f->expl);
    free(f->pos);
    free(f->neg);
    free(f->model_id);
    free(f->source_id);
    free(f->label);
    memset(f, 0, sizeof *f);
}

void ct_np_hits_free(ct_np_hit *h, int n) {
    for (int i = 0; h && i < n; i++) {
        free(h[i].model_id);
        free(h[i].source_id);
        free(h[i].description);
        free(h[i].type_name);
    }
    free(h);
}

// ---- client -----------------------------------------------------------------

int ct_offline_env(void) {
    const char *names[] = {"CTRACE_OFFLINE", "HF_HUB_OFFLINE"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(names[i]);
        if (v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0))
            return 1;
    }
    return 0;
}

void ct_np_client_init(ct_np_client *c) {
    memset(c, 0, sizeof *c);
    const char *e = getenv("CTRACE_NEURONPEDIA_URL");
    ct_url_base(c->base_url, sizeof c->base_url, e && *e ? e : "https://www.neuronpedia.org");
    if ((e = getenv("NEURONPEDIA_API_KEY")) && *e) snprintf(c->auth, sizeof c->auth, "x-api-key: %s", e);
    c->chunk = 128;
    c->use_cache = 1;
    c->offline = ct_offline_env();
    c->http = ct_http_defaults();
    c->http.concurrency = 4;
    c->http.max_body = (int64_t)16 << 20;   // a feature with all its activations is well under 1 MB
}

static void key_name(const ct_np_key *k, char *out, size_t n) {
    snprintf(out, n, "%s/%s/%.0f", k->model_id, k->source_id, k->index);
}

static ct_status check_key(const ct_np_key *k, ct_err *err) {
    if (!k->model_id || !*k->model_id || !k->source_id || !*k->source_id)
        return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia: model and source ids must be non-empty strings");
    if (!(k->index >= 0 && k->index <= 9007199254740992.0) || k->index != floor(k->index))
        return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia: feature index %g; expected a non-negative integer", k->index);
    return CT_OK;
}

static void cache_key(const ct_np_client *c, const ct_np_key *k, char *out, size_t n) {
    char name[600];
    key_name(k, name, sizeof name);
    snprintf(out, n, "neuronpedia-feature %s %s", c->base_url, name);
}

static ct_status cache_open(ct_np_client *c, ct_err *err) {
    if (c->cache.max_bytes) return CT_OK;
    return ct_cache_open(&c->cache, c->cache.dir[0] ? c->cache.dir : NULL, 0, err);
}

// A cached feature, or NOT_FOUND.
static ct_status from_cache(ct_np_client *c, const ct_np_key *k, ct_np_feature *out) {
    if (!c->use_cache || cache_open(c, NULL)) return CT_STATUS_NOT_FOUND;
    char key[1200], *data;
    size_t n;
    cache_key(c, k, key, sizeof key);
    if (ct_cache_get(&c->cache, key, &data, &n, NULL)) return CT_STATUS_NOT_FOUND;
    ct_status rc = ct_np_parse_feature(data, n, out, NULL);
    free(data);
    return rc ? CT_STATUS_NOT_FOUND : CT_OK;
}

static void to_cache(ct_np_client *c, const ct_np_key *k, const ct_np_feature *f) {
    if (!c->use_cache || cache_open(c, NULL)) return;
    char key[1200], *s = ct_np_feature_json(f);
    cache_key(c, k, key, sizeof key);
    if (s) ct_cache_put(&c->cache, key, s, strlen(s), NULL);   // a failed write only costs a refetch
    free(s);
}

static ct_status offline_miss(ct_np_client *c, const ct_np_key *k, ct_err *err) {
    char name[600];
    key_name(k, name, sizeof name);
    return ct_fail(err, CT_STATUS_OFFLINE, "neuronpedia: %s is not in the cache (%s) and offline mode is on "
                   "(CTRACE_OFFLINE or HF_HUB_OFFLINE)", name, c->use_cache ? c->cache.dir : "cache disabled");
}

ct_status ct_np_get_feature(ct_np_client *c, const ct_np_key *k, ct_np_feature *out, ct_err *err) {
    memset(out, 0, sizeof *out);
    ct_status rc = check_key(k, err);
    if (rc) return rc;
    if (from_cache(c, k, out) == CT_OK) return CT_OK;
    if (c->offline) return offline_miss(c, k, err);
    char url[2048];
    snprintf(url, sizeof url, "%s/api/feature/", c->base_url);
    char idx[32];
    snprintf(idx, sizeof idx, "%.0f", k->index);
    if (ct_url_escape(url, sizeof url, k->model_id, 0) || ct_url_escape(url, sizeof url, "/", 1) ||
        ct_url_escape(url, sizeof url, k->source_id, 0) || ct_url_escape(url, sizeof url, "/", 1) ||
        ct_url_escape(url, sizeof url, idx, 0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia: ids too long");
    ct_http_req r = {.method = "GET", .url = url, .accept = "application/json", .auth = c->auth[0] ? c->auth : NULL,
                     .auth_prefix = c->base_url};
    rc = ct_http_perform(&r, 1, &c->http);
    c->requests += r.attempts;
    if (rc) {
        char name[600];
        key_name(k, name, sizeof name);
        rc = ct_fail(err, rc, "neuronpedia: %s: %s", name, r.err.msg);
    } else if ((rc = ct_np_parse_feature(r.body_out, r.body_out_len, out, err))) {
        char name[600], msg[sizeof err->msg];
        key_name(k, name, sizeof name);
        snprintf(msg, sizeof msg, "%s", err->msg);
        ct_fail(err, rc, "neuronpedia: %s: %s (from %s)", name, msg, url);
    } else {
        to_cache(c, k, out);
    }
    ct_http_req_free(&r);
    return rc;
}

ct_status ct_np_get_features(ct_np_client *c, const ct_np_key *keys, int n, ct_np_feature *out, ct_status *st,
                             ct_err *errs, ct_err *err) {
    if (n < 0) return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia: %d features asked for", n);
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        st[i] = CT_STATUS_NOT_FOUND;
        if (errs) errs[i] = (ct_err){0};
        ct_status rc = check_key(&keys[i], err);
        if (rc) return rc;
    }
    // misses: indices of the keys the cache does not answer
    int *miss = malloc((size_t)(n ? n : 1) * sizeof *miss), n_miss = 0;
    if (!miss) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; i < n; i++) {
        if (from_cache(c, &keys[i], &out[i]) == CT_OK) st[i] = CT_OK;
        else if (c->offline) {
            ct_err e;
            st[i] = offline_miss(c, &keys[i], &e);
            if (errs) errs[i] = e;
        } else miss[n_miss++] = i;
    }
    int chunk = c->chunk > 0 ? c->chunk : 128, n_req = (n_miss + chunk - 1) / chunk;
    ct_http_req *reqs = calloc((size_t)(n_req ? n_req : 1), sizeof *reqs);
    char **bodies = calloc((size_t)(n_req ? n_req : 1), sizeof *bodies);
    char url[600];
    snprintf(url, sizeof url, "%s/api/features", c->base_url);
    ct_status rc = reqs && bodies ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    for (int q = 0; !rc && q < n_req; q++) {
        cJSON *arr = cJSON_CreateArray();
        for (int m = q * chunk; m < n_miss && m < (q + 1) * chunk; m++) {
            const ct_np_key *k = &keys[miss[m]];
            cJSON *it = cJSON_CreateObject();
            cJSON_AddStringToObject(it, "modelId", k->model_id);
            cJSON_AddStringToObject(it, "layer", k->source_id);
            cJSON_AddNumberToObject(it, "index", k->index);
            if (m == q * chunk) cJSON_AddNumberToObject(it, "maxActsToReturn", 1);
            cJSON_AddItemToArray(arr, it);
        }
        bodies[q] = cJSON_PrintUnformatted(arr);
        cJSON_Delete(arr);
        if (!bodies[q]) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        reqs[q] = (ct_http_req){.method = "POST", .url = url, .body = bodies[q], .body_len = bodies[q] ? strlen(bodies[q]) : 0,
                                .accept = "application/json", .auth = c->auth[0] ? c->auth : NULL, .auth_prefix = c->base_url};
    }
    if (!rc && n_req) ct_http_perform(reqs, n_req, &c->http);
    for (int q = 0; !rc && q < n_req; q++) {
        ct_http_req *r = &reqs[q];
        c->requests += r->attempts;
        ct_np_feature *got = NULL;
        int n_got = 0;
        ct_err e = r->err;
        ct_status qrc = r->rc;
        if (!qrc) {
            qrc = ct_np_parse_features(r->body_out, r->body_out_len, &got, &n_got, &e);
            if (qrc) ct_err_where(&e, url);
        }
        int *taken = calloc((size_t)(n_got ? n_got : 1), sizeof *taken);
        if (!taken) qrc = ct_fail(&e, CT_STATUS_NO_MEMORY, "out of memory");
        for (int m = q * chunk; m < n_miss && m < (q + 1) * chunk; m++) {
            int i = miss[m];
            const ct_np_key *k = &keys[i];
            char name[600];
            key_name(k, name, sizeof name);
            if (qrc) {
                st[i] = qrc;
                if (errs) ct_fail(&errs[i], qrc, "neuronpedia: %s: %s", name, e.msg);
                continue;
            }
            for (int g = 0; g < n_got; g++) {   // order is not guaranteed: match (model, layer, index)
                ct_np_feature *f = got[g].model_id ? &got[g] : &out[taken[g]];   // a key listed twice
                if (f->index != k->index || strcmp(f->source_id, k->source_id) || strcmp(f->model_id, k->model_id)) continue;
                if (f == &got[g]) {
                    out[i] = got[g];
                    memset(&got[g], 0, sizeof got[g]);
                    taken[g] = i;
                    to_cache(c, k, &out[i]);
                    st[i] = CT_OK;
                } else {
                    char *js = ct_np_feature_json(f);
                    st[i] = js ? ct_np_parse_feature(js, strlen(js), &out[i], NULL) : CT_STATUS_NO_MEMORY;
                    free(js);
                }
                break;
            }
            if (st[i] && errs) ct_fail(&errs[i], CT_STATUS_NOT_FOUND, "neuronpedia: %s: not found (left out of the batch response)", name);
        }
        for (int g = 0; g < n_got; g++) ct_np_feature_free(&got[g]);
        free(got);
        free(taken);
    }
    for (int q = 0; q < n_req && reqs; q++) {
        ct_http_req_free(&reqs[q]);
        if (bodies) free(bodies[q]);
    }
    free(reqs);
    free(bodies);
    free(miss);
    if (c->use_cache && !c->offline && n_miss && !cache_open(c, NULL)) ct_cache_trim(&c->cache, NULL, NULL);
    return rc;
}

ct_status ct_np_search(ct_np_client *c, const char *model_id, const char *const *layers, int n_layers,
                       const char *query, int offset, ct_np_hit **hits, int *count, int *has_more,
                       int *next_offset, ct_err *err) {
    *hits = NULL;
    *count = *has_more = 0;
    *next_offset = -1;
    if (c->offline)
        return ct_fail(err, CT_STATUS_OFFLINE, "neuronpedia: explanation search needs the network and offline mode is on");
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "modelId", model_id);
    cJSON *ls = cJSON_AddArrayToObject(b, "layers");
    for (int i = 0; i < n_layers; i++) cJSON_AddItemToArray(ls, cJSON_CreateString(layers[i]));
    cJSON_AddStringToObject(b, "query", query);
    cJSON_AddNumberToObject(b, "offset", offset);
    char *body = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    if (!body) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    char url[600];
    snprintf(url, sizeof url, "%s/api/explanation/search", c->base_url);
    ct_http_req r = {.method = "POST", .url = url, .body = body, .body_len = strlen(body), .accept = "application/json",
                     .auth = c->auth[0] ? c->auth : NULL, .auth_prefix = c->base_url};
    ct_status rc = ct_http_perform(&r, 1, &c->http);
    c->requests += r.attempts;
    if (rc) rc = ct_fail(err, rc, "neuronpedia search '%s': %s", query, r.err.msg);
    else if ((rc = ct_np_parse_search(r.body_out, r.body_out_len, hits, count, has_more, next_offset, err)))
        ct_err_where(err, url);
    ct_http_req_free(&r);
    free(body);
    return rc;
}

// ---- graphs ---------------------------------------------------------------------------------

// A POST of a JSON object body to base/api/path; *out the parsed response (cJSON_Delete).
static ct_status np_post(ct_np_client *c, const char *path, cJSON *body, cJSON **out, const char *what, ct_err *err) {
    char *text = cJSON_PrintUnformatted(body), url[700];
    cJSON_Delete(body);
    if (!text) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    snprintf(url, sizeof url, "%s/api/%s", c->base_url, path);
    ct_http_req r = {.method = "POST", .url = url, .body = text, .body_len = strlen(text), .accept = "application/json",
                     .auth = c->auth[0] ? c->auth : NULL, .auth_prefix = c->base_url};
    ct_status rc = ct_http_perform(&r, 1, &c->http);
    c->requests += r.attempts;
    if (rc) rc = ct_fail(err, rc, "neuronpedia %s: %s", what, r.err.msg);
    else if (!(*out = cJSON_ParseWithLength(r.body_out, r.body_out_len)))
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "neuronpedia %s: the response is not JSON (from %s)", what, url);
    ct_http_req_free(&r);
    free(text);
    return rc;
}

ct_status ct_np_upload_graph(ct_np_client *c, const char *slug, const char *json, size_t n, char **page, ct_err *err) {
    *page = NULL;
    if (!c->auth[0])
        return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia upload: no API key; set NEURONPEDIA_API_KEY (your key from "
                       "neuronpedia.org, account settings)");
    if (c->offline) return ct_fail(err, CT_STATUS_OFFLINE, "neuronpedia upload: offline mode is on");
    if (n < 1024 || n > ((size_t)100 << 20))
        return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia upload: a graph JSON of %zu bytes; Neuronpedia takes 1 KiB to "
                       "100 MiB", n);
    // Neuronpedia's save-to-db takes [A-Za-z0-9_-] only: refused here, before the bytes go out
    if (!*slug) return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia upload: an empty slug");
    for (const char *p = slug; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-'))
            return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia upload: slug '%.64s' has '%c'; Neuronpedia takes letters, "
                           "digits, '_' and '-'", slug, *p);
    // 1. a signed URL for the bytes
    char filename[300];
    snprintf(filename, sizeof filename, "%s.json", slug);
    cJSON *b = cJSON_CreateObject(), *res = NULL;
    cJSON_AddStringToObject(b, "filename", filename);
    cJSON_AddNumberToObject(b, "contentLength", (double)n);
    cJSON_AddStringToObject(b, "contentType", "application/json");
    ct_status rc = np_post(c, "graph/signed-put", b, &res, "upload (signed-put)", err);
    const cJSON *url = get(res, "url"), *id = get(res, "putRequestId");
    if (!rc && (!cJSON_IsString(url) || !(cJSON_IsString(id) || cJSON_IsNumber(id))))
        rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "neuronpedia upload: signed-put answered without url and putRequestId");
    // 2. the bytes to that URL (no API key: it is another server's)
    if (!rc) {
        // up to 100 MiB: no limit on the attempt (min_rate counts only bytes received), one retry
        ct_http_opts o = c->http;
        o.timeout_ms = 0, o.min_rate = 0, o.max_retries = 1;
        ct_http_req r = {.method = "PUT", .url = url->valuestring, .body = json, .body_len = n};
        rc = ct_http_perform(&r, 1, &o);
        c->requests += r.attempts;
        if (rc) {   // the message names the URL without its query: the signature is a write grant
            char where[512];
            snprintf(where, sizeof where, "%s", url->valuestring);
            where[strcspn(where, "?")] = 0;
            rc = ct_fail(err, rc, "neuronpedia upload (PUT to %s): HTTP %ld", where, r.status);
        }
        ct_http_req_free(&r);
    }
    // 3. the graph recorded
    if (!rc) {
        cJSON *s = cJSON_CreateObject(), *done = NULL;
        cJSON_AddItemToObject(s, "putRequestId", cJSON_Duplicate(id, 1));
        rc = np_post(c, "graph/save-to-db", s, &done, "upload (save-to-db)", err);
        const cJSON *u = get(done, "url");
        if (!rc && !cJSON_IsString(u))
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "neuronpedia upload: save-to-db answered without the graph's url");
        if (!rc && !(*page = strdup(u->valuestring))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
        cJSON_Delete(done);
    }
    cJSON_Delete(res);
    return rc;
}

ct_status ct_np_get_graph(ct_np_client *c, const char *model_id, const char *slug, char **json, size_t *n, ct_err *err) {
    *json = NULL;
    *n = 0;
    char url[2048], key[2100];
    snprintf(url, sizeof url, "%s/api/graph/", c->base_url);
    if (ct_url_escape(url, sizeof url, model_id, 0) || ct_url_escape(url, sizeof url, "/", 1) ||
        ct_url_escape(url, sizeof url, slug, 0))
        return ct_fail(err, CT_STATUS_BAD_ARG, "neuronpedia: graph ids too long");
    snprintf(key, sizeof key, "neuronpedia-graph %s", url);   // the escaped path: one key per graph
    if (c->use_cache && !cache_open(c, NULL) && ct_cache_get(&c->cache, key, json, n, NULL) == CT_OK) return CT_OK;
    if (c->offline)
        return ct_fail(err, CT_STATUS_OFFLINE, "neuronpedia: graph %s/%s is not in the cache and offline mode is on", model_id,
                       slug);
    ct_http_req r = {.method = "GET", .url = url, .accept = "application/json", .auth = c->auth[0] ? c->auth : NULL,
                     .auth_prefix = c->base_url};
    ct_status rc = ct_http_perform(&r, 1, &c->http);
    c->requests += r.attempts;
    cJSON *meta = rc ? NULL : cJSON_ParseWithLength(r.body_out, r.body_out_len);
    const cJSON *u = get(meta, "url");
    if (rc) rc = ct_fail(err, rc, "neuronpedia: graph %s/%s: %s", model_id, slug, r.err.msg);
    else if (!cJSON_IsString(u)) rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "neuronpedia: graph %s/%s: no url in %s", model_id, slug, url);
    ct_http_req_free(&r);
    if (!rc) {   // the JSON itself, from where Neuronpedia keeps it (up to 100 MiB)
        ct_http_opts o = c->http;   // up to 100 MiB: bounded by min_rate while bytes flow, not by timeout_ms
        if (o.max_body < ((int64_t)128 << 20)) o.max_body = (int64_t)128 << 20;
        o.timeout_ms = 0;
        ct_http_req g = {.method = "GET", .url = u->valuestring};
        rc = ct_http_perform(&g, 1, &o);
        c->requests += g.attempts;
        cJSON *check = rc ? NULL : cJSON_ParseWithLength(g.body_out, g.body_out_len);
        if (rc) {
            rc = ct_fail(err, rc, "neuronpedia: graph %s/%s: %s", model_id, slug, g.err.msg);
        } else if (!cJSON_IsObject(check) || !cJSON_IsArray(get(check, "nodes")) || !g.body_out) {
            // nothing cached but a graph JSON: a portal page or a lying server is not kept
            rc = ct_fail(err, CT_STATUS_BAD_FORMAT, "neuronpedia: graph %s/%s: the file is not a graph JSON", model_id, slug);
        } else {
            *json = g.body_out, *n = g.body_out_len;
            g.body_out = NULL;
            if (c->use_cache && !cache_open(c, NULL)) ct_cache_put(&c->cache, key, *json, *n, NULL);   // a failed write costs a refetch
        }
        cJSON_Delete(check);
        ct_http_req_free(&g);
    }
    cJSON_Delete(meta);
    return rc;
}
