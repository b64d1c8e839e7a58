#!/usr/bin/env bash
# infer.sh - rows/s of `deepmoe infer` on the default seed model (D=512, E=8,
# k=2, H=256), batch 1024 and batch 1, for each kernel path and 1-2 threads,
# measured side by side in one run (median of --repeat forwards each).
# Needs numpy (Debian python3-numpy) to draw the uniform [-1, 1] inputs.
set -eu
cd "$(dirname "$0")/.."
make -s cli
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
build/deepmoe init --out "$T/m.safetensors" >/dev/null
/usr/bin/python3 -c "
import numpy as np
r = np.random.default_rng(0)
np.save('$T/x1024.npy', r.uniform(-1, 1, (1024, 512)).astype(np.float32))
np.save('$T/x1.npy', r.uniform(-1, 1, (1, 512)).astype(np.float32))"
printf '%-8s %-7s %-7s %12s %14s\n' batch threads isa "median ms" "rows/s"
for batch in 1024 1; do
    rep=$([ "$batch" = 1 ] && echo 2000 || echo 30)
    for threads in 1 2; do
        for isa in ref avx2 avx512; do
            [ "$isa" = ref ] && [ "$batch" = 1024 ] && r=3 || r=$rep
            line=$(DEEPMOE_ISA=$isa build/deepmoe infer --model "$T/m.safetensors" --input "$T/x$batch.npy" \
                   --output "$T/y.npy" --threads "$threads" --repeat "$r" | grep 'rows/s')
            ms=$(echo "$line" | sed -E 's/.*forward ([0-9.]+) ms.*/\1/')
            rps=$(echo "$line" | sed -E 's/.* ([0-9]+) rows\/s/\1/')
            printf '%-8s %-7s %-7s %12s %14s\n' "$batch" "$threads" "$isa" "$ms" "$rps"
        done
    done
done
