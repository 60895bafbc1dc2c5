// libFuzzer target: Hugging Face config.json texts (every family, nested text_config, layer_types,
// rope_scaling and rope_parameters) against one tiny Gemma-3 checkpoint in a temporary directory
// (its tensors also carry Llama's, Gemma-2's and Qwen3's names). Accepted models run a forward pass.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "model/model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64] = "/tmp/ctrace-fuzz-hf-XXXXXX";

static void cleanup(void) {
    char p[128];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
}

// d 16, d_mlp 32, 2 layers, 4 heads of 8, 2 key/value heads, vocabulary 40
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    if (!mkdtemp(dir)) abort();
    atexit(cleanup);
    static const struct { const char *name; int64_t d0, d1; } per_layer[] = {
        {"input_layernorm.weight", 16, 0}, {"self_attn.q_proj.weight", 32, 16}, {"self_attn.k_proj.weight", 16, 16},
        {"self_attn.v_proj.weight", 16, 16}, {"self_attn.o_proj.weight", 16, 32}, {"self_attn.q_norm.weight", 8, 0},
        {"self_attn.k_norm.weight", 8, 0}, {"post_attention_layernorm.weight", 16, 0},
        {"pre_feedforward_layernorm.weight", 16, 0}, {"post_feedforward_layernorm.weight", 16, 0},
        {"mlp.gate_proj.weight", 32, 16}, {"mlp.up_proj.weight", 32, 16}, {"mlp.down_proj.weight", 16, 32}};
    enum { N_PER = sizeof per_layer / sizeof *per_layer, N = 2 * N_PER + 2 };
    ct_st_entry e[N];
    char names[N][96];
    static float w[40 * 16];   // every tensor reads from this (the largest is the embedding)
    for (int i = 0; i < 40 * 16; i++) w[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    int n = 0;
    snprintf(names[n], 96, "model.embed_tokens.weight");
    e[n] = (ct_st_entry){.name = names[n], .dtype = CT_DT_F32, .ndim = 2, .shape = {40, 16}, .data = w}, n++;
    snprintf(names[n], 96, "model.norm.weight");
    e[n] = (ct_st_entry){.name = names[n], .dtype = CT_DT_F32, .ndim = 1, .shape = {16}, .data = w}, n++;
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < N_PER; k++) {
            snprintf(names[n], 96, "model.layers.%d.%s", l, per_layer[k].name);
            e[n] = (ct_st_entry){.name = names[n], .dtype = CT_DT_BF16, .ndim = per_layer[k].d1 ? 2 : 1,
                                 .shape = {per_layer[k].d0, per_layer[k].d1}, .data = w};
            n++;
        }
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ct_err err;
    if (ct_safetensors_write(NULL, path, e, n, NULL, 0, &err)) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ct_model *m = NULL;
    ct_err err;
    if (ct_model_load_hf_config(NULL, &m, dir, (const char *)data, size, &err) == CT_OK) {
        int tok[4] = {1, 2, 3, 4};
        float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
        if (logits) ct_model_forward(m, tok, 4, NULL, NULL, logits, 0, &err);
        free(logits);
        ct_model_free(m);
    }
    return 0;
}
