#!/usr/bin/python3
"""soak.py DEEPMOE - the server under mixed valid and hostile traffic, on loopback.

For SOAK_S seconds (20 by default; SOAK_S=600 for the long run) these run at once
against one `deepmoe serve`:
  valid      keep-alive clients sending JSON and binary requests of 1-4 rows; every
             answer is checked against `deepmoe infer` on the same rows
  malformed  bad JSON, a wrong datatype (INT32, FP64: 400), NaN and Inf inputs (400),
             wrong shapes, bad Content-Length, random bytes, bodies over --max-body,
             gzip bodies, requests with a body on the metrics port: each must be
             answered 4xx/5xx (or the connection closed), never 200, never a hang
  slow       uploads dribbled under --min-rate: the server must drop them
  stalled    uploads that stop half way: the server must close them by --request-timeout
  flood      every few seconds 1,100 idle connections (above select()'s 1,024) while
             a new client must still be answered, then closed
  abrupt     requests whose client closes before reading the answer
Then: the server is still up, no wrong answer was seen, its peak RSS over the last third
of the run is within 20% (+2 MiB) of its peak over the second third, and SIGTERM with a stalled upload open ends it
with status 0 within --shutdown-timeout + 3 s.
Standard library only. Prints one line per check and "N passed, N failed"."""
import http.client, json, os, random, re, resource, signal, socket, struct, subprocess, sys, tempfile, threading, time, zlib

BIN = os.path.abspath(sys.argv[1])
SECONDS = max(15.0, float(os.environ.get("SOAK_S", "20")))   # the slow, stalled and flood rounds need 10 s each
T = tempfile.mkdtemp(prefix="deepmoe-soak-")
D = 32
passed = failed = 0
lock = threading.Lock()
stats = {"valid": 0, "wrong": 0, "valid_err": 0, "malformed": 0, "mal_bad": 0, "slow_dropped": 0, "slow_kept": 0,
         "stalled_closed": 0, "stalled_open": 0, "flood_ok": 0, "flood_fail": 0, "abrupt": 0, "floods": 0}
problems = []

def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1; print("ok   " + name, flush=True)
    else:
        failed += 1; print("FAIL %s: %s" % (name, str(detail)[:600]), flush=True)

def bump(key, note=None):
    with lock:
        stats[key] += 1
        if note and len(problems) < 20: problems.append(note)

