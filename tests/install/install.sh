#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/install/install.sh — what `cmake --install` gives a POS developer, used as they would:
# installs this build into a fresh prefix, checks the files and the tool, then builds
# examples/hello.c against that prefix through pkg-config (examples/Makefile) and through
# find_package(tillsync) (examples/CMakeLists.txt), each shared and static, and runs them.
#   sh install.sh SOURCE_DIR BUILD_DIR VERSION
# Prints "FAIL: ..." (which ctest looks for) and exits 1 on the first problem.
set -eu
src=$1
build=$2
version=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/tsync-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
p=$work/prefix
fail() {
    echo "FAIL: $*"
    exit 1
}

cmake --install "$build" --prefix "$p" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "cmake --install $build --prefix $p"; }

# The files. libdir is lib/ or lib/<multiarch>/ (GNUInstallDirs), whichever was configured.
lib=$(dirname "$(find "$p" -name libtillsync.a | head -1)")
[ -d "$lib" ] && [ "$lib" != . ] || fail "no libtillsync.a under $p"
for f in include/tillsync/tillsync.h include/tillsync/version.h include/tillsync/common.h \
    bin/tillsync share/doc/tillsync/LICENSE share/doc/tillsync/tillsync.conf.example \
    share/man/man1/tillsync.1 lib/systemd/system/tillsync@.service lib/sysusers.d/tillsync.conf \
    lib/systemd/system/tillsync-relay.service lib/sysusers.d/tillsync-relay.conf; do
    [ -f "$p/$f" ] || fail "$f not installed"
done
# The unit runs the installed tool, not one of the build tree.
grep -q "^ExecStart=$p/bin/tillsync " "$p/lib/systemd/system/tillsync@.service" ||
    fail "tillsync@.service does not run $p/bin/tillsync"
# So does the relay's, as its own user (docs/RELAY.md, "As a service").
relay_unit=$p/lib/systemd/system/tillsync-relay.service
grep -q "^ExecStart=$p/bin/tillsync relay run \${STATE_DIRECTORY} --listen " "$relay_unit" ||
    fail "tillsync-relay.service does not run $p/bin/tillsync relay run"
grep -q "^ExecStartPre=.* $p/bin/tillsync relay init " "$relay_unit" ||
    fail "tillsync-relay.service does not make the relay with $p/bin/tillsync relay init"
grep -q "^User=tillsync-relay$" "$relay_unit" && grep -q "^Type=notify$" "$relay_unit" ||
    fail "tillsync-relay.service: not Type=notify as the user tillsync-relay"
grep -q "^u tillsync-relay " "$p/lib/sysusers.d/tillsync-relay.conf" ||
    fail "tillsync-relay.conf (sysusers) does not make the user tillsync-relay"
! grep -q "@CMAKE_INSTALL" "$relay_unit" || fail "tillsync-relay.service: a placeholder is left"
for f in libtillsync.so libtillsync.so.0 "libtillsync.so.$version" pkgconfig/tillsync.pc \
    cmake/tillsync/tillsyncConfig.cmake cmake/tillsync/tillsyncConfigVersion.cmake; do
    [ -e "$lib/$f" ] || fail "$lib/$f not installed"
done
# The SQLite extension (docs/SQLITE_EXTENSION.md): in libdir/tillsync/, exporting its entry
# point only (tests/cli/cli_sqlite_ext.sh loads it into the sqlite3 shell and Python).
[ -f "$lib/tillsync/tillsync.so" ] || fail "$lib/tillsync/tillsync.so not installed"
ext_syms=$(nm -D --defined-only "$lib/tillsync/tillsync.so" | awk '{print $NF}' | tr '\n' ' ')
[ "$ext_syms" = "sqlite3_tillsync_init " ] ||
    fail "tillsync.so exports '$ext_syms', not sqlite3_tillsync_init only"
