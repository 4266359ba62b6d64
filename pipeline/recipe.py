"""A training recipe (pipeline.config.Recipe) -> optimizer, learning-rate schedule and loss, for training
and for the QAT fine-tune (which runs on tf-keras: `keras_module` picks the Keras that builds them).

The time-budget probe sizes live here too: train.budget sizes a run with them, export.qat its fine-tune.
"""
import keras

PROBE_WARMUP_STEPS = 2   # graph tracing happens here
PROBE_STEPS = 4          # timed

from pipeline.errors import PipelineError


def schedule(recipe, steps_per_epoch):
    """Keras' own schedules: one-cycle = linear warm-up then cosine decay;
    linear = the same warm-up, then linear decay to 0; step = piecewise constant."""
    total = steps_per_epoch * recipe.epochs
    if recipe.schedule == "onecycle":
        warmup = max(1, int(recipe.warmup_frac * total))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.lr / 25.0, decay_steps=max(1, total - warmup),
            alpha=1e-3, warmup_target=recipe.lr, warmup_steps=warmup)
    if recipe.schedule == "linear":
        return WarmupLinearDecay(recipe.lr, total, max(1, int(recipe.warmup_frac * total)))
    if recipe.schedule == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries=[int(e) * steps_per_epoch for e, _ in recipe.steps],
            values=[float(recipe.lr)] + [float(lr) for _, lr in recipe.steps])
    if recipe.schedule == "constant":
        return recipe.lr
    raise PipelineError(f"unknown schedule {recipe.schedule!r}")  # the config refuses it first


class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from lr/25 to lr, then linear decay to 0 at the last step (Keras has no such
    schedule: PolynomialDecay has no warm-up)."""

    def __init__(self, peak, total_steps, warmup_steps):
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)

    def __call__(self, step):
        from keras import ops
        step = ops.cast(step, "float32")
        up = self.peak / 25.0 + (self.peak - self.peak / 25.0) * step / self.warmup_steps
        down = self.peak * (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps)
        return ops.maximum(0.0, ops.where(step < self.warmup_steps, up, down))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def optimizer(recipe, steps_per_epoch=None, learning_rate=None, keras_module=keras):
    """The recipe's optimizer (Nesterov SGD or Adam, weight EMA when on) at its schedule, or at a fixed
    `learning_rate` the caller assigns each step (QAT)."""
    lr = schedule(recipe, steps_per_epoch) if learning_rate is None else learning_rate
    ema = dict(use_ema=True, ema_momentum=recipe.ema) if recipe.ema else {}
    if recipe.optimizer == "sgd":
        return keras_module.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=True, **ema)
    return keras_module.optimizers.Adam(lr, **ema)


def loss(recipe, keras_module=keras):
    return keras_module.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
