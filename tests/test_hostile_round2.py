"""Hostile inputs, second round (the issue's items 6, 12, 13 and 16). As in tests/test_hostile_more.py, each test
builds its input itself and asserts the refusal: one `error:` line naming the file, key or flag, a non-zero exit
or a PipelineError, nothing written, deleted or run, and no hang (every subprocess has a timeout).

   6  sizes     zip members are read to a cap on the bytes actually read (a header can understate its member); a
                .keras archive's weights and every checkpoint's declared weights are capped; image archives are
                decoded as they are read; images have a pixel-and-bytes budget, shared with the examples
  12  no bugs   plain bad input (manifest, baseline, run folder, output folder, full disk) is an `error:` line,
                checked before the work starts where it can be, never "internal error"
  13  quiet     predict (keras, saved_model, tflite) and train --resume print nothing but their result or error
  16  examples  count_test_accuracy.py refuses what is not the whole test split; the examples survive link loops
"""
import errno
import gzip
import io
import json
import os
import re
import struct
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import atomic, config, images, manifest as manifest_mod
from pipeline.errors import PipelineError, fail_cleanly
from pipeline.model import CLASSES
from test_deploy import load_example
from test_hostile_more import onnx_classifier, one_error_line, png, run_py, snapshot, write_manifest

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": ""}  # not set: the commands must hide TensorFlow's lines themselves


