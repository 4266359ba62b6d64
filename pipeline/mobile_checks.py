"""Mobile readiness of a .tflite file, checked at export (issue #11, item 4).

A model that converts is not yet a model an app can ship. Three things break on phones:
  * custom ops (Flex / SELECT_TF_OPS): the stock LiteRT runtime has no kernel for them, the app
    would have to bundle the TensorFlow Flex delegate or fail at load;
  * a full-integer model with float input or output: integer-only accelerators (NPUs, DSPs) and
    the uint8 camera-pixel contract need integer tensors at the boundary;
  * ops the GPU delegate cannot run: they fall back to the CPU, splitting the graph, and a graph
    with a dynamic-sized tensor is refused by the delegate whole.
Everything is read from the flatbuffer with LiteRT's own schema module (ai_edge_litert.tools.
flatbuffer_utils, the object API of schema_py_generated). The GPU verdict applies the LiteRT GPU
delegate's published rules (pipeline/gpu_rules.py, read from the LiteRT sources: supported builtin
ops and their max versions, no custom/Flex op, static tensors only, rank <= 4, runtime tensor
types, runtime-input counts such as RESHAPE's constant new shape); every op that breaks one is
named with why. TF's tf.lite.experimental.Analyzer is not used: the pinned build skips its GPU check.

Where LiteRT's CompiledModel finds a GPU, "gpu_runtime" also records is_fully_accelerated() for the
model on it; a machine without one says so. That is a record, never a gate.
"""
import functools
import json
import subprocess
import sys
from collections import Counter

from pipeline import gpu_rules
from pipeline.errors import PipelineError, first_line

INTEGER_DTYPES = ("uint8", "int8")
CHECKS = ("builtin_ops", "integer_io", "gpu")
GPU_CHECKER = (f"LiteRT GPU delegate rules (pipeline/gpu_rules.py, from {gpu_rules.SOURCE} sources: the TF Lite "
               f"code at {gpu_rules.SOURCE_COMMIT})")
GPU_PROBE_SECONDS = 60  # a GPU driver that hangs must not hang the export
_FAILURE_OPS = 8        # failures() names this many ops, then counts the rest


@functools.cache
def _names(enum_cls):
    """{value: NAME} of a schema enum class (BuiltinOperator, TensorType)."""
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


