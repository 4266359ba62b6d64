"""Latency the way benchmark_model and onnxruntime_perf_test measure it.

Load (initialisation) time, the first inference on its own, then batch-1 latency over a
fixed number of runs after warm-up, reported as percentiles; and the process's peak RSS.
"""
import resource
import time

import numpy as np

from pipeline.runtimes import check_output, open_runner


def peak_rss_mb():
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentiles(times_ms):
    t = np.asarray(times_ms)
    return {"p50": round(float(np.percentile(t, 50)), 3), "p90": round(float(np.percentile(t, 90)), 3),
            "p99": round(float(np.percentile(t, 99)), 3), "mean": round(float(t.mean()), 3),
            "min": round(float(t.min()), 3)}


def open_and_time(entry, path, threads, image, client=None):
    """(runner, load seconds, first-inference ms): the cold start a user's app pays once."""
    t0 = time.perf_counter()
    runner = open_runner(entry, path, threads, client)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    check_output(entry["name"], runner.predict(image[None]), 1)
    first_ms = (time.perf_counter() - t0) * 1000
    return runner, round(load_s, 4), round(first_ms, 3)


def batch1_latency(name, runner, images, warmup_runs, runs):
    """Per-image latency percentiles (ms) over `runs` runs after `warmup_runs`, cycling real images."""
    images = np.asarray(images[:max(1, min(len(images), 64))])
    for i in range(warmup_runs):
        runner.predict(images[i % len(images)][None])
    times = []
    for i in range(runs):
        x = images[i % len(images)][None]
        t0 = time.perf_counter()
        runner.predict(x)
        times.append((time.perf_counter() - t0) * 1000)
    return {"runs": runs, "warmup_runs": warmup_runs, **percentiles(times)}
