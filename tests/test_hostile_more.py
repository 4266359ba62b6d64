"""More hostile inputs (the hostile-input issue, items 4-19). As in tests/test_hostile.py, each test builds its
input itself (tiny models: a one-MatMul ONNX or TFLite classifier, never an export) and asserts the refusal:
one line naming the file, key or flag, a non-zero exit or a PipelineError, nothing written, deleted or run,
and no hang (every subprocess has a timeout, every in-process read of a FIFO an alarm).

   4  NaN         parity, predict and the examples refuse non-finite probabilities; --json is strict JSON
   8  FIFOs       only regular files are read (artifacts, manifests, labels, images, test data)
   9  run lock    one `python -m train` per run folder
  10  SIGTERM     evaluate stops its worker and removes its temp files, as on Ctrl-C
  11  config      finite floats only, an upper bound on every int and float key
  14  --threads   predict refuses a negative thread count
  15  control     error lines escape control characters
  17  .keras      a text file named x.keras is "not a .keras zip archive"
  18  sizes       the manifest's "bytes" and metrics.json's "test_images" are checked
  19  run name    --run-name is one plain folder name
"""
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import atomic, config, manifest as manifest_mod
from pipeline.errors import PipelineError, fail_cleanly, printable
from pipeline.model import CLASSES

ROOT = Path(__file__).resolve().parent.parent
TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} \d\d:\d\d:"
                           r"|INFO: Created TensorFlow Lite XNNPACK delegate)")
EMPTY_SHA = hashlib.sha256().hexdigest()  # what sha256_tree used to report for a FIFO


def run_py(*args, timeout=120, env=None):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(root):
    """Every entry under `root` (links not followed): {relative path: bytes, link target, 'fifo' or 'dir'}."""
    root = Path(root)
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            out[str(p.relative_to(root))] = ("link", os.readlink(p)) if p.is_symlink() else "dir" if p.is_dir() \
                else "fifo" if p.is_fifo() else p.read_bytes()
    return out


