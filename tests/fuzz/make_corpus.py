#!/usr/bin/env python3
"""make_corpus.py [CLI] - regenerates the fuzz seed corpora tests/fuzz/corpus/<target>/.

Small valid inputs (a few KB per target): models, checkpoints and config.pbtxt
from the deepmoe CLI (CLI = build/deepmoe, deterministic with --seed and one
thread), tests/fixtures files, and hand-built .npy, IDX, safetensors and KServe
requests. Only the Python standard library. The input layouts the harnesses
expect (npy's mode byte, idx's length prefix, kserve_binary's header prefix)
are described in the harnesses, tests/fuzz/fuzz_<target>.c."""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLI = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "deepmoe")
TMP = tempfile.mkdtemp(prefix="deepmoe-corpus.")
TINY = ["--dim", "8", "--experts", "4", "--top-k", "2", "--hidden", "8"]   # fuzz_checkpoint.c's model


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def cli(*args):
    subprocess.run([CLI, *args], check=True, stdout=subprocess.DEVNULL, cwd=TMP)
    return TMP


def safetensors(tensors, meta=None):
    """tensors: [(name, dtype, shape, raw bytes)] -> the file's bytes."""
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def npy(descr, shape, raw, version=1):
    h = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))).encode()
    pre = 10 if version == 1 else 12
    h += b" " * (-(pre + len(h) + 1) % 64) + b"\n"
    size = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([version, 0]) + size + h + raw


