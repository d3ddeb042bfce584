#!/bin/sh
# tests/netlab/avahi_restart.sh — the avahi daemon of one host is stopped and restarted: that
# till keeps its connections and re-publishes. Five hosts, tills of one shop, every node started
# with NO --peer (mDNS only, like discovery.sh). h1..h3 find each other and converge; then h2's
# avahi-daemon is stopped:
#   - h2's node logs that the daemon went away and keeps running; h2 keeps its sessions with h1
#     and h3 (connected on both sides for 5 s, no session lost or redone), and sales on all three
#     tills during the outage converge with exact counters;
#   - h2's service disappears from h1's mDNS view (the daemon's goodbye), so seeing it again below
#     proves a new publication.
# h2's avahi-daemon is started again:
#   - h2's node logs that the daemon is reachable again; h1 (avahi-browse) lists h2's service
#     again, with h2's address, port and key (TXT pk) within a few seconds; sessions still kept;
#   - two new tills, started only now: h4 (its key smaller than h2's, so h4 dials h2: h4 found h2's
#     re-published service) and h5 (its key larger, so h2 dials h5: h2 browses again) connect to
#     h2 and to the others, and all five converge with exact counters;
#   - SIGTERM stops every node with status 0 (none crashed).
#
# usage: sudo sh tests/netlab/avahi_restart.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.
# LAB_KEEP=1 keeps the lab dir (databases, node and avahi logs) for a look afterwards.

T=${1:?usage: avahi_restart.sh PATH/TO/tillsync}
case "$T" in /*) ;; *) T=$(cd "$(dirname "$T")" && pwd)/$(basename "$T") ;; esac
[ -x "$T" ] || { echo "avahi_restart.sh: $T is not executable" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab.sh"
lab_require avahi-browse || exit 1

pass=0
fail=0
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
# wait_for SECONDS COMMAND...: polls every 100 ms
wait_for() {
    lim=$(($1 * 10))
    shift
    i=0
    while [ $i -lt $lim ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
NODES=""
lab_on_down() { # stop the nodes cleanly first (lab_down then kills whatever is left)
    for p in $NODES; do kill -TERM "$p" 2>/dev/null; done
    for p in $NODES; do lab_stop "$p" 5; done
    NODES=""
}
lab_up 5 || {
    bad "lab_up 5 failed"
    finish
}
ALL="h1 h2 h3 h4 h5"
must() {
    "$@" >"$LAB_DIR/setup.out" 2>&1 || {
        bad "setup: $*: $(cat "$LAB_DIR/setup.out")"
        finish
    }
}
keyof() { "$T" state "$1" --json | sed -n 's/.*"public_key": "\([0-9a-f]*\)".*/\1/p'; }

# ---------------------------------------------------------------- tills of one shop
# h1, h3: their own databases. h2, h4, h5: three databases made first, then given out by key
# (smallest to h4, middle to h2, largest to h5), so which side dials is known (the till with the
# smaller key dials).
must "$T" shop create "$LAB_DIR/shop.key" --name "Lab Shop"
for c in h1 h3 c1 c2 c3; do
    mkdir -p "$LAB_DIR/db-$c"
    must "$T" init "$LAB_DIR/db-$c/till.db"
