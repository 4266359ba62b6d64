"""Count a Keras checkpoint's top-1 accuracy on the test split of the shared JPEG archive, independently
of this repository's code: plain tarfile + Pillow + Keras, nothing imported from pipeline/.

    python examples/count_test_accuracy.py models/reference/model.h5 ../shared/datasets/cifar10-jpeg.tar.gz

The model takes raw RGB 0..255 (its preprocessing is inside), so the only step here is JPEG decoding.
Prints accuracy overall and per class, and the archive's sha256.
"""
import hashlib
import io
import sys
import tarfile

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def main(model_path, archive):
    import keras
    sha = hashlib.sha256(open(archive, "rb").read()).hexdigest()
    images, labels = [], []
    with tarfile.open(archive) as tf:
        for member in tf:
            parts = member.name.split("/")
            if member.isfile() and len(parts) >= 3 and parts[-3] == "test" and parts[-2] in CLASSES:
                with Image.open(io.BytesIO(tf.extractfile(member).read())) as im:
                    images.append(np.asarray(im.convert("RGB"), np.uint8))
                labels.append(CLASSES.index(parts[-2]))
    x, y = np.stack(images).astype(np.float32), np.asarray(labels)
    model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    pred = model.predict(x, batch_size=500, verbose=0).argmax(1)
    print(f"archive sha256 {sha}")
    print(f"{model.count_params():,} parameters; {len(y)} test images")
    print(f"top-1 accuracy {np.mean(pred == y):.4f}")
    print("per class: " + ", ".join(f"{c} {np.mean(pred[y == i] == i):.3f}" for i, c in enumerate(CLASSES)))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1].strip())
    main(sys.argv[1], sys.argv[2])
