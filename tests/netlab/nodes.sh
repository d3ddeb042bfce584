#!/bin/sh
# tests/netlab/nodes.sh — real `tillsync run` nodes on the network lab (tests/netlab/lab.sh):
# three hosts, each with a till enrolled in one shop, nodes started with static --peer addresses
# and --no-mdns (discovery.sh tests mDNS) (each node dials the nodes numbered below it; a full mesh
# at the start and the end). Sales on every till converge (equal `tillsync hash`, exact
# stock counter); a cut link (h3) shows as unreachable in `tillsync status --json` within 5 s on
# both sides, both sides sell while apart, and after the restore the peers are connected again
# within 5 s and everything converges with exact counters; with 20 % of frames dropped
# (lab_loss 20) concurrent sales still converge, also across a cut; h3 behind delay proxies
# (150 + 0..100 ms each way) connects and converges; tills that never met, each dialling the
# others (a full mesh of static peers), connect (NODES_SKIP_STRANGERS=1 skips that check), and so
# do tills that have met. Prints the timings.
#
# usage: sudo sh tests/netlab/nodes.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.
# LAB_KEEP=1 keeps the lab dir (databases, node logs) for a look afterwards.

T=${1:?usage: nodes.sh PATH/TO/tillsync}
case "$T" in /*) ;; *) T=$(cd "$(dirname "$T")" && pwd)/$(basename "$T") ;; esac
[ -x "$T" ] || { echo "nodes.sh: $T is not executable" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab.sh"
lab_require || exit 1

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
lab_up 3 || {
    bad "lab_up 3 failed"
    finish
}
HOSTS="h1 h2 h3"
db() { echo "$LAB_DIR/$1/till.db"; }
PORT=7400

# ---------------------------------------------------------------- tills of one shop
must() {
    "$@" >"$LAB_DIR/setup.out" 2>&1 || {
        bad "setup: $*: $(cat "$LAB_DIR/setup.out")"
        finish
    }
}
must "$T" shop create "$LAB_DIR/shop.key" --name "Lab Shop"
for h in $HOSTS; do
    must "$T" init "$(db $h)"
    must "$T" sql "$(db $h)" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER,
                              stock INTEGER NOT NULL DEFAULT 0);
                              CREATE TABLE sales(id TEXT PRIMARY KEY, till TEXT, item TEXT, qty INTEGER)"
    must "$T" replicate "$(db $h)" products --counter stock
    must "$T" replicate "$(db $h)" sales
    must "$T" enrol "$(db $h)" --shop-key "$LAB_DIR/shop.key" --name "till-$h"
done
# the catalogue is made once, on h1, and reaches the others by sync
must "$T" sql "$(db h1)" "INSERT INTO products VALUES('p1', 'tea', 240, 1000), ('p2', 'cake', 390, 500)"
key_of() { "$T" state "$(db $1)" --json | sed -n 's/.*"public_key": "\([0-9a-f]*\)".*/\1/p'; }
for h in $HOSTS; do
    k=$(key_of $h)
    [ ${#k} -eq 64 ] || { bad "no public key for $h: '$k'"; finish; }
    eval "KEY_$h=$k"
done
key() { eval "echo \$KEY_$1"; }

# ---------------------------------------------------------------- nodes, static peers
# start_nodes mesh|dag: every node dials the two others (mesh), or only those numbered below it
# (dag: h2 -> h1, h3 -> h1, h3 -> h2: one session a pair)
start_nodes() {
    for h in $HOSTS; do
        peers=""
        for o in $HOSTS; do
            [ $o = $h ] && continue
            [ "$1" = dag ] && [ "${o#h}" -gt "${h#h}" ] && continue
            peers="$peers --peer tcp://$(lab_ip $o):$PORT#$(key $o)"
        done
        lab_bg $h "$LAB_DIR/$h/node.log" "$T" run "$(db $h)" --listen "tcp://$(lab_ip $h):$PORT" --no-mdns $peers
        NODES="$NODES $LAB_PID"
        eval "NODE_$h=$LAB_PID"
    done
}
stop_nodes() {
    for p in $NODES; do kill -TERM "$p" 2>/dev/null; done
    for p in $NODES; do
        lab_stop "$p" 10
        rc=$?
        [ $rc -eq 0 ] && ok || bad "node $p exited $rc on SIGTERM"
    done
    NODES=""
}

# status helpers: JSON flattened, one peer object a line
peers_of() {
    "$T" status "$(db $1)" --json 2>/dev/null | tr -d ' \n' | sed 's/},{/}\n{/g; s/\[{/[\n{/g'
}
# connected H O: H's node has a connected session with O's key
connected() { peers_of "$1" | grep "\"key\":\"$(key $2)\"" | grep -q '"state":"connected"'; }
not_connected() { "$T" status "$(db $1)" --json >/dev/null 2>&1 && ! connected "$1" "$2"; }
# unreachable H O: H's node shows O's key as unreachable (it was connected; the link is lost)
unreachable() { peers_of "$1" | grep "\"key\":\"$(key $2)\"" | grep -q '"state":"unreachable"'; }
mesh() { # every pair connected both ways
    for a in $HOSTS; do for b in $HOSTS; do
        [ $a = $b ] || connected $a $b || return 1
    done; done
}

# Tills enrolled one by one know only their own certificate. Each given the others' addresses and
# keys (the static configuration of a shop, and what discovery will produce): they must connect.
if [ -n "${NODES_SKIP_STRANGERS:-}" ]; then
    echo "SKIP: full mesh of tills that never met (NODES_SKIP_STRANGERS set)"
else
    t0=$(ms)
    start_nodes mesh
    if wait_for 10 mesh; then
        ok
        echo "mesh of strangers: connected $(($(ms) - t0)) ms after start"
    else
        d=""
        for h in $HOSTS; do d="$d $h:$(peers_of $h | sed -n 's/.*"denied":\([0-9]*\).*/\1/p')"; done
        bad "tills that never met, each dialling the others (full mesh of static peers), did not connect in 10 s: handshakes denied (refused.denied:$d); each node knows the other's key from --peer but not its certificate, and its ZAP handler refuses it"
    fi
    stop_nodes
fi
# From here on each node dials only the nodes numbered below it: strangers meet that way.
t0=$(ms)
start_nodes dag
if wait_for 20 mesh; then
    ok
    echo "mesh: all 3 nodes connected to each other $(($(ms) - t0)) ms after start"
else
    bad "the nodes did not all connect in 20 s: $(for h in $HOSTS; do echo "$h:"; peers_of $h | grep key; done)"
    for h in $HOSTS; do tail -5 "$LAB_DIR/$h/node.log"; done
fi

# ---------------------------------------------------------------- sales and convergence
# sell H N ITEM: N sales of one ITEM on till H, each its own transaction, run in H's namespace
# in the background (the POS app of that till); the PID is added to SELLERS
SELLERS=""
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
# same A B...: those tills hold exactly the expected content, and hash equal
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
    for h in $HOSTS; do
        echo "  $h: p1=$(stock_of $h p1) p2=$(stock_of $h p2) sales=$(nsales_of $h) hash=$(hash_of $h | cut -c1-16)"
    done
}

ts=$(ms)
sell h1 10 p1 a
sell h2 10 p1 a
sell h3 10 p2 a
sellers_done
P1=$((P1 - 20))
P2=$((P2 - 10))
NSALES=$((NSALES + 30))
tc=$(ms)
if wait_for 20 same h1 h2 h3; then
    ok
    echo "sales: 30 sales on 3 tills ($((tc - ts)) ms), converged $(($(ms) - tc)) ms after the last"
else
    bad "no convergence 20 s after 30 sales (want p1=$P1 p2=$P2 sales=$NSALES):"
    show
fi

# ---------------------------------------------------------------- partition: h3 cut off
lab_cut h3 || bad "lab_cut h3 failed"
tc=$(ms)
cut_seen() {
    unreachable h1 h3 && unreachable h2 h3 && unreachable h3 h1 && unreachable h3 h2
}
if wait_for 5 cut_seen; then
    ok
    echo "partition: the cut seen on both sides after $(($(ms) - tc)) ms"
else
    bad "5 s after the cut some node does not show h3 (or h3 its peers) unreachable:"
    for h in $HOSTS; do echo "  $h:"; peers_of $h | grep '"key"'; done
fi
connected h1 h2 && connected h2 h1 && ok || bad "h1 and h2 lost each other when h3 was cut"
"$T" status "$(db h3)" --json | grep -q '"online": false' && ok || bad "h3 does not show itself offline"
# both sides sell while apart
sell h1 5 p1 b
sell h2 5 p2 b
sell h3 7 p1 b
sellers_done
P1=$((P1 - 12))
P2=$((P2 - 5))
NSALES=$((NSALES + 17))
# h1 and h2 converge with each other, and h3 cannot have their sales
h12() { [ "$(hash_of h1)" = "$(hash_of h2)" ] && [ "$(nsales_of h1)" = $((NSALES - 7)) ]; }
wait_for 10 h12 && ok || { bad "h1 and h2 did not converge while h3 was cut:"; show; }
[ "$(nsales_of h3)" = $((NSALES - 10)) ] && ok || bad "h3 has $(nsales_of h3) sales while cut, want $((NSALES - 10))"
# stay apart for a while: the dialers back off, heartbeats expire
sleep 3

lab_restore h3 || bad "lab_restore h3 failed"
tr=$(ms)
healed() {
    connected h1 h3 && connected h3 h1 && connected h2 h3 && connected h3 h2
}
if wait_for 5 healed; then
    ok
    echo "heal: h3 connected again on both sides $(($(ms) - tr)) ms after the restore"
else
    bad "5 s after the restore h3 is not connected both ways:"
    for h in $HOSTS; do echo "  $h:"; peers_of $h | grep '"key"'; done
fi
if wait_for 20 same h1 h2 h3; then
    ok
    echo "heal: all 3 tills converged $(($(ms) - tr)) ms after the restore (p1=$P1 p2=$P2 sales=$NSALES)"
else
    bad "no convergence 20 s after the restore (want p1=$P1 p2=$P2 sales=$NSALES):"
    show
fi

# ---------------------------------------------------------------- 20 % packet loss
lab_loss 20 || bad "lab_loss 20 failed"
ts=$(ms)
sell h1 30 p1 c
sell h2 30 p1 c
sell h3 30 p2 c
sellers_done
P1=$((P1 - 60))
P2=$((P2 - 30))
NSALES=$((NSALES + 90))
tc=$(ms)
if wait_for 60 same h1 h2 h3; then
    ok
    echo "loss 20%: 90 sales ($((tc - ts)) ms), converged $(($(ms) - tc)) ms after the last (p1=$P1 p2=$P2 sales=$NSALES)"
else
    bad "with 20 % loss no convergence 60 s after 90 sales (want p1=$P1 p2=$P2 sales=$NSALES):"
    show
fi
drops=$(ip netns exec "$LAB_BR" nft list table bridge lab_loss 2>/dev/null |
    sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
echo "loss 20%: $drops frames dropped"
[ "${drops:-0}" -gt 0 ] && ok || bad "the loss rule dropped nothing"
# a cut under loss, healed under loss
lab_cut h3
sell h1 5 p2 d
sell h3 5 p2 d
sellers_done
P2=$((P2 - 10))
NSALES=$((NSALES + 10))
sleep 2
lab_restore h3
tr=$(ms)
if wait_for 60 same h1 h2 h3; then
    ok
    echo "loss 20% + cut: converged $(($(ms) - tr)) ms after the restore"
else
    bad "with 20 % loss no convergence 60 s after restoring h3 (want p1=$P1 p2=$P2 sales=$NSALES):"
    show
fi
lab_loss_clear

# ---------------------------------------------------------------- a slow link (delay proxies)
# h3 reaches h1 and h2 only through TCP proxies in its namespace that hold each chunk 150 ms
# (+ 0..100 ms) each way: HELLO, batches, ACKs and heartbeats all cross them.
DELAY=150
JITTER=100
lab_stop "$NODE_h3" 10 && ok || bad "node h3 did not stop cleanly"
NODES=$(echo " $NODES " | sed "s/ $NODE_h3 / /")
if lab_delay h3 127.0.0.1:7501 "$(lab_ip h1):$PORT" $DELAY $JITTER &&
    lab_delay h3 127.0.0.1:7502 "$(lab_ip h2):$PORT" $DELAY $JITTER; then
    ok
    t0=$(ms)
    lab_bg h3 "$LAB_DIR/h3/node.log" "$T" run "$(db h3)" --listen "tcp://$(lab_ip h3):$PORT" --no-mdns \
        --peer "tcp://127.0.0.1:7501#$(key h1)" --peer "tcp://127.0.0.1:7502#$(key h2)"
    NODE_h3=$LAB_PID
    NODES="$NODES $LAB_PID"
    if wait_for 10 healed; then
        ok
        echo "slow link (${DELAY}+0..${JITTER} ms each way): h3 connected $(($(ms) - t0)) ms after start"
    else
        bad "h3 behind delay proxies did not connect in 10 s: $(tail -3 "$LAB_DIR/h3/node.log")"
    fi
    # one sale on h1: how long until h3 has it
    must "$T" sql "$(db h1)" "INSERT INTO sales VALUES('h1-slow-0', 'h1', 'p1', 1);
                              UPDATE products SET stock = stock - 1 WHERE id = 'p1'"
    P1=$((P1 - 1))
    NSALES=$((NSALES + 1))
    ts=$(ms)
    has_it() { [ "$(nsales_of h3)" = "$NSALES" ]; }
    wait_for 10 has_it && ok || bad "h1's sale did not reach h3 over the slow link in 10 s"
    lat=$(($(ms) - ts))
    echo "slow link: h1's sale reached h3 in $lat ms"
    [ "$lat" -ge "$DELAY" ] && ok || bad "h1's sale reached h3 in $lat ms, less than the proxy delay: not through the proxy?"
    sell h1 10 p1 f
    sell h3 10 p2 f
    sellers_done
    P1=$((P1 - 10))
    P2=$((P2 - 10))
    NSALES=$((NSALES + 20))
    tc=$(ms)
    if wait_for 20 same h1 h2 h3; then
        ok
        echo "slow link: 20 sales on h1 and h3 converged $(($(ms) - tc)) ms after the last"
    else
        bad "no convergence over the slow link in 20 s (want p1=$P1 p2=$P2 sales=$NSALES):"
        show
    fi
else
    bad "lab_delay failed"
fi

# ---------------------------------------------------------------- nothing refused, clean stop
for h in $HOSTS; do
    "$T" status "$(db $h)" --json >"$LAB_DIR/st" 2>&1
    tr -d ' \n' <"$LAB_DIR/st" | grep -q '"held":0' && ok || bad "$h holds batches: $(cat "$LAB_DIR/st")"
    r=$(tr -d ' \n' <"$LAB_DIR/st" | sed -n 's/.*"refused":{\([^}]*\)}.*/\1/p' | tr ',' '\n' | grep -v ':0$')
    [ -z "$r" ] && ok || bad "$h refused: $r"
done
stop_nodes
for h in $HOSTS; do [ ! -e "$(db $h).node" ] && ok || bad "$h's node left its status file"; done
# ---------------------------------------------------------------- a full mesh, once they have met
# Every till now holds the others' certificates (CERTS travelled): a full mesh of static peers.
t0=$(ms)
start_nodes mesh
if wait_for 10 mesh; then
    ok
    echo "mesh of acquainted tills: connected $(($(ms) - t0)) ms after start"
else
    bad "tills that know each other, in a full mesh of static peers, did not connect in 10 s"
fi
sell h2 3 p1 e
sellers_done
P1=$((P1 - 3))
NSALES=$((NSALES + 3))
wait_for 10 same h1 h2 h3 && ok || { bad "the full mesh did not converge:"; show; }
stop_nodes
lab_down
finish
