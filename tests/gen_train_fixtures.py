#!/usr/bin/python3
"""gen_train_fixtures.py - PyTorch reference trajectories for deepmoe's trainer.

Usage:  /usr/bin/python3 tests/gen_train_fixtures.py tests/fixtures
        (Debian's python3-torch; deterministic: the same files every run.)

The model is the seed layer of tests/gen_fixtures.py (its ExpertLayer, tensor
names, safetensors writer and "deepmoe.config" metadata are imported from
there): seed router (keep the k largest logits, plus the selection bias when
the config has one; weights = softmax over the k kept logits without the
bias), seed experts, sparse dispatch. D=16, E=4, k=2, H=8.

Every case trains it for 10 optimizer steps on one fixed batch of N=32 rows
(x uniform in [-1, 1]; target y = tanh(x A), A ~ N(0, 1/D), rounded to
float32), the full batch each step. Loss = F.mse_loss (mean over N*D)
plus the enabled balance terms, computed over each micro-batch's rows:
  seed      0.01 * mean_e(E * P_e * (1 - P_e)), P_e = mean over rows of the
            routing-weight matrix (0 for unchosen experts; the gradient flows
            through the chosen weights)
  switch    0.01 * E * sum_e f_e * P_e, f_e = assignments to e / (rows*k)
            (detached), P_e = mean over rows of softmax(logits) over all E
  z         0.001 * mean_rows(logsumexp(logits)^2)
  aux_free  the selection bias gating.expert_bias (0 at start, a buffer: no
            gradient, not in the optimizer, no weight decay) is updated after
            each optimizer step under no_grad:
            b_e += 0.001 * sign(mean_e(load) - load_e), load_e = assignments to
            e over the step's rows / (rows*k)
Optimizer: torch.optim.AdamW(lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
weight_decay=0.01) over every parameter except gating.expert_bias; the
learning rate is set per step t = 0, 1, ...: lr*(t+1)/warmup for t < warmup,
then constant, or cosine lr*0.5*(1+cos(pi*(t-warmup)/(total_steps-warmup))).
Clipping (clip > 0): torch.nn.utils.clip_grad_norm_(params, clip) after
accumulation, before the step (PyTorch scales by clip/(norm+1e-6) when that is
below 1). Gradient accumulation G: the batch is split into G consecutive
micro-batches of N/G rows; each micro-batch's (MSE + balance) is backpropagated
scaled by 1/G, so the gradient is the mean of the micro-batch mean-losses'
gradients.

Cases (all constant LR, no warm-up, no clipping, grad_accum 1 unless noted)
  none      no balance term
  seed      the seed's balance loss
  switch    the Switch-Transformer loss
  aux_free  aux-loss-free bias updates (config selection_bias true)
  z         the router z-loss
  all       switch + z + aux_free, clip 0.5, cosine schedule with warmup 3
            over total_steps 10 (selection_bias true)
  accum     none, grad_accum 2 (rows 0-15, then rows 16-31); with MSE alone
            this equals the full batch up to rounding, so it checks the 1/G
            scaling (grad_norm, loss) and that G > 1 runs
  accum_bal seed + switch + aux_free, grad_accum 2: the balance terms are
            nonlinear in their micro-batch (f_e, P_e per micro-batch), so this
            trajectory differs from the same case with grad_accum 1; the
            aux-free load counts both micro-batches' rows (the seed is chosen
            so that counting only the last micro-batch's rows would change
            the bias update on at least one step)
  bf16      seed + switch, grad_accum 2, precision "bf16": deepmoe's mixed
            precision. Each expert Linear is Bf16Linear: y = bf16(x) bf16(W)^T
            + b with the products summed in the run's dtype, and in backward,
            g = the output gradient (the routing weight applied), dx =
            bf16(g) bf16(W), dW = bf16(g)^T bf16(x), db = sum g; bf16() rounds
            to nearest even through float32, as the C trainer rounds its
            float32 values. Everything else (router, LayerNorm, loss, AdamW)
            in the run's dtype. Its float32 run must agree with the float64
            one to BF16_TOL (a rounding that lands on the other side of a
            bf16 boundary moves a value by 2^-9). The same steps under
            torch.autocast("cpu", dtype=torch.bfloat16) around the experts
            (float32 model; the Linears under autocast, which also rounds
            their outputs to bf16, LayerNorm in float32) are logged in train_bf16.autocast.npy [10, 4], the C test's
            looser comparison with PyTorch's own autocast

Files per case NAME (all float32):
  train_NAME.safetensors        initial weights, deepmoe names, metadata
                                {"format": "pt", "deepmoe.config": {...}}
  train_NAME.x.npy, .y.npy      [32, 16] inputs and targets
  train_NAME.final.safetensors  weights after 10 steps (same names and
                                metadata, gating.expert_bias included)
  train_NAME.log.npy            [10, 4]: per step, MSE (mean over
                                micro-batches), balance loss (sum of the
                                enabled terms, mean over micro-batches; 0 for
                                aux_free alone), gradient L2 norm before
                                clipping (over the trained parameters), lr
  train_NAME.cfg.json           the training config (keys as dm_train_config)

The trajectory is computed in float64 (modules and data cast to double,
starting from the stored float32 values) and stored as float32. A seed is
accepted only if, at every step and for every row, the k-th and (k+1)-th
biased logits differ by more than 1e-3 (the chosen set cannot flip in
float32), every routed row's expert hidden pre-activations are at least 1e-5
away from the ReLU kink and its LayerNorm variance is above 1e-3; and the
same trajectory run in float32 PyTorch must agree with the float64 one to
2e-5 (every logged quantity, every final tensor), a tenth of the C test's
tolerance. Otherwise the case's seed is redrawn (seed + 1000 * attempt).
"""
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import (CONFIG_KEYS, ExpertLayer, config, ordered_topk,  # noqa: E402
                          read_safetensors, save_npy, write_safetensors)

