#!/usr/bin/env bash
# test_dist.sh DEEPMOE - distributed training under mpirun (issue 11):
#   parity of dp, zero1, zero2, zero3 and expert parallel (alone and with dp)
#   against one process on the same global batch (one process's --grad-accum
#   = ranks), on 2 ranks and on 4 (--oversubscribe); replicas identical on
#   every rank (the run checks it at every checkpoint and fails otherwise);
#   memory per rank against the ZeRO formulas, and zero3's resident set below
#   dp's; bit-exact resume across a distributed checkpoint, and a single
#   process continuing it; a killed rank and a stopped (hung) rank end the run
#   with an error, not a hang; expert-parallel inference equal to one process.
# Prints SKIP lines (and passes) where MPI is absent; ends with "N passed, N failed".
set -u
D=${1:-build/deepmoe}
B=$(dirname "$D")
HERE=$(cd "$(dirname "$0")" && pwd)
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
summary() { echo "$pass passed, $fail failed"; exit $((fail > 0)); }

if ! command -v mpirun >/dev/null; then
    echo "SKIP test_dist: no mpirun (install openmpi-bin libopenmpi-dev: scripts/deps.sh does)"; summary
fi
if ! grep -q '^mpi: 1' "$B/flags" 2>/dev/null; then
    echo "SKIP test_dist: $D was built without MPI (make MPI=1 with libopenmpi-dev installed)"; summary
fi
# OpenMPI's own allocations outlive MPI_Finalize: under make asan, LeakSanitizer would report them
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPI=(timeout 120 mpirun --oversubscribe)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cmp_models() {  # A B TOL NAME
    local out
    if out=$(python3 "$HERE/st_compare.py" "$1" "$2" "$3"); then ok "$4: $out"; else bad "$4: $out"; fi
}

# a regression set with aux-free balancing and the seed's balance loss (both
# exercise the reduced counts), expert dropout (keyed by global row and slot, so
# also equal under expert parallelism), and square rows (4x4) so shifts, flips
# and input dropout are drawn per row of the global batch
ARGS=(--data synthetic:dim=16,rows=2000,regimes=4 --experts 4 --top-k 2 --seed 3 --threads 1 --log-every 10
      --balance aux_free,seed --steps 20)
AUG=(--dropout 0.1 --augment shift=1,flip,drop=0.05)
for np in 2 4; do
    per=$((128 / np))
    "$D" train "${ARGS[@]}" "${AUG[@]}" --batch "$per" --grad-accum "$np" --out "$T/one$np" >/dev/null ||
        bad "one process, grad-accum $np"
    modes=(dp zero1 zero2 zero3 "dp --expert-parallel 2")
    [ "$np" = 4 ] && modes+=("dp --expert-parallel 4")
    for mode in "${modes[@]}"; do
        name="np $np --dist $mode"
        extra=("${AUG[@]}") ref="$T/one$np"
        rm -rf "$T/d"
        # shellcheck disable=SC2086
        if ! "${MPI[@]}" -np "$np" "$D" train "${ARGS[@]}" "${extra[@]}" --batch "$per" --dist $mode \
                --out "$T/d" >"$T/log" 2>&1; then
            bad "$name: the run failed"; tail -5 "$T/log"; continue
        fi
        cmp_models "$ref/model.safetensors" "$T/d/model.safetensors" 1e-5 "$name: weights after 20 steps"
        cmp_models "$ref/checkpoint/state.safetensors" "$T/d/checkpoint/state.safetensors" 1e-5 "$name: moments"
    done
done

