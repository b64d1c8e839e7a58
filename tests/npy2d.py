"""npy2d.py - float32 [n, d] .npy files (numpy's v1.0 layout) as lists of rows, for the
standard-library-only test scripts (test_serve.py, soak.py)."""
import re, struct

def write_npy(path, rows):
    n, d = len(rows), len(rows[0])
    head = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (n, d)
    head += " " * (63 - (10 + len(head)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode())
        for r in rows: f.write(struct.pack("<%df" % d, *r))

def read_npy(path):
    b = open(path, "rb").read()
    hl = struct.unpack("<H", b[8:10])[0]
    shape = tuple(int(v) for v in re.search(r"\((\d+), (\d+)\)", b[10:10 + hl].decode()).groups())
    vals = struct.unpack("<%df" % (shape[0] * shape[1]), b[10 + hl:])
    return [list(vals[i * shape[1]:(i + 1) * shape[1]]) for i in range(shape[0])]
