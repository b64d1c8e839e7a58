#!/usr/bin/env python3
"""scaling_model.py - the alpha-beta scaling model of docs/scaling.md (standard
library only): predicted step time and communication share of data parallel
(ring all-reduce, with and without overlap), ZeRO-3 and expert parallel training
for the seed MoE layer and a DeepSeek-V3-sized MoE layer at 8..1024 ranks on
100 Gb/s and 400 Gb/s networks, from measured inputs:
  --mpi-coll FILE   bench/mpi_coll.sh output: its "fit" lines (alpha, beta per
                    collective; the split fit is used) for the 2-rank check
  --compute FILE    deepmoe bench --mode train --json lines with a "case" key
                    (bench/scaling_measure.sh writes both); the median rows/s per case
Usage: bench/scaling_model.py [--mpi-coll F] [--compute F] [--ranks 8,64,256,1024]
         [--alpha100 US] [--alpha400 US] [--gpu-tflops T] [--json]
Defaults: docs/scaling_data/mpi_coll_np2.txt, docs/scaling_data/compute.jsonl,
alpha 5 us (100 Gb/s) and 3 us (400 Gb/s), 989.4 TFLOP/s BF16 dense x 0.40.

Cost model (p ranks, n bytes, alpha latency per step, B link bandwidth per rank):
  allreduce (ring)       AR(n, p) = 2(p-1) alpha + 2(p-1)/p * n / B
  reduce-scatter (ring)  RS(n, p) =  (p-1) alpha +  (p-1)/p * n / B
  allgather (ring)       AG(n, p) =  (p-1) alpha +  (p-1)/p * n / B     (n = the gathered vector)
  all-to-all (pairwise)  A2A(n, p) = (p-1) alpha +  (p-1)/p * n / B     (n = bytes a rank sends)
Step time, T_c = rows per rank x measured (or FLOP-estimated) compute time per row
(forward + backward + AdamW), T_f = T_c / 3, T_b = 2 T_c / 3:
  dp       T = T_c + AR(N gb, P)                              (no overlap)
  dp-ovl   T = T_f + max(T_b, AR(N gb, P))                    (all-reduce hidden behind backward)
  zero3    T = T_c + 2 AG(N pb, P) + RS(N gb, P)              (params gathered fwd + bwd, grads reduce-scattered)
  ep       q = min(P, E) expert-parallel ranks, R = P / q replicas of each expert:
           T = T_c + 4 A2A(rows k D ab, q) + AR(N_rep gb, P) + AR(N_exp/q gb, R)
           (dispatch + combine forward, their two transposes backward; the
           replicated parameters (router, shared expert, embedding/head)
           all-reduced over all P, each expert's over its R replicas)
  ep-nl    (DeepSeek-V3 layer only) node-limited routing as DeepSeek-V3 /
           DeepEP: g = 8 GPUs per node on NVLink, each token to at most M = 4
           nodes, one copy per node over the network (then NVLink inside it);
           dispatch in FP8 (D (1 + 4/128) bytes), the rest BF16:
           A2A_nl = (nodes-1) alpha + max(x_ib / B, x_nvl / B_nvl), x_ib = rows
           * E[off-node nodes per token] * bytes per token, x_nvl = rows k
           (g-1)/g * bytes per token; B_nvl = 160 GB/s (H800, DeepEP README)
comm share = (T - T_c) / T.  Routing is assumed uniform (no load imbalance)."""
import argparse
import json
import math
import os
import random
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
H100_BF16_DENSE_TFLOPS = 989.4      # H100/H800 SXM BF16 dense tensor-core peak
ASSUMED_MFU = 0.40                  # an assumption, not a measurement
NVLINK_GBPS = 160.0                 # H800 NVLink, as DeepEP's README states it
GPUS_PER_NODE = 8


