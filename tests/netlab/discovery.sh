#!/bin/sh
# tests/netlab/discovery.sh — zero-configuration discovery in the network lab: five hosts, four
# tills enrolled in one shop and a fifth in another shop, every node started with NO --peer at
# all. The four find each other over mDNS (avahi in each host), connect and converge with exact
# counters; the fifth is never connected to and receives nothing. Prints the time from starting
# the nodes to the first sale seen everywhere.
#
# usage: sudo sh tests/netlab/discovery.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

T=${1:?usage: discovery.sh PATH/TO/tillsync}
case "$T" in /*) ;; *) T=$(cd "$(dirname "$T")" && pwd)/$(basename "$T") ;; esac
[ -x "$T" ] || { echo "discovery.sh: $T is not executable" >&2; exit 1; }
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
lab_on_down() {
    for p in $NODES; do kill -TERM "$p" 2>/dev/null; done
    for p in $NODES; do lab_stop "$p" 5; done
    NODES=""
}
lab_up 5 || {
    bad "lab_up 5 failed"
    finish
}
SHOP="h1 h2 h3 h4"
db() { echo "$LAB_DIR/$1/till.db"; }
must() {
    "$@" >"$LAB_DIR/setup.out" 2>&1 || {
        bad "setup: $*: $(cat "$LAB_DIR/setup.out")"
        finish
    }
}
must "$T" shop create "$LAB_DIR/shop.key" --name "Lab Shop"
must "$T" shop create "$LAB_DIR/other.key" --name "Other Shop"
for h in h1 h2 h3 h4 h5; do
    must "$T" init "$(db $h)"
    must "$T" sql "$(db $h)" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT,
                              stock INTEGER NOT NULL DEFAULT 0)"
    must "$T" replicate "$(db $h)" products --counter stock
done
for h in $SHOP; do must "$T" enrol "$(db $h)" --shop-key "$LAB_DIR/shop.key" --name "till-$h"; done
must "$T" enrol "$(db h5)" --shop-key "$LAB_DIR/other.key" --name "stranger"
must "$T" sql "$(db h1)" "INSERT INTO products VALUES('p1', 'tea', 1000)"

t0=$(ms)
for h in h1 h2 h3 h4 h5; do
    lab_bg $h "$LAB_DIR/$h/node.log" "$T" run "$(db $h)" --listen "tcp://$(lab_ip $h):7400" -v
    NODES="$NODES $LAB_PID"
done
has_p1() { [ "$("$T" sql "$(db $1)" "SELECT count(*) FROM products WHERE id='p1'")" = 1 ]; }
all_have_p1() { for h in $SHOP; do has_p1 $h || return 1; done; }
if wait_for 30 all_have_p1; then
    ok
    echo "first sync with discovered peers: $(($(ms) - t0)) ms after the nodes started"
else
    bad "h1's product did not reach every till of the shop in 30 s: $(for h in $SHOP; do tail -3 "$LAB_DIR/$h/node.log"; done)"
fi
# Every till sells; counters must come out exact everywhere.
for h in $SHOP; do must "$T" sql "$(db $h)" "UPDATE products SET stock = stock - 3 WHERE id='p1'"; done
same() {
    a=$("$T" hash "$(db h1)")
    for h in h2 h3 h4; do [ "$("$T" hash "$(db $h)")" = "$a" ] || return 1; done
}
wait_for 20 same && ok || bad "the four tills did not converge"
[ "$("$T" sql "$(db h3)" "SELECT stock FROM products WHERE id='p1'")" = 988 ] && ok ||
    bad "h3's counter is $("$T" sql "$(db h3)" "SELECT stock FROM products WHERE id='p1'")"
# Every till of the shop is connected to the three others.
conn() { [ "$("$T" status "$(db $1)" --json | grep -c '"state": "connected"')" -ge 3 ]; }
for h in $SHOP; do wait_for 10 conn $h && ok || bad "$h is not connected to 3 peers"; done
# Network state: every till lists the three others as discovered over mDNS (discovered_ms), and the
# tills that wait to be dialled (the larger key of each pair) showed them as "discovered" first.
for h in $SHOP; do
    [ "$("$T" status "$(db $h)" --json | grep -c '"discovered_ms": [0-9]')" -ge 3 ] && ok ||
        bad "$h does not list 3 tills found over mDNS: $("$T" status "$(db $h)" --json | grep -E 'state|discovered')"
done
cat "$LAB_DIR"/h[1-4]/node.log | grep -q ": discovered (was gone)" && ok ||
    bad "no till reported a peer as discovered before its session"
cat "$LAB_DIR"/h[1-4]/node.log | grep -q ": connected (was discovered)" && ok ||
    bad "no discovered till went on to connected"
# The stranger: never connected, nothing received.
[ "$("$T" sql "$(db h5)" "SELECT count(*) FROM products")" = 0 ] && ok || bad "the stranger received rows"
"$T" status "$(db h5)" --json | grep -q '"state": "connected"' && bad "the stranger has a connected peer" || ok
"$T" status "$(db h5)" --json | tr -d ' \n' | grep -q '"peers":\[\]' && ok ||
    bad "the stranger lists peers of another shop: $("$T" status "$(db h5)" --json | grep -A3 peers)"
for h in $SHOP; do
    grep -q "stranger" "$LAB_DIR/$h/node.log" && bad "$h talked to the stranger" || ok
done
grep -q "mDNS: found" "$LAB_DIR/h1/node.log" || grep -q "mDNS: found" "$LAB_DIR/h2/node.log" && ok ||
    bad "no node logged an mDNS discovery"
lab_down
finish
