"""ResNet v1 for 32x32 images, as in the seed notebooks, with preprocessing inside the model.

Every artifact exported from this model takes raw RGB 0..255, NHWC, 32x32x3: the
scaling to 0..1 and the per-channel normalisation are two Rescaling layers whose
factors are constants in the model config (no weights, no custom code).

Keras is imported inside the builders, so `from pipeline.model import CLASSES` (the data
loader, the `data` CLI) stays light and prints no TensorFlow start-up logs.
"""

# Per-channel mean and std of the CIFAR-10 (JPEG q75 copy) training split on 0..1 pixels,
# measured with pipeline.data.load_cifar10 on ../shared/datasets/cifar10-jpeg.tar.gz.
CIFAR10_MEAN = (0.4913, 0.4821, 0.4465)
CIFAR10_STD = (0.2452, 0.2428, 0.2606)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")

INPUT_SHAPE = (32, 32, 3)
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"  # every artifact's input and output tensor


def labels_text():
    """labels.txt: one class name a line, in label order (the manifest's and every .tflite's)."""
    return "".join(f"{c}\n" for c in CLASSES)

# Presets name an architecture; `seed` is the model we ship.
PRESETS = {
    "seed": dict(blocks=(3, 3, 2), widths=(32, 64, 128)),        # 792,330 params
    "resnet20v1": dict(blocks=(3, 3, 3), widths=(16, 32, 64)),   # 274,442 params
}


def _conv_bn(k, x, filters, kernel_size=3, strides=1, activation="relu", batch_norm=True, l2=0.0, l2_all=False):
    """The seed's resnet_layer: conv -> BN -> activation (conv first). `k`: the Keras module. l2_all: the
    penalty on the bias and BN's scale and offset too (a recipe proxy; the recipe's default is kernels only)."""
    layers = k.layers
    penalty = (lambda on: k.regularizers.l2(l2) if l2 and on else None)
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                      kernel_initializer="he_normal", kernel_regularizer=penalty(True),
                      bias_regularizer=penalty(l2_all))(x)
    if batch_norm:
        x = layers.BatchNormalization(gamma_regularizer=penalty(l2_all), beta_regularizer=penalty(l2_all))(x)
    if activation:
        x = layers.Activation(activation)(x)
    return x


def build_resnet(blocks=(3, 3, 2), widths=(32, 64, 128), num_classes=10, l2=0.0, l2_scope="conv_kernels",
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, name="resnet_v1", keras_module=None):
    """ResNet v1: stem conv, stages of basic blocks, 1x1 conv shortcut (no BN) where a stage changes.

    l2: the L2 penalty; training passes its recipe's (config Recipe.l2 and l2_scope), 0 = none (inference,
    checkpoint loading, QAT). l2_scope: conv_kernels (as in the seed: not the dense layer, BN or biases)
    or all (every weight: conv and dense kernels and biases, BN scale and offset). Regularizers add no
    weights: the architecture is the same either way. keras_module: Keras 3 (default) or tf_keras, which
    tfmot's QAT needs: the same layers in the same order, so weights copy one to one."""
    if keras_module is None:
        import keras as keras_module
    keras, layers = keras_module, keras_module.layers
    inputs = keras.Input(shape=INPUT_SHAPE, name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    x = layers.Rescaling(scale=[1.0 / s for s in std], offset=[-m / s for m, s in zip(mean, std)],
                         name="normalize")(x)
    everything = l2_scope == "all"
    x = _conv_bn(keras, x, widths[0], l2=l2, l2_all=everything)
    for stage, (n_blocks, width) in enumerate(zip(blocks, widths)):
        for block in range(n_blocks):
            downsample = stage > 0 and block == 0
            strides = 2 if downsample else 1
            y = _conv_bn(keras, x, width, strides=strides, l2=l2, l2_all=everything)
            y = _conv_bn(keras, y, width, activation=None, l2=l2, l2_all=everything)
            if downsample:
                x = _conv_bn(keras, x, width, kernel_size=1, strides=strides, activation=None,
                             batch_norm=False, l2=l2, l2_all=everything)
            x = layers.Activation("relu")(layers.add([x, y]))
    x = layers.AveragePooling2D(pool_size=8)(x)
    x = layers.Flatten()(x)
    # float32 output even under a mixed policy, so softmax and the loss stay exact.
    dense_penalty = keras.regularizers.l2(l2) if l2 and everything else None
    outputs = layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal",
                           kernel_regularizer=dense_penalty, bias_regularizer=dense_penalty,
                           dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=name)


def build_preset(preset="seed", **overrides):
    if preset not in PRESETS:
        from pipeline.errors import PipelineError
        raise PipelineError(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")
    return build_resnet(**{**PRESETS[preset], **overrides})


def param_counts(model):
    import keras
    trainable = sum(int(w.numpy().size) if hasattr(w, "numpy") else int(keras.ops.size(w))
                    for w in model.trainable_weights)
    total = model.count_params()
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}
