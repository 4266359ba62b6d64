"""pipeline.mobile_checks on tiny models converted here (seconds): builtin-only, integer I/O, GPU verdict.

The pinned TF 2.21 analyzer skips its GPU check, so the GPU verdict path is driven with reports
recorded from a build that runs it (TF 2.15.1's analyzer, on the very models converted here)."""
import numpy as np
import pytest

from pipeline import mobile_checks
from pipeline.artifacts import ARTIFACTS
from export.tflite_export import configure, with_labels
from pipeline.errors import PipelineError

RNG = np.random.default_rng(0)
FILTER = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
DENSE = RNG.normal(size=(4, 10)).astype(np.float32)
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


def _tiny_cnn(x):
    import tensorflow as tf
    y = tf.nn.relu(tf.nn.conv2d(x / 255.0, FILTER, strides=1, padding="SAME"))
    return tf.nn.softmax(tf.reduce_mean(y, axis=[1, 2]) @ DENSE)


def _cosh(x):
    import tensorflow as tf
    return tf.cosh(x) + 1.0  # tf.cosh has no TFLite builtin: only SELECT_TF_OPS converts it


def _write(tmp_path, name, flatbuffer):
    """As the exporter writes it: flatbuffer + appended labels zip."""
    path = tmp_path / name
    path.write_bytes(with_labels(flatbuffer, "a\nb\n"))
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
def flex_model():
    import tensorflow as tf
    return _convert(_cosh, tf.TensorSpec([1, 4], tf.float32), flex=True)


# Recorded from TF 2.15.1's analyzer (the last checked build that runs CheckGpuDelegateCompatibility),
# trimmed of the tensor and size sections the parser skips.
FLEX_REPORT_215 = """\
Subgraph#0 main(T#0) -> [T#3]
  Op#0 FlexCosh(T#0) -> [T#2]
GPU COMPATIBILITY WARNING: Not supported custom op FlexCosh
  Op#1 ADD(T#2, T#1) -> [T#3]

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 0 on TFLite runtime version 2.15.1

Tensors of Subgraph#0
"""
CNN_REPORT_215 = """\
Subgraph#0 main(T#0) -> [T#8]
  Op#0 CONV_2D(T#0, T#4, T#1) -> [T#5]
  Op#1 MEAN(T#5, T#3[1, 2]) -> [T#6]
  Op#2 FULLY_CONNECTED(T#6, T#2, T#-1) -> [T#7]
  Op#3 SOFTMAX(T#7) -> [T#8]

Tensors of Subgraph#0


Your model looks compatible with GPU delegate on TFLite runtime version 2.15.1.
This does not guarantee that your model will work well with GPU delegate because there could still be runtime incompatibililties.
"""
# The pinned build's report on the same Flex model: no warning, a "compatible" verdict.
FLEX_REPORT_PINNED = FLEX_REPORT_215.replace(
    "GPU COMPATIBILITY WARNING: Not supported custom op FlexCosh\n", "").replace(
    "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 0 on TFLite runtime "
    "version 2.15.1\n", "Your model looks compatible with GPU delegate on TFLite runtime version 2.21.0.\n")


def _real_gpu_checker(monkeypatch, report):
    """As on a build whose analyzer runs the GPU check and says `report`."""
    monkeypatch.setattr(mobile_checks, "gpu_check_effective", lambda: True)
    monkeypatch.setattr(mobile_checks, "analyze", lambda **_: report)


def test_full_integer_model_is_builtin_with_integer_io(tmp_path, int8_model):
    r = mobile_checks.check(_write(tmp_path, "int8.tflite", int8_model), full_integer=True)
    assert r["builtin_ops_only"] is True and r["custom_ops"] == []
    assert r["integer_io"] is True
    assert (r["input_dtype"], r["output_dtype"]) == ("uint8", "uint8")
    assert r["ops"]["CONV_2D"] == 1 and "QUANTIZE" in r["ops"]
    assert mobile_checks.failures(r) == []


def test_float_io_fails_the_full_integer_check(tmp_path, fp32_model):
    path = _write(tmp_path, "fp32.tflite", fp32_model)
    r = mobile_checks.check(path, ARTIFACTS["tflite_qat_int8"].integer_io)  # full-integer kind, float32 I/O
    assert r["integer_io"] is False and r["input_dtype"] == "float32"
    assert any("non-integer I/O" in f and "float32" in f for f in mobile_checks.failures(r))
    assert mobile_checks.failures(r, required=("builtin_ops",)) == []  # not required: never fails
    assert mobile_checks.check(path, ARTIFACTS["tflite_dynamic_int8"].integer_io)["integer_io"] is None  # float I/O is right
    with pytest.raises(PipelineError):
        mobile_checks.failures(r, required=("gpu_delegate",))


def test_flex_op_is_flagged_and_the_gpu_verdict_is_never_a_silent_pass(tmp_path, flex_model):
    r = mobile_checks.check(_write(tmp_path, "flex.tflite", flex_model), full_integer=False)
    assert r["builtin_ops_only"] is False
    assert r["custom_ops"] == ["FlexCosh"] and r["ops"]["FlexCosh"] == 1
    assert any("FlexCosh" in f and "custom/Flex" in f for f in mobile_checks.failures(r))
    # whatever this build's analyzer does, a Flex model is never reported GPU-compatible
    if mobile_checks.gpu_check_effective():
        assert r["gpu_compatible"] is False and "FlexCosh" in [o["op"] for o in r["gpu_incompatible_ops"]]
    else:
        assert r["gpu_compatible"] is None and r["gpu_incompatible_ops"] is None
        assert "tf.lite.experimental.Analyzer" in r["gpu_unchecked_why"]


