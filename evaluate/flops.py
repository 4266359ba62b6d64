"""How far each artifact is from the machine's limit: model FLOPs and a CPU peak probe.

FLOPs per image are counted from the graph, not from a formula: the Keras model is traced
at batch 1, its variables frozen into constants, and TensorFlow's profiler sums the
float_ops of every node (a multiply-add counts 2). The peak probe times a large float32
matmul (numpy's BLAS), the fastest dense kernel on hand, at a given thread count.
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


def peak_gflops(seconds=1.5, n=1024):
    """Best GFLOP/s of repeated n x n float32 matmuls over about `seconds` (threads: set by the caller's env)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    a @ b  # warm-up: thread pool start, page faults
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return round(best, 1)
