// neuronpedia.h - Neuronpedia's feature API: response parsing and a client with a cache.
//
// The parsers read one feature object (GET /api/feature/..., an item of POST /api/features, or
// ctrace's cached form, which is the batch item shape), a batch array, and a search page. They
// accept nulls wherever the server may send them and read numbers as doubles (indices reach
// ~4.8e9). Label = the first explanation of type np_max-act-logits or np_max-act, else the
// first explanation, else "".
#ifndef CT_NEURONPEDIA_H
#define CT_NEURONPEDIA_H

#include <stddef.h>

#include "net/cache.h"
#include "net/http.h"
#include "core/status.h"

typedef struct {
    char *description, *type_name, *model_name;   // the last two may be NULL
} ct_np_expl;

typedef struct {
    char *token;
    double value;
} ct_np_logit;

typedef struct {
    char *model_id, *source_id;
    double index;
    char *label;
    ct_np_expl *expl;
    int n_expl;
    ct_np_logit *pos, *neg;     // top positive / negative logits
    int n_pos, n_neg;
    double density, max_act;    // frac_nonzero, maxActApprox; NAN when null
} ct_np_feature;

typedef struct {
    char *model_id, *source_id, *description, *type_name;
    double index, cosine;
} ct_np_hit;

ct_status ct_np_parse_feature(const char *json, size_t n, ct_np_feature *f, ct_err *err);
ct_status ct_np_parse_features(const char *json, size_t n, ct_np_feature **fs, int *count, ct_err *err);
ct_status ct_np_parse_search(const char *json, size_t n, ct_np_hit **hits, int *count, int *has_more,
                             int *next_offset, ct_err *err);
// Compact JSON of f in the batch item shape (what the cache stores); NULL when out of memory.
char *ct_np_feature_json(const ct_np_feature *f);
void ct_np_feature_free(ct_np_feature *f);
void ct_np_hits_free(ct_np_hit *h, int n);

typedef struct {
    char base_url[512];     // CTRACE_NEURONPEDIA_URL or https://www.neuronpedia.org
    char auth[300];         // "x-api-key: <NEURONPEDIA_API_KEY>" or ""
    int chunk;              // features per batch request (default 128)
    int use_cache;          // default 1
    int offline;            // CTRACE_OFFLINE or HF_HUB_OFFLINE set: cache only
    ct_cache cache;         // dir "" = default
    ct_http_opts http;
    int requests;           // HTTP requests made (counted over the client's life)
} ct_np_client;

// Defaults from the environment.
void ct_np_client_init(ct_np_client *c);

typedef struct {
    const char *model_id, *source_id;
    double index;
} ct_np_key;

// One feature through GET /api/feature/{model}/{source}/{index}.
ct_status ct_np_get_feature(ct_np_client *c, const ct_np_key *k, ct_np_feature *out, ct_err *err);
// Many features through POST /api/features in chunks, c->http.concurrency requests at a time,
// after the cache. out[i] and st[i] (and errs[i] when errs is not NULL) per key; NOT_FOUND for
// features the server left out. Returns CT_OK, or a status when nothing could be asked at all.
ct_status ct_np_get_features(ct_np_client *c, const ct_np_key *keys, int n, ct_np_feature *out, ct_status *st,
                             ct_err *errs, ct_err *err);
// One page of POST /api/explanation/search (20 results).
ct_status ct_np_search(ct_np_client *c, const char *model_id, const char *const *layers, int n_layers,
                       const char *query, int offset, ct_np_hit **hits, int *count, int *has_more,
                       int *next_offset, ct_err *err);

// Uploads a graph JSON (json, n bytes) as Neuronpedia's own client does: POST
// /api/graph/signed-put, PUT of the bytes to the URL it gives, POST /api/graph/save-to-db. Needs
// the API key (NEURONPEDIA_API_KEY). *page (malloc'ed): the graph's page on Neuronpedia.
ct_status ct_np_upload_graph(ct_np_client *c, const char *slug, const char *json, size_t n, char **page, ct_err *err);
// A published graph's JSON: GET /api/graph/{model_id}/{slug}, then the url it names; cached like
// features (offline: from the cache only). *json (malloc'ed, NUL-terminated), *n bytes.
ct_status ct_np_get_graph(ct_np_client *c, const char *model_id, const char *slug, char **json, size_t *n, ct_err *err);

// 1 when offline mode is on in the environment (CTRACE_OFFLINE or HF_HUB_OFFLINE: 1/true/yes/on).
int ct_offline_env(void);

#endif
