#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_conventions.sh — the command line follows the conventions: every command has
# `tillsync CMD --help` (and `tillsync help CMD`, -h) from the same text as tillsync(1), which
# `tillsync help --man` prints and the build installs; every option takes `--opt=value` as well as
# `--opt value` and may come before the operands; `--json` on every command that reports; an
# unknown option names the command and where its help is.
#
# usage: sh tests/cli/cli_conventions.sh PATH/TO/tillsync
. "$(dirname "$0")/lib.sh"
PY=$(command -v python3 || echo /usr/bin/python3)
# json_ok FILE: FILE holds one JSON value.
json_ok() { "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }
# jget FILE EXPR: a field of the JSON in FILE (EXPR in Python over j).
jget() { "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
ok_run() {
    d=$1
    shift
    run "$@"
    if [ "$rc" -eq 0 ]; then ok; else bad "$d: exit $rc: $(head -c 300 "$W/err")"; fi
}

# ---------------------------------------------------------------- --help for every command
run "$T" --help
CMDS=$(sed -n 's/^  \([a-z][a-z-]*\)\( .*\)\{0,1\}$/\1/p' "$W/out" | sort -u)
[ "$(echo "$CMDS" | wc -l)" -ge 25 ] && ok || bad "the overview lists few commands: $CMDS"
"$T" help --man >"$W/man.1" 2>"$W/err" && ok || bad "help --man: $(cat "$W/err")"
for c in $CMDS; do
    for h in --help -h; do
        run "$T" "$c" $h
        [ $rc -eq 0 ] && [ ! -s "$W/err" ] && head -n1 "$W/out" | grep -q "^usage: tillsync $c" && ok ||
            bad "tillsync $c $h: exit $rc: $(head -n2 "$W/out") $(cat "$W/err")"
    done
    cp "$W/out" "$W/help1"
    run "$T" help "$c"
    cmp -s "$W/out" "$W/help1" && ok || bad "tillsync help $c differs from tillsync $c --help"
    grep -q "^\.B tillsync $c$" "$W/man.1" && ok || bad "tillsync(1) lacks the command $c"
    # Every option the help names is in the manual page too (one text).
    for o in $(grep -o -- '--[a-z][a-z-]*' "$W/help1" | sort -u); do
        grep -q -- "$(echo "$o" | sed 's/-/\\\\-/g')" "$W/man.1" || bad "tillsync(1) lacks $c's $o"
    done
done
run "$T" sql DB SQL --help
[ $rc -eq 0 ] && grep -q "^usage: tillsync sql" "$W/out" && ok || bad "--help after operands"
run "$T" shop sign --help
[ $rc -eq 0 ] && grep -q "^usage: tillsync shop sign" "$W/out" && ok || bad "shop sign --help"
run "$T" frobnicate --help
[ $rc -eq 2 ] && ok || bad "--help of an unknown command: exit $rc"
grep -q '^\.TH TILLSYNC 1' "$W/man.1" && grep -q '^\.SH EXIT STATUS' "$W/man.1" && ok || bad "tillsync(1) lacks .TH or EXIT STATUS"
if command -v groff >/dev/null 2>&1; then
    groff -man -Tutf8 -ww -z "$W/man.1" >"$W/groff" 2>&1
    [ ! -s "$W/groff" ] && ok || bad "groff warns on tillsync(1): $(head -5 "$W/groff")"
fi
# The build generated tillsync.1 beside the binary, from the same text.
if [ -f "$(dirname "$T")/tillsync.1" ]; then
    cmp -s "$(dirname "$T")/tillsync.1" "$W/man.1" && ok || bad "the built tillsync.1 is not help --man's"
fi

# ---------------------------------------------------------------- --opt=value, options anywhere
cd "$W" || exit 1
must "$T" init a.db
must "$T" init b.db
must "$T" sql a.db "CREATE TABLE p(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0)"
must "$T" sql b.db "CREATE TABLE p(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0)"
ok_run "replicate --counter=COL" "$T" replicate --counter=stock a.db p
must "$T" replicate b.db p --counter stock
must "$T" sql a.db "INSERT INTO p VALUES('p1', 'tea', 5)"
ok_run "sql --json before the operands" "$T" sql --json a.db "SELECT id, stock FROM p"
[ "$(jget "$W/out" 'j[0]["stock"]')" = 5 ] && ok || bad "sql --json DB: $(cat "$W/out")"
ok_run "state --json" "$T" state b.db --json
cp "$W/out" b.state
ok_run "bundle --since=FILE" "$T" bundle a.db a.bun --since=b.state
ok_run "merge --json" "$T" merge --json b.db a.bun
json_ok "$W/out" && [ "$(jget "$W/out" 'j["merged"]')" -ge 1 ] && [ "$(jget "$W/out" 'j["refused"]')" = 0 ] &&
    ok || bad "merge --json: $(cat "$W/out")"
ok_run "export --format=json --output=FILE --json" "$T" export a.db p --format=json --output=p.json --json
json_ok "$W/out" && [ "$(jget "$W/out" 'j["rows"]')" = 1 ] && json_ok p.json && ok || bad "export --json: $(cat "$W/out")"
printf 'id,name,stock\np2,cake,3\np3,bun,x\n' >in.csv
run "$T" import --format=csv --skip-bad --json a.db p in.csv
json_ok "$W/out" && [ "$(jget "$W/out" 'j["imported"]')" = 1 ] && [ "$(jget "$W/out" 'j["rejected"]')" = 1 ] &&
    ok || bad "import --json: $rc $(cat "$W/out" "$W/err")"
ok_run "parked --limit=1 --json" "$T" parked a.db --limit=1 --json
json_ok "$W/out" && ok || bad "parked --json is not JSON"
ok_run "trust --json" "$T" trust --json a.db
json_ok "$W/out" && ok || bad "trust --json is not JSON"
ok_run "conflicts --json" "$T" conflicts a.db --json
json_ok "$W/out" && ok || bad "conflicts --json is not JSON"
ok_run "schema --json" "$T" schema --json a.db
json_ok "$W/out" && ok || bad "schema --json is not JSON"
ok_run "migrate --status --json" "$T" migrate --json a.db --status
json_ok "$W/out" && ok || bad "migrate --status --json is not JSON"
ok_run "prune --log-max-days=9" "$T" prune --log-max-days=9 a.db
echo secret-words >pass
ok_run "backup --encrypt --passphrase-file=F" "$T" backup --encrypt --passphrase-file=pass a.db a.tsbak
ok_run "backup-check --json" "$T" backup-check --passphrase-file=pass a.tsbak --json
json_ok "$W/out" && [ "$(jget "$W/out" 'j["ok"]')" = True ] && [ "$(jget "$W/out" 'j["encrypted"]')" = True ] &&
    ok || bad "backup-check --json: $(cat "$W/out")"
ok_run "shop create --name=NAME" "$T" shop create --name=Corner shop.key
ok_run "enrol --shop-key=K --name=N --days=N" "$T" enrol a.db --shop-key=shop.key --name=till-a --days=30
"$T" enrol-request --name=till-b b.db >b.req 2>"$W/err" && ok || bad "enrol-request --name=N: $(cat "$W/err")"
ok_run "shop sign --days=N --name=N" "$T" shop sign --days=10 --name=till-b shop.key b.req
run "$T" status --json --key=a.db.key a.db
[ $rc -eq 3 ] && json_ok "$W/out" && ok || bad "status --json --key=PATH (no node: 3): exit $rc $(cat "$W/err")"
ok_run "demo --offline --seed=N --dir=DIR" "$T" demo --seed=3 --offline --dir=demo
run "$T" run a.db --listen=tcp://127.0.0.1:1 --print-config
grep -q "^listen = tcp://127.0.0.1:1$" "$W/out" && ok || bad "run --listen=EP: $(cat "$W/out" "$W/err")"

# ---------------------------------------------------------------- usage errors name the command
for form in "sql a.db --frobnicate" "export a.db p --format" "shop sign --bogus" "merge a.db a.bun --json=1"; do
    # shellcheck disable=SC2086
    run "$T" $form
    c=$(echo "$form" | cut -d' ' -f1)
    [ $rc -eq 2 ] && [ "$(wc -l <"$W/err")" -eq 1 ] && grep -q "^tillsync: $c.*see 'tillsync $c.*--help'" "$W/err" &&
        ok || bad "$form: exit $rc: $(cat "$W/err")"
done

finish
