#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_schema.sh — two tills whose definitions of a replicated table differ (issue 10,
# defect 9): `products` has `stock` as a counter on a and as a plain column on b, an extra column
# `note` on a, and `price` is REAL on a and TEXT on b. Two real nodes on loopback sync; both
# `tillsync status` outputs (text and --json) must say `attention`, naming the table, the other
# till and what differs, and `tillsync parked` (text and --json) must list the parked changes with
# their reasons. The same mismatch must show from a bundle alone (no node), and the node's log
# must say it once, not every second.
#
# usage: sh tests/cli/cli_schema.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

site_of() { "$T" state "$1" --json | sed -n 's/.*"site": "\([0-9a-f]*\)".*/\1/p' | head -1; }
status_has() { "$T" status "$1" 2>/dev/null | grep -q -e "$2"; }
# shows FILE WHAT PATTERN...: each pattern must be in FILE.
shows() {
    f=$1
    what=$2
    shift 2
    for p in "$@"; do
        grep -q -e "$p" "$f" && ok || bad "$what does not show '$p': $(cat "$f")"
    done
}

must "$T" init "$W/a.db"
must "$T" init "$W/b.db"
must "$T" sql "$W/a.db" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price REAL,
    stock INTEGER NOT NULL DEFAULT 0, note TEXT)"
must "$T" replicate "$W/a.db" products --counter stock
must "$T" sql "$W/b.db" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price TEXT,
    stock INTEGER NOT NULL DEFAULT 0)"
must "$T" replicate "$W/b.db" products
must "$T" sql "$W/a.db" "INSERT INTO products VALUES('p1', 'tea', 2.5, 10, 'green')"
must "$T" sql "$W/a.db" "UPDATE products SET stock = stock - 1 WHERE id = 'p1'"
must "$T" sql "$W/b.db" "INSERT INTO products VALUES('p2', 'cake', '3.90', 5)"
SA=$(site_of "$W/a.db")
SB=$(site_of "$W/b.db")
KA=$(key_of "$W/a.db")

# ---------------------------------------------------------------- the C API's view through the CLI
run "$T" schema "$W/a.db" --json
[ $rc -eq 0 ] && ok || bad "schema --json: $rc $(cat "$W/err")"
shows "$W/out" "schema --json of a" '"digest"' '"products"' '"counter": true' '"real"'

# ---------------------------------------------------------------- through a bundle (no node)
must "$T" bundle "$W/a.db" "$W/a.tsb"
run "$T" merge "$W/b.db" "$W/a.tsb"
run "$T" status "$W/b.db"
shows "$W/out" "status of b after a's bundle" "state: attention" "products" \
    "$(echo "$SA" | cut -c1-16)" "stock" "counter" "note" "price" "real" "text"
run "$T" parked "$W/b.db"
[ $rc -eq 0 ] && ok || bad "parked: $rc $(cat "$W/err")"
shows "$W/out" "parked of b" "products" "a counter column there is not one here" \
    "$(echo "$SA" | cut -c1-16)"
run "$T" parked "$W/b.db" --json
shows "$W/out" "parked --json of b" '"table": "products"' '"reason"' "\"origin\": \"$SA\""

# ---------------------------------------------------------------- two live nodes
"$T" run "$W/a.db" --listen 'tcp://127.0.0.1:*' 2>"$W/a.log" &
PA=$!
PIDS="$PA"
wait_for 10 has_listen "$W/a.db" || bad "node a wrote no status: $(cat "$W/a.log")"
EA=$(listen_of "$W/a.db")
"$T" run "$W/b.db" --listen 'tcp://127.0.0.1:*' --peer "$EA#$KA" 2>"$W/b.log" &
PB=$!
PIDS="$PA $PB"
wait_for 10 status_has "$W/a.db" "state: attention" && ok ||
    bad "a never showed attention: $("$T" status "$W/a.db") $(cat "$W/a.log")"
wait_for 10 status_has "$W/b.db" " connected since" || bad "b never connected: $(cat "$W/b.log")"
sleep 3 # a few anti-entropy rounds: the log must not repeat the mismatch
run "$T" status "$W/a.db"
shows "$W/out" "status of a" "state: attention" "products" "$(echo "$SB" | cut -c1-16)" \
    "stock" "note" "price"
run "$T" status "$W/a.db" --json
shows "$W/out" "status --json of a" '"state": "attention"' '"schema_mismatches"' \
    '"table": "products"' "\"site\": \"$SB\"" '"what"'
run "$T" status "$W/b.db" --json
shows "$W/out" "status --json of b" '"state": "attention"' "\"site\": \"$SA\""
run "$T" parked "$W/a.db"
shows "$W/out" "parked of a" "products" "$(echo "$SB" | cut -c1-16)"
n=$(grep -c "definition of products differs" "$W/a.log")
[ "$n" -eq 3 ] && ok ||
    bad "a's log says the mismatch $n times (want once per difference): $(cat "$W/a.log")"
grep -q "definition of products differs.*stock" "$W/a.log" && ok ||
    bad "a's log does not name stock: $(cat "$W/a.log")"

kill "$PA" "$PB" 2>/dev/null
wait "$PA" "$PB" 2>/dev/null
PIDS=""

