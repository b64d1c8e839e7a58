#!/usr/bin/env bash
# test_netns.sh - 2 MPI ranks on two "hosts" that share no network: two Linux
# network namespaces made here, joined by a veth pair, so that the ranks can
# reach each other only over TCP (docs/distributed-tests.md, "Two hosts on one
# machine"). mpirun runs in namespace A; the rank on host B is started the way
# ssh would start it, by a launcher agent (--mca plm_rsh_agent) that enters
# namespace B with `ip netns exec`; the shared-memory BTL is off
# (--mca btl tcp,self --mca pml ob1).
#
# Usage: tests/test_netns.sh [DEEPMOE]   (or DEEPMOE=...; default build/deepmoe)
# Payloads (NETNS_PAYLOAD=tiny|deepmoe|all, default all):
#   tiny     `payload`: tests/netns/netns_mpi.c built with mpicc into a temp dir:
#            an allreduce and an alltoallv between the ranks, every element checked
#   deepmoe  `payload_deepmoe`: `$DEEPMOE train --dist dp` on the two hosts, its
#            model compared (compare_models) with a one-process run of the same
#            global batch (--grad-accum 2); skipped while the build has no --dist
# For each payload the test checks that the two ranks ran in different network
# namespaces with different addresses, and that the bytes counted on the veth
# interface grew by at least what the payload must have sent.
#
# Output: "SKIP test_netns: REASON" (status 0) where namespaces cannot be made
# (not root, no ip, no mpirun, ip netns add refused); else PASS/FAIL lines and
# "N passed, N failed", status 0 when nothing failed, else 1. Every mpirun is
# bounded (NETNS_TIMEOUT seconds, 120); the namespaces, the veth pair, every
# process left in them and the temp dir are removed on exit, on failure and on
# Ctrl-C. NETNS_KEEP=1 keeps the temp dir (logs, agent log) and says where.
set -u
export LC_ALL=C
DEEPMOE=${1:-${DEEPMOE:-}}
[ -n "$DEEPMOE" ] && DEEPMOE=$(realpath -m "$DEEPMOE")   # given from the caller's directory
cd "$(dirname "$0")/.." || exit 1
DEEPMOE=${DEEPMOE:-$(pwd)/build/deepmoe}

TMO=${NETNS_TIMEOUT:-120}
WHICH=${NETNS_PAYLOAD:-all}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# OpenMPI's own allocations outlive MPI_Finalize: under make asan, LeakSanitizer would report
# them; mpirun -x carries this to the rank on the other host too
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

