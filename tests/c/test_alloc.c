// test_alloc.c - generation allocates nothing per token. The test is linked with
// -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free (Makefile), so every call the
// engine (the static libctrace.a) makes to them goes through the counters below. On
// stories260K, a random Llama-shaped model and a tiny Llama checkpoint stored in BF16 (its
// weights converted a tile at a time in the model's scratch), greedy and top-p: no allocation between one
// generated token's forward pass and the next, the same number of allocations for 4 tokens as
// for 60, an MLP callback calling ct_model_mlp inside the forward pass allocates nothing and
// gives the plain pass's logits, and passes over more or fewer positions after the scratch
// has grown give a fresh model's logits.
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model/model.h"
#include "tiny.h"

// ----------------------------------------------------------------------------
// Counting allocator

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

static atomic_long n_allocs;   // malloc, calloc and realloc calls since the program started
static atomic_long n_frees;    // free calls with a pointer

void *__wrap_malloc(size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_realloc(p, n);
}

void __wrap_free(void *p) {
    if (p) atomic_fetch_add(&n_frees, 1);
    __real_free(p);
}

// Calls to malloc, calloc, realloc and free so far.
static long mem_calls(void) { return atomic_load(&n_allocs) + atomic_load(&n_frees); }

// ----------------------------------------------------------------------------
// Models

static const char *shared_models(void) {
    const char *s = getenv("CTRACE_MODELS");
    return s ? s : "../shared/models";
}

static ct_model *load_stories(void) {
    char path[1024];
    ct_err err = {0};
    ct_model *m = NULL;
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", shared_models());
    if (ct_model_load(NULL, &m, path, &err)) printf("# %s\n", err.msg);
    return m;
}

static ct_model *load_random(void) {
    ct_config c = {0};
    c.d_model = 48, c.n_layers = 3, c.n_heads = 6, c.n_kv_heads = 2, c.head_dim = 8, c.d_mlp = 96;
    c.vocab_size = 300, c.max_seq_len = 256, c.norm = CT_NORM_RMS, c.norm_eps = 1e-5f, c.rope = CT_ROPE_HALF;
    c.rope_theta = 10000.0f, c.attn_scale = 1.0f / sqrtf(8.0f), c.gated_mlp = 1, c.act = CT_ACT_SILU;
    c.embed_scale = 1.0f, c.bos_id = 0, c.eos_id = 1;
    ct_err err = {0};
    ct_model *m = NULL;
    if (ct_model_random(&m, &c, 7, &err)) printf("# %s\n", err.msg);
    return m;
}

static char bf16_dir[64];   // a tiny Llama checkpoint in BF16 (written by main)

static ct_model *load_bf16(void) {
    ct_err err = {0};
    ct_model *m = NULL;
    if (ct_model_load(NULL, &m, bf16_dir, &err)) printf("# %s\n", err.msg);
    return m;
}

// ----------------------------------------------------------------------------
// Controls that watch the allocation counter

#define MAX_STEPS 128
typedef struct {
    ct_model *m;
    long at[MAX_STEPS];   // allocation count when each pass reached hook_embed
    int n;
} step_log;

static ct_status log_step(void *ctx, ct_hook_id at, float *x, int T, ct_err *err) {
    step_log *s = ctx;
    if (at.kind == CT_HOOK_EMBED && s->n < MAX_STEPS) s->at[s->n++] = mem_calls();
    return CT_OK;
}

// The MLP through ct_model_mlp, as interventions run it (inside the forward pass).
static ct_status mlp_through_api(void *ctx, int layer, const ct_mlp_io *io, float *out, ct_err *err) {
    step_log *s = ctx;
    return ct_model_mlp(s->m, layer, io->mlp_in, io->T, out, err);
}

// Steps of a generation with the counter read at every pass: allocations between one token's
// pass and the next (the maximum over the steps), or -1 on failure.
static long per_token(ct_model *m, const int *prompt, int n_prompt, const ct_gen_opts *o, int via_mlp, int *n_steps) {
    static step_log s;
    memset(&s, 0, sizeof s);
    s.m = m;
    ct_forward_ctl ctl = {.edit = log_step, .ctx = &s, .mlp = via_mlp ? mlp_through_api : NULL, .mlp_out_raw = 1};
    int out[MAX_STEPS], n_out = 0;
    ct_err err = {0};
    ct_status rc = ct_model_generate_ctl(m, prompt, n_prompt, o, &ctl, &ctl, NULL, out, &n_out, &err);
    if (rc) {
        printf("# %s\n", err.msg);
        return -1;
    }
    // s.at[0] is the prompt pass, s.at[1] the first generated token's pass
    long worst = 0;
    for (int i = 2; i < s.n; i++) {
        long d = s.at[i] - s.at[i - 1];
        if (d > worst) worst = d;
    }
    *n_steps = s.n - 1;
    return worst;
}