def understated_zip(path, name, real, stated, extra=()):
    """A zip whose local and central headers say member `name` holds `stated` bytes; it holds `real` zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in extra:
            zf.writestr(member, data)
        zf.writestr(name, bytes(real))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
    struct.pack_into("<I", raw, local + 22, stated)  # the local header's uncompressed size
    entry = raw.find(b"PK\x01\x02")  # the central directory: the entry whose name is `name`
    while raw[entry + 46:entry + 46 + struct.unpack_from("<H", raw, entry + 28)[0]] != name.encode():
        entry = raw.find(b"PK\x01\x02", entry + 4)
    struct.pack_into("<I", raw, entry + 24, stated)
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo(name).file_size == stated
    return path


def resnet_file(path):
    """An untrained resnet20v1 saved as `path` (.h5 or .keras)."""
    from pipeline.model import build_preset
    build_preset("resnet20v1").save(path)
    return path


# ---------------------------------------------------------------- 6. zip members: the cap counts bytes read

def test_read_capped_never_asks_for_more_than_a_chunk_or_the_cap():
    class Spy(io.BytesIO):
        asked = []

        def read(self, n=-1):
            Spy.asked.append(n)
            return super().read(n)

    assert atomic.read_capped(Spy(bytes(10 * MB)), 3 * MB) is None
    assert Spy.asked and all(0 < n <= MB for n in Spy.asked) and sum(Spy.asked) == 3 * MB + 1
    assert atomic.read_capped(io.BytesIO(b"abc"), 3) == b"abc"


def test_a_zip_member_whose_headers_understate_it_is_never_decompressed_whole(tmp_path, monkeypatch):
    """zipfile returns no more than the header's size, but one read() of the member decompressed all of it first
    (a 1 MB zip stating 1 KB took 2 GB); read in chunks, the first chunk past the stated size ends it."""
    from pipeline import data
    source = understated_zip(tmp_path / "src.zip", "test/cat/0.png", 8 * MB, 1000)
    asked = []
    real_read = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: asked.append(n) or real_read(self, n))
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(source))}: corrupt zip archive \(Bad CRC-32"):
        data.load_cifar10(source, splits=("test",), progress=False, cache_dir=tmp_path / "cache")
    assert asked and all(0 < n <= MB for n in asked)  # never read(-1): never the whole member at once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.zip"]


def test_a_member_holding_more_than_the_cap_is_refused_by_the_bytes_read(tmp_path, monkeypatch):
    from pipeline import data
    monkeypatch.setattr(data, "MAX_MEMBER_BYTES", MB)
    budget = data._Budget(tmp_path / "src.tar")
    with pytest.raises(PipelineError, match=r"src.tar: member train/cat/0.png holds more than its header's 10 bytes, "
                                            r"over the 1,048,576-byte cap per file; refused$"):
        budget.read("train/cat/0.png", 10, io.BytesIO(bytes(2 * MB)))
    assert budget.read("x", 3, io.BytesIO(b"abc")) == b"abc"


def test_keras_weights_are_read_to_a_cap_and_declared_sizes_are_checked(tmp_path, monkeypatch):
    import h5py

    from pipeline import checkpoint
    real = resnet_file(tmp_path / "real.keras")
    with zipfile.ZipFile(real) as zf:
        extra = [(n, zf.read(n)) for n in zf.namelist() if n != checkpoint.WEIGHTS_MEMBER]
    understated = understated_zip(tmp_path / "understated.keras", checkpoint.WEIGHTS_MEMBER, 4 * MB, 1000, extra)
    with pytest.raises(PipelineError, match=r"understated.keras: cannot read its model.weights.h5 \(Bad CRC-32"):
        checkpoint.load(understated)
    monkeypatch.setattr(checkpoint, "WEIGHTS_CAP", MB)  # the seed model's weights take 3.2 MB
    with pytest.raises(PipelineError, match=r"real.keras: its model.weights.h5 holds more than 1,048,576 bytes; "
                                            r"refused$"):
        checkpoint.load(real)
    monkeypatch.undo()
    # an .h5 whose stored kernel declares 1.6 GB (never written, so the file stays small): Keras would read it
    # whole before comparing its shape
    h5 = resnet_file(tmp_path / "huge.h5")
    with h5py.File(h5, "a") as f:
        group = f["model_weights"]
        group.create_dataset("extra/kernel:0", shape=(20000, 20000), dtype="float32", chunks=(1000, 1000),
                             compression="gzip")
    assert h5.stat().st_size < 10 * MB
    with pytest.raises(PipelineError, match=r"huge.h5: its weights declare 1,60\d,\d{3},\d{3} bytes, over the "
                                            r"67,108,864-byte cap; refused before reading them$"):
        checkpoint.load(h5)
    # an empty dataset (h5py.Empty) has no size: counted as 0 bytes (it was a TypeError, "internal error");
    # Keras then ignores the group no layer owns
    empty = resnet_file(tmp_path / "empty.h5")
    with h5py.File(empty, "a") as f:
        f["model_weights"].create_dataset("extra/kernel:0", data=h5py.Empty("f"))
    assert checkpoint.load(empty)[1] == "resnet20v1"
    model, preset = checkpoint.load(real)  # a real .keras still loads
    assert preset == "resnet20v1"


def test_resume_refuses_a_fifo_in_the_run_folder_without_waiting(tmp_path):
    """A FIFO for run.json, best.json or history.csv would block a plain read forever."""
    import os
    import subprocess
    import sys
    for name in ("run.json", "best.json", "history.csv"):
        run = tmp_path / name.replace(".", "_")
        run.mkdir()
        if name != "run.json":  # a real run's marker and config (a finished proxy's, without its metrics.json)
            for part in ("run.json", "config.resolved.json"):
                (run / part).write_bytes((ROOT / "models" / "candidates" / "p15-base" / part).read_bytes())
        os.mkfifo(run / name)
        proc = subprocess.run([sys.executable, "-m", "train", "--resume", str(run)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode != 0 and proc.stderr.startswith("error: ") and name in proc.stderr, proc.stderr


# ---------------------------------------------------------------- 6. archives are decoded as they are read

def test_a_tar_gz_of_zero_filled_members_stops_at_the_first_one(tmp_path, monkeypatch):
    """40 MB of zeros in 40 members gzip to ~40 KB: the loader used to read every member before decoding any."""
    from pipeline import data
    source = tmp_path / "zeros.tar.gz"
    with gzip.open(source, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for i in range(40):
            info = tarfile.TarInfo(f"test/cat/{i:03d}.png")
            info.size = MB
            tf.addfile(info, io.BytesIO(bytes(MB)))
    assert source.stat().st_size < 200_000
    reads = []
    real = atomic.read_capped
    monkeypatch.setattr(atomic, "read_capped", lambda f, cap: reads.append(cap) or real(f, cap))
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(source))}:test/cat/000.png: not an image format"):
        data.load_cifar10(source, splits=("test",), progress=False, cache_dir=tmp_path / "cache")
    assert len(reads) == 1  # the first member read, refused; the other 39 never read
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- 6. images: a pixel-and-bytes budget

def test_the_examples_keep_the_pipelines_image_budget():
    for name in ("onnxruntime_cpu", "litert_mobile"):
        example = load_example(name)
        assert (example.MAX_PIXELS, example.MAX_DECODED_BYTES) == (images.MAX_PIXELS, images.MAX_DECODED_BYTES), name
        for mode in ("1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I", "F"):
            assert example.decoded_bytes(mode, (300, 200)) == images.decoded_bytes(mode, (300, 200)), (name, mode)


def test_a_16_bit_image_over_the_bytes_budget_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((100, 120), 40000, np.uint16)).save(path)
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 20_000)  # the same check at a size a test can build
    loaded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(self) or pytest.fail("decoded"))
    with pytest.raises(images.ImageError, match=r"^120x100 I;16 pixels take 24,000 bytes, over the 20,000-byte cap$"):
        images.load(path)
    assert loaded == []


def test_16_bit_scaling_is_round_v_over_257_without_a_float_copy():
    """The lookup table gives what np.rint(v / 257) (clipped) gave, for every 16-bit value and beyond."""
    values = np.concatenate([np.arange(65536), [-300, -129, -128, -1, 65536, 10**6, 2**31 - 1]]).astype(np.int32)
    im = Image.fromarray(values.reshape(1, -1), "I")
    expected = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(images.to_rgb(im))[0, :, 0], expected)
    low = Image.fromarray(np.arange(256, dtype=np.int32).reshape(16, 16), "I")  # nothing above 255: not scaled
    assert np.array_equal(np.asarray(images.to_rgb(low))[..., 0], np.arange(256).reshape(16, 16))


@pytest.fixture(scope="module")
def hundred_megapixels(tmp_path_factory):
    """A 10000x10000 grayscale PNG (~100 KB): over the budget, and over Pillow's own warning size."""
    path = tmp_path_factory.mktemp("big") / "100mp.png"
    Image.new("L", (10000, 10000)).save(path)
    return path


