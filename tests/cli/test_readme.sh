#!/usr/bin/env bash
# test_readme.sh - a newcomer's walk through README.md (tests/cli/readme_walk.py): every command and
# Lua example, as written, from a directory laid out as the repository (links to it, a copy of
# experiments/) with ../shared beside it, so nothing lands in the repository. The models and sets
# the README fetches from Hugging Face, and Neuronpedia, are the loopback server's stand-ins
# (tests/net/server.sh: the published repositories at tiny sizes; google/gemma-3-1b-it is the tiny
# Gemma-3 -it).
set -u
cd "$(dirname "$0")/../.."
if [ -n "${CTRACE_README_WALK:-}" ]; then
  echo "1..0 # SKIP inside the README walk itself"; exit 0
fi
if [ "${CTRACE_BUILD:-build}" != build ]; then
  echo "1..0 # SKIP the README's commands name build/ctrace: the walk runs in the plain pass"; exit 0
fi
ROOT=$PWD
export PYTHONDONTWRITEBYTECODE=1   # nothing written into the repository (tests/ref/__pycache__)
. tests/net/server.sh
tmp=$(mktemp -d)
server=""
trap 'server_stop; rm -rf "$tmp"' EXIT

hub_files $tmp/files $tmp/gen > $tmp/gen.log 2>&1 || { echo "Bail out! the hub's files"; cat $tmp/gen.log; exit 1; }
mkdir -p $tmp/files/google/gemma-3-1b-it && cp $tmp/files/test/gemma-3-tiny-it/* $tmp/files/google/gemma-3-1b-it/
server_start $tmp/files $tmp/server.log || { echo "Bail out! the test server did not start"; exit 1; }

mkdir $tmp/work
for e in "$ROOT"/* "$ROOT"/.ci; do [ "${e##*/}" = experiments ] || ln -s "$e" $tmp/work/; done
mkdir $tmp/work/experiments
for e in "$ROOT"/experiments/*/; do
  [ "$(basename "$e")" = my-study ] && continue
  cp -r "$e" $tmp/work/experiments/ && rm -rf $tmp/work/experiments/$(basename "$e")/results
done
ln -s "$(cd ../shared && pwd)" $tmp/shared

unset MAKEFLAGS MAKELEVEL MFLAGS CTRACE_OFFLINE HF_HUB_OFFLINE HF_HUB_CACHE CTRACE_CACHE CTRACE_TRACE CTRACE_MODELS \
      CTRACE_ROOT HF_TOKEN HUGGING_FACE_HUB_TOKEN
export CTRACE_README_WALK=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # the suite runs as root on CI machines
export OMPI_MCA_rmaps_base_oversubscribe=1   # mpirun -n 2 on a machine with fewer cores
export HF_HOME=$tmp/hf HF_ENDPOINT=$base/hf CTRACE_NEURONPEDIA_URL=$base/np NEURONPEDIA_API_KEY=test-key \
       XDG_CACHE_HOME=$tmp/cache
/usr/bin/python3 tests/cli/readme_walk.py README.md $tmp/work
