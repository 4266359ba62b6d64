"""checkpoint.load: float32 out of any policy, known presets only, nothing from the file runs."""
import numpy as np
import pytest

from pipeline import checkpoint
from pipeline.errors import PipelineError


def _save(model, path):
    model.save(path)
    return path


def _tiny(input_shape=(32, 32, 3), units=10):
    import keras
    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten()(inp)
    return keras.Model(inp, keras.layers.Dense(units, activation="softmax")(x))


def _assert_error(path, *words):
    with pytest.raises(PipelineError) as e:
        checkpoint.load(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.fixture(scope="module")
def float32_checkpoint(tmp_path_factory):
    """A resnet20v1 .h5 with random weights and BN statistics (not the fresh-init ones), so outputs vary."""
    import keras
    from pipeline.model import build_preset
    keras.utils.set_random_seed(2)
    model = build_preset("resnet20v1")
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32) if w.ndim == 1 else w
                       for w in model.get_weights()])
    return _save(model, tmp_path_factory.mktemp("ckpt") / "random.h5")


def test_float32_checkpoint_roundtrip(float32_checkpoint, calibration):
    import keras
    model, preset = checkpoint.load(float32_checkpoint)
    assert preset == "resnet20v1"
    assert all(w.dtype == "float32" for w in model.weights)
    assert model.input.name == "image" or model.layers[0].name == "image"
    x = calibration.images[:64].astype(np.float32)
    saved = keras.models.load_model(float32_checkpoint, compile=False)
    want = np.asarray(saved(x, training=False))
    got = np.asarray(model(x, training=False))
    assert np.allclose(got, want, atol=1e-5)
    assert want.std(axis=1).mean() > 1e-3  # outputs are not uniform, so the comparison means something
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved.get_weights()))


def test_mixed_bfloat16_checkpoint_loads_as_float32(tmp_path, calibration):
    import keras
    from pipeline.model import build_preset
    keras.utils.set_random_seed(1)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bf16 = build_preset("resnet20v1")
        assert bf16.layers[3].dtype_policy.name == "mixed_bfloat16"
        path = _save(bf16, tmp_path / "bf16.h5")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model, preset = checkpoint.load(path)
    assert preset == "resnet20v1"
    assert {layer.dtype_policy.name for layer in model.layers if hasattr(layer, "dtype_policy")} == {"float32"}
    assert all(w.dtype == "float32" for w in model.weights)
    x = calibration.images[:32].astype(np.float32)
    got = np.asarray(model(x, training=False))
    assert got.dtype == np.float32
    # the same weights in a float32 build give the same predictions
    reference = build_preset("resnet20v1")
    reference.set_weights(bf16.get_weights())
    assert np.allclose(got, np.asarray(reference(x, training=False)), atol=1e-5)
    # and the bf16 model itself agrees up to bfloat16 rounding
    assert np.abs(got - np.asarray(bf16(x, training=False), np.float32)).max() < 0.05


def test_seed_preset_identified(tmp_path):
    from pipeline.model import build_preset
    path = _save(build_preset("seed"), tmp_path / "seed.keras")  # the native format works too
    model, preset = checkpoint.load(path)
    assert preset == "seed" and model.count_params() == 792_330


def test_refuses_lambda_without_running_it(tmp_path):
    import keras
    marker = tmp_path / "lambda_ran"
    marker_name = str(marker)  # the lambda's closure is saved with it
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Lambda(lambda t: (open(marker_name, "w").close(), t)[1], output_shape=(32, 32, 3))(inp)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x)))
    marker.unlink(missing_ok=True)  # building the model traced the lambda once
    path = _save(model, tmp_path / "lambda.h5")
    assert not marker.exists()
    _assert_error(path, "cannot load as a Keras model", "Lambda")
    assert not marker.exists(), "the checkpoint's code ran"
    # control: the marker does catch the code running once Keras is told to trust the file
    unsafe = keras.models.load_model(path, compile=False, safe_mode=False)
    unsafe(np.zeros((1, 32, 32, 3), np.float32))
    assert marker.exists()


def test_bad_checkpoints(tmp_path):
    import h5py
    (tmp_path / "text.h5").write_text("not a model")
    _assert_error(tmp_path / "text.h5", "not an HDF5 file")
    (tmp_path / "junk.keras").write_bytes(b"PK junk")
    _assert_error(tmp_path / "junk.keras", "cannot load")
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["x"] = np.zeros(3)
    _assert_error(tmp_path / "data.h5", "cannot load")
    _assert_error(tmp_path / "missing.h5", "not found")
    (tmp_path / "folder.h5").mkdir()
    _assert_error(tmp_path / "folder.h5", "folder")
    _assert_error(_save(_tiny((28, 28, 1)), tmp_path / "mnist.h5"), "input shape (28, 28, 1)", "(32, 32, 3)")
    _assert_error(_save(_tiny(units=5), tmp_path / "five.h5"), "output shape (5,)")
    _assert_error(_save(_tiny(), tmp_path / "mlp.h5"), "matches no model preset", "seed", "resnet20v1")


def _h5_with_config(path, config):
    """An .h5 whose stored model config is `config` (no weights): what a hostile file can declare."""
    import json

    import h5py
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
    return path


def test_a_huge_layer_in_the_config_is_refused_before_anything_is_built(tmp_path):
    """A 10 KB file declaring Dense(100000) layers would take gigabytes if built: refused from its config."""
    import json
    import resource

    import keras
    from pipeline.model import build_preset
    config = json.loads(json.dumps({"class_name": "Functional", "config": build_preset("resnet20v1").get_config()}))
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Conv2D":
            layer["config"]["filters"] = 100_000
    path = _h5_with_config(tmp_path / "huge.h5", config)
    assert path.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _assert_error(path, "matches no model preset")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: nothing big was built
    del keras


def test_the_preset_a_resolved_config_declares_is_the_one_loaded(tmp_path):
    import json

    from pipeline.model import build_preset
    path = _save(build_preset("resnet20v1"), tmp_path / "model.h5")
    (tmp_path / "config.resolved.json").write_text(json.dumps({"model": {"preset": "seed"}}))
    assert checkpoint.load(path)[1] == "resnet20v1"  # no run.json: an export's config, not the checkpoint's
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "config.resolved.json").write_text(json.dumps({"model": {"preset": "resnet20v1"}}))
    assert checkpoint.load(path)[1] == "resnet20v1"
    (tmp_path / "config.resolved.json").write_text(json.dumps({"model": {"preset": "seed"}}))
    _assert_error(path, "is not the 'seed' preset", "config.resolved.json")
    (tmp_path / "config.resolved.json").write_text(json.dumps({"model": {"preset": "resnet50"}}))
    with pytest.raises(PipelineError, match="config.resolved.json.*'resnet50' is not a model preset"):
        checkpoint.load(path)


def test_the_reference_folder_declares_its_preset():
    from pathlib import Path
    ref = Path(__file__).resolve().parent.parent / "models" / "reference" / "model.h5"
    assert checkpoint.declared_preset(ref) == "seed"


def test_nan_weights_are_refused(tmp_path):
    from pipeline.model import build_preset
    model = build_preset("resnet20v1")
    model.set_weights([np.full_like(w, np.nan) if i == 0 else w for i, w in enumerate(model.get_weights())])
    _assert_error(_save(model, tmp_path / "nan.h5"), "NaN")
