"""train.fused_batchnorm: the fused training call does Keras' batch norm math, and really runs fused."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("fused batch norm is a TensorFlow-backend training path", allow_module_level=True)
import tensorflow as tf  # noqa: E402

from train.fused_batchnorm import fuse_batchnorm  # noqa: E402


def twin_models():
    """Two conv + BN + ReLU models with the same weights, the second fused."""
    def build():
        x = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(6, 3, padding="same")(x)
        h = keras.layers.BatchNormalization(momentum=0.9)(h)
        return keras.Model(x, keras.layers.ReLU()(h))
    plain, fused = build(), build()
    rng = np.random.default_rng(0)
    weights = [rng.normal(0.5, 1, w.shape).astype(np.float32) for w in plain.get_weights()]
    weights[-1] = np.abs(weights[-1])  # moving variance
    plain.set_weights(weights)
    fused.set_weights(weights)
    assert fuse_batchnorm(fused) == 1
    return plain, fused, weights


def train_step(model, x):
    with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = tf.reduce_sum(y * tf.range(1.0, 7.0))
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def test_fused_training_step_matches_keras_batchnorm():
    plain, fused, weights = twin_models()
    x = np.random.default_rng(1).normal(2, 3, (16, 8, 8, 3)).astype(np.float32)
    (y_plain, g_plain), (y_fused, g_fused) = train_step(plain, x), train_step(fused, x)
    np.testing.assert_allclose(y_fused, y_plain, atol=2e-4)
    assert len(g_fused) == len(g_plain) == 4  # kernel, bias, gamma, beta: gradients reach every variable
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)
    bn_plain, bn_fused = plain.layers[2], fused.layers[2]
    np.testing.assert_allclose(bn_fused.moving_mean.numpy(), bn_plain.moving_mean.numpy(), rtol=1e-4, atol=1e-5)
    n = 16 * 8 * 8  # the fused kernel's batch variance is unbiased: n / (n - 1) x Keras'
    batch_var = (bn_plain.moving_variance.numpy() - 0.9 * weights[-1]) / 0.1
    np.testing.assert_allclose(bn_fused.moving_variance.numpy(), 0.9 * weights[-1] + 0.1 * batch_var * n / (n - 1),
                               rtol=1e-5)


def test_inference_is_untouched():
    plain, fused, _ = twin_models()
    x = np.random.default_rng(2).normal(0, 1, (4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(fused(x, training=False).numpy(), plain(x, training=False).numpy())


def test_the_training_graph_runs_the_fused_kernel():
    _, fused, _ = twin_models()
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 8, 8, 3), tf.float32)).graph
    assert any(op.type.startswith("FusedBatchNorm") for op in graph.get_operations())


def test_bfloat16_inputs_keep_float32_statistics():
    x = keras.Input((8, 8, 3), dtype="bfloat16")
    bn = keras.layers.BatchNormalization(dtype="mixed_bfloat16")
    model = keras.Model(x, bn(x))
    assert fuse_batchnorm(model) == 1
    data = tf.constant(np.random.default_rng(3).normal(5, 2, (8, 8, 8, 3)), tf.bfloat16)
    y = model(data, training=True)
    assert y.dtype == tf.bfloat16 and bn.moving_mean.dtype == "float32"
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.01 * 5, atol=0.01)  # momentum 0.99 step from 0
