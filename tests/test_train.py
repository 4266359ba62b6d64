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

from conftest import EARLY, ROOT

TINY = ["--model", "resnet20v1", "--preset", "smoke", "--subset", "256", "--val-size", "64",
        "--batch-size", "32"]


def run_train(tmp_path, *args, env=None, backend="tensorflow", wait=True):
    where = [] if "--resume" in args else ["--out-dir", str(tmp_path)]  # a resume refuses other flags
    cmd = [sys.executable, "-m", "train", "--backend", backend, *where, *args]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def history(run_dir):
    return json.loads((run_dir / "history.json").read_text())


def test_summary_counts_seed_and_resnet20():
    # the three summaries are independent processes: run side by side
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {model: subprocess.Popen([sys.executable, "-m", "train", "--summary", *(["--model", model] if model else [])],
                                     cwd=ROOT, env=env if model else None, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
             for model in ("seed", "resnet20v1", None)}
    outs = {model: (proc.communicate(timeout=300), proc.returncode) for model, proc in procs.items()}
    for model, total in (("seed", "792,330"), ("resnet20v1", "274,442")):
        (stdout, stderr), code = outs[model]
        assert code == 0, stderr
        assert f"{model}: {total} params" in stdout
    assert "(790,090 trainable, 2,240 non-trainable)" in outs[None][0][0]


# Runs that depend on nothing but their flags, started early and side by side (tests/conftest.py: EARLY):
# {name: (flags, backend, env)}. Each runs once; its test waits for it and checks it.
# The JAX smoke run trains in mixed_bfloat16 (JAX on a CPU defaults to float32, which the JAX
# data-parallel run covers): its checkpoint is also the bf16 one the TensorFlow loading test reads.
INDEPENDENT_RUNS = {
    "smoke-tensorflow": ([*TINY, "--run-name", "r"], "tensorflow", None),
    "smoke-jax": ([*TINY, "--run-name", "r", "--mixed-precision", "mixed_bfloat16"], "jax", None),
    "nan": ([*TINY, "--run-name", "nan", "--set", "train.presets.smoke.schedule=\"step\"",
             "--set", "train.presets.smoke.steps=[[1, 1e30]]"], "tensorflow", None),
    "dp-tensorflow": ([*TINY, "--run-name", "dp", "--data-parallel"], "tensorflow", {"CIFAR_EDGE_VIRTUAL_CPUS": "2"}),
    "dp-jax": ([*TINY, "--run-name", "dp", "--data-parallel"], "jax",
               {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
}


def small_test(tmp_path_factory):
    """--set data.test= a 400-image slice of the test split: for runs whose final test score no test reads
    (it costs a pass over every test image; the smoke runs keep all 10,000 and check them)."""
    from conftest import small_test_split
    return ["--set", f"data.test='{small_test_split(tmp_path_factory)}'"]


def _independent_run(name, flags, backend, env):
    def job(tmp_path_factory, **_):
        where = tmp_path_factory.mktemp(name)
        more = [] if name.startswith("smoke") else small_test(tmp_path_factory)
        return (run_train(where, *flags, *more, backend=backend, env=env),
                where / flags[flags.index("--run-name") + 1])
    return job


for _name, _spec in INDEPENDENT_RUNS.items():  # started early, side by side (tests/conftest.py: EARLY)
    EARLY.job(f"train:{_name}", needed_by="train_runs")(_independent_run(_name, *_spec))


@pytest.fixture(scope="module")
def train_runs():
    """train_runs(name) -> (completed process, run folder) of INDEPENDENT_RUNS[name]."""
    return lambda name: EARLY.result(f"train:{name}")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_smoke_run_writes_a_complete_run_folder(train_runs, backend):
    out, run = train_runs(f"smoke-{backend}")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("run.json", "best.h5", "best.json", "last.h5", "history.csv", "history.json", "curves.png",
                 "config.resolved.json", "environment.json", "metrics.json"):
        assert (run / name).exists(), name
    assert not list(run.glob(".*.tmp")), "a temp file was left behind"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_images"] == 10000 and 0.05 <= metrics["test_accuracy"] <= 0.6
    assert sum(metrics["per_class_accuracy"].values()) / 10 == pytest.approx(metrics["test_accuracy"], abs=1e-3)
    assert json.loads((run / "environment.json").read_text())["backend"] == backend
    assert len(history(run)["loss"]) == 2


def test_bfloat16_checkpoint_from_jax_loads_as_float32_under_tensorflow(train_runs, test_split):
    out, run = train_runs("smoke-jax")  # trained with --mixed-precision mixed_bfloat16
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads((run / "environment.json").read_text())["policy"] == "mixed_bfloat16"
    from pipeline import checkpoint
    model, preset = checkpoint.load(run / "best.h5")
    assert preset == "resnet20v1"
    assert {w.dtype for w in model.weights} == {"float32"}
    pred = np.argmax(model.predict(test_split.images[:2000].astype(np.float32), verbose=0), axis=1)
    assert pred.shape == (2000,) and np.isfinite(model.get_weights()[0]).all()


def _kill_after_first_epoch(proc, run):
    deadline = time.time() + 300
    while time.time() < deadline:  # kill -9 as soon as the first epoch is in the backup
        from train.callbacks import backed_up_epochs
        try:
            if backed_up_epochs(run) >= 1:
                break
        except Exception:  # the backup is being written; try again
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.training
def test_a_killed_run_copied_elsewhere_resumes_with_the_same_schedule(tmp_path, tmp_path_factory):
    """kill -9 after epoch 1, copy the folder to another path, drop the original and point the data
    source nowhere: the copy resumes from its backup (data found by its sha256 in the decoded cache),
    continues the one-cycle schedule at the right step and ends with exactly the configured epochs."""
    import shutil
    from pipeline import config
    from pipeline import recipe as recipe_mod
    run = tmp_path / "k"
    proc = run_train(tmp_path, *TINY, "--epochs", "3", "--ema", "0.9", "--run-name", "k",
                     *small_test(tmp_path_factory), wait=False)
    _kill_after_first_epoch(proc, run)
    assert not (run / "metrics.json").exists(), "the run finished before it could be killed"
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    out = run_train(tmp_path, "--resume", str(moved), env={"CIFAR10_DATA": str(tmp_path / "gone.tar.gz")})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "from the decoded cache of sha256" in out.stdout

    cfg = config.from_dict(json.loads((moved / "config.resolved.json").read_text()))
    metrics = json.loads((moved / "metrics.json").read_text())
    steps = metrics["steps_per_epoch"]
    done = int(out.stdout.split("restored epoch ")[1].split(":")[0])
    assert done >= 1 and f"optimizer step {done * steps}," in out.stdout, out.stdout
    lr = float(recipe_mod.schedule(cfg.recipe, steps)(done * steps))
    assert f"learning rate {lr:.6g}" in out.stdout, (lr, out.stdout)
    assert metrics["epochs"] == 3 and metrics["optimizer_steps"] == 3 * steps
    epochs = history(moved)["epoch"]
    assert epochs == [0.0, 1.0, 2.0], epochs  # no duplicated or missing epoch
    assert not (moved / "backup").exists()  # finished: the backup is removed
    assert (moved / "best.h5").exists() and json.loads((moved / "best.json").read_text())["epoch"] in (1, 2, 3)


def test_resume_refuses_recipe_flags_and_folders_that_are_not_runs(train_runs, tmp_path):
    import shutil
    finished_out, finished = train_runs("smoke-tensorflow")  # a finished run (2 epochs), copied: must stay as is
    assert finished_out.returncode == 0, finished_out.stdout + finished_out.stderr
    run = tmp_path / "r"
    shutil.copytree(finished, run)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    for flag in (["--epochs", "5"], ["--lr", "0.1"], ["--batch-size", "64"], ["--preset", "seed"],
                 ["--set", "recipe.epochs=4"]):
        out = run_train(tmp_path, "--resume", str(run), *flag)
        assert out.returncode == 1 and f"--resume: {flag[0]} would change" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before
    fake = tmp_path / "reports"
    fake.mkdir()
    (fake / "config.resolved.json").write_text((run / "config.resolved.json").read_text())
    out = run_train(tmp_path, "--resume", str(fake))
    assert out.returncode == 1 and "not a run folder of `python -m train`" in out.stderr
    assert [p.name for p in fake.iterdir()] == ["config.resolved.json"]  # nothing written


@pytest.mark.training
def test_time_budget_sizes_the_run_and_stop_after_ends_a_stretch(tmp_path, tmp_path_factory):
    from pipeline import config
    from train import budget as budget_mod
    cfg = config.load(None, [("train.preset", "smoke")])
    sized, plan = budget_mod.plan(cfg, budget_s=600, elapsed_s=5, images_per_s=400, trace_s=15, n_fit=4000, n_val=400)
    # 10 s per epoch (4,000 images at 400/s) + 0.33 s validation; 600 - 20 s setup - 13.3 s test -> 54 epochs
    assert plan["epochs"] == 54 and sized.recipe.epochs == 54 and sized.recipe.lr == cfg.recipe.lr

    budget = 20  # a few epochs after start-up, the probe and the test split: the plan is what is checked
    out = run_train(tmp_path, *TINY, "--run-name", "b", "--time-budget", f"{budget}s", *small_test(tmp_path_factory))
    assert out.returncode == 0, out.stdout + out.stderr
    plan = json.loads((tmp_path / "b" / "run.json").read_text())["plan"]
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    resolved = json.loads((tmp_path / "b" / "config.resolved.json").read_text())
    assert metrics["epochs"] == plan["epochs"] == resolved["train"]["presets"]["smoke"]["epochs"]
    assert plan["budget_s"] == budget and plan["images_per_s"] > 0
    assert f"{plan['epochs']} epochs fit the {budget}s budget" in out.stdout
    # Wall time against the budget is measured on real runs (BENCHMARKS.md), not asserted here: a
    # shared 2-core machine makes any timed assertion flaky.
    assert "left ~" in out.stdout and "img/s" in out.stdout  # progress

    out = run_train(tmp_path, *TINY, "--run-name", "s", "--epochs", "50", "--stop-after", "5s")
    assert out.returncode == 0 and "continue with: python -m train --resume" in out.stdout, out.stdout
    done = len(history(tmp_path / "s")["loss"]) if (tmp_path / "s" / "history.json").exists() else \
        len((tmp_path / "s" / "history.csv").read_text().splitlines()) - 1
    assert 1 <= done < 50 and not (tmp_path / "s" / "metrics.json").exists()


def test_nan_loss_stops_with_message_and_keeps_best(train_runs):
    # Epoch 1 trains normally; from epoch 2 the step schedule sets an absurd learning rate.
    out, run = train_runs("nan")
    assert out.returncode == 1
    assert "NaN" in out.stderr and "best.h5 kept" in out.stderr, out.stderr
    assert (run / "best.h5").exists()


def test_refuses_to_overwrite_a_run(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "history.csv").write_text("epoch,loss\n")
    out = run_train(tmp_path, *TINY, "--run-name", "x")
    assert out.returncode == 1 and "--resume" in out.stderr
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["history.csv"]


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])  # 2 virtual devices: see INDEPENDENT_RUNS
def test_data_parallel_over_two_virtual_devices(train_runs, backend):
    out, run = train_runs(f"dp-{backend}")
    assert out.returncode == 0, out.stdout + out.stderr
    dist = json.loads((run / "environment.json").read_text())["distribution"]
    assert dist == {"replicas": 2, "global_batch": 32, "per_replica_batch": 16}
    loss = history(run)["loss"]
    assert loss[-1] < loss[0], loss


@pytest.mark.training
def test_ema_checkpoints_hold_the_averaged_weights(tmp_path, calibration):
    """With EMA on, last.h5 (and best.h5) are the averaged weights, which fit leaves in the model at the
    end; the raw weights the optimizer steps on differ from them."""
    import keras
    from pipeline import config
    from train.callbacks import AtomicCheckpoint
    from train.loop import build_trainable
    recipe = config.with_recipe(config.load(), epochs=2, ema=0.9, batch_size=64, lr=0.05).recipe
    net, wrapper = build_trainable("resnet20v1", recipe, steps_per_epoch=4)
    x = calibration.images[:256].astype(np.float32)
    y = np.eye(10, dtype=np.float32)[calibration.labels[:256]]
    raw = []
    keep_raw = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: raw.append(net.get_weights()))
    wrapper.fit(x, y, batch_size=64, epochs=2, verbose=0, validation_data=(x[:64], y[:64]),
                callbacks=[keep_raw, keras.callbacks.SwapEMAWeights(), AtomicCheckpoint(net, tmp_path, ema=True)])
    saved = keras.models.load_model(tmp_path / "last.h5", compile=False).get_weights()
    averaged = net.get_weights()  # fit ends by writing the averages into the model
    assert all(np.allclose(a, b) for a, b in zip(saved, averaged))
    assert not all(np.allclose(a, b) for a, b in zip(saved, raw[-1]))


