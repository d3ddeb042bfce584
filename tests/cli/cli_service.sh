#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_service.sh — `tillsync run` as a service, without a real systemd: one node per
# database (a second run is refused naming the first one's pid and address; the first one's
# status stays; a killed node leaves no stuck lock), `status` exit codes (0 running, 3 not),
# --config FILE equal to the same flags, sd_notify READY (only once the node listens), STATUS,
# WATCHDOG and STOPPING read from a unix datagram socket as systemd would, journald "<N>"
# priority prefixes without our timestamp when JOURNAL_STREAM names stderr, --key, files
# created 0600, addresses checked as they are read (port range; a host that does not resolve is
# said once in the log and in status), and the unit file checked by systemd-analyze verify.
#
# usage: sh tests/cli/cli_service.sh PATH/TO/tillsync
. "$(dirname "$0")/lib.sh"

mode_of() { stat -c %a "$1"; }
PY=$(command -v python3 || echo /usr/bin/python3)
# A free TCP port on loopback (the kernel's pick, released at once).
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
running() { "$T" status "$@" >/dev/null 2>&1; }
stopped() { "$T" status "$1" >/dev/null 2>&1; [ $? -eq 3 ]; }

# ---------------------------------------------------------------- files 0600, --key
must "$T" init "$W/a.db"
[ "$(mode_of "$W/a.db")" = 600 ] && ok || bad "init made the database $(mode_of "$W/a.db"), not 600"
[ "$(mode_of "$W/a.db.key")" = 600 ] && ok || bad "init made the key $(mode_of "$W/a.db.key"), not 600"
mkdir "$W/keys"
run "$T" init --key="$W/keys/k.key" "$W/k.db"
[ $rc -eq 0 ] && [ -f "$W/keys/k.key" ] && [ ! -e "$W/k.db.key" ] && ok ||
    bad "init --key=PATH: $rc $(cat "$W/out" "$W/err")"
[ "$(mode_of "$W/keys/k.key")" = 600 ] && ok || bad "init --key made the key $(mode_of "$W/keys/k.key")"
run "$T" run "$W/k.db" --listen 'tcp://127.0.0.1:*' --no-mdns
[ $rc -eq 1 ] && grep -q "key" "$W/err" && ok || bad "run without the --key the database needs: $rc $(cat "$W/err")"

# ---------------------------------------------------------------- status exit codes
run "$T" status "$W/a.db"
[ $rc -eq 3 ] && grep -q "node: not running" "$W/out" && ok || bad "status, no node: exit $rc, want 3"
run "$T" status "$W/a.db" --json
[ $rc -eq 3 ] && grep -q '"running": false' "$W/out" && ok || bad "status --json, no node: exit $rc, want 3"
run "$T" status "$W/missing.db"
[ $rc -eq 1 ] && ok || bad "status of a missing database: exit $rc, want 1"
run "$T" status
[ $rc -eq 2 ] && ok || bad "status without DB: exit $rc, want 2"

# ---------------------------------------------------------------- --key, --opt=value, one node per database
"$T" run "$W/k.db" --key="$W/keys/k.key" --listen='tcp://127.0.0.1:*' --no-mdns 2>"$W/k.log" &
PK=$!
PIDS="$PK"
wait_for 10 running "$W/k.db" --key "$W/keys/k.key" && ok || bad "run --key=PATH did not start: $(cat "$W/k.log")"
wait_for 10 has_listen "$W/k.db" && ok || bad "run --listen=EP wrote no endpoint: $(cat "$W/k.log")"
case $(listen_of "$W/k.db") in tcp://127.0.0.1:[0-9]*) ok ;; *) bad "--listen=EP not used: $(listen_of "$W/k.db")" ;; esac
run "$T" status "$W/k.db" --key="$W/keys/k.key"
[ $rc -eq 0 ] && grep -q "node: running (pid $PK" "$W/out" && ok || bad "status, node running: exit $rc: $(cat "$W/out")"
EK=$(listen_of "$W/k.db")
cp "$W/k.db.node" "$W/k.node.before"
run "$T" run "$W/k.db" --key "$W/keys/k.key" --listen 'tcp://127.0.0.1:*' --no-mdns
expect "second node on the same database" 1 "a node already runs on $W/k.db (pid $PK, listening on $EK)"
[ -f "$W/k.db.node" ] && ok || bad "the refused node removed the first one's status file"
run "$T" status "$W/k.db" --key="$W/keys/k.key"
[ $rc -eq 0 ] && grep -q "pid $PK" "$W/out" && ok || bad "after the refusal status does not show the first node: $rc $(cat "$W/out")"
kill -9 "$PK"
wait "$PK" 2>/dev/null
PIDS=""
run "$T" status "$W/k.db" --key="$W/keys/k.key"
[ $rc -eq 3 ] && ok || bad "status after kill -9: exit $rc, want 3 (a crashed node holds no lock): $(cat "$W/out")"
"$T" run "$W/k.db" --key "$W/keys/k.key" --listen 'tcp://127.0.0.1:*' --no-mdns 2>"$W/k2.log" &
PK=$!
PIDS="$PK"
wait_for 10 running "$W/k.db" --key "$W/keys/k.key" && ok || bad "a node after a crashed one did not start: $(cat "$W/k2.log")"
kill "$PK"
wait "$PK"
[ $? -eq 0 ] && ok || bad "run did not exit 0 on SIGTERM"
PIDS=""

