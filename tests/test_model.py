"""The model presets: exact parameter counts, the seed's layers, preprocessing inside the model."""
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.model import CIFAR10_MEAN, CIFAR10_STD, CLASSES, INPUT_SHAPE, build_preset, param_counts


@pytest.fixture(scope="module")
def seed():
    return build_preset("seed")


def _kinds(model):
    return Counter(type(layer).__name__ for layer in model.layers)


def test_seed_parameter_counts(seed):
    assert param_counts(seed) == {"total": 792_330, "trainable": 790_090, "non_trainable": 2_240}


def test_resnet20v1_parameter_count():
    model = build_preset("resnet20v1")
    assert model.count_params() == 274_442
    # 3 stages of 3 blocks: 1 stem + 18 block convs + 2 shortcut convs, a BN after every non-shortcut conv
    assert _kinds(model)["Conv2D"] == 21 and _kinds(model)["BatchNormalization"] == 19


def test_seed_layers(seed):
    """Layer for layer the seed's resnet_v1 with blocks (3, 3, 2) and widths (32, 64, 128).

    Conv2D: 1 stem + 2 per block x 8 blocks + 2 shortcuts = 19 (792,330 params needs exactly these).
    """
    kinds = _kinds(seed)
    assert kinds["Conv2D"] == 19
    assert kinds["BatchNormalization"] == 17
    assert kinds["Dense"] == 1 and kinds["Add"] == 8 and kinds["Flatten"] == 1
    assert kinds["AveragePooling2D"] == 1 and kinds["Rescaling"] == 2
    assert kinds["Activation"] == 1 + 8 + 8  # ReLU after the stem, the 1st conv of each block, each add
    convs = Counter((layer.kernel_size, layer.filters, layer.strides)
                    for layer in seed.layers if type(layer).__name__ == "Conv2D")
    assert convs == {((3, 3), 32, (1, 1)): 7,
                     ((3, 3), 64, (2, 2)): 1, ((3, 3), 64, (1, 1)): 5, ((1, 1), 64, (2, 2)): 1,
                     ((3, 3), 128, (2, 2)): 1, ((3, 3), 128, (1, 1)): 3, ((1, 1), 128, (2, 2)): 1}
    for layer in seed.layers:
        if type(layer).__name__ == "Conv2D":
            assert layer.padding == "same"
            assert type(layer.kernel_initializer).__name__ == "HeNormal"
            assert layer.kernel_regularizer is None  # no penalty unless the recipe passes one
    from pipeline.config import Recipe
    trained = build_preset("seed", l2=Recipe.l2)  # what train builds: the recipe's L2 on every conv kernel
    regs = [layer.kernel_regularizer for layer in trained.layers if type(layer).__name__ == "Conv2D"]
    assert len(regs) == 19 and all(float(r.l2) == pytest.approx(5e-4) for r in regs)
    assert all(type(layer).__name__ != "Dense" or layer.kernel_regularizer is None for layer in trained.layers)
    assert all(getattr(layer, "bias_regularizer", None) is None and getattr(layer, "gamma_regularizer", None) is None
               for layer in trained.layers)  # the default scope: no penalty on biases or batch norm
    # shortcut convs have no BN: each 1x1 conv feeds an Add directly
    for layer in seed.layers:
        if type(layer).__name__ == "Conv2D" and layer.kernel_size == (1, 1):
            consumers = [n.operation for n in layer._outbound_nodes]
            assert [type(c).__name__ for c in consumers] == ["Add"]
    pool = next(layer for layer in seed.layers if type(layer).__name__ == "AveragePooling2D")
    assert pool.pool_size == (8, 8) and tuple(pool.input.shape[1:]) == (8, 8, 128)
    dense = seed.get_layer("probabilities")
    assert dense.units == 10 and dense.activation.__name__ == "softmax"
    assert tuple(dense.input.shape[1:]) == (128,)


def test_interface(seed):
    assert seed.inputs[0].name == "image" or seed.layers[0].name == "image"
    assert tuple(seed.inputs[0].shape[1:]) == INPUT_SHAPE == (32, 32, 3)
    assert tuple(seed.outputs[0].shape[1:]) == (10,) and len(CLASSES) == 10
    assert seed.get_layer("probabilities").dtype_policy.name == "float32"
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    probs = np.asarray(seed(raw, training=False))
    assert probs.shape == (4, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_preprocessing_is_inside_the_model(seed, calibration):
    """Raw 0..255 pixels in; the `normalize` layer's output has ~zero mean and ~unit std per channel."""
    import keras
    normalize = keras.Model(seed.input, seed.get_layer("normalize").output)
    mean_pixel = np.asarray(CIFAR10_MEAN, np.float32) * 255
    one_std_up = (np.asarray(CIFAR10_MEAN) + np.asarray(CIFAR10_STD)).astype(np.float32) * 255
    out = np.asarray(normalize(np.stack([np.full(INPUT_SHAPE, mean_pixel), np.full(INPUT_SHAPE, one_std_up)])))
    assert np.allclose(out[0], 0.0, atol=1e-5) and np.allclose(out[1], 1.0, atol=1e-5)
    # on real training images (the committed calibration subset) the statistics hold
    x = np.asarray(normalize(calibration.images.astype(np.float32)))
    assert np.all(np.abs(x.mean(axis=(0, 1, 2))) < 0.05), x.mean(axis=(0, 1, 2))
    assert np.all(np.abs(x.std(axis=(0, 1, 2)) - 1) < 0.05), x.std(axis=(0, 1, 2))
    # the constants live in the config (no weights): every exporter sees them
    cfg = seed.get_layer("normalize").get_config()
    assert cfg["scale"] == pytest.approx([1 / s for s in CIFAR10_STD])
    assert seed.get_layer("to_unit_range").get_config()["scale"] == pytest.approx(1 / 255)
    assert not seed.get_layer("normalize").weights


def test_unknown_preset():
    with pytest.raises(PipelineError, match="unknown model preset 'resnet50'"):
        build_preset("resnet50")


def test_data_loader_does_not_import_keras():
    # `python -m pipeline data` must start fast and print only its own lines on stderr
    code = "import sys, pipeline.data, pipeline.model; assert 'keras' not in sys.modules, 'keras imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert r.returncode == 0, r.stderr


def test_l2_on_every_weight_keeps_the_architecture():
    """l2_scope = "all" (a recipe proxy): a penalty on every kernel, bias and BN scale/offset, and nothing
    else changes: same parameter count, same layers, loadable as the same preset."""
    import json

    from pipeline import checkpoint
    every = build_preset("seed", l2=5e-4, l2_scope="all")
    assert every.count_params() == 792_330
    penalised = sum(getattr(layer, attr) is not None for layer in every.layers
                    for attr in ("kernel_regularizer", "bias_regularizer", "gamma_regularizer", "beta_regularizer")
                    if hasattr(layer, attr))
    assert penalised == 19 * 2 + 17 * 2 + 2  # conv kernel + bias, BN gamma + beta, the dense kernel + bias
    assert checkpoint._signature({"config": json.loads(json.dumps(every.get_config()))}) == \
        checkpoint._preset_signature("seed")
