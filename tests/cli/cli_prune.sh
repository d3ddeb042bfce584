#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_prune.sh — the log policy with real nodes on loopback: three enrolled tills sync;
# c stops; a and b go on selling and prune by the policy (a few batches), although c never
# acknowledged what they prune; status on a names c as left behind; c comes back, gets a snapshot,
# converges, and the report goes. Then two tills that are not enrolled prune by the policy too
# (no acknowledgement, no shop), and `tillsync prune` bounds a database synced by bundles only.
#
# usage: sh tests/cli/cli_prune.sh PATH/TO/tillsync
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
stop() { # stop NAME: SIGTERM, wait for it
    eval "p=\$P_$1"
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
}
bodies() { "$T" sql "$1" "SELECT count(*) FROM tsync_log WHERE length(body) > 0"; }
sell() { # sell DB FROM TO
    i=$2
    while [ "$i" -le "$3" ]; do
        must "$T" sql "$1" "INSERT INTO products VALUES('p$i', 'item $i', 100)"
        i=$((i + 1))
    done
}
behind_in_status() { "$T" status "$1" --json | grep -q '"log_behind"'; }
not_behind_in_status() { ! behind_in_status "$1"; }

must "$T" shop create "$W/shop.key" --name "Test Shop"
for d in a b c u v x y; do
    must "$T" init "$W/$d.db"
    must "$T" sql "$W/$d.db" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0)"
    must "$T" replicate "$W/$d.db" products --counter stock
done
for d in a b c; do must "$T" enrol "$W/$d.db" --shop-key "$W/shop.key" --name "till-$d"; done
KA=$(key_of "$W/a.db")
POL="--log-max-batches 5 --prune-every 0.5"

start a $POL
EA=$(listen_of "$W/a.db")
start b --peer "$EA#$KA" $POL
start c --peer "$EA#$KA"
sell "$W/a.db" 1 5
wait_for 20 same_hash "$W/a.db" "$W/c.db" && ok || bad "c did not sync at first"
wait_for 20 same_hash "$W/b.db" "$W/c.db" && ok || bad "b did not sync at first"
acks_are() { [ "$("$T" sql "$1" "SELECT count(*) FROM tsync_acks" 2>/dev/null)" = "$2" ]; }
wait_for 10 acks_are "$W/a.db" 2 && ok || bad "a recorded no acknowledgement of c"
stop c

# c is away; a and b prune by the policy, which waits for nobody.
sell "$W/a.db" 6 40
must "$T" sql "$W/b.db" "UPDATE products SET stock = stock - 7 WHERE id = 'p1'"
wait_for 20 same_hash "$W/a.db" "$W/b.db" && ok || bad "a and b did not converge"
wait_for 20 num_ge "$W/a.db" batches_pruned 20 && ok ||
    bad "a pruned $(status_num "$W/a.db" batches_pruned) batches: $(tail -5 "$W/a.log")"
few() { [ "$(bodies "$1")" -le "$2" ]; }
wait_for 10 few "$W/a.db" 6 && ok || bad "a still holds $(bodies "$W/a.db") batch bodies"
wait_for 10 behind_in_status "$W/a.db" && ok || bad "a's status does not name c as left behind"
"$T" status "$W/a.db" | grep -q "behind the log's horizon" && ok || bad "no attention line: $("$T" status "$W/a.db")"
"$T" status "$W/a.db" | grep -q "^log: .* kept: 5 batches" && ok || bad "no log line: $("$T" status "$W/a.db")"

# c comes back: a snapshot, then batches; the report goes.
start c --peer "$EA#$KA"
wait_for 30 same_hash "$W/a.db" "$W/c.db" && ok || bad "c did not converge: $(tail -5 "$W/c.log")"
wait_for 10 num_ge "$W/c.db" snapshots_received 1 && ok || bad "c took no snapshot: $(tail -5 "$W/c.log")"
[ "$("$T" sql "$W/c.db" "SELECT stock FROM products WHERE id='p1'")" = 93 ] && ok || bad "c: counter wrong"
wait_for 20 not_behind_in_status "$W/a.db" && ok || bad "a still reports c behind"
must "$T" sql "$W/c.db" "UPDATE products SET stock = stock - 2 WHERE id = 'p1'"
wait_for 20 same_hash "$W/a.db" "$W/c.db" && ok || bad "a and c diverge after the snapshot"
stop a
stop b
stop c

# Not enrolled: u and v sync by static peers; the policy prunes all the same.
KU=$(key_of "$W/u.db")
start u $POL
EU=$(listen_of "$W/u.db")
start v --peer "$EU#$KU" $POL
sell "$W/u.db" 1 30
wait_for 20 same_hash "$W/u.db" "$W/v.db" && ok || bad "u and v did not converge"
wait_for 20 num_ge "$W/v.db" batches_pruned 20 && ok || bad "v (not enrolled) did not prune"
wait_for 10 few "$W/v.db" 6 && ok || bad "v still holds $(bodies "$W/v.db") batch bodies"
stop u
stop v

# Bundles only: prune keeps what never left, then bounds the rest.
sell "$W/x.db" 1 12
run "$T" prune "$W/x.db" --log-max-batches 3
[ "$rc" = 0 ] && grep -q "^pruned 0 " "$W/out" && ok || bad "prune removed batches never sent: $(cat "$W/out" "$W/err")"
must "$T" bundle "$W/x.db" "$W/x.bun"
must "$T" merge "$W/y.db" "$W/x.bun"
run "$T" prune "$W/x.db"
[ "$rc" = 0 ] && [ "$(bodies "$W/x.db")" = 3 ] && ok || bad "x holds $(bodies "$W/x.db") bodies: $(cat "$W/out" "$W/err")"
run "$T" prune "$W/x.db" --log-max-days abc
[ "$rc" = 2 ] && grep -q "log-max-days needs" "$W/err" && ok || bad "bad value accepted: $(cat "$W/err")"
run "$T" prune "$W/x.db" --log-max-batches none --log-max-mb none --log-max-days none
[ "$rc" = 0 ] && grep -q "kept at most: any batches, any MB, any days" "$W/out" && ok || bad "none: $(cat "$W/out" "$W/err")"
finish
