#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS (default 600) and prints runs and crashes.
#   bench/fuzz.sh [SECONDS]
set -u
cd "$(dirname "$0")/.."
secs=${1:-600}
make -s fuzz || exit 1
for t in safetensors llama2c tokenizer npz yaml; do
  corpus=build/fuzz/corpus-$t; mkdir -p "$corpus"
  log=build/fuzz/$t.log
  ASAN_OPTIONS=detect_leaks=1 build/fuzz/fuzz_$t "$corpus" tests/fuzz/seeds/$t -max_total_time="$secs" \
    -rss_limit_mb=2048 -max_len=65536 -artifact_prefix=build/fuzz/crash-$t- > "$log" 2>&1
  rc=$?
  runs=$(grep -o "Done [0-9]* runs" "$log" | awk '{print $2}')
  crashes=$(ls build/fuzz/crash-$t-* 2>/dev/null | wc -l)
  echo "fuzz_$t: ${runs:-0} runs in ${secs} s, exit $rc, $crashes crash files, corpus $(ls "$corpus" | wc -l) inputs"
done
