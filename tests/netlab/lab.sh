# SPDX-License-Identifier: Apache-2.0
# tests/netlab/lab.sh — a LAN of N hosts on one machine, with real mDNS, for tests. A library for
# POSIX sh (dash): source it, then call the lab_* functions. Needs root and iproute2, nftables,
# dbus, avahi-daemon, mount (util-linux). See tests/netlab/README.md.
#
#   . tests/netlab/lab.sh
#   lab_up 3 || exit 1          # hosts h1..h3 = 10.77.0.1..3/24 on eth0, all on one bridge;
#                               # each with its own dbus system bus and avahi-daemon
#   lab_exec h1 ping -c1 10.77.0.2          # CMD in h1's namespace (and its /run)
#   lab_bg h2 "$LOG" tillsync run ...       # in the background; $LAB_PID is CMD's own PID
#   lab_cut h3; lab_restore h3              # unplug / plug h3's cable (link down/up at the bridge)
#   lab_loss 20 [HOST]; lab_loss_clear      # drop 20% of IP frames crossing the bridge (HOST:
#                                           # only frames HOST sends)
#   lab_avahi_stop h2; lab_avahi_start h2   # stop / start h2's avahi-daemon
#   lab_delay h3 127.0.0.1:7501 10.77.0.1:7400 150 100   # a TCP proxy in h3 adding 150+0..100 ms
#                                           # each way (delayproxy.c, built with cc on first use)
#   lab_netem 50 50 20 [HOST]; lab_netem_clear   # each IPv4 frame crossing the bridge (HOST:
#                                           # only frames HOST sends) dropped with 20 % or held
#                                           # 50+0..50 ms: jitter reorders packets (netem.c on
#                                           # NFQUEUE, built with cc on first use; counters in
#                                           # $LAB_DIR/netem.log: lab_netem_counter reordered)
#   lab_stop PID [SECONDS]                  # SIGTERM, SIGKILL after SECONDS; reaps, returns status
#   lab_down                                # kill everything in the lab's namespaces, delete them,
#                                           # remove the lab dir; idempotent
#
# lab_up installs traps on EXIT, INT and TERM that call lab_down (INT/TERM then exit 130/143),
# so the lab goes away however the script ends, short of SIGKILL (then lab_reap tears down labs
# whose owner process is gone). A script with its own cleanup defines lab_on_down(), which lab_down
# calls first (or sets its own traps after lab_up, calling lab_down). A shell runs a trap only
# after its foreground command ends: wait long with `sleep 60 & wait $!`, not `sleep 60`.
#
# Names are unique per run: lab dir ${LAB_TMP:-/tmp}/tillsync-netlab.XXXXXX (its suffix is the
# lab ID), bridge namespace lanbr-ID, host namespaces lan-ID-h1..; so parallel labs and leftovers
# never collide. Inside the bridge namespace: br0 and one veth vK per host; in host K's namespace:
# lo and eth0 (the veth's peer, created there directly: no interface ever touches the machine's
# own namespace, nor does any daemon of the lab run there).
#
# lab_netem queues bridged frames to a userspace program: this kernel has no sch_netem, and no
# nft `queue` statement either (CONFIG_NFT_QUEUE is off: `queue` fails with ENOENT in every
# family, bridge and inet included; ebtables' `-j NFQUEUE` likewise), but it has NFQUEUE as an
# xtables target and br_netfilter built in. So the rule is iptables' `-j NFQUEUE` in the FORWARD
# chain of the bridge namespace (bridged IPv4 frames reach it through br_netfilter,
# net.bridge.bridge-nf-call-iptables=1; ARP and IPv6 do not), and one netem process in the bridge
# namespace (nfnetlink_queue is per namespace; lab_down kills it with the rest) delays and drops
# for all hosts, both ways, like lab_loss: no per-host output chains needed. Needs iptables
# (either backend) and libnetfilter-queue-dev (build) / libnetfilter-queue1 (run).
#
# Variables after lab_up: LAB_ID, LAB_DIR, LAB_N, LAB_SUBNET, LAB_BR (bridge namespace).
# Helpers: lab_ns HOST, lab_ip HOST, lab_hostdir HOST (per-host folder: HOST/run is bound over
# /run in every lab_exec), lab_pids_file. Environment: LAB_TMP (where the lab dir goes),
# LAB_KEEP=1 (keep the lab dir after lab_down, for logs), LAB_AVAHI_IPV6=yes (avahi on IPv6 too),
# LAB_NETEM_SEED=N (lab_netem's random draws replayed).

