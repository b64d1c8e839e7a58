#!/usr/bin/python3
"""torch_train.py - Debian's PyTorch training the seed layer (D=512, E=8, k=2, H=256)
at batch 1024: forward + backward + AdamW step, MSE to a random target. Two
versions: dense as the seed writes it (every expert on every row, weighted sum)
and a sparse rewrite (only the chosen experts, index_add). Median step time over
10 steps after 2 warm-ups, rows/s. The peer for deepmoe's training throughput.
Usage: /usr/bin/python3 bench/torch_train.py [threads]   (default 2)

Debian's torch does its matrix products through the libblas.so.3 alternative: with
the reference BLAS (libblas3) it is about 10x slower than with OpenBLAS
(libopenblas0-pthread), so the script prints which BLAS it loaded. It sets
OPENBLAS_NUM_THREADS to the thread count and, as an OpenBLAS peer, unsets
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (which halve OpenBLAS's speed on the
development machines) for its own process, before torch loads the library."""
import copy
import os
import sys
import time

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
os.environ["OPENBLAS_NUM_THREADS"] = str(THREADS)
os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)

import torch  # noqa: E402  (after the OpenBLAS variables)
import torch.nn as nn
import torch.nn.functional as F

D, E, K, H = 512, 8, 2, 256
BATCH, WARMUP, REPS = 1024, 2, 10
torch.set_num_threads(THREADS)
torch.manual_seed(0)


class SeedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(D, E)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.LayerNorm(H),
                                                   nn.Linear(H, D)) for _ in range(E))

    def route(self, x):
        top, idx = self.gate(x).topk(K, dim=1)
        return idx, torch.softmax(top, dim=1)

    def dense(self, x):
        idx, w = self.route(x)
        full = torch.zeros(x.shape[0], E).scatter(1, idx, w)
        ys = torch.stack([e(x) + x for e in self.experts], dim=1)
        return (ys * full.unsqueeze(-1)).sum(1)

    def sparse(self, x):
        idx, w = self.route(x)
        out = torch.zeros_like(x)
        for e in range(E):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel():
                xe = x[rows]
                out = out.index_add(0, rows, (self.experts[e](xe) + xe) * w[rows, slot].unsqueeze(1))
        return out


def blas_library():
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.split()[-1].lower()}
    return ", ".join(sorted(libs)) or "unknown"


def make_step(model, forward, x, y):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(forward(x), y)
        loss.backward()
        opt.step()
        return float(loss)
    return step


def median_ms(step):
    for _ in range(WARMUP):
        step()
    ts = []
    for _ in range(REPS):
        t = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


base = SeedLayer()
x = torch.rand(BATCH, D) * 2 - 1
y = torch.rand(BATCH, D) * 2 - 1

# Same gradients from both formulations (one backward on copies of the same model).
grads = []
for name in ("dense", "sparse"):
    m = copy.deepcopy(base)
    F.mse_loss(getattr(m, name)(x), y).backward()
    grads.append([p.grad for p in m.parameters()])
assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(*grads)), "dense != sparse"

print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, BLAS {blas_library()}")
print(f"seed layer D={D} E={E} k={K} H={H}, batch {BATCH}, MSE, forward + backward + AdamW, "
      f"median of {REPS} steps")
print(f"{'version':8s} {'ms/step':>9s} {'rows/s':>10s}")
for name in ("dense", "sparse"):
    m = copy.deepcopy(base)
    ms = median_ms(make_step(m, getattr(m, name), x, y))
    print(f"{name:8s} {ms:9.2f} {BATCH / ms * 1e3:10.0f}")
