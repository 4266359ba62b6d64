"""Validation accuracy against the epoch count of the `fast` recipe, fitted, to choose a long run's epochs.

    python benchmarks/accuracy_vs_epochs.py [RUN_DIR ...]

Each run folder (default: models/reference and models/candidates/*) is one point: its epoch count and
best EMA validation accuracy (5,000 held-out training images; the test split chooses nothing). Only
runs of the unchanged `fast` recipe count (any seed): a proxy that changes one setting is another
curve. The 6-epoch points predate the run folders kept in the repository and are taken from the
reference model card's proxy table, and the 30-epoch point from the reference it replaced. Fits the
error, 1 - accuracy, on the runs of at most FIT_MAX_EPOCHS (the ones the long run's epoch count was
chosen from) two ways: err = a + b / E (two parameters, least squares) and err = a + b * E^-c (three,
through the points when there are three epoch counts); prints each one's prediction per epoch count
beside the longer runs measured since (the check on the choice), writes results/accuracy_vs_epochs.md
and a PNG chart.
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "accuracy_vs_epochs"
# models/reference/MODEL_CARD.md, recipe decisions: the fast recipe cut to 6 epochs, seed 0 (bf16, fused
# batch norm: 80.30%; Keras' own batch norm: 80.66%). Their run folders were not kept.
CARD_POINTS = [(6, 0.8030, "6-epoch proxy (model card)"), (6, 0.8066, "6-epoch proxy, Keras BN (model card)")]
# The reference before the 120-epoch one: 30 epochs, seed 0, best EMA validation 89.40% (its history is in
# git: models/reference/ at commit 75155c1).
PREVIOUS_REFERENCE = (30, 0.8940, "previous reference, 30 epochs (seed 0)")
FIT_MAX_EPOCHS = 30   # the fits use what was known when the long run's epochs were chosen
RECIPE_KEYS = ("optimizer", "lr", "momentum", "batch_size", "schedule", "warmup_frac", "l2", "cutout",
               "label_smoothing", "ema", "subset", "val_size")
FAST = {"optimizer": "sgd", "lr": 0.4, "momentum": 0.9, "batch_size": 512, "schedule": "onecycle",
        "warmup_frac": 0.15, "l2": 5e-4, "cutout": 8, "label_smoothing": 0.1, "ema": 0.99, "subset": 0,
        "val_size": 5000}
EPOCHS = (15, 30, 45, 60, 90, 120, 150, 200)


def point(run):
    """(epochs, best validation accuracy, label) of an unchanged-`fast` seed-model run, else None."""
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "config.resolved.json").read_text())
    except (OSError, ValueError):
        return None  # unfinished
    recipe = config["train"]["presets"][config["train"]["preset"]]
    same = all(recipe.get(k) == v for k, v in FAST.items()) and recipe.get("crop", "translate") == "translate"
    if not same or metrics.get("model") != "seed":
        return None
    return metrics["epochs"], metrics["best_val_accuracy"], f"{run.name} (seed {config['train']['seed']})"


def fit_inverse(e, err):
    """err = a + b / E, least squares."""
    (b, a), *_ = np.linalg.lstsq(np.stack([1 / e, np.ones_like(e)], 1), err, rcond=None)
    return lambda x: a + b / np.asarray(x, float), f"err = {a:.4f} + {b:.4f} / E"


def fit_power(e, err):
    """err = a + b * E^-c through the mean error at each of three epoch counts (None if not three)."""
    from scipy.optimize import brentq
    xs = np.unique(e)
    if len(xs) != 3:
        return None
    ys = np.array([err[e == x].mean() for x in xs])

    def coefficients(c):
        p = xs ** -c
        b = (ys[0] - ys[1]) / (p[0] - p[1])
        return ys[0] - b * p[0], b

    c = brentq(lambda c: coefficients(c)[0] + coefficients(c)[1] * xs[2] ** -c - ys[2], 0.05, 5)
    a, b = coefficients(c)
    return lambda x: a + b * np.asarray(x, float) ** -c, f"err = {a:.4f} + {b:.2f} * E^-{c:.3f}"


def main(argv):
    runs = [Path(a) for a in argv] or [ROOT / "models" / "reference", *sorted((ROOT / "models" / "candidates").glob("*/"))]
    found = [p for p in map(point, runs) if p]
    if not any(n == PREVIOUS_REFERENCE[0] for n, *_ in found):
        found.append(PREVIOUS_REFERENCE)
    points = CARD_POINTS[:1] + found  # one 6-epoch point: the code since then
    e = np.array([p[0] for p in points], float)
    err = 1 - np.array([p[1] for p in points])
    chosen_from = e <= FIT_MAX_EPOCHS
    fits = [f for f in (fit_inverse(e[chosen_from], err[chosen_from]), fit_power(e[chosen_from], err[chosen_from])) if f]
    lines = ["# Validation accuracy vs epochs (the `fast` recipe)", "",
             f"`python benchmarks/accuracy_vs_epochs.py`: best EMA validation accuracy (5,000 held-out training "
             "images of CIFAR-10 (JPEG q75 copy)) of each unchanged-`fast` run; runs from the 2-vCPU AMD EPYC "
             "machines named in their model cards / candidates' logs.", "",
             "| run | epochs | validation |", "| --- | --- | --- |"]
    lines += [f"| {label} | {n} | {acc:.2%} |" for n, acc, label in points]
    lines += ["", "| fit | " + " | ".join(f"{n} ep" for n in EPOCHS) + " |", "| --- " * (len(EPOCHS) + 1) + "|"]
    lines += [f"| {text} | " + " | ".join(f"{1 - float(f(n)):.2%}" for n in EPOCHS) + " |" for f, text in fits]
    longer = [(n, acc, label) for n, acc, label in points if n > FIT_MAX_EPOCHS]
    if longer:
        lines += ["", f"Fitted on the runs of at most {FIT_MAX_EPOCHS} epochs; the longer runs, measured since:", "",
                  "| run | epochs | validation | " + " | ".join(text for _, text in fits) + " |",
                  "| --- " * (3 + len(fits)) + "|"]
        lines += [f"| {label} | {n} | {acc:.2%} | " + " | ".join(f"{1 - float(f(n)):.2%}" for f, _ in fits) + " |"
                  for n, acc, label in longer]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{OUT}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(e[chosen_from], (1 - err[chosen_from]) * 100, color="k", zorder=3, label="runs fitted (best validation)")
    if (~chosen_from).any():
        ax.scatter(e[~chosen_from], (1 - err[~chosen_from]) * 100, color="r", marker="*", s=120, zorder=3,
                   label="longer runs since (not fitted)")
    grid = np.linspace(5, max(EPOCHS), 300)
    for f, text in fits:
        ax.plot(grid, (1 - f(grid)) * 100, label=text)
    ax.set(xlabel="epochs (one-cycle sized to them)", ylabel="validation accuracy, %", ylim=(78, 92),
           title="fast recipe: accuracy vs epochs, CIFAR-10 (JPEG q75 copy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{OUT}.png", dpi=110)
    print(f"wrote {OUT}.md and {OUT}.png")


if __name__ == "__main__":
    main(sys.argv[1:])
