#!/usr/bin/env python3
"""train_phases.py TRACE.json - where a training run's time goes, by phase, from
a `deepmoe train --profile` trace: each span's self time (less the spans
nested in it on its thread) summed over every thread and assigned to a phase by
its op name, and everything inside an evaluation or a checkpoint write charged
to that. Prints a markdown table: the phase, ms per step, and its share of all
traced time.
Usage: deepmoe train ... --profile t.json && bench/train_phases.py t.json"""
import collections
import json
import sys

PHASES = [
    ("router (GEMM + top-k)", {"router gemm", "top-k", "router", "quantize rows"}),
    ("dispatch", {"dispatch"}),
    ("expert GEMMs, forward", {"expert up gemm", "expert down gemm"}),
    ("expert LayerNorm + ReLU, forward", {"expert mid"}),
    ("weight-gradient GEMMs (experts)", {"expert down dW gemm", "expert up dW gemm"}),
    ("input-gradient GEMMs (experts)", {"expert down dX gemm", "expert up dX gemm"}),
    ("LayerNorm + ReLU backward (experts)", {"expert mid backward"}),
    ("router backward (weights, params, input)", {"routing weight grad", "router backward", "router params grad"}),  # "router params grad": before d90b20f
    ("combine and gather (with the router's parameter gradients)", {"combine", "gather input grad",
                                                                  "router grad + input grad"}),
    ("embedding, head, loss (forward + backward)", {"embed forward", "embed backward", "head forward", "head backward",
                                                     "loss", "linear gemm", "layernorm", "embed", "head", "balance loss"}),
    ("AdamW", {"adamw"}),
    ("re-pack (packed GEMM copies)", {"repack"}),
    ("AdamW + re-pack, fused (experts, a slice at a time)", {"adamw + repack"}),
    ("zero grads, grad norm, the rest of the step", {"zero grads", "grad norm", "optimizer", "train step", "check input",
                                                     "reserve buffers", "mask grads", "aux-free update", "moe layer",
                                                     "moe layer backward", "experts", "experts backward", "expert",
                                                     "expert backward", "forward", "preprocess"}),
    ("data: gather, augment, preprocess", {"batch"}),
    ("logging", {"log"}),
    ("evaluation", {"eval"}),
    ("checkpoint write", {"checkpoint write"}),
    ("communication (distributed)", {"grad sync", "grad sync wait", "gather params", "exchange", "update barrier"}),
]
OWNER = {n: p for p, names in PHASES for n in names}
CHARGE_TO = {"eval": "evaluation", "checkpoint write": "checkpoint write"}   # all inside goes there

t = json.load(open(sys.argv[1]))
spans = [e for e in t["traceEvents"] if e.get("ph") == "X"]
lanes = collections.defaultdict(list)
for e in spans:
    lanes[(e["pid"], e["tid"])].append(e)
self_t = collections.Counter()
unknown = collections.Counter()
steps = sum(e["name"] == "train step" for e in spans)
for lane in lanes.values():
    lane.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack = []
    for e in lane:
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"] + 0.002:
            stack.pop()
        e["self"] = e["dur"]
        e["charge"] = stack[-1]["charge"] if stack else None
        if e["name"] in CHARGE_TO and not e["charge"]:
            e["charge"] = CHARGE_TO[e["name"]]
        if stack:
            stack[-1]["self"] -= e["dur"]
        stack.append(e)
    for e in lane:
        phase = e["charge"] or OWNER.get(e["name"])
        if phase is None:
            unknown[e["name"]] += e["self"]
            phase = "other"
        self_t[phase] += max(e["self"], 0)
total = sum(self_t.values())
print("| phase | ms per step | share |")
print("|---|---:|---:|")
for p, _ in PHASES + [("other", None)]:
    if self_t[p] > 0:
        print("| %s | %.2f | %.1f%% |" % (p, self_t[p] / 1e3 / max(steps, 1), 100 * self_t[p] / total))
print("| **all traced time, both threads** | %.2f | 100%% |" % (total / 1e3 / max(steps, 1)))
print("\n%d steps; %d threads; %.0f ms traced from first span to last" % (
    steps, len(lanes), (max(e["ts"] + e["dur"] for e in spans) - min(e["ts"] for e in spans)) / 1e3))
if unknown:
    print("ops with no phase: " + ", ".join("%s %.1f ms" % (k, v / 1e3) for k, v in unknown.most_common(5)))
