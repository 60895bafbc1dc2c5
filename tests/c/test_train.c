// test_train.c - one training step against numpy (tests/ref/train_step.py): from a checkpoint
// written there (parameters, zero Adam moments, counters, last_fired, scales), ct_train_plt (a
// per-layer transcoder with a skip connection) and ct_train_clt (three layers) run exactly one
// step; the Adam first moment they save is 0.1 g (m = 0.9 * 0 + 0.1 g), so it gives the step's
// gradient, which must equal numpy's for every parameter. The step uses circuit-tracer's TopK
// (kept pre-activations as they are, many of them negative here, gradient 1 through them) and
// AuxK on dead features whose pre-activations are all negative; numpy's analytic gradient is
// itself checked against finite differences, and ReLU after TopK would change it by the size of
// the largest entry. Tolerance: |g - g_ref| <= 2e-5 max|g_ref| of the parameter block + 1e-5
// |g_ref|: float32 sums of at most B * D * L = 90 products of values below ten, against float64
// (seen: 3e-7 of the largest).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "formats/safetensors.h"
#include "model/train.h"

static double *read_f64(const ct_safetensors *st, const char *name, int64_t *n) {
    const ct_st_tensor *t = ct_safetensors_find(st, name);
    if (!t || t->dtype != CT_DT_F64) return NULL;
    *n = ct_st_numel(t);
    double *v = malloc(sizeof(double) * (size_t)(*n + 1));
    if (v) memcpy(v, t->data, sizeof(double) * (size_t)*n);
    return v;
}

static float *read_f32(const ct_safetensors *st, const char *name, int64_t *n) {
    const ct_st_tensor *t = ct_safetensors_find(st, name);
    ct_err err = {0};
    if (!t) return NULL;
    *n = ct_st_numel(t);
    float *v = malloc(sizeof(float) * (size_t)(*n + 1));
    if (v && ct_st_to_f32(v, t, &err)) {
        free(v);
        return NULL;
    }
    return v;
}

static void check_case(const char *dir, const char *name) {
    char path[512], state[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    snprintf(state, sizeof state, "%s/%s.state.safetensors", dir, name);
    ct_err err = {0};
    ct_safetensors *st = NULL;
    ok(ct_safetensors_open(NULL, &st, path, &err) == CT_OK, "%s: the reference case opens (%s)", name, st ? "ok" : err.msg);
    if (!st) return;
    const ct_st_tensor *ot = ct_safetensors_find(st, "opts");
    int64_t o[9];
    memcpy(o, ot->data, sizeof o);
    int L = (int)o[0], D = (int)o[1];
    int64_t n_aux = 0, n_grad = 0, nx = 0;
    float *aux = read_f32(st, "aux_coef", &n_aux);
    double *want = read_f64(st, "grad", &n_grad);
    const float *xs[8], *ys[8];
    float *own[16] = {0};
    for (int l = 0; l < L; l++) {
        char nm[32];
        snprintf(nm, sizeof nm, "x_%d", l);
        xs[l] = own[2 * l] = read_f32(st, nm, &nx);
        snprintf(nm, sizeof nm, "y_%d", l);
        ys[l] = own[2 * l + 1] = read_f32(st, nm, &nx);
    }
    long n = (long)(nx / D);
    ct_train_opts to = {.d_tc = (int)o[2], .k = (int)o[3], .k_aux = (int)o[4], .aux_coef = aux[0], .batch = (int)o[5], .steps = 2,
                        .lr = 1e-3f, .skip = (int)o[7], .dead_tokens = o[8], .checkpoint = state, .resume = 1};
    ct_status rc;
    if (L == 1) {
        ct_plt_params pp;
        rc = ct_train_plt(xs[0], ys[0], n, D, &to, &pp, &err);
        if (!rc) ct_plt_params_free(&pp);
    } else {
        ct_clt_params cp;
        rc = ct_train_clt(xs, ys, L, n, D, &to, &cp, &err);
        if (!rc) ct_clt_params_free(&cp);
    }
    ok(rc == CT_OK, "%s: one step from the checkpoint (%s)", name, rc ? err.msg : "ok");
    // the saved first moment: 0.1 g
    ct_safetensors *after = NULL;
    int64_t nm = 0;
    float *m = NULL;
    if (!rc && ct_safetensors_open(NULL, &after, state, &err) == CT_OK) m = read_f32(after, "adam_m", &nm);
    ok(m && want && nm == n_grad, "%s: the step saved %lld moments; numpy has %lld gradients", name, (long long)nm,
       (long long)n_grad);
    if (m && want && nm == n_grad) {
        // parameter blocks in the state's order: per layer W_enc (F, D), b_enc (F), W_dec (F, L - l, D),
        // b_dec (D), W_skip (D, D) when skip
        int F = (int)o[2], skip = (int)o[7];
        static const char *names[] = {"W_enc", "b_enc", "W_dec", "b_dec", "W_skip"};
        size_t at = 0;
        int all_good = 1;
        for (int l = 0; l < L; l++)
            for (int b = 0; b < (skip ? 5 : 4); b++) {
                size_t sizes[5] = {(size_t)F * D, (size_t)F, (size_t)F * (L - l) * D, (size_t)D, (size_t)D * D};
                size_t sz = sizes[b];
                double big = 0, worst = 0;
                for (size_t i = 0; i < sz; i++) big = fmax(big, fabs(want[at + i]));
                int good = 1;
                for (size_t i = 0; i < sz; i++) {
                    double g = (double)m[at + i] / 0.1, d = fabs(g - want[at + i]);
                    worst = fmax(worst, d);
                    if (!(d <= 2e-5 * big + 1e-5 * fabs(want[at + i]))) good = 0;
                }
                printf("# %s layer %d %s: max |g - numpy| %.3g, largest |g| %.3g\n", name, l, names[b], worst, big);
                all_good &= good && big > 0;
                at += sz;
            }
        ok(all_good && at == (size_t)n_grad, "%s: every parameter's gradient equals numpy's (2e-5 of the block's largest)", name);
    }
    free(m), free(want), free(aux);
    for (int i = 0; i < 2 * L; i++) free(own[i]);
    ct_safetensors_free(after);
    ct_safetensors_free(st);
}

int main(void) {
    char dir[] = "/tmp/ct_train_stepXXXXXX";
    if (!mkdtemp(dir)) return 1;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/train_step.py %s", dir);
    ok(system(cmd) == 0, "tests/ref/train_step.py wrote the cases");
    check_case(dir, "plt");
    check_case(dir, "clt");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return check_done();
}
