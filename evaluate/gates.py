"""The accuracy gates, checked per artifact from [gates] and the manifest alone.

For every artifact, always:
  floor        accuracy >= reference accuracy (the manifest's model card) - reference_tolerance_pp
               - max_drop_pp_<kind>; with no reference accuracy in the manifest this gate fails and says why
  status       the artifact loaded and ran
For the `keras` artifact: accuracy >= reference accuracy - reference_tolerance_pp.
For a client's row (NAME@CLIENT: the same file through an app-side client, the table's `clients`): every
gate of its file's kind, and top-1 agreement with the file's own runtime >= min_agreement_client.
For every kind with ort_mobile: every node on each execution provider gates.ort_mobile_<kind> names.
For every kind with mobile_checks (pipeline/artifacts.py): mobile_ready (gates.mobile_checks_phone for the
kinds a phone gets, gates.mobile_checks for the rest), the readiness checks export recorded in the manifest
(pipeline.mobile_checks) that [gates] mobile_checks requires; a check that could not run fails.
When `keras` was exported, for every other artifact: the drop against it <= max_drop_pp_<kind>
and top-1 agreement >= min_agreement_<kind> (same images, so also valid on a --limit subset).
Latency is reported, never gated: shared CI machines are too noisy for it.
A failed gate prints `GATE FAILED: <artifact> <metric> = <value> (threshold <t>)`.
"""
from pipeline import artifacts
from pipeline.artifacts import REFERENCE
from pipeline import ort_mobile
from pipeline.mobile_checks import failures as mobile_failures


def _gate(artifact, metric, value, threshold, passed, why=None):
    g = {"artifact": artifact, "metric": metric, "value": value, "threshold": threshold, "passed": bool(passed)}
    if why:
        g["why"] = why
    return g


def check(rows, gates_cfg, reference, test_images, full_test_set):
    """Every gate for every artifact row (see evaluate.run); returns a list of gate dicts.

    `reference` is the manifest's {"accuracy", "test_images", ...} record. Absolute gates compare
    with an accuracy measured on the whole test split, so on a subset (--limit), or a test split of
    another size, they fail: `--no-gates` is the explicit way to take a quick look.
    """
    results = []
    card = reference.get("accuracy") if isinstance(reference, dict) else None
    card_images = reference.get("test_images") if isinstance(reference, dict) else None
    keras_row = next((r for r in rows if r["name"] == REFERENCE and r["status"] == "ok"), None)
    for row in rows:
        name = row["name"]
        if row["status"] != "ok":
            results.append(_gate(name, "status", row["status"], "ok", False, row.get("error")))
            continue
        kind_row = artifacts.of_row(row)
        if row.get("client"):  # its file's own checks are gated on the file's row
            agree = row.get("runtime_agreement")
            results.append(_gate(name, "runtime_agreement", agree, gates_cfg.min_agreement_client,
                                 agree is not None and agree >= gates_cfg.min_agreement_client,
                                 None if agree is not None else f"{row['artifact']} was not scored"))
        required = gates_cfg.mobile_checks_phone if kind_row.mobile else gates_cfg.mobile_checks
        if kind_row.mobile_checks and required and not row.get("client"):
            record = row.get("mobile_ready")
            lines = mobile_failures(record, required) if record else \
                ["the manifest records no mobile-readiness checks (export again)"]
            results.append(_gate(name, "mobile_ready", "; ".join(lines) or "ok", list(required), not lines))
        if kind_row.ort_mobile and not row.get("client"):
            required = getattr(gates_cfg, f"ort_mobile_{row['kind']}")
            record = row.get("ort_mobile")
            lines = ort_mobile.failures(record, required) if record else \
                ["the manifest records no ONNX Runtime Mobile coverage (export again)"]
            results.append(_gate(name, "ort_mobile", "; ".join(lines) or "ok", list(required), not lines))
        acc, kind = row["accuracy"], row["kind"]
        max_drop = getattr(gates_cfg, f"max_drop_pp_{kind}")
        if card is None:
            why = (reference or {}).get("why", "the manifest states no reference accuracy")
            results.append(_gate(name, "accuracy_floor", acc, None, False, f"no reference accuracy: {why}"))
        elif not full_test_set:
            results.append(_gate(name, "accuracy_floor", acc, None, False,
                                 "the reference accuracy is for the full test split; this run scored a subset "
                                 "(--limit): use --no-gates for a quick look"))
        elif card_images != test_images:
            results.append(_gate(name, "accuracy_floor", acc, None, False,
                                 f"the reference accuracy was measured on {card_images} test images, this run "
                                 f"scored {test_images}"))
        else:
            allowed = gates_cfg.reference_tolerance_pp + (0 if row is keras_row else max_drop)
            floor = round(card - allowed / 100, 6)
            results.append(_gate(name, "accuracy_floor", acc, floor, acc >= floor))
        if keras_row is not None and row is not keras_row:
            drop = round((keras_row["accuracy"] - acc) * 100, 3)
            results.append(_gate(name, "accuracy_drop_pp", drop, max_drop, drop <= max_drop))
            min_agree = getattr(gates_cfg, f"min_agreement_{kind}")
            results.append(_gate(name, "agreement", row["agreement"], min_agree, row["agreement"] >= min_agree))
    return results


def failures(results):
    return [f"GATE FAILED: {g['artifact']} {g['metric']} = {g['value']} (threshold {g['threshold']})"
            + (f": {g['why']}" if g.get("why") else "") for g in results if not g["passed"]]