skip() { echo "SKIP test_netns: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not root (ip netns needs CAP_SYS_ADMIN)"
command -v ip >/dev/null 2>&1 || skip "no ip (iproute2)"
command -v mpirun >/dev/null 2>&1 || skip "no mpirun"
command -v timeout >/dev/null 2>&1 || skip "no timeout (coreutils)"

pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1${2:+: $2}"; }

# ---- the two hosts -----------------------------------------------------------
NS_A=dmA$$ NS_B=dmB$$          # namespace names, unique per run
IF_A=dmvA$$ IF_B=dmvB$$        # the veth ends (<= 15 characters: pid <= 7 digits)
IP_A=10.77.0.1 IP_B=10.77.0.2 NET=10.77.0.0/24
T=$(mktemp -d /tmp/test_netns.XXXXXX)
made_ns=""
BOUNDED_PID=""   # the command bounded() waits for

cleanup() {
    trap '' INT TERM HUP
    local ns pids
    # a bounded command still running (after Ctrl-C): timeout passes TERM on
    if [ -n "$BOUNDED_PID" ] && kill -TERM "$BOUNDED_PID" 2>/dev/null; then
        sleep 1; kill -KILL "$BOUNDED_PID" 2>/dev/null; wait "$BOUNDED_PID" 2>/dev/null
    fi
    for ns in $made_ns; do
        # whatever is still running in a host (an orted or rank after a timeout)
        pids=$(ip netns pids "$ns" 2>/dev/null)
        # shellcheck disable=SC2086 # one pid a word
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    done
    ip link del "$IF_A" 2>/dev/null   # only if setup failed before moving it
    for ns in $made_ns; do ip netns del "$ns" 2>/dev/null; done
    if [ "${NETNS_KEEP:-0}" = 1 ]; then echo "test_netns: kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'echo "FAIL test_netns: interrupted"; exit 130' INT
trap 'echo "FAIL test_netns: terminated"; exit 143' TERM HUP

ip netns add "$NS_A" 2>"$T/err" || skip "ip netns add refused: $(head -c 200 "$T/err")"
made_ns=$NS_A
ip netns add "$NS_B" 2>"$T/err" || skip "ip netns add refused: $(head -c 200 "$T/err")"
made_ns="$NS_A $NS_B"
setup() {
    ip link add "$IF_A" type veth peer name "$IF_B" &&
    ip link set "$IF_A" netns "$NS_A" &&
    ip link set "$IF_B" netns "$NS_B" &&
    ip -n "$NS_A" addr add "$IP_A/24" dev "$IF_A" &&
    ip -n "$NS_B" addr add "$IP_B/24" dev "$IF_B" &&
    ip -n "$NS_A" link set lo up && ip -n "$NS_A" link set "$IF_A" up &&
    ip -n "$NS_B" link set lo up && ip -n "$NS_B" link set "$IF_B" up
}
setup 2>"$T/err" || skip "cannot set up the veth pair: $(head -c 200 "$T/err")"
ok "netns: hosts $NS_A ($IP_A) and $NS_B ($IP_B) joined by veth $IF_A-$IF_B"
if command -v ping >/dev/null 2>&1; then
    if timeout 10 ip netns exec "$NS_A" ping -c 1 -W 2 "$IP_B" >"$T/ping.log" 2>&1; then
        ok "netns: $IP_B answers ping from $NS_A"
    else
        bad "netns: no ping from $NS_A to $IP_B" "$(head -c 300 "$T/ping.log")"
    fi
fi

# each host gets its own hostname (hostA, hostB) in a UTS namespace of its own
# where unshare(1) works, so that nothing can tell the hosts apart by name alone
UTS=0
unshare --uts true 2>/dev/null && UTS=1

# ---- the launcher agent: `agent [ssh options] HOST CMD...`, like ssh ----------
# It maps the host (a name or an address in the hostfile) to its namespace and
# runs the command line there through a shell, the way sshd would. Every call
# is logged, so that the test can see that rank 1's daemon came through it.
AGENT=$T/netns_agent
{
    echo '#!/bin/sh'
    echo '# made by tests/test_netns.sh: the plm_rsh_agent of its two namespace hosts'
    echo "NS_A=$NS_A NS_B=$NS_B IP_A=$IP_A IP_B=$IP_B LOG=$T/agent.log UTS=$UTS"
    cat <<'EOF'
while [ $# -gt 0 ]; do                           # ssh options (plm_rsh_args)
    case "$1" in
        -[1246AaCfGgKkMNnqsTtVvXxYy]*) shift ;;  # flags
        -*) shift 2 ;;                           # options with a value (-o X, -p N)
        *) break ;;
    esac
done
host=$1; shift
case "$host" in
    "$IP_A"|hostA) ns=$NS_A name=hostA ;;
    "$IP_B"|hostB) ns=$NS_B name=hostB ;;
    *) echo "netns_agent: unknown host $host" >&2; exit 255 ;;
esac
echo "$host -> $ns: $*" >>"$LOG"
# like sshd: the command line is run by a shell on the host, here with the
# host's own hostname where unshare can give it one (a UTS namespace)
if [ "$UTS" = 1 ]; then
    exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$1" && exec sh -c "$2"' agent "$name" "$*"
fi
exec ip netns exec "$ns" sh -c "$*"
EOF
} >"$AGENT"
chmod +x "$AGENT"
printf '%s slots=1\n%s slots=1\n' "$IP_A" "$IP_B" >"$T/hostfile"

# bounded OUT CMD...: CMD with its output in OUT, ended after $TMO seconds
# (TERM, then KILL 10 s later, to its whole process group). It runs in the
# background and is waited for, so that a Ctrl-C reaches the traps at once.
bounded() {
    local out=$1 st; shift
    timeout -k 10 "$TMO" "$@" >"$out" 2>&1 </dev/null &
    BOUNDED_PID=$!
    wait "$BOUNDED_PID"
    st=$?
    BOUNDED_PID=""
    if [ $st = 124 ] || [ $st = 137 ]; then echo "timed out after $TMO s: $*" >>"$out"; fi
    return $st
}

# mpi_run OUT ARGS...: mpirun in host A over both hosts, one rank per host
# (what is left of it in A or B after a timeout goes at the latest on exit)
# shellcheck disable=SC2054 # tcp,self is one value
MCA=(--mca plm_rsh_agent "$AGENT" --mca plm_rsh_no_tree_spawn 1
     --mca btl tcp,self --mca pml ob1
     --mca btl_tcp_if_include "$NET" --mca oob_tcp_if_include "$NET")
