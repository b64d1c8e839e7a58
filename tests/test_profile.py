#!/usr/bin/env python3
"""test_profile.py BINARY - the profiler (--profile, profile-summary) from outside.

Each command's trace is valid Chrome trace-event JSON (ph, ts, dur, pid, tid on
every span), its spans nest on each thread, a training step's children cover
it, the step spans add up to the step time `deepmoe bench` measured (within
10%), the counters carry the expert load, the server's request path has its
spans, profile-summary's self and total times agree with this file's own
computation, and bad input is an error. Standard library only."""
import json
import os
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


def run(*args, **kw):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=kw.get("timeout", 300))


def load(path):
    with open(path) as f:
        return json.load(f)


def spans(trace):
    return [e for e in trace["traceEvents"] if e.get("ph") == "X"]


def schema_errors(trace):
    """Every event's required keys and types, as the trace-event format defines them."""
    bad = []
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return ["no traceEvents array"]
    for e in trace["traceEvents"]:
        ph = e.get("ph")
        need = {"X": ("name", "ts", "dur", "pid", "tid"), "b": ("name", "ts", "pid", "tid", "id", "cat"),
                "e": ("name", "ts", "pid", "tid", "id", "cat"), "C": ("name", "ts", "pid", "args"),
                "M": ("name", "pid", "args")}.get(ph)
        if need is None:
            bad.append("unknown ph %r" % ph)
            continue
        for k in need:
            if k not in e:
                bad.append("%s event without %s: %s" % (ph, k, json.dumps(e)[:120]))
        for k in ("ts", "dur"):
            if k in e and not (isinstance(e[k], (int, float)) and e[k] >= 0):
                bad.append("%s %s is not a number >= 0" % (e.get("name"), k))
        for k in ("pid", "tid"):
            if k in e and not isinstance(e[k], int):
                bad.append("%s %s is not an integer" % (e.get("name"), k))
    return bad[:5]


def nest(trace):
    """Parents and children per thread; returns the spans that overlap without nesting."""
    lanes = {}
    for e in spans(trace):
        lanes.setdefault((e["pid"], e["tid"]), []).append(e)
    overlaps = []
    for lane in lanes.values():
        lane.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in lane:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"] + 0.002:
                stack.pop()
            if stack:
                p = stack[-1]
                if e["ts"] + e["dur"] > p["ts"] + p["dur"] + 0.002:
                    overlaps.append((p["name"], e["name"]))
                p.setdefault("kids", []).append(e)
            stack.append(e)
    return overlaps


def thread_names(trace):
    return {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e.get("ph") == "M" and e["name"] == "thread_name"}


tmp = tempfile.mkdtemp(prefix="dm_profile_")
os.chdir(tmp)

# ---- bench --mode train: schema, nesting, coverage, the step time
B, IT = 256, 8
r = run("bench", "--mode", "train", "--batch", str(B), "--iters", str(IT), "--threads", "2", "--json",
        "--profile", "bench.json")
check("bench --profile exits 0", r.returncode == 0, r.stderr[-300:])
check("bench --profile says where the trace is", "bench.json" in r.stderr and "perfetto" in r.stderr, r.stderr[-300:])
tr = load("bench.json")
check("bench trace: trace-event schema", not schema_errors(tr), "; ".join(schema_errors(tr)))
ov = nest(tr)
check("bench trace: spans nest on every thread", not ov, str(ov[:3]))
names = thread_names(tr)
check("bench trace: one lane per pool thread (main, pool worker 1)",
      sorted(names.values()) == ["main", "pool worker 1"], str(names))
steps = [e for e in spans(tr) if e["name"] == "train step"]
check("bench trace: a train step span per step (3 warm-ups + %d)" % IT, len(steps) == IT + 3, str(len(steps)))
cover = [sum(k["dur"] for k in s.get("kids", [])) / s["dur"] for s in steps[1:]]
check("bench trace: each step's ops cover >= 90%% of it (min %.3f)" % min(cover), min(cover) >= 0.90, str(cover))
bj = json.loads(r.stdout.strip().splitlines()[-1])
measured = B * IT / bj["rows_per_s"] * 1e6   # us over the timed steps
traced = sum(s["dur"] for s in steps[3:])
check("bench trace: the timed steps' spans add up to bench's step time within 10%% (%.0f vs %.0f us)" %
      (traced, measured), abs(traced - measured) <= 0.10 * measured)
