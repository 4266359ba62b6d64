"""Read user images (PNG or JPEG, any size and mode) as the model's input: 32x32 RGB uint8.

What happens to a file, in order:
  1. EXIF orientation is applied (phone photos are often stored rotated).
  2. The mode becomes RGB: grayscale ("1", "L", "I;16", "I") is replicated to three
     channels (16-bit values scaled to 0..255); palette ("P") is expanded; CMYK/YCbCr are
     converted by Pillow; an alpha channel ("RGBA", "LA", "PA", palette transparency) is
     composited over WHITE, because transparent pixels have no colour of their own and
     white is what a viewer shows them on.
  3. The whole image is resized to 32x32 with area averaging (Pillow `Image.BOX`): no
     crop, the aspect ratio is not kept, and a 32x32 image is left untouched. Area
     averaging does not alias when shrinking a large photo, and it undoes an integer
     nearest-neighbour upscale exactly (a 32x32 image blown up to 128x128 reads back
     bit-identical).

The result is raw RGB 0..255, NHWC: what every artifact takes, with no other preprocessing.
examples/onnxruntime_cpu.py and examples/litert_mobile.py carry a copy of these steps so
they need nothing from this package; tests/test_deploy.py checks the copies agree.

The budget: a file is refused from its header, before anything is decoded, when it has more than
MAX_PIXELS pixels or its pixels take more than MAX_DECODED_BYTES (`decoded_bytes`: 16-bit and 32-bit
modes count 2 and 4 bytes a pixel); a 95 KB PNG can declare a 49-megapixel 16-bit image. The examples
keep a copy of both constants (tests/test_hostile_round2.py checks they are equal).
"""
import contextlib
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIZE = 32
FORMATS = ("PNG", "JPEG")
EXTENSIONS = (".png", ".jpg", ".jpeg")
BACKGROUND = (255, 255, 255)  # what transparent pixels become
ORIENTATION = 0x0112  # the EXIF orientation tag
MAX_PIXELS = 50_000_000  # a 50-megapixel photo; a crafted PNG can claim billions from a few hundred KB
MAX_DECODED_BYTES = 150_000_000  # that photo as 8-bit RGB; decoding and converting it peaks at a few times this


class ImageError(ValueError):
    """A file that is not a readable PNG or JPEG; the message says why, without the path."""


def decoded_bytes(mode, size):
    """Bytes the pixels of an image of this Pillow mode and size hold: one per band and pixel, 2 for 16-bit
    grayscale, 4 for 32-bit ("I", "F")."""
    per_band = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    return size[0] * size[1] * per_band * Image.getmodebands(mode)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as RGB; alpha composited over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale PNGs: Pillow's own convert would clip at 255, so scale instead: round(v / 257) when
        # any value is above 255, clipped to 0..255, through a lookup table (no float copy of a large image).
        im = im if im.mode == "I" else im.convert("I")
        scale = im.getextrema()[1] > 255
        im = im.point([min(255, (v + 128) // 257 if scale else v) for v in range(65536)], "L")
    if (im.mode == "P" and "transparency" in im.info) or im.mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGBA", im.size, BACKGROUND + (255,))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def to_model_input(im: Image.Image) -> np.ndarray:
    """A decoded Pillow image as (32, 32, 3) uint8."""
    # exif_transpose copies an image that needs no turn: a second full-size image, so it is skipped then
    im = to_rgb(ImageOps.exif_transpose(im) if im.getexif().get(ORIENTATION, 1) != 1 else im)
    if im.size != (SIZE, SIZE):
        im = im.resize((SIZE, SIZE), Image.BOX)
    return np.asarray(im, dtype=np.uint8)


@contextlib.contextmanager
def opened(f, formats=None):
    """Image.open without Pillow's DecompressionBombWarning (89-179 megapixels): every caller checks the size
    from the header against a lower cap of its own, so the warning would only ever precede that refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(f, formats=formats)
    with im:
        yield im


def over_budget(mode, size):
    """Why an image of this mode and size is refused before decoding, or None."""
    if size[0] * size[1] > MAX_PIXELS:
        return f"{size[0]}x{size[1]} pixels, over the {MAX_PIXELS:,}-pixel cap"
    if decoded_bytes(mode, size) > MAX_DECODED_BYTES:
        return f"{size[0]}x{size[1]} {mode} pixels take {decoded_bytes(mode, size):,} bytes, over the " \
               f"{MAX_DECODED_BYTES:,}-byte cap"
    return None


def _decode(f):
    with opened(f, FORMATS) as im:
        problem = over_budget(im.mode, im.size)  # known from the header, before any decoding
        if problem:
            raise ImageError(problem)
        im.load()  # decode now, so a truncated file fails here
        return to_model_input(im)


def load(path) -> np.ndarray:
    """(32, 32, 3) uint8 from a PNG or JPEG file; raises ImageError (message without the path).
    Only a regular file is opened: a FIFO (or socket, device) in its place would block forever."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; fstat then refuses it before any read
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(path)
            if not stat.S_ISREG(mode):
                raise ImageError("not a regular file (a FIFO, socket or device); refused, it was not read")
            return _decode(f)
    except ImageError:  # ours, already saying why (a ValueError: not to be wrapped as "cannot decode")
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a folder") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not a PNG or JPEG image") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageError(f"cannot decode ({type(exc).__name__}: {exc})") from None


def expand(paths):
    """[(path, None) | (path, problem)]: files as given, folders as their PNG/JPEG files (recursive, sorted).

    A missing path or a folder without images comes back with a problem instead of
    stopping the whole call, so the other inputs are still classified.
    """
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS)
            out += [(f, None) for f in found] or [(p, "folder has no .png, .jpg or .jpeg files")]
        elif p.exists():
            out.append((p, None))
        else:
            out.append((p, "no such file or folder"))
    return out
