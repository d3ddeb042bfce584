#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# bench/peers/run.sh — installs the peers' pinned packages from package-lock.json (npm ci) when
# node_modules is missing or older than the lock file, then runs run.mjs with the given arguments.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here" || exit 1
command -v node >/dev/null 2>&1 || { echo "peers: NOT RUN: node is not installed"; exit 0; }
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    echo "== npm ci in $here"
    npm ci --no-audit --no-fund >npm-ci.log 2>&1 || {
        echo "peers: NOT RUN: npm ci failed (see $here/npm-ci.log)"; tail -5 npm-ci.log; exit 0; }
    touch node_modules
fi
exec node run.mjs "$@"
