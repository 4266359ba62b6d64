"""What Keras' callbacks leave to us: atomic checkpoints of the inner network (EMA weights when EMA
is on), an atomic BackupAndRestore, and progress lines with images/s and time left.

Order in fit (train/loop.py): EpochTimer, SwapEMAWeights (validation on the averaged weights),
AtomicCheckpoint, CSVLogger, Progress, TerminateOnNaN, then AtomicBackupAndRestore last, so an
epoch counts as done only once its checkpoints and history row are on disk.
"""
import math
import os
import time
import warnings
from pathlib import Path

import keras

from pipeline import atomic
from pipeline.errors import PipelineError, first_line
from train.run_folder import EPOCH_ATTR, backed_up_epochs


def weight_bytes(variables):
    """About what an HDF5 file of these variables takes (float32, plus 1 MB for its layout and config)."""
    return sum(4 * math.prod(v.shape) for v in variables) + (1 << 20)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save `net` (the deployable network, not the training wrapper with augmentation) as
    `best.h5` when `monitor` improves (with `best.json`: its epoch and score) and as `last.h5`
    every epoch; temp file, then rename. With EMA on, the averaged weights are saved: Keras'
    SwapEMAWeights swaps them in for the save and back out for training. A NaN epoch never
    becomes `best`."""

    def __init__(self, net, run_dir, monitor="val_accuracy", best_so_far=-math.inf, ema=False):
        super().__init__()
        self.net, self.run_dir, self.monitor = net, run_dir, monitor
        self.best = best_so_far
        self._swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True) if ema else None

    def set_model(self, model):
        super().set_model(model)
        if self._swap:
            self._swap.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        if self._swap:
            self._swap.set_params(params)

    def _save(self, name):
        atomic.check_free_space(self.run_dir, weight_bytes(self.net.weights), name)
        with atomic.atomic_path(self.run_dir / name, suffix=".h5") as tmp:
            self.net.save(tmp)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value, loss = logs.get(self.monitor), logs.get("loss")
        if loss is None or not math.isfinite(loss):
            return
        if self._swap:
            self._swap.on_epoch_end(epoch)    # averaged weights in
        try:
            self._save("last.h5")
            if value is not None and value > self.best:
                self.best = value
                self._save("best.h5")
                atomic.write_json(self.run_dir / "best.json", {"epoch": epoch + 1, self.monitor: value})
        finally:
            if self._swap:
                self._swap.on_epoch_begin(epoch)  # training weights back


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch (the first includes graph tracing) into logs['epoch_seconds']."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._t0


def _hms(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress(keras.callbacks.Callback):
    """One line per epoch (epoch, loss, accuracies, images/s, elapsed, time left) and, inside a long
    epoch, a line every `every_s` seconds; `say` prints."""

    def __init__(self, epochs, steps_per_epoch, batch, images, every_s=60.0, say=print):
        super().__init__()
        self.epochs, self.steps, self.batch, self.images = epochs, steps_per_epoch, batch, images
        self.every_s, self.say = every_s, say
        self._epoch_times = []

    def on_train_begin(self, logs=None):
        self._t_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._t_epoch = epoch, time.perf_counter()
        self._last = self._t_epoch

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            done = (batch + 1) * self.batch
            self.say(f"  epoch {self._epoch + 1}/{self.epochs}: step {batch + 1}/{self.steps}, "
                     f"{done / (now - self._t_epoch):.0f} img/s, loss {logs.get('loss', float('nan')):.4f}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self._t_epoch
        self._epoch_times.append(seconds)
        typical = sorted(self._epoch_times[1:] or self._epoch_times)[len(self._epoch_times[1:] or self._epoch_times) // 2]
        left = typical * (self.epochs - epoch - 1)
        val = f", val_accuracy {logs['val_accuracy']:.4f}" if "val_accuracy" in logs else ""
        self.say(f"epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', float('nan')):.4f}, "
                 f"accuracy {logs.get('accuracy', float('nan')):.4f}{val}, {self.images / seconds:.0f} img/s, "
                 f"{seconds:.0f}s, elapsed {_hms(time.perf_counter() - self._t_start)}, left ~{_hms(left)}")


class StopAfter(keras.callbacks.Callback):
    """End this stretch at the first epoch end after which another epoch would pass `seconds`
    (counted from `t0`); BackupAndRestore has the epoch, so `--resume` continues from there."""

    def __init__(self, seconds, t0):
        super().__init__()
        self.seconds, self.t0 = seconds, t0

    def on_epoch_begin(self, epoch, logs=None):
        self._t_epoch = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if now - self.t0 + (now - self._t_epoch) > self.seconds:
            self.model.stop_training = True


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore made atomic: the epoch count is stored inside the weights file (an
    HDF5 attribute) and the file is written to a temp name and renamed, so a kill at any moment
    leaves one file that holds a finished epoch's weights, optimizer state and number together.
    The backup is kept when fit ends (a stretch stop or a NaN stop must stay resumable); the run
    removes it once its metrics are written."""

    def __init__(self, backup_dir, say=None):
        super().__init__(backup_dir, delete_checkpoint=False)
        self.say = say

    def _save_model(self):
        import h5py
        os.makedirs(self.backup_dir, exist_ok=True)
        variables = self.model.weights + self.model.optimizer.variables
        atomic.check_free_space(self.backup_dir, weight_bytes(variables), "the backup")
        tmp_weights = f"{self._weights_path}.tmp.weights.h5"  # save_weights wants the suffix
        self.model.save_weights(filepath=tmp_weights, overwrite=True)
        with h5py.File(tmp_weights, "a") as f:
            f.attrs[EPOCH_ATTR] = self._current_epoch
        os.replace(tmp_weights, self._weights_path)

    def _load_model(self):
        # A backup of another model: Keras warns once per layer (70 lines), then raises, or for a different
        # optimizer only warns and trains on with a fresh one. Either way the run cannot continue from it.
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                super()._load_model()
                why = next((str(w.message) for w in seen if "Skipping" in str(w.message)), None)
            except ValueError as exc:
                why = str(exc)
        if why:
            raise PipelineError(f"{self._weights_path}: the backup does not fit this run's model and optimizer "
                                f"({first_line(why, 160)}); remove the backup folder to train the run again from "
                                "epoch 1")
        epochs = backed_up_epochs(Path(self.backup_dir).parent)
        if epochs:
            self.model._initial_epoch = epochs
            opt = self.model.optimizer
            if self.say:  # the schedule is a function of this step count, so it continues where it was
                step = int(keras.ops.convert_to_numpy(opt.iterations))  # a MirroredVariable under tf.distribute
                lr = float(keras.ops.convert_to_numpy(opt.learning_rate))
                self.say(f"restored epoch {epochs}: optimizer step {step}, learning rate {lr:.6g}")