# ---------------------------------------------------------------- inputs
def read_fits(path):
    fits = {}
    for line in open(path):
        if line.startswith("fit "):
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            fits[kv["name"]] = {"p": int(kv["p"]), "alpha_us": float(kv["split_alpha_us"]),
                                "beta_GBps": float(kv["split_beta_GBps"]),
                                "alpha_all_us": float(kv["alpha_us"]), "beta_all_GBps": float(kv["beta_GBps"])}
    return fits


def read_compute(path):
    cases = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            cases.setdefault(r["case"], []).append(r)
    out = {}
    for name, rs in cases.items():
        rows = statistics.median(r["rows_per_s"] for r in rs)
        out[name] = {"batch": rs[0]["batch"], "threads": rs[0]["threads"], "rows_per_s": rows,
                     "us_per_row": 1e6 / rows, "runs": len(rs),
                     "gflops": statistics.median(r["gflops"] for r in rs),
                     "peak_gflops": statistics.median(r["peak_gflops"] for r in rs)}
    return out


# ---------------------------------------------------------------- collectives (seconds)
def ring_ar(n, p, a, b):
    return 0.0 if p <= 1 or n <= 0 else 2 * (p - 1) * a + 2 * (p - 1) / p * n / b


def rhd_ar(n, p, a, b):           # Rabenseifner: recursive halving reduce-scatter + doubling allgather
    return 0.0 if p <= 1 or n <= 0 else 2 * math.log2(p) * a + 2 * (p - 1) / p * n / b


ALLREDUCE = {"ring": ring_ar, "rhd": rhd_ar}


def ring_rs(n, p, a, b):          # also AG and A2A: (p-1) alpha + (p-1)/p n / B
    return 0.0 if p <= 1 or n <= 0 else (p - 1) * a + (p - 1) / p * n / b


# ---------------------------------------------------------------- layers
def seed_params(D, E, H):
    expert = D * H + H + 2 * H + H * D + D      # Linear, ReLU, LayerNorm(H), Linear
    return {"experts": E * expert, "replicated": D * E + E}


def dsv3_params(D, E, H, shared):
    expert = 3 * D * H                           # SwiGLU: gate, up, down; no biases
    return {"experts": E * expert, "replicated": shared * expert + D * E + E}


def dsv3_train_flops_per_row(D, E, k, H, shared):
    fwd = 2 * D * E + (k + shared) * 3 * 2 * D * H
    return 3 * fwd