want = {"router gemm", "top-k", "dispatch", "expert up gemm", "expert down gemm", "expert mid", "combine",
        "expert down dW gemm", "expert up dX gemm", "router backward", "adamw", "repack", "grad norm"}
have = {e["name"] for e in spans(tr)}
check("bench trace: the forward, backward and optimizer ops are there", want <= have, str(sorted(want - have)))
ups = [e for e in spans(tr) if e["name"] == "expert up gemm"]
check("bench trace: expert GEMM spans carry rows and expert id",
      ups and all(e["args"]["rows"] > 0 and 0 <= e["args"]["expert"] < 8 for e in ups))
loads = [e for e in tr["traceEvents"] if e.get("ph") == "C" and e["name"] == "expert load L0"]
check("bench trace: an expert-load counter per step, e0..e7 summing to 1",
      len(loads) == IT + 3 and all(len(c["args"]) == 8 and abs(sum(c["args"].values()) - 1) < 1e-3 for c in loads),
      str(loads[:1]))

# ---- profile-summary against this file's own self and total times
r = run("profile-summary", "bench.json", "--top", "0")
check("profile-summary exits 0", r.returncode == 0, r.stderr[-300:])
rows = {}
for line in r.stdout.splitlines()[1:]:
    parts = line.split()
    if "%" in line and len(parts) >= 9 and parts[-1].isdigit():
        name = " ".join(parts[:-9])
        rows[name] = (float(parts[-8]), float(parts[-5]), int(parts[-1]))   # self ms, total ms, calls
mine = {}
for e in spans(tr):
    s, t, n = mine.get(e["name"], (0.0, 0.0, 0))
    mine[e["name"]] = (s + e["dur"] - sum(k["dur"] for k in e.get("kids", [])), t + e["dur"], n + 1)
okk = rows.keys() == mine.keys() and all(
    abs(rows[k][0] - mine[k][0] / 1e3) <= 0.002 + 1e-3 * mine[k][1] / 1e3 and abs(rows[k][1] - mine[k][1] / 1e3) <= 0.002
    and rows[k][2] == mine[k][2] for k in mine)
check("profile-summary: calls, self and total time of every op as computed here", okk,
      str([(k, rows.get(k), mine[k]) for k in list(mine)[:3]]))
order = [float(l.split()[-8]) for l in r.stdout.splitlines()[1:] if "%" in l and l.split()[-1].isdigit()]
check("profile-summary: sorted by self time, largest first", len(order) > 5 and order == sorted(order, reverse=True),
      str(order[:5]))
# a name longer than the default column is shown whole, not cut
long_name = "a span name of forty-one characters, long"
with open("long.json", "w") as f:
    json.dump({"traceEvents": [{"ph": "X", "name": long_name, "cat": "t", "ts": 0, "dur": 5, "pid": 1, "tid": 1},
                               {"ph": "X", "name": "short", "cat": "t", "ts": 10, "dur": 3, "pid": 1, "tid": 1}]}, f)
r3 = run("profile-summary", "long.json")
check("profile-summary: a 41-character op name shown whole, columns aligned",
      r3.returncode == 0 and any(l.startswith(long_name + " ") for l in r3.stdout.splitlines())
      and len({l.index("%") for l in r3.stdout.splitlines()[1:3]}) == 1, r3.stdout + r3.stderr[-300:])
r2 = run("profile-summary", "bench.json", "--sort", "total", "--top", "1")
check("profile-summary --sort total --top 1: the train step first", r2.returncode == 0 and
      r2.stdout.splitlines()[1].startswith("train step"), r2.stdout[:300])

# ---- train: the run's own ops around the step
r = run("train", "--data", "synthetic:regimes=4,dim=8,rows=3000", "--out", "run", "--steps", "30",
        "--eval-every", "10", "--checkpoint-every", "15", "--threads", "2", "--profile", "train.json")
check("train --profile exits 0", r.returncode == 0, r.stderr[-300:])
tr = load("train.json")
check("train trace: schema and nesting", not schema_errors(tr) and not nest(tr), str(schema_errors(tr)))
have = {e["name"] for e in spans(tr)}
want = {"batch", "train step", "log", "eval", "checkpoint write", "forward", "moe layer", "moe layer backward"}
check("train trace: batch, step, log, eval and checkpoint spans", want <= have, str(sorted(want - have)))

