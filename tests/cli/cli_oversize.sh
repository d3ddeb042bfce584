#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_oversize.sh — oversize writes from the command line (issue 10, defect 1): `sql` refuses
# a row over the per-row limit with one line and exit 1, and nothing of it commits; `import` of a
# file with an oversize field refuses it as a bad value (nothing imported; --skip-bad imports the
# rest); one large INSERT ... SELECT exits 0 and is sealed as several batches; `bundle`, `merge`
# and `backup` work afterwards and later sales replicate.
#
# usage: sh tests/cli/cli_oversize.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

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
# value DB SQL: the single value the query prints.
value() { "$T" sql "$1" "$2" 2>&1; }

for db in a b; do
    must "$T" init "$W/$db.db"
    must "$T" sql "$W/$db.db" "CREATE TABLE files(id TEXT PRIMARY KEY, data BLOB, note TEXT)"
    must "$T" replicate "$W/$db.db" files
done
must "$T" sql "$W/a.db" "INSERT INTO files VALUES('s1', x'01', 'first sale')"

# A 70 MB blob: refused at write time, one line, exit 1, nothing committed or pending.
run "$T" sql "$W/a.db" "INSERT INTO files VALUES('big', zeroblob(70000000), 'movie')"
expect "70 MB row" 1 "^tillsync: sql: .*a row of table files is over the per-row limit of 33554432 bytes"
[ "$(wc -l <"$W/err")" -eq 1 ] && ok || bad "refusal is not one line: $(cat "$W/err")"
[ "$(value "$W/a.db" "SELECT count(*) FROM files WHERE id='big'")" = 0 ] && ok ||
    bad "the refused row committed"
[ "$(value "$W/a.db" "SELECT count(*) FROM tsync_pending")" = 0 ] && ok ||
    bad "the refused row left a pending change"

# Deleting and updating after the refusal work.
run "$T" sql "$W/a.db" "UPDATE files SET note = 'still first' WHERE id='s1'"
check "update after a refusal"
run "$T" sql "$W/a.db" "INSERT INTO files VALUES('gone', x'02', NULL); DELETE FROM files WHERE id='gone'"
check "delete after a refusal"

# import: a field of 34 MB is a bad value; nothing imported; --skip-bad imports the others.
{
    printf 'id,note\r\nim1,small\r\nimbig,'
    head -c 34000000 /dev/zero | tr '\0' 'n'
    printf '\r\nim2,also small\r\n'
} >"$W/big.csv"
run "$T" import "$W/a.db" files "$W/big.csv"
expect "import of an oversize field" 1 "big.csv:3: .*per-row limit"
grep -q "nothing imported" "$W/err" && ok || bad "import summary: $(head -c 400 "$W/err")"
[ "$(value "$W/a.db" "SELECT count(*) FROM files WHERE id LIKE 'im%'")" = 0 ] && ok ||
    bad "a refused import committed rows"
run "$T" import "$W/a.db" files "$W/big.csv" --skip-bad
check "import --skip-bad of an oversize field"
[ "$(value "$W/a.db" "SELECT group_concat(id) FROM (SELECT id FROM files WHERE id LIKE 'im%' ORDER BY id)")" = "im1,im2" ] &&
    ok || bad "skip-bad imported: $(value "$W/a.db" "SELECT group_concat(id) FROM files")"
[ "$(value "$W/a.db" "SELECT count(*) FROM tsync_pending")" = 0 ] && ok ||
    bad "the import left changes unsealed"

# One statement of 200,000 rows (24 MB): committed, exit 0, sealed as several batches.
before=$(value "$W/a.db" "SELECT count(*) FROM tsync_log")
run "$T" sql "$W/a.db" "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 200000)
 INSERT INTO files SELECT 'r' || i, randomblob(100), 'row ' || i FROM c"
check "INSERT ... SELECT of 200,000 rows"
after=$(value "$W/a.db" "SELECT count(*) FROM tsync_log")
case "$before$after" in
*[!0-9]*) bad "cannot count the batches: $before / $after" ;;
*) [ $((after - before)) -ge 6 ] && ok || bad "200,000 rows sealed as $((after - before)) batches" ;;
esac
[ "$(value "$W/a.db" "SELECT count(*) FROM tsync_pending")" = 0 ] && ok || bad "rows left unsealed"

# bundle, merge and backup work; a later sale replicates too.
must "$T" sql "$W/a.db" "INSERT INTO files VALUES('s2', x'03', 'later sale')"
run "$T" bundle "$W/a.db" "$W/a.bundle"
check "bundle after the large write"
run "$T" merge "$W/b.db" "$W/a.bundle"
check "merge of the large write"
[ "$("$T" hash "$W/a.db")" = "$("$T" hash "$W/b.db")" ] && ok || bad "hashes differ after the merge"
[ "$(value "$W/b.db" "SELECT note FROM files WHERE id='s2'")" = "later sale" ] && ok ||
    bad "the later sale did not replicate"
run "$T" backup "$W/a.db" "$W/a.backup"
check "backup after the large write"
run "$T" status "$W/a.db"
grep -q "unsealed 0" "$W/out" && ok || bad "status: $(cat "$W/out")"
grep -q "attention" "$W/out" && bad "status asks for attention: $(cat "$W/out")"

finish
