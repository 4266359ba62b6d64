"""Run the mobile bundle exactly as an Android/iOS app does with LiteRT. Needs ai_edge_litert, numpy, pillow.

    python -m export.mobile                                   # writes artifacts/mobile/
    python examples/litert_mobile.py --bundle artifacts/mobile cat.png photos/

The app's steps, one image at a time, each mirrored here:
  1. load the .tflite named in model_spec.json; allocate tensors          (Interpreter(...))
  2. decode the file to a bitmap, scale it to 32x32 (whole image, no crop), (bitmap_from_file)
     and read its pixels as ARGB_8888 ints, the layout Bitmap.getPixels gives
  3. fill the input tensor: per pixel R, G, B in that order (NHWC), raw 0..255; a uint8 model
     takes the bytes as they are when its quantization is scale 1, zero point 0, otherwise
     q = round(value / scale + zero_point); a float model takes the same values as float32
  4. invoke
  5. dequantize the output: probability = (q - zero_point) * scale, then top-k with labels.txt
No other preprocessing: scaling and normalisation are inside the model
(model_spec.json: "raw RGB 0..255, NHWC, no other preprocessing").

`MobileClassifier.classify_images` runs a batch of uint8 images through steps 2b-5 one by one,
so examples/check_mobile_parity.py can compare it with the evaluator on the whole test split.
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
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps

EXTENSIONS = (".png", ".jpg", ".jpeg")
# pipeline/images.py's budget, copied (this script imports nothing of the repository; a test checks the copies)
MAX_PIXELS = 50_000_000
MAX_DECODED_BYTES = 150_000_000


# ---------------------------------------------------------------- files

def open_regular(path):
    """A regular file opened for reading; OSError for anything else. O_NONBLOCK: a FIFO in its place does
    not block the open (or the read, forever); fstat then refuses it before a byte is read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError("not a regular file (a FIFO, socket, device or folder); not read")
    return f


