"""Accuracy-constrained int8: keep the most quantization-sensitive layers in float until int8 is close enough.

With `export.int8_max_drop_pp` > 0 the int8 builders (onnx_int8, tflite_int8) measure, on the
holdout set (`export.int8_holdout_images` images of data.calibration that pipeline.sampling keeps
out of the calibration set), top-1 accuracy on them, for the float model and for
the int8 artifact. While int8 is more than `int8_max_drop_pp` points below float, they rebuild
it with the 1, 2, ... most sensitive layers kept in float (fewest first, at most MAX_FLOAT_LAYERS)
and stop at the first that is within the limit. The plain int8 artifact (step 0) is built
first; a model that meets the limit with it costs one holdout evaluation and nothing else.

Sensitivity ranking (export.layer_error measures; the plain int8 artifact's layers, on up to
pipeline.sampling.RANK_IMAGES calibration images, never holdout ones):

* ONNX: `onnx_layer_error` compares each quantized tensor with float *after everything before
  it was quantized too*, so its SQNR mostly falls with depth and ranking by it would put the last
  layers first whatever they do. We rank by what each layer *adds*: its noise-to-signal ratio
  minus that of its worst quantized input, both from the same rows (n = 10^(-SQNR/10); "own
  SQNR" = -10 log10(n_out - n_in), +inf when the layer adds nothing). That is the "SQNR drop
  over the input" taken in linear power, not in dB: a dB difference calls a Mul that takes
  200 dB down to 53 dB the worst layer of the model when it adds a negligible 5e-6 of noise,
  and a dB difference to the preceding row in graph order compares a layer with an unrelated
  branch in a residual block. The input is the node's own input (through its DequantizeLinear),
  not the preceding row.
* TFLite: `tflite_layer_error` (QuantizationDebugger's NumericVerify) already runs each float op
  on the same dequantized inputs as the int8 op, so its SQNR is the layer's own error: ranked
  as is.

Each runtime is ranked on its own quantizer's result (ORT's uint8 x int8 QDQ and TFLite's
int8 quantize differently), so a layer that only one of them handles badly is found there.

What "in float" means: ONNX: the layer's nodes (the Conv/Gemm/Add and the Relu ORT had fused
into it) go to quantize_static's nodes_to_exclude: its weights stay float and it computes in
float on dequantized inputs; a quantized consumer still quantizes its output. TFLite: the op's
output tensor name goes to the MLIR quantizer's denylisted_nodes (what QuantizationDebugOptions
passes); it gets DEQUANTIZE/QUANTIZE around it, and the model keeps its uint8 input and output.
"""
import math
import tempfile
from pathlib import Path

import numpy as np

from export import onnx_export, parity, tflite_export
from export.layer_error import onnx_layer_error, tflite_layer_error
from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.model import labels_text
from pipeline.onnx_quantize import int8_settings, write_int8

MAX_FLOAT_LAYERS = 8   # give up (PipelineError) past this many layers in float
_EPS = 1e-9            # accuracy comparisons: fractions of a few hundred images


# ---------------------------------------------------------------- holdout and accuracy

def accuracy(probs, labels):
    return float(np.mean(np.asarray(probs).argmax(1) == np.asarray(labels)))


def _predict(kind, path, images):
    """Probabilities as export's parity check runs the artifact (export.parity.run)."""
    return parity.run(artifacts.get(kind), path, images)


# ---------------------------------------------------------------- rankings

def _noise(sqnr_db):
    return 10.0 ** (-sqnr_db / 10.0)


def _why_onnx(c):
    own = "adds no measurable noise" if math.isinf(c["own_sqnr_db"]) else f"own SQNR {c['own_sqnr_db']:.1f} dB"
    return (f"rank {c['rank']}: {own} (noise it adds over its worst input; cumulative SQNR "
            f"{c['sqnr_db']:.1f} dB after it, onnx_layer_error)")


