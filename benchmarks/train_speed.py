"""Training speed of the `seed` model with the `fast` recipe, and of its PyTorch peer, in one run.

  python benchmarks/train_speed.py                       # full data, 3 epochs each (a GPU machine)
  python benchmarks/train_speed.py --images 4096 --epochs 3 --backend tensorflow   # a CPU

Keras runs through the product's own train stage (`python -m train`), so the numbers include
data load, compile and checkpointing exactly as users get them. The PyTorch peer
(benchmarks/torch_peer.py: channels_last, bf16 on GPU, torch.compile) trains the same network
on the same images, if torch is installed. Writes benchmarks/results/train.md.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def keras_run(args, out_dir):
    cmd = [sys.executable, "-m", "train", "--preset", "fast", "--epochs", str(args.epochs),
           "--subset", str(args.images), "--val-size", "1000", "--backend", args.backend,
           "--out-dir", str(out_dir), "--run-name", "bench"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - t0
    metrics = json.loads((out_dir / "bench" / "metrics.json").read_text())
    env = json.loads((out_dir / "bench" / "environment.json").read_text())
    return {"wall_seconds": wall, "epochs": json.loads((out_dir / "bench" / "history.json").read_text())["epoch_seconds"],
            "device": ", ".join(env.get("devices", [])), "policy": env["policy"]}


def torch_run(args):
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    import numpy as np
    from benchmarks.torch_peer import run
    from pipeline import config
    from pipeline.data import load_cifar10, resolve_source
    train = load_cifar10(resolve_source(str(config.project_path(config.load()["data"]["source"]))))["train"]
    idx = np.random.default_rng(0).permutation(len(train))[: args.images]
    return run(train.images[idx], train.labels[idx], epochs=args.epochs, compile=not args.no_compile)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=45000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backend", default="jax")
    p.add_argument("--no-compile", action="store_true", help="PyTorch eager (torch.compile needs a compiler)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        k = keras_run(args, Path(tmp))
    t = torch_run(args)
    k_epoch = sorted(k["epochs"][1:] or k["epochs"])[len(k["epochs"][1:] or k["epochs"]) // 2]
    lines = [f"## Training speed ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `python benchmarks/train_speed.py --images {args.images} --epochs {args.epochs} "
             f"--backend {args.backend}{' --no-compile' if args.no_compile else ''}`. Machine: "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; Keras devices: {k['device']}.",
             "", "| implementation | first epoch (s, incl. compile) | median later epoch (s) | images/s | whole run (s) |",
             "| --- | --- | --- | --- | --- |",
             f"| Keras 3 ({args.backend}, {k['policy']}) via `python -m train` | {k['epochs'][0]:.2f} | {k_epoch:.2f} | "
             f"{args.images / k_epoch:.0f} | {k['wall_seconds']:.1f} |"]
    if t:
        t_epoch = sorted(t["epoch_seconds"][1:] or t["epoch_seconds"])[len(t["epoch_seconds"][1:] or t["epoch_seconds"]) // 2]
        lines.append(f"| PyTorch peer ({'eager' if args.no_compile else 'torch.compile'}) | {t['epoch_seconds'][0]:.2f} | "
                     f"{t_epoch:.2f} | {args.images / t_epoch:.0f} | {sum(t['epoch_seconds']):.1f} |")
        lines += ["", f"Ratio of median epoch times, Keras / PyTorch: **{k_epoch / t_epoch:.2f}** "
                      f"(PyTorch peer params: {t['params']:,})."]
    else:
        lines += ["", "PyTorch is not installed here: no peer measured."]
    out = ROOT / "benchmarks" / "results" / "train.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
