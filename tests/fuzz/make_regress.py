#!/usr/bin/env python3
"""make_regress.py DIR - writes the smallest inputs that triggered the memory
bugs of issue 8 into DIR/<target>/ (the fuzz harness that reaches each one).
They are committed; this script documents how each was made. Standard
library only."""
import json
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "regress")


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(descr, shape, data=b""):
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    total = (10 + len(d) + 1 + 63) // 64 * 64
    d = d + " " * (total - 10 - len(d) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + data


def safetensors(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


# 1. .npy through a pipe: u1 elements, 2^62 + 1 of them: n * sizeof(float)
#    wrapped to 4 bytes and the values read were written past the buffer.
#    (The npy harness: an odd first byte = read through a pipe.)
put("npy", "pipe-size-wrap", b"\x01" + npy("|u1", "(4611686018427387905,)", bytes(range(64))))
#    and a huge declared float32 shape with 16 bytes of data: 4 GB allocated up front.
put("npy", "pipe-huge-shape", b"\x01" + npy("<f4", "(1000000000,)", b"\0" * 16))

# 2. A ~130-byte model file whose config asks for 1024 layers x 4096 experts
#    and holds no tensor: built the model (minutes, GBs) before looking.
cfg = {"dim": 8, "n_experts": 4096, "top_k": 2, "hidden": 8, "n_layers": 1024}
put("model", "config-bigger-than-file", safetensors({"__metadata__": {"deepmoe.config": json.dumps(cfg)}}))
#    the same at 128 x 128, which validation allows and the file cannot hold
cfg = {"dim": 8, "n_experts": 128, "top_k": 2, "hidden": 8, "n_layers": 128}
put("model", "config-128x128", safetensors({"__metadata__": {"deepmoe.config": json.dumps(cfg)}}))

# 3. Signed overflow in the layout: every width at its limit, which
#    validation allowed one by one (the product overflows int64).
cfg = {"dim": 1048576, "n_experts": 4096, "top_k": 2, "hidden": 1048576, "n_layers": 1024}
put("model", "layout-overflow", safetensors({"__metadata__": {"deepmoe.config": json.dumps(cfg)}}))

# 5. KServe JSON: 88 bytes declaring [1, 4000000000] reserved 16 GB before
#    counting the data.
put("kserve_json", "huge-shape",
    b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4000000000],"data":[1,2,3]}]}')

# 6. IDX: a label file whose count says 900 million (1 byte each, 4.5 GB
#    allocated) in a few bytes. The idx harness splits its input into the four
#    files by a 6-byte prefix: the first three lengths, u16 little-endian.
images = struct.pack(">IIII", 0x803, 1, 2, 2) + bytes([0, 255, 128, 7])
labels = struct.pack(">II", 0x801, 900000000) + b"\x01\x02"
test_images = struct.pack(">IIII", 0x803, 1, 2, 2) + bytes(4)
test_labels = struct.pack(">II", 0x801, 1) + b"\x00"
parts = [images, labels, test_images, test_labels]
put("idx", "label-count-huge", struct.pack("<3H", *map(len, parts[:3])) + b"".join(parts))
#    and an image file declaring 2^31-1 images of 28x28
images = struct.pack(">IIII", 0x803, 0x7FFFFFFF, 28, 28) + bytes(16)
parts = [images, labels, test_images, test_labels]
put("idx", "image-count-huge", struct.pack("<3H", *map(len, parts[:3])) + b"".join(parts))
