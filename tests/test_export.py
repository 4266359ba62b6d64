"""Export stage: every format loads and runs in its runtime, parity, manifest, atomicity, bad inputs, QAT.

One CLI export of the small checkpoint (in a subprocess, as users run it) is shared by
most tests (and by tests/test_deploy.py and tests/test_evaluate.py: tests/conftest.py's
shared_export); a second one checks that re-export writes the same bytes.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts import ARTIFACTS, DEFAULT_FORMATS

ROOT = Path(__file__).resolve().parent.parent
ALL = list(DEFAULT_FORMATS)  # the artifact table's default kinds
# Fewer calibration and parity images for speed, gates lowered for the seconds-fitted small checkpoint
# (tests/conftest.py says why); the fp32 artifacts are still held to 100% below.
from conftest import EARLY, EXPORT_FAST as FAST, EXPORT_GATES as GATES, copy_export, export_cli  # noqa: E402
DETERMINISM = ["saved_model", "tflite_fp16", "tflite_int8"]  # re-exported to compare bytes (see export/run.py)


def cli(*args, env=None):
    return export_cli(*args, env=env)


@pytest.fixture(scope="module")
def exported(shared_export):
    """The session's one CLI export of every default kind (tests/conftest.py: shared_export)."""
    return shared_export


@EARLY.job("keras_export", needed_by="keras_export")
def _keras_export(tmp_path_factory, small_checkpoint, **_):
    out = tmp_path_factory.mktemp("keras_export") / "out"
    return out, cli("--checkpoint", small_checkpoint, "--out-dir", out, "--formats", "keras", "--quiet", *FAST)


@pytest.fixture(scope="module")
def keras_export(small_checkpoint):
    """A CLI export of the keras kind only: the "previous set" the crash and kill tests start from (copied).
    Started early (tests/conftest.py: EARLY)."""
    out, proc = EARLY.result("keras_export", small_checkpoint=small_checkpoint)
    assert proc.returncode == 0, proc.stderr
    return out


def small_cfg(checkpoint, out_dir, formats, **overrides):
    """The project config with the fast settings above and `overrides` {"section.key": value}."""
    from pipeline import config
    items = {**GATES, "export.checkpoint": str(checkpoint), "export.out_dir": str(out_dir),
             "export.formats": list(formats), **overrides}
    return config.load(None, list(items.items()))


# ---------------------------------------------------------------- manifest

