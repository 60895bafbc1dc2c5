// libFuzzer target: Neuronpedia response parsing (one feature, a batch, a search page), the
// Hugging Face address parser and the readers of the Hub's listings (a revision's description, a
// page of a folder's tree). The first byte picks the reader; the rest is its input. A name a
// listing reader accepts must be a relative path without '.' or '..' segments (a tree name: one
// segment): anything else aborts.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/hub.h"
#include "net/neuronpedia.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    ct_err err;
    switch (data[0] % 6) {
    case 0: {
        ct_np_feature f;
        if (ct_np_parse_feature(text, n, &f, &err) == CT_OK) {
            char *s = ct_np_feature_json(&f);   // the cache form must parse back
            ct_np_feature g;
            if (s && ct_np_parse_feature(s, strlen(s), &g, &err) != CT_OK) abort();
            if (s) ct_np_feature_free(&g);
            free(s);
            ct_np_feature_free(&f);
        }
        break;
    }
    case 1: {
        ct_np_feature *fs;
        int count;
        if (ct_np_parse_features(text, n, &fs, &count, &err) == CT_OK) {
            for (int i = 0; i < count; i++) ct_np_feature_free(&fs[i]);
            free(fs);
        }
        break;
    }
    case 2: {
        ct_np_hit *h;
        int count, more, next;
        if (ct_np_parse_search(text, n, &h, &count, &more, &next, &err) == CT_OK) ct_np_hits_free(h, count);
        break;
    }
    case 4:
    case 5: {
        ct_hub_names names = {0};
        char sha[41];
        int trusted, entries, tree = data[0] % 6 == 5;
        const char *folder = data[0] / 6 % 2 ? "sub/dir" : "";
        ct_status rc = tree ? ct_hub_parse_tree(text, n, "fuzz", folder, &names, &entries, &err)
                            : ct_hub_parse_revision(text, n, "fuzz", sha, &names, &trusted, &err);
        for (int i = 0; rc == CT_OK && i < names.n; i++) {
            const char *p = names.v[i];
            size_t k = strlen(p);
            if (!k || p[0] == '/' || p[k - 1] == '/' || strstr(p, "//") || strcmp(p, "..") == 0 || strcmp(p, ".") == 0 ||
                !strncmp(p, "../", 3) || !strncmp(p, "./", 2) || strstr(p, "/../") || strstr(p, "/./") ||
                (k >= 3 && !strcmp(p + k - 3, "/..")) || (k >= 2 && !strcmp(p + k - 2, "/.")) || (tree && strchr(p, '/')))
                abort();
            for (size_t c = 0; c < k; c++)
                if ((unsigned char)p[c] < 0x20) abort();
        }
        if (rc == CT_OK && !tree && strlen(sha) != 40) abort();
        ct_hub_names_free(&names);
        break;
    }
    default: {
        char *s = malloc(n + 1), repo[256], path[1024], rev[256];
        if (!s) return 0;
        memcpy(s, text, n);
        s[n] = 0;
        if (ct_hub_parse_uri(s, repo, path, rev, &err) == CT_OK && (strstr(path, "..") && strstr(path, "/../"))) abort();
        free(s);
    }
    }
    return 0;
}
