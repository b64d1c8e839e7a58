#!/usr/bin/env bash
# compare.sh - two deepmoe binaries side by side in one run: the forward at
# batch 1 and 1024 and the training step at 1024 on the seed layer (D=512,
# E=8, k=2, H=256), interleaved OLD, NEW, OLD, NEW ... so that drift on a shared
# machine hits both; prints each one's median rows/s and NEW/OLD.
# Usage: [BF16=1] bench/compare.sh OLD_BINARY [NEW_BINARY (build/deepmoe)] [rounds (5)] [threads (2)]
# e.g. git worktree add /tmp/old HEAD~3 && make -C /tmp/old cli && bench/compare.sh /tmp/old/build/deepmoe
set -eu
cd "$(dirname "$0")/.."
OLD=${1:?usage: bench/compare.sh OLD_BINARY [NEW_BINARY] [rounds] [threads]}
NEW=${2:-build/deepmoe}
ROUNDS=${3:-5}
THREADS=${4:-2}
[ -x "$OLD" ] || { echo "compare.sh: $OLD is not an executable" >&2; exit 1; }
[ -x "$NEW" ] || make -s cli
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cases=("forward 1 2000 fp32" "forward 1024 30 fp32" "train 1024 15 fp32")
# BF16=1: also the bf16 training step (both binaries need --precision: issue 14 on)
[ "${BF16:-0}" = 1 ] && cases+=("train 1024 15 bf16")
for r in $(seq "$ROUNDS"); do
    for c in "${cases[@]}"; do
        read -r mode batch iters prec <<<"$c"
        pf=(); [ "$prec" = bf16 ] && pf=(--precision bf16)
        for which in old new; do
            bin=$OLD; [ "$which" = new ] && bin=$NEW
            "$bin" bench --mode "$mode" --batch "$batch" --iters "$iters" --threads "$THREADS" "${pf[@]}" --json |
                sed -E 's/.*"rows_per_s": *([0-9.]+).*/\1/' >>"$T/$which.$mode.$batch.$prec"
        done
    done
done
printf "%-16s %14s %14s %9s\n" "case" "old rows/s" "new rows/s" "new/old"
med() { sort -g "$1" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for c in "${cases[@]}"; do
    read -r mode batch _ prec <<<"$c"
    o=$(med "$T/old.$mode.$batch.$prec"); n=$(med "$T/new.$mode.$batch.$prec")
    name="$mode b=$batch"; [ "$prec" = bf16 ] && name="$name bf16"
    awk -v c="$name" -v o="$o" -v n="$n" 'BEGIN { printf "%-16s %14.0f %14.0f %9.3f\n", c, o, n, n / o }'
done
echo "($ROUNDS rounds interleaved, $THREADS threads, medians; $(basename "$OLD") vs $(basename "$NEW"))"
