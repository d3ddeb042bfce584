#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_conflicts.sh — the conflict journal on the command line, two enrolled tills synced
# by bundles: both record a collision (till names from their certificates), `conflicts resolve
# --take-other` on one makes the overwritten value win on both and shows on the other who
# resolved it and how; `--value`, `--keep`, `dismiss ID...` and `dismiss --all`; paging with
# --since and --limit, --open; status counts open conflicts; usage and not-found errors.
#
# usage: sh tests/cli/cli_conflicts.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

# sync_to A B: what B lacks of A, as a bundle, merged into B.
sync_to() {
    "$T" state "$W/$2.db" --json >"$W/st" 2>/dev/null
    "$T" bundle "$W/$1.db" "$W/bundle" --since "$W/st" >/dev/null 2>&1
    run "$T" merge "$W/$2.db" "$W/bundle"
    [ "$rc" -eq 0 ] || bad "merge $1 -> $2: $(cat "$W/out" "$W/err")"
}
both() { sync_to a b && sync_to b a; }
q() { "$T" sql "$W/$1.db" "$2"; }
h() { "$T" hash "$W/$1.db"; }
# has FILE TEXT DESCRIPTION
has() { if grep -q -- "$2" "$1"; then ok; else bad "$3: $(head -c 600 "$1")"; fi; }

shop_pair a b "('p1','tea',100),('p2','jam',200),('p3','oil',300),('p4','egg',400)"
both

# ---------------------------------------------------------------- one collision per row
for k in p1 p2 p3 p4; do
    q a "UPDATE products SET price = price + 1 WHERE id = '$k'"
    q b "UPDATE products SET price = price + 2 WHERE id = '$k'"
done
both
[ "$(h a)" = "$(h b)" ] && ok || bad "a and b differ after the collisions"
run "$T" conflicts "$W/a.db" --json
cp "$W/out" "$W/a.json"
run "$T" conflicts "$W/b.db" --json
cp "$W/out" "$W/b.json"
ca=$(grep '"cid"' "$W/a.json" | sort | tr -d ' \n')
cb=$(grep '"cid"' "$W/b.json" | sort | tr -d ' \n')
[ -n "$ca" ] && [ "$ca" = "$cb" ] && ok || bad "the tills give the collisions different identities: $ca / $cb"
[ "$(grep -c '"cid"' "$W/a.json")" = 4 ] && ok || bad "a did not record 4 conflicts"
has "$W/a.json" '"till": "till-b"' "till names from the certificates"
run "$T" conflicts "$W/a.db"
has "$W/out" "^\[\"p1\"\] products.price: kept" "the text form names key, column and values"
has "$W/out" "kept: till-. at 20" "the text form names tills and times"
has "$W/out" "^  open$" "the text form says open"
run "$T" status "$W/b.db" --json
has "$W/out" '"conflicts_open": 4' "status --json counts the open conflicts"
run "$T" status "$W/b.db"
has "$W/out" "conflicts 4 (4 open)" "status counts the open conflicts"

# ---------------------------------------------------------------- take the other value
id1=$(q a "SELECT id FROM tsync_conflicts WHERE pk = '[\"p1\"]'")
won=$(q a "SELECT price FROM products WHERE id = 'p1'")
lost=$(q a "SELECT lose_val FROM tsync_conflicts WHERE id = $id1")
[ "$won" != "$lost" ] && ok || bad "winner and loser are the same: $won"
run "$T" conflicts "$W/a.db" resolve "$id1" --take-other
[ "$rc" -eq 0 ] && ok || bad "resolve --take-other: $(cat "$W/err")"
[ "$(q a "SELECT price FROM products WHERE id = 'p1'")" = "$lost" ] && ok || bad "a does not show the taken value"
both
[ "$(q b "SELECT price FROM products WHERE id = 'p1'")" = "$lost" ] && ok || bad "the taken value did not win on b"
[ "$(h a)" = "$(h b)" ] && ok || bad "a and b differ after the resolution"
idb=$(q b "SELECT id FROM tsync_conflicts WHERE pk = '[\"p1\"]'")
run "$T" conflicts "$W/b.db" --since $((idb - 1)) --limit 1
has "$W/out" "resolved: take $lost by till-a at 20" "b shows who resolved and how"

# ---------------------------------------------------------------- a value, keep, dismiss
id2=$(q b "SELECT id FROM tsync_conflicts WHERE pk = '[\"p2\"]'")
run "$T" conflicts "$W/b.db" resolve "$id2" --value 275
[ "$rc" -eq 0 ] && ok || bad "resolve --value: $(cat "$W/err")"
id3=$(q b "SELECT id FROM tsync_conflicts WHERE pk = '[\"p3\"]'")
run "$T" conflicts "$W/b.db" resolve "$id3" --keep
[ "$rc" -eq 0 ] && ok || bad "resolve --keep: $(cat "$W/err")"
run "$T" conflicts "$W/b.db" resolve "$id3" --keep
[ "$rc" -eq 1 ] && ok || bad "resolving twice: exit $rc"
has "$W/err" "conflict $id3 is already resolved (keep)" "resolving twice names the entry"
both
[ "$(q a "SELECT typeof(price) || price FROM products WHERE id = 'p2'")" = "integer275" ] && ok ||
    bad "the entered value is not the integer 275 on a: $(q a "SELECT typeof(price) || price FROM products WHERE id = 'p2'")"
run "$T" conflicts "$W/a.db" --open --json
[ "$(grep -c '"cid"' "$W/out")" = 1 ] && ok || bad "a should show one open conflict: $(cat "$W/out")"
run "$T" conflicts "$W/a.db" dismiss 999999
[ "$rc" -eq 1 ] && ok || bad "dismissing an unknown id: exit $rc"
has "$W/err" "conflict 999999 does not exist" "an unknown id is named"
run "$T" conflicts "$W/a.db" dismiss --all
[ "$rc" -eq 0 ] && ok || bad "dismiss --all: $(cat "$W/err")"
has "$W/out" "1 conflict dismissed" "dismiss --all says how many"
run "$T" conflicts "$W/a.db" --open
has "$W/out" "no open conflicts" "nothing open after dismiss --all"
both
run "$T" status "$W/b.db" --json
has "$W/out" '"conflicts_open": 0' "the dismissal reached b"

# ---------------------------------------------------------------- paging
run "$T" conflicts "$W/b.db" --limit 3
has "$W/out" "^more: --since" "a full page says where the next starts"
next=$(sed -n 's/^more: --since //p' "$W/out")
run "$T" conflicts "$W/b.db" --since "$next" --json
[ "$(grep -c '"cid"' "$W/out")" = 1 ] && ok || bad "the second page should hold the 4th entry: $(cat "$W/out")"

# ---------------------------------------------------------------- usage
for form in "resolve" "resolve $id1" "resolve x --keep" "resolve $id1 --keep --take-other" \
    "dismiss" "dismiss 1 --all" "bogus" "--since x" "--limit 0" "resolve $id1 --keep --json"; do
    # shellcheck disable=SC2086
    run "$T" conflicts "$W/a.db" $form
    [ "$rc" -eq 2 ] && ok || bad "conflicts $form: exit $rc, want 2"
done
run "$T" conflicts --help
[ "$rc" -eq 0 ] && grep -q "dismiss ID...|--all" "$W/out" && ok || bad "conflicts --help"

finish