# the host's all-reduce (docs/distributed.md): dp and zero1 sum gradients through shared memory
# where ranks share a host; MPI alone (DEEPMOE_SHM=0) gives the same sums (bit for bit on 2 ranks,
# where each sum has one order), and 2 "hosts" of 2 ranks (DEEPMOE_SHM_HOST=2: shared memory
# inside each, MPI across) equal one process too
shm_run() {  # NAME NP EXPECT(grep) REF TOL [env...] -- train args
    local name=$1 np=$2 want=$3 ref=$4 tol=$5; shift 5
    local envs=() fwd=()
    while [ "$1" != -- ]; do envs+=("$1"); fwd+=(-x "${1%%=*}"); shift; done
    shift
    rm -rf "$T/h"
    if ! env "${envs[@]}" "${MPI[@]}" "${fwd[@]}" -np "$np" "$D" train "$@" --out "$T/h" >"$T/log" 2>&1; then
        bad "$name: the run failed"; tail -5 "$T/log"; return
    fi
    if grep -q "^gradients: $want" "$T/log"; then ok "$name: gradients $want"
    else bad "$name: no 'gradients: $want' line"; grep '^gradients' "$T/log"; fi
    cmp_models "$ref" "$T/h/model.safetensors" "$tol" "$name: weights"
}
rm -rf "$T/shm2"
"${MPI[@]}" -np 2 "$D" train "${ARGS[@]}" "${AUG[@]}" --batch 64 --dist dp --out "$T/shm2" >"$T/log" 2>&1 &&
    grep -q "^gradients: summed through shared memory by the 2 ranks of each host (1 host)" "$T/log" &&
    ok "np 2 --dist dp: gradients through shared memory (1 host of 2 ranks)" ||
    { bad "np 2 --dist dp: not through shared memory"; grep '^gradients' "$T/log"; }
grep -q "^parameters: one copy per host" "$T/log" && ok "np 2 --dist dp: one replica for the host's ranks" ||
    bad "np 2 --dist dp: no shared replica"
# a copy per rank (DEEPMOE_SHM_REPLICA=0): the same weights and moments, bit for bit
rm -rf "$T/h"
if DEEPMOE_SHM_REPLICA=0 "${MPI[@]}" -x DEEPMOE_SHM_REPLICA -np 2 "$D" train "${ARGS[@]}" "${AUG[@]}" --batch 64 --dist dp \
        --out "$T/h" >"$T/log" 2>&1 && ! grep -q "^parameters: one copy" "$T/log"; then
    cmp_models "$T/shm2/model.safetensors" "$T/h/model.safetensors" 0 "np 2 --dist dp, a replica per rank vs one per host"
    cmp_models "$T/shm2/checkpoint/state.safetensors" "$T/h/checkpoint/state.safetensors" 0 \
        "np 2 --dist dp, a replica per rank vs one per host: moments"
else
    bad "np 2 --dist dp, DEEPMOE_SHM_REPLICA=0"; tail -3 "$T/log"
fi
shm_run "np 2 --dist dp, DEEPMOE_SHM=0" 2 "summed by MPI" "$T/shm2/model.safetensors" 0 DEEPMOE_SHM=0 -- \
    "${ARGS[@]}" "${AUG[@]}" --batch 64 --dist dp
for mode in dp zero1; do
    shm_run "np 4 --dist $mode, 2 hosts of 2 ranks" 4 "summed through shared memory by the 2 ranks of each host (2 hosts, then MPI" \
        "$T/one4/model.safetensors" 1e-5 DEEPMOE_SHM_HOST=2 -- "${ARGS[@]}" "${AUG[@]}" --batch 32 --dist "$mode"
done
shm_run "np 4 --dist dp, DEEPMOE_SHM=0" 4 "summed by MPI" "$T/one4/model.safetensors" 1e-5 DEEPMOE_SHM=0 -- \
    "${ARGS[@]}" "${AUG[@]}" --batch 32 --dist dp
"${MPI[@]}" -np 2 "$D" train "${ARGS[@]}" --batch 64 --dist zero2 --out "$T/h" 2>&1 | grep -q "^gradients: summed by MPI" &&
    ok "np 2 --dist zero2: gradients by MPI (reduce-scatter; its pages are released)" ||
    bad "np 2 --dist zero2: not by MPI"

# bf16 with the host's replica: before each evaluation every rank re-packs the model's f32 copies of
# what it updates (rank 0's evaluation must not re-pack shared memory while the others run); the
# evaluations and the weights equal a copy per rank's
BF=(--data synthetic:dim=16,rows=2000,regimes=4 --experts 4 --top-k 2 --seed 3 --threads 1 --log-every 10
    --balance aux_free,seed --steps 20 --eval-every 5 --precision bf16 --batch 64 --dist dp)
