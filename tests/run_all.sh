#!/usr/bin/env bash
# Runs every test under prove (TAP): C unit tests, Lua tests, command-line tests (tokenizer
# parity, libFuzzer smoke runs). BUILD selects the build directory (build or build/asan);
# SKIP_FUZZ=1 leaves out the fuzz runs (the asan pass: the fuzzers are sanitized already).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export CTRACE_BUILD=$BUILD
cli=$(ls tests/cli/test_*.sh)
[ "${SKIP_FUZZ:-0}" = 1 ] && cli=$(echo "$cli" | grep -v test_fuzz)
prove -e "" $(ls "$BUILD"/tests/test_* | grep -v "\.d$")
prove -e "$BUILD/ctrace" tests/lua/test_*.lua
prove -e bash $cli