# ---------------------------------------------------------------- addresses checked as read
run "$T" run "$W/a.db" --listen tcp://127.0.0.1:70000
expect "listen port out of range" 1 "port must be a number from 1 to 65535"
run "$T" run "$W/a.db" --listen tcp://127.0.0.1:* --peer=tcp://127.0.0.1:0
expect "peer port 0" 1 "port must be a number from 1 to 65535"
run "$T" run "$W/a.db" --listen tcp://127.0.0.1:x
expect "listen port not a number" 1 "port must be"
run "$T" run "$W/a.db" --listen
expect "--listen without a value" 2 "listen needs a value"
run "$T" run "$W/a.db" --no-mdns=yes
expect "a flag given a value" 2 "takes no value"
run "$T" run "$W/a.db" --frobnicate
expect "unknown option" 2 "unknown option '--frobnicate'"
KA=$(key_of "$W/a.db")
P=$(free_port)
"$T" run "$W/a.db" --listen "tcp://127.0.0.1:$P" --no-mdns --peer "tcp://no-such-host.invalid:7400#$KA" \
    2>"$W/dns.log" &
PA=$!
PIDS="$PA"
wait_for 10 has_listen "$W/a.db" || bad "node with an unresolvable peer did not start: $(cat "$W/dns.log")"
sleep 1
[ "$(grep -c "no-such-host.invalid does not resolve" "$W/dns.log")" = 1 ] && ok ||
    bad "the unresolvable host is not logged once: $(cat "$W/dns.log")"
"$T" status "$W/a.db" >"$W/st"
grep -q "^attention: peer tcp://no-such-host.invalid:7400.*does not resolve" "$W/st" && ok ||
    bad "status does not name the unresolvable host: $(cat "$W/st")"
"$T" status "$W/a.db" --json | grep -q '"start_notes"' && ok || bad "status --json lacks start_notes"
kill "$PA"
wait "$PA"
PIDS=""

# ---------------------------------------------------------------- --config equals the same flags
must "$T" init "$W/c.db"
KC=$(key_of "$W/c.db")
P=$(free_port)
FLAGS="--listen=tcp://127.0.0.1:$P --peer tcp://127.0.0.1:9#$KC --no-mdns --prune-keep 7 --prune-every=3 --log-max-days 9 -q"
# shellcheck disable=SC2086
"$T" run "$W/c.db" $FLAGS --print-config >"$W/flags.conf" 2>"$W/err" && ok || bad "--print-config: $(cat "$W/err")"
cat >"$W/c.conf" <<CONF
; the same settings as FLAGS, in a file
[run]
listen = tcp://127.0.0.1:$P
peer = tcp://127.0.0.1:9#$KC
no-mdns = true
prune-keep = 7
prune-every = 3
log-max-days = 9
quiet = true
verbose = false
CONF
"$T" run "$W/c.db" --config "$W/c.conf" --print-config >"$W/file.conf" 2>"$W/err" || bad "--config --print-config: $(cat "$W/err")"
cmp -s "$W/flags.conf" "$W/file.conf" && ok || bad "--config differs from the flags: $(diff "$W/flags.conf" "$W/file.conf")"
# What --print-config prints is a config file that reads back the same.
"$T" run "$W/c.db" --config="$W/flags.conf" --print-config >"$W/again.conf" &&
    cmp -s "$W/flags.conf" "$W/again.conf" && ok || bad "--print-config does not read back the same"
