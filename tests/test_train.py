"""The train stage, run as users run it (a subprocess per run: the Keras backend is per process).

Runs use the small `resnet20v1` on a few hundred images so each takes seconds on 2 cores.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

TINY = ["--model", "resnet20v1", "--preset", "smoke", "--subset", "256", "--val-size", "64",
        "--batch-size", "32"]


def run_train(tmp_path, *args, env=None, backend="tensorflow", wait=True):
    cmd = [sys.executable, "-m", "train", "--backend", backend, "--out-dir", str(tmp_path), *args]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def history(run_dir):
    return json.loads((run_dir / "history.json").read_text())


def test_summary_counts_seed_and_resnet20():
    for model, total in (("seed", "792,330"), ("resnet20v1", "274,442")):
        out = subprocess.run([sys.executable, "-m", "train", "--summary", "--model", model], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert out.returncode == 0, out.stderr
        assert f"{model}: {total} params" in out.stdout
    assert "(790,090 trainable, 2,240 non-trainable)" in subprocess.run(
        [sys.executable, "-m", "train", "--summary"], cwd=ROOT, capture_output=True, text=True).stdout


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_smoke_run_writes_a_complete_run_folder(tmp_path, backend):
    out = run_train(tmp_path, *TINY, "--run-name", "r", backend=backend)
    assert out.returncode == 0, out.stdout + out.stderr
    run = tmp_path / "r"
    for name in ("best.h5", "last.h5", "history.csv", "history.json", "curves.png",
                 "config.resolved.json", "environment.json", "metrics.json"):
        assert (run / name).exists(), name
    assert not list(run.glob(".*.tmp")), "a temp file was left behind"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_images"] == 10000 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert json.loads((run / "environment.json").read_text())["backend"] == backend
    assert len(history(run)["loss"]) == 2


def test_bfloat16_checkpoint_from_jax_loads_as_float32_under_tensorflow(tmp_path, test_split):
    out = run_train(tmp_path, *TINY, "--run-name", "bf16", "--mixed-precision", "mixed_bfloat16", backend="jax")
    assert out.returncode == 0, out.stdout + out.stderr
    from pipeline import checkpoint
    model, preset = checkpoint.load(tmp_path / "bf16" / "best.h5")
    assert preset == "resnet20v1"
    assert {w.dtype for w in model.weights} == {"float32"}
    pred = np.argmax(model.predict(test_split.images[:2000].astype(np.float32), verbose=0), axis=1)
    assert pred.shape == (2000,) and np.isfinite(model.get_weights()[0]).all()


def test_resume_after_kill_continues_from_last_epoch(tmp_path):
    run = tmp_path / "k"
    proc = run_train(tmp_path, *TINY, "--epochs", "3", "--run-name", "k", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill -9 as soon as the first epoch is on disk
        if (run / "history.csv").exists() and len((run / "history.csv").read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists(), "the run finished before it could be killed"
    out = run_train(tmp_path, "--resume", str(run))
    assert out.returncode == 0, out.stdout + out.stderr
    epochs = history(run)["epoch"]
    assert epochs == sorted(set(epochs)) and len(epochs) == 3, epochs
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3


def test_nan_loss_stops_with_message_and_keeps_best(tmp_path):
    # Epoch 1 trains normally; from epoch 2 the step schedule sets an absurd learning rate.
    out = run_train(tmp_path, *TINY, "--run-name", "nan", "--set", "train.presets.smoke.schedule=\"step\"",
                    "--set", "train.presets.smoke.steps=[[1, 1e30]]")
    assert out.returncode == 1
    assert "NaN" in out.stderr and "best.h5 kept" in out.stderr, out.stderr
    assert (tmp_path / "nan" / "best.h5").exists()


def test_refuses_to_overwrite_a_run(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "history.csv").write_text("epoch,loss\n")
    out = run_train(tmp_path, *TINY, "--run-name", "x")
    assert out.returncode == 1 and "--resume" in out.stderr


@pytest.mark.parametrize("backend,env", [
    ("tensorflow", {"CIFAR_EDGE_VIRTUAL_CPUS": "2"}),
    ("jax", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
])
def test_data_parallel_over_two_virtual_devices(tmp_path, backend, env):
    out = run_train(tmp_path, *TINY, "--run-name", "dp", "--data-parallel", backend=backend, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    dist = json.loads((tmp_path / "dp" / "environment.json").read_text())["distribution"]
    assert dist == {"replicas": 2, "global_batch": 32, "per_replica_batch": 16}
    loss = history(tmp_path / "dp")["loss"]
    assert loss[-1] < loss[0], loss
