#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/netlab/discovery.sh — zero-configuration discovery in the network lab: five hosts, four
# tills enrolled in one shop and a fifth in another shop, every node started with NO --peer at
# all. The four find each other over mDNS (avahi in each host), connect and converge with exact
# counters; the fifth is never connected to and receives nothing. Then one till moves to a new
# address while its node runs and is connected again from the others; then its port is blocked
# (a one-way link) and its node restarted: it shows the others as discovered and dials them. Prints the time from
# starting the nodes to the first sale seen everywhere, and the time to reconnect after the move.
#
# usage: sudo sh tests/netlab/discovery.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab.sh"
. "$HERE/tills.sh"
tills_args "$@"
lab_require || exit 1

start_lab 5
SHOP="h1 h2 h3 h4"
TILLS_SALES=0 # products only
tills $SHOP
new_shop "$LAB_DIR/other.key" "Other Shop"
new_till h5 "$LAB_DIR/other.key" "stranger"
must "$T" sql "$(db h1)" "INSERT INTO products VALUES('p1', 'tea', 1000)"

t0=$(ms)
LISTEN_ANY=1 # like a till's default (tcp://0.0.0.0:7400), so a till can move to a new address
for h in h1 h2 h3 h4 h5; do start_node $h -v; done
has_p1() { [ "$(q $1 "SELECT count(*) FROM products WHERE id='p1'")" = 1 ]; }
all_have_p1() { for h in $SHOP; do has_p1 $h || return 1; done; }
if wait_for 30 all_have_p1; then
    ok
    echo "first sync with discovered peers: $(($(ms) - t0)) ms after the nodes started"
else
    bad "h1's product did not reach every till of the shop in 30 s: $(for h in $SHOP; do tail -3 "$LAB_DIR/$h/node.log"; done)"
fi
# Every till sells; counters must come out exact everywhere.
for h in $SHOP; do must "$T" sql "$(db $h)" "UPDATE products SET stock = stock - 3 WHERE id='p1'"; done
wait_for 20 same_hash $SHOP && ok || bad "the four tills did not converge"
[ "$(stock_of h3 p1)" = 988 ] && ok || bad "h3's counter is $(stock_of h3 p1)"
# Every till of the shop is connected to the three others.
conn() { [ "$(nconn $1)" -ge 3 ]; }
for h in $SHOP; do wait_for 10 conn $h && ok || bad "$h is not connected to 3 peers"; done
# Network state: every till lists the three others as discovered over mDNS (discovered_ms).
# (a till that dialled us can be connected before our own browse has resolved it: wait for it)
listed3() { [ "$(status_of $1 | grep -c '"discovered_ms": [0-9]')" -ge 3 ]; }
for h in $SHOP; do
    wait_for 10 listed3 $h && ok ||
        bad "$h does not list 3 tills found over mDNS: $(status_of $h | grep -E 'state|discovered')"
done
# tillsync status tells the shop's IT person what mDNS does.
for h in $SHOP; do
    "$T" status "$(db $h)" | grep -q '^mDNS: published as ".*", 3 till(s) of the shop advertised' && ok ||
        bad "$h's status does not show mDNS publishing and 3 tills found: $("$T" status "$(db $h)" | grep mDNS)"
done
status_of h1 | tr -d ' \n' | grep -q '"mdns":{"enabled":true,"daemon":"reachable"' && ok ||
    bad "h1's status --json has no mdns object: $(status_of h1 | grep -A4 mdns)"
# The stranger: never connected, nothing received.
[ "$("$T" sql "$(db h5)" "SELECT count(*) FROM products")" = 0 ] && ok || bad "the stranger received rows"
status_of h5 | grep -q '"state": "connected"' && bad "the stranger has a connected peer" || ok
status_of h5 | tr -d ' \n' | grep -q '"peers":\[\]' && ok ||
    bad "the stranger lists peers of another shop: $(status_of h5 | grep -A3 peers)"