mpi_run() {
    local out=$1 uts=(); shift
    [ $UTS = 1 ] && uts=(unshare --uts sh -c 'hostname hostA && exec "$@"' sh)
    bounded "$out" ip netns exec "$NS_A" "${uts[@]}" \
        mpirun --hostfile "$T/hostfile" -np 2 --map-by node -x ASAN_OPTIONS "${MCA[@]}" "$@"
}

# the bytes seen by host A's end of the veth (received + sent)
veth_bytes() {
    ip netns exec "$NS_A" sh -c "cat /sys/class/net/$IF_A/statistics/rx_bytes /sys/class/net/$IF_A/statistics/tx_bytes" |
        awk '{ s += $1 } END { print s + 0 }'
}

# check_hosts NAME LOG: the log's "rank R/N netns net:[X] ip A" lines show two
# ranks in two namespaces with the two addresses; ok/bad either way
check_hosts() {
    local name=$1 log=$2 lines ns ips hosts
    lines=$(grep -E '^rank [0-9]+/2 netns ' "$log" | sort)
    ns=$(echo "$lines" | awk '{ print $4 }' | sort -u | wc -l)
    ips=$(echo "$lines" | awk '{ print $6 }' | sort -u | tr '\n' ' ')
    hosts=$(echo "$lines" | awk '{ print $8 }' | sort -u | tr '\n' ' ')
    [ $UTS = 1 ] || hosts="hostA hostB "
    if [ "$(echo "$lines" | grep -c .)" = 2 ] && [ "$ns" = 2 ] && [ "$ips" = "$IP_A $IP_B " ] &&
       [ "$hosts" = "hostA hostB " ]; then
        ok "$name: ranks in different namespaces ($(echo "$lines" | awk '{ printf "%s%s %s@%s", (NR > 1 ? ", " : ""), $8, $4, $6 }'))"
    else
        bad "$name: ranks not on the two hosts" "$(echo "$lines" | tr '\n' ';')"
    fi
    if grep -q "^$IP_B -> $NS_B: " "$T/agent.log" 2>/dev/null; then
        ok "$name: host B's daemon was started by the agent in $NS_B"
    else
        bad "$name: the agent never started a daemon in $NS_B" "$(head -c 300 "$T/agent.log" 2>/dev/null)"
    fi
}

# check_bytes NAME BEFORE MIN: the veth carried at least MIN bytes since BEFORE
check_bytes() {
    local after delta
    after=$(veth_bytes)
    delta=$((after - $2))
    if [ "$delta" -ge "$3" ]; then
        ok "$1: $delta bytes over veth $IF_A (>= $3): the ranks talked over TCP"
    else
        bad "$1: only $delta bytes over veth $IF_A (< $3): the data did not go over the veth"
    fi
}

# ---- payload 1 (the default): the tiny MPI program -------------------------
NELEM=262144   # 2 MiB of doubles: an allreduce of 2 ranks moves at least that
payload() {
    if ! command -v mpicc >/dev/null 2>&1; then
        echo "SKIP netns tiny payload (no mpicc)"; return 0
    fi
    if ! mpicc -O2 -o "$T/netns_mpi" tests/netns/netns_mpi.c >"$T/mpicc.log" 2>&1; then
        bad "netns tiny: mpicc" "$(head -c 400 "$T/mpicc.log")"; return 0
    fi
    : >"$T/agent.log"
    local before st
    before=$(veth_bytes)
    mpi_run "$T/tiny.log" "$T/netns_mpi" "$NELEM"
    st=$?
    if [ $st = 0 ] && [ "$(grep -c '^rank [01] ok ' "$T/tiny.log")" = 2 ]; then
        ok "netns tiny: allreduce + alltoallv checked on both ranks"
    else
        bad "netns tiny: mpirun status $st" "$(tail -c 1500 "$T/tiny.log")"
    fi
    check_hosts "netns tiny" "$T/tiny.log"
    # host A must receive rank 1's 2 MiB (or half of it and half of the sums)
    check_bytes "netns tiny" "$before" $((NELEM * 8))
    sed 's/^/    /' "$T/tiny.log" | grep -E '^    rank ' | head -4
}

# ---- payload 2: deepmoe train --dist dp ------------------------------------
# compare_models A B: the two safetensors files hold the same tensors (names,
# dtypes, shapes) with values within a max relative difference of 1e-5 (per
# tensor: max|a - b| / max(max|a|, max|b|); integer tensors must be equal).
# safetensors: an 8-byte little-endian header length, a JSON header
# {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
# then the raw data the offsets point into.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
compare_models() {
    "$PY" - "$1" "$2" <<'EOF'
import json, struct, sys
import numpy as np

DT = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
      "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
      "BOOL": np.bool_}

