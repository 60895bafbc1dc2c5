// edges.c - a graph of a model at its real size checked edge by edge against frozen perturbations
// of that model (tests/c/edges.h, as tests/c/test_attribution.c does on tiny models): sampled
// feature columns, the error nodes of three positions at every layer, every token column, each
// against every feature and logit row. Prints TAP lines and the worst differences; exits 1 when an
// edge is off.
//
//   build/bench/edges MODEL TRANSCODERS PROMPT [N_FEATURES] [FEATURE_ATOL] [FEATURE_RTOL]
//     MODEL, TRANSCODERS   a model directory (or file) and a transcoder set's directory or config
//     N_FEATURES           feature columns sampled (60)
//     FEATURE_ATOL, _RTOL  feature targets: |measured - edge| <= atol + rtol |edge| (5e-4, 1e-3)
// The graph: max_feature_nodes 7,500, batch 256, as circuit-tracer's defaults.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edges.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: edges MODEL TRANSCODERS PROMPT [N_FEATURES] [FEATURE_ATOL] [FEATURE_RTOL]\n");
        return 2;
    }
    edge_check ck = {argc > 4 ? atoi(argv[4]) : 60, 0, 256, 7500, 3, argc > 5 ? atof(argv[5]) : 5e-4,
                     argc > 6 ? atof(argv[6]) : 1e-3};
    ct_model *m = NULL;
    ct_transcoders *tc = NULL;
    ct_err err = {0};
    int *ids = NULL, n = 0;
    double t0 = ct_now();
    ct_status rc = ct_model_load(NULL, &m, argv[1], &err);
    if (!rc) rc = ct_transcoders_load(NULL, &tc, argv[2], &err);
    if (!rc) rc = ct_prompt_text(m, argv[3], strlen(argv[3]), &ids, &n, &err);
    ok(rc == CT_OK, "load %s and %s, tokenize the prompt (%s)", argv[1], argv[2], rc ? err.msg : "ok");
    if (!rc) {
        check_graph("edges", m, tc, ids, n, &ck);
        printf("# %.1f s in all\n", ct_now() - t0);
    }
    free(ids);
    ct_transcoders_free(tc);
    ct_model_free(m);
    return check_done();
}
