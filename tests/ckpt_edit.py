#!/usr/bin/env python3
"""ckpt_edit.py IN OUT [--keep-crc] [--raw HEX] [KEY=JSON ...] - rewrites the
run state of a deepmoe checkpoint, as a tampered or foreign file would look:
each KEY=JSON sets (or, with KEY=, removes) a field of the run state JSON;
--raw replaces the caller state with raw bytes (hex); the CRC-32 is then
recomputed so that only the run-state checks can refuse the file, unless
--keep-crc leaves the old one (the checksum check must refuse it). The CRC
covers the data section in file order, then the config, step and state
strings (src/train/checkpoint.c). Standard library only."""
import json
import struct
import sys
import zlib

args = sys.argv[1:]
src, dst, edits = args[0], args[1], args[2:]
keep_crc = "--keep-crc" in edits
raw = None
if "--raw" in edits:
    raw = edits[edits.index("--raw") + 1]
    edits = [e for e in edits if e not in ("--raw", raw)]
edits = [e for e in edits if e != "--keep-crc"]
blob = open(src, "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
header = json.loads(blob[8:8 + n])
data = blob[8 + n:]
meta = header["__metadata__"]
if raw is not None:
    meta["deepmoe.blob"] = raw
else:
    rs = json.loads(bytes.fromhex(meta["deepmoe.blob"]))
    for e in edits:
        k, v = e.split("=", 1)
        if v == "":
            rs.pop(k, None)
        else:
            rs[k] = json.loads(v)
    meta["deepmoe.blob"] = json.dumps(rs, separators=(",", ":")).encode().hex()
if not keep_crc:
    crc = 0
    spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    for b, e in spans:
        crc = zlib.crc32(data[b:e], crc)
    for k in ("deepmoe.config", "deepmoe.step", "deepmoe.blob"):
        crc = zlib.crc32(meta[k].encode(), crc)
    meta["deepmoe.crc32"] = "%08x" % crc
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + data)
