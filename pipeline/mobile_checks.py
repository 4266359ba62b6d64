"""Mobile readiness of a .tflite file, checked at export (issue #11, item 4).

A model that converts is not yet a model an app can ship. Three things break on phones:
  * custom ops (Flex / SELECT_TF_OPS): the stock LiteRT runtime has no kernel for them, the app
    would have to bundle the TensorFlow Flex delegate or fail at load;
  * a full-integer model with float input or output: integer-only accelerators (NPUs, DSPs) and
    the uint8 camera-pixel contract need integer tensors at the boundary;
  * ops the GPU delegate cannot run: they fall back to the CPU, splitting the graph.
The op list and I/O types come from the flatbuffer (LiteRT's own flatbuffer_utils reader). The GPU
verdict comes from TensorFlow's model analyzer (its per-op CheckGpuDelegateCompatibility), parsed,
not re-implemented here, and only when this build really runs that check.

The pinned TF 2.21 / ai-edge-litert 2.3.0 builds do not: the analyzer reports every model
"compatible" (even a Flex op), the converter accepts `experimental_supported_backends=["GPU"]`
(what `tf.lite.experimental.authoring.compatible` relies on) but logs nothing, and no binary in
either package contains the checker; LiteRT's GPU accelerator only judges a model by compiling it
on a real GPU (WebGPU adapter), which an export machine need not have. So `gpu_check_effective()`
probes the analyzer with a Flex model once per process; when it flags nothing, "gpu_compatible"
is None and "gpu_unchecked_why" says why, and a gate that requires "gpu" fails saying so.
"""
import contextlib
import functools
import io
import re
from collections import Counter

from pipeline.errors import PipelineError

INTEGER_DTYPES = ("uint8", "int8")
CHECKS = ("builtin_ops", "integer_io", "gpu")
ANALYZER = "tf.lite.experimental.Analyzer"

_WARNING = "GPU COMPATIBILITY WARNING: "
_SUBGRAPH = re.compile(r"^Subgraph#(\d+)\b")
_OP = re.compile(r"^\s+Op#(\d+) ([^(\s]+)\(")


def analyze(model_path=None, model_content=None) -> str:
    """The analyzer's report with the GPU check on. It is Python `print`ed (the native wrapper
    returns a string), so redirect_stdout captures it; nothing is written to fd 1 natively."""
    import tensorflow as tf
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(model_path=None if model_path is None else str(model_path),
                                              model_content=model_content, gpu_compatibility=True)
    report = out.getvalue()
    if "Failed to mmap" in report:  # the analyzer reports load errors in its text, it does not raise
        raise PipelineError(f"{ANALYZER} cannot read {model_path or 'the model'}")
    return report


def gpu_report(report: str):
    """(compatible, [{"subgraph", "node", "op", "why"}]) from the analyzer's text. Each per-op
    warning follows its `Op#N NAME(...)` line; the per-subgraph summary warning is not an op."""
    ops, flagged, subgraph, node, name = [], False, None, None, None
    for line in report.splitlines():
        if m := _SUBGRAPH.match(line):
            subgraph = int(m.group(1))
        elif m := _OP.match(line):
            node, name = int(m.group(1)), m.group(2)
        elif line.startswith(_WARNING):
            flagged = True
            why = line[len(_WARNING):].strip()
            if not why.startswith("Subgraph#"):
                ops.append({"subgraph": subgraph, "node": node, "op": name, "why": why})
    if not flagged and not re.search(r"looks compatib\w* with GPU delegate", report):
        raise PipelineError(f"{ANALYZER} report has neither GPU warnings nor a GPU verdict; format changed?")
    return not flagged, ops


def _versions() -> str:
    import tensorflow as tf
    from importlib.metadata import version
    return f"TF {tf.__version__} / ai-edge-litert {version('ai-edge-litert')}"


