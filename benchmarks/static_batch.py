"""Fixed batch-1 files (what a phone gets) against the dynamic-batch ones, in one run: size and batch-1 latency.

    python benchmarks/static_batch.py [--manifest artifacts/manifest.json] [--runs 500]

Pairs every `*_b1` kind of the artifact table with the dynamic kind of the same format and precision,
runs both in the runtime they ship with (LiteRT interpreter / onnxruntime, 1 and 2 threads) on the
same image, interleaved (dynamic, static, dynamic, static, ...: a busy neighbour hits both alike),
and writes benchmarks/results/static_batch.md. Time it only when nothing else runs.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from pipeline import atomic, config, evalset, manifest as manifest_mod  # noqa: E402
from pipeline.artifacts import ARTIFACTS  # noqa: E402
from pipeline.runtimes import RUNNERS  # noqa: E402
from timing import latency_ms, machine_line  # noqa: E402

ROUNDS = 3  # interleaved rounds per pair and thread count; the table shows the median round


def pairs():
    """(dynamic kind, static kind) for every fixed-batch row whose format has a dynamic kind (.ort has none)."""
    for row in ARTIFACTS.values():
        if row.batch:
            twin = next((r for r in ARTIFACTS.values() if not r.batch and r.format == row.format
                         and r.precision == row.precision and r.default), None)
            if twin:
                yield twin, row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", default="artifacts/manifest.json")
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "static_batch.md"))
    args = p.parse_args(argv)
    manifest_path = Path(args.manifest)
    data = manifest_mod.read(manifest_path)
    image = evalset.load_test(config.load()).images[:1]
    lines = ["# Fixed batch 1 vs dynamic batch", "",
             f"`python benchmarks/static_batch.py --runs {args.runs}` on {machine_line()}; batch-1 p50 over "
             f"{args.runs} runs after 30 warm-up runs, median of {ROUNDS} interleaved rounds.", "",
             "| format | precision | dynamic kind | bytes | static kind | bytes | threads | dynamic p50 ms "
             "| static p50 ms | static / dynamic |", "| --- " * 10 + "|"]
    for dyn, static in pairs():
        paths = {r.name: manifest_mod.verify(manifest_path, manifest_mod.find(data, r.name)) for r in (dyn, static)}
        for threads in (1, 2):
            runners = {name: RUNNERS[ARTIFACTS[name].format](name, path, threads) for name, path in paths.items()}
            p50 = {name: [] for name in runners}
            for _ in range(ROUNDS):
                for name, runner in runners.items():
                    p50[name].append(latency_ms(lambda r=runner: r.predict(image), runs=args.runs)["p50"])
            d, s = (float(np.median(p50[r.name])) for r in (dyn, static))
            lines.append(f"| {dyn.format} | {dyn.precision} | `{dyn.name}` | {paths[dyn.name].stat().st_size:,} "
                         f"| `{static.name}` | {paths[static.name].stat().st_size:,} | {threads} | {d:.3f} | {s:.3f} "
                         f"| {s / d:.2f}x |")
            print(lines[-1], flush=True)
    atomic.write_text(Path(args.out), "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
