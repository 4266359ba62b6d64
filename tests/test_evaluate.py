"""The evaluate stage: scores, independent counts, failure isolation, and a gate that bites.

Artifacts are made by hand from the small_checkpoint fixture (a .h5 and TFLite
conversions), so these tests do not depend on the export stage; one end-to-end test
goes through export_all when it is available.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import manifest as manifest_mod

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 400  # test images per artifact: enough to see a gate bite, small enough for CI


def _tflite_bytes(model, folder):
    """fp32 TFLite via a SavedModel (the conversion path that works for Keras 3 models)."""
    import tensorflow as tf
    saved = Path(folder) / f"saved_{model.name}"
    model.export(saved, format="tf_saved_model", verbose=False)
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    shutil.rmtree(saved)
    return flatbuffer


def _entry(folder, name, fmt, precision, filename, shape=(32, 32, 3)):
    return {"name": name, "format": fmt, "precision": precision, "path": filename,
            **manifest_mod.file_facts(Path(folder) / filename),
            "input": {"name": "image", "dtype": "float32", "shape": [1, *shape], "quantization": None},
            "output": {"name": "probabilities", "dtype": "float32", "shape": [1, 10], "quantization": None}}


def _write_manifest(folder, entries, checkpoint=None):
    path = Path(folder) / "manifest.json"
    manifest_mod.write(path, {"source_checkpoint": {"path": str(checkpoint)} if checkpoint else None,
                              "artifacts": entries})
    return path


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


def _evaluate(cfg, manifest_path, report_dir, latency=False, latency_runs=5):
    import copy
    from evaluate.run import evaluate_all
    cfg = copy.deepcopy(cfg)
    cfg["evaluate"].update(latency_runs=latency_runs, warmup_runs=2, peak_probe_s=0.2)
    return evaluate_all(cfg, manifest_path, report_dir, limit=LIMIT, latency=latency, progress=lambda *a: None)


def _run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "evaluate", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_score_counts_agreement_and_confusion():
    from evaluate.accuracy import score
    labels = np.array([0, 1, 2, 3, 3])
    top1 = np.array([0, 1, 2, 2, 3])
    ref = np.array([0, 1, 1, 2, 3])
    s = score(labels, top1, ref, reference_accuracy=0.6)
    assert s["accuracy"] == pytest.approx(0.8)
    assert s["agreement"] == pytest.approx(0.8)
    assert s["diff_pp"] == pytest.approx(20.0)
    assert s["per_class_accuracy"][:4] == [1.0, 1.0, 1.0, 0.5]
    assert s["confusion"][3][2] == 1 and sum(map(sum, s["confusion"])) == 5


def test_gates_name_artifact_metric_value_threshold():
    from evaluate import gates
    cfg = {"max_drop_pp_float": 0.1, "max_drop_pp_int8": 1.0, "reference_tolerance_pp": 0.2,
           "min_agreement_float": 0.995, "min_agreement_int8": 0.97}
    rows = [{"name": "keras", "format": "keras", "precision": "fp32", "status": "ok", "accuracy": 0.90},
            {"name": "onnx_fp32", "format": "onnx", "precision": "fp32", "status": "ok", "accuracy": 0.8995,
             "agreement": 0.999},
            {"name": "tflite_int8", "format": "tflite", "precision": "int8", "status": "ok", "accuracy": 0.885,
             "agreement": 0.98},
            {"name": "onnx_int8", "format": "onnx", "precision": "int8", "status": "error", "error": "boom"}]
    results = gates.check(rows, cfg, card_accuracy=0.901, note=lambda *a: None)
    failed = gates.failures(results)
    assert failed == ["GATE FAILED: tflite_int8 accuracy_drop_pp = 1.5 (threshold 1.0)",
                      "GATE FAILED: onnx_int8 status = error (boom) (threshold ok)"]
    # The reference itself must be within 0.2 pp of its model card: 0.90 < 0.91 - 0.002.
    assert gates.failures(gates.check(rows[:1], cfg, card_accuracy=0.91, note=lambda *a: None)) == [
        "GATE FAILED: keras accuracy = 0.9 (threshold 0.908)"]


def test_runner_input_shape_is_the_models():
    from pipeline.runtimes import INPUT_SHAPE
    from pipeline.model import INPUT_SHAPE as MODEL_INPUT
    assert INPUT_SHAPE == MODEL_INPUT


def test_model_card_accuracy_is_read_beside_the_checkpoint(tmp_path, cfg):
    from evaluate import gates
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "metrics.json").write_text(json.dumps({"test_accuracy": 0.885}))
    manifest = {"source_checkpoint": {"path": str(tmp_path / "ref" / "model.h5")}}
    assert gates.model_card_accuracy(cfg, manifest, tmp_path / "m.json")[0] == 0.885
    assert gates.model_card_accuracy(cfg, {"source_checkpoint": {"path": str(tmp_path / "x.h5")}},
                                     tmp_path / "m.json")[0] is None


def test_flops_counted_from_the_graph():
    from evaluate.flops import count_flops
    from pipeline.model import build_preset
    flops = count_flops(build_preset("seed"))
    assert 280e6 < flops < 295e6  # ~287 MFLOP: 2 per multiply-add of every conv and dense


def test_accuracy_matches_an_independent_count(cfg, built, test_split, tmp_path):
    """evaluate's batched TFLite number equals a plain per-image loop with the raw LiteRT API."""
    from ai_edge_litert.interpreter import Interpreter
    manifest_path = _write_manifest(built, [_entry(built, "keras", "keras", "fp32", "model.h5"),
                                            _entry(built, "tflite_fp32", "tflite", "fp32", "model_fp32.tflite")])
    result = _evaluate(cfg, manifest_path, tmp_path / "reports", latency=True)
    rows = {r["name"]: r for r in result["artifacts"]}
    assert result["passed"], result["gate_failures"]

    interp = Interpreter(model_path=str(built / "model_fp32.tflite"), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    correct = 0
    index = np.linspace(0, len(test_split) - 1, LIMIT).round().astype(int)  # as --limit picks them
    for image, label in zip(test_split.images[index], test_split.labels[index]):
        interp.set_tensor(inp, image[None].astype(np.float32))
        interp.invoke()
        correct += int(interp.get_tensor(out).argmax() == label)
    independent = correct / LIMIT
    assert abs(rows["tflite_fp32"]["accuracy"] - independent) * 100 <= 0.2
    assert rows["tflite_fp32"]["agreement"] >= 0.99
    assert 0.05 < rows["keras"]["accuracy"] < 0.9 and len(rows["keras"]["per_class_accuracy"]) == 10

    # Latency, throughput and the report's shape.
    for row in rows.values():
        assert set(row["latency_ms"]) == {"p50", "p90", "p99"}
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p90"] <= row["latency_ms"]["p99"]
        assert row["throughput"]["images_per_s"] > 0 and row["throughput"]["batch"] == 64
    saved = json.loads((tmp_path / "reports" / "evaluation.json").read_text())
    assert saved["schema_version"] == 1 and [a["name"] for a in saved["artifacts"]] == ["keras", "tflite_fp32"]
    assert saved["flops_per_image"] > 70e6 and saved["peak_gflops"]["1"] > 1
    assert "| tflite_fp32 | tflite | fp32 |" in (tmp_path / "reports" / "evaluation.md").read_text()
    for png in ("accuracy_vs_latency.png", "confusion_reference.png"):
        assert (tmp_path / "reports" / png).read_bytes()[:4] == b"\x89PNG"


def test_bad_artifacts_fail_alone(cfg, built, tmp_path):
    """Missing file, sha256 mismatch, truncated file, wrong input shape: each its own error row."""
    data = (built / "model_fp32.tflite").read_bytes()
    (tmp_path / "good.tflite").write_bytes(data)
    (tmp_path / "truncated.tflite").write_bytes(data[: len(data) // 3])
    shutil.copy(built / "wrong_shape.tflite", tmp_path / "wrong_shape.tflite")
    (tmp_path / "tampered.tflite").write_bytes(data)
    entries = [_entry(tmp_path, "tflite_fp32", "tflite", "fp32", "good.tflite"),
               _entry(tmp_path, "truncated", "tflite", "fp32", "truncated.tflite"),
               _entry(tmp_path, "wrong_shape", "tflite", "fp32", "wrong_shape.tflite"),
               _entry(tmp_path, "tampered", "tflite", "fp32", "tampered.tflite"),
               {**_entry(tmp_path, "missing", "tflite", "fp32", "good.tflite"), "path": "nowhere.tflite"}]
    (tmp_path / "tampered.tflite").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # after its sha was taken
    result = _evaluate(cfg, _write_manifest(tmp_path, entries), tmp_path / "reports")
    rows = {r["name"]: r for r in result["artifacts"]}
    assert rows["tflite_fp32"]["status"] == "ok"
    assert rows["tflite_fp32"]["accuracy"] > 0.05
    assert "LiteRT cannot load" in rows["truncated"]["error"] or "crashed" in rows["truncated"]["error"]
    assert "input shape [1, 28, 28, 3], expected [batch, 32, 32, 3]" in rows["wrong_shape"]["error"]
    assert "does not match the manifest" in rows["tampered"]["error"]
    assert "is missing" in rows["missing"]["error"]
    assert not result["passed"]
    assert sorted(f.split()[2] for f in result["gate_failures"]) == ["missing", "tampered", "truncated",
                                                                    "wrong_shape"]
    md = (tmp_path / "reports" / "evaluation.md").read_text()
    assert "**error**" in md and "nowhere.tflite is missing" in md


def test_gate_bites_on_a_damaged_artifact(built, tmp_path):
    """`python -m evaluate` exits non-zero naming the perturbed artifact, its metric, value and threshold."""
    manifest_path = _write_manifest(built, [_entry(built, "keras", "keras", "fp32", "model.h5"),
                                            _entry(built, "tflite_fp32", "tflite", "fp32", "damaged.tflite")])
    proc = _run_cli("--manifest", manifest_path, "--report-dir", tmp_path / "reports", "--limit", LIMIT,
                    "--no-latency")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "GATE FAILED: tflite_fp32 accuracy_drop_pp = " in proc.stderr
    assert "(threshold 0.1)" in proc.stderr
    assert "GATE FAILED: tflite_fp32 agreement = " in proc.stderr
    assert "GATE FAILED: keras" not in proc.stderr
    assert "[2/2] tflite_fp32" in proc.stdout  # progress while it runs
    saved = json.loads((tmp_path / "reports" / "evaluation.json").read_text())
    assert saved["passed"] is False


def test_cli_help_and_bad_manifest(tmp_path):
    assert "--latency-runs" in _run_cli("--help").stdout
    (tmp_path / "manifest.json").write_text("{not json")
    proc = _run_cli("--manifest", tmp_path / "manifest.json", "--report-dir", tmp_path / "r")
    assert proc.returncode == 1 and "manifest.json: not valid JSON" in proc.stderr
    assert not (tmp_path / "r" / "evaluation.json").exists()


def test_end_to_end_through_export(cfg, small_checkpoint, tmp_path):
    """export_all writes a manifest; evaluate runs its ONNX artifact in onnxruntime and passes the gates."""
    import copy
    from export.run import export_all
    cfg = copy.deepcopy(cfg)
    cfg["export"].update(check_determinism=False, parity_images=32)  # export's own tests cover those
    export_all(cfg, checkpoint=small_checkpoint, out_dir=tmp_path / "artifacts", formats=["keras", "onnx_fp32"],
               progress=False)
    result = _evaluate(cfg, tmp_path / "artifacts" / "manifest.json", tmp_path / "reports")
    rows = {r["name"]: r for r in result["artifacts"]}
    assert [r["status"] for r in rows.values()] == ["ok", "ok"], [r["error"] for r in rows.values()]
    assert rows["onnx_fp32"]["agreement"] >= 0.995 and abs(rows["onnx_fp32"]["diff_pp"]) <= 0.1
    assert result["passed"] and len(result["gates"]) == 2
    assert result["model_card_accuracy"] is None and "metrics.json" in result["model_card_source"]
