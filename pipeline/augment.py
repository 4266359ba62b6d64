"""Training augmentation as a Keras layer, so it runs inside the compiled step on any backend.

Random translation by up to `pad` pixels (zero- or reflect-pad, then crop), horizontal flip, and cutout
of a `cutout` x `cutout` square (filled with the training mean, i.e. 0 after normalisation).
Everything is batched tensor math in keras.ops: no NumPy, no host round-trip.
The layer is the identity at inference and is never part of a saved checkpoint.
"""
import keras
from keras import ops

from pipeline.model import CIFAR10_MEAN


class Augment(keras.layers.Layer):
    def __init__(self, pad=4, cutout=8, crop="translate", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.pad, self.cutout, self.crop = pad, cutout, crop
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _crop(self, x):
        """Per-image random crop of the padded batch, as two one-hot selection matmuls."""
        b, size, p = ops.shape(x)[0], ops.shape(x)[1], self.pad
        padded = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect" if self.crop == "reflect" else "constant")
        offsets = keras.random.randint((b, 2), 0, 2 * p + 1, seed=self.seed_generator)
        grid = ops.arange(size)
        rows = ops.one_hot(grid[None, :] + offsets[:, :1], size + 2 * p, dtype=x.dtype)  # (b, 32, 40)
        cols = ops.one_hot(grid[None, :] + offsets[:, 1:], size + 2 * p, dtype=x.dtype)
        x = ops.einsum("bij,bjkc->bikc", rows, padded)
        return ops.einsum("bkj,bijc->bikc", cols, x)

    def _flip(self, x):
        coin = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=self.seed_generator) < 0.5
        return ops.where(coin, ops.flip(x, axis=2), x)

    def _cutout(self, x):
        b, size, half = ops.shape(x)[0], ops.shape(x)[1], self.cutout // 2
        centre = keras.random.randint((b, 2), 0, size, seed=self.seed_generator)
        grid = ops.arange(size)
        d_rows = grid[None, :] - centre[:, :1]                            # (b, 32)
        d_cols = grid[None, :] - centre[:, 1:]
        in_rows = ops.logical_and(d_rows >= -half, d_rows < half)
        in_cols = ops.logical_and(d_cols >= -half, d_cols < half)
        hole = ops.logical_and(in_rows[:, :, None, None], in_cols[:, None, :, None])
        fill = ops.cast(ops.convert_to_tensor([m * 255.0 for m in CIFAR10_MEAN]), x.dtype)
        return ops.where(hole, fill, x)

    def call(self, x, training=None):
        if not training:
            return x
        if self.pad:
            x = self._crop(x)
        x = self._flip(x)
        if self.cutout:
            x = self._cutout(x)
        return x

    def get_config(self):
        return {**super().get_config(), "pad": self.pad, "cutout": self.cutout, "crop": self.crop}
