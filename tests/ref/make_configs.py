#!/usr/bin/python3
"""The files every config.yaml layout in tests/fixtures/configs names, as tiny random
transcoders in the formats of the published files, for tests/cli/test_configs.sh.

    make_configs.py OUTDIR

OUTDIR/hub: a Hugging Face cache (models--org--name/refs/<revision>, snapshots/<commit>/...)
holding every hf:// entry of the fixtures: GemmaScope params.npz, circuit-tracer per-layer
safetensors (with W_skip), GemmaScope-2 per-layer and cross-layer params. OUTDIR/sets/<fixture>:
the fixture's config.yaml, and for the layouts without a list the layer files beside it
(layer_{i}.safetensors, or W_enc_{i} / W_dec_{i} for the cross-layer set).

Every file of layer i has b_dec = i + 0.5 and b_enc = -1 (thresholds 0.5), so a reconstruction
of zero inputs reads back, layer by layer, which file was loaded for which layer.
"""
import hashlib
import os
import re
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_transcoders import save_safetensors  # noqa: E402

D, F = 4, 8
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "configs")
rng = np.random.default_rng(5)


def w(*shape):
    return (rng.standard_normal(shape) * 0.3).astype(np.float32)


def full(shape, v):
    return np.full(shape, v, dtype=np.float32)


def layer_file(path, repo, file_path, layer, n_layers):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    b_enc, b_dec, thr = full(F, -1), full(D, layer + 0.5), full(F, 0.5)
    if file_path.endswith(".npz"):   # GemmaScope: W_enc stored (D, F)
        np.savez(path, W_enc=w(D, F), W_dec=w(F, D), b_enc=b_enc, b_dec=b_dec, threshold=thr)
    elif "gemma-scope-2" in repo and ("/" + file_path).find("/clt/") >= 0:   # GemmaScope-2 cross-layer: w_dec over every layer
        save_safetensors(path, {"w_enc": (w(D, F), "F32"), "w_dec": (w(F, n_layers, D), "F32"), "b_enc": (b_enc, "F32"),
                                "b_dec": (b_dec, "F32"), "threshold": (thr, "F32"),
                                "affine_skip_connection": (w(D, D), "F32")})
    elif "gemma-scope-2" in repo:   # GemmaScope-2 per-layer keys
        save_safetensors(path, {"w_enc": (w(D, F), "F32"), "w_dec": (w(F, D), "F32"), "b_enc": (b_enc, "F32"),
                                "b_dec": (b_dec, "F32"), "threshold": (thr, "F32"),
                                "affine_skip_connection": (w(D, D), "F32")})
    else:   # circuit-tracer per-layer safetensors with a skip connection, ReLU
        save_safetensors(path, {"W_enc": (w(F, D), "F32"), "W_dec": (w(F, D), "BF16"), "b_enc": (b_enc, "F32"),
                                "b_dec": (b_dec, "F32"), "W_skip": (w(D, D), "F32")})


def main():
    out = sys.argv[1]
    made = set()
    for name in sorted(os.listdir(FIXTURES)):
        if not name.endswith(".yaml"):
            continue
        text = open(os.path.join(FIXTURES, name)).read()
        sdir = os.path.join(out, "sets", name[:-5])
        os.makedirs(sdir, exist_ok=True)
        shutil.copy(os.path.join(FIXTURES, name), os.path.join(sdir, "config.yaml"))
        uris = re.findall(r'"(hf://[^"]+)"', text)
        for uri in uris:
            m = re.match(r"hf://([^/]+/[^/]+)/([^?]+)(?:\?revision=(.+))?$", uri)
            repo, file_path, rev = m.group(1), m.group(2), m.group(3) or "main"
            layer = int(re.findall(r"layer_(\d+)", file_path)[-1])
            commit = hashlib.sha1((repo + "@" + rev).encode()).hexdigest()
            rdir = os.path.join(out, "hub", "models--" + repo.replace("/", "--"))
            os.makedirs(os.path.join(rdir, "refs"), exist_ok=True)
            with open(os.path.join(rdir, "refs", rev), "w") as f:
                f.write(commit)
            path = os.path.join(rdir, "snapshots", commit, file_path)
            if path not in made:
                layer_file(path, repo, file_path, layer, len(uris))
                made.add(path)
        if uris:
            continue
        n = {"Llama": 16, "qwen3": 28, "clt-gemma": 26}[next(k for k in ("Llama", "qwen3", "clt-gemma") if k in name)]
        for i in range(n):
            if "cross_layer_transcoder" in text:   # circuit-tracer cross-layer directory, ReLU
                save_safetensors(os.path.join(sdir, "W_enc_%d.safetensors" % i),
                                 {"W_enc_%d" % i: (w(F, D), "F32"), "b_enc_%d" % i: (full(F, -1), "F32"),
                                  "b_dec_%d" % i: (full(D, i + 0.5), "F32")})
                save_safetensors(os.path.join(sdir, "W_dec_%d.safetensors" % i), {"W_dec_%d" % i: (w(F, n - i, D), "BF16")})
            else:
                layer_file(os.path.join(sdir, "layer_%d.safetensors" % i), "", "layer_%d.safetensors" % i, i, n)
    # the older form with its entries in reverse order and local paths: the layer key decides
    sdir = os.path.join(out, "sets", "old-reversed")
    os.makedirs(os.path.join(sdir, "files"), exist_ok=True)
    for i, name in enumerate(("a", "b", "c")):
        layer_file(os.path.join(sdir, "files", name + ".safetensors"), "", name + ".safetensors", i, 3)
    with open(os.path.join(sdir, "config.yaml"), "w") as f:
        f.write('model_name: "test/reversed"\nfeature_input_hook: "mlp.hook_in"\nfeature_output_hook: "mlp.hook_out"\n'
                "transcoders:\n" + "".join('  - id: "t-%d"\n    layer: %d\n    filepath: "files/%s.safetensors"\n' % (i, i, n)
                                           for i, n in reversed(list(enumerate(("a", "b", "c"))))))
    # YAML beyond the usual lines: an anchor merged in, a folded scalar, a flow list, a document marker
    sdir = os.path.join(out, "sets", "yaml-features")
    os.makedirs(sdir, exist_ok=True)
    for i in range(2):
        layer_file(os.path.join(sdir, "layer_%d.safetensors" % i), "", "layer_%d.safetensors" % i, i, 2)
    with open(os.path.join(sdir, "config.yaml"), "w") as f:
        f.write("%YAML 1.1\n---\ndefaults: &d {model_kind: transcoder_set, feature_input_hook: mlp.hook_in}\n<<: *d\n"
                "model_name: !!str 2024\nfeature_output_hook: >-\n  mlp.hook_out\n"
                "transcoders: [layer_0.safetensors, 'layer_1.safetensors']  # two layers\n...\n")


if __name__ == "__main__":
    main()
