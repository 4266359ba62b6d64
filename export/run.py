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
import time
import warnings
from pathlib import Path
from typing import NamedTuple

from pipeline import artifacts, atomic, checkpoint as checkpoint_mod, config, console, evalset, machine
from pipeline import sampling
from pipeline import manifest as manifest_mod
from pipeline.config import project_path
from pipeline.errors import PipelineError
from pipeline.model import CLASSES, labels_text

LABELS_FILE = "labels.txt"
KILL_ENV = "CIFAR_EDGE_EXPORT_KILL_AT"  # tests: SIGKILL this process at a named point


def _kill_point(name):
    """A named point where the kill tests stop this process, as `kill -9` would."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


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
    images = metrics.get("test_images")  # evaluate's reference gate compares it with the images it scores
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise PipelineError(f"{path}: \"test_images\" must be a whole number >= 1, got {images!r}")
    return {"accuracy": float(value), "test_images": images,
            "source": path.name, "source_sha256": atomic.sha256_file(path),
            "data_sha256": metrics.get("data_sha256")}


class Exporter:
    """What builders get: the model, the image sets (pipeline.sampling.ExportSets; `calibration` is
    the calibration set), and `path_of(kind)` for what they convert from."""

    def __init__(self, cfg, source, staging, sets, progress):
        self.cfg, self.source, self.model, self.preset, self.staging = cfg, source, source.model, source.preset, staging
        self.sets, self.calibration, self.progress = sets, sets.calibration, progress
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


# ---------------------------------------------------------------- the steps, in order

class Source(NamedTuple):
    model: object       # the float32 keras.Model
    preset: str         # its model preset
    checkpoint: Path
    sha256: str         # of the checkpoint file
    reference: dict     # its accuracy record (reference_record)


def load_source(cfg):
    """The checkpoint to export (Source): every bad checkpoint stops here, before anything is written."""
    checkpoint = project_path(cfg.export.checkpoint)
    model, preset = checkpoint_mod.load(checkpoint)
    return Source(model, preset, checkpoint, atomic.sha256_file(checkpoint), reference_record(cfg, checkpoint))


def prepare_out_dir(out_dir, say):
    for stale in atomic.recover_dir(out_dir):
        say(f"export: removed {stale} left by an interrupted export", flush=True)


def draw_image_sets(cfg):
    """Calibration, parity (disjoint from it), holdout and per-layer-error images: pipeline/sampling.py."""
    return sampling.ExportSets(cfg, evalset.load_calibration(cfg), evalset.load_parity(cfg))


def build_saved_model_first(exporter, formats):
    """The SavedModel first: its function names carry TF's per-process trace counter, so building it
    before anything else is traced makes its bytes repeat run after run. Returns {name: seconds}."""
    if not any("saved_model" in (n, artifacts.get(n).needs) for n in formats):
        return {}
    t0 = time.time()
    exporter.path_of("saved_model")
    return {"saved_model": time.time() - t0}


def export_one(exporter, name, keras_probs, seconds_before, say):
    """Build one kind, gate it on parity with the Keras model, record its checks: its manifest entry."""
    from export import layer_error, parity, specs
    from pipeline import mobile_checks, ort_mobile
    cfg, row, sets = exporter.cfg, artifacts.get(name), exporter.sets
    t0 = time.time()
    path = exporter.path_of(name)
    seconds = seconds_before.get(name, time.time() - t0)
    with console.quiet_native():
        record = parity.compare(keras_probs, parity.run(row, path, sets.parity.images))
    parity.check(name, record, getattr(cfg.gates, row.parity), row.parity)
    inp, out = specs.of(row, path)
    checks = {}
    if row.mobile_checks:
        checks["mobile_ready"] = mobile_checks.check(path, row.integer_io)
    if row.ort_mobile:
        checks["ort_mobile"] = ort_mobile.coverage(path)
    if row.ops_config:  # written beside the model by its builder; verified and shipped with it
        checks["ops_config"] = {"path": row.ops_config, **manifest_mod.file_facts(exporter.staging / row.ops_config)}
    if row.layer_error and cfg.export.layer_error_images:
        t1 = time.time()
        # QuantizationDebugger drives TF's deprecated tf.lite.Interpreter: its warnings are not the user's
        with console.quiet_native(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            checks["layer_error"] = layer_error.measure(exporter, row, path, sets.layer_error)
        say(f"  {name:<20} per-layer quantization error: {time.time() - t1:.1f}s", flush=True)
    say(f"  {name:<20} {seconds:6.1f}s  top-1 agreement {record['top1_agreement']:.2%}  "
        f"max|diff| {record['max_abs_diff']:.2e}", flush=True)
    return {
        "name": name, "format": row.format, "precision": row.precision, "kind": row.kind,
        "path": row.file, **manifest_mod.file_facts(path), "input": inp, "output": out,
        "parity": record, "deterministic": row.deterministic, "export_seconds": round(seconds, 2),
        **({"settings": exporter.settings[name]} if exporter.settings.get(name) else {}), **checks,
    }


def drop_intermediates(exporter, formats):
    """Remove what was built only as a step towards another kind."""
    for name, path in exporter.built.items():
        if name not in formats:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_manifest(cfg, staging, source, sets, entries):
    model, preset, checkpoint, source_sha, reference = source
    (staging / LABELS_FILE).write_text(labels_text())
    config.write_resolved(cfg, staging)
    manifest_mod.write(staging / manifest_mod.FILE_NAME, {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": {"file": checkpoint.name, "sha256": source_sha, "preset": preset,
                              "params": int(model.count_params())},
        "reference": reference,
        "calibration": {"source": cfg.data.calibration, "images": len(sets.calibration),
                        "sha256": atomic.sha256_file(project_path(cfg.data.calibration))},
        "image_sets": sets.records(),
        "labels": {"path": LABELS_FILE, "sha256": atomic.sha256_file(staging / LABELS_FILE)},
        "classes": list(CLASSES), "tool_versions": machine.library_versions(),
        "artifacts": entries,
    })


def export_all(cfg, progress=True) -> dict:
    """Export cfg.export.checkpoint to every kind in cfg.export.formats; return the manifest written."""
    from export import parity
    say = print if progress else (lambda *a, **k: None)
    out_dir, formats = project_path(cfg.export.out_dir), list(dict.fromkeys(cfg.export.formats))

    atomic.check_replaceable(out_dir, manifest_mod.FILE_NAME)  # only an earlier export is replaced whole
    atomic.check_writable_dir(out_dir.parent)  # a read-only disk or a file in the way: before any work
    source = load_source(cfg)
    prepare_out_dir(out_dir, say)
    sets = draw_image_sets(cfg)
    say(f"export: {source.checkpoint} ({source.preset}, sha256 {source.sha256[:12]}) -> {out_dir}/: {', '.join(formats)}; "
        f"{len(sets.calibration)} calibration, {len(sets.parity)} parity images (disjoint)", flush=True)
    staging = atomic.staging_dir(out_dir)
    try:
        _kill_point("staging")
        exporter = Exporter(cfg, source, staging, sets, progress)
        seconds = build_saved_model_first(exporter, formats)
        keras_probs = parity.run_keras(source.model, sets.parity.images)
        entries = []
        for name in formats:
            entries.append(export_one(exporter, name, keras_probs, seconds, say))
            _kill_point(f"built:{name}")
        drop_intermediates(exporter, formats)
        write_manifest(cfg, staging, source, sets, entries)
        _kill_point("publish")
        atomic.publish_dir(staging, out_dir)
    except PipelineError as exc:  # a disk that fills mid-export names its staging copy: name the output's file
        raise PipelineError(str(exc).replace(str(staging), str(out_dir))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"wrote {len(entries)} artifacts and {out_dir / manifest_mod.FILE_NAME}", flush=True)
    return manifest_mod.read(out_dir / manifest_mod.FILE_NAME)
