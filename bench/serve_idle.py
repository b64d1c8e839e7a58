#!/usr/bin/python3
"""serve_idle.py PORT [N] [BODY] - holds N idle keep-alive connections (10000) to a
running `deepmoe serve` on 127.0.0.1:PORT and, while they are all open, times 200
requests of a new client (GET /v2/health/live, and with BODY, a binary infer request
file as bench/serve_load.sh writes it: BODY and BODY.len). Prints
  IDLE held=N opened_s=S live_p50_us=.. live_p99_us=.. infer_p50_us=.. infer_p99_us=.. failures=F
Standard library only; raises its own file limit to the hard limit."""
import http.client, resource, socket, sys, time

port = int(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
body_path = sys.argv[3] if len(sys.argv) > 3 else None
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if hard < n + 64:
    print("IDLE skipped: the file limit %d is below %d" % (hard, n + 64))
    sys.exit(0)
t0 = time.time()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    socks.append(s)
opened = time.time() - t0
time.sleep(0.5)
# are they still open? (a server that dropped them closes them: recv would return b"")
for s in socks[:: max(1, n // 100)]:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            print("IDLE the server closed an idle connection early"); sys.exit(1)
    except BlockingIOError:
        pass

def timed(method, path, body=None, headers=None):
    out, fails = [], 0
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(200):
        t = time.perf_counter()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse(); r.read()
            if r.status != 200: fails += 1
        except (OSError, http.client.HTTPException):
            fails += 1
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        out.append((time.perf_counter() - t) * 1e6)
    c.close()
    out.sort()
    return out[len(out) // 2], out[int(len(out) * 0.99)], fails

lp50, lp99, lf = timed("GET", "/v2/health/live")
ip50 = ip99 = 0
inf = 0
if body_path:
    body = open(body_path, "rb").read()
    hl = open(body_path + ".len").read().strip()
    ip50, ip99, inf = timed("POST", "/v2/models/moe_model/infer", body, {"Inference-Header-Content-Length": hl})
print("IDLE held=%d opened_s=%.1f live_p50_us=%.0f live_p99_us=%.0f infer_p50_us=%.0f infer_p99_us=%.0f failures=%d"
      % (n, opened, lp50, lp99, ip50, ip99, lf + inf))
for s in socks: s.close()
