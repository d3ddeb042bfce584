#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/install/subdir.sh — two builds in one (a CI step, .ci/run: it compiles the library once
# more, too long for ctest):
#   - tillsync inside another project (add_subdirectory): no CMAKE_SOURCE_DIR assumption, its
#     tests, benchmarks and examples off there, tillsync::tillsync and tillsync::tillsync_static;
#   - without avahi (-DTSYNC_MDNS=OFF): nothing links or calls avahi, and the library, the tool
#     (tillsync demo) and an app work.
#   sh tests/install/subdir.sh [JOBS]
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
jobs=${1:-2}
work=$(mktemp -d "${TMPDIR:-/tmp}/tsync-subdir.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
    echo "FAIL: $*"
    exit 1
}
b=$work/build
cmake -S "$src/tests/install/subdir" -B "$b" -DTILLSYNC_SOURCE="$src" -DTSYNC_MDNS=OFF \
    -DTSYNC_WERROR=ON >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; fail "configure"; }
grep -qE "^(AVAHI_|pkgcfg_lib_AVAHI)" "$b/CMakeCache.txt" &&
    fail "TSYNC_MDNS=OFF still looked for avahi"
grep -q "^TSYNC_TESTS:BOOL=ON" "$b/CMakeCache.txt" && fail "tests are on inside another project"
cmake --build "$b" -j"$jobs" >"$work/build.log" 2>&1 ||
    { tail -40 "$work/build.log"; fail "build"; }
[ -e "$b/tillsync/bench_scale" ] && fail "benchmarks built inside another project"

so=$b/tillsync/libtillsync.so
readelf -dW "$so" | grep -i "NEEDED.*avahi" && fail "libtillsync.so needs avahi"
nm -u "$b/tillsync/libtillsync.a" 2>/dev/null | grep -q " avahi_" &&
    fail "libtillsync.a calls avahi"
cd "$work"
"$b/hello" "$work/a.db" >/dev/null || fail "hello (shared)"
"$b/hello_static" "$work/b.db" >/dev/null || fail "hello_static"
mkdir demo && cd demo
"$b/tillsync/tillsync" demo >"$work/demo.log" 2>&1 ||
    { tail -20 "$work/demo.log"; fail "tillsync demo"; }
echo "ok: tillsync by add_subdirectory with TSYNC_MDNS=OFF: library, tool and app without avahi"
