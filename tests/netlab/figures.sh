#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/netlab/figures.sh — measures the two figures the README quotes, as medians over ROUNDS
# independent rounds (default 10), each in a fresh lab (tests/netlab/lab.sh) with fresh databases:
#
#   first sync: four tills of one shop, nodes started with NO --peer (mDNS only). A sale committed
#     on h1 just before the nodes start (as discovery.sh does); the time from starting the nodes
#     until that sale is in all four databases.
#   heal: the same four tills, all connected and converged. The LAN is cut in two halves (h1 h2 |
#     h3 h4: an nftables rule in the bridge drops every frame between the halves, as if the link
#     between two switches were pulled); once each side sees the other as not connected, both
#     sides sell, the halves converge among themselves, they stay apart 3 s more (as nodes.sh's
#     partition does), then the rule goes: the time from the restore until all four hash equal
#     with exact counters.
#
# Prints each round's values, then `first sync: median X s (min .. max) over N runs` and the same
# for heal. Polls every 50 ms (each poll reads the four databases with the CLI, ~10 ms a call).
# Exits 1 if any round fails (no first sync within 30 s, no convergence within 30 s of the heal).
# Takes about 20 s a round. Run by hand, not in CI; another lab running at the same time (the
# machine has 2 cores) slows nodes down and makes the figures worse.
#
# usage: sudo [ROUNDS=N] sh tests/netlab/figures.sh PATH/TO/tillsync
# LAB_KEEP=1 keeps the lab dir of a failed round (logs, databases).

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab.sh"
. "$HERE/tills.sh"
tills_args "$@"
ROUNDS=${ROUNDS:-10}
case "$ROUNDS" in '' | *[!0-9]* | 0) echo "figures.sh: ROUNDS must be a positive number" >&2; exit 1 ;; esac
lab_require || exit 1

HOSTS="h1 h2 h3 h4"
WAIT_POLL_MS=50 # wait_for polls every 50 ms, until a deadline on the clock
WAIT_CLOCK=1
MUST_RETURN=1 # a failed setup step fails the round, not the script
first_seen() {
    for h in $HOSTS; do [ "$(q $h "SELECT count(*) FROM sales WHERE id = 'h1-first'")" = 1 ] || return 1; done
}
# the two halves: every frame between {v1,v2} and {v3,v4} dropped at the bridge
split() {
    ip netns exec "$LAB_BR" nft -f - <<EOF
table bridge fig_split {
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname { "v1", "v2" } oifname { "v3", "v4" } counter drop
        iifname { "v3", "v4" } oifname { "v1", "v2" } counter drop
    }
}
EOF
}
unsplit() { ip netns exec "$LAB_BR" nft delete table bridge fig_split; }
apart() {
    for a in h1 h2; do for b in h3 h4; do
        not_connected $a $b && not_connected $b $a || return 1
    done; done
}

# setup: the shop, four enrolled tills; on h1 the catalogue and one sale (not yet synced)
setup() {
    tills $HOSTS || return 1
    catalogue h1 || return 1
    must "$T" sql "$(db h1)" "INSERT INTO sales VALUES('h1-first', 'h1', 'p1', 1);
                              UPDATE products SET stock = stock - 1 WHERE id = 'p1'"
}

FIRST=""
HEAL=""
failed=0
# round R: prints its values; returns 1 on failure (the lab is torn down either way)
round() {
    err() {
        echo "FAIL: round $1: $2"
        [ -n "${LAB_KEEP:-}" ] || for h in $HOSTS; do tail -n 3 "$LAB_DIR/$h/node.log" 2>/dev/null | sed "s/^/    $h: /"; done
        lab_down
        return 1
    }
    lab_up 4 || { echo "FAIL: round $1: lab_up 4 failed"; return 1; }
    : >"$LAB_DIR/setup.out"
    setup || { err $1 "setup: $(tail -n 3 "$LAB_DIR/setup.out")"; return 1; }
    P1=999
    P2=500
    NSALES=1

    # (a) first sync with discovered peers
    t0=$(ms)
    for h in $HOSTS; do start_node $h -v; done
    wait_for 30 first_seen || { err $1 "h1's sale did not reach all four tills in 30 s"; return 1; }
    first_ms=$(($(ms) - t0))

    # (b) partition in two halves, heal
    wait_for 20 mesh || { err $1 "the four tills did not all connect in 20 s"; return 1; }
    for h in $HOSTS; do sell_now $h 2 p1 pre || { err $1 "a sale on $h failed"; return 1; }; done
    P1=$((P1 - 8))
    NSALES=$((NSALES + 8))
    wait_for 20 same $HOSTS || { err $1 "no convergence before the partition:"; show; return 1; }
    split || { err $1 "cannot split the LAN"; return 1; }
    tc=$(ms)
    wait_for 15 apart || { err $1 "15 s after the split the halves still show each other connected"; return 1; }
    seen=$(($(ms) - tc))
    sell_now h1 5 p1 cut && sell_now h2 5 p2 cut && sell_now h3 5 p1 cut && sell_now h4 3 p2 cut ||
        { err $1 "a sale failed during the partition"; return 1; }
    # each half converges by itself: h1 h2 hold their 10, h3 h4 their 8
    sP1=$P1 sP2=$P2 sN=$NSALES
    P1=$((sP1 - 5)) P2=$((sP2 - 5)) NSALES=$((sN + 10))
    wait_for 20 same h1 h2 || { err $1 "h1 and h2 did not converge during the partition:"; show; return 1; }
    P1=$((sP1 - 5)) P2=$((sP2 - 3)) NSALES=$((sN + 8))
    wait_for 20 same h3 h4 || { err $1 "h3 and h4 did not converge during the partition:"; show; return 1; }
    P1=$((sP1 - 10)) P2=$((sP2 - 8)) NSALES=$((sN + 18))
    sleep 3
    unsplit || { err $1 "cannot remove the split"; return 1; }
    tr=$(ms)
    wait_for 30 same $HOSTS || { err $1 "no convergence 30 s after the heal (want p1=$P1 p2=$P2 sales=$NSALES):"; show; return 1; }
    heal_ms=$(($(ms) - tr))
    keep=${LAB_KEEP:-}
    LAB_KEEP=""
    lab_down # a round that went well leaves nothing behind, even with LAB_KEEP
    LAB_KEEP=$keep
    FIRST="$FIRST $first_ms"
    HEAL="$HEAL $heal_ms"
    echo "round $1: first sync $first_ms ms, heal $heal_ms ms (split seen after $seen ms)"
}

# stats NAME VALUES_MS: "NAME: median X s (min A .. max B) over N runs"
stats() {
    name=$1
    shift
    echo "$@" | tr ' ' '\n' | grep . | sort -n | awk -v name="$name" '
        { v[NR] = $1 }
        END {
            if (NR == 0) { printf "%s: no successful run\n", name; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%s: median %.2f s (min %.2f .. max %.2f) over %d runs\n", name, m / 1000, v[1] / 1000, v[NR] / 1000, NR
        }'
}

echo "figures: $ROUNDS rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
r=1
while [ $r -le "$ROUNDS" ]; do
    round $r || failed=$((failed + 1))
    r=$((r + 1))
done
stats "first sync" $FIRST
stats "heal" $HEAL
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $failed -gt 0 ]; then
    echo "$failed of $ROUNDS rounds failed"
    exit 1
fi
exit 0