def _op_name(code):
    """(is_custom, name) of an OperatorCodeT: custom ops by their custom code (e.g. FlexCosh)."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu
    builtin = fbu.get_builtin_code_from_operator_code(code)
    if builtin == fbu.BuiltinOperator.CUSTOM:
        custom = code.customCode
        return True, custom.decode() if isinstance(custom, bytes) else str(custom)
    return False, _names(fbu.BuiltinOperator)[builtin]


def _op_names(model):
    """(kind, name) of every operator in every subgraph."""
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            custom, name = _op_name(model.operatorCodes[op.opcodeIndex])
            yield ("custom" if custom else "builtin"), name


def _listed(values):
    return [] if values is None else [int(v) for v in values]


class _Graph:
    """One subgraph as the GPU rules see it: names, constants, dynamic tensors."""

    def __init__(self, model, subgraph):
        from ai_edge_litert.tools import flatbuffer_utils as fbu
        self.tensors, self.ops = subgraph.tensors or [], subgraph.operators or []
        self.types = _names(fbu.TensorType)
        self.codes = [_op_name(model.operatorCodes[op.opcodeIndex]) for op in self.ops]
        self.inputs = [[t for t in _listed(op.inputs) if t >= 0] for op in self.ops]  # -1: an optional input
        self.outputs = [[t for t in _listed(op.outputs) if t >= 0] for op in self.ops]
        self.producer = {t: n for n, outs in enumerate(self.outputs) for t in outs}

        def has_data(tensor):
            data = model.buffers[tensor.buffer].data if tensor.buffer else None  # buffer 0: the empty one
            return data is not None and len(data) > 0
        self.constant = {t for t, tensor in enumerate(self.tensors) if has_data(tensor)}
        for (_, name), ins, outs in zip(self.codes, self.inputs, self.outputs):
            if name == "DEQUANTIZE" and len(ins) == 1 and ins[0] in self.constant and self.type(ins[0]) == "FLOAT16":
                self.constant.update(outs)  # fp16 weights: folded away by FP16GraphPartitionHelper
        self.dynamic = {t for t in range(len(self.tensors))
                        if t not in self.constant and any(d < 0 for d in self.signature(t))}

    def type(self, t):
        return self.types.get(self.tensors[t].type, str(self.tensors[t].type))

    def signature(self, t):
        return _listed(self.tensors[t].shapeSignature) or _listed(self.tensors[t].shape)

    def label(self, t):
        name = self.tensors[t].name
        name = (name.decode() if isinstance(name, bytes) else str(name or "")).split(";")[0]  # fused: 1st name
        return f"T#{t} {name[:60] + '...' if len(name) > 60 else name}".rstrip()

    def dynamic_origins(self):
        """{tensor: op} for the dynamic tensors no other dynamic tensor leads to (a dynamic graph input
        at its first reader; else at the op that makes it): each named once, not every tensor after it."""
        origin = {}
        for n, (ins, outs) in enumerate(zip(self.inputs, self.outputs)):
            for t in ins:
                if t in self.dynamic and t not in self.producer:
                    origin.setdefault(t, n)
            if not any(t in self.dynamic for t in ins):
                origin.update({t: n for t in outs if t in self.dynamic})
        return origin


def _op_violations(g, n, version):
    """Why op #n of graph g breaks the GPU rules (empty: it does not)."""
    custom, name = g.codes[n]
    ins, outs = g.inputs[n], g.outputs[n]
    if custom:
        return [f"Flex op {name} (a TensorFlow kernel): the GPU delegate runs builtin ops only"
                if name.startswith("Flex") else f"custom op {name}: not a GPU delegate op"]
    if name in gpu_rules.RUNTIME_SHAPE_OPS:
        return [f"{name} {gpu_rules.RUNTIME_SHAPE_OPS[name]}"]
    if name not in gpu_rules.MAX_VERSION:
        return [f"{name} is not a GPU delegate op"]
    why, top = [], gpu_rules.MAX_VERSION[name]
    if top is not None and version > top:
        why.append(f"{name} v{version}: the GPU delegate takes up to v{top}")
    need, runtime = gpu_rules.RUNTIME_INPUTS.get(name), [t for t in ins if t not in g.constant]
    if need is not None and len(runtime) != need:
        late = ", ".join(g.label(t) for t in runtime[need:] if t in g.producer)
        why.append(f"{name} takes {need} runtime input(s), this one has {len(runtime)}"
                   + (f" ({late} computed at run time, not a constant)" if late else ""))
    for side, group, extra in (("input", ins, gpu_rules.EXTRA_INPUT_TYPES),
                               ("output", outs, gpu_rules.EXTRA_OUTPUT_TYPES)):
        allowed, bad = gpu_rules.RUNTIME_TYPES | extra.get(name, set()), {}
        for t in group:
            if t not in g.constant and g.type(t) not in allowed:
                bad.setdefault(g.type(t).lower(), []).append(g.label(t))
        why += [f"runtime {ty} {side} {', '.join(labels)} (the delegate takes "
                f"{'/'.join(sorted(a.lower() for a in allowed))})" for ty, labels in bad.items()]
    return why


def gpu_violations(model) -> list:
    """[{"subgraph", "node", "op", "why"}]: one entry per operator that breaks a rule of
    pipeline.gpu_rules, "why" joining every rule it breaks. Empty: the delegate takes every op."""
    out = []
    for s, subgraph in enumerate(model.subgraphs):
        g = _Graph(model, subgraph)
        origins = g.dynamic_origins()
        for n, op in enumerate(g.ops):
            why = _op_violations(g, n, max(int(model.operatorCodes[op.opcodeIndex].version or 1), 1))
            for t in dict.fromkeys(g.inputs[n] + g.outputs[n]):
                rank = len(_listed(g.tensors[t].shape))
                if rank > gpu_rules.MAX_RANK:
                    why.append(f"{g.label(t)} has rank {rank} (the delegate takes up to {gpu_rules.MAX_RANK})")
            for t in sorted(t for t, at in origins.items() if at == n):
                others = len(g.dynamic) - 1
                more = f" ({others} more tensors of this subgraph are dynamic too)" if others else ""
                why.append(f"dynamic tensor {g.label(t)} shape_signature {g.signature(t)}{more}: the delegate "
                           "takes static-sized graphs only and refuses the whole graph")
            if why:
                out.append({"subgraph": s, "node": n, "op": g.codes[n][1], "why": "; ".join(why)})
    return out


# --- LiteRT CompiledModel on a GPU: recorded, not gated --------------------------------------------

_PROBE = r"""
import json, sys
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.hardware_accelerator import HardwareAccelerator as HA
out = {}
for label, accel in (("GPU", HA.GPU), ("GPU|CPU", HA.GPU | HA.CPU)):
    try:
        model = CompiledModel.from_file(sys.argv[1], hardware_accel=accel)
        out = {"created": label, "fully": bool(model.is_fully_accelerated())}
        break
    except Exception as exc:
        out.setdefault("errors", []).append(f"{label}: {exc}")
print("\n" + json.dumps(out))
"""
_NO_ADAPTER = ("No adapters found", "Failed to initialize WebGPU environment")
_no_gpu_why = [None]  # once a machine has no GPU, later models need not ask again


