#!/usr/bin/env bash
# Installs what ctrace needs on a Debian machine, skipping what is already there.
#   tests/setup.sh runtime   Debian packages to build and run ctrace
#   tests/setup.sh test      also the test tools (clang for libFuzzer, chromium for the viewer, valgrind,
#                            iproute2 for the tests' own network namespace, procps (pgrep) for the
#                            sandbox attacks, python3-yaml (PyYAML) as the config oracle, python3-jinja2
#                            (the chat templates' reference), python3-torch (the .pt graph files'
#                            reference), Open MPI (libopenmpi-dev, openmpi-bin: the MPI build and its
#                            mpirun tests), node + npm packages used as tokenizer oracles)
set -eu
cd "$(dirname "$0")/.."
mode=${1:-runtime}

runtime_pkgs="pkg-config libseccomp-dev libluajit-5.1-dev luajit libopenblas-dev libcjson-dev libcurl4-openssl-dev libutf8proc-dev libyaml-dev zlib1g-dev make gcc"
test_pkgs="clang libclang-rt-14-dev perl python3-numpy python3-yaml python3-jinja2 chromium curl valgrind iproute2 procps git"
# installed without their recommendations (torch's libtorch-dev and compiler toolchain are not needed to
# load and save; Open MPI runs on one machine without its optional transports)
lean_pkgs="python3-torch libopenmpi-dev openmpi-bin"

missing=""
for p in $runtime_pkgs $([ "$mode" = test ] && echo $test_pkgs); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ "$mode" = test ] && ! command -v node >/dev/null; then missing="$missing nodejs npm"; fi
missing_lean=""
for p in $([ "$mode" = test ] && echo $lean_pkgs); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_lean="$missing_lean $p"
done
if [ -n "$missing$missing_lean" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "ctrace: missing Debian packages:$missing$missing_lean" >&2
    echo "ctrace: install them with: sudo apt-get install$missing$missing_lean" >&2
    exit 1
  fi
  echo "ctrace: installing$missing$missing_lean"
  apt-get update -qq
  [ -z "$missing" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  [ -z "$missing_lean" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing_lean >/dev/null
fi

if [ "$mode" = test ] && [ ! -d tests/tok/node_modules/@huggingface/tokenizers ]; then
  echo "ctrace: installing the tokenizer oracles (npm)"
  (cd tests/tok && npm ci --no-audit --no-fund --loglevel=error)
fi
exit 0
