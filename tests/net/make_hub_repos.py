#!/usr/bin/python3
"""Small repositories laid out as the published ones circuit-tracer loads by name, for the loopback
hub server (tests/net/server.py serves DIR/{org}/{repo}/{path}). Test tooling only: random
weights at tiny sizes (d_model 16, two layers, the Gemma-2 stand-in of make_gemma_dryrun.py);
the file names, tensor names, dtypes and config.yaml forms are the published ones
(../shared/reference/published-sets.md).

    make_hub_repos.py DIR DRYRUN_DIR   # DRYRUN_DIR: the output of tests/ref/make_gemma_dryrun.py

DIR/google/gemma-2-2b                       the checkpoint in two shards + model.safetensors.index.json
DIR/google/gemma-scope-2b-pt-transcoders    layer_{l}/width_16k/average_l0_{x}/params.npz
DIR/mntss/gemma-scope-transcoders           config.yaml listing those npz files (the list form) and a
                                            features/ folder of 1,100 files (more siblings than
                                            huggingface_hub trusts: the folder is listed by the tree API)
DIR/mwhanna/gemma-scope-transcoders         config.yaml without a list and layer_{i}.safetensors (F32,
                                            JumpReLU thresholds): circuit-tracer's "gemma"
DIR/mntss/clt-gemma-2-2b-426k               W_enc_{i}.safetensors, W_dec_{i}.safetensors (BF16), config.yaml
                                            without a list, and files a snapshot must leave alone
DIR/mntss/transcoder-Llama-3.2-1B           layer_{i}.safetensors (BF16, W_skip), a 4-line config.yaml
DIR/mwhanna/gemma-scope-2-1b-it             transcoder_all/width_16k_l0_small_affine/{config.yaml,
                                            layer_{i}.safetensors} beside another width's folder
DIR/test/wide                               a root of 2,500 files (three pages of the tree listing)
                                            holding a per-layer set
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
from make_transcoders import save_safetensors  # noqa: E402

D, F, L = 16, 24, 2
rng = np.random.default_rng(14)


def w(*shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return header, data


def reshard(src, dst_dir):
    """model.safetensors -> model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json (tensors
    split in name order, as transformers' save_pretrained does by size)."""
    header, data = read_safetensors(src)
    names = sorted(k for k in header if k != "__metadata__")
    half = len(names) // 2
    index = {"metadata": {"total_size": sum(header[k]["data_offsets"][1] - header[k]["data_offsets"][0] for k in names)},
             "weight_map": {}}
    for i, part in enumerate((names[:half], names[half:])):
        shard = "model-%05d-of-00002.safetensors" % (i + 1)
        h, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
        for k in part:
            a, b = header[k]["data_offsets"]
            h[k] = {"dtype": header[k]["dtype"], "shape": header[k]["shape"], "data_offsets": [off, off + b - a]}
            blobs.append(data[a:b])
            off += b - a
            index["weight_map"][k] = shard
        hb = json.dumps(h).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        with open(os.path.join(dst_dir, shard), "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    write(os.path.join(dst_dir, "model.safetensors.index.json"), json.dumps(index, indent=2) + "\n")


def plt_layer(skip, threshold, dtype):
    t = {"W_enc": (w(F, D), dtype), "W_dec": (w(F, D), dtype), "b_enc": (w(F, scale=0.1), dtype),
         "b_dec": (w(D, scale=0.1), dtype)}
    if threshold:
        t["activation_function.threshold"] = (rng.uniform(0, 0.3, F).astype(np.float32), dtype)
    if skip:
        t["W_skip"] = (w(D, D, scale=0.1), dtype)
    return t


def main():
    out, dry = sys.argv[1], sys.argv[2]

    # google/gemma-2-2b: the dry-run checkpoint, sharded
    m = os.path.join(out, "google", "gemma-2-2b")
    os.makedirs(m, exist_ok=True)
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(os.path.join(dry, "gemma-2-2b", f), m)
    reshard(os.path.join(dry, "gemma-2-2b", "model.safetensors"), m)
    write(os.path.join(m, "generation_config.json"), '{"bos_token_id": 2, "eos_token_id": 1}\n')
    write(os.path.join(m, "README.md"), "# gemma-2-2b (tiny stand-in)\n")
    write(os.path.join(m, ".gitattributes"), "*.safetensors filter=lfs diff=lfs merge=lfs -text\n")

    # GemmaScope npz files and the list-form config that points at them from another repository
    l0 = (76, 65)
    entries = []
    for l in range(L):
        p = "layer_%d/width_16k/average_l0_%d/params.npz" % (l, l0[l])
        os.makedirs(os.path.join(out, "google", "gemma-scope-2b-pt-transcoders", os.path.dirname(p)), exist_ok=True)
        shutil.copy(os.path.join(dry, "gemma-scope", "layer_%d.npz" % l),
                    os.path.join(out, "google", "gemma-scope-2b-pt-transcoders", p))
        entries.append('  - "hf://google/gemma-scope-2b-pt-transcoders/%s"\n' % p)
    g = os.path.join(out, "mntss", "gemma-scope-transcoders")
    write(os.path.join(g, "config.yaml"),
          "# Transcoder Configuration Gemma Scope Transcoders (lowest L0)\nmodel_name: \"google/gemma-2-2b\"\n"
          "model_kind: \"transcoder_set\"\nfeature_input_hook: \"ln2.hook_normalized\"\nfeature_output_hook: 'hook_mlp_out'\n\n"
          "transcoders:\n" + "".join(entries))
    for i in range(1100):
        write(os.path.join(g, "features", "layer_%d" % (i % L), "%05d.json" % i), '{"index": %d}\n' % i)

    # the same kind of set in circuit-tracer's own layout, which its "gemma" names
    g = os.path.join(out, "mwhanna", "gemma-scope-transcoders")
    os.makedirs(g, exist_ok=True)
    for l in range(L):
        save_safetensors(os.path.join(g, "layer_%d.safetensors" % l), plt_layer(skip=False, threshold=True, dtype="F32"))
    write(os.path.join(g, "config.yaml"), 'model_name: "google/gemma-2-2b"\nmodel_kind: "transcoder_set"\n'
          'feature_input_hook: "ln2.hook_normalized"\nfeature_output_hook: "hook_mlp_out"\n')

    # the cross-layer set: W_enc_i (W_enc_i, b_enc_i, b_dec_i), W_dec_i [F, L - i, D], BF16
    c = os.path.join(out, "mntss", "clt-gemma-2-2b-426k")
    os.makedirs(os.path.join(c, "extra"), exist_ok=True)
    for i in range(L):
        save_safetensors(os.path.join(c, "W_enc_%d.safetensors" % i),
                         {"W_enc_%d" % i: (w(F, D), "BF16"), "b_enc_%d" % i: (w(F, scale=0.1), "BF16"),
                          "b_dec_%d" % i: (w(D, scale=0.1), "BF16")})
        save_safetensors(os.path.join(c, "W_dec_%d.safetensors" % i), {"W_dec_%d" % i: (w(F, L - i, D), "BF16")})
    write(os.path.join(c, "config.yaml"), "model_name: google/gemma-2-2b\nmodel_kind: cross_layer_transcoder\n"
          "feature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\n")
    save_safetensors(os.path.join(c, "extra", "W_enc_0.safetensors"), {"x": (w(2), "F32")})   # not in the set's folder
    save_safetensors(os.path.join(c, "other.safetensors"), {"x": (w(2), "F32")})               # not a set file
    write(os.path.join(c, "README.md"), "# a cross-layer set\n")

    # a per-layer set without a list (circuit-tracer globs layer_*.safetensors)
    p = os.path.join(out, "mntss", "transcoder-Llama-3.2-1B")
    for l in range(L):
        os.makedirs(p, exist_ok=True)
        save_safetensors(os.path.join(p, "layer_%d.safetensors" % l), plt_layer(skip=True, threshold=False, dtype="BF16"))
    write(os.path.join(p, "config.yaml"), 'model_name: "meta-llama/Llama-3.2-1B"\nmodel_kind: "transcoder_set"\n'
          'feature_input_hook: "hook_resid_mid"\nfeature_output_hook: "mlp.hook_out"\n')
    write(os.path.join(p, "features", "index.json"), "{}\n")
    save_safetensors(os.path.join(p, "features", "layer_0.safetensors"), {"x": (w(2), "F32")})

    # a set in a subfolder, beside another width
    base = os.path.join(out, "mwhanna", "gemma-scope-2-1b-it", "transcoder_all")
    for width, n in (("width_16k_l0_small_affine", L), ("width_262k_l0_small_affine", 1)):
        d = os.path.join(base, width)
        os.makedirs(d, exist_ok=True)
        for l in range(n):
            save_safetensors(os.path.join(d, "layer_%d.safetensors" % l), plt_layer(skip=True, threshold=True, dtype="F32"))
        write(os.path.join(d, "config.yaml"), 'model_name: "google/gemma-3-1b-it"\nmodel_kind: "transcoder_set"\n'
              'feature_input_hook: "mlp.hook_in"\nfeature_output_hook: "hook_mlp_out"\n')
    write(os.path.join(out, "mwhanna", "gemma-scope-2-1b-it", "README.md"), "# GemmaScope-2 transcoders\n")

    # a repository whose root needs three pages of the tree listing
    t = os.path.join(out, "test", "wide")
    os.makedirs(t, exist_ok=True)
    for i in range(2500):
        with open(os.path.join(t, "note_%04d.txt" % i), "w") as f:
            f.write("%d\n" % i)
    for l in range(L):
        save_safetensors(os.path.join(t, "layer_%d.safetensors" % l), plt_layer(skip=False, threshold=False, dtype="F32"))
    write(os.path.join(t, "config.yaml"), "model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\n"
          "feature_output_hook: mlp.hook_out\n")


if __name__ == "__main__":
    main()
