#!/usr/bin/python3
"""gen_quant_fixtures.py - PyTorch reference fixtures for the compressed weight types.

Usage:  /usr/bin/python3 tests/gen_quant_fixtures.py tests/fixtures/quant
        (Debian's python3-torch; `make fixtures` runs this after gen_fixtures.py.)

tests/test_quant_parity.c checks deepmoe's reference quantizers and every ISA's
GEMM of each type against what this script computes with PyTorch, written
from the semantics in src/kernels/wtype.h and nothing of deepmoe's C code:

  bf16  W.to(torch.bfloat16) (round to nearest even); C = A_bf16 . W_bf16^T + bias,
        A rounded to bf16 the same way, products summed in float64
  f16   W.half() (IEEE half, nearest even, subnormals kept); C = A . W_f16^T + bias,
        A in float32, products summed in float64
  q8    per row n of W and group g of G columns along K (G = 0: the whole row):
        amax = max |w|, scale = amax / 127 (float32), q = clamp(round(w / scale), -127, 127)
        (amax 0: scale 0, q 0); per row of A: amax = max |a|, sa = amax / 127,
        qa = clamp(round(a * (127 / amax)), -127, 127) (float32 arithmetic; a zero
        row gives 0); isum_g = sum over the group of qa * q (exact: float64 holds
        these integers), C = sum_g isum_g * (sa * scale[n, g]) + bias, the sum in
        float64 (sa * scale rounded to float32 as the semantics' product is).
torch.round rounds halves to even, as C's rint does.

Shapes (awkward on purpose: no multiple of 8 or 16 in N, K tails past every
SIMD width and past the group size): case s1 M=5 N=24 K=40, case s2 M=3 N=17
K=72. Each has bias. Some rows are crafted:
  W row 0   exact halves for q8: amax = 127/128 in every group of 32 and the
            rest k/2 * 2^-7, so w / scale is exactly a half (round half to even)
  W row 1   bf16 ties (1 + 2^-8, 1 + 3 * 2^-8, ...) and values past bf16's mantissa
  W row 2   f16 ties (1 + 2^-11, ...), f16 subnormals (1e-6, -3e-7) and tiny values
            that round to f16 zero
  W row 3   all zero (q8 scale 0)
  A row 0   exact halves for the activation quantization (amax 127/128: 127/amax = 128)
  A row 1   all zero
The remaining values are uniform in [-1, 1) (W) and [-2, 2) (A).

Per case NAME the script writes (all .npy, C order):
  NAME.W.npy       [N, K] float32, the source weights
  NAME.A.npy       [M, K] float32, the activations
  NAME.bias.npy    [N]    float32
  NAME.bf16.bits.npy  [N, 2K] uint8: W.to(bfloat16)'s bit patterns, little-endian bytes
  NAME.bf16.C.npy  [M, N] float32 expected output (float64 rounded once)
  NAME.f16.bits.npy   [N, 2K] uint8: W.half()'s bit patterns, little-endian bytes
  NAME.f16.C.npy   [M, N]
  NAME.q8gG.q.npy     [N, K] int8 (G = 0: per-row scales; G = 32: groups of 32)
  NAME.q8gG.scale.npy [N, ceil(K / G)] float32
  NAME.q8gG.C.npy     [M, N]
(16-bit patterns are stored as bytes because deepmoe's .npy reader has no
uint16; test_quant_parity.c reassembles them.) Deterministic (fixed seed).
"""
import os
import sys

import numpy as np
import torch

CASES = [("s1", 5, 24, 40), ("s2", 3, 17, 72)]
GROUPS = [0, 32]


def save(path, a, dtype):
    a = np.ascontiguousarray(np.asarray(a, dtype=dtype))
    np.save(path, a)


def crafted_weights(N, K, gen):
    W = torch.rand(N, K, generator=gen, dtype=torch.float32) * 2 - 1
    # row 0: exact halves for q8, per row and per group of 32
    r = torch.tensor([((k % 37) - 18) / 2.0 for k in range(K)], dtype=torch.float32)
    r = r.clamp(-126.5, 126.5)
    for g0 in range(0, K, 32):
        r[g0] = 127.0 if (g0 // 32) % 2 == 0 else -127.0
    W[0] = r / 128.0
    # row 1: bf16 ties and values past bf16's 8 significant bits
    ties = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 0.5 + 2**-9, 1 + 2**-8 + 2**-20,
            0.1, -0.3, 1 - 2**-9]
    for j, v in enumerate(ties):
        W[1, j] = v
    # row 2: f16 ties, subnormals, values rounding to f16 zero
    f16 = [1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 1e-6, -3e-7, 2**-26, 1e-9, 2**-25 + 2**-30,
           2**-25, 65519.0 / 65536]
    for j, v in enumerate(f16):
        W[2, j] = v
    # row 3: zero
    W[3] = 0.0
    return W


def crafted_inputs(M, K, gen):
    A = torch.rand(M, K, generator=gen, dtype=torch.float32) * 4 - 2
    r = torch.tensor([((3 * k % 41) - 20) / 2.0 for k in range(K)], dtype=torch.float32)
    r[5] = 127.0
    r[K - 3] = -127.0
    A[0] = r / 128.0
    A[1] = 0.0
    return A


