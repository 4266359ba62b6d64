"""Data-parallel training across processes on JAX, run: 2 CPU processes on this machine form one
Keras DataParallel mesh (localhost coordinator, Gloo collectives over loopback) and must end where
the same SGD steps end in one process.

Tolerance: atol 1e-5 on every weight. The runs differ only in the order float32 sums are taken
(two per-process partial gradients joined by an all-reduce, against one sum over the whole
batch): float32 rounding, seen at 3e-8 absolute (weights up to 0.5) after the 6 steps here. A
missing all-reduce or a process training on the wrong rows moves the weights by a fraction of an
SGD step (lr 0.1 x gradients ~1e-2): the control, the same steps on process 0's rows alone, ends
5e-2 away and must end over 100x the tolerance away, so the tolerance can tell.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

WORKER = ROOT / "tests" / "dp_worker.py"
TIMEOUT_S = 150  # all the processes together: a lost peer leaves the other waiting in a collective
ATOL = 1e-5

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed (make venv installs the .[jax] extra)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KERAS_DISTRIBUTION_", "JAX_", "XLA_FLAGS", "TF_CONFIG"))}
    return {**env, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(ROOT), **extra}


def start(out, mode, env, name):
    log = open(out / f"log_{name}.txt", "w")
    return subprocess.Popen([sys.executable, str(WORKER), str(out), mode], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT), log


def finish(procs):
    """Wait for all, TIMEOUT_S in all; on a timeout kill every one still running."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p, _ in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        raise
    finally:
        for _, log in procs:
            log.close()


def logs(out):
    return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(out.glob("log_*.txt")))


@pytest.mark.training
def test_two_processes_train_like_one(tmp_path):
    port = free_port()
    cluster = dict(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}", KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                   JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}")  # the coordinator listens on loopback only
    procs = [start(tmp_path, "multi", clean_env(**cluster, KERAS_DISTRIBUTION_PROCESS_ID=str(i)), f"process{i}")
             for i in (0, 1)]
    procs.append(start(tmp_path, "single", clean_env(), "single"))  # the reference, alongside
    try:
        finish(procs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the processes did not finish within {TIMEOUT_S} s (killed)\n{logs(tmp_path)}")
    assert all(p.returncode == 0 for p, _ in procs), logs(tmp_path)

    info = [json.loads((tmp_path / f"info_multi_p{i}.json").read_text()) for i in (0, 1)]
    for i, seen in enumerate(info):  # really two processes, one device each, one mesh over both
        assert seen["process_count"] == 2 and seen["process_index"] == i, seen
        assert seen["device_count"] == 2 and seen["local_device_count"] == 1 and seen["replicas"] == 2, seen
        assert len(set(seen["mesh_devices"])) == 2, seen
        for feed in ("arrays", "tfdata"):
            assert seen[f"{feed}_kernel_devices"] == 2 and not seen[f"{feed}_kernel_fully_addressable"], seen
            assert seen[f"{feed}_optimizer_steps"] == seen["steps"] == 6, seen

    single = json.loads((tmp_path / "info_single_p0.json").read_text())
    assert single["process_count"] == 1 and single["device_count"] == 1 and single["replicas"] == 1, single
    ref = np.load(tmp_path / "weights_single_p0.npy")
    alone = np.load(tmp_path / "weights_shard0_p0.npy")
    assert np.abs(alone - ref).max() > 100 * ATOL, "control: process 0's rows alone should end far away"
    for feed in ("arrays", "tfdata"):
        for i in (0, 1):
            w = np.load(tmp_path / f"weights_{feed}_p{i}.npy")
            np.testing.assert_allclose(w, ref, rtol=0, atol=ATOL, err_msg=f"{feed}, process {i}")
        np.testing.assert_array_equal(np.load(tmp_path / f"weights_{feed}_p0.npy"),
                                      np.load(tmp_path / f"weights_{feed}_p1.npy"))  # one replicated array
        assert info[0]["losses"][feed] == info[1]["losses"][feed]
        assert info[0]["losses"][feed] == pytest.approx(single["losses"]["single"], abs=ATOL)


@pytest.mark.parametrize("before,env,says", [
    # JAX reads only JAX_COORDINATOR_ADDRESS (the count and id come from SLURM, Open MPI, Kubernetes or Cloud TPU)
    ("", dict(JAX_PROCESS_ID="0"), ["Number of processes must be defined", "KERAS_DISTRIBUTION_NUM_PROCESSES"]),
    # a process that used JAX first has a one-process backend: jax.distributed refuses to start
    ("import jax; jax.devices(); ", dict(JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="0"),
     ["must be called before any JAX calls", "used JAX before _distribution"]),
], ids=["no-process-count", "jax-used-first"])
def test_a_cluster_that_cannot_start_says_why(before, env, says):
    code = f"{before}from train.loop import _distribution; _distribution(True)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
                         env=clean_env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", **env))
    assert out.returncode != 0 and "PipelineError" in out.stderr, out.stderr[-3000:]
    assert all(s in out.stderr for s in says), out.stderr[-3000:]
