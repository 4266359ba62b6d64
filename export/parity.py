"""Run an artifact in the runtime it ships with, and compare it with the Keras model.

Runners come from pipeline/runtimes.py (the ones evaluate and predict use): raw RGB 0..255
images (N, 32, 32, 3) in, float32 class probabilities (N, 10) out; integer inputs/outputs are
(de)quantized with the artifact's own scale and zero point, as a mobile app would.
"""
import math

import numpy as np

from pipeline.errors import PipelineError
from pipeline.runtimes import RUNNERS


def run_keras(model, images, batch=128):
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch, verbose=0), np.float32)


def run(row, path, images, batch=128):
    """Probabilities of the artifact at `path` (a pipeline.artifacts row); a one_at_a_time kind one image
    at a time, as on a phone."""
    runner = RUNNERS[row.format](row.name, path, 2 if row.one_at_a_time else 0)
    batch = batch if runner.batchable and not row.one_at_a_time else 1
    return np.concatenate([runner.predict(images[i:i + batch]) for i in range(0, len(images), batch)])


def compare(reference, probs):
    """{images, top1_agreement, max_abs_diff} of an artifact's probabilities vs the Keras model's."""
    return {"images": int(len(reference)),
            "top1_agreement": float(np.mean(reference.argmax(1) == probs.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(reference - probs)))}


def check(name, record, minimum, key):
    """Refuse an artifact whose outputs (or the Keras model's) are not all finite, or whose top-1 agreement
    is below the gate. max_abs_diff is NaN or infinite exactly when some probability on either side is: a
    NaN in both at the same class agrees under argmax, so agreement alone would pass it."""
    if not math.isfinite(record["max_abs_diff"]):
        raise PipelineError(
            f"{name}: non-finite probabilities (NaN or infinity) on {record['images']} parity images "
            f"(max |diff| {record['max_abs_diff']} vs the Keras model); refused whatever the agreement "
            f"({record['top1_agreement']:.2%}); nothing was written")
    if record["top1_agreement"] < minimum:
        raise PipelineError(
            f"{name}: top-1 agreement with the Keras model {record['top1_agreement']:.2%} on "
            f"{record['images']} calibration images is below gates.{key} = {minimum:.2%} "
            f"(max |diff| {record['max_abs_diff']:.4f}); nothing was written")
