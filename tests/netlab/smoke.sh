#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/netlab/smoke.sh — proves the network lab (tests/netlab/lab.sh): 3 hosts on a bridge, each
# with its own dbus and avahi-daemon. A _tillsync._tcp service published with TXT records in h1 is
# browsed and resolved from h2 (TXT and h1's address); hosts ping each other; a cut link makes h3
# unreachable and a restore brings it back; lab_loss drops its share of pings and lab_loss_clear
# ends it; h2's avahi-daemon stops and starts again; teardown leaves nothing (namespaces,
# processes, lab dir), also when a lab script is killed with SIGTERM midway or fails.
#
# usage: sudo sh tests/netlab/smoke.sh
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab.sh"
. "$HERE/tills.sh" # for ok, bad, finish, ms, wait_for only: no tills here, and the lab_on_down and
                   # unreachable (by ping) below replace tills.sh's
lab_require avahi-publish avahi-browse ping || exit 1

# loss_of HOST ADDR COUNT: percent of COUNT pings (10 ms apart) from HOST to ADDR that got no reply
loss_of() {
    lab_exec "$1" ping -n -q -c "$3" -i 0.01 -W 1 "$2" 2>/dev/null |
        sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' | cut -d. -f1
}
reaches() { lab_exec "$1" ping -n -q -c 1 -W 1 "$2"; }
unreachable() { ! lab_exec "$1" ping -n -q -c 2 -i 0.2 -W 1 "$2" >/dev/null 2>&1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/tillsync-netlab-smoke.XXXXXX") || exit 1
CHILD=""
lab_on_down() {
    [ -n "$CHILD" ] && lab_stop "$CHILD" 10
    CHILD=""
}
t0=$(ms)
lab_up 3 || {
    rm -rf "$W"
    bad "lab_up 3 failed"
    finish
}
# our own files too: lab_up's traps, plus the scratch folder
trap 'lab_down; rm -rf "$W"' EXIT
trap 'lab_down; rm -rf "$W"; trap - EXIT; exit 130' INT
trap 'lab_down; rm -rf "$W"; trap - EXIT; exit 143' TERM
echo "lab up: 3 hosts in $(($(ms) - t0)) ms ($LAB_DIR)"
ID=$LAB_ID
H1=$(lab_ip h1)
H2=$(lab_ip h2)
H3=$(lab_ip h3)

# ---------------------------------------------------------------- what lab_up made
for ns in "lanbr-$ID" "lan-$ID-h1" "lan-$ID-h2" "lan-$ID-h3"; do
    ip netns list | grep -q "^$ns\( \|$\)" && ok || bad "no namespace $ns"
done
for h in h1 h2 h3; do
    d=$(lab_hostdir $h)
    [ -S "$d/run/dbus/system_bus_socket" ] && ok || bad "$h: no dbus socket"
    grep -q "Server startup complete. Host name is $h.local" "$d/avahi.log" && ok ||
        bad "$h: avahi did not start as $h.local: $(tail -3 "$d/avahi.log")"
    grep -q "^allow-interfaces=eth0" "$d/avahi.conf" && ok || bad "$h: avahi not limited to eth0"
done
# the machine's own namespace has none of the lab's interfaces
ip link show | grep -q -e 'br0' -e ': v[0-9]*@' && bad "an interface of the lab is in the machine's namespace" || ok
lab_exec h1 ip -4 addr show eth0 | grep -q "inet $H1/24" && ok || bad "h1 has no $H1 on eth0"

# ---------------------------------------------------------------- ping
reaches h1 "$H2" >/dev/null && ok || bad "h1 cannot ping h2"
reaches h1 "$H3" >/dev/null && ok || bad "h1 cannot ping h3"
reaches h3 "$H2" >/dev/null && ok || bad "h3 cannot ping h2"

# ---------------------------------------------------------------- mDNS: publish in h1, browse from h2
tp=$(ms)
lab_bg h1 "$W/pub.log" avahi-publish -s till-h1 _tillsync._tcp 7400 "site=0011aa" "shop=corner" "proto=1"
PUB=$LAB_PID
found() { # found HOST: a resolved row for till-h1 in HOST's browse, saved to $W/row
    lab_exec "$1" avahi-browse -rpt _tillsync._tcp 2>/dev/null | grep '^=' | grep ';till-h1;' |
        grep ';IPv4;' >"$W/row" && [ -s "$W/row" ]
}
if wait_for 10 found h2; then
    ok
    echo "mDNS: h2 resolved h1's service $(($(ms) - tp)) ms after publishing"
    row=$(head -1 "$W/row")
    # =;eth0;IPv4;till-h1;_tillsync._tcp;local;h1.local;10.77.0.1;7400;"proto=1" "shop=corner" "site=0011aa"
    [ "$(echo "$row" | cut -d';' -f7)" = "h1.local" ] && ok || bad "browse row names no h1.local: $row"
    [ "$(echo "$row" | cut -d';' -f8)" = "$H1" ] && ok || bad "browse row has not h1's address $H1: $row"
    [ "$(echo "$row" | cut -d';' -f9)" = "7400" ] && ok || bad "browse row has not port 7400: $row"
    for kv in site=0011aa shop=corner proto=1; do
        echo "$row" | grep -q "\"$kv\"" && ok || bad "TXT $kv missing: $row"
    done
else
    bad "h2 did not find h1's service in 10 s: $(lab_exec h2 avahi-browse -rpt _tillsync._tcp 2>&1 | head -5)"
fi
found h3 && ok || bad "h3 does not see h1's service"
found h1 && ok || bad "h1 does not see its own service"

# ---------------------------------------------------------------- stop and restart h2's avahi
AV2=$(cat "$(lab_hostdir h2)/avahi.pid")
lab_avahi_stop h2
lab__gone "$AV2" && ok || bad "h2's avahi-daemon ($AV2) still runs after lab_avahi_stop"
lab_exec h2 avahi-browse -pt _tillsync._tcp >"$W/out" 2>&1 && bad "browse in h2 works with its avahi stopped" || ok
grep -qi "daemon not running" "$W/out" && ok || bad "browse with avahi stopped: $(cat "$W/out")"
found h3 && ok || bad "h3 lost h1's service while h2's avahi was down"
lab_avahi_start h2 && ok || bad "lab_avahi_start h2 failed"
[ "$(cat "$(lab_hostdir h2)/avahi.pid")" != "$AV2" ] && ok || bad "no new avahi-daemon in h2"
wait_for 10 found h2 && ok || bad "h2 does not find h1's service after its avahi restarted"

# ---------------------------------------------------------------- publisher gone: the service goes
lab_stop "$PUB"
gone_from() { ! found "$1"; }
tp=$(ms)
wait_for 10 gone_from h2 && ok || bad "h1's service still browsed in h2 10 s after its publisher stopped"
echo "mDNS: removal seen in h2 after $(($(ms) - tp)) ms"

# ---------------------------------------------------------------- cut and restore a link
lab_cut h3 && ok || bad "lab_cut h3 failed"
unreachable h1 "$H3" && ok || bad "h3 still answers h1 with its link cut"
unreachable h3 "$H2" && ok || bad "h3 still reaches h2 with its link cut"
reaches h1 "$H2" >/dev/null && ok || bad "h1 cannot reach h2 while h3 is cut"
lab_restore h3 && ok || bad "lab_restore h3 failed"
tp=$(ms)
wait_for 10 reaches h1 "$H3" && ok || bad "h3 unreachable 10 s after lab_restore"
echo "link: h3 answers $(($(ms) - tp)) ms after restore"
wait_for 5 reaches h3 "$H2" && ok || bad "h3 cannot reach h2 after restore"

# ---------------------------------------------------------------- packet loss
# lab_loss 50 h1: half of h1's frames dropped: a ping from h1 is lost with probability 1/2.
lab_loss 50 h1 && ok || bad "lab_loss 50 h1 failed"
l=$(loss_of h1 "$H2" 200)
echo "loss: lab_loss 50 h1: $l% of 200 pings from h1 lost"
[ -n "$l" ] && [ "$l" -ge 30 ] && [ "$l" -le 70 ] && ok || bad "lab_loss 50 h1: $l% of pings lost, want 30-70"
# lab_loss 50: half of every IP frame dropped: request and reply each, 1-(1/2)^2 = 75 % of pings.
lab_loss 50 && ok || bad "lab_loss 50 failed"
l=$(loss_of h2 "$H3" 200)
echo "loss: lab_loss 50: $l% of 200 pings lost (each way 50 %: 75 % expected)"
[ -n "$l" ] && [ "$l" -ge 55 ] && [ "$l" -le 92 ] && ok || bad "lab_loss 50: $l% of pings lost, want 55-92"
ip netns exec "lanbr-$ID" nft list table bridge lab_loss >"$W/out" 2>&1 &&
    grep -q "numgen random mod 100 < 50" "$W/out" && ok || bad "no drop rule in the bridge namespace: $(cat "$W/out")"
lab_loss_clear && ok || bad "lab_loss_clear failed"
l=$(loss_of h1 "$H2" 100)
[ "$l" = 0 ] && ok || bad "lab_loss_clear: still $l% lost"
ip netns exec "lanbr-$ID" nft list tables | grep -q lab_loss && bad "loss table left after clear" || ok
lab_loss_clear && ok || bad "lab_loss_clear twice fails"

# ---------------------------------------------------------------- a lab killed midway cleans up
# A parallel lab (its own names) in a background script, killed with SIGTERM while it waits.
has3() { [ "$(ip netns pids "$1" 2>/dev/null | wc -l)" -ge 3 ]; }
child_lab() { # child_lab NAME SCRIPT: runs a lab script in the background, waits until it is up
    : >"$W/$1.dir"
    sh -c ". '$HERE/lab.sh'; lab_up 2 || exit 1; echo \"\$LAB_DIR \$LAB_ID\" >'$W/$1.dir'
           lab_bg h1 /dev/null sleep 1000; lab_bg h2 /dev/null sleep 1000; $2" >"$W/$1.log" 2>&1 &
    CHILD=$!
    wait_for 30 test -s "$W/$1.dir" || return 1
    CDIR=$(cut -d' ' -f1 "$W/$1.dir")
    CID=$(cut -d' ' -f2 "$W/$1.dir")
    wait_for 10 has3 "lan-$CID-h2" || return 1
    # every process of the child lab: dbus, avahi and sleep in each host
    CPIDS=$(for ns in "lan-$CID-h1" "lan-$CID-h2" "lanbr-$CID"; do ip netns pids "$ns"; done)
}
# check_clean WHAT: the child lab left nothing
check_clean() {
    [ -n "$CID" ] && ip netns list | grep -q -e "-$CID" && bad "$1: namespaces left: $(ip netns list | grep -e "-$CID")" || ok
    alive=""
    for p in $CPIDS; do lab__gone "$p" || alive="$alive $p($(cat /proc/$p/comm 2>/dev/null))"; done
    [ -z "$alive" ] && ok || bad "$1: processes left:$alive"
    [ -n "$CDIR" ] && [ ! -e "$CDIR" ] && ok || bad "$1: lab dir $CDIR left"
}
CID=""
CDIR=""
CPIDS=""
if child_lab killed 'sleep 600 & wait $!'; then
    ok
    [ "$(echo "$CPIDS" | wc -w)" -ge 6 ] && ok || bad "the killed lab ran too few processes: $CPIDS"
    kill -TERM "$CHILD"
    wait "$CHILD"
    rc=$?
    CHILD=""
    [ $rc -eq 143 ] && ok || bad "the killed lab script exited $rc, want 143: $(cat "$W/killed.log")"
    check_clean "SIGTERM midway"
else
    bad "the background lab did not come up: $(cat "$W/killed.log")"
fi
# a lab script failing midway (exit 3 from set -e style error) cleans up through its EXIT trap
CID=""
CDIR=""
CPIDS=""
if child_lab failed 'sleep 3; test -e /nonexistent/x || exit 3'; then
    ok
    wait "$CHILD"
    rc=$?
    CHILD=""
    [ $rc -eq 3 ] && ok || bad "the failing lab script exited $rc, want 3: $(cat "$W/failed.log")"
    check_clean "failure midway"
else
    bad "the failing lab did not come up: $(cat "$W/failed.log")"
fi

# ---------------------------------------------------------------- our own teardown leaves nothing
CID=$ID
CDIR=$LAB_DIR
CPIDS=$(for ns in "lan-$ID-h1" "lan-$ID-h2" "lan-$ID-h3" "lanbr-$ID"; do ip netns pids "$ns"; done)
n=$(echo "$CPIDS" | wc -w)
[ "$n" -ge 6 ] && ok || bad "the lab ran $n processes, want >= 6 (dbus + avahi per host)"
lab_down && ok || bad "lab_down failed"
check_clean "lab_down"
[ -z "$LAB_DIR" ] && ok || bad "LAB_DIR still set after lab_down"
lab_down && ok || bad "lab_down twice fails"
ps -eo pid,comm | grep -E 'avahi-daemon|dbus-daemon' >"$W/ps"
left=""
for p in $CPIDS; do grep -q "^ *$p " "$W/ps" && left="$left $p"; done
[ -z "$left" ] && ok || bad "daemons of the lab still run:$left"
rm -rf "$W"
trap - EXIT INT TERM
finish