def test_predict_and_the_examples_refuse_a_100_megapixel_png_quietly(hundred_megapixels, tmp_path):
    """The onnxruntime example used to decode it (exit 0, gigabytes); Pillow's DecompressionBombWarning used to
    precede predict's refusal (item 13)."""
    m = write_manifest(tmp_path / "art")
    r = run_py("-m", "pipeline", "predict", "--manifest", m, "--artifact", "onnx_fp32", hundred_megapixels)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr == f"error: {hundred_megapixels}: 10000x10000 pixels, over the 50,000,000-pixel cap\n"
    r = run_py(ROOT / "examples" / "onnxruntime_cpu.py", "--model", m.parent / "model_fp32.onnx", "--labels",
               m.parent / "labels.txt", hundred_megapixels)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr == f"error: {hundred_megapixels}: ValueError: 10000x10000 L pixels, over the budget of " \
                       "50,000,000 pixels and 150,000,000 bytes; not decoded\n"
    mobile = load_example("litert_mobile")
    with pytest.raises(ValueError, match="over the budget"):
        mobile.bitmap_from_file(hundred_megapixels)


# ---------------------------------------------------------------- 12. manifests

def _manifest(tmp_path, change):
    m = write_manifest(tmp_path / "art")
    data = json.loads(m.read_text())
    change(data, m.parent)
    m.write_text(json.dumps(data))
    return m


def _loop(folder, name):
    os.symlink(f"{name}.b", folder / name)
    os.symlink(name, folder / f"{name}.b")


