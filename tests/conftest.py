"""Shared fixtures: the resolved config, the committed evaluation data, a small trained checkpoint."""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The EARLY jobs below fork subprocesses from pool threads while tests write and read .h5 files in the main
# thread; a child forked while an .h5 file is open for writing holds HDF5's lock on it until it closes its
# inherited descriptors, so a read right after the write can fail with errno 11 (half the time, in a loop
# on a busy 2-core machine). The pipeline's stages fork from one thread only; the test session opts out.
os.environ["HDF5_USE_FILE_LOCKING"] = "FALSE"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cfg():
    from pipeline import config
    return config.load()


@pytest.fixture(scope="session")
def calibration(cfg):
    from pipeline import evalset
    return evalset.load_calibration(cfg)


@pytest.fixture(scope="session")
def test_split(cfg):
    from pipeline import evalset
    return evalset.load_test(cfg)


_SMALL_TEST, _SMALL_TEST_LOCK = {}, __import__("threading").Lock()


def small_test_split(tmp_path_factory, per_class=40):
    """A slice of the committed test split (its first `per_class` images of every class) as a tar.gz of
    PNGs in the committed split's layout, made once per session (thread-safe: EARLY jobs ask for it)."""
    with _SMALL_TEST_LOCK:
        if per_class not in _SMALL_TEST:
            import io

            from PIL import Image

            from pipeline import config, evalset
            from pipeline.model import CLASSES
            test = evalset.load_test(config.load())
            files = {}
            for c, cls in enumerate(CLASSES):
                for i in np.flatnonzero(test.labels == c)[:per_class]:
                    buf = io.BytesIO()
                    Image.fromarray(test.images[i]).save(buf, format="PNG")
                    files[f"test/{cls}/{i:05d}.png"] = buf.getvalue()
            path = tmp_path_factory.mktemp(f"test{10 * per_class}") / f"test{10 * per_class}.tar.gz"
            evalset._write_tar_gz(path, files)
            _SMALL_TEST[per_class] = path
        return _SMALL_TEST[per_class]


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory, calibration):
    """A `resnet20v1` briefly fitted on the calibration images, so its outputs are not uniform.

    Fitting takes ~15 s on 2 cores; every test that needs a real checkpoint shares it.
    """
    import keras
    from pipeline.model import build_preset
    keras.utils.set_random_seed(0)
    model = build_preset("resnet20v1")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x = calibration.images.astype(np.float32)
    model.fit(x, calibration.labels, batch_size=64, epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("ckpt") / "small.h5"
    model.save(path)
    return path


# ---------------------------------------------------------------- shared exports (each built once per session)
#
# An export costs tens of seconds on 2 cores, so the tests that only read one share it: a test that
# changes files copies the folder first (`copy_export`). Tests of export's own behaviour (bad inputs,
# crashes, kills, determinism) still run their own exports.

# Fewer calibration and parity images for speed. The small checkpoint is fitted for seconds, so
# many of its predictions are near-ties that fp16 and int8 flip: its gates are lowered here
# (real models: 99.9% float, 98% int8); the fp32 artifacts are still held to 100% in tests/test_export.py.
EXPORT_GATES = {"export.calibration_images": 300, "export.parity_images": 256, "gates.min_parity_float": 0.99,
                "gates.min_parity_int8": 0.95, "export.layer_error_images": 0}
EXPORT_FAST = [a for k, v in EXPORT_GATES.items() for a in ("--set", f"{k}={v}")]
LAYER_ERROR_IMAGES = 32  # the shared export measures per-layer error on this many images (its test reads them)


def export_cli(*args, env=None):
    """`python -m export ARGS` in a subprocess, as users run it."""
    import subprocess
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "export", *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- subprocess work started early
#
# CLI exports and training runs are subprocesses that depend on nothing a test does. They start on a
# 2-thread pool when the session's first test starts (only those some selected test needs), and run
# while the in-process tests do; the fixture that reads one waits for its result. A job a test asks
# for that was not started (not foreseen from the selection) runs then, in the asking thread.

class EarlyJobs:
    def __init__(self):
        self.jobs, self.futures, self.pool, self.args = {}, {}, None, {}

    def job(self, name, needed_by):
        """Decorator: register `fn(tmp_path_factory, **args)` as job `name`, started early when a selected
        test uses the fixture `needed_by`."""
        def register(fn):
            self.jobs[name] = (fn, needed_by)
            return fn
        return register

    def start(self, fixturenames, tmp_path_factory, **args):
        from concurrent.futures import ThreadPoolExecutor
        self.pool, self.args = ThreadPoolExecutor(max_workers=2), {"tmp_path_factory": tmp_path_factory, **args}
        for name, (fn, needed_by) in self.jobs.items():
            if needed_by in fixturenames:
                self.futures[name] = self.pool.submit(fn, **self.args)

    def result(self, name, **args):
        if name not in self.futures:
            from concurrent.futures import Future
            future = self.futures[name] = Future()
            try:
                future.set_result(self.jobs[name][0](**{**self.args, **args}))
            except BaseException as exc:  # noqa: BLE001 - re-raised by result()
                future.set_exception(exc)
        return self.futures[name].result()

    def stop(self):
        if self.pool:
            self.pool.shutdown(wait=True, cancel_futures=True)


EARLY = EarlyJobs()


@pytest.fixture(scope="session", autouse=True)
def _early_jobs(request, tmp_path_factory):
    """Starts the EARLY jobs the selected tests need (the small checkpoint first, if an export needs it)."""
    needed = set().union(*(item.fixturenames for item in request.session.items))
    args = {"small_checkpoint": request.getfixturevalue("small_checkpoint")} if "small_checkpoint" in needed else {}
    EARLY.start(needed, tmp_path_factory, **args)
    yield
    EARLY.stop()


@EARLY.job("shared_export", needed_by="shared_export")
def _shared_export(tmp_path_factory, small_checkpoint, **_):
    out = tmp_path_factory.mktemp("shared_export") / "artifacts"
    proc = export_cli("--checkpoint", small_checkpoint, "--out-dir", out, *EXPORT_FAST,
                      "--set", f"export.layer_error_images={LAYER_ERROR_IMAGES}")
    return out, proc


@pytest.fixture(scope="session")
def shared_export(small_checkpoint):
    """(folder, manifest): one CLI export of the small checkpoint to every default kind, with the fast
    settings above and per-layer error on LAYER_ERROR_IMAGES images. Read-only: copy it to change it."""
    out, proc = EARLY.result("shared_export", small_checkpoint=small_checkpoint)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from pipeline import manifest
    return out, manifest.read(out / "manifest.json")


def copy_export(folder, dest):
    """A private copy of a shared export folder (the manifest names files relative to it)."""
    import shutil
    shutil.copytree(folder, dest, symlinks=True)
    return dest


def export_subset(folder, dest, names, **manifest_changes):
    """A private copy of an export folder holding only the artifacts `names` (in the manifest's order;
    the others' files removed), its manifest rewritten with `manifest_changes` (e.g. reference=...):
    what an export of just those kinds writes, without exporting again."""
    import shutil

    from pipeline import manifest
    copy_export(folder, dest)
    data = manifest.read(dest / manifest.FILE_NAME)
    for e in data["artifacts"]:
        if e["name"] not in names:
            path = dest / e["path"]
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    data["artifacts"] = [e for e in data["artifacts"] if e["name"] in names]
    assert sorted(e["name"] for e in data["artifacts"]) == sorted(names), (names, data["artifacts"])
    data.pop("schema_version", None)  # manifest.write adds it
    manifest.write(dest / manifest.FILE_NAME, {**data, **manifest_changes})
    return dest


TINY_PRESET = dict(blocks=(1, 1, 1), widths=(8, 8, 16))  # a 3-block ResNet: quick to quantize, trace, convert
QAT_SETTINGS = {"export.qat_data": "calibration", "export.qat_images": 256, "export.qat_minutes": 0.2,
                "export.qat_lr": 1e-3, "export.calibration_images": 300, "export.parity_images": 256,
                "gates.min_parity_qat": 0.0, "export.layer_error_images": 0}


@pytest.fixture(scope="session")
def qat_export(tmp_path_factory, calibration):
    """The one QAT export of the session: a tiny ResNet (under the throwaway preset name "tiny", fitted
    for one epoch on 512 calibration images) to keras + tflite_qat_int8 with QAT_SETTINGS.

    Returns a namespace: out (folder), manifest (what export_all returned), cfg, checkpoint, and
    augment_calls: (training, pad, cutout) of every Augment.call while it ran (a spy on the recipe's
    augmentation). The "tiny" preset exists only while the checkpoint is made and exported."""
    from types import SimpleNamespace

    import keras
    from export.run import export_all
    from pipeline import config
    from pipeline import model as model_mod
    from pipeline.augment import Augment
    folder = tmp_path_factory.mktemp("qat")
    seen = []
    original = Augment.call

    def spy(self, x, training=None):
        seen.append((bool(training), self.pad, self.cutout))
        return original(self, x, training=training)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(model_mod.PRESETS, "tiny", TINY_PRESET)
        keras.utils.set_random_seed(0)
        net = model_mod.build_preset("tiny")
        net.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        net.fit(calibration.images[:512].astype(np.float32), calibration.labels[:512], batch_size=128, epochs=1,
                verbose=0)
        checkpoint = folder / "tiny.h5"
        net.save(checkpoint)
        mp.setattr(Augment, "call", spy)
        out = folder / "out"
        cfg = config.load(None, [("export.checkpoint", str(checkpoint)), ("export.out_dir", str(out)),
                                 ("export.formats", ["keras", "tflite_qat_int8"]), *QAT_SETTINGS.items()])
        manifest = export_all(cfg, progress=False)
    return SimpleNamespace(out=out, manifest=manifest, cfg=cfg, checkpoint=checkpoint, augment_calls=seen)
