#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_diskfull.sh — a full disk under a running node (issue 10, defect 7).
# Till a's database lives on a small tmpfs (mounted in a private mount namespace, so nothing
# leaks to the machine), till b's on the ordinary disk; both nodes run. The tmpfs is filled up
# and b sells a large row, which a cannot store. Node a must stay up and say "disk full" in its
# status (text and --json); status, state, hash, export, backup and bundle of a must work on the
# full disk, writing to another directory. Once space is freed, a must resume by itself: b's sales
# reach a, a's next sale reaches b, and both hash equal.
#
# usage: sh tests/cli/cli_diskfull.sh PATH/TO/tillsync   (needs root and unshare(1); else SKIPPED)
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

T=${1:?usage: cli_diskfull.sh PATH/TO/tillsync}
if [ -z "$TSYNC_DISKFULL_NS" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null 2>&1; then
        echo "SKIPPED: a tmpfs in a private mount namespace needs root and unshare(1)"
        exit 0
    fi
    TSYNC_DISKFULL_NS=1 exec unshare -m --propagation private sh "$0" "$@"
fi
# Only in the namespace: the harness makes $W, which an exec above would leave behind.
. "$(dirname "$0")/lib.sh"
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    umount "$W/full" 2>/dev/null
    [ -n "$KEEP" ] || rm -rf "$W"
}
mkdir "$W/full"
if ! mount -t tmpfs -o size=16m tmpfs "$W/full"; then
    echo "FAIL: cannot mount a tmpfs in the private namespace"
    exit 1
fi
says_full() { "$T" status "$1" --json | grep -q '"disk_full": true'; }
not_full() { "$T" status "$1" --json | grep -q '"disk_full": false'; }
same_hash() { [ "$("$T" hash "$A")" = "$("$T" hash "$B")" ]; }

A="$W/full/a.db"
B="$W/b.db"
for d in "$A" "$B"; do
    must "$T" init "$d"
    must "$T" sql "$d" "CREATE TABLE sales(id TEXT PRIMARY KEY, item TEXT, note BLOB)"
    must "$T" replicate "$d" sales
done
# c: a till on the same disk whose node is not running (its WAL checkpointed away): even the
# shared-memory index of a reader cannot be set up on the full disk.
C="$W/full/c.db"
must "$T" init "$C"
must "$T" sql "$C" "CREATE TABLE sales(id TEXT PRIMARY KEY, item TEXT, note BLOB)"
must "$T" replicate "$C" sales
must "$T" sql "$C" "INSERT INTO sales VALUES('c1', 'tea', NULL)"
KA=$(key_of "$A")
"$T" run "$A" --listen 'tcp://127.0.0.1:*' 2>"$W/a.log" &
PA=$!
PIDS="$PA"
wait_for 10 has_listen "$A" || bad "node a wrote no endpoint: $(cat "$W/a.log")"
"$T" run "$B" --listen 'tcp://127.0.0.1:*' --peer "$(listen_of "$A")#$KA" 2>"$W/b.log" &
PB=$!
PIDS="$PA $PB"
wait_for 10 online "$B" || bad "b never came online: $(tail -3 "$W/b.log")"
must "$T" sql "$A" "INSERT INTO sales VALUES('a1', 'tea', NULL)"
must "$T" sql "$B" "INSERT INTO sales VALUES('b1', 'cake', NULL)"
wait_for 10 count_is "$B" 2 || bad "a's first sale did not reach b"
wait_for 10 count_is "$A" 2 || bad "b's first sale did not reach a"

# ---------------------------------------------------------------- the disk fills up
dd if=/dev/zero of="$W/full/filler" bs=16k 2>/dev/null
[ "$(df --output=avail "$W/full" | tail -n1 | tr -d ' ')" = 0 ] || bad "the tmpfs is not full: $(df "$W/full")"
# b sells rows a cannot store (each larger than anything a's WAL could reuse).
for i in 1 2 3; do
    must "$T" sql "$B" "INSERT INTO sales VALUES('big$i', 'crate', randomblob(400000))"