def test_gpu_check_flags_the_flex_op(tmp_path, flex_model, monkeypatch):
    _real_gpu_checker(monkeypatch, FLEX_REPORT_215)
    r = mobile_checks.check(_write(tmp_path, "flex.tflite", flex_model), full_integer=False)
    assert r["gpu_compatible"] is False and "gpu_unchecked_why" not in r
    assert r["gpu_incompatible_ops"] == [
        {"subgraph": 0, "node": 0, "op": "FlexCosh", "why": "Not supported custom op FlexCosh"}]
    assert mobile_checks.failures(r, required=("gpu",)) == [
        "GPU delegate would not run: FlexCosh (op #0): Not supported custom op FlexCosh"]
    assert not [f for f in mobile_checks.failures(r) if "GPU" in f]  # gpu not required


def test_gpu_friendly_model_passes(tmp_path, fp32_model, monkeypatch):
    _real_gpu_checker(monkeypatch, CNN_REPORT_215)
    r = mobile_checks.check(_write(tmp_path, "fp32.tflite", fp32_model), full_integer=False)
    assert (r["gpu_compatible"], r["gpu_incompatible_ops"]) == (True, [])
    assert mobile_checks.failures(r, required=mobile_checks.CHECKS) == []


def test_required_gpu_fails_when_it_cannot_be_checked(tmp_path, fp32_model, monkeypatch):
    monkeypatch.setattr(mobile_checks, "gpu_check_effective", lambda: False)
    monkeypatch.setattr(mobile_checks, "analyze", lambda **_: pytest.fail("an ineffective check must not be run"))
    r = mobile_checks.check(_write(tmp_path, "fp32.tflite", fp32_model), full_integer=False)
    assert r["gpu_compatible"] is None and r["gpu_unchecked_why"]
    assert mobile_checks.failures(r, required=mobile_checks.CHECKS) == [
        f"GPU delegate compatibility could not be checked: {r['gpu_unchecked_why']}"]
    assert mobile_checks.failures(r) == []  # not required: no line


def test_effectiveness_probe_tells_a_checking_analyzer_from_a_silent_one(monkeypatch):
    probe = mobile_checks.gpu_check_effective.__wrapped__  # uncached
    monkeypatch.setattr(mobile_checks, "analyze", lambda **_: FLEX_REPORT_215)
    assert probe() is True
    monkeypatch.setattr(mobile_checks, "analyze", lambda **_: FLEX_REPORT_PINNED)
    assert probe() is False


def test_appended_labels_zip_is_ignored(tmp_path, int8_model):
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(int8_model)
    zipped = _write(tmp_path, "zipped.tflite", int8_model)
    assert zipped.stat().st_size > bare.stat().st_size
    assert mobile_checks.check(zipped, True) == mobile_checks.check(bare, True)
    # the analyzer reads the same graph from the zipped file as from the bare bytes
    ops = lambda text: [line for line in text.splitlines() if line.lstrip().startswith("Op#")]  # noqa: E731
    assert ops(mobile_checks.analyze(model_path=zipped)) == ops(mobile_checks.analyze(model_content=int8_model))
    assert ops(mobile_checks.analyze(model_path=zipped))


# TF 2.15.1's analyzer on a dynamic-batch Flatten (SHAPE, STRIDED_SLICE, PACK, RESHAPE), as in the
# exported ResNet's head.
FLATTEN_REPORT_215 = """\
Subgraph#0 main(T#0) -> [T#7]
  Op#0 SHAPE(T#0) -> [T#4]
GPU COMPATIBILITY WARNING: Not supported op SHAPE
  Op#1 STRIDED_SLICE(T#4, T#2[0], T#3[1], T#3[1]) -> [T#5]
GPU COMPATIBILITY WARNING: Slice does not support shrink_axis_mask parameter. 
  Op#2 PACK(T#5, T#1[-1]) -> [T#6]
  Op#3 RESHAPE(T#0, T#6) -> [T#7]
GPU COMPATIBILITY WARNING: Expected 1 runtime input tensor(s), but node has 2 runtime input(s).

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 0, 1, 3 on TFLite runtime version 2.15.1

Tensors of Subgraph#0
"""


def test_gpu_report_parses_warnings_per_op():
    compatible, ops = mobile_checks.gpu_report(FLATTEN_REPORT_215)
    assert compatible is False
    assert ops == [
        {"subgraph": 0, "node": 0, "op": "SHAPE", "why": "Not supported op SHAPE"},
        {"subgraph": 0, "node": 1, "op": "STRIDED_SLICE", "why": "Slice does not support shrink_axis_mask parameter."},
        {"subgraph": 0, "node": 3, "op": "RESHAPE",
         "why": "Expected 1 runtime input tensor(s), but node has 2 runtime input(s)."}]
    assert mobile_checks.gpu_report(CNN_REPORT_215) == (True, [])
    assert mobile_checks.gpu_report(FLEX_REPORT_PINNED) == (True, [])  # what the pinned build says
    with pytest.raises(PipelineError):
        mobile_checks.gpu_report("Subgraph#0 main(T#0) -> [T#1]\n")  # no verdict: format changed


def test_unreadable_flatbuffer_is_one_line_naming_the_file(tmp_path):
    from pipeline.errors import PipelineError
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(PipelineError, match="broken.tflite") as info:
        mobile_checks.check(bad, True)
    assert "\n" not in str(info.value)
