"""Run an artifact in the runtime it ships with, and compare it with the Keras model.

Runners come from pipeline/runtimes.py (the ones evaluate and predict use): raw RGB 0..255
images (N, 32, 32, 3) in, float32 class probabilities (N, 10) out; integer inputs/outputs are
(de)quantized with the artifact's own scale and zero point, as a mobile app would.
"""
import numpy as np

from pipeline.errors import PipelineError
from pipeline.runtimes import RUNNERS


def parity_images(images, n, seed=0):
    """A fixed, class-mixed batch of `n` images (the calibration set is stored class by class)."""
    if len(images) < n:
        raise PipelineError(f"parity needs {n} calibration images, only {len(images)} available")
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return images[idx]


def run_keras(model, images, batch=128):
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch, verbose=0), np.float32)


def run(row, path, images, batch=128):
    """Probabilities of the artifact at `path` (a pipeline.artifacts row); TFLite one image at a time,
    as on a phone."""
    runner = RUNNERS[row.format](row.name, path, 2 if row.format == "tflite" else 0)
    batch = batch if runner.batchable and row.format != "tflite" else 1
    return np.concatenate([runner.predict(images[i:i + batch]) for i in range(0, len(images), batch)])


def compare(reference, probs):
    """{images, top1_agreement, max_abs_diff} of an artifact's probabilities vs the Keras model's."""
    return {"images": int(len(reference)),
            "top1_agreement": float(np.mean(reference.argmax(1) == probs.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(reference - probs)))}


def check(name, record, minimum, key):
    """Refuse an artifact whose top-1 agreement is below the gate."""
    if record["top1_agreement"] < minimum:
        raise PipelineError(
            f"{name}: top-1 agreement with the Keras model {record['top1_agreement']:.2%} on "
            f"{record['images']} calibration images is below gates.{key} = {minimum:.2%} "
            f"(max |diff| {record['max_abs_diff']:.4f}); nothing was written")
