"""Shared fixtures: the resolved config, the committed evaluation data, a small trained checkpoint."""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
