"""Input/output specs of a written artifact for the manifest, read back from the file itself."""
import numpy as np


def _spec(name, dtype, shape, quantization=None):
    return {"name": name, "dtype": dtype, "shape": shape, "quantization": quantization}


def _onnx(path):
    import onnx
    proto = onnx.load(str(path), load_external_data=False)

    def spec(v):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        return _spec(v.name, onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name, dims)

    return spec(proto.graph.input[0]), spec(proto.graph.output[0])


def _ort(path):
    """An .ort file is a flatbuffer the onnx package cannot read: its I/O as onnxruntime reports them, in the
    session predict and evaluate make (its ops checked first, its saved optimizations replayed)."""
    from pipeline.runtimes import OrtRunner
    session = OrtRunner("spec", path, 1).session
    dtypes = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}

    def spec(v):
        return _spec(v.name, dtypes.get(v.type, v.type), [d if isinstance(d, int) else None for d in v.shape])

    return spec(session.get_inputs()[0]), spec(session.get_outputs()[0])


def _tflite(path):
    from pipeline.runtimes import TFLiteRunner
    runner = TFLiteRunner("spec", path, 1)

    def spec(d):
        scale, zero_point = d["quantization"]
        quant = {"scale": float(scale), "zero_point": int(zero_point)} \
            if np.issubdtype(d["dtype"], np.integer) and scale else None
        return _spec(d["name"], np.dtype(d["dtype"]).name, [None if s < 0 else int(s) for s in d["shape_signature"]],
                     quant)

    return spec(runner.input_detail), spec(runner.output_detail)


def _keras(path):
    from export.savedmodel import INPUT_NAME, OUTPUT_NAME
    return _spec(INPUT_NAME, "float32", [None, 32, 32, 3]), _spec(OUTPUT_NAME, "float32", [None, 10])


def of(row, path):
    """(input spec, output spec) of the artifact at `path` (a pipeline.artifacts row)."""
    return {"onnx": _onnx, "ort": _ort, "tflite": _tflite}.get(row.format, _keras)(path)
