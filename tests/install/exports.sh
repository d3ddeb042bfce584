#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/install/exports.sh — the installed library exports exactly the functions the installed
# headers declare: nothing internal (a tsync__* symbol an app could bind to would freeze the
# internals into the ABI), and nothing declared but missing. Checks libtillsync.so (nm -D) and
# every object of libtillsync.a (its global symbols of default visibility: what an app's own
# shared library linking it would export).
#   sh exports.sh BUILD_DIR CC
# Needs GCC (-aux-info lists every function the headers declare, however it is spelt).
set -eu
build=$1
cc=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/tsync-exports.XXXXXX")
trap 'rm -rf "$work"' EXIT
p=$work/prefix
fail() {
    echo "FAIL: $*"
    exit 1
}
cmake --install "$build" --prefix "$p" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "cmake --install $build --prefix $p"; }
lib=$(dirname "$(find "$p" -name libtillsync.a | head -1)")

# The functions the installed headers declare (each header; the umbrella might miss one).
for h in "$p"/include/tillsync/*.h; do
    echo "#include <tillsync/$(basename "$h")>"
done >"$work/all.c"
"$cc" -fsyntax-only -aux-info "$work/aux.txt" -I"$p/include" "$work/all.c" ||
    fail "the installed headers do not compile together"
grep -F "/* $p/include/" "$work/aux.txt" |
    sed -E 's/^\/\*[^*]*\*\/ *//; s/ *\(.*//; s/.*[^A-Za-z0-9_]//' | sort -u >"$work/declared"
[ -s "$work/declared" ] || fail "found no function in the installed headers"

# The shared library's exported functions and data.
nm -D --defined-only "$lib/libtillsync.so" | awk '{print $NF}' | sort -u >"$work/shared"
if ! diff -u "$work/declared" "$work/shared" >"$work/diff"; then
    echo "--- declared in $p/include/tillsync/*.h"
    echo "+++ exported by libtillsync.so (nm -D --defined-only)"
    tail -n +3 "$work/diff" | grep '^[-+]'
    fail "libtillsync.so exports other symbols than the headers declare (above)"
fi

# The static library: global, defined, default visibility.
readelf -sW "$lib/libtillsync.a" |
    awk '$5 == "GLOBAL" && $6 == "DEFAULT" && $7 != "UND" {print $8}' | sort -u >"$work/static"
if ! diff -u "$work/declared" "$work/static" >"$work/diff"; then
    echo "--- declared in $p/include/tillsync/*.h"
    echo "+++ visible in libtillsync.a (readelf -s: GLOBAL DEFAULT, defined)"
    tail -n +3 "$work/diff" | grep '^[-+]'
    fail "libtillsync.a has other visible symbols than the headers declare (above)"
fi
n=$(wc -l <"$work/declared")
echo "ok: libtillsync.so and libtillsync.a export exactly the $n functions the headers declare"
