"""Export orchestration: every artifact built in a staging folder, gated on parity, published whole.

The artifacts folder is replaced as a unit: artifacts, labels.txt, config.resolved.json and
manifest.json are all written into `.<out_dir>.staging-*` beside it, and the finished folder is
swapped in with one rename (pipeline.atomic.publish_dir). A failure or a kill at any moment
leaves the previous complete set with its manifest; the next run removes stale staging folders.
What kinds exist, their files, builders and parity gates: pipeline/artifacts.py.
"""
import datetime
import os
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from pipeline import artifacts, atomic, checkpoint as checkpoint_mod, config, console, evalset, machine
from pipeline import manifest as manifest_mod
from pipeline.config import project_path
from pipeline.errors import PipelineError
from pipeline.model import CLASSES

LABELS_FILE = "labels.txt"
KILL_ENV = "CIFAR_EDGE_EXPORT_KILL_AT"  # tests: SIGKILL this process at a named point


def _kill_point(name):
    """A named point where the kill tests stop this process, as `kill -9` would."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def labels_text():
    return "".join(f"{c}\n" for c in CLASSES)


def ensure_writable(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PipelineError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from None


def reference_record(cfg, checkpoint):
    """The model card's test accuracy for the manifest: metrics.json beside the checkpoint (or
    export.reference_metrics), with its sha256; {"accuracy": None, "why"} if there is none."""
    path = project_path(cfg.export.reference_metrics) if cfg.export.reference_metrics else \
        checkpoint.parent / "metrics.json"
    if not path.is_file():
        return {"accuracy": None, "why": f"no {path.name} beside {checkpoint.name} (set export.reference_metrics)"}
    metrics = config.read_json(path)
    value = metrics.get("test_accuracy") if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise PipelineError(f"{path}: \"test_accuracy\" must be a fraction in (0, 1], got {value!r}")
    return {"accuracy": float(value), "test_images": metrics.get("test_images"),
            "source": path.name, "source_sha256": atomic.sha256_file(path),
            "data_sha256": metrics.get("data_sha256")}


class Exporter:
    """What builders get: the model, the calibration images, and `path_of(kind)` for what they convert from."""

    def __init__(self, cfg, model, preset, staging, calibration, progress):
        self.cfg, self.model, self.preset, self.staging = cfg, model, preset, staging
        self.calibration, self.progress = calibration, progress
        self.built, self.settings = {}, {}  # name -> staged path; name -> settings its builder recorded

    def path_of(self, name):
        """The staged artifact, building it (and what it is converted from) on first use."""
        if name not in self.built:
            row = artifacts.get(name)
            final = self.staging / row.file
            with atomic.atomic_path(final) as tmp, console.quiet_native():
                self.settings[name] = artifacts.builder(name)(self, row, tmp) or {}
            self.built[name] = final
        return self.built[name]


def export_all(cfg, progress=True) -> dict:
    """Export cfg.export.checkpoint to every kind in cfg.export.formats; return the manifest written."""
    from export import layer_error, mobile_checks, parity, specs

    checkpoint, out_dir = project_path(cfg.export.checkpoint), project_path(cfg.export.out_dir)
    formats = list(dict.fromkeys(cfg.export.formats))
    say = print if progress else (lambda *a, **k: None)

    model, preset = checkpoint_mod.load(checkpoint)  # every bad checkpoint stops here, before any write
    source_sha = atomic.sha256_file(checkpoint)
    reference = reference_record(cfg, checkpoint)
    ensure_writable(out_dir.parent)
    for stale in atomic.recover_dir(out_dir):
        say(f"export: removed {stale} left by an interrupted export", flush=True)
    calibration = evalset.load_calibration(cfg)
    n_calib = min(cfg.export.calibration_images or len(calibration), len(calibration))
    keep = np.sort(np.random.default_rng(1).permutation(len(calibration))[:n_calib])  # stored class by class
    calibration.images, calibration.labels = calibration.images[keep], calibration.labels[keep]
    say(f"export: {checkpoint} ({preset}, sha256 {source_sha[:12]}) -> {out_dir}/: {', '.join(formats)}",
        flush=True)

    staging = atomic.staging_dir(out_dir)
    try:
        _kill_point("staging")
        exporter = Exporter(cfg, model, preset, staging, calibration, progress)
        # The SavedModel first: its function names carry TF's per-process trace counter, so
        # building it before anything else is traced makes its bytes repeat run after run.
        timings = {}
        if any("saved_model" in (n, artifacts.get(n).needs) for n in formats):
            t0 = time.time()
            exporter.path_of("saved_model")
            timings["saved_model"] = time.time() - t0
        check_images = parity.parity_images(evalset.load_calibration(cfg).images, cfg.export.parity_images)
        keras_probs = parity.run_keras(model, check_images)
        entries = []
        for name in formats:
            row = artifacts.get(name)
            t0 = time.time()
            path = exporter.path_of(name)
            seconds = timings.get(name, time.time() - t0)
            with console.quiet_native():
                record = parity.compare(keras_probs, parity.run(row, path, check_images))
            parity.check(name, record, getattr(cfg.gates, row.parity), row.parity)
            inp, out = specs.of(row, path)
            checks = {}
            if row.format == "tflite":
                checks["mobile_ready"] = mobile_checks.check(path, row.precision)
            if row.layer_error and cfg.export.layer_error_images:
                t1 = time.time()
                # QuantizationDebugger drives TF's deprecated tf.lite.Interpreter: its warnings are not the user's
                with console.quiet_native(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    checks["layer_error"] = layer_error.measure(
                        exporter, row, path, layer_error.spread(calibration.images, cfg.export.layer_error_images))
                say(f"  {name:<20} per-layer quantization error: {time.time() - t1:.1f}s", flush=True)
            entries.append({
                "name": name, "format": row.format, "precision": row.precision, "kind": row.kind,
                "path": row.file, **manifest_mod.file_facts(path), "input": inp, "output": out,
                "parity": record, "deterministic": row.deterministic, "export_seconds": round(seconds, 2),
                **({"settings": exporter.settings[name]} if exporter.settings.get(name) else {}), **checks,
            })
            say(f"  {name:<20} {seconds:6.1f}s  top-1 agreement {record['top1_agreement']:.2%}  "
                f"max|diff| {record['max_abs_diff']:.2e}", flush=True)
            _kill_point(f"built:{name}")
        for name, path in exporter.built.items():  # built only as a step towards another kind
            if name not in formats:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        (staging / LABELS_FILE).write_text(labels_text())
        config.write_resolved(cfg, staging)
        manifest_mod.write(staging / manifest_mod.FILE_NAME, {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source_checkpoint": {"file": checkpoint.name, "sha256": source_sha, "preset": preset,
                                  "params": int(model.count_params())},
            "reference": reference,
            "calibration": {"source": cfg.data.calibration, "images": n_calib,
                            "sha256": atomic.sha256_file(project_path(cfg.data.calibration))},
            "labels": {"path": LABELS_FILE, "sha256": atomic.sha256_file(staging / LABELS_FILE)},
            "classes": list(CLASSES), "tool_versions": machine.library_versions(),
            "artifacts": entries,
        })
        _kill_point("publish")
        atomic.publish_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"wrote {len(entries)} artifacts and {out_dir / manifest_mod.FILE_NAME}", flush=True)
    return manifest_mod.read(out_dir / manifest_mod.FILE_NAME)
