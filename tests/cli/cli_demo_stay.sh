#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_demo_stay.sh — `tillsync demo --stay` (issue 12, "The demo shows it"): the demo
# prints each till's console URL with its token, keeps the three tills selling slowly until
# SIGINT, and leaves the databases and nothing else behind. Checked: each URL's token opens
# GET /api/status on its till (and no token is refused), sales of one till keep arriving at
# another during the stay, the conflict the demo makes shows in another till's console, and
# after SIGINT the demo exits 0 within 10 s, its three nodes are gone and the folder it names
# still holds the databases; the same for a SIGTERM before the stay begins. The demo's first
# part: tests/cli/cli_forms.sh.
#
# usage: sh tests/cli/cli_demo_stay.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null 2>&1 || {
    bad "curl is not installed (scripts/install-deps.sh installs it)"
    finish
}

# The help and the manual page say what --stay does.
"$T" demo --help >"$W/help" 2>&1
grep -q -- "--stay" "$W/help" && grep -q "Ctrl-C (SIGINT or SIGTERM)" "$W/help" && ok ||
    bad "demo --help does not explain --stay: $(cat "$W/help")"
"$T" help --man >"$W/man" 2>&1
grep -F -q '[\-\-stay]' "$W/man" && grep -F -q 'Ctrl\-C (SIGINT or SIGTERM)' "$W/man" && ok ||
    bad "the manual page does not explain demo --stay"

"$T" demo --stay --dir "$W/demo" >"$W/demo.out" 2>"$W/demo.err" &
PD=$!
PIDS="$PD"
stay_up() { grep -q "^6\. the tills stay up" "$W/demo.out"; }
if ! wait_for 90 stay_up; then
    bad "demo --stay did not reach its stay phase: $(cat "$W/demo.out" "$W/demo.err")"
    finish
fi
ok
# The nodes the demo started: killed at exit too should the demo fail to stop them.
nodes=$(sed -n 's/.*started three nodes (pids \([0-9]*\) \([0-9]*\) \([0-9]*\)).*/\1 \2 \3/p' \
    "$W/demo.out")
PIDS="$PD $nodes"
[ "$(echo "$nodes" | wc -w)" -eq 3 ] && ok || bad "no node pids in the demo's output: $(cat "$W/demo.out")"

# ---------------------------------------------------------------- the console URLs
for i in 1 2 3; do
    url=$(sed -n "s|^ *till$i console: \(http://[^ ]*\).*|\1|p" "$W/demo.out")
    case "$url" in
    http://127.0.0.1:*/\?token=*) ok ;;
    *)
        bad "till$i: no console URL with a token in the demo's output: $(cat "$W/demo.out")"
        continue
        ;;
    esac
    addr=${url#http://}
    addr=${addr%%/*}
    tok=${url##*token=}
    [ "$tok" = "$(cat "$W/demo/till$i.db.console-token")" ] && ok || bad "till$i: the URL's token is not the node's"
    code=$(curl -s -o "$W/status$i" -w '%{http_code}' -H "Authorization: Bearer $tok" \
        "http://$addr/api/status")
    [ "$code" = 200 ] && grep -q '"peers"' "$W/status$i" && ok ||
        bad "till$i: GET /api/status with the token: $code $(cat "$W/status$i")"
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/api/status")
    [ "$code" = 401 ] && ok || bad "till$i: GET /api/status without a token: $code"
    [ "$i" = 3 ] && A3="$addr" && K3="$tok"
done

# ---------------------------------------------------------------- selling while it stays
seen() { "$T" sql "$W/demo/till3.db" "SELECT count(*) FROM sales WHERE till='till1'"; }
n0=$(seen)
grows() { [ "$(seen)" -gt "$n0" ]; }
wait_for 20 grows && ok || bad "no new sale of till1 reached till3 within 20 s (still $n0)"
# The demo's conflict (till1 and till2 renamed P01 at once), as till3's console shows it.
has_conflict() {
    curl -s -H "Authorization: Bearer $K3" "http://$A3/api/conflicts" >"$W/conflicts" &&
        grep -q 'Espresso (till1)' "$W/conflicts" && grep -q 'Espresso (till2)' "$W/conflicts"
}
wait_for 20 has_conflict && ok || bad "till3's console shows no conflict on P01: $(cat "$W/conflicts")"

# ---------------------------------------------------------------- Ctrl-C
# stop_demo SIG WHAT ERRFILE WHEN: sends SIG to the demo ($PD); it must exit 0 within 10 s, and
# none of its nodes ($nodes) may outlive it.
stop_demo() {
    kill -"$1" "$PD"
    i=0
    while kill -0 "$PD" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$PD" 2>/dev/null; then
        bad "demo --stay still runs 10 s after $2"
    else
        wait "$PD"
        rc=$?
        [ "$rc" -eq 0 ] && ok || bad "demo --stay exited $rc after $2: $(cat "$3")"
    fi
    sleep 0.2
    for p in $nodes; do
        if kill -0 "$p" 2>/dev/null; then bad "node $p still runs after $4"; else ok; fi
    done
}

stop_demo INT "SIGINT" "$W/demo.err" "the demo ended"
PIDS=""
for i in 1 2 3; do
    [ -s "$W/demo/till$i.db" ] && ok || bad "till$i.db is gone"
    run "$T" status "$W/demo/till$i.db"
    [ "$rc" -eq 3 ] && ok || bad "till$i: status says a node still runs (exit $rc): $(cat "$W/out")"
done
grep -q "kept in $W/demo" "$W/demo.out" && ok || bad "the demo does not say where the databases are: $(cat "$W/demo.out")"
grep -q "^7\. stopping" "$W/demo.out" && ok || bad "the demo does not say it stops: $(cat "$W/demo.out")"
[ ! -s "$W/demo.err" ] && ok || bad "demo --stay wrote to stderr: $(cat "$W/demo.err")"

# ---------------------------------------------------------------- Ctrl-C before the stay
# SIGTERM as soon as the nodes are up (the catalogue still on its way, or the first round):
# the demo stops there as cleanly, exit 0, no node left, the folder kept.
"$T" demo --stay --dir "$W/early" >"$W/early.out" 2>"$W/early.err" &
PD=$!
PIDS="$PD"
started() { grep -q "^2\. started three nodes" "$W/early.out"; }
wait_for 60 started || bad "demo --stay (second run) started no nodes: $(cat "$W/early.out" "$W/early.err")"
nodes=$(sed -n 's/.*started three nodes (pids \([0-9]*\) \([0-9]*\) \([0-9]*\)).*/\1 \2 \3/p' \
    "$W/early.out")
PIDS="$PD $nodes"
stop_demo TERM "an early SIGTERM" "$W/early.err" "an early stop"
PIDS=""
grep -q "before the demo's end" "$W/early.out" && grep -q "kept in $W/early" "$W/early.out" && ok ||
    bad "an early stop is not said, or not where the databases are: $(cat "$W/early.out")"
[ -s "$W/early/till1.db" ] && ok || bad "an early stop removed till1.db"
finish