rm -rf "$T/bfr" "$T/bfc"
if "${MPI[@]}" -np 2 "$D" train "${BF[@]}" --out "$T/bfr" >"$T/log" 2>&1 && grep -q "^parameters: one copy per host" "$T/log" &&
        DEEPMOE_SHM_REPLICA=0 "${MPI[@]}" -x DEEPMOE_SHM_REPLICA -np 2 "$D" train "${BF[@]}" --out "$T/bfc" >/dev/null 2>&1; then
    cmp_models "$T/bfc/model.safetensors" "$T/bfr/model.safetensors" 0 "np 2 --dist dp --precision bf16: one replica vs a copy per rank"
    if python3 - "$T/bfr/metrics.jsonl" "$T/bfc/metrics.jsonl" <<'EOF'
import json, sys
ev = [[(r["step"], r["loss"]) for r in map(json.loads, open(f)) if r.get("eval")] for f in sys.argv[1:]]
assert len(ev[0]) >= 4 and ev[0] == ev[1], ev
EOF
    then ok "  its evaluations (steps 5, 10, 15, 20) equal a copy per rank's"; else bad "  its evaluations differ"; fi
else
    bad "np 2 --dist dp --precision bf16 with the replica"; tail -3 "$T/log"
fi

# a shared-memory filesystem too small (a container's /dev/shm): the run says so and falls back,
# never a SIGBUS (the pages are reserved when the buffers are made); in a mount namespace of its own
SMALL=(--data synthetic:dim=256,rows=4000,regimes=4 --experts 8 --top-k 2 --hidden 256 --layers 2 --batch 16
       --seed 3 --threads 1 --log-every 5 --steps 10)
if unshare -m true 2>/dev/null; then
    rm -rf "$T/big"
    "${MPI[@]}" -np 2 "$D" train "${SMALL[@]}" --dist dp --out "$T/big" >/dev/null 2>&1 || bad "dp with the whole /dev/shm"
    for case in "10m|gradients: summed by MPI|" "24m|gradients: summed through shared memory|parameters: one copy"; do
        IFS='|' read -r size want nowant <<<"$case"
        rm -rf "$T/small"
        if unshare -m sh -c 'mount -t tmpfs -o size='"$size"' tmpfs /dev/shm && exec "$@"' sh "${MPI[@]}" -np 2 "$D" \
                train "${SMALL[@]}" --dist dp --out "$T/small" >"$T/log" 2>&1 && grep -q "^$want" "$T/log" &&
                { [ -z "$nowant" ] || ! grep -q "^$nowant" "$T/log"; }; then
            ok "a $size /dev/shm: '$want'${nowant:+, no '$nowant'}, the run completes"
            cmp_models "$T/big/model.safetensors" "$T/small/model.safetensors" 0 "  its weights equal the whole /dev/shm's"
        else
            bad "a $size /dev/shm"; grep -E "^(gradients|parameters)|rror" "$T/log" | head -5
        fi
    done
else
    echo "SKIP a small /dev/shm: no mount namespace here (unshare -m)"
fi

# --precision bf16: the same parity (bf16 operands are rounded row by row, wherever the row runs)
"$D" train "${ARGS[@]}" "${AUG[@]}" --batch 64 --grad-accum 2 --precision bf16 --out "$T/bf1" >/dev/null ||
    bad "one process, bf16"
for mode in dp zero3 "dp --expert-parallel 2"; do
    rm -rf "$T/d"
    # shellcheck disable=SC2086
    "${MPI[@]}" -np 2 "$D" train "${ARGS[@]}" "${AUG[@]}" --batch 64 --precision bf16 --dist $mode --out "$T/d" \
        >"$T/log" 2>&1 || { bad "np 2 --dist $mode --precision bf16: the run failed"; tail -3 "$T/log"; continue; }
    cmp_models "$T/bf1/model.safetensors" "$T/d/model.safetensors" 1e-5 "np 2 --dist $mode --precision bf16"
done

