#!/usr/bin/python3
"""torch_ddp.py - Debian PyTorch's data-parallel training of deepmoe's default
Fashion-MNIST classifier shape: the peer for `deepmoe train --dist`.

Model (~5.06 M parameters, printed): Linear 784->384, 2 seed MoE layers (D=384,
E=8, k=2; expert = Linear(384,384) -> ReLU -> LayerNorm(384) -> Linear(384,384),
out = x + net(x); router Linear(384,8), softmax over all 8, top-2, the chosen
experts' softmax probabilities as weights, not renormalised), LayerNorm(384) ->
Linear(384,10), cross-entropy, AdamW lr 5e-4. Sparse dispatch: per expert the rows
routed to it are gathered, run and index_add'ed back, weighted. Random rows in
[0,1] x 784, labels 0..9; global batch 256 (256/RANKS rows per rank).

Usage: /usr/bin/python3 bench/torch_ddp.py MODE RANKS STEPS
  MODE gloo    no model: torch.distributed.all_reduce (gloo) of one fp32 tensor of
               the model's gradient size on RANKS ranks, median of 11 after 3
               warm-ups (what DDP's gradient sync costs without the model)
       ddp     torch.nn.parallel.DistributedDataParallel, gloo, 1 thread per rank
               (find_unused_parameters=True: experts no local row chose get no grad)
       zero    DDP + torch.distributed.optim.ZeroRedundancyOptimizer(AdamW)
       single  one process, RANKS threads, no DDP (RANKS is then the thread count)
  RANKS        processes (gloo, ddp, zero) or threads (single); default 2
  STEPS        timed steps per measurement; default 30 (after 5 warm-ups)

Ranks are started with torch.multiprocessing.spawn, rendezvous env:// on
127.0.0.1 with a free port. Timing: a barrier, STEPS steps, a barrier, on every
rank; the step time is rank 0's wall time / STEPS. Measurements alternate
"with gradient sync" and "without" (3 rounds each, the median kept) so drift on a
shared machine hits both:
  with sync     the ordinary step: forward, backward (DDP all-reduces the
                gradients in buckets overlapped with backward), optimizer step
                (zero: the local shard's AdamW, then the parameter broadcast)
  without sync  forward + backward under ddp_model.no_sync() (no all-reduce),
                then the same local optimizer work without communication
                (ddp: AdamW on all parameters; zero: ZeroRedundancyOptimizer's
                _local_step, the shard's AdamW without the broadcast)
comm_share = (t_sync - t_nosync) / t_sync: the communication left exposed (not
hidden behind backward) plus the waits it causes, and DDP's per-step search for
unused parameters (skipped under no_sync). rows_per_s = 256 / t_sync.

Last line, machine-readable:
  MODE ranks=R threads=T rows_per_s=X comm_share=Y step_ms=A nosync_ms=B params=N
(single: comm_share=0, nosync_ms = step_ms.)

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for this process (as the other
PyTorch peers do: they halve OpenBLAS's speed on these machines), and the BLAS and
OpenMP thread counts are set before torch loads."""
import os
import socket
import sys
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "ddp"
RANKS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 30
if MODE not in ("ddp", "zero", "single", "gloo") or RANKS < 1 or STEPS < 1:
    sys.exit(__doc__)
THREADS = RANKS if MODE == "single" else 1
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = str(THREADS)
os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)

import torch  # noqa: E402  (after the thread variables)
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

IN, D, E, K, H, CLASSES, LAYERS = 784, 384, 8, 2, 384, 10, 2
GLOBAL_BATCH, LR, WARMUP, ROUNDS, NBATCH = 256, 5e-4, 5, 3, 8


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.LayerNorm(H), nn.Linear(H, D))

    def forward(self, x):
        return x + self.net(x)


class MoE(nn.Module):
    def __init__(self):
        super().__init__()
        self.router = nn.Linear(D, E)
        self.experts = nn.ModuleList(Expert() for _ in range(E))

    def forward(self, x):
        probs = torch.softmax(self.router(x), dim=1)
        w, idx = probs.topk(K, dim=1)              # the chosen experts' softmax probs
        out = torch.zeros_like(x)
        for e in range(E):
            rows, slot = torch.where(idx == e)
            if rows.numel():
                xe = x.index_select(0, rows)
                out = out.index_add(0, rows, self.experts[e](xe) * w[rows, slot].unsqueeze(1))
        return out


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(IN, D)
        self.layers = nn.ModuleList(MoE() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x):
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))


