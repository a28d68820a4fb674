#!/usr/bin/env bash
# Runs the benchmarks that a refactoring must keep within noise, for an
# older revision and for this checkout, in one go on the same machine:
# mapping throughput, the no-op reconcile (calls, writes, RSS at 100k
# events), Google batch counts and change latency.
#
#   scripts/bench-compare.sh BASE_REV [OUT_DIR]
#
# BASE_REV is checked out in a detached worktree (BENCH_BASE_TREE, default
# target/bench-base-tree). Each side is built with the bench profile in its
# own target directory (BENCH_BASE_TARGET, default target/bench-base;
# BENCH_MAIN_TARGET, default target). Then every benchmark runs for the base
# and then for this checkout, one after the other, so that both see the same
# machine; each output goes to OUT_DIR/<bench>-<side>.txt (default
# target/bench-compare) and the summary lines are printed at the end.
# Timings want a quiet machine; call counts, writes and RSS do not.
set -euo pipefail

base_rev=${1:?usage: scripts/bench-compare.sh BASE_REV [OUT_DIR]}
root=$(git rev-parse --show-toplevel)
out=${2:-$root/target/bench-compare}
base_tree=${BENCH_BASE_TREE:-$root/target/bench-base-tree}
base_target=${BENCH_BASE_TARGET:-$root/target/bench-base}
main_target=${BENCH_MAIN_TARGET:-$root/target}
mkdir -p "$out"

if [ ! -e "$base_tree/.git" ]; then
    git -C "$root" worktree add --detach "$base_tree" "$base_rev"
else
    git -C "$base_tree" checkout --quiet --detach "$base_rev"
fi

# bench name, package
benches=(
    "mapping bridge-core"
    "reconcile feishu-bridge"
    "google feishu-bridge"
    "latency feishu-bridge"
)

side_dir() { if [ "$1" = base ]; then echo "$base_tree"; else echo "$root"; fi; }
side_target() { if [ "$1" = base ]; then echo "$base_target"; else echo "$main_target"; fi; }

for side in base main; do
    for b in "${benches[@]}"; do
        set -- $b
        echo "== building $1 ($side)"
        (cd "$(side_dir "$side")" && CARGO_TARGET_DIR=$(side_target "$side") \
            cargo bench --no-run --quiet -p "$2" --bench "$1")
    done
done

for b in "${benches[@]}"; do
    set -- $b
    for side in base main; do
        echo "== running $1 ($side)"
        (cd "$(side_dir "$side")" && CARGO_TARGET_DIR=$(side_target "$side") \
            cargo bench --quiet -p "$2" --bench "$1") >"$out/$1-$side.txt" 2>&1 || {
            echo "bench $1 ($side) failed; see $out/$1-$side.txt" >&2
            exit 1
        }
    done
done

echo
echo "== summary (base $(git -C "$base_tree" rev-parse --short HEAD), main $(git -C "$root" rev-parse --short HEAD))"
for b in "${benches[@]}"; do
    set -- $b
    for side in base main; do
        echo "-- $1 ($side)"
        grep -E '^mapping/|time:|calls|writes|RSS|batch|p50|no-op|requests' \
            "$out/$1-$side.txt" | grep -v -E '^\s*$' | head -40
    done
done
