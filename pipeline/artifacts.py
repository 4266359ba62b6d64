"""The one table of artifact kinds: export, manifest checks, gates, the mobile bundle, predict and
the benchmarks all read it. Adding a kind = one row here and its builder in export/.

Columns:
  format         keras | saved_model | onnx | tflite (the runtime family that runs it)
  precision      what the weights/activations compute in
  kind           float | int8: which accuracy gates apply ([gates] max_drop_pp_<kind>, min_agreement_<kind>)
  file           file (or folder) name beside manifest.json
  builder        "module:function" in export/, called as builder(exporter, row, out_path) -> settings dict or None
  needs          the artifact it is converted from (built in staging even when not requested)
  parity         the [gates] key of the top-1 agreement export requires on the parity images
  deterministic  re-export of the same checkpoint writes the same bytes (benchmarks/export_time.py,
                 tests/test_export.py). SavedModel: per fresh process. ONNX: tf2onnx sometimes leaves
                 Flatten's reshape target as a subgraph (same outputs, other bytes). QAT trains for a
                 wall-clock budget.
  mobile         shipped in the mobile bundle (export.mobile) under this key
  layer_error    export measures its per-layer quantization error (export.layer_error) into the manifest
This module imports nothing heavy: the config checks formats against it.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    format: str
    precision: str
    kind: str
    file: str
    builder: str
    needs: str = ""
    parity: str = "min_parity_float"
    deterministic: bool = True
    mobile: str = ""
    layer_error: bool = False


_ROWS = (
    Kind("keras", "keras", "fp32", "float", "model_fp32.h5", "export.savedmodel:build_keras"),
    Kind("saved_model", "saved_model", "fp32", "float", "saved_model", "export.savedmodel:build_saved_model"),
    Kind("onnx_fp32", "onnx", "fp32", "float", "model_fp32.onnx", "export.onnx_export:build_fp32",
         deterministic=False),
    Kind("onnx_int8", "onnx", "int8", "int8", "model_int8.onnx", "export.onnx_export:build_int8",
         needs="onnx_fp32", parity="min_parity_int8", deterministic=False, layer_error=True),
    Kind("tflite_fp32", "tflite", "fp32", "float", "model_fp32.tflite", "export.tflite_export:build",
         needs="saved_model"),
    Kind("tflite_fp16", "tflite", "fp16", "float", "model_fp16.tflite", "export.tflite_export:build",
         needs="saved_model", mobile="fp16"),
    Kind("tflite_dynamic_int8", "tflite", "dynamic_int8", "int8", "model_dynamic_int8.tflite",
         "export.tflite_export:build", needs="saved_model", parity="min_parity_int8"),
    Kind("tflite_int8", "tflite", "int8", "int8", "model_int8.tflite", "export.tflite_export:build",
         needs="saved_model", parity="min_parity_int8", mobile="int8", layer_error=True),
    Kind("tflite_qat_int8", "tflite", "qat_int8", "int8", "model_qat_int8.tflite", "export.qat:build",
         parity="min_parity_qat", deterministic=False),
)

ARTIFACTS = {row.name: row for row in _ROWS}
REFERENCE = "keras"  # the artifact every other one is compared with


def get(name):
    from pipeline.errors import PipelineError
    if name not in ARTIFACTS:
        raise PipelineError(f"unknown artifact kind {name!r}; known: {', '.join(ARTIFACTS)}")
    return ARTIFACTS[name]


def builder(name):
    """The builder function of a kind (imported on use: export's converters are heavy)."""
    import importlib
    module, function = get(name).builder.split(":")
    return getattr(importlib.import_module(module), function)
