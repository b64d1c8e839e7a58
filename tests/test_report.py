#!/usr/bin/env python3
"""test_report.py BINARY - `deepmoe report` from outside: two short Fashion-MNIST
runs with different balancing (and a synthetic regression run) make a page that
is self-contained (no script, nothing fetched), holds each expected plot
element with the right number of series, points and cells, reports the runs'
own final numbers, marks the settings that differ, and renders in headless
Chromium: a screenshot that is not blank, no console errors. Bad input is an
error. Standard library only; the rendering checks SKIP without chromium."""
import html.parser
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tcheck import check, finish  # noqa: E402

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/deepmoe")


def run(*args, timeout=300):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=timeout)


class Page(html.parser.HTMLParser):
    """The svg elements (id -> counts of polylines, cells, lines, points per polyline) and the tables' rows."""

    def __init__(self):
        super().__init__()
        self.svgs, self.tables, self.cur, self.table, self.row, self.cell = {}, {}, None, None, None, None
        self.tags = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "svg":
            self.cur = self.svgs.setdefault(a.get("id"), {"polyline": [], "cell": 0, "hline": 0, "class": a.get("class")})
        elif tag == "polyline" and self.cur is not None:
            self.cur["polyline"].append((a.get("data-name"), len(a.get("points", "").split())))
        elif tag == "rect" and self.cur is not None and a.get("class") == "cell":
            self.cur["cell"] += 1
        elif tag == "g" and self.cur is not None and a.get("class") == "hline":
            self.cur["hline"] += 1
        elif tag == "table":
            self.table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self.table is not None:
            self.row = {"class": a.get("class"), "cells": []}
            self.table.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "svg":
            self.cur = None
        elif tag == "table":
            self.table = None
        elif tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row["cells"].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def png_pixels(path):
    """(width, height, rows of bytes, bytes per pixel) of an 8-bit RGB/RGBA PNG (zlib + the five filters)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), "PNG of depth %d type %d" % (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows, bpp


def chromium():
    for c in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(c):
            return shutil.which(c)
    return None


def render(browser, page, shot):
    """Headless screenshot and DOM dump; returns (dom, console lines)."""
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
            "--v=0", "--user-data-dir=" + tempfile.mkdtemp(prefix="dm_chr_")]
    url = "file://" + os.path.abspath(page)
    r1 = subprocess.run(base + ["--window-size=1300,2600", "--screenshot=" + shot, url], capture_output=True, text=True,
                        timeout=120)
    r2 = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    console = [l for l in (r1.stderr + r2.stderr).splitlines() if "CONSOLE" in l or "Failed to load resource" in l]
    return r2.stdout, console


tmp = tempfile.mkdtemp(prefix="dm_report_")
os.chdir(tmp)
common = ["--data", "fashion-mnist", "--steps", "60", "--log-every", "10", "--eval-every", "30", "--threads", "2"]
ra = run("train", "--out", "auxfree", *common)
rb = run("train", "--out", "seedbal", "--balance", "seed", *common)
check("two short Fashion-MNIST runs (aux-free and seed balancing)", ra.returncode == 0 and rb.returncode == 0,
      ra.stderr[-300:] + rb.stderr[-300:])

r = run("report", "auxfree", "seedbal", "--out", "r.html")
check("report A B --out r.html: exit 0", r.returncode == 0 and "wrote r.html" in r.stdout, r.stderr)
text = open("r.html").read() if os.path.exists("r.html") else ""
check("the page has no script and fetches nothing", "<script" not in text.lower() and " src=" not in text
      and " href=" not in text and "url(" not in text and "@import" not in text)
pg = Page()
pg.feed(text)
S = pg.svgs
want = ["chart-loss", "chart-accuracy", "chart-lr", "chart-throughput", "chart-steptime", "chart-utilization", "chart-maxvio",
        "chart-routing", "heatmap-0-L0", "heatmap-0-L1", "heatmap-1-L0", "heatmap-1-L1", "bias-0-L0", "bias-0-L1"]
check("every expected plot: curves, balance, routing, heatmaps per run and layer, aux-free biases",
      all(w in S for w in want), sorted(set(want) - set(S)))
check("no bias plot for the run without selection biases", "bias-1-L0" not in S)
check("loss: train and test of both runs (4 series)", len(S.get("chart-loss", {}).get("polyline", [])) == 4,
      S.get("chart-loss"))
recs = [json.loads(l) for l in open("auxfree/metrics.jsonl")]
train = [x for x in recs if not x.get("eval")]
evals = [x for x in recs if x.get("eval")]
lr = dict(S.get("chart-lr", {}).get("polyline", []))
check("learning rate: one point per training record (%d)" % len(train), lr.get("auxfree") == len(train), lr)
check("routing accuracy: one point per evaluation (%d)" % len(evals),
      dict(S.get("chart-routing", {}).get("polyline", [])).get("auxfree") == len(evals), S.get("chart-routing"))
check("utilization has the seed's 85% line", S.get("chart-utilization", {}).get("hline") == 1)
check("expert-load heatmap: experts x records cells (8 x %d)" % len(train),
      S.get("heatmap-0-L0", {}).get("cell") == 8 * len(train), S.get("heatmap-0-L0"))
check("bias plot: one series per expert", len(S.get("bias-0-L0", {}).get("polyline", [])) == 8)
res = {row["cells"][0]: row["cells"][1:] for row in pg.tables.get("results", []) if row["cells"]}
acc_a = "%.4f" % evals[-1]["accuracy"]
acc_b = "%.4f" % [json.loads(l) for l in open("seedbal/metrics.jsonl") if '"eval"' in l][-1]["accuracy"]
check("results: each run's final test accuracy from its metrics.jsonl", res.get("final test accuracy") == [acc_a, acc_b],
      (res.get("final test accuracy"), acc_a, acc_b))
check("results: startup and step p99 from metrics.jsonl", res.get("startup (s)", [""])[0] == "%.2f" % train[0]["startup_s"]
      and res.get("worst step p99 (ms)", [""])[0] == "%.2f" % max(x["step_ms_p99"] for x in train), res)
check("results: the final routing accuracy", res.get("final routing accuracy", [""])[0] == "%.3f" % evals[-1]["routing_accuracy"])
sets = {row["cells"][0]: row for row in pg.tables.get("settings", []) if row["cells"]}
check("settings: the balance row differs and is marked", sets.get("balance", {}).get("class") == "diff"
      and "aux_free" in sets["balance"]["cells"][1] and "seed" in sets["balance"]["cells"][2], sets.get("balance"))
check("settings: the same learning rate is not marked", "lr" in sets and sets["lr"]["class"] is None, sets.get("lr"))
check("settings: the model config (n_experts 8, top_k 2)", sets.get("n_experts", {}).get("cells", [])[1:] == ["8", "8"]
      and sets.get("top_k", {}).get("cells", [])[1:] == ["2", "2"])

r = run("report", "auxfree")
check("report RUN: default output RUN/report.html", r.returncode == 0 and os.path.exists("auxfree/report.html"), r.stderr)

# regression: the MSE chart instead of accuracy
rs = run("train", "--data", "synthetic:regimes=4,dim=8,rows=3000", "--out", "reg", "--steps", "40", "--log-every", "10",
         "--eval-every", "20")
r = run("report", "reg", "--out", "reg.html")
pr = Page()
pr.feed(open("reg.html").read() if r.returncode == 0 else "")
check("a regression run: test MSE chart, no accuracy chart", rs.returncode == 0 and "chart-mse" in pr.svgs
      and "chart-accuracy" not in pr.svgs and len(pr.svgs["chart-mse"]["polyline"]) == 1, r.stderr)

# bad input
os.makedirs("empty", exist_ok=True)
r = run("report", "empty")
check("a directory without metrics.jsonl: exit 1 naming the file", r.returncode == 1 and "empty/metrics.jsonl" in r.stderr,
      r.stderr)
os.makedirs("bad", exist_ok=True)
with open("bad/metrics.jsonl", "w") as f:
    f.write('{"step":10,"loss":1}\n{broken\n')
r = run("report", "bad")
check("a corrupt metrics.jsonl: exit 1 naming file and line", r.returncode == 1 and "bad/metrics.jsonl:2" in r.stderr,
      r.stderr)
os.makedirs("late", exist_ok=True)   # records before the first that has an expert_load (a fuzz finding)
with open("late/metrics.jsonl", "w") as f:
    f.write('{"step":10,"loss":1}\n{"step":20,"loss":0.9}\n{"step":30,"loss":0.8,"expert_load":[[0.5,0.25,0.25]]}\n')
r = run("report", "late", "--out", "late.html")
pl = Page()
pl.feed(open("late.html").read() if r.returncode == 0 else "")
check("expert_load only from the third record: a heatmap of 3 experts x 3 records", r.returncode == 0
      and pl.svgs.get("heatmap-0-L0", {}).get("cell") == 9, (r.stderr, pl.svgs.get("heatmap-0-L0")))
r = run("report")
check("no run directory: usage error (2)", r.returncode == 2)
r = run("report", *(["auxfree"] * 17))
check("17 runs: usage error (2)", r.returncode == 2)
r = run("report", "auxfree", "--out", "/nonexistent-dir/r.html")
check("an unwritable --out: exit 1", r.returncode == 1 and "/nonexistent-dir/r.html" in r.stderr, r.stderr)

# rendering in headless Chromium
browser = chromium()
if not browser:
    print("SKIP rendering checks: no chromium (apt-get install chromium; scripts/deps.sh test installs it)")
else:
    dom, console = render(browser, "r.html", "shot.png")
    check("Chromium renders the page with no console errors", not console, console[:3])
    check("the rendered DOM holds every expected plot", all('id="%s"' % w in dom for w in want),
          [w for w in want if 'id="%s"' % w not in dom])
    w, h, rows, bpp = png_pixels("shot.png")
    white = colors = 0
    seen = set()
    for y in range(0, h, 4):
        row = rows[y]
        for x in range(0, w, 4):
            px = row[x * bpp:x * bpp + 3]
            white += px == b"\xff\xff\xff"
            seen.add(px)
    total = ((h + 3) // 4) * ((w + 3) // 4)
    check("the screenshot is not blank (%.1f%% non-white, %d colors)" % (100 - 100 * white / total, len(seen)),
          white < 0.97 * total and len(seen) > 20)
    # the console check can fail: a control page with an error in its console
    with open("control.html", "w") as f:
        f.write("<!DOCTYPE html><html><body><script>console.error('control error')</script></body></html>")
    _, console = render(browser, "control.html", "control.png")
    check("(control: a page that logs an error is caught)", any("control error" in l for l in console), console)

finish()