def one_error_line(err):
    """The one `error:` line (TensorFlow's and LiteRT's native start-up lines dropped)."""
    lines = [x for x in err.strip().splitlines() if not TF_NATIVE_LOG.match(x)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@contextlib.contextmanager
def no_hang(seconds=20):
    """Fail (instead of blocking forever) if the block does not finish in time: SIGALRM interrupts a blocked
    open() or read() of a FIFO."""
    def alarm(signum, frame):
        raise TimeoutError(f"hung for {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def strict_json(text):
    """json.loads that refuses NaN and Infinity, which json.dumps writes by default and no JSON parser reads."""
    def bad(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=bad)


# ---------------------------------------------------------------- tiny classifiers

def onnx_classifier(path, weight=0.0):
    """image [batch, 32, 32, 3] -> softmax(reshape(image) @ W): W all `weight` (0: every class 10%; nan: NaN)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    flat = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    w = numpy_helper.from_array(np.full((32 * 32 * 3, 10), weight, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])], initializer=[flat, w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def write_manifest(folder, weight=0.0, entry_changes=None):
    """An export folder of one onnx_fp32 artifact (onnx_classifier) with labels.txt and manifest.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_classifier(folder / "model_fp32.onnx", weight)
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    entry = {"name": "onnx_fp32", "format": "onnx", "precision": "fp32", "kind": "float", "path": "model_fp32.onnx",
             **manifest_mod.file_facts(folder / "model_fp32.onnx"),
             "input": {"name": "image", "dtype": "float32", "shape": [None, 32, 32, 3], "quantization": None},
             "output": {"name": "probabilities", "dtype": "float32", "shape": [None, 10], "quantization": None},
             **(entry_changes or {})}
    manifest_mod.write(folder / "manifest.json", {
        "source_checkpoint": {"file": "m.h5", "sha256": "0" * 64, "preset": "seed"},
        "reference": {"accuracy": 0.9, "test_images": 10000, "source": "metrics.json"},
        "classes": list(CLASSES), "labels": {"path": "labels.txt", "sha256": atomic.sha256_file(folder / "labels.txt")},
        "artifacts": [entry]})
    return folder / "manifest.json"


def png(path, value=0):
    from PIL import Image
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tflite_bundles(tmp_path_factory):
    """{"finite": bundle, "nan": bundle}: mobile bundles (model_spec.json, labels.txt, model.tflite) of a
    one-MatMul float TFLite classifier, as examples/litert_mobile.py reads them (--model fp16)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    out = {}
    for kind, weight in (("finite", 0.0), ("nan", np.nan)):
        w = tf.constant(np.full((32 * 32 * 3, 10), weight, np.float32))
        fn = tf.function(lambda x: tf.nn.softmax(tf.matmul(tf.reshape(x, [1, -1]), w)),
                         input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32, name="image")])
        blob = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()
        bundle = tmp_path_factory.mktemp(f"bundle_{kind}")
        (bundle / "model.tflite").write_bytes(blob)
        (bundle / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
        interpreter = Interpreter(model_content=blob)
        tensor = lambda d: {"name": d["name"], "dtype": "float32", "shape": [int(x) for x in d["shape"]],  # noqa: E731
                            "quantization": None}
        sha = lambda name: hashlib.sha256((bundle / name).read_bytes()).hexdigest()  # noqa: E731
        spec = {"labels": "labels.txt", "labels_sha256": sha("labels.txt"), "models": {"fp16": {
            "file": "model.tflite", "sha256": sha("model.tflite"), "input": tensor(interpreter.get_input_details()[0]),
            "output": tensor(interpreter.get_output_details()[0])}}}
        (bundle / "model_spec.json").write_text(json.dumps(spec))
        out[kind] = bundle
    return out


# ---------------------------------------------------------------- 4. NaN

def test_parity_refuses_non_finite_outputs_whatever_the_agreement():
    """The reported case: NaN in the artifact and the Keras model at the same class: 100% agreement, max|diff| nan."""
    from export import parity
    ref = np.full((8, 10), 0.1, np.float32)
    ref[:, 3] = 0.5
    for what, probs, reference in [("NaN in both", np.full((8, 10), np.nan, np.float32), np.full((8, 10), np.nan)),
                                   ("NaN in the artifact", np.where(np.eye(8, 10) > 0, np.nan, ref), ref),
                                   ("infinity in the artifact", np.where(np.eye(8, 10) > 0, np.inf, ref), ref)]:
        record = parity.compare(reference, probs)
        with pytest.raises(PipelineError, match=r"^onnx_fp32: non-finite probabilities \(NaN or infinity\) on 8 "
                                                r"parity images .*nothing was written$"):
            parity.check("onnx_fp32", record, 0.0, "min_parity_float")
    parity.check("onnx_fp32", parity.compare(ref, ref.copy()), 0.999, "min_parity_float")  # finite: still passes


def test_predict_refuses_nan_probabilities_in_one_line_and_json_is_strict(tmp_path):
    nan_manifest = write_manifest(tmp_path / "nan", weight=np.nan)
    good_manifest = write_manifest(tmp_path / "good", weight=0.0)
    cat = png(tmp_path / "cat.png")
    before = snapshot(tmp_path)
    for extra in ([], ["--json"]):
        r = run_py("-m", "pipeline", "predict", "--manifest", nan_manifest, "--artifact", "onnx_fp32", *extra, cat)
        assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr  # no "nan%", no NaN in JSON
        line = one_error_line(r.stderr)
        assert line.startswith("error: onnx_fp32: ") and "non-finite probabilities" in line and str(cat) in line, line
    r = run_py("-m", "pipeline", "predict", "--manifest", good_manifest, "--artifact", "onnx_fp32", "--json", cat)
    assert r.returncode == 0, r.stderr
    assert strict_json(r.stdout)[0]["probability"] == pytest.approx(0.1)
    assert snapshot(tmp_path) == before


def test_predict_json_never_writes_nan(tmp_path):
    """The classifier itself (what a future runtime could return): refused before any result is printed."""
    from pipeline import predict
    cat = png(tmp_path / "cat.png")
    with pytest.raises(PipelineError, match=r"^onnx_fp32: .*non-finite.*cat\.png"):
        predict.classify([cat], lambda x: np.full((len(x), 10), np.inf, np.float32), list(CLASSES), name="onnx_fp32")
    results = predict.classify([cat], lambda x: np.full((len(x), 10), 0.1, np.float32), list(CLASSES))
    strict_json(json.dumps(results, allow_nan=False))


def test_onnx_example_refuses_nan_probabilities(tmp_path):
    model = onnx_classifier(tmp_path / "nan.onnx", np.nan)
    (tmp_path / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    cat = png(tmp_path / "cat.png")
    for extra in ([], ["--json"]):
        r = run_py(ROOT / "examples" / "onnxruntime_cpu.py", "--model", model, "--labels", tmp_path / "labels.txt",
                   *extra, cat)
        assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
        line = one_error_line(r.stderr)
        assert line.startswith(f"error: {model}: ") and "non-finite probabilities" in line and str(cat) in line


def test_litert_example_refuses_nan_probabilities(tflite_bundles, tmp_path):
    cat = png(tmp_path / "cat.png")
    r = run_py(ROOT / "examples" / "litert_mobile.py", "--bundle", tflite_bundles["nan"], "--model", "fp16", cat)
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert line.startswith(f"error: {tflite_bundles['nan'] / 'model.tflite'}: ") and "non-finite" in line, line
    assert str(cat) in line
    r = run_py(ROOT / "examples" / "litert_mobile.py", "--bundle", tflite_bundles["finite"], "--model", "fp16", cat)
    assert r.returncode == 0 and "(10.0%)" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------- 8. FIFOs and hangs

def test_hashing_refuses_fifos_instead_of_blocking_or_reading_empty(tmp_path):
    fifo = tmp_path / "model_fp32.onnx"
    os.mkfifo(fifo)
    folder = tmp_path / "saved_model"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph")
    os.mkfifo(folder / "fingerprint.pb")
    with no_hang():
        with pytest.raises(PipelineError, match=rf"^{re.escape(str(fifo))}: is a FIFO, not a regular file"):
            atomic.sha256_file(fifo)
        with pytest.raises(PipelineError, match=r"model_fp32.onnx: is a FIFO"):
            atomic.sha256_tree(fifo)  # used to be the empty hash: a manifest could record it
        with pytest.raises(PipelineError, match=r"fingerprint.pb: is a FIFO"):
            atomic.sha256_tree(folder)  # used to be skipped: the runtime then blocked on it
        with pytest.raises(PipelineError, match=r"is a FIFO"):
            atomic.open_regular(fifo)
    (tmp_path / "real").write_bytes(b"abc")
    assert atomic.sha256_file(tmp_path / "real") == hashlib.sha256(b"abc").hexdigest()


def test_manifest_verify_refuses_a_fifo_artifact_recorded_with_the_empty_hash(tmp_path):
    m = write_manifest(tmp_path / "art")
    (tmp_path / "art" / "model_fp32.onnx").unlink()
    os.mkfifo(tmp_path / "art" / "model_fp32.onnx")
    data = json.loads(m.read_text())
    data["artifacts"][0].update(sha256=EMPTY_SHA, bytes=0)
    m.write_text(json.dumps(data))
    entry = manifest_mod.find(manifest_mod.read(m), "onnx_fp32")
    with no_hang(), pytest.raises(PipelineError, match=rf"^{re.escape(str(m))}: artifact 'onnx_fp32': .*"
                                                      r"model_fp32.onnx: is a FIFO, not a regular file"):
        manifest_mod.verify(m, entry)


def test_predict_refuses_fifos_in_place_of_artifact_manifest_labels_and_images(tmp_path):
    """Each in a subprocess with a timeout: before the fix the artifact case blocked in onnxruntime forever."""
    cat = png(tmp_path / "cat.png")
    cases = []
    art = tmp_path / "artifact"
    m = write_manifest(art)
    (art / "model_fp32.onnx").unlink()
    os.mkfifo(art / "model_fp32.onnx")
    data = json.loads(m.read_text())
    data["artifacts"][0].update(sha256=EMPTY_SHA, bytes=0)
    m.write_text(json.dumps(data))
    cases.append((m, "model_fp32.onnx: is a FIFO"))
    labels = tmp_path / "labels"
    m = write_manifest(labels)
    (labels / "labels.txt").unlink()
    os.mkfifo(labels / "labels.txt")
    data = json.loads(m.read_text())
    data["labels"]["sha256"] = EMPTY_SHA
    m.write_text(json.dumps(data))
    cases.append((m, "labels.txt: is a FIFO"))
    os.mkfifo(tmp_path / "manifest_fifo.json")
    cases.append((tmp_path / "manifest_fifo.json", "manifest_fifo.json: is a FIFO"))
    before = snapshot(tmp_path)
    for manifest_path, words in cases:
        r = run_py("-m", "pipeline", "predict", "--manifest", manifest_path, "--artifact", "onnx_fp32", cat, timeout=60)
        assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
        assert words in one_error_line(r.stderr), (words, r.stderr)
    # an image: that file fails alone (one line), the others are still classified
    good = write_manifest(tmp_path / "good")
    os.mkfifo(tmp_path / "dog.png")
    r = run_py("-m", "pipeline", "predict", "--manifest", good, "--artifact", "onnx_fp32", tmp_path / "dog.png", cat,
               timeout=60)
    assert r.returncode == 1 and f"{cat}: airplane (10.0%)" in r.stdout, r.stdout + r.stderr
    assert one_error_line(r.stderr) == f"error: {tmp_path / 'dog.png'}: not a regular file (a FIFO, socket or " \
                                       "device); refused, it was not read"
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("good")} == {**before, "dog.png": "fifo"}


def test_images_load_refuses_a_fifo(tmp_path):
    from pipeline import images
    os.mkfifo(tmp_path / "x.png")
    with no_hang(), pytest.raises(images.ImageError, match=r"^not a regular file"):
        images.load(tmp_path / "x.png")
    with pytest.raises(images.ImageError, match="^is a folder$"):
        images.load(tmp_path)
    with pytest.raises(images.ImageError, match="^no such file$"):
        images.load(tmp_path / "missing.png")
    assert images.load(png(tmp_path / "ok.png", 7)).shape == (32, 32, 3)


def test_evaluate_refuses_fifo_test_data_and_config(tmp_path):
    """evaluate reads the manifest, its artifacts and labels through manifest.read/verify (above); its test split
    and the config files are read the same way."""
    from pipeline import evalset
    os.mkfifo(tmp_path / "test.tar.gz")
    cfg = config.load(None, [("data.test", str(tmp_path / "test.tar.gz"))])
    os.mkfifo(tmp_path / "pipeline.toml")
    os.mkfifo(tmp_path / "config.resolved.json")
    with no_hang():
        with pytest.raises(PipelineError, match=r"test.tar.gz: is a FIFO"):
            evalset.load_test(cfg)
        with pytest.raises(PipelineError, match=r"pipeline.toml: is a FIFO"):
            config.load(tmp_path / "pipeline.toml")
        with pytest.raises(PipelineError, match=r"config.resolved.json: is a FIFO"):
            config.read_json(tmp_path / "config.resolved.json")


def test_examples_refuse_fifos(tflite_bundles, tmp_path):
    cat = png(tmp_path / "cat.png")
    os.mkfifo(tmp_path / "dog.png")
    model = onnx_classifier(tmp_path / "ok.onnx")
    (tmp_path / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    example = ROOT / "examples" / "onnxruntime_cpu.py"
    r = run_py(example, "--model", model, "--labels", tmp_path / "labels.txt", tmp_path / "dog.png", cat, timeout=60)
    assert r.returncode == 1 and f"{cat}: airplane" in r.stdout, r.stdout + r.stderr
    assert one_error_line(r.stderr).startswith(f"error: {tmp_path / 'dog.png'}: OSError: not a regular file")
    os.mkfifo(tmp_path / "labels_fifo.txt")
    os.mkfifo(tmp_path / "manifest.json")
    for args, words in [(["--model", model, "--labels", tmp_path / "labels_fifo.txt"], "labels_fifo.txt: cannot read"),
                        (["--manifest", tmp_path / "manifest.json"], "manifest.json: not a readable export manifest")]:
        r = run_py(example, *args, cat, timeout=60)
        assert r.returncode == 1 and r.stdout == "" and words in one_error_line(r.stderr), (args, r.stderr)

    mobile = ROOT / "examples" / "litert_mobile.py"
    r = run_py(mobile, "--bundle", tflite_bundles["finite"], "--model", "fp16", tmp_path / "dog.png", cat, timeout=60)
    assert r.returncode == 1 and f"{cat}: airplane" in r.stdout, r.stdout + r.stderr
    assert one_error_line(r.stderr).startswith(f"error: {tmp_path / 'dog.png'}: OSError: not a regular file")
    for name in ("model_spec.json", "model.tflite"):
        bundle = tmp_path / f"bundle_{name}"
        bundle.mkdir()
        for f in tflite_bundles["finite"].iterdir():
            if f.name == name:
                os.mkfifo(bundle / f.name)
            else:
                (bundle / f.name).write_bytes(f.read_bytes())
        r = run_py(mobile, "--bundle", bundle, "--model", "fp16", cat, timeout=60)
        assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
        line = one_error_line(r.stderr)
        assert f"{bundle / name}: not a regular file" in line and "unusable mobile bundle" in line, line


# ---------------------------------------------------------------- 9. one train per run folder

def test_run_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    from train.run_lock import LOCK_FILE, run_lock
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text("epoch,loss\n0,1.0\n")
    with run_lock(run):
        held = snapshot(tmp_path)
        assert (run / LOCK_FILE).read_text() == f"pid {os.getpid()} on host {socket.gethostname()}\n"
        with pytest.raises(PipelineError, match=rf"^{re.escape(str(run))}: another `python -m train` is training in "
                                                rf"this run folder \(pid {os.getpid()} on host "
                                                rf"{re.escape(socket.gethostname())}\); refused"):
            with run_lock(run):
                pytest.fail("a second holder got the lock")
        assert snapshot(tmp_path) == held  # the refused one changed nothing
    assert sorted(p.name for p in run.iterdir()) == ["history.csv"]  # released and removed
    with run_lock(run):  # and free again
        pass


def test_run_lock_of_a_killed_holder_does_not_block(tmp_path):
    """kill -9 leaves the lock file (with the dead pid) but the kernel has dropped the lock itself."""
    from train.run_lock import LOCK_FILE, run_lock
    run = tmp_path / "run"
    code = ("import os, sys, time; sys.path.insert(0, sys.argv[1]); from train.run_lock import run_lock\n"
            "with run_lock(sys.argv[2]):\n    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(PipelineError, match=rf"\(pid {proc.pid} on host "):
            with run_lock(run):
                pass
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert (run / LOCK_FILE).exists()
    with run_lock(run):
        assert (run / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")


def test_run_lock_fresh_run_and_folder_made_for_it(tmp_path):
    from train.run_lock import run_lock
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "run.json").write_text("{}")  # a run that finished while this one was starting
    with pytest.raises(PipelineError, match=r"folder exists and is not empty \(run.json\)"):
        with run_lock(tmp_path / "done", fresh=True):
            pass
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["run.json"]
    with pytest.raises(RuntimeError):  # a fresh run that fails before writing anything leaves no folder
        with run_lock(tmp_path / "new", fresh=True):
            raise RuntimeError("data source missing")
    assert not (tmp_path / "new").exists()


def test_a_second_resume_of_a_run_is_refused_in_one_line(tmp_path):
    """`python -m train --resume RUN` while another process trains in RUN (here: this test holds its lock)."""
    from train.run_folder import RUN_KIND
    from train.run_lock import run_lock
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": RUN_KIND, "run_id": "ab" * 16, "epochs": 2}))
    atomic.write_json(run / "config.resolved.json", config.load(None, [("train.preset", "smoke")]).to_dict())
    (run / "history.csv").write_text("epoch,loss\n0,2.3\n")
    with run_lock(run):
        before = snapshot(tmp_path)
        r = run_py("-m", "train", "--resume", run, timeout=180, env={"KERAS_BACKEND": "tensorflow"})
        assert snapshot(tmp_path) == before
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert line == (f"error: {run}: another `python -m train` is training in this run folder (pid {os.getpid()} on "
                    f"host {socket.gethostname()}); refused, nothing was changed"), line


# ---------------------------------------------------------------- 10. SIGTERM to evaluate

def _children(pid):
    out = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat_file.parent.name))
    return out


def test_sigterm_to_evaluate_stops_its_worker_and_removes_its_temp_files(tmp_path):
    import io

    from PIL import Image

    from pipeline.evalset import _write_tar_gz
    files = {}
    for c, cls in enumerate(CLASSES):
        buf = io.BytesIO()
        Image.fromarray(np.full((32, 32, 3), c * 20, np.uint8)).save(buf, format="PNG")
        files[f"test/{cls}/{c}.png"] = buf.getvalue()
    _write_tar_gz(tmp_path / "test10.tar.gz", files)
    m = write_manifest(tmp_path / "art")
    temp = tmp_path / "tmp"
    temp.mkdir()
    reports = tmp_path / "reports"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(temp), "CIFAR_EDGE_CACHE": str(tmp_path / "cache")}
    # the peak probe (the first worker) runs for 50 s: SIGTERM lands while it runs
    proc = subprocess.Popen([sys.executable, "-m", "evaluate", "--manifest", str(m), "--report-dir", str(reports),
                             "--no-gates", "--no-latency", "--set", f"data.test='{tmp_path / 'test10.tar.gz'}'",
                             "--set", "evaluate.threads=[1]", "--set", "evaluate.peak_probe_s=50"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, workers = time.monotonic() + 120, []
        while not workers and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = [p for p in _children(proc.pid)
                       if b"evaluate.worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert workers, "no worker started"
        assert list(temp.glob("evaluate.*")), "the worker's temp folder is where TMPDIR says"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err)
    assert one_error_line(err) == "error: terminated (SIGTERM); stopped like an interrupt"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "the worker was orphaned"
    assert list(temp.glob("evaluate.*")) == []  # the temp test images, job and result files are gone
    assert not reports.exists()


# ---------------------------------------------------------------- 11. config: finite, bounded

@pytest.mark.parametrize("item, key, why", [
    ("gates.max_drop_pp_int8=nan", "gates.max_drop_pp_int8", "must be a finite number"),
    ("recipe.lr=nan", "train.presets.fast.lr", "must be a finite number"),  # recipe.* is the selected preset's
    ("export.int8_max_drop_pp=nan", "export.int8_max_drop_pp", "must be a finite number"),
    ("evaluate.peak_probe_s=inf", "evaluate.peak_probe_s", "must be a finite number"),
    ("evaluate.worker_timeout_s=inf", "evaluate.worker_timeout_s", "must be a finite number"),
    ("evaluate.worker_timeout_s=nan", "evaluate.worker_timeout_s", "must be a finite number"),
    ("evaluate.worker_timeout_s=1e9", "evaluate.worker_timeout_s", "must be <= 86400"),
    ("evaluate.peak_probe_s=600", "evaluate.peak_probe_s", "must be <= 60"),
    (f"evaluate.warmup_runs={2**63 - 1}", "evaluate.warmup_runs", "must be <= 100000"),
    ("gates.min_parity_float=-inf", "gates.min_parity_float", "must be a finite number"),
    ("recipe.momentum=nan", "train.presets.fast.momentum", "must be a finite number"),
    (f"train.seed={2**40}", "train.seed", "must be <= 4294967295"),
    (f"evaluate.limit={2**62}", "evaluate.limit", "must be <= 10000000"),
    (f"export.calibration_images={2**62}", "export.calibration_images", "must be <= 10000000"),
    ("train.presets.smoke.steps=[[0, inf]]", "train.presets.smoke.steps", "expected [epoch >= 0, lr > 0]"),
    ("evaluate.threads=[1, 100000]", "evaluate.threads", "whole numbers 0..1024"),
])
def test_config_refuses_non_finite_and_unbounded_values(item, key, why):
    with pytest.raises(PipelineError) as exc:
        config.load(None, [config._parse_set(item)])
    message = str(exc.value)
    assert "\n" not in message and f"config key {key!r}" in message and why in message, message


def test_every_number_key_has_an_upper_bound_and_takes_only_finite_values():
    sections = [s.type for s in dataclasses.fields(config.Config)] + [config.Recipe]
    unbounded = [f"{cls.__name__}.{f.name}" for cls in sections for f in dataclasses.fields(cls)
                 if f.type in (int, float) and f.metadata.get("high") is None]
    assert unbounded == []
    for cls in sections:
        for f in dataclasses.fields(cls):
            if f.type is float:
                for bad in (float("nan"), float("inf"), float("-inf")):
                    with pytest.raises(PipelineError, match="must be a finite number"):
                        config._check_value("t", f.name, f, bad)
    with pytest.raises(PipelineError, match="out of range"):  # a JSON config can hold an int beyond any float
        config._check_value("t", "recipe.lr", {f.name: f for f in dataclasses.fields(config.Recipe)}["lr"], 10**400)


def test_evaluate_refuses_a_nan_timeout_before_any_work(tmp_path, capsys):
    """`--set evaluate.worker_timeout_s=nan` used to switch the hung-runtime timeout off."""
    from evaluate.__main__ import main
    handler = signal.getsignal(signal.SIGTERM)
    for item in ("evaluate.worker_timeout_s=nan", "evaluate.peak_probe_s=inf", f"evaluate.warmup_runs={2**63 - 1}"):
        with pytest.raises(SystemExit) as exc:
            main(["--manifest", str(tmp_path / "missing.json"), "--report-dir", str(tmp_path / "r"), "--set", item])
        line = one_error_line(capsys.readouterr().err)
        assert exc.value.code == 1 and repr(item.split("=")[0]) in line and "missing.json" not in line, line
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is handler  # evaluate's SIGTERM handler lives only while it runs


# ---------------------------------------------------------------- 14. predict --threads

@pytest.mark.parametrize("artifact", ["onnx_fp32", "tflite_int8"])
def test_predict_refuses_negative_threads(artifact, tmp_path, capsys):
    from pipeline.cli import main
    for threads in ("-3", "-1", "100000"):
        with pytest.raises(SystemExit) as exc:
            main(["predict", "--manifest", str(tmp_path / "manifest.json"), "--artifact", artifact, "--threads",
                  threads, str(tmp_path / "cat.png")])
        line = one_error_line(capsys.readouterr().err)
        assert exc.value.code == 1 and line.startswith(f"error: --threads {threads}: must be 0"), line


# ---------------------------------------------------------------- 15. control characters in error lines

def test_error_lines_escape_control_characters(tmp_path, capsys):
    forged = "\r\x1b[2Kevaluate: all 34 gates passed\x00\x9b"

    @fail_cleanly
    def main():
        raise PipelineError(f"{tmp_path / forged}: manifest not found")

    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert err == f"error: {tmp_path}/\\x0d\\x1b[2Kevaluate: all 34 gates passed\\x00\\x9b: manifest not found\n"
    assert not re.search("[\x00-\x1f\x7f-\x9f]", err.rstrip("\n"))
    assert printable("tab\tnew\nline\x7f") == "tab\\x09new\\x0aline\\x7f" and printable("é ü ✓") == "é ü ✓"


def test_a_real_cli_error_line_escapes_a_hostile_manifest_path(tmp_path, capsys):
    from pipeline.cli import main
    evil = tmp_path / "x\r\x1b[1Aevaluate: all 34 gates passed" / "manifest.json"
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--manifest", str(evil), "--artifact", "onnx_fp32", str(tmp_path / "cat.png")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.count("\n") == 1 and "\r" not in err and "\x1b" not in err, repr(err)
    assert "x\\x0d\\x1b[1Aevaluate: all 34 gates passed/manifest.json: manifest not found" in err


def test_result_and_gate_lines_escape_a_hostile_file_name(tmp_path, capsys):
    """A photo named to rewrite the terminal line: predict's result line (stdout) and evaluate's progress and
    GATE FAILED lines (which quote a manifest's paths) print it escaped; --json escapes it as JSON does."""
    from evaluate.__main__ import say
    m = write_manifest(tmp_path / "good")
    evil = png(tmp_path / "cat\r\x1b[2Kevaluate: all 34 gates passed.png")
    r = run_py("-m", "pipeline", "predict", "--manifest", m, "--artifact", "onnx_fp32", evil)
    assert r.returncode == 0 and "\r" not in r.stdout and "\x1b" not in r.stdout, repr(r.stdout)
    assert r.stdout.startswith(f"{tmp_path}/cat\\x0d\\x1b[2Kevaluate: all 34 gates passed.png: airplane (10.0%)")
    r = run_py("-m", "pipeline", "predict", "--manifest", m, "--artifact", "onnx_fp32", "--json", evil)
    assert r.returncode == 0 and strict_json(r.stdout)[0]["file"] == str(evil) and "\x1b" not in r.stdout
    say("  onnx_fp32: FAILED: m.json: artifact 'onnx_fp32': file x\r\x1b[2K is missing")
    assert capsys.readouterr().out == \
        "  onnx_fp32: FAILED: m.json: artifact 'onnx_fp32': file x\\x0d\\x1b[2K is missing\n"


# ---------------------------------------------------------------- 17. a text file named x.keras

def test_a_text_file_named_keras_is_not_a_keras_zip(tmp_path, capsys):
    from export.__main__ import main
    from pipeline import checkpoint
    fake = tmp_path / "x.keras"
    fake.write_text("hello")
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(fake))}: cannot load as a Keras model \(not a .keras "
                                            r"zip archive\)$"):
        checkpoint.load(fake)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(fake), "--out-dir", str(tmp_path / "out"), "--quiet"])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 1 and line == f"error: {fake}: cannot load as a Keras model (not a .keras zip archive)"
    assert "File not found" not in line and snapshot(tmp_path) == before


