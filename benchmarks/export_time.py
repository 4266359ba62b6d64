"""Time `python -m export` on the `seed` architecture and check re-export gives the same bytes.

Runs the CLI twice, each in a fresh process, on the same checkpoint (default: an untrained
`seed` model saved to /tmp: conversion time does not depend on the weights' values), and
writes benchmarks/results/export.md: wall time of each run, seconds per artifact (from the
manifest), and whether the two runs wrote byte-identical artifacts.

    nice -n 10 .venv/bin/python benchmarks/export_time.py [--checkpoint PATH] [--qat-minutes M]
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
RESULT = ROOT / "benchmarks" / "results" / "export.md"


def export_once(checkpoint, out_dir, extra):
    cmd = [sys.executable, "-m", "export", "--checkpoint", str(checkpoint), "--out-dir", str(out_dir), *extra]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"export failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1]}")
    print(f"  run took {wall:.1f}s", flush=True)
    return wall, json.loads((out_dir / "manifest.json").read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="default: an untrained `seed` model saved to a temp folder")
    p.add_argument("--qat-minutes", type=float, default=0,
                   help="also time QAT (tflite_qat_int8) with this budget, on the calibration images")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="export-bench-"))
    checkpoint = args.checkpoint
    if not checkpoint:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
        from pipeline.model import build_preset
        keras.utils.set_random_seed(0)
        checkpoint = tmp / "seed_untrained.h5"
        build_preset("seed").save(checkpoint)
    extra = ["--qat", "--qat-minutes", str(args.qat_minutes), "--set", "export.qat_data=calibration"] \
        if args.qat_minutes else []
    runs = []
    for i in (1, 2):
        print(f"export run {i} of 2: {checkpoint}", flush=True)
        runs.append(export_once(checkpoint, tmp / f"run{i}", extra))
    (wall1, m1), (wall2, m2) = runs
    second = {e["name"]: e for e in m2["artifacts"]}
    rows = []
    for e in m1["artifacts"]:
        same = e["sha256"] == second[e["name"]]["sha256"]
        rows.append(f"| {e['name']} | {e['export_seconds']:.1f} | {second[e['name']]['export_seconds']:.1f} | "
                    f"{e['bytes']:,} | {e['parity']['top1_agreement']:.2%} | {e['parity']['max_abs_diff']:.2e} | "
                    f"{'yes' if same else 'NO'} | {'yes' if e['deterministic'] else 'no'} |")
        if e["deterministic"] and not same:
            print(f"warning: {e['name']}: manifest says deterministic={e['deterministic']}, runs say {same}")
    cpus = os.cpu_count()
    text = "\n".join([
        "# Export time",
        "",
        f"`python -m export` on `{checkpoint if args.checkpoint else 'an untrained seed model (792,330 params)'}`, "
        f"run twice in fresh processes on {platform.machine()} with {cpus} CPU cores, no GPU "
        f"(`{' '.join(['nice -n 10 .venv/bin/python benchmarks/export_time.py'] + sys.argv[1:])}`).",
        "",
        f"- whole CLI, first run: **{wall1:.1f} s** (second run {wall2:.1f} s); budget 300 s, QAT aside. "
        "Includes Python/TF start-up, loading the checkpoint and calibration images, and running every "
        "artifact on the parity images.",
        f"- tools: {', '.join(f'{k} {v}' for k, v in m1['tool_versions'].items())}",
        "",
        "Seconds per artifact = conversion only (the manifest's `export_seconds`); int8 includes calibration.",
        "Parity on an untrained model says little (it predicts nearly one class); see the report for a trained one.",
        "",
        "| artifact | run 1 s | run 2 s | bytes | top-1 agreement | max abs diff | same sha256 | manifest deterministic |",
        "|---|---|---|---|---|---|---|---|",
        *rows, ""])
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
