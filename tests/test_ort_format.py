"""ONNX Runtime Mobile's .ort format (export/ort_export.py): the ort_*_b1 kinds of the session's shared export
(tests/conftest.py, the small checkpoint), their required-operators configs, the manifest, the mobile bundle,
evaluate, and the refusals (a tampered file, an op off the allowlist)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import atomic, graph_ops, manifest
from pipeline.artifacts import ARTIFACTS
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
ORT_KINDS = [row for row in ARTIFACTS.values() if row.format == "ort"]
PHONE = [row.name for row in ARTIFACTS.values() if row.mobile]  # the bundle's kinds (the .ort sources among them)
# fp32: onnxruntime's graph optimizations reorder float sums; int8: the replayed fusions run the same QLinear*
# kernels as the ONNX model, so the probabilities are the same up to float rounding.
ATOL = {"fp32": 1e-5, "int8": 1e-6}


def run_py(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def exported(shared_export, tmp_path_factory):
    """The phone's kinds of the shared export, in a folder of their own: its manifest path."""
    from conftest import export_subset
    return export_subset(shared_export[0], tmp_path_factory.mktemp("ort") / "artifacts", PHONE) / "manifest.json"


def _paths(manifest_path, row):
    """(verified .ort, verified b1 ONNX it was converted from) of an ort kind."""
    data = manifest.read(manifest_path)
    return (manifest.verify(manifest_path, manifest.find(data, row.name)),
            manifest.verify(manifest_path, manifest.find(data, row.needs)))


def _config_ops(text):
    """{(domain, op)} a required-operators config names, ai.onnx as ""."""
    out = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            domain, _, ops = line.split(";")
            out |= {("" if domain == "ai.onnx" else domain, op) for op in ops.split(",")}
    return out


@pytest.mark.parametrize("row", ORT_KINDS, ids=lambda r: r.name)
def test_ort_loads_and_matches_the_onnx_it_came_from(exported, test_split, row):
    import onnxruntime as ort

    from pipeline.runtimes import OnnxRunner, OrtRunner
    ort_path, onnx_path = _paths(exported, row)
    session = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])  # plain onnxruntime loads it
    assert session.get_inputs()[0].shape == [1, 32, 32, 3] and session.get_outputs()[0].shape == [1, 10]
    images = test_split.images[::500]  # 20 images across the classes, one at a time (batch 1 fixed)
    got = np.concatenate([OrtRunner(row.name, ort_path, 1).predict(x[None]) for x in images])
    want = np.concatenate([OnnxRunner(row.needs, onnx_path, 1).predict(x[None]) for x in images])
    np.testing.assert_allclose(got, want, atol=ATOL[row.precision], rtol=0)
    assert (got.argmax(1) == want.argmax(1)).all()
    ops = graph_ops.ort_ops(ort_path)  # the graph and the ops its saved (Runtime style) optimizations create
    assert set(ops) <= graph_ops.ONNX_OPS | graph_ops.ORT_REPLAY_OPS, set(ops) - graph_ops.ONNX_OPS
    assert ("" if row.precision == "int8" else "com.microsoft", "QLinearConv" if row.precision == "int8"
            else "FusedConv") in ops, ops


@pytest.mark.parametrize("row", ORT_KINDS, ids=lambda r: r.name)
def test_required_operators_config_names_the_ops(exported, row):
    ort_path, onnx_path = _paths(exported, row)
    config = ort_path.parent / row.ops_config
    text = config.read_text()
    ops = _config_ops(text)
    assert set(graph_ops.onnx_ops(onnx_path)) <= ops, set(graph_ops.onnx_ops(onnx_path)) - ops
    assert {("", "Conv"), ("", "Gemm"), ("", "Softmax")} <= ops
    if row.precision == "int8":
        assert any(op.startswith("QLinear") for _, op in ops), ops
    assert "/" not in text, text  # no temporary (or any machine) path is shipped
    entry = manifest.find(manifest.read(exported), row.name)
    assert entry["settings"]["required_operators"] == sorted(f"{d or 'ai.onnx'}:{op}" for d, op in ops)


