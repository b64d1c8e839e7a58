#!/usr/bin/env bash
# dist_peers.sh - distributed (data-parallel) training of the default
# Fashion-MNIST classifier shape (784 -> 384, 2 seed MoE layers D=384 E=8 k=2
# H=384, LayerNorm, head 10; ~5.06 M parameters), global batch 256, deepmoe and
# Debian's PyTorch one after the other in one run on the same machine:
#   PyTorch  bench/torch_ddp.py: ddp and zero (ZeroRedundancyOptimizer) on 2
#            ranks x 1 thread (gloo), single: 1 process x 2 threads; and gloo's
#            all-reduce of the gradient size (20 MB) alone
#   MPI      bench/mpi_coll.sh: the collectives' alpha / beta on 2 ranks
#   deepmoe  single process, 2 threads, batch 256 (always); and, if
#            `build/deepmoe train --help` mentions --dist, mpirun -np 2
#            build/deepmoe train --dist dp|zero1|zero2|zero3 --threads 1 --batch 128 (per rank),
#            and --dist dp --precision bf16 (bf16 GEMM operands: not PyTorch's fp32)
# and prints rows/s and the communication share side by side, with ratios.
#
# Usage: [DEEPMOE=path/to/deepmoe] bench/dist_peers.sh [steps (30)]
#   steps: timed steps per PyTorch measurement (3 rounds each with and without
#   gradient sync) and deepmoe's --steps (its rows/s: the median over
#   metrics.jsonl's records after the first).
# Needs mpicc/mpirun (OpenMPI), /usr/bin/python3 with torch, and Debian's
# dataset-fashion-mnist (/usr/share/datasets/fashion-mnist; without it
# deepmoe trains on synthetic:dim=784,regimes=10 --task classify, the same shape).
set -eu
cd "$(dirname "$0")/.."
STEPS=${1:-30}
PY=/usr/bin/python3
B=${DEEPMOE:-build/deepmoe}   # DEEPMOE: another deepmoe binary (e.g. a branch's build)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -x "$B" ] || [ -n "${DEEPMOE:-}" ] || make -s -j2 cli DEPS=0

if [ -d /usr/share/datasets/fashion-mnist ]; then
    DATA=(--data fashion-mnist)
else
    DATA=(--data synthetic:dim=784,regimes=10,rows=60000 --task classify)
fi
LOG_EVERY=$(( STEPS >= 10 ? STEPS / 10 : 1 ))

echo "# dist_peers.sh: $(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $STEPS steps, data ${DATA[*]}, load average $(cut -d' ' -f1 /proc/loadavg)"

# ---------------------------------------------------------------- PyTorch
# the last line of torch_ddp.py: MODE ranks=R threads=T rows_per_s=X comm_share=Y ...
kv() { sed -nE "s/.* $1=([^ ]+).*/\1/p" | tail -1; }
declare -A TR TC
if "$PY" -c 'import torch' 2>/dev/null; then
    "$PY" bench/torch_ddp.py gloo 2 1 2>/dev/null | tail -1 || true   # gloo's all-reduce of the gradient size alone
    for m in ddp zero single; do
        "$PY" bench/torch_ddp.py "$m" 2 "$STEPS" >"$T/torch.$m.txt" 2>"$T/torch.$m.err" ||
            { echo "torch_ddp.py $m failed:"; tail -5 "$T/torch.$m.err"; continue; }
        grep '^#' "$T/torch.$m.txt" | head -1 | sed 's/^# /# PyTorch: /'
        grep -q 'BLAS [^ ]*/blas/libblas' "$T/torch.$m.txt" &&
            echo "# WARNING: PyTorch runs on the reference BLAS (10x slower): apt-get install libopenblas0-pthread"
        TR[$m]=$(tail -1 "$T/torch.$m.txt" | kv rows_per_s)
        TC[$m]=$(tail -1 "$T/torch.$m.txt" | kv comm_share)
        tail -1 "$T/torch.$m.txt"
    done
else
    echo "SKIP PyTorch (no torch in $PY)"
fi

# ---------------------------------------------------------------- MPI collectives
bench/mpi_coll.sh 2 >"$T/mpi_coll.txt"
echo "# MPI collectives, 2 ranks (bench/mpi_coll.sh 2):"
grep '^fit ' "$T/mpi_coll.txt"