def run(*args):
    return subprocess.run([BIN] + list(args), cwd=T, capture_output=True, text=True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from npy2d import read_npy, write_npy

def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"): return int(line.split()[1])
    return 0

# ---------------------------------------------------------------- setup
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except (ValueError, OSError):
    pass
FLOOD = 1100 if resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 1300 else 0
r = run("init", "--out", "m.safetensors", "--dim", str(D), "--experts", "4", "--hidden", "16")
check("init a model", r.returncode == 0, r.stderr)
NROWS = 64
rng = random.Random(7)
rows = [[rng.uniform(-1, 1) for _ in range(D)] for _ in range(NROWS)]
write_npy(os.path.join(T, "x.npy"), rows)
r = run("infer", "--model", "m.safetensors", "--input", "x.npy", "--output", "y.npy", "--quiet")
check("deepmoe infer gives the reference answers", r.returncode == 0, r.stderr)
want = read_npy(os.path.join(T, "y.npy"))
r = run("export", "--model", "m.safetensors", "--repository", "repo", "--max-batch-size", "64")
check("export a repository", r.returncode == 0, r.stderr)

LIMITS = ["--max-body", "65536", "--max-buffered", "1048576", "--idle-timeout", "6", "--request-timeout", "3",
          "--min-rate", "2048", "--shutdown-timeout", "2"]
srv = subprocess.Popen([BIN, "serve", "--model-repository", os.path.join(T, "repo"), "--http-port", "0",
                        "--metrics-port", "0"] + LIMITS, cwd=T, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
line = srv.stdout.readline()
m = re.search(r"HTTP on [0-9.]+:(\d+), metrics on [0-9.]+:(\d+)", line)
if not m:
    print("FAIL server did not start: " + line + srv.stderr.read())
    print("%d passed, %d failed" % (passed, failed + 1))
    sys.exit(1)
PORT, MPORT = int(m.group(1)), int(m.group(2))
URL = "/v2/models/moe_model/infer"
stop_at = time.time() + SECONDS

def binary_body(xrows, datatype="FP32", fmt="f"):
    n = len(xrows)
    data = struct.pack("<%d%s" % (n * D, fmt), *[v for r in xrows for v in r])
    head = json.dumps({"inputs": [{"name": "input", "shape": [n, D], "datatype": datatype,
                                   "parameters": {"binary_data_size": len(data)}}],
                       "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}

def json_body(xrows):
    return json.dumps({"inputs": [{"name": "input", "shape": [len(xrows), D], "datatype": "FP32",
                                   "data": [v for r in xrows for v in r]}]}).encode(), {}

def outputs_of(status, headers, data):
    hl = headers.get("Inference-Header-Content-Length")
    if hl is None:
        j = json.loads(data)
        return j["outputs"][0]["data"]
    hl = int(hl)
    n = (len(data) - hl) // 4
    return list(struct.unpack("<%df" % n, data[hl:]))

def close_enough(got, idx):
    ref = [v for i in idx for v in want[i]]
    if len(got) != len(ref): return False
    return all(abs(a - b) <= 1e-5 * (1 + abs(b)) for a, b in zip(got, ref))

# ---------------------------------------------------------------- workers
def valid_client(seed):
    rnd = random.Random(seed)
    c = None
    while time.time() < stop_at:
        try:
            if c is None: c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=20)
            idx = [rnd.randrange(NROWS) for _ in range(rnd.randint(1, 4))]
            body, hdr = (binary_body if rnd.random() < 0.7 else json_body)([rows[i] for i in idx])
            z = rnd.random()
            if z < 0.05:     # a deflate (zlib stream) request body
                body, hdr = zlib.compress(body), dict(hdr, **{"Content-Encoding": "deflate"})
            elif z < 0.1:    # gzip
                co = zlib.compressobj(6, zlib.DEFLATED, 31)
                body, hdr = co.compress(body) + co.flush(), dict(hdr, **{"Content-Encoding": "gzip"})
            if rnd.random() < 0.1: hdr = dict(hdr, **{"Accept-Encoding": rnd.choice(["gzip", "deflate", "br;q=1, gzip;q=0.5"])})
            c.request("POST", URL, body=body, headers=hdr)
            resp = c.getresponse()
            data = resp.read()
            rh = dict(resp.getheaders())
            if rh.get("Content-Encoding") in ("gzip", "deflate"):
                data = zlib.decompress(data, 31 if rh["Content-Encoding"] == "gzip" else 15)
            if resp.status == 200:
                got = outputs_of(resp.status, rh, data)
                if close_enough(got, idx): bump("valid")
                else: bump("wrong", "wrong answer for rows %s" % idx)
            else:
                bump("valid_err", "valid request got %d %s" % (resp.status, data[:200]))
        except (OSError, http.client.HTTPException) as e:
            bump("valid_err", "valid client: %r" % e)
            c = None
            time.sleep(0.05)

MALFORMED = []
def mal(fn): MALFORMED.append(fn); return fn

# each returns method, path, body, headers and the status Triton answers
@mal
def bad_json(): return "POST", URL, b'{"inputs": [', {}, 400
@mal
def int32_input():
    b, h = binary_body([[1] * D], "INT32", "i"); return "POST", URL, b, h, 400
@mal
def fp64_input():
    b, h = binary_body([[0.5] * D], "FP64", "d"); return "POST", URL, b, h, 400
@mal
def nan_input():
    b, h = binary_body([[float("nan")] + [0.0] * (D - 1)]); return "POST", URL, b, h, 400
@mal
def inf_input():
    b, h = binary_body([[0.0] * (D - 1) + [float("inf")]]); return "POST", URL, b, h, 400
@mal
def wrong_shape():
    return "POST", URL, json.dumps({"inputs": [{"name": "input", "shape": [1, D + 1], "datatype": "FP32",
                                               "data": [0.0] * (D + 1)}]}).encode(), {}, 400
@mal
def wrong_count():
    return "POST", URL, json.dumps({"inputs": [{"name": "input", "shape": [2, D], "datatype": "FP32",
                                               "data": [0.0] * D}]}).encode(), {}, 400
@mal
def bad_header_len():
    b, h = binary_body([[0.0] * D]); return "POST", URL, b, {"Inference-Header-Content-Length": "99999"}, 400
@mal
def too_big(): return "POST", URL, b"x" * 70000, {}, 413
@mal
def bad_gzip(): return "POST", URL, b"\x1f\x8bnot gzip at all", {"Content-Encoding": "gzip"}, 400
@mal
def gzip_bomb():   # inflates past --max-body
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    return "POST", URL, co.compress(b"0" * 2000000) + co.flush(), {"Content-Encoding": "gzip"}, 413
@mal
def unknown_coding(): return "POST", URL, b"{}", {"Content-Encoding": "br"}, 415
@mal
def metrics_with_body(): return "POST", "/metrics", b"hello", {}, 405
@mal
def metrics_unknown(): return "GET", "/nope", None, {}, 404
@mal
def unknown_model(): return "POST", "/v2/models/nope/infer", b"{}", {}, 404

def raw_exchange(payload, port=None, timeout=10):
    """Sends raw bytes; returns the status code answered, 0 when closed without one."""
    s = socket.create_connection(("127.0.0.1", port or PORT), timeout=timeout)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return int(m.group(1)) if m else 0
    finally:
        s.close()

def malformed_client(seed):
    rnd = random.Random(seed)
    while time.time() < stop_at:
        try:
            k = rnd.randrange(len(MALFORMED) + 3)
            if k < len(MALFORMED):
                method, path, body, hdr, code = MALFORMED[k]()
                port = MPORT if path in ("/metrics", "/nope") else PORT
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request(method, path, body=body, headers=hdr)
                resp = c.getresponse()
                data = resp.read()
                c.close()
                ok = resp.status == code and "error" in json.loads(data)
                if ok: bump("malformed")
                else: bump("mal_bad", "%s got %d %s" % (MALFORMED[k].__name__, resp.status, data[:200]))
            elif k == len(MALFORMED):   # random bytes
                code = raw_exchange(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 600))))
                if code == 0 or 400 <= code < 600: bump("malformed")
                else: bump("mal_bad", "random bytes got %d" % code)
            elif k == len(MALFORMED) + 1:   # a bad Content-Length
                code = raw_exchange(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}" % URL.encode())
                if code == 0 or 400 <= code < 600: bump("malformed")
                else: bump("mal_bad", "bad Content-Length got %d" % code)
            else:   # a body on the metrics port, raw
                code = raw_exchange(b"PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", MPORT)
                if 400 <= code < 600: bump("malformed")
                else: bump("mal_bad", "metrics PUT with a body got %d" % code)
        except (OSError, http.client.HTTPException, ValueError) as e:
            bump("mal_bad", "malformed client: %r" % e)
        time.sleep(0.01)

