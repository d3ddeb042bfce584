#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_liveness.sh — `tillsync run --liveness MS` (tsync_node_options.liveness_ms): how
# long a connected till may stay silent before the node takes it as gone. Checked: the help names
# it; values outside 1000..600000 and a missing value are usage errors (exit 2, one line);
# --print-config shows it, and `liveness = MS` in a config file sets it; and it is used: a node run
# with --liveness 6000 still shows a frozen peer (SIGSTOP) connected 4.5 s after it froze, where
# the default 3.5 s would have cut it (cli_node.sh checks that), and shows it gone after 6 s.
#
# usage: sh tests/cli/cli_liveness.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

now_ms() { echo $(($(date +%s%N) / 1000000)); }

sales_dbs a b
KA=$(key_of "$W/a.db")

# ---------------------------------------------------------------- help, usage, config
run "$T" run --help
grep -q -e "--liveness MS" "$W/out" && ok || bad "run --help does not name --liveness: $(cat "$W/out")"
for v in 999 600001 abc 2s ""; do
    run "$T" run "$W/a.db" --liveness "$v"
    expect "--liveness '$v'" 2 "liveness needs a number from 1000 to 600000"
done
run "$T" run "$W/a.db" --liveness
expect "--liveness without a value" 2 "liveness needs a value"
run "$T" run "$W/a.db" --liveness 6000 --print-config
[ $rc -eq 0 ] && grep -q "^liveness = 6000$" "$W/out" && ok ||
    bad "--print-config does not show liveness: $rc $(cat "$W/out" "$W/err")"
printf 'listen = tcp://127.0.0.1:*\nliveness = 7000\n' >"$W/a.conf"
run "$T" run "$W/a.db" --config "$W/a.conf" --print-config
[ $rc -eq 0 ] && grep -q "^liveness = 7000$" "$W/out" && ok ||
    bad "liveness from a config file: $rc $(cat "$W/out" "$W/err")"
run "$T" run "$W/a.db" --config "$W/a.conf" --liveness 8000 --print-config
grep -q "^liveness = 8000$" "$W/out" && ok || bad "--liveness does not override the file: $(cat "$W/out")"

# ---------------------------------------------------------------- a frozen peer
"$T" run "$W/a.db" --listen 'tcp://127.0.0.1:*' --no-mdns --liveness 6000 2>"$W/a.log" &
PA=$!
PIDS="$PA"
wait_for 20 has_listen "$W/a.db" || bad "node a wrote no status with its endpoint: $(cat "$W/a.log")"
EA=$(listen_of "$W/a.db")
"$T" run "$W/b.db" --listen '' --no-mdns --peer "$EA#$KA" 2>"$W/b.log" &
PB=$!
PIDS="$PA $PB"
wait_for 20 online "$W/a.db" && ok || bad "a never saw b: $(cat "$W/a.log" "$W/b.log")"
offline_now() { "$T" status "$1" --json | grep -q '"online": false'; }
kill -STOP "$PB"
t0=$(now_ms)
sleep 4.5
online "$W/a.db"
still=$?
t1=$(now_ms)
# Only a look taken before 6 s proves anything (a loaded machine can oversleep).
if [ $((t1 - t0)) -lt 5800 ]; then
    [ $still -eq 0 ] && ok ||
        bad "a (--liveness 6000) took b as gone within $((t1 - t0)) ms of its freeze: $(tail -3 "$W/a.log")"
else
    echo "note: the look at a came $((t1 - t0)) ms after the freeze, too late to tell"
fi
wait_for 10 offline_now "$W/a.db" && ok || bad "a still online 14 s after b froze: $(tail -3 "$W/a.log")"
# (from b's last message, up to a second before the freeze: a pings an idle peer every second)
echo "a took the frozen b as gone $(($(now_ms) - t0)) ms after the freeze (--liveness 6000)"
kill -CONT "$PB"
wait_for 20 online "$W/a.db" && ok || bad "a not online 20 s after b thawed: $(tail -3 "$W/a.log")"

for p in $PB $PA; do
    kill -TERM "$p"
    wait "$p"
    rc=$?
    [ $rc -eq 0 ] && ok || bad "SIGTERM: node $p exited $rc"
done
PIDS=""
finish
