"""Callbacks Keras lacks: atomic checkpoints of the inner network, and per-epoch timing."""
import math
import time

import keras

from pipeline import atomic


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save `net` (the deployable network, not the training wrapper with augmentation) as
    `best.h5` when `monitor` improves and as `last.h5` every epoch; temp file, then rename,
    so a run folder never holds a half-written .h5. A NaN epoch never becomes `best`."""

    def __init__(self, net, run_dir, monitor="val_accuracy", best_so_far=-math.inf):
        super().__init__()
        self.net, self.run_dir, self.monitor = net, run_dir, monitor
        self.best = best_so_far

    def _save(self, name):
        with atomic.atomic_path(self.run_dir / name, suffix=".h5") as tmp:
            self.net.save(tmp)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value, loss = logs.get(self.monitor), logs.get("loss")
        if loss is None or not math.isfinite(loss):
            return
        self._save("last.h5")
        if value is not None and value > self.best:
            self.best = value
            self._save("best.h5")


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch (the first includes compilation) into logs['epoch_seconds']."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._t0