@pytest.mark.parametrize("row", ORT_KINDS, ids=lambda r: r.name)
def test_manifest_entry_points_at_the_model_and_its_config(exported, row):
    entry = manifest.find(manifest.read(exported), row.name)
    folder = exported.parent
    assert entry["format"] == "ort" and entry["path"] == row.file and row.file.endswith(".ort")
    assert entry["sha256"] == atomic.sha256_file(folder / row.file)
    assert entry["ops_config"] == {"path": row.ops_config, "bytes": (folder / row.ops_config).stat().st_size,
                                   "sha256": atomic.sha256_file(folder / row.ops_config)}
    assert manifest.verify_ops_config(exported, entry) == folder / row.ops_config
    assert entry["settings"]["converted_from"] == row.needs and entry["settings"]["optimization_style"] == "Runtime"
    assert entry["input"]["shape"] == [1, 32, 32, 3] and entry["output"]["shape"] == [1, 10]
    assert entry["parity"]["top1_agreement"] >= 0.95  # the shared export's gates (tests/conftest.py)


def test_bundle_ships_the_ort_models_and_their_configs(exported, tmp_path):
    from export import mobile
    spec = mobile.build(exported, tmp_path / "mobile")
    data = manifest.read(exported)
    for row in ORT_KINDS:
        shipped = spec["models"][row.mobile]
        entry = manifest.find(data, row.name)
        assert shipped["file"] == row.file and shipped["sha256"] == entry["sha256"]
        assert atomic.sha256_file(tmp_path / "mobile" / row.file) == entry["sha256"]
        assert shipped["ops_config"] == {"file": row.ops_config, "sha256": entry["ops_config"]["sha256"]}
        assert atomic.sha256_file(tmp_path / "mobile" / row.ops_config) == entry["ops_config"]["sha256"]
        assert shipped["input"]["shape"] == [1, 32, 32, 3]


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_tampered_ort_or_config_is_refused_in_one_line(exported, tmp_path, test_split):
    from PIL import Image

    from conftest import copy_export
    folder = copy_export(exported.parent, tmp_path / "artifacts")
    row = ARTIFACTS["ort_int8_b1"]
    _tamper(folder / row.file)
    image = tmp_path / "cat.png"
    Image.fromarray(test_split.images[0]).save(image)
    r = run_py("-m", "pipeline", "predict", "--manifest", folder / "manifest.json", "--artifact", row.name, image)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert row.file in lines[0] and "sha256" in lines[0] and r.stdout == ""

    (folder / row.file).write_bytes((exported.parent / row.file).read_bytes())  # the model back; now its config
    _tamper(folder / row.ops_config)
    r = run_py("-m", "export.mobile", "--manifest", folder / "manifest.json", "--out", tmp_path / "mobile")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert row.ops_config in lines[0] and "sha256" in lines[0]
    assert not (tmp_path / "mobile").exists()


def test_an_ort_file_with_an_op_off_the_list_is_refused_before_loading(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from pipeline.runtimes import OrtRunner
    graph = helper.make_graph([helper.make_node("Sin", ["image"], ["probabilities"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 10])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "sin.onnx"))
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "sin.ort")
    opts.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(tmp_path / "sin.onnx"), opts, providers=["CPUExecutionProvider"])
    with pytest.raises(PipelineError, match=r"op 'Sin' in the graph .*refused before loading"):
        OrtRunner("ort_fp32_b1", tmp_path / "sin.ort", 1)
    (tmp_path / "not.ort").write_bytes((tmp_path / "sin.onnx").read_bytes())  # an ONNX file named .ort
    with pytest.raises(PipelineError, match="not an ORT format model"):
        graph_ops.check_ort(tmp_path / "not.ort")


def test_evaluate_runs_the_ort_kinds_in_onnxruntime_with_their_fusions(exported, tmp_path_factory, tmp_path):
    from conftest import export_subset, small_test_split
    from evaluate.run import evaluate_all
    from pipeline import config
    names = ["onnx_int8_b1", *(row.name for row in ORT_KINDS)]
    subset = export_subset(exported.parent, tmp_path / "artifacts", names) / "manifest.json"
    cfg = config.load(None, list({
        "data.test": str(small_test_split(tmp_path_factory, 40)), "evaluate.manifest": str(subset),
        "evaluate.report_dir": str(tmp_path / "report"), "evaluate.threads": [0], "evaluate.peak_probe_s": 0.2,
        "evaluate.profile": True, "evaluate.profile_runs": 5}.items()))
    result = evaluate_all(cfg, latency=False, gates_on=False, progress=lambda *a: None)
    rows = {r["name"]: r for r in result["artifacts"]}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["ort_int8_b1"]["accuracy"] == rows["onnx_int8_b1"]["accuracy"]
    # the profile is the replayed session's: int8 convolutions as QLinearConv, not float Conv between Q/DQ pairs
    assert "QLinearConv" in {t["op_type"] for t in rows["ort_int8_b1"]["profile"]["by_op_type"]}
