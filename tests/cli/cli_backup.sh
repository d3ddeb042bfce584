#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_backup.sh — tillsync backup, backup-check and restore from the command line: a backup
# checks out and prints its manifest; encrypted backups take the passphrase from a file or
# $TILLSYNC_PASSPHRASE and refuse a wrong one; damaged, truncated and non-backup files are refused
# with one line and exit 1, leaving the database as it was; a database in use is refused; a
# restore gives a new site id (or a new key and the advice to enrol) and the till catches up from
# a peer by bundles; usage errors exit 2. No progress bar when stderr is not a terminal.
#
# usage: sh tests/cli/cli_backup.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"
HOLDER=
trap '[ -z "$HOLDER" ] || kill "$HOLDER" 2>/dev/null; [ -n "$KEEP" ] || rm -rf "$W"' EXIT
# No terminal: a command that would ask for a passphrase must say so instead (setsid drops the
# controlling terminal when the test runs from one).
NOTTY=
command -v setsid >/dev/null 2>&1 && NOTTY="setsid -w"
unset TILLSYNC_PASSPHRASE

run() {
    "$@" >"$W/out" 2>"$W/err" </dev/null
    rc=$?
}
check() {
    if [ "$rc" -ne 0 ]; then bad "$1: exit status $rc: $(head -c 400 "$W/err")"; else ok; fi
}
must() {
    "$@" >"$W/setup.out" 2>&1 </dev/null || {
        bad "setup: $*: $(cat "$W/setup.out")"
        finish
    }
}
site_of() { "$T" state "$1" | sed -n 's/^site: *//p'; }

for c in backup backup-check restore; do
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
for db in a b; do
    must "$T" init "$W/$db.db"
    must "$T" sql "$W/$db.db" "$SCHEMA"
    must "$T" replicate "$W/$db.db" products --counter stock
done
must "$T" sql "$W/a.db" "INSERT INTO products VALUES('p1', 'apple', 120, 50), ('p2', 'pear', 80, 9)"
must "$T" bundle "$W/a.db" "$W/a1.bundle"
must "$T" merge "$W/b.db" "$W/a1.bundle"
old_site=$(site_of "$W/a.db")
hash_at_backup=$("$T" hash "$W/a.db")

# A plain backup: one file, owner-only, verified, no temporary files, no progress bar.
run "$T" backup "$W/a.db" "$W/a.tsb"
check "backup"
grep -q "^backup of $W/a.db written to $W/a.tsb (not encrypted, verified)" "$W/out" && ok ||
    bad "backup summary: $(cat "$W/out")"
grep -q "products 2 rows" "$W/out" && ok || bad "backup summary lacks the row count: $(cat "$W/out")"
[ "$(stat -c %a "$W/a.tsb")" = 600 ] && ok || bad "a backup must be mode 600, is $(stat -c %a "$W/a.tsb")"
ls "$W" | grep -q '\.tmp' && bad "temporary files left: $(ls "$W")"
grep -q "$(printf '\r')" "$W/err" && bad "a progress bar on a stderr that is no terminal"
run "$T" backup-check "$W/a.tsb"
check "backup-check"
head -1 "$W/out" | grep -q "^$W/a.tsb: OK (not encrypted" && ok || bad "check says: $(head -3 "$W/out")"
grep -q "\"site\": \"$old_site\"" "$W/out" && ok || bad "the manifest lacks the site: $(cat "$W/out")"
grep -q '"rows": 2' "$W/out" && ok || bad "the manifest lacks the row count"

# Encrypted: passphrase from a file or the environment; wrong or missing ones refused.
printf 'correct horse battery\n' >"$W/pass"
printf 'wrong horse\n' >"$W/wrong"
run "$T" backup "$W/a.db" "$W/e.tsb" --encrypt --passphrase-file "$W/pass"
check "backup --encrypt"
grep -q "(encrypted, verified)" "$W/out" && ok || bad "encrypted summary: $(cat "$W/out")"
run "$T" backup-check "$W/e.tsb" --passphrase-file "$W/pass"
check "backup-check with --passphrase-file"
run env TILLSYNC_PASSPHRASE="correct horse battery" "$T" backup-check "$W/e.tsb"
check "backup-check with TILLSYNC_PASSPHRASE"
run "$T" backup-check "$W/e.tsb" --passphrase-file "$W/wrong"
expect "wrong passphrase" 1 "^tillsync: backup-check: $W/e.tsb does not decrypt: wrong passphrase"
run $NOTTY "$T" backup-check "$W/e.tsb"
expect "no passphrase and no terminal" 2 "encrypted: give --passphrase-file"
run $NOTTY "$T" backup "$W/a.db" "$W/x.tsb" --encrypt
expect "--encrypt without a passphrase" 2 "needs a passphrase"
run "$T" backup "$W/a.db" "$W/x.tsb" --passphrase-file "$W/pass"
expect "--passphrase-file without --encrypt" 2 "goes with --encrypt"
: >"$W/empty"
run "$T" backup "$W/a.db" "$W/x.tsb" --encrypt --passphrase-file "$W/empty"
expect "empty passphrase file" 1 "no passphrase"
[ -e "$W/x.tsb" ] && bad "a refused backup left $W/x.tsb"

# After the backup the till sells on, and the peer gets it.
must "$T" sql "$W/a.db" "UPDATE products SET stock = stock - 3 WHERE id = 'p1';
 INSERT INTO products VALUES('p3', 'plum', 60, 7)"
must "$T" bundle "$W/a.db" "$W/a2.bundle"
must "$T" merge "$W/b.db" "$W/a2.bundle"

