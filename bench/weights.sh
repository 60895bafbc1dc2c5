#!/usr/bin/env bash
# weights.sh - a checkpoint of Llama-3.2-1B's shapes stored in BF16 (random weights written by
# bench/make_llama.py into $TMPDIR: 2.47 GB, removed at the end): load time, peak RSS and peak
# anonymous memory, prompt forward passes at 16 and 256 tokens against sgemm at the same shapes,
# greedy generation tokens/s against the memory-bandwidth bound (bench/bench_weights.c). Figures
# only; nothing asserts on time.
#   bench/weights.sh [make_llama.py options, e.g. --dtype F16 --layers 4]
# BASE=<another ctrace checkout, built> runs the same program on that build's library too and
# compares the two builds' logits; REF=1 also runs the numpy reference (tests/ref/hf_reference.py,
# about 10 GB of memory at this size); MODEL=<dir> uses a checkpoint already written (kept).
set -eu
cd "$(dirname "$0")/.."
make -s build/libctrace.a
core=$(make -s all >/dev/null && build/ctrace -e 'io.write(os.getenv("OPENBLAS_CORETYPE") or "")')
if [ -n "$core" ]; then export OPENBLAS_CORETYPE="$core"; fi
mkdir -p build/bench
LIBS="$(pkg-config --libs libseccomp luajit libcjson libcurl openblas libutf8proc yaml-0.1 zlib) -lm -lpthread"
CF="-O2 -std=c11 -D_GNU_SOURCE $(pkg-config --cflags openblas)"
cc $CF -Iengine -o build/bench/bench_weights bench/bench_weights.c build/libctrace.a $LIBS
dir=$(mktemp -d "${TMPDIR:-/tmp}/ctrace-weights-XXXXXX")
trap 'rm -rf "$dir"' EXIT
model=${MODEL:-$dir/model}
if [ -z "${MODEL:-}" ]; then
  t0=$(date +%s%N)
  /usr/bin/python3 bench/make_llama.py "$model" "$@"
  echo "# written in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
fi
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), OpenBLAS kernels: ${OPENBLAS_CORETYPE:-as detected}"
elem=2
case " $* " in *" --dtype F32 "*) elem=4;; esac
echo "## this build"
build/bench/bench_weights "$model" $elem "$dir/logits.f32" | tee "$dir/out.txt"
ids=$(sed -n 's/.*logits ([0-9]*, [0-9]*) of the ids \(.*\) in .*/\1/p' "$dir/out.txt")
if [ -n "${BASE:-}" ]; then
  echo "## $BASE (float32 copies of the weights: 4 bytes an element)"
  cc $CF -I"$BASE/engine" -o "$dir/bench_base" bench/bench_weights.c "$BASE/build/libctrace.a" $LIBS
  "$dir/bench_base" "$model" 4 "$dir/logits-base.f32"
  /usr/bin/python3 - "$dir/logits.f32" "$dir/logits-base.f32" <<'PY'
import sys
import numpy as np
a, b = (np.fromfile(p, dtype="<f4").astype(np.float64) for p in sys.argv[1:3])
d = np.abs(a - b)
print("  logits of the two builds (16 positions x vocabulary): max |diff| %.3g, max |diff| / (1 + |x|) %.3g, "
      "identical %.1f%%, mean |x| %.3g" % (d.max(), (d / (1 + np.abs(b))).max(), 100.0 * np.mean(d == 0), np.abs(b).mean()))
PY
fi
if [ "${REF:-0}" = 1 ]; then
  echo "## numpy reference"
  /usr/bin/python3 tests/ref/hf_reference.py "$model" "$dir/logits.f32" $ids || true
fi