def _run_probe(path):
    """(returncode, stdout, stderr) of CompiledModel with the GPU accelerator, in a child process:
    LiteRT's native logging (INFO lines, Dawn's Vulkan warnings) stays out of the user's terminal,
    and a GPU driver that hangs or crashes only takes the child."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                          timeout=GPU_PROBE_SECONDS, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


def _native_error(stderr):
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    hits = [ln for ln in lines if any(k in ln for k in _NO_ADAPTER)]
    return (hits or [ln for ln in lines if "ERROR" in ln] or lines[-1:] or [""])[0]


def gpu_runtime(path) -> dict:
    """What LiteRT's CompiledModel says of the model on this machine's GPU:
    {"gpu_found": True, "accelerator": "GPU" | "GPU|CPU", "is_fully_accelerated": bool}, or
    {"gpu_found": False, "why"} (no GPU adapter), or {"gpu_found": None, "why"} (the probe failed)."""
    if _no_gpu_why[0]:
        return {"gpu_found": False, "why": _no_gpu_why[0]}
    try:
        code, stdout, stderr = _run_probe(path)
    except subprocess.TimeoutExpired:
        return {"gpu_found": None, "why": f"CompiledModel with the GPU accelerator did not return in "
                                          f"{GPU_PROBE_SECONDS}s"}
    except OSError as exc:
        return {"gpu_found": None, "why": f"cannot start the GPU probe: {first_line(exc)}"}
    native = _native_error(stderr)
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        said = first_line(native) if native else "no output"
        return {"gpu_found": None, "why": f"the GPU probe exited {code}: {said}"}
    if any(k in stderr for k in _NO_ADAPTER):  # whatever it then built, it was not on a GPU
        _no_gpu_why[0] = (f"LiteRT's GPU accelerator (WebGPU) found no GPU on this machine: "
                          f"{first_line(native.split('] ', 1)[-1], 200)}")
        return {"gpu_found": False, "why": _no_gpu_why[0]}
    if result.get("created"):
        return {"gpu_found": True, "accelerator": result["created"], "is_fully_accelerated": result["fully"]}
    errors = "; ".join(first_line(e, 150) for e in result.get("errors", []))
    return {"gpu_found": None, "why": f"CompiledModel with the GPU accelerator failed: {errors or native}"}


def check(path, full_integer=False) -> dict:
    """Mobile readiness of one .tflite (the zip of labels appended by tflite_export is ignored:
    the flatbuffer reader stops at the flatbuffer's own offsets). "gpu_compatible" is the rules
    verdict, "gpu_incompatible_ops" the ops that break them; "gpu_runtime" is what CompiledModel
    says on this machine's GPU (see gpu_runtime)."""
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

    incompatible = gpu_violations(model)
    return {"builtin_ops_only": not custom, "custom_ops": custom,
            "ops": dict(sorted(Counter(name for _, name in kinds).items())),
            "integer_io": integer_io, "input_dtype": input_dtype, "output_dtype": output_dtype,
            "gpu_compatible": not incompatible, "gpu_incompatible_ops": incompatible, "gpu_checker": GPU_CHECKER,
            "gpu_runtime": gpu_runtime(path)}


def _of_subgraph(entry):
    return f" of subgraph {entry['subgraph']}" if entry.get("subgraph") else ""


def failures(result, required=("builtin_ops", "integer_io")) -> list:
    """One line per failed required check (names in CHECKS); empty means ready. A check that is not
    required never fails; a required check that could not run fails, saying why. "gpu_runtime" is
    never a gate."""
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
        if result["gpu_compatible"] is None:  # a manifest written before the rules check
            out.append("GPU delegate compatibility could not be checked: "
                       f"{result.get('gpu_unchecked_why') or 'no verdict recorded (export again)'}")
        elif not result["gpu_compatible"]:
            ops = result["gpu_incompatible_ops"] or []
            named = "; ".join(f"{o['op']} (op #{o['node']}{_of_subgraph(o)}): {o['why']}" for o in ops[:_FAILURE_OPS])
            more = f"; and {len(ops) - _FAILURE_OPS} more ops (see the manifest)" if len(ops) > _FAILURE_OPS else ""
            out.append(f"GPU delegate would not run: {named or 'no op recorded'}{more}")
    return out
