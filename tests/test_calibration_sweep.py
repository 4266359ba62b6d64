"""evaluate/calibration_sweep.py: int8 accuracy vs calibration method and size, on a small real export.

The fp32 model is a small CNN built with onnx.helper (seconds, no TensorFlow), in a manifest that
names the committed calibration set; the sweep runs 2 methods x 2 sizes on 200 test images.
"""
import copy
import json
import shutil

import numpy as np
import pytest

from pipeline import manifest as manifest_mod
from pipeline.errors import PipelineError

N_TEST = 200
SIZES = (10, 50)
METHODS = ("minmax", "percentile")


def _tiny_onnx(path):
    """A small CNN with fixed random weights, built with onnx.helper (no TensorFlow): NHWC float
    pixels 0..255 "image" -> 10 "probabilities", the I/O contract of the exported models."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=1.0):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
             init("w1", 16, 3, 3, 3, scale=0.5), init("b1", 16, scale=0.1),
             init("w2", 32, 16, 3, 3, scale=0.2), init("b2", 32, scale=0.1),
             init("w3", 10, 32, scale=1.0), init("b3", 10, scale=0.1)]
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["nchw", "inv255"], ["x0"]),
             helper.make_node("Conv", ["x0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def exported(cfg, tmp_path_factory):
    """(manifest path, manifest dict, cfg): a manifest with one onnx_fp32 artifact and the committed
    calibration set, as export writes them."""
    from pipeline import atomic
    from pipeline.artifacts import ARTIFACTS
    from pipeline.config import project_path
    from pipeline.model import CLASSES
    out = tmp_path_factory.mktemp("exp") / "artifacts"
    out.mkdir()
    row = ARTIFACTS["onnx_fp32"]
    onnx_file = row.file
    _tiny_onnx(out / onnx_file)
    (out / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    io = {"dtype": "float32", "quantization": None}
    entry = {"name": "onnx_fp32", "format": row.format, "precision": row.precision, "kind": row.kind,
             "path": onnx_file, **manifest_mod.file_facts(out / onnx_file),
             "input": {"name": "image", "shape": [None, 32, 32, 3], **io},
             "output": {"name": "probabilities", "shape": [None, 10], **io}}
    path = out / manifest_mod.FILE_NAME
    manifest_mod.write(path, {
        "source_checkpoint": {"file": "tiny", "sha256": "", "preset": "tiny", "params": 0},
        "reference": {"accuracy": None, "why": "a test model"},
        "calibration": {"source": cfg.data.calibration, "images": 1000,
                        "sha256": atomic.sha256_file(project_path(cfg.data.calibration))},
        "labels": {"path": "labels.txt", "sha256": atomic.sha256_file(out / "labels.txt")},
        "classes": list(CLASSES), "artifacts": [entry]})
    return path, manifest_mod.read(path), cfg


@pytest.fixture(scope="module")
def small_test_set(test_split):
    """200 test images, 20 per class (the committed split is not sorted by class, so pick by label)."""
    idx = np.concatenate([np.flatnonzero(test_split.labels == c)[:N_TEST // 10] for c in range(10)])
    return test_split.images[idx], test_split.labels[idx]


def _onnx_top1(path, images):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: images.astype(np.float32)})[0].argmax(1)


def _onnx_accuracy(path, images, labels):
    return float(np.mean(_onnx_top1(path, images) == labels))


@pytest.fixture(scope="module")
def swept(exported, small_test_set, calibration, tmp_path_factory):
    """The sweep's result, the (settings, images, copy of the int8 model) of each write_int8 call, its progress."""
    from evaluate.calibration_sweep import sweep
    from pipeline import onnx_quantize
    manifest_path, manifest, cfg = exported
    calls, real, keep = [], onnx_quantize.write_int8, tmp_path_factory.mktemp("int8")

    def recording(fp32_path, path, images, settings, *args, **kwargs):
        out = real(fp32_path, path, images, settings, *args, **kwargs)
        calls.append((dict(settings), np.array(images), shutil.copy(path, keep / f"{len(calls)}.onnx")))
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(onnx_quantize, "write_int8", recording)
    lines = []
    try:
        result = sweep(manifest_path, manifest, cfg, *small_test_set, sizes=SIZES + (5000,), methods=METHODS,
                       progress=lines.append)
    finally:
        mp.undo()
    return result, calls, lines