// Allocations during one ct_model_generate of n tokens on a freshly loaded model.
static long whole_run(ct_model *(*load)(void), const int *prompt, int n_prompt, ct_gen_opts o, int n) {
    ct_model *m = load();
    if (!m) return -1;
    int out[MAX_STEPS], n_out = 0;
    ct_err err = {0};
    o.max_tokens = n;
    long before = mem_calls();
    ct_status rc = ct_model_generate(m, prompt, n_prompt, &o, out, &n_out, &err);
    long used = mem_calls() - before;
    ct_model_free(m);
    if (rc || n_out != n) printf("# generate: %s, %d tokens\n", rc ? err.msg : "ok", n_out);
    return rc || n_out != n ? -1 : used;
}

static void check_model(const char *name, ct_model *(*load)(void), const int *prompt, int n_prompt) {
    ct_gen_opts greedy = {.max_tokens = 60, .temperature = 0.0f, .top_p = 1.0f, .stop_at_eos = 0};
    ct_gen_opts top_p = {.max_tokens = 60, .temperature = 0.8f, .top_p = 0.9f, .seed = 5, .stop_at_eos = 0};
    const ct_gen_opts *modes[2] = {&greedy, &top_p};
    const char *mode_names[2] = {"greedy", "top_p 0.9"};
    for (int k = 0; k < 2; k++) {
        ct_model *m = load();
        if (!m) {
            ok(0, "%s loads", name);
            return;
        }
        int n_steps = 0;
        long worst = per_token(m, prompt, n_prompt, modes[k], 0, &n_steps);
        ok(worst == 0 && n_steps == 59, "%s %s, prompt of %d: %d passes for generated tokens, at most %ld "
           "allocator calls between one token's pass and the next", name, mode_names[k], n_prompt, n_steps, worst);
        worst = per_token(m, prompt, n_prompt, modes[k], 1, &n_steps);
        ok(worst == 0 && n_steps == 59, "%s %s: with an MLP callback calling ct_model_mlp, at most %ld "
           "allocator calls per token", name, mode_names[k], worst);
        ct_model_free(m);
        long few = whole_run(load, prompt, n_prompt, *modes[k], 4), many = whole_run(load, prompt, n_prompt, *modes[k], 60);
        ok(few >= 0 && few == many, "%s %s: generating 4 tokens and 60 tokens on a fresh model make "
           "as many allocator calls (%ld and %ld)", name, mode_names[k], few, many);
    }
}

// The scratch grows and is reused: passes over 40, 100 and 3 positions on one model, an MLP
// callback through ct_model_mlp in between, give the logits of fresh models.
static void check_reuse(const char *name, ct_model *(*load)(void)) {
    ct_model *m = load(), *fresh = NULL;
    if (!m) return;
    int nV = m->cfg.vocab_size, ids[100];   // (a checkpoint without a BOS id starts at token 0)
    for (int i = 0; i < 100; i++) ids[i] = i || m->cfg.bos_id < 0 ? (i * 37) % nV : m->cfg.bos_id;
    float *a = malloc(sizeof(float) * 100 * (size_t)nV), *b = malloc(sizeof(float) * 100 * (size_t)nV);
    ct_err err = {0};
    int lens[4] = {40, 100, 3, 100}, same = 1;
    step_log s = {.m = m};
    ct_forward_ctl via_mlp = {.mlp = mlp_through_api, .mlp_out_raw = 1, .ctx = &s};
    for (int i = 0; i < 4; i++) {
        fresh = load();
        ct_status rc = ct_model_forward_ctl(m, ids, lens[i], NULL, NULL, a, 1, i == 3 ? &via_mlp : NULL, &err);
        if (!rc) rc = ct_model_forward(fresh, ids, lens[i], NULL, NULL, b, 1, &err);
        same = same && rc == CT_OK && memcmp(a, b, sizeof(float) * (size_t)lens[i] * nV) == 0;
        ct_model_free(fresh);
    }
    ok(same, "%s: passes over 40, 100, 3 positions and 100 with the MLP through ct_model_mlp give a fresh model's "
       "logits bit for bit", name);
    free(a);
    free(b);
    ct_model_free(m);
}

int main(void) {
    int bos = 1, story[12] = {1, 403, 407, 261, 378, 281, 265, 324, 332, 273, 261, 264};
    int rnd[5] = {0, 17, 250, 3, 99};
    ct_model *probe = load_stories();
    ok(probe != NULL, "stories260K loads");
    ct_model_free(probe);
    if (probe) {
        check_model("stories260K", load_stories, &bos, 1);
        check_model("stories260K", load_stories, story, 12);
        check_reuse("stories260K", load_stories);
    }
    check_model("random model", load_random, rnd, 5);
    check_reuse("random model", load_random);
    char tmp[] = "/tmp/ct_allocXXXXXX";
    if (mkdtemp(tmp)) {
        int tiny_prompt[4] = {0, 3, 4, 3};
        snprintf(bf16_dir, sizeof bf16_dir, "%s/llama-bf16", tmp);
        make_family(bf16_dir, "LlamaForCausalLM", CT_DT_BF16);
        ct_model *m = load_bf16();
        ok(m && m->layers[0].wq.dtype == CT_DT_BF16, "tiny Llama checkpoint in BF16 loads with BF16 weights");
        ct_model_free(m);
        check_model("BF16 Llama", load_bf16, tiny_prompt, 4);
        check_reuse("BF16 Llama", load_bf16);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
        if (system(cmd) != 0) printf("# could not remove %s\n", tmp);
    }
    return check_done();
}
