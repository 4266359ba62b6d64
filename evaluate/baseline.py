"""Compare an evaluation with an earlier one (a committed reports/evaluation.json): regression gates
and diff.md, a Markdown table ready to paste into a pull request.

Gated: each artifact's accuracy may fall at most gates.max_regression_pp below the baseline's, and
every artifact of the baseline must still be evaluated. Shown, not gated: per-class accuracy,
agreement, size and latency (machines differ and are noisy).

What a baseline must be, else it is refused with one line naming the file and the key, before any
artifact is scored: an evaluation.json that passed its gates (`passed: true`, `gates_checked`),
lists at least one artifact, scored the full test split, and scored the same number of test
images (`test_images`) of the same test data (`test_data.sha256`, which evaluate records; a report
without it is refused: evaluate once without --baseline to write a new one) as this run.

Where the report goes, so that a failed run never becomes the next run's baseline (`make gate`
compares with reports/evaluation.json and reports into reports/): a run that fails while its
baseline is its own report dir's evaluation.json writes its whole report, diff.md included, to
`<report dir>/failed/` (replaced as one unit), and leaves the baseline and the files beside it
untouched. Every other run writes into the report dir, removes a diff.md there that it did not
write (a run without --baseline), and removes a `failed/` left by an earlier failed run.
"""
import shutil
from pathlib import Path

from pipeline import atomic, config as config_mod
from pipeline.errors import PipelineError
from pipeline.model import CLASSES

SCHEMA_VERSIONS = (2, 3)  # what compare() reads (artifacts, accuracies) is the same in both
FAILED_DIR = "failed"  # <report dir>/failed/: a failed run's report when the report dir holds its baseline
REPORT_FILE = "evaluation.json"


def load(path):
    """The baseline report, read before this run writes its own (CI compares with the file it replaces)."""
    data = config_mod.read_json(path)
    if not isinstance(data, dict) or data.get("schema_version") not in SCHEMA_VERSIONS \
            or not isinstance(data.get("artifacts"), list):
        raise PipelineError(f"{path}: not an evaluation.json of schema {SCHEMA_VERSIONS} (evaluate writes one)")
    if data.get("passed") is not True:
        raise PipelineError(f"{path}: \"passed\" is {data.get('passed')!r}: a failed evaluation cannot be a "
                            "baseline")
    if data.get("gates_checked") is not True:
        raise PipelineError(f"{path}: \"gates_checked\" is {data.get('gates_checked')!r}: a --no-gates report "
                            "passed no gate and cannot be a baseline")
    if not data["artifacts"]:
        raise PipelineError(f"{path}: \"artifacts\" is empty: a baseline without artifacts gates nothing")
    for i, a in enumerate(data["artifacts"]):
        why = _bad_row(a)
        if why:
            raise PipelineError(f"{path}: \"artifacts\"[{i}] is not an evaluated artifact row ({why})")
    if not isinstance(data.get("source_checkpoint") or {}, dict):
        raise PipelineError(f"{path}: \"source_checkpoint\" must be an object")
    if not data.get("full_test_set"):
        raise PipelineError(f"{path}: the baseline scored a subset of the test split; it cannot be compared")
    return data


def _fraction(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1  # NaN fails too


def _bad_row(row):
    """What compare() could not read in a baseline's artifact row, or None. Rows that did not score
    (status other than "ok") need only a name: compare() gates them as "no score"."""
    if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("status"), str):
        return "name and status must be strings"
    if row["status"] != "ok":
        return None
    per_class, latency = row.get("per_class_accuracy"), row.get("latency_ms")
    checks = [("accuracy", _fraction(row.get("accuracy"))),
              (f"per_class_accuracy, {len(CLASSES)} fractions",
               isinstance(per_class, list) and len(per_class) == len(CLASSES) and all(map(_fraction, per_class))),
              ("bytes", isinstance(row.get("bytes"), int) and not isinstance(row.get("bytes"), bool)),
              ("agreement", row.get("agreement") is None or _fraction(row["agreement"])),
              ("latency_ms.p50", latency is None or (isinstance(latency, dict) and (latency.get("p50") is None or (
                  isinstance(latency["p50"], (int, float)) and not isinstance(latency["p50"], bool)))))]
    bad = [what for what, ok in checks if not ok]
    return f"{row['name']}: {', '.join(bad)}" if bad else None


def test_data(cfg, n):
    """What this run scores: {source, sha256 of the test data file, images}, for the report."""
    source = config_mod.project_path(cfg.data.test)
    return {"source": str(cfg.data.test), "sha256": atomic.sha256_tree(source) if source.exists() else None,
            "images": int(n)}


def check_test_data(base, base_path, cfg, n):
    """This run's test_data record; refuses a baseline scored on another number of images or other data
    (called once the test split is loaded, before any artifact is scored)."""
    ours = test_data(cfg, n)
    if base is None:
        return ours
    images = base.get("test_images")
    if isinstance(images, bool) or images != ours["images"]:
        raise PipelineError(f"{base_path}: \"test_images\" is {images!r}, this run scores {ours['images']}: "
                            "accuracies on other images cannot be compared")
    recorded = base.get("test_data")
    theirs = recorded.get("sha256") if isinstance(recorded, dict) else None
    if theirs is None:
        raise PipelineError(f"{base_path}: \"test_data.sha256\" is missing, so the test data it was scored on is "
                            "unknown; evaluate once without --baseline to write a baseline that records it")
    if theirs != ours["sha256"]:
        raise PipelineError(f"{base_path}: \"test_data.sha256\" {str(theirs)[:12]}... differs from this run's "
                            f"{cfg.data.test} ({str(ours['sha256'])[:12]}...): scored on other test data")
    return ours


def _is_report_of(base_path, report_dir):
    return base_path is not None and Path(base_path).resolve() == (Path(report_dir) / REPORT_FILE).resolve()


def write_report(result, report_dir, cfg, diff_md, base_path):
    """Write the report (and diff.md) where the module doc says; return the folder it went to."""
    from evaluate import report
    report_dir = Path(report_dir)
    failed_dir = report_dir / FAILED_DIR
    if not result["passed"] and _is_report_of(base_path, report_dir):
        atomic.check_replaceable(failed_dir, REPORT_FILE)
        atomic.recover_dir(failed_dir)
        staging = atomic.staging_dir(failed_dir)
        try:
            if diff_md is not None:
                atomic.write_text(staging / "diff.md", diff_md)
            report.write(result, staging, cfg)
            atomic.publish_dir(staging, failed_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return failed_dir
    diff = report_dir / "diff.md"
    if diff_md is not None:
        atomic.write_text(diff, diff_md)
    elif diff.is_file() or diff.is_symlink():
        diff.unlink()  # an earlier run's comparison must not sit beside this run's report
    report.write(result, report_dir, cfg)
    if (failed_dir / REPORT_FILE).is_file() and not failed_dir.is_symlink():
        shutil.rmtree(failed_dir)  # an earlier failed run's report: this one supersedes it
    return report_dir


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
        *(["", f"New artifacts, not in the baseline: {', '.join(new)}."] if new else []), ""])
    return gates, text
