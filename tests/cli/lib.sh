# SPDX-License-Identifier: Apache-2.0
# tests/cli/lib.sh — the harness every tests/cli/cli_*.sh (and tests/soak/kill_restart.sh) sources
# first, with the script's own arguments: `. "$(dirname "$0")/lib.sh"`.
#
# It sets T (the tillsync binary, $1), W (a fresh temporary folder, removed at exit unless KEEP is
# set) and PIDS (background processes the script starts; killed and reaped at exit), counts checks
# in pass/fail, and defines the helpers the scripts share. A script that needs a variant (another
# cleanup, a run with stdin closed) defines its own function after sourcing: the later
# definition wins, and the trap calls cleanup by name at exit, so an override there is used too.
#
# Every failed check prints one line starting "FAIL: " (ctest fails a test on "FAIL" in its
# output) and the script ends with finish: "N passed, M failed", exit status 1 if any failed.

T=${1:?usage: sh $0 PATH/TO/tillsync}
W=$(mktemp -d "${TMPDIR:-/tmp}/tillsync-$(basename "$0" .sh).XXXXXX") || exit 1
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    [ -n "$KEEP" ] || rm -rf "$W"
}
trap cleanup EXIT
# Through exit, so the EXIT trap runs on ^C and on ctest's timeout too.
trap 'exit 1' INT TERM
pass=0
fail=0

# ---------------------------------------------------------------- counting and ending
ok() { pass=$((pass + 1)); }
bad() {
    echo "FAIL: $*"
    fail=$((fail + 1))
}
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}
# must COMMAND...: a setup step; if it fails, that is one failure and the script ends there.
must() {
    "$@" >"$W/setup.out" 2>&1 || {
        bad "setup: $*: $(cat "$W/setup.out")"
        finish
    }
}
# sales_dbs NAME...: $W/NAME.db for each NAME: a new database with a replicated table
# sales(id TEXT PRIMARY KEY, item TEXT, cents INTEGER).
sales_dbs() {
    for d in "$@"; do
        must "$T" init "$W/$d.db"
        must "$T" sql "$W/$d.db" "CREATE TABLE sales(id TEXT PRIMARY KEY, item TEXT, cents INTEGER)"
        must "$T" replicate "$W/$d.db" sales
    done
}
# run COMMAND...: stdout in $W/out, stderr in $W/err, exit status in $rc.
run() {
    "$@" >"$W/out" 2>"$W/err"
    rc=$?
}
# expect WHAT STATUS TEXT: after run, the command exited STATUS and said TEXT (a grep pattern) on
# stderr, in one line (how a usage error or a failure of tillsync looks).
expect() {
    if [ "$rc" -ne "$2" ]; then
        bad "$1: exit status $rc, want $2: $(head -c 400 "$W/err")"
    elif ! grep -q -e "$3" "$W/err"; then
        bad "$1: stderr does not say '$3': $(head -c 400 "$W/err")"
    elif [ "$(wc -l <"$W/err")" -ne 1 ]; then
        bad "$1: the error is not one line: $(cat "$W/err")"
    else
        ok
    fi
}
# wait_for SECONDS COMMAND...: polls COMMAND every 50 ms until it succeeds (0) or time is up (1).
wait_for() {
    limit=$(($1 * 20))
    shift
    i=0
    while [ $i -lt $limit ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
        i=$((i + 1))
    done
    return 1
}
fsize() { wc -c <"$1" | tr -d ' '; }

# ---------------------------------------------------------------- a till and its node
# key_of / pubkey DB: the device public key (from --json / from the text form of `state`).
key_of() { "$T" state "$1" --json | sed -n 's/.*"public_key": "\([0-9a-f]*\)".*/\1/p'; }
pubkey() { "$T" state "$1" | sed -n 's/^public key: *//p'; }
site() { "$T" state "$1" | sed -n 's/^site: *//p'; }
count_is() { [ "$("$T" sql "$1" "SELECT count(*) FROM sales")" = "$2" ]; }
# listen_of DB: the endpoint a running node on DB listens on (its status file DB.node).
listen_of() { sed -n 's/.*"listen": "\(tcp:[^"]*\)".*/\1/p' "$1.node" 2>/dev/null; }
has_listen() { [ -n "$(listen_of "$1")" ]; }
online() { "$T" status "$1" --json | grep -q '"online": true'; }
status_num() { "$T" status "$1" --json | sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p" | head -n1; }
num_ge() { v=$(status_num "$1" "$2"); [ -n "$v" ] && [ "$v" -ge "$3" ]; }

# ---------------------------------------------------------------- two tills of one shop
# shop_pair A B ROWS: tills $W/A.db and $W/B.db, each with a replicated
# products(id, name, price), enrolled in one new shop ("Corner Shop", $W/shop.key) as till-A and
# till-B; ROWS (an SQL VALUES list) inserted on A. The two have not synced yet.
shop_pair() {
    for sp_t in "$1" "$2"; do
        must "$T" init "$W/$sp_t.db"
        must "$T" sql "$W/$sp_t.db" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER)"
        must "$T" replicate "$W/$sp_t.db" products
    done
    must "$T" shop create "$W/shop.key" --name "Corner Shop"
    for sp_t in "$1" "$2"; do must "$T" enrol "$W/$sp_t.db" --shop-key "$W/shop.key" --name "till-$sp_t"; done
    must "$T" sql "$W/$1.db" "INSERT INTO products VALUES $3"
}
