#!/usr/bin/env bash
# scale.sh - the published models and transcoder sets at their real size, on replicas
# (bench/replicas: the published files with random weights and the published activity), one
# model at a time: build its replica files (timed), run bench/scale.lua under bench/measure.py
# without a memory limit and inside a memory cgroup of the size the README's table states,
# remove the files. Prints every figure of the README's benchmark table; asserts nothing.
#
#   bench/scale.sh [--dir DIR] [--keep] [TARGET...]
#
# TARGETs (default: all but llama-clt, in this order):
#   gemma       google/gemma-2-2b + GemmaScope 16k (circuit-tracer's "gemma": every file
#               downloaded through the loopback hub into a fresh Hugging Face cache first):
#               the Dallas prompt unlimited and in 10 GiB, 64 and 256 tokens in 16 GiB, the
#               JSON of a graph with every node kept, its edges against frozen perturbations
#               (bench/edges.c); then the Gemma Dallas case study through
#               ctrace run with labels from the loopback Neuronpedia
#   gemma-clt   google/gemma-2-2b + mntss/clt-gemma-2-2b-426k, the Dallas prompt in 16 GiB
#   llama       meta-llama/Llama-3.2-1B + its per-layer set, unlimited and in 12 GiB
#   llama-clt   meta-llama/Llama-3.2-1B + mntss/clt-llama-3.2-1b-524k, unlimited
#   qwen        Qwen/Qwen3-0.6B + mwhanna/qwen3-0.6b-transcoders-lowl0, unlimited and in 12 GiB
#   gemma3-it   google/gemma-3-1b-it + GemmaScope-2 16k, a chat prompt, unlimited
# --dir DIR (build/replicas): where replicas and caches go (needs the largest target's bytes
# free: gemma-clt 39 GB, gemma 36 GB while its hub copy exists). --keep: leave the files.
# Cgroup runs need root and a memory controller; without them they are left out with a message.
set -eu -o pipefail
cd "$(dirname "$0")/.."
dir=build/replicas
keep=0
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift ;;
    --keep) keep=1 ;;
    -*) echo "scale.sh: unknown option '$1'; expected --dir DIR or --keep" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=(gemma gemma-clt llama qwen gemma3-it)
for t in "${targets[@]}"; do
  case $t in gemma | gemma-clt | llama | llama-clt | qwen | gemma3-it) ;;
    *) echo "scale.sh: unknown target '$t'; expected gemma, gemma-clt, llama, llama-clt, qwen or gemma3-it" >&2; exit 2 ;;
  esac
done

make -s all
core=$(build/ctrace -e 'io.write(os.getenv("OPENBLAS_CORETYPE") or "")')   # the kernels ctrace picks
if [ -n "$core" ]; then export OPENBLAS_CORETYPE="$core"; fi
mkdir -p build/bench "$dir"
cc -O2 $(pkg-config --cflags openblas) -o build/bench/sgemm bench/sgemm.c $(pkg-config --libs openblas)
cc -O2 -std=c11 -D_GNU_SOURCE -Iengine -Itests/c $(pkg-config --cflags openblas) -o build/bench/edges bench/edges.c \
  build/libctrace.a $(pkg-config --libs libseccomp luajit libcjson libcurl openblas libutf8proc zlib yaml-0.1) -lm -lpthread
dir=$(cd "$dir" && pwd)
CT=$PWD/build/ctrace
PY=/usr/bin/python3   # Debian's, with numpy
GEN="$PY bench/replicas/replicas.py $dir"
DALLAS="Fact: the capital of the state containing Dallas is"
LONG="The history of the city begins with a small trading post on the banks of the river, where \
merchants from the north met farmers from the plains to exchange grain, cloth and tools."
cgroups=1
$PY bench/measure.py --mem 1 -- true > /dev/null 2>&1 || {
  cgroups=0
  echo "# no writable memory cgroup here (root and a memory controller are needed): cgroup runs are left out"
}

echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB," \
     "OpenBLAS kernels: ${OPENBLAS_CORETYPE:-as detected}; disk free in $dir: $(df -h "$dir" | awk 'NR == 2 {print $4}')"
sg=$(build/bench/sgemm 1024x1024x1024 read)
echo "$sg"
bandwidth=$(echo "$sg" | awk '/^read/ {print $2}')

# build TARGET...: the replica files, timed; fails (and the target is skipped) when they cannot be made
build() {
  local t0=$SECONDS out
  if ! out=$($GEN "$@" 2>&1); then echo "scale: building $* failed:"; echo "$out" | tail -5; return 1; fi
  echo "$out" | tail -1
  echo "scale: built $* in $((SECONDS - t0)) s ($(du -sh "$dir" | cut -f1) on disk)"
}

