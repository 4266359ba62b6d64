"""Calibration you can see: int8 top-1 against calibration method and number of calibration images.

    from evaluate.calibration_sweep import sweep, write
    result = sweep(manifest_path, manifest, cfg, test.images, test.labels)
    write(result, "reports")   # calibration_sweep.md + calibration_sweep.png

The manifest's onnx_fp32 artifact (sha256-verified) is quantized by pipeline.onnx_quantize.write_int8
with the export's own int8 settings (int8_settings(cfg.export)), only the calibration method
replaced, on `size` images of the calibration set the manifest declares (sha256-checked; stored
class by class; pipeline.sampling.spread takes every class). Each int8 copy and the float
model are scored on the given test images in onnxruntime (batch 250, all cores).

This is for *seeing* how many calibration images are enough, not for choosing: the export's
default method is not picked from the test split, and neither should a user pick one from this table.
"""
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import atomic, evalset, machine
from pipeline import config as config_mod
from pipeline import manifest as manifest_mod
from pipeline.errors import PipelineError

SIZES = (25, 100, 300, 1000)
METHODS = ("minmax", "entropy", "percentile")
BATCH = 250
MD_NAME = "calibration_sweep.md"
PNG_NAME = "calibration_sweep.png"


def _say(progress, text):
    if progress:
        progress(text)


def _calibration(manifest_path, manifest, cfg):
    """(Split, record) of the calibration set the manifest names, once its file matches the recorded sha256."""
    record = manifest.get("calibration")
    if not isinstance(record, dict) or not {"source", "sha256"} <= set(record):
        raise PipelineError(f"{manifest_path}: lacks \"calibration\": {{\"source\", \"sha256\"}}; export again")
    path = config_mod.project_path(record["source"])
    if not path.is_file():
        raise PipelineError(f"{path}: the calibration set {manifest_path} names is missing")
    digest = atomic.sha256_file(path)
    if digest != record["sha256"]:
        raise PipelineError(f"{path}: calibration set sha256 {digest[:12]}... does not match the "
                            f"{str(record['sha256'])[:12]}... recorded in {manifest_path}; it changed since export")
    # Load the file just checked, whatever data.calibration says now.
    here = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, calibration=str(record["source"])))
    calib = evalset.load_calibration(here)
    return calib, {"source": record["source"], "sha256": record["sha256"], "images": len(calib)}


def _top1_accuracy(name, model_path, images, labels):
    from evaluate.accuracy import predict_top1
    from pipeline.runtimes import OnnxRunner
    runner = OnnxRunner(name, model_path, machine.cores())
    top1, _ = predict_top1(name, runner, images, batch=BATCH, progress=None)
    return float(np.mean(top1 == labels))


def _check_arguments(sizes, methods):
    known = set(METHODS)
    bad = [m for m in methods if m not in known]
    if bad or not methods:
        raise PipelineError(f"calibration sweep: unknown method(s) {bad or '(none given)'}; "
                            f"known: {', '.join(METHODS)}")
    if not sizes or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1 for s in sizes):
        raise PipelineError(f"calibration sweep: sizes must be positive whole numbers, got {list(sizes)}")
    return sorted(set(int(s) for s in sizes)), list(dict.fromkeys(methods))


def _same_models(made, methods, sizes):
    """Notes for pairs of methods that made byte-identical int8 models at every size."""
    notes = []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            if sizes and all(made[a, s] == made[b, s] for s in sizes):
                why = ""
                if {a, b} == {"minmax", "entropy"}:
                    why = (": onnxruntime's Entropy calibrator, at its defaults (num_bins = num_quantized_bins "
                           "= 128), has a single candidate threshold, the full range, which is MinMax")
                notes.append(f"{b} made byte-identical int8 models to {a} at every size{why}")
    return notes


def sweep(manifest_path, manifest, cfg, test_images, test_labels, sizes=SIZES, methods=METHODS, progress=print):
    """Quantize the manifest's onnx_fp32 once per (method, size) and score each on the test images.

    Returns {"float_accuracy", "calibration": {source, sha256, images}, "rows": [{"method", "images",
    "accuracy", "drop_pp", "quantize_s"}], "test_images", "export_default", "settings", "notes",
    "seconds"}. Accuracies are fractions; drop_pp = (float - int8) x 100. Sizes larger than the
    calibration set are skipped with a note.
    """
    from pipeline import onnx_quantize, sampling

    started = time.perf_counter()
    sizes, methods = _check_arguments(sizes, methods)
    test_images, test_labels = np.asarray(test_images), np.asarray(test_labels)
    if len(test_images) == 0 or len(test_images) != len(test_labels):
        raise PipelineError(f"calibration sweep: {len(test_images)} test images and {len(test_labels)} labels")
    fp32_path = manifest_mod.verify(manifest_path, manifest_mod.find(manifest, "onnx_fp32"))
    calib, record = _calibration(manifest_path, manifest, cfg)

    notes = []
    usable = [s for s in sizes if s <= len(calib)]
    for s in sizes:
        if s > len(calib):
            notes.append(f"{s} images skipped: the calibration set has only {len(calib)}")
            _say(progress, f"calibration sweep: {notes[-1]}")

    base = onnx_quantize.int8_settings(cfg.export)
    _say(progress, f"calibration sweep: onnx_fp32 on {len(test_images)} test images")
    float_accuracy = _top1_accuracy("onnx_fp32", fp32_path, test_images, test_labels)
    _say(progress, f"  float: {float_accuracy * 100:.2f}%")

    rows, made = [], {}
    with tempfile.TemporaryDirectory(prefix="calibration_sweep_") as tmp:
        for method in methods:
            settings = {**base, "calibration": method}
            for size in usable:
                images = calib.images[sampling.spread(calib.labels, size)]
                out = Path(tmp) / f"int8_{method}_{size}.onnx"
                t0 = time.perf_counter()
                onnx_quantize.write_int8(fp32_path, out, images, settings)
                quantize_s = time.perf_counter() - t0
                accuracy = _top1_accuracy(f"int8 {method}/{size}", out, test_images, test_labels)
                made[method, size] = atomic.sha256_file(out)
                out.unlink()
                rows.append({"method": method, "images": int(len(images)), "accuracy": round(accuracy, 6),
                             "drop_pp": round((float_accuracy - accuracy) * 100, 2),
                             "quantize_s": round(quantize_s, 2)})
                _say(progress, f"  {method:>10} x {len(images):>4} images: {accuracy * 100:.2f}% "
                               f"(drop {rows[-1]['drop_pp']:+.2f} pp), quantized in {quantize_s:.1f} s")
    for note in _same_models(made, methods, usable):
        notes.append(note)
        _say(progress, f"calibration sweep: {note}")
    return {"float_accuracy": round(float_accuracy, 6), "calibration": record, "rows": rows,
            "test_images": int(len(test_images)), "export_default": base["calibration"],
            "settings": {k: v for k, v in base.items() if k != "calibration"}, "notes": notes,
            "seconds": round(time.perf_counter() - started, 1)}


