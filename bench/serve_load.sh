#!/usr/bin/env bash
# serve_load.sh - load test of `deepmoe serve` over loopback with wrk (Debian's
# wrk): the default seed model (D=512, E=8, k=2), batch-1 binary requests as
# tritonclient sends them, keep-alive, concurrency 1, 16, 64 and 256, with
# dynamic batching on (as exported) and off; throughput and p50/p90/p99 per
# level in the shape of perf_analyzer's report, the HTTP layer's own ceiling
# (GET /v2/health/live under the same wrk, concurrency 64), the batch sizes that
# formed (the statistics endpoint's batch_stats), 10,000 idle connections held
# while a new client is timed (bench/serve_idle.py), `deepmoe bench` at batch 64
# and the server's cold start. Then what the two ratio targets could reach on
# this machine at best: the CPU time per request of the server and of wrk
# (from /proc and bash's `time`, for the health run and concurrency 64), and
# the model's own cost per row at batch 1 and 64 on one thread.
# Usage: [HTTP_THREADS=2] [THREADS=1] bench/serve_load.sh [seconds per level]  (5)
set -eu
cd "$(dirname "$0")/.."
DUR=${1:-5}
command -v wrk >/dev/null || { echo "serve_load.sh: needs wrk (apt-get install wrk)"; exit 1; }
make -s cli
W=$(mktemp -d)
SRV=
trap '[ -n "$SRV" ] && kill $SRV 2>/dev/null; rm -rf "$W"' EXIT
B=build/deepmoe
$B init --out "$W/m.safetensors" >/dev/null
$B export --model "$W/m.safetensors" --repository "$W/on" >/dev/null
$B export --model "$W/m.safetensors" --repository "$W/off" >/dev/null
sed -i '/^dynamic_batching {/,/^}/d' "$W/off/moe_model/config.pbtxt"   # no dynamic_batching block: each request alone
[ -n "${DELAY:-}" ] && sed -i "s/max_queue_delay_microseconds: [0-9]*/max_queue_delay_microseconds: $DELAY/" "$W/on/moe_model/config.pbtxt"
/usr/bin/python3 - "$W/body.bin" <<'PY'
import json, struct, sys
hdr = json.dumps({"inputs": [{"name": "input", "shape": [1, 512], "datatype": "FP32", "parameters": {"binary_data_size": 2048}}],
                  "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
open(sys.argv[1], "wb").write(hdr + struct.pack("<512f", *[((i * 37) % 101) / 50.5 - 1 for i in range(512)]))
open(sys.argv[1] + ".len", "w").write(str(len(hdr)))
PY
cat >"$W/post.lua" <<LUA
local f = io.open("$W/body.bin", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Inference-Header-Content-Length"] = "$(cat "$W/body.bin.len")"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.0f %.0f %.0f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), summary.errors.status, summary.requests))
end
LUA
rows_per_s() { $B bench --batch "$1" --iters 400 --threads "$2" --json | sed -E 's/.*"rows_per_s":([0-9.]+).*/\1/'; }
bench64=$(rows_per_s 64 2)
echo "deepmoe bench, batch 64, 2 threads: $bench64 rows/s"
HZ=$(getconf CLK_TCK)
srv_ticks() { awk '{print $14 + $15}' "/proc/$SRV/stat"; }
# wrk ARGS...: its output in $W/wrk.out; CPU seconds of the server (SRV_S) and of wrk (WRK_S) over the run
cpu_wrk() {
    local a b
    a=$(srv_ticks)
    { TIMEFORMAT='%U %S'; time wrk "$@" >"$W/wrk.out"; } 2>"$W/wrk.time"
    b=$(srv_ticks)
    SRV_S=$(awk -v a="$a" -v b="$b" -v hz="$HZ" 'BEGIN { print (b - a) / hz }')
    WRK_S=$(awk '{ print $1 + $2 }' "$W/wrk.time")
}
declare -A CPU
HT=${HTTP_THREADS:-2}
TH=${THREADS:-1}
echo "server: --http-threads $HT --threads $TH; wrk -t 2 (-t 1 at concurrency 1) on the same 2 cores"
declare -A RPS
printf '%-10s %-12s %12s %10s %10s %10s %8s\n' batching concurrency "infer/s" "p50 us" "p90 us" "p99 us" errors
for mode in on off; do
    $B serve --model-repository "$W/$mode" --http-port 0 --metrics-port -1 --threads "$TH" --http-threads "$HT" >"$W/serve.log" 2>&1 &
    SRV=$!
    for _ in $(seq 50); do grep -q "ready in" "$W/serve.log" && break; sleep 0.1; done
    port=$(sed -nE 's/.*HTTP on [0-9.]+:([0-9]+).*/\1/p' "$W/serve.log")
    if [ "$mode" = on ]; then
        echo "cold start: $(sed -nE 's/.*ready in ([0-9.]+) ms.*/\1/p' "$W/serve.log") ms"
        cpu_wrk -t 2 -c 64 -d "${DUR}s" "http://127.0.0.1:$port/v2/health/live"
        live=$(sed -nE 's/^Requests\/sec: *([0-9.]+).*/\1/p' "$W/wrk.out")
        n=$(sed -nE 's/^ *([0-9]+) requests in.*/\1/p' "$W/wrk.out")
        RPS[live]=$live
        CPU[live]="$(awk -v s="$SRV_S" -v w="$WRK_S" -v n="$n" 'BEGIN { printf "%.2f %.2f %.3f", 1e6 * s / n, 1e6 * w / n, (s + w) }')"
        printf '%-10s %-12s %12.0f   (GET /v2/health/live: the HTTP layer alone)\n' "-" 64 "$live"
    fi
    for c in 1 16 64 256; do
        t=$([ "$c" = 1 ] && echo 1 || echo 2)
        cpu_wrk -t "$t" -c "$c" -d "${DUR}s" -s "$W/post.lua" "http://127.0.0.1:$port/v2/models/moe_model/infer"
        r=$(grep '^RESULT' "$W/wrk.out")
        read -r _ rps p50 p90 p99 errs n <<<"$r"
        RPS[$mode.$c]=$rps
        CPU[$mode.$c]="$(awk -v s="$SRV_S" -v w="$WRK_S" -v n="$n" 'BEGIN { printf "%.2f %.2f", 1e6 * s / n, 1e6 * w / n }')"
        printf '%-10s %-12s %12s %10s %10s %10s %8s\n' "$mode" "$c" "$rps" "$p50" "$p90" "$p99" "$errs"
    done
    if [ "$mode" = on ]; then   # the batch sizes formed over every level above
        curl -s "http://127.0.0.1:$port/v2/models/moe_model/stats" | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["model_stats"][0]
b = {x["batch_size"]: x["compute_infer"]["count"] for x in s["batch_stats"]}
n = sum(b.values())
rows = sum(k * v for k, v in b.items())
edges = [1, 2, 4, 8, 16, 32, 64]
hist = []
for i, lo in enumerate(edges):
    hi = edges[i + 1] - 1 if i + 1 < len(edges) else 10 ** 9
    hist.append("%s:%.1f%%" % (lo if hi == lo else "%d-%s" % (lo, hi if hi < 10 ** 9 else ""), 100.0 * sum(v for k, v in b.items() if lo <= k <= hi) / max(n, 1)))
print("batch sizes (executions): %d executions for %d requests, mean %.1f; %s" % (n, s["inference_count"], rows / max(n, 1), " ".join(hist)))'
        /usr/bin/python3 bench/serve_idle.py "$port" 10000 "$W/body.bin"
    fi
    kill -TERM $SRV; wait $SRV 2>/dev/null || true; SRV=
done
awk -v live="${RPS[live]}" -v on64="${RPS[on.64]}" -v off64="${RPS[off.64]}" 'BEGIN {
    printf "concurrency 64: infer with batching = %.0f%% of /v2/health/live; batching on / off = %.2fx\n", 100 * on64 / live, on64 / off64 }'
# What the targets could reach here: an inference costs at least a health
# request's server time, wrk's own time per inference (its POST and the answer
# it reads), and the model's row at its best batch; batching can save at most
# the model's batch-1 row over its batch-64 row.
r1=$(rows_per_s 1 1)
r64=$(rows_per_s 64 1)
read -r ls lw lcpu <<<"${CPU[live]}"
read -r os ow <<<"${CPU[on.64]}"
read -r fs fw <<<"${CPU[off.64]}"
awk -v r1="$r1" -v r64="$r64" -v ls="$ls" -v lw="$lw" -v lcpu="$lcpu" -v dur="$DUR" -v os="$os" -v ow="$ow" -v fs="$fs" -v fw="$fw" \
    -v cores="$(nproc)" -v live="${RPS[live]}" -v on64="${RPS[on.64]}" -v off64="${RPS[off.64]}" 'BEGIN {
    t1 = 1e6 / r1; t64 = 1e6 / r64; busy = lcpu / dur
    printf "CPU us per request (server + wrk): health %.1f + %.1f; infer c=64 batching on %.1f + %.1f, off %.1f + %.1f (%.2f cores busy in the health run)\n", ls, lw, os, ow, fs, fw, busy
    printf "model alone, 1 thread: %.1f us per row at batch 1, %.1f at batch 64: batching can save at most %.2fx per row\n", t1, t64, t1 / t64
    best = 1e6 * cores / (ls + ow + t64)   # every core busy
    printf "ceiling, c=64 infer / health: (health server %.1f + wrk %.1f + model %.1f us) -> %.0f/s = %.0f%% of health (measured %.0f%%)\n", ls, ow, t64, best, 100 * best / live, 100 * on64 / live
    printf "ceiling, batching on / off: %.2fx if serving cost nothing; %.2fx with this run'"'"'s non-model costs of batching on in both (measured %.2fx)\n", t1 / t64, (os - t64 + ow + t1) / (os + ow), on64 / off64 }'
