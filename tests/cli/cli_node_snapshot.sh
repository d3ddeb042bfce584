#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_node_snapshot.sh — log pruning and snapshot recovery with real nodes on loopback: two
# enrolled tills sell and sync; once both hold the batches, the first prunes its log down to the
# newest few per till; a third till enrolled afterwards is behind that horizon, gets a snapshot
# from the first, converges (same hash, exact counters), and then exchanges batches both ways;
# a till that is not enrolled is never sent a snapshot (it is refused at the handshake).
#
# usage: sh tests/cli/cli_node_snapshot.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"
same_hash() { [ "$("$T" hash "$1")" = "$("$T" hash "$2")" ]; }
start() { # start NAME [ARGS...]: a node on a free port; sets its pid in P_NAME
    name=$1
    shift
    "$T" run "$W/$name.db" --listen 'tcp://127.0.0.1:*' "$@" 2>"$W/$name.log" &
    eval "P_$name=$!"
    PIDS="$PIDS $!"
    wait_for 10 has_listen "$W/$name.db" || bad "$name wrote no status: $(cat "$W/$name.log")"
}

must "$T" shop create "$W/shop.key" --name "Test Shop"
for d in a b c x; do
    must "$T" init "$W/$d.db"
    must "$T" sql "$W/$d.db" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0)"
    must "$T" replicate "$W/$d.db" products --counter stock
done
for d in a b c; do must "$T" enrol "$W/$d.db" --shop-key "$W/shop.key" --name "till-$d"; done
KA=$(key_of "$W/a.db")

start a --prune-keep 5 --prune-every 0.5
EA=$(listen_of "$W/a.db")
start b --peer "$EA#$KA" --prune-keep 5 --prune-every 0.5
i=1
while [ $i -le 40 ]; do
    must "$T" sql "$W/a.db" "INSERT INTO products VALUES('p$i', 'item $i', 100)"
    i=$((i + 1))
done
must "$T" sql "$W/b.db" "UPDATE products SET stock = stock - 7 WHERE id = 'p1'"
wait_for 20 same_hash "$W/a.db" "$W/b.db" && ok || bad "a and b did not converge"
wait_for 20 num_ge "$W/a.db" batches_pruned 30 && ok ||
    bad "a pruned $(status_num "$W/a.db" batches_pruned) batches, expected >= 30: $(tail -5 "$W/a.log")"
n=$("$T" sql "$W/a.db" "SELECT count(*) FROM tsync_log WHERE length(body) > 0")
[ "$n" -le 12 ] && ok || bad "a still holds $n batch bodies after pruning"

# c joins after the pruning: batches cannot catch it up, a snapshot does.
start c --peer "$EA#$KA"
wait_for 20 same_hash "$W/a.db" "$W/c.db" && ok || bad "c did not converge with a: $(tail -5 "$W/c.log")"
wait_for 10 num_ge "$W/c.db" snapshots_received 1 && ok || bad "c took no snapshot: $(tail -5 "$W/c.log")"
# a's status file is rewritten about once a second: c may report the snapshot before a does.
wait_for 5 num_ge "$W/a.db" snapshots_sent 1 && ok || bad "a sent no snapshot"
[ "$("$T" sql "$W/c.db" "SELECT stock FROM products WHERE id='p1'")" = 93 ] && ok ||
    bad "c: counter after the snapshot is $("$T" sql "$W/c.db" "SELECT stock FROM products WHERE id='p1'")"
[ "$("$T" sql "$W/c.db" "SELECT count(*) FROM products")" = 40 ] && ok || bad "c lacks rows"

# After the snapshot, batches flow both ways: c's sales reach a and b, a's reach c.
must "$T" sql "$W/c.db" "UPDATE products SET stock = stock - 2 WHERE id = 'p1'"
must "$T" sql "$W/a.db" "INSERT INTO products VALUES('p99', 'late', 5)"
wait_for 20 same_hash "$W/a.db" "$W/c.db" && ok || bad "a and c diverge after the snapshot"
wait_for 20 same_hash "$W/b.db" "$W/c.db" && ok || bad "b and c diverge after the snapshot"
[ "$("$T" sql "$W/b.db" "SELECT stock FROM products WHERE id='p1'")" = 91 ] && ok ||
    bad "b: counter is $("$T" sql "$W/b.db" "SELECT stock FROM products WHERE id='p1'")"

# x is not enrolled: the enrolled node refuses it at the handshake; it gets nothing.
KX=$(key_of "$W/x.db")
start x --peer "$EA#$KA"
wait_for 10 num_ge "$W/a.db" shop 1 && ok || bad "a did not count x's refusal under shop"
[ "$("$T" sql "$W/x.db" "SELECT count(*) FROM products")" = 0 ] && ok || bad "x received rows"
[ -n "$KX" ] && ok
finish
