#!/usr/bin/env bash
# Short libFuzzer runs (FUZZ_SECONDS, default 20 s each) of the safetensors, llama2.c, tokenizer,
# npz, .pt (PyTorch), graph JSON, yaml, Neuronpedia response, Hugging Face listing and config.json readers under AddressSanitizer and
# UBSan: any crash or sanitizer report fails.
cd "$(dirname "$0")/../.."
secs=${FUZZ_SECONDS:-20}
n=0; failed=0
check() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed+1)); fi; }
make -s fuzz > /dev/null 2>&1; check $? "fuzz targets build with clang -fsanitize=fuzzer,address,undefined"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
for t in safetensors llama2c tokenizer npz pt graph yaml neuronpedia hfconfig; do
  mkdir -p "$out/$t"
  ASAN_OPTIONS=detect_leaks=1 build/fuzz/fuzz_$t "$out/$t" tests/fuzz/seeds/$t -max_total_time="$secs" -rss_limit_mb=2048 \
    -max_len=65536 -artifact_prefix="$out/crash-" > "$out/$t.log" 2>&1
  rc=$?
  runs=$(grep -o "Done [0-9]* runs" "$out/$t.log" | awk '{print $2}')
  [ $rc -eq 0 ] && [ -n "$runs" ]; check $? "fuzz_$t: ${runs:-0} runs in $secs s without a crash"
  if [ $rc -ne 0 ]; then   # on stderr, so the CI log keeps it; the input that crashed is kept too
    grep -m12 -E "ERROR|runtime error|SUMMARY|#[0-9]+ 0x|Test unit written|Slowest unit|out-of-memory|timeout" "$out/$t.log" | sed 's/^/#   /' >&2
    mkdir -p build/test-artifacts && cp "$out"/crash-* build/test-artifacts/ 2>/dev/null
    for a in "$out"/crash-*; do [ -f "$a" ] && echo "#   $(basename "$a") (base64): $(base64 -w0 "$a" | head -c 400)" >&2; done
  fi
done
echo "1..$n"
[ $failed -eq 0 ]
