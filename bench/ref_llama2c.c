// ref_llama2c.c - the peer for bench/: a plain single-file C inference program for llama2.c
// checkpoints (legacy format), written the straightforward way (one token at a time, plain
// loops, -O3), to compare ctrace's generation speed with. Prints the median tokens per second
// of greedy decoding from BOS over `repeats` runs.
//   cc -O3 -o ref bench/ref_llama2c.c -lm && ./ref stories260K.bin steps repeats
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct { int dim, hidden, layers, heads, kv_heads, vocab, seq; } Cfg;

static void rms(float *o, const float *x, const float *w, int n) {
    float ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    ss = 1.0f / sqrtf(ss / n + 1e-5f);
    for (int i = 0; i < n; i++) o[i] = w[i] * ss * x[i];
}

static void mv(float *o, const float *x, const float *w, int n, int d) {   // w (d, n) @ x (n,)
    for (int i = 0; i < d; i++) {
        float s = 0;
        for (int j = 0; j < n; j++) s += w[i * n + j] * x[j];
        o[i] = s;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) return 1;
    int steps = argc > 2 ? atoi(argv[2]) : 256, reps = argc > 3 ? atoi(argv[3]) : 20;
    int fd = open(argv[1], O_RDONLY);
    struct stat sb;
    fstat(fd, &sb);
    float *map = mmap(NULL, sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    Cfg c;
    memcpy(&c, map, sizeof c);
    int shared = c.vocab > 0;
    c.vocab = abs(c.vocab);
    int D = c.dim, F = c.hidden, L = c.layers, hs = D / c.heads, kvd = hs * c.kv_heads, V = c.vocab, S = c.seq;
    float *p = map + 7;
    float *emb = p; p += V * D;
    float *att_w = p; p += L * D;
    float *wq = p; p += L * D * D;
    float *wk = p; p += L * kvd * D;
    float *wv = p; p += L * kvd * D;
    float *wo = p; p += L * D * D;
    float *ffn_w = p; p += L * D;
    float *w1 = p; p += L * F * D;
    float *w2 = p; p += L * D * F;
    float *w3 = p; p += L * F * D;
    float *fin = p; p += D;
    p += S * hs;
    float *cls = shared ? emb : p;
    float *x = malloc(D * 4), *xb = malloc(D * 4), *xb2 = malloc(D * 4), *hb = malloc(F * 4), *hb2 = malloc(F * 4);
    float *q = malloc(D * 4), *att = malloc(c.heads * S * 4), *logits = malloc(V * 4);
    float *kc = malloc((size_t)L * S * kvd * 4), *vc = malloc((size_t)L * S * kvd * 4);
    double *times = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        int tok = 1;
        for (int pos = 0; pos < steps; pos++) {
            memcpy(x, emb + tok * D, D * 4);
            for (int l = 0; l < L; l++) {
                rms(xb, x, att_w + l * D, D);
                float *k = kc + ((size_t)l * S + pos) * kvd, *v = vc + ((size_t)l * S + pos) * kvd;
                mv(q, xb, wq + l * D * D, D, D);
                mv(k, xb, wk + l * kvd * D, D, kvd);
                mv(v, xb, wv + l * kvd * D, D, kvd);
                for (int i = 0; i < D; i += 2) {
                    float f = 1.0f / powf(10000.0f, (i % hs) / (float)hs), a = pos * f, cs = cosf(a), sn = sinf(a);
                    for (int w = 0; w < (i < kvd ? 2 : 1); w++) {
                        float *u = w ? k : q, u0 = u[i], u1 = u[i + 1];
                        u[i] = u0 * cs - u1 * sn;
                        u[i + 1] = u0 * sn + u1 * cs;
                    }
                }
                for (int h = 0; h < c.heads; h++) {
                    float *qh = q + h * hs, *a = att + h * S, mx = -1e30f, sum = 0;
                    int kh = h / (c.heads / c.kv_heads);
                    for (int t = 0; t <= pos; t++) {
                        float *kt = kc + ((size_t)l * S + t) * kvd + kh * hs, s = 0;
                        for (int i = 0; i < hs; i++) s += qh[i] * kt[i];
                        a[t] = s / sqrtf(hs);
                        if (a[t] > mx) mx = a[t];
                    }
                    for (int t = 0; t <= pos; t++) sum += (a[t] = expf(a[t] - mx));
                    float *o = xb + h * hs;
                    memset(o, 0, hs * 4);
                    for (int t = 0; t <= pos; t++) {
                        float *vt = vc + ((size_t)l * S + t) * kvd + kh * hs, w = a[t] / sum;
                        for (int i = 0; i < hs; i++) o[i] += w * vt[i];
                    }
                }
                mv(xb2, xb, wo + l * D * D, D, D);
                for (int i = 0; i < D; i++) x[i] += xb2[i];
                rms(xb, x, ffn_w + l * D, D);
                mv(hb, xb, w1 + l * F * D, D, F);
                mv(hb2, xb, w3 + l * F * D, D, F);
                for (int i = 0; i < F; i++) hb[i] = hb[i] / (1.0f + expf(-hb[i])) * hb2[i];
                mv(xb, hb, w2 + l * D * F, F, D);
                for (int i = 0; i < D; i++) x[i] += xb[i];
            }
            rms(x, x, fin, D);
            mv(logits, x, cls, D, V);
            int next = 0;
            for (int i = 1; i < V; i++) if (logits[i] > logits[next]) next = i;
            tok = next;
        }
        times[r] = now() - t0;
    }
    qsort(times, (size_t)reps, sizeof(double), cmp_double);
    printf("ref_llama2c (plain C, -O3): %d tokens from BOS, median of %d runs: %.0f tok/s\n", steps, reps,
           steps / times[reps / 2]);
    return 0;
}
