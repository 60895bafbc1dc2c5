#!/usr/bin/env bash
# Runs every test under prove (TAP): C unit tests, Lua tests, command-line tests (tokenizer
# parity, libFuzzer smoke runs). BUILD selects the build directory (build or build/asan);
# SKIP_FUZZ=1 leaves out the fuzz and valgrind runs (the asan pass: the fuzzers are sanitized
# already, and ASan binaries do not run under valgrind).
#
# No test may touch the internet: the suite re-runs itself in a network namespace of its own
# with only loopback up (unshare -rn), where the kernel allows it; the network tests use a
# loopback server of their own.
set -eu
cd "$(dirname "$0")/.."
if [ -z "${CTRACE_NETNS:-}" ] && command -v ip >/dev/null && unshare -rn ip link set lo up 2>/dev/null; then
  export CTRACE_NETNS=1
  exec unshare -rn bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
if [ "${CTRACE_NETNS:-}" = 1 ]; then echo "# tests run in an empty network namespace (loopback only)"
else echo "# tests run with the machine's network (unshare -rn unavailable); they use loopback only"; fi
BUILD=${BUILD:-build}
export CTRACE_BUILD=$BUILD
cli=$(ls tests/cli/test_*.sh tests/attacks/test_*.sh 2>/dev/null)
[ "${SKIP_FUZZ:-0}" = 1 ] && cli=$(echo "$cli" | grep -v -e test_fuzz -e test_valgrind)
prove -e "" $(ls "$BUILD"/tests/test_* | grep -v "\.d$")
prove -e "$BUILD/ctrace" tests/lua/test_*.lua
prove -e bash $cli
