#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_node_restore.sh — the documented recovery path under pruning, with real nodes on
# loopback: three enrolled tills sell and sync with a small --prune-keep; a backup of till a is
# taken; a keeps selling; every till prunes a's log past the backup's vector; a is stopped, the old
# backup restored (a new incarnation, with its old site's vector entry below the peers' horizon),
# and a runs again. It must get back everything, its own sales made after the backup included
# (a snapshot: the batches are gone everywhere), with the same hash and exact counters on every
# till, without its peers logging "lacks batch" on every retry. Then the same with a state below
# the horizon given to `bundle --since`: one line that says what to do.
#
# usage: sh tests/cli/cli_node_restore.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    [ -n "$KEEP" ] && echo "kept $W" || rm -rf "$W"
}
state_field() { "$T" state "$1" --json | sed -n "s/^  \"$2\": \"\([0-9a-f]*\)\".*/\1/p"; }
hash_of() { "$T" hash "$1"; }
all_same() { h=$(hash_of "$W/a.db") && [ "$h" = "$(hash_of "$W/b.db")" ] && [ "$h" = "$(hash_of "$W/c.db")" ]; }
q() { "$T" sql "$1" "$2"; }
# The lowest seq of site $2 still in the log of $1 (the stub at its horizon).
horizon() { q "$1" "SELECT min(l.seq) FROM tsync_log l JOIN tsync_sites s ON l.site = s.idx WHERE lower(hex(s.site)) = '$2'"; }
pruned_past() { h=$(horizon "$1" "$2") && [ -n "$h" ] && [ "$h" -gt "$3" ]; }
start() { # start NAME [ARGS...]: a node on a free port; sets its pid in P_NAME
    name=$1
    shift
    rm -f "$W/$name.db.node"
    "$T" run "$W/$name.db" --listen 'tcp://127.0.0.1:*' --prune-keep 3 --prune-every 0.3 "$@" \
        2>>"$W/$name.log" &
    eval "P_$name=$!"
    PIDS="$PIDS $!"
    wait_for 10 has_listen "$W/$name.db" || bad "$name wrote no status: $(cat "$W/$name.log")"
}
sell() { # sell DB FROM TO: one sale (one batch) per call
    i=$2
    while [ "$i" -le "$3" ]; do
        must "$T" sql "$1" "INSERT INTO sales VALUES('$(basename "$1" .db)-$i', 1)"
        must "$T" sql "$1" "UPDATE products SET stock = stock - 1 WHERE id = 'p1'"
        i=$((i + 1))
    done
}

must "$T" shop create "$W/shop.key" --name "Test Shop"
for d in a b c; do
    must "$T" init "$W/$d.db"
    must "$T" sql "$W/$d.db" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0)"
    must "$T" sql "$W/$d.db" "CREATE TABLE sales(id TEXT PRIMARY KEY, qty INTEGER)"
    must "$T" replicate "$W/$d.db" products --counter stock
    must "$T" replicate "$W/$d.db" sales
    must "$T" enrol "$W/$d.db" --shop-key "$W/shop.key" --name "till-$d"
done
KB=$(state_field "$W/b.db" public_key)
KC=$(state_field "$W/c.db" public_key)
must "$T" sql "$W/a.db" "INSERT INTO products VALUES('p1', 'apple', 1000)"

start b
EB=$(listen_of "$W/b.db")
start c --peer "$EB#$KB"
EC=$(listen_of "$W/c.db")
start a --peer "$EB#$KB" --peer "$EC#$KC"
sell "$W/a.db" 1 5
sell "$W/b.db" 1 3
wait_for 30 all_same && ok || bad "the three tills did not converge at first"

# The backup, then a keeps selling (its own sales after the backup) and so does b.
must "$T" backup "$W/a.db" "$W/a.tsb"
SA=$(state_field "$W/a.db" site)
BSEQ=$(q "$W/a.db" "SELECT seq FROM tsync_sites WHERE lower(hex(site)) = '$SA'")
sell "$W/a.db" 6 25
sell "$W/b.db" 4 8
wait_for 30 all_same && ok || bad "the tills did not converge after the backup"
for d in b c; do
    wait_for 30 pruned_past "$W/$d.db" "$SA" "$BSEQ" && ok ||
        bad "$d did not prune a's log past seq $BSEQ (horizon $(horizon "$W/$d.db" "$SA"))"