def routing_nodes(nodes, experts=256, topk=8, max_nodes=4, tokens=3000, seed=1):
    """E[distinct nodes a token's top-k experts live on] under DeepEP's test routing
    (scores |N(0,1)| + 1, node score = the max of its experts', top-max_nodes nodes,
    top-k experts within them); experts split evenly over the nodes."""
    if nodes <= 1:
        return 1.0
    rng = random.Random(seed)
    per = experts // nodes
    tot = 0
    for _ in range(tokens):
        s = [abs(rng.gauss(0, 1)) + 1 for _ in range(experts)]
        gs = sorted(range(nodes), key=lambda g: -max(s[g * per:(g + 1) * per]))[:max_nodes]
        allowed = [e for g in gs for e in range(g * per, (g + 1) * per)]
        top = sorted(allowed, key=lambda e: -s[e])[:topk]
        tot += len({e // per for e in top})
    return tot / tokens


# ---------------------------------------------------------------- the model
def strategies(layer, P, net, nl_cache):
    a, B = net["alpha_us"] * 1e-6, net["GBps"] * 1e9
    rows, t_row = layer["rows_per_rank"], layer["s_per_row"]
    Tc = rows * t_row
    Tf, Tb = Tc / 3, 2 * Tc / 3
    N = layer["params"]["experts"] + layer["params"]["replicated"]
    pb, gb, ab = layer["param_bytes"], layer["grad_bytes"], layer["act_bytes"]
    D, E, k = layer["D"], layer["E"], layer["k"]
    res = {}
    AR = ALLREDUCE[layer["allreduce"]]
    ar = AR(N * gb, P, a, B)
    res["dp"] = Tc + ar
    res["dp-ovl"] = Tf + max(Tb, ar)
    res["zero3"] = Tc + 2 * ring_rs(N * pb, P, a, B) + ring_rs(N * gb, P, a, B)
    q = min(P, E)
    R = P // q
    a2a = ring_rs(rows * k * D * ab, q, a, B)
    res["ep"] = (Tc + 4 * a2a + AR(layer["params"]["replicated"] * gb, P, a, B)
                 + AR(layer["params"]["experts"] / q * gb, R, a, B))
    if layer.get("node_limited"):
        g = GPUS_PER_NODE
        nodes = max(1, q // g)
        if nodes not in nl_cache:
            nl_cache[nodes] = routing_nodes(nodes, experts=E, topk=k, max_nodes=layer["max_nodes"])
        off = nl_cache[nodes] * (nodes - 1) / nodes        # off-node copies per token
        tok_fp8, tok_bf16 = D * (1 + 4 / 128), D * 2
        t_nl = 0.0
        for tb in (tok_fp8, tok_bf16, tok_bf16, tok_bf16):  # dispatch (FP8), combine, and the two backward
            x_ib, x_nvl = rows * off * tb, rows * k * (g - 1) / g * tb
            t_nl += (nodes - 1) * a + max(x_ib / B, x_nvl / (NVLINK_GBPS * 1e9))
        res["ep-nl"] = (Tc + t_nl + AR(layer["params"]["replicated"] * gb, P, a, B)
                        + AR(layer["params"]["experts"] / q * gb, R, a, B))
    return Tc, {s: (t, (t - Tc) / t) for s, t in res.items()}


def memory_gb(layer, P):
    """bytes per rank of params + grads + AdamW state (fp32 m, v; plus an fp32 master
    copy when the params are narrower than fp32)"""
    per = layer["param_bytes"] + layer["grad_bytes"] + 8 + (4 if layer["param_bytes"] < 4 else 0)
    N_e, N_r = layer["params"]["experts"], layer["params"]["replicated"]
    q = min(P, layer["E"])
    return {"dp": (N_e + N_r) * per / 1e9, "zero3": (N_e + N_r) * per / P / 1e9, "ep": (N_e / q + N_r) * per / 1e9}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mpi-coll", default=os.path.join(ROOT, "docs/scaling_data/mpi_coll_np2.txt"))
    ap.add_argument("--compute", default=os.path.join(ROOT, "docs/scaling_data/compute.jsonl"))
    ap.add_argument("--ranks", default="8,64,256,1024")
    ap.add_argument("--alpha100", type=float, default=5.0, help="alpha of the 100 Gb/s network, us")
    ap.add_argument("--alpha400", type=float, default=3.0, help="alpha of the 400 Gb/s network, us")
    ap.add_argument("--gpu-tflops", type=float, default=H100_BF16_DENSE_TFLOPS * ASSUMED_MFU,
                    help="sustained TFLOP/s per rank for the DeepSeek-V3-sized layer")
    ap.add_argument("--allreduce", choices=sorted(ALLREDUCE), default="ring",
                    help="all-reduce cost: ring (default) or rhd (Rabenseifner, 2 log2(p) alpha latency terms)")
    ap.add_argument("--json", action="store_true", help="also print the table rows as JSON lines")
    o = ap.parse_args()
    ranks = [int(x) for x in o.ranks.split(",")]
    fits, comp = read_fits(o.mpi_coll), read_compute(o.compute)
    nets = {"100 Gb/s": {"alpha_us": o.alpha100, "GBps": 12.5}, "400 Gb/s": {"alpha_us": o.alpha400, "GBps": 50.0}}

    print("## Inputs\n")
    print("Measured compute (deepmoe bench --mode train, median of %s runs; %s):\n" % (
        "/".join(str(c["runs"]) for c in comp.values()), os.path.relpath(o.compute, ROOT)))
    print("| case | batch | threads | rows/s | us/row | GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|")
    for name, c in sorted(comp.items()):
        print("| %s | %d | %d | %.0f | %.2f | %.1f | %.0f%% |" % (name, c["batch"], c["threads"], c["rows_per_s"],
                                                              c["us_per_row"], c["gflops"], 100 * c["gflops"] / c["peak_gflops"]))
    print("\nMeasured collectives (%s, split fit: alpha from n <= 4 KiB, beta from n >= 1 MiB):\n" % os.path.relpath(o.mpi_coll, ROOT))
    print("| collective | p | alpha us | beta GB/s | (one-line fit: alpha us, beta GB/s) |")
    print("|---|---|---|---|---|")
    for name, f in fits.items():
        print("| %s | %d | %.3f | %.3f | %.3f, %.3f |" % (name, f["p"], f["alpha_us"], f["beta_GBps"], f["alpha_all_us"], f["beta_all_GBps"]))

    # ------------------------------------------------ 2-rank check on this machine
    cls = comp.get("classifier_b128_t1")
    if cls and "allreduce" in fits:
        N = 5055402
        Tc = 128 * cls["us_per_row"] * 1e-6
        f = fits["allreduce"]
        ar = ring_ar(N * 4, 2, f["alpha_us"] * 1e-6, f["beta_GBps"] * 1e9)
        rs, ag = fits["reduce_scatter"], fits["allgather"]
        z1 = (ring_rs(N * 4, 2, rs["alpha_us"] * 1e-6, rs["beta_GBps"] * 1e9)
              + ring_rs(N * 4, 2, ag["alpha_us"] * 1e-6, ag["beta_GBps"] * 1e9))
        print("\n## This machine, 2 ranks: the default classifier (%d params, fp32 gradients %.1f MB), 128 rows per rank\n"
              % (N, N * 4 / 1e6))
        print("| strategy | compute ms | comm ms | step ms | comm share | rows/s (global 256) |")
        print("|---|---|---|---|---|---|")
        for name, c in (("dp (MPI allreduce, no overlap)", ar), ("zero1 (reduce-scatter + allgather)", z1)):
            print("| %s | %.2f | %.2f | %.2f | %.3f | %.0f |" % (name, Tc * 1e3, c * 1e3, (Tc + c) * 1e3, c / (Tc + c), 256 / (Tc + c)))

    # ------------------------------------------------ the layers
    seed = comp.get("seed_b1024_t2")
    layers = []
    if seed:
        layers.append({"name": "seed layer (D=512, E=8, k=2, H=256), fp32, 1024 rows per rank, compute measured "
                               "(%.2f us/row: deepmoe bench --mode train --batch 1024 --threads 2)" % seed["us_per_row"],
                       "key": "seed", "D": 512, "E": 8, "k": 2, "params": seed_params(512, 8, 256),
                       "param_bytes": 4, "grad_bytes": 4, "act_bytes": 4, "rows_per_rank": 1024,
                       "s_per_row": seed["us_per_row"] * 1e-6})
    D, E, k, H, S = 7168, 256, 8, 2048, 1
    fl = dsv3_train_flops_per_row(D, E, k, H, S)
    layers.append({"name": "DeepSeek-V3-sized MoE layer (D=7168, 256 routed experts + 1 shared, top-8, H=2048, SwiGLU), "
                           "bf16 params/grads/activations, 4096 rows per rank, compute %.2f GFLOP/row at %.0f TFLOP/s "
                           "(%.2f us/row)" % (fl / 1e9, o.gpu_tflops, fl / (o.gpu_tflops * 1e12) * 1e6),
                   "key": "dsv3", "D": D, "E": E, "k": k, "params": dsv3_params(D, E, H, S),
                   "param_bytes": 2, "grad_bytes": 2, "act_bytes": 2, "rows_per_rank": 4096,
                   "s_per_row": fl / (o.gpu_tflops * 1e12), "node_limited": True, "max_nodes": 4})
    nl_cache = {}
    for L in layers:
        L["allreduce"] = o.allreduce
        N = L["params"]["experts"] + L["params"]["replicated"]
        print("\n## %s\n" % L["name"])
        print("All-reduce: %s." % ("ring, 2(p-1) alpha" if o.allreduce == "ring" else "Rabenseifner, 2 log2(p) alpha"))
        print("Parameters %d (experts %d, replicated %d).\n" % (N, L["params"]["experts"], L["params"]["replicated"]))
        strat = ["dp", "dp-ovl", "zero3", "ep"] + (["ep-nl"] if L.get("node_limited") else [])
        print("| network | ranks | compute ms | " + " | ".join("%s ms | %s share" % (s, s) for s in strat) + " |")
        print("|---|---|---|" + "---|---|" * len(strat))
        for nname, net in nets.items():
            for P in ranks:
                Tc, r = strategies(L, P, net, nl_cache)
                cells = ["%.1f | %.2f" % (r[s][0] * 1e3, r[s][1]) for s in strat]
                print("| %s (alpha %g us) | %d | %.1f | %s |" % (nname, net["alpha_us"], P, Tc * 1e3, " | ".join(cells)))
                if o.json:
                    print("JSON " + json.dumps({"layer": L["key"], "network": nname, "ranks": P, "compute_ms": Tc * 1e3,
                                                **{s: {"step_ms": r[s][0] * 1e3, "comm_share": r[s][1]} for s in strat}}))
        def mem(gb):
            return "%.1f GB" % gb if gb >= 1 else "%.1f MB" % (gb * 1e3)
        print("\nMemory per rank (params + grads + AdamW state):", "; ".join(
            "%d ranks: dp %s, zero3 %s, ep %s" % ((P,) + tuple(mem(memory_gb(L, P)[s]) for s in ("dp", "zero3", "ep")))
            for P in ranks))

    # ------------------------------------------------ DeepEP comparison
    print("\n## Expert-parallel all-to-all against DeepEP's published normal-kernel numbers\n")
    print("DeepEP V1 (docs/legacy.md): H800, CX7 400 Gb/s (~50 GB/s), 4096 tokens, hidden 7168, top-4 groups, top-8 of 256 "
          "experts, FP8 dispatch, BF16 combine; its 'RDMA bottleneck bandwidth' counts every (token, destination node) "
          "copy including the token's own node (tests/test_internode.py: num_rdma_token_sent * hidden * bytes / t).\n")
    print("DeepEP V2 (README.md): SM90, CX7, 8K tokens per batch, top-8, FP8 dispatch, BF16 combine, "
          "'logical bandwidth' (contains local rank traffic).\n")
    print("| EP | nodes | E[nodes per token] | E[off-node] | model dispatch ms (FP8, 4096 tokens) | model 'RDMA bandwidth' GB/s | "
          "DeepEP V1 dispatch / combine GB/s | V1 / model | DeepEP V2 dispatch / combine GB/s | V2 / model |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    published = {16: (43, 43), 32: (58, 57), 64: (51, 50)}
    published_v2 = {16: (90, 81), 32: (61, 61)}
    a, B = o.alpha400 * 1e-6, 50e9
    for ep, (pd, pc) in published.items():
        nodes = ep // GPUS_PER_NODE
        dn = routing_nodes(nodes)
        off = dn * (nodes - 1) / nodes
        tok = 7168 * (1 + 4 / 128)
        t = (nodes - 1) * a + 4096 * off * tok / B
        bw = 4096 * dn * tok / t / 1e9
        v2 = published_v2.get(ep)
        v2s = "%d / %d | %.2f / %.2f" % (v2[0], v2[1], v2[0] / bw, v2[1] / bw) if v2 else "- | -"
        print("| %d | %d | %.2f | %.2f | %.2f | %.1f | %d / %d | %.2f / %.2f | %s |" % (
            ep, nodes, dn, off, t * 1e3, bw, pd, pc, pd / bw, pc / bw, v2s))


if __name__ == "__main__":
    sys.exit(main())
