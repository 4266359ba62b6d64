"""TFLite fp32, fp16, dynamic-range int8 and full-integer int8 (uint8 in/out), with labels inside.

Converted from the SavedModel (TFLiteConverter.from_saved_model is the path that works
for Keras 3 models). Labels travel inside every .tflite file as an associated file the
way TFLite Model Metadata stores them: a zip archive appended to the flatbuffer. The
interpreter ignores the trailing bytes; `read_labels(path)` (or any unzip tool) reads them.
The files a phone gets (the table's `metadata` column) carry full TFLite Model Metadata instead, written
by tflite-support's maintained writer in the mobile environment (pipeline/mobile_env.py), which MediaPipe
Tasks and Android Studio's model import read: labels embedded the same way, plus name, version, license,
the input's RGB colour space and normalisation (mean 0, std 1: the model normalises itself).
"""
import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.model import labels_text

LABELS_NAME = "labels.txt"


def representative(images):
    """The calibration images one by one, raw 0..255 float as the model takes them."""
    def gen():
        for img in images:
            yield [img[None].astype(np.float32)]
    return gen


def configure(converter, precision, calibration_images=None):
    """Set the converter for one precision; full int8 needs the calibration images."""
    import tensorflow as tf
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision in ("int8", "qat_int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative(calibration_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8   # raw pixels are already 0..255 integers
        converter.inference_output_type = tf.uint8
    elif precision != "fp32":
        raise PipelineError(f"unknown TFLite precision {precision!r}")
    return converter


def convert_saved_model(saved_model_dir, precision, calibration_images=None) -> bytes:
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    return configure(converter, precision, calibration_images).convert()


def with_labels(flatbuffer: bytes, labels_text: str) -> bytes:
    """The model with labels.txt appended as a zip (TFLite Model Metadata's associated-file layout)."""
    buf = io.BytesIO()
    buf.write(flatbuffer)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_STORED) as zf:
        info = zipfile.ZipInfo(LABELS_NAME, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: same bytes every run
        zf.writestr(info, labels_text)
    return buf.getvalue()


def read_labels(path):
    """The class names embedded in a .tflite written here."""
    with zipfile.ZipFile(path) as zf:
        return zf.read(LABELS_NAME).decode().splitlines()


def write(path, flatbuffer: bytes, labels_text: str):
    path.write_bytes(with_labels(flatbuffer, labels_text))


def build(exporter, row, path):
    """A post-training TFLite kind, converted from the staged SavedModel (full int8 through
    export.constrained_int8.build_tflite_int8, which comes here when the constraint is off)."""
    flat = convert_saved_model(exporter.path_of(row.needs), row.precision, exporter.calibration.images)
    write(path, flat, labels_text())


def metadata_info(exporter, row):
    """What the metadata says about this file: who made it from what, and how to feed it."""
    from importlib.metadata import PackageNotFoundError, metadata
    try:
        project = metadata("cifar-edge")
    except PackageNotFoundError:
        raise PipelineError("cifar-edge is not installed in this environment (make venv): the metadata's version "
                            "and license come from its package metadata") from None
    integer = row.precision == "int8"
    return {
        "name": f"cifar-edge {exporter.preset} {row.precision}",
        "version": f"{project['Version']}+{exporter.source.sha256[:12]}",  # + the checkpoint's sha256
        "description": f"CIFAR-10 classifier (ResNet v1, model preset {exporter.preset!r}), {row.precision}, "
                       f"batch {row.batch or 'any'}. Input: one 32x32 RGB image, raw pixel values 0-255 "
                       "(normalisation is inside the model: mean 0, std 1 here on purpose). Output: the 10 "
                       "class probabilities in labels.txt order.",
        "author": "cifar-edge", "license": project.get("License-Expression") or project["License"],
        "input_description": "RGB pixels 0-255, NHWC" + (", uint8 (scale 1, zero point 0)" if integer else ", float32"),
        "output_description": "softmax probabilities of the 10 classes"
                              + (", uint8 (dequantize with the tensor's scale and zero point)" if integer else ""),
    }


def write_with_metadata(exporter, row, path, flatbuffer):
    """`path` = the flatbuffer with TFLite Model Metadata and labels.txt associated (TENSOR_AXIS_LABELS),
    written by tflite-support in the mobile environment. Returns the manifest's record of it."""
    from pipeline import mobile_env
    with tempfile.TemporaryDirectory(prefix="metadata_", dir=path.parent) as tmp:
        bare, labels, info, out = (Path(tmp) / n for n in ("model.tflite", LABELS_NAME, "info.json", "out.tflite"))
        bare.write_bytes(flatbuffer)
        labels.write_text(labels_text())
        info.write_text(json.dumps(metadata_info(exporter, row)))
        shown = mobile_env.run_script("write_metadata", [bare, labels, info, out])
        written = out.read_bytes()
    path.write_bytes(written)
    try:
        packed = read_labels(path)
    except (zipfile.BadZipFile, KeyError):
        packed = None
    if packed != labels_text().splitlines():
        raise PipelineError(f"{row.name}: the metadata writer did not pack the model's labels.txt")
    meta = shown["metadata"]
    return {"metadata": {"name": meta.get("name"), "version": meta.get("version"), "license": meta.get("license"),
                         "associated_files": shown["associated_files"], "writer": "tflite-support"}}


def build_static(exporter, row, path):
    """A phone's TFLite model: the Keras model traced at a fixed batch of row.batch, so every tensor is
    static and Flatten is one RESHAPE to a constant shape (the dynamic-batch files build it from SHAPE /
    STRIDED_SLICE / PACK at run time, which the LiteRT GPU delegate refuses)."""
    import tempfile

    from export.savedmodel import static_image_spec, write_saved_model
    with tempfile.TemporaryDirectory(prefix="static_saved_model_", dir=path.parent) as tmp:
        saved = Path(tmp) / "saved_model"  # from_saved_model: the converter path that works for Keras 3 models
        write_saved_model(exporter.model, saved, static_image_spec(row.batch))
        flat = convert_saved_model(saved, row.precision, exporter.calibration.images)
    if not row.metadata:
        write(path, flat, labels_text())
        return {"batch": row.batch}
    return {"batch": row.batch, **write_with_metadata(exporter, row, path, flat)}