D, E, K, H, N = 16, 4, 2, 8, 32
STEPS = 10
GAP = 1e-3          # minimum k-th vs (k+1)-th biased logit gap, every row, every step
KINK = 1e-5         # minimum |pre-activation| of a routed row's expert hidden unit
LN_VAR_MIN = 1e-3   # minimum LayerNorm input variance of a routed row
F32_TOL = 2e-5      # float32 PyTorch run vs float64 reference
BF16_TOL = 2e-3     # the same for the bf16 case

BASE = {"lr": 1e-2, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
        "warmup": 0, "schedule": "constant", "total_steps": STEPS, "clip": 0.0,
        "grad_accum": 1, "balance": [], "coef_seed": 0.01, "coef_switch": 0.01,
        "coef_z": 0.001, "bias_update": 0.001, "steps": STEPS}

# name, overrides of BASE, torch seed
CASES = [
    ("none", {}, 101),
    ("seed", {"balance": ["seed"]}, 102),
    ("switch", {"balance": ["switch"]}, 103),
    ("aux_free", {"balance": ["aux_free"]}, 104),
    ("z", {"balance": ["z"]}, 105),
    ("all", {"balance": ["switch", "z", "aux_free"], "clip": 0.5, "schedule": "cosine",
             "warmup": 3}, 106),
    ("accum", {"grad_accum": 2}, 107),
    ("accum_bal", {"balance": ["seed", "switch", "aux_free"], "grad_accum": 2}, 108),
    ("bf16", {"precision": "bf16", "balance": ["seed", "switch"], "grad_accum": 2}, 109),
]


class RejectSeed(Exception):
    pass


# ---------------------------------------------------------------- the model

def bf16(t):
    """Round to bfloat16 (nearest even) through float32, back in t's dtype."""
    return t.float().bfloat16().to(t.dtype)


