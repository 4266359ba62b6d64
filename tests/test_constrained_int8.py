"""export.constrained_int8: accuracy-constrained int8 turns a failing int8 artifact into a passing one.

The tiny model (Rescaling -> conv -> conv "sensitive" -> conv -> pool -> dense, no skip path) is
fitted in a few seconds on synthetic images whose class is their mean colour, then sabotaged
as in tests/test_layer_error.py: the first conv's channel 0 is dead (always exactly 0), and
"sensitive" gets a huge weight on it in every output channel. The float model is unchanged,
but per-channel int8 weights round all of "sensitive"'s real weights to (nearly) zero, so plain
int8 falls to about chance; with "sensitive" alone in float it is as good as float.
"""
import numpy as np
import pytest

from export import constrained_int8
from pipeline.errors import PipelineError

LIMIT_PP = 5.0
HOLDOUT = 100
PARITY = 10


# 10 well-separated colours (a colour-mean task with wide margins: int8 alone costs nothing)
_PALETTE = np.array([[40, 40, 40], [215, 40, 40], [40, 215, 40], [40, 40, 215], [215, 215, 40], [215, 40, 215],
                     [40, 215, 215], [215, 215, 215], [128, 128, 40], [40, 128, 128]], np.float32)


def _data(per_class, seed):
    """Images whose class is their mean colour plus noise, stored class by class (as calibration is)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    x = _PALETTE[labels][:, None, None, :] + rng.normal(0, 40, (len(labels), 32, 32, 3))
    return np.clip(np.round(x), 0, 255).astype(np.float32), labels


def _sabotaged_model():
    import keras
    from keras import layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    first = layers.Conv2D(8, 3, padding="same", activation="relu")
    x = first(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="sensitive")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    kernel, bias = first.get_weights()
    kernel[..., 0], bias[0] = 0.0, -1.0  # channel 0 is always exactly 0 (and stays so: no gradient)
    first.set_weights([kernel, bias])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(*_data(60, 1), batch_size=32, epochs=8, verbose=0)
    sensitive = model.get_layer("sensitive")
    kernel, bias = sensitive.get_weights()
    kernel[1, 1, 0, :] = 100.0  # multiplies the dead channel: float output unchanged
    sensitive.set_weights([kernel, bias])
    return model


class _Exporter:
    """What export.run.Exporter gives a builder: cfg, calibration, path_of (here: prebuilt files)."""

    def __init__(self, cfg, calibration, paths):
        from pipeline import sampling
        from pipeline.data import Split
        # The product's image sets: holdout and calibration drawn from the tiny pool; inverted images
        # stand in for the parity set (they must be disjoint from the pool).
        parity = Split(255 - calibration.images[:PARITY], calibration.labels[:PARITY])
        self.cfg, self._paths = cfg, paths
        self.sets = sampling.ExportSets(cfg, Split(calibration.images, calibration.labels), parity)
        self.calibration = self.sets.calibration

    def path_of(self, name):
        return self._paths[name]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cfg):
    from types import SimpleNamespace

    from export.onnx_export import write_fp32
    from export.savedmodel import write_saved_model
    model = _sabotaged_model()
    folder = tmp_path_factory.mktemp("constrained")
    write_fp32(model, folder / "fp32.onnx", cfg.export.onnx_opset)
    write_saved_model(model, folder / "saved_model")
    images, labels = _data(40, 2)
    return SimpleNamespace(folder=folder, calibration=SimpleNamespace(images=images, labels=labels),
                           paths={"onnx_fp32": folder / "fp32.onnx", "saved_model": folder / "saved_model"})


def _exporter(tiny, max_drop_pp):
    from pipeline import config
    cfg = config.load(None, [("export.int8_max_drop_pp", max_drop_pp), ("export.int8_holdout_images", HOLDOUT),
                             ("export.parity_images", PARITY)])
    return _Exporter(cfg, tiny.calibration, tiny.paths)


def _holdout_drop_pp(tiny, kind, float_path, int8_path):
    holdout = _exporter(tiny, LIMIT_PP).sets.holdout
    images, labels = holdout.images, holdout.labels
    float_acc = constrained_int8.accuracy(constrained_int8._predict(kind, float_path, images), labels)
    int8_acc = constrained_int8.accuracy(constrained_int8._predict(kind.replace("fp32", "int8")
                                                                   .replace("saved_model", "tflite_int8"),
                                                                   int8_path, images), labels)
    return (float_acc - int8_acc) * 100, float_acc


def _check_record(record):
    assert record["max_drop_pp"] == LIMIT_PP and record["holdout_images"] == HOLDOUT
    steps = record["int8_accuracy_holdout"]
    drops = [(record["float_accuracy_holdout"] - step["accuracy"]) * 100 for step in steps]
    assert steps[0]["float_layers"] == []  # plain int8 first ...
    assert drops[0] > LIMIT_PP  # ... failed
    assert [len(step["float_layers"]) for step in steps] == list(range(len(steps)))  # then one more layer a step
    assert all(d > LIMIT_PP for d in drops[:-1]) and drops[-1] <= LIMIT_PP + 1e-9  # stopped at the first within
    assert record["drop_pp"] == pytest.approx(drops[-1], abs=0.02) and record["drop_pp"] <= LIMIT_PP  # measured
    assert record["met"] is (drops[-1] <= LIMIT_PP + 1e-9)  # "met" says what the last step measured
    names = [f["layer"] for f in record["float_layers"]]
    assert steps[-1]["float_layers"] == names
    assert "sensitive" in names, record
    assert names == ["sensitive"], record  # the one layer that needs it, not everything
    for f in record["float_layers"]:
        assert f["nodes"] and f["why"] and isinstance(f["sqnr_db"], float)


def test_search_gives_up_past_the_cap_with_one_line():
    ranked = [{"layer": f"conv{i}", "nodes": [f"n{i}"]} for i in range(12)]
    labels = np.zeros(50, dtype=int)
    wrong = np.tile(np.eye(10)[1], (50, 1))  # every step predicts class 1: 0% vs float's 100%
    built = []
    with pytest.raises(PipelineError) as err:
        constrained_int8.search("onnx_int8", lambda layers: built.append(len(layers)) or wrong,
                                lambda: ranked, 1.0, labels, 2.0, cap=3)
    assert built == [0, 1, 2, 3]
    message = str(err.value)
    assert "\n" not in message and "onnx_int8" in message and "100.00 pp" in message and "2 pp" in message


def test_onnx_constrained_int8_keeps_the_sabotaged_layer_in_float(tiny):
    import onnx

    from export.constrained_int8 import build_onnx_int8 as build_int8
    from pipeline import artifacts
    row = artifacts.get("onnx_int8")
    plain = tiny.folder / "plain_int8.onnx"
    plain_settings = build_int8(_exporter(tiny, 0.0), row, plain)
    assert "accuracy_constraint" not in plain_settings  # off by default: unchanged behaviour
    drop, float_acc = _holdout_drop_pp(tiny, "onnx_fp32", tiny.paths["onnx_fp32"], plain)
    assert float_acc > 0.8 and drop > LIMIT_PP, (float_acc, drop)

    constrained = tiny.folder / "constrained_int8.onnx"
    settings = build_int8(_exporter(tiny, LIMIT_PP), row, constrained)
    record = settings["accuracy_constraint"]
    _check_record(record)
    drop, _ = _holdout_drop_pp(tiny, "onnx_fp32", tiny.paths["onnx_fp32"], constrained)
    assert drop <= LIMIT_PP
    assert settings["calibration_images"] == len(tiny.calibration.labels) - HOLDOUT
    sensitive_nodes = next(f["nodes"] for f in record["float_layers"] if f["layer"] == "sensitive")
    assert set(sensitive_nodes) <= set(settings["float_nodes"])
    # In the file: the sensitive conv reads its float weights directly, the others through DequantizeLinear.
    graph = onnx.load(str(constrained)).graph
    inits = {i.name for i in graph.initializer}
    convs = {n.name: n.input[1] in inits for n in graph.node if n.op_type == "Conv"}
    assert [name for name, float_weights in convs.items() if float_weights] == \
        [n for n in sensitive_nodes if n in convs], convs


def test_tflite_constrained_int8_keeps_the_sabotaged_layer_in_float(tiny):
    from export.constrained_int8 import build_tflite_int8 as build
    from export.tflite_export import read_labels
    from pipeline import artifacts
    row = artifacts.get("tflite_int8")
    plain = tiny.folder / "plain_int8.tflite"
    plain_settings = build(_exporter(tiny, 0.0), row, plain) or {}  # a builder may record nothing (artifacts.py)
    assert "accuracy_constraint" not in plain_settings  # off by default: unchanged behaviour ...
    assert _tflite_io_and_conv_dtypes(plain) == ("uint8", "uint8", ["int8", "int8", "int8"])  # ... every conv int8
    drop, float_acc = _holdout_drop_pp(tiny, "saved_model", tiny.paths["saved_model"], plain)
    assert float_acc > 0.8 and drop > LIMIT_PP, (float_acc, drop)

    constrained = tiny.folder / "constrained_int8.tflite"
    settings = build(_exporter(tiny, LIMIT_PP), row, constrained)
    _check_record(settings["accuracy_constraint"])
    drop, _ = _holdout_drop_pp(tiny, "saved_model", tiny.paths["saved_model"], constrained)
    assert drop <= LIMIT_PP
    assert len(read_labels(constrained)) == 10
    # still uint8 in and out; one conv in float
    assert _tflite_io_and_conv_dtypes(constrained) == ("uint8", "uint8", ["float32", "int8", "int8"])


def _tflite_io_and_conv_dtypes(path):
    """(input dtype, output dtype, sorted dtypes of every CONV_2D's input) of a .tflite file."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    conv_inputs = [tensors[op["inputs"][0]]["dtype"] for op in interpreter._get_ops_details()
                   if op["op_name"] == "CONV_2D"]
    return (np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
            np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
            sorted(np.dtype(d).name for d in conv_inputs))


def test_onnx_qoperator_is_ranked_through_a_qdq_twin(tiny):
    from export.constrained_int8 import build_onnx_int8 as build_int8
    from pipeline import artifacts, config
    cfg = config.load(None, [("export.int8_max_drop_pp", LIMIT_PP), ("export.int8_holdout_images", HOLDOUT),
                             ("export.onnx_int8_format", "qoperator"), ("export.parity_images", PARITY)])
    path = tiny.folder / "qop_int8.onnx"
    settings = build_int8(_Exporter(cfg, tiny.calibration, tiny.paths), artifacts.get("onnx_int8"), path)
    assert settings["format"] == "qoperator"
    _check_record(settings["accuracy_constraint"])


def test_a_model_within_the_limit_keeps_nothing_in_float(tiny):
    from export.constrained_int8 import build_onnx_int8 as build_int8
    from pipeline import artifacts
    settings = build_int8(_exporter(tiny, 100.0), artifacts.get("onnx_int8"), tiny.folder / "loose_int8.onnx")
    record = settings["accuracy_constraint"]
    assert record["met"] and record["float_layers"] == [] and len(record["int8_accuracy_holdout"]) == 1
    assert record["ranking"].startswith("not needed")
