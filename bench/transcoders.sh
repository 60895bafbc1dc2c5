#!/usr/bin/env bash
# Transcoder sets at their real size (figures only; nothing asserts on time): writes a
# size-faithful GemmaScope 2b 16k set (npz, float32 encoders stored [d_model, features]) and a
# Llama-3.2-1B-shaped bf16 set (safetensors, 131,072 features a layer) with bench/make_tc_sets.py,
# runs bench/bench_transcoder on each (load time from the page cache, memory, encode GFLOP/s
# beside sgemm at the same shape, sparse decode) and removes them.
#   bench/transcoders.sh [GEMMASCOPE_LAYERS (26)] [LLAMA_LAYERS (4)] [DIR (build/bench/sets)]
# Disk: 302 MB a GemmaScope layer (7.86 GB for 26), 1.08 GB a Llama layer, one set at a time.
set -eu
cd "$(dirname "$0")/.."
gs_layers=${1:-26}
llama_layers=${2:-4}
dir=${3:-build/bench/sets}
make -s all
core=$(build/ctrace -e 'io.write(os.getenv("OPENBLAS_CORETYPE") or "")')
if [ -n "$core" ]; then export OPENBLAS_CORETYPE="$core"; fi
mkdir -p build/bench
LIBS="build/libctrace.a $(pkg-config --libs libseccomp luajit libcjson libcurl openblas libutf8proc yaml-0.1 zlib) -lm -lpthread"
cc -O2 -std=c11 -D_GNU_SOURCE -Iengine $(pkg-config --cflags openblas) -o build/bench/bench_transcoder bench/bench_transcoder.c $LIBS
trap 'rm -rf "$dir"' EXIT
for set in "gemmascope $gs_layers config.yaml" "llama $llama_layers ."; do
  read -r kind layers entry <<<"$set"
  rm -rf "$dir"
  mkdir -p "$dir"
  SECONDS=0
  /usr/bin/python3 bench/make_tc_sets.py "$kind" "$dir" "$layers" >/dev/null
  echo "# $kind: $layers layers written in $SECONDS s"
  build/bench/bench_transcoder "$dir/$entry" 11 64
done
