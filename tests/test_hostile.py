"""Hostile inputs. Each test builds its input itself and asserts the refusal: one line naming the file,
folder or key, a non-zero exit or a PipelineError, and nothing written, deleted or run.

  output folders  export / export.mobile replace only a folder an earlier run made (or a new, empty one)
  kill -9         a folder published by atomic_path (the mobile bundle) is the old one or the new one, whole
  graph ops       a SavedModel or ONNX file is checked op by op before its runtime loads it
  baselines       evaluate refuses a baseline that cannot gate this run; a failed run never replaces it
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import atomic, manifest as manifest_mod
from pipeline.errors import PipelineError
from pipeline.model import CLASSES

ROOT = Path(__file__).resolve().parent.parent
FAST = {"export.calibration_images": 200, "export.parity_images": 64, "export.layer_error_images": 0,
        "gates.min_parity_float": 0.99, "gates.min_parity_int8": 0.5}


def run_py(*args, timeout=180):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(root):
    """Every entry under `root` (links not followed): {relative path: bytes, link target or 'dir'}."""
    root = Path(root)
    out = {".": ("link", os.readlink(root)) if root.is_symlink() else "dir" if root.is_dir() else
           root.read_bytes() if root.exists() else None}
    if root.is_dir() and not root.is_symlink():
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(folder) / name
                out[str(p.relative_to(root))] = ("link", os.readlink(p)) if p.is_symlink() else \
                    "dir" if p.is_dir() else p.read_bytes()
    return out


TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} \d\d:\d\d:)")


def one_error_line(err, tf_chatter=False):
    """The one `error:` line; with tf_chatter, TensorFlow's native start-up lines (written by C++ to fd 2
    when a command imports TensorFlow, not by us) are dropped first."""
    lines = [x for x in err.strip().splitlines() if not (tf_chatter and TF_NATIVE_LOG.match(x))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def exported(small_checkpoint, tmp_path_factory):
    """The small checkpoint exported to saved_model, onnx_fp32 and onnx_int8: the real files the op lists
    are checked against."""
    from export.run import export_all
    from pipeline import config
    out = tmp_path_factory.mktemp("hostile_exp") / "artifacts"
    export_all(config.load(None, list({**FAST, "export.checkpoint": str(small_checkpoint),
                                       "export.out_dir": str(out),
                                       "export.formats": ["saved_model", "onnx_fp32", "onnx_int8"]}.items())),
               progress=False)
    return out / "manifest.json"


# ---------------------------------------------------------------- 1. output folders

def _earlier_export(folder):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"schema_version": 2}')
    (folder / "model_fp32.onnx").write_bytes(b"old")
    return folder


def _hostile_out_dirs(tmp):
    """(what, path) of output folders export and export.mobile must refuse, each holding something."""
    user = tmp / "user_files"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    (user / "sub").mkdir()
    (user / "sub" / "data.csv").write_text("1,2,3")
    yield "a folder of other files", user
    (tmp / "a_file").write_text("not a folder")
    yield "a regular file", tmp / "a_file"
    real = _earlier_export(tmp / "real_export")
    (tmp / "link").symlink_to(real, target_is_directory=True)
    yield "a symlink to an earlier export", tmp / "link"
    (tmp / "dangling").symlink_to(tmp / "nowhere")
    yield "a dangling symlink", tmp / "dangling"
    bundle_marker_only = tmp / "wrong_marker"
    bundle_marker_only.mkdir()
    (bundle_marker_only / "model_spec.json").write_text("{}")  # a mobile bundle is not an export
    yield "a mobile bundle as export out dir", bundle_marker_only


def test_export_refuses_an_out_dir_it_did_not_make(tmp_path, capsys):
    """Checked before the checkpoint is loaded: a missing checkpoint is not even reached."""
    from export.__main__ import main
    for what, out in _hostile_out_dirs(tmp_path):
        before = snapshot(tmp_path)
        with pytest.raises(SystemExit) as exc:
            main(["--checkpoint", str(tmp_path / "missing.h5"), "--out-dir", str(out), "--quiet"])
        line = one_error_line(capsys.readouterr().err)
        assert exc.value.code == 1, what
        assert str(out) in line and "checkpoint" not in line, (what, line)
        assert snapshot(tmp_path) == before, what  # untouched, and no .NAME.staging-* beside it


def test_export_cli_with_real_checkpoint_keeps_a_folder_of_other_files(small_checkpoint, tmp_path):
    """The reported case: `--formats onnx_fp32 --out-dir <folder holding other files>` exited 0 and emptied it."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    r = run_py("-m", "export", "--checkpoint", small_checkpoint, "--formats", "onnx_fp32", "--out-dir", out,
               *[a for k, v in FAST.items() for a in ("--set", f"{k}={v}")])
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert str(out) in line and "notes.txt" in line and "manifest.json" in line
    assert snapshot(tmp_path) == before


