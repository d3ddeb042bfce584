# SPDX-License-Identifier: Apache-2.0
# tests/netlab/tills.sh — what the lab's test scripts share: pass/fail counters, polling, tills of
# one shop on the lab's hosts, `tillsync run` nodes, sales, and checks of content and status. A
# library for POSIX sh (dash), sourced after lab.sh (it uses lab_up, lab_bg, lab_ip, lab_stop,
# lab__gone, $LAB_DIR, $LAB_HOME); sourcing it only defines functions and variables.
#
#   HERE=$(cd "$(dirname "$0")" && pwd)
#   . "$HERE/lab.sh"
#   . "$HERE/tills.sh"
#   tills_args "$@"                 # T := PATH/TO/tillsync, made absolute ("usage: X.sh PATH/TO/
#                                   # tillsync" and exit 2 if none; exit 1 if not executable)
#   lab_require || exit 1
#
#   ok; bad MESSAGE                 # a check passed / failed ("FAIL: MESSAGE"): pass, fail
#   finish                          # "N passed, M failed"; exits 1 on any failure, else 0
#   ms                              # milliseconds since the epoch
#   wait_for SECONDS CMD...         # polls CMD (output discarded) every $WAIT_POLL_MS ms until it
#                                   # succeeds; status 1 after SECONDS*1000/WAIT_POLL_MS polls,
#                                   # or with WAIT_CLOCK=1 once SECONDS have passed on the clock
#   start_lab N                     # lab_up N, or FAIL "lab_up N failed" and finish
#   db H                            # H's database: $DB_H if set, else $LAB_DIR/H/till.db
#   must CMD...                     # a setup step, output in $LAB_DIR/setup.out; if it fails:
#                                   # FAIL "setup: CMD: OUTPUT" and finish (MUST_RETURN=1: status 1,
#                                   # output appended to setup.out, for a script that goes on)
#   setup_fail MESSAGE              # FAIL MESSAGE and finish (MUST_RETURN=1: to setup.out, status 1)
#   new_shop [KEYFILE [NAME]]       # tillsync shop create ($LAB_DIR/shop.key, "Lab Shop")
#   new_till H [KEYFILE [NAME]]     # H's database: init (unless it exists), table products (id,
#                                   # name, [price,] stock: a counter) and table sales (id, till,
#                                   # item, qty), both replicated; enrolled with KEYFILE (the shop)
#                                   # as NAME (till-H); KEY_H := its public key (FAIL if none)
#   tills H...                      # new_shop, then new_till of each H
#   catalogue H                     # on H: p1 tea stock 1000, p2 cake stock 500 (prices 240, 390
#                                   # with TILLS_PRICE=1); P1=1000 P2=500 NSALES=0
#   key_of H; key H                 # H's public key: from `tillsync state`; as saved in KEY_H
#   start_node H [ARG...]           # `tillsync run DB --listen tcp://ADDR:$PORT ARG...` in H, log
#                                   # (ADDR: H's address; 0.0.0.0 with LISTEN_ANY=1)
#                                   # $LAB_DIR/H/node.log; its PID in NODE_H and NODES
#   node H; alive H; drop_node H    # H's node PID; it runs; its PID out of NODES (once stopped)
#   stop_nodes                      # SIGTERM to every node in NODES; each must exit 0 (ok, or FAIL
#                                   # "node PID exited RC on SIGTERM"); NODES=""
#   lab_on_down                     # (lab_down calls it first) stops the nodes left in NODES
#   sell H N ITEM TAG               # N sales of ITEM on till H (ids H-TAG-1..N, stock - 1 each),
#                                   # each its own transaction, in the background in H's namespace
#                                   # (log $LAB_DIR/H/sell.log); PID added to SELLERS
#   sell_now H N ITEM TAG           # the same in the foreground; status 1 at the first failure
#   till_sales DB H N ITEM TAG      # the loop of both (sell's child sh sources this file for it)
#   sellers_done                    # waits for SELLERS; FAIL "a sale failed: ..." per failed one
#   sold DP1 DP2 N                  # sellers_done; then the content expected: P1 - DP1, P2 - DP2,
#                                   # NSALES + N
#   q H SQL; stock_of H ITEM; nsales_of H; hash_of H   # content of H's database (stderr dropped)
#   same [H...]                     # each H ($HOSTS) holds p1=$P1 p2=$P2 and $NSALES sales, and
#                                   # they all hash equal
#   same_hash H...                  # they all hash equal (and have a hash)
#   converged SECONDS MESSAGE [H...]  # wait_for SECONDS same H... ($HOSTS): ok; or FAIL MESSAGE,
#                                   # then show H..., status 1
#   show [H...]                     # "  H: p1=.. p2=.. sales=.. hash=(16) connected=N" per H
#   status_of H                     # tillsync status DB --json
#   peers_of H                      # H's peers, one flattened JSON object a line
#   connected H O; unreachable H O  # H's node shows O (by key) connected / unreachable
#   not_connected H O               # H's node answers and has no connected session with O
#   mesh [H...]                     # every pair of H ($HOSTS) connected, both ways
#   nconn H                         # how many connected sessions H's node shows
#   show_peers [-a] H...            # "  H:" then "    KEY(8).. STATE" a peer (-a: whole objects)
#   check_held_refused H [NAME]     # ok / FAIL: H's node holds no batch; it refused nothing (NAME
#                                   # aside); REFUSED := its refused counters, "NAME":N a line
#
# Variables: T; HOSTS (set by the script: the hosts of same, converged, show and mesh given none);
# PORT (7400); NODES, NODE_H; KEY_H; DB_H (optional); SELLERS; P1 P2 NSALES (the content `same`
# expects); pass, fail; REFUSED. Settings, to change after sourcing: WAIT_POLL_MS (100),
# WAIT_CLOCK (""), MUST_RETURN (""), TILLS_PRICE ("": 1 gives products a price column),
# TILLS_SALES (1: 0 makes no sales table).

