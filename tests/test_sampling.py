"""pipeline.sampling: every image set spread over the classes, seeded, and disjoint where a check must not
see what it checks; export's parity gate runs on images the calibration never used."""
import numpy as np
import pytest

from pipeline import config, evalset, sampling
from pipeline.data import Split
from pipeline.errors import PipelineError


def test_spread_is_balanced_over_classes_seeded_and_never_takes_an_excluded_index():
    labels = np.repeat(np.arange(10), 40)  # stored class by class, as the committed sets are
    idx = sampling.spread(labels, 95, seed=3)
    assert len(idx) == 95 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.max() - counts.min() <= 1
    first_class = idx[labels[idx] == 0]
    assert first_class.min() < 15 and first_class.max() > 25  # spread over the class, not its first images
    np.testing.assert_array_equal(idx, sampling.spread(labels, 95, seed=3))
    assert not np.array_equal(idx, sampling.spread(labels, 95, seed=4))
    rest = sampling.spread(labels, 0, exclude=idx)
    assert len(rest) == 305 and not set(rest) & set(idx)
    assert len(sampling.spread(labels, 1000)) == 400  # asking for more than there is: all of it


def test_export_sets_are_disjoint_and_recorded():
    cfg = config.load(None, [("export.int8_max_drop_pp", 1.0), ("export.int8_holdout_images", 300)])
    sets = sampling.ExportSets(cfg, evalset.load_calibration(cfg), evalset.load_parity(cfg))
    assert len(sets.calibration) == 700 and len(sets.holdout) == 300 and len(sets.parity) == 1000
    cal, hold, par = (set(sampling.image_digests(s.images)) for s in (sets.calibration, sets.holdout, sets.parity))
    assert not cal & hold and not cal & par and not hold & par
    rec = sets.records()
    assert rec["parity"]["pool"] == cfg.data.parity and rec["calibration"]["pool"] == cfg.data.calibration
    assert rec["parity"]["sha256"] == sampling.set_sha256(sets.parity.images)
    assert ["parity", "calibration"] in rec["disjoint"]


def test_a_parity_set_that_shares_a_calibration_image_is_refused():
    cfg = config.load(None, [("export.parity_images", 20)])
    calibration = evalset.load_calibration(cfg)
    leaked = Split(calibration.images[:20], calibration.labels[:20])
    with pytest.raises(PipelineError, match="'parity' and 'calibration' share 20 image"):
        sampling.ExportSets(cfg, calibration, leaked)


def test_int8_parity_catches_a_model_that_fits_its_calibration_images_but_not_others():
    """An "int8 model" that reproduces the float model on every calibration image and is wrong
    elsewhere: parity on the calibration images would pass it, export's parity set fails it."""
    from export import parity
    cfg = config.load(None)
    sets = sampling.ExportSets(cfg, evalset.load_calibration(cfg), evalset.load_parity(cfg))
    rng = np.random.default_rng(0)

    def float_model(images):
        return np.eye(10, dtype=np.float32)[np.asarray(images, np.int64).sum(axis=(1, 2, 3)) % 10]

    seen = set(sampling.image_digests(sets.calibration.images))

    def overfit_int8(images):
        probs = float_model(images)
        for i, d in enumerate(sampling.image_digests(images)):
            if d not in seen:
                probs[i] = np.eye(10, dtype=np.float32)[rng.integers(10)]
        return probs

    on_calibration = parity.compare(float_model(sets.calibration.images), overfit_int8(sets.calibration.images))
    parity.check("tflite_int8", on_calibration, cfg.gates.min_parity_int8, "min_parity_int8")  # would pass
    on_parity = parity.compare(float_model(sets.parity.images), overfit_int8(sets.parity.images))
    with pytest.raises(PipelineError, match="tflite_int8: top-1 agreement"):
        parity.check("tflite_int8", on_parity, cfg.gates.min_parity_int8, "min_parity_int8")


def test_eval_subset_takes_every_class():
    labels = np.repeat(np.arange(10), 1000)
    idx = sampling.eval_subset(labels, 50)
    assert np.bincount(labels[idx], minlength=10).tolist() == [5] * 10
    assert len(sampling.eval_subset(labels, 0)) == 10_000