class Bf16Linear(torch.autograd.Function):
    """deepmoe's --precision bf16 Linear: bf16 operands, sums in the dtype."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return bf16(x) @ bf16(w).t() + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gb = bf16(g)
        return gb @ bf16(w), gb.t() @ bf16(x), g.sum(0)


def expert_forward(expert, x, precision):
    """The seed expert in a precision: "fp32" (its own forward), "bf16"
    (Bf16Linear for both Linears) or "autocast" (torch.autocast bfloat16)."""
    if precision == "fp32":
        return expert(x)
    l1, relu, ln, l2 = expert.net
    if precision == "autocast":   # the Linears under autocast, LayerNorm in float32 (its autocast policy)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = relu(l1(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            o = l2(ln(h.float()))
        return o.float() + x
    h = relu(Bf16Linear.apply(x, l1.weight, l1.bias))
    return Bf16Linear.apply(ln(h), l2.weight, l2.bias) + x


class SeedGate(nn.Module):
    """The seed router; with selection bias, a non-trained buffer expert_bias."""

    def __init__(self, dim, n_experts, top_k, selection_bias):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(dim, n_experts)
        if selection_bias:
            self.register_buffer("expert_bias", torch.zeros(n_experts))
        else:
            self.expert_bias = None

    def forward(self, x):
        logits = self.gate(x)
        sel = logits if self.expert_bias is None else logits + self.expert_bias
        ssorted, _ = ordered_topk(sel.detach(), self.top_k + 1)
        margin = ssorted[:, self.top_k - 1] - ssorted[:, self.top_k]
        _, idx = ordered_topk(sel.detach(), self.top_k)
        w = F.softmax(logits.gather(1, idx), dim=-1)
        return logits, idx, w, margin


class SeedMoE(nn.Module):
    def __init__(self, cfg, precision="fp32"):
        super().__init__()
        self.cfg = cfg
        self.precision = precision
        self.gating = SeedGate(cfg["dim"], cfg["n_experts"], cfg["top_k"], cfg["selection_bias"])
        self.experts = nn.ModuleList(ExpertLayer(cfg["dim"], cfg["hidden"], cfg["ln_eps"])
                                     for _ in range(cfg["n_experts"]))

    def forward(self, x, check):
        """Sparse dispatch. check: raise RejectSeed on a fragile decision."""
        logits, idx, w, margin = self.gating(x)
        if check and not bool((margin > GAP).all()):
            raise RejectSeed(f"routing gap {float(margin.min()):.2e}")
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.where(idx == e)
            if not rows.numel():
                continue
            xr = x[rows]
            if check:
                pre = expert.net[0](xr).detach()
                if float(pre.abs().min()) <= KINK:
                    raise RejectSeed(f"ReLU kink {float(pre.abs().min()):.2e}")
                if float(expert.hidden_var(xr).detach().min()) <= LN_VAR_MIN:
                    raise RejectSeed("LayerNorm variance")
            y.index_add_(0, rows, expert_forward(expert, xr, self.precision) * w[rows, slot].unsqueeze(-1))
        return y, logits, idx, w


def build_model(cfg, seed, precision="fp32"):
    torch.manual_seed(seed)
    model = SeedMoE(cfg, precision)
    with torch.no_grad():
        model.gating.gate.weight.mul_(3.0)     # decisive routing, as gen_fixtures.py
        model.gating.gate.bias.mul_(3.0)
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    x = torch.rand(N, cfg["dim"]) * 2 - 1
    a = torch.randn(cfg["dim"], cfg["dim"]) / math.sqrt(cfg["dim"])
    y = torch.tanh(x.double() @ a.double()).float()
    return model, x, y


# ---------------------------------------------------------------- training

def lr_at(tc, t):
    if t < tc["warmup"]:
        return tc["lr"] * (t + 1) / tc["warmup"]
    if tc["schedule"] == "cosine":
        span = tc["total_steps"] - tc["warmup"]
        return tc["lr"] * 0.5 * (1 + math.cos(math.pi * (t - tc["warmup"]) / span))
    return tc["lr"]


def balance_loss(tc, logits, idx, w):
    n, k = idx.shape
    n_exp = logits.shape[1]
    terms = []
    if "seed" in tc["balance"]:
        dense_w = torch.zeros(n, n_exp, dtype=w.dtype).scatter(1, idx, w)
        p = dense_w.mean(0)
        terms.append(tc["coef_seed"] * (n_exp * p * (1 - p)).mean())
    if "switch" in tc["balance"]:
        f = torch.bincount(idx.flatten(), minlength=n_exp).to(logits.dtype) / (n * k)
        p = F.softmax(logits, dim=-1).mean(0)
        terms.append(tc["coef_switch"] * n_exp * (f * p).sum())
    if "z" in tc["balance"]:
        terms.append(tc["coef_z"] * (torch.logsumexp(logits, dim=-1) ** 2).mean())
    return sum(terms) if terms else torch.zeros((), dtype=logits.dtype)


def train(model, x, y, tc, check, info=None):
    """Runs the trajectory in model's dtype; returns the [STEPS, 4] log.
    info (a dict): gets "load_sign_differs", the steps whose aux-free update
    would differ had the load been counted over the last micro-batch only."""
    params = [p for p in model.parameters()]   # expert_bias is a buffer: not here
    opt = torch.optim.AdamW(params, lr=tc["lr"], betas=(tc["beta1"], tc["beta2"]),
                            eps=tc["eps"], weight_decay=tc["weight_decay"])
    G = tc["grad_accum"]
    mb = x.shape[0] // G
    n_exp = model.cfg["n_experts"]
    log = np.zeros((STEPS, 4))
    for t in range(STEPS):
        lr = lr_at(tc, t)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=False)
        counts = torch.zeros(n_exp, dtype=torch.int64)
        mse_sum = bal_sum = 0.0
        for j in range(G):
            xb, yb = x[j * mb:(j + 1) * mb], y[j * mb:(j + 1) * mb]
            out, logits, idx, w = model(xb, check)
            mse = F.mse_loss(out, yb)
            bal = balance_loss(tc, logits, idx, w)
            ((mse + bal) / G).backward()
            mse_sum += float(mse)
            bal_sum += float(bal)
            last = torch.bincount(idx.flatten(), minlength=n_exp)
            counts += last
        with torch.no_grad():
            norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)))
        if tc["clip"] > 0:
            clipped = float(torch.nn.utils.clip_grad_norm_(params, tc["clip"]))
            assert abs(clipped - norm) <= 1e-6 * norm
        opt.step()
        if "aux_free" in tc["balance"]:
            with torch.no_grad():
                load = counts.to(x.dtype) / (x.shape[0] * model.cfg["top_k"])
                model.gating.expert_bias += tc["bias_update"] * torch.sign(load.mean() - load)
                if info is not None:
                    last_load = last.to(x.dtype) / (mb * model.cfg["top_k"])
                    differs = not torch.equal(torch.sign(load.mean() - load),
                                              torch.sign(last_load.mean() - last_load))
                    info["load_sign_differs"] = info.get("load_sign_differs", 0) + differs
        log[t] = [mse_sum / G, bal_sum / G, norm, lr]
    if check:   # the final weights must route robustly too (the C test's last step used them)
        with torch.no_grad():
            model(x, True)
    return log


def relerr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def make_case(outdir, name, over, seed):
    tc = dict(BASE, **over)
    assert all(b in ("seed", "switch", "aux_free", "z") for b in tc["balance"])
    cfg = config(D, E, K, H, selection_bias="aux_free" in tc["balance"])
    precision = tc.get("precision", "fp32")
    tol = BF16_TOL if precision == "bf16" else F32_TOL
    for attempt in range(50):
        s = seed + 1000 * attempt
        model, x, y = build_model(cfg, s, precision)
        m64 = copy.deepcopy(model).double()
        info = {}
        try:
            log = train(m64, x.double(), y.double(), tc, check=True, info=info)
        except RejectSeed as why:
            print(f"  {name}: seed {s} rejected ({why})")
            continue
        if "aux_free" in tc["balance"] and tc["grad_accum"] > 1 and not info["load_sign_differs"]:
            print(f"  {name}: seed {s} rejected (the aux-free update would be the same with the "
                  f"last micro-batch's load)")
            continue
        m32 = copy.deepcopy(model)
        log32 = train(m32, x, y, tc, check=False)
        errs = [relerr(log32[:, c], log[:, c]) for c in range(4)]
        final64, final32 = m64.state_dict(), m32.state_dict()
        errs += [relerr(final32[k].numpy(), final64[k].numpy()) for k in final64]
        if max(errs) > tol:
            print(f"  {name}: seed {s} rejected (float32 run differs by {max(errs):.1e})")
            continue
        break
    else:
        raise RuntimeError(f"{name}: no robust seed")

    meta = {"format": "pt", "deepmoe.config": json.dumps({k: cfg[k] for k in CONFIG_KEYS})}
    pre = os.path.join(outdir, "train_" + name)
    init = model.state_dict()
    write_safetensors(pre + ".safetensors", list(init.items()), meta)
    final = [(k, v.float()) for k, v in m64.state_dict().items()]
    write_safetensors(pre + ".final.safetensors", final, meta)
    for path, ref in ((pre + ".safetensors", init), (pre + ".final.safetensors", dict(final))):
        rmeta, rt = read_safetensors(path)
        assert rmeta == meta and list(rt) == list(ref)
        for k, v in ref.items():
            assert np.array_equal(rt[k], v.double().numpy()), (path, k)
    save_npy(pre + ".x.npy", x.numpy())
    save_npy(pre + ".y.npy", y.numpy())
    save_npy(pre + ".log.npy", log)
    if precision == "bf16":   # the same steps under PyTorch's own autocast (float32 model)
        mac = copy.deepcopy(model)
        mac.precision = "autocast"
        log_ac = train(mac, x, y, tc, check=False)
        save_npy(pre + ".autocast.npy", log_ac)
        m_fp = copy.deepcopy(model).double()
        m_fp.precision = "fp32"
        log_fp = train(m_fp, x.double(), y.double(), tc, check=False)
        print(f"  {name}: loss vs autocast(bfloat16) max rel {relerr(log[:, 0], log_ac[:, 0]):.1e}, "
              f"grad norm {relerr(log[:, 2], log_ac[:, 2]):.1e}; vs fp32 loss {relerr(log[:, 0], log_fp[:, 0]):.1e}")
    with open(pre + ".cfg.json", "w") as f:
        json.dump(tc, f, indent=1)
        f.write("\n")
    assert "gating.expert_bias" not in init or not init["gating.expert_bias"].any()
    moved = max(relerr(v.numpy(), init[k].double().numpy()) for k, v in final if init[k].any())
    clipped = int((log[:, 2] > tc["clip"]).sum()) if tc["clip"] > 0 else 0
    extra = f", clip active on {clipped}/{STEPS} steps" if tc["clip"] > 0 else ""
    if info.get("load_sign_differs"):
        extra += f", last-micro-batch load would differ on {info['load_sign_differs']} steps"
    if "aux_free" in tc["balance"]:
        extra += ", expert_bias " + " ".join(f"{v:+.3f}" for v in
                                             m64.state_dict()["gating.expert_bias"].tolist())
    print(f"  {name}: seed {s}, loss {log[0, 0]:.4f} -> {log[-1, 0]:.4f}, balance "
          f"{log[0, 1]:.2e} -> {log[-1, 1]:.2e}, grad norm {log[0, 2]:.3f} -> {log[-1, 2]:.3f}, "
          f"weights moved {moved:.2f}, float32 run within {max(errs):.1e}{extra}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: /usr/bin/python3 tests/gen_train_fixtures.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    for case in CASES:
        make_case(outdir, *case)
    files = [f for f in os.listdir(outdir) if f.startswith("train_")]
    total = sum(os.path.getsize(os.path.join(outdir, f)) for f in files)
    print(f"wrote {len(CASES)} cases to {outdir} ({len(files)} train_* files, {total} bytes)")


if __name__ == "__main__":
    main()
