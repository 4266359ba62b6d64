"""What a run folder records besides checkpoints: history (JSON), curves (PNG), environment."""
import csv
import platform
import sys

from pipeline import atomic


def read_history(csv_path):
    """The CSVLogger file as {column: [values...]}, one value per epoch."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0].keys() if rows else [])}


def write_history(run_dir):
    history = read_history(run_dir / "history.csv")
    atomic.write_json(run_dir / "history.json", history)
    return history


def plot_curves(history, png_path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(e) + 1 for e in history["epoch"]]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["loss"], label="train")
    if "val_loss" in history:
        ax_loss.plot(epochs, history["val_loss"], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, history["accuracy"], label="train (augmented)")
    if "val_accuracy" in history:
        ax_acc.plot(epochs, history["val_accuracy"], label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic.atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def environment():
    """Library versions and devices, so a run can be compared with another."""
    import keras
    import numpy as np
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "processor": platform.processor() or platform.machine(),
           "keras": keras.__version__, "backend": keras.backend.backend(), "numpy": np.__version__}
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        env["jax"] = jax.__version__
        env["devices"] = [str(d) for d in jax.devices()]
    elif backend == "tensorflow":
        import tensorflow as tf
        env["tensorflow"] = tf.__version__
        env["devices"] = [d.name for d in tf.config.list_logical_devices()]
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return env
