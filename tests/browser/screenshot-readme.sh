#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/browser/screenshot-readme.sh — makes docs/console-overview.png (the README's and
# docs/CONSOLE.md's picture of the console) from the browser test: the overview of till A with
# till B connected and the indicator synced, 1100x520. It runs the whole test (run.sh,
# console.test.js); the other screenshots go to a temporary folder, removed afterwards.
#
# usage: sh tests/browser/screenshot-readme.sh [PATH/TO/tillsync]   (default: build/tillsync)
# Exits as the test does (0: every flow passed; 77: node or chromium not installed).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
T=${1:-$root/build/tillsync}
[ -x "$T" ] || { echo "FAIL: no tillsync binary at $T (build first, or give its path)"; exit 1; }
shots=$(mktemp -d "${TMPDIR:-/tmp}/tillsync-readme-shots.XXXXXX") || exit 1
sh "$here/run.sh" "$T" "$shots" --readme-shot "$root/docs/console-overview.png"
rc=$?
rm -rf "$shots"
[ "$rc" -eq 0 ] && echo "wrote $root/docs/console-overview.png"
exit $rc
