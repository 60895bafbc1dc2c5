#!/usr/bin/python3
"""One step of ctrace's transcoder training, in numpy, from a state written here: the reference
tests/c/test_train.c compares ctrace's gradients with. Test tooling only.

    train_step.py OUTDIR

For each case (a per-layer transcoder with a skip connection; a three-layer cross-layer
transcoder) it writes OUTDIR/<case>.safetensors with the data x_l, y_l (n, D), the options and
the expected gradient of every parameter (float64), and OUTDIR/<case>.state.safetensors, a
training checkpoint in ctrace's layout (train.c: params, adam_m, adam_v, counters, last_fired,
scales) from which ctrace runs exactly one step.

The step, as train.h defines it: a batch of B rows drawn with xorshift64* (state in counters[2]),
rows % n; inputs and targets divided by their scales (float32); pre = x W_enc^T + b_enc;
circuit-tracer's TopK: the k largest pre-activations of a row kept as they are, negative ones
included (no ReLU), gradient 1 through them; y_hat_t = b_dec_t [+ x W_skip^T] + sum over source
layers l <= t of act_l W_dec_l[:, t - l]; loss (1/B) sum_t sum_b |y_hat - y|^2. Features that fired
(kept with a non-zero value) get last_fired = tokens + b; then the dead ones (tokens - last_fired
> dead_tokens) of each layer get AuxK: their k_aux largest pre-activations, kept as they are,
reconstruct the residual y_l - y_hat_l (held constant) through their own layer's slice, loss
aux_coef (1/B) sum_b |e - r|^2, whose gradient reaches the dead features' parameters only.

The analytic gradients are checked here against central finite differences of that objective
(float64, every TopK and AuxK choice at least 1e-3 away from a tie, so the steps do not change
them), and against the old definition (ReLU after TopK), which must give other gradients.
"""
import json
import os
import struct
import sys

import numpy as np

MARGIN = 1e-3