# Damaged files: refused with one line, the database untouched.
cp "$W/a.db" "$W/a.before"
cp "$W/a.db.key" "$W/key.before"
size=$(stat -c %s "$W/a.tsb")
head -c $((size / 2)) "$W/a.tsb" >"$W/cut.tsb"
cp "$W/a.tsb" "$W/flip.tsb"
printf 'X' | dd of="$W/flip.tsb" bs=1 seek=6000 conv=notrunc 2>/dev/null
cp "$W/e.tsb" "$W/eflip.tsb"
printf 'X' | dd of="$W/eflip.tsb" bs=1 seek=3000 conv=notrunc 2>/dev/null
: >"$W/zero.tsb"
for f in cut flip eflip zero; do
    run "$T" backup-check "$W/$f.tsb" --passphrase-file "$W/pass"
    expect "backup-check $f.tsb" 1 "^tillsync: backup-check: $W/$f.tsb"
    run "$T" restore "$W/a.db" "$W/$f.tsb" --passphrase-file "$W/pass"
    expect "restore $f.tsb" 1 "^tillsync: restore: $W/$f.tsb"
    cmp -s "$W/a.db" "$W/a.before" && cmp -s "$W/a.db.key" "$W/key.before" && ok ||
        bad "a refused restore of $f.tsb changed the database or its key"
done
run "$T" backup-check "$W/cut.tsb"
expect "truncated" 1 "is truncated"
run "$T" backup-check "$W/flip.tsb"
expect "altered" 1 "content hash does not match"
run "$T" backup-check "$W/a.db"
expect "a database is no backup" 1 "is an SQLite database, not a tillsync backup"
run "$T" backup-check "$W/missing.tsb"
expect "missing file" 1 "cannot open $W/missing.tsb"
ls "$W" | grep -q 'restore-' && bad "a refused restore left its staged copy: $(ls "$W")"

# A database in use is refused.
if command -v sqlite3 >/dev/null 2>&1; then
    (
        echo "SELECT count(*) FROM products;"
        sleep 5
    ) | sqlite3 "$W/a.db" >/dev/null &
    HOLDER=$!
    sleep 1
    run "$T" restore "$W/a.db" "$W/a.tsb"
    expect "restore while in use" 1 "is in use by another process"
    kill "$HOLDER" 2>/dev/null
    wait "$HOLDER" 2>/dev/null
    HOLDER=
    cmp -s "$W/a.db.key" "$W/key.before" && ok || bad "a refused restore changed the key file"
fi

# The restore: the content of the backup, a new site id, and the till catches up from b.
run "$T" restore "$W/a.db" "$W/a.tsb"
check "restore"
grep -q "^restored $W/a.db from $W/a.tsb (backup of site $old_site" "$W/out" && ok ||
    bad "restore summary: $(cat "$W/out")"
grep -q "new site id" "$W/out" && ok || bad "restore does not name the new site id: $(cat "$W/out")"
new_site=$(site_of "$W/a.db")
[ -n "$new_site" ] && [ "$new_site" != "$old_site" ] && ok ||
    bad "the site id after a restore is '$new_site', before '$old_site'"
[ "$("$T" hash "$W/a.db")" = "$hash_at_backup" ] && ok || bad "the restored content is not the backup's"
"$T" state "$W/a.db" --json >"$W/a.state"
must "$T" bundle "$W/b.db" "$W/b.bundle" --since "$W/a.state"
run "$T" merge "$W/a.db" "$W/b.bundle"
check "the restored till merges what it missed"
must "$T" sql "$W/a.db" "UPDATE products SET stock = stock - 1 WHERE id = 'p2'"
"$T" state "$W/b.db" --json >"$W/b.state"
must "$T" bundle "$W/a.db" "$W/a3.bundle" --since "$W/b.state"
run "$T" merge "$W/b.db" "$W/a3.bundle"
check "the peer merges the restored till's new sales"
grep -q "refused 0" "$W/out" && ok || bad "the peer refused something: $(cat "$W/out")"
[ "$("$T" hash "$W/a.db")" = "$("$T" hash "$W/b.db")" ] && ok || bad "a and b differ after the restore"
[ "$("$T" sql "$W/a.db" "SELECT stock FROM products WHERE id = 'p1'")" = 47 ] && ok ||
    bad "the sale made after the backup did not come back"

# New hardware: no key file. Encrypted, passphrase from the environment.
rm -f "$W/b.db.key"
run env TILLSYNC_PASSPHRASE="correct horse battery" "$T" restore "$W/b.db" "$W/e.tsb"
check "restore without a key file"
grep -q "this till must enrol" "$W/out" && grep -q "tillsync enrol-request $W/b.db" "$W/out" && ok ||
    bad "no advice to enrol: $(cat "$W/out")"
[ "$(stat -c %a "$W/b.db.key")" = 600 ] && ok || bad "the new key file is not mode 600"

# A database copied with its key file (a cloned till image) gets its own site id.
cp "$W/a.db" "$W/c.db"
cp "$W/a.db.key" "$W/c.db.key"
[ "$(site_of "$W/c.db")" != "$(site_of "$W/a.db")" ] && ok || bad "the copy kept the site id"
[ "$(site_of "$W/a.db")" = "$new_site" ] && ok || bad "the original lost its site id"

# Usage errors.
run "$T" backup "$W/a.db"
expect "backup without OUT" 2 "backup needs DB and OUT"
run "$T" backup "$W/a.db" "$W/x.tsb" --frobnicate
expect "backup unknown option" 2 "unknown option '--frobnicate'"
run "$T" restore "$W/a.db" "$W/a.tsb" extra
expect "restore extra argument" 2 "restore takes DB and FILE"
run "$T" backup-check "$W/a.tsb" --passphrase-file
expect "--passphrase-file without a value" 2 "needs a value"
run "$T" backup "$W/a.db" "$W/a.db"
expect "backup onto the database" 1 "is the database or its key file"

finish
