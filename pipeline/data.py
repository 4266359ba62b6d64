"""CIFAR-10 as uint8 NHWC images and int labels, from any of the sources users have.

Sources (one string, from config `data.source` or the env var CIFAR10_DATA):
  - an image-folder tree `train/<class>/*`, `test/<class>/*` as a directory or a
    `.tar`, `.tar.gz`/`.tgz` or `.zip` archive (the shape of the shared JPEG copy);
  - the official `cifar-10-python.tar.gz`, or its extracted `cifar-10-batches-py/`;
  - `download`: keras.datasets.cifar10 (needs a network).
Decoded arrays are cached on disk keyed by the source's content hash.
"""
import io
import os
import stat
import tarfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from pipeline import atomic, images as images_mod
from pipeline.errors import PipelineError, first_line
from pipeline.model import CLASSES
from pipeline.safe_pickle import safe_loads

SPLITS = ("train", "test")
# Caps far above real data (an official batch file is 31 MB, a CIFAR JPEG 1-2 KB), so a small
# crafted archive cannot expand into gigabytes of memory.
MAX_MEMBER_BYTES = 256 << 20
MAX_SOURCE_BYTES = 2 << 30
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_VERSION = "1"  # bump when decoding changes, so old caches are not reused


class Split:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 of one split."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)


def resolve_source(configured=None):
    """The data source: env CIFAR10_DATA wins over the config value; `download` stays a word,
    a relative path is relative to the project root."""
    source = os.environ.get("CIFAR10_DATA") or configured
    if not source:
        raise PipelineError("no data source: set data.source in the config or CIFAR10_DATA")
    if source == "download":
        return source
    path = Path(source).expanduser()
    return str(path if path.is_absolute() or os.environ.get("CIFAR10_DATA") else PROJECT_ROOT / path)




# ---------------------------------------------------------------- members of a source
# Every readable source is reduced to (relative posix path, bytes-reader) pairs, so
# directories and archives share one parser.

def _safe_member(name, source):
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise PipelineError(f"{source}: archive member {name!r} escapes the archive (path traversal)")
    return p


class _Budget:
    """Refuses a member over MAX_MEMBER_BYTES, or a source expanding past MAX_SOURCE_BYTES. A member's header is
    checked before it is read, and the bytes actually read are counted: a header can understate its member."""

    def __init__(self, source):
        self.source, self.total = source, 0

    def read(self, name, stated, f):
        """The member's bytes from file object `f`, `stated` being the size its header gives."""
        cap = f"over the {MAX_MEMBER_BYTES:,}-byte cap per file; refused"
        if stated > MAX_MEMBER_BYTES:
            raise PipelineError(f"{self.source}: member {name} is {stated:,} bytes, {cap}")
        data = atomic.read_capped(f, MAX_MEMBER_BYTES)
        if data is None:
            raise PipelineError(f"{self.source}: member {name} holds more than its header's {stated:,} bytes, {cap}")
        self.total += len(data)
        if self.total > MAX_SOURCE_BYTES:
            raise PipelineError(f"{self.source}: expands past {MAX_SOURCE_BYTES:,} bytes; refused")
        return data


def iter_members(source: Path):
    """Yield (PurePosixPath, bytes) for every regular file in the source, in one sequential pass."""
    budget = _Budget(source)
    if source.is_dir():
        for f in sorted(source.rglob("*")):
            if f.is_file():
                rel = f.relative_to(source).as_posix()
                with atomic.open_regular(f) as fh:
                    data = budget.read(rel, os.fstat(fh.fileno()).st_size, fh)
                yield PurePosixPath(rel), data
        return
    name = source.name.lower()
    if name.endswith(".zip"):
        if not zipfile.is_zipfile(source):
            raise PipelineError(f"{source}: not a zip archive")
        try:
            with zipfile.ZipFile(source) as zf:
                for info in zf.infolist():
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise PipelineError(f"{source}: archive member {info.filename!r} is a link; refused")
                    if not info.is_dir():
                        member = _safe_member(info.filename, source)
                        with zf.open(info) as fh:
                            data = budget.read(info.filename, info.file_size, fh)
                        yield member, data
        # bad CRC / truncated data, encrypted or unsupported compression
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            raise PipelineError(f"{source}: corrupt zip archive ({first_line(exc)})") from None
        return
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        try:
            tf = tarfile.open(source, "r:*")
        except tarfile.ReadError:
            raise PipelineError(f"{source}: not a readable tar archive (not a plain, gzip, bz2 or xz tar)") from None
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise PipelineError(f"{source}: not a readable tar archive ({first_line(exc)})") from None
        with tf:
            try:
                for m in tf:
                    if m.issym() or m.islnk():
                        raise PipelineError(f"{source}: archive member {m.name!r} is a link; refused")
                    if m.isfile():
                        member = _safe_member(m.name, source)
                        yield member, budget.read(m.name, m.size, tf.extractfile(m))
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise PipelineError(f"{source}: corrupt tar archive ({first_line(exc)})") from None
        return
    raise PipelineError(f"{source}: not a directory or a .tar, .tar.gz, .tgz or .zip archive")


