#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/netlab/lossy.sh — a bad LAN: every IPv4 frame crossing the lab's bridge is dropped with
# probability 20 % or held 50 + uniform(0..50) ms, so frames arrive late, out of order (their
# delays cross) or not at all (lab_netem 50 50 20: tests/netlab/netem.c on NFQUEUE). Checks:
# ping's RTT rose by >= 100 ms and pings are lost; four tills of one shop, nodes started with no
# --peer, find each other over mDNS through it and all connect (40 s); 30 concurrent sales on
# each till (stock counter decrements) converge on all four within 60 s (equal `tillsync hash`,
# exact counters); a till cut off, both sides selling, converges within 60 s of the restore and
# is connected to all again (30 s); netem dropped 15-25 % of frames and released some out of
# arrival order (reordered > 0), TCP queued segments out of order and retransmitted; nothing
# held or refused (incomplete handshakes are shown); the nodes stop cleanly. Prints the
# timings and netem's counters. Takes about 30 s.
#
# usage: sudo sh tests/netlab/lossy.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.
# LAB_KEEP=1 keeps the lab dir (databases, node logs, netem.log); LAB_NETEM_SEED=N replays
# netem's random choices of a run (its seed is printed).

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab.sh"
. "$HERE/tills.sh"
tills_args "$@"
lab_require ping iptables cc nstat || exit 1

start_lab 4
HOSTS="h1 h2 h3 h4"
TILLS_PRICE=1
DELAY=50
JITTER=50
LOSS=20
LIMIT=60 # seconds to converge

# ---------------------------------------------------------------- tills of one shop
tills $HOSTS
catalogue h1

# ---------------------------------------------------------------- the bad network, seen by ping
# rtt H ADDR: "LOSS% MIN AVG" (whole numbers) of 60 pings 20 ms apart
rtt() {
    lab_exec "$1" ping -n -q -c 60 -i 0.02 -W 2 "$2" 2>/dev/null | awk '
        /packet loss/ { for (i = 1; i <= NF; i++) if ($i ~ /%$/) { l = $i; sub(/%/, "", l) } }
        /^rtt/ { split($4, a, "/"); mn = a[1]; av = a[2] }
        END { printf "%d %d %d\n", l, mn, av }'
}
set -- $(rtt h1 "$(lab_ip h2)")
base_avg=$3
lab_netem $DELAY $JITTER $LOSS || {
    bad "lab_netem $DELAY $JITTER $LOSS failed"
    finish
}
head -1 "$LAB_DIR/netem.log"
set -- $(rtt h1 "$(lab_ip h2)")
echo "ping h1 -> h2: $1% of 60 lost, rtt min $2 ms, avg $3 ms (without netem: avg $base_avg ms)"
[ "$3" -ge $((base_avg + 2 * DELAY)) ] && [ "$2" -ge $((2 * DELAY)) ] && ok ||
    bad "ping rtt min $2 / avg $3 ms under netem, want >= $((2 * DELAY)) and avg >= $((base_avg + 2 * DELAY))"
# each way 20 %: 1-0.8^2 = 36 % of pings expected
[ "$1" -gt 0 ] && [ "$1" -le 70 ] && ok || bad "$1% of pings lost under netem, want 1..70"

# ---------------------------------------------------------------- nodes: discovery through it
t0=$(ms)
for h in $HOSTS; do start_node $h -v; done
# every till counts 3 connected sessions; counts: "H:N " of each
all3() { for h in $HOSTS; do [ "$(nconn $h)" -ge 3 ] || return 1; done; }
counts() { for h in $HOSTS; do printf '%s:%s ' $h "$(nconn $h)"; done; }
if wait_for 40 all3; then
    ok
    echo "mDNS: all 4 tills found and connected to each other $(($(ms) - t0)) ms after start"
else
    bad "the tills did not all connect in 40 s: $(counts)"
fi
grep -q "mDNS: found" "$LAB_DIR"/h*/node.log && ok || bad "no node logged an mDNS discovery"

