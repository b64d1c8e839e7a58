#!/usr/bin/env bash
# serve_load.sh - load test of `deepmoe serve` over loopback with wrk (Debian's
# wrk): the default seed model (D=512, E=8, k=2), batch-1 binary requests as
# tritonclient sends them, keep-alive, concurrency 1, 8 and 64, with dynamic
# batching on (as exported) and off; throughput and p50/p90/p99 per level, in
# the shape of perf_analyzer's report, plus `deepmoe bench` at batch 64 and the
# server's cold start. Usage: bench/serve_load.sh [seconds per level]  (5)
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
printf '%-10s %-12s %12s %10s %10s %10s %8s\n' batching concurrency "infer/s" "p50 us" "p90 us" "p99 us" errors
for mode in on off; do
    $B serve --model-repository "$W/$mode" --http-port 0 --metrics-port -1 --threads 2 >"$W/serve.log" 2>&1 &
    SRV=$!
    for _ in $(seq 50); do grep -q "ready in" "$W/serve.log" && break; sleep 0.1; done
    port=$(sed -nE 's/.*HTTP on [0-9.]+:([0-9]+).*/\1/p' "$W/serve.log")
    [ "$mode" = on ] && echo "cold start: $(sed -nE 's/.*ready in ([0-9.]+) ms.*/\1/p' "$W/serve.log") ms"
    for c in 1 8 64; do
        t=$([ "$c" = 1 ] && echo 1 || echo 2)
        r=$(wrk -t "$t" -c "$c" -d "${DUR}s" -s "$W/post.lua" "http://127.0.0.1:$port/v2/models/moe_model/infer" | grep '^RESULT')
        read -r _ rps p50 p90 p99 errs n <<<"$r"
        printf '%-10s %-12s %12s %10s %10s %10s %8s\n' "$mode" "$c" "$rps" "$p50" "$p90" "$p99" "$errs"
    done
    kill -TERM $SRV; wait $SRV 2>/dev/null || true; SRV=
done
