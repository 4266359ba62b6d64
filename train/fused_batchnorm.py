"""Train Keras BatchNormalization layers through TensorFlow's fused kernel (oneDNN on x86 CPUs).

Keras 3 computes batch norm from separate ops (cast to float32, two reductions, broadcasts; the
gradient as many again): on this CPU they were a third of a training step, as much as the backward
convolutions (benchmarks/train_step_profile.py). tf.nn.fused_batch_norm does the same math in one
pass forward and one backward, on bfloat16 inputs with float32 statistics. Only the training call
changes: layers keep their class, weights and inference path, so checkpoints and exports are as before.
"""
import types

import keras


def _fused_training_call(self, inputs, training=None, mask=None):
    """BatchNormalization.call, fused while training; the layer's own call otherwise."""
    if not (training and self.trainable) or mask is not None:
        return type(self).call(self, inputs, training=training, mask=mask)
    import tensorflow as tf
    channels = inputs.shape[-1]
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, tf.cast(self.gamma, tf.float32) if self.scale else tf.ones(channels),
        tf.cast(self.beta, tf.float32) if self.center else tf.zeros(channels),
        mean=tf.cast(self.moving_mean, tf.float32), variance=tf.cast(self.moving_variance, tf.float32),
        epsilon=self.epsilon, data_format="NHWC", is_training=True,
        exponential_avg_factor=1.0 - self.momentum)  # returns the updated moving statistics
    self.moving_mean.assign(mean)
    self.moving_variance.assign(variance)  # the kernel's batch variance is unbiased (n / (n - 1)); Keras' is not
    return y


def fuse_batchnorm(model):
    """Make every fusable BatchNormalization of `model` train through the fused kernel; how many.
    TensorFlow backend only (other backends: 0, nothing changed)."""
    if keras.backend.backend() != "tensorflow":
        return 0
    fused = 0
    for layer in model._flatten_layers():
        if (isinstance(layer, keras.layers.BatchNormalization) and layer.axis in (-1, 3) and not layer.renorm
                and len(layer.input.shape) == 4 and not layer.synchronized):
            layer.call = types.MethodType(_fused_training_call, layer)
            fused += 1
    return fused
