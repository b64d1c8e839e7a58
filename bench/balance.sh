#!/usr/bin/env bash
# balance.sh - expert balance of the bare seed layer trained on the synthetic
# regimes set under each balance setting (numbers for docs/balance.md).
# Usage: bench/balance.sh [steps]   (default 1500)
set -eu
cd "$(dirname "$0")/.."
make -s cli
STEPS=${1:-1500}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
DATA="synthetic:regimes=8,dim=16,rows=30000"
COMMON="--data $DATA --experts 8 --top-k 2 --hidden 32 --steps $STEPS --batch 128 --lr 3e-3 --warmup 50 --seed 1 --threads 2"
printf '%-28s %12s %8s %10s %10s %10s\n' balance utilization MaxVio "test mse" "routing" "purity"
for spec in none seed seed=1.0 switch switch=0.3 aux_free aux_free=0.01 z_loss switch,aux_free; do
    out=$(build/deepmoe train $COMMON --balance "$spec" --out "$T/run" --log-every 100000 2>&1 | grep '^test:')
    util=$(echo "$out" | sed -E 's/.*expert utilization ([0-9.]+).*/\1/')
    vio=$(echo "$out" | sed -E 's/.*MaxVio ([0-9.]+).*/\1/')
    mse=$(echo "$out" | sed -E 's/.*mse ([0-9.]+).*/\1/')
    racc=$(echo "$out" | sed -E 's/.*routing accuracy ([0-9.]+).*/\1/')
    pur=$(echo "$out" | sed -E 's/.*regime purity ([0-9.]+).*/\1/')
    printf '%-28s %12s %8s %10s %10s %10s\n' "$spec" "$util" "$vio" "$mse" "$racc" "$pur"
done
