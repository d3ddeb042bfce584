#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_policy.sh — column policies from the CLI (docs/DATA_MODEL.md, "Column policies"):
# `tillsync replicate DB TABLE --max COL --min COL --review COL` on two tills, a local update that
# would lower the max column is undone, concurrent writes synced by bundle end with the largest
# and smallest values and equal hashes on both, the review column's conflict shows in
# `tillsync status` (text: an attention line; --json: review_open and state attention) on both,
# `tillsync schema` names the policies, and bad uses are refused with a message naming the
# column. A third till that replicates the table without policies parks the policy columns.
#
# usage: sh tests/cli/cli_policy.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

TABLE="CREATE TABLE scores(id TEXT PRIMARY KEY, best INTEGER, fastest REAL, owner TEXT,
    label TEXT, plays INTEGER NOT NULL DEFAULT 0)"
for t in a b c; do
    must "$T" init "$W/$t.db"
    must "$T" sql "$W/$t.db" "$TABLE"
done
out=$("$T" replicate "$W/a.db" scores --max best --min fastest --review owner --counter plays)
echo "$out" | grep -q "replicated" && ok || bad "replicate a: $out"
must "$T" replicate "$W/b.db" scores --max best --min fastest --review owner --counter plays
must "$T" replicate "$W/c.db" scores --counter plays

# refusals name the column
err=$("$T" replicate "$W/c.db" scores --max id 2>&1) && bad "replicate again accepted"
"$T" sql "$W/c.db" "CREATE TABLE other(id TEXT PRIMARY KEY, n INTEGER)" >/dev/null
err=$("$T" replicate "$W/c.db" other --max id 2>&1) && bad "--max on the key accepted"
echo "$err" | grep -q "id is part of the key" && ok || bad "key policy: $err"
err=$("$T" replicate "$W/c.db" other --max n --review n 2>&1) && bad "two rules accepted"
echo "$err" | grep -q "two merge rules" && ok || bad "two rules: $err"
err=$("$T" replicate "$W/c.db" other --min nope 2>&1) && bad "unknown column accepted"
echo "$err" | grep -q "no column nope" && ok || bad "unknown column: $err"

# a local write below the max is undone
must "$T" sql "$W/a.db" "INSERT INTO scores VALUES('g1', 50, 9.5, 'ann', 'x', 1)"
must "$T" sql "$W/a.db" "UPDATE scores SET best = 10, fastest = 20 WHERE id = 'g1'"
v=$("$T" sql "$W/a.db" "SELECT best, fastest FROM scores WHERE id = 'g1'")
[ "$v" = "50|9.5" ] && ok || bad "lowering the max / raising the min was kept: $v"

# concurrent writes on b, then both ways by bundle
must "$T" sql "$W/b.db" "INSERT INTO scores VALUES('g1', 70, 12.0, 'bob', 'y', 2)"
must "$T" bundle "$W/a.db" "$W/a.bundle"
must "$T" bundle "$W/b.db" "$W/b.bundle"
must "$T" merge "$W/a.db" "$W/b.bundle"
must "$T" merge "$W/b.db" "$W/a.bundle"
for t in a b; do
    v=$("$T" sql "$W/$t.db" "SELECT best, fastest, plays FROM scores WHERE id = 'g1'")
    [ "$v" = "70|9.5|3" ] && ok || bad "$t shows $v, expected 70|9.5|3"
    "$T" status "$W/$t.db" >"$W/$t.status" 2>&1
    grep -q "attention: 1 conflict on review columns waits for a person" "$W/$t.status" && ok ||
        bad "$t status text: $(cat "$W/$t.status")"
    grep -q "state: attention (review_conflicts)" "$W/$t.status" && ok ||
        bad "$t status state: $(cat "$W/$t.status")"
    "$T" status "$W/$t.db" --json >"$W/$t.json" 2>&1
    grep -q '"review_open": 1' "$W/$t.json" && ok || bad "$t status --json: $(cat "$W/$t.json")"
    grep -q '"review_conflicts"' "$W/$t.json" && ok || bad "$t attention: $(cat "$W/$t.json")"
done
ha=$("$T" hash "$W/a.db")
hb=$("$T" hash "$W/b.db")
[ -n "$ha" ] && [ "$ha" = "$hb" ] && ok || bad "hashes differ: $ha / $hb"

# the schema names the policies
"$T" schema "$W/a.db" >"$W/schema.txt" 2>&1
grep -q "best integer max" "$W/schema.txt" && grep -q "fastest real min" "$W/schema.txt" &&
    grep -q "owner text review" "$W/schema.txt" && ok || bad "schema: $(cat "$W/schema.txt")"
"$T" schema "$W/a.db" --json | grep -q '"policy": "max"' && ok || bad "schema --json"

# a till without the policies parks those columns instead of merging them by LWW
"$T" merge "$W/c.db" "$W/a.bundle" >"$W/c.merge" 2>&1
grep -q "parked [1-9]" "$W/c.merge" && ok || bad "c merge: $(cat "$W/c.merge")"
"$T" parked "$W/c.db" >"$W/c.parked" 2>&1
grep -q "policy" "$W/c.parked" && ok || bad "c parked: $(cat "$W/c.parked")"
"$T" status "$W/c.db" | grep -q "merges by lww here, by max there" && ok ||
    bad "c status does not name the differing policy: $("$T" status "$W/c.db")"

finish
