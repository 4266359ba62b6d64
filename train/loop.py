"""One training run: data -> model -> fit with callbacks -> checkpoints, history, curves, metrics.

A run folder is everything needed to continue the run anywhere: `run.json` (written first; the
marker only this stage writes: run id, data sha256, the planned epochs), `config.resolved.json`,
`backup/` (Keras' BackupAndRestore, weights and optimizer state of the last finished epoch),
`history.csv`, `best.h5`/`best.json`, `last.h5`. No absolute path is stored: the data is found
again by its sha256 (the configured source, or the decoded-array cache of that content).
"""
import contextlib
import math
import os
import shutil
import time
import uuid
from pathlib import Path

import keras
import numpy as np

from pipeline import atomic, checkpoint, config as config_mod, evalset, machine
from pipeline.augment import Augment
from pipeline.tfdata import without_autotune
from pipeline.data import cached_by_hash, load_cifar10, resolve_source, source_sha256
from pipeline.errors import PipelineError
from pipeline.model import CLASSES, build_preset
from pipeline.scoring import score
from pipeline import recipe as recipe_mod
from train import budget, report
from train.run_folder import RUN_KIND, RUN_MARKER, best_val_accuracy, read_marker
from train.fused_batchnorm import fuse_batchnorm
from train.run_lock import run_lock
from train.callbacks import (AtomicBackupAndRestore, AtomicCheckpoint, EpochTimer, Progress, StopAfter,
                             backed_up_epochs)



# ---------------------------------------------------------------- devices and precision

def _on_accelerator():
    if keras.backend.backend() == "jax":
        import jax
        return jax.default_backend() != "cpu"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    return False


def policy_for(setting):
    """auto: mixed_bfloat16 on accelerators, and on CPUs whose TensorFlow (oneDNN) kernels compute
    bf16 natively (AVX512-BF16 or AMX, not capped away by ONEDNN_MAX_CPU_ISA): 1.9x float32 on the Zen 5
    EPYC, while emulated bf16 runs at half float32's speed (BENCHMARKS.md). XLA's CPU backend (JAX) has
    no such kernels, so JAX on CPU stays float32."""
    if setting != "auto":
        return setting
    if _on_accelerator():
        return "mixed_bfloat16"
    if keras.backend.backend() == "tensorflow" and machine.native_bf16():
        return "mixed_bfloat16"
    return "float32"


