#!/usr/bin/env bash
# test_configs.sh - every config.yaml layout circuit-tracer reads loads (tests/fixtures/configs,
# see its README for the source of each text): the list of GemmaScope npz addresses
# (mntss/gemma-scope-transcoders), the forms without a list (mntss/transcoder-Llama-3.2-1B,
# the Qwen3 sets: layer_{i}.safetensors beside the config), the cross-layer directory
# (mntss/clt-gemma-2-2b-426k), the GemmaScope-2 pointer lists (per-layer and cross-layer), and
# the form before August 2025 (circuit-tracer's own gemmascope-l0-0.yaml and llama-relu.yaml:
# a list of {id, layer, filepath} maps, hf:// addresses with ?revision=). Each gives the kind,
# layer count, hooks, model name and activation of its config, and each layer the file named
# for it (tests/ref/make_configs.py writes every file with b_dec = layer + 0.5; a reconstruction
# of zero inputs reads it back). hf:// entries come from a Hugging Face cache made by the
# script, offline. Also: the older form with its entries in reverse order, and a config using
# anchors, a merge key, a folded scalar, flow style and document markers.
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${BUILD:-build}/ctrace
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! /usr/bin/python3 tests/ref/make_configs.py "$tmp"; then echo "not ok 1 - make_configs.py"; echo "1..1"; exit 1; fi
cat > "$tmp/check.lua" <<'LUA'
package.path = "tests/lua/?.lua;" .. package.path
local t = require "tap"
local ct = require "ctrace"
local sets = os.getenv("SETS")
local cases = {   -- set, kind, layers, input hook, output hook, model_name, activation
  {"ct-list-gemma-scope-transcoders", "plt", 26, "ln2.hook_normalized", "hook_mlp_out", "google/gemma-2-2b", "jump_relu"},
  {"ct-old-gemmascope-l0-0", "plt", 26, "ln2.hook_normalized", "hook_mlp_out", "google/gemma-2-2b", "jump_relu"},
  {"ct-old-llama-relu", "plt", 16, "hook_resid_mid", "mlp.hook_out", "meta-llama/Llama-3.2-1B", "relu"},
  {"ct-nolist-transcoder-Llama-3.2-1B", "plt", 16, "hook_resid_mid", "mlp.hook_out", "meta-llama/Llama-3.2-1B", "relu"},
  {"ct-nolist-qwen3-transcoders", "plt", 28, "mlp.hook_in", "mlp.hook_out", "Qwen/Qwen3-0.6B", "relu"},
  {"ct-clt-gemma-2-2b-426k", "clt", 26, "hook_resid_mid", "hook_mlp_out", "google/gemma-2-2b", "relu"},
  {"ct-gemma-scope-2-270m-pt-transcoders", "plt", 18, "mlp.hook_in", "hook_mlp_out", "google/gemma-3-270m", "jump_relu"},
  {"ct-gemma-scope-2-270m-pt-clt", "clt", 18, "hook_resid_mid", "hook_mlp_out", "google/gemma-3-270m", "jump_relu"},
  {"old-reversed", "plt", 3, "mlp.hook_in", "mlp.hook_out", "test/reversed", "relu"},
  {"yaml-features", "plt", 2, "mlp.hook_in", "mlp.hook_out", "2024", "relu"},
}
for _, c in ipairs(cases) do
  for _, path in ipairs {sets .. "/" .. c[1], sets .. "/" .. c[1] .. "/config.yaml"} do
    local ok, tc = pcall(ct.load_transcoders, path)
    if not ok then
      t.ok(false, c[1] .. " loads", tostring(tc))
    else
      local got = {tc.kind, tc.n_layers, tc.feature_input_hook, tc.feature_output_hook, tc.model_name, tc.activation}
      local same = true
      for i = 1, 6 do same = same and got[i] == c[i + 1] end
      t.ok(same, string.format("%s: %s, %d layers, %s -> %s, %s, %s", path:sub(#sets + 2), tc.kind,
                               tc.n_layers, tc.feature_input_hook, tc.feature_output_hook, tc.model_name, tc.activation),
           "got " .. table.concat({tostring(got[1]), tostring(got[2]), tostring(got[3]), tostring(got[4]), tostring(got[5]),
                                   tostring(got[6])}, ", "))
      local zeros = {}
      for l = 1, tc.n_layers do zeros[l] = ct.zeros(1, tc.d_model) end
      local rec, wrong = tc:reconstruct(zeros), {}
      for l = 1, tc.n_layers do
        if rec[l]:get(1, 1) ~= l - 0.5 then wrong[#wrong + 1] = string.format("layer %d has %g", l - 1, rec[l]:get(1, 1)) end
      end
      t.ok(#wrong == 0, c[1] .. ": every layer has the file named for it", table.concat(wrong, "; "))
    end
  end
end
t.done()
LUA
HF_HUB_CACHE="$tmp/hub" HF_HUB_OFFLINE=1 SETS="$tmp/sets" "$CTRACE" "$tmp/check.lua"
