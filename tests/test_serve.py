#!/usr/bin/python3
"""test_serve.py DEEPMOE - the Triton-compatible server over real HTTP: every
endpoint, JSON and binary tensors against `deepmoe infer`, batching under load,
queue-full and timeout answers, malformed requests, body limit, graceful stop.
Standard library only. Prints one line per check and "N passed, N failed"."""
import http.client, json, os, re, signal, struct, subprocess, sys, tempfile, threading, time

BIN = os.path.abspath(sys.argv[1])
T = tempfile.mkdtemp(prefix="deepmoe-serve-")
passed = failed = 0

def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1; print("ok   " + name)
    else:
        failed += 1; print("FAIL %s: %s" % (name, str(detail)[:400]))

def run(*args):
    return subprocess.run([BIN] + list(args), cwd=T, capture_output=True, text=True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from npy2d import read_npy, write_npy

class Server:
    def __init__(self, repo, *extra):
        self.p = subprocess.Popen([BIN, "serve", "--model-repository", repo, "--http-port", "0", "--metrics-port", "0"] + list(extra),
                                  cwd=T, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        m = re.search(r"HTTP on [0-9.]+:(\d+), metrics on [0-9.]+:(\d+)", line)
        if not m:
            raise RuntimeError("server did not start: " + line + self.p.stderr.read())
        self.port, self.mport = int(m.group(1)), int(m.group(2))
        self.ready_ms = float(re.search(r"ready in ([0-9.]+) ms", line).group(1))
    def req(self, method, path, body=None, headers=None, port=None):
        c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=30)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        out = (r.status, dict(r.getheaders()), data)
        c.close()
        return out
    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        return self.p.wait(timeout=30)

def repo_with(name, pbtxt_extra="", max_batch=64):
    run("export", "--model", "m.safetensors", "--repository", name, "--max-batch-size", str(max_batch))
    if pbtxt_extra:
        p = os.path.join(T, name, "moe_model", "config.pbtxt")
        text = open(p).read()
        text = re.sub(r"dynamic_batching \{.*?\n\}\n", pbtxt_extra + "\n", text, flags=re.S)
        open(p, "w").write(text)
    return os.path.join(T, name)

# ---------------------------------------------------------------- setup
r = run("init", "--out", "m.safetensors", "--dim", "32", "--experts", "4", "--hidden", "16")
check("init a model", r.returncode == 0, r.stderr)
rows = [[((i * 7 + j * 13) % 17) / 8.5 - 1.0 for j in range(32)] for i in range(5)]
write_npy(os.path.join(T, "x.npy"), rows)
r = run("infer", "--model", "m.safetensors", "--input", "x.npy", "--output", "y.npy", "--quiet")
want = read_npy(os.path.join(T, "y.npy"))
S = Server(repo_with("repo"))
check("cold start under 100 ms", S.ready_ms < 100, S.ready_ms)

# ---------------------------------------------------------------- endpoints
for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/moe_model/ready", "/v2/models/moe_model/versions/1/ready"):
    st, h, b = S.req("GET", path)
    check("GET " + path, st == 200, st)
st, h, b = S.req("GET", "/v2")
meta = json.loads(b)
check("server metadata", st == 200 and "binary_tensor_data" in meta["extensions"] and "statistics" in meta["extensions"], b)
st, h, b = S.req("GET", "/v2/models/moe_model")
m = json.loads(b)
check("model metadata", st == 200 and m["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 32]}
      and m["versions"] == ["1"], b)
st, h, b = S.req("GET", "/v2/models/moe_model/config")
c = json.loads(b)
check("model config", st == 200 and c["max_batch_size"] == 64 and "dynamic_batching" in c and c["input"][0]["data_type"] == "TYPE_FP32", b)
st, h, b = S.req("POST", "/v2/repository/index", b"")
check("repository index", st == 200 and json.loads(b)[0]["state"] == "READY", b)

# ---------------------------------------------------------------- JSON and binary inference
flat = [v for r_ in rows for v in r_]
body = json.dumps({"id": "abc", "inputs": [{"name": "input", "shape": [5, 32], "datatype": "FP32", "data": flat}]})
st, h, b = S.req("POST", "/v2/models/moe_model/infer", body, {"Content-Type": "application/json"})
resp = json.loads(b) if st == 200 else {}
outs = {o["name"]: o for o in resp.get("outputs", [])}
got = outs.get("output", {}).get("data", [])
err = max([abs(a - b_) for a, b_ in zip(got, [v for r_ in want for v in r_])] or [1])
check("JSON infer equals deepmoe infer", st == 200 and len(got) == 160 and err < 1e-5 and resp.get("id") == "abc", (st, err, b[:200]))
check("routing outputs", outs.get("routing_experts", {}).get("shape") == [5, 2] and outs.get("routing_weights", {}).get("datatype") == "FP32", outs.keys())
header = json.dumps({"inputs": [{"name": "input", "shape": [5, 32], "datatype": "FP32", "parameters": {"binary_data_size": 640}}],
                     "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
st, h, b = S.req("POST", "/v2/models/moe_model/versions/1/infer", header + struct.pack("<160f", *flat),
                 {"Inference-Header-Content-Length": str(len(header))})
hl = int(h.get("Inference-Header-Content-Length", "-1"))
ok = st == 200 and hl > 0 and len(b) == hl + 640
if ok:
    j = json.loads(b[:hl])
    vals = struct.unpack("<160f", b[hl:])
    err = max(abs(a - b_) for a, b_ in zip(vals, got))
    ok = j["outputs"][0]["parameters"]["binary_data_size"] == 640 and err < 1e-6 and len(j["outputs"]) == 1
check("binary infer (tritonclient's default framing)", ok, (st, h, b[:200]))
st, h, b = S.req("POST", "/v2/models/moe_model/infer", struct.pack("<32f", *rows[0]), {"Inference-Header-Content-Length": "0"})
hl = int(h.get("Inference-Header-Content-Length", "-1"))
check("raw binary request", st == 200 and hl > 0 and abs(struct.unpack("<32f", b[hl:hl + 128])[0] - got[0]) < 1e-6, (st, b[:200]))

# ---------------------------------------------------------------- batching under load
results = []
def client(i):
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": rows[i % 5]}]})
    for _ in range(20):
        st, h, b = S.req("POST", "/v2/models/moe_model/infer", body)
        results.append(st == 200 and abs(json.loads(b)["outputs"][0]["data"][3] - want[i % 5][3]) < 1e-5)
ths = [threading.Thread(target=client, args=(i,)) for i in range(16)]
for t in ths: t.start()
for t in ths: t.join()
check("320 concurrent requests answered correctly", len(results) == 320 and all(results), results.count(False))
st, h, b = S.req("GET", "/v2/models/moe_model/stats")
s = json.loads(b)["model_stats"][0]
check("statistics", st == 200 and s["inference_count"] >= 327 and s["execution_count"] >= 1
      and "count" in s["inference_stats"]["queue"], b[:300])
check("concurrent requests were batched (stats: executions < inferences, a batch > 1)",
      s["execution_count"] < s["inference_count"] and any(x["batch_size"] > 1 for x in s["batch_stats"]),
      (s["execution_count"], s["inference_count"], s["batch_stats"][:3]))
st, h, b = S.req("GET", "/metrics", port=S.mport)
text = b.decode()
check("Prometheus metrics", st == 200 and 'nv_inference_request_success{model="moe_model",version="1"}' in text
      and "nv_inference_exec_count" in text and "nv_inference_queue_duration_us" in text, text[:300])
routed = [int(l.split()[-1]) for l in text.splitlines() if l.startswith("deepmoe_expert_routed_rows_total{")]
check("per-expert routed rows: every assignment counted", len(routed) == 4 and sum(routed) == 2 * s["inference_count"], (routed, s["inference_count"]))
check("latency summary, utilization, memory, cold start",
      'quantile="0.99"' in text and "deepmoe_expert_utilization{" in text and "deepmoe_process_resident_memory_peak_bytes" in text
      and "deepmoe_cold_start_seconds" in text, text[-600:])

# ---------------------------------------------------------------- HTTP framing: chunked bodies, Expect: 100-continue, keep-alive
import socket
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": rows[0]}]}).encode()
c_ = http.client.HTTPConnection("127.0.0.1", S.port, timeout=30)
c_.request("POST", "/v2/models/moe_model/infer", body=iter([body[:50], body[50:]]), encode_chunked=True,
           headers={"Transfer-Encoding": "chunked"})
r_ = c_.getresponse(); d_ = r_.read()
check("chunked request body", r_.status == 200 and abs(json.loads(d_)["outputs"][0]["data"][0] - want[0][0]) < 1e-5, (r_.status, d_[:200]))
c_.request("GET", "/v2/health/live")  # the same connection again: keep-alive
r_ = c_.getresponse(); r_.read()
check("keep-alive: a second request on the same connection", r_.status == 200, r_.status)
c_.close()
sk = socket.create_connection(("127.0.0.1", S.port), timeout=30)
sk.sendall(b"POST /v2/models/moe_model/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
first = sk.recv(100)
sk.sendall(body)
rest = b""
while b"outputs" not in rest:
    chunk = sk.recv(65536)
    if not chunk: break
    rest += chunk
sk.close()
check("Expect: 100-continue", first.startswith(b"HTTP/1.1 100") and b" 200 " in rest.split(b"\r\n")[0], (first, rest[:100]))

# ---------------------------------------------------------------- errors
def expect_error(name, code, needle, method, path, body=b"", headers=None):
    st, h, b = S.req(method, path, body, headers)
    try:
        msg = json.loads(b)["error"]
    except Exception:
        msg = b
    check(name, st == code and needle in str(msg), (st, b[:200]))
expect_error("unknown path 404", 404, "Not Found", "GET", "/v2/nothing")
expect_error("unknown model 404", 404, "unknown model", "GET", "/v2/models/nope")
expect_error("wrong method 405", 405, "Method Not Allowed", "GET", "/v2/models/moe_model/infer")
expect_error("malformed JSON 400", 400, "", "POST", "/v2/models/moe_model/infer", b"{not json")
expect_error("wrong shape 400 names the input", 400, "input 'input'", "POST", "/v2/models/moe_model/infer",
             json.dumps({"inputs": [{"name": "input", "shape": [1, 31], "datatype": "FP32", "data": [0.0] * 31}]}))
expect_error("element count 400", 400, "input", "POST", "/v2/models/moe_model/infer",
             json.dumps({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 30}]}))
expect_error("batch above max_batch_size 400", 400, "batch-size must be <= 64", "POST", "/v2/models/moe_model/infer",
             json.dumps({"inputs": [{"name": "input", "shape": [65, 32], "datatype": "FP32", "data": [0.0] * (65 * 32)}]}))
expect_error("bad binary framing 400", 400, "", "POST", "/v2/models/moe_model/infer", b"{}", {"Inference-Header-Content-Length": "99"})
S.stop()

# ---------------------------------------------------------------- queue full, timeout, body limit, graceful stop
Q = Server(repo_with("repo_q", "dynamic_batching { preferred_batch_size: [ 64 ] max_queue_delay_microseconds: 400000 "
                     "default_queue_policy { max_queue_size: 2 default_timeout_microseconds: 200000 } }"), "--max-body", "4096")
codes, msgs = [], []
def one():
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": rows[0]}]})
    st, h, b = Q.req("POST", "/v2/models/moe_model/infer", body)
    codes.append(st); msgs.append(b)
ths = [threading.Thread(target=one) for _ in range(6)]
for t in ths: t.start()
for t in ths: t.join()
check("queue full answers 503 'Exceeds maximum queue size'", any(c_ == 503 and b"Exceeds maximum queue size" in m_ for c_, m_ in zip(codes, msgs)), list(zip(codes, msgs)))
check("queued too long answers 503 'Request timeout expired'", any(c_ == 503 and b"Request timeout expired" in m_ for c_, m_ in zip(codes, msgs)), list(zip(codes, msgs)))
st, h, b = Q.req("POST", "/v2/models/moe_model/infer", b"x" * 5000)
check("body over --max-body answers 413", st == 413, (st, b))
Q.stop()
# versions: latest 1 serves only the highest; all serves each
import shutil
rv = repo_with("repo_v")
run("init", "--out", "m2.safetensors", "--dim", "32", "--experts", "4", "--hidden", "16", "--seed", "9")
os.makedirs(os.path.join(rv, "moe_model", "2"))
shutil.copy(os.path.join(T, "m2.safetensors"), os.path.join(rv, "moe_model", "2", "model.safetensors"))
V = Server(rv)
st1, _, _ = V.req("GET", "/v2/models/moe_model/versions/1/ready")
st2, _, b2 = V.req("GET", "/v2/models/moe_model")
check("latest policy serves only the highest version", st1 == 404 and json.loads(b2)["versions"] == ["2"], (st1, b2))
V.stop()
p_ = os.path.join(rv, "moe_model", "config.pbtxt")
text_ = open(p_).read()
open(p_, "w").write(text_.replace("version_policy: { latest { num_versions: 1 } }", "version_policy: { all { } }"))
V = Server(rv)
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": rows[0]}]})
a = V.req("POST", "/v2/models/moe_model/versions/1/infer", body)
b_ = V.req("POST", "/v2/models/moe_model/versions/2/infer", body)
d_ = V.req("POST", "/v2/models/moe_model/infer", body)
st_m, _, bm = V.req("GET", "/v2/models/moe_model")
ok = a[0] == 200 and b_[0] == 200 and d_[0] == 200 and sorted(json.loads(bm)["versions"]) == ["1", "2"]
if ok:
    o1, o2, od = (json.loads(x[2]) for x in (a, b_, d_))
    ok = (o1["model_version"] == "1" and o2["model_version"] == "2" and od["model_version"] == "2"
          and o1["outputs"][0]["data"] != o2["outputs"][0]["data"] and abs(o1["outputs"][0]["data"][0] - want[0][0]) < 1e-5)
check("all policy: each version served; no version means the highest", ok, (a[0], b_[0], d_[0], bm[:200]))
V.stop()
H = Server(repo_with("repo_h", "dynamic_batching { max_queue_delay_microseconds: 300000 preferred_batch_size: [ 64 ] }"))
res = []
def slow_h():
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": rows[2]}]})
    res.append(H.req("POST", "/v2/models/moe_model/infer", body)[0])
t = threading.Thread(target=slow_h); t.start()
time.sleep(0.1)
st_u, _, bu = H.req("POST", "/v2/repository/models/moe_model/unload", b"")
t.join()
check("unload while a request runs: the request is answered, then the model goes", res == [200] and st_u == 200, (res, st_u, bu))
st, _, b = H.req("GET", "/v2/models/moe_model")
st_i, _, bi = H.req("POST", "/v2/repository/index", b"")
check("unloaded model: 404 and UNAVAILABLE in the index", st == 404 and b'"UNAVAILABLE"' in bi, (st, bi))
st_l, _, bl = H.req("POST", "/v2/repository/models/moe_model/load", b"")
st, _, b = H.req("GET", "/v2/models/moe_model/ready")
check("load brings it back", st_l == 200 and st == 200, (st_l, bl, st))
st, _, b = H.req("POST", "/v2/repository/models/nope/load", b"")
check("loading a model not in the repository is a 400 naming it", st == 400 and b"nope" in b, (st, b))
H.stop()
# load under load: the loops hold the models' lock shared over every pass, so a load (exclusive)
# must still get it while clients keep every loop busy
L = Server(repo_with("repo_l"))
stop_l = threading.Event()
l_res = []
def busy_l():
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": rows[1]}]})
    while not stop_l.is_set():
        l_res.append(L.req("POST", "/v2/models/moe_model/infer", body)[0])
ths = [threading.Thread(target=busy_l) for _ in range(16)]
for t in ths: t.start()
time.sleep(0.3)
loads = []
for _ in range(3):
    t0 = time.time()
    st_l, _, bl = L.req("POST", "/v2/repository/models/moe_model/load", b"")
    loads.append((st_l, round(time.time() - t0, 2)))
stop_l.set()
for t in ths: t.join()
check("load while 16 clients keep the loops busy: done each time within 10 s, every inference answered",
      all(st == 200 and dt < 10 for st, dt in loads) and l_res and all(x == 200 for x in l_res),
      (loads, len(l_res), [x for x in l_res if x != 200][:5]))
L.stop()
G = Server(repo_with("repo_g", "dynamic_batching { max_queue_delay_microseconds: 300000 preferred_batch_size: [ 64 ] }"))
res = []
def slow():
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": rows[1]}]})
    res.append(G.req("POST", "/v2/models/moe_model/infer", body)[0])
t = threading.Thread(target=slow); t.start()
time.sleep(0.1)
rc = G.stop()
t.join()
check("SIGTERM finishes the request in flight, exit 0", res == [200] and rc == 0, (res, rc))
# ---------------------------------------------------------------- a compressed model: same contract, FP32 in and out
for qt in ("q8", "nm24:bf16"):
    r = run("quantize", "--model", "m.safetensors", "--out", "mq.safetensors", "--type", qt)
    check("quantize %s for serving" % qt, r.returncode == 0, r.stderr)
    run("infer", "--model", "mq.safetensors", "--input", "x.npy", "--output", "yq.npy", "--quiet")
    wantq = read_npy(os.path.join(T, "yq.npy"))
    name = "repo_q" + qt.replace(":", "_")
    run("export", "--model", "mq.safetensors", "--repository", name, "--max-batch-size", "64")
    Q = Server(os.path.join(T, name))
    st, h, b = Q.req("GET", "/v2/models/moe_model")
    mq = json.loads(b) if st == 200 else {}
    check("%s model metadata stays FP32 [-1, 32]" % qt, st == 200 and mq["inputs"][0]["datatype"] == "FP32"
          and mq["inputs"][0]["shape"] == [-1, 32] and mq["outputs"][0]["datatype"] == "FP32", b)
    body5 = json.dumps({"inputs": [{"name": "input", "shape": [5, 32], "datatype": "FP32", "data": flat}]})
    st, h, b = Q.req("POST", "/v2/models/moe_model/infer", body5, {"Content-Type": "application/json"})
    outs = {o["name"]: o for o in (json.loads(b).get("outputs", []) if st == 200 else [])}
    gq = outs.get("output", {}).get("data", [])
    eq = max([abs(a - b_) for a, b_ in zip(gq, [v for r_ in wantq for v in r_])] or [1])
    dq = max([abs(a - b_) for a, b_ in zip(gq, got)] or [0])
    check("%s served over HTTP equals deepmoe infer on it (and differs from fp32 by %.2g)" % (qt, dq),
          st == 200 and len(gq) == 160 and eq < 1e-5 and dq > 0, (st, eq, b[:200]))
    check("%s server stops cleanly" % qt, Q.stop() == 0)
# ---------------------------------------------------------------- connection limits
import socket
L = Server(repo_with("repo_lim"), "--max-connections-per-client", "3", "--max-header", "8192", "--http-threads", "3")
def raw(payload, wait=0.3):
    s = socket.create_connection(("127.0.0.1", L.port), timeout=5)
    s.sendall(payload)
    time.sleep(wait)
    try:
        return s.recv(200)
    except OSError as e:
        return repr(e).encode()
    finally:
        s.close()
got = raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 7000 + b"\r\n\r\n")
check("headers under --max-header are served", got.startswith(b"HTTP/1.1 200"), got)
got = raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 12000 + b"\r\n\r\n")
check("headers over --max-header get 431", got.startswith(b"HTTP/1.1 431"), got)
held = [socket.create_connection(("127.0.0.1", L.port), timeout=5) for _ in range(3)]
time.sleep(0.2)
got = raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
check("a 4th connection from one client over --max-connections-per-client 3 is refused", not got.startswith(b"HTTP/1.1 200"), got)
for h_ in held: h_.close()
time.sleep(0.2)
got = raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
check("once they close, the client is served again", got.startswith(b"HTTP/1.1 200"), got)
check("limits server stops cleanly", L.stop() == 0)
r = run("serve", "--model-repository", "repo_lim", "--max-buffered", "2000", "--max-body", "4096")
check("serve: --max-buffered below --max-body is a usage error", r.returncode == 2 and "max-buffered" in r.stderr, r.stderr)
r = run("serve", "--model-repository", "nowhere", "--http-port", "0", "--metrics-port", "-1")
check("serve: missing repository is an error", r.returncode == 1 and "nowhere" in r.stderr, r.stderr)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
