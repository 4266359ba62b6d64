"""onnxruntime vs OpenVINO on the same exported ONNX files: same images, threads and latency method.

The ONNX fp32 and int8 artifacts of artifacts/manifest.json (`make export`) run in onnxruntime's CPU
provider and in OpenVINO's CPU plugin, each at 1 thread and all cores: batch-1 p50 latency
(benchmarks/timing.py), batch-64 throughput, and top-1 accuracy on the whole test split (a check
that both computed the same model). OpenVINO runs f32 models in bf16 on CPUs with native bf16
unless told otherwise, so its precision is pinned per row with INFERENCE_PRECISION_HINT (f32, then
bf16); the int8 file's non-quantized ops follow the same hint. Writes benchmarks/results/runtime_peers.md.

OpenVINO is a benchmark-only dependency: `.venv/bin/pip install -e ".[bench]"`.

    .venv/bin/python benchmarks/runtime_peers.py      # ~5 minutes on 2 cores; run it on an idle machine
"""
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "runtime_peers.md"
BATCH = 64
# (artifact, runtime, precision the runtime is told to compute in); ratios pair rows of one precision.
ROWS = (
    ("onnx_fp32", "onnxruntime", "f32"),
    ("onnx_fp32", "openvino", "f32"),
    ("onnx_fp32", "openvino", "bf16"),
    ("onnx_int8", "onnxruntime", "int8"),
    ("onnx_int8", "openvino", "int8"),       # float parts in f32
    ("onnx_int8", "openvino", "int8+bf16"),  # float parts in bf16
)


def onnxruntime_runner(path, threads, batch, precision):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_runner(path, threads, batch, precision):
    """A compiled model with a static batch (OpenVINO's advice for CPU latency) and one stream."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape([batch, 32, 32, 3])
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if "bf16" in precision else "f32"})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[compiled.output(0)]


RUNTIMES = {"onnxruntime": onnxruntime_runner, "openvino": openvino_runner}


def measure(path, runtime, precision, test, cores):
    from benchmarks.timing import images_per_s, latency_ms
    one = test.images[:1].astype(np.float32)
    row = {}
    for threads in sorted({1, cores}):
        run = RUNTIMES[runtime](path, threads, 1, precision)
        row[f"b1_{threads}t"] = latency_ms(lambda: run(one))["p50"]
    run = RUNTIMES[runtime](path, cores, BATCH, precision)
    batch = test.images[:BATCH].astype(np.float32)
    row["throughput"] = images_per_s(lambda: run(batch), BATCH)
    n = len(test) // BATCH * BATCH  # static batch: the last partial batch is left out of the accuracy
    pred = np.concatenate([run(test.images[i:i + BATCH].astype(np.float32)).argmax(1) for i in range(0, n, BATCH)])
    row["accuracy"], row["accuracy_images"] = float((pred == test.labels[:n]).mean()), n
    return row


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import onnxruntime
    import openvino

    from benchmarks.timing import machine_line
    from pipeline import config, evalset, machine, manifest

    cfg = config.load(None, [])
    man_path = config.project_path(cfg.evaluate.manifest)
    man = manifest.read(man_path)
    test, cores = evalset.load_test(cfg), machine.cores()
    results = []
    for artifact, runtime, precision in ROWS:
        path = man_path.parent / manifest.find(man, artifact)["path"]
        results.append(((artifact, runtime, precision), measure(path, runtime, precision, test, cores)))
        print(f"  {artifact} {runtime} {precision}: {results[-1][1]}", flush=True)
    versions = f"onnxruntime {onnxruntime.__version__}, OpenVINO {openvino.__version__}"
    write(results, cores, machine_line(), versions, machine.native_bf16())


def write(results, cores, machine_text, versions, bf16):
    by_key = dict(results)
    ort_of = {"onnx_fp32": by_key[("onnx_fp32", "onnxruntime", "f32")],
              "onnx_int8": by_key[("onnx_int8", "onnxruntime", "int8")]}
    lines = [
        "# onnxruntime vs OpenVINO on the same ONNX files",
        "",
        f"One run of `.venv/bin/python benchmarks/runtime_peers.py` on {machine_text} (native bf16: "
        f"{'yes' if bf16 else 'no'}); {versions}; {time.strftime('%Y-%m-%d')}. Same exported files, same "
        "test images, same latency method (benchmarks/timing.py: 30 warm-up + 300 timed runs, p50). OpenVINO: "
        "CPU plugin, static batch, 1 stream, precision pinned by INFERENCE_PRECISION_HINT. `ORT / OV` = "
        "onnxruntime's time over OpenVINO's for the same file (above 1: onnxruntime is slower); "
        "bf16 rows are not the same precision as onnxruntime's, so their ratio is a speed-up on offer, "
        "not a like-for-like comparison.",
        "",
        f"| file | runtime | computes in | b1 1T ms | ORT / OV (1T) | b1 {cores}T ms | ORT / OV ({cores}T) "
        f"| batch-{BATCH} img/s ({cores}T) | ORT / OV (batch) | top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (artifact, runtime, precision), r in results:
        base = ort_of[artifact]
        ratio = (lambda key, inv=False: "-" if runtime == "onnxruntime" else
                 f"{(r[key] / base[key]) if inv else (base[key] / r[key]):.2f}")
        lines.append(f"| {artifact} | {runtime} | {precision} | {r['b1_1t']:.3f} | {ratio('b1_1t')} "
                     f"| {r[f'b1_{cores}t']:.3f} | {ratio(f'b1_{cores}t')} | {r['throughput']:,.0f} "
                     f"| {ratio('throughput', inv=True)} | {r['accuracy']:.2%} |")
    lines += ["", f"Top-1 on the first {results[0][1]['accuracy_images']:,} test images of CIFAR-10 "
              "(JPEG q75 copy), whole batches of 64."]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