def test_export_accepts_new_empty_and_earlier_export_folders(tmp_path, capsys):
    """They pass the folder check (the missing checkpoint is what stops them) and are not touched."""
    from export.__main__ import main
    (tmp_path / "empty").mkdir()
    _earlier_export(tmp_path / "earlier")
    for out in (tmp_path / "new", tmp_path / "empty", tmp_path / "earlier"):
        before = snapshot(tmp_path)
        with pytest.raises(SystemExit) as exc:
            main(["--checkpoint", str(tmp_path / "missing.h5"), "--out-dir", str(out), "--quiet"])
        line = one_error_line(capsys.readouterr().err)
        assert exc.value.code == 1 and "missing.h5: checkpoint not found" in line, line
        assert snapshot(tmp_path) == before


def test_mobile_refuses_an_out_dir_it_did_not_make(tmp_path, capsys):
    """Checked before the manifest is read; an earlier bundle (model_spec.json) and a new folder pass."""
    from export import mobile
    missing = tmp_path / "no_manifest.json"
    for what, out in _hostile_out_dirs(tmp_path):
        if what == "a mobile bundle as export out dir":
            continue
        before = snapshot(tmp_path)
        with pytest.raises(SystemExit) as exc:
            mobile.main(["--manifest", str(missing), "--out", str(out)])
        line = one_error_line(capsys.readouterr().err)
        assert exc.value.code == 1 and line.startswith(f"error: {out}: ") and "not found" not in line, (what, line)
        assert snapshot(tmp_path) == before, what
    bundle = tmp_path / "old_bundle"
    bundle.mkdir()
    (bundle / "model_spec.json").write_text("{}")
    (bundle / "model_int8.tflite").write_bytes(b"old")
    for out in (bundle, tmp_path / "new_bundle"):
        before = snapshot(tmp_path)
        with pytest.raises(PipelineError, match="manifest not found"):
            mobile.build(missing, out)
        assert snapshot(tmp_path) == before