def onnx_ranking(fp32_path, qdq_path, prepared_path, images):
    """Layers of a QDQ model, most sensitive first: [{"layer", "fused", "op", "nodes", "sqnr_db",
    "own_sqnr_db", "rank", "why"}], only those that add noise. `nodes` are node names of the
    quant_pre_process'ed fp32 model (`prepared_path`), as quantize_static's nodes_to_exclude takes them."""
    import onnx
    rows = onnx_layer_error(fp32_path, qdq_path, images)
    by_tensor = {r["tensor"]: r for r in rows}
    qgraph = onnx.load(str(qdq_path), load_external_data=False).graph
    qproducer = {o: n for n in qgraph.node for o in n.output}
    pgraph = onnx.load(str(prepared_path), load_external_data=False).graph
    pproducer = {o: n for n in pgraph.node for o in n.output}
    pnames = {n.name for n in pgraph.node}

    def input_rows(node):  # quantized activations the node reads: tensor -> Q -> DQ -> node
        for name in node.input:
            dq = qproducer.get(name)
            q = qproducer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in by_tensor:
                yield by_tensor[q.input[0]]

    def nodes_of(tensor, node_name):
        """The prepared graph's nodes from `node_name` to the one making `tensor` (ORT drops the
        Relu after a Conv/Add whose output it quantizes: the Conv then makes the Relu's output)."""
        chain, node = [], pproducer.get(tensor)
        while node is not None and len(chain) < 4:
            chain.append(node.name)
            if node.name == node_name:
                return chain[::-1]
            node = pproducer.get(node.input[0]) if node.input else None
        return [node_name] if node_name in pnames else []

    found, seen = [], set()
    for row in rows:
        src = qproducer.get(row["tensor"])
        if src is None or src.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        nodes = nodes_of(row["tensor"], src.name)
        if not nodes or tuple(nodes) in seen:
            continue
        seen.add(tuple(nodes))
        n_in = max((_noise(r["sqnr_db"]) for r in input_rows(src)), default=0.0)
        added = _noise(row["sqnr_db"]) - n_in
        own = -10.0 * math.log10(added) if added > 1e-12 else math.inf
        if math.isinf(own):
            continue
        found.append({"layer": row["layer"], "fused": row["fused"], "op": row["op"], "nodes": nodes,
                      "sqnr_db": round(row["sqnr_db"], 2), "own_sqnr_db": round(own, 2)})
    found.sort(key=lambda c: c["own_sqnr_db"])
    for i, c in enumerate(found):
        c["rank"] = i + 1
        c["why"] = _why_onnx(c)
    return found


def tflite_ranking(saved_model_dir, images, calibration_images):
    """TFLite ops, most sensitive first: [{"layer", "fused", "op", "nodes", "sqnr_db", "rank", "why"}];
    `nodes` is the op's output tensor name, as the MLIR quantizer's denylisted_nodes takes it."""
    rows = tflite_layer_error(saved_model_dir, images, calibration_images)
    found = sorted(({"layer": r["layer"] or r["tensor"], "fused": r["fused"], "op": r["op"],
                     "nodes": [r["tensor"]], "sqnr_db": round(r["sqnr_db"], 2)} for r in rows),
                   key=lambda c: c["sqnr_db"])
    for i, c in enumerate(found):
        c["rank"] = i + 1
        c["why"] = (f"rank {c['rank']}: SQNR {c['sqnr_db']:.1f} dB on its own dequantized inputs "
                    "(QuantizationDebugger)")
    return found


# ---------------------------------------------------------------- the search

def search(name, build, rank, float_accuracy, holdout_labels, max_drop_pp, ranking="", cap=MAX_FLOAT_LAYERS):
    """Step 0 plain int8, then the 1, 2, ... most sensitive layers in float until within the limit.

    build(layers) -> holdout probabilities of the artifact built with `layers` (ranking entries) in
    float, left as the current artifact; rank() -> the ranking (called once, after a failed step 0).
    Returns the manifest record; PipelineError when even `cap` layers in float do not do.
    """
    steps, ranked, chosen = [], None, []
    while True:
        acc = accuracy(build(chosen), holdout_labels)
        steps.append({"float_layers": [c["layer"] for c in chosen], "accuracy": round(acc, 4)})
        drop = (float_accuracy - acc) * 100
        if drop <= max_drop_pp + _EPS:
            break
        if ranked is None:
            ranked = rank()
        if len(chosen) >= min(cap, len(ranked)):
            tried = (f"even with the {len(chosen)} most sensitive layers in float "
                     f"({', '.join(c['layer'] for c in chosen)})" if chosen
                     else "and no layer is left to keep in float")
            raise PipelineError(f"{name}: int8 is {drop:.2f} pp below float on {len(holdout_labels)} held-out "
                                f"calibration images {tried}; export.int8_max_drop_pp = {max_drop_pp:g} pp")
        chosen = ranked[:len(chosen) + 1]
    return {"max_drop_pp": max_drop_pp, "holdout_images": int(len(holdout_labels)),
            "float_accuracy_holdout": round(float_accuracy, 4), "int8_accuracy_holdout": steps,
            "drop_pp": round(drop, 2),
            "float_layers": [{k: c[k] for k in ("layer", "fused", "op", "nodes", "sqnr_db", "own_sqnr_db", "why")
                              if k in c} for c in chosen],
            "ranking": ranking if ranked is not None else "not needed: plain int8 is within the limit",
            "met": True}


def _split(exporter):
    """(calibration images, holdout images, holdout labels): disjoint sets drawn by pipeline.sampling."""
    sets = exporter.sets
    return sets.calibration.images, sets.holdout.images, np.asarray(sets.holdout.labels)


