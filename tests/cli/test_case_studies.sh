#!/usr/bin/env bash
# test_case_studies.sh - every case study with an expected/summary.json runs and reproduces it
# (numbers within 1e-4: they are rounded to 1e-6 and come from float32 arithmetic whose order can
# follow the machine's BLAS kernels).
set -u
cd "$(dirname "$0")/../.."
CTRACE=${BUILD:-build}/ctrace
n=0
fail=0
for exp in experiments/*/expected/summary.json; do
  dir=${exp%/expected/summary.json}
  n=$((n + 1))
  if out=$("$CTRACE" "$dir/experiment.lua" 2>&1 >/dev/null) &&
     out=$("$CTRACE" tests/cli/compare_summary.lua "$exp" "$dir/results/summary.json" 2>&1); then
    echo "ok $n - $dir reproduces expected/summary.json"
  else
    echo "not ok $n - $dir: $out"
    fail=1
  fi
done
echo "1..$n"
exit $fail