# ---- infer and eval
import struct
with open("x.npy", "wb") as f:   # 300 rows of the seed layer's 512 inputs
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (300, 512), }"
    hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<%df" % (300 * 512), *[((i * 37) % 101) / 50.5 - 1 for i in range(300 * 512)]))
run("init", "--out", "m.safetensors")
r = run("infer", "--model", "m.safetensors", "--input", "x.npy", "--output", "y.npy", "--repeat", "3",
        "--profile", "infer.json")
tr = load("infer.json") if r.returncode == 0 else {}
check("infer --profile: a valid trace with a forward span per run", r.returncode == 0 and not schema_errors(tr)
      and not nest(tr) and sum(e["name"] == "forward" for e in spans(tr)) >= 3, r.stderr[-300:])
r = run("eval", "--model", "run/model.safetensors", "--data", "synthetic:regimes=4,dim=8,rows=3000",
        "--profile", "eval.json")
tr = load("eval.json") if r.returncode == 0 else {}
check("eval --profile: a valid trace with forward spans", r.returncode == 0 and not schema_errors(tr)
      and any(e["name"] == "forward" for e in spans(tr)), r.stderr[-300:])

# ---- serve: the request path
run("export", "--model", "m.safetensors", "--repository", "repo")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
srv = subprocess.Popen([BIN, "serve", "--model-repository", "repo", "--http-port", str(port), "--metrics-port", "-1",
                        "--profile", "serve.json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
ready = False
for _ in range(100):
    try:
        urllib.request.urlopen("http://127.0.0.1:%d/v2/health/ready" % port, timeout=1)
        ready = True
        break
    except OSError:
        time.sleep(0.05)
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 512], "datatype": "FP32",
                               "data": [0.01 * (i % 50) for i in range(512)]}]}).encode()
errors = []


def client():
    for _ in range(40):
        try:
            q = urllib.request.Request("http://127.0.0.1:%d/v2/models/moe_model/infer" % port, data=body)
            urllib.request.urlopen(q, timeout=10).read()
        except OSError as e:
            errors.append(str(e))


ths = [threading.Thread(target=client) for _ in range(8)]
[t.start() for t in ths]
[t.join() for t in ths]
srv.send_signal(signal.SIGTERM)
out, err = srv.communicate(timeout=30)
check("serve --profile: 320 requests answered, clean exit", ready and not errors and srv.returncode == 0,
      "%s %s" % (errors[:2], err[-300:]))
tr = load("serve.json") if os.path.exists("serve.json") else {"traceEvents": []}
have = {e["name"] for e in spans(tr)}
want = {"http parse", "batch execute", "response encode", "forward"}
check("serve trace: http parse, batch execute, response encode spans", want <= have and not schema_errors(tr),
      str(sorted(want - have)))
check("serve trace: http parse and response encode once per request",
      sum(e["name"] == "http parse" for e in spans(tr)) == 320 and sum(e["name"] == "response encode" for e in spans(tr)) == 320)
qb = [e for e in tr["traceEvents"] if e.get("ph") in ("b", "e") and e["name"] == "queue wait"]
check("serve trace: queue waits as async b/e pairs with matching ids",
      qb and len(qb) % 2 == 0 and {e["id"] for e in qb if e["ph"] == "b"} == {e["id"] for e in qb if e["ph"] == "e"})
names = set(thread_names(tr).values())
check("serve trace: lanes for the HTTP loops and the instance", {"http 0", "instance 0"} <= names, str(names))

# ---- bad input
r = run("bench", "--iters", "2", "--profile", "/nonexistent-dir/t.json")
check("--profile to an unwritable path: exit 1 before the work, with the reason",
      r.returncode == 1 and "cannot write" in r.stderr and "rows/s" not in r.stdout, r.stderr)
with open("bad.json", "w") as f:
    f.write("{not json")
r = run("profile-summary", "bad.json")
check("profile-summary of a non-JSON file: exit 1 naming it", r.returncode == 1 and "bad.json" in r.stderr, r.stderr)
with open("empty.json", "w") as f:
    f.write('{"other": 1}')
r = run("profile-summary", "empty.json")
check("profile-summary of JSON without traceEvents: exit 1", r.returncode == 1 and "traceEvents" in r.stderr, r.stderr)
r = run("profile-summary")
check("profile-summary without a file: usage error (2)", r.returncode == 2, r.stderr)
r = run("profile-summary", "missing.json")
check("profile-summary of a missing file: exit 1", r.returncode == 1 and "missing.json" in r.stderr, r.stderr)

finish()
