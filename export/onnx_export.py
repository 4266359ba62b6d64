"""ONNX fp32 via tf2onnx, and ONNX int8 via onnxruntime.quantization (static; QDQ, uint8 x int8 by default).

tf2onnx's `from_keras` does not understand Keras 3 models, so we convert a tf.function
with a named, dynamic-batch input signature; its variables are frozen into the graph,
so the model has exactly one input and no constant leaks in as an extra input.
"""
import re

import numpy as np

from export.savedmodel import INPUT_NAME, OUTPUT_NAME, image_spec
from pipeline.errors import PipelineError


def write_fp32(model, path, opset):
    import onnx
    import tensorflow as tf
    import tf2onnx
    fn = tf.function(lambda image: model(image, training=False), input_signature=[image_spec()])
    tf2onnx.utils.INTERNAL_NAME = 1  # its name counter is global: reset it so names (and bytes) repeat
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[image_spec()], opset=opset)
    _rename_output(proto, OUTPUT_NAME)
    _canonical_names(proto)
    check_single_io(proto, path)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _rename_output(proto, name):
    """tf2onnx names the output after the TF tensor ("Identity:0"); users want "probabilities"."""
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[0].name = name


def _canonical_names(proto):
    """Renumber the names tf2onnx makes up ("const_fold_opt__412") in graph order.

    tf2onnx numbers them with a process-wide counter, and orders initializers by name, so
    the same model converted after other work in the process gave other bytes.
    """
    g = proto.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    made_up = re.compile(r"__\d+")
    tensors, nodes = {}, {}

    def canon(name, table):
        if name in keep or not made_up.search(name):
            return name
        return table.setdefault(name, made_up.sub("", name) + f"__{len(table)}")

    for node in g.node:
        node.input[:] = [canon(n, tensors) for n in node.input]
        node.output[:] = [canon(n, tensors) for n in node.output]
        node.name = canon(node.name, nodes)
    for t in list(g.initializer) + list(g.value_info):
        t.name = canon(t.name, tensors)
    dims = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        for i, d in enumerate(v.type.tensor_type.shape.dim):
            if d.HasField("dim_param"):  # tf2onnx's "unk__415"; the dynamic batch of the I/O is "batch"
                d.dim_param = "batch" if v.name in keep and i == 0 else dims.setdefault(d.dim_param, f"dim{len(dims)}")
    first_use = {n: i for i, n in reversed(list(enumerate(x for node in g.node for x in node.input)))}
    inits = sorted(g.initializer, key=lambda t: (first_use.get(t.name, len(first_use)), t.name))
    del g.initializer[:]
    g.initializer.extend(inits)
    g.doc_string = ""  # names the converter version only; tool versions are in the manifest


def check_single_io(proto, where):
    """Exactly one real input and one output; initializers listed as inputs would be the trap."""
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input]
    if inputs != [INPUT_NAME] or len(proto.graph.output) != 1 or inits & set(inputs):
        raise PipelineError(f"{where}: ONNX graph has inputs {inputs} and {len(proto.graph.output)} "
                            f"outputs; expected exactly [{INPUT_NAME!r}] and 1")


class _Calibration:
    """onnxruntime's CalibrationDataReader over the calibration images, in batches."""

    def __init__(self, images, batch=50):
        self._batches = iter([images[i:i + batch].astype(np.float32) for i in range(0, len(images), batch)])

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


# Why the defaults (benchmarks/onnx_int8.py, BENCHMARKS.md): on x86, onnxruntime runs int8 convolutions
# as uint8 activations x int8 weights (VNNI's vpdpbusd). With uint8 activations in QDQ its optimizer fuses
# every DQ -> Conv/Add/Mul -> Q into QLinear* kernels; with int8 activations it left 11 of the 19 convs in
# float between Q/DQ pairs and the "int8" model ran at fp32 speed.
WHY = {
    "format": "QDQ: the portable ONNX form; onnxruntime fuses it into the same kernels as QOperator",
    "activations": "uint8 x int8 weights: the pair onnxruntime's x86 int8 kernels (VNNI) run natively",
    "per_channel": "one scale per output channel keeps narrow channels' precision",
    "reduce_range": "7-bit weights only matter on x86 without VNNI, where u8 x s8 products can saturate",
    "calibration": "MinMax: percentile was no more accurate on this model (reports/calibration_sweep.md); "
                   "entropy, as quantize_static sets it up in onnxruntime 1.32 (128 bins), gives the MinMax model",
}


def int8_settings(export_cfg):
    """The onnxruntime quantization settings the config asks for, as recorded in the manifest."""
    return {"format": export_cfg.onnx_int8_format,
            "activations": export_cfg.onnx_int8_activations, "weights": export_cfg.onnx_int8_weights,
            "per_channel": export_cfg.onnx_int8_per_channel, "reduce_range": export_cfg.onnx_int8_reduce_range,
            "calibration": export_cfg.onnx_int8_calibration}


def write_int8(fp32_path, path, calibration_images, settings, nodes_to_exclude=()):
    """Static int8 with onnxruntime.quantization; float in and out. `settings`: int8_settings(...).

    The softmax always stays float: int8 probabilities (steps of 1/255) turn near-ties into exact ties.
    Returns the settings with the float nodes and the reasons, for the manifest.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(calibration_images)
    prepared = path.with_name(path.stem + ".prep.onnx")  # inside atomic_path's temp folder
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    softmax = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Softmax"]
    float_nodes = softmax + [n for n in nodes_to_exclude if n not in softmax]
    quantize_static(str(prepared), str(path), reader,
                    quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[settings["format"]],
                    activation_type=types[settings["activations"]], weight_type=types[settings["weights"]],
                    per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                    calibrate_method=methods[settings["calibration"]], nodes_to_exclude=float_nodes)
    prepared.unlink()
    check_single_io(onnx.load(str(path)), path)
    return {**settings, "float_nodes": float_nodes, "why": WHY}


def build_fp32(exporter, row, path):
    write_fp32(exporter.model, path, exporter.cfg.export.onnx_opset)
    return {"opset": exporter.cfg.export.onnx_opset}


def build_int8(exporter, row, path):
    settings = int8_settings(exporter.cfg.export)
    if exporter.cfg.export.int8_max_drop_pp > 0:  # layers kept in float until accurate enough on a holdout
        from export.constrained_int8 import onnx_int8
        return onnx_int8(exporter, row, path, settings)
    return write_int8(exporter.path_of(row.needs), path, exporter.calibration.images, settings)
