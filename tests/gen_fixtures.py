#!/usr/bin/python3
"""gen_fixtures.py - PyTorch reference fixtures for deepmoe's parity tests.

Usage:  /usr/bin/python3 tests/gen_fixtures.py tests/fixtures
        (Debian's python3-torch; `make fixtures` runs exactly this.)

The PyTorch modules below are an independent rendering of the layer deepmoe
implements; their state_dict() gives the tensor names deepmoe loads:

  gating.gate.weight [E,D], gating.gate.bias [E], gating.expert_bias [E]
  experts.{e}.net.0.weight [H,D]  .net.0.bias [H]        (seed expert:
  experts.{e}.net.2.weight [H]    .net.2.bias [H]         Linear, ReLU,
  experts.{e}.net.3.weight [D,H]  .net.3.bias [D]         LayerNorm, Linear, +x)
  experts.{e}.w1.weight [H,D] .w2.weight [D,H] .w3.weight [H,D]   (SwiGLU expert)
  shared_experts.{s}.<same as experts, hidden Hs>

For each case NAME the script writes
  NAME.safetensors    the model; "__metadata__" holds "format": "pt" and, for
                      every case but the plain seed ones, "deepmoe.config"
                      (a JSON object with all config keys)
  NAME.x.npy          [33, D] float32 inputs, uniform in [-1, 1]
  NAME.y.npy          [33, D] float32 output of the layer
  NAME.experts.npy    [33, k] chosen expert indices (as float32), selection order
  NAME.weights.npy    [33, k] final routing weights, in the same order
The reference is computed in float64 (module cast to double, the float32 x
cast to double) and stored as float32.

Cases
  seed          the seed model: seed router (top-k logits, softmax over the k
                kept logits), seed experts. No deepmoe metadata: the loader
                infers D, E, H from the shapes (H=6 is not D/2 on purpose)
                and uses k=2.
  seed_f16      the seed model's weights stored as F16; the reference uses the
                f16-rounded weights.
  seed_bf16     the same with BF16.
  seed_k3       seed router/experts with metadata, k=3.
  softmax       softmax over all E, top-k, weights not renormalised (V2-Lite).
  softmax_norm  the same, renormalised to sum 1, then route_scale 1.5.
  sigmoid       sigmoid scores, top-k, renormalised, route_scale 2.5.
  bias          seed router plus a per-expert selection bias: it changes which
                experts are chosen (asserted on at least one row) but not the
                weights (softmax over the unbiased logits of the chosen ones).
  grouped       sigmoid, E=8 in G=4 groups, keep M=2 groups by the sum of each
                group's top-2 (biased) scores, k=3, selection bias.
  shared        seed experts plus S=2 shared seed experts of hidden Hs=10 != H.
  swiglu        softmax router renormalised, SwiGLU experts (no biases, no
                residual).
  v3            DeepSeek-V3 gate (DeepSeekV3Gate, a separate rendering):
                sigmoid, selection bias, E=8, G=4, M=2, k=2, route_scale 2.5,
                SwiGLU experts, one shared expert of hidden 2H.
  e1            E=1, k=1: the layer is a dense FFN; checked here against a
                plain nn.Sequential FFN (+ residual).
  k_eq_e        k = E = 4: every expert is used, in selection order.

Widths vary between cases (D 16..20, H 6..10) so SIMD kernels meet tails;
they are kept small so that all fixtures stay under 200 KB.
Weights: PyTorch's default init; router weight and bias x3 so routing is
decisive; LayerNorm gamma ~ U(0.5, 1.5), beta ~ U(-0.5, 0.5) so both are
exercised. Rows of x are redrawn until float32 cannot flip a decision: every
adjacent pair of the sorted selection scores up to the (k+1)-th differs by
more than 1e-3 (so the chosen set and its order are stable), the M-th and
(M+1)-th group scores too, and every seed expert's hidden LayerNorm variance
is above 1e-3 (no ill-conditioned normalisation). Deterministic: every case
reseeds torch.
"""
import copy
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

