"""The graph ops an artifact may hold, checked in its file before a runtime loads it.

A SavedModel is a program: `tf.saved_model.load` registers the functions it holds and its
serving signature runs whatever ops they contain (`tf.io.read_file` / `tf.io.write_file` copy
files, PyFunc runs Python). So before the SavedModel runner loads one, every node of every meta
graph's graph_def and of every function in graph_def.library is read from saved_model.pb with
the protobuf classes alone (nothing from the file is executed) and checked against what our
exporter writes (SAVED_MODEL_OPS). The checkpoint ops a SavedModel needs to save and restore its
variables (SAVER_OPS: SaveV2, RestoreV2, MergeV2Checkpoints, ...) are allowed only in the
functions the meta graph's saver_def calls and that nothing else reaches, so a signature cannot
write or delete files through them. An ONNX model's nodes (the graph, its subgraphs and local
functions) are checked the same way against ONNX_OPS before an onnxruntime session is made;
tensor data stored in an external file is refused too (our exports keep every weight inside). An
.ort file (ONNX Runtime's flatbuffer) is read with the flatbuffer classes onnxruntime ships and checked
the same way: its graph's nodes and subgraphs, and the ops its saved runtime optimizations would
create (ORT_REPLAY_OPS besides ONNX_OPS), since the runner replays them.

Anything not on a list is refused with one line naming the file and the op. The lists are what
our real export contains (derived with TensorFlow 2.21, tf2onnx 1.17, onnxruntime 1.32): export
models/reference/model.h5 (preset seed) with export_all and both presets (seed, resnet20v1)
with export.savedmodel.write_saved_model / export.onnx_export.write_fp32, onnx_int8 in every
export.onnx_int8_format (qdq, qoperator) x onnx_int8_activations (uint8, int8), then list the op
types with `saved_model_ops()` / `onnx_ops()` below. After a converter upgrade, export fails at
its parity step naming any new op; re-derive the lists the same way.
"""
from pathlib import Path

from pipeline.errors import PipelineError, first_line

# The serving function of an exported classifier, its wrapper and the variable handles
# (every preset gives the same set; Shape/StridedSlice/Pack/Squeeze compute Flatten's target).
SAVED_MODEL_OPS = frozenset({
    "AddV2", "AvgPool", "BiasAdd", "Const", "Conv2D", "Identity", "MatMul", "Mul", "NoOp", "Pack",
    "Placeholder", "ReadVariableOp", "Relu", "Reshape", "Rsqrt", "Shape", "Softmax", "Squeeze",
    "StatefulPartitionedCall", "StridedSlice", "Sub", "VarHandleOp",
    "Mean",  # global average pooling: side-effect-free math a classifier of this family may use (tests' CNNs)
})
# tf.saved_model.save's __inference__traced_save_* / __inference__traced_restore_* functions only.
SAVER_OPS = frozenset({
    "AssignVariableOp", "DisableCopyOnRead", "MergeV2Checkpoints", "RestoreV2", "SaveV2", "Select",
    "ShardedFilename", "StaticRegexFullMatch", "StringJoin",
})
# Named in refusals (none is on a list): ops that touch files or run Python.
FILE_IO_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "Save", "SaveSlices", "Restore",
    "RestoreSlice", "WholeFileReader", "WholeFileReaderV2", "TextLineDataset", "TFRecordDataset",
    "FixedLengthRecordDataset", "CacheDatasetV2", "SaveDataset", "SaveDatasetV2", "LoadDataset",
    "DatasetToTFRecord", "SnapshotDatasetV2", "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "CreateSummaryFileWriter", "WriteSummary", "DebugIdentityV2", "PrintV2", "DecodeProtoV2", "EncodeProto",
})
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

# (domain, op_type), "" = the default ai.onnx domain.
# onnx_fp32: Conv/Add/Relu/AveragePool/Transpose/Reshape/MatMul/Mul/Softmax; when tf2onnx leaves
# Flatten's reshape target unfolded (pipeline/artifacts.py, seen with its optimizers off) the
# target is computed with Shape/Slice/Gather/Squeeze/Unsqueeze/Concat/Cast/Identity.
# onnx_int8 QDQ adds QuantizeLinear/DequantizeLinear/Gemm; QOperator adds QLinearConv and the
# com.microsoft quantized kernels.
ONNX_OPS = frozenset({("", op) for op in (
    "Add", "AveragePool", "Conv", "MatMul", "Mul", "Relu", "Reshape", "Softmax", "Transpose",
    "Cast", "Concat", "Identity", "Shape", "Slice", "Squeeze", "Unsqueeze",
    "QuantizeLinear", "DequantizeLinear", "Gemm", "QLinearConv",
    "GlobalAveragePool", "ReduceMean", "Flatten", "Gather")}  # pooling and flattening: pure math a classifier may use
    | {("com.microsoft", op) for op in ("QGemm", "QLinearAdd", "QLinearAveragePool", "QLinearMul",
                                        "QLinearGlobalAveragePool")})
