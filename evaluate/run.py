"""Evaluate every artifact in a manifest: accuracy, latency, distance to peak; gates; the report.

Each artifact runs in worker processes (evaluate/worker.py): one at all cores that also
scores the test split and measures batch-64 throughput, one per other thread count for
batch-1 latency. A failing artifact (missing, sha256 mismatch, unreadable, wrong shape,
crashed runtime) gets a row saying why; the others are still evaluated.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluate import baseline, gates, worker
from pipeline import artifacts, atomic, config as config_mod, evalset, machine, mobile_env, sampling
from pipeline import manifest as manifest_mod
from pipeline.artifacts import REFERENCE
from pipeline.errors import PipelineError
from pipeline.scoring import score

SCHEMA_VERSION = 3  # 3: peak_gops per precision (fp32, int8) replaces the float32-only peak_gflops


def _thread_counts(configured):
    """[1, 0] -> [1, all cores]; 0 means all cores; duplicates dropped, order kept."""
    out = []
    for t in configured:
        t = machine.cores() if int(t) == 0 else int(t)
        if t not in out:
            out.append(t)
    return out


def _spawn(job, workdir, tag, timeout_s):
    """Run one worker (a client's in the mobile environment); its result dict, or {"error": ...} if it
    crashed or timed out."""
    job_path, result_path = workdir / f"{tag}.job.json", workdir / f"{tag}.result.json"
    log_path = workdir / f"{tag}.log"
    job_path.write_text(json.dumps(job))
    threads = str(job["threads"])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
           worker.PARENT_ENV: str(os.getpid())}  # the worker dies with this process, even on kill -9
    name = job.get("entry", {}).get("name", "probe")
    python = sys.executable
    if job.get("client"):
        name += f"@{job['client']}"
        try:
            python, env = str(mobile_env.python()), mobile_env.env(env)
        except PipelineError as exc:
            return {"error": f"{name}: {exc}"}
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run([python, "-m", "evaluate.worker", str(job_path), str(result_path)],
                                  cwd=config_mod.ROOT, env=env, stderr=log, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"{name}: timed out after {timeout_s:.0f} s at {threads} threads"}
    if result_path.exists():
        return json.loads(result_path.read_text())
    tail = [l for l in log_path.read_text(errors="replace").splitlines() if l.strip()][-1:]
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    return {"error": f"{name}: runtime crashed ({how}){': ' + tail[0][:200] if tail else ''}"}


def _row(entry):
    return {"name": entry["name"], "format": entry["format"], "precision": entry["precision"],
            "kind": entry["kind"], "path": entry["path"], "bytes": entry["bytes"], "size_mb": round(entry["bytes"] / 1e6, 3),
            "status": "ok", "error": None,
            **{k: entry[k] for k in ("mobile_ready", "ort_mobile", "layer_error") if k in entry}}


def evaluate_artifact(entry, manifest_path, images_npy, workdir, thread_counts, ev, latency, progress):
    """One manifest entry -> (row, top-1 predictions or None)."""
    row = _row(entry)
    try:
        path = manifest_mod.verify(manifest_path, entry)
    except PipelineError as exc:
        row.update(status="error", error=str(exc))
        return row, None
    all_cores = max(thread_counts)
    row["latency_by_threads"] = {}
    started = time.perf_counter()
    # All cores first: it scores the test split, so a broken artifact fails before the latency runs.
    for threads in sorted(thread_counts, key=lambda t: t != all_cores):
        scoring = threads == all_cores
        if not scoring and not latency:
            continue
        job = {"kind": "artifact", "entry": entry, "path": str(path), "threads": threads,
               "images": str(images_npy), "accuracy": scoring, "flops": scoring,
               "batch": ev.throughput_batch, "predictions": str(workdir / f"{entry['name']}.npy"),
               "warmup_runs": ev.warmup_runs, "latency_runs": ev.latency_runs if latency else 0,
               "profile_runs": ev.profile_runs if ev.profile and threads == min(thread_counts) else 0}
        progress(f"  {entry['name']}: {'scoring + ' if scoring else ''}"
                 f"{'latency ' if latency else ''}at {threads} thread{'s' * (threads > 1)}")
        result = _spawn(job, workdir, f"{entry['name']}.t{threads}", ev.worker_timeout_s)
        if "error" in result:
            row.update(status="error", error=result["error"])
            return row, None
        row["latency_by_threads"][str(threads)] = result
    row["wall_s"] = round(time.perf_counter() - started, 2)
    scored = row["latency_by_threads"][str(all_cores)]
    row["throughput"] = scored.pop("throughput")
    row["flops_per_image"] = scored.pop("flops_per_image", None)
    profiled = [r.pop("profile") for r in row["latency_by_threads"].values() if "profile" in r]
    if profiled:
        row["profile"] = profiled[0]
    return row, np.load(workdir / f"{entry['name']}.npy")


def evaluate_client(entry, artifact_row, manifest, images_npy, workdir, ev, latency, progress):
    """The same file through an app-side client (the table's `clients`): a row NAME@CLIENT, scored and timed
    at batch 1 in one worker of the mobile environment; (row, top-1 predictions or None)."""
    rows = []
    for client in artifacts.get(entry["name"]).clients:
        row = {**{k: artifact_row[k] for k in ("format", "precision", "kind", "path", "bytes", "size_mb")},
               "name": f"{entry['name']}@{client}", "artifact": entry["name"], "client": client,
               "status": "ok", "error": None, "latency_by_threads": {}}
        if artifact_row["status"] != "ok":
            row.update(status="error", error=f"{row['name']}: not run: {entry['name']} failed")
            rows.append((row, None))
            continue
        progress(f"  {row['name']}: scoring{' + latency' if latency else ''} in {client}, one image at a time")
        started = time.perf_counter()
        try:
            path = manifest_mod.verify(manifest[0], entry)  # again: the file may have changed since its own row
        except PipelineError as exc:
            row.update(status="error", error=str(exc))
            rows.append((row, None))
            continue
        job = {"kind": "artifact", "entry": entry, "client": client, "path": str(path),
               "threads": 1, "images": str(images_npy), "accuracy": True, "flops": False, "batch": 1,
               "predictions": str(workdir / f"{row['name']}.npy"), "warmup_runs": ev.warmup_runs,
               "latency_runs": ev.latency_runs if latency else 0, "profile_runs": 0}
        result = _spawn(job, workdir, row["name"], ev.worker_timeout_s)
        names = result.get("class_names")
        if "error" not in result and names != manifest[1]["classes"]:
            result = {"error": f"{row['name']}: the class names MediaPipe read from the model's metadata, "
                               f"{names}, are not the manifest's classes"}
        if "error" in result:
            row.update(status="error", error=result["error"])
            rows.append((row, None))
            continue
        row["throughput"] = result.pop("throughput")
        row["client_threads"] = f"the client's own (CPU time / wall time over the latency runs: " \
                                f"{result.get('cpu_per_wall', 'not measured')})"
        row["latency_by_threads"]["1"] = result
        row["wall_s"] = round(time.perf_counter() - started, 2)
        rows.append((row, np.load(workdir / f"{row['name']}.npy")))
    return rows


def _add_peak_share(row, flops, peak, thread_counts):
    """Achieved G(FL)OP/s = graph FLOPs / time, over the peak of the precision the artifact computes in
    (the artifact table's `compute` column: int8 or float32) at the same thread count.

    A share above 100% would mean the probe missed the CPU's real peak (or the runtime skips work the
    graph states): it is recorded as None with `above_peak`, never printed as a percentage.
    """
    if not flops or row["status"] != "ok" or row.get("client"):  # a client picks its own threads
        return
    precision = artifacts.of_row(row).compute
    peaks = peak.get(precision) or {}
    row["gflops"] = {}

    def add(label, achieved, t):
        if peaks.get(t):
            share = achieved / peaks[t]
            row["gflops"][label] = {"gflops": round(achieved, 2), "peak": precision,
                                    "share_of_peak": round(share, 4) if share <= 1 else None,
                                    **({"above_peak": round(share, 4)} if share > 1 else {})}

    for t, measured in row["latency_by_threads"].items():
        if "batch1_ms" in measured:
            add(f"batch1_{t}t", flops / (measured["batch1_ms"]["p50"] / 1000) / 1e9, t)
    add(f"batch{row['throughput']['batch']}_{max(thread_counts)}t",
        flops * row["throughput"]["images_per_s"] / 1e9, str(max(thread_counts)))


# ---------------------------------------------------------------- the steps, in order

def read_inputs(cfg):
    """(manifest path, manifest, baseline path, baseline): everything checked before any scoring."""
    ev = cfg.evaluate
    # the report is written last: a read-only disk or a file in the way would otherwise fail only after scoring
    atomic.check_writable_dir(config_mod.project_path(ev.report_dir))
    manifest_path = config_mod.project_path(ev.manifest)
    manifest = manifest_mod.read(manifest_path)
    if not manifest["artifacts"]:
        raise PipelineError(f"{manifest_path}: the manifest lists no artifacts")
    manifest_mod.read_labels(manifest_path, manifest)
    base_path = config_mod.project_path(ev.baseline) if ev.baseline else None
    return manifest_path, manifest, base_path, baseline.load(base_path) if base_path else None


def load_test_images(cfg, base, base_path, timings):
    """(images, labels, test-data record, size of the whole split): evaluate.limit images spread over the
    classes (pipeline.sampling), refused first if the baseline was scored on other test data."""
    t0 = time.perf_counter()
    test = evalset.load_test(cfg)
    index = sampling.eval_subset(test.labels, cfg.evaluate.limit)
    test_data = baseline.check_test_data(base, base_path, cfg, len(index))
    timings["load_test_s"] = round(time.perf_counter() - t0, 2)
    return test.images[index], test.labels[index], test_data, len(test)


class PeakProbe:
    """Best matmul rate per precision and thread count, kept as the max over probes (before and after
    the artifacts): on a shared machine, a busy neighbour only ever lowers it."""

    def __init__(self, thread_counts, seconds, workdir, timings, progress):
        self.peak = {"fp32": {}, "int8": {}, "isa": {p: machine.isa_for(p) for p in ("fp32", "int8")}}
        self.thread_counts, self.seconds, self.workdir = thread_counts, seconds, workdir
        self.timings, self.progress = timings, progress

    def run(self, when):
        t0 = time.perf_counter()
        for t in self.thread_counts:
            result = _spawn({"kind": "probe", "threads": t, "seconds": self.seconds},
                            self.workdir, f"probe.{when}.t{t}", 120)
            for precision, gops in (result.get("gops") or {}).items():
                self.peak[precision][str(t)] = max(self.peak[precision].get(str(t)) or 0, gops)
        self.timings[f"peak_probe_{when}_s"] = round(time.perf_counter() - t0, 2)
        self.progress(f"peak probe {when}: " + "; ".join(
            f"{p} ({self.peak['isa'][p]}) " + ", ".join(f"{g} G/s at {t}T" for t, g in self.peak[p].items())
            for p in ("fp32", "int8")))


def run_artifacts(manifest, manifest_path, images, thread_counts, ev, latency, timings, progress):
    """(rows, {name: top-1 predictions}, peak): every artifact in its worker processes, between two peak probes."""
    rows, top1 = [], {}
    with tempfile.TemporaryDirectory(prefix="evaluate.") as tmp:
        workdir = Path(tmp)
        images_npy = workdir / "images.npy"
        np.save(images_npy, np.ascontiguousarray(images))
        probe = PeakProbe(thread_counts, ev.peak_probe_s, workdir, timings, progress)
        probe.run("before")
        for i, entry in enumerate(manifest["artifacts"], 1):
            progress(f"[{i}/{len(manifest['artifacts'])}] {entry['name']} ({entry['format']}, {entry['precision']})")
            row, pred = evaluate_artifact(entry, manifest_path, images_npy, workdir, thread_counts, ev, latency,
                                          progress)
            for row, pred in [(row, pred), *evaluate_client(entry, row, (manifest_path, manifest), images_npy,
                                                              workdir, ev, latency, progress)]:
                if pred is not None:
                    top1[row["name"]] = pred
                else:
                    progress(f"  {row['name']}: FAILED: {row['error']}")
                rows.append(row)
                timings[f"artifact_{row['name']}_s"] = row.get("wall_s")
        probe.run("after")
    return rows, top1, probe.peak


def score_rows(rows, top1, labels, peak, thread_counts, progress):
    """Accuracy, agreement with the reference artifact, latency summary and share of peak, per row;
    returns the FLOPs per image (counted on the reference)."""
    reference = top1.get(REFERENCE)
    ref_score = score(labels, reference) if reference is not None else None
    flops = next((r.get("flops_per_image") for r in rows if r.get("flops_per_image")), None)
    for row in rows:
        if row["name"] in top1:
            row.update(score(labels, top1[row["name"]], reference, ref_score["accuracy"] if ref_score else None))
            if row.get("client") and row["artifact"] in top1:  # the client against the file's own runtime
                row["runtime_agreement"] = float((top1[row["name"]] == top1[row["artifact"]]).mean())
            one = row["latency_by_threads"].get("1", {}).get("batch1_ms")
            row["latency_ms"] = {k: one[k] for k in ("p50", "p90", "p99")} if one else None
            _add_peak_share(row, flops, peak, thread_counts)
            progress(f"{row['name']}: accuracy {row['accuracy']:.4f}"
                     + (f", diff {row['diff_pp']:+.2f} pp, agreement {row['agreement']:.4f}"
                        if row["agreement"] is not None else ""))
    return flops


def evaluate_all(cfg, latency=True, gates_on=True, progress=print):
    """Evaluate every artifact, check the gates, write the report. Returns the report dict.

    report["passed"] is False if any artifact failed or any gate failed. Everything evaluate needs
    comes from the manifest and the files it lists (checked against their sha256).
    """
    ev, t_start, timings = cfg.evaluate, time.perf_counter(), {}
    manifest_path, manifest, base_path, base = read_inputs(cfg)  # the baseline before this run can overwrite it
    images, labels, test_data, split_size = load_test_images(cfg, base, base_path, timings)
    n, thread_counts = len(labels), _thread_counts(ev.threads)
    progress(f"evaluate: {len(manifest['artifacts'])} artifacts from {manifest_path}, {n} test images, "
             f"threads {thread_counts}{'' if latency else ', no latency'}")
    rows, top1, peak = run_artifacts(manifest, manifest_path, images, thread_counts, ev, latency, timings, progress)
    flops = score_rows(rows, top1, labels, peak, thread_counts, progress)

    reference = manifest["reference"]
    gate_results = gates.check(rows, cfg.gates, reference, n, full_test_set=(n == split_size)) if gates_on else []
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    result = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "manifest": str(ev.manifest), "source_checkpoint": manifest["source_checkpoint"],
        "classes": manifest["classes"], "test_images": n, "full_test_set": n == split_size, "threads": thread_counts,
        "latency_measured": latency, "machine": machine.describe(),
        "flops_per_image": flops, "peak_gops": peak, "reference": reference,
        "calibration": manifest.get("calibration"), "image_sets": manifest.get("image_sets"),
        "gates_checked": gates_on, "test_data": test_data, "artifacts": rows, "timings": timings,
    }
    diff_md = None
    if base is not None:
        base_gates, diff_md = baseline.compare(result, base, ev.baseline, cfg.gates.max_regression_pp)
        gate_results += base_gates
    failed = gates.failures(gate_results)
    result.update(gates=gate_results, gate_failures=failed, passed=not failed)
    report_dir = baseline.write_report(result, config_mod.project_path(ev.report_dir), cfg, diff_md, base_path)
    progress(f"wrote {report_dir}/evaluation.json, evaluation.md and charts in {timings['total_s']:.0f} s")
    return result
