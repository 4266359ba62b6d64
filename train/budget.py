"""Size a run to a wall-clock budget: time the first steps, pick the epochs that fit, plan it.

The one-cycle schedule is built from the recipe's epochs, so sizing the epochs sizes the
schedule; the plan is written into the run folder (run.json) and the resolved config holds
the planned epochs, so a resumed run follows the same plan.
"""
import math
import time

import numpy as np

from pipeline.config import with_recipe

from pipeline.evalset import TEST_IMAGES
from pipeline.recipe import PROBE_STEPS, PROBE_WARMUP_STEPS

EVAL_COST = 1 / 3        # a validation image costs about a third of a training image (forward only)


def measure_images_per_s(build, x, y, batch, feed):
    """Training images/s of a throwaway copy of the model (so the run's own weights start untouched)."""
    import keras
    _, wrapper = build()
    n_warm, n_timed = PROBE_WARMUP_STEPS * batch, PROBE_STEPS * batch
    idx = np.arange(n_warm + n_timed) % len(y)
    t0 = time.perf_counter()
    wrapper.fit(**feed(x[idx[:n_warm]], y[idx[:n_warm]], batch), epochs=1, verbose=0)
    trace_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    wrapper.fit(**feed(x[idx[n_warm:]], y[idx[n_warm:]], batch), epochs=1, verbose=0)
    ips = n_timed / (time.perf_counter() - t0)
    del wrapper
    keras.backend.clear_session()
    return ips, trace_s


def plan(cfg, budget_s, elapsed_s, images_per_s, trace_s, n_fit, n_val):
    """(config with the recipe's epochs set to what fits, the plan dict)."""
    epoch_s = n_fit / images_per_s + n_val * EVAL_COST / images_per_s
    test_s = TEST_IMAGES * EVAL_COST / images_per_s + 5  # + loading the best checkpoint
    usable = budget_s - elapsed_s - trace_s - test_s
    epochs = max(1, math.floor(usable / epoch_s))
    return with_recipe(cfg, epochs=epochs), {"budget_s": round(budget_s, 1), "images_per_s": round(images_per_s, 1),
                   "epoch_s_estimate": round(epoch_s, 1), "setup_s": round(elapsed_s + trace_s, 1),
                   "epochs": epochs, "estimated_total_s": round(elapsed_s + trace_s + epochs * epoch_s
                                                                + test_s, 1)}
