"""Quantization-aware training (tensorflow-model-optimization) -> full-integer int8 TFLite.

tfmot only speaks tf_keras (Keras 2), so the network is rebuilt layer for layer in
tf_keras from the preset, the float32 weights are copied (and checked by comparing
outputs), `quantize_model` inserts fake-quant ops, and a short fine-tune, bounded by
wall time, lets the weights adapt to int8. Off by default: on 2 CPU cores the budget
buys little training (see the report for whether it beats post-training int8).
"""
import time

import numpy as np

from pipeline.errors import PipelineError
from pipeline.model import CIFAR10_MEAN, CIFAR10_STD, PRESETS


def build_tf_keras(preset, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    """pipeline.model.build_resnet, in tf_keras, creating layers in the same order (same weight order)."""
    import tf_keras as k
    L = k.layers
    blocks, widths = PRESETS[preset]["blocks"], PRESETS[preset]["widths"]

    def conv_bn(x, filters, kernel_size=3, strides=1, activation="relu", batch_norm=True):
        x = L.Conv2D(filters, kernel_size, strides=strides, padding="same")(x)
        if batch_norm:
            x = L.BatchNormalization()(x)
        return L.Activation(activation)(x) if activation else x

    inputs = k.Input(shape=(32, 32, 3), name="image")
    x = L.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    x = L.Rescaling(scale=[1.0 / s for s in std], offset=[-m / s for m, s in zip(mean, std)], name="normalize")(x)
    x = conv_bn(x, widths[0])
    for stage, (n_blocks, width) in enumerate(zip(blocks, widths)):
        for block in range(n_blocks):
            downsample = stage > 0 and block == 0
            y = conv_bn(x, width, strides=2 if downsample else 1)
            y = conv_bn(y, width, activation=None)
            if downsample:
                x = conv_bn(x, width, kernel_size=1, strides=2, activation=None, batch_norm=False)
            x = L.Activation("relu")(L.add([x, y]))
    x = L.AveragePooling2D(pool_size=8)(x)
    x = L.Flatten()(x)
    outputs = L.Dense(10, activation="softmax", name="probabilities")(x)
    return k.Model(inputs, outputs)


def to_tf_keras(model, preset, check_images):
    """The Keras 3 float32 model as a tf_keras model with the same weights and outputs."""
    tfk = build_tf_keras(preset)
    tfk.set_weights(model.get_weights())
    x = check_images.astype(np.float32)
    diff = np.max(np.abs(tfk.predict(x, verbose=0) - model.predict(x, verbose=0)))
    if diff > 1e-4:
        raise PipelineError(f"QAT: tf_keras rebuild of {preset!r} differs from the checkpoint by {diff:.2e}")
    return tfk


def _no_op_config():
    """Keep the two Rescaling layers (preprocessing) in float: tfmot has no rule for them."""
    import tensorflow_model_optimization as tfmot

    class NoOpQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        def get_weights_and_quantizers(self, layer): return []
        def get_activations_and_quantizers(self, layer): return []
        def set_quantize_weights(self, layer, quantize_weights): pass
        def set_quantize_activations(self, layer, quantize_activations): pass
        def get_output_quantizers(self, layer): return []
        def get_config(self): return {}

    return NoOpQuantizeConfig


def quantize(tfk_model):
    import tensorflow_model_optimization as tfmot
    import tf_keras as k
    q = tfmot.quantization.keras
    NoOp = _no_op_config()

    def annotate(layer):
        if isinstance(layer, k.layers.Rescaling):
            return q.quantize_annotate_layer(layer, quantize_config=NoOp())
        return q.quantize_annotate_layer(layer) if not isinstance(layer, k.layers.InputLayer) else layer

    annotated = k.models.clone_model(tfk_model, clone_function=annotate)
    with q.quantize_scope({"NoOpQuantizeConfig": NoOp}):
        return q.quantize_apply(annotated)


class _WallClock:
    """Stops training once the budget is spent (checked after every batch)."""

    def __new__(cls, seconds, progress):
        import tf_keras as k

        class WallClock(k.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0, self.steps = time.time(), 0

            def on_train_batch_end(self, batch, logs=None):
                self.steps += 1
                if time.time() - self.t0 > seconds:
                    self.model.stop_training = True

            def on_epoch_end(self, epoch, logs=None):
                if progress:
                    print(f"  qat epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}, "
                          f"{time.time() - self.t0:.0f}s", flush=True)

        return WallClock()


def fine_tune(qat_model, images, labels, minutes, lr=1e-4, batch_size=64, seed=0, progress=True):
    """Adam at a small learning rate until `minutes` of wall time (at most 100 epochs)."""
    import tensorflow as tf
    import tf_keras as k
    tf.random.set_seed(seed)
    qat_model.compile(optimizer=k.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    clock = _WallClock(minutes * 60.0, progress)
    qat_model.fit(images.astype(np.float32), labels, batch_size=batch_size, epochs=100, shuffle=True,
                  callbacks=[clock], verbose=0)
    return clock.steps


def convert(qat_model, calibration_images) -> bytes:
    """Full-integer int8 TFLite with uint8 input/output, like tflite_int8."""
    import tensorflow as tf
    from export.savedmodel import image_spec
    from export.tflite_export import configure
    fn = tf.function(lambda image: qat_model(image, training=False), input_signature=[image_spec()])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], qat_model)
    return configure(converter, "qat_int8", calibration_images).convert()


def train_qat(model, preset, images, labels, calibration_images, minutes, lr=1e-4, batch_size=64,
              progress=True) -> bytes:
    """QAT int8 TFLite flatbuffer from the float32 Keras model."""
    tfk = to_tf_keras(model, preset, calibration_images[:32])
    qat_model = quantize(tfk)
    steps = fine_tune(qat_model, images, labels, minutes, lr, batch_size, progress=progress)
    if progress:
        print(f"  qat: {steps} steps of {batch_size} in the {minutes:g}-minute budget", flush=True)
    return convert(qat_model, calibration_images)


def training_images(cfg, calibration):
    """Fine-tune images: the training split of data.source, or the calibration subset."""
    n = cfg.export.qat_images
    if cfg.export.qat_data == "calibration":
        images, labels = calibration.images, calibration.labels
    else:
        from pipeline.data import load_cifar10, resolve_source
        train = load_cifar10(resolve_source(cfg.data.source), splits=("train",))["train"]
        images, labels = train.images, train.labels
    idx = np.random.default_rng(0).permutation(len(images))[:n or None]
    return images[idx], labels[idx]


def build(exporter, row, path):
    from export.run import labels_text
    from export.tflite_export import write
    cfg = exporter.cfg.export
    images, labels = training_images(exporter.cfg, exporter.calibration)
    flat = train_qat(exporter.model, exporter.preset, images, labels, exporter.calibration.images,
                     cfg.qat_minutes, lr=cfg.qat_lr, batch_size=cfg.qat_batch_size, progress=exporter.progress)
    write(path, flat, labels_text())
    return {"minutes": cfg.qat_minutes, "lr": cfg.qat_lr, "batch_size": cfg.qat_batch_size, "data": cfg.qat_data}
