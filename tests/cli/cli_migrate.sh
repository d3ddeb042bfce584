#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_migrate.sh — tillsync migrate from the command line: a folder of numbered migrations
# applies in order and prints each with its BLAKE2b-256 hash (the same as b2sum's); a rerun says
# "up to date"; --status lists what was applied (--json too); a changed applied file, a duplicate
# number, a new file below the version, a failing statement and a change replication cannot follow
# are refused with one line naming the file and change nothing; a till on an older version parks
# what it cannot apply and applies it when it migrates, converging by bundles; usage errors exit 2,
# failures 1 with "tillsync: what: why".
#
# usage: sh tests/cli/cli_migrate.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

# check DESC: the last run succeeded.
check() {
    if [ "$rc" -ne 0 ]; then bad "$1: exit status $rc: $(head -c 400 "$W/err")"; else ok; fi
}
# out DESC PATTERN: stdout of the last run has a line matching PATTERN (grep -e).
out() {
    if grep -q -e "$2" "$W/out"; then ok; else bad "$1: stdout lacks '$2': $(head -c 600 "$W/out")"; fi
}
version() { "$T" migrate "$1" --status --json | sed -n 's/^ *"version": \([0-9]*\).*/\1/p'; }

run "$T" migrate
if grep -qi "unknown command" "$W/err"; then
    bad "tillsync has no 'migrate' command"
    finish
fi
expect "migrate without arguments is a usage error" 2 "^tillsync: migrate needs DB"

mkdir "$W/m1" "$W/m"
cat >"$W/m1/001_init.sql" <<'EOF'
CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER,
                      stock INTEGER NOT NULL DEFAULT 0);
SELECT tillsync_replicate('products', 'stock');
EOF
cp "$W/m1/001_init.sql" "$W/m/"
cat >"$W/m/002_add_barcode.sql" <<'EOF'
-- every product gets a barcode
ALTER TABLE products ADD COLUMN barcode TEXT;
EOF
echo "how we write migrations" >"$W/m/README.md"
must "$T" init "$W/a.db"
must "$T" init "$W/b.db"

run "$T" migrate "$W/a.db"
expect "migrate DB without DIR" 2 "^tillsync: migrate needs DB and DIR"
run "$T" migrate "$W/a.db" "$W/m" extra
expect "migrate with a third argument" 2 "^tillsync: migrate takes DB and DIR"
run "$T" migrate "$W/a.db" --bogus
expect "migrate with an unknown option" 2 "unknown option '--bogus'"
run "$T" migrate "$W/a.db" "$W/m" --json
expect "--json without --status" 2 "goes with --status"
run "$T" migrate "$W/a.db" "$W/m" --status
expect "--status with DIR" 2 "takes only DB"
run "$T" migrate "$W/missing.db" "$W/m"
expect "missing database" 1 "^tillsync: open: database .*missing.db does not exist"
run "$T" migrate "$W/a.db" "$W/nowhere"
expect "missing folder" 1 "^tillsync: migrate: cannot read the migrations folder .*nowhere"

run "$T" migrate "$W/a.db" --status
check "status of a fresh database"
out "fresh database is at version 0" "^no migrations applied: version 0$"

# Apply: each file with its hash, in order, and a note for what is not a migration.
run "$T" migrate "$W/a.db" "$W/m"
check "migrate a.db"
h1=$(b2sum -l 256 "$W/m/001_init.sql" | cut -d' ' -f1)
h2=$(b2sum -l 256 "$W/m/002_add_barcode.sql" | cut -d' ' -f1)
out "001 applied with its BLAKE2b-256 hash" "^applied 001_init.sql (hash $h1)$"
out "002 applied with its BLAKE2b-256 hash" "^applied 002_add_barcode.sql (hash $h2)$"
[ "$(grep -n '^applied' "$W/out" | head -1 | cut -d: -f2-)" = "applied 001_init.sql (hash $h1)" ] &&
    ok || bad "001 was not applied first: $(cat "$W/out")"
out "new version" "^now at version 2 (was 0)$"
out "README.md ignored with a note" "^note: ignored README.md: not a migration"

run "$T" migrate "$W/a.db" "$W/m"
check "rerun"
out "rerun does nothing" "^up to date at version 2$"
grep -q "^applied" "$W/out" && bad "rerun applied something: $(cat "$W/out")"

