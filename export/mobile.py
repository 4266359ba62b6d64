"""`python -m export.mobile`: the mobile bundle an Android/iOS app ships, from the export manifest (and
the test split, for the golden vectors).

    artifacts/mobile/         every model batch 1, static shapes, no runtime-shape op
      model_int8_b1.tflite    full-integer model: uint8 in, uint8 out (the default)
      model_fp16_b1.tflite    fp16 weights, float32 in and out (GPU delegates prefer it)
      model_fp32_b1.onnx      for ONNX Runtime Mobile (NNAPI / Core ML execution providers)
      model_int8_b1.onnx      QDQ int8 for ONNX Runtime Mobile
      model_fp32_b1.ort       the same two in ONNX Runtime Mobile's own format (Runtime optimization style),
      model_int8_b1.ort       each with its *.required_operators.with_runtime_opt.config (reduced-ops builds)
      labels.txt              one class name per line, in output order
      model_spec.json     per model: input/output tensor name, dtype, shape, quantization
                          {scale, zero_point}; and the preprocessing contract:
                          "raw RGB 0..255, NHWC, no other preprocessing"; and the golden test vectors:
      golden/             GOLDEN test images (one per class), each as NN_label.png and as NN_label.rgb,
                          the exact 32x32x3 uint8 input bytes; model_spec.json "golden" lists the
                          top-3 labels and scores each model gives them, for an app's own unit test

Tensor facts are read from the .tflite files themselves with the LiteRT interpreter (what
the app will see; for ONNX, from the file as export read it into the manifest), after each file's
sha256 is checked against the manifest. Which models ship: the artifact table's `mobile` column. The folder is
written beside itself and swapped into place in one step (pipeline.atomic.publish_dir), so an
app build never picks up half a bundle and a kill leaves the old bundle or the new one. Only a
folder an earlier bundle made (it holds model_spec.json), an empty one or a new one is replaced:
anything else (other files, a regular file, a symlink) is refused before any work.
examples/litert_mobile.py runs the bundle exactly as an app does.
"""
import argparse
import re
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline import atomic, config, manifest
from pipeline.artifacts import ARTIFACTS
from pipeline.runtimes import RUNNERS, TFLiteRunner
from pipeline.errors import PipelineError, fail_cleanly

PREPROCESSING = "raw RGB 0..255, NHWC, no other preprocessing"
RESIZE = ("the whole image resized to 32x32 (no crop, aspect ratio not kept), area averaging; "
          "alpha composited over white; grayscale and palette expanded to RGB")
SPEC_FILE = "model_spec.json"  # marks a folder as a bundle: only such a folder is replaced
GOLDEN, TOP_K = 10, 3  # golden test vectors: test images (spread over the classes), labels per image
# How far an app's scores may be from the golden ones: float files on another CPU or an fp16 GPU delegate;
# int8 files: two output quantization steps (other integer kernels round differently).
FLOAT_TOLERANCE, INT8_TOLERANCE_STEPS = 0.01, 2
MODELS = [row for row in ARTIFACTS.values() if row.mobile]  # the bundle's models, from the artifact table


def _tensor(detail):
    scale, zero_point = detail["quantization"]
    return {"name": detail["name"], "index": int(detail["index"]), "dtype": np.dtype(detail["dtype"]).name,
            "shape": [int(d) for d in detail["shape"]],
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None}


def tensor_spec(model_path):
    """{"input", "output"} facts of a .tflite file as the LiteRT interpreter reports them."""
    runner = TFLiteRunner(Path(model_path).name, model_path, 1)
    return {"input": _tensor(runner.input_detail), "output": _tensor(runner.output_detail)}


def golden_images(cfg):
    """(images, labels, the test archive's sha256): the golden vectors' test images, one per class
    (pipeline.sampling), from the test split the config names (the bundle's one input besides the manifest)."""
    from pipeline import evalset, sampling
    test = evalset.load_test(cfg)
    index = sampling.eval_subset(test.labels, GOLDEN)
    source = config.project_path(cfg.data.test)
    return test.images[index], test.labels[index], atomic.sha256_file(source) if source.is_file() else None


def write_golden(folder, images, labels, classes):
    """golden/NN_label.png and .rgb (the exact input bytes) per image; their records for model_spec.json."""
    from PIL import Image
    (folder / "golden").mkdir()
    records = []
    for i, (image, label) in enumerate(zip(images, labels)):
        stem = f"golden/{i:02d}_{re.sub(r'[^A-Za-z0-9_-]', '_', classes[label])[:40]}"  # labels come from the manifest
        Image.fromarray(image).save(folder / f"{stem}.png")
        (folder / f"{stem}.rgb").write_bytes(np.ascontiguousarray(image, np.uint8).tobytes())
        records.append({"png": f"{stem}.png", "rgb": f"{stem}.rgb", "label": classes[label],
                        "png_sha256": atomic.sha256_file(folder / f"{stem}.png"),
                        "rgb_sha256": atomic.sha256_file(folder / f"{stem}.rgb")})
    return records