# clipping on every step (--clip 0.01): the global norm must be the same on every rank (under
# expert parallelism each expert's gradients are whole only on its owners)
"$D" train "${ARGS[@]}" --batch 32 --grad-accum 4 --clip 0.01 --out "$T/clip1" >/dev/null
for mode in "dp" "zero2" "dp --expert-parallel 2" "dp --expert-parallel 4"; do
    rm -rf "$T/d"
    # shellcheck disable=SC2086
    "${MPI[@]}" -np 4 "$D" train "${ARGS[@]}" --batch 32 --clip 0.01 --dist $mode --out "$T/d" >"$T/log" 2>&1 ||
        { bad "np 4 --dist $mode --clip 0.01: the run failed"; tail -3 "$T/log"; continue; }
    cmp_models "$T/clip1/model.safetensors" "$T/d/model.safetensors" 1e-5 "np 4 --dist $mode, clipped every step"
done

# grad-accum on every rank too: 2 ranks x 2 micro-batches = one process's 4
"$D" train "${ARGS[@]}" --batch 16 --grad-accum 4 --out "$T/acc1" >/dev/null
for mode in dp zero3 zero2; do   # zero2/3 reduce-scatter every micro-batch into the shard's sums
    rm -rf "$T/d"
    "${MPI[@]}" -np 2 "$D" train "${ARGS[@]}" --batch 16 --grad-accum 2 --dist $mode --out "$T/d" >/dev/null 2>&1
    cmp_models "$T/acc1/model.safetensors" "$T/d/model.safetensors" 1e-5 "np 2 $mode x grad-accum 2"
done

# metrics: comm share, bytes, memory and every rank's expert load in the log records
if python3 - "$T/d/metrics.jsonl" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"eval"' not in l]
r = recs[-1]
assert r["ranks"] == 2 and 0 <= r["comm_share"] <= 1 and r["bytes_sent"] > 0, r
assert len(r["rank_expert_load"]) == 2 and all(len(x["expert_load"]) == 1 for x in r["rank_expert_load"])
assert r["memory"]["grads"] < r["memory"]["params"], r["memory"]
EOF
then ok "metrics.jsonl: ranks, comm_share, bytes_sent, memory, rank_expert_load"; else bad "metrics.jsonl fields"; fi

# memory per rank against ZeRO's formulas (fp32 Adam), 4 ranks, and the resident set
MEM=(--data synthetic:dim=256,rows=4000,regimes=4 --experts 8 --top-k 2 --hidden 256 --layers 2 --batch 16
     --seed 3 --threads 1 --log-every 5 --steps 10)
for mode in dp zero1 zero2 zero3; do
    rm -rf "$T/m_$mode"
    "${MPI[@]}" -np 4 "$D" train "${MEM[@]}" --dist "$mode" --out "$T/m_$mode" >/dev/null 2>&1 || bad "memory run $mode"
done
rm -rf "$T/m_dp1"   # dp without the host's one replica: every rank its own
DEEPMOE_SHM_REPLICA=0 "${MPI[@]}" -x DEEPMOE_SHM_REPLICA -np 4 "$D" train "${MEM[@]}" --dist dp --out "$T/m_dp1" >/dev/null 2>&1 ||
    bad "memory run dp, DEEPMOE_SHM_REPLICA=0"
rm -rf "$T/m_ep4"
"${MPI[@]}" -np 4 "$D" train "${MEM[@]}" --dist dp --expert-parallel 4 --out "$T/m_ep4" >/dev/null 2>&1 || bad "memory run ep4"
if python3 - "$T" <<'EOF'
import json, sys
t = sys.argv[1]
def last(mode):
    recs = [json.loads(l) for l in open("%s/m_%s/metrics.jsonl" % (t, mode)) if '"eval"' not in l]
    return recs[-1]
