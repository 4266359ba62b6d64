"""Deployment: `pipeline predict` on real files, the TensorFlow-free ONNX client, the mobile bundle, TF Serving."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import atomic, images, manifest
from pipeline.artifacts import ARTIFACTS
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
PER_CLASS = 3  # test images per class written as files

# Runs a script or `-m module` with every TensorFlow-family import refused (and logged),
# so a test can prove a client never needs TensorFlow.
BLOCK_TF = r"""
import runpy, sys
BLOCKED = ("tensorflow", "keras", "tf_keras", "tf2onnx", "tensorflow_model_optimization", "jax")
class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            sys.stderr.write(f"BLOCKED import {name}\n")
            raise ImportError(f"import of {name} is blocked in this test")
        return None
sys.meta_path.insert(0, BlockTensorFlow())
args = sys.argv[1:]
if args[0] == "-m":
    sys.argv = args[1:]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")
"""


def run_py(*args, block_tf=False):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-c", BLOCK_TF, *map(str, args)] if block_tf else [sys.executable, *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- fixtures

BUNDLED = {row.mobile: row for row in ARTIFACTS.values() if row.mobile}  # the mobile bundle's models, by key
DEPLOYED = ["saved_model", "onnx_fp32", "onnx_int8", "tflite_fp16", "tflite_int8", *(r.name for r in BUNDLED.values())]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_export):
    """The small checkpoint through export: the artifacts deployment uses (DEPLOYED), with a real manifest,
    taken from the session's shared CLI export (tests/conftest.py). Its manifest path."""
    from conftest import export_subset
    return export_subset(shared_export[0], tmp_path_factory.mktemp("exp") / "artifacts", DEPLOYED) / "manifest.json"


@pytest.fixture(scope="module")
def samples(test_split):
    """PER_CLASS test images of every class: (images, labels)."""
    idx = np.concatenate([np.flatnonzero(test_split.labels == c)[:PER_CLASS] for c in range(10)])
    return test_split.images[idx], test_split.labels[idx]


@pytest.fixture(scope="module")
def keras_probs(small_checkpoint, samples):
    from pipeline import checkpoint
    model, _ = checkpoint.load(small_checkpoint)
    return np.asarray(model(samples[0].astype(np.float32), training=False))


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, samples):
    """The samples as 32x32 PNGs in one folder, and 4x nearest-upscaled 128x128 PNGs in another."""
    root = tmp_path_factory.mktemp("images")
    (root / "png").mkdir()
    (root / "upscaled").mkdir()
    for i, img in enumerate(samples[0]):
        Image.fromarray(img).save(root / "png" / f"{i:03d}.png")
        Image.fromarray(img).resize((128, 128), Image.NEAREST).save(root / "upscaled" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory, samples):
    """Odd modes of one image -> (path, expected (32, 32, 3) uint8 or None when only the shape is known)."""
    d = tmp_path_factory.mktemp("odd")
    rgb = samples[0][0]
    im = Image.fromarray(rgb)
    out = {}
    im.convert("L").save(d / "gray.png")
    gray = np.asarray(im.convert("L"))
    out["gray"] = (d / "gray.png", np.repeat(gray[..., None], 3, axis=-1))
    rgba = np.dstack([rgb, np.where(np.arange(32)[None, :] < 16, 255, 0).repeat(32, 0)]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    expect = rgb.copy()
    expect[:, 16:] = 255  # transparent half composited over white
    out["rgba"] = (d / "rgba.png", expect)
    pal = im.quantize(16)
    pal.save(d / "palette.png")
    out["palette"] = (d / "palette.png", np.asarray(pal.convert("RGB")))
    Image.fromarray(gray.astype(np.uint16) * 257).save(d / "gray16.png")  # 16-bit grayscale PNG
    out["gray16"] = (d / "gray16.png", np.repeat(gray[..., None], 3, axis=-1))
    im.resize((128, 128), Image.NEAREST).save(d / "upscaled.png")
    out["upscaled"] = (d / "upscaled.png", rgb)
    im.resize((300, 170), Image.BICUBIC).save(d / "photo.jpg", quality=95)
    out["photo"] = (d / "photo.jpg", None)
    return out


# ---------------------------------------------------------------- images

def test_odd_image_modes_become_32x32_rgb(odd_files):
    for name, (path, expected) in odd_files.items():
        arr = images.load(path)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8, name
        if expected is not None:
            np.testing.assert_array_equal(arr, expected, err_msg=name)
    # A 300x170 resized photo: the whole image squeezed (no crop), so the left and right edges survive.
    photo = images.load(odd_files["photo"][0]).astype(int)
    direct = np.asarray(Image.open(odd_files["photo"][0]).convert("RGB").resize((32, 32), Image.BOX)).astype(int)
    assert np.abs(photo - direct).max() == 0


def test_example_copies_read_images_like_the_pipeline(odd_files):
    ort_client, mobile = load_example("onnxruntime_cpu"), load_example("litert_mobile")
    for name, (path, _) in odd_files.items():
        expected = images.load(path)
        np.testing.assert_array_equal(ort_client.load_image(path), expected, err_msg=name)
        np.testing.assert_array_equal(mobile.bitmap_from_file(path), mobile.argb_from_rgb(expected), err_msg=name)


def test_bad_image_files_raise_image_error(tmp_path, odd_files):
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    good = odd_files["upscaled"][0].read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (8, 8)).save(tmp_path / "image.gif")
    for name in ("text.png", "empty.jpg", "truncated.png", "image.gif", "missing.png"):
        with pytest.raises(images.ImageError):
            images.load(tmp_path / name)