done
wait_for 15 says_full "$A" && ok || bad "a's status does not say disk full: $("$T" status "$A" --json 2>&1 | grep -i 'full\|running') $(tail -3 "$W/a.log")"
sleep 2
kill -0 "$PA" 2>/dev/null && ok || bad "node a stopped on the full disk: $(tail -5 "$W/a.log")"
grep -q "disk full" "$W/a.log" && ok || bad "a did not log the full disk: $(tail -5 "$W/a.log")"
[ "$(grep -c "disk full" "$W/a.log")" -le 3 ] && ok ||
    bad "a logs the full disk over and over: $(grep -c "disk full" "$W/a.log") lines"

# Reading and rescue commands work on the full disk, writing elsewhere.
"$T" status "$A" >"$W/st" 2>&1 && grep -q "disk full" "$W/st" && ok ||
    bad "status on the full disk: $(cat "$W/st")"
"$T" status "$A" --json >"$W/stj" 2>&1 && grep -q '"running": true' "$W/stj" && ok ||
    bad "status --json on the full disk: $(cat "$W/stj")"
"$T" state "$A" --json >"$W/state" 2>&1 && grep -q '"site"' "$W/state" && ok ||
    bad "state on the full disk: $(cat "$W/state")"
"$T" hash "$A" >"$W/hash" 2>&1 && [ "$(wc -c <"$W/hash")" -ge 64 ] && ok ||
    bad "hash on the full disk: $(cat "$W/hash")"
"$T" export "$A" sales -o "$W/sales.csv" >"$W/exp" 2>&1 && grep -q "a1" "$W/sales.csv" && ok ||
    bad "export on the full disk: $(cat "$W/exp")"
"$T" backup "$A" "$W/a.tsbak" >"$W/bak" 2>&1 && [ -s "$W/a.tsbak" ] && ok ||
    bad "backup to another disk on the full disk: $(cat "$W/bak")"
"$T" backup-check "$W/a.tsbak" >"$W/bakc" 2>&1 && ok || bad "the rescue backup does not check: $(cat "$W/bakc")"
"$T" bundle "$A" "$W/a.bun" >"$W/bun" 2>&1 && [ -s "$W/a.bun" ] && ok ||
    bad "bundle to another disk on the full disk: $(cat "$W/bun")"
"$T" conflicts "$A" >"$W/conf" 2>&1 && ok || bad "conflicts on the full disk: $(cat "$W/conf")"
"$T" trust "$A" >"$W/trust" 2>&1 && ok || bad "trust on the full disk: $(cat "$W/trust")"
# status exits 3 when no node runs (docs/NODE.md, "Exit status"), and still reports.
for cmd in "status $C" "status $C --json"; do
    # shellcheck disable=SC2086
    "$T" $cmd >"$W/c.out" 2>&1
    [ $? -eq 3 ] && [ -s "$W/c.out" ] && ok || bad "$cmd on the full disk (no node): $(cat "$W/c.out")"
done
for cmd in "state $C" "hash $C" "export $C sales -o $W/c.csv" \
    "backup $C $W/c.tsbak" "bundle $C $W/c.bun" "conflicts $C" "trust $C"; do
    # shellcheck disable=SC2086
    "$T" $cmd >"$W/c.out" 2>&1 && ok || bad "$cmd on the full disk (no node): $(cat "$W/c.out")"
done
"$T" status "$C" | grep -q "disk full" && ok || bad "status of c does not say disk full"
grep -q "c1" "$W/c.csv" && ok || bad "the rescue export of c lacks its sale"
[ "$(wc -c <"$W/full/filler")" -gt 0 ] || bad "the filler vanished"

# ---------------------------------------------------------------- space is freed
rm -f "$W/full/filler"
wait_for 45 count_is "$A" 5 && ok || bad "b's sales did not reach a after space was freed: $("$T" sql "$A" "SELECT id FROM sales" | tr '\n' ' ') $(tail -3 "$W/a.log")"
wait_for 10 not_full "$A" && ok || bad "a's status still says disk full"
grep -q "disk space is back" "$W/a.log" && ok || bad "a did not log that space is back"
must "$T" sql "$A" "INSERT INTO sales VALUES('a2', 'scone', NULL)"
wait_for 10 count_is "$B" 6 && ok || bad "a's sale after the full disk did not reach b"
wait_for 10 same_hash && ok || bad "a and b hash differently after the full disk"
kill -0 "$PA" 2>/dev/null && ok || bad "node a is not running at the end"
kill -TERM "$PA" "$PB"
wait "$PA"
rc=$?
[ $rc -eq 0 ] && ok || bad "node a exited $rc at the end"
wait "$PB"
PIDS=""
finish
