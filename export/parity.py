"""Run an artifact in the runtime it ships with, and compare it with the Keras model.

Every runner takes raw RGB 0..255 images (N, 32, 32, 3) and returns float32 class
probabilities (N, 10); integer inputs/outputs are (de)quantized with the artifact's
own scale and zero point, as a mobile app would.
"""
import numpy as np

from pipeline.errors import PipelineError


def parity_images(images, n, seed=0):
    """A fixed, class-mixed batch of `n` images (the calibration set is stored class by class)."""
    if len(images) < n:
        raise PipelineError(f"parity needs {n} calibration images, only {len(images)} available")
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return images[idx]


def run_keras(model_or_path, images, batch=128):
    import keras
    model = model_or_path
    if not isinstance(model, keras.Model):
        model = keras.models.load_model(model_or_path, compile=False, safe_mode=True)
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch, verbose=0), np.float32)


def _runner(fmt, path, threads=0):
    from pipeline.runtimes import RUNNERS as RUNTIME_RUNNERS
    return RUNTIME_RUNNERS[fmt](fmt, path, threads)


def _batched(runner, images, batch):
    return np.concatenate([runner.predict(images[i:i + batch]) for i in range(0, len(images), batch)])


def run_saved_model(path, images, batch=128):
    return _batched(_runner("saved_model", path), images, batch)


def run_onnx(path, images, batch=128):
    return _batched(_runner("onnx", path), images, batch)


def run_tflite(path, images):
    """One image at a time, as on a phone (the batch dim is resized to 1 by default)."""
    return _batched(_runner("tflite", path, threads=2), images, 1)


def tflite_interpreter(path):
    from ai_edge_litert.interpreter import Interpreter
    return Interpreter(model_path=str(path), num_threads=2)


def _quant(detail):
    """{scale, zero_point} of an integer tensor, None for a float one."""
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(detail["dtype"], np.integer) or scale == 0:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


RUNNERS = {"keras": run_keras, "saved_model": run_saved_model, "onnx": run_onnx, "tflite": run_tflite}


def compare(reference, probs):
    """{images, top1_agreement, max_abs_diff} of an artifact's probabilities vs the Keras model's."""
    return {"images": int(len(reference)),
            "top1_agreement": float(np.mean(reference.argmax(1) == probs.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(reference - probs)))}


def check(name, record, minimum):
    """Refuse an artifact whose top-1 agreement is below the gate."""
    if record["top1_agreement"] < minimum:
        raise PipelineError(
            f"{name}: top-1 agreement with the Keras model {record['top1_agreement']:.2%} on "
            f"{record['images']} calibration images is below the required {minimum:.2%} "
            f"(max |diff| {record['max_abs_diff']:.4f}); nothing was written")