N_ROWS = 33
GAP = 1e-3          # minimum margin of every routing decision
LN_VAR_MIN = 1e-3   # minimum variance of a seed expert's hidden activations
LN_EPS = 1e-5


# ---------------------------------------------------------------- experts

class ExpertLayer(nn.Module):
    """The seed's expert: Linear -> ReLU -> LayerNorm -> Linear, plus x."""

    def __init__(self, dim, hidden, eps=LN_EPS):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(),
                                 nn.LayerNorm(hidden, eps=eps), nn.Linear(hidden, dim))

    def forward(self, x):
        return self.net(x) + x

    def hidden_var(self, x):
        """Biased variance of the LayerNorm input, per row."""
        h = self.net[1](self.net[0](x))
        return h.var(dim=-1, unbiased=False)


class SwiGLUExpert(nn.Module):
    """DeepSeek's expert: w2(silu(w1 x) * w3 x), no biases, no residual."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def make_expert(cfg, hidden):
    if cfg["expert"] == "seed":
        return ExpertLayer(cfg["dim"], hidden, cfg["ln_eps"])
    return SwiGLUExpert(cfg["dim"], hidden)


# ---------------------------------------------------------------- routers
# Every router returns (idx [N,k] long, weights [N,k]) in selection order.

def ordered_topk(values, k):
    """The k largest per row, descending; ties to the lower index (stable sort)."""
    _, order = torch.sort(values, dim=-1, descending=True, stable=True)
    idx = order[:, :k]
    return values.gather(1, idx), idx


class MoEGating(nn.Module):
    """The seed's router: keep the k largest logits, softmax over those k."""

    def __init__(self, dim, n_experts, top_k):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(dim, n_experts)

    def forward(self, x):
        logits = self.gate(x)
        vals, idx = ordered_topk(logits, self.top_k)
        return idx, F.softmax(vals, dim=-1)


