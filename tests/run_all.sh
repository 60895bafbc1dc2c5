#!/usr/bin/env bash
# Runs every test under prove (TAP): C unit tests, Lua tests, command-line tests.
# BUILD selects the build directory (build or build-asan).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export CTRACE_BUILD=$BUILD
prove -e "" $(ls "$BUILD"/tests/test_* | grep -v "\.d$")
prove -e "$BUILD/ctrace" tests/lua/test_*.lua
prove -e bash tests/cli/test_*.sh