# What an .ort file's saved runtime optimizations add (export.ort_export): Conv + Relu fused.
ORT_REPLAY_OPS = frozenset({("com.microsoft", "FusedConv")})


def _why(op):
    if op in FILE_IO_OPS:
        return "reads or writes files"
    if op in PYTHON_OPS:
        return "runs Python code"
    if op in SAVER_OPS:
        return "a checkpoint file op outside the SavedModel's save/restore functions"
    return "not an op an exported classifier contains"


def _refuse(path, found):
    """One line for the refused ops found, [(op, where)], the first named in full."""
    found = sorted(set(found), key=lambda f: (f[0] not in FILE_IO_OPS | PYTHON_OPS, f[0] not in SAVER_OPS, f))
    op, where = found[0]
    more = sorted({o for o, _ in found} - {op})
    raise PipelineError(f"{path}: op {op!r} in {where} ({_why(op)}); refused before loading, nothing from "
                        "the file was run" + (f" (also: {', '.join(more)})" if more else ""))


# ---------------------------------------------------------------- SavedModel

def _read_saved_model(folder):
    from google.protobuf.message import DecodeError

    from pipeline import console
    with console.quiet_native():  # TensorFlow's native start-up lines (unless --verbose)
        from tensorflow.core.protobuf import saved_model_pb2
    pb = Path(folder) / "saved_model.pb"
    if not pb.is_file():  # TF would fall back to saved_model.pbtxt: refuse rather than check two forms
        raise PipelineError(f"{pb}: missing; a SavedModel export holds saved_model.pb")
    try:
        return pb, saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    except (DecodeError, ValueError, OSError) as exc:
        raise PipelineError(f"{pb}: not a SavedModel protobuf ({first_line(exc)})") from None


def _attr_funcs(value):
    """Every function name an AttrValue mentions, also inside a func attr's own attrs."""
    funcs = ([value.func] if value.HasField("func") else []) + list(value.list.func)
    for f in funcs:
        yield f.name
        for inner in f.attr.values():
            yield from _attr_funcs(inner)


def _called(node, functions):
    """Names of the library functions a NodeDef calls or mentions (any func attr, or its op name)."""
    out = {node.op}
    for value in node.attr.values():
        out.update(_attr_funcs(value))
    return out & functions.keys()


def _closure(roots, functions):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            for node in functions[name].node_def:
                todo.extend(_called(node, functions) - seen)
    return seen


def saved_model_ops(folder):
    """{op type: count} over every meta graph's graph_def and library function (no TF runtime used)."""
    import collections
    _, proto = _read_saved_model(folder)
    ops = collections.Counter()
    for mg in proto.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        ops.update(n.op for f in mg.graph_def.library.function for n in f.node_def)
    return dict(ops)


def check_saved_model(folder):
    """Refuse a SavedModel folder whose saved_model.pb holds an op outside the lists (PipelineError)."""
    pb, proto = _read_saved_model(folder)
    found = []
    for mg in proto.meta_graphs:
        functions = {f.signature.name: f for f in mg.graph_def.library.function}
        saver_nodes = {mg.saver_def.save_tensor_name.split(":")[0].lstrip("^"),
                       mg.saver_def.restore_op_name.split(":")[0].lstrip("^")} - {""}
        saver_roots, other_roots = set(), set()
        for node in mg.graph_def.node:
            (saver_roots if node.name in saver_nodes else other_roots).update(_called(node, functions))
            if node.op not in SAVED_MODEL_OPS:
                found.append((node.op, "the graph"))
        saver = _closure(saver_roots, functions)
        # Every function outside the saver's can be called once loaded (signatures, object methods),
        # and so can every function the object graph names.
        objects = mg.object_graph_def
        named = set(objects.concrete_functions) | {n.bare_concrete_function.concrete_function_name
                                                   for n in objects.nodes} | \
            {c for n in objects.nodes for c in n.function.concrete_functions}
        for f in functions.values():
            for value in f.attr.values():
                named.update(_attr_funcs(value))
        reached = _closure(other_roots | (functions.keys() - saver) | (named & functions.keys()), functions)
        for name, f in functions.items():
            allowed = SAVED_MODEL_OPS | SAVER_OPS if name in saver - reached else SAVED_MODEL_OPS
            found += [(n.op, f"function {name}") for n in f.node_def if n.op not in allowed]
    if found:
        _refuse(pb, found)


# ---------------------------------------------------------------- ONNX

def _onnx_graphs(model):
    """Every graph ORT could run: the main one, node attribute subgraphs, training-info graphs."""
    todo = [model.graph] + [g for t in model.training_info for g in (t.initialization, t.algorithm)]
    while todo:
        graph = todo.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    todo.append(attr.g)
                todo.extend(attr.graphs)


def _load_onnx(path):
    import onnx
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several kinds for a bad file
        raise PipelineError(f"{path}: not an ONNX model ({type(exc).__name__})") from None


def _onnx_nodes(model):
    for graph in _onnx_graphs(model):
        for node in graph.node:
            yield node, f"graph {graph.name or '(unnamed)'}"
    for fn in model.functions:
        for node in fn.node:
            yield node, f"local function {fn.domain}.{fn.name}"


