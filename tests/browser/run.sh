#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/browser/run.sh — runs console.test.js (the console in headless Chromium) for ctest's
# browser_console. Installs puppeteer-core from package-lock.json (`npm ci`) when node_modules is
# missing or older than the lock file. Exits 77 (ctest: skipped) only when node or chromium is
# not installed; a failed `npm ci` or a missing npm is a failure, never a skip.
#
# usage: sh tests/browser/run.sh PATH/TO/tillsync SHOTS_DIR [--readme-shot FILE.png]
# Environment: CHROMIUM (default: chromium on PATH), KEEP=1 keeps the tills' folder.
set -u
T=${1:?usage: sh $0 PATH/TO/tillsync SHOTS_DIR [--readme-shot FILE.png]}
SHOTS=${2:?usage: sh $0 PATH/TO/tillsync SHOTS_DIR [--readme-shot FILE.png]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null 2>&1 || {
    echo "SKIPPED: browser_console needs node (Debian's nodejs; scripts/install-deps.sh installs it)"
    exit 77
}
CHROMIUM=${CHROMIUM:-$(command -v chromium)} || CHROMIUM=""
if [ -z "$CHROMIUM" ] || [ ! -x "$CHROMIUM" ]; then
    echo "SKIPPED: browser_console needs chromium (Debian's chromium; scripts/install-deps.sh installs it)"
    exit 77
fi
export CHROMIUM
if [ ! -d "$here/node_modules/puppeteer-core" ] ||
    [ -n "$(find "$here/package-lock.json" -newer "$here/node_modules")" ]; then
    command -v npm >/dev/null 2>&1 || {
        echo "FAIL: npm is not installed and $here/node_modules is missing (scripts/install-deps.sh installs npm)"
        exit 1
    }
    # Beside the screenshots' folder (build/tests/), not in it.
    mkdir -p "$SHOTS"
    log="$(cd "$SHOTS/.." && pwd)/browser-npm-ci.log"
    echo "npm ci in $here (log: $log)"
    (cd "$here" && npm ci --no-audit --no-fund >"$log" 2>&1) || {
        echo "FAIL: npm ci in $here failed:"
        tail -n 15 "$log"
        exit 1
    }
    touch "$here/node_modules"
fi
exec node "$here/console.test.js" "$T" "$SHOTS" "$@"
