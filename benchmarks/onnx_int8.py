"""Which onnxruntime static int8 settings pay off on this CPU: latency, throughput, accuracy, fused kernels.

Quantizes the exported `onnx_fp32` (artifacts/, from `make export`) once per variant below with
export.onnx_export.write_int8 (the exporter's own function, all 1,000 calibration images), then
times each file with plain onnxruntime (benchmarks/timing.py, not the project's evaluator):
batch-1 p50 at 1 thread and all cores, batch-64 throughput, accuracy on the whole test split, and
how many convolutions onnxruntime's optimizer left in float. Writes benchmarks/results/onnx_int8.md.

    .venv/bin/python benchmarks/onnx_int8.py      # ~5 minutes on 2 cores; run it on an idle machine
"""
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "onnx_int8.md"

BASE = {"format": "qdq", "activations": "uint8", "weights": "int8", "per_channel": True,
        "reduce_range": False, "calibration": "minmax"}
# Each variant changes the base (the export default) in one or two settings.
VARIANTS = {
    "default: QDQ u8 x s8, per-channel, MinMax": {},
    "QDQ s8 x s8 (the previous default)": {"activations": "int8"},
    "QOperator u8 x s8": {"format": "qoperator"},
    "QOperator s8 x s8": {"format": "qoperator", "activations": "int8"},
    "QDQ u8 x u8": {"weights": "uint8"},
    "QDQ u8 x s8, per-tensor": {"per_channel": False},
    "QDQ u8 x s8, reduce_range": {"reduce_range": True},
    "QDQ u8 x s8, entropy calibration": {"calibration": "entropy"},
    "QDQ u8 x s8, percentile calibration": {"calibration": "percentile"},
}
THROUGHPUT_BATCH = 64


def session(path, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def float_convs(path, workdir):
    """(Conv left in float, QLinearConv) after onnxruntime's graph optimizations (level: extended)."""
    import onnx
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(workdir / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    return ops["Conv"], ops["QLinearConv"]


def measure(path, test, cores, workdir):
    from benchmarks.timing import images_per_s, latency_ms
    one = test.images[:1].astype(np.float32)
    row = {}
    for threads in (1, cores):
        s = session(path, threads)
        name = s.get_inputs()[0].name
        row[f"b1_{threads}t"] = latency_ms(lambda: s.run(None, {name: one}))["p50"]
    batch = test.images[:THROUGHPUT_BATCH].astype(np.float32)
    row["throughput"] = images_per_s(lambda: s.run(None, {name: batch}), THROUGHPUT_BATCH)
    pred = np.concatenate([s.run(None, {name: test.images[i:i + 250].astype(np.float32)})[0].argmax(1)
                           for i in range(0, len(test), 250)])
    row["accuracy"] = float((pred == test.labels).mean())
    row["float_convs"], row["qlinear_convs"] = float_convs(path, workdir)
    return row


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from benchmarks.timing import machine_line
    from export.onnx_export import write_int8
    from pipeline import config, evalset, machine, manifest

    cfg = config.load(None, [])
    man_path = config.project_path(cfg.evaluate.manifest)
    fp32 = man_path.parent / manifest.find(manifest.read(man_path), "onnx_fp32")["path"]
    calibration, test = evalset.load_calibration(cfg).images, evalset.load_test(cfg)
    cores = machine.cores()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="onnx-int8-bench.") as tmp:
        workdir = Path(tmp)
        print(f"onnx_fp32: {fp32}", flush=True)
        rows["fp32 (tf2onnx)"] = {**measure(fp32, test, cores, workdir), "quantize_s": 0}
        for i, (label, change) in enumerate(VARIANTS.items()):
            path = workdir / f"variant{i}.onnx"
            t0 = time.perf_counter()
            write_int8(fp32, path, calibration, {**BASE, **change})
            rows[label] = {**measure(path, test, cores, workdir), "quantize_s": round(time.perf_counter() - t0, 1)}
            print(f"  {label}: {rows[label]}", flush=True)
        rows["fp32 again (drift check)"] = {**measure(fp32, test, cores, workdir), "quantize_s": 0}
    write(rows, cores, machine_line(), len(test))


def write(rows, cores, machine_text, n_test):
    base = rows["fp32 (tf2onnx)"]
    lines = [
        "# onnxruntime int8: which static quantization settings pay off",
        "",
        f"One run of `.venv/bin/python benchmarks/onnx_int8.py` on {machine_text}; "
        f"{time.strftime('%Y-%m-%d')}. Same exported `onnx_fp32`, quantized per row by the exporter's own "
        f"`write_int8` on the 1,000 calibration images; plain onnxruntime sessions (benchmarks/timing.py: 30 "
        f"warm-up + 300 timed runs, p50). Accuracy on all {n_test:,} test images of CIFAR-10 (JPEG q75 copy). "
        "`float convs` = Conv nodes onnxruntime's optimizer could not fuse into an integer kernel.",
        "",
        f"| variant | b1 1T ms | x fp32 | b1 {cores}T ms | batch-{THROUGHPUT_BATCH} img/s ({cores}T) | "
        f"accuracy | float convs / QLinearConv | quantize s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['b1_1t']:.3f} | {r['b1_1t'] / base['b1_1t']:.2f} | {r[f'b1_{cores}t']:.3f} "
                     f"| {r['throughput']:,.0f} | {r['accuracy']:.2%} | {r['float_convs']} / {r['qlinear_convs']} "
                     f"| {r['quantize_s']} |")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
