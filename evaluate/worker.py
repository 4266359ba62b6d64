"""One artifact (or the peak probe) at one thread count, in a process of its own.

Why a process per run: TensorFlow fixes its thread pools at start-up, peak RSS is only
meaningful per process, and a runtime that crashes on a bad file (a segfault in a native
interpreter) takes down only this run, not the whole evaluation.

    python -m evaluate.worker JOB.json RESULT.json

JOB: {"kind": "artifact" | "probe", "threads", ...}; RESULT: the measurements, or
{"error": "<one line>"} for an expected failure. Thread env vars are set by the parent.
"""
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

PARENT_ENV = "CIFAR_EDGE_EVALUATE_PID"  # set by evaluate.run._spawn


def die_with_parent():
    """Linux: have the kernel SIGKILL this worker when the evaluate process that started it dies, however
    it dies (kill -9 included), so a worker never runs on under PID 1. Elsewhere: nothing."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before prctl took effect: nobody would signal us
        os._exit(1)


def run_artifact(job):
    import numpy as np

    from evaluate import accuracy, latency
    from pipeline import artifacts

    entry, threads = job["entry"], job["threads"]
    images = np.load(job["images"], mmap_mode="r")
    out = {"threads": threads}
    runner, out["load_s"], out["first_inference_ms"] = latency.open_and_time(entry, job["path"], threads, images[0],
                                                                            job.get("client"))
    if job.get("latency_runs"):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out["batch1_ms"] = latency.batch1_latency(entry["name"], runner, images, job["warmup_runs"],
                                                  job["latency_runs"])
        # How many cores the runtime kept busy: the only thread count a client that picks its own reports.
        out["cpu_per_wall"] = round((time.process_time() - cpu0) / (time.perf_counter() - wall0), 2)
    if job.get("accuracy"):
        top1, out["throughput"] = accuracy.predict_top1(entry["name"], runner, images, job["batch"],
                                                        progress=lambda m: print(m, flush=True))
        np.save(job["predictions"], top1)
    if job.get("flops") and artifacts.get(entry["name"]).counts_flops:
        from evaluate.flops import count_flops
        out["flops_per_image"] = count_flops(runner.model)
    if getattr(runner, "class_names", None) is not None:
        out["class_names"] = runner.class_names
    out["peak_rss_mb"] = latency.peak_rss_mb()  # before the profiler's own session
    if hasattr(runner, "close"):
        runner.close()
    if job.get("profile_runs"):
        from evaluate.profile import profile
        out["profile"] = profile(entry, job["path"], threads, images[0], job["profile_runs"])
    return out


def run_probe(job):
    from evaluate.flops import peak_gops
    return {"threads": job["threads"], "gops": peak_gops(job["threads"], job.get("seconds", 1.5))}


def main(job_path, result_path):
    die_with_parent()
    from pipeline import atomic
    from pipeline.errors import PipelineError, first_line

    job = json.loads(Path(job_path).read_text())
    t0 = time.perf_counter()
    try:
        result = run_artifact(job) if job["kind"] == "artifact" else run_probe(job)
    except PipelineError as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # an unexpected runtime error is still this artifact's failure only
        traceback.print_exc()
        result = {"error": f"{job.get('entry', {}).get('name', 'probe')}: {type(exc).__name__}: {first_line(exc)}"}
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    atomic.write_json(result_path, result)


if __name__ == "__main__":
    main(*sys.argv[1:3])