done
WANT_SALES=$(q "$W/b.db" "SELECT count(*) FROM sales")
WANT_STOCK=$(q "$W/b.db" "SELECT stock FROM products WHERE id = 'p1'")
[ "$WANT_SALES" = 33 ] && [ "$WANT_STOCK" = 967 ] && ok || bad "b: $WANT_SALES sales, stock $WANT_STOCK"

# A state below every horizon: the bundle command says what to do, in one line.
"$T" state "$W/a.db" --json >"$W/state.now"
must "$T" restore "$W/x.db" "$W/a.tsb"
"$T" state "$W/x.db" --json >"$W/state.old"
"$T" bundle "$W/b.db" "$W/x.bundle" --since "$W/state.old" >"$W/bundle.out" 2>"$W/bundle.err"
rc=$?
[ $rc -eq 1 ] && ok || bad "bundle --since an old state: exit $rc, expected 1"
[ "$(wc -l <"$W/bundle.err")" -eq 1 ] && ok || bad "bundle --since an old state: not one line: $(cat "$W/bundle.err")"
grep -q "lacks batch" "$W/bundle.err" && bad "bundle --since an old state: $(cat "$W/bundle.err")"
grep -q "snapshot" "$W/bundle.err" && grep -q "backup" "$W/bundle.err" && grep -q "enrolled" "$W/bundle.err" &&
    ok || bad "bundle --since an old state does not say what to do: $(cat "$W/bundle.err")"
[ -e "$W/x.bundle" ] && bad "a refused bundle left a file"
# A state at the head still gets its bundle.
"$T" bundle "$W/b.db" "$W/now.bundle" --since "$W/state.now" >/dev/null 2>"$W/bundle.err" && ok ||
    bad "bundle --since a current state: $(cat "$W/bundle.err")"

# The restore: stop a, put the old backup back, run it again.
kill "$P_a"
wait "$P_a" 2>/dev/null
must "$T" restore "$W/a.db" "$W/a.tsb"
[ "$(q "$W/a.db" "SELECT count(*) FROM sales")" -lt "$WANT_SALES" ] && ok || bad "the backup is not old"
: >"$W/b.log.mark"
LB0=$(wc -l <"$W/b.log")
LC0=$(wc -l <"$W/c.log")
start a --peer "$EB#$KB" --peer "$EC#$KC"
wait_for 30 all_same && ok || bad "the restored till did not converge: $(tail -5 "$W/a.log") / b: $(tail -3 "$W/b.log")"
[ "$(q "$W/a.db" "SELECT count(*) FROM sales")" = "$WANT_SALES" ] && ok ||
    bad "a has $(q "$W/a.db" "SELECT count(*) FROM sales") sales after the restore, expected $WANT_SALES"
[ "$(q "$W/a.db" "SELECT count(*) FROM sales WHERE id = 'a-25'")" = 1 ] && ok ||
    bad "a did not get back its own last sale made after the backup"
[ "$(q "$W/a.db" "SELECT stock FROM products WHERE id = 'p1'")" = "$WANT_STOCK" ] && ok ||
    bad "a: stock $(q "$W/a.db" "SELECT stock FROM products WHERE id = 'p1'"), expected $WANT_STOCK"
wait_for 10 num_ge "$W/a.db" snapshots_received 1 && ok || bad "a took no snapshot"

# It goes on selling under its new site id, and that reaches everybody.
sell "$W/a.db" 100 102
wait_for 30 all_same && ok || bad "a's sales after the restore did not reach b and c"
[ "$(q "$W/c.db" "SELECT stock FROM products WHERE id = 'p1'")" = $((WANT_STOCK - 3)) ] && ok ||
    bad "c: stock $(q "$W/c.db" "SELECT stock FROM products WHERE id = 'p1'")"

# No repeated failure in the peers' logs.
sleep 3
n=$(tail -n +"$((LB0 + 1))" "$W/b.log" | grep -c "lacks batch")
m=$(tail -n +"$((LC0 + 1))" "$W/c.log" | grep -c "lacks batch")
[ "$n" -eq 0 ] && [ "$m" -eq 0 ] && ok || bad "the peers logged 'lacks batch' $n and $m times"
n=$(tail -n +"$((LB0 + 1))" "$W/b.log" | grep -c "cannot send batches")
[ "$n" -le 1 ] && ok || bad "b logged 'cannot send batches' $n times: $(tail -3 "$W/b.log")"
finish