# ---------------------------------------------------------------- predict

def test_predict_onnx_fp32_json_matches_keras_on_files_and_upscaled(exported, image_files, keras_probs, samples):
    # TensorFlow is blocked: predict with an ONNX artifact must need only onnxruntime.
    r = run_py("-m", "pipeline", "predict", "--manifest", exported, "--artifact", "onnx_fp32", "--json",
               "--top-k", "3", image_files / "png", image_files / "upscaled", block_tf=True)
    assert r.returncode == 0, r.stderr
    assert "BLOCKED" not in r.stderr
    results = json.loads(r.stdout)
    n = len(samples[1])
    assert [Path(x["file"]).parent.name for x in results] == ["png"] * n + ["upscaled"] * n
    classes = manifest.read(exported)["classes"]
    expected = [classes[i] for i in keras_probs.argmax(1)] * 2
    assert [x["label"] for x in results] == expected  # upscaled PNGs read back exactly
    for x, p in zip(results, np.concatenate([keras_probs, keras_probs])):
        assert len(x["top_k"]) == 3 and x["top_k"][0] == {"label": x["label"], "probability": x["probability"]}
        assert [t["probability"] for t in x["top_k"]] == sorted((t["probability"] for t in x["top_k"]), reverse=True)
        assert abs(x["probability"] - p.max()) < 1e-4


