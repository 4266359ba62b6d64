"""MediaPipe's own resize of a larger frame against ours (pipeline/images.py), on upscaled test images.

    .venv-mobile/bin/python benchmarks/mediapipe_resize.py [--manifest artifacts/manifest.json] [--images 1000]

(the mobile environment: `make venv-mobile`; run with LD_LIBRARY_PATH=.venv-mobile/lib). An app hands
MediaPipe Tasks' ImageClassifier a camera frame and lets it resize to the model's 32x32; `python -m
pipeline predict` and the examples resize with area averaging first. Test images are upscaled to a frame
two ways: bicubic (a smooth frame) and nearest-neighbour plus +-40 uniform noise (fine detail and sensor
noise, what a real frame has at the scale MediaPipe subsamples). Each frame is classified by MediaPipe
given the frame, and given our 32x32 resize of it; accuracy against the labels, and the original 32x32
images as the ceiling. Writes benchmarks/results/mediapipe_resize.md.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline import config, evalset, images as images_mod, manifest as manifest_mod, sampling  # noqa: E402
from pipeline.runtimes import MediaPipeRunner  # noqa: E402
from timing import machine_line  # noqa: E402

NOISE = 40


def frames(image, size, how, rng):
    """One 32x32 test image as a size x size frame."""
    if how == "bicubic":
        return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    big = np.asarray(Image.fromarray(image).resize((size, size), Image.NEAREST)).astype(np.int16)
    return np.clip(big + rng.integers(-NOISE, NOISE + 1, big.shape), 0, 255).astype(np.uint8)


def accuracy(runner, batch, labels):
    return float(np.mean(runner.predict(batch).argmax(1) == labels))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", default="artifacts/manifest.json")
    p.add_argument("--artifact", default="tflite_fp16_b1")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--sizes", default="64,128,256")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mediapipe_resize.md"))
    args = p.parse_args(argv)
    manifest_path = Path(args.manifest)
    entry = manifest_mod.find(manifest_mod.read(manifest_path), args.artifact)
    runner = MediaPipeRunner(args.artifact, manifest_mod.verify(manifest_path, entry), 1)
    test = evalset.load_test(config.load())
    index = sampling.eval_subset(test.labels, args.images)
    originals, labels = test.images[index], test.labels[index]
    ceiling = accuracy(runner, originals, labels)
    lines = ["# MediaPipe's resize vs ours", "",
             f"`.venv-mobile/bin/python benchmarks/mediapipe_resize.py --images {args.images}` on {machine_line()}; "
             f"`{args.artifact}` through MediaPipe Tasks' ImageClassifier, {len(labels)} test images of CIFAR-10 "
             f"(JPEG q75 copy) spread over the classes; on the original 32x32 images: **{ceiling:.2%}**.", "",
             "| frame | size | MediaPipe resizes the frame | ours (area average, pipeline/images.py) first |",
             "| --- | --- | --- | --- |"]
    for how in ("bicubic", f"nearest + noise +-{NOISE}"):
        for size in map(int, args.sizes.split(",")):
            rng = np.random.default_rng(size)
            big = [frames(im, size, how.split()[0], rng) for im in originals]
            ours = np.stack([images_mod.to_model_input(Image.fromarray(b)) for b in big])
            theirs = accuracy(runner, big, labels)
            lines.append(f"| {how} | {size}x{size} | {theirs:.2%} | {accuracy(runner, ours, labels):.2%} |")
            print(lines[-1], flush=True)
    runner.close()
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
