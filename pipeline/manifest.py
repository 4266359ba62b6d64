"""The artifact manifest: what export wrote, and everything evaluate needs, in one self-contained file.

`manifest.json` (schema 2) holds, besides the artifacts:
  source_checkpoint  {file, sha256, preset, params}: what was exported (the file name only)
  reference          {accuracy, test_images, source, source_sha256}: the model card's test accuracy,
                     copied from the checkpoint's metrics.json, so the reference gate needs nothing else
  calibration        {source, sha256, images}: the int8 calibration set
  labels             {path, sha256}: labels.txt, in output order
  classes, tool_versions, created
Each artifact entry: name, format, precision, kind (float | int8), path, bytes, sha256, input/output
specs, parity, deterministic, export_seconds, plus settings its builder records, and for a kind with an
`ops_config` column its {path, bytes, sha256} (onnxruntime's required-operators config beside the model).

Every path is relative to the manifest's folder and must stay inside it (no absolute path, no
`..`, no symlink leading out); every file is verified against its sha256 before use.
So a copied or moved artifacts folder evaluates exactly as before.
"""
import json
from pathlib import Path, PurePosixPath

from pipeline import atomic
from pipeline.artifacts import ARTIFACTS
from pipeline.errors import PipelineError, first_line

SCHEMA_VERSION = 2
FILE_NAME = "manifest.json"
REQUIRED_TOP = ("source_checkpoint", "reference", "labels", "classes", "artifacts")
REQUIRED_ENTRY = ("name", "format", "precision", "kind", "path", "bytes", "sha256", "input", "output")


def file_facts(path):
    """bytes and sha256 of an artifact file or folder."""
    return {"bytes": tree_size(path), "sha256": atomic.sha256_tree(path)}