N = 4
# dp: the 4 ranks of this host share one copy of the parameters and moments (their
# gradients are their own); dp1: DEEPMOE_SHM_REPLICA=0, a copy per rank
want = {"dp": 4 + 12 / N, "dp1": 16, "zero1": 4 + 4 + 8 / N, "zero2": 4 + (4 + 8) / N, "zero3": 16 / N}
rss = {}
for mode, b in want.items():
    r = last(mode)
    m = r["memory"]
    held = m["params"] + m["grads"] + m["moments"]
    n = m["n_params"]
    per = held / n
    # shards are 1024-float aligned: allow that much over the formula
    assert per <= b * 1.01 + 16 * 1024 * N / n, (mode, per, b)
    if mode.startswith("dp"):
        assert abs(per - b) < 0.01, (mode, per, b)
    print("  %s: %.2f bytes/param held (formula %.2f), ranks' RSS %s MiB" %
          (mode, per, b, [round(x["rss"] / 2**20, 1) for x in r["rank_expert_load"]]))
    rss[mode] = min(x["rss"] for x in r["rank_expert_load"])
assert rss["zero3"] < rss["zero2"] < rss["dp1"] and rss["dp"] < rss["dp1"], rss
# expert parallel over 4: each rank holds its 2 of the 8 experts of each layer (and the rest)
r = last("ep4")
m = r["memory"]
n = m["n_params"]
per = (m["params"] + m["grads"] + m["moments"]) / n
ep_rss = min(x["rss"] for x in r["rank_expert_load"])
print("  ep4: %.2f bytes/param held, ranks' RSS %s MiB" % (per, [round(x["rss"] / 2**20, 1) for x in r["rank_expert_load"]]))
assert per < 16 * 0.4, per   # the experts are ~97% of these parameters: 16 * (0.03 + 0.97 / 4) = 4.4
assert ep_rss < rss["zero2"], (ep_rss, rss)
EOF
then ok "memory per rank within the ZeRO formulas; RSS zero3 < zero2 < dp; ep4 holds its own experts only"; else bad "memory per rank"; fi

# resume across a distributed checkpoint: bit-exact on the same ranks; one process continues it
for mode in dp zero3 "dp --expert-parallel 2"; do
    rm -rf "$T/s" "$T/r"
    # shellcheck disable=SC2086
    "${MPI[@]}" -np 2 "$D" train "${ARGS[@]}" --batch 64 --dist $mode --out "$T/s" >/dev/null 2>&1
    # shellcheck disable=SC2086
    "${MPI[@]}" -np 2 "$D" train "${ARGS[@]}" --batch 64 --dist $mode --stop-at 10 --out "$T/r" >/dev/null 2>&1
    # shellcheck disable=SC2086
    "${MPI[@]}" -np 2 "$D" train "${ARGS[@]}" --dist $mode --resume "$T/r" >/dev/null 2>&1 || bad "resume $mode"
    cmp_models "$T/s/checkpoint/state.safetensors" "$T/r/checkpoint/state.safetensors" 0 "--dist $mode: 10 + resume 10"
done
rm -rf "$T/one"
if "$D" train "${ARGS[@]}" --resume "$T/r" --out "$T/one" --steps 25 >"$T/log" 2>&1 &&
        "$D" eval --model "$T/one/model.safetensors" --data synthetic:dim=16,rows=2000,regimes=4 >/dev/null 2>&1; then
    ok "one process resumes a distributed checkpoint (to step 25) and its model evaluates"
else
    bad "one process resumes a distributed checkpoint"; tail -3 "$T/log"
fi

# faults: a killed rank, a stopped (hung) rank: the run ends with an error within the timeout
LONG=(--data synthetic:dim=64,rows=20000,regimes=4 --experts 4 --top-k 2 --batch 64 --seed 3 --threads 1
      --log-every 100000 --steps 1000000 --dist dp --dist-timeout 5)
