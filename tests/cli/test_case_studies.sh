#!/usr/bin/env bash
# test_case_studies.sh - ctrace run / check / new on case-study folders: every folder with an
# expected/ passes `ctrace check` (numbers within the folder's tolerance, 1e-4 by default: they are
# rounded to 1e-6 and come from float32 arithmetic whose order can follow the BLAS kernels);
# a changed expected number makes check fail and name it; `ctrace new` makes a folder that runs.
set -u
cd "$(dirname "$0")/../.."
CTRACE=${BUILD:-build}/ctrace
n=0
fail=0
t() {   # t description command...
  n=$((n + 1))
  if out=$("${@:2}" 2>&1); then echo "ok $n - $1"; else echo "not ok $n - $1"; echo "$out" | sed 's/^/#   /'; fail=1; fi
}
for exp in experiments/*/expected; do
  dir=${exp%/expected}
  t "ctrace check $dir" "$CTRACE" check "$dir"
  t "$dir: manifest with hashes and attributions" grep -q '"sha256"' "$dir/results/manifest.json"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the same folder run twice gives the same numbers, byte for byte (every results file but the
# manifest, which holds timings)
same_twice() {
  local dir=$1
  "$CTRACE" run "$dir" > /dev/null 2>&1 || return 1
  mkdir -p "$tmp/first" && cp "$dir"/results/* "$tmp/first/"
  "$CTRACE" run "$dir" > /dev/null 2>&1 || return 1
  for f in "$tmp"/first/*; do
    b=$(basename "$f")
    [ "$b" = manifest.json ] && continue
    cmp -s "$f" "$dir/results/$b" || { echo "$b differs"; return 1; }
  done
  rm -rf "$tmp/first"
}
t "experiments/stories260K-lily-she twice: identical results" same_twice experiments/stories260K-lily-she
# a changed expected number: check fails and names it
cp -r experiments/stories260K-lily-she "$tmp/lily"
sed -i 's/"tokens":	17/"tokens":	18/' "$tmp/lily/expected/summary.json"
t "check reports a changed number" bash -c "! '$CTRACE' check '$tmp/lily' > '$tmp/out' 2>&1 && grep -q 'summary.json.summary.tokens\|summary.json.tokens: expected 18, got 17' '$tmp/out'"
# a list one entry shorter in expected/ (a supernode gone): check fails and says so
cp -r experiments/stories260K-lily-she "$tmp/lily-list"
"$CTRACE" -e '
local ct = require "ctrace"
local p = "'"$tmp"'/lily-list/expected/summary.json"
local f = assert(io.open(p)); local s = ct.json_decode(f:read("*a")); f:close()
table.remove(s.supernodes)
ct.write_json(p, s)'
t "check reports a list of another length" bash -c "! '$CTRACE' check --no-run '$tmp/lily-list' > '$tmp/out2' 2>&1 && grep -q 'summary.json.supernodes: expected 47 entries, got 48' '$tmp/out2'"
# new: a folder that runs as is
t "ctrace new makes a folder" "$CTRACE" new "$tmp/demo"
t "the new folder runs" "$CTRACE" run "$tmp/demo"
t "it wrote its graph and summary" test -s "$tmp/demo/results/graph.json" -a -s "$tmp/demo/results/summary.json"
t "new refuses an existing folder" bash -c "! '$CTRACE' new '$tmp/demo' 2>/dev/null"
t "run --help" bash -c "'$CTRACE' run --help | grep -q manifest"
t "run without a folder exits 2" bash -c "'$CTRACE' run 2>/dev/null; test \$? -eq 2"
t "run of a folder without experiment.lua fails clearly" bash -c "! '$CTRACE' run '$tmp' 2> '$tmp/err'; grep -q 'experiment.lua does not exist' '$tmp/err'"
echo "1..$n"
exit $fail
