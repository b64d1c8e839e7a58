#!/usr/bin/python3
"""torch_quant.py - Debian's PyTorch on a deepmoe model file: fp32 and quantize_dynamic int8.

Run it as the benchmarks do, with OpenBLAS's core-type overrides unset for this
command only (they halve OpenBLAS's speed on the development machines; the
script also drops them from its own environment before torch loads OpenBLAS,
as bench/torch_train.py does):

  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/torch_quant.py MODEL.safetensors \
      [--threads 2] [--data X.npy|IDX.gz --labels Y.npy|IDX.gz] [--compare X.npy Y.npy] [--json]

MODEL is a deepmoe .safetensors file (deepmoe init / train, or a seed state dict
without metadata): read here with numpy from its header (8-byte little-endian
length, JSON with dtype/shape/data_offsets, "__metadata__"."deepmoe.config"),
no safetensors package. Any config deepmoe runs: the bare seed layer
(gating.*, experts.{e}.net.{0,2,3}.*), or a classifier (embed.*, layers.{l}.*,
norm.*, head.*); seed / softmax / sigmoid routers, selection bias, group
limits, seed or SwiGLU experts, shared experts; preprocess.scale/shift applied
first (x * scale, then + shift) as deepmoe does. Weights stored as BF16/F16 or
as deepmoe's compressed types (I8 + ".scale", nm24's ".idx") are dequantized
to fp32 first, so both variants start from the same weights.

Variants
  fp32   the model in torch.nn modules, sparse dispatch (only the chosen experts
         run, as bench/torch_seed.py's `sparse`)
  int8   torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8):
         every nn.Linear (router, experts, embed, head) becomes a
         DynamicQuantizedLinear: int8 weights with one scale per tensor, activations
         quantized per call (per tensor, asymmetric), on the quantized engine
         torch picks (printed; `--engine qnnpack` to change)
  int8pc the same with per-channel weight scales (per_channel_dynamic_qconfig), the
         closest to deepmoe's q8 (one scale per output row); skipped where the
         engine lacks it
  int8_qnnpack  (only with --variants) int8 packed for the qnnpack engine; its
         per-call warning on stderr is silenced
Routing: top-k by torch.topk (float ties, which deepmoe breaks to the lower
index, aside), so a variant's routing can differ from fp32's where int8 moves a
near-tied logit: --compare and the accuracy report how many rows that touches.

Metrics (threads = --threads, torch.set_num_threads; METRIC names as printed)
  batch1_us_p50, batch1_us_p99   latency of --calls single-row forwards (rows cycle
                                 through 256 inputs: the test rows, else uniform [-1, 1))
  batch1_rows_per_s              1e6 / batch1_us_p50
  batch64_rows_per_s, batch1024_rows_per_s   rows / median time of 5 * --reps and --reps forwards
  with --data and --labels (.npy, or IDX such as Debian's dataset-fashion-mnist:
  /usr/share/datasets/fashion-mnist/t10k-{images-idx3,labels-idx1}-ubyte.gz):
  accuracy (argmax of the output), and for the int8 variants predictions_like_fp32
  and routing_like_fp32 (share of rows with the same prediction / expert sets)
  with --compare X.npy Y.npy (Y from `deepmoe infer` on X): max_abs_diff_vs_deepmoe,
  max_rel_diff_vs_deepmoe (over max |Y|; fp32 ~1e-6), and for the int8 variants
  compare_rows_routed_unlike_fp32 and max_abs_diff_vs_deepmoe_same_routing

Output: `# ...` lines that say what ran (torch, threads, engine, the BLAS loaded,
the load average before and after), then one line per (variant, metric):
`VARIANT METRIC VALUE`; or one JSON object with --json.

Needs Debian's python3-torch; its matrix products go through libblas.so.3, so
install libopenblas0-openmp (the reference BLAS is ~10x slower; the BLAS line says
which one loaded). On the 2-core development machines PyTorch's OpenMP threads
(and so the int8 engine's) are erratic when another process holds a core: read
the load average lines, and compare with a --threads 1 run.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

# the thread count before torch loads OpenBLAS; the full command line in main()
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--threads", type=int, default=2)
THREADS = _pre.parse_known_args()[0].threads

os.environ["OPENBLAS_NUM_THREADS"] = str(THREADS)
os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)

import numpy as np  # noqa: E402  (after the OpenBLAS variables)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:
    from torch.ao.quantization import quantize_dynamic, per_channel_dynamic_qconfig
except ImportError:  # older torch
    from torch.quantization import quantize_dynamic, per_channel_dynamic_qconfig


# ---------------------------------------------------------------- the model file

def read_model(path):
    """(config dict, metadata dict, {name: float32 ndarray}) of a deepmoe file."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    raw = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        buf = data[base + b:base + e]
        dt = info["dtype"]
        shape = info["shape"]
        if dt == "F32":
            a = np.frombuffer(buf, "<f4")
        elif dt == "F64":
            a = np.frombuffer(buf, "<f8").astype(np.float32)
        elif dt == "F16":
            a = np.frombuffer(buf, "<f2").astype(np.float32)
        elif dt == "BF16":
            a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "I8":
            a = np.frombuffer(buf, "i1")
        elif dt == "U8":
            a = np.frombuffer(buf, "u1")
        else:
            sys.exit(f"{path}: tensor {name}: dtype {dt} not supported here")
        raw[name] = a.reshape(shape)
    tensors = dequantize(raw)
    cfg = json.loads(meta["deepmoe.config"]) if "deepmoe.config" in meta else infer_config(tensors)
    # keys that files from before the classifier (or the seed's) leave out take deepmoe's defaults
    for k, v in (("router", "seed"), ("norm_topk", False), ("route_scale", 1.0), ("n_groups", 1),
                 ("topk_groups", 1), ("selection_bias", False), ("expert", "seed"), ("n_shared", 0),
                 ("shared_hidden", cfg["hidden"]), ("ln_eps", 1e-5), ("n_layers", 1), ("in_dim", 0),
                 ("n_classes", 0)):
        cfg.setdefault(k, v)
    return cfg, meta, tensors


