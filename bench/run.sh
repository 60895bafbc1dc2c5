#!/usr/bin/env bash
# Benchmarks (figures only; nothing here asserts on time). Runs on this machine, in one go:
# the OpenBLAS sgemm ceiling, ctrace's generation and prompt forward on stories260K, the plain
# single-file C peer (bench/ref_llama2c.c, -O3) on the same checkpoint, transcoder encoding and
# training, attribution graphs (bench/bench_attribution.c: one process per configuration, so
# each reports its own peak RSS), interventions (bench/intervene.lua) and feature labels over
# HTTP from a loopback server (bench/labels.sh), the cost of ctrace run's sandbox on the main
# job (bench/sandbox.sh), and a BF16 checkpoint of Llama-3.2-1B's shapes used as stored
# (bench/weights.sh: writes 2.47 GB to $TMPDIR and removes it). Transcoder sets at their real
# size are bench/transcoders.sh (several GB of disk; not run here).
set -eu
cd "$(dirname "$0")/.."
make -s all
# the OpenBLAS kernels ctrace itself picks (see ct_blas_better_core), for the C programs too
core=$(build/ctrace -e 'io.write(os.getenv("OPENBLAS_CORETYPE") or "")')
if [ -n "$core" ]; then export OPENBLAS_CORETYPE="$core"; fi
mkdir -p build/bench
LIBS="build/libctrace.a $(pkg-config --libs libseccomp luajit libcjson libcurl openblas libutf8proc yaml-0.1 zlib) -lm -lpthread"
cc -O3 -o build/bench/ref_llama2c bench/ref_llama2c.c -lm
cc -O2 $(pkg-config --cflags openblas) -o build/bench/sgemm bench/sgemm.c $(pkg-config --libs openblas)
cc -O2 -std=c11 -D_GNU_SOURCE -Iengine $(pkg-config --cflags openblas) -o build/bench/bench_transcoder bench/bench_transcoder.c $LIBS
cc -O2 -std=c11 -D_GNU_SOURCE -Iengine $(pkg-config --cflags openblas) -o build/bench/bench_attribution bench/bench_attribution.c $LIBS
MODELS=${CTRACE_MODELS:-../shared/models}
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), OpenBLAS kernels: ${OPENBLAS_CORETYPE:-as detected}"
build/bench/sgemm
build/ctrace bench/generate.lua 256 21
build/bench/ref_llama2c "$MODELS/stories260K/stories260K.bin" 256 21
build/bench/bench_transcoder
build/ctrace bench/train.lua
for config in peer-stories peer-random stories large long; do
  build/bench/bench_attribution "$config"
done
build/ctrace bench/intervene.lua
bench/labels.sh
bench/sandbox.sh
bench/weights.sh