# where lab.sh (and delayproxy.c) are: bash knows; a POSIX shell does not, so the default is the
# folder of the script that sources it (tests/netlab/*.sh). Set LAB_HOME to override.
if [ -z "${LAB_HOME:-}" ]; then
    if [ -n "${BASH_SOURCE:-}" ]; then LAB_HOME=$(cd "$(dirname "$BASH_SOURCE")" && pwd); else LAB_HOME=$(cd "$(dirname "$0")" && pwd); fi
fi

lab__err() { echo "lab: $*" >&2; }

# lab__host HOST -> K (accepts h3 or 3), checks the range
lab__host() {
    local k
    k=${1#h}
    case "$k" in '' | *[!0-9]*) lab__err "no host '$1' (h1..h$LAB_N)"; return 1 ;; esac
    if [ -z "$LAB_N" ] || [ "$k" -lt 1 ] || [ "$k" -gt "$LAB_N" ]; then
        lab__err "no host '$1' (h1..h${LAB_N:-0})"
        return 1
    fi
    echo "$k"
}
lab_ns() { local k; k=$(lab__host "$1") || return 1; echo "lan-$LAB_ID-h$k"; }
lab_ip() { local k; k=$(lab__host "$1") || return 1; echo "$LAB_SUBNET.$k"; }
lab_hostdir() { local k; k=$(lab__host "$1") || return 1; echo "$LAB_DIR/h$k"; }
lab_pids_file() { echo "$LAB_DIR/pids"; }

# lab_require [TOOL...]: root and the tools the lab needs (and any TOOL given); one line if not.
lab_require() {
    local missing t
    if [ "$(id -u)" -ne 0 ]; then
        lab__err "must run as root (network namespaces, mounts, nftables): try sudo"
        return 1
    fi
    missing=""
    for t in ip nft dbus-daemon avahi-daemon mount "$@"; do
        command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
    done
    if [ -n "$missing" ]; then
        lab__err "missing tools:$missing (apt-get install --no-install-recommends iproute2 nftables dbus avahi-daemon avahi-utils iputils-ping)"
        return 1
    fi
}

# lab__wait TENTHS COMMAND...: polls every 0.1 s
lab__wait() {
    local n
    n=$1
    shift
    while [ "$n" -gt 0 ]; do
        "$@" 2>/dev/null && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}

# lab__spawn DIR OUT CMD...: CMD in the background inside the namespace, with DIR/run bound over
# /run; the subshell execs ip, which execs sh, which execs CMD: $! is CMD's PID. Sets LAB_PID.
lab__spawn() {
    local ns run out
    ns=$1
    run=$2
    out=$3
    shift 3
    (exec ip netns exec "$ns" sh -c 'mount -n --bind "$0" /run && exec "$@"' "$run" "$@" \
        </dev/null >>"$out" 2>&1) &
    LAB_PID=$!
    echo "$LAB_PID" >>"$LAB_DIR/pids"
}

# lab_exec HOST CMD...: runs CMD in HOST's namespace with HOST's /run; returns CMD's status.
# `lab_exec h1 CMD &` works too, but then $! is a subshell: use lab_bg to get CMD's PID.
lab_exec() {
    local k
    k=$(lab__host "$1") || return 1
    shift
    ip netns exec "lan-$LAB_ID-h$k" sh -c 'mount -n --bind "$0" /run && exec "$@"' \
        "$LAB_DIR/h$k/run" "$@"
}

# lab_bg HOST OUTFILE CMD...: CMD in the background in HOST, stdout and stderr appended to
# OUTFILE; LAB_PID is CMD's PID (recorded: lab_down kills it, and everything else in the lab).
lab_bg() {
    local k out
    k=$(lab__host "$1") || return 1
    out=$2
    shift 2
    lab__spawn "lan-$LAB_ID-h$k" "$LAB_DIR/h$k/run" "$out" "$@"
}