@pytest.mark.training
def test_a_run_resumed_on_a_cpu_without_native_bf16_continues_in_float32(tmp_path, monkeypatch):
    """The first stretch trains in mixed_bfloat16 (a CPU with AVX512-BF16), the resume lands on one without
    (the Intel Xeon): `auto` picks float32 there, says so, and the run ends with every epoch once; the
    checkpoint is float32 either way."""
    import keras

    from pipeline import config, machine
    from train.loop import train
    cfg = config.load(None, [("train.preset", "smoke"), ("model.preset", "resnet20v1"), ("recipe.subset", 256),
                             ("recipe.val_size", 64), ("recipe.batch_size", 32), ("recipe.epochs", 2)])
    run, said = tmp_path / "moved", []
    say = lambda *a, **k: said.append(" ".join(map(str, a)))  # noqa: E731
    try:
        monkeypatch.setattr(machine, "native_bf16", lambda: True)
        assert train(cfg, run, stop_after_s=1e-3, say=say) is None  # one epoch, then the stretch ends
        assert json.loads((run / "environment.json").read_text())["policy"] == "mixed_bfloat16"
        monkeypatch.setattr(machine, "native_bf16", lambda: False)
        metrics = train(config.from_dict(json.loads((run / "config.resolved.json").read_text())), run, resume=True,
                        say=say)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert any("trains in float32, the run started in mixed_bfloat16" in line for line in said), said
    assert metrics["policy"] == "float32" and metrics["epochs"] == 2
    assert history(run)["epoch"] == [0.0, 1.0]


