"""pipeline.ort_mobile: onnxruntime's mobile usability checker on a tiny ONNX model, dynamic vs fixed batch."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline import ort_mobile


def _tiny(path, batch):
    """Conv -> Relu -> Flatten -> Gemm -> Softmax; `batch` is a dim_param name or a fixed size."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(4 * 8 * 8, 10)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # Core ML MLProgram lacks Flatten
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["g"]), helper.make_node("Softmax", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_dynamic_batch_puts_no_node_on_nnapi_and_a_fixed_one_puts_every_node(tmp_path):
    dynamic = ort_mobile.coverage(_tiny(tmp_path / "dynamic.onnx", "batch"))
    fixed = ort_mobile.coverage(_tiny(tmp_path / "fixed.onnx", 1))
    assert dynamic["nnapi"]["supported"] == 0 < dynamic["nnapi"]["nodes"]
    assert fixed["nnapi"]["supported"] == fixed["nnapi"]["nodes"] > 0 and fixed["nnapi"]["partitions"] == 1
    assert ort_mobile.failures(fixed, ("nnapi", "coreml_neuralnetwork")) == []
    lines = ort_mobile.failures(dynamic, ("nnapi",))
    assert len(lines) == 1 and lines[0].startswith("nnapi takes 0 of ")