def bits_bytes(t16):
    """A 16-bit tensor's bit patterns as [N, 2K] little-endian bytes."""
    b = t16.contiguous().view(torch.int16).numpy().astype("<i2")
    return b.view(np.uint8).reshape(t16.shape[0], -1)


def q8_weights(W, G):
    """Per row and group: scale = amax / 127, q = clamp(round(w / scale), +-127)."""
    N, K = W.shape
    G_ = G if G > 0 else K
    ng = (K + G_ - 1) // G_
    q = torch.zeros(N, K, dtype=torch.int8)
    scale = torch.zeros(N, ng, dtype=torch.float32)
    for g in range(ng):
        w = W[:, g * G_:(g + 1) * G_]
        amax = w.abs().amax(dim=1)                       # float32
        s = amax / 127.0                                 # float32 division
        safe = torch.where(s > 0, s, torch.ones_like(s))
        v = torch.round(w / safe.unsqueeze(1))           # float32 division, half to even
        v = torch.where((s > 0).unsqueeze(1), v, torch.zeros_like(v))
        q[:, g * G_:(g + 1) * G_] = v.clamp(-127, 127).to(torch.int8)
        scale[:, g] = s
    return q, scale


def q8_gemm(A, q, scale, bias, G):
    M, K = A.shape
    G_ = G if G > 0 else K
    ng = scale.shape[1]
    amax = A.abs().amax(dim=1)                           # float32
    sa = amax / 127.0
    inv = torch.where(amax > 0, 127.0 / torch.where(amax > 0, amax, torch.ones_like(amax)),
                      torch.zeros_like(amax))           # float32
    qa = torch.round(A * inv.unsqueeze(1)).clamp(-127, 127)
    C = torch.zeros(M, q.shape[0], dtype=torch.float64)
    for g in range(ng):
        sl = slice(g * G_, (g + 1) * G_)
        isum = qa[:, sl].double() @ q[:, sl].double().T  # exact integers
        assert (isum.abs() < 2**24).all()
        s = (sa.unsqueeze(1) * scale[:, g].unsqueeze(0))  # float32 product [M, N]
        C += isum * s.double()
    return C + bias.double()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: /usr/bin/python3 tests/gen_quant_fixtures.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1234)
    for name, M, N, K in CASES:
        W = crafted_weights(N, K, gen)
        A = crafted_inputs(M, K, gen)
        bias = torch.rand(N, generator=gen, dtype=torch.float32) - 0.5
        p = lambda s: os.path.join(outdir, f"{name}.{s}.npy")
        save(p("W"), W.numpy(), np.float32)
        save(p("A"), A.numpy(), np.float32)
        save(p("bias"), bias.numpy(), np.float32)

        # bf16: weights and activations rounded to nearest even
        Wb = W.to(torch.bfloat16)
        Ab = A.to(torch.bfloat16)
        # the crafted ties went to even
        assert Wb[1, 0].item() == 1.0 and Wb[1, 1].item() == 1 + 2**-6, (Wb[1, :2])
        Cb = Ab.double() @ Wb.double().T + bias.double()
        save(p("bf16.bits"), bits_bytes(Wb), np.uint8)
        save(p("bf16.C"), Cb.numpy(), np.float32)

        # f16: weights rounded, fp32 activations
        Wh = W.half()
        assert Wh[2, 0].item() == 1.0 and Wh[2, 1].item() == 1 + 2**-9, (Wh[2, :2])
        assert Wh[2, 3].item() != 0 and abs(Wh[2, 3].item()) < 2**-14  # subnormal
        Ch = A.double() @ Wh.double().T + bias.double()
        save(p("f16.bits"), bits_bytes(Wh), np.uint8)
        save(p("f16.C"), Ch.numpy(), np.float32)

        for G in GROUPS:
            q, scale = q8_weights(W, G)
            if G == 0 or K > G:
                # row 0's crafted halves: w / scale is exactly k / 2
                assert scale[0, 0].item() == 2.0**-7, scale[0]
            assert (scale[3] == 0).all() and (q[3] == 0).all()
            C = q8_gemm(A, q, scale, bias, G)
            # the reference is near the fp32 product on the dequantized weights
            G_ = G if G > 0 else K
            deq = q.float() * scale.repeat_interleave(G_, dim=1)[:, :K]
            C32 = A.double() @ deq.double().T + bias.double()
            assert (C - C32).abs().max() < 0.05 * C32.abs().max(), (name, G)
            save(p(f"q8g{G}.q"), q.numpy(), np.int8)
            save(p(f"q8g{G}.scale"), scale.numpy(), np.float32)
            save(p(f"q8g{G}.C"), C.numpy(), np.float32)
        print(f"  {name}: M={M} N={N} K={K}: bf16, f16, q8 G={GROUPS}")
    total = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
    print(f"wrote {len(CASES)} cases to {outdir} ({total} bytes)")


if __name__ == "__main__":
    main()
