#!/usr/bin/env bash
# compression.sh - every weight type side by side in one run, for the seed layer
# (D=512, E=8, k=2, H=256, PyTorch init) and the default Fashion-MNIST
# classifier: file size, test accuracy (classifier), top-k flip rate against
# fp32, rows/s at batch 1, 64 and 1024, batch-1 p50/p99; the nm24 types also
# after 2:4 fine-tuning (train --keep-sparsity); and Debian PyTorch's
# quantize_dynamic on the same weights (bench/torch_quant.py, run with
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset for that command only). Rounds are
# interleaved over the types so that drift on a shared machine hits them all;
# medians are printed as a markdown table.
#
# Usage: bench/compression.sh [rounds (3)] [threads (2)] [classifier model
#        (runs/fm/model.safetensors; trained here if missing)] [fine-tune epochs (2)]
# Needs build/deepmoe (made if missing), /usr/bin/python3 with numpy (and torch for
# the PyTorch rows, skipped with a note without it), Debian's dataset-fashion-mnist.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${2:-2}
FM=${3:-runs/fm/model.safetensors}
FT_EPOCHS=${4:-2}
B=build/deepmoe
PY=/usr/bin/python3
[ -x "$B" ] || make -s cli
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
TYPES="f32 bf16 f16 q8 q8all nm24 nm24:bf16 nm24:q8"   # q8all: router, embedding and head in q8 too
FMDIR=/usr/share/datasets/fashion-mnist

echo "# compression.sh: $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $THREADS threads, $ROUNDS rounds" >&2
# ---------------------------------------------------------------- models
"$B" init --out "$T/seed.f32.safetensors" >/dev/null
"$PY" -c "import numpy as np; np.save('$T/x.npy', np.random.RandomState(0).uniform(-1, 1, (4096, 512)).astype(np.float32))"
if [ ! -f "$FM" ]; then
    echo "training the default classifier into $T/fm (no $FM) ..." >&2
    "$B" train --data fashion-mnist --out "$T/fm" --threads "$THREADS" >/dev/null
    FM=$T/fm/model.safetensors
fi
cp "$FM" "$T/fm.f32.safetensors"
for m in seed fm; do
    data=$T/x.npy; [ $m = fm ] && data=fashion-mnist
    for t in $TYPES; do
        [ "$t" = f32 ] && continue
        extra=""; wt=$t
        [ "$t" = q8all ] && { extra="--router same --embed same"; wt=q8; }   # every linear, as quantize_dynamic
        "$B" quantize --model "$T/$m.f32.safetensors" --out "$T/$m.$t.safetensors" --type "$wt" $extra --data "$data" \
            --rows 0 --threads "$THREADS" --json | tail -1 >"$T/$m.$t.quant.json"
    done
done
# 2:4 fine-tuning of the classifier's pruned experts (the mask fixed), packed again
for t in nm24 nm24:bf16 nm24:q8; do
    "$B" train --data fashion-mnist --model "$T/fm.$t.safetensors" --keep-sparsity --epochs "$FT_EPOCHS" \
        --out "$T/ft.$t" --threads "$THREADS" >"$T/ft.$t.log" 2>&1
    cp "$T/ft.$t/model.packed.safetensors" "$T/fm.$t+ft.safetensors"
done
FTTYPES="nm24+ft nm24:bf16+ft nm24:q8+ft"

# ---------------------------------------------------------------- accuracy, sizes, flips (not timed)
for t in $TYPES $FTTYPES; do
    "$B" eval --model "$T/fm.$t.safetensors" --data fashion-mnist --oracle-rows 0 --threads "$THREADS" --json |
        tail -1 >"$T/fm.$t.eval.json"
done

