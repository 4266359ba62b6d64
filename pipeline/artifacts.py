"""The one table of artifact kinds: export, manifest checks, gates, the mobile bundle, predict and
the benchmarks all read it. Adding a kind = one row here and its builder in export/.

Columns:
  format         keras | saved_model | onnx | ort | tflite (the file format; ort: ONNX Runtime's flatbuffer)
  precision      what the weights/activations compute in
  kind           float | int8: which accuracy gates apply ([gates] max_drop_pp_<kind>, min_agreement_<kind>)
  file           file (or folder) name beside manifest.json
  builder        "module:function" in export/, called as builder(exporter, row, out_path) -> settings dict or None
  needs          the artifact it is converted from (built in staging even when not requested)
  parity         the [gates] key of the top-1 agreement export requires on the parity images
  deterministic  re-export of the same checkpoint writes the same bytes (benchmarks/export_time.py,
                 tests/test_export.py). SavedModel: per fresh process. ONNX: tf2onnx sometimes leaves
                 Flatten's reshape target as a subgraph (same outputs, other bytes). QAT trains for a
                 wall-clock budget. ORT format: the same ONNX converts to other bytes run to run.
  mobile         shipped in the mobile bundle (export.mobile) under this key
  layer_error    the tool export measures its per-layer quantization error with (export.layer_error):
                 onnx | tflite | "" (none)
  runtime        what runs it: tensorflow | onnxruntime | litert (evaluate's worker, predict, parity)
  one_at_a_time  parity runs it one image at a time on 2 threads, as a phone app does
  mobile_checks  export records its mobile readiness (pipeline.mobile_checks) and evaluate gates it
  integer_io     full-integer model: uint8/int8 input and output (a mobile check, and predict dequantizes)
  compute        the peak its latency share is measured against (evaluate.flops): fp32 | int8
  profiler       the runtime profiler `evaluate --profile` reads ("" = none: evaluate.profile says why)
  counts_flops   evaluate counts FLOPs per image on it (a Keras model: one count serves every artifact)
  default        written by export unless export.formats says otherwise
  ort_mobile     export records how much of it ONNX Runtime Mobile's NNAPI / Core ML providers take
                 (pipeline.ort_mobile) and evaluate gates it (gates.ort_mobile_<kind>)
  batch          the file's fixed batch size (a phone's models: 1, no runtime-shape op); 0 = dynamic (servers)
  metadata       TFLite Model Metadata inside (export.tflite_export: name, version, license, RGB input with
                 its normalisation, labels as TENSOR_AXIS_LABELS), written in the mobile environment
  clients        the app-side clients evaluate also scores the file through, each a report row NAME@CLIENT
                 gated on top-1 agreement with the file's own runtime: mediapipe (MediaPipe Tasks'
                 ImageClassifier, the C++ task Android, iOS and web apps run)
  ops_config     a file the builder writes beside `file`: onnxruntime's required-operators config, from which a
                 reduced-operator ORT Mobile build is compiled; in the manifest entry and the mobile bundle with it
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
    builder: str = ""
    needs: str = ""
    parity: str = "min_parity_float"
    deterministic: bool = True
    mobile: str = ""
    layer_error: str = ""
    runtime: str = ""
    one_at_a_time: bool = False
    mobile_checks: bool = False
    integer_io: bool = False
    compute: str = "fp32"
    profiler: str = ""
    counts_flops: bool = False
    default: bool = True
    batch: int = 0
    ort_mobile: bool = False
    metadata: bool = False
    clients: tuple = ()
    ops_config: str = ""


_TF = dict(runtime="tensorflow")
_ORT = dict(runtime="onnxruntime", profiler="onnxruntime")
_LITE = dict(runtime="litert", one_at_a_time=True, mobile_checks=True, needs="saved_model",
             builder="export.tflite_export:build")
_INT8 = dict(parity="min_parity_int8", compute="int8")
_PHONE_LITE = dict(metadata=True, clients=("mediapipe",))

_ROWS = (
    Kind("keras", "keras", "fp32", "float", "model_fp32.h5", "export.savedmodel:build_keras", counts_flops=True, **_TF),
    Kind("saved_model", "saved_model", "fp32", "float", "saved_model", "export.savedmodel:build_saved_model", **_TF),
    Kind("onnx_fp32", "onnx", "fp32", "float", "model_fp32.onnx", "export.onnx_export:build_fp32",
         deterministic=False, **_ORT),
    Kind("onnx_int8", "onnx", "int8", "int8", "model_int8.onnx", "export.constrained_int8:build_onnx_int8",
         needs="onnx_fp32", deterministic=False, layer_error="onnx", **_INT8, **_ORT),
    Kind("tflite_fp32", "tflite", "fp32", "float", "model_fp32.tflite", **_LITE),
    Kind("tflite_fp16", "tflite", "fp16", "float", "model_fp16.tflite", **_LITE),
    Kind("tflite_dynamic_int8", "tflite", "dynamic_int8", "int8", "model_dynamic_int8.tflite",
         **_LITE, **_INT8),  # int8 weights; LiteRT's hybrid kernels quantize activations on the fly
    Kind("tflite_int8", "tflite", "int8", "int8", "model_int8.tflite", layer_error="tflite",
         integer_io=True, **{**_LITE, **_INT8, "builder": "export.constrained_int8:build_tflite_int8"}),
    Kind("tflite_qat_int8", "tflite", "qat_int8", "int8", "model_qat_int8.tflite",
         parity="min_parity_qat", deterministic=False, integer_io=True, compute="int8", default=False,
         **{**_LITE, "needs": "", "builder": "export.qat:build"}),
    # What a phone gets (the mobile bundle): batch 1 fixed, no runtime-shape op.
    Kind("tflite_fp16_b1", "tflite", "fp16", "float", "model_fp16_b1.tflite", mobile="fp16", batch=1, **_PHONE_LITE,
         **{**_LITE, "needs": "", "builder": "export.tflite_export:build_static"}),
    Kind("tflite_int8_b1", "tflite", "int8", "int8", "model_int8_b1.tflite", mobile="int8", batch=1, integer_io=True,
         **_PHONE_LITE,
         **{**_LITE, **_INT8, "needs": "", "builder": "export.tflite_export:build_static"}),
    Kind("onnx_fp32_b1", "onnx", "fp32", "float", "model_fp32_b1.onnx", "export.onnx_export:build_static",
         needs="onnx_fp32", deterministic=False, mobile="onnx_fp32", batch=1, ort_mobile=True, **_ORT),
    Kind("onnx_int8_b1", "onnx", "int8", "int8", "model_int8_b1.onnx", "export.onnx_export:build_static",
         needs="onnx_int8", deterministic=False, mobile="onnx_int8", batch=1, ort_mobile=True, **_INT8, **_ORT),
    # ONNX Runtime Mobile's own format, from the b1 ONNX (export.ort_export); its ort_mobile coverage is the ONNX's.
    Kind("ort_fp32_b1", "ort", "fp32", "float", "model_fp32_b1.ort", "export.ort_export:build", needs="onnx_fp32_b1",
         deterministic=False, mobile="ort_fp32", batch=1,
         ops_config="model_fp32_b1.required_operators.with_runtime_opt.config", **_ORT),
    Kind("ort_int8_b1", "ort", "int8", "int8", "model_int8_b1.ort", "export.ort_export:build", needs="onnx_int8_b1",
         deterministic=False, mobile="ort_int8", batch=1,
         ops_config="model_int8_b1.required_operators.with_runtime_opt.config", **_INT8, **_ORT),
)

ARTIFACTS = {row.name: row for row in _ROWS}
REFERENCE = "keras"  # the artifact every other one is compared with
DEFAULT_FORMATS = [row.name for row in _ROWS if row.default]


def of_row(row):
    """The kind of a report row: its own name, or for a client's row (NAME@CLIENT) the artifact it ran."""
    return get(row.get("artifact", row["name"]))


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
