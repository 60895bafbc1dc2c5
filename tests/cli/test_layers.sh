#!/usr/bin/env bash
# The engine's folders are layers (engine/README.md) and includes only point down:
#   core     includes core
#   formats  includes core
#   net      includes core
#   model    includes core, formats
#   trace    includes core, formats, model
#   bind/, host.c, main.c: anything
# Only bind/ and the host include lua.h; only net/ includes curl. Every engine include names its
# folder ("core/tensor.h"), so this check reads the layering straight from the sources.
set -eu
cd "$(dirname "$0")/../.."
declare -A allowed=([core]="core" [formats]="core formats" [net]="core net"
                    [model]="core formats model" [trace]="core formats model trace" [run]="core run")
n=0
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
fail=0
for dir in core formats net model trace run; do
  for f in engine/$dir/*.[ch]; do
    n=$((n + 1))
    ok=1
    while IFS= read -r inc; do
      layer=${inc%%/*}
      if [ "$layer" = "$inc" ]; then echo "# $f: #include \"$inc\" does not name its folder"; ok=0; continue; fi
      case " ${allowed[$dir]} " in *" $layer "*) ;; *) echo "# $f: includes $inc (a $dir file may include ${allowed[$dir]})"; ok=0;; esac
    done < <(grep -o '#include "[^"]*"' "$f" | sed 's/#include "\(.*\)"/\1/')
    if grep -q '#include <\(lua\|lauxlib\|lualib\)\.h>' "$f"; then echo "# $f: includes a Lua header"; ok=0; fi
    if [ "$dir" != net ] && grep -q '#include <curl/' "$f"; then echo "# $f: includes curl outside net/"; ok=0; fi
    if [ $ok = 1 ]; then echo "ok $n - $f"; else echo "not ok $n - $f"; fail=1; fi
  done
done
echo "1..$n"
exit $fail
