"""Quantization-aware training (tensorflow-model-optimization) -> full-integer int8 TFLite.

tfmot only speaks tf_keras (Keras 2), so the network is built from the preset by
pipeline.model's one architecture definition with tf_keras as its Keras, the float32 weights are copied (and checked by comparing
outputs), `quantize_model` inserts fake-quant ops, and a short fine-tune, bounded by
wall time, lets the weights adapt to int8. Off by default (`python -m export --qat`).

The fine-tune is the training recipe (the preset train.preset selects), scaled down:
- the same augmentation (pipeline.augment.Augment: shift, flip, cutout) on the training split
  (export.qat_data = "train"; "calibration" for tests), the same label-smoothed loss, and
  the recipe's optimizer (SGD Nesterov for `fast`) and weight EMA (the averaged weights are
  the ones converted, as the recipe checkpoints them);
- a cosine decay from export.qat_lr to 1% of it, sized to the budget: the first steps are
  timed (train.budget's probe sizes) and the schedule spans the steps that fit in what is
  left of export.qat_minutes, re-estimated every REPLAN_STEPS steps. Every step checks the
  deadline, and the schedule follows whichever of steps or time is further along, so a
  slower machine still ends at the low lr. The lr must stay small: on the reference model,
  1e-3 (batch 64, no weight EMA) moved it off its averaged weights (-0.2 pp, 96.9% agreement),
  1e-4 with the EMA did not;
- BatchNorm frozen. tfmot's default 8-bit scheme does not fold BN into the conv during QAT:
  its Conv2D+BatchNormalization(+ReLU) transforms only move the fake-quant from the conv
  output to after BN/ReLU, and the converter folds BN afterwards. BN therefore runs in
  inference mode on the float model's moving statistics with gamma/beta fixed (the standard
  advice for a QAT fine-tune of a trained model: batch statistics of small batches would
  shift it). The conv kernels are fake-quantized per output channel and symmetrically, which
  commutes with folding BN's per-channel scale, so what is trained is what the converter emits.
  No L2 term: with BN frozen it would shrink activations instead of being normalised away;
- activation ranges start from the data: tfmot starts every range at [-6, 6] and moves it by
  an EMA of 0.999 per step, too slow for a fine-tune of a few thousand steps. Here the EMA
  decay is t/(t+1) (a plain running mean of the batch ranges) until it reaches 0.999.
"""
import contextlib
import math
import time

import numpy as np

from pipeline import sampling
from pipeline.errors import PipelineError
from pipeline.model import build_preset

LR_FINAL_FRACTION = 0.01   # the cosine decay ends at this share of export.qat_lr
RANGE_EMA = 0.999          # tfmot's activation-range EMA decay, reached after 1,000 steps
REPLAN_STEPS = 20          # steps between refreshes of the step-time estimate


def build_tf_keras(preset):
    """pipeline.model's architecture built with tf_keras (same layers, same order, same weight order), no L2."""
    import tf_keras
    return build_preset(preset, keras_module=tf_keras)


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


def freeze_batch_norm(qat_model):
    """BatchNormalization in inference mode (moving statistics, gamma and beta fixed): a tf_keras BN
    layer that is not trainable ignores training=True. Returns how many layers were frozen."""
    import tf_keras as k
    frozen = 0
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)  # tfmot's QuantizeWrapper holds the layer
        if isinstance(inner, k.layers.BatchNormalization):
            inner.trainable = False
            frozen += 1
    return frozen


@contextlib.contextmanager
def range_decay(variable):
    """While the QAT model is traced, tfmot's activation-range EMA uses `variable` as its decay
    (tfmot hard-codes 0.999, starting from [-6, 6]). Yields False if this tfmot has no such hook."""
    try:
        from tensorflow_model_optimization.python.core.quantization.keras import quant_ops
        original = quant_ops.MovingAvgQuantize
    except (ImportError, AttributeError):
        yield False
        return

    def moving_avg_quantize(*args, ema_decay=RANGE_EMA, **kwargs):
        return original(*args, ema_decay=variable, **kwargs)

    quant_ops.MovingAvgQuantize = moving_avg_quantize
    try:
        yield True
    finally:
        quant_ops.MovingAvgQuantize = original