def test_manifest_names_every_artifact_with_its_facts(exported, small_checkpoint):
    from pipeline import artifacts, atomic, manifest
    out, m = exported
    assert [e["name"] for e in m["artifacts"]] == ALL
    sha = atomic.sha256_file(small_checkpoint)
    assert m["source_checkpoint"] == {"file": small_checkpoint.name, "sha256": sha, "preset": "resnet20v1",
                                      "params": 274_442}
    assert m["labels"]["path"] == "labels.txt" and m["tool_versions"]["tensorflow"]
    assert m["reference"]["accuracy"] is None and "metrics.json" in m["reference"]["why"]
    assert m["calibration"]["images"] == 300 and len(m["calibration"]["sha256"]) == 64
    for e in m["artifacts"]:
        manifest.verify(out / "manifest.json", e)  # exists and sha256 matches
        row = artifacts.ARTIFACTS[e["name"]]
        assert e["path"] == row.file and e["kind"] == row.kind and e["deterministic"] == row.deterministic
        assert e["bytes"] > 100_000
        batch = row.batch or None  # the phone's kinds have batch 1 fixed, the rest a dynamic batch
        assert e["input"]["shape"] == [batch, 32, 32, 3] and e["output"]["shape"] == [batch, 10], e["name"]
    assert manifest.find(m, "onnx_int8")["settings"]["format"] == "qdq"
    assert (out / "labels.txt").read_text().split() == ["airplane", "automobile", "bird", "cat", "deer",
                                                        "dog", "frog", "horse", "ship", "truck"]
    resolved = json.loads((out / "config.resolved.json").read_text())
    assert resolved["export"]["checkpoint"] == str(small_checkpoint)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging/temp leftovers
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_manifest_carries_mobile_checks_and_per_layer_error(exported):
    _, m = exported
    for e in m["artifacts"]:
        if e["format"] == "tflite":
            ready = e["mobile_ready"]
            assert ready["builtin_ops_only"] and ready["custom_ops"] == [] and ready["ops"]["CONV_2D"] >= 1
            assert ready["integer_io"] is (True if e["precision"] == "int8" else None)
            # the GPU delegate's rules (pipeline/gpu_rules.py): a static batch-1 model passes; a dynamic batch
            # fails, among others on the SHAPE op its Flatten computes the batch size with
            static = None not in e["input"]["shape"]
            ops = {o["op"] for o in ready["gpu_incompatible_ops"]}
            assert ready["gpu_compatible"] is static and (not ops if static else "SHAPE" in ops), (e["name"], ready)
        else:
            assert "mobile_ready" not in e
    # the exported model's own layer names, as its file stores them (a model rebuilt in this process would be
    # named by this process's Keras name counter, which depends on what ran before)
    import h5py
    with h5py.File(exported[0] / "model_fp32.h5", "r") as f:
        stored = json.loads(f.attrs["model_config"])
    keras_layers = {layer["config"]["name"] for layer in stored["config"]["layers"]}
    for name in ("onnx_int8", "tflite_int8"):
        rows = manifest_find(m, name)["layer_error"]
        layers = {r["layer"] for r in rows} - {None}  # keyed to the layer whose output a fused op computes
        assert len(layers) > 10 and layers <= keras_layers, layers - keras_layers
        assert all(np.isfinite(r["sqnr_db"]) for r in rows)


def manifest_find(m, name):
    from pipeline import manifest
    return manifest.find(m, name)


def test_onnx_int8_runs_every_convolution_as_an_integer_kernel(exported, tmp_path):
    """The int8 file is only faster if onnxruntime fuses each DQ -> Conv -> Q into QLinearConv: with
    int8 activations (the old default) it left most convolutions in float on x86."""
    import collections

    import onnx
    import onnxruntime as ort
    out, m = exported
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out / "model_int8.onnx"), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(out / "model_fp32.onnx")).graph.node)
    assert ops["Conv"] == 0 and ops["QLinearConv"] == convs, ops
    settings = manifest_find(m, "onnx_int8")["settings"]
    assert (settings["activations"], settings["weights"]) == ("uint8", "int8") and settings["why"]["activations"]


def test_parity_is_recorded_and_above_the_gates(exported):
    _, m = exported
    for e in m["artifacts"]:
        p = e["parity"]
        assert p["images"] == 256
        if e["precision"] == "fp32":
            assert p["top1_agreement"] == 1.0, e["name"]
        elif e["precision"] == "fp16":
            assert p["top1_agreement"] >= 0.99, e["name"]
        else:
            assert p["top1_agreement"] >= 0.95, e["name"]
    by = {e["name"]: e["parity"]["max_abs_diff"] for e in m["artifacts"]}
    assert by["keras"] == 0.0
    assert max(by["saved_model"], by["onnx_fp32"], by["tflite_fp32"]) < 1e-4
    assert by["tflite_fp16"] < 1e-2
    assert 0 < by["tflite_int8"] < 0.35 and 0 < by["onnx_int8"] < 0.35  # int8: close, not bit-exact


# ---------------------------------------------------------------- each format, in its own runtime

@pytest.fixture(scope="module")
def reference(small_checkpoint, calibration):
    from pipeline import checkpoint
    model, _ = checkpoint.load(small_checkpoint)
    x = calibration.images[-40:]  # not only the parity batch
    return x, model.predict(x.astype(np.float32), verbose=0)