def upload_head(length):
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (URL.encode(), length)

def slow_client():
    while time.time() < stop_at - 8:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=15)
        t0 = time.time()
        try:
            s.sendall(upload_head(40000))
            dropped = False
            while time.time() - t0 < 10:
                s.sendall(b"x" * 8)   # 80 bytes/s, under --min-rate
                time.sleep(0.1)
        except OSError:
            dropped = True
        if not dropped:
            try:
                s.settimeout(2)
                dropped = s.recv(1) == b""
            except OSError:
                dropped = True
        bump("slow_dropped" if dropped else "slow_kept", None if dropped else "a slow sender was kept 10 s")
        s.close()

def stalled_client():
    while time.time() < stop_at - 8:
        socks = []
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
            s.sendall(upload_head(30000) + b"y" * 1000)
            socks.append(s)
        for s in socks:   # --request-timeout 3: closed (with or without an answer) well within 8 s
            try:
                s.settimeout(8)
                while s.recv(4096): pass
                bump("stalled_closed")
            except OSError:
                bump("stalled_open", "a stalled upload was not closed within 8 s")
            s.close()

def flood_client():
    while FLOOD and time.time() < stop_at - 6:
        socks = []
        try:
            for _ in range(FLOOD):
                socks.append(socket.create_connection(("127.0.0.1", PORT), timeout=10))
            time.sleep(0.3)
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
            body, hdr = binary_body([rows[3]])
            c.request("POST", URL, body=body, headers=hdr)
            resp = c.getresponse()
            data = resp.read()
            c.close()
            if resp.status == 200 and close_enough(outputs_of(200, dict(resp.getheaders()), data), [3]): bump("flood_ok")
            else: bump("flood_fail", "with %d idle connections: %d" % (len(socks), resp.status))
        except (OSError, http.client.HTTPException) as e:
            bump("flood_fail", "with %d idle connections open: %r" % (len(socks), e))
        for s in socks: s.close()
        bump("floods")
        time.sleep(2)

