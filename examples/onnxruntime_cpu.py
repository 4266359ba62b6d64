"""Classify image files with the exported ONNX model on CPU. Needs only onnxruntime, numpy, pillow.

    pip install onnxruntime numpy pillow
    python examples/onnxruntime_cpu.py --model artifacts/model_int8.onnx --labels artifacts/labels.txt photos/
    python examples/onnxruntime_cpu.py --manifest artifacts/manifest.json --artifact onnx_fp32 --json cat.png

Self-contained on purpose (copy it into your service): nothing from this repository is
imported, and CI runs it with `import tensorflow` made impossible. The model takes raw
RGB 0..255 float32, NHWC (N, 32, 32, 3), and returns 10 softmax probabilities; scaling and
normalisation are inside the graph, so the only preprocessing here is decode + resize,
done exactly as pipeline/images.py does it (EXIF orientation, alpha over white, 16-bit
grayscale scaled, area-average resize of the whole image to 32x32, no crop).

Threads and graph optimisation are set explicitly rather than left to defaults that
change between onnxruntime releases and machines:
  intra_op_num_threads   threads inside one operator (0 = one per physical core)
  inter_op_num_threads   threads across independent operators; 1, since we run sequentially
  graph_optimization_level  ORT_ENABLE_ALL (constant folding, fusions, layout changes)
"""
import argparse
import hashlib
import json
import os
import re
import stat
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

SIZE = 32
EXTENSIONS = (".png", ".jpg", ".jpeg")
# pipeline/images.py's budget, copied (this script imports nothing of the repository; a test checks the copies)
MAX_PIXELS = 50_000_000
MAX_DECODED_BYTES = 150_000_000


# ---------------------------------------------------------------- images (a copy of pipeline/images.py)

def open_regular(path):
    """A regular file opened for reading; OSError for anything else. O_NONBLOCK: a FIFO in its place does
    not block the open (or the read, forever); fstat then refuses it before a byte is read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError("not a regular file (a FIFO, socket, device or folder); not read")
    return f


def printable(text):
    """Control characters (a file name's carriage return, ANSI escape, NUL) as \\xNN, never raw on a terminal."""
    return re.sub("[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", str(text))


def decoded_bytes(mode, size):
    """Bytes the pixels of an image of this mode and size hold: one a band, 2 for 16-bit, 4 for 32-bit."""
    per_band = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    return size[0] * size[1] * per_band * Image.getmodebands(mode)


def open_image(f):
    """Image.open, refused from its header when over the budget (a 95 KB PNG can declare 49 megapixels of
    16-bit gray, a 560 KB one 144 megapixels). Pillow's own DecompressionBombWarning is silenced: it fires at
    89 megapixels, so only ever before this refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(f, formats=("PNG", "JPEG"))
    if im.width * im.height > MAX_PIXELS or decoded_bytes(im.mode, im.size) > MAX_DECODED_BYTES:
        im.close()
        raise ValueError(f"{im.width}x{im.height} {im.mode} pixels, over the budget of {MAX_PIXELS:,} pixels and "
                         f"{MAX_DECODED_BYTES:,} bytes; not decoded")
    return im


def load_image(path):
    """(32, 32, 3) uint8 RGB from a PNG or JPEG file of any size and mode."""
    with open_regular(path) as f, open_image(f) as im:
        im.load()
        im = ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im  # no copy if upright
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: scale (round(v / 257)), don't clip
            im = im if im.mode == "I" else im.convert("I")
            scale = im.getextrema()[1] > 255
            im = im.point([min(255, (v + 128) // 257 if scale else v) for v in range(65536)], "L")
        if (im.mode == "P" and "transparency" in im.info) or im.mode in ("PA", "LA", "La", "RGBa"):
            im = im.convert("RGBA")
        if im.mode == "RGBA":  # transparent pixels over white
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
        im = im.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.BOX)  # area averaging over the whole image
        return np.asarray(im, dtype=np.uint8)


def expand(paths):
    """Files as given; folders as their PNG/JPEG files, recursive and sorted."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS)
        else:
            yield p


# ---------------------------------------------------------------- the model

def make_session(model_path, threads=0, inter_op_threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def predict(session, images, batch_size=64):
    """uint8 (N, 32, 32, 3) -> float32 (N, 10) probabilities."""
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: images[i:i + batch_size].astype(np.float32)})[0]
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


class Refused(Exception):
    """Bad input: printed as one `error:` line, exit status 1."""


