"""Where a training step's time goes on this CPU: oneDNN's own per-primitive log of the default recipe.

Runs the product's training model (train.loop.build_trainable: augmentation + network + the `fast`
recipe's optimizer and loss, the CPU default precision) for a few steps with ONEDNN_VERBOSE=1, which
makes oneDNN print every primitive it executes with its time. The timed steps' lines are summed per
primitive kind (convolution forward / backward-data / backward-weights, reorder = layout conversion,
batch norm, eltwise, ...); what oneDNN does not account for is TensorFlow's own work (Eigen ops, the
optimizer update, augmentation, casts, the executor). The same steps are timed again without the log
(printing costs time), in a process of their own. Writes benchmarks/results/train_step_profile.md.

    .venv/bin/python benchmarks/train_step_profile.py [--precision mixed_bfloat16] [--batch 512] [--steps 4]
"""
import argparse
import collections
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "train_step_profile.md"
MARK = "=== timed steps start ==="


def child(precision, batch, steps, warmup=3):
    """Warm up, print MARK (with C stdio flushed, so oneDNN's lines stay in order), run the timed steps."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from pipeline import config as config_mod
    from train.loop import build_trainable, without_autotune
    cfg = config_mod.load()
    tf.config.threading.set_intra_op_parallelism_threads(cfg.train.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(cfg.train.inter_op_threads)
    import keras
    keras.mixed_precision.set_global_policy(precision)
    recipe = dataclasses.replace(cfg.train.presets["fast"], batch_size=batch)
    _, model = build_trainable("seed", recipe, steps_per_epoch=steps)
    rng = np.random.default_rng(0)
    n = batch * max(steps, warmup)
    x = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    data = lambda k: without_autotune(  # noqa: E731
        tf.data.Dataset.from_tensor_slices((x[:k * batch], y[:k * batch])).batch(batch))
    model.fit(data(warmup), epochs=1, verbose=0)
    ctypes.CDLL(None).fflush(None)
    sys.stdout.write(MARK + "\n")
    sys.stdout.flush()
    t0 = time.perf_counter()
    model.fit(data(steps), epochs=1, verbose=0)
    seconds = time.perf_counter() - t0
    ctypes.CDLL(None).fflush(None)
    sys.stdout.write(json.dumps({"seconds": seconds}) + "\n")
    sys.stdout.flush()


def run_child(args, verbose):
    env = {**os.environ, "ONEDNN_VERBOSE": "1" if verbose else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, __file__, "--_child", "--precision", args.precision, "--batch",
                          str(args.batch), "--steps", str(args.steps)], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    timed = out.split(MARK, 1)[1].splitlines()
    seconds = json.loads(timed[-1])["seconds"]
    return seconds, [l for l in timed if l.startswith("onednn_verbose") and ",exec," in l]


def summarise(lines):
    """ms per (primitive, direction) and per implementation, from `onednn_verbose,v1,primitive,exec,...` lines."""
    by_kind, by_impl = collections.Counter(), collections.Counter()
    for line in lines:
        f = line.split(",")
        kind, impl, prop = f[5], f[6], f[7]
        if kind == "convolution":
            kind = {"forward_training": "convolution forward", "forward_inference": "convolution forward",
                    "backward_data": "convolution backward-data",
                    "backward_weights": "convolution backward-weights"}.get(prop, f"convolution {prop}")
        ms = float(f[-1])
        by_kind[kind] += ms
        by_impl[f"{f[5]} {impl}"] += ms
    return by_kind, by_impl


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default=None, help="default: the CPU default (train.loop.policy_for auto)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.precision is None:
        from pipeline import machine
        args.precision = "mixed_bfloat16" if machine.native_bf16() else "float32"
    if args._child:
        return child(args.precision, args.batch, args.steps)
    plain_s, _ = run_child(args, verbose=False)
    logged_s, lines = run_child(args, verbose=True)
    by_kind, by_impl = summarise(lines)
    onednn_ms = sum(by_kind.values())
    step_ms, logged_step_ms = plain_s / args.steps * 1e3, logged_s / args.steps * 1e3
    from benchmarks.timing import machine_line
    rows = [f"| {k} | {v / args.steps:.1f} | {v / onednn_ms:.0%} | {v / args.steps / logged_step_ms:.0%} |"
            for k, v in by_kind.most_common()]
    other = logged_step_ms - onednn_ms / args.steps
    text = "\n".join([
        "# Where a training step's time goes (oneDNN verbose log)", "",
        f"One run of `.venv/bin/python benchmarks/train_step_profile.py --precision {args.precision} --batch "
        f"{args.batch} --steps {args.steps}` on {machine_line()}; {time.strftime('%Y-%m-%d')}. The `seed` model's "
        "training step as `python -m train` runs it (augmentation, network, SGD + label smoothing, the config's "
        "thread settings).", "",
        f"- step without the log: **{step_ms:.0f} ms** ({args.batch / step_ms * 1e3:.0f} img/s); with the log "
        f"({len(lines) / args.steps:.0f} lines per step): {logged_step_ms:.0f} ms"
        + (" (the log's own cost)" if logged_step_ms > 1.05 * step_ms else " (the log costs less than the "
           "run-to-run noise)"),
        f"- oneDNN primitives: {onednn_ms / args.steps:.0f} ms per step; everything else (TensorFlow's own "
        f"kernels, optimizer update, augmentation, casts, executor): ~{other:.0f} ms "
        f"({other / logged_step_ms:.0%} of the logged step)", "",
        "| oneDNN primitive | ms per step | share of oneDNN | share of logged step |", "|---|---|---|---|",
        *rows, "", "Top implementations:", "", "| primitive implementation | ms per step |", "|---|---|",
        *[f"| {k} | {v / args.steps:.1f} |" for k, v in by_impl.most_common(8)], ""])
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
