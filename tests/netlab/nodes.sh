#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
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

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab.sh"
. "$HERE/tills.sh"
tills_args "$@"
lab_require || exit 1

start_lab 3
HOSTS="h1 h2 h3"
TILLS_PRICE=1

# ---------------------------------------------------------------- tills of one shop
tills $HOSTS
# the catalogue is made once, on h1, and reaches the others by sync
catalogue h1

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
        start_node $h --no-mdns $peers
    done
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
ts=$(ms)
sell h1 10 p1 a
sell h2 10 p1 a
sell h3 10 p2 a
sold 20 10 30
tc=$(ms)
converged 20 "no convergence 20 s after 30 sales (want p1=$P1 p2=$P2 sales=$NSALES):" h1 h2 h3 &&
    echo "sales: 30 sales on 3 tills ($((tc - ts)) ms), converged $(($(ms) - tc)) ms after the last"

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
    show_peers -a $HOSTS
fi
connected h1 h2 && connected h2 h1 && ok || bad "h1 and h2 lost each other when h3 was cut"
status_of h3 | grep -q '"online": false' && ok || bad "h3 does not show itself offline"
# both sides sell while apart
sell h1 5 p1 b
sell h2 5 p2 b
sell h3 7 p1 b
sold 12 5 17
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
    show_peers -a $HOSTS
fi
converged 20 "no convergence 20 s after the restore (want p1=$P1 p2=$P2 sales=$NSALES):" h1 h2 h3 &&
    echo "heal: all 3 tills converged $(($(ms) - tr)) ms after the restore (p1=$P1 p2=$P2 sales=$NSALES)"

# ---------------------------------------------------------------- 20 % packet loss
lab_loss 20 || bad "lab_loss 20 failed"
ts=$(ms)
sell h1 30 p1 c
sell h2 30 p1 c
sell h3 30 p2 c
sold 60 30 90
tc=$(ms)
converged 60 "with 20 % loss no convergence 60 s after 90 sales (want p1=$P1 p2=$P2 sales=$NSALES):" h1 h2 h3 &&
    echo "loss 20%: 90 sales ($((tc - ts)) ms), converged $(($(ms) - tc)) ms after the last (p1=$P1 p2=$P2 sales=$NSALES)"
drops=$(ip netns exec "$LAB_BR" nft list table bridge lab_loss 2>/dev/null |
    sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
echo "loss 20%: $drops frames dropped"
[ "${drops:-0}" -gt 0 ] && ok || bad "the loss rule dropped nothing"
# a cut under loss, healed under loss
lab_cut h3
sell h1 5 p2 d
sell h3 5 p2 d
sold 0 10 10
sleep 2
lab_restore h3
tr=$(ms)
converged 60 "with 20 % loss no convergence 60 s after restoring h3 (want p1=$P1 p2=$P2 sales=$NSALES):" h1 h2 h3 &&
    echo "loss 20% + cut: converged $(($(ms) - tr)) ms after the restore"
lab_loss_clear

# ---------------------------------------------------------------- a slow link (delay proxies)
# h3 reaches h1 and h2 only through TCP proxies in its namespace that hold each chunk 150 ms
# (+ 0..100 ms) each way: HELLO, batches, ACKs and heartbeats all cross them.
DELAY=150
JITTER=100
lab_stop "$(node h3)" 10 && ok || bad "node h3 did not stop cleanly"
drop_node h3
if lab_delay h3 127.0.0.1:7501 "$(lab_ip h1):$PORT" $DELAY $JITTER &&
    lab_delay h3 127.0.0.1:7502 "$(lab_ip h2):$PORT" $DELAY $JITTER; then
    ok
    t0=$(ms)
    start_node h3 --no-mdns --peer "tcp://127.0.0.1:7501#$(key h1)" --peer "tcp://127.0.0.1:7502#$(key h2)"
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
    sold 10 10 20
    tc=$(ms)
    converged 20 "no convergence over the slow link in 20 s (want p1=$P1 p2=$P2 sales=$NSALES):" h1 h2 h3 &&
        echo "slow link: 20 sales on h1 and h3 converged $(($(ms) - tc)) ms after the last"
else
    bad "lab_delay failed"
fi

# ---------------------------------------------------------------- nothing refused, clean stop
for h in $HOSTS; do check_held_refused $h; done
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
sold 3 0 3
converged 10 "the full mesh did not converge:" h1 h2 h3
stop_nodes
lab_down
finish
