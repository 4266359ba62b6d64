"""The evaluation report: evaluation.json (versioned), evaluation.md (a table people read), PNG charts.

Every file is written to a temp path and renamed, so a reader never sees half a report.
"""
from pathlib import Path

from evaluate import layer_report
from pipeline import artifacts, atomic
from pipeline.artifacts import REFERENCE
from pipeline import config as config_mod
from pipeline.model import CLASSES


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def _share(row):
    """Share of its precision's peak at batch 1 / 1 thread, batch 1 / all cores, the throughput batch."""
    cells = [f"{v['share_of_peak'] * 100:.0f}%" if v.get("share_of_peak") is not None else "above probe*"
             for v in (row.get("gflops") or {}).values()]
    return " / ".join(cells) or "-"


def _peaks(result):
    peak = result["peak_gops"]
    return "; ".join(f"{p} ({peak['isa'][p]}): " + ", ".join(f"{g} G{'FL' if p == 'fp32' else ''}OP/s at {t}T"
                                                               for t, g in peak[p].items())
                     for p in ("fp32", "int8"))


def _gpu_runtime(m):
    g = m.get("gpu_runtime")
    if not g:
        return "n/a"
    if g.get("gpu_found") is False:
        return "no GPU on this machine"
    if g.get("gpu_found"):
        return f"fully accelerated: {'yes' if g.get('is_fully_accelerated') else 'no'}"
    return f"not probed: {g.get('why', '?')}"


def _mobile_section(result):
    """The readiness checks export recorded for every mobile_checks kind, and ONNX Runtime Mobile's
    coverage of every ort_mobile kind (gated by [gates] mobile_checks*, ort_mobile_*)."""
    own = [r for r in result["artifacts"] if not r.get("client")]  # a client's row repeats its file's checks
    rows = [r for r in own if artifacts.get(r["name"]).mobile_checks]
    ort = [r for r in own if artifacts.get(r["name"]).ort_mobile]
    if not rows and not ort:
        return []
    lines = ["", "## Mobile readiness (checked at export)", "",
             "| artifact | phone | builtin ops only | input / output | integer I/O | GPU delegate rules "
             "| GPU here (CompiledModel) |", "|---|---|---|---|---|---|---|"]
    checkers = set()
    for r in rows:
        m = r.get("mobile_ready")
        phone = "yes" if artifacts.get(r["name"]).mobile else "-"
        if not m:
            lines.append(f"| {r['name']} | {phone} | not recorded (export again) | | | | |")
            continue
        ops = ", ".join(dict.fromkeys(o["op"] for o in m.get("gpu_incompatible_ops") or []))
        gpu = {True: "compatible", False: f"refused: {ops}", None: "not checked"}[m["gpu_compatible"]]
        checkers.add(m.get("gpu_checker"))
        builtin = "yes" if m["builtin_ops_only"] else "no: " + ", ".join(m["custom_ops"])
        lines.append(f"| {r['name']} | {phone} | {builtin} | {m['input_dtype']} / {m['output_dtype']} "
                     f"| {({None: 'n/a (float kind)', True: 'yes', False: '**no**'})[m['integer_io']]} | {gpu} "
                     f"| {_gpu_runtime(m)} |")
    lines += [""] + [f"GPU rules: {c}." for c in sorted(c for c in checkers if c)]
    if ort:
        lines += ["", "ONNX Runtime Mobile (onnxruntime's mobile usability checker): nodes each phone execution "
                  "provider takes", "", "| artifact | NNAPI | Core ML NeuralNetwork | Core ML MLProgram |",
                  "|---|---|---|---|"]
        for r in ort:
            rec = r.get("ort_mobile")
            cells = [f"{rec[ep]['supported']}/{rec[ep]['nodes']} in {rec[ep]['partitions']}" if rec else "not recorded"
                     for ep in ("nnapi", "coreml_neuralnetwork", "coreml_mlprogram")]
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return lines