def test_mobile_cli_refuses_a_folder_of_other_files(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    before = snapshot(tmp_path)
    r = run_py("-m", "export.mobile", "--manifest", tmp_path / "manifest.json", "--out", out)
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert str(out) in line and "holiday.jpg" in line
    assert snapshot(tmp_path) == before


def test_check_replaceable_rules(tmp_path):
    (tmp_path / "empty").mkdir()
    atomic.check_replaceable(tmp_path / "new", "manifest.json")
    atomic.check_replaceable(tmp_path / "empty", "manifest.json")
    atomic.check_replaceable(_earlier_export(tmp_path / "earlier"), "manifest.json")
    fake = tmp_path / "fake_marker"
    fake.mkdir()
    (fake / "data").write_text("x")
    (fake / "manifest.json").symlink_to(tmp_path / "earlier" / "manifest.json")  # a linked marker is not one
    with pytest.raises(PipelineError, match="holds files no earlier run made"):
        atomic.check_replaceable(fake, "manifest.json")


# ---------------------------------------------------------------- 2. kill -9 while a folder is published

KILL_SCRIPT = r"""
import os, shutil, signal, sys
sys.path.insert(0, sys.argv[1])
from pipeline import atomic
final, kill_at, exchange = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
steps = [0]

def step(fn):
    def wrapper(*a, **k):
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **k)
    return wrapper

os.replace, shutil.rmtree = step(os.replace), step(shutil.rmtree)
atomic._exchange = step(atomic._exchange if exchange else (lambda a, b: False))
with atomic.atomic_path(final) as tmp:  # as export.mobile.build writes the bundle
    tmp.mkdir()
    (tmp / "model_int8.tflite").write_bytes(b"new model")
    (tmp / "labels.txt").write_text("new labels")
    atomic.write_json(tmp / "model_spec.json", {"version": "new"})
"""


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside fallback"])
def test_kill_at_any_step_of_a_folder_publish_keeps_a_whole_bundle(tmp_path, exchange):
    """SIGKILL before each filesystem step (rename, swap, delete) of replacing a bundle: the folder is the
    old bundle or the new one, complete, once the next build's recover_dir has run; nothing stale is left."""
    script = tmp_path / "publish.py"
    script.write_text(KILL_SCRIPT)
    root = tmp_path / "dist"
    old = {"model_int8.tflite": b"old model", "labels.txt": b"old labels", "model_spec.json": b'{"version": "old"}'}
    new = {"model_int8.tflite": b"new model", "labels.txt": b"new labels",
           "model_spec.json": b'{\n  "version": "new"\n}\n'}
    seen, kill_at = set(), 1
    while True:
        if root.exists():
            shutil.rmtree(root)
        bundle = root / "mobile"
        bundle.mkdir(parents=True)
        for name, data in old.items():
            (bundle / name).write_bytes(data)
        r = run_py(script, ROOT, bundle, kill_at, int(exchange), timeout=60)
        assert r.returncode in (0, -signal.SIGKILL), r.stderr
        atomic.recover_dir(bundle)  # what export.mobile.build does first
        got = {p.name: p.read_bytes() for p in bundle.iterdir()} if bundle.is_dir() else None
        assert got in (old, new), (kill_at, got)
        assert sorted(p.name for p in root.iterdir()) == ["mobile"], (kill_at, list(root.iterdir()))
        seen.add("old" if got == old else "new")
        if r.returncode == 0:
            break
        kill_at += 1
    assert seen == {"old", "new"} and kill_at > 3  # the kills did land on both sides of the swap


# ---------------------------------------------------------------- 3. graph ops

def _hostile_saved_model(path, kind, secret, leak):
    """A SavedModel with the exported signature (image [None, 32, 32, 3] -> probabilities [None, 10]) whose
    serving function also does `kind`: read a file and write it elsewhere, save a checkpoint, run Python."""
    import tensorflow as tf

    weights = tf.constant(np.zeros((32 * 32 * 3, 10), np.float32))

    def serve(image):  # every other op is one an exported classifier has: only `kind` is refused
        probs = tf.nn.softmax(tf.matmul(tf.reshape(image, [-1, 32 * 32 * 3]), weights))
        if kind == "read_write":
            side = tf.io.write_file(str(leak), tf.io.read_file(str(secret)))
        elif kind == "save_v2":
            side = tf.raw_ops.SaveV2(prefix=str(leak), tensor_names=["x"], shape_and_slices=[""], tensors=[image])
        else:
            side = tf.py_function(lambda x: x, [probs], tf.float32)
        with tf.control_dependencies([side]):
            return {"probabilities": tf.identity(probs)}

    module = tf.Module()
    module.serve = tf.function(serve, input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve.get_concrete_function()})
    return path


def _swap_in(exported, tmp_path, name, build):
    """A copy of the exported folder whose artifact `name` is replaced by build(path), re-hashed in the manifest."""
    folder = tmp_path / "hostile"
    shutil.copytree(exported.parent, folder)
    data = json.loads((folder / "manifest.json").read_text())
    entry = manifest_mod.find(data, name)
    target = folder / entry["path"]
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    build(target)
    entry.update(manifest_mod.file_facts(target))
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder / "manifest.json", entry, target