# lab_up N [SUBNET]: SUBNET is the first three octets of a /24 (default 10.77.0)
lab_up() {
    local n sub k ns d
    n=${1:-}
    case "$n" in '' | *[!0-9]*) lab__err "usage: lab_up N [SUBNET]"; return 1 ;; esac
    if [ "$n" -lt 1 ] || [ "$n" -gt 250 ]; then lab__err "lab_up: N must be 1..250"; return 1; fi
    [ -z "${LAB_DIR:-}" ] || { lab__err "lab_up: a lab is already up ($LAB_DIR)"; return 1; }
    lab_require || return 1
    sub=${2:-10.77.0}
    LAB_DIR=$(mktemp -d "${LAB_TMP:-/tmp}/tillsync-netlab.XXXXXX") || return 1
    LAB_ID=${LAB_DIR##*.}
    LAB_N=$n
    LAB_SUBNET=$sub
    LAB_BR="lanbr-$LAB_ID"
    LAB_PID=""
    [ -d /run/netns ] && LAB__HAD_NETNS=1 || LAB__HAD_NETNS=0
    : >"$LAB_DIR/pids"
    echo "$$" >"$LAB_DIR/owner"
    printf 'LAB_ID=%s\nLAB_N=%s\nLAB_SUBNET=%s\nLAB_BR=%s\n' "$LAB_ID" "$n" "$sub" "$LAB_BR" \
        >"$LAB_DIR/lab.env"
    trap 'lab_down' EXIT
    trap 'lab_down; trap - EXIT; exit 130' INT
    trap 'lab_down; trap - EXIT; exit 143' TERM

    # the bridge (its own namespace: nothing in the machine's own)
    ip netns add "$LAB_BR" || { lab__err "cannot create namespace $LAB_BR"; lab_down; return 1; }
    echo "$LAB_BR" >>"$LAB_DIR/netns"
    ip -n "$LAB_BR" link set lo up &&
        ip -n "$LAB_BR" link add br0 type bridge stp_state 0 mcast_snooping 0 &&
        ip -n "$LAB_BR" link set br0 up ||
        { lab__err "cannot create the bridge in $LAB_BR"; lab_down; return 1; }

    k=1
    while [ "$k" -le "$n" ]; do
        ns="lan-$LAB_ID-h$k"
        d="$LAB_DIR/h$k"
        mkdir -p "$d/run/dbus" "$d/run/avahi-daemon" || { lab_down; return 1; }
        ip netns add "$ns" || { lab__err "cannot create namespace $ns"; lab_down; return 1; }
        echo "$ns" >>"$LAB_DIR/netns"
        if ! { ip -n "$ns" link set lo up &&
            ip -n "$LAB_BR" link add "v$k" type veth peer name eth0 netns "$ns" &&
            ip -n "$LAB_BR" link set "v$k" master br0 &&
            ip -n "$LAB_BR" link set "v$k" up &&
            ip -n "$ns" addr add "$sub.$k/24" dev eth0 &&
            ip -n "$ns" link set eth0 multicast on up; }; then
            lab__err "cannot wire host h$k"
            lab_down
            return 1
        fi
        cat >"$d/avahi.conf" <<EOF
[server]
host-name=h$k
domain-name=local
use-ipv4=yes
use-ipv6=${LAB_AVAHI_IPV6:-no}
allow-interfaces=eth0
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
[reflector]
[rlimits]
EOF
        # avahi-daemon and dbus-daemon run as their own users: let them into the folders
        chmod 755 "$LAB_DIR" "$d" "$d/run" "$d/run/dbus" "$d/run/avahi-daemon"
        lab__dbus_start "$k" && lab__avahi_start_bg "$k" || { lab_down; return 1; }
        k=$((k + 1))
    done
    k=1
    while [ "$k" -le "$n" ]; do
        lab__avahi_wait "$k" || { lab_down; return 1; }
        k=$((k + 1))
    done
}

lab__dbus_start() {
    local d
    d="$LAB_DIR/h$1"
    lab__spawn "lan-$LAB_ID-h$1" "$d/run" "$d/dbus.log" dbus-daemon --system --nofork --nopidfile
    echo "$LAB_PID" >"$d/dbus.pid"
    if ! lab__wait 100 test -S "$d/run/dbus/system_bus_socket"; then
        lab__err "h$1: dbus-daemon did not start: $(tail -n 3 "$d/dbus.log" | tr '\n' ' ')"
        return 1
    fi
}

