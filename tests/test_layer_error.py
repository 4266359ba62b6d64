"""export.layer_error: per-layer quantization error tables, on tiny models built here.

The tiny model is Rescaling -> conv (relu) -> conv "sensitive" -> add -> relu -> pool -> dense.
"Sensitive" can be sabotaged: every output channel gets one huge weight on an input channel
that is always zero (the first conv's channel 0 is dead), so the float output is unchanged but
per-channel int8 weights round all the ordinary weights to zero. Its output is then ~all
quantization noise (SQNR ~0 dB) while the add after it, dominated by the skip path, recovers.
"""
import math

import numpy as np
import pytest

from evaluate import layer_report
from export import layer_error


def _images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3)).astype(np.float32)


def _tiny_model(sabotage):
    import keras
    from keras import layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    first = layers.Conv2D(8, 3, padding="same", activation="relu")  # default Keras name
    a = first(x)
    b = layers.Conv2D(8, 3, padding="same", name="sensitive")(a)
    y = layers.Activation("relu")(layers.add([a, b]))
    y = layers.GlobalAveragePooling2D()(y)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(y)
    model = keras.Model(inputs, outputs, name="tiny")
    if sabotage:
        kernel, bias = first.get_weights()
        kernel[..., 0], bias[0] = 0.0, -1.0           # channel 0 of `a` is always exactly 0
        first.set_weights([kernel, bias])
        sensitive = model.get_layer("sensitive")
        kernel, bias = sensitive.get_weights()
        kernel = np.random.default_rng(1).normal(0, 0.02, kernel.shape).astype(np.float32)
        kernel[1, 1, 0, :] = 50.0                     # huge, but multiplies the dead channel
        sensitive.set_weights([kernel, bias])
    return model


def _quantize(fp32, path, activations, fmt="qdq"):
    """Static int8 by the product's own quantizer (the one export's onnx_int8 builder and evaluate's
    calibration sweep call): per-channel int8 weights, MinMax ranges, `activations` in `fmt`."""
    from pipeline.onnx_quantize import write_int8
    settings = {"format": fmt, "activations": activations, "weights": "int8", "per_channel": True,
                "reduce_range": False, "calibration": "minmax"}
    recorded = write_int8(fp32, path, _images(), settings)
    assert {k: recorded[k] for k in settings} == settings  # quantized as asked
    return path


@pytest.fixture(scope="module")
def onnx_rows(tmp_path_factory, cfg):
    """{(model, activation type): (model layer names, rows)}; ("folder", model): its folder."""
    from export.onnx_export import write_fp32
    out = {}
    for kind, activation_types in (("plain", ["int8"]), ("sabotaged", ["int8", "uint8"])):
        model = _tiny_model(kind == "sabotaged")
        folder = tmp_path_factory.mktemp(kind)
        write_fp32(model, folder / "fp32.onnx", cfg.export.onnx_opset)
        out["folder", kind] = folder
        for act in activation_types:
            int8 = _quantize(folder / "fp32.onnx", folder / f"{act}.onnx", act)
            out[kind, act] = ({layer.name for layer in model.layers},
                              layer_error.onnx_layer_error(folder / "fp32.onnx", int8, _images(32, 1)))
    return out


@pytest.fixture(scope="module")
def tflite_rows(tmp_path_factory):
    from export.savedmodel import write_saved_model
    model = _tiny_model(sabotage=True)
    path = tmp_path_factory.mktemp("saved") / "saved_model"
    write_saved_model(model, path)
    return {layer.name for layer in model.layers}, layer_error.tflite_layer_error(path, _images(32, 1))


def _check_rows(names, rows, expected=("sensitive", "probabilities")):
    assert rows
    for row in rows:
        assert set(row) >= {"layer", "tensor", "sqnr_db", "rel_error"}
        assert math.isfinite(row["sqnr_db"]) and math.isfinite(row["rel_error"]) and row["rel_error"] >= 0
        assert row["layer"] is None or row["layer"] in names, row
        assert set(row["fused"]) <= names, row
    mapped = {row["layer"] for row in rows} | {f for row in rows for f in row["fused"]}
    # the Keras names a user knows, including a default one ("conv2d..."), not TF's "conv2d_1_1"
    assert set(expected) <= mapped
    assert any(n.startswith("conv2d") for n in mapped & names)


def _worst(rows):
    return min(rows, key=lambda r: r["sqnr_db"])


def test_onnx_rows_are_keyed_to_keras_layers(onnx_rows):
    for (kind, _), value in onnx_rows.items():
        if kind == "folder":
            continue
        names, rows = value
        _check_rows(names, rows, ("image", "to_unit_range", "sensitive", "probabilities"))


@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_onnx_sensitive_layer_has_the_lowest_sqnr(onnx_rows, activations):
    _, plain = onnx_rows["plain", "int8"]
    _, sabotaged = onnx_rows["sabotaged", activations]
    assert _worst(sabotaged)["layer"] == "sensitive", layer_report.table(sabotaged)
    assert _worst(sabotaged)["sqnr_db"] < 6  # its output is mostly noise
    # ... and that is the sabotage, not the layer: unmodified it quantizes fine.
    assert next(r for r in plain if r["layer"] == "sensitive")["sqnr_db"] > 20, layer_report.table(plain)


def test_onnx_works_whatever_the_activation_type_and_refuses_qoperator(onnx_rows):
    import onnx
    folder = onnx_rows["folder", "sabotaged"]
    zero_points = {act: {onnx.numpy_helper.to_array(i).dtype.name for i in onnx.load(str(folder / f"{act}.onnx"))
                         .graph.initializer if i.name.endswith("zero_point") and "Relu" in i.name}
                   for act in ("int8", "uint8")}
    assert zero_points == {"int8": {"int8"}, "uint8": {"uint8"}}  # the two cases really differ
    qop = _quantize(folder / "fp32.onnx", folder / "qop.onnx", "uint8", fmt="qoperator")
    with pytest.raises(ValueError, match="QDQ"):
        layer_error.onnx_layer_error(folder / "fp32.onnx", qop, _images(4))


def test_tflite_rows_are_keyed_to_keras_layers_and_find_the_sensitive_layer(tflite_rows):
    names, rows = tflite_rows
    _check_rows(names, rows)
    assert _worst(rows)["layer"] == "sensitive", layer_report.table(rows)
    assert _worst(rows)["sqnr_db"] < 6, layer_report.table(rows)  # unsabotaged it is ~38 dB


def test_table_and_chart(onnx_rows, tflite_rows, tmp_path):
    _, rows = onnx_rows["sabotaged", "int8"]
    text = layer_report.table(rows)
    assert text.startswith("Worst first: sensitive")
    worst_line = next(line for line in text.splitlines() if "`" in line and "**sensitive" in line)
    assert "| 1 |" in worst_line  # worst rank 1, in bold
    png = tmp_path / "c.png"
    layer_report.plot({"onnx": rows, "tflite": tflite_rows[1]}, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