def test_the_real_exports_ops_are_allowed(exported):
    from pipeline import graph_ops, runtimes
    data = manifest_mod.read(exported)
    saved = exported.parent / manifest_mod.find(data, "saved_model")["path"]
    assert set(graph_ops.saved_model_ops(saved)) <= graph_ops.SAVED_MODEL_OPS | graph_ops.SAVER_OPS
    graph_ops.check_saved_model(saved)
    for name in ("onnx_fp32", "onnx_int8"):
        path = exported.parent / manifest_mod.find(data, name)["path"]
        assert set(graph_ops.onnx_ops(path)) <= graph_ops.ONNX_OPS
        graph_ops.check_onnx(path)
    for name in ("saved_model", "onnx_fp32", "onnx_int8"):
        entry = manifest_mod.find(data, name)
        # the runner classes open_runner picks (it also fixes TF's threads, which only a fresh process may)
        runner = runtimes.RUNNERS[entry["format"]](name, manifest_mod.verify(exported, entry), 1)
        assert runner.predict(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 10)


def test_predict_and_evaluate_refuse_a_saved_model_that_reads_and_writes_files(exported, tmp_path):
    from PIL import Image
    secret, leak = tmp_path / "hostname", tmp_path / "leak.txt"
    secret.write_text("secret-host\n")
    hostile, entry, path = _swap_in(exported, tmp_path, "saved_model",
                                    lambda p: _hostile_saved_model(p, "read_write", secret, leak))
    assert not leak.exists()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "cat.png")

    r = run_py("-m", "pipeline", "predict", "--manifest", hostile, "--artifact", "saved_model", tmp_path / "cat.png")
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    line = one_error_line(r.stderr, tf_chatter=True)
    assert str(path / "saved_model.pb") in line and "op 'ReadFile' in function " in line, line
    assert line.endswith("(also: WriteFile)"), line

    # evaluate runs every artifact in evaluate.worker: the job it would get, in a process of its own.
    np.save(tmp_path / "images.npy", np.zeros((4, 32, 32, 3), np.uint8))
    job = {"kind": "artifact", "entry": entry, "path": str(path), "threads": 1, "images": str(tmp_path / "images.npy"),
           "accuracy": True, "flops": False, "batch": 4, "predictions": str(tmp_path / "pred.npy"),
           "warmup_runs": 1, "latency_runs": 2, "profile_runs": 0}
    (tmp_path / "job.json").write_text(json.dumps(job))
    r = run_py("-m", "evaluate.worker", tmp_path / "job.json", tmp_path / "result.json")
    result = json.loads((tmp_path / "result.json").read_text())
    assert "op 'ReadFile'" in result["error"] and "saved_model.pb" in result["error"], result
    assert not leak.exists() and not (tmp_path / "pred.npy").exists()


@pytest.mark.parametrize("kind, op", [("save_v2", "SaveV2"), ("py_function", "EagerPyFunc")])
def test_saved_model_checkpoint_writes_and_python_are_refused(exported, tmp_path, kind, op):
    """SaveV2 is allowed only in the SavedModel's own save function: a signature reaching it is refused."""
    from pipeline import runtimes
    leak = tmp_path / "leak"
    _, entry, path = _swap_in(exported, tmp_path, "saved_model",
                              lambda p: _hostile_saved_model(p, kind, tmp_path / "x", leak))
    with pytest.raises(PipelineError, match=rf"saved_model.pb: op '{op}' in function \S+ \([^)]*\); refused "
                                            r"before loading, nothing from the file was run$"):
        runtimes.SavedModelRunner(entry["name"], path, 1)
    assert not list(tmp_path.glob("leak*"))


def _onnx_file(path, nodes, initializers=(), domain_opsets=()):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 32, 32, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *domain_opsets])
    onnx.save(model, str(path))
    return path


def test_onnx_ops_outside_the_export_are_refused_before_a_session(tmp_path):
    from onnx import TensorProto, helper
    from pipeline import runtimes
    flat = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    custom = _onnx_file(tmp_path / "custom.onnx", [
        helper.make_node("StringRegexReplace", ["image"], ["x"], domain="ai.onnx.contrib"),
        helper.make_node("Reshape", ["x", "shape"], ["probabilities"])], [flat],
        [helper.make_opsetid("ai.onnx.contrib", 1)])
    with pytest.raises(PipelineError, match=r"custom.onnx: op 'ai.onnx.contrib.StringRegexReplace' in graph g"):
        runtimes.OnnxRunner("onnx_fp32", custom, 1)
    other = _onnx_file(tmp_path / "topk.onnx", [helper.make_node("Reshape", ["image", "shape"], ["y"]),
                                                 helper.make_node("Hardmax", ["y"], ["probabilities"])], [flat])
    with pytest.raises(PipelineError, match=r"topk.onnx: op 'Hardmax' .*not an op an exported classifier"):
        runtimes.OnnxRunner("onnx_fp32", other, 1)
    external = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    external.data_location = TensorProto.EXTERNAL
    external.ClearField("int64_data")
    external.external_data.add(key="location", value="../../etc/hostname")
    ext = _onnx_file(tmp_path / "external.onnx", [helper.make_node("Reshape", ["image", "shape"], ["probabilities"])],
                     [external])
    with pytest.raises(PipelineError, match=r"external.onnx: tensor 'shape' keeps its data in an external file"):
        runtimes.OnnxRunner("onnx_fp32", ext, 1)