@pytest.mark.parametrize("change, words", [
    (lambda d, f: d["artifacts"][0].update(name=["onnx_fp32"]), r'artifact #0: "name" must be a string, got '
                                                                 r"\['onnx_fp32'\]$"),
    (lambda d, f: d["artifacts"][0].update(format=7), r'artifact #0: "format" must be a string, got 7$'),
    (lambda d, f: d["reference"].update(accuracy="0.9"), r'"reference.accuracy" must be a fraction in \(0, 1\] or '
                                                         r"null, got '0.9'$"),
    (lambda d, f: d["reference"].update(accuracy=float("nan")), r'"reference.accuracy" must be a fraction'),
    (lambda d, f: d["reference"].update(test_images="10000"), r'"reference.test_images" must be a whole number'),
    (lambda d, f: d.update(reference=[0.9]), r'"reference" must be an object, got \[0.9\]$'),
    (lambda d, f: d.update(classes=10), r'"classes" must be a list of names, got 10$'),
    (lambda d, f: d.update(source_checkpoint="m.h5"), r'"source_checkpoint" must be an object'),
    (lambda d, f: (_loop(f, "lab.txt"), d["labels"].update(path="lab.txt")),
     r"labels: 'lab.txt' cannot be resolved \(Symlink loop"),
    (lambda d, f: (_loop(f, "m.onnx"), d["artifacts"][0].update(path="m.onnx")),
     r"artifact 'onnx_fp32': 'm.onnx' cannot be resolved \(Symlink loop"),
])
def test_a_hostile_manifest_is_refused_naming_the_key(tmp_path, change, words):
    m = _manifest(tmp_path, change)
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(m))}: {words}") as exc:
        manifest_mod.read(m)
    assert "\n" not in str(exc.value)


DEEP = "[" * 200_000 + "]" * 200_000


def test_deeply_nested_json_and_toml_are_refused_not_crashed(tmp_path, capsys):
    from pipeline.cli import main
    (tmp_path / "manifest.json").write_text(DEEP)
    (tmp_path / "pipeline.toml").write_text(f"a = {DEEP}\n")
    (tmp_path / "x.json").write_text('{"a":' * 200_000 + "1" + "}" * 200_000)
    with pytest.raises(PipelineError, match="manifest.json: not a readable JSON manifest .*maximum recursion depth"):
        manifest_mod.read(tmp_path / "manifest.json")
    with pytest.raises(PipelineError, match="x.json: not readable JSON .*maximum recursion depth"):
        config.read_json(tmp_path / "x.json")
    with pytest.raises(SystemExit) as exc:
        main(["config", "--config", str(tmp_path / "pipeline.toml")])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 1 and line.startswith(f"error: {tmp_path / 'pipeline.toml'}: invalid TOML"), line
    r = run_py(ROOT / "examples" / "onnxruntime_cpu.py", "--manifest", tmp_path / "manifest.json", png(tmp_path / "c.png"))
    assert r.returncode == 1 and "not a readable export manifest (RecursionError" in one_error_line(r.stderr)


def test_predict_cli_refuses_a_name_that_is_a_list_in_one_line(tmp_path, capsys):
    from pipeline.cli import main
    m = _manifest(tmp_path, lambda d, f: d["artifacts"][0].update(name=["onnx_fp32"]))
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--manifest", str(m), "--artifact", "onnx_fp32", str(png(tmp_path / "cat.png"))])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 1 and line == f"error: {m}: artifact #0: \"name\" must be a string, got ['onnx_fp32']"


# ---------------------------------------------------------------- 12. evaluate: refused before scoring

@pytest.fixture
def no_scoring(monkeypatch):
    from evaluate import run as run_mod
    monkeypatch.setattr(run_mod, "load_test_images", lambda *a: pytest.fail("the test split was loaded"))
    monkeypatch.setattr(run_mod, "run_artifacts", lambda *a: pytest.fail("an artifact was scored"))
    return run_mod


@pytest.mark.parametrize("how", ["report dir is a file", "report dir under a file", "report dir read-only",
                                 "reference accuracy a string"])
