#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_trust_sync.sh — shop trust applied to data: once enrolled, a till merges batches only
# from keys with a valid certificate of its shop; certificates and revocations travel in bundles
# and replicate; a revoked device's batches after its cutoff are refused with the database
# unchanged.
#
# usage: sh tests/cli/cli_trust_sync.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"
h() { "$T" hash "$1" 2>/dev/null; }
sync_to() { # sync_to FROM TO (till names): bundle what TO lacks, merge it; status in $rc
    "$T" state "$W/$2.db" --json >"$W/st" 2>/dev/null
    "$T" bundle "$W/$1.db" "$W/bundle" --since "$W/st" >/dev/null 2>&1
    run "$T" merge "$W/$2.db" "$W/bundle"
}
SCHEMA="CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0)"
for t in a b c x; do
    "$T" init "$W/$t.db" >/dev/null || bad "init $t"
    "$T" sql "$W/$t.db" "$SCHEMA" || bad "schema $t"
    "$T" replicate "$W/$t.db" products --counter stock >/dev/null || bad "replicate $t"
done
"$T" shop create "$W/shop.key" --name "Corner Shop" >/dev/null 2>&1 || bad "shop create"
"$T" shop create "$W/other.key" --name "Other Shop" >/dev/null 2>&1 || bad "shop create other"
for t in a b c; do
    "$T" enrol "$W/$t.db" --shop-key "$W/shop.key" --name "till-$t" >/dev/null 2>&1 ||
        bad "enrol $t"
done
"$T" enrol "$W/x.db" --shop-key "$W/other.key" --name intruder >/dev/null 2>&1 || bad "enrol x"

# a's sale reaches b; b learns a's certificate from the bundle itself
"$T" sql "$W/a.db" "INSERT INTO products VALUES('p1', 'tea', 10)"
sync_to a b
[ "$rc" -eq 0 ] && ok || bad "merge a -> b refused: $(cat "$W/err")"
[ "$(h "$W/a.db")" = "$(h "$W/b.db")" ] && ok || bad "a and b differ after sync"

# another shop's till gets nothing into b, and b is unchanged
"$T" sql "$W/x.db" "INSERT INTO products VALUES('p9', 'forged', 99)"
before=$(h "$W/b.db")
sync_to x b
[ "$rc" -ne 0 ] && ok || bad "merge of another shop's batches succeeded"
grep -q "refused" "$W/out" "$W/err" && ok || bad "no refusal reported: $(cat "$W/out" "$W/err")"
[ "$(h "$W/b.db")" = "$before" ] && ok || bad "another shop's batch changed b"

# revoke a at its current head: what a wrote before still counts, later batches are refused
site_a=$("$T" state "$W/a.db" --json | sed -n 's/.*"site": "\([0-9a-f]*\)".*/\1/p' | head -1)
seq_a=$("$T" state "$W/a.db" --json | tr -d ' \n' | sed -n "s/.*{\"site\":\"$site_a\",\"seq\":\([0-9]*\).*/\1/p")
pk_a=$("$T" state "$W/a.db" --json | sed -n 's/.*"public_key": "\([0-9a-f]*\)".*/\1/p')
[ -n "$site_a" ] && [ -n "$seq_a" ] && [ -n "$pk_a" ] && ok || bad "cannot read a's state"
"$T" shop revoke "$W/shop.key" "$pk_a" --cutoff "$site_a:$seq_a" >"$W/rev" 2>/dev/null ||
    bad "shop revoke"
run "$T" revoke "$W/b.db" "$W/rev"
[ "$rc" -eq 0 ] && ok || bad "revoke on b: $(cat "$W/err")"
"$T" sql "$W/a.db" "UPDATE products SET stock = stock - 1 WHERE id = 'p1'"
before=$(h "$W/b.db")
sync_to a b
[ "$rc" -ne 0 ] && ok || bad "a's batch after its cutoff was merged"
[ "$(h "$W/b.db")" = "$before" ] && ok || bad "a's refused batch changed b"

# the revocation replicates: c learns it from b's bundle and refuses a's new batch too
sync_to b c
[ "$rc" -eq 0 ] && ok || bad "merge b -> c: $(cat "$W/err")"
sync_to a c
[ "$rc" -ne 0 ] && ok || bad "c merged a's batch after the cutoff: the revocation did not replicate"
[ "$(h "$W/b.db")" = "$(h "$W/c.db")" ] && ok || bad "b and c differ"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