# ---------------------------------------------------------------- 18. manifest bytes, metrics.json test_images

@pytest.mark.parametrize("size", [-5, "12", 1.5, True, None])
def test_manifest_refuses_a_bytes_that_is_not_a_size(size, tmp_path):
    m = write_manifest(tmp_path / "art", entry_changes={"bytes": size})
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(m))}: artifact 'onnx_fp32': \"bytes\" must be a whole "
                                            rf"number >= 0, got {re.escape(repr(size))}$"):
        manifest_mod.read(m)


def test_manifest_verify_refuses_a_bytes_that_is_not_the_files_size(tmp_path):
    m = write_manifest(tmp_path / "art")
    data = json.loads(m.read_text())
    real = data["artifacts"][0]["bytes"]
    data["artifacts"][0]["bytes"] = real + 1
    m.write_text(json.dumps(data))
    entry = manifest_mod.find(manifest_mod.read(m), "onnx_fp32")
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(m))}: artifact 'onnx_fp32': model_fp32.onnx is {real} "
                                            rf"bytes, the manifest's \"bytes\" says {real + 1}$"):
        manifest_mod.verify(m, entry)
    entry["bytes"] = real
    assert manifest_mod.verify(m, entry) == m.parent / "model_fp32.onnx"


def test_evaluate_reports_no_negative_size(tmp_path):
    """The reported case: a negative "bytes" reached the report's size column."""
    from evaluate import run as run_mod
    m = write_manifest(tmp_path / "art", entry_changes={"bytes": -1})
    cfg = config.load(None, [("evaluate.manifest", str(m)), ("evaluate.report_dir", str(tmp_path / "r"))])
    with pytest.raises(PipelineError, match=r"\"bytes\" must be a whole number >= 0, got -1"):
        run_mod.read_inputs(cfg)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("images", ["ten thousand", 0, -10000, 1e4, True, None, "missing"])
