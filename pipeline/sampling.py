"""Every image set the pipeline draws, declared once: its pool, its size key, and what it must not overlap.

| set          | pool (config key)                    | size (config key)            | disjoint from          |
| ------------ | ------------------------------------ | ---------------------------- | ---------------------- |
| calibration  | data.calibration (training images)   | export.calibration_images    | holdout, parity        |
| holdout      | data.calibration                     | export.int8_holdout_images   | calibration, parity    |
|              | (only when export.int8_max_drop_pp > 0: the accuracy constraint's check)           |
| parity       | data.parity (other training images)  | export.parity_images         | calibration, holdout   |
| layer_error  | the calibration set                  | export.layer_error_images    | (a diagnostic)         |
| rank         | the calibration set                  | RANK_IMAGES                  | holdout                |
| qat          | data.source training split, or the   | export.qat_images            | parity                 |
|              | calibration set (export.qat_data)    |                              |                        |
| eval_limit   | data.test                            | evaluate.limit               | (the test split only)  |

Parity checks an int8 artifact on images its calibration never saw, so a model that fits its
calibration images but not others fails export. Every draw is `spread`: equal shares of the
classes (+-1), each class's images in a seeded random order, indices returned sorted. The
manifest records each set (pool file, count, sha256 of its images' pixels) via `record`.
"""
import hashlib

import numpy as np

from pipeline.errors import PipelineError

RANK_IMAGES = 200  # accuracy-constrained int8: calibration images its sensitivity ranking is measured on


def spread(labels, n, seed=0, exclude=()):
    """Sorted indices of `n` items of `labels` spread over the classes (round robin over a seeded random
    order within each class), never one of `exclude`. n = 0 or n >= what is left: all that is left."""
    labels = np.asarray(labels)
    left = np.setdiff1d(np.arange(len(labels)), np.asarray(exclude, dtype=np.int64))
    if not n or n >= len(left):
        return left
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels[left]):
        idx = left[labels[left] == c]
        rank[idx[rng.permutation(len(idx))]] = np.arange(len(idx))
    order = left[np.lexsort((labels[left], rank[left]))]  # rank 0 of every class, then rank 1, ...
    return np.sort(order[:n])


def image_digests(images):
    """One sha256 per image of its uint8 pixels: how sets drawn from different files are compared."""
    return [hashlib.sha256(np.ascontiguousarray(img, dtype=np.uint8).tobytes()).hexdigest() for img in images]


def set_sha256(images):
    """One sha256 of a set of images, whatever their order."""
    return hashlib.sha256("".join(sorted(image_digests(images))).encode()).hexdigest()


def check_disjoint(name_a, images_a, name_b, images_b):
    shared = set(image_digests(images_a)) & set(image_digests(images_b))
    if shared:
        raise PipelineError(f"image sets {name_a!r} and {name_b!r} share {len(shared)} image(s); they must be "
                            "disjoint (a check must not see what it checks): rebuild data/ with "
                            "`python -m pipeline make-eval-data`")


def record(pool, images, indices=None):
    """What the manifest says of one set."""
    out = {"pool": pool, "images": int(len(images)), "sha256": set_sha256(images)}
    if indices is not None:
        out["indices_sha256"] = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()
    return out


class ExportSets:
    """The sets export draws (calibration, holdout, parity, layer_error, rank), drawn once from cfg."""

    def __init__(self, cfg, calibration_pool, parity_pool):
        from pipeline.data import Split
        exp = cfg.export
        labels = np.asarray(calibration_pool.labels)
        hold = spread(labels, exp.int8_holdout_images, seed=1) if exp.int8_max_drop_pp > 0 else np.array([], int)
        if exp.int8_max_drop_pp > 0 and len(hold) >= len(labels):
            raise PipelineError(f"export.int8_holdout_images = {exp.int8_holdout_images} leaves none of the "
                                f"{len(labels)} calibration images to calibrate on")
        calib = spread(labels, exp.calibration_images, seed=2, exclude=hold)
        if len(parity_pool) < exp.parity_images:
            raise PipelineError(f"export.parity_images = {exp.parity_images}: the parity set "
                                f"({cfg.data.parity}) holds only {len(parity_pool)} images")
        par = spread(parity_pool.labels, exp.parity_images, seed=3)
        self.calibration = Split(calibration_pool.images[calib], labels[calib])
        self.holdout = Split(calibration_pool.images[hold], labels[hold])
        self.parity = Split(parity_pool.images[par], np.asarray(parity_pool.labels)[par])
        check_disjoint("parity", self.parity.images, "calibration", calibration_pool.images)
        self.layer_error = self.calibration.images[spread(self.calibration.labels, exp.layer_error_images, seed=4)]
        self.rank = self.calibration.images[spread(self.calibration.labels, RANK_IMAGES, seed=5)]
        self._records = {
            "calibration": record(cfg.data.calibration, self.calibration.images, calib),
            "holdout": record(cfg.data.calibration, self.holdout.images, hold),
            "parity": record(cfg.data.parity, self.parity.images, par),
            "layer_error": {"subset_of": "calibration", "images": int(len(self.layer_error))},
        }

    def records(self):
        return {**self._records, "disjoint": [["parity", "calibration"], ["parity", "holdout"],
                                              ["holdout", "calibration"]]}


def qat_images(cfg, sets):
    """(images, labels) QAT fine-tunes on: export.qat_images of the training split (never a parity image),
    or of the calibration set; and the manifest record."""
    n = cfg.export.qat_images
    if cfg.export.qat_data == "calibration":
        pool, name = sets.calibration, cfg.data.calibration
        keep = np.arange(len(pool))
    else:
        from pipeline.data import load_cifar10, resolve_source
        pool, name = load_cifar10(resolve_source(cfg.data.source), splits=("train",))["train"], cfg.data.source
        parity = set(image_digests(sets.parity.images))
        keep = np.array([i for i, d in enumerate(image_digests(pool.images)) if d not in parity], dtype=np.int64)
    idx = keep[spread(np.asarray(pool.labels)[keep], n, seed=6)]
    images, labels = pool.images[idx], np.asarray(pool.labels)[idx]
    return images, labels, {**record(name, images), "excludes": "parity" if cfg.export.qat_data == "train" else ""}


def eval_subset(labels, limit):
    """evaluate.limit: `limit` test images spread over the classes (0 or >= all: every image)."""
    return spread(labels, limit, seed=7)