soname=$(readelf -dW "$lib/libtillsync.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libtillsync.so.0 ] || fail "SONAME is '$soname', not libtillsync.so.0"
grep -q "Apache License" "$p/share/doc/tillsync/LICENSE" || fail "LICENSE is not the Apache licence"
# No file of the source or build tree is named in what was installed (it would break elsewhere).
if grep -rlF -e "$src" -e "$build" "$p/include" "$lib/pkgconfig" "$lib/cmake"; then
    fail "installed files name the source or build tree (above)"
fi

# The tool runs from the prefix, without LD_LIBRARY_PATH, with the prefix's library. Built with
# -DTSYNC_INSTALL_RPATH=OFF (TSYNC_INSTALL_RPATH=0 here; a distribution's package, debian/rules)
# it has no RUNPATH and finds the library on the system path, for which LD_LIBRARY_PATH stands in.
tool_env="-u LD_LIBRARY_PATH"
if [ "${TSYNC_INSTALL_RPATH:-1}" = 0 ]; then
    if readelf -dW "$p/bin/tillsync" | grep -q "RUNPATH\|RPATH"; then
        fail "$p/bin/tillsync has a RUNPATH although built with TSYNC_INSTALL_RPATH=OFF"
    fi
    tool_env="LD_LIBRARY_PATH=$lib"
fi
# shellcheck disable=SC2086 # tool_env is one or two words
out=$(env $tool_env "$p/bin/tillsync" --version) || fail "$p/bin/tillsync --version"
[ "$out" = "tillsync $version" ] || fail "tillsync --version says '$out', not 'tillsync $version'"
# shellcheck disable=SC2086
loaded=$(env $tool_env ldd "$p/bin/tillsync" |
    sed -n 's/.*libtillsync.so.0 => \(.*\) (.*/\1/p')
[ "$(realpath "$loaded")" = "$(realpath "$lib/libtillsync.so.0")" ] ||
    fail "the installed tool loads '$loaded', not $lib/libtillsync.so.0"

# pkg-config: our include folder and nothing else in --cflags; the dependencies only for --static.
export PKG_CONFIG_PATH="$lib/pkgconfig"
[ "$(pkg-config --modversion tillsync)" = "$version" ] || fail "pkg-config --modversion tillsync"
cflags=$(pkg-config --cflags tillsync | sed 's/ *$//')
[ "$cflags" = "-I$p/include" ] ||
    fail "pkg-config --cflags tillsync gives '$cflags', not '-I$p/include'"
libs=$(pkg-config --libs tillsync | sed 's/ *$//')
[ "$libs" = "-L$lib -ltillsync" ] || fail "pkg-config --libs tillsync gives '$libs'"
pkg-config --static --libs tillsync | grep -q -- "-lsqlite3" ||
    fail "pkg-config --static --libs tillsync lacks -lsqlite3"

run_hello() { # PROGRAM: builds a till and prints its hash; run twice (the second run re-opens it)
    rm -f "$work/till.db" "$work/till.db.key"
    env -u LD_LIBRARY_PATH LD_LIBRARY_PATH="$lib" "$1" "$work/till.db" >"$work/hello.out" 2>&1 ||
        { cat "$work/hello.out"; fail "$1 did not run"; }
    grep -q "^tillsync $version (ABI 0)" "$work/hello.out" ||
        { cat "$work/hello.out"; fail "$1 output"; }
    env -u LD_LIBRARY_PATH LD_LIBRARY_PATH="$lib" "$1" "$work/till.db" >/dev/null 2>&1 ||
        fail "$1 did not run on its own database again"
}
static_only() { # PROGRAM: linked with libtillsync.a, not the shared library
    if readelf -dW "$1" | grep -q "NEEDED.*libtillsync"; then fail "$1 needs libtillsync.so"; fi
}

cp "$src/examples/hello.c" "$src/examples/Makefile" "$src/examples/CMakeLists.txt" "$work/"
flags=${TSYNC_CONSUMER_FLAGS:-} # the library's sanitizers, if it was built with them
make -s -C "$work" CC="${CC:-cc}" CFLAGS="-O1 -Wall -Wextra -Werror $flags" \
    >"$work/make.log" 2>&1 || { cat "$work/make.log"; fail "examples/Makefile (pkg-config)"; }
run_hello "$work/hello"
run_hello "$work/hello_static"
static_only "$work/hello_static"
echo "ok: pkg-config: hello and hello_static built and ran"

unset PKG_CONFIG_PATH # find_package needs only CMAKE_PREFIX_PATH
cmake -S "$work" -B "$work/cm" -DCMAKE_PREFIX_PATH="$p" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER="${CC:-cc}" -DCMAKE_C_FLAGS="-Wall -Wextra -Werror $flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" >"$work/cm.log" 2>&1 ||
    { cat "$work/cm.log"; fail "examples/CMakeLists.txt: find_package(tillsync)"; }
cmake --build "$work/cm" >>"$work/cm.log" 2>&1 ||
    { cat "$work/cm.log"; fail "examples: cmake --build"; }
run_hello "$work/cm/hello"
run_hello "$work/cm/hello_static"
static_only "$work/cm/hello_static"
echo "ok: find_package: hello and hello_static built and ran"
echo "ok: installed into $p, checked and used"