class Router(nn.Module):
    """Every deepmoe router option, written as the brief's formulas.

    decisions() also returns the margins the fixture needs to be robust."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(cfg["dim"], cfg["n_experts"])
        if cfg["selection_bias"]:
            self.expert_bias = nn.Parameter(torch.zeros(cfg["n_experts"]))

    def decisions(self, x, use_bias=True):
        c = self.cfg
        E, k, G, M = c["n_experts"], c["top_k"], c["n_groups"], c["topk_groups"]
        logits = self.gate(x)
        if c["router"] == "seed":
            scores = logits
        elif c["router"] == "softmax":
            scores = F.softmax(logits, dim=-1)
        else:
            scores = torch.sigmoid(logits)
        sel = scores + self.expert_bias if (c["selection_bias"] and use_bias) else scores
        margin = torch.full((x.shape[0],), float("inf"), dtype=x.dtype)
        if G > 1:
            per = E // G
            grouped = sel.view(-1, G, per)
            gscore = grouped.topk(min(2, per), dim=-1).values.sum(dim=-1)   # [N,G]
            gsorted, gorder = ordered_topk(gscore, G)
            if M < G:
                margin = torch.minimum(margin, gsorted[:, M - 1] - gsorted[:, M])
            drop = torch.ones_like(gscore, dtype=torch.bool)
            drop.scatter_(1, gorder[:, :M], False)
            sel = grouped.masked_fill(drop.unsqueeze(-1), float("-inf")).view(-1, E)
        ssorted, _ = ordered_topk(sel, E)
        for j in range(min(k, E - 1)):
            margin = torch.minimum(margin, ssorted[:, j] - ssorted[:, j + 1])
        assert torch.isfinite(ssorted[:, :k]).all(), "fewer than k experts in the kept groups"
        _, idx = ordered_topk(sel, k)
        if c["router"] == "seed":
            w = F.softmax(logits.gather(1, idx), dim=-1)
        elif c["router"] == "softmax":
            w = scores.gather(1, idx)
            if c["norm_topk"]:
                w = w / w.sum(dim=-1, keepdim=True)
        else:
            w = scores.gather(1, idx)
            w = w / w.sum(dim=-1, keepdim=True)
        return idx, w * c["route_scale"], margin

    def forward(self, x):
        idx, w, _ = self.decisions(x)
        return idx, w


class DeepSeekV3Gate(nn.Module):
    """DeepSeek-V3's gate as its reference code structures it: sigmoid scores,
    a selection-only bias, group-limited routing scored by the sum of each
    group's top-2 biased scores, weights from the unbiased scores, renormalised,
    times route_scale. (Unlike V3, the linear has a bias: deepmoe's router
    always has one.)"""

    def __init__(self, dim, n_experts, top_k, n_groups, topk_groups, route_scale):
        super().__init__()
        self.top_k, self.n_groups, self.topk_groups = top_k, n_groups, topk_groups
        self.route_scale = route_scale
        self.gate = nn.Linear(dim, n_experts)
        self.expert_bias = nn.Parameter(torch.zeros(n_experts))

    def forward(self, x):
        scores = torch.sigmoid(self.gate(x))
        original_scores = scores
        scores = scores + self.expert_bias
        if self.n_groups > 1:
            scores = scores.view(x.size(0), self.n_groups, -1)
            group_scores = scores.topk(min(2, scores.size(-1)), dim=-1)[0].sum(dim=-1)
            keep = group_scores.topk(self.topk_groups, dim=-1)[1]
            mask = torch.ones_like(group_scores, dtype=torch.bool).scatter_(1, keep, False)
            scores = scores.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(1)
        idx = torch.topk(scores, self.top_k, dim=-1)[1]
        weights = original_scores.gather(1, idx)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return idx, weights * self.route_scale


# ---------------------------------------------------------------- the layer

class DeepSeekMoE(nn.Module):
    def __init__(self, cfg, gating):
        super().__init__()
        self.gating = gating
        self.experts = nn.ModuleList(make_expert(cfg, cfg["hidden"])
                                     for _ in range(cfg["n_experts"]))
        self.shared_experts = nn.ModuleList(make_expert(cfg, cfg["shared_hidden"])
                                            for _ in range(cfg["n_shared"]))

    def forward(self, x):
        """Sparse dispatch: each expert runs on the rows that chose it."""
        idx, w = self.gating(x)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.where(idx == e)
            if rows.numel():
                y.index_add_(0, rows, expert(x[rows]) * w[rows, slot].unsqueeze(-1))
        for expert in self.shared_experts:
            y = y + expert(x)
        return y, idx, w

    def forward_dense(self, x):
        """The seed's formula: every expert on every row, mostly times zero."""
        idx, w = self.gating(x)
        dense_w = torch.zeros(x.shape[0], len(self.experts), dtype=x.dtype).scatter(1, idx, w)
        y = sum(dense_w[:, e:e + 1] * expert(x) for e, expert in enumerate(self.experts))
        for expert in self.shared_experts:
            y = y + expert(x)
        return y


# ---------------------------------------------------------------- file writers

ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:     # numpy has no bfloat16: write the bit pattern
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, torch tensor); metadata: dict of strings."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, t in tensors:
        b = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Reader used only to check the writer round-trips."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    assert (8 + n) % 8 == 0
    meta = header.pop("__metadata__")
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = data[8 + n + b:8 + n + e]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype={"F32": "<f4", "F16": "<f2"}[info["dtype"]])
        out[name] = arr.astype(np.float64).reshape(info["shape"])
    return meta, out


# ---------------------------------------------------------------- cases

CONFIG_KEYS = ["dim", "n_experts", "top_k", "hidden", "router", "norm_topk", "route_scale",
               "n_groups", "topk_groups", "selection_bias", "expert", "n_shared",
               "shared_hidden", "ln_eps"]


def config(dim, n_experts, top_k, hidden, router="seed", norm_topk=False, route_scale=1.0,
           n_groups=1, topk_groups=1, selection_bias=False, expert="seed", n_shared=0,
           shared_hidden=None):
    return {"dim": dim, "n_experts": n_experts, "top_k": top_k, "hidden": hidden,
            "router": router, "norm_topk": norm_topk, "route_scale": float(route_scale),
            "n_groups": n_groups, "topk_groups": topk_groups, "selection_bias": selection_bias,
            "expert": expert, "n_shared": n_shared,
            "shared_hidden": hidden if shared_hidden is None else shared_hidden,
            "ln_eps": LN_EPS}


