"""pipeline.mobile_checks on tiny models converted here (seconds): builtin-only, integer I/O, and the GPU
verdict from the LiteRT GPU delegate's rules (pipeline/gpu_rules.py), plus what CompiledModel says."""
import subprocess

import numpy as np
import pytest

from pipeline import gpu_rules, mobile_checks
from pipeline.artifacts import ARTIFACTS
from export.tflite_export import configure, with_labels
from pipeline.errors import PipelineError

RNG = np.random.default_rng(0)
FILTER = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
FILTER2 = RNG.normal(size=(3, 3, 4, 4)).astype(np.float32)
DENSE = RNG.normal(size=(64, 10)).astype(np.float32)
IMAGES = RNG.uniform(0, 255, size=(8, 8, 8, 3)).astype(np.float32)  # raw 0..255 like the real model's


def _convert(fn, spec, precision=None, flex=False):
    import tensorflow as tf
    fn = tf.function(fn, input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if precision:
        configure(converter, precision, IMAGES)  # the project's own settings per precision
    if flex:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    return converter.convert()


def _features(x):
    import tensorflow as tf
    y = tf.nn.relu(tf.nn.conv2d(x / 255.0, FILTER, strides=1, padding="SAME"))
    y = y + tf.nn.relu(tf.nn.conv2d(y, FILTER2, strides=1, padding="SAME"))  # a residual ADD
    return tf.nn.avg_pool2d(y, 2, 2, "VALID")  # [b, 4, 4, 4]


def _tiny_cnn(x):
    """Batch 1, every tensor static: Flatten is a RESHAPE to a constant [1, 64], as a phone's model."""
    import tensorflow as tf
    return tf.nn.softmax(tf.reshape(_features(x), [1, 64]) @ DENSE)


def _tiny_cnn_dynamic_batch(x):
    """Keras' Flatten over a None batch: SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE at run time."""
    import tensorflow as tf
    y = _features(x)
    return tf.nn.softmax(tf.reshape(y, [tf.shape(y)[0], -1]) @ DENSE)


def _cosh(x):
    import tensorflow as tf
    return tf.cosh(x) + 1.0  # tf.cosh has no TFLite builtin: only SELECT_TF_OPS converts it


def _write(tmp_path, name, flatbuffer):
    """As the exporter writes it: flatbuffer + appended labels zip."""
    path = tmp_path / name
    path.write_bytes(with_labels(bytes(flatbuffer), "a\nb\n"))
    return path


@pytest.fixture(scope="module")
def cnn_spec():
    import tensorflow as tf
    return tf.TensorSpec([1, 8, 8, 3], tf.float32)


@pytest.fixture(scope="module")
def int8_model(cnn_spec):
    return _convert(_tiny_cnn, cnn_spec, "int8")


@pytest.fixture(scope="module")
def fp32_model(cnn_spec):
    return _convert(_tiny_cnn, cnn_spec, "fp32")


@pytest.fixture(scope="module")
def fp16_model(cnn_spec):
    return _convert(_tiny_cnn, cnn_spec, "fp16")


@pytest.fixture(scope="module")
def dynamic_model():
    import tensorflow as tf
    return _convert(_tiny_cnn_dynamic_batch, tf.TensorSpec([None, 8, 8, 3], tf.float32), "fp32")


@pytest.fixture(scope="module")
def flex_model():
    import tensorflow as tf
    return _convert(_cosh, tf.TensorSpec([1, 4], tf.float32), flex=True)


def _gpu_lines(r):
    return mobile_checks.failures(r, required=("gpu",))


def test_full_integer_model_is_builtin_with_integer_io(tmp_path, int8_model):
    r = mobile_checks.check(_write(tmp_path, "int8.tflite", int8_model), full_integer=True)
    assert r["builtin_ops_only"] is True and r["custom_ops"] == []
    assert r["integer_io"] is True
    assert (r["input_dtype"], r["output_dtype"]) == ("uint8", "uint8")
    assert r["ops"]["CONV_2D"] == 2 and "QUANTIZE" in r["ops"]
    assert mobile_checks.failures(r) == []


def test_float_io_fails_the_full_integer_check(tmp_path, fp32_model):
    path = _write(tmp_path, "fp32.tflite", fp32_model)
    r = mobile_checks.check(path, ARTIFACTS["tflite_qat_int8"].integer_io)  # full-integer kind, float32 I/O
    assert r["integer_io"] is False and r["input_dtype"] == "float32"
    assert any("non-integer I/O" in f and "float32" in f for f in mobile_checks.failures(r))
    assert mobile_checks.failures(r, required=("builtin_ops",)) == []  # not required: never fails
    dynamic_int8 = ARTIFACTS["tflite_dynamic_int8"].integer_io
    assert mobile_checks.check(path, dynamic_int8)["integer_io"] is None  # float I/O is right for it
    with pytest.raises(PipelineError):
        mobile_checks.failures(r, required=("gpu_delegate",))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_static_batch_1_cnn_passes_the_gpu_rules(tmp_path, precision, request):
    r = mobile_checks.check(_write(tmp_path, f"{precision}.tflite", request.getfixturevalue(f"{precision}_model")),
                            full_integer=precision == "int8")
    assert {"CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"} <= set(r["ops"]), r["ops"]
    assert "SHAPE" not in r["ops"]
    assert (r["gpu_compatible"], r["gpu_incompatible_ops"]) == (True, []), r["gpu_incompatible_ops"]
    assert r["gpu_checker"] == mobile_checks.GPU_CHECKER and gpu_rules.SOURCE in r["gpu_checker"]
    assert mobile_checks.failures(r, required=mobile_checks.CHECKS) == []


def test_dynamic_batch_fails_naming_shape_the_dynamic_reshape_and_the_dynamic_tensor(tmp_path, dynamic_model):
    r = mobile_checks.check(_write(tmp_path, "dynamic.tflite", dynamic_model), full_integer=False)
    assert {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"} <= set(r["ops"])  # the converted dynamic Flatten
    assert r["builtin_ops_only"] is True and r["gpu_compatible"] is False
    why = {o["op"]: o["why"] for o in r["gpu_incompatible_ops"]}
    assert "computes a shape at run time" in why["SHAPE"]
    assert "RESHAPE takes 1 runtime input(s), this one has 2" in why["RESHAPE"]
    dynamic = [o for o in r["gpu_incompatible_ops"] if "dynamic tensor" in o["why"]]
    assert len(dynamic) == 1 and "shape_signature [-1, 8, 8, 3]" in dynamic[0]["why"]  # the input, named once
    assert dynamic[0]["op"] == "CONV_2D" and dynamic[0]["node"] == 0  # at the first op that reads it
    [line] = _gpu_lines(r)
    assert line.startswith("GPU delegate would not run: ")
    assert "SHAPE (op #" in line and "RESHAPE (op #" in line and "dynamic tensor T#0" in line
    assert mobile_checks.failures(r) == []  # gpu not required: no line


def test_flex_op_fails_the_gpu_rules_naming_it(tmp_path, flex_model):
    r = mobile_checks.check(_write(tmp_path, "flex.tflite", flex_model), full_integer=False)
    assert r["builtin_ops_only"] is False
    assert r["custom_ops"] == ["FlexCosh"] and r["ops"]["FlexCosh"] == 1
    assert any("FlexCosh" in f and "custom/Flex" in f for f in mobile_checks.failures(r))
    assert r["gpu_compatible"] is False
    assert r["gpu_incompatible_ops"] == [
        {"subgraph": 0, "node": 0, "op": "FlexCosh",
         "why": "Flex op FlexCosh (a TensorFlow kernel): the GPU delegate runs builtin ops only"}]
    assert _gpu_lines(r) == ["GPU delegate would not run: FlexCosh (op #0): Flex op FlexCosh (a TensorFlow kernel): "
                             "the GPU delegate runs builtin ops only"]


def _edited(flatbuffer, edit):
    """The model changed through LiteRT's object API (ModelT) and re-serialized."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu
    model = fbu.read_model_from_bytearray(bytearray(flatbuffer))
    edit(model, fbu)
    return fbu.convert_object_to_bytearray(model)


def test_an_op_version_above_the_tables_max_fails_naming_op_and_version(tmp_path, fp32_model):
    top = gpu_rules.MAX_VERSION["CONV_2D"]

    def bump(model, fbu):
        for code in model.operatorCodes:
            if fbu.get_builtin_code_from_operator_code(code) == fbu.BuiltinOperator.CONV_2D:
                code.version = top + 1
    r = mobile_checks.check(_write(tmp_path, "v7.tflite", _edited(fp32_model, bump)), full_integer=False)
    assert r["gpu_compatible"] is False
    assert [(o["op"], o["node"]) for o in r["gpu_incompatible_ops"]] == [("CONV_2D", 0), ("CONV_2D", 1)]
    why = f"CONV_2D v{top + 1}: the GPU delegate takes up to v{top}"
    assert all(o["why"] == why for o in r["gpu_incompatible_ops"])
    assert f"CONV_2D (op #0): {why}" in _gpu_lines(r)[0]

    def at_max(model, fbu):
        bump(model, fbu)
        for code in model.operatorCodes:
            if code.version == top + 1:
                code.version = top
    assert mobile_checks.check(_write(tmp_path, "v6.tflite", _edited(fp32_model, at_max)), False)["gpu_compatible"]


def test_a_rank_5_tensor_fails(tmp_path, fp32_model):
    def rank5(model, fbu):
        sub = model.subgraphs[0]
        t = sub.tensors[sub.operators[-1].outputs[0]]  # SOFTMAX's output [1, 10]
        t.shape, t.shapeSignature = [1, 1, 1, 1, 10], None
    r = mobile_checks.check(_write(tmp_path, "rank5.tflite", _edited(fp32_model, rank5)), full_integer=False)
    assert [o["op"] for o in r["gpu_incompatible_ops"]] == ["SOFTMAX"]
    assert "has rank 5 (the delegate takes up to 4)" in r["gpu_incompatible_ops"][0]["why"]


def test_the_rules_table_names_real_litert_ops_and_types():
    from ai_edge_litert import schema_py_generated as schema
    ops, types = set(vars(schema.BuiltinOperator)), set(vars(schema.TensorType))
    named = set(gpu_rules.MAX_VERSION) | set(gpu_rules.RUNTIME_INPUTS) | set(gpu_rules.RUNTIME_SHAPE_OPS) \
        | set(gpu_rules.EXTRA_INPUT_TYPES) | set(gpu_rules.EXTRA_OUTPUT_TYPES)
    assert named <= ops, named - ops
    assert set(gpu_rules.RUNTIME_INPUTS) <= set(gpu_rules.MAX_VERSION)
    assert gpu_rules.RUNTIME_TYPES | set().union(*gpu_rules.EXTRA_INPUT_TYPES.values(),
                                                 *gpu_rules.EXTRA_OUTPUT_TYPES.values()) <= types
    assert "SHAPE" not in gpu_rules.MAX_VERSION and all(v is None or v >= 1 for v in gpu_rules.MAX_VERSION.values())


def test_appended_labels_zip_is_ignored(tmp_path, int8_model):
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(int8_model)
    zipped = _write(tmp_path, "zipped.tflite", int8_model)
    assert zipped.stat().st_size > bare.stat().st_size
    assert mobile_checks.check(zipped, True) == mobile_checks.check(bare, True)


def test_unreadable_flatbuffer_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(PipelineError, match="broken.tflite") as info:
        mobile_checks.check(bad, True)
    assert "\n" not in str(info.value)


def test_a_manifest_from_before_the_rules_check_still_fails_a_required_gpu_check():
    old = {"builtin_ops_only": True, "custom_ops": [], "integer_io": None, "gpu_compatible": None,
           "gpu_incompatible_ops": None, "gpu_unchecked_why": "this analyzer build skips the GPU check"}
    assert mobile_checks.failures(old, required=("gpu",)) == [
        "GPU delegate compatibility could not be checked: this analyzer build skips the GPU check"]
    assert mobile_checks.failures(old) == []


# ---------------------------------------------------------------- CompiledModel on a GPU (recorded, not gated)

def test_compiled_model_on_this_machine_is_quick_quiet_and_says_what_it_found(tmp_path, fp32_model, capfd,
                                                                             monkeypatch):
    monkeypatch.setattr(mobile_checks, "_no_gpu_why", [None])  # ask the real runtime, not the cache
    capfd.readouterr()
    g = mobile_checks.gpu_runtime(_write(tmp_path, "fp32.tflite", fp32_model))
    assert capfd.readouterr() == ("", "")  # LiteRT's and Dawn's native logging stays in the child
    if g["gpu_found"]:
        assert g["accelerator"] in ("GPU", "GPU|CPU") and isinstance(g["is_fully_accelerated"], bool), g
    else:  # a machine without a GPU (this one: WebGPU finds no adapter) says so
        assert g["why"], g
        assert set(g) == {"gpu_found", "why"}


def test_a_found_gpu_records_is_fully_accelerated_and_is_never_a_gate(tmp_path, fp32_model, monkeypatch):
    monkeypatch.setattr(mobile_checks, "_no_gpu_why", [None])
    found = (0, 'log\n{"created": "GPU|CPU", "fully": false}\n', "")
    monkeypatch.setattr(mobile_checks, "_run_probe", lambda path: found)
    r = mobile_checks.check(_write(tmp_path, "fp32.tflite", fp32_model), False)
    assert r["gpu_runtime"] == {"gpu_found": True, "accelerator": "GPU|CPU", "is_fully_accelerated": False}
    assert mobile_checks.failures(r, required=mobile_checks.CHECKS) == []  # the rules pass; the runtime is no gate


NO_ADAPTER = ("ERROR: [delegate_webgpu.cc:359] Failed to initialize WebGPU environment: INTERNAL: No adapters found\n"
              "E0000 delegate_webgpu.cc:736] Failed to get or create delegate WebGPU environment\n")


def test_no_gpu_is_asked_once_per_process_and_a_hang_is_bounded(tmp_path, monkeypatch):
    calls = []

    def no_gpu(path):
        calls.append(path)
        return 0, '\n{"errors": ["GPU: RuntimeError", "GPU|CPU: RuntimeError"]}\n', NO_ADAPTER
    monkeypatch.setattr(mobile_checks, "_no_gpu_why", [None])
    monkeypatch.setattr(mobile_checks, "_run_probe", no_gpu)
    first = mobile_checks.gpu_runtime(tmp_path / "a.tflite")
    assert first["gpu_found"] is False and "No adapters found" in first["why"]
    assert mobile_checks.gpu_runtime(tmp_path / "b.tflite") == first and len(calls) == 1

    def hangs(path):
        raise subprocess.TimeoutExpired("python", mobile_checks.GPU_PROBE_SECONDS)
    monkeypatch.setattr(mobile_checks, "_no_gpu_why", [None])
    monkeypatch.setattr(mobile_checks, "_run_probe", hangs)
    g = mobile_checks.gpu_runtime(tmp_path / "a.tflite")
    assert g["gpu_found"] is None and f"{mobile_checks.GPU_PROBE_SECONDS}s" in g["why"]
    monkeypatch.setattr(mobile_checks, "_run_probe", lambda path: (-11, "", "Segmentation fault"))
    assert mobile_checks.gpu_runtime(tmp_path / "a.tflite") == {
        "gpu_found": None, "why": "the GPU probe exited -11: Segmentation fault"}
