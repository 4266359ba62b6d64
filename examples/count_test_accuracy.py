"""Count a model's top-1 accuracy on the test split of the shared JPEG archive, independently of this
repository's code: plain tarfile + Pillow + the model's own runtime (Keras for .h5/.keras, onnxruntime
for .onnx, LiteRT for .tflite), nothing imported from pipeline/.

    python examples/count_test_accuracy.py models/reference/model.h5 ../shared/datasets/cifar10-jpeg.tar.gz
    python examples/count_test_accuracy.py artifacts/model_int8.tflite ../shared/datasets/cifar10-jpeg.tar.gz

Every model takes raw RGB 0..255 (its preprocessing is inside), so the only step here is JPEG decoding
(and, for an integer .tflite input, quantizing with the input's own scale and zero point). Prints
accuracy overall and per class, and the archive's sha256.
"""
import hashlib
import io
import sys
import tarfile

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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


def main(model_path, archive):
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
    pred, what = predict(model_path, x)
    print(f"archive sha256 {sha}")
    print(f"{what}; {len(y)} test images")
    print(f"top-1 accuracy {np.mean(pred == y):.4f}")
    print("per class: " + ", ".join(f"{c} {np.mean(pred[y == i] == i):.3f}" for i, c in enumerate(CLASSES)))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1].strip())
    main(sys.argv[1], sys.argv[2])