lab__avahi_start_bg() {
    local d
    d="$LAB_DIR/h$1"
    rm -f "$d/run/avahi-daemon/pid"
    : >"$d/avahi.log"
    lab__spawn "lan-$LAB_ID-h$1" "$d/run" "$d/avahi.log" \
        avahi-daemon -f "$d/avahi.conf" --no-rlimits --no-chroot
    echo "$LAB_PID" >"$d/avahi.pid"
}

lab__avahi_wait() {
    local d
    d="$LAB_DIR/h$1"
    if ! lab__wait 150 grep -q "Server startup complete" "$d/avahi.log"; then
        lab__err "h$1: avahi-daemon did not start: $(tail -n 3 "$d/avahi.log" | tr '\n' ' ')"
        return 1
    fi
}

# lab__gone PID: the process exited (gone, or a zombie)
lab__gone() {
    local st
    [ ! -e "/proc/$1" ] && return 0
    st=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null)
    [ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}

# lab_stop PID [SECONDS]: SIGTERM to a PID the lab started, SIGKILL after SECONDS (5); reaps it
# and returns its exit status when it is our child.
lab_stop() {
    kill -TERM "$1" 2>/dev/null
    lab__wait $((${2:-5} * 10)) lab__gone "$1" || kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

lab_avahi_stop() {
    local k p
    k=$(lab__host "$1") || return 1
    p=$(cat "$LAB_DIR/h$k/avahi.pid" 2>/dev/null)
    [ -n "$p" ] || return 0
    lab_stop "$p" 5
    : >"$LAB_DIR/h$k/avahi.pid"
}

lab_avahi_start() {
    local k p
    k=$(lab__host "$1") || return 1
    p=$(cat "$LAB_DIR/h$k/avahi.pid" 2>/dev/null)
    if [ -n "$p" ] && ! lab__gone "$p"; then return 0; fi
    lab__avahi_start_bg "$k" && lab__avahi_wait "$k"
}

# lab_cut HOST / lab_restore HOST: the bridge's end of HOST's cable down / up. HOST's eth0 loses
# its carrier; nothing crosses until lab_restore.
lab_cut() {
    local k
    k=$(lab__host "$1") || return 1
    ip -n "$LAB_BR" link set "v$k" down
}
lab_restore() {
    local k
    k=$(lab__host "$1") || return 1
    ip -n "$LAB_BR" link set "v$k" up
}

# lab_loss PERCENT [HOST]: each IPv4/IPv6 frame crossing the bridge is dropped with probability
# PERCENT/100 (ARP is spared, so neighbours stay resolved). A request/reply exchange crosses twice:
# a ping is lost with probability 1-(1-p)^2 (lab_loss 50: 75 %). With HOST, only frames HOST
# sends are dropped (a ping from HOST: lost with probability p). Replaces an earlier lab_loss.
lab_loss() {
    local p k match
    p=${1:-}
    case "$p" in '' | *[!0-9]*) lab__err "usage: lab_loss PERCENT [HOST]"; return 1 ;; esac
    [ "$p" -le 100 ] || { lab__err "lab_loss: PERCENT must be 0..100"; return 1; }
    match=""
    if [ -n "${2:-}" ]; then
        k=$(lab__host "$2") || return 1
        match="iifname \"v$k\""
    fi
    lab_loss_clear
    ip netns exec "$LAB_BR" nft -f - <<EOF
table bridge lab_loss {
    chain forward {
        type filter hook forward priority 0; policy accept;
        $match meta protocol { ip, ip6 } numgen random mod 100 < $p counter drop
    }
}
EOF
}
lab_loss_clear() {
    ip netns exec "$LAB_BR" nft delete table bridge lab_loss 2>/dev/null
    return 0
}