def _client_section(result):
    """The phone's files through the clients apps run (rows NAME@CLIENT), against the file's own runtime."""
    rows = [r for r in result["artifacts"] if r.get("client")]
    if not rows:
        return []
    lines = ["", "## App clients", "",
             "The files a phone gets, scored through the client an app runs them with (MediaPipe Tasks' "
             "ImageClassifier: the input's normalisation and the class names come from the file's own "
             "metadata), one image at a time, against the file's own runtime (the LiteRT interpreter) on the "
             "same images. Gated: top-1 agreement (gates.min_agreement_client) and the file kind's accuracy gates.",
             "", "| row | accuracy | its runtime's accuracy | top-1 agreement with it | p50 ms | client threads "
             "| status |", "|---|---|---|---|---|---|---|"]
    by_name = {r["name"]: r for r in result["artifacts"]}
    for r in rows:
        own = by_name.get(r["artifact"], {})
        p50 = ((r.get("latency_by_threads") or {}).get("1") or {}).get("batch1_ms", {}).get("p50")
        status = "ok" if r["status"] == "ok" else f"**{r['status']}**: {r['error']}"
        lines.append(f"| {r['name']} | {_fmt(r.get('accuracy') and r['accuracy'] * 100, '.2f')}% "
                     f"| {_fmt(own.get('accuracy') and own['accuracy'] * 100, '.2f')}% "
                     f"| {_fmt(None if r.get('runtime_agreement') is None else r['runtime_agreement'] * 100, '.2f')}% "
                     f"| {_fmt(p50, '.3f')} | {r.get('client_threads', '-')} | {status} |")
    return lines


def _profile_section(result):
    """--profile: each artifact's top operators by time, as its runtime's profiler reports them."""
    rows = [r for r in result["artifacts"] if r.get("profile")]
    if not rows:
        return []
    lines = ["", "## Where the time goes (--profile: batch 1, 1 thread, the runtime's own profiler)", ""]
    for r in rows:
        p = r["profile"]
        if "unavailable" in p:
            lines += ["", f"- `{r['name']}`: not profiled: {p['unavailable']}."]
            continue
        lines += ["", f"`{r['name']}`: {p['tool']}, {p['runs']} runs, kernels {p['kernel_ms_per_run']:.3f} ms per run.",
                  "", "| operator type | ms per run | share | | top node | type | ms per run | share |",
                  "|---|---|---|---|---|---|---|---|"]
        for t, n in zip(p["by_op_type"] + [None] * len(p["top_nodes"]), p["top_nodes"]):
            left = f"{t['op_type']} | {t['ms_per_run']:.3f} | {t['share']:.0%}" if t else " | | "
            lines.append(f"| {left} | | `{n['node']}` | {n['op_type']} | {n['ms_per_run']:.3f} | {n['share']:.0%} |")
    return lines


