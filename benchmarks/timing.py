"""One latency method for the runtime benchmarks: the same warm-up, run count and percentile everywhere.

Deliberately independent of evaluate/ (the project's evaluator): these numbers check its claims.
"""
import time

import numpy as np


def latency_ms(run, warmup=30, runs=300):
    """p50 and p90 wall time of `run()` in ms, after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        run()
        times[i] = time.perf_counter() - t0
    return {"p50": round(float(np.percentile(times, 50)) * 1e3, 3),
            "p90": round(float(np.percentile(times, 90)) * 1e3, 3)}


def images_per_s(run, batch, seconds=3.0):
    """Throughput of repeated `run()` calls on a batch of `batch` images, after one warm-up call."""
    run()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run()
        done += batch
    return round(done / (time.perf_counter() - t0), 1)


def machine_line():
    """The CPU model, cores and the ISA its fp32 and int8 kernels use."""
    from pipeline import machine
    d = machine.describe()
    return (f"{d['cpu']}, {d['cores']} cores; fp32: {machine.isa_for('fp32')}, "
            f"int8: {machine.isa_for('int8')}")