# ---------------------------------------------------------------- report

def _grid(result):
    methods = list(dict.fromkeys(r["method"] for r in result["rows"]))
    sizes = sorted({r["images"] for r in result["rows"]})
    cell = {(r["method"], r["images"]): r for r in result["rows"]}
    return methods, sizes, cell


def markdown(result):
    methods, sizes, cell = _grid(result)
    n = result["test_images"]
    cal = result["calibration"]
    lines = [
        "# Calibration sweep: ONNX int8 accuracy vs calibration method and size", "",
        f"The onnx_fp32 artifact was quantized to int8 once per calibration method and number of "
        f"calibration images, with the export's other int8 settings unchanged, and each copy was scored "
        f"top-1 on {n} test images (one image = {100 / n:.2g} pp). Calibration images are spread evenly over "
        f"the classes of `{cal['source']}` ({cal['images']} training-split images, sha256 "
        f"{str(cal['sha256'])[:12]}...). This sweep is for seeing how many calibration images are enough, "
        f"not for choosing: the export default (`{result['export_default']}`) is not picked from the test split, "
        "and a method picked from this table would be fitted to it.", "",
        f"Float reference (onnx_fp32): **{result['float_accuracy'] * 100:.2f}%**. "
        "Cells: int8 top-1 % (drop vs float, pp; positive = worse).", "",
        "| method | " + " | ".join(f"{s} images" for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for m in methods:
        cells = [f"{cell[m, s]['accuracy'] * 100:.2f} ({cell[m, s]['drop_pp']:+.2f})" if (m, s) in cell else "-"
                 for s in sizes]
        lines.append(f"| {m}{' (export default)' if m == result['export_default'] else ''} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Quantization time (s, calibration + quantize_static):", "",
              "| method | " + " | ".join(f"{s} images" for s in sizes) + " |",
              "|---|" + "---:|" * len(sizes)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{cell[m, s]['quantize_s']:.1f}" if (m, s) in cell else "-"
                                               for s in sizes) + " |")
    lines += [""] + [f"Note: {note}." for note in result.get("notes", [])]
    lines += ["", "![int8 accuracy vs calibration images](calibration_sweep.png)", ""]
    return "\n".join(lines)


def chart(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, sizes, cell = _grid(result)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, m in enumerate(methods):
        xs = [s for s in sizes if (m, s) in cell]
        # Later lines thinner, with smaller markers: methods that agree exactly stay visible under each other.
        ax.plot(xs, [cell[m, s]["accuracy"] * 100 for s in xs], marker="osD^v"[i % 5], label=f"int8, {m}",
                markersize=max(4, 10 - 2.5 * i), linewidth=max(1.0, 3 - 0.8 * i))
    ax.axhline(result["float_accuracy"] * 100, color="black", linestyle="--", linewidth=1,
               label=f"float (onnx_fp32) {result['float_accuracy'] * 100:.2f}%")
    ax.set_xscale("log")
    if sizes:
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
    ax.set_xlabel("calibration images (log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"ONNX int8 accuracy vs calibration, {result['test_images']} test images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    atomic.write_png(path, fig, bbox_inches="tight")
    plt.close(fig)


def write(result, report_dir):
    """reports/calibration_sweep.md and .png, each written atomically; returns their paths."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    png, md = report_dir / PNG_NAME, report_dir / MD_NAME
    chart(result, png)
    atomic.write_text(md, markdown(result))
    return md, png


def run(cfg, progress=print):
    """`python -m evaluate --calibration-sweep`: the sweep on the manifest's onnx_fp32 and the test split."""
    manifest_path = config_mod.project_path(cfg.evaluate.manifest)
    test = evalset.load_test(cfg)
    result = sweep(manifest_path, manifest_mod.read(manifest_path), cfg, test.images, test.labels, progress=progress)
    for path in write(result, config_mod.project_path(cfg.evaluate.report_dir)):
        progress(f"wrote {path}")
    return result
