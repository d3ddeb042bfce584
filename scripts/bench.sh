#!/bin/sh
# scripts/bench.sh — builds tillsync in Release (build-bench/) and runs every benchmark, printing
# their results. Exits non-zero when a build fails or a benchmark fails its correctness check; a
# missed speed target is printed as MISS and does not fail the run.
#
# usage: scripts/bench.sh [--quick] [--only writes|merge|standard|io|backup|node] [-- extra benchmark arguments]
#   --quick   one repetition each instead of three (figures are then single runs); bench_node
#             gets --quick (300 sales, 20,000 batches, 15 s of load)
#   --only    run one benchmark
# environment: BUILD_DIR (default <repo>/build-bench), TSYNC_BENCH_DIR (scratch folder parent,
#   default $BUILD_DIR/bench-tmp; keep it off tmpfs), TSYNC_BENCH_SEED, TSYNC_BENCH_KEEP.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
reps=""
only=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) reps="--reps 1" ;;
    --only) only=${2:-}; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

echo "== building Release in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTSYNC_TESTS=OFF >/dev/null || exit 1
cmake --build "$build" -j2 --target bench_writes bench_merge bench_standard bench_io \
    bench_backup bench_node || exit 1

export TSYNC_BENCH_DIR=${TSYNC_BENCH_DIR:-$build/bench-tmp}
mkdir -p "$TSYNC_BENCH_DIR" || exit 1
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')," \
     "$(uname -sr)"
echo "== scratch folder parent: $TSYNC_BENCH_DIR"

failed=""
for b in writes merge standard io backup node; do
    if [ -n "$only" ] && [ "$only" != "$b" ]; then continue; fi
    echo
    start=$(date +%s)
    args=$reps
    # bench_node: each till is a process; --quick shortens its cases rather than its repetitions
    if [ "$b" = node ] && [ -n "$reps" ]; then args="--quick"; fi
    [ "$b" = node ] && echo "== load average before bench_node: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    # shellcheck disable=SC2086
    "$build/bench_$b" $args "$@"
    rc=$?
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
