// libFuzzer target: graph JSON (Neuronpedia's and circuit-tracer's format, as a published graph
// arrives from a server), read as ct.load_graph reads it, then written back.
#include <stdlib.h>

#include "trace/graph.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ct_err err;
    ct_graph *g = NULL;
    if (ct_graph_parse_json(&g, (const char *)data, size, "fuzz.json", &err) == CT_OK) {
        char *out = NULL;
        size_t n = 0;
        if (ct_graph_json(g, NULL, &out, &n, &err) == CT_OK) free(out);
        ct_graph_free(g);
    }
    return 0;
}