# lab_delay HOST LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS [JITTER_MS]: a TCP proxy in HOST's
# namespace (tests/netlab/delayproxy.c, built with cc into the lab dir on first use) that delays
# each direction by DELAY_MS + 0..JITTER_MS, keeping order. Dial LISTEN instead of TARGET to get a
# slow link. LAB_PID is the proxy's PID (lab_stop it, or lab_down does). Needs cc.
lab_delay() {
    local k src log
    k=$(lab__host "$1") || return 1
    [ $# -ge 4 ] || { lab__err "usage: lab_delay HOST LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS [JITTER_MS]"; return 1; }
    src=$LAB_HOME/delayproxy.c
    if [ ! -x "$LAB_DIR/delayproxy" ]; then
        command -v cc >/dev/null 2>&1 || { lab__err "lab_delay needs cc"; return 1; }
        cc -O2 -o "$LAB_DIR/delayproxy" "$src" 2>"$LAB_DIR/delayproxy.build" ||
            { lab__err "cannot build $src: $(head -3 "$LAB_DIR/delayproxy.build")"; return 1; }
    fi
    log="$LAB_DIR/h$k/delayproxy-${2##*:}.log"
    : >"$log"
    lab__spawn "lan-$LAB_ID-h$k" "$LAB_DIR/h$k/run" "$log" "$LAB_DIR/delayproxy" "$2" "$3" "$4" "${5:-0}"
    lab__wait 50 grep -q "^delayproxy: $2 ->" "$log" ||
        { lab__err "h$k: delayproxy did not start: $(head -3 "$log")"; return 1; }
}

# lab_netem DELAY_MS JITTER_MS [LOSS_PCT [HOST]]: each IPv4 frame crossing the bridge (with HOST:
# only frames HOST sends) is dropped with probability LOSS_PCT % (default 0) or held DELAY_MS +
# uniform(0..JITTER_MS) ms; frames whose delays cross leave out of order (IP-level reordering).
# A request/reply crosses twice: ping RTT grows by 2*DELAY..2*(DELAY+JITTER) ms. ARP and IPv6
# pass untouched. tests/netlab/netem.c (built with cc into the lab dir on first use) runs in the
# bridge namespace on NFQUEUE 0 (see the head comment); LAB_NETEM_PID is its PID, its log is
# $LAB_DIR/netem.log (counters every second, and at its stop). LAB_NETEM_SEED=N replays a run's
# random choices (the seed is printed in the log). Replaces an earlier lab_netem.
lab_netem() {
    local d j l k match src log libs
    d=${1:-}
    j=${2:-}
    l=${3:-0}
    case "$d$j$l" in '' | *[!0-9]*)
        lab__err "usage: lab_netem DELAY_MS JITTER_MS [LOSS_PCT [HOST]] (whole numbers)"
        return 1
        ;;
    esac
    [ -n "$d" ] && [ -n "$j" ] && [ "$l" -le 100 ] ||
        { lab__err "usage: lab_netem DELAY_MS JITTER_MS [LOSS_PCT 0..100 [HOST]]"; return 1; }
    match=""
    if [ -n "${4:-}" ]; then
        k=$(lab__host "$4") || return 1
        match="-m physdev --physdev-in v$k"
    fi
    command -v iptables >/dev/null 2>&1 ||
        { lab__err "lab_netem needs iptables (apt-get install --no-install-recommends iptables)"; return 1; }
    src=$LAB_HOME/netem.c
    if [ ! -x "$LAB_DIR/netem" ]; then
        command -v cc >/dev/null 2>&1 || { lab__err "lab_netem needs cc"; return 1; }
        libs=$(pkg-config --libs libnetfilter_queue 2>/dev/null) || libs="-lnetfilter_queue -lnfnetlink"
        cc -O2 -o "$LAB_DIR/netem" "$src" $libs 2>"$LAB_DIR/netem.build" ||
            { lab__err "cannot build $src (needs libnetfilter-queue-dev): $(head -3 "$LAB_DIR/netem.build")"; return 1; }
    fi
    lab_netem_clear
    ip netns exec "$LAB_BR" sysctl -qw net.bridge.bridge-nf-call-iptables=1 ||
        { lab__err "lab_netem: no br_netfilter (net.bridge.bridge-nf-call-iptables) in $LAB_BR"; return 1; }
    mkdir -p "$LAB_DIR/br/run"
    log="$LAB_DIR/netem.log"
    : >"$log"
    lab__spawn "$LAB_BR" "$LAB_DIR/br/run" "$log" "$LAB_DIR/netem" 0 "$d" "$j" "$l" ${LAB_NETEM_SEED:-}
    LAB_NETEM_PID=$LAB_PID
    echo "$LAB_PID" >"$LAB_DIR/netem.pid"
    if ! lab__wait 50 grep -q "^netem: queue 0 ready" "$log"; then
        lab__err "netem did not start: $(head -3 "$log" | tr '\n' ' ')"
        lab_netem_clear
        return 1
    fi
    # --queue-bypass: should netem die, frames pass (undelayed) instead of vanishing
    ip netns exec "$LAB_BR" iptables -w -A FORWARD $match -j NFQUEUE --queue-num 0 --queue-bypass ||
        { lab__err "lab_netem: cannot add the NFQUEUE rule in $LAB_BR"; lab_netem_clear; return 1; }
}
# lab_netem_clear: the rule goes first, then netem (SIGTERM: it lets the frames it holds go and logs
# its final counters, "netem: stop ..."). Idempotent.
lab_netem_clear() {
    local p
    [ -e "/run/netns/$LAB_BR" ] && ip netns exec "$LAB_BR" iptables -w -F FORWARD 2>/dev/null
    p=$(cat "$LAB_DIR/netem.pid" 2>/dev/null)
    if [ -n "$p" ]; then
        lab_stop "$p" 5
        : >"$LAB_DIR/netem.pid"
    fi
    LAB_NETEM_PID=""
    return 0
}
# lab_netem_counter NAME: netem's latest value of counter NAME (received, dropped, released,
# reordered, held, passed) from its log: up to a second old while it runs, final after
# lab_netem_clear.
lab_netem_counter() {
    grep -E '^netem: (counters|stop) ' "$LAB_DIR/netem.log" 2>/dev/null | tail -n 1 |
        sed -n "s/.* $1=\([0-9]*\).*/\1/p"
}

