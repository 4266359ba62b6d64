"""A training recipe (a preset of [train.presets], overridden by flags) -> optimizer, schedule, loss."""
import keras

RECIPE_KEYS = ("val_size", "optimizer", "lr", "momentum", "batch_size", "epochs", "schedule", "steps",
               "warmup_frac", "l2", "cutout", "label_smoothing", "ema", "subset")


def resolve(cfg):
    """The preset named by train.preset, with any recipe key set directly in [train] on top."""
    train = cfg["train"]
    presets = train.get("presets", {})
    if train["preset"] not in presets:
        from pipeline.errors import PipelineError
        raise PipelineError(f"unknown training preset {train['preset']!r}; known: {', '.join(presets)}")
    recipe = dict(presets[train["preset"]])
    recipe.update({k: train[k] for k in RECIPE_KEYS if k in train})
    return recipe


def schedule(recipe, steps_per_epoch):
    """Keras' own schedules: one-cycle = linear warm-up then cosine decay; step = piecewise constant."""
    total = steps_per_epoch * recipe["epochs"]
    if recipe["schedule"] == "onecycle":
        warmup = max(1, int(recipe.get("warmup_frac", 0.15) * total))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe["lr"] / 25.0, decay_steps=max(1, total - warmup),
            alpha=1e-3, warmup_target=recipe["lr"], warmup_steps=warmup)
    if recipe["schedule"] == "step":
        epochs_lrs = recipe.get("steps", [])
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries=[int(e) * steps_per_epoch for e, _ in epochs_lrs],
            values=[float(recipe["lr"])] + [float(lr) for _, lr in epochs_lrs])
    if recipe["schedule"] == "constant":
        return recipe["lr"]
    from pipeline.errors import PipelineError
    raise PipelineError(f"unknown schedule {recipe['schedule']!r} (onecycle, step, constant)")


def optimizer(recipe, steps_per_epoch):
    lr = schedule(recipe, steps_per_epoch)
    ema = dict(use_ema=True, ema_momentum=recipe["ema"]) if recipe.get("ema") else {}
    if recipe["optimizer"] == "sgd":
        return keras.optimizers.SGD(lr, momentum=recipe.get("momentum", 0.9), nesterov=True, **ema)
    if recipe["optimizer"] == "adam":
        return keras.optimizers.Adam(lr, **ema)
    from pipeline.errors import PipelineError
    raise PipelineError(f"unknown optimizer {recipe['optimizer']!r} (sgd, adam)")


def loss(recipe):
    return keras.losses.CategoricalCrossentropy(label_smoothing=recipe.get("label_smoothing", 0.0))
