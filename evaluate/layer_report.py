"""The per-layer quantization error export measured (manifest: each int8 artifact's "layer_error"),
as reports/layer_error.md (a table per artifact, worst layers ranked) and reports/layer_error.png.

SQNR (dB, higher is better; ~40 dB is what 8 bits give a well-scaled tensor). ONNX rows are the
error accumulated up to each layer (onnxruntime's qdq_loss_debug); TFLite rows the error each layer
adds alone (LiteRT's QuantizationDebugger): see export/layer_error.py.
"""
from pathlib import Path

import numpy as np

from pipeline import atomic

WORST = 5            # rows flagged as worst in tables and charts
PLOT_CAP_DB = 80.0   # bars above this are drawn capped (ops that only move data)
WHAT = {"onnx": "vs the float model, accumulated up to each layer (onnxruntime qdq_loss_debug)",
        "tflite": "the error each layer adds alone (LiteRT QuantizationDebugger)"}


def label(row):
    name = row["layer"] or "(unmapped)"
    if row["fused"]:
        name += " (+" + ", ".join(row["fused"]) + ")"
    return name


def worst(rows, n=WORST):
    return sorted(range(len(rows)), key=lambda i: rows[i]["sqnr_db"])[:n]


def table(rows):
    """A markdown table in graph order; the worst layers (lowest SQNR) ranked and in bold."""
    rank = {i: r + 1 for r, i in enumerate(worst(rows, len(rows)))}
    lines = [f"Worst first: {', '.join(label(rows[i]) for i in worst(rows))}", "",
             "| # | layer (+ fused) | op | SQNR dB | rel. error | worst rank | tensor |",
             "|---:|---|---|---:|---:|---:|---|"]
    for i, row in enumerate(rows):
        bold = "**" if rank[i] <= WORST else ""
        tensor = row["tensor"] if len(row["tensor"]) <= 80 else row["tensor"][:77] + "..."
        lines.append(f"| {i} | {bold}{label(row)}{bold} | {row['op']} | {bold}{row['sqnr_db']:.1f}{bold} "
                     f"| {row['rel_error']:.2%} | {rank[i]} | `{tensor}` |")
    return "\n".join(lines) + "\n"


def plot(rows_by_artifact, png_path):
    """Horizontal bars of SQNR per layer (lower = worse), one panel per artifact; worst in red."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows_by_artifact)
    height = max(len(rows) for rows in rows_by_artifact.values()) * 0.22 + 1.5
    fig, axes = plt.subplots(1, len(names), figsize=(7 * len(names), height), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = rows_by_artifact[name]
        bad = set(worst(rows))
        y = np.arange(len(rows))
        ax.barh(y, [min(r["sqnr_db"], PLOT_CAP_DB) for r in rows],
                color=["tab:red" if i in bad else "tab:blue" for i in range(len(rows))])
        for i, r in enumerate(rows):
            if r["sqnr_db"] > PLOT_CAP_DB:
                ax.text(PLOT_CAP_DB, i, f" {r['sqnr_db']:.0f}", va="center", fontsize=7)
        ax.set_yticks(y, [f"{label(r)} [{r['op']}]" for r in rows], fontsize=7)
        ax.invert_yaxis()  # graph order, input at the top
        ax.set_xlim(0, PLOT_CAP_DB + 8)
        ax.set_xlabel("SQNR (dB), lower = worse")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic.write_png(Path(png_path), fig)
    plt.close(fig)


def write(result, report_dir):
    """layer_error.md and .png for the artifacts whose manifest entry carries "layer_error"; the file
    names written (none when no artifact has it)."""
    rows = {r["name"]: r for r in result["artifacts"] if r.get("layer_error")}
    if not rows:
        return []
    calib = result.get("calibration") or {}
    lines = ["# Per-layer quantization error", "",
             f"Measured at export on calibration images ({calib.get('source', '-')}), keyed to the Keras layer "
             "names; runtimes fuse layers (conv + batch norm + ReLU), so a row names the layer whose output the "
             "tensor is and lists the fused ones. SQNR in dB: higher is better, ~40 dB is what 8 bits give a "
             "well-scaled tensor.", "", "![per-layer SQNR](layer_error.png)", ""]
    for name, r in rows.items():
        lines += [f"## {name}: {WHAT[r['format']]}", "", table(r["layer_error"])]
    atomic.write_text(Path(report_dir) / "layer_error.md", "\n".join(lines))
    plot({f"{name}: {WHAT[r['format']].split(' (')[0]}": r["layer_error"] for name, r in rows.items()},
         Path(report_dir) / "layer_error.png")
    return ["layer_error.md", "layer_error.png"]