@pytest.mark.parametrize("name", ALL)
def test_artifact_loads_and_runs_in_its_runtime(exported, reference, name):
    from export import parity
    from pipeline import artifacts, manifest
    out, m = exported
    entry = manifest.find(m, name)
    x, want = reference
    got = parity.run(artifacts.ARTIFACTS[name], out / entry["path"], x)
    assert got.shape == (40, 10)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=0.05)  # probabilities, preprocessing inside
    tol = 1e-4 if entry["precision"] == "fp32" else 1e-2 if entry["precision"] == "fp16" else 0.35
    assert np.max(np.abs(got - want)) < tol
    assert np.mean(got.argmax(1) == want.argmax(1)) >= (0.97 if entry["precision"] in ("fp32", "fp16") else 0.9)


def test_onnx_has_one_input_one_output_and_dynamic_batch(exported, reference):
    import onnx
    import onnxruntime as ort
    out, m = exported
    x, _ = reference
    for name in ("onnx_fp32", "onnx_int8"):
        entry = next(e for e in m["artifacts"] if e["name"] == name)
        proto = onnx.load(str(out / entry["path"]))
        assert [i.name for i in proto.graph.input] == ["image"]
        assert [o.name for o in proto.graph.output] == ["probabilities"]
        assert any(o.version == 17 for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        sess = ort.InferenceSession(str(out / entry["path"]), providers=["CPUExecutionProvider"])
        for n in (1, 7):
            assert sess.run(None, {"image": x[:n].astype(np.float32)})[0].shape == (n, 10)
    int8 = onnx.load(str(out / "model_int8.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) > 10  # QDQ format


def test_saved_model_serving_signature(exported, reference):
    import tensorflow as tf
    out, _ = exported
    fn = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    spec = fn.structured_input_signature[1]["image"]
    assert spec.shape.as_list() == [None, 32, 32, 3] and spec.dtype == tf.float32
    x, want = reference
    np.testing.assert_allclose(fn(image=tf.constant(x[:5], tf.float32))["probabilities"].numpy(), want[:5],
                               atol=1e-5)


def test_tflite_int8_takes_and_gives_uint8_and_embeds_labels(exported):
    from export import tflite_export
    from pipeline.model import CLASSES
    out, m = exported
    entry = next(e for e in m["artifacts"] if e["name"] == "tflite_int8")
    assert entry["input"]["dtype"] == "uint8" and entry["output"]["dtype"] == "uint8"
    q_in, q_out = entry["input"]["quantization"], entry["output"]["quantization"]
    assert abs(q_in["scale"] - 1.0) < 0.01 and q_in["zero_point"] == 0  # raw pixels pass through
    assert 0 < q_out["scale"] <= 1 / 255 + 1e-6
    for e in m["artifacts"]:
        if e["format"] == "tflite":
            assert tflite_export.read_labels(out / e["path"]) == list(CLASSES)
            if not ARTIFACTS[e["name"]].integer_io:
                assert e["input"]["dtype"] == "float32" and e["input"]["quantization"] is None


def test_reexport_writes_the_same_bytes(exported, small_checkpoint, tmp_path):
    out, m = exported
    proc = cli("--checkpoint", small_checkpoint, "--out-dir", tmp_path, "--quiet", "--formats",
               ",".join(DETERMINISM), *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = {e["name"]: e["sha256"] for e in json.loads((tmp_path / "manifest.json").read_text())["artifacts"]}
    assert sorted(again) == sorted(DETERMINISM)
    for e in m["artifacts"]:
        if e["name"] in again and e["deterministic"]:  # the manifest only promises these
            assert again[e["name"]] == e["sha256"], e["name"]
    assert [e["name"] for e in m["artifacts"] if not e["deterministic"]] == \
        [name for name in ALL if not ARTIFACTS[name].deterministic] == ["onnx_fp32", "onnx_int8", "onnx_fp32_b1",
                                                                         "onnx_int8_b1", "ort_fp32_b1", "ort_int8_b1"]


# ---------------------------------------------------------------- failures leave nothing behind

def test_parity_gate_refuses_and_writes_nothing(small_checkpoint, tmp_path):
    from export.run import export_all
    from pipeline.errors import PipelineError
    cfg = small_cfg(small_checkpoint, tmp_path / "out", ["keras", "onnx_int8"], **{"gates.min_parity_int8": 1.0})
    with pytest.raises(PipelineError, match=r"onnx_int8: top-1 agreement .* below gates.min_parity_int8"):
        export_all(cfg, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a staging folder beside it


def test_crash_mid_export_keeps_previous_export_whole(small_checkpoint, keras_export, tmp_path, monkeypatch):
    from export import tflite_export
    from export.run import export_all
    from pipeline import manifest
    out = copy_export(keras_export, tmp_path / "out")  # the previous set: a keras-only export
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def crash(*a, **k):
        raise RuntimeError("simulated converter crash")
    monkeypatch.setattr(tflite_export, "convert_saved_model", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        export_all(small_cfg(small_checkpoint, out, ["keras", "saved_model", "tflite_fp32"]), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left
    m = manifest.read(out / "manifest.json")
    assert [e["name"] for e in m["artifacts"]] == ["keras"]
    for e in m["artifacts"]:
        manifest.verify(out / "manifest.json", e)


KILL_POINTS = ["staging", "built:keras", "built:onnx_fp32", "publish"]


def _kill_at(point):
    """Job: copy the keras-only export to a folder's `out`, then SIGKILL an export of keras,onnx_fp32 into it
    at `point` (export.run's CIFAR_EDGE_EXPORT_KILL_AT): (the killed CLI process, the folder, the
    manifest bytes before the kill)."""
    def job(tmp_path_factory, small_checkpoint, **_):
        out, proc = EARLY.result("keras_export", small_checkpoint=small_checkpoint)
        assert proc.returncode == 0, proc.stderr
        folder = tmp_path_factory.mktemp("kill")
        copy = copy_export(out, folder / "out")
        before = (copy / "manifest.json").read_bytes()
        killed = cli("--checkpoint", small_checkpoint, "--out-dir", copy, "--formats", "keras,onnx_fp32", "--quiet",
                     *FAST, env={"CIFAR_EDGE_EXPORT_KILL_AT": point})
        return killed, folder, before
    return job


for _point in KILL_POINTS:  # independent processes: started early, side by side (tests/conftest.py: EARLY)
    EARLY.job(f"kill:{_point}", needed_by="killed_exports")(_kill_at(_point))


@pytest.fixture(scope="module")
def killed_exports(small_checkpoint, keras_export):
    """killed_exports(point) -> what the job _kill_at(point) returned."""
    return lambda point: EARLY.result(f"kill:{point}", small_checkpoint=small_checkpoint)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_minus_9_at_any_point_leaves_a_whole_set(small_checkpoint, killed_exports, capsys, point):
    """SIGKILL inside export at each point: the folder holds the previous set with its manifest,
    and the next export removes the dead run's staging folder and publishes its own set.

    The previous set is a copy of one keras-only CLI export; the killed export is a CLI process of
    its own; the next export is `python -m export`'s main in this process (the same code, no restart)."""
    from export.__main__ import main
    from pipeline import manifest
    killed, tmp_path, before = killed_exports(point)
    out = tmp_path / "out"
    assert killed.returncode == -9, killed.stderr
    assert (out / "manifest.json").read_bytes() == before  # the previous set, whole
    m = manifest.read(out / "manifest.json")
    assert [e["name"] for e in m["artifacts"]] == ["keras"] and {p.name for p in out.iterdir()} == {
        "manifest.json", "labels.txt", "config.resolved.json", "model_fp32.h5"}
    for e in m["artifacts"]:
        manifest.verify(out / "manifest.json", e)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.staging-")], "the kill left no staging"
    capsys.readouterr()
    assert main(["--checkpoint", str(small_checkpoint), "--out-dir", str(out), "--formats", "keras,onnx_fp32",
                 *FAST]) == 0
    again = capsys.readouterr()
    assert "left by an interrupted export" in again.out, again.out + again.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [e["name"] for e in manifest.read(out / "manifest.json")["artifacts"]] == ["keras", "onnx_fp32"]


# ---------------------------------------------------------------- bad inputs: one line, exit 1, nothing written

def _save(model, path):
    model.save(path)
    return path


def bad_checkpoints(tmp):
    import keras
    from keras import layers
    yield "missing", tmp / "nope.h5", "checkpoint not found"
    (tmp / "text.h5").write_text("not a model")
    yield "not hdf5", tmp / "text.h5", "not an HDF5 file"
    other = keras.Sequential([keras.Input((32, 32, 3)), layers.Flatten(), layers.Dense(10, activation="softmax")])
    yield "other architecture", _save(other, tmp / "other.h5"), "matches no model preset"
    small = keras.Sequential([keras.Input((28, 28, 3)), layers.Flatten(), layers.Dense(10, activation="softmax")])
    yield "input shape", _save(small, tmp / "small.h5"), "input shape"
    inp = keras.Input((32, 32, 3))
    lam = keras.Model(inp, layers.Dense(10, activation="softmax")(layers.Flatten()(layers.Lambda(lambda t: t * 2)(inp))))
    yield "lambda", _save(lam, tmp / "lambda.h5"), "cannot load"


def test_bad_checkpoints_are_refused_in_one_line(tmp_path, capsys):
    from export.__main__ import main
    out = tmp_path / "out"
    for what, path, message in bad_checkpoints(tmp_path):
        with pytest.raises(SystemExit) as exc:
            main(["--checkpoint", str(path), "--out-dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 1, what
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and message in err, (what, err)
        assert str(path.name) in err, what
        assert not out.exists(), what


def test_unwritable_out_dir_is_refused(small_checkpoint, tmp_path, capsys):
    from export.__main__ import main
    (tmp_path / "a_file").write_text("x")  # a folder under a file: unwritable even for root
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(small_checkpoint), "--out-dir", str(tmp_path / "a_file" / "out")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "not writable" in err and "a_file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_unknown_format_is_refused(small_checkpoint, tmp_path):
    from pipeline.errors import PipelineError
    with pytest.raises(PipelineError, match="'tflite_int4' is not one of keras, saved_model"):
        small_cfg(small_checkpoint, tmp_path, ["tflite_int4"])


# ---------------------------------------------------------------- QAT on a tiny budget

@pytest.mark.training
def test_qat_int8_on_a_tiny_budget(qat_export):
    """The mechanism only: seconds of fine-tuning cannot settle the fake-quant ranges, so no parity gate.
    The session's one QAT export (tests/conftest.py: qat_export; tests/test_qat.py checks its fine-tune)."""
    from export import parity, tflite_export
    from pipeline import artifacts
    m, out = qat_export.manifest, qat_export.out
    entry = m["artifacts"][-1]
    assert [e["name"] for e in m["artifacts"]] == ["keras", "tflite_qat_int8"]
    assert entry["precision"] == "qat_int8" and entry["deterministic"] is False
    assert entry["input"]["dtype"] == "uint8" and entry["output"]["dtype"] == "uint8"
    assert entry["parity"]["images"] == 256 and entry["parity"]["top1_agreement"] > 0.2  # not random
    assert tflite_export.read_labels(out / entry["path"])[0] == "airplane"
    probs = parity.run(artifacts.ARTIFACTS["tflite_qat_int8"], out / entry["path"],
                       np.zeros((2, 32, 32, 3), np.uint8))
    assert probs.shape == (2, 10) and abs(probs.sum(1) - 1).max() < 0.05