def read(manifest_path):
    """The manifest as a dict, checked for shape; raises PipelineError naming the file and entry."""
    manifest_path = Path(manifest_path)
    try:
        with atomic.open_regular(manifest_path) as f:  # a FIFO would block forever: refused unread
            data = json.loads(f.read().decode())
    except FileNotFoundError:
        raise PipelineError(f"{manifest_path}: manifest not found (run `make export` first)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested 200,000 deep
        raise PipelineError(f"{manifest_path}: not a readable JSON manifest ({first_line(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise PipelineError(f"{manifest_path}: expected {{\"artifacts\": [...], ...}}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise PipelineError(f"{manifest_path}: schema_version {data.get('schema_version')!r}, this version reads "
                            f"{SCHEMA_VERSION}; export again")
    missing = [k for k in REQUIRED_TOP if k not in data]
    if missing:
        raise PipelineError(f"{manifest_path}: lacks {', '.join(missing)}")
    for key, kind in (("source_checkpoint", dict), ("reference", dict), ("labels", dict), ("classes", list)):
        if not isinstance(data[key], kind) or (key == "classes" and not all(isinstance(c, str) for c in data[key])):
            shape = "an object" if kind is dict else "a list of names"
            raise PipelineError(f"{manifest_path}: \"{key}\" must be {shape}, got {brief(data[key])}")
    check_reference(manifest_path, data["reference"])
    names = set()
    for i, entry in enumerate(data["artifacts"]):
        if not isinstance(entry, dict):
            raise PipelineError(f"{manifest_path}: artifact #{i} is not an object")
        lacking = [k for k in REQUIRED_ENTRY if k not in entry]
        if lacking:
            raise PipelineError(f"{manifest_path}: artifact #{i} lacks {', '.join(lacking)}")
        for key in ("name", "format", "precision", "kind", "path", "sha256"):  # looked up, joined, compared
            if not isinstance(entry[key], str):
                raise PipelineError(f"{manifest_path}: artifact #{i}: \"{key}\" must be a string, got {brief(entry[key])}")
        row = ARTIFACTS.get(entry["name"])
        if row is None or (entry["format"], entry["precision"], entry["kind"]) != (row.format, row.precision, row.kind):
            raise PipelineError(f"{manifest_path}: artifact {entry['name']!r} is not a known kind "
                                f"(format {entry['format']!r}, precision {entry['precision']!r})")
        if entry["name"] in names:
            raise PipelineError(f"{manifest_path}: artifact {entry['name']!r} is listed twice")
        size = entry["bytes"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PipelineError(f"{manifest_path}: artifact {entry['name']!r}: \"bytes\" must be a whole number "
                                f">= 0, got {size!r}")
        names.add(entry["name"])
        inside(manifest_path, entry["path"], f"artifact {entry['name']!r}")
        if isinstance(entry.get("ops_config"), dict):  # its shape is checked where it is used (verify_ops_config)
            inside(manifest_path, entry["ops_config"].get("path"), f"artifact {entry['name']!r} ops_config")
    labels = data["labels"]
    if not isinstance(labels, dict) or not {"path", "sha256"} <= set(labels):
        raise PipelineError(f"{manifest_path}: \"labels\" must be {{\"path\", \"sha256\"}}")
    inside(manifest_path, labels["path"], "labels")
    return data


def brief(value, limit=60):
    """A value as a short repr for an error line (a hostile manifest's list can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_reference(manifest_path, reference):
    """The model card's record the reference gate reads: "accuracy" a fraction in (0, 1] measured on
    "test_images" (a whole number >= 1) images, or null (no model card: that gate fails, saying why)."""
    accuracy, images = reference.get("accuracy"), reference.get("test_images")
    if accuracy is None:
        return
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 < accuracy <= 1:
        raise PipelineError(f"{manifest_path}: \"reference.accuracy\" must be a fraction in (0, 1] or null, got "
                            f"{brief(accuracy)}")
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise PipelineError(f"{manifest_path}: \"reference.test_images\" must be a whole number >= 1, got "
                            f"{brief(images)}")


def inside(manifest_path, rel, what):
    """The path `rel` names beside the manifest, refused unless it stays inside the manifest's folder."""
    folder = Path(manifest_path).parent
    if not isinstance(rel, str) or not rel:
        raise PipelineError(f"{manifest_path}: {what}: path {rel!r} is not a relative file name")
    pure = PurePosixPath(rel.replace("\\", "/"))
    if pure.is_absolute() or Path(rel).is_absolute() or ".." in pure.parts:
        raise PipelineError(f"{manifest_path}: {what}: path {rel!r} leaves the manifest's folder; refused")
    path = folder / pure
    try:
        if path.exists() or path.is_symlink():
            real, root = path.resolve(), folder.resolve()
            if not real.is_relative_to(root):
                raise PipelineError(f"{manifest_path}: {what}: {rel!r} is a link to {real}, outside the "
                                    "manifest's folder; refused")
            if path.is_dir():
                for p in path.rglob("*"):
                    if p.is_symlink() and not p.resolve().is_relative_to(root):
                        raise PipelineError(f"{manifest_path}: {what}: {p.relative_to(folder)} links outside the "
                                            "manifest's folder; refused")
    except (RuntimeError, OSError) as exc:  # a symbolic link loop (RuntimeError in Python 3.11), ...
        raise PipelineError(f"{manifest_path}: {what}: {rel!r} cannot be resolved ({first_line(exc)}); "
                            "refused") from None
    return path


def _verified(manifest_path, rel, expected_sha, what):
    path = inside(manifest_path, rel, what)
    if not path.exists():
        raise PipelineError(f"{manifest_path}: {what}: file {rel} is missing")
    try:  # only regular files and folders of them are read: a FIFO would hash as empty, then block a runtime
        digest = atomic.sha256_tree(path)
    except PipelineError as exc:
        raise PipelineError(f"{manifest_path}: {what}: {exc}") from None
    if digest != expected_sha:
        raise PipelineError(f"{manifest_path}: {what}: {rel} sha256 {digest[:12]}... does not match "
                            f"the manifest's {str(expected_sha)[:12]}...")
    return path


def verify(manifest_path, entry, what=None):
    """The artifact's path (or that of any {path, bytes, sha256} record), once it is inside the folder and
    matches its recorded sha256 and size."""
    what = what or f"artifact {entry['name']!r}"
    path = _verified(manifest_path, entry["path"], entry["sha256"], what)
    size = tree_size(path)
    if size != entry["bytes"]:
        raise PipelineError(f"{manifest_path}: {what}: {entry['path']} is {size} bytes, the manifest's \"bytes\" "
                            f"says {entry['bytes']!r}")
    return path


def verify_ops_config(manifest_path, entry):
    """The artifact's required-operators config (its kind's ops_config), verified like the artifact."""
    record = entry.get("ops_config")
    if not isinstance(record, dict) or not {"path", "bytes", "sha256"} <= set(record):
        raise PipelineError(f"{manifest_path}: artifact {entry['name']!r} lacks its ops_config {{path, bytes, "
                            "sha256}; export again")
    return verify(manifest_path, record, f"artifact {entry['name']!r} ops_config")


def tree_size(path):
    """The bytes `file_facts` records: a file's size, or the sum over a folder's regular files."""
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_labels(manifest_path, manifest):
    """Class names from the labels file the manifest names, verified, one per line in output order."""
    labels = manifest["labels"]
    path = _verified(manifest_path, labels["path"], labels["sha256"], "labels")
    try:
        with atomic.open_regular(path) as f:  # a folder hashed to the recorded sha256 is still no labels file
            text = f.read().decode(errors="replace")
    except PipelineError as exc:
        raise PipelineError(f"{manifest_path}: labels: {exc}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if names != list(manifest["classes"]):
        raise PipelineError(f"{manifest_path}: labels: {labels['path']} does not list the manifest's classes in order")
    return names


def find(manifest, name):
    for entry in manifest["artifacts"]:
        if entry["name"] == name:
            return entry
    known = ", ".join(e["name"] for e in manifest["artifacts"])
    raise PipelineError(f"unknown artifact {name!r}; the manifest has: {known}")


def write(manifest_path, manifest):
    """Write atomically; export writes it last, into the staging folder it then publishes whole."""
    atomic.write_json(manifest_path, {"schema_version": SCHEMA_VERSION, **manifest})