# sgemm1024: GFLOP/s of sgemm 1024^3 now
sgemm1024() { build/bench/sgemm 1024x1024x1024 | awk '{print $7}'; }

# run LABEL MEM_GIB(0: none) MODEL SET PROMPT [scale.lua options]: one measured run between two
# measurements of sgemm 1024^3 (the machine's rate drifts: the ratio to the multiply-add bound is
# restated at the faster of the two), then sgemm at the backward's shapes. Where cgroups can be
# made (root): the page cache dropped first (a page cached before the cgroup exists is never
# charged to it; and files just written are cached as the writer left them, not as ctrace reads
# them: in 2 MiB pieces where it asks for them), then $RUNS runs (default 2: the second is the
# steady state)
run() {
  local label=$1 mem=$2 out before after
  shift 2
  if [ "$mem" != 0 ] && [ $cgroups = 0 ]; then echo "scale: $label: left out (no memory cgroup)"; return; fi
  echo "## $label"
  before=$(sgemm1024)
  if out=$($PY bench/measure.py --label "$label" $([ "$mem" != 0 ] && echo --mem "$mem") \
            $([ $cgroups = 1 ] && echo --drop-caches --runs "${RUNS:-2}") -- \
            "$CT" bench/scale.lua "$@" --gflops "$before" --bandwidth "$bandwidth" 2>&1); then
    echo "$out" | grep -E '^(scale|measure):'
  else
    echo "scale: $label FAILED:"; echo "$out" | tail -20
  fi
  after=$(sgemm1024)
  echo "$out" | awk -v b="$before" -v a="$after" '
    /^scale: attribute / { t = $3 }
    /^scale: multiply-adds / { g = a > b ? a : b
      printf "scale: sgemm 1024^3 %.1f GFLOP/s before the run, %.1f after: at the faster, attribution took %.2fx the time its %s G multiply-adds need\n", b, a, t / (2 * $3 / g), $3 }'
  local shapes
  shapes=$(echo "$out" | sed -n 's/^scale: backward shapes \([0-9x]*\) \([0-9x]*\) .*/\1 \2/p' | head -1)
  [ -n "$shapes" ] && build/bench/sgemm $shapes | sed 's/^/scale: backward shape: /'
  return 0
}

clean() { [ $keep = 1 ] || rm -rf "${@/#/$dir/}"; }

# serve DIR's repositories on loopback; sets HF_ENDPOINT and HF_HOME ($dir/hf)
serve() {
  rm -f "$dir/port"
  $PY tests/net/server.py ../shared/reference/fixtures/neuronpedia "$dir" > "$dir/port" 2> "$dir/server.log" &
  server=$!
  for _ in $(seq 100); do [ -s "$dir/port" ] && break; sleep 0.1; done
  export HF_ENDPOINT=http://127.0.0.1:$(awk '{print $2}' "$dir/port")/hf HF_HOME=$dir/hf
}
server=""

