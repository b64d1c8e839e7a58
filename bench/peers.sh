#!/usr/bin/env bash
# peers.sh - the seed layer's forward (D=512, E=8, k=2, H=256) through deepmoe
# and its peers, one after the other in one run on the same machine:
#   deepmoe bench                 (this repository)
#   OpenBLAS cblas_sgemm per expert (bench/openblas_moe.c; libopenblas-openmp-dev)
#   PyTorch 1.13 dense (the seed as written) and sparse (bench/torch_seed.py; python3-torch)
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for the OpenBLAS and PyTorch peers only
# (they halve OpenBLAS's speed on these machines). Usage: bench/peers.sh [threads]  (2)
set -eu
cd "$(dirname "$0")/.."
T=${1:-2}
make -s cli
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# Debian's libopenblas-dev comes as libopenblas-{openmp,pthread,serial}-dev: take whichever is installed
for inc in /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/x86_64-linux-gnu/openblas-pthread \
           /usr/include/x86_64-linux-gnu/openblas-serial; do
    if [ -f "$inc/cblas.h" ]; then
        cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L bench/openblas_moe.c -I"$inc" -lopenblas -lm -o "$W/openblas_moe"
        break
    fi
done
num() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; $(date -u +%F)"
printf '%-44s %12s %10s\n' "forward, seed layer" "rows/s" "vs deepmoe"
d1024=$(build/deepmoe bench --batch 1024 --iters 30 --threads "$T" --json)
ours=$(echo "$d1024" | num rows_per_s)
printf '%-44s %12.0f %10s   (%s GFLOP/s, %.0f%% of the measured %s GFLOP/s peak)\n' "deepmoe, batch 1024, $T threads" "$ours" "1.00" \
    "$(echo "$d1024" | num gflops)" "$(echo "$d1024" | awk -F'"fraction_of_peak":' '{print 100 * $2}')" "$(echo "$d1024" | num peak_gflops)"
one=$(build/deepmoe bench --batch 1024 --iters 30 --threads 1 --json | num rows_per_s)
printf '%-44s %12.0f %10.2f   (%s threads / 1 thread: %.2fx)\n' "deepmoe, batch 1024, 1 thread" "$one" "$(echo "$one $ours" | awk '{print $1 / $2}')" "$T" "$(echo "$ours $one" | awk '{print $1 / $2}')"
b1=$(build/deepmoe bench --batch 1 --iters 3000 --threads "$T" --json)
printf '%-44s %12.0f %10s   (p50 %s us, p99 %s us)\n' "deepmoe, batch 1, $T threads" "$(echo "$b1" | num rows_per_s)" "-" "$(echo "$b1" | num us_p50)" "$(echo "$b1" | num us_p99)"
if [ -x "$W/openblas_moe" ]; then
    ob=$(OMP_NUM_THREADS=$T env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$W/openblas_moe" 1024 30 | sed -E 's/.*: ([0-9]+) rows\/s.*/\1/')
    printf '%-44s %12.0f %10.2f   (deepmoe is %.2fx)\n' "OpenBLAS sgemm per expert, batch 1024" "$ob" "$(echo "$ob $ours" | awk '{print $1 / $2}')" "$(echo "$ours $ob" | awk '{print $1 / $2}')"
else
    echo "OpenBLAS peer skipped: install libopenblas-dev (libopenblas-openmp-dev runs best with PyTorch's OpenMP)"
fi
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/torch_seed.py "$T" >"$W/torch.txt"
    for v in dense sparse; do
        for b in 1024 1; do
            r=$(awk -v v=$v -v b=$b '$1 == "batch" && $2 == b && $3 == v {print $6}' "$W/torch.txt")
            printf '%-44s %12.0f %10.3f\n' "PyTorch 1.13 $v, batch $b" "$r" "$(echo "$r $ours" | awk '{print $1 / $2}')"
        done
    done
    grep '^torch' "$W/torch.txt" | sed 's/^/  /'
else
    echo "PyTorch peer skipped: install python3-torch"
fi