# ---------------------------------------------------------------- image-folder layout

def _decode_image(data: bytes, where: str) -> np.ndarray:
    try:
        with images_mod.opened(io.BytesIO(data)) as im:
            if im.size != (32, 32):  # known from the header: nothing larger is ever decoded
                raise PipelineError(f"{where}: image is {im.size[0]}x{im.size[1]}, expected 32x32")
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except PipelineError:
        raise
    except Image.UnidentifiedImageError:  # its message is the repr of our in-memory buffer
        raise PipelineError(f"{where}: not an image format Pillow recognises") from None
    except Exception as exc:  # Pillow raises many types for bad files
        raise PipelineError(f"{where}: not a readable image ({type(exc).__name__}: {first_line(exc)})") from None
    return arr


def _split_root(p):
    """The folder above the first train/ or test/ part of `p` that has a class folder below it, or None."""
    for i, part in enumerate(p.parts[:-2]):
        if part in SPLITS:
            return PurePosixPath(*p.parts[:i])
    return None


def _load_image_folder(source: Path, splits, progress=True):
    """Decoded as it is read, in one pass: only the 32x32 arrays are kept, never the members' bytes (a 2 MB
    .tar.gz of zero-filled members expands to gigabytes; the first one fails to decode). The split root is
    the folder above the first train/ or test/ with a class folder (archives often add a top folder).
    Hidden files (.DS_Store, ._foo) are skipped; anything else inside a class folder must decode."""
    root, near_root, found, t0 = None, [], {s: ([], []) for s in splits}, time.time()
    for p, data in iter_members(source):
        if p.name.startswith("."):
            continue
        if p.parent.name in SPLITS:
            near_root.append(p)  # a file directly in train/ or test/: refused below once the root is known
        root = _split_root(p) if root is None else root
        for split in splits:
            if root is not None and p.parent.parent == root / split:
                cls = p.parent.name
                if cls not in CLASSES:
                    raise PipelineError(f"{source}: unknown class folder {split}/{cls}/ (known: {', '.join(CLASSES)})")
                images, labels = found[split]
                images.append(_decode_image(data, f"{source}:{p}"))
                labels.append(CLASSES.index(cls))
                if progress and len(labels) % 10000 == 0:
                    print(f"  decoded {len(labels)} {split} images ({time.time() - t0:.1f}s)", flush=True)
    if root is None:
        raise PipelineError(f"{source}: no train/<class>/ or test/<class>/ image folders found")
    out = {}
    for split in splits:
        stray = [p for p in near_root if p.parent == root / split]
        if stray:
            raise PipelineError(f"{source}: file {stray[0]} sits directly in {split}/, expected {split}/<class>/")
        images, labels = found[split]
        if not labels:
            raise PipelineError(f"{source}: split {split!r} is missing or empty")
        out[split] = Split(np.stack(images), np.asarray(labels, dtype=np.int64))
    return out


# ---------------------------------------------------------------- official python batches

_OFFICIAL_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _is_official(source: Path):
    if source.is_dir():
        return (source / "data_batch_1").exists() or (source / "cifar-10-batches-py").is_dir()
    return source.name.lower().startswith("cifar-10-python") or source.name.lower().startswith("cifar-10-batches-py")


