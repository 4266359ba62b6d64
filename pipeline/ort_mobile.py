"""How much of an ONNX model ONNX Runtime Mobile's phone execution providers can take, from onnxruntime's
own mobile usability checker (`python -m onnxruntime.tools.check_onnx_model_mobile_usability`), read
through its functions instead of its log: the model optimized to BASIC level as the checker does, its
shapes inferred, then the NNAPI (Android) and Core ML (iOS; NeuralNetwork and MLProgram) partitioning
with fixed input sizes required. Recorded by export for every ONNX kind a phone gets; gated by evaluate
(gates.ort_mobile_<kind>)."""
import logging
import tempfile
from pathlib import Path

EPS = ("nnapi", "coreml_neuralnetwork", "coreml_mlprogram")


def coverage(path) -> dict:
    """{ep: {"nodes", "supported", "partitions", "unsupported_ops"}} for every EP of EPS."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model
    logging.getLogger("usability_checker").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ort_mobile_") as tmp:
        optimized = Path(tmp) / Path(path).name
        optimize_model(Path(path), optimized, use_external_initializers=True)  # what the checker does first
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        infos = {"nnapi": uc.check_nnapi_partitions(model, True),
                 "coreml_neuralnetwork": uc.check_coreml_partitions(model, True, "coreml_supported_neuralnetwork_ops.md"),
                 "coreml_mlprogram": uc.check_coreml_partitions(model, True, "coreml_supported_mlprogram_ops.md")}
    return {ep: {"nodes": int(i.num_nodes), "supported": int(i.num_supported_nodes),
                 "partitions": int(i.num_partitions), "unsupported_ops": sorted(i.unsupported_ops)}
            for ep, i in infos.items()}


def failures(record, required) -> list:
    """One line per required EP that cannot take every node."""
    out = []
    for ep in required:
        r = record[ep]
        if r["supported"] != r["nodes"]:
            ops = f" (unsupported ops: {', '.join(r['unsupported_ops'])})" if r["unsupported_ops"] else ""
            out.append(f"{ep} takes {r['supported']} of {r['nodes']} nodes in {r['partitions']} partitions{ops}")
    return out