def lr_at(progress, lr_start, lr_end):
    """Cosine decay from lr_start (progress 0) to lr_end (progress 1)."""
    p = min(max(progress, 0.0), 1.0)
    return lr_end + (lr_start - lr_end) * 0.5 * (1.0 + math.cos(math.pi * p))


def run_budgeted(step, seconds, lr_start, lr_end, clock=time.perf_counter, say=None, steps_per_epoch=None):
    """Call `step(lr, t)` (t = steps done; returns the loss) until the schedule or the deadline ends,
    never starting a step after the deadline. As train.budget sizes a run: the first
    PROBE_WARMUP_STEPS steps (tracing) are untimed, the next PROBE_STEPS are timed, and the schedule
    is sized to the steps that fit in the time left; the estimate is refreshed every REPLAN_STEPS
    steps. The lr follows max(steps done / planned, time used / budget), never rising. Returns the record."""
    from pipeline.recipe import PROBE_STEPS, PROBE_WARMUP_STEPS
    t0 = clock()
    deadline = t0 + seconds
    done, planned, first_plan, step_s, probe_t0, stopped_by = 0, None, None, None, None, "deadline"
    progress, first_lr, last_lr = 0.0, None, None
    while True:
        now = clock()
        if done == PROBE_WARMUP_STEPS and probe_t0 is None:
            probe_t0 = now
        timed = done - PROBE_WARMUP_STEPS
        if timed >= PROBE_STEPS and (planned is None or timed % REPLAN_STEPS == 0) and now < deadline:
            step_s = (now - probe_t0) / timed
            planned = done + max(0, math.floor((deadline - now) / step_s))
            if first_plan is None:
                first_plan = planned
                if say:
                    say(f"  qat: {step_s:.2f} s per step measured -> {planned} steps planned in the "
                        f"{seconds:.0f} s budget")
        if planned is not None and done >= planned:
            stopped_by = "plan"
            break
        if now >= deadline:
            break
        progress = max(progress, done / planned if planned else 0.0, (now - t0) / seconds)
        last_lr = lr_at(progress, lr_start, lr_end)
        first_lr = last_lr if first_lr is None else first_lr
        loss = step(last_lr, done)
        done += 1
        if say and steps_per_epoch and done % steps_per_epoch == 0:
            say(f"  qat epoch {done // steps_per_epoch}: loss {loss:.4f}, lr {last_lr:.2e}, {clock() - t0:.0f} s")
    if planned is None:  # the deadline came inside the probe: what ran is the plan
        planned = first_plan = done
    return {"steps": done, "planned_steps": planned, "first_planned_steps": first_plan, "stopped_by": stopped_by,
            "lr_start": first_lr, "lr_end": last_lr, "lr_floor": lr_end,
            "step_seconds": None if step_s is None else round(step_s, 4), "seconds": round(clock() - t0, 2)}


