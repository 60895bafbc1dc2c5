#!/usr/bin/python3
"""The mean number of active features per position (BOS left out) of a transcoder set on given
hook rows, computed with numpy from the set's files, one layer at a time: for sets too large for
ctrace's float32 encoders in memory, and for models ctrace does not run.

    measure_l0.py SET ROWS_JSON [--outdir OUTDIR]

SET: a directory of circuit-tracer layer_{i}.safetensors, of cross-layer W_enc_{i}.safetensors,
or a config.yaml listing hf:// files (GemmaScope npz or GemmaScope-2 params.safetensors, looked
up in OUTDIR/<org>/<repo>/<path>). ROWS_JSON: hook_rows.lua's output for the set's input hook.
Prints one line per layer: layer, L0, and the activation rule used.
"""
import json
import os
import re
import struct
import sys

import numpy as np


def st_read(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        if name not in h:
            return None
        v = h[name]
        b, e = v["data_offsets"]
        f.seek(8 + n + b)
        raw = f.read(e - b)
    a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32) if v["dtype"] == "BF16" else \
        np.frombuffer(raw, "<f4")
    return a.reshape(v["shape"])


def layers(path, outdir):
    """(W_enc (F, D), b_enc, threshold or None) per layer."""
    if path.endswith(".yaml"):
        import yaml
        with open(path) as f:
            cfg = yaml.safe_load(f)
        for uri in cfg["transcoders"]:
            m = re.match(r"^hf://([^/]+/[^/]+)/([^?]+)", uri)
            p = os.path.join(outdir, m.group(1), m.group(2)) if m else os.path.join(os.path.dirname(path), uri)
            if p.endswith(".npz"):
                with np.load(p) as z:
                    yield z["W_enc"].T, z["b_enc"], z["threshold"]
            else:
                yield st_read(p, "w_enc").T, st_read(p, "b_enc"), st_read(p, "threshold")
        return
    i = 0
    while os.path.exists(os.path.join(path, f"layer_{i}.safetensors")):
        p = os.path.join(path, f"layer_{i}.safetensors")
        yield st_read(p, "W_enc"), st_read(p, "b_enc"), st_read(p, "activation_function.threshold")
        i += 1
    while os.path.exists(os.path.join(path, f"W_enc_{i}.safetensors")):
        p = os.path.join(path, f"W_enc_{i}.safetensors")
        yield st_read(p, f"W_enc_{i}"), st_read(p, f"b_enc_{i}"), st_read(p, f"threshold_{i}")
        i += 1


def main(argv):
    outdir = argv[argv.index("--outdir") + 1] if "--outdir" in argv else "."
    with open(argv[1]) as f:
        rows = json.load(f)["rows"]
    total = []
    for l, (W, b, thr) in enumerate(layers(argv[0], outdir)):
        x = np.asarray(rows[l], dtype=np.float32)[1:]     # BOS left out
        pre = x @ W.T + b
        active = pre > thr if thr is not None else pre > 0
        l0 = float(active.sum(axis=1).mean())
        total.append(l0)
        print(f"{l}\t{l0:.1f}\t{'jump_relu' if thr is not None else 'relu'}", flush=True)
    print(f"mean\t{np.mean(total):.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
