#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_console.sh — the console from the command line (docs/CONSOLE.md): `tillsync run`
# serves it by default on 127.0.0.1 at a free port, says so in its log, and `tillsync status`
# (text and --json) shows the address, the text with the token to open it; the token file is
# 0600 and the API answers it (curl), refuses without it; --no-console turns it off; an address
# beyond loopback without --console-password-file is refused (exit 1, one line); --backup-dir
# without a schedule makes "back up now" possible. The API itself: tests/net/test_console.c.
#
# usage: sh tests/cli/cli_console.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null 2>&1 || {
    bad "curl is not installed (scripts/install-deps.sh installs it)"
    finish
}

for d in a b; do
    must "$T" init "$W/$d.db"
    must "$T" sql "$W/$d.db" "CREATE TABLE sales(id TEXT PRIMARY KEY, item TEXT, cents INTEGER)"
    must "$T" replicate "$W/$d.db" sales
done
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

kill "$PA"
wait "$PA" && ok || bad "node a did not stop cleanly"
finish
