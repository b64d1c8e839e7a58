#!/usr/bin/env bash
# train_throughput.sh - training throughput of the seed layer (D=512, E=8, k=2,
# H=256, batch 1024, MSE, forward + backward + AdamW), deepmoe and Debian's
# PyTorch measured one after the other in one run on the same machine.
# PyTorch needs python3-torch and, for a fair peer, an optimized BLAS behind
# libblas.so.3 (libopenblas0-openmp); the script prints which one torch loaded.
# Usage: bench/train_throughput.sh [threads] [steps] [precision]   (2, 40, fp32; bf16: --precision bf16)
set -eu
cd "$(dirname "$0")/.."
THREADS=${1:-2}
STEPS=${2:-40}
PREC=${3:-fp32}
make -s cli
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
echo "== deepmoe ($THREADS threads, $STEPS steps of 1024 rows after the data is generated, --precision $PREC)"
build/deepmoe train --data synthetic:dim=512,rows=45000,regimes=8 --experts 8 --top-k 2 --hidden 256 \
    --batch 1024 --steps "$STEPS" --warmup 2 --threads "$THREADS" --log-every 100000 --precision "$PREC" --out "$T/run" \
    | grep -E 'train time' | tee "$T/deepmoe.txt"
ours=$(sed -E 's/.*\(([0-9]+) rows\/s\).*/\1/' "$T/deepmoe.txt")
echo "== PyTorch"
/usr/bin/python3 bench/torch_train.py "$THREADS" | tee "$T/torch.txt"
dense=$(awk '$1 == "dense" {print $3}' "$T/torch.txt")
sparse=$(awk '$1 == "sparse" {print $3}' "$T/torch.txt")
echo "== ratio"
awk -v o="$ours" -v d="$dense" -v s="$sparse" 'BEGIN {
    printf "deepmoe %d rows/s; PyTorch dense %d rows/s (%.1fx), sparse %d rows/s (%.1fx)\n", o, d, o / d, s, o / s }'