# The flags on the command line override the file.
"$T" run "$W/c.db" --config "$W/c.conf" --prune-keep 8 -v --print-config >"$W/over.conf"
grep -q "^prune-keep = 8$" "$W/over.conf" && grep -q "^verbose = true$" "$W/over.conf" &&
    ! grep -q "^quiet" "$W/over.conf" && ok || bad "flags do not override the file: $(cat "$W/over.conf")"
# The node really runs with the file's settings.
"$T" run "$W/c.db" --config "$W/c.conf" 2>"$W/c.log" &
PC=$!
PIDS="$PC"
wait_for 10 has_listen "$W/c.db" || bad "node from --config did not start: $(cat "$W/c.log")"
[ "$(listen_of "$W/c.db")" = "tcp://127.0.0.1:$P" ] && ok || bad "--config listen not used: $(listen_of "$W/c.db")"
"$T" status "$W/c.db" --json | tr -d ' \n' | grep -q '"mdns":{"enabled":false' && ok || bad "--config no-mdns not used"
"$T" status "$W/c.db" --json | grep -q "\"address\": \"tcp://127.0.0.1:9\"" && ok || bad "--config peer not used"
grep -q "INFO" "$W/c.log" && bad "--config quiet not used: $(cat "$W/c.log")" || ok
kill "$PC"
wait "$PC"
PIDS=""
printf 'listen = ""\n' >"$W/q.conf"
"$T" run "$W/c.db" --config "$W/q.conf" --print-config >"$W/q.out" 2>&1
grep -q '^listen = $' "$W/q.out" && ok || bad "listen = \"\" is not the empty value: $(cat "$W/q.out")"
printf 'listen = tcp://127.0.0.1:1\nfrobnicate = 1\n' >"$W/bad.conf"
run "$T" run "$W/c.db" --config "$W/bad.conf"
expect "unknown setting" 1 "bad.conf:2: unknown setting 'frobnicate'"
printf 'no-mdns = perhaps\n' >"$W/bad.conf"
run "$T" run "$W/c.db" --config "$W/bad.conf"
expect "bad flag value" 1 "bad.conf:1: no-mdns is true or false"
run "$T" run "$W/c.db" --config "$W/none.conf"
expect "missing config" 1 "cannot open the config file"
run "$T" run "$W/c.db" --config "$(dirname "$0")/../../packaging/tillsync.conf.example" --print-config
[ $rc -eq 0 ] && grep -q "^listen = tcp://0.0.0.0:7400$" "$W/out" && ok || bad "the example config does not read: $(cat "$W/err")"

# ---------------------------------------------------------------- sd_notify
# A unix datagram socket standing for systemd's: every message into $W/notify, one per line
# group; ends after STOPPING=1 or 30 s.
cat >"$W/notify.py" <<'PYEOF'
import socket, sys, time
path, out, port_file = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(0.5)
end = time.time() + 30
with open(out, "w") as f:
    while time.time() < end:
        try:
            m = s.recv(4096).decode()
        except socket.timeout:
            continue
        if "READY=1" in m:
            # Ready must mean listening: connect to the port it says.
            ep = [l for l in m.split("\n") if l.startswith("STATUS=listening on tcp://")]
            ok = "no-status"
            if ep:
                host, port = ep[0].rsplit("/", 1)[1].rsplit(":", 1)
                try:
                    socket.create_connection((host, int(port)), 2).close()
                    ok = "connectable"
                except OSError as e:
                    ok = "refused %s" % e
            f.write("READY-CHECK " + ok + "\n")
        f.write(m.replace("\n", " ") + "\n")
        f.flush()
        if "STOPPING=1" in m:
            break
PYEOF
"$PY" "$W/notify.py" "$W/notify.sock" "$W/notify" "$W/port" &
PN=$!
PIDS="$PN"
wait_for 5 test -S "$W/notify.sock" || bad "the test's notify socket did not appear"
NOTIFY_SOCKET="$W/notify.sock" WATCHDOG_USEC=1000000 "$T" run "$W/c.db" --listen 'tcp://127.0.0.1:*' \
    --no-mdns 2>"$W/n.log" &
