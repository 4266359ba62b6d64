"""Where an artifact's batch-1 time goes, from its runtime's own profiler: the top operators by time.

onnxruntime: session profiling (a Chrome-trace JSON of every kernel run), summed per node and per
operator type over `runs` batch-1 inferences after warm-up. LiteRT's Python API has no op profiler
(its benchmark_model binary has --enable_op_profiling; the pip wheel does not ship it), and
TensorFlow's profiler writes TensorBoard traces: those formats say so instead of guessing.
"""
import collections
import json
import tempfile
from pathlib import Path

import numpy as np

from pipeline import artifacts

TOP = 10
UNAVAILABLE = {  # by the artifact table's runtime column, for kinds whose `profiler` is empty
    "litert": "LiteRT's Python API exposes no op profiler; use its benchmark_model --enable_op_profiling=true",
    "tensorflow": "TensorFlow's profiler writes TensorBoard traces (tf.profiler.experimental.start/stop)",
}


def onnx_profile(path, threads, image, runs, warmup=10, fmt="onnx"):
    import onnxruntime as ort

    from pipeline.runtimes import ort_session_options
    with tempfile.TemporaryDirectory(prefix="ort-profile.") as tmp:
        opts = ort_session_options(fmt, threads)  # the runner's session (an .ort file's fusions replayed)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image[None].astype(np.float32)}
        for _ in range(warmup):
            session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    # Kernel events only ("<node>_kernel_time"); the warm-up runs are in the trace too: skip them by run count.
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (runs + warmup)
    kernels = kernels[per_run * warmup:]
    by_node, by_type, node_type = collections.Counter(), collections.Counter(), {}
    for e in kernels:
        node = e["name"][:-len("_kernel_time")]
        node_type[node] = e["args"].get("op_name", "?")
        by_node[node] += e["dur"]
        by_type[node_type[node]] += e["dur"]
    total = sum(by_type.values())

    def table(counter, label):
        return [{label: k, **({"op_type": node_type[k]} if label == "node" else {}),
                 "ms_per_run": round(v / runs / 1e3, 4), "share": round(v / total, 4)}
                for k, v in counter.most_common(TOP)]

    return {"tool": f"onnxruntime {ort.__version__} session profiling", "runs": runs, "threads": threads,
            "kernel_ms_per_run": round(total / runs / 1e3, 4), "by_op_type": table(by_type, "op_type"),
            "top_nodes": table(by_node, "node")}


def profile(entry, path, threads, image, runs):
    """The runtime's op profile of one artifact at batch 1, or {"unavailable": why}."""
    row = artifacts.get(entry["name"])
    if row.profiler == "onnxruntime":
        return onnx_profile(path, threads, image, runs, fmt=entry["format"])
    return {"unavailable": UNAVAILABLE.get(row.runtime, "no profiler for this runtime")}