def test_sweep_quantizes_each_method_and_size_and_scores_them(exported, swept, small_test_set, calibration):
    from pipeline.onnx_quantize import int8_settings
    from pipeline.sampling import spread
    manifest_path, manifest, cfg = exported
    result, calls, lines = swept

    fp32 = manifest_mod.verify(manifest_path, manifest_mod.find(manifest, "onnx_fp32"))
    assert result["float_accuracy"] == pytest.approx(_onnx_accuracy(fp32, *small_test_set), abs=1e-6)
    assert result["test_images"] == N_TEST
    assert result["calibration"] == {"source": manifest["calibration"]["source"],
                                     "sha256": manifest["calibration"]["sha256"], "images": len(calibration)}

    assert [(r["method"], r["images"]) for r in result["rows"]] == [(m, s) for m in METHODS for s in SIZES]
    for r in result["rows"]:
        assert set(r) == {"method", "images", "accuracy", "drop_pp", "quantize_s"}
        assert r["drop_pp"] == pytest.approx((result["float_accuracy"] - r["accuracy"]) * 100, abs=0.006)
        assert r["quantize_s"] > 0

    # Each quantization got the export's settings with only the method replaced, and `size` images
    # spread over the classes of the manifest's calibration set.
    base = int8_settings(cfg.export)
    assert len(calls) == len(result["rows"])
    float_top1 = _onnx_top1(fp32, small_test_set[0])
    for (settings, images, model), r in zip(calls, result["rows"]):
        assert settings == {**base, "calibration": r["method"]}
        # The row scores the model this call made, and that model is a working int8 copy of the float one.
        top1 = _onnx_top1(model, small_test_set[0])
        assert r["accuracy"] == pytest.approx(float(np.mean(top1 == small_test_set[1])), abs=1e-6)
        assert np.mean(top1 == float_top1) >= 0.9, (r, np.mean(top1 == float_top1))
        np.testing.assert_array_equal(images, calibration.images[spread(calibration.labels, r["images"])])
        assert len(set(calibration.labels[::len(calibration) // r["images"]][:r["images"]])) == 10

    assert result["notes"][0] == f"5000 images skipped: the calibration set has only {len(calibration)}"
    assert any("5000 images skipped" in line for line in lines)


def test_write_makes_the_table_and_the_chart(swept, tmp_path):
    from evaluate.calibration_sweep import write
    result = swept[0]
    report = tmp_path / "reports"
    md_path, png_path = write(result, report)
    assert sorted(p.name for p in report.iterdir()) == ["calibration_sweep.md", "calibration_sweep.png"]
    md = md_path.read_text()
    assert "not for choosing" in md and "export default" in md
    assert f"{result['float_accuracy'] * 100:.2f}%" in md
    assert "| method | 10 images | 50 images |" in md
    for m in METHODS:
        cells = [next(r for r in result["rows"] if r["method"] == m and r["images"] == s) for s in SIZES]
        assert any(line.startswith(f"| {m}") and line.endswith(
            " | ".join(f"{c['accuracy'] * 100:.2f} ({c['drop_pp']:+.2f})" for c in cells) + " |")
            for line in md.splitlines()), (m, md)
    assert "5000 images skipped" in md
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_calibration_set_that_changed_since_export_is_refused(exported, small_test_set, tmp_path):
    from evaluate.calibration_sweep import sweep
    manifest_path, manifest, cfg = exported
    bad = copy.deepcopy(manifest)
    bad["calibration"]["sha256"] = "0" * 64
    with pytest.raises(PipelineError, match=r"cifar10-jpeg-calibration\.tar\.gz.*does not match"):
        sweep(manifest_path, bad, cfg, *small_test_set, sizes=(10,), methods=("minmax",), progress=None)

    missing = copy.deepcopy(manifest)
    missing["calibration"]["source"] = str(tmp_path / "gone.tar.gz")
    with pytest.raises(PipelineError, match=r"gone\.tar\.gz.*missing"):
        sweep(manifest_path, missing, cfg, *small_test_set, sizes=(10,), methods=("minmax",), progress=None)

    with pytest.raises(PipelineError, match="unknown method"):
        sweep(manifest_path, manifest, cfg, *small_test_set, sizes=(10,), methods=("kl",), progress=None)


def test_a_damaged_fp32_artifact_is_refused(exported, small_test_set, tmp_path):
    from evaluate.calibration_sweep import sweep
    manifest_path, manifest, cfg = exported
    moved = tmp_path / "artifacts"
    shutil.copytree(manifest_path.parent, moved)
    entry = manifest_mod.find(manifest, "onnx_fp32")
    (moved / entry["path"]).write_bytes((moved / entry["path"]).read_bytes()[:-10])
    with pytest.raises(PipelineError, match="onnx_fp32.*sha256"):
        sweep(moved / "manifest.json", json.loads((moved / "manifest.json").read_text()), cfg,
              *small_test_set, sizes=(10,), methods=("minmax",), progress=None)


def test_drop_is_float_minus_int8_in_pp(exported, small_test_set, monkeypatch, tmp_path):
    """With the scores fixed (float 80%, int8 75%), every row drops +5.00 pp and the table says so."""
    from evaluate import calibration_sweep
    from export import onnx_export
    monkeypatch.setattr(onnx_export, "write_int8", lambda fp32, path, images, settings: path.write_bytes(b"x"))
    monkeypatch.setattr(calibration_sweep, "_top1_accuracy",
                        lambda name, path, images, labels: 0.8 if name == "onnx_fp32" else 0.75)
    result = calibration_sweep.sweep(*exported, *small_test_set, sizes=(10, 20), methods=("entropy",),
                                     progress=None)
    assert result["float_accuracy"] == 0.8
    assert [(r["images"], r["accuracy"], r["drop_pp"]) for r in result["rows"]] == [(10, 0.75, 5.0), (20, 0.75, 5.0)]
    md, _ = calibration_sweep.write(result, tmp_path)
    assert "| entropy | 75.00 (+5.00) | 75.00 (+5.00) |" in md.read_text()


def test_methods_that_make_the_same_model_are_noted(exported, small_test_set):
    """onnxruntime's Entropy at its defaults is MinMax; the report says so instead of implying two results."""
    from evaluate.calibration_sweep import sweep
    result = sweep(*exported, *small_test_set, sizes=(10,), methods=("minmax", "entropy", "percentile"),
                   progress=None)
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["entropy"]["accuracy"] == rows["minmax"]["accuracy"]
    assert "entropy made byte-identical int8 models to minmax at every size" in " ".join(result["notes"])
    assert "minmax made" not in " ".join(result["notes"])  # each pair once, named in method order
    assert result["notes"][0] == ("entropy made byte-identical int8 models to minmax at every size: onnxruntime's "
                               "Entropy calibrator, at its defaults (num_bins = num_quantized_bins = 128), has a "
                               "single candidate threshold, the full range, which is MinMax")
