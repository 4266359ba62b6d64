"""ONNX Runtime Mobile's own .ort format, from a b1 ONNX model, with onnxruntime's converter
(onnxruntime.tools.convert_onnx_models_to_ort) in its Runtime optimization style.

Runtime style: the file holds the graph after the portable (BASIC) optimizations only; the fusions a
CPU would add (QDQ -> QLinearConv, Conv + Relu -> FusedConv) are saved as records that the device
replays on whatever nodes its NNAPI / Core ML provider leaves to the CPU, so the file is not tied to
the x86 kernels of the machine that converted it. The converter also writes the operators (with and
without the replayed fusions) that a reduced-operator ORT Mobile build must include: that config is
kept beside the model (the kind's `ops_config`).
"""
import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

STYLE = "Runtime"
TARGET = "arm"  # phones: lets the records fuse signed-int8 QDQ too (x86 would leave it unfused)


def convert(onnx_path, folder):
    """(.ort, required-operators config) the converter writes for `onnx_path`, converted in `folder`.
    It writes beside its input (and a scratch folder there), so the input is copied into `folder` first."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    source = Path(folder) / Path(onnx_path).name
    shutil.copyfile(onnx_path, source)
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # "Created config in ..."
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines are not export's
        convert_onnx_models_to_ort(source, optimization_styles=[OptimizationStyle[STYLE]], target_platform=TARGET)
    return (source.with_suffix(".with_runtime_opt.ort"),
            source.with_suffix(".required_operators.with_runtime_opt.config"))


def without_paths(config_text, source_name):
    """The config with its "# - /tmp/.../x.ort" lines (temporary files, gone by now) replaced by one line
    naming the ONNX model: the same model gives the same bytes, and no machine path is shipped."""
    ops = [line for line in config_text.splitlines() if line.strip() and not line.startswith("#")]
    header = f"# onnxruntime convert_onnx_models_to_ort --optimization_style {STYLE} --target_platform {TARGET} " \
             f"{source_name}"
    return "\n".join([header, *ops]) + "\n"


def required_ops(config_text):
    """["domain:op", ...] a required-operators config names (lines "domain;opset;op,op,...")."""
    return sorted({f"{d}:{op}" for d, _, ops in (line.split(";") for line in config_text.splitlines()
                                                 if re.match(r"[^#\s].*;\d+;", line)) for op in ops.split(",")})


def build(exporter, row, path):
    """The .ort of row.needs at `path`, its config at row.ops_config beside it in the staging folder."""
    from pipeline import atomic
    source = exporter.path_of(row.needs)
    with tempfile.TemporaryDirectory(prefix="ort_", dir=path.parent) as tmp:
        ort_file, config_file = convert(source, tmp)
        os.replace(ort_file, path)
        text = without_paths(config_file.read_text(), source.name)
    atomic.write_text(exporter.staging / row.ops_config, text)
    return {"converted_from": row.needs, "optimization_style": STYLE, "target_platform": TARGET,
            "required_operators": required_ops(text),
            "replay": "session.enable_saved_runtime_optimizations=1 applies the saved fusions"}
