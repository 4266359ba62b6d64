"""The evaluate stage: scores, independent counts, failure isolation, gates that always bite, baselines.

Artifacts are made by hand from the small_checkpoint fixture (a .h5 and TFLite conversions), so
these tests do not depend on the export stage; the end-to-end tests go through export. The test
split is a 400-image slice of the committed one (40 per class), configured as `data.test`, so the
gates see a whole split in seconds.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import atomic, manifest as manifest_mod
from pipeline.model import CLASSES

ROOT = Path(__file__).resolve().parent.parent
PER_CLASS = 40
N_TEST = 10 * PER_CLASS


@pytest.fixture(scope="module")
def small_test(tmp_path_factory):
    """A 400-image test split as a tar.gz of PNGs, in the committed split's layout (tests/conftest.py)."""
    from conftest import small_test_split
    return small_test_split(tmp_path_factory, PER_CLASS)


def _tflite_bytes(model, folder):
    """fp32 TFLite via a SavedModel (the conversion path that works for Keras 3 models)."""
    import tensorflow as tf
    saved = Path(folder) / f"saved_{model.name}"
    model.export(saved, format="tf_saved_model", verbose=False)
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    shutil.rmtree(saved)
    return flatbuffer


def _entry(folder, name, filename, shape=(32, 32, 3)):
    from pipeline.artifacts import ARTIFACTS
    row = ARTIFACTS[name]
    return {"name": name, "format": row.format, "precision": row.precision, "kind": row.kind, "path": filename,
            **manifest_mod.file_facts(Path(folder) / filename),
            "input": {"name": "image", "dtype": "float32", "shape": [1, *shape], "quantization": None},
            "output": {"name": "probabilities", "dtype": "float32", "shape": [1, 10], "quantization": None}}


def _write_manifest(folder, entries, accuracy=None, test_images=N_TEST):
    folder = Path(folder)
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    reference = {"accuracy": accuracy, "test_images": test_images, "source": "metrics.json"} if accuracy \
        else {"accuracy": None, "why": "no metrics.json beside small.h5"}
    manifest_mod.write(folder / "manifest.json", {
        "source_checkpoint": {"file": "small.h5", "sha256": "0" * 64, "preset": "resnet20v1"},
        "reference": reference, "classes": list(CLASSES),
        "labels": {"path": "labels.txt", "sha256": atomic.sha256_file(folder / "labels.txt")},
        "artifacts": entries})
    return folder / "manifest.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_checkpoint):
    """A folder with keras.h5, a faithful tflite_fp32, one with perturbed weights, and one 28x28 model."""
    import keras
    from pipeline import checkpoint
    folder = tmp_path_factory.mktemp("artifacts")
    shutil.copy(small_checkpoint, folder / "model.h5")
    model, _ = checkpoint.load(small_checkpoint)
    (folder / "model_fp32.tflite").write_bytes(_tflite_bytes(model, folder))
    # Damaged: the same graph with every weight tensor perturbed (as a corrupted export would be).
    rng = np.random.default_rng(0)
    damaged, _ = checkpoint.load(small_checkpoint)
    damaged.name = "damaged"
    damaged.set_weights([w + rng.normal(0, 0.5 * (np.std(w) + 1e-3), w.shape).astype(w.dtype)
                         for w in damaged.get_weights()])
    (folder / "damaged.tflite").write_bytes(_tflite_bytes(damaged, folder))
    small = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")], name="small")
    (folder / "wrong_shape.tflite").write_bytes(_tflite_bytes(small, folder))
    return folder


def _cfg(small_test, manifest_path, report_dir, **more):
    from pipeline import config
    items = {"data.test": str(small_test), "evaluate.manifest": str(manifest_path),
             "evaluate.report_dir": str(report_dir), "evaluate.latency_runs": 5, "evaluate.warmup_runs": 2,
             "evaluate.peak_probe_s": 0.2, **more}
    return config.load(None, list(items.items()))


def _evaluate(cfg, latency=False):
    from evaluate.run import evaluate_all
    return evaluate_all(cfg, latency=latency, progress=lambda *a: None)


