"""python -m train: train a model preset on the configured data; one run folder per run.

  python -m train                       # the config's preset (fast) on the config's data
  python -m train --preset smoke        # a few hundred steps on a subset (CPU, tests)
  python -m train --resume runs/NAME    # continue an interrupted run from its last epoch
  python -m train --summary             # print the model summary and parameter totals
"""
import argparse
import os
import sys
import time
from pathlib import Path

from pipeline import config as config_mod
from pipeline.errors import PipelineError, fail_cleanly


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    config_mod.add_config_args(p)
    p.add_argument("--preset", dest="train.preset", help="training preset: seed, fast, smoke")
    p.add_argument("--model", dest="model.preset", help="model preset: seed, resnet20v1")
    p.add_argument("--epochs", dest="train.epochs", type=int)
    p.add_argument("--batch-size", dest="train.batch_size", type=int)
    p.add_argument("--lr", dest="train.lr", type=float)
    p.add_argument("--subset", dest="train.subset", type=int, help="train on this many images (0 = all)")
    p.add_argument("--seed", dest="train.seed", type=int)
    p.add_argument("--val-size", dest="train.val_size", type=int)
    p.add_argument("--data", dest="data.source", help="data source (CIFAR10_DATA wins)")
    p.add_argument("--out-dir", dest="train.out_dir")
    p.add_argument("--run-name", default=None, help="run folder name (default: preset-model-time)")
    p.add_argument("--data-parallel", dest="train.data_parallel", action="store_const", const=True,
                   help="split each batch over all local devices")
    p.add_argument("--mixed-precision", dest="train.mixed_precision", help="auto, float32 or mixed_bfloat16")
    p.add_argument("--backend", choices=["tensorflow", "jax"], help="Keras backend (default: KERAS_BACKEND)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last completed epoch")
    p.add_argument("--summary", action="store_true", help="print the model summary and exit")
    return p.parse_args(argv)


def _virtual_cpus():
    """CIFAR_EDGE_VIRTUAL_CPUS=N splits the CPU into N devices (tests of data parallelism)."""
    n = int(os.environ.get("CIFAR_EDGE_VIRTUAL_CPUS", "0"))
    if n > 1 and os.environ.get("KERAS_BACKEND") == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


@fail_cleanly
def main(argv=None):
    args = parse_args(argv)
    # The backend is fixed when keras is first imported, so set it before any import of keras.
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _virtual_cpus()

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.resolved.json").exists():
            raise PipelineError(f"{run_dir}: not a run folder (no config.resolved.json)")
        import json
        cfg = json.loads((run_dir / "config.resolved.json").read_text())
    else:
        cfg = config_mod.from_args(args)

    if args.summary:
        from pipeline.model import build_preset, param_counts
        model = build_preset(cfg["model"]["preset"])
        model.summary()
        counts = param_counts(model)
        print(f"{cfg['model']['preset']}: {counts['total']:,} params "
              f"({counts['trainable']:,} trainable, {counts['non_trainable']:,} non-trainable)")
        return 0

    if not args.resume:
        name = args.run_name or f"{cfg['train']['preset']}-{cfg['model']['preset']}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = config_mod.project_path(cfg["train"]["out_dir"]) / name
        if (run_dir / "history.csv").exists():
            raise PipelineError(f"{run_dir}: run folder exists; use --resume {run_dir} or another --run-name")
    from train.loop import train
    train(cfg, run_dir, resume=bool(args.resume))
    return 0


if __name__ == "__main__":
    sys.exit(main())