@pytest.mark.parametrize("flags, cap, native", [
    ("avx512f avx512_vnni avx512_bf16", None, True),               # Zen 4 / Zen 5
    ("avx512f avx512_vnni", None, False),                          # Ice Lake Xeon
    ("avx512f avx512_vnni avx512_bf16", "avx512_core_vnni", False),  # Zen 5 capped to Ice Lake's set
    ("avx512f avx512_vnni avx512_bf16", "AVX512_CORE_BF16", True),
    ("avx512f avx512_vnni avx512_bf16 amx_bf16", "AVX512_CORE_AMX", True),
    ("avx512f avx512_vnni", "DEFAULT", False),                     # a cap never adds instructions
])
def test_auto_precision_follows_the_cpu_and_onednn_isa_cap(flags, cap, native, monkeypatch):
    """`auto` is mixed_bfloat16 only where oneDNN really runs bf16 dot products: under ONEDNN_MAX_CPU_ISA below
    AVX512_CORE_BF16 its bf16 kernels emulate on float32 FMAs, as on a CPU without the instructions."""
    from pipeline import machine
    from train.loop import policy_for
    monkeypatch.setattr(machine, "_cpuinfo", lambda: {"flags": flags})
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert machine.native_bf16() is native
    assert policy_for("auto") == ("mixed_bfloat16" if native else "float32")