def write_st(path, tensors):
    """tensors: name -> (array, dtype) with dtype F64, F32 or I64."""
    header, blobs, off = {}, [], 0
    for name, (arr, dtype) in tensors.items():
        fmt = {"F64": "<f8", "F32": "<f4", "I64": "<i8"}[dtype]
        raw = np.ascontiguousarray(np.asarray(arr), dtype=fmt).tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(arr)), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def xorshift64star(s):
    s ^= s >> 12
    s ^= (s << 25) & 0xFFFFFFFFFFFFFFFF
    s ^= s >> 27
    return s, (s * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF


def topk_rows(v, k):
    """Indices of the k largest values of each row, largest first, ties to the lower index."""
    return np.argsort(-v, axis=-1, kind="stable")[:, :k]


def margin_ok(v, idx, k):
    """The k-th kept value beats the best value left out by at least MARGIN (no near tie)."""
    for r in range(v.shape[0]):
        kept = set(idx[r].tolist())
        rest = [v[r, j] for j in range(v.shape[1]) if j not in kept]
        if rest and min(v[r, idx[r]]) - max(rest) < MARGIN:
            return False
    return True


class Case:
    def __init__(self, name, L, D, F, K, KA, B, n, skip, aux_coef, dead_tokens, seed):
        self.name, self.L, self.D, self.F, self.K, self.KA, self.B, self.n = name, L, D, F, K, KA, B, n
        self.skip, self.aux_coef, self.dead_tokens = skip, aux_coef, dead_tokens
        rng = np.random.default_rng(seed)
        f32 = lambda a: np.asarray(a, dtype=np.float32)
        self.xs = [f32(rng.standard_normal((n, D)) * (1.0 + 0.5 * l)) for l in range(L)]
        self.ys = [f32(rng.standard_normal((n, D)) * (0.7 + 0.2 * l)) for l in range(L)]
        self.sx = [f32(1.3 + 0.1 * l) for l in range(L)]
        self.sy = [f32(0.8 + 0.1 * l) for l in range(L)]
        # parameters; the last three features of each layer have low biases: they never make the
        # top k, and those that fired long ago are dead (AuxK); the others' biases are low enough
        # that many kept pre-activations are negative
        self.p = []
        for l in range(L):
            b_enc = rng.standard_normal(F) * 0.2 - 1.0
            b_enc[F - 3:] -= 4.0
            self.p.append({"W_enc": f32(rng.standard_normal((F, D)) * 0.4), "b_enc": f32(b_enc),
                           "W_dec": f32(rng.standard_normal((F, L - l, D)) * 0.3), "b_dec": f32(rng.standard_normal(D) * 0.1),
                           "W_skip": f32(rng.standard_normal((D, D)) * 0.2) if skip else None})
        self.step, self.tokens, self.rng = 1, 5000, int(rng.integers(1, 2**63))
        # last_fired: recent for most features, long ago for two of the low-bias ones and one other
        self.last_fired = np.full((L, F), self.tokens - 10, dtype=np.int64)
        self.last_fired[:, F - 3:F - 1] = 0
        self.last_fired[:, 0] = 0
        rows, s = [], self.rng
        for _ in range(B):
            s, r = xorshift64star(s)
            rows.append(r % n)
        self.rows = rows
        self.x = [(self.xs[l][rows] / self.sx[l]).astype(np.float32).astype(np.float64) for l in range(L)]
        self.y = [(self.ys[l][rows] / self.sy[l]).astype(np.float32).astype(np.float64) for l in range(L)]

    def flat_layout(self):
        names = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["W_skip"] if self.skip else [])
        return [(l, nm) for l in range(self.L) for nm in names]

    def flatten(self, d):
        return np.concatenate([np.asarray(d[l][nm], dtype=np.float64).ravel() for l, nm in self.flat_layout()])

    def unflatten(self, v):
        out, at = [dict() for _ in range(self.L)], 0
        for l, nm in self.flat_layout():
            shape = self.p[l][nm].shape
            size = int(np.prod(shape))
            out[l][nm] = v[at:at + size].reshape(shape)
            at += size
        return out

    # ---- the objective with every discrete choice (TopK sets, dead sets, AuxK sets) fixed
    def choices(self, p, relu=False):
        L, K, KA = self.L, self.K, self.KA
        pre = [self.x[l] @ p[l]["W_enc"].T + p[l]["b_enc"] for l in range(L)]
        idx = [topk_rows(pre[l], K) for l in range(L)]
        assert all(margin_ok(pre[l], idx[l], K) for l in range(L)), self.name + ": a TopK choice near a tie"
        fired = np.zeros((L, self.F), dtype=bool)
        for l in range(L):
            for b in range(self.B):
                for f in idx[l][b]:
                    if (pre[l][b, f] > 0) if relu else (pre[l][b, f] != 0):
                        fired[l, f] = True
        dead = [[f for f in range(self.F) if not fired[l, f] and self.tokens - self.last_fired[l, f] > self.dead_tokens]
                for l in range(L)]
        aux = []
        for l in range(L):
            if not dead[l] or KA == 0:
                aux.append(None)
                continue
            dv = pre[l][:, dead[l]]
            ia = topk_rows(dv, min(KA, len(dead[l])))
            assert margin_ok(dv, ia, ia.shape[1]), self.name + ": an AuxK choice near a tie"
            aux.append(np.asarray(dead[l])[ia])
        return idx, dead, aux

    def forward(self, p, ch, relu=False):
        L, B = self.L, self.B
        idx, _, _ = ch
        pre = [self.x[l] @ p[l]["W_enc"].T + p[l]["b_enc"] for l in range(L)]
        act = []
        for l in range(L):
            a = np.zeros_like(pre[l])
            rows = np.arange(B)[:, None]
            a[rows, idx[l]] = np.maximum(pre[l][rows, idx[l]], 0) if relu else pre[l][rows, idx[l]]
            act.append(a)
        yh = []
        for t in range(L):
            h = np.tile(p[t]["b_dec"], (B, 1))
            if self.skip:
                h = h + self.x[t] @ p[t]["W_skip"].T
            for l in range(t + 1):
                h = h + act[l] @ p[l]["W_dec"][:, t - l, :]
            yh.append(h)
        return pre, act, yh

    def objective(self, p, ch, resid, relu=False):
        """Main loss plus the AuxK loss with the residual resid held constant."""
        pre, _, yh = self.forward(p, ch, relu)
        J = sum(((yh[t] - self.y[t]) ** 2).sum() for t in range(self.L)) / self.B
        for l, ia in enumerate(ch[2]):
            if ia is None:
                continue
            rows = np.arange(self.B)[:, None]
            v = pre[l][rows, ia]
            if relu:
                v = np.maximum(v, 0)
            e = np.einsum("bj,bjd->bd", v, p[l]["W_dec"][ia, 0, :])
            J += self.aux_coef * ((e - resid[l]) ** 2).sum() / self.B
        return J

    def gradient(self, p, ch, resid, relu=False):
        """The analytic gradient of objective() (the computation written out by hand)."""
        L, B, D = self.L, self.B, self.D
        idx, _, aux = ch
        pre, act, yh = self.forward(p, ch, relu)
        g = [{nm: np.zeros_like(np.asarray(v, dtype=np.float64)) for nm, v in p[l].items() if v is not None} for l in range(L)]
        gy = [2.0 * (yh[t] - self.y[t]) / B for t in range(L)]
        for t in range(L):
            g[t]["b_dec"] += gy[t].sum(0)
            if self.skip:
                g[t]["W_skip"] += gy[t].T @ self.x[t]
        for l in range(L):
            gpre = np.zeros_like(pre[l])
            for t in range(l, L):
                g[l]["W_dec"][:, t - l, :] += act[l].T @ gy[t]
                gpre += gy[t] @ p[l]["W_dec"][:, t - l, :].T
            mask = np.zeros_like(pre[l])
            rows = np.arange(B)[:, None]
            mask[rows, idx[l]] = (pre[l][rows, idx[l]] > 0) if relu else 1.0
            gpre *= mask
            g[l]["b_enc"] += gpre.sum(0)
            g[l]["W_enc"] += gpre.T @ self.x[l]
            ia = aux[l]
            if ia is None:
                continue
            v = pre[l][rows, ia]
            if relu:
                v = np.maximum(v, 0)
            e = np.einsum("bj,bjd->bd", v, p[l]["W_dec"][ia, 0, :])
            ge = 2.0 * self.aux_coef * (e - resid[l]) / B
            for b in range(B):
                for j, f in enumerate(ia[b]):
                    if relu and pre[l][b, f] <= 0:
                        continue
                    g[l]["W_dec"][f, 0, :] += v[b, j] * ge[b]
                    ga = ge[b] @ p[l]["W_dec"][f, 0, :]
                    g[l]["b_enc"][f] += ga
                    g[l]["W_enc"][f] += ga * self.x[l][b]
        return g

    def residual(self, p, ch, relu=False):
        _, _, yh = self.forward(p, ch, relu)
        return [self.y[l] - yh[l] for l in range(self.L)]

    def write(self, out):
        p64 = [{nm: (np.asarray(v, dtype=np.float64) if v is not None else None) for nm, v in q.items()} for q in self.p]
        ch = self.choices(p64)
        resid = self.residual(p64, ch)
        g = self.gradient(p64, ch, resid)
        grad = self.flatten(g)
        n_neg = sum(int((self.forward(p64, ch)[1][l] < 0).sum()) for l in range(self.L))
        n_aux = sum(0 if a is None else a.size for a in ch[2])
        assert n_neg >= 5 and n_aux > 0, "%s: %d negative kept values, %d AuxK entries" % (self.name, n_neg, n_aux)
        # finite differences of the same objective at (up to) 300 coordinates
        theta = self.flatten(p64)
        rs = np.random.default_rng(7)
        worst = 0.0
        for i in rs.choice(theta.size, min(300, theta.size), replace=False):
            h = 1e-6
            tp, tm = theta.copy(), theta.copy()
            tp[i] += h
            tm[i] -= h
            fd = (self.objective(self.unflatten(tp), ch, resid) - self.objective(self.unflatten(tm), ch, resid)) / (2 * h)
            worst = max(worst, abs(fd - grad[i]) / (1e-6 + abs(grad[i])))
        assert worst < 1e-5, "%s: analytic gradient against finite differences: %g" % (self.name, worst)
        # the old definition (ReLU after TopK, AuxK on positive values only) gives other gradients
        ch_old = self.choices(p64, relu=True)
        g_old = self.flatten(self.gradient(p64, ch_old, self.residual(p64, ch_old, relu=True), relu=True))
        old_diff = np.abs(g_old - grad).max() / np.abs(grad).max()
        assert old_diff > 0.05, "%s: the old definition's gradient is too close (%g)" % (self.name, old_diff)
        print("# %s: %d kept values negative, %d AuxK entries; finite differences agree to %.2g; ReLU-after-TopK "
              "gradients differ by %.2g of the largest" % (self.name, n_neg, n_aux, worst, old_diff))
        t = {}
        for l in range(self.L):
            t["x_%d" % l] = (self.xs[l], "F32")
            t["y_%d" % l] = (self.ys[l], "F32")
        t["opts"] = (np.array([self.L, self.D, self.F, self.K, self.KA, self.B, self.n, int(self.skip), self.dead_tokens]), "I64")
        t["aux_coef"] = (np.array([self.aux_coef]), "F32")
        t["grad"] = (grad, "F64")
        write_st(os.path.join(out, self.name + ".safetensors"), t)
        theta32 = self.flatten(self.p).astype(np.float32)
        zeros = np.zeros_like(theta32)
        write_st(os.path.join(out, self.name + ".state.safetensors"), {
            "params": (theta32, "F32"), "adam_m": (zeros, "F32"), "adam_v": (zeros, "F32"),
            "counters": (np.array([self.step, self.tokens, self.rng - 2**64 if self.rng >= 2**63 else self.rng, self.L]), "I64"),
            "last_fired": (self.last_fired.ravel(), "I64"),
            "scales": (np.array(self.sx + self.sy, dtype=np.float32), "F32")})


def main():
    out = sys.argv[1]
    Case("plt", L=1, D=6, F=10, K=3, KA=2, B=8, n=20, skip=True, aux_coef=0.25, dead_tokens=100, seed=11).write(out)
    Case("clt", L=3, D=5, F=8, K=2, KA=2, B=6, n=15, skip=False, aux_coef=0.5, dead_tokens=100, seed=12).write(out)


if __name__ == "__main__":
    main()