for h in $SHOP; do
    grep -q "stranger" "$LAB_DIR/$h/node.log" && bad "$h talked to the stranger" || ok
done
grep -q "mDNS: found" "$LAB_DIR/h1/node.log" || grep -q "mDNS: found" "$LAB_DIR/h2/node.log" && ok ||
    bad "no node logged an mDNS discovery"

# A till moves to another address while its node runs (a new DHCP lease). The till with the
# largest key is moved: the three others are the ones that dial it, and they keep dialling its
# old address (the old address could send no goodbye, so the others' avahi keeps the old A record
# until it expires, up to 2 minutes). After 3 s without a session the moved till dials them
# itself (mdns_fallback): every till must be connected to it again, at its new address.
M=""
for h in $SHOP; do [ -z "$M" ] || [ "$(key $h)" \> "$(key $M)" ] && M=$h; done
NEWIP=$LAB_SUBNET.$((${M#h} + 10))
tm=$(ms)
# (old address first: deleting a subnet's primary address also deletes its secondaries)
ip -n "$(lab_ns $M)" addr del "$(lab_ip $M)/24" dev eth0 && ip -n "$(lab_ns $M)" addr add "$NEWIP/24" dev eth0 &&
    ok || bad "cannot move $M to $NEWIP"
at_new() { peers_of "$1" | grep "\"key\":\"$(key $M)\"" | grep "\"address\":\"[a-z:/]*$NEWIP[:\"]" | grep -q '"state":"connected"'; }
moved() { for h in $SHOP; do [ $h = $M ] || at_new $h || return 1; done; }
if wait_for 30 moved; then
    ok
    echo "move: $M at $NEWIP connected again from the 3 others $(($(ms) - tm)) ms after the move"
else
    bad "30 s after $M moved to $NEWIP not every till is connected to it there: $(for h in $SHOP; do [ $h = $M ] || { echo "$h:"; peers_of $h | grep "$(key $M)"; }; done)"
fi
must "$T" sql "$(db $M)" "UPDATE products SET stock = stock - 5 WHERE id='p1'"
moved_sale() { for h in $SHOP; do [ "$(stock_of $h p1)" = 983 ] || return 1; done; }
wait_for 10 moved_sale && ok || bad "a sale on $M after its move did not reach every till: $(for h in $SHOP; do echo "$h=$(stock_of $h p1)"; done)"

# A link that works one way only: nothing reaches M's port (a firewall), M can still dial out.
# M's node restarts: the others, who should dial it, cannot; M shows them as "discovered" (no
# session) and after 3 s dials them itself.
lab_stop "$(node $M)" 10 && ok || bad "$M's node did not stop cleanly"
drop_node $M
ip netns exec "$LAB_BR" nft -f - <<EOF && ok || bad "cannot block $M's port"
table bridge oneway {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ip daddr $NEWIP tcp dport $PORT drop
    }
}
EOF
: >"$LAB_DIR/$M/node.log"
tw=$(ms)
start_node $M -v
all3() { [ "$(nconn $M)" -ge 3 ]; }
if wait_for 20 all3; then
    ok
    echo "one-way link: $M connected to the 3 others $(($(ms) - tw)) ms after its start (it dialled them)"
else
    bad "$M behind a one-way link is not connected to the 3 others in 20 s: $(peers_of $M | grep key)"
fi
[ "$(grep -c ": discovered (was gone)" "$LAB_DIR/$M/node.log")" -ge 3 ] && ok ||
    bad "$M did not report the 3 others as discovered first: $(grep ': discovered\|: connected' "$LAB_DIR/$M/node.log")"
[ "$(grep -c ": connected (was connecting)" "$LAB_DIR/$M/node.log")" -ge 3 ] && ok ||
    bad "$M did not report the 3 discovered tills as connecting, then connected: $(grep ': discovered\|: connected' "$LAB_DIR/$M/node.log")"
ip netns exec "$LAB_BR" nft delete table bridge oneway
lab_down
finish
