"""ONNX int8 with onnxruntime.quantization (static; QDQ, uint8 x int8 by default): what export's onnx_int8
builder and evaluate's calibration sweep both quantize with."""
import numpy as np

from pipeline.errors import PipelineError
from pipeline.model import INPUT_NAME


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