# lab_down: kill every process in the lab's namespaces (TERM, then KILL after 3 s), delete the
# namespaces, remove the lab dir (kept with LAB_KEEP=1). Idempotent; safe from traps.
lab_down() {
    local spaces k live ns p t left
    [ -n "${LAB_DIR:-}" ] || return 0
    if command -v lab_on_down >/dev/null 2>&1 && [ -z "${LAB__IN_HOOK:-}" ]; then
        LAB__IN_HOOK=1
        lab_on_down
        LAB__IN_HOOK=
    fi
    spaces=$(cat "$LAB_DIR/netns" 2>/dev/null)
    # also the names a run interrupted between `ip netns add` and its record would have used
    k=1
    while [ "$k" -le "${LAB_N:-0}" ]; do
        spaces="$spaces lan-$LAB_ID-h$k"
        k=$((k + 1))
    done
    spaces="$spaces lanbr-$LAB_ID"
    live=""
    for ns in $spaces; do
        [ -e "/run/netns/$ns" ] || continue
        case " $live " in *" $ns "*) continue ;; esac
        live="$live $ns"
    done
    for ns in $live; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    done
    t=0
    while [ $t -lt 30 ]; do
        left=""
        for ns in $live; do left="$left$(ip netns pids "$ns" 2>/dev/null)"; done
        [ -z "$left" ] && break
        sleep 0.1
        t=$((t + 1))
    done
    for ns in $live; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    # reap our own children (the daemons and lab_bg commands), so no zombie is left
    for p in $(cat "$LAB_DIR/pids" 2>/dev/null); do
        lab__wait 20 lab__gone "$p" && wait "$p" 2>/dev/null
    done
    for ns in $live; do ip netns del "$ns" 2>/dev/null || lab__err "cannot delete namespace $ns"; done
    # /run/netns: remove it only if this lab created it and no namespace is left in it
    if [ "${LAB__HAD_NETNS:-1}" = 0 ] && [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
        umount /run/netns 2>/dev/null
        rmdir /run/netns 2>/dev/null
    fi
    if [ -n "${LAB_KEEP:-}" ]; then
        echo "lab: kept $LAB_DIR" >&2
    else
        rm -rf "$LAB_DIR"
    fi
    LAB_DIR=""
    LAB_N=""
    return 0
}

# lab_reap: tear down leftovers of labs whose owner process is gone (a run killed with SIGKILL).
# Labs of live owners (parallel runs) are left alone.
lab_reap() {
    local d o
    for d in "${LAB_TMP:-/tmp}"/tillsync-netlab.*; do
        [ -d "$d" ] && [ -f "$d/owner" ] || continue
        o=$(cat "$d/owner")
        [ -n "$o" ] && kill -0 "$o" 2>/dev/null && continue
        (
            LAB_DIR=$d
            LAB_ID=${d##*.}
            LAB_N=$(sed -n 's/^LAB_N=//p' "$d/lab.env")
            LAB__HAD_NETNS=1
            lab_on_down() { :; }
            echo "lab: reaping $d" >&2
            lab_down
        )
    done
}
