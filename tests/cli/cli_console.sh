#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_console.sh — the console from the command line (docs/CONSOLE.md): `tillsync run`
# serves it by default on 127.0.0.1 at a free port, says so in its log, and `tillsync status`
# (text and --json) shows the address, the text with the token to open it; the token file is
# 0600 and the API answers it (curl), refuses without it; --no-console turns it off; an address
# beyond loopback without --console-password-file is refused (exit 1, one line); --backup-dir
# without a schedule makes "back up now" possible; a backup downloads byte for byte and verifies, a
# damaged copy does not; two tills collide while apart and a conflict resolved through c's console
# shows resolved, with its value, on d. The API itself: tests/net/test_console*.c.
#
# usage: sh tests/cli/cli_console.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null 2>&1 || {
    bad "curl is not installed (scripts/install-deps.sh installs it)"
    finish
}

sales_dbs a b
mkdir "$W/bk"

# ---------------------------------------------------------------- refused at start
run "$T" run "$W/a.db" --listen 'tcp://127.0.0.1:*' --no-mdns --console 0.0.0.0:0
if [ "$rc" -eq 1 ] && grep -q "password" "$W/err" && [ "$(wc -l <"$W/err")" -eq 1 ]; then ok; else
    bad "console beyond loopback without a password: exit $rc: $(cat "$W/err")"
fi
run "$T" run "$W/a.db" --listen 'tcp://127.0.0.1:*' --no-mdns --console nonsense
[ "$rc" -eq 1 ] && grep -q "ADDR:PORT" "$W/err" && ok || bad "a malformed console address: $rc $(cat "$W/err")"

# ---------------------------------------------------------------- on by default
"$T" run "$W/a.db" --listen 'tcp://127.0.0.1:*' --no-mdns --backup-dir "$W/bk" 2>"$W/a.log" &
PA=$!
PIDS="$PA"
has_console() { "$T" status "$1" | grep -q '^console: http://127.0.0.1:[0-9]*/?token=[0-9a-f]\{64\}$'; }
wait_for 10 has_console "$W/a.db" || bad "status shows no console URL: $("$T" status "$W/a.db")"
URL=$("$T" status "$W/a.db" | sed -n 's/^console: //p')
BASE=${URL%%\?*}
TOKEN=${URL#*token=}
grep -q "console on $BASE" "$W/a.log" && ok || bad "the log does not say where the console is: $(cat "$W/a.log")"
[ "$(stat -c %a "$W/a.db.console-token")" = 600 ] && ok || bad "token file mode $(stat -c %a "$W/a.db.console-token")"
[ "$(head -n1 "$W/a.db.console-token")" = "$TOKEN" ] && ok || bad "status shows another token"
"$T" status "$W/a.db" --json >"$W/st.json"
grep -q "\"address\": \"$(echo "$BASE" | sed 's|http://||; s|/$||')\"" "$W/st.json" && ok ||
    bad "status --json has no console address: $(cat "$W/st.json")"
grep -q "$TOKEN" "$W/st.json" && bad "status --json shows the token" || ok

code=$(curl -s -o "$W/body" -w '%{http_code}' "${BASE}api/status")
[ "$code" = 401 ] && ok || bad "no token: $code"
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "${BASE}api/status")
[ "$code" = 200 ] && grep -q '"public_key"' "$W/body" && ok || bad "with the token: $code $(cat "$W/body")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL")
[ "$code" = 303 ] && ok || bad "the URL status shows: $code"
code=$(curl -s -o "$W/body" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "${BASE}api/backups")
[ "$code" = 202 ] && ok || bad "back up now with --backup-dir alone: $code $(cat "$W/body")"
backup_listed() {
    curl -s -H "Authorization: Bearer $TOKEN" "${BASE}api/backups" | grep -q '"verified":true'
}
wait_for 30 backup_listed && ok || bad "no verified backup listed: $(curl -s -H "Authorization: Bearer $TOKEN" "${BASE}api/backups")"
printf 'id,item,cents\ns1,tea,300\n' >"$W/in.csv"
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" --data-binary @"$W/in.csv" \
    "${BASE}api/import?table=sales&format=csv")
