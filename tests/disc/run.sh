#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/disc/run.sh — runs the discovery tests that need a real avahi-daemon
# (tests/net/test_net_discovery.c, suite net_discovery_ns) where they cannot disturb anything: in a
# network namespace of their own with only loopback (multicast on), and a private folder
# bind-mounted over /run, so the dbus-daemon and avahi-daemon each test starts (and kills, by PID)
# have their sockets, PID files and traffic to themselves. Never start those daemons in the
# machine's own namespace: they multicast on its LAN.
#
#   sudo tests/disc/run.sh [BUILD_DIR] [criterion options...]    (BUILD_DIR: default ./build)
#
# TSYNC_DISC_WRAP, if set, is put before the test binary (e.g. "valgrind --trace-children=yes
# --leak-check=full --log-file=/tmp/vg.%p").
#
# Needs root, iproute2, dbus, avahi-daemon, avahi-utils. Exits non-zero when a test fails, is
# skipped, or none ran. On exit (also on ^C) every process left in the namespace is killed by PID
# and the namespace is deleted.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
[ $# -gt 0 ] && shift
bin=$build/test_net_discovery
if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: needs root (ip netns, mount)" >&2
    exit 2
fi
if [ ! -x "$bin" ]; then
    echo "run.sh: no $bin: build first (cmake --build $build)" >&2
    exit 2
fi
for t in ip dbus-daemon avahi-daemon avahi-publish; do
    command -v "$t" >/dev/null 2>&1 || { echo "run.sh: $t not installed (scripts/install-deps.sh)" >&2; exit 2; }
done

ns=tsdisc-$$
dir=$(mktemp -d /tmp/tsdisc-run.XXXXXX)
made_ns=0

cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ "$made_ns" -eq 1 ]; then
        # Only processes in our own namespace: the daemons the tests started, if any survived.
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || :; done
        sleep 0.2
        ip netns del "$ns" 2>/dev/null || echo "run.sh: could not delete namespace $ns" >&2
    fi
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns"
made_ns=1
ip -n "$ns" link set lo multicast on up
mkdir -p "$dir/run"
# The tests refuse to start a daemon unless they see this file in /run (and another namespace).
touch "$dir/run/tsdisc-private-run"

# `ip netns exec` gives the command a mount namespace of its own, so the bind mount over /run
# stays there (-n: no entry in the machine's /run/mount/utab).
set +e
ip netns exec "$ns" sh -c 'mount -n --bind "$1" /run && shift && exec "$@"' - "$dir/run" \
    env -u DBUS_SYSTEM_BUS_ADDRESS -u DBUS_SESSION_BUS_ADDRESS TSYNC_DISC_NS=1 \
    ${TSYNC_DISC_WRAP:-} "$bin" --jobs=1 --verbose "$@" 2>&1 | tee "$dir/out"
rc=$?
set -e
# criterion exits 0 having run nothing on a bad filter; a skip here means the guard refused.
if ! grep -q 'Synthesis: Tested: [1-9]' "$dir/out"; then
    echo "run.sh: no test ran" >&2
    rc=1
elif grep '^\[SKIP\]' "$dir/out" | grep -qv 'Test is disabled'; then
    echo "run.sh: tests were skipped" >&2
    rc=1
elif ! grep -q 'Failing: 0 | Crashing: 0' "$dir/out"; then
    rc=1
fi
exit "$rc"
