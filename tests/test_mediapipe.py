"""The .tflite files a phone gets carry TFLite Model Metadata, and MediaPipe Tasks' ImageClassifier (the
client Android, iOS and web apps run; in the mobile environment, make venv-mobile) scores them in evaluate
and agrees with the LiteRT interpreter on the same file."""
import json
import shutil

import pytest

from pipeline import artifacts, atomic
from pipeline.model import CLASSES
from test_evaluate import N_TEST, _cfg, _evaluate, _keras_accuracy, small_test  # noqa: F401 - a fixture

PHONE_LITE = [r.name for r in artifacts.ARTIFACTS.values() if r.metadata]


def test_the_phone_tflite_kinds_carry_metadata_and_a_client():
    assert PHONE_LITE == ["tflite_fp16_b1", "tflite_int8_b1"]
    assert all(artifacts.get(n).mobile and artifacts.get(n).clients == ("mediapipe",) for n in PHONE_LITE)


def test_metadata_names_the_model_and_packs_the_labels(shared_export):
    from ai_edge_litert import schema_py_generated as schema

    from export.tflite_export import read_labels
    folder, manifest = shared_export
    for entry in (e for e in manifest["artifacts"] if e["name"] in PHONE_LITE):
        meta = entry["settings"]["metadata"]
        assert meta["name"] == f"cifar-edge {manifest['source_checkpoint']['preset']} {entry['precision']}"
        assert meta["version"].endswith("+" + manifest["source_checkpoint"]["sha256"][:12])
        assert meta["license"] == "Apache-2.0" and meta["associated_files"] == ["labels.txt"]
        data = (folder / entry["path"]).read_bytes()
        model = schema.Model.GetRootAsModel(data, 0)  # LiteRT's own schema reads the metadata buffer's name
        names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
        assert "TFLITE_METADATA" in names, names
        assert read_labels(folder / entry["path"]) == list(CLASSES)


@pytest.fixture(scope="module")
def phone_export(shared_export, small_checkpoint, small_test, tmp_path_factory):  # noqa: F811
    """The two phone .tflite files of the shared export, alone, with the model's accuracy as reference."""
    from conftest import export_subset
    reference = {"accuracy": _keras_accuracy(small_checkpoint, small_test), "test_images": N_TEST,
                 "source": "metrics.json"}
    return export_subset(shared_export[0], tmp_path_factory.mktemp("phone") / "artifacts", PHONE_LITE,
                         reference=reference)


LOOSE = {"gates.max_drop_pp_int8": 5.0, "gates.max_drop_pp_float": 1.0}


def test_mediapipe_scores_the_phone_files_like_the_litert_interpreter(phone_export, small_test, tmp_path):  # noqa: F811
    result = _evaluate(_cfg(small_test, phone_export / "manifest.json", tmp_path / "report", **LOOSE))
    rows = {r["name"]: r for r in result["artifacts"]}
    assert list(rows) == ["tflite_fp16_b1", "tflite_fp16_b1@mediapipe", "tflite_int8_b1", "tflite_int8_b1@mediapipe"]
    for name in PHONE_LITE:
        client = rows[f"{name}@mediapipe"]
        assert client["status"] == "ok", client["error"]
        assert client["artifact"] == name and client["images"] == N_TEST
        assert client["runtime_agreement"] >= 0.999
        assert abs(client["accuracy"] - rows[name]["accuracy"]) <= 0.001
    gates = [g for g in result["gates"] if g["metric"] == "runtime_agreement"]
    assert [g["artifact"] for g in gates] == [f"{n}@mediapipe" for n in PHONE_LITE] and all(g["passed"] for g in gates)
    assert result["passed"], result["gate_failures"]
    assert "## App clients" in (tmp_path / "report" / "evaluation.md").read_text()


def _swap_in(folder, name, source):
    """`folder`'s file of artifact `name` replaced by `source`, its sha256 re-recorded (as a buggy export)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["name"] == name)
    shutil.copy(source, folder / entry["path"])
    entry.update(sha256=atomic.sha256_file(folder / entry["path"]), bytes=(folder / entry["path"]).stat().st_size)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_file_mediapipe_refuses_is_a_failed_gate_with_its_reason(phone_export, shared_export, small_test,  # noqa: F811
                                                                    tmp_path):
    folder = shutil.copytree(phone_export, tmp_path / "artifacts")
    # The server's fp16 file: the same model with labels but no metadata (and a dynamic batch LiteRT takes).
    _swap_in(folder, "tflite_fp16_b1", shared_export[0] / artifacts.get("tflite_fp16").file)
    result = _evaluate(_cfg(small_test, folder / "manifest.json", tmp_path / "report", **LOOSE))
    rows = {r["name"]: r for r in result["artifacts"]}
    assert rows["tflite_fp16_b1"]["status"] == "ok"  # the interpreter runs it
    refused = rows["tflite_fp16_b1@mediapipe"]
    assert refused["status"] == "error" and "ImageClassifier refuses" in refused["error"]
    assert "NormalizationOptions" in refused["error"], refused["error"]
    assert rows["tflite_int8_b1@mediapipe"]["status"] == "ok"
    assert not result["passed"]
    failed = [f for f in result["gate_failures"] if f.startswith("GATE FAILED: tflite_fp16_b1@mediapipe status")]
    assert failed and "NormalizationOptions" in failed[0], result["gate_failures"]


def test_without_the_mobile_environment_the_client_row_says_how_to_build_it(phone_export, small_test,  # noqa: F811
                                                                            tmp_path, monkeypatch):
    from pipeline import mobile_env
    monkeypatch.setattr(mobile_env, "VENV", tmp_path / "no-venv")
    result = _evaluate(_cfg(small_test, phone_export / "manifest.json", tmp_path / "report", **LOOSE))
    rows = {r["name"]: r for r in result["artifacts"]}
    assert rows["tflite_int8_b1"]["status"] == "ok"
    assert rows["tflite_int8_b1@mediapipe"]["status"] == "error"
    assert "make venv-mobile" in rows["tflite_int8_b1@mediapipe"]["error"]
    assert not result["passed"]