@functools.cache
def gpu_check_effective() -> bool:
    """Whether this analyzer build flags a Flex op, which the GPU delegate can never run.
    Converts a one-op model once per process (~1 s)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def cosh(x):
        return tf.cosh(x)  # no TFLite builtin: becomes the custom op FlexCosh
    converter = tf.lite.TFLiteConverter.from_concrete_functions([cosh.get_concrete_function()], cosh)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    compatible, _ = gpu_report(analyze(model_content=converter.convert()))
    return not compatible


def _op_names(model):
    """Every operator's name in every subgraph; custom ops by their custom code (e.g. FlexCosh)."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            if fbu.get_builtin_code_from_operator_code(code) == fbu.BuiltinOperator.CUSTOM:
                custom = code.customCode
                yield "custom", custom.decode() if isinstance(custom, bytes) else str(custom)
            else:
                yield "builtin", fbu.opcode_to_name(model, op.opcodeIndex)


def check(path, full_integer=False) -> dict:
    """Mobile readiness of one .tflite (the zip of labels appended by tflite_export is ignored:
    both the flatbuffer reader and the analyzer stop at the flatbuffer's own offsets).
    "gpu_compatible" is True/False only from a GPU check that really ran, else None with
    "gpu_unchecked_why"; "gpu_incompatible_ops" is None when unchecked."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu
    try:
        model = fbu.read_model(str(path))
    except Exception as exc:
        raise PipelineError(f"cannot read the flatbuffer {path} ({type(exc).__name__}: {exc})") from None
    kinds = list(_op_names(model))
    custom = sorted({name for kind, name in kinds if kind == "custom"})

    main = model.subgraphs[0]  # the serving signature's subgraph
    dtype = lambda ids: ",".join(fbu.type_to_name(main.tensors[i].type).lower() for i in ids)  # noqa: E731
    input_dtype, output_dtype = dtype(main.inputs), dtype(main.outputs)
    integer_io = None  # None: not a full-integer kind (the artifact table's integer_io column)
    if full_integer:
        integer_io = all(d in INTEGER_DTYPES for d in f"{input_dtype},{output_dtype}".split(","))

    gpu = {"gpu_compatible": None, "gpu_incompatible_ops": None, "gpu_checker": f"{ANALYZER} ({_versions()})"}
    if gpu_check_effective():
        gpu["gpu_compatible"], gpu["gpu_incompatible_ops"] = gpu_report(analyze(model_path=path))
    else:
        gpu["gpu_unchecked_why"] = (f"{ANALYZER} in {_versions()} skips the per-op GPU delegate check (it calls "
                                    "a FlexCosh model compatible) and neither package ships another offline checker")
    return {"builtin_ops_only": not custom, "custom_ops": custom,
            "ops": dict(sorted(Counter(name for _, name in kinds).items())),
            "integer_io": integer_io, "input_dtype": input_dtype, "output_dtype": output_dtype, **gpu}


def failures(result, required=("builtin_ops", "integer_io")) -> list:
    """One line per failed required check (names in CHECKS); empty means ready. A check that is not
    required never fails; a required check that could not run fails, saying why."""
    unknown = sorted(set(required) - set(CHECKS))
    if unknown:
        raise PipelineError(f"unknown mobile checks {unknown}; known: {', '.join(CHECKS)}")
    out = []
    if "builtin_ops" in required and not result["builtin_ops_only"]:
        out.append(f"needs custom/Flex ops the stock LiteRT runtime lacks: {', '.join(result['custom_ops'])}")
    if "integer_io" in required and result["integer_io"] is False:  # None: not a full-integer model
        out.append(f"full-integer model with non-integer I/O: input {result['input_dtype']}, "
                   f"output {result['output_dtype']}")
    if "gpu" in required:
        if result["gpu_compatible"] is None:
            out.append(f"GPU delegate compatibility could not be checked: {result['gpu_unchecked_why']}")
        elif not result["gpu_compatible"]:
            ops = "; ".join(f"{o['op']} (op #{o['node']}): {o['why']}" for o in result["gpu_incompatible_ops"])
            out.append(f"GPU delegate would not run: {ops or 'see the analyzer report'}")
    return out