def fine_tune(qat_model, images, labels, recipe, minutes, lr, batch_size, seed=0, progress=True,
              clock=time.perf_counter):
    """The recipe's augmentation, loss and optimizer at a cosine-decaying lr, for `minutes` of wall
    time (see the module doc). Returns the settings the manifest records."""
    import tensorflow as tf
    import tf_keras as k
    from pipeline import recipe as recipe_mod
    from pipeline.augment import Augment
    from pipeline.tfdata import without_autotune

    tf.random.set_seed(seed)
    frozen = freeze_batch_norm(qat_model)
    augment = Augment(cutout=recipe.cutout, crop=recipe.crop, seed=seed)  # Keras 3, TensorFlow ops: runs in the step
    loss_fn = recipe_mod.loss(recipe, keras_module=k)
    optimizer = recipe_mod.optimizer(recipe, learning_rate=lr, keras_module=k)
    decay = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="qat_range_decay")
    batch_size = min(batch_size, len(labels))
    data = without_autotune(tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
                            .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).repeat()
                            .batch(batch_size, drop_remainder=True).prefetch(2))
    batches = iter(data)
    variables = qat_model.trainable_variables

    @tf.function
    def train_step(x, y):
        x = augment(tf.cast(x, tf.float32), training=True)
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.one_hot(y, 10), qat_model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def step(step_lr, t):
        optimizer.learning_rate.assign(step_lr)
        decay.assign(min(RANGE_EMA, t / (t + 1.0)))
        x, y = next(batches)
        loss = float(train_step(x, y))
        if not math.isfinite(loss):
            raise PipelineError(f"QAT: the fine-tune loss became {loss} at step {t + 1} (lr {step_lr:.2e}); "
                                "lower export.qat_lr")
        return loss

    say = (lambda m: print(m, flush=True)) if progress else None
    with range_decay(decay) as ranges_from_data:
        record = run_budgeted(step, minutes * 60.0, lr, lr * LR_FINAL_FRACTION, clock=clock, say=say,
                              steps_per_epoch=max(1, len(labels) // batch_size))
        if recipe.ema and record["steps"]:
            # The averaged weights, as the recipe checkpoints them; one forward pass in training mode
            # sets the per-channel weight ranges to them (activation ranges move by one batch's share).
            optimizer.finalize_variable_values(variables)
            qat_model(augment(tf.cast(next(batches)[0], tf.float32), training=True), training=True)
    return {**record, "budget_s": round(minutes * 60.0, 1), "images": int(len(labels)), "batch_size": batch_size,
            "images_seen": record["steps"] * batch_size,
            "epochs": round(record["steps"] * batch_size / len(labels), 3),
            "schedule": "cosine", "optimizer": "sgd_nesterov" if recipe.optimizer == "sgd" else "adam",
            **({"momentum": recipe.momentum} if recipe.optimizer == "sgd" else {}), "weight_ema": recipe.ema,
            "augment": {"pad": augment.pad, "flip": True, "cutout": augment.cutout},
            "label_smoothing": recipe.label_smoothing,
            "bn": f"frozen ({frozen} layers: moving statistics, gamma and beta fixed; folded by the converter)",
            "activation_ranges": "running mean of batch ranges, then EMA 0.999" if ranges_from_data
            else "tfmot default: EMA 0.999 from [-6, 6]"}


def convert(qat_model, calibration_images) -> bytes:
    """Full-integer int8 TFLite with uint8 input/output, like tflite_int8."""
    import tensorflow as tf
    from export.savedmodel import image_spec
    from export.tflite_export import configure
    fn = tf.function(lambda image: qat_model(image, training=False), input_signature=[image_spec()])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], qat_model)
    return configure(converter, "qat_int8", calibration_images).convert()


def train_qat(model, preset, images, labels, calibration_images, recipe, minutes, lr, batch_size,
              progress=True):
    """(QAT int8 TFLite flatbuffer, fine-tune settings) from the float32 Keras model."""
    tfk = to_tf_keras(model, preset, calibration_images[:32])
    qat_model = quantize(tfk)
    settings = fine_tune(qat_model, images, labels, recipe, minutes, lr, batch_size, progress=progress)
    if progress:
        print(f"  qat: {settings['steps']}/{settings['planned_steps']} steps of {settings['batch_size']} "
              f"({settings['epochs']:g} epochs of {settings['images']} images) in {settings['seconds']:.0f} s, "
              f"lr {settings['lr_start']:.2e} -> {settings['lr_end']:.2e}", flush=True)
    return convert(qat_model, calibration_images), settings


def build(exporter, row, path):
    from export.tflite_export import write
    from pipeline.model import labels_text
    cfg = exporter.cfg.export
    images, labels, image_set = sampling.qat_images(exporter.cfg, exporter.sets)
    flat, settings = train_qat(exporter.model, exporter.preset, images, labels, exporter.calibration.images,
                               exporter.cfg.recipe, cfg.qat_minutes, lr=cfg.qat_lr,
                               batch_size=cfg.qat_batch_size, progress=exporter.progress)
    write(path, flat, labels_text())
    return {"minutes": cfg.qat_minutes, "data": cfg.qat_data, "image_set": image_set, "recipe": exporter.cfg.train.preset,
            **settings}