# ---------------------------------------------------------------- speed, interleaved
cases=${CASES:-"1:3000 64:300 1024:30"}   # batch:iterations (CASES overrides, e.g. for a smoke run)
for r in $(seq "$ROUNDS"); do
    for m in seed fm; do
        for t in $TYPES $( [ $m = fm ] && echo $FTTYPES ); do
            for c in $cases; do
                b=${c%%:*} it=${c##*:}
                "$B" bench --model "$T/$m.$t.safetensors" --batch "$b" --iters "$it" --threads "$THREADS" --json |
                    tail -1 >>"$T/$m.$t.b$b.jsonl"
            done
        done
    done
done

# ---------------------------------------------------------------- PyTorch quantize_dynamic on the same weights
TORCH_OK=1
"$PY" -c "import torch" 2>/dev/null || TORCH_OK=0
if [ $TORCH_OK = 1 ] && [ -f bench/torch_quant.py ]; then
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/torch_quant.py "$T/seed.f32.safetensors" \
        --threads "$THREADS" --json >"$T/torch.seed.json" 2>"$T/torch.seed.err" || TORCH_OK=0
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/torch_quant.py "$T/fm.f32.safetensors" \
        --threads "$THREADS" --data "$FMDIR/t10k-images-idx3-ubyte.gz" \
        --labels "$FMDIR/t10k-labels-idx1-ubyte.gz" --json >"$T/torch.fm.json" 2>"$T/torch.fm.err" ||
        TORCH_OK=0
fi

# ---------------------------------------------------------------- the table
"$PY" - "$T" "$TORCH_OK" "$TYPES" "$FTTYPES" <<'EOF'
import json, os, statistics, sys
T, torch_ok, types, fttypes = sys.argv[1], sys.argv[2] == "1", sys.argv[3].split(), sys.argv[4].split()
def jl(p): return [json.loads(l) for l in open(p) if l.strip().startswith("{")]
def j(p):
    r = jl(p) if os.path.exists(p) else []
    return r[-1] if r else {}
for m in ("seed", "fm"):
    name = "seed layer (D=512, E=8, k=2, H=256)" if m == "seed" else "Fashion-MNIST classifier (default: D=384, H=384, 2 layers)"
    print("\n### %s\n" % name)
    hdr = "| weights | file MiB | vs fp32 |%s top-k flip | b1 p50 us | b1 p99 us | b1 rows/s | b64 rows/s | b1024 rows/s | b1 vs fp32 | b64 vs fp32 | b1024 vs fp32 |"
    print(hdr % (" test acc |" if m == "fm" else ""))
    print("|" + "---|" * (12 + (m == "fm")))
    base = {}
    for t in types + (fttypes if m == "fm" else []):
        f = "%s/%s.%s.safetensors" % (T, m, t)
        size = os.path.getsize(f) / 2**20
        rows = {b: [x["rows_per_s"] for x in jl("%s/%s.%s.b%d.jsonl" % (T, m, t, b))] for b in (1, 64, 1024)}
        b1 = jl("%s/%s.%s.b1.jsonl" % (T, m, t))
        med = {b: statistics.median(v) for b, v in rows.items()}
        p50 = statistics.median(x["us_p50"] for x in b1); p99 = statistics.median(x["us_p99"] for x in b1)
        if t == "f32": base = dict(med, size=size)
        q = j("%s/%s.%s.quant.json" % (T, m, t.replace("+ft", "")))
        flip = q.get("flip_rate") if "+ft" not in t else None
        acc = j("%s/fm.%s.eval.json" % (T, t)).get("accuracy") if m == "fm" else None
        cells = [t, "%.2f" % size, "%.1f%% smaller" % (100 * (1 - size / base["size"])) if t != "f32" else "-"]
        if m == "fm": cells.append("%.4f" % acc if acc is not None else "?")
        cells += ["%.4f" % flip if flip is not None else ("0" if t == "f32" else "-"), "%.1f" % p50, "%.1f" % p99]
        cells += ["%.0f" % med[b] for b in (1, 64, 1024)]
        cells += ["%.2fx" % (med[b] / base[b]) for b in (1, 64, 1024)]
        print("| " + " | ".join(cells) + " |")
    if torch_ok:
        tj = json.loads([l for l in open("%s/torch.%s.json" % (T, m)) if l.startswith("{")][-1])
        print("\nDebian PyTorch %s, same weights, %s threads (load average %.2f before, %.2f after):\n" % (
            tj.get("torch", "?"), tj.get("threads", "?"), tj.get("loadavg_before", -1), tj.get("loadavg_after", -1)))
        print("| PyTorch | test acc | b1 p50 us | b1 p99 us | b64 rows/s | b1024 rows/s | deepmoe q8 / it at b64 | at b1024 |")
        print("|---|---|---|---|---|---|---|---|")
        q8 = {b: statistics.median(x["rows_per_s"] for x in jl("%s/%s.q8.b%d.jsonl" % (T, m, b))) for b in (64, 1024)}
        names = {"fp32": "fp32 (sparse forward)", "int8": "quantize_dynamic qint8, per tensor",
                 "int8pc": "quantize_dynamic qint8, per channel"}
        for v, r in tj["variants"].items():
            acc = r.get("accuracy")
            print("| %s | %s | %.1f | %.1f | %.0f | %.0f | %.2fx | %.2fx |" % (
                names.get(v, v), "%.4f" % acc if acc is not None else "-", r["batch1_us_p50"], r["batch1_us_p99"],
                r["batch64_rows_per_s"], r["batch1024_rows_per_s"], q8[64] / r["batch64_rows_per_s"],
                q8[1024] / r["batch1024_rows_per_s"]))
    else:
        print("\n(PyTorch rows skipped: /usr/bin/python3 has no torch, or bench/torch_quant.py failed)")
EOF
