#!/usr/bin/env bash
# serve_load.sh - load test of `deepmoe serve` over loopback with wrk (Debian's
# wrk): the default seed model (D=512, E=8, k=2), batch-1 binary requests as
# tritonclient sends them, keep-alive, concurrency 1, 16, 64 and 256, with
# dynamic batching on (as exported) and off; throughput and p50/p90/p99 per
# level in the shape of perf_analyzer's report, the HTTP layer's own ceiling
# (GET /v2/health/live under the same wrk, concurrency 64), the batch sizes that
# formed (the statistics endpoint's batch_stats), 10,000 idle connections held
# while a new client is timed (bench/serve_idle.py), `deepmoe bench` at batch 64
# and the server's cold start.
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
bench64=$($B bench --batch 64 --iters 200 --threads 2 --json | sed -E 's/.*"rows_per_s":([0-9.]+).*/\1/')
echo "deepmoe bench, batch 64, 2 threads: $bench64 rows/s"
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
        live=$(wrk -t 2 -c 64 -d "${DUR}s" "http://127.0.0.1:$port/v2/health/live" | sed -nE 's/^Requests\/sec: *([0-9.]+).*/\1/p')
        RPS[live]=$live
        printf '%-10s %-12s %12.0f   (GET /v2/health/live: the HTTP layer alone)\n' "-" 64 "$live"
    fi
    for c in 1 16 64 256; do
        t=$([ "$c" = 1 ] && echo 1 || echo 2)
        r=$(wrk -t "$t" -c "$c" -d "${DUR}s" -s "$W/post.lua" "http://127.0.0.1:$port/v2/models/moe_model/infer" | grep '^RESULT')
        read -r _ rps p50 p90 p99 errs n <<<"$r"
        RPS[$mode.$c]=$rps
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