def _check_batch(where, pixels, labels):
    """The batch's uint8 pixels, or a PipelineError with the real reason (never a silent wrap to uint8)."""
    if pixels.dtype != np.uint8:
        if pixels.size and np.issubdtype(pixels.dtype, np.number):
            raise PipelineError(f"{where}: pixels are {pixels.dtype} with values {pixels.min():g}..{pixels.max():g}, "
                                "expected uint8 0..255")
        raise PipelineError(f"{where}: pixels are {pixels.dtype}, expected uint8 0..255")
    if pixels.ndim != 2 or pixels.shape[1] != 3072:
        raise PipelineError(f"{where}: batch has shape {pixels.shape}, expected (N, 3072)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise PipelineError(f"{where}: labels are {labels.dtype} of shape {labels.shape}, expected N whole numbers")
    if len(labels) != len(pixels):
        raise PipelineError(f"{where}: {len(labels)} labels for {len(pixels)} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise PipelineError(f"{where}: labels outside 0..9")
    return pixels


def _load_official(source: Path, splits):
    wanted = {name for s in splits for name in _OFFICIAL_FILES[s]}
    found = {}
    for p, data in iter_members(source):
        if p.name in wanted:
            try:
                batch = safe_loads(data)
                pixels, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
            except PipelineError:
                raise
            except Exception as exc:
                raise PipelineError(f"{source}:{p}: not a valid CIFAR-10 batch "
                                    f"({type(exc).__name__}: {first_line(exc)})") from None
            data = _check_batch(f"{source}:{p}", pixels, labels)
            labels = labels.astype(np.int64)
            found[p.name] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)
    out = {}
    for split in splits:
        missing = [n for n in _OFFICIAL_FILES[split] if n not in found]
        if missing:
            raise PipelineError(f"{source}: official batch file {missing[0]} is missing")
        parts = [found[n] for n in _OFFICIAL_FILES[split]]
        out[split] = Split(np.ascontiguousarray(np.concatenate([p[0] for p in parts])),
                           np.concatenate([p[1] for p in parts]))
    return out


def _load_download(splits):
    import keras
    try:
        (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        raise PipelineError(f"download of CIFAR-10 failed ({type(exc).__name__}: {first_line(exc)}); "
                            "set CIFAR10_DATA to a local copy") from None
    arrays = {"train": (xtr, ytr), "test": (xte, yte)}
    return {s: Split(arrays[s][0], arrays[s][1].reshape(-1).astype(np.int64)) for s in splits}


# ---------------------------------------------------------------- cache and entry point

def default_cache_dir():
    return Path(os.environ.get("CIFAR_EDGE_CACHE", Path(__file__).resolve().parent.parent / ".cache" / "data"))


def source_sha256(source):
    """Content hash of a data source (file or folder tree); None for `download` or a missing path."""
    if source == "download":
        return None
    path = Path(source).expanduser()
    return atomic.sha256_tree(path) if path.exists() else None


def _cache_path(sha, splits, cache_dir=None):
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    return cache_dir / f"cifar10-{sha[:16]}-{'-'.join(splits)}-v{CACHE_VERSION}.npz"


def _read_cache(cache, splits):
    with np.load(cache) as z:
        return {s: Split(z[f"{s}_images"], z[f"{s}_labels"]) for s in splits}


def cached_by_hash(sha, splits=SPLITS, cache_dir=None):
    """The decoded arrays of the source whose content hash is `sha`, if a cache of them exists."""
    cache = _cache_path(sha, tuple(splits), cache_dir)
    return _read_cache(cache, tuple(splits)) if cache.exists() else None


def load_cifar10(source, splits=SPLITS, cache_dir=None, progress=True):
    """{split: Split} for the requested splits of `source` (see module doc)."""
    splits = tuple(splits)
    if source == "download":
        return _load_download(splits)
    path = Path(source).expanduser()
    if not path.exists():
        raise PipelineError(f"{path}: data source does not exist")
    cache = _cache_path(atomic.sha256_tree(path), splits, cache_dir)
    if cache.exists():
        return _read_cache(cache, splits)
    if progress:
        print(f"decoding {path} (first load; cached afterwards in {cache.parent})", flush=True)
    out = _load_official(path, splits) if _is_official(path) else _load_image_folder(path, splits, progress)
    arrays = {}
    for s, sp in out.items():
        arrays[f"{s}_images"], arrays[f"{s}_labels"] = sp.images, sp.labels
    with atomic.atomic_path(cache, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:  # a file object keeps numpy from appending its own .npz
            np.savez(f, **arrays)
    return out