def idx(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx_set(files):
    """The four IDX files behind fuzz_idx.c's prefix: three u16 lengths."""
    return struct.pack("<3H", *(len(f) for f in files[:3])) + b"".join(files)


def request_binary(header, tail=b"", header_len=None):
    """fuzz_kserve_binary.c's input: u32 prefix (low 24 bits: header length), then the body."""
    body = json.dumps(header, separators=(",", ":")).encode() if isinstance(header, dict) else header
    n = len(body) if header_len is None else header_len
    return struct.pack("<I", n) + body + tail


def f32(*v): return struct.pack("<%df" % len(v), *v)


PROM_PAGE = (b'# HELP nv_inference_count Number of inferences performed\n# TYPE nv_inference_count counter\n'
             b'nv_inference_count{model="moe_model",version="1"} 420\n'
             b'nv_inference_request_summary_us{model="moe_model",version="1",quantile="0.99"} 170\n'
             b'deepmoe_inference_batch_size_bucket{model="moe_model",version="1",le="+Inf"} 99\n'
             b'deepmoe_expert_routed_rows_total{model="moe_model",version="1",layer="0",expert="3"} 17\n'
             b'deepmoe_cold_start_seconds 0.015800\n')
TRACE_FILE = json.dumps({"traceEvents": [
    {"ph": "M", "pid": 0, "tid": 1, "name": "thread_name", "args": {"name": "main"}},
    {"ph": "X", "cat": "train", "name": "train step", "pid": 0, "tid": 1, "ts": 0.0, "dur": 100.0, "args": {"rows": 8}},
    {"ph": "X", "cat": "moe", "name": "moe layer", "pid": 0, "tid": 1, "ts": 10.0, "dur": 40.0},
    {"ph": "X", "cat": "moe", "name": "expert up gemm", "pid": 0, "tid": 2, "ts": 12.0, "dur": 7.5},
    {"ph": "b", "cat": "serve", "name": "queue wait", "id": "0x1", "pid": 0, "tid": 1, "ts": 3.0},
    {"ph": "e", "cat": "serve", "name": "queue wait", "id": "0x1", "pid": 0, "tid": 1, "ts": 9.0},
    {"ph": "C", "name": "expert load L0", "pid": 0, "tid": 0, "ts": 100.0, "args": {"e0": 0.5, "e1": 0.5}}],
    "displayTimeUnit": "ms"}).encode()


def _jsonl(records):
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()


_LOAD = [[0.125, 0.0, 0.25, 0.125, 0.25, 0.125, 0.0625, 0.0625], [0.5, 0.0, 0.0, 0.25, 0.25, 0.0, 0.0, 0.0]]
REPORT_CLASSIFY = _jsonl(
    [{"step": s, "time_s": s / 50, "startup_s": 1.0, "step_ms_p50": 20.1, "step_ms_p99": 31.5, "epoch": s / 235,
      "loss": 1.0 / s, "balance_loss": 0, "lr": 5e-4, "grad_norm": 2.5, "rows_per_s": 12000.0,
      "train_accuracy": 0.8, "expert_load": _LOAD, "expert_utilization": 0.4, "max_vio": 1.5,
      "sel_bias": [[0.001 * e for e in range(8)], [-0.001 * e for e in range(8)]], "rss": 3e8, "rss_peak": 3.1e8}
     for s in (10, 20, 30)] +
    [{"eval": True, "step": 30, "loss": 0.5, "accuracy": 0.81, "expert_load": _LOAD, "expert_utilization": 0.41,
      "max_vio": 1.4, "routing_accuracy": 0.2}])
REPORT_DIST = _jsonl(
    [{"step": 20, "time_s": 0.1, "loss": 0.3, "lr": 1e-3, "rows_per_s": 7e5, "expert_load": [[0.5, 0.5]],
      "expert_utilization": 1.0, "max_vio": 0.0, "rss": 1e8, "rss_peak": 1e8, "ranks": 2, "comm_s": 0.01,
      "compute_s": 0.09, "comm_share": 0.1, "bytes_sent": 123456},
     {"eval": True, "step": 20, "loss": 0.3, "mse": 0.02, "expert_load": [[0.5, 0.5]], "expert_utilization": 1.0,
      "max_vio": 0.0, "routing_accuracy": None}])


def main():
    shutil.rmtree(os.path.join(HERE, "corpus"), ignore_errors=True)

    # safetensors: every dtype, empty and zero-size tensors, metadata; a PyTorch-written fixture
    put("safetensors", "dtypes", safetensors([
        ("a", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6)),
        ("b", "F16", [4], struct.pack("<4H", 0x3c00, 0xc000, 0x7c00, 0x0001)),
        ("c", "BF16", [2, 2], struct.pack("<4H", 0x3f80, 0xbf80, 0x7f80, 0x0001)),
        ("d", "F64", [3], struct.pack("<3d", 0.5, -1e300, 2.0)),
        ("e", "I64", [2], struct.pack("<2q", -1, 7)),
        ("f", "U8", [3], b"\x01\x02\x03"), ("g", "BOOL", [1], b"\x01"),
        ("z", "F32", [0, 5], b""), ("s", "F32", [], f32(3.5))], {"format": "pt", "k": "v"}))
    put("safetensors", "empty", safetensors([]))
    put("safetensors", "meta_only", safetensors([], {"deepmoe.config": "{}"}))
    put("safetensors", "pytorch_e1", read(os.path.join(ROOT, "tests/fixtures/e1.safetensors")))

    # model: the seed layer, the DeepSeek variants, a classifier (embedding + head), a bare state dict
    put("model", "seed", read(os.path.join(cli("init", "--out", "m.safetensors", *TINY), "m.safetensors")))
    put("model", "v3", read(os.path.join(cli("init", "--out", "m.safetensors", "--dim", "8", "--experts", "4",
                                             "--top-k", "2", "--hidden", "4", "--router", "sigmoid", "--groups",
                                             "2", "--topk-groups", "1", "--selection-bias", "--route-scale", "2.5",
                                             "--expert-type", "swiglu", "--shared-experts", "1"), "m.safetensors")))
    put("model", "softmax", read(os.path.join(cli("init", "--out", "m.safetensors", "--dim", "4", "--experts", "2",
                                                  "--top-k", "1", "--hidden", "2", "--router", "softmax",
                                                  "--norm-topk"), "m.safetensors")))
    cli("train", "--data", "synthetic:dim=6,regimes=3,rows=60", "--task", "classify", "--dim", "4", "--experts",
        "2", "--top-k", "1", "--hidden", "4", "--layers", "1", "--batch", "16", "--steps", "1", "--threads", "1",
        "--out", "cls")
    put("model", "classifier", read(os.path.join(TMP, "cls", "model.safetensors")))
    put("model", "pytorch_seed_f16", read(os.path.join(ROOT, "tests/fixtures/seed_f16.safetensors")))
    # compressed experts: every weight type's parts (values, .scale, .idx) and metadata
    for t, extra in (("q8", []), ("q8g", ["--group", "32", "--router", "same"]), ("bf16", []), ("f16", []),
                     ("nm24", []), ("nm24_q8", []), ("nm24_bf16", ["--router", "same"])):
        wt = {"q8g": "q8", "nm24_q8": "nm24:q8", "nm24_bf16": "nm24:bf16"}.get(t, t)
        cli("init", "--out", "q.safetensors", "--dim", "32" if t == "q8g" else "8", "--experts", "4", "--top-k", "2",
            "--hidden", "8")
        cli("quantize", "--model", "q.safetensors", "--out", "qq.safetensors", "--type", wt, *extra)
        put("model", "wtype_" + t, read(os.path.join(TMP, "qq.safetensors")))

    # npy: byte 0 even = regular file, odd = pipe; every dtype and version
    arrays = {
        "f4_2x3": npy("<f4", [2, 3], f32(1, 2, 3, 4, 5, 6)),
        "f8_4": npy("<f8", [4], struct.pack("<4d", 1, -2, 3.5, 1e300)),
        "i4_2x2": npy("<i4", [2, 2], struct.pack("<4i", 1, -2, 16777216, 0)),
        "i8_3": npy("<i8", [3], struct.pack("<3q", 5, -5, 1 << 24)),
        "u1_5": npy("|u1", [5], bytes([0, 1, 127, 128, 255])),
        "i1_2": npy("|i1", [2], bytes([0x80, 0x7f])),
        "v2_f4": npy("<f4", [1, 2], f32(0.25, -0.5), version=2),
        "v3_f4": npy("<f4", [2], f32(7, 8), version=3),
        "empty_0x3": npy("<f4", [0, 3], b""),
    }
    for i, (name, data) in enumerate(sorted(arrays.items())):
        put("npy", "file_" + name, b"\x00" + data)
        if i % 2 == 0:
            put("npy", "pipe_" + name, b"\x01" + data)

    # idx: train 6 images 3x3 with labels 0..2, test 2; the same with gzip'd files
    images = lambda n: idx(0x803, [n, 3, 3], bytes((7 * i) % 256 for i in range(9 * n)))
    files = [images(6), idx(0x801, [6], bytes([0, 1, 2, 0, 1, 2])), images(2), idx(0x801, [2], bytes([2, 0]))]
    put("idx", "plain", idx_set(files))
    put("idx", "gzip", idx_set([gzip.compress(f, mtime=0) for f in files]))
    put("idx", "empty_test", idx_set(files[:2] + [idx(0x803, [0, 3, 3], b""), idx(0x801, [0], b"")]))

    # checkpoint: a run of fuzz_checkpoint.c's model (the same config, so it loads)
    cli("train", "--data", "synthetic:dim=8,regimes=4,rows=64", *TINY, "--batch", "16", "--steps", "2",
        "--threads", "1", "--out", "run")
    put("checkpoint", "step2", read(os.path.join(TMP, "run", "checkpoint", "state.safetensors")))

    # pbtxt: what deepmoe export writes, and the syntax the parser accepts
    cli("export", "--model", os.path.join(TMP, "run", "model.safetensors"), "--repository", "repo")
    put("pbtxt", "export", read(os.path.join(TMP, "repo", "moe_model", "config.pbtxt")))
    put("pbtxt", "example", b'name: "moe_model"\nbackend: "moe"\nmax_batch_size: 32\n'
        b'input [ { name: "input" data_type: TYPE_FP32 dims: [ 512 ] } ]\n'
        b'output [ { name: "output" data_type: TYPE_FP32 dims: [ 512 ] } ]\n'
        b'dynamic_batching { preferred_batch_size: [ 8, 16 ] max_queue_delay_microseconds: 500\n'
        b'  default_queue_policy { max_queue_size: 256 default_timeout_microseconds: 100000 '
        b'allow_timeout_override: true timeout_action: DELAY } preserve_ordering: true }\n'
        b'instance_group [ { count: 2 kind: KIND_CPU } ]\n'
        b'version_policy: { latest { num_versions: 1 } }\n'
        b'parameters { key: "threads" value { string_value: "2" } }\n')
    put("pbtxt", "syntax", b'# a comment\nname: "m"; # trailing { [\nplatform: \'pytorch_libtorch\',\n'
        b'max_batch_size: 0x10;\r\n\t\v\finput { name: "a", data_type: TYPE_FP32; dims: 3, },\n'
        b'input: [ < name: "y" data_type: TYPE_BF16 dims: [ 7 ] optional: true >, '
        b'{ name: "z" data_type: 11 dims: 1 dims: [2, -1] } ]\n'
        b'output < name: "p" data_type: TYPE_STRING dims: [ 1 ] >\n'
        b'dynamic_batching: < preferred_batch_size: 2 preferred_batch_size: [4, 8] >\n'
        b'instance_group [ { count: 2 }, { kind: KIND_AUTO count: 3 } ]\n'
        b'version_policy < specific { versions: 1 versions: [3, 5] } >\n')
    put("pbtxt", "all_versions", b'backend: "deepmoe"\nversion_policy { all { } }\n')

    # zip: request bodies in the content codings the server inflates, and a header value line
    zbody = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1, -2, 3e-3, 4]}]}).encode()
    put("zip", "gzip", gzip.compress(zbody, mtime=0))
    put("zip", "deflate", zlib.compress(zbody))
    put("zip", "accept", b"br;q=1, gzip;q=0.5, deflate\n" + zlib.compress(b"x" * 300))
    put("zip", "empty_gzip", gzip.compress(b"", mtime=0))

    # prom: Prometheus text pages as a server's /metrics writes them
    put("prom", "metrics", PROM_PAGE)
    put("prom", "escapes", b'x{path="C:\\\\a \\"q\\"",l="v,w",} NaN 1700000000000\r\nbig +Inf\n# c\nneg -Inf\n')

    # trace: Chrome trace-event files as --profile writes them
    put("trace", "spans", TRACE_FILE)
    put("trace", "array", b'[{"ph":"X","name":"a","pid":0,"tid":1,"ts":0,"dur":5},{"ph":"C","name":"c","ts":1,"args":{}}]')

    # report: metrics.jsonl of small runs (a classifier with evaluations, a distributed regression)
    put("report", "classify", REPORT_CLASSIFY)
    put("report", "dist", REPORT_DIST)

    # kserve_json: JSON-only requests
    reqs = {
        "flat": {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1, -2, 3e-3, 4]}]},
        "nested": {"id": "req-7", "inputs": [
            {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]},
            {"name": "b", "shape": [3], "datatype": "INT64", "data": [1, -9007199254740993, 3]},
            {"name": "c", "shape": [2], "datatype": "FP64", "data": [0.1, 1e300]},
            {"name": "d", "shape": [1, 2], "datatype": "UINT8", "data": [0, 255]}],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}, {"name": "routing_experts"}],
            "parameters": {"binary_data_output": False, "timeout": 1000}},
        "zero_rows": {"inputs": [{"name": "z", "shape": [0, 4], "datatype": "FP32", "data": []},
                                 {"name": "s", "shape": [], "datatype": "INT32", "data": [5]}]},
        "fp16_json": {"inputs": [{"name": "h", "shape": [1], "datatype": "FP16", "data": [1]}]},   # refused
        "bool": {"inputs": [{"name": "d", "shape": [1, 2], "datatype": "BOOL", "data": [True, False]}]},  # refused
    }
    for name, r in reqs.items():
        put("kserve_json", name, json.dumps(r).encode())

    # kserve_binary: JSON header + binary tails; raw binary (header length 0)
    mixed = {"inputs": [
        {"name": "d", "shape": [3], "datatype": "FP64", "parameters": {"binary_data_size": 24}},
        {"name": "h", "shape": [1, 3], "datatype": "FP16", "parameters": {"binary_data_size": 6}},
        {"name": "j", "shape": [1, 1], "datatype": "FP32", "data": [[42]]},
        {"name": "b", "shape": [3, 1], "datatype": "BF16", "parameters": {"binary_data_size": 6}},
        {"name": "i", "shape": [3], "datatype": "INT32", "parameters": {"binary_data_size": 12}}],
        "parameters": {"binary_data_output": True}}
    tail = (struct.pack("<3d", 1.5, -2, 0) + struct.pack("<3H", 0x3c00, 0xc000, 0) +
            struct.pack("<3H", 0x3fc0, 0xc000, 0) + struct.pack("<3i", -5, 0, 123456))
    put("kserve_binary", "mixed", request_binary(mixed, tail))
    put("kserve_binary", "fp32", request_binary(
        {"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}, f32(1, 2, 3, 4)))
    put("kserve_binary", "raw_fp32", request_binary(b"", f32(1, 2, 3, 4, 5, 6, 7, 8), header_len=0))
    put("kserve_binary", "raw_int64_2xn", request_binary(b"", struct.pack("<4q", 1, 2, 3, 4), header_len=0x15000000))

    shutil.rmtree(TMP)
    for t in sorted(os.listdir(os.path.join(HERE, "corpus"))):
        d = os.path.join(HERE, "corpus", t)
        sizes = [os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)]
        print("corpus/%s: %d inputs, %d bytes" % (t, len(sizes), sum(sizes)))


if __name__ == "__main__":
    main()