# ---------------------------------------------------------------- step 2: a signed migration
# Two tills of one shop: c ran 001_note.sql from a folder, d did not, so d parks c's notes and
# both say attention. The admin signs that same file; installed on c alone (where it is already
# applied: nothing runs), it travels to d with the trust records, d runs it, the parked notes
# apply, the difference is gone on both and the hashes agree.
K="$W/shop.key"
must "$T" shop create "$K" --name "Schema shop"
for d in c d; do
    must "$T" init "$W/$d.db"
    must "$T" enrol "$W/$d.db" --shop-key "$K" --name "till-$d"
    must "$T" sql "$W/$d.db" "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT)"
    must "$T" replicate "$W/$d.db" items
done
mkdir "$W/mig"
printf 'ALTER TABLE items ADD COLUMN note TEXT;\n' >"$W/mig/001_note.sql"
must "$T" migrate "$W/c.db" "$W/mig"
must "$T" sql "$W/c.db" "INSERT INTO items VALUES('i1', 'tea', 'green')"
must "$T" sql "$W/d.db" "INSERT INTO items VALUES('i2', 'cake')"
KC=$(key_of "$W/c.db")
SC=$(site_of "$W/c.db")
"$T" run "$W/c.db" --listen 'tcp://127.0.0.1:*' --no-mdns 2>"$W/c.log" &
PC=$!
PIDS="$PC"
wait_for 10 has_listen "$W/c.db" || bad "node c wrote no status: $(cat "$W/c.log")"
EC=$(listen_of "$W/c.db")
"$T" run "$W/d.db" --listen 'tcp://127.0.0.1:*' --no-mdns --peer "$EC#$KC" 2>"$W/d.log" &
PD=$!
PIDS="$PC $PD"
wait_for 15 status_has "$W/d.db" "till-c.*column note: there, missing here" && ok ||
    bad "d never named till-c and note: $("$T" status "$W/d.db") $(cat "$W/d.log")"
wait_for 10 status_has "$W/d.db" "parked: items.note from till-c" && ok ||
    bad "d does not list the parked note: $("$T" status "$W/d.db")"
run "$T" shop sign-migration "$K" "$W/mig/001_note.sql"
[ $rc -eq 0 ] && [ -f "$W/mig/001_note.tsmig" ] && ok ||
    bad "sign-migration: $rc $(cat "$W/out" "$W/err")"
grep -q "BEGIN TILLSYNC SIGNED MIGRATION" "$W/mig/001_note.tsmig" && ok ||
    bad "the signed migration is not armoured: $(cat "$W/mig/001_note.tsmig")"
run "$T" shop show "$W/mig/001_note.tsmig"
shows "$W/out" "shop show of the signed migration" "signed migration" "001_note.sql" \
    "signature:  verifies"
run "$T" migrate "$W/c.db" "$W/mig/001_note.tsmig"
[ $rc -eq 0 ] && ok || bad "migrate c with the signed migration: $rc $(cat "$W/err")"
shows "$W/out" "migrate c FILE.tsmig" "installed" "up to date at version 1"
same_hash() { [ "$("$T" hash "$W/c.db")" = "$("$T" hash "$W/d.db")" ]; }
wait_for 20 same_hash && ok ||
    bad "c and d never agreed: $("$T" sql "$W/c.db" "SELECT * FROM items") / $("$T" sql "$W/d.db" "SELECT * FROM items") $(cat "$W/d.log")"
[ "$("$T" sql "$W/d.db" "SELECT note FROM items WHERE id = 'i1'")" = "green" ] && ok ||
    bad "d did not take c's parked note"
run "$T" migrate "$W/d.db" --status
shows "$W/out" "migrate --status of d" "version 1" "001_note.sql"
grep -q "applied signed migration 001_note.sql" "$W/d.log" && ok ||
    bad "d's log does not say it applied the signed migration: $(cat "$W/d.log")"
wait_for 10 status_has "$W/d.db" "state: ok" && ok || bad "d still says: $("$T" status "$W/d.db")"
wait_for 10 status_has "$W/c.db" "state: ok" && ok || bad "c still says: $("$T" status "$W/c.db")"
run "$T" parked "$W/d.db"
shows "$W/out" "parked of d after the migration" "^0 parked changes"
# A signed migration that cannot run (a column d already has): refused, nothing changes, status
# says so.
printf 'ALTER TABLE items ADD COLUMN note TEXT;\n' >"$W/mig/002_again.sql"
must "$T" shop sign-migration "$K" "$W/mig/002_again.sql"
run "$T" migrate "$W/d.db" "$W/mig/002_again.tsmig"
[ $rc -eq 1 ] && grep -q "duplicate column" "$W/err" && ok ||
    bad "a failing signed migration: $rc $(cat "$W/out" "$W/err")"
run "$T" status "$W/d.db" --json
shows "$W/out" "status --json of d after a failing signed migration" '"state": "attention"' \
    '"signed_migration_error": ".*duplicate column'
# Another shop's migration is refused.
must "$T" shop create "$W/other.key" --name "Other shop"
must "$T" shop sign-migration "$W/other.key" "$W/mig/002_again.sql" -o "$W/other.tsmig"
run "$T" migrate "$W/d.db" "$W/other.tsmig"
[ $rc -eq 1 ] && grep -q "shop" "$W/err" && ok || bad "another shop's migration: $rc $(cat "$W/err")"

finish
