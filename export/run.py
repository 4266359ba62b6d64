"""Export orchestration: build every artifact in a staging folder, gate it on parity, publish, manifest last.

A failure anywhere (bad checkpoint, converter crash, parity below the gate) leaves the
output folder as it was: artifacts are built under `<out_dir>/.export-staging-*` (each via
a temp path and a rename), moved into place only when all of them passed, and
`manifest.json` is written after the last one is in place.
"""
import datetime
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from pipeline import atomic, checkpoint as checkpoint_mod, config, evalset, manifest as manifest_mod
from pipeline.config import project_path
from pipeline.errors import PipelineError
from pipeline.model import CLASSES

# name -> (format, precision, file name under out_dir)
ARTIFACTS = {
    "keras": ("keras", "fp32", "model_fp32.h5"),
    "saved_model": ("saved_model", "fp32", "saved_model"),
    "onnx_fp32": ("onnx", "fp32", "model_fp32.onnx"),
    "onnx_int8": ("onnx", "int8", "model_int8.onnx"),
    "tflite_fp32": ("tflite", "fp32", "model_fp32.tflite"),
    "tflite_fp16": ("tflite", "fp16", "model_fp16.tflite"),
    "tflite_dynamic_int8": ("tflite", "dynamic_int8", "model_dynamic_int8.tflite"),
    "tflite_int8": ("tflite", "int8", "model_int8.tflite"),
    "tflite_qat_int8": ("tflite", "qat_int8", "model_qat_int8.tflite"),
}
# What an artifact is converted from (built in staging even when not requested).
NEEDS = {"onnx_int8": "onnx_fp32", "tflite_fp32": "saved_model", "tflite_fp16": "saved_model",
         "tflite_dynamic_int8": "saved_model", "tflite_int8": "saved_model"}
# Whether `python -m export` run again on the same checkpoint writes the same bytes, as measured
# by benchmarks/export_time.py (two runs in two processes) and tests/test_export.py. For the
# SavedModel this holds per fresh process: export_all called inside a process that has already
# traced TF functions names them differently. ONNX: usually identical, but in some runs (seen
# under heavy CPU load) tf2onnx leaves Flatten's reshape target as a Shape/Gather/Concat
# subgraph instead of a constant: same outputs, other bytes (and so another int8 file).
# QAT trains for a wall-clock budget, so its step count, weights and bytes vary.
DETERMINISTIC = {name: name not in ("onnx_fp32", "onnx_int8", "tflite_qat_int8") for name in ARTIFACTS}
LABELS_FILE, MANIFEST_FILE = "labels.txt", "manifest.json"
TOOLS = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy",
         "tensorflow-model-optimization", "tf-keras")


def tool_versions():
    out = {}
    for dist in TOOLS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def labels_text():
    return "".join(f"{c}\n" for c in CLASSES)


def ensure_writable(out_dir):
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PipelineError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from None


class Exporter:
    """Builds artifacts into a staging folder; `build(name, path)` writes one artifact at `path`."""

    def __init__(self, cfg, model, preset, staging, calibration, progress):
        self.cfg, self.ecfg = cfg, cfg["export"]
        self.model, self.preset, self.staging = model, preset, staging
        self.calibration, self.progress = calibration, progress
        self.built = {}  # name -> staged path

    def path_of(self, name):
        """The staged artifact, building it (and what it is converted from) on first use."""
        if name not in self.built:
            final = self.staging / ARTIFACTS[name][2]
            with atomic.atomic_path(final) as tmp:
                self.build(name, tmp)
            self.built[name] = final
        return self.built[name]

    def build(self, name, path):
        from export import onnx_export, savedmodel, tflite_export
        if name == "keras":
            savedmodel.write_keras(self.model, path)
        elif name == "saved_model":
            savedmodel.write_saved_model(self.model, path)
        elif name == "onnx_fp32":
            onnx_export.write_fp32(self.model, path, int(self.ecfg["onnx_opset"]))
        elif name == "onnx_int8":
            onnx_export.write_int8(self.path_of("onnx_fp32"), path, self.calibration.images)
        elif name == "tflite_qat_int8":
            tflite_export.write(path, self._qat_flatbuffer(), labels_text())
        else:
            flat = tflite_export.convert_saved_model(self.path_of("saved_model"), ARTIFACTS[name][1],
                                                     self.calibration.images)
            tflite_export.write(path, flat, labels_text())

    def _qat_flatbuffer(self):
        from export import qat
        images, labels = qat_data(self.cfg, self.calibration)
        return qat.train_qat(self.model, self.preset, images, labels, self.calibration.images,
                             float(self.ecfg["qat_minutes"]), lr=float(self.ecfg.get("qat_lr", 1e-4)),
                             batch_size=int(self.ecfg.get("qat_batch_size", 64)), progress=self.progress)


def qat_data(cfg, calibration):
    """Training images for the QAT fine-tune: the training split of data.source, or the calibration subset."""
    n = int(cfg["export"]["qat_images"])
    if cfg["export"].get("qat_data", "train") == "calibration":
        images, labels = calibration.images, calibration.labels
    else:
        from pipeline.data import load_cifar10, resolve_source
        source = resolve_source(cfg["data"]["source"])
        source = source if source == "download" else str(project_path(source))
        train = load_cifar10(source, splits=("train",))["train"]
        images, labels = train.images, train.labels
    idx = np.random.default_rng(0).permutation(len(images))[:n or None]
    return images[idx], labels[idx]


