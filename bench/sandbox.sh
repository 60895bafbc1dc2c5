#!/usr/bin/env bash
# The cost of ctrace run's sandbox and transaction on the main job (make run: the flagship case
# study, experiments/stories260K-lily-she), on a copy of the folder. Three ways, interleaved, N
# times each (default 7), medians of the wall-clock time:
#   direct     ctrace experiment.lua: the script in the ctrace process, no child, no transaction
#   unsafe     ctrace run --unsafe: the experiment process and the transaction (staging, synced
#              and hashed outputs, manifest, atomic rename), no confinement
#   sandboxed  ctrace run: the same, confined (Landlock, seccomp, limits, requests via the parent)
# Figures only; nothing asserts on time.
set -eu
cd "$(dirname "$0")/.."
make -s all
N=${1:-7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r experiments/stories260K-lily-she "$work/study"
rm -rf "$work/study/results"
t() { local t0 t1; t0=$(date +%s%N); "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
declare -A times
for i in $(seq "$N"); do
  times[direct]+="$(t build/ctrace "$work/study/experiment.lua") "
  times[unsafe]+="$(t build/ctrace run "$work/study" --unsafe) "
  times[sandboxed]+="$(t build/ctrace run "$work/study") "
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) / 1e6 }'; }
d=$(echo "${times[direct]}" | median)
echo "# sandbox overhead on the main job ($N runs each, interleaved; median wall-clock seconds)"
for k in direct unsafe sandboxed; do
  m=$(echo "${times[$k]}" | median)
  awk -v k="$k" -v m="$m" -v d="$d" 'BEGIN { printf "%-10s %7.3f s  %+6.1f%% vs direct\n", k, m, 100 * (m - d) / d }'
done
