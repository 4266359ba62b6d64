"""The machine a report was measured on: CPU, cores, ISA flags, library versions."""
import os
import platform
from importlib import metadata
from pathlib import Path

# The flags that decide which kernels runtimes pick (XNNPACK, oneDNN, MLAS).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")
LIBRARIES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy",
             "tensorflow-model-optimization", "tf-keras", "jax")


def cores():
    """CPUs this process may run on (a container's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpuinfo():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key and key not in info:
            info[key] = value.strip()
    return info


def _flags(info):
    """The CPU's feature flags from a _cpuinfo() dict (x86 "flags", Arm "Features")."""
    return set((info.get("flags") or info.get("Features") or "").split())


def describe():
    info = _cpuinfo()
    flags = _flags(info)
    versions = library_versions()
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cores": cores(), "logical_cpus_host": os.cpu_count(), "machine": platform.machine(),
            "cpu_mhz": info.get("cpu MHz"), "cache": info.get("cache size"),
            "isa_flags": [f for f in ISA_FLAGS if f in flags],
            "os": platform.platform(), "python": platform.python_version(), "libraries": versions}


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA, the older DNNL_MAX_CPU_ISA) that still include bf16
# dot products; below them (AVX512_CORE_VNNI, Ice Lake's set, and under) its bf16 kernels emulate on
# float32 FMAs (`jit_bf16:avx512_core`), as on a CPU without the instructions.
_BF16_ISA_CAPS = ("DEFAULT", "ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10")


def onednn_isa_cap():
    """The ISA cap this process's oneDNN runs under, upper-cased, or None."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap and cap.strip() else None


def native_bf16():
    """Whether oneDNN computes bfloat16 dot products in hardware here: the CPU has them (AVX512-BF16 or
    AMX) and no ISA cap hides them."""
    cap = onednn_isa_cap()
    if cap and not cap.startswith(_BF16_ISA_CAPS):
        return False
    return bool(_flags(_cpuinfo()) & {"avx512_bf16", "amx_bf16"})


def library_versions(names=LIBRARIES):
    """{distribution: version or None}: one place that asks."""
    out = {}
    for lib in names:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def isa_for(precision):
    """The instruction set a runtime's fp32 or int8 kernels use on this CPU (best first), for reports."""
    flags = _flags(_cpuinfo())
    table = {"fp32": (("avx512f", "AVX-512 FMA"), ("fma", "AVX2 FMA"), ("asimd", "NEON"), ("sse4_2", "SSE")),
             "int8": (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
                      ("avx512bw", "AVX-512BW (no VNNI)"), ("avx2", "AVX2 (no VNNI)"), ("asimd", "NEON"))}
    return next((name for flag, name in table[precision] if flag in flags), "unknown")