run "$T" migrate "$W/a.db" --status
check "status"
out "status: version" "^version 2, 2 migrations applied:$"
out "status lists 001" "^  001_init.sql  applied .*  hash $h1$"
out "status lists 002" "^  002_add_barcode.sql  applied .*  hash $h2$"
run "$T" migrate "$W/a.db" --status --json
check "status --json"
out "status --json version" '"version": 2'
out "status --json names" '"name": "002_add_barcode.sql"'

# Mixed versions: b on 1 merges a's barcode (parked), migrates to 2 and shows it.
must "$T" migrate "$W/b.db" "$W/m1"
must "$T" sql "$W/a.db" "INSERT INTO products(id, name, price, barcode) VALUES('p1', 'apple', 120, '4006381333931')"
must "$T" bundle "$W/a.db" "$W/a.bundle"
run "$T" merge "$W/b.db" "$W/a.bundle"
check "b on version 1 merges a's bundle"
out "the barcode is parked on b" "parked: column products.barcode"
run "$T" sql "$W/b.db" "SELECT name, price FROM products"
[ "$(cat "$W/out")" = "apple|120" ] && ok || bad "b lacks the rest of the row: $(cat "$W/out" "$W/err")"
run "$T" migrate "$W/b.db" "$W/m"
check "b migrates to 2"
out "b applies the parked change" "^applied 1 parked change from other tills$"
run "$T" sql "$W/b.db" "SELECT barcode FROM products WHERE id='p1'"
[ "$(cat "$W/out")" = "4006381333931" ] && ok || bad "b does not show a's barcode: $(cat "$W/out" "$W/err")"
[ "$("$T" hash "$W/a.db")" = "$("$T" hash "$W/b.db")" ] && ok || bad "a and b differ after b migrated"

# Refusals: one line naming the file, nothing changed.
before=$("$T" sql "$W/a.db" "SELECT group_concat(sql, ';') FROM sqlite_schema")
printf -- '-- edited\nALTER TABLE products ADD COLUMN barcode TEXT;\n' >"$W/m/002_add_barcode.sql"
run "$T" migrate "$W/a.db" "$W/m"
expect "changed applied file" 1 "^tillsync: migrate: migration 002_add_barcode.sql was changed after it was applied"
cp "$W/m1/001_init.sql" "$W/m/001_init.sql"
printf -- '-- every product gets a barcode\nALTER TABLE products ADD COLUMN barcode TEXT;\n' >"$W/m/002_add_barcode.sql"
run "$T" migrate "$W/a.db" "$W/m"
out "restored file is fine" "^up to date at version 2$"

printf 'SELECT 1;\n' >"$W/m/2_again.sql"
run "$T" migrate "$W/a.db" "$W/m"
expect "duplicate number" 1 "two migrations are numbered 2: 002_add_barcode.sql and 2_again.sql"
rm "$W/m/2_again.sql"

printf 'ALTER TABLE products ADD COLUMN sold INTEGER NOT NULL DEFAULT 0;\nSELECT * FROM nope;\n' >"$W/m/003_bad.sql"
run "$T" migrate "$W/a.db" "$W/m"
expect "failing statement" 1 "^tillsync: migrate: migration 003_bad.sql, line 2: no such table: nope"
[ "$(version "$W/a.db")" = 2 ] && ok || bad "version moved after a failed migration"
rm "$W/m/003_bad.sql"

printf 'ALTER TABLE products DROP COLUMN price;\n' >"$W/m/003_drop.sql"
run "$T" migrate "$W/a.db" "$W/m"
expect "drop column" 1 "migration 003_drop.sql, line 1: drops column price of replicated table products;.*stop using it"
rm "$W/m/003_drop.sql"
printf 'ALTER TABLE products RENAME COLUMN name TO title;\n' >"$W/m/003_rename.sql"
run "$T" migrate "$W/a.db" "$W/m"
expect "rename column" 1 "renames column name of replicated table products to title"
rm "$W/m/003_rename.sql"
[ "$("$T" sql "$W/a.db" "SELECT group_concat(sql, ';') FROM sqlite_schema")" = "$before" ] && ok ||
    bad "a refused migration changed the schema"

printf 'SELECT 5;\n' >"$W/m/005_five.sql"
must "$T" migrate "$W/a.db" "$W/m"
printf 'SELECT 4;\n' >"$W/m/004_late.sql"
run "$T" migrate "$W/a.db" "$W/m"
expect "new file below the version" 1 "migration 004_late.sql is new but numbered below the schema version 5"
[ "$(version "$W/a.db")" = 5 ] && ok || bad "version is not 5"

finish
