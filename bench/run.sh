#!/usr/bin/env bash
# Benchmarks (figures only; nothing here asserts on time). Runs on this machine, in one go:
# the OpenBLAS sgemm ceiling, ctrace's generation and prompt forward on stories260K, and the
# plain single-file C peer (bench/ref_llama2c.c, -O3) on the same checkpoint.
set -eu
cd "$(dirname "$0")/.."
make -s all
mkdir -p build/bench
cc -O3 -o build/bench/ref_llama2c bench/ref_llama2c.c -lm
cc -O2 $(pkg-config --cflags openblas) -o build/bench/sgemm bench/sgemm.c $(pkg-config --libs openblas)
MODELS=${CTRACE_MODELS:-../shared/models}
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
build/bench/sgemm
build/ctrace bench/generate.lua 256 21
build/bench/ref_llama2c "$MODELS/stories260K/stories260K.bin" 256 21
cc -O2 -std=c11 -D_GNU_SOURCE -Iengine $(pkg-config --cflags openblas) -o build/bench/bench_transcoder bench/bench_transcoder.c \
  build/libctrace.a $(pkg-config --libs luajit libcjson libcurl openblas libutf8proc zlib) -lm -lpthread
build/bench/bench_transcoder
build/ctrace bench/train.lua
