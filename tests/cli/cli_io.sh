#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_io.sh — tillsync export and import from the command line: the example catalogue
# imports and replicates to a peer by bundle; export -> import round trips byte for byte in CSV,
# JSON and NDJSON; a file with bad values is refused with one FILE:LINE:COLUMN line per bad value
# and changes nothing; --skip-bad imports the good rows and writes FILE.rejects; usage errors exit
# 2 and failures 1 with "tillsync: what: why".
#
# usage: sh tests/cli/cli_io.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
EXAMPLE=$HERE/../../examples/products.csv

# check DESC: the last run succeeded.
check() {
    if [ "$rc" -ne 0 ]; then bad "$1: exit status $rc: $(head -c 400 "$W/err")"; else ok; fi
}
# expect DESC STATUS PATTERN: the last run exited STATUS and stderr matches PATTERN (grep -e).
expect() {
    if [ "$rc" -ne "$2" ]; then
        bad "$1: exit status $rc, want $2: $(head -c 400 "$W/err")"
    elif ! grep -q -e "$3" "$W/err"; then
        bad "$1: stderr does not say '$3': $(head -c 400 "$W/err")"
    else
        ok
    fi
}

# The commands must exist before anything else makes sense.
for c in export import; do
    run "$T" "$c"
    if grep -qi "unknown command" "$W/err"; then
        bad "tillsync has no '$c' command"
    else
        expect "$c without arguments is a usage error" 2 "^tillsync: "
    fi
done
[ "$fail" -eq 0 ] || finish

SCHEMA="CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER,
 stock INTEGER NOT NULL DEFAULT 0)"
ITEMS="CREATE TABLE items(id TEXT PRIMARY KEY, t TEXT, i INTEGER, r REAL, b BLOB)"
for db in a b; do
    must "$T" init "$W/$db.db"
    must "$T" sql "$W/$db.db" "$SCHEMA; $ITEMS"
    must "$T" replicate "$W/$db.db" products --counter stock
    must "$T" replicate "$W/$db.db" items
done

# The example catalogue imports, and replicates to b by bundle.
run "$T" import "$W/a.db" products "$EXAMPLE"
check "import examples/products.csv"
grep -q "imported 10 rows into products" "$W/out" && ok || bad "import summary: $(cat "$W/out")"
must "$T" bundle "$W/a.db" "$W/a.bundle"
must "$T" merge "$W/b.db" "$W/a.bundle"
run "$T" sql "$W/b.db" "SELECT name FROM products WHERE id='TEA-002'"
[ "$(cat "$W/out")" = 'Earl Grey "Classic" 50 bags' ] && ok || bad "peer lacks the imported rows: $(cat "$W/out" "$W/err")"
[ "$("$T" hash "$W/a.db" products)" = "$("$T" hash "$W/b.db" products)" ] && ok ||
    bad "hashes differ after replicating an import"

# Round trip of awkward values in each format, through files (-o: temporary file and rename).
must "$T" sql "$W/a.db" "INSERT INTO items VALUES
 ('comma', 'a, b', 1, 0.1, NULL), ('quote', 'say \"hi\"', 2, 1e308, x'00ff00'),
 ('nl', 'one' || char(10) || 'two', 3, -0.5, x''), ('utf8', 'café ☕ 𝄞', 4, 5e-324, NULL),
 ('null', NULL, NULL, NULL, NULL), ('empty', '', 0, 0.0, x'00'),
 ('max', 'm', 9223372036854775807, 2.5, NULL), ('min', 'n', -9223372036854775808, 9e999, NULL)"
for f in csv json ndjson; do
    rm -f "$W/c.db" "$W/c.db.key"
    must "$T" init "$W/c.db"
    must "$T" sql "$W/c.db" "$ITEMS"
    run "$T" export "$W/a.db" items --format $f -o "$W/items.$f"
    check "export $f"
    [ -e "$W/items.$f.tmp" ] && bad "export $f left its temporary file"
    run "$T" import "$W/c.db" items "$W/items.$f"
    check "import $f"
    run "$T" export "$W/c.db" items --format $f
    cmp -s "$W/out" "$W/items.$f" && ok || bad "$f round trip differs"
done
run "$T" export "$W/a.db" --query "SELECT id, i FROM items WHERE id='max'" --format json
[ "$(tr -d '\n' <"$W/out")" = '[{"id":"max","i":9223372036854775807}]' ] && ok ||
    bad "export --query json: $(cat "$W/out")"

# Bad values: every one reported, nothing changed.
printf 'id,name,price\r\nx1,ok,1\r\nx2,bad,abc\r\nx3,"two\r\nlines",1.5\r\n' >"$W/bad.csv"
before=$("$T" hash "$W/a.db")
run "$T" import "$W/a.db" products "$W/bad.csv"
expect "bad values refused" 1 "nothing imported"
grep -qx "$W/bad.csv:3:price: \"abc\" is not an integer (64-bit)" "$W/err" && ok ||
    bad "no location for the first bad value: $(cat "$W/err")"
grep -qx "$W/bad.csv:4:price: \"1.5\" is not an integer (64-bit)" "$W/err" && ok ||
    bad "no location for the second bad value: $(cat "$W/err")"
[ "$("$T" hash "$W/a.db")" = "$before" ] && ok || bad "a refused import changed the database"
[ -e "$W/bad.csv.rejects" ] && bad "a refused import wrote a rejects file"

run "$T" import "$W/a.db" products "$W/bad.csv" --skip-bad
check "import --skip-bad"
grep -q "imported 1 rows into products; 2 rejected" "$W/out" && ok || bad "skip-bad summary: $(cat "$W/out")"
grep -q '"price: ""abc"" is not an integer (64-bit)","x2","bad","abc"' "$W/bad.csv.rejects" 2>/dev/null &&
    ok || bad "rejects file: $(cat "$W/bad.csv.rejects" 2>&1)"

printf 'id,name\r\np1,"ab"c\r\n' >"$W/quote.csv"
run "$T" import "$W/a.db" products "$W/quote.csv"
expect "broken quoting" 1 "^tillsync: import: $W/quote.csv:2: broken CSV quoting"
printf 'id,nope\r\n' >"$W/col.csv"
run "$T" import "$W/a.db" products "$W/col.csv"
expect "unknown column" 1 "col.csv:1:nope: unknown column \"nope\""
printf '{"id":"z1","name":"\377"}\n' >"$W/utf.ndjson"
run "$T" import "$W/a.db" products "$W/utf.ndjson"
expect "invalid UTF-8" 1 "utf.ndjson:1: invalid JSON at column"

# Usage and other failures.
run "$T" export "$W/a.db"
expect "export without a table" 2 "^tillsync: export needs"
run "$T" export "$W/a.db" products --format xml
expect "export bad format" 2 "csv, json or ndjson"
run "$T" import "$W/a.db" products "$W/file.txt"
expect "import cannot guess the format" 2 "give --format"
run "$T" import "$W/a.db" products "$W/missing.csv"
expect "import missing file" 1 "^tillsync: import: cannot open"
run "$T" export "$W/a.db" nope
expect "export unknown table" 1 "^tillsync: export: no table \"nope\""
run "$T" export "$W/a.db" --query "DELETE FROM products"
expect "export a write" 1 "export only reads"

finish