pass=0
fail=0
PORT=7400
NODES=""
SELLERS=""
P1=1000
P2=500
NSALES=0
REFUSED=""
WAIT_POLL_MS=100
WAIT_CLOCK=""
MUST_RETURN=""
TILLS_PRICE=""
TILLS_SALES=1

tills_args() {
    local name
    name=${0##*/}
    [ -n "${1:-}" ] || { echo "usage: $name PATH/TO/tillsync" >&2; exit 2; }
    T=$1
    case "$T" in /*) ;; *) T=$(cd "$(dirname "$T")" && pwd)/$(basename "$T") ;; esac
    [ -x "$T" ] || { echo "$name: $T is not executable" >&2; exit 1; }
}

# ---------------------------------------------------------------- counters, time
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
ms() { echo $(($(date +%s%N) / 1000000)); }
wait_for() {
    local wf_n wf_end wf_s
    wf_s=$((WAIT_POLL_MS / 1000)).$(printf '%03d' $((WAIT_POLL_MS % 1000)))
    if [ -n "$WAIT_CLOCK" ]; then
        wf_end=$(($(ms) + $1 * 1000))
        shift
        while :; do
            "$@" >/dev/null 2>&1 && return 0
            [ "$(ms)" -lt "$wf_end" ] || return 1
            sleep "$wf_s"
        done
    fi
    wf_n=$(($1 * 1000 / WAIT_POLL_MS))
    shift
    while [ "$wf_n" -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep "$wf_s"
        wf_n=$((wf_n - 1))
    done
    return 1
}

# ---------------------------------------------------------------- the lab, the shop, its tills
start_lab() {
    lab_up "$1" || {
        bad "lab_up $1 failed"
        finish
    }
}
db() {
    local d
    eval "d=\${DB_$1:-}"
    if [ -n "$d" ]; then echo "$d"; else echo "$LAB_DIR/$1/till.db"; fi
}
must() {
    if [ -n "$MUST_RETURN" ]; then
        "$@" >>"$LAB_DIR/setup.out" 2>&1
        return
    fi
    "$@" >"$LAB_DIR/setup.out" 2>&1 || setup_fail "setup: $*: $(cat "$LAB_DIR/setup.out")"
}
setup_fail() {
    if [ -n "$MUST_RETURN" ]; then
        echo "$1" >>"$LAB_DIR/setup.out"
        return 1
    fi
    bad "$1"
    finish
}
new_shop() { must "$T" shop create "${1:-$LAB_DIR/shop.key}" --name "${2:-Lab Shop}"; }
new_till() {
    local d k cols sql
    d=$(db "$1")
    [ -e "$d" ] || must "$T" init "$d" || return 1
    cols="id TEXT PRIMARY KEY, name TEXT,"
    [ -z "$TILLS_PRICE" ] || cols="$cols price INTEGER,"
    sql="CREATE TABLE products($cols stock INTEGER NOT NULL DEFAULT 0)"
    [ "$TILLS_SALES" = 0 ] || sql="$sql; CREATE TABLE sales(id TEXT PRIMARY KEY, till TEXT, item TEXT, qty INTEGER)"
    must "$T" sql "$d" "$sql" || return 1
    must "$T" replicate "$d" products --counter stock || return 1
    if [ "$TILLS_SALES" != 0 ]; then must "$T" replicate "$d" sales || return 1; fi
    must "$T" enrol "$d" --shop-key "${2:-$LAB_DIR/shop.key}" --name "${3:-till-$1}" || return 1
    k=$(key_of "$1")
    [ ${#k} -eq 64 ] || { setup_fail "no public key for $1: '$k'"; return 1; }
    eval "KEY_$1=$k"
}
tills() {
    local h
    new_shop || return 1
    for h in "$@"; do new_till "$h" || return 1; done
}
catalogue() {
    P1=1000
    P2=500
    NSALES=0
    if [ -n "$TILLS_PRICE" ]; then
        must "$T" sql "$(db "$1")" "INSERT INTO products VALUES('p1', 'tea', 240, $P1), ('p2', 'cake', 390, $P2)"
    else
        must "$T" sql "$(db "$1")" "INSERT INTO products VALUES('p1', 'tea', $P1), ('p2', 'cake', $P2)"
    fi
}
key_of() { "$T" state "$(db "$1")" --json | sed -n 's/.*"public_key": "\([0-9a-f]*\)".*/\1/p'; }
key() { eval "echo \$KEY_$1"; }

# ---------------------------------------------------------------- nodes
start_node() {
    local h
    h=$1
    shift
    local addr
    addr=$(lab_ip "$h")
    [ -n "${LISTEN_ANY:-}" ] && addr=0.0.0.0 # as a till does by default: any address it gets
    lab_bg "$h" "$LAB_DIR/$h/node.log" "$T" run "$(db "$h")" --listen "tcp://$addr:$PORT" "$@"
    NODES="$NODES $LAB_PID"
    eval "NODE_$h=$LAB_PID"
}
node() { eval "echo \$NODE_$1"; }
alive() { ! lab__gone "$(node "$1")"; }
drop_node() { NODES=$(echo " $NODES " | sed "s/ $(node "$1") / /"); }
stop_nodes() {
    local p rc
    for p in $NODES; do kill -TERM "$p" 2>/dev/null; done
    for p in $NODES; do
        lab_stop "$p" 10
        rc=$?
        [ $rc -eq 0 ] && ok || bad "node $p exited $rc on SIGTERM"
    done
    NODES=""
}
lab_on_down() { # stop the nodes cleanly first (lab_down then kills whatever is left)
    local p
    for p in $NODES; do kill -TERM "$p" 2>/dev/null; done
    for p in $NODES; do lab_stop "$p" 5; done
    NODES=""
}

# ---------------------------------------------------------------- sales
till_sales() {
    local i
    i=1
    while [ $i -le "$3" ]; do
        "$T" sql "$1" "INSERT INTO sales VALUES('$2-$5-$i', '$2', '$4', 1);
                       UPDATE products SET stock = stock - 1 WHERE id = '$4'" >/dev/null || return 1
        i=$((i + 1))
    done
}
sell() {
    lab_bg "$1" "$LAB_DIR/$1/sell.log" sh -c '. "$0" && T=$1 && shift && till_sales "$@"' \
        "$LAB_HOME/tills.sh" "$T" "$(db "$1")" "$@"
    SELLERS="$SELLERS $LAB_PID"
}
sell_now() { till_sales "$(db "$1")" "$@"; }
sellers_done() {
    local p
    for p in $SELLERS; do
        wait "$p" || bad "a sale failed: $(cat "$LAB_DIR"/h*/sell.log | tail -3)"
    done
    SELLERS=""
}
sold() {
    sellers_done
    P1=$((P1 - $1))
    P2=$((P2 - $2))
    NSALES=$((NSALES + $3))
}

# ---------------------------------------------------------------- content
q() { "$T" sql "$(db "$1")" "$2" 2>/dev/null; }
stock_of() { q "$1" "SELECT stock FROM products WHERE id = '$2'"; }
nsales_of() { q "$1" "SELECT count(*) FROM sales"; }
hash_of() { "$T" hash "$(db "$1")" 2>/dev/null; }
same() {
    local h
    [ $# -gt 0 ] || set -- $HOSTS
    for h in "$@"; do
        [ "$(q "$h" "SELECT (SELECT stock FROM products WHERE id = 'p1') || '|' ||
                            (SELECT stock FROM products WHERE id = 'p2') || '|' ||
                            (SELECT count(*) FROM sales)")" = "$P1|$P2|$NSALES" ] || return 1
    done
    same_hash "$@"
}
same_hash() {
    local h x hh
    hh=""
    for h in "$@"; do
        x=$(hash_of "$h")
        [ -n "$x" ] || return 1
        [ -z "$hh" ] || [ "$x" = "$hh" ] || return 1
        hh=$x
    done
}
converged() {
    local secs msg
    secs=$1
    msg=$2
    shift 2
    [ $# -gt 0 ] || set -- $HOSTS
    wait_for "$secs" same "$@" && ok && return 0
    bad "$msg"
    show "$@"
    return 1
}
show() {
    local h
    [ $# -gt 0 ] || set -- $HOSTS
    for h in "$@"; do
        echo "  $h: p1=$(stock_of "$h" p1) p2=$(stock_of "$h" p2) sales=$(nsales_of "$h") hash=$(hash_of "$h" | cut -c1-16) connected=$(nconn "$h")"
    done
}

# ---------------------------------------------------------------- status of a running node
status_of() { "$T" status "$(db "$1")" --json; }
peers_of() { status_of "$1" 2>/dev/null | tr -d ' \n' | sed 's/},{/}\n{/g; s/\[{/[\n{/g'; }
connected() { peers_of "$1" | grep "\"key\":\"$(key "$2")\"" | grep -q '"state":"connected"'; }
unreachable() { peers_of "$1" | grep "\"key\":\"$(key "$2")\"" | grep -q '"state":"unreachable"'; }
not_connected() { status_of "$1" >/dev/null 2>&1 && ! connected "$1" "$2"; }
mesh() {
    local a b
    [ $# -gt 0 ] || set -- $HOSTS
    for a in "$@"; do for b in "$@"; do
        [ "$a" = "$b" ] || connected "$a" "$b" || return 1
    done; done
}
nconn() { status_of "$1" 2>/dev/null | grep -c '"state": "connected"'; }
show_peers() {
    local h all
    all=""
    [ "${1:-}" != -a ] || { all=1; shift; }
    for h in "$@"; do
        echo "  $h:"
        if [ -n "$all" ]; then
            peers_of "$h" | grep '"key"'
        else
            peers_of "$h" | grep '"key"' | sed 's/.*"key":"\([0-9a-f]\{8\}\)[^"]*".*"state":"\([a-z]*\)".*/    \1.. \2/'
        fi
    done
}
check_held_refused() {
    local r
    status_of "$1" >"$LAB_DIR/st" 2>&1
    tr -d ' \n' <"$LAB_DIR/st" | grep -q '"held":0' && ok || bad "$1 holds batches: $(cat "$LAB_DIR/st")"
    REFUSED=$(tr -d ' \n' <"$LAB_DIR/st" | sed -n 's/.*"refused":{\([^}]*\)}.*/\1/p' | tr ',' '\n')
    r=$(echo "$REFUSED" | grep -v ':0$')
    [ -z "${2:-}" ] || r=$(echo "$r" | grep -v "^\"$2\":")
    [ -z "$r" ] && ok || bad "$1 refused: $r"
}