def expected_top(row, path, images, classes, output):
    """What the model gives the golden images in its own runtime: top-TOP_K [label, score] per image,
    and the score tolerance an app's test should allow."""
    runner = RUNNERS[row.format](row.name, path, 1)
    probs = np.concatenate([runner.predict(image[None]) for image in images])
    scale = (output.get("quantization") or {}).get("scale")
    tolerance = INT8_TOLERANCE_STEPS * scale if scale else FLOAT_TOLERANCE
    top = [[[classes[c], round(float(p[c]), 6)] for c in np.argsort(-p, kind="stable")[:TOP_K]] for p in probs]
    return {"top": top, "score_tolerance": round(float(tolerance), 6)}


def build(manifest_path, out_dir, cfg=None):
    """Write the bundle to `out_dir` atomically; return the model_spec dict."""
    atomic.check_replaceable(out_dir, SPEC_FILE)  # only an earlier bundle (or nothing) is replaced
    atomic.recover_dir(out_dir)  # what a killed earlier build left beside it
    manifest_path = Path(manifest_path)
    data = manifest.read(manifest_path)
    entries = {row.mobile: manifest.find(data, row.name) for row in MODELS}
    configs = {row.mobile: manifest.verify_ops_config(manifest_path, entries[row.mobile])  # before any work
               for row in MODELS if row.ops_config}
    labels = manifest.read_labels(manifest_path, data)
    images, image_labels, test_sha = golden_images(cfg or config.load())
    spec = {"preprocessing": PREPROCESSING, "resize": RESIZE, "labels": "labels.txt", "num_classes": len(labels),
            "default_model": "int8", "models": {},
            "source": {"manifest_sha256": atomic.sha256_file(manifest_path),
                       "checkpoint": data.get("source_checkpoint")}}
    with atomic.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for row in MODELS:
            key, name, filename = row.mobile, row.name, row.file
            src = manifest.verify(manifest_path, entries[key])
            shutil.copyfile(src, tmp / filename)
            tensors = tensor_spec(tmp / filename) if row.runtime == "litert" else \
                {"input": entries[key]["input"], "output": entries[key]["output"]}
            if tensors["output"]["shape"][-1] != len(labels):
                raise PipelineError(f"{src}: {tensors['output']['shape'][-1]} outputs but {len(labels)} labels")
            spec["models"][key] = {"file": filename, "artifact": name, "precision": entries[key]["precision"],
                                   "bytes": (tmp / filename).stat().st_size, "sha256": entries[key]["sha256"],
                                   **tensors}
            if row.ops_config:  # what a reduced-operator ORT Mobile build of the app is compiled with
                shutil.copyfile(configs[key], tmp / row.ops_config)
                spec["models"][key]["ops_config"] = {"file": row.ops_config,
                                                     "sha256": entries[key]["ops_config"]["sha256"]}
            print(f"  {filename}: input {tensors['input']['dtype']}{tensors['input']['shape']} "
                  f"quantization {tensors['input']['quantization']}, output {tensors['output']['dtype']}"
                  f"{tensors['output']['shape']} quantization {tensors['output']['quantization']}")
        spec["golden"] = {
            "how": f"each image's .rgb file is the exact model input (32x32x3 uint8 RGB, NHWC; the .png decodes to "
                   f"the same bytes); feed it as the model's input contract says and compare: the top-1 label "
                   f"must match, each listed score within the model's score_tolerance (labels whose scores are "
                   f"that close may swap places)",
            "images": write_golden(tmp, images, image_labels, labels),
            "test_data_sha256": test_sha,
            "expected": {row.mobile: expected_top(row, tmp / row.file, images, labels, spec["models"][row.mobile]["output"])
                         for row in MODELS}}
        (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
        spec["labels_sha256"] = atomic.sha256_file(tmp / "labels.txt")  # the example app checks it
        atomic.write_json(tmp / SPEC_FILE, spec)
    return spec


@fail_cleanly
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m export.mobile", description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", default=None, help="default: config evaluate.manifest")
    parser.add_argument("--out", default=None, help="default: mobile/ beside the manifest")
    config.add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = config.from_args(args)
    manifest_path = Path(args.manifest) if args.manifest else config.project_path(cfg.evaluate.manifest)
    out_dir = Path(args.out) if args.out else manifest_path.parent / "mobile"
    t0 = time.time()
    print(f"mobile bundle from {manifest_path}")
    build(manifest_path, out_dir, cfg)
    print(f"wrote {out_dir}/ in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
