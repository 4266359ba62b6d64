"""The versioned evaluation data committed in `data/`: the test split, the calibration subset and the
parity subset (training images that are not calibration images: pipeline/sampling.py).

All three are the original JPEG bytes of the shared copy in small reproducible tar.gz files,
so export and evaluation need no download and the CI gate is hermetic. Calibration
images come from the training split only (never test images).
"""
import gzip
import io
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline import config as config_mod
from pipeline.data import CLASSES, iter_members, load_cifar10
from pipeline.errors import PipelineError

TEST_IMAGES = 10_000     # the committed test split; train's time budget plans its final scoring for it
CALIBRATION_PER_CLASS = 100
CALIBRATION_SEED = 0
PARITY_PER_CLASS = 100
PARITY_SEED = 1          # drawn after the calibration images, from the rest of each class


def _write_tar_gz(path, files):
    """A byte-identical archive for the same files: sorted, zero mtimes and owners."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    from pipeline import atomic
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(buf.getvalue())


def build(source, out_dir):
    """Write the test split and the calibration subset of an image-folder `source` to `out_dir`."""
    source = Path(source)
    test, train = {}, {}
    for p, data in iter_members(source):
        parts = p.parts
        for i in range(len(parts) - 2):
            if parts[i] in ("train", "test") and parts[i + 1] in CLASSES:
                rel = str(PurePosixPath(*parts[i:]))
                (test if parts[i] == "test" else train)[rel] = data
                break
    if not test or not train:
        raise PipelineError(f"{source}: needs an image-folder source with train/ and test/")
    rng, rng_parity = np.random.default_rng(CALIBRATION_SEED), np.random.default_rng(PARITY_SEED)
    calib, parity = {}, {}
    for cls in CLASSES:
        names = sorted(n for n in train if n.split("/")[1] == cls)
        for i in sorted(rng.choice(len(names), CALIBRATION_PER_CLASS, replace=False)):
            calib[names[i]] = train[names[i]]
        rest = [n for n in names if n not in calib]
        for i in sorted(rng_parity.choice(len(rest), PARITY_PER_CLASS, replace=False)):
            parity[rest[i]] = train[rest[i]]
    out_dir = Path(out_dir)
    _write_tar_gz(out_dir / "cifar10-jpeg-test.tar.gz", test)
    _write_tar_gz(out_dir / "cifar10-jpeg-calibration.tar.gz", calib)
    _write_tar_gz(out_dir / "cifar10-jpeg-parity.tar.gz", parity)
    return len(test), len(calib), len(parity)


def load_test(cfg):
    """The committed 10,000-image test split as a data.Split."""
    return load_cifar10(config_mod.project_path(cfg.data.test), splits=("test",), progress=False)["test"]


def load_calibration(cfg):
    """The committed 1,000-image calibration subset of the training split."""
    return load_cifar10(config_mod.project_path(cfg.data.calibration), splits=("train",), progress=False)["train"]


def load_parity(cfg):
    """The committed 1,000 training images (none a calibration image) export checks artifacts on."""
    return load_cifar10(config_mod.project_path(cfg.data.parity), splits=("train",), progress=False)["train"]
