"""Per-layer quantization error of the int8 artifacts, keyed to the Keras layer names.

Why: the parity gate says *that* an int8 artifact drifts from the float model; this says
*where*. For each quantized tensor we report the signal-to-quantization-noise ratio
(SQNR, dB; higher is better, ~40 dB is what 8 bits give a well-scaled tensor) and the
relative error sum|q - f| / sum|f| against float, over calibration images, under the
name of the Keras layer whose output the tensor is ("conv2d_3", "add_1", ...).

Both measurements come from the runtimes' own debugging tools:

* ONNX: `onnxruntime.quantization.qdq_loss_debug`. The fp32 and the QDQ model are
  augmented to output their intermediate tensors, run on the same images, and every
  quantized tensor of the QDQ model (after its QuantizeLinear/DequantizeLinear pair) is
  compared with the tensor of the same name in the fp32 model. That is the error
  *accumulated* up to this layer (the QDQ model feeds each layer its own quantized
  inputs). The tensors run in float simulation (graph optimisations off), which is
  what the tool does.
* TFLite: `tf.lite.experimental.QuantizationDebugger`, on a model quantized with the
  project's own int8 settings (`export.tflite_export.configure`). Its NumericVerify
  ops run each float op on the *same* dequantized inputs as the int8 op, so the error
  is the one *this layer alone* introduces (weights + output rounding). The debug model
  keeps float input/output (the shipped one takes uint8); the layers in between are
  quantized the same way.

Names: tf2onnx and the TFLite converter keep TensorFlow's op names, in which the Keras
layer "conv2d_3" of model "resnet_v1" is the scope "resnet_v1_1/conv2d_3_1/..." (TF
uniquifies each name scope once more when tracing). Both runtimes fuse layers (conv + batch
norm + ReLU become one op; ONNX Runtime also fuses add + ReLU), so a row is keyed to the
layer whose output the tensor is, and `fused` lists the other Keras layers computed by
the same op. A tensor whose name holds no layer scope gets layer None ("(unmapped)").
"""
import collections
import math
import re
import tempfile
from pathlib import Path

import numpy as np

MAX_IMAGES = 500          # a few hundred are plenty for per-layer statistics


# ---------------------------------------------------------------- names

def _scope_prefix(names):
    """The model's outer scope ("resnet_v1_1"): the commonest first path component."""
    firsts = collections.Counter(part.split("/")[0] for n in names for part in n.split(";") if "/" in part)
    return firsts.most_common(1)[0][0] if firsts else None


def _layers_in(name, prefix):
    """Keras layer names found in a runtime tensor/op name, in order of appearance."""
    if not prefix:
        return []
    found = []
    for scope in re.findall(re.escape(prefix) + r"/([^/;:]+)", name):
        layer = re.sub(r"_\d+$", "", scope)  # TF's extra uniquifying suffix
        if layer not in found:
            found.append(layer)
    return found


def _row(layer, tensor, op, fused, signal, noise, abs_err, abs_sum):
    eps = np.finfo(np.float64).eps
    return {"layer": layer, "tensor": tensor, "op": op, "fused": [f for f in fused if f != layer],
            "sqnr_db": 10 * math.log10(max(signal, eps) / max(noise, eps)),
            "rel_error": float(abs_err / max(abs_sum, eps))}


def _images(images):
    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("no images to measure on")
    return images[:MAX_IMAGES].astype(np.float32)


# ---------------------------------------------------------------- ONNX

def _energies(float_values, quant_values):
    """compute_activation_error's err_func: the sums behind SQNR and relative error."""
    f = np.concatenate([np.ravel(x) for x in float_values]).astype(np.float32, copy=False)
    d = np.concatenate([np.ravel(x) for x in quant_values]).astype(np.float32, copy=False) - f
    return float(np.dot(f, f)), float(np.dot(d, d)), float(np.abs(d).sum()), float(np.abs(f).sum())