done
order=$(for c in c1 c2 c3; do echo "$(keyof "$LAB_DIR/db-$c/till.db") $c"; done | sort | cut -d' ' -f2)
set -- $order
DB_h1="$LAB_DIR/db-h1/till.db"
DB_h3="$LAB_DIR/db-h3/till.db"
DB_h4="$LAB_DIR/db-$1/till.db"
DB_h2="$LAB_DIR/db-$2/till.db"
DB_h5="$LAB_DIR/db-$3/till.db"
db() { eval "echo \$DB_$1"; }
for h in $ALL; do
    must "$T" sql "$(db $h)" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT,
                              stock INTEGER NOT NULL DEFAULT 0);
                              CREATE TABLE sales(id TEXT PRIMARY KEY, till TEXT, item TEXT, qty INTEGER)"
    must "$T" replicate "$(db $h)" products --counter stock
    must "$T" replicate "$(db $h)" sales
    must "$T" enrol "$(db $h)" --shop-key "$LAB_DIR/shop.key" --name "till-$h"
    k=$(keyof "$(db $h)")
    [ ${#k} -eq 64 ] || { bad "no public key for $h: '$k'"; finish; }
    eval "KEY_$h=$k"
done
key() { eval "echo \$KEY_$1"; }
if [ "$(printf '%s\n' "$(key h4)" "$(key h2)" "$(key h5)" | sort | tr '\n' ' ')" = "$(key h4) $(key h2) $(key h5) " ]; then
    ok
else
    bad "setup: keys not ordered h4 < h2 < h5"
fi
must "$T" sql "$(db h1)" "INSERT INTO products VALUES('p1', 'tea', 1000), ('p2', 'cake', 500)"

# ---------------------------------------------------------------- helpers
start_node() {
    lab_bg $1 "$LAB_DIR/$1/node.log" "$T" run "$(db $1)" --listen "tcp://$(lab_ip $1):7400" -v
    NODES="$NODES $LAB_PID"
    eval "NODE_$1=$LAB_PID"
}
node() { eval "echo \$NODE_$1"; }
alive() { ! lab__gone "$(node $1)"; }
# status, one peer object a line
peers_of() {
    "$T" status "$(db $1)" --json 2>/dev/null | tr -d ' \n' | sed 's/},{/}\n{/g; s/\[{/[\n{/g'
}
# connected H O: H's node has a connected session with O's key
connected() { peers_of "$1" | grep "\"key\":\"$(key $2)\"" | grep -q '"state":"connected"'; }
# mesh H...: every pair of them connected, both ways
mesh() {
    for a in "$@"; do for b in "$@"; do
        [ $a = $b ] || connected $a $b || return 1
    done; done
}
show_peers() {
    for h in "$@"; do
        echo "  $h:"
        peers_of $h | grep '"key"' | sed 's/.*"key":"\([0-9a-f]\{8\}\)[^"]*".*"state":"\([a-z]*\)".*/    \1.. \2/'
    done
}
# log_count H TEXT: lines of H's node log containing TEXT
log_count() { grep -c -- "$2" "$LAB_DIR/$1/node.log" 2>/dev/null; }
# sessions H: sessions H's node has opened so far ("connected to ..." lines)
sessions() { log_count $1 "INFO  connected to "; }
losses() { echo $(($(log_count $1 "disconnected from ") + $(log_count $1 "taking the link as lost"))); }

SELLERS=""
# sell H N ITEM TAG: N sales of ITEM on till H, each its own transaction, in the background
sell() {
    lab_bg "$1" "$LAB_DIR/$1/sell.log" sh -c '
        T=$1; DB=$2; h=$3; n=$4; item=$5; tag=$6; i=1
        while [ $i -le $n ]; do
            "$T" sql "$DB" "INSERT INTO sales VALUES('"'"'$h-$tag-$i'"'"', '"'"'$h'"'"', '"'"'$item'"'"', 1);
                            UPDATE products SET stock = stock - 1 WHERE id = '"'"'$item'"'"'" || exit 1
            i=$((i + 1))
        done' - "$T" "$(db $1)" "$1" "$2" "$3" "$4"
    SELLERS="$SELLERS $LAB_PID"
}
sellers_done() {
    for p in $SELLERS; do
        wait "$p" || bad "a sale failed: $(cat "$LAB_DIR"/h*/sell.log | tail -3)"
    done
    SELLERS=""
}
P1=1000
P2=500
NSALES=0
stock_of() { "$T" sql "$(db $1)" "SELECT stock FROM products WHERE id = '$2'" 2>/dev/null; }
nsales_of() { "$T" sql "$(db $1)" "SELECT count(*) FROM sales" 2>/dev/null; }
hash_of() { "$T" hash "$(db $1)" 2>/dev/null; }
# same H...: those tills hold exactly the expected content, and hash equal
same() {
    hh=""
    for h in "$@"; do
        [ "$(stock_of $h p1)" = "$P1" ] && [ "$(stock_of $h p2)" = "$P2" ] &&
            [ "$(nsales_of $h)" = "$NSALES" ] || return 1
        x=$(hash_of $h)
        [ -n "$x" ] || return 1
        [ -z "$hh" ] || [ "$x" = "$hh" ] || return 1
        hh=$x
    done
}
show() {
    for h in "$@"; do
        echo "  $h: p1=$(stock_of $h p1) p2=$(stock_of $h p2) sales=$(nsales_of $h) hash=$(hash_of $h | cut -c1-16)"
    done
}
# h2's service as h1's avahi sees it: a resolved row with h2's address, port 7400 and key
h2_listed_on_h1() {
    lab_exec h1 avahi-browse -rpt _tillsync._tcp 2>/dev/null | grep '^=' |
        grep ";$(lab_ip h2);7400;" | grep -q "\"pk=$(key h2)\""
}
h2_unlisted_on_h1() {
    out=$(lab_exec h1 avahi-browse -rpt _tillsync._tcp 2>/dev/null) || return 1
    ! echo "$out" | grep -q "\"pk=$(key h2)\""
}

# ---------------------------------------------------------------- h1..h3 meet over mDNS
t0=$(ms)
for h in h1 h2 h3; do start_node $h; done
if wait_for 30 mesh h1 h2 h3; then
    ok
    echo "start: h1..h3 connected to each other $(($(ms) - t0)) ms after the nodes started"
else
    bad "h1..h3 did not connect in 30 s:"
    show_peers h1 h2 h3
fi
sell h1 5 p1 a
sell h2 5 p2 a
sell h3 5 p1 a
sellers_done
P1=$((P1 - 10))
P2=$((P2 - 5))
NSALES=$((NSALES + 15))
wait_for 20 same h1 h2 h3 && ok || { bad "h1..h3 did not converge before the stop:"; show h1 h2 h3; }
wait_for 10 h2_listed_on_h1 && ok || bad "h1's avahi does not list h2's service before the stop"
[ "$(log_count h2 "mDNS: no avahi daemon reachable")" = 0 ] && ok ||
    bad "h2's node logged the daemon missing before it was stopped"
up0=$(log_count h2 "mDNS: avahi daemon reachable")
for h in h1 h2 h3; do
    eval "S0_$h=$(sessions $h)"
    eval "L0_$h=$(losses $h)"
done

# ---------------------------------------------------------------- h2's avahi-daemon stops
avahi_pid=$(cat "$LAB_DIR/h2/avahi.pid")
ts=$(ms)
lab_avahi_stop h2
lab__gone "$avahi_pid" && ok || bad "h2's avahi-daemon ($avahi_pid) did not stop"
down_logged() { [ "$(log_count h2 "mDNS: no avahi daemon reachable")" -ge 1 ]; }
if wait_for 5 down_logged; then
    ok
    echo "stop: h2's node logged the daemon gone $(($(ms) - ts)) ms after the stop"
else
    bad "h2's node did not log \"mDNS: no avahi daemon reachable\" within 5 s of the stop: $(tail -3 "$LAB_DIR/h2/node.log")"
fi
# sales on every till during the outage
sell h1 10 p1 b
sell h2 10 p2 b
sell h3 10 p1 b
# for 5 s after the stop: h2's node alive, connected to h1 and h3, and they to it
kept=1
while [ $(($(ms) - ts)) -lt 5000 ]; do
    if ! alive h2; then
        bad "h2's node died after its avahi-daemon stopped: $(tail -5 "$LAB_DIR/h2/node.log")"
        kept=0
        break
    fi
    if ! { connected h2 h1 && connected h2 h3 && connected h1 h2 && connected h3 h2; }; then
        bad "$(($(ms) - ts)) ms after h2's avahi-daemon stopped, a session of h2 is not connected:"
        show_peers h1 h2 h3
        kept=0
        break
    fi
    sleep 0.3
done
[ $kept = 1 ] && ok
sellers_done
P1=$((P1 - 20))
P2=$((P2 - 10))
NSALES=$((NSALES + 30))
tc=$(ms)
if wait_for 20 same h1 h2 h3; then
    ok
    echo "outage: 30 sales on h1..h3 converged $(($(ms) - tc)) ms after the last"
else
    bad "sales during h2's avahi outage did not converge in 20 s (want p1=$P1 p2=$P2 sales=$NSALES):"
    show h1 h2 h3
fi
wait_for 5 h2_unlisted_on_h1 && ok || bad "h1's avahi still lists h2's service with its daemon stopped"
# still down: no "reachable" line yet
[ "$(log_count h2 "mDNS: avahi daemon reachable")" = "$up0" ] && ok ||
    bad "h2's node logged the daemon reachable while it was stopped"

# ---------------------------------------------------------------- h2's avahi-daemon starts again
tr=$(ms)
lab_avahi_start h2 && ok || bad "lab_avahi_start h2 failed: $(tail -3 "$LAB_DIR/h2/avahi.log")"
tu=$(ms)
up_logged() { [ "$(log_count h2 "mDNS: avahi daemon reachable")" -gt "$up0" ]; }
if wait_for 10 up_logged; then
    ok
    echo "restart: h2's node logged the daemon reachable $(($(ms) - tu)) ms after it was up ($((tu - tr)) ms to start it)"
else
    bad "h2's node did not log \"mDNS: avahi daemon reachable\" within 10 s of the restart: $(tail -3 "$LAB_DIR/h2/node.log")"
fi
if wait_for 10 h2_listed_on_h1; then
    ok
    echo "restart: h1 lists h2's service (address, port, pk) again $(($(ms) - tu)) ms after the daemon was up"
else
    bad "h1's avahi does not list h2's service (with its key) 10 s after h2's daemon restarted: $(lab_exec h1 avahi-browse -rpt _tillsync._tcp 2>&1 | tail -5)"
fi

# ---------------------------------------------------------------- new tills meet h2
t4=$(ms)
start_node h4
start_node h5
if wait_for 20 connected h4 h2 && wait_for 5 connected h2 h4; then
    ok
    echo "restart: h4 (new, dials h2) connected to h2 $(($(ms) - t4)) ms after it started"
else
    bad "h4, started after h2's daemon restart, did not connect to h2 in 20 s:"
    show_peers h2 h4
fi
peers_of h4 | grep "\"key\":\"$(key h2)\"" | grep -q '"direction":"outbound"' && ok ||
    bad "h4 did not dial h2 itself (it should: its key is the smaller): $(peers_of h4 | grep "$(key h2)")"
if wait_for 20 connected h2 h5 && wait_for 5 connected h5 h2; then
    ok
    echo "restart: h2 found h5 (new) and connected to it $(($(ms) - t4)) ms after h5 started"
else
    bad "h2 did not connect to h5 (started after h2's daemon restart) in 20 s:"
    show_peers h2 h5
fi
peers_of h2 | grep "\"key\":\"$(key h5)\"" | grep -q '"direction":"outbound"' && ok ||
    bad "h2 did not dial h5 itself (it should: its key is the smaller): $(peers_of h2 | grep "$(key h5)")"
wait_for 20 mesh $ALL && ok || { bad "the five tills are not all connected to each other:"; show_peers $ALL; }
sell h2 5 p1 c
sell h4 5 p2 c
sell h5 5 p1 c
sellers_done
P1=$((P1 - 10))
P2=$((P2 - 5))
NSALES=$((NSALES + 15))
tc=$(ms)
if wait_for 20 same $ALL; then
    ok
    echo "restart: all five tills converged $(($(ms) - tc)) ms after the last sale (p1=$P1 p2=$P2 sales=$NSALES)"
else
    bad "the five tills did not converge in 20 s (want p1=$P1 p2=$P2 sales=$NSALES):"
    show $ALL
fi

# ---------------------------------------------------------------- sessions kept, clean stop
for h in h1 h2 h3; do
    eval "s0=\$S0_$h l0=\$L0_$h"
    # h1..h3 opened sessions only with the new tills since: none with each other again
    s=$(sessions $h)
    l=$(losses $h)
    [ "$l" = "$l0" ] && ok || bad "$h lost $((l - l0)) session(s) during h2's avahi outage and restart"
    [ "$s" = $((s0 + 2)) ] && ok ||
        bad "$h opened $((s - s0)) session(s) since h2's daemon stopped, want 2 (h4, h5): $(grep "connected to" "$LAB_DIR/$h/node.log" | tail -4)"
done
grep -q "ERROR" "$LAB_DIR/h2/node.log" && bad "h2's node logged errors: $(grep ERROR "$LAB_DIR/h2/node.log" | head -3)" || ok
for h in $ALL; do
    p=$(node $h)
    alive $h || { bad "$h's node is not running: $(tail -3 "$LAB_DIR/$h/node.log")"; continue; }
    kill -TERM "$p"
    lab_stop "$p" 10
    rc=$?
    [ $rc -eq 0 ] && ok || bad "$h's node exited $rc on SIGTERM"
    NODES=$(echo " $NODES " | sed "s/ $p / /")
done
lab_down
finish