def test_evaluate_refuses_bad_outputs_and_references_before_scoring(how, tmp_path, no_scoring, monkeypatch):
    m = write_manifest(tmp_path / "art")
    report = tmp_path / "reports"
    if how == "report dir is a file":
        report.write_text("x")
    elif how == "report dir under a file":
        (tmp_path / "file").write_text("x")
        report = tmp_path / "file" / "reports"
    elif how == "report dir read-only":  # as root no chmod stops a write: the disk says so instead
        def read_only(*a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(atomic.tempfile, "NamedTemporaryFile", read_only)
    else:
        m = _manifest(tmp_path, lambda d, f: d["reference"].update(accuracy="0.9"))
    before = snapshot(tmp_path)
    cfg = config.load(None, [("evaluate.manifest", str(m)), ("evaluate.report_dir", str(report))])
    with pytest.raises(PipelineError) as exc:
        no_scoring.evaluate_all(cfg, latency=False, progress=lambda *a: None)
    message = str(exc.value)
    words = "reference.accuracy" if how.startswith("reference") else "output folder is not writable"
    assert words in message and "\n" not in message, message
    assert message.startswith(str(m) if how.startswith("reference") else str(report)), message
    assert snapshot(tmp_path) == before


def _baseline_row(**changes):
    row = {"name": "onnx_fp32", "status": "ok", "accuracy": 0.9, "per_class_accuracy": [0.9] * 10, "bytes": 100,
           "agreement": 1.0, "latency_ms": {"p50": 0.5}}
    row.update(changes)
    return {k: v for k, v in row.items() if v != "missing"}


@pytest.mark.parametrize("row, words", [
    (_baseline_row(accuracy="0.9"), "onnx_fp32: accuracy"),
    (_baseline_row(accuracy=None), "onnx_fp32: accuracy"),
    (_baseline_row(accuracy="missing"), "onnx_fp32: accuracy"),
    (_baseline_row(accuracy=True), "onnx_fp32: accuracy"),
    (_baseline_row(accuracy=float("nan")), "onnx_fp32: accuracy"),
    (_baseline_row(per_class_accuracy=["x"] * 10), "onnx_fp32: per_class_accuracy, 10 fractions"),
    (_baseline_row(per_class_accuracy=None), "onnx_fp32: per_class_accuracy, 10 fractions"),
    (_baseline_row(per_class_accuracy=[]), "onnx_fp32: per_class_accuracy, 10 fractions"),
    (_baseline_row(latency_ms="x"), "onnx_fp32: latency_ms.p50"),
    (_baseline_row(agreement="x"), "onnx_fp32: agreement"),
    (_baseline_row(status="missing"), "name and status must be strings"),
])
def test_a_baseline_row_compare_cannot_read_is_refused_before_scoring(row, words, tmp_path):
    from evaluate import baseline
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"schema_version": 3, "passed": True, "gates_checked": True, "full_test_set": True,
                                "test_images": 10000, "artifacts": [row]}))
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(path))}: \"artifacts\"\[0\] is not an evaluated "
                                            rf"artifact row \({re.escape(words)}"):
        baseline.load(path)
    path.write_text(json.dumps({"schema_version": 3, "passed": True, "gates_checked": True, "full_test_set": True,
                                "artifacts": [_baseline_row()], "source_checkpoint": ["m.h5"]}))
    with pytest.raises(PipelineError, match=r'"source_checkpoint" must be an object'):
        baseline.load(path)
    path.write_text(json.dumps({"schema_version": 3, "passed": True, "gates_checked": True, "full_test_set": True,
                                "artifacts": [_baseline_row(), {"name": "keras", "status": "error"}]}))
    assert len(baseline.load(path)["artifacts"]) == 2  # a failed row needs no score: compare() gates it


# ---------------------------------------------------------------- 12. train --resume: the run folder first