def test_predict_default_tflite_int8_text_agrees_with_evaluator(exported, image_files, samples):
    from pipeline.runtimes import TFLiteRunner
    r = run_py("-m", "pipeline", "predict", "--manifest", exported, image_files / "png", block_tf=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(samples[1])
    entry = manifest.find(manifest.read(exported), "tflite_int8")
    probs = TFLiteRunner("tflite_int8", manifest.verify(exported, entry), 1).predict(samples[0])
    classes = manifest.read(exported)["classes"]
    for line, p in zip(lines, probs):
        # "<file>: <label> (<p>%)  [<label> <p>%, ...]"
        path, rest = line.split(": ", 1)
        assert Path(path).suffix == ".png"
        assert rest.startswith(f"{classes[p.argmax()]} ({p.max():.1%})  [")
        assert rest.count("%") == 4  # top-1 plus the default top-3


def test_predict_bad_inputs_are_reported_and_the_rest_classified(exported, image_files, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.png").write_bytes((image_files / "png" / "000.png").read_bytes())
    (mixed / "broken.png").write_text("not an image")
    (mixed / "notes.txt").write_text("ignored: not an image extension")
    (tmp_path / "empty").mkdir()
    missing = tmp_path / "missing.jpg"
    r = run_py("-m", "pipeline", "predict", "--manifest", exported, "--json",
               mixed, tmp_path / "empty", missing, image_files / "png" / "001.png")
    assert r.returncode == 1
    results = {Path(x["file"]).name: x for x in json.loads(r.stdout)}
    assert set(results) == {"a.png", "broken.png", "empty", "missing.jpg", "001.png"}
    assert "label" in results["a.png"] and "label" in results["001.png"]
    assert results["broken.png"]["error"] == "not a PNG or JPEG image"
    assert "no .png" in results["empty"]["error"]
    assert results["missing.jpg"]["error"] == "no such file or folder"
    assert f"error: {mixed / 'broken.png'}: not a PNG or JPEG image" in r.stderr
    assert f"error: {tmp_path / 'empty'}: " in r.stderr and f"error: {missing}: " in r.stderr


def test_predict_unknown_artifact_and_tampered_file_fail_cleanly(exported, image_files):
    r = run_py("-m", "pipeline", "predict", "--manifest", exported, "--artifact", "tflite_int4",
               image_files / "png")
    assert r.returncode == 1 and r.stdout == ""
    assert "error: unknown artifact 'tflite_int4'; the manifest has: " in r.stderr and "tflite_int8" in r.stderr
    data = json.loads(exported.read_text())
    for e in data["artifacts"]:
        e["sha256"] = "0" * 64
    tampered = exported.parent / "manifest-tampered.json"
    tampered.write_text(json.dumps(data))
    r = run_py("-m", "pipeline", "predict", "--manifest", tampered, image_files / "png")
    assert r.returncode == 1 and "sha256" in r.stderr and "tflite_int8" in r.stderr


# ---------------------------------------------------------------- ONNX Runtime without TensorFlow

def test_tensorflow_block_really_blocks(tmp_path):
    script = tmp_path / "uses_tf.py"
    script.write_text("import tensorflow\n")
    r = run_py(script, block_tf=True)
    assert r.returncode != 0
    assert "BLOCKED import tensorflow" in r.stderr and "ImportError" in r.stderr


def test_onnx_client_runs_without_tensorflow(exported, image_files, keras_probs):
    classes = manifest.read(exported)["classes"]
    expected = [classes[i] for i in keras_probs.argmax(1)]
    top1 = {}
    for artifact in ("onnx_fp32", "onnx_int8"):
        r = run_py(ROOT / "examples" / "onnxruntime_cpu.py", "--manifest", exported, "--artifact", artifact,
                   "--threads", "1", "--json", image_files / "upscaled", block_tf=True)
        assert r.returncode == 0, r.stderr
        assert "BLOCKED" not in r.stderr
        top1[artifact] = [x["label"] for x in json.loads(r.stdout)]
    assert top1["onnx_fp32"] == expected
    agreement = np.mean([a == b for a, b in zip(top1["onnx_int8"], expected)])
    assert agreement >= 0.8, agreement
    # --model form, a bad file among good ones: reported, the rest classified, exit 1.
    bad = image_files / "bad.png"
    bad.write_text("nope")
    try:
        model = exported.parent / manifest.find(manifest.read(exported), "onnx_fp32")["path"]
        r = run_py(ROOT / "examples" / "onnxruntime_cpu.py", "--model", model, image_files / "png" / "000.png",
                   bad, block_tf=True)
    finally:
        bad.unlink()
    assert r.returncode == 1 and f"error: {bad}: " in r.stderr
    assert r.stdout.startswith(f"{image_files / 'png' / '000.png'}: {expected[0]} (")


# ---------------------------------------------------------------- mobile bundle

@pytest.fixture(scope="module")
def bundle(exported, tmp_path_factory):
    from export import mobile
    out = tmp_path_factory.mktemp("bundle") / "mobile"
    mobile.build(exported, out)
    return out


def test_mobile_bundle_contents(bundle, exported):
    assert sorted(p.name for p in bundle.iterdir()) == sorted(["golden", "labels.txt", "model_spec.json",
                                                               *(r.file for r in BUNDLED.values()),
                                                               *(r.ops_config for r in BUNDLED.values() if r.ops_config)])
    spec = json.loads((bundle / "model_spec.json").read_text())
    assert spec["preprocessing"] == "raw RGB 0..255, NHWC, no other preprocessing"
    data = manifest.read(exported)
    assert (bundle / "labels.txt").read_text().split() == data["classes"]
    int8, fp16 = spec["models"]["int8"], spec["models"]["fp16"]
    entry = manifest.find(data, BUNDLED["int8"].name)
    assert int8["sha256"] == entry["sha256"] == atomic.sha256_file(bundle / BUNDLED["int8"].file)
    assert int8["input"]["dtype"] == "uint8" and int8["output"]["dtype"] == "uint8"
    assert int8["input"]["shape"] == [1, 32, 32, 3] and int8["output"]["shape"] == [1, 10]
    assert int8["input"]["name"] == entry["input"]["name"]
    assert int8["input"]["quantization"]["scale"] == pytest.approx(entry["input"]["quantization"]["scale"])
    assert int8["output"]["quantization"]["zero_point"] == entry["output"]["quantization"]["zero_point"]
    assert fp16["input"]["dtype"] == "float32" and fp16["input"]["quantization"] is None
    assert fp16["input"]["shape"] == [1, 32, 32, 3]  # every model a phone gets: batch 1, static
    for key in ("onnx_fp32", "onnx_int8"):
        assert spec["models"][key]["input"]["shape"] == [1, 32, 32, 3], key


_MEDIAPIPE_TOP = """
import json, sys
import numpy as np
from PIL import Image
from pipeline.runtimes import MediaPipeRunner
runner = MediaPipeRunner("golden", sys.argv[1], 1)
probs = runner.predict([np.asarray(Image.open(p).convert("RGB")) for p in sys.argv[2:]])
print(json.dumps({"probs": probs.tolist(), "names": runner.class_names}))
runner.close()
"""


def _agrees(probs, expected, labels):
    """The golden contract: the same top-1 label, every listed score within the tolerance."""
    for p, top in zip(probs, expected["top"]):
        assert labels[int(np.argmax(p))] == top[0][0], (p, top)
        for label, score in top:
            assert abs(p[labels.index(label)] - score) <= expected["score_tolerance"] + 1e-6, (label, p, top)


def test_golden_vectors_hold_in_the_clients_apps_use(bundle):
    """Each golden .png decodes to its .rgb bytes; MediaPipe Tasks (the .tflite files, given the PNGs,
    in the mobile environment) and a plain onnxruntime session (the .onnx/.ort files, given the .rgb
    bytes) reproduce every model's expected top-3."""
    import subprocess

    import onnxruntime as ort
    from PIL import Image

    from pipeline import mobile_env
    spec = json.loads((bundle / "model_spec.json").read_text())
    golden, labels = spec["golden"], (bundle / "labels.txt").read_text().split()
    assert len(golden["images"]) == 10 and sorted(g["label"] for g in golden["images"]) == sorted(labels)
    rgb = []
    for g in golden["images"]:
        raw = (bundle / g["rgb"]).read_bytes()
        assert len(raw) == 32 * 32 * 3 and atomic.sha256_file(bundle / g["rgb"]) == g["rgb_sha256"]
        assert np.asarray(Image.open(bundle / g["png"]).convert("RGB")).tobytes() == raw
        rgb.append(np.frombuffer(raw, np.uint8).reshape(32, 32, 3))
    assert set(golden["expected"]) == set(spec["models"])
    for key, model in spec["models"].items():
        expected, path = golden["expected"][key], bundle / model["file"]
        if model["file"].endswith(".tflite"):
            proc = subprocess.run([str(mobile_env.python()), "-c", _MEDIAPIPE_TOP, str(path),
                                   *(str(bundle / g["png"]) for g in golden["images"])],
                                  cwd=ROOT, env=mobile_env.env(), capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            assert out["names"] == labels  # from the file's own metadata
            probs = np.array(out["probs"])
        else:
            opts = ort.SessionOptions()
            opts.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            probs = np.concatenate([session.run(None, {model["input"]["name"]: x[None].astype(np.float32)})[0]
                                    for x in rgb])
        _agrees(probs, expected, labels)


def test_mobile_bundle_is_all_or_nothing(exported, tmp_path):
    from export import mobile
    data = json.loads(exported.read_text())
    fp16 = BUNDLED["fp16"].name
    data["artifacts"] = [e for e in data["artifacts"] if e["name"] != fp16]
    partial = exported.parent / "manifest-no-fp16.json"
    partial.write_text(json.dumps(data))
    with pytest.raises(PipelineError, match=fp16):
        mobile.build(partial, tmp_path / "mobile")
    assert list(tmp_path.iterdir()) == []
    r = run_py("-m", "export.mobile", "--manifest", partial, "--out", tmp_path / "mobile")
    assert r.returncode == 1 and f"error: unknown artifact '{fp16}'" in r.stderr


def test_mobile_example_matches_the_interpreter(bundle, exported, test_split):
    from pipeline.runtimes import TFLiteRunner
    mobile = load_example("litert_mobile")
    imgs = test_split.images[::50]  # 200 images across every class
    data = manifest.read(exported)
    for model, name in (("int8", BUNDLED["int8"].name), ("fp16", BUNDLED["fp16"].name)):
        app = mobile.MobileClassifier(bundle, model).classify_images(imgs)
        direct = TFLiteRunner(name, manifest.verify(exported, manifest.find(data, name)), 1).predict(imgs)
        np.testing.assert_array_equal(app.argmax(1), direct.argmax(1), err_msg=model)
        np.testing.assert_allclose(app, direct, atol=1e-6, err_msg=model)


def test_mobile_example_cli_on_files(bundle, image_files, samples, exported):
    r = run_py(ROOT / "examples" / "litert_mobile.py", "--bundle", bundle, image_files / "upscaled", block_tf=True)
    assert r.returncode == 0, r.stderr
    assert "BLOCKED" not in r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(samples[1])
    predict = run_py("-m", "pipeline", "predict", "--manifest", exported, image_files / "upscaled")
    assert [line.split("  [")[0] for line in predict.stdout.strip().splitlines()] == \
        [line.split("  [")[0] for line in lines]


def test_check_mobile_parity_script_on_a_slice(exported, bundle, tmp_path):
    check = load_example("check_mobile_parity")
    out = tmp_path / "parity.json"
    assert check.main(["--manifest", str(exported), "--bundle", str(bundle), "--limit", "300",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 300 and result["agreement"] == 1.0 and result["disagreements"] == []
    assert result["mobile_accuracy"] == result["evaluator_accuracy"] > 0.1


# ---------------------------------------------------------------- TF Serving

def test_serving_default_answers_the_rest_request_json(exported, image_files, keras_probs):
    import tensorflow as tf
    from pipeline.predict import serving_request
    files = sorted((image_files / "upscaled").glob("*.png"))
    r = run_py("-m", "pipeline", "predict", "--serving-request", image_files / "upscaled", block_tf=True)
    assert r.returncode == 0, r.stderr
    request = json.loads(r.stdout)  # the body curl would send
    assert request == json.loads(json.dumps(serving_request([images.load(f) for f in files])))
    assert request["signature_name"] == "serving_default" and len(request["instances"]) == len(files)
    entry = manifest.find(manifest.read(exported), "saved_model")
    loaded = tf.saved_model.load(str(manifest.verify(exported, entry)))
    signature = loaded.signatures[request["signature_name"]]
    (input_name, spec), = signature.structured_input_signature[1].items()
    assert input_name == "image" and spec.shape.as_list() == [None, 32, 32, 3] and spec.dtype == tf.float32
    outputs = signature(image=tf.constant(request["instances"], tf.float32))
    assert list(outputs) == ["probabilities"]
    response = {"predictions": outputs["probabilities"].numpy().tolist()}  # TF Serving's row-format reply
    probs = np.array(json.loads(json.dumps(response))["predictions"])
    assert probs.shape == (len(files), 10)
    np.testing.assert_allclose(probs, keras_probs, atol=1e-5)


# ---------------------------------------------------------------- hostile manifests and labels

def _hostile_copy(exported, tmp_path, change):
    """A copy of the exported folder whose manifest (a dict) `change` edits in place."""
    import shutil
    folder = tmp_path / "hostile"
    shutil.copytree(exported.parent, folder)
    data = json.loads((folder / "manifest.json").read_text())
    change(data, folder)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder / "manifest.json"


def _set_path(name, path):
    def change(data, folder):
        manifest.find(data, name)["path"] = path
    return change


@pytest.mark.parametrize("how, change, words", [
    ("parent path", _set_path(BUNDLED["int8"].name, "../outside.tflite"), "leaves the manifest's folder"),
    ("absolute path", _set_path(BUNDLED["int8"].name, "/etc/passwd"), "leaves the manifest's folder"),
    ("labels elsewhere", lambda d, f: d["labels"].update(path="../labels.txt"), "labels: path '../labels.txt'"),
    ("symlink out", lambda d, f: (f / BUNDLED["int8"].file).unlink() or
     (f / BUNDLED["int8"].file).symlink_to(f.parent / "outside.tflite"), "is a link to"),
    ("labels swapped", lambda d, f: (f / "labels.txt").write_text("automobile\nairplane\n" + "\n".join(
        ["bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]) + "\n"), "labels: labels.txt sha256"),
    ("labels re-hashed", lambda d, f: ((f / "labels.txt").write_text("\n".join(reversed(d["classes"])) + "\n"),
                                       d["labels"].update(sha256=atomic.sha256_file(f / "labels.txt"))),
     "does not list the manifest's classes in order"),
])
def test_predict_and_mobile_refuse_a_hostile_manifest(exported, image_files, tmp_path, how, change, words):
    import shutil
    shutil.copy(exported.parent / BUNDLED["int8"].file, tmp_path / "outside.tflite")
    (tmp_path / "labels.txt").write_text("x\n" * 10)
    hostile = _hostile_copy(exported, tmp_path, change)
    r = run_py("-m", "pipeline", "predict", "--manifest", hostile, "--artifact", BUNDLED["int8"].name,
               image_files / "png")
    assert r.returncode == 1 and r.stdout == "", (how, r.stdout)
    assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, (how, r.stderr)
    r = run_py("-m", "export.mobile", "--manifest", hostile, "--out", tmp_path / "bundle")
    assert r.returncode == 1 and words in r.stderr and not (tmp_path / "bundle").exists(), (how, r.stderr)


def test_onnx_example_errors_are_one_line(exported, image_files, tmp_path):
    example = ROOT / "examples" / "onnxruntime_cpu.py"
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "labels.txt").write_text("\n".join(manifest.read(exported)["classes"]) + "\n")
    small = tmp_path / "small.onnx"
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("Identity", ["image"], ["probabilities"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 28, 28, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 28, 28, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), small)
    hostile = _hostile_copy(exported, tmp_path, _set_path("onnx_fp32", "../small.onnx"))
    cases = [(["--manifest", tmp_path / "bad.json"], "not a readable export manifest"),
             (["--model", tmp_path / "missing.onnx"], "missing.onnx: no such model file"),
             (["--model", small], "expected float [batch, 32, 32, 3]"),
             (["--manifest", exported, "--artifact", "tflite_int8"], "not onnx"),
             (["--manifest", hostile], "leaves the manifest's folder")]
    for args, words in cases:
        r = run_py(example, *args, image_files / "png", block_tf=True)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, (args, r.stderr)
    r = run_py(example, "--manifest", exported, tmp_path / "empty", block_tf=True)
    assert r.returncode == 1 and "no PNG or JPEG files in" in r.stderr


def test_mobile_example_errors_are_one_line(image_files, tmp_path):
    r = run_py(ROOT / "examples" / "litert_mobile.py", "--bundle", tmp_path / "nope", image_files / "png")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: not a mobile bundle "
                                             f"({tmp_path / 'nope' / 'model_spec.json'} is missing); "
                                             "build one with `python -m export.mobile`"]


def test_an_internal_error_says_so_and_where_the_trace_is(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("import sys\nsys.path.insert(0, %r)\nfrom pipeline.errors import fail_cleanly\n"
                      "@fail_cleanly\ndef main():\n    return {}['x']\nmain()\n" % str(ROOT))
    r = run_py(script)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line, = r.stderr.strip().splitlines()
    assert line.startswith("error: internal error (KeyError: 'x'); this is a bug, the full trace is in ")
    assert "Traceback" in Path(line.rsplit(" ", 1)[1]).read_text()
