#!/usr/bin/python3
"""torch_seed.py - Debian's PyTorch running the seed layer (D=512, E=8, k=2, H=256),
dense as the seed writes it (every expert on every row) and a sparse rewrite
(only chosen experts), rows/s at batch 1024 and 1 with 2 threads. The peer for
bench/infer.sh. Usage: /usr/bin/python3 bench/torch_seed.py [threads]"""
import sys, time
import torch
import torch.nn as nn

D, E, K, H = 512, 8, 2, 256
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
torch.manual_seed(0)
gate = nn.Linear(D, E)
experts = nn.ModuleList(nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.LayerNorm(H), nn.Linear(H, D)) for _ in range(E))

def route(x):
    top, idx = gate(x).topk(K, dim=1)
    return idx, torch.softmax(top, dim=1)

def dense(x):
    idx, w = route(x)
    full = torch.zeros(x.shape[0], E).scatter(1, idx, w)
    ys = torch.stack([e(x) + x for e in experts], dim=1)
    return (ys * full.unsqueeze(-1)).sum(1)

def sparse(x):
    idx, w = route(x)
    out = torch.zeros_like(x)
    for e in range(E):
        rows, slot = (idx == e).nonzero(as_tuple=True)
        if rows.numel():
            out.index_add_(0, rows, (experts[e](x[rows]) + x[rows]) * w[rows, slot].unsqueeze(1))
    return out

def median_ms(f, x, reps):
    for _ in range(3): f(x)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(x); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3

with torch.no_grad():
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for n, reps in ((1024, 30), (1, 500)):
        x = torch.rand(n, D) * 2 - 1
        assert torch.allclose(dense(x), sparse(x), atol=1e-5)
        for name, f in (("dense", dense), ("sparse", sparse)):
            ms = median_ms(f, x, reps)
            print(f"batch {n:5d} {name:6s} {ms:9.3f} ms {n / ms * 1e3:10.0f} rows/s")
