"""A training recipe (pipeline.config.Recipe) -> Keras optimizer, learning-rate schedule and loss."""
import keras

from pipeline.errors import PipelineError


def schedule(recipe, steps_per_epoch):
    """Keras' own schedules: one-cycle = linear warm-up then cosine decay; step = piecewise constant."""
    total = steps_per_epoch * recipe.epochs
    if recipe.schedule == "onecycle":
        warmup = max(1, int(recipe.warmup_frac * total))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.lr / 25.0, decay_steps=max(1, total - warmup),
            alpha=1e-3, warmup_target=recipe.lr, warmup_steps=warmup)
    if recipe.schedule == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries=[int(e) * steps_per_epoch for e, _ in recipe.steps],
            values=[float(recipe.lr)] + [float(lr) for _, lr in recipe.steps])
    if recipe.schedule == "constant":
        return recipe.lr
    raise PipelineError(f"unknown schedule {recipe.schedule!r}")  # the config refuses it first


def optimizer(recipe, steps_per_epoch):
    lr = schedule(recipe, steps_per_epoch)
    ema = dict(use_ema=True, ema_momentum=recipe.ema) if recipe.ema else {}
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=True, **ema)
    return keras.optimizers.Adam(lr, **ema)


def loss(recipe):
    return keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