def test_reference_record_requires_test_images_a_positive_int(images, tmp_path):
    from export.run import reference_record
    metrics = {"test_accuracy": 0.9, **({"test_images": images} if images != "missing" else {})}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    cfg = config.load(None, [("export.reference_metrics", str(tmp_path / "metrics.json"))])
    shown = None if images == "missing" else images
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(tmp_path / 'metrics.json'))}: \"test_images\" must be "
                                            rf"a whole number >= 1, got {re.escape(repr(shown))}$"):
        reference_record(cfg, tmp_path / "model.h5")
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9, "test_images": 10000}))
    assert reference_record(cfg, tmp_path / "model.h5")["test_images"] == 10000


# ---------------------------------------------------------------- 19. --run-name

@pytest.mark.parametrize("name", ["../../x", "..", ".", "", "a/b", "/tmp/escape", "a\\b", "x\ny"])
def test_train_refuses_a_run_name_that_is_not_one_folder_name(name, tmp_path, capsys):
    from train.__main__ import main
    out = tmp_path / "deep" / "runs"
    with pytest.raises(SystemExit) as exc:
        main(["--run-name", name, "--out-dir", str(out), "--preset", "smoke"])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 1 and line.startswith(f"error: --run-name {printable(repr(name))}: must be one plain "
                                                   "folder name"), line
    assert list(tmp_path.iterdir()) == []  # not even --out-dir was made


