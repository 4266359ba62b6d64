"""The mobile environment: a second virtual environment (`make venv-mobile`, pinned in
requirements-mobile.lock) for the mobile clients whose pins clash with TensorFlow 2.21's (protobuf < 4):
the TFLite metadata writer (tflite-support) that export runs, and MediaPipe Tasks that evaluate runs.
Code reaches it only as a subprocess: a script of pipeline/mobile_env_scripts/, or an evaluate worker."""
import json
import os
import subprocess
from pathlib import Path

from pipeline.errors import PipelineError, first_line

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-mobile"
SCRIPTS = Path(__file__).resolve().parent / "mobile_env_scripts"


def python():
    """The environment's interpreter; a PipelineError saying how to build it if it is not there."""
    exe = VENV / "bin" / "python"
    if not (VENV / ".installed").is_file() or not exe.is_file():
        raise PipelineError(f"{VENV}: the mobile environment (TFLite metadata writer, MediaPipe Tasks) is not "
                            "built: run `make venv-mobile`")
    return exe


def env(extra=None):
    """os.environ for a process of the environment: its libusb first on the loader path (the metadata
    writer's native modules link it; requirements-mobile.lock), TensorFlow-side settings left as they are."""
    base = {**os.environ, **(extra or {})}
    lib, old = str(VENV / "lib"), base.get("LD_LIBRARY_PATH")
    return {**base, "LD_LIBRARY_PATH": f"{lib}:{old}" if old else lib, "PYTHONUNBUFFERED": "1",
            "GLOG_minloglevel": "2"}  # MediaPipe's C++ INFO lines off


def run_script(name, args, timeout_s=300):
    """Run pipeline/mobile_env_scripts/NAME.py ARGS in the mobile environment; its stdout's last line is a
    JSON object ({"error": "..."} for an expected failure, raised here as a PipelineError)."""
    try:
        proc = subprocess.run([str(python()), str(SCRIPTS / f"{name}.py"), *map(str, args)], env=env(),
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"{name}: the mobile environment's script timed out after {timeout_s} s") from None
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        tail = [l for l in proc.stderr.splitlines() if l.strip()][-1:]
        raise PipelineError(f"{name}: the mobile environment's script failed (exit {proc.returncode})"
                            f"{': ' + first_line(tail[0]) if tail else ''}")
    if "error" in result:
        raise PipelineError(str(result["error"]))
    return result