# name, config, storage dtype, write deepmoe metadata, gate kind, torch seed, selection-bias scale
SEED_CFG = config(16, 4, 2, 6)
CASES = [
    ("seed", SEED_CFG, torch.float32, False, "seed", 1, 0),
    ("seed_f16", SEED_CFG, torch.float16, False, "seed", 1, 0),
    ("seed_bf16", SEED_CFG, torch.bfloat16, False, "seed", 1, 0),
    ("seed_k3", config(16, 4, 3, 8), torch.float32, True, "router", 4, 0),
    ("softmax", config(20, 4, 2, 8, router="softmax"), torch.float32, True, "router", 5, 0),
    ("softmax_norm", config(16, 4, 2, 8, router="softmax", norm_topk=True, route_scale=1.5),
     torch.float32, True, "router", 6, 0),
    ("sigmoid", config(18, 4, 2, 7, router="sigmoid", route_scale=2.5),
     torch.float32, True, "router", 7, 0),
    ("bias", config(16, 4, 2, 8, selection_bias=True), torch.float32, True, "router", 8, 0.5),
    ("grouped", config(16, 8, 3, 6, router="sigmoid", n_groups=4, topk_groups=2,
                       selection_bias=True), torch.float32, True, "router", 9, 0.1),
    ("shared", config(16, 4, 2, 6, n_shared=2, shared_hidden=10),
     torch.float32, True, "router", 10, 0),
    ("swiglu", config(17, 4, 2, 7, router="softmax", norm_topk=True, expert="swiglu"),
     torch.float32, True, "router", 11, 0),
    ("v3", config(16, 8, 2, 6, router="sigmoid", route_scale=2.5, n_groups=4, topk_groups=2,
                  selection_bias=True, expert="swiglu", n_shared=1, shared_hidden=12),
     torch.float32, True, "v3", 12, 0.1),
    ("e1", config(16, 1, 1, 8), torch.float32, True, "router", 13, 0),
    ("k_eq_e", config(16, 4, 4, 6), torch.float32, True, "router", 14, 0),
]


def build_model(cfg, gate_kind, bias_scale):
    c = cfg
    if gate_kind == "seed":
        gating = MoEGating(c["dim"], c["n_experts"], c["top_k"])
    elif gate_kind == "v3":
        gating = DeepSeekV3Gate(c["dim"], c["n_experts"], c["top_k"], c["n_groups"],
                                c["topk_groups"], c["route_scale"])
    else:
        gating = Router(c)
    model = DeepSeekMoE(c, gating)
    with torch.no_grad():
        model.gating.gate.weight.mul_(3.0)
        model.gating.gate.bias.mul_(3.0)
        if hasattr(model.gating, "expert_bias"):
            model.gating.expert_bias.copy_(torch.randn(c["n_experts"]) * bias_scale)
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return model


def reference_router(model, cfg):
    """A Router (every option) holding model's gate parameters, for margins and cross-checks."""
    r = Router(cfg).double()
    r.load_state_dict({k[len("gating."):]: v for k, v in model.state_dict().items()
                       if k.startswith("gating.")})
    return r


def row_ok(model, router, cfg, x):
    """Per row: every routing margin > GAP and every seed expert well conditioned."""
    _, _, margin = router.decisions(x)
    ok = margin > GAP
    if cfg["expert"] == "seed":
        for expert in list(model.experts) + list(model.shared_experts):
            ok &= expert.hidden_var(x) > LN_VAR_MIN
    return ok


def draw_inputs(model, router, cfg):
    x = torch.rand(N_ROWS, cfg["dim"]) * 2 - 1
    for _ in range(1000):
        bad = ~row_ok(model, router, cfg, x.double())
        if not bad.any():
            return x
        x[bad] = torch.rand(int(bad.sum()), cfg["dim"]) * 2 - 1
    raise RuntimeError("could not draw well-separated rows")


