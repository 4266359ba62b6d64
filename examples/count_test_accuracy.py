"""Count a model's top-1 accuracy on the test split of the shared JPEG archive, independently of this
repository's code: plain tarfile + Pillow + the model's own runtime (Keras for .h5/.keras, onnxruntime
for .onnx, LiteRT for .tflite), nothing imported from pipeline/.

    python examples/count_test_accuracy.py models/reference/model.h5 ../shared/datasets/cifar10-jpeg.tar.gz
    python examples/count_test_accuracy.py artifacts/model_int8.tflite ../shared/datasets/cifar10-jpeg.tar.gz

Every model takes raw RGB 0..255 (its preprocessing is inside), so the only step here is JPEG decoding
(and, for an integer .tflite input, quantizing with the input's own scale and zero point). Prints
accuracy overall and per class, and the archive's sha256. An archive that does not hold the whole test
split (10,000 images, 1,000 per class) is refused: its "accuracy" would compare with nothing.
Bad input gets one `error:` line and exit status 1.
"""
import hashlib
import io
import os
import re
import sys
import tarfile
import warnings
import zlib

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TEST_IMAGES, PER_CLASS = 10_000, 1_000  # CIFAR-10's test split
MAX_IMAGE_BYTES = 1 << 20  # one 32x32 image file (a CIFAR-10 JPEG is 1-2 KB): a zero-filled member stops here


class Refused(Exception):
    """Bad input: printed as one `error:` line, exit status 1."""


def printable(text):
    """Control characters (a file name's carriage return, ANSI escape, NUL) as \\xNN, never raw on a terminal."""
    return re.sub("[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", str(text))


def predict(model_path, x):
    """(top-1 per image, a line saying what ran) in the model's own runtime."""
    if model_path.endswith(".onnx"):
        import onnxruntime as ort
        session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        probs = np.concatenate([session.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)])
        return probs.argmax(1), f"onnxruntime {ort.__version__}"
    if model_path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=model_path)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        scale, zero = inp["quantization"]
        top1 = []
        for image in x:  # one image at a time, as an app runs it
            if np.issubdtype(inp["dtype"], np.integer):
                info = np.iinfo(inp["dtype"])
                image = np.clip(np.round(image / scale + zero), info.min, info.max)
            interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
            interpreter.invoke()
            top1.append(int(interpreter.get_tensor(out["index"])[0].argmax()))  # dequantizing keeps the order
        return np.asarray(top1), f"LiteRT, input {np.dtype(inp['dtype']).name}"
    import keras
    model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    return model.predict(x, batch_size=500, verbose=0).argmax(1), f"Keras, {model.count_params():,} parameters"


def decode(data, where):
    """(32, 32, 3) uint8 of one image file; its size is checked from the header, before decoding."""
    try:
        with warnings.catch_warnings():  # Pillow warns about huge sizes before the 32x32 check below refuses them
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            if im.size != (32, 32):
                raise Refused(f"{where}: a {im.width}x{im.height} image, expected 32x32")
            return np.asarray(im.convert("RGB"), np.uint8)
    except Refused:
        raise
    except Exception as exc:  # Pillow raises many kinds for a file that is not an image
        raise Refused(f"{where}: not a readable image ({type(exc).__name__})") from None


def read_test_split(archive):
    """(images, labels) of the archive's test/<class>/ files, each decoded as it is read (a 2 MB .tar.gz of
    zero-filled members expands to gigabytes: nothing but 32x32 arrays is kept, and a member is read only up
    to MAX_IMAGE_BYTES); refused unless it is the whole test split."""
    images, labels = [], []
    try:
        with tarfile.open(archive) as tf:
            for member in tf:
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 3 and parts[-3] == "test" and parts[-2] in CLASSES:
                    data = tf.extractfile(member).read(MAX_IMAGE_BYTES + 1)  # counts the bytes actually read
                    if len(data) > MAX_IMAGE_BYTES:
                        raise Refused(f"{archive}:{member.name}: over {MAX_IMAGE_BYTES:,} bytes, not a 32x32 image")
                    images.append(decode(data, f"{archive}:{member.name}"))
                    labels.append(CLASSES.index(parts[-2]))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise Refused(f"{archive}: not a readable tar archive ({type(exc).__name__}: {exc})") from None
    counts = np.bincount(np.asarray(labels, int), minlength=len(CLASSES))
    if len(labels) != TEST_IMAGES or (counts != PER_CLASS).any():
        raise Refused(f"{archive}: holds {len(labels):,} test images ({', '.join(map(str, counts))} per class), not "
                      f"the whole test split ({TEST_IMAGES:,}, {PER_CLASS:,} per class); its accuracy would compare "
                      "with nothing")
    return np.stack(images).astype(np.float32), np.asarray(labels)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(model_path, archive):
    for what, path in (("model", model_path), ("archive", archive)):
        if not os.path.isfile(path):  # a folder, a FIFO (it would block), a link loop, or nothing
            raise Refused(f"{path}: no such {what} file (or not a regular file)")
    x, y = read_test_split(archive)
    try:
        pred, what = predict(model_path, x)
    except Exception as exc:  # each runtime raises its own kinds for a file it cannot load
        raise Refused(f"{model_path}: cannot run the model ({type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:200]})") from None
    print(f"archive sha256 {sha256(archive)}")
    print(f"{what}; {len(y)} test images")
    print(f"top-1 accuracy {np.mean(pred == y):.4f}")
    print("per class: " + ", ".join(f"{c} {np.mean(pred[y == i] == i):.3f}" for i, c in enumerate(CLASSES)))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1].strip())
    try:
        main(sys.argv[1], sys.argv[2])
    except Refused as exc:
        sys.exit(printable(f"error: {' '.join(str(exc).split())}"))