def _distribution(enabled):
    """(context to build and compile in, number of replicas) for data-parallel training.

    JAX: one Keras `DataParallel` mesh over every device of every process; the replicas are the
    global device count and `recipe.batch_size` is the global batch. Without the variables below
    it is one process over its local devices. One process per host joins a multi-process mesh
    with (Keras' names first, else the JAX_ ones):

      KERAS_DISTRIBUTION_JOB_ADDRESSES  or JAX_COORDINATOR_ADDRESS  host:port of process 0 (the
          coordinator; it listens there, on all interfaces unless JAX_COORDINATOR_BIND_ADDRESS);
          a comma-separated list is Keras' form, its first entry is the coordinator
      KERAS_DISTRIBUTION_NUM_PROCESSES  or JAX_NUM_PROCESSES        processes in all
      KERAS_DISTRIBUTION_PROCESS_ID     or JAX_PROCESS_ID           this process, 0 .. n-1

    (JAX itself reads only JAX_COORDINATOR_ADDRESS, and finds the count and id only under SLURM,
    Open MPI, Kubernetes or Cloud TPU; here they are passed explicitly.) Cross-process collectives
    on CPU go over Gloo (TCP, at the address this host's name resolves to) unless
    JAX_CPU_COLLECTIVES_IMPLEMENTATION names another (mpi); accelerators use their own (NCCL).
    The flag is set before initialisation, when the platform cannot be asked yet, and only the
    CPU client reads it. jax.distributed must start before JAX's first use in the process.

    Feeding in multi-process: each process must give fit its own part of every global batch,
    either a tf.data.Dataset of global batches (Keras rebatches it and keeps this process's shard:
    `auto_shard_dataset`, the default) or, with `keras.distribution.distribution()
    .auto_shard_dataset = False`, this process's rows as arrays with batch_size = global batch //
    processes. tests/test_data_parallel_jax.py runs both on 2 CPU processes."""
    if not enabled:
        return contextlib.nullcontext(), 1
    if keras.backend.backend() == "jax":
        import jax

        def setting(keras_name, jax_name):
            return os.environ.get(keras_name) or os.environ.get(jax_name) or None

        coordinator = setting("KERAS_DISTRIBUTION_JOB_ADDRESSES", "JAX_COORDINATOR_ADDRESS")
        if coordinator and not jax.distributed.is_initialized():  # multi-process: one per host
            try:
                count, index = (None if v is None else int(v) for v in (
                    setting("KERAS_DISTRIBUTION_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
                    setting("KERAS_DISTRIBUTION_PROCESS_ID", "JAX_PROCESS_ID")))
            except ValueError as e:
                raise PipelineError(f"multi-process JAX: the process count and id must be integers ({e})") from None
            if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
                jax.config.update("jax_cpu_collectives_implementation", "gloo")
            where = f"multi-process JAX (coordinator {coordinator}, {count} processes, this is {index})"
            try:  # jax.distributed.initialize, then one random seed for all processes
                keras.distribution.initialize(coordinator, count, index)
            except ValueError as e:  # no count or id given, and no cluster JAX can ask
                raise PipelineError(f"{where}: {str(e).rstrip('.')}; set KERAS_DISTRIBUTION_NUM_PROCESSES and "
                                    "KERAS_DISTRIBUTION_PROCESS_ID on every host") from e
            except RuntimeError as e:  # JAX was used first: its backend is already a one-process one
                raise PipelineError(f"{where}: {str(e).split('. ')[0]}; this process used JAX before "
                                    "_distribution (train.mixed_precision 'auto' asks JAX for its platform)") from e
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


# ---------------------------------------------------------------- data

def _split_train_val(train, val_size, subset, seed):
    """Shuffle (the image folders are in class order), then hold out `val_size` for model selection."""
    order = np.random.default_rng(seed).permutation(len(train))
    if subset:
        order = order[: subset + val_size]
    val, fit = order[:val_size], order[val_size:]
    return (train.images[fit], train.labels[fit]), (train.images[val], train.labels[val])


def _one_hot(labels):
    return np.eye(len(CLASSES), dtype=np.float32)[labels]


def training_data(cfg, expected_sha=None):
    """(train split, data sha256, where it came from). A resumed run passes the sha256 it started
    with: the configured source if it still holds that content, else the decoded cache of it."""
    source = resolve_source(cfg.data.source)
    sha = source_sha256(source)
    if expected_sha and sha != expected_sha:
        cached = cached_by_hash(expected_sha, ("train",))
        if cached is None:
            found = "is missing" if sha is None else f"now has sha256 {sha[:12]}..."
            raise PipelineError(f"{source}: the run was trained on data with sha256 {expected_sha[:12]}..., "
                                f"the source {found}, and no decoded cache of it exists; set CIFAR10_DATA "
                                "to a copy of the original data")
        return cached["train"], expected_sha, f"the decoded cache of sha256 {expected_sha[:12]}..."
    return load_cifar10(source, splits=("train",))["train"], sha, str(source)


def _multi_process():
    """A data-parallel run over several processes (hosts): Keras then takes only tf.data input."""
    dist = keras.distribution.distribution()
    return dist is not None and dist.num_processes > 1


def feed(x, y, batch, shuffle_seed=None):
    """Batches for fit: on TensorFlow a tf.data pipeline (shuffled and prefetched on TensorFlow's
    own threads, next to the compiled step), the arrays themselves on other backends."""
    if keras.backend.backend() != "tensorflow" and not _multi_process():
        return dict(x=x, y=y, batch_size=batch, shuffle=shuffle_seed is not None)
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dict(x=without_autotune(ds.batch(batch).prefetch(2)), shuffle=False)  # shuffled above


def validation(x, y, batch):
    """fit's validation_data: the same feed, unshuffled; None without validation images."""
    if not len(y):
        return None
    fed = feed(x.astype(np.float32), _one_hot(y), batch)
    return (fed["x"], fed["y"]) if "y" in fed else fed["x"]


# ---------------------------------------------------------------- the model

def build_trainable(model_preset, recipe, steps_per_epoch, seed=0, steps_per_execution=1, fused_batchnorm=True):
    """(deployable net, compiled training wrapper = augmentation + net): the benchmarks time this too."""
    net = build_preset(model_preset, l2=recipe.l2, l2_scope=recipe.l2_scope)
    if fused_batchnorm:
        fuse_batchnorm(net)
    image = keras.Input(shape=net.input_shape[1:], name="image")
    wrapper = keras.Model(image, net(Augment(cutout=recipe.cutout, crop=recipe.crop, seed=seed)(image)), name="train_wrapper")
    wrapper.compile(optimizer=recipe_mod.optimizer(recipe, steps_per_epoch), loss=recipe_mod.loss(recipe),
                    metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                    steps_per_execution=steps_per_execution)
    return net, wrapper


# ---------------------------------------------------------------- the run folder

def write_marker(run_dir, cfg, data_sha, plan=None):
    marker = {"kind": RUN_KIND, "run_id": uuid.uuid4().hex, "model": cfg.model.preset,
              "preset": cfg.train.preset, "epochs": cfg.recipe.epochs, "data_sha256": data_sha,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "plan": plan}
    atomic.write_json(run_dir / RUN_MARKER, marker)
    return marker


def _trim_history(run_dir, epochs_done):
    """Keep the history rows of the epochs the backup holds: a kill between the history row and
    the backup would otherwise leave a row for an epoch that is about to run again."""
    path = run_dir / "history.csv"
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > epochs_done + 1:
        atomic.write_text(path, "".join(lines[:epochs_done + 1]))


def _started_policy(run_dir):
    """The precision policy the run's first stretch trained in (environment.json), or None."""
    import json
    try:
        return json.loads((run_dir / "environment.json").read_text()).get("policy")
    except (OSError, ValueError, AttributeError):
        return None


def test_metrics(model, test):
    """Top-1 and per-class accuracy on the test split (no test-time augmentation), by the scorer
    evaluate uses."""
    pred = np.argmax(model.predict(test.images.astype(np.float32), batch_size=500, verbose=0), axis=1)
    s = score(test.labels, pred)
    return {"test_accuracy": s["accuracy"], "test_images": s["images"],
            "per_class_accuracy": dict(zip(CLASSES, s["per_class_accuracy"]))}


# ---------------------------------------------------------------- the run, step by step

def load_split(cfg, marker, say):
    """((x_fit, y_fit), (x_val, y_val), data sha256): the training split, shuffled and split."""
    t0 = time.perf_counter()
    data, data_sha, data_from = training_data(cfg, marker["data_sha256"] if marker else None)
    fit, val = _split_train_val(data, cfg.recipe.val_size, cfg.recipe.subset, cfg.train.seed)
    say(f"data: {len(fit[1])} training, {len(val[1])} validation images from {data_from} "
        f"({time.perf_counter() - t0:.1f}s)", flush=True)
    return fit, val, data_sha


def plan_to_budget(cfg, scope, fit, n_val, steps_per_epoch, elapsed_s, say):
    """(cfg with the epochs that fit train.time_budget, the plan) after timing the first steps."""
    x_fit, y_fit = fit
    with scope:
        ips, trace_s = budget.measure_images_per_s(
            lambda: build_trainable(cfg.model.preset, cfg.recipe, steps_per_epoch, seed=cfg.train.seed,
                                    fused_batchnorm=cfg.train.fused_batchnorm),
            x_fit.astype(np.float32), _one_hot(y_fit), cfg.recipe.batch_size, feed)
    cfg, plan = budget.plan(cfg, config_mod.parse_duration(cfg.train.time_budget, "train.time_budget"),
                            elapsed_s, ips, trace_s, len(y_fit), n_val)
    say(f"plan: {plan['images_per_s']:.0f} img/s measured -> ~{plan['epoch_s_estimate']:.0f} s per epoch; "
        f"{plan['epochs']} epochs fit the {cfg.train.time_budget} budget (one-cycle sized to them), "
        f"~{plan['estimated_total_s'] / 60:.0f} min in all", flush=True)
    return cfg, plan


def run_callbacks(net, run_dir, recipe, steps_per_epoch, n_fit, resume, stop_after_s, t_start, say):
    """Keras' callbacks and ours, in the order train/callbacks.py explains."""
    callbacks = [EpochTimer()]
    if recipe.ema:
        callbacks.append(keras.callbacks.SwapEMAWeights())  # validation on the averaged weights
    return callbacks + [
        AtomicCheckpoint(net, run_dir, best_so_far=best_val_accuracy(run_dir) if resume else -math.inf,
                         ema=bool(recipe.ema)),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resume),
        Progress(recipe.epochs, steps_per_epoch, recipe.batch_size, n_fit, say=lambda m: say(m, flush=True)),
        keras.callbacks.TerminateOnNaN(),
        *([StopAfter(stop_after_s, t_start)] if stop_after_s else []),
        AtomicBackupAndRestore(str(run_dir / "backup"), say=lambda m: say(m, flush=True)),  # last: an epoch is done once all above are on disk
    ]


