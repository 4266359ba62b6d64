"""Compare an evaluation with an earlier one (a committed reports/evaluation.json): regression gates
and diff.md, a Markdown table ready to paste into a pull request.

Gated: each artifact's accuracy may fall at most gates.max_regression_pp below the baseline's, and
every artifact of the baseline must still be evaluated. Shown, not gated: per-class accuracy,
agreement, size and latency (machines differ and are noisy).
"""
from pipeline import config as config_mod
from pipeline.errors import PipelineError

SCHEMA_VERSIONS = (2, 3)  # what compare() reads (artifacts, accuracies) is the same in both


def load(path):
    """The baseline report, read before this run writes its own (CI compares with the file it replaces)."""
    data = config_mod.read_json(path)
    if not isinstance(data, dict) or data.get("schema_version") not in SCHEMA_VERSIONS \
            or not isinstance(data.get("artifacts"), list):
        raise PipelineError(f"{path}: not an evaluation.json of schema {SCHEMA_VERSIONS} (evaluate writes one)")
    if not data.get("full_test_set"):
        raise PipelineError(f"{path}: the baseline scored a subset of the test split; it cannot be compared")
    return data


def _pp(value):
    return "-" if value is None else f"{value:+.2f}"


def compare(result, base, base_path, max_regression_pp):
    """(gate dicts, diff.md text) of `result` against the baseline report `base`."""
    ours = {r["name"]: r for r in result["artifacts"]}
    gates, lines = [], []
    for b in base["artifacts"]:
        name, r = b["name"], ours.get(b["name"])
        if r is None or r.get("status") != "ok" or b.get("status") != "ok":
            why = "not evaluated in this run" if r is None else f"status {r.get('status')}" \
                if r.get("status") != "ok" else "the baseline has no score for it"
            gates.append({"artifact": name, "metric": "vs_baseline", "value": None, "threshold": base_path,
                          "passed": False, "why": why})
            lines.append(f"| {name} | {why} | | | | | | |")
            continue
        d_acc = round((r["accuracy"] - b["accuracy"]) * 100, 3)
        gates.append({"artifact": name, "metric": "accuracy_vs_baseline_pp", "value": d_acc,
                      "threshold": -max_regression_pp, "passed": d_acc >= -max_regression_pp})
        per_class = [round((x - y) * 100, 2) for x, y in zip(r["per_class_accuracy"], b["per_class_accuracy"])]
        worst = min(range(len(per_class)), key=per_class.__getitem__)
        agree = None if r.get("agreement") is None or b.get("agreement") is None else \
            (r["agreement"] - b["agreement"]) * 100
        lat_r, lat_b = (r.get("latency_ms") or {}).get("p50"), (b.get("latency_ms") or {}).get("p50")
        lat = f"{lat_b:.2f} -> {lat_r:.2f}" if lat_r and lat_b else "-"
        mark = "" if d_acc >= -max_regression_pp else " **regression**"
        lines.append(f"| {name} | {b['accuracy'] * 100:.2f}% -> {r['accuracy'] * 100:.2f}% | {_pp(d_acc)}{mark} "
                     f"| {result['classes'][worst]} {per_class[worst]:+.2f} | {_pp(agree)} "
                     f"| {b['bytes']:,} -> {r['bytes']:,} | {lat} |")
    new = [n for n in ours if n not in {b["name"] for b in base["artifacts"]}]
    same_model = (base.get("source_checkpoint") or {}).get("sha256") == (result.get("source_checkpoint") or {}).get("sha256")
    failed = [g for g in gates if not g["passed"]]
    text = "\n".join([
        f"### Accuracy vs baseline: {'no regression' if not failed else f'{len(failed)} regression(s)'}", "",
        f"Baseline: `{base_path}` ({base.get('created', '?')}); allowed loss per artifact: {max_regression_pp} pp "
        f"(gates.max_regression_pp). Test images: {result['test_images']} of CIFAR-10 (JPEG q75 copy)."
        + ("" if same_model else " **The checkpoint differs from the baseline's.**"), "",
        "| artifact | accuracy | change pp | worst class (pp) | agreement change pp | bytes | p50 ms 1T (shown, not gated) |",
        "| --- | --- | --- | --- | --- | --- | --- |", *lines,
        *([f"", f"New artifacts, not in the baseline: {', '.join(new)}."] if new else []), ""])
    return gates, text
