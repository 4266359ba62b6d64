"""One training run: data -> model -> fit with callbacks -> checkpoints, history, curves, metrics."""
import contextlib
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from pipeline import atomic, config as config_mod, evalset
from pipeline.data import load_cifar10, resolve_source
from pipeline.errors import PipelineError
from pipeline.model import CLASSES, build_preset
from train import recipe as recipe_mod
from train import report
from train.augment import Augment
from train.callbacks import AtomicCheckpoint, EpochTimer


def _on_accelerator():
    if keras.backend.backend() == "jax":
        import jax
        return jax.default_backend() != "cpu"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    return False


def _policy(setting):
    if setting == "auto":
        return "mixed_bfloat16" if _on_accelerator() else "float32"
    return setting


def _distribution(enabled):
    """(context to build and compile in, number of replicas) for data-parallel training."""
    if not enabled:
        return contextlib.nullcontext(), 1
    if keras.backend.backend() == "jax":
        if os.environ.get("JAX_COORDINATOR_ADDRESS"):  # multi-host: one process per host
            import jax
            jax.distributed.initialize()
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        if os.environ.get("TF_CONFIG"):  # multi-worker: TF_CONFIG names this worker and its peers
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            return strategy.scope(), strategy.num_replicas_in_sync
        strategy = tf.distribute.MirroredStrategy(
            devices=[d.name for d in tf.config.list_logical_devices("GPU")] or
            [d.name for d in tf.config.list_logical_devices("CPU")])
        return strategy.scope(), strategy.num_replicas_in_sync
    raise PipelineError(f"data parallel training is not wired for backend {keras.backend.backend()!r}")


def _split_train_val(train, val_size, subset, seed):
    """Shuffle (the image folders are in class order), then hold out `val_size` for model selection."""
    order = np.random.default_rng(seed).permutation(len(train))
    if subset:
        order = order[: subset + val_size]
    val, fit = order[:val_size], order[val_size:]
    return (train.images[fit], train.labels[fit]), (train.images[val], train.labels[val])


def _one_hot(labels):
    return np.eye(len(CLASSES), dtype=np.float32)[labels]


def _best_so_far(run_dir):
    csv_path = run_dir / "history.csv"
    if not csv_path.exists():
        return -math.inf
    values = report.read_history(csv_path).get("val_accuracy", [])
    return max([v for v in values if math.isfinite(v)], default=-math.inf)


def test_metrics(model, test):
    """Top-1 and per-class accuracy on the test split (no test-time augmentation)."""
    pred = np.argmax(model.predict(test.images.astype(np.float32), batch_size=500, verbose=0), axis=1)
    per_class = {c: float(np.mean(pred[test.labels == i] == i)) for i, c in enumerate(CLASSES)}
    return {"test_accuracy": float(np.mean(pred == test.labels)), "test_images": int(len(test)),
            "per_class_accuracy": per_class}