def finished_history(run_dir, cfg, recipe, stop_after_s, say):
    """The history, with curves drawn; None when this stretch stopped early; PipelineError on NaN."""
    history = report.write_history(run_dir)
    report.plot_curves(history, run_dir / "curves.png",
                       f"{cfg.model.preset} / {cfg.train.preset} on CIFAR-10 (JPEG q75 copy)")
    bad = [i for i, v in enumerate(history.get("loss", [])) if not math.isfinite(v)]
    if not bad and stop_after_s and len(history.get("loss", [])) < recipe.epochs:
        say(f"stretch over: {len(history['loss'])}/{recipe.epochs} epochs done", flush=True)
        return None
    if bad or len(history.get("loss", [])) < recipe.epochs:
        where = f"epoch {bad[0] + 1}" if bad else "an unfinished epoch"
        kept = "best.h5 kept" if (run_dir / "best.h5").exists() else "no checkpoint was written"
        raise PipelineError(f"{run_dir}: loss became NaN or infinite at {where}; training stopped ({kept})")
    return history


def final_metrics(cfg, run_dir, net, wrapper, history, marker, data_sha, policy, steps_per_epoch, fit_seconds,
                  t_start):
    """Score the best checkpoint on the test split (chooses nothing: reported only) into metrics.json."""
    best_path = run_dir / ("best.h5" if (run_dir / "best.h5").exists() else "last.h5")
    best, _ = checkpoint.load(best_path)  # as export will load it: float32, nothing from the file runs
    epoch_s = history["epoch_seconds"]
    metrics = {**test_metrics(best, evalset.load_test(cfg)), "checkpoint": best_path.name,
               "best_val_accuracy": max(history.get("val_accuracy", [float("nan")])),
               "epochs": len(history["loss"]), "optimizer_steps": int(keras.ops.convert_to_numpy(wrapper.optimizer.iterations)),
               "steps_per_epoch": steps_per_epoch, "preset": cfg.train.preset, "model": cfg.model.preset,
               "params": net.count_params(), "data_sha256": data_sha, "run_id": marker["run_id"], "policy": policy,
               "timings": {"fit_seconds_this_stretch": fit_seconds,
                           "train_seconds_all_epochs": float(sum(epoch_s)),
                           "first_epoch_seconds": epoch_s[0],
                           "median_epoch_seconds": float(np.median(epoch_s[1:] or epoch_s)),
                           "total_seconds_this_stretch": time.perf_counter() - t_start}}
    atomic.write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # finished: nothing left to resume
    return best_path, metrics


