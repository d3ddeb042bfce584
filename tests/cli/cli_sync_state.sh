#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_sync_state.sh — the sync state in `tillsync status` (docs/NODE.md, "Sync state"):
# "offline" with its reason while no node runs, "alone" for a node with no other till, "synced"
# once two tills on loopback are connected and current, in the text ("sync: ...") and in --json
# ("sync": {"state", "since_ms", "last_synced_at_ms", "reason"}).
#
# usage: sh tests/cli/cli_sync_state.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

sales_dbs a b
KA=$(key_of "$W/a.db")

# No node: the till syncs not.
run "$T" status "$W/a.db"
grep -q "^sync: offline (no node runs on this database)" "$W/out" && ok ||
    bad "status without a node: $(cat "$W/out")"
run "$T" status "$W/a.db" --json
grep -q '"state": "offline"' "$W/out" && grep -q '"last_synced_at_ms": null' "$W/out" && ok ||
    bad "status --json without a node: $(cat "$W/out")"

# One node, no other till known.
"$T" run "$W/a.db" --no-mdns --listen 'tcp://127.0.0.1:*' 2>"$W/a.log" &
PA=$!
PIDS="$PA"
wait_for 10 has_listen "$W/a.db" || bad "node a wrote no status with its endpoint: $(cat "$W/a.log")"
alone() { "$T" status "$W/a.db" | grep -q "^sync: alone (no other till known yet"; }
wait_for 5 alone && ok || bad "a alone: $("$T" status "$W/a.db" | grep '^sync')"

# A second till: both synced, with a last synced time.
EA=$(listen_of "$W/a.db")
"$T" run "$W/b.db" --no-mdns --listen 'tcp://127.0.0.1:*' --peer "$EA#$KA" 2>"$W/b.log" &
PB=$!
PIDS="$PA $PB"
synced() { "$T" status "$1" | grep -q "^sync: synced (1 connected till(s) current); since .* ago; last synced .* ago"; }
wait_for 10 synced "$W/a.db" && ok || bad "a not synced: $("$T" status "$W/a.db" | grep '^sync')"
wait_for 10 synced "$W/b.db" && ok || bad "b not synced: $("$T" status "$W/b.db" | grep '^sync')"
run "$T" status "$W/b.db" --json
for what in '"sync": {' '"state": "synced"' '"since_ms": [0-9]' '"last_synced_at_ms": [0-9]' \
    '"reason": "1 connected till(s) current"'; do
    grep -q -e "$what" "$W/out" && ok || bad "status --json lacks $what: $(cat "$W/out")"
done

kill -TERM "$PB"
wait "$PB"
PIDS="$PA"
offline() { "$T" status "$W/a.db" | grep -q "^sync: offline (no other till is reachable"; }
wait_for 10 offline && ok || bad "a not offline after b stopped: $("$T" status "$W/a.db" | grep '^sync')"
kill -TERM "$PA"
wait "$PA"
PIDS=""
finish
