#!/usr/bin/python3
"""Builds transcoder files in every format ctrace reads, with numpy alone, and the dense
reference results ctrace must reproduce. Test tooling only.

    make_transcoders.py OUTDIR

Each case OUTDIR/<case>/ holds the files, x.txt (inputs, one line per layer) and expected.txt:
lines "<name> <values...>" for pre_<l>, act_<l>, dec_<l>_<target> (acts through one decoder
slice, no bias) and recon_<l> (every decoder into layer l, plus b_dec and skip).
"""
import json
import os
import struct
import sys

import numpy as np

rng = np.random.default_rng(1234)
D, F, T = 16, 40, 5


def save_safetensors(path, tensors, pad_to=8):
    """pad_to: the header's length is padded to a multiple of it (1: not padded, so the data of
    tensors whose sizes are multiples of 4 starts off 4-byte alignment when the header is odd)."""
    header, blobs, off = {}, [], 0
    for name, (arr, dtype) in tensors.items():
        if dtype == "F16":
            raw = np.asarray(arr, dtype="<f2").tobytes()
            vals = np.asarray(arr, dtype=np.float16).astype(np.float32)
        elif dtype == "BF16":
            u = np.asarray(arr, dtype=np.float32).view(np.uint32)
            raw = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()
            vals = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).view(np.float32)   # what the file holds
        elif dtype == "I64":
            raw = np.asarray(arr, dtype="<i8").tobytes()
            vals = arr
        else:
            raw = np.asarray(arr, dtype="<f4").tobytes()
            vals = arr
        header[name] = {"dtype": dtype, "shape": list(np.shape(arr)), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
        tensors[name] = (vals, dtype)
    h = json.dumps(header).encode()
    h += b" " * ((pad_to - len(h) % pad_to) % pad_to)
    if pad_to == 1 and len(h) % 4 == 0:
        h += b" "
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def act_fn(pre, kind, thr=None, k=None):
    if kind == "jump_relu":
        return pre * (pre > thr)
    if kind == "topk":
        # circuit-tracer's TopK: the k largest pre-activations of a row kept as they are (negative
        # ones too), the rest zero; no ReLU. Equal values: the lower index first (stable sort).
        out = np.zeros_like(pre)
        idx = np.argsort(-pre, axis=-1, kind="stable")[:, :k]
        rows = np.arange(pre.shape[0])[:, None]
        out[rows, idx] = pre[rows, idx]
        return out
    return np.maximum(pre, 0)


def write_case(out, name, layers, kind, skip_mode=None, n_layers=None):
    """layers: list of dicts W_enc (F, D), W_dec (F, n_out, D), b_enc, b_dec, threshold, W_skip."""
    d = os.path.join(out, name)
    L = len(layers)
    xs = [rng.standard_normal((T, p["W_enc"].shape[1])).astype(np.float32) for p in layers]
    # the reference runs in float64 on the float32 values the files hold
    layers = [{k: (np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else v) for k, v in p.items()} for p in layers]
    lines, recon, acts = [], [np.tile(layers[l]["b_dec"], (T, 1)) for l in range(L)], []
    for l, p in enumerate(layers):
        xs64 = xs[l].astype(np.float64)
        pre = xs64 @ p["W_enc"].T + p["b_enc"]
        act = act_fn(pre, kind, p.get("threshold"), p.get("k"))
        acts.append(act)
        lines.append(("pre_%d" % l, pre))
        lines.append(("act_%d" % l, act))
        Fl = p["W_enc"].shape[0]
        for f in sorted({0, 1, Fl // 2, Fl - 1}):   # encoder rows, exactly as the file holds them
            lines.append(("encrow_%d_%d" % (l, f), p["W_enc"][f]))
        for j in range(p["W_dec"].shape[1]):
            dec = act @ p["W_dec"][:, j, :]
            lines.append(("dec_%d_%d" % (l, l + j), dec))
            recon[l + j] = recon[l + j] + dec
        if p.get("W_skip") is not None:
            recon[l] = recon[l] + (xs64 @ p["W_skip"].T if skip_mode == "xwt" else xs64 @ p["W_skip"])
    for l in range(L):
        lines.append(("recon_%d" % l, recon[l]))
    with open(os.path.join(d, "x.txt"), "w") as f:
        for x in xs:
            f.write(" ".join("%.9g" % v for v in x.ravel()) + "\n")
    with open(os.path.join(d, "expected.txt"), "w") as f:
        for n, v in lines:   # encoder rows to 17 digits: the float32 values exactly
            fmt = "%.17g" if n.startswith("encrow_") else "%.9g"
            f.write(n + " " + " ".join(fmt % x for x in np.asarray(v, dtype=np.float64).ravel()) + "\n")
    return acts


def plt_params(threshold=True, skip=False, f=F, d=D, shift=0.0, enc_scale=0.5, dec_scale=0.3):
    """shift: added to b_enc (negative: fewer active features)."""
    p = {"W_enc": rng.standard_normal((f, d)).astype(np.float32) * np.float32(enc_scale),
         "W_dec": rng.standard_normal((f, 1, d)).astype(np.float32) * np.float32(dec_scale),
         "b_enc": rng.standard_normal(f).astype(np.float32) * 0.1 + np.float32(shift),
         "b_dec": rng.standard_normal(d).astype(np.float32) * 0.1}
    if threshold:
        p["threshold"] = rng.uniform(0, 0.5, f).astype(np.float32)
    if skip:
        p["W_skip"] = rng.standard_normal((d, d)).astype(np.float32) * 0.1
    return p


def main():
    out = sys.argv[1]
    # GemmaScope params.npz, stored and deflated: W_enc (D, F), JumpReLU threshold
    for case, save in (("gemmascope_stored", np.savez), ("gemmascope_deflated", np.savez_compressed)):
        os.makedirs(os.path.join(out, case), exist_ok=True)
        p = plt_params()
        save(os.path.join(out, case, "params.npz"), W_enc=p["W_enc"].T.copy(), W_dec=p["W_dec"][:, 0, :],
             b_enc=p["b_enc"], b_dec=p["b_dec"], threshold=p["threshold"])
        write_case(out, case, [p], "jump_relu")
    # circuit-tracer layout, two layers, skip, JumpReLU, config.yaml with hooks
    case = "circuit_tracer"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    ps = [plt_params(skip=True) for _ in range(2)]
    for l, p in enumerate(ps):
        save_safetensors(os.path.join(out, case, "layer_%d.safetensors" % l),
                         {"W_enc": (p["W_enc"], "F32"), "W_dec": (p["W_dec"][:, 0, :], "F32"), "b_enc": (p["b_enc"], "F32"),
                          "b_dec": (p["b_dec"], "F32"), "activation_function.threshold": (p["threshold"], "F32"),
                          "W_skip": (p["W_skip"], "F32")})
    with open(os.path.join(out, case, "config.yaml"), "w") as f:
        f.write("# a per-layer set\nmodel_name: test/tiny\nmodel_kind: transcoder_set\n"
                "feature_input_hook: \"mlp.hook_in\"\nfeature_output_hook: 'mlp.hook_out'\n"
                "transcoders:\n  - layer_0.safetensors\n  - layer_1.safetensors\n")
    write_case(out, case, ps, "jump_relu", "xwt")
    # older layout: W_dec stored (D, F), ReLU, BF16 decoder
    case = "circuit_tracer_old"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    p = plt_params(threshold=False)
    t = {"W_enc": (p["W_enc"], "F32"), "W_dec": (p["W_dec"][:, 0, :].T.copy(), "BF16"), "b_enc": (p["b_enc"], "F32"),
         "b_dec": (p["b_dec"], "F32")}
    save_safetensors(os.path.join(out, case, "layer_0.safetensors"), t)
    p["W_dec"] = t["W_dec"][0].T.reshape(F, 1, D)   # the BF16 values the file holds
    write_case(out, case, [p], "relu")
    # TopK with a scalar k in the file (circuit-tracer's to_safetensors); encoder biases pushed down
    # so that many kept pre-activations are negative (they stay as they are)
    case = "topk"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    p = plt_params(threshold=False)
    p["b_enc"] = (p["b_enc"] - 3.0).astype(np.float32)
    p["k"] = 4
    save_safetensors(os.path.join(out, case, "layer_0.safetensors"),
                     {"W_enc": (p["W_enc"], "F32"), "W_dec": (p["W_dec"][:, 0, :], "F32"), "b_enc": (p["b_enc"], "F32"),
                      "b_dec": (p["b_dec"], "F32"), "k": (np.array(4), "I64")})
    acts = write_case(out, case, [p], "topk")
    assert (acts[0] < 0).sum() >= 5 and (acts[0] > 0).sum() >= 5, "the topk case needs kept values of both signs"
    # TopK named in config.yaml, no transcoders list (the form ctrace writes and circuit-tracer
    # globs): two layers with a skip, k = 3, most kept values negative
    case = "topk_config"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    ps = [plt_params(threshold=False, skip=True) for _ in range(2)]
    for l, p in enumerate(ps):
        p["b_enc"] = (p["b_enc"] - 6.0).astype(np.float32)
        p["k"] = 3
        save_safetensors(os.path.join(out, case, "layer_%d.safetensors" % l),
                         {"W_enc": (p["W_enc"], "F32"), "W_dec": (p["W_dec"][:, 0, :], "F32"), "b_enc": (p["b_enc"], "F32"),
                          "b_dec": (p["b_dec"], "F32"), "W_skip": (p["W_skip"], "F32")})
    with open(os.path.join(out, case, "config.yaml"), "w") as f:
        f.write("model_name: test/tiny\nmodel_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\n"
                "feature_output_hook: mlp.hook_out\nactivation: topk\nk: 3\n")
    acts = write_case(out, case, ps, "topk", "xwt")
    assert all((a < 0).sum() > (a > 0).sum() for a in acts), "topk_config: most kept values negative"
    # a hand-worked TopK set (d_model 2, 5 features, k 3): its expected values are written by hand
    # in tests/lua/test_transcoders.lua, not computed here
    case = "topk_hand"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    f32 = lambda v: np.array(v, dtype=np.float32)
    save_safetensors(os.path.join(out, case, "layer_0.safetensors"),
                     {"W_enc": (f32([[1, 0], [0, 1], [1, 1], [-1, 0], [0, -1]]), "F32"),
                      "W_dec": (f32([[1, 0], [0, 1], [1, 1], [2, 0], [0, 2]]), "F32"),
                      "b_enc": (f32([-0.5] * 5), "F32"), "b_dec": (f32([0.1, -0.1]), "F32")})
    with open(os.path.join(out, case, "config.yaml"), "w") as f:
        f.write("model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n"
                "activation: topk\nk: 3\n")
    # GemmaScope-2 keys: w_enc (D, F), affine skip x A
    case = "gemmascope2"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    p = plt_params(skip=True)
    save_safetensors(os.path.join(out, case, "params.safetensors"),
                     {"w_enc": (p["W_enc"].T.copy(), "F32"), "w_dec": (p["W_dec"][:, 0, :], "F32"), "b_enc": (p["b_enc"], "F32"),
                      "b_dec": (p["b_dec"], "F32"), "threshold": (p["threshold"], "F32"),
                      "affine_skip_connection": (p["W_skip"], "F32")})
    write_case(out, case, [p], "jump_relu", "xw")
    # cross-layer transcoder directory, 3 layers, BF16 decoders, JumpReLU
    case = "clt"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    L = 3
    ps = []
    for i in range(L):
        p = plt_params()
        p["W_dec"] = rng.standard_normal((F, L - i, D)).astype(np.float32) * 0.3
        e = {"W_enc_%d" % i: (p["W_enc"], "F32"), "b_enc_%d" % i: (p["b_enc"], "F32"), "b_dec_%d" % i: (p["b_dec"], "F32"),
             "threshold_%d" % i: (p["threshold"], "F32")}
        dd = {"W_dec_%d" % i: (p["W_dec"], "BF16")}
        save_safetensors(os.path.join(out, case, "W_enc_%d.safetensors" % i), e)
        save_safetensors(os.path.join(out, case, "W_dec_%d.safetensors" % i), dd)
        p["W_dec"] = dd["W_dec_%d" % i][0]
        ps.append(p)
    with open(os.path.join(out, case, "config.yaml"), "w") as f:
        f.write("model_name: test/tiny\nmodel_kind: cross_layer_transcoder\nfeature_input_hook: hook_resid_mid\n"
                "feature_output_hook: hook_mlp_out\n")
    write_case(out, case, ps, "jump_relu")
    # GemmaScope-2 cross-layer: one file per layer with w_dec (F, L, D), layer i using slices i..
    case = "gemmascope2_clt"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    ps = []
    for i in range(L):
        p = plt_params(skip=(i == 1))
        full = rng.standard_normal((F, L, D)).astype(np.float32) * 0.3
        t = {"w_enc": (p["W_enc"].T.copy(), "F32"), "w_dec": (full, "BF16"), "b_enc": (p["b_enc"], "F32"),
             "b_dec": (p["b_dec"], "F32"), "threshold": (p["threshold"], "F32")}
        if i == 1:
            t["affine_skip_connection"] = (p["W_skip"], "F32")
        save_safetensors(os.path.join(out, case, "layer_%d.safetensors" % i), t)
        p["W_dec"] = t["w_dec"][0][:, i:, :]
        ps.append(p)
    with open(os.path.join(out, case, "config.yaml"), "w") as f:
        f.write("model_kind: cross_layer_transcoder\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: hook_mlp_out\n"
                "transcoders:\n" + "".join("  - layer_%d.safetensors\n" % i for i in range(L)))
    write_case(out, case, ps, "jump_relu", "xw")
    make_wide(out)
    make_bad(out)


# Wide sets: encoders of WF features read in several tiles (ctrace converts about 2^19 floats a
# tile: 4096 features of d_model WD) and a last, partial one; each stored layout and dtype.
# Pre-activations are N(0, 1) around b_enc (encoder entries N(0, 1/128)); b_enc shifted by -2.6
# leaves about 0.5% (~40) features active; decoder entries N(0, 0.01) keep the encoder's float32
# rounding, summed over them, as small as the small sets'.
WD, WF, WSHIFT = 128, 2 * 4096 + 40, -2.6


def make_wide(out):
    def st_case(case, enc_dtype, dec_dtype="F32", pad_to=8, skip=False, threshold=False, act="relu"):
        os.makedirs(os.path.join(out, case), exist_ok=True)
        p = plt_params(threshold=threshold, skip=skip, f=WF, d=WD, shift=WSHIFT, enc_scale=0.0884, dec_scale=0.1)
        t = {"W_enc": (p["W_enc"], enc_dtype), "W_dec": (p["W_dec"][:, 0, :], dec_dtype), "b_enc": (p["b_enc"], "F32"),
             "b_dec": (p["b_dec"], "F32")}
        if threshold:
            t["activation_function.threshold"] = (p["threshold"], "F32")
        if skip:
            t["W_skip"] = (p["W_skip"], "BF16")
        save_safetensors(os.path.join(out, case, "layer_0.safetensors"), t, pad_to)
        p["W_enc"] = np.asarray(t["W_enc"][0], np.float32)   # the values the file holds
        p["W_dec"] = np.asarray(t["W_dec"][0], np.float32).reshape(WF, 1, WD)
        if skip:
            p["W_skip"] = np.asarray(t["W_skip"][0], np.float32)
        write_case(out, case, [p], act, "xwt")
    # GemmaScope npz (stored: members unaligned within the archive), W_enc (D, F)
    os.makedirs(os.path.join(out, "wide_npz"), exist_ok=True)
    p = plt_params(f=WF, d=WD, shift=WSHIFT, enc_scale=0.0884, dec_scale=0.1)
    np.savez(os.path.join(out, "wide_npz", "params.npz"), W_enc=p["W_enc"].T.copy(), W_dec=p["W_dec"][:, 0, :],
             b_enc=p["b_enc"], b_dec=p["b_dec"], threshold=p["threshold"])
    write_case(out, "wide_npz", [p], "jump_relu")
    # circuit-tracer layout, (F, D): bf16 as the published Llama and Qwen sets (decoder and skip
    # bf16 too), f16, and float32 whose data is not 4-byte aligned in the file
    st_case("wide_bf16", "BF16", "BF16", skip=True)
    st_case("wide_f16", "F16", threshold=True, act="jump_relu")
    st_case("wide_f32_unaligned", "F32", pad_to=1)
    # a cross-layer set stored as the published ones: bf16 encoders and decoders, 2 layers
    case = "wide_clt_bf16"
    os.makedirs(os.path.join(out, case), exist_ok=True)
    ps = []
    for i in range(2):
        p = plt_params(threshold=False, f=WF, d=WD, shift=WSHIFT, enc_scale=0.0884, dec_scale=0.1)
        p["W_dec"] = rng.standard_normal((WF, 2 - i, WD)).astype(np.float32) * 0.1
        e = {"W_enc_%d" % i: (p["W_enc"], "BF16"), "b_enc_%d" % i: (p["b_enc"], "BF16"), "b_dec_%d" % i: (p["b_dec"], "BF16")}
        dd = {"W_dec_%d" % i: (p["W_dec"], "BF16")}
        save_safetensors(os.path.join(out, case, "W_enc_%d.safetensors" % i), e)
        save_safetensors(os.path.join(out, case, "W_dec_%d.safetensors" % i), dd)
        p["W_enc"], p["b_enc"], p["b_dec"] = (np.asarray(e[k][0], np.float32) for k in ("W_enc_%d" % i, "b_enc_%d" % i,
                                                                                           "b_dec_%d" % i))
        p["W_dec"] = np.asarray(dd["W_dec_%d" % i][0], np.float32)
        ps.append(p)
    write_case(out, case, ps, "relu")


def make_bad(out):
    """Damaged inputs: each must give a clear error."""
    b = os.path.join(out, "bad")
    os.makedirs(b, exist_ok=True)
    p = plt_params()
    w = dict(W_enc=p["W_enc"].T.copy(), W_dec=p["W_dec"][:, 0, :], b_enc=p["b_enc"], b_dec=p["b_dec"], threshold=p["threshold"])
    np.savez(os.path.join(b, "fortran.npz"), **dict(w, W_enc=np.asfortranarray(w["W_enc"])))
    np.savez(os.path.join(b, "bigendian.npz"), **dict(w, W_enc=w["W_enc"].astype(">f4")))
    np.savez(os.path.join(b, "good.npz"), **w)
    raw = open(os.path.join(b, "good.npz"), "rb").read()
    cd = raw.rfind(b"PK\x01\x02")   # damage the last central directory entry's signature
    open(os.path.join(b, "corrupt_directory.npz"), "wb").write(raw[:cd] + b"XX" + raw[cd + 2:])
    open(os.path.join(b, "truncated.npz"), "wb").write(raw[: len(raw) // 2])
    # one byte of a member's data flipped: the decoder (never read whole by ctrace) and the encoder
    for member in ("W_dec", "W_enc"):
        hdr = raw.find(member.encode() + b".npy")               # its local header's name
        data = raw.find(b"\x93NUMPY", hdr) + 128 + 5             # inside the array data
        bad = bytearray(raw)
        bad[data] ^= 0x10
        open(os.path.join(b, "flipped_%s.npz" % member), "wb").write(bytes(bad))
    # config.yaml with a syntax error on line 4
    d = os.path.join(b, "yaml_syntax")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "config.yaml"), "w").write('model_name: x\nmodel_kind: transcoder_set\n'
                                                     'feature_input_hook: mlp.hook_in\nfeature_output_hook "mlp.hook_out"\n')
    # unknown activation, duplicate layer, missing layer, TopK k above the layers' 40 features
    lay = {"W_enc": (p["W_enc"], "F32"), "W_dec": (p["W_dec"][:, 0, :], "F32"), "b_enc": (p["b_enc"], "F32"),
           "b_dec": (p["b_dec"], "F32")}
    for case, files, cfg in (
            ("unknown_activation", [0, 1], "activation: gelu\n"),
            ("duplicate_layer", [0, 1], "transcoders:\n  - layer_0.safetensors\n  - layer_0.safetensors\n"),
            ("missing_layer", [0, 2], None),
            ("topk_k_too_big", [0, 1], "activation: topk\nk: 41\n")):
        d = os.path.join(b, case)
        os.makedirs(d, exist_ok=True)
        for i in files:
            save_safetensors(os.path.join(d, "layer_%d.safetensors" % i), dict(lay))
        if cfg:
            open(os.path.join(d, "config.yaml"), "w").write("model_kind: transcoder_set\n" + cfg)
    # stories260K-shaped sets (5 layers, d_model 64): one with hooks the model has, one without
    for case, hook in (("stories_hooks_ok", "mlp.hook_in"), ("stories_hooks_bad", "mlp.hook_nonexistent")):
        d = os.path.join(b, case)
        os.makedirs(d, exist_ok=True)
        for i in range(5):
            q = {"W_enc": (rng.standard_normal((8, 64)).astype(np.float32), "F32"),
                 "W_dec": (rng.standard_normal((8, 64)).astype(np.float32), "F32"),
                 "b_enc": (np.zeros(8, np.float32), "F32"), "b_dec": (np.zeros(64, np.float32), "F32")}
            save_safetensors(os.path.join(d, "layer_%d.safetensors" % i), q)
        open(os.path.join(d, "config.yaml"), "w").write(
            "model_kind: transcoder_set\nfeature_input_hook: %s\nfeature_output_hook: mlp.hook_out\n" % hook)


if __name__ == "__main__":
    main()