def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    base, out = 8 + n, {}
    for name, t in hdr.items():
        b, e = t["data_offsets"]
        a = np.frombuffer(raw[base + b:base + e], dtype=DT[t["dtype"]]).reshape(t["shape"])
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = (t["dtype"], a)
    return out

a, b = load(sys.argv[1]), load(sys.argv[2])
if sorted(a) != sorted(b):
    print("tensor names differ: only in A %s, only in B %s"
          % (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5]))
    sys.exit(1)
worst, wname = 0.0, ""
for name in sorted(a):
    (da, x), (db, y) = a[name], b[name]
    if da != db or x.shape != y.shape:
        print("%s: %s%s vs %s%s" % (name, da, list(x.shape), db, list(y.shape)))
        sys.exit(1)
    if x.size == 0:
        continue
    if not np.issubdtype(x.dtype, np.floating):
        if not np.array_equal(x, y):
            print("%s: integer tensor differs" % name)
            sys.exit(1)
        continue
    x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        print("%s: not finite" % name)
        sys.exit(1)
    scale = max(np.abs(x).max(), np.abs(y).max())
    rel = np.abs(x - y).max() / scale if scale > 0 else 0.0
    if rel > worst:
        worst, wname = rel, name
print("%d tensors, max relative difference %.3g%s" % (len(a), worst, " (%s)" % wname if wname else ""))
sys.exit(0 if worst < 1e-5 else 1)
EOF
}

payload_deepmoe() {
    local bin
    bin=$(realpath "$DEEPMOE" 2>/dev/null)
    if [ -z "$bin" ] || [ ! -x "$bin" ] || ! "$bin" train --help 2>&1 | grep -q -- '--dist'; then
        echo "SKIP netns deepmoe payload (no --dist in this build)"; return 0
    fi
    local data="synthetic:dim=16,rows=2000,regimes=4"
    local common=(--threads 1 --data "$data" --experts 4 --top-k 2 --batch 64 --steps 20 --seed 3)
    local before st
    : >"$T/agent.log"
    mkdir -p "$T/dist" "$T/single"
    before=$(veth_bytes)
    mpi_run "$T/dist.log" "$bin" train --dist dp "${common[@]}" --out "$T/dist"
    st=$?
    if [ $st = 0 ] && [ -f "$T/dist/model.safetensors" ]; then
        ok "netns deepmoe: train --dist dp on 2 hosts"
    else
        bad "netns deepmoe: train --dist dp: mpirun status $st" "$(tail -c 1500 "$T/dist.log")"
        return 0
    fi
    # 20 steps of dp move at least one gradient (or parameter) exchange per step
    # each way; the model file's size bounds one exchange from below (a quarter
    # of it: room for whatever the file holds besides the parameters)
    check_bytes "netns deepmoe" "$before" $((20 * $(stat -c %s "$T/dist/model.safetensors") / 4))
    # the ranks' whereabouts: deepmoe does not print them, so a second tiny run
    # of a shell on each rank shows where mpirun puts them with the same settings
    # shellcheck disable=SC2016 # expanded by the rank's shell
    mpi_run "$T/where.log" sh -c 'echo "rank $OMPI_COMM_WORLD_RANK/$OMPI_COMM_WORLD_SIZE netns $(readlink /proc/self/ns/net) ip $(ip -4 -o addr show scope global | awk "{ sub(/\/.*/, \"\", \$4); print \$4; exit }") host $(hostname)"'
    check_hosts "netns deepmoe" "$T/where.log"
    if ! bounded "$T/single.log" "$bin" train "${common[@]}" --grad-accum 2 --out "$T/single"; then
        bad "netns deepmoe: the one-process run" "$(tail -c 800 "$T/single.log")"; return 0
    fi
    local cmp
    if cmp=$(compare_models "$T/dist/model.safetensors" "$T/single/model.safetensors" 2>&1); then
        ok "netns deepmoe: --dist dp on 2 hosts = 1 process with --grad-accum 2 ($cmp)"
    else
        bad "netns deepmoe: models differ" "$cmp"
    fi
}

case "$WHICH" in
    tiny) payload ;;
    deepmoe) payload_deepmoe ;;
    all) payload; payload_deepmoe ;;
    *) bad "test_netns: NETNS_PAYLOAD=$WHICH (tiny | deepmoe | all)" ;;
esac

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
