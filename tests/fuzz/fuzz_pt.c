// libFuzzer target: PyTorch .pt files (a zip holding a pickle and storages) read as
// circuit-tracer's saved graphs. An input starting with 'P' is a pickle run on its own (every
// mutation of an archive's pickle would fail the CRC check first): 'P', a count c (its low 4
// bits), c little-endian 16-bit storage sizes (their low 14 bits), then data.pkl; the archive "a/data.pkl" + "a/data/<i>"
// (storages of those sizes, bytes i, i+1, ...) is made here and parsed.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/pt.h"
#include "formats/zip.h"
#include "trace/graph.h"

static void parse(const uint8_t *data, size_t size) {
    ct_err err;
    ct_pt *p = NULL;
    if (ct_pt_parse(&p, data, size, &err) == CT_OK) {
        ct_graph *g = NULL;
        if (ct_graph_from_pt(&g, p, "fuzz.pt", &err) == CT_OK) ct_graph_free(g);
        ct_pt_free(p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2 || data[0] != 'P') {
        parse(data, size);
        return 0;
    }
    size_t c = data[1] & 15, at = 2 + 2 * c;   // at most 15 storages of up to 16 KiB: fast runs
    if (at > size) return 0;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return 0;
    ct_zip_writer w;
    ct_zip_writer_init(&w, f);
    ct_zip_begin(&w, "a/data.pkl", size - at), ct_zip_put(&w, data + at, size - at), ct_zip_end(&w);
    static uint8_t bytes[0x4000];
    for (size_t i = 0; i < c; i++) {
        size_t n = (size_t)(data[2 + 2 * i] | data[3 + 2 * i] << 8) & 0x3FFF;
        char name[32];
        for (size_t k = 0; k < n; k++) bytes[k] = (uint8_t)(i + k);
        snprintf(name, sizeof name, "a/data/%zu", i);
        ct_zip_begin(&w, name, n), ct_zip_put(&w, bytes, n), ct_zip_end(&w);
    }
    ct_err err;
    int ok = ct_zip_finish(&w, &err) == CT_OK;
    fclose(f);
    if (ok) parse((const uint8_t *)buf, len);
    free(buf);
    return 0;
}
