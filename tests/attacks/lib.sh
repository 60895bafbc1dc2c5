# lib.sh - the harness of the adversarial suite (tests/attacks/test_*.sh, run by make check).
#
# Every case is an attack that must fail, asserted with canaries rather than with messages alone:
#   canary PATH          a file outside what the attack may touch; must keep its content (or stay
#                        absent, for a path that does not exist yet) until canaries_intact
#   canaries_intact      ok/not ok for every canary
#   SECRET               a random string; secret_file PATH writes it to PATH. no_secret FILE...
#                        checks that it appears in none of the files (outputs, logs, requests)
#   attack NAME STATUS   records a case: STATUS is the attack's exit status; it passes when non-zero
#                        and the canaries hold (the caller adds its own checks with ok/bad)
# Source it after `cd` to the project; it sets CTRACE (the binary under test), tmp (removed on
# exit) and prints the TAP plan from finish.
set -u
CTRACE=$PWD/${CTRACE_BUILD:-${BUILD:-build}}/ctrace
tmp=$(mktemp -d)
cleanups=()
trap 'for c in "${cleanups[@]}"; do eval "$c"; done; rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
show() { sed 's/^/#   /' "$@" | head -40; }

SECRET=secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
secret_file() { mkdir -p "$(dirname "$1")"; printf '%s\n' "$SECRET" > "$1"; }
# no_secret LABEL FILE...: none of the files holds the secret
no_secret() {
  local label=$1; shift
  if grep -qsF "$SECRET" "$@"; then bad "$label: the secret leaked into $(grep -lsF "$SECRET" "$@" | head -3 | tr '\n' ' ')"
  else ok "$label: the secret appears in no output"; fi
}

declare -A canary_sum
canary() {
  if [ -e "$1" ] || [ -L "$1" ]; then canary_sum[$1]=$(sha256sum < "$1" 2>/dev/null || echo link)
  else canary_sum[$1]=absent; fi
}
# canaries_hold: 0 when every canary is as it was
canaries_hold() {
  local p now
  for p in "${!canary_sum[@]}"; do
    if [ -e "$p" ] || [ -L "$p" ]; then now=$(sha256sum < "$p" 2>/dev/null || echo link); else now=absent; fi
    [ "$now" = "${canary_sum[$p]}" ] || { echo "# canary changed: $p (${canary_sum[$p]} -> $now)"; return 1; }
  done
  return 0
}
canaries_intact() { canaries_hold && ok "every canary is intact" || bad "a canary changed"; }

# attack NAME STATUS [LOG]: the attack failed (non-zero status) and left every canary intact
attack() {
  local name=$1 st=$2 log=${3:-}
  if [ "$st" -eq 0 ]; then bad "$name: exited 0"; [ -n "$log" ] && show "$log"; return; fi
  if ! canaries_hold; then bad "$name: a canary changed"; [ -n "$log" ] && show "$log"; return; fi
  ok "$name (exit $st)"
}

finish() { echo "1..$n"; exit $fail; }
