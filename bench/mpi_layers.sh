#!/usr/bin/env bash
# A layer-split model under MPI on this machine: one graph (stories260K over a 512-token story, or a
# model and set given) with circuit-tracer's command-line defaults as 1 process x 2 threads (every
# layer) and as 2 ranks x 1 thread each holding half the layers (--split-layers), interleaved, N
# runs each (default 3). Medians of the attribution's wall time, the backward passes', the time in
# communication, the bytes each rank sends and receives, and each rank's peak resident memory and
# the weight bytes it holds. Figures only.
#   bench/mpi_layers.sh [N] [tokens]                   stories260K over a story of that length (512)
#   bench/mpi_layers.sh N MODEL SET "PROMPT"           a model and transcoder set (paths or names)
set -eu
cd "$(dirname "$0")/.."
make -s MPI=1 all
N=${1:-3}
shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(512)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in $(seq "$N"); do
  build/mpi/ctrace bench/mpi/layers.lua "$dir/one$i" "${args[@]}"
  mpirun -n 2 build/mpi/ctrace bench/mpi/layers.lua "$dir/two$i" "${args[@]}"
done
echo "# ${args[*]}: 7,500 feature nodes, batch 256: medians of $N runs ($(nproc) cores)"
echo "# run           rank  layers  weights MB   wall s   backward s   comm s   MB sent+received   peak RSS MB"
for k in one two; do
  cat "$dir"/$k* | awk -v k="$k" '{ key = $1; n[key]++; w[key, n[key]] = $7; b[key, n[key]] = $8; c[key, n[key]] = $9;
      r[key, n[key]] = $11; mb[key] = $10; lay[key] = $4 "-" $5; wt[key] = $6; thr = $3; size = $2 }
    function med(key, a,   i, j, t, m, x) { m = n[key]; for (i = 1; i <= m; i++) x[i] = a[key, i]
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
      return x[int((m + 1) / 2)] }
    END { for (key in n) printf "%-14s %5d  %6s  %10.1f  %7.2f   %10.2f   %6.2f   %16.1f   %11.0f\n",
            size "x" thr, key, lay[key], wt[key], med(key, w), med(key, b), med(key, c), mb[key], med(key, r) }' | sort
done
