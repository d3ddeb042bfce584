#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
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

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab.sh"
. "$HERE/tills.sh"
tills_args "$@"
lab_require avahi-browse || exit 1

start_lab 5
ALL="h1 h2 h3 h4 h5"

# ---------------------------------------------------------------- tills of one shop
# h1, h3: their own databases. h2, h4, h5: three databases made first, then given out by key
# (smallest to h4, middle to h2, largest to h5), so which side dials is known (the till with the
# smaller key dials).
for c in h1 h3 c1 c2 c3; do
    mkdir -p "$LAB_DIR/db-$c"
    eval "DB_$c=\$LAB_DIR/db-$c/till.db"
    must "$T" init "$(db $c)"
done
order=$(for c in c1 c2 c3; do echo "$(key_of $c) $c"; done | sort | cut -d' ' -f2)
set -- $order
DB_h4=$(db $1)
DB_h2=$(db $2)
DB_h5=$(db $3)
tills $ALL
if [ "$(printf '%s\n' "$(key h4)" "$(key h2)" "$(key h5)" | sort | tr '\n' ' ')" = "$(key h4) $(key h2) $(key h5) " ]; then
    ok
else
    bad "setup: keys not ordered h4 < h2 < h5"
fi
catalogue h1

# ---------------------------------------------------------------- helpers
# log_count H TEXT: lines of H's node log containing TEXT
log_count() { grep -c -- "$2" "$LAB_DIR/$1/node.log" 2>/dev/null; }
# sessions H: sessions H's node has opened so far ("connected to ..." lines)
sessions() { log_count $1 "INFO  connected to "; }
losses() { echo $(($(log_count $1 "disconnected from ") + $(log_count $1 "taking the link as lost"))); }
# h2's service as h1's avahi sees it: a resolved row with h2's address, port 7400 and key
h2_listed_on_h1() {
    lab_exec h1 avahi-browse -rpt _tillsync._tcp 2>/dev/null | grep '^=' |
        grep ";$(lab_ip h2);7400;" | grep -q "\"pk=$(key h2)\""
}
h2_unlisted_on_h1() {
    out=$(lab_exec h1 avahi-browse -rpt _tillsync._tcp 2>/dev/null) || return 1
    ! echo "$out" | grep -q "\"pk=$(key h2)\""
}
# linked A B MESSAGE: A connected to B within 20 s, and B to A within 5 s more: ok; or FAIL
# MESSAGE and both their peers (h2's first), status 1
linked() {
    wait_for 20 connected $1 $2 && wait_for 5 connected $2 $1 && ok && return 0
    bad "$3"
    show_peers $(printf '%s\n' $1 $2 | sort)
    return 1
}
# dialled A B: A's session with B is one A opened (it has the smaller key)
dialled() {
    peers_of $1 | grep "\"key\":\"$(key $2)\"" | grep -q '"direction":"outbound"' && ok ||
        bad "$1 did not dial $2 itself (it should: its key is the smaller): $(peers_of $1 | grep "$(key $2)")"
}

# ---------------------------------------------------------------- h1..h3 meet over mDNS
t0=$(ms)
for h in h1 h2 h3; do start_node $h -v; done
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
sold 10 5 15
converged 20 "h1..h3 did not converge before the stop:" h1 h2 h3
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
# and its status says so (within a second: the status file is rewritten within 100 ms of a change)
says_down() { "$T" status "$(db h2)" | grep -q "^mDNS: no avahi daemon reachable"; }
wait_for 2 says_down && ok || bad "h2's tillsync status does not show the daemon gone: $("$T" status "$(db h2)" | grep mDNS)"
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
sold 20 10 30
tc=$(ms)
converged 20 "sales during h2's avahi outage did not converge in 20 s (want p1=$P1 p2=$P2 sales=$NSALES):" h1 h2 h3 &&
    echo "outage: 30 sales on h1..h3 converged $(($(ms) - tc)) ms after the last"
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
says_up() { "$T" status "$(db h2)" | grep -q '^mDNS: published as "'; }
wait_for 5 says_up && ok || bad "h2's tillsync status does not show it published again: $("$T" status "$(db h2)" | grep mDNS)"
if wait_for 10 h2_listed_on_h1; then
    ok
    echo "restart: h1 lists h2's service (address, port, pk) again $(($(ms) - tu)) ms after the daemon was up"
else
    bad "h1's avahi does not list h2's service (with its key) 10 s after h2's daemon restarted: $(lab_exec h1 avahi-browse -rpt _tillsync._tcp 2>&1 | tail -5)"
fi

# ---------------------------------------------------------------- new tills meet h2
t4=$(ms)
start_node h4 -v
start_node h5 -v
linked h4 h2 "h4, started after h2's daemon restart, did not connect to h2 in 20 s:" &&
    echo "restart: h4 (new, dials h2) connected to h2 $(($(ms) - t4)) ms after it started"
dialled h4 h2
linked h2 h5 "h2 did not connect to h5 (started after h2's daemon restart) in 20 s:" &&
    echo "restart: h2 found h5 (new) and connected to it $(($(ms) - t4)) ms after h5 started"
dialled h2 h5
wait_for 20 mesh $ALL && ok || { bad "the five tills are not all connected to each other:"; show_peers $ALL; }
sell h2 5 p1 c
sell h4 5 p2 c
sell h5 5 p1 c
sold 10 5 15
tc=$(ms)
converged 20 "the five tills did not converge in 20 s (want p1=$P1 p2=$P2 sales=$NSALES):" $ALL &&
    echo "restart: all five tills converged $(($(ms) - tc)) ms after the last sale (p1=$P1 p2=$P2 sales=$NSALES)"

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
    drop_node $h
done
lab_down
finish
