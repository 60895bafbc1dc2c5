// test_llama2c.c - stories260K: the llama2.c checkpoint and tokenizer against llama2.c's own
// expected greedy output (greedy_200.txt), and rejection of damaged checkpoints.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/fileio.h"
#include "model/model.h"

static const char *shared_models(void) {
    const char *s = getenv("CTRACE_MODELS");
    return s ? s : "../shared/models";
}

int main(void) {
    char path[1024];
    ct_err err = {0};
    ct_model *m = NULL;
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", shared_models());
    ct_status rc = ct_model_load(NULL, &m, path, &err);
    ok(rc == CT_OK, "load %s (%s)", path, rc ? err.msg : "ok");
    if (rc) return check_done();
    ok(m->cfg.d_model == 64 && m->cfg.n_layers == 5 && m->cfg.n_heads == 8 && m->cfg.n_kv_heads == 4 &&
       m->cfg.vocab_size == 512 && m->cfg.d_mlp == 172 && m->cfg.tied, "config matches the README header");
    ok(m->tok && ct_tokenizer_vocab_size(m->tok) == 512, "tok512.bin loaded beside the checkpoint");

    // greedy decoding from BOS, 200 tokens, byte for byte
    int bos = 1, out[200], n_out = 0;
    ct_gen_opts o = {.max_tokens = 200, .temperature = 0.0f, .top_p = 1.0f, .stop_at_eos = 1};
    rc = ct_model_generate(m, &bos, 1, &o, out, &n_out, &err);
    ok(rc == CT_OK, "generate 200 greedy tokens (%s)", rc ? err.msg : "ok");
    int ids[201];
    ids[0] = bos;
    memcpy(ids + 1, out, sizeof(int) * (size_t)n_out);
    char *text = NULL, *want = NULL;
    size_t len = 0, want_len = 0;
    ct_tokenizer_decode(m->tok, ids, n_out + 1, 1, &text, &len, &err);
    snprintf(path, sizeof path, "%s/stories260K/greedy_200.txt", shared_models());
    ok(ct_read_file(NULL, path, &want, &want_len, 0, &err) == CT_OK, "read greedy_200.txt");
    ok(text && want && len == want_len && memcmp(text, want, len) == 0,
       "greedy text equals greedy_200.txt (%zu bytes vs %zu, %d tokens)", len, want_len, n_out);
    if (text && want && (len != want_len || memcmp(text, want, len))) printf("# got: %s\n", text);
    free(text);
    free(want);

    // the same prefix through one forward pass gives the same argmax at every position
    int T = 40;
    float *logits = malloc(sizeof(float) * (size_t)T * 512);
    rc = ct_model_forward(m, ids, T, NULL, NULL, logits, 1, &err);
    int agree = 1;
    for (int t = 0; t < T - 1 && rc == CT_OK; t++) {
        int best = ct_sample(logits + (size_t)t * 512, 512, 0.0f, 1.0f, NULL);
        if (best != ids[t + 1]) agree = 0;
    }
    ok(rc == CT_OK && agree, "batched forward over 40 positions predicts the same greedy tokens");
    free(logits);

    // seeded sampling is repeatable
    int a[50], b[50], na, nb;
    ct_gen_opts so = {.max_tokens = 50, .temperature = 0.9f, .top_p = 0.9f, .seed = 42};
    ct_model_generate(m, &bos, 1, &so, a, &na, &err);
    ct_model_generate(m, &bos, 1, &so, b, &nb, &err);
    ok(na == nb && memcmp(a, b, sizeof(int) * (size_t)na) == 0, "same seed, same %d sampled tokens", na);
    so.seed = 43;
    ct_model_generate(m, &bos, 1, &so, b, &nb, &err);
    ok(na != nb || memcmp(a, b, sizeof(int) * (size_t)na) != 0, "another seed, another sample");

    // the same weights with a separate classifier (negative vocab_size, wcls appended) give
    // the same logits; a different classifier gives different ones
    void *map;
    size_t size;
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", shared_models());
    ct_map_file(NULL, path, &map, &size, &err);
    size_t extra = (size_t)m->cfg.vocab_size * m->cfg.d_model * sizeof(float);
    float *buf = malloc(size + extra);
    memcpy(buf, map, size);
    ((int32_t *)buf)[5] = -m->cfg.vocab_size;
    memcpy((char *)buf + size, m->embed.data, extra);
    ct_unmap_file(map, size);
    ct_model *u = NULL;
    rc = ct_model_parse_llama2c(&u, (const uint8_t *)buf, size + extra, &err);
    ok(rc == CT_OK && !u->cfg.tied && u->lm_head.data != u->embed.data, "unshared classifier parses (%s)", rc ? err.msg : "ok");
    float la[512], lb[512];
    if (!rc) {
        ct_model_forward(m, ids, 10, NULL, NULL, la, 0, &err);
        ct_model_forward(u, ids, 10, NULL, NULL, lb, 0, &err);
        ok(memcmp(la, lb, sizeof la) == 0, "a copied classifier gives identical logits");
        float *wcls = (float *)((char *)buf + size);
        for (size_t i = 0; i < (size_t)512 * 64; i++) wcls[i] *= 0.5f;
        ct_model_forward(u, ids, 10, NULL, NULL, lb, 0, &err);
        ok(fabsf(lb[7] - 0.5f * la[7]) < 1e-4f && lb[7] != la[7], "the classifier is read from the end of the file");
        ct_model_free(u);
    }
    free(buf);
    ct_model_free(m);
    return check_done();
}
