"""python -m train: train a model preset on the configured data; one run folder per run.

  python -m train                       # the config's recipe (fast) on the config's data
  python -m train --time-budget 90m     # size the epochs (and the one-cycle schedule) to 90 minutes
  python -m train --preset smoke        # a few hundred steps on a subset (tests, a first look)
  python -m train --resume runs/NAME    # continue an interrupted run from its last finished epoch
  python -m train --resume runs/NAME --stop-after 50m   # one resumable stretch of at most ~50 minutes
  python -m train --summary             # print the model summary and parameter totals
"""
import argparse
import os
import sys
import time
from pathlib import Path

from pipeline import config as config_mod
from pipeline import console
from pipeline.errors import PipelineError, fail_cleanly

# Flags that do not change what is trained: the only ones --resume accepts.
STRETCH_FLAGS = ("resume", "stop_after", "quiet", "verbose", "backend")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    config_mod.add_config_args(p)
    p.add_argument("--preset", dest="train.preset", help="training recipe: a key of train.presets (fast, seed, smoke)")
    p.add_argument("--model", dest="model.preset", help="model preset: seed, resnet20v1")
    p.add_argument("--epochs", dest="recipe.epochs", type=int)
    p.add_argument("--batch-size", dest="recipe.batch_size", type=int)
    p.add_argument("--lr", dest="recipe.lr", type=float)
    p.add_argument("--ema", dest="recipe.ema", type=float, help="weight EMA momentum (0 = off)")
    p.add_argument("--subset", dest="recipe.subset", type=int, help="train on this many images (0 = all)")
    p.add_argument("--val-size", dest="recipe.val_size", type=int)
    p.add_argument("--seed", dest="train.seed", type=int)
    p.add_argument("--data", dest="data.source", help="data source (CIFAR10_DATA wins)")
    p.add_argument("--out-dir", dest="train.out_dir")
    p.add_argument("--time-budget", dest="train.time_budget", metavar="DURATION",
                   help="size the run to this wall-clock budget, e.g. 90m or 2h")
    p.add_argument("--run-name", default=None, help="run folder name (default: preset-model-time)")
    p.add_argument("--data-parallel", dest="train.data_parallel", action="store_const", const=True,
                   help="split each batch over all local devices")
    p.add_argument("--mixed-precision", dest="train.mixed_precision", help="auto, float32 or mixed_bfloat16")
    p.add_argument("--backend", choices=["tensorflow", "jax"], help="Keras backend (default: KERAS_BACKEND)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last finished epoch")
    p.add_argument("--stop-after", metavar="DURATION",
                   help="stop this stretch at the first epoch end that would pass DURATION; resume later")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--summary", action="store_true", help="print the model summary and exit")
    return p, p.parse_args(argv)


def _virtual_cpus():
    """CIFAR_EDGE_VIRTUAL_CPUS=N splits the CPU into N devices (tests of data parallelism)."""
    n = int(os.environ.get("CIFAR_EDGE_VIRTUAL_CPUS", "0"))
    if n > 1 and os.environ.get("KERAS_BACKEND") == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def check_run_name(name):
    """--run-name is one plain folder name inside --out-dir: no separator, no '.' or '..', nothing absolute,
    no control character (`../../x` or `/tmp/x` would put the run outside --out-dir)."""
    if name is None:
        return
    plain = name not in ("", ".", "..") and not any(sep in name for sep in ("/", "\\", os.sep, os.altsep) if sep) \
        and not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in name) and Path(name).name == name
    if not plain:
        raise PipelineError(f"--run-name {name!r}: must be one plain folder name, not '.' or '..' and without '/', "
                            "'\\' or control characters: the run folder goes inside --out-dir (nothing was written)")


def _refuse_recipe_flags(parser, args):
    """--resume continues the run as it was planned: a flag that would change it is an error."""
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    for dest, value in vars(args).items():
        given = value not in (None, False, []) if dest != "set" else bool(value)
        if given and dest not in STRETCH_FLAGS and dest in flags:
            raise PipelineError(f"--resume: {flags[dest]} would change the run's recipe or data; a resumed run "
                                f"follows its own config.resolved.json (only {', '.join('--' + f.replace('_', '-') for f in STRETCH_FLAGS[1:])} "
                                "may be given)")


@fail_cleanly
def main(argv=None):
    parser, args = parse_args(argv)
    # The backend is fixed when keras is first imported, so set it before any import of keras.
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    stop_after_s = config_mod.parse_duration(args.stop_after, "--stop-after") if args.stop_after else None
    check_run_name(args.run_name)  # before anything is read or written

    if args.resume:
        _refuse_recipe_flags(parser, args)
        run_dir = Path(args.resume)
        from train.run_folder import check_resumable, read_marker
        read_marker(run_dir)  # before anything is read from or written to the folder
        check_resumable(run_dir)
        cfg = config_mod.from_dict(config_mod.read_json(run_dir / "config.resolved.json"),
                                   where=str(run_dir / "config.resolved.json"))
    else:
        cfg = config_mod.from_args(args)
    if not args.summary:  # a read-only disk or a file in the way of the run folder: before TensorFlow starts
        from pipeline import atomic
        atomic.check_writable_dir(run_dir if args.resume else config_mod.project_path(cfg.train.out_dir))
    console.start_tensorflow(args.verbose, (cfg.train.intra_op_threads, cfg.train.inter_op_threads), _virtual_cpus)

    if args.summary:
        from pipeline.model import build_preset, param_counts
        model = build_preset(cfg.model.preset)
        model.summary()
        counts = param_counts(model)
        print(f"{cfg.model.preset}: {counts['total']:,} params "
              f"({counts['trainable']:,} trainable, {counts['non_trainable']:,} non-trainable)")
        return 0

    if not args.resume:
        name = args.run_name or f"{cfg.train.preset}-{cfg.model.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = config_mod.project_path(cfg.train.out_dir) / name
        from train.run_lock import LOCK_FILE  # a lock file alone is what a run killed while starting leaves
        if run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
            raise PipelineError(f"{run_dir}: folder exists and is not empty; use --resume {run_dir} "
                                "(if it is a run) or another --run-name")
    from train.loop import train

    def say(*a, **k):
        if not args.quiet:
            print(*a, **k)

    metrics = train(cfg, run_dir, resume=bool(args.resume), stop_after_s=stop_after_s, say=say)
    if metrics is None:
        print(f"stopped after this stretch's {args.stop_after}; continue with: python -m train --resume {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
