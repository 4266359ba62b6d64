"""Write files and folders so a reader never sees a half-written one: temp path, then rename."""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final, suffix=""):
    """Yield a temp path beside `final`; rename it over `final` only if the block succeeds.

    Works for files and folders. The temp name keeps `suffix` (e.g. ".h5") because
    some writers pick the format from the extension.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / (final.name + suffix if suffix and not final.name.endswith(suffix) else final.name)
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(final, data: bytes):
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text(final, text: str):
    write_bytes(final, text.encode())


def write_json(final, obj):
    write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path) -> str:
    """Content hash of a file, or of a folder (relative paths and contents, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        h.update(sha256_file(f).encode())
    return h.hexdigest()