def save_npy(path, a):
    np.save(path, np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


def make_case(outdir, name, cfg, dtype, with_meta, gate_kind, seed, bias_scale):
    torch.manual_seed(seed)
    model = build_model(cfg, gate_kind, bias_scale)
    with torch.no_grad():
        # Store in `dtype`; the reference sees exactly the stored values.
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
    m64 = copy.deepcopy(model).double()
    router = reference_router(m64, cfg)
    x = draw_inputs(m64, router, cfg)
    x64 = x.double()

    with torch.no_grad():
        y, idx, w = m64(x64)
        # Cross-checks: sparse dispatch == the seed's dense formula; the case's
        # own gate == the every-option Router.
        assert torch.allclose(y, m64.forward_dense(x64), rtol=0, atol=1e-12), name
        ridx, rw, _ = router.decisions(x64)
        assert torch.equal(idx, ridx), name
        assert torch.allclose(w, rw, rtol=0, atol=1e-14), name
        assert torch.allclose(w.sum(-1), torch.full_like(w[:, 0], cfg["route_scale"]),
                              atol=1e-12) or cfg["router"] == "softmax" and not cfg["norm_topk"]
        if name == "bias":
            nidx, _, _ = router.decisions(x64, use_bias=False)
            changed = (torch.sort(nidx, 1)[0] != torch.sort(idx, 1)[0]).any(dim=1)
            assert changed.any(), "the selection bias changed no row's selection"
            print(f"  bias: the selection bias changes {int(changed.sum())}/{N_ROWS} rows")
        if cfg["n_groups"] > 1:
            # no row uses an expert outside its kept groups, and groups matter
            groups = idx // (cfg["n_experts"] // cfg["n_groups"])
            assert all(len(set(r.tolist())) <= cfg["topk_groups"] for r in groups), name
            flat = reference_router(m64, dict(cfg, n_groups=1, topk_groups=1))
            fidx, _, _ = flat.decisions(x64)
            changed = (fidx != idx).any(dim=1)
            assert changed.any(), "group-limited routing changed no row's selection"
            print(f"  {name}: group limiting changes {int(changed.sum())}/{N_ROWS} rows")
        if name == "e1":
            ex = m64.experts[0]
            ffn = nn.Sequential(nn.Linear(cfg["dim"], cfg["hidden"]), nn.ReLU(),
                                nn.LayerNorm(cfg["hidden"], eps=cfg["ln_eps"]),
                                nn.Linear(cfg["hidden"], cfg["dim"])).double()
            ffn.load_state_dict(ex.net.state_dict())
            assert torch.allclose(ffn(x64) + x64, y, rtol=0, atol=1e-12), "e1 != dense FFN"
            assert torch.equal(w, torch.ones_like(w)), "e1 weights != 1"

    state = model.state_dict()
    tensors = [(k, v.to(dtype)) for k, v in state.items()]
    meta = {"format": "pt"}
    if with_meta:
        meta["deepmoe.config"] = json.dumps({k: cfg[k] for k in CONFIG_KEYS})
    path = os.path.join(outdir, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    rmeta, rt = read_safetensors(path)
    assert rmeta == meta and list(rt) == list(state)
    for k, v in state.items():
        assert np.array_equal(rt[k], v.double().numpy()), (name, k)

    save_npy(os.path.join(outdir, name + ".x.npy"), x.numpy())
    save_npy(os.path.join(outdir, name + ".y.npy"), y.numpy())
    save_npy(os.path.join(outdir, name + ".experts.npy"), idx.numpy())
    save_npy(os.path.join(outdir, name + ".weights.npy"), w.numpy())
    print(f"  {name}: D={cfg['dim']} E={cfg['n_experts']} k={cfg['top_k']} H={cfg['hidden']} "
          f"router={cfg['router']} expert={cfg['expert']} S={cfg['n_shared']} "
          f"{ST_DTYPES[dtype]} metadata={'yes' if with_meta else 'no'}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: /usr/bin/python3 tests/gen_fixtures.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    for case in CASES:
        make_case(outdir, *case)
    total = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
    print(f"wrote {len(CASES)} cases to {outdir} ({total} bytes)")


if __name__ == "__main__":
    main()
