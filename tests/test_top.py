#!/usr/bin/env python3
"""test_top.py BINARY - `deepmoe top` and the Grafana dashboard against a running
server: top renders under a pseudo-terminal (refreshing frames, each model's
requests, latency, queue, batch sizes and a load bar per expert, memory) and
quits on q; --once prints plain text with the rates of what was sent; every
query of docs/grafana/deepmoe-serving.json names only metrics and labels the
server exports. Standard library only."""
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tcheck import check, finish  # noqa: E402

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/deepmoe")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


tmp = tempfile.mkdtemp(prefix="dm_top_")
os.chdir(tmp)
subprocess.run([BIN, "init", "--out", "m.safetensors"], check=True, capture_output=True)
subprocess.run([BIN, "export", "--model", "m.safetensors", "--repository", "repo"], check=True, capture_output=True)
hp, mp = free_port(), free_port()
srv = subprocess.Popen([BIN, "serve", "--model-repository", "repo", "--http-port", str(hp), "--metrics-port", str(mp)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
murl = "http://127.0.0.1:%d/metrics" % mp
for _ in range(100):
    try:
        urllib.request.urlopen(murl, timeout=1).read()
        break
    except OSError:
        time.sleep(0.05)
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 512], "datatype": "FP32",
                               "data": [0.01 * (i % 37) - 0.2 for i in range(512)]}]}).encode()
sent = [0]


def load(seconds):
    t_end = time.time() + seconds
    while time.time() < t_end:
        q = urllib.request.Request("http://127.0.0.1:%d/v2/models/moe_model/infer" % hp, data=body)
        urllib.request.urlopen(q, timeout=10).read()
        sent[0] += 1


load(0.5)

# ---- --once: plain text
r = subprocess.run([BIN, "top", "--url", murl, "--once"], capture_output=True, text=True, timeout=30)
out = r.stdout
check("top --once: exit 0, plain text (no screen control)", r.returncode == 0 and "\x1b[" not in out, r.stderr)
m = re.search(r"requests\s+(\d+) total ok", out)
check("top --once: the requests served so far (%d sent)" % sent[0], m and int(m.group(1)) == sent[0], out[:400])
check("top --once: latency, queue, batches, utilization, memory, cold start",
      all(k in out for k in ("p50", "p99", "waiting", "executions", "utilization", "RSS", "cold start")), out)
bars = re.findall(r"^\s+e(\d+)\s+([#.]{40})\s+([\d.]+)%$", out, re.M)
check("top --once: a load bar per expert (8), shares summing to 100%",
      len(bars) == 8 and abs(sum(float(b[2]) for b in bars) - 100) < 0.5, bars)

# ---- under a pseudo-terminal: frames, live rates, q quits
th = threading.Thread(target=load, args=(2.0,))
th.start()
pid, fd = pty.fork()
if pid == 0:
    os.execv(BIN, [BIN, "top", "--url", murl, "--interval", "0.3"])
buf, t_end = b"", time.time() + 1.8
while time.time() < t_end:
    rd, _, _ = select.select([fd], [], [], 0.1)
    if rd:
        try:
            buf += os.read(fd, 65536)
        except OSError:
            break
os.write(fd, b"q")
status, t_quit = None, time.time() + 3
while time.time() < t_quit:
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = st
        break
    try:
        rd, _, _ = select.select([fd], [], [], 0.05)
        if rd:
            buf += os.read(fd, 65536)
    except OSError:
        pass
if status is None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
th.join()
text = buf.decode("utf-8", "replace")
frames = text.count("\x1b[H\x1b[2J")
check("top under a pty: refreshes the screen (%d frames in 1.8 s at 0.3 s)" % frames, frames >= 3, text[:300])
check("top under a pty: q quits with status 0", status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
      status)
last = text.split("\x1b[H\x1b[2J")[-1]
rates = [float(x) for x in re.findall(r"requests\s+(\d+)/s ok", text)]
check("top under a pty: live requests/s while a client sends (max %.0f/s)" % max(rates or [0]), rates and max(rates) > 10,
      rates)
check("top under a pty: the model, latency, expert bars per layer in the last frame",
      "moe_model" in last and "p99" in last and "layer 0 load" in last and len(re.findall(r"e\d+\s+[#.]{40}", last)) == 8,
      last[:600])

# ---- errors
r = subprocess.run([BIN, "top", "--url", "http://127.0.0.1:%d/metrics" % free_port(), "--once"], capture_output=True,
                   text=True, timeout=30)
check("top against a closed port: exit 1 naming the URL", r.returncode == 1 and "127.0.0.1" in r.stderr, r.stderr)
r = subprocess.run([BIN, "top", "--url", "http://127.0.0.1:%d/nothing" % mp, "--once"], capture_output=True, text=True,
                   timeout=30)
check("top against a non-metrics path: exit 1 with the HTTP status", r.returncode == 1 and "404" in r.stderr, r.stderr)
r = subprocess.run([BIN, "top", "--interval", "0"], capture_output=True, text=True, timeout=30)
check("top --interval 0: usage error (2)", r.returncode == 2, r.stderr)

# ---- the Grafana dashboard names only what the server exports
page = urllib.request.urlopen(murl, timeout=5).read().decode()
names, labels = set(), set()
for line in page.splitlines():
    if line.startswith("#") or not line.strip():
        continue
    mm = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
    if mm:
        names.add(mm.group(1))
        labels.update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', mm.group(3) or ""))
dash = json.load(open(os.path.join(ROOT, "docs", "grafana", "deepmoe-serving.json")))
panels = dash["panels"]
check("dashboard: panels, each with a title, grid position and targets",
      len(panels) >= 8 and all(p.get("title") and p.get("gridPos") and p.get("targets") for p in panels))
missing, bad_labels, empty = [], [], []
exprs = [t["expr"] for p in panels for t in p["targets"]] + [v["query"] for v in dash["templating"]["list"]]
for e in exprs:
    used = set(re.findall(r"\b((?:nv|deepmoe)_[a-zA-Z0-9_:]*)", e))
    if not used:
        empty.append(e)
    missing += [u for u in used if u not in names]
    for group in re.findall(r"(?:by|ignoring|without|on)\s*\(([^)]*)\)", e) + re.findall(r"\{([^}]*)\}", e):
        for lab in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!=|!~|=|,|$)", group):
            if lab not in labels:
                bad_labels.append((lab, e))
    for lab in re.findall(r"label_values\([^,]+,\s*([a-zA-Z_]+)\)", e):
        if lab not in labels:
            bad_labels.append((lab, e))
check("dashboard: every query (%d) names a deepmoe/Triton metric" % len(exprs), not empty, empty)
check("dashboard: every metric a query names is exported by the server", not missing, sorted(set(missing)))
check("dashboard: every label a query uses is exported", not bad_labels, bad_labels[:3])
check("(control: a made-up metric would be caught)", "nv_inference_made_up" not in names)

srv.send_signal(signal.SIGTERM)
srv.communicate(timeout=30)
finish()
