#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# scripts/snapshot_join.sh — measures a new till joining a shop by snapshot (not run in CI): the
# test tests/net/test_node_snapshot_stream.c with ROWS rows
# (default 1 000 000), two node processes on loopback. Prints the join time (until the joiner's
# status shows the snapshot taken), both nodes' peak RSS (VmHWM), their log lines about the
# snapshot, and whether a session was dropped for silence.
#
# usage: sh scripts/snapshot_join.sh BUILD_DIR [ROWS] [TEST]   (BUILD_DIR with TSYNC_TESTS on)
# TEST: joins_without_a_silent_session (default: a new till) or restored_till_joins_again (a till
# restored from a backup older than the horizon, every row changed since; it prints the first
# join too).
# The nodes are `tillsync run` processes (TSYNC_SNAP_EXEC=1), with the default liveness timeout
# (3.5 s). Env: TSYNC_SNAP_WAIT_MS (default 120000) bounds the wait. The database folder is
# removed.
B=${1:?usage: sh scripts/snapshot_join.sh BUILD_DIR [ROWS]}
ROWS=${2:-1000000}
TEST=${3:-joins_without_a_silent_session}
out=$(mktemp)
echo "load: $(cat /proc/loadavg)"
TSYNC_KEEP=1 TSYNC_SNAP_EXEC=1 TSYNC_SNAP_ROWS=$ROWS TSYNC_SNAP_LIVENESS_MS=${TSYNC_SNAP_LIVENESS_MS:-3500} TSYNC_CLI="$B/tillsync" \
    "$B/test_node_snapshot_stream" --filter "node_snapshot_stream/$TEST" \
    --verbose >"$out" 2>&1
rc=$?
grep -E "joined|not joined|Synthesis" "$out"
dir=$(sed -n 's/^TSYNC_KEEP: test folder //p' "$out" | head -1)
if [ -n "$dir" ] && [ -d "$dir" ]; then
    for n in a c; do
        grep -E "snapshot|link as lost" "$dir/$n.log" | sed "s/^/$n: /" | head -8
    done
    rm -rf "$dir"
fi
[ $rc -eq 0 ] || tail -20 "$out"
rm -f "$out"
exit $rc