def train(cfg, run_dir: Path, resume=False, stop_after_s=None, say=print):
    """Train per `cfg`, writing everything into `run_dir`; returns the run's metrics dict, or None
    when `stop_after_s` ended this stretch early (the run folder resumes it). The whole run holds the
    folder's lock (train/run_lock.py): a second process on the same folder is refused, naming this one."""
    with run_lock(run_dir, fresh=not resume):
        return _train(cfg, Path(run_dir), resume, stop_after_s, say)


def _train(cfg, run_dir, resume, stop_after_s, say):
    t_start = time.perf_counter()
    marker = read_marker(run_dir) if resume else None
    fit, val, data_sha = load_split(cfg, marker, say)

    scope, replicas = _distribution(cfg.train.data_parallel)  # first: jax.distributed starts before any JAX use
    policy = policy_for(cfg.train.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    batch = cfg.recipe.batch_size
    if batch % replicas:
        raise PipelineError(f"batch size {batch} does not split evenly over {replicas} replicas")
    steps_per_epoch = math.ceil(len(fit[1]) / batch)

    plan = None
    if cfg.train.time_budget and not resume:
        cfg, plan = plan_to_budget(cfg, scope, fit, len(val[1]), steps_per_epoch, time.perf_counter() - t_start, say)
    recipe = cfg.recipe
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = write_marker(run_dir, cfg, data_sha, plan)  # first: the folder is a run from here on
        config_mod.write_resolved(cfg, run_dir)
    keras.utils.set_random_seed(cfg.train.seed)
    with scope:
        net, wrapper = build_trainable(cfg.model.preset, recipe, steps_per_epoch, seed=cfg.train.seed,
                                       steps_per_execution=cfg.train.steps_per_execution,
                                       fused_batchnorm=cfg.train.fused_batchnorm)
    env = {**report.environment(), "policy": policy,
           "distribution": {"replicas": replicas, "global_batch": batch, "per_replica_batch": batch // replicas}}
    atomic.write_json(run_dir / ("environment.json" if not resume else f"environment.resume-{int(time.time())}.json"),
                      env)
    say(f"model: {cfg.model.preset} ({net.count_params():,} params), backend {env['backend']}, "
        f"policy {policy}, {replicas} replica(s) x {batch // replicas} images, {recipe.epochs} epochs", flush=True)
    if resume:
        done = backed_up_epochs(run_dir)
        _trim_history(run_dir, done)
        say(f"resume: {run_dir.name} (run {marker['run_id'][:8]}) from epoch {done + 1} of {recipe.epochs}",
            flush=True)
        started = _started_policy(run_dir)
        if started and started != policy:
            say(f"resume: this machine trains in {policy}, the run started in {started} (train.mixed_precision = "
                f"{cfg.train.mixed_precision!r}); weights, optimizer and EMA state are float32 under both, so the "
                "run continues where it was; only the remaining epochs' compute precision changes", flush=True)

    t_fit = time.perf_counter()
    (x_fit, y_fit), (x_val, y_val) = fit, val
    wrapper.fit(**feed(x_fit.astype(np.float32), _one_hot(y_fit), batch, shuffle_seed=cfg.train.seed),
                epochs=recipe.epochs, validation_data=validation(x_val, y_val, batch),
                callbacks=run_callbacks(net, run_dir, recipe, steps_per_epoch, len(y_fit), resume, stop_after_s,
                                        t_start, say), verbose=0)
    fit_seconds = time.perf_counter() - t_fit
    if _multi_process():  # what follows (checkpoint reload, test accuracy) runs in each process alone
        keras.distribution.set_distribution(None)

    history = finished_history(run_dir, cfg, recipe, stop_after_s, say)
    if history is None:
        return None
    best_path, metrics = final_metrics(cfg, run_dir, net, wrapper, history, marker, data_sha, policy,
                                       steps_per_epoch, fit_seconds, t_start)
    say(f"done: {best_path} test accuracy {metrics['test_accuracy']:.4f} on CIFAR-10 (JPEG q75 copy), "
        f"{metrics['timings']['train_seconds_all_epochs'] / 3600:.2f} h of training in all", flush=True)
    return metrics