# ---------------------------------------------------------------- 7. the example app trusts model_spec.json

@pytest.mark.parametrize("how, change, words", [
    ("labels outside", lambda spec, b: spec.update(labels="/etc/passwd"), "is not a file inside the bundle"),
    ("labels up", lambda spec, b: spec.update(labels="../labels.txt"), "is not a file inside the bundle"),
    ("model link", lambda spec, b: ((b / "link.tflite").symlink_to(b / "model.tflite"),
                                    spec["models"]["fp16"].update(file="link.tflite")), "is a link or leaves"),
    ("model swapped", lambda spec, b: (b / "model.tflite").write_bytes((b / "model.tflite").read_bytes() + b"x"),
     "model_spec.json records for the fp16 model"),
    ("labels swapped", lambda spec, b: (b / "labels.txt").write_text("a\nb\n"), "records for the labels"),
])
def test_litert_example_confines_the_bundle_and_checks_sha256(tflite_bundles, tmp_path, how, change, words):
    import shutil
    bundle = tmp_path / "bundle"
    shutil.copytree(tflite_bundles["finite"], bundle)
    spec = json.loads((bundle / "model_spec.json").read_text())
    change(spec, bundle)
    (bundle / "model_spec.json").write_text(json.dumps(spec))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.png")
    r = run_py(ROOT / "examples" / "litert_mobile.py", "--bundle", bundle, "--model", "fp16", tmp_path / "x.png",
               timeout=60)
    assert r.returncode != 0 and r.stdout == "", (how, r.stdout)
    lines = [line for line in r.stderr.strip().splitlines() if not TF_NATIVE_LOG.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (how, r.stderr)
    assert "root:" not in r.stderr  # /etc/passwd was never printed as class names
