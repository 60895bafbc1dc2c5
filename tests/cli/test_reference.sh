#!/usr/bin/env bash
# Every Hugging Face family against an independent numpy implementation (tests/ref): the tiny
# random checkpoints of test_families (F32, F16, BF16; six families) give the same logits to 1e-4.
cd "$(dirname "$0")/../.."
B=${CTRACE_BUILD:-build}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
CTRACE_FAMILIES_DIR=$out "$B/tests/test_families" > "$out/families.log" 2>&1
n=0; failed=0
for d in "$out"/*ForCausalLM-* "$out"/*ForConditionalGeneration-* "$out"/GPT2LMHeadModel-*; do
  case "$d" in *-resaved) continue;; esac
  [ -f "$d/logits.f32" ] || continue
  n=$((n+1))
  line=$(/usr/bin/python3 tests/ref/hf_reference.py "$d" "$d/logits.f32" 0 3 4 3 2 5 3 8 2>&1)
  rc=$?
  echo "$line" | sed "s/^ok - /ok $n - /; s/^not ok - /not ok $n - /"
  [ $rc -eq 0 ] || failed=$((failed+1))
done
[ $n -ge 18 ] || { n=$((n+1)); echo "not ok $n - expected 18 checkpoints, found $((n-1))"; failed=$((failed+1)); }
echo "1..$n"
[ $failed -eq 0 ]
