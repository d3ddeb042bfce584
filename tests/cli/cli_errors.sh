#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_errors.sh — the tillsync command's failures: each one exits non-zero (2 for a usage
# error, 1 for anything else) with exactly one line on stderr naming the problem, prints nothing
# on stdout, and a refused merge (corrupted, truncated or tampered bundle) leaves the database as
# it was: same content hash, same state.
#
# usage: sh tests/cli/cli_errors.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

# expect_err DESC STATUS PATTERN: the last run exited STATUS ("any" for any non-zero), wrote
# exactly one newline-terminated line to stderr matching PATTERN (grep -i), and nothing to stdout.
expect_err() {
    _d=$1
    _s=$2
    _p=$3
    if [ "$rc" -eq 0 ]; then
        bad "$_d: exit status 0"
    elif [ "$_s" != any ] && [ "$rc" -ne "$_s" ]; then
        bad "$_d: exit status $rc, want $_s"
    elif [ "$(wc -l <"$W/err")" -ne 1 ] || [ "$(grep -c '' "$W/err")" -ne 1 ]; then
        bad "$_d: stderr is not one line: $(head -c 400 "$W/err")"
    elif ! grep -qi -- "$_p" "$W/err"; then
        bad "$_d: stderr does not say '$_p': $(cat "$W/err")"
    elif [ -s "$W/out" ]; then
        bad "$_d: stdout is not empty: $(head -c 200 "$W/out")"
    else
        ok
    fi
}
must() {
    "$@" >"$W/setup.out" 2>&1 || {
        echo "FAIL: setup: $*: $(cat "$W/setup.out")"
        echo "$pass passed, $((fail + 1)) failed"
        exit 1
    }
}
# snapshot DB NAME: hash and state of DB into $W/NAME.snap.
snapshot() {
    { "$T" hash "$1" && "$T" state "$1" --json; } >"$W/$2.snap" 2>&1
}
# flip FILE OFFSET: inverts every bit of the byte at OFFSET, in place.
flip() {
    _b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    # shellcheck disable=SC2059
    printf "\\$(printf %o $((_b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

A=$W/a.db
B=$W/b.db
PRODUCTS="CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, \
stock INTEGER NOT NULL DEFAULT 0)"
must "$T" init "$A"
must "$T" init "$B"
for db in "$A" "$B"; do
    must "$T" sql "$db" "$PRODUCTS"
    must "$T" replicate "$db" products --counter stock
done
# Enough rows and batches that offsets inside the compressed payload hit real data.
i=0
while [ $i -lt 20 ]; do
    must "$T" sql "$A" "INSERT INTO products VALUES('p$i', 'Marker$i product', $((100 + i)), 50)"
    i=$((i + 1))
done
must "$T" bundle "$A" "$W/good.bun"
must "$T" sql "$B" "INSERT INTO products VALUES('b1', 'From b', 10, 5)"

# ---------------------------------------------------------------- a missing database
for form in "sql|SELECT 1" "state" "hash" "conflicts" "replicate|products" "bundle|$W/x.bun" \
    "merge|$W/good.bun"; do
    cmd=${form%%|*}
    arg=${form#*|}
    if [ "$arg" = "$form" ]; then
        run "$T" "$cmd" "$W/missing.db"
    else
        run "$T" "$cmd" "$W/missing.db" "$arg"
    fi
    expect_err "$cmd on a missing database" 1 "missing.db does not exist"
    [ ! -e "$W/missing.db" ] && ok || bad "$cmd created the missing database"
done
run "$T" sql "$W/nodir/a.db" "SELECT 1"
expect_err "sql on a database in a missing folder" 1 "does not exist"
run "$T" init "$W/nodir/a.db"
expect_err "init in a missing folder" 1 "cannot open database"
printf 'this is not a database, just text\n' >"$W/text.db"
run "$T" sql "$W/text.db" "SELECT 1"
expect_err "sql on a file that is not a database" 1 "not a database"
cp "$A" "$W/nokey.db"
run "$T" state "$W/nokey.db"
expect_err "a database without its key file" 1 "key file"
cp "$A.key" "$W/nokey.db.key"
chmod 644 "$W/nokey.db.key"
run "$T" state "$W/nokey.db"
expect_err "a key file readable by others" 1 "readable by other users"

# ---------------------------------------------------------------- unknown command, missing arguments
run "$T" frobnicate "$A"
expect_err "unknown command" 2 "unknown command 'frobnicate'"
run "$T"
expect_err "no command" 2 "no command"
for form in "init" "sql" "sql $A" "replicate" "replicate $A" "state" "bundle" "bundle $A" \
    "merge" "merge $A" "hash" "conflicts"; do
    # shellcheck disable=SC2086
    run "$T" $form
    expect_err "missing arguments: tillsync $form" 2 "needs"
done
run "$T" bundle "$A" "$W/x.bun" --since
expect_err "bundle --since without a file" 2 "bundle"
run "$T" replicate "$A" products --counter
expect_err "replicate --counter without a column" 2 "replicate"
for form in "state $A --bogus" "conflicts $A --bogus" "hash $A products extra" \
    "merge $A $W/good.bun extra" "init $A extra" "demo --bogus" "demo --seed" "demo --seed x"; do
    # shellcheck disable=SC2086
    run "$T" $form
    expect_err "unexpected argument: tillsync $form" 2 "$(echo "$form" | cut -d' ' -f1)"
done
run "$T" sql "$A" "SELECT 1" "SELECT 2"
expect_err "sql with two SQL arguments" 2 "sql"

# ---------------------------------------------------------------- SQL errors
snapshot "$A" a0
run "$T" sql "$A" "SELEC id FROM products"
expect_err "SQL syntax error" 1 "syntax error"
run "$T" sql "$A" "SELEC id FROM products" --json
expect_err "SQL syntax error with --json" 1 "syntax error"
run "$T" sql "$A" "SELECT nope FROM products"
expect_err "SQL naming a missing column" 1 "no such column: nope"
run "$T" sql "$A" "INSERT INTO products VALUES('p1', 'again', 1, 1)"
expect_err "SQL breaking the primary key" 1 "UNIQUE constraint failed"
snapshot "$A" a1
cmp -s "$W/a0.snap" "$W/a1.snap" && ok || bad "failed SQL changed the database"

# ---------------------------------------------------------------- tables that cannot be replicated
must "$T" sql "$A" "CREATE TABLE nokey(a TEXT, b INTEGER); \
CREATE TABLE rowid_key(id INTEGER PRIMARY KEY, v TEXT); \
CREATE TABLE strict_col(id TEXT PRIMARY KEY, v TEXT NOT NULL); \
CREATE TABLE counted(id TEXT PRIMARY KEY, qty TEXT)"
run "$T" replicate "$A" nokey
expect_err "replicate a table without a primary key" 1 "no primary key"
run "$T" replicate "$A" rowid_key
expect_err "replicate a rowid table" 1 "INTEGER PRIMARY KEY"
run "$T" replicate "$A" strict_col
expect_err "replicate a NOT NULL column without DEFAULT" 1 "NOT NULL without a DEFAULT"
run "$T" replicate "$A" nosuch
expect_err "replicate a missing table" 1 "no such table: nosuch"
run "$T" replicate "$A" counted --counter nosuch
expect_err "replicate with a missing counter column" 1 "no column nosuch"
run "$T" replicate "$A" counted --counter qty
expect_err "replicate with a non-integer counter" 1 "must be declared INTEGER"
run "$T" replicate "$A" products
expect_err "replicate a table twice" 1 "already replicated"
run "$T" hash "$A" nokey
expect_err "hash of a table that is not replicated" 1 "not replicated"

# ---------------------------------------------------------------- bundle errors
run "$T" bundle "$A" "$W/x.bun" --since "$W/missing.json"
expect_err "bundle --since a missing file" 1 "missing.json"
printf 'not json' >"$W/bad.json"
run "$T" bundle "$A" "$W/x.bun" --since "$W/bad.json"
expect_err "bundle --since a file that is not JSON" 1 "not JSON"
printf '{"site": "00"}' >"$W/novec.json"
run "$T" bundle "$A" "$W/x.bun" --since "$W/novec.json"
expect_err "bundle --since a state without a vector" 1 "vector"
run "$T" bundle "$A" "$W/nodir/x.bun"
expect_err "bundle into a missing folder" 1 "cannot write"
[ ! -e "$W/x.bun" ] && ok || bad "a failed bundle left a file"

# ---------------------------------------------------------------- refused merges change nothing
snapshot "$B" b0
# merge_refused DESC FILE PATTERN: merging FILE into b fails with one line and changes nothing.
merge_refused() {
    run "$T" merge "$B" "$2"
    expect_err "$1" 1 "$3"
    snapshot "$B" b1
    cmp -s "$W/b0.snap" "$W/b1.snap" && ok || bad "$1: the database changed"
}
SIZE=$(fsize "$W/good.bun")
for off in 0 7 8 9 10 20 $((SIZE / 3)) $((SIZE / 2)) $((SIZE - 5)) $((SIZE - 1)); do
    cp "$W/good.bun" "$W/bad.bun"
    flip "$W/bad.bun" $off
    cmp -s "$W/good.bun" "$W/bad.bun" && bad "flip did not change byte $off"
    merge_refused "merge a bundle with byte $off of $SIZE flipped" "$W/bad.bun" "bundle"
done
for n in 0 5 10 11 $((SIZE / 2)) $((SIZE - 1)); do
    head -c "$n" "$W/good.bun" >"$W/short.bun"
    merge_refused "merge a bundle truncated to $n of $SIZE bytes" "$W/short.bun" "bundle"
done
printf 'TSYNCBDL\001\001garbage' >"$W/junk.bun"
merge_refused "merge a bundle of junk after the header" "$W/junk.bun" "bundle"
merge_refused "merge a text file" "$W/bad.json" "not a tillsync bundle"
run "$T" merge "$B" "$W/missing.bun"
expect_err "merge a missing file" 1 "missing.bun"

# A bundle's compression checksum catches flipped bits before anything else sees them. To reach
# the signature check, rewrite the bundle uncompressed (header flag 0) and alter one letter of a
# value inside a signed batch: the batch hash changes, so the run's signature cannot verify.
if command -v zstd >/dev/null 2>&1; then
    {
        head -c 9 "$W/good.bun"
        printf '\000'
        tail -c +11 "$W/good.bun" | zstd -dcq
    } >"$W/plain.bun"
    off=$(grep -boa 'Marker7 product' "$W/plain.bun" | head -n1 | cut -d: -f1)
    if [ -n "$off" ]; then
        cp "$W/plain.bun" "$W/forged.bun"
        printf 'N' | dd of="$W/forged.bun" bs=1 seek="$off" conv=notrunc 2>/dev/null
        merge_refused "merge a bundle with an altered value" "$W/forged.bun" "signature"
        # The uncompressed original is fine: the refusal was the signature's doing.
        run "$T" merge "$B" "$W/plain.bun"
        [ "$rc" -eq 0 ] && ok || bad "the uncompressed bundle does not merge: $(cat "$W/err")"
    else
        bad "cannot find a value to alter in the uncompressed bundle"
    fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
