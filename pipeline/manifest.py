"""The artifact manifest: what export wrote, and everything evaluate needs to trust and run it.

`artifacts/manifest.json` = {"schema_version": 1, "created": ..., "source_checkpoint": {...},
"tool_versions": {...}, "artifacts": [entry, ...]}. Each entry:

  name        unique id, e.g. "tflite_int8"          format     keras | saved_model | onnx | tflite
  precision   fp32 | fp16 | dynamic_int8 | int8 | qat_int8
  path        relative to the manifest               bytes, sha256   of the file (or folder tree)
  input       {"name", "dtype", "shape", "quantization": {"scale", "zero_point"} | null}
  output      same keys as input
  labels      relative path of labels.txt
  parity      {"images", "top1_agreement", "max_abs_diff"} against the Keras model
  deterministic  whether re-export on the same checkpoint gives the same bytes
  source_checkpoint_sha256, tool_versions, exported_at
"""
import json
from pathlib import Path

from pipeline import atomic
from pipeline.errors import PipelineError

SCHEMA_VERSION = 1
FORMATS = ("keras", "saved_model", "onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "dynamic_int8", "int8", "qat_int8")
REQUIRED = ("name", "format", "precision", "path", "bytes", "sha256", "input", "output")


def file_facts(path):
    """bytes and sha256 of an artifact file or folder."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"bytes": size, "sha256": atomic.sha256_tree(path)}


def read(manifest_path):
    """The manifest as a dict, checked for shape; raises PipelineError naming the file."""
    manifest_path = Path(manifest_path)
    try:
        data = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{manifest_path}: manifest not found (run `make export` first)") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise PipelineError(f"{manifest_path}: expected {{\"artifacts\": [...]}}")
    for i, entry in enumerate(data["artifacts"]):
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise PipelineError(f"{manifest_path}: artifact #{i} lacks {', '.join(missing)}")
        if entry["format"] not in FORMATS or entry["precision"] not in PRECISIONS:
            raise PipelineError(f"{manifest_path}: artifact {entry['name']!r} has unknown format/precision")
    return data


def artifact_path(manifest_path, entry):
    return Path(manifest_path).parent / entry["path"]


def verify(manifest_path, entry):
    """Check the artifact exists and matches its recorded sha256; return its path."""
    path = artifact_path(manifest_path, entry)
    if not path.exists():
        raise PipelineError(f"{entry['name']}: file {path} is missing")
    digest = atomic.sha256_tree(path)
    if digest != entry["sha256"]:
        raise PipelineError(f"{entry['name']}: {path} sha256 {digest[:12]}... does not match "
                            f"the manifest's {entry['sha256'][:12]}...")
    return path


def find(manifest, name):
    for entry in manifest["artifacts"]:
        if entry["name"] == name:
            return entry
    known = ", ".join(e["name"] for e in manifest["artifacts"])
    raise PipelineError(f"unknown artifact {name!r}; the manifest has: {known}")


def write(manifest_path, manifest):
    """Write atomically; export writes it last, after every artifact it names is in place."""
    manifest = {"schema_version": SCHEMA_VERSION, **manifest}
    atomic.write_json(manifest_path, manifest)