def artifact_specs(name, path):
    from export import onnx_export, savedmodel, tflite_export
    fmt = ARTIFACTS[name][0]
    if fmt == "onnx":
        return onnx_export.specs(path)
    if fmt == "tflite":
        return tflite_export.specs(path)
    return savedmodel.keras_specs()


def _publish(src, final):
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(src, final)


def export_all(cfg, checkpoint=None, out_dir=None, formats=None, progress=True) -> dict:
    """Export `checkpoint` to every format in `formats` under `out_dir`; return the manifest written."""
    from export import parity

    ecfg = cfg["export"]
    checkpoint = Path(checkpoint) if checkpoint else project_path(ecfg["checkpoint"])
    out_dir = Path(out_dir) if out_dir else project_path(ecfg["out_dir"])
    formats = list(formats or ecfg["formats"])
    if ecfg.get("qat") and "tflite_qat_int8" not in formats:
        formats.append("tflite_qat_int8")
    unknown = [f for f in formats if f not in ARTIFACTS]
    if unknown:
        raise PipelineError(f"unknown export format(s) {', '.join(unknown)}; known: {', '.join(ARTIFACTS)}")
    say = print if progress else (lambda *a, **k: None)

    model, preset = checkpoint_mod.load(checkpoint)  # every bad checkpoint stops here, before any write
    source_sha = atomic.sha256_file(checkpoint)
    ensure_writable(out_dir)
    calibration = evalset.load_calibration(cfg)
    n_calib = min(int(ecfg.get("calibration_images", 0)) or len(calibration), len(calibration))
    keep = np.sort(np.random.default_rng(1).permutation(len(calibration))[:n_calib])  # stored class by class
    calibration.images, calibration.labels = calibration.images[keep], calibration.labels[keep]
    versions = tool_versions()
    say(f"export: {checkpoint} ({preset}, sha256 {source_sha[:12]}) -> {out_dir}/: {', '.join(formats)}",
        flush=True)

    staging = Path(tempfile.mkdtemp(prefix=".export-staging-", dir=out_dir))
    try:
        exporter = Exporter(cfg, model, preset, staging, calibration, progress)
        # The SavedModel first: its function names carry TF's per-process trace counter, so
        # building it before anything else is traced makes its bytes repeat run after run.
        timings = {}
        if any(n == "saved_model" or NEEDS.get(n) == "saved_model" for n in formats):
            t0 = time.time()
            exporter.path_of("saved_model")
            timings["saved_model"] = time.time() - t0
        check_images = parity.parity_images(evalset.load_calibration(cfg).images, int(ecfg["parity_images"]))
        reference = parity.run_keras(model, check_images)
        entries = []
        for name in formats:
            fmt, precision, filename = ARTIFACTS[name]
            t0 = time.time()
            path = exporter.path_of(name)
            seconds = timings.get(name, time.time() - t0)
            record = parity.compare(reference, parity.RUNNERS[fmt](path, check_images))
            minimum = ecfg["min_parity_float"] if precision in ("fp32", "fp16") else (
                ecfg.get("min_parity_qat", ecfg["min_parity_int8"]) if precision == "qat_int8"
                else ecfg["min_parity_int8"])
            parity.check(name, record, float(minimum))
            inp, out = artifact_specs(name, path)
            entries.append({
                "name": name, "format": fmt, "precision": precision, "path": filename,
                **manifest_mod.file_facts(path), "input": inp, "output": out, "labels": LABELS_FILE,
                "parity": record, "deterministic": DETERMINISTIC[name],
                "source_checkpoint_sha256": source_sha, "tool_versions": versions,
                "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "export_seconds": round(seconds, 2),
                **({"opset": int(ecfg["onnx_opset"])} if fmt == "onnx" else {}),
                **({"signature": "serving_default"} if fmt == "saved_model" else {}),
            })
            say(f"  {name:<20} {seconds:6.1f}s  top-1 agreement {record['top1_agreement']:.2%}  "
                f"max|diff| {record['max_abs_diff']:.2e}", flush=True)

        # Publish: drop the old manifest first, so no manifest ever names a file being replaced.
        (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
        atomic.write_text(out_dir / LABELS_FILE, labels_text())
        for entry in entries:
            _publish(exporter.built[entry["name"]], out_dir / entry["path"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    config.write_resolved(cfg, out_dir)
    manifest = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": {"path": str(checkpoint), "sha256": source_sha, "preset": preset},
        "tool_versions": versions, "labels": LABELS_FILE, "classes": list(CLASSES),
        "onnx_opset": int(ecfg["onnx_opset"]), "calibration_images": n_calib,
        "artifacts": entries,
    }
    manifest_mod.write(out_dir / MANIFEST_FILE, manifest)
    say(f"wrote {len(entries)} artifacts and {out_dir / MANIFEST_FILE}", flush=True)
    return manifest_mod.read(out_dir / MANIFEST_FILE)