def _run_folder(tmp_path, marker=None, files=None):
    """A run folder as `python -m train` leaves a stopped run: run.json, config.resolved.json, extra files."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = config.load(None, [("train.preset", "smoke"), ("model.preset", "resnet20v1")])
    config.write_resolved(cfg, run)
    (run / "run.json").write_text(json.dumps({"kind": "cifar-edge train run", "run_id": "ab" * 16,
                                              "data_sha256": "0" * 64, "epochs": 3, **(marker or {})}))
    for name, write in (files or {}).items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        write(run / name)
    return run


def _empty_hdf5(path):
    import h5py
    h5py.File(path, "w").close()


@pytest.mark.parametrize("marker, files, words", [
    ({}, {"backup/latest.weights.h5": _empty_hdf5}, "backup/latest.weights.h5: not a backup `python -m train` wrote"),
    ({}, {"backup/latest.weights.h5": lambda p: p.write_text("x")}, "latest.weights.h5: unreadable backup"),
    ({"data_sha256": 5}, {}, 'run.json: "data_sha256" must be a sha256 (64 hex digits) or null, got 5'),
    ({"run_id": 5}, {}, 'run.json: "run_id" must be a string, got 5'),
    ({}, {"best.json": lambda p: p.write_text("{damaged")}, "best.json: unreadable best.json"),
    ({}, {"best.json": lambda p: p.write_text('{"val_accuracy": "0.5"}')}, 'best.json: "val_accuracy" must be a number'),
    ({}, {"best.json": lambda p: p.write_text("{}")}, 'best.json: "val_accuracy" must be a number, got None'),
    ({}, {"history.csv": lambda p: p.write_bytes(b"\xff\xfe")}, "history.csv: unreadable training history"),
    ({}, {"run.json": lambda p: p.write_text(DEEP)}, "run.json: unreadable run marker (maximum recursion depth"),
])
def test_resume_refuses_a_damaged_run_folder_before_tensorflow_starts(marker, files, words, tmp_path, capsys,
                                                                    monkeypatch):
    from pipeline import console
    from train.__main__ import main
    monkeypatch.setattr(console, "start_tensorflow", lambda *a, **k: pytest.fail("TensorFlow started"))
    run = _run_folder(tmp_path, marker, files)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run)])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 1 and line.startswith(f"error: {run}/") and words in line, line
    assert snapshot(tmp_path) == before


def test_a_backup_of_another_model_is_refused_in_one_line_without_keras_warnings(tmp_path, recwarn):
    import h5py
    import keras

    from train.callbacks import AtomicBackupAndRestore
    from train.run_folder import EPOCH_ATTR
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    backup = tmp_path / "run" / "backup"
    good = AtomicBackupAndRestore(str(backup))
    good.set_model(model)
    good._current_epoch = 2
    good._save_model()  # what an epoch end writes
    restored = AtomicBackupAndRestore(str(backup))
    restored.set_model(model)
    restored._load_model()
    assert model._initial_epoch == 2
    with h5py.File(backup / "latest.weights.h5", "w") as f:  # another model's backup: same name, other layers
        f.attrs[EPOCH_ATTR] = 1
        f.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3)))
    recwarn.clear()
    with pytest.raises(PipelineError, match=r"latest.weights.h5: the backup does not fit this run's model and "
                                            r"optimizer \(.*\); remove the backup folder"):
        restored._load_model()
    assert [str(w.message) for w in recwarn] == []


def test_a_huge_seed_is_refused_before_anything_is_written(tmp_path, capsys):
    from train.__main__ import main
    with pytest.raises(SystemExit) as exc:
        main(["--seed", "99999999999999999999", "--out-dir", str(tmp_path / "runs"), "--preset", "smoke"])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 1 and "'train.seed' = 99999999999999999999: must be <= 4294967295" in line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 12. outputs: a file in the way, read-only, full

@pytest.mark.parametrize("command", ["train", "make-eval-data"])
def test_an_output_folder_that_is_a_file_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    from pipeline import console
    monkeypatch.setattr(console, "start_tensorflow", lambda *a, **k: pytest.fail("TensorFlow started"))
    (tmp_path / "afile").write_text("x")
    if command == "train":
        from train.__main__ import main
        argv = ["--out-dir", str(tmp_path / "afile"), "--preset", "smoke"]
    else:
        from pipeline.cli import main
        from pipeline import evalset
        monkeypatch.setattr(evalset, "build", lambda *a: pytest.fail("the source was read"))
        argv = ["make-eval-data", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "afile")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 1 and line == f"error: {tmp_path / 'afile'}: output folder is not writable " \
                                           f"({tmp_path / 'afile'} is not a folder); nothing was written", line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def _fail_with(code):
    def fail(*a, **k):
        raise OSError(code, os.strerror(code))
    return fail


def test_a_full_disk_mid_write_names_the_file_and_leaves_nothing(tmp_path):
    """Every atomic write: the temp file's OSError becomes one line naming the file the user asked for."""
    final = tmp_path / "reports" / "evaluation.md"
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(final))}: cannot write it \(No space left on device\); "
                                            r"nothing was written$"):
        with atomic.atomic_path(final) as tmp:
            tmp.write_text("half")
            _fail_with(errno.ENOSPC)()
    assert list((tmp_path / "reports").iterdir()) == []
    with pytest.raises(OSError, match="disk full"):  # any other OSError is still what it was
        with atomic.atomic_path(final):
            raise OSError("disk full")


def test_a_read_only_folder_is_refused_when_staging_in_it(tmp_path, monkeypatch):
    """The mobile bundle and every atomic write make a staging folder beside the output first."""
    monkeypatch.setattr(atomic.tempfile, "mkdtemp", _fail_with(errno.EROFS))
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(tmp_path / 'out'))}: cannot write there \(Read-only "
                                            r"file system\); nothing was written$"):
        with atomic.atomic_path(tmp_path / "out" / "mobile"):
            pytest.fail("wrote into a read-only folder")


