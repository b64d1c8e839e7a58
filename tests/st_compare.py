#!/usr/bin/env python3
"""st_compare.py A B [TOL] - compares two safetensors files tensor by tensor.

Prints the largest relative difference, max|a-b| / max(max|a|, 1e-30) per
tensor, and exits 1 if a tensor is missing, of another shape, or off by more
than TOL (default 1e-5). Standard library only (the F32 tensors deepmoe
writes). Used by the distributed tests to compare a run of N ranks with one
process."""
import json
import struct
import sys
from array import array


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        if t["dtype"] != "F32":
            out[name] = (t["shape"], data[a:b])
            continue
        v = array("f")
        v.frombytes(data[a:b])
        out[name] = (t["shape"], v)
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: st_compare.py A B [TOL]")
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-5
    a, b = load(sys.argv[1]), load(sys.argv[2])
    worst, worst_name, bitwise = 0.0, "", True
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print("missing tensor %s" % name)
            sys.exit(1)
        (sa, va), (sb, vb) = a[name], b[name]
        if sa != sb or len(va) != len(vb):
            print("tensor %s: shapes %s and %s" % (name, sa, sb))
            sys.exit(1)
        if va != vb:
            bitwise = False
        if isinstance(va, bytes):
            continue
        scale = max(max((abs(x) for x in va), default=0.0), 1e-30)
        d = max((abs(x - y) for x, y in zip(va, vb)), default=0.0) / scale
        if d > worst:
            worst, worst_name = d, name
    print("max relative difference %.3g (%s)%s" % (worst, worst_name or "-", ", bitwise equal" if bitwise else ""))
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()
