#!/usr/bin/env bash
# scaling_measure.sh - the measured inputs of docs/scaling.md's alpha-beta model,
# written to OUTDIR (default docs/scaling_data):
#   mpi_coll_np2.txt   bench/mpi_coll.sh 2   (the collectives on 2 ranks)
#   mpi_coll_np4.txt   bench/mpi_coll.sh 4   (4 ranks, oversubscribed on a 2-CPU machine)
#   mpi_coll_np2_malloc.txt  2 ranks, MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ = 1 GiB
#   compute.jsonl      deepmoe bench --mode train --json, ROUNDS rounds each of
#                      seed layer (D=512 E=8 k=2 H=256), batch 1024, 1 and 2 threads
#                      default classifier (784 -> 384, 2 layers E=8 k=2 H=384), batch 128
#                      (1 thread: one rank of the 2-rank runs) and batch 256 (2 threads)
#                      each line with a "case" key added
# Then: bench/scaling_model.py --mpi-coll OUTDIR/mpi_coll_np2.txt --compute OUTDIR/compute.jsonl
# Usage: bench/scaling_measure.sh [OUTDIR] [rounds (3)]
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-docs/scaling_data}
ROUNDS=${2:-3}
B=build/deepmoe
mkdir -p "$OUT"
[ -x "$B" ] || make -s -j2 cli DEPS=0
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
bench/mpi_coll.sh 2 >"$OUT/mpi_coll_np2.txt"
bench/mpi_coll.sh 4 >"$OUT/mpi_coll_np4.txt"
# the same 2 ranks with glibc's mmap and trim thresholds both raised (docs/scaling.md: the
# 16 MiB reduce-scatter; the mmap threshold alone makes the 1-8 MiB reductions slower)
MPIRUN_FLAGS="-x MALLOC_MMAP_THRESHOLD_=1073741824 -x MALLOC_TRIM_THRESHOLD_=1073741824" \
    bench/mpi_coll.sh 2 >"$OUT/mpi_coll_np2_malloc.txt"
if [ -d /usr/share/datasets/fashion-mnist ]; then DATA=(--data fashion-mnist); else
    DATA=(--data synthetic:dim=784,regimes=10,rows=20000 --task classify); fi
"$B" train "${DATA[@]}" --steps 1 --out "$T/fm" --threads 2 >/dev/null   # the classifier's shape, 1 step
: >"$OUT/compute.jsonl"
bench_case() {   # $1 = case name, rest = deepmoe bench flags
    local name=$1; shift
    "$B" bench --mode train --iters 20 --json "$@" | tail -1 | sed "s/^{/{\"case\":\"$name\",/" >>"$OUT/compute.jsonl"
}
for _ in $(seq "$ROUNDS"); do
    bench_case seed_b1024_t2 --batch 1024 --threads 2
    bench_case seed_b1024_t1 --batch 1024 --threads 1
    bench_case classifier_b128_t1 --model "$T/fm/model.safetensors" --batch 128 --threads 1
    bench_case classifier_b256_t2 --model "$T/fm/model.safetensors" --batch 256 --threads 2
done
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, load average $(cut -d' ' -f1 /proc/loadavg)" >"$OUT/machine.txt"
echo "wrote $OUT/mpi_coll_np2.txt $OUT/mpi_coll_np4.txt $OUT/mpi_coll_np2_malloc.txt $OUT/compute.jsonl $OUT/machine.txt"