# snapshot REPO: the directory of REPO's (org--name) snapshot in the Hugging Face cache
snapshot() { ls -d "$HF_HOME"/hub/models--$1/snapshots/* | head -1; }

# study: the Gemma Dallas case study, end to end through ctrace run (sandboxed) on a copy of its
# folder, on the snapshots in the cache, with labels from the loopback Neuronpedia
study() {
  local snap_m snap_t t0=$SECONDS out
  snap_m=$(snapshot google--gemma-2-2b)
  snap_t=$(snapshot mwhanna--gemma-scope-transcoders)
  serve
  rm -rf "$dir/study" && cp -r experiments/gemma-2-2b-dallas-austin "$dir/study" && rm -rf "$dir/study/results"
  echo "## the Gemma Dallas case study through ctrace run"
  if out=$(CTRACE_NEURONPEDIA_URL=${HF_ENDPOINT%/hf}/np CTRACE_GEMMA_MODEL=$snap_m CTRACE_GEMMA_TRANSCODERS=$snap_t/config.yaml \
           $PY bench/measure.py --label "ctrace run gemma-2-2b-dallas-austin" -- "$CT" run "$dir/study" 2>&1); then
    echo "$out" | grep -E '^(labels|measure):'
    echo "scale: case study results: $(cd "$dir/study/results" && ls | tr '\n' ' ')"
  else
    echo "scale: the case study FAILED:"; echo "$out" | tail -20
  fi
  kill $server; wait $server 2> /dev/null || true; server=""
  rm -rf "$dir/study"
}
trap '[ -n "$server" ] && kill $server 2> /dev/null; true' EXIT

for t in "${targets[@]}"; do
  echo "# ---- $t"
  case $t in
    gemma)
      build google/gemma-2-2b mwhanna/gemma-scope-transcoders || continue
      rm -rf "$dir/hf"   # a cache left by an interrupted run would make the download a cache hit
      serve
      a=$SECONDS
      "$CT" -e 'local ct = require "ctrace"; ct.load_model("google/gemma-2-2b"); ct.load_transcoders("gemma")' > /dev/null
      echo "scale: downloaded google/gemma-2-2b and \"gemma\" (mwhanna/gemma-scope-transcoders) through the loopback" \
           "hub in $((SECONDS - a)) s: $(du -sh "$dir/hf" | cut -f1) in the cache"
      kill $server; wait $server 2> /dev/null || true; server=""
      clean google mwhanna
      export HF_HUB_OFFLINE=1
      run "gemma-2-2b + GemmaScope PLTs, Dallas" 0 google/gemma-2-2b gemma "$DALLAS" "$dir/graphs"
      [ -f "$dir/graphs/graph.safetensors" ] &&
        $PY bench/measure.py --label "JSON of every node" -- "$CT" bench/scale.lua --json "$dir/graphs/graph.safetensors" \
          "$dir/graphs/full.json" | grep -E '^(scale|measure):'
      rm -rf "$dir/graphs"
      echo "## edges of the Dallas graph against frozen perturbations of the model (bench/edges.c)"
      build/bench/edges "$(snapshot google--gemma-2-2b)" "$(snapshot mwhanna--gemma-scope-transcoders)" "$DALLAS" |
        sed 's/^/scale: edges: /' || true
      run "gemma-2-2b + GemmaScope PLTs, Dallas, 10 GiB" 10 google/gemma-2-2b gemma "$DALLAS" --quick
      run "gemma-2-2b + GemmaScope PLTs, 64 tokens, 16 GiB" 16 google/gemma-2-2b gemma "$LONG" --tokens 64 --quick
      run "gemma-2-2b + GemmaScope PLTs, 256 tokens, 16 GiB" 16 google/gemma-2-2b gemma "$LONG" --tokens 256 --quick
      unset HF_HUB_OFFLINE
      study
      unset HF_ENDPOINT HF_HOME
      clean hf ;;
    gemma-clt)
      build google/gemma-2-2b mntss/clt-gemma-2-2b-426k || continue
      run "gemma-2-2b + 426k CLT, Dallas, 16 GiB" 16 "$dir/google/gemma-2-2b" "$dir/mntss/clt-gemma-2-2b-426k" "$DALLAS" --quick
      clean google mntss ;;
    llama)
      build meta-llama/Llama-3.2-1B mntss/transcoder-Llama-3.2-1B || continue
      run "Llama-3.2-1B + PLTs, Dallas" 0 "$dir/meta-llama/Llama-3.2-1B" "$dir/mntss/transcoder-Llama-3.2-1B" "$DALLAS"
      run "Llama-3.2-1B + PLTs, Dallas, 12 GiB" 12 "$dir/meta-llama/Llama-3.2-1B" "$dir/mntss/transcoder-Llama-3.2-1B" "$DALLAS" --quick
      clean meta-llama mntss ;;
    llama-clt)
      build meta-llama/Llama-3.2-1B mntss/clt-llama-3.2-1b-524k || continue
      run "Llama-3.2-1B + 524k CLT, Dallas" 0 "$dir/meta-llama/Llama-3.2-1B" "$dir/mntss/clt-llama-3.2-1b-524k" "$DALLAS" --quick
      clean meta-llama mntss ;;
    qwen)
      build Qwen/Qwen3-0.6B mwhanna/qwen3-0.6b-transcoders-lowl0 || continue
      run "Qwen3-0.6B + PLTs, Dallas" 0 "$dir/Qwen/Qwen3-0.6B" "$dir/mwhanna/qwen3-0.6b-transcoders-lowl0" "$DALLAS"
      run "Qwen3-0.6B + PLTs, Dallas, 12 GiB" 12 "$dir/Qwen/Qwen3-0.6B" "$dir/mwhanna/qwen3-0.6b-transcoders-lowl0" "$DALLAS" --quick
      clean Qwen mwhanna ;;
    gemma3-it)
      build google/gemma-3-1b-it mwhanna/gemma-scope-2-1b-it --gs2-layout a || continue
      run "gemma-3-1b-it + GemmaScope-2 PLTs, chat" 0 "$dir/google/gemma-3-1b-it" \
        "$dir/mwhanna/gemma-scope-2-1b-it/transcoder_all/width_16k_l0_small_affine" \
        "What is the capital of the state containing Dallas?" --chat
      clean google mwhanna ;;
  esac
done
