"""ONNX fp32 via tf2onnx; ONNX int8 via onnxruntime.quantization (pipeline.onnx_quantize).

tf2onnx's `from_keras` does not understand Keras 3 models, so we convert a tf.function
with a named, dynamic-batch input signature; its variables are frozen into the graph,
so the model has exactly one input and no constant leaks in as an extra input.
"""
import re
from pathlib import Path

from export.savedmodel import image_spec
from pipeline.errors import PipelineError
from pipeline.model import OUTPUT_NAME
from pipeline.onnx_quantize import check_single_io, int8_settings, write_int8


def write_fp32(model, path, opset):
    import onnx
    import tensorflow as tf
    import tf2onnx
    fn = tf.function(lambda image: model(image, training=False), input_signature=[image_spec()])
    tf2onnx.utils.INTERNAL_NAME = 1  # its name counter is global: reset it so names (and bytes) repeat
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[image_spec()], opset=opset)
    _rename_output(proto, OUTPUT_NAME)
    _canonical_names(proto)
    check_single_io(proto, path)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _rename_output(proto, name):
    """tf2onnx names the output after the TF tensor ("Identity:0"); users want "probabilities"."""
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[0].name = name


def _canonical_names(proto):
    """Renumber the names tf2onnx makes up ("const_fold_opt__412") in graph order.

    tf2onnx numbers them with a process-wide counter, and orders initializers by name, so
    the same model converted after other work in the process gave other bytes.
    """
    g = proto.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    made_up = re.compile(r"__\d+")
    tensors, nodes = {}, {}

    def canon(name, table):
        if name in keep or not made_up.search(name):
            return name
        return table.setdefault(name, made_up.sub("", name) + f"__{len(table)}")

    for node in g.node:
        node.input[:] = [canon(n, tensors) for n in node.input]
        node.output[:] = [canon(n, tensors) for n in node.output]
        node.name = canon(node.name, nodes)
    for t in list(g.initializer) + list(g.value_info):
        t.name = canon(t.name, tensors)
    dims = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        for i, d in enumerate(v.type.tensor_type.shape.dim):
            if d.HasField("dim_param"):  # tf2onnx's "unk__415"; the dynamic batch of the I/O is "batch"
                d.dim_param = "batch" if v.name in keep and i == 0 else dims.setdefault(d.dim_param, f"dim{len(dims)}")
    first_use = {n: i for i, n in reversed(list(enumerate(x for node in g.node for x in node.input)))}
    inits = sorted(g.initializer, key=lambda t: (first_use.get(t.name, len(first_use)), t.name))
    del g.initializer[:]
    g.initializer.extend(inits)
    g.doc_string = ""  # names the converter version only; tool versions are in the manifest


def build_fp32(exporter, row, path):
    write_fp32(exporter.model, path, exporter.cfg.export.onnx_opset)
    return {"opset": exporter.cfg.export.onnx_opset}


def build_int8(exporter, row, path):
    """Plain static int8 (export.constrained_int8.build_onnx_int8 dispatches here when the constraint is off)."""
    return write_int8(exporter.path_of(row.needs), path, exporter.calibration.images, int8_settings(exporter.cfg.export))


def build_static(exporter, row, path):
    """The `needs` ONNX file with its batch fixed to row.batch (a phone's NNAPI / Core ML execution providers
    take no dynamic shape), with onnxruntime's own tools: make_dim_param_fixed + fix_output_shapes, then its
    BASIC-level optimizer (constant folding, as the mobile usability checker runs it first) folds whatever
    tf2onnx left computing Flatten's target at run time (Shape / Gather / Concat) into a constant, and every
    shape is inferred again: no open dimension and no runtime-shape op is left."""
    import tempfile

    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed, optimize_model
    proto = onnx.load(str(exporter.path_of(row.needs)))
    make_dim_param_fixed(proto.graph, "batch", row.batch)
    fix_output_shapes(proto)
    with tempfile.TemporaryDirectory(prefix="static_onnx_", dir=path.parent) as tmp:
        fixed, folded = Path(tmp) / "fixed.onnx", Path(tmp) / "folded.onnx"
        onnx.save(proto, str(fixed))
        optimize_model(fixed, folded)
        proto = onnx.load(str(folded))
    del proto.graph.value_info[:]
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    open_dims = [v.name for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output)
                 if any(not d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)]
    runtime_shape = sorted({n.op_type for n in proto.graph.node if n.op_type in ("Shape", "Size")})
    if open_dims or runtime_shape:
        raise PipelineError(f"{row.name}: after fixing the batch, tensors with an open dimension "
                            f"{open_dims[:3]} or runtime-shape ops {runtime_shape} remain")
    check_single_io(proto, path)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return {"batch": row.batch, "fixed_from": row.needs, "optimizer": "onnxruntime ORT_ENABLE_BASIC"}
