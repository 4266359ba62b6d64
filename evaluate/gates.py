"""The accuracy-regression gate: thresholds from config [gates], checked per artifact.

Latency is reported, never gated: shared CI machines are too noisy for it.
A failed gate prints `GATE FAILED: <artifact> <metric> = <value> (threshold <t>)`.
"""
import json
from pathlib import Path

from pipeline import config as config_mod
from pipeline.errors import PipelineError

INT8_PRECISIONS = ("int8", "dynamic_int8", "qat_int8")
REFERENCE = "keras"


def kind(entry):
    return "int8" if entry["precision"] in INT8_PRECISIONS else "float"


def model_card_accuracy(cfg, manifest, manifest_path):
    """(accuracy fraction, where it came from) or (None, why not): config first, then metrics.json."""
    configured = cfg.get("gates", {}).get("reference_accuracy", 0) or 0
    if configured:
        return float(configured), "config gates.reference_accuracy"
    ckpt = (manifest.get("source_checkpoint") or {}).get("path")
    if not ckpt:
        return None, "the manifest names no source checkpoint"
    candidates = [Path(ckpt)] if Path(ckpt).is_absolute() else [Path(manifest_path).parent / ckpt,
                                                                 config_mod.project_path(ckpt)]
    for path in (c.parent / "metrics.json" for c in candidates):
        if path.is_file():
            try:
                value = json.loads(path.read_text())["test_accuracy"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise PipelineError(f"{path}: no readable \"test_accuracy\" ({exc})") from None
            if not 0 < float(value) <= 1:
                raise PipelineError(f"{path}: test_accuracy {value} is not a fraction in (0, 1]")
            return float(value), str(path)
    return None, f"no metrics.json beside {ckpt}"


def _gate(artifact, metric, value, threshold, passed):
    return {"artifact": artifact, "metric": metric, "value": value, "threshold": threshold, "passed": bool(passed)}


def check(rows, gates_cfg, card_accuracy=None, full_test_set=True, note=print):
    """Every gate for every artifact row (see evaluate.run); returns a list of gate dicts."""
    results = []
    reference = next((r for r in rows if r["name"] == REFERENCE and r["status"] == "ok"), None)
    if reference is None:
        note(f"note: no usable reference artifact {REFERENCE!r}: drop and agreement gates not checked")
    min_accuracy = float(gates_cfg.get("min_accuracy", 0.0))
    for row in rows:
        name = row["name"]
        if row["status"] != "ok":
            results.append(_gate(name, "status", f"{row['status']} ({row.get('error')})", "ok", False))
            continue
        acc = row["accuracy"]
        if min_accuracy:
            results.append(_gate(name, "accuracy", acc, min_accuracy, acc >= min_accuracy))
        if row is reference:
            if card_accuracy is None:
                continue
            if not full_test_set:
                note("note: model-card gate skipped: --limit evaluates a subset of the test split")
                continue
            threshold = round(card_accuracy - gates_cfg["reference_tolerance_pp"] / 100, 6)
            results.append(_gate(name, "accuracy", acc, threshold, acc >= threshold))
        elif reference is not None:
            k = kind(row)
            drop = round((reference["accuracy"] - acc) * 100, 3)
            max_drop = gates_cfg[f"max_drop_pp_{k}"]
            results.append(_gate(name, "accuracy_drop_pp", drop, max_drop, drop <= max_drop))
            min_agree = gates_cfg[f"min_agreement_{k}"]
            results.append(_gate(name, "agreement", row["agreement"], min_agree, row["agreement"] >= min_agree))
    return results


def failures(results):
    return [f"GATE FAILED: {g['artifact']} {g['metric']} = {g['value']} (threshold {g['threshold']})"
            for g in results if not g["passed"]]