[ "$code" = 200 ] && [ "$("$T" sql "$W/a.db" "SELECT cents FROM sales WHERE id='s1'")" = 300 ] && ok ||
    bad "import through the console: $code $(cat "$W/body")"

# ---------------------------------------------------------------- --no-console
"$T" run "$W/b.db" --listen 'tcp://127.0.0.1:*' --no-mdns --no-console 2>"$W/b.log" &
PIDS="$PIDS $!"
wait_for 10 has_listen "$W/b.db" || bad "node b wrote no status: $(cat "$W/b.log")"
"$T" status "$W/b.db" | grep -q '^console: off$' && ok || bad "--no-console: $("$T" status "$W/b.db")"
[ ! -e "$W/b.db.console-token" ] && ok || bad "--no-console made a token"

# ---------------------------------------------------------------- a backup: download, verify
FILE=$(curl -s -H "Authorization: Bearer $TOKEN" "${BASE}api/backups" | sed -n 's/.*"file":"\(a\.db-[^"]*\)".*/\1/p' | head -n1)
[ -n "$FILE" ] && [ -f "$W/bk/$FILE" ] && ok || bad "no backup file to download: $FILE"
code=$(curl -s -o "$W/dl" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "${BASE}api/backups/download?file=$FILE")
[ "$code" = 200 ] && cmp -s "$W/dl" "$W/bk/$FILE" && ok || bad "download: $code, not the file's bytes"
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "${BASE}api/backups/download?file=../a.db")
[ "$code" = 404 ] && ok || bad "download of ../a.db: $code $(cat "$W/body")"
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -d "{\"file\":\"$FILE\"}" "${BASE}api/backups/verify")
[ "$code" = 200 ] && grep -q '"ok":true' "$W/body" && ok || bad "verify: $code $(cat "$W/body")"
# A damaged copy (its middle overwritten) does not verify, and says why.
DAMAGED=a.db-20990101T000000.000Z.tsbak
cp "$W/bk/$FILE" "$W/bk/$DAMAGED"
printf 'XXXXXXXX' | dd of="$W/bk/$DAMAGED" bs=1 seek=$(($(fsize "$W/bk/$FILE") / 2)) conv=notrunc 2>/dev/null
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -d "{\"file\":\"$DAMAGED\"}" "${BASE}api/backups/verify")
[ "$code" = 200 ] && grep -q '"ok":false' "$W/body" && grep -q '"error":"..*"' "$W/body" && ok ||
    bad "verify of a damaged copy: $code $(cat "$W/body")"

kill "$PA"
wait "$PA" && ok || bad "node a did not stop cleanly"