def test_train_speed_refuses_an_isa_cap_onednn_did_not_take(tmp_path):
    """A misspelt --max-isa would time the uncapped CPU under a capped file name: the benchmark reads back the
    instruction set oneDNN reports, stops with one line and writes no table."""
    from pipeline import machine
    if not machine.native_bf16():
        pytest.skip("this CPU has no bf16: a cap oneDNN ignores reads back the same as one it applies")
    table = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "benchmarks/train_speed.py", "--max-isa", "AVX512_CORE_VNNY", "--quick",
                           "--steps", "1", "--out", str(table)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --max-isa AVX512_CORE_VNNY: oneDNN still reports "), lines
    assert not table.exists()


def test_resuming_a_finished_run_is_refused_and_leaves_it_as_it_was(train_runs, tmp_path):
    """A finished run has no backup: a resume would start again at epoch 1 and overwrite its history."""
    import shutil
    finished_out, finished = train_runs("smoke-tensorflow")  # a finished run (2 epochs), copied
    assert finished_out.returncode == 0, finished_out.stdout + finished_out.stderr
    run = tmp_path / "done"
    shutil.copytree(finished, run)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    out = run_train(tmp_path, "--resume", str(run))
    assert out.returncode == 1 and out.stderr.strip().splitlines() == \
        [f"error: {run}: the run is finished (metrics.json); nothing to resume"], out.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before