for sig in KILL STOP; do
    rm -rf "$T/f"
    "${MPI[@]}" -np 2 "$D" train "${LONG[@]}" --out "$T/f" >"$T/flog" 2>&1 &
    job=$!
    pid=""
    for _ in $(seq 50); do
        sleep 0.2
        pid=$(pgrep -f -- "--out $T/f" | while read -r p; do
            [ "$(cat /proc/"$p"/comm 2>/dev/null)" = deepmoe ] && echo "$p"; done | tail -n 1)
        [ -n "$pid" ] && [ -s "$T/flog" ] && break
    done
    sleep 1
    t0=$(date +%s)
    [ -n "$pid" ] && kill -"$sig" "$pid"
    wait "$job"
    rc=$?
    dt=$(($(date +%s) - t0))
    [ "$sig" = STOP ] && kill -KILL "$pid" 2>/dev/null
    if [ -n "$pid" ] && [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$dt" -le 30 ]; then
        ok "SIG$sig on one rank: the run ended with status $rc after ${dt}s"
        [ "$sig" = STOP ] && { grep -q "did not complete within 5 s" "$T/flog" && ok "  it says which collective timed out" ||
            { bad "  no timeout message"; tail -5 "$T/flog"; }; }
    else
        bad "SIG$sig on one rank: status $rc after ${dt}s (pid '$pid')"; tail -5 "$T/flog"
    fi
done

# expert-parallel inference: each rank runs its experts, outputs equal one process's
"$D" train "${ARGS[@]}" --batch 64 --out "$T/inf" >/dev/null
python3 - "$T/x.npy" <<'EOF'
import struct, sys, random
random.seed(1)
n, d = 37, 16
hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (n, d)
hdr += " " * (63 - (len(hdr) + 10) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<%df" % (n * d), *[random.uniform(-1, 1) for _ in range(n * d)]))
EOF
"$D" infer --model "$T/inf/model.safetensors" --input "$T/x.npy" --output "$T/y1.npy" >/dev/null 2>&1
for np in 2 4; do
    if "${MPI[@]}" -np "$np" "$D" infer --model "$T/inf/model.safetensors" --input "$T/x.npy" --output "$T/y$np.npy" \
            --expert-parallel "$np" >"$T/log" 2>&1 && cmp -s "$T/y1.npy" "$T/y$np.npy"; then
        ok "infer --expert-parallel $np: the same outputs as one process, bit for bit"
    else
        bad "infer --expert-parallel $np"; tail -3 "$T/log"
    fi
done
# deepmoe bench under mpirun: a distributed training step and an expert-parallel forward
for args in "--mode train --dist zero2" "--mode train --dist dp --expert-parallel 2" "--expert-parallel 2"; do
    # shellcheck disable=SC2086
    if "${MPI[@]}" -np 2 "$D" bench --model "$T/inf/model.safetensors" --batch 64 --iters 3 --threads 1 $args --json \
            >"$T/bench.json" 2>"$T/log" && python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read())
assert r["ranks"] == 2 and r["rows_per_s"] > 0 and 0 <= r["comm_share"] < 1, r' "$T/bench.json"; then
        ok "bench $args under mpirun -np 2: $(cut -c1-80 "$T/bench.json")"
    else
        bad "bench $args under mpirun"; cat "$T/bench.json" "$T/log" | tail -3
    fi
done
# --profile under mpirun: every rank's ops merged into one trace, one process (pid) per rank
if "${MPI[@]}" -np 2 "$D" train "${ARGS[@]}" --dist dp --out "$T/prof" --profile "$T/prof.json" >"$T/log" 2>&1 &&
        python3 -c '
import json, os, sys
t = json.load(open(sys.argv[1]))
ev = t["traceEvents"]
pids = {e["pid"] for e in ev if e["ph"] == "X"}
steps = {p: sum(e["name"] == "train step" for e in ev if e["ph"] == "X" and e["pid"] == p) for p in pids}
assert pids == {0, 1}, pids
assert steps == {0: 20, 1: 20}, steps
assert any(e["name"] == "grad sync" and e["pid"] == 1 for e in ev if e["ph"] == "X")
assert not os.path.exists(sys.argv[1] + ".rank1"), "the rank file was merged and removed"' "$T/prof.json"; then
    ok "train --dist dp --profile under mpirun -np 2: both ranks in one trace (pid = rank, 20 steps each)"
else
    bad "train --dist dp --profile under mpirun"; tail -3 "$T/log"
fi
if "$D" report "$T/prof" --out "$T/prof.html" >"$T/log" 2>&1 && grep -q 'id="chart-comm"' "$T/prof.html" &&
        grep -q 'communication share (last)' "$T/prof.html"; then
    ok "report of a distributed run: the communication-share chart (seed's 15% line) and its last value"
else
    bad "report of a distributed run"; tail -3 "$T/log"
fi
summary