def blas_library():
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.split()[-1].lower()}
    return ", ".join(sorted(libs)) or "unknown"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(rank, world, port, out):
    torch.set_num_threads(THREADS)
    distributed = MODE != "single"
    if distributed:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)                            # the same model on every rank
    model = Classifier()
    nparams = sum(p.numel() for p in model.parameters())
    rows = GLOBAL_BATCH // world
    g = torch.Generator().manual_seed(1 + rank)     # each rank its own data shard
    xs = [torch.rand(rows, IN, generator=g) for _ in range(NBATCH)]
    ys = [torch.randint(0, CLASSES, (rows,), generator=g) for _ in range(NBATCH)]

    if MODE == "single":
        net, opt = model, torch.optim.AdamW(model.parameters(), lr=LR)
    else:
        # find_unused_parameters: an expert no row of this rank's batch chose has no
        # gradient in that step (as in any sparse MoE under DDP)
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        if MODE == "zero":
            from torch.distributed.optim import ZeroRedundancyOptimizer
            opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=torch.optim.AdamW, lr=LR)
        else:
            opt = torch.optim.AdamW(net.parameters(), lr=LR)
    it = [0]

    def step(sync):
        i = it[0] % NBATCH
        it[0] += 1
        opt.zero_grad(set_to_none=True)
        if sync or MODE == "single":
            F.cross_entropy(net(xs[i]), ys[i]).backward()
            opt.step()
        else:
            with net.no_sync():
                F.cross_entropy(net(xs[i]), ys[i]).backward()
            if MODE == "zero":
                opt._local_step()                   # the shard's AdamW, no broadcast
            else:
                opt.step()

    def timed(sync, n):
        if distributed:
            dist.barrier()
        t = time.perf_counter()
        for _ in range(n):
            step(sync)
        if distributed:
            dist.barrier()
        return (time.perf_counter() - t) / n

    timed(True, WARMUP)
    timed(False, 2)
    ts, tn = [], []
    for _ in range(ROUNDS):
        ts.append(timed(True, STEPS))
        if MODE != "single":
            tn.append(timed(False, STEPS))
    if rank == 0:
        med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
        t_sync = med(ts)
        t_nosync = med(tn) if tn else t_sync
        out.update(t_sync=t_sync, t_nosync=t_nosync, params=nparams, blas=blas_library())
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def run_gloo(rank, world, port, out):
    torch.set_num_threads(THREADS)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = sum(p.numel() for p in Classifier().parameters())
    t = torch.rand(n)
    for _ in range(3):
        dist.all_reduce(t)
    ts = []
    for _ in range(11):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        ts.append(time.perf_counter() - t0)
    if rank == 0:
        out.update(n=n, us=sorted(ts)[5] * 1e6)
    dist.barrier()
    dist.destroy_process_group()


def worker(rank, world, port, q):
    out = {}
    (run_gloo if MODE == "gloo" else run)(rank, world, port, out)
    if rank == 0:
        q.put(out)


def main():
    world = 1 if MODE == "single" else RANKS
    load0 = os.getloadavg()[0]
    if world == 1:
        out = {}
        run(0, 1, 0, out)
    else:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        mp.spawn(worker, args=(world, free_port(), q), nprocs=world, join=True)
        out = q.get()
    if MODE == "gloo":
        nbytes = out["n"] * 4
        bus = 2 * (world - 1) / world * nbytes / (out["us"] * 1e-6) / 1e9
        print(f"# torch {torch.__version__}, gloo all_reduce of {out['n']} fp32 ({nbytes} bytes), {world} ranks, "
              f"median of 11; busbw = 2(p-1)/p n / t")
        print(f"gloo ranks={world} bytes={nbytes} us={out['us']:.1f} busbw_GBps={bus:.3f}")
        return
    t_sync, t_nosync = out["t_sync"], out["t_nosync"]
    share = max(0.0, (t_sync - t_nosync) / t_sync)
    print(f"# torch {torch.__version__}, {MODE}, {world} rank(s) x {THREADS} thread(s), BLAS {out['blas']}, "
          f"global batch {GLOBAL_BATCH}, {out['params']} parameters, median of {ROUNDS} x {STEPS} steps, "
          f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"# step {t_sync * 1e3:.2f} ms with gradient sync, {t_nosync * 1e3:.2f} ms without")
    print(f"{MODE} ranks={world} threads={THREADS} rows_per_s={GLOBAL_BATCH / t_sync:.0f} comm_share={share:.3f} "
          f"step_ms={t_sync * 1e3:.2f} nosync_ms={t_nosync * 1e3:.2f} params={out['params']}")


if __name__ == "__main__":
    main()
