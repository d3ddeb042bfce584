#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_clock.sh — wrong clocks on real nodes (libfaketime moves one process's wall clock):
# - recovery: a till that wrote a day ahead while alone (its hybrid clock a day ahead) and then
#   runs with its clock fixed: its peers hold the far-ahead batches and name it in `status`, its
#   own status says its clock is ahead; its next sale takes the clock back and every sale, the
#   early ones too, reaches the peers at once (nothing held, one hash);
# - prevention: a till whose clock is a day ahead while connected to two tills stamps its sales
#   with the shop's time, so they are never held; its status (text and JSON) and its log (rate
#   limited) say its clock is ahead of the shop's median;
# - certificates: a till whose clock is an hour behind its peer's certificate start refuses it;
#   both sides show the peer "refused" with the reason (not "connected"), the refusal is logged
#   once a minute, not at every redial; three minutes behind is within the tolerance.
#
# usage: sh tests/cli/cli_clock.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"
FT=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
# libfaketime is preloaded: under AddressSanitizer its runtime must then not insist on coming first.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
export ASAN_OPTIONS
if [ ! -r "$FT" ]; then
    echo "libfaketime not installed ($FT): skipped"
    finish
fi
# skewed OFFSET COMMAND...: runs COMMAND with its wall clock moved by OFFSET ("+1d", "-1h").
# The monotonic clock stays real (the node's timers and liveness use it).
skewed() {
    off=$1
    shift
    LD_PRELOAD=$FT FAKETIME="$off" FAKETIME_DONT_FAKE_MONOTONIC=1 "$@"
}
site_of() { "$T" state "$1" --json | sed -n 's/.*"site": "\([0-9a-f]*\)".*/\1/p'; }
hlc_ms_of() { echo $(($("$T" state "$1" --json | sed -n 's/.*"hlc": \([0-9]*\).*/\1/p') >> 16)); }
held_is() { [ "$("$T" status "$1" --json | sed -n 's/^  "held": \([0-9]*\).*/\1/p')" = "$2" ]; }
peers_online() { [ "$("$T" status "$1" --json | grep -c '"state": "connected"')" -ge "$2" ]; }
json_has() { "$T" status "$1" --json | grep -q -e "$2"; }
# clock_state_is DB STATE: the clock object's state (the status also has a top-level "state").
clock_state_is() { "$T" status "$1" --json | tr -d ' \n' | grep -q "\"clock\":{\"state\":\"$2\""; }
now_ms() { echo $(($(date +%s) * 1000)); }
# start NAME [OFFSET] ARGS...: runs a node for $W/NAME.db (log $W/NAME.log), waits for its endpoint.
start() {
    name=$1
    off=$2
    shift 2
    rm -f "$W/$name.db.node"
    # exec: $! is the node itself, so stop() and the cleanup reach it.
    if [ "$off" = "0" ]; then
        "$T" run "$W/$name.db" --listen 'tcp://127.0.0.1:*' "$@" 2>>"$W/$name.log" &
    else
        (exec env LD_PRELOAD="$FT" FAKETIME="$off" FAKETIME_DONT_FAKE_MONOTONIC=1 "$T" run \
            "$W/$name.db" --listen 'tcp://127.0.0.1:*' "$@" 2>>"$W/$name.log") &
    fi
    eval "P_$name=$!"
    PIDS="$PIDS $!"
    wait_for 10 has_listen "$W/$name.db" || bad "node $name did not start: $(cat "$W/$name.log")"
}
stop() {
    eval "pid=\$P_$1"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

for d in a b c d; do
    must "$T" init "$W/$d.db"
    must "$T" sql "$W/$d.db" "CREATE TABLE sales(id TEXT PRIMARY KEY, till TEXT, cents INTEGER)"
    must "$T" replicate "$W/$d.db" sales
done
KA=$(key_of "$W/a.db")
KB=$(key_of "$W/b.db")
KC=$(key_of "$W/c.db")
SA=$(site_of "$W/a.db" | cut -c1-12)
SD=$(site_of "$W/d.db" | cut -c1-12)

start b 0
EB=$(listen_of "$W/b.db")
start c 0 --peer "$EB#$KB"
EC=$(listen_of "$W/c.db")
wait_for 10 peers_online "$W/c.db" 1 || bad "c did not connect to b: $(cat "$W/c.log")"

# ---------------------------------------------------------------- recovery of a poisoned till
# a sells alone with its clock a day ahead (a bad RTC before NTP): its hybrid clock goes there.
for i in 1 2 3; do
    must skewed +1d "$T" sql "$W/a.db" "INSERT INTO sales VALUES('early-$i', 'a', $i)"
done
ahead=$(($(hlc_ms_of "$W/a.db") - $(now_ms)))
[ "$ahead" -gt 80000000 ] && ok || bad "setup: a's clock is not a day ahead ($ahead ms)"
# Its clock is fixed; its node starts and sends those batches: the peers hold them, and name a.
start a 0 --peer "$EB#$KB" --peer "$EC#$KC"
wait_for 10 peers_online "$W/a.db" 2 || bad "a did not connect to b and c: $(cat "$W/a.log")"
wait_for 10 held_is "$W/b.db" 3 && ok || bad "b does not hold a's far-ahead batches: $("$T" status "$W/b.db")"
"$T" status "$W/b.db" >"$W/out"
grep -q "held 3: clock of site $SA is [0-9]* ms ahead" "$W/out" && ok ||
    bad "b's status does not name a's clock: $(cat "$W/out")"
wait_for 5 clock_state_is "$W/a.db" ok && ok || bad "a's clock state not ok: $("$T" status "$W/a.db" --json)"
"$T" status "$W/a.db" >"$W/out"
grep -q "hybrid clock is [0-9]* s ahead of the shop's time" "$W/out" && ok ||
    bad "a's status does not say its clock ran ahead: $(cat "$W/out")"
# Its next sales go out at once, with the early ones, and nothing stays held anywhere.
t0=$(date +%s)
for i in 1 2 3; do
    must "$T" sql "$W/a.db" "INSERT INTO sales VALUES('late-$i', 'a', $i)"
    sleep 0.2
done
wait_for 5 count_is "$W/b.db" 6 && ok ||
    bad "a's later sales are held at b: $("$T" sql "$W/b.db" "SELECT id FROM sales") / $("$T" status "$W/b.db")"
wait_for 5 count_is "$W/c.db" 6 && ok || bad "a's later sales are held at c: $("$T" status "$W/c.db")"
[ $(($(date +%s) - t0)) -le 6 ] && ok || bad "a's later sales took $(($(date +%s) - t0)) s"
wait_for 5 held_is "$W/b.db" 0 && ok || bad "b still holds batches: $("$T" status "$W/b.db")"
wait_for 5 held_is "$W/c.db" 0 && ok || bad "c still holds batches: $("$T" status "$W/c.db")"
ahead=$(($(hlc_ms_of "$W/a.db") - $(now_ms)))
[ "$ahead" -lt 300000 ] && ok || bad "a's clock is still $ahead ms ahead"
"$T" status "$W/a.db" >"$W/out"
grep -q "hybrid clock taken back 1 time(s)" "$W/out" && ok || bad "a's status does not show the reset: $(cat "$W/out")"
# b and c sell too: everyone converges (the clocks of b and c did not follow a's).
must "$T" sql "$W/b.db" "INSERT INTO sales VALUES('b-1', 'b', 1)"
must "$T" sql "$W/c.db" "INSERT INTO sales VALUES('c-1', 'c', 1)"
same3() {
    count_is "$W/a.db" 8 && count_is "$W/b.db" 8 && count_is "$W/c.db" 8 &&
        [ "$("$T" hash "$W/a.db")" = "$("$T" hash "$W/b.db")" ] &&
        [ "$("$T" hash "$W/b.db")" = "$("$T" hash "$W/c.db")" ]
}
wait_for 10 same3 && ok || bad "a, b and c differ"
# The log says so once a minute, not at every check (it said it every second, with "agrees again").
n=$(grep -c "hybrid clock is [0-9]* s ahead" "$W/a.log")
[ "$n" -ge 1 ] && [ "$n" -le 2 ] && ok || bad "a logged its hybrid clock ahead $n times: $(cat "$W/a.log")"
n=$(grep -c "agrees with the shop's again" "$W/a.log")
[ "$n" -eq 0 ] && ok || bad "a logged that its clock agrees again $n times"
for d in b c; do
    ahead=$(($(hlc_ms_of "$W/$d.db") - $(now_ms)))
    [ "$ahead" -lt 300000 ] && ok || bad "$d's clock followed a's: $ahead ms ahead"
done
stop a

# ---------------------------------------------------------------- prevention while connected
# d runs a day ahead, connected to b and c: the median of the shop says so.
start d +1d --peer "$EB#$KB" --peer "$EC#$KC"
wait_for 10 peers_online "$W/d.db" 2 || bad "d did not connect: $(cat "$W/d.log")"
wait_for 5 clock_state_is "$W/d.db" ahead && ok || bad "d's clock is not shown ahead: $("$T" status "$W/d.db" --json)"
for i in 1 2 3 4 5; do
    must skewed +1d "$T" sql "$W/d.db" "INSERT INTO sales VALUES('d-$i', 'd', $i)"
    sleep 0.3
done
wait_for 5 count_is "$W/b.db" 13 && ok || bad "d's sales are held at b: $("$T" status "$W/b.db")"
wait_for 5 count_is "$W/c.db" 13 && ok || bad "d's sales are held at c: $("$T" status "$W/c.db")"
held_is "$W/b.db" 0 && ok || bad "b holds batches of d: $("$T" status "$W/b.db")"
ahead=$(($(hlc_ms_of "$W/d.db") - $(now_ms)))
[ "$ahead" -lt 300000 ] && ok || bad "d's hybrid clock went $ahead ms ahead"
"$T" status "$W/d.db" >"$W/out"
grep -q "clock: AHEAD of the shop's median by 86[34][0-9][0-9] s (2 peer(s))" "$W/out" && ok ||
    bad "d's status text does not show its clock ahead: $(cat "$W/out")"
"$T" status "$W/d.db" --json >"$W/out"
grep -q '"stamped_with_shop_time": true' "$W/out" && grep -q '"ahead_ms": 86[34][0-9]*' "$W/out" && ok ||
    bad "d's status JSON does not show the skew: $(cat "$W/out")"
"$T" status "$W/b.db" >"$W/out"
grep -q "its clock +86[34][0-9][0-9] s" "$W/out" && ok || bad "b's status does not show d's clock: $(cat "$W/out")"
clock_state_is "$W/b.db" ok && ok || bad "b thinks its own clock is off: $("$T" status "$W/b.db" --json)"
n=$(grep -c "clock is ahead of the shop's median" "$W/d.log")
[ "$n" -ge 1 ] && [ "$n" -le 2 ] && ok || bad "d logged its clock $n times: $(cat "$W/d.log")"
stop d
stop b
stop c

# ---------------------------------------------------------------- certificates and clocks
must "$T" shop create "$W/shop.key" --name "Clock Shop"
for t in e f; do
    must "$T" init "$W/$t.db"
    must "$T" enrol "$W/$t.db" --shop-key "$W/shop.key" --name "till-$t"
done
KE=$(key_of "$W/e.db")
KF=$(key_of "$W/f.db")
start e 0 --no-mdns
EE=$(listen_of "$W/e.db")
# f's clock is an hour behind the start of e's certificate: it refuses e. Each dials the other
# (as mDNS or static peers do), so a refused session is tried again and again.
start f -1h --no-mdns --peer "$EE#$KE"
EF=$(listen_of "$W/f.db")
stop e
start e 0 --no-mdns --peer "$EF#$KF"
refused() { "$T" status "$1" --json | grep -q '"state": "refused"'; }
wait_for 10 refused "$W/e.db" && ok || bad "e does not show f refused: $("$T" status "$W/e.db")"
wait_for 10 refused "$W/f.db" && ok || bad "f does not show e refused: $("$T" status "$W/f.db")"
sleep 5
for t in e f; do
    "$T" status "$W/$t.db" --json >"$W/out"
    grep -q '"state": "connected"' "$W/out" && bad "$t shows its peer connected: $(cat "$W/out")" || ok
    grep -q '"refused_reason": "[^"]*not valid before' "$W/out" && ok || bad "$t's status lacks the reason: $(cat "$W/out")"
done
"$T" status "$W/e.db" >"$W/out"
grep -q "refused since .*refused: it refused us: .*not valid before" "$W/out" && ok || bad "e's status text: $(cat "$W/out")"
n=$(grep -c "not valid before" "$W/f.log")
[ "$n" -ge 1 ] && [ "$n" -le 2 ] && ok || bad "f logged the refusal $n times in 5 s"
n=$(grep -c "not valid before" "$W/e.log")
[ "$n" -ge 1 ] && [ "$n" -le 2 ] && ok || bad "e logged the refusal $n times in 5 s"
stop f
stop e
# Three minutes behind is within the tolerance.
start e 0 --no-mdns
EE=$(listen_of "$W/e.db")
start f -3m --no-mdns --peer "$EE#$KE"
wait_for 10 peers_online "$W/f.db" 1 && ok || bad "f (3 minutes behind) did not connect: $(tail -5 "$W/f.log")"
wait_for 10 peers_online "$W/e.db" 1 && ok || bad "e does not show f (3 minutes behind) connected"
stop f
stop e
finish
