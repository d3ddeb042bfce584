#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_revoke.sh — a revocation whose cutoff is below what an honest till merged, through the
# CLI (docs/TRUST.md, "Kept batches of a revoked device"): the admin's preview
# (`shop revoke ... --dry-run`, `--check DB`) says what the revocation cuts and which honest
# till's batches depend on the device's batches; then, with bundles moved by hand in the order
# that used to strand them, no batch is held and both honest tills end with the same content.
#
# Tills: d (the device to revoke) sells d1..d15; x merges d's batches up to 5, h up to 10, sells
# on top of them, then merges 11 and 12. The revocation takes its cutoffs from x (5).
#
# usage: sh tests/cli/cli_revoke.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

check() {
    d=$1
    shift
    if "$@"; then ok; else bad "$d"; fi
}
q() { "$T" sql "$1" "$2" 2>/dev/null; }
# move FROM TO: a bundle of everything FROM holds, merged into TO (refusals are expected here).
move() {
    "$T" bundle "$W/$1.db" "$W/$1.bdl" >/dev/null 2>&1 || bad "bundle $1"
    "$T" merge "$W/$2.db" "$W/$1.bdl" >/dev/null 2>&1
}
sell_d() {
    i=$1
    while [ "$i" -le "$2" ]; do
        "$T" sql "$W/d.db" "INSERT INTO products VALUES('d$i', 'by d', 1)" >/dev/null ||
            bad "sale d$i"
        i=$((i + 1))
    done
}

K="$W/shop.key"
"$T" shop create "$K" --name "Corner Shop" >/dev/null || bad "shop create"
for db in d h x; do
    "$T" init "$W/$db.db" >/dev/null &&
        "$T" sql "$W/$db.db" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT,
            stock INTEGER NOT NULL DEFAULT 0)" >/dev/null &&
        "$T" replicate "$W/$db.db" products --counter stock >/dev/null &&
        "$T" enrol "$W/$db.db" --shop-key "$K" --name "till-$db" >/dev/null || bad "set up $db"
done
# every till learns the others' certificates (bundles carry them)
for a in d h x; do for b in d h x; do [ "$a" = "$b" ] || move "$a" "$b"; done; done

sell_d 1 5
move d x
sell_d 6 10
move d h
"$T" sql "$W/h.db" "INSERT INTO products VALUES('h1', 'by h', 3)" >/dev/null || bad "sale h1"
"$T" sql "$W/h.db" "UPDATE products SET name = 'renamed by h' WHERE id = 'd7'" >/dev/null ||
    bad "update by h"
sell_d 11 12
move d h
sell_d 13 15

DKEY=$(pubkey "$W/d.db")
DSITE=$(site "$W/d.db")
HSITE=$(site "$W/h.db")

# ---------------------------------------------------------------- the admin's preview
"$T" shop revoke "$K" "$DKEY" --cutoffs-from "$W/x.db" --check "$W/h.db" --dry-run \
    >"$W/out" 2>"$W/err"
rc=$?
[ "$rc" -eq 0 ] && [ ! -s "$W/err" ] && ok || bad "dry run: exit $rc, stderr: $(cat "$W/err")"
grep -q "BEGIN TILLSYNC" "$W/out" && bad "a dry run printed a revocation" || ok
check "the dry run names the site and its cutoff" grep -q "^site $DSITE: cutoff 5$" "$W/out"
check "x holds nothing after the cutoff" grep -q "x.db holds up to 5: nothing after the cutoff" "$W/out"
check "h holds 7 batches after the cutoff" \
    grep -q "h.db holds up to 12: 7 batches after the cutoff" "$W/out"
HS12=$(echo "$HSITE" | cut -c1-12)
check "the dry run names the honest till whose batches depend on them" \
    grep -q "depended on by 'till-h' (site $HS12…): 1 batch, up to seq 10" "$W/out"
check "the dry run says what every till keeps" grep -q "every till keeps up to 12" "$W/out"
[ -n "$KEEP" ] && cat "$W/out"
"$T" shop revoke "$K" "$DKEY" --cutoff "$DSITE:5" --check "$W/h.db" >"$W/d.rev" 2>"$W/err"
grep -q "BEGIN TILLSYNC REVOCATION" "$W/d.rev" && grep -q "^site $DSITE: cutoff 5$" "$W/err" &&
    ok || bad "--check without --dry-run: the record on stdout, the preview on stderr"

# ---------------------------------------------------------------- the revocation, late for h
"$T" shop revoke "$K" "$DKEY" --cutoffs-from "$W/x.db" >"$W/d.rev" 2>/dev/null ||
    bad "shop revoke"
"$T" revoke "$W/x.db" "$W/d.rev" >/dev/null || bad "revoke on x"
move h x # x keeps d's 6..10 (h's sales depend on them), refuses 11 and 12 for now
move d x # x refuses d's 13..15
move x h # h learns of the revocation: it holds d up to 12 and says so in a batch
move h x
move d h
move h x
move x h
for db in h x; do
    [ "$(q "$W/$db.db" "SELECT count(*) FROM tsync_held")" = 0 ] && ok ||
        bad "$db holds batches: $(q "$W/$db.db" "SELECT reason FROM tsync_held LIMIT 3")"
    [ "$(q "$W/$db.db" "SELECT count(*) FROM products WHERE id LIKE 'd%'")" = 12 ] && ok ||
        bad "$db has $(q "$W/$db.db" "SELECT count(*) FROM products WHERE id LIKE 'd%'") of d's rows, not 12"
    [ "$(q "$W/$db.db" "SELECT name FROM products WHERE id = 'd7'")" = "renamed by h" ] && ok ||
        bad "$db lost h's update of d7"
done
[ "$("$T" hash "$W/h.db")" = "$("$T" hash "$W/x.db")" ] && ok || bad "h and x differ"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
