#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/python/venv_pytest.sh SRC BUILD LIBRARY [PRELOAD] — the ctest `python_package`: installs python/
# into a fresh venv as a user would (`pip install` with no network: --no-index, and the system's
# setuptools through --no-build-isolation), then runs python/tests with pytest against LIBRARY
# (the build tree's libtillsync.so.0) through TILLSYNC_LIBRARY.
#
# The package is installed from a copy in BUILD (pip builds in the source folder, which must stay
# clean), and the tests run from SRC with the venv's interpreter, so `import tillsync` finds the
# installed package, not the source. Exit 77 (ctest SKIP_RETURN_CODE) only when Debian's
# python3-venv, python3-pytest or python3-setuptools is missing: scripts/install-deps.sh installs
# them, so CI never skips. PRELOAD: the sanitizer runtimes an instrumented LIBRARY needs loaded
# first (tests/python/tests.cmake); only pytest's interpreter gets them, with leak checks off.
set -eu
SRC=$1
BUILD=$2
LIB=$3
PRELOAD=${4:-}
PY=/usr/bin/python3 # Debian's, not a pyenv shim on PATH

if ! [ -x "$PY" ] || ! "$PY" -c 'import venv, ensurepip, pytest, setuptools, wheel' 2>/dev/null; then
    echo "SKIP: needs Debian's python3-venv, python3-pytest, python3-setuptools and python3-wheel" \
        "(scripts/install-deps.sh installs them)"
    exit 77
fi

W=$BUILD/python_package
rm -rf "$W"
mkdir -p "$W"
cp -R "$SRC/python" "$W/src"
rm -rf "$W/src/build" "$W/src"/*.egg-info
# With Debian's python3-pip the venv runs it (seen through --system-site-packages, installing into
# the venv) instead of a copy ensurepip installs: the same install, ~20 s less on a loaded machine.
if "$PY" -c 'import pip' 2>/dev/null; then
    "$PY" -m venv --system-site-packages --without-pip "$W/venv"
else
    "$PY" -m venv --system-site-packages "$W/venv"
fi
"$W/venv/bin/python" -m pip install -q --no-build-isolation --no-index --no-cache-dir "$W/src"

cd "$W"
where=$("$W/venv/bin/python" -c 'import tillsync; print(tillsync.__file__)')
case $where in
"$W/venv/"*) ;;
*)
    echo "FAIL: the tests would import tillsync from $where, not from the venv"
    exit 1
    ;;
esac
if [ -n "$PRELOAD" ]; then
    export LD_PRELOAD="$PRELOAD"
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
fi
# No bytecode or cache written into the source tree.
TILLSYNC_LIBRARY=$LIB PYTHONDONTWRITEBYTECODE=1 \
    exec "$W/venv/bin/python" -m pytest -p no:cacheprovider -q "$SRC/python/tests"