def train(cfg, run_dir: Path, resume=False):
    """Train per `cfg`, writing everything into `run_dir`; returns the run's metrics dict."""
    t_start = time.perf_counter()
    tcfg, recipe = cfg["train"], recipe_mod.resolve(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_mod.write_resolved(cfg, run_dir)
    keras.utils.set_random_seed(int(tcfg["seed"]))

    source = resolve_source(str(config_mod.project_path(cfg["data"]["source"])))
    data = load_cifar10(source)
    (x_fit, y_fit), (x_val, y_val) = _split_train_val(
        data["train"], int(recipe["val_size"]), int(recipe.get("subset", 0)), int(tcfg["seed"]))
    t_data = time.perf_counter() - t_start
    print(f"data: {len(y_fit)} training, {len(y_val)} validation images from {source} ({t_data:.1f}s)", flush=True)

    policy = _policy(tcfg.get("mixed_precision", "auto"))
    keras.mixed_precision.set_global_policy(policy)
    scope, replicas = _distribution(bool(tcfg.get("data_parallel")))
    batch = int(recipe["batch_size"])
    if batch % replicas:
        raise PipelineError(f"batch size {batch} does not split evenly over {replicas} replicas")
    steps_per_epoch = math.ceil(len(y_fit) / batch)
    with scope:
        net = build_preset(cfg["model"]["preset"], l2=float(recipe["l2"]))
        image = keras.Input(shape=net.input_shape[1:], name="image")
        wrapper = keras.Model(image, net(Augment(cutout=int(recipe["cutout"]), seed=int(tcfg["seed"]))(image)),
                              name="train_wrapper")
        wrapper.compile(optimizer=recipe_mod.optimizer(recipe, steps_per_epoch), loss=recipe_mod.loss(recipe),
                        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                        steps_per_execution=int(tcfg.get("steps_per_execution", 1)))
    env = {**report.environment(), "policy": policy,
           "distribution": {"replicas": replicas, "global_batch": batch, "per_replica_batch": batch // replicas}}
    atomic.write_json(run_dir / "environment.json", env)
    print(f"model: {cfg['model']['preset']} ({net.count_params():,} params), backend {env['backend']}, "
          f"policy {policy}, {replicas} replica(s) x {batch // replicas} images", flush=True)

    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),  # --resume continues from the last epoch
        EpochTimer(),
        AtomicCheckpoint(net, run_dir, best_so_far=_best_so_far(run_dir) if resume else -math.inf),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resume),
        keras.callbacks.TerminateOnNaN(),
    ]
    t_fit = time.perf_counter()
    wrapper.fit(x_fit.astype(np.float32), _one_hot(y_fit), batch_size=batch, epochs=int(recipe["epochs"]),
                validation_data=(x_val.astype(np.float32), _one_hot(y_val)) if len(y_val) else None,
                callbacks=callbacks, verbose=1 if os.isatty(1) else 2, shuffle=True)
    fit_seconds = time.perf_counter() - t_fit

    history = report.write_history(run_dir)
    report.plot_curves(history, run_dir / "curves.png",
                       f"{cfg['model']['preset']} / {tcfg['preset']} on CIFAR-10 (JPEG q75 copy)")
    bad = [i for i, v in enumerate(history.get("loss", [])) if not math.isfinite(v)]
    if bad or len(history.get("loss", [])) < int(recipe["epochs"]):
        where = f"epoch {bad[0] + 1}" if bad else "an unfinished epoch"
        kept = "best.h5 kept" if (run_dir / "best.h5").exists() else "no checkpoint was written"
        raise PipelineError(f"{run_dir}: loss became NaN or infinite at {where}; training stopped ({kept})")

    if recipe.get("ema"):  # swap the averaged weights in for the final checkpoint
        wrapper.optimizer.finalize_variable_values(wrapper.trainable_variables)
        with atomic.atomic_path(run_dir / "last.h5", suffix=".h5") as tmp:
            net.save(tmp)
    best_path = run_dir / ("best.h5" if (run_dir / "best.h5").exists() else "last.h5")
    best = keras.models.load_model(best_path, compile=False, safe_mode=True)
    metrics = {**test_metrics(best, evalset.load_test(cfg)), "checkpoint": best_path.name,
               "best_val_accuracy": max(history.get("val_accuracy", [float("nan")])),
               "epochs": len(history["loss"]), "preset": tcfg["preset"], "model": cfg["model"]["preset"],
               "params": net.count_params(), "data_sha256": atomic.sha256_tree(source) if source != "download" else None,
               "timings": {"data_seconds": t_data, "fit_seconds": fit_seconds,
                           "first_epoch_seconds": history["epoch_seconds"][0],
                           "median_epoch_seconds": float(np.median(history["epoch_seconds"][1:] or
                                                                   history["epoch_seconds"])),
                           "total_seconds": time.perf_counter() - t_start}}
    atomic.write_json(run_dir / "metrics.json", metrics)
    print(f"done: {best_path} test accuracy {metrics['test_accuracy']:.4f} on CIFAR-10 (JPEG q75 copy), "
          f"{metrics['timings']['total_seconds']:.0f}s in all", flush=True)
    return metrics