def test_a_full_disk_anywhere_else_is_one_line_not_an_internal_error(tmp_path, capsys):
    @fail_cleanly
    def main():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "cache.npz"))

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'cache.npz'}: No space left on device\n"


def test_a_checkpoint_is_not_started_on_a_nearly_full_disk(tmp_path, monkeypatch):
    """HDF5 writing onto a full disk crashes the process at exit (SIGSEGV), however the error is caught."""
    from pipeline.model import build_preset
    from train.callbacks import AtomicCheckpoint
    net = build_preset("resnet20v1")
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: types.SimpleNamespace(free=100_000))
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(run))}: only 100,000 bytes free on its disk, last.h5 "
                                            r"needs about [\d,]+; free some space \(nothing was written\)$"):
        AtomicCheckpoint(net, run)._save("last.h5")
    assert list(run.iterdir()) == []


# ---------------------------------------------------------------- 13. quiet predict and resume

def _tflite(path):
    """A one-MatMul float TFLite classifier, dynamic batch."""
    import tensorflow as tf
    w = tf.constant(np.zeros((32 * 32 * 3, 10), np.float32))
    fn = tf.function(lambda x: tf.nn.softmax(tf.matmul(tf.reshape(x, [-1, 32 * 32 * 3]), w)),
                     input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert())


@pytest.fixture(scope="module")
def tf_artifacts(tmp_path_factory):
    """An artifacts folder with a keras, a saved_model and a tflite_fp32 artifact (an untrained resnet20v1 and a
    MatMul), and its manifest."""
    from export.savedmodel import write_saved_model
    from pipeline.model import build_preset
    folder = tmp_path_factory.mktemp("tf_artifacts")
    model = build_preset("resnet20v1")
    model.save(folder / "model_fp32.h5")
    write_saved_model(model, folder / "saved_model")
    _tflite(folder / "model_fp32.tflite")
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    spec = {"name": "x", "dtype": "float32", "quantization": None}
    entries = [{"name": name, "format": name.split("_")[0] if name != "saved_model" else name, "precision": "fp32",
                "kind": "float", "path": file, **manifest_mod.file_facts(folder / file),
                "input": {**spec, "shape": [None, 32, 32, 3]}, "output": {**spec, "shape": [None, 10]}}
               for name, file in (("keras", "model_fp32.h5"), ("saved_model", "saved_model"),
                                  ("tflite_fp32", "model_fp32.tflite"))]
    manifest_mod.write(folder / "manifest.json", {
        "source_checkpoint": {"file": "m.h5", "sha256": "0" * 64, "preset": "resnet20v1"},
        "reference": {"accuracy": None, "why": "a test model"}, "classes": list(CLASSES),
        "labels": {"path": "labels.txt", "sha256": atomic.sha256_file(folder / "labels.txt")}, "artifacts": entries})
    return folder / "manifest.json"


@pytest.mark.parametrize("artifact", ["keras", "saved_model", "tflite_fp32"])
def test_predict_prints_no_runtime_start_up_lines(artifact, tf_artifacts, tmp_path):
    cat = png(tmp_path / "cat.png")
    r = run_py("-m", "pipeline", "predict", "--manifest", tf_artifacts, "--artifact", artifact, cat, env=QUIET_ENV)
    assert r.returncode == 0 and r.stdout.startswith(f"{cat}: "), r.stdout + r.stderr
    assert r.stderr == "", r.stderr  # no oneDNN / CUDA / absl lines, no "Created TensorFlow Lite XNNPACK delegate"
    r = run_py("-m", "pipeline", "predict", "--manifest", tf_artifacts, "--artifact", artifact, "--verbose", cat,
               env=QUIET_ENV)
    assert r.returncode == 0 and r.stderr != "", "--verbose keeps the runtime's own lines"


def test_resume_of_a_folder_that_is_not_a_run_prints_only_its_error(tmp_path):
    r = run_py("-m", "train", "--resume", tmp_path, env=QUIET_ENV, timeout=60)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr == f"error: {tmp_path}: not a run folder of `python -m train` (no run.json)\n"


# ---------------------------------------------------------------- 16. the examples