# ---------------------------------------------------------------- ONNX

def onnx_int8(exporter, row, path, settings):
    """The onnx_int8 artifact at `path` under the accuracy constraint; write_int8's settings plus
    "accuracy_constraint" (the search record)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    fp32 = exporter.path_of(row.needs)
    calib, holdout, labels = _split(exporter)
    float_acc = accuracy(_predict(row.needs, fp32, holdout), labels)
    written = {}

    def build(chosen):
        nodes = [n for c in chosen for n in c["nodes"]]
        written["settings"] = write_int8(fp32, path, calib, settings, nodes_to_exclude=nodes)
        return _predict(row.name, path, holdout)

    def rank():
        with tempfile.TemporaryDirectory(prefix="constrained_int8_") as tmp:
            prepared = Path(tmp) / "prep.onnx"
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            qdq = path
            if settings["format"] != "qdq":  # layer_error needs Q/DQ pairs: rank an otherwise equal QDQ twin
                qdq = Path(tmp) / "twin.onnx"
                write_int8(fp32, qdq, calib, {**settings, "format": "qdq"})
            return onnx_ranking(fp32, qdq, prepared, exporter.sets.rank)

    record = search(row.name, build, rank, float_acc, labels, exporter.cfg.export.int8_max_drop_pp,
                    "own SQNR: onnx_layer_error's cumulative SQNR less its input's, in linear noise power")
    return {**written["settings"], "calibration_images": int(len(calib)), "accuracy_constraint": record}


# ---------------------------------------------------------------- TFLite

def _calibrated(saved_model_dir, calibration_images):
    """The SavedModel converted to float TFLite with calibration statistics, as the int8 converter
    makes it before quantizing (export.tflite_export.configure's settings)."""
    import tensorflow as tf
    converter = tflite_export.configure(tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir)), "int8", calibration_images)
    # float layers are TFLITE_BUILTINS ops: allowed beside the int8 ones
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True  # what QuantizationDebugger does
    return converter.convert()


def quantize_calibrated(calibrated, denylisted_nodes=()):
    """Full int8 with uint8 input/output (as the tflite_int8 converter), the denylisted ops in float.

    The call QuantizationDebugger.get_nondebug_quantized_model makes, plus the uint8 I/O types the
    converter passes (the debugger's model keeps float I/O)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert
    flat = convert.mlir_quantize(calibrated, input_data_type=tf.uint8, output_data_type=tf.uint8,
                                 denylisted_nodes=list(denylisted_nodes) or None)
    try:  # the converter's last step: shared constant buffers stored once (size only)
        from tensorflow.lite.python.lite import _deduplicate_readonly_buffers
        flat = _deduplicate_readonly_buffers(flat)
    except Exception:  # noqa: BLE001 - an optimisation; the model is complete without it
        pass
    return flat


def tflite_int8(exporter, row, path):
    """(flatbuffer, settings) of the tflite_int8 artifact under the accuracy constraint."""
    saved_model = exporter.path_of(row.needs)
    calib, holdout, labels = _split(exporter)
    float_acc = accuracy(_predict(row.needs, saved_model, holdout), labels)
    calibrated = _calibrated(saved_model, calib)
    current = {}

    def build(chosen):
        current["flat"] = quantize_calibrated(calibrated, [n for c in chosen for n in c["nodes"]])
        with tempfile.TemporaryDirectory(prefix="constrained_int8_") as tmp:
            candidate = Path(tmp) / "candidate.tflite"
            candidate.write_bytes(current["flat"])
            return _predict(row.name, candidate, holdout)

    record = search(row.name, build, lambda: tflite_ranking(saved_model, exporter.sets.rank, calib),
                    float_acc, labels, exporter.cfg.export.int8_max_drop_pp,
                    "per-layer SQNR: tflite_layer_error (QuantizationDebugger, each op on its own inputs)")
    return current["flat"], {"calibration_images": int(len(calib)), "io": "uint8", "accuracy_constraint": record}


# ---------------------------------------------------------------- the int8 kinds' builders (pipeline/artifacts.py)

def build_onnx_int8(exporter, row, path):
    """onnx_int8: plain static int8, or under the accuracy constraint when export.int8_max_drop_pp > 0."""
    if exporter.cfg.export.int8_max_drop_pp > 0:
        return onnx_int8(exporter, row, path, int8_settings(exporter.cfg.export))
    return onnx_export.build_int8(exporter, row, path)


def build_tflite_int8(exporter, row, path):
    """tflite_int8: plain full-integer int8, or under the accuracy constraint when export.int8_max_drop_pp > 0."""
    if exporter.cfg.export.int8_max_drop_pp > 0:
        flat, settings = tflite_int8(exporter, row, path)
        tflite_export.write(path, flat, labels_text())
        return settings
    return tflite_export.build(exporter, row, path)
