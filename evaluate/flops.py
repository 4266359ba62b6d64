"""How far each artifact is from the machine's limit: model FLOPs and a CPU peak probe.

FLOPs per image are counted from the graph, not from a formula: the Keras model is traced
at batch 1, its variables frozen into constants, and TensorFlow's profiler sums the
float_ops of every node (a multiply-add counts 2). The peak probe times the
fastest dense kernels on hand, per precision an artifact computes in: float32 matmul (onnxruntime's
MLAS or numpy's BLAS, whichever is faster) and uint8 x int8 matmul (onnxruntime; VNNI where present).
"""
import time

import numpy as np


def count_flops(model):
    """Float operations for one image through a Keras model, from its frozen TF graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([1, *model.inputs[0].shape[1:]], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        stats = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(),
                                              cmd="op", options=opts)
    return int(stats.total_float_ops)


PROBE_SIZES = (256, 512, 1024)  # square matmuls; the best size differs by cache and precision


def _matmul_model(n, precision):
    """A one-node onnxruntime graph: A (n x n) @ a constant B. int8 = uint8 x int8 (MatMulInteger), the
    pair the int8 artifacts' kernels compute in (VNNI's vpdpbusd where the CPU has it)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    if precision == "fp32":
        op, a_type, out_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
        b = rng.standard_normal((n, n)).astype(np.float32)
    else:
        op, a_type, out_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
        b = rng.integers(-127, 128, (n, n)).astype(np.int8)
    graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], "probe",
                              [helper.make_tensor_value_info("A", a_type, [n, n])],
                              [helper.make_tensor_value_info("Y", out_type, [n, n])],
                              [numpy_helper.from_array(b, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _best(run, ops, deadline):
    """Best ops/s of `run()` until `deadline` (after one warm-up call), in G/s."""
    run()
    best = 0.0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run()
        best = max(best, ops / (time.perf_counter() - t0) / 1e9)
    return best


def peak_gops(threads, seconds=1.5):
    """{"fp32": GFLOP/s, "int8": GOP/s}: the best dense matmul rate at `threads` threads.

    fp32: onnxruntime's MLAS and numpy's BLAS, the better one; int8: onnxruntime's uint8 x int8 GEMM.
    A multiply-add counts 2, as in the graph FLOPs the artifacts are divided by.
    """
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    rng = np.random.default_rng(1)
    slot = seconds / (2 * len(PROBE_SIZES) + 1)
    out = {}
    for precision in ("fp32", "int8"):
        best = 0.0
        for n in PROBE_SIZES:
            session = ort.InferenceSession(_matmul_model(n, precision), opts, providers=["CPUExecutionProvider"])
            a = rng.standard_normal((n, n)).astype(np.float32) if precision == "fp32" \
                else rng.integers(0, 256, (n, n)).astype(np.uint8)
            best = max(best, _best(lambda: session.run(None, {"A": a}), 2 * n ** 3, time.perf_counter() + slot))
        out[precision] = round(best, 1)
    a = rng.standard_normal((512, 512)).astype(np.float32)  # numpy: threads set by the parent's env
    out["fp32"] = max(out["fp32"], round(_best(lambda: a @ a, 2 * 512 ** 3, time.perf_counter() + slot), 1))
    return out