def _bundle_file(path):
    """open_regular for a file of the bundle: its OSError names the file (FileNotFoundError kept as it is)."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise OSError(f"{path}: {exc}") from None


def read_text(path):
    with _bundle_file(path) as f:
        return f.read().decode()


def confined(bundle_dir, name, what):
    """The file `name` model_spec.json gives for `what`, inside the bundle: a relative path with no '..',
    no link, resolving inside the bundle folder (the spec is data, not a way to read /etc/passwd)."""
    spec = bundle_dir / "model_spec.json"
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{spec}: {what} {name!r} is not a file inside the bundle")
    path = bundle_dir / name
    if path.is_symlink() or not path.resolve().is_relative_to(bundle_dir.resolve()):
        raise ValueError(f"{spec}: {what} {name!r} is a link or leaves the bundle")
    return path


def check_sha256(path, expected, what):
    """The file's sha256 must be the one model_spec.json records (a swapped model never runs)."""
    digest = hashlib.sha256()
    with _bundle_file(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not isinstance(expected, str) or digest.hexdigest() != expected:
        raise ValueError(f"{path}: sha256 {digest.hexdigest()[:12]}... is not the {str(expected)[:12]}... "
                         f"model_spec.json records for the {what}; rebuild with `python -m export.mobile`")


def printable(text):
    """Control characters (a file name's carriage return, ANSI escape, NUL) as \\xNN, never raw on a terminal."""
    return re.sub("[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", str(text))


class NotFinite(ValueError):
    """The model returned NaN or infinity: the model is broken, not the image."""


# ---------------------------------------------------------------- bitmaps

def decoded_bytes(mode, size):
    """Bytes the pixels of an image of this mode and size hold: one a band, 2 for 16-bit, 4 for 32-bit."""
    per_band = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    return size[0] * size[1] * per_band * Image.getmodebands(mode)


def open_image(f):
    """Image.open, refused from its header when over the budget, as an app refuses a bitmap it cannot hold
    (a 95 KB PNG can declare 49 megapixels of 16-bit gray). Pillow's DecompressionBombWarning (89 megapixels)
    would only ever come before this refusal: silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(f, formats=("PNG", "JPEG"))
    if im.width * im.height > MAX_PIXELS or decoded_bytes(im.mode, im.size) > MAX_DECODED_BYTES:
        im.close()
        raise ValueError(f"{im.width}x{im.height} {im.mode} pixels, over the budget of {MAX_PIXELS:,} pixels and "
                         f"{MAX_DECODED_BYTES:,} bytes; not decoded")
    return im


def bitmap_from_file(path, size=32):
    """ARGB_8888 pixels (size*size,) uint32 of an image file: decode, alpha over white, area-scale to size."""
    with open_regular(path) as f, open_image(f) as im:
        im.load()
        im = ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im  # no copy if upright
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: scale (round(v / 257)), don't clip
            im = im if im.mode == "I" else im.convert("I")
            scale = im.getextrema()[1] > 255
            im = im.point([min(255, (v + 128) // 257 if scale else v) for v in range(65536)], "L")
        if (im.mode == "P" and "transparency" in im.info) or im.mode in ("PA", "LA", "La", "RGBa"):
            im = im.convert("RGBA")
        if im.mode == "RGBA":
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BOX)
        return argb_from_rgb(np.asarray(im, dtype=np.uint8))


def argb_from_rgb(rgb):
    """(H, W, 3) uint8 -> (H*W,) ARGB_8888 ints, opaque: what Bitmap.getPixels returns."""
    rgb = rgb.reshape(-1, 3).astype(np.uint32)
    return (0xFF << 24) | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


# ---------------------------------------------------------------- the app

class MobileClassifier:
    def __init__(self, bundle_dir, model="int8", threads=1):
        bundle_dir = Path(bundle_dir)
        spec = json.loads(read_text(bundle_dir / "model_spec.json"))
        self.spec = spec["models"][model]
        labels_path = confined(bundle_dir, spec["labels"], "labels")
        check_sha256(labels_path, spec.get("labels_sha256"), "labels")
        self.labels = [s.strip() for s in read_text(labels_path).splitlines() if s.strip()]
        model_path = confined(bundle_dir, self.spec["file"], f"{model} model")
        check_sha256(model_path, self.spec.get("sha256"), f"{model} model")  # also refuses a FIFO (no hang)
        self.interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        self.interpreter.allocate_tensors()
        # Tensors are found by the names the spec records, as an app would hard-code them.
        self.input = self._by_name(self.interpreter.get_input_details(), self.spec["input"]["name"])
        self.output = self._by_name(self.interpreter.get_output_details(), self.spec["output"]["name"])
        _, self.height, self.width, _ = self.spec["input"]["shape"]

    @staticmethod
    def _by_name(details, name):
        for d in details:
            if d["name"] == name:
                return d
        raise ValueError(f"tensor {name!r} from model_spec.json is not in the model")

    def fill_input(self, argb):
        """The input buffer from ARGB pixels: R, G, B per pixel, raw 0..255, in the model's dtype."""
        r, g, b = (argb >> 16) & 0xFF, (argb >> 8) & 0xFF, argb & 0xFF
        values = np.stack([r, g, b], axis=-1).reshape(1, self.height, self.width, 3)
        dtype, quant = np.dtype(self.spec["input"]["dtype"]), self.spec["input"]["quantization"]
        if quant and (quant["scale"] != 1.0 or quant["zero_point"] != 0):
            info = np.iinfo(dtype)
            values = np.clip(np.rint(values / quant["scale"] + quant["zero_point"]), info.min, info.max)
        return values.astype(dtype)

    def probabilities(self, argb):
        """Fill, invoke, dequantize: (classes,) float32 for one bitmap."""
        self.interpreter.set_tensor(self.input["index"], self.fill_input(argb))
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.output["index"])[0]
        quant = self.spec["output"]["quantization"]
        if quant:
            probs = ((raw.astype(np.float32) - quant["zero_point"]) * quant["scale"]).astype(np.float32)
        else:
            probs = raw.astype(np.float32)
        if not np.isfinite(probs).all():
            raise NotFinite("the model returned non-finite probabilities (NaN or infinity)")
        return probs

    def top_k(self, probabilities, k=3):
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(self.labels[i], float(probabilities[i])) for i in order]

    def classify_file(self, path, k=3):
        return self.top_k(self.probabilities(bitmap_from_file(path, self.width)), k)

    def classify_images(self, images, progress_every=0):
        """(N, classes) probabilities for uint8 (N, H, W, 3) images, one invoke per image like an app."""
        out = np.empty((len(images), len(self.labels)), np.float32)
        for i, image in enumerate(images):
            out[i] = self.probabilities(argb_from_rgb(image))
            if progress_every and (i + 1) % progress_every == 0:
                print(f"  mobile example: {i + 1}/{len(images)}", file=sys.stderr, flush=True)
        return out


def open_bundle(bundle_dir, model):
    """The app, or one error line naming what is wrong with the bundle."""
    try:
        return MobileClassifier(bundle_dir, model)
    except FileNotFoundError as exc:
        raise SystemExit(printable(f"error: {bundle_dir}: not a mobile bundle ({exc.filename} is missing); "
                                   "build one with `python -m export.mobile`"))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # RuntimeError: a link loop, deep JSON
        raise SystemExit(printable(f"error: {bundle_dir}: unusable mobile bundle ({type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())[:200]})"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="PNG/JPEG files or folders")
    parser.add_argument("--bundle", default="artifacts/mobile", help="folder written by `python -m export.mobile`")
    parser.add_argument("--model", default="int8", choices=("int8", "fp16"))
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)
    if args.top_k < 1:
        raise SystemExit(f"error: --top-k {args.top_k}: must be at least 1")
    app = open_bundle(args.bundle, args.model)
    failed = seen = 0
    for p in map(Path, args.inputs):
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in EXTENSIONS) if p.is_dir() else [p]
        for f in files:
            seen += 1
            try:
                top = app.classify_file(f, args.top_k)
            except NotFinite as exc:  # the model, not this file: no other file can be trusted either
                raise SystemExit(printable(f"error: {Path(args.bundle) / app.spec['file']}: {exc} for {f}; "
                                           "refused"))
            except Exception as exc:  # one bad file must not stop the others
                print(printable(f"error: {f}: {type(exc).__name__}: {' '.join(str(exc).split())}"), file=sys.stderr)
                failed += 1
                continue
            ranked = ", ".join(f"{label} {prob:.1%}" for label, prob in top)
            print(printable(f"{f}: {top[0][0]} ({top[0][1]:.1%})  [{ranked}]"))
    if not seen:
        raise SystemExit(printable(f"error: no PNG or JPEG files in {', '.join(args.inputs)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
