"""QAT fine-tune: the budget loop (a fake clock, no TensorFlow) and one small export of a tiny network
on the calibration images, checking what the manifest records (recipe augmentation and loss, a
decaying lr, frozen BatchNorm, steps within the plan) and the uint8 boundary of the .tflite."""
import pytest

from export.qat import LR_FINAL_FRACTION, lr_at, run_budgeted
from pipeline.recipe import PROBE_STEPS, PROBE_WARMUP_STEPS

PROBE = PROBE_WARMUP_STEPS + PROBE_STEPS


class FakeClock:
    """Time moves only when a step runs: step t costs cost(t) seconds."""

    def __init__(self, cost):
        self.now, self.cost, self.starts, self.lrs = 1000.0, cost, [], []

    def __call__(self):
        return self.now

    def step(self, lr, t):
        self.starts.append(self.now)
        self.lrs.append(lr)
        self.now += self.cost(t)
        return 1.0


def test_lr_is_a_cosine_from_start_to_floor():
    assert lr_at(0, 1e-3, 1e-5) == pytest.approx(1e-3)
    assert lr_at(0.5, 1e-3, 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(1, 1e-3, 1e-5) == pytest.approx(1e-5) == lr_at(2, 1e-3, 1e-5)


def test_schedule_is_sized_to_the_measured_steps():
    # tracing makes the first step slow (5 s), then 1 s per step: after the probe (6 steps, 10 s) the
    # 50 s left fit 50 more steps, and the run ends by that plan, at the low lr, inside the budget
    clock = FakeClock(lambda t: 5.0 if t == 0 else 1.0)
    r = run_budgeted(clock.step, 60.0, 1e-3, 1e-5, clock=clock)
    assert r["stopped_by"] == "plan" and r["steps"] == r["planned_steps"] == r["first_planned_steps"] == 56
    assert len(clock.lrs) == r["steps"] and r["lr_start"] == clock.lrs[0] == pytest.approx(1e-3)
    assert r["lr_end"] == clock.lrs[-1] < 1.1e-5 and r["lr_floor"] == 1e-5
    assert all(a >= b for a, b in zip(clock.lrs, clock.lrs[1:]))  # never rises
    assert r["step_seconds"] == 1.0 and max(clock.starts) < 1000.0 + 60.0


def test_a_slowdown_stops_at_the_deadline_with_the_lr_decayed():
    # steps become 4x slower after the probe: the refreshed plan shrinks, no step starts after the
    # deadline, and the lr follows the clock down
    clock = FakeClock(lambda t: 1.0 if t < 10 else 4.0)
    r = run_budgeted(clock.step, 60.0, 1e-3, 1e-5, clock=clock)
    assert r["first_planned_steps"] == 60 and r["steps"] == len(clock.starts)
    assert r["steps"] <= r["planned_steps"] < r["first_planned_steps"]
    assert max(clock.starts) < 1060.0
    assert all(a >= b for a, b in zip(clock.lrs, clock.lrs[1:]))
    assert r["lr_end"] < 0.05 * r["lr_start"]


def test_a_budget_shorter_than_tracing_runs_one_step():
    clock = FakeClock(lambda t: 30.0)
    r = run_budgeted(clock.step, 10.0, 1e-3, 1e-5, clock=clock)
    assert r["steps"] == r["planned_steps"] == 1 and r["stopped_by"] == "deadline" and r["step_seconds"] is None


@pytest.mark.training
def test_qat_export_fine_tunes_with_the_recipe(qat_export):
    """The session's one QAT export (tests/conftest.py: qat_export, a tiny ResNet on the calibration images;
    tests/test_export.py checks its artifact), with a spy on the recipe's augmentation while it ran."""
    from export import tflite_export
    seen, cfg, out = qat_export.augment_calls, qat_export.cfg, qat_export.out
    entry = next(e for e in qat_export.manifest["artifacts"] if e["name"] == "tflite_qat_int8")
    assert entry["input"]["dtype"] == "uint8" and entry["output"]["dtype"] == "uint8"
    assert tflite_export.read_labels(out / entry["path"])[0] == "airplane"

    s, recipe = entry["settings"], cfg.recipe
    assert seen and all(t for t, _, _ in seen) and {c for _, _, c in seen} == {recipe.cutout}  # traced, training
    assert s["augment"] == {"pad": 4, "flip": True, "cutout": recipe.cutout}
    assert s["label_smoothing"] == recipe.label_smoothing and s["recipe"] == cfg.train.preset
    assert s["optimizer"] == ("sgd_nesterov" if recipe.optimizer == "sgd" else "adam")
    assert s["weight_ema"] == recipe.ema
    assert s["bn"].startswith("frozen (7 layers") and s["activation_ranges"].startswith("running mean")
    assert s["budget_s"] == 12.0 and s["data"] == "calibration" and s["images"] == 256 and s["batch_size"] == 64
    # the budget: a plan was measured and the run ended by it or by the deadline, never past it
    assert s["steps"] > PROBE and s["step_seconds"] > 0
    assert s["steps"] <= s["planned_steps"] and s["stopped_by"] in ("plan", "deadline")
    assert s["stopped_by"] == "deadline" or s["steps"] == s["planned_steps"]
    assert s["images_seen"] == 64 * s["steps"] and s["epochs"] == pytest.approx(s["images_seen"] / 256, abs=1e-3)
    # a decaying lr from export.qat_lr towards its floor
    assert s["lr_start"] == pytest.approx(1e-3) and s["lr_floor"] == pytest.approx(1e-3 * LR_FINAL_FRACTION)
    assert s["lr_floor"] <= s["lr_end"] < s["lr_start"]