COUNT = ROOT / "examples" / "count_test_accuracy.py"


def _tar_gz(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _png_bytes(size=(32, 32)):
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("how, words", [
    ("missing", "no such archive file (or not a regular file)"),
    ("not a tar", "not a readable tar archive (ReadError"),
    ("a folder", "no such archive file (or not a regular file)"),
    ("a link loop", "no such archive file (or not a regular file)"),
    ("one image", "holds 1 test images (0, 0, 0, 1, 0, 0, 0, 0, 0, 0 per class), not the whole test split "
                  "(10,000, 1,000 per class)"),
    ("zero-filled", "test/cat/0.png: over 1,048,576 bytes, not a 32x32 image"),
    ("a big image", "test/cat/0.png: a 64x64 image, expected 32x32"),
])
def test_count_test_accuracy_refuses_what_is_not_the_test_split(how, words, tmp_path):
    model = onnx_classifier(tmp_path / "m.onnx")
    archive = tmp_path / "test.tar.gz"
    if how == "not a tar":
        archive.write_text("hello")
    elif how == "a folder":
        archive.mkdir()
    elif how == "a link loop":
        _loop(tmp_path, "test.tar.gz")
    elif how == "one image":
        _tar_gz(archive, {"test/cat/0.png": _png_bytes()})
    elif how == "zero-filled":
        _tar_gz(archive, {"test/cat/0.png": bytes(2 * MB), **{f"test/dog/{i}.png": bytes(MB) for i in range(20)}})
    elif how == "a big image":
        _tar_gz(archive, {"test/cat/0.png": _png_bytes((64, 64))})
    before = snapshot(tmp_path)
    r = run_py(COUNT, model, archive, timeout=60)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    line = one_error_line(r.stderr)
    assert line.startswith(f"error: {archive}") and words in line, line
    assert snapshot(tmp_path) == before
    if how == "missing":
        r = run_py(COUNT, tmp_path / "missing.onnx", ROOT / "data" / "cifar10-jpeg-test.tar.gz", timeout=60)
        assert one_error_line(r.stderr) == f"error: {tmp_path / 'missing.onnx'}: no such model file (or not a " \
                                           "regular file)"


def test_count_test_accuracy_counts_the_whole_test_split(tmp_path):
    model = onnx_classifier(tmp_path / "m.onnx")  # every class 10%: argmax is class 0, right on 1,000 of 10,000
    r = run_py(COUNT, model, ROOT / "data" / "cifar10-jpeg-test.tar.gz", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "10000 test images" in r.stdout and "top-1 accuracy 0.1000" in r.stdout


def test_the_examples_refuse_link_loops_in_one_line(tmp_path):
    onnx_example = ROOT / "examples" / "onnxruntime_cpu.py"
    cat = png(tmp_path / "cat.png")
    for what in ("artifact", "labels"):
        def change(d, f, what=what):
            _loop(f, "loop")
            (d["artifacts"][0] if what == "artifact" else d["labels"]).update(path="loop")
        m = _manifest(tmp_path / what, change)
        r = run_py(onnx_example, "--manifest", m, cat, timeout=60)
        assert r.returncode == 1 and r.stdout == "", r.stdout
        line = one_error_line(r.stderr)
        assert line.startswith(f"error: {m}: ") and "loop cannot be resolved (Symlink loop" in line, line
    _loop(tmp_path, "dog.png")  # an image: that file fails alone, the others are classified
    m = write_manifest(tmp_path / "good")
    r = run_py(onnx_example, "--manifest", m, tmp_path / "dog.png", cat, timeout=60)
    assert r.returncode == 1 and f"{cat}: airplane" in r.stdout
    assert one_error_line(r.stderr).startswith(f"error: {tmp_path / 'dog.png'}: OSError: [Errno 40]")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _loop(bundle, "sub")  # a loop above the file: not a link itself, it cannot be resolved either
    (bundle / "model_spec.json").write_text(json.dumps({"labels": "sub/labels.txt", "models": {"int8": {}}}))
    r = run_py(ROOT / "examples" / "litert_mobile.py", "--bundle", bundle, cat, timeout=60)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    line = one_error_line(r.stderr)
    assert line.startswith(f"error: {bundle}: unusable mobile bundle (RuntimeError: Symlink loop"), line