# ---------------------------------------------------------------- sales and convergence
ts=$(ms)
sell h1 30 p1 a
sell h2 30 p1 a
sell h3 30 p2 a
sell h4 30 p2 a
sold 60 60 120
tc=$(ms)
converged $LIMIT "no convergence $LIMIT s after 120 sales under netem (want p1=$P1 p2=$P2 sales=$NSALES):" $HOSTS &&
    echo "sales: 120 sales on 4 tills ($((tc - ts)) ms), converged $(($(ms) - tc)) ms after the last (p1=$P1 p2=$P2)"

# ---------------------------------------------------------------- a cut and restore under it
lab_cut h4 || bad "lab_cut h4 failed"
sell h1 10 p1 b
sell h4 10 p1 b
sold 20 0 20
sleep 3 # apart long enough for the heartbeats to expire
lab_restore h4 || bad "lab_restore h4 failed"
tr=$(ms)
converged $LIMIT "no convergence $LIMIT s after restoring h4 under netem (want p1=$P1 sales=$NSALES):" $HOSTS &&
    echo "cut + restore: h4 and the others converged $(($(ms) - tr)) ms after the restore (p1=$P1 sales=$NSALES)"
# converging needs one path to h4; all of its sessions should come back too
if wait_for 30 all3; then
    ok
    echo "cut + restore: all 4 tills connected to each other again $(($(ms) - tr)) ms after the restore"
else
    bad "30 s after restoring h4 not every till is connected to the 3 others: $(counts)"
fi

# ---------------------------------------------------------------- what the network did
# TCP in the hosts saw segments out of order (queued them) and retransmitted what was lost
tcp_stat() { # tcp_stat COUNTER: summed over the hosts
    s=0
    for h in $HOSTS; do
        v=$(lab_exec $h nstat -asz "$1" 2>/dev/null | awk -v k="$1" '$1 == k { print $2 }')
        s=$((s + ${v:-0}))
    done
    echo $s
}
ofo=$(tcp_stat TcpExtTCPOFOQueue)
retr=$(tcp_stat TcpRetransSegs)
lab_netem_clear
rcv=$(lab_netem_counter received)
drp=$(lab_netem_counter dropped)
rel=$(lab_netem_counter released)
reo=$(lab_netem_counter reordered)
uns=$(lab_netem_counter unseen)
echo "netem: received=$rcv dropped=$drp released=$rel reordered=$reo (seed $(sed -n 's/.*seed \([0-9]*\).*/\1/p' "$LAB_DIR/netem.log"))"
echo "tcp: $ofo segments queued out of order, $retr retransmitted (all hosts)"
[ "${rcv:-0}" -gt 1000 ] && ok || bad "netem saw only ${rcv:-0} frames"
[ "${reo:-0}" -gt 0 ] && ok || bad "netem released no frame out of arrival order"
[ "${drp:-0}" -gt 0 ] && [ $((drp * 100)) -ge $((rcv * 15)) ] && [ $((drp * 100)) -le $((rcv * 25)) ] && ok ||
    bad "netem dropped ${drp:-0} of ${rcv:-0} frames, want 15..25 %"
[ $((drp + rel)) -eq "${rcv:-0}" ] && ok || bad "netem: dropped + released != received"
[ "$uns" = 0 ] && ok || bad "netem: $uns frames passed the queue undelayed (its socket buffer overflowed)"
[ "$ofo" -gt 0 ] && ok || bad "TCP queued no segment out of order"
[ "$retr" -gt 0 ] && ok || bad "TCP retransmitted nothing"

# ---------------------------------------------------------------- nothing held or refused, clean stop
# A CURVE handshake that does not finish in 5 s (ZMQ_HANDSHAKE_IVL) fails and is redialled: with
# lost segments and RTOs of 1-3 s on young connections that happens here. The node counts those
# as handshakes_incomplete, not as refusals: nothing may be refused, and they are shown.
hs=""
for h in $HOSTS; do
    check_held_refused $h
    hs="$hs $h:$(tr -d ' \n' <"$LAB_DIR/st" | sed -n 's/.*"handshakes_incomplete":\([0-9]*\).*/\1/p')"
done
echo "inbound handshakes incomplete (timed out under loss):$hs"
stop_nodes
lab_down
finish