# ---------------------------------------------------------------- deepmoe
# PARSING (adapt here): deepmoe's rows/s and communication share of a run.
# Reads DIR/metrics.jsonl: the step records (no "eval" key) with "rows_per_s"
# and, for --dist runs, "comm_share"; prints "ROWS SHARE", the medians over the
# records after the first (the first log interval holds the warm-up). A missing
# field prints "-". Falls back to stdout's "train time ... (N rows/s)" line.
deepmoe_metrics() {   # $1 = run dir, $2 = the run's stdout
    "$PY" - "$1/metrics.jsonl" "$2" <<'EOF'
import json, re, statistics, sys
recs = []
try:
    for line in open(sys.argv[1]):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            if not r.get("eval"):
                recs.append(r)
except OSError:
    pass
def med(key):
    v = [r[key] for r in (recs[1:] if len(recs) > 1 else recs) if isinstance(r.get(key), (int, float))]
    return statistics.median(v) if v else None
rows, share = med("rows_per_s"), med("comm_share")
if rows is None:
    m = re.search(r"train time [0-9.]+ s \(([0-9.]+) rows/s\)", open(sys.argv[2]).read())
    rows = float(m.group(1)) if m else None
print("%s %s" % ("%.0f" % rows if rows is not None else "-", "%.3f" % share if share is not None else "-"))
EOF
}
declare -A DR DC
run_deepmoe() {   # $1 = label, rest = the command
    local label=$1; shift
    if "$@" >"$T/deepmoe.$label.txt" 2>&1; then
        read -r "DR[$label]" "DC[$label]" < <(deepmoe_metrics "$T/run.$label" "$T/deepmoe.$label.txt")
        echo "deepmoe $label rows_per_s=${DR[$label]} comm_share=${DC[$label]}"
    else
        echo "deepmoe $label failed:"; tail -5 "$T/deepmoe.$label.txt"
    fi
}
COMMON=("${DATA[@]}" --steps "$STEPS" --log-every "$LOG_EVERY" --eval-every 0 --checkpoint-every 1000000)
run_deepmoe single "$B" train "${COMMON[@]}" --batch 256 --threads 2 --out "$T/run.single"
if "$B" train --help 2>&1 | grep -q -- '--dist'; then
    for d in dp zero1 zero2 zero3; do
        # mpirun binds each rank to a core (its default for -np <= 2): what a user gets
        run_deepmoe "$d" mpirun -np 2 "$B" train --dist "$d" --threads 1 \
            "${COMMON[@]}" --batch 128 --out "$T/run.$d"
    done
    # bf16 GEMM operands (fp32 sums and master weights): a different precision from PyTorch's fp32
    if "$B" train --help 2>&1 | grep -q -- '--precision'; then
        run_deepmoe dp_bf16 mpirun -np 2 "$B" train --dist dp --precision bf16 --threads 1 \
            "${COMMON[@]}" --batch 128 --out "$T/run.dp_bf16"
    fi
else
    echo "SKIP deepmoe dist (no --dist in this build)"
fi

# ---------------------------------------------------------------- side by side
echo
echo "| run | PyTorch rows/s | PyTorch comm share | deepmoe rows/s | deepmoe comm share | deepmoe / PyTorch |"
echo "|---|---|---|---|---|---|"
row() {   # $1 = label, $2 = torch mode, $3 = deepmoe label
    local tr=${TR[$2]:--} tc=${TC[$2]:--} dr=${DR[$3]:--} dc=${DC[$3]:--} ratio=-
    [ "$tr" != - ] && [ "$dr" != - ] && ratio=$(awk -v a="$dr" -v b="$tr" 'BEGIN {printf "%.2fx", a / b}')
    echo "| $1 | $tr | $tc | $dr | $dc | $ratio |"
}
row "data parallel, 2 ranks x 1 thread (torch ddp / deepmoe --dist dp)" ddp dp
row "ZeRO-1, 2 ranks x 1 thread (torch zero / deepmoe --dist zero1)" zero zero1
row "deepmoe --dist zero2, 2 ranks x 1 thread (vs torch ddp)" ddp zero2
row "deepmoe --dist zero3, 2 ranks x 1 thread (vs torch ddp)" ddp zero3
if [ -n "${DR[dp_bf16]:-}" ]; then
    row "deepmoe --dist dp --precision bf16, 2 ranks x 1 thread (vs torch ddp fp32)" ddp dp_bf16
fi
row "single process, 2 threads" single single