def dequantize(raw):
    """deepmoe's compressed layouts (src/kernels/wtype.h) back to fp32 [N, K]."""
    out = {}
    for name, a in raw.items():
        if name.endswith(".scale") and name[:-6] in raw or name.endswith(".idx") and name[:-4] in raw:
            continue
        idx, scale = raw.get(name + ".idx"), raw.get(name + ".scale")
        v = a.astype(np.float32)
        if scale is not None:  # q8: per row and group along the values' columns
            cols, ng = v.shape[1], scale.shape[1]
            G = cols  # one scale per row (and nm24:q8's one over a row's kept values)
            if ng > 1:  # the group: 32, 64, 128, ... (for ng > 1 only one has ceil(cols / G) == ng)
                G = next((g for g in (32, 64, 128, 256, 512, 1024) if -(-cols // g) == ng), None)
                if G is None:
                    sys.exit(f"{name}: {ng} scales per row of {cols} values: no group size fits")
            v = v * np.repeat(scale.astype(np.float32), G, axis=1)[:, :cols]
        if idx is not None:  # nm24: 2 kept values per group of 4 along K
            N, half = v.shape
            K = 2 * half
            w = np.zeros((N, K), np.float32)
            for g in range(K // 4):
                nib = (idx[:, g // 2] >> (4 * (g & 1))) & 15
                rows = np.arange(N)
                w[rows, 4 * g + (nib & 3)] = v[:, 2 * g]
                w[rows, 4 * g + (nib >> 2)] = v[:, 2 * g + 1]
            v = w
        out[name] = v
    return out


def infer_config(t):
    """A seed state dict without metadata: D, E, H from the shapes (deepmoe's loader does the same)."""
    E, D = t["gating.gate.weight"].shape
    H = t["experts.0.net.0.weight"].shape[0]
    return {"dim": D, "n_experts": E, "top_k": args.top_k, "hidden": H, "router": "seed",
            "norm_topk": False, "route_scale": 1.0, "n_groups": 1, "topk_groups": 1,
            "selection_bias": "gating.expert_bias" in t, "expert": "seed", "n_shared": 0,
            "shared_hidden": H, "ln_eps": 1e-5, "n_layers": 1, "in_dim": 0, "n_classes": 0}


# ---------------------------------------------------------------- torch modules

def linear(t, name, bias=True):
    w = torch.from_numpy(t[name + ".weight"].copy())
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias:
            lin.bias.copy_(torch.from_numpy(t[name + ".bias"].copy()))
    return lin


class SeedExpert(nn.Module):
    """Linear, ReLU, LayerNorm, Linear, plus x."""

    def __init__(self, t, pre, eps):
        super().__init__()
        ln = nn.LayerNorm(t[pre + "net.2.weight"].shape[0], eps=eps)
        with torch.no_grad():
            ln.weight.copy_(torch.from_numpy(t[pre + "net.2.weight"].copy()))
            ln.bias.copy_(torch.from_numpy(t[pre + "net.2.bias"].copy()))
        self.net = nn.Sequential(linear(t, pre + "net.0"), nn.ReLU(), ln, linear(t, pre + "net.3"))

    def forward(self, x):
        return self.net(x) + x


class SwiGLUExpert(nn.Module):
    """w2(silu(w1 x) * w3 x), no biases, no residual."""

    def __init__(self, t, pre):
        super().__init__()
        self.w1 = linear(t, pre + "w1", bias=False)
        self.w2 = linear(t, pre + "w2", bias=False)
        self.w3 = linear(t, pre + "w3", bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoELayer(nn.Module):
    """deepmoe's router (src/nn/router.c) and sparse dispatch."""

    def __init__(self, t, pre, c):
        super().__init__()
        self.c = c
        self.gate = linear(t, pre + "gating.gate")
        sb = t.get(pre + "gating.expert_bias")
        self.register_buffer("sel_bias", torch.from_numpy(sb.copy()) if sb is not None else None)
        mk = (lambda p: SeedExpert(t, p, c["ln_eps"])) if c["expert"] == "seed" else (lambda p: SwiGLUExpert(t, p))
        self.experts = nn.ModuleList(mk(f"{pre}experts.{e}.") for e in range(c["n_experts"]))
        self.shared = nn.ModuleList(mk(f"{pre}shared_experts.{s}.") for s in range(c["n_shared"]))

    def route(self, x):
        c = self.c
        E, k = c["n_experts"], c["top_k"]
        logits = self.gate(x)
        if c["router"] == "softmax":
            scores = F.softmax(logits, dim=-1)
        elif c["router"] == "sigmoid":
            scores = torch.sigmoid(logits)
        else:
            scores = logits
        sel = scores + self.sel_bias if self.sel_bias is not None else scores
        G, M = c["n_groups"], c["topk_groups"]
        if G > 1:
            per = E // G
            grouped = sel.view(-1, G, per)
            gscore = grouped.topk(min(2, per), dim=-1).values.sum(-1)
            keep = gscore.topk(M, dim=-1).indices
            drop = torch.ones_like(gscore, dtype=torch.bool)
            drop.scatter_(1, keep, False)
            sel = grouped.masked_fill(drop.unsqueeze(-1), float("-inf")).view(-1, E)
        idx = sel.topk(k, dim=-1).indices  # descending; float ties (deepmoe: the lower index) aside
        if c["router"] == "seed":
            w = F.softmax(logits.gather(1, idx), dim=-1)
        else:
            w = scores.gather(1, idx)
            if c["router"] == "sigmoid" or c["norm_topk"]:
                w = w / w.sum(dim=-1, keepdim=True)
        return idx, w * c["route_scale"]

    def forward(self, x):
        idx, w = self.route(x)
        self.last_idx = idx  # for --compare / accuracy: rows routed differently from fp32
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel():
                y.index_add_(0, rows, expert(x[rows]) * w[rows, slot].unsqueeze(1))
        for expert in self.shared:
            y = y + expert(x)
        return y


class Model(nn.Module):
    def __init__(self, c, t):
        super().__init__()
        self.c = c
        sc, sh = t.get("preprocess.scale"), t.get("preprocess.shift")
        self.register_buffer("pre_scale", torch.from_numpy(sc.reshape(-1).copy()) if sc is not None else None)
        self.register_buffer("pre_shift", torch.from_numpy(sh.reshape(-1).copy()) if sh is not None else None)
        self.embed = linear(t, "embed") if c.get("in_dim") else None
        bare = c.get("n_layers", 1) == 1 and not c.get("in_dim") and not c.get("n_classes")
        self.layers = nn.ModuleList(MoELayer(t, "" if bare else f"layers.{l}.", c)
                                    for l in range(c.get("n_layers", 1)))
        if c.get("n_classes"):
            self.norm = nn.LayerNorm(c["dim"], eps=c["ln_eps"])
            with torch.no_grad():
                self.norm.weight.copy_(torch.from_numpy(t["norm.weight"].copy()))
                self.norm.bias.copy_(torch.from_numpy(t["norm.bias"].copy()))
            self.head = linear(t, "head")
        else:
            self.norm = self.head = None

    def in_width(self):
        return self.c["in_dim"] or self.c["dim"]

    def forward(self, x):
        if self.pre_scale is not None:
            x = x * self.pre_scale      # two roundings, as deepmoe: the product, then the sum
            x = x + self.pre_shift
        if self.embed is not None:
            x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        if self.head is not None:
            x = self.head(self.norm(x))
        return x


# ---------------------------------------------------------------- data

def load_array(path):
    if path.endswith(".npy"):
        return np.load(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:  # IDX: magic (0, 0, dtype 0x08, ndim), dims, bytes
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    a = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return a.reshape(dims[0], -1) if ndim > 2 else a


# ---------------------------------------------------------------- timing

def batch1_latency(f, rows, calls):
    for i in range(50):
        f(rows[i % len(rows)])
    ts = np.empty(calls)
    for i in range(calls):
        x = rows[i % len(rows)]
        t0 = time.perf_counter()
        f(x)
        ts[i] = time.perf_counter() - t0
    return float(np.percentile(ts, 50) * 1e6), float(np.percentile(ts, 99) * 1e6)


def rows_per_s(f, x, reps):
    for _ in range(3):
        f(x)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(x)
        ts.append(time.perf_counter() - t0)
    return x.shape[0] / float(np.median(ts))


def blas_loaded():
    """The BLAS libraries this process mapped (torch's matrix products go through libblas.so.3)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {l.split()[-1] for l in f if "blas" in l.lower() and "/" in l}
        return ", ".join(sorted("/".join(p.split("/")[-2:]) for p in libs)) or "none"
    except OSError:
        return "unknown"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", help="test inputs: .npy [N, in] or an IDX file (.gz)")
    ap.add_argument("--labels", help="test labels: .npy [N] or an IDX file (.gz)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N test rows (0: all)")
    ap.add_argument("--compare", nargs=2, metavar=("X.npy", "Y.npy"), help="deepmoe infer's input and output")
    ap.add_argument("--top-k", type=int, default=2, help="k for a file without deepmoe metadata (2)")
    ap.add_argument("--calls", type=int, default=2000, help="batch-1 forwards timed (2000)")
    ap.add_argument("--reps", type=int, default=20,
                    help="timed forwards at batch 1024 (20); batch 64 runs 5x as many")
    ap.add_argument("--engine", help="torch.backends.quantized.engine (default: torch's)")
    ap.add_argument("--variants", default="fp32,int8,int8pc",
                    help="comma list of fp32, int8, int8pc, int8_qnnpack (fp32,int8,int8pc)")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


class quiet_stderr:
    """fd 2 to /dev/null: qnnpack warns on every call that it ignores reduce_range."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


def build_variants(fp32, names, notes):
    default_engine = torch.backends.quantized.engine
    out = {}
    for v in names:
        if v == "fp32":
            out[v] = fp32
            continue
        if v not in ("int8", "int8pc", "int8_qnnpack"):
            sys.exit(f"unknown variant {v} (fp32, int8, int8pc, int8_qnnpack)")
        spec = {nn.Linear: per_channel_dynamic_qconfig} if v == "int8pc" else {nn.Linear}
        try:
            if v == "int8_qnnpack":
                torch.backends.quantized.engine = "qnnpack"
            q = quantize_dynamic(fp32, spec, dtype=torch.qint8)
            with torch.no_grad(), quiet_stderr():
                q(torch.zeros(2, fp32.in_width()))
            out[v] = q
        except Exception as e:  # noqa: BLE001  (an engine may lack per-channel, or qnnpack)
            notes.append(f"{v} skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        finally:
            torch.backends.quantized.engine = default_engine
    return out


def routes(model):
    """Every layer's last routing, as each row's sorted expert set [n, L * k]."""
    return torch.cat([l.last_idx.sort(dim=1).values for l in model.layers], dim=1)


def forward_chunks(m, X, quiet):
    """Output and routing of X in batches of 1024."""
    ys, rs = [], []
    with quiet_stderr() if quiet else _nullctx():
        for i in range(0, len(X), 1024):
            ys.append(m(X[i:i + 1024]))
            rs.append(routes(m))
    return torch.cat(ys), torch.cat(rs)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None):
    global args
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    if args.engine:
        torch.backends.quantized.engine = args.engine
    cfg, meta, tensors = read_model(args.model)
    fp32 = Model(cfg, tensors).eval()
    n_lin = sum(isinstance(m, nn.Linear) for m in fp32.modules())
    notes = []
    variants = build_variants(fp32, [v for v in args.variants.split(",") if v], notes)
    quiet = {v: v == "int8_qnnpack" for v in variants}

    res = {v: {} for v in variants}
    with torch.no_grad():
        if args.compare:
            X = torch.from_numpy(load_array(args.compare[0]).astype(np.float32))
            Y = torch.from_numpy(load_array(args.compare[1]).astype(np.float32))
            _, r32 = forward_chunks(fp32, X, False)
            for v, m in variants.items():
                out, r = forward_chunks(m, X, quiet[v])
                d = (out - Y).abs()
                res[v]["max_abs_diff_vs_deepmoe"] = float(d.max())
                res[v]["max_rel_diff_vs_deepmoe"] = float(d.max() / Y.abs().max())
                if v != "fp32":  # routing flips move a row's output by a whole expert
                    same = (r == r32).all(dim=1)
                    res[v]["compare_rows_routed_unlike_fp32"] = int((~same).sum())
                    if same.any():
                        res[v]["max_abs_diff_vs_deepmoe_same_routing"] = float(d[same].max())
        Xt = labels = None
        if args.data:
            Xt = torch.from_numpy(load_array(args.data).astype(np.float32))
            Xt = Xt.reshape(len(Xt), -1)
            if args.limit:
                Xt = Xt[:args.limit]
        if args.labels:
            labels = torch.from_numpy(load_array(args.labels).astype(np.int64).reshape(-1))
            labels = labels[:len(Xt)] if Xt is not None else labels
        if Xt is not None and labels is not None:
            preds, rts = {}, {}
            for v, m in variants.items():
                out, rts[v] = forward_chunks(m, Xt, quiet[v])
                preds[v] = out.argmax(1)
                res[v]["accuracy"] = float((preds[v] == labels).double().mean())
            for v in preds:
                if v != "fp32" and "fp32" in preds:
                    res[v]["predictions_like_fp32"] = float((preds[v] == preds["fp32"]).double().mean())
                    res[v]["routing_like_fp32"] = float((rts[v] == rts["fp32"]).all(dim=1).double().mean())
        gen = torch.Generator().manual_seed(0)
        D = fp32.in_width()
        pool = Xt[:1024] if Xt is not None and len(Xt) >= 1024 else torch.rand(1024, D, generator=gen) * 2 - 1
        singles = [pool[i:i + 1].contiguous() for i in range(256)]
        for v, m in variants.items():
            with quiet_stderr() if quiet[v] else _nullctx():
                p50, p99 = batch1_latency(m, singles, args.calls)
                r64 = rows_per_s(m, pool[:64].contiguous(), args.reps * 5)
                r1024 = rows_per_s(m, pool, args.reps)
            res[v]["batch1_us_p50"] = p50
            res[v]["batch1_us_p99"] = p99
            res[v]["batch1_rows_per_s"] = 1e6 / p50
            res[v]["batch64_rows_per_s"] = r64
            res[v]["batch1024_rows_per_s"] = r1024

    c = cfg
    info = {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "quantized_engine": torch.backends.quantized.engine, "blas": blas_loaded(),
        "model": args.model, "n_linear": n_lin,
        "config": {k: c.get(k) for k in ("in_dim", "dim", "n_layers", "n_experts", "top_k", "hidden",
                                         "router", "expert", "n_shared", "n_classes")},
        "wtype": meta.get("deepmoe.wtype", "f32"),
        "test_rows": None if Xt is None else int(len(Xt)),
        "notes": notes, "loadavg_after": os.getloadavg()[0], "loadavg_before": load_before,
    }
    if args.json:
        print(json.dumps({**info, "variants": res}))
        return
    print(f"# torch {info['torch']}, {info['threads']} threads, quantized engine {info['quantized_engine']}, "
          f"BLAS {info['blas']}")
    print(f"# load average {load_before:.2f} before, {info['loadavg_after']:.2f} after (a busy machine makes "
          f"2-thread OpenMP timings erratic)")
    print(f"# model {args.model} ({info['wtype']}): {json.dumps(info['config'])}; "
          f"{n_lin} nn.Linear, every one quantized in the int8 variants")
    if Xt is None:
        print("# timing rows: uniform [-1, 1); no accuracy (no --data/--labels)")
    for n in notes:
        print(f"# {n}")
    for v, r in res.items():
        for k, val in r.items():
            print(f"{v} {k} {val:.6g}")


if __name__ == "__main__":
    main()
