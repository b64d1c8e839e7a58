#!/usr/bin/env bash
# train_precision.sh - the training step in fp32 and in bf16 side by side
# (deepmoe bench --mode train --precision fp32|bf16), interleaved round after
# round so that drift on a shared machine hits both; prints each one's median
# and best rows/s and bf16/fp32 (issue 14's target: >= 1.5x). Without a model:
# the seed layer (D=512, E=8, k=2, H=256, batch 1024); extra arguments go to
# bench (e.g. --model M.safetensors --batch 256).
# Usage: bench/train_precision.sh [rounds (7)] [iters (30)] [bench options...]
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${1:-7}
ITERS=${2:-30}
shift $(( $# < 2 ? $# : 2 ))
[ -x build/deepmoe ] || make -s cli
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for r in $(seq "$ROUNDS"); do
    for p in fp32 bf16; do
        build/deepmoe bench --mode train --precision "$p" --iters "$ITERS" --json "$@" |
            sed -E 's/.*"rows_per_s": *([0-9.]+).*/\1/' >>"$T/$p"
    done
done
med() { sort -g "$1" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
best() { sort -g "$1" | tail -1; }
printf "%-10s %14s %14s\n" "precision" "median rows/s" "best rows/s"
for p in fp32 bf16; do printf "%-10s %14.0f %14.0f\n" "$p" "$(med "$T/$p")" "$(best "$T/$p")"; done
awk -v a="$(med "$T/fp32")" -v b="$(med "$T/bf16")" -v c="$(best "$T/fp32")" -v d="$(best "$T/bf16")" \
    'BEGIN { printf "bf16/fp32: %.3f (medians), %.3f (bests)\n", b / a, d / c }'
echo "($ROUNDS rounds interleaved, $ITERS timed steps each; bench options: ${*:-none})"