def onnx_layer_error(fp32_path, int8_path, images, chunk=25):
    """Rows {"layer", "tensor", "sqnr_db", "rel_error", "op", "fused"} in graph order.

    Compares every activation the QDQ model quantizes with the same tensor of the fp32
    model (cumulative error). Works for int8 or uint8 activations. Images go through in
    chunks (the sums add up exactly), so memory stays ~chunk x 15 MB for the seed model.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)
    images = _images(images)
    qproto = onnx.load(str(int8_path), load_external_data=False)
    input_name = qproto.graph.input[0].name
    quantized = {n.input[0] for n in qproto.graph.node if n.op_type == "QuantizeLinear"}
    producer = {o: n for n in qproto.graph.node for o in n.output}
    if not any(n.op_type == "DequantizeLinear" and getattr(producer.get(n.input[0]), "op_type", "") == "QuantizeLinear"
               for n in qproto.graph.node):
        raise ValueError(f"{int8_path}: no QuantizeLinear -> DequantizeLinear pairs; qdq_loss_debug "
                         "needs a QDQ model (not QOperator)")
    fproto = onnx.load(str(fp32_path), load_external_data=False)
    # Save only what the comparison needs: the fp32 ops that make (or take, for the input) a
    # tensor the QDQ model quantizes, and the two ends of each Q/DQ pair of the QDQ model.
    float_ops = sorted({n.op_type for n in fproto.graph.node if quantized & set(n.output)
                        or quantized & set(n.input) & {i.name for i in fproto.graph.input}})

    class Reader(CalibrationDataReader):
        def __init__(self, part):
            self._parts = iter([part])

        def get_next(self):
            part = next(self._parts, None)
            return None if part is None else {input_name: part}

    sums = {}
    with tempfile.TemporaryDirectory(prefix="layer_error_") as tmp:
        aug_f, aug_q = str(Path(tmp) / "fp32.onnx"), str(Path(tmp) / "qdq.onnx")
        modify_model_output_intermediate_tensors(str(fp32_path), aug_f, float_ops)
        modify_model_output_intermediate_tensors(str(int8_path), aug_q, ["QuantizeLinear", "DequantizeLinear"])
        for i in range(0, len(images), chunk):
            part = images[i:i + chunk]
            matched = create_activation_matching(collect_activations(aug_q, Reader(part)),
                                                 collect_activations(aug_f, Reader(part)))
            matched = {k: m for k, m in matched.items() if "float" in m}  # tensors the fp32 model also has
            for name, err in compute_activation_error(matched, _energies).items():
                prev = sums.get(name, (0.0, 0.0, 0.0, 0.0))
                sums[name] = tuple(a + b for a, b in zip(prev, err["xmodel_err"]))

    init_names = {i.name for i in qproto.graph.initializer}

    def constant_inputs(node):  # weight/bias names, through their DequantizeLinear
        for name in node.input:
            src = producer.get(name)
            if name in init_names or (src is not None and src.op_type == "DequantizeLinear"
                                      and src.input[0] in init_names):
                yield name

    prefix = _scope_prefix([n.name for n in qproto.graph.node] + list(producer))
    rows = []
    for node in qproto.graph.node:  # graph order: the QuantizeLinear of each activation
        name = node.input[0] if node.op_type == "QuantizeLinear" else None
        if name not in sums:
            continue
        src = producer.get(name)
        own = _layers_in(name, prefix)
        layer = own[0] if own else (name if name == input_name else None)
        fused = []
        if src is not None:
            for text in [src.name, *constant_inputs(src), name]:
                fused += [lay for lay in _layers_in(text, prefix) if lay not in fused]
        rows.append(_row(layer, name, src.op_type if src is not None else "input", fused,
                         *sums[name]))
    return rows


# ---------------------------------------------------------------- TFLite

def tflite_layer_error(saved_model_dir, images, calibration_images=None):
    """Rows {"layer", "tensor", "sqnr_db", "rel_error", "op", "fused"} in graph order.

    Quantizes the SavedModel as export.tflite_export.configure(converter, "int8", ...) does,
    calibrated on `calibration_images` (default: `images`; pass the full calibration set to
    get exactly the shipped model's ranges), and runs TFLite's QuantizationDebugger on
    `images` (error introduced by each layer alone).
    """
    import csv
    import io

    import tensorflow as tf

    from export.tflite_export import configure
    images = _images(images)

    def dataset():
        for img in images:
            yield [img[None]]

    def dequantized(q, scale, zero_point):
        return (q.astype(np.int64) - zero_point) * np.float64(scale)

    # (float value, quantized value, scale, zero point) -> a sum; the debugger averages each
    # metric over images, so ratios of these averages are ratios of the totals.
    sums = {
        "signal": lambda f, q, s, z: float(np.square(f.astype(np.float64)).sum()),
        "noise": lambda f, q, s, z: float(np.square(dequantized(q, s, z) - f).sum()),
        "abs_err": lambda f, q, s, z: float(np.abs(dequantized(q, s, z) - f).sum()),
        "abs": lambda f, q, s, z: float(np.abs(f.astype(np.float64)).sum()),
    }
    calibration = images if calibration_images is None else np.asarray(calibration_images, np.float32)
    converter = configure(tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir)), "int8", calibration)
    builder = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
    # The direct-compare metrics read intermediate tensors, which only a debugger built from the
    # model bytes keeps alive (experimental_preserve_all_tensors); one built from a converter does not.
    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=builder.get_debug_quantized_model(), debug_dataset=dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics=sums))
    debugger.run()
    out = io.StringIO()
    debugger.layer_statistics_dump(out)
    stats = list(csv.DictReader(io.StringIO(out.getvalue())))

    prefix = _scope_prefix([r["tensor_name"] for r in stats])
    rows = []
    for r in sorted(stats, key=lambda r: int(r["tensor_idx"])):
        # A fused op's tensor is "out_layer/op;...;first_layer/op": the first part is its output.
        layers = _layers_in(";".join(reversed(r["tensor_name"].split(";"))), prefix)
        own = _layers_in(r["tensor_name"].split(";")[0], prefix)
        rows.append(_row(own[0] if own else None, r["tensor_name"], r["op_name"], layers,
                         float(r["signal"]), float(r["noise"]), float(r["abs_err"]), float(r["abs"])))
    return rows


# ---------------------------------------------------------------- reporting

def measure(exporter, row, path, images):
    """The per-layer error rows of one staged int8 artifact (pipeline.artifacts rows with layer_error)."""
    if row.layer_error == "onnx":
        return onnx_layer_error(exporter.path_of(row.needs), path, images)
    return tflite_layer_error(exporter.path_of("saved_model"), images, exporter.calibration.images)
