#!/usr/bin/env bash
# test_mpi.sh - ctrace as the ranks of an MPI job (make MPI=1: build/mpi/ctrace) under Open MPI's
# mpirun, 2 and 3 ranks on this machine (shared memory and loopback): one graph's rows shared among
# the ranks gives the bytes of a single process (the plain build) for ctrace attribute and for a
# script's rm:attribute + g:save (rank 0 writes), for a prompt set and a study's sweep; a layer-split
# model (each rank holding its share of the layers) gives the same bytes; a rank that is killed or
# fails ends the job within seconds, non-zero, naming the rank, and no output is written; the plain
# build refuses to run as one of several ranks; commands other than attribute refuse to.
set -u
cd "$(dirname "$0")/../.."
if [ -n "${CTRACE_BUILD:-}" ] && [ "$CTRACE_BUILD" != build ]; then
  echo "1..0 # SKIP the MPI build is tested in the plain pass"; exit 0
fi
if ! command -v mpirun > /dev/null || [ ! -x build/mpi/ctrace ]; then
  echo "1..0 # SKIP no Open MPI here (tests/setup.sh test installs openmpi-bin and libopenmpi-dev; make test builds build/mpi)"
  exit 0
fi
ROOT=$PWD
CTRACE=$PWD/build/ctrace
MPI_CTRACE=$PWD/build/mpi/ctrace
SET=$PWD/experiments/stories260K-transcoders/transcoders
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -n "${KEEP:-}" ] && trap 'echo "# kept $tmp"' EXIT
cd "$tmp"
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
# a failure's lines go to stderr too, so a harness that hides passing output still shows them
bad() { n=$((n + 1)); echo "not ok $n - $1"; echo "test_mpi.sh: not ok $n - $1" >&2; fail=1; }
show() { sed 's/^/#   /' "$1" | tail -20 | tee /dev/stderr; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpi() { local np=$1; shift; timeout 300 mpirun --oversubscribe -n "$np" "$@"; }
PROMPT="Once upon a time, there was a little girl named Lily. She"

# the serial reference: the plain build, one process
"$CTRACE" attribute -p "$PROMPT" -t "$SET" --max_feature_nodes 1000 --batch_size 64 -o serial.safetensors \
  > serial.log 2>&1 || { bad "serial graph"; show serial.log; }
"$CTRACE" attribute -p "$PROMPT" -t "$SET" --max_feature_nodes 1000 --batch_size 64 --slug lily --graph_file_dir serial \
  > serial2.log 2>&1 || { bad "serial graph JSON"; show serial2.log; }

for np in 2 3; do
  mpi $np "$MPI_CTRACE" attribute -p "$PROMPT" -t "$SET" --max_feature_nodes 1000 --batch_size 64 \
    -o mpi$np.safetensors > mpi$np.log 2>&1
  [ $? = 0 ] && cmp -s serial.safetensors mpi$np.safetensors &&
    ok "ctrace attribute on $np ranks: the full graph has the single process's bytes" || { bad "attribute on $np ranks"; show mpi$np.log; }
  mpi $np "$MPI_CTRACE" attribute -p "$PROMPT" -t "$SET" --max_feature_nodes 1000 --batch_size 64 --slug lily \
    --graph_file_dir mpi$np > mpi${np}b.log 2> mpi${np}b.err   # (mpirun interleaves the two streams)
  [ $? = 0 ] && cmp -s serial/lily.json mpi$np/lily.json && cmp -s serial/lily.html mpi$np/lily.html &&
    [ "$(grep -c "wrote mpi$np/lily.json" mpi${np}b.err)" = 1 ] && [ "$(grep -c "^prompt:" mpi${np}b.log)" = 1 ] &&
    ok "$np ranks: the graph JSON and page as one process writes them, written and summarised once (rank 0)" ||
    { bad "graph JSON on $np ranks"; show mpi${np}b.log; show mpi${np}b.err; }
done

# a script: every rank calls rm:attribute; g:save writes on rank 0 only; all features (one round of
# many batches) and the influence-ranked queue
cat > graph.lua <<'LUA'
local ct = require "ctrace"
local m = ct.load_model("stories260K")
local rm = ct.replacement_model(m, ct.load_transcoders(arg[1]))
local g, s = rm:attribute("Once upon a time, there was a little girl named Lily. She", {batch_size = 32, max_feature_nodes = arg[3] and tonumber(arg[3]) or nil})
g:save(arg[2])
local f = io.open(arg[2] .. ".batches." .. ct.dist.rank, "w")   -- a file a rank: mpirun interleaves their streams
f:write(s.n_batches, "\n")
f:close()
LUA
"$CTRACE" graph.lua "$SET" all.safetensors > all.log 2> all.err || { bad "serial script"; show all.err; }
mpi 3 "$MPI_CTRACE" graph.lua "$SET" all3.safetensors > all3.log 2> all3.err
[ $? = 0 ] && cmp -s all.safetensors all3.safetensors &&
  ok "a script on 3 ranks, every active feature: rm:attribute + g:save give the single process's bytes" ||
  { bad "script on 3 ranks"; show all3.log; show all3.err; }
# the work was shared: every rank computed some of the batches, together all of them once
serial_b=$(cat all.safetensors.batches.0)
per_rank=$(cat all3.safetensors.batches.* | sort -n | tr '\n' ' ')
sum=$(cat all3.safetensors.batches.* | awk '{ s += $1 } END { print s }')
max=$(cat all3.safetensors.batches.* | sort -n | tail -1)
min=$(cat all3.safetensors.batches.* | sort -n | head -1)
[ -n "$serial_b" ] && [ "$(ls all3.safetensors.batches.* | wc -l)" = 3 ] && [ "$sum" = "$serial_b" ] &&
  [ "$min" -ge 1 ] && [ "$max" -lt "$serial_b" ] &&
  ok "3 ranks computed $per_rank of the $serial_b batches one process computes" || { bad "batches per rank: $per_rank of $serial_b"; show all3.err; }

# a prompt set (ctrace attribute --prompts) and ct.dist.map: the prompts shared among the ranks;
# the same files, the same output as one process
printf 'Once upon a time\n{"prompt": "Lily had a dog", "slug": "dog"}\nTom was sad\n{"prompt": "The sun was", "targets": [300, 301]}\nThe cat\n' > prompts.txt
"$CTRACE" attribute --prompts prompts.txt -t "$SET" --max_feature_nodes 200 --graph_file_dir pserial > pserial.log 2>&1 ||
  { bad "serial prompt set"; show pserial.log; }
for np in 2 3; do
  mpi $np "$MPI_CTRACE" attribute --prompts prompts.txt -t "$SET" --max_feature_nodes 200 --graph_file_dir p$np > p$np.log 2> p$np.err
  [ $? = 0 ] && diff -r pserial p$np > /dev/null && [ "$(grep -c '^prompt:' p$np.log)" = 5 ] &&
    ok "--prompts on $np ranks: the 5 graphs, pages and graph-metadata.json of one process" ||
    { bad "--prompts on $np ranks"; show p$np.err; }
done
cat > map.lua <<'LUA'
local ct = require "ctrace"
local rm = ct.replacement_model(ct.load_model("stories260K"), ct.load_transcoders(arg[1]))
local prompts = {"Once upon a time", "Lily had a dog", "Tom was sad", "The sun", "A big red ball"}
local r = ct.dist.map(prompts, function(p, i)
  local g = rm:attribute(p, {max_feature_nodes = 100})
  return {i = i, scores = {g:scores()}, nodes = #g:nodes(), logits = g:logits()}
end)
if ct.dist.rank == 0 then print(ct.json_encode(r)) else assert(r == nil) end
LUA
"$CTRACE" map.lua "$SET" > map1.txt 2> map1.err
mpi 3 "$MPI_CTRACE" map.lua "$SET" > map3.txt 2> map3.err
[ $? = 0 ] && [ -s map1.txt ] && cmp -s map1.txt map3.txt && grep -q '"i":5' map3.txt &&
  ok "ct.dist.map on 3 ranks: rank 0 gets every result in input order, as one process does" ||
  { bad "dist.map"; show map3.txt; show map3.err; }

# the flagship case study's script under mpirun (its graph's rows, its studies' runs shared among 3
# ranks; rank 0 writes): every result file as one process writes it
mkdir -p flag1 flag3
cp "$ROOT/experiments/stories260K-lily-she/experiment.lua" flag1/
cp flag1/experiment.lua flag3/
"$CTRACE" flag1/experiment.lua > flag1.log 2>&1 || { bad "the flagship script alone"; show flag1.log; }
mpi 3 "$MPI_CTRACE" flag3/experiment.lua > flag3.log 2>&1
[ $? = 0 ] && [ -s flag1/results/report.md ] && diff -r flag1/results flag3/results > flag.diff &&
  ok "the flagship study on 3 ranks: its $(ls flag1/results | wc -l) result files as one process writes them" ||
  { bad "the flagship study on 3 ranks"; show flag3.log; head -5 flag.diff | sed 's/^/#   /'; }

# ctrace run as the ranks of a job: each rank's confined experiment process reaches the job through
# its parent; rank 0 commits the results, which are one process's (manifest aside), and ctrace check
# passes on them; a rank killed mid-run leaves results/ as they were and no staging behind
cp -r "$ROOT/experiments/stories260K-lily-she" run1
rm -rf run1/results
cp -r run1 run3
"$CTRACE" run run1 > run1.log 2>&1 || { bad "ctrace run alone"; show run1.log; }
mpi 3 "$MPI_CTRACE" run run3 > run3.log 2>&1
rc=$?
differs=$(cd run1/results && for f in *; do [ "$f" = manifest.json ] || cmp -s "$f" ../../run3/results/"$f" || echo "$f"; done)
[ $rc = 0 ] && [ -s run1/results/report.md ] && [ -z "$differs" ] && [ "$(ls run1/results | wc -l)" = "$(ls run3/results | wc -l)" ] &&
  grep -q '"mpi_ranks":[[:space:]]*3' run3/results/manifest.json && [ "$(grep -c 'results/manifest.json' run3.log)" = 1 ] &&
  [ -z "$(ls -a run3 | grep ctrace-staging)" ] && "$CTRACE" check run3 --no-run > check3.log 2>&1 &&
  ok "ctrace run on 3 ranks: $(ls run3/results | wc -l) result files as one process's run writes them, committed once, checked" ||
  { bad "ctrace run on 3 ranks (exit $rc; differ: $differs)"; show run3.log; show check3.log; }
cat > run3/experiment.lua <<'LUA'
local ct = require "ctrace"
local out = ct.results_dir(arg[0])
local rm = ct.replacement_model(ct.load_model("stories260K"), ct.load_transcoders("stories260K"))
ct.write_file(out .. "/partial.txt", "written before the graph\n")
rm:attribute(string.rep("Once upon a time, there was a little girl named Lily. She liked to play. ", 8), {batch_size = 8})
ct.write_file(out .. "/graph.txt", "done\n")
LUA
before=$(cd run3/results && sha256sum * | sha256sum)
mpi 2 "$MPI_CTRACE" run run3 > runkill.log 2>&1 &
job=$!
for _ in $(seq 300); do [ "$(pgrep -f -- --run-child | wc -l)" = 2 ] && break; sleep 0.1; done
sleep 2
kill -0 $job 2> /dev/null && running=1 || running=0
pkill -9 -n -f -- --run-child   # the newest experiment process: one rank's
wait $job
rc=$?
after=$(cd run3/results && sha256sum * | sha256sum)
[ $running = 1 ] && [ $rc != 0 ] && [ $rc != 124 ] && [ "$before" = "$after" ] && [ ! -e run3/results/partial.txt ] &&
  ok "ctrace run on 2 ranks, one rank's experiment killed mid-graph: the job fails (exit $rc), results/ as they were" ||
  { bad "killed rank under ctrace run (running $running, exit $rc)"; show runkill.log; }

# a hostile experiment under ctrace run on 2 ranks, talking to its parent through the relay
# directly: rank 1 sends 1 byte where rank 0 asks for 64 KiB (the parent answers with an error,
# never with its own memory), and a request naming rank 7 of 2 is refused
mkdir -p hostile
cat > hostile/experiment.lua <<'LUA'
local ct = require "ctrace"
local core = require "ctrace.core"
local function le(n, bytes) local t = {} for i = 1, bytes do t[i] = string.char(n % 256); n = math.floor(n / 256) end return table.concat(t) end
local function req(op, peer, value, data) return "CTD1" .. le(op, 4) .. le(peer, 4) .. le(0, 4) .. le(value, 8) .. le(#data, 8) .. data end
local function status(reply) return reply:byte(1) + 256 * reply:byte(2) end
local r
if ct.dist.rank == 1 then r = core.broker(req(2, 0, 1, "x"))              -- send 1 byte to rank 0
else r = core.broker(req(3, 1, 65536, "")) end                            -- receive 64 KiB from rank 1
local bad_peer = core.broker(req(3, 7, 16, ""))
ct.write_file(ct.results_dir(arg[0]) .. "/hostile.txt", string.format("short %d %d peer %d %s\n", status(r), #r,
              status(bad_peer), bad_peer:sub(5)))
LUA
mpi 2 "$MPI_CTRACE" run hostile > hostile.log 2>&1
[ $? = 0 ] && grep -q "^short [1-9][0-9]* [0-9]* peer [1-9][0-9]* a relayed request names rank 7 of 2" hostile/results/hostile.txt &&
  [ "$(cut -d' ' -f3 hostile/results/hostile.txt)" -lt 1024 ] &&
  ok "ctrace run on 2 ranks, hostile relay requests: a short message and a rank out of the job refused with errors" ||
  { bad "hostile relay requests"; show hostile.log; cat hostile/results/hostile.txt 2> /dev/null | sed 's/^/#   /'; }

# a full disk (a 3 MB tmpfs) under ctrace run on 2 ranks: rank 0's write fails (its error swallowed
# by pcall), the job fails, the previous results stay whole and no rank leaves a staging directory
if unshare -m true 2> /dev/null; then
  unshare -m bash -s "$MPI_CTRACE" "$PWD" > fulldisk.tap 2>&1 <<'SH'
MPI_CTRACE=$1 here=$2
disk=$here/disk; mkdir -p $disk && mount -t tmpfs -o size=3m tmpfs $disk || { echo "MOUNT FAILED"; exit 0; }
mkdir $disk/f
go() { printf '%s\n' "$2" > $disk/f/experiment.lua
       timeout 300 mpirun --oversubscribe -n 2 $MPI_CTRACE run $disk/f < /dev/null > $here/fulldisk_$1.out 2>&1; echo "$1 $?"; }
go good 'local ct = require "ctrace"; ct.write_json(ct.results_dir(arg[0]) .. "/a.json", {run = "good", ranks = ct.dist.size})'
good=$(cd $disk/f/results && cat $(ls) | sha256sum)
go full 'local ct = require "ctrace"; local out = ct.results_dir(arg[0]); ct.write_json(out .. "/a.json", {run = "new"})
pcall(ct.write_file, out .. "/big.bin", string.rep("x", 5 * 2 ^ 20))
ct.dist.map({1, 2}, function(i) return i end)'
[ "$(cd $disk/f/results && cat $(ls) | sha256sum)" = "$good" ] && echo "SAME" || echo "CHANGED"
grep -q '"ranks":[[:space:]]*2' $disk/f/results/a.json && echo "RANKS 2"
ls -a $disk/f | grep -c ctrace-staging | sed 's/^/STAGING /'
umount $disk
SH
  if grep -q "MOUNT FAILED" fulldisk.tap; then
    echo "# full-disk case skipped: tmpfs cannot be mounted here"
  else
    grep -q "^good 0" fulldisk.tap && grep -q "RANKS 2" fulldisk.tap && grep -q "^full 1" fulldisk.tap &&
      grep -q "^SAME" fulldisk.tap && grep -q "STAGING 0" fulldisk.tap &&
      ok "ctrace run on 2 ranks, a full disk: the job fails, the previous results whole, no staging left" ||
      { bad "full disk under MPI"; show fulldisk.tap; show fulldisk_full.out; }
  fi
fi

# layers across ranks (--split-layers, layer_split): each rank holds only its share of the model's
# and the set's layers and runs its part of every pass (the gradient handed down from rank to rank);
# the graph is the one a single process computes
for np in 2 3; do
  mpi $np "$MPI_CTRACE" attribute -p "$PROMPT" -t "$SET" --max_feature_nodes 1000 --batch_size 64 --split-layers \
    -o split$np.safetensors > split$np.log 2>&1
  [ $? = 0 ] && cmp -s serial.safetensors split$np.safetensors &&
    ok "--split-layers on $np ranks: the full graph has the single process's bytes" || { bad "--split-layers on $np ranks"; show split$np.log; }
done
mpi 2 "$MPI_CTRACE" attribute -p "$PROMPT" -t "$SET" --max_feature_nodes 1000 --batch_size 64 --split-layers --slug lily \
  --graph_file_dir split2 > split2b.log 2>&1
[ $? = 0 ] && cmp -s serial/lily.json split2/lily.json && cmp -s serial/lily.html split2/lily.html &&
  ok "--split-layers on 2 ranks: the graph JSON and page as one process writes them" || { bad "--split-layers JSON"; show split2b.log; }
# a script, every feature, a per-layer and a cross-layer set (whose decoders write across the ranks'
# layers), on 3 ranks and on 5 (one layer each): the same bytes; each rank held its own layers, opened
# only the files it needs and dropped the other layers' weights (their bytes sum to the whole model's)
cat > split.lua <<'LUA'
local ct = require "ctrace"
local m = ct.load_model("stories260K", {layer_split = true})
local tc = ct.load_transcoders(arg[1], {layer_split = true})
local g = ct.replacement_model(m, tc):attribute("Once upon a time, there was a little girl named Lily. She", {batch_size = 32})
g:save(arg[2])
local h = m.held_layers or {0, m.n_layers - 1}
local f = io.open(arg[2] .. ".rank" .. ct.dist.rank, "w")
f:write(string.format("%d %d %d %.0f\n", h[1], h[2], tc.files, m.step_bytes))
f:close()
LUA
for kind in transcoders clt; do
  KSET=$ROOT/experiments/stories260K-transcoders/$kind
  "$CTRACE" split.lua "$KSET" $kind.st > $kind.log 2>&1 || { bad "serial $kind script"; show $kind.log; }
  whole=$(cut -d' ' -f4 $kind.st.rank0)
  for np in 3 5; do
    mpi $np "$MPI_CTRACE" split.lua "$KSET" $kind$np.st > $kind$np.log 2>&1
    rc=$?
    held=$(for r in $(seq 0 $((np - 1))); do cat $kind$np.st.rank$r 2> /dev/null; done)
    want=$(for r in $(seq 0 $((np - 1))); do lo=$((5 * r / np)); hi=$((5 * (r + 1) / np));
             [ $kind = clt ] && files=$((2 * hi)) || files=$((hi - lo)); echo "$lo $((hi - 1)) $files"; done)
    sum=$(echo "$held" | awk '{ s += $4 } END { printf "%.0f", s }')
    [ $rc = 0 ] && cmp -s $kind.st $kind$np.st && [ "$(echo "$held" | cut -d' ' -f1-3)" = "$want" ] && [ "$sum" = "$whole" ] &&
      ok "layer split, $kind set, $np ranks: one process's bytes; ranks held layers $(echo "$held" | awk '{ printf "%s-%s ", $1, $2 }')with $(echo "$held" | awk '{ printf "%s ", $3 }')files" ||
      { bad "layer split, $kind, $np ranks (held: $held; want $want; weight bytes $sum of $whole)"; show $kind$np.log; }
  done
done
# a layer-split rank refuses what needs the other layers, and a split that cannot be made
cat > refuse.lua <<'LUA'
local ct = require "ctrace"
local m = ct.load_model("stories260K", {layer_split = true})
local out = {}
out[1] = select(2, pcall(ct.replacement_model, m, ct.load_transcoders(arg[1])))
local tc = ct.load_transcoders(arg[1], {layer_split = true})
local rm = ct.replacement_model(m, tc)
out[2] = select(2, pcall(m.forward, m, "Once upon a time"))
local x = {}
for l = 1, 5 do x[l] = ct.zeros(2, 64) end
out[3] = select(2, pcall(tc.reconstruct, tc, x))
local f = io.open("refuse.rank" .. ct.dist.rank, "w")
f:write(tostring(out[1]), "\n", tostring(out[2]), "\n", tostring(out[3]), "\n")
f:close()
LUA
mpi 2 "$MPI_CTRACE" refuse.lua "$SET" > refuse.log 2>&1
[ $? = 0 ] && grep -q "the model holds layers 2..4 and the transcoders 0..4: a layer-split model needs transcoders loaded for the same layers" refuse.rank1 &&
  grep -q "forward: this process holds layers 0..1 of 5 (a layer-split model)" refuse.rank0 &&
  grep -q "reconstruct: this process holds transcoder layers 0..1 of 5" refuse.rank0 &&
  ok "a layer-split rank refuses transcoders of other layers, a forward pass and a reconstruction over all layers" || { bad "layer-split refusals"; show refuse.log; cat refuse.rank* 2>/dev/null | sed 's/^/#   /'; }
mpi 6 "$MPI_CTRACE" attribute -p "$PROMPT" -t "$SET" --split-layers -o six.safetensors > six.log 2>&1
[ $? != 0 ] && [ ! -e six.safetensors ] && grep -q "5 layers cannot be split among 6 ranks" six.log &&
  ok "--split-layers on 6 ranks for 5 layers: refused with a message" || { bad "6 ranks, 5 layers"; show six.log; }

# faults: a rank killed (SIGKILL) in the middle of a graph, while the others wait for its rows (or its
# gradient, under the layer split); a rank that fails (a Lua error) while the others are attributing
cat > die.lua <<'LUA'
local ct = require "ctrace"
local split = arg[4] == "split"   -- layers across the ranks
local m = ct.load_model("stories260K", {layer_split = split})
local rm = ct.replacement_model(m, ct.load_transcoders(arg[1], {layer_split = split}))
if ct.dist.rank == 1 then
  local f = io.open(arg[3] .. ".pid", "w")
  f:write(io.open("/proc/self/stat"):read("*n"))
  f:close()
  if arg[3] == "error" then error("rank 1 gives up") end
end
-- long enough (about 150 tokens, every feature: several seconds) that the kill below lands mid-graph
local p = string.rep("Once upon a time, there was a little girl named Lily. She liked to play. ", 8)
rm:attribute(p, {batch_size = 8}):save(arg[2])
LUA
for mode in rows split; do
  mpi 2 "$MPI_CTRACE" die.lua "$SET" die-$mode.safetensors kill $mode > die-$mode.log 2>&1 &
  job=$!
  for _ in $(seq 300); do [ -s kill.pid ] && break; sleep 0.1; done
  sleep 1
  kill -0 $job 2> /dev/null && [ ! -e die-$mode.safetensors ] && running=1 || running=0   # still in the graph
  start=$(date +%s)
  kill -9 "$(cat kill.pid)"
  wait $job
  rc=$?
  took=$(( $(date +%s) - start ))
  rm -f kill.pid
  [ $running = 1 ] && [ $rc != 0 ] && [ $rc != 124 ] && [ $took -lt 30 ] && [ ! -e die-$mode.safetensors ] &&
    grep -q "rank 1" die-$mode.log && ok "rank 1 killed during the graph ($mode shared): the job exits $rc within ${took} s, names rank 1, writes nothing" ||
    { bad "rank 1 killed ($mode): running $running, exit $rc after ${took} s"; show die-$mode.log; }
done
start=$(date +%s)
mpi 2 "$MPI_CTRACE" die.lua "$SET" die-error.safetensors error > die-error.log 2>&1
rc=$?
took=$(( $(date +%s) - start ))
[ $rc = 1 ] && [ $took -lt 30 ] && [ ! -e die-error.safetensors ] && grep -q "ctrace \[rank 1\]: die.lua:9: rank 1 gives up" die-error.log &&
  ok "rank 1 fails: the job exits 1 in ${took} s with rank 1's message, writes nothing" ||
  { bad "rank 1 fails: exit $rc after ${took} s"; show die-error.log; }

# a failure one rank's script catches (pcall) still ends the job: the others wait for its rows
cat > caught.lua <<'LUA'
local ct = require "ctrace"
local rm = ct.replacement_model(ct.load_model("stories260K"), ct.load_transcoders(arg[1]))
local ok, e = pcall(rm.attribute, rm, "Once upon a time", {batch_size = ct.dist.rank == 1 and 0 or 32})
print("carried on", ok, e)
LUA
start=$(date +%s)
mpi 2 "$MPI_CTRACE" caught.lua "$SET" > caught.log 2>&1
rc=$?
took=$(( $(date +%s) - start ))
[ $rc = 1 ] && [ $took -lt 30 ] && grep -q "ctrace \[rank 1\]: .*batch_size" caught.log && ! grep -q "carried on" caught.log &&
  ok "a failed attribution caught with pcall on rank 1: the job still ends (exit 1 in ${took} s), naming rank 1" ||
  { bad "caught failure: exit $rc after ${took} s"; show caught.log; }
# ranks that do not hold the same clean run (here: different prompts) are stopped before they share rows
cat > differ.lua <<'LUA'
local ct = require "ctrace"
local rm = ct.replacement_model(ct.load_model("stories260K"), ct.load_transcoders(arg[1]))
rm:attribute(ct.dist.rank == 0 and "Once upon a time" or "Once upon a day", {batch_size = 32})
print("carried on")
LUA
mpi 2 "$MPI_CTRACE" differ.lua "$SET" > differ.log 2>&1
[ $? = 1 ] && grep -q "ranks' active features, activations and logit targets differ" differ.log && ! grep -q "carried on" differ.log &&
  ok "ranks with different clean runs: refused before any row is shared" || { bad "different clean runs"; show differ.log; }
echo 'print(1)' | mpi 2 "$MPI_CTRACE" > repl.log 2>&1
[ $? != 0 ] && grep -q "no REPL under MPI" repl.log && ok "no REPL under mpirun (stdin reaches rank 0 only)" || { bad "REPL under MPI"; show repl.log; }

# the plain build refuses to run as one of several ranks; other commands refuse MPI
mpi 2 "$CTRACE" -e 'print("ran")' > plain.log 2>&1
[ $? != 0 ] && ! grep -q "^ran" plain.log && grep -q "built without MPI" plain.log &&
  ok "the plain build under mpirun: refused (each rank would do the whole job)" || { bad "plain build"; show plain.log; }
SLURM_STEP_NUM_TASKS=4 "$CTRACE" -e 'print("ran")' > slurm.log 2>&1
[ $? != 0 ] && ! grep -q "^ran" slurm.log && grep -q "one of 4 processes" slurm.log &&
  ok "the plain build as one of srun's 4 tasks: refused" || { bad "plain build under srun"; show slurm.log; }
mpi 2 "$MPI_CTRACE" convert serial.safetensors c.pt > conv.log 2>&1
[ $? != 0 ] && [ ! -e c.pt ] && grep -q "runs as one process" conv.log &&
  ok "ctrace convert under mpirun: refused with a message" || { bad "convert under mpirun"; show conv.log; }
# one process of the MPI build, no launcher: rank 0 of 1, MPI not started
"$CTRACE" graph.lua "$SET" plain1000.safetensors 1000 > plain1000.log 2>&1
"$MPI_CTRACE" graph.lua "$SET" solo.safetensors 1000 > solo.log 2>&1
[ $? = 0 ] && [ "$(ls solo.safetensors.batches.*)" = solo.safetensors.batches.0 ] && cmp -s solo.safetensors plain1000.safetensors &&
  ok "the MPI build without a launcher: one process, the same bytes" || { bad "MPI build alone"; show solo.log; }

echo "1..$n"
exit $fail