# The matmul peak probe runs before and after the artifacts at every thread count (evaluate.peak_probe_s
# each, 2 s by default): these tests do not read the peak, so their CLI runs probe briefly.
SHORT_PROBE = ("--set", "evaluate.peak_probe_s=0.2")


def _run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "evaluate", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _keras_accuracy(small_checkpoint, small_test):
    from pipeline import checkpoint
    from pipeline.data import load_cifar10
    test = load_cifar10(small_test, splits=("test",), progress=False)["test"]
    model, _ = checkpoint.load(small_checkpoint)
    return float(np.mean(model.predict(test.images.astype(np.float32), verbose=0).argmax(1) == test.labels))


# ---------------------------------------------------------------- scoring and gates, in memory

def test_score_counts_agreement_and_confusion():
    from pipeline.scoring import score
    labels = np.array([0, 1, 2, 3, 3])
    top1 = np.array([0, 1, 2, 2, 3])
    ref = np.array([0, 1, 1, 2, 3])
    s = score(labels, top1, ref, reference_accuracy=0.6)
    assert s["accuracy"] == pytest.approx(0.8)
    assert s["agreement"] == pytest.approx(0.8)
    assert s["diff_pp"] == pytest.approx(20.0)
    assert s["per_class_accuracy"][:4] == [1.0, 1.0, 1.0, 0.5]
    assert s["confusion"][3][2] == 1 and sum(map(sum, s["confusion"])) == 5


ROWS = [{"name": "keras", "kind": "float", "status": "ok", "accuracy": 0.90},
        {"name": "onnx_fp32", "kind": "float", "status": "ok", "accuracy": 0.8995, "agreement": 0.999},
        {"name": "tflite_int8", "kind": "int8", "status": "ok", "accuracy": 0.885, "agreement": 0.98,
         "mobile_ready": {"builtin_ops_only": True, "custom_ops": [], "integer_io": True, "input_dtype": "uint8",
                          "output_dtype": "uint8", "gpu_compatible": False, "gpu_incompatible_ops": []}},
        {"name": "onnx_int8", "kind": "int8", "status": "error", "error": "boom"}]


def test_gates_name_artifact_metric_value_threshold():
    from evaluate import gates
    from pipeline import config
    g = config.load().gates
    ref = {"accuracy": 0.901, "test_images": 100}
    failed = gates.failures(gates.check(ROWS, g, ref, 100, full_test_set=True))
    assert failed == ["GATE FAILED: tflite_int8 accuracy_floor = 0.885 (threshold 0.889)",
                      "GATE FAILED: tflite_int8 accuracy_drop_pp = 1.5 (threshold 1.0)",
                      "GATE FAILED: onnx_int8 status = error (threshold ok): boom"]
    # The keras artifact must be within 0.2 pp of its model card: 0.90 < 0.91 - 0.002.
    assert gates.failures(gates.check(ROWS[:1], g, {"accuracy": 0.91, "test_images": 100}, 100, True)) == [
        "GATE FAILED: keras accuracy_floor = 0.9 (threshold 0.908)"]


def test_gates_bite_without_the_keras_artifact():
    """No keras row: each artifact still meets the floor card - tolerance - allowed drop."""
    from evaluate import gates
    from pipeline import config
    g = config.load().gates
    rows = [r for r in ROWS[1:3]]
    ok = gates.check(rows, g, {"accuracy": 0.901, "test_images": 100}, 100, True)
    assert [(x["artifact"], x["threshold"]) for x in ok] == [("onnx_fp32", 0.898),
                                                             ("tflite_int8", ["builtin_ops", "integer_io"]),
                                                             ("tflite_int8", 0.889)]
    assert gates.failures(ok) == ["GATE FAILED: tflite_int8 accuracy_floor = 0.885 (threshold 0.889)"]
    for reference, n, full, why in [({"accuracy": None, "why": "no metrics.json beside x.h5"}, 100, True,
                                     "no metrics.json beside x.h5"),
                                    ({"accuracy": 0.9, "test_images": 10000}, 100, True, "measured on 10000"),
                                    ({"accuracy": 0.9, "test_images": 100}, 50, False, "--no-gates")]:
        failed = gates.failures(gates.check(rows, g, reference, n, full))
        assert len(failed) == 2 and all(why in f for f in failed), failed


