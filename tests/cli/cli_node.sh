#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_node.sh — the node from the command line: `tillsync run` for two tills on loopback
# (ports picked by the node: --listen tcp://127.0.0.1:*), a sale made with `tillsync sql` at one
# appears at the other within a second and both hash equal; `tillsync status` (text and --json)
# while the nodes run and after they stop; SIGTERM stops a node cleanly (exit 0, status file
# removed); usage errors exit 2 and failures 1 with one line "tillsync: what: why"; the embedding
# example (examples/embed.c) syncs with a node on its own thread and from a poll loop.
#
# usage: sh tests/cli/cli_node.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"
EMBED=$(dirname "$T")/example_embed

sales_dbs a b
KA=$(key_of "$W/a.db")
[ ${#KA} -eq 64 ] && ok || bad "state --json shows no public key: '$KA'"

# ---------------------------------------------------------------- usage and failures
run "$T" run
expect "run without DB" 2 "run needs DB"
run "$T" run "$W/a.db" --listen
expect "run --listen without a value" 2 "listen needs a value"
run "$T" run "$W/nope.db"
expect "run on a missing database" 1 "no database"
run "$T" run "$W/a.db" --listen tcp://127.0.0.1:* --peer 127.0.0.1:7400
expect "run with a malformed peer" 1 "expected tcp://ADDR:PORT"
run "$T" run "$W/a.db" --listen tcp://127.0.0.1:* --peer tcp://127.0.0.1:7400
expect "keyless peer of a database not enrolled" 1 "give its key"
run "$T" run "$W/a.db" --listen tcp://127.0.0.1:* --peer tcp://127.0.0.1:7400#abcd
expect "peer with a short key" 1 "64 hex digits"
run "$T" status
expect "status without DB" 2 "status needs DB"
run "$T" status "$W/a.db" # exit 3: no node runs
[ $rc -eq 3 ] && grep -q "node: not running" "$W/out" && ok ||
    bad "status of a stopped node: $rc $(cat "$W/out" "$W/err")"

# ---------------------------------------------------------------- two live nodes
"$T" run "$W/a.db" --listen 'tcp://127.0.0.1:*' 2>"$W/a.log" &
PA=$!
PIDS="$PA"
wait_for 10 has_listen "$W/a.db" || bad "node a wrote no status with its endpoint: $(cat "$W/a.log")"
EA=$(listen_of "$W/a.db")
run "$T" run "$W/b.db" --listen "$EA"
expect "listen on an address in use" 1 "cannot listen"
"$T" run "$W/b.db" --listen 'tcp://127.0.0.1:*' --peer "$EA#$KA" 2>"$W/b.log" &
PB=$!
PIDS="$PA $PB"
offline_now() { "$T" status "$1" --json | grep -q '"online": false'; }
wait_for 10 online "$W/b.db" && ok || bad "b never came online: $(cat "$W/b.log")"
wait_for 10 online "$W/a.db" && ok || bad "a never saw b: $(cat "$W/a.log")"
must "$T" sql "$W/a.db" "INSERT INTO sales VALUES('s1', 'tea', 240)"
must "$T" sql "$W/b.db" "INSERT INTO sales VALUES('s2', 'cake', 390)"
wait_for 5 count_is "$W/b.db" 2 && ok || bad "a's sale did not reach b: $("$T" sql "$W/b.db" "SELECT * FROM sales")"
wait_for 5 count_is "$W/a.db" 2 && ok || bad "b's sale did not reach a"
[ "$("$T" hash "$W/a.db")" = "$("$T" hash "$W/b.db")" ] && ok || bad "a and b hash differently"

# a acknowledges b's sale after merging it, and b's status file is a periodic report: the row can
# be visible at a a moment before b's report shows the acknowledgement (seen once in CI).
lag_zero() { "$T" status "$W/b.db" | grep -q "lag: they lack 0, we lack 0"; }
wait_for 5 lag_zero
run "$T" status "$W/b.db"
[ $rc -eq 0 ] && ok || bad "status while running: $(cat "$W/err")"
for what in "node: running" "online" "$(echo "$KA" | cut -c1-16)" "connected" "last seen" \
    "mDNS: not enrolled, so no till is dialled from mDNS" \
    "lag: they lack 0, we lack 0" "pending outgoing: 0" "held 0  parked 0" "refused: nothing"; do
    grep -q -e "$what" "$W/out" && ok || bad "status does not show '$what': $(cat "$W/out")"
done
run "$T" status "$W/b.db" --json
for what in '"running": true' '"online": true' '"peers"' '"they_lack": 0' '"we_lack": 0' \
    '"pending_out": 0' '"held": 0' '"parked": 0' '"conflicts": 0' '"refused"' '"malformed": 0'; do
    grep -q -e "$what" "$W/out" && ok || bad "status --json lacks $what: $(cat "$W/out")"
done

# ---------------------------------------------------------------- the embedding example
if [ -x "$EMBED" ]; then
    EB=$(listen_of "$W/b.db")
    KB=$(key_of "$W/b.db")
    # Its own 3 sales + the 2 already there: it must receive from the node it dials.
    run "$EMBED" "$W/e1.db" --peer "$EB#$KB" --sales 3 --wait-sales 5 --timeout 15
    [ $rc -eq 0 ] && grep -q "on the node thread" "$W/out" && ok ||
        bad "embed (own thread): $rc $(cat "$W/out" "$W/err" | head -20)"
    grep -q "^peer $(echo "$KB" | cut -c1-16) at $EB: gone -> connecting; node offline (on the node thread)" "$W/out" &&
        grep -q ": connecting -> connected; node online" "$W/out" && ok ||
        bad "embed: no peer state events: $(grep "^peer" "$W/out")"
    run "$EMBED" "$W/e2.db" --loop --peer "$EA#$KA" --sales 2 --wait-sales 7 --timeout 15
    [ $rc -eq 0 ] && grep -q "on the main thread" "$W/out" && ok ||
        bad "embed (host loop): $rc $(cat "$W/out" "$W/err" | head -20)"
    wait_for 10 count_is "$W/a.db" 7 && ok ||
        bad "the embedded nodes' sales did not reach a: a holds $("$T" sql "$W/a.db" "SELECT count(*) FROM sales" 2>&1), b $("$T" sql "$W/b.db" "SELECT count(*) FROM sales" 2>&1)
a: $("$T" status "$W/a.db" 2>&1 | grep -E 'peer|lag|held|refused')
b: $("$T" status "$W/b.db" 2>&1 | grep -E 'peer|lag|held|refused')
a.log: $(tail -15 "$W/a.log")
b.log: $(tail -15 "$W/b.log")"
else
    bad "no example_embed next to $T"
fi

# ---------------------------------------------------------------- liveness
# A frozen peer (SIGSTOP: its connection stays open and says nothing, like a cut cable) is taken
# as gone within 5 s; when it thaws it is connected again within 5 s.
kill -STOP "$PB"
wait_for 5 offline_now "$W/a.db" && ok || bad "a still online 5 s after b froze: $(tail -3 "$W/a.log")"
"$T" status "$W/a.db" --json | grep -q '"state": "unreachable"' && ok ||
    bad "b is not unreachable in a's status: $("$T" status "$W/a.db" --json | grep state)"
"$T" status "$W/a.db" | grep -q "unreachable since .* ago" && ok ||
    bad "tillsync status does not show b unreachable: $("$T" status "$W/a.db" | grep peer)"
kill -CONT "$PB"
wait_for 5 online "$W/a.db" && ok || bad "a not online 5 s after b thawed: $(tail -3 "$W/a.log")"
"$T" status "$W/a.db" --json | grep -q '"lost_ms": [0-9]' && ok || bad "a's status has no lost_ms for b"

# ---------------------------------------------------------------- clean stop
kill -TERM "$PB"
wait "$PB"
rc=$?
[ $rc -eq 0 ] && ok || bad "SIGTERM: node b exited $rc"
[ ! -e "$W/b.db.node" ] && ok || bad "node b left its status file"
grep -q "node stopped" "$W/b.log" && ok || bad "node b did not log its stop: $(tail -3 "$W/b.log")"
offline() { "$T" status "$1" --json | grep -q '"online": false'; }
wait_for 10 offline "$W/a.db" && ok || bad "a still shows itself online after b stopped"
kill -INT "$PA"
wait "$PA"
rc=$?
PIDS=""
[ $rc -eq 0 ] && ok || bad "SIGINT: node a exited $rc"
finish