def onnx_ops(path):
    """{(domain, op_type): count} over the model's graphs and local functions."""
    import collections
    return dict(collections.Counter(("" if n.domain == "ai.onnx" else n.domain, n.op_type)
                                    for n, _ in _onnx_nodes(_load_onnx(path))))


def check_onnx(path):
    """Refuse an ONNX file with an op outside ONNX_OPS or tensor data in an external file (PipelineError)."""
    from onnx import TensorProto
    model = _load_onnx(path)
    found = []
    for node, where in _onnx_nodes(model):
        domain = "" if node.domain == "ai.onnx" else node.domain
        if (domain, node.op_type) not in ONNX_OPS:
            found.append((node.op_type if not domain else f"{domain}.{node.op_type}", where))
    if found:
        _refuse(path, found)
    for graph in _onnx_graphs(model):
        tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")] + \
            [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
        for t in tensors:
            if t.data_location == TensorProto.EXTERNAL:
                raise PipelineError(f"{path}: tensor {t.name!r} keeps its data in an external file; refused "
                                    "(an exported model holds its weights inside)")


# ---------------------------------------------------------------- ORT format (.ort)

def _read_ort(path):
    from onnxruntime.tools import ort_format_model  # noqa: F401 - puts its flatbuffer classes on sys.path
    from ort_flatbuffers_py.fbs.InferenceSession import InferenceSession
    data = bytearray(Path(path).read_bytes())
    if not InferenceSession.InferenceSessionBufferHasIdentifier(data, 0):
        raise PipelineError(f"{path}: not an ORT format model (no ORT flatbuffer identifier)")
    return InferenceSession.GetRootAsInferenceSession(data, 0).Model().Graph()


def _ort_graphs(graph, where="the graph"):
    """(graph, where) for the main graph and every node attribute subgraph in it."""
    from ort_flatbuffers_py.fbs.AttributeType import AttributeType
    yield graph, where
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        for j in range(node.AttributesLength()):
            attr = node.Attributes(j)
            subgraphs = [attr.G()] if attr.Type() == AttributeType.GRAPH else \
                [attr.Graphs(k) for k in range(attr.GraphsLength())] if attr.Type() == AttributeType.GRAPHS else []
            for sub in subgraphs:
                yield from _ort_graphs(sub, f"a subgraph of node {node.Name().decode()}")


def _ort_graph_ops(graph, where):
    """(domain, op_type, where) of the graph's nodes and of the nodes its saved optimizations would create."""
    out = [(graph.Nodes(i).Domain().decode(), graph.Nodes(i).OpType().decode(), where)
           for i in range(graph.NodesLength())]
    saved = graph.RuntimeOptimizations()
    for i in range(saved.RecordsLength() if saved else 0):
        entry = saved.Records(i)
        for j in range(entry.RuntimeOptimizationRecordsLength()):
            record = entry.RuntimeOptimizationRecords(j)
            for k in range(record.ProducedOpIdsLength()):  # "domain:op_type:since_version"
                domain, op, _ = record.ProducedOpIds(k).decode().split(":")
                out.append((domain, op, f"saved optimization {entry.OptimizerName().decode()} of {where}"))
    return out


def _ort_external(graph):
    """Names of the graph's initializers whose data lives in an external file."""
    tensors = [graph.Initializers(i) for i in range(graph.InitializersLength())]
    for i in range(graph.SparseInitializersLength()):
        tensors += [graph.SparseInitializers(i).Values(), graph.SparseInitializers(i).Indices()]
    return [t.Name().decode() for t in tensors if t is not None and t.ExternalDataOffset() >= 0]


def _ort_content(path):
    """([(domain, op_type, where)], [external tensor names]) of an .ort file; domain "" = ai.onnx."""
    ops, external = [], []
    try:
        for graph, where in _ort_graphs(_read_ort(path)):
            ops += [("" if d == "ai.onnx" else d, op, w) for d, op, w in _ort_graph_ops(graph, where)]
            external += _ort_external(graph)
    except PipelineError:
        raise
    except Exception as exc:  # a damaged flatbuffer fails in struct / index / decoding code
        raise PipelineError(f"{path}: not a readable ORT format model ({type(exc).__name__})") from None
    return ops, external


def ort_ops(path):
    """{(domain, op_type): count} over an .ort file's graphs and the ops its saved optimizations create."""
    import collections
    return dict(collections.Counter((domain, op) for domain, op, _ in _ort_content(path)[0]))


def check_ort(path):
    """Refuse an .ort file with an op outside ONNX_OPS | ORT_REPLAY_OPS, or external tensor data (PipelineError)."""
    ops, external = _ort_content(path)
    found = [(f"{domain}.{op}" if domain else op, where) for domain, op, where in ops
             if (domain, op) not in ONNX_OPS | ORT_REPLAY_OPS]
    if found:
        _refuse(path, found)
    if external:
        raise PipelineError(f"{path}: tensor {external[0]!r} keeps its data in an external file; refused "
                            "(an exported model holds its weights inside)")