PR=$!
PIDS="$PN $PR"
wait_for 10 grep -q "READY=1" "$W/notify" && ok || bad "no READY=1 on NOTIFY_SOCKET: $(cat "$W/n.log")"
grep -q "^READY-CHECK connectable" "$W/notify" && ok || bad "READY before the node listens: $(cat "$W/notify")"
grep -q "MAINPID=$PR" "$W/notify" && ok || bad "READY without MAINPID=$PR: $(cat "$W/notify")"
wait_for 5 grep -q "WATCHDOG=1" "$W/notify" && ok || bad "no WATCHDOG=1 with WATCHDOG_USEC set"
sleep 2
[ "$(grep -c "WATCHDOG=1" "$W/notify")" -ge 3 ] && ok || bad "the watchdog is not fed every 0.5 s: $(cat "$W/notify")"
kill "$PR"
wait "$PR"
wait_for 5 grep -q "STOPPING=1" "$W/notify" && ok || bad "no STOPPING=1 on SIGTERM: $(cat "$W/notify")"
wait "$PN"
PIDS=""

# ---------------------------------------------------------------- journald priorities
: >"$W/j.log"
JS=$(stat -c '%d:%i' "$W/j.log")
JOURNAL_STREAM=$JS "$T" run "$W/c.db" --listen 'tcp://127.0.0.1:*' --no-mdns --peer \
    "tcp://no-such-host.invalid:7400#$KC" 2>>"$W/j.log" &
PJ=$!
PIDS="$PJ"
wait_for 10 grep -q "node for" "$W/j.log" || bad "no start line under JOURNAL_STREAM: $(cat "$W/j.log")"
kill "$PJ"
wait "$PJ"
PIDS=""
grep -q "^<6>node for $W/c.db" "$W/j.log" && ok || bad "info line without <6>: $(cat "$W/j.log")"
grep -q "^<4>peer tcp://no-such-host.invalid" "$W/j.log" && ok || bad "warning without <4>: $(cat "$W/j.log")"
grep -q "^<6>node stopped" "$W/j.log" && ok || bad "stop line without <6>: $(cat "$W/j.log")"
grep -v '^<[0-7]>' "$W/j.log" | grep -q . && bad "a line without a priority: $(grep -v '^<[0-7]>' "$W/j.log")" || ok
grep -q '^<[0-7]>[0-9]\{4\}-[0-9][0-9]-[0-9][0-9]T' "$W/j.log" && bad "a second timestamp under journald: $(head -2 "$W/j.log")" || ok
JOURNAL_STREAM=$JS "$T" run "$W/nope.db" 2>>"$W/j.log"
grep -q "^<3>tillsync: run: no database" "$W/j.log" && ok || bad "error without <3>: $(tail -1 "$W/j.log")"
# JOURNAL_STREAM naming another stream (a shell started from the unit): plain lines.
JOURNAL_STREAM=1:1 "$T" run "$W/nope.db" 2>"$W/plain.log"
grep -q "^tillsync: run: no database" "$W/plain.log" && ok || bad "prefix when stderr is not the journal: $(cat "$W/plain.log")"

# ---------------------------------------------------------------- the unit file
UNIT=$(dirname "$0")/../../packaging/systemd/tillsync@.service.in
grep -q "^Type=notify$" "$UNIT" && grep -q "^WatchdogSec=" "$UNIT" && grep -q "^StateDirectory=tillsync$" "$UNIT" &&
    ok || bad "the unit lacks Type=notify, WatchdogSec or StateDirectory"
if command -v systemd-analyze >/dev/null 2>&1; then
    mkdir -p "$W/unit" "$W/man/man1"
    sed "s#@CMAKE_INSTALL_FULL_BINDIR@#$(dirname "$(readlink -f "$T")")#" "$UNIT" >"$W/unit/tillsync@.service"
    "$T" help --man >"$W/man/man1/tillsync.1"
    cp "$W/unit/tillsync@.service" "$W/unit/tillsync@till1.service"
    MANPATH=$W/man systemd-analyze verify "$W/unit/tillsync@till1.service" >"$W/verify" 2>&1
    grep -v "^$" "$W/verify" | grep -q . && bad "systemd-analyze verify: $(cat "$W/verify")" || ok
fi

finish