# ---------------------------------------------------------------- 4. baselines

N_PER_CLASS = 5


@pytest.fixture
def gate_setup(tmp_path, monkeypatch):
    """A 50-image test split of solid colours (the class is the colour), a manifest of one onnx_fp32 entry
    with a 100% model card, and evaluate's worker replaced by `predict[0]` on the images: the report
    logic runs for real in milliseconds."""
    import io

    from PIL import Image

    from evaluate import run as run_mod
    from pipeline import config
    from pipeline.evalset import _write_tar_gz
    monkeypatch.setenv("CIFAR_EDGE_CACHE", str(tmp_path / "cache"))
    files = {}
    for c, cls in enumerate(CLASSES):
        for i in range(N_PER_CLASS):
            buf = io.BytesIO()
            Image.fromarray(np.full((32, 32, 3), c * 20, np.uint8)).save(buf, format="PNG")
            files[f"test/{cls}/{c}{i}.png"] = buf.getvalue()
    test = tmp_path / "test50.tar.gz"
    _write_tar_gz(test, files)
    art = tmp_path / "artifacts"
    art.mkdir()
    (art / "model_fp32.onnx").write_bytes(b"never run: the worker is replaced")
    (art / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    entry = {"name": "onnx_fp32", "format": "onnx", "precision": "fp32", "kind": "float", "path": "model_fp32.onnx",
             **manifest_mod.file_facts(art / "model_fp32.onnx"),
             "input": {"name": "image", "dtype": "float32", "shape": [None, 32, 32, 3], "quantization": None},
             "output": {"name": "probabilities", "dtype": "float32", "shape": [None, 10], "quantization": None}}
    manifest_mod.write(art / "manifest.json", {
        "source_checkpoint": {"file": "m.h5", "sha256": "0" * 64, "preset": "seed"},
        "reference": {"accuracy": 1.0, "test_images": 10 * N_PER_CLASS, "source": "metrics.json"},
        "classes": list(CLASSES), "labels": {"path": "labels.txt", "sha256": atomic.sha256_file(art / "labels.txt")},
        "artifacts": [entry]})
    right = lambda images: images[:, 0, 0, 0].astype(np.int64) // 20  # noqa: E731
    predict = [right]

    def spawn(job, workdir, tag, timeout_s):
        if job["kind"] == "probe":
            return {"threads": job["threads"], "gops": {"fp32": 50.0, "int8": 100.0}}
        out = {"threads": job["threads"], "load_s": 0.01, "first_inference_ms": 1.0, "peak_rss_mb": 10.0}
        if job["accuracy"]:
            np.save(job["predictions"], predict[0](np.load(job["images"])))
            out["throughput"] = {"batch": job["batch"], "images_per_s": 1000.0}
        return out
    monkeypatch.setattr(run_mod, "_spawn", spawn)
    reports = tmp_path / "reports"

    def evaluate(baseline=None, report_dir=reports, wrong=False):
        predict[0] = (lambda x: (right(x) + (np.arange(len(x)) % 2)) % 10) if wrong else right
        items = {"data.test": str(test), "evaluate.manifest": str(art / "manifest.json"),
                 "evaluate.report_dir": str(report_dir), "evaluate.baseline": str(baseline) if baseline else "",
                 "evaluate.threads": [1]}
        return run_mod.evaluate_all(config.load(None, list(items.items())), latency=False, progress=lambda *a: None)
    return evaluate, reports, spawn, monkeypatch


def test_a_failed_gate_run_never_becomes_its_own_baseline(gate_setup):
    """`make gate`: --baseline reports/evaluation.json, reporting into reports/."""
    evaluate, reports, _, _ = gate_setup
    base = reports / "evaluation.json"
    assert evaluate()["passed"]
    assert evaluate(baseline=base)["passed"] and "no regression" in (reports / "diff.md").read_text()
    committed = snapshot(reports)

    failed = evaluate(baseline=base, wrong=True)
    assert not failed["passed"] and any("accuracy_vs_baseline_pp" in f for f in failed["gate_failures"])
    assert {k: v for k, v in snapshot(reports).items() if not k.startswith("failed")} == committed  # baseline kept
    assert json.loads((reports / "failed" / "evaluation.json").read_text())["passed"] is False
    assert "1 regression(s)" in (reports / "failed" / "diff.md").read_text()

    again = evaluate(baseline=base, wrong=True)  # used to pass: compared with its own failed report
    assert not again["passed"] and json.loads(base.read_text())["passed"] is True

    fixed = evaluate(baseline=base)
    assert fixed["passed"] and not (reports / "failed").exists()


def test_a_run_without_baseline_leaves_no_stale_diff(gate_setup, tmp_path):
    evaluate, reports, _, _ = gate_setup
    evaluate()
    shutil.copy(reports / "evaluation.json", tmp_path / "base.json")
    evaluate(baseline=tmp_path / "base.json")
    assert (reports / "diff.md").exists()
    evaluate()
    assert not (reports / "diff.md").exists()


@pytest.mark.parametrize("key, change, words", [
    ("passed", lambda b: b.update(passed=False), '"passed" is False'),
    ("artifacts", lambda b: b.update(artifacts=[]), '"artifacts" is empty'),
    ("gates_checked", lambda b: b.update(gates_checked=False), '"gates_checked" is False'),
    ("test_images", lambda b: b.update(test_images=10_000), '"test_images" is 10000, this run scores 50'),
    ("test_data.sha256", lambda b: b["test_data"].update(sha256="f" * 64), '"test_data.sha256" ffffffffffff'),
    ("no test_data", lambda b: b.pop("test_data"), '"test_data.sha256" is missing'),
    ("junk row", lambda b: b["artifacts"].append({"status": "ok"}), '"artifacts"[1] is not an evaluated'),
], ids=lambda v: v if isinstance(v, str) and not v.startswith('"') else "")
def test_a_baseline_that_cannot_gate_this_run_is_refused_before_scoring(gate_setup, tmp_path, key, change, words):
    evaluate, reports, spawn, monkeypatch = gate_setup
    evaluate()
    base = json.loads((reports / "evaluation.json").read_text())
    change(base)
    bad = tmp_path / "bad_baseline.json"
    bad.write_text(json.dumps(base))
    before = snapshot(reports)

    def no_scoring(job, *a):
        raise AssertionError(f"scoring started: {job['kind']}")
    from evaluate import run as run_mod
    monkeypatch.setattr(run_mod, "_spawn", no_scoring)
    with pytest.raises(PipelineError) as exc:
        evaluate(baseline=bad)
    message = str(exc.value)
    assert message.startswith(f"{bad}: ") and words in message and "\n" not in message, message
    assert snapshot(reports) == before


def test_evaluate_cli_refuses_a_failed_baseline_in_one_line(gate_setup, tmp_path, capsys):
    from evaluate.__main__ import main
    evaluate, reports, _, _ = gate_setup
    evaluate(wrong=True, baseline=None)  # a failed run without a baseline: its report is the failed one
    failed_report = reports / "evaluation.json"
    assert json.loads(failed_report.read_text())["passed"] is False
    before = snapshot(reports)
    data = json.loads((reports / "config.resolved.json").read_text())
    with pytest.raises(SystemExit) as exc:
        main(["--manifest", data["evaluate"]["manifest"], "--report-dir", str(reports), "--baseline",
              str(failed_report), "--set", f"data.test='{data['data']['test']}'"])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 1 and str(failed_report) in line and '"passed"' in line, line
    assert snapshot(reports) == before