def markdown(result):
    m = result["machine"]
    all_t = max(result["threads"])
    lines = [
        "# Evaluation report", "",
        f"{result['test_images']} test images{'' if result['full_test_set'] else ' (a subset: --limit)'}, "
        f"created {result['created']}. Machine: {m['cpu']}, {m['cores']} cores, "
        f"ISA {' '.join(m['isa_flags'])}; " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v) + ".",
        "",
        f"Model: {_fmt(result['flops_per_image'] and result['flops_per_image'] / 1e6, '.1f')} MFLOP per image "
        f"(counted from the graph). CPU peak, best dense matmul per precision: " + _peaks(result) + ".",
        "",
        f"| artifact | format | precision | size MB | accuracy | diff pp | agreement | p50 ms (1T) "
        f"| p99 ms (1T) | p50 ms ({all_t}T) | load s | img/s (batch) "
        f"| share of its precision's peak (1T b1 / {all_t}T b1 / {all_t}T batch) "
        f"| peak RSS MB | status |",
        "|" + "---|" * 15,
    ]
    for r in result["artifacts"]:
        by_t = r.get("latency_by_threads") or {}
        one = (by_t.get("1") or {}).get("batch1_ms") or {}
        alls = (by_t.get(str(all_t)) or {}).get("batch1_ms") or {}
        load = (by_t.get("1") or by_t.get(str(all_t)) or {}).get("load_s")
        rss = max((v.get("peak_rss_mb") or 0 for v in by_t.values()), default=None) or None
        tp = r.get("throughput")
        status = "ok" if r["status"] == "ok" else f"**{r['status']}**: {r['error']}"
        lines.append(
            f"| {r['name']} | {r['format']} | {r['precision']} | {r['size_mb']:.2f} "
            f"| {_fmt(r.get('accuracy') and r['accuracy'] * 100, '.2f')}% | {_fmt(r.get('diff_pp'), '+.2f')} "
            f"| {_fmt(r.get('agreement') and r['agreement'] * 100, '.2f')}% | {_fmt(one.get('p50'), '.2f')} "
            f"| {_fmt(one.get('p99'), '.2f')} | {_fmt(alls.get('p50'), '.2f')} | {_fmt(load, '.2f')} "
            f"| {_fmt(tp and tp['images_per_s'], '.0f')} ({_fmt(tp and tp['batch'], 'd')}) | {_share(r)} "
            f"| {_fmt(rss, '.0f')} | {status} |")
    ref = result["reference"] or {}
    lines += ["", "## Gates", "",
              f"Reference accuracy (the manifest's model card, {ref.get('source', '-')}): "
              + (f"{ref['accuracy'] * 100:.2f}%." if ref.get("accuracy") is not None else f"none ({ref.get('why')}).")
              + f" Calibration: {(result.get('calibration') or {}).get('images', '-')} training images "
              f"({(result.get('calibration') or {}).get('source', '-')}, sha256 "
              f"{str((result.get('calibration') or {}).get('sha256', '-'))[:12]}...).", ""]
    if not result["gates_checked"]:
        lines.append("**No gate was checked (--no-gates).**")
    elif result["gate_failures"]:
        lines += [f"- {f}" for f in result["gate_failures"]]
    else:
        lines.append(f"All {len(result['gates'])} gates passed.")
    lines += _mobile_section(result)
    lines += _client_section(result)
    if any(r.get("layer_error") for r in result["artifacts"]):
        lines += ["", "## Per-layer quantization error", "",
                  "Where each int8 artifact loses precision, layer by layer: [layer_error.md](layer_error.md).", "",
                  "![per-layer SQNR](layer_error.png)"]
    lines += _profile_section(result)
    lines += ["", "Latency is reported, never gated. p50/p99: batch-1 latency after warm-up; 1T = one thread. "
              "Accuracy differences and agreement are against the `keras` artifact. Share of peak = graph "
              "FLOPs / time over the peak of the precision the artifact computes in (int8 kinds: the uint8 x "
              "int8 matmul peak; the rest: float32), at the same thread count. *above probe: faster than the "
              "probe's best matmul, so the probe missed this CPU's peak (or the runtime skips work the graph "
              "states, e.g. Winograd convolutions); no share is claimed.",
              "", "![accuracy vs latency](accuracy_vs_latency.png)", "",
              "![reference confusion matrix](confusion_reference.png)", ""]
    return "\n".join(lines)


def charts(result, report_dir):
    """accuracy_vs_latency.png (every scored artifact) and confusion_reference.png (the Keras reference)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["artifacts"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(rows):
        lat = (r.get("latency_ms") or {}).get("p50")
        if lat is None:  # latency not measured (--no-latency): plot at batch throughput time per image
            lat = 1000 / r["throughput"]["images_per_s"]
        # A legend, not annotations: artifacts with equal accuracy and latency overlap.
        ax.scatter(lat, r["accuracy"] * 100, s=50, marker="osD^v<>P*X"[i // 10 % 10], color=f"C{i % 10}", alpha=0.8,
                   label=r["name"])  # colour and marker vary apart: no two of 100 rows look alike
    ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("batch-1 p50 latency, 1 thread (ms)" if result["latency_measured"]
                  else "time per image at batch throughput (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Accuracy vs latency, {result['test_images']} test images, {result['machine']['cpu']}")
    ax.grid(alpha=0.3)
    atomic.write_png(Path(report_dir) / "accuracy_vs_latency.png", fig, bbox_inches="tight")
    plt.close(fig)

    ref = next((r for r in rows if r["name"] == REFERENCE), None)
    if ref is not None:
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        m = ref["confusion"]
        ax.imshow(m, cmap="Blues")
        for i in range(10):
            for j in range(10):
                ax.text(j, i, m[i][j], ha="center", va="center", fontsize=7,
                        color="white" if m[i][j] > max(map(max, m)) / 2 else "black")
        ax.set_xticks(range(10), CLASSES, rotation=45, ha="right")
        ax.set_yticks(range(10), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"keras reference: {ref['accuracy'] * 100:.2f}% on {ref['images']} test images")
        atomic.write_png(Path(report_dir) / "confusion_reference.png", fig, bbox_inches="tight")
        plt.close(fig)


def write(result, report_dir, cfg=None):
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    charts(result, report_dir)
    layer_report.write(result, report_dir)
    atomic.write_text(report_dir / "evaluation.md", markdown(result))
    atomic.write_json(report_dir / "evaluation.json", result)  # last: its presence means a complete report
    if cfg is not None:
        config_mod.write_resolved(cfg, report_dir)
