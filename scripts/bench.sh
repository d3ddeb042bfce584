#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# scripts/bench.sh — builds tillsync in Release (build-bench/) and runs every benchmark, printing
# their results. Exits non-zero when a build fails or a benchmark fails its correctness check; a
# missed speed target is printed as MISS and does not fail the run.
#
# usage: scripts/bench.sh [--quick] [--scale] [--cloud]
#                         [--only writes|merge|standard|io|backup|node|console|relay|cloud|scale|peers]
#                         [-- extra benchmark arguments]
#   --quick   one repetition each instead of three (figures are then single runs); bench_node
#             gets --quick (300 sales, 20,000 batches, 15 s of load)
#   --only    run one benchmark
#   --scale   bench_scale includes 1M rows (--full: minutes, and GBs of RSS at main); off by default
#   --only console   bench_node's console case alone (issue 12: sync with console viewers,
#             /api/status under 200 sales/s); the full run has it as part of bench_node
# bench_scale (10k and 100k rows) and the peers (bench/peers: node, `npm ci` from its lock file)
# run only when named with --only or when --scale is given: the full run and CI skip them.
# bench_cloud (issue 13: restore of a cloud backup of 1M rows vs a local restore, and a new
# till's catch-up of 100,000 batches from the relay through a real node; minutes) runs only
# with --cloud or --only cloud (--quick: 20,000 rows, 2,000 batches: a correctness run).
# bench_relay (issue 13: 200 shops x 3 tills through a relay, 2 minutes of RSS; --quick: 10 s
# of load) runs in the full run after bench_node. With the JetStream store (a nats-server it
# starts itself): scripts/bench.sh --only relay -- --nats
# environment: BUILD_DIR (default <repo>/build-bench), TSYNC_BENCH_DIR (scratch folder parent,
#   default $BUILD_DIR/bench-tmp; keep it off tmpfs), TSYNC_BENCH_SEED, TSYNC_BENCH_KEEP.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
reps=""
only=""
scale=""
cloud=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) reps="--reps 1" ;;
    --only) only=${2:-}; shift ;;
    --scale) scale=1 ;;
    --cloud) cloud=1 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$only" != peers ]; then
    echo "== building Release in $build"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTSYNC_TESTS=OFF >/dev/null || exit 1
    cmake --build "$build" -j2 --target bench_writes bench_merge bench_standard bench_io \
        bench_backup bench_node bench_scale || exit 1
    # bench_relay execs the relay: `tillsync relay run` (tillsync_cli)
    cmake --build "$build" -j2 --target bench_relay tillsync_cli || exit 1
    if [ -n "$cloud" ] || [ "$only" = cloud ]; then
        cmake --build "$build" -j2 --target bench_cloud || exit 1
    fi
fi

export TSYNC_BENCH_DIR=${TSYNC_BENCH_DIR:-$build/bench-tmp}
mkdir -p "$TSYNC_BENCH_DIR" || exit 1
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')," \
     "$(uname -sr)"
echo "== scratch folder parent: $TSYNC_BENCH_DIR"

failed=""
node_case=""
if [ "$only" = console ]; then only=node; node_case="--case=console"; fi
for b in writes merge standard io backup node relay cloud scale peers; do
    if [ -n "$only" ] && [ "$only" != "$b" ]; then continue; fi
    # scale and peers only when asked for (--only, or --scale for bench_scale)
    if [ -z "$only" ] && { [ "$b" = peers ] || { [ "$b" = scale ] && [ -z "$scale" ]; }; }; then
        continue
    fi
    if [ -z "$only" ] && [ "$b" = cloud ] && [ -z "$cloud" ]; then continue; fi
    echo
    start=$(date +%s)
    args=$reps
    # bench_node: each till is a process; --quick shortens its cases rather than its repetitions
    if [ "$b" = node ] && [ -n "$reps" ]; then args="--quick"; fi
    # bench_relay: one run, no repetitions; --quick shortens its phases
    if [ "$b" = relay ]; then
        args=""
        [ -n "$reps" ] && args="--quick"
        echo "== load average before bench_relay: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    fi
    [ "$b" = node ] && [ -n "$node_case" ] && args="$args $node_case"
    [ "$b" = node ] && echo "== load average before bench_node: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    if [ "$b" = cloud ]; then
        args=""
        [ -n "$reps" ] && args="--quick"
        echo "== load average before bench_cloud: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    fi
    if [ "$b" = scale ]; then
        args=""
        [ -n "$scale" ] && args="--full"
        echo "== load average before bench_scale: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    fi
    if [ "$b" = peers ]; then
        # node processes; npm ci (from bench/peers/package-lock.json) only here
        echo "== load average before the peers: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
        sh "$root/bench/peers/run.sh" "$@"
        rc=$?
    else
        # shellcheck disable=SC2086
        "$build/bench_$b" $args "$@"
        rc=$?
    fi
    end=$(date +%s)
    if [ $rc -ne 0 ]; then
        echo "== bench_$b: FAILED (exit status $rc) after $((end - start)) s"
        failed="$failed bench_$b"
    else
        echo "== bench_$b: correct, $((end - start)) s"
    fi
done

echo
if [ -n "$failed" ]; then
    echo "== FAILED:$failed"
    exit 1
fi
echo "== all benchmarks passed their correctness checks (speed targets: see PASS/MISS above)"
exit 0
