#!/usr/bin/env bash
# train_vs_bench.sh - issue 14's item 3: the whole run (`deepmoe train`) against
# its step alone (`deepmoe bench --mode train`) on the same model, the seed
# layer (D=512, E=8, k=2, H=256, batch 1024, MSE), alternated round after round
# so that drift on a shared machine hits both; prints each one's median rows/s
# and train/bench (the target: >= 0.90, the run within 10% of its step).
# train runs 200 steps: its first step touches every buffer for the first time
# (about 40 ms, 5 steps' worth), which a short run would count several times over.
# Usage: bench/train_vs_bench.sh [rounds (5)] [precision (fp32)] [threads (2)]
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
PREC=${2:-fp32}
THREADS=${3:-2}
[ -x build/deepmoe ] || make -s cli
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for r in $(seq "$ROUNDS"); do
    build/deepmoe train --data synthetic:dim=512,rows=70000,regimes=8 --experts 8 --top-k 2 --hidden 256 \
        --batch 1024 --steps 200 --warmup 2 --threads "$THREADS" --log-every 100000 --precision "$PREC" \
        --out "$T/run" | sed -nE 's/.*train time.*\(([0-9]+) rows\/s\).*/\1/p' >>"$T/train"
    rm -rf "$T/run"
    build/deepmoe bench --mode train --precision "$PREC" --iters 60 --threads "$THREADS" --json |
        sed -E 's/.*"rows_per_s": *([0-9.]+).*/\1/' >>"$T/bench"
done
med() { sort -g "$1" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
printf "%-8s %14s   %s\n" "" "median rows/s" "all rounds"
for w in train bench; do printf "%-8s %14.0f   %s\n" "$w" "$(med "$T/$w")" "$(tr '\n' ' ' <"$T/$w")"; done
awk -v a="$(med "$T/train")" -v b="$(med "$T/bench")" 'BEGIN { printf "train/bench: %.3f\n", a / b }'
echo "($ROUNDS rounds, --precision $PREC, $THREADS threads; train: 200 steps after the data is generated, the first (buffers touched for the first time: ~40 ms) included)"