def _sha256(path):
    h = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _inside(folder, rel, what):
    """A file the manifest names: relative, inside the manifest's folder (links included)."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise Refused(f"{what}: path {rel!r} leaves the manifest's folder")
    path = folder / rel
    try:
        if not path.resolve().is_relative_to(folder.resolve()):
            raise Refused(f"{what}: {rel} links outside the manifest's folder")
    except RuntimeError as exc:  # a symbolic link loop
        raise Refused(f"{what}: {rel} cannot be resolved ({exc})") from None
    return path


def from_manifest(manifest_path, artifact):
    """(model path, labels path) of an artifact in the export manifest, both sha256-checked."""
    manifest_path = Path(manifest_path)
    try:
        with open_regular(manifest_path) as f:
            data = json.loads(f.read())
        entries = {e["name"]: e for e in data["artifacts"]}
        labels = data["labels"]
        labels_rel, labels_sha = labels["path"], labels["sha256"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise Refused(f"{manifest_path}: not a readable export manifest ({type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:200]})") from None
    if artifact not in entries:
        raise Refused(f"{manifest_path}: unknown artifact {artifact!r}; the manifest has: {', '.join(entries)}")
    entry = entries[artifact]
    if entry.get("format") != "onnx":
        raise Refused(f"{manifest_path}: {artifact} is a {entry.get('format')} artifact, not onnx")
    for what, rel, sha in ((artifact, entry.get("path"), entry.get("sha256")), ("labels", labels_rel, labels_sha)):
        path = _inside(manifest_path.parent, rel, f"{manifest_path}: {what}")
        if not path.is_file():
            raise Refused(f"{path}: missing or not a regular file (named by {manifest_path})")
        try:
            digest = _sha256(path)
        except OSError as exc:
            raise Refused(f"{path}: cannot read ({exc})") from None
        if digest != sha:
            raise Refused(f"{path}: sha256 does not match the manifest")
    return manifest_path.parent / entry["path"], manifest_path.parent / labels_rel


def read_labels(path):
    try:
        with open_regular(path) as f:
            labels = [s.strip() for s in f.read().decode().splitlines() if s.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"{path}: cannot read labels ({exc})") from None
    if not labels:
        raise Refused(f"{path}: no labels")
    return labels


def make_checked_session(model, threads, inter_op_threads, n_labels):
    if not Path(model).is_file():  # is_file: a FIFO, socket or device is not one
        raise Refused(f"{model}: no such model file (or not a regular file)")
    try:
        session = make_session(model, threads, inter_op_threads)
    except Exception as exc:  # onnxruntime raises its own types for bad files
        raise Refused(f"{model}: onnxruntime cannot load it ({' '.join(str(exc).split())[:200]})") from None
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    if list(inp.shape[1:]) != [SIZE, SIZE, 3] or inp.type != "tensor(float)":
        raise Refused(f"{model}: input {inp.type} {inp.shape}, expected float [batch, {SIZE}, {SIZE}, 3]")
    if out.shape[-1] != n_labels:
        raise Refused(f"{model}: {out.shape[-1]} outputs but {n_labels} labels")
    return session


def run(args, parser):
    if args.manifest:
        model, labels_path = from_manifest(args.manifest, args.artifact)
    elif args.model:
        model = Path(args.model)
        labels_path = Path(args.labels) if args.labels else model.parent / "labels.txt"
    else:
        parser.error("give --model or --manifest")
    for name in ("threads", "inter_op_threads", "batch_size", "top_k"):
        if getattr(args, name) < (0 if "threads" in name else 1):
            raise Refused(f"--{name.replace('_', '-')} {getattr(args, name)}: out of range")
    labels = read_labels(labels_path)
    session = make_checked_session(model, args.threads, args.inter_op_threads, len(labels))

    results, arrays, where = [], [], []  # results in input order; where[i] = result index of arrays[i]
    for path in expand(args.inputs):
        results.append({"file": str(path)})
        try:
            arrays.append(load_image(path))
            where.append(len(results) - 1)
        except Exception as exc:  # one bad file must not stop the others
            results[-1]["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            print(printable(f"error: {path}: {results[-1]['error']}"), file=sys.stderr)
    if not results:
        raise Refused(f"no PNG or JPEG files in {', '.join(args.inputs)}")
    probs = predict(session, np.stack(arrays) if arrays else np.zeros((0, SIZE, SIZE, 3), np.uint8),
                    args.batch_size)
    finite = np.isfinite(probs).all(axis=1)
    if not finite.all():  # a NaN would rank first and print as "nan%": refuse the whole run instead
        bad = results[where[int(np.argmin(finite))]]["file"]
        raise Refused(f"{model}: the model returned non-finite probabilities (NaN or infinity) for {bad}; "
                      "refused, no result was printed")
    for i, p in zip(where, probs):
        order = np.argsort(-p, kind="stable")[:args.top_k]
        top = [{"label": labels[j], "probability": round(float(p[j]), 6)} for j in order]
        results[i].update(label=top[0]["label"], probability=top[0]["probability"], top_k=top)
        if not args.json:
            ranked = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in top)
            print(printable(f"{results[i]['file']}: {top[0]['label']} ({top[0]['probability']:.1%})  [{ranked}]"))
    if args.json:
        print(json.dumps(results, indent=2, allow_nan=False))
    return 1 if len(arrays) < len(results) else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="PNG/JPEG files or folders")
    parser.add_argument("--model", help="an .onnx file (fp32 or int8)")
    parser.add_argument("--labels", help="labels.txt, one class per line (default: beside --model)")
    parser.add_argument("--manifest", help="or: pick the model from an export manifest.json")
    parser.add_argument("--artifact", default="onnx_fp32", help="with --manifest: onnx_fp32 or onnx_int8")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = physical cores)")
    parser.add_argument("--inter-op-threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        return run(args, parser)
    except Refused as exc:
        print(printable(f"error: {exc}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