# ---------------------------------------------------------------- a conflict resolved through the API
# Two enrolled tills c and d share rows; d stops; both write the same prices; d comes back: the
# collisions are on both. Taking the other value on c through c's console shows resolved, with
# that value, on d (d's API, d's row).
shop_pair c d "('p1','tea',100),('p2','jam',200)"
"$T" run "$W/c.db" --listen 'tcp://127.0.0.1:*' --no-mdns 2>"$W/c.log" &
PC=$!
PIDS="$PIDS $PC"
wait_for 10 has_listen "$W/c.db" || bad "node c wrote no status: $(cat "$W/c.log")"
PEER="$(listen_of "$W/c.db")#$(key_of "$W/c.db")"
start_d() {
    "$T" run "$W/d.db" --listen 'tcp://127.0.0.1:*' --no-mdns --peer "$PEER" 2>>"$W/d.log" &
    PD=$!
    PIDS="$PIDS $PD"
}
start_d
has_rows() { [ "$("$T" sql "$W/d.db" "SELECT count(*) FROM products")" = 2 ]; }
wait_for 30 has_rows || bad "d did not get c's rows: $(cat "$W/d.log")"
kill "$PD"
wait "$PD" || bad "node d did not stop cleanly"
"$T" sql "$W/c.db" "UPDATE products SET price = price + 1" >/dev/null
"$T" sql "$W/d.db" "UPDATE products SET price = price + 2" >/dev/null
start_d
wait_for 10 has_console "$W/c.db" && wait_for 10 has_console "$W/d.db" || bad "no consoles"
console_of() { "$T" status "$1" | sed -n 's/^console: //p'; }
UC=$(console_of "$W/c.db")
UD=$(console_of "$W/d.db")
AC="Authorization: Bearer ${UC#*token=}"
AD="Authorization: Bearer ${UD#*token=}"
BC=${UC%%\?*}
BD=${UD%%\?*}
two_open() { [ "$(curl -s -H "$2" "${1}api/conflicts?open=1" | grep -o '"cid"' | wc -l)" = 2 ]; }
wait_for 30 two_open "$BC" "$AC" && ok || bad "c lists no 2 open conflicts: $(curl -s -H "$AC" "${BC}api/conflicts")"
wait_for 30 two_open "$BD" "$AD" && ok || bad "d lists no 2 open conflicts: $(curl -s -H "$AD" "${BD}api/conflicts")"
curl -s -H "$AC" "${BC}api/conflicts?open=1" >"$W/cj"
grep -q '"till":"till-d"' "$W/cj" && ok || bad "c's conflicts do not name till-d: $(cat "$W/cj")"
ID1=$("$T" sql "$W/c.db" "SELECT id FROM tsync_conflicts WHERE pk = '[\"p1\"]'")
LOST=$("$T" sql "$W/c.db" "SELECT lose_val FROM tsync_conflicts WHERE id = $ID1")
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "$AC" -d '{"keep":true,"take":"other"}' "${BC}api/conflicts/$ID1/resolve")
[ "$code" = 400 ] && ok || bad "an ambiguous resolve: $code $(cat "$W/body")"
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "$AC" -d '{"take":"other"}' "${BC}api/conflicts/$ID1/resolve")
[ "$code" = 200 ] && grep -q "\"how\":\"take\",\"value\":$LOST" "$W/body" && ok || bad "resolve take-other: $code $(cat "$W/body")"
[ "$("$T" sql "$W/c.db" "SELECT price FROM products WHERE id = 'p1'")" = "$LOST" ] && ok || bad "c's row does not have $LOST"
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "$AC" -d '{"take":"other"}' "${BC}api/conflicts/$ID1/resolve")
[ "$code" = 409 ] && ok || bad "resolving twice: $code $(cat "$W/body")"
d_resolved() { curl -s -H "$AD" "${BD}api/conflicts?open=1" | grep -q '"key":\["p2"\]' &&
    ! curl -s -H "$AD" "${BD}api/conflicts?open=1" | grep -q '"key":\["p1"\]'; }
wait_for 30 d_resolved && ok || bad "d does not show p1 resolved: $(curl -s -H "$AD" "${BD}api/conflicts")"
curl -s -H "$AD" "${BD}api/conflicts" | grep -q "\"how\":\"take\",\"value\":$LOST,\"site\":\"[0-9a-f]*\",\"till\":\"till-c\"" && ok ||
    bad "d's entry is not resolved by till-c with $LOST: $(curl -s -H "$AD" "${BD}api/conflicts")"
d_row() { [ "$("$T" sql "$W/d.db" "SELECT price FROM products WHERE id = 'p1'")" = "$LOST" ]; }
wait_for 30 d_row && ok || bad "d's row p1 is not $LOST"
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "$AC" -d '{"all":true}' "${BC}api/conflicts/dismiss")
[ "$code" = 200 ] && grep -q '"dismissed":1' "$W/body" && ok || bad "dismiss all: $code $(cat "$W/body")"
kill "$PD" "$PC"
wait "$PD" && ok || bad "node d did not stop cleanly"
wait "$PC" && ok || bad "node c did not stop cleanly"
finish
