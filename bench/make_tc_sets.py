#!/usr/bin/python3
"""Writes size-faithful transcoder sets with random weights, for bench/bench_transcoder.c: files
whose names, tensor names, shapes, dtypes and containers are those of the published sets, with
feature activity near the published L0 for inputs x ~ N(0, 1)^D (encoder rows of norm ~1).

    make_tc_sets.py gemmascope OUT [LAYERS]   GemmaScope 2b 16k PLTs: LAYERS (26) params.npz written by
                                              np.savez (members W_enc [2304,16384], W_dec [16384,2304],
                                              b_enc, b_dec, threshold; f32), layer_{i}/width_16k/
                                              average_l0_{L0}/params.npz and a config.yaml listing them
    make_tc_sets.py llama OUT [LAYERS]        Llama-3.2-1B PLTs (mntss/transcoder-Llama-3.2-1B):
                                              layer_{i}.safetensors (4), W_enc/W_dec [131072,2048], b_enc,
                                              b_dec, W_skip [2048,2048], all bf16; ReLU, 100 active
    make_tc_sets.py clt OUT [LAYERS] [F]      a mntss/clt-gemma-2-2b-426k-shaped CLT with LAYERS (26)
                                              layers of F (16384) features: W_enc_{i}.safetensors
                                              (W_enc_i [F,2304], b_enc_i, b_dec_i; bf16) and
                                              W_dec_{i}.safetensors (W_dec_i [F,LAYERS-i,2304] bf16); ReLU

Sizes: gemmascope 302 MB a layer (7.86 GB for 26); llama 1.08 GB a layer; clt (26 layers) 28.5 GB.
Not a test fixture: benchmarks only.
"""
import json
import math
import os
import struct
import sys

import numpy as np

# GemmaScope 2b transcoders, average_l0 of circuit-tracer's gemmascope-l0-0 configuration
GEMMASCOPE_L0 = [76, 65, 49, 54, 88, 87, 95, 70, 52, 72, 88, 5, 6, 8, 8, 8, 10, 12, 13, 12, 11, 13, 15, 25, 37, 41]


def z_above(p):
    """z with P(N(0,1) > z) = p (bisection on erfc)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def normal(rng, shape, scale):
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= np.float32(scale)
    return a


def bf16_bytes(a):
    """float32 array -> little-endian bf16 bytes (round to nearest even)."""
    u = a.view(np.uint32)
    out = np.empty(u.shape, dtype="<u2")
    step = 1 << 24
    flat, o = u.reshape(-1), out.reshape(-1)
    for i in range(0, flat.size, step):
        c = flat[i:i + step]
        o[i:i + step] = ((c + np.uint32(0x7FFF) + ((c >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    return out.tobytes()


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype tag, shape, data), written in order; data is the raw bytes or
    an iterable of pieces of them (a tensor too large to hold at once)."""
    size = {"BF16": 2, "F16": 2, "F32": 4}
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dt, shape, _ in tensors:
        n = math.prod(shape) * size[dt]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, _, _, data in tensors:
            for piece in ([data] if isinstance(data, bytes) else data):
                f.write(piece)


def new_set(out, config, active, F):
    """The set's directory and config.yaml; the encoder bias -z for `active` features of F."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(config)
    return z_above(active / F)


def encoder(rng, F, D, z, suffix=""):
    """bf16 W_enc (F, D) with rows of norm ~1 and b_enc near -z."""
    return [("W_enc" + suffix, "BF16", (F, D), bf16_bytes(normal(rng, (F, D), 1 / math.sqrt(D)))),
            ("b_enc" + suffix, "BF16", (F,), bf16_bytes(np.full(F, -z, np.float32) + normal(rng, F, 0.01)))]


def gemmascope(out, n):
    D, F = 2304, 16384
    lines = ["# GemmaScope 2b transcoders, 16k, random weights at the published shapes",
             'model_name: "google/gemma-2-2b"', "model_kind: transcoder_set",
             "feature_input_hook: ln2.hook_normalized", "feature_output_hook: hook_mlp_out", "transcoders:"]
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        l0 = GEMMASCOPE_L0[i % len(GEMMASCOPE_L0)]
        rel = "layer_%d/width_16k/average_l0_%d/params.npz" % (i, l0)
        os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
        thr = np.full(F, z_above(l0 / F), dtype=np.float32) + normal(rng, F, 0.01)
        np.savez(os.path.join(out, rel), W_enc=normal(rng, (D, F), 1 / math.sqrt(D)), W_dec=normal(rng, (F, D), 0.02),
                 b_enc=np.zeros(F, np.float32), b_dec=normal(rng, D, 0.01), threshold=thr)
        lines.append('  - "%s"' % rel)
        print("wrote", rel, flush=True)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def llama(out, n):
    D, F = 2048, 131072
    z = new_set(out, 'model_name: "meta-llama/Llama-3.2-1B"\nmodel_kind: "transcoder_set"\n'
                'feature_input_hook: "hook_resid_mid"\nfeature_output_hook: "mlp.hook_out"\n', 100, F)
    for i in range(n):
        rng = np.random.default_rng(200 + i)
        t = encoder(rng, F, D, z) + [("W_dec", "BF16", (F, D), bf16_bytes(normal(rng, (F, D), 0.02))),
                                     ("b_dec", "BF16", (D,), bf16_bytes(normal(rng, D, 0.01))),
                                     ("W_skip", "BF16", (D, D), bf16_bytes(normal(rng, (D, D), 0.01)))]
        write_safetensors(os.path.join(out, "layer_%d.safetensors" % i), t)
        print("wrote layer_%d.safetensors" % i, flush=True)


def clt(out, n, F):
    D = 2304
    z = new_set(out, 'model_name: "google/gemma-2-2b"\nmodel_kind: cross_layer_transcoder\n'
                'feature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\n', 75, F)
    for i in range(n):
        rng = np.random.default_rng(300 + i)
        write_safetensors(os.path.join(out, "W_enc_%d.safetensors" % i), encoder(rng, F, D, z, "_%d" % i) + [
            ("b_dec_%d" % i, "BF16", (D,), bf16_bytes(normal(rng, D, 0.01)))])
        # the decoder (F, n - i, D) written a block of feature rows at a time
        rows = max(1, (1 << 26) // ((n - i) * D))
        blocks = (bf16_bytes(normal(rng, (min(rows, F - f0), n - i, D), 0.02)) for f0 in range(0, F, rows))
        write_safetensors(os.path.join(out, "W_dec_%d.safetensors" % i), [("W_dec_%d" % i, "BF16", (F, n - i, D), blocks)])
        print("wrote W_enc_%d, W_dec_%d" % (i, i), flush=True)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("gemmascope", "llama", "clt"):
        sys.exit(__doc__)
    kind, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else {"gemmascope": 26, "llama": 4, "clt": 26}[kind]
    if kind == "gemmascope":
        gemmascope(out, n)
    elif kind == "llama":
        llama(out, n)
    else:
        clt(out, n, int(sys.argv[4]) if len(sys.argv) > 4 else 16384)


if __name__ == "__main__":
    main()