def abrupt_client():
    while time.time() < stop_at:
        try:
            s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
            body, hdr = binary_body([rows[1]] * 4)
            s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: %s\r\nContent-Length: %d\r\n\r\n"
                      % (URL.encode(), hdr["Inference-Header-Content-Length"].encode(), len(body)) + body)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST
            s.close()
            bump("abrupt")
        except OSError:
            pass
        time.sleep(0.02)

threads = [threading.Thread(target=valid_client, args=(i,)) for i in range(4)]
threads += [threading.Thread(target=malformed_client, args=(100 + i,)) for i in range(2)]
threads += [threading.Thread(target=f) for f in (slow_client, stalled_client, flood_client, abrupt_client)]
for t in threads: t.daemon = True; t.start()
alive = True
samples, next_sample = [], time.time()
while time.time() < stop_at:
    time.sleep(0.5)
    if srv.poll() is not None: alive = False; break
    if time.time() >= next_sample:
        samples.append(rss_kib(srv.pid) // 1024)
        next_sample += max(1.0, SECONDS / 20)
for t in threads: t.join(timeout=30)

print("  %s" % json.dumps(stats))
print("  server RSS over the run (MiB): %s" % samples)
for p in problems: print("  problem: " + p)
check("the server stayed up for %g s" % SECONDS, alive and srv.poll() is None, srv.stderr.read() if not alive else "")
check("valid requests answered, all correct (%d)" % stats["valid"], stats["valid"] > 50 and stats["wrong"] == 0,
      stats)
check("no valid request refused or dropped", stats["valid_err"] == 0, problems)
check("every malformed request answered 4xx/5xx or closed (%d)" % stats["malformed"],
      stats["malformed"] > 20 and stats["mal_bad"] == 0, problems)
check("slow senders dropped (%d)" % stats["slow_dropped"], stats["slow_dropped"] > 0 and stats["slow_kept"] == 0, problems)
check("stalled uploads closed (%d)" % stats["stalled_closed"], stats["stalled_closed"] > 0 and stats["stalled_open"] == 0,
      problems)
if FLOOD:
    check("%d idle connections at once, a new client still answered (%d floods)" % (FLOOD, stats["floods"]),
          stats["flood_ok"] > 0 and stats["flood_fail"] == 0, problems)
else:
    print("SKIP connection flood: the file limit (%d) is below 1,300" % resource.getrlimit(resource.RLIMIT_NOFILE)[0])
check("abrupt disconnects survived (%d)" % stats["abrupt"], stats["abrupt"] > 0 and alive)
# the busiest RSS of the last third of the run against that of the second third (after warm-up)
third = max(1, len(samples) // 3)
warm_peak, end_peak = max(samples[third:2 * third] or [0]), max(samples[2 * third:] or [0])
check("RSS bounded: peak %d MiB after warm-up, %d MiB in the last third (limit +20%% + 2 MiB)" % (warm_peak, end_peak),
      warm_peak and end_peak <= warm_peak * 1.2 + 2, samples)

# SIGTERM with a stalled upload open: the upload is dropped, exit 0 within the shutdown deadline
s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
s.sendall(upload_head(30000) + b"z" * 100)
time.sleep(0.2)
t0 = time.time()
srv.send_signal(signal.SIGTERM)
try:
    rc = srv.wait(timeout=20)
except subprocess.TimeoutExpired:
    srv.kill(); rc = None
dt = time.time() - t0
s.close()
check("SIGTERM with a stalled upload open: exit %s after %.1f s (limit 5 s)" % (rc, dt), rc == 0 and dt < 5, rc)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