def test_flops_counted_from_the_graph():
    from evaluate.flops import count_flops
    from pipeline.model import build_preset
    flops = count_flops(build_preset("seed"))
    assert 280e6 < flops < 295e6  # ~287 MFLOP: 2 per multiply-add of every conv and dense


# ---------------------------------------------------------------- whole runs

def test_accuracy_matches_an_independent_count(built, small_test, small_checkpoint, tmp_path):
    """evaluate's batched TFLite number equals a plain per-image loop with the raw LiteRT API."""
    from ai_edge_litert.interpreter import Interpreter
    from pipeline.data import load_cifar10
    folder = tmp_path / "a"
    folder.mkdir()
    for f in ("model.h5", "model_fp32.tflite"):
        shutil.copy(built / f, folder / f)
    acc = _keras_accuracy(small_checkpoint, small_test)
    m = _write_manifest(folder, [_entry(folder, "keras", "model.h5"),
                                 _entry(folder, "tflite_fp32", "model_fp32.tflite")], accuracy=acc)
    # Hand-made entries carry no mobile checks (export records them; that gate has its own test).
    result = _evaluate(_cfg(small_test, m, tmp_path / "reports", **{"gates.mobile_checks": []}), latency=True)
    rows = {r["name"]: r for r in result["artifacts"]}
    assert result["passed"], result["gate_failures"]
    assert {g["metric"] for g in result["gates"]} == {"accuracy_floor", "accuracy_drop_pp", "agreement"}

    test = load_cifar10(small_test, splits=("test",), progress=False)["test"]
    interp = Interpreter(model_path=str(built / "model_fp32.tflite"), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    correct = 0
    for image, label in zip(test.images, test.labels):
        interp.set_tensor(inp, image[None].astype(np.float32))
        interp.invoke()
        correct += int(interp.get_tensor(out).argmax() == label)
    assert abs(rows["tflite_fp32"]["accuracy"] - correct / N_TEST) * 100 <= 0.25
    assert rows["keras"]["accuracy"] == pytest.approx(acc)
    assert rows["tflite_fp32"]["agreement"] >= 0.99 and len(rows["keras"]["per_class_accuracy"]) == 10

    for row in rows.values():  # latency, throughput and the report's shape
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p90"] <= row["latency_ms"]["p99"]
        assert row["throughput"]["images_per_s"] > 0 and row["throughput"]["batch"] == 64
    saved = json.loads((tmp_path / "reports" / "evaluation.json").read_text())
    assert saved["schema_version"] == 3 and [a["name"] for a in saved["artifacts"]] == ["keras", "tflite_fp32"]
    assert saved["flops_per_image"] > 70e6 and saved["peak_gops"]["fp32"]["1"] > 1 \
        and saved["peak_gops"]["int8"]["1"] > 1 and saved["peak_gops"]["isa"]["int8"]
    assert "| tflite_fp32 | tflite | fp32 |" in (tmp_path / "reports" / "evaluation.md").read_text()
    shares = [v for a in saved["artifacts"] for v in a["gflops"].values()]
    assert shares and all(v["peak"] == "fp32" and (v["share_of_peak"] is None or 0 < v["share_of_peak"] <= 1)
                          for v in shares)
    for png in ("accuracy_vs_latency.png", "confusion_reference.png"):
        assert (tmp_path / "reports" / png).read_bytes()[:4] == b"\x89PNG"


def test_bad_artifacts_fail_alone(built, small_test, tmp_path):
    """Missing file, sha256 mismatch, truncated file, wrong input shape: each its own error row."""
    data = (built / "model_fp32.tflite").read_bytes()
    names = {"tflite_fp32": "good.tflite", "tflite_fp16": "truncated.tflite", "tflite_dynamic_int8": "wrong.tflite",
             "tflite_int8": "tampered.tflite", "onnx_fp32": "nowhere.onnx"}
    (tmp_path / "good.tflite").write_bytes(data)
    (tmp_path / "truncated.tflite").write_bytes(data[: len(data) // 3])
    shutil.copy(built / "wrong_shape.tflite", tmp_path / "wrong.tflite")
    (tmp_path / "tampered.tflite").write_bytes(data)
    entries = [_entry(tmp_path, n, f if n != "onnx_fp32" else "good.tflite") for n, f in names.items()]
    entries[-1]["path"] = "nowhere.onnx"
    (tmp_path / "tampered.tflite").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # after its sha was taken
    m = _write_manifest(tmp_path, entries, accuracy=0.2)
    result = _evaluate(_cfg(small_test, m, tmp_path / "reports"))
    rows = {r["name"]: r for r in result["artifacts"]}
    assert rows["tflite_fp32"]["status"] == "ok" and rows["tflite_fp32"]["accuracy"] > 0.05
    err = {k: rows[k]["error"] for k in names if k != "tflite_fp32"}
    assert "LiteRT cannot load" in err["tflite_fp16"] or "crashed" in err["tflite_fp16"]
    assert "input shape [1, 28, 28, 3], expected [batch, 32, 32, 3]" in err["tflite_dynamic_int8"]
    assert "does not match the manifest" in err["tflite_int8"]
    assert "nowhere.onnx is missing" in err["onnx_fp32"]
    assert not result["passed"]
    assert sorted({f.split()[2] for f in result["gate_failures"] if " status " in f}) == sorted(err)
    md = (tmp_path / "reports" / "evaluation.md").read_text()
    assert "**error**" in md and "nowhere.onnx is missing" in md


def test_gate_bites_on_a_damaged_artifact(built, small_test, small_checkpoint, tmp_path):
    """`python -m evaluate` exits non-zero naming the perturbed artifact, its metric, value and threshold."""
    m = _write_manifest(built, [_entry(built, "keras", "model.h5"), _entry(built, "tflite_fp32", "damaged.tflite")],
                        accuracy=_keras_accuracy(small_checkpoint, small_test))
    proc = _run_cli("--manifest", m, "--report-dir", tmp_path / "reports", "--no-latency",
                    "--set", f"data.test='{small_test}'", *SHORT_PROBE)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "GATE FAILED: tflite_fp32 accuracy_drop_pp = " in proc.stderr and "(threshold 0.1)" in proc.stderr
    assert "GATE FAILED: tflite_fp32 agreement = " in proc.stderr
    assert "GATE FAILED: keras" not in proc.stderr
    assert "[2/2] tflite_fp32" in proc.stdout  # progress while it runs
    assert json.loads((tmp_path / "reports" / "evaluation.json").read_text())["passed"] is False


def test_limit_needs_no_gates_and_bad_manifests_are_one_line(tmp_path):
    assert "--latency-runs" in _run_cli("--help").stdout
    proc = _run_cli("--limit", "100")
    assert proc.returncode == 1 and "add --no-gates" in proc.stderr and len(proc.stderr.splitlines()) == 1
    (tmp_path / "manifest.json").write_text("{not json")
    proc = _run_cli("--manifest", tmp_path / "manifest.json", "--report-dir", tmp_path / "r")
    assert proc.returncode == 1 and "manifest.json: not a readable JSON manifest" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- through export: moved folders and baselines

# The small model was fitted for seconds on 1,000 images: on 400 test images its int8 copy may
# lose a few images' worth more than a real model would (one image = 0.25 pp).
LOOSE = {"gates.max_drop_pp_int8": 5.0}

@pytest.fixture(scope="module")
def exported_without_keras(shared_export, small_checkpoint, small_test, tmp_path_factory):
    """An export of onnx_fp32 + tflite_int8 only, whose manifest states the model's accuracy (as export
    records a metrics.json beside the checkpoint): those two artifacts of the session's shared CLI export
    (tests/conftest.py), copied alone into a folder of their own with no checkpoint beside them, so
    evaluate must need nothing but the manifest."""
    from conftest import export_subset
    reference = {"accuracy": _keras_accuracy(small_checkpoint, small_test), "test_images": N_TEST,
                 "source": "metrics.json"}
    out = export_subset(shared_export[0], tmp_path_factory.mktemp("exp") / "artifacts", ["onnx_fp32", "tflite_int8"],
                        reference=reference)
    assert [e["name"] for e in manifest_mod.read(out / "manifest.json")["artifacts"]] == ["onnx_fp32", "tflite_int8"]
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".h5", ".onnx", ".tflite")) == \
        ["model_fp32.onnx", "model_int8.tflite"]
    return out


def test_a_copied_artifacts_folder_gates_as_before_and_a_damaged_int8_fails(exported_without_keras, small_test,
                                                                            tmp_path):
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(exported_without_keras, moved)
    ok = _evaluate(_cfg(small_test, moved / "manifest.json", tmp_path / "r1", **LOOSE))
    assert ok["passed"], ok["gate_failures"]
    floors = [g for g in ok["gates"] if g["metric"] == "accuracy_floor"]
    assert [g["artifact"] for g in floors] == ["onnx_fp32", "tflite_int8"] and all(g["passed"] for g in floors)

    # Damage the int8 model's weights (a flipped-sign scale would be subtler; this is a broken one) and
    # re-record its sha256, as a buggy converter would: only the accuracy gate can catch it.
    m = json.loads((moved / "manifest.json").read_text())
    entry = next(e for e in m["artifacts"] if e["name"] == "tflite_int8")
    data = bytearray((moved / entry["path"]).read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 4
    data[start:start + len(data) // 2] = rng.integers(0, 256, len(data) // 2, dtype=np.uint8).tobytes()
    (moved / entry["path"]).write_bytes(bytes(data))
    entry["sha256"] = atomic.sha256_file(moved / entry["path"])
    (moved / "manifest.json").write_text(json.dumps(m))
    bad = _evaluate(_cfg(small_test, moved / "manifest.json", tmp_path / "r2", **LOOSE))
    assert not bad["passed"]
    assert any(f.startswith("GATE FAILED: tflite_int8") for f in bad["gate_failures"]), bad["gate_failures"]
    assert not any("onnx_fp32" in f for f in bad["gate_failures"])


def test_baseline_writes_diff_and_fails_on_a_regression(exported_without_keras, small_test, tmp_path):
    report = tmp_path / "reports"
    first = _evaluate(_cfg(small_test, exported_without_keras / "manifest.json", report, **LOOSE))
    assert first["passed"]
    base = tmp_path / "baseline.json"
    shutil.copy(report / "evaluation.json", base)
    again = _evaluate(_cfg(small_test, exported_without_keras / "manifest.json", report,
                           **{"evaluate.baseline": str(base), **LOOSE}))
    assert again["passed"], again["gate_failures"]
    diff = (report / "diff.md").read_text()
    assert "no regression" in diff and "| onnx_fp32 |" in diff and "| tflite_int8 |" in diff

    # A baseline that scored 5 pp higher: this run is a regression beyond gates.max_regression_pp.
    better = json.loads(base.read_text())
    for a in better["artifacts"]:
        a["accuracy"] += 0.05
    base.write_text(json.dumps(better))
    proc = _run_cli("--manifest", exported_without_keras / "manifest.json", "--report-dir", report, "--no-latency",
                    "--baseline", base, "--set", f"data.test='{small_test}'", "--set", "gates.max_drop_pp_int8=5",
                    *SHORT_PROBE)
    assert proc.returncode == 1
    assert "GATE FAILED: onnx_fp32 accuracy_vs_baseline_pp = -5.0 (threshold -0.3)" in proc.stderr, proc.stderr
    assert "2 regression(s)" in (report / "diff.md").read_text()


def test_share_of_peak_uses_the_artifacts_precision_and_never_exceeds_one():
    """int8 kinds are divided by the int8 peak, float kinds by fp32; above the probe = no share claimed."""
    from evaluate.run import _add_peak_share
    peak = {"fp32": {"1": 100.0}, "int8": {"1": 400.0}, "isa": {}}

    def row(kind, ms):
        return {"name": {"int8": "onnx_int8", "float": "onnx_fp32"}[kind], "status": "ok", "kind": kind, "latency_by_threads": {"1": {"batch1_ms": {"p50": ms}}},
                "throughput": {"batch": 64, "images_per_s": 1000 / ms}}

    int8, fp32, fast = row("int8", 1.0), row("float", 4.0), row("float", 1.0)
    for r in (int8, fp32, fast):
        _add_peak_share(r, 200e6, peak, [1])  # 200 MFLOP per image
    assert int8["gflops"]["batch1_1t"] == {"gflops": 200.0, "peak": "int8", "share_of_peak": 0.5}
    assert fp32["gflops"]["batch1_1t"]["share_of_peak"] == 0.5 and fp32["gflops"]["batch1_1t"]["peak"] == "fp32"
    assert fast["gflops"]["batch1_1t"]["share_of_peak"] is None and fast["gflops"]["batch1_1t"]["above_peak"] == 2.0


def test_profile_names_the_operators_that_take_the_time(exported_without_keras, small_test, tmp_path):
    """--profile: onnxruntime's own profiler, per operator type; formats without one say so."""
    from evaluate import profile
    result = _evaluate(_cfg(small_test, exported_without_keras / "manifest.json", tmp_path / "r",
                            **{**LOOSE, "evaluate.profile": True, "evaluate.profile_runs": 20}), latency=True)
    rows = {r["name"]: r for r in result["artifacts"]}
    onnx = rows["onnx_fp32"]["profile"]
    assert onnx["runs"] == 20 and onnx["by_op_type"][0]["op_type"] == "Conv"  # convolutions dominate a ResNet
    # The TOP most expensive operator types, each with its share of the kernel time (4 digits): ~9 types
    # (all of them: shares add up to 1), or 10 when tf2onnx leaves Flatten's shape ops unfolded.
    by_type, rounding = onnx["by_op_type"], 0.00005 * len(onnx["by_op_type"]) + 1e-9
    assert 0 < len(by_type) <= profile.TOP, by_type
    assert [t["share"] for t in by_type] == sorted((t["share"] for t in by_type), reverse=True)
    for t in by_type:  # share = its time / all kernels' time
        assert t["share"] == pytest.approx(t["ms_per_run"] / onnx["kernel_ms_per_run"], abs=3e-4), (t, onnx)
    shares = sum(t["share"] for t in by_type)
    assert shares == pytest.approx(1.0, abs=rounding) if len(by_type) < profile.TOP else shares <= 1 + rounding
    assert "op profiler" in rows["tflite_int8"]["profile"]["unavailable"]
    assert "## Where the time goes" in (tmp_path / "r" / "evaluation.md").read_text()


def test_mobile_gate_reads_the_manifests_checks_and_fails_what_could_not_be_checked():
    import dataclasses

    from evaluate import gates
    from pipeline import config
    g = config.load().gates
    ready = {"builtin_ops_only": True, "custom_ops": [], "integer_io": True, "input_dtype": "uint8",
             "output_dtype": "uint8", "gpu_compatible": None, "gpu_incompatible_ops": None,
             "gpu_unchecked_why": "this analyzer build skips the GPU check"}
    row = {"name": "tflite_int8", "format": "tflite", "kind": "int8", "status": "ok", "accuracy": 0.9,
           "agreement": 1.0}
    ref = {"accuracy": 0.9, "test_images": 100}

    def mobile(record, cfg=g):
        return [x for x in gates.check([{**row, "mobile_ready": record} if record else row], cfg, ref, 100, True)
                if x["metric"] == "mobile_ready"]

    assert [x["passed"] for x in mobile(ready)] == [True]
    flex = mobile({**ready, "builtin_ops_only": False, "custom_ops": ["FlexCosh"]})
    assert not flex[0]["passed"] and "FlexCosh" in flex[0]["value"]
    float_io = mobile({**ready, "integer_io": False, "input_dtype": "float32"})
    assert not float_io[0]["passed"] and "float32" in float_io[0]["value"]
    gpu = mobile(ready, dataclasses.replace(g, mobile_checks=("builtin_ops", "gpu")))
    assert not gpu[0]["passed"] and "could not be checked" in gpu[0]["value"]
    assert "export again" in mobile(None)[0]["value"]
    assert mobile(ready, dataclasses.replace(g, mobile_checks=())) == []
