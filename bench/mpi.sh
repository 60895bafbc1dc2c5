#!/usr/bin/env bash
# ctrace under MPI on this machine: one graph (stories260K over a 512-token story, or a model and
# set given) with circuit-tracer's command-line defaults as 1 process x 1 thread, 1 process x 2
# threads and 2 ranks x 1 thread
# (mpirun), interleaved, N runs each (default 3); medians of the attribution's wall time, the
# backward passes', the time the ranks spend agreeing and broadcasting (waiting for each other's
# batches included), the bytes each rank sends and receives, and the parallel efficiency (1 x 1
# time / (workers x time)); first the broadcast rate between two ranks (bench/mpi/bcast.c).
# Figures only.
#   bench/mpi.sh [N] [tokens]                          stories260K over a story of that length (512)
#   bench/mpi.sh N MODEL SET "PROMPT"                  a model and transcoder set (paths or names)
set -eu
cd "$(dirname "$0")/.."
make -s MPI=1 all
mkdir -p build/bench
mpicc -O2 -std=c11 -D_GNU_SOURCE -DCT_MPI -Iengine -o build/bench/mpi_bcast bench/mpi/bcast.c build/mpi/libctrace.a \
  $(pkg-config --libs openblas) -lm -lpthread
N=${1:-3}
shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(512)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -n 2 build/bench/mpi_bcast 64 9   # the link: shared memory between the two ranks here
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$N"); do
  echo "1x1 $(build/mpi/ctrace -e 'require("ctrace").threads(1)' bench/mpi/graph.lua "${args[@]}")" >> "$out"
  echo "1x2 $(build/mpi/ctrace bench/mpi/graph.lua "${args[@]}")" >> "$out"
  echo "2x1 $(mpirun -n 2 build/mpi/ctrace bench/mpi/graph.lua "${args[@]}")" >> "$out"
done
echo "# ${args[*]}: 7,500 feature nodes, batch 256: medians of $N runs ($(nproc) cores)"
echo "# ranks x threads   wall s   backward s   comm s   MB sent+received per rank   batches   MB per batch   efficiency"
base=$(awk '$1 == "1x1" { print $4 }' "$out" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
for k in 1x1 1x2 2x1; do
  awk -v k="$k" -v base="$base" '$1 == k { n++; w[n] = $4; b[n] = $5; c[n] = $6; mb = $7; nb = $8; pb = $9 }
    function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                                   return a[int((n + 1) / 2)] }
    END { split(k, p, "x"); mw = med(w, n); printf "%-18s %7.2f   %10.2f   %6.2f   %25.1f   %7d   %12.2f   %9.0f%%\n",
          k, mw, med(b, n), med(c, n), mb, nb, pb, 100 * base / (p[1] * p[2] * mw) }' "$out"
done
