#!/usr/bin/env bash
# test_valgrind.sh - the network C tests (1,000 HTTP requests against the loopback server, the
# cache, downloads) under valgrind's memcheck: any memory error or definitely/indirectly lost
# block fails. Runs on the plain build (the sanitizer pass leaves it out: ASan and valgrind do
# not mix).
set -u
cd "$(dirname "$0")/../.."
bin=${CTRACE_BUILD:-build}/tests/test_net
log=$(mktemp)
trap 'rm -f "$log"' EXIT
CT_NET_LOOPS=1000 valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=9 -q "$bin" > "$log" 2>&1
rc=$?
n_ok=$(grep -c "^ok" "$log")
n_bad=$(grep -c "^not ok" "$log")
[ $rc = 0 ] && [ "$n_bad" = 0 ] && [ "$n_ok" -gt 0 ] && echo "ok 1 - test_net under valgrind: $n_ok checks, 1,000 requests, no memory error or leak" ||
  { echo "not ok 1 - test_net under valgrind (exit $rc, $n_bad failed checks)"; grep -v "^ok" "$log" | head -30 | sed 's/^/#   /'; }
echo "1..1"
[ $rc = 0 ] && [ "$n_bad" = 0 ]
